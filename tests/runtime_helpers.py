"""Shared pieces of the runtime tests: a tiny real ONNX classifier, JSONL and frame counts
(paths, and `shared` for ../shared, come from paths.py)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from paths import FACEFINDER, ROOT, SHARED, VIDEOS, shared  # noqa: F401 (re-exported)

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


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
        nodes,
        "tiny_fer",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 48, 48])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 7])],
        initializer=[w, b, shape],
    )
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


def lowres_detector(**settings):
    """A Detector on the bundled low-resolution cascade with its grouping (greedy, IoU 0.15)
    on one thread; `settings`: the rest of Detector's keywords."""
    from edge_fer.detect import Cascade, Detector, lowres_cascade_path

    cascade = Cascade.load(lowres_cascade_path())
    return Detector(cascade, grouping="greedy", iou=0.15, threads=1, **settings)


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


def feed_frames(write, shape: tuple[int, ...], interval: float = 0.02):
    """A daemon thread writing frames of rising grey level through `write` every `interval` s
    until the returned Event is set; returns (stop, thread)."""
    stop = threading.Event()

    def feed():
        i = 0
        while not stop.is_set():
            write(np.full(shape, i % 255, np.uint8))
            i += 1
            time.sleep(interval)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    return stop, t


def mjpg_avi(path: Path, n: int = 40) -> Path:
    """A real MJPG .avi of `n` 160x120 frames (a pulsing red disc on a brightening ground)."""
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 20, (160, 120))
    for i in range(n):
        f = np.full((120, 160, 3), i * 5, np.uint8)
        cv2.circle(f, (80, 60), 20 + i % 10, (0, 0, 255), -1)
        w.write(f)
    w.release()
    return path


def plain_clip(
    path: Path, size: tuple[int, int], n: int, fourcc: str = "MJPG", fps: float = 20
) -> Path:
    """A real clip of `n` flat frames of `size` (w, h), each a shade brighter than the last."""
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, size)
    assert w.isOpened(), f"no {fourcc} writer for {size[0]}x{size[1]}"
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), 40 * i % 256, np.uint8))
    w.release()
    return path


def gray_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video as OpenCV decodes it, in grayscale."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while (f := cap.read()[1]) is not None:
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    cap.release()
    return frames


def demo_faces_clip(path: Path, frames: int, size=(320, 240), fps: float = 25.0) -> Path:
    """A clip of the demo portraits (two faces), made with cv2.VideoWriter."""
    pytest.importorskip("matplotlib", reason="the demo portrait comes from matplotlib")
    from edge_fer.runtime.demo import demo_frames, load_face_photo

    photo, _ = load_face_photo()
    distinct = list(demo_frames(photo, size=size, fps=fps, seconds=2.0))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert w.isOpened()
    for i in range(frames):
        w.write(distinct[i % len(distinct)])
    w.release()
    return path
