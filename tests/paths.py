"""Where the tests find their inputs: the checkout, the bundled models and ../shared.

The shared data folder is ../shared beside the checkout; EDGE_FER_SHARED names another one
(point it at an empty folder to see every test that needs it skip with its reason). Tests say
what they need with the `shared` marker (see conftest.py) or, inside a test or at module level
before reading a file, with `shared(rel)`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGE_FER_SHARED") or ROOT.parent / "shared")

# Under SHARED.
FER = SHARED / "data" / "fer2013"
VIDEOS = SHARED / "data" / "videos"
WEBFACES = SHARED / "data" / "webfaces"
BACKGROUNDS = SHARED / "data" / "backgrounds"
FACEFINDER = SHARED / "reference" / "pico" / "facefinder"

# Bundled with the package.
ASSETS = ROOT / "edge_fer" / "assets"
FER_MODEL = ASSETS / "fer_default.onnx"
VERIFIER = ASSETS / "face_verify.onnx"
PICO = ASSETS / "face_default.pico"
CALIB = ROOT / "calibration" / "fer_default"


def missing_reason(*rels: str) -> str | None:
    """Why a test needing these paths under SHARED cannot run, or None when all exist."""
    missing = [rel for rel in rels if not (SHARED / rel).exists()]
    if not missing:
        return None
    where = "EDGE_FER_SHARED" if os.environ.get("EDGE_FER_SHARED") else "../shared"
    return f"{where} is absent or incomplete: needs " + ", ".join(str(SHARED / r) for r in missing)


def needs_modules(*names: str) -> pytest.MarkDecorator:
    """A mark that skips a test, as `pytest.importorskip` skips a module, when one of these
    modules cannot be imported: for a test that needs them in a module that runs without."""
    import importlib.util

    missing = [name for name in names if importlib.util.find_spec(name) is None]
    return pytest.mark.skipif(bool(missing), reason=f"could not import {', '.join(missing)}")


def shared(rel: str) -> Path:
    """SHARED / rel, or skip the test (or, at module level, the module) with the reason."""
    reason = missing_reason(rel)
    if reason:
        pytest.skip(reason, allow_module_level=True)
    return SHARED / rel


def fer_files(cls: str, prefix: str, k: int) -> list[Path]:
    """The first `k` FER2013 faces of class `cls` whose names start with `prefix` (Training,
    PublicTest or PrivateTest), in name order."""
    folder = "train" if prefix == "Training" else "test"
    files = sorted((FER / folder / cls).glob(f"{prefix}_*.jpg"))
    assert len(files) >= k, f"not enough {prefix} {cls} faces in {FER}"
    return files[:k]


def fer_class_folders(dst: Path, per_class: int) -> Path:
    """`per_class` real Training faces of every FER2013 class copied into `dst/<class>/`: a
    small one-folder-per-class dataset for training runs."""
    import shutil

    from edge_fer import labels as L

    for cls in L.FER2013:
        (dst / cls).mkdir(parents=True)
        for i, f in enumerate(fer_files(cls, "Training", per_class)):
            shutil.copy(f, dst / cls / f"face_{i:03d}.jpg")
    return dst


def fer_split_folders(root: Path, counts: dict[str, int]) -> Path:
    """A FER2013-layout dataset in `root` (train/ and test/ class folders) of real faces: the
    first `counts[prefix]` faces of every class for each prefix (Training, PublicTest,
    PrivateTest), file names kept, so the split is read from them as from FER2013's."""
    import shutil

    from edge_fer import labels as L

    for cls in L.FER2013:
        for prefix, k in counts.items():
            d = root / ("train" if prefix == "Training" else "test") / cls
            d.mkdir(parents=True, exist_ok=True)
            for f in fer_files(cls, prefix, k):
                shutil.copy(f, d / f.name)
    return root


def banded_faces(root: Path, per_class: int) -> Path:
    """`per_class` synthetic 48x48 faces of every FER2013 class in `root/<class>/`: noise
    with a bright band whose row tells the class (learnable, and needs no ../shared)."""
    import cv2
    import numpy as np

    from edge_fer import labels as L

    rng = np.random.default_rng(0)
    for k, cls in enumerate(L.FER2013):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 80, (48, 48)).astype(np.uint8)
            img[k * 6 : k * 6 + 6] += 150
            cv2.imwrite(str(root / cls / f"f{i}.png"), img)
    return root


def fer_faces(prefix: str, per_class: int):
    """(gray 48x48 faces, labels in FER2013 order, files): `fer_files` of every class, read
    directly (decoding a whole split would take longer than the tests)."""
    import cv2
    import numpy as np

    from edge_fer import labels as L

    picked = [(k, f) for k, cls in enumerate(L.FER2013) for f in fer_files(cls, prefix, per_class)]
    imgs = np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for _, f in picked])
    return imgs, np.array([k for k, _ in picked]), [f for _, f in picked]


def noise_faces(root: Path, n: int) -> Path:
    """A class-folders dataset of `n` 48x48 gray faces (seeded noise) in angry/, happy/ and
    sad/ folders, in turn."""
    import cv2
    import numpy as np

    classes = ("angry", "happy", "sad")
    rng = np.random.default_rng(3)
    for k in range(n):
        d = root / classes[k % len(classes)]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"f{k:03d}.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    return root


def black_png(path: Path, w: int, h: int) -> None:
    """A valid all-black 8-bit gray PNG of w x h, compressed row by row (a few hundred KB for
    144 Mpx, without ever holding the image)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    z = zlib.compressobj(9)
    row = bytes(w + 1)  # filter byte 0, then the pixels
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def random_photos(folder: Path, bad: bool = True) -> Path:
    """`folder`, made, with two photos of random pixels (a.png and c.png, 64x48) and, when `bad`,
    a zero-byte b.jpg between them."""
    import cv2
    import numpy as np

    folder.mkdir()
    for i, name in enumerate(("a.png", "c.png")):
        img = np.random.default_rng(i).integers(0, 256, (48, 64, 3), np.uint8)
        assert cv2.imwrite(str(folder / name), img)
    if bad:
        (folder / "b.jpg").write_bytes(b"")  # a zero-byte photo among good ones
    return folder


def cnn4_config(data, out, **kw):
    """The TrainConfig of a tiny cnn4 run of `data` into `out`: 1 epoch of 1 batch of 8 on one
    thread, no precise batch norm (`kw` changes these or adds to them)."""
    from edge_fer.train.trainer import TrainConfig

    kw = {"epochs": 1, "batch_size": 8, "threads": 1, "max_batches": 1, "precise_bn": 0, **kw}
    return TrainConfig(arch="cnn4", data=str(data), out=str(out), **kw)
