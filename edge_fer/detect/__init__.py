"""PICO face detection: cascade files, the compiled multi-scale scanner, clustering, memory.

from edge_fer.detect import Cascade, Detector
det = Detector(Cascade.load("facefinder"), min_size=0.1, threshold=5.0)
faces = det.detect(gray)  # list[Detection(row, col, size, score)], .x .y .w .h
"""

from __future__ import annotations

from pathlib import Path

from edge_fer.detect.cascade import Cascade, CascadeError
from edge_fer.detect.cluster import cluster
from edge_fer.detect.detector import Detection, Detector, warmup

__all__ = [
    "Cascade",
    "CascadeError",
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


ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_CASCADE = "face_default.pico"
# for frames whose shorter side is below LOWRES_MAX_SIDE (160x120 cameras): slower per window,
# but such frames have few windows, and it finds small, washed-out webcam faces far more often
LOWRES_CASCADE = "face_lowres.pico"
LOWRES_MAX_SIDE = 240
# facefinder's customary threshold: the fallback for cascades without a settings file
FALLBACK_THRESHOLD = 5.0


def _asset(name: str) -> Path | None:
    p = ASSETS / name
    return p if p.is_file() else None


def default_cascade_path() -> Path | None:
    """The face cascade bundled with edge-fer (`edge_fer/assets/face_default.pico`)."""
    return _asset(DEFAULT_CASCADE)


def lowres_cascade_path() -> Path | None:
    """The bundled cascade for low-resolution frames (`edge_fer/assets/face_lowres.pico`)."""
    return _asset(LOWRES_CASCADE)


def cascade_settings(path: str | Path | None) -> dict:
    """Recommended settings shipped next to a cascade (`X.pico` -> `X.json`): scores are not
    comparable between cascades, so each carries its own thresholds. Keys: `threshold` (one
    image, the operating point of its model card) and `memory_threshold` (the score pooled
    over the runtime's frame memory). {} when there is no such file."""
    import json

    if path is None:
        return {}
    side = Path(path).with_suffix(".json")
    try:
        d = json.loads(side.read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def default_threshold(path: str | Path | None, pooled: bool = False) -> float:
    s = cascade_settings(path)
    v = s.get("memory_threshold" if pooled else "threshold", s.get("threshold"))
    return float(v) if isinstance(v, (int, float)) else FALLBACK_THRESHOLD


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
