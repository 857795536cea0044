"""Turned heads: is a face that turns away or looks down still reported, with its id?

Runs `edge-fer run` (bundled models and cascades, default options) with the tracker's following
off (`--follow 0`: the behaviour before it existed), on (the defaults) and at two other match
thresholds, on:

- the two real NRC-IIT clips (160x120, people moving their heads), scored against
  `benchmarks/data/nrc_iit_faces.json` (every frame shows the face);
- turning-head clips made here, in a temporary folder (nothing is kept): 320x240 at 20 fps,
  one person at a time on a face-free background, each moving sideways, turning the head 45
  degrees to each side and looking down 45 degrees (`track_eval.turn_head`: the face photo
  painted on a head-sized cylinder and rotated), then vanishing or walking out of the frame,
  followed by 2 s of background only. The faces are WebFaces faces the detector finds in a
  still when frontal (the question is what happens when they turn); reference boxes come from
  the same warp.

Data: `../shared/data/{videos,webfaces,backgrounds}` (EDGE_FER_SHARED names another copy).

Per configuration: the share of face frames with the face reported (a box of IoU >= 0.3), how
many of them held, the same for frontal / yaw / pitch frames; id switches (within one
person); extra face ids (NRC-IIT) or ids carried over to the next person (made clips); other
boxes per face frame; boxes reported on background-only frames. Then the tracker alone on the
NRC-IIT frames with gaps cut into its detections (`gap_test`), and its cost per frame on a
1280x720 frame with 3 faces, detected and held.

    python benchmarks/bench_turning.py [--clips N] [--people N] [--seed S] [--no-save]

Results: benchmarks/results/turning.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from common import ROOT, fail, feathered_disc, paste, read_events, save_json, webfaces_patches

SHARED = Path(os.environ.get("EDGE_FER_SHARED") or ROOT.parent / "shared")
VIDEOS = SHARED / "data" / "videos"
WEBFACES = SHARED / "data" / "webfaces"
BACKGROUNDS = SHARED / "data" / "backgrounds"
REFERENCE = ROOT / "benchmarks" / "data" / "nrc_iit_faces.json"
RESULTS = ROOT / "benchmarks" / "results" / "turning.json"
SIZE = (320, 240)
FPS = 20.0
FACE_MIN_EYES = 28  # px between the eyes in the source photo
YAW, PITCH = 45.0, 45.0

CONFIGS = {  # label: (edge-fer run flags, the follow match they mean; None: off)
    "follow off (before)": (["--follow", "0"], None),
    "follow on (defaults)": ([], 0.6),
    "follow on, --follow-match 0.5": (["--follow-match", "0.5"], 0.5),
    "follow on, --follow-match 0.7": (["--follow-match", "0.7"], 0.7),
}


def frontal_found(picker, frame: np.ndarray, box) -> bool:
    """The detector (as for a photo) finds the frontal face in this frame."""
    from edge_fer.runtime.tracker import iou_matrix

    gray = cv2.cvtColor(np.clip(frame, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY)
    dets = np.array([d[:3] for d in picker(gray.shape).detect(gray)], np.float64).reshape(-1, 3)
    boxes = np.column_stack([dets[:, 1] - dets[:, 2] / 2, dets[:, 0] - dets[:, 2] / 2,
                             dets[:, 2], dets[:, 2]])  # fmt: skip
    return bool(len(boxes)) and float(iou_matrix(np.array([box]), boxes).max()) >= 0.3


def schedule(exit_walk: bool) -> list[tuple[str, float, float]]:
    """One person's frames: (group, yaw, pitch); group "exit" frames walk out of the frame."""

    def ramp(a: float, b: float, n: int) -> list[float]:
        return list(np.linspace(a, b, n + 1)[1:])

    out = [("frontal", 0.0, 0.0)] * 30
    for sign in (1, -1):
        turn = ramp(0, sign * YAW, 10) + [sign * YAW] * 20 + ramp(sign * YAW, 0, 10)
        out += [("yaw", y, 0.0) for y in turn] + [("frontal", 0.0, 0.0)] * 20
    down = ramp(0, PITCH, 10) + [PITCH] * 20 + ramp(PITCH, 0, 10)
    out += [("pitch", 0.0, p) for p in down] + [("frontal", 0.0, 0.0)] * 20
    if exit_walk:
        out += [("exit", 0.0, 0.0)] * 15
    return out


def make_clip(path: Path, people: int, seed: int) -> dict:
    """Write the clip; returns per frame the reference box (None: no face; "ignore": half
    out of the frame), the person and the group."""
    from edge_fer.detect.config import DetectorOptions
    from edge_fer.detect.factory import DetectorPicker
    from edge_fer.runtime.sinks import VideoSink
    from edge_fer.runtime.track_eval import turn_head

    w, h = SIZE
    rng = np.random.default_rng(seed)
    bgs = sorted(BACKGROUNDS.glob("*.jpg"))
    bg = cv2.imread(str(bgs[int(rng.integers(len(bgs)))]), cv2.IMREAD_COLOR)
    bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    picker = DetectorPicker(None, DetectorOptions(), stills=True)
    faces = webfaces_patches(WEBFACES, FACE_MIN_EYES, rng)
    writer = VideoSink(path, FPS, (w, h))
    ref, who, groups = [], [], []
    try:
        for k in range(people):
            while True:  # the next face the detector finds when it is frontal
                patch, side = next(faces)
                face = rng.uniform(0.28, 0.36) * h  # px: 67-86 at 240 rows
                scale = face / side
                psz = round(patch.shape[0] * scale)
                p = cv2.resize(patch, (psz, psz), interpolation=cv2.INTER_AREA)
                alpha = feathered_disc(psz)[..., None]
                fbox = ((psz - face) / 2, (psz - face) / 2, face, face)
                cx0, cy0 = rng.uniform(0.35, 0.65) * w, rng.uniform(0.45, 0.55) * h
                x0, y0 = round(cx0 - psz / 2), round(cy0 - psz / 2)
                f = bg.copy()
                paste(f, p, alpha, x0, y0)
                if frontal_found(picker, f, (x0 + fbox[0], y0 + fbox[1], face, face)):
                    break
            amp, ph = 0.12 * w, rng.uniform(0, 2 * np.pi)
            walk = k % 2 == 1
            plan = schedule(walk)
            n_walk = 0
            for i, (group, yaw, pitch) in enumerate(plan):
                t = i / FPS
                cx = cx0 + amp * np.sin(2 * np.pi * t / 7 + ph)
                cy = cy0 + 4 * np.sin(2 * np.pi * t / 3 + ph)
                if group == "exit":  # walk out to the left at a face width every 4 frames
                    n_walk += 1
                    cx -= n_walk * face / 4
                warped, box = turn_head(p, fbox, yaw, pitch)
                x0, y0 = round(cx - psz / 2), round(cy - psz / 2)
                f = bg.copy()
                paste(f, warped, alpha, x0, y0)
                writer.write(np.clip(f, 0, 255).astype(np.uint8))
                bx, by = box[0] + x0, box[1] + y0
                inside = max(0.0, min(bx + box[2], w) - max(bx, 0)) / box[2]
                ref.append([bx, by, box[2], box[3]] if inside >= 0.999 else "ignore")
                who.append(k)
                groups.append(group)
            for _ in range(int(2 * FPS)):  # the person is gone: background only
                writer.write(np.clip(bg, 0, 255).astype(np.uint8))
                ref.append(None)
                who.append(None)
                groups.append("background")
    finally:
        writer.close()
    return {"ref": ref, "people": who, "groups": groups}


def run(source: Path, flags: list[str], events: Path) -> dict:
    from edge_fer.cli.main import main as cli

    summary = events.with_suffix(".json")
    rc = cli(["run", str(source), "--events", str(events), "--summary", str(summary), *flags])
    if rc != 0:
        raise SystemExit(f"edge-fer run {source} exited with {rc}")
    lines = read_events(events)
    return {"events": lines, "summary": json.loads(summary.read_text())}


def read_gray(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    cap.release()
    return frames


def gap_test(match: float, gap: int = 20, step: int = 7) -> dict:
    """The tracker alone on the real NRC-IIT frames, the reference boxes as its detections.
    Gaps: every `step` frames, a run where the detections stop for `gap` frames (from a fresh
    tracker): the share of those frames held, held on the face (IoU >= 0.5) and held off it
    (IoU < 0.3). Vanish: the frame turns into an unrelated background (every 3rd of
    ../shared/data/backgrounds) with 2 more detections where the face was (the detector's
    memory), then none: how many of those 8 frames are held (a scene cut, which the pipeline
    ends tracks at anyway; the harshest case for the match alone)."""
    from edge_fer.runtime.track_eval import load_reference
    from edge_fer.runtime.tracker import IoUTracker, iou_matrix

    refs = load_reference(REFERENCE)
    bgs = sorted(BACKGROUNDS.glob("*.jpg"))[::3]
    n = held = good = wrong = bg_frames = bg_held = 0
    none = np.zeros((0, 5))
    for clip, ref in refs.items():
        frames = read_gray(VIDEOS / clip)
        for g0 in range(20, len(frames) - gap, step):
            tr = IoUTracker(min_hits=2, follow_frames=40, follow_match=match)
            for i in range(g0 + gap):
                rep = tr.update(np.array([[*ref[i], 50]]) if i < g0 else none, frame=i,
                                gray=frames[i])  # fmt: skip
                if i >= g0:
                    n += 1
                    if rep:
                        iou = iou_matrix(rep[0].box[None], ref[i][None])[0, 0]
                        held, good, wrong = held + 1, good + (iou >= 0.5), wrong + (iou < 0.3)
        for k, b in enumerate(bgs):
            g0 = 30 + (k * 7) % 150
            bg = cv2.resize(cv2.imread(str(b), cv2.IMREAD_GRAYSCALE), frames[0].shape[::-1],
                            interpolation=cv2.INTER_AREA)  # fmt: skip
            tr = IoUTracker(min_hits=2, follow_frames=40, follow_match=match)
            for i in range(g0 + 10):
                det = np.array([[*ref[min(i, g0 - 1)], 50]]) if i < g0 + 2 else none
                rep = tr.update(det, frame=i, gray=frames[i] if i < g0 else bg)
                if i >= g0 + 2:
                    bg_frames += 1
                    bg_held += bool(rep)
    return {
        "gap_frames": n,
        "held": round(held / n, 4),
        "held_on_face": round(good / n, 4),
        "held_off_face": round(wrong / n, 4),
        "vanish_frames": bg_frames,
        "vanish_held": bg_held,
    }


def follow_cost(repeats: int = 200) -> dict:
    """ms per frame the tracker spends on a 1280x720 frame: 3 established faces (96-144 px)
    detected, then the same 3 followed (held) with no detection."""
    from edge_fer.runtime.tracker import IoUTracker

    rng = np.random.default_rng(0)
    gray = cv2.GaussianBlur(rng.integers(0, 256, (720, 1280), dtype=np.uint8), (5, 5), 0)
    boxes = np.array([[200, 200, 96, 96, 50], [600, 250, 120, 120, 50], [950, 300, 144, 144, 50]])
    out = {}
    for label, follow in (("off", 0), ("on", 10**9)):
        tr = IoUTracker(follow_frames=follow, follow_match=-1.0, max_misses=10**6)
        for i in range(20):
            tr.update(boxes, frame=i, gray=gray, t=i / 30)
        t0 = time.perf_counter()
        for i in range(repeats):
            tr.update(boxes, frame=20 + i, gray=gray, t=None)
        t1 = time.perf_counter()
        for i in range(repeats):
            tr.update(boxes[:0], frame=20 + repeats + i, gray=gray, t=None)
        t2 = time.perf_counter()
        assert follow == 0 or all(x.held for x in tr.active())
        out[label] = {
            "detected_ms": round((t1 - t0) * 1000 / repeats, 4),
            "missed_ms": round((t2 - t1) * 1000 / repeats, 4),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=2, help="turning-head clips to make (default 2)")
    ap.add_argument("--people", type=int, default=4, help="people per clip (default 4)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", metavar="DIR", help="keep the clips and events in DIR")
    ap.add_argument("--no-save", action="store_true", help="print only")
    args = ap.parse_args(argv)
    for need in (VIDEOS, WEBFACES, BACKGROUNDS):
        if not need.is_dir():
            return fail(f"bench_turning: {need} not found")
    from edge_fer.runtime.track_eval import load_reference, score_clip, score_single_face

    results: dict = {"configs": {k: " ".join(v[0]) or "(defaults)" for k, v in CONFIGS.items()}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(args.keep or tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        clips = {}
        for c in range(args.clips):
            path = tmp / f"turning{c}.mp4"
            clips[path.name] = (path, make_clip(path, args.people, args.seed + c))
        nrc = load_reference(REFERENCE)
        for ci, (label, (flags, _)) in enumerate(CONFIGS.items()):
            res: dict = {}
            for clip, boxes in nrc.items():
                out = run(VIDEOS / clip, flags, tmp / f"{clip}.{ci}.jsonl")
                r = score_single_face(out["events"], boxes)
                r["held_faces"] = out["summary"]["held_faces"]
                res[clip] = r
                rows.append((label, clip, r["found_rate"], r["held_faces"], r["id_switches"],
                             len(r["face_track_ids"]) - 1, r["other_per_frame"], None, None))  # fmt: skip
            for clip, (path, truth) in clips.items():
                out = run(path, flags, tmp / f"{clip}.{ci}.jsonl")
                r = score_clip(out["events"], truth["ref"], truth["people"], truth["groups"])
                r["held_faces"] = out["summary"]["held_faces"]
                res[clip] = r
                rows.append((label, clip, r["found_rate"], r["held"], r["id_switches"],
                             r["carried_ids"], r["other_boxes"] / max(r["face_frames"], 1),
                             r["background_reports"], r["by_group"]))  # fmt: skip
            results[label] = res
    gaps = {label: gap_test(m) for label, (_, m) in CONFIGS.items() if m is not None}
    results["gaps_in_real_clips"] = gaps
    results["follow_cost_ms_1280x720_3_faces"] = follow_cost()
    print("| config | clip | face reported | held | id switches | extra ids / carried | "
          "other boxes / frame | background reports | frontal / yaw / pitch reported |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for label, clip, rate, held, sw, extra, other, bgr, by in rows:
        g = "" if by is None else " / ".join(
            f"{by[k]['found_rate']:.3f}" for k in ("frontal", "yaw", "pitch") if k in by)  # fmt: skip
        print(f"| {label} | {clip} | {rate:.3f} | {held} | {sw} | {extra} | {other:.3f} | "
              f"{'' if bgr is None else bgr} | {g} |")  # fmt: skip
    print("\ntracker alone, NRC-IIT frames, 20-frame gaps in the detections; vanish: see gap_test")
    print("| config | gap frames | held | held on the face | held off it | vanish frames held |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, g in gaps.items():
        print(f"| {label} | {g['gap_frames']} | {g['held']:.3f} | {g['held_on_face']:.3f} | "
              f"{g['held_off_face']:.3f} | {g['vanish_held']} / {g['vanish_frames']} |")  # fmt: skip
    cost = results["follow_cost_ms_1280x720_3_faces"]
    print(f"tracker ms/frame, 1280x720, 3 faces: detected {cost['off']['detected_ms']} (follow "
          f"off) / {cost['on']['detected_ms']} (on); all missed {cost['off']['missed_ms']} / "
          f"{cost['on']['missed_ms']} (held)")  # fmt: skip
    if not args.no_save:
        save_json(RESULTS, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
