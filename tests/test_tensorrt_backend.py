"""TensorRT backend and engine builder, without TensorRT, pycuda or a GPU.

What runs here: the module imports without tensorrt/pycuda; the one-line "not available" error
(API, CLI exit code 2); the version dispatch; the engine sidecar; the build-argument checks; the
stub patcher; and -- against small in-process fakes of the `tensorrt` and `pycuda.driver`
modules that implement the 8.x binding API, the 10.x/11.x tensor API and the builder calls --
the backend's buffers, batching, padding, errors and teardown, and the builder's per-version
flags. The fakes check names and call order, not TensorRT's numerics; a real engine needs a GPU.
mypy (with the TensorRT stubs) runs when mypy and the stubs are installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_fer import labels as L
from edge_fer.backends import create_backend
from edge_fer.backends import tensorrt_backend as tb
from edge_fer.errors import UserError
from edge_fer.preprocess import PreprocessSpec

ROOT = Path(__file__).resolve().parents[1]
CLASSES = tuple(L.FER2013)
C = len(CLASSES)


def _real_trt_usable() -> bool:
    try:
        tb.require_tensorrt()
        tb.require_pycuda()
    except UserError:
        return False
    return True


def _load_script(rel: str, name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def metadata() -> dict[str, str]:
    meta = PreprocessSpec(classes=CLASSES).to_metadata()
    meta["edge_fer.arch"] = "tiny"
    return meta


def tiny_onnx(path: Path) -> Path:
    """A real ONNX classifier: input [N,1,48,48] -> Reshape -> MatMul -> Softmax -> probs."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((48 * 48, C)).astype(np.float32) * 0.01, "W")
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["input", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 48, 48])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", C])],
        [w, shape],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in metadata().items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(model, str(path))
    return path


# -- no TensorRT here -------------------------------------------------------------------------


def test_modules_import_without_tensorrt():
    code = (
        "import sys, edge_fer.backends.tensorrt_backend as b, edge_fer.trt_build as t; "
        "print(callable(b.create), hasattr(b, 'TensorRTBackend'), callable(t.build_engine), "
        "'tensorrt' in sys.modules, 'pycuda' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=300, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True", "False", "False"]


@pytest.mark.skipif(_real_trt_usable(), reason="TensorRT and pycuda are installed here")
def test_create_backend_says_not_available(tmp_path):
    eng = tmp_path / "fer.engine"
    eng.write_bytes(b"not really an engine")
    with pytest.raises(UserError) as ei:
        create_backend("tensorrt", eng)
    msg = str(ei.value)
    assert msg.startswith(tb.NOT_AVAILABLE)
    assert "\n" not in msg
    with pytest.raises(UserError, match="TensorRT backend not available"):
        create_backend("trt", eng, threads=1)


def test_stub_only_tensorrt_is_not_available(monkeypatch):
    # what `pip install --no-deps tensorrt-stubs` leaves: an importable, empty namespace package
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(UserError, match="only type stubs"):
        tb.require_tensorrt()


def test_missing_pycuda_is_not_available(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt("10.3.0", FakeGPU()))
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    eng = tmp_path / "fer.engine"
    eng.write_bytes(b"FAKE-ENGINE")
    with pytest.raises(UserError) as ei:
        tb.TensorRTBackend(eng)
    assert str(ei.value).startswith(tb.NOT_AVAILABLE) and "pycuda" in str(ei.value)


@pytest.mark.skipif(_real_trt_usable(), reason="TensorRT and pycuda are installed here")
def test_cli_classify_tensorrt_exit_code_2(tmp_path, capsys):
    import cv2

    from edge_fer.cli.main import main

    eng = tmp_path / "fer.engine"
    eng.write_bytes(b"\x00" * 64)
    img = tmp_path / "face.png"
    cv2.imwrite(str(img), np.full((48, 48), 128, np.uint8))
    rc = main(["classify", "--backend", "tensorrt", "--model", str(eng), str(img)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "TensorRT backend not available" in err[0]


# -- versions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, api, explicit_flag, pool, precision_flags, implicit_int8",
    [
        ("8.2.1.8", "bindings", True, False, True, True),  # JetPack 4.6
        ("8.5.2.2", "bindings", True, True, True, True),  # JetPack 5.1
        ("8.6.1", "bindings", True, True, True, True),
        ("10.3.0", "tensors", False, True, True, True),  # JetPack 6
        ("10.13.0.35", "tensors", False, True, True, True),
        ("11.0.0", "tensors", False, True, False, False),
    ],
)
def test_version_dispatch(version, api, explicit_flag, pool, precision_flags, implicit_int8):
    f = tb.trt_features(version)
    assert tb.api_flavour(version) == api == f.api
    assert (f.explicit_batch_flag, f.memory_pool_api) == (explicit_flag, pool)
    assert (f.precision_flags, f.implicit_int8) == (precision_flags, implicit_int8)


@pytest.mark.parametrize("version", ["7.1.3", "abc", ""])
def test_version_dispatch_rejects(version):
    with pytest.raises(UserError):
        tb.api_flavour(version)


# -- sidecar ----------------------------------------------------------------------------------


def test_sidecar_round_trip(tmp_path):
    eng = tmp_path / "fer.fp16.engine"
    eng.write_bytes(b"engine bytes")
    assert tb.sidecar_path(eng) == tmp_path / "fer.fp16.engine.json"
    assert tb.read_sidecar(eng) is None
    side = tb.write_sidecar(eng, metadata(), tensorrt="10.3.0", precision="fp16",
                            batch={"min": 1, "opt": 8, "max": 32})  # fmt: skip
    assert side == tb.sidecar_path(eng)
    doc = tb.read_sidecar(eng)
    assert doc["format"] == tb.SIDECAR_FORMAT and doc["tensorrt"] == "10.3.0"
    assert doc["metadata"] == metadata() and doc["batch"]["max"] == 32
    assert tb.engine_metadata(eng) == metadata()
    spec = PreprocessSpec.from_metadata(tb.engine_metadata(eng))
    assert spec.classes == CLASSES and spec.input_size == 48
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left nothing behind


def test_sidecar_rejects_foreign_and_malformed(tmp_path):
    eng = tmp_path / "m.engine"
    tb.sidecar_path(eng).write_text("{not json")
    with pytest.raises(UserError, match="unreadable engine sidecar"):
        tb.read_sidecar(eng)
    tb.sidecar_path(eng).write_text(json.dumps({"metadata": {}}))
    with pytest.raises(UserError, match="not an edge-fer engine sidecar"):
        tb.read_sidecar(eng)
    tb.sidecar_path(eng).write_text(json.dumps({"format": tb.SIDECAR_FORMAT, "metadata": [1]}))
    with pytest.raises(UserError, match="metadata"):
        tb.read_sidecar(eng)


def test_sidecar_for_trtexec_engine_and_onnx_fallback(tmp_path, monkeypatch):
    from edge_fer.trt_build import write_sidecar_for

    model = tiny_onnx(tmp_path / "fer.onnx")
    eng = tmp_path / "fer.int8.engine"
    eng.write_bytes(b"from trtexec")
    # no sidecar yet: the sibling ONNX (stem prefix) supplies the metadata
    assert tb.engine_metadata(eng) == metadata()
    side = write_sidecar_for(eng, model, tensorrt="10.3.0")
    doc = json.loads(side.read_text())
    assert doc["metadata"] == metadata()
    assert doc["onnx_sha256"] == tb.file_sha256(model) and doc["source_onnx"] == "fer.onnx"
    # the same metadata through ONNX Runtime when the onnx package is absent
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert tb.onnx_metadata(model) == metadata()


# -- build arguments (no TensorRT needed to reject them) ---------------------------------------


def test_build_engine_argument_errors(tmp_path):
    from edge_fer.trt_build import build_engine, default_engine_path

    assert default_engine_path("a/fer.onnx", fp16=True) == Path("a/fer.fp16.engine")
    assert default_engine_path("fer.onnx", int8=True).name == "fer.int8.engine"
    model = tmp_path / "fer.onnx"
    with pytest.raises(UserError, match="no such ONNX model"):
        build_engine(model, tmp_path / "x.engine")
    model.write_bytes(b"x")
    with pytest.raises(UserError, match="only used with INT8"):
        build_engine(model, tmp_path / "x.engine", calib_cache=model)
    with pytest.raises(UserError, match="below min batch"):
        build_engine(model, tmp_path / "x.engine", min_batch=8, max_batch=4)
    with pytest.raises(UserError, match="overwrite the ONNX"):
        build_engine(model, model)
    if not _real_trt_usable():
        with pytest.raises(UserError, match="TensorRT backend not available"):
            build_engine(model, tmp_path / "x.engine")


def test_export_script_errors_are_one_line(tmp_path, capsys):
    script = _load_script("export/build_engine.py", "build_engine_script")
    rc = script.main([str(tmp_path / "missing.onnx"), "--fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("build_engine: error:")


def test_export_script_sidecar_for(tmp_path, capsys):
    script = _load_script("export/build_engine.py", "build_engine_script")
    model = tiny_onnx(tmp_path / "fer.onnx")
    eng = tmp_path / "fer.fp16.engine"
    eng.write_bytes(b"from trtexec")
    assert script.main([str(model), "--sidecar-for", str(eng)]) == 0
    assert tb.read_sidecar(eng)["metadata"] == metadata()


# -- fakes of tensorrt and pycuda.driver ------------------------------------------------------


class FakeGPU:
    """Device memory, the context stack and a record of what the backend asked for."""

    def __init__(self, pmin=1, popt=4, pmax=16):
        self.blocks: dict[int, np.ndarray] = {}
        self.next = 0x10000
        self.stack: list = []
        self.shapes: list[int] = []  # batch sizes set on the context
        self.runs: list[int] = []  # batch sizes executed
        self.profile = (pmin, popt, pmax)
        self.builds = 0
        self.parse_errors: list[str] = []
        self.qdq = False
        self.fail_build = False
        self.dla_cores = 0
        self.network_flags = None
        self.config = None

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
            gpu.stack.pop()

    class Device:
        def __init__(self, n):
            self.n = n

        @staticmethod
        def count():
            return 1

        def name(self):
            return "Fake GPU"

        def compute_capability(self):
            return (8, 7)

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
            del gpu.blocks[self.addr]

    def htod(dst, src, stream=None):
        assert gpu.stack, "no CUDA context pushed"
        assert src.nbytes <= gpu.blocks[int(dst)].size
        gpu.write(int(dst), src)

    def dtoh(dst, src, stream=None):
        assert gpu.stack, "no CUDA context pushed"
        dst[...] = gpu.read(int(src), dst.shape, dst.dtype)

    m.Error, m.Context, m.Device, m.Stream = Error, Context, Device, Stream
    m.init = lambda flags=0: None
    m.mem_alloc = Alloc
    m.pagelocked_empty = lambda shape, dtype, order="C", mem_flags=0: np.zeros(shape, dtype)
    m.memcpy_htod_async, m.memcpy_dtoh_async = htod, dtoh
    return m


def make_fake_trt(version: str, gpu: FakeGPU) -> types.ModuleType:
    major = int(version.split(".")[0])
    t = types.ModuleType("tensorrt")
    t.__version__ = version
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

    class Engine10:  # tensor API only (what 10.x / 11.x have)
        num_io_tensors = 2

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
            return Context10()

    class Context10:
        def __init__(self):
            self.n, self.addr = None, {}

        def set_input_shape(self, name, shape):
            if not profile_ok(shape[0]):
                return False
            self.n = shape[0]
            gpu.shapes.append(shape[0])
            return True

        def get_tensor_shape(self, name):
            return (self.n, 1, 48, 48) if name == "input" else (self.n, C)

        def set_tensor_address(self, name, addr):
            self.addr[name] = addr
            return True

        def execute_async_v3(self, stream_handle):
            assert stream_handle == 4242
            return run(self.n, self.addr["input"], self.addr["probs"])

    class Engine8:  # binding API only (what 8.x code uses)
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

        def create_execution_context(self):
            return Context8()

    class Context8:
        def __init__(self):
            self.n = None

        def set_binding_shape(self, i, shape):
            assert i == 0
            if not profile_ok(shape[0]):
                return False
            self.n = shape[0]
            gpu.shapes.append(shape[0])
            return True

        def get_binding_shape(self, i):
            return (self.n, 1, 48, 48) if i == 0 else (self.n, C)

        def execute_async_v2(self, bindings, stream_handle):
            assert stream_handle == 4242 and len(bindings) == 2
            return run(self.n, bindings[0], bindings[1])

    class Runtime:
        def __init__(self, logger):
            self.logger = logger
            self.DLA_core = -1

        def deserialize_cuda_engine(self, data):
            if not bytes(data).startswith(b"FAKE-ENGINE"):
                self.logger.log(1, "Serialization assertion magicTagRead == kMAGIC_TAG failed.\nx")
                return None
            return Engine10() if major >= 9 else Engine8()

    # builder side
    class Network:
        num_inputs = 1

        def get_input(self, i):
            return SimpleNamespace(name="input", shape=io["input"])

        @property
        def num_layers(self):
            return 3

        def get_layer(self, i):
            kinds = ["Q", "CONV", "DQ"] if gpu.qdq else ["SHUFFLE", "MATMUL", "SOFTMAX"]
            return SimpleNamespace(type=kinds[i])

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

    class Config:
        def __init__(self):
            self.flags, self.pool, self.profiles, self.calib_profile = set(), None, [], None
            self.int8_calibrator = None
            self.default_device_type, self.DLA_core = "GPU", -1

        def set_flag(self, f):
            self.flags.add(f)

        def add_optimization_profile(self, p):
            self.profiles.append(p)
            return 0

        def set_calibration_profile(self, p):
            self.calib_profile = p
            return True

    if (major, int(version.split(".")[1])) >= (8, 4):
        Config.set_memory_pool_limit = lambda self, pool, n: setattr(self, "pool", (pool, n))

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            self.logger = logger
            self.num_DLA_cores = gpu.dla_cores

        def create_network(self, flags=0):
            gpu.network_flags = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            gpu.config = config
            if gpu.fail_build:
                self.logger.log(1, "no implementation for layer 2")
                return None
            gpu.builds += 1
            return b"FAKE-ENGINE built by the fake builder"

    t.ILogger, t.Runtime, t.Builder, t.OnnxParser = ILogger, Runtime, Builder, Parser
    t.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    t.nptype = lambda dt: dt
    t.Dims = tuple
    t.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    t.LayerType = SimpleNamespace(QUANTIZE="Q", DEQUANTIZE="DQ")
    t.DeviceType = SimpleNamespace(GPU="GPU", DLA="DLA")
    flags = {"SPARSE_WEIGHTS": "SPARSE_WEIGHTS", "GPU_FALLBACK": "GPU_FALLBACK"}
    if major < 11:  # removed in TensorRT 11
        flags.update(FP16="FP16", INT8="INT8")
        t.NetworkDefinitionCreationFlag = SimpleNamespace(EXPLICIT_BATCH=0)

        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

        t.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    t.BuilderFlag = SimpleNamespace(**flags)
    return t


@pytest.fixture
def fake(monkeypatch):
    """install(version, **profile) -> FakeGPU with fake tensorrt + pycuda in sys.modules."""

    def install(version="10.3.0", **kw) -> FakeGPU:
        gpu = FakeGPU(**kw)
        drv = make_fake_cuda(gpu)
        pkg = types.ModuleType("pycuda")
        pkg.driver = drv
        monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(version, gpu))
        monkeypatch.setitem(sys.modules, "pycuda", pkg)
        monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
        return gpu

    return install


def fake_engine(tmp_path: Path, name="fer.engine", sidecar=True, **info) -> Path:
    eng = tmp_path / name
    eng.write_bytes(b"FAKE-ENGINE v1")
    if sidecar:
        tb.write_sidecar(eng, metadata(), **info)
    return eng


# -- backend against the fakes ----------------------------------------------------------------


@pytest.mark.parametrize("version, flavour", [("8.6.1", "bindings"), ("10.3.0", "tensors"),
                                             ("11.0.0", "tensors")])  # fmt: skip
def test_backend_runs_engine(fake, tmp_path, version, flavour):
    gpu = fake(version)
    eng = fake_engine(tmp_path)
    be = create_backend("tensorrt", eng, threads=1)
    try:
        assert isinstance(be, tb.TensorRTBackend) and be._io.flavour == flavour
        assert be.input_shape == (None, 1, 48, 48) and be.fixed_batch is None
        assert be.num_outputs == C and be.profile == (1, 4, 16) and be.batch_limit == 16
        assert be.metadata == metadata()
        assert gpu.stack == []  # the CUDA context is pushed only while working
        rng = np.random.default_rng(1)
        for n in (1, 3, 16, 37):
            x = rng.standard_normal((n, 1, 48, 48)).astype(np.float32)
            y = be.infer(x)
            assert y.shape == (n, C) and y.dtype == np.float32
            np.testing.assert_allclose(y, reference(x), rtol=1e-6, atol=1e-7)
        assert gpu.runs[-3:] == [16, 16, 5]  # 37 split by the profile maximum
        assert be.infer(np.zeros((0, 1, 48, 48), np.float32)).shape == (0, C)
        with pytest.raises(UserError, match="does not fit"):
            be.infer(np.zeros((2, 1, 32, 32), np.float32))
    finally:
        be.close()
    assert gpu.blocks == {} and gpu.stack == []  # device memory freed, context popped
    be.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        be.infer(np.zeros((1, 1, 48, 48), np.float32))


def test_backend_pads_to_profile_min_and_honours_max_batch(fake, tmp_path):
    gpu = fake("10.3.0", pmin=2, popt=4, pmax=8)
    with tb.TensorRTBackend(fake_engine(tmp_path), max_batch=3) as be:
        assert be.batch_limit == 3
        x = np.random.default_rng(2).standard_normal((7, 1, 48, 48)).astype(np.float32)
        np.testing.assert_allclose(be.infer(x), reference(x), rtol=1e-6, atol=1e-7)
        assert gpu.runs == [3, 3, 2]  # chunks 3+3+1, the last padded to the profile min 2
        assert gpu.shapes == [3, 2]  # shape set only when it changes
        np.testing.assert_allclose(be.infer(x[:1]), reference(x[:1]), rtol=1e-6, atol=1e-7)
        assert gpu.runs[-1] == 2 and gpu.shapes == [3, 2]
    with pytest.raises(UserError, match="below the engine's smallest batch"):
        tb.TensorRTBackend(fake_engine(tmp_path), max_batch=1)


def test_backend_load_errors_are_one_line(fake, tmp_path):
    gpu = fake("10.3.0")
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"\x08\x07\x12\x04onnx")
    with pytest.raises(UserError) as ei:
        tb.TensorRTBackend(bad)
    msg = str(ei.value)
    assert "\n" not in msg and "not a TensorRT engine" in msg and "rebuild" in msg
    assert "magicTagRead" in msg  # TensorRT's own reason, first line only
    old = tmp_path / "old.engine"
    old.write_bytes(b"built elsewhere")
    tb.write_sidecar(old, metadata(), tensorrt="8.5.2.2")
    with pytest.raises(UserError, match=r"TensorRT 8\.5\.2\.2, this is TensorRT 10\.3\.0"):
        tb.TensorRTBackend(old)
    (tmp_path / "empty.plan").write_bytes(b"")
    with pytest.raises(UserError, match="empty file"):
        tb.TensorRTBackend(tmp_path / "empty.plan")
    with pytest.raises(UserError, match="no such model file"):
        tb.TensorRTBackend(tmp_path / "missing.engine")
    with pytest.raises(UserError, match="no CUDA device 3"):
        tb.TensorRTBackend(fake_engine(tmp_path), device=3)
    assert gpu.blocks == {} and gpu.stack == []  # failures release what they took


def test_classifier_loads_engine_through_sidecar(fake, tmp_path):
    from edge_fer.classify import Classifier

    fake("10.3.0")
    eng = fake_engine(tmp_path, tensorrt="10.3.0")
    with Classifier.load(eng, backend="tensorrt", threads=1) as clf:
        assert clf.classes == CLASSES and clf.arch == "tiny" and clf.backend.name == "tensorrt"
        faces = [np.full((60, 50), 90, np.uint8), np.full((48, 48, 3), 200, np.uint8)]
        probs = clf.predict(faces)
        assert probs.shape == (2, C)
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_cli_classify_runs_on_engine(fake, tmp_path, capsys):
    import cv2

    from edge_fer.cli.main import main

    fake("8.6.1")
    eng = fake_engine(tmp_path)
    img = tmp_path / "face.png"
    cv2.imwrite(str(img), np.full((48, 48), 128, np.uint8))
    rc = main(["classify", "--backend", "tensorrt", "--model", str(eng), "--json", str(img)])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and json.loads(out[0])["label"] in CLASSES


def test_backend_builds_and_caches_engine_for_onnx(fake, tmp_path, capsys):
    gpu = fake("10.3.0", pmin=1, popt=8, pmax=32)
    model = tiny_onnx(tmp_path / "fer.onnx")
    with tb.TensorRTBackend(model) as be:
        assert gpu.builds == 1 and be.metadata == metadata()
        assert be.engine_path.parent == tmp_path
        name = be.engine_path.name
        assert name.startswith("fer.") and ".trt10.3.0.sm87.fp32.b32." in name
        doc = tb.read_sidecar(be.engine_path)
        assert doc["onnx_sha256"] == tb.file_sha256(model) and doc["gpu"] == "Fake GPU"
    assert "building a TensorRT fp32 engine" in capsys.readouterr().err
    with tb.TensorRTBackend(model) as be:  # cached: no second build
        assert gpu.builds == 1 and be.engine_path.name == name
    with tb.TensorRTBackend(model, rebuild=True):
        assert gpu.builds == 2
    with tb.TensorRTBackend(model, fp16=True, max_batch=4) as be:
        assert gpu.builds == 3 and ".fp16.b4." in be.engine_path.name
        assert gpu.config.profiles[0].shapes[1:] == ((1, 1, 48, 48), (4, 1, 48, 48),
                                                     (4, 1, 48, 48))  # fmt: skip


# -- builder against the fakes ----------------------------------------------------------------


def test_build_engine_tensorrt10_fp16(fake, tmp_path):
    from edge_fer.trt_build import build_engine

    gpu = fake("10.3.0")
    model = tiny_onnx(tmp_path / "fer.onnx")
    rep = build_engine(model, tmp_path / "out" / "fer.fp16.engine", fp16=True, opt_batch=64)
    cfg = gpu.config
    assert gpu.network_flags == 0  # no EXPLICIT_BATCH on 10+
    assert cfg.flags == {"FP16"} and cfg.pool == ("WORKSPACE", 1024 << 20)
    assert cfg.profiles[0].shapes == ("input", (1, 1, 48, 48), (32, 1, 48, 48), (32, 1, 48, 48))
    eng = Path(rep["engine"])
    assert eng.read_bytes().startswith(b"FAKE-ENGINE") and rep["precision"] == "fp16"
    doc = tb.read_sidecar(eng)
    assert doc["metadata"] == metadata() and doc["batch"] == {"min": 1, "opt": 32, "max": 32}
    assert doc["tensorrt"] == "10.3.0" and doc["int8"] is None


def test_build_engine_tensorrt8_flags(fake, tmp_path):
    from edge_fer.trt_build import build_engine

    model = tiny_onnx(tmp_path / "fer.onnx")
    gpu = fake("8.5.2.2")
    build_engine(model, tmp_path / "a.engine", workspace_mb=256)
    assert gpu.network_flags == 1  # explicit batch asked for on 8.x
    assert gpu.config.pool == ("WORKSPACE", 256 << 20)
    gpu = fake("8.2.1.8")  # before set_memory_pool_limit
    build_engine(model, tmp_path / "b.engine", workspace_mb=256)
    assert gpu.config.pool is None and gpu.config.max_workspace_size == 256 << 20


def test_build_engine_int8(fake, tmp_path):
    from edge_fer.trt_build import build_engine

    model = tiny_onnx(tmp_path / "fer.onnx")
    cache = tmp_path / "fer.calib"
    cache.write_bytes(b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n")
    gpu = fake("10.3.0")
    with pytest.raises(UserError, match="calibration cache"):
        build_engine(model, tmp_path / "x.engine", int8=True)
    rep = build_engine(model, tmp_path / "c.engine", int8=True, calib_cache=cache)
    cal = gpu.config.int8_calibrator
    assert gpu.config.flags == {"INT8"} and rep["int8"] == "calibration-cache"
    assert cal.read_calibration_cache() == cache.read_bytes() and cal.get_batch(["input"]) is None
    assert gpu.config.calib_profile is gpu.config.profiles[0]
    gpu.qdq = True  # a Q/DQ model: INT8 flag, no calibrator, even without --int8
    rep = build_engine(model, tmp_path / "q.engine")
    assert gpu.config.flags == {"INT8"} and gpu.config.int8_calibrator is None
    assert rep["int8"] == "qdq" and rep["precision"] == "int8"
    gpu.qdq, gpu.fail_build = False, True
    with pytest.raises(UserError, match="could not build.*no implementation.*Q/DQ"):
        build_engine(model, tmp_path / "f.engine", int8=True, calib_cache=cache)


def test_build_engine_tensorrt11(fake, tmp_path):
    from edge_fer.trt_build import build_engine

    model = tiny_onnx(tmp_path / "fer.onnx")
    cache = tmp_path / "fer.calib"
    cache.write_bytes(b"cache")
    gpu = fake("11.0.0")
    with pytest.raises(UserError, match="no FP16 builder flag"):
        build_engine(model, tmp_path / "x.engine", fp16=True)
    with pytest.raises(UserError, match="no implicit INT8.*Q/DQ"):
        build_engine(model, tmp_path / "x.engine", int8=True, calib_cache=cache)
    gpu.qdq = True
    rep = build_engine(model, tmp_path / "q.engine", int8=True)
    assert gpu.config.flags == set() and gpu.network_flags == 0 and rep["int8"] == "qdq"


def test_build_engine_parser_errors_and_dla(fake, tmp_path, capsys):
    from edge_fer.trt_build import build_engine

    model = tiny_onnx(tmp_path / "fer.onnx")
    gpu = fake("10.3.0")
    gpu.parse_errors = ["node 3 (Foo): unsupported op", "node 7: bad attribute"]
    with pytest.raises(UserError, match="could not parse.*2 errors"):
        build_engine(model, tmp_path / "x.engine")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "unsupported op" in err[0] and "bad attribute" in err[1]
    gpu.parse_errors = []
    with pytest.raises(UserError, match="DLA runs FP16 or INT8"):
        build_engine(model, tmp_path / "x.engine", dla_core=0)
    with pytest.raises(UserError, match="no DLA core 0"):
        build_engine(model, tmp_path / "x.engine", fp16=True, dla_core=0)
    gpu.dla_cores = 2
    build_engine(model, tmp_path / "d.engine", fp16=True, dla_core=1, sparse=True)
    cfg = gpu.config
    assert cfg.default_device_type == "DLA" and cfg.DLA_core == 1
    assert cfg.flags == {"FP16", "GPU_FALLBACK", "SPARSE_WEIGHTS"}
    assert tb.read_sidecar(tmp_path / "d.engine")["dla_core"] == 1


# -- type stubs and mypy ----------------------------------------------------------------------


def test_stub_patcher_repairs_generated_lines():
    mod = _load_script("typings/get_tensorrt_stubs.py", "get_tensorrt_stubs")
    assert mod.fix_def_line("    def f(self, in: list[int], out: int) -> int:") == (
        "    def f(self, in_: list[int], out: int) -> int:"
    )
    assert mod.fix_def_line("    def g(self, a: int = None, b: int) -> None:") == (
        "    def g(self, a: int = None, b: int = ...) -> None:"
    )
    src = "class A:\n    def f(self, in: int) -> int:\n        ...\n    def g(a: int = 1, b: int) -> None: ...\n"
    fixed, n = mod.patch_source(src)
    assert n == 2 and "in_: int" in fixed and "b: int = ..." in fixed
    text, k = mod.unshadow_bool("bool: DataType\ndef f(x: bool) -> bool: ...\n")
    assert k == 2 and "def f(x: builtins.bool) -> builtins.bool" in text


def _stubs_available() -> bool:
    if importlib.util.find_spec("mypy") is None:
        return False
    if (ROOT / "typings" / "_tensorrt" / "tensorrt" / "__init__.pyi").is_file():
        return True
    from importlib import metadata as md

    try:
        md.distribution("tensorrt-stubs")
    except md.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _stubs_available(), reason="mypy or tensorrt-stubs not installed")
def test_mypy_passes(tmp_path):
    env = dict(os.environ)
    if not (ROOT / "typings" / "_tensorrt" / "tensorrt" / "__init__.pyi").is_file():
        out = tmp_path / "trt-stubs"
        r = subprocess.run([sys.executable, "typings/get_tensorrt_stubs.py", "--no-download",
                            "--out", str(out)], cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
        assert r.returncode == 0, r.stderr
        env["MYPYPATH"] = str(out)
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=1800, check=False)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_trtexec_recipes_dry_run(tmp_path):
    env = dict(os.environ, MODEL=str(tmp_path / "fer.onnx"), RECIPE="all", DRY_RUN="1",
               CALIB_CACHE="fer.calib", QDQ_MODEL="fer.qdq.onnx", TRTEXEC="trtexec")  # fmt: skip
    r = subprocess.run(["bash", str(ROOT / "export" / "trtexec_recipes.sh")], env=env,
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    builds = [ln for ln in lines if ln.startswith("+ trtexec ")]
    sidecars = [ln for ln in lines if "--sidecar-for" in ln]
    assert len(builds) == len(sidecars) == 6
    assert all("--minShapes=input:1x1x48x48" in b and "--maxShapes=input:32x1x48x48" in b
               for b in builds)  # fmt: skip
    assert any("--int8" in b and "--calib=fer.calib" in b for b in builds)
    assert any("--useDLACore=0" in b and "--allowGPUFallback" in b for b in builds)
    assert any("--sparsity=enable" in b for b in builds)
    env["RECIPE"] = "nope"
    r = subprocess.run(["bash", str(ROOT / "export" / "trtexec_recipes.sh")], env=env,
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
