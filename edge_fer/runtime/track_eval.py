"""Score a run's faces against reference boxes of one person's face: how often it is found, how
often its track id changes, and how many other boxes were reported.

    ref = load_reference("benchmarks/data/nrc_iit_faces.json")["00-1.avi"]   # one box per frame
    score = score_single_face(events, ref)                                    # events: JSON Lines rows

A frame counts as found when a reported box overlaps the reference by IoU >= `min_iou`; an id
switch is a found frame whose face carries a different track id from the previous found frame.

Clips with several people in turn and stretches with no face (`score_clip`), and synthetic
turned heads for them (`turn_head`: a face photo painted on a cylinder and rotated, the way
benchmarks/bench_turning.py and tests/test_turning.py imitate yaw and a downward look).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from edge_fer.runtime.tracker import iou_matrix


def load_reference(path: str | Path) -> dict[str, np.ndarray]:
    """clip name -> (frames, 4) x, y, w, h, from a reference file (benchmarks/data/*.json)."""
    d = json.loads(Path(path).read_text())
    return {k: np.asarray(v, np.float64).reshape(-1, 4) for k, v in d["clips"].items()}


def _match(box, faces: list[dict], min_iou: float) -> int | None:
    """Index of the reported face whose box overlaps `box` (x, y, w, h) most, if that overlap
    is IoU >= min_iou; else None."""
    boxes = np.array([f["box"] for f in faces], np.float64).reshape(-1, 4)
    iou = iou_matrix(np.asarray(box, np.float64)[None], boxes)[0]
    j = int(iou.argmax())
    return j if iou[j] >= min_iou else None


def score_single_face(events: list[dict], ref: np.ndarray, min_iou: float = 0.3) -> dict:
    """events: rows of `edge-fer run --events` (frame, faces[box, track]); frames with no row
    had no faces. Returns counts and rates over the reference's frames."""
    by_frame = {int(e["frame"]): e.get("faces", []) for e in events}
    found = switches = other = 0
    ids: list[int] = []
    prev = None
    for i, box in enumerate(ref):
        faces = by_frame.get(i, [])
        if not faces:
            continue
        j = _match(box, faces, min_iou)
        if j is not None:
            found += 1
            tid = faces[j].get("track")
            if tid not in ids:
                ids.append(tid)
            if prev is not None and tid != prev:
                switches += 1
            prev = tid
            other += len(faces) - 1
        else:
            other += len(faces)
    n = len(ref)
    return {
        "frames": n,
        "found": found,
        "found_rate": found / n if n else 0.0,
        "face_track_ids": ids,
        "id_switches": switches,
        "other_boxes": other,
        "other_per_frame": other / n if n else 0.0,
    }


def score_clip(
    events: list[dict],
    ref: list,
    people: list | None = None,
    groups: list | None = None,
    min_iou: float = 0.3,
) -> dict:
    """Like `score_single_face` for a clip where `ref[i]` is the face's box (x, y, w, h) on frame
    i, None (no face: every report there is false) or "ignore" (not scored: a face half out of
    the frame), and `people[i]` says whose face it is (an id switch is counted within one
    person's stretch; a track id found on two people is a carried id). Faces reported with
    `"held": true` are counted apart as well; `groups[i]` (a name, e.g. "yaw") breaks the found
    face frames down."""
    by_frame = {int(e["frame"]): e.get("faces", []) for e in events}
    people = list(people) if people is not None else [0 if b is not None else None for b in ref]
    found = held = held_wrong = switches = other = false_bg = bg_frames = bg_frames_hit = 0
    face_frames = 0
    prev: dict = {}  # person -> track id at their last found frame
    owner: dict = {}  # track id -> the first person it was found on
    carried: set = set()
    by_group: dict = {}
    for i, box in enumerate(ref):
        if isinstance(box, str):
            continue
        faces = by_frame.get(i, [])
        g = by_group.setdefault(groups[i], [0, 0, 0]) if groups is not None else [0, 0, 0]
        if box is None:
            bg_frames += 1
            false_bg += len(faces)
            bg_frames_hit += bool(faces)
            held_wrong += sum(bool(f.get("held")) for f in faces)
            continue
        face_frames += 1
        g[0] += 1
        if not faces:
            continue
        j = _match(box, faces, min_iou)
        if j is None:
            other += len(faces)
            held_wrong += sum(bool(f.get("held")) for f in faces)
            continue
        found += 1
        held += bool(faces[j].get("held"))
        g[1] += 1
        g[2] += bool(faces[j].get("held"))
        held_wrong += sum(bool(f.get("held")) for k, f in enumerate(faces) if k != j)
        other += len(faces) - 1
        who, tid = people[i], faces[j].get("track")
        if who in prev and prev[who] != tid:
            switches += 1
        prev[who] = tid
        if owner.setdefault(tid, who) != who:
            carried.add(tid)
    return {
        "face_frames": face_frames,
        "found": found,
        "found_rate": found / face_frames if face_frames else 0.0,
        "held": held,
        "id_switches": switches,
        "carried_ids": len(carried),
        "other_boxes": other,
        "held_wrong": held_wrong,
        "background_frames": bg_frames,
        "background_reports": false_bg,
        "background_frames_with_reports": bg_frames_hit,
        "by_group": {
            k: {"frames": n, "found": f, "found_rate": f / n if n else 0.0, "held": h}
            for k, (n, f, h) in by_group.items()
            if n
        },
    }


def _cylinder_map(n: int, centre: float, radius: float, angle: float) -> np.ndarray:
    """For each of n output positions, the source position of a line painted on a cylinder
    (axis across the line, at `centre`, radius `radius`) turned by `angle` radians. Outside the
    cylinder the line is shifted so it joins its visible edges (hair, the photo's background)."""
    u_out = (np.arange(n, dtype=np.float64) - centre) / radius
    c = np.cos(angle)
    lo, hi = (-c, 1.0) if angle >= 0 else (-1.0, c)  # the visible span of the turned cylinder
    inside = np.clip(u_out, lo, hi)
    src = np.sin(np.arcsin(np.clip(inside, -1.0, 1.0)) - angle)
    src = np.where(u_out < lo, u_out - lo + src, src)
    src = np.where(u_out > hi, u_out - hi + src, src)
    return centre + radius * src


def turn_head(
    image: np.ndarray, box, yaw: float = 0.0, pitch: float = 0.0, radius: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    """A face photo turned by `yaw` (degrees, positive: the face turns to its left, towards the
    image's right) and tilted down by `pitch` (degrees), as if painted on a head-sized cylinder
    (`radius` x the face box's side) around the face box's centre. `box`: x, y, w, h of the face
    in `image`. Returns the warped image and the face's box in it (the frontal box's edges
    carried by the same map, so a turned face's box narrows and moves as the face does)."""
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2, y + h / 2
    rows, cols = image.shape[:2]
    map_x = np.arange(cols, dtype=np.float64)
    map_y = np.arange(rows, dtype=np.float64)
    out_box = [x, y, w, h]
    if yaw:
        map_x = _cylinder_map(cols, cx, radius * w, np.radians(yaw))
        out_box[0], right = np.interp([x, x + w], map_x, np.arange(cols))
        out_box[2] = right - out_box[0]
    if pitch:
        map_y = _cylinder_map(rows, cy, radius * h, np.radians(pitch))
        out_box[1], bottom = np.interp([y, y + h], map_y, np.arange(rows))
        out_box[3] = bottom - out_box[1]
    mx = np.broadcast_to(map_x[None, :], (rows, cols)).astype(np.float32)
    my = np.broadcast_to(map_y[:, None], (rows, cols)).astype(np.float32)
    warped = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped, np.array(out_box, np.float64)
