"""Lazy, configured imports of TensorFlow, tf-keras, tf2onnx and tensorflow-model-optimization.

Nothing else in edge-fer imports TensorFlow: only the functions of `edge_fer.keras_import`
call these, at the moment they need them. Before the first import this sets (unless the
caller already set them):

- `TF_USE_LEGACY_KERAS=1`: `tf.keras` is Keras 2 (the `tf-keras` package), which is what
  HDF5 classifiers, tensorflow-model-optimization and tf2onnx's `from_keras` work with.
- `TF_ENABLE_ONEDNN_OPTS=0`: TensorFlow 2.21's oneDNN CPU kernels crash (segmentation fault)
  when training a 1x1 stride-2 convolution on an even-sized input, which every Xception-style
  residual shortcut has (the shared mini-Xception included). Inference is unaffected either
  way; training (prune, QAT) needs it off.
- `TF_CPP_MIN_LOG_LEVEL=2`: TensorFlow's C++ info and warning lines are noise here.

TensorFlow 2.16+ logs through absl before that variable takes effect ("All log messages before
absl::InitializeLog() ...", "Could not find cuda drivers", "failed call to cuInit" on a machine
without a GPU): `native_noise_filtered` drops those lines from the process's stderr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator

from edge_fer.errors import UserError

EXTRA_HINT = "needs the keras extra: python3 -m pip install '.[keras]' in the edge-fer checkout"

_ENV_DEFAULTS = {
    "TF_USE_LEGACY_KERAS": "1",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def _missing(what: str, exc: BaseException) -> UserError:
    return UserError(f"{EXTRA_HINT} ({what} cannot be imported: {exc})")


def tf_keras():
    """-> (tensorflow, tf_keras) modules, or UserError naming the extra."""
    if "tensorflow" not in sys.modules:
        for k, v in _ENV_DEFAULTS.items():
            os.environ.setdefault(k, v)
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise _missing("tensorflow", exc) from None
    try:
        import tf_keras as keras
    except ImportError as exc:
        raise _missing("tf_keras", exc) from None
    tf.get_logger().setLevel(logging.ERROR)
    return tf, keras


def tf2onnx():
    tf_keras()
    try:
        import tf2onnx as t2o
    except ImportError as exc:
        raise _missing("tf2onnx", exc) from None
    for name in ("tf2onnx", "tf2onnx.tfonnx", "tf2onnx.optimizer", "tf2onnx.shape_inference"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return t2o


def tfmot():
    tf_keras()
    try:
        import tensorflow_model_optimization as mot
    except ImportError as exc:
        raise _missing("tensorflow_model_optimization", exc) from None
    return mot


def set_threads(threads: int | None) -> None:
    """TensorFlow intra-op threads (None/0: TensorFlow's default); inter-op set to 1 with it.
    Only possible before TensorFlow runs its first op; later calls are ignored."""
    if not threads:
        return
    tf, _ = tf_keras()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # the runtime is already initialised: keep what it has
        pass


def versions() -> dict[str, str]:
    """Versions of the keras-extra packages that are importable (for provenance)."""
    out: dict[str, str] = {}
    for mod, key in (
        ("tensorflow", "tensorflow"),
        ("tf_keras", "tf_keras"),
        ("tf2onnx", "tf2onnx"),
        ("tensorflow_model_optimization", "tensorflow_model_optimization"),
    ):
        m = sys.modules.get(mod)
        if m is not None:
            out[key] = str(getattr(m, "__version__", "?"))
    return out


# absl's C++ log lines (I1204 10:15:42.123456  1348 file.cc:31] ...) at info or warning level,
# CUDA's at any level (no GPU is used), and the continuation of cpu_feature_guard's
_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IW]\d{4} [\d:. ]+\d+ [\w.]+\.cc:\d+\]"
    rb"|[EF]\d{4} [\d:. ]+\d+ cud\w*\.cc:\d+\]"
    rb"|To enable the following instructions: )"
)


@contextlib.contextmanager
def native_noise_filtered() -> Iterator[None]:
    """Pass everything written to file descriptor 2 inside (Python's and native code's) on to
    the real stderr, except TensorFlow's start-up noise (`_NOISE`). Lines keep their order."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        yield
        return
    read_end, write_end = os.pipe()

    def forward() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not _NOISE.match(line):
                    with contextlib.suppress(OSError):
                        os.write(saved, line)

    pump = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    pump.start()
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer is gone: the pump reads to its end
        pump.join(timeout=5)
        os.close(saved)
