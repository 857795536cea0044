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
