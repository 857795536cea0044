"""Bounded streaming statistics of per-frame timings: count, mean, max and percentiles.

    st = StreamingStats()
    for ms in latencies: st.add(ms)
    st.summary()    # {"n", "mean", "p50", "p90", "p99", "max"} as `numpy.percentile` would give

A run that lasts weeks cannot keep a list of every frame's time (0.37 KB a frame over the
pipeline's eight series, as measured in docs/runtime.md). `StreamingStats` keeps a fixed-size histogram instead: bins spaced by
the ratio GAMMA = 1.02 from LOW = 0.001 ms (1 us) to HIGH = 1e7 ms (2.8 hours), 1165 counters
(9 KB), whatever the number of values. n, mean, min and max are exact.

Error bound of a percentile: it is computed as numpy's default ("linear") method does, by
interpolating between the two order statistics around rank q (n - 1), but with each order
statistic replaced by the geometric middle of its bin, clamped to [min, max]. A value in the
bin [a, a x GAMMA) is then off by at most a factor sqrt(GAMMA), and so is any interpolation of
two such values: the result is within `REL_ERROR` (0.995%) of `numpy.percentile`, relatively.
Values under LOW share one bin and are off by at most LOW / 2 (0.5 us) absolutely; so in all,
|estimate - numpy.percentile| <= REL_ERROR x numpy.percentile + ABS_ERROR. Values over HIGH share
the top bin (max stays exact). The summary rounds to 0.001 ms on top of that.
"""

from __future__ import annotations

import math
from array import array

import numpy as np

GAMMA = 1.02
LOW = 1e-3  # ms
HIGH = 1e7  # ms
REL_ERROR = math.sqrt(GAMMA) - 1.0  # 0.00995: the relative error bound of a percentile
ABS_ERROR = LOW / 2  # the absolute part of the bound (values under LOW)
_LOG_GAMMA = math.log(GAMMA)
NBINS = math.ceil(math.log(HIGH / LOW) / _LOG_GAMMA) + 2  # + under LOW, + over HIGH
QUANTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))


def _bin(v: float) -> int:
    if v < LOW:
        return 0
    return min(NBINS - 1, 1 + int(math.log(v / LOW) / _LOG_GAMMA))


def _bin_value(i: np.ndarray) -> np.ndarray:
    """The representative of bins i: the geometric middle (bin 0: LOW / 2, so within LOW)."""
    return np.where(i == 0, LOW / 2, LOW * GAMMA ** (np.maximum(i, 1) - 0.5))


class StreamingStats:
    """Count, mean, min, max and percentiles of a stream of non-negative values (ms), in
    constant memory; see the module's doc for the error bound."""

    __slots__ = ("_counts", "max", "min", "n", "total")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self._counts = array("q", bytes(8 * NBINS))

    def add(self, v: float) -> None:
        v = float(v)
        if not math.isfinite(v):
            return  # a clock never gives one; JSON could not hold it either
        v = max(v, 0.0)
        self.n += 1
        self.total += v
        self.min = min(self.min, v)
        self.max = max(self.max, v)
        self._counts[_bin(v)] += 1

    def percentile(self, q: float) -> float | None:
        """numpy.percentile(values, q) within REL_ERROR x it + ABS_ERROR; None when empty."""
        if not self.n:
            return None
        counts = np.frombuffer(self._counts, np.int64)
        cum = np.cumsum(counts)
        h = (q / 100.0) * (self.n - 1)  # numpy's "linear" method: rank h, 0-based
        lo, hi = math.floor(h), math.ceil(h)
        # the bins holding the order statistics of ranks lo and hi
        bins = np.searchsorted(cum, np.array([lo, hi]), side="right")
        v = np.clip(_bin_value(bins), self.min, self.max)
        return float(v[0] + (h - lo) * (v[1] - v[0]))

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def summary(self, digits: int = 3) -> dict:
        """{"n", "mean", "p50", "p90", "p99", "max"}; None for each value when empty."""
        d: dict = {"n": self.n}
        if not self.n:
            d.update({"mean": None, **{k: None for k, _ in QUANTILES}, "max": None})
            return d
        d["mean"] = round(self.total / self.n, digits)
        for k, q in QUANTILES:
            d[k] = round(float(self.percentile(q)), digits)  # type: ignore[arg-type]
        d["max"] = round(self.max, digits)
        return d

    def nbytes(self) -> int:
        """The memory its counters take (constant)."""
        return self._counts.itemsize * len(self._counts)
