"""Source URIs and reading: real files, real decoding."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from runtime_helpers import feed_frames, mjpg_avi, shared

from edge_fer.errors import UserError
from edge_fer.runtime.sources import (
    FileSource,
    ImageSource,
    csi_pipeline,
    open_source,
    parse_source,
)

# ---- parsing (pure) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri, kind, target, live, api",
    [
        ("clip.mp4", "file", "clip.mp4", False, "ffmpeg"),
        ("file:///data/clip.avi", "file", "/data/clip.avi", False, "ffmpeg"),
        ("file://rel/clip.avi", "file", "rel/clip.avi", False, "ffmpeg"),
        # RFC 8089's host (before: read as a relative folder "localhost")
        ("file://localhost/data/clip.avi", "file", "/data/clip.avi", False, "ffmpeg"),
        ("0", "camera", 0, True, "any"),
        ("2", "camera", 2, True, "any"),
        ("v4l2:///dev/video0", "camera", "/dev/video0", True, "v4l2"),
        ("v4l2://1", "camera", 1, True, "v4l2"),
        ("/dev/video3", "camera", "/dev/video3", True, "v4l2"),
        ("rtsp://10.0.0.2:554/live", "network", "rtsp://10.0.0.2:554/live", True, "ffmpeg"),
        ("http://cam.local/video.mjpg", "network", "http://cam.local/video.mjpg", True, "ffmpeg"),
        ("https://example.org/s.m3u8", "network", "https://example.org/s.m3u8", True, "ffmpeg"),
        ("photo.JPG", "images", "photo.JPG", False, "images"),
        ("shots/*.png", "images", "shots/*.png", False, "images"),
    ],
)
def test_parse_source(uri, kind, target, live, api):
    s = parse_source(uri)
    assert (s.kind, s.target, s.live, s.api) == (kind, target, live, api)


def test_parse_folder(tmp_path):
    s = parse_source(str(tmp_path))
    assert s.kind == "images" and not s.live


def test_parse_csi_pipeline():
    s = parse_source("csi://0")
    assert s.kind == "csi" and s.live and s.api == "gstreamer"
    assert s.target == csi_pipeline(0, 1280, 720, 30, 0)
    assert s.target.startswith("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM)")
    assert "framerate=(fraction)30/1" in s.target and "flip-method=0" in s.target
    assert s.target.endswith("appsink drop=true max-buffers=1 sync=false")
    s = parse_source("csi://1?width=1920&height=1080&framerate=60&flip=rotate-180")
    assert "sensor-id=1" in s.target and "width=(int)1920, height=(int)1080" in s.target
    assert "framerate=(fraction)60/1" in s.target and "flip-method=2" in s.target
    s = parse_source("csi://0", width=640, height=480, fps=15, flip="horizontal")
    assert "width=(int)640" in s.target and "15/1" in s.target and "flip-method=4" in s.target


@pytest.mark.parametrize(
    "flip, out",
    [
        ("none", (1920, 1080)),
        ("rotate-180", (1920, 1080)),
        ("horizontal", (1920, 1080)),
        ("counterclockwise", (1080, 1920)),
        ("clockwise", (1080, 1920)),
        ("1", (1080, 1920)),
        ("upper-right-diagonal", (1080, 1920)),
        ("upper-left-diagonal", (1080, 1920)),
    ],
)
def test_csi_rotations_transpose_the_output_caps(flip, out):
    """nvvidconv rotates by 90 degrees into a portrait frame: the caps after it must say so,
    or it scales the rotated picture back to landscape (the sensor mode keeps its own caps)."""
    s = parse_source(f"csi://0?width=1920&height=1080&flip={flip}")
    sensor, after = s.target.split(" ! nvvidconv ")
    assert "width=(int)1920, height=(int)1080" in sensor
    caps = after.split(" ! ")[1]
    assert caps == f"video/x-raw, width=(int){out[0]}, height=(int){out[1]}, format=(string)BGRx"


def test_parse_gstreamer_pipeline():
    s = parse_source("videotestsrc ! videoconvert ! appsink")
    assert s.kind == "gstreamer" and s.target == "videotestsrc ! videoconvert ! appsink"
    s = parse_source("v4l2src device=/dev/video1 ! video/x-raw,width=640")
    assert s.target.endswith("! videoconvert ! appsink")


@pytest.mark.parametrize(
    "uri, msg",
    [
        ("", "empty source"),
        ("foo://bar", "unknown scheme"),
        ("csi://left", "sensor id"),
        ("csi://0?bogus=1", "unknown option"),
        ("csi://0?width=abc", "width must be an integer"),
        ("csi://0?flip=sideways", "flip must be one of"),
        ("v4l2://camera", "v4l2:///dev/videoN"),
        ("rtsp://", "no host"),
        (None, "source must be a file, .* got NoneType"),  # before: "empty source"
        (1.5, "source must be a file, .* got float"),
        # before: tracebacks from OpenCV (a C int) and from urllib
        ("2147483648", r"camera index 2147483648 is out of range .*write \./2147483648"),
        ("v4l2://9999999999999", "camera index 9999999999999 is out of range"),
        ("csi://99999", "camera index 99999 is out of range"),
        ("http://[::1", "not a valid URI"),
        ("rtsp://[zz]/x", "not a valid URI"),
        ("http://h:99999/x", "not a valid URI"),
    ],
)
def test_parse_errors(uri, msg):
    with pytest.raises(UserError, match=msg):
        parse_source(uri)


# ---- opening and reading -------------------------------------------------------------------------


def test_read_real_avi():
    path = shared("data/videos/00-1.avi")
    with open_source(str(path)) as src:
        assert isinstance(src, FileSource)
        assert (src.width, src.height, src.fps, src.frame_count) == (160, 120, 20.0, 228)
        frames = []
        while (f := src.read()) is not None:
            frames.append((f.index, f.t, f.image.shape))
    assert [i for i, _, _ in frames] == list(range(228))
    assert frames[20][1] == pytest.approx(1.0)
    assert frames[0][2] == (120, 160, 3)
    assert not src.errors and not src.incomplete


def _frames_of(path, n):
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < n:
        ok, f = cap.read()
        assert ok
        out.append(f)
    cap.release()
    return out


def test_image_folder_and_glob(tmp_path):
    frames = _frames_of(shared("data/videos/00-1.avi"), 3)
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"img{i * 5}.png"), f)  # img0, img5, img10: natural order
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "img7.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    warnings = []
    src = open_source(str(tmp_path), warn=warnings.append)
    assert isinstance(src, ImageSource) and src.frame_count == 4
    got = []
    while (f := src.read()) is not None:
        got.append(f)
    assert [f.index for f in got] == [0, 1, 3]  # img0, img5, (img7 unreadable), img10
    assert np.array_equal(got[0].image, frames[0])
    assert list(src.skipped) == [2] and "img7.jpg" in warnings[0]
    # each frame names its file (the events' "path")
    assert [f.path for f in got] == [str(tmp_path / f"img{i}.png") for i in (0, 5, 10)]
    assert [s["path"] for s in src.skipped_files] == [str(tmp_path / "img7.jpg")]
    assert src.describe()["skipped_files"] == 1 and src.skipped.total == 1
    src = open_source(str(tmp_path / "img*.png"))
    assert src.frame_count == 3 and [src.read().index for _ in range(3)] == [0, 1, 2]


def test_missing_and_undecodable(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))
    bad = tmp_path / "notavideo.avi"
    bad.write_text("hello")
    with pytest.raises(UserError, match="cannot decode"):
        open_source(str(bad))
    with pytest.raises(UserError, match="no images"):
        open_source(str(tmp_path / "*.png"))


def _corrupt(tmp_path, truncate: bool):
    data = bytearray(shared("data/videos/00-1.avi").read_bytes())
    if truncate:
        out = tmp_path / "truncated.avi"
        out.write_bytes(bytes(data[: len(data) // 2]))
        return out
    rng = np.random.default_rng(0)
    for off in (len(data) // 3, len(data) // 2):
        data[off : off + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    out = tmp_path / "corrupt.avi"
    out.write_bytes(bytes(data))
    return out


def test_corrupt_frames_mid_file_are_skipped_and_reported(tmp_path):
    warnings = []
    src = open_source(str(_corrupt(tmp_path, truncate=False)), warn=warnings.append)
    idx = []
    while (f := src.read()) is not None:
        idx.append(f.index)
    src.close()
    assert 200 <= len(idx) < 228
    assert idx[-1] == 227  # the frames after the damage keep their numbers
    assert sorted(set(idx) | set(src.skipped)) == list(range(228))
    assert src.errors and "could not be decoded" in warnings[0]
    assert not src.incomplete  # read to its end: the run completes


def test_truncated_file_is_reported_incomplete(tmp_path):
    warnings = []
    src = open_source(str(_corrupt(tmp_path, truncate=True)), warn=warnings.append)
    n = 0
    while src.read() is not None:
        n += 1
    src.close()
    assert 0 < n < 228
    assert src.incomplete and "truncated" in warnings[-1]


def test_gstreamer_without_support_is_a_clear_error():
    if "GStreamer:                   YES" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(UserError, match="without GStreamer"):
        open_source("csi://0")


def test_network_stream_drop_reconnect_and_loss():
    """A real MJPEG-over-HTTP stream (our own preview server) that goes away and comes back."""
    from edge_fer.runtime.preview import MJPEGPreview

    server = MJPEGPreview(0)
    port = server.port
    box = {"server": server}
    stop, _ = feed_frames(lambda f: box["server"].write(f), (48, 64, 3))
    warnings = []
    src = open_source(
        f"http://127.0.0.1:{port}/stream", warn=warnings.append, reconnect_timeout=1.5
    )
    try:
        assert src.live and (src.width, src.height) == (64, 48)
        first = [src.read(timeout=5) for _ in range(3)]
        assert all(f is not None for f in first)
        assert [f.index for f in first] == sorted({f.index for f in first})
        # the stream drops, and comes back on the same port 0.5 s later
        server.close()
        time.sleep(0.5)
        box["server"] = MJPEGPreview(port)
        deadline = time.monotonic() + 10
        while not src.gaps and time.monotonic() < deadline:
            assert src.read(timeout=1) is not None or not src.incomplete
        assert src.gaps and src.gaps[0]["seconds"] > 0 and not src.gaps[0].get("end")
        assert src.read(timeout=5) is not None  # frames flow again
        # now it goes away for good: the source ends, reports the loss
        box["server"].close()
        deadline = time.monotonic() + 15
        while not src.ended and time.monotonic() < deadline:
            src.read(timeout=1)
        assert src.read(timeout=1) is None
        assert src.incomplete and src.gaps[-1].get("end")
        assert "lost" in src.errors[-1]
    finally:
        stop.set()
        src.close()
        box["server"].close()


def test_ffmpeg_log_lines_stay_off_stderr(tmp_path):
    """A truncated AVI, read in a fresh process: FFmpeg's own "[mjpeg @ 0x...]" complaints do
    not reach stderr (only our warning does), unless the user asks for them by environment."""
    import os
    import subprocess
    import sys

    data = mjpg_avi(tmp_path / "ok.avi").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2 + 37])  # ends inside a frame's quantisation table
    ours = (
        "import sys; from edge_fer.runtime.sources import open_source\n"
        "src = open_source(sys.argv[1])\n"
        "while src.read() is not None: pass\n"
    )
    plain = (  # the control: OpenCV alone, FFmpeg at its default level
        "import sys, cv2\n"
        "cap = cv2.VideoCapture(sys.argv[1], cv2.CAP_FFMPEG)\n"
        "while cap.read()[0]: pass\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}

    def run(code):
        proc = subprocess.run(
            [sys.executable, "-c", code, str(cut)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return proc.stdout + proc.stderr

    assert "[mjpeg @" in run(plain)
    (line,) = run(ours).strip().splitlines()
    assert line.startswith("edge-fer: warning: ") and "truncated" in line


def test_outage_in_progress_at_interrupt_is_a_gap():
    """The stream goes away and the run stops before it comes back: the outage is in `gaps`,
    marked ongoing, without waiting for the reader thread's reconnect attempts."""
    from edge_fer.runtime.preview import MJPEGPreview

    server = MJPEGPreview(0)
    stop, _ = feed_frames(server.write, (48, 64, 3))
    warnings = []
    src = open_source(
        f"http://127.0.0.1:{server.port}/stream", warn=warnings.append, reconnect_timeout=60
    )
    try:
        assert src.read(timeout=5) is not None
        server.close()
        deadline = time.monotonic() + 10
        while not any("reconnecting" in w for w in warnings) and time.monotonic() < deadline:
            src.read(timeout=0.5)
        assert any("reconnecting" in w for w in warnings)
        time.sleep(0.3)
        assert len(src.gaps) == 0 and src.gaps.total == 0  # still in the outage
        src.interrupt()
        assert len(src.gaps) == 1
        gap = src.gaps[0]
        assert gap["ongoing"] is True and not gap.get("end") and gap["seconds"] >= 0.3
    finally:
        stop.set()
        src.close()
    assert len(src.gaps) == 1  # the reader thread does not record it a second time
    assert not src.incomplete


def test_a_video_file_on_a_web_server_is_read_to_its_end_once(tmp_path):
    """`run http://host/clip.avi` treated the file as a live stream: at its end it was reopened
    and replayed, for ever, and most frames were dropped while the run was busy."""
    import functools
    import http.server
    import threading

    clip = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 20, (64, 48))
    for i in range(30):
        w.write(np.full((48, 64, 3), 8 * i, np.uint8))
    w.release()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    warnings = []
    try:
        src = open_source(f"http://127.0.0.1:{server.server_address[1]}/clip.avi",
                          warn=warnings.append, reconnect_timeout=2)  # fmt: skip
        got = []
        while (f := src.read(timeout=10)) is not None:
            got.append(f.index)
            time.sleep(0.01)  # a busy reader: a stream would drop frames meanwhile
        src.close()
    finally:
        server.shutdown()
    assert got == list(range(30)) and src.dropped == 0
    assert not src.gaps and not src.incomplete and warnings == []


# ---- timing and damage in real files --------------------------------------------------------


def _variable_rate_mp4(path, deltas: list[int]) -> list[float]:
    """A real MP4 (OpenCV's mp4v writer) of len(deltas) frames whose time-to-sample table is
    rewritten so that frame i lasts deltas[i] units of the track's time scale: a variable
    frame rate, as phones and stalling cameras write. Returns each frame's time in seconds."""
    import struct

    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25, (64, 48))
    for i in range(len(deltas)):
        w.write(np.full((48, 64, 3), (i * 8) % 256, np.uint8))
    w.release()
    data = bytearray(path.read_bytes())
    chain = [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stts"]
    at, parents, end = 0, [], len(data)
    for name in chain:  # walk down to stts, remembering where each box's size is
        while at < end:
            size, kind = struct.unpack(">I4s", data[at : at + 8])
            if kind == name:
                break
            at += size
        assert at < end, f"no {name!r} box"
        parents.append(at)
        if name == b"mdhd" or name == b"stts":
            break
        end, at = at + size, at + 8
    stts = parents[-1]
    old_size = struct.unpack(">I", data[stts : stts + 4])[0]
    runs: list[list[int]] = []
    for d in deltas:
        if runs and runs[-1][1] == d:
            runs[-1][0] += 1
        else:
            runs.append([1, d])
    body = struct.pack(">II", 0, len(runs)) + b"".join(struct.pack(">II", n, d) for n, d in runs)
    new = struct.pack(">I4s", 8 + len(body), b"stts") + body
    grow = len(new) - old_size
    for box in parents[:-1]:  # moov follows mdat (OpenCV's writer): no chunk offset moves
        size = struct.unpack(">I", data[box : box + 4])[0]
        data[box : box + 4] = struct.pack(">I", size + grow)
    data[stts : stts + old_size] = new
    edts = data.find(b"edts", parents[1], parents[1] + 200)  # the trak's edit list would cut
    if edts > 0:  # the frames past the old duration: without one, the samples' times count
        data[edts : edts + 4] = b"free"
    path.write_bytes(bytes(data))
    scale = 12800  # the track's time scale for 25 fps (512 units a frame)
    return [sum(deltas[:i]) / scale for i in range(len(deltas))]


def _read_all(src):
    out = []
    while (f := src.read()) is not None:
        out.append(f)
    src.close()
    return out


@pytest.mark.parametrize(
    "name, deltas",
    [
        # a stall of one second after frame 15 (a camera that froze), then the normal rate
        ("stall", [512] * 15 + [12800] + [512] * 14),
        # the last frame held for two seconds (a still ending): the average rate falls to 9/s
        ("held_end", [512] * 30 + [25600]),
    ],
)
def test_a_variable_frame_rate_loses_no_frame_and_keeps_its_times(tmp_path, name, deltas):
    """A jump in the timestamps was taken for frames that could not be decoded: the stall
    reported frames 16-40 skipped, the held end 49 of them, and the times of every frame
    were stretched to the average rate (frame 29 of the held end at 2.99 s, not 1.16)."""
    path = tmp_path / f"{name}.mp4"
    times = _variable_rate_mp4(path, deltas)
    warnings: list[str] = []
    frames = _read_all(open_source(str(path), warn=warnings.append))
    assert [f.index for f in frames] == list(range(len(deltas)))
    assert warnings == []
    assert [f.t for f in frames] == pytest.approx(times, abs=1e-3)


def test_a_constant_rate_file_keeps_its_nominal_times(tmp_path):
    path = tmp_path / "cfr.mp4"
    _variable_rate_mp4(path, [512] * 20)
    frames = _read_all(open_source(str(path)))
    assert [f.t for f in frames] == [i / 25 for i in range(20)]  # exactly idx / fps, as ever


def test_a_long_run_of_bad_frames_mid_file_does_not_end_it(tmp_path):
    """71 damaged frames in a row (MJPEG frames 40-110 of 150) ended the read after 50 failed
    reads: "the file ends after frame 40", the 39 good frames after them never read."""
    path = tmp_path / "mid.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 20, (160, 120))
    for i in range(150):
        w.write(np.full((120, 160, 3), i, np.uint8))
    w.release()
    data = bytearray(path.read_bytes())
    index = data.rfind(b"idx1")  # the frames' chunks lie before the index, which names them too
    starts = [i for i in range(index) if data[i : i + 4] == b"00dc"][-150:]  # (and a header)
    rng = np.random.default_rng(0)
    for k in range(40, 111):
        at = starts[k] + 8  # the chunk's JPEG: its markers and data overwritten
        n = int.from_bytes(data[starts[k] + 4 : starts[k] + 8], "little")
        data[at : at + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    warnings: list[str] = []
    src = open_source(str(path), warn=warnings.append)
    frames = _read_all(src)
    assert [f.index for f in frames] == list(range(40)) + list(range(111, 150))
    assert len(warnings) == 1 and "frames 40-110 could not be decoded" in warnings[0], warnings
    assert not src.incomplete
