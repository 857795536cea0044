"""`edge-fer train-eyes`: learn the eye localiser of face alignment from WebFaces landmarks."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from edge_fer.cli.common import HelpFormatter
from edge_fer.cli.options import input_path

OUT_DEFAULT = "eyes.eyes"


def register(sub) -> None:
    from edge_fer.align.config import LearnConfig

    d = LearnConfig()
    # fmt: off
    p = sub.add_parser(
        "train-eyes", help="learn the eye localiser used by face alignment (--align)",
        description="Learn a pico-style eye localiser (cascades of pixel-comparison regression "
        "trees, docs/align.md) from the eye landmarks of Caltech WebFaces: trains on the first "
        "90% of the images in name order, reports the eye error on the rest. Takes several "
        "minutes (7-10 on a shared 2-core CPU). With --evaluate, only measures an existing "
        "model.",
        formatter_class=HelpFormatter)
    p.add_argument("--data", type=input_path, required=True, metavar="DIR",
                   help="WebFaces folder (WebFaces_GroundThruth.txt and images/)")
    p.add_argument("--out", default=OUT_DEFAULT, metavar="FILE", help="model file to write")
    p.add_argument("--evaluate", metavar="MODEL",
                   help="measure this eye model on the validation images instead of training")
    p.add_argument("--report", metavar="FILE.json", help="also write the measurements as JSON")
    p.add_argument("--stages", type=int, default=d.stages)
    p.add_argument("--trees-per-stage", type=int, default=d.trees_per_stage)
    p.add_argument("--depth", type=int, default=d.depth, help="tree depth")
    p.add_argument("--candidates", type=int, default=d.candidates,
                   help="random pixel tests tried per tree node")
    p.add_argument("--starts", type=int, default=d.starts,
                   help="perturbed starts per training eye")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="last fraction of the images (name order) held out")
    p.add_argument("--max-faces", type=int, default=0, help="train on at most N faces (0: all)")
    p.add_argument("--eval-limit", type=int, default=0,
                   help="measure on at most N validation faces (0: all)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out model and --report")
    # fmt: on
    p.set_defaults(func=run)


def _check(args) -> None:
    from edge_fer.errors import UserError

    for name, lo, hi in (("stages", 1, 64), ("trees_per_stage", 1, 256), ("depth", 1, 12),
                         ("candidates", 1, 4096), ("starts", 1, 256)):  # fmt: skip
        v = getattr(args, name)
        if not lo <= v <= hi:
            raise UserError(f"must be in {lo}..{hi}, got {v}", param=name)
    if not 0 < args.val_fraction < 1:
        raise UserError(f"must be in (0, 1), got {args.val_fraction}", param="val_fraction")
    for name in ("max_faces", "eval_limit"):
        if getattr(args, name) < 0:
            raise UserError("must be >= 0", param=name)
    if args.seed < 0:  # (numpy's generator: a ValueError traceback after the faces were read)
        raise UserError(f"must be >= 0, got {args.seed}", param="seed")
    if args.evaluate is not None:  # learning options with nothing to learn: said, not ignored
        from edge_fer.align.config import LearnConfig

        d = LearnConfig()
        names = ("stages", "trees_per_stage", "depth", "candidates", "starts", "max_faces", "seed")
        given = [
            "--" + name.replace("_", "-")
            for name in names
            if getattr(args, name) != getattr(d, name)
        ] + (["--out"] if args.out != OUT_DEFAULT else [])
        if given:
            raise UserError(
                f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to learning a "
                "model; --evaluate only measures one (leave "
                f"{'it' if len(given) == 1 else 'them'} out, or --evaluate out to learn)"
            )
    # before anything is learned or written: the model and the report never replace the
    # dataset's files, the model measured, or each other (the landmark file was overwritten)
    from edge_fer.fileio import check_collisions, check_output_file, check_outside

    outputs = [("--report", args.report)] + (
        [] if args.evaluate is not None else [("--out", args.out)]
    )
    for flag, path in [*outputs, ("--evaluate", args.evaluate)]:
        # "" is no file name: an empty --out was learned, then lost in a traceback; an empty
        # --evaluate trained a model instead
        if path is not None and not path.strip():
            raise UserError(f"{flag} is empty: give a file name")
    for flag, path in outputs:
        if path:  # (a file where a folder should be: the model was learned, then lost)
            check_output_file(path, f"{flag} {path}")
    # --data may name the landmark file itself: it and its images are inputs too (before: the
    # model was written over the landmark file, or over an image with --force)
    from edge_fer.align.learn import landmark_file

    landmarks, images = landmark_file(args.data)
    inputs = [("--evaluate", args.evaluate)]
    if not os.path.isdir(args.data):  # (a folder: check_outside below names it)
        inputs.append(("--data", landmarks))
    check_collisions(outputs, inputs)
    why = "it would replace the dataset's files"
    check_outside(outputs, args.data, "--data", why)
    check_outside(outputs, images, "the images of --data", why)
    if not args.force:  # a second run in the same folder replaced the first model silently
        for flag, path in outputs:
            if path and (Path(path).exists() or Path(path).is_symlink()):
                raise UserError(f"{flag} {path} already exists; pass --force to replace it")


def _make_parent(flag: str, path: str) -> None:
    """The missing folders of an output, before the work (one line when they cannot be)."""
    from edge_fer.errors import UserError
    from edge_fer.fileio import os_error_reason

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot make its folder ({os_error_reason(exc)})") from None


def _write_together(outputs: list[tuple[str, str, bytes]]) -> None:
    """Write every (flag, path, content) as one set (edge_fer.fileio.write_together): when one
    fails or an interrupt comes meanwhile, those already written get their previous content
    back, so the model and its report are never of two runs."""
    from edge_fer.errors import UserError
    from edge_fer.fileio import WriteError, write_together

    try:
        write_together([(path, content) for _, path, content in outputs])
    except WriteError as exc:
        flag = next((f for f, p, _ in outputs if os.fspath(p) == exc.path), "")
        raise UserError(
            f"cannot write {flag} {exc.path}: {exc.reason}".replace("  ", " ")
        ) from None


def run(args) -> int:
    from edge_fer.align.config import LearnConfig
    from edge_fer.align.learn import evaluate, learn, read_faces
    from edge_fer.align.model import EyeModel
    from edge_fer.errors import UserError
    from edge_fer.fileio import dumps, first_line

    _check(args)
    model = EyeModel.load(args.evaluate) if args.evaluate else None  # (a bad one: said first)
    # before learning: the validation split is measured after it (an empty one stopped the
    # command, exit 2, only after the model was learned and written), and the annotation rows
    # left out are said (before: dropped without a word)
    skipped = read_faces(args.data, "val", args.val_fraction).skipped
    for flag, path in (("--report", args.report), ("--out", None if args.evaluate else args.out)):
        if path:
            _make_parent(flag, path)
    log = lambda s: print(s, file=sys.stderr, flush=True)
    if skipped.total:
        log(skipped.line())
    t0 = time.time()

    def report(what: dict, measured: dict | None) -> tuple[str, bytes]:
        res = {
            **what,
            "annotation_rows": skipped.rows,
            "skipped_rows": dict(skipped.counts),
            "confidence": {
                "max_spread": model.max_spread,
                "min_dist": model.min_dist,
                "max_dist": model.max_dist,
                "max_angle": model.max_angle,
            },
            "measured": measured is not None,
            **(measured or {"val": None, "val_jittered": None}),
        }
        try:
            text = dumps(res)
        except ValueError as exc:  # NaN or Infinity: strict JSON cannot hold it
            raise UserError(f"cannot write the measurements: {first_line(exc)}") from None
        return text, (text + "\n").encode("utf-8")

    if model is not None:
        what = {"model": args.evaluate}
    else:
        cfg = LearnConfig(
            stages=args.stages, trees_per_stage=args.trees_per_stage, depth=args.depth,
            candidates=args.candidates, starts=args.starts, val_fraction=args.val_fraction,
            max_faces=args.max_faces, seed=args.seed,
        )  # fmt: skip
        model = learn(cfg, args.data, log=log)
        what = {"model": args.out, "config": vars(cfg), "learn_s": round(time.time() - t0, 1)}
        # the learned model is kept whatever comes next, with a report that says it is not
        # measured yet (before: the model alone, so a Ctrl-C while measuring left it beside an
        # earlier run's report); both are written together (_write_together)
        outputs = [("--out", args.out, model.to_bytes())]
        if args.report:
            outputs.append(("--report", args.report, report(what, None)[1]))
        _write_together(outputs)
        log(f"wrote {' and '.join(path for _, path, _ in outputs)} in {time.time() - t0:.0f}s")
    log("measuring on the validation images ...")
    measured = {
        "val": evaluate(model, args.data, "val", args.val_fraction, limit=args.eval_limit),
        "val_jittered": evaluate(
            model, args.data, "val", args.val_fraction, jitter=True, limit=args.eval_limit
        ),
    }
    text, data = report(what, measured)
    if args.report:
        _write_together([("--report", args.report, data)])
        log(f"wrote {args.report}")
    print(text)
    return 0
