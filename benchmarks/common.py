"""What the benchmark scripts share: saving results as JSON, failing in one line and the
feathered face disc of their synthetic clips. Scripts run as `python benchmarks/<name>.py`, so
this folder is on sys.path and `from common import ...` finds this file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def save_json(path: str | Path, obj) -> None:
    """`obj` as indented JSON plus a newline (written atomically), then `saved <path>` (relative
    to the checkout when it lies inside it)."""
    from edge_fer.fileio import write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(obj, indent=2) + "\n")
    shown = path.relative_to(ROOT) if path.is_absolute() and path.is_relative_to(ROOT) else path
    print(f"saved {shown}")


def fail(msg: str) -> int:
    """Say why the benchmark cannot run (one line on stderr); its exit code, 2."""
    print(msg, file=sys.stderr)
    return 2


def feathered_disc(size: int) -> np.ndarray:
    """A (size, size) float32 alpha mask: 1 in the middle, fading to 0 over the outer 35%."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2) / (size / 2)
    return np.clip((1.0 - r) / 0.35, 0, 1).astype(np.float32)
