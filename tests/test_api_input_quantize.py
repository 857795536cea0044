"""The calibration API a script writer calls (`calibrate`, `check_faces`, `FaceBatchReader`,
`ranges.collect`): a caller's mistake is a UserError naming the parameter, before any work and
with nothing written, never a check silently turned off (min_faces=nan), a calib_ids.txt that
names too few faces, or ONNX Runtime's INVALID_ARGUMENT."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from paths import FER_MODEL, fer_faces

from edge_fer.errors import UserError

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from edge_fer.quantize import CalibFaces, FaceBatchReader, calibrate, check_faces
from edge_fer.quantize import ranges as R

needs_fer = pytest.mark.shared("data/fer2013/test")


@pytest.fixture(scope="module")
def faces() -> CalibFaces:
    """Two real PrivateTest faces of every FER2013 class (14), as a dataset gives them."""
    images, labels, files = fer_faces("PrivateTest", 2)
    return CalibFaces(
        images=images,
        ids=[f.name for f in files],
        source="fer2013 (test)",
        labels=labels,
        classes=("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
    )


@pytest.fixture(scope="module")
def spec():
    from edge_fer.classify import Classifier

    with Classifier.load(FER_MODEL, threads=1, tta="none") as clf:
        return clf.spec


def _refused(tmp_path, faces, param: str, words: str, **kw) -> None:
    out = tmp_path / "int8"
    with pytest.raises(UserError, match=words) as e:
        calibrate(FER_MODEL, faces, out_dir=out, threads=1, check_agreement=False, **kw)
    assert e.value.param == param
    assert not out.exists()  # refused before anything was written


@needs_fer
def test_calibrate_refuses_counts_that_are_not_integers(tmp_path, faces) -> None:
    """min_faces=nan turned the minimum-size check off (14 faces calibrated on); batch_size
    2.5 or nan was a bare TypeError from range()."""
    _refused(tmp_path, faces, "min_faces", "integer", min_faces=float("nan"))
    _refused(tmp_path, faces, "min_faces", "integer", min_faces=2.5)
    _refused(tmp_path, faces, "batch_size", "integer", min_faces=10, batch_size=2.5)
    _refused(tmp_path, faces, "batch_size", "integer", min_faces=10, batch_size=float("nan"))
    with pytest.raises(UserError, match="integer") as e:
        check_faces(faces, float("nan"))
    assert e.value.param == "min_faces"


@needs_fer
def test_calibrate_refuses_faces_whose_ids_or_labels_do_not_match(tmp_path, faces, spec) -> None:
    """A hand-built CalibFaces with fewer ids than images was calibrated on, and calib_ids.txt
    listed too few faces."""
    for bad, words in [
        (replace(faces, ids=faces.ids[:10]), "14 images but 10 ids"),
        (replace(faces, ids=None), "14 images but None"),
        (replace(faces, labels=faces.labels[:3]), "14 images but 3 labels"),
        (faces.images, "CalibFaces"),
    ]:
        _refused(tmp_path, bad, "faces", words, min_faces=10)
    with pytest.raises(UserError, match="integer") as e:
        FaceBatchReader(faces.images, spec, batch_size=2.5)
    assert e.value.param == "batch_size"


@needs_fer
def test_collect_checks_batches_against_the_model_input(faces, spec) -> None:
    """Batches of another rank, the whole array in place of an iterable of batches, or uint8
    faces were ONNX Runtime's INVALID_ARGUMENT; num_bins=0 a ZeroDivisionError; threads=-1
    silently 0."""
    x = spec.prepare(faces.images)  # (14, 1, 48, 48) float32, as the model takes it
    for batches, words in [
        ([x[:, 0]], r"\(B, 1, 48, 48\); batch 0 has shape \(14, 48, 48\)"),
        ([x, x[:, :, :40]], "batch 1 has shape"),
        (x, "iterable of batches, got one array"),
        ([faces.images[:, None]], "batch 0 has dtype uint8"),
        ([x.tolist()], "batch 0 is a list"),
        ([np.full_like(x, np.nan)], "NaN"),
        (None, "iterable"),
    ]:
        with pytest.raises(UserError, match=words) as e:
            R.collect(FER_MODEL, batches, threads=1)
        assert e.value.param == "batches"
    for kw in ({"num_bins": 0}, {"num_bins": 2.5}, {"threads": -1}, {"threads": 1.5}):
        with pytest.raises(UserError, match="must be") as e:
            R.collect(FER_MODEL, [x], **kw)
        assert e.value.param == next(iter(kw))
    seen = R.collect(FER_MODEL, [x[:8], x[8:].astype(np.float64)], threads=1)
    assert seen.n_faces == 14 and seen.input_name in seen.tensors


# -- what ships names no local path and no password ----------------------------------------------


def test_stream_passwords_are_redacted() -> None:
    from edge_fer.runtime.sources import redacted

    assert redacted("rtsp://admin:secret@10.0.0.2:554/s1") == "rtsp://admin:***@10.0.0.2:554/s1"
    assert redacted("rtsp://u:p@ss@cam/s?a=b@c") == "rtsp://u:***@cam/s?a=b@c"  # last @ ends it
    for same in ("rtsp://admin@cam/s", "http://cam/a@b", "/home/me/v.mp4", "0"):
        assert redacted(same) == same


def test_portable_paths(tmp_path, monkeypatch) -> None:
    from edge_fer.fileio import portable_path

    monkeypatch.chdir(tmp_path)
    assert portable_path("models/m.onnx") == "models/m.onnx"
    assert portable_path(tmp_path / "models" / "m.onnx") == "models/m.onnx"
    assert portable_path("/somewhere/else/m.onnx") == "m.onnx"


@pytest.mark.shared("data/webfaces/images")
def test_a_calibration_from_photos_records_no_local_path(tmp_path) -> None:
    """calibrate --source /abs/photos wrote the absolute folder into both Q/DQ models'
    metadata, each face id and the report; the model's absolute path too."""
    import json
    import shutil

    import onnx
    from paths import WEBFACES

    from edge_fer.quantize import DetectOptions, from_source

    photos = tmp_path / "photos"
    for k, name in enumerate(("pic00001.jpg", "pic00011.jpg", "pic00021.jpg")):
        (photos / f"day{k % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(WEBFACES / "images" / name, photos / f"day{k % 2}" / name)
    model = tmp_path / "m.onnx"  # an absolute path outside the working folder
    shutil.copy(FER_MODEL, model)
    faces = from_source(photos / "day0", detect=DetectOptions(min_size=20))
    assert faces.source == "day0" and all(i.startswith("pic000") for i in faces.ids), faces.ids
    faces = from_source(f"{photos}/*/*.jpg", detect=DetectOptions(min_size=20))
    assert len(faces) >= 2, faces.notes
    assert faces.source == "photos/*/*.jpg"
    assert all(i.startswith(("day0/", "day1/")) for i in faces.ids), faces.ids
    out = tmp_path / "calib"
    calibrate(model, faces, out, target="both", min_faces=2)
    shipped = [json.dumps(json.loads((out / "calib_report.json").read_text()))]
    shipped += [(out / "calib_ids.txt").read_text()]
    for name in ("model.int8.qdq.onnx", "model.int8.cpu.onnx"):
        shipped += [p.value for p in onnx.load(str(out / name)).metadata_props]
    assert not any(str(tmp_path) in text for text in shipped)
    assert json.loads(shipped[0])["model"]["path"] == "m.onnx"
