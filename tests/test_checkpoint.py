"""Training checkpoints: the optimizer's buffers follow their parameters on resume.

A run saved on one device resumes on another (the CPU run of 2026-12-04 went on on a GPU and
stopped at its first step: the momentum buffers stayed on the CPU). No GPU here, so the test
changes the parameters' dtype instead, which the same code path must follow."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from edge_fer.train.checkpoint import load_checkpoint, save_checkpoint


def _net(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).to(dtype)


def test_momentum_buffers_follow_their_parameters_on_resume(tmp_path) -> None:
    net = _net(torch.float32)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(8, 4)).sum().backward()
    opt.step()
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, net, opt, {"epoch": 1})

    other = _net(torch.float64)
    opt2 = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    assert load_checkpoint(path, other, opt2)["epoch"] == 1
    for p in other.parameters():
        buf = opt2.state[p]["momentum_buffer"]
        assert buf.dtype == p.dtype and buf.device == p.device
    # and the step that failed on the GPU runs, with the saved momentum carried on
    other(torch.randn(8, 4, dtype=torch.float64)).sum().backward()
    before = [opt2.state[p]["momentum_buffer"].clone() for p in other.parameters()]
    opt2.step()
    for p, b in zip(other.parameters(), before):
        assert torch.allclose(opt2.state[p]["momentum_buffer"], 0.9 * b + p.grad)


def _train(data, out, epochs: int, resume: bool = False) -> None:
    from edge_fer.train.trainer import TrainConfig, train

    # warm-up longer than the run: a step's learning rate does not depend on the run's length
    cfg = TrainConfig(arch="cnn4", data=str(data), out=str(out), epochs=epochs, batch_size=8,
                      max_batches=3, precise_bn=0, patience=0, threads=1, warmup_epochs=10)  # fmt: skip
    train(cfg, resume=resume, epochs_override=epochs if resume else None)


def _rows(out) -> list[list[str]]:
    """log.csv's epoch rows without their time."""
    lines = (out / "log.csv").read_text().splitlines()
    assert lines[0].endswith(",seconds")
    return [ln.split(",")[:-1] for ln in lines[1:]]


@pytest.fixture
def faces(tmp_path, monkeypatch):
    from paths import fer_class_folders

    monkeypatch.setenv("EDGE_FER_CACHE", str(tmp_path / "cache"))
    return fer_class_folders(tmp_path / "faces", 4)


def test_a_resumed_run_matches_an_uninterrupted_one(tmp_path, faces) -> None:
    """Dropout drew from torch's generator as the process had left it: a run resumed after
    epoch 2 trained epochs 3 and 4 with other dropout masks than the uninterrupted run."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(faces, straight, 4)
    _train(faces, resumed, 2)
    _train(faces, resumed, 4, resume=True)
    assert len(_rows(straight)) == 4
    assert _rows(resumed) == _rows(straight)


def test_a_log_row_without_its_checkpoint_is_dropped_on_resume(tmp_path, faces) -> None:
    """Ctrl-C after an epoch's log row but before its checkpoint: the resumed run trained the
    epoch again and logged it twice (log.csv 1, 2, 2, 3)."""
    import shutil

    out = tmp_path / "run"
    _train(faces, out, 3)
    shutil.copy(out / "last.safetensors", tmp_path / "last1.safetensors")
    _train(faces, out, 4, resume=True)  # trains epoch 4
    # the state of a run stopped after the log row of epoch 4, before its checkpoint
    shutil.copy(tmp_path / "last1.safetensors", out / "last.safetensors")
    before = _rows(out)
    _train(faces, out, 5, resume=True)
    assert [r[0] for r in _rows(out)] == ["1", "2", "3", "4", "5"]
    assert _rows(out)[:4] == before  # epoch 4 again, the same (a resume repeats it exactly)


def test_weights_of_another_architecture_say_which_keys(tmp_path) -> None:
    """A checkpoint that does not fit the model names what differs; the message was torch's
    first line alone ("Error(s) in loading state_dict for Sequential:"), the same every time."""
    from edge_fer.errors import UserError

    path = tmp_path / "best.safetensors"
    save_checkpoint(path, _net(torch.float32), None, {})
    other = torch.nn.Sequential(torch.nn.Linear(4, 5))
    with pytest.raises(UserError, match="weights do not fit") as err:
        load_checkpoint(path, other)
    msg = str(err.value)
    assert "Unexpected key(s)" in msg and "1.running_mean" in msg and "\n" not in msg
