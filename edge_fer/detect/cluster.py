"""Grouping overlapping windows into detections.

`cluster` is the reference `cluster_detections`: windows are joined when their
intersection-over-union exceeds `iou` (0.3 in the reference); each connected component becomes
its mean row, col, size and summed score. All arithmetic is float32 step by step, and components
come out in the order of their first window, so the output matches the reference bit for bit.

`group_greedy` does not chain: the best-scoring window left takes every remaining window that
overlaps it by more than `iou`, and that group becomes one detection (mean box, summed score).
Chains let dense windows join a face to its neighbours (a forehead box, a shoulder), which
misplaces the box; on held-out WebFaces photos at 320 px the low-resolution cascade found 0.905
of the faces at 0.5 false positives per image grouped this way, against 0.857 chained
(benchmarks/bench_grouping.py).
"""

from __future__ import annotations

import numpy as np

from edge_fer.cache import njit_cached


@njit_cached(nogil=True)
def _overlap(r1, c1, s1, r2, c2, s2):
    two = np.float32(2.0)
    zero = np.float32(0.0)
    h1 = s1 / two
    h2 = s2 / two
    overr = max(zero, min(r1 + h1, r2 + h2) - max(r1 - h1, r2 - h2))
    overc = max(zero, min(c1 + h1, c2 + h2) - max(c1 - h1, c2 - h2))
    inter = overr * overc
    union = s1 * s1 + s2 * s2 - inter
    return inter / union


@njit_cached(nogil=True)
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit_cached(nogil=True)
def cluster_kernel(dets, iou):
    n = dets.shape[0]
    parent = np.arange(n)
    for i in range(n):
        ri, ci, si = dets[i, 0], dets[i, 1], dets[i, 2]
        for j in range(i + 1, n):
            if _overlap(ri, ci, si, dets[j, 0], dets[j, 1], dets[j, 2]) > iou:
                a = _find(parent, i)
                b = _find(parent, j)
                if a != b:
                    # keep the smaller index as root: labels then follow first appearance
                    if a < b:
                        parent[b] = a
                    else:
                        parent[a] = b
    label = np.full(n, -1, np.int64)
    ncc = 0
    for i in range(n):
        root = _find(parent, i)
        if label[root] < 0:
            label[root] = ncc
            ncc += 1
        label[i] = label[root]
    sums = np.zeros((ncc, 4), np.float32)
    counts = np.zeros(ncc, np.int64)
    for i in range(n):
        k = label[i]
        for m in range(4):
            sums[k, m] += dets[i, m]
        counts[k] += 1
    out = np.empty((ncc, 4), np.float32)
    for k in range(ncc):
        cnt = np.float32(counts[k])
        out[k, 0] = sums[k, 0] / cnt
        out[k, 1] = sums[k, 1] / cnt
        out[k, 2] = sums[k, 2] / cnt
        out[k, 3] = sums[k, 3]  # summed confidence, as the reference reports it
    return out


def cluster(dets: np.ndarray, iou: float = 0.3) -> np.ndarray:
    """Cluster (n, 4) [row, col, size, score] windows; returns (m, 4) float32."""
    d = np.ascontiguousarray(dets, dtype=np.float32).reshape(-1, 4)
    return cluster_kernel(d, np.float32(iou))


@njit_cached(nogil=True)
def greedy_kernel(dets, iou):
    n = dets.shape[0]
    order = np.argsort(-dets[:, 3], kind="mergesort")  # stable: ties keep their input order
    used = np.zeros(n, np.bool_)
    out = np.empty((n, 4), np.float32)
    m = 0
    for a in range(n):
        i = order[a]
        if used[i]:
            continue
        ri, ci, si = dets[i, 0], dets[i, 1], dets[i, 2]
        acc = np.zeros(4, np.float32)
        cnt = 0
        for b in range(a, n):
            j = order[b]
            if used[j] or (
                j != i and _overlap(ri, ci, si, dets[j, 0], dets[j, 1], dets[j, 2]) <= iou
            ):
                continue
            used[j] = True
            for k in range(4):
                acc[k] += dets[j, k]
            cnt += 1
        c = np.float32(cnt)
        out[m, 0] = acc[0] / c
        out[m, 1] = acc[1] / c
        out[m, 2] = acc[2] / c
        out[m, 3] = acc[3]
        m += 1
    return out[:m]


def group_greedy(dets: np.ndarray, iou: float = 0.3) -> np.ndarray:
    """Group (n, 4) [row, col, size, score] windows around the best ones (no chaining);
    returns (m, 4) float32, best group first."""
    d = np.ascontiguousarray(dets, dtype=np.float32).reshape(-1, 4)
    return greedy_kernel(d, np.float32(iou))


GROUPINGS = {"chain": cluster, "greedy": group_greedy}
