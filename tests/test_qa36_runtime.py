"""QA pass 36 on the runtime side (run, detect, bench), as a new user meets it: what each
command says when it exits 1, when an output fails, and on odd inputs and conflicting flags.

Real files (photos and clips written with OpenCV), real models, real `edge-fer` runs through
`edge_fer.cli.main`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_helpers import demo_faces_clip

from edge_fer.cli.main import main

DEV_FULL = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


def _run(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _lines(stderr: str) -> list[str]:
    """edge-fer's own error lines (not its warnings, not the first-run compile notice)."""
    return [ln for ln in stderr.splitlines() if ln.startswith("edge-fer") and ": error: " in ln]


def _said(stderr: str) -> list[str]:
    """Every line on stderr but the first-run compile notice (a fresh kernel cache)."""
    return [ln for ln in stderr.splitlines() if "compiling the detector" not in ln]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return demo_faces_clip(tmp_path_factory.mktemp("clip") / "faces.avi", 24)


def _photos(folder: Path, bad: bool = True) -> Path:
    folder.mkdir()
    for i, name in enumerate(("a.png", "c.png")):
        img = np.random.default_rng(i).integers(0, 256, (48, 64, 3), np.uint8)
        assert cv2.imwrite(str(folder / name), img)
    if bad:
        (folder / "b.jpg").write_bytes(b"")  # a zero-byte photo among good ones
    return folder


# ---- exit 1: bench says why, in run's words --------------------------------------------------


def test_bench_exit_1_ends_with_the_line_run_ends_with(tmp_path, capsys):
    """A folder with a zero-byte photo: `run` exits 1 with a last line saying why; `bench`
    exited 1 too but said nothing after the skip warning. Now both end with the same line,
    from one helper (RunResult.why_exit_1), and the results file keeps it."""
    folder = _photos(tmp_path / "shots")
    why = "1 of 3 image files could not be used and was skipped (listed above); the others were processed"
    rc, _, err = _run(["run", folder, "--quiet"], capsys)
    assert rc == 1 and _lines(err) == [f"edge-fer run: error: {why}"], err
    out = tmp_path / "b.json"
    rc, table, err = _run(["bench", folder, "--backend", "onnxruntime", "--json", out], capsys)
    assert rc == 1, err
    assert _lines(err) == [f"edge-fer bench: error: {why}"], err
    assert err.splitlines()[-1] == f"edge-fer bench: error: {why}", err  # after "saved"
    assert "onnxruntime" in table
    report = json.loads(out.read_text())
    assert [(r["exit_code"], r["exit_reason"]) for r in report["results"]] == [(1, why)]


def test_bench_of_a_truncated_clip_says_the_source_ended_early(clip, tmp_path, capsys):
    """The other cause of exit 1: a file that ends before the frames its header declares."""
    cut = tmp_path / "cut.avi"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    rc, _, err = _run(["bench", cut, "--backend", "onnxruntime", "--json", tmp_path / "b.json"],
                      capsys)  # fmt: skip
    assert rc == 1, err
    (line,) = _lines(err)
    assert line.startswith(f"edge-fer bench: error: the source ended early: {cut}: "), err


def test_bench_that_exits_0_prints_no_error(tmp_path, capsys):
    folder = _photos(tmp_path / "shots", bad=False)
    rc, _, err = _run(["bench", folder, "--backend", "onnxruntime", "--json", tmp_path / "b.json"],
                      capsys)  # fmt: skip
    assert rc == 0 and _lines(err) == [], err
    report = json.loads((tmp_path / "b.json").read_text())
    assert [r["exit_reason"] for r in report["results"]] == [None]


# ---- an output that fails: the header says what happened -------------------------------------


@DEV_FULL
def test_summary_header_when_an_output_fails_after_every_frame(clip, tmp_path, capsys):
    """The summary file fails at the end (a full disk) after all 24 frames were processed: the
    header said `[incomplete]`, as for a truncated file. Now it says the source was complete
    and an output failed, and the summary says so too (`source_complete`)."""
    events = tmp_path / "e.jsonl"
    rc, text, err = _run(["run", clip, "--events", events, "--summary", "/dev/full"], capsys)
    assert rc == 2, err
    head = text.splitlines()[0]
    assert head.endswith("[source complete; an output failed]"), text
    assert "frames   24 " in text and "summary  /dev/full  [NOT WRITTEN]" in text, text
    assert len(events.read_text().splitlines()) == 24  # nothing lost
    rc, text, err = _run(["run", clip, "--summary", "/dev/full", "--json"], capsys)
    s = json.loads(text)
    assert rc == 2 and s["source_complete"] and not s["complete"] and s["frames"] == 24


@DEV_FULL
def test_summary_header_when_an_output_fails_mid_run(clip, capsys):
    """The events file fails on the first frame: the run stops there; the header says it
    stopped because an output failed, not that the source was cut short."""
    rc, text, err = _run(["run", clip, "--events", "/dev/full"], capsys)
    assert rc == 2, err
    assert text.splitlines()[0].endswith("[stopped after 1 frame: an output failed]"), text
    assert not any(ln.startswith("stage ms") for ln in text.splitlines()), text  # was empty
    rc, text, _ = _run(["run", clip, "--events", "/dev/full", "--json"], capsys)
    s = json.loads(text)
    assert not s["source_complete"] and not s["complete"]


def test_a_complete_run_and_a_truncated_one_keep_their_words(clip, tmp_path, capsys):
    rc, text, _ = _run(["run", clip], capsys)
    assert rc == 0 and text.splitlines()[0].endswith("[complete]"), text
    cut = tmp_path / "cut.avi"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    rc, text, _ = _run(["run", cut, "--json"], capsys)
    s = json.loads(text)
    assert rc == 1 and not s["source_complete"] and not s["complete"]
    rc, text, _ = _run(["run", cut], capsys)
    assert text.splitlines()[0].endswith("[incomplete]"), text


# ---- odd inputs ------------------------------------------------------------------------------


def test_detect_names_a_uri_as_given(tmp_path, capsys, monkeypatch):
    """`detect rtsp://cam/1` said `rtsp:/cam/1: no such file` (the name collapsed as a
    path); a file:// URI, which `run` reads, was not found either."""
    monkeypatch.chdir(tmp_path)
    folder = _photos(tmp_path / "shots", bad=False)
    for uri in ("rtsp://cam.local/1", "foo://bar"):
        rc, out, err = _run(["detect", uri], capsys)
        scheme = uri.split(":")[0]
        assert rc == 2 and out == "", err
        line = (
            f"edge-fer detect: error: {uri}: a {scheme}:// URI, not a file; detect reads image "
            "and video files, folders and globs (edge-fer run reads streams and cameras)"
        )
        assert _said(err) == [line], err
    rc, out, err = _run(["detect", f"file://{folder}/a.png", "--json"], capsys)
    assert rc == 0, err
    assert json.loads(out)["path"] == f"{folder}/a.png"
    rc, out, err = _run(["detect", "file://shots", "--json"], capsys)  # relative, as run
    assert rc == 0 and len(out.splitlines()) == 2, err
    rc, out, err = _run(["detect", ""], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "empty name" in err, err


def test_classify_names_a_uri_as_given(tmp_path, capsys, monkeypatch):
    """`classify rtsp://cam/1` said `rtsp:/cam/1: no such file`, and a file:// URI was not
    found: classify takes names as detect does."""
    monkeypatch.chdir(tmp_path)
    folder = _photos(tmp_path / "shots", bad=False)
    rc, out, err = _run(["classify", "rtsp://cam.local/1"], capsys)
    assert rc == 2 and out == "", err
    line = (
        "edge-fer classify: error: rtsp://cam.local/1: a rtsp:// URI, not a file; classify "
        "reads image files, folders and globs (edge-fer run reads streams and cameras)"
    )
    assert _said(err) == [line], err
    rc, out, err = _run(["classify", f"file://{folder}/a.png", "--json"], capsys)
    assert rc == 0 and "a.png" in out, err


def test_an_output_folder_under_a_file_says_the_file_is_no_folder(tmp_path, capsys):
    """`--out afile/d/` said `folder afile does not exist` of a file that exists."""
    folder = _photos(tmp_path / "shots", bad=False)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    rc, _, err = _run(["run", folder, "--out", f"{afile}/d/"], capsys)
    assert rc == 2 and _said(err) == [
        f"edge-fer run: error: --out {afile}/d: {afile} is not a folder"
    ], err
    rc, _, err = _run(["detect", folder, "--draw", f"{afile}/d"], capsys)
    assert rc == 2 and _said(err) == [
        f"edge-fer detect: error: --draw {afile}/d: {afile} is not a folder"
    ], err
    assert afile.read_text() == "mine"


def test_video_frames_over_the_scan_limit_are_one_line_naming_the_source(tmp_path, capsys):
    """A 16400x16 clip: `run` and `bench` failed with the detector's own words naming its
    parameter (`gray is a frame of 16400x16, too large ...`); now one line naming the source,
    as `detect` says it, at start-up: existing outputs untouched."""
    wide = tmp_path / "wide.avi"
    w = cv2.VideoWriter(str(wide), cv2.VideoWriter_fourcc(*"MJPG"), 10, (16400, 16))
    assert w.isOpened()
    for i in range(3):
        w.write(np.full((16, 16400, 3), 40 * i, np.uint8))
    w.release()
    events = tmp_path / "e.jsonl"
    events.write_text('{"old": 1}\n')
    why = "frames of 16400x16 pixels are over the 16384 px a side that can be scanned"
    rc, _, err = _run(["run", wide, "--events", events], capsys)
    assert rc == 2 and err.splitlines() == [f"edge-fer run: error: source {wide}: {why}"], err
    assert events.read_text() == '{"old": 1}\n'
    rc, _, err = _run(["bench", wide, "--json", tmp_path / "b.json"], capsys)
    assert rc == 2 and err.splitlines() == [f"edge-fer bench: error: source {wide}: {why}"], err
    assert not (tmp_path / "b.json").exists()
    rc, _, err = _run(["detect", wide], capsys)
    assert rc == 2 and _said(err) == [f"edge-fer detect: error: {wide}: {why}"], err


def test_bench_table_prints_a_name_with_a_newline_on_one_line(tmp_path, capsys):
    folder = _photos(tmp_path / "two\nlines", bad=False)
    out = tmp_path / "b\n.json"
    rc, table, err = _run(["bench", folder, "--backend", "onnxruntime", "--json", out], capsys)
    assert rc == 0, err
    assert table.splitlines()[0].startswith(f"source {str(folder)!r}  64x48"), table
    assert f"saved {str(out)!r}" in err.splitlines(), err


# ---- flags that did nothing ------------------------------------------------------------------


def test_flags_that_would_be_ignored_are_refused_or_warned(clip, tmp_path, capsys):
    """`bench SOURCE --frames 50` ran the whole file (--frames shapes --synthetic clips only),
    `run --json --quiet` printed the JSON, `run SOURCE --demo-dir D` ignored D, `run clip
    --sequence` ignored --sequence: all silently."""
    saved = tmp_path / "b.json"  # (not the default, in the working folder, on old code)
    rc, _, err = _run(["bench", clip, "--frames", "5", "--json", saved], capsys)
    line = (
        "edge-fer bench: error: --frames applies to --synthetic only; --max-frames N limits the "
        "frames of SOURCE"
    )
    assert rc == 2 and err.splitlines() == [line], err
    rc, _, err = _run(["bench", clip, "--faces", "3", "--json", saved], capsys)
    assert rc == 2 and err.splitlines() == [
        "edge-fer bench: error: --faces applies to --synthetic only"
    ], err
    assert not saved.exists()
    rc, out, err = _run(["run", clip, "--json", "--quiet"], capsys)
    assert (
        rc == 2
        and out == ""
        and err.splitlines()
        == [
            "edge-fer run: error: --json prints the summary and --quiet prints none: give one of them"
        ]
    ), err
    rc, _, err = _run(["run", clip, "--demo-dir", tmp_path / "d"], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "--demo-dir applies to --demo" in err, err
    assert not (tmp_path / "d").exists()
    rc, _, err = _run(["run", clip, "--sequence", "--quiet", "--max-frames", "3"], capsys)
    assert rc == 0
    line = (
        "edge-fer: warning: --sequence applies to images (a folder, glob or photo), not to a "
        "video file; ignored"
    )
    assert _said(err) == [line], err
