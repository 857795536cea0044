"""The face verifier behind a bundled cascade, on held-out photos. The cascade (face_lowres.pico
unless --cascade) scans the WebFaces validation split (the last 10% of images in name order:
neither the cascades nor the verifier learned from or were tuned on it) with its runtime
settings, downscaled to a longer side of 320 px and at full size; recall is read at fixed rates
of false positives per image, for the cascade alone and with the verifier (drops detections
under its probability, moves the others' boxes, merges duplicates).

    python benchmarks/bench_verifier.py [--cascade C] [--verifier V] [--passes 2] [--out JSON]
    python benchmarks/bench_verifier.py --cascade edge_fer/assets/face_default.pico \
        --out benchmarks/results/verifier_default.json

Results: benchmarks/results/verifier.json (or --out) and a table on stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from common import save_json, shrink, webfaces_val

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "benchmarks" / "results" / "verifier.json"
ASSETS = ROOT / "edge_fer" / "assets"
FPPI = (0.1, 0.25, 0.5, 1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--verifier", default=str(ASSETS / "face_verify.onnx"))
    ap.add_argument(
        "--cascade",
        default=str(ASSETS / "face_lowres.pico"),
        help="the cascade in front (its .json settings are used)",
    )
    ap.add_argument("--images", type=int, default=0, help="validation images (0: all)")
    ap.add_argument(
        "--min-prob",
        type=float,
        default=None,
        help="verifier threshold (default: the cascade's verifier_min_prob)",
    )
    ap.add_argument("--passes", type=int, default=2, help="verifier passes (default 2)")
    ap.add_argument("--out", default=str(RESULTS), help="results JSON (default: %(default)s)")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    if not (SHARED / "data" / "webfaces").is_dir():
        print(f"bench_verifier: {SHARED}/data/webfaces not found", file=sys.stderr)
        return 2
    from edge_fer.cascade_train.evaluate import ScanParams, curve
    from edge_fer.detect import Cascade, cascade_settings
    from edge_fer.detect.verifier import Verifier

    cfg = cascade_settings(args.cascade)
    min_face = cfg.get("min_face", 24)
    min_prob = args.min_prob if args.min_prob is not None else cfg.get("verifier_min_prob", 0.5)
    ver = Verifier.load(args.verifier, min_prob=min_prob, passes=args.passes)
    det = ScanParams(
        min_size=min_face,
        scale_factor=cfg.get("scale_factor", 1.1),
        grouping=cfg.get("grouping", "chain"),
        cluster_iou=cfg.get("cluster_iou", 0.3),
    ).detector(Cascade.load(args.cascade))
    images, faces = webfaces_val(SHARED / "data" / "webfaces", args.images)
    rows = []
    for side in (320, 0):
        ims, fcs = (images, faces) if not side else shrink(images, faces, side)
        plain, checked, by_prob = [], [], []
        t_ver, n_dets = 0.0, 0
        for g in ims:
            d = det.group(det.raw(g))
            plain.append(d)
            t0 = time.perf_counter()
            kept = ver.filter(g, d)
            t_ver += time.perf_counter() - t0
            n_dets += len(d)
            checked.append(kept[:, :4])
            by_prob.append(kept[:, [0, 1, 2, 4]])
        for name, dets in (
            ("cascade", plain),
            ("cascade + verifier", checked),
            ("cascade + verifier, by probability", by_prob),
        ):
            c = curve(dets, fcs, min_face, 0.5)
            at = [{"fppi": f, "recall": round(c.at_fppi(f)[0], 4)} for f in FPPI]
            rec, fppi = c.at_threshold(-np.inf)  # everything reported
            rows.append(
                {
                    "size": side or "full",
                    "detector": name,
                    "faces": c.nfaces,
                    "at_fppi": at,
                    "all": {"recall": round(rec, 4), "fppi": round(fppi, 4)},
                }
            )
            print(
                f"{side or 'full'} {name}: "
                + ", ".join(f"{o['recall']:.3f} @{o['fppi']}" for o in at)
                + f"; all kept: recall {rec:.3f} at {fppi:.3f} FP/image",
                flush=True,
            )
        print(
            f"  verifier: {1000 * t_ver / max(len(ims), 1):.2f} ms per image, "
            f"{n_dets / max(len(ims), 1):.1f} detections per image",
            flush=True,
        )
    print(
        f"\n{len(images)} WebFaces validation images, min_prob {min_prob}; "
        "recall at false positives per image (IoU >= 0.5)"
    )
    print(
        "| size | detector | "
        + " | ".join(f"@{f}" for f in FPPI)
        + " | all kept: recall, FP/image |"
    )
    print("|---|---|" + "---:|" * len(FPPI) + "---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['detector']} | "
            + " | ".join(f"{o['recall']:.3f}" for o in r["at_fppi"])
            + f" | {r['all']['recall']:.3f}, {r['all']['fppi']:.3f} |"
        )
    if not args.no_save:
        save_json(
            args.out,
            {
                "images": len(images),
                "cascade": Path(args.cascade).name,
                "verifier": Path(args.verifier).name,
                "min_prob": min_prob,
                "passes": args.passes,
                "rows": rows,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
