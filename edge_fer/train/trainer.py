"""Supervised training of a zoo architecture on a face dataset.

Trains on the Training split only, selects on PublicTest (early stopping), checkpoints every
epoch in safetensors and resumes from the last one. Fixed seeds: the shuffling, augmentation
and dropout of epoch e depend only on (seed, e), so a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edge_fer import fileio
from edge_fer import labels as L
from edge_fer.data import FaceSet, load_dataset
from edge_fer.data.loaders import UNLABELLED, BadEntry, load_unlabelled
from edge_fer.errors import UserError, first_line
from edge_fer.fileio import check_collisions, check_outside
from edge_fer.limits import (
    check_count,
    check_names,
    check_number,
    check_threads,
    check_train_precision,
)
from edge_fer.metrics import classification_report
from edge_fer.models import create_model, model_info
from edge_fer.preprocess import PreprocessSpec, apply_clahe
from edge_fer.progress import Progress
from edge_fer.train.augment import AugmentConfig, augment
from edge_fer.train.average import average_checkpoints, snapshot_path, snapshots_after
from edge_fer.train.checkpoint import load_checkpoint, read_state, save_checkpoint
from edge_fer.train.distill import TARGETS_FILE
from edge_fer.train.mix import draw_mix
from edge_fer.train.precise_bn import DEFAULT_FACES, precise_bn

# the columns of a run's log.csv (the experiment studies write the same file)
LOG_FIELDS = [
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_top2",
    "val_macro_f1",
    "seconds",
]


@dataclass
class TrainConfig:
    arch: str
    data: str
    out: str = "runs/train"
    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    class_weights: bool = False
    balanced_sampling: bool = False
    augment: bool = True
    # random crop per side, (least, most) as fractions of the side; the mean view keeps
    # 1 - (least + most) of the side: (0, 0.1) trains on faces about 10% larger than plain
    crop_aug: tuple = (0.0, 0.1)
    # camera exposure: half the training faces times a gain from this range (log-uniform);
    # (1, 1): off (edge_fer.train.augment)
    exposure_aug: tuple = (1.0, 1.0)
    clahe: bool = False
    align: bool = False  # eye-aligned faces (edge_fer.align), once at load, before CLAHE
    align_frame: tuple | None = None  # (side, top, bottom) eye distances; None: FER2013's
    channels: int = 1
    input_size: int | None = None
    patience: int = 10
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    # the training steps' arithmetic: "fp32", or "bf16" (autocast: convolutions and matrix
    # products in bfloat16, weights, loss and evaluation in float32): about 2.5x faster on CPUs
    # with AMX or AVX512-BF16 and on recent GPUs, elsewhere slower
    precision: str = "fp32"
    val_fraction: float = 0.1  # layouts without a PublicTest split hold this much out
    arch_kwargs: dict = field(default_factory=dict)
    init: str | None = None  # warm start: a checkpoint or FP32 ONNX of the same architecture
    teacher: list = field(default_factory=list)  # ONNX teachers (edge_fer.train.distill)
    teacher_tta: str = "auto"  # the teachers' test-time augmentation (auto: each model's own)
    distill: float = 0.0  # weight of the teacher term in the loss (0: labels only)
    distill_temperature: float = 2.0
    # teachers run on each augmented (and mixed) batch instead of once on clean faces
    distill_online: bool = False
    mixup: float = 0.0  # Beta(a, a) alpha of mixup (edge_fer.train.mix); 0: off
    cutmix: float = 0.0  # Beta(a, a) alpha of CutMix; with mixup too, each batch takes one
    extra_train: str | None = None  # class folders whose faces join the training split
    extra_repeat: int = 1  # each extra face this many times per epoch (small in-domain sets)
    # a folder of faces without labels (any layout): they are learned from the teachers'
    # answers alone (offline or online distillation), never selected or scored on
    unlabelled: str | None = None
    # batch-norm statistics re-measured on this many un-augmented training faces before each
    # evaluation (edge_fer.train.precise_bn); 0: the running averages of training
    precise_bn: int = DEFAULT_FACES
    # the weights of the last K epochs averaged at the end (edge_fer.train.average):
    # averaged.safetensors beside best/last; 0: off
    average_last: int = 0
    max_batches: int = 0  # for smoke tests: stop each epoch after this many batches
    # unreadable images (and other bad entries) of --data and --extra-train are skipped and
    # counted (result.json: skipped, skipped_entries) instead of stopping the run
    skip_bad: bool = False


# what a run writes into its folder (besides snapshots/): never one of its inputs
RUN_FILES = (
    "best.safetensors",
    "last.safetensors",
    "averaged.safetensors",
    "config.json",
    "log.csv",
    "result.json",
    TARGETS_FILE,
    Path(TARGETS_FILE).with_suffix(".json").name,  # the key of the cached targets
)


def check_folder(path: str | os.PathLike, param: str) -> None:
    """UserError naming `param` unless `path` is a folder or can be made one (no file where
    it or one of its parents would be, and files can be made in the nearest that exists)."""
    from edge_fer.fileio import cannot_write_in

    if not os.fspath(path).strip():  # Path("") is "." (a script's unset --out "$RUN"): the
        # run's files went into the current folder without a word
        raise UserError("is empty: give a folder name (. for the current folder)", param=param)
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists() or q.is_symlink():
            if not q.is_dir():
                why = "exists and is not a folder" if q == p else f"{q} is not a folder"
                raise UserError(f"{p}: {why}", param=param)
            # before the work: prune's refusal came after its fine-tuning, as a traceback
            reason = cannot_write_in(q)
            if reason is not None:
                where = "" if q == p else f" in {q}"
                raise UserError(f"{p}: cannot write{where} ({reason})", param=param)
            return


def _check_unlabelled(cfg: TrainConfig) -> None:
    """--unlabelled: a folder outside --data and --extra-train, with teachers to learn from,
    and nothing that reads every face's label (mixing, class-balanced sampling)."""
    from edge_fer.fileio import inside

    if not Path(cfg.unlabelled).is_dir():
        raise UserError(f"{cfg.unlabelled}: no such folder", param="unlabelled")
    if not cfg.teacher or cfg.distill == 0:
        raise UserError("needs --teacher and --distill above 0: unlabelled faces are learned "
                        "from the teachers' answers", param="unlabelled")  # fmt: skip
    for other, flag in ((cfg.data, "--data"), (cfg.extra_train, "--extra-train")):
        if (
            other
            and Path(other).is_dir()
            and (inside(cfg.unlabelled, other) or inside(other, cfg.unlabelled))
        ):
            raise UserError(f"{cfg.unlabelled} and {flag} {other} overlap: labelled faces "
                            "would be trained on twice, or held-out ones trained on",
                            param="unlabelled")  # fmt: skip
    for name in ("mixup", "cutmix"):  # (a mixed pair's labels are not defined without one)
        if getattr(cfg, name):
            raise UserError(f"is not taken with --{name}: a mixed face needs both labels",
                            param="unlabelled")  # fmt: skip
    if cfg.balanced_sampling:
        raise UserError("is not taken with --balanced-sampling: unlabelled faces have no "
                        "class to balance", param="unlabelled")  # fmt: skip


def check_config(cfg: TrainConfig, resuming: bool = False) -> None:
    """Every setting of a run, before anything is loaded or written: a UserError naming the
    first one that does not fit (non-finite numbers included). `resuming` a saved run: its
    --init is not read (the weights are last.safetensors'), so it need not exist."""
    if not cfg.arch:  # (a resume of a saved run has it from the run by now)
        raise UserError("is required to start a run (see `edge-fer models`)", param="arch")
    # integers (a script's 1.5 trained 2 epochs, NaN failed deep in the schedule)
    for name, lowest in (("epochs", 1), ("batch_size", 1), ("patience", 0), ("seed", 0),
                         ("max_batches", 0), ("extra_repeat", 1), ("precise_bn", 0),
                         ("average_last", 0)):  # fmt: skip
        check_count(getattr(cfg, name), name, lowest)
    if cfg.seed >= 2**32:  # numpy's and torch's seeds
        raise UserError(f"must be below 2**32, got {cfg.seed}", param="seed")
    check_number(cfg.lr, "lr", lo_open=True)
    check_number(cfg.weight_decay, "weight_decay")
    check_number(cfg.momentum, "momentum", 0, 1, hi_open=True)
    check_number(cfg.warmup_epochs, "warmup_epochs")
    check_number(cfg.label_smoothing, "label_smoothing", 0, 1, hi_open=True)
    check_number(cfg.val_fraction, "val_fraction", 0, 1, lo_open=True, hi_open=True)
    check_threads(cfg.threads, zero="torch's default")
    check_train_precision(cfg.precision)
    if cfg.channels not in (1, 3):
        raise UserError(f"must be 1 or 3, got {cfg.channels}", param="channels")
    if cfg.input_size is not None:
        from edge_fer.preprocess import check_train_size

        check_train_size(cfg.input_size)
    check_number(cfg.distill, "distill", 0, 1)
    check_names(cfg.teacher, "teacher")
    if cfg.distill > 0 and not cfg.teacher:
        raise UserError("needs at least one teacher model", param="teacher")
    lo_hi = tuple(cfg.crop_aug)
    if len(lo_hi) != 2 or not -0.25 <= lo_hi[0] <= lo_hi[1] < 0.5:
        raise UserError("must be LO,HI with -0.25 <= LO <= HI < 0.5", param="crop_aug")
    lo_hi = tuple(cfg.exposure_aug)
    if len(lo_hi) != 2 or not 0.05 <= lo_hi[0] <= lo_hi[1] <= 4.0:
        raise UserError("must be LO,HI with 0.05 <= LO <= HI <= 4", param="exposure_aug")
    check_number(cfg.mixup, "mixup")
    check_number(cfg.cutmix, "cutmix")
    if cfg.distill_online and not cfg.teacher:
        raise UserError("needs at least one teacher model", param="distill_online")
    if cfg.distill_online and cfg.teacher_tta not in ("auto", "none", "flip"):
        raise UserError("online teachers take none or flip views", param="teacher_tta")
    if not 0 <= cfg.average_last <= cfg.epochs:
        raise UserError(f"must be in 0..{cfg.epochs} (--epochs)", param="average_last")
    if cfg.extra_train and not Path(cfg.extra_train).is_dir():
        raise UserError(f"{cfg.extra_train}: no such folder", param="extra_train")
    if cfg.extra_train and cfg.data and Path(cfg.data).is_dir():
        from edge_fer.fileio import inside

        # its faces are part of --data's: held-out ones trained on, or training ones twice
        # (before: accepted without a word, e.g. --data fer --extra-train fer/test)
        if inside(cfg.extra_train, cfg.data) or inside(cfg.data, cfg.extra_train):
            raise UserError(
                f"{cfg.extra_train} and --data {cfg.data} overlap: extra faces must come from "
                "outside the dataset (its test and selection faces would be trained on)",
                param="extra_train",
            )
    check_number(cfg.distill_temperature, "distill_temperature", lo_open=True)
    if cfg.unlabelled:
        _check_unlabelled(cfg)
    if not resuming:  # options of an option that is not given did nothing, without a word
        # (not on resume: a run saved before this check keeps its settings)
        if cfg.extra_repeat != 1 and not cfg.extra_train:
            raise UserError(
                f"is {cfg.extra_repeat}, but no --extra-train faces are given to repeat",
                param="extra_repeat",
            )
        # (before, the teachers' probabilities took minutes for a loss term of weight 0)
        if cfg.teacher and cfg.distill == 0:
            raise UserError("is not used with --distill 0 (drop one of them)", param="teacher")
        if not cfg.augment:
            for name in ("crop_aug", "exposure_aug"):
                default = TrainConfig.__dataclass_fields__[name].default
                if tuple(float(v) for v in getattr(cfg, name)) != default:
                    raise UserError("is not applied with --no-augment", param=name)
        default_t = TrainConfig.__dataclass_fields__["distill_temperature"].default
        for name, value, default in (
            ("teacher_tta", cfg.teacher_tta, "auto"),
            ("distill_temperature", cfg.distill_temperature, default_t),
        ):
            if value != default and not cfg.teacher:
                raise UserError(f"is {value!r}, but no --teacher is given", param=name)
    for t in list(cfg.teacher) + ([cfg.init] if cfg.init and not resuming else []):
        if not Path(t).is_file():
            # a folder is there, just not a model file (was: "no such model file")
            what = (
                "is a folder, not a model file"
                if Path(t).is_dir()
                else "not a regular file"
                if Path(t).exists()
                else "no such model file"
            )
            raise UserError(f"{t}: {what}", param="teacher" if t != cfg.init else "init")
    if not isinstance(cfg.arch_kwargs, dict):
        raise UserError("must be a JSON object of architecture options", param="arch_kwargs")
    # said with the flag's name (the library's own messages name no flag)
    from edge_fer.tta import TTA_MODES

    if cfg.teacher_tta not in ("auto", *TTA_MODES):
        raise UserError(f"is {cfg.teacher_tta!r}; choose auto, {', '.join(TTA_MODES)}",
                        param="teacher_tta")  # fmt: skip
    if not str(cfg.data).strip():  # (Path("") read the current folder as the dataset)
        raise UserError("is empty: give the dataset folder or fer2013.csv", param="data")
    if not Path(cfg.data).exists():
        raise UserError(f"{cfg.data}: no such file or folder", param="data")
    model = build_model(cfg, len(L.FER2013))  # the architecture takes its options and size
    if cfg.batch_size == 1:  # every batch one face: a batch norm over 1x1 cannot train on it
        size = cfg.input_size or 48
        try:
            with torch.no_grad():
                model.train()(torch.zeros(1, cfg.channels, size, size))
        except ValueError:
            raise UserError(f"is 1, but the batch norms of {cfg.arch} at {size}x{size} cannot "
                            "train on one face a batch: give 2 or more",
                            param="batch_size") from None  # fmt: skip


def build_model(cfg: TrainConfig, num_classes: int) -> torch.nn.Module:
    """The run's untrained model; options the architecture does not take (--arch-kwargs), or
    an input it cannot shrink to one pixel (--input-size), are a UserError naming them."""
    import warnings

    kw = arch_kwargs_for(cfg)
    try:
        with warnings.catch_warnings():  # a dense head sized for too small an input says so
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            model = create_model(cfg.arch, num_classes=num_classes, in_channels=cfg.channels, **kw)
    except UserError as exc:  # the registry's "unknown architecture", said with the flag
        raise UserError(str(exc).replace("unknown architecture ", "is "), param="arch") from None
    except (TypeError, ValueError, IndexError, ArithmeticError, RuntimeError) as exc:
        # RuntimeError: torch's "negative dimension" ({"widths": [-8, ...]}) or an allocation
        # of hundreds of GB ({"alpha": 1e9}); IndexError: a width of 0; OverflowError: an
        # infinite one ({"alpha": 1e309} is JSON for inf)
        raise UserError(f"{kw} do not fit {cfg.arch} ({first_line(exc)})",
                        param="arch_kwargs") from None  # fmt: skip
    size = cfg.input_size or 48
    try:
        model_info(model, size, cfg.channels)
    except RuntimeError as exc:
        param = "input_size" if cfg.input_size else "arch_kwargs"
        raise UserError(f"{cfg.arch} cannot take {size}x{size} faces ({first_line(exc)})",
                        param=param) from None  # fmt: skip
    return model


def slow_bf16(device: torch.device) -> str | None:
    """Why bfloat16 training would be slow on `device` (no native bfloat16 arithmetic), or
    None: on such CPUs oneDNN emulates it, slower than float32."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this GPU has no bfloat16 support"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return None if native else "this CPU has no AVX512-BF16 or AMX instructions"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(
            f"must be auto, cpu, cuda or cuda:N (a device torch knows), got {name!r}",
            param="device",
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"is {name}, but torch sees no CUDA device", param="device")
    if device.type not in ("cpu", "cuda"):  # mps, meta, xpu...: tracebacks after the data
        try:  # loaded ("PyTorch is not linked with support for mps devices")
            torch.zeros(1, device=device) + 1
        except (RuntimeError, NotImplementedError, AssertionError) as exc:
            raise UserError(f"is {name}, which this torch cannot use ({first_line(exc)})",
                            param="device") from None  # fmt: skip
        if device.type == "meta":  # tensors without data: nothing would be trained
            raise UserError("is meta, which holds no data: use cpu or cuda", param="device")
    return device


def load_splits(cfg: TrainConfig) -> tuple[FaceSet, FaceSet, str]:
    train, val, val_name = _load_splits(cfg)
    # One class (a single class folder passed as the dataset) trains a model that can only
    # answer that class, and reports accuracy 1.0 for it.
    present = [c for c, n in zip(train.classes, train.counts()) if n]
    if len(present) < 2:
        held = [c for c, n in zip(val.classes, val.counts()) if n and c not in present]
        # before: "pass the folder that holds one folder per class" also when it was passed
        # and the held-out part had taken a class's only faces
        hint = (
            f"the validation faces ({val_name}) hold the only faces of {', '.join(held)}: add faces"
            if held
            else "pass the folder that holds one folder per class"
        )
        raise UserError(
            f"{cfg.data}: training faces of {len(present)} class"
            f"{'' if len(present) == 1 else 'es'} ({', '.join(present) or 'none'}); a classifier "
            f"needs at least two ({hint})",
            param="data",
        )
    return train, val, val_name


def _load_splits(cfg: TrainConfig) -> tuple[FaceSet, FaceSet, str]:
    from edge_fer.data.loaders import EmptySplit, detect_layout

    layout = detect_layout(Path(cfg.data))
    size = cfg.input_size or 48
    whole = "all"
    if layout in ("fer2013-folder", "fer2013-csv"):
        train = load_dataset(cfg.data, "train", size=size, skip_bad=cfg.skip_bad)
        try:
            val = load_dataset(cfg.data, "public-test", size=size, skip_bad=cfg.skip_bad)
            return with_extra(train, cfg), val, "public-test"
        except EmptySplit:  # FER2013's Training_* files alone (a subset): hold part of them out
            whole = "train"
    full = load_dataset(cfg.data, whole, size=size, skip_bad=cfg.skip_bad)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(full))
    n_val = max(1, int(len(full) * cfg.val_fraction))
    mask = np.zeros(len(full), bool)
    mask[order[:n_val]] = True
    # a skipped entry belongs to no split: the training part counts it, once
    val = dataclasses.replace(full.subset(mask), skipped=0, skipped_entries=[])
    return with_extra(full.subset(~mask), cfg), val, f"held-out {cfg.val_fraction:.0%}"


def skipped_of(train: FaceSet, val: FaceSet) -> dict:
    """What --skip-bad skipped while loading a run's data (`load_splits`' sets), named as
    `edge-fer eval` names them: {"skipped": count, "skipped_entries": the first ones}."""
    from edge_fer.data.faceset import SKIPPED_KEPT

    both = list(train.skipped_entries) + list(val.skipped_entries)
    # a csv row whose emotion or Usage is bad is skipped by each split's read: counted once
    entries = list(dict.fromkeys(both))
    count = train.skipped + val.skipped - (len(both) - len(entries))
    return {"skipped": count, "skipped_entries": entries[:SKIPPED_KEPT]}


def prepare_faces(images: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Faces as the run trains on them, once at load: aligned on the eyes, then CLAHE (the
    runtime's order: crop, then prepare)."""
    if spec.align:
        from edge_fer.align import align_images

        images = align_images(images, spec)
    return apply_clahe(images) if spec.clahe else images


def extra_count(cfg: TrainConfig) -> int:
    """How many training faces with_extra adds (they come last)."""
    if not cfg.extra_train:
        return 0
    size = cfg.input_size or 48
    return cfg.extra_repeat * len(
        load_dataset(cfg.extra_train, "all", size=size, skip_bad=cfg.skip_bad)
    )


def with_extra(train: FaceSet, cfg: TrainConfig) -> FaceSet:
    """`train` plus cfg.extra_train's faces (all of them, cfg.extra_repeat times), their labels
    mapped by class name; selection stays on the main dataset's held-out part."""
    if not cfg.extra_train:
        return train
    try:
        extra = load_dataset(
            cfg.extra_train, "all", size=train.images.shape[1], skip_bad=cfg.skip_bad
        )
    except UserError as exc:  # "no images found" and the like, said with the flag
        raise (UserError(str(exc), param="extra_train") if exc.param is None else exc) from None
    unknown = [c for c, n in zip(extra.classes, extra.counts()) if n and c not in train.classes]
    if unknown:
        raise UserError(
            f"{cfg.extra_train}: classes {', '.join(unknown)} are not among the training "
            f"data's ({', '.join(train.classes)})",
            param="extra_train",
        )
    remap = np.array([train.classes.index(c) if c in train.classes else -1 for c in extra.classes])
    k = cfg.extra_repeat
    return FaceSet(
        np.concatenate([train.images] + [extra.images] * k),
        np.concatenate([train.labels] + [remap[extra.labels]] * k).astype(np.int64),
        train.classes,
        list(train.ids) + list(extra.ids) * k if train.ids else [],
        # the extra folder's skipped entries too, named from the folder (not --data)
        train.skipped + extra.skipped,
        list(train.skipped_entries)
        + [os.path.join(cfg.extra_train, e) for e in extra.skipped_entries],
    )


def unlabelled_faces(cfg: TrainConfig) -> FaceSet | None:
    """cfg.unlabelled's faces (labels UNLABELLED), or None without the option."""
    if not cfg.unlabelled:
        return None
    try:
        return load_unlabelled(cfg.unlabelled, cfg.input_size or 48, cfg.skip_bad)
    except BadEntry:
        raise  # (named by its file; the CLI adds the --skip-bad hint)
    except UserError as exc:  # "no images found" and the like, said with the flag
        raise (UserError(str(exc), param="unlabelled") if exc.param is None else exc) from None


def arch_kwargs_for(cfg: TrainConfig) -> dict:
    """Architecture options, plus the input size for nets whose dense head depends on it."""
    import inspect

    from edge_fer.models.registry import _REGISTRY, _load_zoo

    _load_zoo()
    kw = dict(cfg.arch_kwargs)
    fn = _REGISTRY.get(cfg.arch)
    if fn is not None and cfg.input_size and "input_size" in inspect.signature(fn).parameters:
        kw.setdefault("input_size", cfg.input_size)
    return kw


def start_run_files(out: Path, config: dict, done: int | None = None) -> Path:
    """Write the run's config.json and, unless resuming one, the header of its log.csv.
    `done`: the epochs the run's checkpoint holds; rows of later epochs are dropped (an
    interrupt between an epoch's row and its checkpoint: the epoch is trained again)."""
    # numpy numbers and paths (a script's settings) as JSON numbers and strings
    fileio.write_text(out / "config.json", fileio.dumps(config, indent=2))
    log_path = out / "log.csv"
    if not log_path.exists() or log_path.stat().st_size == 0:
        fileio.write_text(log_path, _LOG_HEADER + "\r\n")  # (csv.writer's line ending)
    elif done is not None:
        _drop_rows_after(log_path, done)
    return log_path


_LOG_HEADER = ",".join(LOG_FIELDS)


def _drop_rows_after(log_path: Path, done: int) -> None:
    """Rewrite log.csv (atomically) without the rows of epochs after `done`, and without a
    last row cut short (no line end: the process was killed while writing it)."""
    try:
        lines = log_path.read_bytes().splitlines(keepends=True)
    except OSError:
        return  # (appending to it reports the problem)

    def after(line: bytes) -> bool:
        head = line.split(b",", 1)[0].strip()
        return not line.endswith(b"\n") or (head.isdigit() and int(head) > done)

    keep = lines[:1] + [ln for ln in lines[1:] if not after(ln)]
    if len(keep) != len(lines):
        fileio.write_bytes(log_path, b"".join(keep))


def log_row(epoch: int, lr, train_loss, train_acc, val_loss, rep: dict, t0: float) -> dict:
    """One epoch's log.csv row (LOG_FIELDS) from the selection split's report."""
    return {
        "epoch": epoch,
        "lr": lr,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": val_loss,
        "val_acc": rep["accuracy"],
        "val_top2": rep["top2_accuracy"],
        "val_macro_f1": rep["macro_f1"],
        "seconds": time.time() - t0,
    }


def append_log(log_path: Path, row: dict) -> None:
    with open(log_path, "a", newline="") as fh:
        csv.writer(fh).writerow(
            [f"{row[k]:.6g}" if isinstance(row[k], float) else row[k] for k in LOG_FIELDS]
        )


@contextlib.contextmanager
def _without_onednn():
    """oneDNN off, nothing else changed: torch.backends.mkldnn.flags(enabled=False) also set
    its default allow_tf32=True, which made torch (2.13, CPU builds) warn "TF32 acceleration on
    top of oneDNN is available for Intel GPUs ..." on stderr, a setting of ours, not the user's
    (its keywords differ between torch versions, hence the one flag set by hand)."""
    mkldnn = torch.backends.mkldnn
    before = mkldnn.enabled
    mkldnn.enabled = False
    try:
        yield
    finally:
        mkldnn.enabled = before


def train_step(model, opt, x: torch.Tensor, lr: float, loss_of, precision: str = "fp32") -> tuple:
    """One SGD step at learning rate `lr` on the loss `loss_of(logits)`: (logits, loss).
    `precision` "bf16": the forward pass under bfloat16 autocast; the logits come back as
    float32, so the loss and its teachers' targets are computed as before."""
    for g in opt.param_groups:
        g["lr"] = lr
    # torch 2.13's oneDNN crashed the process (SIGSEGV, "double free") in the backward pass of
    # a channels-last 1x1 stride-2 convolution on 8 channels (mini_xception's first residual)
    # for odd batches of 3 or more on 2+ threads: such batches run without oneDNN (same sums)
    odd = x.device.type == "cpu" and x.shape[0] > 1 and x.shape[0] % 2 == 1
    bf16 = precision == "bf16" and not odd  # (bfloat16 on CPU is oneDNN's)
    with _without_onednn() if odd else contextlib.nullcontext():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        logits = logits.float()
        loss = loss_of(logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
    opt.step()
    return logits, loss


def loss_with_unlabelled(
    logits: torch.Tensor, y: torch.Tensor, teacher_log: torch.Tensor, weights, cfg: TrainConfig
) -> torch.Tensor:
    """The loss of a batch holding unlabelled faces (label UNLABELLED): for each labelled face
    (1 - a) CE + a KD as in a batch without them (the same sum over the batch), for each
    unlabelled one KD alone at full weight; a = cfg.distill, KD the teachers' term."""
    from edge_fer.train.distill import distill_rows

    lab = y != UNLABELLED
    kd = distill_rows(logits, teacher_log, cfg.distill_temperature)
    loss = (torch.where(lab, cfg.distill, 1.0) * kd).mean()
    if bool(lab.any()):
        ce = F.cross_entropy(
            logits[lab], y[lab], weight=weights, label_smoothing=cfg.label_smoothing
        )
        loss = loss + (1 - cfg.distill) * ce * (lab.sum() / len(y))
    return loss


def mean_nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (the log's val_loss)."""
    return float(-np.log(np.clip(probs[np.arange(len(probs)), labels], 1e-7, 1)).mean())


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def sgd(model: torch.nn.Module, cfg) -> torch.optim.SGD:
    """Nesterov SGD from cfg (lr, momentum, weight_decay; a TrainConfig or the fine-tuning
    one), with weight decay on weights only, not on biases and norm scales; frozen parameters
    are left out."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0},
    ]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def schedule(n: int, cfg) -> tuple[int, int, int]:
    """(steps per epoch, total steps, warm-up steps) for n training samples under cfg
    (batch_size, max_batches, epochs, warmup_epochs). A last batch of one sample joins the
    batch before it (`batch_end`): batch norm cannot train on one face at 1x1."""
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    if n % cfg.batch_size == 1 and n > 1:
        steps_per_epoch -= 1
    if cfg.max_batches:
        steps_per_epoch = min(steps_per_epoch, cfg.max_batches)
    return steps_per_epoch, steps_per_epoch * cfg.epochs, int(steps_per_epoch * cfg.warmup_epochs)


def batch_end(b: int, n: int, batch_size: int) -> int:
    """Where batch `b` of an epoch of n samples ends: one sample left after it joins it."""
    end = (b + 1) * batch_size
    return n if n - end == 1 else end


def to_input(x_u8: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    return x_u8.float()


def normalise(x: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    x = (x / 255.0 - spec.mean) / spec.std
    if spec.channels == 3:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def predict(
    model, images: np.ndarray, spec: PreprocessSpec, device, batch: int = 512
) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i : i + batch]).to(device)[:, None].float()
        out.append(F.softmax(model(normalise(x, spec)), 1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(spec.classes)), np.float32)


def _diverged(epoch: int, cfg: TrainConfig, what: str) -> UserError:
    return UserError(
        f"the training diverged in epoch {epoch + 1} ({what}); lower the learning rate "
        f"(--lr {cfg.lr:g}) and start a new run (another --out); the checkpoints saved before "
        "this epoch are kept"
    )


def _plain(v):
    """A setting as the run's JSON holds it (tuples are lists, paths strings, numpy numbers
    Python ones there)."""
    try:
        return json.loads(fileio.dumps(list(v) if isinstance(v, tuple) else v))
    except (TypeError, ValueError):  # NaN in an old run's file; something JSON cannot hold
        return v


# settings of the machine, not of the run: a resume takes this invocation's (a run begun on a
# CPU goes on on a GPU, with the new machine's thread count)
MACHINE = ("device", "threads", "precision")


def _run_files_present(out: Path) -> list[str]:
    """The files of a trained run in `out` (weights, results, a log with epochs in it): a new
    run there would mix with them (config.json, a bare log and the teachers' cached targets
    are rewritten or checked, so they do not count)."""
    from edge_fer.train.average import SNAPSHOTS

    found = [n for n in ("best.safetensors", "averaged.safetensors", "result.json")
             if (out / n).exists()]  # fmt: skip
    snaps = out / SNAPSHOTS
    if snaps.is_dir() and any(snaps.iterdir()):
        found.append(f"{SNAPSHOTS}/")
    log = out / "log.csv"
    try:
        if log.is_file() and len(log.read_text().splitlines()) > 1:
            found.append("log.csv")
    except (OSError, UnicodeDecodeError):
        found.append("log.csv")
    return found


def _not_run_files(out: Path) -> list[str]:
    """config.json and log.csv in `out` that a run did not write (a run would replace the
    one and append epochs to the other): a config without a run's settings, a log whose
    first line is not LOG_FIELDS (an empty log is fine: the run writes its header)."""
    found = []
    try:
        cfg = json.loads((out / "config.json").read_text())
        if not isinstance(cfg, dict) or not _RUN_CONFIG_KEYS <= cfg.keys():
            found.append("config.json")
    except FileNotFoundError:
        pass
    except (OSError, ValueError):  # (UnicodeDecodeError too)
        found.append("config.json")
    log = out / "log.csv"
    try:
        head = log.read_bytes().splitlines()[:1] if log.exists() else []
        if head and head[0].decode().strip() != _LOG_HEADER:
            found.append("log.csv")
    except (OSError, UnicodeDecodeError):
        found.append("log.csv")
    return found


# settings every run's config.json has held
_RUN_CONFIG_KEYS = {"arch", "data", "out", "epochs", "batch_size", "lr", "seed"}

# a run's inputs, recorded as given: a resume finds moved ones (--data's way)
_INPUTS = ("data", "extra_train", "unlabelled", "init", "teacher")


def _inputs_found(
    cfg: TrainConfig, checkpoint: Path, given: TrainConfig
) -> tuple[TrainConfig, list[str]]:
    """A resumed run's inputs (`_INPUTS`) as recorded, else found from the folders above the
    run (as `edge-fer average` does: a relative path given from elsewhere), else the path
    given now (`given`; teachers by position); and what moved, as "--flag OLD -> NEW"."""
    from edge_fer.train.average import find_recorded

    def locate(recorded: str, now) -> str:
        if Path(recorded).exists():
            return recorded
        found = find_recorded(recorded, checkpoint)
        if found is None and now and Path(now).exists():
            found = Path(now)
        return recorded if found is None else str(found)

    changes: dict = {}
    moved = []
    for what in _INPUTS:
        recorded = getattr(cfg, what)
        if not recorded:
            continue
        if what == "teacher":
            now = list(given.teacher) if len(given.teacher) == len(recorded) else []
            teachers = [locate(t, now[i] if now else None) for i, t in enumerate(recorded)]
            pairs = [(t, n) for t, n in zip(recorded, teachers) if t != n]
            new: str | list[str] = teachers
        else:
            new = locate(recorded, getattr(given, what))
            pairs = [(recorded, new)] if new != recorded else []
        if pairs:
            changes[what] = new
            moved += [f"--{what.replace('_', '-')} {a} -> {b}" for a, b in pairs]
    return (dataclasses.replace(cfg, **changes) if changes else cfg), moved


def _ignored_on_resume(cfg: TrainConfig, saved: dict, found: TrainConfig) -> list[str]:
    """The settings of `cfg` that differ from the run's (`saved`) and from the defaults, i.e.
    that were asked for and that a resume does not apply, as "--flag VALUE (the run's: V)".
    An input given where the run's was found (`found`, spelled from here) is applied."""
    from dataclasses import MISSING, fields

    def same_place(a, b) -> bool:
        a, b = (list(v) if isinstance(v, (list, tuple)) else [v] for v in (a, b))
        return len(a) == len(b) and all(
            x and y and os.path.realpath(x) == os.path.realpath(y) for x, y in zip(a, b)
        )

    out = []
    for f in fields(TrainConfig):
        if f.name in ("arch", "out", "epochs", *MACHINE) or f.name not in saved:
            continue
        mine = getattr(cfg, f.name)
        if f.name in _INPUTS and same_place(mine, getattr(found, f.name)):
            continue
        default = f.default if f.default is not MISSING else None
        if f.default_factory is not MISSING:
            default = f.default_factory()
        theirs = saved[f.name]
        if _plain(mine) == _plain(theirs) or _plain(mine) == _plain(default):
            continue
        out.append(f"--{f.name.replace('_', '-')} {mine} (the run's: {theirs})")
    return out


def _teachers(
    cfg: TrainConfig, out: Path, train_set, classes, spec, device, unlabelled=None
) -> tuple:
    """(log-targets of every training face or None, online teachers or None) for --distill;
    the faces: train_set's (main, then --extra-train's), then `unlabelled`'s images."""
    soft_all = online = None
    if cfg.distill > 0:
        from edge_fer.train.distill import (
            TARGETS_FILE,
            OnlineTeachers,
            log_targets,
            teacher_targets,
        )
    if cfg.distill > 0 and cfg.distill_online:
        online = OnlineTeachers(list(cfg.teacher), spec, device, cfg.teacher_tta)
    elif cfg.distill > 0:
        # the teachers speak for the main dataset; --extra-train faces keep their own labels
        n_extra = extra_count(cfg)
        n_main = len(train_set) - n_extra
        asked = train_set.images[:n_main]
        if unlabelled is not None and len(unlabelled):  # (one cache for both)
            asked = np.concatenate([asked, unlabelled])
        soft = teacher_targets(
            list(cfg.teacher),
            asked,
            tuple(classes),
            cfg.teacher_tta,
            cfg.threads,
            out / TARGETS_FILE,
        )
        own = np.eye(len(classes), dtype=np.float32)[train_set.labels[n_main:]]
        soft_all = log_targets(np.concatenate([soft[:n_main], own, soft[n_main:]]))
    return soft_all, online


def _script_values(cfg: TrainConfig) -> TrainConfig:
    """A copy with a script's numpy numbers as Python ones and paths as strings, as the CLI
    gives them (torch's generators refuse numpy ints; the run's JSON and its resume compare
    strings)."""
    changes = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, np.generic):
            changes[f.name] = v.item()
        elif isinstance(v, os.PathLike):
            changes[f.name] = os.fspath(v)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def train(cfg: TrainConfig, resume: bool = False, epochs_override: int | None = None) -> dict:
    """Train; with `resume`, continue the run in cfg.out with its saved settings.

    `epochs_override` changes the length of a resumed run (the cosine schedule is rescaled to
    the new total from the current step on), e.g. to finish sooner on a busy machine. The run
    folder is locked while it trains: a second process training into it is refused.
    """
    locks: list[fileio.FolderLock] = []
    try:
        return _train(cfg, resume, epochs_override, locks)
    finally:
        for lock in locks:
            lock.release()


def _train(cfg: TrainConfig, resume: bool, epochs_override: int | None, locks: list) -> dict:
    cfg = _script_values(cfg)
    if cfg.align_frame is not None and not cfg.align:  # (before: recorded, never used)
        raise UserError("needs --align", param="align_frame")
    check_folder(cfg.out, "out")  # (as given: Path("") is ".")
    out = Path(cfg.out)
    last = out / "last.safetensors"
    notes: list[str] = []  # said once the settings are checked (a mistake is one line)
    if resume and last.exists():
        st = read_state(last)
        saved = st.get("config")
        if saved:
            if saved.get("arch") and cfg.arch and cfg.arch != saved["arch"]:  # it was ignored
                raise UserError(
                    f"is {cfg.arch!r}, but the run in {out} trains {saved['arch']!r}; resume it "
                    f"with --arch {saved['arch']}, or start another run with another --out",
                    param="arch",
                )
            if epochs_override is not None and epochs_override < 1:
                raise UserError("must be >= 1", param="epochs")
            done = int(st.get("epoch") or 0)
            if epochs_override is not None and epochs_override < done:
                # (it re-averaged other snapshots over the run's average and its config)
                raise UserError(f"is {epochs_override}, but the run in {out} has done {done} "
                                f"epochs; give {done} or more", param="epochs")  # fmt: skip
            found, moved = _inputs_found(TrainConfig(**saved), last, given=cfg)
            ignored = _ignored_on_resume(cfg, saved, found)
            if moved:
                notes.append(f"--resume found the run's moved inputs: {'; '.join(moved)}")
            if ignored:  # the run's own settings win: say so, as a changed --arch is refused
                notes.append(f"--resume keeps the run's own settings; not applied: "
                             f"{'; '.join(ignored)}")  # fmt: skip
            # the original run's settings win on resume, with its data found from here
            cfg = dataclasses.replace(found, **{k: getattr(cfg, k) for k in MACHINE})
            if epochs_override is not None:
                cfg.epochs = epochs_override
                if cfg.average_last > cfg.epochs:  # a run shortened on resume averages what it has
                    print(f"edge-fer train: averaging the last {cfg.epochs} epochs (the run's "
                          f"--average-last {cfg.average_last} is longer than the new --epochs)",
                          file=sys.stderr)  # fmt: skip
                    cfg.average_last = cfg.epochs
    elif not last.exists() and (names := _not_run_files(out)):
        # (before: a user's config.json replaced, rows appended under a user's log.csv)
        raise UserError(f"{out} holds {' and '.join(names)}, not a run's; a run would "
                        "overwrite them: pick another --out", param="out")  # fmt: skip
    elif not resume and last.exists():
        raise UserError(f"{out} already holds a run (last.safetensors); pass --resume to "
                        "continue it or pick another --out")  # fmt: skip
    elif names := _run_files_present(out):
        # a finished run without its last.safetensors (deleted to save space): --resume, as
        # the message advised, started over and replaced its best weights, log and results
        raise UserError(f"{out} already holds a run ({', '.join(names)}) that cannot be "
                        "resumed (no last.safetensors); pick another --out")  # fmt: skip
    elif resume:
        # nothing saved yet: a run stopped in its first epoch starts again (a log beside it is
        # fine); a folder of images or subfolders is data, not a run
        from edge_fer.runtime.sources import IMAGE_EXTS
        from edge_fer.train.average import SNAPSHOTS

        found = sorted(out.iterdir()) if out.is_dir() else []
        others = [
            p.name
            for p in found
            if (p.is_dir() and p.name != SNAPSHOTS) or p.suffix.lower() in IMAGE_EXTS
        ]
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise UserError(
                f"{out} is not a run folder (no last.safetensors; it holds {shown}): "
                "--resume continues a run in the folder it was written to",
                param="out",
            )
        notes.append(f"nothing to resume in {out}: starting the run")
    check_config(cfg, resuming=resume and last.exists())
    check_outside([("--out", out)], cfg.data, "--data", "the run's files would mix with the faces")
    for folder, flag in ((cfg.extra_train, "--extra-train"), (cfg.unlabelled, "--unlabelled")):
        if folder:  # before: the run's files were written among the extra faces
            why = "the run's files would mix with the faces"
            check_outside([("--out", out)], folder, flag, why)
    check_collisions(
        [("--out", out / name) for name in RUN_FILES],
        [("--init", cfg.init), ("--data", cfg.data)] + [("--teacher", t) for t in cfg.teacher],
    )
    for note in notes:
        print(f"edge-fer train: {note}", file=sys.stderr)

    device = pick_device(cfg.device)
    if cfg.precision == "bf16" and (why := slow_bf16(device)) is not None:
        print(f"edge-fer train: warning: --precision bf16: {why}; it trains slower than "
              "fp32 here", file=sys.stderr)  # fmt: skip
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # the initial weights
    try:
        train_set, val_set, val_name = load_splits(cfg)
        unl = unlabelled_faces(cfg)
    except BadEntry as exc:
        if not (resume and last.exists()):
            raise  # (the CLI adds "use --skip-bad to skip such files")
        # a resume keeps the run's settings: --skip-bad now would not be applied
        raise UserError(f"{exc}: the run in {out} was started without --skip-bad and a "
                        "resume keeps its settings; restore or remove the file, or start a "
                        "new run (another --out) with --skip-bad") from None  # fmt: skip
    skipped = skipped_of(train_set, val_set) if cfg.skip_bad else {}
    if skipped.get("skipped"):
        from edge_fer.data.faceset import skipped_line

        line = skipped_line(skipped["skipped"], skipped["skipped_entries"])
        print(f"edge-fer train: {line}", file=sys.stderr)
    if unl is not None and unl.skipped:
        from edge_fer.data.faceset import skipped_line

        line = skipped_line(unl.skipped, unl.skipped_entries)
        print(f"edge-fer train: --unlabelled {cfg.unlabelled}: {line}", file=sys.stderr)
    classes = train_set.classes
    size = cfg.input_size or 48
    spec = PreprocessSpec(
        input_size=size, channels=cfg.channels, clahe=cfg.clahe, align=cfg.align, classes=classes
    )
    if cfg.align_frame is not None:
        spec.align_frame = tuple(float(v) for v in cfg.align_frame)
    tr_imgs, va_imgs = prepare_faces(train_set.images, spec), prepare_faces(val_set.images, spec)
    # the unlabelled faces come after the labelled ones; batch norms are measured (precise-bn,
    # averaging) on the labelled ones alone, as `edge-fer average` can find them again
    un_imgs = prepare_faces(unl.images, spec) if unl is not None else tr_imgs[:0]

    model = build_model(cfg, len(classes))
    info = model_info(model, size, cfg.channels)
    model = model.to(device).to(memory_format=torch.channels_last)
    opt = sgd(model, cfg)
    state = {"epoch": 0, "step": 0, "best_acc": -1.0, "best_epoch": -1, "bad_epochs": 0}
    if resume and last.exists():
        state.update(load_checkpoint(last, model, opt))
        print(
            f"resuming {out} at epoch {state['epoch']} (best {state['best_acc']:.4f})",
            file=sys.stderr,
        )
    elif cfg.init:
        from edge_fer.train.warm_start import warm_start

        try:
            warm_start(model, cfg.init, cfg.arch, arch_kwargs_for(cfg), tr_imgs, spec)
        except UserError as exc:  # "X: not an ONNX model" and the like, said with the flag
            raise (UserError(str(exc), param="init") if exc.param is None else exc) from None
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)  # after the data, the model and --init fit
    # a second process into the same folder (a run begun twice, a --resume while it trains):
    # both wrote log rows and checkpoints into it
    locks.append(fileio.FolderLock(out, "edge-fer train"))
    try:
        soft_all, online = _teachers(
            cfg, out, train_set, classes, spec, device, unl.images if unl is not None else None
        )
    except UserError as exc:  # a teacher that is no model: the folder made for the run goes
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # (only when empty)
        if exc.param is None and cfg.teacher:
            raise UserError(str(exc), param="teacher") from None
        raise

    weights = torch.tensor(train_set.class_weights(), device=device) if cfg.class_weights else None
    n_train = len(train_set) + len(un_imgs)
    steps_per_epoch, total, warmup = schedule(n_train, cfg)
    aug = AugmentConfig(
        enabled=cfg.augment,
        crop=cfg.crop_aug[1],
        crop_min=cfg.crop_aug[0],
        exposure=(float(cfg.exposure_aug[0]), float(cfg.exposure_aug[1])),
    )
    x_all = torch.from_numpy(np.concatenate([tr_imgs, un_imgs]) if len(un_imgs) else tr_imgs)
    y_all = torch.from_numpy(
        np.concatenate([train_set.labels, np.full(len(un_imgs), UNLABELLED, np.int64)])
    )
    sample_p = train_set.balanced_sample_weights() if cfg.balanced_sampling else None
    # log.csv's rows of epochs the checkpoint does not hold go (they are trained again)
    config = {**asdict(cfg), **info, "classes": classes}
    log_path = start_run_files(out, config, int(state["epoch"]))
    stopped = bool(cfg.patience) and state["bad_epochs"] >= cfg.patience
    if state["epoch"] >= cfg.epochs:  # (before: silence, and exit 0)
        print(f"edge-fer train: the run in {out} has done {state['epoch']} epochs, its "
              f"--epochs is {cfg.epochs}: nothing to train (--resume --epochs N with a larger "
              "N goes on)", file=sys.stderr)  # fmt: skip
    elif stopped:  # (before: each resume trained on past the early stop)
        print(f"edge-fer train: the run in {out} stopped early at epoch {state['epoch']} (no "
              f"improvement in {cfg.patience} epochs, --patience): nothing to train",
              file=sys.stderr)  # fmt: skip
    if state["epoch"] < cfg.epochs and not stopped:
        print(
            f"training {cfg.arch} ({info['params'] / 1e6:.2f}M parameters) on {len(train_set)} "
            f"faces{f' and {len(un_imgs)} unlabelled ones' if len(un_imgs) else ''}, selecting on {val_name} ({len(val_set)}): epochs {state['epoch'] + 1}-"
            f"{cfg.epochs} of {steps_per_epoch} batches",
            file=sys.stderr,
            flush=True,
        )

    while state["epoch"] < cfg.epochs and not stopped:
        epoch = state["epoch"]
        t0 = time.time()
        # dropout draws from torch's own generator: from (seed, epoch) too, not from where the
        # process left it, so that a resumed run matches an uninterrupted one
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, int(epoch)]).generate_state(1)[0]))
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        if sample_p is not None:
            rng = np.random.default_rng(cfg.seed * 100003 + epoch)
            order = torch.from_numpy(rng.choice(len(train_set), len(train_set), p=sample_p))
        else:
            order = torch.randperm(n_train, generator=gen)
        model.train()
        tot_loss, tot_ok, seen, rows = 0.0, 0, 0, 0
        # a bar on a terminal; in a log (nohup) a line at each quarter of the epoch
        bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", "batch", True)
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : batch_end(b, len(order), cfg.batch_size)]
            x = x_all[idx][:, None].float()
            y = y_all[idx]
            x = augment(x, aug, gen)
            mix = draw_mix(len(idx), size, size, cfg.mixup, cfg.cutmix, gen)
            if mix is not None:
                x = mix.images(x)
            x, y = normalise(x.to(device), spec), y.to(device)
            if mix is not None:
                mix.perm = mix.perm.to(device)
            lr = lr_at(state["step"], total, warmup, cfg.lr)

            def loss_of(logits, x=x, y=y, idx=idx, mix=mix):
                if len(un_imgs) and bool((y == UNLABELLED).any()):
                    target = online.log_probs(x) if online is not None else soft_all[idx]
                    return loss_with_unlabelled(logits, y, target.to(device), weights, cfg)
                if mix is None:
                    loss = F.cross_entropy(
                        logits, y, weight=weights, label_smoothing=cfg.label_smoothing
                    )
                else:
                    loss = mix.cross_entropy(logits, y, weights, cfg.label_smoothing)
                if online is not None:
                    target = online.log_probs(x)  # the teachers see the mixed faces too
                elif soft_all is not None:
                    target = soft_all[idx].to(device)
                    if mix is not None:
                        target = torch.log(mix.probs(target.exp()).clamp_min(1e-8))
                else:
                    return loss
                from edge_fer.train.distill import distill_loss

                kd = distill_loss(logits, target, cfg.distill_temperature)
                return (1 - cfg.distill) * loss + cfg.distill * kd

            logits, loss = train_step(model, opt, x, lr, loss_of, cfg.precision)
            state["step"] += 1
            step_loss = float(loss.detach())
            if not math.isfinite(step_loss):  # the weights are NaN from here: nothing to save
                bar.close()
                raise _diverged(epoch, cfg, f"loss {step_loss}")
            tot_loss += step_loss * len(y)
            rows += len(y)
            labelled = y != UNLABELLED  # (the training accuracy is of the labelled faces)
            tot_ok += int((logits.argmax(1) == y).sum())
            seen += int(labelled.sum())
            bar.postfix(f"loss {tot_loss / rows:.3f}, acc {tot_ok / max(seen, 1):.3f}")
            bar.update()
        bar.close()
        if cfg.precise_bn:
            precise_bn(model, tr_imgs, spec, device, cfg.precise_bn, cfg.seed)
        probs = predict(model, va_imgs, spec, device)
        if not np.isfinite(probs).all():  # the last step's update broke the weights
            raise _diverged(epoch, cfg, "the held-out predictions are NaN")
        rep = classification_report(probs, val_set.labels, classes)
        val_loss = mean_nll(probs, val_set.labels)
        row = log_row(epoch + 1, lr, tot_loss / rows, tot_ok / max(seen, 1), val_loss, rep, t0)
        append_log(log_path, row)
        state["epoch"] = epoch + 1
        improved = rep["accuracy"] > state["best_acc"]
        if improved:
            state.update(best_acc=rep["accuracy"], best_epoch=epoch + 1, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        ck_state = {
            **state,
            "config": asdict(cfg),
            "spec": spec.to_metadata(),
            **info,
            "val_split": val_name,
        }
        if improved:
            save_checkpoint(out / "best.safetensors", model, None, ck_state)
        # the last K epochs' weights; with early stopping on, any epoch may be one of the last
        # K, so each is kept until K newer ones exist (a run that stopped early averaged none)
        if cfg.average_last and (cfg.patience or epoch + 1 > cfg.epochs - cfg.average_last):
            snapshot_path(out, epoch + 1).parent.mkdir(exist_ok=True)
            save_checkpoint(snapshot_path(out, epoch + 1), model, None, ck_state)
            for old in snapshots_after(out, 0, epoch + 1 - cfg.average_last):
                old.unlink(missing_ok=True)
        save_checkpoint(last, model, opt, ck_state)
        print(
            f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {row['train_loss']:.4f}  "
            f"train acc {row['train_acc']:.4f}  {val_name} acc {rep['accuracy']:.4f}  "
            f"macro-F1 {rep['macro_f1']:.4f}  lr {lr:.4g}  {row['seconds']:.0f}s"
            + ("  *" if improved else ""),
            file=sys.stderr,
            flush=True,
        )
        if cfg.patience and state["bad_epochs"] >= cfg.patience:
            print(
                f"early stop: no {val_name} improvement for {cfg.patience} epochs", file=sys.stderr
            )
            break
    result = {
        "best_val_acc": state["best_acc"],
        "best_epoch": state["best_epoch"],
        "out": str(out),
        **info,
        **skipped,  # (with --skip-bad) as `edge-fer eval` reports them
    }
    if unl is not None:
        result["unlabelled"] = {
            "faces": len(unl),
            **({"skipped": unl.skipped} if cfg.skip_bad else {}),
        }
    # the run's snapshots of the last K epochs (of this total: --epochs may have changed)
    done = state["epoch"]  # fewer than --epochs when it stopped early
    snaps = snapshots_after(out, done - cfg.average_last, done) if cfg.average_last else []
    if snaps:
        result["averaged"] = average_checkpoints(
            snaps,
            out / "averaged.safetensors",
            data=cfg.data,
            extra_train=cfg.extra_train,  # (where this resume found it)
            faces=cfg.precise_bn or DEFAULT_FACES,
        )
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def default_threads() -> int:
    return os.cpu_count() or 1
