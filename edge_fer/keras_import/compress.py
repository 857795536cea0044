"""Compress a Keras classifier with tensorflow-model-optimization (tfmot), then convert it.

- `prune_keras`: magnitude pruning (`prune_low_magnitude` with a polynomial sparsity schedule,
  the `UpdatePruningStep` callback) while fine-tuning on labelled faces, then `strip_pruning`:
  an ordinary Keras model whose pruned kernels hold zeros.
- `quantize_keras`: quantisation-aware training (`quantize_model`, 8-bit default scheme),
  fine-tuned on labelled faces. tf2onnx turns its fake-quantisation into ONNX
  QuantizeLinear/DequantizeLinear pairs (a Q/DQ model that ONNX Runtime runs in int8).

Both take the faces as a dataset path (FER2013 folders or csv: its Training split; other
layouts: all images) or as `(images uint8 (N, H, W), labels)` arrays in the model's class
order, and prepare them exactly as the runtime does (`PreprocessSpec.prepare`).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_fer import labels as L
from edge_fer.errors import UserError
from edge_fer.fileio import first_line
from edge_fer.keras_import import _tf
from edge_fer.keras_import.convert import SOURCE_ATTR, check_io, ensure_probs
from edge_fer.preprocess import PreprocessSpec

PRUNABLE = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense")


def training_arrays(
    data, spec: PreprocessSpec, split: str = "train", limit: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, str]:
    """(x NHWC float32, y int64 in spec.classes order, description) for fine-tuning."""
    if isinstance(data, (str, os.PathLike)):
        from edge_fer.data import load_dataset
        from edge_fer.data.loaders import detect_layout

        path = Path(data)
        if not path.exists():
            raise UserError(f"{path}: no such dataset")
        layout = detect_layout(path)
        split = split if layout.startswith("fer2013") else "all"
        fs = load_dataset(path, split, size=spec.input_size, layout=layout)
        idx_map = np.array(L.index_map(tuple(fs.classes), tuple(spec.classes)), np.int64)
        images, labels = fs.images, idx_map[fs.labels]
        desc = f"{path} ({split})"
    else:
        try:
            images, labels = data
        except (TypeError, ValueError):
            raise UserError(
                f"must be a dataset path or (images, labels), got {type(data).__name__}",
                param="data",
            ) from None
        images, labels = np.asarray(images), np.asarray(labels, np.int64)
        if len(images) != len(labels):
            raise UserError(f"holds {len(images)} images but {len(labels)} labels", param="data")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(spec.classes)):
            raise UserError(
                f"holds labels outside 0..{len(spec.classes) - 1} (the model's classes): "
                f"{labels.min()}..{labels.max()}",
                param="data",
            )
        desc = "given arrays"
    keep = labels >= 0
    dropped = int((~keep).sum())
    images, labels = images[keep], labels[keep]
    if len(labels) == 0:
        raise UserError(f"no faces of the model's classes ({', '.join(spec.classes)}) in {desc}")
    if limit is not None:
        if limit < 1:
            raise UserError("must be at least 1", param="limit")
        if limit < len(labels):
            pick = np.sort(np.random.default_rng(seed).choice(len(labels), limit, replace=False))
            images, labels = images[pick], labels[pick]
    x = np.ascontiguousarray(np.transpose(spec.prepare(images), (0, 2, 3, 1)))
    desc += f", {len(labels)} faces" + (f", {dropped} of other classes dropped" if dropped else "")
    return x, labels.astype(np.int64), desc


def _prepare_model(model, spec: PreprocessSpec, add_softmax: str):
    check_io(model, spec)
    model, _ = ensure_probs(model, add_softmax)
    return model


def _clone(model, rename: str | None = None):
    """A copy of a functional/sequential model with the same weights; `rename` prefixes every
    layer name. (tfmot's layout transforms give the layers they create Keras's automatic names,
    `conv2d`, `conv2d_1`, ...; a model saved by another session already has layers of those
    names, and the clash rewires the graph: prefixing the names avoids it.)"""
    _, keras = _tf.tf_keras()
    if rename is None:
        clone = keras.models.clone_model(model)
    else:
        cfg = model.get_config()
        names = {layer.name for layer in model.layers}

        def fix(o):
            if isinstance(o, dict):
                return {k: fix(v) for k, v in o.items()}
            if isinstance(o, list):
                return [fix(v) for v in o]
            if isinstance(o, str) and o in names:
                return rename + o
            return o

        try:
            clone = model.__class__.from_config(fix(cfg))
        except Exception as exc:  # noqa: BLE001
            raise UserError(
                "quantisation needs to rebuild the model from its config and cannot "
                f"({first_line(exc)})"
            ) from None
    clone.set_weights(model.get_weights())
    if hasattr(model, SOURCE_ATTR):
        setattr(clone, SOURCE_ATTR, getattr(model, SOURCE_ATTR))
    return clone


def _freeze_bn(model) -> int:
    _, keras = _tf.tf_keras()
    n = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # tf-keras: a frozen batch norm also runs in inference mode
            n += 1
    return n


def _fit(model, x, y, epochs, batch_size, lr, callbacks, verbose, seed) -> dict:
    _, keras = _tf.tf_keras()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    t0 = time.perf_counter()
    hist = model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        callbacks=callbacks,
        verbose=verbose,
    )
    h = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    return {"history": h, "train_seconds": round(time.perf_counter() - t0, 1)}


def check_training_args(epochs: int, batch_size: int, lr: float, seed: int) -> None:
    """The fine-tuning settings, checked before the data is read or the model trained."""
    if epochs < 1:
        raise UserError("must be at least 1", param="epochs")
    if batch_size < 1:
        raise UserError("must be at least 1", param="batch_size")
    if not 0 < lr < math.inf:  # inf trained to NaN weights and converted them
        raise UserError(f"must be a positive number, got {lr}", param="lr")
    # numpy and TensorFlow seeds are 32-bit: -1 or 2**32 raised from inside TensorFlow
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (0 <= seed < 2**32):
        raise UserError(f"must be an integer in 0..{2**32 - 1}, got {seed!r}", param="seed")


def prune_keras(
    model,
    data,
    spec: PreprocessSpec,
    target_sparsity: float = 0.5,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 1e-4,
    limit: int | None = None,
    seed: int = 0,
    freeze_bn: bool = False,
    add_softmax: str = "auto",
    verbose: int = 0,
) -> tuple[Any, dict]:
    """Prune the prunable kernels (conv, depthwise, separable pointwise, dense) of `model` to
    `target_sparsity` while fine-tuning on `data`; returns (stripped Keras model, report).

    The sparsity rises polynomially from 0 over the first three quarters of the steps and the
    last quarter fine-tunes at the target. `model` itself is left unchanged.
    """
    _, keras = _tf.tf_keras()
    mot = _tf.tfmot()
    if not 0.0 < float(target_sparsity) < 1.0:
        raise UserError(
            f"must lie strictly between 0 and 1, got {target_sparsity}", param="target_sparsity"
        )
    check_training_args(epochs, batch_size, lr, seed)
    model = _prepare_model(model, spec, add_softmax)
    x, y, desc = training_arrays(data, spec, limit=limit, seed=seed)
    keras.utils.set_random_seed(int(seed))
    steps = math.ceil(len(y) / batch_size) * epochs
    freq = max(1, min(100, steps // 10))
    end = max(freq, (int(steps * 0.75) // freq) * freq)
    schedule = mot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=float(target_sparsity),
        begin_step=0,
        end_step=end,
        frequency=freq,
    )
    base = _clone(model)
    frozen = _freeze_bn(base) if freeze_bn else 0
    try:
        pruned = mot.sparsity.keras.prune_low_magnitude(base, pruning_schedule=schedule)
    except Exception as exc:  # noqa: BLE001
        raise UserError(
            f"tensorflow-model-optimization cannot prune this model ({first_line(exc)})"
        ) from None
    fit = _fit(
        pruned,
        x,
        y,
        epochs,
        batch_size,
        lr,
        [mot.sparsity.keras.UpdatePruningStep()],
        verbose,
        seed,
    )
    zeros = total = 0
    per_layer = {}
    for layer in pruned.layers:
        inner = getattr(layer, "layer", None)
        if inner is None or not hasattr(inner, "get_prunable_weights"):
            continue
        for w in inner.get_prunable_weights():
            v = np.asarray(w)
            z = int((v == 0).sum())
            zeros, total = zeros + z, total + v.size
            per_layer[inner.name] = round(z / max(v.size, 1), 4)
    stripped = mot.sparsity.keras.strip_pruning(pruned)
    if hasattr(model, SOURCE_ATTR):
        setattr(stripped, SOURCE_ATTR, getattr(model, SOURCE_ATTR))
    report = {
        "method": "prune_low_magnitude",
        "target_sparsity": float(target_sparsity),
        "sparsity": round(zeros / max(total, 1), 4),
        "pruned_weights": int(total),
        "zero_weights": int(zeros),
        "per_layer_sparsity": per_layer,
        "schedule": {"kind": "polynomial", "begin_step": 0, "end_step": end, "frequency": freq},
        "epochs": int(epochs),
        "steps": int(steps),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "seed": int(seed),
        "frozen_batchnorms": frozen,
        "train_data": desc,
        "tfmot": getattr(mot, "__version__", "?"),
        **fit,
    }
    return stripped, report


def quantize_keras(
    model,
    data,
    spec: PreprocessSpec,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 1e-5,
    limit: int | None = None,
    seed: int = 0,
    add_softmax: str = "auto",
    verbose: int = 0,
) -> tuple[Any, dict]:
    """Quantisation-aware training with tfmot's default 8-bit scheme; returns (QAT Keras
    model, report). Convert the result with `keras_to_onnx(..., stats_model=model)`: tf2onnx
    writes its fake-quantisation as QuantizeLinear/DequantizeLinear.

    First the whole model (`quantize_model`); when tfmot rejects a layer, only the layers its
    8-bit registry supports are annotated (`quantize_annotate_layer`) and the rest stays float
    (the report says which). When even that fails: UserError.
    """
    _, keras = _tf.tf_keras()
    mot = _tf.tfmot()
    check_training_args(epochs, batch_size, lr, seed)
    model = _prepare_model(model, spec, add_softmax)
    x, y, desc = training_arrays(data, spec, limit=limit, seed=seed)
    keras.utils.set_random_seed(int(seed))
    base = _clone(model, rename="src_")
    qk = mot.quantization.keras
    float_layers: list[str] = []
    try:
        q = qk.quantize_model(base)
        mode = "quantize_model"
    except Exception as exc:  # noqa: BLE001 - tfmot raises ValueError/RuntimeError/...
        first = first_line(exc)
        try:
            q, float_layers = _quantize_supported(keras, qk, base)
            mode = "quantize_annotate_layer (supported layers only)"
        except Exception as exc2:  # noqa: BLE001
            raise UserError(
                "tensorflow-model-optimization cannot quantize this model "
                f"(quantize_model: {first}; supported layers only: {first_line(exc2)})"
            ) from None
    fit = _fit(q, x, y, epochs, batch_size, lr, [], verbose, seed)
    if hasattr(model, SOURCE_ATTR):
        setattr(q, SOURCE_ATTR, getattr(model, SOURCE_ATTR))
    report = {
        "method": "quantize_model (QAT, 8-bit default scheme)",
        "mode": mode,
        "float_layers": float_layers,
        "epochs": int(epochs),
        "steps": int(math.ceil(len(y) / batch_size) * epochs),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "seed": int(seed),
        "train_data": desc,
        "tfmot": getattr(mot, "__version__", "?"),
        **fit,
    }
    return q, report


def _quantize_supported(keras, qk, model):
    registry = qk.default_8bit.Default8BitQuantizeScheme().get_quantize_registry()
    skipped: list[str] = []

    def clone_fn(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        if registry.supports(layer):
            return qk.quantize_annotate_layer(fresh)
        if not isinstance(layer, keras.layers.InputLayer):
            skipped.append(layer.name)
        return fresh

    annotated = keras.models.clone_model(model, clone_function=clone_fn)
    annotated.set_weights(model.get_weights())
    with qk.quantize_scope():
        q = qk.quantize_apply(annotated)
    return q, skipped
