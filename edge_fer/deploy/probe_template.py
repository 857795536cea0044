"""Expression events from DeepStream: face detector -> tracker -> edge-fer expression classifier.

Written by `edge-fer deploy deepstream` (MODEL below names the classifier). Runs on the device,
with DeepStream and its Python bindings (pyds) installed:

    python3 fer_probe.py                                   # the source it was generated for
    python3 fer_probe.py --source file:///home/me/clip.mp4 --events events.jsonl --sink none
    python3 fer_probe.py --source /dev/video0              # USB camera, MJPEG
    python3 fer_probe.py --source rtsp://cam.local/stream --codec h265

The crop margin. edge-fer classifies the detector's box grown to a square, MARGIN of its side
added on every side (edge_fer.runtime.crops.square_box). A probe on the classifier's sink pad
grows every face box that way (clamped to the frame: DeepStream cannot pad past the edge as
edge-fer does), nvinfer crops and classifies that square, and a probe on its source pad puts the
detector's box back, reads the classifier meta (NvDsClassifierMeta -> NvDsLabelInfo) and writes
one JSON line per frame with faces. nvinfer applies input-object-min-width/height to the box it
sees, so a face whose detector box is below MIN_FACE is left as it is (and skipped by nvinfer),
as deepstream-app does without the probe.

With the new nvstreammux (USE_NEW_NVSTREAMMUX=yes) the muxer has no width, height or
batched-push-timeout and does not scale: boxes are clamped to each source's own resolution.

Python 3.8 or later (JetPack 5 and 6); nothing from edge-fer is imported.
"""

import argparse
import json
import os
import platform
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# -- written by `edge-fer deploy deepstream` from the model and the options ------------------
MODEL = "fer_default.onnx"
MARGIN = 0.1
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
PRIMARY_ID = 1
SECONDARY_ID = 2
FACE_CLASS_ID = 0
MIN_FACE = 32
WIDTH = 1280
HEIGHT = 720
FPS = 30
SOURCE = {"kind": "csi", "sensor_id": 0, "text": "csi://0"}
SINK = "display"
PRIMARY_CONFIG_FILE = "config_infer_primary_face.txt"
SECONDARY_CONFIG_FILE = "config_infer_secondary_fer.txt"
DS_ROOT = "/opt/nvidia/deepstream/deepstream"
TRACKER_LIB = f"{DS_ROOT}/lib/libnvds_nvmultiobjecttracker.so"
TRACKER_CONFIG = f"{DS_ROOT}/samples/configs/deepstream-app/config_tracker_IOU.yml"
# --------------------------------------------------------------------------------------------
PRIMARY_CONFIG = os.path.join(HERE, PRIMARY_CONFIG_FILE)
SECONDARY_CONFIG = os.path.join(HERE, SECONDARY_CONFIG_FILE)
UNTRACKED = 0xFFFFFFFFFFFFFFFF


def expand_box(left, top, width, height, margin=MARGIN, frame_w=WIDTH, frame_h=HEIGHT):
    """edge-fer's crop: the box's square grown by `margin` of its side per side (the same
    arithmetic as edge_fer.runtime.crops.square_box), clamped to the frame."""
    side = max(width, height) * (1.0 + 2.0 * margin)
    cx, cy = left + width / 2.0, top + height / 2.0
    s = max(round(side), 1)
    x0, y0 = round(cx - s / 2.0), round(cy - s / 2.0)
    x1, y1 = min(x0 + s, frame_w), min(y0 + s, frame_h)
    x0, y0 = max(x0, 0), max(y0, 0)
    return float(x0), float(y0), float(max(x1 - x0, 1)), float(max(y1 - y0, 1))


def new_streammux():
    """True when DeepStream uses the new nvstreammux (no width/height/batched-push-timeout)."""
    return os.environ.get("USE_NEW_NVSTREAMMUX") == "yes"


def is_jetson():
    """A Jetson (integrated GPU): its device tree names a Tegra SoC. An aarch64 server with a
    discrete GPU (SBSA) has none."""
    if platform.machine() != "aarch64":
        return False
    try:
        with open("/proc/device-tree/compatible", "rb") as fh:
            return b"nvidia,tegra" in fh.read()
    except OSError:
        return False


def parse_source(text):
    """csi://N, /dev/videoN (v4l2://N, N), rtsp://..., or a file path / URI."""
    s = text.strip()
    if s.startswith("csi://") and s[6:].isdigit():
        return {"kind": "csi", "sensor_id": int(s[6:])}
    m = re.fullmatch(r"(?:v4l2://)?(?:/dev/video)?(\d+)", s)
    if m:
        return {"kind": "v4l2", "node": int(m.group(1))}
    if s.startswith(("rtsp://", "rtsps://")):
        return {"kind": "rtsp", "uri": s}
    if "://" in s:
        return {"kind": "uri", "uri": s}
    return {"kind": "uri", "uri": "file://" + os.path.abspath(s)}


def source_description(src, width, height, fps, codec="h264"):
    """The GStreamer source branch, ending in NVMM NV12 for nvstreammux."""
    nvmm = "nvvideoconvert ! video/x-raw(memory:NVMM),format=NV12"
    if src["kind"] == "csi":
        return (
            f"nvarguscamerasrc sensor-id={src['sensor_id']} ! video/x-raw(memory:NVMM),"
            f"width={width},height={height},framerate={fps}/1,format=NV12 ! {nvmm}"
        )
    if src["kind"] == "v4l2":  # USB camera: MJPEG decoded by the hardware JPEG decoder
        # nvv4l2decoder has the `mjpeg` property on Jetson only (a dGPU decodes image/jpeg as is)
        mjpeg = " mjpeg=1" if is_jetson() else ""
        return (
            f"v4l2src device=/dev/video{src['node']} ! image/jpeg,width={width},height={height},"
            f"framerate={fps}/1 ! jpegparse ! nvv4l2decoder{mjpeg} ! {nvmm}"
        )
    if src["kind"] == "rtsp":
        return (
            f'rtspsrc location="{src["uri"]}" latency=200 ! rtp{codec}depay ! {codec}parse ! '
            f"nvv4l2decoder ! {nvmm}"
        )
    return f'uridecodebin uri="{src["uri"]}" ! {nvmm}'


def sink_description(kind):
    if kind == "none":
        return "fakesink sync=false"
    # nv3dsink on Jetson (DeepStream 6.2 and later), the EGL sink on a desktop GPU
    return "nv3dsink sync=false" if platform.machine() == "aarch64" else "nveglglessink sync=false"


def pipeline_description(src, sink, width, height, fps, codec="h264"):
    live = 0 if src["kind"] == "uri" and src["uri"].startswith("file:") else 1
    mux = "nvstreammux name=m batch-size=1"
    if not new_streammux():  # the new muxer has none of these (it neither scales nor times out)
        mux += f" width={width} height={height} live-source={live} batched-push-timeout=40000"
    return (
        f"{mux} ! "
        f'nvinfer name=pgie config-file-path="{PRIMARY_CONFIG}" ! '
        f'nvtracker name=tracker ll-lib-file="{TRACKER_LIB}" ll-config-file="{TRACKER_CONFIG}" '
        "tracker-width=640 tracker-height=384 ! "
        f'nvinfer name=sgie config-file-path="{SECONDARY_CONFIG}" ! '
        f"nvvideoconvert ! nvdsosd name=osd ! {sink_description(sink)}  "
        f"{source_description(src, width, height, fps, codec)} ! m.sink_0"
    )


def glist(lst, cast):
    """Items of a pyds GList, cast to their type."""
    while lst is not None:
        try:
            item = cast(lst.data)
        except StopIteration:
            break
        yield item
        try:
            lst = lst.next
        except StopIteration:
            break


class Probes:
    def __init__(self, Gst, pyds, out, width, height):
        self.Gst, self.pyds, self.out = Gst, pyds, out
        self.width, self.height = width, height
        self.new_mux = new_streammux()
        self.saved = {}  # buffer address -> the detector boxes, in object order

    def _faces(self, frame):
        for obj in glist(frame.obj_meta_list, self.pyds.NvDsObjectMeta.cast):
            if obj.unique_component_id == PRIMARY_ID and obj.class_id == FACE_CLASS_ID:
                yield obj

    def grow(self, pad, info, _data):
        """Classifier sink pad: every face box -> edge-fer's crop square."""
        buf = info.get_buffer()
        if buf is None:
            return self.Gst.PadProbeReturn.OK
        batch = self.pyds.gst_buffer_get_nvds_batch_meta(hash(buf))
        saved = []
        for frame in glist(batch.frame_meta_list, self.pyds.NvDsFrameMeta.cast):
            # the frame as nvinfer crops it: the muxer's resolution, or the source's own with
            # the new nvstreammux (which does not scale)
            if self.new_mux:
                fw = frame.source_frame_width or self.width
                fh = frame.source_frame_height or self.height
            else:
                fw, fh = self.width, self.height
            for obj in self._faces(frame):
                r = obj.rect_params
                saved.append((r.left, r.top, r.width, r.height))
                if r.width < MIN_FACE or r.height < MIN_FACE:
                    continue  # nvinfer skips it by the detector's box, as deepstream-app does
                r.left, r.top, r.width, r.height = expand_box(
                    r.left, r.top, r.width, r.height, MARGIN, fw, fh
                )
        self.saved[hash(buf)] = saved
        return self.Gst.PadProbeReturn.OK

    def emit(self, pad, info, _data):
        """Classifier source pad: the detector's boxes back, one JSON line per frame."""
        buf = info.get_buffer()
        if buf is None:
            return self.Gst.PadProbeReturn.OK
        saved = self.saved.pop(hash(buf), [])
        batch = self.pyds.gst_buffer_get_nvds_batch_meta(hash(buf))
        i = 0
        for frame in glist(batch.frame_meta_list, self.pyds.NvDsFrameMeta.cast):
            faces = []
            for obj in self._faces(frame):
                r = obj.rect_params
                if i < len(saved):
                    r.left, r.top, r.width, r.height = saved[i]
                i += 1
                face: dict = {
                    "track_id": None if obj.object_id == UNTRACKED else int(obj.object_id),
                    "box": [round(v, 1) for v in (r.left, r.top, r.width, r.height)],
                    "score": round(float(obj.confidence), 4),
                    "expression": None,
                    "class_id": None,
                    "prob": None,
                }
                for cm in glist(obj.classifier_meta_list, self.pyds.NvDsClassifierMeta.cast):
                    if cm.unique_component_id != SECONDARY_ID:
                        continue
                    for li in glist(cm.label_info_list, self.pyds.NvDsLabelInfo.cast):
                        cid = int(li.result_class_id)
                        known = 0 <= cid < len(CLASSES)
                        label = li.result_label or (CLASSES[cid] if known else "")
                        face.update(
                            expression=label, class_id=cid, prob=round(float(li.result_prob), 4)
                        )
                faces.append(face)
            if faces:
                event = {
                    "t": round(time.time(), 3),
                    "source": int(frame.pad_index),
                    "frame": int(frame.frame_num),
                    "pts_ns": int(frame.buf_pts),
                    "faces": faces,
                }
                self.out.write(json.dumps(event) + "\n")
                self.out.flush()
        return self.Gst.PadProbeReturn.OK


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--source",
        default=None,
        help=f"csi://N, /dev/videoN, rtsp://..., a file or URI (default: {SOURCE['text']})",
    )
    ap.add_argument("--codec", choices=("h264", "h265"), default="h264", help="RTSP codec")
    ap.add_argument("--sink", choices=("display", "none"), default=SINK)
    ap.add_argument("--events", metavar="FILE", help="append the JSON lines here (default stdout)")
    ap.add_argument("--width", type=int, default=WIDTH)
    ap.add_argument("--height", type=int, default=HEIGHT)
    ap.add_argument("--fps", type=int, default=FPS)
    args = ap.parse_args(argv)

    try:
        import gi  # type: ignore[import-not-found]

        gi.require_version("Gst", "1.0")
        import pyds  # type: ignore[import-not-found]
        from gi.repository import GLib, Gst  # type: ignore[import-not-found]
    except (ImportError, ValueError) as exc:
        sys.stderr.write(
            f"fer_probe: needs DeepStream with its Python bindings (pyds) and PyGObject ({exc})\n"
        )
        return 2

    Gst.init(None)
    src = parse_source(args.source) if args.source else SOURCE
    desc = pipeline_description(src, args.sink, args.width, args.height, args.fps, args.codec)
    try:
        pipeline = Gst.parse_launch(desc)
    except GLib.Error as exc:
        sys.stderr.write(f"fer_probe: cannot build the pipeline: {exc}\n{desc}\n")
        return 2
    out = open(args.events, "a", buffering=1) if args.events else sys.stdout  # noqa: SIM115
    probes = Probes(Gst, pyds, out, args.width, args.height)
    sgie = pipeline.get_by_name("sgie")
    sgie.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probes.grow, 0)
    sgie.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, probes.emit, 0)

    loop = GLib.MainLoop()
    status = {"rc": 0}

    def on_message(_bus, message):
        if message.type == Gst.MessageType.EOS:
            loop.quit()
        elif message.type == Gst.MessageType.ERROR:
            err, dbg = message.parse_error()
            sys.stderr.write(f"fer_probe: {err} ({dbg})\n")
            status["rc"] = 1
            loop.quit()

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    pipeline.set_state(Gst.State.PLAYING)
    try:
        loop.run()
    except KeyboardInterrupt:
        status["rc"] = 130
    finally:
        pipeline.set_state(Gst.State.NULL)
        if out is not sys.stdout:
            out.close()
    return status["rc"]


if __name__ == "__main__":
    sys.exit(main())
