"""Small helpers every `edge-fer` command may use: the help style, a progress bar (from
`edge_fer.progress`), the value parsers of --min-size, --angle and --threads, and OpenCV's
quiet mode. Commands import these from here, never from a sibling command."""

from __future__ import annotations

import argparse
import copy
import signal

from edge_fer.progress import Progress  # noqa: F401 - the commands' progress bar, re-exported


class HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default unless it is None/False or the help already names it (also
    for an option without help text, which argparse would otherwise list bare)."""

    def _format_action(self, action):
        if not action.help and action.option_strings and _has_default(action):
            action = copy.copy(action)
            action.help = "default: %(default)s"
        return super()._format_action(action)

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or not action.option_strings or not _has_default(action):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def _has_default(action: argparse.Action) -> bool:
    # by identity: a default of 0 is worth showing, and 0 == False
    d = action.default
    if isinstance(d, (list, tuple)) and not d:  # an empty repeatable option: "(default: [])"
        return False
    return not (d is None or d is False or d is argparse.SUPPRESS)


# one --skip-bad for every command that reads a labelled dataset (loaders' BadEntry adds "use
# --skip-bad" to its message only where the running command has the flag)
SKIP_BAD_HELP = (
    "skip the bad entries of {what} instead of stopping: unreadable images, images over 100 Mpx, "
    "malformed CSV rows, unknown classes, images outside the class folders; counted, and the "
    "first ones named "
    "({where})"
)


def add_skip_bad(p, what: str, where: str = "the JSON result: skipped, skipped_entries") -> None:
    p.add_argument(
        "--skip-bad", action="store_true", help=SKIP_BAD_HELP.format(what=what, where=where)
    )


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


def thread_count(text: str) -> int:
    """--threads and the like: 0 (the tool's default) or 1..MAX_THREADS."""
    return _threads(text, zero=True)


def positive_thread_count(text: str) -> int:
    """Thread flags where 0 has no meaning: 1..MAX_THREADS."""
    return _threads(text, zero=False)


def _threads(text: str, zero: bool) -> int:
    # the bound is the library's (limits.check_threads); argparse wants its own error type
    from edge_fer.errors import UserError
    from edge_fer.limits import MAX_THREADS, check_threads

    why = f"expected a number of threads in {0 if zero else 1}..{MAX_THREADS}, got {text!r}"
    try:
        return check_threads(int(text.strip()), zero="default" if zero else None)
    except (ValueError, UserError):
        raise argparse.ArgumentTypeError(why) from None


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


def check_signal() -> None:
    """Raise the interrupt of a signal whose exception was lost (swallowed by a callback in a
    library's start-up): a command calls this between its steps (inputs, frames). The handler
    edge_fer.cli.main installed (CommandSignals) recorded it; another handler (run's own) or
    none: nothing to do."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        check = getattr(signal.getsignal(sig), "check", None)
        if callable(check):
            check()
