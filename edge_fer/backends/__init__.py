"""Inference backends: one exported classifier on one engine.

`create_backend(name, model_path, **opts)` opens a model on the engine `name`:

- "onnxruntime": `OnnxRuntimeBackend(model_path, threads=None, providers=None,
  allow_spinning=True)`, always available (onnxruntime is a core dependency).
- "tensorrt": provided by `edge_fer.backends.tensorrt_backend` when that module exists; it must
  expose `create(model_path, **opts) -> Backend` (or a `TensorRTBackend` class).
"""

from __future__ import annotations

import importlib
import inspect
import os

from edge_fer.backends.base import Backend, BackendClosed
from edge_fer.errors import UserError

BACKENDS = ("onnxruntime", "tensorrt")


def _check_opts(canon: str, cls: type, opts: dict) -> None:
    """UserError naming the options `cls` does not take: they were a bare "TypeError:
    __init__() got an unexpected keyword argument 'foo'"."""
    params = list(inspect.signature(cls).parameters.values())[1:]  # model_path
    if any(q.kind == q.VAR_KEYWORD for q in params):
        return
    takes = [q.name for q in params if q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY)]
    unknown = [k for k in opts if k not in takes]
    if unknown:
        raise UserError(
            f"{'is not an option' if len(unknown) == 1 else 'are not options'} of the {canon} "
            f"backend (it takes {', '.join(takes)})",
            param=", ".join(unknown),
        )


def create_backend(name: str, model_path: str | os.PathLike, **opts) -> Backend:
    name = (name or "onnxruntime").lower()
    if name in ("onnxruntime", "ort"):
        from edge_fer.backends.onnxruntime_backend import OnnxRuntimeBackend

        _check_opts("onnxruntime", OnnxRuntimeBackend, opts)
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
        cls = getattr(mod, "TensorRTBackend", None)
        if isinstance(cls, type):
            _check_opts("tensorrt", cls, opts)
        factory = getattr(mod, "create", None) or mod.TensorRTBackend
        return factory(model_path, **opts)
    raise UserError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "BackendClosed", "create_backend"]
