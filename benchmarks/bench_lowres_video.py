"""Held-out low-resolution video: does a detector setting find faces on 160x120 clips it was not
tuned on? The clips are composited here from ../shared (never copied into the project): one face
from the WebFaces validation split (the last 10% of images in name order, which no bundled
cascade learned from) per clip, pasted with feathered edges on a background from the last 10%
of the background folder, drifting, nodding and rolling (+-`--roll` degrees, sinusoidal), then
downscaled to 160x120 with sensor noise and JPEG compression, the look of a cheap webcam.

Each clip is run through `edge-fer run` (the runtime's defaults, or the options of a named
configuration) and scored as benchmarks/bench_tracking.py scores the real NRC-IIT clips: found
(IoU >= 0.3 with the pasted face's box), the face's track ids, other boxes per frame.

    python benchmarks/bench_lowres_video.py [--clips 8] [--roll 20] [--config NAME ...]

Results: benchmarks/results/lowres_video.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from common import feathered_disc, paste, read_events, save_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "benchmarks" / "results" / "lowres_video.json"
W, H, FPS = 160, 120, 20.0
# named configurations: RunOptions.detector / .tracker fields (None: the runtime's default)
CONFIGS = {
    "defaults": {},
    "--angle=0,1/32,-1/32,2/32,-2/32 --grouping chain --cluster-iou 0.3 --threshold 25 "
    "--min-track-score 130": {
        "angle": (0.0, 1 / 32, 31 / 32, 2 / 32, 30 / 32),
        "grouping": "chain",
        "cluster_iou": 0.3,
        "threshold": 25.0,
        "min_score": 130.0,
    },
    "--grouping chain --cluster-iou 0.3 (the defaults until stop 10)": {
        "grouping": "chain",
        "cluster_iou": 0.3,
    },
    "--verifier none (the defaults until stop 11: the track score gate, 50)": {"verifier": "none"},
    "--verifier none --min-track-score 0 (the cascade alone)": {
        "verifier": "none",
        "min_score": 0.0,
    },
}


def faces_and_backgrounds(n: int, rng: np.random.Generator):
    from edge_fer.cascade_train.annotations import (
        list_images,
        read_webfaces,
        split_images,
        split_paths,
    )

    val = split_images(read_webfaces(SHARED / "data" / "webfaces")[0], "val")
    patches = []
    for i in rng.permutation(len(val)):
        im = val[int(i)]
        if len(im.faces) != 1 or im.faces[0].size < 40:  # sharp enough to scale down
            continue
        img = cv2.imread(str(im.path), cv2.IMREAD_GRAYSCALE)
        f = im.faces[0]
        r0, c0 = int(f.row - f.size), int(f.col - f.size)
        r1, c1 = int(f.row + f.size), int(f.col + f.size)
        if img is None or r0 < 0 or c0 < 0 or r1 > img.shape[0] or c1 > img.shape[1]:
            continue
        patches.append(img[r0:r1, c0:c1].copy())  # the face box, doubled
        if len(patches) == n:
            break
    bgs = split_paths(list_images(SHARED / "data" / "backgrounds"), "val")
    return patches, bgs


def make_clip(
    path: Path, patch, bg_path: Path, roll: float, frames: int, rng: np.random.Generator
) -> np.ndarray:
    """Write a 160x120 clip; returns the true face box (x, y, w, h) per frame."""
    k = 4  # composite at 4x, then downscale: the blur of a small sensor
    bg = cv2.imread(str(bg_path), cv2.IMREAD_GRAYSCALE)
    bg = cv2.resize(bg, (W * k, H * k), interpolation=cv2.INTER_AREA).astype(np.float32)
    face = H * rng.uniform(0.33, 0.45)  # 40-54 px, as on the NRC-IIT clips
    psz = round(2 * face * k)
    p = cv2.resize(patch, (psz, psz), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = feathered_disc(psz)
    ph = rng.uniform(0, 2 * np.pi, 3)
    from edge_fer.runtime.sinks import VideoSink  # mp4v, complete or not there at all

    writer = VideoSink(path, FPS, (W, H))
    truth = []
    for i in range(frames):
        t = i / FPS
        cx = W / 2 + 0.22 * W * np.sin(2 * np.pi * t / 7 + ph[0])
        cy = H / 2 + 0.08 * H * np.sin(2 * np.pi * t / 3 + ph[1])
        ang = roll * np.sin(2 * np.pi * t / 4 + ph[2])
        m = cv2.getRotationMatrix2D((psz / 2, psz / 2), ang, 1.0)
        pr = cv2.warpAffine(
            p, m, (psz, psz), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        f = bg.copy()
        paste(f, pr, alpha, round(cx * k - psz / 2), round(cy * k - psz / 2))
        small = cv2.resize(f, (W, H), interpolation=cv2.INTER_AREA)
        small = np.clip(small + rng.normal(0, 3.0, small.shape), 0, 255).astype(np.uint8)
        _, jpg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 60])
        writer.write(cv2.cvtColor(cv2.imdecode(jpg, cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR))
        truth.append((cx - face / 2, cy - face / 2, face, face))
    writer.close()
    return np.array(truth)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=160)
    ap.add_argument("--roll", type=float, default=20.0, help="largest roll of the head, degrees")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--config",
        action="append",
        choices=sorted(CONFIGS),
        help="configurations to run (default: all)",
    )
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    if not (SHARED / "data" / "webfaces").is_dir():
        print(f"bench_lowres_video: {SHARED}/data/webfaces not found", file=sys.stderr)
        return 2
    from edge_fer.runtime.runner import RunOptions, run_video
    from edge_fer.runtime.track_eval import score_single_face

    rng = np.random.default_rng(args.seed)
    patches, bgs = faces_and_backgrounds(args.clips, rng)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        clips = []
        for c, patch in enumerate(patches):
            path = Path(tmp) / f"clip{c}.mp4"
            truth = make_clip(path, patch, bgs[c % len(bgs)], args.roll, args.frames, rng)
            clips.append((path, truth))
        for name in args.config or list(CONFIGS):
            rows = []
            for path, truth in clips:
                events = path.with_suffix(".jsonl")
                opts = RunOptions(source=str(path), events=str(events))
                for key, v in CONFIGS[name].items():
                    setattr(opts.tracker if key == "min_score" else opts.detector, key, v)
                run_video(opts, handle_signals=False)
                lines = read_events(events)
                rows.append(score_single_face(lines, truth))
            n = sum(r["frames"] for r in rows)
            results[name] = {
                "found_rate": round(sum(r["found"] for r in rows) / n, 4),
                "clips_with_one_id": sum(len(r["face_track_ids"]) == 1 for r in rows),
                "id_switches": sum(r["id_switches"] for r in rows),
                "other_per_frame": round(sum(r["other_boxes"] for r in rows) / n, 3),
                "per_clip_found": [round(r["found_rate"], 3) for r in rows],
            }
            r = results[name]
            print(
                f"{name}: found {r['found_rate']:.3f}, one id on {r['clips_with_one_id']}/"
                f"{len(rows)} clips, {r['id_switches']} id switches, "
                f"{r['other_per_frame']:.2f} other boxes/frame  {r['per_clip_found']}",
                flush=True,
            )
    if not args.no_save:
        save_json(
            RESULTS,
            {
                "clips": len(patches),
                "frames": args.frames,
                "roll_deg": args.roll,
                "seed": args.seed,
                "configs": results,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
