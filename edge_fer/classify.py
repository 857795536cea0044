"""Expression classification of face crops with an exported model (no torch needed).

    from edge_fer.classify import Classifier
    clf = Classifier.load()                  # the bundled default model
    probs = clf.predict([crop1, crop2])      # uint8 gray or BGR crops -> (N, C) float32
    clf.classes[probs.argmax(1)[0]]

A model is an ONNX file exported by `edge-fer export`: float32 NCHW "input", softmax "probs"
output, and metadata that carries its `PreprocessSpec` (input size, channels, CLAHE,
normalisation, class names). The classifier prepares crops exactly as training did.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edge_fer.backends import Backend, create_backend
from edge_fer.backends.base import Closing
from edge_fer.errors import UserError, reported
from edge_fer.fileio import read_head
from edge_fer.limits import check_count
from edge_fer.preprocess import PreprocessSpec
from edge_fer.tta import TTA_MODES, check_mode, merge, views

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = "fer_default.onnx"
DEFAULT_CARD = "fer_default.md"
# the bundled model quantized to INT8 for ONNX Runtime on CPU (edge-fer calibrate --target cpu)
DEFAULT_INT8 = "fer_default.int8.onnx"
# a fixed-batch model is fed whole padded batches, even for one face: bound what one costs
MAX_FIXED_BATCH_VALUES = 1 << 26  # 256 MB of float32 input
# Float pixels are clipped into 0..1 or 0..255 (preprocess.to_gray), which must let an
# interpolating resize's overshoot through, but not a face on another scale (a -1..1 or a
# mean-centred face lost every pixel below 0 to black, and was classified without a word).
# Measured on 6000 FER2013 faces on the 0..1 scale resized with INTER_CUBIC and
# INTER_LANCZOS4 (48->32, 64, 100, 150, 200 and 100->48): at most 0.5% of a face's pixels lie
# more than 0.1 outside 0..1 (1.7% more than 0.05; the farthest at -0.22 and 1.24); black and
# white squares, the sharpest edges, 2.6%; none of 80000 such resized faces (0..1 and 0..255)
# is refused. A -1..1,
# 0..255 - 128 or mean-centred face has about half of its pixels far below 0: 96% to 99.9% of
# the FER2013 faces so shifted are refused (the rest are bright faces, clipped little).
OFF_SCALE_MARGIN = 0.1  # beyond the scale's ends by this share of the scale (1 or 255)
OFF_SCALE_SHARE = 0.05  # ... at most this share of a face's values

_IMAGE_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"RIFF", "a RIFF (WebP/AVI) file"),
)


def default_model_path() -> Path:
    """The bundled default model, `edge_fer/assets/fer_default.onnx`."""
    p = ASSETS / DEFAULT_MODEL
    if not p.is_file():
        raise UserError("no bundled model yet; pass --model")
    return p


def bundled_model_path(backend: str = "onnxruntime", precision: str = "auto") -> Path:
    """The bundled model for a backend. precision "auto": the INT8 model on ONNX Runtime (CPU;
    same accuracy, about 3x faster with VNNI, see its model card) except on x86 CPUs without
    VNNI, where it was measured no faster than FP32 (docs/quantize.md); FP32 elsewhere (TensorRT
    builds its own INT8 engine from the FP32 graph and the calibration cache)."""
    from edge_fer.machine import x86_without_vnni

    if precision not in ("auto", "fp32", "int8"):
        raise UserError(f"unknown precision {precision!r}; choose auto, fp32 or int8")
    # the names create_backend takes (an unknown one got the ONNX model without a word)
    names = {"onnxruntime": "onnxruntime", "ort": "onnxruntime", "tensorrt": "tensorrt",
             "trt": "tensorrt"}  # fmt: skip
    if not isinstance(backend, str) or backend.lower() not in names:
        raise UserError(f"{backend!r} is unknown; choose onnxruntime or tensorrt", param="backend")
    backend = names[backend.lower()]
    int8 = ASSETS / DEFAULT_INT8
    auto_int8 = precision == "auto" and backend == "onnxruntime" and not x86_without_vnni()
    if precision == "int8" or auto_int8:
        if backend != "onnxruntime" and precision == "int8":
            raise UserError(
                "the bundled INT8 model is for ONNX Runtime; for INT8 on TensorRT keep the "
                "FP32 model and ask TensorRT for int8 (--trt-precision int8; trt_precision in "
                "Python): it builds an INT8 engine with the model's calibration cache"
            )
        if int8.is_file():
            return int8
        if precision == "int8":
            raise UserError(f"no bundled INT8 model ({int8} is missing)")
    return default_model_path()


def default_model_card_path() -> Path | None:
    p = ASSETS / DEFAULT_CARD
    return p if p.is_file() else None


def sniff_model_file(path: Path) -> None:
    """Reject files that are clearly not a model with a message saying what they are."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a model file")
    head = read_head(path, 16, "model")
    for magic, what in _IMAGE_MAGIC:
        if head.startswith(magic):
            raise UserError(f"{path}: is {what}, not an ONNX model")
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        raise UserError(
            f"{path}: is an HDF5 file (a Keras model?), not an ONNX model; convert a Keras "
            f"classifier with `edge-fer keras import {path} --out MODEL.onnx`"
        )
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 27:
        raise UserError(
            f"{path}: is a safetensors training checkpoint, not an ONNX model; "
            f"convert it with `edge-fer export --checkpoint {path} --out MODEL.onnx`"
        )


class Classifier(Closing):
    """An exported FER model plus the preprocessing it was trained with."""

    def __init__(self, backend: Backend, spec: PreprocessSpec, path: Path, tta: str = "none"):
        self.backend = backend
        self.spec = spec
        self.path = path
        self.metadata: dict[str, str] = dict(backend.metadata)
        self.tta = "none"
        self.set_tta(check_mode(tta) if tta != "auto" else tta)  # named tta, not set_tta's mode

    @classmethod
    def load(
        cls,
        path: str | bytes | os.PathLike | None = None,
        backend: str = "onnxruntime",
        threads: int | None = None,
        tta: str = "auto",
        **backend_opts,
    ) -> Classifier:
        """`tta`: test-time augmentation (edge_fer.tta); "auto" = the model's recommendation
        (metadata `edge_fer.tta_default`, "none" when absent). `backend_opts`: the backend's
        own keywords (onnxruntime: providers, allow_spinning; tensorrt: precision, device,
        ...: `edge_fer.backends`); another is a UserError naming it, and the backend it
        belongs to if it is the other backend's."""
        if tta != "auto":
            check_mode(tta)
        if isinstance(path, bytes):  # a name that is not UTF-8, as os.listdir(b".") gives it
            path = os.fsdecode(path)
        if path is not None and not isinstance(path, (str, os.PathLike)):  # Path(3): TypeError
            raise UserError(f"must be a model file's path, got {path!r}", param="path")
        if not isinstance(backend, str):  # (3: "'int' object has no attribute 'lower'")
            raise UserError(f"must be a backend's name, got {backend!r}", param="backend")
        _check_backend_opts(backend, backend_opts)  # before the model is opened
        p = Path(path) if path is not None else default_model_path()
        sniff_model_file(p)
        if threads is not None:
            backend_opts["threads"] = threads
        be = create_backend(backend, p, **backend_opts)
        try:
            spec = _spec_of(be, p)
            c, s = spec.channels, spec.input_size
            want = (c, s, s)
            got = be.input_shape[1:]
            if any(g is not None and g != w for g, w in zip(got, want)):
                raise UserError(
                    f"{p}: model input is (N, {', '.join(str(g) for g in got)}) but its "
                    f"metadata says (N, {c}, {s}, {s})"
                )
            fb = be.fixed_batch
            if fb is not None and fb * c * s * s > MAX_FIXED_BATCH_VALUES:
                raise UserError(
                    f"{p}: model has a fixed batch size of {fb}, too large for {c}x{s}x{s} "
                    "inputs; export it with a dynamic or smaller batch"
                )
            n_out = be.num_outputs
            if n_out is not None and n_out != len(spec.classes):
                raise UserError(
                    f"{p}: model outputs {n_out} values but its metadata names "
                    f"{len(spec.classes)} classes ({_names(spec.classes)})"
                )
            # one blank face through the model now, so that a model that cannot run at this
            # size or outputs NaN/inf (NaN weights) fails here, before eval or run do any work
            probe = _probe(be, p, c, s)
            k = len(spec.classes)
            if probe.ndim != 2 or probe.shape[1] != k:
                raise UserError(
                    f"{p}: model outputs {probe.shape[-1] if probe.ndim else 0} values but its "
                    f"metadata names {k} classes ({_names(spec.classes)})"
                )
            if probe.shape[0] != 2:  # (a constant (1, K) output passed a probe of one)
                raise UserError(
                    f"{p}: model gives {probe.shape[0]} rows for 2 faces; its output must "
                    "follow the input's batch"
                )
            # logits were labelled and returned as probabilities; a quantized Softmax sums
            # to 1 within a few 1/255
            if probe.min() < -1e-3 or np.abs(probe.sum(1) - 1).max() > 0.05:
                raise UserError(
                    f"{p}: model outputs are not probabilities (rows sum to "
                    f"{probe.sum(1)[0]:.3g}, min {probe.min():.3g}); end the graph with a Softmax"
                )
        except BaseException:
            be.close()
            raise
        return cls(be, spec, p, tta)

    # -- properties ---------------------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def arch(self) -> str:
        return self.metadata.get("edge_fer.arch", "?")

    @property
    def graph_tta(self) -> str:
        """Augmentation inside the model graph (an export option): "none" or "flip"."""
        return self.metadata.get("edge_fer.tta", "none")

    @property
    def recommended_tta(self) -> str:
        # (an unknown mode is refused by `load`)
        return self.metadata.get("edge_fer.tta_default") or "none"

    def set_tta(self, mode: str) -> None:
        """Views averaged per face by `infer` ("auto": the model's recommendation)."""
        self.tta = check_mode(self.recommended_tta if mode == "auto" else mode, "mode")

    # -- inference ----------------------------------------------------------------------
    def infer(self, x: np.ndarray) -> np.ndarray:
        """Prepared float32 (N, C, H, W) -> (N, K) probabilities, averaged over the TTA views.
        A non-finite output is a UserError: NaN must never become a label or a JSON value.
        The inner call of `predict`, unchecked: `predict_array` checks its input."""
        if self.tta == "none" or len(x) == 0:
            return _finite(self.backend.infer(x), self.path)
        v = views(x, self.tta, graph_flips=self.graph_tta == "flip")
        return merge(_finite(self.backend.infer(v), self.path), len(x))

    def predict(self, faces, batch_size: int = 256) -> np.ndarray:
        """Face crops (a list, or an array of N crops; gray HxW or HxWx1, BGR HxWx3 or BGRA
        HxWx4, any size; uint8, or floats in 0..1 or 0..255) -> (N, C) probs. One crop alone
        (a 2-D array, or HxWx1/3/4) is one face: (1, C). A float crop with more than 5% of its
        pixels clearly outside its scale (a -1..1 or mean-centred face) is a UserError; a
        resize's overshoot is clipped."""
        check_count(batch_size, "batch_size")  # 0 looped for ever
        faces = _crops(faces)
        _check_float_crops(faces)
        n = len(faces)
        if n == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        out = []
        for i in range(0, n, batch_size):
            out.append(self.infer(self.spec.prepare(faces[i : i + batch_size], first=i)))
        return np.concatenate(out)

    def predict_faces(self, faces, batch_size: int = 256) -> np.ndarray:
        """Already-cropped face images (a dataset's faces, `edge-fer classify`'s files; gray
        HxW or BGR HxWx3 uint8, any size) -> (N, C) probs. As `predict`, except that for a model
        trained on eye-aligned faces (`spec.align`) each face is first aligned the way training
        aligned its dataset (`edge_fer.align.as_trained_faces`); `predict` takes the runtime's
        crops, which are cut aligned already."""
        faces = _crops(faces)
        if self.spec.align and len(faces):
            from edge_fer.align import as_trained_faces

            _check_float_crops(faces)  # here: aligned faces are uint8, predict sees no floats
            faces = as_trained_faces(faces, self.spec)
        return self.predict(faces, batch_size)

    def predict_array(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Already prepared float32 (N, C, H, W) input -> (N, C) probs. A face with more than
        5% of its values clearly outside what `spec.prepare` gives (pixels 0..1 normalised by
        the spec's mean and std) is a UserError, as `predict`'s float crops are."""
        x = _numeric(x, "x")
        s, c = self.spec.input_size, self.spec.channels
        if x.ndim != 4 or x.shape[1:] != (c, s, s):
            raise UserError(
                f"of shape {tuple(x.shape)} does not fit the model's (N, {c}, {s}, {s})",
                param="x",
            )
        check_count(batch_size, "batch_size")  # 0 looped for ever
        if x.dtype.kind != "f":  # raw 0..255 pixels were classified as if prepared
            raise UserError(
                f"is {x.dtype}: it takes the prepared float input (spec.prepare); "
                "pixels go to predict()",
                param="x",
            )
        if x.shape[0] == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():  # else the model's NaN output was blamed on its weights
            raise UserError("input has NaN or infinite values", param="x")
        # raw 0..255 float pixels were classified as if prepared (a happy face came out angry)
        mean, std = self.spec.mean, self.spec.std
        lo, hi = -mean / std, (1.0 - mean) / std  # pixels 0 and 1, prepared
        share = _off_scale(x.reshape(len(x), -1), lo, hi)
        i = int(share.argmax())
        if share[i] > OFF_SCALE_SHARE:
            raise UserError(
                f"face {i}: {share[i]:.0%} of its values lie well outside {lo:g}..{hi:g}, the "
                f"range spec.prepare gives (pixels 0..1 as (p - {mean:g}) / {std:g}); it takes "
                "the prepared input: pixels go to predict()",
                param="x",
            )
        return np.concatenate(
            [self.infer(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        )

    def labels_of(self, probs: np.ndarray) -> list[str]:
        """The top class of each row of (N, C) probabilities; one face's (C,) too."""
        p = _numeric(probs, "probs")
        k = len(self.classes)
        # another model's table (9 columns) was an IndexError, or with fewer columns than
        # classes the wrong names without a word
        if p.ndim not in (1, 2) or p.shape[-1] != k:
            raise UserError(
                f"must be (N, {k}) or ({k},) probabilities of this model's classes "
                f"({_names(self.classes)}), got shape {tuple(p.shape)}",
                param="probs",
            )
        if not np.isfinite(p).all():  # argmax of a NaN row is 0: a label for nothing
            raise UserError("has NaN or infinite values", param="probs")
        return [self.classes[i] for i in np.atleast_2d(p).argmax(1)]

    def info(self) -> dict:
        import json

        d: dict = {
            "path": str(self.path),
            "arch": self.arch,
            "classes": list(self.classes),
            "input": [self.spec.channels, self.spec.input_size, self.spec.input_size],
            "backend": self.backend.name,
            "tta": self.tta,
            "graph_tta": self.graph_tta,
        }
        for k in ("params", "macs"):
            v = self.metadata.get(f"edge_fer.{k}")
            if v is not None and v.isdigit():
                d[k] = int(v)
        prov = self.metadata.get("edge_fer.provenance")
        if prov:
            try:
                d["provenance"] = json.loads(prov)
            except (ValueError, RecursionError):
                pass
        return d

    def close(self) -> None:
        self.backend.close()

    def __repr__(self) -> str:
        return f"<Classifier {self.path} {self.arch} {len(self.classes)} classes>"


def _backend_options(name: str) -> tuple[str, ...] | None:
    """The keywords the backend `name` takes besides the model's path (None: not known here,
    an unknown or unavailable backend, which create_backend reports)."""
    import inspect

    cls: type[Backend]
    if name in ("onnxruntime", "ort"):
        from edge_fer.backends.onnxruntime_backend import OnnxRuntimeBackend

        cls = OnnxRuntimeBackend
    elif name in ("tensorrt", "trt"):
        try:  # (its module imports tensorrt inside functions only)
            from edge_fer.backends.tensorrt_backend import TensorRTBackend
        except ImportError:
            return None
        cls = TensorRTBackend
    else:
        return None
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, model_path
    return tuple(q.name for q in params if q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY))


def _check_backend_opts(backend: str, opts: Mapping) -> None:
    """UserError naming the keywords of `opts` the backend does not take (precision=... was
    "OnnxRuntimeBackend.__init__() got an unexpected keyword argument 'precision'")."""
    name = backend.lower()
    takes = _backend_options(name)
    unknown = [k for k in opts if takes is not None and k not in takes]
    if not unknown:
        return
    canon = "tensorrt" if name in ("tensorrt", "trt") else "onnxruntime"
    other = "onnxruntime" if canon == "tensorrt" else "tensorrt"
    theirs = _backend_options(other) or ()
    message = (
        f"{'is not an option' if len(unknown) == 1 else 'are not options'} of the {canon} "
        f"backend (Classifier.load takes path, backend, threads, tta and the backend's "
        f"{', '.join(k for k in takes or () if k != 'threads')})"
    )
    mine = [k for k in unknown if k in theirs]
    if mine:
        whose = "it" if len(unknown) == 1 else ", ".join(mine)
        one = len(mine) == 1
        message += (
            f"; {whose} {'is an option' if one else 'are options'} of the {other} backend "
            f"(backend={other!r})"
        )
    if "precision" in unknown and canon == "onnxruntime":
        message += (
            '; the bundled INT8 model for ONNX Runtime is path=bundled_model_path(precision="int8")'
        )
    raise UserError(message, param=", ".join(unknown))


def _crops(faces) -> np.ndarray | list | tuple:
    """`faces` as `predict` indexes them: an array of crops (one crop alone made an array of
    one), or a list; any other iterable (a generator) is read into a list."""
    if faces is None or isinstance(faces, (str, bytes, os.PathLike, Mapping)):
        # (len() of None: a TypeError; a dict was sliced)
        raise UserError(
            f"expected face crops (an array or a list of arrays), got {type(faces).__name__}",
            param="faces",
        )
    if isinstance(faces, np.ndarray):
        if faces.ndim == 2 or (faces.ndim == 3 and faces.shape[2] in (1, 3, 4)):
            return faces[None]  # iterating it would make a "face" of each row
        # (100, 120, 2) (gray + alpha) was 100 "faces" of 120x2, a 1-D array one per pixel
        if faces.ndim == 1 or (faces.ndim == 3 and faces.shape[2] < 8):
            raise UserError(
                f"is an array of shape {faces.shape}: one face is HxW (gray), HxWx1, HxWx3 "
                "(BGR) or HxWx4 (BGRA); several are an (N, H, W) or (N, H, W, 1/3/4) array or "
                "a list",
                param="faces",
            )
        return faces
    if isinstance(faces, (list, tuple)):
        return faces
    try:  # a generator has no len(): a TypeError before
        return list(faces)
    except TypeError:
        raise UserError(
            f"expected face crops (an array or a list of arrays), got {type(faces).__name__}",
            param="faces",
        ) from None


def _off_scale(rows: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The share of each row's values further than OFF_SCALE_MARGIN x (hi - lo) outside
    lo..hi: (N,) for (N, M) rows."""
    m = OFF_SCALE_MARGIN * (hi - lo)
    out = np.count_nonzero((rows < lo - m) | (rows > hi + m), axis=1)
    return out / max(rows.shape[1], 1)


def _check_float_crops(faces) -> None:
    """UserError naming `faces` for a float crop that is not on the 0..1 or 0..255 scale
    (preprocess.to_gray's: 0..1 when its brightest value is at most 2) beyond a resize's
    overshoot (OFF_SCALE_SHARE). Other crops are left to to_gray, which says what is wrong."""
    for i, f in enumerate(faces):
        if not isinstance(f, np.ndarray) or f.dtype.kind != "f" or f.size == 0:
            continue
        lo, hi = float(f.min()), float(f.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            continue  # to_gray: "NaN or infinite pixels"
        top = 1.0 if hi <= 2.0 else 255.0
        share = float(_off_scale(f.reshape(1, -1), 0.0, top)[0])
        if share > OFF_SCALE_SHARE:
            which = f"face {i}: " if len(faces) > 1 else ""
            raise UserError(
                f"{which}{f.dtype} pixels span {lo:g}..{hi:g}, {share:.0%} of them well outside "
                f"0..{top:g}: float crops must be on the 0..1 or 0..255 scale (a -1..1 face is "
                "(x + 1) / 2; add a mean-centred face's mean back)",
                param="faces",
            )


def _numeric(value, param: str) -> np.ndarray:
    """`value` as a numeric array; a UserError naming `param` for anything else (a string
    was a 0-d array whose argmax named the first class)."""
    try:
        a = np.asarray(value)
    except (ValueError, TypeError):  # ragged rows
        a = None
    if a is None or a.dtype.kind not in "iuf":
        raise UserError(
            f"must be a numeric array, got {type(value).__name__}"
            + (f" of {a.dtype}" if a is not None and a.dtype != object else ""),
            param=param,
        )
    return a


def _spec_of(be: Backend, path: Path) -> PreprocessSpec:
    if "edge_fer.preprocess" not in be.metadata:
        raise UserError(
            f"{path}: model has no edge-fer metadata (edge_fer.preprocess); "
            "export it with `edge-fer export`"
        )
    try:
        spec = PreprocessSpec.from_metadata(be.metadata)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    if not spec.classes:
        raise UserError(f"{path}: model metadata names no classes")
    # an unknown mode was taken as "none" without a word (eval and classify use it by default)
    tta_default = be.metadata.get("edge_fer.tta_default") or "none"
    if tta_default not in TTA_MODES:
        shown = tta_default if len(tta_default) <= 40 else tta_default[:37] + "..."
        raise UserError(
            f"{path}: model metadata edge_fer.tta_default is {shown!r}, not one of "
            f"{', '.join(TTA_MODES)}"
        )
    return spec


def _names(classes: tuple[str, ...], limit: int = 10) -> str:
    more = f", ... ({len(classes)} in all)" if len(classes) > limit else ""
    return ", ".join(classes[:limit]) + more


def _finite(probs: np.ndarray, path: Path) -> np.ndarray:
    if not np.isfinite(probs).all():
        raise UserError(
            f"{path}: model outputs non-finite values (NaN or inf); its weights are broken"
        )
    return probs


def _probe(be: Backend, path: Path, c: int, s: int) -> np.ndarray:
    """The model's output for two blank (mid-grey, i.e. zero after normalisation) faces."""
    with reported(f"{path}: model fails on a blank {c}x{s}x{s} input"):
        y = np.asarray(be.infer(np.zeros((2, c, s, s), np.float32)))
    return _finite(y, path)
