"""The inputs of the `prune` / `qat` tests: a narrow untrained vgg saved as an edge-fer
training checkpoint, a few dozen faces in class folders (real FER2013 Training faces copied
from ../shared when it exists, synthetic images otherwise), and a cache folder of the module's
own. One copy for tests/test_compress*.py."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from paths import FER

from edge_fer import labels as L

WIDTHS = [8, 16, 16, 32]  # (the vgg's head has dropout 0.5)
# one view per face, timed once, one thread; no progress bars
QUICK = ["--threads", 1, "--bench-threads", 1, "--bench-rounds", 1, "--eval-tta", "none",
         "--no-progress"]  # fmt: skip


@contextmanager
def own_cache(folder: Path, threads: int | None = None) -> Iterator[None]:
    """EDGE_FER_CACHE set to `folder` (and torch's thread count to `threads`, when given) for
    the block; both restored after it."""
    import torch

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    old = os.environ.get("EDGE_FER_CACHE")
    os.environ["EDGE_FER_CACHE"] = str(folder)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        if old is None:
            os.environ.pop("EDGE_FER_CACHE", None)
        else:
            os.environ["EDGE_FER_CACHE"] = old


def face_folder(dst: Path) -> Path:
    """8 faces per class in class folders under `dst`: real Training faces, or synthetic ones."""
    import cv2

    rng = np.random.default_rng(0)
    for k, cls in enumerate(L.FER2013):
        (dst / cls).mkdir(parents=True)
        files = sorted((FER / "train" / cls).glob("Training_*.jpg"))[:8] if FER.is_dir() else []
        for i in range(8):
            if i < len(files):
                shutil.copy(files[i], dst / cls / f"f{i}.jpg")
            else:  # class-dependent bands plus noise
                img = rng.integers(0, 80, (48, 48)).astype(np.uint8)
                img[k * 6 : k * 6 + 6] += 150
                cv2.imwrite(str(dst / cls / f"f{i}.png"), img)
    return dst


def vgg_checkpoint(p: Path, varied_batch_norms: bool = False) -> Path:
    """An untrained narrow vgg (seed 0) saved at `p` as an edge-fer training checkpoint; with
    `varied_batch_norms`, batch norms like a trained model's (and distinct folded biases)."""
    import torch

    from edge_fer.models import create_model, model_info
    from edge_fer.preprocess import PreprocessSpec
    from edge_fer.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("vgg", widths=WIDTHS).eval()
    if varied_batch_norms:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 2.0)
    state = {
        "config": {"arch": "vgg", "arch_kwargs": {"widths": WIDTHS}, "seed": 0, "data": ""},
        "spec": PreprocessSpec(classes=L.FER2013).to_metadata(),
        **model_info(model),
        "best_acc": 0.0,
        "val_split": "held-out 10%",
    }
    save_checkpoint(p, model, None, state)
    return p
