"""Loading the model to compress, writing checkpoints, ONNX metadata and reports atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import edge_fer.compress.arch  # noqa: F401  (registers "pruned" for load_trained)
from edge_fer import fileio
from edge_fer.errors import UserError
from edge_fer.preprocess import PreprocessSpec
from edge_fer.tta import TTA_MODES


@dataclass
class SourceModel:
    """The model a compression run starts from."""

    model: object  # torch.nn.Module in eval mode
    spec: PreprocessSpec
    state: dict  # checkpoint-style state: config (arch, arch_kwargs, ...), params, macs, ...
    path: Path
    kind: str  # "onnx" or "checkpoint"
    tta: str = "none"  # the ONNX file's test-time augmentation ("flip" for the bundled model)
    bn_folded: bool = False  # rebuilt from ONNX: identity batch norms to keep frozen
    meta: dict = field(default_factory=dict)  # ONNX metadata_props (ONNX inputs)
    eval_tta: str = "none"  # the TTA `edge-fer eval` applies by default (edge_fer.tta_default)

    @property
    def arch(self) -> str:
        return str((self.state.get("config") or {}).get("arch", "?"))

    @property
    def arch_kwargs(self) -> dict:
        return dict((self.state.get("config") or {}).get("arch_kwargs") or {})


def is_safetensors(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 27


def _is_onnx(path: Path) -> bool:
    """Named .onnx, or an ONNX graph under another name: anything else given as a model is
    taken for a checkpoint (junk.safetensors: "not an edge-fer checkpoint", not "not ONNX")."""
    if path.suffix.lower() == ".onnx":
        return True
    import onnx

    try:
        return len(onnx.load(str(path), load_external_data=False).graph.node) > 0
    except Exception:  # noqa: BLE001 - any parse failure: not ONNX
        return False


def load_source(path: str | os.PathLike | None) -> SourceModel:
    """An edge-fer training checkpoint (.safetensors) or FP32 edge-fer ONNX (default: the
    bundled model) -> SourceModel. Bad files raise UserError naming the file."""
    from edge_fer.classify import default_model_path

    p = Path(path) if path is not None else default_model_path()
    try:
        return _load_source(p)
    except UserError as exc:
        if str(p) in exc.message:
            raise
        # a message from deeper down ("model has no edge_fer preprocessing metadata")
        raise UserError(f"{p}: {exc.message}", param=exc.param) from None


def _load_source(p: Path) -> SourceModel:
    if not p.exists():
        raise UserError(f"{p}: no such model file")
    if p.is_dir():
        raise UserError(f"{p}: is a folder, not a model file")
    if p.stat().st_size == 0:
        raise UserError(f"{p}: empty file, not a model")
    if is_safetensors(p) or not _is_onnx(p):
        from edge_fer.export.onnx import load_trained
        from edge_fer.train.checkpoint import read_state

        if read_state(p).get("quantization"):  # "not an edge-fer checkpoint" for junk
            raise UserError(
                f"{p}: is a quantization-aware (QAT) checkpoint; start from the FP32 model"
            )
        model, spec, state = load_trained(p)
        return SourceModel(
            model, spec, state, p, "checkpoint", "none", bool(state.get("bn_folded"))
        )
    from edge_fer.export.onnx_import import checkpoint_from_onnx, torch_model_from_onnx

    model, spec, meta = torch_model_from_onnx(p)
    eval_tta = meta.get("edge_fer.tta_default", "none") or "none"
    if eval_tta not in TTA_MODES:  # said here, not as the export's `eval_tta` after the pruning
        raise UserError(
            f"model metadata edge_fer.tta_default is {eval_tta!r}, not one of "
            f"{', '.join(TTA_MODES)}"
        )
    # the checkpoint-style state (config, provenance) exactly as checkpoint_from_onnx builds it
    with tempfile.TemporaryDirectory(prefix="edge-fer-src-") as tmp:
        from edge_fer.train.checkpoint import read_state

        state = read_state(checkpoint_from_onnx(p, Path(tmp) / "src.safetensors"))
    return SourceModel(
        model,
        spec,
        state,
        p,
        "onnx",
        meta.get("edge_fer.tta", "none") or "none",
        True,
        meta,
        eval_tta,
    )


# what `edge-fer prune` and `edge-fer qat` write into --out (report.* from compress.report)
OUT_FILES = {
    "prune": ("pruned.onnx", "pruned.safetensors", "source_fp32.onnx", "report.md", "report.json"),
    "qat": (
        "qat.onnx",
        "ptq.onnx",
        "qat.safetensors",
        "source_fp32.onnx",
        "report.md",
        "report.json",
    ),
}


# what an earlier run of the other command, or a calibration (`edge-fer calibrate`, `export
# --int8`), leaves in a folder: a run publishing there removes them (a qat report beside
# pruned.onnx, or a calibration cache of the replaced model, described files it never made)
EARLIER_FILES = tuple(dict.fromkeys(n for names in OUT_FILES.values() for n in names))


def _same_file(a: Path, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def earlier_outputs(out: str | os.PathLike, inputs=()) -> list[str]:
    """The names of EARLIER_FILES and of a calibration's outputs in `out` (files or links),
    those that are one of `inputs` ((name, path) pairs: the model) left out."""
    from edge_fer.quantize.pipeline import OUT_NAMES

    found = []
    for name in (*EARLIER_FILES, *OUT_NAMES):
        p = Path(out) / name
        if (p.exists() or p.is_symlink()) and not any(_same_file(p, q) for _, q in inputs if q):
            found.append(name)
    return found


def check_out_dir(
    out: str | os.PathLike, force: bool, command: str | None = None, inputs=()
) -> None:
    """--out can be made a folder, holds no finished run (unless `force`) and, for `command`
    (prune or qat), none of the files it will write there is one of `inputs` ((name, path)
    pairs: the model, the data): never an output over an input, --force or not."""
    from edge_fer.fileio import check_collisions
    from edge_fer.train.trainer import check_folder

    check_folder(out, "out")  # (as given: an empty name is refused, Path("") is ".")
    out = Path(out)
    if command is not None:
        check_collisions([("--out", out / name) for name in OUT_FILES[command]], inputs)
        # (before: the run's work was done, then the write into the folder failed)
        folders = [n for n in OUT_FILES[command] if (out / n).is_dir()]
        if folders:
            raise UserError(f"{out}: {', '.join(folders)} is a folder; cannot write the output "
                            "there", param="out")  # fmt: skip
    if force:
        return
    if (out / "report.json").exists():
        raise UserError(
            f"{out}: already holds a finished run (report.json); "
            "pick another folder or pass --force",
            param="out",
        )
    # any file the command writes or removes (earlier_outputs), not only a finished run's
    # report: a model or notes of the user's under one of those names were replaced silently
    taken = earlier_outputs(out, inputs) if command is not None else []
    if taken:
        raise UserError(
            f"{out}: already holds {', '.join(taken)}, which this run would replace or remove; "
            "pick another folder or pass --force",
            param="out",
        )


# the lock's name for the holder in the refusal: the flock on a folder is the same one that
# `train` and `calibrate` take, so the other process need not be a prune or qat
LOCK_WHAT = "edge-fer command"


@contextlib.contextmanager
def out_lock(out: str | os.PathLike):
    """Hold the exclusive lock on the output folder `out` (`fileio.FolderLock`, as `edge-fer
    train` locks its --out) while the block runs: two runs into one folder both found it free
    of earlier outputs, then published over each other (a report of one run beside the models
    of the other). The second is refused at once (UserError). The folder and the missing ones
    above it are made for the lock and removed again when still empty at the end (a refused,
    failed or interrupted first run leaves no new folder)."""
    from edge_fer.quantize.pipeline import _make_folders, _remove_empty

    folder = Path(out)
    made = _make_folders(folder)
    try:
        lock = fileio.FolderLock(folder, LOCK_WHAT)
    except BaseException:
        _remove_empty(made)
        raise
    try:
        yield
    finally:
        _remove_empty(made)  # before the lock goes: no other process is in it yet
        lock.release()


@contextlib.contextmanager
def staging(command: str):
    """A private folder where a run makes all its outputs (removed on every exit path); they are
    then published together (`publish`). Before: the models went into --out as they were made,
    so a run interrupted or failing while it measured them left new models beside the earlier
    run's report."""
    # the name is decided before the folder is made, so an interrupt (SIGTERM, Ctrl-C) that
    # lands just after mkdir still finds it in `finally` (as `edge-fer calibrate` does)
    work = Path(tempfile.gettempdir()) / f"edge-fer-{command}-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        try:
            work.mkdir(mode=0o700)
        except OSError as exc:
            raise UserError(
                f"cannot make a temporary folder in {work.parent} ({fileio.os_error_reason(exc)})"
            ) from None
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def publish(out: Path, files: dict[str, bytes], inputs=()) -> None:
    """Write a run's outputs (name -> content) into `out` together, as `edge-fer calibrate`
    publishes its set (edge_fer.quantize.pipeline._publish: each file atomically, and when one
    fails or an interrupt arrives, what was there before is put back; it also removes an
    earlier calibration's outputs); then remove the earlier outputs this run did not write
    (`earlier_outputs`: source_fp32.onnx of an earlier run from a checkpoint, the other
    command's models), `inputs` ((name, path) pairs: the model) left alone."""
    from edge_fer.quantize.pipeline import _publish

    stale = [n for n in earlier_outputs(out, inputs) if n in EARLIER_FILES and n not in files]
    try:
        _publish(out, files)
    except OSError as exc:
        raise UserError(f"{out}: cannot write ({fileio.os_error_reason(exc)})") from None
    for name in stale:
        p = out / name
        if p.is_symlink() or p.is_file():
            try:
                p.unlink()
            except OSError:
                pass


def write_text_atomic(path: Path, text: str) -> None:
    """edge_fer.fileio.write_text, creating the folder first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_text(path, text)


def write_json_atomic(path: Path, obj) -> None:
    """Strict JSON (no NaN/Infinity: a ValueError naming where) through edge_fer.fileio."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_json(path, obj)


def add_onnx_metadata(path: Path, entries: dict[str, str]) -> None:
    """Add (or replace) metadata_props of an ONNX file, writing through a temporary file."""
    import onnx

    proto = onnx.load(str(path))
    keep = [(m.key, m.value) for m in proto.metadata_props if m.key not in entries]
    del proto.metadata_props[:]
    for k, v in keep + list(entries.items()):
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    fileio.write_bytes(path, proto.SerializeToString())


def parity_faces_for(data: str, spec: PreprocessSpec, n: int = 64):
    """Real faces for parity checks: an even sample of the validation split of `data`."""
    from edge_fer.export.onnx import parity_faces

    return parity_faces({}, spec, n=n, data=data)[0]
