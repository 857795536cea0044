"""SFEW 2.0 train faces as the runtime sees them, split by movie, for training and testing.

The runtime's detector finds the face in each SFEW crop (as in bench_align.py: the crop set in
a border of repeated edge pixels); the face is cut as the runtime cuts it for the bundled model
(plain crop, its crop margin unless --margin says otherwise, 48x48 gray) and written as PNG
into OUT/train/<class>/ or OUT/test/<class>/. Whole movies are held out for the test part (the
file name less its last two `_<digits>` fields, as the experiment studies group SFEW), so no
movie sits on both sides.

    python benchmarks/sfew_crops.py [--out runs/sfew_crops] [--test-fraction 0.3] [--seed 0]
        [--margin M]

The crops are derived from ../shared and belong in an ignored folder (runs/), never in the
project. `edge-fer train --extra-train OUT/train` trains on them; `bench_classifier.py
--sfew-test OUT/test` reports on the held-out movies.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from common import fail, save_json

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def held_out(fraction: float = 0.3, seed: int = 0) -> set[str]:
    """The SFEW file names (of all 859, detected or not) in the held-out movies (seeded)."""
    from edge_fer.data import FaceSet
    from edge_fer.experiment.data import split_by_group

    names = sorted(p.name for p in (SHARED / "data/sfew_train").glob("*/*.png"))
    fs = FaceSet(np.zeros((len(names), 1, 1), np.uint8), np.zeros(len(names), np.int64), ("x",))
    fs.ids = names
    mask = split_by_group(fs, fraction, seed)[0]
    return {n for n, m in zip(names, mask) if m}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "runs" / "sfew_crops"))
    ap.add_argument("--test-fraction", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--margin",
        type=float,
        default=None,
        help="crop margin per side, a fraction of the box (default: the bundled model's)",
    )
    a = ap.parse_args(argv)
    if not (SHARED / "data/sfew_train").is_dir():
        return fail(f"needs SFEW under {SHARED}/data/sfew_train")
    from bench_align import sfew_faces

    from edge_fer.classify import default_model_path
    from edge_fer.preprocess import PreprocessSpec
    from edge_fer.runtime.crops import crop_face

    if a.margin is None:
        from edge_fer.backends.trt_common import onnx_metadata

        a.margin = PreprocessSpec.from_metadata(onnx_metadata(default_model_path())).crop_margin

    faces = sfew_faces(0)
    held = held_out(a.test_fraction, a.seed)
    test = [f in held for f in faces["files"]]
    out = Path(a.out)
    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    for gray, box, cls, f, t in zip(
        faces["grays"], faces["boxes"], faces["names"], faces["files"], test
    ):
        part = "test" if t else "train"
        d = out / part / cls
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / (Path(f).stem + ".png")), crop_face(gray, box, a.margin, 48))
        counts[part][cls] = counts[part].get(cls, 0) + 1
    summary = {
        "images": faces["images"],
        "detected": len(faces["grays"]),
        "test_fraction": a.test_fraction,
        "seed": a.seed,
        "margin": a.margin,
        "counts": counts,
    }
    print({k: sum(v.values()) for k, v in counts.items()}, counts)
    save_json(out / "split.json", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
