"""Detector evaluation: recall and false positives per image on annotated images, false
positives per megapixel on face-free images, and speed.

A cascade scans every image with `edge_fer.detect.Detector` (all clustered detections are kept,
then thresholded here). Matching, per image, in order of decreasing score: a detection's square
goes to the face box it overlaps most; with IoU >= `iou` (0.4) it is a true positive if that face
is still unmatched, a false positive if it was matched already (a duplicate), and ignored if the
face is smaller than `min_face` (faces below the smallest scanned window are not counted at all);
otherwise it is a false positive. Because the matching is greedy by score, one pass gives the
whole curve: the detections with score >= t are a prefix, matched exactly as they would be alone.

Speed is reported two ways: wall time per image of the scan (noisy on a busy machine) and the
mean number of trees evaluated per scanned window (exact; the cost model of the scan).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_fer.cascade_train import learner
from edge_fer.cascade_train.annotations import AnnotatedImage, Face, InputReport
from edge_fer.cascade_train.samples import read_gray
from edge_fer.detect import Cascade, Detector
from edge_fer.detect.grid import ScanGrid
from edge_fer.errors import UserError

DEFAULT_THRESHOLDS = (0.0, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0)
DEFAULT_FPPI = (0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass
class ScanParams:
    min_size: float = 24.0  # pixels
    max_size: float = 1.0  # fraction of the shorter side
    scale_factor: float = 1.1
    stride_factor: float = 0.1
    cluster_iou: float = 0.3
    grouping: str = "chain"  # or "greedy" (edge_fer.detect.cluster)
    angle: float = 0.0
    threads: int = 1  # one thread: timings comparable between cascades and machines

    def detector(self, cascade: Cascade) -> Detector:
        return Detector(
            cascade,
            min_size=self.min_size,
            max_size=self.max_size,
            scale_factor=self.scale_factor,
            stride_factor=self.stride_factor,
            angle=self.angle,
            threshold=-1e30,
            iou=self.cluster_iou,
            grouping=self.grouping,
            max_detections=1 << 20,
            threads=self.threads,
        )


def stage_ends(cascade: Cascade) -> np.ndarray:
    """Indices of the trees that end a stage: all but those carrying the in-stage sentinel
    threshold (the most common value, when it repeats and is <= -10: -1337 here, -15 in
    facefinder)."""
    thr = cascade.thresholds
    vals, counts = np.unique(thr, return_counts=True)
    k = int(np.argmax(counts))
    if counts[k] >= 2 and vals[k] <= -10:
        return np.flatnonzero(thr != vals[k])
    return np.arange(cascade.ntrees)


def truncate_stages(cascade: Cascade, stages: int) -> Cascade:
    """The cascade made of its first `stages` stages (what training had after that stage)."""
    ends = stage_ends(cascade)
    if not 1 <= stages <= len(ends):
        raise UserError(f"must be in 1..{len(ends)} for {cascade.source}", param="stages")
    n = int(ends[stages - 1]) + 1
    return Cascade(
        tdepth=cascade.tdepth,
        codes=cascade.codes[:n],
        leaves=cascade.leaves[:n],
        thresholds=cascade.thresholds[:n],
        header=cascade.header,
        source=f"{cascade.source}[:{stages} stages]",
    )


def match_image(dets: np.ndarray, faces: list[Face], min_face: float, iou: float) -> np.ndarray:
    """Labels of detections (n, 4) [row, col, size, score], sorted by decreasing score:
    1 true positive, 0 false positive, -1 ignored."""
    n = dets.shape[0]
    labels = np.zeros(n, np.int8)
    if not faces:
        return labels
    fr = np.array([f.row for f in faces])
    fc = np.array([f.col for f in faces])
    fs = np.array([f.size for f in faces])
    small = fs < min_face
    used = np.zeros(len(faces), bool)
    for i in range(n):
        r, c, s = float(dets[i, 0]), float(dets[i, 1]), float(dets[i, 2])
        dr = np.minimum(fr + fs / 2, r + s / 2) - np.maximum(fr - fs / 2, r - s / 2)
        dc = np.minimum(fc + fs / 2, c + s / 2) - np.maximum(fc - fs / 2, c - s / 2)
        inter = np.clip(dr, 0, None) * np.clip(dc, 0, None)
        ov = inter / (fs * fs + s * s - inter)
        j = int(np.argmax(ov))
        if ov[j] >= iou:
            if small[j]:
                labels[i] = -1
            elif not used[j]:
                used[j] = True
                labels[i] = 1
    return labels


@dataclass
class Curve:
    scores: np.ndarray  # all counted detections, decreasing
    tp: np.ndarray  # cumulative true positives
    fp: np.ndarray  # cumulative false positives
    nfaces: int
    nimages: int

    def at_threshold(self, t: float) -> tuple[float, float]:
        """(recall, false positives per image) over detections with score >= t."""
        k = int(np.searchsorted(-self.scores, -t, side="right"))  # count of scores >= t
        tp = int(self.tp[k - 1]) if k else 0
        fp = int(self.fp[k - 1]) if k else 0
        return tp / max(self.nfaces, 1), fp / max(self.nimages, 1)

    def at_fppi(self, fppi: float) -> tuple[float, float | None]:
        """(best recall with at most `fppi` false positives per image, its threshold)."""
        n = self.scores.shape[0]
        if n == 0:
            return 0.0, None
        # cut points: after the last detection of each group of equal scores
        last = np.r_[self.scores[1:] != self.scores[:-1], True]
        idx = np.flatnonzero(last & (self.fp / max(self.nimages, 1) <= fppi))
        if idx.size == 0:
            return 0.0, float(np.nextafter(np.float32(self.scores[0]), np.float32(np.inf)))
        k = idx[-1]
        return float(self.tp[k]) / max(self.nfaces, 1), float(self.scores[k])


def curve(
    all_dets: list[np.ndarray], all_faces: list[list[Face]], min_face: float, iou: float
) -> Curve:
    scores, labels = [], []
    nfaces = 0
    for dets, faces in zip(all_dets, all_faces):
        order = np.argsort(-dets[:, 3], kind="stable")
        d = dets[order]
        lab = match_image(d, faces, min_face, iou)
        keep = lab >= 0
        scores.append(d[keep, 3])
        labels.append(lab[keep])
        nfaces += sum(1 for f in faces if f.size >= min_face)
    s = np.concatenate(scores) if scores else np.zeros(0)
    lab = np.concatenate(labels) if labels else np.zeros(0, np.int8)
    order = np.argsort(-s, kind="stable")
    s, lab = s[order], lab[order]
    return Curve(s, np.cumsum(lab == 1), np.cumsum(lab == 0), nfaces, len(all_dets))


def load_images(paths: list[Path]) -> tuple[list[np.ndarray], list[int]]:
    """Decoded grayscale images and the indices (into paths) that decoded."""
    imgs, ok = [], []
    for i, p in enumerate(paths):
        g = read_gray(p)
        if g is not None:
            imgs.append(g)
            ok.append(i)
    return imgs, ok


def scan_all(det: Detector, images: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Clustered detections of every image (n, 4) and the total scan+cluster seconds."""
    out = []
    total = 0.0
    for g in images:
        t = time.perf_counter()
        raw = det.raw(g)
        cl = det.group(raw)
        total += time.perf_counter() - t
        out.append(cl)
    return out, total


def grid_windows(grid: ScanGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every window of a scan grid (`Detector.grid`) as contiguous int32 (rows, cols, sizes)."""
    rs, cs, ss = [], [], []
    for k in range(grid.nscales):
        r = grid.rows_f[grid.row_start[k] : grid.row_start[k + 1]].astype(np.int32)
        c = grid.cols_f[grid.col_start[k] : grid.col_start[k + 1]].astype(np.int32)
        R, C = np.meshgrid(r, c, indexing="ij")
        rs.append(R.ravel())
        cs.append(C.ravel())
        ss.append(np.full(R.size, grid.sizes_i[k], np.int32))
    return tuple(np.ascontiguousarray(np.concatenate(x), np.int32) for x in (rs, cs, ss))


def trees_per_window(cascade: Cascade, params: ScanParams, images: list[np.ndarray]) -> dict:
    """Mean trees evaluated per scanned window over `images` (the scan's cost model)."""
    det = params.detector(cascade)
    total_trees = 0
    total_windows = 0
    for g in images:
        grid = det.grid(*g.shape)
        if grid.windows == 0:
            continue
        r, c, s = grid_windows(grid)
        n = r.shape[0]
        pix = np.ascontiguousarray(g).reshape(-1)
        out = np.zeros(n, np.int32)
        learner.count_trees(
            pix,
            np.zeros(1, np.int64),
            np.array([g.shape[0]], np.int32),
            np.array([g.shape[1]], np.int32),
            r,
            c,
            s,
            np.zeros(n, np.int32),
            np.ones(n, np.int32),
            cascade.tdepth,
            cascade.codes,
            cascade.leaves,
            cascade.thresholds,
            cascade.ntrees,
            out,
        )
        total_trees += int(out.sum())
        total_windows += n
    return {
        "trees_per_window": total_trees / max(total_windows, 1),
        "windows": total_windows,
    }


def evaluate_cascade(
    cascade: Cascade,
    images: list[np.ndarray],
    faces: list[list[Face]],
    backgrounds: list[np.ndarray],
    params: ScanParams,
    thresholds=DEFAULT_THRESHOLDS,
    fppis=DEFAULT_FPPI,
    iou: float = 0.4,
    min_face: float | None = None,
    speed_images: int = 0,
) -> dict:
    det = params.detector(cascade)
    det.raw(images[0] if images else np.zeros((32, 32), np.uint8))  # compile outside timing
    mf = params.min_size if min_face is None else min_face
    dets, secs = scan_all(det, images)
    cv = curve(dets, faces, mf, iou)
    bg_dets, bg_secs = scan_all(det, backgrounds) if backgrounds else ([], 0.0)
    bg_mp = sum(g.size for g in backgrounds) / 1e6
    bg_scores = np.sort(np.concatenate([d[:, 3] for d in bg_dets]))[::-1] if bg_dets else None

    def bg_fp_per_mp(t: float | None) -> float | None:
        if bg_scores is None or t is None:
            return None
        return float((bg_scores >= t).sum()) / bg_mp

    def point(t: float | None, **row) -> dict:  # an operating point at threshold t
        return {**row, "bg_fp_per_mp": _r(bg_fp_per_mp(t))}

    table = []
    for t in thresholds:
        rec, fppi = cv.at_threshold(t)
        table.append(point(t, threshold=t, recall=round(rec, 4), fp_per_image=round(fppi, 4)))
    ops = []
    for f in fppis:
        rec, t = cv.at_fppi(f)
        ops.append(point(t, fppi=f, recall=round(rec, 4), threshold=_r(t)))
    res = {
        "source": cascade.source,
        "tdepth": cascade.tdepth,
        "ntrees": cascade.ntrees,
        "faces": cv.nfaces,
        "images": cv.nimages,
        "table": table,
        "at_fppi": ops,
        "speed": {
            "ms_per_image": round(1000 * secs / max(len(images), 1), 2),
            "bg_ms_per_mp": round(1000 * bg_secs / bg_mp, 2) if bg_mp else None,
        },
    }
    if speed_images:
        res["speed"].update(trees_per_window(cascade, params, images[:speed_images]))
        res["speed"]["trees_per_window"] = round(res["speed"]["trees_per_window"], 3)
    return res


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(float(v), nd)


def load_eval_set(
    images: list[AnnotatedImage], report: InputReport | None = None
) -> tuple[list[np.ndarray], list[list[Face]], int]:
    """Decoded images, their faces and how many did not decode. A face whose centre lies
    outside its image is dropped and counted in `report` ('outside_image'), as training
    (samples.load_annotated) does: it was counted as a face no scan could find."""
    imgs, ok = load_images([im.path for im in images])
    if not imgs:
        raise UserError("none of the evaluation images could be read")
    faces = []
    for g, i in zip(imgs, ok):
        h, w = g.shape[:2]
        keep = []
        for f in images[i].faces:
            if 0 <= f.row < h and 0 <= f.col < w:
                keep.append(f)
            elif report is not None:
                report.add("outside_image", f"{images[i].path.name} ({f.col:.0f},{f.row:.0f})")
        faces.append(keep)
    return imgs, faces, len(images) - len(ok)


def compare(cand: dict, ref: dict, fppi: float = 0.5) -> dict:
    """The issue's targets: recall ratio at `fppi`, background FP/Mpx and speed ratios."""

    def op(r):
        return next(o for o in r["at_fppi"] if o["fppi"] == fppi)

    a, b = op(cand), op(ref)
    out = {
        f"recall_at_{fppi}_fppi": a["recall"],
        f"reference_recall_at_{fppi}_fppi": b["recall"],
        "recall_ratio": round(a["recall"] / b["recall"], 4) if b["recall"] else None,
        "bg_fp_per_mp": a["bg_fp_per_mp"],
        "reference_bg_fp_per_mp": b["bg_fp_per_mp"],
        "time_ratio": (
            round(cand["speed"]["ms_per_image"] / ref["speed"]["ms_per_image"], 3)
            if ref["speed"]["ms_per_image"]
            else None
        ),
    }
    if "trees_per_window" in cand["speed"] and "trees_per_window" in ref["speed"]:
        cost_a = cand["speed"]["trees_per_window"] * cand["tdepth"]
        cost_b = ref["speed"]["trees_per_window"] * ref["tdepth"]
        out["tests_per_window_ratio"] = round(cost_a / cost_b, 3) if cost_b else None
    return out


def training_lines(state: dict, command: str) -> list[str]:
    """The card's training section, from train-cascade's state.json alone (so eval-detector
    can check a hand-edited state before its scan: KeyError/TypeError/ValueError/AttributeError
    mean the state is not one)."""
    opts = state.get("options", {})
    data = state.get("data", {})
    lines = [
        "## Training",
        "",
        f"- command: `{command}`",
        (
            f"- seed: {opts.get('seed')}; stop: {state.get('stop_reason')}; training time: "
            f"{state.get('elapsed_s', 0) / 3600:.2f} h"
        ),
        (
            f"- data: WebFaces {opts.get('webfaces')} without its last {opts.get('val_fraction')} "
            f"of images in name order; {data.get('faces')} faces, {data.get('annotated_images')} "
            f"annotated images; backgrounds {opts.get('backgrounds')} without the last "
            f"{opts.get('bg_val_fraction')} ({data.get('background_images')} images)"
        ),
        f"- bad input skipped: {data.get('bad_input') or 'none'}",
        "",
        "| stage | trees | total | stage TPR | stage FPR | cascade FPR before | negatives | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in state.get("stages", []):
        lines.append(
            f"| {r['stage']} | {r['trees']} | {r['total_trees']} | {r['stage_tpr']:.4f} | "
            f"{r['stage_fpr']:.3f} | {r['cascade_fpr_before']:.2e} | {r['negatives']} | "
            f"{r['seconds']:.0f} |"
        )
    return lines


def model_card(state: dict, result: dict, command: str, name: str = "face cascade") -> str:
    """Markdown model card of a learned cascade: command, data, seed, time, metrics."""
    c = result["cascade"]
    lines = [
        f"# {name}",
        "",
        (
            f"A pico cascade (depth {c['tdepth']}, {c['ntrees']} trees in {state.get('stage')} "
            "stages) learned with `edge-fer train-cascade` (Markus et al. 2013, arXiv 1305.4537)."
        ),
        "",
        *training_lines(state, command),
    ]
    lines += [
        "",
        (
            f"## Evaluation ({result['split']} split: {result['images']} images, {c['faces']} faces; "
            f"backgrounds: {result['backgrounds']['images']} images, "
            f"{result['backgrounds']['megapixels']} Mpx)"
        ),
        "",
        f"Scan: {result['scan']}; a face is found at IoU >= {result['match_iou']}.",
        "",
    ]
    for key in ("cascade", "reference"):
        r = result.get(key)
        if r is None:
            continue
        lines += [
            f"### {key}: `{Path(r['source']).name}` ({r['ntrees']} trees)",
            "",
            "| FP/image | recall | threshold | background FP/Mpx |",
            "|---|---|---|---|",
        ]
        for o in r["at_fppi"]:
            lines.append(
                f"| {o['fppi']} | {o['recall']} | {o['threshold']} | {o['bg_fp_per_mp']} |"
            )
        sp = r["speed"]
        lines += [
            "",
            (
                f"Speed: {sp['ms_per_image']} ms/image (one thread), "
                f"{sp.get('trees_per_window', '-')} trees per window."
            ),
            "",
        ]
    if "comparison" in result:
        lines += ["## Targets", "", "```", json.dumps(result["comparison"], indent=1), "```", ""]
    return "\n".join(lines)
