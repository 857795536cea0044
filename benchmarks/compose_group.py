"""Group photos composed in memory: WebFaces faces, many of them small, pasted onto face-free
scenes (`../shared/data/backgrounds`), with their boxes. Nothing is written to disk.

    from compose_group import compose, face_sources
    sources = face_sources(annotated_images)          # faces fit to paste (cropped with context)
    photos = compose(sources, background_paths, n=60, seed=0)   # [(bgr, [Face, ...]), ...]

Each photo is a mosaic of backgrounds (each fit-cropped to 320x240 and mirrored at random: the
held-out backgrounds are that small, and are not enlarged; 2x2 tiles make 640x480, 3x4 make
1280x720) with 4-12 faces per four tiles: three in four of side 20-60 px,
the rest 60-120 px (log-uniform), none overlapping another's surroundings. A face is cut from
its photo as a square 2.2x its box (so hair, chin and a little neck come with it; mirrored
where that runs off the photo, whose own pixels must hold the box), shrunk with
area averaging and blended in with a feathered disc that is opaque over the whole box. Boxes
follow the project's rule (`edge_fer.cascade_train.annotations.webfaces_box`), scaled with the
face. Faces are cut only from photos whose other annotated faces lie outside the cut, so no
unannotated half face comes along. Backgrounds are grayscale scenes, so the photos are too
(returned as 3-channel BGR, as a camera frame would be).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from common import feathered_disc

from edge_fer.cascade_train.annotations import AnnotatedImage, Face

CONTEXT = 2.2  # side of the pasted square / face box side
SMALL = (20.0, 60.0)  # face box sides, px: three faces in four
LARGE = (60.0, 120.0)
SMALL_SHARE = 0.75
FACES_PER_PHOTO = (4, 12)
MIN_SOURCE = 40.0  # faces smaller than this in their photo are too blurry to paste
TILE = (240, 320)  # rows, cols of each background in the 2x2 mosaic


@dataclass
class Source:
    """A face ready to paste: a grayscale square cut around it and its box within the cut."""

    patch: np.ndarray  # uint8 (S, S)
    face: Face  # in patch coordinates
    name: str  # the photo it came from


def face_sources(images: list[AnnotatedImage], min_size: float = MIN_SOURCE) -> list[Source]:
    """Every annotated face of `images` that is at least `min_size` px and whose cut (CONTEXT x
    its box) holds no other annotated face's centre and stays inside the photo."""
    out = []
    for im in images:
        big = [f for f in im.faces if f.size >= min_size]
        if not big:
            continue
        g = cv2.imread(str(im.path), cv2.IMREAD_GRAYSCALE)
        if g is None:
            continue
        h, w = g.shape
        for f in big:
            half = CONTEXT * f.size / 2
            y0, x0 = math.floor(f.row - half), math.floor(f.col - half)
            side = math.ceil(2 * half)
            inner = 0.65 * f.size  # the box and a margin must be the photo's own pixels
            if min(f.row - inner, f.col - inner) < 0 or f.row + inner > h or f.col + inner > w:
                continue
            others = [
                o
                for o in im.faces
                if o is not f
                and abs(o.row - f.row) < half + o.size / 2
                and abs(o.col - f.col) < half + o.size / 2
            ]
            if others:
                continue
            pads = (max(0, -y0), max(0, y0 + side - h), max(0, -x0), max(0, x0 + side - w))
            patch = g[max(y0, 0) : y0 + side, max(x0, 0) : x0 + side]
            if any(pads):  # the surroundings run off the photo: mirror what is there
                patch = cv2.copyMakeBorder(patch, *pads, cv2.BORDER_REFLECT_101)
            patch = np.ascontiguousarray(patch)
            out.append(Source(patch, Face(f.row - y0, f.col - x0, f.size), im.name))
    return out


def _face_side(rng: np.random.Generator) -> float:
    lo, hi = SMALL if rng.random() < SMALL_SHARE else LARGE
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _tile(bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`bg` fit to TILE (scaled to cover it, the middle kept), mirrored at random."""
    th, tw = TILE
    k = max(th / bg.shape[0], tw / bg.shape[1])
    if abs(k - 1) > 1e-6:
        interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
        bg = cv2.resize(
            bg,
            (max(tw, round(bg.shape[1] * k)), max(th, round(bg.shape[0] * k))),
            interpolation=interp,
        )
    y0, x0 = (bg.shape[0] - th) // 2, (bg.shape[1] - tw) // 2
    t = bg[y0 : y0 + th, x0 : x0 + tw]
    return t[:, ::-1] if rng.random() < 0.5 else t


def compose(
    sources: list[Source], backgrounds: list, n: int, seed: int = 0, grid: tuple = (2, 2)
) -> list[tuple[np.ndarray, list[Face]]]:
    """`n` photos (BGR uint8, faces), seeded. backgrounds: image paths (cycled through in a
    seeded order). grid: tiles down and across (2x2: 640x480; 3x4: 1280x720), with faces in
    proportion (4-12 per four tiles)."""
    if not sources or not backgrounds:
        raise ValueError("compose needs face sources and backgrounds")
    rng = np.random.default_rng(seed)
    bgs = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in backgrounds]
    bgs = [b for b in bgs if b is not None]
    order = rng.permutation(len(bgs))
    photos = []
    for i in range(n):
        gy, gx = grid
        k0 = gy * gx * i
        tiles = [_tile(bgs[order[(k0 + j) % len(bgs)]], rng) for j in range(gy * gx)]
        rows = [np.hstack(tiles[r * gx : (r + 1) * gx]) for r in range(gy)]
        canvas = np.vstack(rows).astype(np.float32)
        h, w = canvas.shape
        lo, hi = (round(v * gy * gx / 4) for v in FACES_PER_PHOTO)
        want = int(rng.integers(lo, hi + 1))
        placed: list[Face] = []
        for _ in range(want):
            t = _face_side(rng)
            side = max(3, round(CONTEXT * t))
            if side >= min(h, w):
                continue
            ok = False
            for _try in range(60):  # a free spot: no overlap with another face's surroundings
                y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
                cy, cx = y + side / 2, x + side / 2
                if all(
                    abs(cy - f.row) > (side + CONTEXT * f.size) / 2 * 0.8
                    or abs(cx - f.col) > (side + CONTEXT * f.size) / 2 * 0.8
                    for f in placed
                ):
                    ok = True
                    break
            if not ok:
                continue
            src = sources[int(rng.integers(len(sources)))]
            k = side / src.patch.shape[0]
            interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
            patch = cv2.resize(src.patch, (side, side), interpolation=interp).astype(np.float32)
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
                fc = side - src.face.col * k
            else:
                fc = src.face.col * k
            # a little exposure difference between people, as in a real group photo
            patch = np.clip(patch * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15), 0, 255)
            a = feathered_disc(side)
            roi = canvas[y : y + side, x : x + side]
            roi[:] = a * patch + (1 - a) * roi
            placed.append(Face(row=y + src.face.row * k, col=x + fc, size=src.face.size * k))
        noisy = canvas + rng.normal(0, 2.0, canvas.shape).astype(np.float32)
        gray = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
        photos.append((cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), placed))
    return photos
