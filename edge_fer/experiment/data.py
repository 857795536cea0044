"""The faces a study trains and tests on.

A study needs an image-folder dataset: its variants train through `edge_fer.train.trainer` on
folders of links to the original files (one class folder per class of the variant's vocabulary),
so the images are never copied. The test split is fixed before any training:

- FER2013 folders: train on Training, test on PrivateTest (PublicTest is not used);
- other folder datasets: whole groups of faces are held out, a group being the file name without
  its last two `_<digits>` fields (SFEW's `<Movie>_<frame>_<n>.png`: the movie clip), so frames of
  one clip never sit on both sides; files without that pattern are their own group.

Inside the training part the trainer holds out a random 10% (seeded) for model selection.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_fer.data import FaceSet, load_dataset
from edge_fer.data.loaders import detect_layout
from edge_fer.errors import UserError
from edge_fer.imageio import read_or_none

_GROUP_RE = re.compile(r"(_\d+){2}$")
TREE_MANIFEST = "tree.json"


@dataclass
class StudyData:
    root: Path
    layout: str
    train: FaceSet  # ids: paths relative to root
    test: FaceSet
    split: str  # how train / test were made, for the report
    train_available: int  # faces of the training part before --max-train-faces
    test_available: int

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes

    @property
    def trained_classes(self) -> tuple[str, ...]:
        """The classes with training faces, in the data's order: a study's full vocabulary."""
        return tuple(c for c, n in zip(self.classes, self.train.counts()) if n)

    def describe(self) -> str:
        return (
            f"train {len(self.train)} of {self.train_available} faces ({_counts(self.train)}); "
            + self.describe_test()
        )

    def describe_test(self) -> str:
        return f"test {len(self.test)} of {self.test_available} faces ({_counts(self.test)})"


def _counts(fs: FaceSet) -> str:
    return ", ".join(f"{c} {n}" for c, n in zip(fs.classes, fs.counts()))


def group_of(face_id: str) -> str:
    stem = Path(face_id).stem
    return _GROUP_RE.sub("", stem)


def _mask(n: int, idx: np.ndarray) -> np.ndarray:
    m = np.zeros(n, bool)
    m[idx] = True
    return m


def subsample(fs: FaceSet, limit: int, seed: int) -> FaceSet:
    """A seeded class-stratified sample of at most `limit` faces (0: all)."""
    from edge_fer.quantize.calib_data import stratified_sample

    if not limit or len(fs) <= limit:
        return fs
    return fs.subset(_mask(len(fs), stratified_sample(fs.labels, limit, seed)))


def split_by_group(fs: FaceSet, fraction: float, seed: int) -> tuple[np.ndarray, int]:
    """Test mask holding out whole groups (seeded) until `fraction` of the faces; and the
    number of groups."""
    groups = np.array([group_of(i) for i in fs.ids])
    names = np.unique(groups)
    order = np.random.default_rng(seed).permutation(len(names))
    want = fraction * len(fs)
    held: list[str] = []
    n = 0
    for k in order:
        if n >= want:
            break
        held.append(names[k])
        n += int((groups == names[k]).sum())
    return np.isin(groups, held), len(names)


def load_study_data(
    data: str | os.PathLike,
    seed: int = 0,
    max_train: int = 0,
    max_test: int = 0,
    test_fraction: float = 0.2,
    size: int = 48,
) -> StudyData:
    p = Path(data)
    layout = detect_layout(p)
    if layout not in ("fer2013-folder", "class-folders"):
        raise UserError(
            f"{p}: a study needs an image-folder dataset (FER2013 folders or one folder per "
            f"class); this one is {layout}",
            param="data",
        )
    if not 0 < test_fraction < 1:
        raise UserError(f"must be in (0, 1), got {test_fraction:g}", param="test_fraction")
    if layout == "fer2013-folder":
        train = load_dataset(p, "train", size=size, layout=layout)
        test = load_dataset(p, "private-test", size=size, layout=layout)
        split = "FER2013 Training split for training, PrivateTest for the test (PublicTest unused)"
    else:
        full = load_dataset(p, "all", size=size, layout=layout)
        m, n_groups = split_by_group(full, test_fraction, seed)
        if n_groups < 2:
            raise UserError(f"{p}: needs at least two images to hold one out", param="data")
        train, test = full.subset(~m), full.subset(m)
        per_face = n_groups == len(full)
        unit = (
            "faces at random"
            if per_face
            else f"whole clips ({n_groups} groups: file name without its last two _<digits>)"
        )
        split = f"{int(m.sum())} of {len(full)} faces held out for the test, {unit}, seed {seed}"
    n_train, n_test = len(train), len(test)
    train = subsample(train, max_train, seed)
    test = subsample(test, max_test, seed)
    have = [c for c, n in zip(train.classes, train.counts()) if n]
    if len(have) < 2:  # before: the trainer said so after the study had begun, naming its links
        raise UserError(
            f"{p}: training faces of {len(have)} class{'' if len(have) == 1 else 'es'} "
            f"({', '.join(have) or 'none'}); a classifier needs faces of at least two",
            param="data",
        )
    return StudyData(p, layout, train, test, split, n_train, n_test)


def study_data(opts) -> StudyData:
    """`load_study_data` with a study's options: its data, budget (seed, sample sizes) and test
    fraction."""
    b = opts.budget
    return load_study_data(
        opts.data, b.seed, b.max_train_faces, b.max_test_faces, opts.test_fraction
    )


def colour_check(root: Path, ids: list[str], samples: int = 32) -> tuple[int, int]:
    """(colour images, images looked at) over an even sample of the files: an image is colour
    when it has 3+ channels that are not all equal."""
    if not ids:
        return 0, 0
    idx = np.linspace(0, len(ids) - 1, min(samples, len(ids))).round().astype(int)
    colour = seen = 0
    for i in sorted(set(idx.tolist())):
        img = read_or_none(root / ids[i], cv2.IMREAD_UNCHANGED)
        if img is None:
            continue
        seen += 1
        if img.ndim == 3 and img.shape[2] >= 3:
            b, g, r = img[..., 0], img[..., 1], img[..., 2]
            if not (np.array_equal(b, g) and np.array_equal(g, r)):
                colour += 1
    return colour, seen


def read_colour(root: Path, ids: list[str], size: int = 48) -> np.ndarray:
    """(N, 3, size, size) uint8 BGR faces (the colour variant's input)."""
    out = np.empty((len(ids), 3, size, size), np.uint8)
    for k, i in enumerate(ids):
        img = read_or_none(root / i, cv2.IMREAD_COLOR)
        if img is None:
            raise UserError(f"{root / i}: cannot decode image")
        if img.shape[:2] != (size, size):
            interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
            img = cv2.resize(img, (size, size), interpolation=interp)
        out[k] = img.transpose(2, 0, 1)
    return out


def link_tree(root: Path, fs: FaceSet, names: list[str | None], dest: Path) -> Path:
    """Folders of links dest/<class>/<file> for the faces of `fs`: class = names[label] (None:
    the face is left out). Reused when its manifest matches, else rebuilt."""
    want = {
        "root": str(root.resolve()),
        "faces": [
            [i, names[lab]] for i, lab in zip(fs.ids, fs.labels.tolist()) if names[lab] is not None
        ],
    }
    man = dest / TREE_MANIFEST
    if man.is_file():
        try:
            if json.loads(man.read_text()) == want:
                return dest
        except ValueError:
            pass
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    src_root = root.resolve()
    for face_id, cls in want["faces"]:
        d = dest / cls
        d.mkdir(exist_ok=True)
        # a flat name that never starts like a FER2013 file (the trainer would then read
        # FER2013 splits): "x_" + the path with its separators folded
        flat = "x_" + face_id.replace(os.sep, "__").replace("/", "__")
        os.symlink(src_root / face_id, d / flat)
    man.write_text(json.dumps(want))
    return dest
