"""Batch-norm statistics measured on clean training faces (`edge-fer train --precise-bn`).

Real faces from ../shared, the bundled model's weights, a few batches of real training on one
thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from paths import FER_MODEL, fer_class_folders
from processes import run_cli

from edge_fer import labels as L

pytestmark = pytest.mark.shared("data/fer2013/train")
torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """6 real Training faces per class, in class folders."""
    return fer_class_folders(tmp_path_factory.mktemp("pbn") / "faces", 6)


def _bn_stats(model) -> list[np.ndarray]:
    from edge_fer.train.precise_bn import batch_norms

    return [b.running_mean.numpy().copy() for b in batch_norms(model)] + [
        b.running_var.numpy().copy() for b in batch_norms(model)
    ]


def test_statistics_are_the_clean_faces_and_nothing_else_changes(data) -> None:
    from edge_fer.data import load_dataset
    from edge_fer.models import create_model
    from edge_fer.preprocess import PreprocessSpec
    from edge_fer.train.precise_bn import batch_norms, precise_bn
    from edge_fer.train.trainer import normalise, predict
    from edge_fer.train.warm_start import warm_start

    faces = load_dataset(str(data), "all", size=48).images
    spec = PreprocessSpec(input_size=48, classes=tuple(L.FER2013))
    model = create_model("vgg", num_classes=7, in_channels=1)
    # the bundled weights, batch norms unfolded with these faces' statistics (same function)
    warm_start(model, str(FER_MODEL), "vgg", {}, faces, spec)
    before = predict(model, faces, spec, torch.device("cpu"))
    stat = ("running_mean", "running_var", "num_batches_tracked")
    weights = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith(stat)}
    for b in batch_norms(model):  # statistics of augmented faces, as training leaves them
        b.running_mean += 0.5
        b.running_var *= 2.0
    shifted = predict(model, faces, spec, torch.device("cpu"))
    assert np.abs(shifted - before).max() > 0.05
    model.train()
    n = precise_bn(model, faces, spec, "cpu", len(faces), batch=len(faces))
    assert n == len(batch_norms(model)) > 0
    assert model.training and all(b.momentum == 0.1 for b in batch_norms(model))
    for k, v in model.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k
    # the first batch norm's mean is the first convolution's mean output on the faces
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        z = conv(normalise(torch.from_numpy(faces)[:, None].float(), spec))
    first = batch_norms(model)[0]
    assert np.abs(z.mean((0, 2, 3)).numpy() - first.running_mean.numpy()).max() < 1e-4
    # measured on the faces warm_start measured: the function comes back
    after = predict(model, faces, spec, torch.device("cpu"))
    assert np.abs(after - before).max() < 1e-2
    # 0 faces: nothing measured
    stats = _bn_stats(model)
    assert precise_bn(model, faces, spec, "cpu", 0) == 0
    assert all(np.array_equal(a, b) for a, b in zip(stats, _bn_stats(model)))


@pytest.mark.parametrize("n", [0, 32])
def test_training_runs_save_measured_statistics(data, tmp_path, n) -> None:
    """The checkpoints carry statistics measured on the run's un-augmented training faces
    (the same sample every epoch), or with 0 the running averages over augmented ones."""
    from edge_fer.export.onnx import load_trained
    from edge_fer.train.precise_bn import precise_bn
    from edge_fer.train.trainer import TrainConfig, load_splits, train

    cfg = TrainConfig(
        arch="vgg", data=str(data), out=str(tmp_path / "run"), epochs=1, batch_size=8,
        threads=1, max_batches=2, lr=0.005, precise_bn=n,
    )  # fmt: skip
    train(cfg)
    model, spec, state = load_trained(tmp_path / "run" / "last.safetensors")
    assert state["config"]["precise_bn"] == n
    saved = _bn_stats(model)
    train_set, _, _ = load_splits(cfg)
    precise_bn(model, train_set.images, spec, "cpu", 32, cfg.seed)
    # the run's model is channels-last, this one not: other conv kernels, float noise of
    # about 2e-5 relative; the running averages of n = 0 differ by about 1
    same = all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(saved, _bn_stats(model)))
    assert same == (n == 32)


def test_negative_is_one_line(data, tmp_path) -> None:
    p = run_cli(
        "train", "--arch", "vgg", "--data", str(data), "--out", str(tmp_path / "r"),
        "--epochs", "1", "--max-batches", "1", "--threads", "1", "--precise-bn", "-1",
    )  # fmt: skip
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--precise-bn" in lines[0] and "Traceback" not in p.stderr
