"""Training runs whose folder names are not UTF-8 (bytes of another encoding: Linux allows
them, and Python names them with surrogate escapes): written, then read back by --resume,
export and average. Before: safetensors opens files by UTF-8 name only, so every checkpoint
of such a run was "not an edge-fer checkpoint"."""

from __future__ import annotations

import json
import os

import pytest
from paths import fer_class_folders
from processes import run_cli

pytestmark = pytest.mark.shared("data/fer2013/train")

TINY = ("--arch", "cnn4", "--epochs", "1", "--max-batches", "2", "--batch-size", "16",
        "--threads", "1", "--patience", "0")  # fmt: skip


def test_a_run_in_a_folder_named_in_another_encoding(tmp_path):
    data = fer_class_folders(tmp_path / "faces", per_class=6)
    run = tmp_path / os.fsdecode(b"caf\xe9")  # Latin-1 "café"
    r = run_cli("train", "--data", data, "--out", run, *TINY, "--average-last", "1", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run / "result.json").read_text())["averaged"]["checkpoints"]
    r = run_cli("train", "--data", data, "--out", run, "--resume", "--epochs", "2",
                "--max-batches", "2", "--threads", "1", timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    onnx = run / "m.onnx"
    r = run_cli("export", "--checkpoint", run / "best.safetensors", "--out", onnx, "--no-check")
    assert r.returncode == 0 and onnx.is_file(), r.stderr[-2000:]
    snaps = sorted((run / "snapshots").glob("*.safetensors"))
    r = run_cli("average", *snaps, "--out", run / "avg.safetensors", timeout=300)
    assert r.returncode == 0 and (run / "avg.safetensors").is_file(), r.stderr[-2000:]
