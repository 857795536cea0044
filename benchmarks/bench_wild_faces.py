"""Faces in the wild (turned, occluded, dark, blurred): edge-fer's photo defaults side by side with
YuNet (the `yuface` wheel: benchmarks only, `pip install -e '.[bench]'`) on SFEW 2.0 train.

A proxy for issue 17's "news photos (turned, occluded faces)" target, for which no annotated set
is here: SFEW's 859 colour 143x181 crops come from movies and each holds one face, often turned,
occluded, dark or blurred. It is not a news-photo set: one large face per crop, no small faces,
no crowds.

    python benchmarks/bench_wild_faces.py [--limit N] [--repeat R] [--out JSON] [--no-save]

Each crop is set in a 100 px border of repeated edge pixels (`bench_align.PAD`, as its
`sfew_faces` does: the face fills the crop, and the detector's window for it is larger than the
crop). Detectors:
- edge-fer as the runtime runs on photos, built as `bench_align.sfew_faces` builds it
  (`DetectorPicker(None, DetectorOptions(), stills=True)`): the padded crops are 343x381, so
  `face_default.pico` at its shipped settings (threshold 0, verifier_min_prob 0.8: the point
  `bench_yunet.py` tuned for <= 0.1 false positives per image) behind the verifier.
- YuNet as `bench_yunet.py` runs it (`yuface.c_detect` on the BGR frame, its box from the five
  landmarks by the annotations' rule), at two score thresholds: 0.5 (`yuface.detect`'s default)
  and 0.64 (its threshold for 0.1 false positives per image on the WebFaces report half in
  results/yunet.json).

A face is found when a detection's box centre lies in the middle 60% of the crop's width and
height and its side is 0.3-2.5x the crop's width (both detectors' boxes follow the annotations'
rule and are larger than these tight crops: the centred ones have a median side of about 1.5x;
results for 0.3-1.6x, which drops many of them, are kept too). Every other detection (a second box on the
face included) is a false positive: with one face per crop, the false positives per image here
only say the detectors do not fire on these frames; the calibrated false positive rates are
WebFaces' and the backgrounds' in results/yunet.json.

The control (`control` in the results): how much of the proxy is its setting. The SFEW crops are
tight (cut inside the detectors' boxes at the sides), so the WebFaces validation faces of 48 px
and up (frontal, never learned from) are cut out the same way (width = the annotated box / 1.45,
height 181/143 of that, resized to 143x181, the same border and found rule) and run through both
detectors. And per stage, on both sets: edge-fer at the verifier's min_prob 0 (every cluster
kept; the boxes still moved by the verifier), 0.5 and 0.8 (the default).

Speed: one thread each (OMP_NUM_THREADS for YuNet, numba's for the scan; the verifier runs on
one), called alternately crop by crop on the same padded BGR frame (edge-fer's time includes its
grayscale conversion), the best of `--repeat` calls, in milliseconds per megapixel of padded
frame. The frames are small (0.13 Mpx), so fixed per-call costs weigh more than on camera frames.

Results: benchmarks/results/wild_faces.json (or --out) and a table on stdout.
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
RESULTS = ROOT / "benchmarks" / "results" / "wild_faces.json"
CENTRE = 0.6  # the box centre must lie in the middle 60% of the crop's width and height
# the box side, in crop widths: both detectors' boxes (the annotations' rule, forehead to chin)
# are larger than these tight crops: centred boxes have a median side of 1.45x (edge-fer) and
# 1.5x (YuNet) the crop width, and 6% / 5% of them are over 1.64x / 1.85x. 2.5x is about the
# padded frame's width. The 1.6x rule is reported too ("side_0.3-1.6"): it drops real finds.
SIDES = {"side_0.3-2.5": (0.3, 2.5), "side_0.3-1.6": (0.3, 1.6)}
YUNET_AT = {"yunet 0.5 (default)": 0.5, "yunet 0.64 (0.1 FP on WebFaces)": 0.64}


def sfew_files(limit: int) -> list:
    """(path, class) of the SFEW train crops, every len/limit-th when `limit` (as
    `bench_align.sfew_faces` picks them)."""
    files = sorted((p, p.parent.name) for p in (SHARED / "data/sfew_train").glob("*/*.png"))
    if limit:
        files = files[:: max(1, len(files) // limit)][:limit]
    return files


def split(boxes: np.ndarray, crop_hw: tuple, pad: int, side: tuple) -> tuple[bool, int]:
    """(found, false positives) of (n, 3+) [row, col, side, ...] boxes on one padded crop, with
    the face's box side within `side` (crop widths)."""
    h, w = crop_hw
    lo, hi = (1 - CENTRE) / 2, (1 + CENTRE) / 2
    ok = (
        (boxes[:, 0] >= pad + lo * h)
        & (boxes[:, 0] <= pad + hi * h)
        & (boxes[:, 1] >= pad + lo * w)
        & (boxes[:, 1] <= pad + hi * w)
        & (boxes[:, 2] >= side[0] * w)
        & (boxes[:, 2] <= side[1] * w)
    )
    found = bool(ok.any())
    return found, len(boxes) - int(found)  # one box is the face, every other one is not


def run(files, args) -> dict:
    """Per crop: found / false positives of each detector, and the summed best call times."""
    import cv2
    import yuface
    from bench_align import PAD
    from bench_yunet import yunet_boxes

    from edge_fer.detect.config import DetectorOptions
    from edge_fer.detect.factory import DetectorPicker

    picker = DetectorPicker(None, DetectorOptions(), args.threads, stills=True)
    per: dict = {r: {k: {"found": [], "fp": []} for k in ["edge-fer", *YUNET_AT]} for r in SIDES}
    tot = {"edge-fer": 0.0, "yunet": 0.0}
    mp, names, cascades = 0.0, [], set()
    for i, (p, cls) in enumerate(files):
        crop = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if crop is None:
            continue
        bgr = cv2.copyMakeBorder(crop, *(PAD,) * 4, cv2.BORDER_REPLICATE)
        det = picker(bgr.shape[:2])
        s = picker.resolved(bgr.shape[:2])
        cascades.add((Path(str(s.cascade)).name, s.threshold, s.verifier_min_prob))

        def ours(b=bgr, d=det):
            d.reset()  # unrelated photos: no memory between them
            return d.detect(cv2.cvtColor(b, cv2.COLOR_BGR2GRAY))

        calls = [("edge-fer", ours), ("yunet", lambda b=bgr: yuface.c_detect(b))]
        if i % 2:
            calls.reverse()
        res = {}
        for label, fn in calls:
            best = np.inf
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                res[label] = fn()
                best = min(best, time.perf_counter() - t0)
            tot[label] += best
        mp += bgr.shape[0] * bgr.shape[1] / 1e6
        mine = np.array([d[:4] for d in res["edge-fer"]], np.float64).reshape(-1, 4)
        yl, _ = yunet_boxes(res["yunet"])
        sets = {"edge-fer": mine, **{k: yl[yl[:, 3] >= t] for k, t in YUNET_AT.items()}}
        for rule, side in SIDES.items():
            for label, boxes in sets.items():
                found, fp = split(boxes, crop.shape[:2], PAD, side)
                per[rule][label]["found"].append(found)
                per[rule][label]["fp"].append(fp)
        names.append(f"{cls}/{p.name}")
    return {"per": per, "time": tot, "mp": mp, "names": names, "cascades": sorted(cascades)}


MIN_PROBS = (0.0, 0.5, 0.8)  # the control's verifier stages (0.8: the photo default)
CUT_WIDTH = 1 / 1.45  # the SFEW crops' width, in detector boxes (both detectors' median)
SFEW_HW = (181, 143)


def frontal_cutouts(limit: int) -> list:
    """WebFaces validation faces of 48 px and up, cut out as the SFEW crops are (BGR 143x181)."""
    import cv2
    from bench_yunet import load_webfaces_val

    out = []
    for im in load_webfaces_val():
        bgr = cv2.imread(str(im.path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        for f in (f for f in im.faces if f.size >= 48):
            w = f.size * CUT_WIDTH
            h = w * SFEW_HW[0] / SFEW_HW[1]
            r0, c0 = round(f.row - h / 2), round(f.col - w / 2)
            if r0 < 0 or c0 < 0 or r0 + int(h) > bgr.shape[0] or c0 + int(w) > bgr.shape[1]:
                continue  # no part of the face may come from outside the photo
            cut = bgr[r0 : r0 + int(h), c0 : c0 + int(w)]
            shrink = cut.shape[1] > SFEW_HW[1]
            out.append(cv2.resize(cut, SFEW_HW[::-1], interpolation=cv2.INTER_AREA if shrink
                                  else cv2.INTER_LINEAR))  # fmt: skip
    return out[:: max(1, len(out) // limit)][:limit] if limit else out


def control(sfew_files_: list, cutouts: list, threads: int, known: dict) -> dict:
    """Recall (the first found rule) of edge-fer at each verifier stage on the SFEW crops and the
    frontal cut-outs, and of YuNet at 0.64 on the cut-outs. `known` maps a min_prob to the SFEW
    recall the main pass already measured at it (that stage is not scanned again)."""
    import cv2
    import yuface
    from bench_align import PAD
    from bench_yunet import yunet_boxes

    from edge_fer.detect.config import DetectorOptions
    from edge_fer.detect.factory import DetectorPicker

    side = next(iter(SIDES.values()))
    sfew = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p, _ in sfew_files_]
    sets = {"sfew": [c for c in sfew if c is not None], "frontal_cutouts": cutouts}
    out: dict = {name: {"crops": len(crops)} for name, crops in sets.items()}
    for mp in MIN_PROBS:
        picker = DetectorPicker(None, DetectorOptions(verifier_min_prob=mp), threads, stills=True)
        for name, crops in sets.items():
            if name == "sfew" and mp in known:
                out[name][f"edge-fer min_prob {mp}"] = known[mp]
                continue
            found = 0
            for crop in crops:
                bgr = cv2.copyMakeBorder(crop, *(PAD,) * 4, cv2.BORDER_REPLICATE)
                det = picker(bgr.shape[:2])
                det.reset()
                boxes = det.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
                b = np.array([d[:4] for d in boxes], np.float64).reshape(-1, 4)
                found += split(b, crop.shape[:2], PAD, side)[0]
            out[name][f"edge-fer min_prob {mp}"] = round(found / max(len(crops), 1), 4)
    t = YUNET_AT["yunet 0.64 (0.1 FP on WebFaces)"]
    found = 0
    for crop in cutouts:
        bgr = cv2.copyMakeBorder(crop, *(PAD,) * 4, cv2.BORDER_REPLICATE)
        yl, _ = yunet_boxes(yuface.c_detect(bgr))
        found += split(yl[yl[:, 3] >= t], crop.shape[:2], PAD, side)[0]
    out["frontal_cutouts"][f"yunet {t}"] = round(found / max(len(cutouts), 1), 4)
    return out


def summarise(per: dict, n: int) -> dict:
    """Recall, false positives and disagreements of each detector under one rule."""
    ours = np.array(per["edge-fer"]["found"], bool)
    out: dict = {}
    for label, v in per.items():
        f = np.array(v["found"], bool)
        fp = np.array(v["fp"], int)
        row = {
            "found": int(f.sum()),
            "recall": round(float(f.mean()), 4) if n else None,
            "false_positives": int(fp.sum()),
            "fp_per_image": round(float(fp.mean()), 4) if n else None,
            "crops_with_fp": int((fp > 0).sum()),
        }
        if label != "edge-fer":
            row["disagree_with_edge_fer"] = {
                "total": int((f != ours).sum()),
                "only_edge_fer": int((ours & ~f).sum()),
                "only_yunet": int((f & ~ours).sum()),
            }
        out[label] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="every len/N-th crop, N of them (0: all)")
    ap.add_argument("--threads", type=int, default=1, help="threads for each detector")
    ap.add_argument("--repeat", type=int, default=1, help="timed calls per crop (best kept)")
    ap.add_argument("--out", default=None, help=f"results JSON (default {RESULTS.name})")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    from common import fail, save_json

    if args.limit < 0 or args.threads < 1 or args.repeat < 1:
        return fail("bench_wild_faces: --limit must be >= 0, --threads and --repeat >= 1")
    if not (SHARED / "data/sfew_train").is_dir():
        return fail(f"bench_wild_faces: {SHARED}/data/sfew_train not found")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before libgomp starts (yuface import)
    try:
        import yuface  # noqa: F401
    except ImportError:
        return fail("bench_wild_faces: needs the yuface wheel: pip install -e '.[bench]'")

    files = sfew_files(args.limit)
    t0 = time.perf_counter()
    r = run(files, args)
    elapsed = time.perf_counter() - t0
    rule = next(iter(SIDES))
    quality = {k: summarise(v, len(r["names"])) for k, v in r["per"].items()}
    rows = quality[rule]
    ms = {k: round(1000 * v / r["mp"], 2) if r["mp"] else None for k, v in r["time"].items()}
    n = len(r["names"])

    print(f"\nSFEW 2.0 train: {n} crops, one face each (proxy for turned/occluded faces), {rule}")
    print("| detector | recall | found | FP/image | crops with FP | disagree with edge-fer |")
    print("|---|---:|---:|---:|---:|---|")
    for label, v in rows.items():
        d = v.get("disagree_with_edge_fer")
        dis = ""
        if d:
            dis = f"{d['total']} ({d['only_edge_fer']} only edge-fer, {d['only_yunet']} only YuNet)"
        print(
            f"| {label} | {v['recall']:.3f} | {v['found']} | {v['fp_per_image']:.3f} | "
            f"{v['crops_with_fp']} | {dis} |"
        )
    for k, q in list(quality.items())[1:]:
        print(f"{k}: " + ", ".join(f"{lab} {v['recall']:.3f}" for lab, v in q.items()))
    # the main pass ran the defaults: one setting on these frames gives its min_prob's SFEW stage
    known = {}
    if len(r["cascades"]) == 1:
        known[float(r["cascades"][0][2])] = rows["edge-fer"]["recall"]
    ctrl = control(files, frontal_cutouts(args.limit), args.threads, known)
    print(f"\ncontrol ({rule}): recall by verifier stage, and frontal faces cut out the same way")
    for name, row in ctrl.items():
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    ratio = round(ms["edge-fer"] / ms["yunet"], 3) if ms["yunet"] else None
    print(
        f"\nms per megapixel ({args.threads} thread(s), best of {args.repeat}): "
        f"edge-fer {ms['edge-fer']}, YuNet {ms['yunet']}, ratio {ratio}"
    )
    print(f"{elapsed:.0f} s; load average {os.getloadavg()[0]:.2f}")
    if args.no_save:
        return 0
    from bench_align import PAD
    from bench_yunet import _version

    save_json(
        args.out or RESULTS,
        {
            "command": "python benchmarks/bench_wild_faces.py " + " ".join(argv or sys.argv[1:]),
            "proxy_for": "issue 17: >= 0.80 recall on news photos (turned, occluded faces) at "
            "<= 0.1 FP/image; SFEW crops are movie frames with one large face each, not "
            "news photos with small faces",
            "data": "sfew_train (SFEW 2.0 train crops)",
            "crops": n,
            "pad": PAD,
            "found_rule": {"centre_in_middle": CENTRE, "side_in_crop_widths": SIDES},
            "edge_fer": {
                "built": "DetectorPicker(None, DetectorOptions(), stills=True)",
                "settings": [
                    {"cascade": c, "threshold": t, "verifier_min_prob": p}
                    for c, t, p in r["cascades"]
                ],
            },
            "yunet_thresholds": YUNET_AT,
            "yuface": _version("yuface"),
            "threads": args.threads,
            "repeat": args.repeat,
            "load_average": round(os.getloadavg()[0], 2),
            "quality": quality,
            "fp_note": "one face per crop: every other detection counts as a false positive; "
            "the calibrated FP/image figures are WebFaces' and the backgrounds' in yunet.json",
            "speed": {"megapixels": round(r["mp"], 3), "ms_per_mp": ms, "ratio_to_yunet": ratio},
            "control": {
                "what": "WebFaces validation faces >= 48 px (frontal) cut out as the SFEW crops "
                "are (width = annotated box / 1.45, 143x181, same border and rule), and edge-fer "
                "by verifier min_prob on both sets",
                **ctrl,
            },
            "seconds": round(elapsed, 1),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
