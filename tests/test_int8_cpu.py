"""The bundled INT8 model answers as the FP32 one does on this CPU, whatever its instruction set.

On x86 CPUs without VNNI (AVX2 and older AVX-512 parts, AMD before Zen 4) ONNX Runtime's
uint8 x int8 kernels saturate; before `exact_int8` the bundled INT8 model agreed with FP32 on
0.879 of PrivateTest there (0.991 with VNNI). This test fails on such a CPU without the fix;
on a CPU with VNNI it holds either way."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from paths import ASSETS, FER_MODEL, fer_files

from edge_fer import labels as L


@pytest.mark.shared("data/fer2013/test")
def test_bundled_int8_agrees_with_fp32_on_real_faces():
    from edge_fer.classify import Classifier

    files = [f for cls in L.FER2013 for f in fer_files(cls, "PrivateTest", 55)]
    faces = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    with (
        Classifier.load(FER_MODEL, threads=1, tta="none") as fp32,
        Classifier.load(ASSETS / "fer_default.int8.onnx", threads=1, tta="none") as int8,
    ):
        a, b = fp32.predict(faces), int8.predict(faces)
    agree = float((a.argmax(1) == b.argmax(1)).mean())
    assert agree >= 0.97, f"INT8 agrees with FP32 on {agree:.3f} of {len(faces)} faces"
    assert np.abs(a - b).max() < 0.5


AVX2_ONLY = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
    "flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2\n"
)
WITH_VNNI = AVX2_ONLY.replace("avx2 bmi2", "avx2 bmi2 avx512f avx512bw avx512_vnni")
ORIN = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp\n"


def test_which_cpus_get_the_fp32_model_by_default():
    from edge_fer.machine import cpu_flags, x86_without_vnni

    assert "avx2" in cpu_flags(AVX2_ONLY) and "asimddp" in cpu_flags(ORIN)
    assert x86_without_vnni(AVX2_ONLY, "x86_64")
    assert not x86_without_vnni(WITH_VNNI, "x86_64")
    assert not x86_without_vnni(ORIN, "aarch64")  # ARM: INT8 as before
    assert not x86_without_vnni("", "x86_64")  # flags unknown (another OS): INT8 as before


def test_auto_precision_on_this_cpu():
    from edge_fer.classify import bundled_model_path
    from edge_fer.machine import x86_without_vnni

    auto = bundled_model_path("onnxruntime", "auto")
    assert auto == (FER_MODEL if x86_without_vnni() else ASSETS / "fer_default.int8.onnx")
    assert bundled_model_path("onnxruntime", "int8") == ASSETS / "fer_default.int8.onnx"
    assert bundled_model_path("onnxruntime", "fp32") == FER_MODEL


def test_exact_int8_kernels_only_where_the_fast_ones_saturate():
    # The exact kernels ran 2.5x slower on a Zen 4 with VNNI, which needs none.
    import onnxruntime as ort

    from edge_fer.backends.onnxruntime_backend import exact_int8

    def entry(cpuinfo: str, machine: str) -> str:
        so = ort.SessionOptions()
        exact_int8(so, cpuinfo, machine)
        try:
            return so.get_session_config_entry("session.x64quantprecision")
        except RuntimeError:  # not set
            return ""

    assert entry(AVX2_ONLY, "x86_64") == "1"
    assert entry(WITH_VNNI, "x86_64") == ""
    assert entry(ORIN, "aarch64") == ""
