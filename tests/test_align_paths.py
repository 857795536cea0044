"""A model trained on eye-aligned faces (`edge-fer train --align`) gets aligned faces on every
path that feeds it pre-cropped faces: `edge-fer eval`, `edge-fer classify`, compression
fine-tuning data, INT8 calibration (a dataset's faces and the detector's); the deploy kits,
whose servers get plain box crops, refuse it with one line (exit 2).

One tiny aligned model is trained here (`edge-fer train --align --max-batches`, 24 real FER2013
faces, a few seconds) and exported; every path is checked against the trainer's own function
(`edge_fer.align.align_images`, then `spec.prepare`) and against the plain faces.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from paths import FACEFINDER, VIDEOS, fer_files
from processes import run_cli

from edge_fer.align import align_images
from edge_fer.cli.main import main
from edge_fer.preprocess import apply_clahe

pytestmark = pytest.mark.shared("data/fer2013/train")
CLASSES = ("angry", "happy", "neutral")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A cnn4 trained --align for 10 short epochs on 8 faces of 3 classes (class folders), its
    exported ONNX, and the same model with `align` false in its metadata (the plain twin)."""
    pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    root = tmp_path_factory.mktemp("align_paths")
    data = root / "data"
    for cls in CLASSES:
        (data / cls).mkdir(parents=True)
        for i, f in enumerate(fer_files(cls, "Training", 8)):
            shutil.copy(f, data / cls / f"face_{i}.jpg")
    env = dict(os.environ, EDGE_FER_CACHE=str(root / "cache"))
    run = root / "run"
    r = run_cli("train", "--arch", "cnn4", "--data", data, "--out", run, "--epochs", "10",
                "--batch-size", "8", "--max-batches", "3", "--threads", "1", "--seed", "0",
                "--no-augment", "--patience", "0", "--align", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    model = root / "aligned.onnx"
    # the last epoch, not the best on 2 held-out faces: a model whose answers vary by face
    r = run_cli("export", "--checkpoint", run / "last.safetensors", "--out", model,
                "--no-check", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = onnx.load(str(model))
    for p in m.metadata_props:
        if p.key == "edge_fer.preprocess":
            d = json.loads(p.value)
            assert d["align"] is True
            d["align"] = False
            p.value = json.dumps(d)
    plain = root / "plain.onnx"
    onnx.save(m, str(plain))
    return SimpleNamespace(root=root, data=data, model=model, plain=plain)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_FER_CACHE", str(tmp_path / "cache"))


def _clf(path):
    from edge_fer.classify import Classifier

    return Classifier.load(path, threads=1, tta="none")


def _confusion(probs, labels, n) -> list:
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (labels, probs.argmax(1)), 1)
    return cm.tolist()


def test_eval_aligns_the_faces_as_training_did(tiny, tmp_path, capsys):
    from edge_fer.data import load_dataset

    out = tmp_path / "rep.json"
    argv = ["eval", "--model", tiny.model, "--data", tiny.data, "--tta", "none",
            "--latency-samples", "0", "--json", out, "--no-progress"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    text = capsys.readouterr().out
    rep = json.loads(out.read_text())

    faces = load_dataset(tiny.data, "all", size=48)
    with _clf(tiny.model) as clf:
        spec, classes = clf.spec, clf.classes
        found = np.zeros(len(faces), bool)
        aligned = clf.predict(align_images(faces.images, spec, log=False, found=found))
        plain = clf.predict(faces.images)
    labels = np.array([classes.index(faces.classes[k]) for k in faces.labels])
    assert 0 < found.sum() < len(faces)  # most faces aligned, some kept as cropped
    assert rep["alignment"]["eyes_found"] == int(found.sum())
    assert rep["alignment"]["faces"] == len(faces) == rep["n"]
    assert f"aligned   {int(found.sum())}/{len(faces)} faces" in text
    assert rep["confusion_matrix"] == _confusion(aligned, labels, len(classes))
    # the aligned faces are not the plain ones to the model (the top labels of a model this
    # small may still agree on every face: the eyes count above says eval aligned them)
    assert np.abs(aligned - plain).max() > 1e-3

    # the plain twin (same weights, metadata without align) is evaluated on plain faces
    out2 = tmp_path / "plain.json"
    argv[2], argv[-2] = tiny.plain, out2
    assert main([str(a) for a in argv]) == 0
    rep2 = json.loads(out2.read_text())
    assert "alignment" not in rep2
    assert rep2["confusion_matrix"] == _confusion(plain, labels, len(classes))


def test_classify_aligns_each_face_image(tiny, tmp_path, capsys):
    files = [fer_files(c, "PrivateTest", 2)[k] for c in CLASSES for k in range(2)]
    big = tmp_path / "big.png"  # a larger crop: resized to the input side, then aligned
    face = cv2.imread(str(files[0]), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(big), cv2.resize(face, (96, 96), interpolation=cv2.INTER_LINEAR))
    files.append(big)
    assert main(["classify", "--model", str(tiny.model), "--tta", "none", "--json",
                 *map(str, files)]) == 0  # fmt: skip
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [g["path"] for g in got] == [str(f) for f in files]

    imgs = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    stack = np.stack([cv2.resize(g, (48, 48), interpolation=cv2.INTER_AREA) for g in imgs])
    with _clf(tiny.model) as clf:
        found = np.zeros(len(stack), bool)
        want = clf.predict(align_images(stack, clf.spec, log=False, found=found))
        plain = clf.predict(imgs)
        classes = clf.classes
    probs = np.array([[g["probs"][c] for c in classes] for g in got])
    assert np.abs(probs - want).max() < 2e-6
    assert found.any() and np.abs(probs - plain)[found].max() > 1e-4


def test_finetune_data_is_aligned_then_clahe(tiny):
    pytest.importorskip("torch")
    from edge_fer.compress.finetune import FinetuneConfig, load_finetune_data
    from edge_fer.train.trainer import TrainConfig, load_splits

    with _clf(tiny.model) as clf:
        spec = clf.spec
    train, val, _ = load_splits(TrainConfig(arch="-", data=str(tiny.data), input_size=48))
    d = load_finetune_data(str(tiny.data), spec, FinetuneConfig())
    want_tr = align_images(train.images, spec, log=False)
    assert np.array_equal(d.train_x, want_tr) and not np.array_equal(d.train_x, train.images)
    assert np.array_equal(d.val_x, align_images(val.images, spec, log=False))
    # a CLAHE model too: alignment first, then CLAHE (the trainer's order)
    d2 = load_finetune_data(str(tiny.data), replace(spec, clahe=True), FinetuneConfig())
    assert np.array_equal(d2.train_x, apply_clahe(want_tr))
    assert not np.array_equal(d2.train_x, align_images(apply_clahe(train.images), spec, log=False))
    assert np.array_equal(d2.calibration_faces(8), apply_clahe(want_tr)[np.sort(
        np.random.default_rng(0).permutation(len(want_tr))[:8])])  # fmt: skip


def test_calibration_ranges_come_from_aligned_faces(tiny, tmp_path, capsys):
    pytest.importorskip("onnx")
    from edge_fer.quantize import FaceBatchReader, from_dataset, ranges

    out = tmp_path / "int8"
    argv = ["calibrate", "--model", tiny.model, "--data", tiny.data, "--split", "all",
            "--samples", "24", "--min-faces", "20", "--method", "minmax", "--target", "cpu",
            "--threads", "1", "--out", out, "--no-progress"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    assert "note: faces aligned on their eyes" in capsys.readouterr().out
    rep = json.loads((out / "calib_report.json").read_text())
    assert any("aligned on their eyes" in n for n in rep["calibration_set"]["notes"])

    faces = from_dataset(tiny.data, "all", samples=24, seed=0, size=48)
    assert len(faces) == 24
    with _clf(tiny.model) as clf:
        spec = clf.spec

    def amax(images):
        seen = ranges.collect(tiny.model, FaceBatchReader(images, spec).batches())
        return ranges.compute(seen, "minmax").amax()

    got = {n: t["amax"] for n, t in rep["tensors"].items()}
    want = amax(align_images(faces.images, spec, log=False))
    plain = amax(faces.images)
    assert got.keys() == want.keys()
    assert all(abs(got[n] - want[n]) <= 1e-6 * max(1.0, abs(want[n])) for n in got)
    assert any(abs(got[n] - plain[n]) > 1e-4 * max(1.0, abs(plain[n])) for n in got)


def test_calibration_faces_are_aligned_once(tiny):
    from edge_fer.quantize import aligned_for, from_dataset

    with _clf(tiny.model) as clf:
        spec = clf.spec
    faces = from_dataset(tiny.data, "all", samples=24, seed=0, size=48)
    once = aligned_for(faces, spec)
    assert once.aligned and np.array_equal(once.images, align_images(faces.images, spec))
    assert aligned_for(once, spec) is once  # not aligned twice
    assert aligned_for(faces, replace(spec, align=False)) is faces


@pytest.mark.shared("data/videos/00-1.avi", "reference/pico/facefinder")
def test_calibration_crops_from_a_source_are_cut_aligned(tiny):
    from edge_fer.detect.config import DetectorOptions
    from edge_fer.detect.factory import DetectorPicker
    from edge_fer.quantize import DetectOptions, from_source
    from edge_fer.runtime.crops import crop_face, face_cropper
    from edge_fer.runtime.sources import open_source, parse_source

    with _clf(tiny.model) as clf:
        spec = clf.spec
    video = VIDEOS / "00-1.avi"
    opts = DetectOptions(max_frames=1)
    kw = {"size": 48, "samples": 1000, "detect": opts}
    plain = from_source(video, FACEFINDER, **kw)
    aligned = from_source(video, FACEFINDER, spec=spec, **kw)
    assert len(plain) > 0 and aligned.ids == plain.ids
    assert plain.source == "00-1.avi"  # the name: a local absolute path went into the models
    assert aligned.aligned and not plain.aligned
    assert "cut aligned on their eyes" in aligned.notes[-1] and aligned.notes[:-1] == plain.notes
    assert not np.array_equal(aligned.images, plain.images)
    # the first frame's faces again, with from_source's detector: each crop is the runtime's
    # own for this model (runtime.crops.face_cropper: aligned, or plain where no eyes found)
    src = open_source(parse_source(str(video)))
    try:
        gray = cv2.cvtColor(src.read().image, cv2.COLOR_BGR2GRAY)
    finally:
        src.close()
    pick = DetectorPicker(FACEFINDER, DetectorOptions(stride_factor=0.1, memory=1))
    boxes = [(d.x, d.y, d.w, d.h) for d in pick(gray.shape).detect(gray)]
    assert boxes
    cut = face_cropper(spec)
    where = {i: k for k, i in enumerate(aligned.ids)}
    for box in boxes:
        x, y, w, h = (round(float(v)) for v in box)
        k = where[f"{video.name}#0:{x},{y},{w},{h}"]  # no local path in what ships
        assert np.array_equal(aligned.images[k], cut(gray, box))
        assert np.array_equal(plain.images[k], crop_face(gray, box, spec.crop_margin, 48))


@pytest.mark.parametrize("kind", ["deepstream", "triton"])
def test_deploy_refuses_an_aligned_model(tiny, tmp_path, capsys, kind):
    out = tmp_path / "kit"
    assert main(["deploy", kind, "--model", str(tiny.model), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "eye-aligned" in err and "--align" in err
    assert not out.exists()
    # the same weights without `align` in the metadata deploy
    assert main(["deploy", kind, "--model", str(tiny.plain), "--out", str(out)]) == 0
    capsys.readouterr()


def test_deploy_refusal_is_one_line_exit_2_from_the_cli(tiny, tmp_path):
    r = run_cli("deploy", "triton", "--model", tiny.model, "--out", tmp_path / "repo")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr and "eye-aligned" in r.stderr
    assert not Path(tmp_path / "repo").exists()
