"""The `pruned` architecture: a zoo model whose layers have other widths than the zoo's.

Structured pruning leaves every convolution with its own number of channels, which no zoo
architecture's options can express. A pruned model is therefore stored as

    arch = "pruned"
    arch_kwargs = {"base": "vgg", "base_kwargs": {...}, "layers": {name: shape, ...}}

where `layers` gives, for every Conv2d, BatchNorm2d and Linear of the base model (by module
name), its pruned shape: Conv2d [in, out, groups], BatchNorm2d [features], Linear [in, out].
The factory builds the base model and swaps those modules for ones of the recorded shape, so
`edge_fer.models.create_model("pruned", ...)`, `edge_fer.export.onnx.load_trained` and
`edge_fer.export.onnx_import.torch_model_from_onnx` rebuild pruned checkpoints and ONNX files like
any zoo model, once this module is imported (importing `edge_fer.compress` does it).
"""

from __future__ import annotations

import torch
from torch import nn

from edge_fer.errors import UserError
from edge_fer.models.registry import create_model, register_model

ARCH = "pruned"


def layer_shapes(model: nn.Module) -> dict[str, list[int]]:
    """The shapes that `pruned` records: {module name: shape} of every conv, BN and linear."""
    out: dict[str, list[int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            out[name] = [m.in_channels, m.out_channels, m.groups]
        elif isinstance(m, nn.BatchNorm2d):
            out[name] = [m.num_features]
        elif isinstance(m, nn.Linear):
            out[name] = [m.in_features, m.out_features]
    return out


def _resized(m: nn.Module, shape: list[int]) -> nn.Module:
    if isinstance(m, nn.Conv2d):
        cin, cout, groups = (int(v) for v in shape)
        if (cin, cout, groups) == (m.in_channels, m.out_channels, m.groups):
            return m
        return nn.Conv2d(
            cin,
            cout,
            m.kernel_size,
            m.stride,
            m.padding,
            m.dilation,
            groups,
            m.bias is not None,
            m.padding_mode,
        )
    if isinstance(m, nn.BatchNorm2d):
        (n,) = (int(v) for v in shape)
        if n == m.num_features:
            return m
        return nn.BatchNorm2d(n, m.eps, m.momentum, m.affine, m.track_running_stats)
    if isinstance(m, nn.Linear):
        cin, cout = (int(v) for v in shape)
        if (cin, cout) == (m.in_features, m.out_features):
            return m
        return nn.Linear(cin, cout, m.bias is not None)
    raise UserError(f"pruned layer of type {type(m).__name__} is not supported")


def apply_layer_shapes(model: nn.Module, layers: dict[str, list[int]]) -> nn.Module:
    """Swap the named layers of `model` for freshly initialised ones of the given shapes."""
    for name, shape in layers.items():
        parent_name, _, child = name.rpartition(".")
        try:
            parent = model.get_submodule(parent_name) if parent_name else model
            old = getattr(parent, child)
        except AttributeError:
            raise UserError(
                f"pruned model metadata names a layer {name!r} the base lacks"
            ) from None
        setattr(parent, child, _resized(old, list(shape)))
    return model


def pruned_kwargs(base: str, base_kwargs: dict, model: nn.Module) -> dict:
    """arch_kwargs of the `pruned` architecture for `model` (built from `base`)."""
    if base == ARCH:  # pruning a pruned model again: keep the zoo base
        base, base_kwargs = base_kwargs["base"], base_kwargs["base_kwargs"]
    return {"base": base, "base_kwargs": dict(base_kwargs), "layers": layer_shapes(model)}


def base_arch(arch: str, arch_kwargs: dict) -> str:
    """The zoo architecture behind `arch` (itself unless it is `pruned`)."""
    return str(arch_kwargs.get("base", "?")) if arch == ARCH else arch


@register_model(ARCH, input_size=48)
def pruned(
    num_classes: int = 7, in_channels: int = 1, base: str = "", base_kwargs=None, layers=None
) -> nn.Module:
    """A structurally pruned zoo model (edge-fer prune): a base zoo architecture with the
    per-layer widths recorded in `layers`."""
    if not base or base == ARCH or layers is None:
        raise UserError(
            "the `pruned` architecture needs base= and layers= (made by edge-fer prune)"
        )
    model = create_model(
        base, num_classes=num_classes, in_channels=in_channels, **dict(base_kwargs or {})
    )
    with torch.no_grad():
        return apply_layer_shapes(model, dict(layers))
