"""PICO face detection: cascade files, the compiled multi-scale scanner, clustering, memory.

from edge_fer.detect import Cascade, Detector
det = Detector(Cascade.load("facefinder"), min_size=0.1, threshold=5.0)
faces = det.detect(gray)  # list[Detection(row, col, size, score)], .x .y .w .h
"""

from __future__ import annotations

import math
from pathlib import Path

from edge_fer.detect.cascade import Cascade, CascadeError
from edge_fer.detect.cluster import GROUPINGS, cluster
from edge_fer.detect.detector import Detection, Detector, warmup
from edge_fer.errors import UserError

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


# the settings a cascade's .json file may carry: key -> (check, what it must be). A cascade file
# is input, so each value is checked once, when the file is read; a bad one is a one-line error
# naming the file and the key (JSON null means "not set"; unknown keys are ignored).
def _num(lo: float = -math.inf, hi: float = math.inf, hi_open: bool = False):
    def ok(v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if isinstance(v, float) and not math.isfinite(v):  # (an int may be too big for one)
            return False
        return lo <= v < hi if hi_open else lo <= v <= hi

    return ok


def _whole(lo: int, hi: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


_SETTINGS = {
    "threshold": (_num(), "a finite number"),
    "memory_threshold": (_num(), "a finite number"),
    "track_min_score": (_num(), "a finite number"),
    "min_face": (_num(1, 100000), "a number of pixels in 1..100000"),
    "scale_factor": (_num(1.001, 10), "a number in 1.001..10"),
    "cluster_iou": (_num(0, 1, hi_open=True), "a number in 0..1 (below 1)"),
    "grouping": (lambda v: isinstance(v, str) and v in GROUPINGS, '"chain" or "greedy"'),
    "upscale_to": (_whole(0, 4096), "a whole number of pixels in 0..4096"),
    "upscale_interpolation": (
        lambda v: v in ("nearest", "linear", "cubic"),
        '"nearest", "linear" or "cubic"',
    ),
    "verifier": (lambda v: isinstance(v, str), "a file name"),  # and inside the folder, below
    "verifier_min_prob": (_num(0, 1), "a number in 0..1"),
    "about": (lambda v: isinstance(v, str), "a string"),
}
MAX_SETTINGS_BYTES = 1 << 20
_settings_cache: dict = {}


def cascade_settings(path: str | Path | None) -> dict:
    """Recommended settings shipped next to a cascade (`X.pico` -> `X.json`): scores are not
    comparable between cascades, so each carries its own thresholds. Keys: `threshold` (one
    image, the operating point of its model card) and `memory_threshold` (the score pooled
    over the runtime's frame memory), and the others of `_SETTINGS`. {} when there is no such
    file; a file that is not a JSON object, or a value of the wrong type or range, is a
    UserError naming the file and the key. The `verifier` it names must stay inside the
    cascade's folder (`edge_fer.detect.verifier.resolve_verifier_path`)."""
    if path is None:
        return {}
    try:
        side = Path(path).with_suffix(".json")
        st = side.stat()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, ValueError) as exc:  # a name with a NUL byte, a path too long
        raise UserError(f"{path}: cannot read its cascade settings ({_reason(exc)})") from None
    key = (str(side), st.st_mtime_ns, st.st_size)
    if key not in _settings_cache:
        _settings_cache.clear()  # one or two cascades per process: keep only the latest
        _settings_cache[key] = _read_settings(side, path)
    return dict(_settings_cache[key])


def _reason(exc: BaseException) -> str:
    from edge_fer.fileio import first_line, os_error_reason

    return os_error_reason(exc) if isinstance(exc, OSError) else first_line(exc)


def _read_settings(side: Path, cascade_path: str | Path) -> dict:
    import json

    try:
        with open(side, "rb") as fh:
            raw = fh.read(MAX_SETTINGS_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{side}: cannot read cascade settings ({_reason(exc)})") from None
    if len(raw) > MAX_SETTINGS_BYTES:
        raise UserError(f"{side}: cascade settings larger than {MAX_SETTINGS_BYTES} bytes")
    try:
        d = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise UserError(f"{side}: cascade settings are not JSON ({_reason(exc)})") from None
    if not isinstance(d, dict):
        raise UserError(f"{side}: cascade settings must be a JSON object")
    for k, v in d.items():
        rule = _SETTINGS.get(k)
        if rule is None or v is None:
            continue
        ok, want = rule
        if not ok(v):
            shown = json.dumps(v)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise UserError(f"{side}: cascade setting {k!r} must be {want}, got {shown}")
    if d.get("verifier") is not None:
        from edge_fer.detect.verifier import resolve_verifier_path

        resolve_verifier_path(d["verifier"], cascade_path)
    return {k: v for k, v in d.items() if v is not None}


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
