"""FER2013 Training faces as extra cascade positives: expressions, glasses, beards and washed-out
48x48 webcam-grade faces that web photos have few of.

    python -m edge_fer.cascade_train.fer_faces ../shared/data/fer2013 runs/fer_faces --count 8000
    edge-fer train-cascade ... --boxes runs/fer_faces/boxes.txt

FER2013 faces are registered: each 48x48 image is one face filling the frame. The bundled
cascade, scanning 1,500 of them (padded, enlarged 2x), put the face at a median box of x 0.8,
y 0.2, size 45 px, so every image gets that box (`FER_BOX`), in the WebFaces landmark box
convention the cascade was learned in. Only the Training split is used (file names
`Training_*`); the boxes file names the images where they are (absolute paths), nothing is
copied. Windows inside these faces (an eye, a mouth) become negatives while mining, which
teaches the cascade not to fire on parts of a face.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

FER_BOX = (0.8, 0.2, 45.0, 45.0)  # x, y, w, h in a 48x48 FER2013 image


def write_fer_boxes(
    fer: str | Path, out: str | Path, count: int = 8000, seed: int = 0, force: bool = False
) -> int:
    """Write `out`/boxes.txt for `count` Training faces drawn with `seed`; returns the count.
    An `out` that holds a boxes.txt already (an earlier run) is refused unless `force`."""
    from edge_fer.cascade_train.script import out_folder, refuse_outputs
    from edge_fer.errors import UserError
    from edge_fer.limits import check_count

    # numpy's ValueError tracebacks before (-5, seed -1); 0 wrote a box file with no face
    check_count(count, "count")
    check_count(seed, "seed", lowest=0)
    refuse_outputs(out, ("boxes.txt",), force)
    files = sorted(Path(fer).resolve().glob("train/*/Training_*.jpg"))
    if not files:
        raise UserError(f"{fer}: no train/<class>/Training_*.jpg images (a FER2013 folder)")
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(files), size=min(count, len(files)), replace=False))
    x, y, w, h = FER_BOX
    out = out_folder(out)
    lines = [f"{files[i]} {x} {y} {w} {h}" for i in pick]
    (out / "boxes.txt").write_text("\n".join(lines) + "\n")
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fer", help="FER2013 folder (train/<class>/Training_*.jpg)")
    ap.add_argument("out", help="output folder for boxes.txt")
    ap.add_argument("--count", type=int, default=8000, help="faces to draw (default 8000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--force", action="store_true", help="write over the boxes.txt of an earlier run in `out`"
    )
    args = ap.parse_args(argv)
    from edge_fer.cascade_train.script import run_tool

    def work() -> str:
        n = write_fer_boxes(args.fer, args.out, args.count, args.seed, args.force)
        return f"{n} faces -> {args.out}/boxes.txt"

    return run_tool("fer_faces", work, flags=("count", "seed"))


if __name__ == "__main__":
    sys.exit(main())
