"""Cascade files: exact round trip, and no file can crash the loader or the scanner."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from paths import FACEFINDER

from edge_fer.detect import Cascade, CascadeError, Detector
from edge_fer.detect.cascade import HEADER_BYTES, tree_bytes
from edge_fer.errors import UserError

needs_shared = pytest.mark.shared("reference/pico/facefinder")


def make_bytes(tdepth: int, ntrees: int, seed: int = 0, thr: float = -1.0) -> bytes:
    rng = np.random.default_rng(seed)
    body = b""
    for _ in range(ntrees):
        body += rng.integers(-128, 128, 4 * ((1 << tdepth) - 1), dtype=np.int8).tobytes()
        body += rng.standard_normal(1 << tdepth).astype("<f4").tobytes()
        body += struct.pack("<f", thr)
    return b"\0" * 8 + struct.pack("<ii", tdepth, ntrees) + body


def test_is_user_error() -> None:
    assert issubclass(CascadeError, UserError)


@needs_shared
def test_facefinder_round_trip_is_byte_identical(tmp_path: Path) -> None:
    casc = Cascade.load(FACEFINDER)
    assert (casc.tdepth, casc.ntrees) == (6, 468)
    assert casc.codes.shape == (468, 63, 4) and casc.leaves.shape == (468, 64)
    out = tmp_path / "copy"
    casc.save(out)
    assert out.read_bytes() == FACEFINDER.read_bytes()
    again = Cascade.load(out)
    np.testing.assert_array_equal(again.leaves, casc.leaves)


def test_synthetic_round_trip(tmp_path: Path) -> None:
    data = make_bytes(3, 5)
    casc = Cascade.from_bytes(data)
    assert casc.tdepth == 3 and casc.ntrees == 5 and casc.nbytes == len(data)
    assert casc.to_bytes() == data


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "truncated"),
        (b"\0" * 15, "truncated"),
        (b"\0" * 8 + struct.pack("<ii", 0, 1), "tree depth 0"),
        (b"\0" * 8 + struct.pack("<ii", 30, 1), "tree depth 30"),
        (b"\0" * 8 + struct.pack("<ii", -6, 1), "tree depth -6"),
        (b"\0" * 8 + struct.pack("<ii", 6, 0), "tree count 0"),
        (b"\0" * 8 + struct.pack("<ii", 6, -468), "tree count -468"),
        (b"\0" * 8 + struct.pack("<ii", 6, 2**31 - 1), "tree count"),
        (b"\0" * 8 + struct.pack("<ii", 6, 1_000_000), "truncated"),
        (make_bytes(2, 3) + b"\0", "trailing bytes"),
        (make_bytes(2, 3, thr=float("nan")), "non-finite threshold"),
        (make_bytes(2, 3, thr=float("inf")), "non-finite threshold"),
    ],
)
def test_bad_files_raise_clear_errors(data: bytes, words: str) -> None:
    with pytest.raises(CascadeError, match=words) as exc:
        Cascade.from_bytes(data, source="bad")
    assert "\n" not in str(exc.value)


def test_nan_leaf() -> None:
    data = bytearray(make_bytes(2, 3))
    leaf0 = HEADER_BYTES + tree_bytes(2) + 4 * 3  # first leaf of tree 1
    data[leaf0 : leaf0 + 4] = struct.pack("<f", float("nan"))
    with pytest.raises(CascadeError, match="tree 1 has a non-finite leaf"):
        Cascade.from_bytes(bytes(data))


@needs_shared
def test_truncated_facefinder_everywhere() -> None:
    data = FACEFINDER.read_bytes()
    cuts = list(range(64)) + list(range(64, len(data), 997)) + [len(data) - 1]
    for n in cuts:
        with pytest.raises(CascadeError):
            Cascade.from_bytes(data[:n])


def test_random_bytes_never_crash() -> None:
    rng = np.random.default_rng(1)
    for i in range(500):
        n = int(rng.integers(0, 4096))
        blob = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        if i % 2:  # a plausible header in front makes the size checks do the work
            blob = (
                b"\0" * 8
                + struct.pack("<ii", int(rng.integers(1, 8)), int(rng.integers(1, 50)))
                + blob
            )
        try:
            Cascade.from_bytes(blob)
        except CascadeError:
            pass


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(CascadeError, match="not found"):
        Cascade.load(tmp_path / "missing")
    with pytest.raises(CascadeError, match="not a file"):
        Cascade.load(tmp_path)
    (tmp_path / "tiny").write_bytes(b"pico")
    with pytest.raises(CascadeError, match="truncated"):
        Cascade.load(tmp_path / "tiny")


def extreme_cascade(seed: int, tdepth: int = 3, ntrees: int = 3) -> Cascade:
    """Offsets at the int8 extremes, thresholds that let every window through every tree."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(np.array([-128, -127, 0, 126, 127], np.int8), (ntrees, (1 << tdepth) - 1, 4))
    return Cascade(
        tdepth=tdepth,
        codes=codes,
        leaves=rng.standard_normal((ntrees, 1 << tdepth)),
        thresholds=np.full(ntrees, -1e30),
    )


@pytest.mark.parametrize("angle", [0.0, 0.03, 0.125, 0.3, 0.5, 0.77, 1.0])
def test_scanning_never_reads_outside_the_frame(angle: float) -> None:
    """Run the kernels as plain Python: numpy raises on any index outside the frame."""
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (23, 29), dtype=np.uint8)
    for seed in range(3):
        casc = extreme_cascade(seed)
        det = Detector(casc, min_size=1, max_size=29, scale_factor=1.5, angle=angle)
        det._interpreted = True
        raw = det.raw(frame)
        det._interpreted = False
        np.testing.assert_array_equal(det.raw(frame), raw)  # compiled == interpreted
        assert raw.shape[0] > 0  # every in-bounds window passes: the edges were exercised


def test_random_valid_cascades_scan_safely() -> None:
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    for seed in range(12):
        casc = Cascade.from_bytes(
            make_bytes(int(rng.integers(1, 7)), int(rng.integers(1, 20)), seed)
        )
        for angle in (0.0, 0.4):
            faces = Detector(casc, min_size=8, angle=angle, threshold=-1e9).detect(frame)
            assert all(0 <= f.row < 48 and 0 <= f.col < 64 for f in faces)


def test_load_takes_names_not_descriptors(tmp_path) -> None:
    """Cascade.load(f.fileno()) read through the caller's descriptor and closed it."""
    with open(tmp_path / "notes.txt", "w") as f:
        for bad in (f.fileno(), None, 3.5):
            with pytest.raises(CascadeError, match="must be a file name"):
                Cascade.load(bad)  # type: ignore[arg-type]
        f.write("still open")
    assert (tmp_path / "notes.txt").read_text() == "still open"
