"""How windows become faces: pico's chained clustering against greedy grouping, on held-out
photos. Each bundled cascade scans the WebFaces validation split (the last 10% of images in name
order, which no bundled cascade learned from or was tuned on) with its own scan settings, at
full size and downscaled to a longer side of 320 px (low-resolution faces); recall is read at
fixed rates of false positives per image, and false positives per megapixel on the held-out
face-free backgrounds at the same threshold.

    python benchmarks/bench_grouping.py [--images N]

Results: benchmarks/results/grouping.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
from common import save_json, shrink, webfaces_val

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "benchmarks" / "results" / "grouping.json"
ASSETS = ROOT / "edge_fer" / "assets"
# cascade -> scan settings (as edge-fer run uses them) and the greedy grouping's overlap
CASCADES = {
    "face_lowres.pico": {"min_size": 20, "scale_factor": 1.05, "greedy_iou": 0.15},
    "face_default.pico": {"min_size": 24, "scale_factor": 1.1, "greedy_iou": 0.3},
}
FPPI = (0.25, 0.5, 1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=0, help="validation images (0: all)")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    if not (SHARED / "data" / "webfaces").is_dir():
        print(f"bench_grouping: {SHARED}/data/webfaces not found", file=sys.stderr)
        return 2
    from edge_fer.cascade_train.annotations import list_images, split_paths
    from edge_fer.cascade_train.evaluate import ScanParams, evaluate_cascade
    from edge_fer.detect import Cascade

    images, faces = webfaces_val(SHARED / "data" / "webfaces", args.images)
    bgs = [
        cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        for p in split_paths(list_images(SHARED / "data" / "backgrounds"), "val")
    ]
    bgs = [b for b in bgs if b is not None]
    rows = []
    for name, cfg in CASCADES.items():
        casc = Cascade.load(ASSETS / name)
        for side in (0, 320):
            ims, fcs = (images, faces) if not side else shrink(images, faces, side)
            bg = bgs if not side else shrink(bgs, [[] for _ in bgs], side)[0]
            for grouping, iou in (("chain", 0.3), ("greedy", cfg["greedy_iou"])):
                params = ScanParams(
                    min_size=cfg["min_size"],
                    scale_factor=cfg["scale_factor"],
                    grouping=grouping,
                    cluster_iou=iou,
                )
                r = evaluate_cascade(casc, ims, fcs, bg, params, fppis=FPPI)
                row = {
                    "cascade": name,
                    "size": side or "full",
                    "grouping": grouping,
                    "iou": iou,
                    "faces": r["faces"],
                    "at_fppi": r["at_fppi"],
                }
                rows.append(row)
                print(
                    f"{name} {side or 'full'} {grouping} {iou}: "
                    + ", ".join(f"{o['recall']:.3f} @{o['fppi']}" for o in r["at_fppi"]),
                    flush=True,
                )
    print(f"\n{len(images)} WebFaces validation images; recall at false positives per image")
    print("| cascade | size | grouping | " + " | ".join(f"@{f}" for f in FPPI) + " |")
    print("|---|---|---|" + "---:|" * len(FPPI))
    for r in rows:
        print(
            f"| {r['cascade']} | {r['size']} | {r['grouping']} {r['iou']} | "
            + " | ".join(f"{o['recall']:.3f}" for o in r["at_fppi"])
            + " |"
        )
    if not args.no_save:
        save_json(RESULTS, {"images": len(images), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
