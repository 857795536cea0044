"""`edge-fer run` and `bench` flags that did nothing without a word, figures that said more
than the run did, and messages that misled (QA, 2026-12-06). Each case is what a user typed:

- flags a source kind does not read are said to be ignored (`bench --synthetic --input-rate`,
  `run clip.avi --reconnect-timeout`); `--precision` with `--model` is refused; `--force`
  with nothing for it to replace, and a `--min-size` no face fits, are warned about;
- a run that `--max-frames` stopped with frames left is not `complete`/`source_complete`;
- error lines stay one line (a name holding a newline), and say how to name a file called
  `7` or `a ! b.avi`; the `--out IMAGE` hint keeps the folder, the truncation warning counts
  frames as the events number them.

Real clips and photos written with OpenCV, a tiny real ONNX classifier, real `edge-fer` runs
(in this process through `edge_fer.cli.main`, or a child process where the name is not
UTF-8)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from processes import assert_one_error_line, run_cli, run_main, said
from runtime_helpers import make_tiny_model, mjpg_avi

FILE_WORDS = "does not apply to a video file (it plays at its own size and rate); ignored"
RECONNECT = (
    "edge-fer: warning: --reconnect-timeout applies to live sources (cameras, streams, "
    "pipelines), not to {}; ignored"
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A real 160x120 MJPG clip of 40 frames (its header counts them)."""
    return mjpg_avi(tmp_path_factory.mktemp("clip") / "clip.avi", 40)


def _photos(folder: Path, n: int = 3) -> Path:
    folder.mkdir()
    for i in range(n):
        img = np.random.default_rng(i).integers(0, 256, (48, 64, 3), np.uint8)
        assert cv2.imwrite(str(folder / f"p{i}.png"), img)
    return folder


def _warnings(err: str) -> list[str]:
    return [ln for ln in said(err) if ln.startswith("edge-fer: warning: ")]


# ---- 1. flags that did nothing, unsaid -------------------------------------------------------


def test_bench_synthetic_says_the_flags_its_video_file_does_not_read(tiny_model, tmp_path,
                                                                   capsys):  # fmt: skip
    """`bench --synthetic` warned about nothing: --input-rate, --input-width, --sequence and
    --reconnect-timeout were dropped (SourceArgs.ignored ran only for a SOURCE)."""
    out = tmp_path / "b1.json"
    argv = ["bench", "--synthetic", "64x64", "--frames", "5", "--input-rate", "5", "--sequence",
            "--input-width", "100", "--reconnect-timeout", "3", "--backend", "onnxruntime",
            "--model", tiny_model, "--json", out]  # fmt: skip
    rc, _, err = run_main(argv, capsys)
    assert rc == 0, err
    assert _warnings(err) == [
        f"edge-fer: warning: --input-width {FILE_WORDS}",
        f"edge-fer: warning: --input-rate {FILE_WORDS}",
        (
            "edge-fer: warning: --sequence applies to images (a folder, glob or photo), not to "
            "a video file; ignored"
        ),
        RECONNECT.format("a video file"),
    ], err
    assert json.loads(out.read_text())["results"][0]["frames"] == 5


def test_reconnect_timeout_on_a_file_or_photos_is_said_to_be_ignored(clip, tiny_model, tmp_path,
                                                                     capsys):  # fmt: skip
    """Only --input-rate was said; --reconnect-timeout (live sources only) went unsaid."""
    base = ["--model", tiny_model, "--quiet", "--max-frames", "1"]
    rc, _, err = run_main(["run", clip, *base, "--reconnect-timeout", "5", "--input-rate", "5"],
                          capsys)  # fmt: skip
    assert rc == 0, err
    assert _warnings(err) == [f"edge-fer: warning: --input-rate {FILE_WORDS}",
                              RECONNECT.format("a video file")], err  # fmt: skip
    photos = _photos(tmp_path / "shots")
    rc, _, err = run_main(["run", photos, *base, "--reconnect-timeout", "0"], capsys)
    assert rc == 0 and _warnings(err) == [RECONNECT.format("images (a folder, glob or photo)")], err
    rc, _, err = run_main(["run", clip, *base], capsys)  # not given: nothing to say
    assert rc == 0 and _warnings(err) == [], err


def test_precision_with_a_model_is_refused_naming_both(clip, tiny_model, tmp_path, capsys):
    """--precision picks a bundled model: with --model the run was FP32 without a word."""
    from edge_fer.errors import UserError
    from edge_fer.runtime.runner import RunOptions, check_run_options

    for cmd in (["run", clip, "--max-frames", "2"],
                ["bench", "--synthetic", "64x64", "--frames", "2", "--json", tmp_path / "b.json"]):  # fmt: skip
        rc, _, err = run_main([*cmd, "--precision", "int8", "--model", tiny_model], capsys)
        assert rc == 2, err
        assert_one_error_line(err, "--precision int8", f"--model {tiny_model}")
    assert not (tmp_path / "b.json").exists()
    with pytest.raises(UserError) as e:
        check_run_options(RunOptions(source="x.mp4", model=str(tiny_model), precision="fp32"))
    assert e.value.param == "precision"
    check_run_options(RunOptions(source="x.mp4", model=str(tiny_model)))  # auto: fine


def test_force_with_nothing_for_it_to_replace_is_said(clip, tiny_model, tmp_path, capsys):
    """--force applies to --out IMAGE or VIDEO, --events and --summary: without any of them it
    did nothing, unsaid (as --demo-dir without --demo did before it was refused). A video
    --out was replaced anyway until 2026-12-06 (said so); now --force applies to it too."""
    base = ["run", clip, "--model", tiny_model, "--quiet", "--max-frames", "2", "--force"]
    folder = f"{tmp_path / 'ann'}/"
    for extra, why in (([], "none is given"),
                       (["--out", folder], "a folder, only ever replaces")):  # fmt: skip
        rc, _, err = run_main([*base, *extra], capsys)
        assert rc == 0, err
        (line,) = _warnings(err)
        assert line.startswith("edge-fer: warning: --force applies to an existing --out IMAGE "
                               "or VIDEO, --events or --summary file; ") and why in line, err  # fmt: skip
    for extra in (["--out", tmp_path / "a.mp4"], ["--events", tmp_path / "e.jsonl"],
                  ["--summary", tmp_path / "s.json"]):  # fmt: skip
        rc, _, err = run_main([*base, *extra], capsys)
        assert rc == 0 and _warnings(err) == [], err


def test_a_min_size_no_face_fits_is_said_once_the_frame_size_is_known(clip, tiny_model, capsys):
    """--min-size 100000 on 160x120 frames: 0 faces, exit 0, no word (--max-size 5 is
    refused). Now one warning line naming the flag and the frame size; the run goes on."""
    base = ["run", clip, "--model", tiny_model, "--quiet", "--max-frames", "2"]
    rc, _, err = run_main([*base, "--min-size", "100000"], capsys)
    assert rc == 0, err
    (line,) = _warnings(err)
    assert line.startswith("edge-fer: warning: --min-size 100000: no face can be found in "
                           "frames of 160x120: "), err  # fmt: skip
    rc, _, err = run_main([*base, "--min-size", "0.5"], capsys)  # fits: nothing to say
    assert rc == 0 and _warnings(err) == [], err


# ---- 2. --max-frames is not the source's end -------------------------------------------------


def test_a_run_stopped_by_max_frames_is_not_source_complete(clip, tiny_model, tmp_path, capsys):
    """30 of a clip's 40 frames said `[complete]`, "complete": true and "source_complete":
    true; 2 of 3 photos too. Now the header and the summary say the limit stopped it."""
    s_path = tmp_path / "s.json"
    photos = _photos(tmp_path / "shots")
    for source, n, total in ((clip, 30, 40), (photos, 2, 3)):
        argv = ["run", source, "--model", tiny_model, "--summary", s_path]
        rc, out, err = run_main([*argv, "--max-frames", n], capsys)
        assert rc == 0, err
        assert out.splitlines()[0].endswith(f"[stopped at --max-frames {n}]"), out
        s = json.loads(s_path.read_text())
        assert s["frames"] == n and s["max_frames"] == n and s["stopped_at_max_frames"], s
        assert not s["complete"] and not s["source_complete"], s
        # a limit the source does not reach, or one of exactly its length: read to its end
        for limit in (total, total + 5):
            rc, out, err = run_main([*argv, "--max-frames", limit], capsys)
            s = json.loads(s_path.read_text())
            assert rc == 0 and out.splitlines()[0].endswith("[complete]"), out
            assert s["frames"] == total and s["complete"] and s["source_complete"], s
            assert s["max_frames"] == limit and not s["stopped_at_max_frames"]
    rc, out, err = run_main(["run", clip, "--model", tiny_model, "--json"], capsys)
    s = json.loads(out)
    assert rc == 0 and s["max_frames"] is None and s["complete"] and s["source_complete"]


# ---- 3, 4. error lines ---------------------------------------------------------------------


def test_a_non_utf8_name_holding_a_newline_is_one_error_line(clip, tmp_path):
    """`source v\\xff` NEWLINE `name.avi: ...` was two lines (imageio.cv_name)."""
    name = os.fsdecode(b"v\xff\nname.avi")
    try:
        shutil.copy(clip, tmp_path / name)
    except (OSError, UnicodeError):
        pytest.skip("this file system takes no such name")
    proc = run_cli("run", tmp_path / name)  # from the checkout, as its code
    assert proc.returncode == 2, proc.stderr
    assert_one_error_line(proc.stderr, f"source '{tmp_path}/v\\xff\\nname.avi': the file name "
                                       "is not valid UTF-8")  # fmt: skip


@pytest.mark.parametrize(
    ("name", "as_file"), [("7", "./7"), ("a ! b.avi", "file://a%20%21%20b.avi")]
)
def test_a_camera_or_pipeline_named_like_a_file_here_says_how_to_name_the_file(
    name, as_file, clip, tiny_model, tmp_path, capsys, monkeypatch
):
    """`7` is a camera and `a ! b.avi` a GStreamer pipeline, as documented, even where a file
    of that name exists; the error now says how to name the file, and that name works."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(clip, name)
    rc, _, err = run_main(["run", name, "--model", tiny_model, "--quiet"], capsys)
    assert rc == 2, err
    assert_one_error_line(err, f"source {name}: ", f"; {name} is also a file here: to read it, "
                                                    f"write {as_file}")  # fmt: skip
    rc, _, err = run_main(["run", as_file, "--model", tiny_model, "--quiet", "--max-frames", "2"],
                          capsys)  # fmt: skip
    assert rc == 0, err


# ---- 5. texts --------------------------------------------------------------------------------


def test_out_image_hint_keeps_the_folder(clip, tiny_model, tmp_path, capsys, monkeypatch):
    """`--out photos/p0.jpg` for a video suggested `--out p0/`, elsewhere than asked."""
    monkeypatch.chdir(tmp_path)
    Path("photos").mkdir()
    rc, _, err = run_main(["run", clip, "--model", tiny_model, "--out", "photos/p0.jpg"], capsys)
    assert rc == 2, err
    assert_one_error_line(err, "give a folder (--out photos/p0/) or a video")


def test_truncation_warning_numbers_frames_as_the_events_do(clip, tiny_model, tmp_path, capsys):
    """The warning said "the file ends after frame 13 of the 25", counting from 1 where the
    events count from 0: the last frame's number, and how many frames that is, now agree."""
    cut = tmp_path / "cut.avi"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    argv = ["run", cut, "--model", tiny_model, "--quiet", "--summary", tmp_path / "s.json"]
    rc, _, err = run_main(argv, capsys)
    assert rc == 1, err
    (line,) = _warnings(err)
    m = re.search(r": the file ends after frame (\d+), the (\d+)(st|nd|rd|th) of the 40 its "
                  r"header declares \(truncated or corrupt\)$", line)  # fmt: skip
    assert m, line
    last, count = int(m.group(1)), int(m.group(2))
    s = json.loads((tmp_path / "s.json").read_text())
    assert count == last + 1 == s["frames"], (line, s["frames"])
