"""`edge-fer` command line: one sub-command per module, registered in COMMANDS.

Each command module exposes `register(subparsers)` which adds its parser and sets
`func=run` (a callable taking the parsed args and returning an exit code).
"""

from __future__ import annotations

import argparse
import codecs
import errno
import importlib
import os
import signal
import sys
import threading
from typing import NoReturn

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
    "eyes_cmd",
    "experiment_cmd",
]


class _Parser(argparse.ArgumentParser):
    """A usage mistake is one line, as every other user error (argparse prints its whole usage
    block first): `edge-fer run: error: argument --hold: invalid int value: 'x' (see edge-fer
    run --help)`. Sub-command parsers are made of the same class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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


def _command_parser(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser | None:
    """The parser of the sub-command that ran: the one whose defaults hold `args.func` (nested
    sub-commands included), else the top sub-command's."""
    stack = [
        a.choices.get(args.command)
        for a in parser._actions
        if isinstance(a, argparse._SubParsersAction)
    ]
    top = stack[0] if stack else None
    while stack:
        p = stack.pop()
        if p is None:
            continue
        if p._defaults.get("func") is args.func:
            return p
        stack += [
            c
            for a in p._actions
            if isinstance(a, argparse._SubParsersAction)
            for c in a.choices.values()
        ]
    return top


def flag_for(parser: argparse.ArgumentParser, args, param: str) -> str | None:
    """The flag (`--batch-size`) of the running sub-command whose dest is `param`, if any."""
    p = _command_parser(parser, args)
    for a in p._actions if p is not None else ():
        if a.dest == param and a.option_strings:
            return max(a.option_strings, key=len)  # the long form
    return None


class _Terminated(KeyboardInterrupt):
    """SIGTERM before a command installs its own handling (importing, building the parser)."""

    signum = signal.SIGTERM


def _on_sigterm(signum, frame) -> None:
    # once: a second SIGTERM must not break the clean-up the first one started
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Terminated()


def _escape_name_bytes(exc: UnicodeError) -> tuple[str, int]:
    """Error handler for stderr: a file name's undecodable byte (surrogate escape U+DC80-DCFF)
    shows as that byte, `\\xff`, as the messages show it elsewhere; anything else that cannot
    be encoded gets Python's usual backslash escape. Never raises, so an error line always
    prints."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    parts = []
    for ch in exc.object[exc.start : exc.end]:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            parts.append(f"\\x{code - 0xDC00:02x}")
        else:
            parts.append(ch.encode("ascii", "backslashreplace").decode("ascii"))
    return "".join(parts), exc.end


codecs.register_error("edge_fer_names", _escape_name_bytes)


def _names_print_as_given() -> None:
    """File names that are not valid UTF-8 (POSIX allows them; Python keeps their bytes as
    surrogate escapes) print as their own bytes on stdout, as `ls` shows them, instead of
    raising UnicodeEncodeError under a strict UTF-8 locale; on stderr, in messages, as `\\xff`
    rather than Python's `\\udcff`."""
    for stream, was, errors in (
        (sys.stdout, "strict", "surrogateescape"),
        (sys.stderr, "backslashreplace", "edge_fer_names"),
    ):
        if getattr(stream, "errors", None) == was and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors=errors)
            except (ValueError, OSError):  # a stream that cannot change: leave it
                pass


def _unrecognized(parser: argparse.ArgumentParser, command: str, extra: list[str]) -> NoReturn:
    """argparse's "unrecognized arguments", with the likely cause where there is one: the
    shell expanded an unquoted glob into many files for a command that takes one source."""
    if command == "run" and not any(a.startswith("-") for a in extra):
        raise UserError(
            f"takes one SOURCE, and {len(extra)} more {'was' if len(extra) == 1 else 'were'} "
            f"given ({extra[0]} ...): the shell "
            'expands an unquoted glob into files; quote it ("shots/*.jpg") or give the folder'
        )
    parser.error(f"unrecognized arguments: {' '.join(extra)}")


def main(argv: list[str] | None = None) -> int:
    # SIGTERM's default action kills the process without a word; from here on it is an
    # interrupt with one line and exit 143 (commands that run pipelines refine this)
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _on_sigterm)
    _names_print_as_given()
    given = sys.argv[1:] if argv is None else argv
    command = next((a for a in given if not a.startswith("-")), "COMMAND")  # until parsed
    parser = args = None
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        command = args.command or command
        if extra:
            _unrecognized(parser, command, extra)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except UserError as exc:
        flag = None
        if exc.param and parser is not None and args is not None:
            flag = flag_for(parser, args, exc.param)
        print(f"edge-fer {command}: error: {exc.render(flag)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        signum = int(getattr(exc, "signum", signal.SIGINT))
        name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        print(f"edge-fer {command}: interrupted ({name})", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        return 1
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise
        # a full disk under standard output (`--json > f`): one line, not a traceback; what is
        # still buffered goes to /dev/null, or the flush at exit would print one
        from edge_fer.fileio import os_error_reason

        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        print(f"edge-fer {command}: error: cannot write ({os_error_reason(exc)})", file=sys.stderr)
        return 2
    finally:
        # put the caller's handler back unless a SIGTERM came: then it stays ignored (SIG_IGN,
        # set by whoever handled it) so a second one cannot kill the clean-up at exit
        if old is not None and signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())
