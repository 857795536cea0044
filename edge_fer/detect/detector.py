"""The `Detector`: multi-scale pico scanning of grayscale frames, clustering, memory."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numba
import numpy as np

from edge_fer.detect import scan
from edge_fer.detect.cascade import Cascade
from edge_fer.detect.cluster import GROUPINGS
from edge_fer.detect.config import _check_sizes
from edge_fer.detect.grid import ScanGrid, build_grid, crop, fewest_windows
from edge_fer.detect.lanes import run_lanes
from edge_fer.detect.memory import DetectionMemory
from edge_fer.detect.schedule import HOT_SHARE, ScheduleState, inside, regions
from edge_fer.errors import UserError
from edge_fer.limits import MAX_FRAME_PIXELS as MAX_PIXELS
from edge_fer.limits import MAX_FRAME_SIDE as MAX_SIDE
from edge_fer.limits import check_threads

WINDOW_BUFFER = 1 << 22  # windows per kernel call: bounds the output buffers to ~32 MB
OFFSET_CACHE_BYTES = 64 << 20
MAX_WINDOWS = 1 << 30  # ~a minute of scanning on one core
# below this many windows a frame takes ~1-2 ms on one core: handing lanes to other threads
# costs more than it saves
PARALLEL_MIN_WINDOWS = 30_000


class Detection(NamedTuple):
    """A face: window centre (row, col), side length `size`, and confidence `score`."""

    row: float
    col: float
    size: float
    score: float

    @property
    def x(self) -> float:
        return self.col - self.size / 2

    @property
    def y(self) -> float:
        return self.row - self.size / 2

    @property
    def w(self) -> float:
        return self.size

    @property
    def h(self) -> float:
        return self.size


def _is_number(v) -> bool:
    # a finite real: no bool, no numeric string (its comparisons raised a bare TypeError), no
    # int too big for a float
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    if isinstance(v, (int, np.integer)):
        return abs(int(v)) <= sys.float_info.max
    return math.isfinite(v)


def _check_number(
    name: str,
    v,
    lo: float = -math.inf,
    hi: float = math.inf,
    rule: str = "a finite number",
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """UserError naming `name` unless `v` is a finite number in the range (an open end
    excluded), as edge_fer.detect.config's rules for the same settings."""
    ok = _is_number(v) and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
    if not ok:
        raise UserError(f"must be {rule}, got {v!r}", param=name)


def _check_size(name: str, v: float) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise UserError(f"must be a number, got {v!r}", param=name)
    if not _is_number(v) or v <= 0:
        raise UserError(f"must be > 0 (pixels, or a fraction in (0, 1]), got {v}", param=name)


def _sizes_fit(min_size, max_size) -> None:
    # sizes that can find nothing (max_size 1 px, or below min_size) are refused here as
    # DetectorOptions are, instead of an empty result on every frame
    _check_sizes(*(int(v) if isinstance(v, np.integer) else v for v in (min_size, max_size)))


def _angles(angle: float | Sequence[float]) -> tuple[float, ...]:
    angles: tuple = tuple(angle) if isinstance(angle, (list, tuple, np.ndarray)) else (angle,)
    if not angles or len(angles) > 32:
        raise UserError(f"must be 1 to 32 angles, got {len(angles)}", param="angle")
    for a in angles:
        if isinstance(a, bool) or not isinstance(a, (int, float, np.integer, np.floating)):
            raise UserError(f"must be a number of turns, got {a!r}", param="angle")
        if not (0.0 <= a <= 1.0):
            # --angle=-1/32 works (parse_angles reads -1..1 modulo 1): say how it is written here
            hint = ""
            if -1.0 <= a < 0.0:
                hint = (
                    f"; write a clockwise angle as 1 minus its size: {float(a) % 1.0:g} for "
                    f"{a:g} (as --angle={a:g} reads it)"
                )
            raise UserError(f"is in turns and must be in [0, 1], got {a}{hint}", param="angle")
    return tuple(float(a) for a in angles)


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def resolve_size(v: float, nrows: int, ncols: int) -> float:
    """Pixels for a size option: floats in (0, 1] are fractions of the frame's shorter side."""
    if isinstance(v, (float, np.floating)) and v <= 1.0:
        return float(v) * min(nrows, ncols)
    return float(v)


@dataclass
class _Batch:
    it_lo: int
    it_hi: int
    sc_lo: int
    sc_hi: int  # exclusive
    nbuf: int
    offs: np.ndarray | None  # None: computed at call time (cascade too big to cache per shape)
    omap: np.ndarray  # int64 per grid scale: its row in offs


@dataclass
class _Plan:
    """Everything that depends only on the frame shape: built once, reused for every frame."""

    grid: ScanGrid
    item_scale: np.ndarray
    item_row: np.ndarray
    item_rowpos: np.ndarray
    item_buf: np.ndarray
    cols_i: np.ndarray
    batches: list[_Batch]
    table: np.ndarray | None = None  # offsets of every scale (full plans that fit the cache)


_warm_lock = threading.Lock()
_warm_seconds: float | None = None


def warmup() -> float:
    """Compile (or load from numba's cache) every kernel once per process; returns seconds."""
    global _warm_seconds
    with _warm_lock:
        if _warm_seconds is not None:
            return 0.0
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        casc = Cascade(
            tdepth=2,
            codes=rng.integers(-128, 128, (2, 3, 4)),
            leaves=np.ones((2, 4)),
            thresholds=np.array([-1.0, -1.0]),
        )
        frame = rng.integers(0, 256, (24, 24), dtype=np.uint8)
        for angle in (0.0, 0.25):
            d = Detector(casc, min_size=8, max_size=16, angle=angle, threshold=0.0)
            d._scan(frame, warm=False)
        for group in GROUPINGS.values():
            group(np.array([[10, 10, 8, 1], [11, 11, 8, 1]], np.float32), 0.3)
        _warm_seconds = time.perf_counter() - t0
        return _warm_seconds


def _norm_min_size(d: Detector, v):
    _check_size("min_size", v)
    if "max_size" in d.__dict__:  # (the constructor sets max_size next and checks both then)
        _sizes_fit(v, d.max_size)
    return v


def _norm_max_size(d: Detector, v):
    _check_size("max_size", v)
    _sizes_fit(d.__dict__.get("min_size"), v)
    return v


def _norm_scale_factor(d: Detector, v) -> float:
    _check_number("scale_factor", v, 1.001, 10, "a number in [1.001, 10]")
    return float(v)


def _norm_stride_factor(d: Detector, v) -> float:
    _check_number("stride_factor", v, 0, 1, "a number in (0, 1]", lo_open=True)
    return float(v)


def _norm_threshold(d: Detector, v) -> float:
    _check_number("threshold", v)
    return float(v)


def _norm_iou(d: Detector, v) -> float:
    # the overlap above which windows are grouped
    _check_number("iou", v, 0.0, 1.0, "a number in [0, 1)", hi_open=True)
    return float(v)


def _norm_grouping(d: Detector, v) -> str:
    if not isinstance(v, str) or v not in GROUPINGS:  # a list: TypeError
        raise UserError(f"must be one of {', '.join(GROUPINGS)}, got {v!r}", param="grouping")
    return v


def _norm_max_detections(d: Detector, v) -> int:
    if not _is_int(v) or v < 1:
        raise UserError(f"must be >= 1, got {v}", param="max_detections")
    return int(v)


def _norm_min_pixels(d: Detector, v) -> float:
    _check_number("min_pixels", v, 1.0, rule="a number >= 1")
    return float(v)


def _norm_threads(d: Detector, v) -> int | None:
    return None if v is None else check_threads(v, zero=None)


def _norm_fine_budget(d: Detector, v) -> int:
    if not _is_int(v) or v < 0:
        raise UserError(f"must be a whole number of windows >= 0, got {v}", param="fine_budget")
    return int(v)


def _norm_fine_span(d: Detector, v) -> float:
    _check_number("fine_span", v, 1.0, rule="a number >= 1")
    return float(v)


class _Setting:
    """A Detector setting checked on assignment as the constructor checks it: an unchecked
    scale_factor 0.5 scanned forever, an angle 5 indexed past the rotation table. A scan
    setting also drops the plans and scanners built for its old value."""

    def __init__(self, norm, scan: bool = True) -> None:
        self.norm = norm
        self.scan = scan
        self.name = ""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, obj, owner=None) -> Any:
        if obj is None:
            return self
        try:
            return obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, obj, value) -> None:
        value = self.norm(obj, value)
        lock = obj.__dict__.get("_lock")
        if lock is None:  # (in the constructor)
            obj.__dict__[self.name] = value
            return
        with lock:  # not in the middle of another thread's frame
            obj.__dict__[self.name] = value
            if self.scan:
                obj._rescan()


# what a scanner for a further angle copies (and is rebuilt on when one changes)
_SCAN_SETTINGS = (
    "min_size",
    "max_size",
    "scale_factor",
    "stride_factor",
    "min_pixels",
    "threads",
    "max_detections",
    "fine_budget",
    "fine_span",
)


class Detector:
    """Scan grayscale frames with a pico cascade.

    min_size / max_size: ints and floats > 1 are pixels; floats in (0, 1] are fractions of the
    frame's shorter side (its height for landscape frames); min_pixels floors the smallest window
    (a cascade is blind, and fires at random, below the face size it learned). scale_factor > 1
    grows the window,
    stride_factor moves it by that fraction of its size. angle in turns (0..1, counter-clockwise;
    clockwise 1/32 is 31/32, as --angle=-1/32 reads it; the reference quantises it to 1/32
    turn), or a sequence of angles: the frame is scanned at
    each and their windows are clustered together (rolled heads; each angle costs a scan).
    threshold applies to clustered scores (summed over
    the pooled frames when memory > 1). iou is the overlap above which windows are grouped:
    `grouping` "chain" joins chains of overlapping windows (the reference), "greedy" groups
    around the best-scoring windows (edge_fer.detect.cluster says when each does better).
    threads: None uses numba.get_num_threads() threads (all cores unless set lower) for large
    frames and one for small ones; an int forces that many.
    fine_budget > 0 (video, memory > 1): the scales under fine_span x the smallest window are
    scanned in a rotation of frames, about fine_budget of their windows a frame, and at the
    sizes of live faces around them on every frame, and every scale on the first frame after a
    reset (`edge_fer.detect.schedule`); 0: every scale of every frame.
    """

    def __init__(
        self,
        cascade: Cascade,
        min_size: float = 0.1,
        max_size: float = 1.0,
        scale_factor: float = 1.1,
        stride_factor: float = 0.1,
        angle: float | Sequence[float] = 0.0,
        threshold: float = 5.0,
        memory: int = 1,
        iou: float = 0.3,
        grouping: str = "chain",
        max_detections: int = 8192,
        threads: int | None = None,
        min_pixels: float = 1.0,
        fine_budget: int = 0,
        fine_span: float = 4.0,
    ) -> None:
        if not _is_int(memory) or not 1 <= memory <= 256:
            raise UserError(
                f"must be an integer number of frames in 1..256, got {memory}", param="memory"
            )
        # each setting is checked as it is assigned, here as later (the same checks and
        # messages); min_size is checked against max_size when max_size is set
        self.cascade = cascade
        self.min_size = min_size
        self.max_size = max_size
        self.scale_factor = scale_factor
        self.stride_factor = stride_factor
        self.angles = angle  # (and angle, the first)
        self.threshold = threshold
        self.iou = iou
        self.grouping = grouping
        self.max_detections = max_detections
        self.min_pixels = min_pixels
        self.threads = threads
        self.fine_budget = fine_budget
        self.fine_span = fine_span
        self._sched: ScheduleState | None = None  # the rotation of the current frame shape
        self._focus: np.ndarray | None = None  # boxes the caller asked to look at next frame
        self._focused = False  # the caller gives the live faces (focus): ours are not needed
        self._hot = np.empty((0, 4), np.float32)  # last frame's faces and near-faces
        self._memory = DetectionMemory(int(memory))
        self._plans: dict[tuple, _Plan] = {}
        self._shape: tuple[int, int] | None = None
        # tests run the kernels as plain Python, where numpy raises on any out-of-range index
        self._interpreted = False
        self._others: list[Detector] = []
        self._others_key: tuple | None = None
        # one frame at a time: a detector shared by threads mixed their frames' state (another
        # photo's shape reset the memory mid-frame, and every window scoring >= 0 was a face)
        self._lock = threading.RLock()

    # ---- settings, checked on assignment too ---------------------------------------------
    min_size = _Setting(_norm_min_size)
    max_size = _Setting(_norm_max_size)
    scale_factor = _Setting(_norm_scale_factor)
    stride_factor = _Setting(_norm_stride_factor)
    threshold = _Setting(_norm_threshold, scan=False)
    iou = _Setting(_norm_iou, scan=False)
    grouping = _Setting(_norm_grouping, scan=False)
    max_detections = _Setting(_norm_max_detections)
    min_pixels = _Setting(_norm_min_pixels)
    threads = _Setting(_norm_threads)
    fine_budget = _Setting(_norm_fine_budget)
    fine_span = _Setting(_norm_fine_span)

    @property
    def cascade(self) -> Cascade:
        return self.__dict__["cascade"]

    @cascade.setter
    def cascade(self, cascade: Cascade) -> None:
        if not isinstance(cascade, Cascade):
            raise UserError(
                f"must be an edge_fer.detect.Cascade, got {type(cascade)}", param="cascade"
            )
        with self._setting():
            self.__dict__["cascade"] = cascade
            self._leaves = np.ascontiguousarray(cascade.leaves.reshape(-1))
            self._thr = cascade.thresholds

    @property
    def angles(self) -> tuple[float, ...]:
        """Every scan angle (turns); `angle` is the first."""
        return self.__dict__["angles"]

    @angles.setter
    def angles(self, angle: float | Sequence[float]) -> None:
        # one angle or several, as the constructor's `angle`
        angles = _angles(angle)
        with self._setting():
            self.__dict__["angles"] = angles
            self.__dict__["angle"] = angles[0]

    @property
    def angle(self) -> float:
        """The first scan angle (turns); setting it sets `angles` as the constructor does."""
        return self.__dict__["angle"]

    @angle.setter
    def angle(self, angle: float | Sequence[float]) -> None:
        self.angles = angle

    @contextlib.contextmanager
    def _setting(self) -> Iterator[None]:
        """Around a scan setting's change: one frame at a time, then the old plans dropped."""
        lock = self.__dict__.get("_lock")
        if lock is None:  # (in the constructor: nothing built yet)
            yield
            return
        with lock:
            yield
            self._rescan()

    def _rescan(self) -> None:
        # the plans hold the old grid and offsets (angle and cascade are not in their key),
        # the other angles' scanners the old settings
        self._plans.clear()
        self._others, self._others_key = [], None
        self._sched = None

    # ---- public API ----------------------------------------------------------------------
    def detect(self, gray: np.ndarray) -> list[Detection]:
        """Faces in a frame, best score first; pools the last `memory` frames when > 1.

        Until the memory holds `memory` frames (after a reset), the threshold is scaled by the
        frames it holds: a face is then reported from the first frame, at the per-frame bar
        the pooled threshold stands for, instead of once enough frames have added up."""
        with self._lock:
            return self._detect(gray)

    def _detect(self, gray: np.ndarray) -> list[Detection]:
        if getattr(gray, "shape", None) != self._shape:  # positions mean nothing across sizes
            self.reset()
            self._shape = getattr(gray, "shape", None)
        raw = self._raw(gray)
        pooled = self._memory.push(raw)
        clustered = self.group(pooled)
        held = self._memory.filled
        bar = self.threshold * held / self._memory.slots
        # in float64: a bar past float32's range (--threshold 1e39) would overflow its cast
        score = clustered[:, 3].astype(np.float64)
        keep = clustered[score >= bar]
        if self._schedule_on():  # unless the caller gives its faces: look around these next frame
            self._hot = clustered[score >= HOT_SHARE * bar]
        order = np.argsort(-keep[:, 3], kind="stable")
        return [Detection(*map(float, keep[i])) for i in order]

    def raw(self, gray: np.ndarray) -> np.ndarray:
        """Every accepted window, unclustered: (n, 4) float32 [row, col, size, score]; windows
        of every scan angle together (a face rolled between two angles fires at both, and its
        cluster sums them). On a schedule (fine_budget > 0), the fine scales' windows as each
        part of them was last scanned (see `edge_fer.detect.schedule`)."""
        with self._lock:
            return self._raw(gray)

    def _raw(self, gray: np.ndarray) -> np.ndarray:
        frame = self._check_frame(gray)
        rects = self._regions(*frame.shape)
        on = self._schedule_on()  # the other angles' scanners follow this one's memory
        parts = [self._scan(frame, rects=rects, schedule=on)]
        parts += [o._scan(frame, rects=rects, schedule=on) for o in self._other_angles()]
        raw = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return raw[: self.max_detections]

    def focus(self, boxes) -> None:
        """Scan around these boxes ((n, 3+) [row, col, size, ...] in this frame's pixels, e.g.
        live tracks) at the fine scales near their sizes on the next frame; no effect when every
        scale is scanned on every frame anyway (fine_budget 0, memory 1, small frames). A
        detector that is given focus boxes (even none) looks only there; one that is not looks
        around its own last detections (which a verifier behind it may still reject)."""
        b = np.asarray(boxes, np.float64)
        with self._lock:
            self._focus = b.reshape(-1, b.shape[-1]) if b.size and b.ndim >= 1 else None
            self._focused = True

    def group(self, raw: np.ndarray) -> np.ndarray:
        """Windows (n, 4) grouped into detections (m, 4) [row, col, size, score], unthresholded."""
        return GROUPINGS[self.grouping](raw, self.iou)

    def reset(self) -> None:
        """Forget the temporal memory and the scan rotation (call between unrelated clips):
        the next frame is scanned at every scale."""
        with self._lock:
            self._memory.reset()
            self._sched = None
            self._hot = np.empty((0, 4), np.float32)
            self._focus = None
            self._focused = False
            for o in self._others:
                o.reset()

    @property
    def memory(self) -> int:
        """How many frames are pooled before clustering."""
        return self._memory.slots

    def sizes(self, nrows: int, ncols: int) -> tuple[float, float]:
        """(min, max) window size in pixels for a frame of this shape."""
        lo = max(resolve_size(self.min_size, nrows, ncols), self.min_pixels)
        hi = resolve_size(self.max_size, nrows, ncols)
        return lo, hi

    def grid(self, nrows: int, ncols: int) -> ScanGrid:
        """The windows a frame of this shape is scanned at (`.windows` counts them); a shape
        `detect` refuses is refused here too."""
        for name, v in (("nrows", nrows), ("ncols", ncols)):
            # (10**9 allocated gigabytes of window positions before any check)
            if not _is_int(v) or not 1 <= v <= MAX_SIDE:
                raise UserError(f"must be a whole number of pixels in 1..{MAX_SIDE}, got {v!r}",
                                param=name)  # fmt: skip
        if nrows * ncols > MAX_PIXELS:
            raise UserError(
                f"gives a {ncols}x{nrows} frame, over the {MAX_PIXELS // 1_000_000} Mpx that "
                "detect() scans",
                param="ncols",
            )
        with self._lock:
            return self._plan(int(nrows), int(ncols)).grid

    # ---- internals -----------------------------------------------------------------------
    def _schedule_on(self) -> bool:
        return self.fine_budget > 0 and self._memory.slots > 1

    def _regions(self, nrows: int, ncols: int) -> np.ndarray | None:
        """This frame's regions of interest (rects), from the last frame's faces and the
        caller's focus boxes; None when the schedule is off or has not started."""
        st = self._sched
        focus, self._focus = self._focus, None
        if not self._schedule_on() or st is None or not st.active or st.tick == 0:
            return None
        boxes = [] if self._focused else [self._hot[:, :4].astype(np.float64)]
        if focus is not None and focus.shape[-1] >= 3:  # the caller's boxes first
            boxes.append(np.column_stack([focus[:, :3], np.full(len(focus), np.inf)]))
        b = np.concatenate(boxes) if boxes else np.empty((0, 4))
        return regions(b, st.fine_limit, nrows, ncols) if len(b) else None

    def _other_angles(self) -> list[Detector]:
        """One scanner per further angle (a plan's offsets are built for one rotation), made
        again when a scan setting was changed after construction."""
        scan = {k: getattr(self, k) for k in _SCAN_SETTINGS}
        key = tuple(scan.values())
        if key != self._others_key:
            self._others = [Detector(self.cascade, angle=a, **scan) for a in self.angles[1:]]
            self._others_key = key
        return self._others

    @staticmethod
    def _check_frame(gray: np.ndarray, param: str = "gray") -> np.ndarray:
        """The frame as a contiguous 2-D uint8 array; a UserError naming `param` otherwise (also
        the check of `Verifier`, which is given the same frames)."""
        if not isinstance(gray, np.ndarray):
            raise UserError(
                f"must be a 2-D grayscale uint8 numpy array, got {type(gray).__name__}",
                param=param,
            )
        if gray.ndim != 2:
            hint = " (convert colour frames with cv2.cvtColor(..., cv2.COLOR_BGR2GRAY))"
            raise UserError(
                f"must be a 2-D grayscale uint8 frame, got shape {gray.shape}"
                + (hint if gray.ndim == 3 else ""),
                param=param,
            )
        if gray.dtype != np.uint8:
            # a float frame scaled 0..1 is not an error numpy would raise: it scans as black
            hint = " (pixels 0..255)" if gray.dtype.kind == "f" else ""
            raise UserError(
                f"must be a uint8 grayscale frame{hint}, got dtype {gray.dtype}", param=param
            )
        h, w = gray.shape
        if h == 0 or w == 0:
            raise UserError(f"is an empty frame (shape {gray.shape})", param=param)
        if h > MAX_SIDE or w > MAX_SIDE or h * w > MAX_PIXELS:
            raise UserError(
                f"is a frame of {w}x{h}, too large (at most {MAX_SIDE} px a side and "
                f"{MAX_PIXELS // 1_000_000} Mpx); downscale it first",
                param=param,
            )
        return np.ascontiguousarray(gray)

    def _plan(self, nrows: int, ncols: int) -> _Plan:
        """The plan of every scale of frames of this shape, built once."""
        # keyed by the scan settings too: a setting changed after the first frame was ignored
        # (the scanners of the other angles followed it, this one did not)
        key = (nrows, ncols, *(getattr(self, k) for k in _SCAN_SETTINGS))
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= 8:  # a stream has one shape; do not grow without bound
                self._plans.clear()
            plan = self._build_plan(self._full_grid(nrows, ncols))
            self._plans[key] = plan
        return plan

    def _full_grid(self, nrows: int, ncols: int) -> ScanGrid:
        lo, hi = self.sizes(nrows, ncols)
        args = (nrows, ncols, lo, hi, self.scale_factor, self.stride_factor)
        # counted first: the positions of a grid far over the limit took gigabytes to refuse
        least = fewest_windows(*args)
        g = build_grid(*args) if least <= MAX_WINDOWS else None
        if g is None or g.windows > MAX_WINDOWS:
            n = f"at least {least}" if g is None else str(g.windows)
            raise UserError(f"{n} windows per frame is too many to scan; raise the minimum size")
        return g

    def _build_plan(
        self, g: ScanGrid, real: np.ndarray | None = None, table: np.ndarray | None = None
    ) -> _Plan:
        """Work items and buffers for grid `g`. real / table: the offsets of g's scales are rows
        `real` of `table` (a sub-grid of the full one); else they are computed here (and kept
        as the plan's table when they fit OFFSET_CACHE_BYTES)."""
        ncols = g.ncols
        nr = np.diff(g.row_start)
        nc = np.diff(g.col_start)
        item_scale = np.repeat(np.arange(g.nscales, dtype=np.int32), nr)
        item_rowpos = np.arange(g.rows_f.shape[0], dtype=np.int64)
        item_row = g.rows_f.astype(np.int32)
        # int32 offsets: 2 per node upright, 4 rotated; codes.size is 4 per node
        per_scale_offs = self.cascade.codes.size * (2 if self.angle == 0.0 else 4)
        cache_offs = per_scale_offs * g.nscales <= OFFSET_CACHE_BYTES
        max_scales = max(1, OFFSET_CACHE_BYTES // max(per_scale_offs, 1))
        if table is not None:  # the offsets exist already: batches only bound the buffers
            max_scales = g.nscales
        nitems = item_scale.shape[0]
        if g.windows <= WINDOW_BUFFER and g.nscales <= max_scales:  # the usual case: one call
            need = np.repeat(nc, nr)
            item_buf = np.concatenate([[0], np.cumsum(need)[:-1]]).astype(np.int64)
            batches = (
                [_Batch(0, nitems, 0, g.nscales, g.windows, None, np.empty(0, np.int64))]
                if nitems
                else []
            )
        else:
            item_buf, batches = self._split(g, item_scale, max_scales)
        full_table = None
        for bt in batches:
            if table is not None:
                assert real is not None  # (passed together with table)
                bt.offs, bt.omap = table, real
            else:
                bt.omap = np.arange(g.nscales, dtype=np.int64) - bt.sc_lo
                if cache_offs:
                    bt.offs = self._offsets(g, bt.sc_lo, bt.sc_hi, ncols)
        if table is None and cache_offs:  # every scale's offsets in one table, for sub-grids
            one = len(batches) == 1 and batches[0].sc_lo == 0 and batches[0].sc_hi == g.nscales
            full_table = batches[0].offs if one else self._offsets(g, 0, g.nscales, ncols)
        return _Plan(
            g,
            item_scale,
            item_row,
            item_rowpos,
            item_buf,
            g.cols_f.astype(np.int32),
            batches,
            full_table,
        )

    @staticmethod
    def _split(
        g: ScanGrid, item_scale: np.ndarray, max_scales: int
    ) -> tuple[np.ndarray, list[_Batch]]:
        """Runs of items whose output buffers fit WINDOW_BUFFER and offsets fit the budget."""
        nc = np.diff(g.col_start)
        item_buf = np.zeros(item_scale.shape[0], np.int64)
        batches: list[_Batch] = []
        lo_it, lo_sc, used = 0, 0, 0
        none = np.empty(0, np.int64)
        for k in range(g.nscales):
            for i in range(int(g.row_start[k]), int(g.row_start[k + 1])):
                need = int(nc[k])
                if i > lo_it and (used + need > WINDOW_BUFFER or k - lo_sc >= max_scales):
                    hi_sc = int(item_scale[i - 1]) + 1
                    batches.append(_Batch(lo_it, i, lo_sc, hi_sc, used, None, none))
                    lo_it, lo_sc, used = i, k, 0
                item_buf[i] = used
                used += need
        if item_scale.shape[0] > lo_it:
            batches.append(_Batch(lo_it, item_scale.shape[0], lo_sc, g.nscales, used, None, none))
        return item_buf, batches

    def _offsets(self, g: ScanGrid, sc_lo: int, sc_hi: int, ldim: int) -> np.ndarray:
        sizes = g.sizes_i[sc_lo:sc_hi]
        if self.angle == 0.0:
            return scan.upright_offsets(self.cascade.codes, sizes, ldim)
        return scan.rotated_offsets(self.cascade.codes, sizes, self.angle)

    def _scan(
        self,
        frame: np.ndarray,
        warm: bool = True,
        rects: np.ndarray | None = None,
        schedule: bool | None = None,
    ) -> np.ndarray:
        """The frame's windows: every scale, or (schedule, video) the coarse scales, one phase
        of the fine ones, the other phases' carried windows, and fresh ones in `rects`."""
        nrows, ncols = frame.shape
        full = self._plan(nrows, ncols)
        if schedule is None:
            schedule = self._schedule_on()
        st = self._sched
        if schedule and full.table is not None:
            if st is None or st.grid is not full.grid:
                st = self._sched = ScheduleState(full.grid, self.fine_budget, self.fine_span)
        else:
            st = None
        if st is None or not st.active:
            return self._run(full, frame, warm)
        coarse = self._run(self._sub_plan(st, "coarse"), frame, warm)
        if st.tick == 0:  # the first frame since the reset: every phase (every scale), on
            # every core unless told otherwise (a frame of several frames' work, once)
            many = self.threads or max(1, os.cpu_count() or 1)
            for q in range(st.every):
                st.carry[q] = self._run(self._sub_plan(st, q), frame, warm, threads=many)
        else:
            p = st.phase()
            st.carry[p] = self._run(self._sub_plan(st, p), frame, warm)
        st.tick += 1
        fine = [c for c in st.carry if len(c)]
        parts = [coarse]
        if fine:
            f = np.concatenate(fine)
            if rects is not None and len(rects):  # stale (and this frame's) windows there
                f = f[~inside(f, rects)]  # give way to the fresh scan of the rects
            parts.append(f)
        if rects is not None and len(rects):
            g, real = crop(full.grid, st.fine_scales, rects)
            if g.nscales:
                plan = self._build_plan(g, real, full.table)
                parts.append(self._run(plan, frame, warm, threads=1))
        raw = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return raw[: self.max_detections]

    def _sub_plan(self, st: ScheduleState, which) -> _Plan:
        """The plan of the coarse scales ("coarse") or of fine phase `which`, built once."""
        plan = st.plans.get(which)
        if plan is None:
            full = self._plan(st.grid.nrows, st.grid.ncols)
            if which == "coarse":
                g, real = st.coarse, st.coarse_real
            else:
                g, real = st.phases[which], np.arange(st.nfine, dtype=np.int64)
            plan = st.plans[which] = self._build_plan(g, real, full.table)
        return plan

    def _run(
        self, plan: _Plan, frame: np.ndarray, warm: bool = True, threads: int | None = None
    ) -> np.ndarray:
        """Scan one plan's windows of the frame: (n, 4) float32 [row, col, size, score]."""
        if not plan.batches:
            return np.empty((0, 4), np.float32)
        if warm and _warm_seconds is None:
            warmup()
        g = plan.grid
        pix = frame.reshape(-1)
        kernel: Any = scan.scan_upright if self.angle == 0.0 else scan.scan_rotated
        if self._interpreted:
            kernel = kernel.py_func
        threads = (
            threads
            or self.threads
            or (numba.get_num_threads() if g.windows >= PARALLEL_MIN_WINDOWS else 1)
        )
        parts = self._run_batches(plan, pix, kernel, threads)
        raw = parts[0] if len(parts) == 1 else np.concatenate(parts)
        # the reference drops windows past its buffer the same way (and clustering is O(n^2))
        return raw[: self.max_detections]

    def _run_batches(self, plan: _Plan, pix: np.ndarray, kernel, threads: int) -> list[np.ndarray]:
        g = plan.grid
        nrows, ncols = g.nrows, g.ncols
        casc = self.cascade
        parts = []
        for b in plan.batches:
            offs = b.offs if b.offs is not None else self._offsets(g, b.sc_lo, b.sc_hi, ncols)
            sl = slice(b.it_lo, b.it_hi)
            out_col = np.empty(b.nbuf, np.int32)
            out_score = np.empty(b.nbuf, np.float32)
            out_count = np.empty(b.it_hi - b.it_lo, np.int32)
            args = (
                pix,
                nrows,
                ncols,
                casc.tdepth,
                casc.ntrees,
                self._leaves,
                self._thr,
                offs,
                b.omap,
                plan.item_scale[sl],
                plan.item_row[sl],
                plan.item_buf[sl],
                g.sizes_i,
                g.col_start,
                plan.cols_i,
                out_col,
                out_score,
                out_count,
            )
            if threads == 1:
                kernel(*args, 0, 1, 1)
            else:
                # more lanes than threads so that a slow thread's last lane is short
                nlanes = 4 * threads

                def lane(i: int, args=args, nlanes=nlanes) -> None:
                    kernel(*args, i, i + 1, nlanes)

                run_lanes(lane, nlanes, threads)
            parts.append(
                scan.gather(
                    plan.item_scale[sl],
                    plan.item_rowpos[sl],
                    plan.item_buf[sl],
                    out_count,
                    out_col,
                    out_score,
                    g.sizes_f,
                    g.rows_f,
                    g.col_start,
                    g.cols_f,
                )
            )
        return parts
