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
    "cluster",
    "default_cascade_path",
    "warmup",
]


def default_cascade_path() -> Path | None:
    """The face cascade bundled with edge-fer, or None while none ships (a later issue)."""
    return None
