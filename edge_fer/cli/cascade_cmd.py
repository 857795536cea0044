"""`edge-fer train-cascade` and `edge-fer eval-detector`: learn and evaluate pico cascades."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from edge_fer import fileio
from edge_fer.cli.common import HelpFormatter, thread_count
from edge_fer.cli.options import input_path

SHARED_FACEFINDER = Path("../shared/reference/pico/facefinder")
SHARED_BACKGROUNDS = Path("../shared/data/backgrounds")


def register(sub) -> None:
    d = HelpFormatter
    p = sub.add_parser(
        "train-cascade",
        help="learn a pico face cascade (Markus et al. 2013)",
        description="Learn a pico cascade of boosted pixel-comparison trees from "
        "annotated faces and face-free images, stage by stage with hard-negative "
        "bootstrapping. Writes OUT/cascade.pico (pico binary format) and "
        "OUT/state.json after every stage; --resume continues an interrupted run. "
        "See docs/cascade.md.",
        formatter_class=d,
    )
    p.add_argument(
        "--webfaces",
        action="append",
        default=[],
        metavar="DIR",
        help="WebFaces folder (images/ + WebFaces_GroundThruth.txt); the last "
        "--val-fraction of its images in name order is held out",
    )
    p.add_argument(
        "--boxes",
        action="append",
        default=[],
        metavar="FILE",
        help="box file, one face per line: path x y w h (all used for training)",
    )
    p.add_argument(
        "--backgrounds",
        action="append",
        default=[],
        metavar="DIR",
        help="folder of face-free images (the last --bg-val-fraction held out)",
    )
    p.add_argument("--out", required=True, help="run folder (cascade.pico, state.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--depth", type=int, default=6, help="tree depth")
    p.add_argument("--tests", type=int, default=1024, help="random pixel tests tried per node")
    p.add_argument(
        "--stage-trees",
        default="1x4,2,3,4,5,10,20x6,30x4,40",
        help="tree budget per stage; NxK repeats N K times; the last value repeats",
    )
    p.add_argument(
        "--min-tpr",
        default="0.98,0.985,0.99,0.995,0.997",
        help="per-stage true-positive rate to keep (the last value repeats)",
    )
    p.add_argument(
        "--max-fpr",
        type=float,
        default=0.5,
        help="a stage ends once its false-positive rate is at most this",
    )
    p.add_argument(
        "--target-fpr",
        type=float,
        default=1e-6,
        help="stop when the cascade accepts at most this fraction of mined windows",
    )
    p.add_argument("--max-stages", type=int, default=30)
    p.add_argument(
        "--time-budget",
        dest="time_budget_h",  # the TrainConfig field: its errors name this flag
        type=float,
        default=0.0,
        metavar="HOURS",
        help="start no new stage after this many hours (0: no limit)",
    )
    p.add_argument(
        "--min-face",
        type=int,
        default=20,
        help="smallest face used (pixels); also the smallest negative window",
    )
    p.add_argument(
        "--jitter",
        type=int,
        default=6,
        help="jittered windows per face per stage (alternately mirrored)",
    )
    p.add_argument(
        "--pos-jitter", type=float, default=0.05, help="centre jitter, fraction of the face size"
    )
    p.add_argument(
        "--scale-jitter", type=float, default=0.08, help="size jitter: factor in [1/(1+x), 1+x]"
    )
    p.add_argument("--neg-ratio", type=float, default=0.5, help="negatives per positive")
    p.add_argument(
        "--neg-annotated-share",
        type=float,
        default=0.5,
        help="share of negative windows drawn from annotated images (off faces)",
    )
    p.add_argument(
        "--neg-annotated-min-fpr",
        type=float,
        default=1e-3,
        help="draw from annotated images only while the cascade accepts more than "
        "this fraction of windows (later, unannotated faces dominate what passes)",
    )
    p.add_argument(
        "--scan-share",
        type=float,
        default=0.5,
        help="share of negative sizes drawn like a multi-scale scan (else log-uniform)",
    )
    p.add_argument(
        "--threshold-on",
        choices=("fresh", "train"),
        default="train",
        help="set stage thresholds on the stage's own training positives (the "
        "reference learner) or on a fresh jitter of the faces (an honest TPR, but "
        "stages then reject little)",
    )
    p.add_argument(
        "--max-draws",
        type=float,
        default=2e10,
        help="windows tried per stage when mining negatives; checked after each batch of "
        "256 windows in each of the 16 lanes, so a stage may try up to 4,096 more",
    )
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--bg-val-fraction", type=float, default=0.1)
    p.add_argument("--max-faces", type=int, default=0, help="use a seeded subset of faces")
    p.add_argument("--max-images", type=int, default=0, help="use the first N annotated images")
    p.add_argument("--threads", type=thread_count, default=0, help="numba threads (0: default)")
    p.add_argument("--verbose", action="store_true", help="a line per tree")
    p.set_defaults(func=run_train)

    e = sub.add_parser(
        "eval-detector",
        help="recall / false positives of a cascade on annotated images",
        description="Scan the images of a WebFaces folder (or a box file) with a "
        "cascade and report recall and false positives per image at several score "
        "thresholds (a face is found when a detection's square overlaps its box "
        "with IoU >= --iou), the recall at fixed false-positive rates, false "
        "positives per megapixel on face-free images, speed, and the same for a "
        "reference cascade.",
        formatter_class=d,
    )
    e.add_argument(
        "--cascade", type=input_path, default=None, help="pico cascade (default: the bundled one)"
    )
    e.add_argument(
        "--stages", type=int, default=0, help="evaluate only the cascade's first N stages (0: all)"
    )
    e.add_argument(
        "--data", type=input_path, default=None, metavar="WEBFACES_DIR", help="WebFaces folder"
    )
    # append: a second --boxes is refused, not silently the only one (train-cascade takes many)
    e.add_argument(
        "--boxes", action="append", metavar="FILE", help="box file instead of --data (one)"
    )
    # None: given or not, so that --boxes (evaluated whole) can refuse them
    e.add_argument(
        "--split",
        choices=("val", "train", "all"),
        default=None,
        help="part of --data to evaluate (default: val)",
    )
    e.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="the held-out part of --data, as train-cascade's (default: 0.1)",
    )
    e.add_argument(
        "--reference",
        default="auto",
        help="reference cascade ('auto': ../shared/reference/pico/facefinder if present; 'none')",
    )
    e.add_argument(
        "--backgrounds",
        default="auto",
        help="face-free images for false positives per megapixel ('auto': "
        "../shared/data/backgrounds if present; 'none')",
    )
    e.add_argument(
        "--bg-split",
        choices=("val", "train", "all"),
        default=None,
        help="the part of --backgrounds to scan, as train-cascade splits it (default: all)",
    )
    e.add_argument("--min-size", type=float, default=24.0, help="smallest window (pixels)")
    e.add_argument(
        "--max-size",
        type=float,
        default=1.0,
        help="largest window (pixels, or fraction of the shorter side if <= 1)",
    )
    e.add_argument("--scale-factor", type=float, default=1.1)
    e.add_argument("--stride-factor", type=float, default=0.1)
    e.add_argument("--iou", type=float, default=0.4, help="overlap for a face to count found")
    e.add_argument("--thresholds", default=",".join(str(t) for t in (0, 1, 2.5, 5, 10, 20, 40)))
    e.add_argument(
        "--fppi",
        default="0.1,0.25,0.5,1,2",
        help="false positives per image at which to report recall",
    )
    e.add_argument("--limit", type=int, default=0, help="evaluate the first N images only")
    e.add_argument(
        "--speed-images",
        type=int,
        default=50,
        help="images on which to count trees per window (0: skip)",
    )
    e.add_argument("--json", action="store_true", help="print JSON")
    e.add_argument("--out", default=None, help="also write the JSON here")
    e.add_argument("--force", action="store_true", help="replace an existing --out or --card file")
    e.add_argument(
        "--card", default=None, metavar="FILE", help="write a markdown model card (needs --run)"
    )
    e.add_argument(
        "--run",
        default=None,
        metavar="DIR",
        help="the train-cascade folder of the cascade (state.json), for --card",
    )
    e.set_defaults(func=run_eval)


def run_train(args) -> int:
    from dataclasses import fields

    from edge_fer.cascade_train.trainer import TrainConfig, parse_list, train
    from edge_fer.cli.main import portable_command

    # a flag named like a TrainConfig field sets that field, converted here where it needs it
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    given.update(
        stage_trees=parse_list(args.stage_trees, int, "stage_trees"),
        min_tpr=parse_list(args.min_tpr, float, "min_tpr"),
        # int(nan) was a traceback: a value that is no count goes to TrainConfig.check as given
        max_draws=int(args.max_draws) if 1 <= args.max_draws < math.inf else args.max_draws,
    )
    cfg = TrainConfig(**given)
    # state.json (and the card eval-detector makes from it) travels: no local absolute path
    state = train(cfg, resume=args.resume, command=portable_command(args.given_argv))
    summary = {k: state[k] for k in ("stage", "ntrees", "elapsed_s", "stop_reason")}
    summary["cascade"] = str(Path(args.out) / "cascade.pico")
    print(json.dumps(summary))
    return 0


def _resolve(value: str, shared: Path) -> Path | None:
    if value == "none":
        return None
    if value == "auto":
        return shared if shared.exists() else None
    return Path(value)


def run_eval(args) -> int:
    from edge_fer.cascade_train import evaluate as ev
    from edge_fer.cascade_train.annotations import (
        read_box_file,
        read_webfaces,
        split_images,
    )
    from edge_fer.cascade_train.trainer import parse_list
    from edge_fer.detect import Cascade
    from edge_fer.errors import UserError

    _check_eval_inputs(args)
    if args.cascade is None:
        from edge_fer.detect import default_cascade_path

        path = default_cascade_path()
        if path is None:
            raise UserError("no bundled cascade yet: give --cascade FILE")
        args.cascade = str(path)
    if not 0.0 < args.iou <= 1.0:  # NaN too: recall 0 at every rate otherwise
        raise UserError(f"--iou must be in (0, 1], got {args.iou}")
    if not 0.0 < args.val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    if args.limit < 0:  # -1 dropped the last image
        raise UserError(f"--limit must be >= 0 (0: all), got {args.limit}")
    if args.speed_images < 0:
        raise UserError(f"--speed-images must be >= 0 (0: skip), got {args.speed_images}")
    bad = [v for v in parse_list(args.fppi, float, "fppi") if not 0 < v < math.inf]
    if bad:  # a row "at -1 FP/img" was printed
        raise UserError(f"--fppi rates must be > 0 and finite, got {bad[0]}")
    thresholds = parse_list(args.thresholds, float, "thresholds")
    bad = [v for v in thresholds if not math.isfinite(v)]
    if bad:  # NaN and Infinity went into the JSON, which strict parsers reject
        raise UserError(f"--thresholds must be finite numbers, got {bad[0]}")
    _check_eval_outputs(args)
    state = _read_run_state(args.run) if args.card else None
    ref_path = _resolve(args.reference, SHARED_FACEFINDER)
    bg_dir = _resolve(args.backgrounds, SHARED_BACKGROUNDS)
    bg_paths = _background_paths(args, bg_dir)
    # the JSON and the card were written over whatever they named: the ground truth, a photo,
    # the cascade itself
    from edge_fer.fileio import check_collisions, check_outside

    outs = [("--out", args.out), ("--card", args.card)]
    run_files = [(f"--run's {n}", Path(args.run) / n) for n in ("state.json", "cascade.pico")
                 if args.run]  # fmt: skip
    check_collisions(
        outs,
        [("--cascade", args.cascade), ("--reference", ref_path), ("--boxes", args.boxes)]
        + run_files,
    )
    why = "it would replace or join the annotated images"
    check_outside(outs, args.data, "--data", why)
    check_outside(outs, bg_dir, "--backgrounds", "it would join the face-free images")
    for flag, path in outs:  # any file was replaced: an earlier report, another run's state.json
        if path and not args.force and os.path.lexists(path):
            raise UserError(
                f"{flag} {path}: exists; pass --force to replace it, or give another name"
            )
    cand = Cascade.load(args.cascade)
    if state is not None:
        _check_run_made(state, cand, args.run, args.cascade)
    if args.stages:
        cand = ev.truncate_stages(cand, args.stages)
    ref = Cascade.load(ref_path) if ref_path else None
    if args.data is None and args.boxes is None:
        raise UserError("give --data WEBFACES_DIR or --boxes FILE")
    if args.data is not None:
        ims, report = read_webfaces(args.data)
        ims = split_images(ims, args.split, args.val_fraction)
    else:
        ims, report = read_box_file(args.boxes)
    if args.limit:
        ims = ims[: args.limit]
    if not ims:
        raise UserError("no annotated images to evaluate")
    params = ev.ScanParams(args.min_size, args.max_size, args.scale_factor, args.stride_factor)
    try:
        params.detector(cand)
    except UserError as exc:
        raise UserError(f"scan options: {exc}") from None
    imgs, faces, undecodable = ev.load_eval_set(ims, report)
    bgs: list = []
    if bg_dir is not None:
        bgs, _ = ev.load_images(bg_paths)
        if not bgs:  # every false-positive rate was null, with exit 0
            raise UserError(
                f"{bg_dir}: none of its {len(bg_paths)} images decodes", param="backgrounds"
            )
    fppis = parse_list(args.fppi, float, "fppi")
    if 0.5 not in fppis:
        fppis.append(0.5)
    kw = {
        "thresholds": thresholds,
        "fppis": fppis,
        "iou": args.iou,
        "speed_images": args.speed_images,
    }
    result = {
        "data": args.data or args.boxes,
        "split": args.split if args.data else "all",
        "images": len(imgs),
        "undecodable": undecodable,
        "bad_annotations": report.to_json(),
        "backgrounds": {
            "folder": str(bg_dir) if bg_dir else None,
            "images": len(bgs),
            "megapixels": round(sum(g.size for g in bgs) / 1e6, 2),
        },
        "scan": vars(params),
        "match_iou": args.iou,
        "cascade": ev.evaluate_cascade(cand, imgs, faces, bgs, params, **kw),
    }
    if ref is not None:
        result["reference"] = ev.evaluate_cascade(ref, imgs, faces, bgs, params, **kw)
        result["comparison"] = ev.compare(result["cascade"], result["reference"], 0.5)
    if state is not None:
        card = ev.model_card(state, result, _card_command(state))
        card_bytes = _shown_bytes(card + "\n")
        _write_output("--card", args.card, lambda path: fileio.write_bytes(path, card_bytes))
    if args.out:
        _write_output("--out", args.out, lambda path: fileio.save_json(path, result, "--out", 1))
    if args.json:
        try:
            print(fileio.dumps(result, indent=1))
        except ValueError as exc:
            raise UserError(f"--json: {fileio.first_line(exc)}") from None
    else:
        _print_table(result, sys.stdout)
    return 0


def _check_eval_inputs(args) -> None:
    """Options the evaluation would ignore, refused (before: it scored --data and dropped
    --boxes, scored the last --boxes only, and scored a --boxes file whole whatever --split
    said); then the defaults of --split and --val-fraction."""
    from edge_fer.errors import UserError

    boxes = args.boxes or []
    if len(boxes) > 1:
        raise UserError(
            f"--boxes takes one file, got {len(boxes)} ({', '.join(boxes)}): evaluate them one "
            "at a time, or join them into one box file"
        )
    args.boxes = boxes[0] if boxes else None
    if args.boxes is not None and args.data is not None:
        raise UserError("give --data WEBFACES_DIR or --boxes FILE, not both")
    for flag, value in (("--split", args.split), ("--val-fraction", args.val_fraction)):
        if args.boxes is not None and value is not None:
            raise UserError(f"{flag} splits --data; a --boxes file is evaluated whole")
    args.split = args.split or "val"
    args.val_fraction = 0.1 if args.val_fraction is None else args.val_fraction


def _background_paths(args, bg_dir: Path | None) -> list[Path]:
    """The --backgrounds images --bg-split picks, listed before the scan; refused when there
    are none (an empty folder gave "images": 0 and null rates, with exit 0), and --bg-split
    without backgrounds (it was accepted and did nothing)."""
    from edge_fer.cascade_train.annotations import list_images, split_paths
    from edge_fer.errors import UserError

    if bg_dir is None:
        if args.bg_split is not None:
            said = "none" if args.backgrounds == "none" else "auto, which found no folder"
            raise UserError(
                f"--bg-split splits --backgrounds, which is {said}: give --backgrounds DIR, "
                "or leave --bg-split out"
            )
        return []
    args.bg_split = args.bg_split or "all"
    found = list_images(bg_dir)
    mine = split_paths(found, args.bg_split, 0.1)
    if not mine:  # as train-cascade refuses the same folder
        why = (
            f"--bg-split {args.bg_split} picks none of its {len(found)}"
            if found
            else ("none in it")
        )
        raise UserError(f"{bg_dir} holds no image to scan ({why})", param="backgrounds")
    return mine


def _check_eval_outputs(args) -> None:
    """--out and --card before the scan (a missing folder, a folder, a file in the way were a
    traceback after the whole evaluation), and --card's --run."""
    from edge_fer.errors import UserError

    for flag, path in (("--out", args.out), ("--card", args.card)):
        if not path:
            continue
        fileio.check_output_file(path, f"{flag} {path}")
    if args.card and not args.run:
        raise UserError("--card needs --run DIR (the train-cascade output folder)")
    if args.run and not args.card:  # before: read for nothing
        raise UserError("--run is read only for --card: give --card FILE too, or leave it out")


def _card_command(state: dict) -> str:
    return state.get("command") or "(see docs/cascade.md)"


def _read_run_state(run: str) -> dict:
    """--run's state.json, which must be a JSON object (a list was an AttributeError) that
    gives the card's training section (checked here, before the scan, not after it)."""
    from edge_fer.cascade_train import evaluate as ev
    from edge_fer.errors import UserError

    path = Path(run) / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"--run {run}: cannot read {path} ({fileio.first_line(exc)})") from None
    if not isinstance(state, dict):
        raise UserError(f"--run {run}: {path} is not a train-cascade state (not a JSON object)")
    try:
        ev.training_lines(state, _card_command(state))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a hand-edited state
        raise UserError(
            f"--run {run}: its state.json is not a train-cascade state "
            f"({type(exc).__name__}: {exc})"
        ) from None
    return state


def _check_run_made(state: dict, cascade, run: str, path: str) -> None:
    """--run must be the run that made --cascade (before: the card put any run's training
    beside the cascade's scores): its state.json records the tree depth, the tree count and
    the threshold on each stage's last tree, which the cascade must have."""
    import numpy as np

    from edge_fer.errors import UserError

    try:
        depth, ntrees = state["options"]["depth"], state["ntrees"]
        ends = [(int(r["total_trees"]) - 1, float(r["threshold"])) for r in state["stages"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(
            f"--run {run}: its state.json does not record the cascade it made "
            f"({type(exc).__name__}: {exc})"
        ) from None
    if (cascade.tdepth, cascade.ntrees) != (depth, ntrees):
        raise UserError(
            f"--run {run} did not make --cascade {path}: the run's is {ntrees} trees of depth "
            f"{depth}, this one {cascade.ntrees} of depth {cascade.tdepth}"
        )
    if not all(0 <= i < ntrees and np.float32(t) == cascade.thresholds[i] for i, t in ends):
        raise UserError(
            f"--run {run} did not make --cascade {path}: its stage thresholds are not the ones "
            "the run recorded"
        )


def _shown_bytes(text: str) -> bytes:
    """`text` as UTF-8, with the bytes of a name that is not UTF-8 (surrogate escapes, from the
    command line or state.json) as `\\xNN`, as messages show them (cli.main's handler);
    before: UnicodeEncodeError after the whole scan."""
    import edge_fer.cli.main  # noqa: F401 - registers the "edge_fer_names" error handler

    return text.encode("utf-8", "edge_fer_names")


def _write_output(flag: str, path: str, write) -> None:
    """Make the missing folders of `path` and write it; an OSError is one line naming `flag`."""
    from edge_fer.errors import UserError

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as exc:
        raise UserError(f"cannot write {flag} {path}: {fileio.os_error_reason(exc)}") from None


def _print_table(res: dict, f) -> None:
    from edge_fer.cascade_train.annotations import REASONS

    print(
        f"{res['images']} images, {res['cascade']['faces']} faces "
        f"(split {res['split']}); backgrounds: {res['backgrounds']['images']} images, "
        f"{res['backgrounds']['megapixels']} Mpx",
        file=f,
    )
    # before: only the JSON said what was skipped (bad lines, boxes outside, duplicates)
    bad = {**res["bad_annotations"], "undecodable": res["undecodable"]}
    skipped = [f"{bad[k]} x {what}" for k, what in REASONS.items() if bad.get(k)]
    if skipped:
        print("skipped: " + "; ".join(skipped), file=f)
    for key in ("cascade", "reference"):
        r = res.get(key)
        if r is None:
            continue
        print(f"\n{key}: {r['source']} (depth {r['tdepth']}, {r['ntrees']} trees)", file=f)
        print(f"  {'threshold':>9} {'recall':>7} {'FP/img':>7} {'bgFP/Mpx':>9}", file=f)
        for row in r["table"]:
            bg = "-" if row["bg_fp_per_mp"] is None else f"{row['bg_fp_per_mp']:.3f}"
            print(
                f"  {row['threshold']:9.2f} {row['recall']:7.4f} {row['fp_per_image']:7.3f} "
                f"{bg:>9}",
                file=f,
            )
        for o in r["at_fppi"]:
            thr = "-" if o["threshold"] is None else f"{o['threshold']:.3f}"
            bg = "-" if o["bg_fp_per_mp"] is None else f"{o['bg_fp_per_mp']:.3f}"
            print(
                f"  at {o['fppi']:g} FP/img: recall {o['recall']:.4f} (threshold {thr}, "
                f"bg {bg} FP/Mpx)",
                file=f,
            )
        sp = r["speed"]
        extra = f", {sp['trees_per_window']:.2f} trees/window" if "trees_per_window" in sp else ""
        print(f"  speed: {sp['ms_per_image']} ms/image{extra}", file=f)
    if "comparison" in res:
        print("\ncomparison: " + json.dumps(res["comparison"]), file=f)
