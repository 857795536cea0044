"""The documentation names only flags the CLI has: every `edge-fer COMMAND [SUBCOMMAND] ...
--flag` command line in README.md and docs/*.md (fenced code blocks, with their `\\`
continuation lines, and inline code spans, also those that wrap onto the next line) is checked
against the real argparse parser, `edge_fer.cli.main.build_parser()`, built in this process.
Building it imports every command module but not torch (about 1 s).

A flag counts for the (sub-)command it is written under, as argparse reads the line: before the
nested command's name (`edge-fer deploy --out DIR triton`) it is the parent's. `--flag=value`
and `--flag VALUE` are both read; `a|b` or `a/b` where a command name stands is each named
alternative that exists (`deploy deepstream\\|triton`, `run/eval/classify`), and `--a|--b` each
flag. A flag must be written in full (argparse would take `--dem` for `--demo`; the docs should
not). Lines that do not start an edge-fer command (`python benchmarks/...`, `pip ...`, an
`edge-fer run: error: ...` message) are not command lines; a command word that names no command
is a failure unless it is one of the placeholders in PLACEHOLDERS.
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from edge_fer.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# the words the docs may write where a command name goes, standing for "some command": such a
# line is skipped and listed in Report.placeholders; any other word that names no command fails
PLACEHOLDERS = {"COMMAND", "SUBCOMMAND", "CMD", "..."}

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
FLAG = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_-]*")
ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SEPARATORS = {"|", "||", "&&", ";", "&"}


@dataclass
class Report:
    """What checking some markdown found."""

    commands: int = 0  # edge-fer command lines read
    flags: int = 0  # flags checked against a parser
    problems: list[str] = field(default_factory=list)
    placeholders: list[str] = field(default_factory=list)  # `edge-fer COMMAND ...`, skipped


@functools.lru_cache(maxsize=1)
def _parser() -> argparse.ArgumentParser:
    return build_parser()


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


# ---- markdown: the command lines -------------------------------------------------------------


def snippets(text: str) -> list[tuple[int, str]]:
    """(line, text) of each line of a fenced code block (continuation lines joined, comments
    dropped) and of each inline code span (its line breaks made spaces), in file order."""
    out: list[tuple[int, str]] = []
    para: list[tuple[int, str]] = []
    fence = ""
    pending: tuple[int, str] | None = None

    def flush() -> None:
        if not para:
            return
        joined = "\n".join(line for _, line in para)
        starts = []
        pos = 0
        for n, line in para:
            starts.append((pos, n))
            pos += len(line) + 1
        for m in SPAN.finditer(joined):
            line_no = max(n for p, n in starts if p <= m.start())
            out.append((line_no, m.group(2).replace("\n", " ").replace("\\|", "|")))
        para.clear()

    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                if pending:
                    out.append(pending)
                fence, pending = "", None
                continue
            body = line.rstrip()
            start, head = pending or (n, "")
            if body.endswith("\\"):
                pending = (start, head + body[:-1] + " ")
            else:
                out.append((start, head + body))
                pending = None
            continue
        if m:
            flush()
            fence = m.group(1)
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith(("|", "#")):
            flush()  # a table row, a heading: its spans are its own
            if stripped:
                para.append((n, line))
                flush()
            continue
        para.append((n, line))
    flush()
    return out


def _words(snippet: str) -> list[str]:
    try:
        return shlex.split(snippet, comments=True)
    except ValueError:  # an unbalanced quote in prose-like text: words as written
        return re.split(r"(?:^|\s)#", snippet, maxsplit=1)[0].split()


def command_lines(snippet: str) -> list[list[str]]:
    """The words after `edge-fer` of each edge-fer command in a snippet (one per shell
    segment that runs it: `pip install ... && edge-fer run --demo` has one)."""
    words = _words(snippet)
    found = []
    segment: list[str] = []
    for i, w in enumerate(words + [";"]):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        # `(--webfaces DIR | --boxes FILE)` is a choice between flags, not a pipe
        if w in SEPARATORS and not (w == "|" and nxt.lstrip("[(").startswith("-")):
            while segment and (segment[0] == "$" or ENV.match(segment[0])):
                segment.pop(0)  # a shell prompt, `NUMBA_NUM_THREADS=1`
            # `edge-fer keras import: error: ...` is a message edge-fer prints, not a command
            head = next((k for k, v in enumerate(segment) if v.startswith("-")), len(segment))
            message = any(v.endswith(":") for v in segment[:head])
            if segment[:1] == ["edge-fer"] and len(segment) > 1 and not message:
                found.append(segment[1:])
            segment = []
        else:
            segment.append(w)
    return found


# ---- the parser: which flags a command line names, and whether its command has them ----------


def _flags_in(word: str) -> list[str]:
    """`--a`, `--a=1`, `[--a`, `--a|--b`, `--min-size]` -> the flags named."""
    return [m.group(0) for part in word.split("|") if (m := FLAG.match(part.lstrip("[(")))]


def _values_taken(action: argparse.Action) -> int | None:
    """How many words after the flag are its value (None: as many as are not flags)."""
    nargs = action.nargs
    if nargs is None:
        return 1
    if isinstance(nargs, int):
        return nargs
    if nargs == "?":
        return 1
    return None


def check_words(
    words: list[str], where: str, report: Report, parser=None, names: tuple[str, ...] = ()
) -> None:
    """Check the flags of one command line (the words after `edge-fer`) into `report`."""
    parser = parser or _parser()
    command = " ".join(("edge-fer", *names))
    i = 0
    while i < len(words):
        w = words[i]
        i += 1
        if w.lstrip("[(").startswith("--") and w.lstrip("[(") != "--":
            action = None
            for flag in _flags_in(w):
                report.flags += 1
                action = parser._option_string_actions.get(flag)
                if action is not None:
                    continue
                longer = [o for o in parser._option_string_actions if o.startswith(flag)]
                hint = f" (write it in full: {', '.join(sorted(longer))})" if longer else ""
                report.problems.append(f"{where}: {command} has no {flag}{hint}")
            sub = _subparsers(parser)
            if "=" not in w and sub is not None:
                # a value after the flag is not the nested command's name; after an unknown
                # flag, words up to the first that names a nested command are taken as values
                n = _values_taken(action) if action is not None else None
                while i < len(words) and not words[i].startswith("-") and (n is None or n > 0):
                    if action is None and set(re.split(r"[|/]", words[i])) & set(sub.choices):
                        break
                    i += 1
                    n = None if n is None else n - 1
            continue
        sub = _subparsers(parser)
        if w.startswith("-") or sub is None:
            continue  # a short option, `-` (standard output), a positional
        word = w.strip("[]()")
        alternatives = [a for a in re.split(r"[|/]", word) if a]
        known = [a for a in alternatives if a in sub.choices]
        if not known:
            if word in PLACEHOLDERS:  # skipped, and listed
                report.placeholders.append(f"{where}: {command} {word}")
            else:
                report.problems.append(
                    f"{where}: {command} {word}: no such command "
                    f"(choose from {', '.join(sub.choices)})"
                )
            return
        for name in known:
            check_words(words[i:], where, report, sub.choices[name], (*names, name))
        return


def check_markdown(path: Path, label: str, report: Report) -> None:
    for line, snippet in snippets(path.read_text(encoding="utf-8")):
        for words in command_lines(snippet):
            report.commands += 1
            check_words(words, f"{label}:{line}", report)


def check_docs(paths: list[Path]) -> Report:
    report = Report()
    for path in paths:
        label = path.relative_to(ROOT).as_posix() if ROOT in path.parents else str(path)
        check_markdown(path, label, report)
    return report


# ---- the tests -------------------------------------------------------------------------------


def test_every_flag_in_the_docs_exists() -> None:
    report = check_docs(DOCS)
    print(f"checked {report.flags} flags in {report.commands} edge-fer command lines")
    print("skipped (placeholder commands):", *report.placeholders or ["none"], sep="\n  ")
    # the extractor still finds the command lines (it would pass on none)
    assert report.commands > 100 and report.flags > 200, (report.commands, report.flags)
    assert not report.problems, (
        f"{len(report.problems)} flags in the docs that the CLI does not have (checked "
        f"{report.flags} flags in {report.commands} command lines):\n" + "\n".join(report.problems)
    )


def test_the_checker_reports_a_flag_the_cli_lacks(tmp_path) -> None:
    """It can fail: a fake page's unknown flags are reported, each with its line and command,
    and the good ones on the same page are not."""
    page = tmp_path / "fake.md"
    page.write_text(
        "# Fake\n"
        "\n"
        "Run `edge-fer run --demo` or `edge-fer run clip.mp4\n"
        "--no-such-flag` to see.\n"
        "\n"
        "```sh\n"
        "edge-fer run --no-such-flag\n"
        "$ NUMBA_NUM_THREADS=1 edge-fer run clip.mp4 --out a.mp4 \\\n"
        "    --events=e.jsonl --bogus-too=3 --summary s.json   # --not-checked: a comment\n"
        "edge-fer keras import m.h5 --out m.onnx --nope\n"
        "edge-fer deploy --out d triton --platform onnxruntime\n"
        "edge-fer run: error: --whatever is a message, not a command\n"
        "edge-fer keras import: error: --nor-is-this\n"
        "python benchmarks/x.py --not-edge-fer && pip install --no-such-pip-flag .\n"
        "edge-fer trian --epochs 1\n"
        "```\n"
        "\n"
        "| `edge-fer deploy deepstream\\|triton --sink none` | one cell |\n"
        "| `edge-fer run --demo\\|--no-demo` | flag alternatives |\n"
        "| `edge-fer COMMAND --anything`, `edge-fer run --dem` | a placeholder, a short flag |\n",
        encoding="utf-8",
    )
    report = check_docs([page])
    assert report.commands == 11
    assert [p.replace(str(page), "fake.md") for p in report.problems] == [
        "fake.md:3: edge-fer run has no --no-such-flag",
        "fake.md:7: edge-fer run has no --no-such-flag",
        "fake.md:8: edge-fer run has no --bogus-too",
        "fake.md:10: edge-fer keras import has no --nope",
        "fake.md:11: edge-fer deploy has no --out",
        "fake.md:15: edge-fer trian: no such command (choose from "
        + ", ".join(_subparsers(_parser()).choices)
        + ")",
        "fake.md:18: edge-fer deploy triton has no --sink",
        "fake.md:19: edge-fer run has no --no-demo",
        "fake.md:20: edge-fer run has no --dem (write it in full: --demo, --demo-dir)",
    ]
    assert [p.replace(str(page), "fake.md") for p in report.placeholders] == [
        "fake.md:20: edge-fer COMMAND"
    ]
