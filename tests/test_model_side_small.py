"""Small model-side QA fixes: experiment's empty --archs / --variants, the compression study's
"INT8 nan", train --teacher FOLDER, train-eyes --val-fraction that empties a split, torch's
"TF32 ... oneDNN" warning on stderr, and prune / qat --skip-bad.

Real FER2013 / WebFaces files, `edge-fer` in child processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from paths import WEBFACES, fer_class_folders, fer_split_folders
from processes import refusal_line, run_cli

pytest.importorskip("torch")
pytest.importorskip("safetensors")

BAD = "happy/face_999.jpg"


error_line = refusal_line


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """The children's dataset cache: this module's own."""
    return dict(os.environ, EDGE_FER_CACHE=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def fer(tmp_path_factory) -> Path:
    """A FER2013-layout dataset of real faces: 10 Training faces per class (70: too few for
    INT8 calibration), 3 PrivateTest and 2 PublicTest."""
    root = tmp_path_factory.mktemp("fer") / "fer"
    return fer_split_folders(root, {"Training": 10, "PrivateTest": 3, "PublicTest": 2})


@pytest.fixture(scope="module")
def trained(fer, env, tmp_path_factory):
    """A tiny cnn4 run in RUNS/cnn4 (batches of 3: odd ones run without oneDNN), and the
    train process (its stderr)."""
    runs = tmp_path_factory.mktemp("runs")
    proc = run_cli("train", "--arch", "cnn4", "--data", fer, "--out", runs / "cnn4",
                   "--epochs", 1, "--max-batches", 2, "--batch-size", 3, "--threads", 1,
                   "--precise-bn", 0, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return runs, proc


# -- 1. experiment: an empty --archs / --variants was "all" ------------------------------------


@pytest.mark.shared("data/fer2013/train")
def test_experiment_refuses_an_empty_list(fer, tmp_path, env):
    # before: --archs "" trained the whole zoo (hours), --variants , every variant
    for argv, flag in ((["architectures", "--archs", ""], "--archs"),
                       (["grouping", "--variants", ","], "--variants"),
                       (["architectures", "--archs", " , "], "--archs")):  # fmt: skip
        proc = run_cli("experiment", *argv, "--data", fer, "--out", tmp_path / "o", env=env)
        line = error_line(proc)
        assert flag in line and "names nothing" in line, line
    assert not (tmp_path / "o").exists()


# -- 2. experiment: "INT8 nan" when too few faces to calibrate ---------------------------------


@pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
def test_int8_skipped_says_why_not_nan(fer, trained, tmp_path, env):
    runs, _ = trained
    proc = run_cli("experiment", "architectures", "--runs", runs, "--archs", "cnn4",
                   "--no-bundled", "--data", fer, "--out", tmp_path / "rep",
                   "--max-test-faces", 0, "--latency-threads", 1, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "nan" not in proc.stderr, proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if "accuracy FP32" in ln)
    assert "INT8 skipped: 70 training faces to calibrate on; at least 100" in line, line


# -- 3. train --teacher FOLDER -----------------------------------------------------------------


@pytest.mark.shared("data/fer2013/train")
def test_train_teacher_folder_is_named_a_folder(fer, tmp_path, env):
    proc = run_cli("train", "--arch", "cnn4", "--data", fer, "--out", tmp_path / "run",
                   "--teacher", tmp_path, "--epochs", 1, env=env)  # fmt: skip
    line = error_line(proc)
    assert f"--teacher {tmp_path}: is a folder, not a model file" in line, line
    assert not (tmp_path / "run").exists()


# -- 4. train-eyes --val-fraction that leaves a split empty ------------------------------------


@pytest.mark.shared("data/webfaces/WebFaces_GroundThruth.txt", "data/webfaces/images")
def test_train_eyes_names_val_fraction_not_data(tmp_path):
    # before: "--data no annotated faces with images in ... (train)"
    for frac, part in (("0.99999", "train"), ("0.00001", "val")):
        proc = run_cli("train-eyes", "--data", WEBFACES, "--out", tmp_path / "e.eyes",
                       "--val-fraction", frac, "--stages", 1, "--trees-per-stage", 1,
                       "--max-faces", 20, cwd=tmp_path)  # fmt: skip
        line = error_line(proc)
        assert f"--val-fraction {float(frac)} leaves no annotated faces" in line, line
        assert f"({part}):" in line and "--data" not in line, line
    assert not (tmp_path / "e.eyes").exists()


# -- 5. torch's "TF32 ... oneDNN" warning ------------------------------------------------------


@pytest.mark.shared("data/fer2013/train")
def test_training_prints_no_tf32_warning(trained):
    # before: torch.backends.mkldnn.flags(enabled=False) also set allow_tf32=True, and torch
    # warned "TF32 acceleration on top of oneDNN is available for Intel GPUs ..."
    _, proc = trained
    assert "TF32" not in proc.stderr and "oneDNN" not in proc.stderr, proc.stderr


# -- 6. prune / qat --skip-bad -----------------------------------------------------------------


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory) -> Path:
    """3 real Training faces per class in class folders, and a file that is no image."""
    root = fer_class_folders(tmp_path_factory.mktemp("corrupt") / "faces", 3)
    (root / BAD).write_bytes(b"not an image: a scraper's error page")
    return root


QUICK = ["--epochs", 1, "--max-batches", 1, "--batch-size", 16, "--threads", 1,
         "--bench-rounds", 1, "--no-progress", "--eval-tta", "none"]  # fmt: skip


@pytest.mark.shared("data/fer2013/train")
def test_prune_and_qat_suggest_and_take_skip_bad(corrupt, tmp_path, env):
    # before: no --skip-bad, so the error had no hint and a corrupt file was a dead end
    for cmd in ("prune", "qat"):
        proc = run_cli(cmd, "--data", corrupt, "--out", tmp_path / cmd, *QUICK, env=env)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{BAD}: cannot decode image (use --skip-bad to skip such files)" in proc.stderr
        assert not (tmp_path / cmd).exists()
    out = tmp_path / "pruned"
    proc = run_cli("prune", "--data", corrupt, "--out", out, *QUICK, "--method", "unstructured",
                   "--steps", 1, "--skip-bad", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    said = f"--skip-bad skipped 1 bad entry of the fine-tuning faces: {BAD}: cannot decode image"
    assert f"edge-fer prune: {said}" in proc.stderr, proc.stderr
    assert said in (out / "report.md").read_text()
    rep = json.loads((out / "report.json").read_text())
    entry = [f"{BAD}: cannot decode image"]
    assert rep["skipped"]["fine_tuning"] == {"skipped": 1, "skipped_entries": entry}
    # (a class-folder dataset is also the report's: its faces skip the same file)
    assert rep["setup"]["skipped_entries"] == entry
