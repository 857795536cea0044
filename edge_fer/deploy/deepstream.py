"""`edge-fer deploy deepstream`: the expression model as an nvinfer secondary classifier.

Writes, into one folder:

    config_infer_secondary_fer.txt   nvinfer [property] group: process-mode=2 (on the objects
                                     of the face detector, gie-unique-id 1), network-type=1
                                     (classifier), GRAY input with net-scale-factor/offsets from
                                     the model's mean/std, precision, labels, output blob
    config_infer_primary_face.txt    the face detector's nvinfer config: a PLACEHOLDER the user
                                     fills with their detector (e.g. NVIDIA's FaceDetect)
    deepstream_app_fer.txt           deepstream-app: source, streammux, primary, tracker,
                                     secondary, osd, sink
    labels_fer.txt                   the class names on ONE line, separated by ';' (nvinfer's
                                     classifier label format)
    fer_probe.py                     a pyds app: the same pipeline, the crop margin, JSON events
    <model>.onnx, calib.cache        the model, and for INT8 the cache with the target's header
    README.md                        how to run it, and what differs from `edge-fer run`

nvinfer normalises y = net-scale-factor * (x - offset) on 0..255 pixels; edge-fer's models
were trained on (x / 255 - mean) / std, so net-scale-factor = 1 / (255 std) and
offset = 255 mean (0.0156862745 and 127.5 for mean 0.5, std 0.25).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_fer.deploy.common import (
    ModelInfo,
    check_batch,
    check_calib_file,
    check_one_line,
    number,
    nvinfer_normalisation,
    read_model,
    staged_folder,
)
from edge_fer.errors import UserError

SECONDARY = "config_infer_secondary_fer.txt"
PRIMARY = "config_infer_primary_face.txt"
APP = "deepstream_app_fer.txt"
LABELS = "labels_fer.txt"
PROBE = "fer_probe.py"
CACHE = "calib.cache"
NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}  # nvinfer's network-mode
DS_ROOT = "/opt/nvidia/deepstream/deepstream"
TRACKER_LIB = f"{DS_ROOT}/lib/libnvds_nvmultiobjecttracker.so"
TRACKER_CONFIG = f"{DS_ROOT}/samples/configs/deepstream-app/config_tracker_IOU.yml"
PLACEHOLDER = "REPLACE_WITH_YOUR_FACE_DETECTOR"
PRIMARY_ID = 1
SECONDARY_ID = 2


@dataclass
class DeepStreamOptions:
    target: str | None = None  # edge_fer.export.targets name: checks the precision
    precision: str = "fp16"
    calib_cache: str | None = None  # INT8 from an FP32 model (default: the committed one)
    trt_version: str | None = None  # TensorRT that reads the cache (default: the target's)
    batch_size: int = 16  # faces per secondary batch
    threshold: float = 0.0  # classifier-threshold: label only above this probability
    min_face: int = 32  # input-object-min-width/height (px in streammux resolution)
    face_class_id: int = 0  # the detector's class id of faces
    reinfer_interval: int = 5  # secondary-reinfer-interval (frames): expressions change
    source: str = "csi://0"
    width: int = 1280  # camera mode and streammux resolution
    height: int = 720
    fps: int = 30
    sink: str = "display"  # display | none
    gpu_id: int = 0


# gstnvinfer's MIN_INPUT_OBJECT_WIDTH/HEIGHT: a smaller input-object-min-* is raised to it
NVINFER_MIN_OBJECT = 16


def _check(info: ModelInfo, o: DeepStreamOptions) -> None:
    from edge_fer.export.targets import PRECISIONS, check_target

    if o.precision not in PRECISIONS:
        raise UserError(f"unknown precision {o.precision!r}; choose one of {', '.join(PRECISIONS)}")
    if o.target is not None:
        check_target(o.target, o.precision)
    check_batch(info, o.batch_size, "batch_size")
    if not 0.0 <= o.threshold <= 1.0:
        raise UserError(f"must be in 0..1, got {o.threshold}", param="threshold")
    for name in ("face_class_id", "reinfer_interval", "gpu_id"):
        if getattr(o, name) < 0:
            raise UserError(f"must be >= 0, got {getattr(o, name)}", param=name)
    if o.min_face < NVINFER_MIN_OBJECT:  # nvinfer raises it to 16 without a word, and the
        # probe, which grows boxes of at least min_face, would then disagree with deepstream-app
        raise UserError(
            f"must be >= {NVINFER_MIN_OBJECT} (nvinfer classifies no smaller object), "
            f"got {o.min_face}",
            param="min_face",
        )
    for name, top in (("width", 7680), ("height", 4320)):  # was one message for both
        if not 32 <= getattr(o, name) <= top:
            raise UserError(f"must be in 32..{top}, got {getattr(o, name)}", param=name)
    if not 1 <= o.fps <= 240:
        raise UserError(f"must be in 1..240, got {o.fps}", param="fps")
    if o.sink not in ("display", "none"):
        raise UserError(f"unknown sink {o.sink!r}; choose display or none")
    spec = info.spec
    if spec.clahe:
        raise UserError(
            f"{info.path}: the model expects CLAHE-equalised faces, which nvinfer cannot do; "
            "deploy a model trained without --clahe (or use `edge-fer deploy triton`)"
        )
    if spec.align:
        raise UserError(
            f"{info.path}: the model expects eye-aligned faces (trained with --align), which "
            "nvinfer's box crops are not; deploy a model trained without --align"
        )
    if spec.channels != 1:
        raise UserError(
            f"{info.path}: the model takes grayscale replicated to {spec.channels} channels; "
            "nvinfer feeds GRAY as one channel (model-color-format=2): export a 1-channel model"
        )
    if info.quantized == "cpu":
        raise UserError(
            f"{info.path} is the INT8 model for ONNX Runtime on CPU, which TensorRT cannot "
            "build; deploy the FP32 model with --precision int8 (calibration cache) or the "
            "TensorRT Q/DQ model (model.int8.qdq.onnx)"
        )
    if info.quantized == "tensorrt" and o.precision != "int8":
        raise UserError(f"{info.path} is a Q/DQ INT8 model: use --precision int8")
    if o.calib_cache and o.precision != "int8":  # before: ignored without a word
        # (led by the flag: "--calib-cache c.cache is only used ..."; it read "--calib-cache a
        # calibration cache is only used ...")
        raise UserError(
            f"{o.calib_cache} is only used with precision int8, not {o.precision}",
            param="calib_cache",
        )
    if o.trt_version is not None and o.precision != "int8":  # before: the same kit without it
        raise UserError(
            f"{o.trt_version} is only used with precision int8 (the TensorRT that reads the "
            f"calibration cache), not {o.precision}",
            param="trt_version",
        )
    if o.calib_cache and info.quantized == "tensorrt":
        # (led by the flag, the message read "--calib-cache MODEL is a Q/DQ model")
        raise UserError(
            f"{o.calib_cache} is not used: the model {info.path} is a Q/DQ model, which "
            "carries its own scales",
            param="calib_cache",
        )


def _trt_version(o: DeepStreamOptions) -> str:
    """The TensorRT the kit is for: --trt-version, else the target's newest JetPack's."""
    from edge_fer.export.targets import get_target
    from edge_fer.quantize.trt_cache import DEFAULT_TRT_VERSION

    if o.trt_version:
        return o.trt_version
    if o.target is not None:
        return str(get_target(o.target)["default_tensorrt"])
    return DEFAULT_TRT_VERSION


def _calib_cache(info: ModelInfo, o: DeepStreamOptions) -> tuple[bytes, str] | None:
    """(cache bytes with the header for the target's TensorRT, that version) for INT8; None
    when no cache is needed (not INT8; a Q/DQ model for TensorRT 11, which has no calibrators).

    A Q/DQ model gets a cache of the header alone: nvinfer sets TensorRT's INT8 flag only when
    it has a calibrator, which it makes only from an `int8-calib-file` it can read; without
    one it builds FP16 ("INT8 calibration file not specified. Trying FP16 mode.",
    nvdsinfer_model_builder.cpp). TensorRT does not use a calibrator on a network with Q/DQ
    layers: the scales are the graph's."""
    from edge_fer.export.engine import default_calib_cache, prepare_calib_cache
    from edge_fer.quantize.trt_cache import format_cache, version_code

    if o.precision != "int8":
        return None
    version = _trt_version(o)
    if info.quantized == "tensorrt":
        return (format_cache({}, version), version) if version_code(version) < 110000 else None
    if o.calib_cache:
        check_calib_file(o.calib_cache)
    cache = Path(o.calib_cache) if o.calib_cache else default_calib_cache(info.path)
    if cache is None:
        raise UserError(
            f"INT8 from {info.path.name} needs its TensorRT calibration cache: pass "
            "--calib-cache FILE (`edge-fer calibrate` writes calib.cache), or deploy the Q/DQ "
            "model (model.int8.qdq.onnx)"
        )
    if version_code(version) >= 110000:
        raise UserError(
            f"TensorRT {version} has no implicit INT8 (calibration caches were removed in 11): "
            "deploy the Q/DQ model (model.int8.qdq.onnx)"
        )
    return prepare_calib_cache(cache, info.path, version), version


def _ini(groups: list[tuple[str, list[tuple[str, Any]]]], header: str) -> str:
    """INI text (GLib key file, which nvinfer and deepstream-app read): comments on their own
    lines only, so Python's configparser reads it back the same."""
    lines = [f"# {ln}" if ln else "#" for ln in header.strip().splitlines()]
    for name, items in groups:
        lines += ["", f"[{name}]"]
        for k, v in items:
            if k.startswith("#"):
                lines.append(k)
            else:
                lines.append(f"{k}={v}")
    return "\n".join(lines) + "\n"


def engine_name(model_file: str, batch: int, gpu_id: int, precision: str) -> str:
    """The file nvinfer serialises the engine it builds to (so the next start loads it)."""
    return f"{model_file}_b{batch}_gpu{gpu_id}_{precision}.engine"


def secondary_config(
    info: ModelInfo, o: DeepStreamOptions, model_file: str, cache: str | None
) -> str:
    k, offset = nvinfer_normalisation(info.spec)
    c, h, w = info.input_dims
    qdq = info.quantized == "tensorrt"
    items: list[tuple[str, Any]] = [
        ("gpu-id", o.gpu_id),
        ("onnx-file", model_file),
        ("model-engine-file", engine_name(model_file, o.batch_size, o.gpu_id, o.precision)),
        ("labelfile-path", LABELS),
        ("# 0=FP32, 1=INT8, 2=FP16", None),
        ("network-mode", NETWORK_MODE[o.precision]),
    ]
    if cache and qdq:
        note = (
            "# nvinfer builds INT8 only with a calibration file; the Q/DQ model's scales are "
            "used, this header-only cache is not read for them"
        )
        items.append((note, None))
    if cache:
        items.append(("int8-calib-file", cache))
    items += [
        ("batch-size", o.batch_size),
        ("# y = net-scale-factor * (x - offsets) = (x/255 - mean)/std of the model", None),
        ("net-scale-factor", number(k)),
        ("offsets", number(offset)),
        ("# 2=GRAY: one channel, as the model was trained", None),
        ("model-color-format", 2),
        ("infer-dims", f"{c};{h};{w}"),
        ("maintain-aspect-ratio", 0),
        ("output-blob-names", info.output_name),
        ("# 1=classifier; 2=secondary: runs on the objects of the primary (face detector)", None),
        ("network-type", 1),
        ("process-mode", 2),
        ("gie-unique-id", SECONDARY_ID),
        ("operate-on-gie-id", PRIMARY_ID),
        ("operate-on-class-ids", o.face_class_id),
        ("classifier-threshold", number(o.threshold)),
        ("classifier-async-mode", 0),
        ("# re-classify tracked faces every N frames: an expression changes over a track", None),
        ("secondary-reinfer-interval", o.reinfer_interval),
        ("input-object-min-width", o.min_face),
        ("input-object-min-height", o.min_face),
    ]
    header = (
        f"nvinfer config of the edge-fer expression classifier ({info.file_name}, sha256 "
        f"{info.sha256[:16]}), written by `edge-fer deploy deepstream`.\n"
        f"Classes ({len(info.classes)}): {', '.join(info.classes)}; input tensor {info.input_name!r} "
        f"{c}x{h}x{w} gray, mean {info.spec.mean}, std {info.spec.std}.\n"
        + ("INT8 from the Q/DQ model: TensorRT reads the scales from the graph.\n" if qdq else "")
    )
    return _ini([("property", items)], header)


def primary_config(o: DeepStreamOptions) -> str:
    header = (
        "The face detector (primary, gie-unique-id 1): YOUR CHOICE, not part of edge-fer.\n"
        f"Replace every {PLACEHOLDER} and the keys below with the nvinfer config your detector\n"
        "ships with, e.g. NVIDIA's FaceDetect (TAO, NGC: nvidia/tao/facenet; its DeepStream\n"
        "config is configs/nvinfer/facial_tao/config_infer_primary_facenet.txt in\n"
        "NVIDIA-AI-IOT/deepstream_tao_apps), or a PeopleNet model (its 'face' class id then\n"
        "goes into operate-on-class-ids of the secondary). Keep gie-unique-id=1 and\n"
        "process-mode=1; faces must be class id "
        f"{o.face_class_id} (operate-on-class-ids of the secondary)."
    )
    items: list[tuple[str, Any]] = [
        ("gpu-id", o.gpu_id),
        ("onnx-file", f"{PLACEHOLDER}.onnx"),
        ("labelfile-path", f"{PLACEHOLDER}_labels.txt"),
        ("batch-size", 1),
        ("network-mode", 2),
        ("network-type", 0),
        ("process-mode", 1),
        ("gie-unique-id", PRIMARY_ID),
        ("num-detected-classes", 1),
        ("interval", 0),
        ("model-color-format", 0),
        ("net-scale-factor", "0.00392156862745098"),
        ("cluster-mode", 2),
    ]
    attrs: list[tuple[str, Any]] = [("pre-cluster-threshold", "0.4"), ("nms-iou-threshold", "0.4")]
    return _ini([("property", items), ("class-attrs-all", attrs)], header)


def _source_file(source: str) -> str | None:
    """The local file a source names (a path or a file:// URI), else None: a folder replaced
    with --force must not take the user's clip with it."""
    s = str(source).strip()
    if s.startswith("file://"):
        from urllib.parse import unquote, urlparse

        u = urlparse(s)
        s = unquote(u.path) if u.netloc in ("", "localhost") else ""
    elif "://" in s:
        return None
    return s if s and os.path.exists(s) else None


def parse_source(source: str) -> dict[str, Any]:
    """What a source names, for both the deepstream-app [source0] group and the pyds app:
    {"kind": csi|v4l2|rtsp|uri, ...}. csi://N, /dev/videoN, v4l2:///dev/videoN, v4l2://N or
    N; rtsp://...; anything else is a file path or URI (file:///, http://). A relative path
    must name a file here (it becomes its absolute URI)."""
    s = str(source).strip()
    if not s:
        raise UserError("is empty", param="source")
    if s.startswith("csi://"):
        rest = s[len("csi://") :]
        if not rest.isdigit():
            raise UserError(
                f"{s!r}: expected csi://N with N the sensor id, e.g. csi://0", param="source"
            )
        return {"kind": "csi", "sensor_id": int(rest)}
    m = re.fullmatch(r"(?:v4l2://)?(?:/dev/video)?(\d+)", s)
    if m:
        return {"kind": "v4l2", "node": int(m.group(1))}
    if s.startswith(("rtsp://", "rtsps://")):
        return {"kind": "rtsp", "uri": s}
    if "://" in s:
        _check_file_uri(s)
        return {"kind": "uri", "uri": s}
    p = Path(s)
    if not (p.is_absolute() or p.exists()):
        # the kit runs on the device, from any folder: a relative path has nothing to be
        # relative to there ('file://' + it would name a host: file://clips/x.mp4)
        raise UserError(
            f"{s!r} is a relative path to no file here: give the clip's absolute path "
            "on the device (/home/me/clip.mp4) or a file:/// URI",
            param="source",
        )
    return {"kind": "uri", "uri": p.absolute().as_uri()}


def _check_file_uri(uri: str) -> None:
    """A file:// URI with a host (file://clips/x.mp4, a relative path written as a URI):
    GStreamer refuses it; the path must be absolute (file:///...)."""
    from urllib.parse import urlparse

    host = urlparse(uri).netloc if uri.startswith("file://") else ""
    if host not in ("", "localhost"):
        raise UserError(
            f"{uri!r} names host {host!r}: a file URI takes an absolute path, "
            "file:///home/me/clip.mp4",
            param="source",
        )


def _source_group(src: dict[str, Any], o: DeepStreamOptions) -> list[tuple[str, Any]]:
    cam = [
        ("camera-width", o.width),
        ("camera-height", o.height),
        ("camera-fps-n", o.fps),
        ("camera-fps-d", 1),
    ]
    items: list[tuple[str, Any]] = [("enable", 1)]
    items.append(("# type: 1=CameraV4L2 2=URI 3=MultiURI 4=RTSP 5=CSI", None))
    if src["kind"] == "csi":
        items += [("type", 5), ("camera-csi-sensor-id", src["sensor_id"]), *cam]
    elif src["kind"] == "v4l2":
        items += [
            # deepstream-app asks a V4L2 camera for raw video (video/x-raw) only, while the
            # probe decodes MJPEG: pick a raw mode (v4l2-ctl --list-formats-ext; USB cameras
            # often give 720p30 as MJPEG only) with --width/--height/--fps
            ("# deepstream-app takes raw modes only: see v4l2-ctl --list-formats-ext", None),
            ("type", 1),
            ("camera-v4l2-dev-node", src["node"]),
            *cam,
        ]
    elif src["kind"] == "rtsp":
        items += [("type", 4), ("uri", src["uri"]), ("latency", 200), ("num-sources", 1)]
    else:
        items += [("type", 3), ("uri", src["uri"]), ("num-sources", 1)]
    items.append(("gpu-id", o.gpu_id))
    return items


def app_config(info: ModelInfo, o: DeepStreamOptions) -> str:
    src = parse_source(o.source)
    live = 0 if src["kind"] == "uri" and src["uri"].startswith("file:") else 1
    sink: list[tuple[str, Any]] = [("enable", 1)]
    sink.append(("# type: 1=FakeSink 2=EglSink (display) 3=File 4=RTSP", None))
    sink += [("type", 2 if o.sink == "display" else 1), ("sync", 0), ("gpu-id", o.gpu_id)]

    def gie(uid: int, batch: int, config: str, *more: tuple[str, Any]) -> list[tuple[str, Any]]:
        """An nvinfer group (primary or secondary GIE): the keys both have, in their order."""
        head = [("enable", 1), ("gpu-id", o.gpu_id), ("gie-unique-id", uid)]
        return [*head, *more, ("batch-size", batch), ("config-file", config)]

    on_faces = [("operate-on-gie-id", PRIMARY_ID), ("operate-on-class-ids", o.face_class_id)]
    groups: list[tuple[str, list[tuple[str, Any]]]] = [
        ("application", [("enable-perf-measurement", 1), ("perf-measurement-interval-sec", 5)]),
        ("tiled-display", [("enable", 0)]),
        ("source0", _source_group(src, o)),
        (
            "streammux",
            [
                ("gpu-id", o.gpu_id),
                ("live-source", live),
                ("batch-size", 1),
                ("batched-push-timeout", 40000),
                ("width", o.width),
                ("height", o.height),
                ("enable-padding", 0),
            ],
        ),
        ("primary-gie", gie(PRIMARY_ID, 1, PRIMARY)),
        (
            "tracker",
            [
                ("enable", 1),
                ("tracker-width", 640),
                ("tracker-height", 384),
                ("ll-lib-file", TRACKER_LIB),
                ("ll-config-file", TRACKER_CONFIG),
                ("gpu-id", o.gpu_id),
                ("display-tracking-id", 1),
            ],
        ),
        ("secondary-gie0", gie(SECONDARY_ID, o.batch_size, SECONDARY, *on_faces)),
        (
            "osd",
            [
                ("enable", 1),
                ("gpu-id", o.gpu_id),
                ("border-width", 2),
                ("text-size", 14),
                ("text-color", "1;1;1;1"),
                ("text-bg-color", "0.3;0.3;0.3;1"),
                ("font", "Serif"),
                ("show-clock", 0),
            ],
        ),
        ("sink0", sink),
    ]
    header = (
        f"deepstream-app config for the edge-fer expression classifier ({info.file_name}),\n"
        "written by `edge-fer deploy deepstream`: deepstream-app -c " + APP + "\n"
        f"The face detector in {PRIMARY} is a placeholder: fill it in first.\n"
        "deepstream-app classifies the detector's boxes as they are (no crop margin); "
        f"{PROBE} adds it."
    )
    return _ini(groups, header)


def labels_line(classes: tuple[str, ...]) -> str:
    """nvinfer's classifier label file: every class of one output layer on ONE line, ';'."""
    for c in classes:
        if ";" in c or "\n" in c:
            raise UserError(f"class name {c!r} cannot go into an nvinfer label file (';')")
    return ";".join(classes) + "\n"


def generate(
    out: str | os.PathLike[str],
    model: str | os.PathLike[str] | None = None,
    options: DeepStreamOptions | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the DeepStream kit into `out` (all or nothing); returns what was written."""
    from edge_fer.deploy.templates import deepstream_readme, probe_script

    o = options or DeepStreamOptions()
    info = read_model(model)
    check_one_line(info.file_name, "model", "rename the file")  # it is nvinfer's onnx-file
    _check(info, o)
    check_one_line(str(o.source).strip(), "source", "name it without one")  # deepstream-app's uri
    parse_source(o.source)
    cache = _calib_cache(info, o)
    model_file = info.file_name
    inputs = [("model", info.path), ("calibration cache", o.calib_cache),
              ("source", _source_file(o.source))]  # fmt: skip
    with staged_folder(out, force, inputs) as w:
        w.copy(model_file, info.path)
        if cache is not None:
            w.bytes(CACHE, cache[0])
        w.text(LABELS, labels_line(info.classes))
        w.text(SECONDARY, secondary_config(info, o, model_file, CACHE if cache else None))
        w.text(PRIMARY, primary_config(o))
        w.text(APP, app_config(info, o))
        w.text(PROBE, probe_script(info, o, parse_source(o.source)), executable=True)
        w.text("README.md", deepstream_readme(info, o, model_file, cache[1] if cache else None))
        files = sorted(w.files)
    return {
        "out": str(out),
        "files": files,
        "precision": o.precision,
        "trt_version": cache[1] if cache else None,
        "model": str(info.path),
    }
