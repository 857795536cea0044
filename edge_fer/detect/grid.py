"""The scan grid: which window centres and sizes get evaluated for a frame shape.

The reference runtime walks sizes and positions with 32-bit float accumulation
(`s *= scalefactor`, `r += dr`), so positions drift slightly from the ideal lattice; to report
the very same windows we replay that arithmetic in float32 here. The grid depends only on the
frame shape and the scan parameters, so the detector builds it once per shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

F32 = np.float32


@dataclass(frozen=True)
class ScanGrid:
    nrows: int
    ncols: int
    sizes_f: np.ndarray  # float32 (nscales,) window size as reported
    sizes_i: np.ndarray  # int32 (nscales,) window size as evaluated (integer part)
    rows_f: np.ndarray  # float32, the row centres of every scale, concatenated
    row_start: np.ndarray  # int64 (nscales + 1,) scale k owns rows_f[row_start[k]:row_start[k+1]]
    cols_f: np.ndarray  # float32, column centres, concatenated likewise
    col_start: np.ndarray  # int64 (nscales + 1,)

    @property
    def nscales(self) -> int:
        return int(self.sizes_f.shape[0])

    def windows_per_scale(self) -> np.ndarray:
        return np.diff(self.row_start) * np.diff(self.col_start)

    @property
    def windows(self) -> int:
        """How many windows one scan of a frame of this shape evaluates."""
        return int(self.windows_per_scale().sum())


def _positions(n: int, half: np.float32, step: np.float32) -> np.ndarray:
    """Centres from half+1 while <= n-half-1, accumulated in float32 like the reference."""
    start = F32(half + F32(1))
    end = F32(F32(n) - half - F32(1))
    if not start <= end:
        return np.empty(0, np.float32)
    count = int((float(end) - float(start)) / float(step)) + 3  # a bound; trimmed below
    seq = np.full(count, step, dtype=np.float32)
    seq[0] = start
    pos = np.add.accumulate(seq, dtype=np.float32)  # sequential, rounds every step
    return pos[pos <= end]


def _scales(
    nrows: int,
    ncols: int,
    min_size: float,
    max_size: float,
    scale_factor: float,
    stride_factor: float,
) -> Iterator[tuple[np.float32, np.float32, np.float32]]:
    """(size, step, half) of each scanned scale, in float32 like the reference."""
    s = F32(min_size)
    # No window wider than the frame has a position; stopping there keeps a huge (or inf in
    # float32) max_size from looping forever while leaving the scanned sizes unchanged.
    smax = F32(min(float(max_size), float(max(nrows, ncols))))
    sf, st = F32(scale_factor), F32(stride_factor)
    while s <= smax:
        yield s, max(F32(st * s), F32(1)), F32(s / F32(2))
        s = F32(sf * s)


def fewest_windows(
    nrows: int,
    ncols: int,
    min_size: float,
    max_size: float,
    scale_factor: float,
    stride_factor: float,
) -> int:
    """A lower bound on `build_grid(...).windows`, counted without building anything: the
    caller refuses a grid too large to scan before its arrays are allocated."""
    total = 0
    for _, step, half in _scales(nrows, ncols, min_size, max_size, scale_factor, stride_factor):
        n = []
        for side in (nrows, ncols):
            span = (side - float(half) - 1) - (float(half) + 1)
            # float32 accumulation drifts by under 2**-24 of a position per step (positions
            # are under 2**14, steps >= 1): at most 0.1% fewer positions than the ideal lattice
            n.append(max(0, int((span / float(step) + 1) * (1 - 2e-3)) - 1) if span >= 0 else 0)
        total += n[0] * n[1]
    return total


def build_grid(
    nrows: int,
    ncols: int,
    min_size: float,
    max_size: float,
    scale_factor: float,
    stride_factor: float,
) -> ScanGrid:
    sizes: list[np.float32] = []
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for s, step, half in _scales(nrows, ncols, min_size, max_size, scale_factor, stride_factor):
        r = _positions(nrows, half, step)
        c = _positions(ncols, half, step)
        if r.size and c.size:
            sizes.append(s)
            rows.append(r)
            cols.append(c)
    sizes_f = np.array(sizes, dtype=np.float32)
    return ScanGrid(
        nrows=nrows,
        ncols=ncols,
        sizes_f=sizes_f,
        sizes_i=sizes_f.astype(np.int32),  # C's float -> int conversion truncates
        rows_f=np.concatenate(rows) if rows else np.empty(0, np.float32),
        row_start=np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64),
        cols_f=np.concatenate(cols) if cols else np.empty(0, np.float32),
        col_start=np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int64),
    )


def subset(g: ScanGrid, scales) -> ScanGrid:
    """The grid's windows at the given scales (indices, ascending), on the same lattice."""
    idx = [int(k) for k in scales]
    rows = [g.rows_f[g.row_start[k] : g.row_start[k + 1]] for k in idx]
    cols = [g.cols_f[g.col_start[k] : g.col_start[k + 1]] for k in idx]
    sizes_f = g.sizes_f[idx] if idx else np.empty(0, np.float32)
    return assemble(g.nrows, g.ncols, sizes_f, rows, cols)


def assemble(nrows: int, ncols: int, sizes_f: np.ndarray, rows, cols) -> ScanGrid:
    def flat(parts) -> tuple[np.ndarray, np.ndarray]:
        start = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        data = np.concatenate(parts).astype(np.float32) if parts else np.empty(0, np.float32)
        return data, start

    rows_f, row_start = flat(rows)
    cols_f, col_start = flat(cols)
    sizes_f = np.asarray(sizes_f, np.float32)
    return ScanGrid(
        nrows=nrows,
        ncols=ncols,
        sizes_f=sizes_f,
        sizes_i=sizes_f.astype(np.int32),
        rows_f=rows_f,
        row_start=row_start,
        cols_f=cols_f,
        col_start=col_start,
    )


def crop(g: ScanGrid, scales, rects: np.ndarray) -> tuple[ScanGrid, np.ndarray]:
    """The grid's windows at `scales` whose centres lie in a rect of `rects` ((n, 6) float
    [r0, c0, r1, c1, lo, hi], inclusive) and whose sizes lie in its lo..hi, on the same
    lattice; rects must not overlap, or windows repeat. Returns a grid of one pseudo-scale per
    (rect, scale) with windows, and the grid scale index of each (for its offsets)."""
    sizes, rows, cols, real = [], [], [], []
    for r0, c0, r1, c1, lo, hi in np.asarray(rects, np.float64).reshape(-1, 6):
        for k in scales:
            k = int(k)
            if not lo <= float(g.sizes_f[k]) <= hi:
                continue
            rk = g.rows_f[g.row_start[k] : g.row_start[k + 1]]
            ck = g.cols_f[g.col_start[k] : g.col_start[k + 1]]
            ra, rb = np.searchsorted(rk, r0, "left"), np.searchsorted(rk, r1, "right")
            ca, cb = np.searchsorted(ck, c0, "left"), np.searchsorted(ck, c1, "right")
            if rb > ra and cb > ca:
                sizes.append(g.sizes_f[k])
                rows.append(rk[ra:rb])
                cols.append(ck[ca:cb])
                real.append(k)
    sub = assemble(g.nrows, g.ncols, np.array(sizes, np.float32), rows, cols)
    return sub, np.array(real, np.int64)
