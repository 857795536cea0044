"""What the `python -m edge_fer.cascade_train.<tool>` entry points share: a UserError is one line
on stderr and exit 2, as in the edge-fer CLI."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path


def run_tool(prog: str, work: Callable[[], str | None], flags: Iterable[str] = ()) -> int:
    """Run `work`; print what it returns (a summary line), or `prog: error: ...` and return 2.
    `flags`: the parameters that are options (`seed` -> `--seed` in the message)."""
    from edge_fer.errors import UserError
    from edge_fer.fileio import os_error_reason

    try:
        summary = work()
    except UserError as exc:
        flag = "--" + exc.param.replace("_", "-") if exc.param in set(flags) else None
        print(f"{prog}: error: {exc.render(flag)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write that failed half way (disk full): no traceback either
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{prog}: error: {os_error_reason(exc)}{where}", file=sys.stderr)
        return 2
    if summary:
        print(summary)
    return 0


def out_folder(out: str | os.PathLike, param: str = "out") -> Path:
    """`out` made (with its parents) as the tool's output folder; a UserError naming `param`
    when it cannot be (a file of that name was a FileExistsError traceback)."""
    from edge_fer.errors import UserError
    from edge_fer.fileio import os_error_reason

    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise UserError(f"must be a folder name, got {out!r}", param=param)
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} exists and is not a folder", param=param)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{path}: cannot create it ({os_error_reason(exc)})", param=param) from None
    return path


def refuse_outputs(
    out: str | os.PathLike, patterns: Iterable[str], force: bool, param: str = "out"
) -> None:
    """A UserError when folder `out` already holds files matching `patterns` (an earlier run's
    outputs) and not `force`: they were written over without a word. Call it before any work."""
    from edge_fer.errors import UserError

    if force or not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        return  # a bad name is out_folder's to report
    path = Path(out)
    if not path.is_dir():
        return
    found = sorted({f.name for pat in patterns for f in path.glob(pat)})
    if found:
        more = f" and {len(found) - 1:,} more of its outputs" if len(found) > 1 else ""
        raise UserError(
            f"{path} already holds {found[0]}{more} from an earlier run: give --force to "
            f"write over {'them' if more else 'it'}, or another folder",
            param=param,
        )
