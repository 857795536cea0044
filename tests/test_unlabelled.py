"""`edge-fer train --unlabelled DIR`: faces without labels, learned from the teachers' answers.

Real FER2013 faces from ../shared (their labels thrown away for the unlabelled folder), the
bundled model as the teacher, a few batches of real training on one thread.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from paths import FER_MODEL, fer_class_folders, fer_files
from processes import run_cli

pytestmark = pytest.mark.shared("data/fer2013/train")
torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """8 real Training faces per class, in class folders."""
    return fer_class_folders(tmp_path_factory.mktemp("unl") / "faces", 8)


@pytest.fixture(scope="module")
def loose(tmp_path_factory) -> Path:
    """12 PublicTest faces without class folders, some one folder down (any layout)."""
    root = tmp_path_factory.mktemp("unl") / "loose"
    (root / "more").mkdir(parents=True)
    for i, f in enumerate(fer_files("happy", "PublicTest", 6) + fer_files("sad", "PublicTest", 6)):
        shutil.copy(f, (root if i % 2 else root / "more") / f"u{i}.jpg")
    return root


def test_unlabelled_faces_are_taught_by_the_teachers(data, loose, tmp_path) -> None:
    from edge_fer.classify import Classifier
    from edge_fer.data.loaders import UNLABELLED, load_unlabelled
    from edge_fer.evaluate import run_inference
    from edge_fer.train.distill import TARGETS_FILE
    from edge_fer.train.trainer import TrainConfig, load_splits, train

    faces = load_unlabelled(loose, 48)
    assert len(faces) == 12 and set(faces.labels.tolist()) == {UNLABELLED}
    out = tmp_path / "run"
    cfg = TrainConfig(
        arch="vgg", data=str(data), out=str(out), epochs=1, batch_size=16, threads=1,
        teacher=[str(FER_MODEL)], distill=0.3, unlabelled=str(loose),
    )  # fmt: skip
    res = train(cfg)
    labelled, _, _ = load_splits(cfg)  # (the unlabelled faces never join the splits)
    assert res["unlabelled"] == {"faces": 12}
    # every step ran: the labelled and the unlabelled faces, one epoch
    assert res["best_epoch"] == 1
    soft = np.load(out / TARGETS_FILE, allow_pickle=False)
    assert soft.shape == (len(labelled) + 12, 7)
    clf = Classifier.load(FER_MODEL, tta="auto", threads=1)
    want, _, _ = run_inference(clf, faces.images, progress=False)
    clf.close()
    # the last rows are the teacher's own answers on the unlabelled faces, in its class order
    assert np.abs(soft[len(labelled) :] - want).max() < 1e-5
    # a resume finds the run's folder of unlabelled faces and reuses the teachers' answers
    stamp = (out / TARGETS_FILE).stat().st_mtime_ns
    res2 = train(TrainConfig(arch="vgg", data=str(data), out=str(out)), resume=True,
                 epochs_override=2)  # fmt: skip
    assert res2["unlabelled"] == {"faces": 12}
    assert (out / TARGETS_FILE).stat().st_mtime_ns == stamp


def test_the_loss_of_a_batch_with_unlabelled_faces() -> None:
    """Labelled faces weigh as in a batch without unlabelled ones; unlabelled ones are the
    teachers' term alone."""
    import torch.nn.functional as F

    from edge_fer.data.loaders import UNLABELLED
    from edge_fer.train.distill import distill_loss, distill_rows
    from edge_fer.train.trainer import TrainConfig, loss_with_unlabelled

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 7, generator=g)
    teacher = torch.log_softmax(torch.randn(6, 7, generator=g), 1)
    cfg = TrainConfig(arch="vgg", data="x", distill=0.3, distill_temperature=2.0)
    y = torch.tensor([0, 3, 6, 2, 1, 5])
    ce = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    usual = 0.7 * ce + 0.3 * distill_loss(logits, teacher, 2.0)
    # (the function is asked only when a face is unlabelled, but it is the usual loss without)
    assert float(loss_with_unlabelled(logits, y, teacher, None, cfg)) == pytest.approx(
        float(usual), rel=1e-6
    )
    none = torch.full((6,), UNLABELLED)
    assert float(loss_with_unlabelled(logits, none, teacher, None, cfg)) == pytest.approx(
        float(distill_loss(logits, teacher, 2.0)), rel=1e-6
    )
    half = torch.tensor([0, UNLABELLED, 6, UNLABELLED, 1, UNLABELLED])
    lab = half != UNLABELLED
    kd = distill_rows(logits, teacher, 2.0)
    want = (
        0.7 * F.cross_entropy(logits[lab], half[lab], label_smoothing=0.1) * 0.5
        + (0.3 * kd[lab].sum() + kd[~lab].sum()) / 6
    )
    got = loss_with_unlabelled(logits, half, teacher, None, cfg)
    assert float(got) == pytest.approx(float(want), rel=1e-6)


def _refusal(data, tmp_path, *flags) -> str:
    p = run_cli(
        "train", "--arch", "cnn4", "--data", str(data), "--out", str(tmp_path / "r"),
        "--epochs", "1", "--max-batches", "1", "--threads", "1", *flags,
    )  # fmt: skip
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "r").exists()
    return lines[0]


@pytest.mark.parametrize(
    "flags, needles",
    [
        ([], ["--unlabelled", "--teacher"]),
        (["--teacher", str(FER_MODEL), "--mixup", "0.2"], ["--unlabelled", "--mixup"]),
        (["--teacher", str(FER_MODEL), "--balanced-sampling"],
         ["--unlabelled", "--balanced-sampling"]),
    ],
)  # fmt: skip
def test_unlabelled_refusals(data, loose, tmp_path, flags, needles) -> None:
    line = _refusal(data, tmp_path, "--unlabelled", str(loose), *flags)
    assert all(n in line for n in needles), line


def test_unlabelled_folders_that_cannot_be(data, tmp_path) -> None:
    t = ["--teacher", str(FER_MODEL)]
    line = _refusal(data, tmp_path, "--unlabelled", str(tmp_path / "nope"), *t)
    assert "--unlabelled" in line and "no such folder" in line
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no faces here")
    line = _refusal(data, tmp_path, "--unlabelled", str(empty), *t)
    assert "--unlabelled" in line and "no images" in line, line
    # a class folder of the dataset itself: its faces would be trained on twice
    line = _refusal(data, tmp_path, "--unlabelled", str(data / "happy"), *t)
    assert "--unlabelled" in line and "overlap" in line, line
