"""Image and video files for OpenCV, by any name the file system allows.

OpenCV's Python bindings kill the process (a segmentation fault, no message) when a file name
is not valid UTF-8, which POSIX file systems allow (Latin-1 names copied from old cameras or
archives; Python hands them over with surrogate escapes). So images never reach OpenCV by
name: they are read with numpy and decoded from memory, and encoded in memory and saved
through `edge_fer.fileio`. A video, which OpenCV must open by name, is refused in one line
(`cv_name`).
"""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
from pathlib import Path

import cv2
import numpy as np

from edge_fer import fileio
from edge_fer.errors import UserError

# the image files edge-fer reads, everywhere (datasets, folder and glob sources, classify):
# one list, so that a folder `run` reads is a folder `classify` and `train` read too
IMAGE_EXTS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".pnm", ".tif", ".tiff", ".webp"}
)


def utf8_name(path: str | os.PathLike) -> bool:
    """Whether OpenCV can be given this name (it is valid UTF-8)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str | os.PathLike) -> str:
    """A file name as one line of text output prints it: as it is, unless it holds a character
    that breaks the line or drives the terminal (a newline, a tab, an escape, U+2028...); such
    a name is quoted and escaped as Python writes a str (`'a\\nb.jpg'`), so each file stays one
    line and a name that is really `a\\nb.jpg` is told apart. Bytes that are not UTF-8 are left
    to the stream (stdout prints them as given, messages on stderr as \\xNN)."""
    name = os.fspath(path)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if not any(_breaks_line(ch) for ch in name):
        return name
    return "'" + "".join(_escaped(ch) for ch in name) + "'"


def _breaks_line(ch: str) -> bool:
    # C0 and C1 controls (newline, carriage return, escape, NEL...), line and paragraph separators
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def _escaped(ch: str) -> str:
    if ch in "\\'":
        return "\\" + ch
    return repr(ch)[1:-1] if _breaks_line(ch) else ch


def cv_name(path: str | os.PathLike, what: str) -> str:
    """`path` as the str OpenCV opens by name; a one-line UserError when it cannot be (the
    name as `printable` gives it: one line whatever it holds, its bytes that are not UTF-8 left
    to the stream, which writes them as \\xNN in messages)."""
    if not utf8_name(path):
        raise UserError(
            f"{what} {printable(path)}: the file name is not valid UTF-8, which OpenCV cannot "
            "open; rename the file"
        )
    name = os.fspath(path)
    # FFmpeg reads "cam1:front.avi" as protocol "cam1" (and ".x:y.mp4" as ".x"): a relative
    # name with a colon in its first part goes as "./NAME"
    first = name.replace(os.sep, "/").split("/", 1)[0]
    if ":" in first and not os.path.isabs(name) and not os.path.splitdrive(name)[0]:
        name = os.path.join(".", name)
    return name


def image_files(root: Path) -> list[Path]:
    """The image files under folder `root`, at any depth, sorted; hidden ones (a part of the
    path below `root` starting with ".") are left out: macOS leaves ._NAME.jpg metadata beside
    each photo, and a .thumbs/ folder holds no dataset's faces. Links to folders are followed
    (a class folder linked in from elsewhere was dropped without a word), each real folder
    once (a link to a parent would loop)."""
    root = Path(root)
    return sorted(
        Path(folder, name)
        for folder, names in walk_folders(root)
        for name in names
        if visible_image(Path(folder, name), root)
    )


def walk_folders(root: str | os.PathLike):
    """(folder, the names of its files) for `root` and every folder below it, links to
    folders followed and each real folder visited once, hidden folders left out, in sorted
    order. A folder that cannot be listed is a UserError naming it (it was skipped silently,
    and its faces with it)."""
    from edge_fer.fileio import os_error_reason

    def refuse(exc: OSError) -> None:
        raise UserError(f"{exc.filename}: cannot list the folder ({os_error_reason(exc)})")

    seen: set[tuple[int, int]] = set()
    stack = [os.fspath(root)]
    while stack:  # a stack, not os.walk: it recurses on Python < 3.12 (1,100 folders deep
        folder = stack.pop()  # was a RecursionError)
        try:
            st = os.stat(folder)
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            refuse(exc)
        if (st.st_dev, st.st_ino) in seen:  # a link back up, or a second way in
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs: list[str] = []
        files: list[str] = []
        for e in entries:
            try:
                is_dir = e.is_dir()  # follows links
            except OSError:
                is_dir = False
            (dirs if is_dir else files).append(e.name)
        yield folder, sorted(files)
        subs = sorted(d for d in dirs if not d.startswith("."))
        stack.extend(os.path.join(folder, d) for d in reversed(subs))


def visible_image(f: Path, root: Path) -> bool:
    """Whether `f`, found under `root`, is listed as an image: an image extension, nothing
    hidden below `root`, not a folder named x.jpg (a broken link or a pipe is listed, to be
    skipped and reported)."""
    return (
        f.suffix.lower() in IMAGE_EXTS
        and not any(part.startswith(".") for part in f.relative_to(root).parts)
        and not f.is_dir()
    )


def check_regular(path: str | os.PathLike) -> None:
    """OSError unless `path` is a regular file: reading a pipe, device or socket named like an
    image waits for a writer for ever (every reader of image files asks this first)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(errno.EINVAL, "not a regular file (a pipe, device or socket)", str(path))


def imread(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """The decoded image, or None for an empty file or one OpenCV cannot decode. OSError when
    the file cannot be read (also for a pipe, device or socket: reading a FIFO named like an
    image waited for ever); cv2.error and MemoryError pass through (a decoder's own limits)."""
    check_regular(path)
    buf = np.fromfile(os.fspath(path), dtype=np.uint8)
    if buf.size == 0:
        return None
    img = cv2.imdecode(buf, flags)
    return None if img is None or img.size == 0 else img


def imwrite(path: str | os.PathLike, image: np.ndarray, params: tuple = ()) -> None:
    """Encode `image` by the name's extension and save it atomically (edge_fer.fileio).
    ValueError when OpenCV has no encoder for the extension; OSError when writing fails."""
    ext = Path(os.fspath(path)).suffix
    try:
        ok, buf = cv2.imencode(ext, image, list(params))
    except cv2.error:
        ok = False
    if not ok:
        raise ValueError(f"no image encoder for the extension {ext or '(none)'!r}")
    fileio.write_bytes(path, buf.tobytes())


def read_or_none(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """`imread`, with None for any file that cannot be read or decoded (datasets skip them)."""
    try:
        return imread(path, flags)
    except (OSError, cv2.error, MemoryError):
        return None
