"""`edge-fer` command line: one sub-command per module, registered in COMMANDS.

Each command module exposes `register(subparsers)` which adds its parser and sets
`func=run` (a callable taking the parsed args and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from edge_fer import __version__
from edge_fer.errors import UserError

# name of the module under edge_fer.cli for each command group, imported lazily so that
# `edge-fer detect` never pays for importing the training stack.
COMMANDS: list[str] = [
    "train_cmd",
    "eval_cmd",
    "export_cmd",
    "detect_cmd",
    "run_cmd",
    "bench_cmd",
    "cascade_cmd",
    "calibrate_cmd",
    "keras_cmd",
    "compress_cmd",
    "build_engine_cmd",
    "deploy_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-fer",
        description="Facial expression recognition on edge devices: detect, classify, "
        "train, compress and export.",
    )
    parser.add_argument("--version", action="version", version=f"edge-fer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"edge_fer.cli.{name}")
        except ModuleNotFoundError as exc:  # a command module not written yet
            if exc.name and exc.name.startswith("edge_fer.cli."):
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"edge-fer {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"edge-fer {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
