"""Pre-cropped faces (a dataset's, a user's face images) as a model's training saw them.

`edge-fer train` aligns every face once when it loads the dataset (a model whose spec says
`align`), then applies CLAHE (`spec.clahe`), then feeds the model. Whatever else feeds such a
model pre-cropped faces (eval, classify, fine-tuning, INT8 calibration) goes through
`as_trained`, so the faces are the training's: the same function (`align_images`), in the same
order relative to CLAHE. This module is light: the eye model (numba) loads only for a model
that asks for alignment.
"""

from __future__ import annotations

import numpy as np


def as_trained(
    images: np.ndarray,
    spec,
    clahe: bool = False,
    log: bool = True,
    found: np.ndarray | None = None,
) -> np.ndarray:
    """Pre-cropped faces (N, H, W) uint8, each box the whole image, for a model with
    PreprocessSpec `spec`: aligned on the eyes when `spec.align` (`align_images`, the trainer's
    call), then CLAHE when `clahe` and `spec.clahe`. Leave `clahe` False where the faces go
    through `spec.prepare` afterwards (it applies CLAHE itself); pass True where they go to the
    model without it (fine-tuning). `found`, a bool (N,) array, receives which faces had their
    eyes found (all False without alignment). `log`: one line on stderr about the alignment."""
    if found is not None:
        found[:] = False
    if getattr(spec, "align", False) and len(images):
        from edge_fer.align.aligner import align_images

        images = align_images(images, spec, log=log, found=found)
    if clahe and spec.clahe:
        from edge_fer.preprocess import apply_clahe

        images = apply_clahe(images)
    return images


def as_trained_faces(faces, spec, log: bool = False) -> list:
    """Face images of any size (gray HxW or BGR HxWx3 uint8, each an already-cropped face) for a
    model whose spec says `align`: each made gray and resized to the input side with
    `spec.prepare`'s rule (what the dataset loader does to a training face), then aligned by
    `as_trained`. Returned unchanged for a model without alignment."""
    if not getattr(spec, "align", False) or len(faces) == 0:
        return faces
    import cv2

    from edge_fer.preprocess import to_gray

    s = spec.input_size
    stack = np.empty((len(faces), s, s), np.uint8)
    for i, f in enumerate(faces):
        g = to_gray(f)
        if g.shape != (s, s):
            interp = cv2.INTER_AREA if g.shape[0] > s else cv2.INTER_LINEAR
            g = cv2.resize(g, (s, s), interpolation=interp)
        stack[i] = g
    return list(as_trained(stack, spec, log=log))
