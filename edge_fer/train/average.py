"""Weight averaging over a run's last epochs (stochastic weight averaging, Izmailov et al. 2018).

The weights of several checkpoints of one run are averaged, and the batch norms then get
statistics measured on the run's un-augmented training faces (edge_fer.train.precise_bn): no
epoch's running statistics belong to the averaged weights. The result is scored on the run's
held-out split and saved as a checkpoint that `edge-fer export` takes. `edge-fer train
--average-last K` does this with the last K epochs; `edge-fer average` with any checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import torch

from edge_fer.errors import UserError
from edge_fer.fileio import sha256_file
from edge_fer.limits import check_threads
from edge_fer.train.precise_bn import DEFAULT_FACES

SNAPSHOTS = "snapshots"  # the run folder's per-epoch weights for --average-last


def snapshot_path(out: Path, epoch: int) -> Path:
    return Path(out) / SNAPSHOTS / f"epoch_{epoch:03d}.safetensors"


def snapshots_after(out: Path, epoch: int, last: int | None = None) -> list[Path]:
    """The run's snapshots of epochs after `epoch` (and up to `last`), in epoch order."""
    found = []
    for p in sorted((Path(out) / SNAPSHOTS).glob("epoch_*.safetensors")):
        try:
            n = int(p.stem.split("_", 1)[1])
        except ValueError:
            continue
        if n > epoch and (last is None or n <= last):
            found.append(p)
    return found


def find_recorded(recorded: str, checkpoint: Path) -> Path | None:
    """The folder or file a run recorded (`recorded`, as it was given to `edge-fer train`):
    from here, else, for a relative path, from each folder above the checkpoint (the run was
    started from one of them, e.g. the project holding runs/); None when neither has it."""
    p = Path(recorded)
    if p.exists():
        return p
    if not p.is_absolute():
        for up in Path(checkpoint).resolve().parents:
            if (up / p).exists():
                return up / p
    return None


def average_checkpoints(
    paths: list[str | Path],
    out: str | Path,
    *,
    data: str | None = None,
    extra_train: str | None = None,
    faces: int = DEFAULT_FACES,
    threads: int = 0,
    skip_bad: bool | None = None,
) -> dict:
    """Average the weights of `paths` (checkpoints of one architecture and preprocessing),
    measure batch-norm statistics on `faces` training faces of the run's data, score the
    held-out split and save to `out`. The run's dataset and extra training folder are the ones
    in the checkpoints' config (relative ones looked for from here and from the folders above
    the checkpoint, `find_recorded`), or `data` and `extra_train` instead. `skip_bad`: skip and
    count the data's unreadable images (None: as the run did). UserError naming the file or
    parameter for anything that does not fit, before anything is written."""
    from edge_fer.export.onnx import load_trained
    from edge_fer.fileio import check_collisions, check_output_file
    from edge_fer.limits import check_count, check_names
    from edge_fer.metrics import classification_report
    from edge_fer.train.checkpoint import read_state, read_weights, save_checkpoint
    from edge_fer.train.precise_bn import precise_bn
    from edge_fer.train.trainer import (
        TrainConfig,
        load_splits,
        predict,
        prepare_faces,
        skipped_of,
    )

    paths = [Path(p) for p in check_names(paths, "checkpoints")]
    check_count(faces, "faces", 2)  # (NaN failed deep in the statistics; 2.5 was taken)
    check_output_file(out, os.fspath(out), param="out")  # (before Path() drops a final /)
    out = Path(out)
    if not paths:
        raise UserError("needs at least one checkpoint", param="checkpoints")
    check_threads(threads, zero="torch's default")
    check_collisions([("--out", out)], [("a checkpoint", p) for p in paths])
    seen: dict[tuple[int, int], Path] = {}
    digests: dict[str, Path] = {}
    for p in paths:
        if not p.is_file():
            raise UserError(f"{p}: no such checkpoint file", param="checkpoints")
        st = p.stat()  # (a file named twice weighed twice in the "uniform" average)
        first_name = seen.setdefault((st.st_dev, st.st_ino), p)
        if first_name is not p:
            same = "" if str(first_name) == str(p) else f" (as {first_name})"
            raise UserError(
                f"{p} is given twice{same}: each checkpoint counts once in the average",
                param="checkpoints",
            )
        # a copy under another name weighed twice just the same
        twin = digests.setdefault(sha256_file(p), p)
        if twin is not p:
            raise UserError(
                f"{p} is byte-identical to {twin}: each checkpoint counts once in the average",
                param="checkpoints",
            )
    if threads:
        torch.set_num_threads(threads)
    model, spec, state = load_trained(paths[-1])
    first = state.get("config") or {}
    keys = ("arch", "arch_kwargs", "channels", "input_size", "clahe", "align", "align_frame")
    total: dict[str, torch.Tensor] = {}
    for p in paths:
        cfg = read_state(p).get("config") or {}
        if not cfg:
            raise UserError(f"{p}: not an edge-fer training checkpoint", param="checkpoints")
        if any(cfg.get(k) != first.get(k) for k in keys):
            raise UserError(
                f"{p}: another architecture or preprocessing than {paths[-1]}",
                param="checkpoints",
            )
        # as many classes but other ones (cat/dog with bird/fish) averaged without a word
        names = (read_state(p).get("spec") or {}).get("class_names")
        if names != (state.get("spec") or {}).get("class_names"):
            raise UserError(f"{p}: other classes ({names}) than {paths[-1]}", param="checkpoints")
        # runs of other datasets mixed without a word, and which one measured the batch norms
        # and the score depended on the order of the arguments
        if not _same_data(cfg, p, first, paths[-1]):
            raise UserError(
                f"{p}: trained on {_describe_data(cfg)}, {paths[-1]} on "
                f"{_describe_data(first)}: average checkpoints of one dataset",
                param="checkpoints",
            )
        w = read_weights(p)
        if total and (w.keys() != total.keys() or any(w[k].shape != total[k].shape for k in w)):
            # (the sum so far began with the first checkpoint: name it in full)
            raise UserError(f"{p}: weights do not fit those of {paths[0]}", param="checkpoints")
        for k, v in w.items():
            if v.is_floating_point():
                total[k] = total[k] + v.double() if k in total else v.double()
            else:
                total[k] = v
    own = model.state_dict()
    model.load_state_dict({k: total[k].div(len(paths)).to(own[k].dtype)
                           if total[k].is_floating_point() else total[k] for k in own})  # fmt: skip
    known = {k: v for k, v in first.items() if k in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig(**known)
    if extra_train is not None and not cfg.extra_train:
        raise UserError("the run was trained without extra training faces",
                        param="extra_train")  # fmt: skip
    given = {"data": data, "extra_train": extra_train}
    for what, about in (("data", "dataset"), ("extra_train", "extra training folder")):
        recorded = getattr(cfg, what)
        if given[what] is not None:
            found = Path(given[what])
            if not found.exists():
                raise UserError(f"{found}: no such file or folder", param=what)
        elif recorded:
            found = find_recorded(recorded, paths[-1])
            if found is None:
                raise UserError(
                    f"{recorded}: the run's {about} is neither here nor above "
                    f"{paths[-1].parent}; give its place",
                    param=what,
                )
        else:
            continue
        cfg = dataclasses.replace(cfg, **{what: str(found)})
    if skip_bad is not None:
        cfg = dataclasses.replace(cfg, skip_bad=bool(skip_bad))
    # (after the checks of the inputs, before any faces are read)
    if out.suffix.lower() != ".safetensors":  # before: a checkpoint named x.onnx, which eval
        # and every other reader of ONNX then refused
        raise UserError(
            f"names the averaged checkpoint: give it a .safetensors name, not {out.name} "
            "(`edge-fer export` makes its ONNX model)",
            param="out",
        )
    train_set, val_set, val_name = load_splits(cfg)
    # another run's dataset (--data): its labels index other outputs (an IndexError traceback
    # from the scoring, or a score against the wrong class names)
    if spec.classes and tuple(train_set.classes) != tuple(spec.classes):
        raise UserError(
            f"{cfg.data}: classes {', '.join(train_set.classes)}, but the checkpoints answer "
            f"{', '.join(spec.classes)}: give the run's own dataset",
            param="data",
        )
    n = precise_bn(model, prepare_faces(train_set.images, spec), spec, "cpu", faces, cfg.seed)
    model.eval()
    probs = predict(model, prepare_faces(val_set.images, spec), spec, torch.device("cpu"))
    rep = classification_report(probs, val_set.labels, val_set.classes)
    report = {
        "out": str(out),
        "checkpoints": _names(paths),
        "batch_norms_measured": n,
        "data": cfg.data,
        "val_split": val_name,
        "val_acc": round(float(rep["accuracy"]), 4),
        "val_macro_f1": round(float(rep["macro_f1"]), 4),
        **(skipped_of(train_set, val_set) if cfg.skip_bad else {}),
    }
    # the run's best epoch and its accuracy describe another checkpoint: the average has its own
    run_best = ("best_acc", "best_epoch", "bad_epochs")
    saved = {k: v for k, v in state.items() if k not in run_best}
    saved.update(averaged_from=report["checkpoints"], val_acc=report["val_acc"],
                 val_macro_f1=report["val_macro_f1"], val_split=val_name)  # fmt: skip
    # the data its batch norms and score were measured on (before: another --data's score was
    # recorded under the run's data and split, and so in its ONNX model's provenance)
    measured = {k: getattr(cfg, k) for k, v in given.items() if v is not None}
    saved["config"] = {**(state.get("config") or {}), **measured}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, model, None, saved)
    print(
        f"averaged {len(paths)} checkpoint{'s' if len(paths) != 1 else ''}: "
        f"{val_name} acc {report['val_acc']:.4f}  "
        f"macro-F1 {report['val_macro_f1']:.4f} -> {out} "
        f"(batch norms and score on {cfg.data})",
        file=sys.stderr,
    )
    return report


def _same_data(cfg: dict, checkpoint: Path, first: dict, first_checkpoint: Path) -> bool:
    """Whether two runs' configs record one dataset and extra training folder: spelled alike
    (a run's epochs, copied elsewhere: a relative path found from each copy's folder would
    differ), or found to be one folder (`data` in one run, `../data` in another)."""
    for key in ("data", "extra_train"):
        a, b = cfg.get(key), first.get(key)
        if a == b:
            continue
        if not (a and b):
            return False
        fa, fb = find_recorded(a, checkpoint), find_recorded(b, first_checkpoint)
        if fa is None or fb is None or os.path.realpath(fa) != os.path.realpath(fb):
            return False
    return True


def _describe_data(cfg: dict) -> str:
    extra = cfg.get("extra_train")
    return f"{cfg.get('data')}" + (f" with extra {extra}" if extra else "")


def _names(paths: list[Path]) -> list[str]:
    """How the report and the averaged checkpoint name their sources: file names when they
    share a folder (a run's epochs), else portable paths (two runs' averaged.safetensors were
    the same name twice)."""
    from edge_fer.fileio import portable_path

    if len({p.resolve().parent for p in paths}) <= 1:
        return [p.name for p in paths]
    names = [portable_path(p) for p in paths]
    # outside the working folder portable_path keeps the name alone: then as many trailing
    # folders as tell them apart, never the whole local path (the same file twice stays twice)
    full = [p.resolve().parts for p in paths]
    for k in range(2, max(len(f) for f in full)):
        if len(set(names)) == len(names):
            break
        names = ["/".join(f[-min(k, len(f) - 1) :]) for f in full]
    return names
