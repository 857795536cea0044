"""Eye-based face alignment: find the eyes in a face box, rotate and frame the face on them.

The face box is resampled to a small patch (the face `face_px` wide, centred), the eye model
refines each eye from several perturbed starts (the right eye on the mirrored patch), and each
eye is the median of the end points. Eyes count as found when the starts agree (their spread,
as a fraction of the eye distance, is small), the eye distance fits the box and the eye line
is not steeper than the model allows; otherwise the caller gets the plain crop.

The aligned crop: rotation about the eye midpoint so the eye line is horizontal, then a frame of
`side` eye distances outwards from each eye, `top` above the eye line and `bottom` below it
(defaults 1.7, 1.3, 3.2: a 4.4 x 4.5 eye-distance frame), resampled to size x size.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_fer.align import kernels
from edge_fer.align.model import EyeModel
from edge_fer.errors import UserError
from edge_fer.preprocess import DEFAULT_CROP_MARGIN

BUNDLED = Path(__file__).resolve().parent.parent / "assets" / "eyes_default.eyes"
FER2013_FRAME = (0.83, 1.09, 1.58)  # side, top, bottom: measured, see Frame.fer2013


@dataclass(frozen=True)
class Frame:
    """Spatial normalisation, in eye distances: outwards from each eye, above and below the
    eye line."""

    side: float = 1.7
    top: float = 1.3
    bottom: float = 3.2

    def __post_init__(self) -> None:
        for k in ("side", "top", "bottom"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 20):
                raise UserError(f"must be a number in 0..20, got {v!r}", param=f"align_{k}")
        if self.top + self.bottom <= 0:
            raise UserError(
                "plus align_bottom must be > 0 (the frame around the eyes)", param="align_top"
            )

    @classmethod
    def fer2013(cls) -> Frame:
        """FER2013's own framing: where the bundled eye model puts the eyes of FER2013 training
        faces (median of 2000, docs/align.md), so an aligned crop looks like a FER2013 face
        (about 2.7 x 2.7 eye distances, much tighter than the default frame)."""
        return cls(*FER2013_FRAME)

    def eye_positions(self, w: int, h: int) -> tuple[tuple[float, float], tuple[float, float]]:
        """Where the left and right eye land in a w x h aligned crop (x, y; pixel centres)."""
        fw, fh = 1 + 2 * self.side, self.top + self.bottom
        y = h * self.top / fh - 0.5
        return (w * self.side / fw - 0.5, y), (w * (self.side + 1) / fw - 0.5, y)


def parse_frame(text: str, param: str = "frame") -> tuple[float, float, float]:
    """Parse "SIDE,TOP,BOTTOM" into a checked (side, top, bottom)."""
    try:
        vals = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        vals = ()
    ok = len(vals) == 3 and all(math.isfinite(v) and 0 <= v <= 20 for v in vals)
    if not ok or vals[1] + vals[2] <= 0:
        raise UserError(
            f"must be three numbers SIDE,TOP,BOTTOM in 0..20 (TOP + BOTTOM > 0), got {text!r}",
            param=param,
        )
    return (vals[0], vals[1], vals[2])


@dataclass
class Eyes:
    """Eye centres in image pixels (x, y), left = the one on the image's left."""

    left: tuple[float, float]
    right: tuple[float, float]
    found: bool
    spread: float  # worst eye's median start distance from the median, / eye distance
    reason: str = ""  # why not found

    @property
    def distance(self) -> float:
        return math.hypot(self.right[0] - self.left[0], self.right[1] - self.left[1])


def face_box(box) -> tuple[float, float, float, float]:
    """`box` as (x, y, w, h) floats; a detector's `Detection` (row, col, size, score) by its
    x, y, w, h, as the runtime converts it. UserError naming `box` for anything else than four
    numbers (None, 3 or 5 values: a 5th was dropped, and a Detection read as x, y, w, h)."""
    from numbers import Real

    from edge_fer.detect.detector import Detection

    if isinstance(box, Detection):
        return (box.x, box.y, box.w, box.h)
    if isinstance(box, np.ndarray):
        vals = list(box) if box.ndim == 1 else []
    else:
        vals = list(box) if isinstance(box, (tuple, list)) else []
    if len(vals) != 4 or not all(isinstance(v, Real) and not isinstance(v, bool) for v in vals):
        shown = repr(box)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise UserError(
            f"must be (x, y, w, h), four numbers, or an edge_fer.detect.Detection; got {shown}",
            param="box",
        )
    x, y, w, h = (float(v) for v in vals)
    return x, y, w, h


def face_square(box) -> tuple[float, float, float]:
    """(cx, cy, side) of a box (x, y, w, h), or a Detection: its centre and mean side."""
    x, y, w, h = face_box(box)
    return x + w / 2.0, y + h / 2.0, (w + h) / 2.0


def patch_matrix(cx: float, cy: float, side: float, face_px: int, patch_px: int) -> np.ndarray:
    """2x3 affine from image to patch coordinates (the face `face_px` wide, centred)."""
    k = face_px / side
    half = patch_px / 2.0
    return np.array([[k, 0, half - k * cx], [0, k, half - k * cy]], np.float64)


def extract_patch(gray: np.ndarray, m: np.ndarray, patch_px: int) -> np.ndarray:
    """The patch_px square patch that the image-to-patch affine `m` describes."""
    # shrinking a face a lot: area-average first so single-pixel tests see what training saw
    k = m[0, 0]
    f = 1
    if k < 0.5:
        f = max(1, int(1 / k) // 2 * 2)  # even, so the grid stays aligned
        f = min(f, max(1, min(gray.shape[:2]) // 2))
    return resample(gray, cv2.invertAffineTransform(m), patch_px, patch_px, f)


def resample(gray: np.ndarray, inv: np.ndarray, w: int, h: int, f: int = 1) -> np.ndarray:
    """w x h output whose pixel (u, v) is the image at inv @ (u, v, 1), bilinear, the border
    replicated; with f > 1 from the image area-averaged over f x f blocks first. Only the part
    of the image the output covers is read (a face in a large frame costs what the face
    costs)."""
    H, W = gray.shape[:2]
    corners = inv @ np.array([[-0.5, -0.5, w - 0.5, w - 0.5], [-0.5, h - 0.5, -0.5, h - 0.5],
                              [1, 1, 1, 1]])  # fmt: skip
    pad = f + 2  # bilinear reads a pixel further; keep whole blocks
    hh, ww = H // f * f, W // f * f
    x0 = max(0, int(np.floor(corners[0].min())) - pad) // f * f
    y0 = max(0, int(np.floor(corners[1].min())) - pad) // f * f
    x1 = min(ww, -(-(int(np.ceil(corners[0].max())) + pad) // f) * f)
    y1 = min(hh, -(-(int(np.ceil(corners[1].max())) + pad) // f) * f)
    if x1 <= x0 or y1 <= y0:  # the output lies off the image: its border, from the whole
        x0, y0, x1, y1 = 0, 0, ww, hh
    src = gray[y0:y1, x0:x1]
    inv = inv.astype(np.float64).copy()
    inv[:, 2] -= (x0, y0)
    if f > 1:
        src = cv2.resize(src, ((x1 - x0) // f, (y1 - y0) // f), interpolation=cv2.INTER_AREA)
        inv /= f
        inv[:, 2] -= (f - 1) / (2.0 * f)  # pixel centres of the reduced image
    return cv2.warpAffine(
        src,
        inv,
        (int(w), int(h)),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _check_gray(gray) -> np.ndarray:
    if not isinstance(gray, np.ndarray) or gray.ndim != 2 or gray.size == 0:
        raise UserError("must be a non-empty 2-D grayscale image", param="gray")
    if gray.dtype != np.uint8:
        raise UserError(f"must be a uint8 image, got {gray.dtype}", param="gray")
    return gray


def _is_real(v: object) -> bool:
    """A real number, not a bool (True was a margin of 1)."""
    from numbers import Real

    return isinstance(v, Real) and not isinstance(v, bool)


class Aligner:
    """An eye model plus a frame: `eyes`, `crop`, `align_faces`."""

    def __init__(
        self,
        model: EyeModel,
        frame: Frame | tuple[float, float, float] | None = None,
        margin: float = DEFAULT_CROP_MARGIN,
    ):
        # a str was a TypeError here, a tuple or str frame an AttributeError at the first face
        if not _is_real(margin) or not 0 <= margin <= 1:
            raise UserError(f"must be a number in 0..1, got {margin!r}", param="margin")
        if frame is not None and not isinstance(frame, Frame):
            if isinstance(frame, (str, bytes)) or not hasattr(frame, "__len__") or len(frame) != 3:
                raise UserError(
                    f"must be an edge_fer.align.Frame or (side, top, bottom), got {frame!r}",
                    param="frame",
                )
            frame = Frame(*frame)
        self.model = model
        self.frame = frame or Frame()
        self.margin = margin  # of the plain crop (the fallback), as runtime.crops uses it
        self._stage_of = model.stage_of
        P, fp = model.patch_px, model.face_px
        self._r0 = P / 2.0 + model.init[0] * fp
        self._c0 = P / 2.0 + model.init[1] * fp
        st = model.starts.astype(np.float64).copy()
        st[:, :2] *= fp
        self._starts = st
        self._tests = model.tests
        self._leaves = model.leaves.astype(np.float64)
        self._scales = model.scales.astype(np.float64)

    # ---- eyes ---------------------------------------------------------------------------
    def patch_eyes(self, patch: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Eyes in patch coordinates: (left (r, c), right (r, c), left spread, right spread)
        with spreads in patch pixels."""
        m = self.model
        out = np.empty((len(self._starts), 2))
        res = []
        for flip in (False, True):
            kernels.locate(patch, flip, self._r0, self._c0, self._starts, self._tests,
                           self._leaves, self._stage_of, self._scales, m.depth, out)  # fmt: skip
            med = np.median(out, axis=0)
            spread = float(np.median(np.hypot(out[:, 0] - med[0], out[:, 1] - med[1])))
            if flip:
                med = np.array([med[0], m.patch_px - 1 - med[1]])
            res.append((med, spread))
        return res[0][0], res[1][0], res[0][1], res[1][1]

    def eyes(self, gray: np.ndarray, box) -> Eyes:
        """The eyes of the face in `box` (x, y, w, h), or a `Detection`, of a grayscale frame."""
        gray = _check_gray(gray)
        m = self.model
        cx, cy, side = face_square(box)
        if not (side > 0 and math.isfinite(side) and math.isfinite(cx) and math.isfinite(cy)):
            raise UserError(f"must have a positive finite size, got {face_box(box)}", param="box")
        mat = patch_matrix(cx, cy, side, m.face_px, m.patch_px)
        patch = extract_patch(gray, mat, m.patch_px)
        lp, rp, ls, rs = self.patch_eyes(patch)
        k = m.face_px / side
        to_img = lambda p: ((p[1] - mat[0, 2]) / k, (p[0] - mat[1, 2]) / k)
        left, right = to_img(lp), to_img(rp)
        d_px = math.hypot(rp[0] - lp[0], rp[1] - lp[1])
        spread = max(ls, rs) / max(d_px, 1e-6)
        angle = math.degrees(math.atan2(rp[0] - lp[0], rp[1] - lp[1]))
        reason = ""
        if spread > m.max_spread:
            reason = f"starts disagree (spread {spread:.2f} > {m.max_spread:.2f})"
        elif not m.min_dist <= d_px / m.face_px <= m.max_dist:
            reason = f"eye distance {d_px / m.face_px:.2f} of the box is implausible"
        elif abs(angle) > m.max_angle:
            reason = f"eye line at {angle:.0f} degrees"
        return Eyes(left, right, not reason, spread, reason)

    # ---- crops --------------------------------------------------------------------------
    def warp(self, gray: np.ndarray, left, right, w: int, h: int | None = None) -> np.ndarray:
        """The w x h aligned crop for eye centres left, right (image x, y)."""
        return warp_eyes(gray, left, right, self.frame, w, w if h is None else h)

    def crop(self, gray: np.ndarray, box, size: int) -> tuple[np.ndarray, bool]:
        """size x size uint8 aligned crop of the face in box (x, y, w, h), or a `Detection`,
        and whether the eyes were found; when not, the plain crop (the box grown by `margin`,
        as the runtime's)."""
        from edge_fer.runtime.crops import crop_face

        if not (isinstance(size, (int, np.integer)) and 1 <= size <= 4096):
            raise UserError(f"must be an integer in 1..4096, got {size!r}", param="size")
        box = face_box(box)  # (the plain crop reads a Detection as x, y, w, h too)
        e = self.eyes(gray, box)
        if not e.found:
            return crop_face(gray, box, self.margin, int(size)), False
        return self.warp(gray, e.left, e.right, int(size)), True

    def align_faces(self, faces: np.ndarray, found: np.ndarray | None = None) -> np.ndarray:
        """Align pre-cropped faces (N, H, W) uint8, each box the whole image; a face whose eyes
        are not found is returned unchanged. `found`, a bool (N,) array, receives which were."""
        if not isinstance(faces, np.ndarray) or faces.ndim != 3 or faces.dtype != np.uint8:
            raise UserError("must be a uint8 array of shape (N, H, W)", param="faces")
        n, h, w = faces.shape
        out = faces.copy()
        for i in range(n):
            e = self.eyes(faces[i], (0, 0, w, h))
            if e.found:
                out[i] = self.warp(faces[i], e.left, e.right, w, h)
            if found is not None:
                found[i] = e.found
        return out


def warp_eyes(gray: np.ndarray, left, right, frame: Frame, w: int, h: int) -> np.ndarray:
    """Rotate about the eye midpoint so the eye line is horizontal and cut `frame` around it,
    resampled to w x h (border replicated outside the image)."""
    for name, v in (("w", w), ("h", h)):  # 0 divided by zero, -5 or 100000 made a crop
        if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 1 <= v <= 4096):
            raise UserError(f"must be an integer in 1..4096, got {v!r}", param=name)
    try:
        lx, ly = float(left[0]), float(left[1])
        rx, ry = float(right[0]), float(right[1])
    except (TypeError, ValueError, IndexError):
        raise UserError(
            f"eye centres must be (x, y) numbers, got {left!r} and {right!r}", param="eyes"
        ) from None
    # a centre far outside the frame (1e200) crashed OpenCV's warpAffine (SIGSEGV)
    reach = 4 * max(gray.shape[:2])
    if not all(math.isfinite(v) and abs(v) <= reach for v in (lx, ly, rx, ry)):
        raise UserError(
            f"eye centres must be finite and near the frame, got {left!r} and {right!r}",
            param="eyes",
        )
    d = math.hypot(rx - lx, ry - ly)
    if not d > 0:
        raise UserError("the two eyes coincide", param="eyes")
    cos, sin = (rx - lx) / d, (ry - ly) / d
    mx, my = (lx + rx) / 2.0, (ly + ry) / 2.0
    fw, fh = (1 + 2 * frame.side) * d, (frame.top + frame.bottom) * d
    sx, sy = fw / w, fh / h  # source pixels per output pixel, along and across the eye line
    # output (u, v) -> aligned (a, b) -> image: the inverse map warpAffine wants
    a0, b0 = 0.5 * sx - fw / 2.0, 0.5 * sy - frame.top * d
    inv = np.array(
        [
            [sx * cos, -sy * sin, mx + a0 * cos - b0 * sin],
            [sx * sin, sy * cos, my + a0 * sin + b0 * cos],
        ]
    )
    f = int(min(sx, sy) // 2) * 2  # shrink a lot: area-average first (no aliasing)
    f = f if f >= 2 and min(gray.shape[:2]) >= 2 * f else 1
    return resample(gray, inv, int(w), int(h), f)


_CACHE: dict = {}


def load_aligner(
    path: str | os.PathLike | None = None,
    frame: Frame | tuple[float, float, float] | None = None,
    margin: float = DEFAULT_CROP_MARGIN,
) -> Aligner:
    """An Aligner from an eye model file (None: the bundled eyes_default.eyes)."""
    if path is not None and not isinstance(path, (str, os.PathLike)):  # (3: a bare TypeError)
        raise UserError(f"must be a path to an eye model file, got {path!r}", param="path")
    p = Path(path) if path is not None else BUNDLED
    if path is None and not p.is_file():
        raise UserError(f"the bundled eye model is missing ({p}); reinstall edge-fer")
    key = str(p.resolve()) if p.exists() else str(p)
    model = _CACHE.get(key) if path is None else None
    if model is None:
        model = EyeModel.load(p)
        if path is None:
            _CACHE[key] = model
    return Aligner(model, frame, margin)


def align_images(
    images: np.ndarray, spec=None, log: bool = True, found: np.ndarray | None = None
) -> np.ndarray:
    """Pre-cropped faces (N, H, W) uint8 aligned with the bundled eye model and the frame of
    `spec` (a PreprocessSpec; None: the default frame), for training and evaluating a model
    whose spec says `align`; faces whose eyes are not found stay as they are. `found`, a bool
    (N,) array, receives which were aligned."""
    import sys
    import time

    frame = Frame(*spec.align_frame) if spec is not None else Frame()
    if found is None:
        found = np.zeros(len(images), bool)
    t0 = time.time()
    out = load_aligner(frame=frame).align_faces(images, found)
    if log:
        print(
            f"aligned {int(found.sum())}/{len(images)} faces on their eyes "
            f"({time.time() - t0:.0f}s; the rest kept as they were)",
            file=sys.stderr,
        )
    return out
