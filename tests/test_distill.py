"""Warm starts and distillation from exported teachers in `edge-fer train`.

Real faces from ../shared, the bundled model as the start and as the teacher, a few batches of
real training on one thread.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from paths import (
    FER_MODEL,
    cnn4_config,
    fer_class_folders,
    fer_files,
    needs_modules,
)
from processes import refusal_line, run_cli

from edge_fer import labels as L
from edge_fer.errors import UserError

pytestmark = pytest.mark.shared("data/fer2013/train")
torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """8 real Training faces per class, in class folders."""
    return fer_class_folders(tmp_path_factory.mktemp("kd") / "faces", 8)


def test_warm_start_keeps_the_function(data) -> None:
    """Weights from the bundled ONNX (batch norms folded) renormalized: the same outputs."""
    from edge_fer.classify import Classifier
    from edge_fer.data import load_dataset
    from edge_fer.models import create_model
    from edge_fer.preprocess import PreprocessSpec
    from edge_fer.train.trainer import predict
    from edge_fer.train.warm_start import warm_start

    faces = load_dataset(str(data), "all", size=48)
    torch.manual_seed(0)
    model = create_model("vgg", num_classes=7, in_channels=1)
    spec = PreprocessSpec(input_size=48, classes=tuple(L.FER2013))
    warm_start(model, str(FER_MODEL), "vgg", {}, faces.images, spec)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(float(b.running_var.mean()) != pytest.approx(1.0) for b in bns)
    got = predict(model, faces.images, spec, torch.device("cpu"))
    clf = Classifier.load(FER_MODEL, tta="none", threads=1)
    want = clf.infer(clf.spec.prepare(faces.images))
    clf.close()
    assert np.abs(got - want).max() < 1e-4


def test_distilled_run_and_resume(data, tmp_path) -> None:
    from edge_fer.classify import Classifier
    from edge_fer.data import load_dataset
    from edge_fer.evaluate import run_inference
    from edge_fer.train.distill import TARGETS_FILE
    from edge_fer.train.trainer import TrainConfig, train

    out = tmp_path / "run"
    cfg = TrainConfig(
        arch="vgg", data=str(data), out=str(out), epochs=1, batch_size=16, threads=1,
        max_batches=2, lr=0.005, init=str(FER_MODEL), teacher=[str(FER_MODEL)], distill=0.7,
    )  # fmt: skip
    res = train(cfg)
    assert res["best_epoch"] == 1
    targets = out / TARGETS_FILE
    soft = np.load(targets, allow_pickle=False)
    # the teacher's own 4-view probabilities on the held-in faces, in the dataset's class order
    train_faces = load_dataset(str(data), "all", size=48)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(train_faces))
    mask = np.zeros(len(train_faces), bool)
    mask[order[: max(1, int(len(train_faces) * cfg.val_fraction))]] = True
    held_in = train_faces.subset(~mask)
    clf = Classifier.load(FER_MODEL, tta="auto", threads=1)
    assert clf.tta == "zoom-flip"
    want, _, _ = run_inference(clf, held_in.images, progress=False)
    clf.close()
    cols = [L.FER2013.index(c) for c in held_in.classes]
    assert soft.shape == (len(held_in), len(held_in.classes))
    assert np.abs(soft - want[:, cols]).max() < 1e-5
    # a resumed run reuses the saved targets
    stamp = targets.stat().st_mtime_ns
    res2 = train(TrainConfig(arch="vgg", data=str(data), out=str(out)), resume=True,
                 epochs_override=2)  # fmt: skip
    assert res2["best_epoch"] in (1, 2)
    assert targets.stat().st_mtime_ns == stamp
    # the exported model names its start, teacher and data, never this machine's paths
    import onnx

    from edge_fer.export.onnx import export_checkpoint

    onnx_path = export_checkpoint(out / "best.safetensors", tmp_path / "kd.onnx")["out"]
    meta = {m.key: m.value for m in onnx.load(str(onnx_path)).metadata_props}
    text = " ".join(meta.values())
    assert "fer_default.onnx" in meta["edge_fer.provenance"]
    assert str(tmp_path) not in text and str(FER_MODEL.parent) not in text


def test_distill_loss_is_zero_at_the_teacher() -> None:
    from edge_fer.train.distill import distill_loss

    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert float(distill_loss(p.log(), p.log(), 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_loss(torch.zeros(2, 3), p.log(), 2.0)) > 0.01
    # teacher logits soften as its log-probabilities do (the constant log Z cancels)
    z = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]])
    s = torch.randn(2, 3)
    assert float(distill_loss(s, z, 3.0)) == pytest.approx(
        float(distill_loss(s, torch.log_softmax(z, 1), 3.0)), rel=1e-5
    )


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--distill", "0.5"], "--teacher"),
        (["--teacher", "nope.onnx"], "--teacher"),
        (["--teacher", str(FER_MODEL), "--distill", "1.5"], "--distill"),
        (["--init", str(FER_MODEL), "--arch", "cnn4"], "--init"),
    ],
)
def test_bad_distill_options_are_one_line(data, tmp_path, flags, needle) -> None:
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--epochs", "1"]
    if "--arch" not in flags:
        argv += ["--arch", "vgg"]
    p = run_cli(*argv, "--max-batches", "1", "--threads", "1", *flags)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr, p.stderr


def test_extra_training_faces(data, tmp_path) -> None:
    """--extra-train faces join the training split (repeated), never the selection split."""
    from edge_fer.train.trainer import TrainConfig, load_splits

    extra = tmp_path / "extra"
    for cls in ("happy", "sad"):
        (extra / cls).mkdir(parents=True)
        for i, f in enumerate(fer_files(cls, "PublicTest", 3)):
            shutil.copy(f, extra / cls / f"x_{i}.jpg")
    base = TrainConfig(arch="cnn4", data=str(data))
    train0, val0, _ = load_splits(base)
    cfg = TrainConfig(arch="cnn4", data=str(data), extra_train=str(extra), extra_repeat=2)
    train1, val1, _ = load_splits(cfg)
    assert len(train1) == len(train0) + 12 and len(val1) == len(val0)
    added = np.bincount(train1.labels, minlength=7) - np.bincount(train0.labels, minlength=7)
    assert added[train1.classes.index("happy")] == 6 and added[train1.classes.index("sad")] == 6
    assert added.sum() == 12
    # the teachers are asked about the main dataset only
    from edge_fer.train.distill import TARGETS_FILE
    from edge_fer.train.trainer import train

    kd = TrainConfig(
        arch="vgg", data=str(data), out=str(tmp_path / "kd"), epochs=1, batch_size=16,
        threads=1, max_batches=1, extra_train=str(extra), extra_repeat=2,
        teacher=[str(FER_MODEL)], distill=0.5,
    )  # fmt: skip
    train(kd)
    assert np.load(tmp_path / "kd" / TARGETS_FILE).shape == (len(train0), 7)
    (extra / "contempt").mkdir()
    shutil.copy(fer_files("sad", "PublicTest", 1)[0], extra / "contempt" / "c.jpg")
    p = run_cli(
        "train", "--arch", "cnn4", "--data", str(data), "--out", str(tmp_path / "r"),
        "--extra-train", str(extra), "--max-batches", "1", "--epochs", "1",
    )  # fmt: skip
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert "--extra-train" in lines[0] and "contempt" in lines[0]


def test_cached_targets_belong_to_their_teachers(data, tmp_path) -> None:
    """The cache was keyed on its shape alone: a run begun again in the same folder with another
    teacher trained on the first one's probabilities, and a damaged file was a traceback."""
    from paths import ASSETS

    from edge_fer.data import load_dataset
    from edge_fer.train.distill import teacher_targets

    faces = load_dataset(str(data), "all", size=48).images[:20]
    cache = tmp_path / "teacher_probs.npy"
    classes = tuple(L.FER2013)
    first = teacher_targets([str(FER_MODEL)], faces, classes, "none", 1, cache)
    stamp = cache.stat().st_mtime_ns
    again = teacher_targets([str(FER_MODEL)], faces, classes, "none", 1, cache)
    assert cache.stat().st_mtime_ns == stamp and np.array_equal(first, again)  # reused
    other = str(ASSETS / "fer_default.int8.onnx")
    mine = teacher_targets([other], faces, classes, "none", 1, cache)
    assert cache.stat().st_mtime_ns != stamp and not np.array_equal(mine, first)  # recomputed
    for damage in (b"", b"garbage"):
        cache.write_bytes(damage)
        got = teacher_targets([other], faces, classes, "none", 1, cache)
        assert np.array_equal(got, mine)


# ---- train --init that does not fit the run, --teacher FOLDER -----------------------------------
# (collected, before, under safetensors too)

needs_safetensors = needs_modules("safetensors")


@needs_safetensors
@pytest.mark.parametrize(
    ("data", "kw", "said"),
    [
        ("other", {}, "answers 7 classes"),  # a 7-class model on 2 classes
        ("faces", {"channels": 3}, "1-channel faces"),
        ("faces", {"input_size": 64}, "48x48 faces"),  # cnn4's dense head is sized for 48
    ],
)
def test_init_that_does_not_fit_the_run_says_why(
    cnn4_run7, four_faces_per_class, other_class_faces, tmp_path, data, kw, said
):
    # before: "weights do not fit (Error(s) in loading state_dict for SmallCNN:)", which names
    # nothing, or "is 'cnn4' , the run trains 'cnn4' {'input_size': 64}"
    from edge_fer.train.trainer import train

    ds = other_class_faces if data == "other" else four_faces_per_class
    out = tmp_path / "run"
    cfg = cnn4_config(ds, out, init=str(cnn4_run7 / "best.safetensors"), **kw)
    with pytest.raises(UserError) as exc:
        train(cfg)
    assert exc.value.param == "init" and said in str(exc.value), str(exc.value)
    assert "\n" not in str(exc.value)
    assert not out.exists()


@needs_safetensors
@pytest.mark.shared("data/fer2013/train")
def test_train_teacher_folder_is_named_a_folder(small_fer, tmp_path, tiny_fer_env):
    proc = run_cli("train", "--arch", "cnn4", "--data", small_fer, "--out", tmp_path / "run",
                   "--teacher", tmp_path, "--epochs", 1, env=tiny_fer_env)  # fmt: skip
    line = refusal_line(proc)
    assert f"--teacher {tmp_path}: is a folder, not a model file" in line, line
    assert not (tmp_path / "run").exists()
