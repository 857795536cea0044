#!/usr/bin/env python3
"""Build a TensorRT engine (+ its metadata sidecar) from an exported edge-fer ONNX model.

Run it on the device that will run the engine (engines are specific to the GPU and to the
TensorRT version). Examples:

    python export/build_engine.py fer.onnx --fp16                  # -> fer.fp16.engine(.json)
    python export/build_engine.py fer.onnx --int8 --calib-cache calibration/fer.calib
    python export/build_engine.py fer.int8.qdq.onnx --int8         # Q/DQ model: no cache
    python export/build_engine.py fer.onnx --fp16 --dla-core 0     # Jetson Xavier/Orin DLA
    python export/build_engine.py fer.onnx --sidecar-for fer.engine  # engine made by trtexec

Thin wrapper around edge_fer.trt_build.build_engine; errors are one line, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    import edge_fer  # noqa: F401
except ImportError:  # run from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_fer.errors import UserError

PROG = "build_engine"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Build a TensorRT engine from an edge-fer ONNX model, with a "
        "<engine>.json sidecar holding the model's preprocessing metadata.",
    )
    ap.add_argument("onnx", metavar="MODEL.onnx", help="model exported by `edge-fer export`")
    ap.add_argument("--out", metavar="ENGINE",
                    help="engine file (default: MODEL.<precision>.engine beside the model)")
    g = ap.add_argument_group("precision")
    g.add_argument("--fp16", action="store_true", help="allow FP16 kernels (TensorRT 8.x/10.x)")
    g.add_argument("--int8", action="store_true",
                   help="INT8: a Q/DQ model needs nothing else; a plain model needs --calib-cache")
    g.add_argument("--calib-cache", metavar="FILE",
                   help="existing TensorRT INT8 calibration cache (implicit INT8, TensorRT <= 10)")
    b = ap.add_argument_group("batch profile")
    b.add_argument("--min-batch", type=int, default=1, metavar="N", help="default 1")
    b.add_argument("--opt-batch", type=int, default=8, metavar="N",
                   help="batch TensorRT tunes for (default 8, clamped to [min, max])")
    b.add_argument("--max-batch", type=int, default=32, metavar="N", help="default 32")
    o = ap.add_argument_group("other")
    o.add_argument("--workspace-mb", type=int, default=1024, metavar="MB",
                   help="builder workspace limit (default 1024)")
    o.add_argument("--dla-core", type=int, metavar="N",
                   help="build for DLA core N (Jetson Xavier/Orin), GPU fallback on")
    o.add_argument("--sparse", action="store_true", help="allow 2:4 structured-sparse kernels")
    o.add_argument("--verbose", action="store_true", help="print TensorRT's warnings")
    o.add_argument("--json", action="store_true", help="print the build report as JSON")
    o.add_argument("--sidecar-for", metavar="ENGINE",
                   help="only write ENGINE.json from MODEL.onnx's metadata (for an engine built "
                   "with trtexec); needs no TensorRT")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from edge_fer.trt_build import build_engine, default_engine_path, write_sidecar_for

    if args.sidecar_for:
        side = write_sidecar_for(args.sidecar_for, args.onnx)
        print(f"{PROG}: wrote {side}", file=sys.stderr)
        return 0
    out = Path(args.out) if args.out else default_engine_path(args.onnx, args.fp16, args.int8)
    report = build_engine(
        args.onnx, out, fp16=args.fp16, int8=args.int8, calib_cache=args.calib_cache,
        min_batch=args.min_batch, opt_batch=args.opt_batch, max_batch=args.max_batch,
        workspace_mb=args.workspace_mb, dla_core=args.dla_core, sparse=args.sparse,
        verbose=args.verbose,
    )  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
    b = report["batch"]
    print(f"{PROG}: TensorRT {report['tensorrt']} {report['precision']} engine, batch "
          f"{b['min']}..{b['max']} (opt {b['opt']}), {report['bytes']:,} bytes in "
          f"{report['seconds']} s -> {report['engine']}", file=sys.stderr)  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
