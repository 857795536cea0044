"""Face annotations: a simple box file and the Caltech WebFaces landmark file.

Both give square face boxes `Face(row, col, size)` (centre and side, pixels), the convention of
pico windows. Bad input is counted per reason in an `InputReport` and skipped; it never stops
reading; so is a box listed again for the same image ('duplicate': one face, not two). Image
decoding is checked later (samples.load_images), into the same report.

Box file: one box per line, `path x y w h` (top-left corner, width, height, pixels); the path
may contain spaces (the last four fields are the numbers) and is relative to the file's folder
unless absolute. Blank lines and lines starting with `#` are ignored. A non-square box becomes
the square of side (w + h) / 2 around the same centre.

WebFaces: `file x_leye y_leye x_reye y_reye x_nose y_nose x_mouth y_mouth` per face, images in
`images/` beside the file. The box is derived from the landmarks (`webfaces_box`): its centre
lies on the line from the eye midpoint to the mouth, its side is a multiple of the mean of the
inter-ocular and eye-midpoint-to-mouth distances (more stable under pose than either alone). The
constants were calibrated against the reference facefinder's detections on WebFaces training
images (docs/cascade.md, "Face boxes"), so a face annotated here and the window pico reports on
it coincide; evaluation uses the very same boxes.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edge_fer.errors import UserError
from edge_fer.imageio import IMAGE_EXTS

WEBFACES_FILE = "WebFaces_GroundThruth.txt"  # sic, as distributed

# Box from landmarks (calibrated on facefinder detections, see docs/cascade.md).
# centre = eye_mid + CENTRE_T * (mouth - eye_mid)
# size = SIZE_K * (|right_eye - left_eye| + |mouth - eye_mid|) / 2
CENTRE_T = 0.20
SIZE_K = 2.75

REASONS = {
    "malformed": "malformed line",
    "missing_file": "image file missing",
    "empty_box": "box of size zero (or negative, or not finite)",
    "duplicate": "the same box listed again for the same image",
    "outside_image": "box centre outside the image",
    "undecodable": "image does not decode",
    "too_small": "face smaller than the minimum training size",
}


@dataclass(frozen=True)
class Face:
    """A square face box: centre (row, col) and side `size`, pixels."""

    row: float
    col: float
    size: float

    def iou(self, row: float, col: float, size: float) -> float:
        h1, h2 = self.size / 2, size / 2
        dr = max(0.0, min(self.row + h1, row + h2) - max(self.row - h1, row - h2))
        dc = max(0.0, min(self.col + h1, col + h2) - max(self.col - h1, col - h2))
        inter = dr * dc
        union = self.size**2 + size**2 - inter
        return inter / union if union > 0 else 0.0


@dataclass
class AnnotatedImage:
    path: Path
    faces: list[Face] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class InputReport:
    """Bad input seen while reading: counts per reason and a few examples of each."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 3

    def add(self, reason: str, where: str, n: int = 1) -> None:
        assert reason in REASONS, reason
        self.counts[reason] += n
        ex = self.examples.setdefault(reason, [])
        if len(ex) < self.max_examples:
            ex.append(where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: InputReport) -> None:
        for k, v in other.counts.items():
            self.counts[k] += v
            ex = self.examples.setdefault(k, [])
            ex.extend(other.examples.get(k, [])[: max(0, self.max_examples - len(ex))])

    def lines(self) -> list[str]:
        out = []
        for reason, what in REASONS.items():
            n = self.counts.get(reason, 0)
            if n:
                ex = "; ".join(self.examples.get(reason, []))
                out.append(f"skipped {n} x {what} (e.g. {ex})")
        return out

    def to_json(self) -> dict:
        return {k: int(v) for k, v in self.counts.items() if v}


def webfaces_box(
    xle: float, yle: float, xre: float, yre: float, xn: float, yn: float, xm: float, ym: float
) -> Face | None:
    """The square face box of one WebFaces annotation; None when the landmarks are degenerate."""
    vals = (xle, yle, xre, yre, xn, yn, xm, ym)
    if not all(math.isfinite(v) for v in vals):
        return None
    ex, ey = (xle + xre) / 2, (yle + yre) / 2
    d = math.hypot(xm - ex, ym - ey)
    e = math.hypot(xre - xle, yre - yle)
    if d <= 0 or e <= 0:
        return None
    return Face(
        row=ey + CENTRE_T * (ym - ey), col=ex + CENTRE_T * (xm - ex), size=SIZE_K * (d + e) / 2
    )


def _group(order: list[str], boxes: dict[str, list[Face]], root: Path) -> list[AnnotatedImage]:
    return [AnnotatedImage(path=root / name, faces=boxes[name]) for name in order]


def read_webfaces(path: str | os.PathLike) -> tuple[list[AnnotatedImage], InputReport]:
    """WebFaces annotations: `path` is the dataset folder (with images/) or the landmark file.

    Images come back in name order, each with its faces; an image named by the file that does
    not exist is counted ('missing_file', once per face) and left out.
    """
    p = Path(path)
    if p.is_dir():
        f = p / WEBFACES_FILE
        img_root = p / "images" if (p / "images").is_dir() else p
    else:
        f = p
        img_root = p.parent / "images" if (p.parent / "images").is_dir() else p.parent
    if not f.is_file():
        raise UserError(f"no WebFaces landmark file at {f}")
    report = InputReport()
    boxes: dict[str, list[Face]] = {}
    order: list[str] = []
    try:
        # utf-8-sig: a BOM (Windows editors) made the first file name missing; surrogateescape:
        # a name in another encoding maps back to its bytes on disk (replace lost it)
        text = f.read_text(encoding="utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        raise UserError(f"cannot read {f}: {exc.strerror or exc}") from None
    exists: dict[str, bool] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        where = f"{f.name}:{lineno}"
        if len(parts) != 9:
            report.add("malformed", where)
            continue
        try:
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            report.add("malformed", where)
            continue
        name = parts[0]
        if name not in exists:
            exists[name] = (img_root / name).is_file()
        if not exists[name]:
            report.add("missing_file", where)
            continue
        face = webfaces_box(*vals)
        if face is None:
            report.add("empty_box", where)
            continue
        if name not in boxes:
            boxes[name] = []
            order.append(name)
        if face in boxes[name]:  # before: one face listed twice counted as two faces
            report.add("duplicate", where)
            continue
        boxes[name].append(face)
    order.sort()
    return _group(order, boxes, img_root), report


def read_box_file(path: str | os.PathLike) -> tuple[list[AnnotatedImage], InputReport]:
    """A box file (`path x y w h` per line); images in name order, bad lines counted."""
    f = Path(path)
    if not f.is_file():  # (/dev/null, a folder: "not found" though they exist)
        why = "not found" if not f.exists() else "not a regular file"
        raise UserError(f"annotation file {f}: {why}")
    try:
        # utf-8-sig: a BOM (Windows editors) made the first file name missing; surrogateescape:
        # a name in another encoding maps back to its bytes on disk (replace lost it)
        text = f.read_text(encoding="utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        raise UserError(f"cannot read {f}: {exc.strerror or exc}") from None
    report = InputReport()
    boxes: dict[str, list[Face]] = {}
    order: list[str] = []
    exists: dict[str, bool] = {}
    root = f.parent
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        where = f"{f.name}:{lineno}"
        parts = s.rsplit(None, 4)
        if len(parts) != 5:
            report.add("malformed", where)
            continue
        try:
            x, y, w, h = (float(v) for v in parts[1:])
        except ValueError:
            report.add("malformed", where)
            continue
        name = parts[0]
        ip = Path(name) if os.path.isabs(name) else root / name
        key = str(ip)
        if key not in exists:
            exists[key] = ip.is_file()
        if not exists[key]:
            report.add("missing_file", where)
            continue
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            report.add("empty_box", where)
            continue
        if key not in boxes:
            boxes[key] = []
            order.append(key)
        face = Face(row=y + h / 2, col=x + w / 2, size=(w + h) / 2)
        if face in boxes[key]:  # before: one face listed twice counted as two faces
            report.add("duplicate", where)
            continue
        boxes[key].append(face)
    order.sort()
    return [AnnotatedImage(path=Path(k), faces=boxes[k]) for k in order], report


def split_images(
    images: list[AnnotatedImage], split: str, val_fraction: float = 0.1
) -> list[AnnotatedImage]:
    """'train': the first (1 - val_fraction) of the images in name order, 'val': the rest."""
    if split == "all":
        return list(images)
    if split not in ("train", "val"):
        raise UserError(f"must be train, val or all, got {split!r}", param="split")
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"the validation fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(images, key=lambda im: im.name)
    nval = round(len(ordered) * val_fraction)
    cut = len(ordered) - nval
    return ordered[:cut] if split == "train" else ordered[cut:]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in `folder`, in name order."""
    d = Path(folder)
    if not d.is_dir():
        raise UserError(f"image folder not found: {d}")
    return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def split_paths(paths: list[Path], split: str, val_fraction: float = 0.1) -> list[Path]:
    """The same name-order split for plain image lists (e.g. background images)."""
    if split == "all":
        return list(paths)
    ordered = sorted(paths, key=lambda p: p.name)
    nval = round(len(ordered) * val_fraction)
    cut = len(ordered) - nval
    return ordered[:cut] if split == "train" else ordered[cut:]
