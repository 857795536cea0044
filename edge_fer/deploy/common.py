"""What every deployment generator shares: the model's facts and an all-or-nothing out folder.

`read_model` opens an exported classifier with ONNX Runtime (a base dependency: no `onnx`
package needed) and checks that it is an edge-fer FER model: preprocessing metadata, class
names, an NCHW input and an (N, classes) output that agree with them. `staged_folder` builds
the output in a hidden folder beside the destination and renames it into place only when every
file is written, so a failure leaves no partial config folder behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_fer.errors import UserError
from edge_fer.fileio import (
    first_line,
    hidden_beside,
    os_error_reason,
    sha256_file,
    write_bytes,
    write_text,
)
from edge_fer.preprocess import PreprocessSpec


@dataclass
class ModelInfo:
    path: Path
    spec: PreprocessSpec
    input_name: str
    output_name: str
    batch: int | None  # fixed batch size of the graph, None when dynamic
    sha256: str
    quantized: str | None  # None, "tensorrt" (Q/DQ for TensorRT) or "cpu" (ONNX Runtime CPU)
    metadata: dict[str, str]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    @property
    def file_name(self) -> str:
        """The model's file name as the kit's files name it (nvinfer's onnx-file, READMEs): its
        own, or, when that is not UTF-8, with each byte that is not as '_' (the configs are
        UTF-8 text, which GLib's key files must be; writing them failed on the name)."""
        name = self.path.name
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raw = name.encode("utf-8", "surrogateescape")
            name = raw.decode("utf-8", "replace").replace("\ufffd", "_")
        return name

    @property
    def input_dims(self) -> tuple[int, int, int]:
        """C, H, W of one face (the dims without the batch)."""
        s = self.spec.input_size
        return (self.spec.channels, s, s)


def check_one_line(text: str, param: str, fix: str) -> None:
    """UserError naming `param` when `text` holds a control character (newline, CR, tab, any
    below 0x20, DEL): written into a config it breaks the line (`onnx-file=new` with `line.onnx`
    on the next line). Checked before anything is written."""
    bad = sorted({c for c in str(text) if ord(c) < 0x20 or ord(c) == 0x7F})
    if bad:
        raise UserError(
            f"{text!r} holds a control character ({', '.join(repr(c) for c in bad)}), which "
            f"would break a line of the kit's config files; {fix}",
            param=param,
        )


def default_model() -> Path:
    from edge_fer.classify import default_model_path

    return default_model_path()


def _dim(d) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def read_model(path: str | os.PathLike[str] | None) -> ModelInfo:
    """The model's facts; UserError (one line) when it is not an edge-fer FER classifier."""
    from edge_fer.classify import sniff_model_file

    p = Path(path) if path is not None else default_model()
    sniff_model_file(p)
    try:
        import onnxruntime as ort

        from edge_fer.backends.onnxruntime_backend import session_model

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # a name that is not UTF-8 is passed as the file's bytes (onnxruntime refused the str)
        sess = ort.InferenceSession(session_model(p), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own kinds for bad files
        raise UserError(f"{p}: not a loadable ONNX model ({first_line(exc)})") from None
    meta = dict(sess.get_modelmeta().custom_metadata_map or {})
    if "edge_fer.preprocess" not in meta:
        raise UserError(
            f"{p}: not an edge-fer expression model (no edge_fer.preprocess metadata); "
            "export it with `edge-fer export`"
        )
    try:
        spec = PreprocessSpec.from_metadata(meta)
    except UserError as exc:
        raise UserError(f"{p}: {exc}") from None
    if not spec.classes:
        raise UserError(f"{p}: model metadata names no classes")
    ins, outs = sess.get_inputs(), sess.get_outputs()
    if len(ins) != 1 or len(outs) != 1:
        raise UserError(
            f"{p}: an expression model has one input and one output, this one has "
            f"{len(ins)} and {len(outs)}"
        )
    ishape, oshape = list(ins[0].shape), list(outs[0].shape)
    want = [spec.channels, spec.input_size, spec.input_size]
    if len(ishape) != 4 or any(_dim(a) not in (None, b) for a, b in zip(ishape[1:], want)):
        raise UserError(
            f"{p}: input {ins[0].name!r} has shape {ishape}, but the metadata says "
            f"(N, {want[0]}, {want[1]}, {want[2]})"
        )
    if len(oshape) != 2 or _dim(oshape[1]) not in (None, len(spec.classes)):
        raise UserError(
            f"{p}: output {outs[0].name!r} has shape {oshape}, but the metadata names "
            f"{len(spec.classes)} classes"
        )
    if "float" not in str(ins[0].type):
        raise UserError(f"{p}: input {ins[0].name!r} is {ins[0].type}, not a float tensor")
    return ModelInfo(
        path=p,
        spec=spec,
        input_name=ins[0].name,
        output_name=outs[0].name,
        batch=_dim(ishape[0]),
        sha256=sha256_file(p),
        quantized=_quant_layout(p, meta),
        metadata=meta,
    )


def _quant_layout(path: Path, meta: dict[str, str]) -> str | None:
    """The INT8 layout from the model's `edge_fer.quantization` metadata, else from its graph
    (helper `quant_layout` of the engine builder; None without the onnx package)."""
    raw = meta.get("edge_fer.quantization")
    if raw:
        try:
            target = json.loads(raw).get("target")
        except (ValueError, AttributeError):
            target = None
        if target in ("tensorrt", "cpu"):
            return str(target)
    from edge_fer.export.engine import quant_layout

    return quant_layout(path)


def nvinfer_normalisation(spec: PreprocessSpec) -> tuple[float, float]:
    """(net-scale-factor, offset) such that nvinfer's y = k * (x - offset) on 0..255 pixels
    equals edge-fer's (x / 255 - mean) / std: k = 1 / (255 std), offset = 255 mean."""
    return 1.0 / (255.0 * spec.std), 255.0 * spec.mean


def number(x: float) -> str:
    """A float as config text: exact (repr) but without a trailing '.0' on whole numbers."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


# the largest batch a kit is written for: more faces than any frame holds, a typo (before:
# --max-batch 3000000000 went into config.pbtxt, past Triton's int32 max_batch_size)
MAX_BATCH = 4096


def check_batch(info: ModelInfo, batch: int, what: str = "batch size") -> None:
    if batch < 1:
        raise UserError(f"must be >= 1, got {batch}", param=what)
    if batch > MAX_BATCH:
        raise UserError(f"must be at most {MAX_BATCH}, got {batch}", param=what)
    if info.batch is not None and batch > info.batch:
        raise UserError(
            f"{batch} needs a model exported with a dynamic batch (`edge-fer export` makes "
            f"one): {info.path}'s batch is fixed at {info.batch}",
            param=what,
        )


def check_calib_file(path: str | os.PathLike[str]) -> None:
    """UserError for a calibration cache that is a pipe, device or socket: reading a pipe
    waited for a writer for ever (`--calib-cache` naming a FIFO hung `deploy deepstream`)."""
    if os.path.exists(path) and not os.path.isfile(path):
        raise UserError(
            f"{path}: not a regular file (a pipe, device or socket)", param="calib_cache"
        )


class Writer:
    """Writes files under the staging folder (atomically, through `edge_fer.fileio`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: list[str] = []

    def _path(self, rel: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        self.files.append(rel)
        return p

    def text(self, rel: str, text: str, executable: bool = False) -> None:
        p = self._path(rel)
        write_text(p, text)
        if executable:
            os.chmod(p, os.stat(p).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def bytes(self, rel: str, data: bytes) -> None:
        write_bytes(self._path(rel), data)

    def copy(self, rel: str, src: Path) -> None:
        try:
            data = src.read_bytes()
        except OSError as exc:
            raise UserError(f"{src}: cannot read ({os_error_reason(exc)})") from None
        self.bytes(rel, data)

    def folder(self, rel: str) -> None:
        (self.root / rel).mkdir(parents=True, exist_ok=True)


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


@contextlib.contextmanager
def staged_folder(
    out: str | os.PathLike[str], force: bool = False, inputs: Sequence[tuple[str, Any]] = ()
) -> Iterator[Writer]:
    """Yield a Writer on a hidden folder beside `out`; on success it becomes `out` (replacing an
    empty folder, or a non-empty one with `force`), on any error it is removed and nothing of
    `out` changes. UserError for a non-empty `out` without `force`, `out` being a file, or `out`
    holding one of `inputs` ((what, path) pairs: the model, the calibration cache), which
    replacing the folder would delete."""
    dest = Path(out)
    if dest.is_symlink() and dest.is_dir():  # written through: the link stays a link
        dest = Path(os.path.realpath(dest))
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest}: exists and is not a folder")
    if dest.is_dir():
        inside = os.path.realpath(dest).rstrip(os.sep) + os.sep
        # replacing the folder deletes what is in it: never the folder a user works in, their
        # home or anything above them (`--out . --force` deleted the working folder)
        for what, kept in (("the current folder", Path.cwd()), ("your home folder", Path.home())):
            if (os.path.realpath(kept).rstrip(os.sep) + os.sep).startswith(inside):
                raise UserError(
                    f"{out}: is or holds {what}, which replacing the folder would delete; "
                    "write the deployment to a folder of its own"
                )
        for what, path in inputs:
            if path and (os.path.realpath(path) + os.sep).startswith(inside):
                raise UserError(
                    f"{dest}: holds the {what} {path}, which replacing the folder would delete; "
                    "write the deployment to another folder"
                )
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise UserError(f"{dest}: folder is not empty; pass --force to replace it")
    parent = dest.absolute().parent
    created: list[Path] = []
    try:
        for d in reversed([parent, *parent.parents]):
            if not d.exists():
                d.mkdir()
                created.append(d)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=parent))
    except OSError as exc:
        _remove_created(created)
        raise UserError(f"{dest}: cannot create the folder ({os_error_reason(exc)})") from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield Writer(tmp)
        if dest.is_dir() and any(dest.iterdir()):
            old = hidden_beside(dest, f".{os.getpid()}.old")
            os.rename(dest, old)
            try:
                os.rename(tmp, dest)
            except OSError:
                os.rename(old, dest)  # put the user's folder back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            if dest.is_dir():
                os.rmdir(dest)
            os.rename(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_created(created)
        raise UserError(f"{dest}: cannot write ({os_error_reason(exc)})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_created(created)
        raise


def _remove_created(created: list[Path]) -> None:
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            break
