"""Loaders for the FER dataset layouts edge-fer understands.

- FER2013 `fer2013.csv` (`emotion,pixels,Usage`)
- the FER2013 image-folder layout (`train/<class>/Training_*.jpg`, `test/<class>/PublicTest_*.jpg`)
  with the split taken from the file-name prefix
- a generic one-folder-per-class layout (CK+48 and the like)
- JAFFE file names (`KA.AN1.39.tiff`)

Images are decoded as 8-bit grayscale and resized to `size` (when given); an image over
`limits.MAX_IMAGE_PIXELS` by its header is a bad entry, never decoded. Bad entries raise a
UserError naming the file and line, or are skipped, counted and (the first SKIPPED_KEPT) named in
`FaceSet.skipped_entries` when `skip_bad=True`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
from pathlib import Path

import cv2
import numpy as np

from edge_fer import fileio
from edge_fer import labels as L
from edge_fer.data.faceset import SKIPPED_KEPT, SPLITS, FaceSet, check_split
from edge_fer.errors import UserError, warn
from edge_fer.imageio import image_files, read_or_none, walk_folders

JAFFE_CODES = {
    "AN": "angry",
    "DI": "disgust",
    "FE": "fear",
    "HA": "happy",
    "NE": "neutral",
    "SA": "sad",
    "SU": "surprise",
}
_JAFFE_RE = re.compile(r"^[A-Z]{2}\.([A-Z]{2})\d*\.\d+\.tiff?$", re.IGNORECASE)
_FER_PREFIXES = ("Training", "PublicTest", "PrivateTest")


class EmptySplit(UserError):
    """The dataset has no faces in the split asked for (others may have some)."""


def split_counts(path: str | os.PathLike) -> dict[str, int]:
    """A FER2013 image-folder layout's images per split, from the file names alone (no
    decoding): {"train": n, "public-test": n, "private-test": n}."""
    n = dict.fromkeys(_FER_PREFIXES, 0)
    for f in image_files(Path(path)):
        for k in _FER_PREFIXES:
            if f.name.startswith(k):
                n[k] += 1
    return {
        "train": n["Training"],
        "public-test": n["PublicTest"],
        "private-test": n["PrivateTest"],
    }


def detect_layout(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "fer2013-csv"
        raise UserError(f"{path}: not a dataset (expected a folder or fer2013.csv)")
    if not path.is_dir():
        # a device or pipe is there (/dev/null), just not a dataset (was: "no such file")
        what = (
            "not a dataset (expected a folder or fer2013.csv)"
            if path.exists()
            else ("no such file or folder")
        )
        raise UserError(f"{path}: {what}")
    files = image_files(path)
    if not files:
        raise UserError(f"{path}: no images found")
    names = [p.name for p in files[:200]]
    # FER2013 file names, in split folders (train/happy/...) or in folders of FER2013's
    # classes; FER2013 faces filed directly under another vocabulary (contempt/, ...) are a
    # dataset of class folders (before: refused as FER2013 with an unknown class folder, and
    # `train` had no way round it)
    fer_classes = {L.canonical(c) for c in L.FER2013}
    folders = {L.canonical(q.parent.name) for q in files[:200] if q.parent != path}
    split_folders = any(len(q.relative_to(path).parts) >= 3 for q in files[:200])
    if any(n.startswith(_FER_PREFIXES) for n in names) and (
        split_folders or folders <= fer_classes
    ):
        return "fer2013-folder"
    if all(_JAFFE_RE.match(n) for n in names):
        return "jaffe"
    return "class-folders"


def load_dataset(
    path: str | os.PathLike,
    split: str = "all",
    size: int | None = 48,
    layout: str | None = None,
    skip_bad: bool = False,
    classes: tuple[str, ...] | None = None,
    cache: bool = True,
) -> FaceSet:
    """Load a dataset; `split` selects FER2013 splits (other layouts: all images)."""
    if not os.fspath(path).strip():  # Path("") is the working folder: it loaded whatever lay there
        raise UserError("the dataset path is empty; give a dataset folder or fer2013.csv")
    p = Path(path)
    check_split(split)
    if classes is not None:
        from edge_fer.limits import check_names

        classes = check_names(classes, "classes")
    if size is not None:  # every face is decoded at size x size: 100000 was an OOM kill
        from numbers import Integral

        from edge_fer.preprocess import MAX_INPUT_SIZE, MIN_INPUT_SIZE

        ok = isinstance(size, Integral) and not isinstance(size, bool)
        if not ok or not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE:
            raise UserError(
                f"must be an integer in {MIN_INPUT_SIZE}..{MAX_INPUT_SIZE} px (a model's face "
                f"side) or None, got {size!r}",
                param="size",
            )
    layout = layout or detect_layout(p)
    key = f"{p.resolve()}|{split}|{size}|{layout}|{skip_bad}|{classes}|{_stamp(p)}"
    if layout == "class-folders":  # a cache made when sub-folders were classes is not reused
        key += "|class=first-folder"
    # (surrogateescape: a folder name that is not UTF-8 was a UnicodeEncodeError traceback)
    digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()
    folder = _cache_dir()
    cache_file = folder / (digest[:16] + ".npz") if cache and folder else None
    if cache_file is not None and cache_file.exists():
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                _touch(cache_file)  # used now: the last to go when the cache is trimmed
                return FaceSet(
                    z["images"],
                    z["labels"],
                    tuple(str(c) for c in z["classes"]),
                    [str(i) for i in z["ids"]],
                    int(z["skipped"]),
                    [str(e) for e in z["skipped_entries"]],  # (a cache without: rebuilt)
                )
        except Exception:  # noqa: BLE001, S110 - a broken cache of any kind is rebuilt, never fatal
            pass
    if layout == "fer2013-csv":
        fs = _load_csv(p, split, size, skip_bad)
    elif layout == "fer2013-folder":
        fs = _load_folder(p, size, skip_bad, classes, split_prefixes=SPLITS[split])
    elif layout == "class-folders":
        fs = _load_folder(p, size, skip_bad, classes, split_prefixes=None)
    elif layout == "jaffe":
        fs = _load_jaffe(p, size, skip_bad)
    else:
        raise UserError(f"unknown dataset layout {layout!r}")
    if len(fs) == 0:
        why = f" ({fs.skipped} bad entries skipped)" if fs.skipped else ""
        if not why and layout == "fer2013-folder":  # say which splits it does have
            have = [f"{k} ({n})" for k, n in split_counts(p).items() if n]
            if have:
                why = f"; its file names are of {', '.join(have)} only"
        raise EmptySplit(f"{p}: no faces in split {split!r}{why}")
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.savez(
                buf,
                images=fs.images,
                labels=fs.labels,
                classes=np.array(fs.classes),
                ids=np.array(fs.ids),
                skipped=np.array(fs.skipped),
                skipped_entries=np.array(fs.skipped_entries, dtype=str),
            )
            fileio.write_bytes(cache_file, buf.getbuffer())  # atomic: never half a cache
        except OSError:
            pass
        _trim_cache(cache_file.parent, cache_file, DATASET_CACHE_MAX_BYTES)
    return fs


# Decoded datasets kept in the cache folder; beyond this the least recently used go first
# (it grew without bound: a decode for every dataset, size and temporary copy ever loaded).
# FER2013's three splits at 48 px take 83 MB.
DATASET_CACHE_MAX_BYTES = 2 << 30


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass  # a read-only cache: it is still read, and trimmed by whoever can write it


def _trim_cache(folder: Path, keep: Path, max_bytes: int) -> None:
    """Delete the least recently used decodes in `folder` (by modification time: written or
    last read) until the rest take at most `max_bytes`; `keep` (just written) stays. Best
    effort: a file another process removes or reads meanwhile is no error (a reader that
    loses its file decodes the dataset again)."""
    try:
        found = []
        with os.scandir(folder) as it:
            for e in it:
                if e.name.endswith(".npz") and e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    found.append((st.st_mtime_ns, st.st_size, e.path))
    except OSError:
        return
    total = sum(size for _, size, _ in found)
    for _, size, path in sorted(found):  # oldest first
        if total <= max_bytes:
            break
        if os.path.basename(path) == keep.name:
            continue
        try:
            os.unlink(path)
            total -= size
        except OSError:
            pass


def _cache_dir() -> Path | None:
    """`datasets/` in edge-fer's cache folder (the one rule of `edge_fer.cache.cache_dir`);
    None without a home to put it in (then nothing is cached)."""
    from edge_fer.cache import cache_dir

    root = cache_dir()
    return Path(root) / "datasets" if root else None


def _stamp(p: Path) -> str:
    """Fingerprint so that an edited dataset invalidates the cache: every file's name, size
    and modification time (a face copied over another in place kept the folders' times, and
    the cache gave the old decode), through linked folders as the loaders read them; or a
    file's modification time and size. About 0.2 s for FER2013's 35,887 files."""
    try:
        st = p.stat()
        if p.is_dir():
            h = hashlib.sha1()
            root = os.fspath(p)
            for folder, files in walk_folders(p):
                # relative to the dataset: "../data/fer" and "/home/me/data/fer" spelled one
                # dataset two ways, and each spelling cached a decode of its own (70 MB for
                # FER2013's Training faces, another for every new checkout)
                rel = os.path.relpath(folder, root)
                for name in files:
                    try:
                        f = os.stat(os.path.join(folder, name))
                        line = f"{rel}/{name}:{f.st_size}:{f.st_mtime_ns};"
                    except OSError:  # a broken link: listed, and reported by the loader
                        line = f"{rel}/{name}:?;"
                    h.update(line.encode("utf-8", "surrogateescape"))
            return h.hexdigest()
        return f"{st.st_mtime_ns}:{st.st_size}"
    except (OSError, UserError):
        return "?"


def _read_gray(path: Path, size: int | None) -> tuple[np.ndarray | None, str | None]:
    """(the image, None); (None, why) for one over MAX_IMAGE_PIXELS; (None, None) for one that
    cannot be read or decoded (`_Faces.problem` says so)."""
    from edge_fer.limits import too_many_pixels
    from edge_fer.runtime.sources import image_size

    # the header first, as run and classify do: a 30000x30000 PNG of 1 MB took 1.9 GB to
    # decode, and joined the dataset as a face
    try:
        wh = image_size(str(path))
    except OSError:
        wh = None  # the read below fails the same way: "cannot decode image"
    why = too_many_pixels(*wh) if wh else None
    img = None if why else read_or_none(path, cv2.IMREAD_GRAYSCALE)
    if img is not None:  # (after decoding: a header image_size cannot read)
        why = too_many_pixels(img.shape[1], img.shape[0])
    if why:
        return None, why
    if img is None:
        return None, None
    if size is not None and img.shape != (size, size):
        interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
        img = cv2.resize(img, (size, size), interpolation=interp)
    return img, None


class BadEntry(UserError):
    """A dataset entry that `skip_bad=True` would skip (an unreadable image, a malformed row,
    an image outside the class folders). Its parameter is skip_bad: on the command line the
    hint "use --skip-bad to skip such files" follows the message only where the running
    command has that flag (edge_fer.cli.main.flag_for); `str()` is the message alone."""

    def __init__(self, message: str = "", *, param: str | None = "skip_bad") -> None:
        super().__init__(message, param=param)

    def render(self, name: str | None = None) -> str:
        return f"{self.message} (use {name} to skip such files)" if name else self.message


class _Faces:
    """What a loader collects (images, labels, ids); a bad entry is skipped and counted when
    `skip_bad`, else a UserError."""

    def __init__(self, size, skip_bad: bool) -> None:
        self.size, self.skip_bad = size, skip_bad
        self.images: list[np.ndarray] = []
        self.lab: list[int] = []
        self.ids: list[str] = []
        self.skipped = 0
        self.skipped_entries: list[str] = []

    def bad(self, where: str, why: str, entry: str) -> None:
        """Entry `where` (as the message names it) cannot join because of `why`; `entry`: its
        id relative to the dataset, as the reports of the skipped entries name it."""
        if not self.skip_bad:
            raise BadEntry(f"{where}: {why}") from None
        self.skipped += 1
        if len(self.skipped_entries) < SKIPPED_KEPT:
            self.skipped_entries.append(f"{entry}: {why}")

    def problem(self, img: np.ndarray | None, why: str | None = None) -> str | None:
        """Why a decoded image cannot join: `why` (`_read_gray`'s reason), unreadable, or
        (without a target size) not the first one's size."""
        if why is not None:
            return why
        if img is None:
            return "cannot decode image"
        if self.size is None and self.images and img.shape != self.images[0].shape:
            h, w = img.shape
            first = self.images[0].shape
            return f"image is {w}x{h} but the first one is {first[1]}x{first[0]}"
        return None

    def add(self, img: np.ndarray, label: int, face_id: str) -> None:
        self.images.append(img)
        self.lab.append(label)
        self.ids.append(face_id)

    def finish(self, classes) -> FaceSet:
        if self.images:
            arr = np.stack(self.images)
        else:
            arr = np.zeros((0, self.size or 48, self.size or 48), np.uint8)
        lab = np.asarray(self.lab, dtype=np.int64)
        return FaceSet(arr, lab, tuple(classes), self.ids, self.skipped, self.skipped_entries)


def _class_folder(f: Path, p: Path, fer_layout: bool) -> str:
    """The class folder of image `f` under the dataset root `p`. FER2013 folders hold train/
    and test/ with the class folders inside: the image's own folder. A generic layout has the
    class folders directly under the root and may sort a class into sub-folders of its own
    (happy/2019/x.jpg): the first folder under the root (the sub-folder names were taken for
    classes, and a "2019 vs 2020" model was trained without a word)."""
    if fer_layout:
        return f.parent.name
    return f.relative_to(p).parts[0]


def _load_folder(p: Path, size, skip_bad, classes, split_prefixes) -> FaceSet:
    # The FER2013 layout always has the FER2013 vocabulary (a stray class folder is an error);
    # a generic layout's vocabulary is its folders (FER2013's order when they are a subset).
    fer_layout = split_prefixes is not None
    files = image_files(p)
    found = sorted({L.canonical(_class_folder(f, p, fer_layout)) for f in files if f.parent != p})
    if classes is None:
        if split_prefixes is not None or set(found) <= set(L.FER2013):
            classes = L.FER2013
        else:
            classes = tuple(found)
    index = {c: i for i, c in enumerate(classes)}
    out = _Faces(size, skip_bad)
    if split_prefixes is not None:
        # an image without a split prefix (one a user added) belongs to no split: "all" takes
        # it, the others leave it out and say so (before: left out of every split, silently)
        unsplit = [f for f in files if not f.name.startswith(_FER_PREFIXES)]
        if unsplit and set(split_prefixes) == set(_FER_PREFIXES):
            split_prefixes = None
        elif unsplit:
            prefixes = ", ".join(f"{k}_" for k in _FER_PREFIXES)
            warn(
                f"{p}: {len(unsplit)} image(s) without a FER2013 split prefix ({prefixes}), "
                f"e.g. {unsplit[0].relative_to(p)}, are in no split: only split 'all' reads them"
            )
    for f in files:
        if split_prefixes is not None and not f.name.startswith(split_prefixes):
            continue
        rel = str(f.relative_to(p))
        if f.parent == p:
            out.bad(str(f), f"not inside a class folder (expected {p}/<class>/<image>)", rel)
            continue
        folder = _class_folder(f, p, fer_layout)
        cls = L.canonical(folder)
        if cls not in index:
            out.bad(str(f), f"unknown class folder {folder!r} (known: {', '.join(classes)})", rel)
            continue
        img, why = _read_gray(f, size)
        why = out.problem(img, why)
        if why:
            out.bad(str(f), why, rel)
            continue
        out.add(img, index[cls], rel)
    return out.finish(classes)


def _load_jaffe(p: Path, size, skip_bad) -> FaceSet:
    out = _Faces(size, skip_bad)
    for f in image_files(p):
        m = _JAFFE_RE.match(f.name)
        code = m.group(1).upper() if m else None
        img, why = _read_gray(f, size) if code in JAFFE_CODES else (None, None)
        if m is None:
            why = "not a JAFFE file name (like KA.AN1.39.tiff)"
        elif code not in JAFFE_CODES:
            why = f"unknown JAFFE expression code {code!r} (known: {', '.join(JAFFE_CODES)})"
        else:
            why = out.problem(img, why)
        if why:
            out.bad(str(f), why, str(f.relative_to(p)))
            continue
        out.add(img, L.FER2013.index(JAFFE_CODES[code]), f.name)
    return out.finish(L.FER2013)


def _load_csv(p: Path, split: str, size, skip_bad) -> FaceSet:
    usages = SPLITS[split]
    out = _Faces(size, skip_bad)
    if not p.is_file():  # --layout fer2013-csv forced on a folder (or a missing file)
        what = "a folder" if p.is_dir() else "no such file"
        raise UserError(f"{p}: {what}; the fer2013-csv layout reads one CSV file (fer2013.csv)")
    try:
        return _read_csv(p, usages, out)
    except UnicodeDecodeError as exc:  # whole-file problems: --skip-bad cannot step over them
        raise UserError(
            f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start}); a FER2013 CSV holds "
            "digits, commas and its Usage words"
        ) from None
    except csv.Error as exc:  # a NUL byte, a quote left open to the end of the file
        raise UserError(f"{p}: not a readable CSV ({exc})") from None


# a face of MAX_INPUT_SIZE px a side, written as text, is far over csv's default 128 KiB a field
_CSV_FIELD_LIMIT = 64 << 20


def _read_csv(p: Path, usages, out: _Faces) -> FaceSet:
    old_limit = csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    try:
        return _read_csv_rows(p, usages, out, out.size)
    finally:
        csv.field_size_limit(old_limit)


def _read_csv_rows(p: Path, usages, out: _Faces, size) -> FaceSet:
    with open(p, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["emotion", "pixels"]:
            raise UserError(f"{p}:1: expected a header 'emotion,pixels,Usage'")
        for row in reader:
            lineno = reader.line_num
            if not any(cell.strip() for cell in row):  # a blank line (one ends many files)
                continue
            try:
                emotion = int(row[0])
                if not 0 <= emotion < len(L.FER2013):
                    raise ValueError(f"emotion {emotion} out of range 0..6")
                usage = row[2].strip() if len(row) > 2 else "Training"
                if usage not in _FER_PREFIXES:
                    raise ValueError(f"unknown Usage {usage!r}")
                if usage not in usages:
                    continue
                px = np.array(row[1].split(), dtype=np.int32)
                side = math.isqrt(px.size)
                if side * side != px.size or side == 0:
                    raise ValueError(f"{px.size} pixels is not a square image")
                if px.min() < 0 or px.max() > 255:
                    raise ValueError("pixel values outside 0..255")
                first = out.images[0].shape if out.images else None
                if size is None and first is not None and first != (side, side):
                    raise ValueError(f"{side}x{side} image, the first one is {first[1]}x{first[0]}")
            except (ValueError, IndexError, OverflowError) as exc:  # 99999999999: no int32
                out.bad(f"{p}:{lineno}", f"malformed row ({exc})", f"{p.name}:{lineno}")
                continue
            img = px.astype(np.uint8).reshape(side, side)
            if size is not None and side != size:
                img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            out.add(img, emotion, f"{p.name}:{lineno}")
    return out.finish(L.FER2013)


UNLABELLED = -1  # the label of a face no one labelled (the teachers say what it shows)


def load_unlabelled(path: str | os.PathLike, size: int = 48, skip_bad: bool = False) -> FaceSet:
    """Every image under folder `path` (any depth, no class folders needed) as a face without
    a label (`UNLABELLED`), decoded and checked as the datasets' faces are; ids relative to
    `path`. UserError when the folder holds no face."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: no such folder")
    out = _Faces(size, skip_bad)
    for f in image_files(p):
        rel = str(f.relative_to(p))
        img, why = _read_gray(f, size)
        why = out.problem(img, why)
        if why:
            out.bad(str(f), why, rel)
            continue
        out.add(img, UNLABELLED, rel)
    if not out.images:
        why = f" ({out.skipped} bad entries skipped)" if out.skipped else ""
        raise UserError(f"{p}: no images found{why}")
    return out.finish(())
