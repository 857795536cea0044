"""Arguments refused in one line: train-cascade's and eval-detector's lists and backgrounds,
create_backend's options and a closed backend, the Keras API's arguments, and the deploy kits'
config lines and standard output.

Real models (the bundled FER classifier and cascade), real files and folders, no mocks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from paths import BACKGROUNDS, FER_MODEL, ROOT, WEBFACES
from processes import CLI, refusal_line, run_cli

from edge_fer.errors import UserError

needs_webfaces = pytest.mark.shared("data/webfaces")


# -- 1: train-cascade's lists --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"), [("--stage-trees", "1x999999999999"), ("--min-tpr", "0.99x99999999999")]
)
def test_train_cascade_refuses_huge_repeat_counts(tmp_path, flag, value):
    """Was a MemoryError traceback (the list was built first), exit 1."""
    out = tmp_path / "run"
    p = run_cli("train-cascade", "--webfaces", tmp_path, "--out", out, flag, value, timeout=60)
    line = refusal_line(p)
    assert line.startswith(f"edge-fer train-cascade: error: {flag} ") and "1000" in line, line
    assert not out.exists()


def test_parse_list_bounds_and_names_its_parameter():
    from edge_fer.cascade_train.trainer import parse_list

    assert parse_list("1x3,2,20x2", int, "stage_trees") == [1, 1, 1, 2, 20, 20]
    with pytest.raises(UserError) as e:
        parse_list("1x999999999999", int, "stage_trees")
    assert e.value.param == "stage_trees"
    with pytest.raises(UserError, match="repeat counts must be >= 1"):
        parse_list("3,1x0", int, "stage_trees")  # the 1 was dropped silently


# -- 2: eval-detector's backgrounds --------------------------------------------------------------


def _eval(*more):
    return run_cli(
        "eval-detector", "--data", WEBFACES, "--limit", "2", "--speed-images", "0",
        "--reference", "none", *more, timeout=120,
    )  # fmt: skip


@needs_webfaces
def test_eval_detector_refuses_an_empty_backgrounds_folder(tmp_path):
    """Exited 0 with "images": 0 and null false-positive rates; train-cascade refuses it."""
    empty = tmp_path / "bg"
    empty.mkdir()
    line = refusal_line(_eval("--backgrounds", empty, "--json"))
    assert line.startswith(f"edge-fer eval-detector: error: --backgrounds {empty} "), line
    assert "no image" in line


@pytest.mark.shared("data/webfaces", "data/backgrounds")
def test_eval_detector_refuses_a_split_that_picks_no_background(tmp_path):
    bg = tmp_path / "bg"
    bg.mkdir()
    for src in sorted(BACKGROUNDS.glob("*.jpg"))[:2]:  # --bg-split val (a tenth): none of 2
        shutil.copy(src, bg / src.name)
    line = refusal_line(_eval("--backgrounds", bg, "--bg-split", "val"))
    assert "--bg-split val picks none of its 2" in line, line


@needs_webfaces
def test_eval_detector_refuses_bg_split_without_backgrounds():
    """--bg-split val --backgrounds none was accepted and did nothing."""
    line = refusal_line(_eval("--backgrounds", "none", "--bg-split", "val"))
    assert "--bg-split" in line and "--backgrounds" in line, line


# -- 3: backends ---------------------------------------------------------------------------------


def test_create_backend_names_an_unknown_option():
    from edge_fer.backends import create_backend

    with pytest.raises(UserError) as e:
        create_backend("onnxruntime", FER_MODEL, foo=1)
    assert e.value.param == "foo" and "not an option of the onnxruntime backend" in str(e.value)
    with create_backend("onnxruntime", FER_MODEL, threads=1) as be:  # known ones still work
        assert be.infer(np.zeros((1, 1, 48, 48), np.float32)).shape == (1, 7)


def test_backend_infer_none_and_after_close():
    from edge_fer.backends import create_backend

    be = create_backend("onnxruntime", FER_MODEL, threads=1)
    with pytest.raises(UserError, match="got None"):
        be.infer(None)
    be.close()
    x = np.zeros((1, 1, 48, 48), np.float32)
    with pytest.raises(ValueError, match="backend is closed") as e:  # as a closed file
        be.infer(x)
    assert isinstance(e.value, RuntimeError)  # what older callers caught


# -- 4: the Keras API ----------------------------------------------------------------------------


def test_keras_api_refuses_non_models_before_tensorflow():
    from edge_fer.keras_import import keras_spec, keras_to_onnx, load_keras
    from edge_fer.preprocess import PreprocessSpec

    with pytest.raises(UserError) as e:
        keras_spec(None)
    assert e.value.param == "model"
    spec = PreprocessSpec(input_size=48, classes=("angry", "happy"))
    with pytest.raises(UserError) as e:
        keras_to_onnx(None, "x.onnx", spec)
    assert e.value.param == "model"
    with pytest.raises(UserError) as e:
        load_keras(3)
    assert e.value.param == "path"


@pytest.fixture(scope="module")
def tiny_keras():
    pytest.importorskip("tensorflow", reason="the keras extra is not installed")
    keras = pytest.importorskip("tf_keras", reason="the keras extra is not installed")
    from edge_fer.keras_import import _tf

    _tf.set_threads(1)
    return keras.Sequential(
        [keras.Input((48, 48, 1)), keras.layers.Flatten(), keras.layers.Dense(7, "softmax")]
    )


def test_keras_spec_scale_as_text_is_named(tiny_keras):
    """ "-1,1" was "TypeError: scale_to_mean_std() takes 2 positional arguments but 4 were
    given"."""
    from edge_fer.keras_import import keras_spec

    with pytest.raises(UserError) as e:
        keras_spec(tiny_keras, scale="-1,1")
    assert e.value.param == "scale" and "parse_scale" in str(e.value)
    assert keras_spec(tiny_keras, scale=(-1, 1)).mean == 0.5


def test_keras_to_onnx_refuses_no_check_faces(tiny_keras, tmp_path):
    """An empty array was "ValueError: need at least one array to concatenate" after the
    conversion."""
    from edge_fer.keras_import import keras_spec, keras_to_onnx

    spec = keras_spec(tiny_keras)
    out = tmp_path / "x.onnx"
    with pytest.raises(UserError) as e:
        keras_to_onnx(tiny_keras, out, spec, check_faces=np.zeros((0, 48, 48), np.uint8))
    assert e.value.param == "check_faces"
    assert not out.exists()


# -- 5: deploy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["deepstream", "triton"])
def test_deploy_refuses_a_model_name_with_a_newline(tmp_path, kind):
    """deepstream wrote `onnx-file=new` and `line.onnx` on the next line."""
    model = tmp_path / "new\nline.onnx"
    shutil.copy(FER_MODEL, model)
    out = tmp_path / "kit"
    line = refusal_line(run_cli("deploy", kind, "--model", model, "--out", out, timeout=60))
    assert line.startswith(f"edge-fer deploy {kind}: error: --model "), line
    assert "control character" in line
    assert not out.exists()


def test_deploy_deepstream_refuses_a_source_with_a_tab(tmp_path):
    from edge_fer.deploy.deepstream import DeepStreamOptions, generate

    out = tmp_path / "kit"
    with pytest.raises(UserError) as e:
        generate(out, FER_MODEL, DeepStreamOptions(source="/data/a\tb.mp4"))
    assert e.value.param == "source"
    assert not out.exists()


def test_deploy_json_to_a_full_stdout_says_the_kit_is_complete(tmp_path):
    """Said only "cannot write (the disk is full)", though every file of the kit was written."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    out = tmp_path / "repo"
    with open("/dev/full", "w") as full:
        p = subprocess.run(
            [sys.executable, *CLI, "deploy", "triton", "--out", str(out), "--json"],
            stdout=full, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
    line = refusal_line(p)
    assert "standard output" in line and f"deployment in {out} is complete" in line, line
    assert (out / "fer_onnx" / "config.pbtxt").is_file() and (out / "README.md").is_file()
