"""The compression report: ONNX models side by side on one table.

For every (name, ONNX path) row: accuracy, top-2 and macro-F1 through `edge_fer.evaluate` on a
labelled split (FER2013 PrivateTest by default), the parameters and multiply-accumulates read
from the graph itself (so FP32, pruned and QDQ files are counted the same way), the file size
(and its gzip size, which is what unstructured sparsity buys), the fraction of zero weights, and
the ONNX Runtime latency per face at batch 1 and 32: fixed thread count, warm-up, the models
timed in interleaved rounds (so a background load hits them alike), median of the calls.
Needs no torch.
"""

from __future__ import annotations

import gzip
import os
import sys
import time
from pathlib import Path

import numpy as np

from edge_fer.errors import UserError
from edge_fer.fileio import portable_path
from edge_fer.machine import cpu_name

COLUMNS = [
    ("model", "model"),
    ("accuracy", "accuracy"),
    ("top2_accuracy", "top-2"),
    ("macro_f1", "macro-F1"),
    ("params", "params"),
    ("macs", "MACs"),
    ("mb", "MB"),
    ("gzip_mb", "gzip MB"),
    ("weight_zeros", "zero weights"),
    ("ms_b1", "ms/face b1"),
    ("ms_b32", "ms/face b32"),
]


# -- what the graph holds ---------------------------------------------------------------------


def _const_arrays(proto) -> dict:
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def onnx_stats(path: str | os.PathLike) -> dict:
    """Parameters, MACs per forward pass (per face; x2 with flip TTA inside the graph), zero
    weights, quantization, file and gzip size of an ONNX classifier."""
    import onnx
    from onnx import shape_inference

    p = Path(path)
    raw = p.read_bytes()
    proto = onnx.load_from_string(raw)
    consts = _const_arrays(proto)
    producer = {o: n for n in proto.graph.node for o in n.output}

    def weight(name: str):
        """The stored array behind a weight input (through Dequantize/QuantizeLinear)."""
        seen = 0
        while name not in consts and name in producer and seen < 4:
            node = producer[name]
            if node.op_type not in ("DequantizeLinear", "QuantizeLinear", "Identity", "Cast"):
                return None
            name, seen = node.input[0], seen + 1
        return consts.get(name)

    # fix the batch to 1 for shape inference (the flip-TTA graph then runs a batch of 2)
    fixed = onnx.load_from_string(raw)
    for inp in fixed.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_value = 1
    try:
        inferred = shape_inference.infer_shapes(fixed)
        shapes = {
            vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
        }
    except Exception:  # noqa: BLE001 - MACs are then unknown, not fatal
        shapes = {}
    params = macs = zeros = counted = 0
    macs_known = True
    for n in proto.graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        w = weight(n.input[1])
        if w is None:
            continue
        b = weight(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        params += int(w.size) + (int(b.size) if b is not None else 0)
        zeros += int((w == 0).sum())
        counted += int(w.size)
        if n.op_type == "Conv":
            out = shapes.get(n.output[0])
            if out and len(out) == 4 and all(out[1:]):
                macs += int(np.prod(out[1:])) * int(np.prod(w.shape[1:]))
            else:
                macs_known = False
        else:
            macs += int(w.size)
    meta = {m.key: m.value for m in proto.metadata_props}
    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)
    return {
        "params": params,
        "macs": macs if macs_known else None,
        "weight_zeros": zeros / counted if counted else 0.0,
        "quantized": qdq,
        "tta": meta.get("edge_fer.tta", "none"),
        "arch": meta.get("edge_fer.arch", "?"),
        "bytes": len(raw),
        "mb": len(raw) / 1e6,
        "gzip_mb": len(gzip.compress(raw, compresslevel=9, mtime=0)) / 1e6,
    }


# -- latency ----------------------------------------------------------------------------------


def measure_latency(
    paths: list[str | os.PathLike],
    x: np.ndarray,
    threads: int = 1,
    batch_sizes: tuple[int, ...] = (1, 32),
    rounds: int = 5,
    calls: dict[int, int] | None = None,
    warmup: int = 5,
) -> list[dict]:
    """ms per face through ONNX Runtime for each model and batch size.

    x: prepared float32 input (N >= max batch size). The models are timed in interleaved
    rounds; each round makes `calls[b]` calls per model and batch size; the result is the median
    over all calls, divided by the batch size."""
    from edge_fer.backends.onnxruntime_backend import OnnxRuntimeBackend

    calls = calls or {1: 40, 32: 4}
    if len(x) < max(batch_sizes):
        reps = int(np.ceil(max(batch_sizes) / max(len(x), 1)))
        x = np.concatenate([x] * reps)
    backends = [OnnxRuntimeBackend(p, threads=threads) for p in paths]
    times: list[dict[int, list[float]]] = [{b: [] for b in batch_sizes} for _ in paths]
    try:
        for be in backends:
            for b in batch_sizes:
                for _ in range(warmup):
                    be.infer(x[:b])
        for r in range(rounds):
            for i, be in enumerate(backends):
                for b in batch_sizes:
                    for c in range(calls.get(b, 4)):
                        start = ((r * 7 + c) * b) % max(1, len(x) - b + 1)
                        xb = x[start : start + b]
                        t0 = time.perf_counter()
                        be.infer(xb)
                        times[i][b].append((time.perf_counter() - t0) * 1e3 / b)
    finally:
        for be in backends:
            be.close()
    return [{f"ms_b{b}": float(np.median(t[b])) for b in batch_sizes} for t in times]


# -- accuracy + everything --------------------------------------------------------------------


def load_eval_faces(
    data: str | os.PathLike,
    split: str | None = None,
    limit: int = 0,
    size: int = 48,
    skip_bad: bool = False,
    split_param: str = "split",
):
    """The evaluation faces: FER2013 PrivateTest by default (other layouts: all their images);
    `limit` takes an even sample (quick runs); `skip_bad`: skip unreadable images (counted in
    the set's `skipped`) instead of stopping. A FER2013 `split` other than "all" asked of
    another layout is a UserError naming `split_param` (the caller's name for it)."""
    from edge_fer.data import load_dataset
    from edge_fer.data.loaders import detect_layout

    path = Path(data)
    layout = detect_layout(path)
    if not layout.startswith("fer2013") and split not in (None, "all"):
        # before: taken as "all" without a word, so the faces scored were not those asked for
        raise UserError(
            f"{split} names a FER2013 split, and {data} has none (a {layout} dataset); "
            "leave it out (or give all) to score all its images",
            param=split_param,
        )
    split = (split or "private-test") if layout.startswith("fer2013") else "all"
    faces = load_dataset(path, split, size=size, layout=layout, skip_bad=skip_bad)
    return even_sample(faces, limit), split


def even_sample(faces, limit: int = 0):
    """An even sample of `limit` of the faces (0: all of them)."""
    if limit and len(faces) > limit:
        idx = np.linspace(0, len(faces) - 1, limit).round().astype(int)
        mask = np.zeros(len(faces), bool)
        mask[idx] = True
        faces = faces.subset(mask)
    return faces


def compare_models(
    rows: list[tuple[str, str | os.PathLike]],
    data: str | os.PathLike,
    split: str | None = None,
    threads: int = 1,
    eval_limit: int = 0,
    latency: bool = True,
    progress: bool = True,
    rounds: int = 5,
    tta: str = "none",
    extra_tta: tuple[str, ...] = (),
    skip_bad: bool = False,
    faces=None,
    mismatch_advice: str | None = None,
) -> dict:
    """Measure every (name, ONNX path) row; returns {"rows": [...], "setup": {...}}.

    faces: the labelled faces to score (a FaceSet, `split` its name) instead of `data`'s split:
    the held-out part of a dataset without FER2013's splits (`edge-fer prune` and `qat`).

    tta: the test-time augmentation of the main accuracy columns (edge_fer.tta; "none": one
    view, what the video runtime runs); extra_tta: modes whose accuracy is added as
    `accuracy_<mode>` / `macro_f1_<mode>` columns. Latency is always one view per face.
    mismatch_advice: what a refusal of the data's vocabulary advises (`evaluate.plan_vocabulary`)."""
    from edge_fer.tta import check_mode

    check_mode(tta, "tta")
    for m in extra_tta:
        check_mode(m, "extra_tta")
    from edge_fer.classify import Classifier
    from edge_fer.evaluate import evaluate

    if not rows:
        raise UserError("no models to compare")
    for name, p in rows:
        if not Path(p).is_file():
            raise UserError(f"{p}: no such model file (row {name!r})")
    if faces is None:
        faces, split = load_eval_faces(data, split, eval_limit, skip_bad=skip_bad)
    else:
        faces = even_sample(faces, eval_limit)
    results, specs = [], []
    for name, p in rows:
        with Classifier.load(p, threads=threads, tta=tta) as clf:
            rep = evaluate(clf, faces, batch_size=64, latency_samples=0, progress=progress,
                           mismatch_advice=mismatch_advice)  # fmt: skip
            specs.append(clf.spec)
            row = {
                "model": name,
                "path": portable_path(p),
                **{k: rep[k] for k in ("accuracy", "top2_accuracy", "macro_f1", "n")},
                **onnx_stats(p),
            }
            for m in extra_tta:
                clf.set_tta(m)
                r2 = evaluate(clf, faces, batch_size=64, latency_samples=0, progress=progress)
                row[f"accuracy_{m}"] = r2["accuracy"]
                row[f"macro_f1_{m}"] = r2["macro_f1"]
        results.append(row)
        print(f"  {name}: accuracy {row['accuracy']:.4f}", file=sys.stderr, flush=True)
    if latency:
        x = specs[0].prepare(faces.images[: min(64, len(faces))])
        for row, lat in zip(
            results, measure_latency([p for _, p in rows], x, threads, rounds=rounds)
        ):
            row.update(lat)
    import onnxruntime as ort

    setup = {
        "data": portable_path(data),  # no local absolute path in a report that travels
        "split": split,
        "n": len(faces),
        # with skip_bad: which report faces were skipped, as `edge-fer eval` names them
        **(
            {"skipped": faces.skipped, "skipped_entries": list(faces.skipped_entries)}
            if skip_bad
            else {}
        ),
        "threads": threads,
        "onnxruntime": ort.__version__,
        "cpu": cpu_name(),
        "tta": tta,
        "extra_tta": list(extra_tta),
        "latency": "ONNX Runtime CPU, inference only (prepared input), median over interleaved "
        "rounds after warm-up; ms per face",
        "macs": "per forward pass per face, from the graph (x2 per face with flip TTA)",
    }
    return {"rows": results, "setup": setup}


def _fmt(key: str, v) -> str:
    if v is None:
        return "-"
    if key in ("accuracy", "top2_accuracy", "macro_f1") or key.startswith(
        ("accuracy_", "macro_f1_")
    ):
        return f"{v:.4f}"
    if key == "params":
        return f"{v:,}"
    if key == "macs":
        return f"{v / 1e6:.1f}M"
    if key in ("mb", "gzip_mb"):
        return f"{v:.2f}"
    if key == "weight_zeros":
        return f"{100 * v:.0f}%"
    if key.startswith("ms_"):
        return f"{v:.3f}"
    return str(v)


def markdown_table(results: list[dict]) -> str:
    cols = [(k, h) for k, h in COLUMNS if any(k in r for r in results)]
    extra = sorted({k for r in results for k in r if k.startswith(("accuracy_", "macro_f1_"))})
    at = min(len(cols), 4)
    for k in reversed(extra):
        mode = k[len("macro_f1_") :] if k.startswith("macro") else k[len("accuracy_") :]
        cols.insert(at, (k, f"{'macro-F1' if k.startswith('macro') else 'accuracy'} ({mode})"))
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]
    for r in results:
        name = r["model"] + (" (flip in graph)" if r.get("tta") == "flip" else "")
        cells = [name] + [_fmt(k, r.get(k)) for k, _ in cols[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_markdown(
    title: str, comparison: dict, notes: list[str] | None = None, run: dict | None = None
) -> str:
    s = comparison["setup"]
    out = [
        f"# {title}",
        "",
        (
            f"{s['data']} {s['split']} ({s['n']} faces); ONNX Runtime {s['onnxruntime']}, "
            f"{s['threads']} thread(s), {s['cpu']}. Accuracy columns: test-time augmentation "
            f"{s.get('tta', 'none')!r} unless the column names another."
        ),
        "",
        markdown_table(comparison["rows"]),
        "",
        f"- latency: {s['latency']}",
        f"- MACs: {s['macs']}",
    ]
    out += [f"- {n}" for n in notes or []]
    if run:  # before: only in report.json
        settings = ", ".join(f"{k}={v}" for k, v in run["settings"].items() if v is not None)
        out += ["", "## Run", "", "```", run["command"], "```", ""]
        out += [f"- seed: {run['seed']}", f"- settings: {settings}"]
    return "\n".join(out) + "\n"


def write_report(
    out_dir: str | os.PathLike,
    comparison: dict,
    title: str,
    extra: dict | None = None,
    notes: list[str] | None = None,
    run: dict | None = None,
) -> tuple[Path, Path]:
    """Write report.md and report.json (through temporary files) into out_dir. `run`: the
    command line, seed and settings ({"command", "seed", "settings"}) report.md ends with."""
    from edge_fer.compress.io import write_json_atomic, write_text_atomic

    out = Path(out_dir)
    md, js = out / "report.md", out / "report.json"
    write_text_atomic(md, report_markdown(title, comparison, notes, run))
    write_json_atomic(js, {**(extra or {}), **comparison, "notes": notes or []})
    return md, js


def compression_report(
    rows: list[tuple[str, str | os.PathLike]],
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    title: str = "Compression report",
    **kwargs,
) -> dict:
    """compare_models + write_report: the one-table report of the issue."""
    comp = compare_models(rows, data, **kwargs)
    write_report(out_dir, comp, title)
    return comp


def main(argv: list[str] | None = None) -> int:
    """python -m edge_fer.compress.report --data FER --out DIR name=model.onnx ..."""
    import argparse

    ap = argparse.ArgumentParser(
        description="One table comparing ONNX models (accuracy, size, MACs, latency)."
    )
    ap.add_argument("rows", nargs="+", metavar="NAME=MODEL.onnx", help="a table row")
    ap.add_argument("--data", required=True, help="dataset (FER2013 folder or csv)")
    ap.add_argument("--split", default=None, help="FER2013 split [default: private-test]")
    ap.add_argument("--out", required=True, help="folder for report.md and report.json")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    ap.add_argument("--eval-limit", type=int, default=0, help="evaluate on an even sample")
    ap.add_argument("--title", default="Compression report", help="report title")
    ap.add_argument(
        "--extra-tta",
        default="zoom-flip",
        help="comma-separated TTA modes of extra accuracy columns ('' for none)",
    )
    args = ap.parse_args(argv)
    rows = []
    for r in args.rows:
        name, sep, path = r.partition("=")
        if not sep:
            ap.error(f"row {r!r} is not NAME=MODEL.onnx")
        rows.append((name, path))
    try:
        comp = compression_report(
            rows,
            args.data,
            args.out,
            args.title,
            split=args.split,
            threads=args.threads,
            eval_limit=args.eval_limit,
            extra_tta=tuple(m for m in args.extra_tta.split(",") if m),
        )
    except UserError as exc:
        # the flag in place of the library's parameter name (split -> --split)
        flags = {"split": "--split", "eval_limit": "--eval-limit", "extra_tta": "--extra-tta"}
        print(f"edge-fer report: error: {exc.render(flags.get(exc.param or ''))}", file=sys.stderr)
        return 2
    print(markdown_table(comp["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
