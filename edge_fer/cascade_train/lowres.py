"""Degraded copies of annotated training images, for cascades that must work on low-resolution,
noisy video (the bundled cascade was learned with them).

    python -m edge_fer.cascade_train.lowres ../shared/data/webfaces runs/lowres [--seed 0]
    edge-fer train-cascade --webfaces ../shared/data/webfaces --boxes runs/lowres/boxes.txt ...

Each WebFaces *training* image (the validation split is left out, as `train-cascade` does) is
shrunk by a random factor in [1.8, 3.5], gets Gaussian sensor noise (sigma 2-6, added at the low
resolution) and is enlarged back to its size: what an upscaled 160x120 camera frame looks like.
The faces keep their boxes; `boxes.txt` lists them in the `path x y w h` box-file format. The
copies serve as positives and, while `train-cascade` mines annotated images, as negatives.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edge_fer.imageio import imwrite, read_or_none


def make_lowres(
    webfaces: str | Path,
    out: str | Path,
    seed: int = 0,
    val_fraction: float = 0.1,
    force: bool = False,
) -> tuple[int, int]:
    """Write the degraded copies and boxes.txt into `out`; returns (images, faces). An `out`
    that holds them already (an earlier run) is refused unless `force`."""
    import cv2

    from edge_fer.cascade_train.annotations import read_webfaces, split_images
    from edge_fer.cascade_train.script import out_folder, refuse_outputs
    from edge_fer.limits import check_count

    check_count(seed, "seed", lowest=0)  # -1 was numpy's ValueError traceback
    refuse_outputs(out, ("boxes.txt", "lr_*.png"), force)  # before reading 2,000 images
    # the data before the folder: a mistake in either left an empty `out` behind
    train = split_images(read_webfaces(webfaces)[0], "train", val_fraction)
    out = out_folder(out)
    rng = np.random.default_rng(seed)
    lines, n = [], 0
    for im in train:
        g = read_or_none(im.path, cv2.IMREAD_GRAYSCALE)
        if g is None:
            continue
        h, w = g.shape
        f = rng.uniform(1.8, 3.5)
        small = cv2.resize(
            g, (max(8, round(w / f)), max(8, round(h / f))), interpolation=cv2.INTER_AREA
        )
        noisy = small + rng.normal(0.0, rng.uniform(2.0, 6.0), small.shape)
        up = cv2.resize(
            np.clip(noisy, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR
        )
        name = f"lr_{im.path.stem}.png"
        imwrite(out / name, up)
        n += 1
        for fc in im.faces:
            x, y = fc.col - fc.size / 2, fc.row - fc.size / 2
            lines.append(f"{name} {x:.2f} {y:.2f} {fc.size:.2f} {fc.size:.2f}")
    (out / "boxes.txt").write_text("\n".join(lines) + "\n")
    return n, len(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("webfaces", help="WebFaces folder (images/ + WebFaces_GroundThruth.txt)")
    ap.add_argument("out", help="output folder for the copies and boxes.txt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="the held-out share of images (as train-cascade --val-fraction)",
    )
    ap.add_argument(
        "--force", action="store_true", help="write over the outputs of an earlier run in `out`"
    )
    args = ap.parse_args(argv)
    from edge_fer.cascade_train.script import run_tool

    def work() -> str:
        n, k = make_lowres(args.webfaces, args.out, args.seed, args.val_fraction, args.force)
        return f"{n} images, {k} faces -> {args.out}/boxes.txt"

    return run_tool("lowres", work, flags=("seed", "val_fraction"))


if __name__ == "__main__":
    sys.exit(main())
