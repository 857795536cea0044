"""Batched augmentation on the training device (no per-image Python loop).

The five steps of the FER recipe: coarse dropout (blocks of 2-25% of the image side, 0-2% of
pixels), rotation of +-15 degrees, horizontal flip, Gaussian noise of sigma 0-15 (pixel units),
random crop of 0-10% per side (resized back; `crop_min` < 0 lets it zoom out too, the border
repeated, so that the average view can be the plain face the model meets at test time). Crop,
rotation and flip are one affine warp.

Off by default, one photometric step: camera exposure. Half the faces are multiplied by a gain
drawn log-uniformly from `exposure` (clipped at 255), before the noise. FER2013's faces are well
lit (median face mean 130 of 255); movie and camera faces often are not (SFEW's training movies:
median 65, contrast 0.58x), and a model that never saw a dark face reads darkness as expression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    rotate_deg: float = 15.0
    flip: bool = True
    crop: float = 0.10  # the most cut from each side, a fraction of the side
    crop_min: float = 0.0  # the least (negative: a border added, repeating the edge pixels)
    noise_sigma: float = 15.0
    dropout_pixels: float = 0.02
    dropout_block: tuple[float, float] = (0.02, 0.25)
    exposure: tuple[float, float] = (1.0, 1.0)  # gain range for half the faces; (1, 1): off
    enabled: bool = True


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """x: (N, C, H, W) float in pixel units 0..255. Returns the same shape."""
    if not cfg.enabled:
        return x
    n, _, h, w = x.shape
    dev = x.device

    def rand(*shape):
        return torch.rand(*shape, generator=gen, device=dev)

    # crop crop_min..crop of each side: new box [l, 1-r] x [t, 1-b] in unit coordinates.
    lo, span = cfg.crop_min, cfg.crop - cfg.crop_min
    l, r, t, b = (lo + rand(n) * span for _ in range(4))
    sx = 1.0 - l - r
    sy = 1.0 - t - b
    cx = l - r  # centre shift in [-1, 1] coordinates = (l - r) / 2 * 2
    cy = t - b
    ang = (rand(n) * 2 - 1) * math.radians(cfg.rotate_deg)
    cos, sin = torch.cos(ang), torch.sin(ang)
    flip = torch.where(rand(n) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(n, device=dev)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = cos * sx * flip
    theta[:, 0, 1] = -sin * sy
    theta[:, 1, 0] = sin * sx * flip
    theta[:, 1, 1] = cos * sy
    theta[:, 0, 2] = cx
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    lo_g, hi_g = cfg.exposure
    if (lo_g, hi_g) != (1.0, 1.0):  # draws only when on: runs without it keep their streams
        log_gain = math.log(lo_g) + rand(n, 1, 1, 1) * (math.log(hi_g) - math.log(lo_g))
        gain = torch.where(rand(n, 1, 1, 1) < 0.5, torch.exp(log_gain), torch.ones_like(log_gain))
        x = (x * gain).clamp_(0, 255)

    if cfg.noise_sigma > 0:
        sigma = rand(n, 1, 1, 1) * cfg.noise_sigma
        x = x + torch.randn(x.shape, generator=gen, device=dev) * sigma
    if cfg.dropout_pixels > 0:
        # one block size per batch keeps this vectorised; it varies from batch to batch
        lo, hi = cfg.dropout_block
        frac = lo + float(rand(1)) * (hi - lo)
        cells = max(1, round(1.0 / frac))
        p = rand(n, 1, 1, 1) * cfg.dropout_pixels
        keep = (rand(n, 1, cells, cells) >= p).float()
        keep = F.interpolate(keep, size=(h, w), mode="nearest")
        x = x * keep
    return x.clamp_(0, 255)
