"""The detector reproduces the reference pico runtime's raw and clustered windows exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from paths import SHARED, shared

from edge_fer.detect import Cascade, Detector, cluster

EXPECTED = shared("reference/pico/expected_detections.json")  # skips the module when absent

cv2 = pytest.importorskip("cv2")

SPEC = json.loads(EXPECTED.read_text())
CASES = SPEC["cases"]


@pytest.fixture(scope="module")
def cascade() -> Cascade:
    return Cascade.load(SHARED / SPEC["cascade"])


def load_gray(image: str) -> np.ndarray:
    if "#frame=" in image:
        path, idx = image.split("#frame=")
        cap = cv2.VideoCapture(str(SHARED / path))
        frame = None
        for _ in range(int(idx) + 1):  # read sequentially: seeking is not frame-exact
            ok, frame = cap.read()
            assert ok, f"{path} has fewer than {int(idx) + 1} frames"
        cap.release()
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    gray = cv2.imread(str(SHARED / image), cv2.IMREAD_GRAYSCALE)
    assert gray is not None, image
    return gray


def assert_same(got: np.ndarray, want: list, what: str) -> None:
    want_a = np.array(want, dtype=np.float32).reshape(-1, 4)
    assert got.shape == want_a.shape, f"{what}: {len(got)} windows, reference has {len(want_a)}"
    # positions and sizes are float32 values of the same arithmetic: identical
    np.testing.assert_array_equal(got[:, :3], want_a[:, :3], err_msg=what)
    np.testing.assert_allclose(got[:, 3], want_a[:, 3], rtol=0, atol=1e-4, err_msg=what)


def test_all_cases_present() -> None:
    assert len(CASES) == 37
    assert any(c["params"]["angle"] != 0 for c in CASES)
    assert any("#frame=" in c["image"] for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["image"].split("/")[-1] for c in CASES])
def test_matches_reference(cascade: Cascade, case: dict) -> None:
    gray = load_gray(case["image"])
    assert gray.shape == (case["height"], case["width"])
    p = case["params"]
    det = Detector(
        cascade,
        min_size=p["minsize"],
        max_size=p["maxsize"],
        scale_factor=p["scalefactor"],
        stride_factor=p["stridefactor"],
        angle=p["angle"],
    )
    raw = det.raw(gray)
    assert raw.dtype == np.float32
    assert_same(raw, case["raw"], "raw")
    assert_same(cluster(raw), case["clustered"], "clustered")
    # detect() is cluster + threshold, best first
    faces = det.detect(gray)
    want = sorted((c[3] for c in case["clustered"] if c[3] >= det.threshold), reverse=True)
    assert [f.score for f in faces] == pytest.approx(want, abs=1e-4)
