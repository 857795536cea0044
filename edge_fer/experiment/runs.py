"""One variant of a study = one run folder, trained by `edge_fer.train.trainer.train`.

The run folder is resumable: a study that is interrupted and started again continues every
unfinished run where its last checkpoint left it, and skips the finished ones. A `study.json`
beside the checkpoints records what the run was made from; a run folder made with other
settings (data, budget, variant) is refused rather than silently mixed.

`Budget` and `Options` (what a study is asked to run) live here, in a module light enough for
the command line to read their defaults.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edge_fer.errors import UserError

STUDY_FILE = "study.json"


@dataclass
class Budget:
    epochs: int = 3
    max_train_faces: int = 3000
    max_test_faces: int = 1000
    batch_size: int = 64
    lr: float = 0.05  # the trainer's peak learning rate
    threads: int = 0
    # the trainer's --precision: fp32, or bf16 (bfloat16 autocast steps, on CPUs with AMX)
    precision: str = "fp32"
    seed: int = 0
    max_batches: int = 0  # tests: stop each epoch after this many batches

    def validate(self) -> None:
        from edge_fer.limits import (  # the trainer's
            check_count,
            check_number,
            check_threads,
            check_train_precision,
        )

        # integers: NaN faces made a study of "at most nan training faces" without a word
        check_count(self.epochs, "epochs")
        for name in ("max_train_faces", "max_test_faces", "max_batches"):
            check_count(getattr(self, name), name, 0)  # 0: no limit

        # here, not in the trainer: that is after the first variant's run folder is claimed
        check_threads(self.threads, "threads", zero="torch's default")
        check_train_precision(self.precision)
        check_count(self.batch_size, "batch_size")
        check_number(self.lr, "lr", lo_open=True)
        check_count(self.seed, "seed", 0)

    def text(self) -> str:
        lim = self.max_train_faces or "all"
        test = self.max_test_faces or "all"
        extra = f", at most {self.max_batches} batches per epoch" if self.max_batches else ""
        return (
            f"{self.epochs} epoch(s), at most {lim} training faces, at most {test} test faces, "
            f"batch {self.batch_size}, peak learning rate {self.lr:g}, seed {self.seed}{extra}"
        )


ZOO = ("cnn4", "cnn8_tanh", "resnet", "mobilenet", "mini_xception", "vgg")


@dataclass
class Options:
    study: str
    data: str
    out: Path
    work: Path | None = None
    budget: Budget = field(default_factory=Budget)
    arch: str = "cnn4"
    archs: tuple[str, ...] = ZOO
    runs: Path | None = None
    vgg_onnx: str | None = "bundled"  # architectures: the bundled vgg; None: leave it out
    test_fraction: float = 0.2
    variants: tuple[str, ...] = ()  # a subset of the study's variants (default: all)
    calib_faces: int = 256
    latency_threads: int = 1
    command: str = ""

    def __post_init__(self) -> None:
        # an empty name is no folder: Path("") is "." (the report went into the current
        # folder, the current folder was read as the dataset)
        for name in ("data", "out", "work", "runs"):
            v = getattr(self, name)
            if v is not None and not os.fspath(v).strip():
                raise UserError("is empty: give a folder name", param=name)
        # a script's str paths and a single name where names go ("cnn4" was read letter by
        # letter: "arch is 'c'")
        self.out = Path(self.out)
        self.work = Path(self.work) if self.work is not None else None
        self.runs = Path(self.runs) if self.runs is not None else None
        for name in ("archs", "variants"):
            v = getattr(self, name)
            if isinstance(v, (str, bytes)):
                raise UserError(f"must be a sequence of names, not the string {v!r}", param=name)
            setattr(self, name, tuple(v))
        if not isinstance(self.budget, Budget):
            raise UserError(
                f"must be an edge_fer.experiment.runs.Budget, not {type(self.budget).__name__}",
                param="budget",
            )

    @property
    def workdir(self) -> Path:
        return self.work or (self.out / "work")


# the machine's settings, as the trainer's resume takes them (edge_fer.train.trainer.MACHINE):
# not part of what a run is made from, so a study resumed with other ones reuses its runs
MACHINE_FIELDS = ("threads", "precision")


def _budget_key(budget: dict) -> dict:
    return {k: v for k, v in budget.items() if k not in MACHINE_FIELDS}


def run_key(arch: str, key: dict, budget: Budget, **extra) -> dict:
    """What a run folder records in `study.json` (and must match to be reused)."""
    return {"arch": arch, **key, **extra, "budget": _budget_key(budget.__dict__)}


def check_claim(run: Path, key: dict) -> None:
    """UserError when `run` already holds a run made from something else than `key`; a study
    checks every variant's folder this way before it trains the first one (before, a conflict
    in the last variant was found after the others had trained, hours at a real budget)."""
    f = run / STUDY_FILE
    if not f.is_file():
        return
    try:
        old = json.loads(f.read_text())
    except ValueError:
        old = None
    if isinstance(old, dict) and isinstance(old.get("budget"), dict):
        # budget fields added since the run was made hold their defaults
        # and the machine's settings, which older files recorded, do not count
        old["budget"] = _budget_key({**Budget().__dict__, **old["budget"]})
    from edge_fer import fileio

    if old != json.loads(fileio.dumps(key)):  # as the file holds it (numpy numbers, paths)
        raise UserError(
            f"{run} holds a run made with other settings ({STUDY_FILE} differs); "
            "pick another --work folder or delete that run"
        )


def claim(run: Path, key: dict) -> None:
    """Record what `run` is made from; UserError when it already holds another variant."""
    check_claim(run, key)
    f = run / STUDY_FILE
    if f.is_file():
        return
    run.mkdir(parents=True, exist_ok=True)
    from edge_fer import fileio

    f.write_text(fileio.dumps(key, indent=2))  # numpy numbers and paths as JSON ones


def epochs_done(run: Path) -> int:
    """Epochs a run folder's log.csv holds (0 when none)."""
    log = run / "log.csv"
    if not log.is_file():
        return 0
    with open(log, newline="") as fh:
        return sum(1 for r in csv.DictReader(fh) if r.get("epoch"))


def read_log(run: Path) -> list[dict]:
    log = run / "log.csv"
    if not log.is_file():
        return []
    rows = []
    with open(log, newline="") as fh:
        for r in csv.DictReader(fh):
            try:
                rows.append({k: float(v) for k, v in r.items() if v not in (None, "")})
            except ValueError:
                continue
    return rows


def warmup_for(epochs: int) -> float:
    """The trainer's 2 warm-up epochs, shortened to a fifth of a short budget (2 warm-up
    epochs of a 1-epoch run would never reach the peak learning rate)."""
    return min(2.0, 0.2 * epochs)


def train_variant(run: Path, tree: Path, arch: str, budget: Budget, key: dict, **options) -> Path:
    """Train (or continue, or skip when finished) the variant in `run` on the folders of
    links `tree`; `options` are further TrainConfig fields (clahe, align, channels, ...)."""
    from edge_fer.train.trainer import train

    claim(run, run_key(arch, key, budget, **options))
    if epochs_done(run) >= budget.epochs and (run / "best.safetensors").is_file():
        print(f"experiment: {run.name}: finished earlier, reusing it", file=sys.stderr)
        return run
    cfg = study_config(arch, tree, run, budget, **options)
    print(f"experiment: training {run.name} ({arch}, {budget.text()})", file=sys.stderr)
    train(cfg, resume=True, epochs_override=budget.epochs)
    return run


def study_config(arch: str, tree, run: Path, budget: Budget, **options):
    """The trainer settings of one study run: the budget's, no early stopping, plus `options`."""
    from edge_fer.train.trainer import TrainConfig

    return TrainConfig(
        arch=arch,
        data=str(tree),
        out=str(run),
        epochs=budget.epochs,
        batch_size=budget.batch_size,
        lr=budget.lr,
        patience=0,
        seed=budget.seed,
        threads=budget.threads,
        precision=budget.precision,
        max_batches=budget.max_batches,
        **{"warmup_epochs": warmup_for(budget.epochs), **options},
    )
