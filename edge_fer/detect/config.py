"""Detector settings in one home: the options a user gives, each cascade's own settings (its
`.json` file), and `resolve()`, which turns both and a frame's size into the values a detector
is built from (`edge_fer.detect.factory` builds it).

Precedence, highest first: the option (a CLI flag), then the cascade's setting, then the
constant here. `resolve` is the only place that decides it:

| value                 | option (flag)           | cascade setting           | else         |
|-----------------------|-------------------------|---------------------------|--------------|
| cascade               | --cascade               | -                         | bundled (****) |
| min_size              | --min-size              | -                         | 24 px (*****) |
| min_pixels            | (1 with --min-size)     | min_face                  | 1            |
| max_size              | --max-size              | -                         | 1.0          |
| scale_factor          | --scale-factor          | 1.05 if upscaled (*), else memory_scale_factor (memory > 1), scale_factor | 1.1 |
| stride_factor         | --stride-factor         | -                         | 0.1          |
| angle                 | --angle                 | -                         | 0 (upright)  |
| grouping              | --grouping              | grouping                  | chain        |
| cluster_iou           | --cluster-iou           | cluster_iou               | 0.3          |
| threshold             | --threshold             | memory_threshold (memory > 1), threshold | 5.0 |
| memory                | --memory                | -                         | 5; 1 for stills (detect: 1) |
| upscale_to            | --upscale-to            | upscale_to                | 240 (**)     |
| upscale_interpolation | --upscale-interpolation | upscale_interpolation     | linear       |
| verifier              | --verifier (none: off)  | verifier (in its folder)  | none         |
| verifier_min_prob     | --verifier-min-prob     | verifier_min_prob         | 0.5          |
| track_min_score       | --min-track-score       | track_min_score (***)     | no gate      |
| fine_budget           | (library option)        | -                         | 200000 (******) |
| fine_span             | (library option)        | -                         | 4.0          |

(*) LOWRES_SCALE_FACTOR, on frames upscaled for detection. (**) 0 (never) for callers that do
not upscale (`edge-fer detect`, calibration). (***) only when no verifier runs: the verifier
already turns away the steady background boxes the gate is for. (****) face_lowres.pico for
frames whose shorter side is under LOWRES_MAX_SIDE (240 px), else face_default.pico.
(*****) 0.1 of the shorter side on frames whose shorter side is under 240 px (where that is
smaller than 24 px: 160x120 cameras keep the window they had), and never below the cascade's
min_face. (******) video is frames pooled over time (memory > 1, not stills): the scales under
fine_span x the smallest window ("fine") are scanned in a rotation of frames, about
fine_budget windows a frame, while the coarse scales, the first frame after a reset and the
regions around live faces are scanned every frame (`edge_fer.detect.schedule`); frames of
640x480 or fewer pixels scan every scale anyway (schedule.MIN_PIXELS: ~6 ms on one core).
Photos, `edge-fer detect` (memory 1) and stills scan every scale of every frame (budget 0).
The budget is 0 unless the frames are video.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from edge_fer.errors import UserError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_CASCADE = "face_default.pico"
# for frames whose shorter side is below LOWRES_MAX_SIDE (160x120 cameras): slower per window,
# but such frames have few windows, and it finds small, washed-out webcam faces far more often
LOWRES_CASCADE = "face_lowres.pico"
LOWRES_MAX_SIDE = 240
NO_CASCADE = (
    "the bundled face cascade is missing from this installation; pass --cascade FILE "
    "(a pico cascade)"
)

# the constants, last in the precedence
# the smallest face, in pixels: retail and security cameras see faces of 24-80 px. Frames whose
# shorter side is under MIN_SIZE / MIN_SIZE_FRACTION (240 px) keep 0.1 of it, which is smaller
MIN_SIZE = 24
MIN_SIZE_FRACTION = 0.1
# video: the scales under FINE_SPAN x the smallest window are scanned in a rotation, about
# FINE_BUDGET of their windows a frame (~5-8 ms on one core); they are most of the work: at
# 1080p the scales from 24 to 96 px are 95% of the 1.9 million windows, a rotation of 10
# frames (see edge_fer.detect.schedule)
FINE_BUDGET = 200_000
FINE_SPAN = 4.0
SCALE_FACTOR = 1.1
# upscaled low-resolution frames (160x120 cameras) are blurry and cheap to scan: a finer scale
# step finds their faces on many more frames (01-2.avi: 55% -> 96% of frames)
LOWRES_SCALE_FACTOR = 1.05
GROUPING = "chain"
CLUSTER_IOU = 0.3
# facefinder's customary threshold: the fallback for cascades without a settings file
FALLBACK_THRESHOLD = 5.0
# frames pooled on video; stills (unrelated photos) have one frame each: memory 1, so the
# cascade's single-image `threshold` applies to them, as in `edge-fer detect`
MEMORY = 5
UPSCALE_TO = 240
UPSCALE_INTERPOLATION = "linear"
INTERPOLATIONS = ("nearest", "linear", "cubic")
VERIFIER_MIN_PROB = 0.5


@dataclass
class DetectorOptions:
    min_size: float | None = None  # pixels, or a fraction of the frame's shorter side when <= 1;
    # None: 24 px (0.1 of the shorter side when that is smaller), and never below the cascade's
    # `min_face` setting (the smallest face it learned; below that it fires at random: 81% of
    # the false boxes on 01-2.avi were smaller)
    max_size: float = 1.0
    scale_factor: float | None = None  # None: the cascade's setting, else 1.1 (1.05 on frames
    # upscaled for detection)
    stride_factor: float = 0.1
    # turns in 0..1 (1/32 = 11.25 deg; clockwise 1/32 is 31/32, as --angle=-1/32 reads it), or
    # several: windows from every angle are clustered together
    angle: float | tuple[float, ...] = 0.0
    # how windows become detections: "chain" (pico's) or "greedy"; and the overlap that groups
    # them; None: the cascade's `grouping` / `cluster_iou` settings, else chain and 0.3
    grouping: str | None = None
    cluster_iou: float | None = None
    threshold: float | None = None  # on the score pooled over `memory` frames; None: the
    # cascade's recommendation (memory_threshold, or threshold for one frame)
    memory: int | None = None  # None: MEMORY (5) frames, 1 for stills (photos)
    # frames whose shorter side is smaller are upscaled for detection; None: the cascade's
    # `upscale_to` setting, else 240
    upscale_to: int | None = None
    # auto: the cascade's recommendation (its .json settings), else linear (cascades differ:
    # on 01-2.avi facefinder found more on a smooth enlargement, face_default.pico on blocky pixels)
    upscale_interpolation: str = "auto"
    # a face verifier (ONNX) behind the cascade: None: the cascade's `verifier` setting;
    # "none": off; else a path. verifier_min_prob None: the cascade's `verifier_min_prob`, or 0.5
    verifier: str | None = None
    verifier_min_prob: float | None = None
    # video (memory > 1, not stills): the fine scales (under fine_span x the smallest window)
    # are scanned in a rotation, about fine_budget windows a frame; None: FINE_BUDGET on
    # video, 0 (every scale every frame) otherwise. fine_span None: FINE_SPAN
    fine_budget: int | None = None
    fine_span: float | None = None

    def __post_init__(self) -> None:
        """Each option's type (its range is checked where it is resolved): a string for a
        number was a bare TypeError in resolve(), or taken as the number ('5'), and 100.5 for
        an integer was truncated."""
        from numbers import Integral, Real

        for name in _REAL_OPTIONS:
            v = getattr(self, name)
            if v is None and name not in ("max_size", "stride_factor"):
                continue
            if isinstance(v, bool) or not isinstance(v, Real):  # (NaN: the range checks)
                raise UserError(f"must be a number, got {v!r}", param=name)
        for name in ("memory", "upscale_to", "fine_budget"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, Integral)):
                raise UserError(f"must be an integer, got {v!r}", param=name)
        for name in ("grouping", "upscale_interpolation", "verifier"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (str, PathLike)):
                raise UserError(f"must be a string, got {v!r}", param=name)


_REAL_OPTIONS = (
    "min_size",
    "max_size",
    "scale_factor",
    "stride_factor",
    "cluster_iou",
    "threshold",
    "verifier_min_prob",
    "fine_span",
)


# ---- which cascade --------------------------------------------------------------------------
def _asset(name: str) -> Path | None:
    p = ASSETS / name
    return p if p.is_file() else None


def default_cascade_path() -> Path | None:
    """The face cascade bundled with edge-fer (`edge_fer/assets/face_default.pico`)."""
    return _asset(DEFAULT_CASCADE)


def lowres_cascade_path() -> Path | None:
    """The bundled cascade for low-resolution frames (`edge_fer/assets/face_lowres.pico`)."""
    return _asset(LOWRES_CASCADE)


def resolve_cascade(path: str | Path | None) -> Path:
    """The cascade given (it must exist), else the bundled default."""
    if path is not None and not isinstance(path, (str, PathLike)):  # 3: a TypeError in Path()
        raise UserError(f"must be a file name or None, got {path!r}", param="cascade")
    if path is None:
        p = default_cascade_path()
        if p is None:
            raise UserError(NO_CASCADE)
        return p
    p = Path(path)
    if not p.is_file():
        why = "is a folder" if p.is_dir() else "no such file"  # (a folder was "no such file")
        raise UserError(f"cascade {p}: {why}")
    return p


def cascade_for_frame(cascade: str | Path | None, short_side: int) -> Path:
    """The cascade to scan frames with: the one given; else face_lowres.pico for frames whose
    shorter side is under LOWRES_MAX_SIDE (160x120 cameras), when installed; else the default."""
    low = lowres_cascade_path()
    if cascade is None and 0 < short_side < LOWRES_MAX_SIDE and low is not None:
        return low
    return resolve_cascade(cascade)


# ---- a cascade's settings -------------------------------------------------------------------
# key -> (check, what it must be). A cascade's settings file is input, so each value is checked
# once, when the file is read; a bad one is a one-line error naming the file and the key (JSON
# null means "not set"; unknown keys are ignored).
def _num(lo: float = -math.inf, hi: float = math.inf, hi_open: bool = False):
    def ok(v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if isinstance(v, int) and abs(v) > sys.float_info.max:  # no float holds it
            return False
        return lo <= v < hi if hi_open else lo <= v <= hi

    return ok


def _whole(lo: int, hi: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _grouping(v) -> bool:
    from edge_fer.detect.cluster import GROUPINGS

    return isinstance(v, str) and v in GROUPINGS


_SETTINGS = {
    "threshold": (_num(), "a finite number"),
    "memory_threshold": (_num(), "a finite number"),
    "track_min_score": (_num(), "a finite number"),
    "min_face": (_num(1, 100000), "a number of pixels in 1..100000"),
    "scale_factor": (_num(1.001, 10), "a number in 1.001..10"),
    "memory_scale_factor": (_num(1.001, 10), "a number in 1.001..10"),
    "cluster_iou": (_num(0, 1, hi_open=True), "a number in 0..1 (below 1)"),
    "grouping": (_grouping, '"chain" or "greedy"'),
    "upscale_to": (_whole(0, 4096), "a whole number of pixels in 0..4096"),
    "upscale_interpolation": (lambda v: v in INTERPOLATIONS, '"nearest", "linear" or "cubic"'),
    "verifier": (lambda v: isinstance(v, str), "a file name"),  # and inside the folder, below
    "verifier_min_prob": (_num(0, 1), "a number in 0..1"),
    "about": (lambda v: isinstance(v, str), "a string"),
}
MAX_SETTINGS_BYTES = 1 << 20
_cache: dict = {}


@dataclass(frozen=True)
class CascadeSettings:
    """The recommended settings shipped next to a cascade (`X.pico` -> `X.json`), every key
    checked once: scores are not comparable between cascades, so each carries its own
    thresholds. `threshold` is for one image (the operating point of its model card),
    `memory_threshold` for the score pooled over the runtime's frame memory; `scale_factor` and
    `memory_scale_factor` likewise (video frames are many chances at a face, so a coarser step
    costs more on one photo than on video, or the other way round). `verifier` is
    resolved to a file inside the cascade's folder. None: not set."""

    cascade: Path | None = None  # the cascade these settings belong to
    threshold: float | None = None
    memory_threshold: float | None = None
    track_min_score: float | None = None
    min_face: float | None = None
    scale_factor: float | None = None
    memory_scale_factor: float | None = None
    cluster_iou: float | None = None
    grouping: str | None = None
    upscale_to: int | None = None
    upscale_interpolation: str | None = None
    verifier: Path | None = None
    verifier_min_prob: float | None = None
    about: str | None = None
    # the file's keys as written (unknown ones included), for `edge_fer.detect.cascade_settings`
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @classmethod
    def for_cascade(cls, cascade_path: str | Path | None) -> CascadeSettings:
        """The settings of `cascade_path` (none when it has no `.json` file); read once per
        version of the file. UserError (naming the file and the key) for a bad file."""
        if cascade_path is None:
            return cls()
        try:
            side = Path(cascade_path).with_suffix(".json")
            st = side.stat()
        except (FileNotFoundError, NotADirectoryError):
            return cls(cascade=Path(cascade_path))
        except (OSError, ValueError) as exc:  # a name with a NUL byte, a path too long
            raise UserError(
                f"{cascade_path}: cannot read its cascade settings ({_reason(exc)})"
            ) from None
        key = (str(side), str(cascade_path), st.st_mtime_ns, st.st_size)
        if key not in _cache:
            if len(_cache) >= 8:  # a few cascades per process; older versions of a file go too
                _cache.clear()
            _cache[key] = cls.from_json(side, cascade_path)
        return _cache[key]

    @classmethod
    def from_json(cls, path: str | Path, cascade_path: str | Path | None = None) -> CascadeSettings:
        """Read and check a settings file; `verifier` must stay inside the folder of
        `cascade_path` (default: the file's own folder)."""
        import json

        side = Path(path)
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
        d = {k: v for k, v in d.items() if v is not None}
        owner = Path(cascade_path) if cascade_path is not None else side
        verifier = None
        if "verifier" in d:
            from edge_fer.detect.verifier import resolve_verifier_path

            verifier = resolve_verifier_path(d["verifier"], owner)
        known = {k: d[k] for k in _SETTINGS if k in d and k != "verifier"}
        for k, v in known.items():  # JSON's 3 for 3.0: the field's type
            if k not in ("grouping", "upscale_interpolation", "about"):
                known[k] = int(v) if k == "upscale_to" else float(v)
        cascade = Path(cascade_path) if cascade_path is not None else None
        return cls(cascade=cascade, verifier=verifier, raw=d, **known)


def _reason(exc: BaseException) -> str:
    from edge_fer.fileio import first_line, os_error_reason

    return os_error_reason(exc) if isinstance(exc, OSError) else first_line(exc)


# ---- resolve --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedDetector:
    """Every value a detector, its verifier, the upscaler and the tracker's score gate use."""

    cascade: Path | None
    min_size: float
    min_pixels: float
    max_size: float
    scale_factor: float
    stride_factor: float
    angle: float | tuple[float, ...]
    grouping: str
    cluster_iou: float
    threshold: float
    memory: int
    upscale_to: int  # frames whose shorter side is smaller are upscaled to it (0: never)
    upscale_interpolation: str
    verifier: Path | None  # None: no verifier
    verifier_min_prob: float | None  # None when no verifier runs
    track_min_score: float | None  # None: no gate
    fine_budget: int = 0  # 0: every scale every frame
    fine_span: float = FINE_SPAN

    def detector_args(self) -> dict:
        """`edge_fer.detect.Detector`'s keywords."""
        return {
            "min_size": self.min_size,
            "min_pixels": self.min_pixels,
            "max_size": self.max_size,
            "scale_factor": self.scale_factor,
            "stride_factor": self.stride_factor,
            "angle": self.angle,
            "threshold": self.threshold,
            "memory": self.memory,
            "grouping": self.grouping,
            "iou": self.cluster_iou,
            "fine_budget": self.fine_budget,
            "fine_span": self.fine_span,
        }

    def summary(self) -> dict:
        """The values used, for summary.json (file names, not paths)."""
        d = asdict(self)
        del d["track_min_score"]  # the tracker's section reports it
        d["cascade"] = self.cascade.name if self.cascade else None
        d["verifier"] = self.verifier.name if self.verifier else None
        return d


def shorter_side(shape, param: str = "shape") -> int:
    """The shorter side of frames of `shape` (rows, cols, ...; a side of 0 or None: unknown,
    0). UserError naming `param` for a side that is not a whole number >= 0 ((-1, 5) and
    (2.5, 5) were taken as they came) or fewer than two sides ((480,) was taken as unknown)."""
    from numbers import Integral, Real

    def whole(v) -> bool:
        if v is None:
            return True
        if isinstance(v, bool) or not isinstance(v, Real):
            return False
        if isinstance(v, Integral):  # (an int too large for a float)
            return int(v) >= 0
        return float(v) >= 0 and float(v).is_integer()  # (NaN, inf: not)

    sides: tuple = ()
    try:
        sides = tuple(shape)[:2]
        ok = len(sides) == 2 and all(whole(v) for v in sides)
    except TypeError:  # (480: "object of type 'int' has no len()")
        ok = False
    if not ok:
        shown = repr(shape)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise UserError(
            f"must be (rows, cols, ...) of a frame, whole numbers >= 0 (0: unknown), got {shown}",
            param=param,
        )
    return min(int(v or 0) for v in sides)


def _in_pixels(v) -> bool:
    # the sizes' rule: a whole number is pixels, a value <= 1 otherwise a fraction of the side
    return (isinstance(v, int) and not isinstance(v, bool)) or v > 1


def _check_sizes(min_size, max_size) -> None:
    """Sizes that can find nothing, said instead of an empty result: `max_size` 1 (one
    pixel, where 1.0 is the whole side) or below `min_size` in the same unit."""
    if _in_pixels(max_size) and max_size < 8:
        # "1" reads like the default 1.0 (the whole side): say how to write that
        hint = "; for the whole side write 1.0 or 100%" if max_size == 1 else ""
        raise UserError(
            f"{max_size} is {max_size} px, smaller than any face{hint}", param="max_size"
        )
    same_unit = min_size is not None and _in_pixels(min_size) == _in_pixels(max_size)
    if same_unit and max_size < min_size:
        raise UserError(
            f"{max_size} is below the smallest size asked for ({min_size}): no face fits",
            param="max_size",
        )


def resolve(
    options: DetectorOptions,
    settings: CascadeSettings,
    frame_shape=(0, 0),
    *,
    track_min_score: float | None = None,
    upscaling: bool = False,
    stills: bool = False,
) -> ResolvedDetector:
    """The values to scan frames of `frame_shape` (rows, cols; 0: unknown) with, per the
    precedence of this module's table. `track_min_score`: the tracker's option. `upscaling`:
    the caller detects on an upscaled copy of frames under `upscale_to` (edge-fer run);
    without it nothing is upscaled (upscale_to 0) and frames keep the cascade's scale step.
    `stills`: the frames are unrelated photos, each scanned on its own: memory 1 and the
    cascade's single-image threshold unless the options set them.
    UserError for a verifier_min_prob outside [0, 1] when a verifier runs."""
    # None for either was an AttributeError further in
    if not isinstance(options, DetectorOptions):
        raise UserError(f"must be a DetectorOptions, got {options!r}", param="options")
    if not isinstance(settings, CascadeSettings):
        raise UserError(
            f"must be a CascadeSettings (CascadeSettings.for_cascade(path)), got {settings!r}",
            param="settings",
        )
    o, s = options, settings
    short = shorter_side(frame_shape, "frame_shape")
    # checked whether or not this caller upscales (-5 passed without a word where it did not)
    if o.upscale_to is not None and not 0 <= o.upscale_to <= 4096:  # as the settings allow
        raise UserError(f"must be in 0..4096 px (0: never), got {o.upscale_to}", param="upscale_to")
    if not upscaling:
        up = 0
    elif o.upscale_to is not None:
        up = int(o.upscale_to)
    else:
        up = UPSCALE_TO if s.upscale_to is None else s.upscale_to
    memory = o.memory if o.memory is not None else (1 if stills else MEMORY)
    pooled = memory > 1
    if o.scale_factor is not None:  # (0 passed as unset, and took another step than unset)
        if not 1.001 <= float(o.scale_factor) <= 10:
            raise UserError(f"must be in [1.001, 10], got {o.scale_factor}", param="scale_factor")
        scale = float(o.scale_factor)
    elif o.scale_factor is None and 0 < short < up:
        scale = LOWRES_SCALE_FACTOR
    elif pooled and s.memory_scale_factor:
        scale = s.memory_scale_factor
    else:
        scale = s.scale_factor or SCALE_FACTOR
    if o.threshold is not None:
        threshold = float(o.threshold)
    else:
        v = s.memory_threshold if pooled and s.memory_threshold is not None else s.threshold
        threshold = FALLBACK_THRESHOLD if v is None else v
    verifier: Path | None = None
    min_prob: float | None = None
    if o.verifier is None:
        verifier = s.verifier if s.cascade is not None else None
    elif str(o.verifier).lower() != "none":
        verifier = Path(o.verifier)
    if verifier is not None:
        if o.verifier_min_prob is None:
            min_prob = VERIFIER_MIN_PROB if s.verifier_min_prob is None else s.verifier_min_prob
        elif not 0.0 <= o.verifier_min_prob <= 1.0:
            raise UserError(
                f"must be in [0, 1], got {o.verifier_min_prob}", param="verifier_min_prob"
            )
        else:
            min_prob = o.verifier_min_prob
    # the cascade's gate is for its own detections: behind a verifier there is none unless asked
    # for, as the verifier already turned away the steady background boxes the gate was for
    if track_min_score is not None:
        gate: float | None = float(track_min_score)
    else:
        gate = None if verifier is not None else s.track_min_score
    angle = o.angle
    if isinstance(angle, (list, tuple)):
        angle = tuple(angle)
    _check_sizes(o.min_size, o.max_size)
    if o.cluster_iou is not None and not 0.0 <= o.cluster_iou < 1.0:  # NaN too
        raise UserError(f"must be in [0, 1), got {o.cluster_iou}", param="cluster_iou")
    if o.upscale_interpolation not in ("auto", *INTERPOLATIONS):  # else it failed on a frame
        raise UserError(
            f"must be auto, {', '.join(INTERPOLATIONS)}; got {o.upscale_interpolation!r}",
            param="upscale_interpolation",
        )
    if o.min_size is not None:
        min_size: float = o.min_size
    elif 0 < short < MIN_SIZE / MIN_SIZE_FRACTION:
        min_size = MIN_SIZE_FRACTION
    else:
        min_size = MIN_SIZE
    # the schedule is for video (frames pooled over time); photos scan every scale every time
    if o.fine_budget is not None:
        fine_budget = int(o.fine_budget)
    else:
        fine_budget = FINE_BUDGET if memory > 1 and not stills else 0
    if fine_budget < 0:
        raise UserError(f"must be >= 0 windows, got {fine_budget}", param="fine_budget")
    fine_span = FINE_SPAN if o.fine_span is None else float(o.fine_span)
    if not (math.isfinite(fine_span) and fine_span >= 1.0):
        raise UserError(f"must be >= 1, got {fine_span}", param="fine_span")
    return ResolvedDetector(
        cascade=s.cascade,
        min_size=min_size,
        min_pixels=float(s.min_face or 1.0) if o.min_size is None else 1.0,
        max_size=o.max_size,
        scale_factor=scale,
        stride_factor=o.stride_factor,
        angle=angle,
        grouping=o.grouping or s.grouping or GROUPING,
        cluster_iou=o.cluster_iou
        if o.cluster_iou is not None
        else (CLUSTER_IOU if s.cluster_iou is None else s.cluster_iou),
        threshold=threshold,
        memory=memory,
        upscale_to=up,
        upscale_interpolation=o.upscale_interpolation
        if o.upscale_interpolation != "auto"
        else (s.upscale_interpolation or UPSCALE_INTERPOLATION),
        verifier=verifier,
        verifier_min_prob=min_prob,
        track_min_score=gate,
        fine_budget=fine_budget,
        fine_span=fine_span,
    )
