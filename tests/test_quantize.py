"""INT8 calibration (`edge_fer.quantize`, `edge-fer calibrate`): real models, real calibration.

A tiny CNN is built with onnx.helper (seeded weights, edge-fer metadata) and calibrated on
synthetic faces; the Q/DQ graphs, the TensorRT cache bytes, the report and the error paths are
checked on what is really written. With ../shared present, the bundled model is calibrated on
real FER2013 Training faces and its INT8 models are compared with FP32 on PrivateTest faces,
and faces are found by the PICO detector in a real video. One ONNX Runtime thread throughout.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from edge_fer.errors import UserError
from edge_fer.preprocess import PreprocessSpec

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from onnx import TensorProto, helper, numpy_helper
from paths import CALIB, FACEFINDER, FER, VIDEOS, fer_faces

from edge_fer.quantize import CalibFaces, calibrate, check_faces
from edge_fer.quantize import ranges as R
from edge_fer.quantize import trt_cache as T
from edge_fer.quantize.calib_data import FaceBatchReader, stratified_sample
from edge_fer.quantize.qdq import check_supported, summarize

VIDEO = VIDEOS / "00-1.avi"
VIDEO_FEW = VIDEOS / "01-2.avi"
needs_fer = pytest.mark.shared("data/fer2013/train")
needs_video = pytest.mark.shared("data/videos/00-1.avi", "reference/pico/facefinder")
CLASSES = ("angry", "happy", "sad")
SIZE = 16


# -- a tiny real model ---------------------------------------------------------------------------


def tiny_model(extra_node=None, seed: int = 0) -> onnx.ModelProto:
    """Conv(1->4) Relu MaxPool Conv(4->8) Relu GlobalAveragePool Flatten Gemm(8->3) Softmax."""
    rng = np.random.default_rng(seed)

    def init(name, shape, scale):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        init("w1", (4, 1, 3, 3), 0.5),
        init("b1", (4,), 0.1),
        init("w2", (8, 4, 3, 3), 0.3),
        init("b2", (8,), 0.1),
        init("wf", (3, 8), 0.8),
        init("bf", (3,), 0.1),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1, name="fc"),
    ]
    last = "logits"
    if extra_node is not None:
        nodes.append(extra_node("logits", "x"))
        last = "x"
    nodes.append(helper.make_node("Softmax", [last], ["probs"], axis=1))
    g = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(CLASSES)])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    spec = PreprocessSpec(input_size=SIZE, channels=1, classes=CLASSES)
    for k, v in spec.to_metadata().items():
        m.metadata_props.add(key=k, value=v)
    m.metadata_props.add(key="edge_fer.arch", value="tiny")
    return m


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("model") / "tiny.onnx"
    onnx.save(tiny_model(), str(p))
    return p


def synthetic_faces(n: int = 160, classes: int = 3, seed: int = 0) -> CalibFaces:
    """Smooth random 'faces' (blurred noise plus a class-dependent gradient)."""
    import cv2

    rng = np.random.default_rng(seed)
    imgs = []
    labels = np.arange(n) % classes
    for k in range(n):
        noise = rng.integers(0, 256, (SIZE, SIZE)).astype(np.float32)
        img = cv2.GaussianBlur(noise, (5, 5), 1.5) * 0.6 + labels[k] * 40 + np.linspace(0, 60, SIZE)
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
    return CalibFaces(
        images=np.stack(imgs),
        ids=[f"syn_{k:04d}" for k in range(n)],
        source="synthetic",
        labels=labels.astype(np.int64),
        classes=CLASSES[:classes] if classes <= 3 else (),
        seen=n,
    )


@pytest.fixture(scope="module")
def calibrated(tiny_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("calib") / "out"
    info = calibrate(tiny_path, synthetic_faces(), out, method="entropy", threads=1)
    return out, info


# -- calibration sets ----------------------------------------------------------------------------


def test_stratified_sample_is_proportional_seeded_and_keeps_rare_classes():
    labels = np.array([0] * 700 + [1] * 290 + [2] * 10)
    a = stratified_sample(labels, 100, seed=3)
    b = stratified_sample(labels, 100, seed=3)
    assert np.array_equal(a, b) and len(a) == 100 and len(set(a)) == 100
    counts = np.bincount(labels[a], minlength=3)
    assert counts.tolist() == [70, 29, 1]
    assert not np.array_equal(a, stratified_sample(labels, 100, seed=4))
    assert len(stratified_sample(labels, 5000, seed=0)) == 1000  # more than there is: all


def test_too_few_faces_and_single_class_are_refused():
    with pytest.raises(UserError, match="has 99 faces; at least 100"):
        check_faces(synthetic_faces(99))
    one = synthetic_faces(150)
    one.labels[:] = 1
    with pytest.raises(UserError, match="single class"):
        check_faces(one)
    check_faces(synthetic_faces(100))  # enough, three classes


def test_reader_gives_prepared_batches():
    spec = PreprocessSpec(input_size=SIZE, channels=1, classes=CLASSES)
    faces = synthetic_faces(70).images
    r = FaceBatchReader(faces, spec, "input", batch_size=32)
    got = [d["input"] for d in r]
    assert [len(x) for x in got] == [32, 32, 6] and len(r) == 3
    assert np.allclose(np.concatenate(got), spec.prepare(faces))
    r.rewind()
    assert r.get_next()["input"].shape == (32, 1, SIZE, SIZE)


# -- ranges ---------------------------------------------------------------------------------------


def test_entropy_threshold_clips_a_sparse_tail_and_ignores_the_relu_zero_spike():
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal(200_000))
    x[:50] = 40.0  # a few outliers far out
    data = np.concatenate([x, np.zeros(200_000)])  # half exact zeros, as after a ReLU
    hist = R.Histogram(2048)
    for part in np.array_split(data, 7):  # streamed in batches
        hist.update(part)
    h = hist.stats()
    a = h.amax("entropy", None)
    assert 2.5 < a < 15.0, a  # clips the outliers, keeps the bulk (|N(0,1)| up to ~4.5)
    assert h.amax("minmax", None) == pytest.approx(40.0)
    p = h.amax("percentile", 99.9)
    assert p == pytest.approx(np.percentile(data, 99.9), abs=2 * h.width)
    assert h.clipped(h.amax("minmax", None)) == 0.0
    uniform = np.ones(2048)
    assert R.entropy_threshold(uniform) == 2048  # nothing to gain by clipping


def test_collect_ranges_of_every_float_tensor(tiny_path):
    spec = PreprocessSpec(input_size=SIZE, channels=1, classes=CLASSES)
    faces = synthetic_faces(64).images
    seen = R.collect(tiny_path, FaceBatchReader(faces, spec, "input", 16).batches())
    rs = R.compute(seen, "minmax")
    assert next(iter(rs.tensors)) == "input" and rs.n_faces == 64
    assert set(rs.tensors) == {"input", "c1", "r1", "p1", "c2", "r2", "g", "f", "logits", "probs"}
    x = spec.prepare(faces)
    assert rs.tensors["input"].amax == pytest.approx(np.abs(x).max())
    assert rs.tensors["r1"].min == 0.0 and rs.tensors["probs"].amax <= 1.0
    with pytest.raises(UserError, match="unknown calibration method"):
        R.compute(seen, "kl")
    with pytest.raises(UserError, match=r"percentile must be in \(50, 100\], got 40"):
        R.compute(seen, "percentile", 40)
    with pytest.raises(UserError, match="no calibration faces"):
        R.collect(tiny_path, [])


# -- the TensorRT calibration cache -------------------------------------------------------------


def test_trt_versions():
    assert T.version_code("8.6.1") == 8601
    assert T.version_code("8.5.2.2") == 8502
    assert T.version_code("10.3.0") == 100300
    assert T.version_code("10.14.1") == 101401
    assert T.version_code(8601) == 8601
    assert T.version_text(100300) == "10.3.0" and T.version_text(8601) == "8.6.1"
    with pytest.raises(UserError):
        T.version_code("ten")
    # a bare major version is not a code: a cache headed TRT-10-... is skipped by every TensorRT
    for bare in ("10", "8", 10):
        with pytest.raises(UserError, match="like 8.6.1"):
            T.version_code(bare)
    assert T.version_code("100300") == 100300


def test_cache_bytes_and_round_trip():
    amax = {"input": 1.0, "/conv/Conv_output_0": 6.5, "probs": 0.999}
    data = T.format_cache(amax, "8.6.1")
    lines = data.decode().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert lines[1] == "input: 3c010204"  # 1/127 as float32 bits, big-endian hex
    for line, (name, a) in zip(lines[1:], amax.items()):
        key, hexs = line.split(": ")
        assert key == name and len(hexs) == 8 and hexs == hexs.lower()
        want = struct.unpack(">f", struct.pack(">f", a / 127.0))[0]
        assert struct.unpack(">f", bytes.fromhex(hexs))[0] == want
    assert data.endswith(b"\n")
    c = T.parse_cache(data)
    assert c.version == 8601 and c.algorithm == "EntropyCalibration2"
    assert list(c.scales) == list(amax)
    for name, a in amax.items():
        assert c.amax[name] == pytest.approx(a, rel=1e-6)


def test_cache_parse_errors(tmp_path):
    with pytest.raises(UserError, match="not a TensorRT calibration cache"):
        T.parse_cache(b"hello\ninput: 3c010204\n")
    with pytest.raises(UserError, match=":3: expected"):
        T.parse_cache(b"TRT-8601-EntropyCalibration2\ninput: 3c010204\nbroken line\n")
    with pytest.raises(UserError, match="no such calibration cache"):
        T.read_cache(tmp_path / "none.cache")


def test_cache_of_another_model_is_refused(calibrated, tiny_path):
    out, _ = calibrated
    cache = T.read_cache(out / "calib.cache")
    T.check_cache(cache, tiny_path)  # its own model: fine
    other = T.parse_cache(
        T.format_cache(
            {"input": 1.0, "/stem/conv/Conv_output_0": 2.0, "/head/fc/Gemm_output_0": 3.0}
        )
    )
    with pytest.raises(UserError, match="does not match the model: 2 of its 3 tensors") as e:
        T.check_cache(other, tiny_path)
    assert "/stem/conv/Conv_output_0" in str(e.value)
    # a cache TensorRT wrote for this model (TRT 8.4-8.5 caches of ONNX models): the tensors
    # its parser made, and 0 for a tensor that was always 0 (before: both refused)
    lines = (out / "calib.cache").read_bytes().splitlines()
    lines += [b"(Unnamed Layer* 8) [Constant]_output: 39137939", b"ONNXTRT_Broadcast_3: 0",
              b"(Unnamed Layer* 64) [Shuffle]_output: 0", b"Reshape__12: 3c010204"]  # fmt: skip
    trt_made = T.parse_cache(b"\n".join(lines) + b"\n")
    assert trt_made.scales["ONNXTRT_Broadcast_3"] == 0.0
    T.check_cache(trt_made, tiny_path)
    no_input = T.parse_cache(T.format_cache({"c1": 1.0}))
    with pytest.raises(UserError, match="no scale for its input 'input'"):
        T.check_cache(no_input, tiny_path)


# -- calibrate: the outputs ----------------------------------------------------------------------


def _inits(m):
    return {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}


def test_outputs_are_written(calibrated):
    out, info = calibrated
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "calib.cache",
        "calib_ids.txt",
        "calib_report.json",
        "model.int8.cpu.onnx",
        "model.int8.qdq.onnx",
    ]
    assert info["faces"] == 160 and info["method"] == "entropy"
    ids = (out / "calib_ids.txt").read_text().splitlines()
    assert ids[0].startswith("#") and ids[1:] == [f"syn_{k:04d}" for k in range(160)]


def test_tensorrt_qdq_graph(calibrated):
    out, _ = calibrated
    m = onnx.load(str(out / "model.int8.qdq.onnx"))
    g = m.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = _inits(m)
    rep = json.loads((out / "calib_report.json").read_text())
    weighted = [n for n in g.node if n.op_type in ("Conv", "Gemm")]
    assert len(weighted) == 3
    for n in weighted:
        act, w = producer[n.input[0]], producer[n.input[1]]
        assert act.op_type == "DequantizeLinear" and w.op_type == "DequantizeLinear"
        # activation: per-tensor INT8, zero point 0, scale = the calibrated amax / 127
        q = producer[act.input[0]]
        assert q.op_type == "QuantizeLinear"
        scale, zp = inits[act.input[1]], inits[act.input[2]]
        assert scale.shape == () and zp.dtype == np.int8 and zp == 0
        assert scale == pytest.approx(rep["tensors"][q.input[0]]["amax"] / 127, rel=1e-5)
        # weight: per-channel symmetric INT8 along the output channels (axis 0), float weight
        # behind a Q -> DQ pair
        wq = producer[w.input[0]]
        assert wq.op_type == "QuantizeLinear" and wq.input[0] in inits
        wscale, wzp = inits[w.input[1]], inits[w.input[2]]
        out_ch = inits[wq.input[0]].shape[0]
        assert wscale.shape == (out_ch,) and wzp.dtype == np.int8 and not wzp.any()
        axis = [a.i for a in w.attribute if a.name == "axis"]
        assert axis in ([], [0])
        amax_w = np.abs(inits[wq.input[0]]).reshape(out_ch, -1).max(1)
        assert np.allclose(wscale, amax_w / 127, rtol=1e-5)
        # never a Q on a weighted op's output (TensorRT placement); the bias stays float
        assert all(c.op_type != "QuantizeLinear" for c in g.node if n.output[0] in c.input)
        assert n.input[2] in inits and inits[n.input[2]].dtype == np.float32
    s = summarize(m)
    assert s["quantized_ops"] == {"Conv": 2, "Gemm": 1} and s["per_channel_weights"] == 3
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["edge_fer.preprocess"])["classes"] == list(CLASSES)
    assert meta["edge_fer.arch"] == "tiny"
    q = json.loads(meta["edge_fer.quantization"])
    assert q["target"] == "tensorrt" and q["method"] == "entropy" and q["calibration_faces"] == 160


def test_cpu_qdq_graph_uses_uint8_activations_and_runs(calibrated, tiny_path):
    from edge_fer.classify import Classifier

    out, info = calibrated
    m = onnx.load(str(out / "model.int8.cpu.onnx"))
    inits = _inits(m)
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert qs and all(inits[n.input[2]].dtype == np.uint8 for n in qs)
    assert summarize(m)["quantized_ops"] == {"Conv": 2, "Gemm": 1}
    faces = synthetic_faces(60, seed=5).images
    with (
        Classifier.load(tiny_path, threads=1, tta="none") as f,
        Classifier.load(out / "model.int8.cpu.onnx", threads=1, tta="none") as c,
        Classifier.load(out / "model.int8.qdq.onnx", threads=1, tta="none") as t,
    ):
        p32, pc, pt = f.predict(faces), c.predict(faces), t.predict(faces)
    assert np.abs(pc - p32).max() < 0.1 and np.abs(pt - p32).max() < 0.1
    assert info["agreement_with_fp32"]["tensorrt"] >= 0.9
    # the softmax stays in float: quantized to a calibrated range, it clipped every class of a
    # low-confidence model to one value (probabilities summing to 0.55)
    soft = next(n for n in m.graph.node if n.op_type == "Softmax")
    assert soft.output[0] in {o.name for o in m.graph.output}
    assert np.allclose(pc.sum(axis=1), 1.0, atol=1e-4)


def test_report_and_cache_agree(calibrated):
    out, _ = calibrated
    rep = json.loads((out / "calib_report.json").read_text())
    cache = T.read_cache(out / "calib.cache")
    assert rep["format"] == "edge-fer-calibration" and rep["method"] == "entropy"
    assert rep["calibration_set"]["faces"] == 160
    assert rep["calibration_set"]["class_counts"] == {"angry": 54, "happy": 53, "sad": 53}
    assert cache.version == 100300 and list(cache.scales) == list(rep["tensors"])
    for name, t in rep["tensors"].items():
        assert cache.scales[name] == pytest.approx(t["amax"] / 127, rel=1e-6)
        assert T.scale_hex(cache.scales[name]) == t["scale_hex"]
        assert 0 <= t["amax"] <= t["absmax"] + 1e-6 and 0 <= t["clipped"] < 0.05


# -- calibrate: bad input leaves nothing behind --------------------------------------------------


def _left(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def test_errors_leave_nothing_behind(tiny_path, tmp_path):
    out = tmp_path / "new"
    with pytest.raises(UserError, match="at least 100"):
        calibrate(tiny_path, synthetic_faces(60), out, threads=1)
    assert not out.exists()
    one = synthetic_faces(120)
    one.labels[:] = 0
    with pytest.raises(UserError, match="single class"):
        calibrate(tiny_path, one, out, threads=1)
    assert not out.exists()
    # an existing folder keeps what it had, and gets no temporary files
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    (kept / "calib.cache").mkdir()  # an output name taken by a folder
    with pytest.raises(UserError, match="calib.cache is a folder"):
        calibrate(tiny_path, synthetic_faces(), kept, threads=1)
    assert _left(kept) == ["calib.cache", "notes.txt"]


def test_outputs_never_replace_the_model(tiny_path, tmp_path):
    """Re-calibrating a model kept under one of the output names in the output folder."""
    from edge_fer.export.int8 import export_int8

    out = tmp_path / "cal"
    out.mkdir()
    model = out / "model.int8.cpu.onnx"
    model.write_bytes(tiny_path.read_bytes())
    with pytest.raises(UserError, match="must not overwrite an input"):
        calibrate(model, synthetic_faces(), out, threads=1)
    assert model.read_bytes() == tiny_path.read_bytes() and _left(out) == [model.name]
    report = out / "report.md"
    os.replace(model, report)  # a model named like the export's report
    with pytest.raises(UserError, match="must not overwrite an input"):
        export_int8(report, out, synthetic_faces(), threads=1)
    assert report.read_bytes() == tiny_path.read_bytes()
    for kw, words in (({"max_drop": float("nan")}, "max_drop"), ({"eval_limit": -1}, "eval_limit")):
        with pytest.raises(UserError) as e:
            export_int8(tiny_path, tmp_path / "o", synthetic_faces(), threads=1, **kw)
        assert e.value.param == words
    with pytest.raises(UserError) as e:
        calibrate(tiny_path, synthetic_faces(), tmp_path / "o", threads=1, min_faces=0)
    assert e.value.param == "min_faces" and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "node,why",
    [
        (
            lambda i, o: helper.make_node("Swish", [i], [o], domain="com.example"),
            "operator com.example::Swish",
        ),
        (
            lambda i, o: helper.make_node("FancyActivation", [i], [o]),
            "operator FancyActivation .*not an ONNX operator",
        ),
    ],
)
def test_unsupported_operator_is_named(tmp_path, node, why):
    m = tiny_model(extra_node=node)
    p = tmp_path / "odd.onnx"
    onnx.save(m, str(p))
    with pytest.raises(UserError, match=why):
        check_supported(m)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=why):
        calibrate(p, synthetic_faces(), out, threads=1)
    assert not out.exists()


def test_an_opset_older_than_13_is_refused_before_the_pass(tmp_path):
    """`export --opset 12` is allowed; its model failed ONNX Runtime's check of the Q/DQ
    models after the calibration pass, as "not a loadable ONNX model"."""
    m = tiny_model()
    m.opset_import[0].version = 12  # Softmax(axis=1), Conv, Gemm...: the same graph at 12
    p = tmp_path / "o12.onnx"
    onnx.save(m, str(p))
    seen: list[int] = []
    out = tmp_path / "out"
    with pytest.raises(UserError, match="opset 12; INT8 Q/DQ models need opset 13"):
        calibrate(p, synthetic_faces(), out, threads=1, progress=seen.append)
    assert not seen and not out.exists()


def test_quantized_model_is_refused(calibrated, tmp_path):
    out, _ = calibrated
    with pytest.raises(UserError, match="already quantized"):
        calibrate(out / "model.int8.qdq.onnx", synthetic_faces(), tmp_path / "o", threads=1)


def test_an_earlier_calibration_is_replaced_only_with_force(calibrated, tiny_path, tmp_path):
    """From Python too, not only `calibrate --out` (a deployment's cache was silently replaced)."""
    out = tmp_path / "again"
    shutil.copytree(calibrated[0], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match="is needed to replace the earlier calibration") as e:
        calibrate(tiny_path, synthetic_faces(), out, method="percentile", threads=1)
    assert e.value.param == "force"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert (out / "model.int8.qdq.onnx").is_file()
    info = calibrate(
        tiny_path, synthetic_faces(), out, method="percentile", target="cpu", threads=1, force=True
    )
    assert info["method"] == "percentile"
    # the earlier TensorRT model is not this calibration's: it went (it stayed, as if it were)
    assert not (out / "model.int8.qdq.onnx").exists() and (out / "model.int8.cpu.onnx").is_file()


def test_library_errors_reach_the_cli_with_its_flags(tiny_path, tmp_path, capsys):
    """The calibration library names its parameters; a command shows its own flag instead."""
    from edge_fer.cli.main import main
    from edge_fer.quantize import from_dataset

    with pytest.raises(UserError) as e:
        from_dataset(tmp_path, "train", 0)
    assert str(e.value) == "samples must be an integer >= 1, got 0"
    # before: NaN sampled nothing later, size 0 and a negative margin were OpenCV tracebacks
    from edge_fer.quantize import DetectOptions, from_source

    for call, param in (
        (lambda: from_dataset(tmp_path, "train", float("nan")), "samples"),
        (lambda: from_dataset(tmp_path, "train", 8, size=0), "size"),
        (lambda: from_dataset(tmp_path, "train", 8, seed=-1), "seed"),
        (lambda: from_source(tmp_path, seed=-1), "seed"),
        (lambda: from_source(tmp_path, margin=-0.5), "margin"),
        (lambda: from_source(tmp_path, detect=DetectOptions(every=float("nan"))), "every"),
        (lambda: from_source(tmp_path, detect=DetectOptions(max_frames=-1)), "max_frames"),
    ):
        with pytest.raises(UserError) as e:
            call()
        assert e.value.param == param
    args = ["export", "--int8", "--model", str(tiny_path), "--data", str(tmp_path)]
    assert main([*args, "--samples", "0"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "edge-fer export: error: --samples must be an integer >= 1, got 0"
    )
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    args = ["calibrate", "--model", str(tiny_path), "--data", str(data), "--out", str(out)]
    assert main([*args, "--samples", "0", "--no-progress"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "edge-fer calibrate: error: --samples must be an integer >= 1, got 0"
    )
    assert not out.exists()
    # before: the models and the report were written among the faces
    args[-1] = str(data / "calibrated")
    assert main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "is inside --data" in err[0], err
    assert not (data / "calibrated").exists()


def test_cli_calibrate(tiny_path, tmp_path, capsys):
    import cv2

    from edge_fer.cli.main import main

    data = tmp_path / "faces"
    faces = synthetic_faces(120)
    for k, (img, lab) in enumerate(zip(faces.images, faces.labels)):
        d = data / CLASSES[lab]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"f{k:03d}.png"), img)
    # names that are not UTF-8, or hold a newline: a UnicodeEncodeError after the work, and
    # an ids file whose line broke in two
    first = sorted(p for p in data.rglob("*.png"))[:2]
    os.rename(os.fsencode(first[0]), os.fsencode(first[0].parent) + b"/lat\xe9.png")
    first[1].rename(first[1].parent / "new\nline.png")
    out = tmp_path / "out"
    args = [
        "calibrate",
        "--model",
        str(tiny_path),
        "--data",
        str(data),
        "--split",
        "all",
        "--samples",
        "110",
        "--threads",
        "1",
        "--no-progress",
        "--target",
        "tensorrt",
        "--method",
        "percentile",
        "--trt-version",
        "8.6.1",
        "--out",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["faces"] == 110 and info["method"] == "percentile"
    assert info["trt_cache_header"] == "TRT-8601-EntropyCalibration2"
    assert _left(out) == [
        "calib.cache",
        "calib_ids.txt",
        "calib_report.json",
        "model.int8.qdq.onnx",
    ]
    # the ids file reproduces the same set (--samples is not used with it: refused)
    out2 = tmp_path / "again"
    at = args.index("--samples")
    by_ids = args[:at] + args[at + 2 : -3]
    assert main(by_ids + ["--ids", str(out / "calib_ids.txt"), "--out", str(out2)]) == 0
    assert (out2 / "calib.cache").read_bytes() == (out / "calib.cache").read_bytes()
    capsys.readouterr()
    # a file that is not text given as --ids (a model): one line (before: a traceback)
    out3 = tmp_path / "ids-of-a-model"
    assert main(by_ids + ["--ids", str(out / "model.int8.qdq.onnx"), "--out", str(out3)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ids" in err[0] and "not a text file of ids" in err[0], err
    # an earlier calibration is replaced only with --force (before: silently, every file)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = args[:-3] + ["--method", "minmax", "--out", str(out)]
    assert main(again) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force is needed to replace the earlier calibration" in err[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(again + ["--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "minmax"
    assert (out / "calib_report.json").read_bytes() != before["calib_report.json"]
    # a bad request: one line, exit code 2, nothing written
    bad = tmp_path / "bad"
    assert main(args[:-3] + ["--samples", "50", "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("edge-fer calibrate: error:") and "50 faces" in err[0]
    )
    assert not bad.exists()


# -- real data -----------------------------------------------------------------------------------


def _fer_faces(prefix: str, per_class: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`fer_faces` with ids as the calibration report writes them (train/<class>/<file>)."""
    imgs, labels, files = fer_faces(prefix, per_class)
    return imgs, labels, [f.relative_to(FER).as_posix() for f in files]


@needs_fer
def test_bundled_model_int8_close_to_fp32_on_fer2013(tmp_path):
    from edge_fer import labels as L
    from edge_fer.classify import Classifier, default_model_path

    model = default_model_path()
    imgs, labels, ids = _fer_faces("Training", 15)  # 105 faces
    faces = CalibFaces(imgs, ids, "FER2013 Training", labels, L.FER2013, len(imgs))
    info = calibrate(model, faces, tmp_path / "int8", threads=1, check_agreement=False)
    test, truth, _ = _fer_faces("PrivateTest", 30)
    acc, preds = {}, {}
    for name, path in [
        ("fp32", model),
        ("tensorrt", info["files"]["tensorrt"]),
        ("cpu", info["files"]["cpu"]),
    ]:
        with Classifier.load(path, threads=1, tta="none") as clf:
            preds[name] = clf.predict(test).argmax(1)
        acc[name] = float((preds[name] == truth).mean())
    for name in ("tensorrt", "cpu"):
        assert abs(acc[name] - acc["fp32"]) <= 0.03, acc
        assert (preds[name] == preds["fp32"]).mean() >= 0.93, acc


@needs_video
def test_faces_from_a_video_with_the_detector(tiny_path, tmp_path):
    from edge_fer.quantize import from_source

    faces = from_source(VIDEO, FACEFINDER, margin=0.1, size=SIZE, samples=120, seed=0)
    assert len(faces) == 120 and faces.seen >= 120 and faces.labels is None
    assert faces.images.shape == (120, SIZE, SIZE) and faces.images.dtype == np.uint8
    name, _, rest = faces.ids[0].partition("#")
    frame, _, box = rest.partition(":")
    assert name == VIDEO.name and frame.isdigit() and len(box.split(",")) == 4  # no local path
    again = from_source(VIDEO, FACEFINDER, margin=0.1, size=SIZE, samples=120, seed=0)
    assert again.ids == faces.ids  # seeded
    check_faces(faces)
    few = from_source(VIDEO_FEW, FACEFINDER, size=SIZE, samples=500)
    with pytest.raises(UserError, match=r"has \d+ faces; at least 100 .*--min-size"):
        check_faces(few)
    # no cascade given: a 160x120 video gets the low-resolution cascade, as in edge-fer run
    auto = from_source(VIDEO, None, size=SIZE, samples=120, seed=0)
    assert auto.notes[-1].endswith("cascade face_lowres.pico") and len(auto) == 120
    # a script's odd values, refused before a frame is read (before: a terabyte allocation,
    # OpenCV's copyMakeBorder, an AttributeError)
    for kw, param in (({"size": 10**6}, "size"), ({"margin": 1e9}, "margin"),
                      ({"margin": float("nan")}, "margin"), ({"detect": {"every": 1}}, "detect")):  # fmt: skip
        with pytest.raises(UserError) as e:
            from_source(VIDEO, FACEFINDER, samples=120, **kw)
        assert e.value.param == param, kw


@pytest.mark.skipif(
    not (CALIB / "calib.cache").is_file(), reason="no committed calibration of the bundled model"
)
def test_committed_calibration_belongs_to_the_bundled_model():
    from edge_fer.classify import default_model_path
    from edge_fer.quantize.report import read_ids, sha256_file

    model = default_model_path()
    cache = T.read_cache(CALIB / "calib.cache")
    assert cache.algorithm == "EntropyCalibration2"
    T.check_cache(cache, model)
    rep = json.loads((CALIB / "calib_report.json").read_text())
    assert rep["model"]["sha256"] == sha256_file(model), (
        "edge_fer/assets/fer_default.onnx changed: recalibrate with the command in "
        "calibration/README.md"
    )
    ids = read_ids(CALIB / "calib_ids.txt")
    assert len(ids) == len(set(ids)) == rep["calibration_set"]["faces"] == 512
    assert all(Path(i).name.startswith("Training_") for i in ids)
    for name, t in rep["tensors"].items():
        assert cache.scales[name] == pytest.approx(t["scale"], rel=1e-6)
