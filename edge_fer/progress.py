"""Progress of long work, for a person at a terminal and for a log file alike.

    bar = Progress(total, "epoch 3/40", "batch", enabled=True)
    for ...:
        bar.update()              # one more step
        bar.postfix("loss 1.23")  # shown with the bar, and in the next plain line
    bar.close()

On a terminal: a tqdm bar when tqdm is installed. Elsewhere (`nohup ... > log`, a CI log):
a plain line each time another 25% is done, with the time so far, so a job that runs for hours
in the background still says where it is.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """tqdm on a terminal when installed; else a line every 25% (or nothing: `enabled` False)."""

    def __init__(self, total: int | None, desc: str, unit: str, enabled: bool) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self._bar = None
        self._next = 0.25
        self._postfix = ""
        self._t0 = time.perf_counter()
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)
            except ImportError:
                pass

    def update(self, k: int = 1) -> None:
        self.n += k
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(k)
        elif self.total and self.n / self.total >= self._next:
            extra = f", {self._postfix}" if self._postfix else ""
            units = self.unit + ("es" if self.unit.endswith(("s", "ch", "sh", "x")) else "s")
            took = _duration(time.perf_counter() - self._t0)
            print(
                f"{self.desc}: {self.n}/{self.total} {units} ({took}{extra})",
                file=sys.stderr,
                flush=True,
            )
            while self._next <= self.n / self.total:
                self._next += 0.25

    def postfix(self, text: str) -> None:
        """A short status (e.g. the running loss) for the bar and the next plain line."""
        self._postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def set(self, n: int, postfix: str = "") -> None:
        if postfix:
            self.postfix(postfix)
        self.update(n - self.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
