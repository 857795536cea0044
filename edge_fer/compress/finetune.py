"""A compact fine-tuning loop for compressed models (pruning, QAT).

The recipe of `edge_fer.train.trainer` (its data splits, augmentation, normalisation, cosine
learning rate, label smoothing, parameter groups) from a small learning rate, without the
checkpoint/resume machinery: Training split only, PublicTest accuracy after every epoch, the best
epoch's weights kept. Masks (2:4, unstructured) are re-applied after every optimizer step through
`post_step`; batch norms rebuilt from an ONNX file stay frozen with `frozen_bn`.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from edge_fer.align.dataset import as_trained
from edge_fer.data.faceset import FaceSet
from edge_fer.errors import UserError
from edge_fer.limits import check_number
from edge_fer.metrics import classification_report
from edge_fer.preprocess import PreprocessSpec
from edge_fer.progress import Progress
from edge_fer.train.augment import AugmentConfig, augment
from edge_fer.train.distill import distill_loss
from edge_fer.train.trainer import (
    TrainConfig,
    batch_end,
    load_splits,
    lr_at,
    normalise,
    pick_device,
    predict,
    schedule,
    sgd,
    skipped_of,
    train_step,
)


@dataclass
class FinetuneConfig:
    epochs: int = 2
    lr: float = 0.01
    batch_size: int = 128
    weight_decay: float = 5e-4
    momentum: float = 0.9
    label_smoothing: float = 0.1
    warmup_epochs: float = 0.0
    train_fraction: float = 1.0  # quick runs: fine-tune on this fraction of the Training split
    val_limit: int = 0  # quick runs / tests: select on at most this many validation faces
    max_batches: int = 0  # tests: stop each epoch after this many batches
    seed: int = 0
    augment: bool = True
    device: str = "auto"
    threads: int = 0
    # knowledge distillation from the uncompressed model (Hinton et al. 2015): weight of the
    # soft-target loss (0: labels only) and its temperature
    distill: float = 0.0
    distill_temperature: float = 4.0
    # skip unreadable images (and those outside the class folders) instead of stopping, as
    # `edge-fer train --skip-bad` does (before: one corrupt image and no way round it)
    skip_bad: bool = False

    def validate(self) -> None:
        """A UserError naming the first setting that does not fit, non-finite numbers
        included (before any fine-tuning, and so before any file is written)."""
        if self.epochs < 0:
            raise UserError("must be >= 0", param="epochs")
        check_number(self.lr, "lr", lo_open=True)
        if self.batch_size < 1:
            raise UserError("must be at least 1", param="batch_size")
        check_number(self.weight_decay, "weight_decay")
        check_number(self.momentum, "momentum", 0, 1, hi_open=True)
        check_number(self.label_smoothing, "label_smoothing", 0, 1, hi_open=True)
        check_number(self.warmup_epochs, "warmup_epochs")
        check_number(self.train_fraction, "train_fraction", 0, 1, lo_open=True)
        for name in ("val_limit", "max_batches", "seed"):
            if getattr(self, name) < 0:
                raise UserError("must be >= 0", param=name)
        if self.seed >= 2**32:  # numpy's and torch's seeds, as train (larger ones overflowed)
            raise UserError(f"must be below 2**32, got {self.seed}", param="seed")
        if self.threads < 0:
            raise UserError("must be >= 0", param="threads")
        check_number(self.distill, "distill", 0, 1)
        check_number(self.distill_temperature, "distill_temperature", lo_open=True)
        pick_device(self.device)  # before any file: qat wrote ptq.onnx, then failed on mps


@dataclass
class FinetuneData:
    train_x: np.ndarray  # (N, H, W) uint8 as trained: eye-aligned, CLAHE, as the spec says
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    val_name: str
    spec: PreprocessSpec
    # with skip_bad: {"skipped": count, "skipped_entries": the first ones}, as train names them
    skipped: dict = field(default_factory=dict)
    # a dataset without FER2013's PublicTest (class folders): its held-out part as loaded (the
    # selection faces, not prepared), which the report scores; None for FER2013
    held_out: FaceSet | None = None

    def calibration_faces(self, n: int, seed: int = 0) -> np.ndarray:
        """An even-handed random sample of Training faces (for quantization calibration)."""
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.permutation(len(self.train_x))[: min(n, len(self.train_x))])
        return self.train_x[idx]


def load_finetune_data(data: str, spec: PreprocessSpec, cfg: FinetuneConfig) -> FinetuneData:
    """Training and selection faces of `data` (FER2013: Training / PublicTest; other layouts:
    a held-out 10%, as `edge-fer train` does), labels mapped onto the model's classes, the faces
    prepared as the trainer prepared them (`edge_fer.align.as_trained`: eye alignment when the
    spec says `align`, then CLAHE when it says `clahe`)."""
    cfg.validate()
    tcfg = TrainConfig(
        arch="-", data=str(data), input_size=spec.input_size, seed=cfg.seed, clahe=spec.clahe,
        skip_bad=cfg.skip_bad,
    )  # fmt: skip
    train, val, val_name = load_splits(tcfg)  # (a BadEntry: the CLI adds the --skip-bad hint)
    skipped = skipped_of(train, val) if cfg.skip_bad else {}
    model_classes = tuple(spec.classes)
    missing = [c for c in train.classes if c not in model_classes]
    if missing and (
        np.isin(train.counts().nonzero()[0], [train.classes.index(c) for c in missing]).any()
    ):
        raise UserError(
            f"{data}: classes {', '.join(missing)} are not among the model's "
            f"({', '.join(model_classes)})"
        )
    remap = np.array(
        [model_classes.index(c) if c in model_classes else -1 for c in train.classes], np.int64
    )
    tx, ty = train.images, remap[train.labels]
    vx, vy = val.images, remap[val.labels]
    if cfg.train_fraction < 1:
        rng = np.random.default_rng(cfg.seed)
        k = max(1, round(len(tx) * cfg.train_fraction))
        idx = np.sort(rng.permutation(len(tx))[:k])
        tx, ty = tx[idx], ty[idx]
    if cfg.val_limit and len(vx) > cfg.val_limit:
        idx = np.linspace(0, len(vx) - 1, cfg.val_limit).round().astype(int)
        vx, vy = vx[idx], vy[idx]
    # as the trainer fed the model: aligned on the eyes (spec.align), then CLAHE (spec.clahe)
    tx, vx = as_trained(tx, spec, clahe=True), as_trained(vx, spec, clahe=True)
    held = None
    if val_name != "public-test":  # before: the report scored all the faces, fine-tuned ones too
        # (the files skipped while loading were skipped in its folders too: the report names them)
        held = replace(val, **skipped) if skipped else val
    return FinetuneData(tx, ty, vx, vy, val_name, spec, skipped, held)


def evaluate_torch(model, data: FinetuneData, device=None) -> dict:
    """Selection-split accuracy / top-2 / macro-F1 of a torch model (no test-time augmentation)."""
    device = device or next(model.parameters()).device
    probs = predict(model, data.val_x, data.spec, device)
    rep = classification_report(probs, data.val_y, data.spec.classes)
    return {k: rep[k] for k in ("accuracy", "top2_accuracy", "macro_f1", "n")}


def set_frozen_bn(model, frozen: bool) -> None:
    if frozen:
        from edge_fer.export.onnx_import import freeze_bn

        freeze_bn(model)


def epoch_seed(seed: int, round_index: int, epoch: int) -> int:
    """The seed of torch's global generator (dropout) for one fine-tuning epoch: a function of
    (seed, round, epoch) alone, so that the same --seed gives the same run."""
    return int(np.random.SeedSequence([seed, round_index, epoch]).generate_state(1)[0])


def finetune(
    model,
    data: FinetuneData,
    cfg: FinetuneConfig,
    *,
    frozen_bn: bool = False,
    post_step: Callable[[], None] | None = None,
    desc: str = "fine-tune",
    round_index: int = 0,
    log: list | None = None,
    teacher=None,
) -> dict:
    """Fine-tune `model` in place; keeps the weights of the best selection-split epoch.

    post_step: called after every optimizer step (re-apply pruning masks, ...).
    round_index: varies the shuffling of repeated calls (iterative pruning rounds).
    log: per-epoch rows are appended here.
    teacher: the uncompressed model; with cfg.distill > 0 its temperature-softened outputs are
    part of the loss (in the one pruning run measured it did not help: docs/compress.md).
    Returns {"best_acc", "best_epoch", "start_acc", "epochs", "seconds"}.
    Reproducible (bitwise on CPU at one thread count): the shuffling, augmentation and dropout
    of each epoch depend only on (cfg.seed, round_index, epoch); torch's global generator is
    seeded for the dropout.
    """
    cfg.validate()
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model.to(device, memory_format=torch.channels_last)
    t_start = time.time()
    start = evaluate_torch(model, data, device)
    best = {"acc": start["accuracy"], "epoch": 0, "state": copy.deepcopy(model.state_dict())}
    if cfg.epochs == 0:
        return {
            "best_acc": start["accuracy"],
            "best_epoch": 0,
            "start_acc": start["accuracy"],
            "epochs": 0,
            "seconds": time.time() - t_start,
        }
    opt = sgd(model, cfg)
    n = len(data.train_x)
    steps_per_epoch, total, warmup = schedule(n, cfg)
    aug = AugmentConfig(enabled=cfg.augment)
    x_all = torch.from_numpy(data.train_x)
    y_all = torch.from_numpy(data.train_y)
    if cfg.distill > 0 and teacher is not None:
        teacher = teacher.to(device, memory_format=torch.channels_last).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    else:
        teacher = None
    step = 0
    for epoch in range(cfg.epochs):
        t0 = time.time()
        # dropout draws from torch's global generator, which torch seeds at random in each
        # process (and which earlier rounds have advanced): seed it from (seed, round, epoch)
        # as the trainer does, or the same --seed gave another loss and other weights each run
        torch.manual_seed(epoch_seed(cfg.seed, round_index, epoch))
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + 7919 * round_index + epoch)
        order = torch.randperm(n, generator=gen)
        model.train()
        set_frozen_bn(model, frozen_bn)
        tot_loss, tot_ok, seen = 0.0, 0, 0
        bar = Progress(steps_per_epoch, f"{desc} {epoch + 1}/{cfg.epochs}", "batch", True)
        lr = cfg.lr
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : batch_end(b, n, cfg.batch_size)]
            x = augment(x_all[idx][:, None].float(), aug, gen)
            y = y_all[idx]
            keep = y >= 0
            x, y = normalise(x[keep].to(device), data.spec), y[keep].to(device)
            if len(y) == 0:
                bar.update()
                continue
            lr = lr_at(step, total, warmup, cfg.lr)

            def loss_of(logits, x=x, y=y):
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                if teacher is None:
                    return loss
                with torch.no_grad():
                    t_logits = teacher(x)
                kd = distill_loss(logits, t_logits, cfg.distill_temperature)
                return (1 - cfg.distill) * loss + cfg.distill * kd

            logits, loss = train_step(model, opt, x, lr, loss_of)
            if post_step is not None:
                post_step()
            step += 1
            tot_loss += float(loss.detach()) * len(y)
            tot_ok += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.postfix(f"loss {tot_loss / max(seen, 1):.3f}")
            bar.update()
        bar.close()
        rep = evaluate_torch(model, data, device)
        improved = rep["accuracy"] > best["acc"]
        if improved:
            best = {
                "acc": rep["accuracy"],
                "epoch": epoch + 1,
                "state": copy.deepcopy(model.state_dict()),
            }
        row = {
            "round": round_index,
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": tot_loss / max(seen, 1),
            "train_acc": tot_ok / max(seen, 1),
            "val_acc": rep["accuracy"],
            "val_top2": rep["top2_accuracy"],
            "val_macro_f1": rep["macro_f1"],
            "seconds": time.time() - t0,
        }
        if log is not None:
            log.append(row)
        print(
            f"{desc} epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  "
            f"{data.val_name} acc {rep['accuracy']:.4f} (start {start['accuracy']:.4f})  "
            f"lr {lr:.3g}  {row['seconds']:.0f}s" + ("  *" if improved else ""),
            file=sys.stderr,
            flush=True,
        )
    model.load_state_dict(best["state"])
    if post_step is not None:
        post_step()
    model.eval()
    return {
        "best_acc": best["acc"],
        "best_epoch": best["epoch"],
        "start_acc": start["accuracy"],
        "epochs": cfg.epochs,
        "seconds": time.time() - t_start,
    }


@torch.no_grad()
def renormalize_bn(model, faces_x: np.ndarray, spec: PreprocessSpec, batch: int = 128) -> int:
    """Turn the identity batch norms of a model rebuilt from ONNX back into real ones.

    For every Conv2d followed by a BatchNorm2d, measure the mean mu and variance var of the
    conv's output channels on `faces_x` (uint8), then set running_mean = mu, running_var = var,
    weight = sqrt(var + eps), bias = old bias + mu: the same function as before (exactly), but
    batch norms that normalise again, so the model fine-tunes with batch norms in training mode
    like the training recipe (the folded net without normalisation diverges at SGD learning rates
    that suit it). Returns the number of batch norms changed."""
    from torch import nn

    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []
    last = None
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            last = m
        elif isinstance(m, nn.BatchNorm2d) and last is not None:
            if m.num_features == last.out_channels:
                pairs.append((last, m))
            last = None
    if not pairs:
        return 0
    sums = {id(c): [0.0, 0.0, 0] for c, _ in pairs}

    def hook(mod, inp, out):
        o = out.double()
        s = sums[id(mod)]
        s[0] = s[0] + o.sum((0, 2, 3))
        s[1] = s[1] + (o * o).sum((0, 2, 3))
        s[2] += o.numel() // o.shape[1]

    handles = [c.register_forward_hook(hook) for c, _ in pairs]
    was = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        for i in range(0, len(faces_x), batch):
            x = torch.from_numpy(faces_x[i : i + batch])[:, None].float().to(device)
            model(normalise(x, spec))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    for conv, bn in pairs:
        s0, s1, n = sums[id(conv)]
        mu = s0 / n
        var = (s1 / n - mu * mu).clamp_min(0)
        # old BN: y = scale (z - m) + b; the new one normalises with the measured statistics
        # and gives the same y for every z: new_w / sqrt(var + eps) = scale
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        new_w = scale * torch.sqrt(var + bn.eps)
        new_b = scale * (mu - bn.running_mean.double()) + bn.bias.double()
        bn.running_mean.copy_(mu.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.to(bn.running_var.dtype))
        bn.weight.copy_(new_w.to(bn.weight.dtype))
        bn.bias.copy_(new_b.to(bn.bias.dtype))
    return len(pairs)
