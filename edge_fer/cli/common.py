"""Small helpers every `edge-fer` command may use: the help style, a progress bar, the value
parsers of --min-size and --angle, and OpenCV's quiet mode. Commands import these from here,
never from a sibling command."""

from __future__ import annotations

import argparse
import sys


class HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default unless it is None/False or the help already names it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or action.default in (None, False, argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class Progress:
    """tqdm on a terminal when installed; else a line every 25% (or nothing)."""

    def __init__(self, total: int | None, desc: str, unit: str, enabled: bool) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self._bar = None
        self._next = 0.25
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
            print(f"{self.desc}: {self.n}/{self.total} {self.unit}s", file=sys.stderr, flush=True)
            while self._next <= self.n / self.total:
                self._next += 0.25

    def set(self, n: int, postfix: str = "") -> None:
        self.update(n - self.n)
        if self._bar is not None and postfix:
            self._bar.set_postfix_str(postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def parse_size(text: str) -> float:
    """'48' -> 48 px, '48.5' -> 48.5 px, '0.1' or '10%' -> a fraction of the shorter side."""
    t = text.strip()
    try:
        if t.endswith("%"):
            v: float = float(t[:-1]) / 100.0
            if not 0 < v <= 1:
                raise ValueError
            return v
        v = int(t) if t.isdigit() else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected pixels (48) or a fraction of the frame (0.1 or 10%), got {text!r}"
        ) from None
    if not 0 < v < float("inf"):  # also rejects nan
        raise argparse.ArgumentTypeError(f"size must be > 0, got {text!r}")
    return v


def parse_angles(text: str) -> tuple[float, ...]:
    """--angle: '0', '0.25' or '0,1/32,-1/32' turns."""
    from edge_fer.detect import parse_angles as parse

    try:
        return parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e} (turns, e.g. 0 or 0,1/32,-1/32)") from None


def quiet_opencv() -> None:
    """OpenCV's and FFmpeg's own lines (a camera index that does not open...) would repeat our
    errors; one policy for every command, in edge_fer.runtime.sources."""
    from edge_fer.runtime.sources import quiet_opencv as quiet

    quiet()
