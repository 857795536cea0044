"""Run a kernel's lanes on several threads without ever waiting for an idle thread.

The kernels release the GIL (nogil), so plain Python threads run them in parallel. Lanes are
handed out one at a time from a shared counter and the calling thread works too; when the
counter runs dry it waits only for lanes a helper is still running. On a busy machine a helper
that never got scheduled costs nothing (an OpenMP-style barrier would wait for it, which we
measured at 8-16 ms per frame with another job on both cores).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable

# Helpers are daemon threads of our own, all started before any work is handed out, reading
# one queue. A ThreadPoolExecutor starts its (non-daemon) threads lazily, mid-scan: a Ctrl-C
# inside its Thread.start() left a started thread it never registered, which nothing wakes at
# exit, and the interpreter waited for it forever after "interrupted". A daemon helper holds
# no state worth finishing (the caller waits for its lanes), so exit never waits for one.
_work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_started = 0
_start_lock = threading.Lock()


def _helper_loop() -> None:
    while True:
        _work.get()()


def _ensure_helpers(n: int) -> None:
    """Have at least n helper threads running (they are only ever added: several detectors
    and streams share them)."""
    global _started
    if _started >= n:
        return
    with _start_lock:
        while _started < n:
            threading.Thread(target=_helper_loop, name="edge-fer-detect", daemon=True).start()
            _started += 1


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
    _ensure_helpers(threads - 1)
    job = _Job(fn, nlanes)
    for _ in range(threads - 1):
        _work.put(job.work)
    job.work()
    job.wait()
