"""What the benchmark scripts share: saving results as JSON, failing in one line and the
parts of their synthetic clips (WebFaces face patches, the feathered disc, pasting, drifting
faces written to a video). Scripts run as `python benchmarks/<name>.py`, so
this folder is on sys.path and `from common import ...` finds this file."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _bases() -> tuple:
    """(folder, how it is written) for the places `portable` rewrites, most specific first."""
    out = [(ROOT, Path()), (ROOT.parent / "shared", Path("../shared"))]
    out += [(Path(tempfile.gettempdir()), Path("$TMPDIR")), (Path.home(), Path("~"))]
    return tuple((b, s) for b, s in out if b != Path(b.anchor))  # never a bare root folder


def portable(obj):
    """`obj` with every string that is an absolute path inside the checkout made relative to
    it, one inside the shared data folder beside it written as `../shared/...`, and one in the
    temporary folder or the home folder as `$TMPDIR/...` or `~/...`: committed results must not
    record this machine's layout."""
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("/"):
        p = Path(obj)
        for base, shown in _bases():
            if p.is_relative_to(base):
                return str(shown / p.relative_to(base)) if p != base else str(shown)
    return obj


def save_json(path: str | Path, obj) -> None:
    """`obj` as indented JSON plus a newline (written atomically; paths made `portable`), then
    `saved <path>` (relative to the checkout when it lies inside it)."""
    from edge_fer.fileio import write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(portable(obj), indent=2) + "\n")
    shown = path.relative_to(ROOT) if path.is_absolute() and path.is_relative_to(ROOT) else path
    print(f"saved {shown}")


def read_events(path: Path) -> list[dict]:
    """The records of an `edge-fer run --events` JSON-lines file, in order."""
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def fail(msg: str) -> int:
    """Say why the benchmark cannot run (one line on stderr); its exit code, 2."""
    print(msg, file=sys.stderr)
    return 2


def webfaces_val(webfaces: Path, limit: int = 0) -> tuple[list[np.ndarray], list[list]]:
    """The WebFaces validation split (the last 10% of images in name order: no bundled cascade
    learned from it or was tuned on it), its first `limit` images (0: all), decoded: grayscale
    images and their faces (`cascade_train.annotations.Face`), undecodable images left out."""
    from edge_fer.cascade_train.annotations import read_webfaces, split_images
    from edge_fer.cascade_train.evaluate import load_eval_set

    val = split_images(read_webfaces(webfaces)[0], "val")
    if limit:
        val = val[:limit]
    images, faces, _ = load_eval_set(val)
    return images, faces


def shrink(images, faces, side: int):
    """Images downscaled (area averaging) to a longer side of at most `side` px, and their faces
    scaled with them; images already that small are kept as they are."""
    import cv2

    from edge_fer.cascade_train.annotations import Face

    out_i, out_f = [], []
    for g, fs in zip(images, faces):
        k = min(1.0, side / max(g.shape))
        out_i.append(cv2.resize(g, None, fx=k, fy=k, interpolation=cv2.INTER_AREA) if k < 1 else g)
        out_f.append([Face(row=f.row * k, col=f.col * k, size=f.size * k) for f in fs])
    return out_i, out_f


def feathered_disc(size: int) -> np.ndarray:
    """A (size, size) float32 alpha mask: 1 in the middle, fading to 0 over the outer 35%."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2) / (size / 2)
    return np.clip((1.0 - r) / 0.35, 0, 1).astype(np.float32)


def webfaces_patches(
    webfaces: Path, min_eyes: float, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, float]]:
    """(patch, face side) for the WebFaces faces with at least `min_eyes` px between the eyes,
    in an order shuffled by `rng`: a square colour patch 2x the face box around each face (the
    box: 2.4 x the eye distance, centred 0.45 of the way from the eyes to the mouth). Faces
    whose patch would cross the image edge, and unreadable images, are skipped."""
    import cv2

    rows = []
    for line in (webfaces / "WebFaces_GroundThruth.txt").read_text().splitlines():
        p = line.split()
        if len(p) != 9:
            continue
        le, re_, mouth = (np.array(p[k : k + 2], float) for k in (1, 3, 7))
        if np.linalg.norm(re_ - le) >= min_eyes:
            rows.append((p[0], le, re_, mouth))
    rng.shuffle(rows)
    for name, le, re_, mouth in rows:
        img = cv2.imread(str(webfaces / "images" / name), cv2.IMREAD_COLOR)
        if img is None:
            continue
        d = float(np.linalg.norm(re_ - le))
        eyes = (le + re_) / 2
        c = eyes + 0.45 * (mouth - eyes)  # between the eyes and the mouth, a bit up
        side = 2.4 * d  # the face box
        x0, y0, x1, y1 = (int(v) for v in (c[0] - side, c[1] - side, c[0] + side, c[1] + side))
        if x0 < 0 or y0 < 0 or x1 > img.shape[1] or y1 > img.shape[0]:
            continue
        yield img[y0:y1, x0:x1].copy(), side


def paste(f: np.ndarray, patch: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> None:
    """Blend the patch into the float frame f with its top-left corner at (x0, y0); the parts
    outside the frame are cut off."""
    h, w = f.shape[:2]
    psz = patch.shape[0]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + psz, w), min(y0 + psz, h)
    if xb > xa and yb > ya:
        pp = patch[ya - y0 : yb - y0, xa - x0 : xb - x0].astype(np.float32)
        aa = alpha[ya - y0 : yb - y0, xa - x0 : xb - x0]
        f[ya:yb, xa:xb] = aa * pp + (1 - aa) * f[ya:yb, xa:xb]


def drifting_clip(
    path: Path,
    fps: float,
    bg: np.ndarray,
    plan: list[dict],
    frames: int,
    centre: Callable[[dict, float], tuple[float, float]],
) -> list:
    """Write `frames` frames of the faces of `plan` drifting over the background `bg` (mp4v,
    `VideoSink`: complete or not there at all). A face q is a dict: "p" its square patch of side
    "psz", "a" the patch's alpha, "face" the side of the face box centred in the patch;
    `centre(q, t)` is the patch centre at t seconds. Returns per frame the true boxes
    (x, y, w, h), one per face."""
    from edge_fer.runtime.sinks import VideoSink

    h, w = bg.shape[:2]
    sink = VideoSink(path, fps, (w, h))
    truth = []
    for i in range(frames):
        t = i / fps
        f = bg.astype(np.float32)
        boxes = []
        for q in plan:
            cx, cy = centre(q, t)
            x0, y0 = round(cx - q["psz"] / 2), round(cy - q["psz"] / 2)
            paste(f, q["p"], q["a"], x0, y0)
            s = q["face"]
            boxes.append((x0 + q["psz"] / 2 - s / 2, y0 + q["psz"] / 2 - s / 2, s, s))
        sink.write(np.clip(f, 0, 255).astype(np.uint8))
        truth.append(boxes)
    sink.close()
    return truth
