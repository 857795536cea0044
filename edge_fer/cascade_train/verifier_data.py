"""Training crops for the face verifier (`edge_fer.detect.verifier`), mined with the cascade it
will sit behind, so it learns the detections that cascade really makes.

    python -m edge_fer.cascade_train.verifier_data ../shared/data/webfaces \
        ../shared/data/backgrounds runs/verifier_data [--cascade face_lowres.pico] [--seed 0]

Each WebFaces *training* image (the validation split is never read) is shrunk to a random
longer side of 160-480 px and degraded as a cheap camera would (sensor noise, JPEG), then
scanned with the cascade's runtime settings (low threshold, greedy grouping). Every grouped
detection becomes a crop, labelled by its overlap with the annotated faces:
IoU >= 0.55 a face, < 0.3 not a face, in between a part (box regression only); detections on
faces under the cascade's smallest window are dropped. Jittered copies of each annotated box add
positives the cascade missed. The training backgrounds give the cascade's false positives on
scenes. Images are split by name: the last `--sel-fraction` of the training images and
backgrounds form a selection set (`sel.npz`) for choosing the epoch; the rest `train.npz`.

`--profile default` mines behind `face_default.pico` (frames of 240 px and up) as
`edge-fer detect` scans a photo (from 24 px): each training image is scaled so that its median
face is 20-120 px (log-uniform; group photos and cameras see faces that small) and degraded
mildly, and the training backgrounds are scanned as the scenes such frames show: 2x2 and 3x4
mosaics of 320x240 tiles (the seams included) and whole scenes at 240-720 px. Negatives come
first of all from those face-free scenes: WebFaces photos hold faces that are not annotated.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge_fer.imageio import read_or_none

POS_IOU, NEG_IOU = 0.55, 0.3


def degrade(
    gray: np.ndarray,
    side: int,
    rng: np.random.Generator,
    scale: float | None = None,
    noise: float = 6.0,
    quality: tuple[int, int] = (35, 95),
) -> tuple[np.ndarray, float]:
    """A low-resolution camera's view of `gray`: longer side `side` (or `scale` x, which may
    enlarge), noise up to sigma `noise`, JPEG at a quality in `quality`; and the scale."""
    k = min(1.0, side / max(gray.shape)) if scale is None else scale
    if abs(k - 1.0) > 1e-6:
        interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
        g = cv2.resize(gray, None, fx=k, fy=k, interpolation=interp)
    else:
        g = gray
    g = g.astype(np.float32) + rng.normal(0.0, rng.uniform(0.0, noise), g.shape)
    g = np.clip(g, 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", g, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(*quality))])
    return (cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE) if ok else g), k


# --profile default: faces of 20-120 px (median face of each image), scale clipped to this
FACE_PX = (20.0, 120.0)
SCALE_RANGE = (0.2, 2.0)
TILE = (240, 320)  # rows, cols of a mosaic tile (the held-out group photos are made so)


def scene(bgs: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A face-free frame as a camera of 240 px and up sees one: a 2x2 or 3x4 mosaic of scenes
    fit to 320x240 tiles, mirrored at random, or one whole scene, shorter side 240-720 px."""
    kind = rng.random()
    if kind < 0.4:
        b = bgs[int(rng.integers(len(bgs)))]
        k = rng.uniform(240, 720) / min(b.shape)
        interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
        return cv2.resize(b, None, fx=k, fy=k, interpolation=interp)
    gy, gx = (2, 2) if kind < 0.85 else (3, 4)
    th, tw = TILE
    tiles = []
    for _ in range(gy * gx):
        b = bgs[int(rng.integers(len(bgs)))]
        k = max(th / b.shape[0], tw / b.shape[1])
        if abs(k - 1) > 1e-6:
            interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
            b = cv2.resize(
                b,
                (max(tw, round(b.shape[1] * k)), max(th, round(b.shape[0] * k))),
                interpolation=interp,
            )
        y0, x0 = (b.shape[0] - th) // 2, (b.shape[1] - tw) // 2
        t = b[y0 : y0 + th, x0 : x0 + tw]
        tiles.append(t[:, ::-1] if rng.random() < 0.5 else t)
    return np.vstack([np.hstack(tiles[r * gx : (r + 1) * gx]) for r in range(gy)])


class Miner:
    """profile "lowres": images shrunk to 160-480 px, heavily degraded; "default": scaled so the
    median face is 20-120 px, mildly degraded, scanned from 24 px (see the module doc)."""

    def __init__(
        self, cascade: str | Path, seed: int, variants: int = 2, profile: str = "lowres"
    ) -> None:
        from edge_fer.detect import Cascade, cascade_settings
        from edge_fer.detect.detector import Detector

        cfg = cascade_settings(cascade)
        self.profile = profile
        self.min_face = float(cfg.get("min_face", 20 if profile == "lowres" else 24))
        self.det = Detector(
            Cascade.load(cascade),
            min_size=self.min_face,
            scale_factor=cfg.get("scale_factor", 1.1),
            threshold=0.0,
            grouping=cfg.get("grouping", "chain"),
            iou=cfg.get("cluster_iou", 0.3),
            max_detections=4096,
            threads=1,
        )
        self.rng = np.random.default_rng(seed)
        self.variants = variants
        self.crops: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.offsets: list[np.ndarray] = []

    def add(self, gray: np.ndarray, faces: np.ndarray, jitter: int = 2) -> None:
        from edge_fer.detect.verifier import crop_windows, offsets_to, square_iou

        for _ in range(self.variants):
            if self.profile == "scene":  # a composed face-free frame: as it is, mildly degraded
                g, k = degrade(gray, 0, self.rng, scale=1.0, noise=4.0, quality=(60, 96))
            elif self.profile == "default":
                ref = float(np.median(faces[:, 2])) if len(faces) else min(gray.shape) / 4
                want = np.exp(self.rng.uniform(*np.log(FACE_PX)))
                k = float(np.clip(want / max(ref, 1.0), *SCALE_RANGE))
                g, k = degrade(gray, 0, self.rng, scale=k, noise=4.0, quality=(60, 96))
            else:
                side = int(self.rng.integers(160, 481))
                g, k = degrade(gray, side, self.rng)
            f = faces * k if len(faces) else np.zeros((0, 3))
            dets = self.det.group(self.det.raw(g))[:, :3].astype(np.float64)
            ious = square_iou(dets, f)
            best = ious.argmax(axis=1) if f.size else np.zeros(len(dets), int)
            top = ious.max(axis=1) if f.size else np.zeros(len(dets))
            small = f[best, 2] < self.min_face if f.size else np.zeros(len(dets), bool)
            lab = np.where(top >= POS_IOU, 1, np.where(top < NEG_IOU, 0, -1)).astype(np.int8)
            keep = ~(small & (top >= NEG_IOU))
            dets, lab, best = dets[keep], lab[keep], best[keep]
            off = offsets_to(dets, f[best]) if f.size else np.zeros((len(dets), 3))
            off[lab == 0] = 0.0
            # jittered annotated boxes: small jitter teaches the faces the cascade missed, large
            # jitter the half-faces (a forehead, a chin) it finds next to them
            big = f[f[:, 2] >= self.min_face] if f.size else f
            if len(big) and jitter:
                j = np.repeat(big, 2 * jitter, axis=0)
                s = j[:, 2]
                amp = np.tile(np.r_[np.full(jitter, 0.1), np.full(jitter, 0.4)], len(big))
                jit = np.stack(
                    [
                        j[:, 0] + self.rng.uniform(-1, 1, len(j)) * amp * s,
                        j[:, 1] + self.rng.uniform(-1, 1, len(j)) * amp * s,
                        s * np.exp(self.rng.uniform(-1.5, 1.5, len(j)) * amp),
                    ],
                    axis=1,
                )
                ji = square_iou(jit, f)
                top, tgt = ji.max(axis=1), f[ji.argmax(axis=1)]
                jl = np.where(top >= POS_IOU, 1, np.where(top < NEG_IOU, 0, -1)).astype(np.int8)
                jo = offsets_to(jit, tgt)
                jo[jl == 0] = 0.0
                dets = np.vstack([dets, jit])
                lab = np.r_[lab, jl]
                off = np.vstack([off, jo])
            if len(dets):
                self.crops.append(crop_windows(g, dets))
                self.labels.append(lab)
                self.offsets.append(off.astype(np.float32))

    def save(self, path: Path) -> dict:
        x = np.concatenate(self.crops) if self.crops else np.zeros((0, 32, 32), np.uint8)
        y = np.concatenate(self.labels) if self.labels else np.zeros(0, np.int8)
        o = np.concatenate(self.offsets) if self.offsets else np.zeros((0, 3), np.float32)
        np.savez_compressed(path, x=x, y=y, offsets=o)
        return {
            "crops": len(y),
            "faces": int((y == 1).sum()),
            "parts": int((y == -1).sum()),
            "non_faces": int((y == 0).sum()),
        }


def mine(
    webfaces: str | Path,
    backgrounds: str | Path,
    out: str | Path,
    cascade: str | Path,
    seed: int = 0,
    sel_fraction: float = 0.1,
    limit: int = 0,
    profile: str = "lowres",
    scenes: int = 6,
) -> dict:
    from edge_fer.cascade_train.annotations import (
        list_images,
        read_webfaces,
        split_images,
        split_paths,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train = split_images(read_webfaces(webfaces)[0], "train")
    bgs = split_paths(list_images(backgrounds), "train")
    if limit:
        train, bgs = train[:limit], bgs[: max(1, limit // 20)]
    parts = {
        "train": (
            split_images(train, "train", sel_fraction),
            split_paths(bgs, "train", sel_fraction),
        ),
        "sel": (split_images(train, "val", sel_fraction), split_paths(bgs, "val", sel_fraction)),
    }
    report = {}
    for name, (ims, bg) in parts.items():
        m = Miner(cascade, seed + (name == "sel"), profile=profile)
        t0 = time.time()
        for i, im in enumerate(ims):
            g = read_or_none(im.path, cv2.IMREAD_GRAYSCALE)
            if g is None:
                continue
            m.add(
                g, np.array([[f.row, f.col, f.size] for f in im.faces], np.float64).reshape(-1, 3)
            )
            if i % 500 == 0:
                print(f"{name}: {i}/{len(ims)} images, {time.time() - t0:.0f} s", flush=True)
        m.variants = 6  # few scenes, many scales: the cascade's false positives come from them
        if profile == "default":
            # the frames are composed from the scenes as given (`scene`), then only noise/JPEG
            m.variants, m.profile = 1, "scene"
            imgs = [read_or_none(p, cv2.IMREAD_GRAYSCALE) for p in bg]
            imgs = [g for g in imgs if g is not None]
            for _ in range(scenes * len(imgs) if imgs else 0):
                m.add(scene(imgs, m.rng), np.zeros((0, 3)))
        else:
            for p in bg:
                g = read_or_none(p, cv2.IMREAD_GRAYSCALE)
                if g is not None:
                    m.add(g, np.zeros((0, 3)))
        report[name] = m.save(out / f"{name}.npz")
        print(f"{name}: {report[name]}", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("webfaces", help="WebFaces folder (images/ + WebFaces_GroundThruth.txt)")
    ap.add_argument("backgrounds", help="folder of face-free images")
    ap.add_argument("out", help="output folder (train.npz, sel.npz)")
    ap.add_argument(
        "--profile",
        choices=("lowres", "default"),
        default="lowres",
        help="the frames the verifier will see: lowres (under 240 px, behind face_lowres.pico) "
        "or default (240 px and up, behind face_default.pico)",
    )
    ap.add_argument(
        "--cascade", default=None, help="cascade to mine with (default: the profile's cascade)"
    )
    ap.add_argument(
        "--scenes", type=int, default=6, help="default profile: face-free frames per background"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sel-fraction", type=float, default=0.1)
    ap.add_argument("--limit", type=int, default=0, help="first N training images only (tests)")
    args = ap.parse_args(argv)
    from edge_fer.cascade_train.script import run_tool
    from edge_fer.detect import lowres_cascade_path
    from edge_fer.detect.config import default_cascade_path

    def work() -> None:
        profile_cascade = lowres_cascade_path if args.profile == "lowres" else default_cascade_path
        mine(
            args.webfaces,
            args.backgrounds,
            args.out,
            args.cascade or profile_cascade(),
            args.seed,
            args.sel_fraction,
            args.limit,
            args.profile,
            args.scenes,
        )

    return run_tool("verifier_data", work)


if __name__ == "__main__":
    sys.exit(main())
