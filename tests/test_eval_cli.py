"""`edge-fer eval` on datasets with bad entries, the bundled model, in real child processes on
real files:

- an image over 100 Mpx in a dataset is a bad entry like an undecodable one (refused naming it,
  or skipped with --skip-bad), never decoded; before, a 12000x12000 PNG of 140 KB was decoded
  (a 30000x30000 one took 1.9 GB) and joined the dataset as a face;
- --skip-bad names the files it skipped (the first ones and how many more), in the summary and
  the JSON report; before, it gave a count only.

(eval of a model trained here: test_export_classify.py)
"""

from __future__ import annotations

import json
from pathlib import Path

from paths import noise_faces
from processes import cache_env, run_cli, single_line

HUGE = "12000x12000 pixels is over the 100 Mpx limit for images"


def _eval(data: Path, *extra: str) -> list[str]:
    return ["eval", "--data", str(data), "--tta", "none", "--latency-samples", "0",
            "--no-progress", *extra]  # fmt: skip


# -- an image over 100 Mpx in a dataset --------------------------------------------------------


def test_eval_refuses_or_skips_an_image_over_100_mpx_naming_it(tmp_path, huge_png):
    data = noise_faces(tmp_path / "data", 30)
    (data / "happy" / "huge.png").write_bytes(huge_png)
    line = single_line(run_cli(*_eval(data), env=cache_env(tmp_path)))
    assert f"{data / 'happy' / 'huge.png'}: {HUGE}" in line and "--skip-bad" in line, line
    rep_path = tmp_path / "rep.json"
    p = run_cli(*_eval(data, "--skip-bad", "--json", str(rep_path)), env=cache_env(tmp_path))
    assert p.returncode == 0, p.stderr
    assert f"skipped   happy/huge.png: {HUGE}" in p.stdout.splitlines(), p.stdout
    rep = json.loads(rep_path.read_text())
    assert rep["n"] == 30 and rep["skipped"] == 1
    assert rep["skipped_entries"] == [f"happy/huge.png: {HUGE}"]


# -- --skip-bad names what it skipped ----------------------------------------------------------


def test_eval_skip_bad_names_the_first_skipped_files_and_counts_the_rest(tmp_path):
    data = noise_faces(tmp_path / "data", 30)
    bad = [f"sad/bad{k}.png" for k in range(7)]
    for name in bad:
        (data / name).write_bytes(b"not an image")
    shown = "; ".join(f"{name}: cannot decode image" for name in bad[:5]) + "; and 2 more"
    for _ in range(2):  # decoded, then from the dataset cache: named both times
        rep_path = tmp_path / "rep.json"
        p = run_cli(*_eval(data, "--skip-bad", "--json", str(rep_path)), env=cache_env(tmp_path))
        assert p.returncode == 0, p.stderr
        assert f"skipped   {shown}" in p.stdout.splitlines(), p.stdout
        rep = json.loads(rep_path.read_text())
        assert rep["skipped"] == 7
        assert rep["skipped_entries"] == [f"{name}: cannot decode image" for name in bad]
