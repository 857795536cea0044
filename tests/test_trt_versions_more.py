"""TensorRT versions, second part: the calibration-cache header codes each TensorRT writes
(8.5/8.6: major*1000 + minor*100 + patch; 10 and later: major*10000 + minor*100 + patch, per
NV_TENSORRT_VERSION in NVIDIA/TensorRT's include/NvInferRuntimeBase.h) and JetPack 4 boards
(L4T R32, TensorRT 8.0/8.2): handled by the binding code path where their Python bindings
import, said in one line where they do not (JetPack 4's are for its Python 3.6).
TensorRT and pycuda are the in-process fakes of tests/trt_fakes.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge_fer.backends import trt_common as tc
from edge_fer.errors import UserError
from edge_fer.quantize import trt_cache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trt_fakes import installer, tiny_onnx

# /etc/nv_tegra_release of JetPack 4.6.1, as such boards print it
TEGRA_R32_7_1 = (
    "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, "
    "DATE: Sat Feb 19 17:05:08 UTC 2022\n"
)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """install(version, jetson=False, **gpu): the TensorRT/pycuda fakes (tests/trt_fakes.py)."""
    return installer(monkeypatch, tmp_path)


def cli(args: list[str], capsys) -> tuple[int, list[str]]:
    from edge_fer.cli.main import main

    rc = main(["build-engine", *args])
    cap = capsys.readouterr()
    return rc, [ln for ln in cap.err.splitlines() if ln.strip()]


# -- (a) calibration-cache header codes ---------------------------------------------------------


def test_header_codes_no_tensorrt_writes_are_refused():
    """10.3.0 by the pre-10 rule is 10300; TensorRT 10.3 writes and reads TRT-100300-..., so a
    cache headed TRT-10300 was written (`calibrate --trt-version 10300`) and then skipped on the
    device. Before: accepted as a code."""
    for code in ("10300", 10300, "86010"):
        with pytest.raises(UserError, match="4 digits up to 9.x .* 6 from 10.0 on"):
            trt_cache.version_code(code)
        with pytest.raises(UserError, match="no TensorRT's"):
            trt_cache.format_cache({"input": 1.0}, code)
    with pytest.raises(UserError, match="no TensorRT's"):
        trt_cache.version_text(10300)  # before: "10.3.0", as if it were that release's code
    # what each JetPack's TensorRT writes (trtexec, DeepStream): unchanged
    for version, head in (
        ("8.5.2.2", "TRT-8502-EntropyCalibration2"),  # JetPack 5.1
        ("8.6.2.3", "TRT-8602-EntropyCalibration2"),  # JetPack 6.0
        ("10.3.0.30", "TRT-100300-EntropyCalibration2"),  # JetPack 6.1 / 6.2
    ):
        assert trt_cache.format_cache({"input": 1.0}, version).split(b"\n")[0] == head.encode()


def test_deepstream_kit_with_a_five_digit_code_is_refused(tmp_path, capsys):
    """`deploy deepstream --trt-version 10300` wrote calib.cache headed TRT-10300, which
    nvinfer's TensorRT 10.3 skips and then fails the INT8 build; now one line, exit 2, and no
    kit folder."""
    pytest.importorskip("onnx")
    from edge_fer.cli.main import main

    out = tmp_path / "ds"
    rc = main(["deploy", "deepstream", "--out", str(out), "--precision", "int8",
               "--trt-version", "10300"])  # fmt: skip
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and "no TensorRT's" in err[0], err
    assert not out.exists()


# -- (b) JetPack 4 -----------------------------------------------------------------------------


def test_jetpack_4_releases_are_known(tmp_path):
    """L4T R32.6.1 is JetPack 4.6 and R32.7.N is 4.6.N (rbonghi/jetson_stats' table); before,
    32.6.1 mapped to nothing (the sidecar said jetpack: null) and 32.7.x to "4.6.x"."""
    rel = tmp_path / "nv_tegra_release"
    rel.write_text(TEGRA_R32_7_1)
    assert tc.l4t_release(str(rel)) == "32.7.1"
    assert tc.jetpack_release("32.6.1") == "4.6"
    assert [tc.jetpack_release(f"32.7.{n}") for n in range(1, 7)] == [
        f"4.6.{n}" for n in range(1, 7)
    ]
    assert tc.jetpack_release("35.5.0") == "5.1.3" and tc.jetpack_release("36.4.3") == "6.1/6.2"


@pytest.mark.parametrize(
    "tegra, trt",
    [("R32 (release), REVISION: 6.1", "8.0.1.6"), ("R32 (release), REVISION: 7.4", "8.2.1.8")],
)
def test_build_engine_on_jetpack_4_with_bindings_builds(fake, tmp_path, capsys, tegra, trt):
    """With TensorRT bindings built for this Python, a JetPack 4.6 board builds through the
    binding path (TensorRT 8.0-8.3: max_workspace_size); its sidecar names the JetPack (an
    R32.6.1 board's said jetpack: null before)."""
    import json

    gpu = fake(trt, jetson=tegra, cc=(5, 3), name="NVIDIA Tegra X1")
    model = tiny_onnx(tmp_path / "fer.onnx")
    out = tmp_path / "fer.fp16.engine"
    rc, err = cli([str(model), "--precision", "fp16", "--out", str(out)], capsys)
    assert rc == 0 and gpu.builds == 1, err
    sidecars = list(tmp_path.glob("*.json"))
    meta = json.loads(sidecars[0].read_text()) if sidecars else {}
    assert "4.6" in json.dumps(meta), meta


def test_jetpack_4_without_tensorrt_bindings_names_the_board(monkeypatch, tmp_path):
    """JetPack 4's TensorRT bindings are for its Python 3.6: from a newer Python they do not
    import. Before: "install TensorRT (JetPack on Jetson ...)", which JetPack 4 already has."""
    rel = tmp_path / "nv_tegra_release"
    rel.write_text(TEGRA_R32_7_1)
    monkeypatch.setattr(tc, "NV_TEGRA_RELEASE", str(rel))
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    with pytest.raises(UserError) as err:
        tc.require_tensorrt()
    msg = str(err.value)
    assert "JetPack 4.6.1 (L4T R32.7.1), whose TensorRT 8.2.1 Python bindings" in msg
    assert "install TensorRT" not in msg and "\n" not in msg
    rel.write_text(TEGRA_R32_7_1.replace("R32", "R36").replace("7.1", "4.3"))  # JetPack 6
    with pytest.raises(UserError, match="install TensorRT"):
        tc.require_tensorrt()
