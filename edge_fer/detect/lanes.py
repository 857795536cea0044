"""Run a kernel's lanes on several threads without ever waiting for an idle thread.

The kernels release the GIL (nogil), so plain Python threads run them in parallel. Lanes are
handed out one at a time from a shared counter and the calling thread works too; when the
counter runs dry it waits only for lanes a helper is still running. On a busy machine a helper
that never got scheduled costs nothing (an OpenMP-style barrier would wait for it, which we
measured at 8-16 ms per frame with another job on both cores).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
# a smaller pool replaced by a larger one is kept, never shut down: another thread (another
# detector, another stream) may hold it and still submit to it ("cannot schedule new futures
# after shutdown"); sizes only grow, so there are few, and their threads idle
_retired: list[ThreadPoolExecutor] = []


def _helpers(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _retired.append(_pool)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="edge-fer-detect")
            _pool_size = n
        return _pool


class _Job:
    def __init__(self, fn: Callable[[int], None], nlanes: int) -> None:
        self.fn = fn
        self.nlanes = nlanes
        self.next = itertools.count()  # next() on a count is atomic under the GIL
        self.done = 0
        self.error: BaseException | None = None
        self.cv = threading.Condition()

    def work(self) -> None:
        while True:
            lane = next(self.next)
            if lane >= self.nlanes:
                return
            try:
                self.fn(lane)
            except BaseException as exc:  # noqa: BLE001 - re-raised by wait() in the caller
                self.error = exc
            with self.cv:
                self.done += 1
                if self.done == self.nlanes:
                    self.cv.notify_all()

    def wait(self) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.done == self.nlanes)
        if self.error is not None:
            raise self.error


def run_lanes(fn: Callable[[int], None], nlanes: int, threads: int) -> None:
    """Call fn(lane) for every lane in range(nlanes) on up to `threads` threads."""
    if threads <= 1 or nlanes <= 1:
        for lane in range(nlanes):
            fn(lane)
        return
    job = _Job(fn, nlanes)
    pool = _helpers(threads - 1)
    for _ in range(threads - 1):
        pool.submit(job.work)
    job.work()
    job.wait()
