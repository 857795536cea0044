"""The detection and alignment API checks what it is given: settings assigned after a
Detector is built, grid shapes, aligner boxes and paths, VerifiedDetector's parts and
resolve's frame shapes (each was taken unchecked, and hung, crashed or answered wrongly)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from paths import ASSETS, PICO, SHARED, VERIFIER

from edge_fer.align import load_aligner
from edge_fer.detect import Cascade, Detection, Detector
from edge_fer.detect.config import CascadeSettings, DetectorOptions, resolve
from edge_fer.detect.factory import DetectorPicker
from edge_fer.detect.verifier import VerifiedDetector, Verifier
from edge_fer.errors import UserError

cv2 = pytest.importorskip("cv2")

IMAGE = SHARED / "data/webfaces/images/pic04478.jpg"  # 640x480, several faces
needs_image = pytest.mark.shared("data/webfaces/images/pic04478.jpg")


@pytest.fixture(scope="module")
def cascade() -> Cascade:
    return Cascade.load(PICO)


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    img = cv2.imread(str(IMAGE), cv2.IMREAD_GRAYSCALE)
    assert img is not None, IMAGE
    return img


def _boxes(faces: list[Detection]) -> list[tuple[float, ...]]:
    return [tuple(round(v, 3) for v in f) for f in faces]


# (setting, a value the constructor refuses): scale_factor 0.5 scanned forever, angle 5
# indexed past the rotation table, min_size -1 was kept
BAD_SETTINGS = [
    ("scale_factor", 0.5),
    ("scale_factor", "1.2"),
    ("angle", 5),
    ("angle", -0.25),
    ("min_size", -1),
    ("max_size", 3),
    ("stride_factor", 0.0),
    ("threshold", float("nan")),
    ("iou", 1.0),
    ("grouping", "best"),
    ("max_detections", 0),
    ("threads", 0),
    ("min_pixels", 0.5),
    ("fine_budget", -1),
    ("fine_span", 0.5),
    ("cascade", None),
]


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_a_setting_assigned_later_is_checked_as_the_constructor_checks_it(
    cascade: Cascade, name: str, value
) -> None:
    with pytest.raises(UserError) as built:
        Detector(**{"cascade": cascade, name: value})
    d = Detector(cascade)
    before = d.__dict__.get(name, getattr(d, name))
    with pytest.raises(UserError) as assigned:
        setattr(d, name, value)
    assert assigned.value.param == built.value.param
    assert str(assigned.value) == str(built.value)
    assert getattr(d, name) is before or getattr(d, name) == before  # left as it was


@needs_image
def test_refused_settings_leave_the_detector_scanning(cascade: Cascade, gray) -> None:
    d = Detector(cascade)
    want = _boxes(d.detect(gray))
    assert want  # the photo has faces
    for name, value in BAD_SETTINGS:
        with pytest.raises(UserError):
            setattr(d, name, value)
    d.reset()
    assert _boxes(d.detect(gray)) == want


@needs_image
def test_a_valid_setting_assigned_later_scans_as_a_fresh_detector(cascade: Cascade, gray) -> None:
    """angle and cascade were not in the scan plan's key: a detector turned (or given another
    cascade) after its first frame scanned with the old offsets (or leaves)."""
    d = Detector(cascade, threshold=0.0)
    d.detect(gray)
    d.angle = 0.25
    assert d.angle == 0.25 and d.angles == (0.25,)
    assert _boxes(d.detect(gray)) == _boxes(
        Detector(cascade, angle=0.25, threshold=0.0).detect(gray)
    )
    d.angles = (0.0, 1 / 32)  # several, as the constructor's angle takes them
    assert d.angle == 0.0 and d.angles == (0.0, 1 / 32)
    fresh = Detector(cascade, angle=(0.0, 1 / 32), threshold=0.0)
    assert _boxes(d.detect(gray)) == _boxes(fresh.detect(gray))
    d.angle = 0.0
    lowres = Cascade.load(ASSETS / "face_lowres.pico")
    d.cascade = lowres
    assert d.cascade is lowres
    assert _boxes(d.detect(gray)) == _boxes(Detector(lowres, threshold=0.0).detect(gray))
    # reads are unchanged: plain values of the types the constructor stores
    d.scale_factor = 1.25
    d.min_size = np.int64(30)
    assert d.scale_factor == 1.25 and type(d.scale_factor) is float
    assert d.min_size == 30
    assert (
        d.grid(*gray.shape).windows
        == Detector(lowres, min_size=30, scale_factor=1.25).grid(*gray.shape).windows
    )


@pytest.mark.parametrize(
    ("shape", "param"),
    [
        ((10**9, 10**9), "nrows"),  # allocated gigabytes of positions before refusing
        ((20000, 20000), "nrows"),  # detect() refuses frames over 16384 px a side
        ((480, 20000), "ncols"),
        ((16384, 16384), "ncols"),  # 268 Mpx: over the 134 Mpx detect() scans
        ((0, 640), "nrows"),
        ((480.0, 640), "nrows"),
        ((True, 640), "nrows"),
    ],
)
def test_grid_refuses_the_frames_detect_refuses(cascade: Cascade, shape, param) -> None:
    d = Detector(cascade)
    with pytest.raises(UserError) as e:
        d.grid(*shape)
    assert e.value.param == param
    if max(shape) <= 16384 and min(shape) > 0 and all(type(v) is int for v in shape):
        with pytest.raises(UserError):  # the same frame, given to detect
            d.detect(np.zeros(shape, np.uint8))


def test_grid_counts_its_windows_before_building_them(cascade: Cascade) -> None:
    d = Detector(cascade, min_size=1, scale_factor=1.001)
    assert d.grid(48, 64).windows > 0  # a small frame is still answered
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match="windows per frame is too many"):
            d.grid(8192, 16384)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MiB allocated before refusing"


@needs_image
def test_aligner_takes_a_detection_by_its_box(cascade: Cascade, gray) -> None:
    """A Detection (row, col, size, score) was read as (x, y, w, h): a wrong crop, found."""
    al = load_aligner()
    faces = Detector(cascade).detect(gray)
    assert faces
    f = faces[0]
    box = (f.x, f.y, f.w, f.h)
    crop, ok = al.crop(gray, f, 48)
    want, want_ok = al.crop(gray, box, 48)
    assert ok == want_ok and np.array_equal(crop, want)
    e, want_e = al.eyes(gray, f), al.eyes(gray, box)
    assert (e.left, e.right, e.found) == (want_e.left, want_e.right, want_e.found)
    # a plain (x, y, w, h) as list and array is taken as before
    assert np.array_equal(al.crop(gray, list(box), 48)[0], want)
    assert np.array_equal(al.crop(gray, np.array(box), 48)[0], want)


@needs_image
@pytest.mark.parametrize(
    "box",
    [
        None,
        (100, 100, 80),
        (100, 100, 80, 80, 1),
        "abcd",
        (100, 100, "80", 80),
        (100, 100, True, 80),
        np.zeros((2, 2)),
        100,
    ],
    ids=["none", "three", "five", "str", "str-side", "bool", "2x2", "int"],
)
def test_aligner_refuses_malformed_boxes(gray, box) -> None:
    al = load_aligner()
    for call in (lambda: al.crop(gray, box, 48), lambda: al.eyes(gray, box)):
        with pytest.raises(UserError) as e:
            call()
        assert e.value.param == "box"


@pytest.mark.parametrize("path", [3, 2.5, b"eyes_default.eyes", ["a.eyes"]])
def test_load_aligner_refuses_what_is_not_a_path(path) -> None:
    with pytest.raises(UserError) as e:
        load_aligner(path)
    assert e.value.param == "path"


def test_verified_detector_checks_its_parts(cascade: Cascade) -> None:
    det = Detector(cascade)
    ver = Verifier.load(VERIFIER)
    for args, param in (((None, ver), "detector"), ((det, None), "verifier"),
                        ((cascade, ver), "detector"), ((det, det), "verifier")):  # fmt: skip
        with pytest.raises(UserError) as e:
            VerifiedDetector(*args)
        assert e.value.param == param
    gray = np.zeros((120, 160), np.uint8)
    assert VerifiedDetector(det, ver).detect(gray) == []  # the good pair still works


@pytest.mark.parametrize("shape", [(480,), (), [640]])
def test_a_frame_shape_needs_rows_and_cols(shape) -> None:
    """(480,) was taken as a size not known yet; the docs say (rows, cols, ...)."""
    with pytest.raises(UserError) as e:
        resolve(DetectorOptions(), CascadeSettings(), shape)
    assert e.value.param == "frame_shape"
    pick = DetectorPicker(None, DetectorOptions(), stills=True)
    with pytest.raises(UserError) as e:
        pick(shape)
    assert e.value.param == "shape"
    assert resolve(DetectorOptions(), CascadeSettings(), (480, 640, 3)).min_size == 24
