"""Face crops for the classifier: a square around the box, grown by the model's margin, in gray.

The crop is the detection's square grown by `margin` of its side on every side (the
`PreprocessSpec.crop_margin` the model was trained with), clamped to the frame; the part that
falls outside the frame is filled by replicating the border, so a face at the edge keeps its
place in the crop. The crop is resized straight to the model's input side, so the classifier's
`spec.prepare` has nothing left to resize.

A model trained on eye-aligned faces (`spec.align`, `edge-fer train --align`), or a run given
`--align`, gets the aligned crop instead (edge_fer.align: eye line levelled, face framed on the
eyes by `spec.align_frame`); a face whose eyes are not found gets the plain crop above.
`face_cropper` picks one of the two for a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from edge_fer.errors import UserError
from edge_fer.preprocess import DEFAULT_CROP_MARGIN


def square_box(x: float, y: float, w: float, h: float, margin: float) -> tuple[int, int, int]:
    """(x0, y0, side) of the square crop for box x, y, w, h grown by `margin` per side."""
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    s = max(round(side), 1)
    return round(cx - s / 2.0), round(cy - s / 2.0), s


def crop_face(
    gray: np.ndarray, box, margin: float = DEFAULT_CROP_MARGIN, size: int | None = None
) -> np.ndarray:
    """Square uint8 crop of a grayscale frame around box (x, y, w, h); resized to size x size."""
    if not isinstance(gray, np.ndarray) or gray.ndim not in (2, 3):
        raise UserError(f"must be a 2-D grayscale frame, got {type(gray).__name__}", param="gray")
    # (size 0 was an OpenCV assertion, 100000 a 10 GB crop; a margin of 1e6 a 4e16-byte one)
    if size is not None and not (
        isinstance(size, (int, np.integer)) and not isinstance(size, bool) and 1 <= size <= 4096
    ):
        raise UserError(f"must be an integer in 1..4096, got {size!r}", param="size")
    if not (isinstance(margin, (int, float, np.number)) and -0.5 < margin <= 4):
        raise UserError(f"must be a number in (-0.5, 4], got {margin!r}", param="margin")
    h_img, w_img = gray.shape[:2]
    v = [float(b) for b in box[:4]]
    # a box far beyond the frame is a caller's mistake: its padded crop was allocated whole
    # (a 1e9 box asked OpenCV for 1e18 bytes); the detector's boxes are inside the frame
    if (
        len(v) != 4
        or not all(math.isfinite(b) for b in v)
        or max(v[2], v[3]) > 8 * max(h_img, w_img)
    ):
        raise UserError(
            f"must be 4 finite numbers (x, y, w, h) with a side at most 8x the frame's "
            f"({max(h_img, w_img)} px), got {tuple(box)}",
            param="box",
        )
    x0, y0, s = square_box(v[0], v[1], v[2], v[3], margin)
    if s > 16 * max(h_img, w_img):  # (the padded crop is allocated whole)
        raise UserError(
            f"grown by margin {margin} makes a {s} px crop, over 16x the frame's side",
            param="box",
        )
    x1, y1 = x0 + s, y0 + s
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w_img), min(y1, h_img)
    if cx1 <= cx0 or cy1 <= cy0:  # entirely outside: a blank crop rather than an error
        crop: np.ndarray = np.zeros((s, s), np.uint8)
    else:
        crop = gray[cy0:cy1, cx0:cx1]
        pad = (cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1)
        if any(pad):
            crop = cv2.copyMakeBorder(crop, *pad, cv2.BORDER_REPLICATE)
    if size is not None and crop.shape[0] != size:
        interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (size, size), interpolation=interp)
    return np.ascontiguousarray(crop)


def crop_faces(
    gray: np.ndarray, boxes, margin: float = DEFAULT_CROP_MARGIN, size: int | None = None
) -> list[np.ndarray]:
    return [crop_face(gray, b, margin, size) for b in boxes]


def face_cropper(spec=None, align: bool = False) -> Callable[[np.ndarray, object], np.ndarray]:
    """`crop(gray, box)` for a model with PreprocessSpec `spec` (None: the default margin, no resize):
    aligned on the eyes when the spec says so or `align` is given, else the plain crop."""
    margin = spec.crop_margin if spec is not None else DEFAULT_CROP_MARGIN
    size = spec.input_size if spec is not None else None
    if not (align or (spec is not None and spec.align)):
        return lambda gray, box: crop_face(gray, box, margin, size)
    from edge_fer.align import Frame, load_aligner

    frame = Frame(*spec.align_frame) if spec is not None else Frame()
    aligner = load_aligner(frame=frame, margin=margin)
    aligner.eyes(np.zeros((16, 16), np.uint8), (0, 0, 16, 16))  # compile / load the kernel now
    if size is None:  # the aligned crop needs a side: the plain crop's, at most 256
        return lambda gray, box: aligner.crop(gray, box, _side(box, margin))[0]
    return lambda gray, box: aligner.crop(gray, box, size)[0]


def _side(box, margin: float) -> int:
    x, y, w, h = (float(v) for v in box[:4])
    return int(min(256, square_box(x, y, w, h, margin)[2]))
