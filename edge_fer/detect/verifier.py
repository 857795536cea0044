"""A second look at each detected face: a small CNN that scores every grouped detection as face or
not and moves its box onto the face (the refinement stage of MTCNN-style cascades, Zhang et al.
2016, behind a PICO first stage).

    ver = Verifier.load("edge_fer/assets/face_verify.onnx")
    prob, boxes = ver(gray, dets)      # dets (n, 4+) row, col, size[, score] -> prob (n,), (n, 3)
    kept = ver.filter(gray, dets)      # refined, scored, thresholded and de-duplicated

Why: a pico cascade on small, washed-out faces also fires on foreheads, hair and bookshelves,
and its window clusters split one face into two (the forehead above, the face below); the
cascade's score cannot tell those apart from a weak face. The verifier sees each detection with
its surroundings (`CONTEXT` x the box), so a forehead box is moved down onto the face and
merges with the face's own box, and a background box gets a low probability.

The crops (`crop_windows`) and their normalisation (`normalize`) are shared by training
(`edge_fer.train.verifier`) and the runtime, so both see the same pixels. Runtime needs only
numpy, OpenCV and ONNX Runtime.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from edge_fer.errors import UserError
from edge_fer.fileio import first_line

CONTEXT = 1.5  # crop side / box side: the forehead-or-face question needs what is around the box
SIZE = 32  # crop side in pixels
# what a verifier's metadata may ask for (a model file is input): crops of at most 256x256 keep
# the memory per detection small; a context outside 0.5..8 box sides is no second look
MIN_SIZE, MAX_SIZE = 8, 256
MIN_CONTEXT, MAX_CONTEXT = 0.5, 8.0
# a box side at most this many times the frame's longer side: a crop is padded out to CONTEXT x
# the box, so a wild size (1e12) would allocate without bound; no face outgrows its frame twice
MAX_BOX_FRAMES = 2.0


def crop_windows(
    gray: np.ndarray, dets: np.ndarray, context: float = CONTEXT, size: int = SIZE
) -> np.ndarray:
    """uint8 (n, size, size) crops centred on each detection (row, col, side), `context` x its
    side, edges replicated where the crop leaves the frame."""
    d = np.asarray(dets, np.float64).reshape(len(dets), -1) if len(dets) else np.zeros((0, 3))
    out = np.empty((len(d), size, size), np.uint8)
    h, w = gray.shape[:2]
    for i, (r, c, s) in enumerate(d[:, :3]):
        half = max(context * s / 2, 1.0)
        y0, y1 = round(r - half), round(r + half)
        x0, x1 = round(c - half), round(c + half)
        y1, x1 = max(y1, y0 + 1), max(x1, x0 + 1)
        roi = gray[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
        if roi.size == 0:  # entirely outside: a flat crop scores as nothing
            out[i] = 0
            continue
        pads = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
        if any(pads):
            roi = cv2.copyMakeBorder(roi, *pads, cv2.BORDER_REPLICATE)
        interp = cv2.INTER_AREA if roi.shape[0] > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(roi, (size, size), interpolation=interp)
    return out


def normalize(crops: np.ndarray) -> np.ndarray:
    """float32 (n, 1, size, size): each crop minus its mean, over its spread (floored, so flat
    walls stay flat instead of becoming amplified noise)."""
    x = np.asarray(crops, np.float32)
    m = x.mean(axis=(1, 2), keepdims=True)
    s = x.std(axis=(1, 2), keepdims=True)
    return ((x - m) / (s + 10.0))[:, None]


def apply_offsets(dets: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Boxes (n, 3) row, col, size moved by the network's offsets (drow, dcol in box sides,
    log of the size ratio)."""
    d = np.asarray(dets, np.float64)[:, :3]
    o = np.asarray(offsets, np.float64)
    s = d[:, 2]
    return np.stack(
        [d[:, 0] + o[:, 0] * s, d[:, 1] + o[:, 1] * s, s * np.exp(np.clip(o[:, 2], -1.0, 1.0))],
        axis=1,
    )


def offsets_to(dets: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The offsets (n, 3) that move boxes `dets` onto `target` (both row, col, size): the
    training targets of the box regression, the inverse of `apply_offsets`."""
    d = np.asarray(dets, np.float64)[:, :3]
    t = np.asarray(target, np.float64)[:, :3]
    return np.stack(
        [(t[:, 0] - d[:, 0]) / d[:, 2], (t[:, 1] - d[:, 1]) / d[:, 2], np.log(t[:, 2] / d[:, 2])],
        axis=1,
    )


def square_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (n, m) of square boxes given as rows (row, col, size, ...)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    r, c, s = (a[:, i][:, None] for i in range(3))
    r2, c2, s2 = (b[:, i][None] for i in range(3))
    dr = np.minimum(r + s / 2, r2 + s2 / 2) - np.maximum(r - s / 2, r2 - s2 / 2)
    dc = np.minimum(c + s / 2, c2 + s2 / 2) - np.maximum(c - s / 2, c2 - s2 / 2)
    inter = np.clip(dr, 0, None) * np.clip(dc, 0, None)
    return inter / (s * s + s2 * s2 - inter)


def nms(dets: np.ndarray, iou: float) -> np.ndarray:
    """Indices of rows (row, col, size, score...) kept by greedy non-maximum suppression on
    the square boxes, best score (column 3) first."""
    d = np.asarray(dets, np.float64)
    order = np.argsort(-d[:, 3], kind="stable")
    over = square_iou(d, d) > iou
    keep: list[int] = []
    for i in order:
        if not any(over[i, j] for j in keep):
            keep.append(int(i))
    return np.array(keep, np.int64)


def _number(v) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    return isinstance(v, (int, np.integer)) or bool(np.isfinite(v))  # a big int is no float


def _integer(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _metadata(path: Path, meta: dict) -> dict:
    """The verifier's `edge_fer_verifier` metadata ({} when absent), checked: a JSON object whose
    `context` and `size`, when present, are numbers in range (other keys are training notes)."""
    raw = meta.get("edge_fer_verifier")
    if raw is None:
        return {}
    try:
        cfg = json.loads(raw) if len(raw) <= 1 << 20 else None
    except (ValueError, RecursionError):
        cfg = None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: face verifier metadata (edge_fer_verifier) is not a JSON object")
    out = {}
    checks = (
        ("context", _number, MIN_CONTEXT, MAX_CONTEXT, "a number"),
        ("size", _integer, MIN_SIZE, MAX_SIZE, "an integer"),
    )
    for key, kind, lo, hi, what in checks:
        if key in cfg:
            v = cfg[key]
            if not kind(v) or not lo <= v <= hi:
                shown = json.dumps(v)
                shown = shown if len(shown) <= 40 else shown[:37] + "..."
                raise UserError(
                    f"{path}: face verifier metadata {key!r} must be {what} in {lo:g}..{hi:g}, "
                    f"got {shown}"
                )
            out[key] = v
    return out


def resolve_verifier_path(value, cascade_path: str | Path) -> Path:
    """The verifier file a cascade's settings name (`verifier`): a relative path that stays
    inside the cascade's folder (no absolute path, no `..`, no symlink leading out), so that a
    cascade handed over by someone else cannot make edge-fer open an arbitrary file. An
    explicit `--verifier FILE` is the user's own choice and does not come through here."""
    settings = Path(cascade_path).with_suffix(".json")
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise UserError(f"{settings}: 'verifier' must be a file name next to the cascade")
    rel = Path(value)
    if rel.is_absolute() or ".." in rel.parts or value.startswith("~"):
        raise UserError(
            f"{settings}: 'verifier' must be a file inside the cascade's folder, got {value!r}"
        )
    folder = Path(cascade_path).parent
    try:
        inside = (folder / rel).resolve().relative_to(folder.resolve())
    except (ValueError, OSError, RuntimeError):
        inside = None
    if inside is None:
        raise UserError(
            f"{settings}: 'verifier' {value!r} leads outside the cascade's folder (a symlink)"
        )
    return folder / rel


def _check_frame(gray) -> None:
    from edge_fer.detect.detector import Detector

    Detector._check_frame(gray, "gray")  # the detector's frames are the verifier's


def _check_rows(dets, shape: tuple[int, ...], cols: int) -> np.ndarray:
    """`dets` as float64 (n, cols+) rows (row, col, size[, score]) for a frame of `shape`; a
    UserError naming `dets` for rows the crops cannot be cut from (NaN, a size <= 0 or wildly
    larger than the frame), which otherwise failed deep in numpy or OpenCV, or scored a box of
    negative size."""
    what = "row, col, size" + (", score" if cols > 3 else "")
    try:
        d = np.asarray(dets, np.float64)
    except (TypeError, ValueError):
        raise UserError(
            f"must be an (n, {cols}+) array of {what} rows, got {type(dets).__name__}",
            param="dets",
        ) from None
    if d.size == 0 and d.ndim <= 2:  # no detections: [] as well as (0, 4)
        return np.zeros((0, max(cols, d.shape[-1] if d.ndim == 2 else 0)))
    if d.ndim != 2 or d.shape[1] < cols:
        raise UserError(
            f"must be an (n, {cols}+) array of {what} rows, got shape {d.shape}", param="dets"
        )
    bad = ~np.isfinite(d).all(axis=1)
    if bad.any():
        raise UserError(f"row {int(np.argmax(bad))} holds NaN or infinity", param="dets")
    size = d[:, 2]
    limit = MAX_BOX_FRAMES * max(shape[:2])
    bad = (size <= 0) | (size > limit)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(
            f"row {i} has size {size[i]:g}; sizes (column 3) must be > 0 and at most "
            f"{MAX_BOX_FRAMES:g}x the frame's longer side ({limit:g} px)",
            param="dets",
        )
    return d


class Verifier:
    """The ONNX face verifier. `min_prob`: detections below it are dropped by `filter`;
    `nms_iou`: refined boxes overlapping more than this are one face (the best-scoring kept)."""

    def __init__(
        self,
        session,
        *,
        min_prob: float = 0.5,
        nms_iou: float = 0.3,
        passes: int = 2,
        context: float = CONTEXT,
        size: int = SIZE,
    ) -> None:
        for name, v, lo, hi in (
            ("min_prob", min_prob, 0.0, 1.0),
            ("nms_iou", nms_iou, 0.0, 1.0),
            ("context", context, MIN_CONTEXT, MAX_CONTEXT),
        ):
            if not _number(v) or not lo <= v <= hi:
                raise UserError(
                    f"face verifier {name} must be a number in {lo:g}..{hi:g}, got {v!r}"
                )
        for name, v, lo, hi in (("passes", passes, 1, 8), ("size", size, MIN_SIZE, MAX_SIZE)):
            if not _integer(v) or not lo <= v <= hi:
                raise UserError(f"face verifier {name} must be an integer in {lo}..{hi}, got {v!r}")
        self.session = session
        self.path: Path | None = None
        self.input = session.get_inputs()[0].name
        self.min_prob = float(min_prob)
        self.nms_iou = float(nms_iou)
        self.passes = int(passes)
        self.context = float(context)
        self.size = int(size)

    @classmethod
    def load(cls, path: str | Path, **kw) -> Verifier:
        import onnxruntime as ort

        p = Path(path)
        if not p.is_file():
            what = "not a regular file" if p.exists() else "not found"
            raise UserError(f"face verifier {what}: {p}")
        opts = ort.SessionOptions()
        # a handful of 32x32 crops per frame: one thread, no pool to wake
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            from edge_fer.backends.onnxruntime_backend import session_model  # a non-UTF-8 name

            sess = ort.InferenceSession(session_model(p), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for bad files
            raise UserError(
                f"{p}: not a loadable ONNX face verifier ({first_line(exc, 160)})"
            ) from None
        cfg = _metadata(p, sess.get_modelmeta().custom_metadata_map)
        kw.setdefault("context", cfg.get("context", CONTEXT))
        kw.setdefault("size", cfg.get("size", SIZE))
        inputs = sess.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise UserError(f"{p}: not a face verifier (expected one (n, 1, H, W) input)")
        batch = inputs[0].shape[0]
        if isinstance(batch, int) and batch > 0:  # frames have any number of detections
            raise UserError(
                f"{p}: not a face verifier (fixed batch of {batch}; it must take any number of "
                "crops)"
            )
        want = (1, kw["size"], kw["size"])
        got = inputs[0].shape[1:]
        if any(isinstance(g, int) and g > 0 and g != w for g, w in zip(got, want)):
            raise UserError(
                f"{p}: not a face verifier (input (n, {', '.join(map(str, got))}), but "
                f"(n, 1, {kw['size']}, {kw['size']}) crops expected)"
            )
        ver = cls(sess, **kw)
        ver.path = p
        # a wrong model (a classifier, say) must fail here, in one line, not in the detect thread
        try:
            out = sess.run(None, {ver.input: np.zeros((2, 1, ver.size, ver.size), np.float32)})[0]
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"{p}: not a face verifier ({first_line(exc, 160)})") from None
        if np.shape(out) != (2, 4):
            raise UserError(f"{p}: not a face verifier (outputs {np.shape(out)}, expected (n, 4))")
        ver._check_finite(out)
        return ver

    def _check_finite(self, out: np.ndarray) -> None:
        # NaN/inf would drop every face or, worse, put NaN boxes into tracks and JSON
        if not np.isfinite(out).all():
            raise UserError(
                f"{self.path or 'face verifier'}: face verifier outputs non-finite values "
                "(NaN or inf); its weights are broken"
            )

    def __call__(self, gray: np.ndarray, dets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probability of a face (n,), refined boxes (n, 3) row, col, size) for detections
        (n, 3+) row, col, size in `gray` (2-D uint8). UserError for another frame or bad rows."""
        _check_frame(gray)
        return self._score(gray, _check_rows(dets, gray.shape, 3))

    def _score(self, gray: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # unchecked: `__call__` after its checks, and `VerifiedDetector`, whose detector has
        # checked the frame and made the rows
        if not len(d):
            return np.zeros(0), np.zeros((0, 3))
        boxes = d[:, :3]
        for _ in range(self.passes):
            # a box half on the face (IoU 0.3-0.5) is moved towards it first, then judged where
            # it landed: its first crop shows mostly forehead or chin
            x = normalize(crop_windows(gray, boxes, self.context, self.size))
            try:
                out = self.session.run(None, {self.input: x})[0]
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
                raise UserError(
                    f"{self.path or 'face verifier'}: face verifier failed ({first_line(exc, 160)})"
                ) from None
            if np.shape(out) != (len(x), 4):  # a model may answer the probe and nothing else
                raise UserError(
                    f"{self.path or 'face verifier'}: face verifier output {np.shape(out)} for "
                    f"{len(x)} crops, expected ({len(x)}, 4)"
                )
            self._check_finite(out)
            boxes = apply_offsets(boxes, out[:, 1:4])
        prob = 1.0 / (1.0 + np.exp(-np.clip(out[:, 0].astype(np.float64), -50, 50)))
        return prob, boxes

    def filter(self, gray: np.ndarray, dets: np.ndarray) -> np.ndarray:
        """Detections (row, col, size, score) refined, kept when the verifier's probability is
        at least `min_prob`, de-duplicated (one face that the cascade split into two clusters
        refines to one box); the score column is kept, the probability appended: (k, 5)."""
        _check_frame(gray)
        return self._filter(gray, _check_rows(dets, gray.shape, 4))

    def _filter(self, gray: np.ndarray, d: np.ndarray) -> np.ndarray:
        # unchecked, as `_score`
        if not len(d):
            return np.zeros((0, 5))
        prob, boxes = self._score(gray, d)
        ok = prob >= self.min_prob
        rows = np.column_stack([boxes[ok], d[ok, 3], prob[ok]])
        if len(rows) > 1:
            # duplicates: the better cascade score wins (the summed windows of the face itself)
            rows = rows[nms(rows, self.nms_iou)]
        return rows


class VerifiedDetector:
    """A `Detector` whose detections pass a `Verifier`: the same `detect(gray)` / `reset()`, the
    boxes refined and the rejected ones gone; other attributes are the detector's."""

    def __init__(self, detector, verifier: Verifier) -> None:
        from edge_fer.detect.detector import Detector

        # None for either failed at the first frame, an AttributeError
        if not isinstance(detector, (Detector, VerifiedDetector)):
            raise UserError(
                f"must be an edge_fer.detect.Detector, got {type(detector).__name__}",
                param="detector",
            )
        if not isinstance(verifier, Verifier):
            raise UserError(
                f"must be an edge_fer.detect.Verifier, got {type(verifier).__name__}",
                param="verifier",
            )
        self.detector = detector
        self.verifier = verifier

    def detect(self, gray: np.ndarray) -> list:
        from edge_fer.detect.detector import Detection

        d = np.array([x[:4] for x in self.detector.detect(gray)], np.float64).reshape(-1, 4)
        # the detector checked the frame and made the rows: no second check per frame
        rows = self.verifier._filter(gray, d) if len(d) else np.zeros((0, 5))
        return [Detection(*map(float, r[:4])) for r in rows[np.argsort(-rows[:, 3], kind="stable")]]

    def reset(self) -> None:
        self.detector.reset()

    def __getattr__(self, name: str):
        return getattr(self.__dict__["detector"], name)
