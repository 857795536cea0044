"""face_default.json's single-image operating point (issue 17): cascade threshold 0, so every
cluster reaches the verifier, and verifier_min_prob 0.8 (chosen in benchmarks/bench_yunet.py).
Real photos from ../shared, scanned as `edge-fer detect --min-size 24` scans them."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_fer.detect.config import CascadeSettings, DetectorOptions, resolve
from edge_fer.detect.factory import DetectorPicker

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "edge_fer" / "assets"
SHARED = Path(os.environ.get("EDGE_FER_SHARED", ROOT.parent / "shared"))
WEBFACES = SHARED / "data" / "webfaces"
BACKGROUNDS = SHARED / "data" / "backgrounds"
needs_shared = pytest.mark.skipif(
    not (WEBFACES.is_dir() and BACKGROUNDS.is_dir()), reason=f"{SHARED}/data not found"
)
# held-out WebFaces validation photos (640 px and so on: face_default.pico scans them) whose
# faces the former operating point (threshold 3.0, min_prob 0.5) partly missed: 11 of 15
PHOTOS = ("pic10862.jpg", "pic11041.jpg", "pic11270.jpg")


def test_stills_use_every_cluster_and_a_strict_verifier() -> None:
    s = CascadeSettings.for_cascade(ASSETS / "face_default.pico")
    r = resolve(DetectorOptions(min_size=24), s, (480, 640), stills=True)
    assert (r.threshold, r.verifier_min_prob, r.memory) == (0.0, 0.8, 1)
    assert r.verifier is not None and r.verifier.name == "face_verify.onnx"
    # video keeps its pooled threshold; the verifier's bar is the same
    v = resolve(DetectorOptions(min_size=24), s, (480, 640))
    assert (v.threshold, v.verifier_min_prob) == (10.0, 0.8)


_cache: list = []


def _annotations():
    from edge_fer.cascade_train.annotations import read_webfaces

    if not _cache:
        _cache.extend(read_webfaces(WEBFACES)[0])
    return _cache


def _found(picker, name: str) -> tuple[int, int, int]:
    """(annotated faces, faces found at IoU >= 0.4, other detections) on one photo."""
    faces = next(im.faces for im in _annotations() if im.name == name)
    gray = cv2.imread(str(WEBFACES / "images" / name), cv2.IMREAD_GRAYSCALE)
    assert gray is not None and min(gray.shape) >= 240  # face_default.pico, not the low-res one
    dets = picker(gray.shape).detect(gray)
    used: set[int] = set()
    extra = 0
    for d in dets:
        ious = [f.iou(d.row, d.col, d.size) for f in faces]
        j = int(np.argmax(ious))
        if ious[j] >= 0.4 and j not in used:
            used.add(j)
        else:
            extra += 1
    return len(faces), len(used), extra


@needs_shared
def test_group_photos_find_every_face_without_false_boxes() -> None:
    shipped = DetectorPicker(None, DetectorOptions(min_size=24), stills=True)
    former = DetectorPicker(
        None, DetectorOptions(min_size=24, threshold=3.0, verifier_min_prob=0.5), stills=True
    )
    now = [_found(shipped, n) for n in PHOTOS]
    before = [_found(former, n) for n in PHOTOS]
    assert sum(n for n, _, _ in now) == 15
    assert [k for _, k, _ in now] == [n for n, _, _ in now]  # every face
    assert sum(e for _, _, e in now) == 0  # and nothing else
    assert sum(k for _, k, _ in before) < 15  # what the cascade's 3.0 gate used to drop


@needs_shared
def test_held_out_backgrounds_stay_nearly_empty() -> None:
    from edge_fer.cascade_train.annotations import list_images, split_paths

    bgs = split_paths(list_images(BACKGROUNDS), "val")[:28]  # the 30 held-out scenes

    def tile(p: Path) -> np.ndarray:
        g = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        return cv2.resize(g, (320, 240), interpolation=cv2.INTER_AREA)

    shipped = DetectorPicker(None, DetectorOptions(min_size=24), stills=True)
    n = 0
    for k in range(0, len(bgs), 4):  # 640x480 mosaics of four scenes
        t = [tile(p) for p in bgs[k : k + 4]]
        frame = np.vstack([np.hstack(t[:2]), np.hstack(t[2:])])
        n += len(shipped(frame.shape).detect(frame))
    # with no cascade gate the verifier alone keeps 28 scenes (7 frames) to 2 boxes
    assert n <= 2
