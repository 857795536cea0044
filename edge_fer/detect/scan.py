"""Compiled scanning kernels (numba). No Python runs per window.

Integer semantics follow the reference runtime: node offsets are in units of size/256, the
pixel at `(r*256 + code*s) / 256` with C division. For the upright cascade the scan grid keeps
that numerator positive, so we precompute `floor(code*s/256)` per size once per frame shape and
a node costs two loads and a compare. The rotated cascade clamps to the frame (its reach is
~0.707*s, and the reference's bounds check is written for that), so no read can leave the frame
whatever the codes are.

`omap[k]` is the row of `offs` that holds scale k's offsets (a plan of a few scales, or of
regions of interest, shares the frame's table). Work items are (scale, row) pairs, dealt to
`nlanes` lanes round-robin; a call runs lanes
[lane_lo, lane_hi) with the GIL released, so threads can run different lanes at once (see
lanes.py). Each item writes accepted windows into its own slice of a preallocated buffer
(column index + score): threads never share output, and the gather keeps the reference's
scale-row-column order.
"""

from __future__ import annotations

import numpy as np

from edge_fer.cache import njit_cached

# the reference's tables: trunc(256*cos(2*pi*k/32)), same for sin, k = 0..32 (so the angle is
# quantised to 1/32 turn); computed here, checked against the published values in the tests
_TURNS = 2 * np.pi * np.arange(33) / 32
QCOS = np.trunc(256 * np.cos(_TURNS)).astype(np.int64)
QSIN = np.trunc(256 * np.sin(_TURNS)).astype(np.int64)
U = np.uint64
ROT_REACH = 46341  # ceil(sqrt(2)/2 * 65536): the rotated window's half-diagonal, 16.16 fixed point


def angle_index(angle: float) -> int:
    """Table row for an angle in turns (0..1), truncating like the reference's (int)(32*a)."""
    return int(np.float32(angle) * np.float32(32))


def upright_offsets(codes: np.ndarray, sizes_i: np.ndarray, ldim: int) -> np.ndarray:
    """int32 (nscales, ntrees*nnodes*2): flat pixel offsets of each node's two pixels."""
    return _upright_offsets(codes.reshape(-1, 4), sizes_i.astype(np.int64), ldim)


def rotated_offsets(codes: np.ndarray, sizes_i: np.ndarray, angle: float) -> np.ndarray:
    """int32 (nscales, ntrees*nnodes*4): rotated (dr1, dc1, dr2, dc2) per node, floored."""
    k = angle_index(angle)
    return _rotated_offsets(codes.reshape(-1, 4), sizes_i.astype(np.int64), QCOS[k], QSIN[k])


@njit_cached(nogil=True)
def _upright_offsets(codes, sizes, ldim):
    n = codes.shape[0]
    out = np.empty((sizes.shape[0], 2 * n), np.int32)
    for k in range(sizes.shape[0]):
        s = sizes[k]
        for i in range(n):
            # >> floors; equal to C's truncation here because r*256 - 128*s >= 0 on the grid
            out[k, 2 * i] = ((codes[i, 0] * s) >> 8) * ldim + ((codes[i, 1] * s) >> 8)
            out[k, 2 * i + 1] = ((codes[i, 2] * s) >> 8) * ldim + ((codes[i, 3] * s) >> 8)
    return out


@njit_cached(nogil=True)
def _rotated_offsets(codes, sizes, qcos1, qsin1):
    n = codes.shape[0]
    out = np.empty((sizes.shape[0], 4 * n), np.int32)
    for k in range(sizes.shape[0]):
        qcos = sizes[k] * qcos1
        qsin = sizes[k] * qsin1
        for i in range(n):
            a, b = np.int64(codes[i, 0]), np.int64(codes[i, 1])
            c, d = np.int64(codes[i, 2]), np.int64(codes[i, 3])
            out[k, 4 * i] = (qcos * a - qsin * b) >> 16
            out[k, 4 * i + 1] = (qsin * a + qcos * b) >> 16
            out[k, 4 * i + 2] = (qcos * c - qsin * d) >> 16
            out[k, 4 * i + 3] = (qsin * c + qcos * d) >> 16
    return out


@njit_cached(nogil=True)
def _max_cols(col_start):
    m = 0
    for k in range(col_start.shape[0] - 1):
        m = max(m, col_start[k + 1] - col_start[k])
    return m


@njit_cached(nogil=True)
def scan_upright(
    pix,
    nrows,
    ncols,
    tdepth,
    ntrees,
    leaves,
    thr,
    offs,
    omap,
    item_scale,
    item_row,
    item_buf,
    scale_s,
    col_start,
    cols_i,
    out_col,
    out_score,
    out_count,
    lane_lo,
    lane_hi,
    nlanes,
):
    nleaves = 1 << tdepth
    stride = 2 * (nleaves - 1)
    nitems = item_scale.shape[0]
    maxc = _max_cols(col_start)
    for lane in range(lane_lo, lane_hi):
        # lanes take every nlanes-th item: neighbouring rows cost about the same, so this
        # balances threads far better than contiguous chunks (small sizes have more rows)
        active = np.empty(maxc, np.int64)
        bases = np.empty(maxc, np.int64)
        scores = np.empty(maxc, np.float32)
        for it in range(lane, nitems, nlanes):
            k = item_scale[it]
            s = scale_s[k]
            r = item_row[it]
            n = 0
            # the reference rejects windows whose reach (s/2) leaves the frame; we also reject
            # 2r < s, which the grid never produces, so the floored offsets are exact and safe
            if 2 * r >= s and 2 * r + s < 2 * nrows:
                o = offs[omap[k]]
                c0 = col_start[k]
                na = 0
                for j in range(col_start[k + 1] - c0):
                    c = cols_i[c0 + j]
                    if 2 * c >= s and 2 * c + s < 2 * ncols:
                        active[na] = j
                        bases[na] = r * ncols + c
                        scores[na] = 0.0
                        na += 1
                # tree by tree over the row's surviving windows: the windows are independent,
                # so the core overlaps their load chains; compaction is branch-free because
                # survival is a coin flip the predictor cannot learn
                tb = -2
                lb = -nleaves
                for t in range(ntrees):
                    if na == 0:
                        break
                    th = thr[t]
                    m = 0
                    for a in range(na):
                        base = bases[a]
                        idx = 1
                        for _ in range(tdepth):
                            p = tb + 2 * idx
                            # unsigned indices: numba then skips negative-index wraparound
                            idx = 2 * idx + (pix[U(base + o[U(p)])] <= pix[U(base + o[U(p + 1)])])
                        sc = scores[a] + leaves[U(lb + idx)]
                        active[m] = active[a]
                        bases[m] = base
                        scores[m] = sc
                        m += sc > th
                    na = m
                    tb += stride
                    lb += nleaves
                buf = item_buf[it]
                last = thr[ntrees - 1]
                for a in range(na):
                    out_col[buf + a] = active[a]
                    out_score[buf + a] = scores[a] - last
                n = na
            out_count[it] = n


@njit_cached(nogil=True)
def scan_rotated(
    pix,
    nrows,
    ncols,
    tdepth,
    ntrees,
    leaves,
    thr,
    offs,
    omap,
    item_scale,
    item_row,
    item_buf,
    scale_s,
    col_start,
    cols_i,
    out_col,
    out_score,
    out_count,
    lane_lo,
    lane_hi,
    nlanes,
):
    nleaves = 1 << tdepth
    stride = 4 * (nleaves - 1)
    nitems = item_scale.shape[0]
    rmax = nrows - 1
    cmax = ncols - 1
    maxc = _max_cols(col_start)
    for lane in range(lane_lo, lane_hi):
        active = np.empty(maxc, np.int64)
        ccs = np.empty(maxc, np.int64)
        scores = np.empty(maxc, np.float32)
        for it in range(lane, nitems, nlanes):
            k = item_scale[it]
            s = scale_s[k]
            r = item_row[it]
            n = 0
            reach = ROT_REACH * s  # the reference's bounds check, in 16.16 fixed point
            if r * 65536 + reach < 65536 * nrows and r * 65536 - reach > -65536:
                o = offs[omap[k]]
                c0 = col_start[k]
                na = 0
                for j in range(col_start[k + 1] - c0):
                    c = cols_i[c0 + j]
                    if c * 65536 + reach < 65536 * ncols and c * 65536 - reach > -65536:
                        active[na] = j
                        ccs[na] = c
                        scores[na] = 0.0
                        na += 1
                tb = -4
                lb = -nleaves
                for t in range(ntrees):
                    if na == 0:
                        break
                    th = thr[t]
                    m = 0
                    for a in range(na):
                        c = ccs[a]
                        idx = 1
                        for _ in range(tdepth):
                            p = tb + 4 * idx
                            # clamping reproduces C's truncation toward zero for the one
                            # negative case the bounds check lets through, and bounds all reads
                            r1 = min(max(r + o[U(p)], 0), rmax)
                            c1 = min(max(c + o[U(p + 1)], 0), cmax)
                            r2 = min(max(r + o[U(p + 2)], 0), rmax)
                            c2 = min(max(c + o[U(p + 3)], 0), cmax)
                            idx = 2 * idx + (pix[U(r1 * ncols + c1)] <= pix[U(r2 * ncols + c2)])
                        sc = scores[a] + leaves[U(lb + idx)]
                        active[m] = active[a]
                        ccs[m] = c
                        scores[m] = sc
                        m += sc > th
                    na = m
                    tb += stride
                    lb += nleaves
                buf = item_buf[it]
                last = thr[ntrees - 1]
                for a in range(na):
                    out_col[buf + a] = active[a]
                    out_score[buf + a] = scores[a] - last
                n = na
            out_count[it] = n


@njit_cached(nogil=True)
def gather(
    item_scale,
    item_rowpos,
    item_buf,
    out_count,
    out_col,
    out_score,
    sizes_f,
    rows_f,
    col_start,
    cols_f,
):
    """(n, 4) float32 [row, col, size, score] in scan order."""
    total = 0
    for it in range(out_count.shape[0]):
        total += out_count[it]
    res = np.empty((total, 4), dtype=np.float32)
    n = 0
    for it in range(out_count.shape[0]):
        k = item_scale[it]
        rf = rows_f[item_rowpos[it]]
        b = item_buf[it]
        for i in range(out_count[it]):
            res[n, 0] = rf
            res[n, 1] = cols_f[col_start[k] + out_col[b + i]]
            res[n, 2] = sizes_f[k]
            res[n, 3] = out_score[b + i]
            n += 1
    return res


def first_run_notice() -> str | None:
    """A line to print before the detector's kernels compile: the first time after an install
    (4-10 s on a 2-core CPU), or on every run when no cache folder can be written; None when
    they are cached or already compiled in this process."""
    from edge_fer.cache import compiled_on_disk, kernel_cache_folder, numba_cache_dir

    if scan_upright.signatures:  # compiled (or loaded) in this process already
        return None
    where = kernel_cache_folder()
    if where is None:  # nothing kept: every process compiles them again
        folder = numba_cache_dir()
        why = f"{folder} cannot be written" if folder else "there is no home folder for a cache"
        return (
            f"compiling the detector's kernels (a few seconds, on every run: {why}; set "
            "EDGE_FER_CACHE to a writable folder to keep them)"
        )
    if compiled_on_disk(scan_upright):
        return None
    return (
        "compiling the detector's kernels (once after an install: a few seconds; kept in "
        f"{where} for next time)"
    )
