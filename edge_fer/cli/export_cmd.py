"""`edge-fer export`: turn a training checkpoint into a deployable model.

Today: FP32 ONNX with softmax probabilities inside the graph, optional flip test-time
augmentation, metadata (preprocessing, classes, provenance) and a torch-vs-ONNX Runtime parity
check. Later flows (INT8, TensorRT engines) add their own argument group in `register` and a
step in `run` after the FP32 export they all start from.
"""

from __future__ import annotations

import json
import sys

from edge_fer.cli.eval_cmd import HelpFormatter  # one help style for both


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX (needs edge-fer[train])",
        description="Export a training checkpoint (best.safetensors) to an ONNX model that "
        "`edge-fer eval/classify` and the runtime load without torch.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="best.safetensors of a training run")
    p.add_argument("--out", required=True, help="output model file (.onnx)")
    g = p.add_argument_group("ONNX (FP32)")
    g.add_argument("--opset", type=int, default=17, help="ONNX opset")
    g.add_argument("--tta", default="none", choices=("none", "flip"),
                   help="flip: average the softmax of the face and of its mirror image")
    g.add_argument("--eval-tta", default="none", choices=("none", "flip", "zoom-flip"),
                   help="test-time augmentation that eval/classify apply by default, stored in "
                   "the metadata (the graph stays single-view; the video runtime never uses it)")
    g.add_argument("--exporter", default="auto", choices=("auto", "classic", "dynamo"),
                   help="torch ONNX exporter (auto: the TorchScript one when available)")
    g.add_argument("--no-check", action="store_true",
                   help="skip the ONNX Runtime vs torch parity check")
    g.add_argument("--check-data", default=None,
                   help="dataset whose faces the parity check uses [default: the training data "
                   "named in the checkpoint]")  # fmt: skip
    p.set_defaults(func=run)


def export_onnx(args) -> dict:
    from edge_fer.errors import UserError

    try:
        from edge_fer.onnx_export import export_checkpoint
    except ImportError as exc:
        raise UserError(
            f"export needs the train extra: pip install 'edge-fer[train]' ({exc})"
        ) from None
    return export_checkpoint(
        args.checkpoint, args.out, opset=args.opset, tta=args.tta, check=not args.no_check,
        check_data=args.check_data, exporter=args.exporter, eval_tta=args.eval_tta,
    )  # fmt: skip


def run(args) -> int:
    report = export_onnx(args)
    print(json.dumps(report))
    check = (f", parity max |dp| {report['parity_max_abs_diff']:.2g}"
             if "parity_max_abs_diff" in report else ", parity not checked")  # fmt: skip
    print(f"exported {report['arch']} ({report['params']:,} params, tta {report['tta']}) "
          f"-> {report['out']}{check}", file=sys.stderr)
    return 0
