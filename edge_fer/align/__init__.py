"""Face alignment from eye centres: a light pico-style eye localiser (regression trees of
pixel comparisons, numba) and the similarity warp that levels the eye line and frames the face.

    from edge_fer.align import load_aligner
    al = load_aligner()                    # the bundled eyes_default.eyes
    crop, found = al.crop(gray, (x, y, w, h), 48)
    faces48 = al.align_faces(faces48)      # pre-cropped datasets (FER2013)
    x = as_trained(faces48, spec)          # dataset faces as `edge-fer train` fed the model

docs/align.md describes the model, the file format and the measurements. The names below are
imported on first use, so that `edge_fer.align.config` stays light (the CLI reads it).
"""

from __future__ import annotations

_NAMES = {
    "Aligner": "aligner",
    "Eyes": "aligner",
    "Frame": "aligner",
    "align_images": "aligner",
    "as_trained": "dataset",
    "as_trained_faces": "dataset",
    "load_aligner": "aligner",
    "warp_eyes": "aligner",
    "EyeModel": "model",
}
__all__ = [
    "Aligner",
    "EyeModel",
    "Eyes",
    "Frame",
    "align_images",
    "as_trained",
    "as_trained_faces",
    "load_aligner",
    "warp_eyes",
]


def __getattr__(name: str):
    mod = _NAMES.get(name)
    if mod is None:
        raise AttributeError(f"module 'edge_fer.align' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"edge_fer.align.{mod}"), name)
