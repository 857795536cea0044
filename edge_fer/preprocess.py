"""Face-crop preprocessing shared by training and inference.

A `PreprocessSpec` travels with every model (ONNX `metadata_props`), so the runtime prepares
crops exactly as the training did: grayscale, optional CLAHE, resize, scale, normalise.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from edge_fer.errors import UserError


@dataclass
class PreprocessSpec:
    input_size: int = 48
    channels: int = 1  # 1 = grayscale; 3 = grayscale replicated to 3 channels
    clahe: bool = False
    mean: float = 0.5  # on the 0..1 pixel scale
    std: float = 0.25
    crop_margin: float = 0.1  # extra border around a detected face box, fraction of its size
    classes: tuple[str, ...] = field(default_factory=tuple)

    def to_metadata(self) -> dict[str, str]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return {"edge_fer.preprocess": json.dumps(d), "class_names": ",".join(self.classes)}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> PreprocessSpec:
        raw = meta.get("edge_fer.preprocess")
        if raw is None:
            raise UserError("model has no edge_fer preprocessing metadata")
        try:
            d = json.loads(raw)
            d["classes"] = tuple(d.get("classes", ()))
            known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
            return cls(**known)
        except (ValueError, TypeError) as exc:
            raise UserError(f"model preprocessing metadata is malformed: {exc}") from None

    def prepare(self, faces: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """uint8 face crops (grayscale HxW or BGR HxWx3) -> float32 NCHW model input."""
        n = len(faces)
        out = np.empty((n, self.channels, self.input_size, self.input_size), np.float32)
        clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)) if self.clahe else None
        for i, f in enumerate(faces):
            g = to_gray(f)
            if g.shape != (self.input_size, self.input_size):
                interp = cv2.INTER_AREA if g.shape[0] > self.input_size else cv2.INTER_LINEAR
                g = cv2.resize(g, (self.input_size, self.input_size), interpolation=interp)
            if clahe is not None:
                g = clahe.apply(g)
            out[i, :] = g
        out *= 1.0 / (255.0 * self.std)
        out -= self.mean / self.std
        return out


def to_gray(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        g = img
    elif img.ndim == 3 and img.shape[2] == 1:
        g = img[:, :, 0]
    elif img.ndim == 3 and img.shape[2] == 3:
        g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    elif img.ndim == 3 and img.shape[2] == 4:
        g = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    else:
        raise UserError(f"expected a grayscale or BGR image, got an array of shape {img.shape}")
    if g.size == 0:
        raise UserError("empty image")
    if g.dtype != np.uint8:
        if np.issubdtype(g.dtype, np.floating) and g.max(initial=0) <= 1.0:
            g = g * 255.0
        g = np.clip(g, 0, 255).astype(np.uint8)
    return g


def apply_clahe(images: np.ndarray) -> np.ndarray:
    """CLAHE over a (N, H, W) uint8 stack, with the same settings as `PreprocessSpec.prepare`."""
    c = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))
    return np.stack([c.apply(im) for im in images]) if len(images) else images
