"""An output that fails once the run has started (a file size limit, a full disk, a folder
gone) loses nothing else: the text summary (tracks, frames/s, the outputs written) is still
printed, the other outputs are closed and listed, the failed one is marked, and the error is
one line with exit 2. And a video of which no frame decodes is a bad input for `run` as for
`detect`: one line, exit 2.

Real videos written by OpenCV, real `edge-fer` runs (a child process where a file size limit
is needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_helpers import count_frames, demo_faces_clip, read_jsonl

from edge_fer.cli.main import main
from edge_fer.errors import UserError

SIZE = (320, 240)
DEV_FULL = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return demo_faces_clip(tmp_path_factory.mktemp("clip") / "faces.avi", 30, SIZE)


def _errors(stderr: str) -> list[str]:
    """edge-fer's own lines on stderr, less warnings (the first-run compile notice)."""
    return [ln for ln in stderr.splitlines() if ln.startswith("edge-fer") and "warning" not in ln
            and "compiling" not in ln]  # fmt: skip


def _run(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _assert_measured(text: str, frames: int) -> None:
    """The text summary of a run that processed `frames` frames of two tracked faces."""
    assert f"frames   {frames} " in text, text
    assert "speed    " in text and "frames/s" in text, text
    assert sum(ln.startswith("track ") for ln in text.splitlines()) == 2, text


# ---- an output that fails --------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX file size limit")
def test_a_video_that_cannot_be_finished_still_prints_the_summary(clip, tmp_path):
    """`ulimit -f` reached: the video fails when it is finished (30 frames, below the disk
    check's 50). Before: the one error line and nothing else; the tracks, the rate and the
    events and summary written were not shown."""
    out, events, summary = tmp_path / "out.avi", tmp_path / "e.jsonl", tmp_path / "s.json"
    out.write_bytes(b"old video")
    # set in the child's Python: a preexec_fn is unsafe in a process with threads
    boot = (
        "import resource, runpy, sys; "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000)); "
        "sys.argv[0] = 'edge-fer'; runpy.run_module('edge_fer.cli.main', run_name='__main__')"
    )
    argv = ["run", clip, "--out", out, "--events", events, "--summary", summary]
    p = subprocess.run([sys.executable, "-c", boot, *map(str, argv)], capture_output=True,
                       text=True, timeout=300, check=False)  # fmt: skip
    assert p.returncode == 2, p.stderr
    line = (
        f"edge-fer run: error: cannot write video {out}: the file size limit is reached "
        "(ulimit -f: 100000 bytes)"
    )
    assert _errors(p.stderr) == [line], p.stderr
    _assert_measured(p.stdout, 30)
    lines = p.stdout.splitlines()
    assert f"video    {out}  [NOT WRITTEN]" in lines, p.stdout
    assert f"events   {events}" in lines and f"summary  {summary}" in lines, p.stdout
    assert out.read_bytes() == b"old video"
    assert len(read_jsonl(events)) == 30
    s = json.loads(summary.read_text())
    assert s["frames"] == 30 and not s["complete"] and "file size limit" in s["error"]
    assert s["outputs"] == {"events": str(events), "summary": str(summary)}
    failed = s["outputs_failed"]["video"]
    assert failed["path"] == str(out) and failed["state"] == "not written"


@DEV_FULL
def test_a_summary_that_cannot_be_written_is_still_printed(clip, tmp_path, capsys):
    """The summary file fails at the end (a full disk): before, the run measured and printed
    nothing but the error. The video and the events are complete and listed."""
    out, events = tmp_path / "out.avi", tmp_path / "e.jsonl"
    argv = ["run", clip, "--out", out, "--events", events, "--summary", "/dev/full"]
    rc, text, err = _run(argv, capsys)
    assert rc == 2
    assert err.splitlines() == [
        "edge-fer run: error: cannot write summary /dev/full: the disk is full"
    ], err
    _assert_measured(text, 30)
    lines = text.splitlines()
    assert "summary  /dev/full  [NOT WRITTEN]" in lines, text
    assert f"video    {out}" in lines and f"events   {events}" in lines, text
    assert count_frames(out) == 30 and len(read_jsonl(events)) == 30


@DEV_FULL
def test_outputs_that_fail_mid_run_are_marked_in_the_json_summary(clip, tmp_path, capsys):
    """The events and the summary both on a full disk, with --json: the summary printed says
    which outputs were not written and why; one error line, the other failure a warning."""
    out = tmp_path / "out.avi"
    argv = ["run", clip, "--out", out, "--events", "/dev/full", "--summary", "/dev/full", "--json"]
    rc, text, err = _run(argv, capsys)
    assert rc == 2
    assert err.splitlines() == [
        "edge-fer: warning: cannot write summary /dev/full: the disk is full",
        "edge-fer run: error: cannot write events file /dev/full: the disk is full",
    ], err
    s = json.loads(text)
    assert s["frames"] >= 1 and not s["complete"] and "events file" in s["error"]
    assert set(s["outputs_failed"]) == {"events", "summary"}
    assert {v["state"] for v in s["outputs_failed"].values()} == {"not written"}
    assert "events" not in s["outputs"] and "summary" not in s["outputs"]


def test_a_video_whose_folder_is_replaced_by_a_file_says_so(tmp_path):
    """The folder of --out removed and a file put in its place: the run wrote on to the end,
    then blamed "a file size limit, a quota or a disk error"."""
    from edge_fer.runtime.sinks import VideoSink

    folder = tmp_path / "outdir"
    folder.mkdir()
    sink = VideoSink(folder / "a.avi", 25.0, (64, 48), disk_check_every=5)
    for _ in range(2):
        sink.write(np.zeros((48, 64, 3), np.uint8))
    os.unlink(sink._tmp)
    folder.rmdir()
    folder.write_bytes(b"not a folder")
    with pytest.raises(UserError, match="its folder .*outdir was removed"):
        for _ in range(3):
            sink.write(np.zeros((48, 64, 3), np.uint8))
    sink.abort()


# ---- a video of no frames --------------------------------------------------------------------


def _no_frame_videos(folder: Path) -> list[Path]:
    """A video opened and released with no frame, and one cut off after its header (which
    declares 20 frames)."""
    empty = folder / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48)).release()
    full = folder / "full.avi"
    w = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    for i in range(20):
        w.write(np.full((48, 64, 3), 10 * i, np.uint8))
    w.release()
    data = full.read_bytes()
    cut = folder / "cut.avi"
    cut.write_bytes(data[: data.index(b"movi") + 4])  # the header, no frame
    return [empty, cut]


def test_a_video_of_no_frames_is_one_line_exit_2_for_run_and_detect(tmp_path, capsys):
    """`run` exited 1 ("the source ended early", after a warning: two lines) where `detect`
    exited 2 for the same file. A file with no frame is a bad input: one line naming it, exit
    2, before any output is opened (an existing --out stays, no summary is written)."""
    out, summary = tmp_path / "o.avi", tmp_path / "s.json"
    out.write_bytes(b"old video")
    for video in _no_frame_videos(tmp_path):
        rc, _, err = _run(["run", video, "--out", out, "--summary", summary], capsys)
        lines = err.splitlines()
        assert rc == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"edge-fer run: error: source {video}: no frame could be "
                                   "decoded"), err  # fmt: skip
        assert out.read_bytes() == b"old video" and not summary.exists()
        rc, _, err = _run(["detect", video], capsys)
        assert rc == 2 and len(err.splitlines()) == 1 and str(video) in err, err
