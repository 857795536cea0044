"""Reference face boxes for the two NRC-IIT clips (`../shared/data/videos/*.avi`), one per frame.

The clips carry no annotations, and "found on 90% of the frames" must mean the person's face, not
any box: a false positive on a shirt counted as a find would flatter the detector. The boxes are
made semi-automatically, then checked by eye on contact sheets of every frame:

1. candidates: both cascades (the bundled one and the original facefinder) on every frame
   upscaled 2x, scanned finely (scale 1.03, stride 0.05, windows >= 32 px of the original frame)
   with no threshold; scores normalised per cascade by their 90th percentile;
2. the one-person track through them that maximises score plus overlap between consecutive
   frames (Viterbi, with a "no candidate" state);
3. gaps interpolated, and boxes far (IoU < 0.4) from the running median of 9 frames replaced
   by it;
4. frames where the face is rolled, half out of frame or behind hands, and every candidate was
   wrong, set by hand at the keyframes below (read off 3x enlargements) and interpolated.

The boxes are square (the detector's shape), eyebrows to chin; they are rough to a few pixels, so
`edge_fer.runtime.track_eval` counts a find at IoU >= 0.3. Every frame shows the face.

    python benchmarks/annotate_videos.py            # writes benchmarks/data/nrc_iit_faces.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_fer.detect import Cascade, Detector, default_cascade_path
from edge_fer.runtime.tracker import iou_matrix

SHARED = ROOT.parent / "shared"
CLIPS = ("00-1", "01-2")
OUT = ROOT / "benchmarks" / "data" / "nrc_iit_faces.json"
# step 4: frame -> x, y, w, h set by hand (None: keep the automatic box as an anchor)
HAND = {
    "00-1": [
        {178: None, 182: [0, 40, 64, 64], 186: [0, 45, 60, 60], 190: [5, 42, 62, 62], 196: None}
    ],
    "01-2": [
        {153: None, 162: None},
        {
            206: None,
            208: [110, 36, 46, 46],
            212: [108, 40, 50, 50],
            216: [106, 42, 46, 46],
            220: None,
        },
        {230: None, 232: [40, 32, 46, 46], 238: [40, 36, 50, 50], 240: [38, 38, 50, 50], 242: None},
    ],
}


def gray_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while (f := cap.read()[1]) is not None:  # None once the video ends
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    cap.release()
    return frames


def candidates(frames: list[np.ndarray]) -> list[list[tuple]]:
    out: list[list[tuple]] = [[] for _ in frames]
    for cpath in (default_cascade_path(), SHARED / "reference/pico/facefinder"):
        det = Detector(
            Cascade.load(cpath),
            min_size=64,
            scale_factor=1.03,
            stride_factor=0.05,
            threshold=0.0,
            memory=1,
        )
        per = [det.detect(cv2.resize(g, None, fx=2, fy=2)) for g in frames]
        norm = np.percentile([d.score for p in per for d in p], 90)
        for i, p in enumerate(per):
            out[i] += [(d.x / 2, d.y / 2, d.w / 2, d.h / 2, d.score / norm) for d in p]
    return out


def best_path(cands: list[list[tuple]], none_cost: float = 0.8, w_iou: float = 5.0) -> list:
    states = [np.array([c[:4] for c in f] + [[np.nan] * 4]).reshape(-1, 4) for f in cands]
    unary = [np.array([min(c[4], 2.0) for c in f] + [-none_cost]) for f in cands]
    score, back = unary[0], []
    for t in range(1, len(cands)):
        a, b = states[t - 1], states[t]
        va, vb = ~np.isnan(a[:, 0]), ~np.isnan(b[:, 0])
        iou = np.zeros((len(a), len(b)))
        if va.any() and vb.any():
            iou[np.ix_(va, vb)] = iou_matrix(a[va], b[vb])
        trans = w_iou * (iou - 0.5)
        trans[~va, :] = 0
        trans[:, ~vb] = 0
        tot = score[:, None] + trans
        back.append(tot.argmax(0))
        score = tot.max(0) + unary[t]
    k = [int(score.argmax())]
    for t in range(len(cands) - 2, -1, -1):
        k.append(int(back[t][k[-1]]))
    k.reverse()
    return [None if np.isnan(states[t][j][0]) else states[t][j] for t, j in enumerate(k)]


def clean(path: list, win: int = 9, min_iou: float = 0.4) -> np.ndarray:
    n = len(path)
    arr = np.array([p if p is not None else [np.nan] * 4 for p in path], float)
    for k in range(4):
        ok = ~np.isnan(arr[:, k])
        arr[:, k] = np.interp(np.arange(n), np.flatnonzero(ok), arr[ok, k])
    med = np.array([np.median(arr[max(0, i - win // 2) : i + win // 2 + 1], 0) for i in range(n)])
    for i in range(n):
        if iou_matrix(arr[i : i + 1], med[i : i + 1])[0, 0] < min_iou:
            arr[i] = med[i]
    return arr


def apply_hand(arr: np.ndarray, keys: dict) -> None:
    ks = sorted(keys)
    for a, b in itertools.pairwise(ks):
        ba = np.array(keys[a] if keys[a] is not None else arr[a], float)
        bb = np.array(keys[b] if keys[b] is not None else arr[b], float)
        for i in range(a, b + 1):
            t = (i - a) / (b - a)
            arr[i] = (1 - t) * ba + t * bb


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=OUT,
        help="where the boxes go [default: benchmarks/data/nrc_iit_faces.json, the committed file]",
    )
    out_path = ap.parse_args(argv).out
    if not SHARED.is_dir():
        sys.exit(f"annotate_videos: {SHARED} not found (the shared data folder beside the repo)")
    out = {
        "about": __doc__.split("\n\n")[0].strip() + " Made by benchmarks/annotate_videos.py.",
        "box": "x, y, w, h in pixels of the 160x120 frame",
        "clips": {},
    }
    for name in CLIPS:
        frames = gray_frames(SHARED / f"data/videos/{name}.avi")
        arr = clean(best_path(candidates(frames)))
        for keys in HAND[name]:
            apply_hand(arr, keys)
        out["clips"][f"{name}.avi"] = [[round(float(v), 1) for v in b] for b in arr]
        print(f"{name}.avi: {len(arr)} frames")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=None).replace("], [", "],\n ["))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
