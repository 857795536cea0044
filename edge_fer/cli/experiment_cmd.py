"""`edge-fer experiment STUDY`: research studies with a Markdown report (extra `train`)."""

from __future__ import annotations

import argparse

from edge_fer.cli.common import HelpFormatter
from edge_fer.cli.options import input_path

STUDY_HELP = (
    "architectures (the zoo: accuracy, macro-F1, per-class recall, size, MACs, FP32 and INT8 "
    "ms/face), preprocessing (plain / CLAHE / CLAHE + alignment), grouping (7 / 6 / 3 "
    "classes), channels (1 vs 3 channels; colour data), compression (FP32 / pruned / INT8)"
)


def _field_flag(p, owner: type, name: str, text: str, unset: bool = False) -> None:
    """The flag of a field of the study's `Budget` or `Options` (edge_fer.experiment.runs): its
    type and default are the field's, and `run` passes it back under the same name. unset:
    the flag's value is None when not given (so a study it is not for can refuse it even at
    the default value), and `run` puts the field's default in."""
    default = getattr(owner, name)
    if unset and text != argparse.SUPPRESS:
        text += f" [default: {default}]"
    p.add_argument(
        "--" + name.replace("_", "-"),
        type=type(default),
        default=None if unset else default,
        help=text,
    )


def register(sub) -> None:
    from edge_fer.experiment.runs import Budget, Options  # light: no torch, no numpy
    from edge_fer.limits import TRAIN_PRECISIONS

    p = sub.add_parser(
        "experiment",
        help="run a named study and write its report (needs edge-fer[train])",
        description="Train the variants of a study (resumable run folders under --work), "
        "measure them on one held-out test split and write README.md with tables and PNG "
        "figures into --out. Studies: " + STUDY_HELP + ".",
        epilog="Budget: --epochs, --max-train-faces and --max-test-faces keep a study to "
        "minutes on a CPU; the report states the budget. Start the same command again to "
        "continue an interrupted study. See docs/experiments.md.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("study", metavar="STUDY", help="architectures, preprocessing, grouping, "
                   "channels or compression")  # fmt: skip
    p.add_argument(
        "--data",
        type=input_path,
        required=True,
        help="image-folder dataset (FER2013 or class folders)",
    )
    p.add_argument("--out", required=True, help="report folder (README.md and PNGs)")
    p.add_argument(
        "--work", default=None, help="run folders, links, ONNX files [default: OUT/work]"
    )
    # the flags of training (TRAINING_FLAGS), of non-FER2013 data and of INT8 are unset: a
    # study that does not use them refuses them, at their default value too
    _field_flag(p, Budget, "epochs", "epochs per variant", unset=True)
    _field_flag(p, Budget, "max_train_faces", "class-stratified training sample (0: all)")
    _field_flag(p, Budget, "max_test_faces", "class-stratified test sample (0: all)")
    _field_flag(p, Budget, "batch_size", "training batch", unset=True)
    _field_flag(p, Budget, "lr", "peak SGD learning rate", unset=True)
    _field_flag(p, Budget, "seed", "seed of samples, splits and training")
    _field_flag(p, Budget, "threads", "torch threads of the training (0: torch's default)",
                unset=True)  # fmt: skip
    p.add_argument("--precision", choices=TRAIN_PRECISIONS, default=None,
                   help="the training steps' arithmetic (edge-fer train --precision): bf16 is "
                   "about 2.5x faster on CPUs with AMX; runs made with either are reused "
                   "(default fp32)")  # fmt: skip
    _field_flag(p, Options, "arch", "architecture of the other studies", unset=True)
    p.add_argument(
        "--archs",
        default=None,
        help="architectures: comma-separated subset of the zoo [default: all]",
    )
    p.add_argument(
        "--runs",
        default=None,
        help="architectures: evaluate finished run folders RUNS/<arch>/ instead of training",
    )
    p.add_argument(
        "--no-bundled", action="store_true", help="architectures: leave the bundled vgg model out"
    )
    p.add_argument(
        "--variants",
        default=None,
        help="comma-separated subset of the study's variants: grouping 7,6,3; "
        "preprocessing plain,clahe,clahe+align; channels gray1,gray3,colour3",
    )
    held_out = "non-FER2013 data: share of the faces held out (by clip) for the test"
    _field_flag(p, Options, "test_fraction", held_out, unset=True)
    _field_flag(p, Options, "calib_faces", "architectures, compression: INT8 calibration faces",
                unset=True)  # fmt: skip
    _field_flag(p, Options, "latency_threads", "ONNX Runtime threads timed")
    _field_flag(p, Budget, "max_batches", argparse.SUPPRESS, unset=True)  # tests
    p.set_defaults(func=run, _parser=p)


# the flags that only matter when a study trains: architectures --runs trains nothing
TRAINING_FLAGS = ("epochs", "batch_size", "lr", "threads", "precision", "max_batches")
UNSET = (*TRAINING_FLAGS, "test_fraction", "calib_faces")  # None when not given


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _refuse_unused(args) -> None:
    """Flags given to a study, or data, that they would do nothing for (before: ignored
    without a word, and listed in the report's command as if they had counted)."""
    from pathlib import Path

    from edge_fer.errors import UserError

    given = [_flag(n) for n in TRAINING_FLAGS if getattr(args, n) is not None]
    if given and args.study == "architectures" and args.runs is not None:
        one = len(given) == 1
        raise UserError(
            f"{', '.join(given)}: {'a training setting' if one else 'training settings'}, and "
            "with --runs the architectures study trains nothing (it measures the finished runs "
            f"RUNS/<arch>/ as they are); leave {'it' if one else 'them'} out"
        )
    if args.calib_faces is not None and args.study not in ("architectures", "compression"):
        raise UserError(
            f"--calib-faces is for the architectures and compression studies; the {args.study} "
            "study makes no INT8 model"
        )
    if args.test_fraction is not None and Path(args.data).is_dir():
        from edge_fer.data.loaders import detect_layout

        try:
            fer = detect_layout(Path(args.data)) == "fer2013-folder"
        except UserError:  # the study says what is wrong with --data
            fer = False
        if fer:
            raise UserError(
                f"--test-fraction is for other datasets: {args.data} holds FER2013 folders, "
                "which train on Training and test on PrivateTest"
            )


def _names(text: str | None) -> tuple[str, ...]:
    # a name given twice is one (`--archs cnn4,cnn4` measured and reported it twice)
    return tuple(dict.fromkeys(s.strip() for s in (text or "").split(",") if s.strip()))


def command_of(args) -> str:
    """The command as typed, rebuilt from the parsed options (flags left at their defaults
    are omitted): the report's exact command also when called in-process. Absolute paths are
    made portable (`fileio.portable_path`): reports travel (benchmarks/reports/) and hold no
    local absolute path."""
    import os
    import shlex

    from edge_fer.fileio import portable_path

    parser = args._parser
    words = ["edge-fer", "experiment", args.study]
    for a in parser._actions:
        if not a.option_strings or a.dest in ("help", "study"):
            continue
        v = getattr(args, a.dest, None)
        if v == a.default or a.help == argparse.SUPPRESS and not v:
            continue
        flag = max(a.option_strings, key=len)
        if isinstance(a, argparse._StoreTrueAction):
            words.append(flag)
        else:
            words += [flag, portable_path(v) if os.path.isabs(str(v)) else str(v)]
    return " ".join(shlex.quote(w) for w in words)


def run(args) -> int:
    from dataclasses import fields
    from pathlib import Path

    from edge_fer.errors import UserError

    try:
        from edge_fer.experiment.runs import ZOO, Budget, Options
        from edge_fer.experiment.studies import check_study, run_study
    except ImportError as exc:
        raise UserError(
            f"experiments need the train extra: python3 -m pip install '.[train]' in the edge-fer checkout ({exc})"
        )
    check_study(args.study)
    _refuse_unused(args)
    if args.calib_faces is not None and args.calib_faces < 100:
        raise UserError("--calib-faces must be at least 100")
    # given but naming nothing (a script's empty variable): was read as "all", hours of training
    for flag, given in (("--archs", args.archs), ("--variants", args.variants)):
        if given is not None and not _names(given):
            raise UserError(f"{flag} {given!r} names nothing; leave {flag} out for all of them")
    archs = _names(args.archs) or ZOO
    bad = [a for a in archs if a not in ZOO]
    if bad:
        raise UserError(f"--archs: {', '.join(bad)} not in the zoo ({', '.join(ZOO)})")
    from edge_fer.models import list_models

    if args.study == "architectures" and args.arch is not None:
        raise UserError("--arch is for the other studies; the architectures study takes --archs")
    # the report's command is the one typed: computed before --arch gets its default
    command = command_of(args)
    for name in UNSET:  # not given: their defaults, also after the command (as typed)
        if getattr(args, name) is None:
            owner = Budget if name in Budget.__dataclass_fields__ else Options
            setattr(args, name, getattr(owner, name))
    arch = args.arch or Options.arch
    if arch not in list_models():
        raise UserError(f"--arch {arch!r} is not in the zoo ({', '.join(list_models())})")
    if args.runs is not None and args.study != "architectures":
        raise UserError("--runs is for the architectures study")
    # the other options one study reads and the others would ignore without a word
    if args.study != "architectures":
        for flag, given in (("--archs", args.archs), ("--no-bundled", args.no_bundled)):
            if given:
                raise UserError(f"{flag} is for the architectures study")
    if args.variants and args.study not in ("grouping", "preprocessing", "channels"):
        raise UserError("--variants is for the grouping, preprocessing and channels studies")
    if args.runs is not None and not Path(args.runs).is_dir():
        raise UserError(f"--runs {args.runs}: no such folder")
    opts = Options(
        study=args.study,
        data=args.data,
        out=args.out,  # (Options refuses an empty one: Path("") is the current folder)
        work=args.work,
        budget=Budget(**{f.name: getattr(args, f.name) for f in fields(Budget)}),
        arch=arch,
        archs=archs,
        runs=args.runs,
        vgg_onnx=None if args.no_bundled else "bundled",
        test_fraction=args.test_fraction,
        variants=_names(args.variants),
        calib_faces=args.calib_faces,
        latency_threads=args.latency_threads,
        command=command,
    )
    path = run_study(opts)
    print(f"experiment {args.study}: report {path}")
    return 0
