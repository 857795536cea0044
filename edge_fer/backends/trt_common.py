"""TensorRT helpers shared by the engine builder (`edge_fer.export.engine`) and the backend
(`edge_fer.backends.tensorrt_backend`): version features, imports, the log, the engine sidecar
and the facts about this machine (GPU, CUDA, L4T/JetPack) that an engine is tied to.

Neither tensorrt nor pycuda is imported at module level: importing this never fails.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_fer.errors import UserError
from edge_fer.fileio import first_line, os_error_reason, sha256_file, write_bytes

if TYPE_CHECKING:  # annotations only
    import tensorrt as trt

NOT_AVAILABLE = (
    "TensorRT backend not available: install TensorRT (JetPack on Jetson, or NVIDIA's pip index) "
    "and pycuda"
)
SIDECAR_FORMAT = "edge-fer/tensorrt-engine"
SIDECAR_VERSION = 2
REBUILD_HINT = "rebuild it here from the ONNX model (edge-fer build-engine MODEL.onnx)"
# where JetPack records the L4T release; a module attribute so tests can point it elsewhere
NV_TEGRA_RELEASE = "/etc/nv_tegra_release"
DEVICE_TREE_MODEL = "/proc/device-tree/model"

# ILogger.Severity values, stable across TensorRT 8, 10 and 11
_SEV_ERROR = 1
_SEV_WARNING = 2


# -- versions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrtFeatures:
    """What a TensorRT version offers, from its version string alone (no TensorRT needed).

    api                 "bindings": 8.x, engine I/O by binding index (get_binding_index,
                        binding_is_input, set_binding_shape, execute_async_v2);
                        "tensors": 10 and later (the binding API was removed in 10.0), I/O by
                        tensor name (num_io_tensors, get_tensor_name/mode, set_input_shape,
                        set_tensor_address, execute_async_v3). 8.5/8.6 have both; 8.x uses
                        bindings so that one code path covers 8.0-8.6 (JetPack 4.6-6.0).
    explicit_batch_flag create_network needs NetworkDefinitionCreationFlag.EXPLICIT_BATCH (8.x;
                        deprecated and ignored from 10.0 on, gone in 11)
    memory_pool_api     IBuilderConfig.set_memory_pool_limit (8.4+); older: max_workspace_size
    precision_flags     BuilderFlag.FP16 / INT8 exist (weakly typed networks; removed in 11)
    implicit_int8       INT8 calibrators and IBuilderConfig.int8_calibrator (removed in 11: Q/DQ
                        only)
    """

    version: str
    major: int
    minor: int
    api: str
    explicit_batch_flag: bool
    memory_pool_api: bool
    precision_flags: bool
    implicit_int8: bool


def trt_features(version: str) -> TrtFeatures:
    """'8.5.2.2' / '10.3.0' / '11.0.0' -> TrtFeatures. UserError for an unusable version."""
    m = re.match(r"\s*(\d+)\.(\d+)", str(version))
    if not m:
        raise UserError(f"cannot read the TensorRT version {version!r}")
    major, minor = int(m.group(1)), int(m.group(2))
    if major < 8:
        raise UserError(
            f"TensorRT {version} is too old: edge-fer needs TensorRT 8.0 or later (JetPack 4.6+)"
        )
    return TrtFeatures(
        version=str(version).strip(),
        major=major,
        minor=minor,
        api="bindings" if major < 10 else "tensors",
        explicit_batch_flag=major < 10,
        memory_pool_api=(major, minor) >= (8, 4),
        precision_flags=major < 11,
        implicit_int8=major < 11,
    )


def api_flavour(version: str) -> str:
    """The engine I/O API used with this TensorRT version: "bindings" (8.x) or "tensors"."""
    return trt_features(version).api


# -- imports ------------------------------------------------------------------------------------


def require_tensorrt() -> str:
    """Check that the real TensorRT Python package is importable; returns its version.

    A bare `tensorrt/` folder of type stubs (what `pip install --no-deps tensorrt-stubs` leaves)
    imports as an empty namespace package, so the check looks for the API, not just the name.
    On a JetPack 4 board whose bindings do not import, the message says why
    (`_refuse_on_jetpack4`).
    """
    l4t = l4t_release()
    try:
        mod = importlib.import_module("tensorrt")
    except Exception as exc:  # noqa: BLE001  ImportError, or OSError from a missing libnvinfer
        _refuse_on_jetpack4(l4t)
        raise UserError(f"{NOT_AVAILABLE} (cannot import tensorrt: {first_line(exc)})") from None
    version = getattr(mod, "__version__", None)
    if not isinstance(version, str) or not hasattr(mod, "Runtime"):
        _refuse_on_jetpack4(l4t)
        raise UserError(f"{NOT_AVAILABLE} (the tensorrt found here is only type stubs)")
    return version


def require_pycuda() -> None:
    """Check that pycuda's driver module is importable (it needs the CUDA driver library)."""
    try:
        mod = importlib.import_module("pycuda.driver")
    except Exception as exc:  # noqa: BLE001  ImportError, or a CUDA driver library error
        raise UserError(f"{NOT_AVAILABLE} (cannot import pycuda: {first_line(exc)})") from None
    if not hasattr(mod, "mem_alloc"):
        raise UserError(f"{NOT_AVAILABLE} (the pycuda found here is only type stubs)")


class TrtLog:
    """Collects TensorRT's log: errors are kept for our one-line messages (and printed when
    verbose), warnings printed when verbose, the rest dropped."""

    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self.errors: list[str] = []

    def add(self, severity: int, msg: str) -> None:
        if severity <= _SEV_ERROR:
            self.errors.append(msg.strip())
        if self.verbose and severity <= _SEV_WARNING:
            print(f"TensorRT: {msg.strip()}", file=sys.stderr)

    def last_error(self) -> str:
        return first_line(self.errors[-1]) if self.errors else ""

    def print_errors(self, prefix: str = "TensorRT: ") -> None:
        if self.verbose:  # already printed as they came
            return
        for e in self.errors:
            for line in e.splitlines():
                if line.strip():
                    print(f"{prefix}{line.strip()}", file=sys.stderr)


def make_logger(log: TrtLog) -> trt.ILogger:
    """A trt.ILogger that forwards to `log`. Keep a reference while TensorRT objects live."""
    import tensorrt as trt

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # the pybind11 trampoline needs the explicit call

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            log.add(int(severity), msg)

    return _Logger()


def dims(d: Any) -> tuple[int, ...]:
    """trt.Dims (or a tuple) -> tuple of ints. Dims has __len__/__getitem__ but no __iter__."""
    return tuple(int(d[i]) for i in range(len(d)))


# -- this machine -------------------------------------------------------------------------------

# L4T release (major.minor) -> JetPack. R32 (JetPack 4) from rbonghi/jetson_stats
# jtop/core/jetson_variables.py (NVIDIA_JETPACK): 32.6.1 is JetPack 4.6, 32.7.N is 4.6.N
# (1..6); /etc/nv_tegra_release reads "# R32 (release), REVISION: 7.1, GCID: ..."
_JETPACK = {
    "32.4": "4.4.x",
    "32.5": "4.5.x",
    "32.6": "4.6",
    "32.7": "4.6.x",
    "35.1": "5.0.2",
    "35.2": "5.1",
    "35.3": "5.1.1",
    "35.4": "5.1.2",
    "35.5": "5.1.3",
    "35.6": "5.1.4",
    "36.2": "6.0 DP",
    "36.3": "6.0",
    "36.4": "6.1/6.2",
}
# the TensorRT each JetPack 4.6 ships, named when its Python bindings do not import: 4.6 has
# 8.0.1 (ykawa2/jetson-setup README.md: "L4T 32.6.1 [ JetPack 4.6 ] ... TensorRT: 8.0.1.6"),
# 4.6.1-4.6.6 have 8.2.1 (export/targets.py, jetson/README.md)
_JETPACK4_TENSORRT = {"32.6": "8.0.1", "32.7": "8.2.1"}


def l4t_release(path: str | None = None) -> str | None:
    """'36.4.3' from /etc/nv_tegra_release ('# R36 (release), REVISION: 4.3, ...'), None off a
    Jetson or when the file says something else."""
    try:
        text = Path(path or NV_TEGRA_RELEASE).read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def is_jetson() -> bool:
    """True on a Jetson (JetPack writes /etc/nv_tegra_release)."""
    return os.path.exists(NV_TEGRA_RELEASE)


def jetpack_release(l4t: str | None) -> str | None:
    """'4.6.4' for L4T '32.7.4', '6.1/6.2' for '36.4.3'; None for a release not known here."""
    if not l4t:
        return None
    parts = l4t.split(".")
    if parts[:2] == ["32", "7"] and len(parts) > 2 and parts[2] in ("1", "2", "3", "4", "5", "6"):
        return f"4.6.{parts[2]}"  # one JetPack per revision: 32.7.1 -> 4.6.1 ... 32.7.6
    return _JETPACK.get(".".join(parts[:2]))


def _refuse_on_jetpack4(l4t: str | None) -> None:
    """UserError saying why TensorRT does not import on a JetPack 4 board (L4T R32); nothing
    elsewhere. Its bindings are built for the system's Python 3.6 and edge-fer needs 3.8, so
    "install TensorRT" would send the user after something the board already has."""
    if not l4t or l4t.split(".")[0] != "32":
        return
    jetpack = jetpack_release(l4t) or "4.x"
    shipped = _JETPACK4_TENSORRT.get(".".join(l4t.split(".")[:2]))
    trt = f"TensorRT {shipped}" if shipped else "TensorRT"
    raise UserError(
        f"TensorRT backend not available: this Jetson runs JetPack {jetpack} (L4T R{l4t}), "
        f"whose {trt} Python bindings are "
        "for its Python 3.6 and do not import in this Python: build them for it (TensorRT "
        "OSS python/), flash JetPack 5.1 or 6, or use the default ONNX Runtime backend"
    )


def board_model() -> str | None:
    try:
        raw = Path(DEVICE_TREE_MODEL).read_bytes()
    except OSError:
        return None
    return raw.rstrip(b"\x00").decode(errors="replace").strip() or None


def gpu_facts(device: int = 0) -> dict[str, Any]:
    """GPU name, compute capability and CUDA driver version through pycuda when it is there
    (the builder does not need pycuda: then the values are None)."""
    facts: dict[str, Any] = {"gpu": None, "compute_capability": None, "cuda": None}
    try:
        cuda = importlib.import_module("pycuda.driver")
        cuda.init()
        dev = cuda.Device(device)
        cc = dev.compute_capability()
        facts["gpu"] = str(dev.name())
        facts["compute_capability"] = f"{int(cc[0])}.{int(cc[1])}"
        v = int(cuda.get_driver_version())  # 12020 -> 12.2
        facts["cuda"] = f"{v // 1000}.{v % 1000 // 10}"
    except Exception:  # noqa: BLE001, S110  no pycuda, no driver, no device: facts unknown
        pass
    return facts


def platform_facts(trt_version: str, device: int = 0) -> dict[str, Any]:
    """What an engine built here is tied to, for the sidecar."""
    l4t = l4t_release()
    facts = {
        "tensorrt": trt_version,
        "l4t": l4t,
        "jetpack": jetpack_release(l4t),
        "board": board_model() if l4t else None,
    }
    facts.update(gpu_facts(device))
    return facts


def check_engine_facts(
    engine_path: os.PathLike[str] | str, doc: dict[str, Any], here: dict[str, Any]
) -> list[str]:
    """Compare a sidecar's build facts with this machine's, before deserialising: UserError
    (one line) for another TensorRT or another GPU compute capability; a list of warnings for
    another board or L4T release of the same compute capability."""
    p = str(engine_path)
    built, now = doc.get("tensorrt"), here.get("tensorrt")
    where = f"TensorRT {now}" + (f" on {here['gpu']}" if here.get("gpu") else "")
    if built and now and str(built) != str(now):
        raise UserError(f"{p}: engine built with TensorRT {built}, this is {where}; {REBUILD_HINT}")
    cc_built, cc_now = doc.get("compute_capability"), here.get("compute_capability")
    tag = re.fullmatch(r"sm(\d)(\d+)", str(doc.get("gpu_tag") or ""))
    if not cc_built and tag:  # sidecars of version 1 have only the tag ("sm87")
        cc_built = f"{tag.group(1)}.{tag.group(2)}"
    if cc_built and cc_now and str(cc_built) != str(cc_now):
        raise UserError(
            f"{p}: engine built for a GPU of compute capability {cc_built} "
            f"({doc.get('gpu') or 'unknown GPU'}), this is {cc_now} ({here.get('gpu')}); "
            f"{REBUILD_HINT}"
        )
    warnings = []
    for key, what in (("gpu", "GPU"), ("board", "board"), ("l4t", "L4T release")):
        a, b = doc.get(key), here.get(key)
        if a and b and a != b:
            warnings.append(
                f"{p}: engine built on another {what} ({a}; this is {b}) of the same compute "
                "capability: it may run slower or fail; rebuild it here for the best kernels"
            )
    return warnings


# -- files: hashes, sidecars --------------------------------------------------------------------


file_sha256 = sha256_file  # one helper (edge_fer.fileio); the name the TensorRT code uses


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    """`fer.fp16.engine` -> `fer.fp16.engine.json`."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def sidecar_bytes(metadata: dict[str, str], **info: Any) -> bytes:
    """The sidecar document: the ONNX metadata_props (`metadata`) plus build facts (`info`)."""
    doc: dict[str, Any] = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION}
    doc.update({k: v for k, v in info.items() if k not in ("format", "version", "metadata")})
    doc["metadata"] = {str(k): str(v) for k, v in metadata.items()}
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def is_our_sidecar(engine_path: str | os.PathLike[str]) -> bool:
    """Whether `<engine>.json` exists and is an edge-fer engine sidecar."""
    if not sidecar_path(engine_path).is_file():
        return False
    try:
        return read_sidecar(engine_path) is not None
    except UserError:
        return False


def check_sidecar_ours(engine_path: str | os.PathLike[str], name: str = "engine_path") -> Path:
    """The sidecar path of `engine_path`; UserError when something of that name exists that is
    not an edge-fer engine sidecar: it is the user's, never overwritten (force or not). `name`:
    how the message names the engine (a flag in the CLI)."""
    out = sidecar_path(engine_path)
    if os.path.lexists(out) and not is_our_sidecar(engine_path):
        raise UserError(
            f"{name} {engine_path}: its sidecar {out} exists and is not an edge-fer engine "
            "sidecar; not overwriting it (move it, or name the engine differently)"
        )
    return out


def write_sidecar(
    engine_path: str | os.PathLike[str], metadata: dict[str, str], **info: Any
) -> Path:
    """Write `<engine>.json` (atomically); returns its path. A file of that name that is not
    an edge-fer sidecar is the user's: UserError rather than overwrite it."""
    out = check_sidecar_ours(engine_path)
    try:
        write_bytes(out, sidecar_bytes(metadata, **info))
    except OSError as exc:
        raise UserError(
            f"{out}: cannot write the engine sidecar ({os_error_reason(exc)})"
        ) from None
    return out


def read_sidecar(engine_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sidecar of an engine as a dict (its "metadata" a str -> str dict), or None when the
    engine has none. UserError for a sidecar that is not ours or is malformed."""
    sp = sidecar_path(engine_path)
    if not sp.is_file():
        return None
    try:
        doc = json.loads(sp.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{sp}: unreadable engine sidecar ({first_line(exc)})") from None
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
        raise UserError(f'{sp}: not an edge-fer engine sidecar (no "format": "{SIDECAR_FORMAT}")')
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise UserError(f'{sp}: engine sidecar has no str -> str "metadata" object')
    return doc


def onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """metadata_props of an ONNX model (with the onnx package when installed, else ONNX Runtime)."""
    p = Path(path)
    try:
        import onnx
    except ImportError:
        onnx = None  # type: ignore[assignment]
    try:
        if onnx is not None:
            model = onnx.load(str(p), load_external_data=False)
            return {e.key: e.value for e in model.metadata_props}
        import onnxruntime as ort

        from edge_fer.backends.onnxruntime_backend import session_model  # a non-UTF-8 name

        sess = ort.InferenceSession(session_model(p), providers=["CPUExecutionProvider"])
        return dict(sess.get_modelmeta().custom_metadata_map or {})
    except Exception as exc:  # noqa: BLE001  onnx/onnxruntime raise many kinds
        raise UserError(f"{p}: not a loadable ONNX model ({first_line(exc)})") from None


def engine_metadata(engine_path: str | os.PathLike[str]) -> dict[str, str]:
    """Metadata for an engine: its sidecar's, else that of a sibling ONNX of the same stem
    (`fer.fp16.engine` -> `fer.fp16.onnx`, `fer.onnx`), else {}."""
    doc = read_sidecar(engine_path)
    if doc is not None:
        return dict(doc["metadata"])
    p = Path(engine_path)
    parts = p.name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        cand = p.with_name(".".join(parts[:k]) + ".onnx")
        if cand.is_file():
            try:
                return onnx_metadata(cand)
            except UserError:
                return {}
    return {}


def cache_dir() -> Path | None:
    """Where engines built from ONNX models go when the model's folder is not writable:
    `tensorrt/` in edge-fer's cache folder (`edge_fer.cache.cache_dir`); None without a home
    (a container run as a user with no home: "~" was then a folder named "~" in the working
    folder)."""
    from edge_fer.cache import cache_dir as root

    folder = root()
    return Path(folder) / "tensorrt" if folder else None


__all__ = [
    "NOT_AVAILABLE",
    "SIDECAR_FORMAT",
    "TrtFeatures",
    "TrtLog",
    "api_flavour",
    "cache_dir",
    "check_engine_facts",
    "check_sidecar_ours",
    "dims",
    "engine_metadata",
    "file_sha256",
    "is_jetson",
    "is_our_sidecar",
    "jetpack_release",
    "l4t_release",
    "make_logger",
    "onnx_metadata",
    "platform_facts",
    "read_sidecar",
    "require_pycuda",
    "require_tensorrt",
    "sidecar_path",
    "trt_features",
    "write_sidecar",
]
