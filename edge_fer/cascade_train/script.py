"""What the `python -m edge_fer.cascade_train.<tool>` entry points share: a UserError is one line
on stderr and exit 2, as in the edge-fer CLI."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_tool(prog: str, work: Callable[[], str | None]) -> int:
    """Run `work`; print what it returns (a summary line), or `prog: error: ...` and return 2."""
    from edge_fer.errors import UserError

    try:
        summary = work()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if summary:
        print(summary)
    return 0
