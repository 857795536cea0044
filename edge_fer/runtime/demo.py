"""`edge-fer run --demo`: a short clip with two moving faces, made from a photo a dependency ships.

The photo: scikit-image's astronaut portrait (Eileen Collins, NASA, public domain) when
scikit-image is installed, else matplotlib's Grace Hopper portrait (US Navy, public domain),
which matplotlib (the `demo` extra) ships in its sample data. The files are located
through the packages' import specs, without importing them.

The clip: 640x480, 4 s at 25 frames/s; the portrait and its mirror image side by side on a
textured background, panning and zooming independently.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np

from edge_fer.errors import UserError

DEMO_SIZE = (640, 480)
DEMO_FPS = 25.0
DEMO_SECONDS = 4.0

# (package, path under the package folder, credit)
FACE_PHOTOS = (
    (
        "skimage",
        "data/astronaut.png",
        "scikit-image astronaut (Eileen Collins, NASA, public domain)",
    ),
    (
        "matplotlib",
        "mpl-data/sample_data/grace_hopper.jpg",
        "matplotlib sample data: Grace Hopper (US Navy, public domain)",
    ),
)


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def find_face_photo() -> tuple[Path, str]:
    """(path, credit) of a portrait photo shipped by an installed package."""
    for pkg, rel, credit in FACE_PHOTOS:
        d = _package_dir(pkg)
        if d is not None and (d / rel).is_file():
            return d / rel, credit
    raise UserError(
        "--demo needs a portrait photo from matplotlib or scikit-image, "
        "and neither is installed: python3 -m pip install '.[demo]' in the edge-fer checkout"
    )


def load_face_photo() -> tuple[np.ndarray, str]:
    path, credit = find_face_photo()
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"--demo: cannot read the portrait {path}")
    return img, credit


def _background(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A soft, textured, face-free background (smooth gradients plus blurred noise)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 90 + 50 * np.sin(xx / w * 3.1) * np.cos(yy / h * 2.3)
    noise = cv2.GaussianBlur(rng.normal(0, 40, (h, w)).astype(np.float32), (0, 0), 6)
    g = np.clip(base + noise, 0, 255).astype(np.uint8)
    return cv2.merge([g, np.clip(g.astype(np.int16) + 10, 0, 255).astype(np.uint8), g])


def _paste(canvas: np.ndarray, img: np.ndarray, cx: float, cy: float, height: float) -> None:
    h, w = img.shape[:2]
    s = height / h
    nw, nh = max(2, round(w * s)), max(2, round(h * s))
    r = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    x0, y0 = round(cx - nw / 2), round(cy - nh / 2)
    H, W = canvas.shape[:2]
    ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x0 + nw, W), min(y0 + nh, H)
    if ax1 <= ax0 or ay1 <= ay0:
        return
    canvas[ay0:ay1, ax0:ax1] = r[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]


def demo_frames(
    photo: np.ndarray,
    size=DEMO_SIZE,
    fps: float = DEMO_FPS,
    seconds: float = DEMO_SECONDS,
    seed: int = 0,
):
    """Yield BGR frames: the portrait and its mirror image panning and zooming."""
    w, h = size
    rng = np.random.default_rng(seed)
    bg = _background(w, h, rng)
    mirrored = photo[:, ::-1]
    n = round(fps * seconds)
    for i in range(n):
        t = i / fps
        frame = bg.copy()
        # left: drifts right and back, gentle zoom; right (mirrored): zooms in and out
        _paste(
            frame,
            photo,
            w * 0.28 + 40 * np.sin(2 * np.pi * t / seconds),
            h * 0.5 + 15 * np.sin(2 * np.pi * t / 2.0),
            h * (0.62 + 0.05 * np.sin(t)),
        )
        _paste(
            frame,
            mirrored,
            w * 0.74 - 20 * np.sin(2 * np.pi * t / seconds),
            h * 0.52,
            h * (0.55 + 0.12 * np.sin(2 * np.pi * t / seconds)),
        )
        yield frame


def write_demo_clip(path: str | os.PathLike, **kw) -> dict:
    """Write the demo input clip; returns {"path", "frames", "fps", "size", "photo"}."""
    from edge_fer.runtime.sinks import VideoSink

    photo, credit = load_face_photo()
    size = kw.get("size", DEMO_SIZE)
    fps = kw.get("fps", DEMO_FPS)
    sink = VideoSink(path, fps, size)  # a temporary file, renamed over `path` when complete
    n = 0
    try:
        for frame in demo_frames(photo, **kw):
            sink.write(frame)
            n += 1
    except BaseException:  # Ctrl-C / SIGTERM included: no partial clip, an old one untouched
        sink.abort()
        raise
    sink.close()
    return {"path": str(path), "frames": n, "fps": fps, "size": list(size), "photo": credit}
