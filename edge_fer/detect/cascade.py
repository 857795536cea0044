"""Pico cascade files: load, validate, save.

Layout (little-endian): 8 header bytes the runtime ignores (kept verbatim so that a
load/save round trip is byte-identical), int32 `tdepth`, int32 `ntrees`, then per tree
`2^tdepth - 1` nodes of 4 int8 (r1 c1 r2 c2), `2^tdepth` float32 leaves, 1 float32 threshold.
Every check happens before any array is built, so a hostile file can only raise CascadeError.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass, field

import numpy as np

from edge_fer.detect.config import _reason  # the one-line reason, as for its settings
from edge_fer.errors import UserError

HEADER_BYTES = 16
MAX_TDEPTH = 16  # pico cascades use 5-6; 2^16 leaves per tree is already absurd
MAX_NTREES = 1 << 20
MAX_FILE_BYTES = 64 << 20  # facefinder is 240 KB; the kernels precompute 2x this per size
# the largest score a window may reach (the sum over trees of each tree's largest |leaf|):
# pooled clusters add up to ~1e7 float32 window scores (frames x windows), which must stay far
# below float32's 3.4e38; real cascades reach a few hundred
MAX_SCORE = 1e24


class CascadeError(UserError):
    """A cascade file that cannot be used (missing, truncated, malformed)."""


def tree_bytes(tdepth: int) -> int:
    """Bytes one tree of depth `tdepth` takes in the file."""
    return 4 * ((1 << tdepth) - 1) + 4 * (1 << tdepth) + 4


@dataclass(eq=False)
class Cascade:
    """A pico cascade held as flat, contiguous arrays ready for the scanning kernels.

    codes: int8 (ntrees, 2^tdepth - 1, 4); node i (1-based in the tree) is codes[t, i - 1].
    leaves: float32 (ntrees, 2^tdepth); thresholds: float32 (ntrees,).
    """

    tdepth: int
    codes: np.ndarray
    leaves: np.ndarray
    thresholds: np.ndarray
    header: bytes = b"\0" * 8
    source: str = field(default="<memory>")

    def __post_init__(self) -> None:
        if isinstance(self.tdepth, bool):  # True was a depth of 1
            raise CascadeError(f"must be an integer, got {self.tdepth!r}", param="tdepth")
        self.codes = _int8_codes(self.codes)
        self.leaves = _float32s(self.leaves, "leaves")
        self.thresholds = _float32s(self.thresholds, "thresholds")
        _check_arrays(self.tdepth, self.codes, self.leaves, self.thresholds, self.source)
        if not isinstance(self.header, bytes):  # a str failed only in to_bytes / save
            raise CascadeError(f"must be 8 bytes, got {type(self.header).__name__}", param="header")
        if len(self.header) != 8:
            raise CascadeError(f"{self.source}: header must be 8 bytes, got {len(self.header)}")

    @property
    def ntrees(self) -> int:
        return int(self.thresholds.shape[0])

    @property
    def nbytes(self) -> int:
        return HEADER_BYTES + self.ntrees * tree_bytes(self.tdepth)

    # ---- file I/O -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> Cascade:
        """Read and validate a pico cascade file; raises CascadeError with a one-line reason."""
        if not isinstance(path, (str, os.PathLike)):
            # an int was taken for a file descriptor, and open() closed the caller's
            raise CascadeError(f"cascade path must be a file name, got {type(path).__name__}")
        name = str(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise CascadeError(f"cascade file not found: {name}") from None
        except (OSError, ValueError) as exc:  # a NUL byte in the name, a name too long, ...
            raise CascadeError(f"cannot read cascade {name}: {_reason(exc)}") from None
        if not stat.S_ISREG(st.st_mode):
            raise CascadeError(f"cascade path is not a file: {name}")
        if st.st_size > MAX_FILE_BYTES:
            raise CascadeError(f"{name}: {st.st_size} bytes is too large for a pico cascade")
        try:
            with open(path, "rb") as fh:  # bounded: the file may grow after the stat
                data = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise CascadeError(f"cannot read cascade {name}: {_reason(exc)}") from None
        if len(data) > MAX_FILE_BYTES:
            raise CascadeError(f"{name}: too large for a pico cascade")
        return cls.from_bytes(data, source=name)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> Cascade:
        """A cascade from a pico file's contents (bytes, bytearray or memoryview)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):  # a str: a TypeError in len()
            raise CascadeError(
                f"must be the bytes of a pico cascade, got {type(data).__name__}", param="data"
            )
        if isinstance(data, memoryview):
            try:  # len() and the offsets below count bytes
                data = data.cast("B")
            except TypeError as exc:  # not contiguous
                raise CascadeError(f"cannot be read as bytes ({exc})", param="data") from None
        n = len(data)
        if n < HEADER_BYTES:
            raise CascadeError(
                f"{source}: not a pico cascade (truncated: {n} bytes, the header alone is 16)"
            )
        header = bytes(data[:8])
        tdepth, ntrees = struct.unpack_from("<ii", data, 8)
        if not 1 <= tdepth <= MAX_TDEPTH:
            raise CascadeError(
                f"{source}: not a pico cascade (tree depth {tdepth}, expected 1..{MAX_TDEPTH})"
            )
        if not 1 <= ntrees <= MAX_NTREES:
            raise CascadeError(
                f"{source}: not a pico cascade (tree count {ntrees}, expected 1..{MAX_NTREES})"
            )
        per_tree = tree_bytes(tdepth)
        expected = HEADER_BYTES + ntrees * per_tree
        if n != expected:
            what = "truncated" if n < expected else "trailing bytes"
            raise CascadeError(
                f"{source}: not a pico cascade ({what}: {n} bytes, but depth {tdepth} and "
                f"{ntrees} trees need {expected})"
            )
        nnodes = (1 << tdepth) - 1
        nleaves = 1 << tdepth
        # one structured view over all trees: no per-tree Python loop, no out-of-range slicing
        tree_t = np.dtype(
            [("codes", "i1", (nnodes, 4)), ("leaves", "<f4", (nleaves,)), ("thr", "<f4")]
        )
        assert tree_t.itemsize == per_tree
        trees = np.frombuffer(data, dtype=tree_t, count=ntrees, offset=HEADER_BYTES)
        return cls(
            tdepth=tdepth,
            codes=trees["codes"].copy(),
            leaves=trees["leaves"].astype(np.float32),
            thresholds=trees["thr"].astype(np.float32),
            header=header,
            source=source,
        )

    def to_bytes(self) -> bytes:
        nnodes = (1 << self.tdepth) - 1
        tree_t = np.dtype(
            [
                ("codes", "i1", (nnodes, 4)),
                ("leaves", "<f4", (1 << self.tdepth,)),
                ("thr", "<f4"),
            ]
        )
        trees = np.empty(self.ntrees, dtype=tree_t)
        trees["codes"] = self.codes
        trees["leaves"] = self.leaves
        trees["thr"] = self.thresholds
        return self.header + struct.pack("<ii", self.tdepth, self.ntrees) + trees.tobytes()

    def save(self, path: str | os.PathLike) -> None:
        from edge_fer.fileio import write_bytes

        # None or an int was a TypeError, "" a ValueError ("PosixPath('.') has an empty name")
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise CascadeError(f"must be a file name, got {path!r}", param="path")
        try:
            write_bytes(path, self.to_bytes())
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
            raise CascadeError(f"cannot write cascade {path}: {_reason(exc)}") from None

    def __repr__(self) -> str:
        return f"Cascade(source={self.source!r}, tdepth={self.tdepth}, ntrees={self.ntrees})"


def _numbers(values, param: str) -> np.ndarray:
    """`values` as a numeric array; CascadeError naming `param` for strings, objects, booleans."""
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:  # ragged lists
        raise CascadeError(f"must be an array of numbers ({_reason(exc)})", param=param) from None
    if arr.dtype.kind not in "iuf":
        raise CascadeError(f"must be an array of numbers, got dtype {arr.dtype}", param=param)
    return arr


def _int8_codes(codes) -> np.ndarray:
    """The node codes (pixel offsets in 1/256 of the window): whole numbers in -128..127.
    numpy's cast wrapped 200 to -56, truncated 1.5 and turned NaN into 0, a different cascade
    without a word."""
    arr = _numbers(codes, "codes")
    if arr.size:
        wide = arr.astype(np.float64)
        bad = ~np.isfinite(wide) | (wide != np.round(wide)) | (wide < -128) | (wide > 127)
        if bad.any():
            v = arr.flat[int(np.flatnonzero(bad.ravel())[0])]
            raise CascadeError(f"must be whole numbers in -128..127, got {v}", param="codes")
    return np.ascontiguousarray(arr, dtype=np.int8)


def _float32s(values, param: str) -> np.ndarray:
    """`values` as float32; a value beyond float32's range stays inf (refused by _check_arrays
    as non-finite) without numpy's overflow warning."""
    arr = _numbers(values, param)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(arr, dtype=np.float32)


def _check_arrays(
    tdepth: int, codes: np.ndarray, leaves: np.ndarray, thr: np.ndarray, source: str
) -> None:
    if not isinstance(tdepth, (int, np.integer)) or not 1 <= tdepth <= MAX_TDEPTH:
        raise CascadeError(f"{source}: tree depth {tdepth!r} outside 1..{MAX_TDEPTH}")
    ntrees = thr.shape[0] if thr.ndim == 1 else -1
    if not 1 <= ntrees <= MAX_NTREES:
        raise CascadeError(f"{source}: tree count {ntrees} outside 1..{MAX_NTREES}")
    nnodes, nleaves = (1 << tdepth) - 1, 1 << tdepth
    if codes.shape != (ntrees, nnodes, 4) or leaves.shape != (ntrees, nleaves):
        raise CascadeError(
            f"{source}: array shapes {codes.shape}, {leaves.shape}, {thr.shape} do not fit "
            f"depth {tdepth} and {ntrees} trees"
        )
    # NaN/inf would make every comparison false and silently change which windows pass
    bad_leaf = ~np.isfinite(leaves)
    if bad_leaf.any():
        t = int(np.argwhere(bad_leaf)[0][0])
        raise CascadeError(f"{source}: tree {t} has a non-finite leaf value")
    bad_thr = ~np.isfinite(thr)
    if bad_thr.any():
        t = int(np.flatnonzero(bad_thr)[0])
        raise CascadeError(f"{source}: tree {t} has a non-finite threshold ({thr[t]})")
    # a window's score is a float32 sum of one leaf per tree, and clustering and the frame
    # memory add up to millions of those: bound the largest possible score so no sum overflows
    # into inf (which would end up in JSON and break the tracker)
    reach = float(np.abs(leaves.astype(np.float64)).max(axis=1).sum())
    if reach > MAX_SCORE:
        raise CascadeError(
            f"{source}: leaf values can sum to {reach:.3g}, beyond the {MAX_SCORE:g} a window "
            "score may reach (float32 sums would overflow)"
        )
