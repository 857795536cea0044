"""The detection API a script writer calls (`Verifier`, `Detector`, `Cascade`): a caller's
mistake is a UserError naming the parameter, never a silently wrong answer (a float frame scored
as no face, a box of negative size, sizes that can find nothing, cascade codes out of range) or
a traceback from numpy or OpenCV."""

from __future__ import annotations

import numpy as np
import pytest
from paths import PICO, VERIFIER, shared
from runtime_helpers import gray_frames, lowres_detector

from edge_fer.detect import Cascade, Detector
from edge_fer.detect.config import CascadeSettings, DetectorOptions, resolve
from edge_fer.errors import UserError

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def verifier():
    from edge_fer.detect.verifier import Verifier

    return Verifier.load(VERIFIER)


@pytest.fixture(scope="module")
def scene():
    """(gray frame of a real 160x120 video, the face the verified low-resolution detector finds
    there as a (1, 4) row, col, size, score row)."""
    from edge_fer.detect.verifier import VerifiedDetector, Verifier

    gray = gray_frames(shared("data/videos/01-2.avi"))[19]
    found = VerifiedDetector(lowres_detector(), Verifier.load(VERIFIER)).detect(gray)
    assert found, "no face found in frame 20 of 01-2.avi"
    return gray, np.array([found[0][:4]])


@pytest.mark.shared("data/videos/01-2.avi")
def test_verifier_refuses_the_frames_the_detector_refuses(verifier, scene) -> None:
    """A float frame scaled 0..1 scored a real face ~0 without a word; a BGR frame, None
    failed in numpy (broadcast) or with AttributeError."""
    gray, face = scene
    prob, boxes = verifier(gray, face)
    assert prob[0] >= 0.5 and boxes.shape == (1, 3)
    assert len(verifier.filter(gray, face)) == 1
    bgr = np.repeat(gray[:, :, None], 3, axis=2)
    for frame, words in [
        (gray.astype(np.float32) / 255, "uint8"),
        (bgr, "cvtColor"),
        (None, "numpy array"),
        (gray[:0], "empty"),
    ]:
        for call in (verifier, verifier.filter):
            with pytest.raises(UserError, match=words) as e:
                call(frame, face)
            assert e.value.param == "gray"
    # the same check, and words, as the detector in front of it
    with pytest.raises(UserError, match="uint8") as e:
        lowres_detector().detect(gray.astype(np.float32) / 255)
    assert e.value.param == "gray"


@pytest.mark.shared("data/videos/01-2.avi")
def test_verifier_refuses_rows_it_cannot_crop(verifier, scene) -> None:
    """A negative size came back as a box of size -51.4; NaN, an infinite or a 1e12 size
    failed in int(), OpenCV's copyMakeBorder or with OverflowError."""
    gray, face = scene
    for rows, words in [
        (face * [1, 1, -1, 1], "size -"),
        (face * [1, 1, 0, 1], "size 0"),
        (np.array([[np.nan, 10.0, 20.0, 1.0]]), "NaN"),
        (np.array([[10.0, 10.0, np.inf, 1.0]]), "infinity"),
        (np.array([[10.0, 10.0, 1e12, 1.0]]), "longer side"),
        (face[0], r"\(n, \d\+\)"),
        ("face", r"\(n, \d\+\)"),
    ]:
        for call in (verifier, verifier.filter):
            with pytest.raises(UserError, match=words) as e:
                call(gray, rows)
            assert e.value.param == "dets"
    with pytest.raises(UserError, match="score") as e:  # filter keeps the score column
        verifier.filter(gray, face[:, :3])
    assert e.value.param == "dets"
    # no detections, and a box partly or wholly off the frame, are fine
    assert verifier(gray, [])[0].shape == (0,)
    assert verifier.filter(gray, np.zeros((0, 4))).shape == (0, 5)
    assert verifier(gray, face + [0, 150, 0, 0])[0].shape == (1,)


@pytest.fixture(scope="module")
def cascade() -> Cascade:
    return Cascade.load(PICO)


def test_detector_refuses_sizes_that_find_nothing_as_its_options_do(cascade) -> None:
    """min_size above max_size, or max_size=1 (one pixel, where 1.0 is the whole side), found
    nothing on every frame while DetectorOptions + resolve refused them."""
    for sizes, words in [
        ({"min_size": 80, "max_size": 40}, "below the smallest size"),
        ({"min_size": 24, "max_size": 1}, "write 1.0"),
        ({"min_size": 0.5, "max_size": 0.2}, "below the smallest size"),
    ]:
        with pytest.raises(UserError, match=words) as e:
            Detector(cascade, **sizes)
        assert e.value.param == "max_size"
        with pytest.raises(UserError, match=words) as o:
            resolve(DetectorOptions(**sizes), CascadeSettings())
        assert str(o.value) == str(e.value)
    # the units differ (pixels, a fraction of the side): for the frame to decide
    assert Detector(cascade, min_size=24, max_size=1.0).sizes(120, 160) == (24.0, 120.0)
    assert (
        Detector(cascade, min_size=np.int64(24), max_size=np.int64(200)).sizes(240, 320)[1] == 200
    )


@pytest.mark.parametrize(
    "name, value",
    [
        ("threshold", "5"),
        ("scale_factor", "1.1"),
        ("stride_factor", "0.1"),
        ("iou", "0.3"),
        ("iou", float("nan")),
        ("min_pixels", "1"),
        ("fine_span", "4"),
        ("threshold", 10**400),
    ],
    ids=lambda v: v if isinstance(v, str) else repr(v)[:8],
)
def test_detector_options_of_the_wrong_type_name_their_parameter(cascade, name, value) -> None:
    """Numbers given as strings were bare TypeErrors naming nothing; iou=nan's UserError had
    no parameter."""
    with pytest.raises(UserError, match="must be") as e:
        Detector(cascade, **{name: value})
    assert e.value.param == name


# ---- API arguments of the wrong type or range ------------------------------------------------


def _tiny_cascade(**kw) -> Cascade:
    args = {"tdepth": 1, "codes": np.zeros((1, 1, 4)), "leaves": [[0.5, -0.5]],
            "thresholds": [-1.0], **kw}  # fmt: skip
    return Cascade(**args)


@pytest.mark.parametrize(
    "call, param",
    [
        (lambda: _tiny_cascade().save(None), "path"),  # TypeError
        (lambda: _tiny_cascade().save(""), "path"),  # ValueError "has an empty name"
        (lambda: Cascade.from_bytes("pico" * 8), "data"),  # TypeError in len()
        (lambda: Detector(_tiny_cascade(), grouping=["chain"]), "grouping"),  # unhashable
        (lambda: _resolve(None), "options"),  # AttributeError
        (lambda: _picker(3), "cascade"),  # TypeError in Path()
        (lambda: _tiny_cascade(codes=np.full((1, 1, 4), 200)), "codes"),  # wrapped to -56
        (lambda: _tiny_cascade(codes=np.full((1, 1, 4), -129)), "codes"),  # wrapped to 127
        (lambda: _tiny_cascade(codes=np.full((1, 1, 4), 1.5)), "codes"),  # truncated to 1
        (lambda: _tiny_cascade(codes=np.full((1, 1, 4), np.nan)), "codes"),  # became 0
        (lambda: _tiny_cascade(leaves=[["a", "b"]]), "leaves"),  # ValueError
        (lambda: _tiny_cascade(header="8 chars!"), "header"),  # TypeError in to_bytes()
        (lambda: _tiny_cascade(tdepth=True), "tdepth"),  # taken as depth 1
    ],
)
def test_api_arguments_of_the_wrong_type_or_range_are_a_user_error_naming_them(call, param):
    """Each was a plain TypeError / ValueError / AttributeError, or (codes outside -128..127,
    not whole) silently a different cascade."""
    from edge_fer.errors import UserError

    with pytest.raises(UserError) as exc:
        call()
    assert exc.value.param == param, exc.value


def _resolve(options):
    from edge_fer.detect.config import CascadeSettings, resolve

    return resolve(options, CascadeSettings.for_cascade(None), (100, 100))


def _picker(cascade):
    from edge_fer.detect.config import DetectorOptions
    from edge_fer.detect.factory import DetectorPicker

    return DetectorPicker(cascade, DetectorOptions())


def test_cascade_codes_at_the_int8_limits_and_byte_buffers_still_load(tmp_path):
    codes = np.array([[[-128, 127, 0, -1]]])
    casc = _tiny_cascade(codes=codes)
    assert (casc.codes == codes).all()
    data = casc.to_bytes()
    for buf in (data, bytearray(data), memoryview(data)):
        assert (Cascade.from_bytes(buf).codes == codes).all()
    casc.save(tmp_path / "c.pico")
    assert Cascade.load(tmp_path / "c.pico").to_bytes() == data
