"""Per-tensor activation ranges of an FP32 ONNX model over calibration batches, in two steps
(as ONNX Runtime's calibrators split `collect_data` from `compute_data`):

1. ``collect(model, batches) -> Collection``: every float tensor the graph computes (and the
   network input) is made a graph output, the model runs on the calibration batches in ONNX
   Runtime, and each tensor keeps a histogram of its absolute values plus its exact min, max
   and |max|. One pass over the data; the collection can be saved (.npz or .json) and loaded
   again.
2. ``compute(collection, method, percentile) -> RangeSet``: one symmetric range (amax) per
   tensor, by one of three methods, from the kept histograms (no new pass):

- ``entropy``: the threshold that minimises the KL divergence between the tensor's |x|
  distribution and its 128-level quantized version (TensorRT's EntropyCalibration2 algorithm,
  as NVIDIA's pytorch-quantization implements it: 2048 bins, thresholds from bin 128 on);
- ``percentile``: the given percentile of |x| (99.99 by default);
- ``minmax``: the largest |x| seen.

The INT8 scale of a tensor is amax / 127 (symmetric, zero point 0), the value that both the
TensorRT calibration cache and the Q/DQ model store.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zipfile import BadZipFile

import numpy as np

from edge_fer.errors import UserError

METHODS = ("entropy", "percentile", "minmax")
DEFAULT_PERCENTILE = 99.99
NUM_BINS = 2048  # histogram resolution the entropy search works on
QUANT_LEVELS = 128  # 2^(8-1): the levels of |x| an int8 tensor can take
_MAX_STREAM_BINS = NUM_BINS * 32  # finer while collecting; rebinned to NUM_BINS for entropy
COLLECTION_FORMAT = "edge-fer-calibration-histograms"
COLLECTION_VERSION = 1


@dataclass
class TensorRange:
    """What calibration saw of one tensor, and the symmetric range chosen for it."""

    amax: float
    min: float
    max: float
    absmax: float
    clipped: float = 0.0  # fraction of the values with |x| > amax

    @property
    def scale(self) -> float:
        return self.amax / 127.0


@dataclass
class RangeSet:
    """Ranges of all calibrated tensors, in graph order (network input first)."""

    tensors: dict[str, TensorRange]
    method: str
    percentile: float | None
    n_faces: int
    input_name: str
    num_bins: int = NUM_BINS
    skipped: list[str] = field(default_factory=list)  # float tensors left out, and why

    def amax(self) -> dict[str, float]:
        return {k: v.amax for k, v in self.tensors.items()}


class Histogram:
    """Streaming histogram of |x| with a fixed bin width that grows its range as needed (the
    collecting side: `stats()` is what is kept)."""

    def __init__(self, num_bins: int) -> None:
        self.num_bins = num_bins
        self.width: float | None = None
        self.counts = np.zeros(0, np.int64)
        self.min = math.inf
        self.max = -math.inf
        self.absmax = 0.0
        self.n = 0
        self._zeros = 0  # values seen while everything was zero (no bin width yet)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32).ravel()
        if x.size == 0:
            return
        if not np.all(np.isfinite(x)):
            raise UserError("the model computes NaN or infinite values on the calibration faces")
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        a = np.abs(x)
        m = float(a.max())
        self.absmax = max(self.absmax, m)
        self.n += a.size
        if self.width is None:
            if m == 0.0:  # all zeros so far: remember how many, bin them once a width exists
                self._zeros += a.size
                return
            self.width = m / self.num_bins
            self.counts = np.zeros(self.num_bins, np.int64)
            self.counts[0] += self._zeros
        nb = max(math.ceil(m / self.width), 1)
        if nb > len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros(nb - len(self.counts), np.int64)])
        while len(self.counts) > _MAX_STREAM_BINS:  # merge pairs of bins: same range, half res
            c = self.counts
            if len(c) % 2:
                c = np.concatenate([c, [0]])
            self.counts = c.reshape(-1, 2).sum(1)
            self.width *= 2
        idx = np.minimum((a / self.width).astype(np.int64), len(self.counts) - 1)
        self.counts += np.bincount(idx, minlength=len(self.counts))

    def stats(self) -> TensorStats:
        w = float(self.width or 0.0)
        return TensorStats(self.counts.copy(), w, self.min, self.max, self.absmax, self.n)


@dataclass
class TensorStats:
    """What calibration saw of one tensor, kept: the |x| histogram (bin i holds
    i*width <= |x| < (i+1)*width, the last bin also what lies beyond), exact min/max/|max| and
    the number of values. width 0: every value seen was 0 (no histogram)."""

    counts: np.ndarray
    width: float
    min: float
    max: float
    absmax: float
    n: int

    # -- thresholds (the computing side) -----------------------------------------------------
    def amax(self, method: str, percentile: float | None, num_bins: int = NUM_BINS) -> float:
        if self.width == 0.0 or self.absmax == 0.0:
            return 0.0
        if method == "minmax":
            return self.absmax
        if method == "percentile":
            p = DEFAULT_PERCENTILE if percentile is None else percentile
            cdf = np.cumsum(self.counts) / max(self.counts.sum(), 1)
            i = int(np.searchsorted(cdf, p / 100.0))
            return float(min((i + 1) * self.width, self.absmax))
        if method == "entropy":
            counts, width = self._rebinned(num_bins)
            return float(min(entropy_threshold(counts) * width, self.absmax))
        raise ValueError(method)

    def _rebinned(self, num_bins: int) -> tuple[np.ndarray, float]:
        c, w = self.counts, float(self.width)
        f = math.ceil(len(c) / num_bins)
        if f > 1:
            pad = (-len(c)) % f
            c = np.concatenate([c, np.zeros(pad, np.int64)]).reshape(-1, f).sum(1)
            w *= f
        return c, w

    def clipped(self, amax: float) -> float:
        """The fraction of the values with |x| beyond the bin that holds amax."""
        if self.width == 0.0 or self.n == 0:
            return 0.0
        i = math.floor(amax / self.width)
        return float(self.counts[i + 1 :].sum() / self.n) if i + 1 < len(self.counts) else 0.0


def entropy_threshold(
    hist: np.ndarray, levels: int = QUANT_LEVELS, start: int = QUANT_LEVELS, stride: int = 1
) -> int:
    """The bin edge index i (amax = i * bin width) minimising KL(P || Q) (TensorRT's
    EntropyCalibration2; NVIDIA pytorch-quantization's `_compute_amax_entropy`).

    P: the histogram's first i bins with everything beyond folded into bin i-1. Q: those i bins
    merged into `levels` quantization levels and spread back evenly over the bins that were
    non-empty. The last of equal minima wins (the widest such range). As in the reference, the
    first bin is replaced by the second before the search: the exact zeros a ReLU makes would
    otherwise dominate P and push the threshold down to a few percent of the range.
    """
    hist = np.array(hist, dtype=np.float64)
    n = len(hist)
    if n > 1:
        hist[0] = hist[1]
    if n <= start:
        return n
    best_i, best = n, math.inf
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])
    for i in range(start, n + 1, stride):
        ref = hist[:i].copy()
        ref[-1] += tail[i]
        nz = hist[:i] > 0
        idx = (np.arange(i) * levels) // i
        sums = np.bincount(idx, weights=hist[:i], minlength=levels)
        cnt = np.bincount(idx, weights=nz.astype(np.float64), minlength=levels)
        q = np.where(nz, sums[idx] / np.maximum(cnt[idx], 1.0), 0.0)
        ps, qs = ref.sum(), q.sum()
        if ps <= 0 or qs <= 0:
            continue
        p = ref / ps
        q = q / qs
        m = p > 0
        if np.any(q[m] <= 0):
            kl = math.inf
        else:
            kl = float(np.sum(p[m] * np.log(p[m] / q[m])))
        if kl <= best:
            best, best_i = kl, i
    return best_i


# -- the tensors to calibrate -----------------------------------------------------------------


def float_tensors(model) -> tuple[list[str], list[str]]:
    """(names, skipped): the network input(s) and every float32 tensor a node computes at run
    time, in graph order; skipped lists the float outputs of constant sub-graphs (folded into
    weights by TensorRT and ONNX Runtime alike)."""
    import onnx

    g = model.graph
    inits = {i.name for i in g.initializer}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        vi = list(inferred.graph.value_info) + list(inferred.graph.output) + list(g.input)
    except Exception:  # noqa: BLE001 - no inference: types are checked at run time
        vi = list(g.value_info) + list(g.output) + list(g.input)
    types = {v.name: v.type.tensor_type.elem_type for v in vi if v.type.HasField("tensor_type")}
    names: list[str] = [i.name for i in g.input if i.name not in inits]
    const = set(inits)
    skipped: list[str] = []
    for node in g.node:
        ins = [i for i in node.input if i]
        is_const = node.op_type == "Constant" or (ins and all(i in const for i in ins))
        for o in node.output:
            if not o:
                continue
            if is_const:
                const.add(o)
                if types.get(o) == onnx.TensorProto.FLOAT:
                    skipped.append(o)
                continue
            t = types.get(o)
            if t == onnx.TensorProto.FLOAT or t is None:  # unknown: decided at run time
                names.append(o)
    return names, skipped


def _augmented(model, names: list[str]):
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output} | {i.name for i in m.graph.input}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    return m


def input_shape(model, name: str) -> list[int | None] | None:
    """The dims of graph input `name` (None for a symbolic or unknown one), or None when the
    model gives no shape."""
    for i in model.graph.input:
        if i.name == name and i.type.tensor_type.HasField("shape"):
            dims = i.type.tensor_type.shape.dim
            return [
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims
            ]
    return None


def _check_batch(x, k: int, shape: list[int | None] | None) -> np.ndarray:
    """Batch `k` as the float32 model input it must be; a UserError naming `batches` otherwise
    (ONNX Runtime's own INVALID_ARGUMENT says neither which batch nor what was expected)."""
    dims = ["?" if d is None else str(d) for d in shape or ()]
    want = "(" + ", ".join(["B" if dims[0] == "?" else dims[0], *dims[1:]]) + ")" if dims else None
    expected = f"float32 model inputs {want}" if want else "float32 model inputs"
    if not isinstance(x, np.ndarray):
        raise UserError(
            f"must be numpy arrays, {expected}; batch {k} is a {type(x).__name__}",
            param="batches",
        )
    if x.dtype.kind != "f":  # uint8 faces would calibrate on 0..255 instead of the model's input
        raise UserError(
            f"must be {expected}, faces prepared as the model prepares them (FaceBatchReader); "
            f"batch {k} has dtype {x.dtype}",
            param="batches",
        )
    fits = shape is None or (
        x.ndim == len(shape) and all(d is None or d == g for d, g in zip(shape, x.shape))
    )
    if not fits:
        raise UserError(f"must be {expected}; batch {k} has shape {x.shape}", param="batches")
    if not np.isfinite(x).all():
        raise UserError(f"must be finite; batch {k} holds NaN or infinity", param="batches")
    return np.ascontiguousarray(x, np.float32)


def collect(
    model,
    batches: Iterable[np.ndarray],
    num_bins: int = NUM_BINS,
    threads: int = 1,
    progress: Callable[[int], None] | None = None,
) -> Collection:
    """Run the FP32 model (onnx.ModelProto or path) on the batches (an iterable of float32
    arrays shaped as the model's input) once; keep what every float tensor showed (histogram,
    min, max). progress(faces) is called after each batch. threads 0: ONNX Runtime's default."""
    import onnx
    import onnxruntime as ort

    from edge_fer.fileio import first_line
    from edge_fer.limits import check_count, check_threads

    if check_count(num_bins, "num_bins") > _MAX_STREAM_BINS:
        raise UserError(f"must be at most {_MAX_STREAM_BINS}, got {num_bins}", param="num_bins")
    threads = check_threads(threads, zero="ONNX Runtime's default")
    if isinstance(batches, np.ndarray):  # iterating it would feed single faces as batches
        raise UserError(
            f"must be an iterable of batches, got one array of shape {batches.shape}; "
            "pass [array] for a single batch",
            param="batches",
        )
    try:
        batches = iter(batches)
    except TypeError:
        raise UserError(
            f"must be an iterable of batches, got {type(batches).__name__}", param="batches"
        ) from None
    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    names, skipped = float_tensors(model)
    if len(model.graph.input) < 1:
        raise UserError("the model has no input")
    input_name = names[0]
    aug = _augmented(model, names)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    try:
        sess = ort.InferenceSession(
            aug.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # noqa: BLE001 - reported as one line
        raise UserError(
            f"ONNX Runtime cannot run the model for calibration ({first_line(exc)})"
        ) from None
    out_names = [o.name for o in sess.get_outputs()]
    hists = {n: Histogram(num_bins) for n in names}
    wanted = [n for n in out_names if n in hists]
    n_faces = 0
    shape = input_shape(model, input_name)
    for k, x in enumerate(batches):
        x = _check_batch(x, k, shape)
        outs = sess.run(wanted, {input_name: x})
        hists[input_name].update(x)
        for n, y in zip(wanted, outs):
            if n == input_name:
                continue
            if not (isinstance(y, np.ndarray) and y.dtype == np.float32):
                hists.pop(n, None)  # not a float tensor after all
                continue
            hists[n].update(y)
        n_faces += len(x)
        if progress is not None:
            progress(len(x))
    if n_faces == 0:
        raise UserError("no calibration faces")
    kept = {n: hists[n].stats() for n in names if n in hists and hists[n].n > 0}
    return Collection(kept, n_faces, input_name, num_bins, skipped)


def check_method(method: str, percentile: float | None = None) -> float | None:
    """The percentile `method` uses (None unless it is ``percentile``); UserError for an
    unknown method or a percentile outside (50, 100]."""
    if method not in METHODS:
        raise UserError(f"unknown calibration method {method!r}; choose {', '.join(METHODS)}")
    if method != "percentile":
        return None
    p = DEFAULT_PERCENTILE if percentile is None else float(percentile)
    if not 50.0 < p <= 100.0:
        raise UserError(f"must be in (50, 100], got {p}", param="percentile")
    return p


def compute(
    collection: Collection, method: str = "entropy", percentile: float | None = None
) -> RangeSet:
    """One range per collected tensor, by `method` (see the module's text)."""
    percentile = check_method(method, percentile)
    tensors: dict[str, TensorRange] = {}
    for n, st in collection.tensors.items():
        a = st.amax(method, percentile, collection.num_bins)
        tensors[n] = TensorRange(
            amax=a, min=st.min, max=st.max, absmax=st.absmax, clipped=st.clipped(a)
        )
    c = collection
    return RangeSet(
        tensors, method, percentile, c.n_faces, c.input_name, c.num_bins, list(c.skipped)
    )


# -- the collection, kept --------------------------------------------------------------------


@dataclass
class Collection:
    """What one calibration pass saw: per-tensor `TensorStats` in graph order (network input
    first), from which `compute` derives the ranges of any method.

    `save(path)` writes ``.npz`` (compact: the histograms as arrays) or ``.json`` (strict JSON,
    trailing empty bins trimmed); `Collection.load(path)` reads either back exactly (the bin
    width and the min/max are kept as float64), so the ranges computed from a loaded
    collection are those of the pass that made it.
    """

    tensors: dict[str, TensorStats]
    n_faces: int
    input_name: str
    num_bins: int = NUM_BINS
    skipped: list[str] = field(default_factory=list)

    def _header(self) -> dict:
        return {
            "format": COLLECTION_FORMAT,
            "version": COLLECTION_VERSION,
            "n_faces": int(self.n_faces),
            "input_name": self.input_name,
            "num_bins": int(self.num_bins),
            "skipped": list(self.skipped),
            "tensors": [_tensor_header(n, t) for n, t in self.tensors.items()],
        }

    def to_json(self) -> dict:
        head = self._header()
        for d, t in zip(head["tensors"], self.tensors.values()):
            nz = np.flatnonzero(t.counts)
            d["counts"] = t.counts[: int(nz[-1]) + 1 if len(nz) else 0].tolist()
        return head

    def save(self, path: str | os.PathLike) -> None:
        """Write to `path` (.npz or .json), atomically (edge_fer.fileio)."""
        from edge_fer import fileio

        if Path(path).suffix.lower() == ".json":
            fileio.write_json(path, self.to_json())
            return
        fileio.write_bytes(path, self.to_npz())

    def to_npz(self) -> bytes:
        """The .npz file's bytes: the header as JSON text, one int64 array per histogram."""
        import io

        buf = io.BytesIO()
        arrays: dict[str, Any] = {"header": np.array(json.dumps(self._header()))}
        arrays.update((f"counts_{i}", t.counts) for i, t in enumerate(self.tensors.values()))
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def load(cls, path: str | os.PathLike) -> Collection:
        """A collection saved by `save` (.npz or .json); UserError when it is not one."""
        p = Path(path)
        try:
            if p.suffix.lower() == ".json":
                head = json.loads(p.read_text())
                counts = [
                    _padded(d.get("counts", []), int(d["bins"])) for d in head.get("tensors", [])
                ]
            else:
                with np.load(p, allow_pickle=False) as z:
                    head = json.loads(str(z["header"]))
                    counts = [
                        np.asarray(z[f"counts_{i}"], np.int64)
                        for i in range(len(head.get("tensors", [])))
                    ]
            if head.get("format") != COLLECTION_FORMAT:
                raise ValueError("not a calibration histogram file")
            if int(head.get("version", 0)) > COLLECTION_VERSION:
                raise ValueError(f"written by a newer edge-fer (version {head['version']})")
            tensors = {d["name"]: _stats(d, c) for d, c in zip(head["tensors"], counts)}
            skipped = [str(s) for s in head.get("skipped", [])]
            n, name, bins = int(head["n_faces"]), str(head["input_name"]), int(head["num_bins"])
            return cls(tensors, n, name, bins, skipped)
        except OSError as exc:
            from edge_fer.fileio import os_error_reason

            raise UserError(f"{p}: cannot read ({os_error_reason(exc)})") from None
        except (
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            EOFError,
            BadZipFile,
            RecursionError,
        ) as exc:
            from edge_fer.fileio import first_line

            raise UserError(f"{p}: not a calibration histogram file ({first_line(exc)})") from None


def _tensor_header(name: str, t: TensorStats) -> dict:
    head = {"name": name, "bins": len(t.counts), "width": float(t.width), "min": float(t.min)}
    head.update(max=float(t.max), absmax=float(t.absmax), n=int(t.n))
    return head


def _stats(d: dict, counts: np.ndarray) -> TensorStats:
    vals = [float(d[k]) for k in ("width", "min", "max", "absmax")]
    if not all(math.isfinite(v) for v in vals) or vals[0] < 0:
        raise ValueError(f"bad statistics for tensor {d['name']!r}")
    return TensorStats(counts, vals[0], vals[1], vals[2], vals[3], int(d["n"]))


def _padded(values: list, bins: int) -> np.ndarray:
    c = np.asarray(values, np.int64)
    if c.ndim != 1 or len(c) > bins or (len(c) and c.min() < 0):
        raise ValueError("bad histogram counts")
    return np.concatenate([c, np.zeros(bins - len(c), np.int64)])
