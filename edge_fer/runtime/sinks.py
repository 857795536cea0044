"""Where the results go: annotated video, JSON Lines events, summary, a window, an MJPEG preview.

Every sink is opened before the first frame (so a bad path fails at once, with one line) and
closed on every exit path. The events file is written one complete line at a time and flushed,
so whatever stops the run (Ctrl-C, a crash, a full disk) leaves valid JSON Lines behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np

from edge_fer.errors import UserError

# ---- paths -----------------------------------------------------------------------------------


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """UserError unless `path` can be created or overwritten as a file."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} {p}: is a folder, expected a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise UserError(f"{what} {p}: folder {parent} does not exist")
    if not parent.is_dir():
        raise UserError(f"{what} {p}: {parent} is not a folder")
    if p.exists() and not os.access(p, os.W_OK):
        raise UserError(f"{what} {p}: not writable (permission denied)")
    if not p.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} {p}: folder {parent} is not writable (permission denied)")
    return p


def _os_error(what: str, path, exc: OSError) -> UserError:
    if exc.errno == errno.ENOSPC:
        reason = "the disk is full"
    elif exc.errno == errno.EDQUOT:
        reason = "the disk quota is exceeded"
    else:
        reason = exc.strerror or str(exc)
    return UserError(f"cannot write {what} {path}: {reason}")


# ---- drawing ---------------------------------------------------------------------------------

_PALETTE = [
    (66, 135, 245), (80, 200, 120), (245, 170, 66), (200, 90, 220), (70, 220, 230),
    (240, 90, 90), (150, 150, 255), (120, 240, 200), (255, 200, 120), (180, 120, 80),
]  # fmt: skip


def track_color(track_id: int) -> tuple[int, int, int]:
    return _PALETTE[(track_id - 1) % len(_PALETTE)] if track_id > 0 else (160, 160, 160)


def annotate(image: np.ndarray, faces: list[dict], info: str | None = None) -> np.ndarray:
    """Draw each face's box, track id, label and confidence on a copy of a BGR frame."""
    out = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h = out.shape[0]
    scale = max(0.35, min(1.0, h / 720.0))
    thick = 1 if h < 600 else 2
    for f in faces:
        x, y, w, hh = (round(v) for v in f["box"])
        color = track_color(int(f.get("track", 0)))
        cv2.rectangle(out, (x, y), (x + w, y + hh), color, thick, cv2.LINE_AA)
        text = f"#{f.get('track', '?')}"
        if f.get("label") is not None:
            text += f" {f['label']} {100 * f.get('conf', 0):.0f}%"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y - 3 if y - th - base - 3 >= 0 else y + hh + th + 3
        cv2.rectangle(out, (x, ty - th - 2), (x + tw + 2, ty + base - 1), color, -1)
        cv2.putText(out, text, (x + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)  # fmt: skip
    if info:
        cv2.putText(out, info, (4, int(14 * scale / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
    return out


# ---- video -----------------------------------------------------------------------------------

# codecs that opencv-python(-headless)'s FFmpeg can encode, by container, best first
_CODECS = {
    ".mp4": ["mp4v", "avc1"],
    ".m4v": ["mp4v"],
    ".mov": ["mp4v", "MJPG"],
    ".avi": ["MJPG", "XVID", "mp4v"],
    ".mkv": ["XVID", "MJPG", "mp4v"],
}


class VideoSink:
    """Annotated frames to a video file (mp4v in .mp4/.mov, MJPG in .avi, XVID in .mkv).

    Frames of another size than the first are letterboxed to it. The writer is always released
    on close, so an interrupted run leaves a playable file. Free disk space is checked every
    `disk_check_every` frames, because OpenCV's writer does not report write errors.
    """

    MIN_FREE_BYTES = 16 << 20

    def __init__(self, path, fps: float, size: tuple[int, int], disk_check_every: int = 50) -> None:
        self.path = check_writable(path, "video")
        ext = self.path.suffix.lower()
        if ext not in _CODECS:
            raise UserError(
                f"video {self.path}: unsupported container {ext or '(none)'}; "
                f"use one of {', '.join(_CODECS)}"
            )
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.size = (int(size[0]), int(size[1]))
        self.frames = 0
        self._check_every = max(1, disk_check_every)
        self.writer = None
        self.codec = None
        for fourcc in _CODECS[ext]:
            w = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter_fourcc(*fourcc), self.fps, self.size
            )
            if w.isOpened():
                self.writer, self.codec = w, fourcc
                break
            w.release()
        if self.writer is None:
            raise UserError(
                f"video {self.path}: no {'/'.join(_CODECS[ext])} encoder in this OpenCV build; "
                "try .avi (MJPG) or .mp4 (mp4v)"
            )
        self._check_disk()

    def _check_disk(self) -> None:
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            return
        if free < self.MIN_FREE_BYTES:
            raise UserError(
                f"cannot write video {self.path}: the disk is full ({free >> 20} MiB free)"
            )

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            return
        if (image.shape[1], image.shape[0]) != self.size:
            image = letterbox(image, self.size)
        self.writer.write(image)
        self.frames += 1
        if self.frames % self._check_every == 0:
            self._check_disk()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    ih, iw = image.shape[:2]
    s = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * s)), max(1, round(ih * s))
    out = np.zeros((h, w, 3), np.uint8)
    r = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    if r.ndim == 2:
        r = cv2.cvtColor(r, cv2.COLOR_GRAY2BGR)
    y0, x0 = (h - nh) // 2, (w - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = r
    return out


# ---- events ----------------------------------------------------------------------------------


class EventsSink:
    """JSON Lines, one object a line, each line written whole and flushed.

    If a write fails (a full disk), the file is cut back to the end of the last complete line,
    so it stays valid JSON Lines, and a UserError says why.
    """

    def __init__(self, path) -> None:
        self.path = check_writable(path, "events file")
        try:
            self._f = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise _os_error("events file", self.path, exc) from None
        self._good = 0  # byte offset after the last complete line
        self.lines = 0

    def write(self, record: dict) -> None:
        if self._f is None:
            return
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        try:
            self._f.write(line)
            self._f.flush()
        except OSError as exc:
            self._rollback()
            raise _os_error("events file", self.path, exc) from None
        self._good += len(line.encode("utf-8"))
        self.lines += 1

    def _rollback(self) -> None:
        f, self._f = self._f, None
        try:
            f.close()
        except OSError:
            pass
        try:
            with open(self.path, "r+b") as g:
                g.truncate(self._good)
        except OSError:
            pass

    def close(self) -> None:
        if self._f is None:
            return
        f, self._f = self._f, None
        try:
            f.flush()
            os.fsync(f.fileno())
        except OSError:
            pass
        finally:
            try:
                f.close()
            except OSError:
                pass


def write_json_atomic(path, obj: dict) -> None:
    """Write JSON to a temporary name beside `path`, then rename: never a half-written file."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, p)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise _os_error("summary", p, exc) from None


# ---- on-screen window ------------------------------------------------------------------------


def gui_available() -> str | None:
    """None when cv2.imshow can work here, else the reason it cannot."""
    info = cv2.getBuildInformation()
    m = re.search(r"^\s*GUI:\s*(\S+)", info, re.MULTILINE)
    if m and m.group(1).upper() == "NONE":
        return (
            "this OpenCV has no GUI support (opencv-python-headless); install opencv-python for "
            "--show, or watch the stream with --preview-port"
        )
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set); use --preview-port to watch in a browser"
    return None


class WindowSink:
    """cv2.imshow in the main thread; closing the window or pressing q / Esc stops the run."""

    def __init__(self, title: str = "edge-fer") -> None:
        why = gui_available()
        if why:
            raise UserError(f"--show: {why}")
        self.title = title
        self.closed_by_user = False
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise UserError(f"--show: cannot open a window ({exc})") from None

    def write(self, image: np.ndarray) -> None:
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE)
        if key in (ord("q"), 27) or visible < 1:
            self.closed_by_user = True

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass


