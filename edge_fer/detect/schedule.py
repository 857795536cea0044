"""Which windows a video frame is scanned at: small faces at camera rates.

The small windows are most of a frame's work (windows per scale fall with the square of the
size: at 1080p from 24 px, the scales under 96 px are 95% of the 1.9 million windows). On
video (frames pooled over time, `memory` > 1) the detector therefore scans:

- the coarse scales (at least `fine_span` x the smallest window) on every frame;
- the fine scales in a rotation of K phases, K = the fine windows / `fine_budget`: phase p
  holds every K-th row of every fine scale (so phases cost alike and each covers every size),
  and is scanned on frames p, p + K, ...; each phase's windows are kept ("carried") until it is
  scanned again, so every frame's window list holds the latest scan of every position, and the
  temporal memory pools them as it pools a full scan's;
- every fine scale near a live face's size, every frame, in a region around it (the detector's
  own detections of the last frame, down to HOT_SHARE of the threshold, and the boxes its
  caller gives with `focus`, e.g. the tracker's): there fresh windows replace the carried ones,
  so a face that was found keeps being scanned at its sizes on every frame and its box does
  not lag;
- every scale on the first frame after a reset (or a change of frame size), so faces are found
  from the first frame.

Photos and per-frame detection (`edge-fer detect`, stills: memory 1), and frames of at most
MIN_PIXELS, scan every scale of every frame. `edge_fer.detect.config.resolve` decides the
settings.
"""

from __future__ import annotations

import math

import numpy as np

from edge_fer.detect.grid import ScanGrid, assemble, subset

# frames of at most this many pixels scan every scale every frame: a 640x480 frame from 24 px
# is ~6 ms on one core, and a rotation would only delay its small faces
MIN_PIXELS = 640 * 480
MAX_PHASES = 16  # the longest rotation (at 30 frames/s about half a second)
# a region of interest reaches this many box sizes from the box's centre (a face moves far less
# than its size between frames), plus ROI_PAD pixels, and scans the fine scales within
# ROI_SIZES of the box's size
ROI_REACH = 0.6
ROI_PAD = 4.0
ROI_SIZES = 1.5
MAX_ROIS = 16  # the best-scoring ones
# last frame's detections count as live down to this share of the (pooled) threshold
HOT_SHARE = 1.0


class ScheduleState:
    """The rotation of one frame shape: its phases' grids and the windows each last found."""

    def __init__(self, grid: ScanGrid, fine_budget: int, fine_span: float) -> None:
        self.grid = grid
        sizes = grid.sizes_f
        nfine = int(np.sum(sizes < fine_span * sizes[0])) if sizes.size else 0
        per_scale = grid.windows_per_scale()
        fine_windows = int(per_scale[:nfine].sum())
        big = grid.nrows * grid.ncols > MIN_PIXELS
        every = 1
        if big and nfine and fine_budget > 0:
            every = max(1, min(MAX_PHASES, math.ceil(fine_windows / fine_budget)))
        self.every = every
        self.nfine = nfine if every > 1 else 0
        self.fine_limit = float(fine_span * sizes[0]) if sizes.size else 0.0
        self.fine_scales = list(range(self.nfine))
        self.coarse = subset(grid, range(self.nfine, grid.nscales))
        self.coarse_real = np.arange(self.nfine, grid.nscales, dtype=np.int64)
        self.phases = [self._phase(p) for p in range(every)] if every > 1 else []
        self.plans: dict = {}  # the detector's plans of these grids ("coarse", 0, 1, ...)
        self.tick = 0  # frames scanned since the reset
        self.carry: list[np.ndarray] = [np.empty((0, 4), np.float32)] * every

    @property
    def active(self) -> bool:
        return self.every > 1

    def _phase(self, p: int) -> ScanGrid:
        """Rows i of fine scale k with (i + k) % every == p: every size, 1/every of the rows."""
        g, k_all = self.grid, self.fine_scales
        rows, cols, sizes = [], [], []
        for k in k_all:
            r = g.rows_f[g.row_start[k] : g.row_start[k + 1]]
            sizes.append(g.sizes_f[k])
            rows.append(r[(np.arange(len(r)) + k) % self.every == p])
            cols.append(g.cols_f[g.col_start[k] : g.col_start[k + 1]])
        return assemble(g.nrows, g.ncols, np.array(sizes, np.float32), rows, cols)

    def phase(self) -> int:
        return self.tick % self.every


def inside(windows: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """Whether each window (row, col, size) lies in any rect [r0, c0, r1, c1, lo, hi]: its
    centre in the rect (inclusive) and its size in lo..hi."""
    r = windows[:, 0:1].astype(np.float64)
    c = windows[:, 1:2].astype(np.float64)
    s = windows[:, 2:3].astype(np.float64)
    hit = (r >= rects[:, 0]) & (r <= rects[:, 2]) & (c >= rects[:, 1]) & (c <= rects[:, 3])
    return np.asarray((hit & (s >= rects[:, 4]) & (s <= rects[:, 5])).any(axis=1))


def regions(boxes: np.ndarray, fine_limit: float, nrows: int, ncols: int) -> np.ndarray:
    """Rects (n, 6) [r0, c0, r1, c1, lo, hi] around boxes (m, 3+) [row, col, size, (score)]
    small enough to need the fine scales: the window centres and sizes to scan fresh.
    Overlapping rects become one (their union, and the union of their sizes), so no window
    is scanned twice."""
    b = np.asarray(boxes, np.float64)
    if b.ndim != 2 or b.shape[1] < 3 or not len(b):
        return np.empty((0, 6))
    size = b[:, 2]
    b = b[np.isfinite(b[:, :3]).all(axis=1) & (size > 0) & (size / ROI_SIZES < fine_limit)]
    if b.shape[1] > 3:
        b = b[np.argsort(-b[:, 3], kind="stable")]
    b = b[:MAX_ROIS]
    half = ROI_REACH * b[:, 2] + ROI_PAD
    rects = np.column_stack(
        [
            np.clip(b[:, 0] - half, 0, nrows),
            np.clip(b[:, 1] - half, 0, ncols),
            np.clip(b[:, 0] + half, 0, nrows),
            np.clip(b[:, 1] + half, 0, ncols),
            b[:, 2] / ROI_SIZES,
            b[:, 2] * ROI_SIZES,
        ]
    )
    return merge(rects)


def merge(rects: np.ndarray) -> np.ndarray:
    """Rects that overlap (or touch) replaced by their union, until none do."""
    out = [list(r) for r in np.asarray(rects, np.float64).reshape(-1, 6)]
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a[0] <= b[2] + 1 and b[0] <= a[2] + 1 and a[1] <= b[3] + 1 and b[1] <= a[3] + 1:
                    lo = [min(a[0], b[0]), min(a[1], b[1])]
                    hi = [max(a[2], b[2]), max(a[3], b[3])]
                    out[i] = lo + hi + [min(a[4], b[4]), max(a[5], b[5])]
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return np.array(out, np.float64).reshape(-1, 6)
