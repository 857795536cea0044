"""Load a Keras classifier and convert it to an edge-fer ONNX model (tf2onnx).

The ONNX file follows the runtime's convention, the same as `edge-fer export` writes: one
float32 input "input" of shape (N, C, H, W) with a dynamic batch (the Keras model is NHWC;
tf2onnx's `inputs_as_nchw` puts the transpose into the graph), one output "probs" with softmax
probabilities, and the metadata of `edge_fer.export.onnx.build_metadata` (PreprocessSpec,
arch "keras:<name>", params, MACs, provenance with the source file's sha256, tta "none").
The graph is checked first (ONNX checker, Keras vs ONNX Runtime parity on real faces, run on a
private temporary copy) and only then written, with `edge_fer.fileio.write_bytes`: a failure
leaves the target as it was.

Model files are code (a Lambda layer is Python bytecode): `load_keras` reads the config and
refuses such models unless told to trust them (see `model_code`).
"""

from __future__ import annotations

import builtins
import datetime as _dt
import gzip
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_fer import __version__
from edge_fer import labels as L
from edge_fer.errors import UserError, reported
from edge_fer.fileio import first_line, os_error_reason, read_head, sha256_file, write_bytes
from edge_fer.keras_import import _tf
from edge_fer.preprocess import MAX_INPUT_SIZE, MIN_INPUT_SIZE, PreprocessSpec

PARITY_TOL = 1e-4  # FP32: max |p_keras - p_onnxruntime|, as `edge-fer export`
# QAT (Q/DQ) models: ONNX Runtime fuses the Q/DQ graph into integer kernels (QLinearConv,
# quantising the weights itself) whose rounding differs from TensorFlow's float
# fake-quantisation: a quantisation step here and there differs (mini-Xception after QAT:
# 96.9% top-1 agreement, max |dp| 0.10 on 64 faces). Judged mainly by agreement.
QDQ_TOL = 0.25
QDQ_MIN_AGREEMENT = 0.9
PROB_SUM_TOL = 1e-3

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
SOURCE_ATTR = "_edge_fer_source"  # set on models returned by load_keras


# -- loading ----------------------------------------------------------------------------------


def sniff_keras(path: Path) -> str:
    """The kind of Keras file at `path`: "hdf5", "keras" (zip archive) or "savedmodel";
    UserError when it is missing or clearly something else."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        raise UserError(f"{path}: is a folder, not a Keras model (no saved_model.pb inside)")
    head = read_head(path, 8, "Keras model")
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(ZIP_MAGIC):
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
        except zipfile.BadZipFile:
            raise UserError(f"{path}: damaged zip file, not a .keras model") from None
        if "config.json" not in names:
            raise UserError(f"{path}: a zip file without config.json, not a .keras model")
        return "keras"
    from edge_fer.classify import _IMAGE_MAGIC

    what = next((name for magic, name in _IMAGE_MAGIC if head.startswith(magic)), None)
    if what is None and path.suffix.lower() == ".onnx":
        raise UserError(
            f"{path}: is an ONNX model, not a Keras model; use it as it is "
            f"(edge-fer eval --model {path})"
        )
    expected = "expected an HDF5 .h5/.hdf5 file, a .keras archive or a SavedModel folder"
    if what:
        raise UserError(f"{path}: is {what}, not a Keras model ({expected})")
    raise UserError(f"{path}: not a Keras model ({expected})")


def load_keras(path: str | os.PathLike, trust_code: bool = False):
    """Load a Keras classifier (HDF5 .h5/.hdf5, .keras, or a SavedModel folder) with tf-keras
    (Keras 2), without its training configuration. UserError for a missing file, a file that
    is not a Keras model, an HDF5 file that holds only weights, or a model tf-keras cannot
    rebuild.

    A model file is code: a `Lambda` layer holds Python bytecode that loading runs, a custom
    layer class needs code from elsewhere, a SavedModel holds TensorFlow graphs that may run any
    operation. Unless `trust_code`, the model's config is read first and such a model is
    refused (UserError) before anything of it is deserialised, and `.keras` archives load in
    tf-keras's safe mode."""
    if not isinstance(path, (str, os.PathLike)):  # Path(3) was a bare TypeError
        raise UserError(
            f"must be a Keras model file or folder name, got {type(path).__name__}", param="path"
        )
    p = Path(path)
    kind = sniff_keras(p)
    config = None
    if not trust_code:
        if kind == "savedmodel":
            raise UserError(
                f"{p}: a SavedModel folder is code (TensorFlow graphs that may run any "
                f"operation, file access included); {TRUST_HINT}"
            )
        config = read_model_config(p, kind)
        _refuse_code(p, config, None)  # Lambda layers: before TensorFlow is even imported
    elif kind == "hdf5":
        _check_hdf5_has_model(p)
    _, keras = _tf.tf_keras()
    if config is not None:
        _refuse_code(p, config, _builtin_layers(keras))
    try:
        with _safe_mode(not trust_code):
            model = _load_model(keras, p, kind, trust_code)
    except Exception as exc:  # noqa: BLE001 - anything tf-keras raises is about this file
        model = _load_quantized(keras, p, kind, trust_code)  # a model saved after `keras qat`?
        if model is None:
            raise UserError(
                f"{p}: tf-keras {keras.__version__} cannot load this model ({first_line(exc)})"
            ) from None
    if not isinstance(model, keras.Model):
        raise UserError(f"{p}: holds a {type(model).__name__}, not a Keras model")
    setattr(model, SOURCE_ATTR, str(p))
    return model


def _load_model(keras, p: Path, kind: str, trust_code: bool):
    if kind == "keras":
        return keras.models.load_model(str(p), compile=False, safe_mode=not trust_code)
    return keras.models.load_model(str(p), compile=False)


def _safe_mode(on: bool):
    """tf-keras's safe mode (no Python lambdas deserialised) for the legacy HDF5 loader too,
    which ignores `safe_mode=`: a second guard behind `_refuse_code`."""
    import contextlib

    if not on:
        return contextlib.nullcontext()
    try:
        from tf_keras.src.saving.serialization_lib import SafeModeScope
    except ImportError:  # another tf-keras layout: `_refuse_code` already checked
        return contextlib.nullcontext()
    return SafeModeScope(True)


def _load_quantized(keras, p: Path, kind: str, trust_code: bool):
    """A model saved with tfmot's quantisation layers loads only inside its scope."""
    try:
        mot = _tf.tfmot()
        with mot.quantization.keras.quantize_scope(), _safe_mode(not trust_code):
            return _load_model(keras, p, kind, trust_code)
    except Exception:  # noqa: BLE001 - not such a model: report the first error
        return None


def _check_hdf5_has_model(p: Path) -> None:
    try:
        import h5py
    except ImportError:  # tensorflow depends on h5py; let tf-keras complain if it is gone
        return
    _hdf5_config(h5py, p)


def _hdf5_config(h5py, p: Path):
    try:
        with h5py.File(p, "r") as f:
            raw = f.attrs.get("model_config")
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{p}: damaged HDF5 file ({first_line(exc)})") from None
    if raw is None:
        raise UserError(
            f"{p}: HDF5 file without a model config (weights only?); build the model in "
            "Keras, load these weights and save the whole model"
        )
    return raw


# -- what loading a model file would run ------------------------------------------------------

TRUST_HINT = (
    "model files from others are code: pass trust_code=True (--trust-model-code) only for a "
    "file whose source you trust"
)
# model classes and tfmot's wrappers (saved by `keras prune/qat --save-keras`), besides the
# layers of tf_keras.layers; a wrapper's inner layer is checked as a layer
_MODEL_CLASSES = {"Functional", "Sequential", "Model"}
# the modules whose objects a config may name (tfmot's: quantisers of a saved QAT model)
_MODULES = ("keras.", "tf_keras.", "tensorflow_model_optimization.")
_TFMOT_LAYERS = {
    "QuantizeLayer",
    "QuantizeWrapper",
    "QuantizeWrapperV2",
    "QuantizeAnnotate",
    "PruneLowMagnitude",
}
# what tf-keras records for raw TensorFlow calls in a functional model (`x + 1`,
# `tf.nn.relu6(x)`): the TensorFlow function by name. Only names from these math/array
# namespaces are taken (not tf.io, tf.raw_ops, tf.py_function, ...).
_TF_OP_LAYERS = {"TFOpLambda", "SlicingOpLambda"}
_TF_OP_PREFIXES = ("math.", "nn.", "__operators__.", "linalg.", "image.resize", "clip_by_")
_TF_OP_NAMES = {
    "abs",
    "add",
    "argmax",
    "argmin",
    "broadcast_to",
    "cast",
    "clip_by_value",
    "concat",
    "divide",
    "einsum",
    "exp",
    "expand_dims",
    "fill",
    "gather",
    "identity",
    "matmul",
    "maximum",
    "minimum",
    "multiply",
    "ones_like",
    "pad",
    "pow",
    "reduce_max",
    "reduce_mean",
    "reduce_min",
    "reduce_sum",
    "reshape",
    "rank",
    "shape",
    "sigmoid",
    "sign",
    "split",
    "sqrt",
    "square",
    "squeeze",
    "stack",
    "subtract",
    "tanh",
    "tile",
    "transpose",
    "truediv",
    "unstack",
    "where",
    "zeros_like",
    "compat.v1.transpose",
    "compat.v1.gather",
}


def read_model_config(p: Path, kind: str) -> dict:
    """The model config stored in an HDF5 file (its `model_config` attribute) or a .keras
    archive (config.json), read as JSON without deserialising anything."""
    if kind == "hdf5":
        try:
            import h5py
        except ImportError as exc:
            raise UserError(f"{_tf.EXTRA_HINT} (h5py cannot be imported: {exc})") from None
        raw = _hdf5_config(h5py, p)
    else:
        import zipfile

        try:
            with zipfile.ZipFile(p) as z:
                raw = z.read("config.json")
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise UserError(f"{p}: damaged .keras archive ({first_line(exc)})") from None
    try:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        config = json.loads(raw)
    except (UnicodeDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise UserError(f"{p}: the model config is not JSON ({first_line(exc)})") from None
    if not isinstance(config, dict):
        raise UserError(f"{p}: the model config is not a JSON object")
    return config


def _builtin_layers(keras) -> set[str]:
    import inspect

    names = {
        n
        for n in dir(keras.layers)
        if inspect.isclass(getattr(keras.layers, n, None))
        and issubclass(getattr(keras.layers, n), keras.layers.Layer)
    }
    return (names | _MODEL_CLASSES | _TFMOT_LAYERS | _TF_OP_LAYERS) - {"Lambda"}


def _layer_entries(entry: Any):
    """Every layer entry ({"class_name": ..., "config": {...}}) of a model config: the model,
    the layers of (nested) models, the inner layers of wrappers and RNN cells."""
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        return
    yield entry
    cfg = entry.get("config")
    if not isinstance(cfg, dict):
        return
    for key in ("layers", "cells"):
        if isinstance(cfg.get(key), list):
            for sub in cfg[key]:
                yield from _layer_entries(sub)
    for key in ("layer", "backward_layer", "forward_layer", "cell"):
        yield from _layer_entries(cfg.get(key))


def _code_objects(obj: Any):
    """What anywhere in a config carries or reaches code: Lambda ("__lambda__" in .keras
    archives) objects, and objects of modules other than Keras's and tfmot's (tf-keras imports
    the module a .keras config names, and looks functions of "builtins" up among Python's
    builtins)."""
    if isinstance(obj, dict):
        name = obj.get("class_name")
        module = obj.get("module")
        if name in ("Lambda", "__lambda__"):
            yield "a Lambda layer (Python code)"
        elif isinstance(name, str) and module is not None:
            if not isinstance(module, str) or not (
                module in ("keras", "tf_keras", "builtins") or module.startswith(_MODULES)
            ):
                yield f"{name} from module {module!r}"
            elif module == "builtins":
                fn = obj.get("config") if name == "function" else name
                if not isinstance(fn, str) or fn in vars(builtins):
                    yield f"Python builtin {fn!r}"
        for v in obj.values():
            yield from _code_objects(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _code_objects(v)


def model_code(config: dict, builtin: set[str] | None = None) -> list[str]:
    """What in a model config is code rather than data: Lambda layers (Python bytecode),
    objects of other modules than Keras's, and, given the names of the built-in layer classes,
    layers of other classes (custom objects) and TensorFlow calls outside the math and array
    functions. Empty for a model of built-in layers."""
    found = list(_code_objects(config))
    if builtin is not None:
        for entry in _layer_entries(config):
            name = entry["class_name"]
            cfg = entry.get("config")
            if name in ("Lambda", "__lambda__"):
                continue
            if name not in builtin:
                found.append(f"layer class {name} (not a built-in Keras layer)")
            elif name in _TF_OP_LAYERS:
                fn = cfg.get("function") if isinstance(cfg, dict) else None
                if not (
                    isinstance(fn, str) and (fn in _TF_OP_NAMES or fn.startswith(_TF_OP_PREFIXES))
                ):
                    found.append(f"TensorFlow call {fn!r} (not a math or array function)")
    return list(dict.fromkeys(found))


def _refuse_code(p: Path, config: dict, builtin: set[str] | None) -> None:
    try:
        found = model_code(config, builtin)
    except RecursionError:
        found = ["a config nested too deeply to check"]
    if found:
        raise UserError(f"{p}: has {', '.join(found[:3])}; {TRUST_HINT}")


# -- inspection -------------------------------------------------------------------------------


def check_model(model, param: str = "model") -> None:
    """UserError naming `param` unless `model` is a Keras model (None was an AttributeError
    deep inside); told by its classes' names, so TensorFlow is not imported for it."""
    mro = type(model).__mro__
    if not any(
        c.__name__ == "Model" and c.__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow")
        for c in mro
    ):
        raise UserError(
            f"must be a Keras model (load_keras gives one), got {type(model).__name__}",
            param=param,
        )


def check_scale(scale) -> tuple[float, float]:
    """`scale` as (lo, hi) floats; UserError naming it otherwise ("-1,1" was "TypeError:
    scale_to_mean_std() takes 2 positional arguments but 4 were given")."""
    if isinstance(scale, (str, bytes)) or not isinstance(scale, (tuple, list, np.ndarray)):
        hint = f" (parse_scale({scale!r}) reads that form)" if isinstance(scale, str) else ""
        raise UserError(f"must be a (lo, hi) pair of numbers, got {scale!r}{hint}", param="scale")
    try:
        lo, hi = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise UserError(
            f"must be a (lo, hi) pair of numbers, got {scale!r}", param="scale"
        ) from None
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise UserError(f"must be finite, got {scale!r}", param="scale")
    scale_to_mean_std(lo, hi)
    return lo, hi


def io_shape(model) -> tuple[int | None, int, int]:
    """(input side or None when free, channels, number of outputs) of a single-input
    NHWC image classifier; UserError otherwise."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(
            f"model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "an image classifier with one input and one output is needed"
        )
    ishape = tuple(model.inputs[0].shape)
    oshape = tuple(model.outputs[0].shape)
    if len(ishape) != 4:
        raise UserError(f"model input has shape {ishape}; expected (N, H, W, C) images")
    _, h, w, c = ishape
    if c not in (1, 3):
        raise UserError(
            f"model input has shape {ishape}: {c} channels; expected channels-last (NHWC) "
            "input with 1 (grayscale) or 3 channels"
        )
    if (h is None) != (w is None) or (h is not None and h != w):
        raise UserError(f"model input is {h}x{w}; only square inputs are supported")
    if len(oshape) != 2 or oshape[1] is None:
        raise UserError(f"model output has shape {oshape}; expected (N, classes)")
    return (int(h) if h is not None else None), int(c), int(oshape[1])


def output_activation(model) -> str:
    """Name of the activation that produces the model's output ("softmax", "linear", ...)."""
    layer = model.layers[-1]
    inner = getattr(layer, "layer", layer)  # pruning / quantisation wrappers
    if type(inner).__name__ == "Softmax":
        return "softmax"
    act = getattr(inner, "activation", None)
    act = getattr(act, "activation", act)  # tfmot's QuantizeAwareActivation wraps the function
    if act is None:
        return "linear"
    return str(getattr(act, "__name__", act))


def ensure_probs(model, add_softmax: str = "auto"):
    """(model whose output is softmax probabilities, whether a Softmax layer was added).

    add_softmax: "auto" adds one when the last layer has no activation (logits) and keeps a
    softmax output; "yes" always adds one; "no" trusts the output as it is (the parity check
    still verifies the outputs sum to 1)."""
    if add_softmax not in ("auto", "yes", "no"):
        raise UserError(f"{add_softmax!r} is unknown; choose auto, yes or no", param="add_softmax")
    act = output_activation(model)
    if add_softmax == "no" or (add_softmax == "auto" and act == "softmax"):
        return model, False
    if add_softmax == "auto" and act != "linear":
        raise UserError(
            f"the model's output activation is {act!r}, not softmax; pass add_softmax='yes' "
            "(--add-softmax yes) to put a softmax on top of it anyway"
        )
    _, keras = _tf.tf_keras()
    out = keras.layers.Softmax(name="edge_fer_softmax")(model.outputs[0])
    wrapped = keras.Model(model.inputs, out, name=model.name)
    if hasattr(model, SOURCE_ATTR):
        setattr(wrapped, SOURCE_ATTR, getattr(model, SOURCE_ATTR))
    return wrapped, True


def count_params(model) -> int:
    """Weights of the model's layers as the torch zoo counts them (`edge_fer.models.model_info`:
    parameters, not batch-norm moving statistics; the shared mini-Xception has 56,951 of them
    plus 1,472 moving statistics). Pruning and quantisation wrapper variables are not counted."""
    _, keras = _tf.tf_keras()
    n = 0
    for layer in model.layers:
        if type(layer).__name__ == "QuantizeLayer":
            continue
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.Model):
            n += count_params(inner)
            continue
        # a wrapper reloaded from .h5 (QuantizeWrapperV2) holds its layer's kernel itself and
        # the layer none, so a wrapper's own variables are read, less its bookkeeping
        wrapped = inner is not layer
        names: set[str] = set()
        for w in layer.weights if wrapped else inner.weights:
            base = w.name.rsplit("/", 1)[-1].split(":")[0]
            if base in ("moving_mean", "moving_variance") or w.name in names:
                continue
            if wrapped and (base in _WRAPPER_VARS or base.endswith(("_min", "_max"))):
                continue
            names.add(w.name)
            n += int(np.prod(w.shape))
    return n


# tfmot's variables beside the wrapped layer's weights (quantizer ranges end in _min/_max)
_WRAPPER_VARS = ("optimizer_step", "pruning_step", "mask", "threshold")


def count_macs(model) -> int:
    """Multiply-accumulates of one face through the convolution and dense layers (what
    `edge_fer.models.model_info` counts for the torch zoo). 0 when the input size is free."""
    _, keras = _tf.tf_keras()
    total = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.Model):
            total += count_macs(inner)
            continue
        kind = type(inner).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense"):
            continue
        try:
            ins, outs = layer.input_shape, layer.output_shape
        except (AttributeError, RuntimeError):  # a layer used more than once
            continue
        if not isinstance(ins, tuple) or not isinstance(outs, tuple):
            continue
        if any(d is None for d in outs[1:]) or ins[-1] is None:
            return 0
        cin = int(ins[-1])
        if kind == "Dense":
            total += cin * int(np.prod(outs[1:]))
            continue
        oh, ow, oc = (int(d) for d in outs[1:4])
        kh, kw = (int(k) for k in inner.kernel_size)
        if kind == "Conv2D":
            total += oh * ow * oc * kh * kw * cin // int(getattr(inner, "groups", 1) or 1)
        elif kind == "DepthwiseConv2D":
            total += oh * ow * oc * kh * kw
        else:  # SeparableConv2D: depthwise then pointwise
            mid = cin * int(inner.depth_multiplier)
            total += oh * ow * mid * kh * kw + oh * ow * mid * oc
    return int(total)


def scale_to_mean_std(lo: float, hi: float) -> tuple[float, float]:
    """PreprocessSpec (mean, std) for a model that wants pixels scaled linearly to [lo, hi]."""
    if not hi > lo:
        raise UserError(f"scale range {lo:g},{hi:g} is empty; expected LO,HI with LO < HI")
    std = 1.0 / (hi - lo)
    return -lo * std, std


def parse_scale(text: str) -> tuple[float, float]:
    """ "LO,HI" -> (lo, hi), checked."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{text!r}: expected LO,HI such as -1,1 or 0,1", param="scale") from None
    scale_to_mean_std(lo, hi)
    return lo, hi


def parse_classes(text: str | None, n: int) -> tuple[str, ...]:
    """A named vocabulary (fer2013, affectnet8, ...) or comma-separated names; None: FER2013
    when the model has 7 outputs."""
    if text is None:
        if n == len(L.FER2013):
            return L.FER2013
        raise UserError(
            f"must name the model's {n} classes (only 7 outputs default to FER2013's)",
            param="classes",
        )
    if text.lower() in L.VOCABULARIES:
        names = L.vocabulary(text)
    else:
        names = tuple(L.canonical(c) for c in text.split(",") if c.strip())
    if len(names) != n:
        raise UserError(
            f"names {len(names)} classes but the model has {n} outputs", param="classes"
        )
    if len(set(names)) != len(names):
        raise UserError(f"repeats a class: {', '.join(names)}", param="classes")
    return tuple(names)


def keras_spec(
    model,
    classes: str | tuple[str, ...] | None = None,
    scale: tuple[float, float] = (-1.0, 1.0),
    input_size: int | None = None,
    crop_margin: float = 0.1,
    clahe: bool = False,
) -> PreprocessSpec:
    """The PreprocessSpec of a Keras classifier: its input size and channels, pixels scaled to
    `scale` (the shared mini-Xception: [-1, 1], i.e. mean 0.5 std 0.5), class names (default
    FER2013's order for 7 outputs)."""
    check_model(model)
    lo, hi = check_scale(scale)
    side, channels, n = io_shape(model)
    if side is None and input_size is None:
        raise UserError("must be given: the model accepts any input size", param="input_size")
    if side is not None and input_size is not None and input_size != side:
        raise UserError(f"{input_size} but the model's input is {side}x{side}", param="input_size")
    size = int(side or input_size)  # type: ignore[arg-type]
    if not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE:
        # before: a free-size model with --input-size 100000 asked TensorFlow for 1.15 TB and
        # the process died; a side the runtime's preprocessing refuses is refused here
        bounds = f"{MIN_INPUT_SIZE}..{MAX_INPUT_SIZE} px (a model's face side)"
        if side is None:
            raise UserError(f"{size} is outside {bounds}", param="input_size")
        raise UserError(f"the model's input is {size}x{size}, outside {bounds}")
    names = classes if isinstance(classes, tuple) else parse_classes(classes, n)
    if len(names) != n:
        raise UserError(f"{len(names)} class names for a model with {n} outputs")
    mean, std = scale_to_mean_std(lo, hi)
    if not 0 <= crop_margin <= 1:
        raise UserError(f"must be in 0..1, got {crop_margin}", param="crop_margin")
    return PreprocessSpec(
        input_size=size,
        channels=channels,
        clahe=bool(clahe),
        mean=float(mean),
        std=float(std),
        crop_margin=float(crop_margin),
        classes=tuple(names),
    )


# -- conversion -------------------------------------------------------------------------------


def keras_to_onnx(
    model,
    out: str | os.PathLike,
    spec: PreprocessSpec,
    *,
    source: str | os.PathLike | None = None,
    name: str | None = None,
    opset: int = 17,
    add_softmax: str = "auto",
    check: bool = True,
    check_faces: np.ndarray | None = None,
    check_data: str | None = None,
    check_source: str | None = None,
    compression: dict | None = None,
    stats_model=None,
) -> dict:
    """Convert a Keras classifier to `out` (.onnx) for the edge-fer runtime; returns a report.

    source: the Keras file the model came from (default: the one `load_keras` loaded), for the
    provenance (its sha256) and the arch name "keras:<file stem>" (`name` overrides it).
    check: ONNX checker plus Keras vs ONNX Runtime parity on real faces (`check_faces`, uint8
    (N, H, W), or an even sample of `check_data`'s validation split; random images with a
    warning when neither is given; `check_source` describes given faces): FP32 max |dp| <= 1e-4; a quantised (Q/DQ) graph at least
    90% top-1 agreement and |dp| <= 0.25. On any failure UserError and nothing is written.
    compression: what was done to the model (prune / qat report), kept in the provenance.
    stats_model: count params and MACs on this model instead (the float model of a QAT one).
    """
    # the arguments before TensorFlow starts: None was an AttributeError deep inside
    check_model(model)
    if not isinstance(spec, PreprocessSpec):
        raise UserError(
            f"must be a PreprocessSpec (keras_spec gives one), got {type(spec).__name__}",
            param="spec",
        )
    if not isinstance(out, (str, os.PathLike)):
        raise UserError(f"must be a file name, got {type(out).__name__}", param="out")
    if check_faces is not None:
        _check_faces(check_faces)
    _tf.tf_keras()
    t2o = _tf.tf2onnx()
    import onnx

    check_opset(opset)
    check_io(model, spec)
    model, softmax_added = ensure_probs(model, add_softmax)
    src = Path(source) if source is not None else _source_of(model)
    arch_name = name or (src.stem if src is not None else model.name)
    out_p = Path(out)
    try:
        out_p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out_p.parent}: cannot create ({exc.strerror or exc})") from None
    proto = _convert(t2o, model, spec, int(opset))
    quantized = any(nd.op_type == "QuantizeLinear" for nd in proto.graph.node)
    stats = stats_model if stats_model is not None else model
    params, macs = count_params(stats), count_macs(stats)
    meta = build_keras_metadata(
        spec, arch_name, params, macs, src, int(opset), compression, softmax_added
    )
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "edge-fer"
    proto.producer_version = __version__
    c, s = spec.channels, spec.input_size
    proto.doc_string = (
        f"edge-fer {meta['edge_fer.arch']} FER classifier (converted from Keras with "
        f"tf2onnx): input float32 (N,{c},{s},{s}) prepared by edge_fer.preprocess; output "
        f"softmax probs over {','.join(spec.classes)}"
    )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"the converted graph is not valid ONNX ({first_line(exc)})") from None
    raw = proto.SerializeToString()
    report: dict[str, Any] = {
        "out": str(out_p),
        "source": str(src) if src is not None else None,
        "arch": meta["edge_fer.arch"],
        "classes": list(spec.classes),
        "input": [c, s, s],
        "opset": int(opset),
        "converter": f"tf2onnx {t2o.__version__}",
        "params": params,
        "macs": macs,
        "softmax_added": softmax_added,
        "quantized_qdq": quantized,
    }
    if compression:
        report["compression"] = compression
    if check:  # ONNX Runtime reads a file: a private copy, away from the output's folder
        with tempfile.TemporaryDirectory(prefix="edge-fer-keras-") as tmp_dir:
            tmp = Path(tmp_dir) / "model.onnx"
            tmp.write_bytes(raw)
            report.update(
                _parity(model, tmp, spec, check_faces, check_data, quantized, check_source)
            )
    try:
        write_bytes(out_p, raw)
    except OSError as exc:
        raise UserError(f"{out_p}: cannot write ({os_error_reason(exc)})") from None
    report["bytes"] = len(raw)
    report["gzip_bytes"] = len(gzip.compress(raw, 9))
    return report


def check_opset(opset: int) -> None:
    """tf2onnx writes opsets 13..21; checked before any fine-tuning, not after it."""
    if not 13 <= int(opset) <= 21:
        raise UserError(f"{opset} is outside 13..21 (what tf2onnx writes)", param="opset")


def _convert(t2o, model, spec: PreprocessSpec, opset: int):
    tf, _ = _tf.tf_keras()
    s, c = spec.input_size, spec.channels
    sig = (tf.TensorSpec((None, s, s, c), tf.float32, name="input"),)
    with reported("tf2onnx cannot convert this model"):  # tf2onnx raises anything
        proto, _ = t2o.convert.from_keras(
            model, input_signature=sig, opset=opset, inputs_as_nchw=["input"]
        )
    _reject_unconverted(proto, opset)
    g = proto.graph
    if len(g.input) != 1 or len(g.output) != 1:
        raise UserError(
            f"the converted graph has {len(g.input)} inputs and {len(g.output)} outputs"
        )
    _rename_value(g, g.output[0].name, "probs")
    for vi in (g.input[0], g.output[0]):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    got = [d.dim_value or d.dim_param for d in g.input[0].type.tensor_type.shape.dim]
    if g.input[0].name != "input" or got[1:] != [c, s, s]:
        raise UserError(f"the converted graph's input is {g.input[0].name} {got}, not NCHW")
    return proto


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and len(attr.g.node):
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def _reject_unconverted(proto, opset: int) -> None:
    """tf2onnx keeps a TensorFlow op it has no handler for as a node of that name; such a
    graph cannot run. Name the ops (and a layer that uses them) instead of writing it."""
    import onnx

    bad: dict[str, str] = {}
    for node in _all_nodes(proto.graph):
        dom = node.domain or ""
        if dom in ("", "ai.onnx"):
            try:
                onnx.defs.get_schema(node.op_type, opset, "")
                continue
            except Exception:  # noqa: BLE001, S110 - SchemaError: no such op at this opset
                pass
        elif dom in ("com.microsoft", "ai.onnx.ml"):
            continue
        bad.setdefault(
            node.op_type if dom in ("", "ai.onnx") else f"{dom}:{node.op_type}", node.name
        )
    if bad:
        ops = ", ".join(f"{op} (at {where})" for op, where in sorted(bad.items()))
        raise UserError(
            f"tf2onnx cannot convert operator(s) {ops} to ONNX opset {opset}; nothing was "
            "written (rewrite that part of the model with standard layers, or try another "
            "--opset)"
        )


def _rename_value(graph, old: str, new: str) -> None:
    if old == new:
        return
    for node in _all_nodes(graph):
        for i, v in enumerate(node.output):
            if v == old:
                node.output[i] = new
        for i, v in enumerate(node.input):
            if v == old:
                node.input[i] = new
    for coll in (graph.output, graph.value_info):
        for vi in coll:
            if vi.name == old:
                vi.name = new


def _source_of(model) -> Path | None:
    s = getattr(model, SOURCE_ATTR, None)
    return Path(s) if s else None


def build_keras_metadata(
    spec: PreprocessSpec,
    name: str,
    params: int,
    macs: int,
    source: Path | None,
    opset: int,
    compression: dict | None = None,
    softmax_added: bool = False,
) -> dict[str, str]:
    """The metadata keys of `edge_fer.export.onnx.build_metadata`, for a Keras model."""
    hashable = source is not None and source.is_file()
    provenance: dict[str, Any] = {
        "framework": "keras",
        "checkpoint": source.name if source is not None else None,
        "checkpoint_sha256": sha256_file(source) if hashable else None,
        "config": {"source": "keras", "opset": opset, "softmax_added": softmax_added},
        "seed": (compression or {}).get("seed"),
        "best_epoch": None,
        "val_acc": None,
        "val_split": None,
        "epochs_run": (compression or {}).get("epochs"),
        "compression": compression,
        "exported_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    provenance.update(_tf.versions())
    meta = dict(spec.to_metadata())
    meta.update(
        {
            "edge_fer.arch": f"keras:{name}",
            "edge_fer.arch_kwargs": json.dumps({}),
            "edge_fer.params": str(int(params)),
            "edge_fer.macs": str(int(macs)),
            "edge_fer.tta": "none",
            "edge_fer.output": "probs",
            "edge_fer.provenance": json.dumps(provenance),
            "edge_fer.version": __version__,
        }
    )
    return meta


def check_io(model, spec: PreprocessSpec) -> None:
    """The model's input and output must fit the preprocessing and the class names."""
    side, channels, n = io_shape(model)
    if channels != spec.channels or (side is not None and side != spec.input_size):
        raise UserError(
            f"the model takes {side or 'any'}x{side or 'any'}x{channels} input but the "
            f"preprocessing makes {spec.input_size}x{spec.input_size}x{spec.channels}"
        )
    if n != len(spec.classes):
        raise UserError(f"the model has {n} outputs but {len(spec.classes)} class names")


def _check_faces(faces) -> None:
    """`check_faces` must hold faces: an empty array was "ValueError: need at least one array
    to concatenate" after the conversion."""
    if isinstance(faces, np.ndarray):
        if faces.ndim not in (3, 4) or faces.dtype != np.uint8:
            raise UserError(
                f"must be uint8 faces (N, H, W) or (N, H, W, 3), got {faces.dtype} of shape "
                f"{faces.shape}",
                param="check_faces",
            )
    elif not isinstance(faces, (list, tuple)):
        raise UserError(
            f"must be uint8 faces (N, H, W), got {type(faces).__name__}", param="check_faces"
        )
    if len(faces) == 0:
        raise UserError(
            "holds no face: give at least one (or None to sample check_data)",
            param="check_faces",
        )


def check_faces_from(spec: PreprocessSpec, data: str | None, n: int = 64):
    """(uint8 faces, description) for the parity check: an even sample of `data` (its
    public-test split for FER2013, else all), or random images when no data is given."""
    from edge_fer.export.onnx import random_faces, sample_faces

    if data is not None:
        return sample_faces(data, spec.input_size, n)
    return random_faces(spec.input_size, n), "random images (no --check-data given)"


def predict_keras(model, x_nchw: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Keras model outputs (inference mode) for prepared NCHW input."""
    x = np.ascontiguousarray(np.transpose(x_nchw, (0, 2, 3, 1)))
    out = [
        np.asarray(model(x[i : i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out).astype(np.float32)


def _parity(model, path: Path, spec, faces, data, quantized: bool, source=None) -> dict:
    from edge_fer.backends.onnxruntime_backend import OnnxRuntimeBackend

    if faces is None:
        faces, source = check_faces_from(spec, data)
    else:
        source = source or f"{len(faces)} given faces"
    if source.startswith("random"):
        print(f"edge-fer keras: warning: parity checked on {source}", file=sys.stderr)
    x = spec.prepare(faces)
    ref = predict_keras(model, x)
    with OnnxRuntimeBackend(path, threads=1) as be:
        got, one = be.infer(x), be.infer(x[:1])  # one face: the batch axis must be dynamic
    if got.shape != ref.shape:
        raise UserError(f"ONNX Runtime outputs {got.shape}, Keras {ref.shape}")
    sums = float(np.abs(got.sum(1) - 1.0).max())
    if not sums <= PROB_SUM_TOL:
        raise UserError(
            f"the model's outputs are not probabilities (rows sum to 1 +- {sums:.3g}); "
            "pass --add-softmax yes if it outputs logits"
        )
    diff = float(max(np.abs(got - ref).max(), np.abs(one - ref[:1]).max()))
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    if quantized:
        ok = diff <= QDQ_TOL and agree >= QDQ_MIN_AGREEMENT
        rule = f"|dp| <= {QDQ_TOL:g} and top-1 agreement >= {QDQ_MIN_AGREEMENT:g}"
    else:
        ok = diff <= PARITY_TOL
        rule = f"|dp| <= {PARITY_TOL:g}"
    if not ok:
        raise UserError(
            f"parity check failed: ONNX Runtime and Keras differ by {diff:.3g} (top-1 "
            f"agreement {agree:.3f}; needed {rule}) on {source}"
        )
    return {
        "parity_max_abs_diff": diff,
        "parity_top1_agreement": agree,
        "parity_rule": rule,
        "parity_faces": source,
    }
