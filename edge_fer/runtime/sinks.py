"""Where the results go: annotated video, JSON Lines events, summary, a window, an MJPEG preview.

Nothing the user already has is lost (issue #13):
- every output path is compared with every input and every other output before anything is
  opened (`edge_fer.fileio.check_collisions`);
- nothing that exists is truncated before the run starts: the video is written to a temporary
  file beside its target and renamed over it when it is finalised (`abort` on a start-up
  failure removes it instead); the events file is opened when the first frame is about to be
  processed (`start`); the summary is written at the end through `edge_fer.fileio`;
- devices and pipes are written through (events to /dev/stdout or a FIFO) or refused with one
  line (a video needs a file it can seek in); a symlink stays a link, its target gets the data;
- an existing events or summary file is replaced only when it is an earlier run's, or with
  --force (`check_replaceable`, at start-up); an existing video only when an earlier edge-fer
  run wrote exactly that file (the record of finished videos in the cache folder, or its
  folder's marker), or with --force (`check_video_replaceable`, at start-up).

The events file is written one complete line at a time and flushed, so whatever stops the run
(Ctrl-C, a crash, a full disk) leaves valid JSON Lines behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from edge_fer import errors, fileio, imageio
from edge_fer.errors import UserError

# ---- paths -----------------------------------------------------------------------------------


def check_writable(
    path: str | os.PathLike, what: str, made: str | os.PathLike | None = None
) -> Path:
    """UserError unless `path` can be created or overwritten as a file. made: a folder the
    run creates before it writes `path` (run --out NEW/), which may be `path`'s folder."""
    p = Path(path)
    inside_new = (
        made is not None
        and not Path(made).exists()
        and p.parent.absolute() == Path(made).absolute()
        and not fileio.names_folder(path)
    )
    if inside_new:
        return p  # the folder's own place was checked (image_out.check_folder)
    if p.is_dir():
        raise UserError(f"{what} {p}: is a folder, expected a file name")
    if fileio.names_folder(path):
        raise UserError(f"{what} {os.fspath(path)}: names a folder (it ends in /), expected a "
                        "file name")  # fmt: skip
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise UserError(f"{what} {p}: folder {parent} does not exist")
    if not parent.is_dir():
        raise UserError(f"{what} {p}: {parent} is not a folder")
    if p.exists() and not os.access(p, os.W_OK):
        raise UserError(f"{what} {p}: not writable (permission denied)")
    if os.path.islink(p) and not p.exists():  # a dangling link: its target is what is written
        target = Path(os.path.realpath(p))  # (was found only after the run)
        if not target.parent.is_dir():
            raise UserError(f"{what} {p}: a link to {target}, whose folder does not exist")
        parent = target.parent
    if not fileio.is_stream(p):
        # written through a temporary file beside it: a probe file, as os.access answers yes
        # to root for /proc and read-only mounts (a --summary there failed after the run)
        why = fileio.cannot_write_in(parent)
        if why is not None:
            raise UserError(f"{what} {p}: cannot write in folder {parent} ({why})")
    return p


# the keys every events line has ({"frame", "t", "faces"}, and "path" for photos:
# pipeline.Pipeline) and every summary has (Pipeline.summary, pipeline.startup_summary): how a
# run knows an earlier run's --events or --summary, which it replaces without --force
EVENT_KEYS = frozenset({"frame", "t", "faces"})
SUMMARY_KEYS = frozenset({"source", "frames", "tracks", "complete", "outputs"})
_FIRST_LINE_MAX = 8 << 20  # an events line of thousands of faces is well under this


def is_earlier_events(path: str | os.PathLike) -> bool:
    """Whether the file `path` begins with an events line (a JSON object with EVENT_KEYS)."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(_FIRST_LINE_MAX)
        d = json.loads(first)
    except (OSError, ValueError, RecursionError):  # RecursionError: '[' nested 100k deep
        return False
    return isinstance(d, dict) and EVENT_KEYS <= set(d)


def is_earlier_summary(path: str | os.PathLike) -> bool:
    """Whether the file `path` holds a run's summary (a JSON object with SUMMARY_KEYS)."""
    return fileio.json_with_keys(path, set(SUMMARY_KEYS)) is not None


def check_replaceable(flag: str, path: str | os.PathLike | None, force: bool = False) -> None:
    """UserError unless `path`, given as --events or --summary, may be written over (new,
    empty, a stream, or an earlier run's events or summary) or `force` is given."""
    events = flag == "--events"
    fileio.check_replaceable(
        f"{flag} {os.fspath(path) if path else ''}",
        path,
        is_earlier_events if events else is_earlier_summary,
        "run's events" if events else "run's summary",
        force,
    )


# ---- the videos edge-fer wrote ---------------------------------------------------------------
# A video can carry no marker of its own, so the ones edge-fer finished writing (VideoSink.close:
# `run --out`, `detect --draw`, the demo's clip) are listed in the per-user cache folder
# (edge_fer.cache.cache_dir), each by its absolute path with the size, modification time and
# device and inode it was left with. An existing video is replaced without --force only when
# it is still exactly that file (`check_video_replaceable`); a user's own video never is.
VIDEO_RECORD = "written_videos.json"
VIDEO_RECORD_MAX = 1000  # the latest videos written; an older one then needs --force
_RECORD_FORMAT = "edge-fer written videos"
_RECORD_MAX_BYTES = 4 << 20  # 1,000 entries are about 200 KB; more is not a record of ours
_RECORD_LOCK_WAIT_S = 5.0


def video_record_path() -> Path | None:
    """The record of the videos edge-fer wrote (`VIDEO_RECORD` in the cache folder), or None
    where there is no cache folder."""
    from edge_fer.cache import cache_dir

    root = cache_dir()
    return Path(root) / VIDEO_RECORD if root else None


def _video_stamp(path: str | os.PathLike) -> list[int] | None:
    """[size, mtime_ns, device, inode] of the regular file at `path` (links followed)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return [st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino]


def _read_video_record(record: Path) -> dict[str, list[int]]:
    """The videos `record` lists, oldest first; a record that is missing, unreadable, corrupt
    or of another kind counts as empty (nothing is then taken for ours)."""
    try:
        with open(record, "rb") as fh:
            d = json.loads(fh.read(_RECORD_MAX_BYTES + 1))
    except (OSError, ValueError, RecursionError):
        return {}
    videos = d.get("videos") if isinstance(d, dict) and d.get("format") == _RECORD_FORMAT else None
    if not isinstance(videos, dict):
        return {}
    return {
        k: v
        for k, v in videos.items()
        if isinstance(v, list)
        and len(v) == 4
        and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    }


def record_written_video(path: str | os.PathLike) -> None:
    """List the video just finished at `path` in the record (the latest VIDEO_RECORD_MAX kept),
    written atomically (edge_fer.fileio.write_bytes). Best effort: without a cache folder, or
    when it cannot be written, nothing is recorded (a later run then needs --force to replace
    the video) and the run goes on."""
    record = video_record_path()
    stamp = _video_stamp(path)
    if record is None or stamp is None:
        return
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        try:  # two runs finishing at once each keep their video
            lock: fileio.FolderLock | None = fileio.FolderLock(
                record.parent, "edge-fer run", wait_s=_RECORD_LOCK_WAIT_S
            )
        except UserError:  # held for that long: written without it (best effort)
            lock = None
        try:
            videos = _read_video_record(record)
            key = os.path.realpath(path)
            videos.pop(key, None)  # to the end: the latest
            videos[key] = stamp
            kept = dict(list(videos.items())[-VIDEO_RECORD_MAX:])
            d = {"format": _RECORD_FORMAT, "version": 1, "videos": kept}
            fileio.write_bytes(record, (json.dumps(d) + "\n").encode("utf-8", "surrogateescape"))
        finally:
            if lock is not None:
                lock.release()
    except (OSError, ValueError):
        pass


def is_earlier_video(path: str | os.PathLike) -> bool:
    """Whether the file at `path` (a link's target) is a video an earlier edge-fer run wrote
    and nothing changed since: the record lists it with its size, time, device and inode as it
    is now, or the marker of its folder (an `--out DIR/`, `--draw DIR/` or demo folder:
    image_out.MARKER) lists it as that folder's checks take its files."""
    from edge_fer.runtime import image_out

    stamp = _video_stamp(path)
    if stamp is None:
        return False
    real = os.path.realpath(path)
    record = video_record_path()
    if record is not None and _read_video_record(record).get(real) == stamp:
        return True
    try:
        listed = image_out.written_names(Path(real).parent)
    except UserError:  # a marker that is a link, or unreadable: not a folder of ours
        return False
    name = Path(real).name
    if not listed or name not in listed:
        return False
    written = listed[name]  # None: listed by name while a run wrote it (as check_folder takes it)
    return written is None or written == (stamp[0], stamp[1])


def check_video_replaceable(flag: str, path: str | os.PathLike | None, force: bool = False) -> None:
    """UserError (one line) unless the video output `path` (`flag`: --out, --draw) may be
    written: new, empty, not a regular file (a device or folder: refused as such elsewhere), a
    video an earlier edge-fer run wrote (`is_earlier_video`), or `force` given. Until
    2026-12-06 any file there was replaced, a user's own video included."""
    lead = f"{flag} {os.fspath(path) if path else ''}"
    fileio.check_replaceable(lead, path, is_earlier_video, "run's video", force)


def _os_error(what: str, path, exc: OSError) -> UserError:
    return UserError(f"cannot write {what} {path}: {fileio.os_error_reason(exc)}")


# ---- drawing ---------------------------------------------------------------------------------

_PALETTE = [
    (66, 135, 245),
    (80, 200, 120),
    (245, 170, 66),
    (200, 90, 220),
    (70, 220, 230),
    (240, 90, 90),
    (150, 150, 255),
    (120, 240, 200),
    (255, 200, 120),
    (180, 120, 80),
]


def track_color(track_id: int) -> tuple[int, int, int]:
    return _PALETTE[(track_id - 1) % len(_PALETTE)] if track_id > 0 else (160, 160, 160)


def annotate(image: np.ndarray, faces: list[dict], info: str | None = None) -> np.ndarray:
    """Draw each face's box, track id, label and confidence on a copy of a BGR frame; a held
    face (followed by the tracker, not detected: `"held": true`) gets a thin box and "held"."""
    out = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h = out.shape[0]
    scale = max(0.35, min(1.0, h / 720.0))
    thick = 1 if h < 600 else 2
    for f in faces:
        x, y, w, hh = (round(v) for v in f["box"])
        color = f.get("color") or track_color(int(f.get("track", 0)))  # "color", "text": detect's
        held = bool(f.get("held"))
        cv2.rectangle(out, (x, y), (x + w, y + hh), color, 1 if held else thick, cv2.LINE_AA)
        text = f.get("text") or f"#{f.get('track', '?')}"
        if f.get("label") is not None:
            text += f" {f['label']} {100 * f.get('conf', 0):.0f}%"
        if held:
            text += " held"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y - 3 if y - th - base - 3 >= 0 else y + hh + th + 3
        cv2.rectangle(out, (x, ty - th - 2), (x + tw + 2, ty + base - 1), color, -1)
        cv2.putText(
            out, text, (x + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA
        )
    if info:
        cv2.putText(
            out,
            info,
            (4, int(14 * scale / 0.5)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
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


VIDEO_CONTAINERS = tuple(_CODECS)  # the extensions a video output may have

# MJPG (FFmpeg's, as opencv-python's VideoWriter runs it) overruns a heap buffer on tiny
# frames: a 4x4 or 5x5 .avi aborted the process (`free(): invalid next size (fast)`) and left
# its temporary file. Measured on OpenCV 5.1, each size in a child: 1x1..16x16 crashed at
# widths 2-7 only (4x4, 5x5, 2x8, 6x9, 5x13 ...; 2x24 and 7x24 too), never at 8 or more, heights
# 1-7 included (MALLOC_CHECK_=3). opencv/opencv#22420 says "less than 8 by 8"; an overrun is
# not always caught, so both sides must be 8. mp4v takes these sizes.
MJPG_MIN_SIDE = 8


def _open_writer(path: Path, codecs: list[str], fps: float, size: tuple[int, int]):
    """(writer, fourcc) for the first codec that opens, else (None, None)."""
    for fourcc in codecs:
        name = imageio.cv_name(path, "video")
        w = cv2.VideoWriter(name, cv2.VideoWriter.fourcc(*fourcc), fps, size)
        if w.isOpened():
            return w, fourcc
        w.release()
    return None, None


def _lock_file(f) -> bool:
    """An exclusive lock on the open file `f` for as long as it stays open (flock: the system
    drops it when the process dies, kill -9 included); False when another process holds it.
    True where there is no flock (Windows): nothing is locked."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks (some network mounts): write unlocked
        return True
    return True


def _file_size_limit() -> int | None:
    """The soft limit on the size of a file this process writes (ulimit -f), if any."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY or soft < 0 else int(soft)


STALE_AFTER_S = fileio.STALE_AFTER_S


def _remove_stale_temps(mine: Path, tail: str) -> None:
    """Remove the temporary videos that killed runs left beside the target, hidden and
    unplayable, which no run removed: the same name with another process id
    (`fileio.remove_if_stale`)."""
    prefix, ext = mine.name[: -len(tail)] + ".", tail[tail.index(".tmp") :]
    try:
        names = os.listdir(mine.parent)
    except OSError:
        return
    for n in names:
        pid = n[len(prefix) : -len(ext)] if n.startswith(prefix) and n.endswith(ext) else ""
        if pid.isdigit():
            fileio.remove_if_stale(mine.parent / n, int(pid))


def _unlink(path: Path | None) -> None:
    if path is None:
        return
    try:
        os.unlink(path)
    except OSError:
        pass


class VideoSink:
    """Annotated frames to a video file (mp4v in .mp4/.mov, MJPG in .avi, XVID in .mkv).

    The frames go to a temporary file beside the target (`.NAME.PID.tmp.EXT`): `close()`
    finalises it and renames it over the target (a symlink's target; the link stays), `abort()`
    removes it, so a run that fails to start leaves an existing video untouched and no partial
    file; so does `close()` when no frame was written (OpenCV's video of none does not play).
    A video put in place is listed in the record of the videos edge-fer wrote
    (`record_written_video`); whether an existing one may be replaced is the caller's check,
    made before the work (`check_video_replaceable`).
    Frames of another size than the first are letterboxed to it. Free disk space is checked
    every `disk_check_every` frames, because OpenCV's writer does not report write errors.
    The file's rate is the source's, within FPS_RANGE: a slower source (a time-lapse, a
    0.001 frames/s `--input-rate`) plays at 1 frame/s, as the encoders take nothing slower.
    """

    MIN_FREE_BYTES = 16 << 20
    # OpenCV's MJPG writer asserts fps >= 1 and FFmpeg's refuse 0.001; sources cap at 1000
    FPS_RANGE = (1.0, 1000.0)

    def __init__(
        self,
        path,
        fps: float,
        size: tuple[int, int],
        disk_check_every: int = 50,
        flag: str = "--out",
    ) -> None:
        # flag: the option that named `path`, for the messages (detect's is --draw)
        self.path = check_writable(path, "video")
        self.writer = None
        self.codec = None
        self._tmp: Path | None = None
        ext = self.path.suffix.lower()
        # before the container check, which would suggest "/dev/null/" or "-/" as a folder
        if fileio.is_stream(self.path) or os.fspath(path) == "-":
            raise UserError(
                f"video {self.path}: is a device, pipe or standard output; annotated frames "
                f"need a video file or a folder (DIR/); leave {flag} out to write none"
            )
        if ext not in _CODECS:
            folder = "" if ext else f", or {self.path}/ for a folder of annotated images"
            raise UserError(
                f"video {self.path}: unsupported container {ext or '(none)'}; "
                f"use one of {', '.join(_CODECS)}{folder}"
            )
        self.target = Path(os.path.realpath(self.path)) if self.path.is_symlink() else self.path
        self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else 25.0
        self.fps = min(max(self.fps, self.FPS_RANGE[0]), self.FPS_RANGE[1])
        self.size = (int(size[0]), int(size[1]))
        if self.size[0] <= 0 or self.size[1] <= 0:
            raise UserError(
                f"video {self.path}: the source reports no frame size "
                f"({self.size[0]}x{self.size[1]}), so no video can be made of it"
            )
        self.codecs = list(_CODECS[ext])
        if min(self.size) < MJPG_MIN_SIDE:  # before any file is made: the encoder crashes
            if self.codecs[0] == "MJPG":
                raise UserError(
                    f"video {self.path}: frames of {self.size[0]}x{self.size[1]} are too small "
                    f"for the MJPG encoder of {ext} (it needs at least {MJPG_MIN_SIDE}x"
                    f"{MJPG_MIN_SIDE}); use .mp4 (mp4v)"
                )
            # where it is only a fallback (.mov, .mkv) it is never tried
            self.codecs = [c for c in self.codecs if c != "MJPG"]
        self.frames = 0
        self.placed = False  # finalised and renamed over the target
        self._closed = False  # by close() or abort(): a later write is the caller's mistake
        self._check_every = max(1, disk_check_every)
        # OpenCV opens the temporary file by name, which must be UTF-8 (edge_fer.imageio); the
        # rename to the target takes any name
        name = self.target.name if imageio.utf8_name(self.target.name) else "edge-fer-video"
        self._tmp = fileio.hidden_beside(self.target, f".{os.getpid()}.tmp{ext}", name)
        _remove_stale_temps(self._tmp, f".{os.getpid()}.tmp{ext}")
        imageio.cv_name(self._tmp.parent, "video folder")
        try:
            try:  # OpenCV only says "not opened": find out first whether the folder takes a file
                with open(self._tmp, "wb"):
                    pass
            except OSError as exc:
                raise _os_error("video", self.path, exc) from None
            self.writer, self.codec = _open_writer(self._tmp, self.codecs, self.fps, self.size)
            if self.writer is None:
                raise UserError(self._why_not_opened(ext))
            self._check_disk()
        except BaseException:  # a signal included: no temporary file is left
            self.abort()
            raise

    def _why_not_opened(self, ext: str) -> str:
        codecs = "/".join(self.codecs)
        probe = fileio.hidden_beside(self.target, f".{os.getpid()}.probe{ext}")
        w, _ = _open_writer(probe, self.codecs, 25.0, (64, 64))
        if w is not None:
            w.release()
        _unlink(probe)
        if w is not None:  # the encoder is there: it is the frame size it refuses
            return (
                f"video {self.path}: the {codecs} encoder does not take "
                f"{self.size[0]}x{self.size[1]} frames"
            )
        return (
            f"video {self.path}: no {codecs} encoder in this OpenCV build; "
            "try .avi (MJPG) or .mp4 (mp4v)"
        )

    def _check_disk(self) -> None:
        removed = f"cannot write video {self.path}: its folder {self.target.parent} was removed"
        try:
            free = shutil.disk_usage(self.target.parent).free
        except FileNotFoundError:  # removed under the run: it wrote on into nothing, unsaid
            raise UserError(removed) from None
        except OSError:
            return
        if not self.target.parent.is_dir():  # removed, and a file put in its place
            raise UserError(removed)
        if free < self.MIN_FREE_BYTES:
            raise UserError(
                f"cannot write video {self.path}: the disk is full ({free >> 20} MiB free)"
            )
        # a file size limit (ulimit -f) stops the writes with EFBIG, which OpenCV does not
        # report either: the file stays at the limit while the run goes on
        limit = _file_size_limit()
        if limit is not None and self._tmp is not None:
            try:
                size = os.path.getsize(self._tmp)
            except OSError:
                return
            if size >= limit:
                raise UserError(
                    f"cannot write video {self.path}: the file size limit is reached "
                    f"(ulimit -f: {limit} bytes)"
                )

    def _check_written(self, tmp: Path) -> None:
        """UserError unless the finished file holds every frame written: OpenCV reports no
        write error (a quota, a size limit, an I/O error), and a video cut short was renamed
        over the user's file. The count is the container's (exact for these writers)."""
        self._check_disk()
        cap = cv2.VideoCapture(imageio.cv_name(tmp, "video"))
        try:
            n = round(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else -1
        finally:
            cap.release()
        # one more than counted is no short write: a signal raised as the encoder's call returned,
        # before the count (a Ctrl-C during that call is raised right there)
        if n < self.frames:
            held = "no playable frame" if n <= 0 else f"{n} of the {self.frames} frames"
            raise UserError(
                f"cannot write video {self.path}: the file written holds {held} (a file size "
                "limit, a quota or a disk error?); an existing video there is left as it was"
            )

    def write(self, image: np.ndarray, path: str | None = None, index: int = 0) -> None:
        """One annotated frame (`path`, `index`: where it came from; a video needs neither)."""
        if self._closed:  # (before: dropped without a word, as after a failure)
            raise ValueError(f"video {self.path}: written after close()")
        if self.writer is None:  # failed earlier (said then): nothing more is written
            return
        image = _bgr(image)  # the writer is opened for colour: it drops other frames silently
        if (image.shape[1], image.shape[0]) != self.size:
            image = letterbox(image, self.size)
        self.writer.write(image)
        self.frames += 1
        if self.frames % self._check_every == 0:
            self._check_disk()

    def _release(self) -> None:
        """Stop writing (once): the writer finishes the temporary file."""
        if self.writer is not None:
            w, self.writer = self.writer, None
            w.release()

    def close(self) -> None:
        """Finalise the video and put it in place of the target; with no frame, drop it."""
        self._closed = True
        if self.frames == 0:  # OpenCV leaves a stub of a header that no player opens
            self.abort()
            return
        tmp, self._tmp = self._tmp, None
        try:
            self._release()
            if tmp is None:
                return
            self._tmp = tmp  # for the size check
            try:
                self._check_written(tmp)
            finally:
                self._tmp = None
            with open(tmp, "rb") as fh:  # on disk before the rename: never an empty video
                os.fsync(fh.fileno())
            try:  # keep the permissions of the video being replaced
                os.chmod(tmp, stat.S_IMODE(os.stat(self.target).st_mode))
            except OSError:
                pass
            os.replace(tmp, self.target)
            self.placed = True
        except BaseException as exc:  # a signal included: no temporary file is left
            _unlink(tmp)
            if isinstance(exc, OSError):
                raise _os_error("video", self.path, exc) from None
            raise
        # ours: a later run may replace it without --force (check_video_replaceable)
        record_written_video(self.target)

    def abort(self) -> None:
        """Drop the video: the target stays as it was, no temporary file is left."""
        self._closed = True
        tmp, self._tmp = self._tmp, None
        try:
            self._release()
        finally:
            _unlink(tmp)


def _bgr(image: np.ndarray) -> np.ndarray:
    """A gray (2-D or one-channel) or BGRA frame as BGR; BGR as it is."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


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

    A regular file is opened (and an existing one truncated) only by `start()`, when the run
    begins, or by the first `write`: a run that fails to start leaves it untouched. A device or
    pipe (/dev/stdout, a FIFO) is opened at once and appended to, never truncated (stdout
    redirected with `>>` keeps what the file held), and a FIFO waits for its reader here,
    during start-up, where a signal still stops the run. A symlink
    stays a link; its target gets the lines.

    A record holding a non-finite number (JSON has no NaN or Infinity) is left out with one
    warning and counted in `dropped`: the run goes on. If a write fails (a full disk), the file
    is cut back to the end of the last complete line, so it stays valid JSON Lines, and a
    UserError says why. So does a file (or its folder) removed during the run: the lines
    would go on into a file nobody can open.
    """

    def __init__(self, path, warn=None) -> None:
        self.path = check_writable(path, "events file")
        self._f: TextIO | None = None
        self._done = False  # closed, or failed: write nothing more
        self._closed = False  # by close(): a later write is the caller's mistake
        self.lines = 0
        self.dropped = 0
        self._warn = warn or errors.warn
        # /dev/stdout redirected with `>>` to a file is a regular file: appended, not truncated
        self._stream = fileio.is_stream(self.path)
        if self._stream:
            self._open()

    def _open(self) -> TextIO:
        mode = "a" if self._stream else "w"
        try:
            # a named pipe nobody reads: an error now, not an open that waits for ever
            if self._stream:
                f = fileio.open_stream(self.path, mode, encoding="utf-8")  # closed in close()
            else:
                # appended to: each line goes to the file's end, wherever that is now (a log
                # rotation's copytruncate) where a private offset left holes of NUL bytes;
                # opened without truncating, then locked, then truncated: a second run into
                # the file another is writing cut away its lines and mixed in its own
                f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
                if not _lock_file(f):
                    f.close()
                    self._done = True
                    raise UserError(
                        f"events file {self.path}: another run is writing it right now; wait "
                        "for it to end or give another name"
                    )
                f.truncate(0)
        except OSError as exc:
            self._done = True
            raise _os_error("events file", self.path, exc) from None
        self._f = f
        return f

    def start(self) -> None:
        """The run begins: from here on the file is ours (an existing one is truncated)."""
        if self._f is None and not self._done:
            self._open()

    def write(self, record: dict) -> None:
        if self._closed:  # (before: the line was dropped without a word, as after a failure)
            raise ValueError(f"events file {self.path}: written after close()")
        f = self._f
        if f is None:
            if self._done:  # failed earlier (said then)
                return
            f = self._open()
        try:
            # strict, compact, numpy scalars and paths converted, as the summary is written (a
            # np.float32 score was a TypeError)
            line = fileio.dumps(record, indent=None) + "\n"
        except ValueError:
            self.dropped += 1
            if self.dropped == 1:
                msg = (
                    f"events {self.path}: a record with NaN or Infinity was left out (JSON "
                    "cannot hold them); later ones are counted in the summary"
                )
                self._warn(msg)
            return
        before = None  # the file's size before this line: where a failed write is cut back to
        if not self._stream:
            try:
                st = os.fstat(f.fileno())
            except OSError:
                st = None
            if st is not None and st.st_nlink == 0:  # the lines went on into nothing, unsaid
                self._rollback(None)
                raise UserError(
                    f"cannot write events file {self.path}: it (or its folder) was removed "
                    "during the run"
                )
            before = None if st is None else st.st_size
        try:
            f.write(line)
            f.flush()
        except OSError as exc:
            self._rollback(before)
            raise _os_error("events file", self.path, exc) from None
        self.lines += 1

    def _rollback(self, size: int | None) -> None:
        """Stop writing; a regular file is cut back to `size`, its length before the line
        that failed. Not to the bytes this run wrote: after a log rotation's copytruncate,
        or with another writer, that offset was past the end (a hole of NUL bytes) or in the
        middle of a line."""
        f, self._f = self._f, None
        self._done = True
        try:
            if f is not None:
                f.close()  # what the failed write left buffered goes (or fails) now, first
        except OSError:
            pass
        if self._stream or size is None:
            return
        try:
            with open(self.path, "r+b") as g:
                if os.fstat(g.fileno()).st_size > size:
                    g.truncate(size)
        except OSError:
            pass

    def close(self) -> None:
        self._done = self._closed = True
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

    # a start-up failure: nothing was written, so closing is all there is to it
    abort = close


def write_json_atomic(path, obj: dict, what: str = "summary") -> None:
    """Strict JSON through `edge_fer.fileio.write_json` (atomic for a file, written through to
    a device or pipe, a symlink's target replaced); a failure is a UserError naming `what`."""
    fileio.save_json(path, obj, what)


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
            raise UserError(f"--show: cannot open a window ({errors.first_line(exc)})") from None

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
