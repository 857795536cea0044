"""Training images and windows.

All images live in one flat uint8 buffer (`ImageStore`) so the numba kernels can sample windows
from any of them. A window is `(r, c, s, img, sgn)`: integer centre row/column and size as the
pico runtime evaluates them, the image index, and `sgn` = +1, or -1 for the mirror image (the
column offsets of every pixel test are negated, which is exactly the test on the horizontally
flipped image at the flipped centre, with no flipped copy kept in memory).

Positives are the annotated faces, jittered in position and scale and mirrored afresh for every
stage (a seeded numpy Generator), so that later stages see new variations of the same faces.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_fer.cascade_train.annotations import AnnotatedImage, InputReport

MAX_IMAGE_SIDE = 8192


def read_gray(path: Path) -> np.ndarray | None:
    """Decode an image to grayscale like the runtime does (BGR -> gray); None if it fails."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        return None
    if img.dtype != np.uint8:  # 16-bit PNG/TIFF: scale to 8 bits
        img = (img.astype(np.float32) * (255.0 / max(float(img.max()), 1.0))).astype(np.uint8)
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
        elif img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        else:
            img = img[:, :, 0]
    if img.ndim != 2 or min(img.shape) < 2 or max(img.shape) > MAX_IMAGE_SIDE:
        return None
    return np.ascontiguousarray(img)


class ImageStore:
    """Grayscale images in one flat buffer: image i is pix[off[i]:off[i] + h[i]*w[i]]."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._shapes: list[tuple[int, int]] = []
        self.names: list[str] = []
        self._frozen: tuple | None = None

    def __len__(self) -> int:
        return len(self._shapes)

    def add_paths(self, paths: list[Path], report: InputReport, threads: int = 2) -> list[int]:
        """Decode and add images; returns the store index of each path (-1: did not decode)."""
        with ThreadPoolExecutor(max(1, threads)) as ex:
            imgs = list(ex.map(read_gray, paths))
        idx = []
        for p, im in zip(paths, imgs):
            if im is None:
                report.add("undecodable", str(p))
                idx.append(-1)
            else:
                idx.append(self.add(im, str(p)))
        return idx

    def add(self, img: np.ndarray, name: str = "") -> int:
        self._parts.append(np.ascontiguousarray(img, dtype=np.uint8).reshape(-1))
        self._shapes.append((int(img.shape[0]), int(img.shape[1])))
        self.names.append(name)
        self._frozen = None
        return len(self._shapes) - 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(pix uint8, off int64, h int32, w int32), built once and cached."""
        if self._frozen is None:
            sizes = np.array([h * w for h, w in self._shapes], dtype=np.int64)
            off = np.zeros(len(sizes), np.int64)
            if len(sizes):
                off[1:] = np.cumsum(sizes)[:-1]
            pix = np.concatenate(self._parts) if self._parts else np.zeros(1, np.uint8)
            self._parts = [pix[o : o + n] for o, n in zip(off, sizes)]  # views: no 2x memory
            h = np.array([s[0] for s in self._shapes], dtype=np.int32)
            w = np.array([s[1] for s in self._shapes], dtype=np.int32)
            self._frozen = (pix, off, h, w)
        return self._frozen

    def image(self, i: int) -> np.ndarray:
        h, w = self._shapes[i]
        if self._frozen is not None:
            pix, off, _, _ = self._frozen
            return pix[off[i] : off[i] + h * w].reshape(h, w)
        return self._parts[i].reshape(h, w)

    def shape(self, i: int) -> tuple[int, int]:
        return self._shapes[i]

    @property
    def megapixels(self) -> float:
        return sum(h * w for h, w in self._shapes) / 1e6


@dataclass
class FaceTable:
    """Usable faces for positives: image index and box (centre, size), float64."""

    img: np.ndarray
    row: np.ndarray
    col: np.ndarray
    size: np.ndarray

    def __len__(self) -> int:
        return int(self.img.shape[0])


@dataclass
class Windows:
    """A set of windows as the kernels take them (contiguous int32 columns)."""

    r: np.ndarray
    c: np.ndarray
    s: np.ndarray
    img: np.ndarray
    sgn: np.ndarray

    def __len__(self) -> int:
        return int(self.r.shape[0])

    @staticmethod
    def empty() -> Windows:
        z = np.zeros(0, np.int32)
        return Windows(z, z.copy(), z.copy(), z.copy(), z.copy())

    def take(self, idx: np.ndarray) -> Windows:
        return Windows(self.r[idx], self.c[idx], self.s[idx], self.img[idx], self.sgn[idx])

    @staticmethod
    def concat(parts: list[Windows]) -> Windows:
        if not parts:
            return Windows.empty()
        return Windows(
            *(
                np.ascontiguousarray(np.concatenate([getattr(p, f) for p in parts]), np.int32)
                for f in ("r", "c", "s", "img", "sgn")
            )
        )


def load_annotated(
    images: list[AnnotatedImage],
    store: ImageStore,
    report: InputReport,
    min_face: float,
    threads: int = 2,
) -> tuple[FaceTable, list[int], list[list[tuple[float, float, float]]]]:
    """Decode the annotated images into `store`; returns the usable faces, the store index of
    every decoded image and all its boxes (row, col, size; used to keep negatives off faces).

    Faces whose centre lies outside the image are counted 'outside_image'; faces smaller than
    `min_face` are counted 'too_small' (still kept out of negatives); an image that does not
    decode counts once as 'undecodable' and its faces are lost.
    """
    idx = store.add_paths([im.path for im in images], report, threads)
    fi, fr, fc, fs = [], [], [], []
    kept_imgs: list[int] = []
    kept_boxes: list[list[tuple[float, float, float]]] = []
    for im, k in zip(images, idx):
        if k < 0:
            continue
        h, w = store.shape(k)
        boxes = []
        for f in im.faces:
            if not (0 <= f.row < h and 0 <= f.col < w):
                report.add("outside_image", f"{im.path.name} ({f.col:.0f},{f.row:.0f})")
                continue
            boxes.append((f.row, f.col, f.size))
            if f.size < min_face:
                report.add("too_small", f"{im.path.name} ({f.size:.1f} px)")
                continue
            fi.append(k)
            fr.append(f.row)
            fc.append(f.col)
            fs.append(f.size)
        kept_imgs.append(k)
        kept_boxes.append(boxes)
    table = FaceTable(
        np.array(fi, np.int32),
        np.array(fr, np.float64),
        np.array(fc, np.float64),
        np.array(fs, np.float64),
    )
    return table, kept_imgs, kept_boxes


def jittered_positives(
    faces: FaceTable,
    rng: np.random.Generator,
    copies: int,
    pos_jitter: float,
    scale_jitter: float,
    min_size: int,
) -> Windows:
    """`copies` windows per face: centre moved by up to +-pos_jitter * size in each direction,
    size scaled by a log-uniform factor in [1/(1+scale_jitter), 1+scale_jitter]; copies
    alternate between the face and its mirror image, starting with a random one."""
    n = len(faces)
    k = max(1, int(copies))
    if n == 0:
        return Windows.empty()
    size = np.repeat(faces.size, k)
    ls = math.log1p(scale_jitter)
    s = size * np.exp(rng.uniform(-ls, ls, n * k))
    r = np.repeat(faces.row, k) + rng.uniform(-pos_jitter, pos_jitter, n * k) * size
    c = np.repeat(faces.col, k) + rng.uniform(-pos_jitter, pos_jitter, n * k) * size
    first = rng.integers(0, 2, n)
    sgn = 1 - 2 * ((np.repeat(first, k) + np.tile(np.arange(k), n)) % 2)
    si = np.maximum(np.rint(s), min_size).astype(np.int32)
    return Windows(
        np.rint(r).astype(np.int32),
        np.rint(c).astype(np.int32),
        si,
        np.repeat(faces.img, k).astype(np.int32),
        sgn.astype(np.int32),
    )
