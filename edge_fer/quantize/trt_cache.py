"""TensorRT INT8 calibration caches: write them from calibrated ranges, read and check them.

The format TensorRT's calibrators write and read (`trtexec --calib=FILE`, DeepStream's
`int8-calib-file`, `IInt8Calibrator.read_calibration_cache`), plain text:

    TRT-100300-EntropyCalibration2
    input: 3c010204
    /net/features/features.0/features.0.2/Relu_output_0: 3d1a2b3c
    ...

- header: `TRT-<version>-<algorithm>` (NVIDIA/TensorRT release/8.4
  samples/sampleINT8/README.md: "the TensorRT version followed by the calibration algorithm").
  The version is TensorRT's NV_TENSORRT_VERSION: major * 1000 + minor * 100 + patch up to 9.x
  (NVIDIA/TensorRT release/8.6 and release/9.3 include/NvInferRuntimeBase.h), major * 10000 +
  minor * 100 + patch from 10.0 on (release/10.0 include/NvInferRuntimeBase.h,
  NV_TENSORRT_VERSION_INT). So 8.5.2 (JetPack 5.1) writes TRT-8502, 8.6.2 (JetPack 6.0) 8602,
  10.3.0 (JetPack 6.1/6.2) 100300; caches in public repositories agree (TRT-8203 from 8.2.3
  in NVIDIA/TensorRT#2036, TRT-8600 in NVIDIA-AI-IOT/cuDLA-samples data/model/qat2ptq.cache,
  TRT-100300 and TRT-101300 from TensorRT 10.3 and 10.13). No TensorRT writes a 5-digit code:
  10300 is 10.3.0 by the pre-10 rule, a header TensorRT 10.3 does not take.
- what a reader accepts: TensorRT uses a cache only when its header is its own version and the
  algorithm of the calibrator reading it; any other cache is skipped (NVIDIA/TensorRT#1378)
  and TensorRT calibrates from the calibrator's batches instead. A calibrator that only
  replays a cache (edge-fer's, DeepStream's without images, trtexec --calib) has none, so the
  build fails: TensorRT 10.3 given a TRT-8600 cache stops with "Tensor input is bound to
  nullptr" (NVIDIA/Deep-Learning-Accelerator-SW#26). Hence the header must name the TensorRT
  on the device, and `retarget_cache` rewrites it. ONNX Runtime's TensorRT EP checks only the
  "TRT-" prefix (microsoft/onnxruntime onnxruntime/core/providers/tensorrt/
  tensorrt_execution_provider_utils.h, ReadDynamicRange); `parse_cache` likewise reads any
  version, since the ranges do not depend on it. The algorithm is EntropyCalibration2 whatever
  method chose the ranges: it names the calibrator class that reads the cache (edge-fer's and
  DeepStream's are IInt8EntropyCalibrator2), not how the numbers were made.
- one line per tensor, `<tensor name>: <scale>`, the name as in the ONNX graph (TensorRT's ONNX
  parser keeps them) and the scale amax / 127 as the 8 hex digits of its IEEE-754 float32 bits
  (big-endian, as `struct.pack('>f')` gives them). A cache TensorRT writes also names tensors
  its parser made, and writes 0 for a tensor that was always 0; both are read.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from edge_fer.errors import UserError

ALGORITHM = "EntropyCalibration2"
DEFAULT_TRT_VERSION = "10.3.0"  # JetPack 6.1 / 6.2 and DeepStream 7.1
MIN_SCALE = 1.1754943508222875e-38  # smallest normal float32
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_HEX = re.compile(r"^[0-9a-fA-F]{1,8}$")


def version_code(version: str | int) -> int:
    """TensorRT's integer version: '8.6.1' -> 8601, '10.3.0' -> 100300, '100300' -> 100300."""
    if isinstance(version, int) and not isinstance(version, bool):
        return _checked_code(version, version)
    if not isinstance(version, str):  # 10.10 as a float is 10.1: another TensorRT's header
        raise UserError(
            f"TensorRT version must be a string such as '10.3.0' (or a code such as 100300), "
            f"got {version!r}"
        )
    s = version.strip()
    if s.isdigit():
        return _checked_code(int(s), version)
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?(?:\.\d+)*", s)
    if not m:
        raise UserError(f"TensorRT version must look like 8.6.1 or 10.3.0, got {version!r}")
    major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if minor > 99 or patch > 99:
        raise UserError(f"TensorRT version {version!r}: minor and patch must be < 100")
    if major >= 10:
        return major * 10000 + minor * 100 + patch
    if minor > 9:
        raise UserError(f"TensorRT version {version!r}: minor must be < 10 before TensorRT 10")
    return major * 1000 + minor * 100 + patch


def _checked_code(code: int, given: str | int) -> int:
    # a bare "10" or "8" is a major version, not a code: TensorRT would skip a cache headed
    # TRT-10-..., so it is refused rather than guessed (8.0.0 is the smallest code, 8000)
    if code < 1000:
        raise UserError(
            f"TensorRT version must look like 8.6.1 or 10.3.0 (or a code such as 100300), "
            f"got {given!r}"
        )
    # 4 digits up to 9.x, 6 from 10.0 on: 5 digits is the pre-10 rule applied to 10.x
    # (10.3.0 -> 10300), a header TensorRT 10 skips (it writes TRT-100300-...)
    if 10000 <= code < 100000:
        raise UserError(
            f"TensorRT version code {given!r} is no TensorRT's: codes have 4 digits up to 9.x "
            "(8.6.1 -> 8601) and 6 from 10.0 on (10.3.0 -> 100300); give the version as "
            "X.Y.Z"
        )
    return code


def implicit_int8_warning(version: str | int) -> str | None:
    """The warning for a cache headed for TensorRT 11 or later, which builds no implicit INT8
    engine from a cache (the calibrator API is gone): None for TensorRT <= 10."""
    code = version_code(version)
    if code < 110000:
        return None
    return (
        f"TensorRT {version_text(code)} cannot use the calibration cache (implicit INT8 from a "
        "cache was removed in TensorRT 11): build from the Q/DQ model model.int8.qdq.onnx "
        "(--target tensorrt or both)"
    )


def version_text(code: int) -> str:
    """100300 -> '10.3.0', 8601 -> '8.6.1'; UserError for a code no TensorRT writes."""
    code = _checked_code(int(code), code)
    if code >= 100000:
        return f"{code // 10000}.{code // 100 % 100}.{code % 100}"
    return f"{code // 1000}.{code // 100 % 10}.{code % 100}"


def scale_hex(scale: float) -> str:
    """IEEE-754 float32 bits of `scale` as 8 lowercase hex digits (3c010204 for 1/127.06)."""
    return struct.pack(">f", float(scale)).hex()


def hex_scale(text: str) -> float:
    return float(struct.unpack(">f", int(text, 16).to_bytes(4, "big"))[0])


@dataclass
class CalibCache:
    version: int
    algorithm: str
    scales: dict[str, float]  # tensor name -> scale (amax / 127)

    @property
    def amax(self) -> dict[str, float]:
        return {k: v * 127.0 for k, v in self.scales.items()}


def format_cache(amax: dict[str, float], version: str | int = DEFAULT_TRT_VERSION) -> bytes:
    """The cache text for tensors -> amax (symmetric ranges), in the order given."""
    code = version_code(version)
    lines = [f"TRT-{code}-{ALGORITHM}"]
    for name, a in amax.items():
        if "\n" in name or not name.strip():
            raise UserError(f"tensor name {name!r} cannot be written to a calibration cache")
        if not a >= 0.0 or a == float("inf"):
            raise UserError(f"tensor {name}: range {a} is not a finite number >= 0")
        # a tensor that was always 0 gets the smallest normal float32 scale, not 0, so that a
        # range derived from it (scale * 127) is never empty
        lines.append(f"{name}: {scale_hex(max(a / 127.0, MIN_SCALE))}")
    return ("\n".join(lines) + "\n").encode()


def parse_cache(data: bytes, where: str = "calibration cache") -> CalibCache:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{where}: not a TensorRT calibration cache (binary data)") from None
    lines = text.splitlines()
    if not lines:
        raise UserError(f"{where}: empty calibration cache")
    m = _HEADER.match(lines[0].strip())
    if not m:
        raise UserError(
            f"{where}:1: not a TensorRT calibration cache (expected a header like "
            f"TRT-8601-{ALGORITHM}, got {lines[0][:60]!r})"
        )
    scales: dict[str, float] = {}
    for no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(":")
        value = value.strip()
        if not sep or not name or not _HEX.match(value):
            raise UserError(f"{where}:{no}: expected 'tensor: <8 hex digits>', got {line[:80]!r}")
        if name in scales:
            raise UserError(f"{where}:{no}: tensor {name!r} appears twice")
        scale = hex_scale(value)
        # NaN, infinity or a negative scale is no range; 0 is one: TensorRT writes it for a
        # tensor that was always 0 (e.g. "(Unnamed Layer* 64) [Shuffle]_output: 0", TRT 8.4)
        if not (0.0 <= scale < float("inf")):
            raise UserError(
                f"{where}:{no}: tensor {name!r} has scale {scale} (must be a finite number >= 0)"
            )
        scales[name] = scale
    return CalibCache(int(m.group(1)), m.group(2), scales)


def retarget_cache(data: bytes, version: str | int, where: str = "calibration cache") -> bytes:
    """The cache `data` with its header rewritten for TensorRT `version` (the ranges do not
    depend on the version; TensorRT ignores a cache whose header names another one). The body is
    validated first; UserError for a cache another calibrator wrote (its header names the
    calibrator class that must read it, and edge-fer's is IInt8EntropyCalibrator2)."""
    cache = parse_cache(data, where)
    if cache.algorithm != ALGORITHM:
        raise UserError(
            f"{where}: a {cache.algorithm} cache; edge-fer reads {ALGORITHM} caches only "
            "(recalibrate with `edge-fer calibrate`)"
        )
    if not cache.scales:
        raise UserError(f"{where}: the calibration cache holds no tensor")
    code = version_code(version)
    body = data.decode("utf-8").split("\n", 1)[1] if b"\n" in data else ""
    return f"TRT-{code}-{ALGORITHM}\n".encode() + body.encode()


def read_cache(path: str | os.PathLike) -> CalibCache:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such calibration cache")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise UserError(f"{p}: cannot read ({exc.strerror or exc})") from None
    return parse_cache(data, str(p))


def model_tensor_names(model) -> set[str]:
    """Every tensor name of an ONNX model (onnx.ModelProto or path): inputs and node outputs."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model), load_external_data=False)
    g = model.graph
    names = {i.name for i in g.input}
    for n in g.node:
        names.update(o for o in n.output if o)
    return names


# tensors TensorRT's ONNX parser makes, which a cache TensorRT writes names beside the graph's:
# "(Unnamed Layer* 8) [Constant]_output", "ONNXTRT_Broadcast_3", "Reshape__12"
_PARSER_MADE = re.compile(r"^(\(Unnamed Layer\* \d+\) .*|ONNXTRT_.*|[A-Za-z][A-Za-z0-9]*__\d+)$")


def parser_made(name: str) -> bool:
    """Whether `name` is one TensorRT's ONNX parser gives a tensor it made (no graph has it)."""
    return _PARSER_MADE.match(name) is not None


def check_cache(cache: CalibCache, model, where: str = "calibration cache") -> None:
    """UserError when the cache was not made for the model: it names a tensor the model's graph
    lacks (a cache for another model or another export), naming a few, or the input has no
    scale. The only names outside the graph a cache for this model holds are those TensorRT's
    parser made ("(Unnamed Layer* 8) [Constant]_output", "ONNXTRT_Broadcast_3",
    "Reshape__12"): a cache TensorRT writes for an ONNX model has them, and TensorRT skips
    names its network lacks. Before, a cache was refused only when none of its names but the
    input's were the model's: a cnn4's cache passed for the vgg (their input and first
    layers share names), 11 of its 17 tensors unknown."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    names = model_tensor_names(model) | inits  # (a parser may name a constant by its weights)
    unknown = [n for n in cache.scales if n not in names and not parser_made(n)]
    if unknown:
        few = ", ".join(unknown[:4]) + (f" and {len(unknown) - 4} more" if len(unknown) > 4 else "")
        raise UserError(
            f"{where} does not match the model: {len(unknown)} of its {len(cache.scales)} "
            f"tensors are not in the model's graph ({few}); recalibrate with `edge-fer "
            "calibrate --model MODEL`"
        )
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    missing = [n for n in inputs if n not in cache.scales]
    if missing:
        raise UserError(f"{where} does not match the model: no scale for its input {missing[0]!r}")
