"""Keras classifiers into the edge-fer flow (needs the `keras` extra).

    from edge_fer.keras_import import load_keras, keras_spec, keras_to_onnx, prune_keras
    model = load_keras("fer2013_mini_XCEPTION.102-0.66.hdf5")      # HDF5, .keras, SavedModel
    spec = keras_spec(model, scale=(-1, 1))                          # 64x64 gray, FER2013 classes
    keras_to_onnx(model, "mini_xception.onnx", spec, check_data="FER2013_DIR")
    pruned, rep = prune_keras(model, "FER2013_DIR", spec, target_sparsity=0.5, epochs=1)
    keras_to_onnx(pruned, "pruned.onnx", spec, compression=rep, check_data="FER2013_DIR")

The ONNX files are ordinary edge-fer models (NCHW "input", softmax "probs", PreprocessSpec and
provenance metadata): `edge-fer eval/classify/run` and the TensorRT build take them as they
take the output of `edge-fer export`.

TensorFlow, tf-keras, tf2onnx and tensorflow-model-optimization are imported only when one of
these functions runs (see `_tf`); importing this package imports none of them.
"""

from edge_fer.keras_import.compress import prune_keras, quantize_keras, training_arrays
from edge_fer.keras_import.convert import (
    count_macs,
    count_params,
    keras_spec,
    keras_to_onnx,
    load_keras,
    parse_classes,
    parse_scale,
)

__all__ = [
    "count_macs",
    "count_params",
    "keras_spec",
    "keras_to_onnx",
    "load_keras",
    "parse_classes",
    "parse_scale",
    "prune_keras",
    "quantize_keras",
    "training_arrays",
]
