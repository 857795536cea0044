"""Video files on a web server, live streams that stall or go away, pipes and frame rates: each
test reads real files through real local servers (an HTTP file server, an MJPEG stream)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_fer.errors import UserError
from edge_fer.runtime.sources import FileSource, LiveSource, open_source, parse_source


def _clip(path: Path, n: int = 30, fps: float = 20) -> Path:
    """A real MJPG .avi of `n` 64x48 frames, each a different grey with a moving dot."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (64, 48))
    for i in range(n):
        f = np.full((48, 64, 3), 4 * i % 256, np.uint8)
        cv2.circle(f, (2 * i % 64, 24), 6, (0, 0, 255), -1)
        w.write(f)
    w.release()
    return path


@contextlib.contextmanager
def _file_server(folder: Path):
    """An HTTP server in a thread serving `folder`; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _MJPEGServer:
    """A live MJPEG-over-HTTP stream: a frame every `interval` s to each client, for ever or,
    with `stall_after`, that many frames and then nothing on a connection kept open."""

    def __init__(self, interval: float = 0.03, stall_after: int | None = None) -> None:
        self.interval, self.stall_after = interval, stall_after
        self.jpegs = [
            cv2.imencode(".jpg", np.full((48, 64, 3), 10 * i, np.uint8))[1].tobytes()
            for i in range(20)
        ]
        self.stop = threading.Event()
        self.clients: list[socket.socket] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.clients.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.0 200 OK\r\n"
                b"Content-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
            )
            i = 0
            while not self.stop.is_set():
                if self.stall_after is not None and i >= self.stall_after:
                    self.stop.wait()  # stalled: the connection stays open, nothing comes
                    break
                j = self.jpegs[i % len(self.jpegs)]
                head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                conn.sendall(head % len(j) + j + b"\r\n")
                i += 1
                self.stop.wait(self.interval)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        """The stream goes away: its clients are cut off and new ones refused."""
        self.stop.set()
        self.sock.close()
        for c in self.clients:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)


def _read_all(src, work: float = 0.0) -> list:
    frames = []
    while (f := src.read(timeout=10) if isinstance(src, LiveSource) else src.read()) is not None:
        frames.append(f)
        if work:
            time.sleep(work)  # a consumer busy with each frame
    src.close()
    return frames


# ---- a video file on a web server --------------------------------------------------------------


def test_a_remote_file_has_the_files_own_timestamps(tmp_path):
    """Its frames carried seconds since the source opened (wall clock), so the events of
    `run http://host/clip.avi` differed from those of the same file read locally."""
    clip = _clip(tmp_path / "clip.avi", n=30, fps=20)
    local = _read_all(open_source(str(clip)))
    with _file_server(tmp_path) as url:
        src = open_source(f"{url}/clip.avi")
        assert isinstance(src, LiveSource) and src.remote_file
        remote = _read_all(src, work=0.005)
    assert [(f.index, f.t) for f in remote] == [(f.index, f.t) for f in local]
    assert [f.t for f in remote][:3] == [0.0, 0.05, 0.1]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(remote, local, strict=True))


def test_a_remote_file_is_read_at_decoding_speed(tmp_path):
    """The reader thread waited for each frame to be taken in a 0.2 s poll that read() never
    cut short: about 0.1-0.2 s a frame (here over 6 s) with the CPU idle."""
    _clip(tmp_path / "clip.avi", n=60)
    with _file_server(tmp_path) as url:
        src = open_source(f"{url}/clip.avi")
        t0 = time.monotonic()
        frames = _read_all(src, work=0.002)
        elapsed = time.monotonic() - t0
    assert [f.index for f in frames] == list(range(60)) and src.dropped == 0
    assert elapsed < 3.0, f"60 frames took {elapsed:.1f} s"


# ---- live streams ------------------------------------------------------------------------------

_STALL_SCRIPT = """
import sys, time
from edge_fer.runtime.sources import open_source
src = open_source(sys.argv[1], reconnect_timeout=60)
n = 0
while src.read(timeout=3) is not None:  # until the stream stalls
    n += 1
t0 = time.monotonic()
src.close()
print(n, round(time.monotonic() - t0, 2), flush=True)
"""


def test_close_on_a_stalled_stream_returns_at_once_and_exits_cleanly():
    """Ctrl-C on a stalled stream: close() waited 5 s for the reader thread, blocked in
    FFmpeg's read (10 s read timeout), then released the capture under it, which crashed the
    process (exit 139) now and then. In its own process, as a crash would end pytest's. The
    crash itself was a race: this checks the wait, and the exit status where it shows."""
    server = _MJPEGServer(stall_after=10)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _STALL_SCRIPT, f"http://127.0.0.1:{server.port}/s"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,  # its exit status is asserted below
            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        )
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    n, close_s = proc.stdout.split()
    assert int(n) >= 1
    assert float(close_s) < 3.0, f"close() took {close_s} s"


def test_reconnect_gives_up_at_its_timeout():
    """The deadline was checked before each backoff sleep, not after: with 4 s the source gave
    up after 7.75 s (0.25 + 0.5 + 1 + 2 + 4) and said "did not come back in 8 s"."""
    server = _MJPEGServer()
    warnings: list[str] = []
    src = open_source(f"http://127.0.0.1:{server.port}/s", warn=warnings.append,
                      reconnect_timeout=4)  # fmt: skip
    try:
        assert src.read(timeout=10) is not None
        server.close()
        deadline = time.monotonic() + 30
        while not src.ended and time.monotonic() < deadline:
            src.read(timeout=1)
        assert src.ended and src.incomplete
        gap = src.gaps[-1]
        assert gap.get("end") and 3.9 <= gap["seconds"] <= 5.5, gap
        assert src.errors[-1].endswith("did not come back in 4 s"), src.errors[-1]
    finally:
        src.close()
        server.close()


# ---- what is not a video file ------------------------------------------------------------------


def test_a_pipe_or_device_is_refused_as_a_video_file(tmp_path):
    """A FIFO named as a video blocked the run for ever when nothing wrote to it (the open
    waits for a writer); it is refused like imread and detect refuse it. A camera device
    named /dev/videoN is still a camera."""
    fifo = tmp_path / "clip.avi"
    os.mkfifo(fifo)
    box: dict = {}

    def try_open():
        try:
            open_source(str(fifo)).close()
        except UserError as exc:
            box["error"] = str(exc)

    t = threading.Thread(target=try_open, daemon=True)
    t.start()
    t.join(timeout=10)
    if t.is_alive():  # blocked on the pipe: a writer that closes at once frees it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(timeout=15)
        pytest.fail("opening a FIFO as a video blocked")
    assert "not a regular file" in box.get("error", ""), box
    with pytest.raises(UserError, match=r"not a regular file .*write v4l2:///dev/null"):
        open_source("/dev/null")
    assert parse_source("/dev/video0").kind == "camera"
    assert parse_source("/dev/video0").target == "/dev/video0"


# ---- frame rates -------------------------------------------------------------------------------


def test_a_1000_fps_source_has_its_rate(tmp_path):
    """--input-rate accepts up to 1000 fps, but sources kept only rates under 1000: a clip at
    exactly 1000 fps had no rate (fps None), locally and on a web server."""
    clip = _clip(tmp_path / "fast.avi", n=10, fps=1000)
    src = open_source(str(clip))
    assert isinstance(src, FileSource) and src.fps == 1000.0
    frames = _read_all(src)
    assert [f.t for f in frames] == [i / 1000 for i in range(10)]
    with _file_server(tmp_path) as url:
        src = open_source(f"{url}/fast.avi")
        assert src.fps == 1000.0 and src.describe()["fps"] == 1000.0
        assert [f.t for f in _read_all(src)] == [i / 1000 for i in range(10)]
