"""Start a training run from the weights of an earlier model of the same architecture."""

from __future__ import annotations

import sys

import numpy as np

from edge_fer.errors import UserError


def warm_start(model, path: str, arch: str, arch_kwargs: dict, faces: np.ndarray, spec) -> None:
    """Copy the weights of `path` (an edge-fer checkpoint or FP32 edge-fer ONNX) into `model`.

    A model rebuilt from ONNX has its batch norms folded into the convolutions; they are given
    back real statistics from `faces` (same function) so that training mode normalises as the
    recipe expects."""
    from edge_fer.compress.finetune import renormalize_bn
    from edge_fer.compress.io import load_source

    src = load_source(path)
    if src.arch != arch or src.arch_kwargs != dict(arch_kwargs):
        raise UserError(
            f"{path}: is {src.arch!r} {src.arch_kwargs or ''}, the run trains {arch!r} "
            f"{arch_kwargs or ''}",
            param="init",
        )
    try:
        model.load_state_dict(src.model.state_dict())
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{path}: weights do not fit ({first})", param="init") from None
    if src.bn_folded:
        rng = np.random.default_rng(0)
        idx = np.sort(rng.permutation(len(faces))[: min(4096, len(faces))])
        n = renormalize_bn(model, faces[idx], spec)
        print(f"warm start from {path}: {n} batch norms renormalized", file=sys.stderr)
