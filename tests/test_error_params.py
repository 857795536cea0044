"""Library errors name the parameter they are about (`UserError.param`, led by its name from
Python); the CLI puts the flag the user typed in its place. These sites wrote a parameter's
name (or two, or a flag, or none) into the text instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from paths import cnn4_config, fer_class_folders, needs_modules
from processes import refusal_line, run_cli

from edge_fer.errors import UserError


def _refused(call, param: str, words: str) -> UserError:
    """The UserError of `call()`: about `param`, its text led by that name, then `words`."""
    with pytest.raises(UserError) as exc:
        call()
    err = exc.value
    assert err.param == param, (err.param, str(err))
    assert str(err).startswith(f"{param} {words}"), str(err)
    assert len(str(err).splitlines()) == 1
    return err


# ---- from Python: the parameter the caller passed ------------------------------------------


def test_label_set_and_test_time_augmentation_name_their_parameter() -> None:
    from edge_fer import labels as L
    from edge_fer.classify import Classifier
    from edge_fer.tta import check_mode

    _refused(lambda: L.vocabulary("ckplus"), "name", "'ckplus' is an unknown label set")
    # the caller says which of its parameters gave the mode (it named none before)
    _refused(lambda: check_mode("rotate"), "tta", "'rotate' is an unknown test-time")
    _refused(lambda: check_mode("rotate", "eval_tta"), "eval_tta", "'rotate' is an unknown")
    _refused(lambda: Classifier.load(tta="rotate"), "tta", "'rotate' is an unknown")


def test_deploy_options_name_their_field() -> None:
    from edge_fer.deploy.deepstream import DeepStreamOptions, parse_source
    from edge_fer.deploy.deepstream import generate as deepstream
    from edge_fer.deploy.triton import TritonOptions
    from edge_fer.deploy.triton import generate as triton

    _refused(lambda: parse_source("  "), "source", "is empty")
    _refused(lambda: parse_source("csi://x"), "source", "'csi://x': expected csi://N")
    # one message named width x height; now each its own (nothing is written: checked first)
    _refused(lambda: deepstream("never", None, DeepStreamOptions(width=10)), "width",
             "must be in 32..7680, got 10")  # fmt: skip
    _refused(lambda: deepstream("never", None, DeepStreamOptions(height=9000)), "height",
             "must be in 32..4320, got 9000")  # fmt: skip
    _refused(lambda: triton("never", None, TritonOptions(platforms=("tflite",))), "platforms",
             "must be some of onnxruntime, tensorrt")  # fmt: skip
    _refused(lambda: triton("never", None, TritonOptions(kind="tpu")), "kind",
             "must be gpu or cpu, got 'tpu'")  # fmt: skip
    _refused(lambda: triton("never", None, TritonOptions(name="a b")), "name", "'a b': use")


def test_preview_checks_one_parameter_at_a_time() -> None:
    """One message named max_clients and request_timeout whichever was wrong."""
    from edge_fer.runtime.preview import MJPEGPreview

    _refused(lambda: MJPEGPreview(0, max_clients=0), "max_clients", "must be >= 1, got 0")
    _refused(lambda: MJPEGPreview(0, request_timeout=float("nan")), "request_timeout",
             "must be > 0 seconds, got nan")  # fmt: skip
    _refused(lambda: MJPEGPreview(0, " "), "host", "is empty")  # was "--preview-host is empty"


def test_data_and_split_parameters_are_named() -> None:
    from edge_fer.cascade_train.annotations import split_images
    from edge_fer.keras_import.compress import training_arrays
    from edge_fer.preprocess import PreprocessSpec
    from edge_fer.quantize.calib_data import CalibFaces, check_faces

    _refused(lambda: split_images([], "test"), "split", "must be train, val or all")
    spec = PreprocessSpec(classes=("angry", "happy"))
    faces = np.zeros((3, 48, 48), np.uint8)
    _refused(lambda: training_arrays(7, spec), "data", "must be a dataset path or (images,")
    _refused(lambda: training_arrays((faces, [0, 1]), spec), "data",
             "holds 3 images but 2 labels")  # fmt: skip
    _refused(lambda: training_arrays((faces, [0, 1, 5]), spec), "data",
             "holds labels outside 0..1 (the model's classes): 0..5")  # fmt: skip
    bad = CalibFaces(images=[faces[0]], ids=["a"], source="test")  # type: ignore[arg-type]
    # was "faces images must be ...": the parameter's name, then another's
    _refused(lambda: check_faces(bad), "faces", "must hold its images as a numpy array")


def test_cascade_training_options_name_their_fields() -> None:
    """TrainConfig.check wrote the CLI's flags ("--depth must ..."), two in one message for
    the jitters and for the shares."""
    from edge_fer.cascade_train.trainer import TrainConfig

    def check(**kw):
        return lambda: TrainConfig(out="never", boxes=["b.txt"], **kw).check()

    _refused(check(depth=0), "depth", "must be in 1..10, got 0")
    _refused(check(max_fpr=0.0), "max_fpr", "must be in (0, 1], got 0.0")
    _refused(check(scale_jitter=2.0), "scale_jitter", "must be in [0, 1), got 2.0")
    _refused(check(scan_share=2.0), "scan_share", "must be a finite number in [0, 1]")
    _refused(check(threshold_on="both"), "threshold_on", "must be fresh or train")


def test_runtime_names_trt_precision_not_the_backends_precision() -> None:
    """A run's options have `precision` (which bundled model) and `trt_precision` (the engine):
    TensorRT's own check says `precision`, so the run names its option before that."""
    from edge_fer.runtime.runner import load_classifier

    _refused(lambda: load_classifier(None, "tensorrt", trt_precision="fp8"), "trt_precision",
             "'fp8' is unknown; choose fp32, fp16, int8")  # fmt: skip


# ---- from the CLI: the flag in the parameter's place -----------------------------------------


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["deploy", "deepstream", "--source", "", "--out", "{out}"],
         "edge-fer deploy deepstream: error: --source is empty"),
        (["deploy", "deepstream", "--width", "10", "--out", "{out}"],
         "edge-fer deploy deepstream: error: --width must be in 32..7680, got 10"),
        (["deploy", "triton", "--name", "a.b", "--out", "{out}"],
         "edge-fer deploy triton: error: --name 'a.b': use letters, digits, '-' and '_' only"),
        (["eval", "--data", "{out}", "--label-set", "emotions"],
         "edge-fer eval: error: --label-set 'emotions' is an unknown label set; choose dataset,"),
        (["train-cascade", "--boxes", "{out}.txt", "--out", "{out}", "--scale-jitter", "2"],
         "edge-fer train-cascade: error: --scale-jitter must be in [0, 1), got 2.0"),
    ],
)  # fmt: skip
def test_cli_names_the_flag(tmp_path, argv, line) -> None:
    """Before: "source is empty", "width x height 10x720 is out of range", "model name 'a.b':
    ...", "unknown label set 'emotions'; choose one of fer2013, ..." (no flag, and without
    dataset, which --label-set takes), "--pos-jitter must be in [0, 0.5) and --scale-jitter in
    [0, 1)" (both flags for one)."""
    out = tmp_path / "never"
    got = refusal_line(run_cli(*(a.format(out=out) for a in argv), timeout=60))
    assert got.startswith(line), got
    assert not out.exists()


# ---- empty names ------------------------------------------------------------------------------
# (real faces from ../shared; collected, before, under torch and safetensors)


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """4 real Training faces per FER2013 class, in class folders."""
    return fer_class_folders(tmp_path_factory.mktemp("qa") / "faces", 4)


@pytest.mark.shared("data/fer2013/train")
@needs_modules("torch", "safetensors")
def test_empty_names_are_refused_by_the_library(faces, tmp_path, monkeypatch):
    from edge_fer.compress.io import check_out_dir
    from edge_fer.experiment.runs import Options
    from edge_fer.train.trainer import train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as exc:  # (before: the current folder read as the dataset)
        train(cnn4_config("", tmp_path / "run"))
    assert exc.value.param == "data" and "empty" in str(exc.value)
    for name in ("out", "work", "data"):  # (before: a study's report into the current folder)
        kw = {"data": str(faces), "out": str(tmp_path / "rep"), name: ""}
        with pytest.raises(UserError) as exc:
            Options(study="grouping", **kw)
        assert exc.value.param == name and "empty" in str(exc.value)
    with pytest.raises(UserError) as exc:  # prune / qat --out ""
        check_out_dir("", False, "prune")
    assert exc.value.param == "out" and "empty" in str(exc.value)
    assert list(tmp_path.iterdir()) == []
