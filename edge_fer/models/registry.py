"""A timm-style registry: architectures register a factory under a name."""

from __future__ import annotations

from collections.abc import Callable

from edge_fer.errors import UserError

_REGISTRY: dict[str, Callable] = {}
_DEFAULT_SIZE: dict[str, int] = {}


def register_model(name: str, input_size: int = 48):
    def deco(fn: Callable) -> Callable:
        _REGISTRY[name] = fn
        _DEFAULT_SIZE[name] = input_size
        return fn

    return deco


# registered for loading only, not listed: "pruned" needs the shapes a pruning run recorded
_UNLISTED = {"pruned"}


def list_models() -> list[str]:
    _load_zoo()
    return sorted(n for n in _REGISTRY if n not in _UNLISTED)


def default_input_size(name: str) -> int:
    _load_zoo()
    return _DEFAULT_SIZE[name]


def create_model(name: str, num_classes: int = 7, in_channels: int = 1, **kwargs):
    _load_zoo()
    if name not in _REGISTRY:
        raise UserError(f"unknown architecture {name!r}; choose one of {', '.join(list_models())}")
    return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, **kwargs)


def model_info(model, input_size: int = 48, in_channels: int = 1) -> dict:
    """Parameter count and multiply-accumulates of one forward pass (conv and linear layers)."""
    import torch

    macs = 0

    def hook(mod, inp, out):
        nonlocal macs
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            macs += out.numel() // out.shape[0] * k
        elif isinstance(mod, torch.nn.Linear):
            macs += mod.in_features * mod.out_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, in_channels, input_size, input_size))
    model.train(was_training)
    for h in handles:
        h.remove()
    params = sum(p.numel() for p in model.parameters())
    return {"params": int(params), "macs": int(macs)}


PLUGIN_GROUP = "edge_fer.models"  # entry points of packages that add architectures


def _load_zoo() -> None:
    """The zoo registers on import; other packages register theirs through the entry points
    of PLUGIN_GROUP (edge-fer's own compression package declares "pruned" there, in
    pyproject.toml), so the zoo never imports what builds on it."""
    from importlib.metadata import entry_points

    from edge_fer.models import zoo  # noqa: F401

    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.name not in _REGISTRY:
            ep.load()
