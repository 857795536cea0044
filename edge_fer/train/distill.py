"""Knowledge distillation from exported teachers (Hinton et al. 2015), computed once.

The teachers are ONNX models run through the runtime's Classifier with their own test-time
augmentation (the bundled model: 4 views), so a single-view student can learn what the
multi-view ensemble knows. Their averaged probabilities on the unaugmented Training faces are
computed once per run and kept in the run folder (a .npy of float32, no pickles), so a resumed
run does not pay for them again.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edge_fer.errors import UserError

TARGETS_FILE = "teacher_probs.npy"


def teacher_columns(path, have, want) -> list[int]:
    """The teacher's output column of each class the student learns (`want`), or a one-line
    error naming the classes the teacher (`have`) lacks."""
    missing = [c for c in want if c not in have]
    if missing:
        raise UserError(
            f"{path}: teacher has no class {', '.join(missing)} (it knows {', '.join(have)})",
            param="teacher",
        )
    return [list(have).index(c) for c in want]


def teacher_targets(
    paths: list[str],
    images: np.ndarray,
    classes: tuple[str, ...],
    tta: str = "auto",
    threads: int = 0,
    cache: Path | None = None,
) -> np.ndarray:
    """(N, C) mean teacher probabilities for uint8 faces `images`, in `classes` order.

    `cache` keeps them for a resumed run, with a key beside it (the teachers' sha256, the views,
    the classes, the faces): a cache of other teachers (a run begun again in the same folder) or
    an unreadable one is computed again, never used."""
    key = _cache_key(paths, images, classes, tta) if cache is not None else None
    key_file = cache.with_suffix(".json") if cache is not None else None
    if cache is not None and key_file is not None and cache.is_file():
        try:
            same = json.loads(key_file.read_text()) == key
            probs = np.load(cache, allow_pickle=False) if same else None
        except (OSError, ValueError, EOFError):  # damaged: computed again below
            probs = None
        if probs is not None and probs.shape == (len(images), len(classes)):
            return probs
    from edge_fer.classify import Classifier
    from edge_fer.evaluate import run_inference

    total = np.zeros((len(images), len(classes)), np.float64)
    for p in paths:
        clf = Classifier.load(p, tta=tta, threads=threads or None)
        try:
            cols = teacher_columns(p, clf.classes, classes)
            print(f"teacher {Path(p).name} ({clf.tta} views) on {len(images)} faces",
                  file=sys.stderr, flush=True)  # fmt: skip
            probs, _, _ = run_inference(clf, images, batch_size=256, desc="teacher")
            sub = probs[:, cols]
            total += sub / np.clip(sub.sum(1, keepdims=True), 1e-12, None)
        finally:
            clf.close()
    out = (total / len(paths)).astype(np.float32)
    if cache is not None and key_file is not None:
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, out, allow_pickle=False)
        tmp.replace(cache)
        key_file.write_text(json.dumps(key))
    return out


def _cache_key(paths: list[str], images: np.ndarray, classes: tuple[str, ...], tta: str) -> dict:
    from edge_fer.fileio import sha256_file

    return {
        "teachers": [sha256_file(p) for p in paths],
        "tta": tta,
        "classes": list(classes),
        "faces": [len(images), hashlib.sha256(np.ascontiguousarray(images)).hexdigest()],
    }


def distill_loss(
    logits: torch.Tensor, teacher_log: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 KL(teacher_T || student_T), the batch's mean. `teacher_log`: the teacher's
    log-probabilities (or its logits: softmax(log_softmax(z) / T) = softmax(z / T), so both
    soften the same way)."""
    return distill_rows(logits, teacher_log, temperature).mean()


def distill_rows(
    logits: torch.Tensor, teacher_log: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 KL(teacher_T || student_T) of each face (N,): distill_loss before the mean."""
    t = temperature
    q = F.softmax(teacher_log / t, dim=1)
    return t * t * F.kl_div(F.log_softmax(logits / t, dim=1), q, reduction="none").sum(1)


def log_targets(probs: np.ndarray) -> torch.Tensor:
    """Teacher probabilities (N, C) as the log-probabilities distill_loss takes."""
    return torch.from_numpy(np.log(np.clip(probs, 1e-8, None)).astype(np.float32))


class OnlineTeachers:
    """Teachers asked about every training batch as the student sees it (augmented, mixed):
    "consistent" distillation (Beyer et al. 2022). Unlike the targets computed once on clean
    faces, which mostly repeat labels the teachers were trained on, these describe faces no
    teacher has seen. Each ONNX teacher is rebuilt as a torch model (eval mode, frozen); its
    preprocessing must be the student's, since it reads the student's input tensor.
    `tta`: "none", or "flip" (each teacher also sees the mirrored batch; "auto" means flip
    here, since zooming an already cropped, mixed batch is not the view the models know)."""

    def __init__(self, paths: list[str], spec, device, tta: str = "auto") -> None:
        from edge_fer.export.onnx_import import torch_model_from_onnx

        if tta not in ("auto", "none", "flip"):
            raise UserError(
                f"online teachers take none or flip views, not {tta!r}", param="teacher_tta"
            )
        self.flip = tta != "none"
        self.models, self.cols = [], []
        for p in paths:
            model, t_spec, _ = torch_model_from_onnx(p)
            mine = (spec.input_size, spec.channels, spec.clahe, spec.align, spec.mean, spec.std)
            theirs = (t_spec.input_size, t_spec.channels, t_spec.clahe, t_spec.align,
                      t_spec.mean, t_spec.std)  # fmt: skip
            if mine != theirs:
                raise UserError(
                    f"{p}: an online teacher must read the student's input (size, channels, "
                    f"CLAHE, alignment, normalisation); it has {theirs}, the run {mine}",
                    param="teacher",
                )
            cols = teacher_columns(p, t_spec.classes, spec.classes)
            model = model.to(device, memory_format=torch.channels_last).eval()
            for q in model.parameters():
                q.requires_grad_(False)
            self.models.append(model)
            self.cols.append(torch.tensor(cols))

    @torch.no_grad()
    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The teachers' mean probabilities on the normalised batch x, as log-probabilities."""
        total = None
        n = len(x)
        xx = torch.cat([x, x.flip(3)]) if self.flip else x  # one pass for both views
        for model, cols in zip(self.models, self.cols):
            p = F.softmax(model(xx), 1)
            p = (p[:n] + p[n:]) / 2 if self.flip else p
            p = p[:, cols.to(x.device)]
            p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
            total = p if total is None else total + p
        assert total is not None
        return torch.log((total / len(self.models)).clamp_min(1e-8))
