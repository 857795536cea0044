"""TensorRT backend: run an exported classifier as a serialized TensorRT engine on an NVIDIA GPU.

    from edge_fer.backends import create_backend
    be = create_backend("tensorrt", "fer.fp16.engine")      # or "fer.onnx": build + cache
    probs = be.infer(x)                                      # float32 (N, 1, 48, 48) -> (N, C)

`TensorRTBackend(path, device=0, max_batch=None, precision=None, ...)` opens

- a serialized engine (`.engine`, `.plan`, any name but `.onnx`), built on this device with this
  TensorRT version (engines are not portable across TensorRT versions or GPU models); its
  sidecar's TensorRT version and GPU compute capability are checked before deserialising, or
- an exported `.onnx` model: it looks for an engine built from exactly that file with exactly
  these build options (`edge_fer.export.engine.cached_engine_name`) next to the model or in the
  cache folder (`$EDGE_FER_CACHE/tensorrt`, default `~/.cache/edge-fer/tensorrt`), and builds one
  with `edge_fer.export.engine.build_engine` when there is none (once; minutes on a Jetson).
  precision: "fp32", "fp16" or "int8" (default: fp16 on a Jetson, fp32 elsewhere); int8 takes
  a Q/DQ model as it is, a plain model with `calib_cache` (the bundled model: the committed
  edge_fer/assets/fer_default.calib.cache, shipped in the package).

An engine file carries no ONNX metadata, so the preprocessing spec and class names travel in a
sidecar `<engine>.json` written next to it by the builder; for an engine without one, the
metadata of a sibling `.onnx` of the same stem is used.

TensorRT's Python API changed in 10.0: 8.x engines are driven through the binding API
(`execute_async_v2` with a list of device pointers), 10.x and later through the named-tensor API
(`set_tensor_address` + `execute_async_v3`); the binding API was removed in 10.0. The version is
read at run time (`trt_features`) and one of two small adapters (`_BindingIO`, `_TensorIO`) hides
the difference. Memory is pycuda's: page-locked host buffers and device buffers sized for the
largest batch of the engine's optimization profile, allocated once and reused, one CUDA stream,
asynchronous copies around the execution and one synchronisation per chunk. `close()` frees all
of it, the execution context, the engine and the runtime inside the CUDA context.

`tensorrt` and `pycuda` are imported inside functions only, so importing this module never fails;
without them the backend raises a one-line `UserError`.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_fer.backends.base import Backend, BackendClosed
from edge_fer.backends.trt_common import (
    REBUILD_HINT,
    TrtFeatures,
    TrtLog,
    cache_dir,
    check_engine_facts,
    dims,
    engine_metadata,
    file_sha256,
    is_jetson,
    make_logger,
    onnx_metadata,
    platform_facts,
    read_sidecar,
    require_pycuda,
    require_tensorrt,
    trt_features,
)
from edge_fer.errors import UserError
from edge_fer.fileio import first_line

if TYPE_CHECKING:  # annotations only: never imported at run time from here
    import pycuda.driver as cuda
    import tensorrt as trt

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
DEFAULT_MAX_BATCH = 32
DEFAULT_OPT_BATCH = 8
TRT_PRECISIONS = ("fp32", "fp16", "int8")


def default_precision() -> str:
    """fp16 on a Jetson (its GPU runs FP16 at twice the FP32 rate), fp32 elsewhere."""
    return "fp16" if is_jetson() else "fp32"


def add_trt_args(parser: argparse.ArgumentParser) -> None:
    """The TensorRT runtime options of `run` and `bench` (dest: trt_precision, calib_cache)."""
    g = parser.add_argument_group("TensorRT (--backend tensorrt)")
    g.add_argument(
        "--trt-precision",
        choices=TRT_PRECISIONS,
        default=None,
        help="precision of the engine built from an ONNX model (default: fp16 on a "
        "Jetson, fp32 elsewhere); int8 takes a Q/DQ model, or a calibration cache "
        "(--calib-cache; the bundled model has its cache built in)",
    )
    g.add_argument(
        "--calib-cache",
        metavar="FILE",
        default=None,
        help="TensorRT calibration cache for --trt-precision int8 (TensorRT <= 10)",
    )


def _writable_dir(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(d, os.W_OK)


# -- I/O adapters -------------------------------------------------------------------------------


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

    def set_input_shape(
        self, ctx: trt.IExecutionContext, name: str, shape: tuple[int, ...]
    ) -> bool:
        raise NotImplementedError

    def context_shape(self, ctx: trt.IExecutionContext, name: str) -> tuple[int, ...]:
        raise NotImplementedError

    def bind(self, ctx: trt.IExecutionContext, addresses: dict[str, int]) -> None:
        raise NotImplementedError

    def execute(self, ctx: trt.IExecutionContext, stream_handle: int) -> bool:
        raise NotImplementedError


class _TensorIO(_EngineIO):
    """TensorRT >= 10: tensors by name; execute_async_v3 on the addresses set."""

    flavour = "tensors"

    def __init__(self, engine: trt.ICudaEngine):
        import tensorrt as trt

        self.engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def shape(self, name: str) -> tuple[int, ...]:
        return dims(self.engine.get_tensor_shape(name))

    def dtype(self, name: str) -> np.dtype[Any]:
        import tensorrt as trt

        return np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))

    def profile(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        lo, opt, hi = self.engine.get_tensor_profile_shape(name, 0)
        return dims(lo), dims(opt), dims(hi)

    def set_input_shape(
        self, ctx: trt.IExecutionContext, name: str, shape: tuple[int, ...]
    ) -> bool:
        return bool(ctx.set_input_shape(name, shape))

    def context_shape(self, ctx: trt.IExecutionContext, name: str) -> tuple[int, ...]:
        return dims(ctx.get_tensor_shape(name))

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
        return dims(self.engine.get_binding_shape(self.index[name]))

    def dtype(self, name: str) -> np.dtype[Any]:
        import tensorrt as trt

        return np.dtype(trt.nptype(self.engine.get_binding_dtype(self.index[name])))

    def profile(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        lo, opt, hi = self.engine.get_profile_shape(0, self.index[name])
        return dims(lo), dims(opt), dims(hi)

    def set_input_shape(
        self, ctx: trt.IExecutionContext, name: str, shape: tuple[int, ...]
    ) -> bool:
        c: Any = ctx
        return bool(c.set_binding_shape(self.index[name], shape))

    def context_shape(self, ctx: trt.IExecutionContext, name: str) -> tuple[int, ...]:
        c: Any = ctx
        return dims(c.get_binding_shape(self.index[name]))

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
    precision   "fp32", "fp16" or "int8" for an engine built from an .onnx (default: fp16 on a
                Jetson, fp32 elsewhere); ignored for an engine file (it has its own)
    calib_cache, dla_core, sparse, workspace_mb, timing_cache
                the other build options for an .onnx (edge_fer.export.engine.BuildConfig)
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
        precision: str | None = None,
        calib_cache: str | os.PathLike[str] | None = None,
        dla_core: int | None = None,
        sparse: bool = False,
        workspace_mb: int = 1024,
        timing_cache: str | os.PathLike[str] | None = None,
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
        self._io: _EngineIO | None = None
        self.path = Path(model_path)
        self.metadata = {}
        version = require_tensorrt()  # first: without TensorRT nothing else matters
        require_pycuda()
        self.features = trt_features(version)
        self.trt_version = version
        precision = precision or default_precision()
        if precision not in TRT_PRECISIONS:
            raise UserError(
                f"must be one of {', '.join(TRT_PRECISIONS)}, got {precision!r}", param="precision"
            )
        self.precision = precision
        if max_batch is not None and int(max_batch) < 1:
            raise UserError(f"must be at least 1, got {max_batch}", param="max_batch")
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such model file")

        import pycuda.driver as cuda

        try:
            cuda.init()
            count = cuda.Device.count()
        except cuda.Error as exc:
            raise UserError(f"no usable CUDA GPU ({first_line(exc)})") from None
        if count < 1:
            raise UserError("no CUDA GPU found")
        if not 0 <= int(device) < count:
            raise UserError(f"no CUDA device {device}: this machine has {count} (0..{count - 1})")
        self.device = int(device)
        dev = cuda.Device(self.device)
        self.gpu_name = dev.name()
        cc = dev.compute_capability()
        self.gpu_tag = f"sm{cc[0]}{cc[1]}"
        self.here = platform_facts(version, self.device)
        self.here.update(gpu=self.gpu_name, compute_capability=f"{cc[0]}.{cc[1]}")
        self._cuctx = dev.retain_primary_context()  # the context TensorRT's runtime API uses
        self._cuctx.push()
        try:
            self._open(
                max_batch,
                rebuild=rebuild,
                verbose=verbose,
                build={
                    "calib_cache": calib_cache,
                    "dla_core": dla_core,
                    "sparse": sparse,
                    "workspace_mb": workspace_mb,
                    "timing_cache": timing_cache,
                },
            )
        except cuda.Error as exc:
            self._release(pushed=True)
            raise UserError(f"{self.path}: CUDA error ({first_line(exc)})") from None
        except BaseException:
            self._release(pushed=True)
            raise
        cuda.Context.pop()
        self._closed = False

    # -- setup ----------------------------------------------------------------------------------
    def _open(
        self, max_batch: int | None, *, rebuild: bool, verbose: bool, build: dict[str, Any]
    ) -> None:
        import pycuda.driver as cuda
        import tensorrt as trt

        from_onnx = self.path.suffix.lower() == ".onnx"
        if from_onnx:
            self.engine_path = self._engine_for_onnx(
                max_batch or DEFAULT_MAX_BATCH, rebuild=rebuild, verbose=verbose, build=build
            )
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
        # the engine's TensorRT and GPU are checked before TensorRT sees the bytes
        for warning in check_engine_facts(self.engine_path, self.sidecar, self.here):
            print(f"warning: {warning}", file=sys.stderr)

        data = self.engine_path.read_bytes()
        if not data:
            raise UserError(f"{self.engine_path}: empty file, not a TensorRT engine")
        self._log = TrtLog(verbose)
        self._logger = make_logger(self._log)  # must outlive the runtime and engine
        self._runtime = trt.Runtime(self._logger)
        dla = self.sidecar.get("dla_core")
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
                    f"{max_batch} is below the engine's smallest batch {pmin}", param="max_batch"
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
        self, max_batch: int, *, rebuild: bool, verbose: bool, build: dict[str, Any]
    ) -> Path:
        """A cached engine built from exactly this ONNX with these options here, or a build."""
        from edge_fer.export.engine import (
            BuildConfig,
            build_engine,
            cached_engine_name,
            default_calib_cache,
            onnx_missing,
            refuse_cpu_layout,
        )

        calib = build["calib_cache"]
        if self.precision == "int8" and calib is None and refuse_cpu_layout(self.path) is None:
            calib = default_calib_cache(self.path)
            if calib is None and not onnx_missing():  # without onnx: TensorRT's parse tells
                raise UserError(
                    f"{self.path}: TensorRT INT8 needs the Q/DQ model (model.int8.qdq.onnx from "
                    "`edge-fer export --int8`) or a calibration cache (--calib-cache FILE)"
                )
        config = BuildConfig(
            precision=self.precision,
            min_batch=1,
            opt_batch=min(DEFAULT_OPT_BATCH, max_batch),
            max_batch=max_batch,
            workspace_mb=int(build["workspace_mb"]),
            dla_core=build["dla_core"],
            sparse=bool(build["sparse"]),
            calib_cache=None if calib is None else os.fspath(calib),
            timing_cache=None
            if build["timing_cache"] is None
            else os.fspath(build["timing_cache"]),
            verbose=verbose,
        )
        config.check()
        digest = file_sha256(self.path)
        name = cached_engine_name(self.path, digest, self.trt_version, self.gpu_tag, config)
        cache = cache_dir()
        places = [self.path.parent / name] + ([cache / name] if cache else [])
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
                f"cannot write a TensorRT engine next to {self.path}"
                + (f" nor in {cache}" if cache else " (and there is no home for a cache folder)")
                + "; "
                "set EDGE_FER_CACHE to a writable folder"
            )
        print(
            f"edge-fer: building a TensorRT {self.precision} engine for {self.path.name} on "
            f"{self.gpu_name} (once; can take minutes) -> {target}",
            file=sys.stderr,
        )
        build_engine(
            self.path,
            target,
            config,
            info={
                "gpu": self.gpu_name,
                "gpu_tag": self.gpu_tag,
                "compute_capability": self.here["compute_capability"],
            },
        )
        return target

    def _load_error(self) -> str:
        why = self._log.last_error()
        return (
            f"{self.engine_path}: not a TensorRT engine for TensorRT {self.trt_version} on "
            f"{self.gpu_name}: a truncated or foreign file, or built by another TensorRT version "
            f"or for another GPU; {REBUILD_HINT}" + (f" [TensorRT: {why}]" if why else "")
        )

    # -- inference ------------------------------------------------------------------------------
    def infer(self, x: np.ndarray) -> np.ndarray:
        if x is None:  # (np.ascontiguousarray made it [nan]: "got shape (1,)")
            raise UserError("expected a batch of shape (N, C, H, W), got None", param="x")
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
                raise BackendClosed("backend is closed")
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
        assert self._context is not None and self._stream is not None and self._io is not None
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
        """Free GPU objects in dependency order inside our CUDA context, then let it go: device
        and page-locked buffers, stream, execution context, engine, runtime. Nothing is left for
        the garbage collector to destroy later outside the context."""
        if self._cuctx is None:
            return
        import pycuda.driver as cuda

        try:
            if not pushed:
                self._cuctx.push()
            if self._stream is not None:
                try:
                    self._stream.synchronize()  # no copy in flight into what is freed next
                except cuda.Error:
                    pass
            for a in self._allocs:
                try:
                    a.free()
                except cuda.Error:
                    pass
            self._allocs = []
            for host in (self._host_in, self._host_out):
                base: Any = getattr(host, "base", None)  # pycuda's HostAllocation
                if base is not None and hasattr(base, "free"):
                    try:
                        base.free()
                    except cuda.Error:
                        pass
            self._host_in = self._host_out = None
            self._stream = None
            # the last references to the TensorRT objects: destroyed here, in this context
            self._context = None
            self._io = None
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
    "TRT_PRECISIONS",
    "TensorRTBackend",
    "add_trt_args",
    "create",
    "default_precision",
    "make_io",
]
