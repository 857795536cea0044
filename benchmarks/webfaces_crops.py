"""WebFaces faces as the runtime sees them, without labels, for `edge-fer train --unlabelled`.

The runtime's detector (default settings, stills) scans each image of the WebFaces training
split (the first 90% in name order; the validation split that the detection benchmarks report
on is left alone). A detection that matches an annotated face (IoU >= --min-iou with the box
derived from its landmarks) and is at least --min-side px is cut as the runtime cuts it for the
bundled model (plain crop at its crop margin unless --margin says otherwise, 48x48 gray) and
written as PNG into OUT/. No expression labels exist for these faces: a run learns them from
its teachers' answers.

    python benchmarks/webfaces_crops.py [--out runs/webfaces_crops] [--min-side 40]

The crops are derived from ../shared and belong in an ignored folder (runs/), never in the
project.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
from common import fail, save_json

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "runs" / "webfaces_crops"))
    ap.add_argument("--min-side", type=float, default=40.0,
                    help="smallest detected face kept, px (48x48 crops of smaller ones are "
                    "mostly upsampling)")  # fmt: skip
    ap.add_argument("--min-iou", type=float, default=0.4)
    ap.add_argument("--margin", type=float, default=None,
                    help="crop margin per side, a fraction of the box (default: the bundled "
                    "model's)")  # fmt: skip
    a = ap.parse_args(argv)
    webfaces = SHARED / "data/webfaces"
    if not webfaces.is_dir():
        return fail(f"needs WebFaces under {webfaces}")
    from edge_fer.cascade_train.annotations import read_webfaces, split_images
    from edge_fer.cascade_train.evaluate import load_eval_set
    from edge_fer.classify import default_model_path
    from edge_fer.detect.config import DetectorOptions
    from edge_fer.detect.factory import DetectorPicker
    from edge_fer.preprocess import PreprocessSpec
    from edge_fer.progress import Progress
    from edge_fer.runtime.crops import crop_face

    if a.margin is None:
        from edge_fer.backends.trt_common import onnx_metadata

        a.margin = PreprocessSpec.from_metadata(onnx_metadata(default_model_path())).crop_margin
    train = split_images(read_webfaces(webfaces)[0], "train")
    images, faces, undecoded = load_eval_set(train)
    names = [im.path.stem for im in train][: len(images)] if not undecoded else None
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    picker = DetectorPicker(None, DetectorOptions(), stills=True)
    annotated = sum(map(len, faces))
    kept = unmatched = small = 0
    bar = Progress(len(images), "webfaces", "image", True)
    for i, (gray, truth) in enumerate(zip(images, faces)):
        det = picker(gray.shape)
        det.reset()
        for k, d in enumerate(det.detect(gray)):
            row, col, side = float(d[0]), float(d[1]), float(d[2])
            if not any(f.iou(row, col, side) >= a.min_iou for f in truth):
                unmatched += 1
                continue
            if side < a.min_side:
                small += 1
                continue
            box = (col - side / 2, row - side / 2, side, side)
            stem = names[i] if names else f"img{i:05d}"
            cv2.imwrite(str(out / f"{stem}_{k}.png"), crop_face(gray, box, a.margin, 48))
            kept += 1
        bar.update()
    bar.close()
    summary = {
        "split": "webfaces train (first 90% of images in name order)",
        "images": len(images),
        "undecoded": undecoded,
        "annotated_faces": annotated,
        "kept": kept,
        "matched_but_smaller_than_min_side": small,
        "detections_matching_no_annotation": unmatched,
        "min_side": a.min_side,
        "min_iou": a.min_iou,
        "margin": a.margin,
    }
    print(summary)
    save_json(out.parent / (out.name + ".json"), summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
