"""The colour variant of the channels study: 3-channel BGR input.

The trainer reads faces as grayscale (its 3-channel option replicates the gray image), so this
variant keeps the trainer's recipe and parts (its split, SGD, schedule, augmentation,
checkpoints, log format) and changes only what it reads: the same faces, decoded in colour.
The run folder looks and resumes like a trainer run.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge_fer.experiment.data import read_colour
from edge_fer.experiment.runs import Budget, claim, run_key, study_config


def _normalise(x, spec):
    x = (x / 255.0 - spec.mean) / spec.std
    import torch

    return x.contiguous(memory_format=torch.channels_last)


def predict_colour(model, x_u8: np.ndarray, spec, batch: int = 512) -> np.ndarray:
    """Softmax of `model` on (N, 3, H, W) uint8 faces."""
    import torch
    import torch.nn.functional as F

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x_u8), batch):
            x = torch.from_numpy(x_u8[i : i + batch]).float()
            out.append(F.softmax(model(_normalise(x, spec)), 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(spec.classes)), np.float32)


def colour_key(arch: str, key: dict, budget: Budget) -> dict:
    """What a colour run folder records in `study.json`."""
    return run_key(arch, key, budget, colour="bgr")


def train_colour(run: Path, tree: Path, arch: str, budget: Budget, key: dict) -> Path:
    import torch
    import torch.nn.functional as F

    from edge_fer.metrics import classification_report
    from edge_fer.models import create_model, model_info
    from edge_fer.preprocess import PreprocessSpec
    from edge_fer.train.augment import AugmentConfig, augment
    from edge_fer.train.checkpoint import load_checkpoint, save_checkpoint
    from edge_fer.train.trainer import (
        append_log,
        arch_kwargs_for,
        batch_end,
        load_splits,
        log_row,
        lr_at,
        mean_nll,
        schedule,
        sgd,
        start_run_files,
        train_step,
    )

    claim(run, colour_key(arch, key, budget))
    cfg = study_config(arch, tree, run, budget, channels=3)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    train_set, val_set, val_name = load_splits(cfg)  # the gray variants' very split
    tr_x = torch.from_numpy(read_colour(tree, train_set.ids))
    va_x = read_colour(tree, val_set.ids)
    y_all = torch.from_numpy(train_set.labels)
    classes = train_set.classes
    spec = PreprocessSpec(input_size=48, channels=3, classes=classes)
    model = create_model(arch, num_classes=len(classes), in_channels=3, **arch_kwargs_for(cfg))
    info = model_info(model, 48, 3)
    model = model.to(memory_format=torch.channels_last)
    opt = sgd(model, cfg)
    state = {"epoch": 0, "step": 0, "best_acc": -1.0, "best_epoch": -1, "bad_epochs": 0}
    last = run / "last.safetensors"
    if last.exists():
        state.update(load_checkpoint(last, model, opt))
    if state["epoch"] >= cfg.epochs and (run / "best.safetensors").is_file():
        print(f"experiment: {run.name}: finished earlier, reusing it", file=sys.stderr)
        return run
    print(f"experiment: training {run.name} ({arch}, colour, {budget.text()})", file=sys.stderr)
    steps_per_epoch, total, warmup = schedule(len(train_set), cfg)
    aug = AugmentConfig(enabled=cfg.augment)
    log = start_run_files(
        run, {**asdict(cfg), **info, "classes": classes, "colour": "bgr"}, done=state["epoch"]
    )
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        t0 = time.time()
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        order = torch.randperm(len(train_set), generator=gen)
        model.train()
        tot_loss, tot_ok, seen, lr = 0.0, 0, 0, cfg.lr
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : batch_end(b, len(train_set), cfg.batch_size)]
            x = augment(tr_x[idx].float(), aug, gen)
            y = y_all[idx]
            lr = lr_at(state["step"], total, warmup, cfg.lr)

            def loss_of(logits, y=y):
                return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)

            logits, loss = train_step(model, opt, _normalise(x, spec), lr, loss_of, cfg.precision)
            state["step"] += 1
            tot_loss += float(loss.detach()) * len(y)
            tot_ok += int((logits.argmax(1) == y).sum())
            seen += len(y)
        probs = predict_colour(model, va_x, spec)
        rep = classification_report(probs, val_set.labels, classes)
        val_loss = mean_nll(probs, val_set.labels)
        append_log(log, log_row(epoch + 1, lr, tot_loss / seen, tot_ok / seen, val_loss, rep, t0))
        state["epoch"] = epoch + 1
        improved = rep["accuracy"] > state["best_acc"]
        if improved:
            state.update(best_acc=rep["accuracy"], best_epoch=epoch + 1)
        ck = {
            **state,
            "config": asdict(cfg),
            "spec": spec.to_metadata(),
            **info,
            "val_split": val_name,
            "colour": "bgr",
        }
        if improved:
            save_checkpoint(run / "best.safetensors", model, None, ck)
        save_checkpoint(last, model, opt, ck)
        print(
            f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {tot_loss / seen:.4f}  "
            f"{val_name} acc {rep['accuracy']:.4f}  {time.time() - t0:.0f}s",
            file=sys.stderr,
            flush=True,
        )
    return run


def colour_probs(run: Path, x_u8: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    from edge_fer.export.onnx import load_trained

    model, spec, _ = load_trained(run / "best.safetensors")
    return predict_colour(model, x_u8, spec), tuple(spec.classes)
