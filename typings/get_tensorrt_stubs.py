"""Put usable TensorRT type stubs in typings/_tensorrt/ for mypy (see [tool.mypy] in pyproject).

    python typings/get_tensorrt_stubs.py            # then: mypy

Why a script and not just `pip install tensorrt-stubs`:

- tensorrt-stubs (PyPI, 10.13.0.35.1) depends on `tensorrt==10.13.0.35`, whose install downloads
  the real libraries from NVIDIA's index; without that index (CI, most laptops) the install
  fails. `--no-deps` works but leaves a `tensorrt/` folder of .pyi files in site-packages that
  imports as an empty namespace package, and mypy ignores it anyway (no py.typed marker).
- Its generated tensorrt_bindings/tensorrt.pyi has a few syntax errors (a parameter named `in`,
  a parameter without a default after ones with defaults) that stop mypy cold.

So this takes the stub files from the installed tensorrt-stubs distribution if there is one,
else from its wheel (`pip download --no-deps`, nothing installed), patches those lines
mechanically until every file parses, and writes them under typings/_tensorrt/ (git-ignored),
which mypy_path names. Exit status 0 when the stubs are in place, 1 with a one-line reason.
"""

from __future__ import annotations

import argparse
import ast
import keyword
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PIN = "10.13.0.35.1"
PACKAGES = ("tensorrt", "tensorrt_bindings")
HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "_tensorrt"
_DEF = re.compile(r"^(?P<head>\s*def\s+\w+\s*\()(?P<params>.*)(?P<tail>\)\s*(->.*)?:.*)$")


def _split_params(text: str) -> list[str]:
    """Split a parameter list at top-level commas."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur))
    return out


def fix_def_line(line: str) -> str:
    """Repair one generated `def` line: keyword parameter names get a trailing underscore,
    parameters without a default after one with a default get `= ...`."""
    m = _DEF.match(line)
    if not m:
        return line
    params = _split_params(m.group("params"))
    fixed, seen_default = [], False
    for p in params:
        s = p.strip()
        name = re.split(r"[:=]", s, maxsplit=1)[0].strip()
        if keyword.iskeyword(name):
            s = s.replace(name, name + "_", 1)
        if s == "/":
            pass
        elif s.startswith("*"):
            seen_default = False if s == "*" else seen_default
        elif "=" in s:
            seen_default = True
        elif seen_default:
            s += " = ..."
        fixed.append(s)
    return f"{m.group('head')}{', '.join(fixed)}{m.group('tail')}"


def patch_source(text: str, name: str = "<stub>", limit: int = 200) -> tuple[str, int]:
    """Fix the lines ast rejects, one at a time, until the file parses; (text, lines fixed)."""
    lines = text.split("\n")
    fixes = 0
    for _ in range(limit):
        try:
            ast.parse("\n".join(lines), filename=name, feature_version=(3, 10))
            return "\n".join(lines), fixes
        except SyntaxError as exc:
            i = (exc.lineno or 0) - 1
            if not 0 <= i < len(lines):
                raise
            new = fix_def_line(lines[i])
            if new == lines[i]:
                raise SyntaxError(f"{name}:{i + 1}: cannot repair: {lines[i].strip()}") from None
            lines[i] = new
            fixes += 1
    raise SyntaxError(f"{name}: more than {limit} broken lines")


_SHADOW = re.compile(r"(->\s*|:\s*|\[\s*|,\s*|\|\s*)bool\b")


def unshadow_bool(text: str) -> tuple[str, int]:
    """The generated module defines `bool` (a DataType), which hides the builtin in every
    `-> bool` annotation of that module; point those at `builtins.bool`."""
    if not re.search(r"^bool\s*[:=]", text, re.MULTILINE):
        return text, 0
    text, n = _SHADOW.subn(r"\1builtins.bool", text)
    if n:
        lines = text.split("\n")
        at = next((i + 1 for i, ln in enumerate(lines) if ln.startswith("from __future__")), 0)
        lines.insert(at, "import builtins")
        text = "\n".join(lines)
    return text, n


def _from_installed() -> dict[str, bytes] | None:
    from importlib import metadata

    try:
        dist = metadata.distribution("tensorrt-stubs")
    except metadata.PackageNotFoundError:
        return None
    files: dict[str, bytes] = {}
    for f in dist.files or []:
        parts = Path(str(f)).parts
        if parts and parts[0] in PACKAGES and str(f).endswith(".pyi"):
            files[str(Path(*parts))] = Path(str(dist.locate_file(f))).read_bytes()
    return files or None


def _from_wheel(wheel: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with zipfile.ZipFile(wheel) as z:
        for n in z.namelist():
            if n.split("/")[0] in PACKAGES and n.endswith(".pyi"):
                files[n] = z.read(n)
    return files


def _download(tmp: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary",
        ":all:",
        "-d",
        str(tmp),
        f"tensorrt-stubs=={PIN}",
    ]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True)
    wheels = sorted(tmp.glob("tensorrt_stubs-*.whl"))
    if r.returncode != 0 or not wheels:
        last = (r.stderr or r.stdout).strip().splitlines()
        raise RuntimeError(
            f"pip download tensorrt-stubs=={PIN} failed: {last[-1] if last else '?'}"
        )
    return wheels[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="prepare patched TensorRT type stubs for mypy")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    ap.add_argument("--wheel", type=Path, help="a tensorrt_stubs-*.whl to take the stubs from")
    ap.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading the wheel when tensorrt-stubs is not installed",
    )
    args = ap.parse_args(argv)
    try:
        if args.wheel:
            files, origin = _from_wheel(args.wheel), str(args.wheel)
        else:
            got = _from_installed()
            if got:
                files, origin = got, "installed tensorrt-stubs"
            elif args.no_download:
                raise RuntimeError("tensorrt-stubs is not installed (and --no-download)")
            else:
                with tempfile.TemporaryDirectory() as td:
                    whl = _download(Path(td))
                    files, origin = _from_wheel(whl), whl.name
        if "tensorrt/__init__.pyi" not in files:
            raise RuntimeError(f"{origin}: no tensorrt/__init__.pyi inside")
        out: Path = args.out
        if out.exists():
            shutil.rmtree(out)
        total = 0
        for rel, data in sorted(files.items()):
            text, n = patch_source(data.decode("utf-8"), rel)
            text, _ = unshadow_bool(text)
            total += n
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
        (out / "SOURCE.txt").write_text(
            f"tensorrt-stubs ({origin}), {len(files)} files, {total} generated lines repaired "
            f"by {Path(__file__).name}; MIT licence, github.com/sync-dev-org/tensorrt-stubs\n",
            encoding="utf-8",
        )
    except (OSError, RuntimeError, SyntaxError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        print(f"get_tensorrt_stubs: error: {exc}", file=sys.stderr)
        return 1
    print(f"TensorRT stubs from {origin} -> {out} ({total} lines repaired)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
