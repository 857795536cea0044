"""The calibration report: per-tensor ranges and the faces they came from, as JSON.

    {
      "format": "edge-fer-calibration", "version": 1,
      "model": {"path", "sha256", "input"},
      "method": "entropy", "percentile": null, "num_bins": 2048,
      "calibration_set": {"source", "faces", "seen", "class_counts", "ids_file",
                          "skipped_entries" (only when --skip-bad skipped some)},
      "tensors": {name: {"amax", "scale", "scale_hex", "min", "max", "absmax", "clipped"}},
      "skipped_tensors": [...], "outputs": {...}, "edge_fer_version": ...,
      "methods_compared": {method: {"percentile", "tensors": {name: {"amax", "clipped"}}}}
    }

scale = amax / 127 (symmetric INT8), scale_hex its float32 bits as the TensorRT cache writes
them; clipped is the fraction of the calibration values with |x| > amax. `methods_compared`
holds the ranges every method gives on the same calibration pass (`compare`: computed from the
kept histograms, no second run), the chosen one included.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge_fer.fileio import portable_path, sha256_file
from edge_fer.quantize.trt_cache import scale_hex

FORMAT = "edge-fer-calibration"
VERSION = 1


def build(ranges, faces, model_path: str | os.PathLike, extra: dict | None = None) -> dict:
    """The report dict for a `ranges.RangeSet` computed on `calib_data.CalibFaces`."""
    from edge_fer import __version__

    tensors = {}
    for name, r in ranges.tensors.items():
        tensors[name] = {
            "amax": _f(r.amax),
            "scale": _f(r.scale),
            "scale_hex": scale_hex(r.scale),
            "min": _f(r.min),
            "max": _f(r.max),
            "absmax": _f(r.absmax),
            "clipped": _f(r.clipped),
        }
    rep = {
        "format": FORMAT,
        "version": VERSION,
        "model": {
            "path": portable_path(model_path),
            "sha256": sha256_file(model_path),
            "input": ranges.input_name,
        },
        "method": ranges.method,
        "percentile": ranges.percentile,
        "num_bins": ranges.num_bins,
        "calibration_set": {
            "source": faces.source,
            "faces": len(faces),
            "seen": int(faces.seen),
            "class_counts": faces.class_counts(),
            "notes": list(faces.notes),
        },
        "tensors": tensors,
        "skipped_tensors": list(ranges.skipped),
        "edge_fer_version": __version__,
    }
    if getattr(faces, "skipped_entries", None):  # which files the count is of
        rep["calibration_set"]["skipped_entries"] = list(faces.skipped_entries)
    if extra:
        rep.update(extra)
    return rep


def compare(collection, percentile: float | None = None) -> dict:
    """{method: {"percentile", "tensors": {name: {"amax", "clipped"}}}} for every method, from
    one `ranges.Collection` (`percentile`: the one the percentile method uses; default 99.99)."""
    from edge_fer.quantize import ranges as R

    out = {}
    for method in R.METHODS:
        rs = R.compute(collection, method, percentile if method == "percentile" else None)
        tensors = {n: {"amax": _f(r.amax), "clipped": _f(r.clipped)} for n, r in rs.tensors.items()}
        out[method] = {"percentile": rs.percentile, "tensors": tensors}
    return out


def _f(v: float) -> float:
    return float(f"{float(v):.7g}")


def ids_text(faces) -> str:
    """One face id per line (dataset file names, or file#frame:x,y,w,h), with a comment header.
    A backslash, newline or carriage return in a name is escaped (\\, \\n, \\r): a name
    with a newline was two ids. Write it with `encoding="utf-8", errors="surrogateescape"`,
    so a file name that is not UTF-8 keeps its bytes."""
    head = f"# {len(faces)} calibration faces from {faces.source}\n"
    return head + "".join(f"{_escape(str(i))}\n" for i in faces.ids)


def read_ids(path: str | os.PathLike) -> list[str]:
    """The ids of an ids file (comments and blank lines skipped). UnicodeDecodeError for a
    file that is not text (NUL bytes: a model given by mistake); bytes of a file name that is
    not UTF-8 come back as the surrogates Python names such a file with."""
    out = []
    raw = Path(path).read_bytes()
    if b"\0" in raw:
        raise UnicodeDecodeError("utf-8", raw[:1], 0, 1, "a NUL byte: not a text file")
    text = raw.decode("utf-8", errors="surrogateescape")
    # Notepad's byte order mark became part of the first id (no removeprefix: Python 3.8)
    if text.startswith("\ufeff"):  # noqa: FURB188
        text = text[1:]
    for line in text.splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            out.append(_unescape(s))
    return out


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}


def _escape(s: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in s)


def _unescape(s: str) -> str:
    import re

    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), s)
