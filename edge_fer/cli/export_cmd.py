"""`edge-fer export`: turn a training checkpoint into a deployable model.

FP32 ONNX with softmax probabilities inside the graph, optional flip test-time augmentation,
metadata (preprocessing, classes, provenance) and a torch-vs-ONNX Runtime parity check. With
`--int8` it goes on, in the same command, to INT8: calibration, the accuracy check against FP32
and the compression report (edge_fer.export.int8), starting from the FP32 model just exported
or from `--model` (an exported .onnx; the bundled model when neither is given).
"""

from __future__ import annotations

import json
import sys

from edge_fer.cli.common import HelpFormatter, add_skip_bad, positive_thread_count
from edge_fer.cli.options import FaceFinderArgs, input_path

DETECTOR = FaceFinderArgs()  # as `calibrate --source` finds its faces


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX (needs edge-fer[train])",
        description="Export a training checkpoint (best.safetensors) to an ONNX model that "
        "`edge-fer eval/classify` and the runtime load without torch; with --int8, also "
        "calibrate it to INT8, check its accuracy against FP32 and write a compression report.",
        epilog="Examples:\n"
        "  edge-fer export --checkpoint runs/vgg/best.safetensors --out vgg.onnx\n"
        "  edge-fer export --checkpoint runs/vgg/best.safetensors --out vgg.onnx --int8 "
        "--data ../shared/data/fer2013\n"
        "  edge-fer export --model vgg.onnx --int8 --source my_camera.mp4 --eval-data "
        "../shared/data/fer2013",
        formatter_class=HelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=input_path, help="best.safetensors of a training run")
    src.add_argument(
        "--model",
        type=input_path,
        help="--int8: an exported FP32 .onnx to start from (default: the bundled model)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="--checkpoint: the output model file (.onnx); --int8 outputs go to "
        "OUT's name without .onnx + _int8/ (or --int8-out)",
    )
    g = p.add_argument_group("ONNX (FP32)")
    g.add_argument("--opset", type=int, default=17, help="ONNX opset")
    g.add_argument(
        "--tta",
        default="none",
        choices=("none", "flip"),
        help="flip: average the softmax of the face and of its mirror image",
    )
    g.add_argument(
        "--eval-tta",
        default="none",
        choices=("none", "flip", "zoom-flip"),
        help="test-time augmentation that eval/classify apply by default, stored in "
        "the metadata (the graph stays single-view; the video runtime never uses it)",
    )
    g.add_argument(
        "--crop-margin",
        type=float,
        default=None,
        metavar="M",
        help="border the runtime adds around a detected face, a fraction of the box side per "
        "side, stored in the model [default: the checkpoint's; 0 reproduces FER2013's "
        "framing: benchmarks/bench_framing.py]",
    )
    g.add_argument(
        "--exporter",
        default="auto",
        choices=("auto", "classic", "dynamo"),
        help="torch ONNX exporter (auto: the TorchScript one when available)",
    )
    g.add_argument(
        "--no-check", action="store_true", help="skip the ONNX Runtime vs torch parity check"
    )
    g.add_argument("--check-data", default=None,
                   help="dataset whose faces the parity check uses [default: the training data "
                   "named in the checkpoint]")  # fmt: skip
    q = p.add_argument_group("INT8 (one line: calibrate, check against FP32, report)")
    q.add_argument(
        "--int8",
        action="store_true",
        help="calibrate to INT8 and write Q/DQ models, the TensorRT calibration "
        "cache and a compression report (needs edge-fer[quantize])",
    )
    one = q.add_mutually_exclusive_group()
    one.add_argument(
        "--data",
        type=input_path,
        metavar="DIR",
        help="labelled dataset: calibration faces from its training split, the "
        "accuracy check on --eval-split",
    )
    one.add_argument(
        "--source",
        metavar="VIDEO_OR_IMAGES",
        help="calibrate on faces the PICO detector finds here (the deployment "
        "camera's footage is the best calibration set)",
    )
    q.add_argument("--samples", type=int, default=512, help="calibration faces")
    q.add_argument("--seed", type=int, default=0, help="seed of the calibration sample")
    q.add_argument(
        "--method",
        default="entropy",
        choices=("entropy", "percentile", "minmax"),
        help="range calibration (entropy = TensorRT's EntropyCalibration2)",
    )
    q.add_argument(
        "--target",
        default="both",
        choices=("tensorrt", "cpu", "both"),
        help="Q/DQ layouts to write",
    )
    q.add_argument(
        "--trt-version",
        default="10.3.0",
        metavar="X.Y.Z",
        help="TensorRT version in the calibration cache header",
    )
    q.add_argument(
        "--eval-data",
        default=None,
        metavar="DIR",
        help="labelled data for the accuracy check [default: --data]",
    )
    q.add_argument(
        "--eval-split",
        default=None,
        help="split of the accuracy check [default: private-test for FER2013, else all images]",
    )
    q.add_argument(
        "--eval-limit",
        type=int,
        default=0,
        help="check on an even sample of this many faces (0: all)",
    )
    q.add_argument(
        "--max-drop",
        type=float,
        default=0.5,
        help="accuracy points INT8 may lose against FP32 before the check fails (exit code 1)",
    )
    q.add_argument("--threads", type=positive_thread_count, default=1, help="ONNX Runtime threads")
    q.add_argument("--int8-out", default=None, metavar="DIR", help="folder of the INT8 outputs")
    q.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --out model and an earlier calibration in the INT8 folder",
    )
    # as train, eval and calibrate: one bad file of a large dataset need not stop the export
    add_skip_bad(
        p,
        "the datasets read (--check-data or the checkpoint's data, --data, --eval-data)",
        "on stderr, in the JSON line: parity_skipped_entries, in the INT8 reports",
    )
    DETECTOR.add_to(p)
    # None in the parser tells a flag given (even at its default value) from one left out, so
    # that one which would be ignored is refused (`_check_flags`); run() fills the default in
    filled = {}
    for a in p._actions:
        if a.dest in FILLED:
            filled[a.dest] = a.default
            if "default" not in (a.help or ""):  # --help still shows it
                a.help = f"{a.help} (default: {a.default})"
            a.default = None
    p.set_defaults(func=run, filled_defaults=filled, max_size_default=p.get_default("max_size"))


FP32_FLAGS = ("opset", "tta", "eval_tta", "crop_margin", "exporter", "no_check", "check_data")
DETECTOR_FLAGS = ("cascade", "min_size", "max_size", "threshold")
CHECK_FLAGS = ("eval_split", "eval_limit", "max_drop")  # of the accuracy check
INT8_FLAGS = ("model", "data", "source", "samples", "seed", "method", "target", "trt_version",
              "eval_data", *CHECK_FLAGS, "threads", "int8_out", *DETECTOR_FLAGS)  # fmt: skip
# (not --max-size: the detector group's 1.0 is every command's; given at 1.0 it changes nothing)
FILLED = ("opset", "tta", "eval_tta", "exporter", "samples", "seed", "method", "target",
          "trt_version", "eval_limit", "max_drop", "threads")  # fmt: skip


def _fp32_options(args) -> dict:
    """export_checkpoint's keywords."""
    return {"opset": args.opset, "tta": args.tta, "check": not args.no_check,
            "check_data": args.check_data, "exporter": args.exporter, "eval_tta": args.eval_tta,
            "crop_margin": args.crop_margin,
            "force": True,  # --out was checked: new, or --force
            "skip_bad": args.skip_bad}  # fmt: skip


def _onnx_export():
    """edge_fer.export.onnx, or the UserError that says which extra it needs."""
    from edge_fer.errors import UserError

    try:
        from edge_fer.export import onnx
    except ImportError as exc:
        raise UserError(
            f"export needs the train extra: python3 -m pip install '.[train]' in the edge-fer checkout ({exc})"
        ) from None
    return onnx


def export_onnx(args) -> dict:
    return _onnx_export().export_checkpoint(args.checkpoint, args.out, **_fp32_options(args))


def run(args) -> int:
    from edge_fer.errors import UserError

    _check_flags(args)
    for dest, value in args.filled_defaults.items():  # (None in the parser: see register)
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    _check_skip_bad(args)
    _check_inputs(args)
    if not args.int8:
        if not args.checkpoint or not args.out:
            raise UserError("give --checkpoint CKPT --out MODEL.onnx (or --int8)")
        _check_fp32_out(args)
        _export_fp32(args)
        return 0
    if not (args.data or args.source):
        raise UserError(
            "--int8 needs calibration faces: --data DATASET or --source VIDEO_OR_IMAGES"
        )
    _check_int8_args(args)
    if args.checkpoint:
        if not args.out:
            raise UserError("--checkpoint needs --out MODEL.onnx")
        # before anything is written: a refusal after the FP32 model replaced --out lost a model
        _check_fp32_out(args)
        _check_int8_out(args, args.out, exported=True)  # (it loads the faces: last)
        # the FP32 model is written with the INT8 set, at the end, or not at all: a failed or
        # interrupted INT8 step left a new --out beside the earlier model's INT8 set
        with _onnx_export().staged_export(args.checkpoint, args.out,
                                          **_fp32_options(args)) as (report, staged):  # fmt: skip
            return _int8(args, staged, fp32=report)
    else:
        from edge_fer.classify import default_model_path

        if args.out:  # it was ignored: the outputs went beside --model
            raise UserError(
                "--out names the FP32 model that --checkpoint exports; give the folder of the "
                "INT8 outputs with --int8-out"
            )
        model = args.model or str(default_model_path())
    return _int8(args, model)


def _check_flags(args) -> None:
    """A flag this export would ignore is refused, in one line (before: exit 0, and the INT8
    flags of a plain export, the FP32 ones of `--int8 --model` did nothing)."""
    from edge_fer.errors import UserError

    def given(dests) -> list[str]:
        flags = []
        for d in dests:
            v = getattr(args, d)
            # by identity: --seed 0 is given; --max-size at the detector's default changes nothing
            if not (v is None or v is False or (d == "max_size" and v == args.max_size_default)):
                flags.append(f"--{d.replace('_', '-')}")
        return flags

    if not args.int8 and given(INT8_FLAGS):
        raise UserError(
            f"{given(INT8_FLAGS)[0]} applies to --int8; plain export takes --checkpoint, --out "
            "and the ONNX (FP32) options"
        )
    if args.int8 and not args.checkpoint and given(FP32_FLAGS):
        start = f"--model {args.model}" if args.model else "the bundled model"
        raise UserError(
            f"{given(FP32_FLAGS)[0]} applies to the FP32 export of a --checkpoint; --int8 from "
            f"{start} exports none"
        )
    if args.no_check and args.check_data is not None:
        raise UserError("--check-data is the parity check's data: it does nothing with --no-check")
    if args.int8 and not args.source and given(DETECTOR_FLAGS):
        raise UserError(
            f"{given(DETECTOR_FLAGS)[0]} applies to --source (the detector finds the "
            "calibration faces there); --data's faces are not detected"
        )
    if args.int8 and not (args.eval_data or args.data) and given(CHECK_FLAGS):
        raise UserError(
            f"{given(CHECK_FLAGS)[0]} applies to the accuracy check, which needs labelled "
            "faces: give --eval-data (--source's have no labels)"
        )


def _check_skip_bad(args) -> None:
    """--skip-bad with no labelled dataset to read is a mistake: it would change nothing."""
    from edge_fer.errors import UserError

    parity = bool(args.checkpoint) and not args.no_check
    if args.skip_bad and not (parity or (args.int8 and (args.data or args.eval_data))):
        raise UserError(
            "--skip-bad applies to the datasets export reads (the parity check's, --data, "
            "--eval-data); this export reads none (--source skips unreadable images itself)"
        )


def _check_inputs(args) -> None:
    """The named datasets and a --source file exist, said with their own flag before the FP32
    model is written (a missing --data was reported as --eval-data, after the export)."""
    import os

    from edge_fer.errors import UserError

    for flag, path in (("--data", args.data), ("--check-data", args.check_data)):
        if path is not None and not os.path.exists(path):
            raise UserError(f"{flag} {path}: no such file or folder")
    if args.source is not None and args.int8:
        from edge_fer.runtime.sources import parse_source

        spec = parse_source(args.source)
        if spec.kind == "file" and not os.path.lexists(str(spec.target)):
            raise UserError(f"--source {args.source}: no such file")


def _check_int8_args(args) -> None:
    """The INT8 options that can be checked without the model or the faces, so that a mistake
    in them is refused before any work (`--checkpoint`'s FP32 export, reading the faces)."""
    import math

    from edge_fer.errors import UserError
    from edge_fer.limits import check_count
    from edge_fer.quantize.calib_data import MIN_FACES
    from edge_fer.quantize.trt_cache import version_code

    check_count(args.seed, "seed", lowest=0)
    if check_count(args.samples, "samples") < MIN_FACES:
        raise UserError(f"--samples {args.samples}: calibration needs at least {MIN_FACES} faces")
    version_code(args.trt_version)
    if not 0 <= args.max_drop < math.inf:
        raise UserError(
            f"--max-drop must be >= 0 and finite (accuracy points), got {args.max_drop}"
        )
    if args.eval_limit < 0:
        raise UserError(f"--eval-limit must be >= 0 (0: every face), got {args.eval_limit}")


def _check_int8_out(args, model, exported: bool = False) -> None:
    """exported: `model` is the --out of a --checkpoint export, not written yet (an older file
    there is no guide to the classes)."""
    from pathlib import Path

    from edge_fer.export.int8 import check_int8_out, default_out_dir, model_classes

    out = Path(args.int8_out) if args.int8_out else default_out_dir(model)
    _outside_data(args, "--int8-out", out, "the models and reports")
    # (also loads the accuracy check's faces: a split that is not there, or classes the model
    # does not know, are said now)
    classes = None if exported else model_classes(model)
    check_int8_out(out, args.force, args.eval_data or args.data, args.eval_split, model=model,
                   skip_bad=args.skip_bad, classes=classes)  # fmt: skip


def _check_fp32_out(args) -> None:
    """Before anything is written: --out names a new file (an existing one, whatever it holds,
    is replaced only with --force), not a folder, and not a file of the data it is checked on."""
    from pathlib import Path

    from edge_fer.errors import UserError
    from edge_fer.fileio import is_stream, names_folder

    out = Path(args.out)
    if names_folder(args.out) or out.is_dir():
        raise UserError(f"--out {args.out}: is a folder; give the model's file name (MODEL.onnx)")
    if (out.exists() or out.is_symlink()) and not args.force:
        raise UserError(f"--out {args.out} already exists; pass --force to replace it")
    _outside_data(args, "--out", out, "the model")
    # an ONNX model under another name (e2.txt) was written without a word; a device or pipe
    # is written into whatever its name
    if out.suffix.lower() != ".onnx" and not is_stream(args.out):
        raise UserError(f"--out {args.out}: give the model an .onnx name (MODEL.onnx)")


def _outside_data(args, flag: str, out, what: str) -> None:
    """`out` lies outside every dataset export reads (--data, --eval-data, --check-data)."""
    from edge_fer.fileio import check_outside

    for name in ("data", "eval_data", "check_data"):
        check_outside([(flag, out)], getattr(args, name), f"--{name.replace('_', '-')}",
                      f"{what} would become part of the dataset")  # fmt: skip


def _int8(args, model, fp32: dict | None = None) -> int:
    """The INT8 step from `model`; with `fp32` (the report of a staged --checkpoint export,
    `model` its temporary file), the FP32 model is written to --out with the INT8 set."""
    from pathlib import Path

    from edge_fer.classify import Classifier
    from edge_fer.cli.common import Progress
    from edge_fer.errors import UserError
    from edge_fer.export.int8 import default_out_dir, export_int8

    try:
        import onnx  # noqa: F401

        from edge_fer.quantize import from_dataset, from_source
    except ImportError as exc:
        raise UserError(
            f"--int8 needs the quantize extra: python3 -m pip install '.[quantize]' in the edge-fer checkout ({exc})"
        ) from None
    if args.threads < 1:
        raise UserError("--threads must be >= 1")
    shown = args.out if fp32 is not None else model
    out = Path(args.int8_out) if args.int8_out else default_out_dir(shown)
    if fp32 is None:  # (--checkpoint's: checked before its export)
        _check_int8_out(args, model)  # before the faces are collected
    with Classifier.load(model, threads=1, tta="none") as clf:  # fail early on a bad model
        size, margin = clf.spec.input_size, clf.spec.crop_margin
        spec = clf.spec  # a model trained with --align: source faces are cut aligned
    if args.data:
        faces = from_dataset(
            args.data, "train", args.samples, args.seed, size=size, skip_bad=args.skip_bad
        )
        if faces.skipped:
            _say_skipped(faces.skipped, faces.skipped_entries, "calibration")
    else:
        faces = from_source(
            args.source,
            args.cascade,
            margin=margin,
            size=size,
            samples=args.samples,
            seed=args.seed,
            detect=DETECTOR.detect_options(args),
            spec=spec,
        )
    eval_data = args.eval_data or args.data
    bar = Progress(len(faces), "calibrating", "face", sys.stderr.isatty())
    try:
        res = export_int8(
            model, out, faces, eval_data=eval_data, eval_split=args.eval_split,
            method=args.method, target=args.target, trt_version=args.trt_version,
            threads=args.threads, max_drop=args.max_drop, eval_limit=args.eval_limit,
            force=args.force, skip_bad=args.skip_bad,
            progress=bar.update, model_out=args.out if fp32 is not None else None,
        )  # fmt: skip
    finally:
        bar.close()
    from edge_fer.errors import warn
    from edge_fer.quantize.trt_cache import implicit_int8_warning

    line = implicit_int8_warning(args.trt_version)  # once it worked: a refusal stays one line
    if line:
        warn(line)
    if fp32 is not None:  # said once it is written
        _say_fp32(dict(fp32, bytes=Path(model).stat().st_size))
    setup = (res["report"] or {}).get("setup") or {}
    if setup.get("skipped"):
        _say_skipped(setup["skipped"], setup.get("skipped_entries", []), "accuracy check")
    info = res["calibration"]
    print(f"int8: calibrated on {info['faces']} faces ({faces.source}) -> {info['out']}")
    for k, v in info["files"].items():
        print(f"  {k:<9} {v}")
    if res["report"] is None:
        print("  no accuracy check: give --eval-data (a labelled dataset)")
        return 0
    print(f"  report    {res['report']['markdown']}")
    for row in res["report"]["rows"]:
        print(
            f"  {row['model']:<32} accuracy {row['accuracy']:.4f}  "
            f"{row.get('ms_b32', float('nan')):.3f} ms/face at batch 32"
        )
    for c in res["checks"]:
        verdict = "ok" if c["ok"] else "FAILED"
        print(
            f"  check {c['model']}: {0.0 - c['accuracy_drop_points'] + 0.0:+.2f} accuracy points vs FP32 "
            f"(limit -{c['max_drop_points']}): {verdict}"
        )
    if not res["ok"]:
        print(
            "edge-fer export: INT8 accuracy check failed (see the report; try --method "
            "percentile, more --samples, or QAT: edge-fer qat)",
            file=sys.stderr,
        )
        return 1
    return 0


def _say_skipped(total: int, entries: list[str], of: str) -> None:
    from edge_fer.data.faceset import skipped_line

    print(f"edge-fer export: {skipped_line(total, entries, of)}", file=sys.stderr)


def _export_fp32(args) -> None:
    _say_fp32(export_onnx(args))


def _say_fp32(report: dict) -> None:
    print(json.dumps(report))
    if report.get("parity_skipped"):
        _say_skipped(report["parity_skipped"], report["parity_skipped_entries"], "parity check")
    check = (f", parity max |dp| {report['parity_max_abs_diff']:.2g}"
             if "parity_max_abs_diff" in report else ", parity not checked")  # fmt: skip
    print(
        f"exported {report['arch']} ({report['params']:,} params, tta {report['tta']}) "
        f"-> {report['out']}{check}",
        file=sys.stderr,
    )
