"""`edge-fer build-engine` and edge_fer.export.engine against the TensorRT fakes of each
version (8.2, 8.5, 8.6, 10.3, 11; tests/trt_fakes.py): precision paths, DLA static profile and
fallback report, calibration-cache header rewriting, target refusals, sidecar facts, engine
cache names, timing cache, and that a refused or failed build leaves no file behind.
The fakes check names, flags and call order, not TensorRT's numerics; a real engine needs a GPU.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from pathlib import Path

import pytest
from paths import needs_modules
from processes import refusal_line, run_cli

from edge_fer.backends import tensorrt_backend as tb
from edge_fer.backends import trt_common as tc
from edge_fer.errors import UserError
from edge_fer.export import targets as T
from edge_fer.export.engine import (
    BuildConfig,
    build_engine,
    cached_engine_name,
    default_engine_path,
    quant_layout,
)
from edge_fer.quantize import trt_cache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trt_fakes import installer, metadata, tiny_onnx

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """install(version, jetson=False, **gpu): the TensorRT/pycuda fakes (tests/trt_fakes.py)."""
    return installer(monkeypatch, tmp_path)


BUNDLED_CPU_INT8 = ROOT / "edge_fer" / "assets" / "fer_default.int8.onnx"
VERSIONS = ["8.5.2.2", "8.6.1", "10.3.0", "11.0.0"]
CODES = {"8.5.2.2": 8502, "8.6.1": 8601, "10.3.0": 100300}


def cli(args: list[str], capsys) -> tuple[int, list[str], str]:
    from edge_fer.cli.main import main

    rc = main(["build-engine", *args])
    cap = capsys.readouterr()
    return rc, [ln for ln in cap.err.splitlines() if ln.strip()], cap.out


def calib_cache(path: Path, version: str = "10.3.0", names=("input", "logits")) -> Path:
    path.write_bytes(trt_cache.format_cache({n: 2.0 for n in names}, version))
    return path


def files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


# -- the target table ---------------------------------------------------------------------


def test_target_table_is_data_with_every_field():
    keys = {
        "description",
        "gpu_arch",
        "compute_capability",
        "min_compute_capability",
        "jetson",
        "fp16",
        "int8",
        "dla_cores",
        "sparsity",
        "jetpack",
        "tensorrt",
        "default_tensorrt",
    }
    for name, row in T.TARGETS.items():
        assert keys <= set(row), name
        assert len(row["jetpack"]) in (0, len(row["tensorrt"])), name
        trt_cache.version_code(row["default_tensorrt"])  # a real version
    assert not T.TARGETS["nano"]["int8"] and not T.TARGETS["tx2"]["int8"]
    assert T.TARGETS["xavier-nx"]["dla_cores"] == T.TARGETS["xavier-agx"]["dla_cores"] == 2
    assert T.TARGETS["orin-nano"]["dla_cores"] == 0
    assert all(
        T.TARGETS[n]["sparsity"] and T.TARGETS[n]["dla_cores"] for n in ("orin-nx", "orin-agx")
    )
    assert T.target_problem("orin-agx", "int8", dla_core=1, sparse=True) is None
    assert "no INT8" in T.target_problem("nano", "int8")
    assert "no DLA" in T.target_problem("orin-nano", "fp16", dla_core=0)
    assert "2:4 sparse" in T.target_problem("xavier-nx", "fp16", sparse=True)
    with pytest.raises(UserError, match="unknown target 'jetson-tk1'; choose one of nano"):
        T.get_target("jetson-tk1")


# -- refusals before building: one line, exit 2, nothing written ---------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "jetson-tk1"], "unknown target 'jetson-tk1'"),
        (["--target", "nano", "--precision", "int8"], "Jetson Nano .* has no INT8 kernels"),
        (["--target", "orin-nano", "--precision", "fp16", "--dla-core", "0"], "has no DLA"),
        (["--target", "xavier-nx", "--precision", "fp16", "--dla-core", "2"], "not core 2"),
        (["--precision", "fp32", "--dla-core", "0"], "DLA runs FP16 or INT8 only"),
        (["--precision", "int8"], "INT8 needs a model with Q/DQ nodes or a calibration cache"),
        # the library's errors name the parameter; the CLI says the flag
        (["--calib-cache", "x.cache"], "--calib-cache is only used with precision int8"),
        (["--min-batch", "8", "--max-batch", "4"], "--max-batch 4 is below the minimum batch 8"),
        (["--workspace-mb", "0"], "--workspace-mb must be an integer >= 1"),
        (["--max-batch", "0"], "--max-batch must be an integer >= 1, got 0"),
    ],
)
def test_cli_refusals_are_one_line(fake, tmp_path, capsys, args, message):
    gpu = fake("10.3.0")
    model = tiny_onnx(tmp_path / "fer.onnx")
    before = files(tmp_path)
    rc, err, _ = cli([str(model), *args], capsys)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("edge-fer build-engine: error: ")
    import re

    assert re.search(message, err[0]), err[0]
    assert gpu.builds == 0 and files(tmp_path) == before


def test_missing_model_and_no_tensorrt(tmp_path, capsys):
    rc, err, _ = cli([str(tmp_path / "missing.onnx"), "--precision", "fp16"], capsys)
    assert rc == 2 and len(err) == 1 and "no such ONNX model" in err[0]
    model = tiny_onnx(tmp_path / "fer.onnx")
    try:
        tc.require_tensorrt()
    except UserError:
        rc, err, _ = cli([str(model)], capsys)
        assert rc == 2 and len(err) == 1 and "TensorRT backend not available" in err[0]


def test_a_file_that_is_not_onnx_is_one_line(fake, tmp_path, capsys):
    gpu = fake("10.3.0")
    bad = tmp_path / "fer.onnx"
    bad.write_bytes(b"not an ONNX model")
    rc, err, _ = cli([str(bad), "--precision", "fp16"], capsys)
    assert rc == 2 and len(err) == 1 and "not a loadable ONNX model" in err[0], err
    assert gpu.builds == 0 and files(tmp_path) == {"fer.onnx"}


def test_cpu_int8_layout_is_refused_naming_the_tensorrt_file(fake, tmp_path, capsys):
    fake("10.3.0")
    # the bundled INT8 model is ONNX Runtime's CPU layout: uint8 activations, non-zero zps
    assert quant_layout(BUNDLED_CPU_INT8) == "cpu"
    rc, err, _ = cli(
        [str(BUNDLED_CPU_INT8), "--precision", "int8", "--out", str(tmp_path / "x.engine")], capsys
    )
    assert rc == 2 and len(err) == 1
    assert "ONNX Runtime on CPU" in err[0] and "model.int8.qdq.onnx" in err[0]
    assert not (tmp_path / "x.engine").exists()
    assert quant_layout(tiny_onnx(tmp_path / "q.onnx", qdq="tensorrt")) == "tensorrt"
    assert quant_layout(tiny_onnx(tmp_path / "f.onnx")) is None


def test_qdq_model_counts_as_int8_for_the_target(fake, tmp_path, capsys):
    fake("8.2.1.8")
    qdq = tiny_onnx(tmp_path / "model.int8.qdq.onnx", qdq="tensorrt")
    rc, err, _ = cli([str(qdq), "--target", "nano"], capsys)
    assert rc == 2 and "no INT8 kernels" in err[0]


def test_int8_on_a_gpu_without_int8_is_refused(fake, tmp_path, capsys):
    gpu = fake("8.2.1.8", jetson="R32 (release), REVISION: 7.4", cc=(5, 3), name="NVIDIA Tegra X1")
    qdq = tiny_onnx(tmp_path / "model.int8.qdq.onnx", qdq="tensorrt")
    rc, err, _ = cli([str(qdq), "--precision", "int8"], capsys)  # no --target: the GPU says so
    assert rc == 2 and len(err) == 1 and "(NVIDIA Tegra X1) has no INT8 kernels" in err[0]
    assert gpu.builds == 0 and not list(tmp_path.glob("*.engine*"))


def test_target_of_another_gpu_is_refused(fake, tmp_path, capsys):
    fake("10.3.0", cc=(8, 6), name="RTX 3060")
    model = tiny_onnx(tmp_path / "fer.onnx")
    rc, err, _ = cli([str(model), "--precision", "fp16", "--target", "orin-agx"], capsys)
    assert rc == 2 and "compute capability 8.7, this GPU (RTX 3060) is 8.6" in err[0]
    rc, _, _ = cli([str(model), "--precision", "fp16", "--target", "desktop-rtx"], capsys)
    assert rc == 0


# -- precision per TensorRT version ---------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_fp32_and_fp16(fake, tmp_path, version):
    gpu = fake(version)
    model = tiny_onnx(tmp_path / "fer.onnx")
    rep = build_engine(model, tmp_path / "a.engine", BuildConfig(workspace_mb=256))
    assert gpu.network_flags == (1 if version.startswith("8.") else 0)  # EXPLICIT_BATCH on 8.x
    assert gpu.config.flags == set() and gpu.config.pool == ("WORKSPACE", 256 << 20)
    assert rep["precision"] == "fp32" and rep["int8"] is None
    if version.startswith("11."):
        with pytest.raises(UserError, match="no FP16 builder flag.*ModelOpt AutoCast"):
            build_engine(model, tmp_path / "b.engine", BuildConfig(precision="fp16"))
        assert not (tmp_path / "b.engine").exists()
    else:
        rep = build_engine(
            model, tmp_path / "b.engine", BuildConfig(precision="fp16", opt_batch=64)
        )
        assert gpu.config.flags == {"FP16"} and rep["precision"] == "fp16"
        assert gpu.config.profiles[0].shapes == (
            "input",
            (1, 1, 48, 48),
            (32, 1, 48, 48),
            (32, 1, 48, 48),
        )


def test_tensorrt_8_2_uses_max_workspace_size(fake, tmp_path):
    gpu = fake("8.2.1.8")  # JetPack 4.6: before set_memory_pool_limit
    build_engine(
        tiny_onnx(tmp_path / "fer.onnx"), tmp_path / "a.engine", BuildConfig(workspace_mb=64)
    )
    assert gpu.config.pool is None and gpu.config.max_workspace_size == 64 << 20


@pytest.mark.parametrize("version", VERSIONS)
def test_int8_from_qdq_model(fake, tmp_path, version):
    gpu = fake(version)
    gpu.qdq = True
    qdq = tiny_onnx(tmp_path / "model.int8.qdq.onnx", qdq="tensorrt")
    rep = build_engine(qdq, tmp_path / "q.engine", BuildConfig(precision="int8"))
    want = set() if version.startswith("11.") else {"INT8"}  # 11: strongly typed, no flag
    assert gpu.config.flags == want and rep["int8"] == "qdq" and rep["precision"] == "int8"
    if not version.startswith("11."):
        assert gpu.config.int8_calibrator is None
    cache = calib_cache(tmp_path / "c.cache")
    with pytest.raises(UserError, match="has Q/DQ nodes.*leave out --calib-cache"):
        build_engine(
            qdq, tmp_path / "x.engine", BuildConfig(precision="int8", calib_cache=str(cache))
        )


def test_int8_qdq_without_the_onnx_package(fake, tmp_path, monkeypatch, capsys):
    """A Jetson's runtime install has no onnx package: the Q/DQ model is recognised from
    TensorRT's parse (backend and CLI), and a plain model is still refused, after the parse."""
    gpu = fake("10.3.0")
    qdq = tiny_onnx(tmp_path / "model.int8.qdq.onnx", qdq="tensorrt")
    plain = tiny_onnx(tmp_path / "fer.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert quant_layout(qdq) is None  # the layout cannot be read here
    gpu.qdq = True
    rc, err, _ = cli([str(qdq), "--precision", "int8", "--out", str(tmp_path / "q.engine")], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "q.engine.json").read_text())["int8"] == "qdq"
    with tb.TensorRTBackend(qdq, precision="int8") as be:
        assert be.sidecar["int8"] == "qdq" and gpu.config.flags == {"INT8"}
    capsys.readouterr()
    gpu.qdq = False
    rc, err, _ = cli(
        [str(plain), "--precision", "int8", "--out", str(tmp_path / "p.engine")], capsys
    )
    assert rc == 2 and len(err) == 1 and "Q/DQ nodes or a calibration cache" in err[0]
    assert not (tmp_path / "p.engine").exists()


@pytest.mark.parametrize("version", VERSIONS)
def test_int8_from_calibration_cache_header_rewritten(fake, tmp_path, version):
    gpu = fake(version)
    model = tiny_onnx(tmp_path / "fer.onnx")
    cache = calib_cache(tmp_path / "fer.calib", "10.3.0")  # as committed: TRT-100300
    cfg = BuildConfig(precision="int8", calib_cache=str(cache))
    if version.startswith("11."):
        with pytest.raises(UserError, match="no calibration-cache INT8.*Q/DQ model"):
            build_engine(model, tmp_path / "c.engine", cfg)
        assert gpu.builds == 0 and not (tmp_path / "c.engine").exists()
        return
    rep = build_engine(model, tmp_path / "c.engine", cfg)
    cal = gpu.config.int8_calibrator
    data = cal.read_calibration_cache()
    assert data.split(b"\n", 1)[0] == f"TRT-{CODES[version]}-EntropyCalibration2".encode()
    assert data.split(b"\n", 1)[1] == cache.read_bytes().split(b"\n", 1)[1]  # ranges kept
    assert cal.get_batch(["input"]) is None and cal.get_batch_size() == 8
    assert gpu.calib_read == data  # what the (fake) builder read through the calibrator
    assert gpu.config.flags == {"INT8"} and gpu.config.calib_profile is gpu.config.profiles[0]
    assert rep["int8"] == "calibration-cache"
    assert rep["calib_cache_sha256"] == tc.file_sha256(cache)
    assert cache.read_bytes().startswith(b"TRT-100300-")  # the file itself is untouched


def test_calibration_cache_refusals(fake, tmp_path, capsys):
    gpu = fake("8.6.1")
    model = tiny_onnx(tmp_path / "fer.onnx")
    other = calib_cache(tmp_path / "other.cache", names=("input", "/net/conv9/Relu_output_0"))
    rc, err, _ = cli([str(model), "--precision", "int8", "--calib-cache", str(other)], capsys)
    assert rc == 2 and len(err) == 1 and "does not match the model" in err[0]
    assert "/net/conv9/Relu_output_0" in err[0]
    minmax = tmp_path / "minmax.cache"
    minmax.write_bytes(b"TRT-8601-MinMaxCalibration\ninput: 3c010204\n")
    rc, err, _ = cli([str(model), "--precision", "int8", "--calib-cache", str(minmax)], capsys)
    assert rc == 2 and "MinMaxCalibration cache" in err[0]
    nan = tmp_path / "nan.cache"
    nan.write_bytes(b"TRT-8601-EntropyCalibration2\ninput: 7fc00000\n")
    rc, err, _ = cli([str(model), "--precision", "int8", "--calib-cache", str(nan)], capsys)
    assert rc == 2 and "scale nan" in err[0]
    assert gpu.builds == 0 and not list(tmp_path.glob("*.engine*"))


@pytest.mark.parametrize("bits", ["7fc00000", "7f800000", "ff800000", "bf800000"])
def test_parse_cache_refuses_nan_inf_and_negative_scales(bits):
    data = f"TRT-8601-EntropyCalibration2\ninput: 3c010204\nx: {bits}\n".encode()
    with pytest.raises(UserError, match=r"c:3: tensor 'x' has scale"):
        trt_cache.parse_cache(data, "c")
    ok = trt_cache.parse_cache(b"TRT-8601-EntropyCalibration2\ninput: 3c010204\n", "c")
    assert math.isclose(ok.scales["input"], struct.unpack(">f", bytes.fromhex("3c010204"))[0])


def test_retarget_cache():
    src = trt_cache.format_cache({"input": 1.0, "a:b": 2.0}, "10.3.0")
    out = trt_cache.retarget_cache(src, "8.5.2.2")
    assert out.startswith(b"TRT-8502-EntropyCalibration2\n")
    assert trt_cache.parse_cache(out).scales == trt_cache.parse_cache(src).scales
    with pytest.raises(UserError, match="holds no tensor"):
        trt_cache.retarget_cache(b"TRT-8601-EntropyCalibration2\n", "10.3.0")


# -- DLA --------------------------------------------------------------------------------------


def test_dla_static_profile_and_fallback_report(fake, tmp_path, capsys):
    gpu = fake("8.5.2.2", jetson="R35 (release), REVISION: 5.0", cc=(7, 2), name="Xavier")
    model = tiny_onnx(tmp_path / "fer.onnx")
    eng = tmp_path / "fer.dla.engine"
    rc, err, _ = cli(
        [str(model), "--precision", "fp16", "--dla-core", "1", "--out", str(eng)], capsys
    )
    assert rc == 2 and "no DLA core 1 on this device (0 DLA cores" in err[0]
    gpu.dla_cores = 2
    rc, err, _ = cli(
        [
            str(model),
            "--precision",
            "fp16",
            "--target",
            "xavier-nx",
            "--dla-core",
            "1",
            "--opt-batch",
            "4",
            "--out",
            str(eng),
        ],
        capsys,
    )
    assert rc == 0, err
    cfg = gpu.config
    assert cfg.default_device_type == "DLA" and cfg.DLA_core == 1
    assert cfg.flags == {"FP16", "GPU_FALLBACK"}
    # DLA: min = opt = max, else TensorRT sends every layer to the GPU
    assert cfg.profiles[0].shapes[1:] == ((4, 1, 48, 48),) * 3
    assert any(
        "1 layer(s) run on the GPU, not DLA core 1: layer2_softmax (SOFTMAX)" in e for e in err
    )
    doc = tc.read_sidecar(eng)
    assert doc["dla_core"] == 1 and doc["batch"] == {"min": 4, "opt": 4, "max": 4}
    assert doc["dla_gpu_fallback_layers"] == ["layer2_softmax (SOFTMAX)"]
    assert doc["l4t"] == "35.5.0" and doc["jetpack"] == "5.1.3" and doc["target"] == "xavier-nx"
    # the backend deserialises it on that DLA core and pads batches to the static 4
    gpu.profile = (4, 4, 4)
    with tb.TensorRTBackend(eng) as be:
        assert gpu.runtime.DLA_core == 1 and be.profile == (4, 4, 4)


# -- sidecar, names, timing cache, failures ---------------------------------------------------


def test_sidecar_records_every_fact(fake, tmp_path):
    fake("10.3.0", jetson=True)
    model = tiny_onnx(tmp_path / "fer.onnx")
    cache = calib_cache(tmp_path / "c.cache")
    rep = build_engine(
        model,
        tmp_path / "e.engine",
        BuildConfig(precision="int8", calib_cache=str(cache), sparse=True),
    )
    doc = json.loads(Path(rep["sidecar"]).read_text())
    assert doc["version"] == 2 and doc["metadata"] == metadata()
    assert (doc["tensorrt"], doc["cuda"], doc["l4t"], doc["jetpack"]) == (
        "10.3.0",
        "12.6",
        "36.4.3",
        "6.1/6.2",
    )
    assert (doc["gpu"], doc["compute_capability"]) == ("Fake Orin", "8.7")
    assert doc["precision"] == "int8" and doc["batch"] == {"min": 1, "opt": 8, "max": 32}
    assert doc["onnx_sha256"] == tc.file_sha256(model)
    assert doc["calib_cache_sha256"] == tc.file_sha256(cache)
    assert doc["build_options"]["sparse"] is True and doc["build_options"]["workspace_mb"] == 1024


def test_engine_cache_name_covers_every_build_input(tmp_path):
    a = tmp_path / "a.cache"
    b = tmp_path / "b.cache"
    a.write_bytes(b"TRT-100300-EntropyCalibration2\ninput: 3c010204\n")
    b.write_bytes(b"TRT-100300-EntropyCalibration2\ninput: 3c010205\n")

    def name(**kw):
        return cached_engine_name("m/fer.onnx", "ab" * 32, "10.3.0", "sm87", BuildConfig(**kw))

    base = name(precision="int8", calib_cache=str(a))
    assert base.startswith("fer.abababab.trt10.3.0.sm87.int8.b32.") and base.endswith(".engine")
    assert name(precision="int8", calib_cache=str(a)) == base
    assert name(precision="int8", calib_cache=str(a), timing_cache="t.bin") == base
    others = [
        name(precision="int8", calib_cache=str(b)),  # another calibration cache
        name(precision="int8", calib_cache=str(a), sparse=True),
        name(precision="int8", calib_cache=str(a), workspace_mb=512),
        name(precision="int8", calib_cache=str(a), opt_batch=4),
        name(precision="int8", calib_cache=str(a), dla_core=0),
        name(precision="int8", calib_cache=str(a), target="orin-agx"),
        name(precision="fp16"),
    ]
    assert len({base, *others}) == len(others) + 1


def test_timing_cache_is_loaded_and_saved(fake, tmp_path, capsys):
    gpu = fake("10.3.0")
    model = tiny_onnx(tmp_path / "fer.onnx")
    tcache = tmp_path / "timing.cache"
    rc, _, _ = cli([str(model), "--timing-cache", str(tcache)], capsys)
    assert rc == 0 and tcache.read_bytes() == b"TIMING+"
    rc, _, _ = cli([str(model), "--timing-cache", str(tcache), "--force"], capsys)
    assert rc == 0 and gpu.config.timing.data == b"TIMING+" and tcache.read_bytes() == b"TIMING++"
    tcache.write_bytes(b"garbage")
    rc, err, _ = cli([str(model), "--timing-cache", str(tcache), "--force"], capsys)
    assert rc == 2 and "not a TensorRT timing cache" in err[0]


def test_failed_build_leaves_nothing(fake, tmp_path, capsys):
    gpu = fake("10.3.0")
    model = tiny_onnx(tmp_path / "fer.onnx")
    gpu.fail_build = True
    before = files(tmp_path)
    rc, err, _ = cli([str(model), "--precision", "fp16"], capsys)
    assert rc == 2 and "could not build the engine (no implementation for layer 2)" in err[-1]
    assert files(tmp_path) == before  # no engine, no sidecar, no temporary file
    gpu.fail_build = False
    gpu.parse_errors = ["node 3 (Foo): unsupported op", "node 7: bad attribute"]
    rc, err, _ = cli([str(model)], capsys)
    assert rc == 2 and len(err) == 3 and "unsupported op" in err[0] and "2 errors" in err[2]
    assert files(tmp_path) == before


def test_cli_build_and_sidecar_for(fake, tmp_path, capsys):
    fake("10.3.0")
    model = tiny_onnx(tmp_path / "fer.onnx")
    rc, err, out = cli([str(model), "--precision", "fp16", "--json"], capsys)
    assert rc == 0 and "TensorRT 10.3.0 fp16 engine" in err[-1]
    assert json.loads(out)["engine"] == str(default_engine_path(model, "fp16"))
    assert default_engine_path("a/fer.onnx", "int8") == Path("a/fer.int8.engine")
    trtexec = tmp_path / "fer.trtexec.engine"
    trtexec.write_bytes(b"from trtexec")
    rc, _, _ = cli([str(model), "--sidecar-for", str(trtexec)], capsys)
    doc = tc.read_sidecar(trtexec)
    assert rc == 0 and doc["metadata"] == metadata() and doc["built_by"].startswith("trtexec")
    assert doc["tensorrt"] == "10.3.0"  # TensorRT was importable: its facts are recorded


def test_sidecar_for_refuses_what_is_not_an_engine_and_keeps_user_files(fake, tmp_path, capsys):
    fake("10.3.0")
    model = tiny_onnx(tmp_path / "fer.onnx")
    before = model.read_bytes()
    # The ONNX model itself, a sidecar, an empty file: refused, nothing written.
    empty = tmp_path / "fer.engine"
    empty.write_bytes(b"")
    for wrong, why in ((model, "not a TensorRT engine"), (empty, "is empty")):
        rc, err, _ = cli([str(model), "--sidecar-for", str(wrong)], capsys)
        assert rc == 2 and len(err) == 1 and why in err[0], err
    assert model.read_bytes() == before and not (tmp_path / "fer.onnx.json").exists()
    # A user's own NAME.json is not an edge-fer sidecar: never overwritten.
    eng = tmp_path / "notes"
    eng.write_bytes(b"engine bytes")
    theirs = tmp_path / "notes.json"
    theirs.write_text('{"mine": true}')
    rc, err, _ = cli([str(model), "--sidecar-for", str(eng)], capsys)
    assert rc == 2 and "not an edge-fer engine sidecar; not overwriting" in err[0]
    assert theirs.read_text() == '{"mine": true}'
    # An edge-fer sidecar of that name is replaced as before.
    theirs.unlink()
    assert cli([str(model), "--sidecar-for", str(eng)], capsys)[0] == 0
    assert cli([str(model), "--sidecar-for", str(eng)], capsys)[0] == 0
    assert tc.read_sidecar(eng)["built_by"].startswith("trtexec")


def test_bundled_model_brings_its_calibration_cache(fake, tmp_path, capsys):
    """A pip install has no calibration/ folder: the bundled model's cache ships in the package
    (a byte-identical copy of the committed one) and INT8 builds of it use it unasked."""
    from edge_fer.export.engine import BUNDLED_CALIB_CACHE, BUNDLED_MODEL

    committed = ROOT / "calibration" / "fer_default" / "calib.cache"
    assert BUNDLED_CALIB_CACHE.read_bytes() == committed.read_bytes()
    gpu = fake("8.5.2.2")
    rc, err, _ = cli([str(BUNDLED_MODEL), "--precision", "int8", "--out",
                      str(tmp_path / "fer.int8.engine")], capsys)  # fmt: skip
    assert rc == 0, err
    side = json.loads((tmp_path / "fer.int8.engine.json").read_text())
    assert side["calib_cache_sha256"] == tc.file_sha256(committed)
    data = gpu.config.int8_calibrator.read_calibration_cache()
    assert data.startswith(b"TRT-8502-EntropyCalibration2\n")


# -- outputs that must not replace anything (QA finding 1) -----------------------------------


def test_existing_out_needs_force(fake, tmp_path, capsys):
    gpu = fake("10.3.0")
    model = tiny_onnx(tmp_path / "fer.onnx")
    notes = tmp_path / "notes.txt"
    notes.write_text("notes\n")
    rc, err, _ = cli([str(model), "--out", str(notes)], capsys)
    assert rc == 2 and len(err) == 1, err
    assert f"error: --force is needed to replace {notes}, which exists" in err[0]
    assert notes.read_text() == "notes\n" and gpu.builds == 0
    assert cli([str(model), "--out", str(notes), "--force"], capsys)[0] == 0
    assert notes.read_bytes().startswith(b"FAKE-ENGINE") and tc.read_sidecar(notes)
    # the default name too: a second build of the same model is refused, then forced
    assert cli([str(model)], capsys)[0] == 0
    rc, err, _ = cli([str(model)], capsys)
    assert rc == 2 and "--force is needed to replace" in err[0] and "fer.fp32.engine" in err[0]
    assert cli([str(model), "--force"], capsys)[0] == 0 and gpu.builds == 3


def test_out_naming_a_new_folder_is_refused(fake, tmp_path, capsys):
    """--out newdir/ (before: an engine file named newdir and newdir.json, exit 0)."""
    gpu = fake("10.3.0")
    model = tiny_onnx(tmp_path / "fer.onnx")
    rc, err, _ = cli([str(model), "--out", f"{tmp_path / 'newdir'}/"], capsys)
    assert rc == 2 and len(err) == 1 and "is a folder; give the engine's file name" in err[0], err
    assert not (tmp_path / "newdir").exists() and not (tmp_path / "newdir.json").exists()
    assert gpu.builds == 0


def test_a_json_that_is_not_an_edge_fer_sidecar_is_never_replaced(fake, tmp_path, capsys):
    gpu = fake("10.3.0")
    model = tiny_onnx(tmp_path / "fer.onnx")
    theirs = tmp_path / "fer.engine.json"
    theirs.write_text('{"mine": true}')
    for force in ([], ["--force"]):  # --force replaces the engine, never the user's JSON
        rc, err, _ = cli([str(model), "--out", str(tmp_path / "fer.engine"), *force], capsys)
        assert rc == 2 and len(err) == 1, err
        assert "--out" in err[0] and "not an edge-fer engine sidecar; not overwriting" in err[0]
    assert theirs.read_text() == '{"mine": true}'
    assert gpu.builds == 0 and not (tmp_path / "fer.engine").exists()
    theirs.unlink()
    theirs.mkdir()  # nor a folder of that name
    rc, err, _ = cli([str(model), "--out", str(tmp_path / "fer.engine")], capsys)
    assert rc == 2 and "not an edge-fer engine sidecar" in err[0] and gpu.builds == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "t.engine", "--timing-cache", "t.engine"],
         "--out t.engine and --timing-cache t.engine are the same file"),
        # (before: "the sidecar of --out t.engine.json and --timing-cache t.engine.json are the
        # same file", as if --out were the .json)
        (["--out", "t.engine", "--timing-cache", "t.engine.json"],
         "--timing-cache t.engine.json is the sidecar of --out t.engine,"),
        (["--timing-cache", "fer.onnx"], "--timing-cache fer.onnx is the same file as MODEL.onnx"),
        (["--precision", "int8", "--calib-cache", "c.cache", "--out", "c.cache", "--force"],
         "--out c.cache is the same file as --calib-cache"),
        (["--precision", "int8", "--calib-cache", "c.cache", "--timing-cache", "c.cache"],
         "--timing-cache c.cache is the same file as --calib-cache"),
    ],
)  # fmt: skip
def test_outputs_never_overwrite_inputs_or_each_other(
    fake, tmp_path, capsys, monkeypatch, args, message
):
    gpu = fake("10.3.0")
    monkeypatch.chdir(tmp_path)
    tiny_onnx(tmp_path / "fer.onnx")
    calib_cache(tmp_path / "c.cache")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    rc, err, _ = cli(["fer.onnx", *args], capsys)
    assert rc == 2 and len(err) == 1, err
    assert message in err[0], err[0]
    assert gpu.builds == 0
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_library_replaces_only_engines_it_built_unless_forced(fake, tmp_path, monkeypatch):
    """build_engine's default (force=None) replaces an engine with an edge-fer sidecar (the
    backend's rebuild of its cache), refuses anything else (UserError on the parameter
    `force`); force=False refuses both, force=True replaces both. A bundled asset is never
    replaced."""
    gpu = fake("10.3.0")
    model = tiny_onnx(tmp_path / "fer.onnx")
    eng = tmp_path / "fer.engine"
    build_engine(model, eng)
    build_engine(model, eng)  # a rebuild
    with pytest.raises(UserError) as e:
        build_engine(model, eng, force=False)
    assert e.value.param == "force" and str(e.value).startswith("force is needed to replace")
    mine = tmp_path / "mine.bin"
    mine.write_bytes(b"mine")
    with pytest.raises(UserError, match="force is needed to replace .*mine.bin"):
        build_engine(model, mine)
    assert mine.read_bytes() == b"mine" and gpu.builds == 2
    build_engine(model, mine, force=True)
    assert mine.read_bytes().startswith(b"FAKE-ENGINE")
    from edge_fer.export import engine as E

    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "asset.bin").write_bytes(b"bundled")
    monkeypatch.setattr(E, "BUNDLED_MODEL", assets / "fer_default.onnx")
    with pytest.raises(UserError, match="is one of edge-fer's bundled files"):
        build_engine(model, assets / "asset.bin", force=True)
    assert (assets / "asset.bin").read_bytes() == b"bundled"
    build_engine(model, assets / "new.engine")  # a new engine beside the bundled model is fine
    build_engine(model, assets / "new.engine")


# -- the target is this GPU (QA finding 7) ---------------------------------------------------


def test_discrete_targets_check_the_compute_capability_and_refuse_a_jetson(fake, tmp_path, capsys):
    assert T.device_problem("laptop-rtx", "7.5", jetson=False) is None
    assert T.device_problem("desktop-rtx", None, jetson=False) is None  # unknown: no check
    assert "and up" in T.device_problem("laptop-rtx", "6.1", jetson=False)
    assert "is a discrete GPU and this is a Jetson" in T.device_problem(
        "desktop-rtx", None, jetson=True
    )
    model = tiny_onnx(tmp_path / "fer.onnx")
    out = ["--precision", "fp16", "--out", str(tmp_path / "a.engine")]
    for cc, target in (((5, 2), "laptop-rtx"), ((6, 1), "desktop-rtx")):
        gpu = fake("10.3.0", cc=cc, name="GeForce GTX")
        rc, err, _ = cli([str(model), "--target", target, *out], capsys)
        assert rc == 2 and len(err) == 1, err
        want = f"7.5 and up (Turing or later), this GPU (GeForce GTX) is {cc[0]}.{cc[1]}"
        assert want in err[0], err[0]
        assert gpu.builds == 0 and not (tmp_path / "a.engine").exists()
    gpu = fake("10.3.0", jetson=True, cc=(8, 7))
    rc, err, _ = cli([str(model), "--target", "desktop-rtx", *out], capsys)
    assert rc == 2 and "discrete GPU and this is a Jetson: choose its module" in err[0]
    assert gpu.builds == 0
    fake("10.3.0", cc=(7, 5), name="RTX 2060")
    assert cli([str(model), "--target", "laptop-rtx", *out], capsys)[0] == 0


# -- a model without edge-fer metadata (QA finding 12) ---------------------------------------


def _edit_metadata(path: Path, drop=(), **spec) -> Path:
    """Rewrite the model's metadata: drop keys, change fields of edge_fer.preprocess."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(path))
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in drop]
    del model.metadata_props[:]
    for k, v in keep:
        if k == "edge_fer.preprocess" and spec:
            d = json.loads(v)
            d.update(spec)
            v = json.dumps({k2: v2 for k2, v2 in d.items() if v2 is not None})
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(model, str(path))
    return path


def test_model_without_edge_fer_metadata_is_refused_first(fake, tmp_path, capsys):
    gpu = fake("10.3.0")
    keys = list(metadata())
    bare = _edit_metadata(tiny_onnx(tmp_path / "bare.onnx"), drop=keys)
    noclasses = _edit_metadata(tiny_onnx(tmp_path / "nocls.onnx"), classes=None)
    eng = tmp_path / "x.engine"
    eng.write_bytes(b"engine bytes")  # exists: the metadata is still what is reported
    for model, why in ((bare, "no edge_fer preprocessing metadata"), (noclasses, "no classes")):
        for args in (["--out", str(eng)], ["--sidecar-for", str(eng)]):
            rc, err, _ = cli([str(model), *args], capsys)
            assert rc == 2 and len(err) == 1, err
            assert err[0].startswith(f"edge-fer build-engine: error: {model}: ") and why in err[0]
            assert "could not be run" in err[0]
    assert gpu.builds == 0 and not (tmp_path / "x.engine.json").exists()
    with pytest.raises(UserError, match="bare.onnx: model has no edge_fer preprocessing"):
        build_engine(bare, tmp_path / "y.engine")
    # metadata that does not fit the graph's input: refused after the parse, before the build
    big = _edit_metadata(tiny_onnx(tmp_path / "big.onnx"), input_size=64)
    rc, err, _ = cli([str(big), "--out", str(tmp_path / "big.engine")], capsys)
    assert rc == 2 and len(err) == 1, err
    assert "has shape [-1, 1, 48, 48], but the model's metadata says (N, 1, 64, 64)" in err[0]
    assert gpu.builds == 0 and not (tmp_path / "big.engine").exists()


# -- a Q/DQ model is an INT8 engine, by name and in its sidecar (QA finding 13) ---------------


def test_qdq_model_without_precision_int8_is_named_and_recorded_int8(
    fake, tmp_path, capsys, monkeypatch
):
    gpu = fake("10.3.0")
    qdq = tiny_onnx(tmp_path / "model.int8.qdq.onnx", qdq="tensorrt")
    rc, err, _ = cli([str(qdq)], capsys)
    assert rc == 0 and "TensorRT 10.3.0 int8 engine" in err[-1]
    doc = tc.read_sidecar(tmp_path / "model.int8.qdq.int8.engine")
    assert (doc["precision"], doc["build_options"]["precision"], doc["fp16"]) == (
        "int8",
        "int8",
        False,
    )
    assert not list(tmp_path.glob("*.fp32.engine*"))
    rc, err, _ = cli([str(qdq), "--precision", "fp16"], capsys)  # INT8 + FP16 for the rest
    assert rc == 0 and "int8 (fp16 for the unquantized layers) engine" in err[-1]
    doc = tc.read_sidecar(tmp_path / "model.int8.qdq.int8-fp16.engine")
    assert (doc["precision"], doc["build_options"]["precision"], doc["fp16"]) == (
        "int8",
        "fp16",
        True,
    )
    assert gpu.config.flags == {"INT8", "FP16"}
    assert default_engine_path("m/q.onnx", "fp32", qdq=True) == Path("m/q.int8.engine")
    # without the onnx package the layout shows only in TensorRT's parse: named after it
    monkeypatch.setitem(sys.modules, "onnx", None)
    gpu.qdq = True
    other = tmp_path / "sub"
    other.mkdir()
    qdq2 = other / "q.onnx"
    qdq2.write_bytes(qdq.read_bytes())
    rc, err, _ = cli([str(qdq2)], capsys)
    assert rc == 0, err
    assert tc.read_sidecar(other / "q.int8.engine")["build_options"]["precision"] == "int8"
    assert files(other) == {"q.onnx", "q.int8.engine", "q.int8.engine.json"}


# ---- build-engine on a folder ------------------------------------------------------------------
# (a real child process; collected, before, under ../shared's FER2013 and torch, safetensors
# and onnx)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """The children's dataset cache: this module's own."""
    return dict(os.environ, EDGE_FER_CACHE=str(tmp_path_factory.mktemp("cache")))


@pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
@needs_modules("torch", "safetensors", "onnx")
def test_build_engine_names_a_folder(tmp_path, env):
    (tmp_path / "models").mkdir()
    line = refusal_line(run_cli("build-engine", tmp_path / "models", env=env))
    # before: "no such ONNX model", as if nothing were there
    assert f"{tmp_path / 'models'}: is a folder" in line, line
