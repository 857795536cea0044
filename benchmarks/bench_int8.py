"""FP32 vs INT8 (post-training, Q/DQ) on FER2013 PrivateTest with ONNX Runtime on this CPU.

For the FP32 model and each INT8 model: accuracy, top-2 and macro-F1 from `edge_fer.evaluate`
(the numbers `edge-fer eval` prints), top-1 agreement with FP32, and model time per face at
batch 1 and batch 32 (inference only, on prepared inputs; every model timed in turn within
each round, so a background load hits them alike; the median over the rounds is reported),
for each thread count asked for.

The INT8 models come from `edge-fer calibrate` (--calib-dir), or are made here from the
calibration set committed in calibration/ (the bundled model) or a fresh 512-face Training
sample (another model). More Q/DQ models (e.g. NVIDIA ModelOpt's) can be added with
--extra NAME=PATH; a model without edge-fer metadata gets the FP32 model's.

    python benchmarks/bench_int8.py [--model M] [--calib-dir DIR] [--threads 1,2]
        [--extra modelopt=mo.onnx] [--json benchmarks/results/int8.json]

Results: benchmarks/results/int8.json (and a table on stdout).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import fail, save_json

from edge_fer.machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FER = SHARED / "data" / "fer2013"
CALIB_IDS = ROOT / "calibration" / "fer_default" / "calib_ids.txt"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "int8.json"


def with_metadata(path: Path, ref: Path, tmp: Path) -> Path:
    """`path`, or a copy of it carrying the edge-fer metadata of `ref` when it has none."""
    import onnx

    m = onnx.load(str(path))
    keys = {p.key for p in m.metadata_props}
    if "edge_fer.preprocess" in keys:
        return path
    for p in onnx.load(str(ref), load_external_data=False).metadata_props:
        if p.key not in keys:
            m.metadata_props.add(key=p.key, value=p.value)
    out = tmp / f"{path.stem}.meta.onnx"
    onnx.save(m, str(out))
    return out


def make_int8(model: Path, data: Path, tmp: Path, threads: int) -> tuple[Path, dict]:
    from edge_fer.classify import default_model_path
    from edge_fer.quantize import calibrate, from_dataset
    from edge_fer.quantize.report import read_ids

    bundled = model.resolve() == default_model_path().resolve()
    if bundled and CALIB_IDS.is_file():
        faces = from_dataset(data, "train", ids=read_ids(CALIB_IDS))
    else:
        faces = from_dataset(data, "train", samples=512, seed=0)
    out = tmp / "int8"
    info = calibrate(model, faces, out, method="entropy", threads=threads, check_agreement=False)
    return out, info


def time_model(clf, x1: np.ndarray, x32: np.ndarray) -> tuple[float, float]:
    """(ms per face at batch 1, ms per face at batch 32), inference only."""
    be = clf.backend
    t0 = time.perf_counter()
    for i in range(len(x1)):
        be.infer(x1[i : i + 1])
    b1 = (time.perf_counter() - t0) * 1e3 / len(x1)
    t0 = time.perf_counter()
    for i in range(0, len(x32), 32):
        be.infer(x32[i : i + 32])
    b32 = (time.perf_counter() - t0) * 1e3 / len(x32)
    return b1, b32


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="FP32 model (default: the bundled one)")
    ap.add_argument("--data", default=str(FER), help="FER2013 folder")
    ap.add_argument("--split", default="private-test")
    # fmt: off
    ap.add_argument("--calib-dir", default=None,
                    help="output folder of `edge-fer calibrate` (default: calibrate now)")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=PATH",
                    help="another INT8 model to measure (repeatable)")
    ap.add_argument("--threads", default="1", help="comma-separated ONNX Runtime thread counts")
    ap.add_argument("--tta", default="none,auto",
                    help="test-time augmentation modes to evaluate (auto: the model's default)")
    # fmt: on
    ap.add_argument("--rounds", type=int, default=5, help="timing rounds")
    ap.add_argument("--batch1-faces", type=int, default=100, help="faces timed at batch 1")
    ap.add_argument("--batch32-faces", type=int, default=512, help="faces timed at batch 32")
    ap.add_argument("--json", default=str(DEFAULT_JSON), help="where to save the results")
    args = ap.parse_args(argv)

    import onnxruntime as ort

    from edge_fer.classify import Classifier, default_model_path
    from edge_fer.data import load_dataset
    from edge_fer.evaluate import evaluate

    data = Path(args.data)
    if not data.is_dir():
        return fail(f"bench_int8: {data} not found (../shared is absent); nothing to measure")
    threads = [int(t) for t in args.threads.split(",")]
    model = Path(args.model) if args.model else default_model_path()
    tmp_dir = tempfile.TemporaryDirectory(prefix="bench_int8.")
    tmp = Path(tmp_dir.name)
    calib_info = None
    if args.calib_dir:
        cdir = Path(args.calib_dir)
    else:
        print("calibrating ...", file=sys.stderr, flush=True)
        cdir, calib_info = make_int8(model, data, tmp, threads[0])
    models: dict[str, Path] = {"fp32": model}
    for name, fname in (
        ("int8-tensorrt", "model.int8.qdq.onnx"),
        ("int8-cpu", "model.int8.cpu.onnx"),
    ):
        if (cdir / fname).is_file():
            models[name] = cdir / fname
    for spec in args.extra:
        name, _, path = spec.partition("=")
        models[name] = with_metadata(Path(path), model, tmp)

    faces = load_dataset(data, args.split, size=48)
    ttas = [t.strip() for t in args.tta.split(",") if t.strip()]
    results: dict[str, dict] = {}
    preds: dict[str, dict[str, np.ndarray]] = {}
    for name, path in models.items():
        results[name] = {
            "path": str(path),
            "size_bytes": path.stat().st_size,
            "by_tta": {},
            "timing": {},
        }
        preds[name] = {}
        for tta in ttas:
            print(f"evaluating {name} (tta {tta}) ...", file=sys.stderr, flush=True)
            with Classifier.load(path, threads=threads[0], tta=tta) as clf:
                seen: list[np.ndarray] = []
                infer = clf.infer

                def recording(x, infer=infer, seen=seen):
                    y = infer(x)
                    seen.append(y)
                    return y

                clf.infer = recording  # type: ignore[method-assign]
                rep = evaluate(clf, faces, batch_size=32, latency_samples=0, progress=False)
                mode = clf.tta
            preds[name][tta] = np.concatenate(seen).argmax(1)
            results[name]["by_tta"][tta] = {
                "tta": mode,
                "accuracy": rep["accuracy"],
                "top2_accuracy": rep["top2_accuracy"],
                "macro_f1": rep["macro_f1"],
                "n": rep["n"],
            }
    for name in results:
        for tta in ttas:
            agree = float((preds[name][tta] == preds["fp32"][tta]).mean())
            results[name]["by_tta"][tta]["agreement_with_fp32"] = agree
            results[name]["by_tta"][tta]["accuracy_minus_fp32"] = (
                results[name]["by_tta"][tta]["accuracy"]
                - results["fp32"]["by_tta"][tta]["accuracy"]
            )

    rng = np.random.default_rng(0)
    idx = rng.permutation(len(faces))
    with Classifier.load(model, threads=1, tta="none") as clf:
        x1 = clf.spec.prepare(faces.images[idx[: args.batch1_faces]])
        x32 = clf.spec.prepare(faces.images[idx[: args.batch32_faces]])
    for t in threads:
        clfs = {name: Classifier.load(path, threads=t, tta="none") for name, path in models.items()}
        try:
            for c in clfs.values():  # warm-up
                time_model(c, x1[:5], x32[:64])
            samples: dict[str, list[tuple[float, float]]] = {n: [] for n in clfs}
            for r in range(args.rounds):
                print(
                    f"timing, {t} thread(s), round {r + 1}/{args.rounds} ...",
                    file=sys.stderr,
                    flush=True,
                )
                for name, c in clfs.items():
                    samples[name].append(time_model(c, x1, x32))
        finally:
            for c in clfs.values():
                c.close()
        base1 = float(np.median([s[0] for s in samples["fp32"]]))
        base32 = float(np.median([s[1] for s in samples["fp32"]]))
        for name, s in samples.items():
            b1 = float(np.median([v[0] for v in s]))
            b32 = float(np.median([v[1] for v in s]))
            results[name]["timing"][str(t)] = {
                "batch1_ms_per_face": b1,
                "batch32_ms_per_face": b32,
                "speedup_batch1": base1 / b1,
                "speedup_batch32": base32 / b32,
                "rounds_batch32_ms": [v[1] for v in s],
            }

    out = {
        "what": "FP32 vs INT8 post-training quantization, ONNX Runtime CPU",
        "model": str(model),
        "data": str(data),
        "split": args.split,
        "calibration": calib_info or {"dir": str(cdir)},
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
        },
        "timing": f"inference only (prepared float32 input), median of {args.rounds} rounds, "
        f"{args.batch1_faces} faces at batch 1 and {args.batch32_faces} at batch 32",
        "results": results,
    }
    for tta in ttas:
        mode = results["fp32"]["by_tta"][tta]["tta"]
        print(
            f"\naccuracy on {args.split}, tta {tta} ({mode}), n {results['fp32']['by_tta'][tta]['n']}"
        )
        print(
            f"{'model':<16} {'acc':>7} {'d-acc':>7} {'top-2':>7} {'mF1':>7} {'agree':>7} {'MB':>6}"
        )
        for name, r in results.items():
            a = r["by_tta"][tta]
            print(
                f"{name:<16} {a['accuracy']:7.4f} {100 * a['accuracy_minus_fp32']:+7.2f} "
                f"{a['top2_accuracy']:7.4f} {a['macro_f1']:7.4f} {a['agreement_with_fp32']:7.4f} "
                f"{r['size_bytes'] / 1e6:6.2f}"
            )
    print("\nmodel time per face (one view, inference only, median of rounds)")
    print(
        f"{'model':<16}"
        + "".join(f" {'b1 ms':>8} {'b32 ms':>8} {'x b1':>6} {'x b32':>6}" for _ in threads)
        + "   ("
        + ", ".join(f"{t} thread(s)" for t in threads)
        + ")"
    )
    for name, r in results.items():
        row = f"{name:<16}"
        for t in threads:
            tt = r["timing"][str(t)]
            row += (
                f" {tt['batch1_ms_per_face']:8.3f} {tt['batch32_ms_per_face']:8.3f} "
                f"{tt['speedup_batch1']:6.2f} {tt['speedup_batch32']:6.2f}"
            )
        print(row)
    if args.json:
        print()
        save_json(args.json, out)
    tmp_dir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
