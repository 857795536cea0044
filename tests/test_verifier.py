"""The face verifier behind the low-resolution cascade: crops, box offsets, de-duplication, the
bundled ONNX model on real faces and scenes, its place in `edge-fer run`, and its training tools."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from paths import ASSETS, VERIFIER, shared
from runtime_helpers import lowres_detector

from edge_fer.detect.verifier import (
    Verifier,
    apply_offsets,
    crop_windows,
    nms,
    normalize,
    offsets_to,
)


def test_crops_centre_on_the_box_and_replicate_edges():
    g = np.tile(np.arange(100, dtype=np.uint8), (80, 1))  # value = column
    c = crop_windows(g, np.array([[40.0, 50.0, 20.0]]), context=1.0, size=20)
    assert c.shape == (1, 20, 20) and c[0, 0, 0] == 40 and c[0, 0, -1] == 59
    # a box past the left edge: the missing columns repeat column 0
    c = crop_windows(g, np.array([[40.0, 5.0, 20.0]]), context=1.0, size=20)
    assert (c[0, :, :5] == 0).all() and c[0, 0, 6] == 1
    # wholly outside the frame: a flat crop, no error
    assert (crop_windows(g, np.array([[500.0, 500.0, 10.0]]))[0] == 0).all()
    assert crop_windows(g, np.zeros((0, 4))).shape == (0, 32, 32)
    x = normalize(np.stack([np.full((32, 32), 200, np.uint8), g[:32, :32]]))
    assert x.shape == (2, 1, 32, 32) and np.allclose(x[0], 0)  # a flat wall stays flat
    assert abs(float(x[1].mean())) < 1e-4


def test_offsets_round_trip_and_nms_keeps_the_best_of_each_face():
    rng = np.random.default_rng(0)
    a = np.column_stack([rng.uniform(20, 80, 5), rng.uniform(20, 80, 5), rng.uniform(10, 40, 5)])
    b = np.column_stack(
        [rng.uniform(20, 80, 5), rng.uniform(20, 80, 5), a[:, 2] * rng.uniform(0.5, 2.0, 5)]
    )
    assert np.allclose(apply_offsets(a, offsets_to(a, b)), b)
    # a wild size offset is clipped: a box grows or shrinks by e at most
    assert np.isclose(apply_offsets(a[:1], np.array([[0.0, 0.0, 5.0]]))[0, 2], a[0, 2] * np.e)
    d = np.array([[50, 50, 30, 5.0], [52, 51, 30, 9.0], [10, 10, 8, 1.0]])
    assert nms(d, 0.3).tolist() == [1, 2]


@pytest.fixture(scope="module")
def verifier():
    pytest.importorskip("onnxruntime")
    assert VERIFIER.is_file(), "the bundled face_verify.onnx is missing"
    return Verifier.load(VERIFIER)


def _webfaces_val(n: int):
    from edge_fer.cascade_train.annotations import read_webfaces, split_images

    root = shared("data/webfaces")
    return split_images(read_webfaces(root)[0], "val")[:n]


def test_bundled_verifier_accepts_held_out_faces_and_moves_shifted_boxes_back(verifier):
    """WebFaces validation faces (never trained on), downscaled as a 160x120 camera sees them:
    the annotated box scores as a face, and a box shifted up by a third of the face (a forehead
    detection) is moved back down towards the face."""
    probs, before, after = [], [], []
    for im in _webfaces_val(60):
        g = cv2.imread(str(im.path), cv2.IMREAD_GRAYSCALE)
        k = 200 / max(g.shape)
        g = cv2.resize(g, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        for f in im.faces:
            if f.size * k < 20:
                continue
            box = np.array([[f.row * k, f.col * k, f.size * k]])
            up = box + [[-f.size * k / 3, 0, 0]]
            p, _ = verifier(g, box)
            _, moved = verifier(g, up)
            probs.append(p[0])
            before.append(abs(up[0, 0] - box[0, 0]) / box[0, 2])
            after.append(abs(moved[0, 0] - box[0, 0]) / box[0, 2])
    print(
        f"{len(probs)} faces: median p {np.median(probs):.3f}, share >= 0.5 "
        f"{np.mean(np.array(probs) >= 0.5):.3f}, row error {np.mean(before):.3f} -> "
        f"{np.mean(after):.3f} of the face"
    )
    assert len(probs) >= 30
    assert np.mean(np.array(probs) >= 0.5) >= 0.85
    assert np.mean(after) < 0.6 * np.mean(before)


def test_bundled_verifier_rejects_most_cascade_boxes_on_held_out_scenes(verifier):
    """Face-free held-out backgrounds at 160x120-camera scale: face_lowres.pico still fires on
    them at a low threshold; the verifier turns most of those boxes away."""
    from edge_fer.cascade_train.annotations import list_images, split_paths

    det = lowres_detector(min_size=20, scale_factor=1.05, threshold=0.0)
    n = kept = 0
    for p in split_paths(list_images(shared("data/backgrounds")), "val")[:15]:
        g = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        g = cv2.resize(g, (240, 180), interpolation=cv2.INTER_AREA)
        d = np.array([x[:4] for x in det.detect(g)]).reshape(-1, 4)
        n += len(d)
        kept += len(verifier.filter(g, d))
    print(f"background boxes: {n}, kept by the verifier: {kept}")
    assert n >= 10 and kept <= 0.2 * n


def test_run_uses_the_verifier_of_the_lowres_cascade_and_it_can_be_turned_off(tmp_path):
    """face_lowres.pico names the verifier in its settings; behind it no track score gate runs
    (the verifier turns away what the gate was for); without it the cascade's gate is back."""
    from edge_fer.detect.config import DetectorOptions
    from edge_fer.runtime.runner import RunOptions, run_video

    def summary(**detector):
        opts = RunOptions(
            source=str(shared("data/videos/01-2.avi")),
            max_frames=5,
            detector=DetectorOptions(**detector),
        )
        return run_video(opts, handle_signals=False).summary

    s = summary()
    assert Path(s["verifier"]["path"]).name == "face_verify.onnx"
    assert s["verifier"]["min_prob"] == 0.5 and s["tracker"]["min_score"] is None
    from edge_fer.runtime.runner import format_summary

    assert "detector face_lowres.pico + face_verify.onnx (min prob 0.5)" in format_summary(s)
    s = summary(verifier="none", verifier_min_prob=0.9)
    assert s["verifier"] is None and s["tracker"]["min_score"] == 50.0
    s = summary(verifier_min_prob=0.9)
    assert s["verifier"]["min_prob"] == 0.9


def test_larger_frames_get_the_default_cascade_with_the_verifier_too(tmp_path):
    """A full-size WebFaces validation photo: face_default.pico scans it, the verifier behind
    it; the annotated face is reported and nothing else."""
    from edge_fer.runtime.runner import RunOptions, run_video

    im = next(
        i
        for i in _webfaces_val(80)
        if len(i.faces) == 1
        and i.faces[0].size >= 60
        and min(cv2.imread(str(i.path), cv2.IMREAD_GRAYSCALE).shape) >= 240
    )
    events = tmp_path / "e.jsonl"
    s = run_video(RunOptions(source=str(im.path), events=str(events)), handle_signals=False).summary
    assert Path(s["cascade"]).name == "face_default.pico"
    assert Path(s["verifier"]["path"]).name == "face_verify.onnx"
    faces = json.loads(events.read_text().splitlines()[0])["faces"]
    f = im.faces[0]
    x, y, w, _ = faces[0]["box"]
    iou = f.iou(y + w / 2, x + w / 2, w)
    print(im.path.name, faces, f"IoU {iou:.2f}")
    assert len(faces) == 1 and iou >= 0.5


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--verifier", "nope.onnx"], "face verifier not found: nope.onnx"),
        (["--verifier-min-prob", "1.5"], "--verifier-min-prob must be in [0, 1], got 1.5"),
    ],
)
def test_bad_verifier_options_are_one_line_errors(flags, message, tmp_path, capsys):
    from edge_fer.cli.main import main

    rc = main(["run", str(shared("data/videos/01-2.avi")), "--max-frames", "3", *flags])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.endswith(message) and "\n" not in err, err


def test_not_an_onnx_file_or_another_model_is_a_clear_error(tmp_path):
    from edge_fer.errors import UserError

    bad = tmp_path / "v.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a loadable ONNX face verifier"):
        Verifier.load(bad)
    with pytest.raises(UserError, match="not a face verifier"):  # the expression classifier
        Verifier.load(ASSETS / "fer_default.onnx")


def test_mining_and_training_make_a_working_verifier(tmp_path):
    """The model side end to end on a few real images: mine crops with the bundled cascade,
    train one epoch, export, load with the runtime's Verifier."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from edge_fer.cascade_train.verifier_data import mine
    from edge_fer.detect import lowres_cascade_path
    from edge_fer.train.verifier import train

    rep = mine(
        shared("data/webfaces"),
        shared("data/backgrounds"),
        tmp_path / "data",
        lowres_cascade_path(),
        seed=0,
        limit=40,
    )
    assert rep["train"]["faces"] > 20 and rep["train"]["non_faces"] > 20 and rep["sel"]["crops"]
    d = np.load(tmp_path / "data" / "train.npz")
    assert d["x"].shape[1:] == (32, 32) and d["x"].dtype == np.uint8
    assert len(d["x"]) == len(d["y"]) == len(d["offsets"])
    assert set(np.unique(d["y"])) <= {-1, 0, 1}
    state = train(tmp_path / "data", tmp_path / "model", epochs=1, threads=1)
    assert state["best"] == 1 and (tmp_path / "model" / "train.json").is_file()
    ver = Verifier.load(tmp_path / "model" / "verifier.onnx")
    meta = json.loads(ver.session.get_modelmeta().custom_metadata_map["edge_fer_verifier"])
    assert meta["context"] == 1.5 and meta["size"] == 32 and meta["epoch"] == 1
    p, boxes = ver(np.full((60, 80), 128, np.uint8), np.array([[30.0, 40.0, 24.0, 1.0]]))
    assert p.shape == (1,) and 0 <= p[0] <= 1 and boxes.shape == (1, 3)


def test_a_verifier_named_in_another_encoding_loads(tmp_path):
    """ONNX Runtime takes a model's name as UTF-8 str only: a Latin-1 name was "not a loadable
    ONNX face verifier"."""
    import os
    import shutil

    p = tmp_path / os.fsdecode(b"v\xe9rif.onnx")
    shutil.copy(VERIFIER, p)
    gray = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    dets = np.array([[32.0, 32.0, 40.0]])
    assert Verifier.load(p)(gray, dets)[0] == pytest.approx(Verifier.load(VERIFIER)(gray, dets)[0])
