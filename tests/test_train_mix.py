"""Mixup / CutMix of training batches and teachers asked online (`edge-fer train --mixup
--cutmix --distill-online`). Real faces from ../shared, the bundled model as the teacher."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from paths import FER_MODEL, fer_class_folders, fer_files
from processes import run_cli

from edge_fer import labels as L

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


def _batch(n: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 48, 48, generator=g) * 255


def test_no_alpha_no_mix_and_no_random_draws() -> None:
    from edge_fer.train.mix import draw_mix

    g = torch.Generator().manual_seed(3)
    before = g.get_state().clone()
    assert draw_mix(8, 48, 48, 0.0, 0.0, g) is None
    assert torch.equal(g.get_state(), before)  # runs without mixing keep their random streams


def test_mixup_blends_whole_faces_with_their_partners() -> None:
    from edge_fer.train.mix import draw_mix

    x = _batch()
    mix = draw_mix(len(x), 48, 48, 0.4, 0.0, torch.Generator().manual_seed(1))
    assert mix is not None and mix.box is None and 0.0 <= mix.lam <= 1.0
    assert sorted(mix.perm.tolist()) == list(range(len(x)))
    got = mix.images(x)
    assert torch.allclose(got, mix.lam * x + (1 - mix.lam) * x[mix.perm])
    # the same seed, the same mix (a resumed run redraws what the original drew)
    again = draw_mix(len(x), 48, 48, 0.4, 0.0, torch.Generator().manual_seed(1))
    assert again is not None and again.lam == mix.lam and torch.equal(again.perm, mix.perm)


def test_cutmix_pastes_a_box_and_lam_is_the_share_left() -> None:
    from edge_fer.train.mix import draw_mix

    x = _batch()
    for seed in range(20):
        mix = draw_mix(len(x), 48, 48, 0.0, 1.0, torch.Generator().manual_seed(seed))
        assert mix is not None and mix.box is not None
        y0, y1, x0, x1 = mix.box
        got = mix.images(x)
        inside = torch.zeros(48, 48, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.equal(got[:, :, inside], x[mix.perm][:, :, inside])
        assert torch.equal(got[:, :, ~inside], x[:, :, ~inside])
        assert mix.lam == pytest.approx(1 - float(inside.float().mean()))


def test_both_alphas_take_each_method_on_some_batches() -> None:
    from edge_fer.train.mix import draw_mix

    g = torch.Generator().manual_seed(0)
    kinds = {draw_mix(8, 48, 48, 0.4, 1.0, g).box is None for _ in range(40)}  # type: ignore[union-attr]
    assert kinds == {True, False}


def test_mixed_loss_and_targets_weigh_both_faces() -> None:
    import torch.nn.functional as F

    from edge_fer.train.mix import Mix

    logits = torch.randn(4, 7)
    y = torch.tensor([0, 3, 5, 6])
    perm = torch.tensor([2, 0, 3, 1])
    mix = Mix(perm, 0.3)
    want = 0.3 * F.cross_entropy(logits, y) + 0.7 * F.cross_entropy(logits, y[perm])
    assert float(mix.cross_entropy(logits, y)) == pytest.approx(float(want), rel=1e-6)
    assert float(Mix(perm, 1.0).cross_entropy(logits, y)) == pytest.approx(
        float(F.cross_entropy(logits, y)), rel=1e-6
    )
    p = torch.softmax(torch.randn(4, 7), 1)
    q = mix.probs(p)
    assert torch.allclose(q.sum(1), torch.ones(4)) and torch.allclose(q, 0.3 * p + 0.7 * p[perm])


@pytest.mark.shared("data/fer2013/train")
def test_online_teacher_is_the_runtimes_flip_view() -> None:
    """The teacher rebuilt in torch, asked about a batch, gives what the runtime's flip
    test-time augmentation gives for the same faces."""
    from edge_fer.classify import Classifier
    from edge_fer.evaluate import run_inference
    from edge_fer.train.distill import OnlineTeachers
    from edge_fer.train.trainer import normalise

    files = [f for c in ("happy", "sad", "angry") for f in fer_files(c, "PublicTest", 6)]
    from PIL import Image

    imgs = np.stack([np.asarray(Image.open(f).convert("L")) for f in files])
    clf = Classifier.load(FER_MODEL, tta="flip", threads=1)
    want, _, _ = run_inference(clf, imgs, progress=False)
    classes = tuple(reversed(L.FER2013))  # the student's order need not be the teacher's
    cols = [list(clf.classes).index(c) for c in classes]
    spec = dataclasses.replace(clf.spec, classes=classes)
    clf.close()
    t = OnlineTeachers([str(FER_MODEL)], spec, torch.device("cpu"), "flip")
    got = t.log_probs(normalise(torch.from_numpy(imgs)[:, None].float(), spec)).exp().numpy()
    assert np.abs(got - want[:, cols]).max() < 1e-4


@pytest.mark.shared("data/fer2013/train")
def test_a_mixed_online_distilled_run_trains_and_resumes(tmp_path) -> None:
    from edge_fer.train.distill import TARGETS_FILE
    from edge_fer.train.trainer import TrainConfig, train

    data = fer_class_folders(tmp_path / "faces", 8)
    out = tmp_path / "run"
    cfg = TrainConfig(
        arch="vgg", data=str(data), out=str(out), epochs=1, batch_size=16, threads=1,
        max_batches=2, lr=0.005, init=str(FER_MODEL), teacher=[str(FER_MODEL)], distill=0.7,
        distill_online=True, mixup=0.4, cutmix=1.0,
    )  # fmt: skip
    res = train(cfg)
    assert res["best_epoch"] == 1
    assert not (out / TARGETS_FILE).exists()  # nothing computed ahead
    res2 = train(TrainConfig(arch="vgg", data=str(data), out=str(out)), resume=True,
                 epochs_override=2)  # fmt: skip
    assert res2["best_epoch"] in (1, 2)
    import json

    saved = json.loads((out / "config.json").read_text())
    assert saved["mixup"] == 0.4 and saved["cutmix"] == 1.0 and saved["distill_online"]


@pytest.mark.shared("data/fer2013/train")
@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--mixup", "-1"], "--mixup"),
        (["--cutmix", "-0.5"], "--cutmix"),
        (["--crop-aug", "0.2,0.1"], "--crop-aug"),
        (["--crop-aug=-0.05"], "--crop-aug"),
        (["--exposure-aug", "0,1"], "--exposure-aug"),
        (["--exposure-aug", "1.2,0.5"], "--exposure-aug"),
        (["--exposure-aug", "dark"], "--exposure-aug"),
        (["--distill-online"], "--distill-online"),
        (["--teacher", str(FER_MODEL), "--distill-online", "--teacher-tta", "zoom-flip"],
         "--teacher-tta"),
    ],
)  # fmt: skip
def test_bad_mix_options_are_one_line(tmp_path, flags, needle) -> None:
    data = fer_class_folders(tmp_path / "faces", 2)
    argv = ["train", "--arch", "vgg", "--data", str(data), "--out", str(tmp_path / "r")]
    p = run_cli(*argv, "--epochs", "1", "--max-batches", "1", "--threads", "1", *flags)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr, p.stderr


def test_teacher_columns_follow_the_students_classes() -> None:
    from edge_fer.errors import UserError
    from edge_fer.train.distill import teacher_columns

    assert teacher_columns("t.onnx", ("a", "b", "c"), ("c", "a")) == [2, 0]
    with pytest.raises(UserError, match=r"t.onnx: teacher has no class contempt \(it knows a, b"):
        teacher_columns("t.onnx", ("a", "b"), ("a", "contempt"))
