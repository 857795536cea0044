"""`edge-fer train --precision bf16`: the training steps under bfloat16 autocast (float32
weights, loss and evaluation), a machine setting that a --resume may change, checked before
anything is loaded; and no TF32 warning from torch. Real models and steps; tiny synthetic faces
for the CLI runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from paths import banded_faces

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """4 synthetic 48x48 faces per class, in class folders."""
    return banded_faces(tmp_path_factory.mktemp("train_prec") / "faces", 4)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDGE_FER_CACHE", str(tmp_path / "cache"))


def _step(precision: str, batch: int = 8):
    """One SGD step of a fresh resnet from fixed weights: (logits, loss, a weight after)."""
    import torch.nn.functional as F

    from edge_fer.models.registry import create_model
    from edge_fer.train.trainer import train_step

    torch.manual_seed(0)
    model = create_model("resnet", blocks=[1, 1, 1, 1]).to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 1, 48, 48, generator=torch.Generator().manual_seed(1))
    y = torch.arange(batch) % 7
    logits, loss = train_step(model, opt, x, 0.01, lambda z: F.cross_entropy(z, y), precision)
    return logits, loss, next(model.parameters()).detach().clone()


def test_bf16_runs_the_forward_pass_in_bfloat16_and_keeps_float32_weights() -> None:
    """The logits of a bf16 step come back as float32, differ from the float32 step's by
    bfloat16's rounding (not zero: autocast was applied; not large: the same network), and the
    weights stay float32."""
    a, loss_a, _ = _step("fp32")
    b, loss_b, w_b = _step("bf16")
    assert b.dtype == torch.float32 and w_b.dtype == torch.float32 and loss_b.dtype == torch.float32
    diff = float((a.detach() - b.detach()).abs().max())
    assert 0 < diff < 0.1 * float(a.detach().abs().max()) + 0.05, diff
    assert abs(float(loss_a.detach()) - float(loss_b.detach())) < 0.05


def test_an_odd_batch_on_cpu_runs_in_float32() -> None:
    """Odd CPU batches run without oneDNN (a torch crash, train_step), where bfloat16 has no
    fast path: they are computed in float32, so their logits equal the fp32 step's."""
    a, _, _ = _step("fp32", batch=7)
    b, _, _ = _step("bf16", batch=7)
    assert torch.equal(a.detach(), b.detach())


def _train(capsys, faces: Path, out: Path, *flags) -> tuple[int, list[str]]:
    from edge_fer.cli.main import main

    argv = ["train", "--arch", "cnn4", "--data", str(faces), "--out", str(out)]
    argv += ["--max-batches", "1", "--batch-size", "8", "--threads", "1", "--precise-bn", "0"]
    try:
        rc = main([*argv, *map(str, flags)])
    except SystemExit as exc:  # argparse's choices
        rc = exc.code
    err = capsys.readouterr().err
    return rc, [ln for ln in err.splitlines() if ln.strip()]


def test_precision_is_recorded_and_a_resume_may_change_it(capsys, faces, tmp_path) -> None:
    out = tmp_path / "run"
    rc, lines = _train(capsys, faces, out, "--epochs", 1, "--precision", "bf16")
    assert rc == 0, lines
    assert json.loads((out / "config.json").read_text())["precision"] == "bf16"
    rc, lines = _train(capsys, faces, out, "--resume", "--epochs", 2, "--precision", "fp32")
    assert rc == 0 and not any("not applied" in ln for ln in lines), lines
    saved = json.loads((out / "config.json").read_text())
    assert saved["precision"] == "fp32" and saved["epochs"] == 2


def test_an_unknown_precision_is_one_line_before_any_folder(capsys, faces, tmp_path) -> None:
    from edge_fer.errors import UserError
    from edge_fer.train.trainer import TrainConfig, check_config

    out = tmp_path / "run"
    rc, lines = _train(capsys, faces, out, "--precision", "fp16")
    assert rc == 2 and not out.exists()
    assert any("--precision" in ln and "fp16" in ln for ln in lines), lines
    with pytest.raises(UserError) as err:
        check_config(TrainConfig(arch="cnn4", data=str(faces), precision="half"))
    assert err.value.param == "precision" and "half" in str(err.value)


# ---- torch's "TF32 ... oneDNN" warning ------------------------------------------------------
# (a tiny run of real FER2013 faces, `edge-fer train` in a child process)


@pytest.mark.shared("data/fer2013/train")
def test_training_prints_no_tf32_warning(small_fer_odd_batch_run):
    # before: torch.backends.mkldnn.flags(enabled=False) also set allow_tf32=True, and torch
    # warned "TF32 acceleration on top of oneDNN is available for Intel GPUs ..."
    _, proc = small_fer_odd_batch_run
    assert "TF32" not in proc.stderr and "oneDNN" not in proc.stderr, proc.stderr
