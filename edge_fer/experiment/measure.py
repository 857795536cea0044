"""What a study measures: test-split metrics of a run (torch, on exactly the preprocessing the
run trained with), and size / MACs / ONNX Runtime latency of exported models (through
`edge_fer.compress.report`, the code behind the compression reports)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edge_fer.errors import UserError
from edge_fer.evaluate import plan_vocabulary
from edge_fer.metrics import classification_report


def score(probs: np.ndarray, labels: np.ndarray, data_classes, model_classes, target) -> dict:
    """Metrics in the `target` vocabulary: dataset labels and model outputs are mapped onto it
    through edge_fer.labels (the evaluation's VocabPlan); faces without a counterpart are
    dropped and counted."""
    plan = plan_vocabulary(tuple(data_classes), tuple(model_classes), tuple(target))
    lab = plan.label_index[labels]
    keep = lab >= 0
    if not keep.any():
        raise UserError("no test faces left after mapping the labels")
    rep = classification_report(plan.map_probs(probs[keep]), lab[keep], plan.classes)
    rep["dropped"] = int((~keep).sum())
    rep["model_classes"] = list(model_classes)
    return rep


def prepare_gray(images: np.ndarray, spec, clahe: bool, align: bool) -> np.ndarray:
    """The test faces as the trainer prepares its own: alignment first (with the model's
    frame), then CLAHE."""
    from edge_fer.preprocess import apply_clahe

    if align:
        try:
            from edge_fer.align import align_images  # what the trainer runs
        except ImportError:
            from edge_fer.align import load_aligner  # checked available before any training

            images = np.asarray(load_aligner().align_faces(images))
        else:
            images = align_images(images, spec)
    return apply_clahe(images) if clahe else images


def eyes_found(images: np.ndarray) -> int:
    """How many of these faces the bundled eye model aligns (the others stay as cropped)."""
    from edge_fer.align import load_aligner

    found = np.zeros(len(images), bool)
    load_aligner().align_faces(images, found)
    return int(found.sum())


def run_probs(run: Path, images: np.ndarray) -> tuple[np.ndarray, dict, tuple[str, ...]]:
    """Probabilities of a trainer run's best checkpoint on gray (N, H, W) uint8 faces, after
    the run's own alignment and CLAHE. Returns (probs, training config, classes)."""
    import torch

    from edge_fer.export.onnx import load_trained
    from edge_fer.train.trainer import predict

    model, spec, state = load_trained(run / "best.safetensors")
    cfg = state.get("config") or {}
    x = prepare_gray(images, spec, bool(cfg.get("clahe")), bool(cfg.get("align")))
    probs = predict(model, x, spec, torch.device("cpu"))
    return probs, {**cfg, "best_epoch": state.get("best_epoch")}, tuple(spec.classes)


def content_key(*parts: Path | np.ndarray) -> str:
    """sha256 over files' bytes and arrays' bytes (with their shapes): what a study's work file
    was made from. Modification times said "unchanged" for a run copied in with older times,
    and never saw other calibration faces."""
    import hashlib

    from edge_fer.fileio import sha256_file

    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(repr((part.dtype.str, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(sha256_file(part).encode())
    return h.hexdigest()


def made_from(key_file: Path, key: str) -> bool:
    """Whether the work file that `key_file` describes was made from `key`."""
    try:
        return key_file.read_text().strip() == key
    except (OSError, UnicodeDecodeError):
        return False


def export_run(run: Path, out: Path, check_faces: np.ndarray | None = None) -> dict:
    """best.safetensors -> out (.onnx), parity-checked on `check_faces` when given; reused when
    made from the same checkpoint (its sha256 in `out`.key)."""
    from edge_fer.export.onnx import export_checkpoint

    key_file = out.with_name(out.name + ".key")
    key = content_key(run / "best.safetensors")
    if out.is_file() and made_from(key_file, key):
        from edge_fer.compress.report import onnx_stats

        s = onnx_stats(out)
        return {"out": str(out), "params": s["params"], "macs": s["macs"], "reused": True}
    key_file.unlink(missing_ok=True)  # (an export stopped half way is not taken for done)
    info = export_checkpoint(
        run / "best.safetensors",
        out,
        check=check_faces is not None,
        check_faces=check_faces,
        force=True,  # the study's own work file, remade when its run changed
    )
    key_file.write_text(key + "\n")
    return info


def onnx_rows(paths: list[Path], threads: int = 1, rounds: int = 5) -> list[dict]:
    """Size, parameters, MACs and ms/face at batch 1 and 32 (ONNX Runtime CPU, inference on a
    prepared input, models timed in interleaved rounds) for each model; models with different
    input shapes are timed in separate groups."""
    import onnx

    from edge_fer.compress.report import measure_latency, onnx_stats

    stats = [onnx_stats(p) for p in paths]
    shapes = []
    for p in paths:
        dims = onnx.load(str(p), load_external_data=False).graph.input[0].type.tensor_type
        shapes.append(tuple(d.dim_value for d in dims.shape.dim[1:]))
    rng = np.random.default_rng(0)
    for shape in sorted(set(shapes)):
        idx = [i for i, s in enumerate(shapes) if s == shape]
        x = rng.standard_normal((64, *shape)).astype(np.float32)
        print(
            f"experiment: timing {len(idx)} model(s), input {shape}, {threads} thread(s)",
            file=sys.stderr,
            flush=True,
        )
        for i, lat in zip(idx, measure_latency([paths[i] for i in idx], x, threads, rounds=rounds)):
            stats[i].update(lat)
    return stats
