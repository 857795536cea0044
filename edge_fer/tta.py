"""Test-time augmentation on prepared model input: average the probabilities of a few views.

Modes (each adds views to one batch, so any backend runs them in a single call):
  none       the face as given
  flip       the face and its mirror image (2 views)
  zoom-flip  the face, a centre zoom of 1/0.9, and the mirror image of both (4 views)

The zoom matches the training augmentation, whose random crops (0-10% per side, resized back)
make the network see faces about 10% larger on average. It is the same bilinear resampling as
torch's `grid_sample` (border padding, align_corners=False), written as two small matrices.

The runtime does not use TTA: on video, per-track smoothing over frames averages views for free.
"""

from __future__ import annotations

import numpy as np

from edge_fer.errors import UserError

TTA_MODES = ("none", "flip", "zoom-flip")
ZOOM = 0.9  # sampling scale of the zoom view: the centre 90% of the face, enlarged


def check_mode(mode: str, param: str = "tta") -> str:
    """`mode`, or a UserError naming `param` (the caller's parameter that gave it)."""
    if mode not in TTA_MODES:
        raise UserError(
            f"{mode!r} is an unknown test-time augmentation; choose {', '.join(TTA_MODES)}",
            param=param,
        )
    return mode


def zoom_matrix(size: int, scale: float = ZOOM) -> np.ndarray:
    """(size, size) bilinear resampling matrix: out[u] = sum_i A[u, i] in[i]."""
    c = (size - 1) / 2.0
    src = np.clip(scale * (np.arange(size) - c) + c, 0, size - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, size - 1)
    f = (src - i0).astype(np.float32)
    a = np.zeros((size, size), np.float32)
    rows = np.arange(size)
    np.add.at(a, (rows, i0), 1.0 - f)
    np.add.at(a, (rows, i1), f)
    return a


def views(x: np.ndarray, mode: str, graph_flips: bool = False) -> np.ndarray:
    """(N, C, H, W) -> (V*N, C, H, W), views stacked view-major. `graph_flips`: the model
    already averages each face with its mirror inside the graph, so no flipped view is added."""
    if mode == "none":
        return x
    out = [x]
    if mode == "zoom-flip":
        a = zoom_matrix(x.shape[-1])
        b = zoom_matrix(x.shape[-2])
        out.append(np.matmul(np.matmul(b, x), a.T).astype(np.float32, copy=False))
    if not graph_flips:
        out += [np.ascontiguousarray(v[..., ::-1]) for v in list(out)]
    return np.concatenate(out) if len(out) > 1 else x


def merge(probs: np.ndarray, n: int) -> np.ndarray:
    """(V*N, K) view-major probabilities -> (N, K) mean over the views."""
    if len(probs) == n:
        return probs
    return probs.reshape(-1, n, probs.shape[-1]).mean(0)


def n_views(mode: str, graph_flips: bool = False) -> int:
    v = {"none": 1, "flip": 2, "zoom-flip": 4}[mode]
    if graph_flips and mode != "none":
        v //= 2
    return v
