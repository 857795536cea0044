"""`--classify-every N`: each face classified on one frame in N, its label carried between.

A real clip (the bundled demo portrait drifting over a background, `edge-fer bench`'s synthetic
clip), the bundled cascade, verifier and classifier, run once per setting through `run_video`.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections import defaultdict

import numpy as np
import pytest
from runtime_helpers import read_jsonl

from edge_fer.cli.main import main
from edge_fer.runtime.bench import synthetic_clip
from edge_fer.runtime.runner import RunOptions, run_video
from edge_fer.runtime.smoothing import TrackSmoother

FRAMES = 45


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, tuple[dict, list[dict]]]:
    """{N: (summary, events)} for N = 1 and 3 on the same 3-face clip."""
    tmp = tmp_path_factory.mktemp("every")
    clip = tmp / "clip.mp4"
    synthetic_clip(clip, 640, 360, faces=3, frames=FRAMES, fps=30.0, seed=1)
    out = {}
    for n in (1, 3):
        events = tmp / f"e{n}.jsonl"
        opts = RunOptions(source=str(clip), events=str(events), classify_every=n)
        summary = run_video(opts, handle_signals=False).summary
        out[n] = (summary, read_jsonl(events))
    return out


def _per_track(events: list[dict]) -> dict[int, list[dict]]:
    faces = defaultdict(list)
    for e in events:
        for f in e["faces"]:
            faces[f["track"]].append({**f, "frame": e["frame"]})
    return faces


def test_every_face_is_classified_on_every_frame_by_default(runs):
    s, _events = runs[1]
    assert s["classify_every"] == 1
    assert s["faces"] >= 3 * (FRAMES - 5)  # the three faces are found
    assert s["classified_faces"] == s["faces"] - s["held_faces"]


def test_one_frame_in_three_classified_and_labels_carried_between(runs):
    s, events = runs[3]
    assert s["classify_every"] == 3
    tracks = _per_track(events)
    assert len(tracks) >= 3
    # a third of the faces, give or take each track's first frame and its phase
    assert abs(s["classified_faces"] - s["faces"] / 3) <= len(tracks) + 1
    for faces in tracks.values():
        assert "label" in faces[0]  # a new face is labelled on its first frame
        assert all("label" in f for f in faces)
        # the probabilities change only on the frames the face is classified: every third
        changes = [
            b["frame"]
            for a, b in itertools.pairwise(faces)
            if a["probs"] != b["probs"] and b["frame"] == a["frame"] + 1
        ]
        assert changes, "the label never updated"
        # (a multiple of 3: a classification that left the rounded probabilities as they were
        # shows no change)
        assert all((b - a) % 3 == 0 for a, b in itertools.pairwise(changes))


def test_faces_born_together_take_turns(runs):
    """Three faces on the first frame: after it, one face a frame is classified, not three
    every third frame (the classifier's work spreads over the frames)."""
    _, events = runs[3]
    per_frame = defaultdict(int)
    tracks = _per_track(events)
    for faces in tracks.values():
        for a, b in itertools.pairwise(faces):
            if a["probs"] != b["probs"]:
                per_frame[b["frame"]] += 1
    assert per_frame and max(per_frame.values()) <= 2


def test_labels_agree_with_classifying_every_frame(runs):
    """The smoothing keeps its time constant in frames, so the labels are nearly the same."""
    labels = {}
    for n in (1, 3):
        labels[n] = {(e["frame"], f["track"]): f["label"] for e in runs[n][1] for f in e["faces"]}
    common = set(labels[1]) & set(labels[3])
    assert len(common) >= 3 * (FRAMES - 5)
    agree = np.mean([labels[1][k] == labels[3][k] for k in common])
    assert agree >= 0.8


def test_carry_keeps_the_label_without_counting_it_held():
    sm = TrackSmoother(("a", "b"), alpha=0.5)
    assert sm.carry(1, 0, 0.0) is None  # never classified: nothing to carry
    sm.update(1, np.array([0.2, 0.8]), 0, 0.0)
    assert np.allclose(sm.carry(1, 1, 0.05), [0.2, 0.8])
    (t,) = sm.summary(0.05)
    assert t["frames"] == 2 and t["held_frames"] == 0


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "x"])
def test_a_bad_value_is_one_line_and_exit_2(value, tmp_path, capsys):
    summary, demo = tmp_path / "s.json", tmp_path / "demo"
    argv = ["run", "--demo", "--demo-dir", str(demo), "--classify-every", value]
    try:
        rc = main([*argv, "--summary", str(summary)])
    except SystemExit as exc:  # argparse's own checks (not an integer) exit from the parser
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and "--classify-every" in err and "Traceback" not in err
    # ... before the demo clip is made
    assert len(err.strip().splitlines()) == 1 and not summary.exists() and not demo.exists()


def test_summary_records_the_setting(runs):
    s, _ = runs[3]
    assert json.loads(json.dumps(s))["classify_every"] == 3


def test_the_text_summary_says_when_the_classifier_held_a_live_source_back(runs):
    from edge_fer.runtime.runner import format_summary

    s = copy.deepcopy(runs[1][0])  # a real summary, as if a camera had dropped frames
    s["dropped_frames"] = 12
    det = s["stage_ms"]["detect"]["p50"]
    s["stage_ms"]["classify"]["p50"] = det + 5.0
    assert "--classify-every 2 or 3" in format_summary(s)
    s["stage_ms"]["classify"]["p50"] = det / 2  # the detector was slower: no such hint
    assert "--classify-every" not in format_summary(s)
    s3 = copy.deepcopy(runs[3][0])
    s3["dropped_frames"] = 12
    s3["stage_ms"]["classify"]["p50"] = s3["stage_ms"]["detect"]["p50"] + 5.0
    text = format_summary(s3)  # already classifying less: the setting is shown instead
    assert "--classify-every 2" not in text and "one frame in 3" in text
