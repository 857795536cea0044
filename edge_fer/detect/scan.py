"""Compiled scanning kernels (numba). No Python runs per window.

Integer semantics follow the reference runtime: node offsets are in units of size/256, the
pixel at `(r*256 + code*s) / 256` with C division. For the upright cascade the scan grid keeps
that numerator positive, so we precompute `floor(code*s/256)` per size once per frame shape and
a node costs two loads and a compare. The rotated cascade clamps to the frame (its reach is
~0.707*s, and the reference's bounds check is written for that), so no read can leave the frame
whatever the codes are.

Work items are (scale, row) pairs; each writes accepted windows into its own slice of a
preallocated buffer (column index + score), so threads never share output and the gather keeps
the reference's scale-row-column order.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# cos/sin(2*pi*k/32) * 256 as the reference tabulates them: the angle is quantised to 1/32 turn.
QCOS = np.array(
    [256, 251, 236, 212, 181, 142, 97, 49, 0, -49, -97, -142, -181, -212, -236, -251,
     -256, -251, -236, -212, -181, -142, -97, -49, 0, 49, 97, 142, 181, 212, 236, 251, 256],
    dtype=np.int64,
)  # fmt: skip
QSIN = np.array(
    [0, 49, 97, 142, 181, 212, 236, 251, 256, 251, 236, 212, 181, 142, 97, 49,
     0, -49, -97, -142, -181, -212, -236, -251, -256, -251, -236, -212, -181, -142, -97, -49, 0],
    dtype=np.int64,
)  # fmt: skip
ROT_REACH = 46341  # ceil(sqrt(2)/2 * 65536): the rotated window's half-diagonal, 16.16 fixed point


def angle_index(angle: float) -> int:
    """Table row for an angle in turns (0..1), truncating like the reference's (int)(32*a)."""
    return int(np.float32(angle) * np.float32(32))


def upright_offsets(codes: np.ndarray, sizes_i: np.ndarray, ldim: int) -> np.ndarray:
    """int32 (nscales, ntrees*nnodes*2): flat pixel offsets of each node's two pixels."""
    c = codes.reshape(-1, 4).astype(np.int64)
    s = sizes_i.astype(np.int64)[:, None]
    # >> is floor division; equal to C's truncation here because r*256 - 128*s >= 0 on the grid
    p1 = ((c[None, :, 0] * s) >> 8) * ldim + ((c[None, :, 1] * s) >> 8)
    p2 = ((c[None, :, 2] * s) >> 8) * ldim + ((c[None, :, 3] * s) >> 8)
    out = np.empty((s.shape[0], c.shape[0] * 2), dtype=np.int32)
    out[:, 0::2] = p1
    out[:, 1::2] = p2
    return out


def rotated_offsets(codes: np.ndarray, sizes_i: np.ndarray, angle: float) -> np.ndarray:
    """int32 (nscales, ntrees*nnodes*4): rotated (dr1, dc1, dr2, dc2) per node, floored."""
    k = angle_index(angle)
    c = codes.reshape(-1, 4).astype(np.int64)
    s = sizes_i.astype(np.int64)[:, None]
    qcos, qsin = s * QCOS[k], s * QSIN[k]
    out = np.empty((s.shape[0], c.shape[0] * 4), dtype=np.int32)
    out[:, 0::4] = (qcos * c[None, :, 0] - qsin * c[None, :, 1]) >> 16
    out[:, 1::4] = (qsin * c[None, :, 0] + qcos * c[None, :, 1]) >> 16
    out[:, 2::4] = (qcos * c[None, :, 2] - qsin * c[None, :, 3]) >> 16
    out[:, 3::4] = (qsin * c[None, :, 2] + qcos * c[None, :, 3]) >> 16
    return out


@njit(cache=True, parallel=True, nogil=True)
def scan_upright(
    pix, nrows, ncols, tdepth, ntrees, leaves, thr, offs, scale0,
    item_scale, item_row, item_buf, scale_s, col_start, cols_i,
    out_col, out_score, out_count, nlanes,
):  # fmt: skip
    nleaves = 1 << tdepth
    stride = 2 * (nleaves - 1)
    nitems = item_scale.shape[0]
    for lane in prange(nlanes):
        # lanes take every nlanes-th item: neighbouring rows cost about the same, so this
        # balances threads far better than contiguous chunks (small sizes have more rows)
        for it in range(lane, nitems, nlanes):
            k = item_scale[it]
            s = scale_s[k]
            r = item_row[it]
            buf = item_buf[it]
            n = 0
            # the reference rejects windows whose reach (s/2) leaves the frame; we also reject
            # 2r < s, which the grid never produces, so the floored offsets are exact and safe
            if 2 * r >= s and 2 * r + s < 2 * nrows:
                o = offs[k - scale0]
                c0, c1 = col_start[k], col_start[k + 1]
                rowbase = r * ncols
                for j in range(c1 - c0):
                    c = cols_i[c0 + j]
                    if 2 * c < s or 2 * c + s >= 2 * ncols:
                        continue
                    base = rowbase + c
                    score = np.float32(0.0)
                    ok = True
                    tb = 0
                    lb = 0
                    for t in range(ntrees):
                        idx = 1
                        for _ in range(tdepth):
                            p = tb + 2 * idx - 2
                            idx = 2 * idx + (pix[base + o[p]] <= pix[base + o[p + 1]])
                        score += leaves[lb + idx - nleaves]
                        if score <= thr[t]:
                            ok = False
                            break
                        tb += stride
                        lb += nleaves
                    if ok:
                        out_col[buf + n] = j
                        out_score[buf + n] = score - thr[ntrees - 1]
                        n += 1
            out_count[it] = n


@njit(cache=True, parallel=True, nogil=True)
def scan_rotated(
    pix, nrows, ncols, tdepth, ntrees, leaves, thr, offs, scale0,
    item_scale, item_row, item_buf, scale_s, col_start, cols_i,
    out_col, out_score, out_count, nlanes,
):  # fmt: skip
    nleaves = 1 << tdepth
    stride = 4 * (nleaves - 1)
    nitems = item_scale.shape[0]
    rmax = nrows - 1
    cmax = ncols - 1
    for lane in prange(nlanes):
        for it in range(lane, nitems, nlanes):
            k = item_scale[it]
            s = scale_s[k]
            r = item_row[it]
            buf = item_buf[it]
            n = 0
            reach = ROT_REACH * s
            r16 = r * 65536
            if r16 + reach < 65536 * nrows and r16 - reach > -65536:
                o = offs[k - scale0]
                c0, c1 = col_start[k], col_start[k + 1]
                for j in range(c1 - c0):
                    c = cols_i[c0 + j]
                    c16 = c * 65536
                    if c16 + reach >= 65536 * ncols or c16 - reach <= -65536:
                        continue
                    score = np.float32(0.0)
                    ok = True
                    tb = 0
                    lb = 0
                    for t in range(ntrees):
                        idx = 1
                        for _ in range(tdepth):
                            p = tb + 4 * idx - 4
                            # clamping reproduces C's truncation toward zero for the one
                            # negative case the bounds check lets through, and bounds reads
                            r1 = min(max(r + o[p], 0), rmax)
                            c1_ = min(max(c + o[p + 1], 0), cmax)
                            r2 = min(max(r + o[p + 2], 0), rmax)
                            c2 = min(max(c + o[p + 3], 0), cmax)
                            idx = 2 * idx + (pix[r1 * ncols + c1_] <= pix[r2 * ncols + c2])
                        score += leaves[lb + idx - nleaves]
                        if score <= thr[t]:
                            ok = False
                            break
                        tb += stride
                        lb += nleaves
                    if ok:
                        out_col[buf + n] = j
                        out_score[buf + n] = score - thr[ntrees - 1]
                        n += 1
            out_count[it] = n


@njit(cache=True, nogil=True)
def gather(item_scale, item_rowpos, item_buf, out_count, out_col, out_score,
           sizes_f, rows_f, col_start, cols_f):  # fmt: skip
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
