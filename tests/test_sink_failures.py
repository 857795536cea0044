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
    out.write_bytes(b"old video")  # not an earlier run's: replaced only with --force (below)
    # set in the child's Python: a preexec_fn is unsafe in a process with threads
    boot = (
        "import resource, runpy, sys; "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000)); "
        "sys.argv[0] = 'edge-fer'; runpy.run_module('edge_fer.cli.main', run_name='__main__')"
    )
    argv = ["run", clip, "--out", out, "--events", events, "--summary", summary, "--force"]
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
    # the video got no frame: the events failed on the first one (said as not written too)
    assert set(s["outputs_failed"]) == {"events", "summary", "video"}
    assert {v["state"] for v in s["outputs_failed"].values()} == {"not written"}
    assert "events" not in s["outputs"] and "summary" not in s["outputs"]


# ---- an output that fails: the header says what happened -------------------------------------


@pytest.fixture(scope="module")
def clip24(tmp_path_factory) -> Path:
    return demo_faces_clip(tmp_path_factory.mktemp("clip") / "faces.avi", 24)


@DEV_FULL
def test_summary_header_when_an_output_fails_after_every_frame(clip24, tmp_path, capsys):
    """The summary file fails at the end (a full disk) after all 24 frames were processed: the
    header said `[incomplete]`, as for a truncated file. Now it says the source was complete
    and an output failed, and the summary says so too (`source_complete`)."""
    events = tmp_path / "e.jsonl"
    rc, text, err = _run(["run", clip24, "--events", events, "--summary", "/dev/full"], capsys)
    assert rc == 2, err
    head = text.splitlines()[0]
    assert head.endswith("[source complete; an output failed]"), text
    assert "frames   24 " in text and "summary  /dev/full  [NOT WRITTEN]" in text, text
    assert len(events.read_text().splitlines()) == 24  # nothing lost
    rc, text, err = _run(["run", clip24, "--summary", "/dev/full", "--json"], capsys)
    s = json.loads(text)
    assert rc == 2 and s["source_complete"] and not s["complete"] and s["frames"] == 24


@DEV_FULL
def test_summary_header_when_an_output_fails_mid_run(clip24, capsys):
    """The events file fails on the first frame: the run stops there; the header says it
    stopped because an output failed, not that the source was cut short."""
    rc, text, err = _run(["run", clip24, "--events", "/dev/full"], capsys)
    assert rc == 2, err
    assert text.splitlines()[0].endswith("[stopped after 1 frame: an output failed]"), text
    assert not any(ln.startswith("stage ms") for ln in text.splitlines()), text  # was empty
    rc, text, _ = _run(["run", clip24, "--events", "/dev/full", "--json"], capsys)
    s = json.loads(text)
    assert not s["source_complete"] and not s["complete"]


def test_a_complete_run_and_a_truncated_one_keep_their_words(clip24, tmp_path, capsys):
    rc, text, _ = _run(["run", clip24], capsys)
    assert rc == 0 and text.splitlines()[0].endswith("[complete]"), text
    cut = tmp_path / "cut.avi"
    data = clip24.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    rc, text, _ = _run(["run", cut, "--json"], capsys)
    s = json.loads(text)
    assert rc == 1 and not s["source_complete"] and not s["complete"]
    rc, text, _ = _run(["run", cut], capsys)
    assert text.splitlines()[0].endswith("[incomplete]"), text


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


def test_a_video_interrupted_as_a_frame_is_encoded_is_kept(tmp_path):
    """A Ctrl-C during the encoder's call is raised as the call returns, before the frame is
    counted: the file held one frame more than counted and close() threw the video away as
    "cut short" (CI: `detect --draw` interrupted left no video)."""
    from edge_fer.runtime.sinks import VideoSink

    class InterruptedAfterEncoding:  # OpenCV's writer, as a signal during its write() leaves it
        def __init__(self, real):
            self.real = real

        def write(self, image):
            self.real.write(image)
            raise KeyboardInterrupt

        def release(self):
            self.real.release()

    out = tmp_path / "drawn.avi"
    sink = VideoSink(out, 25.0, (64, 48))
    for i in range(3):
        sink.write(np.full((48, 64, 3), 40 * i, np.uint8))
    sink.writer = InterruptedAfterEncoding(sink.writer)
    with pytest.raises(KeyboardInterrupt):
        sink.write(np.zeros((48, 64, 3), np.uint8))
    sink.close()
    assert sink.placed and count_frames(out) == 4


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
    out.write_bytes(b"old video")  # not an earlier run's: --force lets the run replace it
    for video in _no_frame_videos(tmp_path):
        rc, _, err = _run(["run", video, "--out", out, "--summary", summary, "--force"], capsys)
        lines = err.splitlines()
        assert rc == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"edge-fer run: error: source {video}: no frame could be "
                                   "decoded"), err  # fmt: skip
        assert out.read_bytes() == b"old video" and not summary.exists()
        rc, _, err = _run(["detect", video], capsys)
        assert rc == 2 and len(err.splitlines()) == 1 and str(video) in err, err


# ---- annotated images and events cut short (a file size limit) -------------------------------


def _run_limited(argv, limit: int) -> subprocess.CompletedProcess:
    """`edge-fer ARGV` in a child process whose files may not grow past `limit` bytes (ulimit
    -f), set in the child's Python as in the video test above."""
    boot = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
        "sys.argv[0] = 'edge-fer'; runpy.run_module('edge_fer.cli.main', run_name='__main__')"
    )
    return subprocess.run([sys.executable, "-c", boot, *map(str, argv)], capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX file size limit")
def test_annotated_images_that_fail_mid_run_keep_the_ones_written(tmp_path):
    """`--out DIR/` for a folder of photos, the third too big for the file size limit: the
    summary is still printed, `outputs_failed` names the folder ("incomplete"), one error
    line, exit 2; the two images written before are whole, nothing half-written is left."""
    photos, out = tmp_path / "photos", tmp_path / "annotated"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "d.png"):
        cv2.imwrite(str(photos / name), np.full((120, 160, 3), 90, np.uint8))
    big = rng.integers(0, 256, (600, 800, 3), np.uint8)  # noise: a PNG of about 1.4 MB
    cv2.imwrite(str(photos / "c.png"), big)
    limit = 200_000
    assert (photos / "c.png").stat().st_size > limit
    p = _run_limited(["run", photos, "--out", f"{out}/", "--json"], limit)
    assert p.returncode == 2, p.stderr
    line = (
        f"edge-fer run: error: cannot write --out {out / 'c.png'}: the file size limit "
        "(ulimit -f) is reached"
    )
    assert _errors(p.stderr) == [line], p.stderr
    s = json.loads(p.stdout)
    assert s["frames"] >= 2 and not s["complete"] and "c.png" in s["error"]
    failed = s["outputs_failed"]["annotated"]
    assert failed["path"] == str(out) and failed["state"] == "incomplete", failed
    assert "annotated" not in s["outputs"]
    left = sorted(f.name for f in out.iterdir())
    assert left == [".edge-fer-annotated", "a.png", "b.png"], left  # no temporary file
    for name in ("a.png", "b.png"):
        img = cv2.imread(str(out / name))
        assert img is not None and img.shape == (120, 160, 3), name


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX file size limit")
def test_an_events_file_cut_short_ends_at_a_whole_line(clip, tmp_path):
    """The events file reaches the file size limit mid-line: the run stops with the summary
    (`--json`: standard output, a pipe the limit does not apply to), `outputs_failed` says
    "incomplete", one error line, exit 2, and the file holds whole JSON lines only."""
    events = tmp_path / "e.jsonl"
    limit = 4_000
    p = _run_limited(["run", clip, "--events", events, "--json"], limit)
    assert p.returncode == 2, p.stderr
    line = (
        f"edge-fer run: error: cannot write events file {events}: the file size limit "
        "(ulimit -f) is reached"
    )
    assert _errors(p.stderr) == [line], p.stderr
    s = json.loads(p.stdout)
    assert not s["complete"] and "events file" in s["error"]
    failed = s["outputs_failed"]["events"]
    assert failed["path"] == str(events) and failed["state"] == "incomplete", failed
    data = events.read_bytes()
    assert 0 < len(data) <= limit and data.endswith(b"\n"), data[-80:]
    records = [json.loads(ln) for ln in data.decode().splitlines()]  # each line whole
    assert 1 <= len(records) < 30 and s["frames"] >= len(records)


# ---- photos skipped: the same exit code from run_video, run and bench ------------------------


def test_photos_skipped_exit_1_from_run_video_run_and_bench(tmp_path, capsys):
    """A folder with one corrupt photo among good ones: `run` exited 1 (decided in the command
    line), while `run_video(...)` returned exit_code 0, so `edge-fer bench` on the folder
    exited 0 although it exits "as run". Now the result says 1 and both commands exit with it."""
    from edge_fer.runtime.runner import RunOptions, run_video

    folder = tmp_path / "shots"
    folder.mkdir()
    for i, name in enumerate(("a.png", "c.png")):
        img = np.random.default_rng(i).integers(0, 256, (48, 64, 3), np.uint8)
        assert cv2.imwrite(str(folder / name), img)
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    res = run_video(RunOptions(source=str(folder)), warn=lambda _msg: None)
    assert res.exit_code == 1 and not res.ended_early
    assert res.summary["frames"] == 2 and res.summary["source"]["skipped_files"] == 1
    assert res.summary["complete"]
    last = ("edge-fer run: error: 1 of 3 image files could not be used and was skipped (listed "
            "above); the others were processed")  # fmt: skip
    rc, _, err = _run(["run", folder, "--quiet"], capsys)
    assert rc == 1 and err.splitlines()[-1] == last, err
    assert sum(ln.startswith("edge-fer") and "error" in ln for ln in err.splitlines()) == 1, err
    out = tmp_path / "b.json"
    rc, _, err = _run(["bench", folder, "--backend", "onnxruntime", "--json", out], capsys)
    assert rc == 1, err
    report = json.loads(out.read_text())
    assert [r["exit_code"] for r in report["results"]] == [1]


def test_a_video_that_never_got_a_frame_is_said_when_another_output_fails(clip, tmp_path):
    """The events failed on the first frame: the --out video asked for was in neither
    `outputs` nor `outputs_failed`, and the text summary had no line for it."""
    video, summary = tmp_path / "v.mp4", tmp_path / "s.json"
    p = subprocess.run(
        [sys.executable, "-m", "edge_fer.cli.main", "run", str(clip), "--events", "/dev/full",
         "--summary", str(summary), "--out", str(video)],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr
    failed = json.loads(summary.read_text())["outputs_failed"]
    assert failed["video"] == {
        "path": str(video),
        "state": "not written",
        "error": "the run stopped before its first frame was written",
    }
    assert f"video    {video}  [NOT WRITTEN]" in p.stdout + p.stderr
    assert not video.exists()
