"""Mining the verifier's crops behind face_default.pico (`verifier_data --profile default`): the
face-free scenes it scans, the scale it puts faces at, and its crops on real images."""

from __future__ import annotations

import numpy as np
from paths import PICO, shared

from edge_fer.cascade_train.verifier_data import Miner, degrade, mine, scene
from edge_fer.detect.verifier import Verifier


def test_scenes_are_camera_frames_of_tiles_or_one_whole_scene():
    rng = np.random.default_rng(0)
    bgs = [
        rng.integers(0, 255, (480, 640), dtype=np.uint8),
        rng.integers(0, 255, (200, 150), dtype=np.uint8),
    ]
    shapes = {scene(bgs, rng).shape for _ in range(60)}
    mosaics = {(480, 640), (720, 1280)}
    assert mosaics <= shapes  # 2x2 and 3x4 mosaics of 320x240 tiles both occur
    for s in shapes - mosaics:  # whole scenes: shorter side 240-720 px
        assert 239 <= min(s) <= 721


def test_degrade_can_enlarge_and_keeps_the_scale():
    rng = np.random.default_rng(0)
    g = np.full((50, 40), 128, np.uint8)
    big, k = degrade(g, 0, rng, scale=2.0, noise=0.0, quality=(90, 91))
    assert k == 2.0 and big.shape == (100, 80)
    small, k = degrade(g, 20, rng)  # the low-resolution profile: longer side 20 px
    assert small.shape == (20, 16) and k == 0.4


def test_scene_crops_are_all_non_faces():
    """Face-free frames give the cascade's false positives (threshold 0): negatives only, with
    no box offsets."""
    import cv2

    folder = shared("data/backgrounds")
    bgs = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(folder.iterdir())[:8]]
    m = Miner(PICO, seed=0, variants=1, profile="scene")
    rng = np.random.default_rng(0)
    for _ in range(3):
        m.add(scene(bgs, rng), np.zeros((0, 3)))
    y = np.concatenate(m.labels)
    assert len(y) > 0 and (y == 0).all()
    assert not np.concatenate(m.offsets).any()
    assert np.concatenate(m.crops).shape[1:] == (32, 32)


def test_default_profile_mines_real_faces_at_group_photo_sizes(tmp_path):
    rep = mine(
        shared("data/webfaces"),
        shared("data/backgrounds"),
        tmp_path / "data",
        PICO,
        seed=0,
        limit=40,
        profile="default",
        scenes=2,
    )
    assert rep["train"]["faces"] > 20 and rep["train"]["non_faces"] > 20 and rep["sel"]["crops"]
    d = np.load(tmp_path / "data" / "train.npz")
    assert d["x"].shape[1:] == (32, 32) and set(np.unique(d["y"])) <= {-1, 0, 1}


def test_fine_tuning_starts_from_the_bundled_verifier_exactly():
    """--init: the exported model's folded weights give the same outputs in torch, in eval mode
    and in training mode with the batch norms frozen (what fine-tuning runs)."""
    import pytest

    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from paths import VERIFIER

    from edge_fer.detect.verifier import normalize
    from edge_fer.train.verifier import build_model, freeze_batch_norms, init_from_onnx

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (6, 32, 32), dtype=np.uint8)
    x = normalize(crops)
    ver = Verifier.load(VERIFIER)
    want = ver.session.run(None, {ver.session.get_inputs()[0].name: x})[0]
    model = build_model()
    init_from_onnx(model, VERIFIER)
    model.train()
    freeze_batch_norms(model)
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    assert np.allclose(got, want, atol=1e-4)


def test_init_from_a_file_that_is_not_a_verifier_is_one_error(tmp_path):
    import pytest

    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from paths import ASSETS

    from edge_fer.errors import UserError
    from edge_fer.train.verifier import build_model, init_from_onnx

    bad = tmp_path / "v.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="not an ONNX verifier"):
        init_from_onnx(build_model(), bad)
    with pytest.raises(UserError, match="does not have this verifier's layers"):
        init_from_onnx(build_model(), ASSETS / "fer_default.onnx")
