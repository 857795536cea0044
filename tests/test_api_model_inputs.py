"""The model side's Python API with the values a script passes: numpy numbers and paths where
ints and strings go, a single string where a list goes, NaN, fractions and huge numbers. Each
either works as the plain value would or is a UserError naming the parameter (before: JSON
tracebacks after the run folder was made, letter-by-letter names, a 2-epoch run for 1.5)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from paths import fer_class_folders

from edge_fer.errors import UserError

if TYPE_CHECKING:
    from edge_fer.data import FaceSet

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    return fer_class_folders(tmp_path_factory.mktemp("fer") / "data", 6)


@pytest.mark.shared("data/fer2013/train")
def test_numpy_numbers_and_paths_in_a_training_config(faces, tmp_path) -> None:
    from edge_fer.train.trainer import TrainConfig, train

    out = tmp_path / "run"
    cfg = TrainConfig(arch="cnn4", data=faces, out=out, epochs=np.int64(1),  # type: ignore[arg-type]
                      batch_size=np.int64(16), seed=np.int64(3), max_batches=1, threads=1,
                      precise_bn=0)  # fmt: skip
    train(cfg)
    saved = json.loads((out / "config.json").read_text())
    assert saved["data"] == str(faces) and saved["seed"] == 3 and saved["batch_size"] == 16
    # the same settings resume (a Path against the file's string is no difference)
    train(cfg, resume=True)


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("epochs", 1.5, "epochs"),  # before: trained 2 epochs
        ("epochs", math.nan, "epochs"),
        ("batch_size", math.nan, "batch_size"),
        ("max_batches", math.nan, "max_batches"),
        ("precise_bn", math.nan, "precise_bn"),
        ("patience", 2.5, "patience"),
        ("seed", 2**70, r"below 2\*\*32"),
        ("teacher", "teacher.onnx", "not the single 'teacher.onnx'"),
    ],
)
def test_training_numbers_and_lists_are_checked(tmp_path, field, value, words) -> None:
    from edge_fer.train.trainer import TrainConfig, train

    cfg = TrainConfig(arch="cnn4", data=str(tmp_path / "none"), out=str(tmp_path / "run"))
    setattr(cfg, field, value)
    with pytest.raises(UserError, match=words) as e:
        train(cfg)
    assert e.value.param == field and not (tmp_path / "run").exists()


def test_a_single_string_where_names_go(tmp_path) -> None:
    from edge_fer.data import load_dataset
    from edge_fer.experiment.runs import Options
    from edge_fer.train.average import average_checkpoints

    with pytest.raises(UserError, match="not the single 'run/best.safetensors'") as e:
        average_checkpoints("run/best.safetensors", tmp_path / "a.safetensors")  # type: ignore[arg-type]
    assert e.value.param == "checkpoints"
    with pytest.raises(UserError) as e:
        average_checkpoints([tmp_path / "x"], tmp_path / "a.safetensors", faces=math.nan)  # type: ignore[arg-type]
    assert e.value.param == "faces"
    with pytest.raises(UserError, match="not the single 'happy'") as e:
        load_dataset(tmp_path, classes="happy")  # type: ignore[arg-type]
    assert e.value.param == "classes"
    with pytest.raises(UserError, match="not the string 'cnn4'") as e:
        Options(study="architectures", data=str(tmp_path), out=tmp_path, archs="cnn4")  # type: ignore[arg-type]
    assert e.value.param == "archs"


def test_study_options_from_a_script(tmp_path) -> None:
    from edge_fer.experiment.runs import Budget, Options
    from edge_fer.experiment.studies import run_study

    opts = Options(study="grouping", data=str(tmp_path), out="st/x")  # type: ignore[arg-type]
    assert opts.workdir == Path("st/x/work")  # before: str / str, a TypeError
    with pytest.raises(UserError) as e:
        Options(study="grouping", data="d", out=tmp_path, budget={"epochs": 1})  # type: ignore[arg-type]
    assert e.value.param == "budget"
    # NaN faces: before, a study of "at most nan training faces" without a word
    nan = Options(study="grouping", data=str(tmp_path), out=tmp_path / "o",
                  budget=Budget(max_train_faces=math.nan))  # type: ignore[arg-type]  # fmt: skip
    with pytest.raises(UserError) as e:
        run_study(nan)
    assert e.value.param == "max_train_faces" and not (tmp_path / "o").exists()


def test_tensorrt_versions_and_build_numbers_from_a_script() -> None:
    from edge_fer.export.engine import BuildConfig
    from edge_fer.quantize.trt_cache import version_code

    with pytest.raises(UserError, match="must be a string such as '10.3.0'"):
        version_code(10.10)  # type: ignore[arg-type]  # before: TensorRT 10.1's header
    assert version_code("10.10.0") == 101000 and version_code(100300) == 100300
    cfg = BuildConfig(max_batch=np.int64(16), dla_core=np.int64(0), precision="fp16")  # type: ignore[arg-type]
    cfg.check()  # before: "max_batch must be an integer >= 1, got np.int64(16)"
    assert type(cfg.max_batch) is int and cfg.max_batch == 16 and type(cfg.dla_core) is int
    with pytest.raises(UserError, match="workspace_mb must be at most"):
        BuildConfig(workspace_mb=10**15).check()


@pytest.mark.shared("data/fer2013/train")
def test_a_run_folder_another_process_trains_into_is_refused(faces, tmp_path) -> None:
    """A second `train` into the folder of one that still trains (a run begun twice, a
    --resume while it runs): both wrote log rows and checkpoints into it."""
    from edge_fer.fileio import FolderLock
    from edge_fer.train.trainer import TrainConfig, train

    out = tmp_path / "run"
    out.mkdir()
    other = FolderLock(out, "edge-fer train")  # as the first process holds it
    cfg = TrainConfig(arch="cnn4", data=str(faces), out=str(out), epochs=1, max_batches=1,
                      threads=1, precise_bn=0)  # fmt: skip
    try:
        with pytest.raises(UserError, match="another edge-fer train is writing this folder"):
            train(cfg)
        assert list(out.iterdir()) == []
    finally:
        other.release()
    train(cfg)  # free once the other has ended
    assert (out / "last.safetensors").is_file()


@pytest.mark.shared("data/fer2013/train")
def test_export_checkpoint_replaces_a_model_only_with_force(faces, tmp_path) -> None:
    """From Python it replaced an existing model without a word; the CLI needs --force."""
    from edge_fer.export.onnx import export_checkpoint
    from edge_fer.train.trainer import TrainConfig, train

    run = tmp_path / "run"
    train(TrainConfig(arch="cnn4", data=str(faces), out=str(run), epochs=1, max_batches=1,
                      threads=1, precise_bn=0))  # fmt: skip
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"a model of mine")
    with pytest.raises(UserError, match="already exists; pass force=True") as e:
        export_checkpoint(run / "best.safetensors", mine, check=False)
    assert e.value.param == "out" and mine.read_bytes() == b"a model of mine"
    export_checkpoint(run / "best.safetensors", mine, check=False, force=True)
    assert mine.read_bytes() != b"a model of mine"


def _faces(n: int = 14) -> FaceSet:
    from edge_fer import labels as L
    from edge_fer.data import FaceSet

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, 48, 48), dtype=np.uint8)
    return FaceSet(images, np.arange(n) % 7, L.FER2013)


def test_evaluate_refuses_paths_and_broken_face_sets_by_name() -> None:
    """A model's or a dataset's path was an AttributeError on .classes; labels beyond the
    classes an IndexError; a label set's name of another case or an unknown one no param."""
    from edge_fer.classify import Classifier
    from edge_fer.data import FaceSet
    from edge_fer.evaluate import evaluate

    faces = _faces()
    with Classifier.load(threads=1, tta="none") as clf:
        cases: list[tuple[dict, str, str]] = [
            ({"clf": "fer_default.onnx"}, "clf", "Classifier.load"),
            ({"clf": Path("fer_default.onnx")}, "clf", "Classifier.load"),
            ({"faces": "/data/fer2013"}, "faces", "load_dataset"),
            ({"faces": faces.images}, "faces", "FaceSet"),
            ({"faces": FaceSet(faces.images, faces.labels + 3, faces.classes)}, "faces",
             r"labels 3..9, beyond its 7 classes"),
            ({"faces": FaceSet(faces.images, faces.labels[:5], faces.classes)}, "faces",
             "14 images but 5 labels"),
            ({"target": "happy"}, "target", "'happy' is unknown"),
            ({"target": ("happy", None)}, "target", "class names"),
            ({"target": ()}, "target", "names no class"),
        ]  # fmt: skip
        for kw, param, words in cases:
            args = {"clf": clf, "faces": faces, **kw}
            with pytest.raises(UserError, match=words) as e:
                evaluate(progress=False, latency_samples=0, **args)
            assert e.value.param == param, kw
        rep = evaluate(clf, faces, target=" Grouped3", progress=False, latency_samples=0)
        assert rep["labels"] == ["negative", "neutral", "positive"]
        assert evaluate(clf, faces, "Dataset", progress=False, latency_samples=0)["n"] == 14


def test_build_engine_refuses_a_dict_config_and_wrong_types_before_any_work(tmp_path) -> None:
    """A dict config was an AttributeError on .check; force="no" replaced the engine; a str
    `info` failed only after the build. Checked before TensorRT is needed."""
    from edge_fer.export.engine import BUNDLED_MODEL, build_engine

    eng = tmp_path / "fer.engine"
    cases: list[tuple[dict, str, str]] = [
        ({"config": {"precision": "fp16"}}, "config", r"BuildConfig\(\*\*config\)"),
        ({"config": "fp16"}, "config", "got str"),
        ({"force": "no"}, "force", "True, False or None"),
        ({"info": "jetson"}, "info", "must be a dict"),
        ({"onnx_path": None}, "onnx_path", "file path"),
    ]
    for kw, param, words in cases:
        args: dict = {"onnx_path": BUNDLED_MODEL, "engine_path": eng, **kw}
        with pytest.raises(UserError, match=words) as e:
            build_engine(**args)
        assert e.value.param == param, kw
    assert not eng.exists()


def test_labels_of_checks_the_table_against_the_models_classes() -> None:
    """A 9-column table was an IndexError, one of 5 columns named wrong classes without a word;
    NaN rows and a string were 'angry'."""
    from edge_fer.classify import Classifier

    with Classifier.load(threads=1, tta="none") as clf:
        probs = clf.predict(_faces(3).images)
        assert clf.labels_of(probs.tolist()) == clf.labels_of(probs)
        assert clf.labels_of(np.zeros((0, 7))) == []
        for bad, words in (
            (np.random.default_rng(0).random((3, 9)), r"\(N, 7\) or \(7,\).*shape \(3, 9\)"),
            (probs[:, :5], r"shape \(3, 5\)"),
            (probs[:, :, None], r"shape \(3, 7, 1\)"),
            (np.full((2, 7), np.nan), "NaN"),
            ("happy", "numeric array"),
            (None, "numeric array"),
        ):
            with pytest.raises(UserError, match=words) as e:
                clf.labels_of(bad)  # type: ignore[arg-type]
            assert e.value.param == "probs"


def test_predict_takes_a_generator_and_refuses_what_is_no_crops() -> None:
    """A generator of crops (a video's faces) was "object of type 'generator' has no len()"."""
    from edge_fer.classify import Classifier

    crops = _faces(5).images
    with Classifier.load(threads=1, tta="none") as clf:
        want = clf.predict(crops)
        np.testing.assert_allclose(clf.predict(c for c in crops), want, atol=1e-6)
        np.testing.assert_allclose(clf.predict((c for c in crops), batch_size=2), want, atol=1e-6)
        np.testing.assert_allclose(clf.predict_faces(iter(list(crops))), want, atol=1e-6)
        assert clf.predict(iter(())).shape == (0, 7)
        for bad in (3, {"a": crops[0]}):
            with pytest.raises(UserError, match="expected face crops") as e:
                clf.predict(bad)
            assert e.value.param == "faces"
        with pytest.raises(UserError, match="numeric array") as e:
            clf.predict_array("x")  # type: ignore[arg-type]
        assert e.value.param == "x"
    with pytest.raises(UserError, match="model file's path") as e:
        Classifier.load(3)  # type: ignore[arg-type]
    assert e.value.param == "path"
    from edge_fer.classify import default_model_path

    with Classifier.load(os.fsencode(default_model_path())) as clf:  # as open_source takes it
        assert clf.classes[0] == "angry"
    with pytest.raises(UserError) as e:
        Classifier.load(backend=3)  # type: ignore[arg-type]
    assert e.value.param == "backend"


def test_shapes_that_are_neither_a_face_nor_a_batch_and_raw_pixels_to_predict_array() -> None:
    """(100, 120, 2) (gray + alpha) was classified as 100 faces of 120x2, a 1-D array as one
    face per pixel; predict_array took uint8 pixels as the prepared input (a happy face came
    out angry)."""
    from edge_fer.classify import Classifier

    crops = _faces(2).images
    with Classifier.load(threads=1, tta="none") as clf:
        for bad in (np.zeros((100, 120, 2), np.uint8), np.zeros(48, np.uint8)):
            with pytest.raises(UserError, match="one face is HxW") as e:
                clf.predict(bad)
            assert e.value.param == "faces"
        assert clf.predict(crops[0][:, :, None]).shape == (1, 7)  # HxWx1: one face
        x = clf.spec.prepare(crops)
        np.testing.assert_allclose(clf.predict_array(x), clf.predict(crops), atol=1e-6)
        with pytest.raises(UserError, match="is uint8: it takes the prepared float") as e:
            clf.predict_array(np.full((1, 1, 48, 48), 128, np.uint8))
        assert e.value.param == "x"


def test_writing_to_a_closed_sink_raises(tmp_path) -> None:
    """A frame or an event written after close() was dropped without a word."""
    from edge_fer.runtime.sinks import EventsSink, VideoSink

    ev = EventsSink(tmp_path / "e.jsonl")
    ev.write({"a": 1})
    ev.close()
    with pytest.raises(ValueError, match="written after close"):
        ev.write({"a": 2})
    assert (tmp_path / "e.jsonl").read_text().splitlines() == ['{"a":1}']
    v = VideoSink(tmp_path / "v.avi", 10, (64, 48))
    v.write(np.zeros((48, 64, 3), np.uint8))
    v.close()
    with pytest.raises(ValueError, match="written after close"):
        v.write(np.zeros((48, 64, 3), np.uint8))
    assert (tmp_path / "v.avi").stat().st_size > 0


def test_tracker_boxes_and_crop_sizes_are_checked_by_name() -> None:
    """A NaN box became a confirmed track with a new id every frame; None, two columns or too
    few scores were numpy errors; crop_face(size=100000) made a 10 GB crop, size 0 or a margin
    of 1e6 OpenCV errors."""
    from edge_fer.runtime.crops import crop_face
    from edge_fer.runtime.tracker import IoUTracker

    tr = IoUTracker(min_hits=1)
    for boxes, scores, param in (
        ([[np.nan, 10, 50, 50, 2.0]], None, "boxes"),
        ([[10, 10, -5, 50]], None, "boxes"),
        (np.zeros((3, 2)), None, "boxes"),
        ([[10, 10, 50, 50]], [1.0, 2.0], "scores"),
    ):
        with pytest.raises(UserError) as e:
            tr.update(boxes, scores)
        assert e.value.param == param
    assert tr.tracks == []
    assert tr.update(None) == []  # no detections this frame
    assert [t.id for t in tr.update([[10, 10, 50, 50]])] == [1]
    for kw, param in (({"min_hits": 1.5}, "min_hits"), ({"iou_threshold": "a"}, "iou_threshold")):
        with pytest.raises(UserError) as e:
            IoUTracker(**kw)  # type: ignore[arg-type]
        assert e.value.param == param
    gray = np.zeros((100, 100), np.uint8)
    for kw, param in (({"size": 0}, "size"), ({"size": 100000}, "size"),
                      ({"margin": float("nan")}, "margin"), ({"margin": 1e6}, "margin")):  # fmt: skip
        with pytest.raises(UserError) as e:
            crop_face(gray, (10, 10, 50, 50), **kw)  # type: ignore[arg-type]
        assert e.value.param == param
    with pytest.raises(UserError) as e:
        crop_face(None, (10, 10, 50, 50))  # type: ignore[arg-type]
    assert e.value.param == "gray"
    assert crop_face(gray, (10, 10, 50, 50), size=48).shape == (48, 48)


def test_a_path_source_is_a_file_even_when_its_name_is_digits(tmp_path, monkeypatch) -> None:
    """Path("0") opened camera 0 where a file ./0 was meant; the string "0" stays camera 0."""
    from edge_fer.runtime.sources import parse_source

    monkeypatch.chdir(tmp_path)
    assert parse_source(Path("0")).kind == "file"
    assert parse_source(b"0").kind == "file"
    assert parse_source("0").kind == "camera" and parse_source(0).kind == "camera"


def test_providers_as_one_name_and_none_available() -> None:
    """A str was iterated letter by letter (20 warnings, "EP Error"); a list of providers this
    onnxruntime lacks fell back to the CPU with a warning only."""
    from edge_fer.backends.onnxruntime_backend import OnnxRuntimeBackend
    from edge_fer.classify import default_model_path

    be = OnnxRuntimeBackend(default_model_path(), threads=1, providers="CPUExecutionProvider")
    assert be.providers == ["CPUExecutionProvider"]
    be.close()
    be = OnnxRuntimeBackend(default_model_path(), threads=1,
                            providers=["NoSuchExecutionProvider", "CPUExecutionProvider"])  # fmt: skip
    be.close()
    with pytest.raises(UserError, match="not available in this onnxruntime") as e:
        OnnxRuntimeBackend(default_model_path(), threads=1, providers=["NoSuchExecutionProvider"])
    assert e.value.param == "providers"


def test_run_options_take_numpy_numbers() -> None:
    """smoothing=np.float32(0.5) was "must be a number" (the detector's options took them)."""
    from edge_fer.runtime.runner import RunOptions, check_run_options

    check_run_options(RunOptions(source="x", smoothing=np.float32(0.5), pace=np.int64(5)))
    with pytest.raises(UserError) as e:
        check_run_options(RunOptions(source="x", smoothing="0.5"))  # type: ignore[arg-type]
    assert e.value.param == "smoothing"


def test_a_bad_face_in_a_list_is_named_by_its_index() -> None:
    """ "empty image" or "got NoneType" said nothing of which of 301 faces it was."""
    from edge_fer.classify import Classifier

    img = np.zeros((48, 48), np.uint8)
    with Classifier.load(threads=1, tta="none") as clf:
        for faces, words in (([img, None], "face 1: expected an image as a numpy array"),
                             ([img] * 300 + [img[:0]], "face 300: empty image")):  # fmt: skip
            with pytest.raises(UserError, match=words):
                clf.predict(faces)
        with pytest.raises(UserError, match="^empty image"):  # one face alone: as before
            clf.predict([img[:0]])


def test_label_functions_name_what_is_not_a_class_name() -> None:
    """canonical(None) and vocabulary(None) were AttributeErrors; None among the classes too."""
    from edge_fer import labels as L

    for call, param in (
        (lambda: L.canonical(None), "name"),  # type: ignore[arg-type]
        (lambda: L.canonical(3), "name"),  # type: ignore[arg-type]
        (lambda: L.vocabulary(None), "name"),  # type: ignore[arg-type]
        (lambda: L.mapping(("happy", None), L.FER2013), "src"),  # type: ignore[arg-type]
        (lambda: L.mapping(L.FER2013, None), "dst"),  # type: ignore[arg-type]
        (lambda: L.index_map(L.FER2013, (1, 2)), "dst"),  # type: ignore[arg-type]
        (lambda: L.shared_vocabulary(L.FER2013, [None]), "model_classes"),
    ):
        with pytest.raises(UserError) as e:
            call()
        assert e.value.param == param
    assert L.canonical(" Happiness ") == "happy" and L.vocabulary("GROUPED3") == L.GROUPED3
    assert L.shared_vocabulary(["Anger", "joy"], L.FER2013) == ("angry", "happy")


def test_evaluation_helpers_check_their_numbers_and_matrix() -> None:
    """samples=NaN was a TypeError in np.linspace, batch_size=0 range()'s ValueError, and a
    matrix of another size an IndexError half-way through drawing it."""
    from edge_fer.classify import Classifier
    from edge_fer.evaluate import batch1_latency, draw_confusion, run_inference

    crops = _faces(3).images
    with Classifier.load(threads=1, tta="none") as clf:
        with pytest.raises(UserError) as e:
            batch1_latency(clf, crops, samples=math.nan)  # type: ignore[arg-type]
        assert e.value.param == "samples"
        with pytest.raises(UserError) as e:
            run_inference(clf, crops, batch_size=0, progress=False)
        assert e.value.param == "batch_size"
        assert batch1_latency(clf, crops, samples=0) == {}
    assert draw_confusion([[3, 1], [0, 2]], ["a", "b"]).ndim == 3
    for cm in (np.eye(3), [[1.0, math.nan], [0, 1]], [["1", "0"], ["0", "1"]]):
        with pytest.raises(UserError, match=r"\(2, 2\) matrix") as e:
            draw_confusion(cm, ["a", "b"])
        assert e.value.param == "cm"


def test_build_config_names_a_path_field_that_is_not_a_path(tmp_path) -> None:
    """calib_cache=3 was a TypeError in Path() (int8) and timing_cache=3 passed check() to fail
    later; a Path works as its string does (and is recorded as one)."""
    from edge_fer.export.engine import BuildConfig

    for kw, param in (
        ({"precision": "int8", "calib_cache": 3}, "calib_cache"),
        ({"calib_cache": 3}, "calib_cache"),
        ({"timing_cache": 3}, "timing_cache"),
        ({"timing_cache": b"t.bin"}, "timing_cache"),
        ({"timing_cache": ""}, "timing_cache"),  # Path("") is the folder "."
    ):
        with pytest.raises(UserError, match="must be a file's path") as e:
            BuildConfig(**kw).check()  # type: ignore[arg-type]
        assert e.value.param == param and str(e.value).startswith(param)
    cache = tmp_path / "c.cache"
    cache.write_bytes(b"TRT-100300-EntropyCalibration2\n")
    timing = tmp_path / "t.bin"
    cfg = BuildConfig(precision="int8", calib_cache=cache, timing_cache=timing)  # type: ignore[arg-type]
    cfg.check()
    assert cfg.calib_cache == str(cache) and cfg.timing_cache == str(timing)
    assert json.dumps(cfg.as_dict())
