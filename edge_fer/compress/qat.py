"""Quantization-aware training (`edge-fer qat`) exported as a QDQ ONNX model.

Every Conv2d and Linear layer is wrapped by `QuantLayer`: its weight is fake-quantized per
output channel (symmetric INT8, scale max|w| / 127, recomputed from the weights at every step)
and its input activation per tensor, as the ONNX QuantizeLinear / DequantizeLinear pair computes
it (x / scale, rounded half to even, saturated). Two layouts, as `edge_fer.quantize` names them:

- ``tensorrt``: INT8 symmetric activations (zero point 0, scale amax / 127): what TensorRT's
  explicit quantization fuses; ONNX Runtime on a CPU runs this layout in float with extra
  Dequantize ops, i.e. slower than FP32.
- ``cpu``: UINT8 activations (zero point 0 after ReLU, asymmetric elsewhere): ONNX Runtime's
  CPU kernels fuse the Q/DQ pairs around each conv into QLinearConv (INT8 arithmetic).

Batch norms are folded into the convolutions first (what gets deployed is the folded weight).
The activation ranges are calibrated on Training faces (max or percentile), then learned during
fine-tuning (LSQ: the scale is a parameter with a scaled straight-through gradient), or kept
(`ranges="fixed"`). The weights are straight-through estimated. The calibrated model before any
fine-tuning is exported too: that is the post-training (PTQ) baseline QAT is compared with.

Export: torch's fake-quantize ops become QuantizeLinear/DequantizeLinear (opset >= 13), the
weight quantizers are folded into INT8 initializers (a 4x smaller file), and ONNX Runtime is
checked against the torch fake-quant model: with graph optimizations off (the exact Q/DQ
semantics: required max |dp| <= 1e-2 and mean <= 2e-4; a float conv's summation order moves
the odd value across a rounding boundary, so exact equality is not to be had) and on (fused
INT8 kernels: reported).
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_fer import fileio
from edge_fer.compress.finetune import FinetuneConfig, FinetuneData, evaluate_torch, finetune
from edge_fer.errors import UserError, check_choice
from edge_fer.models import model_info
from edge_fer.preprocess import PreprocessSpec

TARGETS = ("tensorrt", "cpu")
CALIB_METHODS = ("max", "percentile")
RANGES = ("learn", "fixed")
QDQ_PARITY_TOL = 1e-2  # max |dp|: a conv's summation order moves a few values across a rounding
QDQ_PARITY_MEAN_TOL = 2e-4  # boundary (one quantization step); a wrong scale moves them all
META_KEY = "edge_fer.quantization"


@dataclass
class QatConfig:
    target: str = "tensorrt"
    calib_method: str = "percentile"
    percentile: float = 99.99
    calib_faces: int = 512
    ranges: str = "learn"

    def validate(self) -> None:
        check_choice(self.target, TARGETS, "target")
        check_choice(self.calib_method, CALIB_METHODS, "calib_method")
        if not 50 < self.percentile <= 100:
            raise UserError("must be in (50, 100]", param="percentile")
        if self.calib_faces < 16:
            raise UserError("must be at least 16", param="calib_faces")
        check_choice(self.ranges, RANGES, "ranges")


def fake_quant(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int) -> torch.Tensor:
    """QuantizeLinear + DequantizeLinear with straight-through gradients (zero outside the
    range; LSQ gradient for a scale that requires grad)."""
    r = x / scale
    r = r + (torch.round(r) - r).detach()
    return (torch.clamp(r + zero_point, qmin, qmax) - zero_point) * scale


def _grad_scaled(s: torch.Tensor, g: float) -> torch.Tensor:
    return (s - s * g).detach() + s * g


class ActQuant(nn.Module):
    """Per-tensor activation fake-quantizer with an observer mode for calibration."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target
        self.qmin, self.qmax = (-128, 127) if target == "tensorrt" else (0, 255)
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0.0))
        self.observing = False
        self._obs: list[tuple[float, float]] = []
        self._cfg: QatConfig | None = None

    def effective_scale(self) -> torch.Tensor:
        return self.scale.abs().clamp_min(1e-8)

    def forward(self, x):
        if self.observing:
            self._observe(x.detach())
            return x
        s = self.effective_scale()
        if torch.onnx.is_in_onnx_export():
            return torch.fake_quantize_per_tensor_affine(
                x, float(s), int(self.zero_point), self.qmin, self.qmax
            )
        if self.training and self.scale.requires_grad:
            s = _grad_scaled(s, 1.0 / math.sqrt(x[0].numel() * self.qmax))
        return fake_quant(x, s, self.zero_point, self.qmin, self.qmax)

    def _observe(self, x: torch.Tensor) -> None:
        cfg = self._cfg or QatConfig()
        flat = x.float().flatten()
        if cfg.calib_method == "max" or cfg.percentile >= 100:
            lo, hi = float(flat.min()), float(flat.max())
        else:
            if flat.numel() > 1 << 20:
                g = torch.Generator().manual_seed(len(self._obs))
                flat = flat[torch.randint(flat.numel(), (1 << 20,), generator=g)]
            q = cfg.percentile / 100.0
            if self.target == "tensorrt":
                hi = float(torch.quantile(flat.abs(), q))
                lo = -hi if float(flat.min()) < 0 else 0.0
            else:
                lo = float(torch.quantile(flat, 1 - q)) if float(flat.min()) < 0 else 0.0
                hi = float(torch.quantile(flat, q))
        self._obs.append((lo, hi))

    def finish_calibration(self) -> dict:
        cfg = self._cfg or QatConfig()
        if not self._obs:
            raise UserError("calibration saw no activations")
        los, his = np.array([o[0] for o in self._obs]), np.array([o[1] for o in self._obs])
        if cfg.calib_method == "max" or cfg.percentile >= 100:
            lo, hi = float(los.min()), float(his.max())
        else:
            lo, hi = float(los.mean()), float(his.mean())
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if self.target == "tensorrt":
            amax = max(abs(lo), abs(hi), 1e-6)
            s, zp = amax / 127.0, 0
        else:
            s = max(hi - lo, 1e-6) / 255.0
            zp = int(min(255, max(0, round(-lo / s))))
        with torch.no_grad():
            self.scale.fill_(s)
            self.zero_point.fill_(zp)
        self._obs = []
        self.observing = False
        return {"lo": lo, "hi": hi, "scale": s, "zero_point": zp}


class QuantLayer(nn.Module):
    """A Conv2d or Linear with fake-quantized input (per tensor) and weight (per channel)."""

    def __init__(self, layer: nn.Module, target: str):
        super().__init__()
        self.layer = layer
        self.act = ActQuant(target)
        self.register_buffer("w_scale", torch.ones(layer.weight.shape[0]))

    def weight_scale(self) -> torch.Tensor:
        w = self.layer.weight.detach()
        return (w.abs().amax(dim=tuple(range(1, w.ndim))) / 127.0).clamp_min(1e-8)

    def forward(self, x):
        x = self.act(x)
        w = self.layer.weight
        if self.act.observing:
            wq = w
        elif torch.onnx.is_in_onnx_export():
            zp = torch.zeros(w.shape[0], dtype=torch.int32)
            wq = torch.fake_quantize_per_channel_affine(w, self.w_scale, zp, 0, -128, 127)
        else:
            s = self.weight_scale()
            with torch.no_grad():
                self.w_scale.copy_(s)
            wq = fake_quant(w, s.view(-1, *([1] * (w.ndim - 1))), 0.0, -127, 127)
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, wq, self.layer.bias)
        return F.linear(x, wq, self.layer.bias)


def fold_bn(model: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d (same Sequential) into it; the
    batch norm becomes Identity. Returns how many were folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    n = 0
    for parent in list(model.modules()):
        kids = list(parent.named_children())
        for (na, a), (nb, b) in itertools.pairwise(kids):
            if (
                isinstance(a, nn.Conv2d)
                and isinstance(b, nn.BatchNorm2d)
                and b.num_features == a.out_channels
            ):
                setattr(parent, na, fuse_conv_bn_eval(a, b))
                setattr(parent, nb, nn.Identity())
                n += 1
    return n


def quantize_model(model: nn.Module, target: str) -> nn.Module:
    """Wrap every Conv2d / Linear of `model` (in place) in a QuantLayer."""
    todo = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for name, m in todo:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantLayer(m, target))
    return model


def act_quantizers(model: nn.Module) -> list[tuple[str, ActQuant]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ActQuant)]


@torch.no_grad()
def calibrate(model: nn.Module, x: np.ndarray, cfg: QatConfig, batch: int = 64) -> dict:
    """Set the activation ranges from prepared faces x (float32 NCHW)."""
    quants = act_quantizers(model)
    for _, q in quants:
        q.observing, q._cfg, q._obs = True, cfg, []
    model.eval()
    try:
        for i in range(0, len(x), batch):
            model(torch.from_numpy(x[i : i + batch]))
        return {n: q.finish_calibration() for n, q in quants}
    finally:
        for _, q in quants:
            q.observing = False


def set_learn_ranges(model: nn.Module, learn: bool) -> None:
    for _, q in act_quantizers(model):
        q.scale.requires_grad_(learn)


# -- ONNX -------------------------------------------------------------------------------------


def fold_weight_quantizers(proto) -> int:
    """Replace QuantizeLinear nodes on stored float weights by INT8 initializers (computed as
    ONNX Runtime would: x / scale rounded half to even, saturated) and drop what is unused."""
    from onnx import numpy_helper

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    consts = {}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)

    def value(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        return consts.get(name)

    folded = 0
    for node in list(g.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        s = value(node.input[1])
        zp = value(node.input[2]) if len(node.input) > 2 and node.input[2] else np.uint8(0)
        if s is None or zp is None:
            continue
        s = np.asarray(s, np.float32)
        zp = np.asarray(zp)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if s.ndim == 1 and s.size > 1:
            shape = [1] * w.ndim
            shape[axis] = -1
            s, zpb = s.reshape(shape), zp.reshape(shape).astype(np.float32)
        else:
            zpb = zp.astype(np.float32)
        info = np.iinfo(zp.dtype)
        q = np.clip(np.round(w / s) + zpb, info.min, info.max).astype(zp.dtype)
        g.initializer.append(numpy_helper.from_array(q, node.output[0]))
        g.node.remove(node)
        folded += 1
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for init in list(g.initializer):
        if init.name not in used:
            g.initializer.remove(init)
    for n in list(g.node):
        if n.op_type == "Constant" and n.output[0] not in used:
            g.node.remove(n)
    return folded


def _ort_run(path: Path, x: np.ndarray, optimize: bool) -> np.ndarray:
    import onnxruntime as ort

    from edge_fer.backends.onnxruntime_backend import exact_int8

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    exact_int8(so)
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + 32]})[0] for i in range(0, len(x), 32)])


def export_qdq(
    qmodel: nn.Module,
    spec: PreprocessSpec,
    state: dict,
    provenance_file: Path,
    out: Path,
    faces: np.ndarray,
    graph_tta: str | None = None,
    eval_tta: str = "none",
    opset: int = 17,
) -> dict:
    """Export the fake-quant model as QDQ ONNX (edge-fer metadata + edge_fer.quantization),
    check it against torch on `faces` (uint8), write through a temporary file."""
    import onnx

    from edge_fer.export.onnx import (
        _export,
        _opset_of,
        build_metadata,
        model_doc,
        probs_module,
        stamp,
    )

    if opset < 13:
        raise UserError("must be >= 13 for a QDQ export", param="opset")
    qmodel.eval()
    c, s = spec.channels, spec.input_size
    with torch.no_grad():
        qmodel(torch.zeros(1, c, s, s))  # refresh the weight scales the export stores
    net = probs_module(qmodel, graph_tta)
    out.parent.mkdir(parents=True, exist_ok=True)
    # exported and checked in a private folder; `out` gets the bytes once they pass (fileio)
    with tempfile.TemporaryDirectory(prefix="edge-fer-qdq-") as tmpdir:
        tmp = Path(tmpdir) / "model.onnx"
        _export(torch, net, torch.zeros(2, c, s, s), tmp, opset, "classic")
        proto = onnx.load(str(tmp))
        folded = fold_weight_quantizers(proto)
        meta = build_metadata(state, spec, provenance_file, graph_tta, eval_tta)
        meta[META_KEY] = fileio.dumps(state.get("quantization") or {}, indent=None)
        target = (state.get("quantization") or {}).get("target", "?")
        stamp(proto, meta, model_doc(meta, spec, kind=f", INT8 QDQ ({target})"))
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        x = spec.prepare(faces)
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        exact = _ort_run(tmp, x, optimize=False)
        fused = _ort_run(tmp, x, optimize=True)
        one = _ort_run(tmp, x[:1], optimize=True)
        if exact.shape != ref.shape:
            raise UserError(f"QDQ parity check failed: output {exact.shape} vs {ref.shape}")
        diff = float(np.abs(exact - ref).max())
        mean = float(np.abs(exact - ref).mean())
        if not (diff <= QDQ_PARITY_TOL and mean <= QDQ_PARITY_MEAN_TOL):
            raise UserError(
                f"QDQ parity check failed: ONNX Runtime (no graph optimizations) and "
                f"the torch fake-quant model differ by max {diff:.3g} / mean "
                f"{mean:.3g} (limits {QDQ_PARITY_TOL:g} / {QDQ_PARITY_MEAN_TOL:g})"
            )
        if one.shape != (1, len(spec.classes)):
            raise UserError("the exported QDQ model does not take a batch of 1")
        report = {
            "out": str(out),
            "opset": _opset_of(proto),
            "weight_quantizers_folded": folded,
            "qdq_nodes": sum(
                n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node
            ),
            "parity_faces": len(x),
            "parity_max_abs_diff": diff,
            "parity_mean_abs_diff": mean,
            "parity_top1_agreement": float((exact.argmax(1) == ref.argmax(1)).mean()),
            "parity_optimized_max_abs_diff": float(np.abs(fused - ref).max()),
            "parity_optimized_mean_abs_diff": float(np.abs(fused - ref).mean()),
            "parity_optimized_top1_agreement": float((fused.argmax(1) == ref.argmax(1)).mean()),
        }
        data = tmp.read_bytes()
    fileio.write_bytes(out, data)
    report["bytes"] = len(data)
    return report


# -- the whole run ----------------------------------------------------------------------------


def build_qat_model(model: nn.Module, target: str) -> tuple[nn.Module, int]:
    """A fake-quant copy of `model`: batch norms folded, conv/linear layers wrapped."""
    q = copy.deepcopy(model).cpu().eval()
    q = q.to(memory_format=torch.contiguous_format)
    n = fold_bn(q)
    return quantize_model(q, target), n


def load_qat_checkpoint(path: str | os.PathLike):
    """Rebuild the fake-quant model of a qat.safetensors: (model, spec, state)."""
    import edge_fer.compress.arch  # noqa: F401  (a pruned base)
    from edge_fer.export.onnx import model_from_state
    from edge_fer.train.checkpoint import load_checkpoint, read_state

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such checkpoint file")
    state = read_state(p)
    quant = state.get("quantization") or {}
    if not quant or "arch" not in (state.get("config") or {}):
        raise UserError(f"{p}: not an edge-fer QAT checkpoint")
    model, spec = model_from_state(state, p)
    qmodel, _ = build_qat_model(model, quant["target"])
    load_checkpoint(p, qmodel)
    return qmodel.eval(), spec, state


def run_qat(
    src,
    data: FinetuneData,
    qcfg: QatConfig,
    fcfg: FinetuneConfig,
    out: Path,
    check_faces: np.ndarray | None = None,
    opset: int = 17,
) -> dict:
    """Calibrate (-> ptq.onnx), fine-tune with fake quantization (-> qat.safetensors,
    qat.onnx) the SourceModel `src`; returns the run's description."""
    from edge_fer.train.checkpoint import save_checkpoint

    qcfg.validate()
    fcfg.validate()
    spec = src.spec
    info = model_info(src.model, spec.input_size, spec.channels)
    qmodel, n_folded = build_qat_model(src.model, qcfg.target)
    calib = data.calibration_faces(qcfg.calib_faces, fcfg.seed)
    # the fine-tuning faces are CLAHE'd already (load_finetune_data): normalise them only
    ranges = calibrate(qmodel, replace(spec, clahe=False).prepare(calib), qcfg)
    faces = check_faces if check_faces is not None else data.val_x[:64]
    act = (
        "UINT8 per tensor, zero point 0 after ReLU, asymmetric elsewhere"
        if qcfg.target == "cpu"
        else "INT8 symmetric per tensor (zero point 0)"
    )
    quant = {
        "target": qcfg.target,
        "format": "QDQ",
        "opset": opset,
        "weights": "INT8 symmetric per output channel (scale max|w|/127), stored as INT8",
        "activations": act,
        "placement": "inputs of every Conv and Gemm",
        "calibration": {
            "method": qcfg.calib_method,
            # max: no percentile set a range (before: the unused default was recorded)
            **({"percentile": qcfg.percentile} if qcfg.calib_method == "percentile" else {}),
            "faces": len(calib),
            # (from the --train-fraction part the fine-tuning reads, also with 0 epochs)
            "source": "Training split (random sample)"
            if fcfg.train_fraction >= 1
            else f"{fcfg.train_fraction:g} of the Training split (random sample)",
            "seed": fcfg.seed,
        },
        "batch_norms_folded": n_folded,
    }
    cfg = dict(src.state.get("config") or {})
    cfg.setdefault("data", "")
    base_state = {
        "config": cfg,
        "spec": spec.to_metadata(),
        **info,
        "val_split": data.val_name,
        "bn_folded": True,
        "rebuilt_from_onnx": src.state.get("rebuilt_from_onnx"),
    }
    graph_tta = src.tta if src.tta == "flip" else None
    out.mkdir(parents=True, exist_ok=True)

    ptq_val = evaluate_torch(qmodel, data)
    ptq_state = {
        **base_state,
        "best_acc": ptq_val["accuracy"],
        "epoch": 0,
        "quantization": {**quant, "method": "ptq (calibration only)"},
    }
    print(
        f"calibrated on {len(calib)} Training faces ({qcfg.calib_method}); "
        f"{data.val_name} acc {ptq_val['accuracy']:.4f}",
        file=sys.stderr,
        flush=True,
    )
    ptq_exp = export_qdq(
        qmodel, spec, ptq_state, src.path, out / "ptq.onnx", faces, graph_tta, src.eval_tta, opset
    )

    set_learn_ranges(qmodel, qcfg.ranges == "learn")
    log: list = []
    teacher = copy.deepcopy(src.model).eval() if fcfg.distill > 0 else None
    ft = finetune(qmodel, data, fcfg, frozen_bn=True, desc="qat", log=log, teacher=teacher)
    set_learn_ranges(qmodel, False)
    final_ranges = {
        n: {"scale": float(q.effective_scale()), "zero_point": int(q.zero_point)}
        for n, q in act_quantizers(qmodel)
    }
    tuned = fcfg.epochs > 0
    qat_quant = {
        **quant,
        # 0 epochs: the calibrated model, nothing learned (before: "ranges": "learn" and the
        # fine-tuning's unused settings were recorded as if it had been trained)
        "method": "qat" if tuned else "qat, 0 epochs (calibration only, as ptq)",
        "ranges": qcfg.ranges if tuned else "calibrated",
        "finetune": {
            k: v
            for k, v in asdict(fcfg).items()
            if k in ("epochs", "lr", "batch_size", "train_fraction", "seed")
        }
        if tuned
        else {"epochs": 0},
        "best_epoch": ft["best_epoch"],
    }
    qat_state = {
        **base_state,
        "best_acc": ft["best_acc"],
        "best_epoch": ft["best_epoch"],
        "epoch": fcfg.epochs,
        "quantization": qat_quant,
    }
    ckpt = out / "qat.safetensors"
    save_checkpoint(ckpt, qmodel, None, qat_state)
    qat_exp = export_qdq(
        qmodel, spec, qat_state, ckpt, out / "qat.onnx", faces, graph_tta, src.eval_tta, opset
    )
    return {
        "quantization": qat_quant,
        "calibrated_ranges": ranges,
        "final_ranges": final_ranges,
        "val_acc_ptq": ptq_val["accuracy"],
        "val_acc_qat": ft["best_acc"],
        "ptq_export": ptq_exp,
        "qat_export": qat_exp,
        "checkpoint": str(ckpt),
        "ptq_onnx": str(out / "ptq.onnx"),
        "qat_onnx": str(out / "qat.onnx"),
        "finetune_log": log,
    }
