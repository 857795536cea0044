"""Face alignment (edge_fer.align): the eye localiser's error, and what aligned crops do to the
bundled classifier's accuracy.

1. Eyes, WebFaces validation split (the last 10% of images in name order; the eye model never
   saw them): eye error / true eye distance, boxes from the landmarks and jittered like a
   detector's; the box-only guess (the model's start point) for comparison.
2. SFEW 2.0 train (859 colour 143x181 crops from movies, never seen by the classifier): the
   runtime's detector (bundled cascade + verifier, photo settings) finds the face in each crop
   (set in a 100 px border of repeated edge pixels: the face fills the crop, and the detector's
   window for it is larger than the crop; without the border it finds 15% of them);
   the bundled INT8 classifier (trained on FER2013, unaligned) classifies the plain crop (the
   runtime's default) and the aligned crop in two frames: the default frame of the issue
   (1.7 / 1.3 / 3.2 eye distances) and the FER2013 frame (`Frame.fer2013()`).
3. FER2013 PrivateTest: the faces as they are vs `align_faces` in the same two frames.
4. Time per face: eye localisation and the aligned crop vs the plain crop.

    python benchmarks/bench_align.py [--limit N] [--out JSON] [--no-save]

Results: benchmarks/results/align.json (or --out) and a table on stdout.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from common import fail, save_json

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "benchmarks" / "results" / "align.json"
MODEL = ROOT / "edge_fer" / "assets" / "fer_default.int8.onnx"
PAD = 100  # pixels of repeated border around each SFEW crop before detection


def eye_rows(limit: int) -> dict:
    from edge_fer.align.aligner import BUNDLED
    from edge_fer.align.config import LearnConfig
    from edge_fer.align.learn import evaluate, jittered_box, read_faces
    from edge_fer.align.model import EyeModel

    model = EyeModel.load(BUNDLED)
    out = {
        "val": evaluate(model, SHARED / "data/webfaces", "val", limit=limit),
        "val_jittered": evaluate(model, SHARED / "data/webfaces", "val", jitter=True, limit=limit),
    }
    # the box-only guess: the model's start point, no trees; on the annotation's boxes (which
    # are made from these very landmarks, so it flatters) and on the same jittered boxes
    faces = read_faces(SHARED / "data/webfaces", "val")
    n = len(faces.paths) if not limit else min(limit, len(faces.paths))
    cfg = LearnConfig()
    for key, jitter in (("box_only", False), ("box_only_jittered", True)):
        rng = np.random.default_rng(1)  # evaluate()'s draws, in its order
        errs, worst = [], []
        for i in range(n):
            cx, cy, side = jittered_box(faces.boxes[i], cfg, rng) if jitter else faces.boxes[i]
            gl = (cx + model.init[1] * side, cy + model.init[0] * side)
            gr = (cx - model.init[1] * side, gl[1])
            d = float(np.hypot(*(faces.right[i] - faces.left[i])))
            el = math.hypot(gl[0] - faces.left[i][0], gl[1] - faces.left[i][1]) / d
            er = math.hypot(gr[0] - faces.right[i][0], gr[1] - faces.right[i][1]) / d
            errs += [el, er]
            worst.append(max(el, er))
        w = np.array(worst)
        out[key] = {
            "faces": n,
            "mean_eye_error": round(float(np.mean(errs)), 4),
            "within_0.1": round(float((w <= 0.1).mean()), 4),
            "within_0.25": round(float((w <= 0.25).mean()), 4),
        }
    # the confidence test on boxes with no face: random boxes on the held-out backgrounds
    from edge_fer.align import load_aligner
    from edge_fer.cascade_train.annotations import list_images, split_paths

    al = load_aligner()
    rng = np.random.default_rng(0)
    hits = tries = 0
    for p in split_paths(list_images(SHARED / "data/backgrounds"), "val"):
        g = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        for _ in range(20):
            s = float(rng.uniform(40, min(g.shape) * 0.8))
            x, y = rng.uniform(0, g.shape[1] - s), rng.uniform(0, g.shape[0] - s)
            hits += al.eyes(g, (x, y, s, s)).found
            tries += 1
    out["found_on_backgrounds"] = {"boxes": tries, "found_rate": round(hits / max(tries, 1), 4)}
    return out


def scores(clf, crops: list, labels: np.ndarray) -> dict:
    from edge_fer.metrics import classification_report

    rep = classification_report(clf.predict(crops), labels, clf.classes)
    return {"accuracy": round(rep["accuracy"], 4), "macro_f1": round(rep["macro_f1"], 4)}


def sfew_faces(limit: int, part: str = "all") -> dict:
    """The SFEW crops in which the runtime's detector finds a face: grays, boxes, classes.
    part "test": only the movies `sfew_crops.py` holds out (the bundled model trained on the
    others' crops)."""
    from edge_fer.detect.config import DetectorOptions
    from edge_fer.detect.factory import DetectorPicker

    root = SHARED / "data/sfew_train"
    files = sorted((p, p.parent.name) for p in root.glob("*/*.png"))
    if limit:
        files = files[:: max(1, len(files) // limit)][:limit]
    picker = DetectorPicker(None, DetectorOptions(), stills=True)
    grays, boxes, names, kept = [], [], [], []
    for p, cls in files:
        gray = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2GRAY)
        # the face fills the crop; the detector's window for it (~210 px) is larger than the
        # crop: set it in a frame of repeated border, as if it were part of a larger picture
        gray = cv2.copyMakeBorder(gray, *(PAD,) * 4, cv2.BORDER_REPLICATE)
        det = picker(gray.shape)
        det.reset()
        dets = det.detect(gray)
        if dets:
            d = max(dets, key=lambda x: x[2])  # the largest: these crops hold one face
            grays.append(gray)
            boxes.append((d[1] - d[2] / 2, d[0] - d[2] / 2, d[2], d[2]))
            names.append(cls)
            kept.append(p.name)
    out = {"images": len(files), "grays": grays, "boxes": boxes, "names": names, "files": kept}
    if part == "test":
        from sfew_crops import held_out

        held = held_out()
        keep = [f in held for f in kept]
        for k in ("grays", "boxes", "names", "files"):
            out[k] = [v for v, t in zip(out[k], keep) if t]
    return out


def sfew_scores(clf, faces: dict, crop) -> dict:
    """Accuracy and macro-F1 of `clf` on the detected SFEW faces cut by `crop(gray, box)`."""
    y = np.array([clf.classes.index(c) for c in faces["names"]])
    t0 = time.perf_counter()
    crops = [crop(g, b) for g, b in zip(faces["grays"], faces["boxes"])]
    ms = 1000 * (time.perf_counter() - t0) / max(len(crops), 1)
    return {**scores(clf, crops, y), "ms_per_crop": round(ms, 3)}


def fer_faces(limit: int):
    from edge_fer.data import load_dataset

    ds = load_dataset(SHARED / "data/fer2013", "private-test", size=48)
    imgs, y = ds.images, ds.labels
    return (imgs[:limit], y[:limit], ds.classes) if limit else (imgs, y, ds.classes)


def fer_scores(clf, fer, aligner=None) -> dict:
    """Accuracy and macro-F1 on FER2013 PrivateTest, the faces as they are or aligned."""
    imgs, y, classes = fer
    y = np.array([clf.classes.index(c) for c in classes])[y]
    if aligner is None:
        return scores(clf, list(imgs), y)
    found = np.zeros(len(imgs), bool)
    t0 = time.perf_counter()
    al = aligner.align_faces(imgs, found)
    ms = 1000 * (time.perf_counter() - t0) / max(len(imgs), 1)
    return {
        **scores(clf, list(al), y),
        "eyes_found": round(float(found.mean()), 4),
        "ms_per_face": round(ms, 3),
    }


def bundled_rows(clf, frames: dict, sfew: dict, fer) -> dict:
    """The bundled classifier (trained unaligned) on plain and aligned crops."""
    from edge_fer.align import load_aligner
    from edge_fer.runtime.crops import crop_face

    spec = clf.spec
    out = {
        "sfew": {
            "plain": sfew_scores(
                clf, sfew, lambda g, b: crop_face(g, b, spec.crop_margin, spec.input_size)
            )
        },
        "fer2013_private": {"plain": fer_scores(clf, fer)},
    }
    for k, f in frames.items():
        al = load_aligner(frame=f, margin=spec.crop_margin)
        out["sfew"][f"aligned_{k}"] = sfew_scores(
            clf, sfew, lambda g, b, al=al: al.crop(g, b, spec.input_size)[0]
        )
        out["fer2013_private"][f"aligned_{k}"] = fer_scores(clf, fer, al)
    al = load_aligner(margin=spec.crop_margin)
    found = [al.eyes(g, b).found for g, b in zip(sfew["grays"], sfew["boxes"])]
    out["sfew"]["eyes_found"] = round(float(np.mean(found)), 4) if found else None
    return out


def model_rows(path: str, sfew: dict, fer) -> dict:
    """A classifier as the runtime uses it: crops per its metadata (aligned when it was trained
    aligned), FER2013 PrivateTest aligned the same way."""
    from edge_fer.align import Frame, load_aligner
    from edge_fer.classify import Classifier
    from edge_fer.runtime.crops import face_cropper

    clf = Classifier.load(path, tta="none")  # one view, as the runtime classifies
    al = load_aligner(frame=Frame(*clf.spec.align_frame)) if clf.spec.align else None
    return {
        "model": path,
        "align": clf.spec.align,
        "align_frame": list(clf.spec.align_frame) if clf.spec.align else None,
        "sfew": sfew_scores(clf, sfew, face_cropper(clf.spec)),
        "fer2013_private": fer_scores(clf, fer, al),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="at most N faces per part (0: all)")
    ap.add_argument("--out", default=str(RESULTS), help="results JSON (default: %(default)s)")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument(
        "--sfew-part",
        default="test",
        choices=("all", "test"),
        help="test (default): only the SFEW movies sfew_crops.py holds out; the bundled model "
        "trained on the others' crops",
    )
    ap.add_argument(
        "--models",
        nargs="*",
        default=[],
        metavar="ONNX",
        help="also measure these classifiers as the runtime uses them (aligned crops when "
        "trained aligned), e.g. a plain and an --align training of the same recipe",
    )
    args = ap.parse_args(argv)
    for need in ("webfaces", "sfew_train", "fer2013"):
        if not (SHARED / "data" / need).is_dir():
            return fail(f"bench_align: {SHARED}/data/{need} not found")
    from edge_fer.align import Frame
    from edge_fer.classify import Classifier

    clf = Classifier.load(MODEL, tta="none")  # one view, as the runtime classifies
    frames = {"default": Frame(), "fer2013": Frame.fer2013()}
    t0 = time.time()
    res = {
        "classifier": MODEL.name + " (trained on unaligned FER2013 faces)",
        "frames": {k: [f.side, f.top, f.bottom] for k, f in frames.items()},
        "eyes": eye_rows(args.limit),
    }
    print(f"eyes measured ({time.time() - t0:.0f}s)", file=sys.stderr)
    sfew, fer = sfew_faces(args.limit, args.sfew_part), fer_faces(args.limit)
    res["sfew_faces"] = {
        "images": sfew["images"],
        "part": args.sfew_part,
        "detected": len(sfew["boxes"]),
        "views": "one (tta none, as the runtime)",
    }
    res["bundled"] = bundled_rows(clf, frames, sfew, fer)
    print(f"bundled classifier measured ({time.time() - t0:.0f}s)", file=sys.stderr)
    res["models"] = [model_rows(m, sfew, fer) for m in args.models]
    res["seconds"] = round(time.time() - t0, 1)

    e = res["eyes"]
    print("\nEye localisation, WebFaces validation (error / eye distance; worse eye within)")
    print(f"{'':28s} {'faces':>6s} {'mean':>7s} {'<=0.1':>7s} {'<=0.25':>7s} {'found':>7s}")
    rows = (
        ("val", "annotation boxes"),
        ("box_only", "  box-only guess"),
        ("val_jittered", "jittered boxes"),
        ("box_only_jittered", "  box-only guess"),
    )
    for k, label in rows:
        r = e[k]
        a = r.get("all", r)
        found = f"{r['found_rate']:7.4f}" if "found_rate" in r else f"{'':7s}"
        print(
            f"{label:28s} {a['faces']:6d} {a['mean_eye_error']:7.4f} {a['within_0.1']:7.4f} "
            f"{a['within_0.25']:7.4f} {found}"
        )
    bg = e["found_on_backgrounds"]
    print(
        f"eye localisation: {e['val']['ms_per_face']:.3f} ms per face (median); eyes 'found' "
        f"in {bg['found_rate']:.1%} of {bg['boxes']} random boxes on face-free images"
    )
    s, f = res["bundled"]["sfew"], res["bundled"]["fer2013_private"]
    print("\nBundled INT8 classifier (trained on unaligned faces): accuracy / macro-F1")
    print(f"{'crop':32s} {'SFEW (detected)':>17s} {'FER2013 Private':>17s}")
    rows = (
        ("plain", "plain (the runtime's default)"),
        ("aligned_default", "aligned, frame 1.7/1.3/3.2"),
        ("aligned_fer2013", "aligned, FER2013 frame"),
    )

    def row(label: str, on_sfew: dict, on_fer: dict) -> None:
        scores = [d[k] for d in (on_sfew, on_fer) for k in ("accuracy", "macro_f1")]
        print(f"{label:32s} " + " ".join(f"{v:8.4f}" for v in scores))

    for k, label in rows:
        row(label, s[k], f[k])
    for m in res["models"]:
        how = "aligned" if m["align"] else "plain"
        row(f"{Path(m['model']).name} ({how})", m["sfew"], m["fer2013_private"])
    print(
        f"SFEW: {len(sfew['boxes'])}/{sfew['images']} crops with a face, eyes found in "
        f"{s['eyes_found']:.1%}; crop {s['plain']['ms_per_crop']:.3f} ms plain, "
        f"{s['aligned_fer2013']['ms_per_crop']:.3f} ms aligned"
    )
    if not args.no_save:
        save_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
