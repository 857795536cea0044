"""Pruning with fine-tuning (`edge-fer prune`): three methods, one workflow.

- ``structured``: channel pruning with torch-pruning. Its dependency graph keeps coupled layers
  consistent (a conv's output channels, its batch norm, the next conv's input channels, residual
  sums); the channels of every prunable layer are ranked by L1 or L2 weight magnitude or by
  first-order Taylor importance |w * dL/dw|, and each layer keeps the same fraction of its
  channels (rounded down to a multiple of `round_to`, which keeps the widths friendly to SIMD
  and tensor cores). The fraction is searched so that the network's MACs drop by at least
  `target_macs_reduction`; it is reached in `steps` rounds of pruning + fine-tuning. The final
  classifier is never pruned. The result has per-layer widths: it is stored as the `pruned`
  architecture (`edge_fer.compress.arch`).
- ``2:4``: semi-structured sparsity for the sparse tensor cores of Ampere GPUs (Jetson Orin;
  TensorRT `trtexec --sparsity=enable`): in every group of 4 consecutive input channels (at
  each output channel and kernel position) the 2 smallest weights are zeroed; the masks stay
  fixed while fine-tuning. Layers whose input channels are not a multiple of 4 (the first conv
  of a grayscale net, depthwise convs) are left dense. ONNX Runtime on a CPU runs it as dense.
- ``unstructured``: global magnitude pruning of individual weights to `sparsity` over all
  prunable layers, reached in `steps` rounds with fine-tuning. The dense ONNX file keeps its
  size; its compressed (gzip) size shrinks, which is what it is for.

Batch norms: a model rebuilt from ONNX has its batch norms folded into the convolutions
(identity batch norms). Fine-tuned as such (no normalisation left), the pruned net barely
recovers and diverges at learning rates that suit a normalised one; by default (`bn=
"renormalize"`) each of them is therefore given the statistics of its conv's output on Training
faces (the same function, exactly) and trains like in the training recipe. `bn="frozen"` keeps
them fixed (and then wants a learning rate of about 0.001).

The fine-tuned model is written as a checkpoint (`pruned.safetensors`, rebuildable by
`edge-fer export` like any checkpoint) and exported to ONNX through `edge_fer.export.onnx`
(metadata, ONNX Runtime parity check), with `edge_fer.compression` metadata describing the run.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_fer.compress.arch import ARCH, base_arch, pruned_kwargs
from edge_fer.compress.finetune import FinetuneConfig, FinetuneData, finetune, renormalize_bn
from edge_fer.errors import UserError, check_choice
from edge_fer.models import model_info
from edge_fer.train.augment import AugmentConfig  # noqa: F401  (documented reuse)
from edge_fer.train.trainer import normalise

METHODS = ("structured", "2:4", "unstructured")
IMPORTANCES = ("l1", "l2", "taylor")
BN_MODES = ("renormalize", "frozen")
MAX_REDUCTION = 0.95


@dataclass
class PruneConfig:
    method: str = "structured"
    importance: str = "l2"  # structured: l1, l2 (weight magnitude) or taylor
    target_macs_reduction: float = 0.5  # structured: at least this fraction of the MACs goes
    steps: int = 3  # structured / unstructured: prune + fine-tune rounds
    round_to: int = 16  # structured: keep a multiple of this many channels per layer (0: any)
    sparsity: float = 0.5  # unstructured: fraction of the prunable weights set to zero
    taylor_batches: int = 4  # taylor: batches whose gradients rank the channels
    bn: str = "renormalize"  # models rebuilt from ONNX: renormalize or frozen batch norms

    def validate(self) -> None:
        check_choice(self.method, METHODS, "method")
        check_choice(self.importance, IMPORTANCES, "importance")
        if not 0 < self.target_macs_reduction <= MAX_REDUCTION:
            raise UserError(
                f"must be in (0, {MAX_REDUCTION}] (a fraction of the MACs), "
                f"got {self.target_macs_reduction:g}",
                param="target_macs_reduction",
            )
        if not 0 < self.sparsity < 1:
            raise UserError(f"must be in (0, 1), got {self.sparsity:g}", param="sparsity")
        if self.steps < 1:
            raise UserError("must be at least 1", param="steps")
        if self.round_to < 0:
            raise UserError("must be >= 0", param="round_to")
        if self.taylor_batches < 1:
            raise UserError("must be at least 1", param="taylor_batches")
        check_choice(self.bn, BN_MODES, "bn")


def _tp():
    try:
        import torch_pruning as tp
    except ImportError as exc:
        raise UserError(
            f"structured pruning needs torch-pruning: pip install torch-pruning "
            f"(or python3 -m pip install '.[compress]' in the edge-fer checkout) ({exc})"
        ) from None
    return tp


def classifier_layer(model: nn.Module) -> nn.Module:
    """The final classifier: the last conv / linear layer of the model (never pruned)."""
    last = None
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            last = m
    if last is None:
        raise UserError("the model has no convolution or linear layer to prune")
    return last


def weighted_layers(model: nn.Module, with_classifier: bool = False) -> list[tuple[str, nn.Module]]:
    head = classifier_layer(model)
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and (with_classifier or m is not head)
    ]


def info_of(model: nn.Module, spec) -> dict:
    return model_info(model, spec.input_size, spec.channels)


# -- masks (2:4, unstructured) ----------------------------------------------------------------


class Masks:
    """Fixed 0/1 masks on weights: applied now, re-applied by `apply()`, and gradients of the
    masked weights are zeroed (so momentum and weight decay leave them at zero)."""

    def __init__(self, masks: dict[str, tuple[nn.Parameter, torch.Tensor]]):
        self.masks = masks
        self._hooks = [p.register_hook(lambda g, m=m: g * m.to(g.dtype)) for p, m in masks.values()]
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for p, m in self.masks.values():
            p.mul_(m.to(p.dtype))

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def sparsity(self) -> float:
        tot = sum(m.numel() for _, m in self.masks.values())
        zero = sum(int((m == 0).sum()) for _, m in self.masks.values())
        return zero / tot if tot else 0.0


def nm_mask(w: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep the n largest |w| of every m consecutive input channels (dim 1), per output channel
    and kernel position: TensorRT's 2:4 layout for conv (K, C, R, S) and linear (K, C)."""
    if w.shape[1] % m:
        raise ValueError(f"input channels {w.shape[1]} are not a multiple of {m}")
    wp = w.detach().movedim(1, -1)  # (..., C)
    shape = wp.shape
    g = wp.reshape(-1, m).abs()
    keep = g.topk(n, dim=1).indices
    mask = torch.zeros_like(g).scatter_(1, keep, 1.0)
    return mask.reshape(shape).movedim(-1, 1).contiguous()


def nm_masks(model: nn.Module, n: int = 2, m: int = 4) -> tuple[Masks, list[str]]:
    """2:4 masks for every conv (groups 1) and linear layer with a multiple of 4 input
    channels, the classifier included; -> (masks, names of the layers left dense)."""
    masks, dense = {}, []
    for name, mod in weighted_layers(model, with_classifier=True):
        w = mod.weight
        if (isinstance(mod, nn.Conv2d) and mod.groups != 1) or w.shape[1] % m:
            dense.append(name)
            continue
        masks[name] = (w, nm_mask(w, n, m))
    if not masks:
        raise UserError("no layer has a multiple of 4 input channels: 2:4 sparsity does not apply")
    return Masks(masks), dense


def magnitude_masks(model: nn.Module, sparsity: float) -> Masks:
    """Global magnitude masks: the `sparsity` fraction of smallest |w| over all prunable layers
    (the classifier excluded) is zeroed."""
    layers = weighted_layers(model)
    flat = torch.cat([m.weight.detach().abs().flatten() for _, m in layers])
    k = round(sparsity * flat.numel())
    keep = torch.ones_like(flat)
    if k > 0:
        keep[torch.topk(flat, k, largest=False).indices] = 0.0
    masks, i = {}, 0
    for name, mod in layers:
        n = mod.weight.numel()
        masks[name] = (mod.weight, keep[i : i + n].reshape(mod.weight.shape).clone())
        i += n
    return Masks(masks)


def check_nm_onnx(path: str | Path, n: int = 2, m: int = 4) -> dict:
    """2:4 pattern of an exported ONNX file: per conv/gemm weight whose input channels are a
    multiple of 4, the fraction of 4-groups with at least m - n zeros."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    layers = {}
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or node.input[1] not in inits:
            continue
        w = inits[node.input[1]]
        if node.op_type == "MatMul" or (
            node.op_type == "Gemm"
            and not next((a.i for a in node.attribute if a.name == "transB"), 0)
        ):
            w = w.T
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        if w.ndim < 2 or w.shape[1] % m or groups != 1:
            continue
        g = np.moveaxis(w, 1, -1).reshape(-1, m)
        layers[node.input[1]] = float(((g == 0).sum(1) >= m - n).mean())
    ok = sum(1 for v in layers.values() if v == 1.0)
    return {
        "layers_checked": len(layers),
        "layers_2to4": ok,
        "all_2to4": bool(layers) and ok == len(layers),
        "per_layer": layers,
    }


# -- structured -------------------------------------------------------------------------------


def _importance(name: str):
    tp = _tp()
    if name == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.MagnitudeImportance(p=2)
    return tp.importance.TaylorImportance()


def make_pruner(model, example, importance, ratio: float, steps: int, round_to: int):
    tp = _tp()
    cls = getattr(tp.pruner, "MetaPruner", None) or tp.pruner.BasePruner
    kw = {
        "importance": importance,
        "iterative_steps": steps,
        "ignored_layers": [classifier_layer(model)],
        "round_to": round_to or None,
    }
    try:
        return cls(model, example, pruning_ratio=ratio, **kw)
    except TypeError:  # torch-pruning < 1.3 calls it ch_sparsity
        return cls(model, example, ch_sparsity=ratio, **kw)


def _reduction_after(model, spec, ratio: float, steps: int, round_to: int, base: int) -> float:
    c = copy.deepcopy(model).cpu().eval()
    ex = torch.zeros(1, spec.channels, spec.input_size, spec.input_size)
    pr = make_pruner(c, ex, _importance("l2"), ratio, steps, round_to)
    for _ in range(steps):
        pr.step()
    return 1.0 - info_of(c, spec)["macs"] / base


def ratio_for_target(model, spec, target: float, steps: int, round_to: int) -> float:
    """The smallest per-layer channel fraction whose pruning removes >= target of the MACs
    (searched on copies; each layer's width after the last step depends only on it). A coarse
    scan first: with `round_to`, a layer that would keep fewer channels than that is left
    alone, so the MACs are not monotonic in the fraction near its end."""
    base = info_of(model, spec)["macs"]
    grid = np.arange(0.02, 0.91, 0.02)
    hi = next(
        (
            float(p)
            for p in grid
            if _reduction_after(model, spec, float(p), 1, round_to, base) >= target
        ),
        None,
    )
    if hi is None:
        raise UserError(
            f"--target-macs-reduction {target:g} cannot be reached on this model "
            f"(with --round-to {round_to}; the classifier is never pruned)"
        )
    lo = hi - 0.02
    for _ in range(8):
        mid = 0.5 * (lo + hi)
        if _reduction_after(model, spec, mid, 1, round_to, base) >= target:
            hi = mid
        else:
            lo = mid
    ratio = hi
    while _reduction_after(model, spec, ratio, steps, round_to, base) < target:
        ratio += 0.005  # the rounding of the intermediate steps fell short: a little more
        if ratio > 0.95:
            raise UserError(
                f"--target-macs-reduction {target:g} cannot be reached in "
                f"{steps} steps with --round-to {round_to}"
            )
    return ratio


def _round_accuracy(ft: dict, fcfg: FinetuneConfig | None) -> dict:
    """A round's selection accuracies: after pruning and, where it ran, after fine-tuning.
    With 0 epochs no "val_acc_finetuned" (before: the pruned model's accuracy under that
    name, as if it had been fine-tuned)."""
    acc = {"val_acc_pruned": ft["start_acc"]}
    if fcfg is None or fcfg.epochs > 0:
        acc["val_acc_finetuned"] = ft["best_acc"]
    return {**acc, "best_epoch": ft["best_epoch"]}


def _last_accuracy(rounds: list[dict]) -> float:
    last = rounds[-1]
    return last.get("val_acc_finetuned", last["val_acc_pruned"])


def _acc_line(ft: dict, fcfg: FinetuneConfig | None) -> str:
    if fcfg is not None and fcfg.epochs == 0:
        return f"{ft['start_acc']:.4f} (not fine-tuned: 0 epochs)"
    return f"{ft['start_acc']:.4f} -> {ft['best_acc']:.4f}"


def _taylor_grads(model, data: FinetuneData, batches: int, batch_size: int, seed: int) -> None:
    import torch.nn.functional as F

    device = next(model.parameters()).device
    model.eval()
    model.zero_grad(set_to_none=True)
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        idx = rng.choice(len(data.train_x), min(batch_size, len(data.train_x)), replace=False)
        x = torch.from_numpy(data.train_x[idx])[:, None].float()
        y = torch.from_numpy(data.train_y[idx])
        keep = y >= 0
        x, y = normalise(x[keep].to(device), data.spec), y[keep].to(device)
        F.cross_entropy(model(x), y).backward()


def prune_structured(
    model, data: FinetuneData, pcfg: PruneConfig, fcfg: FinetuneConfig, tune: Callable
) -> dict:
    """Structured pruning in `steps` rounds, each fine-tuned by `tune` (`finetune`'s keywords)."""
    spec = data.spec
    base = info_of(model, spec)
    ratio = ratio_for_target(model, spec, pcfg.target_macs_reduction, pcfg.steps, pcfg.round_to)
    goal = f">= {pcfg.target_macs_reduction:.0%} fewer MACs, {pcfg.steps} step(s)"
    if ratio >= 0.0005 or (pcfg.round_to or 1) <= 1:
        what = (
            f"pruning {ratio:.3f} of each layer's channels (then rounding the rest down to a "
            f"multiple of {pcfg.round_to or 1})"
        )
    else:  # small nets: --round-to does the cutting ("pruning 0.000" read as doing nothing)
        what = (
            f"rounding each layer's channels down to a multiple of {pcfg.round_to} (a "
            f"pruning fraction of {ratio:.1g}: the rounding does the cutting)"
        )
    print(
        f"structured: {what} for {goal}",
        file=sys.stderr,
        flush=True,
    )
    model.cpu()
    ex = torch.zeros(1, spec.channels, spec.input_size, spec.input_size)
    pruner = make_pruner(
        model.eval(), ex, _importance(pcfg.importance), ratio, pcfg.steps, pcfg.round_to
    )
    rounds = []
    for k in range(pcfg.steps):
        if pcfg.importance == "taylor":
            _taylor_grads(model, data, pcfg.taylor_batches, fcfg.batch_size, fcfg.seed + k)
        model.cpu()
        pruner.step()
        model.zero_grad(set_to_none=True)
        inf = info_of(model, spec)
        ft = tune(model, desc=f"prune {k + 1}/{pcfg.steps}", round_index=k)
        rounds.append(
            {
                "step": k + 1,
                **inf,
                "macs_reduction": 1 - inf["macs"] / base["macs"],
                **_round_accuracy(ft, fcfg),
            }
        )
        print(
            f"step {k + 1}/{pcfg.steps}: {inf['macs'] / 1e6:.1f}M MACs "
            f"(-{rounds[-1]['macs_reduction']:.1%}), {inf['params']:,} params, "
            f"{data.val_name} acc {_acc_line(ft, fcfg)}",
            file=sys.stderr,
            flush=True,
        )
    model.cpu()
    final = info_of(model, spec)
    reduction = 1 - final["macs"] / base["macs"]
    if reduction < pcfg.target_macs_reduction - 1e-9:  # guarded by ratio_for_target
        raise UserError(f"pruning removed {reduction:.1%} of the MACs, short of the target")
    widths = [m.out_channels for _, m in weighted_layers(model) if isinstance(m, nn.Conv2d)]
    print(f"conv widths {widths}", file=sys.stderr, flush=True)
    return {
        "channel_ratio_pruned": ratio,
        "rounds": rounds,
        "macs_reduction": reduction,
        "conv_widths": widths,
        "val_acc": _last_accuracy(rounds),
    }


def prune_masked(
    model, data: FinetuneData, pcfg: PruneConfig, tune: Callable, fcfg: FinetuneConfig | None = None
) -> dict:
    """2:4 (one shot, then fine-tuning) or unstructured (gradual, `steps` rounds), fine-tuned
    by `tune` (`finetune`'s keywords; `fcfg`: its settings, which say whether it tunes)."""
    rounds, masks, dense = [], None, []
    steps = 1 if pcfg.method == "2:4" else pcfg.steps
    for k in range(steps):
        if masks is not None:
            masks.remove()
        if pcfg.method == "2:4":
            masks, dense = nm_masks(model)
        else:
            masks = magnitude_masks(model, pcfg.sparsity * (k + 1) / steps)
        desc = f"{pcfg.method} {k + 1}/{steps}"
        ft = tune(model, desc=desc, round_index=k, post_step=masks.apply)
        rounds.append({"step": k + 1, "sparsity": masks.sparsity(), **_round_accuracy(ft, fcfg)})
        print(
            f"step {k + 1}/{steps}: sparsity {masks.sparsity():.1%} of the masked weights, "
            f"{data.val_name} acc {_acc_line(ft, fcfg)}",
            file=sys.stderr,
            flush=True,
        )
    masks.apply()
    masks.remove()
    total = sum(m.weight.numel() for _, m in weighted_layers(model, True))
    zeros = sum(int((m.weight == 0).sum()) for _, m in weighted_layers(model, True))
    out = {
        "rounds": rounds,
        "masked_sparsity": masks.sparsity(),
        "weight_sparsity": zeros / total,
        "masked_layers": list(masks.masks),
        "val_acc": _last_accuracy(rounds),
    }
    if pcfg.method == "2:4":
        out["dense_layers"] = dense
    return out


# -- the whole run ----------------------------------------------------------------------------


def _finetune_record(fcfg: FinetuneConfig) -> dict:
    """The fine-tuning's settings as recorded; with 0 epochs `{"epochs": 0}` (before: its
    learning rate, batch size, weight decay, label smoothing, augmentation ... were recorded
    as if it had run)."""
    return asdict(fcfg) if fcfg.epochs > 0 else {"epochs": 0}


def _untuned_record(pcfg: PruneConfig, fcfg: FinetuneConfig, bn_folded: bool) -> dict:
    """What a run with 0 epochs recorded beside `"finetune": {"epochs": 0}`: the settings that
    still chose faces (`faces`: the seed of the held-out split and of the samples,
    --val-limit, --skip-bad, and the Training fraction where Training faces were read: by
    the renormalized batch norms or the Taylor ranking), and the Taylor ranking's batch
    size."""
    taylor = pcfg.method == "structured" and pcfg.importance == "taylor"
    read_training = taylor or (bn_folded and pcfg.bn == "renormalize")
    faces: dict = {"seed": fcfg.seed, "val_limit": fcfg.val_limit}
    if read_training:
        faces["train_fraction"] = fcfg.train_fraction
    if fcfg.skip_bad:
        faces["skip_bad"] = True
    out: dict = {"faces": faces}
    if taylor:
        out["taylor_batch_size"] = fcfg.batch_size
    return out


def run_prune(
    src,
    data: FinetuneData,
    pcfg: PruneConfig,
    fcfg: FinetuneConfig,
    out: Path,
    check_faces: np.ndarray | None = None,
) -> dict:
    """Prune + fine-tune `src` (edge_fer.compress.io.SourceModel); write pruned.safetensors and
    pruned.onnx into `out`; returns the run's description (method, rounds, export report)."""
    from edge_fer.compress.io import add_onnx_metadata
    from edge_fer.export.onnx import export_checkpoint
    from edge_fer.train.checkpoint import save_checkpoint
    from edge_fer.train.trainer import TrainConfig, arch_kwargs_for

    pcfg.validate()
    fcfg.validate()
    if pcfg.method == "structured":
        _tp()
    if check_faces is None:
        idx = np.linspace(0, len(data.val_x) - 1, min(64, len(data.val_x))).round().astype(int)
        check_faces = data.val_x[idx]
    model = copy.deepcopy(src.model).cpu()
    spec = src.spec
    before = info_of(model, spec)
    log: list = []
    frozen = src.bn_folded
    renormalized = 0
    if src.bn_folded and pcfg.bn == "renormalize":
        renormalized = renormalize_bn(model, data.calibration_faces(1024, fcfg.seed), spec)
        frozen = False
        how = "they train as in the training recipe" if fcfg.epochs else "0 epochs: not trained"
        print(
            f"batch norms: {renormalized} renormalized on Training faces (same function; {how})",
            file=sys.stderr,
            flush=True,
        )
    # the teacher: the source model as it is now (batch norms renormalized, nothing pruned)
    teacher = copy.deepcopy(model).eval() if fcfg.distill > 0 else None

    # every round fine-tunes the same way: tune(model, desc=..., round_index=..., post_step=...)
    same = {"frozen_bn": frozen, "log": log, "teacher": teacher}
    tune = functools.partial(finetune, data=data, cfg=fcfg, **same)
    if pcfg.method == "structured":
        res = prune_structured(model, data, pcfg, fcfg, tune)
    else:
        res = prune_masked(model, data, pcfg, tune, fcfg)
    res["bn"] = ("renormalized" if renormalized else "frozen") if src.bn_folded else "trained"
    model.cpu().eval()
    model = model.to(memory_format=torch.contiguous_format)
    after = info_of(model, spec)

    cfg = dict(src.state.get("config") or {})
    cfg.setdefault("data", "")  # load_trained builds a TrainConfig, which needs it
    if pcfg.method == "structured":
        base_kw = src.arch_kwargs
        if src.arch != ARCH:
            base_kw = arch_kwargs_for(
                TrainConfig(
                    arch=src.arch, data="-", arch_kwargs=base_kw, input_size=spec.input_size
                )
            )
        cfg["arch_kwargs"] = pruned_kwargs(src.arch, base_kw, model)
        cfg["arch"] = ARCH
    compression = {
        "method": pcfg.method,
        **asdict(pcfg),
        "finetune": _finetune_record(fcfg),
        "source": src.path.name,
        "source_arch": base_arch(src.arch, src.arch_kwargs),
        "macs_before": before["macs"],
        "macs_after": after["macs"],
        "params_before": before["params"],
        "params_after": after["params"],
        **{
            k: v
            for k, v in res.items()
            if k in ("macs_reduction", "weight_sparsity", "masked_sparsity", "conv_widths")
        },
    }
    compression["batch_norms"] = res.pop("bn")
    compression.pop("bn", None)
    if pcfg.method == "2:4":
        compression.pop("steps", None)
    if pcfg.method != "structured":
        for k in ("importance", "target_macs_reduction", "round_to", "taylor_batches"):
            compression.pop(k, None)
    if pcfg.method != "unstructured":
        compression.pop("sparsity", None)
    if pcfg.importance != "taylor":  # (before: recorded, though no gradient ranked a channel)
        compression.pop("taylor_batches", None)
    if fcfg.epochs == 0:
        compression.update(_untuned_record(pcfg, fcfg, src.bn_folded))
    state = {
        "config": cfg,
        "spec": spec.to_metadata(),
        **after,
        "best_acc": res["val_acc"],
        "best_epoch": (res["rounds"][-1] or {}).get("best_epoch"),
        "val_split": data.val_name,
        "epoch": fcfg.epochs * len(res["rounds"]),
        "bn_folded": frozen,
        "compression": compression,
        "rebuilt_from_onnx": src.state.get("rebuilt_from_onnx"),
    }
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "pruned.safetensors"
    save_checkpoint(ckpt, model, None, state)
    onnx_path = out / "pruned.onnx"
    exp = export_checkpoint(
        ckpt,
        onnx_path,
        tta=src.tta if src.tta == "flip" else None,
        check_faces=check_faces,
        eval_tta=src.eval_tta,
        force=True,  # --out was checked before the pruning (check_out_dir)
    )
    add_onnx_metadata(onnx_path, {"edge_fer.compression": json.dumps(compression)})
    result = {
        **res,
        "compression": compression,
        "export": exp,
        "checkpoint": str(ckpt),
        "onnx": str(onnx_path),
        "finetune_log": log,
        "before": before,
        "after": after,
    }
    if pcfg.method == "2:4":
        result["onnx_2to4"] = {
            k: v for k, v in check_nm_onnx(onnx_path).items() if k != "per_layer"
        }
    return result
