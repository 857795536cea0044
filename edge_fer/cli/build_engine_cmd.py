"""`edge-fer build-engine`: ONNX -> TensorRT engine + sidecar, on the device that will run it.

All options go into one `edge_fer.export.engine.BuildConfig`; errors (unknown target, INT8 on a
Nano, DLA on an Orin Nano, a cache for another model, the CPU INT8 layout, a model without
edge-fer metadata, an existing --out without --force...) are one line, exit 2, before anything
is built, and nothing is written unless the build succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

PROG = "edge-fer build-engine"
# the flags in messages about paths (keys: edge_fer.export.engine.PATH_NAMES)
FLAGS = {
    "onnx_path": "MODEL.onnx",
    "engine_path": "--out",
    "timing_cache": "--timing-cache",
    "calib_cache": "--calib-cache",
}


def _targets_help() -> str:
    from edge_fer.export.targets import TARGETS

    rows = []
    for name, t in TARGETS.items():
        caps = ["int8" if t["int8"] else "no int8"]
        caps.append(f"{t['dla_cores']} DLA" if t["dla_cores"] else "no DLA")
        if t["sparsity"]:
            caps.append("2:4 sparsity")
        rows.append(f"  {name:<12} {t['description']}: {', '.join(caps)}")
    return "targets:\n" + "\n".join(rows)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "build-engine",
        help="build a TensorRT engine (+ sidecar) from an ONNX model, on the device",
        description="Build a TensorRT engine from an edge-fer ONNX model, with a <engine>.json "
        "sidecar holding the model's metadata and what the engine is tied to (TensorRT, CUDA, "
        "L4T, GPU). Run it on the device that will run the engine.",
        epilog="examples:\n"
        "  edge-fer build-engine fer.onnx --precision fp16\n"
        "  edge-fer build-engine model.int8.qdq.onnx --precision int8 --target orin-nano\n"
        "  edge-fer build-engine fer.onnx --precision int8 --calib-cache calib.cache\n"
        "  edge-fer build-engine fer.onnx --precision fp16 --target orin-agx --dla-core 0\n"
        "  edge-fer build-engine fer.onnx --sidecar-for fer.fp16.engine   # trtexec's engine\n\n"
        + _targets_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("onnx", metavar="MODEL.onnx", help="model exported by `edge-fer export`")
    p.add_argument(
        "--out",
        metavar="ENGINE",
        help="engine file (default: MODEL.<precision>.engine beside the model; for a Q/DQ "
        "model, an INT8 engine whatever --precision: MODEL.int8.engine, MODEL.int8-fp16.engine "
        "with --precision fp16)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --out (an ENGINE.json that is not an edge-fer sidecar never is)",
    )
    # the build flags default to None (filled in by run): one given with --sidecar-for is seen
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        help="fp32 (default), fp16, or int8: a Q/DQ model (explicit quantization, every "
        "TensorRT; the only INT8 on 11) or a plain one with --calib-cache (TensorRT <= "
        "10)",
    )
    p.add_argument(
        "--calib-cache",
        metavar="FILE",
        help="TensorRT INT8 calibration cache (header rewritten for this TensorRT)",
    )
    p.add_argument(
        "--target",
        metavar="NAME",
        help="the board or GPU the engine is for: checked before building (below)",
    )
    b = p.add_argument_group("batch profile")
    b.add_argument("--min-batch", type=int, metavar="N", help="default 1")
    b.add_argument(
        "--opt-batch",
        type=int,
        metavar="N",
        help="batch TensorRT tunes for (default 8); with --dla-core the profile is "
        "static at this batch",
    )
    b.add_argument("--max-batch", type=int, metavar="N", help="default 32")
    o = p.add_argument_group("other")
    o.add_argument(
        "--workspace-mb",
        type=int,
        metavar="MB",
        help="builder workspace limit (default 1024)",
    )
    o.add_argument(
        "--dla-core",
        type=int,
        metavar="N",
        help="build for DLA core N (Xavier, Orin NX, AGX Orin), GPU fallback on; the "
        "layers that fall back are reported",
    )
    o.add_argument("--sparse", action="store_true", help="allow 2:4 structured-sparse kernels")
    o.add_argument(
        "--timing-cache",
        metavar="FILE",
        help="load tactic timings from FILE when it exists and save them back (not the "
        "engine's nor the model's file)",
    )
    o.add_argument("--verbose", action="store_true", help="print TensorRT's warnings")
    o.add_argument(
        "--json",
        action="store_true",
        help="print the build report as JSON (with --sidecar-for: the sidecar written)",
    )
    o.add_argument(
        "--sidecar-for",
        metavar="ENGINE",
        help="only write ENGINE.json from MODEL.onnx's metadata (an engine built with trtexec); "
        "it builds nothing, so no build option goes with it",
    )
    p.set_defaults(func=run)


# dest -> default of the options that only a build uses (None in the parser: "not given")
BUILD_DEFAULTS: dict[str, Any] = {"out": None, "force": False, "precision": "fp32",
                                  "calib_cache": None, "target": None, "min_batch": 1,
                                  "opt_batch": 8, "max_batch": 32, "workspace_mb": 1024,
                                  "dla_core": None, "sparse": False, "timing_cache": None,
                                  "verbose": False}  # fmt: skip


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _regular_files(args: argparse.Namespace) -> None:
    """A pipe, device or socket named as an input, said so (the library said "no such ONNX
    model", "no such engine file", "no such calibration cache": the path exists)."""
    from edge_fer.errors import UserError

    for path in (args.onnx, args.sidecar_for, args.calib_cache):
        if path and os.path.exists(path) and not os.path.isdir(path) and not os.path.isfile(path):
            raise UserError(f"{path}: not a regular file (a pipe, device or socket)")


def _timing_cache_not_the_sidecar(args: argparse.Namespace) -> None:
    """--timing-cache naming the engine's sidecar, each file said in its place: the library's
    words read "the sidecar of --out x.engine.json and --timing-cache x.engine.json are the
    same file", as if --out were the .json."""
    from edge_fer.backends.trt_common import sidecar_path
    from edge_fer.errors import UserError

    if not args.timing_cache:
        return
    if args.out is not None:
        engine, lead = Path(args.out), f"--out {args.out}"
    else:  # the default name follows the layout: the library's own check says it otherwise
        from edge_fer.export.engine import default_engine_path, quant_layout

        try:
            qdq = os.path.isfile(args.onnx) and quant_layout(args.onnx) == "tensorrt"
        except Exception:  # noqa: BLE001 - not a model: the build's checks say what it is
            return
        engine = default_engine_path(args.onnx, args.precision, qdq)
        lead = f"the engine {engine}"
    side = sidecar_path(engine)
    if os.path.realpath(args.timing_cache) == os.path.realpath(side):
        raise UserError(
            f"--timing-cache {args.timing_cache} is the sidecar of {lead}, where the engine's "
            "facts go: give the timing cache another name"
        )


def run(args: argparse.Namespace) -> int:
    from edge_fer.errors import UserError
    from edge_fer.export.engine import BuildConfig, build_engine, write_sidecar_for

    _regular_files(args)
    if args.sidecar_for:
        # before: every build option was ignored without a word
        for dest in BUILD_DEFAULTS:
            given = getattr(args, dest)
            if given is not None and given is not False:  # (--dla-core 0 == False)
                raise UserError(
                    f"{_flag(dest)} is a build option; --sidecar-for builds nothing (it writes "
                    f"{args.sidecar_for}.json from the model's metadata)"
                )
        side = write_sidecar_for(
            args.sidecar_for, args.onnx, names={**FLAGS, "engine_path": "--sidecar-for"}
        )
        if args.json:  # what was written, as a build prints its report
            print(json.dumps(json.loads(side.read_text(encoding="utf-8")), indent=2))
        print(f"{PROG}: wrote {side}", file=sys.stderr)
        return 0
    for dest, default in BUILD_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)
    _timing_cache_not_the_sidecar(args)
    config = BuildConfig(precision=args.precision, target=args.target, min_batch=args.min_batch,
                         opt_batch=args.opt_batch, max_batch=args.max_batch,
                         workspace_mb=args.workspace_mb, dla_core=args.dla_core, sparse=args.sparse,
                         calib_cache=args.calib_cache, timing_cache=args.timing_cache,
                         verbose=args.verbose)  # fmt: skip
    # without --out the name follows what is built (a Q/DQ model: int8); the library's default
    # replaces an engine edge-fer built, the command only with --force
    names = FLAGS if args.out is not None else {**FLAGS, "engine_path": "the engine"}
    report = build_engine(args.onnx, args.out, config, force=args.force, names=names)
    if args.json:
        print(json.dumps(report, indent=2))
    b = report["batch"]
    kind = report["precision"]
    if kind == "int8" and report["fp16"]:  # a Q/DQ model built with --precision fp16
        kind = "int8 (fp16 for the unquantized layers)"
    print(
        f"{PROG}: TensorRT {report['tensorrt']} {kind} engine, batch "
        f"{b['min']}..{b['max']} (opt {b['opt']}), {report['bytes']:,} bytes in "
        f"{report['seconds']} s -> {report['engine']}",
        file=sys.stderr,
    )
    fallback = report.get("dla_gpu_fallback_layers")
    if fallback is not None:
        if fallback:
            print(
                f"{PROG}: {len(fallback)} layer(s) run on the GPU, not DLA core "
                f"{report['dla_core']}: {', '.join(fallback)}",
                file=sys.stderr,
            )
        else:
            print(f"{PROG}: every layer runs on DLA core {report['dla_core']}", file=sys.stderr)
    return 0
