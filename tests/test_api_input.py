"""The Python API a script writer calls: a caller's mistake is a UserError (or a ValueError or
TypeError) naming the parameter, never a silently wrong answer, an overwritten input, an
out-of-memory kill or a traceback from deep inside numpy, OpenCV or ONNX Runtime."""

from __future__ import annotations

import math
import shutil

import cv2
import numpy as np
import pytest
from paths import ASSETS, fer_files

from edge_fer import labels as L
from edge_fer.errors import UserError


def test_a_dataset_face_size_is_a_models_face_size(tmp_path) -> None:
    """Every face is decoded at size x size: size=100000 was an out-of-memory kill."""
    from edge_fer.data import load_dataset
    from edge_fer.quantize import from_dataset

    for size in (100_000, 4, 2.5, True):
        with pytest.raises(UserError, match="size must be an integer in 8..512") as e:
            load_dataset(tmp_path, "all", size=size)
        assert e.value.param == "size"
    with pytest.raises(UserError, match="size"):
        from_dataset(tmp_path, "test", samples=10, size=20_000)


@pytest.mark.shared("data/fer2013/test")
def test_a_float_crop_on_another_scale_is_refused() -> None:
    """x257 (the 16-bit scale) in float32 was clipped into a white face without a word; the
    same values as uint16 were refused."""
    from edge_fer.preprocess import to_gray

    g = cv2.imread(str(fer_files("happy", "PrivateTest", 1)[0]), cv2.IMREAD_GRAYSCALE)
    with pytest.raises(UserError, match=r"float32 pixels span .* outside 0..1 and 0..255"):
        to_gray(g.astype(np.float32) * 257)
    with pytest.raises(UserError, match="outside"):
        to_gray(g.astype(np.float32) - 300)
    assert np.array_equal(to_gray(g.astype(np.float32)), g)  # 0..255 floats
    assert np.array_equal(to_gray(g.astype(np.float64) / 255.0), g)  # 0..1 floats
    assert np.array_equal(to_gray(np.full((8, 8), 255.3, np.float32)), np.full((8, 8), 255))
    # a cubic resize's overshoot, on either scale: clipped (before: refused on the 0..255 one)
    edges = np.kron(np.eye(6), np.ones((8, 8))).astype(np.float32) * 255  # sharp: overshoots
    big = cv2.resize(edges, (150, 150), interpolation=cv2.INTER_CUBIC)
    assert big.max() > 255.5
    want = np.clip(np.rint(big), 0, 255).astype(np.uint8)
    assert np.array_equal(to_gray(big), want)
    assert np.array_equal(to_gray(big / 255.0), want)


@pytest.mark.shared("data/fer2013/test")
def test_crops_as_a_developer_passes_them_classify_as_the_uint8_crop() -> None:
    """A 0..1 float crop resized with cubic interpolation (overshoot to 1.11) was taken for
    the 0..255 scale (a black face: "angry"); one HxWx1 crop became H faces; a float or int
    BGR crop was an OpenCV error."""
    from edge_fer.classify import Classifier

    g = cv2.imread(str(fer_files("happy", "PrivateTest", 1)[0]), cv2.IMREAD_GRAYSCALE)
    clf = Classifier.load(None)
    want = clf.predict(g)
    # brightened past 1 at its brightest pixels, as a cubic resize or a gain leaves it
    up = g.astype(np.float32) / float(g.max()) * 1.1
    same = np.clip(np.rint(up * 255), 0, 255).astype(np.uint8)
    assert np.allclose(clf.predict(up), clf.predict(same))
    assert not np.allclose(clf.predict(same), clf.predict(np.zeros_like(g)), atol=0.05)
    assert clf.predict(g[:, :, None]).shape == (1, len(clf.classes))
    assert np.allclose(clf.predict(g[:, :, None]), want)
    bgr = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
    for crop in (bgr.astype(np.float64), bgr.astype(np.int32), bgr.astype(np.float32) / 255):
        assert np.abs(clf.predict(crop) - want).max() < 0.02, crop.dtype
    with pytest.raises(UserError, match="empty image"):
        clf.predict(np.zeros((0, 0, 3), np.float32))


def test_checkpoint_from_onnx_never_replaces_the_model_or_an_existing_file(tmp_path) -> None:
    pytest.importorskip("torch")
    from edge_fer.export.onnx_import import checkpoint_from_onnx

    model = tmp_path / "model.onnx"
    shutil.copy(ASSETS / "fer_default.onnx", model)
    before = model.read_bytes()
    with pytest.raises(UserError, match="is the input model") as e:
        checkpoint_from_onnx(model, model, force=True)
    assert e.value.param == "out" and model.read_bytes() == before
    notes = tmp_path / "notes.safetensors"
    notes.write_text("mine")
    with pytest.raises(UserError, match="exists"):
        checkpoint_from_onnx(model, notes)
    assert notes.read_text() == "mine"
    assert checkpoint_from_onnx(model, notes, force=True) == notes
    assert notes.stat().st_size > 1000


def test_export_refuses_empty_check_faces_and_a_nan_opset(tmp_path) -> None:
    pytest.importorskip("torch")
    from edge_fer.export.onnx import export_checkpoint
    from edge_fer.export.onnx_import import checkpoint_from_onnx

    ck = checkpoint_from_onnx(ASSETS / "fer_default.onnx", tmp_path / "ck.safetensors")
    out = tmp_path / "out.onnx"
    with pytest.raises(UserError, match="non-empty") as e:
        export_checkpoint(ck, out, check_faces=np.zeros((0, 48, 48), np.uint8))
    assert e.value.param == "check_faces"
    with pytest.raises(UserError) as e:
        export_checkpoint(ck, out, opset=math.nan)
    assert e.value.param == "opset" and not out.exists()


def test_a_closed_file_source_says_so(tmp_path) -> None:
    """read() after close() reported an intact file as truncated."""
    from edge_fer.runtime.sources import open_source

    clip = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(5):
        w.write(np.full((48, 64, 3), 40 * i, np.uint8))
    w.release()
    warned: list[str] = []
    with open_source(str(clip), warn=warned.append) as src:
        assert src.read() is not None
    with pytest.raises(RuntimeError, match="source is closed"):
        src.read()
    assert not src.incomplete and not warned


def test_label_mapping_reads_both_vocabularies_canonically() -> None:
    """A target vocabulary spelled differently received nothing: every sample was dropped."""
    assert L.mapping(("happy", "angry"), ("Happiness", "Anger")) == {
        "happy": "Happiness",
        "angry": "Anger",
    }
    assert L.index_map(("happy",), ("Happy",)) == [0]
    assert L.mapping(L.FER2013, ("Negative", "Positive"))["sad"] == "Negative"
    assert L.mapping(("Happiness", "Anger"), L.FER2013) == {"Happiness": "happy", "Anger": "angry"}
    # its letters were classes; then a bare TypeError, the one non-UserError of these checks
    for src, dst, param in (("happy", L.FER2013, "src"), (L.FER2013, "happy", "dst")):
        with pytest.raises(UserError, match="not a string") as info:
            L.mapping(src, dst)
        assert info.value.param == param and str(info.value).startswith(param)
    with pytest.raises(UserError, match="not a string") as info:
        L.index_map(L.FER2013, "happy")
    assert info.value.param == "dst"


def test_run_and_pipeline_numbers_are_checked() -> None:
    """queue_size -1 or NaN made the queues unbounded (the docs promise bounded memory);
    max_batch_frames -3 became 1; NaN ports and 1.5 hits were tracebacks or accepted."""
    from edge_fer.runtime.runner import RunOptions, check_run_options
    from edge_fer.runtime.tracker import TrackerOptions

    cases = [
        ({"queue_size": -1}, "queue_size"),
        ({"queue_size": math.nan}, "queue_size"),
        ({"max_batch_frames": -3}, "max_batch_frames"),
        ({"preview_port": math.nan}, "preview_port"),
        ({"preview_port": "x"}, "preview_port"),
        ({"tracker": TrackerOptions(min_hits=1.5)}, "min_hits"),
        ({"tracker": TrackerOptions(iou="0.3")}, "iou"),  # type: ignore[arg-type]
        ({"smoothing": "0.3"}, "smoothing"),
    ]
    for kw, param in cases:
        with pytest.raises(UserError) as e:
            check_run_options(RunOptions(source="x.mp4", **kw))  # type: ignore[arg-type]
        assert e.value.param == param, kw


def test_pipeline_refuses_an_unbounded_queue(tmp_path) -> None:
    from edge_fer.detect import Cascade, Detector, default_cascade_path
    from edge_fer.runtime.pipeline import Pipeline
    from edge_fer.runtime.sources import open_source

    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.full((48, 64), 90, np.uint8))
    det = Detector(Cascade.load(default_cascade_path()))
    with open_source(str(img)) as src:
        for kw, param in (({"queue_size": -1}, "queue_size"), ({"max_batch_frames": 0}, "max")):
            with pytest.raises(UserError, match=param):
                Pipeline(src, det, None, queue_size=kw.get("queue_size"),
                         max_batch_frames=kw.get("max_batch_frames", 8), handle_signals=False)  # fmt: skip
        with pytest.raises(ValueError, match="smoothing must be in"):
            Pipeline(src, det, None, smoothing=math.nan, handle_signals=False)


@pytest.mark.shared("data/fer2013/test")
def test_evaluate_takes_a_label_set_name_and_integer_batches() -> None:
    from edge_fer.classify import Classifier
    from edge_fer.data import FaceSet
    from edge_fer.evaluate import evaluate

    files = [f for c in ("happy", "sad", "angry") for f in fer_files(c, "PrivateTest", 2)]
    faces = FaceSet(
        np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]),
        np.array([3, 3, 4, 4, 0, 0]),
        L.FER2013,
        [f.name for f in files],
        0,
    )
    with Classifier.load(threads=1, tta="none") as clf:
        # before: the string's letters were the classes ("no counterpart in g, r, o, u, p")
        rep = evaluate(clf, faces, target="grouped3", latency_samples=0, progress=False)
        assert rep["labels"] == ["negative", "neutral", "positive"] and rep["n"] == 6
        for kw in ({"batch_size": math.nan}, {"batch_size": 2.5}, {"latency_samples": -1}):
            with pytest.raises(UserError) as e:
                evaluate(clf, faces, progress=False, **kw)  # type: ignore[arg-type]
            assert e.value.param == next(iter(kw))


def test_classifier_and_build_config_small_mistakes() -> None:
    from edge_fer.classify import Classifier
    from edge_fer.export.engine import BuildConfig

    with Classifier.load(threads=1, tta="none") as clf:
        probs = clf.predict(np.full((48, 48), 120, np.uint8))
        assert clf.labels_of(probs[0]) == clf.labels_of(probs)  # one face's (C,): an AxisError
        with pytest.raises(UserError, match="expected face crops") as e:
            clf.predict(None)
        assert e.value.param == "faces"
    BuildConfig(precision="fp16", dla_core=0).check()
    for kw in ({"dla_core": True}, {"sparse": "yes"}):  # True was DLA core 1; "no" was sparse
        with pytest.raises(UserError, match=next(iter(kw))):
            BuildConfig(precision="fp16", **kw).check()  # type: ignore[arg-type]


def test_a_crop_box_far_beyond_the_frame_is_refused() -> None:
    """A 1e9 px box asked OpenCV for 1e18 bytes (its padded crop was allocated whole)."""
    from edge_fer.runtime.crops import crop_face

    g = np.zeros((100, 120), np.uint8)
    for box in ((0, 0, 1e9, 1e9), (0, 0, math.nan, 10), (0, 0, 10)):
        with pytest.raises(UserError) as e:
            crop_face(g, box, 0.1, 48)
        assert e.value.param == "box"
    assert crop_face(g, (-50, -50, 300, 300), 0.1, 48).shape == (48, 48)  # partly outside: padded


def test_aligner_warp_checks_its_size_and_eye_centres() -> None:
    """warp(g, (0, 10), (1e200, 10), 48) killed the process inside OpenCV (SIGSEGV); size 0
    was a ZeroDivisionError, -5 a 77x58 crop, 100000 a 10 GB allocation."""
    from edge_fer.align import load_aligner

    al = load_aligner()
    g = np.random.default_rng(0).integers(0, 255, (100, 100)).astype(np.uint8)
    assert al.warp(g, (30, 40), (60, 40), 48).shape == (48, 48)
    for args, param in (
        (((0, 10), (1e200, 10), 48), "eyes"),
        (((0, 10), (float("nan"), 10), 48), "eyes"),
        (((0, 10), (20,), 48), "eyes"),
        (((0, 10), (20, 10), 0), "w"),
        (((0, 10), (20, 10), -5), "w"),
        (((0, 10), (20, 10), 100_000), "w"),
        (((0, 10), (20, 10), 48, 2.5), "h"),
    ):
        with pytest.raises(UserError) as e:
            al.warp(g, *args)
        assert e.value.param == param, args
