"""Child processes for the tests: run a command, Python or `edge-fer` and read what it printed;
start `edge-fer` and interrupt it; copy the checkout for an install. And `edge-fer` in this
process, and the checks of what a command printed that several test modules make."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from paths import ROOT

CLI = ("-m", "edge_fer.cli.main")
# `edge-fer` with Ctrl-C as a terminal delivers it: a shell starts background jobs (`cmd &`,
# some CI runners) with SIGINT ignored, and Python then never raises KeyboardInterrupt, so a
# test that sends it would hang
_BOOT = "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
CLI_INTERRUPTIBLE = ("-c", _BOOT + "runpy.run_module('edge_fer.cli.main', run_name='__main__')")


def run(cmd, *, cwd=ROOT, env=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `cmd` (paths allowed) to its end; text output captured (bytes that are not UTF-8,
    such as file names, as surrogate escapes, the way Python names such files); any exit code
    returns."""
    return subprocess.run(
        [str(a) for a in cmd],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        check=False,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def run_python(*args, **kw) -> subprocess.CompletedProcess:
    """`python ARGS` with this interpreter (`run`'s keywords)."""
    return run([sys.executable, *args], **kw)


def refusal_line(proc: subprocess.CompletedProcess) -> str:
    """The one line of a refusal: exit 2, no traceback, one non-empty line on stderr."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def single_line(proc: subprocess.CompletedProcess, rc: int = 2) -> str:
    """The one line on stderr of `proc`, which exited with `rc`."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == rc and len(lines) == 1, (proc.returncode, proc.stdout, proc.stderr)
    return lines[0]


def assert_one_error_line(err: str, *words: str) -> None:
    """`err` (a stderr) is one line, no traceback, holding each of `words`."""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err


def said(stderr: str) -> list[str]:
    """Every line on stderr but the first-run compile notice (a fresh kernel cache)."""
    return [ln for ln in stderr.splitlines() if "compiling the detector" not in ln]


def cache_env(tmp_path: Path, name: str = "cache", **extra: str) -> dict:
    """This environment for a child, with its own dataset cache (tmp_path / name) and `extra`."""
    return dict(os.environ, EDGE_FER_CACHE=str(tmp_path / name), **extra)


def run_main(argv, capsys) -> tuple[int, str, str]:
    """`edge-fer ARGV` (paths or strings) in this process: (exit code, stdout, stderr)."""
    from edge_fer.cli.main import main

    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def run_cli(*argv, **kw) -> subprocess.CompletedProcess:
    """`edge-fer ARGV` from the checkout in a child process (`run`'s keywords)."""
    return run_python(*CLI, *argv, **kw)


def spawn_cli(*argv, cwd=ROOT, text: bool = True, **env: str) -> subprocess.Popen:
    """`edge-fer ARGV` started from the checkout (unbuffered, stdout and stderr piped), with
    these variables added to the environment."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **env)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, *CLI_INTERRUPTIBLE, *map(str, argv)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=text,
    )


def interrupt(proc: subprocess.Popen, sig, ready, timeout: float = 60):
    """Send `sig` to `proc` as soon as `ready()` is true (the test fails if `proc` ends first)
    and wait for it to exit; its stderr. It is killed if anything goes wrong."""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.02)
        assert proc.poll() is None, "finished before it could be interrupted"
        proc.send_signal(sig)
        return proc.communicate(timeout=timeout)[1]
    finally:
        if proc.poll() is None:
            proc.kill()


def repo_copy(dst: Path) -> Path:
    """The checkout's tracked and new (not ignored) files copied to `dst`, as a clone with the
    uncommitted work would hold them: an install from there writes nothing into the checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = ROOT / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    return dst
