"""Scene cuts end every track: the cut test on real footage, and runs on clips cut together.

The strongest check of "nothing carries over": what the run reports after a cut is exactly
what a run of the part after the cut alone reports (same boxes, labels and probabilities; only
the track ids count on).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_helpers import read_jsonl, shared

from edge_fer.runtime.demo import demo_frames, load_face_photo
from edge_fer.runtime.runner import RunOptions, run_video
from edge_fer.runtime.scenecut import SCENE_CUT_THRESHOLD, SceneCutDetector, cut_score, thumbnail

CLIPS = ("00-1.avi", "01-2.avi")


def _gray(frames) -> list[np.ndarray]:
    return [f if f.ndim == 2 else cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]


def _decode(path: Path, n: int | None = None) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while n is None or len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    assert out, f"{path} does not decode"
    return out


def _write(path: Path, frames, fps: float) -> Path:
    """A lossless FFV1 .avi: a frame decodes the same in every clip it is cut into (MJPG's
    rate control makes a frame's quality depend on the frames before it)."""
    w = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (frames[0].shape[1], frames[0].shape[0])
    )
    if not w.isOpened():
        pytest.skip("this OpenCV build has no FFV1 encoder")
    for f in frames:
        w.write(f)
    w.release()
    return path


def _scores(frames, step: int = 1) -> np.ndarray:
    t = [thumbnail(g) for g in _gray(frames)]
    return np.array([cut_score(t[i - step], t[i]) for i in range(step, len(t))])


def _run(clip: Path, tmp_path: Path, name: str) -> tuple[dict, list[dict]]:
    events = tmp_path / f"{name}.jsonl"
    r = run_video(RunOptions(source=str(clip), events=str(events)), handle_signals=False)
    assert r.exit_code == 0
    return r.summary, read_jsonl(events)


def _faces_by_frame(lines: list[dict], first: int, offset: int) -> dict:
    """frame - offset -> [(box, label, probs)] for frames >= first; and the ids seen there."""
    return {
        ln["frame"] - offset: [(f["box"], f.get("label"), f.get("probs")) for f in ln["faces"]]
        for ln in lines
        if ln["frame"] >= first
    }


def _ids(lines: list[dict], lo: int, hi: int) -> set[int]:
    return {f["track"] for ln in lines if lo <= ln["frame"] < hi for f in ln["faces"]}


def _assert_same_faces(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a, "the frames with faces differ"
    for k, faces in a.items():
        assert len(faces) == len(b[k]), f"frame {k}"
        for (box1, lab1, p1), (box2, lab2, p2) in zip(faces, b[k]):
            assert box1 == pytest.approx(box2, abs=0.11), f"frame {k}"
            assert lab1 == lab2, f"frame {k}"
            for c in p1:  # the classifier batches differently in the two runs
                assert p1[c] == pytest.approx(p2[c], abs=2e-3), f"frame {k}"


# ---- the cut test on real footage -------------------------------------------------------------


@pytest.mark.shared(*(f"data/videos/{c}" for c in CLIPS))
def test_real_clips_have_no_cut_and_cuts_between_them_are_found():
    """The figures scenecut.py's doc and docs/runtime.md quote."""
    clips = [_decode(shared(f"data/videos/{c}")) for c in CLIPS]
    for frames in clips:
        assert _scores(frames).max() < 0.2  # consecutive frames (measured: 0.16 at most)
        assert _scores(frames, 4).max() < 0.36  # 3 of every 4 frames dropped (0.34)
        det = SceneCutDetector()
        assert not any(det.update(g) for g in _gray(frames)) and det.cuts == 0
    a, b = ([thumbnail(g) for g in _gray(f)[::4]] for f in clips)
    cuts = np.array(
        [cut_score(x, y) for x in a for y in b] + [cut_score(y, x) for x in a for y in b]
    )
    assert cuts.min() > SCENE_CUT_THRESHOLD  # every pair (measured: 0.48 at least)
    assert np.percentile(cuts, 50) > 0.6


def test_synthetic_motion_exposure_and_cuts():
    """No shared data: the demo clip (two portraits panning and zooming) has no cut; a pan of 5%
    of the width per frame and an exposure change are none either; a new scene is one."""
    photo, _ = load_face_photo()
    demo = list(demo_frames(photo, seconds=2.0))
    assert _scores(demo).max() < 0.2
    rng = np.random.default_rng(3)
    tex = cv2.GaussianBlur(rng.normal(128, 60, (480, 1200)).astype(np.float32), (0, 0), 5)
    tex = np.clip(tex, 0, 255).astype(np.uint8)
    pan = [tex[:, 16 * i : 16 * i + 320] for i in range(20)]  # 16 of 320 px a frame
    assert _scores(pan).max() < SCENE_CUT_THRESHOLD * 0.8
    g = _gray(demo[:1])[0].astype(np.float32)
    assert (
        cut_score(
            thumbnail(g.astype(np.uint8)), thumbnail(np.clip(g * 1.2 + 10, 0, 255).astype(np.uint8))
        )
        < 0.15
    )
    det = SceneCutDetector()
    seq = _gray(demo[:10]) + _gray(pan[:10])
    flags = [det.update(f) for f in seq]
    assert flags == [False] * 10 + [True] + [False] * 9 and det.cuts == 1
    det.reset()
    assert det.update(seq[0]) is False  # after reset the first frame is no cut
    with pytest.raises(ValueError):
        SceneCutDetector(0)


# ---- runs on clips cut together ---------------------------------------------------------------


@pytest.mark.shared(*(f"data/videos/{c}" for c in CLIPS))
def test_cut_between_real_clips_ends_every_track(tmp_path):
    a, b = (_decode(shared(f"data/videos/{c}"), 80) for c in CLIPS)
    cut = _write(tmp_path / "cut.avi", a + b, 20.0)
    after = _write(tmp_path / "after.avi", b, 20.0)
    s, lines = _run(cut, tmp_path, "cut")
    assert s["scene_cuts"] == 1 and s["scene_cut_frames"] == [80]
    before_ids, after_ids = _ids(lines, 0, 80), _ids(lines, 80, 160)
    assert before_ids and after_ids and not before_ids & after_ids  # new ids after the cut
    assert all(t["last_frame"] < 80 or t["first_frame"] >= 80 for t in s["tracks"])
    # nothing carries over (detector memory, tracks, smoothed labels): after the cut the run
    # reports exactly what a run of the second clip alone does
    s2, lines2 = _run(after, tmp_path, "after")
    assert s2["scene_cuts"] == 0
    _assert_same_faces(_faces_by_frame(lines, 80, 80), _faces_by_frame(lines2, 0, 0))


@pytest.mark.shared("data/videos/00-1.avi")
def test_real_clip_without_cuts_keeps_one_id(tmp_path):
    s, lines = _run(shared("data/videos/00-1.avi"), tmp_path, "whole")
    assert s["scene_cuts"] == 0 and s["scene_cut_frames"] == []
    assert _ids(lines, 0, 10**9) == {1} and s["frames_with_faces"] > 200


def _scene_b(photo: np.ndarray, n: int, size=(320, 240)) -> list[np.ndarray]:
    """Another scene: a lighter textured backdrop, the portrait larger, where the first
    scene's left face was (so without the cut the tracker would hand that face's id on)."""
    w, h = size
    rng = np.random.default_rng(1)
    tex = cv2.GaussianBlur(rng.normal(0, 50, (h, w)).astype(np.float32), (0, 0), 4)
    xx = np.mgrid[0:h, 0:w][1].astype(np.float32)
    bg = np.clip(200 - 80 * xx / w + tex, 0, 255).astype(np.uint8)
    bg = cv2.merge([bg, bg, np.clip(bg.astype(np.int16) - 20, 0, 255).astype(np.uint8)])
    ph = int(h * 0.8)
    pw = int(photo.shape[1] * ph / photo.shape[0])
    p = cv2.resize(photo, (pw, ph), interpolation=cv2.INTER_AREA)
    out = []
    for i in range(n):
        f = bg.copy()
        x0 = int(w * 0.1 + i * 0.5)
        f[h - ph :, x0 : x0 + pw] = p[:, : min(pw, w - x0)]
        out.append(f)
    return out


def test_cut_in_synthetic_clip_ends_every_track(tmp_path):
    """No shared data: the demo's portraits (scene A), then scene B, at 320x240 and 25 fps."""
    photo, _ = load_face_photo()
    a = [
        cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA)
        for f in demo_frames(photo, seconds=1.6)
    ]
    b = _scene_b(photo, 40)
    cut = _write(tmp_path / "cut.avi", a + b, 25.0)
    s, lines = _run(cut, tmp_path, "cut")
    n = len(a)
    assert s["scene_cuts"] == 1 and s["scene_cut_frames"] == [n]
    before_ids, after_ids = _ids(lines, 0, n), _ids(lines, n, 10**9)
    assert len(before_ids) == 2 and after_ids and not before_ids & after_ids
    _, lines2 = _run(_write(tmp_path / "after.avi", b, 25.0), tmp_path, "after")
    _assert_same_faces(_faces_by_frame(lines, n, n), _faces_by_frame(lines2, 0, 0))
    # scene A alone, twice as long: no cut, and its two faces keep their two ids
    s3, lines3 = _run(_write(tmp_path / "a.avi", a + a[::-1], 25.0), tmp_path, "a")
    assert s3["scene_cuts"] == 0 and _ids(lines3, 0, 10**9) == {1, 2}
    assert json.loads(json.dumps(s3))["scene_cut_frames"] == []


def test_scene_cut_option_turns_the_test_off_and_is_checked(tmp_path, capsys):
    """--scene-cut (RunOptions.scene_cut) reaches the run: 0 is off; a negative one is a
    one-line error naming the flag."""
    from edge_fer.cli.main import main
    from edge_fer.errors import UserError

    photo, _ = load_face_photo()
    a = [
        cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA)
        for f in demo_frames(photo, seconds=0.8)
    ]
    cut = _write(tmp_path / "cut.avi", a + _scene_b(photo, 20), 25.0)
    s, _ = _run(cut, tmp_path, "on")
    assert s["scene_cuts"] == 1 and s["scene_cut"] == SCENE_CUT_THRESHOLD
    summary, events = tmp_path / "off.json", tmp_path / "off.jsonl"
    argv = ["run", str(cut), "--scene-cut", "0", "--summary", str(summary)]
    assert main([*argv, "--events", str(events), "--quiet"]) == 0
    off = json.loads(summary.read_text())
    assert off["scene_cuts"] == 0 and off["scene_cut_frames"] == [] and off["scene_cut"] is None
    # without the test, the left face's track runs on into the second scene
    lines = read_jsonl(events)
    assert _ids(lines, 0, len(a)) & _ids(lines, len(a), 10**9)
    capsys.readouterr()
    assert main(["run", str(cut), "--scene-cut", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "edge-fer run: error: --scene-cut must be >= 0 and finite (0: off), got -1.0"
    with pytest.raises(UserError) as e:
        run_video(RunOptions(source=str(cut), scene_cut=float("nan")), handle_signals=False)
    assert e.value.param == "scene_cut"
    # the help's default is the library's
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"0: off (default {SCENE_CUT_THRESHOLD:g})" in help_text
