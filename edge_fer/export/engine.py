"""Build a TensorRT engine from an exported ONNX classifier (on the device that will run it).

    from edge_fer.export.engine import BuildConfig, build_engine
    build_engine("fer.onnx", "fer.fp16.engine", BuildConfig(precision="fp16"))

Every build option lives in one `BuildConfig` (as Polygraphy's CreateConfig): precision,
target, workspace, batch profile, DLA core, sparsity, timing cache, calibration cache. The
engine gets one optimization profile over the batch dimension; with a DLA core it is static
(min = opt = max: DLA has no dynamic shapes, and a dynamic profile would send every layer to
the GPU). Before anything is parsed or built: the model must carry edge-fer's preprocessing
metadata (an engine without it cannot be run), and the outputs must replace nothing they
must not (`check_engine_outputs`). Nothing is written until the build succeeded: then the
engine, its sidecar `<engine>.json` (the ONNX metadata plus what the engine is tied to:
TensorRT, CUDA, L4T, GPU, compute capability, build options, hashes) and the timing cache.

Precision, by TensorRT version:

- fp32: always.
- fp16: the FP16 builder flag on 8.x/10.x. TensorRT 11 removed it (networks are strongly
  typed): convert the ONNX model to FP16 first (ModelOpt AutoCast) and build that as fp32.
- int8 from a Q/DQ model (explicit quantization, the TensorRT layout `edge-fer export --int8`
  writes as model.int8.qdq.onnx): the INT8 flag on 8.x/10.x, nothing on 11 (the only INT8 route
  there). Such a model builds INT8 whatever was asked: fp32 is recorded (and named) int8, fp16
  means INT8 with FP16 for the layers left unquantized. The ONNX Runtime CPU layout (uint8
  activations, non-zero zero points) is refused.
- int8 from a calibration cache (implicit quantization, TensorRT <= 10): the cache's header is
  rewritten in memory for the running TensorRT, its tensor names checked against the model; a
  calibrator that only replays it is attached.

Needs the `tensorrt` Python package, imported inside `build_engine`; pycuda is optional (it
supplies the GPU name, compute capability and CUDA version for the sidecar).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_fer.backends.trt_common import (
    REBUILD_HINT,
    TrtLog,
    check_sidecar_ours,
    dims,
    file_sha256,
    is_jetson,
    is_our_sidecar,
    make_logger,
    onnx_metadata,
    platform_facts,
    require_tensorrt,
    sidecar_bytes,
    sidecar_path,
    trt_features,
)
from edge_fer.errors import UserError
from edge_fer.export.targets import PRECISIONS, check_target, device_problem
from edge_fer.fileio import (
    check_collisions,
    first_line,
    inside,
    names_folder,
    os_error_reason,
    write_bytes,
)

if TYPE_CHECKING:
    import tensorrt as trt

QDQ_FILE = "model.int8.qdq.onnx"  # what `edge-fer export --int8` / `calibrate` write for TensorRT
QDQ_HINT = (
    f"use the TensorRT Q/DQ model ({QDQ_FILE}, written by `edge-fer export --int8` or "
    "`edge-fer calibrate`)"
)
BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "fer_default.onnx"
# the bundled model's calibration cache, shipped in the package (a copy of the committed
# calibration/fer_default/calib.cache; tests/test_build_engine.py keeps the two identical)
BUNDLED_CALIB_CACHE = BUNDLED_MODEL.with_name("fer_default.calib.cache")
# how messages name the paths: the parameters of build_engine / BuildConfig; the CLI passes its
# flags instead
PATH_NAMES = {
    "onnx_path": "onnx_path",
    "engine_path": "engine_path",
    "timing_cache": "timing_cache",
    "calib_cache": "calib_cache",
}


@dataclass
class BuildConfig:
    """Everything that decides what engine a build makes (and so its cache name).

    precision      "fp32", "fp16" or "int8"
    target         a row of edge_fer.export.targets.TARGETS, checked before the build, or None
    min/opt/max_batch  the batch dimension's optimization profile (opt clamped into [min, max]);
                   with dla_core set the profile is static at opt_batch
    workspace_mb   builder scratch memory limit
    dla_core       build for that DLA core (Xavier/Orin), GPU fallback for what DLA cannot run
    sparse         allow 2:4 structured-sparse kernels (Ampere and later)
    calib_cache    TensorRT calibration cache for implicit INT8 (TensorRT <= 10)
    timing_cache   file to load tactic timings from and save them to (speeds up rebuilds;
                   does not change what is built, so not part of the fingerprint)
    verbose        print TensorRT's warnings
    """

    precision: str = "fp32"
    target: str | None = None
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_mb: int = 1024
    dla_core: int | None = None
    sparse: bool = False
    calib_cache: str | None = None
    timing_cache: str | None = None
    verbose: bool = False
    _calib_sha256: str | None = field(default=None, repr=False)

    def check(self) -> None:
        """Validate what needs no TensorRT (UserError naming the parameter)."""
        if self.precision not in PRECISIONS:
            raise UserError(
                f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}", param="precision"
            )
        from numbers import Integral

        for name in ("calib_cache", "timing_cache"):  # 3 was a TypeError in Path()
            v = getattr(self, name)
            if v is None:
                continue
            path = os.fspath(v) if isinstance(v, (str, os.PathLike)) else None
            if not isinstance(path, str) or not path:  # bytes, a number, "" (the folder ".")
                raise UserError(f"must be a file's path, got {v!r}", param=name)
            # a device or folder: TensorRT's parse and build ran first, then /dev/null was
            # read as an empty cache and a folder's save failed (the docs promise a refusal)
            if os.path.exists(path) and not os.path.isfile(path):
                kind = "a folder" if os.path.isdir(path) else "a pipe, device or socket"
                raise UserError(f"{path}: is {kind}, not a regular file", param=name)
            object.__setattr__(self, name, path)  # a Path as the str the sidecar records
        for name in ("min_batch", "opt_batch", "max_batch", "workspace_mb"):
            v = getattr(self, name)
            if not isinstance(v, Integral) or isinstance(v, bool) or v < 1:
                raise UserError(f"must be an integer >= 1, got {v!r}", param=name)
            object.__setattr__(self, name, int(v))  # numpy's ints: TensorRT's API takes int
        if self.workspace_mb > 1 << 20:  # a terabyte: a typo, not a GPU's memory
            raise UserError(
                f"must be at most {1 << 20}, got {self.workspace_mb}", param="workspace_mb"
            )
        if self.max_batch < self.min_batch:
            raise UserError(f"{self.max_batch} is below the minimum batch {self.min_batch}",
                            param="max_batch")  # fmt: skip
        bad_core = isinstance(self.dla_core, bool) or not isinstance(self.dla_core, Integral)
        if self.dla_core is not None and (bad_core or self.dla_core < 0):  # True was core 1
            raise UserError(f"must be 0 or more, got {self.dla_core!r}", param="dla_core")
        if self.dla_core is not None:
            object.__setattr__(self, "dla_core", int(self.dla_core))
        if not isinstance(self.sparse, bool):  # "yes"/"no" both read as true
            raise UserError(f"must be True or False, got {self.sparse!r}", param="sparse")
        if self.dla_core is not None and self.precision == "fp32":
            raise UserError(
                "DLA runs FP16 or INT8 only: precision must be fp16 or int8 with a DLA core"
            )
        if self.calib_cache is not None:
            if self.precision != "int8":
                raise UserError("is only used with precision int8", param="calib_cache")
            if not Path(self.calib_cache).is_file():
                raise UserError(
                    f"{self.calib_cache}: no such calibration cache", param="calib_cache"
                )
        if self.target is not None:
            check_target(self.target, self.precision, self.dla_core, self.sparse)

    def profile(self) -> tuple[int, int, int]:
        """(min, opt, max) batch; static at opt with a DLA core."""
        opt = min(max(self.opt_batch, self.min_batch), self.max_batch)
        if self.dla_core is not None:
            return (opt, opt, opt)
        return (self.min_batch, opt, self.max_batch)

    def calib_sha256(self) -> str | None:
        if self.calib_cache is None:
            return None
        if self._calib_sha256 is None:
            self._calib_sha256 = file_sha256(self.calib_cache)
        return self._calib_sha256

    def options(self) -> dict[str, Any]:
        """The build options as recorded in the sidecar and hashed into cache names."""
        lo, opt, hi = self.profile()
        return {
            "precision": self.precision,
            "target": self.target,
            "batch": {"min": lo, "opt": opt, "max": hi},
            "workspace_mb": self.workspace_mb,
            "dla_core": self.dla_core,
            "sparse": bool(self.sparse),
            "calib_cache_sha256": self.calib_sha256(),
        }

    def fingerprint(self, onnx_sha256: str, trt_version: str, gpu_tag: str) -> str:
        """A short hash of every build input: model, TensorRT, GPU and options."""
        blob = json.dumps([onnx_sha256, trt_version, gpu_tag, self.options()], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_calib_sha256", None)
        return d


def _model_metadata(src: Path) -> dict[str, str]:
    """onnx_metadata, after a look at the file: an empty file read as a model without
    metadata, and an image or checkpoint got the same words (eval says what they are)."""
    from edge_fer.classify import sniff_model_file

    sniff_model_file(src)
    return onnx_metadata(src)


def _no_model(src: Path) -> str:
    """Why `src` is no ONNX model file: a folder was "no such ONNX model", as if missing."""
    return "is a folder; give the ONNX model file in it" if src.is_dir() else "no such ONNX model"


def default_engine_path(
    onnx_path: str | os.PathLike[str], precision: str = "fp32", qdq: bool = False
) -> Path:
    """`models/fer.onnx` -> `models/fer.fp16.engine` (the precision in the name). `qdq`: a
    Q/DQ model, whose engine is INT8 whatever was asked: `.int8.engine`, or `.int8-fp16.engine`
    for fp16 (FP16 for the layers left unquantized)."""
    p = Path(onnx_path)
    if qdq:
        precision = "int8-fp16" if precision == "fp16" else "int8"
    return p.with_name(f"{p.stem}.{precision}.engine")


def _as_qdq(cfg: BuildConfig) -> BuildConfig:
    """The config of a Q/DQ model's build: its nodes make it INT8, so fp32 (the same engine as
    int8) is recorded as int8; fp16 stays (it adds FP16 kernels for unquantized layers)."""
    return dataclasses.replace(cfg, precision="int8") if cfg.precision == "fp32" else cfg


def cached_engine_name(
    onnx_path: str | os.PathLike[str],
    onnx_sha256: str,
    trt_version: str,
    gpu_tag: str,
    config: BuildConfig,
) -> str:
    """`fer.onnx` -> `fer.1a2b3c4d.trt10.3.0.sm87.fp16.b32.5e6f7a8b.engine`: model hash,
    TensorRT, GPU, precision, batch limit and a hash of every build option (calibration cache,
    sparsity, workspace, DLA core, profile, target) all in the name."""
    dla = f".dla{config.dla_core}" if config.dla_core is not None else ""
    return (
        f"{Path(onnx_path).stem}.{onnx_sha256[:8]}.trt{trt_version}.{gpu_tag}.{config.precision}"
        f".b{config.profile()[2]}{dla}.{config.fingerprint(onnx_sha256, trt_version, gpu_tag)}"
        ".engine"
    )


# -- the ONNX model's quantization layout ---------------------------------------------------


def quant_layout(onnx_path: str | os.PathLike[str]) -> str | None:
    """None (no QuantizeLinear), "tensorrt" (symmetric int8, zero points 0) or "cpu" (uint8
    activations or non-zero zero points: ONNX Runtime's CPU layout, which TensorRT rejects).
    Needs the onnx package; without it, None (TensorRT's parser then decides). UserError for
    a file onnx cannot load."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return None
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001  DecodeError, OSError...: a user's file, one line
        raise UserError(f"{onnx_path}: not a loadable ONNX model ({first_line(exc)})") from None
    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant" and n.output}
    found = False
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        found = True
        if len(node.input) < 3 or not node.input[2]:
            continue  # no zero point: uint8 by ONNX's default
        zp = node.input[2]
        if zp in inits:
            arr = numpy_helper.to_array(inits[zp])
        elif zp in consts:
            arr = numpy_helper.to_array(consts[zp].attribute[0].t)
        else:
            continue
        if arr.dtype.kind == "u" or bool((arr != 0).any()):
            return "cpu"
    if found:
        # QuantizeLinear without a zero point is uint8 (ONNX's default): the CPU layout too
        for node in model.graph.node:
            if node.op_type == "QuantizeLinear" and (len(node.input) < 3 or not node.input[2]):
                return "cpu"
        return "tensorrt"
    return None


def model_spec(onnx_path: str | os.PathLike[str], meta: dict[str, str] | None = None) -> Any:
    """The model's PreprocessSpec (from `meta`, else read from the file); UserError naming the
    model when its edge-fer metadata is missing or unusable: an engine of it could not be run
    (the runtime takes the classes and the preprocessing from there)."""
    from edge_fer.preprocess import PreprocessSpec

    meta = onnx_metadata(onnx_path) if meta is None else meta
    try:
        spec = PreprocessSpec.from_metadata(meta)
        if not spec.classes:
            raise UserError("model metadata names no classes")
    except UserError as exc:
        raise UserError(
            f"{onnx_path}: {exc}; an engine of it could not be run (export the model with "
            "`edge-fer export`)"
        ) from None
    return spec


def check_engine_outputs(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    *,
    timing_cache: str | os.PathLike[str] | None = None,
    calib_cache: str | os.PathLike[str] | None = None,
    force: bool | None = None,
    names: Mapping[str, str] | None = None,
) -> None:
    """UserError, before anything is parsed or built, when the build would replace what it
    must not:

    - an output (the engine, its sidecar, the timing cache) that is an input (the model, the
      calibration cache) or another output; a timing cache that exists is read and updated, by
      design;
    - a `<engine>.json` that is not an edge-fer sidecar: the user's, never replaced, even with
      `force`;
    - an existing engine_path unless `force`; with None (the library's default) an engine
      edge-fer built (with an edge-fer sidecar) is replaced: the backend's rebuild of its cache.

    `names`: how the messages name the paths (PATH_NAMES' keys; the CLI passes its flags)."""
    n = {**PATH_NAMES, **(names or {})}
    eng = Path(engine_path)
    if not eng.name or names_folder(engine_path) or eng.is_dir():
        raise UserError(
            f"{n['engine_path']} {engine_path}: is a folder; give the engine's file name"
        )
    outs = [
        (n["engine_path"], eng),
        (f"the sidecar of {n['engine_path']}", sidecar_path(eng)),
        (n["timing_cache"], timing_cache),
    ]
    ins = [(n["onnx_path"], onnx_path), (n["calib_cache"], calib_cache)]
    # check_collisions refuses any output in the bundled assets, but the backend caches the
    # bundled model's engine beside it (a source checkout): there the engine and sidecar count
    # as inputs of the others, and no file of the assets is replaced (below)
    beside_bundled = [o for o in outs[:2] if o[1] and inside(o[1], BUNDLED_MODEL.parent)]
    check_collisions([o for o in outs if o not in beside_bundled], ins + beside_bundled)
    check_sidecar_ours(eng, n["engine_path"])
    if os.path.lexists(eng):
        ours = is_our_sidecar(eng)
        if not ours and inside(eng, BUNDLED_MODEL.parent):
            raise UserError(
                f"{n['engine_path']} {eng}: is one of edge-fer's bundled files; give the "
                "engine another name"
            )
        if not (force or (force is None and ours)):
            raise UserError(
                f"is needed to replace {eng}, which exists (or give {n['engine_path']} "
                "another name)",
                param="force",
            )


def onnx_missing() -> bool:
    """True without the onnx package (a Jetson's runtime install): the graph's layout is then
    unknown until TensorRT has parsed it."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return True
    return False


def refuse_cpu_layout(onnx_path: str | os.PathLike[str]) -> str | None:
    """The layout of the model; UserError for the ONNX Runtime CPU layout."""
    layout = quant_layout(onnx_path)
    if layout == "cpu":
        raise UserError(
            f"{onnx_path} is the INT8 model for ONNX Runtime on CPU (uint8 activations, non-zero "
            f"zero points), which TensorRT cannot build; {QDQ_HINT}, or the FP32 model with "
            "--calib-cache"
        )
    return layout


def default_calib_cache(onnx_path: str | os.PathLike[str]) -> Path | None:
    """The bundled calibration cache when `onnx_path` is the bundled model, else None."""
    if Path(onnx_path).resolve() == BUNDLED_MODEL and BUNDLED_CALIB_CACHE.is_file():
        return BUNDLED_CALIB_CACHE
    return None


def prepare_calib_cache(
    cache_path: str | os.PathLike[str], onnx_path: str | os.PathLike[str], trt_version: str
) -> bytes:
    """The calibration cache ready for this TensorRT: header rewritten for `trt_version`, tensor
    names checked against the model (when the onnx package is there). UserError when it cannot
    be used, before anything is built."""
    from edge_fer.quantize import trt_cache

    p = Path(cache_path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise UserError(
            f"{p}: cannot read the calibration cache ({os_error_reason(exc)})"
        ) from None
    out = trt_cache.retarget_cache(data, trt_version, str(p))
    try:
        import onnx  # noqa: F401
    except ImportError:  # a board without onnx: TensorRT will reject a foreign cache itself
        return out
    trt_cache.check_cache(trt_cache.parse_cache(out, str(p)), os.fspath(onnx_path), str(p))
    return out


# -- TensorRT pieces ------------------------------------------------------------------------


def has_qdq(network: trt.INetworkDefinition) -> bool:
    """True when the parsed network has Quantize/Dequantize layers (explicit quantization)."""
    import tensorrt as trt

    kinds = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
    return any(network.get_layer(i).type in kinds for i in range(network.num_layers))


def make_cache_calibrator(cache: bytes, batch_size: int = 1) -> Any:
    """An IInt8EntropyCalibrator2 that replays an existing calibration cache and has no data:
    when the cache does not fit the network TensorRT asks for batches, gets none, and the build
    fails. TensorRT <= 10 only (the calibrator classes are gone in 11)."""
    import tensorrt as trt

    base: Any = trt.IInt8EntropyCalibrator2  # deprecated in 10.1, gone in 11

    class _CacheCalibrator(base):
        def __init__(self) -> None:
            base.__init__(self)  # pybind11 trampoline
            self.asked_for_data = False

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> None:  # None: "no more calibration data"
            self.asked_for_data = True

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, cache: Any) -> None:
            """Nothing to write: the cache came from a file."""

    return _CacheCalibrator()


def _load_timing_cache(tcfg: trt.IBuilderConfig, path: str | None) -> Any:
    if path is None:
        return None
    data = b""
    p = Path(path)
    if p.is_file():
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise UserError(f"{p}: cannot read the timing cache ({os_error_reason(exc)})") from None
    cache = tcfg.create_timing_cache(data)
    if cache is None:
        raise UserError(f"{p}: not a TensorRT timing cache (delete it to start a new one)")
    # ignore_mismatch=False: a cache from another GPU/TensorRT is refused, not used
    if not tcfg.set_timing_cache(cache, False):
        raise UserError(f"{p}: timing cache made on another GPU or TensorRT (delete it)")
    return cache


def _dla_fallback(network: trt.INetworkDefinition, tcfg: trt.IBuilderConfig) -> list[str]:
    """Layers DLA cannot run (they go to the GPU): 'name (TYPE)' each."""
    out = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not tcfg.can_run_on_DLA(layer):
            out.append(f"{layer.name} ({str(layer.type).split('.')[-1]})")
    return out


def _engine_dst(
    src: Path,
    given: str | os.PathLike[str],
    cfg: BuildConfig,
    force: bool | None,
    names: Mapping[str, str] | None,
) -> Path:
    # `given` as passed: Path() drops the trailing slash of "DIR/", and the engine was then
    # written as a file named DIR
    dst = Path(given)
    if names_folder(given) or dst.is_dir():
        n = {**PATH_NAMES, **(names or {})}
        raise UserError(
            f"{n['engine_path']} {os.fspath(given)}: is a folder; give the engine's file name"
        )
    if dst.resolve() == src.resolve():
        raise UserError(f"{dst}: the engine would overwrite the ONNX model")
    if dst.suffix.lower() == ".json":
        raise UserError(f"{dst}: give the engine file name, not its sidecar's")
    check_engine_outputs(
        src,
        dst,
        timing_cache=cfg.timing_cache,
        calib_cache=cfg.calib_cache,
        force=force,
        names=names,
    )
    return dst


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str] | None = None,
    config: BuildConfig | None = None,
    info: dict[str, Any] | None = None,
    *,
    force: bool | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Build `engine_path` (+ `<engine_path>.json`) from `onnx_path` with `config`; returns a
    report dict. `engine_path` None: `default_engine_path` beside the model, named by what the
    build makes (a Q/DQ model: int8). `info`: extra facts recorded in the sidecar. `force`,
    `names`: what an existing engine_path may be, how messages name the paths
    (`check_engine_outputs`)."""
    _check_build_args(onnx_path, engine_path, config, info, force, names)
    cfg = config or BuildConfig()
    src = Path(onnx_path)
    if not src.is_file():
        raise UserError(f"{src}: {_no_model(src)}")
    meta = _model_metadata(src)
    spec = model_spec(src, meta)  # first: an engine without it is useless, after minutes
    cfg.check()
    layout = refuse_cpu_layout(src)
    if cfg.precision == "int8" and layout != "tensorrt" and cfg.calib_cache is None:
        bundled = default_calib_cache(src)  # the bundled model brings its own cache
        if bundled is not None:
            cfg = dataclasses.replace(cfg, calib_cache=str(bundled))
    if layout == "tensorrt":  # a Q/DQ model builds INT8 whatever asked
        if cfg.target is not None:
            check_target(cfg.target, "int8", cfg.dla_core, cfg.sparse)
        cfg = _as_qdq(cfg)
    dst: Path | None = None
    if engine_path is not None:
        dst = _engine_dst(src, engine_path, cfg, force, names)
    elif layout is not None or not onnx_missing():
        named = default_engine_path(src, cfg.precision, layout == "tensorrt")
        dst = _engine_dst(src, named, cfg, force, names)
    # else: without the onnx package only TensorRT's parse tells a Q/DQ model: named after it
    version = require_tensorrt()
    feats = trt_features(version)
    here = platform_facts(version)
    if cfg.target is not None:
        cc = here.get("compute_capability")
        why = device_problem(cfg.target, cc, is_jetson(), here.get("gpu"))
        if why:
            raise UserError(f"target {cfg.target}: {why}")
    if cfg.precision == "fp16" and not feats.precision_flags:
        raise UserError(
            f"TensorRT {version} has no FP16 builder flag (removed in TensorRT 11: networks are "
            "strongly typed); convert the ONNX model to FP16 (NVIDIA ModelOpt AutoCast) and "
            "build that as fp32"
        )
    calib: bytes | None = None
    int8_mode = "qdq" if layout == "tensorrt" else None
    no_int8 = (
        f"{src}: INT8 needs a model with Q/DQ nodes or a calibration cache "
        f"(--calib-cache FILE); {QDQ_HINT}"
    )
    if cfg.precision == "int8" and layout != "tensorrt" and cfg.calib_cache is None:
        if not (layout is None and onnx_missing()):  # else: TensorRT's parse tells, below
            raise UserError(no_int8)
    elif cfg.precision == "int8" and layout != "tensorrt":
        assert cfg.calib_cache is not None
        if not feats.implicit_int8:
            raise UserError(
                f"{src}: TensorRT {version} has no calibration-cache INT8 (removed in TensorRT "
                f"11) and this model has no Q/DQ nodes; {QDQ_HINT}"
            )
        calib = prepare_calib_cache(cfg.calib_cache, src, version)
        int8_mode = "calibration-cache"
    elif cfg.calib_cache is not None:  # a Q/DQ model carries its scales
        raise UserError(f"{src} has Q/DQ nodes (its own INT8 scales): leave out --calib-cache")

    import tensorrt as trt

    log = TrtLog(cfg.verbose)
    logger = make_logger(log)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # noqa: BLE001  pybind11 raises when the factory returns null
        why = log.last_error() or first_line(exc)
        raise UserError(f"cannot create a TensorRT builder (no usable CUDA GPU?): {why}") from None
    # INT8 on a GPU without INT8 kernels (Jetson Nano, TX2) fails late or runs FP32: say so now.
    # platform_has_fast_int8 exists up to 10.x (deprecated in 10.5, removed in 11)
    fast_int8 = getattr(builder, "platform_has_fast_int8", None)
    if (int8_mode is not None or cfg.precision == "int8") and fast_int8 is False:
        raise UserError(
            f"this GPU ({here.get('gpu') or 'compute capability ' + str(here.get('compute_capability'))}"
            ") has no INT8 kernels (Jetson Nano and TX2 have none): build fp16 for it"
        )
    # 8.x: explicit batch must be asked for; 10.x: always explicit, the flag deprecated; 11: gone
    flags = (
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        if feats.explicit_batch_flag
        else 0
    )
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(src)):
        n = parser.num_errors
        for i in range(n):
            print(
                f"{src}: TensorRT ONNX parser: {first_line(str(parser.get_error(i)), 400)}",
                file=sys.stderr,
            )
        raise UserError(
            f"{src}: TensorRT {version} could not parse this ONNX model "
            f"({n} error{'s' if n != 1 else ''}, printed above)"
        )
    if network.num_inputs != 1:
        raise UserError(f"{src}: expected a model with one input, got {network.num_inputs}")
    inp = network.get_input(0)
    shape = dims(inp.shape)
    if len(shape) != 4 or any(d < 1 for d in shape[1:]):
        raise UserError(f"{src}: expected an NCHW input with fixed C, H, W, got {shape}")
    ch, px = spec.channels, spec.input_size
    if tuple(shape[1:]) != (ch, px, px):  # the runtime feeds it what the metadata says
        raise UserError(
            f"{src}: input {inp.name!r} has shape {list(shape)}, but the model's metadata says "
            f"(N, {ch}, {px}, {px}); re-export it with `edge-fer export`"
        )
    qdq = has_qdq(network)
    if qdq and int8_mode is None:
        int8_mode = "qdq"  # the onnx package was missing: TensorRT's view of the graph
        cfg = _as_qdq(cfg)
    if cfg.precision == "int8" and int8_mode is None:
        raise UserError(no_int8)
    if dst is None:
        dst = _engine_dst(src, default_engine_path(src, cfg.precision, qdq), cfg, force, names)

    tcfg = builder.create_builder_config()
    pool = int(cfg.workspace_mb) << 20
    if feats.memory_pool_api:
        tcfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, pool)
    else:  # TensorRT 8.0-8.3 (JetPack 4.6): removed in 10, absent from the stubs
        legacy: Any = tcfg
        legacy.max_workspace_size = pool
    lo, opt, hi = cfg.profile()
    profile = None
    if shape[0] < 0:
        chw = list(shape[1:])
        profile = builder.create_optimization_profile()
        profile.set_shape(
            inp.name, trt.Dims([lo] + chw), trt.Dims([opt] + chw), trt.Dims([hi] + chw)
        )
        tcfg.add_optimization_profile(profile)
        batches = {"min": lo, "opt": opt, "max": hi}
    else:
        batches = {"min": shape[0], "opt": shape[0], "max": shape[0]}

    flag: Any = trt.BuilderFlag  # FP16 / INT8 are gone from 11's enum (and its stubs' future)
    if int8_mode is not None and feats.precision_flags:
        tcfg.set_flag(flag.INT8)  # 8.x/10.x pick INT8 kernels only with the flag, Q/DQ or not
    if calib is not None:
        legacy_cfg: Any = tcfg  # int8_calibrator / set_calibration_profile: removed in 11
        legacy_cfg.int8_calibrator = make_cache_calibrator(calib, batch_size=opt)
        if profile is not None:  # dynamic shapes: calibration needs its own profile
            legacy_cfg.set_calibration_profile(profile)
    if cfg.precision == "fp16":
        tcfg.set_flag(flag.FP16)
    if cfg.sparse:
        tcfg.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    fallback: list[str] | None = None
    if cfg.dla_core is not None:
        cores = int(builder.num_DLA_cores)
        if cfg.dla_core >= cores:
            raise UserError(
                f"no DLA core {cfg.dla_core} on this device ({cores} DLA core"
                f"{'s' if cores != 1 else ''}; Jetson Xavier/Orin NX/AGX Orin have 2, Orin Nano "
                "none)"
            )
        tcfg.default_device_type = trt.DeviceType.DLA
        tcfg.DLA_core = int(cfg.dla_core)
        tcfg.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        fallback = _dla_fallback(network, tcfg)
    timing = _load_timing_cache(tcfg, cfg.timing_cache)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, tcfg)
    seconds = time.perf_counter() - t0
    if serialized is None:
        log.print_errors()
        hint = ""
        if int8_mode == "calibration-cache":
            hint = f"; if the calibration cache was made for another model, {QDQ_HINT}"
        raise UserError(
            f"{src}: TensorRT {version} could not build the engine "
            f"({log.last_error() or 'see the errors above'}){hint}"
        )

    precision = "int8" if int8_mode is not None else cfg.precision
    facts: dict[str, Any] = dict(here)
    facts.update(
        {
            "engine": dst.name,
            "source_onnx": src.name,
            "onnx_sha256": file_sha256(src),
            "calib_cache_sha256": cfg.calib_sha256(),
            "precision": precision,
            "fp16": cfg.precision == "fp16",
            "int8": int8_mode,
            "input": inp.name,
            "input_shape": list(shape),
            "batch": batches,
            "dla_core": cfg.dla_core,
            "dla_gpu_fallback_layers": fallback,
            "sparse": bool(cfg.sparse),
            "workspace_mb": int(cfg.workspace_mb),
            "target": cfg.target,
            "build_options": cfg.options(),
            "built_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    facts.update(info or {})
    side_doc = sidecar_bytes(meta, **facts)
    # write only now, engine first; a failed sidecar takes the engine with it. The sidecar
    # check again: the user may have put a file there during the build
    side = check_sidecar_ours(dst, {**PATH_NAMES, **(names or {})}["engine_path"])
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(dst, memoryview(serialized))
        try:
            write_bytes(side, side_doc)
        except BaseException:
            dst.unlink()
            raise
    except OSError as exc:
        raise UserError(f"{dst}: cannot write the engine ({os_error_reason(exc)})") from None
    if timing is not None and cfg.timing_cache is not None:
        try:
            write_bytes(cfg.timing_cache, memoryview(tcfg.get_timing_cache().serialize()))
        except OSError as exc:
            print(
                f"warning: {cfg.timing_cache}: timing cache not saved ({os_error_reason(exc)})",
                file=sys.stderr,
            )
    report = dict(facts)
    report.update(
        {
            "engine": str(dst),
            "sidecar": str(side),
            "bytes": dst.stat().st_size,
            "seconds": round(seconds, 1),
            "tensorrt_errors": [first_line(e) for e in log.errors],
        }
    )
    return report


def _check_build_args(
    onnx_path: Any, engine_path: Any, config: Any, info: Any, force: Any, names: Any
) -> None:
    """build_engine's arguments by type, before anything is read: a dict for config was an
    AttributeError on .check, force="no" replaced the engine, and an `info` that is not a
    mapping failed only after the build's minutes."""
    if config is not None and not isinstance(config, BuildConfig):
        hint = ": BuildConfig(**config) makes one" if isinstance(config, Mapping) else ""
        raise UserError(
            f"must be an edge_fer.export.engine.BuildConfig, got {type(config).__name__}{hint}",
            param="config",
        )
    for param, v in (("onnx_path", onnx_path), ("engine_path", engine_path)):
        if not isinstance(v, (str, os.PathLike)) and (v is not None or param == "onnx_path"):
            raise UserError(f"must be a file path, got {v!r}", param=param)
    if force is not None and not isinstance(force, bool):
        raise UserError(f"must be True, False or None, got {force!r}", param="force")
    for param, v in (("info", info), ("names", names)):
        if v is not None and not isinstance(v, Mapping):
            raise UserError(f"must be a dict, got {type(v).__name__}", param=param)


_NOT_ENGINE_SUFFIXES = (".onnx", ".json", ".safetensors", ".cache", ".pico", ".md", ".txt")


def write_sidecar_for(
    engine_path: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str],
    *,
    names: Mapping[str, str] | None = None,
    **info: Any,
) -> Path:
    """Sidecar for an engine built elsewhere (trtexec): the ONNX model's metadata, this
    machine's facts when TensorRT is here, plus `info`. An edge-fer sidecar there is replaced,
    anything else of that name is refused; `names` as for `check_engine_outputs`."""
    from edge_fer.backends.trt_common import write_sidecar

    n = {**PATH_NAMES, **(names or {})}
    eng, src = Path(engine_path), Path(onnx_path)
    if not src.is_file():
        raise UserError(f"{src}: {_no_model(src)}")
    meta = _model_metadata(src)
    model_spec(src, meta)  # a sidecar without it serves no engine
    if not eng.is_file():
        raise UserError(f"{eng}: no such engine file")
    # A serialized engine has no documented magic to check; what it clearly is not is refused.
    if eng.samefile(src) or eng.suffix.lower() in _NOT_ENGINE_SUFFIXES:
        raise UserError(
            f"{eng}: is not a TensorRT engine (give the file trtexec wrote with --saveEngine)"
        )
    if eng.stat().st_size == 0:
        raise UserError(f"{eng}: is empty, not a TensorRT engine")
    check_collisions(
        [(f"the sidecar of {n['engine_path']}", sidecar_path(eng))],
        [(n["onnx_path"], src), (n["engine_path"], eng)],
    )
    check_sidecar_ours(eng, n["engine_path"])
    facts: dict[str, Any] = {}
    try:
        facts.update(platform_facts(require_tensorrt()))
    except UserError:  # written off the device: the TensorRT version is unknown here
        pass
    facts.update(
        {
            "engine": eng.name,
            "source_onnx": src.name,
            "onnx_sha256": file_sha256(src),
            "built_by": "trtexec or another tool",
        }
    )
    facts.update(info)
    return write_sidecar(eng, meta, **facts)


__all__ = [
    "BUNDLED_CALIB_CACHE",
    "PATH_NAMES",
    "REBUILD_HINT",
    "BuildConfig",
    "build_engine",
    "cached_engine_name",
    "check_engine_outputs",
    "default_calib_cache",
    "default_engine_path",
    "has_qdq",
    "make_cache_calibrator",
    "model_spec",
    "prepare_calib_cache",
    "quant_layout",
    "refuse_cpu_layout",
    "write_sidecar_for",
]
