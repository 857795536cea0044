"""Knowledge distillation from exported teachers (Hinton et al. 2015), computed once.

The teachers are ONNX models run through the runtime's Classifier with their own test-time
augmentation (the bundled model: 4 views), so a single-view student can learn what the
multi-view ensemble knows. Their averaged probabilities on the unaugmented Training faces are
computed once per run and kept in the run folder (a .npy of float32, no pickles), so a resumed
run does not pay for them again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edge_fer.errors import UserError

TARGETS_FILE = "teacher_probs.npy"


def teacher_targets(
    paths: list[str],
    images: np.ndarray,
    classes: tuple[str, ...],
    tta: str = "auto",
    threads: int = 0,
    cache: Path | None = None,
) -> np.ndarray:
    """(N, C) mean teacher probabilities for uint8 faces `images`, in `classes` order."""
    if cache is not None and cache.is_file():
        probs = np.load(cache, allow_pickle=False)
        if probs.shape == (len(images), len(classes)):
            return probs
    from edge_fer.classify import Classifier
    from edge_fer.evaluate import run_inference

    total = np.zeros((len(images), len(classes)), np.float64)
    for p in paths:
        clf = Classifier.load(p, tta=tta, threads=threads or None)
        try:
            missing = [c for c in classes if c not in clf.classes]
            if missing:
                raise UserError(
                    f"{p}: teacher has no class {', '.join(missing)} (it knows "
                    f"{', '.join(clf.classes)})",
                    param="teacher",
                )
            print(f"teacher {Path(p).name} ({clf.tta} views) on {len(images)} faces",
                  file=sys.stderr, flush=True)  # fmt: skip
            probs, _, _ = run_inference(clf, images, batch_size=256)
            cols = [list(clf.classes).index(c) for c in classes]
            sub = probs[:, cols]
            total += sub / np.clip(sub.sum(1, keepdims=True), 1e-12, None)
        finally:
            clf.close()
    out = (total / len(paths)).astype(np.float32)
    if cache is not None:
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, out, allow_pickle=False)
        tmp.replace(cache)
    return out


def distill_loss(
    logits: torch.Tensor, teacher_log: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 KL(teacher_T || student_T). `teacher_log`: the teacher's log-probabilities (or its
    logits: softmax(log_softmax(z) / T) = softmax(z / T), so both soften the same way)."""
    t = temperature
    q = F.softmax(teacher_log / t, dim=1)
    return t * t * F.kl_div(F.log_softmax(logits / t, dim=1), q, reduction="batchmean")


def log_targets(probs: np.ndarray) -> torch.Tensor:
    """Teacher probabilities (N, C) as the log-probabilities distill_loss takes."""
    return torch.from_numpy(np.log(np.clip(probs, 1e-8, None)).astype(np.float32))
