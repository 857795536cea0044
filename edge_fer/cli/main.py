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
import tempfile
import threading
from typing import NoReturn

from edge_fer import __version__
from edge_fer.errors import UserError, signal_in_chain

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
        if p._defaults.get("func") is getattr(args, "func", None):
            return p
        stack += [
            c
            for a in p._actions
            if isinstance(a, argparse._SubParsersAction)
            for c in a.choices.values()
        ]
    return top


def command_name(parser: argparse.ArgumentParser, args) -> str:
    """The command that ran (`args.command` set) as its messages name it: `keras import`, not
    `keras` (the prog of the parser that ran, less `edge-fer `), the same command argparse's
    own mistakes in it name; before, a nested one's user errors said `edge-fer keras: ...`."""
    p = _command_parser(parser, args)
    head = parser.prog + " "
    if p is None or not p.prog.startswith(head):
        return args.command
    return p.prog[len(head) :]


def portable_command(argv: list[str]) -> str:
    """`edge-fer ARGV` shell-quoted, as the metadata a run writes records its command: relative
    paths as typed, absolute ones made portable (edge_fer.fileio.portable_path), since what a
    run writes travels and must hold no local absolute path."""
    import shlex

    from edge_fer.fileio import portable_path

    words = []
    for a in argv:
        flag, eq, value = a.partition("=") if a.startswith("--") else ("", "", a)
        words.append(flag + eq + (portable_path(value) if os.path.isabs(value) else value))
    return "edge-fer " + shlex.join(words)


def flag_for(parser: argparse.ArgumentParser, args, param: str) -> str | None:
    """The flag (`--batch-size`) of the running sub-command whose dest is `param`, if any. A
    command whose options' dests differ from the names its library gives the parameters maps
    them in its parser's defaults: set_defaults(param_dests={"kind": "instance_kind"}) has a
    UserError of param `kind` said with `--instance-kind`."""
    p = _command_parser(parser, args)
    dest = (getattr(args, "param_dests", None) or {}).get(param, param)
    for a in p._actions if p is not None else ():
        if a.dest == dest and a.option_strings:
            return max(a.option_strings, key=len)  # the long form
    return None


class Interrupt(KeyboardInterrupt):
    """SIGINT or SIGTERM (`signum`), raised by `CommandSignals`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class CommandSignals:
    """The SIGINT / SIGTERM handler of a whole command, installed by `main` (a command's own
    handling, such as run's SignalGuard, replaces it for a while).

    `signum` is the first signal received. While `defer` is set (the command line being parsed,
    or a command that takes signals over starting), the first one is only recorded: raised
    inside an import, it came out as an ImportError or was lost (an extension's init or a
    callback swallows it). Otherwise each one raises `Interrupt` at once, so a long load or
    compile stops; one whose exception was lost on the way is raised again by `check()`
    (edge_fer.cli.common.check_signal). A second SIGTERM is ignored (it must not break the
    clean-up the first one started); a second SIGINT raises even while deferred, a way out of
    anything that hangs.

    Signals that arrive during one long call into C (a numba kernel, an engine build) are
    handled when it returns, in signal-number order: SIGINT before SIGTERM whatever came
    first. A SIGTERM then a Ctrl-C was reported as the Ctrl-C (exit 130) and the SIGTERM
    dropped as a second one; `listen` has CPython write each signal's number to a pipe as it
    arrives, and the first SIGINT handled looks there for a SIGTERM that came before it.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.defer = True
        self._pipe: tuple[int, int] | None = None  # (read, write): the wakeup fd

    def listen(self) -> None:
        """Make a pipe the wakeup fd (main thread only), unless someone has one already (an
        event loop): it keeps the order in which signals arrive."""
        try:
            r, w = os.pipe()
        except OSError:  # out of file descriptors: handle signals as they come
            return
        try:
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
            if old == -1:
                self._pipe = (r, w)
                return
            signal.set_wakeup_fd(old)  # theirs
        except (ValueError, OSError):
            pass
        os.close(r)
        os.close(w)

    def close(self) -> None:
        if self._pipe is None:
            return
        r, w = self._pipe
        self._pipe = None
        now = signal.set_wakeup_fd(-1)
        if now != w:  # replaced meanwhile (an event loop): leave that one
            signal.set_wakeup_fd(now)
        os.close(r)
        os.close(w)

    def _arrived_first(self, signum: int) -> int:
        """`signum`, or a SIGTERM that arrived before this SIGINT (the wakeup pipe's order)."""
        if signum != signal.SIGINT or self._pipe is None:
            return signum
        try:
            seen = os.read(self._pipe[0], 4096)
        except OSError:  # empty
            return signum
        for s in seen:
            if s in (signal.SIGINT, signal.SIGTERM):
                return s
        return signum

    def __call__(self, signum, frame) -> None:
        first = self.signum is None
        if first:
            self.signum = signum = self._arrived_first(signum)
        if (first and self.defer) or (not first and signum == signal.SIGTERM):
            return
        raise Interrupt(signum)

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupt(self.signum)


def _interrupt_signal(exc: BaseException, signals: CommandSignals) -> int | None:
    """The signal `exc` stands for, or None: a KeyboardInterrupt anywhere in its chain (an
    extension's init turns ours into an ImportError caused by it), or any exception once our
    handler has recorded a signal (numba's init prints ours and raises a new ImportError)."""
    found = signal_in_chain(exc)
    return found if found is not None else signals.signum


def _quiet_interrupts(hook):
    """sys.excepthook / sys.unraisablehook, silent about our interrupt: raised by the signal
    handler inside an extension's init or a callback, it was printed there as a traceback
    (numba's init prints it, Python reports an exception in a callback as "ignored"), and the
    command reports it in one line."""

    def quiet(*args):
        exc_type = getattr(args[0], "exc_type", args[0])  # unraisablehook: one argument
        if isinstance(exc_type, type) and issubclass(exc_type, KeyboardInterrupt):
            return
        hook(*args)

    return quiet


def _report_interrupt(command: str, signum: int) -> int:
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    print(f"edge-fer {command}: interrupted ({name})", file=sys.stderr)
    return 128 + signum


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


def _unrecognized(
    parser: argparse.ArgumentParser, args, command: str, extra: list[str]
) -> NoReturn:
    """argparse's "unrecognized arguments", with the likely cause where there is one: the
    shell expanded an unquoted glob into many files for a command that takes one source."""
    one = len(extra) == 1 and not extra[0].startswith("-")
    if command == "run" and one and not os.path.lexists(extra[0]):
        # `run IN.mp4 OUT.mp4` (jetson-utils' videoSource/videoOutput order); a file that
        # exists is more likely a glob's second match
        raise UserError(
            f"takes one SOURCE, and {extra[0]} was given after it: for an output, say which "
            f"(--out {extra[0]} for the annotated video or images, --events, --summary)"
        )
    if command == "run" and not any(a.startswith("-") for a in extra):
        raise UserError(
            f"takes one SOURCE, and {len(extra)} more {'was' if len(extra) == 1 else 'were'} "
            f"given ({extra[0]} ...): the shell "
            'expands an unquoted glob into files; quote it ("shots/*.jpg") or give the folder'
        )
    # named by the command's own parser: "edge-fer build-engine: error: ...", as argparse's
    # other mistakes in a command are (the top parser said "edge-fer: error: ...")
    sub = _command_parser(parser, args) if args.command else None
    (sub or parser).error(f"unrecognized arguments: {' '.join(extra)}")


def _choose_tempdir() -> None:
    """Have Python choose its temporary folder now, while signals are only recorded: it does so
    on first use by writing a probe file there and removing it, and a SIGTERM between the two
    left the probe behind (calibrate, stopped as it made its first temporary folder)."""
    try:
        tempfile.gettempdir()
    except OSError:  # no usable one: a command that needs it stops there in one line (_failed)
        pass


def main(argv: list[str] | None = None) -> int:
    # SIGTERM's default action kills the process without a word; from here on it and SIGINT
    # are an interrupt with one line and exit 128 + N (commands that run pipelines refine
    # this). While the command line is parsed (its modules imported) they are only recorded.
    signals = CommandSignals()
    old: dict = {}
    hooks = (sys.excepthook, sys.unraisablehook)
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            # an ignored SIGINT stays ignored (a background job started by a shell)
            if sig != signal.SIGINT or signal.getsignal(sig) is not signal.SIG_IGN:
                old[sig] = signal.signal(sig, signals)
        signals.listen()
        sys.excepthook = _quiet_interrupts(sys.excepthook)
        sys.unraisablehook = _quiet_interrupts(sys.unraisablehook)
    _names_print_as_given()
    given = sys.argv[1:] if argv is None else argv
    command = next((a for a in given if not a.startswith("-")), "COMMAND")  # until parsed
    parser = args = None
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        _choose_tempdir()
        command = command_name(parser, args) if args.command else command
        args.given_argv = [os.fsdecode(a) for a in given]  # what a run records as its command
        if extra:
            _unrecognized(parser, args, command, extra)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        # a command that installs its own handling takes a recorded signal over (SignalGuard);
        # the others stop at once, whether the signal came during the parsing or comes later
        takes_over = getattr(sys.modules.get(args.func.__module__), "HANDLES_SIGNALS", False)
        signals.defer = bool(takes_over)
        if not takes_over:
            signals.check()
        code = int(args.func(args) or 0)
        if signals.signum is not None and not takes_over and code != 128 + signals.signum:
            # its exception was lost on the way (swallowed in a callback): still an interrupt
            return _report_interrupt(command, signals.signum)
        return code
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - an interrupt, or what _failed makes of it
        signum = _interrupt_signal(exc, signals)
        if signum is None:
            return _failed(exc, command, parser, args)
        return _report_interrupt(command, signum)
    finally:
        # put the caller's handlers back, unless a SIGTERM came: SIGTERM then stays ignored
        # (SIG_IGN, set here or by the command that handled it, as calibrate does) so that a
        # second one cannot kill the clean-up at exit
        terminated = signals.signum == signal.SIGTERM
        # run as the program (`edge-fer ...`: argv None), the process exits next; its
        # interpreter shutdown took 5-7 s on a loaded machine, and a signal then killed it with
        # 143 while its summary said complete: the outputs are done, the code stands
        exiting = argv is None
        for sig, h in old.items():
            if signal.getsignal(sig) is not signals:
                continue  # the command put its own there (SIG_IGN after its SIGTERM)
            keep = exiting or (terminated and sig == signal.SIGTERM)
            signal.signal(sig, signal.SIG_IGN if keep else h)
        if in_main:
            sys.excepthook, sys.unraisablehook = hooks
            signals.close()


def _failed(exc: BaseException, command: str, parser, args) -> int:
    """The exit code of a command that raised `exc` (re-raised when it is not a user error)."""
    try:
        raise exc
    except UserError as err:
        flag = None
        if err.param and parser is not None and args is not None:
            flag = flag_for(parser, args, err.param)
        print(f"edge-fer {command}: error: {err.render(flag)}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # standard output's reader closed it (`| head -1`): as a shell
        return 128 + 13  # reports a process SIGPIPE ended; 1 means "source ended early"
    except OSError as err:
        if err.errno == errno.ENOENT and str(err.strerror).startswith("No usable temporary"):
            # tempfile's own error when TMPDIR, /tmp, /var/tmp and the working folder all
            # refuse a file: it lists them; the user can point TMPDIR elsewhere
            print(f"edge-fer {command}: error: {err.strerror}; set TMPDIR", file=sys.stderr)
            return 2
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG):
            raise
        # a full disk or a file size limit (also under standard output, `--json > f`): one
        # line naming the file when the error does, not a traceback; what is
        # still buffered goes to /dev/null, or the flush at exit would print one
        from edge_fer.fileio import os_error_reason

        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        name = err.filename
        what = f" {os.fsdecode(name)}" if isinstance(name, (str, bytes, os.PathLike)) else ""
        print(
            f"edge-fer {command}: error: cannot write{what} ({os_error_reason(err)})",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
