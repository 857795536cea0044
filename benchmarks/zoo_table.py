#!/usr/bin/env python
"""Results table of trained zoo architectures on FER2013 PrivateTest.

    python benchmarks/zoo_table.py runs/cnn4 runs/vgg edge_fer/assets/fer_default.onnx \
        --tta none,zoom-flip

Each run folder holds a best.safetensors (a checkpoint file or an exported .onnx may be given
instead). Every checkpoint is exported single-view to ONNX in a temporary folder
(`edge_fer.export.onnx`, parity-checked), evaluated once per --tta mode (edge_fer.tta) with
the code behind `edge-fer eval` (`edge_fer.cli.eval_cmd.eval_dataset`, ONNX Runtime), and timed
at batch 1 on this CPU with ONNX Runtime on 1 thread and on its default thread count
(preprocessing + inference per face, median of --latency-samples faces after warm-up).

Writes benchmarks/results/zoo.json and benchmarks/results/zoo.md and prints the markdown.
Needs the train extra (torch) for the export and ../shared/data/fer2013 (or --data).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from common import fail, save_json

from edge_fer.machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fer2013"


def find_checkpoint(run: Path) -> Path:
    from edge_fer.errors import UserError

    if run.is_file():
        return run
    ck = run / "best.safetensors"
    if not ck.is_file():
        raise UserError(f"{run}: no best.safetensors in this run folder")
    return ck


def bench_run(
    run: Path, data: Path, split: str, tta: str, samples: int, batch: int, tmp: Path
) -> dict:
    from edge_fer.classify import Classifier
    from edge_fer.cli.eval_cmd import eval_dataset
    from edge_fer.data import load_dataset
    from edge_fer.evaluate import batch1_latency
    from edge_fer.export.onnx import export_checkpoint

    if run.suffix == ".onnx":
        onnx_path, ck = run, None
        with Classifier.load(onnx_path) as c:
            md = c.metadata
        exp = {
            "arch": md.get("edge_fer.arch", "?"),
            "params": int(md.get("edge_fer.params", 0)),
            "macs": int(md.get("edge_fer.macs", 0)),
        }
    else:
        ck = find_checkpoint(run)
        onnx_path = tmp / f"{run.name or 'model'}.onnx"
        exp = export_checkpoint(ck, onnx_path)
    with Classifier.load(onnx_path, tta=tta) as clf:  # ONNX Runtime's default thread count
        rep = eval_dataset(
            clf, str(data), split, batch_size=batch, latency_samples=samples, progress=False
        )
    faces = load_dataset(data, rep["split"], size=clf.input_size)
    with Classifier.load(onnx_path, threads=1, tta=tta) as clf1:
        lat1 = batch1_latency(clf1, faces.images, samples)
    lat = rep["latency"]
    return {
        "run": str(run),
        "arch": exp["arch"],
        "arch_kwargs": json.loads(clf.metadata.get("edge_fer.arch_kwargs", "{}")),
        "tta": tta,
        "params": exp["params"],
        "macs": exp["macs"],
        "accuracy": rep["accuracy"],
        "top2_accuracy": rep["top2_accuracy"],
        "macro_f1": rep["macro_f1"],
        "n": rep["n"],
        "split": rep["split"],
        "per_class": rep["per_class"],
        "confusion_matrix": rep["confusion_matrix"],
        "labels": rep["labels"],
        "ms_per_face_1thread": lat1.get("batch1_median_ms"),
        "ms_per_face_1thread_mean": lat1.get("batch1_ms_per_face"),
        "ms_per_face_default_threads": lat.get("batch1_median_ms"),
        "ms_per_face_default_threads_mean": lat.get("batch1_ms_per_face"),
        f"ms_per_face_batch{batch}": lat["ms_per_face"],
        "val_acc": _state_field(ck, "best_acc") if ck else None,
        "best_epoch": _state_field(ck, "best_epoch") if ck else None,
        "parity_max_abs_diff": exp.get("parity_max_abs_diff"),
    }


def _state_field(ck: Path, key: str):
    from edge_fer.train.checkpoint import read_state

    return read_state(ck).get(key)


def _fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def markdown(rows: list[dict], env: dict) -> str:
    split = rows[0]["split"] if rows else env["split"]
    mixed = len({r.get("cpu", env["cpu"]) for r in rows}) > 1
    where = (
        "each row's CPU (last column)" if mixed else f"{env['cpu']} ({env['cpus']} logical CPUs)"
    )
    head = (
        f"{Path(env['data']).name} {split} ({rows[0]['n'] if rows else 0} faces), ONNX Runtime "
        f"{env['onnxruntime']} on {where}.\n"
        "ms/face: preprocessing + inference at batch 1, median over "
        f"{env['latency_samples']} faces, 1 thread and ONNX Runtime's default threads.\n"
    )
    # Merged tables can hold rows timed on different machines: then each row names its CPU
    # and date, since their ms/face do not compare across machines.
    extra_head, extra_rule = (" CPU, date |", "---|") if mixed else ("", "")
    lines = [
        head,
        (
            "| model | arch | params | MACs | accuracy | top-2 | macro-F1 | ms/face (1 thread) "
            "| ms/face (default threads) | TTA |" + extra_head
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|" + extra_rule,
    ]
    for r in rows:
        extra = f" {r.get('cpu', env['cpu'])}, {str(r.get('date_utc', ''))[:10]} |" if mixed else ""
        lines.append(
            f"| {Path(r['run']).name} | {r['arch']} | {r['params'] / 1e6:.2f}M | {r['macs'] / 1e6:.1f}M "
            f"| {100 * r['accuracy']:.2f}% | {100 * r['top2_accuracy']:.2f}% "
            f"| {r['macro_f1']:.3f} | {_fmt(r['ms_per_face_1thread'], '.3f')} "
            f"| {_fmt(r['ms_per_face_default_threads'], '.3f')} | {r['tta']} |" + extra
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("runs", nargs="+", help="run folders (with best.safetensors) or checkpoints")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="FER2013 folder or fer2013.csv")
    ap.add_argument("--split", default="private-test")
    ap.add_argument(
        "--tta",
        default="none",
        help="comma-separated test-time augmentations, one row each: none, flip, zoom-flip",
    )
    ap.add_argument("--latency-samples", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="zoo", help="output file stem: NAME.json and NAME.md")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep NAME.json's other rows (and NAME.md's text below the table); rows of the "
        "same run and TTA are replaced",
    )
    args = ap.parse_args(argv)

    from edge_fer.errors import UserError

    modes = [m.strip() for m in args.tta.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("none", "flip", "zoom-flip")]
    if bad or not modes:
        return fail(f"zoo_table: error: unknown --tta {','.join(bad) or args.tta!r}")
    data = Path(args.data)
    if not data.exists():
        return fail(
            f"zoo_table: error: no FER2013 data at {data} (../shared is absent?); pass --data"
        )
    try:
        import onnxruntime
        import torch

        torch.set_num_threads(1)
    except ImportError as exc:
        return fail(f"zoo_table: error: needs the train extra ({exc})")
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="edge-fer-zoo-") as tmp:
            for run in args.runs:
                for mode in modes:
                    print(f"zoo_table: {run} (tta {mode}) ...", file=sys.stderr, flush=True)
                    r = bench_run(
                        Path(run),
                        data,
                        args.split,
                        mode,
                        args.latency_samples,
                        args.batch_size,
                        Path(tmp),
                    )
                    print(
                        f"zoo_table: {r['arch']}: accuracy {r['accuracy']:.4f}, "
                        f"{r['ms_per_face_1thread']:.3f} ms/face (1 thread)",
                        file=sys.stderr,
                    )
                    r["date_utc"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                    r["cpu"] = cpu_name()
                    rows.append(r)
    except UserError as exc:
        return fail(f"zoo_table: error: {exc}")
    out = Path(args.out_dir)
    footer = ""
    if args.merge and (out / f"{args.name}.json").is_file():
        old = json.loads((out / f"{args.name}.json").read_text())
        new_keys = {(r["run"], r["tta"]) for r in rows}
        for r in old.get("results", []):
            if (r["run"], r["tta"]) not in new_keys:
                r.setdefault("date_utc", old.get("env", {}).get("date_utc"))
                r.setdefault("cpu", old.get("env", {}).get("cpu"))
                rows.append(r)
        old_md = out / f"{args.name}.md"
        if old_md.is_file():
            # The hand-written text under the table (commands, budgets) stays.
            lines = old_md.read_text().splitlines()
            last = max((i for i, ln in enumerate(lines) if ln.startswith("|")), default=-1)
            footer = "\n".join(lines[last + 1 :]).strip("\n")
    rows.sort(key=lambda r: -r["accuracy"])
    env = {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "data": str(data),
        "split": args.split,
        "latency_samples": args.latency_samples,
        "batch_size": args.batch_size,
    }
    md = markdown(rows, env)
    if footer:
        md += "\n" + footer + "\n"
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / f"{args.name}.json", {"env": env, "results": rows})
    (out / f"{args.name}.md").write_text(md)
    print(md)
    print(
        f"zoo_table: wrote {out / (args.name + '.json')} and {out / (args.name + '.md')}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
