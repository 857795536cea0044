"""Detector behaviour: frame checks, sizes, clustering, temporal memory."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from paths import SHARED, shared
from runtime_helpers import gray_frames

from edge_fer.detect import Cascade, Detection, Detector, cluster, parse_angles
from edge_fer.detect.cluster import group_greedy
from edge_fer.detect.grid import build_grid
from edge_fer.errors import UserError

FACEFINDER = shared("reference/pico/facefinder")  # skips the module when absent
IMAGE = SHARED / "data/webfaces/images/pic04478.jpg"  # 640x480, several faces
VIDEO = SHARED / "data/videos/00-1.avi"

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def cascade() -> Cascade:
    return Cascade.load(FACEFINDER)


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return cv2.imread(str(IMAGE), cv2.IMREAD_GRAYSCALE)


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    return gray_frames(VIDEO)


def test_finds_faces_and_boxes(cascade: Cascade, gray: np.ndarray) -> None:
    faces = Detector(cascade, min_size=48).detect(gray)
    assert len(faces) >= 4
    assert all(isinstance(f, Detection) for f in faces)
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    f = faces[0]
    assert (f.x, f.y, f.w, f.h) == (f.col - f.size / 2, f.row - f.size / 2, f.size, f.size)
    assert 0 <= f.x and f.x + f.w <= gray.shape[1] and 0 <= f.y and f.y + f.h <= gray.shape[0]


def test_fraction_sizes(cascade: Cascade, gray: np.ndarray) -> None:
    """Floats in (0, 1] are fractions of the shorter side (480 here)."""
    a = Detector(cascade, min_size=0.1, max_size=1.0).raw(gray)
    b = Detector(cascade, min_size=48.0, max_size=480).raw(gray)
    np.testing.assert_array_equal(a, b)
    assert Detector(cascade, min_size=0.1).sizes(480, 640) == (48.0, 480.0)
    assert Detector(cascade, min_size=1).sizes(480, 640) == (1.0, 480.0)  # int 1 is a pixel


def test_non_contiguous_frames(cascade: Cascade, gray: np.ndarray) -> None:
    det = Detector(cascade, min_size=24)
    view = gray[::2, ::2]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(det.raw(view), det.raw(np.ascontiguousarray(view)))
    t = gray.T
    np.testing.assert_array_equal(det.raw(t), det.raw(t.copy()))


@pytest.mark.parametrize(
    "frame, words",
    [
        (np.zeros((48, 64, 3), np.uint8), "grayscale.*cvtColor"),
        (np.zeros((48, 64, 1), np.uint8), "2-D"),
        (np.zeros((0, 64), np.uint8), "empty"),
        (np.zeros((48, 0), np.uint8), "empty"),
        (np.zeros(64, np.uint8), "2-D"),
        (np.zeros((48, 64), np.float32), "uint8"),
        (np.zeros((48, 64), np.uint16), "uint8"),
        (np.broadcast_to(np.zeros(1, np.uint8), (12_000, 12_000)), "too large"),
        (np.broadcast_to(np.zeros(1, np.uint8), (20_000, 10)), "too large"),
        ([[0, 1], [2, 3]], "numpy"),
        (None, "numpy"),
    ],
)
def test_bad_frames_raise_user_errors(cascade: Cascade, frame, words: str) -> None:
    det = Detector(cascade)
    with pytest.raises(UserError, match=words):
        det.detect(frame)
    with pytest.raises(UserError, match=words):
        det.raw(frame)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (5, 5), (19, 7)])
def test_tiny_frames_give_nothing(cascade: Cascade, shape: tuple[int, int]) -> None:
    frame = np.full(shape, 128, np.uint8)
    assert Detector(cascade, min_size=20).detect(frame) == []
    assert Detector(cascade, min_size=0.1).raw(frame).shape == (0, 4)


def test_min_size_larger_than_frame(cascade: Cascade, gray: np.ndarray) -> None:
    assert Detector(cascade, min_size=481).detect(gray) == []
    # a smallest size over the largest finds nothing on any frame: refused as resolve() does
    with pytest.raises(UserError, match="below the smallest size"):
        Detector(cascade, min_size=100, max_size=50)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"min_size": 0}, "min_size"),
        ({"min_size": -3}, "min_size"),
        ({"max_size": float("nan")}, "max_size"),
        ({"min_size": "big"}, "number"),
        ({"scale_factor": 1.0}, "scale_factor"),
        ({"stride_factor": 0}, "stride_factor"),
        ({"angle": 1.5}, "angle"),
        ({"angle": -0.1}, "angle"),
        ({"angle": (0.0, 2.0)}, "angle"),
        ({"angle": ()}, "angles"),
        ({"angle": (0.0, "x")}, "angle"),
        ({"threshold": float("inf")}, "threshold"),
        ({"memory": 0}, "memory"),
        ({"iou": 1.0}, "iou"),
        ({"grouping": "mean-shift"}, "grouping"),
    ],
)
def test_bad_options(cascade: Cascade, kwargs: dict, words: str) -> None:
    with pytest.raises(UserError, match=words):
        Detector(cascade, **kwargs)


def test_grid_matches_readme_rules() -> None:
    g = build_grid(120, 160, 24.0, 120.0, 1.1, 0.1)
    assert g.sizes_f[0] == np.float32(24.0) and g.sizes_f[-1] <= 120
    first = g.rows_f[: g.row_start[1]]
    assert first[0] == np.float32(13.0) and first[-1] <= 120 - 12 - 1
    assert np.allclose(np.diff(first), 2.4, atol=1e-4)
    assert g.windows == int(np.sum(np.diff(g.row_start) * np.diff(g.col_start)))


def test_a_huge_max_size_scans_what_the_frame_holds(cascade: Cascade, gray: np.ndarray) -> None:
    """1e39 is inf in float32: the scale loop never ended (detect --max-size 1e39 hung)."""
    huge, framed = (
        build_grid(120, 160, 24.0, 1e39, 1.1, 0.1),
        build_grid(120, 160, 24.0, 160, 1.1, 0.1),
    )
    assert np.array_equal(huge.sizes_f, framed.sizes_f) and huge.windows == framed.windows
    found = Detector(cascade, min_size=48, max_size=1e39).detect(gray)
    assert found == Detector(cascade, min_size=48, max_size=max(gray.shape)).detect(gray)


def test_angle_is_symmetric_for_half_turn(cascade: Cascade, gray: np.ndarray) -> None:
    """A cascade rotated by half a turn finds the faces of the upside-down image."""
    up = Detector(cascade, min_size=48, angle=0.5).detect(np.ascontiguousarray(gray[::-1, ::-1]))
    assert len(up) >= 3


def test_several_angles_scan_each_and_cluster_together(cascade: Cascade, gray: np.ndarray) -> None:
    """Windows of every angle, in order; a face rolled by 1/16 turn is found only with that
    angle in the scan, where the upright scan misses it."""
    angles = (0.0, 1 / 16, 15 / 16)
    multi = Detector(cascade, min_size=48, angle=angles)
    singles = [Detector(cascade, min_size=48, angle=a).raw(gray) for a in angles]
    assert np.array_equal(multi.raw(gray), np.concatenate(singles))
    # a setting changed after construction (as the runner changes scale_factor) reaches every
    # angle's scan
    late = Detector(cascade, min_size=48, angle=angles)
    late.scale_factor = 1.2
    singles = [Detector(cascade, min_size=48, scale_factor=1.2, angle=a).raw(gray) for a in angles]
    assert np.array_equal(late.raw(gray), np.concatenate(singles))
    h, w = gray.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 22.5, 1.0)  # counter-clockwise, as pico turns
    rolled = cv2.warpAffine(gray, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    upright = Detector(cascade, min_size=48, threshold=20.0).detect(rolled)
    both = Detector(cascade, min_size=48, threshold=20.0, angle=(0.0, 1 / 16)).detect(rolled)
    assert len(upright) <= 1 and len(both) >= 3  # the photo's faces, rolled


@pytest.mark.parametrize(
    "text, turns",
    [("0", (0.0,)), ("0.25", (0.25,)), ("0,1/32,-1/32", (0.0, 0.03125, 0.96875)), ("-0.5", (0.5,))],
)
def test_parse_angles(text: str, turns: tuple) -> None:
    assert parse_angles(text) == turns


@pytest.mark.parametrize("text", ["", "x", "1/0", "0,2", ",".join(["0"] * 33)])
def test_parse_angles_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_angles(text)


def test_cluster_groups_overlaps() -> None:
    dets = np.array(
        [[50, 50, 20, 1], [51, 50, 20, 2], [52, 51, 22, 3], [200, 200, 20, 4]], np.float32
    )
    out = cluster(dets)
    assert out.shape == (2, 4)
    np.testing.assert_allclose(out[0], [51, 50 + 1 / 3, 62 / 3, 6], rtol=1e-6)
    np.testing.assert_array_equal(out[1], dets[3])
    assert cluster(np.empty((0, 4), np.float32)).shape == (0, 4)
    # chains join: a-b and b-c overlap, a-c do not, still one component
    chain = np.array([[0, 0, 10, 1], [0, 4, 10, 1], [0, 8, 10, 1]], np.float32)
    assert cluster(chain).shape == (1, 4)


def test_greedy_grouping_does_not_chain() -> None:
    """The best window takes what overlaps it; a window overlapping only a taken one starts
    its own group. Best group first; boxes are means, scores sums."""
    chain = np.array([[0, 0, 10, 2], [0, 4, 10, 1], [0, 8, 10, 1.5]], np.float32)
    out = group_greedy(chain)
    np.testing.assert_allclose(out, [[0, 2, 10, 3], [0, 8, 10, 1.5]], rtol=1e-6)
    # the middle window is best: it takes both ends
    mid = np.array([[0, 0, 10, 1], [0, 4, 10, 2], [0, 8, 10, 1]], np.float32)
    np.testing.assert_allclose(group_greedy(mid), [[0, 4, 10, 4]], rtol=1e-6)
    # a lower overlap bar takes more
    assert group_greedy(chain, iou=0.1).shape == (1, 4)
    assert group_greedy(np.empty((0, 4), np.float32)).shape == (0, 4)


def test_detector_groups_as_told(cascade: Cascade, gray: np.ndarray) -> None:
    raw = Detector(cascade, min_size=48).raw(gray)
    for grouping, fn in (("chain", cluster), ("greedy", group_greedy)):
        det = Detector(cascade, min_size=48, grouping=grouping, iou=0.2, threshold=5.0)
        want = fn(raw, 0.2)
        want = want[want[:, 3] >= 5.0]
        got = np.array([[d.row, d.col, d.size, d.score] for d in det.detect(gray)], np.float32)
        np.testing.assert_allclose(np.sort(got, axis=0), np.sort(want, axis=0), rtol=1e-6)


def test_memory_pools_last_frames(cascade: Cascade, gray: np.ndarray) -> None:
    blank = np.zeros_like(gray)
    one = Detector(cascade, min_size=48, threshold=0).detect(gray)
    det = Detector(cascade, min_size=48, threshold=0, memory=3)
    first = det.detect(gray)
    assert [f.score for f in first] == pytest.approx([f.score for f in one], rel=1e-5)
    det.detect(gray)
    tripled = det.detect(gray)  # three identical frames: same boxes, three times the score
    assert [f.score for f in tripled] == pytest.approx([3 * f.score for f in one], rel=1e-4)
    assert [f.row for f in tripled] == pytest.approx([f.row for f in one])
    assert [f.col for f in tripled] == pytest.approx([f.col for f in one])
    # blank frames push the face out one slot at a time
    assert len(det.detect(blank)) == len(one)
    assert len(det.detect(blank)) == len(one)
    assert det.detect(blank) == []
    det.detect(gray)
    det.reset()
    assert det.detect(blank) == []
    # a frame of another shape starts afresh instead of mixing coordinates
    det.detect(gray)
    assert det.detect(np.zeros((100, 100), np.uint8)) == []


def test_memory_flickers_less_on_video(cascade: Cascade, clip: list[np.ndarray]) -> None:
    def presence(memory: int, threshold: float) -> list[bool]:
        det = Detector(cascade, min_size=0.2, memory=memory, threshold=threshold)
        return [bool(det.detect(f)) for f in clip]

    def transitions(p: list[bool]) -> int:
        return sum(a != b for a, b in itertools.pairwise(p))

    single = presence(1, 5.0)
    pooled = presence(5, 10.0)  # per frame that is a bar of 2, well below 5
    assert len(clip) == 228
    assert sum(pooled) > sum(single)
    assert transitions(pooled) < transitions(single) / 2


def test_threads_and_batches_do_not_change_results(
    cascade: Cascade, gray: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge_fer.detect.detector as detector_mod

    want = Detector(cascade, min_size=24, threads=1).raw(gray)
    assert want.shape[0] > 20
    for threads in (2, 3):
        np.testing.assert_array_equal(
            Detector(cascade, min_size=24, threads=threads).raw(gray), want
        )
    # small output buffers and no offset cache: many kernel calls, offsets built per call
    monkeypatch.setattr(detector_mod, "WINDOW_BUFFER", 5000)
    monkeypatch.setattr(detector_mod, "OFFSET_CACHE_BYTES", 300_000)
    det = Detector(cascade, min_size=24, threads=2)
    plan = det._plan(*gray.shape)
    assert len(plan.batches) > 10 and all(b.offs is None for b in plan.batches)
    np.testing.assert_array_equal(det.raw(gray), want)


def test_rotation_tables_match_the_reference() -> None:
    from edge_fer.detect import scan

    published_cos = [
        256,
        251,
        236,
        212,
        181,
        142,
        97,
        49,
        0,
        -49,
        -97,
        -142,
        -181,
        -212,
        -236,
        -251,
        -256,
        -251,
        -236,
        -212,
        -181,
        -142,
        -97,
        -49,
        0,
        49,
        97,
        142,
        181,
        212,
        236,
        251,
        256,
    ]
    assert scan.QCOS.tolist() == published_cos
    assert scan.QSIN.tolist() == published_cos[24:32] + published_cos[:25]  # sin = cos - 1/4 turn
    assert [scan.angle_index(a) for a in (0.0, 0.03, 0.031249, 0.03125, 0.5, 1.0)] == [
        0,
        0,
        0,
        1,
        16,
        32,
    ]


def test_a_setting_changed_after_the_first_frame_applies(cascade: Cascade, gray) -> None:
    """The scan plan was kept per frame shape only: min_size set after a frame was ignored
    (a multi-angle detector's other scanners followed it, the upright one did not)."""
    d = Detector(cascade, min_size=24)
    d.detect(gray)
    d.min_size = 100
    fresh = Detector(cascade, min_size=100)
    assert d.grid(*gray.shape).windows == fresh.grid(*gray.shape).windows
    assert [(x.x, x.y, x.w) for x in d.detect(gray)] == [
        (x.x, x.y, x.w) for x in fresh.detect(gray)
    ]
    d.scale_factor = 1.3
    assert (
        d.grid(*gray.shape).windows
        == Detector(cascade, min_size=100, scale_factor=1.3).grid(*gray.shape).windows
    )
