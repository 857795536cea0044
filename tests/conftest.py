"""Shared test setup: the `shared` marker, which skips a test (with the reason) when the
../shared data it reads is absent, and the tiny FER2013 dataset, cnn4 run and ONNX model that
several modules' CLI tests share (one per session; treat them as read-only). Paths and
helpers live in paths.py and runtime_helpers.py.

    @pytest.mark.shared("data/fer2013/train", "reference/pico/facefinder")
    def test_...(): ...

    pytestmark = pytest.mark.shared("data/fer2013/train")   # a whole module
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from paths import fer_split_folders, missing_reason
from processes import run_cli


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "shared(*rels): needs these paths under ../shared (or $EDGE_FER_SHARED); "
        "skips with the reason when one is absent",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # a skip mark (not a skip in setup): -rs then names the test, not this file
    for item in items:
        rels = [rel for mark in item.iter_markers("shared") for rel in mark.args]
        reason = missing_reason(*rels) if rels else None
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


# ---- a tiny cnn4 run of real FER2013 faces, trained and exported by `edge-fer` in child
# processes: shared by the session's modules, so a test must not write into them (copy to
# tmp_path first). Only tests marked for ../shared's FER2013 (train and test) and torch and
# safetensors should ask for them.


@pytest.fixture(scope="session")
def tiny_fer_env(tmp_path_factory) -> dict:
    """The children's dataset cache: this session's own."""
    return dict(os.environ, EDGE_FER_CACHE=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_fer(tmp_path_factory) -> Path:
    """A FER2013-layout dataset of real faces: 15 Training faces per class (105: enough for
    INT8 calibration), 2 PublicTest and 2 PrivateTest."""
    reason = missing_reason("data/fer2013/train", "data/fer2013/test")
    if reason:  # (the tests asking for it carry the mark: a safety net)
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("fer") / "fer"
    return fer_split_folders(root, {"Training": 15, "PublicTest": 2, "PrivateTest": 2})


@pytest.fixture(scope="session")
def tiny_cnn4_run(tiny_fer, tiny_fer_env, tmp_path_factory) -> Path:
    """A tiny finished cnn4 run folder."""
    out = tmp_path_factory.mktemp("runs") / "cnn4"
    proc = run_cli("train", "--arch", "cnn4", "--data", tiny_fer, "--out", out, "--epochs", 1,
                   "--max-batches", 1, "--batch-size", 8, "--threads", 1, "--precise-bn", 0,
                   env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def tiny_cnn4_onnx(tiny_cnn4_run, tiny_fer_env, tmp_path_factory) -> Path:
    """`tiny_cnn4_run`'s best checkpoint exported to ONNX by `edge-fer export`."""
    out = tmp_path_factory.mktemp("onnx") / "cnn4.onnx"
    proc = run_cli("export", "--checkpoint", tiny_cnn4_run / "best.safetensors", "--out", out,
                   env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out
