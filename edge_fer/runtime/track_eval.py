"""Score a run's faces against reference boxes of one person's face: how often it is found, how
often its track id changes, and how many other boxes were reported.

    ref = load_reference("benchmarks/data/nrc_iit_faces.json")["00-1.avi"]   # one box per frame
    score = score_single_face(events, ref)                                    # events: JSON Lines rows

A frame counts as found when a reported box overlaps the reference by IoU >= `min_iou`; an id
switch is a found frame whose face carries a different track id from the previous found frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_fer.runtime.tracker import iou_matrix


def load_reference(path: str | Path) -> dict[str, np.ndarray]:
    """clip name -> (frames, 4) x, y, w, h, from a reference file (benchmarks/data/*.json)."""
    d = json.loads(Path(path).read_text())
    return {k: np.asarray(v, np.float64).reshape(-1, 4) for k, v in d["clips"].items()}


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
        boxes = np.array([f["box"] for f in faces], np.float64).reshape(-1, 4)
        iou = iou_matrix(box[None], boxes)[0]
        j = int(iou.argmax())
        if iou[j] >= min_iou:
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
