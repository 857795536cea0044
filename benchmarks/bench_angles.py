"""Multi-angle scanning on held-out faces: recall of a cascade on WebFaces validation images
(the last 10% in name order, never used to learn or tune the bundled cascades) rolled in the
image plane by 0, 10 and 20 degrees (alternating sign), scanned upright only and at several angles.

    python benchmarks/bench_angles.py [--cascade C] [--angles 0,1/32,-1/32,...] [--images N]

Recall is read at a fixed rate of false positives per image (the same images), so a wider scan
that also fires more often on the background is not credited for it. Results:
benchmarks/results/angles.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from common import save_json, shrink, webfaces_val

from edge_fer.detect import parse_angles

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "benchmarks" / "results" / "angles.json"


def roll(img: np.ndarray, faces, degrees: float):
    """The image rotated about its centre (edges replicated) and its faces' moved centres."""
    from edge_fer.cascade_train.annotations import Face

    h, w = img.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    moved = []
    for f in faces:
        x, y = m @ np.array([f.col, f.row, 1.0])
        moved.append(Face(row=float(y), col=float(x), size=f.size))
    return out, moved


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cascade", default=str(ROOT / "edge_fer" / "assets" / "face_lowres.pico"))
    ap.add_argument(
        "--angles",
        type=parse_angles,
        default="0,1/32,-1/32,2/32,-2/32",
        help="the multi-angle scan, in turns (default: 0, +-11.25, +-22.5 degrees)",
    )
    ap.add_argument("--images", type=int, default=300, help="validation images to use (0: all)")
    ap.add_argument(
        "--max-side",
        type=int,
        default=320,
        help="images are downscaled to this longer side first (low-resolution faces)",
    )
    ap.add_argument("--fppi", type=float, default=0.5, help="false positives per image")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    wf = SHARED / "data" / "webfaces"
    if not wf.is_dir():
        print(f"bench_angles: {wf} not found", file=sys.stderr)
        return 2
    from edge_fer.cascade_train.evaluate import curve, scan_all
    from edge_fer.detect import Cascade, Detector

    small, sfaces = shrink(*webfaces_val(wf, args.images), args.max_side)
    casc = Cascade.load(args.cascade)
    scans = {"upright": (0.0,), "multi-angle": args.angles}
    rows = []
    for deg in (0, 10, 20):
        rolled = [
            roll(g, fs, deg if i % 2 else -deg) for i, (g, fs) in enumerate(zip(small, sfaces))
        ]
        ims, fcs = [r[0] for r in rolled], [r[1] for r in rolled]
        for name, angles in scans.items():
            det = Detector(
                casc,
                min_size=20,
                max_size=1.0,
                scale_factor=1.05,
                angle=angles,
                threshold=-1e30,
                max_detections=1 << 20,
                threads=1,
            )
            t0 = time.perf_counter()
            dets, _ = scan_all(det, ims)
            secs = time.perf_counter() - t0
            rec, thr = curve(dets, fcs, 20.0, 0.4).at_fppi(args.fppi)
            rows.append(
                {
                    "roll_deg": deg,
                    "scan": name,
                    "angles": list(angles),
                    "recall": round(rec, 4),
                    "threshold": thr,
                    "ms_per_image": round(1000 * secs / len(ims), 2),
                }
            )
            print(
                f"roll {deg:2d} deg  {name:11s}  recall@{args.fppi} FPPI {rec:.3f}  "
                f"{1000 * secs / len(ims):.1f} ms/image",
                flush=True,
            )
    print(
        f"\n{len(small)} WebFaces validation images ({sum(map(len, sfaces))} faces), "
        f"longer side <= {args.max_side} px, cascade {Path(args.cascade).name}"
    )
    print("| roll | upright scan | multi-angle scan |\n|---:|---:|---:|")
    for deg in (0, 10, 20):
        r = {x["scan"]: x["recall"] for x in rows if x["roll_deg"] == deg}
        print(f"| {deg} deg | {r['upright']:.3f} | {r['multi-angle']:.3f} |")
    if not args.no_save:
        save_json(
            RESULTS,
            {
                "cascade": Path(args.cascade).name,
                "images": len(small),
                "max_side": args.max_side,
                "fppi": args.fppi,
                "rows": rows,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
