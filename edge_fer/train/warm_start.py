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
    # a head sized for the input (its options differ by input_size only): say which size
    if (src.arch == arch and src.spec.input_size != spec.input_size
            and src.arch_kwargs != dict(arch_kwargs)):  # fmt: skip
        raise UserError(
            f"{path}: takes {src.spec.input_size}x{src.spec.input_size} faces, the run "
            f"{spec.input_size}x{spec.input_size} (--input-size)",
            param="init",
        )
    if src.arch != arch or src.arch_kwargs != dict(arch_kwargs):
        raise UserError(
            f"{path}: is {_named(src.arch, src.arch_kwargs)}, the run trains "
            f"{_named(arch, arch_kwargs)}",
            param="init",
        )
    # said in the user's terms: torch's own message begins with a line that names nothing
    # ("Error(s) in loading state_dict for SmallCNN:")
    mine, theirs = tuple(spec.classes), tuple(src.spec.classes)
    if mine and theirs and mine != theirs:
        raise UserError(
            f"{path}: answers {len(theirs)} classes ({', '.join(theirs)}), the run's data has "
            f"{len(mine)} ({', '.join(mine)}); start from a model of the same classes",
            param="init",
        )
    if src.spec.channels != spec.channels:
        raise UserError(
            f"{path}: takes {src.spec.channels}-channel faces, the run {spec.channels} "
            f"(--channels)",
            param="init",
        )
    try:
        model.load_state_dict(src.model.state_dict())
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        why = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
        raise UserError(f"{path}: weights do not fit ({why})", param="init") from None
    if src.bn_folded:
        rng = np.random.default_rng(0)
        idx = np.sort(rng.permutation(len(faces))[: min(4096, len(faces))])
        n = renormalize_bn(model, faces[idx], spec)
        print(f"warm start from {path}: {n} batch norms renormalized", file=sys.stderr)


def _named(arch: str, kwargs: dict) -> str:
    """'cnn4', or 'cnn4' with its options: {'input_size': 64}."""
    return f"{arch!r}" + (f" with options {dict(kwargs)}" if kwargs else "")
