"""Face-crop preprocessing shared by training and inference.

A `PreprocessSpec` travels with every model (ONNX `metadata_props`), so the runtime prepares
crops exactly as the training did: grayscale, optional CLAHE, resize, scale, normalise.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from edge_fer.errors import UserError
from edge_fer.fileio import first_line

# limits of what a model's metadata may ask for: a face is at most 512x512 (memory per face is
# bounded: a hostile 60000 would allocate gigabytes), normalisation within sane numbers
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 512
# what `train` and `models` build: every zoo architecture takes 16 px; 512 bounds the memory
# (a 2000 px input made a 1G-parameter net that the out-of-memory killer ended)
MIN_TRAIN_SIZE = 16
MAX_NORM = 1000.0  # |mean| and std on the 0..1 pixel scale
MIN_STD = 1e-6  # 1 / (255 * std) must stay finite in float32
MAX_CLASSES = 10000
MAX_METADATA_CHARS = 1 << 20


def check_train_size(size: int, param: str = "input_size") -> int:
    """UserError naming `param` unless `size` is a face side a model may be built for."""
    if not MIN_TRAIN_SIZE <= size <= MAX_INPUT_SIZE:
        raise UserError(
            f"must be in {MIN_TRAIN_SIZE}..{MAX_INPUT_SIZE} px, got {size}", param=param
        )
    return size


# extra border around a detected face box, a fraction of its side per side, for models that do
# not say. 0: the PICO box already frames a face as FER2013 does (benchmarks/bench_framing.py)
DEFAULT_CROP_MARGIN = 0.0


@dataclass
class PreprocessSpec:
    input_size: int = 48
    channels: int = 1  # 1 = grayscale; 3 = grayscale replicated to 3 channels
    clahe: bool = False
    mean: float = 0.5  # on the 0..1 pixel scale
    std: float = 0.25
    crop_margin: float = DEFAULT_CROP_MARGIN
    # eye alignment (edge_fer.align, docs/align.md): faces levelled and framed on their eyes,
    # align_frame eye distances outwards from each eye, above and below the eye line (default:
    # FER2013's own framing, measured; a pre-cropped FER2013 face holds no more). The crop's
    # job, not prepare's: the runtime and the trainer align before this spec sees the face.
    align: bool = False
    align_frame: tuple[float, float, float] = (0.83, 1.09, 1.58)
    classes: tuple[str, ...] = field(default_factory=tuple)

    def to_metadata(self) -> dict[str, str]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return {"edge_fer.preprocess": json.dumps(d), "class_names": ",".join(self.classes)}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> PreprocessSpec:
        """The spec in a model's metadata, every key checked for type and range (a model file
        is input: a bad value is a one-line UserError naming the key, never a crash later)."""
        raw = meta.get("edge_fer.preprocess")
        if raw is None:
            raise UserError("model has no edge_fer preprocessing metadata")
        if not isinstance(raw, str) or len(raw) > MAX_METADATA_CHARS:
            raise UserError("model preprocessing metadata (edge_fer.preprocess) is malformed")
        try:
            d = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise UserError(
                f"model preprocessing metadata (edge_fer.preprocess) is not JSON ({first_line(exc)})"
            ) from None
        if not isinstance(d, dict):
            raise UserError(
                "model preprocessing metadata (edge_fer.preprocess) is not a JSON object"
            )
        # unknown keys are ignored: newer exporters may add some
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k, v in known.items():
            _check_key(k, v)
        if "classes" in known:
            known["classes"] = tuple(known["classes"])
        if "align_frame" in known:
            known["align_frame"] = tuple(float(v) for v in known["align_frame"])
        return cls(**known)

    def prepare(self, faces: list[np.ndarray] | np.ndarray, first: int = 0) -> np.ndarray:
        """uint8 face crops (grayscale HxW or BGR HxWx3) -> float32 NCHW model input. `first`:
        the index of faces[0] among the caller's, for the messages."""
        n = len(faces)
        out = np.empty((n, self.channels, self.input_size, self.input_size), np.float32)
        clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)) if self.clahe else None
        for i, f in enumerate(faces):
            try:
                g = to_gray(f)
            except UserError as exc:  # which face (a list of 500 said only "empty image")
                if n == 1 and not first:
                    raise
                raise UserError(f"face {first + i}: {exc.message}", param=exc.param) from None
            if g.shape != (self.input_size, self.input_size):
                interp = cv2.INTER_AREA if g.shape[0] > self.input_size else cv2.INTER_LINEAR
                g = cv2.resize(g, (self.input_size, self.input_size), interpolation=interp)
            if clahe is not None:
                g = clahe.apply(g)
            out[i, :] = g
        out *= 1.0 / (255.0 * self.std)
        out -= self.mean / self.std
        return out


def to_gray(img: np.ndarray) -> np.ndarray:
    if not isinstance(img, np.ndarray):  # a file name given for a crop: AttributeError before
        raise UserError(
            f"expected an image as a numpy array, got {type(img).__name__}; read files first "
            "(cv2.imread)"
        )
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
        raise UserError(f"expected a grayscale or BGR image, got an array of shape {img.shape}")
    if img.size == 0:
        raise UserError("empty image")
    if img.dtype != np.uint8:  # before the colour conversion, which takes few dtypes
        img = _to_uint8(img)
    if img.ndim == 3:
        code = cv2.COLOR_BGR2GRAY if img.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(np.ascontiguousarray(img), code)
    return img


def _to_uint8(g: np.ndarray) -> np.ndarray:
    """Pixels of another dtype as uint8, or a UserError: a wrong scale would be clipped into a
    white or black face."""
    if np.issubdtype(g.dtype, np.floating):
        if not np.isfinite(g).all():
            raise UserError("image has NaN or infinite pixels")
        lo, hi = float(g.min()), float(g.max())
        # a wrong scale was clipped silently (x257, the 16-bit scale, made a white face); a
        # cubic resize overshoots (to 256.7 on a face, 317 on a sharp edge), clipped as the
        # 0..1 faces' overshoot below
        if lo < -0.5 * 255 or hi > 1.5 * 255:
            raise UserError(
                f"{g.dtype} pixels span {lo:g}..{hi:g}, outside 0..1 and 0..255: scale "
                "them to uint8"
            )
        # 0..1 faces overshoot 1 after a cubic resize or a brightness change (1.11 was taken
        # for the 0..255 scale: a black face); a 0..255 face whose brightest pixel is 2 is black
        # either way
        if hi <= 2.0:
            g = g * 255.0
    elif np.issubdtype(g.dtype, np.integer) and g.dtype != np.bool_:
        lo, hi = int(g.min()), int(g.max())
        if lo < 0 or hi > 255:
            raise UserError(
                f"{g.dtype} pixels span {lo}..{hi}, outside 0..255: scale them to uint8"
            )
    else:
        raise UserError(f"expected uint8 pixels, got {g.dtype}")
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)  # rounded: 0..1 * 255 is 254.99...


def apply_clahe(images: np.ndarray) -> np.ndarray:
    """CLAHE over a (N, H, W) uint8 stack, with the same settings as `PreprocessSpec.prepare`."""
    c = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))
    return np.stack([c.apply(im) for im in images]) if len(images) else images


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return isinstance(v, int) or math.isfinite(v)  # (an int may be too big for a float)


def _short(v) -> str:
    r = json.dumps(v) if not isinstance(v, (tuple, set)) else repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _check_key(key: str, v) -> None:
    """One key of the preprocessing metadata: UserError naming the key unless usable."""
    if key == "input_size":
        ok = _is_int(v) and MIN_INPUT_SIZE <= v <= MAX_INPUT_SIZE
        want = f"an integer in {MIN_INPUT_SIZE}..{MAX_INPUT_SIZE}"
    elif key == "channels":
        ok, want = _is_int(v) and v in (1, 3), "1 or 3"
    elif key in ("clahe", "align"):
        ok, want = isinstance(v, bool), "true or false"
    elif key == "align_frame":
        ok = isinstance(v, list) and len(v) == 3 and all(_is_number(x) and 0 <= x <= 20 for x in v)
        ok = ok and v[1] + v[2] > 0
        want = "three numbers in 0..20 (side, top, bottom)"
    elif key == "mean":
        ok = _is_number(v) and abs(v) <= MAX_NORM
        want = f"a finite number in -{MAX_NORM:g}..{MAX_NORM:g}"
    elif key == "std":
        ok = _is_number(v) and MIN_STD <= v <= MAX_NORM
        want = f"a finite number in {MIN_STD:g}..{MAX_NORM:g}"
    elif key == "crop_margin":
        ok, want = _is_number(v) and 0 <= v <= 1, "a number in 0..1"
    elif key == "classes":
        ok = (
            isinstance(v, list)
            and 0 < len(v) <= MAX_CLASSES
            and all(isinstance(c, str) and c.strip() and len(c) <= 200 for c in v)
            and len(set(v)) == len(v)
        )
        want = "a list of unique, non-empty class names"
    else:  # pragma: no cover - every dataclass field has a rule above
        ok, want = True, ""
    if not ok:
        raise UserError(f"model preprocessing metadata: {key!r} must be {want}, got {_short(v)}")
