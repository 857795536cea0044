"""Video sources named by URI, in the style of jetson-inference's videoSource.

    spec = parse_source("csi://0?width=1920&height=1080")   # pure: no device is touched
    src = open_source(spec)                                 # or open_source("clip.mp4")
    while (frame := src.read()) is not None:
        ...frame.index, frame.t, frame.image (BGR uint8)
    src.close()

URIs:
  clip.mp4, file:///abs/clip.avi, file://rel/clip.avi    a video file (lossless, every frame)
  photo.jpg, folder/, "shots/*.png"                       images: one, a folder, or a glob
  0, 1, v4l2:///dev/video0, v4l2://0, /dev/video0         a camera (live)
  rtsp://, rtsps://, rtmp://, http://, https://, udp://, rtp://, tcp://   a network stream (live)
  csi://0                                                 a Jetson CSI camera (GStreamer)
  "videotestsrc ! videoconvert ! appsink"                 a raw GStreamer pipeline (live)

Options go in a query string (`csi://0?width=1280&height=720&framerate=30&flip=rotate-180`)
or as keyword arguments of `parse_source`. Live sources read in a thread that keeps only the
newest frame, so a slow consumer sees fresh frames (the stale ones are counted as dropped);
files are read losslessly, and so is a video file on a web server (http:// or https:// whose
header counts its frames), which ends at its end instead of being reopened. A live source that
stops delivering frames (a network stream that drops, a camera that is unplugged) is reopened with exponential backoff until
`reconnect_timeout` seconds have passed; each outage is reported as a gap (one still in
progress when the run stops included). In folders and globs, a file that cannot be used
(unreadable, not an image, over MAX_IMAGE_PIXELS by its header) is skipped and counted; a
source with no usable image at all is a UserError when it is opened. What a source keeps per
event (gaps, error messages, undecodable frame numbers, skipped files) is bounded: the latest
KEEP_LATEST of each, and a count of them all (`Latest`), however long a stream flaps.
"""

from __future__ import annotations

import collections
import fnmatch
import glob as _glob
import os
import re
import stat as _stat
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import cv2
import numpy as np

from edge_fer import errors, imageio
from edge_fer.errors import UserError
from edge_fer.fileio import first_line, os_error_reason
from edge_fer.imageio import IMAGE_EXTS, cv_name, printable, visible_image
from edge_fer.limits import MAX_FRAME_SIDE, too_many_pixels  # photos beyond them are skipped

VIDEO_EXTS = {
    ".avi",
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".ts",
    ".mts",
    ".m2ts",
    ".3gp",
    ".ogv",
    ".h264",
    ".h265",
    ".mjpeg",
    ".mjpg",
    ".y4m",
}
NETWORK_SCHEMES = {"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "rtp", "tcp", "srt"}
CSI_FLIPS = {
    "none": 0,
    "counterclockwise": 1,
    "rotate-180": 2,
    "clockwise": 3,
    "horizontal": 4,
    "upper-right-diagonal": 5,
    "vertical": 6,
    "upper-left-diagonal": 7,
}  # fmt: skip  (nvvidconv flip-method values)
CSI_TRANSPOSING_FLIPS = {1, 3, 5, 7}  # rotations by 90/270 degrees and the diagonal flips
IMAGE_SEQUENCE_FPS = 25.0  # nominal rate for timestamps of image folders and globs
# gaps, error messages, undecodable frame numbers, skipped files: the latest kept of each kind
KEEP_LATEST = 100
# why a video file is not used, in every command's words
UNDECODABLE_VIDEO = (
    "cannot decode it (not a video, empty or cut short, or a codec this OpenCV/FFmpeg build lacks)"
)
NO_FRAME = "no frame could be decoded (empty or corrupt)"


def quiet_opencv() -> None:
    """Keep FFmpeg's and OpenCV's own log lines off stderr: our one-line warnings say it all.

    OpenCV reads OPENCV_FFMPEG_LOGLEVEL once, when its first FFmpeg capture or writer opens, so
    this runs when this module is imported (before any source opens) and again in
    `_open_capture`. A level the user set in the environment is kept.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "OPENCV_LOG_LEVEL" not in os.environ:
        try:  # its ERROR lines too ("TIFF_Error ...") repeat what our warning says of a file
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        except AttributeError:  # an OpenCV build without the logging module
            pass


quiet_opencv()


@dataclass(frozen=True)
class SourceSpec:
    """What a URI names. `kind` is one of file, images, camera, network, csi, gstreamer."""

    uri: str
    kind: str
    target: str | int  # path, glob pattern, camera index or device, URL, GStreamer pipeline
    live: bool
    api: str  # how it is opened: ffmpeg, v4l2, any, gstreamer, images
    options: dict = field(default_factory=dict)  # width, height, fps, flip

    @property
    def network(self) -> bool:
        return self.kind == "network"

    def ignored_options(self) -> list[str]:
        """The options given that this kind of source does not read (a video file's size and
        rate are its own)."""
        return [k for k in self.options if k not in USED_OPTIONS.get(self.kind, ())]


@dataclass
class Frame:
    index: int  # position in the source (files: the frame number in the file)
    t: float  # seconds: the frame's timestamp in a file, time since the start for live sources
    image: np.ndarray  # BGR uint8
    path: str | None = None  # the file it was read from (image sources)


class Latest:
    """The latest `keep` items of a stream of events and how many there were in all (`total`),
    so what a source keeps per outage, error or undecodable frame stays bounded on a stream
    that flaps for weeks. len, iteration and indexing see the kept items. Thread-safe: a live
    source's reader thread appends while the pipeline reads (`snapshot`)."""

    def __init__(self, keep: int = KEEP_LATEST) -> None:
        self._items: collections.deque = collections.deque(maxlen=keep)
        self._lock = threading.Lock()
        self.total = 0

    def append(self, item) -> None:
        with self._lock:
            self._items.append(item)
            self.total += 1

    def extend(self, items: Sequence) -> None:
        """Count every one of `items`, keep the last (a range of frame numbers stays a range)."""
        with self._lock:
            self._items.extend(items[-(self._items.maxlen or 1) :])
            self.total += len(items)

    def snapshot(self) -> tuple[list, int]:
        """(the kept items, oldest first; the total), read together."""
        with self._lock:
            return list(self._items), self.total

    @property
    def omitted(self) -> int:
        """Items counted but no longer kept."""
        items, total = self.snapshot()
        return total - len(items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self.snapshot()[0])

    def __getitem__(self, i):
        return self.snapshot()[0][i]

    def __repr__(self) -> str:
        items, total = self.snapshot()
        return f"Latest({items!r}, total={total})"


def redacted(uri: str) -> str:
    """`uri` with the password of a URL's user info replaced by *** (rtsp://user:***@cam/...),
    for what is written to files (summaries, model metadata); anything else as it is."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#\s]*)", uri)
    if not m or "@" not in m.group(2):
        return uri
    info, host = m.group(2).rsplit("@", 1)  # the last @ ends the user info: p@ss is a password
    if ":" not in info:
        return uri
    return f"{m.group(1)}{info.split(':', 1)[0]}:***@{host}{uri[m.end() :]}"


def has_glob(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def check_option(name: str, v):
    """One source option (width, height, fps, flip), parsed and range-checked; a UserError
    naming it (`param`) otherwise: the one rule for URI queries, keywords and --input-* flags."""
    if name in ("width", "height"):
        try:
            i = int(v)
        except (TypeError, ValueError, OverflowError):  # inf: OverflowError
            raise UserError(f"must be an integer, got {v!r}", param=name) from None
        if not 1 <= i <= 16384:
            raise UserError(f"must be in 1..16384, got {i}", param=name)
        return i
    if name == "fps":
        try:
            fps = float(v)
        except (TypeError, ValueError):
            raise UserError(f"must be a number, got {v!r}", param=name) from None
        if not 0 < fps <= 1000:
            raise UserError(f"must be in (0, 1000], got {fps}", param=name)
        return fps
    if name == "flip":
        f = str(v)
        if f not in CSI_FLIPS and not (f.isdigit() and int(f) in CSI_FLIPS.values()):
            raise UserError(
                f"must be one of {', '.join(CSI_FLIPS)} (or 0..7), got {f!r}", param=name
            )
        return CSI_FLIPS.get(f, int(f) if f.isdigit() else 0)
    raise UserError(f"unknown option {name} (known: width, height, fps, flip)")


# the options each kind of source reads (a file plays at its own size and rate)
USED_OPTIONS = {
    "camera": ("width", "height", "fps"),
    "csi": ("width", "height", "fps", "flip"),
    "images": ("fps",),
}


def _options(uri: str, query: str, **kw) -> dict:
    raw = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    aliases = {"framerate": "fps", "rate": "fps", "input-rate": "fps", "flip-method": "flip"}
    opts = {aliases.get(k, k): v for k, v in raw.items()}
    unknown = set(opts) - {"width", "height", "fps", "flip"}
    if unknown:
        raise UserError(
            f"source {uri!r}: unknown option(s) {', '.join(sorted(unknown))} "
            "(known: width, height, fps, flip)"
        )
    for k, v in kw.items():
        if v is not None:
            opts[k] = v
    out: dict = {}
    for name in ("width", "height", "fps", "flip"):
        if name in opts:
            try:
                out[name] = check_option(name, opts[name])
            except UserError as exc:
                raise UserError(f"source {uri!r}: {exc}") from None
    return out


def csi_pipeline(
    sensor_id: int = 0, width: int = 1280, height: int = 720, fps: float = 30, flip: int = 0
) -> str:
    """The GStreamer pipeline for a Jetson CSI camera (nvarguscamerasrc), ending in BGR appsink.

    `width` x `height` is the sensor mode. The frames delivered are that size, except that a
    90-degree rotation or a diagonal flip (flip-method 1, 3, 5, 7) transposes them: the caps
    after nvvidconv then say height x width, or nvvidconv would scale the rotated picture back
    into a landscape frame.
    """
    rate = f"{round(fps)}/1" if float(fps).is_integer() else f"{round(fps * 1000)}/1000"
    out_w, out_h = (height, width) if flip in CSI_TRANSPOSING_FLIPS else (width, height)
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, "
        f"framerate=(fraction){rate}, format=(string)NV12 ! "
        f"nvvidconv flip-method={flip} ! "
        f"video/x-raw, width=(int){out_w}, height=(int){out_h}, format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    )


MAX_CAMERA_INDEX = 1023  # far above any real device; OpenCV takes a C int


def _index(uri: str, digits: str) -> int:
    """A camera index or sensor id from its digits; UserError past MAX_CAMERA_INDEX (OpenCV
    raised a traceback for one past a C int)."""
    n = int(digits)
    if n > MAX_CAMERA_INDEX:
        hint = f"; for a file of that name write ./{digits}" if uri == digits else ""
        raise UserError(
            f"source {uri!r}: camera index {digits} is out of range (0-{MAX_CAMERA_INDEX}){hint}"
        )
    return n


def parse_source(
    uri: str | int | os.PathLike,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    flip: str | int | None = None,
) -> SourceSpec:
    """Classify a source URI. Pure: opens nothing (a path is only checked for being a folder,
    and a .gif's frames are counted: one is a photo, more a clip)."""
    if isinstance(uri, int) and not isinstance(uri, bool):
        uri = str(uri)
    # a Path (or bytes name) is a file, folder or glob: Path("0") was camera 0, not ./0
    as_path = isinstance(uri, (os.PathLike, bytes))
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if isinstance(uri, bytes):  # a name that is not UTF-8, as os.listdir(b".") gives it
        uri = os.fsdecode(uri)
    if not isinstance(uri, str):
        raise UserError(
            f"must be a file, folder, glob, camera index or URI (a str), got {type(uri).__name__}",
            param="source",
        )
    if not uri.strip():
        raise UserError("empty source: give a file, folder, glob, camera index or URI")
    kw = {"width": width, "height": height, "fps": fps, "flip": flip}
    if as_path:
        return _path_spec(uri, uri, kw)
    uri = uri.strip()

    # a raw GStreamer pipeline: elements joined by '!'
    if re.search(r"\s!\s", uri):
        pipe = uri if re.search(r"\bappsink\b", uri) else uri + " ! videoconvert ! appsink"
        return SourceSpec(uri, "gstreamer", pipe, True, "gstreamer", _options(uri, "", **kw))

    if re.fullmatch(r"\d+", uri):
        return SourceSpec(uri, "camera", _index(uri, uri), True, "any", _options(uri, "", **kw))

    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", uri)
    if m and len(m.group(1)) > 1:  # (a one-letter "scheme" is a Windows drive: C://...)
        scheme = m.group(1).lower()
        try:
            parts = urlsplit(uri)
            parts.port  # noqa: B018 - parsed lazily: a bad port or IPv6 address raises here
        except ValueError as exc:
            raise UserError(f"source {uri!r}: not a valid URI ({exc})") from None
        if scheme == "file":
            return _path_spec(uri, _file_uri_path(m.group(2)), kw)
        if scheme in ("v4l2", "webcam", "camera"):
            rest = unquote(m.group(2).split("?", 1)[0])
            opts = _options(uri, parts.query, **kw)
            if re.fullmatch(r"\d+", rest):
                return SourceSpec(uri, "camera", _index(uri, rest), True, "v4l2", opts)
            if not rest.startswith("/dev/"):
                raise UserError(
                    f"source {uri!r}: expected v4l2:///dev/videoN or v4l2://N (a camera index)"
                )
            return SourceSpec(uri, "camera", rest, True, "v4l2", opts)
        if scheme == "csi":
            rest = m.group(2).split("?", 1)[0] or "0"
            if not re.fullmatch(r"\d+", rest):
                raise UserError(
                    f"source {uri!r}: expected csi://N with N the sensor id, e.g. csi://0"
                )
            opts = _options(uri, parts.query, **kw)
            opts.setdefault("width", 1280)
            opts.setdefault("height", 720)
            opts.setdefault("fps", 30.0)
            opts.setdefault("flip", 0)
            pipe = csi_pipeline(
                _index(uri, rest), opts["width"], opts["height"], opts["fps"], opts["flip"]
            )
            return SourceSpec(uri, "csi", pipe, True, "gstreamer", opts)
        if scheme in NETWORK_SCHEMES:
            if not parts.netloc and scheme not in ("udp", "rtp", "srt"):
                raise UserError(f"source {uri!r}: no host in the URL")
            return SourceSpec(uri, "network", uri, True, "ffmpeg", _options(uri, "", **kw))
        raise UserError(
            f"source {uri!r}: unknown scheme {scheme}:// (known: file, v4l2, csi, "
            + ", ".join(sorted(NETWORK_SCHEMES))
            + ")"
        )
    return _path_spec(uri, uri, kw)


_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://(.*)$")  # one letter is a drive: C://...


def _file_uri_path(rest: str) -> str:
    """The path of file://REST: file:///abs, file://rel, file://localhost/abs (RFC 8089)."""
    path = unquote(rest.split("?", 1)[0])
    if path.lower().startswith("localhost/"):
        path = path[len("localhost") :]
    return path


def named_input(
    name: str, command: str, reads: str = "image and video files, folders and globs"
) -> str:
    """A file, folder or glob named to a command that reads files only (detect, classify): the
    name as given, or the path of a file:// URI, as `edge-fer run` takes it. An empty name, or
    a URI of another scheme (a stream, a camera, a typo) that names no file, is a UserError in
    one line; before, it was looked up as a file and reported with its slashes collapsed
    (`rtsp:/cam/1: no such file`)."""
    if not name.strip():
        raise UserError(f"an empty name was given; {command} reads {reads}")
    m = _URI.match(name)
    if m is None or os.path.lexists(name):
        return name
    if m.group(1).lower() == "file":
        path = _file_uri_path(m.group(2))
        if not path:
            raise UserError(f"{printable(name)}: no path in the file:// URI")
        return os.path.expanduser(path)
    raise UserError(
        f"{printable(name)}: a {m.group(1).lower()}:// URI, not a file; {command} reads {reads} "
        "(edge-fer run reads streams and cameras)"
    )


def _path_spec(uri: str, path: str, kw: dict) -> SourceSpec:
    if not path:
        raise UserError(f"source {uri!r}: no path")
    path = os.path.expanduser(path)
    opts = _options(uri, "", **kw)
    if path.startswith("/dev/video"):
        return SourceSpec(uri, "camera", path, True, "v4l2", opts)
    if has_glob(path) and not os.path.exists(path):
        return SourceSpec(uri, "images", path, False, "images", opts)
    if os.path.isdir(path):
        return SourceSpec(uri, "images", path, False, "images", opts)
    if Path(path).suffix.lower() in IMAGE_EXTS or still_gif(path):
        return SourceSpec(uri, "images", path, False, "images", opts)
    return SourceSpec(uri, "file", path, False, "ffmpeg", opts)


def still_gif(path: str | os.PathLike) -> bool:
    """Whether `path`, named on its own, is read as a photo although it is a GIF: it holds
    one frame. An animated GIF is a clip, read frame by frame as a video (in folders and globs
    GIFs are not listed: .gif is not one of IMAGE_EXTS)."""
    return Path(path).suffix.lower() == ".gif" and gif_frames(path) < 2


def gif_frames(path: str | os.PathLike, stop: int = 2) -> int:
    """The frames of a GIF file, counted up to `stop` from its block structure (nothing is
    decoded: the first frame's data is skipped over); 0 for a file that is not a GIF, cannot be
    read, or is not a regular file (reading a pipe waits for a writer for ever)."""
    try:
        imageio.check_regular(path)
        with open(path, "rb") as f:
            return _count_gif_frames(f, stop)
    except OSError:
        return 0


def gif_cut_short(path: str | os.PathLike) -> bool:
    """Whether a GIF file ends before its trailer: a cut download or a partial copy, whose
    last frames (or the end of the last one) are missing. Decoders pass over that in silence;
    a GIF holds no frame count to compare with, as a video's header does. False for a file
    that is not a GIF or cannot be read."""
    try:
        imageio.check_regular(path)
        with open(path, "rb") as f:
            return _walk_gif(f, 1 << 62)[1] == "cut"
    except OSError:
        return False


def _count_gif_frames(f, stop: int) -> int:
    return _walk_gif(f, stop)[0]


def _walk_gif(f, stop: int) -> tuple[int, str]:
    """(frames, how the walk ended): "trailer", "cut" (the file ends inside or between
    blocks), "mangled" (a byte that starts no block), "stop" (`stop` frames counted), or
    "not a gif"."""
    head = f.read(13)  # signature, then the logical screen descriptor
    if len(head) < 13 or head[:6] not in (b"GIF87a", b"GIF89a"):
        return 0, "not a gif"
    _skip_colour_table(f, head[10])
    frames = 0
    while frames < stop:
        block = f.read(1)
        if block == b"\x2c":  # an image descriptor: one frame
            desc = f.read(9)
            if len(desc) < 9:
                return frames, "cut"
            frames += 1
            _skip_colour_table(f, desc[8])
            f.read(1)  # the LZW minimum code size, then the frame's data
            if not _skip_sub_blocks(f):
                return frames, "cut"
        elif block == b"\x21":  # an extension (frame timing, comments, loop count)
            f.read(1)
            if not _skip_sub_blocks(f):
                return frames, "cut"
        elif block == b"\x3b":
            return frames, "trailer"
        elif not block:
            return frames, "cut"
        else:
            return frames, "mangled"
    return frames, "stop"


def _skip_colour_table(f, packed: int) -> None:
    if packed & 0x80:
        f.seek(3 << ((packed & 7) + 1), 1)


def _skip_sub_blocks(f) -> bool:
    """Past a run of data sub-blocks; False when the file ends before its terminator."""
    while True:
        n = f.read(1)
        if not n:
            return False
        if n[0] == 0:
            return True
        f.seek(n[0], 1)


def _natural_key(p: str):
    # isdecimal, not isdigit: "²" and "①" are digits that int() refuses (a traceback)
    return [int(t) if t.isdecimal() else t.lower() for t in re.split(r"(\d+)", p)]


def list_images(spec: SourceSpec, lead: str = "source ") -> list[str]:
    """The image files of an images source, in natural name order. UserError for a folder or
    glob of no image file and for a single file that is not there (messages led by `lead`)."""
    target = str(spec.target)
    if os.path.isdir(target):
        files = [  # not hidden files: macOS leaves ._NAME.jpg metadata beside each photo;
            # a broken link or a pipe named like a photo is listed, then skipped and reported
            os.path.join(target, f)
            for f in os.listdir(target)
            if visible_image(Path(target, f), Path(target))
        ]
        what = f"folder {printable(target)}"
    elif has_glob(target) and not os.path.exists(target):
        files = [  # as a folder's: a broken link or a pipe is listed, then skipped and reported
            f
            for f in expand_glob(target)
            if Path(f).suffix.lower() in IMAGE_EXTS and not os.path.isdir(f)
        ]
        what = f"pattern {target!r}"
    else:
        why = named_file_problem(target)
        if why:
            raise UserError(f"{lead}{printable(target)}: {why}")
        return [target]
    if not files:
        no_images(f"{lead}{what}")
    return sorted(files, key=_natural_key)


def expand_glob(pattern: str) -> list[str]:
    """The paths `pattern` matches, as glob.glob(pattern, recursive=True) lists them, except
    that `**` enters each real folder once: glob follows links to folders, so a link to a
    parent listed every photo again per level (40 times, to the kernel's limit) and two such
    links made the listing grow as 2^depth (it never ended). Walked with a stack, not
    recursion: a tree 1,100 folders deep was a RecursionError."""
    parts = pattern.split(os.sep)
    if "**" not in parts:
        return _glob.glob(pattern)
    root = os.sep if pattern.startswith(os.sep) else ""
    found: list[str] = []
    seen: set[tuple[int, int, int]] = set()
    stack: list[tuple[str, tuple[str, ...], bool]] = [(root, tuple(q for q in parts if q), True)]
    while stack:  # depth first, in the order a recursive walk lists the paths
        stack.extend(reversed(_glob_step(*stack.pop(), found, seen)))
    if pattern.endswith(os.sep):  # as glob: a trailing separator matches folders only
        found = [os.path.join(p, "") for p in found if os.path.isdir(p)]
    return list(dict.fromkeys(found))  # `**/**` reaches a path twice


def _listdir(folder: str) -> list[str]:
    try:
        return sorted(os.listdir(folder or os.curdir))
    except OSError:  # not a folder, gone, no permission: matches nothing, as in glob
        return []


def _glob_step(
    base: str, parts: tuple[str, ...], entered: bool, found: list[str], seen: set
) -> list:
    """Match `parts[0]` below `base`: paths matched in full go to `found`; the (path, parts
    left, entered) still to match are returned, in order. `entered`: `base` was reached from
    outside the `**` that `parts` starts with, not by it (glob lists it as "base/")."""
    if not parts:
        if base and os.path.lexists(base):
            found.append(base)
        return []
    part, rest = parts[0], parts[1:]
    todo: list[tuple[str, tuple[str, ...], bool]] = []
    if part == "**":
        if base and not os.path.isdir(base):  # `**` matches inside folders only (as glob)
            return []
        try:
            st = os.stat(base or os.curdir)
        except OSError:
            return []
        key = (len(parts), st.st_dev, st.st_ino)  # per `**` of the pattern
        if key in seen:  # reached again through a link: a loop, or a second way in
            return []
        seen.add(key)
        if rest:
            todo.append((base, rest, True))  # `**` matches no folder too
        elif base and entered:  # as glob: the folder itself, named with a trailing separator
            found.append(os.path.join(base, ""))
        for name in _listdir(base):
            if name.startswith("."):  # as glob: hidden names only for patterns that say so
                continue
            path = os.path.join(base, name)
            if not rest:  # a folder is listed by its name, before what it holds
                todo.append((path, (), True))
            if os.path.isdir(path):
                todo.append((path, parts, False))
    elif _glob.has_magic(part):
        for name in _listdir(base):
            if name.startswith(".") and not part.startswith("."):
                continue
            if fnmatch.fnmatch(name, part):
                todo.append((os.path.join(base, name), rest, True))
    else:
        todo.append((os.path.join(base, part) if base or part else part, rest, True))
    return todo


def no_images(what: str) -> NoReturn:
    """Raise the UserError for a folder or glob (`what`) that lists no image file."""
    raise UserError(f"{what}: no images ({', '.join(sorted(IMAGE_EXTS))})")


def named_file_problem(path: str | os.PathLike) -> str | None:
    """Why a file named on the command line cannot be an input at all, or None: the user's
    mistake (a typo, a pipe), refused in one line before any work, by every command."""
    if not os.path.lexists(path):
        return "no such file"
    if not os.path.exists(path):
        return "a link to nothing"
    if not os.path.isfile(path):
        return "not a regular file (a pipe, device or socket)"
    return None


def skip_line(path: str | os.PathLike, why: str) -> str:
    """The one line that reports a photo (or input) skipped, the same in run, detect, classify."""
    return f"{printable(path)}: {why}; skipped"


def skipped_error(skipped: int, total: int, what: str = "inputs") -> str:
    """The last line of a command that skipped some of its inputs and processed the others,
    which then exits 1 (the inputs were not all read, as for a truncated video)."""
    return (
        f"{skipped} of {total} {what} could not be used and {'was' if skipped == 1 else 'were'} "
        "skipped (listed above); the others were processed"
    )


# ---- sources ---------------------------------------------------------------------------------


class Source:
    """Common interface: read() -> Frame | None at the end; close(); a few facts and stats."""

    spec: SourceSpec
    fps: float | None = None  # nominal frame rate, when known
    frame_count: int | None = None  # frames a file declares, when known
    width: int = 0
    height: int = 0

    def __init__(self, spec: SourceSpec, warn: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self.warn = warn or errors.warn
        self.dropped = 0  # live: frames overwritten before anyone read them
        # the latest of each kind of event, and their counts (Latest: bounded)
        self.errors = Latest()  # problems with the input (corrupt frames, truncation, loss)
        # live: outages {"start": t, "seconds": d}, with "end": true when the source never came
        # back, "ongoing": true when the run stopped during the outage
        self.gaps = Latest()
        self.incomplete = False  # the source ended before its natural end
        self.skipped = Latest()  # indices of frames that could not be decoded

    @property
    def live(self) -> bool:
        return self.spec.live

    def read(self) -> Frame | None:
        raise NotImplementedError

    def exhausted(self) -> bool:
        """Whether no frame is known to be left after those read, without reading one: a run
        stopped by --max-frames on such a source still processed all of it. False when it
        cannot tell (a live source never can)."""
        return False

    def interrupt(self) -> None:
        """Make a blocked read() return None soon (called from another thread)."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        return {
            "uri": redacted(self.spec.uri),
            "kind": self.spec.kind,
            "live": self.live,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "frame_count": self.frame_count,
        }


# ---- image headers: the size before decoding ----------------------------------------------

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(f) -> tuple[int, int] | None:
    f.seek(2)
    stray = 0
    for _ in range(4096):  # segments before the frame header (EXIF, ICC...): few in practice
        b = f.read(1)
        while b and b != b"\xff" and stray < 4096:  # extraneous bytes: libjpeg skips them
            b = f.read(1)
            stray += 1
        if b != b"\xff":  # not at a marker: let the decoder judge the file
            return None
        while b == b"\xff":  # fill bytes
            b = f.read(1)
        if not b:
            return None
        m = b[0]
        if m == 0x01 or 0xD0 <= m <= 0xD8:  # markers without a length
            continue
        if m in (0xD9, 0xDA):  # end of image, or the scan, before any frame header
            return None
        seg = f.read(2)
        if len(seg) < 2:
            return None
        n = struct.unpack(">H", seg)[0]
        if m in _JPEG_SOF:
            d = f.read(5)
            if len(d) < 5:
                return None
            h, w = struct.unpack(">HH", d[1:5])
            return w, h
        if n < 2:
            return None
        f.seek(n - 2, 1)
    return None


def _tiff_size(f, head: bytes) -> tuple[int, int] | None:
    e = "<" if head[:2] == b"II" else ">"
    magic = struct.unpack(e + "H", head[2:4])[0]
    if magic == 42:
        f.seek(struct.unpack(e + "I", head[4:8])[0])
        count_fmt, entry_fmt, entry_size = "H", "HHI4s", 12
    elif magic == 43:  # BigTIFF
        f.seek(struct.unpack(e + "Q", head[8:16])[0])
        count_fmt, entry_fmt, entry_size = "Q", "HHQ8s", 20
    else:
        return None
    raw = f.read(struct.calcsize(e + count_fmt))
    if len(raw) < struct.calcsize(e + count_fmt):
        return None
    n = min(struct.unpack(e + count_fmt, raw)[0], 4096)
    size: dict[int, int] = {}
    for _ in range(n):
        entry = f.read(entry_size)
        if len(entry) < entry_size:
            break
        tag, typ, _count, value = struct.unpack(e + entry_fmt, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT, LONG or LONG8
            fmt = {3: "H", 4: "I", 16: "Q"}.get(typ)
            if fmt is None:
                return None
            size[tag] = struct.unpack(e + fmt, value[: struct.calcsize(fmt)])[0]
    if 256 in size and 257 in size:
        return size[256], size[257]
    return None


def _pnm_size(head: bytes) -> tuple[int, int] | None:
    text = re.sub(rb"#[^\n]*", b" ", head[2:])
    if head[1:2] == b"7":  # PAM: WIDTH and HEIGHT lines
        w = re.search(rb"\bWIDTH\s+(\d+)", text)
        h = re.search(rb"\bHEIGHT\s+(\d+)", text)
        return (int(w.group(1)), int(h.group(1))) if w and h else None
    tokens = text.split()
    if len(tokens) >= 2 and tokens[0].isdigit() and tokens[1].isdigit():
        return int(tokens[0]), int(tokens[1])
    return None


def image_size(path: str) -> tuple[int, int] | None:
    """(width, height) from an image file's header without decoding it; None when the format
    is not recognised (PNG, JPEG, BMP, TIFF, WebP, PNM and GIF are) or the header is mangled.
    OSError when the file cannot be read, or is not a regular file (opening a FIFO named like
    an image waits for a writer for ever)."""
    imageio.check_regular(path)
    with open(path, "rb") as f:
        try:
            return _header_size(f)
        except (struct.error, ValueError, IndexError, OverflowError):
            return None  # offsets past any file, short fields: the decoder will judge it


def _header_size(f) -> tuple[int, int] | None:
    head = f.read(4096)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if head[:3] == b"\xff\xd8\xff":
        return _jpeg_size(f)
    if head[:2] == b"BM" and len(head) >= 26:
        if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 header: 16-bit sizes
            return struct.unpack("<HH", head[18:22])
        w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+") and len(head) >= 16:
        return _tiff_size(f, head)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        chunk = head[12:16]
        if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
            w, h = struct.unpack("<HH", head[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L" and head[20] == 0x2F:
            bits = struct.unpack("<I", head[21:25])[0]
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return (
                int.from_bytes(head[24:27], "little") + 1,
                int.from_bytes(head[27:30], "little") + 1,
            )
        return None
    if re.match(rb"P[1-7]\s", head[:3]):
        return _pnm_size(head)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return struct.unpack("<HH", head[6:10])
    return None


def load_image(path: str, flags: int = cv2.IMREAD_COLOR) -> tuple[np.ndarray | None, str]:
    """Decode one image file as BGR (or as `flags` asks): (image, "") or (None, why it was not
    decoded). The one judge of a photo for run, detect and classify: one wording per cause.

    Never raises for a bad file: an unreadable file, a header over MAX_IMAGE_PIXELS (checked
    before decoding), a side over MAX_FRAME_SIDE (no frame that long can be scanned), a decoder
    error or a failed allocation are all reasons.
    """
    why = named_file_problem(path)  # the words a file named alone gets: a link to nothing...
    if why:  # (a pipe would block the read for ever)
        return None, why
    try:
        size = image_size(path)
    except OSError as exc:
        return None, f"cannot read it ({os_error_reason(exc)})"
    if size is not None:
        w, h = size
        why = too_many_pixels(w, h)
        if why:
            return None, why
        if max(w, h) > MAX_FRAME_SIDE:
            return None, _too_long(w, h)
    try:
        img = imageio.imread(path, flags)  # from memory: any file name works
        if img is None and Path(path).suffix.lower() == ".gif":
            img = _gif_first_frame(path, flags)
    except OSError as exc:
        return None, f"cannot read it ({os_error_reason(exc)})"
    except cv2.error as exc:  # e.g. OpenCV's own size limit (validateInputImageSize)
        return None, f"cannot decode it ({first_line(exc)})"
    except MemoryError:
        return None, "too large to decode in the memory available"
    if img is None:
        return None, _undecoded_reason(path)
    # a format whose header image_size cannot read (or a JPEG it could not follow)
    why = too_many_pixels(img.shape[1], img.shape[0])
    if why:
        return None, why
    if max(img.shape[:2]) > MAX_FRAME_SIDE:
        return None, _too_long(img.shape[1], img.shape[0])
    return img, ""


def _undecoded_reason(path: str) -> str:
    """Why OpenCV gave no 8-bit image: a floating-point TIFF, EXR or HDR decodes only as
    such (it was called corrupt), else the file is corrupt or not an image."""
    try:
        raw = imageio.imread(path, cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error, MemoryError):
        raw = None
    if raw is not None and raw.dtype.kind == "f":
        return f"{raw.dtype.itemsize * 8}-bit floating-point samples; save it with 8 or 16 bits"
    return "not a readable image (corrupt, or not an image)"


def _gif_first_frame(path: str, flags: int) -> np.ndarray | None:
    """A GIF's first frame through FFmpeg, for an OpenCV that decodes no GIF itself (before
    4.12, GIF support is off by default); None when that fails too (FFmpeg reads by name)."""
    try:
        cap = cv2.VideoCapture(cv_name(path, "image"), cv2.CAP_FFMPEG)
    except UserError:  # a name that is not UTF-8
        return None
    try:
        ok, img = cap.read()
    finally:
        cap.release()
    if not ok or img is None:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if flags == cv2.IMREAD_GRAYSCALE else img


def _too_long(w: int, h: int) -> str:
    return f"{w}x{h} pixels is over the {MAX_FRAME_SIDE} px a side that a frame can be scanned at"


class ImageSource(Source):
    """A still image, a folder of images or a glob, read one by one.

    A file that cannot be used (unreadable, not an image, corrupt, over the size limits) is
    skipped, warned about and counted (`skipped`, `skipped_files`), whatever the number of
    files. Opening looks for the first usable image (its size is the source's size) and raises
    UserError, in one line, when there is none; so a run that opens has at least one image.
    """

    def __init__(self, spec: SourceSpec, warn=None) -> None:
        super().__init__(spec, warn)
        self.files = list_images(spec)
        self.frame_count = len(self.files)
        self.fps = float(spec.options.get("fps", IMAGE_SEQUENCE_FPS))
        self.processed = 0  # images returned by read()
        self.skipped_files = Latest()  # {"path", "reason"} in file order (the latest)
        self._i = 0
        # the files tried while looking for the first usable one: each decoded once only
        self._tried: dict[int, tuple[np.ndarray | None, str]] = {}
        for i, f in enumerate(self.files):
            img, why = load_image(f)
            self._tried[i] = (img, why)
            if img is not None:
                self.height, self.width = img.shape[:2]
                break
        else:
            n = len(self.files)
            first, why = printable(self.files[0]), self._tried[0][1]
            if n == 1:
                raise UserError(f"source {first}: {why}")
            raise UserError(
                f"source {printable(spec.uri)}: none of its {n} image files can be used "
                f"(the first, {first}: {why})"
            )

    def read(self) -> Frame | None:
        while self._i < len(self.files):
            i = self._i
            self._i += 1
            img, why = self._tried.pop(i) if i in self._tried else load_image(self.files[i])
            if img is None:
                self.skipped.append(i)
                self.skipped_files.append({"path": self.files[i], "reason": why})
                msg = skip_line(self.files[i], why)
                self.errors.append(msg)
                self.warn(msg)
                continue
            self.processed += 1
            return Frame(i, i / (self.fps or IMAGE_SEQUENCE_FPS), img, path=self.files[i])
        return None

    def exhausted(self) -> bool:
        return self._i >= len(self.files)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "files": len(self.files),
            "skipped_files": self.skipped_files.total,
        }


def _check_gstreamer(spec: SourceSpec) -> None:
    info = cv2.getBuildInformation()
    m = re.search(r"GStreamer:\s*(\S+)", info)
    if not m or m.group(1).upper() == "NO":
        raise UserError(
            f"source {spec.uri}: this OpenCV was built without GStreamer, which "
            f"{'csi:// cameras' if spec.kind == 'csi' else 'pipeline sources'} need; use the "
            "OpenCV that JetPack ships (python3-opencv) or build OpenCV with GStreamer"
        )


def _open_capture(
    spec: SourceSpec, open_timeout_s: float = 10.0, read_timeout_s: float | None = None
) -> cv2.VideoCapture:
    """`read_timeout_s` (network streams): open_timeout_s unless given."""
    quiet_opencv()
    api = {
        "ffmpeg": cv2.CAP_FFMPEG,
        "v4l2": cv2.CAP_V4L2,
        "gstreamer": cv2.CAP_GSTREAMER,
        "any": cv2.CAP_ANY,
    }[spec.api]
    params: list[int] = []
    if spec.kind == "network":
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int((open_timeout_s if read_timeout_s is None else read_timeout_s) * 1000),
        ]
    # (a file's target is its path, a str)
    target = cv_name(str(spec.target), "source") if spec.kind == "file" else spec.target
    cap = cv2.VideoCapture(target, api, params) if params else cv2.VideoCapture(target, api)
    if cap.isOpened() and spec.kind == "camera":
        o = spec.options
        if "width" in o:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, o["width"])
        if "height" in o:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, o["height"])
        if "fps" in o:
            cap.set(cv2.CAP_PROP_FPS, o["fps"])
    return cap


class FileSource(Source):
    """A video file, decoded frame by frame without dropping any.

    A frame the decoder rejects is skipped and reported; the file's own timestamps keep the
    frame numbers of the frames after it right. Frames are numbered in decoding order
    otherwise: a jump in the timestamps alone (a variable frame rate, a camera's stall, joined
    recordings) loses no frame, and each frame's time is its timestamp. A file that ends
    before the frame count its header declares, and before the duration it declares, is
    reported as truncated (`incomplete`).
    """

    # failed reads in a row that end the file when its header gives no frame count; with one,
    # reads go on while it says frames remain (a failing read at the end takes microseconds)
    MAX_CONSECUTIVE_FAILURES = 50
    MAX_FAILURES_WITHIN_COUNT = 100_000

    def __init__(self, spec: SourceSpec, warn=None) -> None:
        super().__init__(spec, warn)
        path = str(spec.target)
        if not os.path.exists(path):
            raise UserError(f"source {printable(path)}: no such file")
        if os.path.isdir(path):
            raise UserError(f"source {printable(path)}: is a folder with no images")
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise UserError(
                f"source {printable(path)}: cannot read it ({os_error_reason(exc)})"
            ) from None
        if not _stat.S_ISREG(mode):  # opening a pipe blocks until something writes to it
            hint = "; for a camera write v4l2://" + path if _stat.S_ISCHR(mode) else ""
            raise UserError(
                f"source {printable(path)}: not a regular file (a pipe, device or socket){hint}"
            )
        if not os.access(path, os.R_OK):
            raise UserError(f"source {printable(path)}: permission denied")
        self.cap = _open_capture(spec)
        if not self.cap.isOpened():
            self.cap.release()
            raise UserError(f"source {printable(path)}: {UNDECODABLE_VIDEO}")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and 0 < fps <= 1000 else None
        n = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(n) if n and n > 0 and np.isfinite(n) else None
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._next = 0  # index the next frame should have
        self._decoded = 0
        self._ended = False
        self._closed = False
        self._t = 0.0  # the last frame's time (s)
        self._ms0: float | None = None  # the first frame's timestamp (ms)
        self._prev_ms: float | None = None  # the last decoded frame's

    def _may_fail_again(self, failures: int) -> bool:
        if self.frame_count is None:
            return failures < self.MAX_CONSECUTIVE_FAILURES
        # 71 bad frames in a row mid-file ended the read after 50 (the good ones after lost)
        left = self.frame_count - self._next
        return failures < min(
            max(left, self.MAX_CONSECUTIVE_FAILURES), self.MAX_FAILURES_WITHIN_COUNT
        )

    def read(self) -> Frame | None:
        if self._closed:  # before: the released capture read as a truncated file
            raise RuntimeError("source is closed")
        if self._ended:
            return None
        failures = 0
        while True:
            ok, img = self.cap.read()
            if ok and img is not None:
                break
            failures += 1
            at_end = self.frame_count is not None and self._next >= self.frame_count
            if at_end or not self._may_fail_again(failures):
                self._end()
                return None
        idx = self._next
        pos_ms = self.cap.get(cv2.CAP_PROP_POS_MSEC)
        ms = float(pos_ms) if pos_ms and np.isfinite(pos_ms) and pos_ms > 0 else None
        if self._ms0 is None and self._decoded == 0:  # (after rejected frames: the file's 0)
            self._ms0 = (ms or 0.0) if not failures else 0.0
        if failures and self.fps and ms is not None:
            # frames the decoder rejected: the time since the frame before says how many (a
            # read may pass over several). Without a failed read a gap is the file's timing,
            # not a lost frame (and an earlier one must not count as lost here either)
            if self._prev_ms is None:
                idx = max(round(ms * self.fps / 1000.0), self._next)
            else:
                gap = round((ms - self._prev_ms) * self.fps / 1000.0) - 1
                idx = self._next + max(gap, 0)
        if ms is not None:
            self._prev_ms = ms
        if idx > self._next:
            lost = range(self._next, idx)  # a jump in the timestamps may skip millions
            self.skipped.extend(lost)
            msg = (
                f"{printable(str(self.spec.target))}: frame{'s' if len(lost) > 1 else ''} "
                f"{lost[0]}{'-' + str(lost[-1]) if len(lost) > 1 else ''} could not be decoded, "
                "skipped"
            )
            self.errors.append(msg)
            self.warn(msg)
        self._next = idx + 1
        self._decoded += 1
        self._t = self._time(idx, ms)
        return Frame(idx, self._t, img)

    def exhausted(self) -> bool:
        # the frames its header declares were all read (a count that is an estimate, too high
        # for a variable-rate MKV, leaves it False: not known)
        return self._ended or (self.frame_count is not None and self._next >= self.frame_count)

    def _time(self, idx: int, ms: float | None) -> float:
        """The frame's time: its own timestamp from the first frame's (a variable-rate file's
        times were stretched to its average rate), or idx / fps where the two agree within
        1 ms (the figure of constant-rate files, free of the time base's rounding) or the
        file has no timestamps; never earlier than the frame before (timestamps that jump
        back)."""
        nominal = idx / self.fps if self.fps else None
        own = (ms - (self._ms0 or 0.0)) / 1000.0 if ms is not None else None
        if own is None or own < 0:
            t = nominal if nominal is not None else self._t
        elif nominal is None or abs(own - nominal) > 1e-3:
            t = own
        else:
            t = nominal
        return float(max(t, self._t)) if self._decoded > 1 else float(t)

    @property
    def undecodable(self) -> int:
        """Frames lost so far: skipped in the middle, and the ones a truncated file never had."""
        tail = 0
        if self._ended and self.frame_count is not None and self._next < self.frame_count:
            tail = self.frame_count - self._next
        return self.skipped.total + tail

    def _reached_declared_end(self) -> bool:
        """Whether the frames read cover the duration the header declares: for formats whose
        frame count is an estimate (duration x rate: MKV, WebM, TS), a variable-rate file
        holds fewer frames than it says, all there."""
        if not (self.fps and self.frame_count and self._decoded):
            return False
        return self._t + 1.0 / self.fps >= (self.frame_count - 0.5) / self.fps

    def _end(self) -> None:
        self._ended = True
        short = self.frame_count is not None and self._next < self.frame_count
        if short and self._reached_declared_end():
            self.frame_count = self._next  # the estimate, now known
            short = False
        if short:
            self.incomplete = True
            # frames are numbered from 0, as in the events: the last one and how many that is
            # ("after frame 13 of the 25" read as 13 frames where there were 14)
            where = (
                f"after frame {self._next - 1}, the {_ordinal(self._next)}"
                if self._next
                else "before its first frame, none"
            )
            msg = (
                f"{printable(str(self.spec.target))}: the file ends {where} of the "
                f"{self.frame_count} its header declares (truncated or corrupt)"
            )
            self.errors.append(msg)
            self.warn(msg)
        elif self._decoded and self.spec.kind == "file" and gif_cut_short(str(self.spec.target)):
            self.incomplete = True
            msg = (
                f"{printable(str(self.spec.target))}: the GIF ends before its trailer, after "
                f"frame {self._next - 1}, the {_ordinal(self._next)} (truncated: the frames "
                "after it, and perhaps part of it, are missing)"
            )
            self.errors.append(msg)
            self.warn(msg)
        elif self._decoded == 0:
            self.incomplete = True
            msg = f"{printable(str(self.spec.target))}: no frame could be decoded"
            self.errors.append(msg)
            self.warn(msg)

    def close(self) -> None:
        self._closed = True
        self.cap.release()


class LiveSource(Source):
    """A camera, network stream or GStreamer pipeline, read in a thread keeping the newest frame.

    read() blocks until a frame newer than the last one returned arrives (None at the end).
    A stream that fails is reopened with exponential backoff (0.25 s doubling up to 4 s) for
    up to `reconnect_timeout` seconds; each outage becomes an entry in `gaps`.
    """

    def __init__(
        self,
        spec: SourceSpec,
        warn=None,
        reconnect_timeout: float = 30.0,
        open_timeout: float = 10.0,
    ) -> None:
        super().__init__(spec, warn)
        if spec.api == "gstreamer":
            _check_gstreamer(spec)
        self.reconnect_timeout = float(reconnect_timeout)
        self.open_timeout = float(open_timeout)
        self.cap = _open_capture(spec, open_timeout)
        if not self.cap.isOpened():
            self.cap.release()
            raise UserError(f"source {spec.uri}: {self._what()} does not open")
        ok, img = self.cap.read()
        if not ok or img is None:
            self.cap.release()
            raise UserError(f"source {spec.uri}: {self._what()} opened but delivers no frames")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and 0 < fps <= 1000 else None
        self.height, self.width = img.shape[:2]
        # a video file on a web server (its header counts its frames; a live HTTP stream's
        # does not): read every frame, in order, and end at its end. As a stream it was
        # replayed from the start at every end, for ever, and most frames were dropped.
        n = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(n) if n and np.isfinite(n) and n > 0 else None
        self.remote_file = (spec.kind == "network" and self.frame_count is not None
                            and str(spec.target).lower().startswith(("http://", "https://")))  # fmt: skip
        self._t0 = time.monotonic()
        self._cond = threading.Condition()
        t = self._file_time(0, 0.0) if self.remote_file else 0.0
        self._latest: Frame | None = Frame(0, t, img)
        self._count = 1
        self._returned = -1
        self._done = False
        self._outage_start: float | None = None  # monotonic time the current outage began
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edge-fer-source", daemon=True)
        self._thread.start()

    def _what(self) -> str:
        return {
            "camera": "the camera",
            "network": "the stream",
            "csi": "the CSI camera",
            "gstreamer": "the pipeline",
        }.get(self.spec.kind, "the source")

    def _file_time(self, index: int, last: float) -> float:
        """A remote file's time of frame `index`, as FileSource gives it for the same file
        (its number over the rate, else the decoder's position; `last` when that is not sane)."""
        if self.fps:
            return index / self.fps
        ms = self.cap.get(cv2.CAP_PROP_POS_MSEC)
        return ms / 1000.0 if np.isfinite(ms) and ms >= 0 else last

    def _publish(self, img: np.ndarray) -> None:
        with self._cond:
            while (self.remote_file and self._latest is not None
                   and self._latest.index > self._returned and not self._stop.is_set()):  # fmt: skip
                self._cond.wait()  # a file is read losslessly: wait for read() (or interrupt())
            if self._latest is not None and self._latest.index > self._returned:
                self.dropped += 1  # nobody read the previous one: it is stale now
            if self.remote_file:  # a file's own times, so results equal the local file's
                last = self._latest.t if self._latest is not None else 0.0
                t = self._file_time(self._count, last)
            else:
                t = time.monotonic() - self._t0
            self._latest = Frame(self._count, t, img)
            self._count += 1
            self._cond.notify_all()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                ok, img = self.cap.read()
                if ok and img is not None:
                    self._publish(img)
                    continue
                if self._stop.is_set():
                    break
                if self.remote_file:  # its end, not an outage
                    assert self.frame_count is not None  # (remote_file: the header counts them)
                    if self._count < 0.9 * self.frame_count:  # (counts can be estimates)
                        self.incomplete = True
                        msg = (f"{self.spec.uri}: the file ended after {self._count} of its "
                               f"{self.frame_count} frames")  # fmt: skip
                        self.errors.append(msg)
                        self.warn(msg)
                    break
                if not self._reconnect():
                    break
        finally:
            # released here, by the only thread that reads it: released from close() while
            # this thread was still inside read() (a stalled stream), FFmpeg crashed the process
            try:
                self.cap.release()
            except cv2.error:
                pass
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _end_outage(self, **marks) -> dict | None:
        """Record the outage in progress as a gap (once); None when there is none."""
        with self._cond:
            if self._outage_start is None:
                return None
            now = time.monotonic()
            gap = {
                "start": round(self._outage_start - self._t0, 3),
                "seconds": round(now - self._outage_start, 3),
                **marks,
            }
            self._outage_start = None
            self.gaps.append(gap)
            return gap

    def _reconnect(self) -> bool:
        start = time.monotonic()
        with self._cond:
            self._outage_start = start
        self.warn(f"{self.spec.uri}: {self._what()} stopped delivering frames; reconnecting")
        deadline = start + self.reconnect_timeout
        delay = 0.25
        while not self._stop.is_set():
            try:
                self.cap.release()
            except cv2.error:
                pass
            left = deadline - time.monotonic()
            # the last wait ends at the deadline, for one last try (a full step overshot it)
            if left <= 0 or self._stop.wait(min(delay, left)):
                break
            delay = min(delay * 2, 4.0)
            left = max(deadline - time.monotonic(), 0.1)  # (a timeout of 0 means none)
            read_timeout = min(self.open_timeout, self.reconnect_timeout)  # for the stream after
            cap = _open_capture(self.spec, min(self.open_timeout, left), read_timeout)
            if cap.isOpened():
                ok, img = cap.read()
                if ok and img is not None and not self._stop.is_set():
                    self.cap = cap
                    gap = self._end_outage()
                    if gap is not None:
                        self.warn(
                            f"{self.spec.uri}: reconnected after a gap of {gap['seconds']:.1f} s "
                            f"(at t={gap['start']:.1f} s)"
                        )
                    self._publish(img)
                    return True
            cap.release()
        if self._stop.is_set():  # the run stopped during the outage: it is a gap all the same
            self._end_outage(ongoing=True)
            return False
        self.incomplete = True
        gap = self._end_outage(end=True)
        seconds = gap["seconds"] if gap else time.monotonic() - start
        hint = " (unplugged?)" if self.spec.kind in ("camera", "csi") else ""
        msg = f"{self.spec.uri}: {self._what()} was lost{hint} and did not come back in {seconds:.0f} s"
        self.errors.append(msg)
        self.warn(msg)
        return False

    def read(self, timeout: float | None = None) -> Frame | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                f = self._latest
                if f is not None and f.index > self._returned:
                    self._returned = f.index
                    self._cond.notify_all()  # a remote file's reader waits for this
                    return f
                if self._done or self._stop.is_set():
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(0.2 if remaining is None else min(0.2, remaining))

    @property
    def ended(self) -> bool:
        """The reader has stopped for good (the end of the stream, a loss, or close())."""
        return self._done

    def interrupt(self) -> None:
        self._stop.set()
        # an outage still in progress is a gap now: the summary is made before the reader
        # thread (maybe blocked in a reconnect attempt) gets to record it
        self._end_outage(ongoing=True)
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        self.interrupt()
        # the reader releases the capture as it stops; a stalled stream keeps it in read() for
        # up to FFmpeg's read timeout, which close() does not wait for (at exit the OS frees it)
        self._thread.join(timeout=1.0)


def _ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def file_hint(spec: SourceSpec) -> str:
    """For a camera index or a GStreamer pipeline whose text is also the name of a file here
    (`7`, `a ! b.avi`): how to name the file instead, else "". The rules stay as documented
    (a number is a camera, text with ` ! ` a pipeline); the hint says how to get the file."""
    name = spec.uri
    if spec.kind not in ("camera", "gstreamer") or "://" in name or not os.path.exists(name):
        return ""
    if spec.kind == "camera" and re.fullmatch(r"\d+", name):
        as_file = f"./{name}"
    else:  # ./a ! b.avi is still a pipeline: the spaces and "!" go percent-encoded
        as_file = "file://" + quote(os.fsencode(name), safe="/")
    return f"; {printable(name)} is also a file here: to read it, write {printable(as_file)}"


def open_source(
    source: str | SourceSpec,
    *,
    warn: Callable[[str], None] | None = None,
    reconnect_timeout: float = 30.0,
    **kw,
) -> Source:
    """Open a URI or a parsed SourceSpec; UserError when it cannot be opened."""
    spec = source if isinstance(source, SourceSpec) else parse_source(source, **kw)
    if spec.kind == "images":
        return ImageSource(spec, warn)
    if spec.kind == "file":
        return FileSource(spec, warn)
    if spec.kind == "camera" and isinstance(spec.target, str) and not os.path.exists(spec.target):
        raise UserError(f"source {spec.uri}: no such camera device {spec.target}")
    try:
        return LiveSource(spec, warn, reconnect_timeout=reconnect_timeout)
    except UserError as exc:
        hint = file_hint(spec)  # `run 7` with a file named 7 here: the camera did not open
        if not hint:
            raise
        raise UserError(exc.message + hint, param=exc.param) from None
