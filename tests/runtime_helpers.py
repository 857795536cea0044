"""Shared pieces of the runtime tests: ../shared paths and a tiny real ONNX classifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VIDEOS = SHARED / "data" / "videos"
FACEFINDER = SHARED / "reference" / "pico" / "facefinder"
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def shared(rel: str) -> Path:
    """A path under ../shared, or skip the test with the reason."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"needs ../shared/{rel} (the shared data folder is not beside this checkout)")
    return p


def make_tiny_model(path: Path, seed: int = 0) -> Path:
    """A real ONNX FER classifier (48x48 gray -> 7 softmax probs) with edge-fer metadata.

    Average-pool to 8x8, a dense layer with fixed random weights, softmax: what `edge-fer
    export` produces in shape and metadata, built with onnx.helper so no torch is needed.
    """
    onnx = pytest.importorskip("onnx", reason="building the test model needs onnx (train extra)")
    from onnx import TensorProto, helper, numpy_helper

    from edge_fer.preprocess import PreprocessSpec

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (64, 7)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(7, np.float32), "b")
    shape = numpy_helper.from_array(np.array([-1, 64], np.int64), "shape")
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[6, 6], strides=[6, 6]),
        helper.make_node("Reshape", ["pooled", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_fer",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 48, 48])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 7])],
        initializer=[w, b, shape],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec = PreprocessSpec(input_size=48, channels=1, crop_margin=0.1, classes=CLASSES)
    meta = dict(spec.to_metadata())
    meta["edge_fer.arch"] = "tiny-test"
    for k, v in meta.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def read_jsonl(path: Path) -> list[dict]:
    """Every line must be one complete JSON object (raises otherwise)."""
    text = Path(path).read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), "events file does not end on a complete line"
    return [json.loads(line) for line in text.splitlines()]


def count_frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not decode"
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n
