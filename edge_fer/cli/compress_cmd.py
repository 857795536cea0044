"""`edge-fer prune` and `edge-fer qat`: compress a classifier, fine-tune it, compare it.

Both start from an edge-fer training checkpoint (best.safetensors) or an FP32 edge-fer ONNX
model (default: the bundled model), fine-tune on the Training split with PublicTest selection,
export ONNX, and measure the model before and after on one table (accuracy, top-2, macro-F1,
parameters, MACs, file size, ONNX Runtime latency at batch 1 and 32): DIR/report.md and
DIR/report.json. Needs the `train` extra and, for structured pruning, torch-pruning
(extra `compress`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_fer.cli.common import (
    HelpFormatter,
    add_skip_bad,
    positive_thread_count,
    thread_count,
)
from edge_fer.cli.options import input_path

NOTE_24 = (
    "2:4 sparsity: ONNX Runtime on a CPU runs the weights dense (no speed-up, none "
    "expected); TensorRT uses the sparse tensor cores of Ampere GPUs (Jetson Orin): "
    "`trtexec --onnx=pruned.onnx --sparsity=enable --fp16` (or --int8)"
)
NOTE_UNSTRUCTURED = (
    "unstructured sparsity: the ONNX file stores the zeros densely (same MB, "
    "same latency); the gzip column shows the compressed size it buys"
)
NOTE_TRT = (
    "target tensorrt: ONNX Runtime's CPU kernels run this Q/DQ layout in float with "
    "extra Dequantize ops, so its CPU latency is not what TensorRT gives; use "
    "--target cpu for INT8 speed on ONNX Runtime"
)


def _common(p, default_epochs: int, default_lr: float, epochs_help: str) -> None:
    # fmt: off
    p.add_argument("--model", type=input_path, default=None,
                   help="model to compress: an edge-fer training checkpoint (best.safetensors) "
                   "or FP32 edge-fer ONNX [default: the bundled model]")
    p.add_argument("--data", type=input_path, required=True,
                   help="dataset for fine-tuning and the report (FER2013 folder or csv: Training "
                   "to fine-tune, PublicTest to select, PrivateTest to report)")
    p.add_argument("--out", required=True, help="output folder (models, report.md, report.json)")
    p.add_argument("--force", action="store_true",
                   help="write into an --out that already holds a finished run")
    f = p.add_argument_group("fine-tuning")
    f.add_argument("--epochs", type=int, default=default_epochs,
                   help=f"{epochs_help} (default {default_epochs})")
    f.add_argument("--lr", type=float, default=default_lr,
                   help="initial SGD learning rate (cosine decay to 0 over each fine-tuning)")
    f.add_argument("--batch-size", type=int, default=128, help="fine-tuning batch size")
    f.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay")
    f.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing")
    f.add_argument("--distill", type=float, default=0.0, metavar="WEIGHT",
                   help="knowledge distillation: weight (0-1) of the loss on the uncompressed "
                   "model's softened outputs (0: labels only, the default; see docs/compress.md "
                   "for a measured run)")
    f.add_argument("--distill-temperature", type=float, default=4.0,
                   help="softmax temperature of the distillation targets")
    f.add_argument("--train-fraction", type=float, default=1.0,
                   help="fine-tune on this fraction of the Training split (quick runs)")
    f.add_argument("--val-limit", type=int, default=0,
                   help="select on at most this many PublicTest faces (0: all; quick runs)")
    f.add_argument("--no-augment", action="store_true", help="no training augmentation")
    f.add_argument("--seed", type=int, default=0, help="seed of sampling and augmentation")
    f.add_argument("--threads", type=thread_count, default=0,
                   help="torch CPU threads for fine-tuning (0: torch's default)")
    f.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    f.add_argument("--max-batches", type=int, default=0, help=argparse.SUPPRESS)
    add_skip_bad(f, "--data (the fine-tuning and the report's faces)")
    r = p.add_argument_group("report")
    r.add_argument("--eval-split", default="private-test",
                   choices=("private-test", "public-test", "test"),
                   help="FER2013 split of the report (other layouts: all their images)")
    r.add_argument("--eval-limit", type=int, default=0,
                   help="evaluate on an even sample of this many faces (0: all; quick runs)")
    r.add_argument("--eval-tta", default="auto", choices=("auto", "none", "flip", "zoom-flip"),
                   help="test-time augmentation of extra accuracy columns (the main columns are "
                   "one view); auto: the source model's default (edge_fer.tta_default)")
    r.add_argument("--bench-threads", type=positive_thread_count, default=1,
                   help="ONNX Runtime threads for the latency columns")
    # fmt: on
    r.add_argument("--bench-rounds", type=int, default=5, help=argparse.SUPPRESS)
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub) -> None:
    # fmt: off
    p = sub.add_parser("prune",
                       help="prune a classifier with fine-tuning (needs edge-fer[train,compress])",
                       description="Prune a classifier, fine-tune it, export ONNX and compare it "
                       "with the original: structured channel pruning to a MAC target "
                       "(torch-pruning), 2:4 semi-structured sparsity (TensorRT on Ampere GPUs), "
                       "or unstructured magnitude pruning (compressed size). Writes pruned.onnx, "
                       "pruned.safetensors, report.md, report.json.", formatter_class=HelpFormatter)
    _common(p, default_epochs=2, default_lr=0.01,
            epochs_help="fine-tuning epochs (per pruning step for iterative pruning)")
    g = p.add_argument_group("pruning")
    g.add_argument("--method", default="structured", choices=("structured", "2:4", "unstructured"),
                   help="structured: remove channels; 2:4: 2 zeros in every 4 weights along the "
                   "input channels; unstructured: zero the smallest weights globally")
    g.add_argument("--importance", default="l2", choices=("l1", "l2", "taylor"),
                   help="structured: channel ranking (weight L1/L2 norm, or first-order Taylor "
                   "|w * grad|)")
    g.add_argument("--target-macs-reduction", type=float, default=0.5,
                   help="structured: remove at least this fraction of the MACs (0-0.95)")
    g.add_argument("--steps", type=int, default=3,
                   help="structured/unstructured: prune + fine-tune rounds to reach the target")
    g.add_argument("--round-to", type=int, default=16,
                   help="structured: keep a multiple of this many channels per layer (16 fits "
                   "AVX-512 and tensor cores; 0: any count)")
    g.add_argument("--sparsity", type=float, default=0.5,
                   help="unstructured: fraction of the weights set to zero")
    g.add_argument("--taylor-batches", type=int, default=4,
                   help="taylor: training batches whose gradients rank the channels")
    g.add_argument("--bn", default="renormalize", choices=("renormalize", "frozen"),
                   help="batch norms of a model rebuilt from ONNX (folded into the convs): "
                   "renormalize (give them their statistics back, the same function, then train "
                   "them as in training) or frozen (then use --lr 0.001)")
    # fmt: on
    p.set_defaults(func=run_prune)

    # fmt: off
    q = sub.add_parser("qat",
                       help="quantization-aware training to INT8 QDQ ONNX (needs edge-fer[train])",
                       description="Fake-quantize a classifier (per-channel INT8 weights, "
                       "per-tensor activations at every Conv/Gemm input), calibrate it on Training "
                       "faces, fine-tune it and export QDQ ONNX; the calibrated model before "
                       "fine-tuning is exported too (post-training quantization) and both are "
                       "compared with the FP32 model. Writes qat.onnx, ptq.onnx, qat.safetensors, "
                       "report.md, report.json.", formatter_class=HelpFormatter)
    _common(q, default_epochs=2, default_lr=0.001,
            epochs_help="quantization-aware training epochs")
    g = q.add_argument_group("quantization")
    g.add_argument("--target", default="tensorrt", choices=("tensorrt", "cpu"),
                   help="tensorrt: INT8 symmetric activations (what TensorRT fuses); cpu: UINT8 "
                   "activations that ONNX Runtime's CPU kernels fuse into QLinearConv")
    g.add_argument("--calib-method", default="percentile", choices=("percentile", "max"),
                   help="how calibration sets the activation ranges")
    g.add_argument("--percentile", type=float, default=99.99,
                   help="percentile of the activations that sets their range")
    g.add_argument("--calib-faces", type=int, default=512,
                   help="Training faces the calibration runs on")
    # fmt: off
    g.add_argument("--ranges", default="learn", choices=("learn", "fixed"),
                   help="activation ranges during fine-tuning: learned (LSQ) or kept as calibrated")
    # fmt: on
    # fmt: on
    g.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 13)")
    q.set_defaults(func=run_qat)


# -- shared steps -----------------------------------------------------------------------------


def _configs(args):
    from edge_fer.compress.finetune import FinetuneConfig
    from edge_fer.errors import UserError

    if args.eval_limit < 0 or args.val_limit < 0:
        raise UserError("--eval-limit and --val-limit must be >= 0")
    if args.bench_threads < 1:
        raise UserError("--bench-threads must be at least 1")
    if args.bench_rounds < 1:
        raise UserError("must be at least 1", param="bench_rounds")
    fcfg = FinetuneConfig(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        train_fraction=args.train_fraction, val_limit=args.val_limit,
        max_batches=args.max_batches, seed=args.seed, augment=not args.no_augment,
        device=args.device, threads=args.threads, distill=args.distill,
        distill_temperature=args.distill_temperature, skip_bad=args.skip_bad,
    )  # fmt: skip
    fcfg.validate()
    return fcfg


def _imports():
    from edge_fer.errors import UserError

    try:
        import torch  # noqa: F401

        import edge_fer.compress  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"compression needs the train extra: pip install 'edge-fer[train]' ({exc})"
        ) from None


def _prepare(args, fcfg):
    """Out folder check, source model, fine-tuning data, parity faces (all before any write)."""
    import numpy as np

    from edge_fer.classify import default_model_path
    from edge_fer.compress.finetune import load_finetune_data
    from edge_fer.compress.io import check_out_dir, load_source

    out = Path(args.out)
    model = args.model if args.model is not None else default_model_path()
    check_out_dir(args.out, args.force, args.command, [("--model", model), ("--data", args.data)])
    from edge_fer.fileio import check_outside

    # as calibrate, export --int8 and train refuse it (before: the run's files were written
    # into the dataset's folders)
    check_outside([("--out", out)], args.data, "--data",
                  "the run's models and report would become part of the data")  # fmt: skip
    if fcfg.threads:
        import torch

        torch.set_num_threads(fcfg.threads)
    src = load_source(args.model)
    print(f"source: {src.path} ({src.kind}, {src.arch})", file=sys.stderr, flush=True)
    data = load_finetune_data(args.data, src.spec, fcfg)
    line = _skip_line("fine-tuning", data.skipped)
    if line:
        print(f"edge-fer {args.command}: {line}", file=sys.stderr)
    idx = np.linspace(0, len(data.val_x) - 1, min(64, len(data.val_x))).round().astype(int)
    return out, src, data, data.val_x[idx]


def _skip_line(what: str, skipped: dict) -> str | None:
    """What --skip-bad skipped of the `what` faces, in one line as `edge-fer train` says it
    (None when nothing was)."""
    from edge_fer.data.faceset import skipped_line

    n = skipped.get("skipped", 0)
    return skipped_line(n, skipped.get("skipped_entries", []), what) if n else None


def _source_onnx(src, out: Path, faces) -> Path:
    """The FP32 ONNX of the source (itself, or exported from the checkpoint)."""
    if src.kind == "onnx":
        return src.path
    from edge_fer.export.onnx import export_checkpoint

    path = out / "source_fp32.onnx"
    export_checkpoint(src.path, path, check_faces=faces, eval_tta=src.eval_tta, force=True)
    return path


def _compare(args, src, rows, out: Path, title: str, extra: dict, notes: list[str],
             finetune_skipped: dict) -> dict:  # fmt: skip
    from edge_fer.compress.report import compare_models, markdown_table, write_report

    eval_tta = src.eval_tta if args.eval_tta == "auto" else args.eval_tta
    extra_tta = (eval_tta,) if eval_tta != "none" else ()
    print("measuring ...", file=sys.stderr, flush=True)
    comp = compare_models(
        rows,
        args.data,
        split=args.eval_split,
        threads=args.bench_threads,
        eval_limit=args.eval_limit,
        progress=not args.no_progress,
        rounds=args.bench_rounds,
        tta="none",
        extra_tta=extra_tta,
        skip_bad=args.skip_bad,
    )
    # the skipped files named in report.md (notes) and report.json, as train names them (the
    # fine-tuning ones were said on stderr when loaded)
    setup = comp["setup"]
    report_skipped = {k: setup[k] for k in ("skipped", "skipped_entries") if k in setup}
    lines = [_skip_line("fine-tuning", finetune_skipped), _skip_line("report", report_skipped)]
    if lines[1]:
        print(f"edge-fer {args.command}: {lines[1]}", file=sys.stderr)
    notes = list(notes) + [ln for ln in lines if ln]
    if args.skip_bad:
        extra = {**extra, "skipped": {"fine_tuning": finetune_skipped, "report": report_skipped}}
    base = comp["rows"][0]
    deltas = []
    for r in comp["rows"][1:]:
        d = {
            "model": r["model"],
            "accuracy_delta": r["accuracy"] - base["accuracy"],
            "speedup_b1": base.get("ms_b1", 0) / r["ms_b1"] if r.get("ms_b1") else None,
            "speedup_b32": base.get("ms_b32", 0) / r["ms_b32"] if r.get("ms_b32") else None,
            "macs_reduction": (1 - r["macs"] / base["macs"])
            if r.get("macs") and base.get("macs")
            else None,
            "size_ratio": r["mb"] / base["mb"],
        }
        deltas.append(d)
    comp["deltas"] = deltas
    md, js = write_report(out, comp, title, extra={**extra, "deltas": deltas}, notes=notes)
    print(markdown_table(comp["rows"]))
    for d in deltas:
        print(
            f"{d['model']}: accuracy {d['accuracy_delta']:+.4f}, MACs "
            f"-{(d['macs_reduction'] or 0):.1%}, size x{d['size_ratio']:.2f}, speed-up "
            f"x{d['speedup_b1'] or 0:.2f} (batch 1) x{d['speedup_b32'] or 0:.2f} (batch 32)"
        )
    print(f"report: {md} and {js}", file=sys.stderr)
    return comp


def _args_dict(args) -> dict:
    return {k: v for k, v in vars(args).items() if k != "func"}


# -- commands ---------------------------------------------------------------------------------


def run_prune(args) -> int:
    _imports()
    from edge_fer.compress.prune import PruneConfig
    from edge_fer.compress.prune import run_prune as prune

    pcfg = PruneConfig(method=args.method, importance=args.importance,
                       target_macs_reduction=args.target_macs_reduction, steps=args.steps,
                       round_to=args.round_to, sparsity=args.sparsity,
                       taylor_batches=args.taylor_batches, bn=args.bn)  # fmt: skip
    pcfg.validate()
    fcfg = _configs(args)
    out, src, data, faces = _prepare(args, fcfg)
    res = prune(src, data, pcfg, fcfg, out, check_faces=faces)
    base = _source_onnx(src, out, faces)
    notes = {"2:4": [NOTE_24], "unstructured": [NOTE_UNSTRUCTURED]}.get(args.method, [])
    if args.method == "structured":
        notes.append(
            f"structured: conv widths {res['conv_widths']} (multiples of "
            f"{args.round_to or 1}); {args.steps} prune + fine-tune step(s)"
        )
    rows = [("FP32", str(base)), (f"pruned ({args.method})", res["onnx"])]
    _compare(
        args,
        src,
        rows,
        out,
        f"edge-fer prune --method {args.method}",
        {"command": "prune", "args": _args_dict(args), "result": res},
        notes,
        data.skipped,
    )
    return 0


def run_qat(args) -> int:
    _imports()
    from edge_fer.compress.qat import QatConfig
    from edge_fer.compress.qat import run_qat as qat

    qcfg = QatConfig(target=args.target, calib_method=args.calib_method,
                     percentile=args.percentile, calib_faces=args.calib_faces,
                     ranges=args.ranges)  # fmt: skip
    qcfg.validate()
    fcfg = _configs(args)
    from edge_fer.errors import UserError

    if not 13 <= args.opset <= 23:  # checked before the fine-tuning, not by the export after it
        raise UserError(
            f"--opset must be in 13..23 (QuantizeLinear/DequantizeLinear need 13), got {args.opset}"
        )
    out, src, data, faces = _prepare(args, fcfg)
    res = qat(src, data, qcfg, fcfg, out, check_faces=faces, opset=args.opset)
    base = _source_onnx(src, out, faces)
    rows = [
        ("FP32", str(base)),
        (f"INT8 PTQ ({args.target}, calibration only)", res["ptq_onnx"]),
        (f"INT8 QAT ({args.target})", res["qat_onnx"]),
    ]
    notes = [
        (
            f"QDQ parity (ONNX Runtime without graph optimizations vs torch fake-quant): max "
            f"|dp| {res['qat_export']['parity_max_abs_diff']:.2g}, mean "
            f"{res['qat_export']['parity_mean_abs_diff']:.2g}; with ONNX Runtime's fused INT8 "
            f"kernels: max {res['qat_export']['parity_optimized_max_abs_diff']:.2g}, top-1 "
            f"agreement {res['qat_export']['parity_optimized_top1_agreement']:.3f}"
        )
    ]
    if args.target == "tensorrt":
        notes.append(NOTE_TRT)
    _compare(
        args,
        src,
        rows,
        out,
        f"edge-fer qat --target {args.target}",
        {"command": "qat", "args": _args_dict(args), "result": res},
        notes,
        data.skipped,
    )
    print(json.dumps({"qat_onnx": res["qat_onnx"], "ptq_onnx": res["ptq_onnx"]}))
    return 0
