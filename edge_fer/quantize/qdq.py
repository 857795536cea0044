"""The INT8 Q/DQ (explicitly quantized) ONNX model, built with ONNX Runtime's `quantize_static`.

The activation ranges come from `ranges.compute` over the histograms `ranges.collect` kept
(the same numbers the TensorRT cache holds): they are handed to the quantizer as per-tensor
overrides, so its own calibration pass only has to see one small batch. Two layouts:

- ``tensorrt``: what TensorRT fuses. INT8 symmetric activations (zero point 0, scale
  amax / 127) and per-channel symmetric INT8 weights; Q/DQ pairs only on the inputs of the
  weighted ops (Conv, ConvTranspose, Gemm, MatMul: activation and weight), never on their
  outputs; biases stay float. Weights are stored in float behind a QuantizeLinear ->
  DequantizeLinear pair (older TensorRT, 8.0-8.2 at least, rejects INT8 initializers; TensorRT
  folds the pair).
  NVIDIA's placement recommendation for explicit quantization, the layout ModelOpt's ONNX PTQ
  makes too.
- ``cpu``: what ONNX Runtime's CPU kernels fuse into QLinearConv / QGemm: UINT8 asymmetric
  activations (range clipped to the calibrated amax), per-channel symmetric INT8 weights, Q/DQ
  on the inputs and outputs of every op the quantizer knows, INT32 biases. TensorRT does not
  take this layout (UINT8 and INT32 Q/DQ).

The model keeps its edge-fer metadata (preprocessing, classes, provenance) and gains
`edge_fer.quantization` (JSON: method, target, calibration set size, ...).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

import numpy as np

from edge_fer.errors import UserError

TARGETS = ("tensorrt", "cpu")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# ops that run through TensorRT and ONNX Runtime alike and that the quantizer either quantizes
# or leaves in float around the Q/DQ pairs
_CONTROL_FLOW = {"If", "Loop", "Scan"}
_QUANTIZED = {
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeLinear",
    "QLinearAdd",
    "QLinearMul",
}
META_KEY = "edge_fer.quantization"


def check_supported(model) -> None:
    """UserError naming the first operator the INT8 quantizer cannot handle."""
    import onnx

    g = model.graph
    # per-channel QuantizeLinear/DequantizeLinear (the axis attribute) are opset 13: an older
    # model failed in ONNX Runtime's check of the Q/DQ models, after the calibration pass
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise UserError(
            f"the model is ONNX opset {opset}; INT8 Q/DQ models need opset 13 or newer: "
            "export it again with --opset 13 or higher (17, the default)"
        )
    for node in g.node:
        name = node.name or (node.output[0] if node.output else "?")
        if node.domain not in ("", "ai.onnx"):
            raise UserError(
                f"the model has operator {node.domain}::{node.op_type} (node {name}), which the "
                "INT8 quantizer cannot handle (custom operators are not supported)"
            )
        if node.op_type in _QUANTIZED:
            raise UserError(
                f"the model is already quantized (operator {node.op_type}, node {name}); "
                "calibrate the FP32 model"
            )
        if node.op_type in _CONTROL_FLOW or any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        ):
            raise UserError(
                f"the model has operator {node.op_type} (node {name}), which the INT8 quantizer "
                "cannot handle (control flow / sub-graphs)"
            )
        if not onnx.defs.has(node.op_type):
            raise UserError(
                f"the model has operator {node.op_type} (node {name}), which the INT8 quantizer "
                "cannot handle (not an ONNX operator)"
            )
    for t in list(g.input) + list(g.output):
        et = t.type.tensor_type.elem_type if t.type.HasField("tensor_type") else 0
        if t.name not in {i.name for i in g.initializer} and et not in (onnx.TensorProto.FLOAT, 0):
            raise UserError(
                f"the model's {t.name!r} is {onnx.TensorProto.DataType.Name(et)}; INT8 "
                "calibration needs a float32 model"
            )


@contextlib.contextmanager
def _quiet():
    """quantize_static logs advice (pre-processing, ...) on the root logger; keep it off
    the user's terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _overrides(ranges, names: set[str], target: str) -> dict:
    out = {}
    for n, r in ranges.tensors.items():
        if n not in names:
            continue
        a = float(r.amax)
        if target == "tensorrt":
            lo, hi = -a, a
        else:  # asymmetric: the observed range, clipped to the calibrated amax
            lo = max(min(r.min, 0.0), -a)
            hi = min(max(r.max, 0.0), a)
        out[n] = [{"rmin": np.array(lo, np.float32), "rmax": np.array(hi, np.float32)}]
    return out


def quantize(
    model_path: str | os.PathLike,
    ranges,
    out_path: str | os.PathLike,
    reader,
    target: str = "tensorrt",
    info: dict | None = None,
) -> dict:
    """Write the Q/DQ model for `model_path` to `out_path` (directly: the caller renames).

    ranges: a `ranges.RangeSet`; reader: a CalibrationDataReader giving at least one batch
    (its ranges are all overridden); info: extra fields for the `edge_fer.quantization`
    metadata. Returns a summary of the quantized graph.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if target not in TARGETS:
        raise UserError(f"{target!r} is unknown; choose {', '.join(TARGETS)}", param="target")
    model = onnx.load(os.fspath(model_path))
    check_supported(model)
    names = {i.name for i in model.graph.input}
    for n in model.graph.node:
        names.update(o for o in n.output if o)
    overrides = _overrides(ranges, names, target)
    extra: dict = {"TensorQuantOverrides": overrides, "WeightSymmetric": True}
    if target == "tensorrt":
        extra.update(
            ActivationSymmetric=True,
            QuantizeBias=False,
            OpTypesToExcludeOutputQuantization=list(WEIGHTED_OPS),
            QDQKeepRemovableActivations=True,
            # float weights -> QuantizeLinear -> DequantizeLinear: older TensorRT (8.0-8.2 at least)
            # rejects INT8 initializers as DequantizeLinear inputs; it folds the pair into INT8
            AddQDQPairToWeight=True,
        )
        kw: dict = {
            "activation_type": QuantType.QInt8,
            "op_types_to_quantize": list(WEIGHTED_OPS),
        }
    else:
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        extra.update(ActivationSymmetric=False)
        # ONNX Runtime's default set, less the ops whose output is a probability: a softmax
        # quantized to a calibrated range clipped every class of a low-confidence model to
        # one value (all 0.078, summing to 0.55); in float it costs nothing at 7 values
        ops = (set(QDQRegistry) | set(QLinearOpsRegistry)) - {"Softmax", "Sigmoid"}
        kw = {"activation_type": QuantType.QUInt8, "op_types_to_quantize": sorted(ops)}
    work = onnx.ModelProto()
    work.CopyFrom(model)  # quantize_static moves a ModelProto's weights to external data
    try:
        with _quiet():
            quantize_static(
                work,
                os.fspath(out_path),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options=extra,
                **kw,
            )
    except UserError:
        raise
    except OSError as exc:  # writing its files (a full disk, a size limit): not the model's fault
        from edge_fer.fileio import os_error_reason

        raise UserError(
            f"cannot write the Q/DQ model {out_path} ({os_error_reason(exc)})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any quantizer failure is reported as one line
        from edge_fer.fileio import first_line

        raise UserError(
            f"{model_path}: the ONNX Runtime quantizer failed ({first_line(exc)})"
        ) from None
    q = onnx.load(os.fspath(out_path))
    summary = summarize(q)
    _check_scales(q, ranges, target)
    meta = {p.key: p.value for p in model.metadata_props}
    qinfo = {
        "format": "QDQ",
        "target": target,
        "activations": "int8 symmetric" if target == "tensorrt" else "uint8 asymmetric",
        "weights": "int8 symmetric per-channel",
        "quantized_ops": summary["quantized_ops"],
        "tool": "onnxruntime.quantization.quantize_static",
        **(info or {}),
    }
    meta[META_KEY] = json.dumps(qinfo)
    del q.metadata_props[:]
    for k, v in meta.items():
        q.metadata_props.add(key=k, value=v)
    onnx.save(q, os.fspath(out_path))
    return summary


def summarize(model) -> dict:
    """Counts of the Q/DQ graph: quantized ops, Q and DQ nodes, per-channel weights."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    quantized: dict[str, int] = {}
    per_channel = 0
    for n in g.node:
        ins = [producer.get(i) for i in n.input[:2] if i]
        if (
            n.op_type in WEIGHTED_OPS
            and ins
            and all(p is not None and p.op_type == "DequantizeLinear" for p in ins)
        ):
            quantized[n.op_type] = quantized.get(n.op_type, 0) + 1
            wdq = ins[1]
            scale = inits.get(wdq.input[1]) if wdq is not None else None
            if scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1:
                per_channel += 1
    ops = [n.op_type for n in g.node]
    return {
        "quantized_ops": quantized,
        "quantize_nodes": ops.count("QuantizeLinear"),
        "dequantize_nodes": ops.count("DequantizeLinear"),
        "per_channel_weights": per_channel,
        "nodes": len(ops),
    }


def _check_scales(model, ranges, target: str) -> None:
    """Every activation QuantizeLinear must carry the calibrated scale (the overrides took)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] not in ranges.tensors:
            continue
        s = inits.get(n.input[1])
        if s is None:
            continue
        got = float(numpy_helper.to_array(s).reshape(-1)[0])
        r = ranges.tensors[n.input[0]]
        if target == "tensorrt":
            want = r.amax / 127.0
            if r.amax > 0 and not np.isclose(got, want, rtol=1e-5):
                raise RuntimeError(f"scale of {n.input[0]} is {got}, calibrated {want}")
