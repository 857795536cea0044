"""Rebuild a trainable torch model from an edge-fer ONNX file (extra `train`).

Pruning, quantization-aware training and re-export start from torch weights. When only the
exported model is at hand (the bundled `fer_default.onnx`, a model from a colleague), this
rebuilds the zoo architecture named in the metadata and loads the ONNX weights into it.

The exporter folds each batch norm into the convolution before it, so the rebuilt model gets
those folded weights and identity batch norms (gamma 1, beta = folded bias, mean 0, var 1-eps):
in eval mode it computes exactly what the ONNX graph computes (checked on every load). Fine-tune
it with its batch norms frozen (`freeze_bn`), or they re-estimate statistics from scratch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from edge_fer.errors import UserError
from edge_fer.preprocess import PreprocessSpec


def torch_model_from_onnx(path: str | os.PathLike, check: bool = True):
    """-> (torch model in eval mode, PreprocessSpec, metadata dict)."""
    import onnx
    import torch
    from onnx import numpy_helper

    from edge_fer.models import create_model

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such model file")
    try:
        proto = onnx.load(str(p))
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        raise UserError(f"{p}: not an ONNX model ({exc})") from None
    meta = {m.key: m.value for m in proto.metadata_props}
    spec = PreprocessSpec.from_metadata(meta)
    arch = meta.get("edge_fer.arch", "")
    if not arch or arch.startswith("keras:"):
        raise UserError(f"{p}: not a model of the edge-fer zoo (arch {arch or 'unknown'!r})")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        raise UserError(f"{p}: is a quantized (QDQ) model; start from the FP32 model")
    kwargs = json.loads(meta.get("edge_fer.arch_kwargs") or "{}")
    kwargs = _with_input_size(arch, kwargs, spec.input_size)
    model = create_model(arch, num_classes=len(spec.classes), in_channels=spec.channels, **kwargs)

    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    # the exporter shares identical initializers through Identity nodes: follow them
    for n in proto.graph.node:
        if n.op_type == "Identity" and n.input[0] in inits:
            inits[n.output[0]] = inits[n.input[0]]
    nodes = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    convs = [n for n in nodes if n.op_type == "Conv"]
    fcs = [n for n in nodes if n.op_type != "Conv"]
    t_convs, t_fcs = _layers_in_call_order(model, spec)
    if len(convs) != len(t_convs) or len(fcs) != len(t_fcs):
        raise UserError(
            f"{p}: graph has {len(convs)} convolutions and {len(fcs)} dense layers, "
            f"{arch!r} has {len(t_convs)} and {len(t_fcs)}"
        )
    # the batch norm that follows each conv in the module tree
    bn_after: dict[int, torch.nn.BatchNorm2d] = {}
    last_conv = None
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            last_conv = m
        elif isinstance(m, torch.nn.BatchNorm2d) and last_conv is not None:
            bn_after[id(last_conv)] = m
            last_conv = None

    def arr(name: str) -> torch.Tensor:
        if name not in inits:
            raise UserError(f"{p}: weight {name!r} is computed in the graph, not stored")
        return torch.from_numpy(np.array(inits[name], np.float32))

    with torch.no_grad():
        for node, conv in zip(convs, t_convs):
            w = arr(node.input[1])
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise UserError(
                    f"{p}: conv weight {node.input[1]} is {tuple(w.shape)}, the {arch!r} "
                    f"layer expects {tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(w)
            b = arr(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            bn = bn_after.get(id(conv))
            if bn is not None:
                bn.weight.fill_(1.0)
                bn.bias.copy_(b if b is not None else torch.zeros_like(bn.bias))
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                if conv.bias is not None:
                    conv.bias.zero_()
            elif conv.bias is not None and b is not None:
                conv.bias.copy_(b)
        for node, fc in zip(fcs, t_fcs):
            w = arr(node.input[1])
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            if node.op_type == "MatMul" or not trans_b:
                w = w.T
            if tuple(w.shape) != tuple(fc.weight.shape):
                raise UserError(f"{p}: dense weight {node.input[1]} does not fit {arch!r}")
            fc.weight.copy_(w)
            if fc.bias is not None and len(node.input) > 2:
                fc.bias.copy_(arr(node.input[2]))
    model.eval()
    if check:
        _check_parity(model, p, spec, meta)
    return model, spec, meta


def _layers_in_call_order(model, spec: PreprocessSpec) -> tuple[list, list]:
    """The model's convolutions and dense layers in the order a forward pass calls them, which
    is the order of the exported graph's nodes. The module tree's order differs where a block
    defines its shortcut before its main path (mini_xception), and the weights went to the
    wrong layers (refused: shapes differ)."""
    import torch

    called: list = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: called.append(mod))
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    try:
        was = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, spec.channels, spec.input_size, spec.input_size))
        model.train(was)
    finally:
        for h in hooks:
            h.remove()
    seen: set = set()
    order = [m for m in called if not (id(m) in seen or seen.add(id(m)))]
    convs = [m for m in order if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in order if isinstance(m, torch.nn.Linear)]
    return convs, fcs


def _with_input_size(arch: str, kwargs: dict, size: int) -> dict:
    """Nets whose dense head depends on the input size take it as an argument."""
    import inspect

    from edge_fer.models.registry import _REGISTRY, _load_zoo

    _load_zoo()
    fn = _REGISTRY.get(arch)
    if fn is None:
        raise UserError(f"unknown architecture {arch!r} in the model metadata")
    if "input_size" in inspect.signature(fn).parameters:
        kwargs = {**kwargs, "input_size": kwargs.get("input_size", size)}
    return kwargs


def _check_parity(model, path: Path, spec: PreprocessSpec, meta: dict) -> None:
    import onnxruntime as ort
    import torch

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    # a graph exported with a fixed batch (dim 0 a number) takes only that many faces
    dim0 = sess.get_inputs()[0].shape[0]
    n = dim0 if isinstance(dim0, int) and dim0 > 0 else 4
    rng = np.random.default_rng(0)
    s = spec.input_size
    x = (rng.random((n, spec.channels, s, s), dtype=np.float32) - spec.mean) / spec.std
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        xt = torch.from_numpy(x)
        if meta.get("edge_fer.tta") == "flip":
            logits = torch.cat([model(xt), model(torch.flip(xt, dims=[3]))])
            pr = torch.softmax(logits, 1)
            got = (0.5 * (pr[:n] + pr[n:])).numpy()
        else:
            got = torch.softmax(model(xt), 1).numpy()
    diff = float(np.abs(got - ref).max())
    if diff > 1e-4:
        raise UserError(
            f"{path}: the rebuilt torch model does not match the graph (max |dp| {diff:.2g}); "
            "start from the training checkpoint instead"
        )


def freeze_bn(model) -> None:
    """Keep batch norms in eval mode (fixed statistics) while the rest trains."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def checkpoint_from_onnx(
    path: str | os.PathLike, out: str | os.PathLike, force: bool = False
) -> Path:
    """Write an edge-fer training checkpoint (safetensors) rebuilt from an exported model, so
    `edge-fer export`, `prune` and `qat` can start from it. An existing `out` is replaced only
    with `force`, and never when it is the model itself (that replaced the model, silently)."""
    from edge_fer.train.checkpoint import save_checkpoint

    if os.path.lexists(out):
        if Path(path).exists() and os.path.samefile(path, out):
            raise UserError(f"{out}: is the input model; an output must not overwrite an input",
                            param="out")  # fmt: skip
        if not force:
            raise UserError(f"{out}: exists (force=True replaces it)", param="out")
        if Path(out).is_dir():
            raise UserError(f"{out}: is a folder; give a file name", param="out")
    model, spec, meta = torch_model_from_onnx(path)
    prov = json.loads(meta.get("edge_fer.provenance") or "{}")
    cfg = dict(prov.get("config") or {})
    cfg["arch"] = meta.get("edge_fer.arch")
    cfg["arch_kwargs"] = json.loads(meta.get("edge_fer.arch_kwargs") or "{}")
    state = {
        "config": cfg,
        "spec": spec.to_metadata(),
        "params": int(meta.get("edge_fer.params", "0") or 0),
        "macs": int(meta.get("edge_fer.macs", "0") or 0),
        "best_epoch": prov.get("best_epoch"),
        "best_acc": prov.get("val_acc"),
        "val_split": prov.get("val_split"),
        "epoch": prov.get("epochs_run"),
        "rebuilt_from_onnx": Path(path).name,
        "bn_folded": True,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, model, None, state)
    return out
