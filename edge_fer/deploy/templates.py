"""The scripts and READMEs the generators write.

The two scripts are real modules of this package (`probe_template.py`, `client_template.py`),
written out with their constants block rewritten for the model and the options: they stay
valid, linted Python here, and tests import them to check their preprocessing against edge-fer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edge_fer.deploy.common import ModelInfo, number, nvinfer_normalisation

HERE = Path(__file__).resolve().parent


def fill(template: str, values: dict[str, Any]) -> str:
    """`template` with each `NAME = ...` line of its constants block set to repr(value)."""
    text = template
    for name, value in values.items():
        pattern = re.compile(rf"^{name} = .*$", re.MULTILINE)
        if len(pattern.findall(text)) != 1:  # pragma: no cover - the templates are ours
            raise RuntimeError(f"template has no single constant {name}")
        line = f"{name} = {value!r}"
        text = pattern.sub(lambda _m: line, text)  # noqa: B023 - used at once
    return text


def _read(name: str) -> str:
    return (HERE / name).read_text(encoding="utf-8")


def probe_script(info: ModelInfo, o: Any, src: dict[str, Any]) -> str:
    from edge_fer.deploy import deepstream as ds

    source = dict(src, text=o.source)
    return "#!/usr/bin/env python3\n" + fill(
        _read("probe_template.py"),
        {
            "MODEL": info.file_name,
            "MARGIN": float(info.spec.crop_margin),
            "CLASSES": tuple(info.classes),
            "PRIMARY_ID": ds.PRIMARY_ID,
            "SECONDARY_ID": ds.SECONDARY_ID,
            "FACE_CLASS_ID": o.face_class_id,
            "MIN_FACE": o.min_face,
            "WIDTH": o.width,
            "HEIGHT": o.height,
            "FPS": o.fps,
            "SOURCE": source,
            "SINK": o.sink,
            "PRIMARY_CONFIG_FILE": ds.PRIMARY,
            "SECONDARY_CONFIG_FILE": ds.SECONDARY,
        },
    )


def client_script(info: ModelInfo, model_name: str, max_batch: int) -> str:
    s = info.spec
    return "#!/usr/bin/env python3\n" + fill(
        _read("client_template.py"),
        {
            "MODEL_NAME": model_name,
            "INPUT_NAME": info.input_name,
            "OUTPUT_NAME": info.output_name,
            "INPUT_SIZE": s.input_size,
            "CHANNELS": s.channels,
            "CLAHE": bool(s.clahe),
            "MEAN": float(s.mean),
            "STD": float(s.std),
            "CROP_MARGIN": float(s.crop_margin),
            "CLASSES": tuple(info.classes),
            "MAX_BATCH": int(max_batch),
        },
    )


def deepstream_readme(info: ModelInfo, o: Any, model_file: str, trt_version: str | None) -> str:
    from edge_fer.deploy import deepstream as ds

    k, offset = nvinfer_normalisation(info.spec)
    s = info.spec
    engine = ds.engine_name(model_file, o.batch_size, o.gpu_id, o.precision)
    qdq = info.quantized == "tensorrt"
    if o.precision == "int8" and qdq:
        int8 = "INT8 from the Q/DQ model: TensorRT reads the scales from the graph. " + (
            f"`{ds.CACHE}` holds only a header (TensorRT {trt_version}): nvinfer enables "
            "INT8 only when it has a calibration file, and builds FP16 without one."
            if trt_version
            else "No calibration file (TensorRT 11 has no calibrators)."
        )
    elif o.precision == "int8" and trt_version:
        int8 = (
            f"INT8 from the calibration cache `{ds.CACHE}`, its header written for TensorRT "
            f"{trt_version} (TensorRT skips a cache whose header names another version; "
            "for another JetPack run `edge-fer deploy deepstream` again with `--target` or "
            "`--trt-version`)."
        )
    elif o.precision == "int8":
        int8 = "INT8 from the Q/DQ model: TensorRT reads the scales from the graph, no cache."
    else:
        int8 = f"{o.precision.upper()} (network-mode={ds.NETWORK_MODE[o.precision]})."
    target = f" for `{o.target}`" if o.target else ""
    return f"""# edge-fer expression classifier in DeepStream

Written by `edge-fer deploy deepstream`{target} from `{model_file}` (sha256
`{info.sha256[:16]}...`): {len(info.classes)} classes ({", ".join(info.classes)}),
{s.input_size}x{s.input_size} grayscale input. Precision: {int8}

| file | what |
|---|---|
| `{ds.SECONDARY}` | nvinfer secondary classifier: `process-mode=2`, `network-type=1`, on the faces of the primary (`operate-on-gie-id={ds.PRIMARY_ID}`, `operate-on-class-ids={o.face_class_id}`) |
| `{ds.PRIMARY}` | the face detector (primary): **a placeholder for your detector** |
| `{ds.APP}` | deepstream-app: source, streammux, primary, tracker, secondary, OSD, sink |
| `{ds.LABELS}` | the class names on one line, separated by `;` (nvinfer's classifier format) |
| `{ds.PROBE}` | a pyds app: the same pipeline plus the crop margin, JSON events on stdout |
| `{model_file}` | the model; nvinfer builds `{engine}` from it on the first start |

## 1. Choose the face detector

edge-fer's own detector (PICO cascades on the CPU) is not a TensorRT model. DeepStream needs a
face detector as its primary nvinfer: fill in `{ds.PRIMARY}` (every `{ds.PLACEHOLDER}` and
the keys marked there), for example with NVIDIA's FaceDetect (TAO, NGC `nvidia/tao/facenet`,
one class `face`; its nvinfer config is `configs/nvinfer/facial_tao/config_infer_primary_facenet.txt`
in NVIDIA-AI-IOT/deepstream_tao_apps) or a PeopleNet model with a face class (set its class id
with `--face-class-id`, here {o.face_class_id}). Keep `gie-unique-id={ds.PRIMARY_ID}`.

## 2. Run

```sh
deepstream-app -c {ds.APP}                 # reference app (no crop margin, see below)
python3 {ds.PROBE}                         # pyds app: crop margin + JSON events
python3 {ds.PROBE} --source file:///home/me/clip.mp4 --sink none --events events.jsonl
```

Each JSON line: `{{"t", "source", "frame", "pts_ns", "faces": [{{"track_id", "box", "score",
"expression", "class_id", "prob"}}]}}` (box = the detector's box, x, y, w, h in streammux
pixels, {o.width}x{o.height}). The first start builds the TensorRT engine (minutes on a
Jetson) and saves it as `{engine}`; later starts load it.

## Preprocessing: the same numbers as edge-fer

edge-fer feeds the model `(x / 255 - {s.mean}) / {s.std}` of the gray pixels; nvinfer computes
`net-scale-factor * (x - offsets)`, so `net-scale-factor = 1 / (255 * {s.std}) = {number(k)}`
and `offsets = 255 * {s.mean} = {number(offset)}`, with `model-color-format=2` (GRAY).
nvinfer's scaler resizes with its own filter (edge-fer: area when shrinking, bilinear when
enlarging), a small difference in the pixels the model sees.

## The crop margin

edge-fer classifies the detector's box grown to a square by {s.crop_margin} of its side on every
side (`edge_fer/runtime/crops.py`; outside the frame the border is repeated). nvinfer crops
exactly `rect_params`, the detector's box. Two ways to reproduce the margin in DeepStream:

- nvdspreprocess in front of the secondary (`process-on-all-objects`; nvinfer's element property
  `input-tensor-meta=1`, in its config file `input-tensor-from-meta=1`): needs a custom library to grow the boxes, as its own ROI/object crops are exact too;
- **box expansion (chosen)**: `{ds.PROBE}` puts a probe on the classifier's sink pad that grows
  each face box to edge-fer's square (`expand_box`, the same arithmetic as
  `edge_fer.runtime.crops.square_box`) and one on its source pad that puts the detector's box
  back, so the tracker, the OSD and the events keep the detector's boxes. No C code, and the
  classifier sees the crop it was trained on.

Differences that remain: at the frame's edge the square is clamped to the frame (DeepStream
cannot pad), so a face cut by the edge is squeezed a little instead of padded; and
`deepstream-app` (no Python probes) classifies the detector's boxes without the margin.

## Tuning

- `classifier-threshold={number(o.threshold)}`: nvinfer attaches a label only when the top
  probability is above it (0: always, as `edge-fer run` does).
- `secondary-reinfer-interval={o.reinfer_interval}`: with a tracker, nvinfer classifies an
  object once and reuses the result; an expression changes, so it is classified again once
  more than {o.reinfer_interval} frames have passed (every {o.reinfer_interval + 1} frames; sooner
  when its box grows by more than 20%).
- `input-object-min-width/height={o.min_face}`: smaller faces (the detector's box) are not
  classified; `{ds.PROBE}` grows only the faces at least this big, so the same faces are skipped.
- `batch-size={o.batch_size}`: faces per secondary batch; the engine name carries it.
"""


def triton_readme(
    info: ModelInfo,
    name: str,
    dirs: dict[str, str],
    max_batch: int,
    build_cmd: str | None,
    client: str,
    instances: str = "one GPU instance",
) -> str:
    s = info.spec
    rows = [f"| `{d}/` | `{plat}` |" for d, plat in dirs.items()]
    plan = ""
    if build_cmd:
        trt_dir = next(d for d, p in dirs.items() if p == "tensorrt_plan")
        plan = f"""
## The TensorRT plan: build it on the target

An engine runs only on the TensorRT version and GPU that built it, so `{trt_dir}/1/model.plan`
is not written here. Build it on the machine that runs Triton (TensorRT of the same version as
Triton's), with edge-fer installed there:

```sh
{build_cmd}
```

The engine's batch profile must reach `max_batch_size` ({max_batch}). Until the plan exists,
Triton cannot load `{trt_dir}` and (with its default `--exit-on-error=true`) stops: build
first, or start it with `--model-control-mode=explicit --load-model={name}_onnx`.
"""
    return f"""# edge-fer expression classifier in Triton

Written by `edge-fer deploy triton` from `{info.file_name}` (sha256 `{info.sha256[:16]}...`):
{len(info.classes)} classes ({", ".join(info.classes)}), input `{info.input_name}`
FP32 (N, {s.channels}, {s.input_size}, {s.input_size}), output `{info.output_name}` FP32
(N, {len(info.classes)}) softmax probabilities.

| model | platform |
|---|---|
{chr(10).join(rows)}

Each has `config.pbtxt` (`max_batch_size: {max_batch}`, dynamic batching, {instances})
and `labels.txt` (one class per line, the `label_filename` of the output, used by Triton's
classification extension).

```sh
tritonserver --model-repository=$PWD
python3 {client} face.png                  # top classes via the classification extension
python3 {client} --raw face.png            # every probability
```
{plan}
## Preprocessing

The server takes prepared tensors: `{client}` prepares faces exactly as edge-fer does:
grayscale{", CLAHE (clip 2.0, 4x4 tiles)" if s.clahe else ""}, resize to {s.input_size}x{s.input_size}
(area when shrinking, bilinear when enlarging), then `(x / 255 - {s.mean}) / {s.std}`; with
`--box x,y,w,h` it first crops the face from a whole frame like `edge-fer run` (the box's square
grown by {s.crop_margin} of its side on every side, border repeated outside the frame).
"""
