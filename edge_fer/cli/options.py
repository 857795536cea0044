"""Argument groups: each set of command-line options declared once, with one help text.

A group (in the spirit of Polygraphy's argument groups) does two things: `add_to(parser)` adds
its options to a command's parser, and `parse(args)` / `run_fields(args)` turn the parsed
values into the library's options object (`DetectorOptions`, `TrackerOptions`, the fields of
`RunOptions`). Every command that takes detector, tracker, source, model or output options
uses these groups, so a flag means the same and reads the same everywhere; where a command's
default differs (`detect --memory` 1, `run --memory` 5) the group takes it as a parameter and
the help shows it.

    groups = [SourceArgs(), OutputArgs(), ModelArgs(), DetectorArgs(), TrackerArgs()]
    for g in groups:
        g.add_to(parser)
    ...
    opts = run_options(args, source, groups)   # a RunOptions
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

from edge_fer.cli.common import parse_angles, parse_size, positive_thread_count, thread_count
from edge_fer.errors import UserError

BACKENDS = ("onnxruntime", "tensorrt")


def input_path(text: str) -> str:
    """An input's name as argparse type: an empty one became Path(""), the working folder (eval
    --data '' scored whatever images lay there)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a path")
    return text


class ArgGroup:
    """Options added to a parser once (`add_to`) and read back as library options."""

    title: str | None = None

    def add_to(self, parser: argparse.ArgumentParser):
        """Add the options; returns their argument group (a command may add its own to it)."""
        g = parser.add_argument_group(self.title) if self.title else parser
        self._add(g)
        return g

    def _add(self, g) -> None:
        raise NotImplementedError

    def run_fields(self, args: argparse.Namespace) -> dict[str, Any]:
        """The `RunOptions` fields this group decides."""
        return {}


def run_options(args: argparse.Namespace, source: str, groups: Sequence[ArgGroup]):
    """A `RunOptions` for `source` from the groups a command declared (the rest: defaults)."""
    from edge_fer.runtime.runner import RunOptions

    fields: dict[str, Any] = {}
    for g in groups:
        fields.update(g.run_fields(args))
    return RunOptions(source=source, **fields)


# ---- detector -------------------------------------------------------------------------------

# (dest, flags, add_argument keywords); "%(memory)s" and "%(scale)s" are filled per command
_DETECTOR: list[tuple[str, str, dict[str, Any]]] = [
    ("cascade", "--cascade", {
        "metavar": "FILE", "type": input_path,
        "help": "pico face cascade (default: the bundled face_default.pico, and "
        "face_lowres.pico for frames whose shorter side is under 240 px)"}),
    ("min_size", "--min-size", {
        "type": parse_size, "default": None, "metavar": "PX|FRACTION",
        "help": "smallest face: pixels (48) or a fraction of the frame's shorter side (0.1, 10%%) "
        "(default 24 px; 0.1 of the shorter side on frames under 240 px, where that is smaller; "
        "never below the smallest face the cascade learned: its min_face setting)"}),
    ("max_size", "--max-size", {
        "type": parse_size, "default": 1.0, "metavar": "PX|FRACTION",
        "help": "largest face, same units (default 1.0: the whole shorter side)"}),
    ("scale_factor", "--scale-factor", {
        "type": float, "default": None, "metavar": "F",
        "help": "window growth per scale (default: the cascade's scale_factor setting for one "
        "image, memory_scale_factor for frames pooled over --memory, else 1.1%(scale)s)"}),
    ("stride_factor", "--stride-factor", {
        "type": float, "default": 0.1, "metavar": "F",
        "help": "window step as a fraction of its size (default 0.1)"}),
    ("angle", "--angle", {
        "type": parse_angles, "default": 0.0, "metavar": "A[,A...]",
        "help": "scan angle(s) in turns, counter-clockwise (1/32 = 11.25 deg, e.g. 0,1/32,-1/32 "
        "for heads rolled either way: windows of every angle are grouped together; each angle "
        "costs a scan, a rotated one ~2.5x an upright one; see docs/runtime.md) "
        "(default: upright)"}),
    ("grouping", "--grouping", {
        "choices": ("chain", "greedy"), "default": None,
        "help": "how overlapping windows become one face: chain (pico's connected components) or "
        "greedy (around the best window) (default: the cascade's grouping setting, else "
        "chain)"}),
    ("cluster_iou", "--cluster-iou", {
        "type": float, "default": None, "metavar": "IOU",
        "help": "overlap above which windows are grouped (default: the cascade's cluster_iou "
        "setting, else 0.3)"}),
    ("threshold", "--threshold", {
        "type": float, "default": None, "metavar": "Q",
        "help": "minimum score of a face (on videos: its score pooled over the detector's "
        "memory); higher = fewer false positives (default: the cascade's recommended threshold "
        "from its .json settings, else 5.0)"}),
    ("memory", "--memory", {
        "type": int, "default": None, "metavar": "N",
        "help": "videos and streams: pool the detections of the last N frames before grouping "
        "them; --threshold applies to the pooled score (default %(memory)s)"}),
    ("upscale_to", "--upscale-to", {
        "type": int, "default": None, "metavar": "PX",
        "help": "detect on an upscaled copy of frames whose shorter side is below PX (0: never; "
        "default: the cascade's upscale_to setting, else 240)"}),
    ("upscale_interpolation", "--upscale-interpolation", {
        "choices": ("auto", "nearest", "linear", "cubic"), "default": "auto",
        "help": "how --upscale-to enlarges a frame (default auto: the cascade's "
        "upscale_interpolation setting, else linear)"}),
    ("verifier", "--verifier", {
        "default": None, "metavar": "ONNX|none",
        "help": "face verifier behind the cascade: a small CNN that drops detections that are "
        "not faces and moves boxes onto the face; none: off (default: the cascade's verifier "
        "setting: face_verify.onnx for both bundled cascades)"}),
    ("verifier_min_prob", "--verifier-min-prob", {
        "type": float, "default": None, "metavar": "P",
        "help": "drop detections the verifier gives a face probability under P (default: the "
        "cascade's verifier_min_prob setting, else 0.5)"}),
]  # fmt: skip
DETECTOR_DESTS = tuple(d for d, _, _ in _DETECTOR)
_UPSCALE = ("upscale_to", "upscale_interpolation")


class DetectorArgs(ArgGroup):
    """The face detector: cascade, sizes, angles, grouping, threshold, memory, verifier.

    memory: this command's default --memory; None: the library decides (5 frames, 1 for
    photos: `edge_fer.detect.config.resolve`). upscale: the command upscales small frames for
    detection (--upscale-to, --upscale-interpolation). only: the dests this command takes
    (default: all that apply).
    """

    title = "detector"

    def __init__(self, memory: int | None = None, upscale: bool = True,
                 only: Sequence[str] | None = None, title: str | None = None) -> None:  # fmt: skip
        self.memory = memory
        self.upscale = upscale
        wanted = DETECTOR_DESTS if only is None else tuple(only)
        unknown = set(wanted) - set(DETECTOR_DESTS)
        if unknown:
            raise ValueError(f"unknown detector options: {sorted(unknown)}")
        self.dests = [d for d in DETECTOR_DESTS if d in wanted and (upscale or d not in _UPSCALE)]
        if title:
            self.title = title

    def _add(self, g) -> None:
        scale = "; 1.05 on frames upscaled for detection, see --upscale-to" if self.upscale else ""
        # None: config.MEMORY (not imported here: it would load the detector for --help)
        memory = str(self.memory) if self.memory is not None else (
            "5; 1 for photos, which then get the cascade's single-image threshold")  # fmt: skip
        for dest, flag, kw in _DETECTOR:
            if dest not in self.dests:
                continue
            kw = dict(kw)
            kw["help"] = kw["help"].replace("%(memory)s", memory).replace(
                "%(scale)s", scale)  # fmt: skip
            if dest == "memory":
                kw["default"] = self.memory
            g.add_argument(flag, **kw)

    def parse(self, args: argparse.Namespace):
        """A `DetectorOptions` of the values given (the options this command lacks: defaults)."""
        from edge_fer.detect.config import DetectorOptions

        return DetectorOptions(**{d: getattr(args, d) for d in self.dests if d != "cascade"})

    def run_fields(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"cascade": args.cascade, "detector": self.parse(args)}


class FaceFinderArgs(DetectorArgs):
    """The detector options of calibration's face finding (`calibrate --source`, `export --int8
    --source`): cascade, sizes and threshold, read into an `edge_fer.quantize.DetectOptions`."""

    def __init__(self) -> None:
        super().__init__(only=("cascade", "min_size", "max_size", "threshold"),
                         title="face detection (--source)")  # fmt: skip

    def detect_options(self, args: argparse.Namespace, **extra: Any):
        from edge_fer.quantize import DetectOptions

        d = self.parse(args)
        return DetectOptions(min_size=d.min_size, max_size=d.max_size, threshold=d.threshold,
                             **extra)  # fmt: skip


# ---- tracker and smoothing ------------------------------------------------------------------


class TrackerArgs(ArgGroup):
    """Tracks from detections, and the per-track moving average of the expressions."""

    title = "tracker and smoothing"

    def _add(self, g) -> None:
        # fmt: off
        g.add_argument("--iou", type=float, default=0.2,
                       help="IoU to continue a track (default 0.2)")
        g.add_argument("--min-hits", type=int, default=2, metavar="N",
                       help="consecutive detections before a track is born (default 2; faces on a "
                       "scene's first frame are born at once)")
        g.add_argument("--max-misses", type=int, default=15, metavar="N",
                       help="frames without a detection before a track dies (default 15)")
        g.add_argument("--min-track-score", dest="min_score", type=float, default=None, metavar="S",
                       help="report a track only while the moving average of its detection "
                       "scores is at least S (default: the cascade's track_min_score setting "
                       "when no --verifier runs, else no such gate)")
        g.add_argument("--hold", type=int, default=45, metavar="N",
                       help="frames without a detection before an established track (seen on "
                       "10 or more frames: a face) dies (default 45)")
        g.add_argument("--follow", type=int, default=40, metavar="N",
                       help="when an established face is no longer detected (a turned head, a "
                       "look down), follow it by appearance and report it as held (\"held\": "
                       "true, its label kept) for at most N frames after its last detection; "
                       "0: off (default 40)")
        g.add_argument("--follow-seconds", type=float, default=2.0, metavar="S",
                       help="... and at most S seconds (default 2)")
        g.add_argument("--follow-match", type=float, default=0.6, metavar="R",
                       help="... while its appearance matches with a normalised correlation of "
                       "at least R (default 0.6)")
        g.add_argument("--smoothing", type=float, default=0.3, metavar="ALPHA",
                       help="weight of the newest frame in the per-track moving average "
                       "(1 = none; default 0.3)")
        g.add_argument("--classify-every", type=int, default=1, metavar="N",
                       help="classify each face on one frame in N, faces taking turns; between, "
                       "its smoothed label carries over (ALPHA stays the weight of a frame). N "
                       "times less classifier work per face, for slower CPUs or many faces; "
                       "a new face is classified on its first frame (default 1: every frame)")
        # default None: RunOptions.scene_cut (runtime/scenecut.py's SCENE_CUT_THRESHOLD)
        g.add_argument("--scene-cut", type=float, default=None, metavar="T",
                       help="end every track at a hard scene cut, so a face after it gets a new "
                       "id and no label carries over: T is the difference between consecutive "
                       "frames above which they are two scenes (two unrelated pictures score "
                       "about 1; lower finds more cuts); 0: off (default 0.45)")
        # fmt: on

    def parse(self, args: argparse.Namespace):
        from edge_fer.runtime.tracker import TrackerOptions

        return TrackerOptions(iou=args.iou, min_hits=args.min_hits, max_misses=args.max_misses,
                              hold=args.hold, min_score=args.min_score,
                              follow=args.follow, follow_seconds=args.follow_seconds,
                              follow_match=args.follow_match)  # fmt: skip

    def run_fields(self, args: argparse.Namespace) -> dict[str, Any]:
        out = {"tracker": self.parse(args), "smoothing": args.smoothing,
               "classify_every": args.classify_every}  # fmt: skip
        if args.scene_cut is not None:
            out["scene_cut"] = args.scene_cut
        return out


# ---- source ---------------------------------------------------------------------------------


def _source_option(name: str):
    """An argparse type for one source option, range-checked by the sources' own rule."""

    def parse(text: str):
        from edge_fer.runtime.sources import check_option

        try:
            value = check_option(name, text)
        except UserError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
        return text if name == "flip" else value  # a flip keeps its name (rotate-180)

    parse.__name__ = name  # argparse names the type in some messages
    return parse


_SOURCE_FLAGS = {"width": "--input-width", "height": "--input-height", "fps": "--input-rate",
                 "flip": "--input-flip"}  # fmt: skip
# what each kind of source is, in the line saying an --input-* flag does not apply to it
_SOURCE_KINDS = {"file": "a video file (it plays at its own size and rate)",
                 "network": "a network stream (the sender sets size and rate)",
                 "gstreamer": "a GStreamer pipeline (set it in the pipeline's caps)",
                 "images": "images (each is read as it is: its own size, not flipped)",
                 "camera": "a camera"}  # fmt: skip


class SourceArgs(ArgGroup):
    """How the source is opened and read: capture size and rate, images as a sequence,
    reconnecting, and where to stop."""

    title = "source"

    def _add(self, g) -> None:
        # fmt: off
        g.add_argument("--input-width", type=_source_option("width"), metavar="W",
                       help="camera / CSI capture width")
        g.add_argument("--input-height", type=_source_option("height"), metavar="H",
                       help="camera / CSI capture height")
        g.add_argument("--input-rate", type=_source_option("fps"), metavar="FPS",
                       help="camera / CSI frame rate; the nominal rate of an image sequence")
        g.add_argument("--input-flip", type=_source_option("flip"), metavar="FLIP",
                       help="CSI flip method (e.g. rotate-180)")
        g.add_argument("--sequence", action="store_true",
                       help="images are consecutive frames of one scene (track faces across "
                       "them); by default each image is a separate photo")
        g.add_argument("--reconnect-timeout", type=float, default=30.0, metavar="S",
                       help="live sources: keep reconnecting a lost stream for S seconds "
                       "(default 30)")
        g.add_argument("--max-frames", type=int, metavar="N",
                       help="stop after N frames (0: no limit; bench: in each run)")
        # fmt: on

    def ignored(self, args: argparse.Namespace, source: str) -> list[str]:
        """One line for each --input-* flag given that SOURCE does not read (a video file's
        size and rate are its own): said, not silently dropped."""
        from edge_fer.runtime.sources import parse_source

        fields = self.run_fields(args)["source_options"]
        try:
            spec = parse_source(source, **fields)
        except UserError:
            return []  # the run says what is wrong with it
        kind = _SOURCE_KINDS.get(spec.kind, spec.kind)
        lines = [f"{_SOURCE_FLAGS[k]} does not apply to {kind}; ignored"
                 for k in spec.ignored_options() if k in fields]  # fmt: skip
        if getattr(args, "sequence", False) and spec.kind != "images":  # frames are a sequence
            lines.append(f"--sequence applies to images (a folder, glob or photo), not to "
                         f"{kind.split(' (')[0]}; ignored")  # fmt: skip
        return lines

    def run_fields(self, args: argparse.Namespace) -> dict[str, Any]:
        given = (("width", args.input_width), ("height", args.input_height),
                 ("fps", args.input_rate), ("flip", args.input_flip))  # fmt: skip
        return {
            "source_options": {k: v for k, v in given if v is not None},
            "stills": False if args.sequence else None,
            "reconnect_timeout": args.reconnect_timeout,
            "max_frames": args.max_frames,
        }


# ---- model and backend ----------------------------------------------------------------------


class ModelArgs(ArgGroup):
    """The classifier: model, precision, backend, threads (and TensorRT's options).

    backend: "one" (--backend NAME), "many" (--backend repeatable, for bench: a list in
    args.backend, not a RunOptions field) or None (no --backend). trt: add TensorRT's
    --trt-precision and --calib-cache.
    """

    title = "model and backend"

    def __init__(self, backend: str | None = "one", trt: bool = True) -> None:
        if backend not in ("one", "many", None):
            raise ValueError(f"backend must be 'one', 'many' or None, got {backend!r}")
        self.backend, self.trt = backend, trt

    def add_to(self, parser: argparse.ArgumentParser):
        g = super().add_to(parser)
        if self.trt:
            from edge_fer.backends.tensorrt_backend import add_trt_args

            add_trt_args(parser)
        return g

    def _add(self, g) -> None:
        # fmt: off
        g.add_argument("--model", type=input_path, metavar="M", help="classifier .onnx (default: the bundled model)")
        g.add_argument("--precision", default="auto", choices=("auto", "fp32", "int8"),
                       help="which bundled model, when --model is not given: auto = INT8 on ONNX "
                       "Runtime (same accuracy, ~3x faster on CPUs with VNNI), FP32 on x86 CPUs "
                       "without VNNI (INT8 no faster there) and on TensorRT (default: auto)")
        if self.backend == "one":
            g.add_argument("--backend", default="onnxruntime", choices=BACKENDS,
                           help="inference engine (default: onnxruntime)")
        elif self.backend == "many":
            g.add_argument("--backend", action="append", choices=BACKENDS,
                           help="only this backend (repeatable; default: every available one)")
        g.add_argument("--threads", type=thread_count, default=1, metavar="N",
                       help="classifier threads (0: one per physical core; default 1)")
        g.add_argument("--align", action="store_true",
                       help="classify eye-aligned crops (bundled eye model; docs/align.md) even "
                       "if the model was not trained on them (a model trained with --align "
                       "gets them anyway)")
        g.add_argument("--detect-threads", type=positive_thread_count, metavar="N",
                       help="detector threads (default: CPU cores - 1, leaving one core to decode "
                       "and classify; both cores of a 2-core machine)")
        # fmt: on

    def run_fields(self, args: argparse.Namespace) -> dict[str, Any]:
        out = {"model": args.model, "precision": args.precision, "threads": args.threads,
               "detect_threads": args.detect_threads, "align": args.align}  # fmt: skip
        if self.backend == "one":
            out["backend"] = args.backend
        if self.trt:
            out.update(trt_precision=args.trt_precision, calib_cache=args.calib_cache)
        return out


# ---- outputs --------------------------------------------------------------------------------


def stdout_path(path: str | None) -> str | None:
    # "-" is standard output, written through as /dev/stdout is (never a file named "-")
    return "/dev/stdout" if path == "-" else path


def output_path(text: str) -> str:
    """An output's name as argparse type: an empty one was taken as not given (nothing
    written, no word)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a file name (or leave the flag out)")
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if m and m.group(1).lower() == "file":  # as sources take them (jetson-utils' file://)
        from urllib.parse import unquote, urlparse

        u = urlparse(text)
        if u.netloc not in ("", "localhost") or not u.path:
            raise argparse.ArgumentTypeError(
                f"{text!r}: a file:// output is file:///ABSOLUTE/PATH (or a plain path)"
            )
        return unquote(u.path)
    if m:  # before: "folder display: does not exist"
        raise argparse.ArgumentTypeError(
            f"{text!r}: outputs are files or folders, not {m.group(1)}:// URIs; --show opens a "
            "window and --preview-port serves the annotated frames to a browser"
        )
    return text


class OutputArgs(ArgGroup):
    """Where the results go: annotated video, events, summary, a window, an MJPEG preview."""

    title = "outputs"

    def _add(self, g) -> None:
        # fmt: off
        g.add_argument("--out", metavar="VIDEO|IMAGE|DIR/", type=output_path,
                       help="annotated video (.mp4, .avi, .mkv, .mov or .m4v); or annotated images: IMAGE (.jpg, "
                       ".png) for one photo, a folder (DIR/) for a folder of photos, each at its "
                       "own size, or a video's frames")
        g.add_argument("--events", metavar="FILE.jsonl", type=output_path,
                       help="JSON Lines, one line per frame with faces (-: standard output; "
                       "the text summary then goes to standard error)")
        g.add_argument("--summary", metavar="FILE.json", type=output_path,
                       help="write the summary as JSON (-: standard output)")
        g.add_argument("--summary-every", type=float, metavar="S",
                       help="with --summary: rewrite the summary file every S seconds while the "
                       "run goes on (\"running\": true), so a camera's summary is never older "
                       "than S (default: written at the end only)")
        g.add_argument("--show", action="store_true",
                       help="show the annotated video in a window")
        g.add_argument("--preview-port", type=int, metavar="P",
                       help="serve an MJPEG preview at http://HOST:P/ (0: any free port)")
        g.add_argument("--preview-host", metavar="HOST",
                       help="address the preview binds to (default 127.0.0.1; 0.0.0.0 for all)")
        # fmt: on

    def run_fields(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"out": args.out, "events": stdout_path(args.events),
                "summary": stdout_path(args.summary), "summary_every": args.summary_every,
                "show": args.show,
                "preview_port": args.preview_port, "preview_host": args.preview_host}  # fmt: skip
