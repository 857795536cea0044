"""PICO face detection: cascade files, the compiled multi-scale scanner, clustering, memory.

from edge_fer.detect import Cascade, Detector, default_cascade_path
det = Detector(Cascade.load(default_cascade_path()), min_size=0.1, threshold=5.0)
faces = det.detect(gray)  # list[Detection(row, col, size, score)], .x .y .w .h

Settings (options, each cascade's .json, their precedence) live in `edge_fer.detect.config`;
detectors built from them in `edge_fer.detect.factory`.
"""

from __future__ import annotations

from pathlib import Path

from edge_fer.detect.cascade import Cascade, CascadeError
from edge_fer.detect.cluster import cluster
from edge_fer.detect.config import (
    ASSETS,
    DEFAULT_CASCADE,
    FALLBACK_THRESHOLD,
    LOWRES_CASCADE,
    LOWRES_MAX_SIDE,
    CascadeSettings,
    default_cascade_path,
    lowres_cascade_path,
)
from edge_fer.detect.detector import Detection, Detector, warmup

__all__ = [
    "ASSETS",
    "DEFAULT_CASCADE",
    "FALLBACK_THRESHOLD",
    "LOWRES_CASCADE",
    "LOWRES_MAX_SIDE",
    "Cascade",
    "CascadeError",
    "CascadeSettings",
    "Detection",
    "Detector",
    "cascade_settings",
    "cluster",
    "default_cascade_path",
    "default_threshold",
    "lowres_cascade_path",
    "parse_angles",
    "warmup",
]


def cascade_settings(path: str | Path | None) -> dict:
    """The settings file next to a cascade (`X.pico` -> `X.json`) as written, every key checked
    ({} when there is none): `edge_fer.detect.config.CascadeSettings` has them typed."""
    return dict(CascadeSettings.for_cascade(path).raw)


def default_threshold(path: str | Path | None, pooled: bool = False) -> float:
    """The cascade's recommended threshold: for the score pooled over the runtime's frame
    memory (`memory_threshold`), or for one image (`threshold`); else FALLBACK_THRESHOLD."""
    from edge_fer.detect.config import MEMORY, DetectorOptions, resolve

    # the precedence is config.resolve's alone: no option given, so the cascade's settings
    opts = DetectorOptions(memory=MEMORY if pooled else 1)
    return resolve(opts, CascadeSettings.for_cascade(path)).threshold


def parse_angles(text: str) -> tuple[float, ...]:
    """'0', '0.03125' or '0,1/32,-1/32': turns (1/32 turn = 11.25 degrees; negative angles
    are clockwise). Raises ValueError with a message for anything else (an argparse type)."""
    out = []
    for part in str(text).split(","):
        num, slash, den = part.strip().partition("/")
        try:
            v = float(num) / (float(den) if slash else 1.0)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{part.strip()!r} is not a number of turns") from None
        if not -1.0 <= v <= 1.0:
            raise ValueError(f"{part.strip()} is not within -1..1 turn")
        out.append(v % 1.0)
    if not out or len(out) > 32:
        raise ValueError("give 1 to 32 angles")
    return tuple(out)
