"""Inference backends: one exported classifier on one engine.

`create_backend(name, model_path, **opts)` opens a model on the engine `name`:

- "onnxruntime": `OnnxRuntimeBackend(model_path, threads=None, providers=None,
  allow_spinning=True)`, always available (onnxruntime is a core dependency).
- "tensorrt": provided by `edge_fer.backends.tensorrt_backend` when that module exists; it must
  expose `create(model_path, **opts) -> Backend` (or a `TensorRTBackend` class).
"""

from __future__ import annotations

import importlib
import os

from edge_fer.backends.base import Backend
from edge_fer.errors import UserError

BACKENDS = ("onnxruntime", "tensorrt")


def create_backend(name: str, model_path: str | os.PathLike, **opts) -> Backend:
    name = (name or "onnxruntime").lower()
    if name in ("onnxruntime", "ort"):
        from edge_fer.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_path, **opts)
    if name in ("tensorrt", "trt"):
        try:
            mod = importlib.import_module("edge_fer.backends.tensorrt_backend")
        except ModuleNotFoundError as exc:
            if exc.name == "edge_fer.backends.tensorrt_backend":
                raise UserError(
                    "TensorRT backend not available: this edge-fer has no TensorRT support yet; "
                    "use --backend onnxruntime"
                ) from None
            raise UserError(f"TensorRT backend not available: {exc}") from None
        factory = getattr(mod, "create", None) or mod.TensorRTBackend
        return factory(model_path, **opts)
    raise UserError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "create_backend"]
