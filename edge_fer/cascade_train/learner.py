"""Compiled kernels of the pico learner (numba), and the boosting of one tree and one stage.

Pixel tests follow the pico runtime exactly: node code (r1, c1, r2, c2) int8, window centre
(r, c) and size s (integers); pixel 1 is at row r + floor(r1*s/256), column c + sgn *
floor(c1*s/256) (sgn = -1 mirrors the window), clamped to the image; the test is 1 (go to the
right child, idx = 2*idx + 1) when pixel 1 <= pixel 2. For windows inside the frame this is the
very value the runtime computes, and scores are summed in float32 in tree order like the runtime,
so the stage thresholds chosen here hold bit for bit when the cascade is scanned.

Trees are grown level by level (GentleBoost with regression trees, Markus et al. 2013): every
node of a level draws `ntests` random codes, one pass over the samples accumulates, per node and
code, the weight of positives and of negatives sent right; the code with the least weighted
squared error of the +-1 targets wins (for +-1 targets a side with positive weight P and negative
weight N has error 4PN/(P+N)). Leaves are the weighted means of the targets. Work is split into a
fixed number of sample chunks summed in a fixed order, so results do not depend on the number of
threads.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from edge_fer.cache import njit_cached

NCHUNKS = 16  # fixed: makes the floating-point sums independent of the thread count
SKIP_THRESHOLD = np.float32(-1337.0)  # thresholds of trees inside a stage (never reject)


@njit_cached(nogil=True, inline="always")
def _bintest(pix, base, h, w, r, c, s, sgn, codes, a, b):
    # codes[a, b] is the node's (r1, c1, r2, c2); scalar indexing only: slicing a view out of
    # `codes` here would cost a reference-count update per pixel test
    r1 = r + ((np.int32(codes[a, b, 0]) * s) >> 8)
    c1 = c + sgn * ((np.int32(codes[a, b, 1]) * s) >> 8)
    r2 = r + ((np.int32(codes[a, b, 2]) * s) >> 8)
    c2 = c + sgn * ((np.int32(codes[a, b, 3]) * s) >> 8)
    r1 = min(max(r1, 0), h - 1)
    c1 = min(max(c1, 0), w - 1)
    r2 = min(max(r2, 0), h - 1)
    c2 = min(max(c2, 0), w - 1)
    return 1 if pix[base + r1 * w + c1] <= pix[base + r2 * w + c2] else 0


BATCH = 256  # windows evaluated together, tree by tree


@njit_cached(nogil=True)
def run_batch(
    pix, off, H, W, wr, wc, ws, wimg, wsgn, act, na, scores, ntr, tdepth, codes, leaves, thr, ntrees
):
    """Run the cascade on the windows act[:na] (indices into the window arrays), tree by tree
    over all surviving windows: the windows are independent, so the core overlaps their chains
    of dependent pixel loads (one window at a time runs ~6x slower). scores[i] must start at
    0; it ends as the running sum where window i was rejected (or its final score), ntr[i] as
    the number of trees it evaluated. Survivors are compacted into act[:m]; returns m."""
    nleaves = 1 << tdepth
    for t in range(ntrees):
        if na == 0:
            break
        th = thr[t]
        m = 0
        for q in range(na):
            i = act[q]
            k = wimg[i]
            base = off[k]
            h = H[k]
            w = W[k]
            r = wr[i]
            c = wc[i]
            s = ws[i]
            sg = wsgn[i]
            idx = 1
            for _ in range(tdepth):
                idx = 2 * idx + _bintest(pix, base, h, w, r, c, s, sg, codes, t, idx - 1)
            sc = scores[i] + leaves[t, idx - nleaves]
            scores[i] = sc
            ntr[i] = t + 1
            act[m] = i
            m += 1 if sc > th else 0  # branch-free compaction: survival is a coin flip
        na = m
    return na


@njit_cached(parallel=True, nogil=True)
def _eval_all(
    pix,
    off,
    H,
    W,
    wr,
    wc,
    ws,
    wimg,
    wsgn,
    tdepth,
    codes,
    leaves,
    thr,
    ntrees,
    out_pass,
    out_score,
    out_trees,
):
    n = wr.shape[0]
    nb = (n + BATCH - 1) // BATCH
    for b in prange(nb):
        lo = b * BATCH
        hi = min(n, lo + BATCH)
        act = np.empty(hi - lo, np.int64)
        for q in range(hi - lo):
            act[q] = lo + q
            out_score[lo + q] = 0.0
            out_trees[lo + q] = 0
            out_pass[lo + q] = False
        m = run_batch(
            pix,
            off,
            H,
            W,
            wr,
            wc,
            ws,
            wimg,
            wsgn,
            act,
            hi - lo,
            out_score,
            out_trees,
            tdepth,
            codes,
            leaves,
            thr,
            ntrees,
        )
        for q in range(m):
            out_pass[act[q]] = True


def eval_windows(
    pix, off, H, W, wr, wc, ws, wimg, wsgn, tdepth, codes, leaves, thr, ntrees, out_pass, out_score
):
    """Run the first `ntrees` trees on every window (early rejection as in the runtime);
    out_pass: accepted, out_score: the score (where rejected, the running sum there)."""
    ntr = np.empty(wr.shape[0], np.int32)
    _eval_all(
        pix,
        off,
        H,
        W,
        wr,
        wc,
        ws,
        wimg,
        wsgn,
        tdepth,
        codes,
        leaves,
        thr,
        ntrees,
        out_pass,
        out_score,
        ntr,
    )


def score_windows(store, win, tdepth, codes, leaves, thr, ntrees) -> tuple[np.ndarray, np.ndarray]:
    """`eval_windows` on `win` (samples.Windows into `store`): (accepted, score) per window."""
    ok = np.zeros(len(win), np.bool_)
    sc = np.zeros(len(win), np.float32)
    if len(win):
        windows = (*store.arrays(), win.r, win.c, win.s, win.img, win.sgn)
        eval_windows(*windows, tdepth, codes, leaves, thr, ntrees, ok, sc)
    return ok, sc


def count_trees(
    pix, off, H, W, wr, wc, ws, wimg, wsgn, tdepth, codes, leaves, thr, ntrees, out_trees
):
    """How many trees each window evaluates before it is rejected (the scan's cost model)."""
    ok = np.empty(wr.shape[0], np.bool_)
    sc = np.empty(wr.shape[0], np.float32)
    _eval_all(
        pix,
        off,
        H,
        W,
        wr,
        wc,
        ws,
        wimg,
        wsgn,
        tdepth,
        codes,
        leaves,
        thr,
        ntrees,
        ok,
        sc,
        out_trees,
    )


@njit_cached(parallel=True, nogil=True)
def level_stats(pix, off, H, W, wr, wc, ws, wimg, wsgn, ispos, wt, node, tests, out):
    """out[chunk, j, 0/1, k]: weight of positives / negatives in node j that test k sends right.

    tests: int8 (nnodes, ntests, 4). out must be zeroed, shape (NCHUNKS, nnodes, 2, ntests).
    The accumulation is branch-free: a test's outcome is a coin flip the CPU cannot predict.
    """
    n = wr.shape[0]
    ntests = tests.shape[1]
    nch = out.shape[0]
    for ch in prange(nch):
        lo = (n * ch) // nch
        hi = (n * (ch + 1)) // nch
        for i in range(lo, hi):
            wi = wt[i]
            if wi == 0.0:
                continue
            j = node[i]
            k = wimg[i]
            base = off[k]
            h = H[k]
            w = W[k]
            r = wr[i]
            c = wc[i]
            s = ws[i]
            sg = wsgn[i]
            cls = 0 if ispos[i] else 1
            for t in range(ntests):
                out[ch, j, cls, t] += wi * _bintest(pix, base, h, w, r, c, s, sg, tests, j, t)


@njit_cached(parallel=True, nogil=True)
def apply_level(pix, off, H, W, wr, wc, ws, wimg, wsgn, node, level_codes):
    """node[i] <- 2*node[i] + test(level_codes[0, node[i]]) for every window.

    level_codes: int8 (1, nnodes, 4)."""
    for i in prange(wr.shape[0]):
        k = wimg[i]
        j = node[i]
        node[i] = 2 * j + _bintest(
            pix, off[k], H[k], W[k], wr[i], wc[i], ws[i], wsgn[i], level_codes, 0, j
        )


def best_tests(stats: np.ndarray, wpos: np.ndarray, wneg: np.ndarray) -> np.ndarray:
    """Index of the test with the least weighted squared error for every node of a level."""
    s = stats.sum(axis=0)  # (nnodes, 2, ntests), fixed summation order
    p1, n1 = s[:, 0], s[:, 1]
    p0 = wpos[:, None] - p1
    n0 = wneg[:, None] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        e1 = np.where(p1 + n1 > 0, 4.0 * p1 * n1 / (p1 + n1), 0.0)
        e0 = np.where(p0 + n0 > 0, 4.0 * p0 * n0 / (p0 + n0), 0.0)
    err = np.clip(e0, 0, None) + np.clip(e1, 0, None)  # clip: rounding of p0 = wpos - p1
    return np.argmin(err, axis=1)


def grow_tree(
    pix,
    off,
    H,
    W,
    win,
    ispos: np.ndarray,
    wt: np.ndarray,
    tdepth: int,
    ntests: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One regression tree fitted to the +-1 targets under weights `wt`.

    Returns (codes int8 (2^d - 1, 4), leaves float32 (2^d,), leaf index of every window).
    """
    n = len(win)
    node = np.zeros(n, np.int32)
    codes = np.zeros(((1 << tdepth) - 1, 4), np.int8)
    wp = np.where(ispos, wt, 0.0)
    wn = np.where(ispos, 0.0, wt)
    args = (pix, off, H, W, win.r, win.c, win.s, win.img, win.sgn)
    for level in range(tdepth):
        nnodes = 1 << level
        tests = rng.integers(-128, 128, size=(nnodes, ntests, 4), dtype=np.int16).astype(np.int8)
        wpos = np.bincount(node, weights=wp, minlength=nnodes)
        wneg = np.bincount(node, weights=wn, minlength=nnodes)
        stats = np.zeros((NCHUNKS, nnodes, 2, ntests), np.float64)
        level_stats(*args, ispos, wt, node, tests, stats)
        best = best_tests(stats, wpos, wneg)
        level_codes = tests[np.arange(nnodes), best].copy()
        # a node without samples gets code 0 (the test of a pixel against itself: always 1),
        # as the reference learner does
        level_codes[(wpos + wneg) <= 0] = 0
        codes[nnodes - 1 : 2 * nnodes - 1] = level_codes
        apply_level(*args, node, level_codes[None])
    nleaves = 1 << tdepth
    lp = np.bincount(node, weights=wp, minlength=nleaves)
    ln = np.bincount(node, weights=wn, minlength=nleaves)
    tot = lp + ln
    with np.errstate(invalid="ignore", divide="ignore"):
        leaves = np.where(tot > 0, (lp - ln) / tot, 0.0).astype(np.float32)
    return codes, leaves, node


def boost_weights(ispos: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """GentleBoost weights exp(-y*o) / (count of the sample's class), summing to 1
    (the reference learner's weighting: the classes start balanced whatever their sizes)."""
    o = scores.astype(np.float64)
    npos = max(int(ispos.sum()), 1)
    nneg = max(int((~ispos).sum()), 1)
    a = np.where(ispos, -o, o)
    # subtracting the maximum cancels in the normalisation and rules out overflow
    w = np.exp(a - a.max()) / np.where(ispos, npos, nneg)
    return w / w.sum()


def stage_threshold(pos_scores: np.ndarray, min_tpr: float) -> np.float32:
    """The largest float32 threshold that keeps at least `min_tpr` of the positives
    (a window passes when score > threshold)."""
    n = pos_scores.shape[0]
    if n == 0:
        return np.float32(0.0)
    keep = min(n, max(1, int(np.ceil(min_tpr * n - 1e-9))))
    srt = np.sort(pos_scores.astype(np.float32))[::-1]
    return np.nextafter(srt[keep - 1], np.float32(-np.inf)).astype(np.float32)
