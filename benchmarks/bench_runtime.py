"""Benchmark `edge-fer run` on 640x480 and 1280x720 clips with 1-3 real faces.

The clips are composited here from ../shared (never copied into the project): faces cut from
Caltech Web Faces (boxes from the annotated eye and mouth positions; only faces with at least
FACE_MIN_EYES px between the eyes) pasted with feathered edges onto the face-free background
scenes, each drifting slowly, each face 15-25% of the frame height (the issue's minimum is 10%).

For every clip and every available backend it reports frames/s, per-frame latency and the
stage times (p50/p99), and, from the known face positions: the share of face-frames on which
the face was found, and the number of track ids each face got (1 = no id switch).

    python benchmarks/bench_runtime.py [--model M] [--cascade C] [--frames 300]

Results: benchmarks/results/bench_runtime.json (and a table on stdout).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from common import drifting_clip, feathered_disc, read_events, save_json, webfaces_patches

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEBFACES = SHARED / "data" / "webfaces"
BACKGROUNDS = SHARED / "data" / "backgrounds"
FACEFINDER = SHARED / "reference" / "pico" / "facefinder"
FACE_MIN_EYES = 28  # px between the eyes in the source photo: sharp enough to scale up
SIZES = ((640, 480), (1280, 720))


def load_faces(n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, float]]:
    """n (patch, face_side_in_patch) pairs: a square patch 2x the face box around each face."""
    faces = list(itertools.islice(webfaces_patches(WEBFACES, FACE_MIN_EYES, rng), n))
    if len(faces) < n:
        raise SystemExit(f"only {len(faces)} usable faces in {WEBFACES}")
    return faces


def make_clip(path: Path, size, n_faces: int, frames: int, fps: float, seed: int) -> list:
    """Write the clip; returns per frame the list of true face boxes (x, y, w, h) per face."""
    w, h = size
    rng = np.random.default_rng(seed)
    bgs = sorted(BACKGROUNDS.glob("*.jpg"))
    bg = cv2.imread(str(bgs[int(rng.integers(len(bgs)))]), cv2.IMREAD_COLOR)
    bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)
    faces = load_faces(n_faces, rng)
    plan = []
    slot = w / n_faces
    for k, (patch, side) in enumerate(faces):
        face_px = h * rng.uniform(0.15, 0.25)
        scale = face_px / side
        psz = round(patch.shape[0] * scale)
        p = cv2.resize(
            patch, (psz, psz), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        )
        alpha = feathered_disc(psz)[..., None]
        amp_x = max(0.0, slot / 2 - psz / 2) * 0.6
        plan.append(
            {
                "p": p.astype(np.float32),
                "a": alpha,
                "psz": psz,
                "face": face_px,
                "cx": slot * (k + 0.5),
                "amp_x": amp_x,
                "amp_y": 0.08 * h,
                "ph": rng.uniform(0, 2 * np.pi),
            }
        )

    def centre(q: dict, t: float) -> tuple[float, float]:
        cx = q["cx"] + q["amp_x"] * np.sin(2 * np.pi * t / 8 + q["ph"])
        cy = h / 2 + q["amp_y"] * np.sin(2 * np.pi * t / 5 + q["ph"])
        return cx, cy

    return drifting_clip(path, fps, bg, plan, frames, centre)


def score_events(events_path: Path, truth: list) -> dict:
    """Found rate (face-frames with an event box of IoU >= 0.3) and ids per true face."""
    from edge_fer.runtime.tracker import iou_matrix

    by_frame = {e["frame"]: e["faces"] for e in read_events(events_path)}
    n_faces = len(truth[0])
    found = 0
    ids = [set() for _ in range(n_faces)]
    false_pos = 0
    for i, boxes in enumerate(truth):
        faces = by_frame.get(i, [])
        if not faces:
            continue
        m = iou_matrix(np.array(boxes), np.array([f["box"] for f in faces]))
        matched = set()
        for k in range(n_faces):
            j = int(np.argmax(m[k]))
            if m[k, j] >= 0.3:
                found += 1
                ids[k].add(faces[j]["track"])
                matched.add(j)
        false_pos += len(faces) - len(matched)
    return {
        "face_frames": n_faces * len(truth),
        "found": found,
        "found_rate": round(found / (n_faces * len(truth)), 4),
        "ids_per_face": [len(s) for s in ids],
        "id_switches": sum(max(len(s) - 1, 0) for s in ids),
        "false_positive_boxes": false_pos,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="classifier .onnx (default: the bundled model)")
    ap.add_argument("--cascade", help="face cascade (default: bundled, else ../shared facefinder)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--faces", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--backend", action="append")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_runtime.json"))
    args = ap.parse_args()
    if not WEBFACES.is_dir() or not BACKGROUNDS.is_dir():
        print(f"skipped: needs {WEBFACES} and {BACKGROUNDS} (../shared)", file=sys.stderr)
        return 0
    from edge_fer.detect import default_cascade_path
    from edge_fer.runtime.bench import bench, format_table
    from edge_fer.runtime.runner import RunOptions

    cascade = (
        args.cascade or default_cascade_path() or (FACEFINDER if FACEFINDER.exists() else None)
    )
    if cascade is None:
        print("no cascade: pass --cascade", file=sys.stderr)
        return 2
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cascade": str(cascade),
        "load_average": os.getloadavg(),
        "clips": [],
    }
    with tempfile.TemporaryDirectory(prefix="edge-fer-bench-") as tmp:
        for size in SIZES:
            for n in args.faces:
                clip = Path(tmp) / f"{size[0]}x{size[1]}_{n}faces.mp4"
                truth = make_clip(clip, size, n, args.frames, args.fps, seed=n)
                opts = RunOptions(str(clip), model=args.model, cascade=str(cascade), queue_size=1)
                r = bench(opts, backends=args.backend, events=True, keep_events=tmp)
                for res in r["results"]:
                    if res.get("available"):
                        res["accuracy"] = score_events(Path(res.pop("events")), truth)
                r["source"] = f"{size[0]}x{size[1]}, {n} face(s), {args.frames} frames"
                print(format_table(r))
                for res in r["results"]:
                    if res.get("available"):
                        print(f"  {res['backend']}: {res['accuracy']}")
                report["clips"].append(r)
    save_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
