"""The Markdown report of a study: what was run (data, split, seed, command, budget, machine),
the tables, the figures, and what the numbers say."""

from __future__ import annotations

import datetime as dt
import os
import platform
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
        f"- **data**: `{data}`",
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


def write(out: Path, text: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    p = out / "README.md"
    fileio.write_text(p, text)
    return p


def write_with_figures(out: Path, lines: list[str], figs: list[str]) -> Path:
    """The report: `lines`, then the figures section (one Markdown image per PNG); written."""
    figures = "\n\n".join(f"![{Path(f).stem}]({f})" for f in figs)
    return write(out, "\n".join([*lines, "## Figures", "", figures, ""]))


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
