"""What run, detect and bench do with odd rates, thresholds, cut GIFs and outputs they cannot
write or must share: one line and exit 2 before the work, or the work done and said (a QA pass
of 2026-12-06; each test failed on the code before it)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from paths import FER_MODEL, PICO, random_photos
from processes import run_main
from runtime_helpers import mjpg_avi

from edge_fer.errors import UserError
from edge_fer.runtime.sinks import EventsSink, VideoSink, check_writable


def _gif(path: Path, frames: int = 10) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 256, (60, 80), np.uint8)) for _ in range(frames)]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=100, loop=0)
    return path.read_bytes()


def test_a_video_of_a_slow_source_is_written_at_one_frame_a_second(tmp_path):
    # 0.001 frames/s (a time-lapse, --input-rate 0.001) made every encoder refuse to open, and
    # the error blamed the frame size
    for ext in (".mp4", ".avi", ".mov"):
        out = tmp_path / f"slow{ext}"
        sink = VideoSink(out, 0.001, (64, 48))
        for i in range(3):
            sink.write(np.full((48, 64, 3), 40 * i, np.uint8))
        sink.close()
        cap = cv2.VideoCapture(str(out))
        n = 0
        while cap.read()[0]:
            n += 1
        fps = cap.get(cv2.CAP_PROP_FPS)
        cap.release()
        assert n == 3 and abs(fps - 1.0) < 0.01, (ext, n, fps)


def test_a_threshold_past_float32_range_finds_nothing_without_warnings(tmp_path, capsys):
    photo = random_photos(tmp_path / "p", bad=False) / "a.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warning became an exception here
        rc, out, err = run_main(["detect", photo, "--cascade", PICO, "--threshold", "1e39"], capsys)
    assert rc == 0 and "0 faces" in out and "Warning" not in err, err


def test_a_cut_gif_is_said_and_exits_1_a_whole_one_exits_0(tmp_path, capsys):
    whole = tmp_path / "whole.gif"
    data = _gif(whole)
    cut = tmp_path / "cut.gif"
    cut.write_bytes(data[: len(data) // 2])
    rc, out, err = run_main(["detect", whole, "--cascade", PICO], capsys)
    assert rc == 0 and "10 frames" in out and not err.strip(), err
    rc, out, err = run_main(["detect", cut, "--cascade", PICO], capsys)
    assert rc == 1 and "ends before its trailer" in err, (rc, err)
    summary = tmp_path / "s.json"
    argv = ["run", cut, "--cascade", PICO, "--model", FER_MODEL, "--summary", summary, "--quiet"]
    rc, _, err = run_main(argv, capsys)
    import json

    s = json.loads(summary.read_text())
    assert rc == 1 and s["complete"] is False and s["source_complete"] is False, err
    assert any("ends before its trailer" in e for e in s["source_errors"])


def test_detect_draw_to_an_image_name_for_several_inputs_is_refused(tmp_path, capsys, monkeypatch):
    folder = random_photos(tmp_path / "p", bad=False)
    a, c = folder / "a.png", folder / "c.png"
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_main(["detect", a, c, "--cascade", PICO, "--draw", "x.jpg"], capsys)
    # before: a folder named x.jpg was made, holding both drawings
    assert rc == 2 and "--draw x.jpg" in err and "--draw x/" in err, err
    assert not (tmp_path / "x.jpg").exists()
    rc, _, err = run_main(["detect", folder, "--cascade", PICO, "--draw", "y.mp4"], capsys)
    assert rc == 2 and not (tmp_path / "y.mp4").exists(), err
    rc, _, err = run_main(["detect", a, c, "--cascade", PICO, "--draw", "z"], capsys)
    assert rc == 0 and {"a.png", "c.png"} <= set(os.listdir(tmp_path / "z")), err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_detect_names_draw_for_a_video_drawn_into_a_pipe(tmp_path, capsys):
    clip = mjpg_avi(tmp_path / "clip.avi", n=4)
    fifo = tmp_path / "ff.mp4"
    os.mkfifo(fifo)
    rc, _, err = run_main(["detect", clip, "--cascade", PICO, "--draw", fifo], capsys)
    assert rc == 2 and "leave --draw out" in err and "--out" not in err, err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_in_a_folder_that_takes_no_files_is_refused_before_the_work(tmp_path, capsys):
    # os.access says yes to root for /proc: bench ran and printed its table, then failed
    with pytest.raises(UserError, match="cannot write in folder /proc"):
        check_writable("/proc/edge-fer-x.json", "--json")
    rc, out, err = run_main(
        ["bench", "--synthetic", "64x48", "--frames", "2", "--json", "/proc/edge-fer-x.json"],
        capsys,
    )
    assert rc == 2 and "cannot write in folder /proc" in err and "frames/s" not in out, err


@pytest.mark.skipif(os.name != "posix", reason="flock is POSIX")
def test_an_events_file_another_run_writes_is_refused_and_left_whole(tmp_path, capsys):
    import fcntl

    events = tmp_path / "e.jsonl"
    events.write_text('{"frame": 0, "t": 0.0, "faces": []}\n')
    with open(events, "a") as other:  # another run, holding its events file
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        sink = EventsSink(events)
        with pytest.raises(UserError, match="another run is writing it"):
            sink.start()
        clip = mjpg_avi(tmp_path / "clip.avi", n=4)
        argv = ["run", clip, "--cascade", PICO, "--model", FER_MODEL, "--events", events]
        rc, _, err = run_main([*argv, "--quiet"], capsys)
        assert rc == 2 and "another run is writing it" in err, err
        # before: truncated under the other run, then both runs' lines mixed
        assert events.read_text() == '{"frame": 0, "t": 0.0, "faces": []}\n'
    sink = EventsSink(events)  # once it has ended, the file is this run's
    sink.start()
    sink.write({"frame": 1, "t": 0.0, "faces": []})
    sink.close()
    assert events.read_text() == '{"frame":1,"t":0.0,"faces":[]}\n'


def test_a_preview_host_without_a_port_is_refused_whatever_the_address(tmp_path, capsys):
    clip = mjpg_avi(tmp_path / "clip.avi", n=2)
    for host in ("127.0.0.1", "0.0.0.0"):  # before: the default's address was let through
        argv = ["run", clip, "--cascade", PICO, "--model", FER_MODEL, "--preview-host", host]
        rc, _, err = run_main(argv, capsys)
        assert rc == 2 and "--preview-host needs --preview-port" in err, (host, err)
