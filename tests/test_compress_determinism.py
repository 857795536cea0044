"""`edge-fer prune` / `qat`: the same --seed gives the same fine-tuning, bit for bit on the CPU
at one thread count (as `edge-fer train` does).

Before, the fine-tuning's dropout drew from torch's global generator, which nothing seeded:
torch seeds it at random in each process (and a run in the same process finds it where the
last one left it), so the same command gave another loss each time (1.909, 1.974, 1.954 for
`--epochs 1 --max-batches 1`) and other fine-tuned weights. The shuffling and the augmentation
were seeded already. Here torch's global generator is set to a different state before each of
the two runs, as two fresh processes would find it.

Through the real entry point on real files (a narrow untrained vgg saved as an edge-fer
checkpoint, a few dozen faces in class folders: real FER2013 faces copied from ../shared when
it exists, synthetic images otherwise), one thread.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from compress_inputs import QUICK, face_folder, own_cache, vgg_checkpoint
from processes import run_main

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

# two batches of an epoch: the second one is fed by weights the first one's dropout changed
TUNE = ["--epochs", 1, "--max-batches", 2, "--batch-size", 16, "--seed", 3]


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory):
    with own_cache(tmp_path_factory.mktemp("cache")):
        yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return face_folder(tmp_path_factory.mktemp("faces") / "data")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return vgg_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.safetensors")


def _tensors(out: Path, stem: str) -> dict[str, np.ndarray]:
    """The weights of STEM.safetensors and of STEM.onnx's initializers."""
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    found = {f"st:{k}": v for k, v in load_file(str(out / f"{stem}.safetensors")).items()}
    for t in onnx.load(str(out / f"{stem}.onnx")).graph.initializer:
        found[f"onnx:{t.name}"] = numpy_helper.to_array(t)
    return found


def _fine_tuning(out: Path) -> tuple[list, list]:
    """report.json's per-epoch fine-tuning rows (without their timings) and rounds."""
    res = json.loads((out / "report.json").read_text())["result"]
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in res.get("finetune_log", [])]
    return rows, res.get("rounds", [])


def _twice(argv: list, tmp_path: Path, capsys) -> tuple[Path, Path]:
    """ARGV run into two --out folders, torch's global generator in another state each time."""
    outs = []
    for k, state in enumerate((1, 2)):
        torch.manual_seed(state)  # where a fresh process might find it
        out = tmp_path / f"run{k}"
        rc, _, err = run_main([*argv, "--out", out, *QUICK], capsys)
        assert rc == 0, err
        outs.append(out)
    return outs[0], outs[1]


def _same(a: Path, b: Path, stem: str) -> None:
    rows_a, rounds_a = _fine_tuning(a)
    rows_b, rounds_b = _fine_tuning(b)
    assert rows_a and rows_a[0]["epoch"] == 1, rows_a
    assert rows_a == rows_b  # loss, training accuracy, selection accuracy: exactly equal
    assert rounds_a == rounds_b
    wa, wb = _tensors(a, stem), _tensors(b, stem)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not np.array_equal(wa[k], wb[k])]
    assert not differ, differ


def test_prune_same_seed_same_fine_tuning(ckpt, data_dir, tmp_path, capsys):
    a, b = _twice(["prune", "--model", ckpt, "--method", "unstructured", "--steps", 2,
                   "--data", data_dir, *TUNE], tmp_path, capsys)  # fmt: skip
    _same(a, b, "pruned")


def test_qat_same_seed_same_fine_tuning(ckpt, data_dir, tmp_path, capsys):
    a, b = _twice(["qat", "--model", ckpt, "--data", data_dir, *TUNE], tmp_path, capsys)
    _same(a, b, "qat")


def test_finetune_same_seed_same_weights(ckpt, data_dir):
    """The weights after every optimizer step (what the best epoch keeps when it is not the
    start), not only what the tiny selection split happened to keep."""
    from edge_fer.compress.finetune import FinetuneConfig, finetune, load_finetune_data
    from edge_fer.compress.io import load_source

    src = load_source(ckpt)
    cfg = FinetuneConfig(epochs=2, batch_size=16, max_batches=2, seed=3, threads=1)
    data = load_finetune_data(str(data_dir), src.spec, cfg)

    def run(cfg: FinetuneConfig, state: int) -> tuple[list, list]:
        model = copy.deepcopy(src.model)
        steps: list = []
        log: list = []

        def keep():
            steps.append({k: v.detach().clone() for k, v in model.state_dict().items()})

        torch.manual_seed(state)  # where a fresh process might find it
        finetune(model, data, cfg, post_step=keep, log=log, round_index=1)
        return [{k: v for k, v in r.items() if k != "seconds"} for r in log], steps

    log_a, steps_a = run(cfg, 1)
    log_b, steps_b = run(cfg, 2)
    assert len(steps_a) == 2 * 2 + 1 == len(steps_b)  # 2 epochs x 2 batches, then the best
    assert log_a == log_b
    for sa, sb in zip(steps_a, steps_b):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # and the seed matters: another one fine-tunes otherwise
    _, steps_c = run(replace(cfg, seed=4), 1)
    assert not all(torch.equal(steps_a[0][k], steps_c[0][k]) for k in steps_a[0])
