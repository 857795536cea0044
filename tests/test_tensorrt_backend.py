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
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edge_fer.backends import create_backend
from edge_fer.backends import tensorrt_backend as tb
from edge_fer.backends import trt_common as tc
from edge_fer.errors import UserError
from edge_fer.preprocess import PreprocessSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paths import ROOT
from processes import run, run_python
from trt_fakes import (
    CLASSES,
    C,
    FakeGPU,
    fake_engine,
    installer,
    make_fake_trt,
    metadata,
    reference,
    tiny_onnx,
)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """install(version, jetson=False, **gpu): the TensorRT/pycuda fakes (tests/trt_fakes.py)."""
    return installer(monkeypatch, tmp_path)


def _real_trt_usable() -> bool:
    try:
        tc.require_tensorrt()
        tc.require_pycuda()
    except UserError:
        return False
    return True


def _load_script(rel: str, name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- no TensorRT here -------------------------------------------------------------------------


def test_modules_import_without_tensorrt():
    code = (
        "import sys, edge_fer.backends.tensorrt_backend as b, edge_fer.export.engine as t; "
        "print(callable(b.create), hasattr(b, 'TensorRTBackend'), callable(t.build_engine), "
        "'tensorrt' in sys.modules, 'pycuda' in sys.modules)"
    )
    r = run_python("-c", code, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True", "False", "False"]


@pytest.mark.skipif(_real_trt_usable(), reason="TensorRT and pycuda are installed here")
def test_create_backend_says_not_available(tmp_path):
    eng = tmp_path / "fer.engine"
    eng.write_bytes(b"not really an engine")
    with pytest.raises(UserError) as ei:
        create_backend("tensorrt", eng)
    msg = str(ei.value)
    assert msg.startswith(tc.NOT_AVAILABLE)
    assert "\n" not in msg
    with pytest.raises(UserError, match="TensorRT backend not available"):
        create_backend("trt", eng, threads=1)


def test_stub_only_tensorrt_is_not_available(monkeypatch):
    # what `pip install --no-deps tensorrt-stubs` leaves: an importable, empty namespace package
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(UserError, match="only type stubs"):
        tc.require_tensorrt()


def test_missing_pycuda_is_not_available(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt("10.3.0", FakeGPU()))
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    eng = tmp_path / "fer.engine"
    eng.write_bytes(b"FAKE-ENGINE")
    with pytest.raises(UserError) as ei:
        tb.TensorRTBackend(eng)
    assert str(ei.value).startswith(tc.NOT_AVAILABLE) and "pycuda" in str(ei.value)


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


def test_run_tensorrt_with_the_bundled_int8_model_names_what_works(capsys) -> None:
    """`run --backend tensorrt --precision int8` pointed at export/README.md; the option that
    gives INT8 on TensorRT is --trt-precision int8."""
    from edge_fer.cli.main import main

    rc = main(["run", "--backend", "tensorrt", "--precision", "int8", "x.avi"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--trt-precision int8" in err[0], err


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
    f = tc.trt_features(version)
    assert tc.api_flavour(version) == api == f.api
    assert (f.explicit_batch_flag, f.memory_pool_api) == (explicit_flag, pool)
    assert (f.precision_flags, f.implicit_int8) == (precision_flags, implicit_int8)


@pytest.mark.parametrize("version", ["7.1.3", "abc", ""])
def test_version_dispatch_rejects(version):
    with pytest.raises(UserError):
        tc.api_flavour(version)


# -- sidecar ----------------------------------------------------------------------------------


def test_sidecar_round_trip(tmp_path):
    eng = tmp_path / "fer.fp16.engine"
    eng.write_bytes(b"engine bytes")
    assert tc.sidecar_path(eng) == tmp_path / "fer.fp16.engine.json"
    assert tc.read_sidecar(eng) is None
    side = tc.write_sidecar(
        eng, metadata(), tensorrt="10.3.0", precision="fp16", batch={"min": 1, "opt": 8, "max": 32}
    )
    assert side == tc.sidecar_path(eng)
    doc = tc.read_sidecar(eng)
    assert doc["format"] == tc.SIDECAR_FORMAT and doc["tensorrt"] == "10.3.0"
    assert doc["metadata"] == metadata() and doc["batch"]["max"] == 32
    assert tc.engine_metadata(eng) == metadata()
    spec = PreprocessSpec.from_metadata(tc.engine_metadata(eng))
    assert spec.classes == CLASSES and spec.input_size == 48
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left nothing behind


def test_sidecar_rejects_foreign_and_malformed(tmp_path):
    eng = tmp_path / "m.engine"
    tc.sidecar_path(eng).write_text("{not json")
    with pytest.raises(UserError, match="unreadable engine sidecar"):
        tc.read_sidecar(eng)
    tc.sidecar_path(eng).write_text(json.dumps({"metadata": {}}))
    with pytest.raises(UserError, match="not an edge-fer engine sidecar"):
        tc.read_sidecar(eng)
    tc.sidecar_path(eng).write_text(json.dumps({"format": tc.SIDECAR_FORMAT, "metadata": [1]}))
    with pytest.raises(UserError, match="metadata"):
        tc.read_sidecar(eng)


def test_sidecar_for_trtexec_engine_and_onnx_fallback(tmp_path, monkeypatch):
    from edge_fer.export.engine import write_sidecar_for

    model = tiny_onnx(tmp_path / "fer.onnx")
    eng = tmp_path / "fer.int8.engine"
    eng.write_bytes(b"from trtexec")
    # no sidecar yet: the sibling ONNX (stem prefix) supplies the metadata
    assert tc.engine_metadata(eng) == metadata()
    side = write_sidecar_for(eng, model, tensorrt="10.3.0")
    doc = json.loads(side.read_text())
    assert doc["metadata"] == metadata()
    assert doc["onnx_sha256"] == tc.file_sha256(model) and doc["source_onnx"] == "fer.onnx"
    # the same metadata through ONNX Runtime when the onnx package is absent
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert tc.onnx_metadata(model) == metadata()


# -- backend against the fakes ----------------------------------------------------------------


@pytest.mark.parametrize(
    "version, flavour",
    [
        ("8.2.1.8", "bindings"),
        ("8.5.2.2", "bindings"),
        ("8.6.1", "bindings"),
        ("10.3.0", "tensors"),
        ("11.0.0", "tensors"),
    ],
)
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
    assert gpu.host_freed == 2  # both page-locked buffers, inside the context
    # engine and execution context destroyed by close(), inside the CUDA context: none left
    # for the garbage collector to destroy later outside it
    assert gpu.live == set() and gpu.destroyed_outside_context == []
    be.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        be.infer(np.zeros((1, 1, 48, 48), np.float32))


@pytest.mark.parametrize("version", ["8.2.1.8", "8.6.1", "10.3.0"])
def test_backend_infers_from_worker_threads_and_closes_from_another(fake, tmp_path, version):
    """The runtime classifies from worker threads. pycuda's context stack (and CUDA's current
    context) is per thread: the context pushed by the thread that opened the backend is not
    current in a worker, so every call pushes and pops it in its own thread."""
    from concurrent.futures import ThreadPoolExecutor

    gpu = fake(version)
    be = create_backend("tensorrt", fake_engine(tmp_path), threads=1)
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((n, 1, 48, 48)).astype(np.float32) for n in (1, 5, 16, 20) * 3]
    try:
        with ThreadPoolExecutor(4) as pool:
            ys = list(pool.map(be.infer, xs))
        for x, y in zip(xs, ys):
            np.testing.assert_allclose(y, reference(x), rtol=1e-6, atol=1e-7)
    finally:
        with ThreadPoolExecutor(1) as pool:  # closed from yet another thread
            pool.submit(be.close).result()
    assert len(gpu.stacks_used) > 2 and all(st == [] for st in gpu.stacks_used)
    assert gpu.blocks == {} and gpu.host_freed == 2
    assert gpu.live == set() and gpu.destroyed_outside_context == []


def test_fake_contexts_have_the_tensor_api_from_8_5_only():
    """TensorRT 8.0-8.4 contexts have set_binding_shape/execute_async_v2 only; 8.5 added
    set_input_shape/set_tensor_address/execute_async_v3 (NVIDIA/TensorRT release/8.2 and
    release/8.5 python/src/infer/pyCore.cpp); 10.0 removed the binding API."""
    tensor_api = ("set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3")
    binding_api = ("set_binding_shape", "get_binding_shape", "execute_async_v2")
    for version, tensors, bindings in (
        ("8.2.1.8", False, True),
        ("8.4.3", False, True),
        ("8.5.2.2", True, True),
        ("10.3.0", True, False),
        ("11.0.0", True, False),
    ):
        gpu = FakeGPU()
        t = make_fake_trt(version, gpu)
        gpu.stack.append("ctx")
        eng = t.Runtime(None).deserialize_cuda_engine(b"FAKE-ENGINE")
        ctx = eng.create_execution_context()
        assert all(hasattr(ctx, a) == tensors for a in tensor_api), version
        assert all(hasattr(ctx, a) == bindings for a in binding_api), version
        assert hasattr(eng, "num_io_tensors") == tensors, version
        flags = vars(t.NetworkDefinitionCreationFlag)
        assert ("EXPLICIT_BATCH" in flags) == (not version.startswith("11.")), version


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
    trunc = fake_engine(tmp_path, "trunc.engine", tensorrt="10.3.0")
    trunc.write_bytes(trunc.read_bytes() + b"[truncated]")
    with pytest.raises(UserError, match="truncated or foreign"):
        tb.TensorRTBackend(trunc)
    # the sidecar is checked before TensorRT sees the bytes (a valid engine here)
    old = fake_engine(tmp_path, "old.engine", tensorrt="8.5.2.2")
    with pytest.raises(UserError, match=r"TensorRT 8\.5\.2\.2, this is TensorRT 10\.3\.0"):
        tb.TensorRTBackend(old)
    other = fake_engine(
        tmp_path, "x86.engine", tensorrt="10.3.0", compute_capability="8.6", gpu="RTX 3060"
    )
    with pytest.raises(UserError, match=r"compute capability 8\.6 \(RTX 3060\), this is 8\.7"):
        tb.TensorRTBackend(other)
    v1 = fake_engine(tmp_path, "v1.engine", tensorrt="10.3.0", gpu_tag="sm72", gpu="Xavier")
    with pytest.raises(UserError, match=r"compute capability 7\.2 \(Xavier\), this is 8\.7"):
        tb.TensorRTBackend(v1)  # a version-1 sidecar: only the sm tag
    (tmp_path / "empty.plan").write_bytes(b"")
    with pytest.raises(UserError, match="empty file"):
        tb.TensorRTBackend(tmp_path / "empty.plan")
    with pytest.raises(UserError, match="no such model file"):
        tb.TensorRTBackend(tmp_path / "missing.engine")
    with pytest.raises(UserError, match="no CUDA device 3"):
        tb.TensorRTBackend(fake_engine(tmp_path), device=3)
    assert gpu.blocks == {} and gpu.stack == []  # failures release what they took


def test_engine_from_another_board_of_the_same_gpu_warns(fake, tmp_path, capsys):
    fake("10.3.0", jetson="R36 (release), REVISION: 4.3")
    eng = fake_engine(
        tmp_path, tensorrt="10.3.0", compute_capability="8.7", gpu="Orin (nvgpu)", l4t="36.3.0"
    )
    with tb.TensorRTBackend(eng):
        pass
    err = capsys.readouterr().err
    assert "another GPU (Orin (nvgpu); this is Fake Orin)" in err
    assert "another L4T release (36.3.0; this is 36.4.3)" in err


def test_precision_default_and_checks(fake, tmp_path, capsys):
    fake("10.3.0")
    assert tb.default_precision() == "fp32"
    fake("10.3.0", jetson=True)
    assert tb.default_precision() == "fp16"
    model = tiny_onnx(tmp_path / "fer.onnx")
    with tb.TensorRTBackend(model) as be:  # FP16 by default on a Jetson
        assert be.precision == "fp16" and ".fp16." in be.engine_path.name
        doc = tc.read_sidecar(be.engine_path)
        assert doc["l4t"] == "36.4.3" and doc["jetpack"] == "6.1/6.2"
        assert doc["cuda"] == "12.6" and doc["compute_capability"] == "8.7"
    with pytest.raises(UserError, match="precision must be one of fp32, fp16, int8"):
        tb.TensorRTBackend(model, precision="bf16")
    with pytest.raises(UserError, match=r"Q/DQ model \(model\.int8\.qdq\.onnx"):
        tb.TensorRTBackend(model, precision="int8")  # a plain model, no cache


def test_backend_int8_from_bundled_cache_and_qdq(fake, tmp_path):
    from edge_fer.classify import ASSETS
    from edge_fer.export.engine import BUNDLED_CALIB_CACHE

    if not BUNDLED_CALIB_CACHE.is_file():
        pytest.skip("edge_fer/assets/fer_default.calib.cache is not in this checkout")
    gpu = fake("8.5.2.2")  # JetPack 5: the committed 10.3 cache gets an 8.5 header
    cache_dir = tmp_path / "cache"
    os.environ["EDGE_FER_CACHE"] = str(cache_dir)
    try:
        be = tb.TensorRTBackend(ASSETS / "fer_default.onnx", precision="int8")
    finally:
        del os.environ["EDGE_FER_CACHE"]
    with be:
        cal = gpu.config.int8_calibrator
        assert cal.read_calibration_cache().startswith(b"TRT-8502-EntropyCalibration2\n")
        assert be.engine_path.parent in (ASSETS, cache_dir / "tensorrt")
        doc = tc.read_sidecar(be.engine_path)
        assert doc["int8"] == "calibration-cache" and doc["calib_cache_sha256"]
    be.engine_path.unlink()
    tc.sidecar_path(be.engine_path).unlink()
    qdq = tiny_onnx(tmp_path / "model.int8.qdq.onnx", qdq="tensorrt")
    with tb.TensorRTBackend(qdq, precision="int8") as be:
        assert gpu.config.int8_calibrator is None and "INT8" in gpu.config.flags
    cpu = tiny_onnx(tmp_path / "model.int8.cpu.onnx", qdq="cpu")
    with pytest.raises(UserError, match=r"ONNX Runtime on CPU.*model\.int8\.qdq\.onnx"):
        tb.TensorRTBackend(cpu, precision="int8")


def test_engine_cache_is_in_edge_fer_cache_folder(monkeypatch, tmp_path):
    """The engine cache follows edge_fer.cache's rules (one helper): ~ expanded, a relative
    XDG_CACHE_HOME ignored."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("EDGE_FER_CACHE", "~/c")
    assert tc.cache_dir() == tmp_path / "c" / "tensorrt"
    monkeypatch.delenv("EDGE_FER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    assert tc.cache_dir() == tmp_path / ".cache" / "edge-fer" / "tensorrt"
    monkeypatch.setenv("HOME", "not-absolute")  # no home: no cache folder, not "./~/.cache"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert tc.cache_dir() is None


def test_add_trt_args():
    import argparse

    p = argparse.ArgumentParser()
    tb.add_trt_args(p)
    a = p.parse_args(["--trt-precision", "int8", "--calib-cache", "c.cache"])
    assert (a.trt_precision, a.calib_cache) == ("int8", "c.cache")
    assert p.parse_args([]).trt_precision is None
    with pytest.raises(SystemExit):
        p.parse_args(["--trt-precision", "int4"])


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
        doc = tc.read_sidecar(be.engine_path)
        assert doc["onnx_sha256"] == tc.file_sha256(model) and doc["gpu"] == "Fake Orin"
    assert "building a TensorRT fp32 engine" in capsys.readouterr().err
    with tb.TensorRTBackend(model) as be:  # cached: no second build
        assert gpu.builds == 1 and be.engine_path.name == name
    with tb.TensorRTBackend(model, rebuild=True):
        assert gpu.builds == 2
    with tb.TensorRTBackend(model, precision="fp16", max_batch=4) as be:
        assert gpu.builds == 3 and ".fp16.b4." in be.engine_path.name
        assert gpu.config.profiles[0].shapes[1:] == ((1, 1, 48, 48), (4, 1, 48, 48), (4, 1, 48, 48))


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
        r = run_python("typings/get_tensorrt_stubs.py", "--no-download", "--out", out)
        assert r.returncode == 0, r.stderr
        env["MYPYPATH"] = str(out)
    r = run_python("-m", "mypy", env=env, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr


def _recipes(env: dict):
    return run(["bash", ROOT / "export" / "trtexec_recipes.sh"], env=env, timeout=60)


def _int8_calib_env(model: Path, cache: Path, exe: Path, **more) -> dict:
    """The environment of `RECIPE=int8-calib` for MODEL, CALIB_CACHE and EDGE_FER (+ `more`)."""
    return dict(
        os.environ,
        MODEL=str(model),
        RECIPE="int8-calib",
        CALIB_CACHE=str(cache),
        EDGE_FER=str(exe),
        **{k: str(v) for k, v in more.items()},
    )


def test_trtexec_recipes_dry_run(tmp_path):
    env = dict(
        os.environ,
        MODEL=str(tmp_path / "fer.onnx"),
        RECIPE="all",
        DRY_RUN="1",
        CALIB_CACHE="fer.calib",
        QDQ_MODEL="fer.qdq.onnx",
        TRTEXEC="trtexec",
    )
    r = _recipes(env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    builds = [ln for ln in lines if ln.startswith("+ trtexec ")]
    sidecars = [ln for ln in lines if "--sidecar-for" in ln]
    assert len(builds) == len(sidecars) == 6
    dla = [b for b in builds if "--useDLACore=0" in b]
    assert len(dla) == 1 and "--allowGPUFallback" in dla[0]
    # DLA: a static profile (min = opt = max), else every layer falls back to the GPU
    assert all(f"--{k}Shapes=input:8x1x48x48" in dla[0] for k in ("min", "opt", "max"))
    assert all(
        "--minShapes=input:1x1x48x48" in b and "--maxShapes=input:32x1x48x48" in b
        for b in builds
        if b not in dla
    )
    assert all("--skipInference" in b for b in builds)  # dry run: the 8.6+ spelling
    assert all(s.startswith("+ edge-fer build-engine ") for s in sidecars)
    # int8-calib builds from the copy of the cache made for the trtexec's TensorRT; a dry run
    # without a trtexec says so and writes nothing
    calib = tmp_path / "fer.int8.engine.calib"
    assert any("--int8" in b and f"--calib={calib}" in b for b in builds)
    assert any(ln.startswith("# fer.calib -> ") and "TensorRT of trtexec" in ln for ln in lines)
    assert not calib.exists()
    assert any("--sparsity=enable" in b for b in builds)
    env["RECIPE"] = "nope"
    r = _recipes(env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_trtexec_recipes_use_build_only_on_tensorrt_8_5(tmp_path):
    # JetPack 5's trtexec (TensorRT 8.5) has --buildOnly; --skipInference arrived in 8.6
    log = tmp_path / "calls.txt"
    trtexec = tmp_path / "trtexec"
    trtexec.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ "$1" == --help ]]; then echo "  --buildOnly  Skip inference perf measurement"; '
        "exit 0; fi\n"
        f'echo "$@" >> {log}\n'
    )
    trtexec.chmod(0o755)
    model = tmp_path / "fer.onnx"
    model.write_bytes(b"onnx")
    env = dict(os.environ, MODEL=str(model), RECIPE="fp16", TRTEXEC=str(trtexec), EDGE_FER="true")
    r = _recipes(env)
    assert r.returncode == 0, r.stderr
    call = log.read_text()
    assert "--buildOnly" in call and "--skipInference" not in call and "--fp16" in call


_FAKE_TRTEXEC = r"""#!/usr/bin/env bash
@BANNER@
if [[ "$1" == --help ]]; then
  for i in $(seq 1 200); do printf '  --option%03d=<x>   build option help text padding\n' $i; done
@HELP@
  for i in $(seq 201 420); do printf '  --option%03d=<x>   inference option help text\n' $i; done
  exit 0
fi
for a in "$@"; do
  case "$a" in
@REJECT@
  esac
done
echo "$*" >> "@LOG@"
for a in "$@"; do case "$a" in --calib=*) head -n 1 "${a#--calib=}" >> "@LOG@" ;; esac; done
"""


def _fake_trtexec(
    tmp_path: Path, banner: str | None, *, skip_inference: bool = True, build_only: bool = False
) -> tuple[Path, Path]:
    """A trtexec that prints its --help one line per write, as trtexec's std::endl does (its
    --skipInference line is followed by 10 KB more), starts with the banner of `banner` (e.g.
    "[TensorRT v8502]"), rejects the flags its version lacks, and logs each build (the
    arguments, then the first line of the --calib file) to the file returned."""
    log = tmp_path / "calls.txt"
    flags = {"--skipInference": skip_inference, "--buildOnly": build_only}
    text = (
        _FAKE_TRTEXEC.replace(
            "@BANNER@", f'echo "&&&& RUNNING TensorRT.trtexec {banner} # $0 $*"' if banner else ""
        )
        .replace(
            "@HELP@", "\n".join(f"  echo '  {f}   Skip inference'" for f, k in flags.items() if k)
        )
        .replace(
            "@REJECT@",
            "\n".join(
                f"    {f}) echo '[E] Unknown option: {f}' >&2; exit 1 ;;"
                for f, k in flags.items()
                if not k
            ),
        )
        .replace("@LOG@", str(log))
    )
    trtexec = tmp_path / "trtexec"
    trtexec.write_text(text)
    trtexec.chmod(0o755)
    return trtexec, log


def _edge_fer_with_python(tmp_path: Path, python_works: bool = True) -> Path:
    """bin/edge-fer (logs its arguments) beside bin/python3: this Python with the checkout on
    its path, or (python_works=False) one without edge_fer (exit 3, as the import fails)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "edge-fer"
    exe.write_text(f'#!/bin/sh\necho "$*" >> "{tmp_path}/edge-fer.txt"\n')
    py = bin_dir / "python3"
    if python_works:
        py.write_text(
            f'#!/bin/sh\nPYTHONPATH="{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" "$@"\n'
        )
    else:
        py.write_text("#!/bin/sh\nexit 3\n")
    exe.chmod(0o755)
    py.chmod(0o755)
    return exe


def test_trtexec_recipes_pick_skip_inference_every_time_on_tensorrt_10(tmp_path):
    """TensorRT 10 trtexec has --skipInference and no --buildOnly; its --help is long and written
    a line at a time, so `trtexec --help | grep -q` under pipefail used to fail (SIGPIPE) and
    pass --buildOnly, which this trtexec refuses."""
    trtexec, log = _fake_trtexec(tmp_path, "[TensorRT v100300]")
    model = tmp_path / "fer.onnx"
    model.write_bytes(b"onnx")
    env = dict(os.environ, MODEL=str(model), RECIPE="fp16", TRTEXEC=str(trtexec), EDGE_FER="true")
    for _ in range(4):
        r = _recipes(env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "--skipInference" in r.stdout and "--buildOnly" not in r.stdout
    calls = log.read_text().splitlines()
    assert len(calls) == 4 and all("--skipInference" in c for c in calls)


@pytest.mark.parametrize(
    "banner, header, version",
    [
        ("[TensorRT v8502]", "TRT-8502-EntropyCalibration2", "8.5.2"),  # JetPack 5
        ("[TensorRT v8602]", "TRT-8602-EntropyCalibration2", "8.6.2"),  # JetPack 6.0
        ("[TensorRT v101600] [b12]", "TRT-101600-EntropyCalibration2", "10.16.0"),
    ],
)
def test_trtexec_recipes_int8_calib_cache_made_for_the_trtexec(tmp_path, banner, header, version):
    """The committed cache (TRT-100300) would be skipped by another TensorRT, and trtexec would
    calibrate on random data: the build gets a copy whose header names the trtexec's version."""
    trtexec, log = _fake_trtexec(
        tmp_path,
        banner,
        build_only=banner == "[TensorRT v8502]",
        skip_inference=banner != "[TensorRT v8502]",
    )
    model = tmp_path / "fer.onnx"
    model.write_bytes((ROOT / "edge_fer" / "assets" / "fer_default.onnx").read_bytes())
    cache = ROOT / "calibration" / "fer_default" / "calib.cache"
    original = cache.read_bytes()
    assert original.startswith(b"TRT-100300-EntropyCalibration2\n")
    r = _recipes(_int8_calib_env(model, cache, _edge_fer_with_python(tmp_path), TRTEXEC=trtexec))
    assert r.returncode == 0, r.stdout + r.stderr
    copy = tmp_path / "fer.int8.engine.calib"
    call, first = log.read_text().splitlines()
    assert f"--calib={copy}" in call and "--int8" in call
    assert first == header  # what trtexec read
    assert copy.read_bytes() == original.replace(
        b"TRT-100300-EntropyCalibration2", header.encode(), 1
    )
    assert cache.read_bytes() == original  # the committed cache is untouched
    assert f"TensorRT {version}" in r.stdout
    assert "note:" not in r.stderr  # edge-fer's Python made (and checked) the copy
    assert "--sidecar-for" in (tmp_path / "edge-fer.txt").read_text()


def test_trtexec_recipes_int8_calib_without_edge_fer_python(tmp_path):
    """No Python with edge_fer: the header alone is rewritten, and a note says the tensor names
    were not checked; a cache of another calibrator is refused."""
    trtexec, log = _fake_trtexec(tmp_path, "[TensorRT v8602]")
    exe = _edge_fer_with_python(tmp_path, python_works=False)
    model = tmp_path / "fer.onnx"
    model.write_bytes(b"onnx")
    cache = tmp_path / "in.cache"
    cache.write_text("TRT-100300-EntropyCalibration2\ninput: 3c810204\n")
    path = f"{exe.parent}{os.pathsep}{os.environ['PATH']}"
    env = _int8_calib_env(model, cache, exe, TRTEXEC=trtexec, PATH=path)
    r = _recipes(env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "fer.int8.engine.calib").read_text() == (
        "TRT-8602-EntropyCalibration2\ninput: 3c810204\n"
    )
    assert "tensor names not checked" in r.stderr
    assert log.read_text().splitlines()[1] == "TRT-8602-EntropyCalibration2"
    log.unlink()
    cache.write_text("TRT-100300-MinMaxCalibration\ninput: 3c810204\n")
    r = _recipes(env)
    assert r.returncode == 2 and "not an EntropyCalibration2" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not log.exists()


def test_trtexec_recipes_int8_calib_refusals(tmp_path):
    """Refused in one line, exit 2, before any build: a trtexec whose version cannot be read (a
    TRT_VERSION contradicting its banner too), a cache of another model, TensorRT 11."""
    model = tmp_path / "fer.onnx"
    model.write_bytes((ROOT / "edge_fer" / "assets" / "fer_default.onnx").read_bytes())
    cache = ROOT / "calibration" / "fer_default" / "calib.cache"
    exe = _edge_fer_with_python(tmp_path)
    base = _int8_calib_env(model, cache, exe)

    def refused(env, words):
        r = _recipes(env)
        assert r.returncode == 2, r.stdout + r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, r.stderr
        assert not log.exists() and not (tmp_path / "fer.int8.engine.calib").exists()

    trtexec, log = _fake_trtexec(tmp_path, None)  # no banner: version unknown
    refused(dict(base, TRTEXEC=str(trtexec)), "cannot tell the TensorRT version")
    # ... but TRT_VERSION names it; RECIPE=all refuses before the other builds
    r = _recipes(dict(base, TRTEXEC=str(trtexec), TRT_VERSION="8.6.2", RECIPE="all"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "fer.int8.engine.calib").read_text().startswith("TRT-8602-")
    (tmp_path / "fer.int8.engine.calib").unlink()
    log.unlink()
    refused(dict(base, TRTEXEC=str(trtexec), TRT_VERSION="10"), "TRT_VERSION must look like")

    trtexec, log = _fake_trtexec(tmp_path, "[TensorRT v8602]")
    refused(dict(base, TRTEXEC=str(trtexec), TRT_VERSION="10.3.0"), "TRT_VERSION=10.3.0 but")
    other = tmp_path / "other.cache"
    other.write_text("TRT-100300-EntropyCalibration2\nsome_tensor: 3c810204\n")
    refused(
        dict(base, TRTEXEC=str(trtexec), CALIB_CACHE=str(other), RECIPE="all"),
        "does not match the model",
    )
    refused(
        dict(base, TRTEXEC=str(trtexec), CALIB_CACHE=str(tmp_path / "none.cache")),
        "no such calibration cache",
    )
    trtexec, log = _fake_trtexec(tmp_path, "[TensorRT v110000] [b1]")
    refused(dict(base, TRTEXEC=str(trtexec)), "use RECIPE=int8-qdq")


def test_trtexec_recipes_int8_calib_dry_run_shows_the_copy(tmp_path):
    trtexec, log = _fake_trtexec(
        tmp_path, "[TensorRT v8502]", build_only=True, skip_inference=False
    )
    cache = ROOT / "calibration" / "fer_default" / "calib.cache"
    env = dict(
        os.environ,
        MODEL=str(tmp_path / "fer.onnx"),
        RECIPE="int8-calib",
        CALIB_CACHE=str(cache),
        TRTEXEC=str(trtexec),
        DRY_RUN="1",
    )
    r = _recipes(env)
    assert r.returncode == 0, r.stderr
    copy = tmp_path / "fer.int8.engine.calib"
    info, build, _sidecar = r.stdout.splitlines()
    assert info == (
        f"# {cache} (TRT-100300-EntropyCalibration2) -> {copy} "
        "(TRT-8502-EntropyCalibration2, TensorRT 8.5.2 of this trtexec)"
    )
    assert f"--calib={copy}" in build and "--buildOnly" in build  # this trtexec is 8.5
    assert not copy.exists() and not log.exists()
