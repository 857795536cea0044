"""Test-time augmentation views, and rebuilding torch models from exported ONNX files.

Uses the bundled model (always in the package) and real FER2013 faces when ../shared exists.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_fer.classify import Classifier, default_model_path
from edge_fer.errors import UserError
from edge_fer.tta import merge, n_views, views, zoom_matrix


def _faces(n: int = 16) -> np.ndarray:
    from pathlib import Path

    fer = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fer2013" / "test"
    files = sorted(fer.glob("*/PublicTest_*.jpg"))[::97][:n] if fer.is_dir() else []
    if len(files) >= n:
        import cv2

        return np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files])
    # no dataset: smooth random images still exercise the arithmetic
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (n, 48, 48)).astype(np.uint8)


def test_zoom_matches_torch_grid_sample() -> None:
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    x = np.random.default_rng(1).random((3, 1, 48, 48), dtype=np.float32)
    a = zoom_matrix(48)
    got = np.matmul(np.matmul(a, x), a.T)
    th = torch.zeros(3, 2, 3)
    th[:, 0, 0] = th[:, 1, 1] = 0.9
    grid = F.affine_grid(th, [3, 1, 48, 48], align_corners=False)
    ref = F.grid_sample(
        torch.from_numpy(x), grid, mode="bilinear", padding_mode="border", align_corners=False
    ).numpy()
    assert np.abs(got - ref).max() < 1e-4
    # rows are interpolation weights
    assert np.allclose(a.sum(1), 1.0)


def test_views_and_merge() -> None:
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    assert views(x, "none") is x
    v = views(x, "flip")
    assert v.shape == (4, 1, 4, 4) and np.array_equal(v[2], x[0, :, :, ::-1])
    v = views(x, "zoom-flip")
    assert v.shape == (8, 1, 4, 4) and n_views("zoom-flip") == 4
    assert views(x, "zoom-flip", graph_flips=True).shape == (4, 1, 4, 4)
    p = np.random.default_rng(0).random((8, 7)).astype(np.float32)
    assert np.allclose(merge(p, 2), p.reshape(4, 2, 7).mean(0))


def test_classifier_tta_is_the_mean_of_its_views() -> None:
    faces = _faces()
    with Classifier.load(tta="none", threads=1) as clf:
        x = clf.spec.prepare(faces)
        p0 = clf.infer(x)
        p_flip = clf.infer(np.ascontiguousarray(x[..., ::-1]))
        a = zoom_matrix(clf.input_size)
        z = np.matmul(np.matmul(a, x), a.T).astype(np.float32)
        p_zoom = clf.infer(z)
        p_zoom_flip = clf.infer(np.ascontiguousarray(z[..., ::-1]))
        clf.set_tta("flip")
        assert np.allclose(clf.predict(faces), (p0 + p_flip) / 2, atol=1e-5)
        clf.set_tta("zoom-flip")
        want = (p0 + p_flip + p_zoom + p_zoom_flip) / 4
        assert np.allclose(clf.predict(faces), want, atol=1e-5)
        assert np.allclose(clf.predict(faces).sum(1), 1.0, atol=1e-5)
    with pytest.raises(UserError, match="^tta 'rotate' is an unknown test-time augmentation"):
        Classifier.load(tta="rotate")


def test_bundled_model_recommends_its_eval_tta() -> None:
    with Classifier.load(threads=1) as clf:
        assert clf.tta == clf.recommended_tta
        assert clf.graph_tta in ("none", "flip")


def test_rebuild_bundled_model_and_reexport(tmp_path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from edge_fer.export.onnx import export_checkpoint
    from edge_fer.export.onnx_import import checkpoint_from_onnx, torch_model_from_onnx

    _model, spec, meta = torch_model_from_onnx(default_model_path())  # checks parity itself
    assert spec.classes and meta["edge_fer.arch"] == "vgg"
    ckpt = checkpoint_from_onnx(default_model_path(), tmp_path / "rebuilt.safetensors")
    out = tmp_path / "again.onnx"
    rep = export_checkpoint(ckpt, out, check_faces=_faces(), eval_tta="zoom-flip")
    assert rep["parity_max_abs_diff"] <= 1e-4
    faces = _faces()
    with (
        Classifier.load(out, tta="none", threads=1) as a,
        Classifier.load(default_model_path(), tta="none", threads=1) as b,
    ):
        assert a.recommended_tta == "zoom-flip"
        want = b.predict(faces)
        if b.graph_tta == "flip":  # the old bundled graph averaged the mirror image itself
            a.set_tta("flip")
        assert np.abs(a.predict(faces) - want).max() < 1e-4


def test_rebuild_rejects_non_zoo_models(tmp_path) -> None:
    pytest.importorskip("torch")
    from edge_fer.export.onnx_import import torch_model_from_onnx

    with pytest.raises(UserError, match="no such model file"):
        torch_model_from_onnx(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(UserError):
        torch_model_from_onnx(bad)
