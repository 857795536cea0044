"""Evaluation of an exported classifier on a labelled face set (no torch needed).

Used by `edge-fer eval` and by benchmarks/zoo_table.py, so both report the same numbers:
metrics from `edge_fer.metrics`, a vocabulary mapping between dataset and model, latency per
face, and a confusion-matrix PNG drawn with OpenCV (matplotlib is not a runtime dependency).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_fer import fileio
from edge_fer import labels as L
from edge_fer.data import FaceSet
from edge_fer.errors import UserError
from edge_fer.metrics import classification_report
from edge_fer.progress import Progress


@dataclass
class VocabPlan:
    """How dataset labels and model outputs meet in one evaluation vocabulary."""

    classes: tuple[str, ...]  # the evaluation vocabulary
    data_map: dict[str, str | None]  # dataset class -> evaluation class (None: dropped)
    model_map: dict[str, str | None]  # model class -> evaluation class (None: mass dropped)
    label_index: np.ndarray  # dataset label index -> evaluation index (-1: drop)
    prob_matrix: np.ndarray | None  # (model C, eval C) 0/1 summing matrix; None = identity

    def map_probs(self, probs: np.ndarray) -> np.ndarray:
        if self.prob_matrix is None:
            return probs
        p = probs @ self.prob_matrix
        s = p.sum(1, keepdims=True)
        return np.where(s > 0, p / np.where(s > 0, s, 1), 1.0 / p.shape[1]).astype(np.float32)

    def describe(self, dropped_by_class: dict[str, int], faces: np.ndarray | None = None) -> dict:
        """Which classes were compared, what became of the model's classes (dropped, merged,
        renamed) and of the dataset's (mapped, or without counterpart: faces excluded);
        `faces`: the scored faces per evaluation class (classes without any are predicted but
        not scored: macro-F1 leaves them out)."""
        into: dict[str, list[str]] = {}
        for m, t in self.model_map.items():
            if t is not None:
                into.setdefault(t, []).append(m)
        return {
            "compared": list(self.classes),
            "model_classes_dropped": [m for m, t in self.model_map.items() if t is None],
            "model_classes_merged": {t: ms for t, ms in into.items() if len(ms) > 1},
            "model_classes_renamed": {
                m: t for m, t in self.model_map.items() if t and t != m and len(into[t]) == 1
            },
            "compared_without_model_class": [c for c in self.classes if c not in into],
            "compared_without_faces": []
            if faces is None
            else [c for c, n in zip(self.classes, faces) if not n],
            "dataset_classes_mapped": {c: t for c, t in self.data_map.items() if t and t != c},
            # classes with faces: a loader pads its vocabulary with empty ones, which are
            # no part of this dataset
            "dataset_classes_without_counterpart": {
                c: int(dropped_by_class[c])
                for c, t in self.data_map.items()
                if t is None and dropped_by_class.get(c, 0)
            },
            "excluded_faces": int(sum(dropped_by_class.values())),
        }


def plan_vocabulary(
    data_classes: tuple[str, ...],
    model_classes: tuple[str, ...],
    target: tuple[str, ...] | None = None,
    counts: np.ndarray | None = None,
    advice: str | None = None,
) -> VocabPlan:
    """Plan the evaluation vocabulary.

    target None: evaluate in the model's vocabulary; every dataset class that has samples must
    map onto it (through `edge_fer.labels.mapping`), else UserError. target given (--label-set /
    --classes): dataset classes without a counterpart are dropped (and counted by the caller),
    model classes without one lose their probability mass (the rest is renormalised).
    advice: what the refusal of unmapped dataset classes tells the user to do (default: eval's
    --label-set and --classes; a command without them says what it accepts).
    """
    explicit = target is not None
    ev = tuple(L.canonical(c) for c in (target if explicit else model_classes))
    if len(set(ev)) != len(ev) or not ev:
        raise UserError(f"evaluation classes must be distinct and non-empty: {', '.join(ev)}")
    if len(ev) < 2:  # all the probability renormalised onto one class: every face "correct"
        raise UserError(
            f"only one class to compare ({ev[0]}): every face would count as correct; compare "
            "two or more (--classes, or a dataset with two or more classes the model knows)"
        )
    data_map = L.mapping(tuple(data_classes), ev)
    model_map = L.mapping(tuple(model_classes), ev)
    present = [
        c for i, c in enumerate(data_classes) if counts is None or (i < len(counts) and counts[i])
    ]
    unmapped = [c for c in present if data_map[c] is None]
    if not any(model_map.values()):
        raise UserError(
            f"the model's classes ({', '.join(model_classes)}) have no counterpart in the "
            f"evaluation classes ({', '.join(ev)})"
        )
    answered = sorted({t for t in model_map.values() if t is not None}, key=ev.index)
    if len(answered) < 2:  # all the probability renormalised onto it: every face "predicted" it
        rest = [c for c in ev if c not in answered]
        raise UserError(
            f"the model answers only one of the evaluation classes ({answered[0]}; none of its "
            f"classes maps onto {', '.join(rest)}): every face would be predicted "
            f"{answered[0]}; compare two or more classes the model knows"
        )
    if present and len(unmapped) == len(present):
        whose = "the evaluation" if explicit else "the model's"
        raise UserError(
            f"vocabulary mismatch: the dataset's classes ({', '.join(present)}) have no "
            f"counterpart in {whose} classes "
            f"({', '.join(ev)})"
        )
    if unmapped and not explicit:
        raise UserError(
            f"dataset classes {', '.join(unmapped)} have no counterpart in the model's classes "
            f"({', '.join(model_classes)}); "
            + (
                advice
                or "pass --label-set dataset (the dataset's classes), --label-set NAME or "
                "--classes to evaluate on a shared vocabulary (samples of unmapped classes are "
                "then dropped and counted)"
            )
        )
    label_index = np.array(
        [ev.index(data_map[c]) if data_map[c] is not None else -1 for c in data_classes],
        dtype=np.int64,
    )
    if tuple(model_classes) == ev:
        mat = None
    else:
        mat = np.zeros((len(model_classes), len(ev)), np.float32)
        for i, c in enumerate(model_classes):
            if model_map[c] is not None:
                mat[i, ev.index(model_map[c])] = 1.0
    return VocabPlan(ev, data_map, model_map, label_index, mat)


def run_inference(
    clf, images: np.ndarray, batch_size: int = 64, progress: bool = True, desc: str = "eval"
):
    """Probabilities for all images plus timing: (probs, seconds preprocessing, seconds infer)."""
    from edge_fer.limits import check_count

    check_count(batch_size, "batch_size")  # 0: a ValueError from range()
    # a bar on a terminal; in a log, a line at each quarter
    bar = Progress(len(images), desc, "face", progress)
    out, t_prep, t_inf = [], 0.0, 0.0
    try:
        for i in range(0, len(images), batch_size):
            t0 = time.perf_counter()
            x = clf.spec.prepare(images[i : i + batch_size], first=i)
            t1 = time.perf_counter()
            out.append(clf.infer(x))
            t2 = time.perf_counter()
            t_prep += t1 - t0
            t_inf += t2 - t1
            bar.update(len(x))
    finally:
        bar.close()
    probs = np.concatenate(out) if out else np.zeros((0, len(clf.classes)), np.float32)
    return probs, t_prep, t_inf


def batch1_latency(clf, images: np.ndarray, samples: int = 200, warmup: int = 5) -> dict:
    """Per-face latency (preprocessing + inference) at batch 1 on an even sample of faces."""
    from edge_fer.limits import check_count

    check_count(samples, "samples", lowest=0)  # NaN: a TypeError in np.linspace
    check_count(warmup, "warmup", lowest=0)
    if len(images) == 0 or samples == 0:
        return {}
    idx = np.linspace(0, len(images) - 1, min(samples, len(images))).round().astype(int)
    for i in idx[:warmup]:
        clf.predict(images[i : i + 1])
    times = []
    for i in idx:
        t0 = time.perf_counter()
        clf.predict(images[i : i + 1])
        times.append((time.perf_counter() - t0) * 1e3)
    t = np.array(times)
    return {
        "batch1_ms_per_face": float(t.mean()),
        "batch1_median_ms": float(np.median(t)),
        "batch1_p90_ms": float(np.percentile(t, 90)),
        "batch1_samples": len(t),
    }


def dataset_target(faces: FaceSet, model_classes) -> tuple[str, ...]:
    """--label-set dataset: the dataset's own classes that the model's classes map onto
    (edge_fer.labels: synonyms, groups); the other dataset classes are excluded and counted."""
    present = [c for c, n in zip(faces.classes, faces.counts()) if n]
    target = L.shared_vocabulary(present, tuple(model_classes))
    if not target:
        raise UserError(
            f"vocabulary mismatch: no class of the dataset ({', '.join(present)}) has a "
            f"counterpart among the model's ({', '.join(model_classes)})"
        )
    return target


def evaluate(
    clf,
    faces: FaceSet,
    target: tuple[str, ...] | str | None = None,
    batch_size: int = 64,
    latency_samples: int = 200,
    progress: bool = True,
    mismatch_advice: str | None = None,
) -> dict:
    """Evaluate `clf` (an edge_fer.classify.Classifier) on `faces`; returns the report dict.
    mismatch_advice: `plan_vocabulary`'s advice.

    target: None (the model's vocabulary), "dataset" (the dataset's classes the model can
    answer, see `dataset_target`) or a tuple of class names. A model trained on eye-aligned
    faces (`spec.align`) gets the faces aligned as its training aligned them (report key
    "alignment")."""
    from edge_fer.limits import check_count

    _check_model(clf)
    _check_faces(faces)
    check_count(batch_size, "batch_size")  # 2.5 or NaN: a TypeError deep in range()
    check_count(latency_samples, "latency_samples", lowest=0)
    target = _check_target(target)
    mode = "model" if target is None else "dataset" if target == "dataset" else "explicit"
    if target == "dataset":
        target = dataset_target(faces, clf.classes)
    plan = plan_vocabulary(faces.classes, clf.classes, target, faces.counts(), mismatch_advice)
    lab = plan.label_index[faces.labels]
    keep = lab >= 0
    dropped = faces.labels[~keep]
    per_class = np.bincount(dropped, minlength=len(faces.classes))
    dropped_by_class = {faces.classes[i]: int(n) for i, n in enumerate(per_class) if n}
    images = faces.images[keep]
    lab = lab[keep]
    if len(images) == 0:
        raise UserError("no faces left to evaluate after mapping the labels")
    images, alignment = align_as_trained(clf.spec, images, log=False)  # the summary says it
    probs, t_prep, t_inf = run_inference(clf, images, batch_size, progress)
    rep = classification_report(plan.map_probs(probs), lab, plan.classes)
    n = len(images)
    latency = {
        "backend": clf.backend.name,
        "threads": getattr(clf.backend, "threads", None),
        "batch_size": batch_size,
        "ms_per_face": (t_prep + t_inf) * 1e3 / n,
        "infer_ms_per_face": t_inf * 1e3 / n,
        "preprocess_ms_per_face": t_prep * 1e3 / n,
        "tta": clf.tta,
        "includes": "preprocessing (PreprocessSpec.prepare) and inference"
        + (f" of every test-time augmentation view ({clf.tta})" if clf.tta != "none" else ""),
    }
    if alignment:
        latency["alignment_ms_per_face"] = alignment["seconds"] * 1e3 / n
        latency["includes"] += "; eye alignment ran once before (alignment_ms_per_face)"
    latency.update(batch1_latency(clf, images, latency_samples))
    rep.update(
        {
            "tta": clf.tta,
            "latency_ms_per_face": latency["ms_per_face"],
            "latency": latency,
            "dataset_classes": list(faces.classes),
            "model_classes": list(clf.classes),
            "label_mapping": plan.data_map,
            "model_mapping": plan.model_map,
            "skipped": int(faces.skipped),
            "dropped": len(dropped),
            "dropped_by_class": dropped_by_class,
            "vocabulary": {
                "mode": mode,
                **plan.describe(dropped_by_class, np.bincount(lab, minlength=len(plan.classes))),
            },
        }
    )
    if alignment:
        rep["alignment"] = alignment
    return rep


def _check_model(clf) -> None:
    """A UserError naming `clf` unless it is a loaded classifier (a model's path was an
    AttributeError on .classes)."""
    if isinstance(clf, (str, bytes, os.PathLike)):
        raise UserError(
            f"must be a loaded model, not the path {os.fsdecode(clf)!r}: give "
            "edge_fer.classify.Classifier.load(path)",
            param="clf",
        )
    if not all(hasattr(clf, a) for a in ("classes", "spec", "infer", "predict", "backend")):
        raise UserError(
            f"must be an edge_fer.classify.Classifier, got {type(clf).__name__}", param="clf"
        )


def _check_faces(faces) -> None:
    """A UserError naming `faces` unless it is a FaceSet whose arrays agree (a dataset's path
    was an AttributeError; a label beyond the classes an IndexError, a labels array of
    another length a numpy boolean-index error)."""
    if isinstance(faces, (str, bytes, os.PathLike)):
        raise UserError(
            f"must be loaded faces, not the path {os.fsdecode(faces)!r}: give "
            "edge_fer.data.load_dataset(path)",
            param="faces",
        )
    if not isinstance(faces, FaceSet):
        raise UserError(
            f"must be an edge_fer.data.FaceSet, got {type(faces).__name__}", param="faces"
        )
    images, labels = faces.images, faces.labels
    if not isinstance(images, np.ndarray) or images.ndim not in (3, 4):
        raise UserError(
            f"must have images as an (N, H, W) array, got {_what(images)}", param="faces"
        )
    if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise UserError(
            f"must have labels as a 1-D integer array, got {_what(labels)}", param="faces"
        )
    if len(labels) != len(images):
        raise UserError(f"has {len(images)} images but {len(labels)} labels", param="faces")
    c = len(faces.classes)
    if len(labels) and (labels.min() < 0 or labels.max() >= c):
        raise UserError(
            f"has labels {labels.min()}..{labels.max()}, beyond its {c} classes (0..{c - 1})",
            param="faces",
        )


def _what(v) -> str:
    """An array's shape and dtype, or another value's type, for a message."""
    if isinstance(v, np.ndarray):
        return f"shape {tuple(v.shape)} of {v.dtype}"
    return type(v).__name__


def _check_target(target):
    """`target` as `evaluate` uses it: None, "dataset", or a tuple of class names (a label
    set's name looked up); a UserError naming `target` otherwise."""
    from edge_fer.limits import check_names

    if target is None:
        return None
    if isinstance(target, str):
        name = target.strip().lower()
        if name == "dataset":
            return "dataset"
        if name not in L.VOCABULARIES:  # before, its letters became the classes
            raise UserError(
                f"{target!r} is unknown; choose dataset, {', '.join(L.VOCABULARIES)} or give "
                "a tuple of class names",
                param="target",
            )
        return L.vocabulary(name)
    try:
        names = check_names(target, "target")
    except TypeError:  # None, a number
        names = None
    if names is None or not all(isinstance(c, str) for c in names):
        raise UserError(f"must be a tuple of class names, got {target!r}", param="target")
    if not names:
        raise UserError("names no class", param="target")
    return names


def align_as_trained(spec, images: np.ndarray, log: bool = True) -> tuple[np.ndarray, dict]:
    """The evaluation faces as the model's training saw them: for a model trained on
    eye-aligned faces (`spec.align`), aligned with `edge_fer.align.as_trained` (the trainer's
    function; CLAHE stays with `spec.prepare`); returns (faces, what the alignment did: {} when
    the model does not align)."""
    if not spec.align:
        return images, {}
    from edge_fer.align import as_trained

    found = np.zeros(len(images), bool)
    t0 = time.perf_counter()
    images = as_trained(images, spec, log=log, found=found)
    return images, {
        "eyes_found": int(found.sum()),
        "faces": len(images),
        "frame": [float(v) for v in spec.align_frame],
        "seconds": time.perf_counter() - t0,
    }


# -- confusion matrix image -------------------------------------------------------------------

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _fit_scale(text: str, width: int, scale: float, thick: int = 1) -> float:
    while scale > 0.3 and cv2.getTextSize(text, _FONT, scale, thick)[0][0] > width:
        scale -= 0.05
    return scale


def _put(img, text, cx, cy, scale, color, thick=1, align="center"):
    (w, h), _ = cv2.getTextSize(text, _FONT, scale, thick)
    x = cx - w // 2 if align == "center" else (cx - w if align == "right" else cx)
    cv2.putText(img, text, (int(x), int(cy + h // 2)), _FONT, scale, color, thick, cv2.LINE_AA)


def draw_confusion(cm, classes, title: str = "", cell: int = 72) -> np.ndarray:
    """A row-normalised confusion matrix as a BGR image: colour and % by true-class row,
    raw counts below. Rows: true class, columns: predicted class."""
    c = len(classes)
    m = np.asarray(cm)
    # another table's matrix was an IndexError half-way through the drawing; NaN a huge count
    if m.shape != (c, c) or m.dtype.kind not in "iuf" or not np.isfinite(m).all():
        raise UserError(
            f"must be a ({c}, {c}) matrix of finite counts for the {c} classes, got {_what(m)}",
            param="cm",
        )
    cm = m.astype(np.int64)
    cell = max(cell, min(120, 480 // max(c, 1)))  # few classes: bigger cells, readable title
    rows = cm.sum(1, keepdims=True)
    frac = np.where(rows > 0, cm / np.maximum(rows, 1), 0.0)
    left, top, right, bottom = 120, 96, 24, 24
    h, w = top + c * cell + bottom, left + c * cell + right
    img = np.full((h, w, 3), 255, np.uint8)
    if title:
        _put(img, title, w // 2, 18, _fit_scale(title, w - 16, 0.55), (0, 0, 0), 1)
    _put(img, "predicted", left + c * cell // 2, 44, 0.5, (60, 60, 60))
    lo, hi = np.array([255, 255, 255], float), np.array([120, 48, 8], float)  # white -> dark blue
    for j, name in enumerate(classes):
        _put(
            img,
            name,
            left + j * cell + cell // 2,
            top - 18,
            _fit_scale(name, cell - 6, 0.45),
            (0, 0, 0),
        )
    for i, name in enumerate(classes):
        y0 = top + i * cell
        _put(
            img,
            name,
            left - 8,
            y0 + cell // 2,
            _fit_scale(name, left - 30, 0.45),
            (0, 0, 0),
            align="right",
        )
        for j in range(c):
            x0 = left + j * cell
            f = float(frac[i, j])
            colour = tuple(int(v) for v in lo + (hi - lo) * f)
            cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), colour, -1)
            ink = (255, 255, 255) if f > 0.5 else (0, 0, 0)
            _put(img, f"{100 * f:.0f}%", x0 + cell // 2, y0 + cell // 2 - 9, 0.5, ink, 1)
            _put(img, str(int(cm[i, j])), x0 + cell // 2, y0 + cell // 2 + 13, 0.38, ink, 1)
    cv2.rectangle(img, (left, top), (left + c * cell, top + c * cell), (90, 90, 90), 1)
    # "true" written vertically on the left edge
    lab = np.full((22, 60, 3), 255, np.uint8)
    _put(lab, "true", 30, 10, 0.5, (60, 60, 60))
    lab = cv2.rotate(lab, cv2.ROTATE_90_COUNTERCLOCKWISE)
    y = top + c * cell // 2 - lab.shape[0] // 2
    if 0 <= y and y + lab.shape[0] <= h:
        img[y : y + lab.shape[0], 4 : 4 + lab.shape[1]] = lab
    return img


# a PNG text chunk naming the writer: a later eval replaces its own image, not a user's photo
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MARK = b"Software\x00edge-fer eval"


def _with_mark(png: bytes) -> bytes:
    import struct
    import zlib

    chunk = struct.pack(">I", len(_PNG_MARK)) + b"tEXt" + _PNG_MARK
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + _PNG_MARK) & 0xFFFFFFFF)
    ihdr_end = 8 + 8 + 13 + 4  # signature, then IHDR (length, type, 13 bytes, CRC)
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def is_eval_png(path: str | os.PathLike) -> bool:
    """Whether `path` is a confusion-matrix image `write_png` made."""
    with open(path, "rb") as fh:
        head = fh.read(64 + len(_PNG_MARK))
    return head.startswith(_PNG_SIGNATURE) and _PNG_MARK in head


def write_png(img: np.ndarray, path: str | os.PathLike) -> None:
    p = Path(path)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise UserError(f"{p}: cannot encode PNG")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fileio.write_bytes(p, _with_mark(buf.tobytes()))
    except OSError as exc:
        raise UserError(f"{p}: cannot write ({fileio.os_error_reason(exc)})") from None


def vocabulary_text(v: dict) -> list[str]:
    """What the label mapping did, for the summary; nothing when the dataset and the model
    share one vocabulary untouched."""
    if not v:
        return []
    dropped = v.get("model_classes_dropped") or []
    merged = v.get("model_classes_merged") or {}
    renamed = v.get("model_classes_renamed") or {}
    unmatched = v.get("dataset_classes_without_counterpart") or {}
    mapped = v.get("dataset_classes_mapped") or {}
    faceless = v.get("compared_without_faces") or []
    if v.get("mode") == "model" and not (
        dropped or merged or renamed or unmatched or mapped or faceless
    ):
        return []
    whose = {"model": "the model's", "dataset": "the dataset's", "explicit": "the chosen"}
    n = len(v["compared"])
    mode = whose.get(v.get("mode"), "the chosen")
    out = [f"compared  {', '.join(v['compared'])} ({n} classes, {mode} vocabulary)"]
    if faceless:  # before: "compared" claimed all of them where one had faces
        scored = [c for c in v["compared"] if c not in faceless]
        out.append(
            f"scored    {', '.join(scored)} ({len(scored)} of {n}: no test face of "
            f"{', '.join(faceless)}; those are predicted, and count as errors, but get no "
            "recall and no share of macro-F1)"
        )
    model = [f"{t} <- {' + '.join(ms)} (merged)" for t, ms in merged.items()]
    model += [f"{m} -> {t}" for m, t in renamed.items()]
    if dropped:
        model.append(f"{', '.join(dropped)} dropped (probability removed, rest renormalised)")
    if model:
        out.append("model     " + "; ".join(model))
    data = [f"{c} -> {t}" for c, t in mapped.items()]
    data += [f"{c}: no counterpart, {n} faces excluded" for c, n in unmatched.items()]
    if data:
        out.append("dataset   " + "; ".join(data))
    if v.get("compared_without_model_class"):
        out.append(
            f"note      no model class answers {', '.join(v['compared_without_model_class'])}"
        )
    return out


def summary_text(rep: dict) -> str:
    """A short human summary of an evaluation report."""
    lines = [
        f"model     {rep.get('model', '?')}",
        f"data      {rep.get('data', '?')}  split {rep.get('split', '?')}  n {rep['n']}"
        + (f"  skipped {rep['skipped']}" if rep.get("skipped") else "")
        + (f"  dropped {rep['dropped']}" if rep.get("dropped") else ""),
        (
            f"accuracy  {rep['accuracy']:.4f}   top-2 {rep['top2_accuracy']:.4f}   "
            f"macro-F1 {rep['macro_f1']:.4f}"
        ),
    ]
    tta = rep.get("tta")
    if tta:  # accuracy and ms/face are of these views; the runtime classifies one
        from edge_fer.tta import n_views

        k = n_views(tta)
        lines.append(f"views     {tta} ({k} view{'s' if k != 1 else ''} a face; --tta)")
    lines += vocabulary_text(rep.get("vocabulary") or {})
    al = rep.get("alignment") or {}
    if al:
        lines.append(
            f"aligned   {al['eyes_found']}/{al['faces']} faces on their eyes, as the model was "
            "trained (the rest as cropped)"
        )
    lat = rep.get("latency") or {}
    if lat:
        s = f"latency   {lat['ms_per_face']:.3f} ms/face at batch {lat['batch_size']}"
        if "batch1_ms_per_face" in lat:
            s += f", {lat['batch1_ms_per_face']:.3f} ms/face at batch 1"
        lines.append(s + f" ({lat['backend']})")
    lines.append(f"{'class':<10} {'prec':>6} {'recall':>6} {'f1':>6} {'n':>6}")
    for name, d in rep["per_class"].items():
        lines.append(
            f"{name:<10} {d['precision']:6.3f} {d['recall']:6.3f} {d['f1']:6.3f} {d['support']:6d}"
        )
    return "\n".join(lines)
