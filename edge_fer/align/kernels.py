"""Compiled kernels of the eye localiser (numba): tree inference and tree learning.

A point (r, c) on a patch is refined by regression trees of pixel comparisons: an internal
node holds two offsets (r1, c1, r2, c2) in units of scale/256 around the current point; the
test is pixel(p + o1) <= pixel(p + o2) (pico's test); a leaf holds a shift (dr, dc) in units
of the scale. Every tree moves the point, and the next tree's offsets are read around the moved
point. `flip` reads the patch mirrored left-right (the right eye is found as a left eye on the
mirrored face, so one model serves both eyes).
"""

from __future__ import annotations

import numpy as np

from edge_fer.cache import njit_cached


@njit_cached(nogil=True)
def _pixel(patch, r, c, flip):
    p = patch.shape[0]
    ri = int(np.floor(r + 0.5))
    ci = int(np.floor(c + 0.5))
    if ri < 0:
        ri = 0
    elif ri > p - 1:
        ri = p - 1
    if ci < 0:
        ci = 0
    elif ci > p - 1:
        ci = p - 1
    if flip:
        ci = p - 1 - ci
    return patch[ri, ci]


@njit_cached(nogil=True)
def _leaf_of(patch, r, c, s, flip, tests, t, depth):
    """Index of the leaf tree `t` sends the point (r, c) at scale s to."""
    k = 0
    u = s / 256.0
    for _ in range(depth):
        a = _pixel(patch, r + tests[t, k, 0] * u, c + tests[t, k, 1] * u, flip)
        b = _pixel(patch, r + tests[t, k, 2] * u, c + tests[t, k, 3] * u, flip)
        k = 2 * k + 1 + (1 if a <= b else 0)
    return k - (2**depth - 1)


@njit_cached(nogil=True)
def run_cascade(patches, idx, flip, r, c, f, tests, leaves, stage_of, scales, depth, first, last):
    """Move points i (patch idx[i], start r[i], c[i], scale factor f[i]) through trees
    first..last-1; r and c are updated in place."""
    for i in range(r.shape[0]):
        p = patches[idx[i]]
        ri, ci = r[i], c[i]
        for t in range(first, last):
            s = scales[stage_of[t]] * f[i]
            lf = _leaf_of(p, ri, ci, s, flip[i], tests, t, depth)
            ri += leaves[t, lf, 0] * s
            ci += leaves[t, lf, 1] * s
        r[i], c[i] = ri, ci


@njit_cached(nogil=True)
def locate(patch, flip, r0, c0, starts, tests, leaves, stage_of, scales, depth, out):
    """Every start (dr, dc in patch pixels, scale factor) from (r0, c0) through all trees;
    the end points go to out[k, 0:2]."""
    for k in range(starts.shape[0]):
        ri, ci, f = r0 + starts[k, 0], c0 + starts[k, 1], starts[k, 2]
        for t in range(tests.shape[0]):
            s = scales[stage_of[t]] * f
            lf = _leaf_of(patch, ri, ci, s, flip, tests, t, depth)
            ri += leaves[t, lf, 0] * s
            ci += leaves[t, lf, 1] * s
        out[k, 0] = ri
        out[k, 1] = ci


@njit_cached(nogil=True)
def grow_tree(patches, idx, flip, r, c, f, tr, tc, scale, cand, depth, tests_out, leaves_out):
    """Fit one tree to targets (tr, tc) (shift / (scale * f)) by least squares.

    cand[node, k] are the candidate tests of each internal node (breadth-first numbering);
    the chosen ones go to tests_out[node], leaf means to leaves_out[leaf]."""
    n = r.shape[0]
    ncand = cand.shape[1]
    node = np.zeros(n, np.int64)  # breadth-first index of the node each sample sits in
    bits = np.empty(n, np.uint8)
    for level in range(depth):
        first = 2**level - 1
        width = 2**level
        # stats[j, k, b, 0:3]: count, sum tr, sum tc of samples of node first+j going to b
        stats = np.zeros((width, ncand, 2, 3))
        for i in range(n):
            p = patches[idx[i]]
            s = scale * f[i] / 256.0
            j = node[i] - first
            for k in range(ncand):
                t = cand[node[i], k]
                a = _pixel(p, r[i] + t[0] * s, c[i] + t[1] * s, flip[i])
                b = _pixel(p, r[i] + t[2] * s, c[i] + t[3] * s, flip[i])
                bb = 1 if a <= b else 0
                stats[j, k, bb, 0] += 1.0
                stats[j, k, bb, 1] += tr[i]
                stats[j, k, bb, 2] += tc[i]
        for j in range(width):
            best, bestk = -1.0, 0
            for k in range(ncand):
                gain = 0.0
                for bb in range(2):
                    m = stats[j, k, bb, 0]
                    if m > 0:
                        gain += (stats[j, k, bb, 1] ** 2 + stats[j, k, bb, 2] ** 2) / m
                if gain > best:
                    best, bestk = gain, k
            tests_out[first + j] = cand[first + j, bestk]
        for i in range(n):
            p = patches[idx[i]]
            s = scale * f[i] / 256.0
            t = tests_out[node[i]]
            a = _pixel(p, r[i] + t[0] * s, c[i] + t[1] * s, flip[i])
            b = _pixel(p, r[i] + t[2] * s, c[i] + t[3] * s, flip[i])
            bits[i] = 1 if a <= b else 0
            node[i] = 2 * node[i] + 1 + bits[i]
    nleaf = 2**depth
    sums = np.zeros((nleaf, 3))
    for i in range(n):
        lf = node[i] - (nleaf - 1)
        sums[lf, 0] += 1.0
        sums[lf, 1] += tr[i]
        sums[lf, 2] += tc[i]
    for lf in range(nleaf):
        if sums[lf, 0] > 0:
            leaves_out[lf, 0] = sums[lf, 1] / sums[lf, 0]
            leaves_out[lf, 1] = sums[lf, 2] / sums[lf, 0]
        else:
            leaves_out[lf, 0] = 0.0
            leaves_out[lf, 1] = 0.0
