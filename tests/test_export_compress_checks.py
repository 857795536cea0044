"""`edge-fer export --int8`, `prune` and `qat`: what a QA pass found. A FER2013 --eval-split of
a dataset without FER2013's splits was ignored by export; two compress runs into one --out
published over each other (no lock, as `train` takes on its --out); flags that only one
--method uses, --bn for a checkpoint's trained batch norms and the fine-tuning's flags with
--epochs 0 did nothing. Each is now refused in one line (exit 2).

Real runs: conftest's tiny cnn4 run of real FER2013 faces and its ONNX model (read-only), or
noise faces in class folders; `edge-fer` in this process or in child processes.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from paths import FER_MODEL, needs_modules, noise_faces
from processes import cache_env, refusal_line, run_cli, run_main, run_python, spawn_cli

pytest.importorskip("onnx")
needs_fer = pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
needs_torch = needs_modules("torch", "safetensors")

# one short epoch on one thread, timed once, one view per face
QUICK = ["--epochs", 1, "--max-batches", 1, "--batch-size", 16, "--threads", 1,
         "--bench-rounds", 1, "--no-progress", "--eval-tta", "none"]  # fmt: skip
FLAGS = {"prune": ["--method", "unstructured", "--steps", 1], "qat": ["--calib-faces", 16]}


@pytest.fixture(scope="module")
def noise(tmp_path_factory) -> Path:
    """120 noise faces in class folders (enough to calibrate on): no FER2013 splits."""
    return noise_faces(tmp_path_factory.mktemp("noise") / "faces", 120)


# ---- a) export --int8 --eval-split of a dataset without FER2013's splits --------------------


def test_export_int8_refuses_a_fer2013_split_of_class_folders(noise, tmp_path, capsys,
                                                              monkeypatch):  # fmt: skip
    # before: the split was dropped without a word and every image was scored (exit 0 or 1)
    monkeypatch.setenv("EDGE_FER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "int8"
    rc, _, err = run_main(["export", "--int8", "--data", noise, "--eval-split", "public-test",
                           "--int8-out", out, "--target", "cpu"], capsys)  # fmt: skip
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "--eval-split public-test names a FER2013 split" in lines[0], err
    assert "class-folders" in lines[0] and not out.exists(), err
    # the library names its parameter; "all" is a split every layout has
    from edge_fer.errors import UserError
    from edge_fer.export.int8 import check_int8_out

    with pytest.raises(UserError) as exc:
        check_int8_out(out, False, noise, "test")
    assert exc.value.param == "eval_split" and "FER2013 split" in exc.value.message
    check_int8_out(out, False, noise, "all")


def test_report_module_refuses_a_fer2013_split_of_class_folders(noise, tmp_path):
    # `python -m edge_fer.compress.report`, which the int8 check's report is made with: the
    # split was dropped there too, and its refusal names the flag
    out = tmp_path / "report"
    proc = run_python("-m", "edge_fer.compress.report", "--data", noise, "--split", "test",
                      "--out", out, f"fp32={FER_MODEL}", env=cache_env(tmp_path))  # fmt: skip
    line = refusal_line(proc)
    assert line.startswith("edge-fer report: error: --split test names a FER2013 split"), line
    assert not out.exists()


# ---- b) two compress runs into one --out ----------------------------------------------------


@needs_fer
@needs_torch
@pytest.mark.parametrize("cmd", ["prune", "qat"])
def test_second_compress_run_into_the_same_out_is_refused(cmd, tiny_cnn4_run, tiny_fer,
                                                          tiny_fer_env, tmp_path):  # fmt: skip
    # before: both found --out free of earlier outputs and published over each other
    out, ckpt = tmp_path / "run", tiny_cnn4_run / "best.safetensors"
    argv = [cmd, "--model", ckpt, "--data", tiny_fer, "--out", out, *QUICK, *FLAGS[cmd]]
    first = spawn_cli(*argv, EDGE_FER_CACHE=tiny_fer_env["EDGE_FER_CACHE"])
    try:
        assert first.stderr is not None
        while "source:" not in (line := first.stderr.readline()):  # its --out is locked now
            assert line, first.communicate()[1]
        os.kill(first.pid, signal.SIGSTOP)  # held there, inside its run
        second = run_cli(*argv, "--seed", 1, env=tiny_fer_env, timeout=300)
        line = refusal_line(second)
        assert f"{out}: another edge-fer command is writing this folder" in line, line
    finally:
        os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert rep["args"]["seed"] == 0  # the first run's report, beside its own models
    # the lock is gone with the run: a --force rerun takes it
    proc = run_cli(*argv, "--force", env=tiny_fer_env, timeout=300)
    assert proc.returncode == 0, proc.stderr


# ---- c) flags the run would ignore (the refusal table: tests/test_compress_qa.py) --------


@needs_fer
@needs_torch
def test_bn_applies_to_a_model_rebuilt_from_onnx(tiny_cnn4_run, tiny_cnn4_onnx, tiny_fer,
                                                 tiny_fer_env, tmp_path):  # fmt: skip
    # a checkpoint's batch norms are trained ones: --bn did nothing (before: exit 0)
    out = tmp_path / "ckpt"
    proc = run_cli("prune", "--model", tiny_cnn4_run / "best.safetensors", "--data", tiny_fer,
                   "--out", out, *QUICK, *FLAGS["prune"], "--bn", "frozen", env=tiny_fer_env,
                   timeout=300)  # fmt: skip
    line = refusal_line(proc)
    assert "--bn applies to a model rebuilt from ONNX" in line and "best.safetensors" in line
    assert not out.exists()  # (the folder made for the lock goes again)
    # from ONNX it applies; the settings record what the method used, and no unused default
    out = tmp_path / "onnx"
    proc = run_cli("prune", "--model", tiny_cnn4_onnx, "--data", tiny_fer, "--out", out, *QUICK,
                   *FLAGS["prune"], "--bn", "frozen", env=tiny_fer_env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    args = json.loads((out / "report.json").read_text())["args"]
    assert (args["bn"], args["sparsity"], args["steps"], args["lr"]) == ("frozen", 0.5, 1, 0.01)
    assert args["round_to"] is None and args["importance"] is None, args
