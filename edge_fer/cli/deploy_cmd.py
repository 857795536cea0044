"""`edge-fer deploy deepstream|triton`: deployment kits generated from an exported model.

    edge-fer deploy deepstream --out ds/ --target orin-nano --precision int8
    edge-fer deploy triton --out model_repository/ --target orin-agx

The output folder is written all or nothing (a hidden folder beside it, renamed at the end); a
non-empty folder is replaced only with --force. A model that is not an edge-fer FER model, an
unknown target or a precision the target cannot run: one line, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from edge_fer.cli.options import input_path


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        type=input_path,
        metavar="M",
        help="classifier .onnx (default: the bundled model)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--force", action="store_true", help="replace a non-empty DIR")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")


def _target_help() -> str:
    from edge_fer.export.targets import target_names

    return "board or GPU: " + ", ".join(target_names())


def register(sub: Any) -> None:
    p = sub.add_parser(
        "deploy",
        help="DeepStream configs or a Triton model repository for the expression model",
        description="Generate deployment files for an exported expression model: an nvinfer "
        "secondary-classifier kit for DeepStream, or a Triton model repository.",
    )
    kinds = p.add_subparsers(dest="deploy_kind", metavar="KIND")
    kinds.required = True

    ds = kinds.add_parser(
        "deepstream",
        help="nvinfer secondary classifier behind a face detector, deepstream-app config, "
        "labels, a pyds probe app",
        description="Write an nvinfer secondary-classifier config (process-mode=2, GRAY input "
        "normalised like edge-fer, labels, output blob), a placeholder config for the face "
        "detector you choose as the primary, a deepstream-app config, the label file, a pyds "
        "app that adds edge-fer's crop margin and prints JSON events, and a README.",
    )
    _common(ds)
    ds.add_argument("--target", metavar="T", help=_target_help())
    ds.add_argument(
        "--precision",
        choices=("fp16", "int8", "fp32"),
        default="fp16",
        help="nvinfer network-mode (default fp16)",
    )
    ds.add_argument(
        "--calib-cache",
        metavar="FILE",
        help="int8 from an FP32 model: its TensorRT calibration cache (default for "
        "the bundled model: its cache built in)",
    )
    ds.add_argument(
        "--trt-version",
        metavar="X.Y.Z",
        help="TensorRT that reads the cache (default: the target's newest JetPack's, else 10.3.0)",
    )
    ds.add_argument(
        "--source",
        default="csi://0",
        help="csi://N, /dev/videoN, rtsp://..., or a video file/URI (default csi://0)",
    )
    ds.add_argument("--width", type=int, default=1280, help="camera and streammux width")
    ds.add_argument("--height", type=int, default=720, help="camera and streammux height")
    ds.add_argument("--fps", type=int, default=30, help="camera frame rate")
    ds.add_argument("--sink", choices=("display", "none"), default="display")
    ds.add_argument(
        "--batch-size", type=int, default=16, help="faces per secondary batch (at most 4096)"
    )
    ds.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="classifier-threshold: label only above this probability",
    )
    ds.add_argument(
        "--min-face",
        type=int,
        default=32,
        metavar="PX",
        help="input-object-min-width/height: smaller faces are not classified (>= 16, "
        "nvinfer's own minimum)",
    )
    ds.add_argument(
        "--face-class-id", type=int, default=0, help="class id of faces in the detector's output"
    )
    ds.add_argument(
        "--reinfer-interval",
        type=int,
        default=5,
        metavar="FRAMES",
        help="secondary-reinfer-interval: classify a tracked face again once more than N "
        "frames have passed (every N+1 frames; 0: every frame)",
    )
    ds.add_argument("--gpu-id", type=int, default=0)
    ds.set_defaults(func=run_deepstream)

    tr = kinds.add_parser(
        "triton",
        help="Triton model repository (ONNX Runtime and TensorRT plan) and an HTTP client",
        description="Write a Triton model repository: <name>_onnx (onnxruntime_onnx, the model "
        "copied in) and <name>_trt (tensorrt_plan, the engine built on the target with "
        "`edge-fer build-engine`), with labels, dynamic batching, and a tritonclient example "
        "that prepares faces like edge-fer.",
    )
    _common(tr)
    tr.add_argument("--name", default="fer", help="model name prefix (default fer)")
    tr.add_argument("--platform", choices=("both", "onnxruntime", "tensorrt"), default="both")
    tr.add_argument(
        "--max-batch", type=int, default=32, help="max_batch_size (default 32, at most 4096)"
    )
    tr.add_argument("--queue-delay-us", type=int, default=500,
                    help="dynamic batching: max_queue_delay_microseconds")  # fmt: skip
    tr.add_argument("--instances", type=int, default=1, help="model instances per GPU")
    # (no defaults here: TritonOptions' None tells a flag given for a model not written)
    tr.add_argument(
        "--instance-kind",
        choices=("gpu", "cpu"),
        help="where the ONNX Runtime model runs (default gpu; the plan always on the GPU)",
    )
    tr.add_argument("--target", metavar="T", help=_target_help() + " (for the plan)")
    tr.add_argument("--precision", choices=("fp16", "int8", "fp32"),
                    help="precision of the TensorRT plan (default fp16)")  # fmt: skip
    tr.add_argument(
        "--calib-cache",
        metavar="FILE",
        help="int8 plan from an FP32 model: its TensorRT calibration cache",
    )
    # a user error naming one of TritonOptions' fields is said with its flag (edge_fer.cli.main
    # flag_for), here where the field and the option's dest differ: --instance-kind, --platform
    tr.set_defaults(func=run_triton, param_dests={"kind": "instance_kind", "platforms": "platform"})


def _report(args: argparse.Namespace, result: dict) -> int:
    if args.json:
        try:
            print(json.dumps(result, indent=2))
            sys.stdout.flush()
        except BrokenPipeError:  # the reader left (`| head`): main says it as a shell does
            raise
        except OSError as exc:
            # the kit is written by now: "cannot write (the disk is full)" read as if it was not
            from edge_fer.errors import UserError
            from edge_fer.fileio import os_error_reason

            try:  # what is still buffered goes nowhere, or the flush at exit fails again
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            raise UserError(
                f"--json: cannot write to standard output ({os_error_reason(exc)}); the "
                f"deployment in {result['out']} is complete ({len(result['files'])} files)"
            ) from None
    print(
        f"edge-fer deploy {args.deploy_kind}: wrote {len(result['files'])} files to "
        f"{result['out']}",
        file=sys.stderr,
    )
    return 0


def _options(cls, args: argparse.Namespace, **given):
    """An options dataclass from the flags named as its fields, and `given` for the others."""
    names = [f.name for f in dataclasses.fields(cls)]
    return cls(**{k: given[k] if k in given else getattr(args, k) for k in names})


def run_deepstream(args: argparse.Namespace) -> int:
    from edge_fer.deploy.deepstream import DeepStreamOptions, generate

    o = _options(DeepStreamOptions, args)
    return _report(args, generate(args.out, args.model, o, force=args.force))


def run_triton(args: argparse.Namespace) -> int:
    from edge_fer.deploy.triton import TritonOptions, generate

    platforms = ("onnxruntime", "tensorrt") if args.platform == "both" else (args.platform,)
    o = _options(TritonOptions, args, platforms=platforms, kind=args.instance_kind)
    return _report(args, generate(args.out, args.model, o, force=args.force))
