"""The interface every inference backend implements.

A backend runs one exported classifier: float32 NCHW input (already prepared by the model's
`PreprocessSpec`) in, float32 class probabilities (N, C) out. It knows nothing about faces,
labels or preprocessing; `edge_fer.classify.Classifier` puts those around it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TypeVar

import numpy as np

_C = TypeVar("_C", bound="Closing")


class BackendClosed(ValueError, RuntimeError):
    """A backend used after close(). A ValueError, Python's error for use after close (a
    closed file); also a RuntimeError, which it was before, so older handlers still catch it."""


class Closing:
    """`with obj:` closes it at the end (a backend, a classifier)."""

    def close(self) -> None:
        """Release the resources. Safe to call twice."""

    def __enter__(self: _C) -> _C:  # noqa: PYI019 - Python 3.8 has no typing.Self
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Backend(Closing, ABC):
    """A loaded model on one inference engine.

    Attributes (set by implementations):
      name          engine name ("onnxruntime", "tensorrt", ...)
      input_shape   (N, C, H, W); N is None when the model takes any batch size
      num_outputs   number of classes the model outputs, or None when unknown until run
      metadata      model metadata as str -> str (ONNX metadata_props); {} when none
    """

    name: str = "?"
    input_shape: tuple[int | None, int, int, int]
    num_outputs: int | None = None
    metadata: dict[str, str]

    @abstractmethod
    def infer(self, x: np.ndarray) -> np.ndarray:
        """x: float32 (N, C, H, W) -> float32 probabilities (N, num_classes)."""

    def close(self) -> None:
        """Release the engine's resources. Safe to call twice."""

    @property
    def fixed_batch(self) -> int | None:
        """The one batch size the model accepts, or None when any batch size works."""
        return self.input_shape[0]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} input {self.input_shape}>"
