"""Calibration faces: where they come from, which ones, and the batches the model sees.

Two sources, both ending in the same `CalibFaces` (uint8 grayscale crops, one id per face):

- a labelled dataset split (`from_dataset`): a seeded, class-stratified sample of N faces, each
  class represented in proportion to its share of the split (and at least once);
- a user's own video file, image, folder or glob (`from_source`): faces found by the PICO
  detector and cropped with the model's crop margin, exactly as `edge-fer run` crops them;
  calibrating on the deployment camera's faces is the point. A seeded reservoir sample keeps N
  of all the faces found, so a long video does not fill the memory.

For a model trained on eye-aligned faces (`spec.align`), the faces are aligned as the model
sees them: `from_source(spec=...)` cuts them aligned as `edge-fer run` does, and `aligned_for`
(which `calibrate` applies) aligns a dataset's pre-cropped faces as the training aligned its own.

`FaceBatchReader` is ONNX Runtime's CalibrationDataReader over those faces, prepared with the
model's own `PreprocessSpec` (the same float32 NCHW input `Classifier.predict` feeds).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edge_fer.errors import UserError
from edge_fer.limits import check_count
from edge_fer.preprocess import DEFAULT_CROP_MARGIN, PreprocessSpec

MIN_FACES = 100
DEFAULT_SAMPLES = 512


@dataclass
class CalibFaces:
    """Calibration face crops: images (N, S, S) uint8 gray, ids (N,), labels when known."""

    images: np.ndarray
    ids: list[str]
    source: str  # where they came from, for the report
    labels: np.ndarray | None = None  # (N,) int64 into classes, None for detector crops
    classes: tuple[str, ...] = ()
    seen: int = 0  # faces available before sampling
    notes: list[str] = field(default_factory=list)
    # eye-aligned already (from_source for a model trained with --align); otherwise the
    # calibration aligns them for such a model, as its training aligned its faces
    aligned: bool = False
    # the dataset entries skipped (skip_bad): how many, and the first ones ("ID: why") by name
    skipped: int = 0
    skipped_entries: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def class_counts(self) -> dict[str, int]:
        if self.labels is None or not self.classes:
            return {}
        n = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(k) for c, k in zip(self.classes, n)}


def check_faces(faces: CalibFaces, min_faces: int = MIN_FACES) -> None:
    """UserError when the set is not a consistent `CalibFaces` (one id, and label, per image),
    is too small or (for labelled data) holds a single class."""
    check_count(min_faces, "min_faces")
    if not isinstance(faces, CalibFaces):
        raise UserError(
            f"must be an edge_fer.quantize.CalibFaces, got {type(faces).__name__}", param="faces"
        )
    if not isinstance(faces.images, np.ndarray) or faces.images.ndim not in (3, 4):
        shape = getattr(faces.images, "shape", None)
        raise UserError(
            f"must hold its images as a numpy array of face crops (N, S, S), got "
            f"{type(faces.images).__name__}" + (f" of shape {shape}" if shape else ""),
            param="faces",
        )
    n = len(faces)
    # calib_ids.txt names the faces calibrated on: a list of another length misnames them
    ids = faces.ids
    if not isinstance(ids, (list, tuple, np.ndarray)) or len(ids) != n:
        got = f"{len(ids)} ids" if isinstance(ids, (list, tuple, np.ndarray)) else repr(ids)
        raise UserError(f"has {n} images but {got}; one id per image", param="faces")
    if faces.labels is not None and len(faces.labels) != n:
        raise UserError(f"has {n} images but {len(faces.labels)} labels", param="faces")
    if n < min_faces:
        if faces.labels is None:
            hint = "use more images or frames, a lower --min-size, or check --cascade"
        elif faces.seen and faces.seen <= n:  # every face of the split: --samples cannot help
            hint = "that is every face it holds; use a larger dataset or split"
        else:
            hint = "use a larger split or a larger --samples"
        raise UserError(
            f"calibration set from {faces.source} has {n} face{'s' if n != 1 else ''}; "
            f"at least {min_faces} are needed ({hint})"
        )
    if faces.labels is not None:
        present = [c for c, k in faces.class_counts().items() if k > 0]
        if len(present) < 2:
            only = present[0] if present else "none"
            raise UserError(
                f"calibration set from {faces.source} holds a single class ({only}); "
                "calibrate on faces of every expression (a whole split, not one class folder)"
            )


def stratified_sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of n samples, each class in proportion to its count (at least one each).

    Largest-remainder allocation, then a seeded draw without replacement inside each class;
    returned in ascending order (dataset order).
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (n / counts.sum())
    alloc = np.floor(quota).astype(int)
    alloc = np.maximum(alloc, 1)
    alloc = np.minimum(alloc, counts)
    rest = n - alloc.sum()
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    while rest > 0:
        progressed = False
        for i in order:
            if rest == 0:
                break
            if alloc[i] < counts[i]:
                alloc[i] += 1
                rest -= 1
                progressed = True
        if not progressed:
            break
    while rest < 0:  # the at-least-one rule overshot: take from the largest classes
        i = int(np.argmax(alloc))
        alloc[i] -= 1
        rest += 1
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(labels == c), size=int(k), replace=False)
        for c, k in zip(classes, alloc)
    ]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def from_dataset(
    path: str | os.PathLike,
    split: str = "train",
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    size: int = 48,
    layout: str | None = None,
    cache: bool = True,
    ids: list[str] | None = None,
    skip_bad: bool = False,
) -> CalibFaces:
    """A seeded class-stratified sample of `samples` faces of a labelled dataset split, or the
    faces named by `ids` (an ids file of an earlier calibration, to reproduce it).
    skip_bad: skip (and count) unreadable images instead of refusing the dataset."""
    from edge_fer.data import load_dataset
    from edge_fer.data.loaders import detect_layout

    check_count(samples, "samples")
    check_count(size, "size")
    check_count(seed, "seed", lowest=0)  # numpy's generator takes no negative seed
    if os.fspath(path).strip():  # (an empty path is load_dataset's to refuse)
        layout = layout or detect_layout(Path(path))  # once: the split recorded depends on it
    fs = load_dataset(path, split, size=size, layout=layout, skip_bad=skip_bad, cache=cache)
    if ids is not None:  # an earlier calibration set, by its ids
        from edge_fer.limits import check_names

        ids = list(check_names(ids, "ids"))
        twice = sorted(i for i, n in collections.Counter(ids).items() if n > 1)
        if twice:  # each would weigh double in the ranges, and the report counted it twice
            raise UserError(
                f"{len(twice)} calibration {'id is' if len(twice) == 1 else 'ids are'} named "
                f"more than once: {', '.join(twice[:3])}",
                param="ids",
            )
        where = {i: k for k, i in enumerate(fs.ids)}
        unknown = [i for i in ids if i not in where]
        if unknown:
            raise UserError(
                f"{len(unknown)} of the {len(ids)} calibration ids are not in {path} "
                f"(split {split}): {', '.join(unknown[:3])}"
            )
        idx = np.array([where[i] for i in ids], dtype=np.int64)
    else:
        idx = stratified_sample(fs.labels, samples, seed)
    ids = [fs.ids[i] for i in idx] if fs.ids else [f"{split}:{i}" for i in idx]
    n = int(fs.skipped)
    return CalibFaces(
        images=fs.images[idx],
        ids=ids,
        source=f"{Path(path).name} ({split if str(layout).startswith('fer2013') else 'all'})",
        labels=fs.labels[idx],
        classes=tuple(fs.classes),
        seen=len(fs),
        notes=[f"{n} unreadable {'entry' if n == 1 else 'entries'} skipped"] if n else [],
        skipped=n,
        skipped_entries=list(fs.skipped_entries),
    )


def aligned_for(faces: CalibFaces, spec: PreprocessSpec) -> CalibFaces:
    """The calibration faces as a model with `spec` sees them: for a model trained on
    eye-aligned faces (`spec.align`), faces not aligned yet (a dataset's, pre-cropped) are
    aligned as its training aligned its own (`edge_fer.align.as_trained`; CLAHE stays with
    `spec.prepare`), with a note for the report. Others are returned as they are."""
    if not spec.align or faces.aligned:
        return faces
    from edge_fer.align import as_trained

    found = np.zeros(len(faces), bool)
    images = as_trained(faces.images, spec, log=False, found=found)
    note = (
        f"faces aligned on their eyes as the model's training faces were "
        f"({int(found.sum())}/{len(faces)} eyes found, the rest as cropped)"
    )
    return replace(faces, images=images, aligned=True, notes=faces.notes + [note])


@dataclass
class DetectOptions:
    """PICO detector settings for calibration crops (those of `edge-fer detect`)."""

    min_size: float | None = None  # None: 0.1, never below the cascade's min_face setting
    max_size: float = 1.0
    threshold: float | None = None  # None: the cascade's recommended threshold
    scale_factor: float | None = None  # None: the cascade's setting, else 1.1
    stride_factor: float = 0.1
    angle: float = 0.0
    every: int = 1  # videos: look at every n-th frame
    max_frames: int | None = None  # stop after this many frames (live sources need it or N faces)


def _box_id(name: str, frame: int | None, box) -> str:
    x, y, w, h = (round(float(v)) for v in box)
    where = f"#{frame}" if frame is not None else ""
    return f"{name}{where}:{x},{y},{w},{h}"


def source_label(where) -> str:
    """How a calibration source is named in the files that ship (model metadata, reports, ids):
    a file or folder by its name, a stream without its password, a camera by its index; never
    a local absolute path (or a GStreamer pipeline, which holds paths and devices)."""
    from edge_fer.runtime.sources import redacted

    if where.kind in ("file", "images"):
        from edge_fer.runtime.sources import has_glob

        parts = Path(str(where.target)).parts
        magic = next((k for k, q in enumerate(parts) if has_glob(q)), None)
        if magic is None:  # a file or folder by its name
            return parts[-1] if parts else str(where.target)
        return "/".join(parts[max(magic - 1, 0) :])  # a glob from its folder: photos/*/*.jpg
    if where.kind == "network":
        return redacted(str(where.target))
    if where.kind == "camera":
        return f"camera {where.target}"
    return f"a {where.kind} source"


def _shared_folder(files) -> str | None:
    """The folder an image source's files share (their names are given under it)."""
    try:
        return os.path.commonpath([os.path.dirname(os.path.abspath(str(f))) for f in files])
    except ValueError:  # no files, or different drives (Windows)
        return None


MAX_MARGIN = 4.0  # from_source: the border around a face, in faces (the default is 0.1-0.2)


def from_source(
    source: str | os.PathLike,
    cascade: str | os.PathLike | None = None,
    margin: float = DEFAULT_CROP_MARGIN,
    size: int = 48,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    detect: DetectOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
    spec: PreprocessSpec | None = None,
) -> CalibFaces:
    """Faces the PICO detector finds in a video file, an image, a folder or a glob.

    Every face found is a candidate; a seeded reservoir sample keeps `samples` of them. Ids
    are `file#frame:x,y,w,h` for videos and `file:x,y,w,h` for images. A live source (camera,
    stream) stops once `samples` faces are collected or after `detect.max_frames` frames.
    progress(frames, faces) is called after every frame looked at. `spec`: the model's; when it
    says `align`, each face is cut aligned on its eyes as `edge-fer run` cuts it for that model
    (`runtime.crops.face_cropper`, with this `margin` and `size`).
    """
    import cv2

    from edge_fer.detect.config import DetectorOptions, resolve_cascade
    from edge_fer.detect.factory import DetectorPicker
    from edge_fer.runtime.crops import crop_face, face_cropper
    from edge_fer.runtime.sources import open_source, parse_source

    if detect is not None and not isinstance(detect, DetectOptions):  # (a dict: AttributeError)
        raise UserError(f"must be a DetectOptions, not {type(detect).__name__}", param="detect")
    opts = detect or DetectOptions()
    check_count(samples, "samples")
    check_count(size, "size")
    from edge_fer.preprocess import MAX_INPUT_SIZE

    if size > MAX_INPUT_SIZE:  # each face is cut at size x size: 10**6 was a terabyte
        raise UserError(f"must be at most {MAX_INPUT_SIZE} px, got {size}", param="size")
    check_count(seed, "seed", lowest=0)  # numpy's generator takes no negative seed
    check_count(opts.every, "every")
    if opts.max_frames is not None:
        check_count(opts.max_frames, "max_frames", lowest=0)
    # a border of MARGIN x the face on each side: beyond a few faces it is a typo (1e9 failed
    # in OpenCV's copyMakeBorder)
    if not 0 <= margin <= MAX_MARGIN:  # NaN too
        raise UserError(f"must be in 0..{MAX_MARGIN}, got {margin}", param="margin")
    where = parse_source(str(source))
    cpath = resolve_cascade(cascade)
    # as edge-fer run: small frames get the low-resolution cascade, and a cascade's .json
    # settings fill what the options leave unset
    pick = DetectorPicker(
        cascade,
        DetectorOptions(
            min_size=opts.min_size,
            max_size=opts.max_size,
            scale_factor=opts.scale_factor,
            stride_factor=opts.stride_factor,
            angle=opts.angle,
            threshold=opts.threshold,
            memory=1,
        ),
    )
    align = False
    if spec is not None and spec.align:
        align = True
        cut = face_cropper(replace(spec, crop_margin=margin, input_size=size))
    else:

        def cut(gray, box):
            return crop_face(gray, box, margin, size)

    rng = np.random.default_rng(seed)
    keep_img: list[np.ndarray] = []
    keep_id: list[str] = []
    seen = 0
    frames = 0
    notes: list[str] = []
    src = open_source(where, warn=notes.append)
    label = source_label(where)
    try:
        files = getattr(src, "files", None)
        base = _shared_folder(files) if files else None
        while True:
            if opts.max_frames is not None and frames >= opts.max_frames:
                break
            if where.live and seen >= samples:
                break
            fr = src.read()
            if fr is None:
                break
            if where.kind == "file" and fr.index % opts.every:
                continue
            frames += 1
            img = fr.image
            gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            if files is not None:  # an image source: name the file, not a frame number
                f = os.path.abspath(str(files[fr.index]))
                name = os.path.relpath(f, base) if base else Path(f).name
                fidx = None
            else:
                name, fidx = label, fr.index
            for d in pick(gray.shape).detect(gray):
                box = (d.x, d.y, d.w, d.h)
                crop = cut(gray, box)
                ident = _box_id(name, fidx, box)
                if len(keep_img) < samples:  # reservoir sampling (Algorithm R)
                    keep_img.append(crop)
                    keep_id.append(ident)
                else:
                    j = int(rng.integers(0, seen + 1))
                    if j < samples:
                        keep_img[j] = crop
                        keep_id[j] = ident
                seen += 1
            if progress is not None:
                progress(frames, seen)
    finally:
        src.close()
    images = np.stack(keep_img) if keep_img else np.zeros((0, size, size), np.uint8)
    names = ", ".join(sorted(pick.used)) or cpath.name
    notes.append(f"{frames} frames looked at, {seen} faces found, cascade {names}")
    if align:
        notes.append("faces cut aligned on their eyes, as edge-fer run cuts them for this model")
    return CalibFaces(
        images=images,
        ids=keep_id,
        source=label,
        seen=seen,
        notes=notes,
        aligned=align,
    )


class FaceBatchReader:
    """ONNX Runtime CalibrationDataReader (duck-typed) over prepared face batches.

    get_next() -> {input_name: float32 (B, C, S, S)} or None at the end; rewind() starts over.
    Also iterable as plain arrays (`batches()`), which `ranges.collect` uses.

    full: every batch holds exactly `batch_size` faces, the last one filled up with faces from
    the start of the set, for a model whose graph has a fixed batch size (it refuses any other).
    """

    def __init__(
        self,
        faces: np.ndarray | list[np.ndarray],
        spec: PreprocessSpec,
        input_name: str = "input",
        batch_size: int = 32,
        limit: int | None = None,
        full: bool = False,
    ) -> None:
        check_count(batch_size, "batch_size")
        self.faces = faces if limit is None else faces[:limit]
        self.spec = spec
        self.input_name = input_name
        self.batch_size = batch_size
        self.full = full
        self._it: Iterator[np.ndarray] | None = None

    def __len__(self) -> int:
        return (len(self.faces) + self.batch_size - 1) // self.batch_size

    def batches(self) -> Iterator[np.ndarray]:
        n, bs = len(self.faces), self.batch_size
        for i in range(0, n, bs):
            x = self.spec.prepare(self.faces[i : i + bs], first=i)
            if self.full and len(x) < bs:
                # a few faces counted twice in the ranges, rather than a batch the model refuses
                more = [self.faces[j % n] for j in range(i + len(x), i + bs)]
                x = np.concatenate([x, self.spec.prepare(more)])
            yield x

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self.batches()
        x = next(self._it, None)
        return None if x is None else {self.input_name: x}

    def rewind(self) -> None:
        self._it = None

    def __iter__(self):
        self.rewind()
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        d = self.get_next()
        if d is None:
            raise StopIteration
        return d
