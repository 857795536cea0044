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
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

POS_IOU, NEG_IOU = 0.55, 0.3


def degrade(gray: np.ndarray, side: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A low-resolution camera's view of `gray`: longer side `side`, noise, JPEG; and the scale."""
    k = min(1.0, side / max(gray.shape))
    g = cv2.resize(gray, None, fx=k, fy=k, interpolation=cv2.INTER_AREA) if k < 1 else gray
    g = g.astype(np.float32) + rng.normal(0.0, rng.uniform(0.0, 6.0), g.shape)
    g = np.clip(g, 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", g, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 95))])
    return (cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE) if ok else g), k


class Miner:
    def __init__(self, cascade: str | Path, seed: int, variants: int = 2) -> None:
        from edge_fer.detect import Cascade, cascade_settings
        from edge_fer.detect.detector import Detector

        cfg = cascade_settings(cascade)
        self.min_face = float(cfg.get("min_face", 20))
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
        m = Miner(cascade, seed + (name == "sel"))
        t0 = time.time()
        for i, im in enumerate(ims):
            g = cv2.imread(str(im.path), cv2.IMREAD_GRAYSCALE)
            if g is None:
                continue
            m.add(
                g, np.array([[f.row, f.col, f.size] for f in im.faces], np.float64).reshape(-1, 3)
            )
            if i % 500 == 0:
                print(f"{name}: {i}/{len(ims)} images, {time.time() - t0:.0f} s", flush=True)
        m.variants = 6  # few scenes, many scales: the cascade's false positives come from them
        for p in bg:
            g = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
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
    ap.add_argument("--cascade", default=None, help="cascade to mine with (default: face_lowres)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sel-fraction", type=float, default=0.1)
    ap.add_argument("--limit", type=int, default=0, help="first N training images only (tests)")
    args = ap.parse_args(argv)
    from edge_fer.cascade_train.script import run_tool
    from edge_fer.detect import lowres_cascade_path

    def work() -> None:
        mine(
            args.webfaces,
            args.backgrounds,
            args.out,
            args.cascade or lowres_cascade_path(),
            args.seed,
            args.sel_fraction,
            args.limit,
        )

    return run_tool("verifier_data", work)


if __name__ == "__main__":
    sys.exit(main())
