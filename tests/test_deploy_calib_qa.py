"""QA findings on `deploy`, `calibrate`, `build-engine`, `classify` and `models`: a calibration
cache made for another model that shares some tensor names with this one, a model whose file
name is not UTF-8, flags that did nothing for the inputs given (now refused in one line), the
words of some refusals, and the zoo's descriptions cut mid-sentence."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from paths import FER_MODEL, needs_modules, noise_faces
from processes import refusal_line, run_cli, run_main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trt_fakes import installer, tiny_onnx

from edge_fer.errors import UserError
from edge_fer.quantize import trt_cache

# tensors of the bundled vgg's graph, and of a cnn4 export (`edge-fer export` of a cnn4 run)
VGG_NAMES = ("input", "/net/features/features.0/features.0.0/Conv_output_0",
             "/net/features/features.0/features.0.2/Relu_output_0")  # fmt: skip
CNN4_NAMES = ("/net/features/features.1/MaxPool_output_0",
              "/net/classifier/classifier.1/Gemm_output_0",
              "/net/classifier/classifier.4/Gemm_output_0")  # fmt: skip
NOT_UTF8 = os.fsdecode(b"caf\xe9.onnx")  # a name as Latin-1 writes it: not valid UTF-8


def _cache(path: Path, names, version: str = "10.3.0") -> Path:
    path.write_bytes(trt_cache.format_cache({n: 2.0 for n in names}, version))
    return path


def _no_out(path: Path) -> None:
    assert not path.exists()
    left = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert not left, f"partial folders left behind: {left}"


# -- 1. a calibration cache for another model that shares some of this one's names ------------


def test_check_cache_refuses_a_cache_that_names_tensors_the_model_lacks():
    pytest.importorskip("onnx")
    # before: accepted as long as one name (besides the input) matched
    mixed = trt_cache.parse_cache(trt_cache.format_cache({n: 2.0 for n in VGG_NAMES + CNN4_NAMES}))
    with pytest.raises(UserError, match="does not match the model: 3 of its 6 tensors") as e:
        trt_cache.check_cache(mixed, FER_MODEL, "c.cache")
    assert CNN4_NAMES[0] in str(e.value) and "\n" not in str(e.value)
    # the tensors TensorRT's ONNX parser makes are not the model's, and are still accepted
    made = [*VGG_NAMES, "(Unnamed Layer* 8) [Constant]_output", "ONNXTRT_Broadcast_3",
            "(Unnamed Layer* 64) [Shuffle]_output", "Reshape__12", "Transpose__1234"]  # fmt: skip
    trt_cache.check_cache(trt_cache.parse_cache(trt_cache.format_cache(dict.fromkeys(made, 1.0))),
                          FER_MODEL)  # fmt: skip


@pytest.mark.parametrize("kind", ["deepstream", "triton"])
def test_deploy_refuses_a_cache_for_another_model(tmp_path, capsys, kind):
    pytest.importorskip("onnx")
    cache = _cache(tmp_path / "cnn4.cache", VGG_NAMES + CNN4_NAMES)
    out = tmp_path / "kit"
    rc, _, err = run_main(["deploy", kind, "--out", out, "--precision", "int8", "--calib-cache",
                           cache], capsys)  # fmt: skip
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "does not match the model: 3 of its 6 tensors" in err, err
    _no_out(out)


def test_build_engine_refuses_a_cache_for_another_model(monkeypatch, tmp_path, capsys):
    gpu = installer(monkeypatch, tmp_path)("10.3.0")
    model = tiny_onnx(tmp_path / "fer.onnx")
    cache = _cache(tmp_path / "other.cache", ("input", "logits", *CNN4_NAMES))
    rc, _, err = run_main(["build-engine", model, "--precision", "int8", "--calib-cache", cache],
                          capsys)  # fmt: skip
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "does not match the model: 3 of its 5 tensors" in err, err
    assert gpu.builds == 0 and not list(tmp_path.glob("*.engine*"))
    # the model's own names with those TensorRT's parser made: built
    ok = _cache(tmp_path / "own.cache", ("input", "logits", "(Unnamed Layer* 3) [Shuffle]_output"))
    rc, _, err = run_main(["build-engine", model, "--precision", "int8", "--calib-cache", ok],
                          capsys)  # fmt: skip
    assert rc == 0, err


@pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
@needs_modules("torch", "safetensors", "onnx")
def test_a_cnn4_calibration_is_refused_for_the_bundled_vgg(tiny_cnn4_onnx, tmp_path, capsys):
    """The QA run: `calibrate --model cnn4.onnx` then `deploy deepstream --precision int8
    --calib-cache` of its cache with the bundled model wrote the kit (11 of 17 names unknown)."""
    import numpy as np

    from edge_fer.quantize import CalibFaces, calibrate
    from edge_fer.quantize.calib_data import MIN_FACES

    faces = np.random.default_rng(0).integers(0, 256, (MIN_FACES, 48, 48)).astype(np.uint8)
    ids = [f"r{i}" for i in range(MIN_FACES)]
    calib = tmp_path / "c_cnn4"
    calibrate(tiny_cnn4_onnx, CalibFaces(faces, ids, "random"), calib, target="tensorrt", threads=1)
    out = tmp_path / "dd1"
    rc, _, err = run_main(["deploy", "deepstream", "--out", out, "--precision", "int8",
                           "--calib-cache", calib / "calib.cache"], capsys)  # fmt: skip
    assert rc == 2 and "does not match the model" in err and err.count("\n") == 1, err
    _no_out(out)


# -- 2. a model whose file name is not UTF-8 ------------------------------------------------


@pytest.fixture
def latin1_model(tmp_path) -> Path:
    p = tmp_path / NOT_UTF8
    try:
        p.write_bytes(FER_MODEL.read_bytes())
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes only UTF-8 names")
    return p


def test_a_model_named_in_latin1_loads(latin1_model, tmp_path, capsys):
    import cv2
    import numpy as np

    from edge_fer.classify import Classifier
    from edge_fer.deploy.common import read_model

    # before: "not a loadable ONNX model (__init__(): incompatible constructor arguments...)"
    with Classifier.load(latin1_model, threads=1) as clf:
        assert clf.predict(np.full((48, 48), 128, np.uint8)).shape == (1, 7)
    assert read_model(latin1_model).path == latin1_model
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.random.default_rng(0).integers(0, 256, (48, 48), np.uint8))
    rc, out, err = run_main(["classify", face, "--model", latin1_model, "--threads", "1"], capsys)
    assert rc == 0 and out.startswith(f"{face}: "), err
    rc, _, err = run_main(["deploy", "deepstream", "--model", latin1_model, "--out",
                           tmp_path / "ds"], capsys)  # fmt: skip
    assert rc == 0, err
    # the configs are UTF-8 text (GLib's key files must be): the kit's copy gets a name that is
    config = (tmp_path / "ds" / "config_infer_secondary_fer.txt").read_text(encoding="utf-8")
    assert "onnx-file=caf_.onnx\n" in config and (tmp_path / "ds" / "caf_.onnx").is_file()
    rc, _, err = run_main(["deploy", "triton", "--model", latin1_model, "--out", tmp_path / "tr"],
                          capsys)  # fmt: skip
    assert rc == 0, err
    assert "(caf_.onnx)" in (tmp_path / "tr" / "fer_onnx" / "config.pbtxt").read_text()


@needs_modules("onnx")
def test_calibrate_takes_a_model_named_in_latin1(latin1_model, tmp_path):
    data = noise_faces(tmp_path / "data", 120)
    out = tmp_path / "calib"
    # (a child: the summary names the model by its own bytes, which capsys cannot decode)
    proc = run_cli("calibrate", "--model", latin1_model, "--data", data, "--out", out,
                   "--threads", 1, "--no-progress", "--target", "tensorrt")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"calibrated {latin1_model} on 120 faces" in proc.stdout
    assert (out / "calib.cache").is_file()


def test_an_unloadable_model_named_in_latin1_is_named_as_the_file_is(tmp_path):
    bad = tmp_path / os.fsdecode(b"bad\xff.onnx")
    try:
        bad.write_bytes(b"\x08\x07garbage" * 10)
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes only UTF-8 names")
    line = refusal_line(run_cli("deploy", "triton", "--model", bad, "--out", tmp_path / "t"))
    assert "bad\\xff.onnx: not a loadable ONNX model (" in line, line
    assert "incompatible constructor arguments" not in line, line


# -- 3. calibrate: flags that do nothing for the faces given ---------------------------------


@pytest.fixture(scope="module")
def calib_inputs(tmp_path_factory) -> dict:
    """A class-folders dataset of 120 noise faces, an ids file of them all, and a folder of
    images as --source: with them, the original code calibrated (or stopped at the faces it
    found), the flags ignored."""
    root = tmp_path_factory.mktemp("calib")
    data = noise_faces(root / "data", 120)
    ids = root / "ids.txt"
    ids.write_text(
        "".join(f"{p.relative_to(data).as_posix()}\n" for p in sorted(data.rglob("*.png")))
    )
    return {"d": data, "ids": ids, "src": data / "angry"}


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--data", "{d}", "--every", "2"], "--every"),
        (["--data", "{d}", "--max-frames", "5"], "--max-frames"),
        (["--data", "{d}", "--cascade", "face.pico"], "--cascade"),
        (["--data", "{d}", "--min-size", "30"], "--min-size"),
        (["--data", "{d}", "--max-size", "0.5"], "--max-size"),
        (["--data", "{d}", "--threshold", "3"], "--threshold"),
        (["--source", "{src}", "--split", "test"], "--split"),
        # the default, given: still not used
        (["--source", "{src}", "--split", "train"], "--split"),
        (["--data", "{d}", "--ids", "{ids}", "--samples", "10"], "--samples"),
        (["--data", "{d}", "--ids", "{ids}", "--seed", "3"], "--seed"),
        (["--data", "{d}", "--ids", "{ids}", "--seed", "0"], "--seed"),
    ],
)
def test_calibrate_refuses_flags_it_would_ignore(tmp_path, capsys, calib_inputs, argv, words):
    # before: calibrated without a word about them
    argv = [a.format(**calib_inputs) for a in argv]
    out = tmp_path / "calib"
    rc, _, err = run_main(["calibrate", *argv, "--out", out, "--threads", "1", "--no-progress",
                           "--target", "cpu"], capsys)  # fmt: skip
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"edge-fer calibrate: error: {words} "), err
    assert not out.exists()


# -- 4. deploy: flags that do nothing for the kit asked for ----------------------------------


@pytest.mark.parametrize(
    "argv, words",
    [
        # before: the same kit with and without it
        (["deepstream", "--trt-version", "8.6.2"],
         "--trt-version 8.6.2 is only used with precision int8"),
        (["deepstream", "--precision", "fp32", "--trt-version", "10.3.0"],
         "--trt-version 10.3.0 is only used with precision int8"),
        (["triton", "--platform", "onnxruntime", "--precision", "int8"],
         "--precision is the TensorRT plan's"),
        (["triton", "--platform", "onnxruntime", "--precision", "fp16"],
         "--precision is the TensorRT plan's"),
        (["triton", "--platform", "onnxruntime", "--target", "nano"],
         "--target is the TensorRT plan's"),
        (["triton", "--platform", "tensorrt", "--instance-kind", "cpu"],
         "--instance-kind is the ONNX Runtime model's"),
        # before: written to config.pbtxt, past Triton's int32
        (["triton", "--max-batch", str(2**31)], "--max-batch must be at most 4096"),
        (["deepstream", "--batch-size", str(2**40)], "--batch-size must be at most 4096"),
    ],
)  # fmt: skip
def test_deploy_refuses_flags_it_would_ignore(tmp_path, capsys, argv, words):
    out = tmp_path / "kit"
    rc, _, err = run_main(["deploy", argv[0], "--out", out, *argv[1:]], capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert f"edge-fer deploy {argv[0]}: error: {words}" in err, err
    _no_out(out)


def test_deploy_still_takes_the_flags_that_apply(tmp_path, capsys):
    rc, _, err = run_main(["deploy", "triton", "--out", tmp_path / "a", "--platform", "onnxruntime",
                           "--instance-kind", "cpu", "--max-batch", "4096"], capsys)  # fmt: skip
    assert rc == 0, err
    assert "max_batch_size: 4096" in (tmp_path / "a" / "fer_onnx" / "config.pbtxt").read_text()
    rc, _, err = run_main(["deploy", "triton", "--out", tmp_path / "b", "--platform", "tensorrt",
                           "--precision", "fp32", "--target", "orin-nano"], capsys)  # fmt: skip
    assert rc == 0, err
    assert "--precision fp32" in (tmp_path / "b" / "README.md").read_text()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
@pytest.mark.parametrize("kind", ["deepstream", "triton"])
def test_deploy_refuses_a_pipe_as_the_calibration_cache(tmp_path, kind):
    # before: deploy deepstream read the pipe, waiting for a writer for ever
    fifo = tmp_path / "calib.cache"
    os.mkfifo(fifo)
    out = tmp_path / "kit"
    proc = run_cli("deploy", kind, "--out", out, "--precision", "int8", "--calib-cache", fifo,
                   timeout=60)  # fmt: skip
    line = refusal_line(proc)
    assert f"--calib-cache {fifo}: not a regular file" in line, line
    _no_out(out)


# -- 5. build-engine --sidecar-for builds nothing: the build flags are refused ----------------


@pytest.mark.parametrize(
    "flags",
    [["--precision", "fp16"], ["--target", "orin-nano"], ["--out", "x.engine"], ["--force"],
     ["--calib-cache", "c.cache"], ["--min-batch", "1"], ["--opt-batch", "4"],
     ["--max-batch", "8"], ["--workspace-mb", "512"], ["--dla-core", "0"], ["--sparse"],
     ["--timing-cache", "t.cache"], ["--verbose"]],
)  # fmt: skip
def test_sidecar_for_refuses_the_build_flags(monkeypatch, tmp_path, capsys, flags):
    installer(monkeypatch, tmp_path)("10.3.0")
    model = tiny_onnx(tmp_path / "fer.onnx")
    eng = tmp_path / "fer.trtexec.engine"
    eng.write_bytes(b"from trtexec")
    rc, _, err = run_main(["build-engine", model, "--sidecar-for", eng, *flags], capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert f"edge-fer build-engine: error: {flags[0]} " in err and "--sidecar-for" in err, err
    assert not (tmp_path / "fer.trtexec.engine.json").exists()


def test_sidecar_for_json_prints_the_sidecar(monkeypatch, tmp_path, capsys):
    installer(monkeypatch, tmp_path)("10.3.0")
    model = tiny_onnx(tmp_path / "fer.onnx")
    eng = tmp_path / "fer.trtexec.engine"
    eng.write_bytes(b"from trtexec")
    rc, out, err = run_main(["build-engine", model, "--sidecar-for", eng, "--json"], capsys)
    assert rc == 0, err
    # before: nothing on stdout
    doc = json.loads(out)
    assert doc == json.loads((tmp_path / "fer.trtexec.engine.json").read_text())
    assert doc["built_by"].startswith("trtexec")


# -- 6. classify --json --top --------------------------------------------------------------


def test_classify_json_refuses_top(tmp_path, capsys):
    import cv2
    import numpy as np

    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.full((48, 48), 128, np.uint8))
    # before: every class's probability, --top ignored
    rc, out, err = run_main(["classify", face, "--json", "--top", "2"], capsys)
    assert rc == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("edge-fer classify: error: --top "), err


# -- 7. the words of some refusals ---------------------------------------------------------


@pytest.mark.parametrize(
    "argv, line",
    [
        # before: "edge-fer deploy: error: ...", where argparse's own mistakes say the kind
        (["deepstream", "--width", "10"],
         "edge-fer deploy deepstream: error: --width must be in 32..7680, got 10"),
        (["triton", "--name", "a.b"],
         "edge-fer deploy triton: error: --name 'a.b': use letters, digits, '-' and '_' only"),
        # before: "--calib-cache a calibration cache is only used with precision int8, not fp16"
        (["deepstream", "--calib-cache", "c.cache"],
         ("edge-fer deploy deepstream: error: --calib-cache c.cache is only used with precision "
          "int8, not fp16")),
    ],
)  # fmt: skip
def test_deploy_refusals_read_right(tmp_path, capsys, argv, line):
    out = tmp_path / "kit"
    rc, _, err = run_main(["deploy", argv[0], "--out", out, *argv[1:]], capsys)
    assert rc == 2 and err == line + "\n", err
    _no_out(out)


def test_build_engine_timing_cache_named_like_the_sidecar(tmp_path, capsys):
    model = tiny_onnx(tmp_path / "m.onnx")
    eng, timing = tmp_path / "x.engine", tmp_path / "x.engine.json"
    rc, _, err = run_main(["build-engine", model, "--out", eng, "--timing-cache", timing], capsys)
    # before: "the sidecar of --out x.engine.json and --timing-cache x.engine.json are the same
    # file", as if --out were the .json
    assert rc == 2 and err.count("\n") == 1, err
    assert f"--timing-cache {timing} is the sidecar of --out {eng}" in err, err
    assert not timing.exists() and not eng.exists()
    # without --out, the engine's default name (MODEL.fp16.engine)
    timing = tmp_path / "m.fp16.engine.json"
    rc, _, err = run_main(["build-engine", model, "--precision", "fp16", "--timing-cache", timing],
                          capsys)  # fmt: skip
    assert rc == 2 and err.count("\n") == 1, err
    assert f"is the sidecar of the engine {tmp_path / 'm.fp16.engine'}," in err, err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_build_engine_says_a_pipe_is_not_a_regular_file(tmp_path, capsys):
    fifo = tmp_path / "m.onnx"
    os.mkfifo(fifo)
    model = tiny_onnx(tmp_path / "fer.onnx")
    eng = tmp_path / "fer.engine"
    eng.write_bytes(b"engine")
    for argv, name in (([fifo], fifo), ([model, "--sidecar-for", fifo], fifo),
                       ([model, "--precision", "int8", "--calib-cache", fifo], fifo)):  # fmt: skip
        rc, _, err = run_main(["build-engine", *argv], capsys)
        # before: "no such ONNX model" (and engine file, calibration cache): it is there
        assert rc == 2 and err.count("\n") == 1, err
        assert f"{name}: not a regular file (a pipe, device or socket)" in err, err


def test_build_engine_says_a_device_is_not_a_regular_file(tmp_path, capsys):
    dev = tmp_path / "null"
    try:
        os.mknod(dev, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, AttributeError):
        pytest.skip("cannot make a device node here")
    rc, _, err = run_main(["build-engine", dev], capsys)
    assert rc == 2 and f"{dev}: not a regular file (a pipe, device or socket)" in err, err


# -- 8. models: the zoo's descriptions whole -------------------------------------------------


@needs_modules("torch")
def test_models_describes_each_architecture_in_a_whole_sentence(capsys):
    rc, out, err = run_main(["models", "--json"], capsys)
    assert rc == 0, err
    about = {r["arch"]: r["about"] for r in json.loads(out)["zoo"]}
    # before: "... four residual depthwise-separable" (the docstring's first line)
    assert about["mini_xception"] == (
        "mini-Xception (Arriaga et al. 2017): two 8-filter convs, four residual "
        "depthwise-separable modules (16-32-64-128), a class-wise conv and global average "
        "pooling (~60k parameters)."
    )
    assert about["vgg"].endswith("then global pooling.")  # its first sentence, not the paragraph
    assert all(a.endswith(".") for a in about.values()), about
    rc, out, _ = run_main(["models"], capsys)
    assert "global average pooling (~60k parameters)." in out
