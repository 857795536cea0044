"""The IoU tracker on synthetic box sequences; crops and smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from edge_fer.runtime.crops import crop_face, square_box
from edge_fer.runtime.smoothing import TrackSmoother
from edge_fer.runtime.tracker import IoUTracker, iou_matrix


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10], [100, 100, 10, 10]])
    b = np.array([[5, 0, 10, 10], [0, 0, 10, 10]])
    m = iou_matrix(a, b)
    assert m[0, 1] == pytest.approx(1.0)
    assert m[0, 0] == pytest.approx(50 / 150)
    assert m[1].tolist() == [0.0, 0.0]
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 2)


def test_steady_face_keeps_one_id_despite_jitter_and_dropouts():
    rng = np.random.default_rng(0)
    tr = IoUTracker(min_hits=2, max_misses=10)
    ids = set()
    for i in range(300):
        if i % 37 in (5, 6, 7):  # the detector misses it now and then (3 frames)
            out = tr.update(np.zeros((0, 4)))
            assert out == []
            continue
        box = np.array([200, 150, 80, 80]) + rng.normal(0, 3, 4)
        out = tr.update([box])
        if i >= 1:
            assert len(out) == 1
            ids.add(out[0].id)
    assert ids == {1}
    assert tr.births == 1 and tr.deaths == 0


def test_birth_needs_min_hits_and_false_positives_use_no_id():
    tr = IoUTracker(min_hits=3)
    assert tr.update([[10, 10, 40, 40]]) == []  # tentative
    assert tr.update([[500, 300, 40, 40]]) == []  # the first one missed: it is gone; new one
    assert tr.update([[501, 300, 40, 40]]) == []
    out = tr.update([[502, 301, 40, 40]])
    assert [t.id for t in out] == [1]  # the one-frame blip consumed no id


def test_death_after_max_misses_and_new_id_after():
    tr = IoUTracker(min_hits=1, max_misses=4)
    assert [t.id for t in tr.update([[0, 0, 50, 50]])] == [1]
    for _ in range(4):
        tr.update([])
    assert [t.id for t in tr.active()] == [1]  # coasting, still alive
    tr.update([])
    assert tr.active() == [] and tr.deaths == 1 and tr.dead[0].id == 1
    assert [t.id for t in tr.update([[0, 0, 50, 50]])] == [2]  # ids are never reused


def test_two_faces_crossing_paths_keep_their_ids():
    tr = IoUTracker(min_hits=2)
    history = {}
    for i in range(60):  # A moves right, B moves left, on different rows
        a = [50 + 6 * i, 100, 60, 60]
        b = [410 - 6 * i, 140, 60, 60]
        for t in tr.update([a, b] if i % 2 else [b, a]):
            x = t.box[0]
            history.setdefault(t.id, []).append(x)
    assert sorted(history) == [1, 2]
    moves = {tid: np.sign(np.diff(xs)).mean() for tid, xs in history.items()}
    assert sorted(moves.values()) == [-1.0, 1.0]  # each id kept moving one way


def test_panning_face_is_followed_by_velocity():
    tr = IoUTracker(min_hits=2, iou_threshold=0.3)
    ids = set()
    for i in range(50):
        x = 20 + 25 * i  # fast: consecutive boxes overlap IoU ~0.33
        if i in (20, 21):
            tr.update([])
            continue
        for t in tr.update([[x, 100, 60, 60]]):
            ids.add(t.id)
    assert ids == {1}


def test_finish_ends_every_track():
    tr = IoUTracker(min_hits=1)
    tr.update([[0, 0, 10, 10], [100, 0, 10, 10]])
    assert len(tr.finish()) == 2 and tr.active() == []


# ---- crops -------------------------------------------------------------------------------------


def test_square_crop_with_margin_and_border_padding():
    img = np.arange(100 * 120, dtype=np.uint32).reshape(100, 120).astype(np.uint8)
    assert square_box(10, 20, 40, 40, 0.25) == (0, 10, 60)
    c = crop_face(img, (10, 20, 40, 40), margin=0.25)
    assert c.shape == (60, 60) and np.array_equal(c, img[10:70, 0:60])
    c = crop_face(img, (-10, -10, 40, 40), margin=0.0)  # past the corner: replicated border
    assert c.shape == (40, 40)
    assert np.array_equal(c[10:, 10:], img[:30, :30])
    assert np.all(c[:10, 10:] == img[0, :30])
    c = crop_face(img, (50, 30, 30, 20), margin=0.1, size=48)  # non-square box -> square crop
    assert c.shape == (48, 48) and c.dtype == np.uint8
    assert crop_face(img, (500, 500, 20, 20), margin=0.0).shape == (20, 20)  # outside: no error


# ---- smoothing ---------------------------------------------------------------------------------


def test_ema_smoothing_and_time_shares():
    sm = TrackSmoother(("a", "b"), alpha=0.5)
    p = sm.update(1, [1.0, 0.0], frame=0, t=0.0)
    assert p.tolist() == [1.0, 0.0]
    p = sm.update(1, [0.0, 1.0], frame=1, t=0.1)
    assert p == pytest.approx([0.5, 0.5])
    for k in range(2, 10):
        p = sm.update(1, [0.0, 1.0], frame=k, t=k * 0.1)
    assert p[1] > 0.99
    s = sm.summary(frame_interval=0.1)[0]
    assert s["id"] == 1 and s["frames"] == 10 and s["dominant"] == "b"
    assert s["seconds"] == pytest.approx(1.0)
    assert sum(s["share"].values()) == pytest.approx(1.0)
    assert s["share"]["b"] >= 0.8
    sm.drop(1)
    assert sm.update(1, [1.0, 0.0], frame=20, t=2.0).tolist() == [1.0, 0.0]  # a fresh average


def _settle(tr: IoUTracker, box, n: int = 12) -> int:
    """Feed the same face n frames; returns its id (established after 10 hits)."""
    for _ in range(n):
        out = tr.update([box])
    return out[0].id


def test_established_face_keeps_its_id_through_a_jump_beyond_iou():
    """A nod at 20 fps: a still face's box drops by half its size at once (IoU 0.33, below the
    gate of 0.4). An established track follows it; a young one loses it."""
    tr = IoUTracker(iou_threshold=0.4, min_hits=2, reach=0.6)
    fid = _settle(tr, [100, 100, 50, 50])
    assert [t.id for t in tr.update([[100, 125, 50, 50]])] == [fid]
    young = IoUTracker(iou_threshold=0.4, min_hits=2, reach=0.6)
    _settle(young, [100, 100, 50, 50], n=3)
    assert young.update([[100, 125, 50, 50]]) == []
    # beyond the reach (centre moved by 0.7 x the size), even an established track lets go
    tr2 = IoUTracker(iou_threshold=0.4, min_hits=2, reach=0.6)
    _settle(tr2, [100, 100, 50, 50])
    assert tr2.update([[100, 135, 50, 50]]) == []


def test_no_track_is_born_on_a_chin_box_beside_an_established_face():
    tr = IoUTracker(min_hits=2, part_overlap=0.3)
    fid = _settle(tr, [100, 100, 60, 60])
    for _ in range(5):  # the face and a chin box overlapping its lower part
        out = tr.update([[100, 100, 60, 60], [115, 140, 30, 30]])
    assert [t.id for t in out] == [fid] and tr.births == 1
    # a second face beside it (no overlap) is born as usual
    for _ in range(3):
        out = tr.update([[100, 100, 60, 60], [200, 100, 60, 60]])
    assert len(out) == 2 and tr.births == 2


def test_established_face_is_held_longer_than_a_young_track():
    tr = IoUTracker(min_hits=2, max_misses=5, max_misses_established=30)
    fid = _settle(tr, [100, 100, 60, 60])
    for _ in range(25):  # hands over the face for 25 frames
        assert tr.update(np.zeros((0, 4))) == []
    assert [t.id for t in tr.update([[102, 101, 60, 60]])] == [fid]
    young = IoUTracker(min_hits=2, max_misses=5, max_misses_established=30)
    _settle(young, [100, 100, 60, 60], n=3)
    for _ in range(6):
        young.update(np.zeros((0, 4)))
    assert young.active() == [] and young.deaths == 1


def test_tracker_rejects_bad_settings():
    with pytest.raises(ValueError):
        IoUTracker(max_misses=10, max_misses_established=5)
    with pytest.raises(ValueError):
        IoUTracker(part_overlap=1.5)


def test_score_single_face_counts_finds_switches_and_other_boxes():
    from edge_fer.runtime.track_eval import score_single_face

    ref = np.array([[10, 10, 40, 40]] * 6, float)
    events = [
        {"frame": 0, "faces": [{"box": [11, 10, 40, 40], "track": 1}]},
        {
            "frame": 1,
            "faces": [
                {"box": [12, 11, 40, 40], "track": 1},
                {"box": [100, 100, 20, 20], "track": 2},
            ],
        },
        {"frame": 2, "faces": [{"box": [100, 100, 20, 20], "track": 2}]},  # face missed
        {"frame": 4, "faces": [{"box": [10, 12, 40, 40], "track": 3}]},  # a new id: a switch
        {"frame": 5, "faces": [{"box": [40, 40, 40, 40], "track": 3}]},  # IoU 0.06: not the face
    ]
    r = score_single_face(events, ref)
    assert r["found"] == 3 and r["found_rate"] == pytest.approx(0.5)
    assert r["face_track_ids"] == [1, 3] and r["id_switches"] == 1
    assert r["other_boxes"] == 3


def test_min_score_hides_a_steady_weak_false_positive_and_keeps_the_face():
    """Averaged scores: a face scoring 40-60 is reported from its second frame; a steady
    background box scoring 12-20 never gets an id; a face whose score dips for a few frames stays
    reported (the average moves slowly)."""
    rng = np.random.default_rng(0)
    tr = IoUTracker(min_hits=2, min_score=25.0, score_smoothing=0.05)
    seen: set[int] = set()
    for i in range(120):
        face_score = 8.0 if 60 <= i < 66 else rng.uniform(40, 60)
        out = tr.update([[50, 40, 60, 60, face_score], [200, 20, 40, 40, rng.uniform(12, 20)]])
        seen |= {t.id for t in out}
        if i >= 1:
            assert [t.box[0] < 150 for t in out] == [True], i
    assert seen == {1} and tr.births == 1
    with pytest.raises(ValueError):
        IoUTracker(score_smoothing=0)


def test_finish_at_a_cut_gives_new_ids_after_it():
    tr = IoUTracker(min_hits=2)
    first = _settle(tr, [50, 50, 40, 40])
    tr.update([[200, 50, 10, 10]])  # a tentative track too
    ended = tr.finish()  # a scene cut
    assert [t.id for t in ended] == [first] and tr.tracks == []
    tr.update([[50, 50, 40, 40]])
    out = tr.update([[50, 50, 40, 40]])  # the same place after the cut: someone new
    assert [t.id for t in out] == [first + 1]


def test_smoother_keeps_the_latest_ended_tracks_only():
    sm = TrackSmoother(("a", "b"), keep_ended=2)
    for tid in range(1, 6):
        sm.update(tid, [1.0, 0.0], frame=tid, t=tid * 0.1)
    sm.update(9, [0.0, 1.0], frame=9, t=0.9)  # live throughout
    for tid in range(1, 6):
        sm.drop(tid)
    assert [s["id"] for s in sm.summary()] == [4, 5, 9] and sm.omitted == 3
    sm.drop(77)  # never classified: nothing to keep or count
    assert sm.omitted == 3 and len(sm.stats) == 3 and len(sm._state) == 1
    with pytest.raises(ValueError):
        TrackSmoother(("a",), keep_ended=-1)


def test_a_scenes_first_frame_confirms_at_once_with_min_hits_first():
    """Faces on a stream's first frame, and on the first frame after a cut (finish), are
    reported at once; a face that appears later still needs min_hits frames."""
    tr = IoUTracker(min_hits=3, min_hits_first=1)
    assert [t.id for t in tr.update([[10, 10, 40, 40]])] == [1]
    assert tr.update([[10, 10, 40, 40], [300, 300, 40, 40]])[0].id == 1
    assert [t.id for t in tr.update([[10, 10, 40, 40], [300, 300, 40, 40]])] == [1]  # 2 hits
    assert [t.id for t in tr.update([[10, 10, 40, 40], [300, 300, 40, 40]])] == [1, 2]
    assert [t.id for t in tr.finish()] == [1, 2]
    assert [t.id for t in tr.update([[500, 10, 40, 40]])] == [3]  # the cut's first frame
    assert tr.update([[500, 10, 40, 40], [10, 300, 40, 40]])[0].id == 3
    # without it the first frame waits like any other
    plain = IoUTracker(min_hits=2)
    assert plain.update([[10, 10, 40, 40]]) == []
    assert [t.id for t in plain.update([[10, 10, 40, 40]])] == [1]
    with pytest.raises(ValueError, match="min_hits_first"):
        IoUTracker(min_hits=2, min_hits_first=3)
