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
