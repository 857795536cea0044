"""In-process fakes of `tensorrt` (8.2, 8.5, 8.6, 10.3, 11) and `pycuda.driver`, shared by
tests/test_tensorrt_backend.py and tests/test_build_engine.py.

Each fake version exposes only the names the real Python bindings of that version have (checked
against NVIDIA's docs and the 10.13 stubs; see docs/tensorrt.md):

- 8.x: the binding API on engines/contexts (num_bindings, get_binding_*, set_binding_shape,
  execute_async_v2); 8.5/8.6 also have the tensor API (added in 8.5, the binding API deprecated
  then); NetworkDefinitionCreationFlag.EXPLICIT_BATCH; BuilderFlag.FP16/INT8;
  IInt8EntropyCalibrator2 and IBuilderConfig.int8_calibrator / set_calibration_profile;
  set_memory_pool_limit from 8.4 (max_workspace_size before; removed in 10).
- 10.x: tensor API only (the binding API removed in 10.0); no max_workspace_size; calibrators
  still there (deprecated in 10.1).
- 11: no BuilderFlag.FP16/INT8, no calibrator classes, no int8_calibrator or
  set_calibration_profile on IBuilderConfig, no EXPLICIT_BATCH flag.
- 8.0-8.4 execution contexts have no tensor API (set_input_shape, set_tensor_address,
  execute_async_v3 came in 8.5: NVIDIA/TensorRT release/8.2 vs release/8.5 pyCore.cpp).
- An attached calibrator is driven as pyInt8.cpp does (get_batch_size, read_calibration_cache
  as None or a buffer, get_batch when there is no usable cache).
- pycuda: the context stack is per thread (pycuda's context_stack is a thread_specific_ptr):
  a context pushed in one thread is not current in another; Context.pop() on an empty stack
  raises pycuda's Error.

Attributes a version lacks cannot be set (pybind11 objects refuse unknown attributes), so
code that sets `config.int8_calibrator` on 11 fails here as it would there.
"""

from __future__ import annotations

import os
import sys
import threading
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_fer import labels as L
from edge_fer.preprocess import PreprocessSpec

CLASSES = tuple(L.FER2013)
C = len(CLASSES)
ENGINE_MAGIC = b"FAKE-ENGINE"


def metadata() -> dict[str, str]:
    meta = PreprocessSpec(classes=CLASSES).to_metadata()
    meta["edge_fer.arch"] = "tiny"
    return meta


def tiny_onnx(path: Path, qdq: str | None = None) -> Path:
    """A real ONNX classifier: input [N,1,48,48] -> Reshape -> MatMul -> Softmax -> probs.
    qdq="tensorrt": a symmetric int8 Q/DQ pair on the input (TensorRT layout); qdq="cpu": uint8
    with a non-zero zero point (ONNX Runtime's CPU layout)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((48 * 48, C)).astype(np.float32) * 0.01, "W")
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    inits = [w, shape]
    first = "input"
    nodes = []
    if qdq:
        zp = np.array(0, np.int8) if qdq == "tensorrt" else np.array(128, np.uint8)
        inits += [
            numpy_helper.from_array(np.array(0.02, np.float32), "s"),
            numpy_helper.from_array(zp, "zp"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["input", "s", "zp"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"]),
        ]
        first = "dq"
    nodes += [
        helper.make_node("Reshape", [first, "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 48, 48])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", C])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in metadata().items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(model, str(path))
    return path


class FakeGPU:
    """Device memory, the context stack and a record of what the backend asked for."""

    def __init__(self, pmin=1, popt=4, pmax=16, cc=(8, 7), name="Fake Orin"):
        self.blocks: dict[int, np.ndarray] = {}
        self.host_freed = 0
        self.next = 0x10000
        self._stacks = threading.local()  # pycuda's context stack is per thread
        self.stacks_used: list[list] = []  # every thread's stack, to check none is left pushed
        self.shapes: list[int] = []  # batch sizes set on the context
        self.runs: list[int] = []  # batch sizes executed
        self.profile = (pmin, popt, pmax)
        self.cc = cc
        self.name = name
        self.builds = 0
        self.parse_errors: list[str] = []
        self.qdq = False
        self.fail_build = False
        self.dla_cores = 0
        self.dla_unsupported = {"SOFTMAX"}  # layer types the fake DLA cannot run
        self.network_flags = None
        self.calib_read: bytes | None = None  # the cache the builder read from the calibrator
        self.config = None
        self.runtime = None
        self.live: set[str] = set()  # TensorRT objects alive (engine, context)
        self.destroyed_outside_context: list[str] = []

    @property
    def stack(self) -> list:
        """The calling thread's context stack (as pycuda's and the CUDA driver's: a context
        pushed in one thread is not current in another)."""
        st = getattr(self._stacks, "stack", None)
        if st is None:
            st = self._stacks.stack = []
            self.stacks_used.append(st)
        return st

    def alloc(self, n: int) -> int:
        addr, self.next = self.next, self.next + ((n + 255) // 256 + 1) * 256
        self.blocks[addr] = np.zeros(n, np.uint8)
        return addr

    def read(self, addr: int, shape, dtype=np.float32) -> np.ndarray:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self.blocks[addr][:n].view(dtype).reshape(shape).copy()

    def write(self, addr: int, arr: np.ndarray) -> None:
        raw = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
        self.blocks[addr][: raw.size] = raw


def reference(x: np.ndarray) -> np.ndarray:
    """What the fake engine computes: softmax over the first C pixels, scaled."""
    z = x.reshape(len(x), -1)[:, :C].astype(np.float64) * 3.0
    z = np.exp(z - z.max(1, keepdims=True))
    return (z / z.sum(1, keepdims=True)).astype(np.float32)


def make_fake_cuda(gpu: FakeGPU) -> types.ModuleType:
    m = types.ModuleType("pycuda.driver")

    class Error(Exception):
        pass

    class Context:
        def push(self):
            gpu.stack.append(self)

        @staticmethod
        def pop():
            if (
                not gpu.stack
            ):  # pycuda: error("context::pop", ..., "cannot pop non-current context")
                raise Error("cannot pop non-current context")
            gpu.stack.pop()

    class Device:
        def __init__(self, n):
            self.n = n

        @staticmethod
        def count():
            return 1

        def name(self):
            return gpu.name

        def compute_capability(self):
            return gpu.cc

        def retain_primary_context(self):
            return Context()

    class Stream:
        handle = 4242

        def synchronize(self):
            pass

    class Alloc:
        def __init__(self, n):
            self.addr = gpu.alloc(n)

        def __int__(self):
            return self.addr

        def free(self):
            assert gpu.stack, "device memory freed outside the CUDA context"
            del gpu.blocks[self.addr]

    class HostAllocation:
        def free(self):
            assert gpu.stack, "page-locked memory freed outside the CUDA context"
            gpu.host_freed += 1

    def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
        return _HostArray(np.zeros(shape, dtype), HostAllocation())

    def htod(dst, src, stream=None):
        assert gpu.stack, "no CUDA context pushed"
        assert src.nbytes <= gpu.blocks[int(dst)].size
        gpu.write(int(dst), src)

    def dtoh(dst, src, stream=None):
        assert gpu.stack, "no CUDA context pushed"
        dst[...] = gpu.read(int(src), dst.shape, dst.dtype)

    m.Error, m.Context, m.Device, m.Stream = Error, Context, Device, Stream
    m.init = lambda flags=0: None
    m.get_driver_version = lambda: 12060
    m.mem_alloc = Alloc
    m.pagelocked_empty = pagelocked_empty
    m.memcpy_htod_async, m.memcpy_dtoh_async = htod, dtoh
    return m


class _HostArray(np.ndarray):
    """An ndarray whose .base is a pycuda-like HostAllocation, as pycuda's arrays are."""

    def __new__(cls, arr, alloc):
        obj = np.asarray(arr).view(cls)
        obj._alloc = alloc
        return obj

    def __array_finalize__(self, obj):
        self._alloc = getattr(obj, "_alloc", None)

    @property
    def base(self):  # type: ignore[override]
        return self._alloc


def _strict(cls, allowed: set[str]):
    """Make instances refuse attributes outside `allowed`, as pybind11 objects do."""

    def setattr_(self, name, value):
        if not name.startswith("_") and name not in allowed:
            raise AttributeError(f"'{cls.__name__}' object has no attribute '{name}'")
        object.__setattr__(self, name, value)

    cls.__setattr__ = setattr_
    return cls


def make_fake_trt(version: str, gpu: FakeGPU) -> types.ModuleType:
    parts = version.split(".")
    major, minor = int(parts[0]), int(parts[1])
    t = types.ModuleType("tensorrt")
    t.__version__ = version
    # NV_TENSORRT_VERSION, the code in a calibration cache's header (TRT-8502-..., TRT-100300-)
    patch = int(parts[2]) if len(parts) > 2 else 0
    code = (major * 1000 if major < 10 else major * 10000) + minor * 100 + patch
    io = {"input": (-1, 1, 48, 48), "probs": (-1, C)}

    class ILogger:
        def __init__(self):
            pass

    def run(shape_n: int, addr_in: int, addr_out: int) -> bool:
        assert gpu.stack, "no CUDA context pushed"
        x = gpu.read(addr_in, (shape_n, 1, 48, 48))
        gpu.write(addr_out, reference(x))
        gpu.runs.append(shape_n)
        return True

    def profile_ok(n: int) -> bool:
        return gpu.profile[0] <= n <= gpu.profile[2]

    class _Tracked:
        kind = "?"

        def _track(self):
            gpu.live.add(f"{self.kind}{id(self)}")

        def __del__(self):
            gpu.live.discard(f"{self.kind}{id(self)}")
            if not gpu.stack:
                gpu.destroyed_outside_context.append(self.kind)

    class TensorEngine(_Tracked):  # the tensor API (8.5+; the only one from 10.0)
        kind = "engine"
        num_io_tensors = 2

        def __init__(self):
            self._track()

        def get_tensor_name(self, i):
            return ["input", "probs"][i]

        def get_tensor_mode(self, name):
            return t.TensorIOMode.INPUT if name == "input" else t.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return io[name]

        def get_tensor_dtype(self, name):
            return np.float32

        def get_tensor_profile_shape(self, name, k):
            assert name == "input" and k == 0
            return [(p, 1, 48, 48) for p in gpu.profile]

        def create_execution_context(self):
            return TensorContext() if major >= 10 else BindingContext()

    class TensorContext(_Tracked):
        kind = "context"

        def __init__(self):
            self._track()
            self.n, self.addr = None, {}

        def _set_shape(self, shape):
            if not profile_ok(shape[0]):
                return False
            self.n = shape[0]
            gpu.shapes.append(shape[0])
            return True

        def _shape(self, name):
            return (self.n, 1, 48, 48) if name == "input" else (self.n, C)

        def set_input_shape(self, name, shape):
            return self._set_shape(shape)

        def get_tensor_shape(self, name):
            return self._shape(name)

        def set_tensor_address(self, name, addr):
            self.addr[name] = addr
            return True

        def execute_async_v3(self, stream_handle):
            assert stream_handle == 4242
            return run(self.n, self.addr["input"], self.addr["probs"])

    class BindingEngine(TensorEngine):  # 8.x: the binding API (+ the tensor API from 8.5)
        has_implicit_batch_dimension = False
        num_optimization_profiles = 1
        num_bindings = 2

        def get_binding_name(self, i):
            return ["input", "probs"][i]

        def binding_is_input(self, i):
            return i == 0

        def get_binding_shape(self, i):
            return io[self.get_binding_name(i)]

        def get_binding_dtype(self, i):
            return np.float32

        def get_profile_shape(self, k, i):
            assert k == 0 and i == 0
            return [(p, 1, 48, 48) for p in gpu.profile]

    if (major, minor) < (8, 5):  # the tensor API arrived in 8.5
        for name in (
            "num_io_tensors",
            "get_tensor_name",
            "get_tensor_mode",
            "get_tensor_shape",
            "get_tensor_dtype",
            "get_tensor_profile_shape",
        ):
            setattr(
                BindingEngine,
                name,
                property(
                    lambda self: (_ for _ in ()).throw(
                        AttributeError("no tensor API before TensorRT 8.5")
                    )
                ),
            )

    class BindingContext(TensorContext):
        def set_binding_shape(self, i, shape):
            assert i == 0
            return self._set_shape(shape)

        def get_binding_shape(self, i):
            return self._shape("input" if i == 0 else "probs")

        def execute_async_v2(self, bindings, stream_handle):
            assert stream_handle == 4242 and len(bindings) == 2
            return run(self.n, bindings[0], bindings[1])

    if (major, minor) < (8, 5):  # 8.0-8.4 contexts: set_binding_shape/execute_async_v2 only
        for name in (
            "set_input_shape",
            "get_tensor_shape",
            "set_tensor_address",
            "execute_async_v3",
        ):
            setattr(
                BindingContext,
                name,
                property(
                    lambda self: (_ for _ in ()).throw(
                        AttributeError("no tensor API before TensorRT 8.5")
                    )
                ),
            )

    class Runtime:
        def __init__(self, logger):
            self.logger = logger
            self.DLA_core = -1
            gpu.runtime = self

        def deserialize_cuda_engine(self, data):
            raw = bytes(data)
            if not raw.startswith(ENGINE_MAGIC) or raw.endswith(b"[truncated]"):
                self.logger.log(1, "Serialization assertion magicTagRead == kMAGIC_TAG failed.\nx")
                return None
            return TensorEngine() if major >= 10 else BindingEngine()

    # builder side
    class Layer:
        def __init__(self, name, kind):
            self.name, self.type = name, kind

    class Network:
        num_inputs = 1

        def get_input(self, i):
            return SimpleNamespace(name="input", shape=io["input"])

        @property
        def num_layers(self):
            return 3

        def get_layer(self, i):
            kinds = ["Q", "CONV", "DQ"] if gpu.qdq else ["SHUFFLE", "MATMUL", "SOFTMAX"]
            return Layer(f"layer{i}_{kinds[i].lower()}", kinds[i])

    class Parser:
        def __init__(self, network, logger):
            self.errors = list(gpu.parse_errors)

        def parse_from_file(self, path):
            assert os.path.isfile(path)
            return not self.errors

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data) or b"TIMING"

        def serialize(self):
            return memoryview(self.data + b"+")

    config_attrs = {
        "flags",
        "pool",
        "profiles",
        "calib_profile",
        "default_device_type",
        "DLA_core",
        "timing",
    }

    class Config:
        def __init__(self):
            self.flags, self.pool, self.profiles, self.timing = set(), None, [], None
            self.default_device_type, self.DLA_core = "GPU", -1
            if major < 11:
                self.int8_calibrator, self.calib_profile = None, None
            if major < 10:
                self.max_workspace_size = 0

        def set_flag(self, f):
            self.flags.add(f)

        def add_optimization_profile(self, p):
            self.profiles.append(p)
            return 0

        def can_run_on_DLA(self, layer):
            return layer.type not in gpu.dla_unsupported

        def create_timing_cache(self, data):
            if bytes(data) and not bytes(data).startswith(b"TIMING"):
                return None
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing = cache
            return True

        def get_timing_cache(self):
            return self.timing

    if major < 11:
        config_attrs |= {"int8_calibrator"}

        def set_calibration_profile(self, p):
            self.calib_profile = p
            return True

        Config.set_calibration_profile = set_calibration_profile
    if major < 10:
        config_attrs |= {"max_workspace_size"}
    if (major, minor) >= (8, 4):
        Config.set_memory_pool_limit = lambda self, pool, n: setattr(self, "pool", (pool, n))
    _strict(Config, config_attrs)

    def replay_calibrator(cal, logger) -> bool:
        """What TensorRT <= 10 does with an attached calibrator (python/src/infer/pyInt8.cpp):
        get_batch_size(); read_calibration_cache() must return None or a buffer (anything else
        is an error caught in the trampoline: no cache); without a usable cache, get_batch()
        until it returns None/[]: no data at all fails the build."""
        assert isinstance(cal, t.IInt8EntropyCalibrator2)
        if not getattr(cal, "_trt_base_init", False):  # pybind11 refuses a skipped base __init__
            raise TypeError("IInt8EntropyCalibrator2.__init__() must be called when overriding")
        int(cal.get_batch_size())
        raw = cal.read_calibration_cache()
        try:
            cache = None if raw is None else bytes(memoryview(raw))
        except TypeError:
            print("[ERROR] Exception caught in read_calibration_cache()", file=sys.stderr)
            cache = None
        gpu.calib_read = cache
        if cache is not None and cache.startswith(f"TRT-{code}-".encode()):
            return True
        if not cal.get_batch(["input"]):
            logger.log(1, "Calibration failure occurred with no scaling factors detected.")
            return False
        return True

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            self.logger = logger
            self.num_DLA_cores = gpu.dla_cores
            if major < 11:  # removed in 11 (deprecated in 10.5)
                self.platform_has_fast_int8 = gpu.cc >= (6, 1) and gpu.cc not in ((6, 2), (5, 3))

        def create_network(self, flags=0):
            gpu.network_flags = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            gpu.config = config
            cal = getattr(config, "int8_calibrator", None)
            if cal is not None and not replay_calibrator(cal, self.logger):
                return None
            if gpu.fail_build:
                self.logger.log(1, "no implementation for layer 2")
                return None
            gpu.builds += 1
            return ENGINE_MAGIC + b" built by the fake builder"

    t.ILogger, t.Runtime, t.Builder, t.OnnxParser = ILogger, Runtime, Builder, Parser
    t.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    t.nptype = lambda dt: dt
    t.Dims = tuple
    t.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    t.LayerType = SimpleNamespace(QUANTIZE="Q", DEQUANTIZE="DQ")
    t.DeviceType = SimpleNamespace(GPU="GPU", DLA="DLA")
    flags = {"SPARSE_WEIGHTS": "SPARSE_WEIGHTS", "GPU_FALLBACK": "GPU_FALLBACK"}
    # NetworkDefinitionCreationFlag: EXPLICIT_BATCH = 0 up to 10.x (ignored from 10.0), gone in
    # 11; STRONGLY_TYPED from 9.x: 1 in 10.x, 0 in 11 (the only flag left; always on, deprecated:
    # NvInfer.h of v11.1, "kSTRONGLY_TYPED TRT_DEPRECATED_ENUM = 0")
    net_flags = {"EXPLICIT_BATCH": 0} if major < 11 else {}
    if major >= 10:
        net_flags["STRONGLY_TYPED"] = 1 if major < 11 else 0
    t.NetworkDefinitionCreationFlag = SimpleNamespace(**net_flags)
    if major < 11:  # removed in TensorRT 11
        flags.update(FP16="FP16", INT8="INT8")

        class IInt8EntropyCalibrator2:
            def __init__(self):
                self._trt_base_init = True

        t.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    t.BuilderFlag = SimpleNamespace(**flags)
    return t


def installer(monkeypatch, tmp_path):
    """For a `fake` fixture: install(version, jetson=False, **gpu) -> FakeGPU with fake tensorrt
    + pycuda installed; jetson=True (or an L4T string) writes a fake /etc/nv_tegra_release."""
    from edge_fer.backends import trt_common as tc

    def install(version="10.3.0", jetson: bool | str = False, **kw) -> FakeGPU:
        gpu = FakeGPU(**kw)
        drv = make_fake_cuda(gpu)
        pkg = types.ModuleType("pycuda")
        pkg.driver = drv
        monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(version, gpu))
        monkeypatch.setitem(sys.modules, "pycuda", pkg)
        monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
        rel = tmp_path / "nv_tegra_release"
        if jetson:
            l4t = jetson if isinstance(jetson, str) else "R36 (release), REVISION: 4.3"
            rel.write_text(f"# {l4t}, GCID: 1, BOARD: generic, EABI: aarch64, DATE: x\n")
        elif rel.exists():
            rel.unlink()
        monkeypatch.setattr(tc, "NV_TEGRA_RELEASE", str(rel))
        monkeypatch.setattr(tc, "DEVICE_TREE_MODEL", str(tmp_path / "no-device-tree-model"))
        return gpu

    return install


def fake_engine(tmp_path: Path, name="fer.engine", sidecar=True, **info) -> Path:
    from edge_fer.backends import trt_common as tc

    eng = tmp_path / name
    eng.write_bytes(ENGINE_MAGIC + b" v1")
    if sidecar:
        tc.write_sidecar(eng, metadata(), **info)
    return eng
