"""The Markdown report of a study: what was run (data, split, seed, command, budget, machine),
the tables, the figures, and what the numbers say."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
from pathlib import Path

from edge_fer import fileio


def environment() -> dict:
    from edge_fer import __version__
    from edge_fer.machine import cpu_name

    env = {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "edge_fer": __version__,
        "python": platform.python_version(),
        "cpu": f"{cpu_name()} ({os.cpu_count()} logical CPUs)",
    }
    for mod in ("torch", "onnxruntime"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return env


def table(header: list[str], rows: list[list], align: str | None = None) -> str:
    align = align or ("l" + "r" * (len(header) - 1))
    sep = ["---" if a == "l" else "---:" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join("–" if c is None else str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def f3(v) -> str | None:
    return None if v is None else f"{v:.3f}"


def f4(v) -> str | None:
    return None if v is None else f"{v:.4f}"


def setup_block(
    study: str, data: str, split: str, seed, command: str, budget: str, extra: list[str]
) -> str:
    env = environment()
    lines = [
        f"- **study**: `{study}`",
        f"- **data**: `{fileio.portable_path(data)}`",  # (no local absolute path: reports travel)
        f"- **split**: {split}",
        f"- **seed**: {seed}",
        f"- **budget**: {budget}",
        *[f"- {e}" for e in extra],
        f"- **command**: `{command}`",
        "- **machine**: "
        + ", ".join(f"{k} {v}" for k, v in env.items() if k != "date_utc")
        + f"; run {env['date_utc']}",
    ]
    return "\n".join(lines)


# the figures the studies write beside README.md (their names are fixed: a rerun replaces them)
FIGURE_NAMES = ("confusion.png", "curves.png", "accuracy_vs_ms.png", "recall.png")


def stage(out: Path) -> Path:
    """The private folder inside `out` a study draws its figures into: they are published with
    README.md by `write_with_figures` (before: each PNG was written into --out as it was drawn,
    the README last, so an interrupted rerun left new figures beside the old report, and an
    interrupted first run figures without one). Inside `out`: on its file system, writable."""
    return Path(out) / f".report.{os.getpid()}.tmp"


def drop_stage(out: Path) -> None:
    shutil.rmtree(stage(out), ignore_errors=True)


def _ours(name: str) -> int | None:
    """The process id in `name` when it is a temporary of a study's report: a staging folder
    `.report.PID.tmp` (`stage`), or a file of the set being written into --out,
    `.README.md.PID.TID.tmp` (edge_fer.fileio.temp_name); else None."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    for base, ids in (("report", 1), *((n, 2) for n in ("README.md", *FIGURE_NAMES))):
        head = f".{base}."
        if name.startswith(head):
            parts = name[len(head) : -len(".tmp")].split(".")
            if len(parts) == ids and all(p.isdigit() for p in parts):
                return int(parts[0])
    return None


def remove_stale(out: Path) -> None:
    """Remove what killed runs left in `out` (their staging folder, a half-written report
    file), which no run removed (before: kept forever): our names only
    (`fileio.remove_if_stale`)."""
    try:
        names = os.listdir(out)
    except OSError:
        return
    for n in names:
        pid = _ours(n)
        if pid is not None:
            fileio.remove_if_stale(Path(out) / n, pid)


def publish(out: Path, files: dict[str, bytes]) -> None:
    """Write the report set `files` (name: content) into `out` and remove the figures of an
    earlier report that this one lacks (this study's own names; a link is left alone), as one
    set (edge_fer.fileio.write_together): a failure or an interrupt leaves the earlier set
    whole."""
    out.mkdir(parents=True, exist_ok=True)
    stale = [out / n for n in FIGURE_NAMES if n not in files and not (out / n).is_symlink()]
    fileio.write_together([(out / n, c) for n, c in files.items()], remove=stale)


def write_with_figures(out: Path, lines: list[str], figs: list[str]) -> Path:
    """The report: `lines`, then the figures section (one Markdown image per PNG, drawn into
    `stage(out)`); published with its figures, README.md last."""
    figures = "\n\n".join(f"![{Path(f).stem}]({f})" for f in figs)
    text = "\n".join([*lines, "## Figures", "", figures, ""])
    files = {f: (stage(out) / f).read_bytes() for f in figs}
    publish(out, {**files, "README.md": text.encode("utf-8")})
    drop_stage(out)
    return out / "README.md"


def latency_line(threads: int, load: float | None = -1.0) -> str:
    """How the ms/face columns were measured, with the machine's load as it was when the report
    was written (right after the timing), instead of a fixed claim either way: the figures are
    preliminary only where more work than cores was running. `load` -1: read it now."""
    cpus = os.cpu_count() or 1
    if load == -1.0:
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):  # no load average on this platform
            load = None
    text = (
        f"ms/face: ONNX Runtime CPU, {threads} thread(s), inference on a prepared input (no "
        "decoding, no preprocessing), median over interleaved rounds after warm-up, per face at "
        "batch 1 and 32"
    )
    if load is None:
        return text + "; the machine's load could not be read, so compare with care"
    text += f"; 1-minute load average {load:.1f} on {cpus} logical CPUs after the timing"
    if load > cpus + 0.5:  # the timing's own thread counts: more than that is other work
        return text + (
            ": other jobs shared the CPU, so preliminary (batch-32 calls last tens of ms and "
            "suffer most from the sharing); rerun the command in a quiet window for final figures"
        )
    return text + ": no more work than cores"
