"""Learning the eye model from WebFaces eye landmarks, and measuring it.

Data: the WebFaces landmark file (file, left eye x y, right eye x y, nose, mouth); face boxes
from the landmarks exactly as the cascade training derives them (`webfaces_box`), images split
as the cascade training splits them (`split_images`: the last 10% of images in name order are
validation). Each training face is resampled to a patch from a randomly shifted and scaled box
(the detector's boxes are not the annotation's), both eyes are targets (the right one on the
mirrored patch) and every eye gets several perturbed starts. The cascade is grown stage by
stage, tree by tree (least-squares trees over random pixel-comparison candidates), each tree
moving every start before the next one is grown, as at inference.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_fer.align import kernels
from edge_fer.align.aligner import Aligner, extract_patch, patch_matrix
from edge_fer.align.config import LearnConfig
from edge_fer.align.model import EyeModel
from edge_fer.errors import UserError
from edge_fer.imageio import read_or_none

# why an annotation row is left out (`Skipped`)
SKIP_REASONS = {
    "malformed": "malformed line",
    "bad_landmarks": "degenerate landmarks (not finite, or the eyes or the mouth on one point)",
    "missing_file": "image file missing",
    "undecodable": "image does not decode",
    "eyes_outside": "an eye outside the image",
}
# pixels an eye may lie past its image's edge: an eye clicked on the edge pixel is no mistake
# (WebFaces' pic03967 has one 0.4 px past it, and the bundled model, rebuilt byte for byte,
# learned from it)
EDGE_SLACK = 1.0


@dataclass
class Skipped:
    """Annotation rows left out of the whole landmark file (both splits), per reason, with the
    first few `file:line` of each: before, they were dropped without a word."""

    rows: int = 0  # rows read, blank lines and comments aside
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 2:
            ex.append(where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reasons(self) -> str:
        return "; ".join(
            f"{self.counts[k]} x {what} (e.g. {', '.join(self.examples[k])})"
            for k, what in SKIP_REASONS.items()
            if self.counts.get(k)
        )

    def line(self) -> str:
        return f"skipped {self.total} of {self.rows} annotation rows: {self.reasons()}"


@dataclass
class Faces:
    """Faces of one split: names, eye landmarks (x, y) and their square boxes (cx, cy, side)."""

    paths: list[Path]
    left: np.ndarray  # (n, 2) x, y
    right: np.ndarray
    boxes: np.ndarray  # (n, 3) cx, cy, side
    skipped: Skipped = field(default_factory=Skipped)


def landmark_file(root: str | Path) -> tuple[Path, Path]:
    """(the WebFaces landmark file, the folder of its images) of `--data` (the dataset folder or
    the landmark file itself)."""
    from edge_fer.cascade_train.annotations import WEBFACES_FILE

    p = Path(root)
    f = p / WEBFACES_FILE if p.is_dir() else p
    return f, f.parent / "images" if (f.parent / "images").is_dir() else f.parent


# path -> ((mtime, size), (height, width) or None when it does not decode): every image of the
# file is checked by each read_faces (a run reads it three times), decoded once per process
_shapes: dict[Path, tuple] = {}


def _image_shape(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    key = (st.st_mtime_ns, st.st_size)
    hit = _shapes.get(path)
    if hit is None or hit[0] != key:
        g = read_or_none(path, cv2.IMREAD_GRAYSCALE)
        hit = _shapes[path] = (key, None if g is None else g.shape[:2])
    return hit[1]


def read_faces(root: str | Path, split: str, val_fraction: float = 0.1) -> Faces:
    """WebFaces faces of `split` (train / val / all) with both eye landmarks; the rows of the
    whole file left out are counted in `Faces.skipped` (a UserError when none is usable)."""
    from edge_fer.cascade_train.annotations import AnnotatedImage, split_images, webfaces_box

    p = Path(root)
    f, img_root = landmark_file(p)
    if not f.is_file():
        raise UserError(f"holds no WebFaces landmark file ({f})", param="data")
    try:
        # utf-8-sig and surrogateescape as the cascade training reads it: a BOM made the first
        # image missing, and a name in another encoding maps back to its bytes on disk
        text = f.read_text(encoding="utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        raise UserError(f"cannot read {f} ({exc.strerror or exc})", param="data") from None
    skipped = Skipped()
    rows: dict[str, list] = {}
    exists: dict[str, bool] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        skipped.rows += 1
        where = f"{f.name}:{lineno}"
        try:
            v = [float(x) for x in parts[1:]] if len(parts) == 9 else None
        except ValueError:
            v = None
        if v is None:
            skipped.add("malformed", where)
            continue
        if parts[0] not in exists:
            exists[parts[0]] = (img_root / parts[0]).is_file()
        if not exists[parts[0]]:
            skipped.add("missing_file", where)
            continue
        face = webfaces_box(*v)
        if face is None:
            skipped.add("bad_landmarks", where)
            continue
        rows.setdefault(parts[0], []).append((v[0], v[1], v[2], v[3], face, where))
    # keyed by the name as the file spells it: it may hold a sub-folder (sub/pic.jpg), and
    # `im.name` is the base name alone (a KeyError); the split orders images as the cascade
    # training's does (read_webfaces: AnnotatedImage(img_root / name))
    by_path: dict[Path, list[str]] = {}
    for n in rows:
        by_path.setdefault(img_root / n, []).append(n)  # "a.jpg" and "./a.jpg": one image
    # the images are checked after the split, which stays the cascade training's; all of them,
    # so that what is counted is the same whichever split is read
    good: dict[Path, list] = {}
    for q, names in by_path.items():
        shape = _image_shape(q)
        for xl, yl, xr, yr, face, where in (r for n in names for r in rows[n]):
            if shape is None:
                skipped.add("undecodable", where)
            elif not all(-EDGE_SLACK <= c <= lim + EDGE_SLACK
                         for c, lim in ((xl, shape[1]), (yl, shape[0]), (xr, shape[1]),
                                        (yr, shape[0]))):  # fmt: skip
                skipped.add("eyes_outside", where)
            else:
                good.setdefault(q, []).append((xl, yl, xr, yr, face))
    if skipped.rows and not good:  # (before: "no annotated faces with images in DIR (val)")
        raise UserError(
            f"none of the {skipped.rows} annotation rows of {f} is usable: {skipped.reasons()}",
            param="data",
        )
    chosen = split_images([AnnotatedImage(q) for q in by_path], split, val_fraction)
    if by_path and not chosen:  # the fraction emptied the split, not the dataset (was: --data)
        nval = round(len(by_path) * val_fraction)
        raise UserError(
            f"{val_fraction} leaves no annotated faces with images in {p} ({split}): {nval} of "
            f"its {len(by_path)} images go to validation; choose a fraction that leaves both "
            "parts at least one",
            param="val_fraction",
        )
    paths, left, right, boxes = [], [], [], []
    for im in chosen:
        for xl, yl, xr, yr, face in good.get(im.path, ()):
            paths.append(im.path)
            left.append((xl, yl))
            right.append((xr, yr))
            boxes.append((face.col, face.row, face.size))
    if not paths:
        why = f" ({skipped.line()})" if skipped.total else ""
        raise UserError(f"no annotated faces with images in {p} ({split}){why}", param="data")
    return Faces(paths, np.array(left), np.array(right), np.array(boxes, np.float64), skipped)


def read_gray(path: Path, cache: dict) -> np.ndarray:
    g = cache.get(path)
    if g is None:
        g = read_or_none(path, cv2.IMREAD_GRAYSCALE)
        if g is None:
            raise UserError(f"{path}: does not decode as an image", param="data")
        cache.clear()  # faces of one image are consecutive: keep one image
        cache[path] = g
    return g


def jittered_box(box, cfg: LearnConfig, rng) -> tuple[float, float, float]:
    """A face box (cx, cy, side) shifted and scaled at random as in training (a detector's box
    is not the annotation's): three draws from `rng`, centre x, centre y, then the scale."""
    cx, cy, side = box
    cx += rng.normal(0, cfg.box_shift) * side
    cy += rng.normal(0, cfg.box_shift) * side
    side *= math.exp(rng.normal(0, cfg.box_scale))
    return cx, cy, side


def make_patches(faces: Faces, cfg: LearnConfig, rng, jitter: bool, log=None):
    """Patches (n, P, P) uint8 and eyes in patch coordinates (n, 2, 2): [left, right] x (r, c)."""
    n, P = len(faces.paths), cfg.patch_px
    patches = np.empty((n, P, P), np.uint8)
    eyes = np.empty((n, 2, 2))
    cache: dict = {}
    t0 = time.time()
    for i in range(n):
        cx, cy, side = jittered_box(faces.boxes[i], cfg, rng) if jitter else faces.boxes[i]
        m = patch_matrix(cx, cy, side, cfg.face_px, P)
        patches[i] = extract_patch(read_gray(faces.paths[i], cache), m, P)
        for j, (x, y) in enumerate((faces.left[i], faces.right[i])):
            eyes[i, j] = (m[1, 1] * y + m[1, 2], m[0, 0] * x + m[0, 2])
        if log and (i + 1) % 2000 == 0:
            log(f"  patches {i + 1}/{n}  {time.time() - t0:.0f}s")
    return patches, eyes


def learn(cfg: LearnConfig, data: str | Path, log=None) -> EyeModel:
    """An eye model learned on the training split of WebFaces at `data`."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    rng = np.random.default_rng(cfg.seed)
    faces = read_faces(data, "train", cfg.val_fraction)
    if cfg.max_faces and len(faces.paths) > cfg.max_faces:
        keep = np.sort(rng.choice(len(faces.paths), cfg.max_faces, replace=False))
        faces = Faces([faces.paths[i] for i in keep], faces.left[keep], faces.right[keep],
                      faces.boxes[keep], faces.skipped)  # fmt: skip
    log(f"{len(faces.paths)} training faces; cutting patches")
    patches, eyes = make_patches(faces, cfg, rng, jitter=True, log=log)
    P, fp = cfg.patch_px, cfg.face_px
    # the left-eye start: the mean left eye (and the mirrored right eye) relative to the box
    mirrored = np.stack([eyes[:, 1, 0], P - 1 - eyes[:, 1, 1]], 1)
    both = np.concatenate([eyes[:, 0], mirrored])
    init = ((both.mean(0) - P / 2.0) / fp).tolist()
    n_faces = len(patches)
    R = cfg.starts
    idx = np.repeat(np.arange(n_faces), 2 * R).astype(np.int64)
    flip = np.tile(np.repeat(np.array([False, True]), R), n_faces)
    true = np.where(flip[:, None], mirrored[idx], eyes[idx, 0])
    r = P / 2.0 + init[0] * fp + rng.normal(0, cfg.start_noise, len(idx)) * fp
    c = P / 2.0 + init[1] * fp + rng.normal(0, cfg.start_noise, len(idx)) * fp
    f = np.exp(rng.normal(0, cfg.scale_noise, len(idx)))
    nint, nleaf = 2**cfg.depth - 1, 2**cfg.depth
    n_trees = cfg.stages * cfg.trees_per_stage
    tests = np.zeros((n_trees, nint, 4), np.int8)
    leaves = np.zeros((n_trees, nleaf, 2), np.float32)
    ratio = (cfg.scale_last / cfg.scale_first) ** (1 / max(1, cfg.stages - 1))
    scales = np.array([cfg.scale_first * ratio**s * fp for s in range(cfg.stages)], np.float32)
    stage_of = (np.arange(n_trees) // cfg.trees_per_stage).astype(np.int64)
    d_true = np.hypot(*(eyes[:, 1] - eyes[:, 0]).T)[idx]

    def err() -> float:
        return float(np.mean(np.hypot(r - true[:, 0], c - true[:, 1]) / d_true))

    log(f"{len(idx)} starts; start error {err():.3f} of the eye distance")
    t0 = time.time()
    lv64 = np.zeros((nleaf, 2))
    for t in range(n_trees):
        s = float(scales[stage_of[t]])
        tr = (true[:, 0] - r) / (s * f)
        tc = (true[:, 1] - c) / (s * f)
        cand = rng.integers(-127, 128, (nint, cfg.candidates, 4)).astype(np.int8)
        kernels.grow_tree(patches, idx, flip, r, c, f, tr, tc, s, cand, cfg.depth,
                          tests[t], lv64)  # fmt: skip
        leaves[t] = (lv64 * cfg.shrinkage).astype(np.float32)
        kernels.run_cascade(patches, idx, flip, r, c, f, tests, leaves.astype(np.float64),
                            stage_of, scales.astype(np.float64), cfg.depth, t, t + 1)  # fmt: skip
        if (t + 1) % cfg.trees_per_stage == 0:
            log(f"stage {stage_of[t] + 1}/{cfg.stages}  trees {t + 1}/{n_trees}  "
                f"train error {err():.3f}  {time.time() - t0:.0f}s")  # fmt: skip
    g = np.random.default_rng(12345)
    starts = np.empty((cfg.infer_starts, 3), np.float32)
    starts[:, :2] = g.normal(0, cfg.start_noise, (cfg.infer_starts, 2))
    starts[:, 2] = np.exp(g.normal(0, cfg.scale_noise, cfg.infer_starts))
    starts[0] = (0, 0, 1)
    model = EyeModel(
        tests=tests, leaves=leaves, scales=scales, starts=starts,
        trees_per_stage=cfg.trees_per_stage, depth=cfg.depth, face_px=fp, patch_px=P,
        init=(float(init[0]), float(init[1])),
    )  # fmt: skip
    calibrate(model, patches[: min(n_faces, 3000)], eyes[: min(n_faces, 3000)])
    return model


def calibrate(model: EyeModel, patches: np.ndarray, eyes: np.ndarray) -> None:
    """Confidence limits from training faces: the spread above which most eyes are wrong, and
    the eye distances and angles that occur (widened)."""
    al = Aligner(model)
    spread, ok = [], []
    dist, ang = [], []
    for i in range(len(patches)):
        lp, rp, ls, rs = al.patch_eyes(patches[i])
        d = math.hypot(*(eyes[i, 1] - eyes[i, 0]))
        e = max(math.hypot(*(lp - eyes[i, 0])), math.hypot(*(rp - eyes[i, 1]))) / d
        dp = math.hypot(*(rp - lp))
        spread.append(max(ls, rs) / max(dp, 1e-6))
        ok.append(e <= 0.25)
        dist.append(d / model.face_px)
        ang.append(abs(math.degrees(math.atan2(*(eyes[i, 1] - eyes[i, 0])))))
    sp, good = np.array(spread), np.array(ok)
    # the smallest spread limit that keeps 97% of the eyes found right
    model.max_spread = float(max(np.quantile(sp[good], 0.97), 1e-3)) if good.any() else 0.15
    model.min_dist = float(np.quantile(dist, 0.002) * 0.8)
    model.max_dist = float(np.quantile(dist, 0.998) * 1.25)
    model.max_angle = float(min(60.0, np.quantile(ang, 0.998) + 10))


def evaluate(model: EyeModel, data: str | Path, split: str = "val", val_fraction: float = 0.1,
             jitter: bool = False, seed: int = 1, limit: int = 0) -> dict:  # fmt: skip
    """Eye error on a split, as a fraction of the true inter-eye distance: mean per eye, and
    the share of faces whose worse eye is within 0.1 / 0.25 (the BioID criterion); over all
    faces and over the faces whose eyes count as found. `jitter`: boxes shifted and scaled as
    in training (a detector's boxes), else the annotation's."""
    faces = read_faces(data, split, val_fraction)
    n = len(faces.paths) if not limit else min(limit, len(faces.paths))
    al = Aligner(model)
    rng = np.random.default_rng(seed)
    cfg = LearnConfig()
    cache: dict = {}
    errs, worst, found, times = [], [], [], []
    for i in range(n):
        gray = read_gray(faces.paths[i], cache)
        cx, cy, side = jittered_box(faces.boxes[i], cfg, rng) if jitter else faces.boxes[i]
        t0 = time.perf_counter()
        e = al.eyes(gray, (cx - side / 2, cy - side / 2, side, side))
        times.append(time.perf_counter() - t0)
        d = float(np.hypot(*(faces.right[i] - faces.left[i])))
        el = math.hypot(e.left[0] - faces.left[i][0], e.left[1] - faces.left[i][1]) / d
        er = math.hypot(e.right[0] - faces.right[i][0], e.right[1] - faces.right[i][1]) / d
        errs += [el, er]
        worst.append(max(el, er))
        found.append(e.found)
    errs_a, worst_a, found_a = np.array(errs), np.array(worst), np.array(found)
    fe = np.repeat(found_a, 2)

    def stats(w, e) -> dict:
        return {
            "faces": len(w),
            "mean_eye_error": round(float(e.mean()), 4) if len(e) else None,
            "median_eye_error": round(float(np.median(e)), 4) if len(e) else None,
            "within_0.1": round(float((w <= 0.1).mean()), 4) if len(w) else None,
            "within_0.25": round(float((w <= 0.25).mean()), 4) if len(w) else None,
        }

    return {
        "split": split,
        "boxes": "jittered like a detector's" if jitter else "from the landmarks",
        "all": stats(worst_a, errs_a),
        "found": stats(worst_a[found_a], errs_a[fe]),
        "found_rate": round(float(found_a.mean()), 4),
        "ms_per_face": round(1000 * float(np.median(times)), 3),
    }
