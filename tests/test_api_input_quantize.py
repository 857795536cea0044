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
