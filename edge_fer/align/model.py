"""The eye model file: a small little-endian binary, read with checks (no pickle, no code).

Layout (all little-endian):

    8 bytes   magic b"EFEYES1\\n"
    uint32    n_stages, trees_per_stage, depth, n_starts, face_px, patch_px
    float32   init_r, init_c          left-eye start, face-size units from the face centre
    float32   max_spread              confidence: spread of the starts, fraction of eye distance
    float32   min_dist, max_dist      eye distance / face size accepted
    float32   max_angle               |eye-line angle| accepted, degrees
    float32   scales[n_stages]        patch pixels per stage (offsets: scale/256 units)
    float32   starts[n_starts, 3]     dr, dc (face-size units), scale factor
    int8      tests[n_trees, 2^depth - 1, 4]
    float32   leaves[n_trees, 2^depth, 2]   dr, dc in units of the scale
    uint32    crc32 of everything before it

n_trees = n_stages * trees_per_stage. The face box is resampled to a patch_px square patch in
which the face is face_px wide and centred; the localiser works in that patch.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_fer.errors import UserError
from edge_fer.fileio import os_error_reason, write_bytes

MAGIC = b"EFEYES1\n"
_HEAD = struct.Struct("<6I6f")
MAX_FILE = 16 << 20  # a real model is ~100 KB; refuse to read a large file whole
LIMITS = {"n_stages": 64, "trees_per_stage": 256, "depth": 12, "n_starts": 256, "patch_px": 512}


@dataclass
class EyeModel:
    tests: np.ndarray  # int8 (n_trees, 2^depth - 1, 4)
    leaves: np.ndarray  # float32 (n_trees, 2^depth, 2)
    scales: np.ndarray  # float32 (n_stages,)
    starts: np.ndarray  # float32 (n_starts, 3)
    trees_per_stage: int
    depth: int
    face_px: int = 64
    patch_px: int = 128
    init: tuple[float, float] = (-0.17, -0.17)
    max_spread: float = 0.15
    min_dist: float = 0.2
    max_dist: float = 0.6
    max_angle: float = 35.0

    @property
    def n_trees(self) -> int:
        return int(self.tests.shape[0])

    @property
    def stage_of(self) -> np.ndarray:
        return (np.arange(self.n_trees) // self.trees_per_stage).astype(np.int64)

    def to_bytes(self) -> bytes:
        head = _HEAD.pack(
            len(self.scales), self.trees_per_stage, self.depth, len(self.starts),
            self.face_px, self.patch_px, *self.init, self.max_spread, self.min_dist,
            self.max_dist, self.max_angle,
        )  # fmt: skip
        body = b"".join(
            np.ascontiguousarray(a, dt).tobytes()
            for a, dt in (
                (self.scales, "<f4"),
                (self.starts, "<f4"),
                (self.tests, "i1"),
                (self.leaves, "<f4"),
            )
        )
        data = MAGIC + head + body
        return data + struct.pack("<I", zlib.crc32(data) & 0xFFFFFFFF)

    def save(self, path: str | os.PathLike) -> None:
        try:
            write_bytes(path, self.to_bytes())
        except OSError as exc:
            raise UserError(f"cannot write {path}: {os_error_reason(exc)}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> EyeModel:
        p = Path(path)
        try:
            if p.is_dir():
                raise UserError(f"{p}: a folder, not an eye model file")
            if p.exists() and not p.is_file():  # a pipe: the open would wait for a writer
                raise UserError(f"{p}: not a regular file, not an eye model file")
            with open(p, "rb") as fh:
                data = fh.read(MAX_FILE + 1)
        except FileNotFoundError:
            raise UserError(f"{p}: no such eye model file") from None
        except OSError as exc:
            raise UserError(f"{p}: cannot read ({os_error_reason(exc)})") from None
        return cls.from_bytes(data, str(p))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> EyeModel:
        def bad(why: str) -> UserError:
            return UserError(f"{source}: not an edge-fer eye model ({why})")

        if len(data) > MAX_FILE:
            raise bad("file too large")
        if not data.startswith(MAGIC):
            raise bad("wrong magic bytes")
        if len(data) < len(MAGIC) + _HEAD.size + 4:
            raise bad("truncated header")
        (crc,) = struct.unpack_from("<I", data, len(data) - 4)
        if zlib.crc32(data[:-4]) & 0xFFFFFFFF != crc:
            raise bad("checksum mismatch: damaged or truncated")
        vals = _HEAD.unpack_from(data, len(MAGIC))
        n_stages, per, depth, n_starts, face_px, patch_px = vals[:6]
        init_r, init_c, max_spread, min_dist, max_dist, max_angle = vals[6:]
        for name, v in zip(("n_stages", "trees_per_stage", "depth", "n_starts"), vals[:4]):
            if not 1 <= v <= LIMITS[name]:
                raise bad(f"{name} {v} out of range 1..{LIMITS[name]}")
        if not 8 <= face_px <= patch_px <= LIMITS["patch_px"]:
            raise bad(f"face_px {face_px} / patch_px {patch_px} out of range")
        floats = (init_r, init_c, max_spread, min_dist, max_dist, max_angle)
        if not all(np.isfinite(floats)) or not 0 < min_dist < max_dist or max_spread <= 0:
            raise bad("bad header values")
        n_trees, nint, nleaf = n_stages * per, 2**depth - 1, 2**depth
        shapes = [
            ("scales", (n_stages,), "<f4"),
            ("starts", (n_starts, 3), "<f4"),
            ("tests", (n_trees, nint, 4), "i1"),
            ("leaves", (n_trees, nleaf, 2), "<f4"),
        ]
        need = (
            len(MAGIC)
            + _HEAD.size
            + sum(int(np.prod(s)) * np.dtype(d).itemsize for _, s, d in shapes)
        )
        if len(data) - 4 != need:
            raise bad(f"size {len(data)} bytes, the header implies {need + 4}")
        off = len(MAGIC) + _HEAD.size
        arrs: dict[str, np.ndarray] = {}
        for name, shape, dt in shapes:
            n = int(np.prod(shape)) * np.dtype(dt).itemsize
            a = np.frombuffer(data, dt, count=int(np.prod(shape)), offset=off).reshape(shape)
            arrs[name] = a.astype(np.float32 if dt == "<f4" else np.int8)
            off += n
        for name in ("scales", "starts", "leaves"):
            if not np.isfinite(arrs[name]).all():
                raise bad(f"non-finite {name}")
        if (arrs["scales"] <= 0).any() or (arrs["starts"][:, 2] <= 0).any():
            raise bad("scales must be positive")
        return cls(
            tests=arrs["tests"], leaves=arrs["leaves"], scales=arrs["scales"],
            starts=arrs["starts"], trees_per_stage=per, depth=depth, face_px=face_px,
            patch_px=patch_px, init=(init_r, init_c), max_spread=max_spread, min_dist=min_dist,
            max_dist=max_dist, max_angle=max_angle,
        )  # fmt: skip
