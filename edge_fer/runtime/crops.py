"""Face crops for the classifier: a square around the box, grown by the model's margin, in gray.

The crop is the detection's square grown by `margin` of its side on every side (the
`PreprocessSpec.crop_margin` the model was trained with), clamped to the frame; the part that
falls outside the frame is filled by replicating the border, so a face at the edge keeps its
place in the crop. The crop is resized straight to the model's input side, so the classifier's
`spec.prepare` has nothing left to resize.
"""

from __future__ import annotations

import cv2
import numpy as np


def square_box(x: float, y: float, w: float, h: float, margin: float) -> tuple[int, int, int]:
    """(x0, y0, side) of the square crop for box x, y, w, h grown by `margin` per side."""
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    s = max(round(side), 1)
    return round(cx - s / 2.0), round(cy - s / 2.0), s


def crop_face(gray: np.ndarray, box, margin: float = 0.1, size: int | None = None) -> np.ndarray:
    """Square uint8 crop of a grayscale frame around box (x, y, w, h); resized to size x size."""
    h_img, w_img = gray.shape[:2]
    x0, y0, s = square_box(float(box[0]), float(box[1]), float(box[2]), float(box[3]), margin)
    x1, y1 = x0 + s, y0 + s
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w_img), min(y1, h_img)
    if cx1 <= cx0 or cy1 <= cy0:  # entirely outside: a blank crop rather than an error
        crop = np.zeros((s, s), np.uint8)
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
    gray: np.ndarray, boxes, margin: float = 0.1, size: int | None = None
) -> list[np.ndarray]:
    return [crop_face(gray, b, margin, size) for b in boxes]
