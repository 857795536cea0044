"""`run --out` as annotated images: one photo's annotated copy (`--out shot.jpg`), or a folder of
them (`--out annotated/`) for a folder or glob of photos, or for a video's frames.

A folder of photos of different sizes made into one video was letterboxed to the first photo's
size; as images each keeps its own. What `--out` is follows from its name: a video extension is
a video (`sinks.VideoSink`), an image extension one image, a folder (existing, or written with a
trailing slash) a folder of images.

A folder is written only when it is new, empty, or holds an earlier run's annotated images and
nothing else: its marker file, `MARKER`, lists every name a run wrote there, and a file the
list does not name (a photo the user put there) makes the folder refused, so no file of theirs is
replaced by one of the same name. Each image is written atomically
(`edge_fer.imageio.imwrite`): an interrupted run leaves complete images only. The run's other
outputs in the folder (`--events`, `--summary`) are listed as such (`NAME<TAB>output`): a later
run's tidy-up removes the earlier run's images only, never them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_fer import fileio, imageio
from edge_fer.errors import UserError
from edge_fer.fileio import cannot_write_in, names_folder, os_error_reason
from edge_fer.imageio import printable

MARKER = ".edge-fer-annotated"  # in a folder this module wrote: a later run may write there again
# a marker line's second field for a run's other output in the folder (events, summary): kept
OUTPUT_TAG = "output"
# the extensions a photo keeps in its annotated copy; others (.pgm, .ppm, .pnm) become .png
_KEEP_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def out_kind(out: str | os.PathLike | None) -> str | None:
    """ "image", "folder" or "video" (anything else: `VideoSink` names what is wrong with it)."""
    from edge_fer.runtime.sources import IMAGE_EXTS

    if not out:
        return None
    s = os.fspath(out)
    if names_folder(s) or os.path.isdir(s):
        return "folder"
    if Path(s).suffix.lower() in IMAGE_EXTS:
        return "image"
    return "video"


def annotated_name(photo: str | os.PathLike) -> str:
    """The name of a photo's annotated (colour) copy: its own, or .png for a format that holds
    no colour image (.pgm, .pbm) or has no encoder (.pnm, .ppm)."""
    p = Path(photo)
    return p.stem + (p.suffix if p.suffix.lower() in _KEEP_EXTS else ".png")


def check_colour_name(path: str | os.PathLike, flag: str) -> None:
    """UserError for an annotated image named with an extension that cannot hold colour."""
    ext = Path(path).suffix.lower()
    if ext in (".pgm", ".pbm"):
        raise UserError(
            f"{flag} {path}: annotated images are in colour, and {ext} holds gray only; "
            "use .png or .jpg"
        )


def planned_names(photos: Sequence[str], folder: str | os.PathLike) -> dict[str, Path]:
    """Where each photo's annotated copy goes in `folder`: its own name, with _2, _3 ... for
    names that repeat (a recursive glob's `a/x.jpg` and `b/x.jpg`)."""
    taken: set[str] = set()
    out: dict[str, Path] = {}
    for p in photos:
        name = annotated_name(p)
        stem, ext = Path(name).stem, Path(name).suffix
        k = 1
        while name.lower() in taken:
            k += 1
            name = f"{stem}_{k}{ext}"
        taken.add(name.lower())
        out[p] = Path(folder) / name
    return out


def _to_marker(name: str) -> str:
    """`name` as one field of a marker line: a backslash, a tab or a line break in a file name
    (all legal on Linux) would end the field or the line, and the name read back would not
    be the file's (its folder was refused on the next run as holding foreign files)."""
    return "".join(
        f"\\u{ord(ch):04x}" if ch == "\\" or ch == "\t" or len(f"a{ch}b".splitlines()) > 1 else ch
        for ch in name
    )


def _from_marker(field: str) -> str:
    return re.sub(r"\\u([0-9a-f]{4})", lambda m: chr(int(m.group(1), 16)), field)


def _read_marker(
    folder: str | os.PathLike,
) -> tuple[dict[str, tuple[int, int] | None], set[str]] | None:
    """What the marker of `folder` lists (None: no marker): `written_names`, and the names
    whose latest line lists them as a run's other output (its events or summary)."""
    marker = Path(folder) / MARKER
    if marker.is_symlink() or (marker.exists() and not marker.is_file()):
        # a run appends to it: through a link it would write into some other file
        raise UserError(f"{marker}: is a link or not a plain file; not a folder a run wrote")
    try:
        # names as the file system gives them (undecodable bytes kept as surrogates)
        text = marker.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"{folder}: cannot read {MARKER}: {os_error_reason(exc)}") from None
    out: dict[str, tuple[int, int] | None] = {}
    outputs: set[str] = set()
    for line in text.splitlines():
        field, *stat = line.split("\t")
        if not field:
            continue
        name = _from_marker(field)
        if stat == [OUTPUT_TAG]:
            outputs.add(name)
        else:  # written since as an image (a photo of that name)
            outputs.discard(name)
        try:  # the last line for a name holds its latest write: a bare name (a write
            # begun) trusts the file by its name until the write's size and time follow
            out[name] = (int(stat[0]), int(stat[1])) if len(stat) == 2 else None
        except ValueError:
            out[name] = None
    return out, outputs


def written_names(folder: str | os.PathLike) -> dict[str, tuple[int, int] | None] | None:
    """What the marker of `folder` lists (None: no marker): each name a run wrote there, with
    the size and modification time (ns) it left the file with, where it recorded them."""
    read = _read_marker(folder)
    return None if read is None else read[0]


def _is_image_name(name: str) -> bool:
    """Whether `name` is one an annotated image takes (`annotated_name`, a video's frames):
    the tidy-up removes no other file the marker lists (an older marker lists a run's events
    and summary bare, as it lists an image whose write began; the demo's clip and video)."""
    return Path(name).suffix.lower() in _KEEP_EXTS


def _marker_line(name: str, stat: tuple[int, int] | None, output: bool = False) -> str:
    field = _to_marker(name)
    if output:
        return f"{field}\t{OUTPUT_TAG}"
    return field if stat is None else f"{field}\t{stat[0]}\t{stat[1]}"


def claim(
    folder: str | os.PathLike, name: str, written: bool = False, output: bool = False
) -> None:
    """Mark `folder` as written by edge-fer and list `name` in its marker: before the file is
    written (a run that stops between the two leaves a name without a file, which is harmless),
    and with `written` once it is, with its size and time, so that a file put there under the
    same name since is not taken for ours. `output`: the run's events or summary, which a later
    run's tidy-up keeps (it removes the earlier run's images only)."""
    line = _to_marker(name)
    if name and output:
        line = _marker_line(name, None, output=True)
    elif name and written:
        st = (Path(folder) / name).stat()
        line = _marker_line(name, (st.st_size, st.st_mtime_ns))
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(Path(folder) / MARKER, flags, 0o644)  # never through a link
    with open(fd, "a", encoding="utf-8", errors="surrogateescape") as f:
        if line:
            f.write(line + "\n")


def write_listed(folder: str | os.PathLike, path: Path, image: np.ndarray) -> None:
    """Write an image into a marked `folder`, listed in its marker before (a run stopped within
    the write leaves a file that is still ours) and after, with its size and time."""
    claim(folder, path.name)
    imageio.imwrite(path, image)
    claim(folder, path.name, written=True)


def _temp_of_ours(name: str, ours) -> bool:
    """Whether `name` is the temporary file of a write of a file the marker lists
    (`.NAME.PID.THREAD.tmp`, fileio.temp_name): a run killed within the write left it."""
    parts = name.split(".")
    if not name.startswith(".") or len(parts) < 5 or parts[-1] != "tmp":
        return False
    pid, tid = parts[-3], parts[-2]
    return pid.isdigit() and tid.isdigit() and ".".join(parts[1:-3]) in ours


def _foreign(folder: Path, ours: dict[str, tuple[int, int] | None]) -> list[str]:
    """The files of `folder` that no run wrote, or that changed since one did."""
    out = []
    for p in folder.iterdir():
        if p.name == MARKER or _temp_of_ours(p.name, ours):
            continue
        if p.name not in ours:
            out.append(p.name)
            continue
        stat = ours[p.name]
        if stat is not None:
            try:
                st = p.stat()
            except OSError:
                continue
            if (st.st_size, st.st_mtime_ns) != stat:
                out.append(p.name)
    return sorted(out)


def check_folder(folder: str | os.PathLike, what: str = "the annotated images") -> Path:
    """UserError unless `folder` can hold `what`: new (its parent exists), empty, or an
    earlier run's holding only what its marker lists."""
    f = Path(folder)
    if f.exists() and not f.is_dir():
        raise UserError(f"{f}: exists and is not a folder", param="out")
    if not f.exists():
        parent = f.parent if str(f.parent) else Path(".")
        if parent.exists() and not parent.is_dir():  # (it said "does not exist" of a file)
            raise UserError(f"{f}: {parent} is not a folder", param="out")
        if not parent.is_dir():
            raise UserError(f"{f}: folder {parent} does not exist", param="out")
        reason = cannot_write_in(parent)  # os.access says yes to root on /proc
        if reason is not None:
            raise UserError(f"{f}: folder {parent} is not writable ({reason})", param="out")
        return f
    reason = cannot_write_in(f)
    if reason is not None:
        raise UserError(f"{f}: not writable ({reason})", param="out")
    ours = written_names(f)
    if ours is None and any(f.iterdir()):
        raise UserError(
            f"{f}: holds other files; give a new or empty folder for {what} (an "
            "earlier run's folder is reused)",
            param="out",
        )
    foreign = _foreign(f, ours or {})
    if foreign:
        shown = ", ".join(printable(n) for n in foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise UserError(
            f"{f}: an earlier run's folder, but {shown} came from elsewhere or changed since; "
            f"move {'it' if len(foreign) == 1 else 'them'} out or give a new or empty folder",
            param="out",
        )
    return f


FRAME_NAME = re.compile(r"frame_\d{6,}\.jpg")  # a video's annotated frames (_target)


def in_folder(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether `path` lies directly in `folder` (links resolved)."""
    return os.path.realpath(Path(path).parent) == os.path.realpath(folder)


def is_marker(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether `path` is (or would be) the marker of `folder`."""
    return Path(path).name == MARKER and in_folder(path, folder)


def is_frame_name(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether `path` lies in `folder` under a name its video frames may take."""
    return in_folder(path, folder) and FRAME_NAME.fullmatch(Path(path).name) is not None


class AnnotatedImages:
    """The annotated frames as images: into `folder` (each photo under its own name, from
    `names`; a video's frames as frame_000123.jpg), or to the one file `single`."""

    def __init__(
        self,
        *,
        folder: str | os.PathLike | None = None,
        single: str | os.PathLike | None = None,
        names: dict[str, Path] | None = None,
        also: Sequence[str | os.PathLike | None] = (),
    ) -> None:
        """also: the run's other outputs (events, summary); those it writes into `folder` are
        listed in the marker too, so that a later run may write the folder again."""
        if (folder is None) == (single is None):
            raise ValueError("give folder or single")
        self.path = Path(folder if folder is not None else single)  # type: ignore[arg-type]
        self.folder = folder is not None
        self.names = dict(names or {})
        self.frames = 0
        self._kept: set[str] = set()  # the names this run writes (or lists: events, summary)
        self._lock: fileio.FolderLock | None = None
        if self.folder:
            check_folder(self.path)
            try:
                self.path.mkdir(exist_ok=True)
                # another run writing it: its images would mix with these, and this run's
                # end would remove the ones it did not write
                self._lock = fileio.FolderLock(self.path, "edge-fer run")
                claim(self.path, "")
                listed, outputs = _read_marker(self.path) or ({}, set())
                for p in self.path.iterdir():  # a killed run's half-written images (locked:
                    if _temp_of_ours(p.name, listed):  # no live run is writing them)
                        p.unlink()
                for other in (Path(o) for o in also if o):
                    if in_folder(other, self.path):
                        self._kept.add(other.name)
                        if other.name not in outputs:  # listed as an output: kept by any
                            claim(self.path, other.name, output=True)  # later run
            except OSError as exc:
                raise UserError(
                    f"cannot create --out folder {self.path}: {os_error_reason(exc)}"
                ) from None

    def _target(self, source_path: str | None, index: int) -> Path:
        if not self.folder:
            return self.path
        if source_path is not None:
            if source_path not in self.names:  # a photo the plan did not list: its own name
                self.names.update(planned_names([source_path], self.path))
            return self.names[source_path]
        return self.path / f"frame_{index:06d}.jpg"

    def write(self, image: np.ndarray, path: str | None = None, index: int = 0) -> Path:
        """Write one annotated frame (the photo `path`, or frame `index`); returns its file."""
        out = self._target(path, index)
        try:
            if self.folder:
                write_listed(self.path, out, image)
            else:
                imageio.imwrite(out, image)
        except ValueError as exc:  # no encoder for the name's extension
            raise UserError(f"--out {out}: {exc}") from None
        except OSError as exc:
            raise UserError(f"cannot write --out {out}: {os_error_reason(exc)}") from None
        self.frames += 1
        self._kept.add(out.name)
        return out

    def close(self) -> None:
        """Every image was complete when written; in a folder an earlier run wrote, its images
        this run did not write again are removed (a run of 5 frames left 35 of the last run's
        40 beside its own), once this run has written any."""
        lock, self._lock = self._lock, None
        try:
            if self.folder and self.frames:
                self._tidy()
        finally:
            if lock is not None:
                lock.release()

    def _tidy(self) -> None:
        try:
            listed, outputs = _read_marker(self.path) or ({}, set())
            # the earlier runs' images only: their events and summary (and a demo's clip and
            # video) stay, listed, unless this run wrote them again (before: all removed)
            stale = [
                n for n in listed if n not in self._kept and n not in outputs and _is_image_name(n)
            ]
            foreign = set(_foreign(self.path, {n: listed[n] for n in stale}))
            for name in stale:
                if name not in foreign:  # changed since, or not ours: the user's now
                    try:
                        (self.path / name).unlink()
                    except FileNotFoundError:
                        pass
            others = {
                n
                for n in listed
                if n not in self._kept and n not in stale and os.path.lexists(self.path / n)
            }
            lines = [
                _marker_line(name, listed.get(name), name in outputs)
                for name in sorted(self._kept | others)
            ]
            text = "".join(f"{ln}\n" for ln in lines)  # names as claim() writes them
            fileio.write_bytes(self.path / MARKER, text.encode("utf-8", "surrogateescape"))
        except OSError as exc:
            raise UserError(
                f"cannot tidy --out {self.path} (an earlier run's images): {os_error_reason(exc)}"
            ) from None

    abort = close
