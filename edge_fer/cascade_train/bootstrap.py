"""Bootstrapping: mine negatives that the cascade learned so far still accepts.

Windows are drawn at random from the negative images (face-free backgrounds, and annotated
images away from every annotated face) and kept only when they pass the whole cascade; the
fraction kept estimates the cascade's false-positive rate per window. Sizes are drawn half the
time from the distribution of a multi-scale scan (windows of size s are ~1/s^2 as many, so small
windows dominate false positives per image) and half the time log-uniformly (so large windows
are seen too). Positions are those a scan can visit (the window stays inside the image), and a
random half of the windows are mirrored. Each lane takes `burst` runs in a row from one image
before drawing the next: windows spread at random over hundreds of megabytes of pixels make
pixel tests trips to main memory (measured with facefinder: 1.3 us per window with a new image
every 64 windows, 0.38 us with bursts of 16k windows). The trainer sizes the burst so that a
stage still visits every image about twice. Within an image, each draw of a size and a row
yields a run of RUN windows along the row at the scan's stride (s/10, from a random column,
wrapping around), and batches of runs are evaluated tree by tree (learner.run_batch).

The work is split into a fixed number of lanes, each with its own xorshift64* generator and
quota, so the result depends on the seed only, not on the number of threads; the generator
states are saved in the checkpoint and a resumed run draws the same windows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numba import prange

from edge_fer.cache import njit_cached
from edge_fer.cascade_train.learner import run_batch
from edge_fer.cascade_train.samples import Windows

NLANES = 16
MAX_BURST = 16384  # most windows drawn from an image before moving to the next
RUN = 16  # windows drawn along a row at the scan stride for one size/row draw
RUNS_PER_BATCH = 16  # runs evaluated together, tree by tree
U64 = np.uint64
# mining runs in kernel calls of about CHUNK_S seconds (a signal is handled between them); the
# first call is short, later ones are sized from the speed measured
CHUNK_S = 0.2
FIRST_CHUNK = 4 * RUNS_PER_BATCH  # runs per lane
MAX_CHUNK = 1 << 40


@njit_cached(nogil=True, inline="always")
def _next(state, lane):
    x = state[lane]
    x ^= x >> U64(12)
    x ^= x << U64(25)
    x ^= x >> U64(27)
    state[lane] = x
    return x * U64(2685821657736338717)


@njit_cached(nogil=True, inline="always")
def _uniform(state, lane):
    return np.float64(_next(state, lane) >> U64(11)) * (1.0 / 9007199254740992.0)


@njit_cached(nogil=True, inline="always")
def _below(state, lane, n):
    """Uniform integer in [0, n) for 0 < n < 2^32 (multiply-shift, no division)."""
    return np.int64(((_next(state, lane) >> U64(32)) * U64(n)) >> U64(32))


@njit_cached(parallel=True, nogil=True)
def mine(
    pix,
    off,
    H,
    W,
    neg_img,
    neg_hi,
    ex_start,
    ex_box,
    smin,
    scan_share,
    state,
    quota,
    max_draws,
    burst,
    tdepth,
    codes,
    leaves,
    thr,
    ntrees,
    out_r,
    out_c,
    out_s,
    out_img,
    out_sgn,
    out_score,
    out_count,
    out_draws,
    out_tries,
    out_j,
    chunk,
):
    """Each lane draws windows until it has `quota` that pass the cascade or `max_draws` draws.

    neg_img: store indices of negative images, neg_hi their largest window size (>= smin);
    ex_box[ex_start[i]:ex_start[i+1]] are the (r0, c0, r1, c1) regions a window of image i
    must not intersect (annotated faces). Outputs are (NLANES, quota) arrays; out_count and
    out_draws per lane (draws: windows evaluated, i.e. not counting those rejected for
    touching a face). Windows are drawn RUNS_PER_BATCH runs at a time and the batch is
    evaluated tree by tree (learner.run_batch).

    Resumable: a call continues each lane from out_count, out_draws, out_tries (runs drawn)
    and out_j (the image of its burst) and returns after about `chunk` more runs per lane (at
    a batch boundary, where the loop also checks its limits), so calls of any size draw the
    same windows as one call that runs to the end (`mine_negatives` chunks it so that a
    signal is handled between calls, not only at the end of a stage's mining).
    """
    nimg = neg_img.shape[0]
    nlanes = state.shape[0]
    a = 1.0 / (np.float64(smin) * smin)
    lsmin = np.log(np.float64(smin))
    nb = RUN * RUNS_PER_BATCH
    for lane in prange(nlanes):
        br = np.empty(nb, np.int32)
        bc = np.empty(nb, np.int32)
        bs = np.empty(nb, np.int32)
        bk = np.empty(nb, np.int32)
        bg = np.empty(nb, np.int32)
        act = np.empty(nb, np.int64)
        bsc = np.empty(nb, np.float32)
        btr = np.empty(nb, np.int32)
        n = out_count[lane]
        draws = out_draws[lane]
        tries = out_tries[lane]
        j = out_j[lane]
        stop = tries + chunk
        while n < quota and draws < max_draws and tries < 4 * max_draws + 1000 and tries < stop:
            m = 0
            for _ in range(RUNS_PER_BATCH):
                # `burst` runs in a row from one image: its pixels stay in cache
                if tries % burst == 0:
                    j = _below(state, lane, nimg)
                tries += 1
                k = neg_img[j]
                h = H[k]
                w = W[k]
                hi = neg_hi[j]
                if _uniform(state, lane) < scan_share:
                    # a scan has ~(h-s)(w-s)/s^3 windows per unit of size s: draw s from 1/s^3
                    # by inversion, then accept with probability (h-s)(w-s) / (h-smin)(w-smin)
                    b = 1.0 / (np.float64(hi) * hi)
                    full = np.float64(h - smin) * (w - smin)
                    while True:
                        s = int(1.0 / np.sqrt(a - _uniform(state, lane) * (a - b)))
                        s = max(min(s, hi), smin)
                        if _uniform(state, lane) * full <= np.float64(h - s) * (w - s):
                            break
                else:
                    ls = lsmin + _uniform(state, lane) * (np.log(np.float64(hi)) - lsmin)
                    s = max(min(int(np.exp(ls)), hi), smin)
                # centres a scan can use: s/2 + 1 <= r <= h - s/2 - 1; a run of RUN windows
                # along the row at the scan's stride (wrapping around), like a scan
                half = s // 2 + 1
                r = half + _below(state, lane, h - 2 * half)
                ncol = w - 2 * half
                step = max(1, s // 10)
                cpos = _below(state, lane, ncol)
                sgn = 1 if _next(state, lane) >> U64(63) else -1
                r0 = r - s * 0.5
                r1 = r + s * 0.5
                for _q in range(RUN):
                    cpos += step
                    if cpos >= ncol:
                        cpos -= ncol
                    c = half + cpos
                    # keep off annotated faces
                    clash = False
                    c0 = c - s * 0.5
                    c1 = c + s * 0.5
                    for e in range(ex_start[j], ex_start[j + 1]):
                        if (
                            r0 < ex_box[e, 2]
                            and ex_box[e, 0] < r1
                            and c0 < ex_box[e, 3]
                            and ex_box[e, 1] < c1
                        ):
                            clash = True
                            break
                    if not clash:
                        br[m] = r
                        bc[m] = c
                        bs[m] = s
                        bk[m] = k
                        bg[m] = sgn
                        act[m] = m
                        bsc[m] = 0.0
                        m += 1
            draws += m
            na = run_batch(
                pix,
                off,
                H,
                W,
                br,
                bc,
                bs,
                bk,
                bg,
                act,
                m,
                bsc,
                btr,
                tdepth,
                codes,
                leaves,
                thr,
                ntrees,
            )
            for q in range(na):
                if n == quota:
                    break
                i = act[q]
                out_r[lane, n] = br[i]
                out_c[lane, n] = bc[i]
                out_s[lane, n] = bs[i]
                out_img[lane, n] = bk[i]
                out_sgn[lane, n] = bg[i]
                out_score[lane, n] = bsc[i]
                n += 1
        out_count[lane] = n
        out_draws[lane] = draws
        out_tries[lane] = tries
        out_j[lane] = j


@dataclass
class NegativeSource:
    """Images to mine negatives from, with the regions (faces) each must stay clear of."""

    img: np.ndarray  # int32 store indices
    ex_start: np.ndarray  # int64 (n + 1,)
    ex_box: np.ndarray  # float64 (m, 4) r0 c0 r1 c1

    @staticmethod
    def build(
        background: list[int],
        annotated: list[int],
        boxes: list[list[tuple[float, float, float]]],
        annotated_share: float,
        margin: float = 1.25,
    ) -> NegativeSource:
        """Backgrounds and annotated images; `annotated_share` of the draws go to annotated
        images (by repeating entries of the image list), faces are kept clear with their box
        enlarged by `margin`."""
        imgs: list[int] = []
        regions: list[list[tuple[float, float, float, float]]] = []
        bg = list(background)
        an = list(annotated)
        reps_bg, reps_an = 1, 1
        if bg and an and 0.0 < annotated_share < 1.0:
            # integer repetitions approximating the share of draws
            want = annotated_share / (1.0 - annotated_share) * len(bg) / len(an)
            if want >= 1:
                reps_an = round(want)
            else:
                reps_bg = round(1.0 / max(want, 1e-9))
        elif annotated_share <= 0.0 and bg:
            an = []
        elif annotated_share >= 1.0 and an:
            bg = []
        for _ in range(reps_bg):
            for k in bg:
                imgs.append(k)
                regions.append([])
        for _ in range(reps_an):
            for k, bx in zip(an, boxes):
                imgs.append(k)
                regions.append(
                    [
                        (
                            r - margin * s / 2,
                            c - margin * s / 2,
                            r + margin * s / 2,
                            c + margin * s / 2,
                        )
                        for r, c, s in bx
                    ]
                )
        start = np.zeros(len(imgs) + 1, np.int64)
        start[1:] = np.cumsum([len(x) for x in regions])
        flat = [b for x in regions for b in x]
        ex = np.array(flat, np.float64).reshape(-1, 4)
        return NegativeSource(np.array(imgs, np.int32), start, ex)

    def __len__(self) -> int:
        return int(self.img.shape[0])


def burst_for(expected_draws: float, nimages: int) -> int:
    """Runs (of RUN windows) per image visit so that `expected_draws` windows still visit
    every image about twice; at most MAX_BURST windows."""
    runs = expected_draws / (2 * max(nimages, 1) * RUN)
    return int(min(MAX_BURST // RUN, max(1, runs)))


def seed_lanes(rng: np.random.Generator) -> np.ndarray:
    s = rng.integers(1, 2**63 - 1, size=NLANES, dtype=np.int64).astype(np.uint64)
    return s


def mine_negatives(
    store_arrays,
    source: NegativeSource,
    cascade_arrays,
    state: np.ndarray,
    count: int,
    smin: int,
    smax: int,
    max_draws: int,
    scan_share: float = 0.5,
    burst: int = 4,
    chunk: int = 0,
) -> tuple[Windows, np.ndarray, int]:
    """Up to `count` windows that pass the cascade; returns (windows, their scores, draws).

    `state` (uint64 per lane) is advanced once mining ends (an interrupt leaves it as it was).
    The kernel runs in calls of `chunk` runs per lane (0: sized to take about CHUNK_S each):
    a stage's mining can take an hour, and Python runs a signal handler (Ctrl-C, SIGTERM)
    only between calls. The windows do not depend on the chunk size.
    """
    pix, off, H, W = store_arrays
    tdepth, codes, leaves, thr, ntrees = cascade_arrays
    quota = max(1, -(-count // NLANES))
    per_lane_draws = max(1, -(-max_draws // NLANES))
    shape = (NLANES, quota)
    o_r, o_c, o_s, o_i, o_g = (np.zeros(shape, np.int32) for _ in range(5))  # row col size img sgn
    o_sc = np.zeros(shape, np.float32)
    cnt, drw = np.zeros(NLANES, np.int64), np.zeros(NLANES, np.int64)
    tries, burst_img = np.zeros(NLANES, np.int64), np.zeros(NLANES, np.int64)
    hi = np.minimum(np.minimum(H[source.img], W[source.img]).astype(np.int64) - 3, int(smax))
    if len(source) == 0 or hi.min() < smin:
        raise ValueError("every negative image must take a window of the smallest size")
    lanes = state.copy()
    runs = int(chunk) if chunk > 0 else FIRST_CHUNK
    while True:
        # the kernel's own loop condition: lanes that still draw
        more = (cnt < quota) & (drw < per_lane_draws) & (tries < 4 * per_lane_draws + 1000)
        if not more.any():
            break
        t0 = time.perf_counter()
        mine(
            pix,
            off,
            H,
            W,
            source.img,
            hi,
            source.ex_start,
            source.ex_box,
            int(smin),
            float(scan_share),
            lanes,
            quota,
            per_lane_draws,
            int(max(1, burst)),
            tdepth,
            codes,
            leaves,
            thr,
            ntrees,
            o_r,
            o_c,
            o_s,
            o_i,
            o_g,
            o_sc,
            cnt,
            drw,
            tries,
            burst_img,
            runs,
        )
        if chunk <= 0:  # aim at CHUNK_S per call (a load or a cascade change the speed)
            took = time.perf_counter() - t0
            runs = int(
                min(MAX_CHUNK, max(RUNS_PER_BATCH, runs * min(4.0, CHUNK_S / max(took, 1e-4))))
            )
    state[:] = lanes
    parts, scores = [], []
    for lane in range(NLANES):
        m = int(cnt[lane])
        parts.append(
            Windows(o_r[lane, :m], o_c[lane, :m], o_s[lane, :m], o_i[lane, :m], o_g[lane, :m])
        )
        scores.append(o_sc[lane, :m])
    win = Windows.concat(parts)
    sc = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    draws = int(drw.sum())
    if len(win) > count:  # quotas round up: trim, and scale the draws alike
        draws = max(1, round(draws * count / len(win)))
        win = win.take(np.arange(count))
        sc = sc[:count]
    return win, sc, draws
