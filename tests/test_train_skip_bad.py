"""`edge-fer train --skip-bad` and `average --skip-bad`: a scraped dataset with one corrupt
image stopped training with no way round it (eval and calibrate had the flag); and
`train-cascade --resume` with a changed --depth blamed the run's own cascade.pico.

Real FER2013 faces in class folders plus a corrupt image, `edge-fer` in child processes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from paths import fer_class_folders, shared
from processes import run_cli

pytest.importorskip("torch")
pytest.importorskip("safetensors")

BAD = "happy/face_999.jpg"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """3 real Training faces per FER2013 class in class folders, and one file that is no image."""
    shared("data/fer2013/train")
    root = fer_class_folders(tmp_path_factory.mktemp("skip_bad") / "faces", 3)
    (root / BAD).write_bytes(b"not an image: a scraper's error page")
    return root


@pytest.fixture
def env(tmp_path) -> dict:
    """The children's dataset cache: this test's own (a cached decode of another test's)."""
    return dict(os.environ, EDGE_FER_CACHE=str(tmp_path / "cache"))


def _train(data: Path, out: Path, env: dict, *flags: str):
    argv = ["train", "--arch", "cnn4", "--data", data, "--out", out, "--epochs", "1"]
    argv += ["--max-batches", "2", "--batch-size", "8", "--threads", "1", "--precise-bn", "0"]
    return run_cli(*argv, *flags, env=env)


def _error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_train_error_on_a_corrupt_image_suggests_skip_bad(data, tmp_path, env):
    p = _train(data, tmp_path / "run", env)
    assert p.returncode == 2, p.stderr
    line = _error(p.stderr)
    assert f"{BAD}: cannot decode image (use --skip-bad to skip such files)" in line
    assert not (tmp_path / "run").exists()


def test_train_skip_bad_trains_and_reports_the_skipped_file(data, tmp_path, env):
    out = tmp_path / "run"
    p = _train(data, out, env, "--skip-bad")
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["skipped"] == 1
    assert result["skipped_entries"] == [f"{BAD}: cannot decode image"]
    assert json.loads((out / "result.json").read_text())["skipped"] == 1
    assert json.loads((out / "config.json").read_text())["skip_bad"] is True
    assert "skipped 1 bad entry" in p.stderr and BAD in p.stderr

    # a resume without the flag keeps the run's --skip-bad (as it keeps its other settings)
    p = _train(data, out, env, "--resume", "--epochs", "2")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["skipped"] == 1
    assert len((out / "log.csv").read_text().splitlines()) == 3  # header and 2 epochs

    # `average` takes the run's --skip-bad from its checkpoint
    avg = tmp_path / "avg.safetensors"
    p = run_cli("average", out / "last.safetensors", "--out", avg, "--threads", "1", env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["skipped"] == 1


def test_resume_with_skip_bad_of_a_run_started_without_it(data, tmp_path, env):
    """A run begun on a clean dataset, a corrupt file added since: the resume keeps the run's
    settings (no --skip-bad), and says so instead of suggesting the flag it was just given."""
    clean = tmp_path / "faces"
    shutil.copytree(data, clean)
    (clean / BAD).unlink()
    out = tmp_path / "run"
    assert _train(clean, out, env).returncode == 0
    (clean / BAD).write_bytes(b"\x89PNG broken")
    p = _train(clean, out, env, "--resume", "--epochs", "2", "--skip-bad")
    assert p.returncode == 2, p.stderr
    assert "not applied: --skip-bad True (the run's: False)" in p.stderr
    line = _error(p.stderr)
    assert f"{BAD}: cannot decode image" in line and "started without --skip-bad" in line
    assert "use --skip-bad" not in line

    # `average --skip-bad` reads such data all the same
    avg = tmp_path / "avg.safetensors"
    argv = ["average", out / "last.safetensors", "--out", avg, "--threads", "1"]
    p = run_cli(*argv, env=env)
    assert p.returncode == 2 and "(use --skip-bad to skip such files)" in _error(p.stderr)
    p = run_cli(*argv, "--skip-bad", env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["skipped"] == 1


# ---- train-cascade --resume with another --depth --------------------------------------------


def _cascade_argv(boxes: Path, bg: Path, out: Path, depth: str, *extra: str) -> list:
    return ["train-cascade", "--boxes", boxes, "--backgrounds", bg, "--out", out, "--tests", "32",
            "--depth", depth, "--stage-trees", "2", "--threads", "1", *extra]  # fmt: skip


def test_cascade_resume_with_another_depth_names_the_option(tmp_path):
    from edge_fer.cascade_train.annotations import read_webfaces

    webfaces, backgrounds = shared("data/webfaces"), shared("data/backgrounds")
    images, _ = read_webfaces(webfaces)
    im = images[0]
    shutil.copy(im.path, tmp_path / im.path.name)
    f = im.faces[0]
    boxes = tmp_path / "boxes.txt"
    boxes.write_text(f"{im.path.name} {f.col - f.size / 2:.1f} {f.row - f.size / 2:.1f} "
                     f"{f.size:.1f} {f.size:.1f}\n")  # fmt: skip
    bg = tmp_path / "bg"
    bg.mkdir()
    for p in sorted(backgrounds.iterdir())[:2]:
        shutil.copy(p, bg / p.name)
    out = tmp_path / "run"
    p = run_cli(*_cascade_argv(boxes, bg, out, "3", "--max-stages", "1"))
    assert p.returncode == 0, p.stderr
    before = {q.name: q.read_bytes() for q in out.iterdir()}
    p = run_cli(*_cascade_argv(boxes, bg, out, "4", "--max-stages", "2", "--resume"))
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert "--depth 4 differs from the run's 3: resume with --depth 3" in p.stderr
    assert "not this run's cascade" not in p.stderr
    assert {q.name: q.read_bytes() for q in out.iterdir()} == before
