"""The studies. Each one checks everything it needs (study name, data, classes, colour,
alignment) before any training, trains its variants (resumable, under --work), measures them on
one test split and writes README.md + PNGs into --out."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edge_fer import labels as L
from edge_fer.errors import UserError
from edge_fer.experiment import STUDIES, heading, plots
from edge_fer.experiment import report as R
from edge_fer.experiment.data import StudyData, colour_check, link_tree, study_data
from edge_fer.experiment.runs import (
    Options,
    check_claim,
    epochs_done,
    read_log,
    run_key,
    train_variant,
    warmup_for,
)

GROUPINGS = {
    "7": ("7 classes", L.FER2013),
    "6": ("6 classes (no disgust)", L.GROUPED6),
    "3": ("3 groups (negative / neutral / positive)", L.GROUPED3),
}
PREPROCESSING = {
    "plain": ("plain crop", {}),
    "clahe": ("CLAHE", {"clahe": True}),
    "clahe+align": ("CLAHE + eye alignment", {"clahe": True, "align": True}),
}
CHANNELS = {
    "gray1": "1 channel: grayscale",
    "gray3": "3 channels: grayscale copied to each (the trainer's --channels 3)",
    "colour3": "3 channels: colour (BGR)",
}


@dataclass
class Variant:
    name: str
    about: str
    vocab: tuple[str, ...]  # the classes it learns and is scored in
    names: list[str | None]  # data class index -> training class folder (None: left out)
    options: dict = field(default_factory=dict)
    colour: bool = False
    arch: str = ""


# -- checks before training -------------------------------------------------------------------


def check_study(name: str) -> str:
    if name not in STUDIES:
        raise UserError(f"unknown study {name!r}; choose one of {', '.join(STUDIES)}")
    return name


def _pick(allowed: dict | tuple, asked: tuple[str, ...], what: str) -> list[str]:
    names = list(allowed)
    if not asked:
        return names
    bad = [a for a in asked if a not in names]
    if bad:
        raise UserError(f"unknown {what} {', '.join(bad)}; choose from {', '.join(names)}")
    return [a for a in names if a in asked]


def mapped_variant(sd: StudyData, name: str, about: str, vocab, **kw) -> Variant:
    """A variant whose training classes are the data's classes mapped onto `vocab`
    (edge_fer.labels.mapping: synonyms, groups); classes without a counterpart are left out.
    UserError when a class of `vocab` would have no training or no test face."""
    m = L.mapping(tuple(sd.classes), tuple(vocab))
    names = [m[c] for c in sd.classes]
    for part, fs in (("training", sd.train), ("test", sd.test)):
        counts = fs.counts()
        have = {names[i] for i in range(len(names)) if names[i] is not None and counts[i]}
        empty = [c for c in vocab if c not in have]
        if empty:
            raise UserError(
                f"{about}: class {', '.join(empty)} would have no {part} faces in {sd.root} "
                f"({sd.describe()})"
            )
    return Variant(name, about, tuple(vocab), names, **kw)


def _tree_for(opts: Options, sd: StudyData, v: Variant) -> Path:
    key = hashlib.sha1(json.dumps(v.names).encode()).hexdigest()[:10]
    return link_tree(sd.root, sd.train, v.names, opts.workdir / "trees" / key)


def _run_key(opts: Options, sd: StudyData, v: Variant) -> dict:
    return {
        "study": opts.study,
        "variant": v.name,
        "data": str(sd.root.resolve()),
        "classes": list(v.vocab),
        "test_fraction": opts.test_fraction,
    }


def variant_run(opts: Options, sd: StudyData, v: Variant) -> tuple[Path, dict]:
    """The run folder of a variant and what its `study.json` must say."""
    from edge_fer.experiment.colour import colour_key

    key = _run_key(opts, sd, v)
    arch = v.arch or opts.arch
    full = (
        colour_key(arch, key, opts.budget)
        if v.colour
        else run_key(arch, key, opts.budget, **v.options)
    )
    return opts.workdir / "runs" / v.name, full


def check_runs(opts: Options, sd: StudyData, variants: list[Variant]) -> None:
    """Every variant's run folder is new or holds this variant: checked before any training."""
    for v in variants:
        check_claim(*variant_run(opts, sd, v))


def train_all(opts: Options, sd: StudyData, variants: list[Variant]) -> dict[str, Path]:
    from edge_fer.experiment.colour import train_colour

    check_runs(opts, sd, variants)
    runs = {}
    for v in variants:
        tree = _tree_for(opts, sd, v)
        run = opts.workdir / "runs" / v.name
        key = _run_key(opts, sd, v)
        if v.colour:
            runs[v.name] = train_colour(run, tree, v.arch or opts.arch, opts.budget, key)
        else:
            runs[v.name] = train_variant(
                run, tree, v.arch or opts.arch, opts.budget, key, **v.options
            )
    return runs


# -- measuring --------------------------------------------------------------------------------


def measure_runs(opts: Options, sd: StudyData, variants: list[Variant], runs: dict) -> list[dict]:
    """Test metrics (torch, the run's own preprocessing) and ONNX size / latency per variant."""
    from edge_fer.experiment.colour import colour_probs
    from edge_fer.experiment.data import read_colour
    from edge_fer.experiment.measure import export_run, onnx_rows, run_probs, score

    rows = []
    colour_x = None
    for v in variants:
        run = runs[v.name]
        if v.colour:
            if colour_x is None:
                colour_x = read_colour(sd.root, sd.test.ids)
            probs, model_classes = colour_probs(run, colour_x)
        else:
            probs, _, model_classes = run_probs(run, sd.test.images)
        rep = score(probs, sd.test.labels, sd.classes, model_classes, v.vocab)
        onnx_path = opts.workdir / "onnx" / f"{v.name}.onnx"
        check = None if v.colour or v.options.get("align") else sd.test.images[:64]
        export_run(run, onnx_path, check)
        rows.append(
            {
                "variant": v,
                "run": run,
                "report": rep,
                "onnx": onnx_path,
                "log": read_log(run),
                "probs": probs,
                "model_classes": model_classes,
            }
        )
    for row, st in zip(rows, onnx_rows([r["onnx"] for r in rows], opts.latency_threads)):
        row["onnx_stats"] = st
    return rows


def _recall_text(rep: dict) -> str:
    return " / ".join(f"{c[:3]} {rep['per_class'][c]['recall']:.2f}" for c in rep["labels"])


def _budget_note(opts: Options, rows: list[dict]) -> str:
    b = opts.budget
    short = b.epochs < 20 or b.max_train_faces or b.max_batches
    if not short:
        return ""
    from edge_fer.classify import default_model_path
    from edge_fer.experiment.zoo import _bundled_epochs

    # the bundled model's schedule from its own metadata (a fixed "36 epochs" went stale)
    bundled = _bundled_epochs(default_model_path()).replace("bundled (", "").rstrip(")")
    return (
        f"**Short budget**: these are not converged models (the bundled vgg: {bundled}, "
        "see its model card). Compare the variants with each other, at this budget only; "
        "differences of a few points are within the noise of a small test set."
    )


def _classes_text(v: Variant, model_classes) -> str:
    n = len(v.vocab)
    return str(n) if len(model_classes) == n else f"{n} ({len(model_classes)} outputs)"


def variant_table(rows: list[dict]) -> str:
    head = [
        "variant",
        "what",
        "classes",
        "epochs",
        "test acc",
        "macro-F1",
        "top-2",
        "per-class recall",
        "params",
        "MMACs",
        "ms/face b1",
        "ms/face b32",
    ]
    body = []
    for r in rows:
        v, rep, st = r["variant"], r["report"], r.get("onnx_stats", {})
        body.append(
            [
                v.name,
                v.about,
                _classes_text(v, r["model_classes"]),
                epochs_done(r["run"]),
                R.f4(rep["accuracy"]),
                R.f4(rep["macro_f1"]),
                R.f4(rep["top2_accuracy"]),
                _recall_text(rep),
                f"{st.get('params', 0):,}",
                f"{(st.get('macs') or 0) / 1e6:.1f}",
                R.f3(st.get("ms_b1")),
                R.f3(st.get("ms_b32")),
            ]
        )
    return R.table(head, body, "lllr" + "r" * 8)


def figures(opts: Options, rows: list[dict], ms_label: str) -> list[str]:
    out = R.stage(opts.out)  # published with the README (R.write_with_figures)
    figs = [
        plots.confusion_grid(
            [(r["variant"].name, r["report"]) for r in rows], out / "confusion.png"
        ),
        plots.curves([(r["variant"].name, r["log"]) for r in rows], out / "curves.png"),
    ]
    pts = [
        (r["variant"].name, r["onnx_stats"].get("ms_b1"), r["report"]["accuracy"])
        for r in rows
        if r.get("onnx_stats", {}).get("ms_b1")
    ]
    if pts:
        figs.append(plots.acc_vs_ms(pts, out / "accuracy_vs_ms.png", ms_label))
    return figs


def _setup(opts: Options, sd: StudyData, extra: list[str]) -> str:
    return R.setup_block(
        opts.study,
        str(opts.data),
        sd.split + f"; {sd.describe()}; inside the training part the trainer holds out a "
        "random 10% (seeded) to select the best epoch, reported as the curves' held-out accuracy",
        opts.budget.seed,
        opts.command,
        opts.budget.text()
        + f"; warm-up {warmup_for(opts.budget.epochs):g} epochs, cosine schedule, "
        "trainer defaults otherwise (Nesterov SGD, label smoothing 0.1, 5-step augmentation)",
        extra,
    )


def noise_line(n: int, acc: float) -> str:
    """How large a difference in test accuracy this test set can resolve."""
    se = (max(acc * (1 - acc), 1e-9) / max(n, 1)) ** 0.5
    return (
        f"- noise: on {n} test faces an accuracy near {acc:.2f} has a standard error of "
        f"{100 * se:.1f} points; two variants differ significantly (95%, unpaired) only by "
        f"more than about {100 * 1.96 * se * 2**0.5:.1f} points."
    )


def _latency_line(opts: Options) -> str:
    return R.latency_line(opts.latency_threads)


def _vs_best(rows: list[dict], best: dict, label: str) -> str:
    top = best["report"]["accuracy"]
    return "; ".join(
        f"{getattr(r['variant'], label)} {100 * (r['report']['accuracy'] - top):+.1f} points"
        for r in rows
        if r is not best
    )


def _best(rows: list[dict], key: str = "accuracy") -> dict:
    return max(rows, key=lambda r: r["report"][key])


# -- the studies ------------------------------------------------------------------------------


def study_grouping(opts: Options) -> Path:
    sd = study_data(opts)
    chosen = _pick(GROUPINGS, opts.variants, "grouping")
    variants = [mapped_variant(sd, f"classes{k}", GROUPINGS[k][0], GROUPINGS[k][1]) for k in chosen]
    runs = train_all(opts, sd, variants)
    rows = measure_runs(opts, sd, variants, runs)
    from edge_fer.experiment.measure import score

    # the finest model scored in every coarser vocabulary (its outputs merged / dropped)
    merged = []
    fine = rows[0]
    for r in rows[1:]:
        rep = score(
            fine["probs"], sd.test.labels, sd.classes, fine["model_classes"], r["variant"].vocab
        )
        merged.append((fine["variant"].name, r, rep))
    figs = figures(opts, rows, "ms/face at batch 1 (ONNX Runtime)")
    lines = [
        heading("grouping"),
        "",
        (
            "Does a classifier learn the coarser tasks better when it is trained on them? The same "
            f"architecture (`{opts.arch}`), data and budget, trained on 7 classes, on 6 (disgust "
            "left out: its faces are dropped from training and test), and on 3 valence groups "
            "(positive: happy; neutral: neutral, surprise; negative: angry, disgust, fear, sad; "
            "`edge_fer.labels`). Each model is scored in its own vocabulary. The trainer's folder "
            "reader keeps FER2013's 7 outputs when the class folders are a subset of FER2013's, "
            "so the 6-class model has a disgust output that never saw a training face; it is "
            "dropped at scoring (its probability removed, the rest renormalised)."
        ),
        "",
        _setup(opts, sd, [f"**architecture**: `{opts.arch}`"]),
        "",
        variant_table(rows),
        "",
    ]
    if merged:
        lines += [
            (
                "Trained on the groups vs. trained on the finer classes and merged afterwards "
                "(the finer model's probabilities summed over each group; classes without a "
                "counterpart dropped and renormalised; test faces without one dropped):"
            ),
            "",
            R.table(
                [
                    "vocabulary",
                    "trained on it: acc",
                    "macro-F1",
                    f"{fine['variant'].name} merged: acc",
                    "macro-F1",
                    "test faces",
                ],
                [
                    [
                        r["variant"].about,
                        R.f4(r["report"]["accuracy"]),
                        R.f4(r["report"]["macro_f1"]),
                        R.f4(m["accuracy"]),
                        R.f4(m["macro_f1"]),
                        m["n"],
                    ]
                    for _, r, m in merged
                ],
                "lrrrrr",
            ),
            "",
        ]
    note = _budget_note(opts, rows)
    lines += [note, ""] if note else []
    top = rows[0]["report"]
    lines += ["## Findings", "", *_grouping_findings(rows, merged)]
    lines += [noise_line(top["n"], top["accuracy"]), "", _latency_line(opts), ""]
    return R.write_with_figures(opts.out, lines, figs)


def _grouping_findings(rows, merged) -> list[str]:
    out = []
    for r in rows:
        rep = r["report"]
        worst = min(rep["labels"], key=lambda c: rep["per_class"][c]["recall"])
        out.append(
            f"- {r['variant'].about}: accuracy {rep['accuracy']:.4f}, macro-F1 "
            f"{rep['macro_f1']:.4f}; weakest class {worst} (recall "
            f"{rep['per_class'][worst]['recall']:.2f})."
        )
    for name, r, m in merged:
        d = r["report"]["accuracy"] - m["accuracy"]
        f = r["report"]["macro_f1"] - m["macro_f1"]
        out.append(
            f"- {r['variant'].about}: training on it scores {100 * d:+.1f} accuracy points and "
            f"{100 * f:+.1f} macro-F1 points against merging the {name} model's outputs."
        )
    out.append(
        "- Accuracies across vocabularies are not comparable as such: chance is 1/7, 1/6, 1/3 "
        "and the class balance changes; compare macro-F1 and the merged rows."
    )
    return out


def _align_available() -> str | None:
    """None when eye alignment can be used, else why not (one line)."""
    from edge_fer.train.trainer import TrainConfig

    if "align" not in TrainConfig.__dataclass_fields__:
        return "this trainer has no align option"
    try:
        from edge_fer.align import load_aligner

        load_aligner()
    except ImportError as exc:
        return f"edge_fer.align is not available ({exc})"
    except UserError as exc:
        return f"no alignment model ({exc})"
    return None


def study_preprocessing(opts: Options) -> Path:
    chosen = _pick(PREPROCESSING, opts.variants, "preprocessing variant")
    skipped = []
    if "clahe+align" in chosen:
        why = _align_available()
        if why and "clahe+align" in opts.variants:  # asked for by name: the one line is why
            raise UserError(f"clahe+align: {why}", param="variants")
        if why:
            print(f"experiment: CLAHE + alignment unavailable: {why}", file=sys.stderr)
            # the report is meant to be committed: the package's own path is not the user's
            import edge_fer

            here = os.path.dirname(os.path.abspath(edge_fer.__file__))
            skipped.append(f"CLAHE + alignment: unavailable ({why.replace(here, 'edge_fer')})")
            chosen.remove("clahe+align")
    if not chosen:
        raise UserError("no preprocessing variant left to run")
    sd = study_data(opts)
    vocab = sd.trained_classes
    variants = [
        mapped_variant(sd, k, PREPROCESSING[k][0], vocab, options=dict(PREPROCESSING[k][1]))
        for k in chosen
    ]
    runs = train_all(opts, sd, variants)
    rows = measure_runs(opts, sd, variants, runs)
    figs = figures(opts, rows, "ms/face at batch 1 (ONNX Runtime, model only)")
    figs.append(
        plots.recall_bars(
            [(r["variant"].name, r["report"]) for r in rows], R.stage(opts.out) / "recall.png"
        )
    )
    best = _best(rows)
    lines = [
        heading("preprocessing"),
        "",
        (
            "Plain crops vs CLAHE vs CLAHE after eye alignment, same architecture "
            f"(`{opts.arch}`), "
            "data and budget. The test faces get the preprocessing their model trained with. "
            "ms/face covers the model only: CLAHE and alignment run before it, on the CPU."
        ),
        "",
        _setup(opts, sd, [f"**architecture**: `{opts.arch}`"]),
        "",
        variant_table(rows),
        "",
    ]
    if any(v.options.get("align") for v in variants):
        from edge_fer.experiment.measure import eyes_found

        k = eyes_found(sd.test.images)
        lines += [
            (
                f"- alignment: the bundled eye model found the eyes of {k} of {len(sd.test)} test "
                "faces; the others were used as cropped (the trainer does the same on its faces)"
            ),
            "",
        ]
    lines += [f"- not run: {s}" for s in skipped] + ([""] if skipped else [])
    return _finish(opts, lines, rows, best, figs, "about")


def _finish(opts: Options, lines: list, rows: list, best: dict, figs, key: str) -> Path:
    """The part every variant study ends with: budget note, findings, figures; writes it."""
    note = _budget_note(opts, rows)
    lines += [note, ""] if note else []
    others = _vs_best(rows, best, key)  # "" with one variant: no dangling "; ."
    lines += [
        "## Findings",
        "",
        f"- best test accuracy: {best['variant'].about} ({best['report']['accuracy']:.4f})"
        + (f"; {others}" if others else "")
        + ".",
        noise_line(best["report"]["n"], best["report"]["accuracy"]),
        "",
        _latency_line(opts),
        "",
    ]
    return R.write_with_figures(opts.out, lines, figs)


def study_channels(opts: Options) -> Path:
    chosen = _pick(CHANNELS, opts.variants, "channels variant")
    sd = study_data(opts)
    colour, seen = colour_check(sd.root, sd.train.ids)
    if colour == 0:
        raise UserError(
            f"{opts.data}: grayscale only ({seen} of {seen} sampled images have no colour); "
            "the channels study needs colour images such as ../shared/data/sfew_train",
            param="data",
        )
    vocab = sd.trained_classes
    variants = []
    for k in chosen:
        opt = {"channels": 3} if k == "gray3" else {}
        variants.append(
            mapped_variant(sd, k, CHANNELS[k], vocab, options=opt, colour=k == "colour3")
        )
    runs = train_all(opts, sd, variants)
    rows = measure_runs(opts, sd, variants, runs)
    figs = figures(opts, rows, "ms/face at batch 1 (ONNX Runtime)")
    best = _best(rows)
    lines = [
        heading("channels"),
        "",
        (
            f"One grayscale channel (what the runtime feeds) vs three channels, same architecture "
            f"(`{opts.arch}`), faces, split and budget: grayscale copied to 3 channels (what "
            "`edge-fer train --channels 3` does: the cost of a 3-channel stem without new "
            "information) and the real colour image. The colour variant runs the trainer's recipe "
            "and parts (split, SGD, schedule, augmentation, checkpoints) on colour-decoded faces "
            "(`edge_fer/experiment/colour.py`); the runtime and its exported models are grayscale, "
            "so a colour model is a research result, not a deployable one."
        ),
        "",
        _setup(
            opts,
            sd,
            [
                f"**architecture**: `{opts.arch}`",
                f"**colour check**: {colour} of {seen} sampled training images are colour",
            ],
        ),
        "",
        variant_table(rows),
        "",
    ]
    return _finish(opts, lines, rows, best, figs, "name")


STUDY_FUNCS = {
    "grouping": study_grouping,
    "preprocessing": study_preprocessing,
    "channels": study_channels,
}


def _check_report_is_this_studys(out: Path, study: str) -> None:
    """A study rewrites its own report (a rerun resumes and updates it), never another
    study's or a README of the user's: before, a second study in the same --out replaced the
    first one's report and figures."""
    readme = Path(out) / "README.md"
    if not readme.is_file():  # no report yet: the figures' names must be free (a user's
        # confusion.png was replaced without a word)
        taken = [n for n in R.FIGURE_NAMES if os.path.lexists(Path(out) / n)]
        if taken:
            raise UserError(
                f"{out} holds {', '.join(taken)} but no report of this study: the study would "
                "replace them; give it a new or empty folder",
                param="out",
            )
        return
    try:
        with open(readme, encoding="utf-8", errors="replace") as f:
            first = f.readline().strip()
    except OSError:
        return  # the write reports it
    if first != heading(study):
        names = {heading(k): k for k in STUDIES}
        what = (
            f"the report of the {names[first]} study"
            if first in names
            else "a README.md that is not this study's report"
        )
        raise UserError(f"{out} holds {what}; give this study another folder", param="out")


def run_study(opts: Options) -> Path:
    from edge_fer.train.trainer import check_folder

    check_study(opts.study)
    opts.budget.validate()
    from edge_fer.limits import check_threads

    # timed after every variant has trained: checked before the first one
    check_threads(opts.latency_threads, "latency_threads", zero=None)
    if not 0 < opts.test_fraction < 1:  # NaN too
        raise UserError(f"must be in (0, 1), got {opts.test_fraction:g}", param="test_fraction")
    # --out and --work must be folders or become ones (a file there: one line, not a traceback
    # half-way through the first variant)
    check_folder(opts.out, "out")
    check_folder(opts.workdir, "work" if opts.work else "out")
    _check_report_is_this_studys(opts.out, opts.study)
    # Work copies (linked trees, runs) inside a dataset folder would be read back as part of
    # the dataset the next time it is loaded.
    from edge_fer.fileio import inside

    if Path(opts.data).is_dir():
        for path, param in ((opts.out, "out"), (opts.workdir, "work" if opts.work else "out")):
            if inside(path, opts.data):
                raise UserError(
                    f"{path} is inside the dataset {opts.data}; its work files would become "
                    "part of the data: choose a folder outside it",
                    param=param,
                )
    if opts.study in ("architectures", "compression"):
        from edge_fer.experiment import zoo

        fn = zoo.study_architectures if opts.study == "architectures" else zoo.study_compression
    else:
        fn = STUDY_FUNCS[opts.study]
    R.remove_stale(opts.out)  # a killed run's staging folder (kill -9 runs no `finally`)
    try:
        return fn(opts)
    finally:  # figures drawn for a report that was not published (an interrupt, an error)
        R.drop_stage(opts.out)
