"""`edge-fer train`: train a zoo architecture on a FER dataset."""

from __future__ import annotations

import json

from edge_fer.cli.common import HelpFormatter, add_skip_bad, thread_count
from edge_fer.cli.options import input_path
from edge_fer.limits import TRAIN_PRECISIONS


def register(sub) -> None:
    # fmt: off
    p = sub.add_parser("train", help="train a classifier (needs edge-fer[train])",
                       description="Train a zoo architecture on FER2013 (csv or image folders) or "
                       "a one-folder-per-class dataset. Trains on the Training split, selects on "
                       "PublicTest.", formatter_class=HelpFormatter)
    # fmt: on
    p.add_argument(
        "--arch",
        default="",
        help="architecture name (see `edge-fer models`); required, but with --resume: the "
        "run's own",
    )
    p.add_argument("--data", type=input_path, required=True, help="dataset folder or fer2013.csv")
    p.add_argument("--out", default="runs/train", help="run folder (checkpoints, logs)")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs (default 40; with --resume: a new total for the run)",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05, help="peak SGD learning rate")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--class-weights", action="store_true", help="weight the loss max(R)/(C n_i)")
    p.add_argument("--balanced-sampling", action="store_true", help="sample classes equally")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument(
        "--crop-aug",
        default="0,0.1",
        metavar="LO,HI",
        help="random crop per side, fractions of the side (negative LO: zoom out, border "
        "repeated); the average view keeps 1-(LO+HI) of the side, so -0.05,0.05 centres it on "
        "the plain face (write it --crop-aug=-0.05,0.05)",
    )
    p.add_argument(
        "--exposure-aug",
        default="1,1",
        metavar="LO,HI",
        help="camera exposure: half the training faces are multiplied by a gain drawn "
        "log-uniformly from LO..HI (1,1: off; 0.25,1.25 spans movie and camera faces)",
    )
    p.add_argument("--clahe", action="store_true", help="CLAHE on every face (train and infer)")
    p.add_argument("--align", action="store_true",
                   help="align every face on its eyes (bundled eye model; train and infer: "
                   "recorded in the exported model, `run` then aligns its crops)")  # fmt: skip
    p.add_argument("--align-frame", metavar="SIDE,TOP,BOTTOM", default=None,
                   help="with --align: the frame in eye distances, outwards from each eye, above "
                   "and below the eye line (default: FER2013's own, 0.83,1.09,1.58; the "
                   "issue's normalisation is 1.7,1.3,3.2)")  # fmt: skip
    p.add_argument("--channels", type=int, choices=(1, 3), default=1)
    p.add_argument("--input-size", type=int, default=None, help="input side (default 48)")
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--threads", type=thread_count, default=0, help="torch CPU threads (0: torch default)"
    )
    p.add_argument(
        "--precision", choices=TRAIN_PRECISIONS, default="fp32",
        help="the training steps' arithmetic: bf16 (bfloat16 autocast; weights and evaluation "
        "stay float32) is about 2.5x faster on CPUs with AMX or AVX512-BF16 and on recent GPUs; "
        "like --device, a --resume may change it (default fp32)",
    )  # fmt: skip
    p.add_argument("--arch-kwargs", default="{}", help="JSON of architecture options")
    p.add_argument(
        "--init",
        type=input_path,
        metavar="MODEL",
        default=None,
        help="start from these weights (an edge-fer checkpoint or FP32 ONNX of the "
        "same architecture, e.g. the bundled model) instead of random ones",
    )
    p.add_argument(
        "--teacher",
        type=input_path,
        metavar="ONNX",
        action="append",
        default=[],
        help="distil from this model (repeat for an ensemble); its probabilities "
        "with its own test-time augmentation are computed once per run",
    )
    p.add_argument(
        "--teacher-tta",
        default="auto",
        help="the teachers' test-time augmentation (auto: each model's default; "
        "with --distill-online: flip)",
    )
    p.add_argument(
        "--distill",
        type=float,
        default=None,
        help="weight of the teacher term in the loss, 0-1 (default: 0.7 with --teacher, else 0)",
    )
    p.add_argument("--distill-temperature", type=float, default=2.0)
    p.add_argument(
        "--distill-online",
        action="store_true",
        help="run the teachers on every training batch as the student sees it (augmented, "
        "mixed) instead of once on the clean faces; a teacher must share the student's "
        "preprocessing",
    )
    p.add_argument(
        "--mixup",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="mix each batch with a shuffled copy of itself, weights from Beta(ALPHA, ALPHA) "
        "(0.2-1 is usual; 0: off)",
    )
    p.add_argument(
        "--cutmix",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="paste a box of another face of the batch into each face, its area from "
        "Beta(ALPHA, ALPHA) (1 is usual; 0: off; with --mixup each batch takes one of the two)",
    )
    p.add_argument(
        "--extra-train",
        metavar="DIR",
        default=None,
        help="one folder per class of extra training faces (e.g. in-domain crops); selection "
        "stays on --data's held-out part",
    )
    p.add_argument(
        "--extra-repeat", type=int, default=1, help="use each --extra-train face N times per epoch"
    )
    p.add_argument(
        "--unlabelled",
        metavar="DIR",
        default=None,
        help="a folder of faces without labels (any layout; e.g. the runtime's crops of "
        "photos) trained on with the teachers' answers alone; needs --teacher",
    )
    p.add_argument(
        "--precise-bn",
        type=int,
        default=2048,
        metavar="N",
        help="before each evaluation, measure the batch norms' statistics on N un-augmented "
        "training faces instead of keeping their running averages over augmented ones "
        "(0: off)",
    )
    p.add_argument(
        "--average-last",
        type=int,
        default=0,
        metavar="K",
        help="also average the weights of the last K epochs (kept in OUT/snapshots), measure "
        "their batch-norm statistics and save averaged.safetensors beside best.safetensors, "
        "with its held-out score (0: off)",
    )
    add_skip_bad(
        p, "--data, --extra-train and --unlabelled (recorded in the run: a resume keeps it)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--max-batches",
        type=int,
        default=0,
        metavar="N",
        help="end each epoch after N batches: a quick check of a recipe (default 0: all)",
    )
    p.set_defaults(func=run)

    # fmt: off
    a = sub.add_parser("average", help="average the weights of a run's checkpoints (needs "
                       "edge-fer[train])",
                       description="Average the weights of checkpoints of one run (e.g. its "
                       "last epochs: stochastic weight averaging), measure the batch norms' "
                       "statistics on its un-augmented training faces, score its held-out split "
                       "and save a checkpoint that `edge-fer export` takes.",
                       formatter_class=HelpFormatter)
    # fmt: on
    a.add_argument("checkpoints", nargs="+", help="checkpoints (.safetensors) of one run")
    a.add_argument("--out", required=True, help="the averaged checkpoint (.safetensors)")
    a.add_argument(
        "--data",
        type=input_path,
        default=None,
        help="the run's dataset, if not where its config says (a relative one is looked for "
        "from here and from each folder above the checkpoints)",
    )
    a.add_argument(
        "--extra-train",
        metavar="DIR",
        default=None,
        help="the run's --extra-train folder, if not where its config says (looked for as "
        "--data is)",
    )
    a.add_argument(
        "--faces",
        type=int,
        default=2048,
        help="un-augmented training faces the batch-norm statistics are measured on",
    )
    add_skip_bad(a, "the run's data [default: as the run was trained]")
    a.add_argument("--threads", type=thread_count, default=0, help="torch threads (0: its default)")
    a.add_argument("--force", action="store_true", help="replace an existing --out file")
    a.set_defaults(func=run_average)


def run_average(args) -> int:
    from edge_fer.errors import UserError

    try:
        from edge_fer.train.average import average_checkpoints
    except ImportError as exc:
        raise UserError(
            f"averaging needs the train extra: python3 -m pip install '.[train]' in the edge-fer checkout ({exc})"
        )
    from pathlib import Path

    from edge_fer.fileio import check_collisions

    check_collisions([("--out", args.out)], [("a checkpoint", c) for c in args.checkpoints])
    if Path(args.out).is_file() and not args.force:  # a run's best.safetensors was replaced
        raise UserError(
            f"--out {args.out}: exists; pass --force to replace it, or give another name"
        )
    rep = average_checkpoints(
        args.checkpoints,
        args.out,
        data=args.data,
        extra_train=args.extra_train,
        faces=args.faces,
        threads=args.threads,
        skip_bad=args.skip_bad or None,  # (not given: the run's own)
    )
    print(json.dumps(rep))
    return 0


def _pair(text: str, param: str, example: str) -> tuple[float, float]:
    from edge_fer.errors import UserError

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"takes LO,HI (e.g. {example}), not {text!r}", param=param) from None
    return lo, hi


def run(args) -> int:
    from edge_fer.errors import UserError

    try:
        from edge_fer.train.trainer import TrainConfig, train
    except ImportError as exc:
        raise UserError(
            f"training needs the train extra: python3 -m pip install '.[train]' in the edge-fer checkout ({exc})"
        )
    try:
        kw = json.loads(args.arch_kwargs)
    except (ValueError, RecursionError):
        raise UserError(f"is not JSON: {args.arch_kwargs!r}", param="arch_kwargs") from None
    if not isinstance(kw, dict):
        raise UserError(
            f"takes a JSON object of options (e.g. '{{\"widths\": [16, 32]}}'), not "
            f"{args.arch_kwargs!r}",
            param="arch_kwargs",
        )
    # the flags named as TrainConfig's fields
    same = ["arch", "data", "out", "batch_size", "lr", "weight_decay", "label_smoothing"]
    same += ["class_weights", "balanced_sampling", "clahe", "align", "channels", "input_size"]
    same += ["patience"]
    same += ["seed", "device", "threads", "precision", "max_batches"]
    same += ["init", "teacher", "teacher_tta", "distill_temperature", "distill_online"]
    same += ["mixup", "cutmix"]
    same += ["extra_train", "extra_repeat", "unlabelled", "precise_bn", "average_last"]
    same += ["skip_bad"]
    frame = None
    if args.align_frame is not None:
        from edge_fer.align.aligner import parse_frame

        frame = parse_frame(args.align_frame, "align_frame")
    cfg = TrainConfig(
        **{k: getattr(args, k) for k in same},
        align_frame=frame,
        # --epochs left out: TrainConfig's default (0 is refused, not taken for "default")
        **({} if args.epochs is None else {"epochs": args.epochs}),
        distill=args.distill if args.distill is not None else (0.7 if args.teacher else 0.0),
        augment=not args.no_augment,
        crop_aug=_pair(args.crop_aug, "crop_aug", "--crop-aug=-0.05,0.05"),
        exposure_aug=_pair(args.exposure_aug, "exposure_aug", "--exposure-aug 0.25,1.25"),
        arch_kwargs=kw,
    )
    result = train(cfg, resume=args.resume, epochs_override=args.epochs)
    print(json.dumps(result))
    return 0
