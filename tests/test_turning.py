"""Turned heads: the tracker follows a face it no longer detects and reports it as held.

Real frames of the NRC-IIT clip 01-2.avi (../shared), with its reference face boxes
(benchmarks/data/nrc_iit_faces.json) as the detections where the tracker is tested alone, and
the whole pipeline (bundled cascade, verifier and model) on a copy whose head turns away.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from runtime_helpers import ROOT, read_jsonl, shared

from edge_fer.cli.main import main
from edge_fer.runtime.smoothing import TrackSmoother
from edge_fer.runtime.track_eval import load_reference, score_clip, turn_head
from edge_fer.runtime.tracker import LAG, IoUTracker, TrackerOptions, iou_matrix

REFERENCE = ROOT / "benchmarks" / "data" / "nrc_iit_faces.json"
FPS = 20.0


@pytest.fixture(scope="module")
def clip() -> tuple[list[np.ndarray], np.ndarray]:
    """The first 100 frames of 01-2.avi (gray) and their reference face boxes."""
    cap = cv2.VideoCapture(str(shared("data/videos/01-2.avi")))
    frames = []
    while len(frames) < 100:
        ok, f = cap.read()
        assert ok
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    cap.release()
    return frames, load_reference(REFERENCE)["01-2.avi"][:100]


def _det(box: np.ndarray, score: float = 50.0) -> np.ndarray:
    return np.array([[*box, score]])


def _snap(tracks) -> list[SimpleNamespace]:
    """What a frame reported (the tracker changes its Track objects in later frames)."""
    keys = ("id", "held", "match", "det_index")
    return [SimpleNamespace(box=t.box.copy(), **{k: getattr(t, k) for k in keys}) for t in tracks]


def _run(tr: IoUTracker, frames, ref, detected, start=0, stop=None):
    """Feed frames [start, stop) with the reference box as the detection where `detected(i)`;
    returns per frame the reported tracks."""
    out = []
    for i in range(start, len(frames) if stop is None else stop):
        boxes = _det(ref[i]) if detected(i) else np.zeros((0, 5))
        out.append(_snap(tr.update(boxes, frame=i, gray=frames[i], t=i / FPS)))
    return out


def _iou(a, b) -> float:
    return float(iou_matrix(np.asarray(a)[None], np.asarray(b)[None])[0, 0])


def test_a_missed_face_is_followed_and_held_then_detected_again_with_its_id(clip):
    frames, ref = clip
    tr = IoUTracker(min_hits=2, max_misses=15, max_misses_established=45, follow_frames=40,
                    follow_seconds=2.0, follow_match=0.6)  # fmt: skip
    gap = range(50, 70)  # the head moves through these frames: no detection
    rep = _run(tr, frames, ref, lambda i: i not in gap)
    (face_id,) = {t.id for t in rep[40]}
    for i in gap:
        (t,) = rep[i]
        assert t.id == face_id and t.held and t.det_index == -1 and t.match >= 0.6
        assert _iou(t.box, ref[i]) >= 0.5, i  # it follows the face, not where it was
    for i in range(70, 100):
        (t,) = rep[i]
        assert t.id == face_id and not t.held
    assert tr.held_total == len(gap) and tr.births == 1


def test_held_ends_at_the_frame_and_time_limits(clip):
    frames, ref = clip
    for kw, n in (({"follow_frames": 6}, 6), ({"follow_frames": 40, "follow_seconds": 0.27}, 5)):
        tr = IoUTracker(min_hits=2, **kw)
        rep = _run(tr, frames, ref, lambda i: i < 40, stop=70)
        held = [i for i in range(40, 70) if rep[i]]
        assert held == list(range(40, 40 + n)), kw
        assert all(rep[i][0].held for i in held)
        # the track lives on unreported (it may still be detected again), then dies
        assert tr.active() and not tr.dead


def test_following_is_off_without_frames_or_for_young_tracks(clip):
    frames, ref = clip
    tr = IoUTracker(min_hits=2, follow_frames=40)
    rep = [tr.update(_det(ref[i]) if i < 40 else np.zeros((0, 5)), frame=i) for i in range(45)]
    assert not any(rep[40:])  # no frame given: nothing to follow with
    young = IoUTracker(min_hits=2, follow_frames=40)  # established after 10 detections
    rep = _run(young, frames, ref, lambda i: i < 5, stop=12)
    assert rep[4] and not any(rep[5:])


def test_a_face_that_vanishes_is_not_held_on_the_background(clip):
    """The detector pools its last frames, so it reports the vanished face's box for a frame
    or two; that background must not become the template followed next."""
    frames, ref = clip
    bg = cv2.imread(str(min(shared("data/backgrounds").glob("*.jpg"))), cv2.IMREAD_GRAYSCALE)
    bg = cv2.resize(bg, frames[0].shape[::-1], interpolation=cv2.INTER_AREA)
    tr = IoUTracker(min_hits=2, follow_frames=40, follow_match=0.6)
    _run(tr, frames, ref, lambda i: True, stop=40)
    ghost = [_snap(tr.update(_det(ref[39]), frame=40 + k, gray=bg)) for k in range(2)]
    assert all(len(r) == 1 and not r[0].held for r in ghost)  # detected (ghosts), reported
    after = [tr.update(np.zeros((0, 5)), frame=42 + k, gray=bg) for k in range(10)]
    assert not any(after)
    # what is detected for longer than the detector's memory is what is followed
    tr2 = IoUTracker(min_hits=2, follow_frames=40, follow_match=0.6)
    _run(tr2, frames, ref, lambda i: True, stop=40)
    for k in range(LAG + 1):
        tr2.update(_det(ref[39]), frame=40 + k, gray=bg)
    assert tr2.update(np.zeros((0, 5)), frame=41 + LAG, gray=bg)[0].held


def test_the_smoother_holds_a_label_without_changing_it():
    sm = TrackSmoother(("a", "b"), alpha=0.5)
    assert sm.hold(1, 0, 0.0) is None  # never classified: nothing to hold
    sm.update(1, np.array([0.2, 0.8]), 0, 0.0)
    held = sm.hold(1, 1, 0.05)
    assert np.allclose(held, [0.2, 0.8])
    assert np.allclose(sm.update(1, np.array([1.0, 0.0]), 2, 0.1), [0.6, 0.4])
    (s,) = sm.summary(0.05)
    assert s["frames"] == 3 and s["held_frames"] == 1 and s["last_frame"] == 2
    assert s["share"] == {"a": pytest.approx(1 / 3, abs=1e-3), "b": pytest.approx(2 / 3, abs=1e-3)}


def test_options_are_checked():
    from edge_fer.errors import UserError

    assert TrackerOptions().follow_kwargs() == {
        "follow_frames": 40,
        "follow_seconds": 2.0,
        "follow_match": 0.6,
    }
    for kw, param in (({"follow": -1}, "follow"), ({"follow_match": 1.5}, "follow_match"),
                      ({"follow_seconds": -0.5}, "follow_seconds")):  # fmt: skip
        with pytest.raises(UserError) as e:
            TrackerOptions(**kw).follow_kwargs()
        assert e.value.param == param


def test_score_clip_counts_found_held_switches_and_background_reports():
    ref = [[0, 0, 10, 10], [0, 0, 10, 10], None, "ignore", [20, 0, 10, 10]]
    events = [
        {"frame": 0, "faces": [{"track": 1, "box": [0, 0, 10, 10]}]},
        {"frame": 1, "faces": [{"track": 1, "box": [1, 0, 10, 10], "held": True}]},
        {"frame": 2, "faces": [{"track": 1, "box": [1, 0, 10, 10], "held": True}]},
        {"frame": 3, "faces": [{"track": 1, "box": [50, 0, 10, 10]}]},
        {"frame": 4, "faces": [{"track": 1, "box": [20, 0, 10, 10]}]},
    ]
    r = score_clip(events, ref, people=[0, 0, None, 1, 1], groups=list("ffbfy"))
    assert (r["face_frames"], r["found"], r["held"]) == (3, 3, 1)
    assert (r["background_reports"], r["held_wrong"], r["carried_ids"]) == (1, 1, 1)
    assert r["id_switches"] == 0 and r["by_group"]["y"] == {
        "frames": 1, "found": 1, "found_rate": 1.0, "held": 0}  # fmt: skip


def test_turn_head_moves_and_narrows_the_face():
    img = np.tile(np.arange(200, dtype=np.uint8), (200, 1))
    same, box = turn_head(img, (50, 50, 100, 100), 0, 0)
    assert np.array_equal(same, img) and np.allclose(box, [50, 50, 100, 100])
    turned, box = turn_head(img, (50, 50, 100, 100), 45, 0)
    assert box[2] < 90 and box[0] + box[2] / 2 > 100  # narrower, moved the way it turned
    assert not np.array_equal(turned, img)
    down, box = turn_head(img, (50, 50, 100, 100), 0, 30)
    assert box[3] < 100 and box[1] > 50 and np.array_equal(down, img)  # rows only: same here


def _turned_copy(path: Path, n: int = 90) -> np.ndarray:
    """The first n frames of 01-2.avi, the head turning 55 degrees over frames 40-48, turned
    until frame 64 and back by frame 70; returns the face's boxes (turned as the face is)."""
    cap = cv2.VideoCapture(str(shared("data/videos/01-2.avi")))
    ref = load_reference(REFERENCE)["01-2.avi"][:n]
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (160, 120))
    boxes = []
    for i in range(n):
        ok, f = cap.read()
        assert ok
        yaw = float(np.interp(i, [40, 48, 64, 70], [0, 55, 55, 0]))
        turned, box = turn_head(f, ref[i], yaw)
        w.write(turned)
        boxes.append(list(box))
    w.release()
    cap.release()
    return boxes


def test_run_reports_a_turned_head_as_held_with_its_label(tmp_path):
    """`edge-fer run` with the defaults on a head that turns away (55 degrees), where the
    detector loses it: the face is still reported there, marked held, with its label."""
    video = tmp_path / "turned.avi"
    ref = _turned_copy(video)
    runs = {}
    for name, flags in (("off", ["--follow", "0"]), ("on", [])):
        ev, summ = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.json"
        assert main(["run", str(video), "--events", str(ev), "--summary", str(summ), *flags]) == 0
        runs[name] = (read_jsonl(ev), json.loads(summ.read_text()))
    off, on = runs["off"][0], runs["on"][0]
    assert not any(f.get("held") for e in off for f in e["faces"])
    held = [(e["frame"], f) for e in on for f in e["faces"] if f.get("held")]
    assert len(held) >= 5, "the turned head should be held (did the detector learn profiles?)"
    ids = {f["track"] for e in on for f in e["faces"]}
    assert len(ids) == 1  # one face, one id, through the turn
    last_label = {}
    for e in on:
        for f in e["faces"]:
            if f.get("held"):
                assert f["label"] == last_label[f["track"]] and f["match"] >= 0.6
                assert set(f) >= {"track", "box", "score", "label", "conf", "probs"}
            last_label[f["track"]] = f["label"]
    frames_on = {e["frame"] for e in on}
    assert {e["frame"] for e in off} < frames_on  # nothing lost, more reported
    r_on, r_off = score_clip(on, ref), score_clip(off, ref)
    assert r_on["found"] >= r_off["found"] + 5
    assert r_on["held"] >= 0.8 * len(held)  # held boxes on the face (one may lag a fast turn)
    s_on, s_off = runs["on"][1], runs["off"][1]
    assert s_on["held_faces"] == len(held) and s_off["held_faces"] == 0
    assert sum(t["held_frames"] for t in s_on["tracks"]) == len(held)
    assert s_on["tracker"]["follow"] == 40 and s_off["tracker"]["follow"] == 0
