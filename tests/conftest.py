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
from paths import (
    FER,
    black_png,
    cnn4_config,
    fer_class_folders,
    fer_split_folders,
    missing_reason,
)
from processes import run_cli


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "shared(*rels): needs these paths under ../shared (or $EDGE_FER_SHARED); "
        "skips with the reason when one is absent",
    )


@pytest.fixture(scope="session", autouse=True)
def _session_cache_folder(tmp_path_factory):
    """The session's own edge-fer cache folder, for this process and its children: the tests
    wrote into the user's (their temporary datasets' decodes; the record of written videos,
    which keeps the latest 1,000, so a test run pushed the user's own videos out). The
    compiled kernels are still taken from the user's folder (keyed by the code: reused)."""
    from edge_fer.cache import numba_cache_dir

    kernels = numba_cache_dir()
    saved = {k: os.environ.get(k) for k in ("EDGE_FER_CACHE", "NUMBA_CACHE_DIR")}
    os.environ["EDGE_FER_CACHE"] = str(tmp_path_factory.mktemp("edge-fer-cache"))
    if kernels:
        os.environ["NUMBA_CACHE_DIR"] = kernels
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


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


def _fer_subset(tmp_path_factory, counts: dict) -> Path:
    """A FER2013-layout folder of real faces, `counts` per split name and class."""
    reason = missing_reason("data/fer2013/train", "data/fer2013/test")
    if reason:  # (the tests asking for it carry the mark: a safety net)
        pytest.skip(reason)
    return fer_split_folders(tmp_path_factory.mktemp("fer") / "fer", counts)


@pytest.fixture(scope="session")
def tiny_fer_env(tmp_path_factory) -> dict:
    """The children's dataset cache: this session's own."""
    return dict(os.environ, EDGE_FER_CACHE=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_fer(tmp_path_factory) -> Path:
    """A FER2013-layout dataset of real faces: 15 Training faces per class (105: enough for
    INT8 calibration), 2 PublicTest and 2 PrivateTest."""
    return _fer_subset(tmp_path_factory, {"Training": 15, "PublicTest": 2, "PrivateTest": 2})


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


@pytest.fixture(scope="session")
def small_fer(tmp_path_factory) -> Path:
    """A FER2013-layout dataset of real faces: 10 Training faces per class (70: too few for
    INT8 calibration), 3 PrivateTest and 2 PublicTest."""
    return _fer_subset(tmp_path_factory, {"Training": 10, "PrivateTest": 3, "PublicTest": 2})


@pytest.fixture(scope="session")
def small_fer_odd_batch_run(small_fer, tiny_fer_env, tmp_path_factory):
    """A tiny cnn4 run of `small_fer` in RUNS/cnn4 (batches of 3: odd ones run without
    oneDNN), and the train process (its stderr)."""
    runs = tmp_path_factory.mktemp("runs")
    proc = run_cli("train", "--arch", "cnn4", "--data", small_fer, "--out", runs / "cnn4",
                   "--epochs", 1, "--max-batches", 2, "--batch-size", 3, "--threads", 1,
                   "--precise-bn", 0, env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return runs, proc


# ---- class folders of real faces and a 7-class cnn4 run trained in-process on them (the same
# rule: read them, never write into them)


@pytest.fixture(scope="session")
def four_faces_per_class(tmp_path_factory) -> Path:
    """4 real Training faces per FER2013 class, in class folders."""
    return fer_class_folders(tmp_path_factory.mktemp("qa") / "faces", 4)


@pytest.fixture(scope="session")
def other_class_faces(tmp_path_factory) -> Path:
    """Real faces under two class names that are not FER2013's."""
    import shutil

    dst = tmp_path_factory.mktemp("qa") / "ab"
    for name, cls in (("alpha", "happy"), ("beta", "sad")):
        (dst / name).mkdir(parents=True)
        for i, f in enumerate(sorted((FER / "train" / cls).glob("Training_*.jpg"))[:6]):
            shutil.copy(f, dst / name / f"f{i}.jpg")
    return dst


@pytest.fixture(scope="session")
def cnn4_run7(four_faces_per_class, tmp_path_factory) -> Path:
    """A finished 7-class cnn4 run folder, trained on `four_faces_per_class`."""
    from edge_fer.train.trainer import train

    out = tmp_path_factory.mktemp("qa") / "run7"
    train(cnn4_config(four_faces_per_class, out))
    return out


@pytest.fixture(scope="session")
def huge_png(tmp_path_factory) -> bytes:
    """A black 12000x12000 PNG (140 KB): over the 100 Mpx limit for images."""
    p = tmp_path_factory.mktemp("huge") / "huge.png"
    black_png(p, 12000, 12000)
    return p.read_bytes()
