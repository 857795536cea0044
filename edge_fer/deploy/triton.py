"""`edge-fer deploy triton`: a Triton Inference Server model repository for the classifier.

    OUT/
      <name>_onnx/config.pbtxt   platform "onnxruntime_onnx"
      <name>_onnx/labels.txt     one class per line (the output's label_filename)
      <name>_onnx/1/model.onnx   the model
      <name>_trt/config.pbtxt    platform "tensorrt_plan": 1/model.plan is built on the target
      <name>_trt/labels.txt        with `edge-fer build-engine` (engines are tied to a TensorRT
      <name>_trt/1/                version and GPU, so it cannot be made here)
      <name>.onnx, calib.cache   what the plan is built from (files: Triton loads folders only)
      triton_client.py           tritonclient HTTP example with edge-fer's preprocessing
      README.md

Dims in config.pbtxt exclude the batch (max_batch_size > 0 makes Triton add it): the input is
[C, S, S], the output [classes]. A model trained on eye-aligned faces (--align) is refused: the
client crops by the box alone (CLAHE it does itself; the eye localiser does not travel with it).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_fer.deploy.common import (
    ModelInfo,
    check_batch,
    check_calib_file,
    check_one_line,
    read_model,
    staged_folder,
)
from edge_fer.errors import UserError
from edge_fer.fileio import os_error_reason

PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
CLIENT = "triton_client.py"


@dataclass
class TritonOptions:
    name: str = "fer"  # model names: <name>_onnx, <name>_trt
    platforms: tuple[str, ...] = ("onnxruntime", "tensorrt")
    max_batch: int = 32
    queue_delay_us: int = 500  # dynamic batching: how long a request may wait for others
    instances: int = 1  # model instances on the GPU
    # None: not given (gpu, fp16), so that one given for a model the repository lacks is refused
    kind: str | None = None  # instance_group kind of the ONNX Runtime model: gpu | cpu
    target: str | None = None  # for the engine-build command and its precision check
    precision: str | None = None  # of the TensorRT plan: fp32 | fp16 | int8
    calib_cache: str | None = None  # INT8 plan from an FP32 model (default: the committed one)


def _check(info: ModelInfo, o: TritonOptions) -> None:
    from edge_fer.export.targets import PRECISIONS, check_target

    if not o.name or not all(c.isalnum() or c in "-_" for c in o.name):
        raise UserError(f"{o.name!r}: use letters, digits, '-' and '_' only", param="name")
    if not o.platforms or any(p not in PLATFORMS for p in o.platforms):
        raise UserError(
            f"must be some of {', '.join(PLATFORMS)}, got {o.platforms}", param="platforms"
        )
    check_batch(info, o.max_batch, "max_batch")
    if info.spec.align:  # the client crops by the box alone; the eye model does not travel
        raise UserError(
            f"{info.path}: the model expects eye-aligned faces (trained with --align), which "
            "the Triton client's box crops are not; deploy a model trained without --align"
        )
    if info.batch is not None:
        raise UserError(
            f"{info.path}: the model's batch is fixed at {info.batch}; Triton's batching needs "
            "a dynamic batch dimension (`edge-fer export` makes one)"
        )
    if o.queue_delay_us < 0:
        raise UserError(f"must be >= 0, got {o.queue_delay_us}", param="queue_delay_us")
    if o.instances < 1:
        raise UserError(f"must be >= 1, got {o.instances}", param="instances")
    if o.kind not in (None, "gpu", "cpu"):
        raise UserError(f"must be gpu or cpu, got {o.kind!r}", param="kind")
    precision = o.precision or "fp16"
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {o.precision!r}; choose one of {', '.join(PRECISIONS)}")
    if "tensorrt" in o.platforms:
        if o.target is not None:
            check_target(o.target, precision)
        if info.quantized == "cpu":
            raise UserError(
                f"{info.path} is the INT8 model for ONNX Runtime on CPU, which TensorRT cannot "
                "build; deploy the FP32 or the Q/DQ model (model.int8.qdq.onnx) for the plan, "
                "or pass --platform onnxruntime"
            )
        if info.quantized == "tensorrt" and precision != "int8":
            raise UserError(f"{info.path} is a Q/DQ INT8 model: use --precision int8")
    if o.calib_cache is not None:  # a cache that would not be used (as deploy deepstream says)
        why = (
            "there is no TensorRT plan (--platform onnxruntime)"
            if "tensorrt" not in o.platforms
            else f"the plan's precision is {precision}, not int8"
            if precision != "int8"
            else f"the model {info.path} is a Q/DQ model, which carries its own scales"
            if info.quantized == "tensorrt"
            else None
        )
        if why:
            raise UserError(f"{o.calib_cache} is not used: {why}", param="calib_cache")
    # before: the same repository with and without them, not a word
    if "tensorrt" not in o.platforms:
        for name in ("precision", "target"):
            if getattr(o, name) is not None:
                raise UserError(
                    "is the TensorRT plan's, and there is none (--platform onnxruntime)",
                    param=name,
                )
    if "onnxruntime" not in o.platforms and o.kind is not None:
        raise UserError(
            "is the ONNX Runtime model's, and there is none (--platform tensorrt); the plan "
            "always runs on the GPU",
            param="kind",
        )


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_pbtxt(info: ModelInfo, name: str, platform: str, o: TritonOptions) -> str:
    """The model configuration (protobuf text format) of one model of the repository."""
    c, h, w = info.input_dims
    kind = f"KIND_{_instance_kind(platform, o)}"
    return f"""# edge-fer expression classifier ({info.file_name}), written by `edge-fer deploy triton`
name: {_q(name)}
platform: {_q(platform)}
max_batch_size: {o.max_batch}
input [
  {{
    name: {_q(info.input_name)}
    data_type: TYPE_FP32
    dims: [ {c}, {h}, {w} ]
  }}
]
output [
  {{
    name: {_q(info.output_name)}
    data_type: TYPE_FP32
    dims: [ {len(info.classes)} ]
    label_filename: "labels.txt"
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {o.queue_delay_us}
}}
instance_group [
  {{
    kind: {kind}
    count: {o.instances}
  }}
]
"""


def _instance_kind(platform: str, o: TritonOptions) -> str:
    return "GPU" if platform == "tensorrt_plan" or o.kind == "gpu" else "CPU"


def _instances_text(dirs: dict[str, str], o: TritonOptions) -> str:
    """The README's words for the instance groups config_pbtxt writes (it said "one GPU
    instance" whatever --instances and --instance-kind asked for)."""
    n = o.instances
    kinds = {d: _instance_kind(p, o) for d, p in dirs.items()}

    def count(kind: str) -> str:
        return f"{'one' if n == 1 else n} {kind} instance{'s' if n > 1 else ''}"

    if len(set(kinds.values())) == 1:
        return count(next(iter(kinds.values()))) + (" each" if len(kinds) > 1 else "")
    return ", ".join(f"{count(k)} of `{d}`" for d, k in kinds.items())


def _calib_cache(info: ModelInfo, o: TritonOptions) -> Path | None:
    """The calibration cache an INT8 plan from an FP32 model is built with (copied as is:
    `edge-fer build-engine` rewrites its header for the TensorRT on the target)."""
    if "tensorrt" not in o.platforms or o.precision != "int8" or info.quantized == "tensorrt":
        return None
    from edge_fer.export.engine import default_calib_cache
    from edge_fer.quantize.trt_cache import check_cache, parse_cache

    if o.calib_cache:
        check_calib_file(o.calib_cache)
    cache = Path(o.calib_cache) if o.calib_cache else default_calib_cache(info.path)
    if cache is None:
        raise UserError(
            f"an INT8 plan from {info.path.name} needs its TensorRT calibration cache: pass "
            "--calib-cache FILE (`edge-fer calibrate` writes calib.cache), or deploy the Q/DQ "
            "model (model.int8.qdq.onnx)"
        )
    try:
        data = cache.read_bytes()
    except OSError as exc:
        raise UserError(
            f"{cache}: cannot read the calibration cache ({os_error_reason(exc)})"
        ) from None
    parsed = parse_cache(data, str(cache))
    try:
        import onnx  # noqa: F401
    except ImportError:
        return cache
    check_cache(parsed, os.fspath(info.path), str(cache))
    return cache


def build_command(info: ModelInfo, o: TritonOptions, onnx_rel: str, plan_rel: str) -> str:
    """The `edge-fer build-engine` command that makes the plan on the target."""
    parts = ["edge-fer build-engine", onnx_rel, f"--precision {o.precision}"]
    if o.precision == "int8" and info.quantized != "tensorrt":
        parts.append("--calib-cache calib.cache")
    if o.target:
        parts.append(f"--target {o.target}")
    opt = min(8, o.max_batch)
    parts += [f"--opt-batch {opt}", f"--max-batch {o.max_batch}", f"--out {plan_rel}"]
    return " ".join(parts)


def generate(
    out: str | os.PathLike[str],
    model: str | os.PathLike[str] | None = None,
    options: TritonOptions | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the model repository into `out` (all or nothing); returns what was written."""
    from edge_fer.deploy.templates import client_script, triton_readme

    o = options or TritonOptions()
    info = read_model(model)
    check_one_line(info.file_name, "model", "rename the file")  # named in config.pbtxt
    _check(info, o)
    o = dataclasses.replace(o, kind=o.kind or "gpu", precision=o.precision or "fp16")
    labels = "".join(f"{c}\n" for c in info.classes)
    dirs: dict[str, str] = {}
    onnx_name = f"{o.name}_onnx"
    trt_name = f"{o.name}_trt"
    build_cmd = None
    cache = _calib_cache(info, o)
    src_onnx = f"{o.name}.onnx"
    inputs = [("model", info.path), ("calibration cache", cache)]
    with staged_folder(out, force, inputs) as w:
        if "onnxruntime" in o.platforms:
            dirs[onnx_name] = PLATFORMS["onnxruntime"]
            w.copy(f"{onnx_name}/1/model.onnx", info.path)
            w.text(f"{onnx_name}/config.pbtxt", config_pbtxt(info, onnx_name, dirs[onnx_name], o))
            w.text(f"{onnx_name}/labels.txt", labels)
        if "tensorrt" in o.platforms:
            dirs[trt_name] = PLATFORMS["tensorrt"]
            w.copy(src_onnx, info.path)
            if cache is not None:
                w.copy("calib.cache", cache)
            w.text(f"{trt_name}/config.pbtxt", config_pbtxt(info, trt_name, dirs[trt_name], o))
            w.text(f"{trt_name}/labels.txt", labels)
            w.folder(f"{trt_name}/1")
            build_cmd = build_command(info, o, src_onnx, f"{trt_name}/1/model.plan")
        first = onnx_name if onnx_name in dirs else trt_name
        w.text(CLIENT, client_script(info, first, o.max_batch), executable=True)
        readme = triton_readme(
            info, o.name, dirs, o.max_batch, build_cmd, CLIENT, _instances_text(dirs, o)
        )
        w.text("README.md", readme)
        files = sorted(w.files)
    return {
        "out": str(out),
        "files": files,
        "models": dirs,
        "build_command": build_cmd,
        "model": str(info.path),
    }
