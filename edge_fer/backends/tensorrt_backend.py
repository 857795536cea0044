"""TensorRT backend: run an exported classifier as a serialized TensorRT engine on an NVIDIA GPU.

    from edge_fer.backends import create_backend
    be = create_backend("tensorrt", "fer.fp16.engine")      # or "fer.onnx": build + cache
    probs = be.infer(x)                                      # float32 (N, 1, 48, 48) -> (N, C)

`TensorRTBackend(path, device=0, max_batch=None, ...)` opens

- a serialized engine (`.engine`, `.plan`, any name but `.onnx`), built on this device with this
  TensorRT version (engines are not portable across TensorRT versions or GPU models), or
- an exported `.onnx` model: it looks for an engine built from exactly that file (same SHA-256,
  same TensorRT version, same GPU, same precision and batch limit) next to the model or in the
  cache folder (`$EDGE_FER_CACHE/tensorrt`, default `~/.cache/edge-fer/tensorrt`), and builds one
  with `edge_fer.trt_build.build_engine` when there is none (once; minutes on a Jetson).

An engine file carries no ONNX metadata, so the preprocessing spec and class names travel in a
sidecar `<engine>.json` written next to it by the builder (`read_sidecar`, `write_sidecar`); for
an engine without one, the metadata of a sibling `.onnx` of the same stem is used.

TensorRT's Python API changed in 10.0: 8.x engines are driven through the binding API
(`execute_async_v2` with a list of device pointers), 10.x and later through the named-tensor API
(`set_tensor_address` + `execute_async_v3`); TensorRT 11 removed the binding API. The version is
read at run time (`trt_features`) and one of two small adapters (`_BindingIO`, `_TensorIO`) hides
the difference. Memory is pycuda's: page-locked host buffers and device buffers sized for the
largest batch of the engine's optimization profile, allocated once and reused, one CUDA stream,
asynchronous copies around the execution and one synchronisation per chunk.

`tensorrt` and `pycuda` are imported inside functions only, so importing this module never fails;
without them the backend raises a one-line `UserError`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_fer.backends.base import Backend
from edge_fer.errors import UserError

if TYPE_CHECKING:  # annotations only: never imported at run time from here
    import pycuda.driver as cuda
    import tensorrt as trt

NOT_AVAILABLE = (
    "TensorRT backend not available: install TensorRT (JetPack on Jetson, or NVIDIA's pip index) "
    "and pycuda"
)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
SIDECAR_FORMAT = "edge-fer/tensorrt-engine"
SIDECAR_VERSION = 1
DEFAULT_MAX_BATCH = 32
DEFAULT_OPT_BATCH = 8

# ILogger.Severity values, stable across TensorRT 8, 10 and 11
_SEV_ERROR = 1
_SEV_WARNING = 2


# -- versions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrtFeatures:
    """What a TensorRT version offers, from its version string alone (no TensorRT needed).

    api                 "bindings": 8.x, engine I/O by binding index (get_binding_index,
                        binding_is_input, set_binding_shape, execute_async_v2);
                        "tensors": 9 and later, I/O by tensor name (num_io_tensors,
                        get_tensor_name/mode, set_input_shape, set_tensor_address,
                        execute_async_v3). 8.5/8.6 have both; 8.x uses bindings so that one code
                        path covers 8.0-8.6 (JetPack 4.6-5.1).
    explicit_batch_flag create_network needs NetworkDefinitionCreationFlag.EXPLICIT_BATCH (8.x;
                        deprecated and ignored from 10.0 on, gone in 11)
    memory_pool_api     IBuilderConfig.set_memory_pool_limit (8.4+); older: max_workspace_size
    precision_flags     BuilderFlag.FP16 / INT8 exist (weakly typed networks; removed in 11)
    implicit_int8       INT8 calibrators (IInt8EntropyCalibrator2...; removed in 11: Q/DQ only)
    """

    version: str
    major: int
    minor: int
    api: str
    explicit_batch_flag: bool
    memory_pool_api: bool
    precision_flags: bool
    implicit_int8: bool


def trt_features(version: str) -> TrtFeatures:
    """'8.5.2.2' / '10.3.0' / '11.0.0' -> TrtFeatures. UserError for an unusable version."""
    m = re.match(r"\s*(\d+)\.(\d+)", str(version))
    if not m:
        raise UserError(f"cannot read the TensorRT version {version!r}")
    major, minor = int(m.group(1)), int(m.group(2))
    if major < 8:
        raise UserError(
            f"TensorRT {version} is too old: edge-fer needs TensorRT 8.0 or later (JetPack 4.6+)"
        )
    return TrtFeatures(
        version=str(version).strip(),
        major=major,
        minor=minor,
        api="bindings" if major == 8 else "tensors",
        explicit_batch_flag=major < 10,
        memory_pool_api=(major, minor) >= (8, 4),
        precision_flags=major < 11,
        implicit_int8=major < 11,
    )


def api_flavour(version: str) -> str:
    """The engine I/O API used with this TensorRT version: "bindings" (8.x) or "tensors"."""
    return trt_features(version).api


# -- imports ------------------------------------------------------------------------------------


def _first_line(exc: BaseException | str, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    line = text[0].strip() if text else (type(exc).__name__ if isinstance(exc, BaseException) else "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def require_tensorrt() -> str:
    """Check that the real TensorRT Python package is importable; returns its version.

    A bare `tensorrt/` folder of type stubs (what `pip install --no-deps tensorrt-stubs` leaves)
    imports as an empty namespace package, so the check looks for the API, not just the name.
    """
    try:
        mod = importlib.import_module("tensorrt")
    except Exception as exc:  # noqa: BLE001  ImportError, or OSError from a missing libnvinfer
        raise UserError(f"{NOT_AVAILABLE} (cannot import tensorrt: {_first_line(exc)})") from None
    version = getattr(mod, "__version__", None)
    if not isinstance(version, str) or not hasattr(mod, "Runtime"):
        raise UserError(f"{NOT_AVAILABLE} (the tensorrt found here is only type stubs)")
    return version


def require_pycuda() -> None:
    """Check that pycuda's driver module is importable (it needs the CUDA driver library)."""
    try:
        mod = importlib.import_module("pycuda.driver")
    except Exception as exc:  # noqa: BLE001  ImportError, or a CUDA driver library error
        raise UserError(f"{NOT_AVAILABLE} (cannot import pycuda: {_first_line(exc)})") from None
    if not hasattr(mod, "mem_alloc"):
        raise UserError(f"{NOT_AVAILABLE} (the pycuda found here is only type stubs)")


class TrtLog:
    """Collects TensorRT's log: errors are kept for our one-line messages (and printed when
    verbose), warnings printed when verbose, the rest dropped."""

    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self.errors: list[str] = []

    def add(self, severity: int, msg: str) -> None:
        if severity <= _SEV_ERROR:
            self.errors.append(msg.strip())
        if self.verbose and severity <= _SEV_WARNING:
            print(f"TensorRT: {msg.strip()}", file=sys.stderr)

    def last_error(self) -> str:
        return _first_line(self.errors[-1]) if self.errors else ""

    def print_errors(self, prefix: str = "TensorRT: ") -> None:
        if self.verbose:  # already printed as they came
            return
        for e in self.errors:
            for line in e.splitlines():
                if line.strip():
                    print(f"{prefix}{line.strip()}", file=sys.stderr)


def make_logger(log: TrtLog) -> trt.ILogger:
    """A trt.ILogger that forwards to `log`. Keep a reference while TensorRT objects live."""
    import tensorrt as trt

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # the pybind11 trampoline needs the explicit call

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            log.add(int(severity), msg)

    return _Logger()


# -- files: hashes, sidecars, cache -------------------------------------------------------------


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike[str], data: bytes | memoryview) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    """`fer.fp16.engine` -> `fer.fp16.engine.json`."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def write_sidecar(
    engine_path: str | os.PathLike[str], metadata: dict[str, str], **info: Any
) -> Path:
    """Write `<engine>.json`: the ONNX metadata_props (`metadata`) plus build facts (`info`:
    tensorrt version, precision, profile, source ONNX and its sha256...). Returns its path."""
    doc: dict[str, Any] = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION}
    doc.update({k: v for k, v in info.items() if k not in ("format", "version", "metadata")})
    doc["metadata"] = {str(k): str(v) for k, v in metadata.items()}
    out = sidecar_path(engine_path)
    atomic_write(out, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    return out


def read_sidecar(engine_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sidecar of an engine as a dict (its "metadata" a str -> str dict), or None when the
    engine has none. UserError for a sidecar that is not ours or is malformed."""
    sp = sidecar_path(engine_path)
    if not sp.is_file():
        return None
    try:
        doc = json.loads(sp.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{sp}: unreadable engine sidecar ({_first_line(exc)})") from None
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
        raise UserError(f"{sp}: not an edge-fer engine sidecar (no \"format\": \"{SIDECAR_FORMAT}\")")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise UserError(f"{sp}: engine sidecar has no str -> str \"metadata\" object")
    return doc


def onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """metadata_props of an ONNX model (with the onnx package when installed, else ONNX Runtime)."""
    p = Path(path)
    try:
        import onnx
    except ImportError:
        onnx = None  # type: ignore[assignment]
    try:
        if onnx is not None:
            model = onnx.load(str(p), load_external_data=False)
            return {e.key: e.value for e in model.metadata_props}
        import onnxruntime as ort

        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        return dict(sess.get_modelmeta().custom_metadata_map or {})
    except Exception as exc:  # noqa: BLE001  onnx/onnxruntime raise many kinds
        raise UserError(f"{p}: not a loadable ONNX model ({_first_line(exc)})") from None


def engine_metadata(engine_path: str | os.PathLike[str]) -> dict[str, str]:
    """Metadata for an engine: its sidecar's, else that of a sibling ONNX of the same stem
    (`fer.fp16.engine` -> `fer.fp16.onnx`, `fer.onnx`), else {}."""
    doc = read_sidecar(engine_path)
    if doc is not None:
        return dict(doc["metadata"])
    p = Path(engine_path)
    parts = p.name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        cand = p.with_name(".".join(parts[:k]) + ".onnx")
        if cand.is_file():
            try:
                return onnx_metadata(cand)
            except UserError:
                return {}
    return {}


def cache_dir() -> Path:
    """Where engines built from ONNX models go when the model's folder is not writable."""
    base = os.environ.get("EDGE_FER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "edge-fer"
    )
    return Path(base) / "tensorrt"


def cached_engine_name(
    onnx_path: str | os.PathLike[str],
    onnx_sha256: str,
    trt_version: str,
    gpu_tag: str,
    precision: str,
    max_batch: int,
    dla_core: int | None = None,
) -> str:
    """`fer.onnx` -> `fer.1a2b3c4d.trt10.3.0.sm87.fp16.b32.engine` (ONNX content, TensorRT
    version, GPU, precision and batch limit all in the name: engines are built for exactly one)."""
    dla = f".dla{dla_core}" if dla_core is not None else ""
    return (
        f"{Path(onnx_path).stem}.{onnx_sha256[:8]}.trt{trt_version}.{gpu_tag}.{precision}"
        f".b{max_batch}{dla}.engine"
    )


def _writable_dir(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(d, os.W_OK)


# -- I/O adapters -------------------------------------------------------------------------------


def _dims(d: Any) -> tuple[int, ...]:
    """trt.Dims (or a tuple) -> tuple of ints. Dims has __len__/__getitem__ but no __iter__."""
    return tuple(int(d[i]) for i in range(len(d)))


class _EngineIO:
    """The few engine / execution-context operations the backend needs, on one TensorRT API."""

    flavour = "?"
    inputs: list[str]
    outputs: list[str]

    def shape(self, name: str) -> tuple[int, ...]:
        raise NotImplementedError

    def dtype(self, name: str) -> np.dtype[Any]:
        raise NotImplementedError

    def profile(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) shapes of input `name` in optimization profile 0."""
        raise NotImplementedError

    def set_input_shape(self, ctx: trt.IExecutionContext, name: str, shape: tuple[int, ...]) -> bool:
        raise NotImplementedError

    def context_shape(self, ctx: trt.IExecutionContext, name: str) -> tuple[int, ...]:
        raise NotImplementedError

    def bind(self, ctx: trt.IExecutionContext, addresses: dict[str, int]) -> None:
        raise NotImplementedError

    def execute(self, ctx: trt.IExecutionContext, stream_handle: int) -> bool:
        raise NotImplementedError


class _TensorIO(_EngineIO):
    """TensorRT >= 10 (and 9): tensors by name; execute_async_v3 on the addresses set."""

    flavour = "tensors"

    def __init__(self, engine: trt.ICudaEngine):
        import tensorrt as trt

        self.engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def shape(self, name: str) -> tuple[int, ...]:
        return _dims(self.engine.get_tensor_shape(name))

    def dtype(self, name: str) -> np.dtype[Any]:
        import tensorrt as trt

        return np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))

    def profile(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        lo, opt, hi = self.engine.get_tensor_profile_shape(name, 0)
        return _dims(lo), _dims(opt), _dims(hi)

    def set_input_shape(self, ctx: trt.IExecutionContext, name: str, shape: tuple[int, ...]) -> bool:
        return bool(ctx.set_input_shape(name, shape))

    def context_shape(self, ctx: trt.IExecutionContext, name: str) -> tuple[int, ...]:
        return _dims(ctx.get_tensor_shape(name))

    def bind(self, ctx: trt.IExecutionContext, addresses: dict[str, int]) -> None:
        for name, addr in addresses.items():
            if not ctx.set_tensor_address(name, addr):
                raise RuntimeError(f"TensorRT refused the device address of tensor {name!r}")

    def execute(self, ctx: trt.IExecutionContext, stream_handle: int) -> bool:
        return bool(ctx.execute_async_v3(stream_handle))


class _BindingIO(_EngineIO):
    """TensorRT 8.x: bindings by index; execute_async_v2 on a list of device pointers.

    The binding API was removed in TensorRT 10, so the type stubs (10.x) do not describe it:
    the engine and context are used through `Any` here, on purpose.
    """

    flavour = "bindings"

    def __init__(self, engine: trt.ICudaEngine):
        eng: Any = engine  # 8.x-only attributes below: not in the 10.x stubs
        self.engine = eng
        if bool(getattr(eng, "has_implicit_batch_dimension", False)):
            raise UserError(
                "this engine was built with an implicit batch dimension (TensorRT 7 style); "
                "rebuild it from the ONNX model (explicit batch)"
            )
        profiles = max(1, int(eng.num_optimization_profiles))
        per_profile = int(eng.num_bindings) // profiles
        self.num_bindings = int(eng.num_bindings)
        self.index: dict[str, int] = {}
        self.inputs, self.outputs = [], []
        for i in range(per_profile):  # profile 0's bindings come first
            name = str(eng.get_binding_name(i))
            self.index[name] = i
            (self.inputs if eng.binding_is_input(i) else self.outputs).append(name)
        self.bindings: list[int] = [0] * self.num_bindings

    def shape(self, name: str) -> tuple[int, ...]:
        return _dims(self.engine.get_binding_shape(self.index[name]))

    def dtype(self, name: str) -> np.dtype[Any]:
        import tensorrt as trt

        return np.dtype(trt.nptype(self.engine.get_binding_dtype(self.index[name])))

    def profile(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        lo, opt, hi = self.engine.get_profile_shape(0, self.index[name])
        return _dims(lo), _dims(opt), _dims(hi)

    def set_input_shape(self, ctx: trt.IExecutionContext, name: str, shape: tuple[int, ...]) -> bool:
        c: Any = ctx
        return bool(c.set_binding_shape(self.index[name], shape))

    def context_shape(self, ctx: trt.IExecutionContext, name: str) -> tuple[int, ...]:
        c: Any = ctx
        return _dims(c.get_binding_shape(self.index[name]))

    def bind(self, ctx: trt.IExecutionContext, addresses: dict[str, int]) -> None:
        for name, addr in addresses.items():
            self.bindings[self.index[name]] = int(addr)

    def execute(self, ctx: trt.IExecutionContext, stream_handle: int) -> bool:
        c: Any = ctx
        return bool(c.execute_async_v2(self.bindings, stream_handle))


def make_io(engine: trt.ICudaEngine, features: TrtFeatures) -> _EngineIO:
    return _TensorIO(engine) if features.api == "tensors" else _BindingIO(engine)


# -- the backend --------------------------------------------------------------------------------


class TensorRTBackend(Backend):
    """A classifier as a TensorRT engine on CUDA GPU `device`.

    model_path  a serialized engine, or an exported .onnx (an engine is found or built, cached)
    device      CUDA device index
    max_batch   largest batch per execution (default: the engine's profile maximum; for an ONNX
                model, the profile maximum of the engine built, default 32). Larger inputs are
                split; smaller ones below the profile minimum are zero-padded.
    fp16, int8, calib_cache, dla_core, sparse, workspace_mb
                build options when model_path is an .onnx (see edge_fer.trt_build.build_engine)
    rebuild     build the engine from the .onnx even when a cached one matches
    verbose     print TensorRT's warnings (errors always end up in the UserError raised)
    threads     accepted for interface compatibility with the CPU backends; unused
    """

    name = "tensorrt"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        device: int = 0,
        max_batch: int | None = None,
        fp16: bool = False,
        int8: bool = False,
        calib_cache: str | os.PathLike[str] | None = None,
        dla_core: int | None = None,
        sparse: bool = False,
        workspace_mb: int = 1024,
        rebuild: bool = False,
        verbose: bool = False,
        threads: int | None = None,
    ):
        self._closed = True  # close() is safe whatever happens below
        self._lock = threading.Lock()
        self._cuctx: cuda.Context | None = None
        self._allocs: list[cuda.DeviceAllocation] = []
        self._host_in: np.ndarray | None = None
        self._host_out: np.ndarray | None = None
        self._context: trt.IExecutionContext | None = None
        self._engine: trt.ICudaEngine | None = None
        self._runtime: trt.Runtime | None = None
        self._stream: cuda.Stream | None = None
        self.path = Path(model_path)
        self.metadata = {}
        version = require_tensorrt()  # first: without TensorRT nothing else matters
        require_pycuda()
        self.features = trt_features(version)
        self.trt_version = version
        if max_batch is not None and int(max_batch) < 1:
            raise UserError(f"max_batch must be at least 1, got {max_batch}")
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such model file")

        import pycuda.driver as cuda

        try:
            cuda.init()
            count = cuda.Device.count()
        except cuda.Error as exc:
            raise UserError(f"no usable CUDA GPU ({_first_line(exc)})") from None
        if count < 1:
            raise UserError("no CUDA GPU found")
        if not 0 <= int(device) < count:
            raise UserError(f"no CUDA device {device}: this machine has {count} (0..{count - 1})")
        self.device = int(device)
        dev = cuda.Device(self.device)
        self.gpu_name = dev.name()
        cc = dev.compute_capability()
        self.gpu_tag = f"sm{cc[0]}{cc[1]}"
        self._cuctx = dev.retain_primary_context()  # the context TensorRT's runtime API uses
        self._cuctx.push()
        try:
            self._open(
                max_batch, fp16=fp16, int8=int8, calib_cache=calib_cache, dla_core=dla_core,
                sparse=sparse, workspace_mb=workspace_mb, rebuild=rebuild, verbose=verbose,
            )  # fmt: skip
        except cuda.Error as exc:
            self._release(pushed=True)
            raise UserError(f"{self.path}: CUDA error ({_first_line(exc)})") from None
        except BaseException:
            self._release(pushed=True)
            raise
        cuda.Context.pop()
        self._closed = False

    # -- setup ----------------------------------------------------------------------------------
    def _open(
        self,
        max_batch: int | None,
        *,
        fp16: bool,
        int8: bool,
        calib_cache: str | os.PathLike[str] | None,
        dla_core: int | None,
        sparse: bool,
        workspace_mb: int,
        rebuild: bool,
        verbose: bool,
    ) -> None:
        import pycuda.driver as cuda
        import tensorrt as trt

        from_onnx = self.path.suffix.lower() == ".onnx"
        if from_onnx:
            self.engine_path = self._engine_for_onnx(
                max_batch or DEFAULT_MAX_BATCH, fp16=fp16, int8=int8, calib_cache=calib_cache,
                dla_core=dla_core, sparse=sparse, workspace_mb=workspace_mb, rebuild=rebuild,
                verbose=verbose,
            )  # fmt: skip
        else:
            self.engine_path = self.path
        sidecar = read_sidecar(self.engine_path)
        if from_onnx:  # the engine was built from self.path: its metadata is the truth
            self.metadata = onnx_metadata(self.path)
        elif sidecar is not None:
            self.metadata = dict(sidecar["metadata"])
        else:
            self.metadata = engine_metadata(self.engine_path)
        self.sidecar = sidecar or {}

        data = self.engine_path.read_bytes()
        if not data:
            raise UserError(f"{self.engine_path}: empty file, not a TensorRT engine")
        self._log = TrtLog(verbose)
        self._logger = make_logger(self._log)  # must outlive the runtime and engine
        self._runtime = trt.Runtime(self._logger)
        dla = dla_core if dla_core is not None else self.sidecar.get("dla_core")
        if dla is not None:  # a DLA engine deserialises on the DLA core it is told
            self._runtime.DLA_core = int(dla)
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise UserError(self._load_error())
        self._engine = engine
        io = make_io(engine, self.features)
        self._io = io
        if len(io.inputs) != 1 or not io.outputs:
            raise UserError(
                f"{self.engine_path}: expected an engine with one input and an output, got "
                f"{len(io.inputs)} inputs and {len(io.outputs)} outputs"
            )
        self._in = io.inputs[0]
        self._out = "probs" if "probs" in io.outputs else io.outputs[0]
        in_shape = io.shape(self._in)
        if len(in_shape) != 4 or any(d < 1 for d in in_shape[1:]):
            raise UserError(
                f"{self.engine_path}: expected an NCHW input with fixed C, H, W, got {in_shape}"
            )
        self._in_dtype = io.dtype(self._in)
        if self._in_dtype.kind != "f":
            raise UserError(
                f"{self.engine_path}: expected a floating-point input, got {self._in_dtype}"
            )
        chw = in_shape[1:]
        if in_shape[0] < 0:  # dynamic batch: the optimization profile bounds it
            lo, opt, hi = io.profile(self._in)
            pmin, popt, pmax = int(lo[0]), int(opt[0]), int(hi[0])
            self.input_shape = (None, chw[0], chw[1], chw[2])
        else:
            pmin = popt = pmax = int(in_shape[0])
            self.input_shape = (pmax, chw[0], chw[1], chw[2])
        self.profile = (pmin, popt, pmax)
        if self.input_shape[0] is None:
            limit = min(int(max_batch), pmax) if max_batch else pmax
            if limit < pmin:
                raise UserError(
                    f"max_batch {max_batch} is below the engine's smallest batch {pmin}"
                )
        else:
            limit = pmax
        self.batch_limit = limit
        self._chw = chw

        self._context = engine.create_execution_context()
        if self._context is None:
            raise UserError(
                f"{self.engine_path}: TensorRT could not create an execution context "
                f"(out of GPU memory?) {self._log.last_error()}".rstrip()
            )
        ctx = self._context
        full = (limit,) + chw
        if not io.set_input_shape(ctx, self._in, full):
            raise UserError(f"{self.engine_path}: the engine refuses input shape {full}")
        self._cur_batch = limit
        out_dtype = io.dtype(self._out)
        # buffers for the largest batch, allocated once: page-locked host, device, one stream
        self._host_in = cuda.pagelocked_empty(full, self._in_dtype)
        d_in = cuda.mem_alloc(self._host_in.nbytes)
        self._allocs.append(d_in)
        addresses = {self._in: int(d_in)}
        per_sample = 0
        for name in io.outputs:
            shp = io.context_shape(ctx, name)
            if any(d < 0 for d in shp):
                raise UserError(f"{self.engine_path}: output {name!r} has no fixed shape ({shp})")
            vol = int(np.prod(shp)) if shp else 1
            nbytes = max(1, vol * io.dtype(name).itemsize)
            alloc = cuda.mem_alloc(nbytes)
            self._allocs.append(alloc)
            addresses[name] = int(alloc)
            if name == self._out:
                if not shp or shp[0] != limit:
                    raise UserError(
                        f"{self.engine_path}: output {name!r} of shape {shp} is not per sample "
                        f"of a batch of {limit}"
                    )
                per_sample = vol // limit
                self._d_out = alloc
        self.num_outputs = per_sample or None
        self._host_out = cuda.pagelocked_empty((limit, max(1, per_sample)), out_dtype)
        self._d_in = d_in
        io.bind(ctx, addresses)
        self._stream = cuda.Stream()

    def _engine_for_onnx(
        self,
        max_batch: int,
        *,
        fp16: bool,
        int8: bool,
        calib_cache: str | os.PathLike[str] | None,
        dla_core: int | None,
        sparse: bool,
        workspace_mb: int,
        rebuild: bool,
        verbose: bool,
    ) -> Path:
        """A cached engine built from exactly this ONNX here, or a fresh build."""
        from edge_fer.trt_build import build_engine

        digest = file_sha256(self.path)
        precision = "int8" if int8 else "fp16" if fp16 else "fp32"
        name = cached_engine_name(
            self.path, digest, self.trt_version, self.gpu_tag, precision, max_batch, dla_core
        )
        places = [self.path.parent / name, cache_dir() / name]
        if not rebuild:
            for cand in places:
                doc = None
                if cand.is_file():
                    try:
                        doc = read_sidecar(cand)
                    except UserError:
                        doc = None
                if (
                    doc is not None
                    and doc.get("onnx_sha256") == digest
                    and doc.get("tensorrt") == self.trt_version
                ):
                    return cand
        target = next((p for p in places if _writable_dir(p.parent)), None)
        if target is None:
            raise UserError(
                f"cannot write a TensorRT engine next to {self.path} nor in {cache_dir()}; "
                "set EDGE_FER_CACHE to a writable folder"
            )
        print(
            f"edge-fer: building a TensorRT {precision} engine for {self.path.name} on "
            f"{self.gpu_name} (once; can take minutes) -> {target}",
            file=sys.stderr,
        )
        build_engine(
            self.path, target, fp16=fp16, int8=int8, calib_cache=calib_cache, min_batch=1,
            opt_batch=min(DEFAULT_OPT_BATCH, max_batch), max_batch=max_batch,
            workspace_mb=workspace_mb, dla_core=dla_core, sparse=sparse, verbose=verbose,
            info={"gpu": self.gpu_name, "gpu_tag": self.gpu_tag},
        )  # fmt: skip
        return target

    def _load_error(self) -> str:
        p = self.engine_path
        built = self.sidecar.get("tensorrt")
        here = f"TensorRT {self.trt_version} on {self.gpu_name}"
        if built and built != self.trt_version:
            return (
                f"{p}: engine built with TensorRT {built}, this is {here}; rebuild it here from "
                "the ONNX model (python export/build_engine.py MODEL.onnx)"
            )
        gpu = self.sidecar.get("gpu_tag")
        if gpu and gpu != self.gpu_tag:
            return (
                f"{p}: engine built for another GPU ({self.sidecar.get('gpu', gpu)}), this is "
                f"{here}; rebuild it here from the ONNX model "
                "(python export/build_engine.py MODEL.onnx)"
            )
        why = self._log.last_error()
        return (
            f"{p}: not a TensorRT engine for {here}: not an engine file, or built by another "
            f"TensorRT version or for another GPU; rebuild it here from the ONNX model "
            f"(python export/build_engine.py MODEL.onnx)" + (f" [TensorRT: {why}]" if why else "")
        )

    # -- inference ------------------------------------------------------------------------------
    def infer(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise UserError(f"expected a batch of shape (N, C, H, W), got shape {x.shape}")
        if tuple(x.shape[1:]) != tuple(self.input_shape[1:]):
            raise UserError(
                f"input of shape {tuple(x.shape)} does not fit the model's "
                f"(N, {', '.join(str(d) for d in self.input_shape[1:])})"
            )
        n = int(x.shape[0])
        if n == 0:
            return np.zeros((0, self.num_outputs or 0), np.float32)
        import pycuda.driver as cuda

        with self._lock:
            if self._closed or self._cuctx is None:
                raise RuntimeError("backend is closed")
            self._cuctx.push()
            try:
                step = self.batch_limit
                outs = [self._run(x[i : i + step]) for i in range(0, n, step)]
            finally:
                cuda.Context.pop()
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        """One execution: k <= batch_limit samples, padded up to the profile minimum (or the
        fixed batch) with zeros."""
        import pycuda.driver as cuda

        assert self._host_in is not None and self._host_out is not None
        assert self._context is not None and self._stream is not None
        k = int(chunk.shape[0])
        m = max(k, self.profile[0]) if self.input_shape[0] is None else self.batch_limit
        self._host_in[:k] = chunk  # casts to the engine's input dtype when that is not float32
        if m > k:
            self._host_in[k:m] = 0
        if m != self._cur_batch:
            if not self._io.set_input_shape(self._context, self._in, (m,) + self._chw):
                raise RuntimeError(f"TensorRT refused input shape {(m,) + self._chw}")
            self._cur_batch = m
        stream = self._stream
        cuda.memcpy_htod_async(self._d_in, self._host_in[:m], stream)
        if not self._io.execute(self._context, stream.handle):
            stream.synchronize()
            raise RuntimeError(
                f"TensorRT execution failed on a batch of {m} {self._log.last_error()}".rstrip()
            )
        cuda.memcpy_dtoh_async(self._host_out[:m], self._d_out, stream)
        stream.synchronize()
        return np.asarray(self._host_out[:k], dtype=np.float32).reshape(k, -1).copy()

    # -- teardown -------------------------------------------------------------------------------
    def _release(self, pushed: bool = False) -> None:
        """Free GPU objects in dependency order inside our CUDA context, then let it go."""
        if self._cuctx is None:
            return
        import pycuda.driver as cuda

        try:
            if not pushed:
                self._cuctx.push()
            for a in self._allocs:
                try:
                    a.free()
                except cuda.Error:
                    pass
            self._allocs = []
            self._host_in = self._host_out = None  # page-locked memory is freed in-context
            self._stream = None
            self._context = None
            self._engine = None
            self._runtime = None
        finally:
            try:
                cuda.Context.pop()
            except cuda.Error:
                pass
            # dropping pycuda's handle releases the retained primary context when it is
            # collected (an explicit detach() from another thread would leak or misorder it)
            self._cuctx = None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110  never raise from a finaliser
            pass

    def __repr__(self) -> str:
        return (
            f"<TensorRTBackend {getattr(self, 'engine_path', self.path)} TensorRT "
            f"{getattr(self, 'trt_version', '?')} input {getattr(self, 'input_shape', '?')}>"
        )


def create(model_path: str | os.PathLike[str], **opts: Any) -> TensorRTBackend:
    """`create_backend("tensorrt", path, **opts)` lands here."""
    return TensorRTBackend(model_path, **opts)


__all__ = [
    "NOT_AVAILABLE",
    "TensorRTBackend",
    "TrtFeatures",
    "api_flavour",
    "create",
    "engine_metadata",
    "onnx_metadata",
    "read_sidecar",
    "require_pycuda",
    "require_tensorrt",
    "sidecar_path",
    "trt_features",
    "write_sidecar",
]
