"""Errors a user can cause. The CLI prints them as one line and exits with code 2.

Also the one-line forms around them: a choice check, third-party failures reported as a
UserError (`reported`) and warnings on stderr (`warn`)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class UserError(Exception):
    """A problem with the user's input (files, options, data), not a bug in edge-fer.

    `param`: the parameter the message is about. The library names parameters ("batch_size
    must be >= 1, got 0"); the CLI puts the flag in its place (`render("--batch-size")`), so
    one message serves both.
    """

    exit_code = 2

    def __init__(self, message: str = "", *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def render(self, name: str | None = None) -> str:
        """The message, led by `name` (a flag) or else the parameter's own name."""
        lead = name or self.param
        return f"{lead} {self.message}" if lead else self.message

    def __str__(self) -> str:
        return self.render()

    def __reduce__(self):  # across processes (data loaders) with its parameter
        return type(self), (self.message,), {"param": self.param}


def first_line(exc: BaseException | str, limit: int = 200) -> str:
    """The first non-empty line of an exception's text (or its type's name), at most `limit`."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    line = lines[0] if lines else (type(exc).__name__ if isinstance(exc, BaseException) else "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def signal_in_chain(exc: BaseException) -> int | None:
    """The signal number of a KeyboardInterrupt anywhere in `exc`'s cause/context chain (an
    extension's init turns our interrupt into an ImportError caused by it), else None."""
    import signal

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return int(getattr(e, "signum", None) or signal.SIGINT)
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def check_choice(value, choices, param: str) -> None:
    """UserError naming `param` unless `value` is one of `choices`."""
    if value not in choices:
        raise UserError(f"{value!r} is unknown; choose {', '.join(choices)}", param=param)


@contextlib.contextmanager
def reported(what: str) -> Iterator[None]:
    """Turn any failure inside (other than a UserError) into the UserError "WHAT (its first
    line)": for third-party code (engines, converters) that raises whatever it likes."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - the point: one line whatever it raised
        raise UserError(f"{what} ({first_line(exc)})") from None


def warn(msg: str) -> None:
    """A warning for the user: one line on stderr (where no other `warn` was given)."""
    print(f"edge-fer: warning: {msg}", file=sys.stderr, flush=True)
