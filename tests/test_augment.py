"""The training augmentation's random crop: its range sets the scale the model learns faces at."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _square(side: int = 48, inner: int = 24) -> torch.Tensor:
    x = torch.zeros(4, 1, side, side)
    o = (side - inner) // 2
    x[:, :, o : o + inner, o : o + inner] = 255.0
    return x


def _width(x: torch.Tensor) -> float:
    """Mean width of the bright square over the batch (pixels above half brightness on the
    middle row)."""
    row = x[:, 0, x.shape[2] // 2]
    return float((row > 127.5).float().sum(1).mean())


def _crop_only(lo: float, hi: float):
    from edge_fer.train.augment import AugmentConfig

    return AugmentConfig(
        rotate_deg=0.0, flip=False, noise_sigma=0.0, dropout_pixels=0.0, crop=hi, crop_min=lo
    )


@pytest.mark.parametrize("cut, want", [(0.0, 24.0), (0.1, 24 / 0.8), (-0.1, 24 / 1.2)])
def test_a_fixed_crop_zooms_by_what_it_cuts(cut, want) -> None:
    """Cutting c of every side enlarges the face by 1 / (1 - 2c); a negative cut shrinks it
    (the border repeated)."""
    from edge_fer.train.augment import augment

    got = augment(_square(), _crop_only(cut, cut), torch.Generator().manual_seed(0))
    assert _width(got) == pytest.approx(want, abs=1.0)
    if cut < 0:  # the repeated border is the image's own edge (black here), not a new colour
        assert float(got[:, :, 0, :].max()) == 0.0


def test_the_range_sets_the_average_view() -> None:
    """(0, 0.1), the recipe's default, shows faces about 10% larger on average; (-0.05, 0.05)
    centres the views on the plain face."""
    from edge_fer.train.augment import augment

    x = _square().repeat(64, 1, 1, 1)
    gen = torch.Generator().manual_seed(1)
    default = _width(augment(x, _crop_only(0.0, 0.1), gen))
    centred = _width(augment(x, _crop_only(-0.05, 0.05), gen))
    assert 24 / 0.9 - 1.0 < default < 24 / 0.9 + 1.0
    assert 23.0 < centred < 25.5


def test_the_default_only_zooms_in() -> None:
    """The recipe's default (0, 0.1) never shows a face smaller than it is; a range reaching
    below 0 does."""
    from edge_fer.train.augment import AugmentConfig, augment

    x = _square().repeat(16, 1, 1, 1)
    cfg = AugmentConfig(rotate_deg=0.0, flip=False, noise_sigma=0.0, dropout_pixels=0.0)
    row = augment(x, cfg, torch.Generator().manual_seed(5))[:, 0, 24]
    assert float((row > 127.5).float().sum(1).min()) >= 24
    out = augment(x, _crop_only(-0.1, 0.0), torch.Generator().manual_seed(5))[:, 0, 24]
    assert float((out > 127.5).float().sum(1).max()) <= 24


def _exposure_only(lo: float, hi: float):
    from edge_fer.train.augment import AugmentConfig

    return AugmentConfig(
        rotate_deg=0.0, flip=False, noise_sigma=0.0, dropout_pixels=0.0, crop=0.0,
        exposure=(lo, hi),
    )  # fmt: skip


def test_exposure_darkens_half_the_faces_within_its_range() -> None:
    """Half the faces keep their brightness; the others are scaled by a gain inside the range,
    log-uniformly (geometric mean near sqrt(lo * hi)); bright pixels clip at 255."""
    from edge_fer.train.augment import augment

    x = torch.full((4000, 1, 48, 48), 128.0)
    y = augment(x, _exposure_only(0.25, 1.25), torch.Generator().manual_seed(0))
    gain = y.mean((1, 2, 3)) / 128.0
    kept = gain == 1.0
    assert 0.45 < float(kept.float().mean()) < 0.55
    changed = gain[~kept]
    assert float(changed.min()) >= 0.25 - 1e-4 and float(changed.max()) <= 1.25 + 1e-4
    assert float(changed.log().mean().exp()) == pytest.approx((0.25 * 1.25) ** 0.5, rel=0.05)
    bright = augment(torch.full((64, 1, 8, 8), 250.0), _exposure_only(1.2, 1.25),
                     torch.Generator().manual_seed(1))  # fmt: skip
    assert float(bright.max()) == 255.0


def test_exposure_off_leaves_the_augmentation_as_it_was() -> None:
    """(1, 1) draws nothing: a run without it gets the same views from the same seed as before
    the option existed (resumed runs and the shipped recipe stay reproducible)."""
    from edge_fer.train.augment import AugmentConfig, augment

    x = _square().repeat(8, 1, 1, 1)
    a = augment(x, AugmentConfig(), torch.Generator().manual_seed(3))
    b = augment(x, AugmentConfig(exposure=(1.0, 1.0)), torch.Generator().manual_seed(3))
    c = augment(x, AugmentConfig(exposure=(0.5, 0.5)), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
