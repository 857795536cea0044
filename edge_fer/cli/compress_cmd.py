"""`edge-fer prune` and `edge-fer qat`: compress a classifier, fine-tune it, compare it.

Both start from an edge-fer training checkpoint (best.safetensors) or an FP32 edge-fer ONNX
model (default: the bundled model), fine-tune on the Training split with PublicTest selection,
export ONNX, and measure the model before and after on one table (accuracy, top-2, macro-F1,
parameters, MACs, file size, ONNX Runtime latency at batch 1 and 32): DIR/report.md and
DIR/report.json. Needs the `train` extra and, for structured pruning, torch-pruning
(extra `compress`). Every output is made in a private folder and published into DIR together
once the report is ready (`_run_staged`): an interrupted or failing run leaves DIR as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
NOTE_NO_FINETUNE = (
    "--epochs 0: no fine-tuning ran; pruned.onnx is the source as pruned, its remaining weights "
    "the source's"
)
NOTE_NO_QAT = (
    "--epochs 0: no quantization-aware training ran; qat.onnx is the calibrated model "
    "(activation ranges as calibrated, the source's weights), the same as ptq.onnx"
)

# flags whose default applies only to some runs: None until `_settle` fills it in (or refuses
# the flag where the run would ignore it); a dict: the default of each command
UNSET: dict = {
    "target_macs_reduction": 0.5,
    "taylor_batches": 4,
    "distill_temperature": 4.0,
    "percentile": 99.99,
    "eval_split": "private-test",
    # the method's (before: --importance, --round-to, --sparsity, --steps given to a method
    # that does not use them, and --bn for a checkpoint's trained batch norms, did nothing)
    "importance": "l2",
    "round_to": 16,
    "steps": 3,
    "sparsity": 0.5,
    "bn": "renormalize",
    # the fine-tuning's, which --epochs 0 does not run (before: taken without a word)
    "lr": {"prune": 0.01, "qat": 0.001},
    "weight_decay": 5e-4,
    "label_smoothing": 0.1,
    "ranges": "learn",
    "max_batches": 0,
    # the fine-tuning's and the Taylor ranking's batches (before: taken with --epochs 0)
    "batch_size": 128,
    # the fine-tuning's faces, which also feed the calibration (qat), the renormalized batch
    # norms and the Taylor ranking (prune): refused with --epochs 0 where none of these runs
    # (before: taken without a word)
    "train_fraction": 1.0,
}


def _default(dest: str, command: str):
    value = UNSET[dest]
    return value[command] if isinstance(value, dict) else value


def _common(p, command: str, default_epochs: int, epochs_help: str) -> None:
    # fmt: off
    p.add_argument("--model", type=input_path, default=None,
                   help="model to compress: an edge-fer training checkpoint (best.safetensors) "
                   "or FP32 edge-fer ONNX [default: the bundled model]")
    p.add_argument("--data", type=input_path, required=True,
                   help="dataset for fine-tuning and the report (FER2013 folder or csv: Training "
                   "to fine-tune, PublicTest to select, PrivateTest to report; class folders: "
                   "90%% to fine-tune, the held-out 10%% to select and report)")
    p.add_argument("--out", required=True, help="output folder (models, report.md, report.json)")
    p.add_argument("--force", action="store_true",
                   help="write into an --out that already holds a finished run")
    f = p.add_argument_group("fine-tuning")
    f.add_argument("--epochs", type=int, default=default_epochs,
                   help=f"{epochs_help} (default {default_epochs})")
    f.add_argument("--lr", type=float, default=None,
                   help="initial SGD learning rate (cosine decay to 0 over each fine-tuning; "
                   f"default {_default('lr', command):g})")
    taylor = " and of the --importance taylor ranking's gradients" if command == "prune" else ""
    f.add_argument("--batch-size", type=int, default=None,
                   help=f"batch size of the fine-tuning{taylor} (default "
                   f"{UNSET['batch_size']})")
    f.add_argument("--weight-decay", type=float, default=None,
                   help=f"SGD weight decay (default {UNSET['weight_decay']:g})")
    f.add_argument("--label-smoothing", type=float, default=None,
                   help=f"label smoothing (default {UNSET['label_smoothing']:g})")
    f.add_argument("--distill", type=float, default=0.0, metavar="WEIGHT",
                   help="knowledge distillation: weight (0-1) of the loss on the uncompressed "
                   "model's softened outputs (0: labels only, the default; see docs/compress.md "
                   "for a measured run)")
    f.add_argument("--distill-temperature", type=float, default=None,
                   help="softmax temperature of the distillation targets, with --distill "
                   f"(default {UNSET['distill_temperature']:g})")
    also = {"prune": "; also the faces the Taylor ranking and --bn renormalize read",
            "qat": "; also the faces the calibration is drawn from"}[command]
    f.add_argument("--train-fraction", type=float, default=None,
                   help="fine-tune on this fraction of the Training split (quick runs"
                   f"{also}; default {UNSET['train_fraction']:g})")
    f.add_argument("--val-limit", type=int, default=0,
                   help="select on at most this many PublicTest faces (0: all; quick runs)")
    f.add_argument("--no-augment", action="store_true", help="no training augmentation")
    f.add_argument("--seed", type=int, default=0, help="seed of sampling, augmentation and dropout")
    f.add_argument("--threads", type=thread_count, default=0,
                   help="torch CPU threads for fine-tuning (0: torch's default)")
    f.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    f.add_argument("--max-batches", type=int, default=None, help=argparse.SUPPRESS)
    add_skip_bad(f, "--data (the fine-tuning and the report's faces)")
    r = p.add_argument_group("report")
    r.add_argument("--eval-split", default=None, choices=("private-test", "public-test", "test"),
                   help=f"FER2013 split of the report (default {UNSET['eval_split']}); a dataset "
                   "without FER2013's splits is scored on its held-out part, the faces that "
                   "select the best epoch")
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
    _common(p, "prune", default_epochs=2,
            epochs_help="fine-tuning epochs (per pruning step for iterative pruning)")
    g = p.add_argument_group("pruning")
    g.add_argument("--method", default="structured", choices=("structured", "2:4", "unstructured"),
                   help="structured: remove channels; 2:4: 2 zeros in every 4 weights along the "
                   "input channels; unstructured: zero the smallest weights globally")
    g.add_argument("--importance", default=None, choices=("l1", "l2", "taylor"),
                   help="structured: channel ranking (weight L1/L2 norm, or first-order Taylor "
                   f"|w * grad|; default {UNSET['importance']})")
    g.add_argument("--target-macs-reduction", type=float, default=None,
                   help="structured: remove at least this fraction of the MACs (0-0.95; "
                   f"default {UNSET['target_macs_reduction']:g})")
    g.add_argument("--steps", type=int, default=None,
                   help="structured/unstructured: prune + fine-tune rounds to reach the target "
                   f"(default {UNSET['steps']})")
    g.add_argument("--round-to", type=int, default=None,
                   help="structured: keep a multiple of this many channels per layer (16 fits "
                   f"AVX-512 and tensor cores; 0: any count; default {UNSET['round_to']})")
    g.add_argument("--sparsity", type=float, default=None,
                   help="unstructured: fraction of the weights set to zero (default "
                   f"{UNSET['sparsity']:g})")
    g.add_argument("--taylor-batches", type=int, default=None,
                   help="taylor: training batches whose gradients rank the channels (default "
                   f"{UNSET['taylor_batches']})")
    g.add_argument("--bn", default=None, choices=("renormalize", "frozen"),
                   help="batch norms of a model rebuilt from ONNX (folded into the convs): "
                   "renormalize (give them their statistics back, the same function, then train "
                   "them as in training) or frozen (then use --lr 0.001); default "
                   f"{UNSET['bn']}")
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
    _common(q, "qat", default_epochs=2, epochs_help="quantization-aware training epochs")
    g = q.add_argument_group("quantization")
    g.add_argument("--target", default="tensorrt", choices=("tensorrt", "cpu"),
                   help="tensorrt: INT8 symmetric activations (what TensorRT fuses); cpu: UINT8 "
                   "activations that ONNX Runtime's CPU kernels fuse into QLinearConv")
    g.add_argument("--calib-method", default="percentile", choices=("percentile", "max"),
                   help="how calibration sets the activation ranges")
    g.add_argument("--percentile", type=float, default=None,
                   help="--calib-method percentile: the percentile of the activations that sets "
                   f"their range (default {UNSET['percentile']:g})")
    g.add_argument("--calib-faces", type=int, default=512,
                   help="Training faces the calibration runs on")
    # fmt: off
    g.add_argument("--ranges", default=None, choices=("learn", "fixed"),
                   help="activation ranges during fine-tuning: learned (LSQ) or kept as "
                   f"calibrated (default {UNSET['ranges']})")
    # fmt: on
    # fmt: on
    g.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 13)")
    q.set_defaults(func=run_qat)


# -- shared steps -----------------------------------------------------------------------------


def _settle(args, dest: str, applies: bool, refusal: str) -> None:
    """A flag of UNSET given where this run would ignore it is refused with `refusal` (before:
    taken without a word); one that applies and was not given takes its default."""
    from edge_fer.errors import UserError

    if getattr(args, dest) is None:
        if applies:
            setattr(args, dest, _default(dest, args.command))
    elif not applies:
        raise UserError(refusal)


def _configs(args):
    from edge_fer.compress.finetune import FinetuneConfig
    from edge_fer.errors import UserError

    if args.eval_limit < 0 or args.val_limit < 0:
        raise UserError("--eval-limit and --val-limit must be >= 0")
    if args.bench_threads < 1:
        raise UserError("--bench-threads must be at least 1")
    if args.bench_rounds < 1:
        raise UserError("must be at least 1", param="bench_rounds")
    # --epochs 0 fine-tunes nothing: the flags of the fine-tuning alone would do nothing (a
    # negative count is refused below, by validate)
    tunes = args.epochs != 0
    for dest in ("lr", "weight_decay", "label_smoothing", "max_batches"):
        _settle(args, dest, tunes, _no_tuning(dest.replace("_", "-")))
    # (--importance is settled by now: None unless --method structured)
    taylor = getattr(args, "importance", None) == "taylor"
    why = (" (nor does this run rank channels by gradients: --importance taylor)"
           if args.command == "prune" else "")  # fmt: skip
    _settle(args, "batch_size", tunes or taylor, _no_tuning("batch-size") + why)
    for flag, given in (("distill", args.distill > 0), ("no-augment", args.no_augment)):
        if given and not tunes:
            raise UserError(_no_tuning(flag))

    def value(dest: str):  # a flag left unset (not used by this run): its default
        v = getattr(args, dest)
        return _default(dest, args.command) if v is None else v

    # (--train-fraction: settled by `_prepare`, once the source says whether its batch norms
    # are renormalized on Training faces)
    fcfg = FinetuneConfig(
        epochs=args.epochs, lr=value("lr"), batch_size=value("batch_size"),
        weight_decay=value("weight_decay"), label_smoothing=value("label_smoothing"),
        train_fraction=value("train_fraction"), val_limit=args.val_limit,
        max_batches=value("max_batches"), seed=args.seed, augment=not args.no_augment,
        device=args.device, threads=args.threads, distill=args.distill,
        distill_temperature=value("distill_temperature"), skip_bad=args.skip_bad,
    )  # fmt: skip
    fcfg.validate()
    _settle(args, "distill_temperature", fcfg.distill > 0,
            "--distill-temperature applies with --distill W > 0 (the weight of the "
            "distillation loss); without it no distillation runs")  # fmt: skip
    return fcfg


def _no_tuning(flag: str) -> str:
    return f"--{flag} applies to the fine-tuning, and --epochs 0 runs none"


def _imports():
    from edge_fer.errors import UserError

    try:
        import torch  # noqa: F401

        import edge_fer.compress  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"compression needs the train extra: python3 -m pip install '.[train]' in the edge-fer checkout ({exc})"
        ) from None


def _eval_split_refusal(args, what: str) -> str:
    return (
        f"--eval-split names a FER2013 split, and {args.data} has none ({what}): the report "
        "scores its held-out part, the faces that select the best epoch"
    )


def _inputs(args) -> list:
    from edge_fer.classify import default_model_path

    model = args.model if args.model is not None else default_model_path()
    return [("--model", model), ("--data", args.data)]


@contextlib.contextmanager
def _out_locked(args):
    """The checks of --out (and of --eval-split against --data), then --out locked for the
    run (edge_fer.compress.io.out_lock, the lock `edge-fer train` takes on its --out) and
    checked again under the lock: another run may have published there in between. Before:
    two runs into one --out both found it free and published over each other; the second is
    now refused at once, in one line."""
    from edge_fer.compress.io import check_out_dir, out_lock
    from edge_fer.errors import UserError
    from edge_fer.fileio import check_outside

    check_out_dir(args.out, args.force, args.command, _inputs(args))
    # as calibrate, export --int8 and train refuse it (before: the run's files were written
    # into the dataset's folders)
    check_outside([("--out", Path(args.out))], args.data, "--data",
                  "the run's models and report would become part of the data")  # fmt: skip
    if args.eval_split is not None:  # (before: ignored for a dataset of class folders)
        from edge_fer.data.loaders import detect_layout

        layout = detect_layout(Path(args.data))
        if not layout.startswith("fer2013"):
            raise UserError(_eval_split_refusal(args, f"a {layout} dataset"))
    with out_lock(args.out):
        check_out_dir(args.out, args.force, args.command, _inputs(args))
        yield


def _prepare(args, fcfg):
    """Source model, fine-tuning data, parity faces (all before any write; --out checked and
    locked by `_out_locked`)."""
    import numpy as np

    from edge_fer.compress.finetune import load_finetune_data
    from edge_fer.compress.io import load_source

    out = Path(args.out)
    if fcfg.threads:
        import torch

        torch.set_num_threads(fcfg.threads)
    src = load_source(args.model)
    if args.command == "prune":  # (qat folds every batch norm into its conv itself)
        _settle(args, "bn", src.bn_folded,
                f"--bn applies to a model rebuilt from ONNX, whose batch norms are folded into "
                f"the convs; {src.path} is a checkpoint with trained batch norms")  # fmt: skip
    # the Training faces: fine-tuned on, and read by qat's calibration, the Taylor ranking and
    # the renormalized batch norms; with --epochs 0 and none of those, --train-fraction did
    # nothing (before: taken without a word)
    reads = (fcfg.epochs != 0 or args.command == "qat" or getattr(args, "importance", None)
             == "taylor" or getattr(args, "bn", None) == "renormalize")  # fmt: skip
    _settle(args, "train_fraction", reads,
            _no_tuning("train-fraction") + " (nor does this run read Training faces otherwise: "
            "no --importance taylor ranking, no batch norms renormalized)")  # fmt: skip
    print(f"source: {src.path} ({src.kind}, {src.arch})", file=sys.stderr, flush=True)
    data = load_finetune_data(args.data, src.spec, fcfg)
    # FER2013's Training faces alone: held out as for class folders
    _settle(args, "eval_split", data.held_out is None,
            _eval_split_refusal(args, "Training faces only"))  # fmt: skip
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


def _published(obj, stage: Path, out: Path):
    """`obj` (a run's result) with the paths into the staging folder made the portable paths
    (edge_fer.fileio.portable_path) of the files published into `out`."""
    from edge_fer.fileio import portable_path

    if isinstance(obj, dict):
        return {k: _published(v, stage, out) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_published(v, stage, out) for v in obj]
    if isinstance(obj, str) and os.path.isabs(obj):
        try:  # (Path.is_relative_to: Python 3.9)
            return portable_path(out / Path(obj).relative_to(stage))
        except ValueError:
            pass
    return obj


def _run_staged(args, out: Path, src, data, faces, title: str, make) -> dict:
    """`make(stage)` -> (result, rows, notes): the compressed models made in a private folder;
    then the source's ONNX and the report are made there too, and all of them are published
    into `out` together (edge_fer.compress.io.publish). Before: each file went into --out as it
    was made, and a run interrupted or failing before its report left the earlier run's report
    describing the new models. Returns the comparison (its paths: the published ones)."""
    from edge_fer.compress.io import publish, staging

    with staging(args.command) as stage:
        res, rows, notes = make(stage)
        base = _source_onnx(src, stage, faces)
        rows = [("FP32", str(base)), *rows]
        res = _published(res, stage, out)
        extra = {"command": _command_line(args), "args": _args_dict(args), "result": res}
        comp = _compare(args, src, data, rows, stage, out, title, extra, notes)
        files = {p.name: p.read_bytes() for p in sorted(stage.iterdir()) if p.is_file()}
    publish(out, files, _inputs(args)[:1])
    return comp


def _compare(args, src, data, rows, stage: Path, out: Path, title: str, extra: dict,
             notes: list[str]) -> dict:  # fmt: skip
    """Measure the rows and write the report into `stage` (its paths: those in `out`)."""
    from edge_fer.compress.report import compare_models, write_report
    from edge_fer.fileio import portable_path

    eval_tta = src.eval_tta if args.eval_tta == "auto" else args.eval_tta
    extra_tta = (eval_tta,) if eval_tta != "none" else ()
    print("measuring ...", file=sys.stderr, flush=True)
    comp = compare_models(
        rows,
        args.data,
        split=args.eval_split if data.held_out is None else data.val_name,
        threads=args.bench_threads,
        eval_limit=args.eval_limit,
        progress=not args.no_progress,
        rounds=args.bench_rounds,
        tta="none",
        extra_tta=extra_tta,
        skip_bad=args.skip_bad,
        faces=data.held_out,
    )
    for row, (_, p) in zip(comp["rows"], rows):  # (a source ONNX model stays as given)
        row["path"] = portable_path(_published(str(p), stage, out))
    notes = list(notes)
    if data.held_out is not None:
        # (--epochs 0 selects no epoch: before, the note said these faces had selected one)
        chose = (
            "that selected the best epoch"
            if args.epochs != 0
            else "(no epoch selected: --epochs 0)"
        )
        notes.append(
            f"report faces: the {data.val_name} of {portable_path(args.data)} {chose}, never "
            "fine-tuned on (a dataset without FER2013's splits has no other test faces)"
        )
    # the skipped files named in report.md (notes) and report.json, as train names them (the
    # fine-tuning ones were said on stderr when loaded)
    setup = comp["setup"]
    report_skipped = {k: setup[k] for k in ("skipped", "skipped_entries") if k in setup}
    lines = [_skip_line("fine-tuning", data.skipped), _skip_line("report", report_skipped)]
    if lines[1]:
        print(f"edge-fer {args.command}: {lines[1]}", file=sys.stderr)
    notes += [ln for ln in lines if ln]
    if args.skip_bad:
        extra = {**extra, "skipped": {"fine_tuning": data.skipped, "report": report_skipped}}
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
    run = {"command": extra["command"], "seed": args.seed, "settings": extra["args"]}
    write_report(stage, comp, title, extra={**extra, "deltas": deltas}, notes=notes, run=run)
    return comp


def _say(comp: dict, out: Path) -> None:
    """The table and the deltas on stdout, once the report is published."""
    from edge_fer.compress.report import markdown_table

    print(markdown_table(comp["rows"]))
    for d in comp["deltas"]:
        print(
            f"{d['model']}: accuracy {d['accuracy_delta']:+.4f}, MACs "
            f"-{(d['macs_reduction'] or 0):.1%}, size x{d['size_ratio']:.2f}, speed-up "
            f"x{d['speedup_b1'] or 0:.2f} (batch 1) x{d['speedup_b32'] or 0:.2f} (batch 32)"
        )
    print(f"report: {out / 'report.md'} and {out / 'report.json'}", file=sys.stderr)


def _args_dict(args) -> dict:
    """The settings as report.json records them. Before: every attribute of args, func and the
    command line (recorded once, `_command_line`) among them, and local absolute paths."""
    from edge_fer.fileio import portable_path

    kept = {k: v for k, v in vars(args).items() if k not in ("func", "given_argv", "command")}
    for k in ("model", "data", "out"):
        if kept.get(k) is not None:
            kept[k] = portable_path(kept[k])
    return kept


def _command_line(args) -> str:
    """The command as typed, with no local absolute path (a report travels)."""
    from edge_fer.cli.main import portable_command

    return portable_command(getattr(args, "given_argv", None) or [args.command])


# -- commands ---------------------------------------------------------------------------------


def run_prune(args) -> int:
    _imports()
    from edge_fer.compress.prune import PruneConfig
    from edge_fer.compress.prune import run_prune as prune

    method = args.method
    structured = method == "structured"
    _settle(args, "target_macs_reduction", structured,
            f"--target-macs-reduction applies to --method structured (--method {method} "
            "removes no channels)")  # fmt: skip
    _settle(args, "taylor_batches", structured and args.importance == "taylor",
            "--taylor-batches applies to --method structured --importance taylor (the other "
            "rankings take no gradients)")  # fmt: skip
    _settle(args, "importance", structured,
            f"--importance applies to --method structured (it ranks the channels to remove; "
            f"--method {method} removes none)")  # fmt: skip
    _settle(args, "round_to", structured,
            f"--round-to applies to --method structured (it rounds the channel counts kept; "
            f"--method {method} keeps every channel)")  # fmt: skip
    _settle(args, "steps", method != "2:4",
            "--steps applies to --method structured and unstructured (--method 2:4 prunes in "
            "one shot, then fine-tunes)")  # fmt: skip
    how = {"2:4": "zeroes 2 in every 4 weights", "structured": "removes channels to "
           "--target-macs-reduction"}.get(method, "")  # fmt: skip
    _settle(
        args,
        "sparsity",
        method == "unstructured",
        f"--sparsity applies to --method unstructured (--method {method} {how})",
    )
    # --bn is settled once the source is loaded (it applies to folded batch norms only)
    names = ("target_macs_reduction", "taylor_batches", "importance", "round_to", "steps",
             "sparsity", "bn")  # fmt: skip
    unset = {k: getattr(args, k) for k in names}
    pcfg = PruneConfig(method=method, **{k: v for k, v in unset.items() if v is not None})
    pcfg.validate()
    fcfg = _configs(args)
    with _out_locked(args):
        out, src, data, faces = _prepare(args, fcfg)
        if args.bn is not None:
            pcfg.bn = args.bn  # (given, or the default where it applies)

        def make(stage: Path):
            res = prune(src, data, pcfg, fcfg, stage, check_faces=faces)
            notes = {"2:4": [NOTE_24], "unstructured": [NOTE_UNSTRUCTURED]}.get(method, [])
            # --epochs 0: pruned, not fine-tuned (before: its row, its notes and its records
            # read as if it had been fine-tuned)
            tuned = args.epochs != 0
            if structured:
                steps = "prune + fine-tune step(s)" if tuned else "pruning step(s), no fine-tuning"
                notes.append(
                    f"structured: conv widths {res['conv_widths']} (multiples of "
                    f"{args.round_to or 1}); {args.steps} {steps}"
                )
            if not tuned:
                bn = {"renormalized": "; its batch norms renormalized on Training faces (the "
                      "same function)"}.get(res["compression"]["batch_norms"], "")  # fmt: skip
                notes.append(NOTE_NO_FINETUNE + bn)
            label = (
                f"pruned ({method})" if tuned else f"pruned ({method}, 0 epochs: not fine-tuned)"
            )
            return res, [(label, res["onnx"])], notes

        comp = _run_staged(args, out, src, data, faces, f"edge-fer prune --method {method}", make)
    _say(comp, out)
    return 0


def run_qat(args) -> int:
    _imports()
    from edge_fer.compress.qat import QatConfig
    from edge_fer.compress.qat import run_qat as qat

    _settle(args, "percentile", args.calib_method == "percentile",
            "--percentile applies to --calib-method percentile (max takes the largest "
            "activations)")  # fmt: skip
    _settle(args, "ranges", args.epochs != 0,
            "--ranges applies to the fine-tuning, and --epochs 0 runs none (qat.onnx keeps the "
            "calibrated ranges, as ptq.onnx)")  # fmt: skip
    unset = {k: getattr(args, k) for k in ("percentile", "ranges")}
    qcfg = QatConfig(target=args.target, calib_method=args.calib_method,
                     calib_faces=args.calib_faces,
                     **{k: v for k, v in unset.items() if v is not None})  # fmt: skip
    qcfg.validate()
    fcfg = _configs(args)
    from edge_fer.errors import UserError

    if not 13 <= args.opset <= 23:  # checked before the fine-tuning, not by the export after it
        raise UserError(
            f"--opset must be in 13..23 (QuantizeLinear/DequantizeLinear need 13), got {args.opset}"
        )
    with _out_locked(args):
        out, src, data, faces = _prepare(args, fcfg)

        def make(stage: Path):
            res = qat(src, data, qcfg, fcfg, stage, check_faces=faces, opset=args.opset)
            # --epochs 0: qat.onnx is the calibrated model, not trained (before: its row and
            # report.json's "ranges": "learn" read as if ranges had been learned)
            untuned = ", 0 epochs: calibration only" if args.epochs == 0 else ""
            rows = [
                (f"INT8 PTQ ({args.target}, calibration only)", res["ptq_onnx"]),
                (f"INT8 QAT ({args.target}{untuned})", res["qat_onnx"]),
            ]
            exp = res["qat_export"]
            notes = [
                (
                    f"QDQ parity (ONNX Runtime without graph optimizations vs torch fake-quant): "
                    f"max |dp| {exp['parity_max_abs_diff']:.2g}, mean "
                    f"{exp['parity_mean_abs_diff']:.2g}; with ONNX Runtime's fused INT8 kernels: "
                    f"max {exp['parity_optimized_max_abs_diff']:.2g}, top-1 agreement "
                    f"{exp['parity_optimized_top1_agreement']:.3f}"
                )
            ]
            if args.epochs == 0:
                notes.append(NOTE_NO_QAT)
            if args.target == "tensorrt":
                notes.append(NOTE_TRT)
            return res, rows, notes

        title = f"edge-fer qat --target {args.target}"
        comp = _run_staged(args, out, src, data, faces, title, make)
    _say(comp, out)
    print(json.dumps({"qat_onnx": str(out / "qat.onnx"), "ptq_onnx": str(out / "ptq.onnx")}))
    return 0
