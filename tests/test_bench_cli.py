"""`edge-fer bench` on files, as a new user meets it: what it says when it exits 1 (in `run`'s
words) and when it exits 0, and its table's source names.

Real files (photos and clips written with OpenCV), real models, real `edge-fer` runs through
`edge_fer.cli.main`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from paths import random_photos
from processes import run_main
from runtime_helpers import demo_faces_clip


def _lines(stderr: str) -> list[str]:
    """edge-fer's own error lines (not its warnings, not the first-run compile notice)."""
    return [ln for ln in stderr.splitlines() if ln.startswith("edge-fer") and ": error: " in ln]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return demo_faces_clip(tmp_path_factory.mktemp("clip") / "faces.avi", 24)


# ---- exit 1: bench says why, in run's words --------------------------------------------------


def test_bench_exit_1_ends_with_the_line_run_ends_with(tmp_path, capsys):
    """A folder with a zero-byte photo: `run` exits 1 with a last line saying why; `bench`
    exited 1 too but said nothing after the skip warning. Now both end with the same line,
    from one helper (RunResult.why_exit_1), and the results file keeps it."""
    folder = random_photos(tmp_path / "shots")
    why = "1 of 3 image files could not be used and was skipped (listed above); the others were processed"
    rc, _, err = run_main(["run", folder, "--quiet"], capsys)
    assert rc == 1 and _lines(err) == [f"edge-fer run: error: {why}"], err
    out = tmp_path / "b.json"
    rc, table, err = run_main(["bench", folder, "--backend", "onnxruntime", "--json", out], capsys)
    assert rc == 1, err
    assert _lines(err) == [f"edge-fer bench: error: {why}"], err
    assert err.splitlines()[-1] == f"edge-fer bench: error: {why}", err  # after "saved"
    assert "onnxruntime" in table
    report = json.loads(out.read_text())
    assert [(r["exit_code"], r["exit_reason"]) for r in report["results"]] == [(1, why)]


def test_bench_of_a_truncated_clip_says_the_source_ended_early(clip, tmp_path, capsys):
    """The other cause of exit 1: a file that ends before the frames its header declares."""
    cut = tmp_path / "cut.avi"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    rc, _, err = run_main(["bench", cut, "--backend", "onnxruntime", "--json",
                           tmp_path / "b.json"], capsys)  # fmt: skip
    assert rc == 1, err
    (line,) = _lines(err)
    assert line.startswith(f"edge-fer bench: error: the source ended early: {cut}: "), err


def test_bench_that_exits_0_prints_no_error(tmp_path, capsys):
    folder = random_photos(tmp_path / "shots", bad=False)
    rc, _, err = run_main(["bench", folder, "--backend", "onnxruntime", "--json",
                           tmp_path / "b.json"], capsys)  # fmt: skip
    assert rc == 0 and _lines(err) == [], err
    report = json.loads((tmp_path / "b.json").read_text())
    assert [r["exit_reason"] for r in report["results"]] == [None]


# ---- the table -------------------------------------------------------------------------------


def test_bench_table_prints_a_name_with_a_newline_on_one_line(tmp_path, capsys):
    folder = random_photos(tmp_path / "two\nlines", bad=False)
    out = tmp_path / "b\n.json"
    rc, table, err = run_main(["bench", folder, "--backend", "onnxruntime", "--json", out], capsys)
    assert rc == 0, err
    assert table.splitlines()[0].startswith(f"source {str(folder)!r}  64x48"), table
    assert f"saved {str(out)!r}" in err.splitlines(), err


# ---- what --json may replace -----------------------------------------------------------------


def test_bench_json_replaces_an_earlier_bench_and_nothing_else_without_force(tmp_path, capsys):
    """`bench --json notes.json` replaced the user's notes (and a photo named by mistake) with
    the table; repeating --backend ran the bench twice; --queue-size had no upper bound."""
    folder = random_photos(tmp_path / "shots", bad=False)
    notes = tmp_path / "notes.json"
    notes.write_text("my notes")
    argv = ["bench", folder, "--backend", "onnxruntime", "--backend", "onnxruntime"]
    rc, _, err = run_main([*argv, "--json", notes], capsys)
    refusal = (
        f"edge-fer bench: error: --json {notes} exists and is not an earlier bench's results; "
        "pass --force to replace it, or give another name"
    )
    assert rc == 2 and _lines(err) == [refusal], err
    assert notes.read_text() == "my notes"
    out = tmp_path / "b.json"
    for _ in range(2):  # an earlier bench is replaced
        rc, _, err = run_main([*argv, "--json", out], capsys)
        assert rc == 0, err
    assert [r["backend"] for r in json.loads(out.read_text())["results"]] == ["onnxruntime"]
    rc, _, err = run_main([*argv, "--json", notes, "--force"], capsys)
    assert rc == 0 and "results" in json.loads(notes.read_text()), err
    rc, _, err = run_main([*argv, "--json", out, "--queue-size", "100000"], capsys)
    assert rc == 2 and "--queue-size must be <= 64, got 100000" in err, err


def test_bench_json_to_a_redirected_stdout_appends_and_odd_json_is_not_a_traceback(
    tmp_path, capsys
) -> None:
    """`bench --json /dev/stdout >> log` was refused as "exists and is not an earlier bench's
    results" (the log is a file to is_file()); a JSON file nested 100k deep was a
    RecursionError traceback from the check that reads it."""
    import subprocess
    import sys

    log = tmp_path / "log.txt"
    log.write_text("previous log line\n")
    cmd = f"{sys.executable} -m edge_fer.cli.main bench --synthetic 64x64 --frames 2 "
    proc = subprocess.run(
        ["bash", "-c", cmd + f"--json /dev/stdout >> '{log}'"],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = log.read_text()
    assert text.startswith("previous log line\n") and '"results"' in text
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    rc, _, err = run_main(
        ["bench", "--synthetic", "64x64", "--frames", "2", "--json", deep], capsys
    )
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--force" in err, err
