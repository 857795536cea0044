"""`edge-fer deploy deepstream|triton` and the jetson/ kit: the generated files of the bundled
model parsed key by key, the preprocessing they encode checked numerically against edge-fer's,
the refusals (one line, exit 2, no partial folder), and the shell scripts' syntax."""

from __future__ import annotations

import configparser
import importlib.util
import os
import py_compile
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from paths import CALIB, FER_MODEL, ROOT, needs_modules
from processes import refusal_line, run_cli

from edge_fer.classify import default_model_path
from edge_fer.cli.main import main
from edge_fer.preprocess import PreprocessSpec
from edge_fer.runtime.crops import crop_face, square_box

MODEL = default_model_path()
CACHE = CALIB / "calib.cache"


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory) -> Path:
    """The bundled model's Q/DQ file for TensorRT, made as `edge-fer calibrate` makes it: the
    committed calibration folder holds the cache only (derived ONNX files are not committed,
    so a clean clone has no `model.int8.qdq.onnx` there)."""
    pytest.importorskip("onnx")
    from edge_fer.quantize import CalibFaces, calibrate
    from edge_fer.quantize.calib_data import MIN_FACES

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (MIN_FACES, 48, 48)).astype(np.uint8)
    ids = [f"r{i}" for i in range(MIN_FACES)]
    out = tmp_path_factory.mktemp("qdq") / "calib"
    calibrate(MODEL, CalibFaces(faces, ids, "random"), out, target="tensorrt", threads=1)
    return out / "model.int8.qdq.onnx"


def _deploy(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["deploy", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _ini(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    with open(path, encoding="utf-8") as fh:
        cp.read_file(fh)
    return cp


def _spec() -> PreprocessSpec:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    return PreprocessSpec.from_metadata(dict(sess.get_modelmeta().custom_metadata_map))


def _graph_io() -> tuple[list[str], list[str]]:
    onnx = pytest.importorskip("onnx")
    g = onnx.load(str(MODEL), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    return [i.name for i in g.input if i.name not in inits], [o.name for o in g.output]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _no_partial(parent: Path) -> None:
    left = [p.name for p in parent.iterdir() if p.name.startswith(".")]
    assert not left, f"partial folders left behind: {left}"


@pytest.fixture(scope="module")
def ds_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "kit"
    assert main(["deploy", "deepstream", "--out", str(out), "--target", "orin-nano"]) == 0
    return out


@pytest.fixture(scope="module")
def triton_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    assert main(["deploy", "triton", "--out", str(out), "--target", "orin-agx"]) == 0
    return out


# -- DeepStream -------------------------------------------------------------------------------


def test_nvinfer_secondary_config(ds_dir: Path) -> None:
    spec = _spec()
    inputs, outputs = _graph_io()
    p = _ini(ds_dir / "config_infer_secondary_fer.txt")["property"]
    assert p["process-mode"] == "2" and p["network-type"] == "1"
    assert p["gie-unique-id"] == "2" and p["operate-on-gie-id"] == "1"
    assert p["operate-on-class-ids"] == "0"
    assert float(p["classifier-threshold"]) == 0.0
    assert p["model-color-format"] == "2"  # GRAY
    assert p["network-mode"] == "2"  # fp16 default
    assert "int8-calib-file" not in p
    assert p["batch-size"] == "16"
    assert p["input-object-min-width"] == p["input-object-min-height"] == "32"
    assert p["infer-dims"] == f"1;{spec.input_size};{spec.input_size}"
    assert p["output-blob-names"].split(";") == outputs
    assert inputs == ["input"]
    assert (ds_dir / p["onnx-file"]).read_bytes() == MODEL.read_bytes()
    assert p["model-engine-file"] == f"{MODEL.name}_b16_gpu0_fp16.engine"
    # nvinfer: y = k * (x - offset) must equal edge-fer's (x/255 - mean)/std on every pixel value
    k, offset = float(p["net-scale-factor"]), float(p["offsets"])
    x = np.arange(256, dtype=np.float64)
    np.testing.assert_allclose(k * (x - offset), (x / 255.0 - spec.mean) / spec.std, atol=1e-9)
    # and the whole prepared tensor of a real crop matches PreprocessSpec.prepare
    face = (np.arange(spec.input_size**2) % 251).astype(np.uint8).reshape(spec.input_size, -1)
    np.testing.assert_allclose(
        (k * (face.astype(np.float64) - offset))[None, None], spec.prepare([face]), atol=1e-5
    )
    # the label file: ONE line, the classes in output order, ';'-separated
    labels = (ds_dir / p["labelfile-path"]).read_text()
    assert labels.count("\n") == 1
    assert tuple(labels.strip().split(";")) == spec.classes


def test_deepstream_app_config(ds_dir: Path) -> None:
    cp = _ini(ds_dir / "deepstream_app_fer.txt")
    for group in (
        "application",
        "source0",
        "streammux",
        "primary-gie",
        "tracker",
        "secondary-gie0",
        "osd",
        "sink0",
    ):
        assert cp.has_section(group), group
    src = cp["source0"]
    assert src["type"] == "5" and src["camera-csi-sensor-id"] == "0"  # csi://0 default
    sg = cp["secondary-gie0"]
    assert sg["enable"] == "1" and sg["operate-on-gie-id"] == cp["primary-gie"]["gie-unique-id"]
    assert sg["gie-unique-id"] == "2"
    assert (ds_dir / sg["config-file"]).is_file()
    prim = _ini(ds_dir / cp["primary-gie"]["config-file"])["property"]
    assert "REPLACE_WITH_YOUR_FACE_DETECTOR" in prim["onnx-file"]  # the user's detector
    assert prim["process-mode"] == "1" and prim["gie-unique-id"] == "1"
    readme = (ds_dir / "README.md").read_text()
    assert "crop margin" in readme and "box expansion (chosen)" in readme


@pytest.mark.parametrize(
    "source, kind, key, value",
    [
        ("/dev/video1", "1", "camera-v4l2-dev-node", "1"),
        ("rtsp://cam.local/stream", "4", "uri", "rtsp://cam.local/stream"),
        ("file:///data/clip.mp4", "3", "uri", "file:///data/clip.mp4"),
    ],
)
def test_deepstream_sources(tmp_path, capsys, source, kind, key, value) -> None:
    out = tmp_path / "ds"
    rc, _, err = _deploy(capsys, "deepstream", "--out", out, "--source", source, "--sink", "none")
    assert rc == 0, err
    cp = _ini(out / "deepstream_app_fer.txt")
    assert cp["source0"]["type"] == kind and cp["source0"][key] == value
    assert cp["sink0"]["type"] == "1"  # fakesink
    assert cp["streammux"]["live-source"] == ("0" if source.startswith("file:") else "1")


@pytest.mark.parametrize("source", ["clips/lobby.mp4", "file://clips/lobby.mp4"])
def test_deepstream_refuses_a_relative_source_to_no_file(
    tmp_path, capsys, monkeypatch, source
) -> None:
    """'file://clips/lobby.mp4' names host 'clips': GStreamer and urlparse read no path."""
    monkeypatch.chdir(tmp_path)
    rc, _, err = _deploy(capsys, "deepstream", "--out", "dsv", "--source", source)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert source in err and "absolute path" in err and "file:///" in err, err
    assert not (tmp_path / "dsv").exists()


def test_deepstream_relative_source_to_a_file_here_is_an_absolute_uri(
    tmp_path, capsys, monkeypatch
) -> None:
    import configparser
    import importlib.util

    monkeypatch.chdir(tmp_path)
    clip = tmp_path / "clips" / "lobby.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"a clip")
    rc, _, err = _deploy(capsys, "deepstream", "--out", "dsv", "--source", "clips/lobby.mp4")
    assert rc == 0, err
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(tmp_path / "dsv" / "deepstream_app_fer.txt", encoding="utf-8")
    uri = cp["source0"]["uri"]
    assert uri == clip.as_uri() and urlparse(uri).netloc == "" and urlparse(uri).path == str(clip)
    spec = importlib.util.spec_from_file_location(
        "fer_probe_rel", tmp_path / "dsv" / "fer_probe.py"
    )
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    assert probe.SOURCE["uri"] == uri


def test_probe_script_reproduces_the_crop(ds_dir: Path) -> None:
    path = ds_dir / "fer_probe.py"
    assert os.access(path, os.X_OK)
    py_compile.compile(str(path), doraise=True)
    probe = _load(path, "fer_probe_generated")  # gi/pyds are imported only in main()
    spec = _spec()
    assert probe.MARGIN == spec.crop_margin and probe.CLASSES == spec.classes
    assert probe.SECONDARY_ID == 2 and probe.PRIMARY_ID == 1
    rng = np.random.default_rng(0)
    inside = 0
    for _ in range(300):  # a square inside the frame: exactly edge-fer's square
        w, h = rng.uniform(20, 200, 2)
        x, y = rng.uniform(0, 1280 - w), rng.uniform(0, 720 - h)
        x0, y0, s = square_box(x, y, w, h, spec.crop_margin)
        if x0 >= 0 and y0 >= 0 and x0 + s <= 1280 and y0 + s <= 720:
            inside += 1
            assert probe.expand_box(x, y, w, h) == (x0, y0, s, s)
    assert inside > 100
    # at the edge: clamped to the frame (DeepStream cannot pad); the bundled margin is 0,
    # so the wider margin of a model that asks for one is checked here too
    x0, y0, s = square_box(-10.0, 700.0, 50.0, 50.0, spec.crop_margin)
    want = (0.0, float(y0), float(x0 + s), float(720 - y0))
    assert probe.expand_box(-10.0, 700.0, 50.0, 50.0) == want
    # margin 0.1: the square (-15, 695, 60, 60)
    assert probe.expand_box(-10.0, 700.0, 50.0, 50.0, 0.1) == (0.0, 695.0, 45.0, 25.0)
    usb = probe.pipeline_description(probe.parse_source("/dev/video0"), "none", 640, 480, 30)
    # `mjpeg` is a property of nvv4l2decoder on Jetson only (see test_probe_mjpeg_only_on_jetson)
    assert ("nvv4l2decoder mjpeg=1" in usb) == probe.is_jetson() and "image/jpeg" in usb
    rtsp = probe.pipeline_description(probe.parse_source("rtsp://h/s"), "none", 640, 480, 30)
    assert "rtspsrc" in rtsp and "nvv4l2decoder" in rtsp
    csi = probe.source_description(probe.SOURCE, 1280, 720, 30)
    assert csi.startswith("nvarguscamerasrc sensor-id=0")


@pytest.mark.skipif(not CACHE.is_file(), reason=f"{CACHE} is absent (not a source checkout)")
def test_deepstream_int8_cache_header(tmp_path, capsys) -> None:
    out = tmp_path / "ds8"
    rc, _, err = _deploy(
        capsys, "deepstream", "--out", out, "--precision", "int8", "--target", "xavier-nx"
    )
    assert rc == 0, err
    p = _ini(out / "config_infer_secondary_fer.txt")["property"]
    assert p["network-mode"] == "1" and p["int8-calib-file"] == "calib.cache"
    head, _, body = (out / "calib.cache").read_text().partition("\n")
    assert head == "TRT-8502-EntropyCalibration2"  # Xavier NX: JetPack 5.1, TensorRT 8.5.2
    assert body == CACHE.read_text().partition("\n")[2]  # the ranges are unchanged
    out2 = tmp_path / "ds9"
    rc, _, err = _deploy(
        capsys, "deepstream", "--out", out2, "--precision", "int8", "--trt-version", "8.6.2"
    )
    assert rc == 0, err
    assert (out2 / "calib.cache").read_text().startswith("TRT-8602-EntropyCalibration2\n")


def test_deepstream_qdq_int8_gets_a_calibration_file(tmp_path, capsys, qdq_model) -> None:
    """nvinfer sets INT8 only with a readable int8-calib-file and builds FP16 without one, so a
    Q/DQ model gets a header-only cache (before: none, and the "_int8.engine" it names was
    never built)."""
    qdq = qdq_model
    out = tmp_path / "dsq"
    rc, _, err = _deploy(
        capsys, "deepstream", "--model", qdq, "--out", out, "--precision", "int8",
        "--target", "orin-nx",
    )  # fmt: skip
    assert rc == 0, err
    p = _ini(out / "config_infer_secondary_fer.txt")["property"]
    assert p["network-mode"] == "1" and p["int8-calib-file"] == "calib.cache"
    assert p["model-engine-file"].endswith("_int8.engine")
    assert (out / "calib.cache").read_text() == "TRT-100300-EntropyCalibration2\n"
    assert "holds only a header" in (out / "README.md").read_text()
    # TensorRT 11 has no calibrators: no file
    rc, _, err = _deploy(capsys, "deepstream", "--model", qdq, "--out", tmp_path / "ds11",
                         "--precision", "int8", "--trt-version", "11.0.0")  # fmt: skip
    assert rc == 0, err
    assert (
        "int8-calib-file"
        not in _ini(tmp_path / "ds11" / "config_infer_secondary_fer.txt")["property"]
    )
    assert not (tmp_path / "ds11" / "calib.cache").exists()


# -- Triton -----------------------------------------------------------------------------------


def _pbtxt(text: str) -> dict:
    """A small parser of the protobuf text format Triton's config.pbtxt uses."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', re.sub(r"#.*", "", text))
    pos = 0

    def value():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "{":
            return message("}")
        if tok == "[":
            items = []
            while tokens[pos] != "]":
                if tokens[pos] == ",":
                    pos += 1
                    continue
                items.append(value())
            pos += 1
            return items
        if tok.startswith('"'):
            return tok[1:-1]
        return int(tok) if re.fullmatch(r"-?\d+", tok) else tok

    def message(end):
        nonlocal pos
        out: dict = {}
        while pos < len(tokens) and tokens[pos] != end:
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            out[key] = value()
        pos += 1
        return out

    return message(None)


def test_triton_repository(triton_dir: Path) -> None:
    spec = _spec()
    inputs, outputs = _graph_io()
    for name, platform in (("fer_onnx", "onnxruntime_onnx"), ("fer_trt", "tensorrt_plan")):
        cfg = _pbtxt((triton_dir / name / "config.pbtxt").read_text())
        assert cfg["name"] == name and cfg["platform"] == platform
        assert cfg["max_batch_size"] == 32
        (inp,) = cfg["input"]
        (out,) = cfg["output"]
        assert inp["name"] == inputs[0] and out["name"] == outputs[0]
        assert inp["data_type"] == out["data_type"] == "TYPE_FP32"
        assert inp["dims"] == [1, spec.input_size, spec.input_size]  # no batch dimension
        assert out["dims"] == [len(spec.classes)]
        assert out["label_filename"] == "labels.txt"
        labels = (triton_dir / name / "labels.txt").read_text().splitlines()
        assert tuple(labels) == spec.classes
        assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 500
        assert cfg["instance_group"] == [{"kind": "KIND_GPU", "count": 1}]
    assert (triton_dir / "fer_onnx" / "1" / "model.onnx").read_bytes() == MODEL.read_bytes()
    assert (triton_dir / "fer_trt" / "1").is_dir()
    assert not (triton_dir / "fer_trt" / "1" / "model.plan").exists()  # built on the target
    readme = (triton_dir / "README.md").read_text()
    assert "dynamic batching, one GPU instance each)" in readme
    assert (
        "edge-fer build-engine fer.onnx --precision fp16 --target orin-agx --opt-batch 8 "
        "--max-batch 32 --out fer_trt/1/model.plan"
    ) in readme
    assert (triton_dir / "fer.onnx").read_bytes() == MODEL.read_bytes()


def test_build_command_matches_build_engine_cli(triton_dir: Path) -> None:
    """The README's command parses with `edge-fer build-engine`'s own parser."""
    from edge_fer.cli.main import build_parser

    readme = (triton_dir / "README.md").read_text()
    cmd = next(ln for ln in readme.splitlines() if ln.startswith("edge-fer build-engine"))
    args = build_parser().parse_args(cmd.split()[1:])
    assert args.command == "build-engine" and args.precision == "fp16"
    assert args.target == "orin-agx" and args.max_batch == 32


def test_triton_client_prepares_like_edge_fer(triton_dir: Path) -> None:
    path = triton_dir / "triton_client.py"
    py_compile.compile(str(path), doraise=True)
    client = _load(path, "triton_client_generated")  # tritonclient is imported only in main()
    spec = _spec()
    assert client.CLASSES == spec.classes and client.MODEL_NAME == "fer_onnx"
    rng = np.random.default_rng(1)
    faces = [
        rng.integers(0, 256, (96, 96, 3), np.uint8),
        rng.integers(0, 256, (30, 40), np.uint8),
        rng.integers(0, 256, (48, 48), np.uint8),
    ]
    np.testing.assert_allclose(client.prepare(faces), spec.prepare(faces), atol=1e-6)
    frame = rng.integers(0, 256, (120, 160), np.uint8)
    for box in ((10, 10, 40, 50), (-5, 90, 40, 40), (140, 2, 30, 30)):
        np.testing.assert_array_equal(
            client.crop_face(frame, box), crop_face(frame, box, spec.crop_margin)
        )
    assert client.parse_classification(b"0.81:3:happy") == ("happy", 3, 0.81)
    assert client.parse_classification("0.5:6") == ("neutral", 6, 0.5)


# -- refusals: one line, exit 2, nothing left behind --------------------------------------------


def test_refuses_non_empty_out_without_force(tmp_path, capsys) -> None:
    out = tmp_path / "kit"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    rc, _, err = _deploy(capsys, "deepstream", "--out", out)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--force" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    _no_partial(tmp_path)
    rc, _, err = _deploy(capsys, "triton", "--out", out, "--force", "--platform", "onnxruntime")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "fer_onnx", "triton_client.py"]
    _no_partial(tmp_path)


@pytest.mark.parametrize("kind", ["deepstream", "triton"])
def test_force_never_deletes_the_model_or_cache_it_deploys(tmp_path, capsys, kind) -> None:
    """--force replaces the --out folder: one that holds an input (here or deeper) is refused."""
    out = tmp_path / "kit"
    (out / "sub").mkdir(parents=True)
    model = out / "sub" / "m.onnx"
    model.write_bytes(MODEL.read_bytes())
    rc, _, err = _deploy(capsys, kind, "--model", model, "--out", out, "--force")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "which replacing the folder would delete" in err
    assert model.read_bytes() == MODEL.read_bytes()
    cache = out / "calib.cache"
    cache.write_bytes(CACHE.read_bytes())
    argv = ["--model", MODEL, "--precision", "int8", "--calib-cache", cache, "--out", out]
    rc, _, err = _deploy(capsys, kind, *argv, "--force")
    assert rc == 2 and "calibration cache" in err and cache.exists()
    _no_partial(tmp_path)


def test_force_never_deletes_the_source_clip(tmp_path, capsys) -> None:
    """`deploy deepstream --out kit --force --source kit/clip.avi` deleted the clip."""
    out = tmp_path / "kit"
    out.mkdir()
    clip = out / "clip.avi"
    clip.write_bytes(b"a clip")
    for src in (clip, clip.as_uri()):
        rc, _, err = _deploy(capsys, "deepstream", "--out", out, "--force", "--source", src)
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert "holds the source" in err and clip.read_bytes() == b"a clip"
    _no_partial(tmp_path)


def test_force_never_deletes_the_working_folder_and_writes_through_a_link(
    tmp_path, capsys, monkeypatch
) -> None:
    """`deploy --out . --force` (or a folder above the working one) deleted the user's working
    folder and everything in it; a symlinked --out became a real folder beside a leftover."""
    work = tmp_path / "work" / "project"
    work.mkdir(parents=True)
    (work / "data.txt").write_text("mine")
    monkeypatch.chdir(work)
    for out in (".", str(work), str(tmp_path / "work"), ".."):
        rc, _, err = _deploy(capsys, "triton", "--out", out, "--force", "--platform", "onnxruntime")
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert "is or holds the current folder" in err, err
    assert (work / "data.txt").read_text() == "mine"
    real = tmp_path / "real"
    real.mkdir()
    (real / "old.txt").write_text("an earlier kit")
    link = tmp_path / "link"
    link.symlink_to(real)
    rc, _, err = _deploy(capsys, "triton", "--out", link, "--force", "--platform", "onnxruntime")
    assert rc == 0, err
    assert link.is_symlink() and (real / "README.md").is_file() and not (real / "old.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real", "work"]  # no leftover


@pytest.mark.parametrize(
    "argv, words",
    [
        (("deepstream", "--target", "jetson-9000"), "unknown target"),
        (("deepstream", "--target", "nano", "--precision", "int8"), "no INT8"),
        (("triton", "--target", "tx2", "--precision", "int8"), "no INT8"),
        (("deepstream", "--model", "{fake}"), "not a loadable ONNX model"),
        (("deepstream", "--model", "{verify}"), "not an edge-fer expression model"),
        (("triton", "--model", "{int8cpu}"), "TensorRT cannot build"),
        (("deepstream", "--precision", "int8", "--calib-cache", "{fake}"), "calib"),
        (("deepstream", "--precision", "int8", "--calib-cache", "{foreign}"), "does not match"),
        (("triton", "--precision", "int8", "--calib-cache", "{foreign}"), "does not match"),
        (("deepstream", "--batch-size", "0"), "--batch-size must be >= 1"),
        (("deepstream", "--source", "csi://front"), "csi://N"),
        # nvinfer raises a smaller input-object-min-* to 16 without a word, and the probe would
        # then grow faces that deepstream-app skips
        (("deepstream", "--min-face", "8"), "--min-face must be >= 16 (nvinfer classifies"),
        # a cache that would not be used (before: ignored without a word)
        (("deepstream", "--precision", "fp16", "--calib-cache", "{foreign}"), "only used with"),
        (
            ("deepstream", "--model", "{qdq}", "--precision", "int8", "--calib-cache", "{foreign}"),
            "carries its own scales",
        ),
    ],
)
def test_refusals(tmp_path, capsys, argv, words, qdq_model) -> None:
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"\x08\x07garbage" * 10)
    foreign = tmp_path / "other.cache"  # a cache made for another model
    foreign.write_text("TRT-100300-EntropyCalibration2\ninput: 3c810204\nconv9_out: 3d89a406\n")
    paths = {
        "fake": fake,
        "verify": MODEL.parent / "face_verify.onnx",
        "int8cpu": MODEL.parent / "fer_default.int8.onnx",
        "foreign": foreign,
        "qdq": qdq_model,
    }
    argv = [a.format(**paths) for a in argv]
    out = tmp_path / "sub" / "kit"
    rc, _, err = _deploy(capsys, argv[0], "--out", out, *argv[1:])
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and words in err, err
    assert not out.exists() and not (tmp_path / "sub").exists()
    _no_partial(tmp_path)


# -- --calib-cache that would not be used ------------------------------------------------------
# (on a tiny cnn4 run of real FER2013 faces, trained and exported by `edge-fer` in child
# processes; collected, before, under ../shared's FER2013 and torch, safetensors and onnx)

needs_fer_splits = pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
needs_training = needs_modules("torch", "safetensors", "onnx")


@needs_fer_splits
@needs_training
@pytest.mark.parametrize(
    "argv, why",
    [
        (("--precision", "fp16"), "the plan's precision is fp16, not int8"),
        (("--platform", "onnxruntime", "--precision", "int8"), "there is no TensorRT plan"),
    ],
)
def test_deploy_triton_unused_calib_cache_is_refused(tmp_path, tiny_fer_env, argv, why):
    # before: written without it, not a word (deploy deepstream refused it)
    out = tmp_path / "repo"
    cache = CALIB / "calib.cache"
    proc = run_cli("deploy", "triton", "--model", FER_MODEL, "--out", out, "--calib-cache",
                   cache, *argv, env=tiny_fer_env)  # fmt: skip
    line = refusal_line(proc)
    assert f"--calib-cache {cache} is not used: {why}" in line, line
    assert not out.exists()


@needs_fer_splits
@needs_training
def test_deploy_deepstream_names_the_cache_not_the_model(
    tiny_cnn4_onnx, tiny_fer, tiny_fer_env, tmp_path
):
    # a Q/DQ model of our own (the INT8 export's TensorRT layout)
    qdq = tmp_path / "int8"
    proc = run_cli("export", "--model", tiny_cnn4_onnx, "--int8", "--data", tiny_fer, "--samples",
                   100, "--int8-out", qdq, "--threads", 1, "--target", "tensorrt",
                   env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cache = qdq / "calib.cache"
    out = tmp_path / "ds"
    proc = run_cli("deploy", "deepstream", "--model", qdq / "model.int8.qdq.onnx", "--precision",
                   "int8", "--calib-cache", cache, "--out", out, env=tiny_fer_env)  # fmt: skip
    line = refusal_line(proc)
    # before: "--calib-cache MODEL is a Q/DQ model ...": the flag led the model's path
    assert f"--calib-cache {cache} is not used: the model " in line, line
    assert not out.exists()


# -- jetson/ -----------------------------------------------------------------------------------


def test_jetson_shell_scripts_parse() -> None:
    scripts = sorted((ROOT / "jetson").glob("*.sh"))
    assert scripts, "jetson/*.sh missing"
    for s in scripts:
        r = subprocess.run(["bash", "-n", str(s)], check=False, capture_output=True, text=True)
        assert r.returncode == 0, f"{s.name}: {r.stderr}"
    if shutil.which("shellcheck"):
        r = subprocess.run(
            ["shellcheck", *map(str, scripts)], check=False, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stdout


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def _python_beside(bin_dir: Path, name: str = "python3") -> Path:
    """bin_dir/name: this Python with the checkout importable (a venv's python, in short)."""
    return _script(
        bin_dir / name,
        f'#!/bin/sh\nPYTHONPATH="{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" "$@"\n',
    )


def _bare_path(*dirs: Path) -> str:
    """`dirs` then /usr/bin:/bin without the folders holding an edge-fer: sudo's secure_path."""
    keep = [d for d in ("/usr/bin", "/bin") if not (Path(d) / "edge-fer").exists()]
    return os.pathsep.join([*map(str, dirs), *keep])


def _benchmark(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """jetson/benchmark.sh --synthetic 64x64 with a tegrastats that writes one line, under
    sudo's PATH (no venv on it)."""
    fakebin = tmp_path / "fakebin"
    _script(
        fakebin / "tegrastats",
        "#!/usr/bin/env bash\n"
        'while [ $# -gt 0 ]; do case "$1" in --logfile) log=$2; shift 2 ;; *) shift ;; esac; done\n'
        'echo "RAM 2450/7620MB (lfb 2x4MB) CPU [20%@1420,10%@1420] EMC_FREQ 7%@2133 '
        'GR3D_FREQ 35%@[612] tj@46C VDD_IN 6000mW/5723mW" >> "$log"\n'
        f'touch "{tmp_path}/ts-started"\n'
        "exec sleep 60\n",
    )
    return subprocess.run(
        ["bash", str(ROOT / "jetson" / "benchmark.sh"), "--synthetic", "64x64",
         "--out", str(tmp_path / "bench_all.json")],
        env={"PATH": _bare_path(fakebin), "TMPDIR": str(tmp_path), "HOME": str(tmp_path), **env},
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_benchmark_takes_edge_fer_from_EDGE_FER_under_sudo(tmp_path) -> None:
    """`sudo` replaces the PATH (secure_path, even with -E): the venv's edge-fer is named by
    EDGE_FER, and the summaries run with the python beside it."""
    import json

    venv = tmp_path / "venv" / "bin"
    _script(
        venv / "edge-fer",
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> "{tmp_path}/edge-fer.txt"\n'
        f'for i in $(seq 100); do [ -e "{tmp_path}/ts-started" ] && break; sleep 0.1; done\n'
        'while [ $# -gt 0 ]; do case "$1" in --json) out=$2; shift 2 ;; *) shift ;; esac; done\n'
        """echo '{"results": [{"backend": "tensorrt", "available": true, "frames": 300, """
        """"fps": 88.5, "latency_ms": {"p50": 11.0, "p99": 15.5}}]}' > "$out"\n""",
    )
    _python_beside(venv, "python")
    r = _benchmark(tmp_path, EDGE_FER=str(venv / "edge-fer"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "edge-fer.txt").read_text().startswith("bench --synthetic 64x64 --json ")
    (mode,) = json.loads((tmp_path / "bench_all.json").read_text())["modes"]
    assert mode["bench"][0]["fps"] == 88.5 and mode["tegrastats"]["samples"] >= 1


def test_benchmark_says_how_to_run_under_sudo(tmp_path) -> None:
    r = _benchmark(tmp_path)
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert 'sudo env PATH="$PATH"' in line and "EDGE_FER=" in line


def _systemd_argv(line: str, env: dict[str, str]) -> list[str]:
    """An ExecStart= command line as systemd makes it: words split with quotes, then in each
    word ${VAR} replaced and $$ made $; a word that is just $VAR becomes the value's words."""
    import shlex

    argv: list[str] = []
    for word in shlex.split(line):
        alone = re.fullmatch(r"\$(\w+)", word)
        if alone:
            argv += env.get(alone.group(1), "").split()
            continue
        argv.append(
            re.sub(r"\$\$|\$\{(\w+)\}",
                   lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), ""), word)
        )  # fmt: skip
    return argv


_FAKE_RUN = (
    "#!/usr/bin/env bash\n"
    "# edge-fer run: one events line; a named --events file is truncated, as edge-fer does\n"
    'events=""; model=""\n'
    'while [ $# -gt 0 ]; do case "$1" in --events) events=$2; shift 2 ;; '
    "--model) model=$2; shift 2 ;; *) shift ;; esac; done\n"
    'line="{\\"start\\": \\"$START\\", \\"model\\": \\"$(basename "$model")\\"}"\n'
    'if [ "$events" = - ]; then echo "$line"; else echo "$line" > "$events"; fi\n'
)


def test_systemd_unit_keeps_events_across_restarts(tmp_path) -> None:
    """Each start of the unit (a restart after a failure, a reboot) appends its events to
    /var/lib/edge-fer/events.jsonl: `edge-fer run --events FILE` truncates FILE when it starts."""
    import json

    venv, state = tmp_path / "venv", tmp_path / "state"
    state.mkdir()
    _script(
        venv / "bin" / "edge-fer",
        _FAKE_RUN.replace("#!/usr/bin/env bash\n",
                          f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "{tmp_path}/argv.txt"\n'),
    )  # fmt: skip

    def here(text: str) -> str:  # install-service.sh's venv, and the state folder moved here
        return text.replace("/opt/edge-fer/venv", str(venv)).replace(
            "/var/lib/edge-fer", str(state)
        )

    unit = here((ROOT / "jetson" / "edge-fer.service").read_text())
    (exec_start,) = [ln[10:] for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    settings = dict(
        ln.split("=", 1)
        for ln in here((ROOT / "jetson" / "edge-fer.env").read_text()).splitlines()
        if ln and not ln.startswith("#")
    )
    for start in ("1", "2", "3"):
        env = {"PATH": os.environ["PATH"], **settings, "START": start}
        r = subprocess.run(_systemd_argv(exec_start, env), env=env, cwd=state,
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert r.returncode == 0, r.stderr
    events = [json.loads(ln) for ln in (state / "events.jsonl").read_text().splitlines()]
    assert [e["start"] for e in events] == ["1", "2", "3"]
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    assert argv[:2] == ["run", settings["EDGE_FER_SOURCE"]]  # one word, & and ? kept
    assert argv[argv.index("--events") + 1] == "-"
    assert settings["EDGE_FER_ARGS"].split() == argv[-len(settings["EDGE_FER_ARGS"].split()) :]


def test_docker_entrypoint_keeps_events_and_rebuilds_for_new_weights(tmp_path) -> None:
    """The engine cached in the volume is named after the model's content: new weights under
    the same file name build a new engine. The default run appends to events.jsonl."""
    import hashlib
    import json

    bin_dir, cache, pylib = tmp_path / "bin", tmp_path / "cache", tmp_path / "pylib"
    _script(
        bin_dir / "edge-fer",
        "#!/usr/bin/env bash\n"
        'if [ "$1" = build-engine ]; then\n'
        f'  echo "$*" >> "{tmp_path}/builds.txt"\n'
        '  while [ $# -gt 0 ]; do case "$1" in --out) out=$2; shift 2 ;; *) shift ;; esac; done\n'
        '  echo engine > "$out"; exit 0\n'
        "fi\n" + _FAKE_RUN.split("\n", 1)[1],
    )
    _python_beside(bin_dir)
    pylib.mkdir()
    (pylib / "tensorrt.py").write_text('__version__ = "10.3.0"\n')
    model = tmp_path / "models" / "fer.onnx"
    model.parent.mkdir()

    def start(n: str, **env: str) -> None:
        full = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(pylib),
            "EDGE_FER_CACHE": str(cache),
            "EDGE_FER_MODEL": str(model),
            "START": n,
            **env,
        }
        r = subprocess.run(
            ["bash", str(ROOT / "jetson" / "docker-entrypoint.sh")],
            env=full,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == 0, r.stderr  # fmt: skip

    def builds() -> list[str]:
        f = tmp_path / "builds.txt"
        return f.read_text().splitlines() if f.exists() else []

    model.write_bytes(b"weights v1")
    start("1")
    start("2")  # same model: the cached engine
    model.write_bytes(b"weights v2")  # new weights, same file name
    start("3")
    short = [hashlib.sha256(w).hexdigest()[:12] for w in (b"weights v1", b"weights v2")]
    assert len(builds()) == 2 and short[1] in builds()[1]
    events = [json.loads(ln) for ln in (cache / "events.jsonl").read_text().splitlines()]
    assert [e["start"] for e in events] == ["1", "2", "3"]
    assert short[0] in events[1]["model"] and short[1] in events[2]["model"]
    assert events[2]["model"].endswith(".trt10.3.0.fp16.engine")

    calib = tmp_path / "calib.cache"  # int8: the calibration cache is part of the engine too
    calib.write_text("TRT-100300-EntropyCalibration2\ninput: 3c810204\n")
    for n in ("4", "5"):
        start(n, EDGE_FER_PRECISION="int8", EDGE_FER_CALIB_CACHE=str(calib))
    calib.write_text("TRT-100300-EntropyCalibration2\ninput: 3c800000\n")
    start("6", EDGE_FER_PRECISION="int8", EDGE_FER_CALIB_CACHE=str(calib))
    assert len(builds()) == 4 and all("--calib-cache" in b for b in builds()[2:])


def test_jetson_camera_presets() -> None:
    """Every preset of jetson/cameras.json is a source `edge-fer run` accepts."""
    import json

    from edge_fer.runtime.sources import parse_source

    presets = json.loads((ROOT / "jetson" / "cameras.json").read_text())
    kinds = {}
    for name, p in presets.items():
        src = p["source"].format(**p.get("defaults", {}))
        kinds[name] = parse_source(src).kind
    assert kinds["imx219-1080p30"] == kinds["imx477-4k30"] == "csi"
    assert kinds["usb-mjpeg-720p30"] == kinds["rtsp-h264"] == "gstreamer"
    assert "nvv4l2decoder mjpeg=1" in presets["usb-mjpeg-720p30"]["source"]
    assert "nvv4l2decoder" in presets["rtsp-h265"]["source"]


def test_tegrastats_lines() -> None:
    from edge_fer.deploy.tegrastats import parse_line, summarize

    orin_nx = (
        "12-02-2026 18:30:00 RAM 2450/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) "
        "CPU [2%@729,1%@729,off,off] EMC_FREQ 3%@2133 GR3D_FREQ 40%@[612] "
        "NVDLA0_FREQ @1600 NVDLA1_FREQ off VIC_FREQ 0%@115 APE 200 cpu@45.5C "
        "gpu@42.2C tj@46C VDD_IN 6723mW/5723mW VDD_CPU_GPU_CV 1479mW/479mW "
        "VDD_SOC 1435mW/1435mW"
    )
    nano = (
        "RAM 1766/3964MB (lfb 197x4MB) SWAP 0/2048MB (cached 0MB) "
        "CPU [24%@1224,15%@1224,13%@1224,10%@1224] EMC_FREQ 0% GR3D_FREQ 60%@921 PLL@21C "
        "CPU@25C GPU@23.5C POM_5V_IN 4545/2547 POM_5V_GPU 1200/0 POM_5V_CPU 549/529"
    )
    a, b = parse_line(orin_nx), parse_line(nano)
    assert a["gpu_load"] == 40 and a["gpu_mhz"] == 612 and a["emc_load"] == 3
    assert a["cpu_load"] == [2, 1] and a["power_mw"] == 6723 and a["power_rail"] == "VDD_IN"
    assert a["dla"]["0"] == {"on": True, "load": None, "mhz": 1600}
    assert a["dla"]["1"]["on"] is False
    assert a["temp_c"] == {"cpu": 45.5, "gpu": 42.2, "tj": 46.0}
    assert b["power_mw"] == 4545 and b["rails_mw"]["POM_5V_GPU"] == 1200 and b["gpu_load"] == 60
    assert parse_line("some other text") is None
    s = summarize([a, a, parse_line(orin_nx.replace("NVDLA0_FREQ @1600", "NVDLA0_FREQ off"))])
    assert s["samples"] == 3 and s["dla"]["0"]["active_share"] == pytest.approx(0.667)
    assert s["gpu_load_pct"] == {"mean": 40.0, "max": 40} and s["temp_c_max"]["tj"] == 46.0


def test_tegrastats_summary_cli(tmp_path) -> None:
    """What jetson/benchmark.sh runs: a tegrastats log plus an `edge-fer bench` report -> JSON."""
    import json

    from edge_fer.deploy.tegrastats import _main

    log = tmp_path / "tegrastats.log"
    log.write_text(
        "RAM 2450/7620MB (lfb 2x4MB) CPU [20%@1420,10%@1420] EMC_FREQ 7%@2133 "
        "GR3D_FREQ 35%@[612] tj@46C VDD_IN 6000mW/5723mW\n" * 3 + "garbage\n"
    )
    bench = tmp_path / "bench.json"
    bench.write_text(
        json.dumps(
            {
                "results": [
                    {
                        "backend": "tensorrt",
                        "available": True,
                        "frames": 300,
                        "fps": 88.5,
                        "latency_ms": {"p50": 11.0, "p99": 15.5},
                    },
                    {"backend": "onnxruntime", "available": False},
                ]
            }
        )
    )
    part = tmp_path / "part.json"
    assert (
        _main(
            [
                "summarize",
                str(log),
                "--bench",
                str(bench),
                "--mode",
                "15W",
                "--mode-id",
                "1",
                "-o",
                str(part),
            ]
        )
        == 0
    )
    out = tmp_path / "all.json"
    assert _main(["merge", "-o", str(out), str(part)]) == 0
    (mode,) = json.loads(out.read_text())["modes"]
    assert mode["nvpmodel"] == {"id": 1, "name": "15W"}
    assert mode["bench"] == [
        {
            "backend": "tensorrt",
            "frames": 300,
            "fps": 88.5,
            "latency_p50_ms": 11.0,
            "latency_p99_ms": 15.5,
        }
    ]
    ts = mode["tegrastats"]
    assert ts["samples"] == 3 and ts["power_mw"] == {"mean": 6000.0, "max": 6000}
    assert ts["cpu_load_pct"]["mean"] == 15.0 and ts["emc_load_pct"]["max"] == 7


def test_failure_mid_write_leaves_the_old_folder(tmp_path, capsys) -> None:
    """An error after some files are written (a class name nvinfer's label file cannot hold):
    the staging folder goes, the existing --out folder is untouched, even with --force."""
    import json

    onnx = pytest.importorskip("onnx")
    m = onnx.load(str(MODEL))
    props = {p.key: p for p in m.metadata_props}
    pre = json.loads(props["edge_fer.preprocess"].value)
    pre["classes"] = ["angry;mad", *pre["classes"][1:]]
    props["edge_fer.preprocess"].value = json.dumps(pre)
    bad = tmp_path / "semicolon.onnx"
    onnx.save(m, str(bad))
    out = tmp_path / "kit"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    rc, _, err = _deploy(capsys, "deepstream", "--model", bad, "--out", out, "--force")
    assert rc == 2 and "angry;mad" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    _no_partial(tmp_path)


# -- the pyds app against a stand-in for pyds: what the probes do to the object meta ---------


class _Node:
    """A GList node as pyds exposes it: .data, .next (None at the end)."""

    def __init__(self, items):
        self.data, self.next = items[0], (_Node(items[1:]) if len(items) > 1 else None)


def _glist(items):
    return _Node(list(items)) if items else None


def _fake_pyds(frames):
    from types import SimpleNamespace as NS

    batch = NS(frame_meta_list=_glist(frames))
    cast = NS(cast=lambda data: data)
    pyds = NS(
        gst_buffer_get_nvds_batch_meta=lambda _addr: batch,
        NvDsFrameMeta=cast,
        NvDsObjectMeta=cast,
        NvDsClassifierMeta=cast,
        NvDsLabelInfo=cast,
    )
    gst = NS(PadProbeReturn=NS(OK="ok"))
    return gst, pyds


def _face(left, top, width, height, object_id=7):
    from types import SimpleNamespace as NS

    rect = NS(left=float(left), top=float(top), width=float(width), height=float(height))
    label = NS(result_label="happy", result_class_id=3, result_prob=0.9)
    cls = NS(unique_component_id=2, label_info_list=_glist([label]))
    return NS(unique_component_id=1, class_id=0, object_id=object_id, confidence=0.8,
              rect_params=rect, classifier_meta_list=_glist([cls]))  # fmt: skip


def _frame(objs, source_w=1280, source_h=720):
    from types import SimpleNamespace as NS

    return NS(obj_meta_list=_glist(objs), pad_index=0, frame_num=5, buf_pts=123,
              source_frame_width=source_w, source_frame_height=source_h)  # fmt: skip


def _box(obj):
    r = obj.rect_params
    return (r.left, r.top, r.width, r.height)


def _run_probes(probe, frames, width=1280, height=720):
    """grow (classifier sink pad) -> what nvinfer sees -> emit (source pad) -> events."""
    import io
    import json
    from types import SimpleNamespace as NS

    gst, pyds = _fake_pyds(frames)
    out = io.StringIO()
    probes = probe.Probes(gst, pyds, out, width, height)
    buf = object()  # the same GstBuffer reaches both pads (nvinfer pushes its input buffer)
    info = NS(get_buffer=lambda: buf)
    assert probes.grow(None, info, 0) == "ok"
    seen = [[_box(o) for o in _iter(f.obj_meta_list)] for f in frames]
    assert probes.emit(None, info, 0) == "ok"
    return seen, [json.loads(ln) for ln in out.getvalue().splitlines()], probes


def _iter(node):
    while node is not None:
        yield node.data
        node = node.next


def test_probe_leaves_faces_below_min_face_to_nvinfer(ds_dir: Path) -> None:
    """nvinfer's input-object-min-width/height compare the box it is given (gstnvinfer.cpp
    should_infer_object: obj_meta->rect_params.width < min_input_object_width): a face below
    --min-face must not be grown past the limit, or the probe app classifies faces that
    deepstream-app and the config skip. The box is restored either way."""
    cp = _ini(ds_dir / "config_infer_secondary_fer.txt")
    probe = _load(ds_dir / "fer_probe.py", "fer_probe_minface")
    assert int(cp["property"]["input-object-min-width"]) == 32  # --min-face's default
    small = _face(100, 100, 20, 30)  # below 32: its square (30x30 or more) is another box
    big = _face(400, 200, 100, 80)  # at least 32: grown to edge-fer's square
    seen, events, probes = _run_probes(probe, [_frame([small, big])])
    assert seen[0][0] == (100.0, 100.0, 20.0, 30.0), "a face below --min-face was grown"
    assert probe.MIN_FACE == 32
    assert seen[0][1] == probe.expand_box(400.0, 200.0, 100.0, 80.0) != (400.0, 200.0, 100.0, 80.0)
    # restored for the tracker / OSD / events, and nothing left behind
    assert _box(small) == (100.0, 100.0, 20.0, 30.0) and _box(big) == (400.0, 200.0, 100.0, 80.0)
    assert probes.saved == {}
    (event,) = events
    assert [f["box"] for f in event["faces"]] == [
        [100.0, 100.0, 20.0, 30.0],
        [400.0, 200.0, 100.0, 80.0],
    ]
    assert event["faces"][1]["expression"] == "happy" and event["faces"][1]["track_id"] == 7


def test_probe_pipeline_with_the_new_streammux(ds_dir: Path, monkeypatch) -> None:
    """The new nvstreammux (USE_NEW_NVSTREAMMUX=yes, DeepStream 6.x/7.x) has no width, height or
    batched-push-timeout (deepstream_python_apps FAQ 'Using new gst-nvstreammux': setting them
    fails) and does not scale: the pipeline must not set them, and boxes are clamped to the
    source's own resolution, not --width/--height."""
    probe = _load(ds_dir / "fer_probe.py", "fer_probe_newmux")
    src = probe.parse_source("file:///home/me/clip.mp4")
    monkeypatch.delenv("USE_NEW_NVSTREAMMUX", raising=False)
    legacy = probe.pipeline_description(src, "none", 1280, 720, 30).split(" ! ")[0]
    assert "width=1280" in legacy and "batched-push-timeout=40000" in legacy
    monkeypatch.setenv("USE_NEW_NVSTREAMMUX", "yes")
    mux = probe.pipeline_description(src, "none", 1280, 720, 30).split(" ! ")[0]
    assert mux.startswith("nvstreammux name=m batch-size=1")
    for prop in ("width=", "height=", "batched-push-timeout", "live-source"):
        assert prop not in mux, mux
    # a 1920x1080 source, unscaled: a face at x=1500 lies inside the frame nvinfer crops
    face = _face(1500, 500, 100, 100)
    seen, _, _ = _run_probes(probe, [_frame([face], 1920, 1080)])
    assert seen[0][0] == probe.expand_box(1500.0, 500.0, 100.0, 100.0, probe.MARGIN, 1920, 1080)
    assert seen[0][0][2] == 100.0 and _box(face) == (1500.0, 500.0, 100.0, 100.0)


def test_probe_mjpeg_only_on_jetson(ds_dir: Path, monkeypatch) -> None:
    """nvv4l2decoder's `mjpeg` property exists on Jetson only: deepstream_python_apps sets it
    only there (apps/deepstream-segmentation: `if platform_info.is_integrated_gpu() and
    "mjpeg" ...: decoder.set_property('mjpeg', 1)`); on a dGPU gst_parse_launch fails with
    'no property mjpeg'."""
    probe = _load(ds_dir / "fer_probe.py", "fer_probe_mjpeg")
    src = probe.parse_source("/dev/video0")
    monkeypatch.setattr(probe.platform, "machine", lambda: "x86_64")  # a desktop dGPU
    dgpu = probe.source_description(src, 1280, 720, 30)
    assert "jpegparse ! nvv4l2decoder ! " in dgpu and "mjpeg" not in dgpu
    monkeypatch.setattr(probe, "is_jetson", lambda: True)
    assert "jpegparse ! nvv4l2decoder mjpeg=1 ! " in probe.source_description(src, 1280, 720, 30)


def test_the_triton_readme_says_the_instances_the_configs_have(tmp_path, capsys) -> None:
    """The README said "one GPU instance" whatever --instances and --instance-kind asked."""
    out = tmp_path / "tr"
    rc, _, err = _deploy(
        capsys, "triton", "--out", out, "--instances", "2", "--instance-kind", "cpu"
    )
    assert rc == 0, err
    onnx, trt = (_pbtxt((out / n / "config.pbtxt").read_text()) for n in ("fer_onnx", "fer_trt"))
    assert onnx["instance_group"] == [{"kind": "KIND_CPU", "count": 2}]
    assert trt["instance_group"] == [{"kind": "KIND_GPU", "count": 2}]
    text = (out / "README.md").read_text()
    assert "2 CPU instances of `fer_onnx`, 2 GPU instances of `fer_trt`)" in text


def test_the_reinfer_interval_is_told_as_nvinfer_counts_it(tmp_path, capsys) -> None:
    """nvinfer classifies a tracked object again when frame - last > interval: 5 is every 6th
    frame (the README and --help said every 5); a V4L2 source notes that deepstream-app asks
    the camera for raw video only."""
    out = tmp_path / "ds"
    rc, _, err = _deploy(capsys, "deepstream", "--out", out, "--source", "/dev/video0")
    assert rc == 0, err
    cp = _ini(out / "config_infer_secondary_fer.txt")
    assert cp["property"]["secondary-reinfer-interval"] == "5"
    readme = " ".join((out / "README.md").read_text().split())
    assert "classified again once more than 5 frames have passed (every 6 frames;" in readme
    app = (out / "deepstream_app_fer.txt").read_text()
    assert "# deepstream-app takes raw modes only: see v4l2-ctl --list-formats-ext" in app
