"""ONNX Runtime backend (CPU execution provider by default)."""

from __future__ import annotations

import os

import numpy as np

from edge_fer.backends.base import Backend, BackendClosed
from edge_fer.errors import UserError
from edge_fer.limits import check_threads


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _interrupted(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is in `exc`'s chain (the caller reports the interrupt)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _provider(p) -> bool:
    """An execution provider as onnxruntime takes one: a name, or (name, options dict)."""
    if isinstance(p, tuple) and len(p) == 2:
        return isinstance(p[0], str) and isinstance(p[1], dict)
    return isinstance(p, str)


def _dim(d) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def session_model(path: str | os.PathLike) -> str | bytes:
    """What `onnxruntime.InferenceSession` is given for the model file at `path`: its name, or
    the file's bytes when the name is not UTF-8 (a byte Python keeps as a surrogate escape),
    which onnxruntime's str argument cannot take: every such model was "not a loadable ONNX
    model (__init__(): incompatible constructor arguments...)". OSError when it cannot be read."""
    p = os.fspath(path)
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    try:
        p.encode("utf-8")
    except UnicodeEncodeError:
        with open(p, "rb") as fh:
            return fh.read()
    return p


def exact_int8(so, cpuinfo: str | None = None, machine: str | None = None) -> None:
    """Make `so`'s sessions compute INT8 models exactly on every x86 CPU (this one, or the one
    `cpuinfo` and `machine` describe: `machine.x86_without_vnni`).

    Without VNNI (AVX2 CPUs, AVX-512 before Cascade Lake, AMD before Zen 4) ONNX Runtime
    multiplies uint8 activations by int8 weights with VPMADDUBSW, whose int16 pair sums
    saturate: the bundled INT8 model lost 2.9 points of FER2013 PrivateTest on such a CPU
    (0.6698 against 0.6985 with VNNI). This option makes ONNX Runtime use uint8 x uint8
    kernels there for weights outside [-64, 63]. Only there: CPUs with VNNI compute exactly
    without it, and with it ran 2.5x slower (Zen 4: 1.62 against 0.65 ms a face, one thread)."""
    from edge_fer.machine import x86_without_vnni

    if x86_without_vnni(cpuinfo, machine):
        so.add_session_config_entry("session.x64quantprecision", "1")


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX classifier with onnxruntime.

    threads: intra-op threads (None or 0: onnxruntime's default, one per physical core).
    providers: execution providers, default ["CPUExecutionProvider"].
    allow_spinning: let idle worker threads spin (lower latency, burns CPU between calls).
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | os.PathLike,
        threads: int | None = None,
        providers: list[str] | None = None,
        allow_spinning: bool = True,
    ):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # a dependency, but keep the message friendly
            if _interrupted(exc):  # Ctrl-C in its init: "initialization failed", caused by it
                raise
            raise UserError(
                f"onnxruntime is not installed: pip install onnxruntime ({exc})"
            ) from None
        threads = check_threads(threads or 0, zero="one per physical core")
        self.path = str(model_path)
        if isinstance(providers, str):  # (iterated letter by letter: 20 warnings, "EP Error")
            providers = [providers]
        # 3 was "'int' object is not iterable", [CPU, 3] "not a loadable ONNX model"
        if providers is not None and (
            not isinstance(providers, (list, tuple)) or not all(map(_provider, providers))
        ):
            raise UserError(
                "must be a list of execution providers (names, or (name, options dict) "
                f"pairs), got {providers!r}",
                param="providers",
            )
        if not isinstance(allow_spinning, (bool, np.bool_)):  # ("no" was true: spinning)
            raise UserError(
                f"must be True or False, got {allow_spinning!r}", param="allow_spinning"
            )
        if providers is not None:
            # a list with one this onnxruntime has is portable code ([CUDA, CPU] on a CPU
            # build); one with none of them fell back to the CPU with a warning only
            known = ort.get_available_providers()
            if not any(isinstance(p, str) and p in known for p in providers):
                raise UserError(
                    f"{list(providers)} are not available in this onnxruntime (it has "
                    f"{', '.join(known)})",
                    param="providers",
                )
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = int(threads or 0)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # errors only; warnings about unused initialisers are noise
        if not allow_spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        exact_int8(so)
        self.threads = int(threads or 0)
        try:
            self._sess = ort.InferenceSession(
                session_model(self.path),
                sess_options=so,
                providers=providers or ["CPUExecutionProvider"],
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise UserError(
                f"{self.path}: not a loadable ONNX model ({_first_line(exc)})"
            ) from None
        inputs, outputs = self._sess.get_inputs(), self._sess.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise UserError(
                f"{self.path}: expected a model with one input and one output, "
                f"got {len(inputs)} inputs and {len(outputs)} outputs"
            )
        inp = inputs[0]
        if inp.type != "tensor(float)" or len(inp.shape) != 4:
            raise UserError(
                f"{self.path}: expected a float32 NCHW input, got {inp.type} of shape {inp.shape}"
            )
        self._in_name = inp.name
        self._out_name = outputs[0].name
        self.input_shape = tuple(_dim(d) for d in inp.shape)  # type: ignore[assignment]
        out_shape = outputs[0].shape
        self.num_outputs = _dim(out_shape[-1]) if out_shape else None
        meta = self._sess.get_modelmeta()
        self.metadata = dict(meta.custom_metadata_map or {})
        self.providers = self._sess.get_providers()

    def infer(self, x: np.ndarray) -> np.ndarray:
        if x is None:  # (np.ascontiguousarray made it [nan]: "got shape (1,)")
            raise UserError("expected a batch of shape (N, C, H, W), got None", param="x")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise UserError(f"expected a batch of shape (N, C, H, W), got shape {x.shape}")
        want = self.input_shape[1:]
        if any(w is not None and w != g for w, g in zip(want, x.shape[1:])):
            raise UserError(
                f"input of shape {tuple(x.shape)} does not fit the model's "
                f"(N, {', '.join(str(w) if w else '?' for w in want)})"
            )
        if self._sess is None:
            raise BackendClosed("backend is closed")
        n = x.shape[0]
        fb = self.fixed_batch
        if fb is None:
            if n == 0:
                return np.zeros((0, self.num_outputs or 0), np.float32)
            return self._run(x)
        # a fixed-batch model: feed it fb at a time, zero-padding the last chunk
        outs = []
        for i in range(0, n, fb):
            chunk = x[i : i + fb]
            k = chunk.shape[0]
            if k < fb:
                chunk = np.concatenate([chunk, np.zeros((fb - k,) + chunk.shape[1:], np.float32)])
            outs.append(self._run(chunk)[:k])
        if not outs:
            return np.zeros((0, self.num_outputs or 0), np.float32)
        return np.concatenate(outs)

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            y = self._sess.run([self._out_name], {self._in_name: x})[0]
            y = np.asarray(y, dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise UserError(f"{self.path}: inference failed ({_first_line(exc)})") from None
        # a model is input: an output that is not a row of numbers per face is its fault
        rows = y.shape[0] if y.ndim else 0
        if rows != x.shape[0]:
            raise UserError(
                f"{self.path}: model gives {rows} rows for {x.shape[0]} faces; its output must "
                "follow the input's batch"
            )
        return y.reshape(rows, -1)

    def close(self) -> None:
        self._sess = None
