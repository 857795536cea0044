"""INT8 post-training quantization: calibration sets, ranges, Q/DQ models, TensorRT caches.

    from edge_fer.quantize import calibrate, from_dataset, from_source
    faces = from_dataset("../shared/data/fer2013", "train", samples=512, seed=0)
    # or: faces = from_source("lobby_camera.mp4", cascade="path/to/cascade.pico")
    info = calibrate("model.onnx", faces, out_dir="int8/", method="entropy")

Modules, one job each: `calib_data` (calibration faces and the batches the model sees),
`ranges` (one pass that keeps every tensor's histogram, `collect`; the per-tensor ranges of
any method from it, `compute`: entropy, percentile, min-max), `qdq` (the Q/DQ ONNX model),
`trt_cache` (TensorRT calibration caches), `report` (the JSON report), `pipeline` (all of it,
written atomically). Needs the `onnx` package (extra `quantize`).

    from edge_fer.quantize import ranges
    seen = ranges.collect("model.onnx", batches)         # one pass; seen.save("h.npz")
    rs = {m: ranges.compute(seen, m) for m in ranges.METHODS}
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it; imported on first use, so that `trt_cache` (say)
# does not pull in the detector, the data loaders and ONNX Runtime
_EXPORTS = {
    "MIN_FACES": "calib_data",
    "CalibFaces": "calib_data",
    "DetectOptions": "calib_data",
    "FaceBatchReader": "calib_data",
    "aligned_for": "calib_data",
    "check_faces": "calib_data",
    "from_dataset": "calib_data",
    "from_source": "calib_data",
    "calibrate": "pipeline",
}

__all__ = [
    "MIN_FACES",
    "CalibFaces",
    "DetectOptions",
    "FaceBatchReader",
    "aligned_for",
    "calibrate",
    "check_faces",
    "from_dataset",
    "from_source",
]


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'edge_fer.quantize' has no attribute {name!r}")
    return getattr(importlib.import_module(f"edge_fer.quantize.{mod}"), name)
