"""Detection quality and speed against YuNet (libfacedetection, the `yuface` wheel: benchmarks
only, `pip install -e '.[bench]'`), side by side with edge-fer's shipped defaults on stills.

    python benchmarks/bench_yunet.py --at 3.0,0.5 --repeat 2   # as in results/yunet.json
    python benchmarks/bench_yunet.py --quick    # a quarter of the data: a smoke run (its
                                                # tuning halves are too small to choose by)

`--at T,P` adds a candidate (cascade threshold, verifier min_prob) of face_default.pico (3.0,0.5:
the settings before issue 17). The full run takes 3 min at load 4 on the 2 cores, 10 at load 10.
Other candidates (write them elsewhere with `--out`): `--verifier ONNX` behind face_default.pico
(`--verifier-lowres`: behind face_lowres.pico too), `--lowres-at T,P` for face_lowres.pico, and
`--scale-factor` / `--stride-factor` for a denser face_default.pico scan. `lowres_grid` in the
results holds WebFaces recall over face_lowres.pico's threshold and the one its tuning half picks
(at its own min_prob, which is also its video setting).

Two sets, each cut in a tuning half and a report half:
- **WebFaces validation split** (the last 10% of images in name order, which no bundled model
  learned from): the first half by name tunes, the second reports. Boxes come from the
  eye/nose/mouth landmarks by the project's rule (`cascade_train.annotations.webfaces_box`).
  Only frontal faces are annotated there; a turned face that a detector finds counts against it.
- **Composed group photos** (`compose_group.py`, in memory, seeded): faces cut from the same
  halves of the validation split, three in four 20-60 px, pasted on 640x480 (and, fewer,
  1280x720) mosaics of the held-out backgrounds (the last 10%, halved the same way).

edge-fer runs as `edge-fer detect --min-size 24` does on a photo: the cascade picked for its
size (`face_lowres.pico` under 240 px, else `face_default.pico`) with its `.json` settings and
the verifier behind it. "face_default everywhere" is `--cascade .../face_default.pico`.
YuNet's five landmarks (eyes, nose, mouth corners) give its box by the same rule as the
annotations, so both detectors are matched alike (`cascade_train.evaluate.curve`: greedy by
score, IoU >= 0.4, faces under 24 px neither counted nor held against anyone).

Curves: every cluster is kept and verified once (min_prob 0), so one pass gives recall and false
positives per image at every cascade threshold and verifier min_prob (`select` reproduces
`VerifiedDetector.detect`; the timing pass checks that on every image). The tuning halves pick
the (threshold, min_prob) of face_default.pico with the best mean recall at <= 0.1 false
positives per image on WebFaces and <= 0.02 on the composed photos (their 15 backgrounds are a
small sample of scenes: the report half's fire several times as often); the report halves show
it, and `grid` holds the whole surface for both halves.

Speed: one process, `--threads` threads for each (OMP_NUM_THREADS for YuNet, numba's for the
scan; the verifier always runs on one), called alternately image by image on the same decoded
BGR frame (edge-fer's time includes its grayscale conversion); the best of `--repeat` calls per
image; milliseconds per megapixel over the whole set (both halves); "scan" is the cascade
alone, without the verifier. Timing on a shared machine is noisy:
rerun in a quiet window.

Results: benchmarks/results/yunet.json (yunet_quick.json with --quick) and tables on stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("EDGE_FER_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "benchmarks" / "results"
ASSETS = ROOT / "edge_fer" / "assets"
FPPI = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
PROBS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
NO_THRESHOLD = -1e30


# ---- detectors ------------------------------------------------------------------------------
def yunet_boxes(res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """YuNet's rows (conf%, x, y, w, h, 5 landmarks x/y, ...) -> (n, 4) [row, col, size, score]
    from the landmarks by the annotations' rule, and (n, 4) from its own box, squared."""
    from edge_fer.cascade_train.annotations import webfaces_box

    lm_rows, own_rows = [], []
    for r in np.asarray(res, np.float64):
        conf = r[0] / 100.0
        x, y, w, h = r[1:5]
        own = (y + h / 2, x + w / 2, (w + h) / 2)
        le, re_, nose, ml, mr = r[5:7], r[7:9], r[9:11], r[11:13], r[13:15]
        m = (ml + mr) / 2
        f = webfaces_box(le[0], le[1], re_[0], re_[1], nose[0], nose[1], m[0], m[1])
        lm_rows.append((f.row, f.col, f.size, conf) if f is not None else (*own, conf))
        own_rows.append((*own, conf))
    z = np.zeros((0, 4))
    return (np.array(lm_rows) if lm_rows else z), (np.array(own_rows) if own_rows else z)


class EdgeFer:
    """edge-fer's detectors as `edge-fer detect` builds them (the picker, stills, one frame),
    at the shipped settings or at a candidate (threshold, min_prob) of face_default.pico."""

    def __init__(
        self,
        min_size: float,
        threads: int,
        verifier: str | None = None,
        lowres_too: bool = False,
        lowres_at: tuple | None = None,
        scan: dict | None = None,
    ) -> None:
        from edge_fer.detect.config import DetectorOptions, default_cascade_path
        from edge_fer.detect.factory import DetectorPicker

        self.min_size, self.threads = min_size, threads
        # a candidate verifier behind face_default.pico (None: its own), and face_lowres.pico
        self.verifier, self.lowres_too = verifier, lowres_too and verifier is not None
        self.default = default_cascade_path()
        # scan options (scale_factor, stride_factor) for face_default.pico only: denser scans
        self.scan = {k: v for k, v in (scan or {}).items() if v is not None}
        self._opts = DetectorOptions
        self._picker = DetectorPicker
        # the shipped path: lowres under 240 px
        self.auto = self.picker(None, verifier=verifier if self.lowres_too else None)
        # face_lowres.pico (photos under 240 px) at its own settings, or at `lowres_at`
        self.low = self.auto
        if lowres_at is not None:
            self.low = self.picker(None, *lowres_at, verifier if self.lowres_too else None)
        self._forced: dict = {}

    def picker(self, cascade, threshold=None, min_prob=None, verifier=None):
        opts = self._opts(
            min_size=self.min_size,
            memory=1,
            threshold=threshold,
            verifier_min_prob=min_prob,
            verifier=verifier,
            **(self.scan if cascade == self.default else {}),
        )
        return self._picker(cascade, opts, threads=self.threads, stills=True)

    def lowres(self, shape) -> bool:
        from edge_fer.detect.config import LOWRES_CASCADE, cascade_for_frame

        return cascade_for_frame(None, min(shape[:2])).name == LOWRES_CASCADE

    def detector(self, shape, at=None, everywhere: bool = False):
        """The detector for a frame: shipped (at None), or face_default.pico at `at` =
        (threshold, min_prob); small frames keep face_lowres.pico unless `everywhere`."""
        if not everywhere and self.lowres(shape):
            return self.low(shape)
        own = self.verifier is None or self.lowres_too
        if at is None and not everywhere and own and not self.scan:
            return self.auto(shape)
        key = at
        if key not in self._forced:
            t, p = at if at is not None else (None, None)
            self._forced[key] = self.picker(self.default, t, p, self.verifier)
        return self._forced[key](shape)

    def settings(self, shape):
        return (self.low if self.lowres(shape) else self.auto).resolved(shape)


def analyse(vdet, gray: np.ndarray) -> dict:
    """Every cluster of the cascade (no threshold) with the verifier's verdict on it."""
    det, ver = vdet.detector, vdet.verifier
    cl = det.group(det.raw(gray)).astype(np.float64)
    prob, boxes = ver(gray, cl) if len(cl) else (np.zeros(0), np.zeros((0, 3)))
    return {"score": cl[:, 3], "prob": prob, "boxes": boxes, "nms": ver.nms_iou}


def select(a: dict, threshold: float, min_prob: float) -> np.ndarray:
    """What `VerifiedDetector.detect` reports at (threshold, min_prob): (k, 4) [row, col,
    size, cascade score], from an `analyse` record."""
    from edge_fer.detect.verifier import nms

    ok = (a["score"] >= threshold) & (a["prob"] >= min_prob)
    rows = np.column_stack([a["boxes"][ok], a["score"][ok], a["prob"][ok]])
    if len(rows) > 1:
        rows = rows[nms(rows, a["nms"])]
    return rows[:, :4] if len(rows) else np.zeros((0, 4))


# ---- data -----------------------------------------------------------------------------------
def load_webfaces_val() -> list:
    """The WebFaces validation split's annotated images (the last 10% in name order)."""
    from edge_fer.cascade_train.annotations import read_webfaces, split_images

    return split_images(read_webfaces(SHARED / "data" / "webfaces")[0], "val")


def load_sets(args) -> dict:
    """{name: {"tune": [(bgr, faces, name)], "report": [...]}} for webfaces and composed."""
    import cv2
    from compose_group import compose, face_sources

    from edge_fer.cascade_train.annotations import list_images, split_paths

    val = load_webfaces_val()
    half = len(val) // 2
    halves = {"tune": val[:half], "report": val[half:]}
    bgs = split_paths(list_images(SHARED / "data" / "backgrounds"), "val")
    bg_halves = {"tune": bgs[: len(bgs) // 2], "report": bgs[len(bgs) // 2 :]}
    step = 4 if args.quick else 1
    n_comp = max(1, args.composed // step)
    n_hd = max(1, args.composed_720p // step)
    sets: dict = {"webfaces": {}, "composed": {}, "composed_720p": {}}
    for part, seed in (("tune", args.seed), ("report", args.seed + 1)):
        ims = []
        for im in halves[part][::step]:
            bgr = cv2.imread(str(im.path), cv2.IMREAD_COLOR)
            if bgr is not None:
                ims.append((bgr, im.faces, im.name))
        sets["webfaces"][part] = ims
        src = face_sources(halves[part])
        photos = compose(src, bg_halves[part], n_comp, seed=seed)
        sets["composed"][part] = [(b, f, f"{part}{i:03d}") for i, (b, f) in enumerate(photos)]
        photos = compose(src, bg_halves[part], n_hd, seed=seed + 100, grid=(3, 4))
        sets["composed_720p"][part] = [(b, f, f"{part}{i:03d}") for i, (b, f) in enumerate(photos)]
    return sets


# ---- evaluation -----------------------------------------------------------------------------
def curve_of(dets, faces, args):
    from edge_fer.cascade_train.evaluate import curve

    return curve(dets, faces, args.min_size, args.iou)


def summary(c) -> dict:
    """Recall at each FPPI point, and with everything kept."""
    rec_all, fp_all = c.at_threshold(-np.inf)
    out = {"faces": c.nfaces, "images": c.nimages, "at_fppi": {}}
    for f in FPPI:
        r, t = c.at_fppi(f)
        out["at_fppi"][str(f)] = {"recall": round(r, 4), "threshold": _r(t)}
    out["all_kept"] = {"recall": round(rec_all, 4), "fppi": round(fp_all, 4)}
    return out


def point(c, t: float) -> dict:
    r, f = c.at_threshold(t)
    return {"recall": round(r, 4), "fppi": round(f, 4)}


def _r(v, nd: int = 4):
    return None if v is None else round(float(v), nd)


def run_detectors(sets, ef, args) -> dict:
    """Per set and half, per image: YuNet's detections (landmark and own boxes) and edge-fer's
    analysis records (auto: the shipped picker; forced: face_default.pico everywhere)."""
    import cv2
    import yuface

    out: dict = {}
    for name, parts in sets.items():
        for part, ims in parts.items():
            recs = []
            for bgr, faces, iname in ims:
                gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
                lm, own = yunet_boxes(yuface.c_detect(bgr))
                rec = {"faces": faces, "yunet": lm, "yunet_own": own, "shape": gray.shape}
                rec["lowres"] = ef.lowres(gray.shape)
                rec["forced"] = analyse(ef.detector(gray.shape, everywhere=True, at=(0, 0)), gray)
                if rec["lowres"]:
                    rec["auto"] = analyse(ef.detector(gray.shape), gray)
                    s = ef.settings(gray.shape)
                    rec["auto_at"] = (s.threshold, s.verifier_min_prob)
                recs.append(rec)
            out[(name, part)] = recs
            print(f"scanned {name}/{part}: {len(recs)} images", flush=True)
    return out


def ef_dets(recs, threshold: float, min_prob: float, everywhere: bool) -> list[np.ndarray]:
    """edge-fer's detections per image with face_default.pico at (threshold, min_prob); small
    photos keep face_lowres.pico at its own settings (score +inf: always in the prefix) unless
    `everywhere`."""
    out = []
    for r in recs:
        if r["lowres"] and not everywhere:
            d = select(r["auto"], *r["auto_at"]).copy()
            d[:, 3] = np.inf
        else:
            d = select(r["forced"], threshold, min_prob)
        out.append(d)
    return out


def tune(results, args, shipped) -> dict:
    """The (threshold, min_prob) of face_default.pico with the best mean recall over the two
    tuning halves at <= args.tune_fppi_webfaces and args.tune_fppi_composed false positives
    per image."""
    # cluster scores are positive: 0 keeps every cluster (the verifier alone decides)
    cands = np.round(np.arange(0.0, 30.0001, 0.25), 2)
    limits = (args.tune_fppi_webfaces, args.tune_fppi_composed)
    best = None
    table = []
    for p in PROBS:
        curves = [
            curve_of(
                ef_dets(results[(n, "tune")], NO_THRESHOLD, p, False), _faces(results, n), args
            )
            for n in ("webfaces", "composed")
        ]
        for t in cands:
            pts = [c.at_threshold(t) for c in curves]
            if all(f <= lim for (_, f), lim in zip(pts, limits)):
                score = float(np.mean([r for r, _ in pts]))
                if best is None or score > best[0] + 1e-9:
                    best = (score, float(t), p, pts)
        rowbest = max(
            (
                (float(np.mean([c.at_threshold(t)[0] for c in curves])), float(t))
                for t in cands
                if all(c.at_threshold(t)[1] <= lim for c, lim in zip(curves, limits))
            ),
            default=(0.0, None),
        )
        table.append({"min_prob": p, "mean_recall": round(rowbest[0], 4), "threshold": rowbest[1]})
    if best is None:
        return {"table": table, "chosen": None}
    return {
        "table": table,
        "chosen": {"threshold": best[1], "min_prob": best[2]},
        "tune_points": {
            n: {"recall": round(r, 4), "fppi": round(f, 4)}
            for n, (r, f) in zip(("webfaces", "composed"), best[3])
        },
        "rule": "best mean recall over both tuning halves at <= "
        f"{limits[0]} (webfaces), {limits[1]} (composed) FP/image",
        "shipped_on_tune": {
            n: point(
                curve_of(
                    ef_dets(results[(n, "tune")], NO_THRESHOLD, shipped[1], False),
                    _faces(results, n),
                    args,
                ),
                shipped[0],
            )
            for n in ("webfaces", "composed")
        },
    }


def _faces(results, name, part="tune"):
    return [r["faces"] for r in results[(name, part)]]


def quality(results, args, ops: dict) -> dict:
    """Per set, on the report half and on both halves: YuNet's and edge-fer's curves (the
    threshold swept at each operating point's min_prob) and the operating points themselves."""
    out: dict = {}
    for name in ("webfaces", "composed", "composed_720p"):
        for scope in ("report", "all"):
            recs = results[(name, "report")]
            if scope == "all":
                recs = results[(name, "tune")] + recs
            faces = [r["faces"] for r in recs]
            yc = curve_of([r["yunet"] for r in recs], faces, args)
            row: dict = {
                "yunet": summary(yc),
                "yunet_own_box": summary(curve_of([r["yunet_own"] for r in recs], faces, args)),
            }
            yt = yc.at_fppi(0.1)[1]
            if yt is not None:  # recall per face size at YuNet's 0.1 FP/image threshold
                row["yunet"]["by_size_at_0.1"] = by_size(
                    [r["yunet"][r["yunet"][:, 3] >= yt] for r in recs], faces, args
                )
            for label, (t, p) in ops.items():
                for everywhere in (False, True):
                    if everywhere and name != "webfaces":
                        continue  # 640x480 and up: face_default.pico either way
                    key = label + (" (face_default everywhere)" if everywhere else "")
                    c = curve_of(ef_dets(recs, NO_THRESHOLD, p, everywhere), faces, args)
                    row[key] = {"threshold": t, "min_prob": p, "point": point(c, t)}
                    row[key]["sweep"] = summary(c)
                    row[key]["by_size"] = by_size(
                        [d[d[:, 3] >= t] for d in ef_dets(recs, NO_THRESHOLD, p, everywhere)],
                        faces,
                        args,
                    )
            out[f"{name}/{scope}"] = row
    return out


SIZE_BINS = (24, 32, 48, 64, 96, 1e9)


def found_faces(dets: np.ndarray, faces, min_face: float, iou: float) -> list[bool]:
    """Which faces a thresholded detection set finds: the matching of `match_image` (greedy by
    score, each detection to the face it overlaps most), read per face."""
    from edge_fer.cascade_train.evaluate import match_image
    from edge_fer.detect.verifier import square_iou

    d = dets[np.argsort(-dets[:, 3], kind="stable")]
    lab = match_image(d, faces, min_face, iou)
    hit = [False] * len(faces)
    if not faces:
        return hit
    fr = np.array([[f.row, f.col, f.size] for f in faces])
    for i in np.flatnonzero(lab == 1):
        hit[int(np.argmax(square_iou(d[i : i + 1, :3], fr)[0]))] = True
    return hit


def by_size(dets_per_image, faces_per_image, args) -> dict:
    """Recall per face size bin (px) of thresholded detections."""
    n = np.zeros(len(SIZE_BINS) - 1, int)
    k = np.zeros_like(n)
    for dets, faces in zip(dets_per_image, faces_per_image):
        for f, hit in zip(faces, found_faces(dets, faces, args.min_size, args.iou)):
            b = int(np.searchsorted(SIZE_BINS, f.size, side="right")) - 1
            if 0 <= b < len(n):
                n[b] += 1
                k[b] += hit
    names = [f"{SIZE_BINS[i]:g}-{SIZE_BINS[i + 1]:g}" for i in range(len(n))]
    names[-1] = f"{SIZE_BINS[-2]:g}+"
    return {
        m: {"faces": int(a), "recall": round(b / a, 3) if a else None}
        for m, a, b in zip(names, n, k)
    }


GRID_T = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
LOWRES_T = (0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0)


def lowres_grid(results, args, at) -> dict:
    """WebFaces (the only set with photos under 240 px) with face_default.pico at `at` and
    face_lowres.pico at each (threshold, min_prob): per half; and its threshold with the best
    recall on the tuning half at <= args.tune_fppi_webfaces false positives per image (ties:
    the fewest), at its own min_prob (one setting for photos and video: the clips chose it)."""
    lows = [r for part in ("tune", "report") for r in results[("webfaces", part)] if r["lowres"]]
    own_p = lows[0]["auto_at"][1] if lows else None
    out: dict = {"face_default_at": {"threshold": at[0], "min_prob": at[1]}, "min_prob": own_p}
    for part in ("tune", "report"):
        recs = results[("webfaces", part)]
        faces = [r["faces"] for r in recs]
        rows = {}
        for p in PROBS:
            for t in LOWRES_T:
                dets = []
                for r in recs:
                    d = select(
                        r["auto"] if r["lowres"] else r["forced"], *((t, p) if r["lowres"] else at)
                    )
                    dets.append(d)
                rows[f"{t:g},{p:g}"] = point(curve_of(dets, faces, args), NO_THRESHOLD)
        out[part] = rows
    ok = [
        (v["recall"], -v["fppi"], k)
        for k, v in out["tune"].items()
        if v["fppi"] <= args.tune_fppi_webfaces and float(k.split(",")[1]) == own_p
    ]
    if ok:
        best = max(ok)[1:]
        out["chosen"] = {
            "at": best[1],
            "tune": out["tune"][best[1]],
            "report": out["report"][best[1]],
        }
    return out


def grid(results, args) -> dict:
    """Recall and FP/image of face_default.pico (small photos: face_lowres.pico as shipped) at
    each (threshold, min_prob), per set and half: the whole surface the tuning saw, and the
    report halves' too."""
    out: dict = {}
    for (name, part), recs in results.items():
        faces = [r["faces"] for r in recs]
        rows = {}
        for p in PROBS:
            c = curve_of(ef_dets(recs, NO_THRESHOLD, p, False), faces, args)
            rows[str(p)] = {str(t): point(c, t) for t in GRID_T}
        out[f"{name}/{part}"] = rows
    return out


# ---- speed ----------------------------------------------------------------------------------
def timing(sets, ef, ops, args, results) -> dict:
    """ms per megapixel of YuNet and of edge-fer at each operating point (whole path, and the
    cascade scan alone), called alternately per image (the kernels compiled while scanning
    for the curves); checks `select` against the path."""
    import yuface

    out: dict = {}
    mismatches = 0
    for name, parts in sets.items():
        ims = [x for part in ("tune", "report") for x in parts[part]]
        recs = results[(name, "tune")] + results[(name, "report")]
        tot = {"yunet": 0.0}
        for label in ops:
            tot[label] = tot[label + " scan"] = 0.0
        mp = 0.0
        for i, ((bgr, _, _), rec) in enumerate(zip(ims, recs)):
            mp += bgr.shape[0] * bgr.shape[1] / 1e6
            calls = [("yunet", lambda b=bgr: yuface.c_detect(b))]
            for label, at in ops.items():
                det = ef.detector(bgr.shape[:2], at=None if label == "shipped" else at)
                calls.append((label, lambda b=bgr, d=det: d.detect(_gray(b))))
                calls.append((label + " scan", lambda b=bgr, d=det: d.detector.detect(_gray(b))))
            if i % 2:
                calls.reverse()
            for label, fn in calls:
                best = np.inf
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    res = fn()
                    best = min(best, time.perf_counter() - t0)
                tot[label] += best
                if label in ops:  # the path's answer must be what the curves assume
                    got = np.array([d[:4] for d in res], np.float64).reshape(-1, 4)
                    want = ef_dets([rec], *ops[label], False)[0]
                    if rec["lowres"]:
                        want[:, 3] = [d[3] for d in select(rec["auto"], *rec["auto_at"])]
                    if got.shape != want.shape or not np.allclose(
                        got[np.lexsort(got.T[::-1])], want[np.lexsort(want.T[::-1])], atol=1e-3
                    ):
                        mismatches += 1
        out[name] = {
            "images": len(ims),
            "megapixels": round(mp, 3),
            "ms_per_mp": {k: round(1000 * v / mp, 2) for k, v in tot.items()},
            "ratio_to_yunet": {
                k: round(v / tot["yunet"], 3) for k, v in tot.items() if k != "yunet"
            },
        }
        print(f"timed {name}: {out[name]['ms_per_mp']}", flush=True)
    out["path_check_mismatches"] = mismatches
    return out


def _gray(bgr):
    import cv2

    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


# ---- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="every 4th image, a quarter of photos")
    ap.add_argument("--composed", type=int, default=80, help="composed photos per half")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-size", type=float, default=24.0, help="smallest face, px")
    ap.add_argument("--iou", type=float, default=0.4, help="match overlap (eval-detector's)")
    ap.add_argument("--threads", type=int, default=1, help="threads for each detector")
    ap.add_argument("--repeat", type=int, default=1, help="timed calls per image (best kept)")
    ap.add_argument(
        "--tune-fppi-webfaces",
        type=float,
        default=0.1,
        help="FP/image allowed on the WebFaces tuning half (the target; most of its false "
        "positives are real faces left unannotated)",
    )
    ap.add_argument(
        "--tune-fppi-composed",
        type=float,
        default=0.02,
        help="FP/image allowed on the composed tuning half (a fifth of the target: its 15 "
        "backgrounds lack textures that fire on others)",
    )
    ap.add_argument("--composed-720p", type=int, default=20, help="1280x720 photos per half")
    ap.add_argument(
        "--at",
        action="append",
        default=[],
        metavar="T,P",
        help="also a candidate cascade threshold,verifier min_prob for face_default.pico",
    )
    ap.add_argument(
        "--verifier",
        default=None,
        metavar="ONNX",
        help="a candidate verifier behind face_default.pico (default: the one its .json names; "
        "face_lowres.pico keeps its own)",
    )
    ap.add_argument(
        "--verifier-lowres",
        action="store_true",
        help="--verifier behind face_lowres.pico too (as if shipped in face_verify.onnx's place)",
    )
    ap.add_argument(
        "--lowres-at",
        default=None,
        metavar="T,P",
        help="face_lowres.pico (photos under 240 px) at this threshold,verifier min_prob "
        "instead of its .json's",
    )
    ap.add_argument(
        "--scale-factor",
        type=float,
        default=None,
        help="face_default.pico's scale step (default: its own, 1.1): a denser scan",
    )
    ap.add_argument(
        "--stride-factor",
        type=float,
        default=None,
        help="face_default.pico's stride in window sides (default 0.1): a denser scan",
    )
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    from common import fail, save_json

    for sub in ("webfaces", "backgrounds"):
        if not (SHARED / "data" / sub).is_dir():
            return fail(f"bench_yunet: {SHARED}/data/{sub} not found")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before libgomp starts (yuface import)
    try:
        import yuface  # noqa: F401
    except ImportError:
        return fail("bench_yunet: needs the yuface wheel: pip install -e '.[bench]'")
    import onnxruntime

    lowres_at = tuple(float(v) for v in args.lowres_at.split(",")) if args.lowres_at else None
    scan = {"scale_factor": args.scale_factor, "stride_factor": args.stride_factor}
    ef = EdgeFer(args.min_size, args.threads, args.verifier, args.verifier_lowres, lowres_at, scan)
    s = ef.settings((480, 640))
    shipped = (s.threshold, s.verifier_min_prob)
    t0 = time.perf_counter()
    sets = load_sets(args)
    results = run_detectors(sets, ef, args)
    tuned = tune(results, args, shipped)
    ops = {"shipped": shipped}
    if tuned["chosen"]:
        ops["tuned"] = (tuned["chosen"]["threshold"], tuned["chosen"]["min_prob"])
    for a in args.at:
        t, p = (float(v) for v in a.split(","))
        ops[f"at {t:g},{p:g}"] = (t, p)
    qual = quality(results, args, ops)
    low = lowres_grid(results, args, ops.get("tuned", shipped))
    print(f"face_lowres.pico on WebFaces, best on the tuning half: {low.get('chosen')}")
    speed = None if args.no_timing else timing(sets, ef, ops, args, results)
    elapsed = time.perf_counter() - t0

    print(f"\nrecall at <= 0.1 FP/image (IoU >= {args.iou}, faces >= {args.min_size:g} px)")
    print("| set | faces | YuNet | " + " | ".join(f"edge-fer {k} {v}" for k, v in ops.items()))
    for key, row in qual.items():
        y = row["yunet"]
        cells = [f"{y['at_fppi']['0.1']['recall']:.3f}"]
        for label in ops:
            r = row[label]
            cells.append(
                f"{r['point']['recall']:.3f} at {r['point']['fppi']:.3f} FP "
                f"(sweep {r['sweep']['at_fppi']['0.1']['recall']:.3f})"
            )
        print(f"| {key} | {y['faces']} | " + " | ".join(cells) + " |")
    if speed:
        print("\nms per megapixel (" + f"{args.threads} thread(s) each)")
        for name in ("webfaces", "composed", "composed_720p"):
            print(f"| {name} | {speed[name]['ms_per_mp']} | ratio {speed[name]['ratio_to_yunet']}")
        print(f"path check mismatches: {speed['path_check_mismatches']}")
    print(f"tuned: {tuned.get('chosen')} on tune halves {tuned.get('tune_points')}")
    if args.no_save:
        return 0
    out = args.out or RESULTS / ("yunet_quick.json" if args.quick else "yunet.json")
    save_json(
        out,
        {
            "command": "python benchmarks/bench_yunet.py " + " ".join(argv or sys.argv[1:]),
            "yuface": _version("yuface"),
            "onnxruntime": onnxruntime.__version__,
            "threads": args.threads,
            "repeat": args.repeat,
            "load_average": _r(os.getloadavg()[0], 2),
            "min_size": args.min_size,
            "iou": args.iou,
            "seed": args.seed,
            "quick": args.quick,
            "shipped": {"threshold": shipped[0], "min_prob": shipped[1]},
            "verifier": _verifier_name(args.verifier, ef),
            "verifier_lowres_too": ef.lowres_too,
            "lowres_at": lowres_at,
            "face_default_scan": ef.scan,
            "operating_points": {k: {"threshold": t, "min_prob": p} for k, (t, p) in ops.items()},
            "sets": {
                name: {part: len(ims) for part, ims in parts.items()}
                for name, parts in sets.items()
            },
            "tuning": tuned,
            "quality": qual,
            "grid": grid(results, args),
            "lowres_grid": low,
            "speed": speed,
            "seconds": round(elapsed, 1),
        },
    )
    return 0


def _verifier_name(path: str | None, ef) -> str | None:
    """The verifier behind face_default.pico, as a file name (no local paths in results)."""
    if path:
        return Path(path).name
    v = ef.settings((480, 640)).verifier
    return None if v is None else Path(v).name


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
