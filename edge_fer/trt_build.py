"""Build a TensorRT engine from an exported ONNX classifier (on the device that will run it).

    from edge_fer.trt_build import build_engine
    build_engine("fer.onnx", "fer.fp16.engine", fp16=True)      # + fer.fp16.engine.json

The engine gets one optimization profile over the batch dimension (min/opt/max batch) and is
written atomically, with a sidecar `<engine>.json` carrying the ONNX metadata (preprocessing,
classes, provenance) that the engine format has no room for; `edge_fer.classify.Classifier`
and the TensorRT backend read it back.

Precision, by TensorRT version:

- FP32: always.
- FP16 (`fp16=True`): the FP16 builder flag on TensorRT 8.x/10.x. TensorRT 11 removed it
  (networks are strongly typed): convert the ONNX model to FP16 first and build that.
- INT8 with a Q/DQ model (QuantizeLinear/DequantizeLinear nodes, explicit quantization): the
  INT8 flag on 8.x/10.x, nothing at all on 11; no calibration data.
- INT8 without Q/DQ nodes (implicit quantization, TensorRT <= 10 only): needs an existing
  calibration cache (`calib_cache`, e.g. from `trtexec --int8 --calib=...` or an earlier
  build); a calibrator that only reads that cache is attached. No calibration runs here.
  TensorRT 11 removed implicit INT8: build the Q/DQ model instead.

Needs the `tensorrt` Python package, imported inside `build_engine`, so that importing this
module works everywhere; pycuda is not needed to build.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_fer.backends.tensorrt_backend import (
    TrtLog,
    _dims,
    _first_line,
    atomic_write,
    file_sha256,
    make_logger,
    onnx_metadata,
    require_tensorrt,
    sidecar_path,
    trt_features,
    write_sidecar,
)
from edge_fer.errors import UserError

if TYPE_CHECKING:
    import tensorrt as trt

QDQ_HINT = (
    "use the Q/DQ INT8 model (an ONNX with QuantizeLinear/DequantizeLinear nodes) instead"
)


def precision_name(fp16: bool = False, int8: bool = False) -> str:
    return "int8" if int8 else "fp16" if fp16 else "fp32"


def default_engine_path(onnx_path: str | os.PathLike[str], fp16: bool = False,
                        int8: bool = False) -> Path:  # fmt: skip
    """`models/fer.onnx` -> `models/fer.fp16.engine` (the precision in the name)."""
    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.{precision_name(fp16, int8)}.engine")


def _check_args(
    onnx_path: Path,
    engine_path: Path,
    int8: bool,
    calib_cache: str | os.PathLike[str] | None,
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    workspace_mb: int,
    dla_core: int | None,
) -> int:
    """Validate everything that needs no TensorRT; returns opt_batch clamped to [min, max]."""
    if not onnx_path.is_file():
        raise UserError(f"{onnx_path}: no such ONNX model")
    if engine_path.resolve() == onnx_path.resolve():
        raise UserError(f"{engine_path}: the engine would overwrite the ONNX model")
    if engine_path.suffix.lower() == ".json":
        raise UserError(f"{engine_path}: give the engine file name, not its sidecar's")
    if not (isinstance(min_batch, int) and isinstance(max_batch, int) and isinstance(opt_batch, int)):
        raise UserError("batch sizes must be integers")
    if min_batch < 1:
        raise UserError(f"min batch {min_batch} must be at least 1")
    if max_batch < min_batch:
        raise UserError(f"max batch {max_batch} is below min batch {min_batch}")
    if workspace_mb < 1:
        raise UserError(f"workspace {workspace_mb} MiB must be at least 1")
    if dla_core is not None and dla_core < 0:
        raise UserError(f"DLA core {dla_core} must be 0 or more")
    if calib_cache is not None:
        if not int8:
            raise UserError("a calibration cache is only used with INT8 (--int8)")
        if not Path(calib_cache).is_file():
            raise UserError(f"{calib_cache}: no such calibration cache")
    return min(max(opt_batch, min_batch), max_batch)


def has_qdq(network: trt.INetworkDefinition) -> bool:
    """True when the parsed network has Quantize/Dequantize layers (explicit quantization)."""
    import tensorrt as trt

    kinds = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
    return any(network.get_layer(i).type in kinds for i in range(network.num_layers))


def make_cache_calibrator(cache: bytes, batch_size: int = 1) -> trt.IInt8Calibrator:
    """An IInt8EntropyCalibrator2 that replays an existing calibration cache and has no data:
    when the cache does not match the network TensorRT asks for batches, gets none, and the
    build fails (reported as a stale cache)."""
    import tensorrt as trt

    class _CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 trampoline
            self.asked_for_data = False

        def get_batch_size(self) -> int:
            return batch_size

        # TensorRT's protocol: None means "no more calibration data"; the stubs say list[int]
        def get_batch(self, names: list[str]) -> None:  # type: ignore[override]
            self.asked_for_data = True

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, cache: Any) -> None:
            """Nothing to write: the cache came from a file and is unchanged."""

    return _CacheCalibrator()


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    fp16: bool = False,
    int8: bool = False,
    calib_cache: str | os.PathLike[str] | None = None,
    min_batch: int = 1,
    opt_batch: int = 8,
    max_batch: int = 32,
    workspace_mb: int = 1024,
    dla_core: int | None = None,
    sparse: bool = False,
    verbose: bool = False,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build `engine_path` (+ `<engine_path>.json`) from `onnx_path`; returns a report dict.

    min/opt/max_batch: the optimization profile of the batch dimension (ignored for a model
    exported with a fixed batch); opt is clamped into [min, max].
    workspace_mb: builder scratch memory limit. dla_core: build for that DLA core (Jetson
    Xavier/Orin; needs fp16 or int8; layers DLA cannot run fall back to the GPU).
    sparse: let TensorRT use 2:4 structured-sparse kernels where weights allow (Ampere+).
    info: extra facts recorded in the sidecar (e.g. the GPU).
    """
    src = Path(onnx_path)
    dst = Path(engine_path)
    opt_batch = _check_args(src, dst, int8, calib_cache, min_batch, opt_batch, max_batch,
                            workspace_mb, dla_core)  # fmt: skip
    version = require_tensorrt()
    feats = trt_features(version)
    import tensorrt as trt

    if fp16 and not feats.precision_flags:
        raise UserError(
            f"TensorRT {version} has no FP16 builder flag (removed in TensorRT 11: networks are "
            "strongly typed); convert the ONNX model to FP16 (e.g. NVIDIA ModelOpt AutoCast) "
            "and build that without --fp16"
        )
    if dla_core is not None and not (fp16 or int8):
        raise UserError("DLA runs FP16 or INT8 only: add --fp16 or --int8 with --dla-core")

    log = TrtLog(verbose)
    logger = make_logger(log)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # noqa: BLE001  pybind11 raises when the C++ factory returns null (no GPU...)
        why = log.last_error() or _first_line(exc)
        raise UserError(f"cannot create a TensorRT builder (no usable CUDA GPU?): {why}") from None
    # 8.x: explicit batch must be asked for; 10.x: always explicit, the flag is deprecated;
    # 11: the flag is gone
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if feats.explicit_batch_flag else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(src)):
        n = parser.num_errors
        for i in range(n):
            print(f"{src}: TensorRT ONNX parser: {_first_line(str(parser.get_error(i)), 400)}",
                  file=sys.stderr)  # fmt: skip
        raise UserError(
            f"{src}: TensorRT {version} could not parse this ONNX model "
            f"({n} error{'s' if n != 1 else ''}, printed above)"
        )
    if network.num_inputs != 1:
        raise UserError(f"{src}: expected a model with one input, got {network.num_inputs}")
    inp = network.get_input(0)
    shape = _dims(inp.shape)
    if len(shape) != 4 or any(d < 1 for d in shape[1:]):
        raise UserError(f"{src}: expected an NCHW input with fixed C, H, W, got {shape}")

    config = builder.create_builder_config()
    pool = int(workspace_mb) << 20
    if feats.memory_pool_api:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, pool)
    else:  # TensorRT 8.0-8.3 (JetPack 4.6): the attribute removed in 10, absent from the stubs
        cfg: Any = config
        cfg.max_workspace_size = pool

    dynamic = shape[0] < 0
    profile = None
    if dynamic:
        chw = list(shape[1:])
        profile = builder.create_optimization_profile()
        profile.set_shape(
            inp.name,
            trt.Dims([min_batch] + chw),
            trt.Dims([opt_batch] + chw),
            trt.Dims([max_batch] + chw),
        )
        config.add_optimization_profile(profile)
        batches = {"min": min_batch, "opt": opt_batch, "max": max_batch}
    else:
        batches = {"min": shape[0], "opt": shape[0], "max": shape[0]}

    qdq = has_qdq(network)
    int8_mode = None
    if qdq:
        # explicit quantization: the scales are in the graph. 8.x/10.x still need the INT8 flag
        # to pick INT8 kernels; 11 is strongly typed and needs nothing
        int8_mode = "qdq"
        if feats.precision_flags:
            config.set_flag(trt.BuilderFlag.INT8)
    elif int8:
        if not feats.implicit_int8:
            raise UserError(
                f"{src}: TensorRT {version} has no implicit INT8 calibration (removed in "
                f"TensorRT 11) and this model has no Q/DQ nodes; {QDQ_HINT}"
            )
        if calib_cache is None:
            raise UserError(
                f"{src}: INT8 for a model without Q/DQ nodes needs a TensorRT calibration cache "
                f"(--calib-cache FILE); or {QDQ_HINT}"
            )
        cache = Path(calib_cache).read_bytes()
        if not cache:
            raise UserError(f"{calib_cache}: empty calibration cache")
        int8_mode = "calibration-cache"
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = make_cache_calibrator(cache, batch_size=opt_batch)
        config.int8_calibrator = calibrator
        if profile is not None:  # dynamic shapes: calibration needs its own profile
            config.set_calibration_profile(profile)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if sparse:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    if dla_core is not None:
        cores = int(builder.num_DLA_cores)
        if dla_core >= cores:
            raise UserError(
                f"no DLA core {dla_core} on this device ({cores} DLA core"
                f"{'s' if cores != 1 else ''}; Jetson Xavier/Orin have 2, Orin Nano none)"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        log.print_errors()
        hint = ""
        if int8_mode == "calibration-cache":
            hint = (f"; if the calibration cache {calib_cache} was made for another model or "
                    f"TensorRT version, {QDQ_HINT}")  # fmt: skip
        raise UserError(
            f"{src}: TensorRT {version} could not build the engine "
            f"({log.last_error() or 'see the errors above'}){hint}"
        )

    meta = onnx_metadata(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dst, memoryview(serialized))
    facts: dict[str, Any] = {
        "engine": dst.name,
        "source_onnx": src.name,
        "onnx_sha256": file_sha256(src),
        "tensorrt": version,
        "precision": precision_name(fp16, int8 or qdq),
        "fp16": bool(fp16),
        "int8": int8_mode,
        "input": inp.name,
        "input_shape": list(shape),
        "batch": batches,
        "dla_core": dla_core,
        "sparse": bool(sparse),
        "workspace_mb": int(workspace_mb),
        "built_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    facts.update(info or {})
    side = write_sidecar(dst, meta, **facts)
    report = dict(facts)
    report.update({
        "engine": str(dst),
        "sidecar": str(side),
        "bytes": dst.stat().st_size,
        "seconds": round(seconds, 1),
        "tensorrt_errors": [_first_line(e) for e in log.errors],
    })  # fmt: skip
    return report


def write_sidecar_for(
    engine_path: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str],
    **info: Any,
) -> Path:
    """Sidecar for an engine built elsewhere (trtexec): the ONNX model's metadata plus `info`.
    Needs no TensorRT."""
    eng, src = Path(engine_path), Path(onnx_path)
    if not eng.is_file():
        raise UserError(f"{eng}: no such engine file")
    if not src.is_file():
        raise UserError(f"{src}: no such ONNX model")
    facts: dict[str, Any] = {
        "engine": eng.name,
        "source_onnx": src.name,
        "onnx_sha256": file_sha256(src),
        "built_by": "trtexec or another tool",
    }
    facts.update(info)
    return write_sidecar(eng, onnx_metadata(src), **facts)


__all__ = [
    "build_engine",
    "default_engine_path",
    "has_qdq",
    "make_cache_calibrator",
    "precision_name",
    "sidecar_path",
    "write_sidecar_for",
]
