"""Export a training checkpoint to ONNX for the runtime (needs the `train` extra: torch, onnx).

The exported graph takes the prepared float32 NCHW batch ("input", any batch size) and returns
softmax probabilities ("probs", N x C). With `tta="flip"` the graph also runs the horizontally
flipped faces and averages the two softmax outputs. The model's `PreprocessSpec` and its
provenance travel in the ONNX `metadata_props`, so `edge_fer.classify.Classifier` needs nothing
but the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_fer import __version__
from edge_fer.errors import UserError
from edge_fer.fileio import (
    check_collisions,
    os_error_reason,
    read_head,
    save_bytes,
    sha256_file,
)
from edge_fer.preprocess import PreprocessSpec

PARITY_TOL = 1e-4
TTA_MODES = (None, "none", "flip")


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise UserError(
            f"export needs the train extra: python3 -m pip install '.[train]' in the edge-fer checkout ({exc})"
        ) from None
    return torch


def probs_module(model, tta: str | None = None):
    """Wrap a logits model into one that outputs softmax probabilities (optionally flip-TTA)."""
    torch = _torch()

    class Probs(torch.nn.Module):
        def __init__(self, net, flip: bool):
            super().__init__()
            self.net = net
            self.flip = flip

        def forward(self, x):
            if not self.flip:
                return torch.softmax(self.net(x), dim=1)
            n = x.shape[0]
            # one pass over [x; flip(x)] is cheaper than two calls on every engine
            p = torch.softmax(self.net(torch.cat([x, torch.flip(x, dims=[3])], 0)), dim=1)
            return 0.5 * (p[:n] + p[n:])

    return Probs(model, tta == "flip").eval()


def portable_config(state: dict) -> dict:
    """A checkpoint's training config with its paths cut to file or folder names: metadata
    never records this machine's absolute paths."""
    cfg = dict(state.get("config") or {})
    for key in ("data", "out", "init", "extra_train"):
        if isinstance(cfg.get(key), str):
            cfg[key] = Path(cfg[key]).name or cfg[key]
    if isinstance(cfg.get("teacher"), list):
        cfg["teacher"] = [Path(str(t)).name for t in cfg["teacher"]]
    return cfg


def model_from_state(state: dict, where: str | os.PathLike):
    """The untrained model a checkpoint's state describes: (model, spec). `where` names the
    checkpoint in errors."""
    from edge_fer.models import create_model
    from edge_fer.train.trainer import TrainConfig, arch_kwargs_for

    cfg = portable_config(state)
    if "arch" not in cfg or "spec" not in state:
        raise UserError(f"{where}: not an edge-fer training checkpoint (no config/spec metadata)")
    spec = PreprocessSpec.from_metadata(state["spec"])
    if not spec.classes:
        raise UserError(f"{where}: checkpoint metadata names no classes")
    known = {"data": "", **{k: v for k, v in cfg.items() if k in TrainConfig.__dataclass_fields__}}
    model = create_model(
        cfg["arch"],
        num_classes=len(spec.classes),
        in_channels=spec.channels,
        **arch_kwargs_for(TrainConfig(**known)),
    )
    return model, spec


def _is_onnx_model(p: Path) -> bool:
    """Whether file `p` parses as an ONNX model with a graph (external data not read)."""
    import onnx

    try:
        m = onnx.load(os.fspath(p), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and the like: not a model
        return False
    return len(m.graph.node) > 0


def load_trained(ckpt_path: str | os.PathLike):
    """Rebuild the zoo model of a checkpoint: (model in eval mode, spec, state)."""
    from edge_fer.train.checkpoint import load_checkpoint, read_state

    p = Path(ckpt_path)
    if p.is_dir():
        found = sorted(f.name for f in p.glob("*.safetensors"))
        hint = f", e.g. {p / found[0]}" if found else " (it holds none)"
        raise UserError(f"{p}: is a folder; give one of its .safetensors checkpoints{hint}")
    if not p.is_file():
        raise UserError(f"{p}: no such checkpoint file")
    read_head(p, 1, "training checkpoint")  # (an empty .onnx was said to be an ONNX model)
    try:
        state = read_state(p)
    except UserError:
        if p.suffix.lower() != ".onnx":
            raise
        if not _is_onnx_model(p):  # (was called "an ONNX model" by its name alone)
            raise UserError(
                f"{p}: is neither a training checkpoint (.safetensors) nor a readable ONNX "
                "model (damaged or not a model)"
            ) from None
        # (was "not an edge-fer checkpoint (... header too large)": safetensors' words)
        raise UserError(
            f"{p}: is an ONNX model, not a training checkpoint (.safetensors); "
            "`edge-fer export --int8` takes it as --model, and "
            "edge_fer.export.onnx_import.checkpoint_from_onnx rebuilds a checkpoint from it"
        ) from None
    if state.get("quantization"):  # fake-quant layers: not the zoo model its config names
        raise UserError(
            f"{p}: is a quantization-aware (QAT) checkpoint; its INT8 model is the qat.onnx "
            "`edge-fer qat` wrote beside it; give the FP32 checkpoint it started from"
        )
    model, spec = model_from_state(state, p)
    load_checkpoint(p, model)
    model.eval()
    import torch

    bad = [
        n
        for n, t in model.state_dict().items()
        if t.is_floating_point() and not torch.isfinite(t).all()
    ]
    if bad:  # a diverged run: say so, rather than fail a parity check "by nan" later
        raise UserError(
            f"{p}: holds non-finite weights (NaN or inf) in {len(bad)} tensor"
            f"{'s' if len(bad) != 1 else ''} ({bad[0]}...); the run that wrote it diverged"
        )
    return model, spec, state


def build_metadata(
    state: dict, spec: PreprocessSpec, ckpt_path: Path, tta: str | None, eval_tta: str = "none"
) -> dict:
    cfg = portable_config(state)
    averaged = state.get("averaged_from")
    provenance = {
        "checkpoint": ckpt_path.name,
        "checkpoint_sha256": sha256_file(ckpt_path),
        "config": cfg,
        "seed": cfg.get("seed"),
        # an average of epochs (edge_fer.train.average) is no epoch of the run: it names its
        # snapshots and its own held-out accuracy (averages saved before 2026-12-04 still carry
        # the run's best epoch and accuracy, which describe another checkpoint)
        "best_epoch": None if averaged else state.get("best_epoch"),
        "val_acc": state.get("val_acc") if averaged else state.get("best_acc"),
        "val_split": state.get("val_split"),
        "epochs_run": state.get("epoch"),
        "rebuilt_from_onnx": state.get("rebuilt_from_onnx"),
        **({"averaged_from": list(averaged)} if averaged else {}),
        "exported_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    try:
        import torch

        provenance["torch"] = torch.__version__
    except ImportError:
        pass
    meta = dict(spec.to_metadata())
    meta.update(
        {
            "edge_fer.arch": str(cfg.get("arch", "?")),
            "edge_fer.arch_kwargs": json.dumps(cfg.get("arch_kwargs") or {}),
            "edge_fer.params": str(int(state.get("params", 0))),
            "edge_fer.macs": str(int(state.get("macs", 0))),
            "edge_fer.tta": tta or "none",
            "edge_fer.output": "probs",
            "edge_fer.provenance": json.dumps(provenance),
            "edge_fer.version": __version__,
        }
    )
    if eval_tta != "none":
        meta["edge_fer.tta_default"] = eval_tta
    return meta


def stamp(proto, meta: dict[str, str], doc: str) -> None:
    """Give an exported ONNX model edge-fer's metadata (replacing what it had), producer and
    doc string."""
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name, proto.producer_version = "edge-fer", __version__
    proto.doc_string = doc


def model_doc(meta: dict[str, str], spec: PreprocessSpec, kind: str = "", note: str = "") -> str:
    """The doc string of an exported classifier: "edge-fer ARCH FER classifier{kind}: input
    float32 (N,C,S,S){note}; output softmax probs over CLASSES"."""
    c, s = spec.channels, spec.input_size
    return (
        f"edge-fer {meta['edge_fer.arch']} FER classifier{kind}: input float32 (N,{c},{s},{s})"
        f"{note}; output softmax probs over {','.join(spec.classes)}"
    )


def sample_faces(
    data: str | os.PathLike, size: int, n: int = 64, skip_bad: bool = False
) -> tuple[np.ndarray, str]:
    """An even sample of n faces of `data` (its PublicTest split for FER2013, else all of it),
    with a description: the real faces of a parity check. `skip_bad`: bad entries are skipped
    instead of stopping."""
    faces, source, _ = _sample(data, size, n, skip_bad)
    return faces, source


def _sample(data, size: int, n: int, skip_bad: bool):
    """`sample_faces` plus the FaceSet it sampled (its skipped entries)."""
    from edge_fer.data import load_dataset
    from edge_fer.data.loaders import detect_layout

    layout = detect_layout(Path(data))
    split = "public-test" if layout.startswith("fer2013") else "all"
    fs = load_dataset(data, split, size=size, skip_bad=skip_bad)
    idx = np.linspace(0, len(fs) - 1, min(n, len(fs))).round().astype(int)
    return fs.images[idx], f"{data} ({split}, {len(idx)} faces)", fs


def random_faces(size: int, n: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8)


def parity_faces(
    state: dict, spec: PreprocessSpec, n: int = 64, data: str | None = None, skip_bad: bool = False
) -> tuple[np.ndarray, str]:
    """Real faces for the parity check: an even sample of `data` or else of the checkpoint's
    validation data. Falls back to random images (said so in the source string) when the
    checkpoint's data is gone; a given `data` that cannot be loaded is an error. `skip_bad`
    skips bad entries of `data` (the checkpoint's data: also when its run was trained so)."""
    faces, source, _ = _parity_sample(state, spec, n, data, skip_bad)
    return faces, source


def _parity_sample(state: dict, spec: PreprocessSpec, n: int, data, skip_bad: bool):
    """`parity_faces` plus the FaceSet sampled (None for random images)."""
    if data is not None:
        return _sample(data, spec.input_size, n, skip_bad)
    cfg = state.get("config") or {}
    data = cfg.get("data")
    why = "the training data was not found"
    if data and Path(data).exists():
        try:  # a run trained with --skip-bad has bad entries its own data may still hold
            return _sample(data, spec.input_size, n, skip_bad or bool(cfg.get("skip_bad")))
        except UserError as exc:  # (was said "not found" too: a data set without PublicTest)
            why = f"the training data could not be used: {exc}"
    faces = random_faces(spec.input_size, n)
    return faces, f"random images ({why})", None


def export_checkpoint(
    ckpt_path: str | os.PathLike,
    out_path: str | os.PathLike,
    opset: int = 17,
    tta: str | None = None,
    check: bool = True,
    check_faces: np.ndarray | None = None,
    exporter: str = "auto",
    check_data: str | None = None,
    eval_tta: str = "none",
    crop_margin: float | None = None,
    force: bool = False,
    skip_bad: bool = False,
) -> dict:
    """Export `ckpt_path` (a best.safetensors) to `out_path` (.onnx); returns a report dict.
    An existing `out_path` is replaced only with `force` (as `edge-fer export --force`), and
    written as `edge_fer.fileio.write_bytes` writes: atomically, a symlink's target replaced
    (the link stays), a device or pipe written through.

    check: verify with onnx.checker and compare ONNX Runtime with torch on real faces
    (max abs probability difference <= 1e-4, else UserError and nothing is written).
    check_faces: uint8 faces (N, H, W) for that comparison; check_data: a dataset to sample
    them from; default: the training data named in the checkpoint.
    exporter: "classic" (TorchScript-based), "dynamo" (torch.export-based) or "auto" (classic
    when this torch still has it).
    eval_tta: the test-time augmentation `eval`/`classify` apply by default (edge_fer.tta),
    stored as metadata `edge_fer.tta_default`; the graph itself stays single-view.
    crop_margin: the border the runtime adds around a detector box for this model (a fraction
    of the box side per side, 0..1; default: the checkpoint's), stored in the preprocessing
    metadata (docs/runtime.md, "Crop margin").
    skip_bad: skip the bad entries (unreadable images, ...) of the parity check's dataset
    instead of stopping; the report then counts and names them (`parity_skipped`,
    `parity_skipped_entries`).
    """
    with staged_export(
        ckpt_path, out_path, opset=opset, tta=tta, check=check, check_faces=check_faces,
        exporter=exporter, check_data=check_data, eval_tta=eval_tta, crop_margin=crop_margin,
        force=force, skip_bad=skip_bad,
    ) as (report, model):  # fmt: skip
        report["bytes"] = write_model(model, out_path)
    return report


@contextlib.contextmanager
def staged_export(ckpt_path, out_path, **kw) -> Iterator[tuple[dict, Path]]:
    """`export_checkpoint` (the same arguments, every check included) short of writing
    `out_path`: yields (its report, the checked model in a private temporary file, removed when
    the block ends), for a caller that writes it together with other outputs, all or none
    (`export --checkpoint --int8`; `write_model`)."""
    # named before it is made: an interrupt just after the mkdir still finds it (as calibrate's)
    work = Path(tempfile.gettempdir()) / f"edge-fer-export-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        try:
            work.mkdir(mode=0o700)
        except OSError as exc:
            reason = os_error_reason(exc)
            raise UserError(f"cannot make a temporary folder for the model ({reason})") from None
        model = work / (Path(out_path).name or "model.onnx")  # (errors name the model so)
        yield _stage(ckpt_path, out_path, model, **kw), model
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_model(model: Path, out_path: str | os.PathLike) -> int:
    """Write the staged `model` to `out_path` (its missing folders made) with
    `edge_fer.fileio.write_bytes`; the bytes written. (Before: a temporary file beside
    `out_path` was renamed over it, which replaced a device, a pipe or a symlink itself.)"""
    data = model.read_bytes()
    save_bytes(out_path, data)
    return len(data)


def _stage(
    ckpt_path, out_path, path: Path, opset: int = 17, tta: str | None = None, check: bool = True,
    check_faces: np.ndarray | None = None, exporter: str = "auto", check_data: str | None = None,
    eval_tta: str = "none", crop_margin: float | None = None, force: bool = False,
    skip_bad: bool = False,
) -> dict:  # fmt: skip
    """`export_checkpoint`'s checks and work, the model written to `path`."""
    from edge_fer.tta import check_mode

    check_mode(eval_tta, "eval_tta")
    torch = _torch()
    import onnx

    if tta not in TTA_MODES:
        raise UserError(f"{tta!r} is unknown; choose flip or none", param="tta")
    tta = None if tta in (None, "none") else tta
    from edge_fer.limits import check_count

    if not 7 <= check_count(opset, "opset") <= 23:
        raise UserError(f"{opset} is outside the supported 7..23", param="opset")
    if check_faces is not None and (
        not isinstance(check_faces, np.ndarray)
        or check_faces.ndim not in (3, 4)
        or not len(check_faces)
    ):  # an empty array failed deep in numpy ("zero-size array to reduction")
        shape = getattr(check_faces, "shape", type(check_faces).__name__)
        raise UserError(f"must be a non-empty (N, H, W) array of faces, got {shape}",
                        param="check_faces")  # fmt: skip
    ckpt = Path(ckpt_path)
    out = Path(out_path)
    if out.is_dir():
        raise UserError(f"{out}: is a folder; give the model's file name (MODEL.onnx)", param="out")
    check_collisions([("the output", out)], [("the checkpoint", ckpt)])
    if (out.exists() or out.is_symlink()) and not force:  # (a script's model was replaced)
        raise UserError(f"{out} already exists; pass force=True to replace it", param="out")
    from edge_fer.fileio import check_file_can_be_made

    check_file_can_be_made(out, "out")  # before the export (after it: a traceback)
    model, spec, state = load_trained(ckpt)
    if crop_margin is not None:
        if not 0.0 <= float(crop_margin) <= 1.0:
            raise UserError(f"{crop_margin} is outside 0..1", param="crop_margin")
        spec = dataclasses.replace(spec, crop_margin=float(crop_margin))
    net = probs_module(model, tta)
    c, s = spec.channels, spec.input_size
    dummy = torch.zeros(2, c, s, s)

    used = _export(torch, net, dummy, path, int(opset), exporter)
    proto = onnx.load(str(path))
    meta = build_metadata(state, spec, ckpt, tta, eval_tta)
    stamp(proto, meta, model_doc(meta, spec, note=" prepared by edge_fer.preprocess"))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    report = {
        "out": str(out),
        "checkpoint": str(ckpt),
        "arch": meta["edge_fer.arch"],
        "classes": list(spec.classes),
        "input": [c, s, s],
        "tta": tta or "none",
        "eval_tta": eval_tta,
        "opset": _opset_of(proto),
        "exporter": used,
        "params": int(meta["edge_fer.params"]),
        "macs": int(meta["edge_fer.macs"]),
    }
    if check:
        report.update(
            _parity(torch, net, path, spec, state, check_faces, check_data, bool(skip_bad))
        )
    return report


def _export(torch, net, dummy, path: Path, opset: int, exporter: str) -> str:
    names = {"input_names": ["input"], "output_names": ["probs"]}
    if exporter in ("auto", "classic"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    net,
                    (dummy,),
                    str(path),
                    dynamo=False,
                    opset_version=opset,
                    dynamic_axes={"input": {0: "N"}, "probs": {0: "N"}},
                    do_constant_folding=True,
                    **names,
                )
            return "classic"
        except TypeError:  # a torch without the TorchScript exporter
            if exporter == "classic":
                raise UserError(
                    "this torch has no classic ONNX exporter; use exporter='dynamo'"
                ) from None
    if exporter not in ("auto", "dynamo"):
        raise UserError(
            f"{exporter!r} is unknown; choose auto, classic or dynamo", param="exporter"
        )
    import contextlib
    import io

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(
            net,
            (dummy,),
            dynamo=True,
            opset_version=opset,
            dynamic_shapes={"x": {0: torch.export.Dim("N")}},
            **names,
        )
        prog.save(str(path))
    return "dynamo"


def _opset_of(proto) -> int:
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return -1


def _parity(torch, net, path: Path, spec, state, faces, data=None, skip_bad=False) -> dict:
    from edge_fer.backends.onnxruntime_backend import OnnxRuntimeBackend

    skipped: dict = {}
    if faces is None:
        faces, source, fs = _parity_sample(state, spec, 64, data, skip_bad)
        if fs is not None and fs.skipped:  # which files the check went without
            skipped = {
                "parity_skipped": int(fs.skipped),
                "parity_skipped_entries": list(fs.skipped_entries),
            }
    else:
        source = f"{len(faces)} given faces"
    if source.startswith("random"):
        print(f"edge-fer export: warning: parity checked on {source}", file=sys.stderr)
    x = spec.prepare(faces)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    be = OnnxRuntimeBackend(path, threads=1)
    try:
        got = be.infer(x)
        one = be.infer(x[:1])  # the batch axis must really be dynamic
    finally:
        be.close()
    diff = float(max(np.abs(got - ref).max(), np.abs(one - ref[:1]).max()))
    if got.shape != ref.shape or not diff <= PARITY_TOL:
        raise UserError(
            f"parity check failed: ONNX Runtime and torch differ by {diff:.3g} "
            f"(> {PARITY_TOL:g}) on {source}"
        )
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    return {
        "parity_max_abs_diff": diff,
        "parity_top1_agreement": agree,
        "parity_faces": source,
        **skipped,
    }
