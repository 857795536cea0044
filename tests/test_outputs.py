"""Outputs of `edge-fer run` / `eval`: nothing lost, nothing clobbered (issue #13).

Real files, the bundled model and cascade, a clip made from the demo portrait, real child
processes for the signal tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from paths import ASSETS, ROOT, random_photos
from processes import interrupt, run_main, said, spawn_cli
from runtime_helpers import count_frames, demo_faces_clip

from edge_fer.cli.main import main
from edge_fer.errors import UserError
from edge_fer.runtime.image_out import MARKER


def _strict(text: str):
    """json.loads that rejects NaN / Infinity, as other parsers do."""

    def bad(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=bad)


def _read_jsonl(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "the last line is incomplete"
    return [_strict(line) for line in text.splitlines()]


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name or ".probe" in p.name]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return demo_faces_clip(tmp_path_factory.mktemp("clip") / "in.avi", 20)


def _run(argv, capsys) -> tuple[int, str, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ---- collisions -------------------------------------------------------------------------------


def _collision_cases(d: Path, src: Path) -> list[tuple[list[str], str, str, Path | None]]:
    """(extra argv, first flag named, second name, input that must stay untouched)."""
    os.symlink(src, d / "link.avi")
    os.link(src, d / "hard.avi")
    (d / "sub").mkdir()
    model = shutil.copy(ASSETS / "fer_default.int8.onnx", d / "m.onnx")
    casc = shutil.copy(ASSETS / "face_default.pico", d / "c.pico")
    shutil.copy(ASSETS / "face_default.json", d / "c.json")
    ver = shutil.copy(ASSETS / "face_verify.onnx", d / "v.onnx")
    spelled = str(d / "sub" / ".." / "in.avi")
    return [
        # every output against the source: same name, a symlink, another spelling, a hard link
        (["--out", str(src)], "--out", "SOURCE", src),
        (["--events", str(d / "link.avi")], "--events", "SOURCE", src),
        (["--summary", spelled], "--summary", "SOURCE", src),
        (["--events", str(d / "hard.avi")], "--events", "SOURCE", src),
        # every pair of outputs
        (["--out", str(d / "x.avi"), "--events", str(d / "x.avi")], "--out", "--events", None),
        (
            ["--out", str(d / "x.avi"), "--summary", str(d / "sub/../x.avi")],
            "--out",
            "--summary",
            None,
        ),
        (
            ["--events", str(d / "e.jsonl"), "--summary", str(d / "e.jsonl")],
            "--events",
            "--summary",
            None,
        ),
        # outputs against the model, the cascade, its settings and the verifier
        (["--model", str(model), "--summary", str(model)], "--summary", "--model", Path(model)),
        (["--cascade", str(casc), "--events", str(casc)], "--events", "--cascade", Path(casc)),
        (
            ["--cascade", str(casc), "--summary", str(d / "c.json")],
            "--summary",
            "settings",
            d / "c.json",
        ),
        (["--verifier", str(ver), "--events", str(ver)], "--events", "--verifier", Path(ver)),
        (
            ["--summary", str(ASSETS / "face_default.json")],
            "--summary",
            "bundled cascade",
            ASSETS / "face_default.json",
        ),
    ]


def test_collision_matrix_one_line_exit_2_inputs_untouched(tmp_path, capsys):
    d = tmp_path
    src = shutil.copy(demo_faces_clip(d / "clip.avi", 5), d / "in.avi")
    src = Path(src)
    for extra, first, second, kept in _collision_cases(d, src):
        before = {p.name: _digest(p) for p in d.iterdir() if p.is_file()}
        digest = _digest(kept) if kept else None
        rc, _out, err = _run(["run", str(src), *extra], capsys)
        assert rc == 2, (extra, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edge-fer run: error:"), err
        assert first in lines[0] and second in lines[0], (extra, err)
        after = {p.name: _digest(p) for p in d.iterdir() if p.is_file()}
        assert after == before, f"{extra}: files changed"
        if kept:
            assert _digest(kept) == digest


def test_outputs_may_share_a_device(clip, tmp_path, capsys):
    rc, _, err = _run(
        ["run", str(clip), "--events", "/dev/null", "--summary", "/dev/null", "--quiet"], capsys
    )
    assert rc == 0, err
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_demo_outputs_must_not_overwrite_the_demo_clip(tmp_path, capsys):
    d = tmp_path / "demo"
    rc, _, err = _run(
        ["run", "--demo", "--demo-dir", str(d), "--events", str(d / "demo_input.mp4")], capsys
    )
    assert rc == 2 and "the demo clip" in err and len(err.strip().splitlines()) == 1
    assert not d.exists() or not any(d.iterdir())


def test_eval_json_and_png_must_not_overwrite_inputs(tmp_path, capsys):
    data = tmp_path / "fer2013.csv"
    data.write_text("emotion,pixels,Usage\n")
    model = Path(shutil.copy(ASSETS / "fer_default.onnx", tmp_path / "m.onnx"))
    for argv, named in (
        (["--json", str(data)], "--data"),
        (["--model", str(model), "--json", str(model)], "--model"),
        (
            ["--model", str(model), "--json", str(tmp_path / "r.json"), "--png", str(model)],
            "--model",
        ),
        # the .png made beside --json is itself (named as such: no --png was passed)
        (["--json", str(tmp_path / "r.png")], "the confusion matrix beside --json"),
    ):
        rc, _, err = _run(["eval", "--data", str(data), "--no-progress", *argv], capsys)
        assert rc == 2 and named in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert data.read_text() == "emotion,pixels,Usage\n"
    assert _digest(model) == _digest(ASSETS / "fer_default.onnx")
    folder = tmp_path / "faces" / "happy"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "a.png"), np.zeros((48, 48), np.uint8))
    before = _digest(folder / "a.png")
    rc, _, err = _run(
        [
            "eval",
            "--data",
            str(tmp_path / "faces"),
            "--json",
            str(tmp_path / "r.json"),
            "--png",
            str(folder / "a.png"),
        ],
        capsys,
    )
    assert rc == 2 and "--data" in err and _digest(folder / "a.png") == before
    # a dataset of symlinks (a subset linked from elsewhere) is still the dataset: before,
    # --json through the link replaced the image it points to
    elsewhere = tmp_path / "originals"
    elsewhere.mkdir()
    cv2.imwrite(str(elsewhere / "b.png"), np.full((48, 48), 9, np.uint8))
    original = _digest(elsewhere / "b.png")
    (folder / "b.png").symlink_to(elsewhere / "b.png")
    for flag, other in (("--json", "--png"), ("--png", "--json")):
        argv = ["eval", "--data", str(tmp_path / "faces"), flag, str(folder / "b.png")]
        rc, _, err = _run([*argv, other, str(tmp_path / f"r{flag[2:]}")], capsys)
        assert rc == 2 and "is inside --data" in err, (flag, err)
    assert _digest(elsewhere / "b.png") == original


# ---- start-up failures leave everything as it was -------------------------------------------


def test_existing_outputs_untouched_when_startup_fails(clip, tmp_path, capsys):
    out, events, summary = tmp_path / "a.avi", tmp_path / "e.jsonl", tmp_path / "s.json"
    shutil.copy(clip, out)
    events.write_text('{"old": 1}\n')
    summary.write_text('{"old": 2}\n')
    before = {p: _digest(p) for p in (out, events, summary)}
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        rc, _, err = _run(
            [
                "run",
                str(clip),
                "--out",
                str(out),
                "--events",
                str(events),
                "--summary",
                str(summary),
                "--preview-port",
                str(busy.getsockname()[1]),
                "--force",  # events and summary of the test's own, not an earlier run's
            ],
            capsys,
        )
    finally:
        busy.close()
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "preview" in err, err
    assert {p: _digest(p) for p in before} == before
    assert _leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "a.avi",
        "e.jsonl",
        "s.json",
    ]


def test_video_sink_says_why_it_cannot_start(tmp_path):
    from edge_fer.runtime.sinks import VideoSink

    old = tmp_path / "v.mp4"
    old.write_bytes(b"old video")
    with pytest.raises(UserError, match=r"no frame size \(0x0\)") as e:
        VideoSink(old, 25.0, (0, 0))
    assert "encoder" not in str(e.value)
    if os.path.isdir("/sys") and os.access("/sys", os.W_OK):
        # root: writable by its mode bits, yet no file can be made in it
        with pytest.raises(UserError) as e:
            VideoSink("/sys/edge-fer-test.avi", 25.0, (64, 64))
        # refused by the output check before the writer is tried (a probe file in /sys)
        assert "encoder" not in str(e.value) and "cannot write in folder /sys" in str(e.value)
    assert old.read_bytes() == b"old video" and _leftovers(tmp_path) == []


def test_video_is_replaced_only_when_complete(tmp_path):
    from edge_fer.runtime.sinks import VideoSink

    target = tmp_path / "v.avi"
    target.write_bytes(b"old video")
    link = tmp_path / "link.avi"
    link.symlink_to(target)
    sink = VideoSink(link, 25.0, (64, 48))
    sink.write(np.zeros((48, 64, 3), np.uint8))
    assert target.read_bytes() == b"old video"  # not touched while the run goes on
    sink.abort()
    assert target.read_bytes() == b"old video" and _leftovers(tmp_path) == []
    sink = VideoSink(link, 25.0, (64, 48))
    for _ in range(3):
        sink.write(np.zeros((48, 64, 3), np.uint8))
    sink.close()
    assert link.is_symlink() and count_frames(target) == 3 and _leftovers(tmp_path) == []


def test_a_video_cut_short_never_replaces_the_users_file(tmp_path):
    """OpenCV reports no write error: the finished file is checked to hold every frame
    (before: a video with no index, or none of its frames playable, was renamed over the
    user's file)."""
    from edge_fer.runtime.sinks import VideoSink

    for ext in (".mp4", ".avi"):
        target = tmp_path / f"v{ext}"
        target.write_bytes(b"old video")
        sink = VideoSink(target, 25.0, (64, 48))
        for i in range(40):
            sink.write(np.full((48, 64, 3), i, np.uint8))
        sink._release()  # the writer is done; then the disk loses the end of the file
        assert sink._tmp is not None
        os.truncate(sink._tmp, os.path.getsize(sink._tmp) // 3)
        with pytest.raises(UserError, match="the file written holds .*left as it was"):
            sink.close()
        assert target.read_bytes() == b"old video" and _leftovers(tmp_path) == [], ext


@pytest.mark.skipif(not hasattr(os, "fork"), reason="ulimit needs a POSIX shell")
def test_a_file_size_limit_stops_the_run_and_keeps_the_old_video(tmp_path):
    """`ulimit -f`: the writes fail with EFBIG, which OpenCV does not report (before: exit 0
    and a video of 21 of 600 frames in place of the user's)."""
    from processes import CLI, run

    clip = demo_faces_clip(tmp_path / "clip.avi", 150)
    out = tmp_path / "out.avi"
    out.write_bytes(b"old video")  # not an earlier run's: replaced only with --force (which
    # must still keep it when the new one cannot be finished)
    cmd = " ".join([sys.executable, *CLI, "run", str(clip), "--out", str(out), "--quiet",
                    "--force"])  # fmt: skip
    p = run(["bash", "-c", f"ulimit -f 100 && exec {cmd}"], timeout=300)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and "WARN" not in ln]
    assert p.returncode == 2 and lines and "file size limit is reached" in lines[-1], p.stderr
    assert out.read_bytes() == b"old video" and _leftovers(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX file size limit")
def test_a_file_size_limit_on_standard_output_is_one_line(tmp_path):
    """`detect --json > file` past `ulimit -f`: EFBIG was a traceback and exit 1."""
    clip = demo_faces_clip(tmp_path / "clip.avi", 60)

    # set in the child's Python: a preexec_fn is unsafe in a process with threads
    boot = (
        "import resource, runpy, sys; "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048)); sys.argv[0] = 'edge-fer'; "
        "runpy.run_module('edge_fer.cli.main', run_name='__main__')"
    )
    with open(tmp_path / "d.jsonl", "wb") as out:
        p = subprocess.run(
            [sys.executable, "-c", boot, "detect", str(clip), "--json"], stdout=out,
            stderr=subprocess.PIPE, text=True, timeout=300, check=False,
        )  # fmt: skip
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and "compiling" not in ln]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert "cannot write" in lines[0] and "file size limit (ulimit -f)" in lines[0]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_an_ignored_sigint_stays_ignored_by_run(tmp_path):
    """A script's background job (`edge-fer run ... &`) starts with SIGINT ignored: a Ctrl-C
    meant for the foreground stopped it once it had started (exit 130)."""
    clip = demo_faces_clip(tmp_path / "clip.avi", 400)
    summary = tmp_path / "s.json"
    boot = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "sys.argv[0] = 'edge-fer'; runpy.run_module('edge_fer.cli.main', run_name='__main__')"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", boot, "run", str(clip), "--events", "-", "--summary",
         str(summary), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdout is not None
    p.stdout.readline()  # the run is under way (its first events line)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    s = _strict(summary.read_text())
    assert s["frames"] == 400 and not s.get("interrupted"), s


def test_names_with_a_colon_are_files_not_ffmpeg_protocols(tmp_path, capsys, monkeypatch):
    """`cam1:front.avi` was read by FFmpeg as protocol "cam1" ("cannot decode it"), and
    `--out cam1:out.mp4` as "no mp4v/avc1 encoder"."""
    demo_faces_clip(tmp_path / "cam1:front.avi", 12)
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(["run", "cam1:front.avi", "--out", "cam1:out.mp4", "--quiet"], capsys)
    assert rc == 0, err
    assert count_frames(tmp_path / "cam1:out.mp4") == 12 and _leftovers(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="process ids checked with kill(pid, 0)")
def test_temporary_videos_of_killed_runs_are_removed(tmp_path):
    """kill -9 leaves `.v.mp4.PID.tmp.mp4`, hidden and unplayable: a later run removes those
    of processes that are gone and untouched for a while (before: they piled up)."""
    from edge_fer.runtime.sinks import STALE_AFTER_S, VideoSink

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    old = tmp_path / f".v.mp4.{dead}.tmp.mp4"
    recent = tmp_path / f".v.mp4.{int(dead) + 1}.tmp.mp4"  # (maybe alive: kept either way)
    alive = tmp_path / f".v.mp4.{os.getpid() + 0}.tmp.mp4.not-ours"
    for f in (old, recent, alive):
        f.write_bytes(b"partial")
    long_ago = os.path.getmtime(old) - 2 * STALE_AFTER_S
    os.utime(old, (long_ago, long_ago))
    sink = VideoSink(tmp_path / "v.mp4", 25.0, (64, 48))
    sink.write(np.zeros((48, 64, 3), np.uint8))
    sink.close()
    assert not old.exists() and recent.exists() and alive.exists()
    assert count_frames(tmp_path / "v.mp4") == 1


def test_a_source_of_no_frames_leaves_out_as_it_was(tmp_path, capsys):
    """A video with no frame: --out was replaced by a 257-byte stub no player opens, and the
    summary listed it under outputs.video. It is a bad input now, found at start-up (one line,
    exit 2, as `detect` says it): no output is opened, so no summary either."""
    zero = tmp_path / "zero.avi"
    cv2.VideoWriter(str(zero), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48)).release()
    out, summary = tmp_path / "z.mp4", tmp_path / "s.json"
    out.write_bytes(b"old video")  # not an earlier run's: --force lets the run replace it,
    # which a source of no frames must still not do
    argv = ["run", str(zero), "--out", str(out), "--summary", str(summary), "--quiet", "--force"]
    for existing in (True, False):
        rc, _, err = _run(argv, capsys)
        assert rc == 2 and err.count("\n") == 1 and "no frame could be decoded" in err, err
        assert not summary.exists()
        assert _leftovers(tmp_path) == []
        if existing:
            assert out.read_bytes() == b"old video"
            out.unlink()
        else:  # and none is made
            assert not out.exists()


def test_video_takes_gray_and_bgra_frames(tmp_path):
    """Frames at the video's size that were not BGR were counted but dropped by the writer."""
    from edge_fer.runtime.sinks import VideoSink

    sink = VideoSink(tmp_path / "v.avi", 25.0, (64, 48))
    gray = np.full((48, 64), 200, np.uint8)
    for frame in (gray, gray[..., None], np.dstack([gray] * 4), np.zeros((24, 32), np.uint8)):
        sink.write(frame)
    sink.close()
    assert sink.frames == count_frames(tmp_path / "v.avi") == 4
    cap = cv2.VideoCapture(str(tmp_path / "v.avi"))
    ok, first = cap.read()
    cap.release()
    assert ok and abs(float(first.mean()) - 200) < 8  # the frame, not black


# ---- devices, links, strict JSON --------------------------------------------------------------


def test_summary_to_stdout_through_a_pipe_and_a_file(clip, tmp_path):
    # before: /dev/stdout resolved to /proc/PID/fd/pipe:[N]: "No such file or directory" at
    # the end of the run and the summary lost; redirected to a file, it was renamed over
    import processes

    proc = processes.run_cli("run", clip, "--summary", "/dev/stdout")  # stdout is a pipe
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["frames"] > 0  # the summary alone: the text went to stderr
    assert "summary  /dev/stdout" in proc.stderr
    out = tmp_path / "out.txt"
    out.write_text("kept\n")
    inode = out.stat().st_ino
    with open(out, "a") as fh:  # `>> out.txt`
        argv = [sys.executable, *processes.CLI, "run", str(clip), "--summary", "/dev/stdout"]
        done = subprocess.run(argv, check=False, stdout=fh, stderr=subprocess.DEVNULL, cwd=ROOT)
    assert done.returncode == 0
    kept = out.read_text()
    assert out.stat().st_ino == inode and kept.startswith("kept\n")
    assert json.loads(kept[5:])["frames"] > 0


def test_events_to_standard_output(clip, tmp_path):
    # before: `--events -` wrote a file named "-", and `--events /dev/stdout >> f` truncated f
    import processes

    proc = processes.run_cli("run", clip, "--events", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]  # JSON Lines, nothing else
    assert len(lines) == 20 and all(r["faces"] for r in lines)
    assert "frames/s" in proc.stderr and not (tmp_path / "-").exists()
    out = tmp_path / "all.jsonl"
    out.write_text('{"earlier":1}\n')
    for name in ("-", "/dev/stdout"):
        with open(out, "a") as fh:  # `>> all.jsonl`
            argv = [sys.executable, *processes.CLI, "run", str(clip), "--events", name, "--quiet"]
            done = subprocess.run(argv, check=False, stdout=fh, stderr=subprocess.PIPE, cwd=ROOT)
        assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0] == {"earlier": 1} and len(lines) == 41
    proc = processes.run_cli("run", clip, "--events", "-", "--json", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        "edge-fer run: error: --json and --events - both write to standard output; "
        "give --events a file, or leave --json out"
    )


def test_standard_output_onto_the_source_is_refused(clip, tmp_path):
    """`run clip --json 1<> clip` (or the text summary) wrote over the video's header."""
    import processes

    src = tmp_path / "in.avi"
    src.write_bytes(Path(clip).read_bytes())
    before = src.read_bytes()
    for extra in (["--json"], []):
        with open(src, "r+b") as fh:  # `1<> in.avi`
            argv = [sys.executable, *processes.CLI, "run", str(src), *extra]
            done = subprocess.run(argv, check=False, stdout=fh, stderr=subprocess.PIPE, cwd=ROOT)
        err = done.stderr.decode()
        assert done.returncode == 2 and err.count("\n") == 1, err
        assert "standard output" in err and "SOURCE" in err
    assert src.read_bytes() == before
    if os.path.exists("/dev/full"):  # `--json > /dev/full`: a traceback and exit 1 before
        with open("/dev/full", "w") as fh:
            argv = [sys.executable, *processes.CLI, "run", str(src), "--json"]
            done = subprocess.run(argv, check=False, stdout=fh, stderr=subprocess.PIPE, cwd=ROOT)
        err = done.stderr.decode()
        assert (
            done.returncode == 2 and err == "edge-fer run: error: cannot write (the disk is full)\n"
        )


def test_a_named_pipe_nobody_reads_is_one_line_not_a_hang(clip, tmp_path, capsys):
    """--summary or --events on a FIFO with no reader waited in open() for ever, deaf to Ctrl-C
    and SIGTERM; --out IMAGE on one waited in cv2.imwrite."""
    import processes

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    for flag in ("--summary", "--events", "--out"):
        argv = ["run", str(clip), "--max-frames", "3", flag, str(fifo), "--quiet"]
        if flag == "--out":
            photo = tmp_path / "p.png"
            cv2.imwrite(str(photo), np.full((120, 160, 3), 90, np.uint8))
            argv[1] = str(photo)
        done = processes.run_cli(*argv, timeout=60)  # before: killed here
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "no process reads the pipe" in done.stderr or "device or pipe" in done.stderr


def test_outputs_never_replace_bundled_assets(clip, tmp_path, capsys):
    # before: bench --json over fer_default.int8.onnx, which an FP32 run does not read, was
    # written, and every later INT8 run failed. Without the guard this test would do the same
    # to the checkout's assets, so it puts back whatever it finds changed.
    names = ("fer_default.int8.onnx", "eyes_default.eyes", "new.json")
    saved = {n: (ASSETS / n).read_bytes() for n in names if (ASSETS / n).exists()}
    try:
        for name in names:
            argv = ["run", str(clip), "--precision", "fp32", "--summary", str(ASSETS / name)]
            rc, _, err = _run(argv, capsys)
            assert rc == 2 and "bundled assets" in err and len(err.strip().splitlines()) == 1, err
            if name in saved:
                assert (ASSETS / name).read_bytes() == saved[name]
            else:
                assert not (ASSETS / name).exists()
    finally:
        for name in names:
            if name in saved and (ASSETS / name).read_bytes() != saved[name]:
                (ASSETS / name).write_bytes(saved[name])
            elif name not in saved and (ASSETS / name).exists():
                (ASSETS / name).unlink()


def test_summary_to_dev_null_and_a_symlink_stay_what_they_are(clip, tmp_path, capsys):
    rc, _, err = _run(["run", str(clip), "--summary", "/dev/null", "--quiet"], capsys)
    assert rc == 0, err
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    real = tmp_path / "real.json"
    real.write_text("{}")  # not an earlier run's summary: replaced with --force
    link = tmp_path / "s.json"
    link.symlink_to(real)
    rc, _, err = _run(["run", str(clip), "--summary", str(link), "--quiet", "--force"], capsys)
    assert rc == 0, err
    assert link.is_symlink() and os.readlink(link) == str(real)
    s = _strict(real.read_text())
    assert s["frames"] == 20 and s["complete"] and s["started"]
    assert _leftovers(tmp_path) == []


def test_events_write_through_a_fifo_and_everything_is_strict_json(clip, tmp_path, capsys):
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def reader():
        with open(fifo, "rb") as fh:
            got.append(fh.read())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    summary = tmp_path / "s.json"
    rc, out, err = _run(
        ["run", str(clip), "--events", str(fifo), "--summary", str(summary), "--json"], capsys
    )
    t.join(10)
    assert rc == 0, err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still a FIFO
    lines = [_strict(x) for x in got[0].decode().splitlines()]
    s = _strict(summary.read_text())
    assert _strict(out) == s
    assert len(lines) == s["frames_with_faces"] > 0
    assert s["nonfinite_dropped"] == 0 and s["events_dropped"] == 0


def test_events_leave_out_a_non_finite_record_and_go_on(tmp_path):
    from edge_fer.runtime.sinks import EventsSink

    path = tmp_path / "e.jsonl"
    path.write_text("old\n")
    warnings: list[str] = []
    sink = EventsSink(path, warn=warnings.append)
    assert path.read_text() == "old\n"  # untouched until the run starts
    sink.start()
    sink.write({"frame": 1, "faces": [{"score": 1.5}]})
    sink.write({"frame": 2, "faces": [{"score": float("nan")}]})
    sink.write({"frame": 3, "faces": [{"score": float("inf")}]})
    sink.write({"frame": 4, "faces": []})
    sink.close()
    assert [r["frame"] for r in _read_jsonl(path)] == [1, 4]
    assert sink.dropped == 2 and len(warnings) == 1 and "NaN" in warnings[0]


def test_demo_dir_of_the_users_files_is_refused(tmp_path, capsys):
    # before: the demo's summary, events, video and clip replaced same-named files of the user's
    d = tmp_path / "mine"
    d.mkdir()
    (d / "summary.json").write_text("USER")
    rc = main(["run", "--demo", "--demo-dir", str(d), "--max-frames", "2", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--demo-dir" in err and "holds other" in err
    assert [p.name for p in d.iterdir()] == ["summary.json"]
    assert (d / "summary.json").read_text() == "USER"
    # a demo's own folder is reused, until a file in it is not the one the demo left
    demo = tmp_path / "demo"
    argv = ["run", "--demo", "--demo-dir", str(demo), "--max-frames", "2", "--quiet"]
    for _ in range(2):
        assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    (demo / "summary.json").write_text("USER")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "summary.json came from elsewhere or changed since" in err
    assert (demo / "summary.json").read_text() == "USER"


# ---- signals, from a real child process -------------------------------------------------------


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_startup(sig, code, tmp_path):
    """The demo clip is made, then the models load and compile: the signal lands there."""
    pytest.importorskip("matplotlib", reason="the demo portrait comes from matplotlib")
    d = tmp_path / "demo"
    d.mkdir()
    old_events = '{"frame":0,"t":0.0,"faces":[]}\n'  # an earlier demo's (replaced without --force)
    (d / "events.jsonl").write_text(old_events)
    (d / "annotated.mp4").write_bytes(b"old video")
    (d / MARKER).write_text("events.jsonl\nannotated.mp4\n")  # an earlier demo's folder
    proc = spawn_cli("run", "--demo", "--demo-dir", d, cwd=tmp_path)

    def clip_made() -> bool:
        first = proc.stderr.readline()
        assert "demo clip" in first, first + proc.stderr.read()
        return True

    err = interrupt(proc, sig, clip_made)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "start-up" in lines[0], err
    s = _strict((d / "summary.json").read_text())
    assert s["interrupted"] and not s["started"] and s["frames"] == 0
    assert s["signal"] == sig.name
    assert (d / "events.jsonl").read_text() == old_events  # untouched
    assert (d / "annotated.mp4").read_bytes() == b"old video"
    assert _leftovers(d) == []


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_run(sig, code, tmp_path):
    total = 1500
    src = demo_faces_clip(tmp_path / "long.avi", total)
    out, events, summary = tmp_path / "a.avi", tmp_path / "e.jsonl", tmp_path / "s.json"
    proc = spawn_cli(
        "run", src, "--out", out, "--events", events, "--summary", summary, "--quiet", cwd=tmp_path
    )
    err = interrupt(proc, sig, lambda: events.exists() and events.stat().st_size > 0)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0], err
    s = _strict(summary.read_text())
    assert s["interrupted"] and s["started"] and not s["complete"] and s["signal"] == sig.name
    assert 0 < s["frames"] < total
    assert len(_read_jsonl(events)) == s["frames_with_faces"] > 0
    assert count_frames(out) == s["frames"]  # finalised, every frame in it
    assert _leftovers(tmp_path) == []
    # the tracks hold the frames output, no more (before: the frames still in flight too)
    last = max(e["frame"] for e in _read_jsonl(events))
    assert s["tracks"] and max(t["last_frame"] for t in s["tracks"]) <= last
    assert s["track_count"] == len(s["tracks"]) + s["tracks_omitted"]


# A signal that lands inside a library's start-up: the child sends it to itself from an import
# hook at the moment `TARGET` is imported, and does with the exception what the libraries did
# (as QA saw them at random moments of the start-up, 0.4-0.75 s after the launch):
#   chained  onnxruntime's pybind11 init: ImportError("initialization failed") caused by it
#   printed  numba's C init: the exception printed (PyErr_Print), a new ImportError, no cause
#   ignored  a weakref or ctypes callback (importlib's, llvmlite's): "Exception ignored", lost
# The signal and every handler are the real ones; only the libraries' conduct is played.
_STARTUP_CHILD = """
import importlib.abc, runpy, signal, sys, weakref

TARGET, MODE, SIG = sys.argv[1], sys.argv[2], getattr(signal, sys.argv[3])
signal.signal(signal.SIGINT, signal.default_int_handler)  # as a terminal's job (processes.py)


def deliver():
    signal.raise_signal(SIG)  # the handler runs at once, in this frame


class Hook(importlib.abc.MetaPathFinder):
    fired = False

    def find_spec(self, name, path=None, target=None):
        if name != TARGET or Hook.fired:
            return None
        Hook.fired = True
        if MODE == "chained":
            try:
                deliver()
            except BaseException as exc:
                raise ImportError("initialization failed") from exc
        elif MODE == "printed":
            failed = False
            try:
                deliver()
            except BaseException:
                sys.excepthook(*sys.exc_info())
                failed = True
            if failed:
                raise ImportError(name + " failed to import")
        else:
            class Thing:
                pass

            thing = Thing()
            ref = weakref.ref(thing, lambda _: deliver())
            del thing
        return None


sys.meta_path.insert(0, Hook())
sys.argv = ["edge-fer", *sys.argv[4:]]
runpy.run_module("edge_fer.cli.main", run_name="__main__")
"""


@pytest.mark.parametrize(
    "command, target, mode, sig",
    [
        # run: the models load under run's guard (traceback and exit 1; or no stop at all)
        ("run", "onnxruntime", "chained", signal.SIGINT),
        ("run", "onnxruntime", "ignored", signal.SIGTERM),
        # run: its own imports, before the pipeline's start-up (a traceback, no summary)
        ("run", "edge_fer.runtime.runner", "printed", signal.SIGINT),
        # run: while the command line is parsed (exit 130, but no summary)
        ("run", "edge_fer.cli.run_cmd", "chained", signal.SIGINT),
        # detect and classify: no guard of their own
        ("detect", "onnxruntime", "chained", signal.SIGINT),
        ("detect", "onnxruntime", "ignored", signal.SIGINT),
        ("classify", "onnxruntime", "chained", signal.SIGTERM),  # was "not installed", exit 2
    ],
)
def test_a_signal_inside_a_library_start_up_is_an_interrupt(command, target, mode, sig, tmp_path):
    from processes import run_python

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((120, 160, 3), 128, np.uint8))
    child = tmp_path / "child.py"
    child.write_text(_STARTUP_CHILD)
    summary = tmp_path / "s.json"
    extra = ["--summary", str(summary), "--quiet"] if command == "run" else []
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = run_python(child, target, mode, sig.name, command, photo, *extra, cwd=tmp_path, env=env)
    assert proc.returncode == 128 + sig, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0], proc.stderr  # no traceback
    assert proc.stdout == ""  # stopped before anything was scanned or classified
    if command == "run":
        assert "during start-up" in lines[0]
        s = _strict(summary.read_text())
        assert s["interrupted"] and not s["started"] and s["frames"] == 0
        assert s["signal"] == sig.name


@pytest.mark.shared("data/videos/01-2.avi")
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_write_that_fails_leaves_a_summary_that_agrees_with_the_tracks(tmp_path, capsys):
    """The frame whose events could not be written (a full disk) was missing from the summary's
    counts but not from its tracks: "frames": 0 beside a track seen on 1 frame."""
    from paths import shared

    clip = tmp_path / "c.avi"
    cap = cv2.VideoCapture(str(shared("data/videos/01-2.avi")))
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 20, (160, 120))
    for _ in range(10):
        w.write(cap.read()[1])
    w.release()
    summary = tmp_path / "s.json"
    rc, _, err = _run(["run", str(clip), "--events", "/dev/full", "--summary", str(summary),
                       "--quiet"], capsys)  # fmt: skip
    assert rc == 2 and "the disk is full" in err
    doc = json.loads(summary.read_text())
    seen = max(t["last_frame"] for t in doc["tracks"]) + 1
    assert doc["frames"] == seen >= 1 and doc["frames_with_faces"] >= 1


def test_events_survive_a_rotation_and_a_second_writer(tmp_path):
    """The events file was written at the run's own offset: a logrotate copytruncate left
    holes of NUL bytes and lines cut into each other. Lines now go to the file's end, wherever
    it is. A second run into the file (which emptied it and mixed its lines in) is refused
    while the first writes it."""
    from edge_fer.runtime.sinks import EventsSink

    path = tmp_path / "ev.jsonl"
    a, b = EventsSink(path), EventsSink(path)
    a.start()
    for i in range(5):
        a.write({"frame": i, "faces": []})
    os.truncate(path, 0)  # copytruncate
    if os.name == "posix":
        with pytest.raises(UserError, match="another run is writing it"):
            b.start()
    for i in range(5, 10):
        a.write({"frame": i, "faces": []})
    a.close()
    b.close()
    data = path.read_bytes()
    assert b"\0" not in data
    frames = [json.loads(ln)["frame"] for ln in data.decode().splitlines()]
    assert frames == [5, 6, 7, 8, 9], frames


_CUT_AFTER_ROTATION = """
import json, resource, signal, sys
from edge_fer.errors import UserError
from edge_fer.runtime.sinks import EventsSink
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))
path = sys.argv[1]
sink = EventsSink(path)
sink.start()
for i in range(20):
    sink.write({"frame": i, "faces": [], "pad": "x" * 100})
open(path, "w").close()  # copytruncate
try:
    for i in range(20, 10000):
        sink.write({"frame": i, "faces": [], "pad": "x" * 100})
except UserError as exc:
    print(exc)
"""


def test_an_events_write_that_fails_after_a_rotation_leaves_whole_lines(tmp_path):
    """A failed write cut the file back to the bytes this run had written: after a log
    rotation's copytruncate that was past the end (a hole of NUL bytes) or inside a line. It is
    cut back to the file's length before the line that failed."""
    path = tmp_path / "ev.jsonl"
    p = subprocess.run([sys.executable, "-c", _CUT_AFTER_ROTATION, str(path)],
                       check=False, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "file size limit" in p.stdout, (p.stdout, p.stderr)
    data = path.read_bytes()
    assert b"\0" not in data and data.endswith(b"\n"), data[-80:]
    frames = [json.loads(ln)["frame"] for ln in data.decode().splitlines()]
    assert frames == list(range(20, 20 + len(frames))) and len(frames) >= 30, frames


def test_events_whose_folder_is_removed_say_so(tmp_path):
    """The events file's folder removed mid-run: every later line went into a file nobody
    could open, and the run ended "complete" (the video's folder was already checked)."""
    from edge_fer.runtime.sinks import EventsSink

    folder = tmp_path / "evdir"
    folder.mkdir()
    sink = EventsSink(folder / "e.jsonl")
    sink.start()
    sink.write({"frame": 0, "faces": []})
    shutil.rmtree(folder)
    with pytest.raises(UserError, match=r"e\.jsonl: it \(or its folder\) was removed"):
        sink.write({"frame": 1, "faces": []})
    sink.close()


def test_a_video_whose_folder_is_removed_says_so(tmp_path):
    """The folder of --out removed mid-run: the run went on to the end without a word, then
    blamed a size limit or a quota."""
    import shutil as _shutil

    from edge_fer.runtime.sinks import VideoSink

    folder = tmp_path / "outdir"
    folder.mkdir()
    sink = VideoSink(folder / "a.avi", 25.0, (64, 48), disk_check_every=5)
    _shutil.rmtree(folder)
    with pytest.raises(UserError, match="its folder .*outdir was removed"):
        for _ in range(5):
            sink.write(np.zeros((48, 64, 3), np.uint8))
    sink.abort()


def test_an_output_folder_under_a_file_says_the_file_is_no_folder(tmp_path, capsys):
    """`--out afile/d/` said `folder afile does not exist` of a file that exists."""
    folder = random_photos(tmp_path / "shots", bad=False)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    rc, _, err = run_main(["run", folder, "--out", f"{afile}/d/"], capsys)
    assert rc == 2 and said(err) == [
        f"edge-fer run: error: --out {afile}/d: {afile} is not a folder"
    ], err
    rc, _, err = run_main(["detect", folder, "--draw", f"{afile}/d"], capsys)
    assert rc == 2 and said(err) == [
        f"edge-fer detect: error: --draw {afile}/d: {afile} is not a folder"
    ], err
    assert afile.read_text() == "mine"


@pytest.mark.parametrize(
    "redirect, flags, said_",
    [
        # the text summary went into the events file: 9 of 23 lines were not JSON
        (">> {tmp}/e.jsonl", "--events {tmp}/e.jsonl", "standard output /dev/stdout and --events"),
        (
            "> {tmp}/s.json",
            "--json --summary {tmp}/s.json",
            "standard output /dev/stdout and --sum",
        ),
        # a pipe may be shared by two outputs: the lines and the summary came out mixed
        ("| cat", "--events - --summary -", "--events - and --summary - both write to standard"),
    ],
)
def test_standard_output_is_not_also_an_output(clip, tmp_path, redirect, flags, said_):
    cmd = f"{sys.executable} -m edge_fer.cli.main run {clip} {flags} --max-frames 3 {redirect}"
    cmd = cmd.format(tmp=tmp_path) + "; exit ${PIPESTATUS[0]}"
    p = subprocess.run(
        ["bash", "-c", cmd], check=False, capture_output=True, text=True, timeout=300
    )
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and said_ in lines[0], p.stderr


def test_out_folder_and_another_output_of_the_same_path_are_refused_before_the_run(
    clip, tmp_path, capsys
):
    """`--out rdir/ --summary rdir` ran every frame, then could not write the summary (and
    `--events rdir` left the folder behind)."""
    for flag in ("--summary", "--events"):
        folder = tmp_path / f"r{flag[2:]}"
        rc, _, err = run_main(["run", clip, "--out", f"{folder}/", flag, folder], capsys)
        assert rc == 2 and "are the same path: give each output its own" in err, err
        assert not folder.exists()


def test_a_dangling_link_into_a_missing_folder_is_refused_before_the_run(clip, tmp_path, capsys):
    """`--summary dsum.json`, a link to nodir/x.json: every frame was processed, then "summary
    NOT WRITTEN (No such file or directory)"; a link to a file yet to be made still works."""
    dangling = tmp_path / "dsum.json"
    dangling.symlink_to(tmp_path / "nodir" / "x.json")
    rc, _, err = run_main(["run", clip, "--summary", dangling, "--max-frames", 2], capsys)
    assert rc == 2 and f"a link to {tmp_path / 'nodir' / 'x.json'}, whose folder" in err, err
    fine = tmp_path / "s.json"
    fine.symlink_to(tmp_path / "made.json")
    rc, _, err = run_main(["run", clip, "--summary", fine, "--max-frames", 2], capsys)
    assert rc == 0 and fine.is_symlink() and json.loads((tmp_path / "made.json").read_text())
