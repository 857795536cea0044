"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of a training batch.

Each batch is mixed with a shuffled copy of itself: mixup blends whole faces, CutMix pastes a
box of one face onto another. The mixing weight `lam` (the share of the original face) is drawn
from Beta(alpha, alpha); CutMix's box covers 1 - lam of the face and `lam` is then set to the
share it really left (the box is clipped at the borders). Labels and teacher targets are mixed
with the same weight. With both enabled, each batch takes one of the two at random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Mix:
    perm: torch.Tensor  # the partner of each face in the batch
    lam: float  # share of the original face
    box: tuple[int, int, int, int] | None = None  # CutMix's (y0, y1, x0, x1); None: mixup

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """The mixed batch (N, C, H, W)."""
        if self.box is None:
            return self.lam * x + (1 - self.lam) * x[self.perm]
        y0, y1, x0, x1 = self.box
        out = x.clone()
        out[:, :, y0:y1, x0:x1] = x[self.perm][:, :, y0:y1, x0:x1]
        return out

    def probs(self, p: torch.Tensor) -> torch.Tensor:
        """Mixed class probabilities (N, C) from the unmixed faces' ones."""
        return self.lam * p + (1 - self.lam) * p[self.perm]

    def cross_entropy(self, logits, y, weight=None, label_smoothing: float = 0.0):
        """The loss against both faces' labels, weighted by their shares."""
        a = F.cross_entropy(logits, y, weight=weight, label_smoothing=label_smoothing)
        b = F.cross_entropy(logits, y[self.perm], weight=weight, label_smoothing=label_smoothing)
        return self.lam * a + (1 - self.lam) * b


def draw_mix(
    n: int, h: int, w: int, mixup: float, cutmix: float, gen: torch.Generator
) -> Mix | None:
    """The mix of one batch of n faces of h x w, or None when both alphas are 0.

    Draws only from `gen` (and only when mixing is on), so runs without it keep their
    random streams."""
    if n < 2 or (mixup <= 0 and cutmix <= 0):
        return None
    use_cut = cutmix > 0 and (mixup <= 0 or float(torch.rand(1, generator=gen)) < 0.5)
    alpha = cutmix if use_cut else mixup
    # torch's Beta sampler takes no generator: seed numpy's from `gen` (reproducible per epoch)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(n, generator=gen)
    if not use_cut:
        return Mix(perm, lam)
    cut = (1 - lam) ** 0.5
    ch, cw = round(h * cut), round(w * cut)
    cy = int(torch.randint(0, h, (1,), generator=gen))
    cx = int(torch.randint(0, w, (1,), generator=gen))
    y0, y1 = max(0, cy - ch // 2), min(h, cy + (ch + 1) // 2)
    x0, x1 = max(0, cx - cw // 2), min(w, cx + (cw + 1) // 2)
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return Mix(perm, lam, (y0, y1, x0, x1))
