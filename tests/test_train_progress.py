"""A training run in the background (`nohup edge-fer train ... > log`) says where it is: what it
trains on at the start, and a line at each quarter of every epoch (stderr is not a terminal)."""

from __future__ import annotations

import re

import pytest
from paths import fer_class_folders
from processes import run_cli

pytest.importorskip("torch")


def test_a_training_log_says_where_it_is(tmp_path) -> None:
    data = fer_class_folders(tmp_path / "faces", 4)
    out = tmp_path / "run"
    common = ["--max-batches", "4", "--batch-size", "4", "--threads", "1", "--precise-bn", "0"]
    argv = ["train", "--arch", "cnn4", "--data", str(data), "--out", str(out), *common]
    p = run_cli(*argv, "--epochs", "2")
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stderr.splitlines()
    assert re.fullmatch(
        r"training cnn4 \(0\.65M parameters\) on \d+ faces, selecting on .+ \(\d+\): "
        r"epochs 1-2 of 4 batches",
        lines[0],
    ), lines[0]
    for epoch in (1, 2):
        for k in (1, 2, 3, 4):  # every quarter, with the time so far and the running loss
            line = next(ln for ln in lines if ln.startswith(f"epoch {epoch}/2: {k}/4 batches ("))
            assert re.search(r"\(\d+ s, loss \d+\.\d{3}, acc \d\.\d{3}\)$", line), line
    # resumed for one more epoch: the start line says which epochs are left
    p = run_cli(*argv, "--epochs", "3", "--resume")
    assert p.returncode == 0, p.stderr[-2000:]
    assert any(ln.endswith("epochs 3-3 of 4 batches") for ln in p.stderr.splitlines())


def test_fer2013_training_files_alone_train_on_a_held_out_part(tmp_path) -> None:
    """A subset of FER2013's train/ (Training_* files, no PublicTest ones) is the FER2013 layout
    without its selection split: the run holds 10% of the faces out instead of failing."""
    import shutil

    from paths import fer_files

    for cls in ("happy", "sad"):
        (tmp_path / "faces" / cls).mkdir(parents=True)
        for f in fer_files(cls, "Training", 10):
            shutil.copy(f, tmp_path / "faces" / cls / f.name)
    argv = ["train", "--arch", "cnn4", "--data", str(tmp_path / "faces")]
    p = run_cli(*argv, "--out", str(tmp_path / "run"), "--epochs", "1", "--max-batches", "1",
                "--threads", "1", "--precise-bn", "0")  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    assert "on 18 faces, selecting on held-out 10% (2)" in p.stderr.splitlines()[0]
