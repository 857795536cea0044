"""The studies on exported models: `architectures` (the zoo side by side) and `compression`
(FP32 / structured-pruned / INT8 of one model).

Every model is measured the way it ships: exported to ONNX (`edge_fer.export.onnx`), INT8 by
the calibration behind `edge-fer calibrate` (`edge_fer.quantize.calibrate`, ONNX Runtime CPU
Q/DQ, entropy ranges on a class-stratified sample of training faces), scored one view per face
with `edge_fer.evaluate.evaluate` (the code of `edge-fer eval`), sized and timed with
`edge_fer.compress.report` (the code of the compression reports).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from edge_fer import fileio
from edge_fer.errors import UserError
from edge_fer.experiment import heading, plots
from edge_fer.experiment import report as R
from edge_fer.experiment.data import StudyData, study_data
from edge_fer.experiment.measure import content_key, made_from
from edge_fer.experiment.runs import check_claim, claim, epochs_done, read_log, train_variant

NO_REPORT: dict = {"per_class": {}}  # an INT8 row that could not be made


def _calib_faces(sd: StudyData, n: int, seed: int):
    from edge_fer.quantize.calib_data import CalibFaces, stratified_sample

    idx = stratified_sample(sd.train.labels, min(n, len(sd.train)), seed)
    return CalibFaces(
        images=sd.train.images[idx],
        ids=[sd.train.ids[i] for i in idx],
        source=f"{sd.root.name} (training part)",
        labels=sd.train.labels[idx],
        classes=tuple(sd.classes),
        seen=len(sd.train),
    )


def int8_of(fp32: Path, faces, out_dir: Path, more: str = "a larger --max-train-faces") -> Path:
    """The ONNX Runtime CPU INT8 model of `fp32` (reused when made from it and `faces`); `more`: what
    would give more calibration faces, for the message when there are too few."""
    from edge_fer.quantize import calibrate
    from edge_fer.quantize.calib_data import MIN_FACES
    from edge_fer.quantize.pipeline import CPU_NAME

    if len(faces) < MIN_FACES:  # in the study's own terms (calibrate's names --samples)
        raise UserError(
            f"{len(faces)} training faces to calibrate on; at least {MIN_FACES} are needed ({more})"
        )
    q = out_dir / CPU_NAME
    # reused only when made from this model and these faces (--calib-faces, --seed)
    key_file = out_dir / "study.key"
    key = content_key(fp32, faces.images)
    if q.is_file() and made_from(key_file, key):
        return q
    key_file.unlink(missing_ok=True)
    info = calibrate(
        fp32, faces, out_dir, target="cpu", threads=1, check_agreement=False, force=True
    )  # a stale cache of our own
    key_file.write_text(key + "\n")
    return Path(info["files"]["cpu"])


def eval_onnx(path: Path, sd: StudyData) -> dict:
    from edge_fer.classify import Classifier
    from edge_fer.evaluate import evaluate

    with Classifier.load(path, threads=1, tta="none") as clf:
        return evaluate(clf, sd.test, batch_size=64, latency_samples=0, progress=False)


def _trained_entries(opts, sd: StudyData, archs) -> list[dict]:
    """Train (at the study's budget) each architecture; entries for the table."""
    from edge_fer.experiment.studies import _run_key, _tree_for, check_runs, mapped_variant

    variants = [mapped_variant(sd, a, a, sd.trained_classes, arch=a) for a in archs]
    check_runs(opts, sd, variants)
    out = []
    for v in variants:
        run = opts.workdir / "runs" / v.name
        train_variant(run, _tree_for(opts, sd, v), v.arch, opts.budget, _run_key(opts, sd, v))
        out.append({"name": v.name, "arch": v.arch, "run": run})
    return out


def check_classes(name: str, model_classes, sd: StudyData, fix: str) -> None:
    """A model scored on the study's test faces must answer every class they hold (the rule of
    `edge-fer eval` without --label-set), checked before anything is trained: before, a bundled
    model without the data's class failed after the whole zoo had trained, with eval's flags."""
    from edge_fer import labels as L

    present = tuple(c for c, n in zip(sd.test.classes, sd.test.counts()) if n)
    m = L.mapping(present, tuple(model_classes))  # (both sides read canonically)
    missing = [c for c in present if m[c] is None]
    if missing:
        raise UserError(
            f"{name} has no class {', '.join(missing)} of the test faces of --data (it knows "
            f"{', '.join(model_classes)}); {fix}"
        )


def _bundled_classes(path) -> tuple[str, ...]:
    from edge_fer.classify import Classifier

    with Classifier.load(path, threads=1, tta="none") as clf:
        return tuple(clf.classes)


def _run_classes(run: Path) -> tuple[str, ...] | None:
    from edge_fer.train.checkpoint import read_state

    names = (read_state(run / "best.safetensors").get("spec") or {}).get("class_names")
    return tuple(names.split(",")) if isinstance(names, str) and names else None


def _run_entries(runs: Path, archs) -> tuple[list[dict], list[str]]:
    out, notes = [], []
    for a in archs:
        run = runs / a
        if not (run / "best.safetensors").is_file():
            # (said in the report too: no local absolute path)
            notes.append(f"{a}: no {a}/best.safetensors in --runs (not trained, or no epoch yet)")
            continue
        from edge_fer.train.checkpoint import read_state

        trained = (read_state(run / "best.safetensors").get("config") or {}).get("arch")
        if trained and trained != a:  # before: reported as `a`, with the other net's figures
            raise UserError(
                f"{run} holds a {trained!r} run, not {a!r}: the study reads <runs>/<arch>/",
                param="runs",
            )
        out.append({"name": a, "arch": a, "run": run})
    return out, notes


def _epochs_of(e: dict) -> str:
    return e.get("epochs") or _epochs_text(e)


def _bundled_epochs(path) -> str:
    """ "bundled (epoch B of E)" from the model's own provenance metadata (the export records
    the chosen epoch and the planned schedule), so it cannot go stale when the weights change."""
    from edge_fer.backends.trt_common import onnx_metadata

    try:
        prov = json.loads(onnx_metadata(path).get("edge_fer.provenance") or "{}")
        best, planned = prov.get("best_epoch"), (prov.get("config") or {}).get("epochs")
        # a run's epochs ("epoch_101.safetensors"); an average of other checkpoints has none
        found = [
            re.fullmatch(r"epoch_(\d+)\.safetensors", n) for n in prov.get("averaged_from") or []
        ]
        averaged = [int(m.group(1)) for m in found] if all(found) else []
    except (UserError, ValueError, AttributeError, TypeError):  # unreadable: the card says
        best = planned = None
        averaged = []
    if averaged and planned:
        return f"bundled (epochs {min(averaged)}-{max(averaged)} of {planned} averaged)"
    if best and planned:
        return f"bundled (epoch {best} of {planned})"
    return "bundled (see its card)"


def _epochs_text(e: dict) -> str:
    if e.get("bundled"):
        return _bundled_epochs(e["onnx"])
    run = e["run"]
    planned = None
    try:
        planned = json.loads((run / "config.json").read_text()).get("epochs")
    except (OSError, ValueError):
        pass
    done = epochs_done(run)
    return f"{done} of {planned}" if planned else str(done)


def _measure(opts, sd: StudyData, entries: list[dict]) -> list[dict]:
    from edge_fer.experiment.measure import export_run, onnx_rows

    faces = _calib_faces(sd, opts.calib_faces, opts.budget.seed)
    # what would give more: the sample's limit, or (all of the training part in it) more data
    more = (
        "a larger --max-train-faces"
        if len(sd.train) < sd.train_available
        else f"--data's training part has {sd.train_available} faces in all"
    )
    for e in entries:
        w = opts.workdir / "onnx" / re.sub(r"[^\w.-]+", "_", e["name"])
        if e.get("onnx") is None:
            print(f"experiment: exporting {e['name']}", file=sys.stderr, flush=True)
            e["onnx"] = w / "model.onnx"
            export_run(e["run"], e["onnx"], sd.test.images[:64])
        print(f"experiment: INT8 calibration of {e['name']}", file=sys.stderr, flush=True)
        try:
            e["int8"] = int8_of(e["onnx"], faces, w / "int8", more)
        except UserError as exc:  # e.g. a graph the quantizer cannot take: FP32 row only
            e["int8"], e["int8_error"] = None, str(exc)
        e["fp32_rep"] = eval_onnx(e["onnx"], sd)
        e["int8_rep"] = eval_onnx(e["int8"], sd) if e["int8"] else NO_REPORT
        e["log"] = read_log(e["run"]) if e.get("run") else []
        # no INT8 model: why, in its place (was "INT8 nan", the reason on a line of its own)
        int8 = (
            f"INT8 {e['int8_rep']['accuracy']:.4f}"
            if e["int8"]
            else f"INT8 skipped: {e['int8_error']}"
        )
        print(
            f"experiment: {e['name']}: accuracy FP32 {e['fp32_rep']['accuracy']:.4f}, {int8}",
            file=sys.stderr,
            flush=True,
        )
    paths = [p for e in entries for p in (e["onnx"], e["int8"]) if p]
    stats = iter(onnx_rows(paths, opts.latency_threads))
    for e in entries:
        e["fp32_stats"] = next(stats)
        e["int8_stats"] = next(stats) if e["int8"] else {}
    return entries


def _main_table(entries: list[dict], first: str = "model") -> str:
    head = [
        first,
        "epochs",
        "acc FP32",
        "macro-F1 FP32",
        "acc INT8",
        "macro-F1 INT8",
        "params",
        "MMACs",
        "MB FP32",
        "MB INT8",
        "ms b1 FP32",
        "ms b32 FP32",
        "ms b1 INT8",
        "ms b32 INT8",
    ]
    rows = []
    for e in entries:
        f, q, fs, qs = e["fp32_rep"], e["int8_rep"], e["fp32_stats"], e["int8_stats"]
        rows.append(
            [
                e["name"],
                e.get("epochs") or _epochs_text(e),
                R.f4(f["accuracy"]),
                R.f4(f["macro_f1"]),
                R.f4(q.get("accuracy")),
                R.f4(q.get("macro_f1")),
                f"{fs['params']:,}",
                f"{(fs['macs'] or 0) / 1e6:.1f}",
                f"{fs['mb']:.2f}",
                f"{qs['mb']:.2f}" if qs else None,
                R.f3(fs.get("ms_b1")),
                R.f3(fs.get("ms_b32")),
                R.f3(qs.get("ms_b1")),
                R.f3(qs.get("ms_b32")),
            ]
        )
    return R.table(head, rows, "ll" + "r" * 12)


def _recall_table(entries: list[dict]) -> str:
    classes = entries[0]["fp32_rep"]["labels"]
    rows = []
    for e in entries:
        for prec in ("fp32", "int8"):
            rep = e[f"{prec}_rep"]
            if not rep["per_class"]:
                continue
            rows.append(
                [f"{e['name']} {prec.upper()}"]
                + [R.f3(rep["per_class"][c]["recall"]) for c in classes]
            )
    return R.table(["model", *classes], rows)


def _figures(opts, entries: list[dict]) -> list[str]:
    out = R.stage(opts.out)  # published with the README (R.write_with_figures)
    figs = [
        plots.confusion_grid(
            [(f"{e['name']} FP32", e["fp32_rep"]) for e in entries], out / "confusion.png"
        ),
    ]
    logs = [(e["name"], e["log"]) for e in entries if e.get("log")]
    if logs:
        figs.append(plots.curves(logs, out / "curves.png"))
    pts = []
    for e in entries:
        for prec in ("fp32", "int8"):
            ms = e[f"{prec}_stats"].get("ms_b1")
            if ms:
                pts.append((f"{e['name']} {prec.upper()}", ms, e[f"{prec}_rep"]["accuracy"]))
    figs.append(
        plots.acc_vs_ms(pts, out / "accuracy_vs_ms.png", "ms/face at batch 1 (ONNX Runtime CPU)")
    )
    figs.append(
        plots.recall_bars([(e["name"], e["fp32_rep"]) for e in entries], out / "recall.png")
    )
    return figs


def _findings(entries: list[dict]) -> list[str]:
    best = max(entries, key=lambda e: e["fp32_rep"]["accuracy"])
    lines = [
        (
            f"- most accurate (FP32): {best['name']} ({best['fp32_rep']['accuracy']:.4f}, "
            f"macro-F1 {best['fp32_rep']['macro_f1']:.4f}, epochs {_epochs_of(best)})."
        ),
    ]
    said = None  # the one reason no model has INT8, said once
    int8 = [e for e in entries if e["int8"]]
    if int8:
        fastest = min(int8, key=lambda e: e["int8_stats"].get("ms_b1") or 1e9)
        lines.append(
            f"- fastest at batch 1 INT8: {fastest['name']} "
            f"({fastest['int8_stats']['ms_b1']:.3f} ms/face, accuracy "
            f"{fastest['int8_rep']['accuracy']:.4f})."
        )
    else:  # before: the FP32 fastest named as the INT8 one, "0.000 ms/face, accuracy 0.0000"
        fastest = min(entries, key=lambda e: e["fp32_stats"].get("ms_b1") or 1e9)
        why = {e.get("int8_error") for e in entries}
        said = why.pop() if len(why) == 1 else None
        lines.append(
            f"- fastest at batch 1 FP32: {fastest['name']} "
            f"({fastest['fp32_stats']['ms_b1']:.3f} ms/face, accuracy "
            f"{fastest['fp32_rep']['accuracy']:.4f}); INT8 not measured"
            + (f": {said}." if said else " (why: below).")
        )
    for e in entries:
        if said and e.get("int8_error") == said:
            continue
        if e.get("int8_error"):
            lines.append(f"- {e['name']}: no INT8 model ({e['int8_error']}).")
            continue
        d = 100 * (e["int8_rep"]["accuracy"] - e["fp32_rep"]["accuracy"])
        f, q = e["fp32_stats"].get("ms_b1"), e["int8_stats"].get("ms_b1")
        sp = f"; batch-1 speed-up x{f / q:.2f}" if f and q else ""
        lines.append(f"- {e['name']}: INT8 {d:+.2f} accuracy points vs FP32{sp}.")
    from edge_fer.experiment.studies import noise_line

    lines.append(noise_line(best["fp32_rep"]["n"], best["fp32_rep"]["accuracy"]))
    return lines


def study_architectures(opts) -> Path:
    from edge_fer import labels as L
    from edge_fer.classify import default_model_path

    sd = study_data(opts)
    notes = []
    vocab: dict[str, tuple[str, ...]] = {}  # each model's classes, read canonically
    if opts.vgg_onnx:
        classes = _bundled_classes(default_model_path())
        check_classes("the bundled vgg model", classes, sd, "leave it out with --no-bundled")
        vocab["the bundled vgg model"] = tuple(L.canonical(c) for c in classes)
    if opts.runs is not None:
        entries, notes = _run_entries(opts.runs, opts.archs)
        for e in entries:
            classes = _run_classes(e["run"])
            if classes:
                check_classes(
                    str(e["run"]), classes, sd, "the study scores every model on --data's classes"
                )
                vocab[str(e["run"])] = tuple(L.canonical(c) for c in classes)
        if len(set(vocab.values())) > 1:  # one table of per-class recall: one vocabulary (a
            # 3-class run beside 7-class ones was a KeyError after all the measuring)
            said = "; ".join(f"{k}: {', '.join(v)}" for k, v in vocab.items())
            raise UserError(
                f"holds models that answer other classes ({said}); the study compares models "
                "of one vocabulary",
                param="runs",
            )
        source = (
            f"finished run folders `{fileio.portable_path(opts.runs)}/<arch>/` "
            "(best.safetensors), not retrained"
        )
    else:
        entries = _trained_entries(opts, sd, opts.archs)
        source = "trained here at the budget below"
    if opts.vgg_onnx:
        notes = [
            "vgg: no run folder; the bundled model (vgg_bundled) stands for it"
            if n.startswith("vgg:")
            else n
            for n in notes
        ]
        entries.append(
            {
                "name": "vgg_bundled",
                "arch": "vgg",
                "bundled": True,
                "onnx": default_model_path(),
                "run": None,
            }
        )
    if not entries:
        raise UserError("no model to measure: " + "; ".join(notes))
    entries = _measure(opts, sd, entries)
    figs = _figures(opts, entries)
    budget = opts.budget.text()
    split = sd.split + f"; {sd.describe()}"
    if opts.runs is not None:
        split = sd.split + f"; {sd.describe_test()}; INT8 calibration faces from the training part"
        budget = (
            "the runs' own training (epochs column: epochs in each log.csv of the epochs its "
            "config.json planned; a run still training was measured at its best epoch so far); "
            f"this study: test faces at most {opts.budget.max_test_faces or 'all'}, "
            f"{opts.calib_faces} calibration faces"
        )
    lines = [
        heading("architectures"),
        "",
        (
            "The model zoo side by side, each model exported to ONNX and to INT8 (ONNX Runtime CPU "
            f"Q/DQ, entropy calibration on {opts.calib_faces} class-stratified training faces), "
            "scored with one view per face (no test-time augmentation: what the video runtime "
            f"runs). Models: {source}."
        ),
        "",
        R.setup_block(
            "architectures",
            str(opts.data),
            split,
            opts.budget.seed,
            opts.command,
            budget,
            [f"**models**: {', '.join(e['name'] for e in entries)}"],
        ),
        "",
        _main_table(entries),
        "",
        "Per-class recall on the test split:",
        "",
        _recall_table(entries),
        "",
    ]
    lines += [f"- not measured: {n}" for n in notes] + ([""] if notes else [])
    if opts.runs is None and (opts.budget.epochs < 20 or opts.budget.max_train_faces):
        lines += ["**Short budget**: not converged models; compare them at this budget only.", ""]
    lines += ["## Findings", "", *_findings(entries), ""]
    lines += [
        (
            "- MACs and parameters are read from the ONNX graph (batch norms folded); MB is the "
            "file size."
        ),
        f"- {R.latency_line(opts.latency_threads)}.",
        "",
    ]
    return R.write_with_figures(opts.out, lines, figs)


def study_compression(opts) -> Path:
    from edge_fer.compress.finetune import FinetuneConfig, load_finetune_data
    from edge_fer.compress.io import load_source
    from edge_fer.compress.prune import PruneConfig, run_prune
    from edge_fer.experiment.measure import export_run
    from edge_fer.experiment.studies import _run_key, _tree_for, check_runs, mapped_variant

    sd = study_data(opts)
    v = mapped_variant(sd, f"base-{opts.arch}", opts.arch, sd.trained_classes, arch=opts.arch)
    run = opts.workdir / "runs" / v.name
    pdir = opts.workdir / "pruned"
    pcfg = PruneConfig(method="structured", target_macs_reduction=0.5, steps=1)
    b = opts.budget
    fcfg = FinetuneConfig(
        epochs=b.epochs,
        batch_size=b.batch_size,
        seed=b.seed,
        threads=b.threads,
        max_batches=b.max_batches,
        device="cpu",
    )
    # the base run named within the work folder: a path as typed changed with the working
    # folder, and the same study resumed from elsewhere was "made with other settings"
    base = os.path.relpath(run, opts.workdir).replace(os.sep, "/")
    pkey = {"base": base, "prune": pcfg.__dict__, "finetune": fcfg.__dict__}
    check_runs(opts, sd, [v])  # both folders, before the base model trains
    check_claim(pdir, pkey)
    tree = _tree_for(opts, sd, v)
    train_variant(run, tree, opts.arch, opts.budget, _run_key(opts, sd, v))
    w = opts.workdir / "onnx"
    fp32 = w / "base" / "model.onnx"
    export_run(run, fp32, sd.test.images[:64])
    pruned = pdir / "pruned.onnx"
    claim(pdir, pkey)
    # remade when the base checkpoint changed (its settings are the claim's key)
    pruned_key, key = pdir / "study.key", content_key(run / "best.safetensors")
    if not (pruned.is_file() and made_from(pruned_key, key)):
        pruned_key.unlink(missing_ok=True)
        src = load_source(run / "best.safetensors")
        data = load_finetune_data(str(tree), src.spec, fcfg)
        print("experiment: structured pruning (50% of the MACs) + fine-tuning", file=sys.stderr)
        run_prune(src, data, pcfg, fcfg, pdir, check_faces=sd.test.images[:64])
        pruned_key.write_text(key + "\n")
    base_log = read_log(run)
    entries = [
        {"name": f"{opts.arch} FP32", "onnx": fp32, "run": run, "epochs": str(len(base_log))},
        {
            "name": f"{opts.arch} pruned",
            "onnx": pruned,
            "run": None,
            "epochs": f"{len(base_log)} + {b.epochs} fine-tuning",
        },
    ]
    entries = _measure(opts, sd, entries)
    # the table's rows: FP32, INT8, pruned, pruned + INT8, each its own line
    rows = []
    for e in entries:
        for prec in ("fp32", "int8"):
            if prec == "int8" and not e["int8"]:  # too few faces to calibrate: said below
                continue
            name = e["name"] if prec == "fp32" else e["name"].replace(" FP32", "") + " INT8"
            rows.append(
                {
                    "name": name,
                    "rep": e[f"{prec}_rep"],
                    "st": e[f"{prec}_stats"],
                    "epochs": e["epochs"],
                }
            )
    table = R.table(
        [
            "model",
            "epochs",
            "test acc",
            "macro-F1",
            "top-2",
            "params",
            "MMACs",
            "MB",
            "gzip MB",
            "ms b1",
            "ms b32",
        ],
        [
            [
                r["name"],
                r["epochs"],
                R.f4(r["rep"]["accuracy"]),
                R.f4(r["rep"]["macro_f1"]),
                R.f4(r["rep"]["top2_accuracy"]),
                f"{r['st']['params']:,}",
                f"{(r['st']['macs'] or 0) / 1e6:.1f}",
                f"{r['st']['mb']:.2f}",
                f"{r['st']['gzip_mb']:.2f}",
                R.f3(r["st"].get("ms_b1")),
                R.f3(r["st"].get("ms_b32")),
            ]
            for r in rows
        ],
        "ll" + "r" * 9,
    )
    stage = R.stage(opts.out)  # published with the README (R.write_with_figures)
    figs = [
        plots.confusion_grid([(r["name"], r["rep"]) for r in rows], stage / "confusion.png"),
        plots.curves([(f"{opts.arch} base", base_log)], stage / "curves.png"),
        plots.acc_vs_ms(
            [
                (r["name"], r["st"]["ms_b1"], r["rep"]["accuracy"])
                for r in rows
                if r["st"].get("ms_b1")
            ],
            stage / "accuracy_vs_ms.png",
            "ms/face at batch 1 (ONNX Runtime CPU)",
        ),
    ]
    base = rows[0]
    lines = [
        heading("compression"),
        "",
        (
            f"One `{opts.arch}` trained at the budget below, then: INT8 (ONNX Runtime CPU Q/DQ, "
            f"entropy calibration on {opts.calib_faces} training faces), structured pruning of "
            "50% of the MACs (torch-pruning, L2 importance, one round, fine-tuned for the same "
            "number of epochs as the base; `edge-fer prune`), and the pruned model in INT8."
        ),
        "",
        R.setup_block(
            "compression",
            str(opts.data),
            sd.split + f"; {sd.describe()}",
            b.seed,
            opts.command,
            b.text(),
            [f"**architecture**: `{opts.arch}`"],
        ),
        "",
        table,
        "",
    ]
    if b.epochs < 20 or b.max_train_faces:
        lines += ["**Short budget**: not converged; compare the rows with each other only.", ""]
    lines += ["## Findings", ""]
    for r in rows[1:]:
        d = 100 * (r["rep"]["accuracy"] - base["rep"]["accuracy"])
        f, q = base["st"].get("ms_b1"), r["st"].get("ms_b1")
        sp = f", batch-1 speed-up x{f / q:.2f}" if f and q else ""
        lines.append(
            f"- {r['name']}: {d:+.2f} accuracy points vs FP32{sp}, "
            f"{r['st']['mb']:.2f} MB vs {base['st']['mb']:.2f}."
        )
    for e in entries:
        if not e["int8"]:
            lines.append(f"- {e['name']}: no INT8 model ({e.get('int8_error')}).")
    lines.append(
        f"- the pruned rows trained {b.epochs} more epochs (the fine-tuning after pruning) than "
        "the base: at a short budget that extra training, not the pruning, can explain a gain "
        "over the base; compare the pruned rows with each other and the MACs, size and latency "
        "columns."
    )
    from edge_fer.experiment.studies import noise_line

    lines.append(noise_line(base["rep"]["n"], base["rep"]["accuracy"]))
    lines += [
        (
            "- ms/face: ONNX Runtime CPU, inference on a prepared input, median of interleaved "
            "rounds; measured on a shared CPU: preliminary, rerun the command in a quiet window."
        ),
        "",
    ]
    return R.write_with_figures(opts.out, lines, figs)
