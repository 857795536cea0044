"""More of the Python API's checks: a caller's mistake is a UserError naming the parameter,
never a silently wrong answer or a TypeError from deep inside a backend."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from paths import fer_files

from edge_fer.errors import UserError


@pytest.fixture(scope="module")
def clf():
    from edge_fer.classify import Classifier

    with Classifier.load(threads=1, tta="none") as c:
        yield c


@pytest.mark.shared("data/fer2013/test")
def test_a_float_crop_on_another_scale_is_refused_not_clipped_to_black(clf) -> None:
    """A mean-centred or -1..1 face passed the 0..1 / 0..255 check and lost every pixel
    below 0 to black: confident probabilities for a face nobody gave."""
    g = cv2.imread(str(fer_files("happy", "PrivateTest", 1)[0]), cv2.IMREAD_GRAYSCALE)
    f = g.astype(np.float32)
    # each passed the old bounds (-127.5..382.5, or any low end when the top is <= 2)
    for bad in (f - 128.0, f / 127.5 - 1.0, f / 255.0 - 0.5):
        with pytest.raises(UserError, match="0..1 or 0..255 scale") as e:
            clf.predict(bad)
        assert e.value.param == "faces"
    with pytest.raises(UserError, match="face 1: ") as e:  # which one, among several
        clf.predict([f, f / 127.5 - 1.0])
    assert e.value.param == "faces"
    with pytest.raises(UserError, match="0..1 or 0..255 scale"):
        clf.predict_faces(cv2.cvtColor(f / 127.5 - 1.0, cv2.COLOR_GRAY2BGR))
    # a resize's overshoot (pixels past an end) still passes, on either scale: the face
    # stretched to the whole 0..1 range, so that it overshoots below 0
    unit = (f - f.min()) / (f.max() - f.min())
    unit8 = np.rint(unit * 255).astype(np.uint8)
    want = clf.predict(unit8)
    for interp in (cv2.INTER_CUBIC, cv2.INTER_LANCZOS4):
        for side in (64, 100):
            big = cv2.resize(unit, (side, side), interpolation=interp)
            assert big.min() < 0  # (the brightest pixel may be a lone one)
            up = cv2.resize(unit8, (side, side), interpolation=interp)
            for scale in (1.0, 255.0):
                got = clf.predict(big * scale)
                assert np.abs(got - clf.predict(up)).max() < 0.02
                assert got.argmax() == want.argmax()
        small = cv2.resize(cv2.resize(unit, (100, 100)), (48, 48), interpolation=interp)
        assert np.abs(clf.predict(small) - want).max() < 0.05
        # the sharpest edges, black and white squares: 2.6% of the pixels past 0.1 beyond
        squares = np.kron(np.eye(6), np.ones((8, 8))).astype(np.float32)
        for side in (32, 150):
            sharp = cv2.resize(squares, (side, side), interpolation=interp)
            assert (sharp < -0.1).mean() > 0.01
            assert clf.predict([sharp, sharp * 255]).shape == (2, 7)


def test_predict_array_refuses_raw_pixels_as_prepared_input(clf) -> None:
    """Raw 0..255 float pixels were classified as if prepared."""
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (3, 48, 48), dtype=np.uint8)
    x = clf.spec.prepare(faces)
    np.testing.assert_allclose(clf.predict_array(x), clf.predict(faces), atol=1e-6)
    raw = x.copy()
    raw[2] = faces[2].astype(np.float32)
    with pytest.raises(UserError, match=r"face 2: .* the range spec.prepare gives") as e:
        clf.predict_array(raw)
    assert e.value.param == "x"


def test_load_refuses_keywords_the_backend_does_not_take() -> None:
    """precision="int8" was "OnnxRuntimeBackend.__init__() got an unexpected keyword argument
    'precision'"; providers=3 "'int' object is not iterable"."""
    from edge_fer.classify import Classifier

    with pytest.raises(UserError, match="not an option of the onnxruntime backend") as e:
        Classifier.load(precision="int8")
    assert e.value.param == "precision"
    assert "tensorrt backend" in str(e.value) and "bundled_model_path" in str(e.value)
    with pytest.raises(UserError, match="not an option") as e:
        Classifier.load(batch=4)
    assert e.value.param == "batch" and "tensorrt" not in str(e.value)
    for name, bad in (("providers", 3), ("providers", ["CPUExecutionProvider", 3])):
        with pytest.raises(UserError, match="execution providers") as e:
            Classifier.load(**{name: bad})
        assert e.value.param == name
    with pytest.raises(UserError, match="True or False") as e:
        Classifier.load(allow_spinning="no")
    assert e.value.param == "allow_spinning"
    with Classifier.load(providers=["CPUExecutionProvider"], allow_spinning=False) as c:
        assert c.backend.name == "onnxruntime"


def test_a_negative_angle_is_refused_with_how_to_write_it() -> None:
    """--angle=-1/32 works; Detector(angle=-1/32) said only "must be in [0, 1]"."""
    from edge_fer.detect import Cascade, Detector, default_cascade_path, parse_angles

    cascade = Cascade.load(default_cascade_path())
    with pytest.raises(UserError, match=r"0\.96875 for -0\.03125 \(as --angle") as e:
        Detector(cascade, angle=-1 / 32)
    assert e.value.param == "angle"
    (turns,) = parse_angles("-1/32")  # the hint is what the CLI does
    assert turns == 0.96875 and Detector(cascade, angle=turns).angle == turns


def test_negative_upscale_and_frame_shapes_are_refused() -> None:
    """upscale_to=-5 passed where nothing is upscaled; a frame shape (-1, 5) or (2.5, 5) was
    taken as it came."""
    from edge_fer.detect.config import CascadeSettings, DetectorOptions, resolve
    from edge_fer.detect.factory import DetectorPicker

    settings = CascadeSettings()
    for upscaling in (False, True):
        with pytest.raises(UserError, match="0..4096") as e:
            resolve(DetectorOptions(upscale_to=-5), settings, upscaling=upscaling)
        assert e.value.param == "upscale_to"
    with pytest.raises(UserError, match="0..4096") as e:
        DetectorPicker(None, DetectorOptions(upscale_to=-5), stills=True)
    assert e.value.param == "upscale_to"
    for shape in ((-1, 5), (2.5, 5), (5, float("nan")), 480):
        with pytest.raises(UserError, match="whole numbers >= 0") as e:
            resolve(DetectorOptions(), settings, shape)
        assert e.value.param == "frame_shape"
    assert resolve(DetectorOptions(), settings, (0, 0)).min_size == 24  # 0: not known
    pick = DetectorPicker(None, DetectorOptions(), stills=True)
    for shape in ((-1, 5), (5, -1, 3)):
        with pytest.raises(UserError, match="whole numbers >= 0") as e:
            pick(shape)
        assert e.value.param == "shape"
    assert pick((120, 160)) is pick(np.zeros((120, 160), np.uint8).shape)


def test_bundled_model_path_refuses_an_unknown_backend() -> None:
    """backend="x" got the ONNX model without a word; "ort" and "trt" are create_backend's
    names for the two backends and get what those get."""
    from edge_fer.classify import bundled_model_path

    for bad in ("x", None, 3):
        with pytest.raises(UserError, match="is unknown; choose onnxruntime or tensorrt") as e:
            bundled_model_path(bad)  # type: ignore[arg-type]
        assert e.value.param == "backend"
    assert bundled_model_path("ORT", "fp32") == bundled_model_path("onnxruntime", "fp32")
    assert bundled_model_path("trt") == bundled_model_path("tensorrt")
    assert bundled_model_path("ort") == bundled_model_path("onnxruntime")
