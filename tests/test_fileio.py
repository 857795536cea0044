"""Atomic writes (edge_fer.fileio): the temporary file beside the target."""

from __future__ import annotations

from edge_fer import fileio


def test_long_names_are_written(tmp_path) -> None:
    """A 234-byte name (legal: a name may have 255) failed with "File name too long": the
    temporary name beside it added ~30 bytes. Also an annotated video's temporary file."""
    import cv2
    import numpy as np

    from edge_fer.runtime.sinks import VideoSink

    name = "y" * 230 + ".bin"
    fileio.write_bytes(tmp_path / name, b"data")
    assert (tmp_path / name).read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == [name]  # nothing else left beside it
    video = tmp_path / ("v" * 240 + ".avi")
    sink = VideoSink(str(video), 10.0, (64, 48))
    sink.write(np.zeros((48, 64, 3), np.uint8))
    sink.close()
    assert cv2.VideoCapture(str(video)).read()[0]


def test_json_with_keys_is_false_for_what_is_not_such_a_json(tmp_path) -> None:
    """A file nested 100k deep was a RecursionError out of the overwrite checks of eval and
    bench; not JSON, not UTF-8 or missing: False as well."""
    from edge_fer.fileio import json_with_keys

    cases = {
        "deep.json": "[" * 100_000 + "]" * 100_000,
        "text.json": "my notes",
        "list.json": "[1, 2]",
        "ok.json": '{"a": 1, "b": 2}',
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "latin1.json").write_bytes(b'{"a": "\xe9"}')
    got = {name: json_with_keys(tmp_path / name, {"a"}) for name in [*cases, "latin1.json"]}
    assert got == {n: {"a": 1, "b": 2} if n == "ok.json" else None for n in got}
    assert json_with_keys(tmp_path / "missing.json", {"a"}) is None
