"""Assemble a run from options: cascade + detector, classifier, source, sinks -> Pipeline.

`run_video(...)` is what `edge-fer run` calls; tests and `edge-fer bench` call it too.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge_fer.errors import UserError

NO_CASCADE = (
    "the bundled face cascade is missing from this installation; pass --cascade FILE "
    "(a pico cascade)"
)


SCALE_FACTOR = 1.1
# upscaled low-resolution frames (160x120 cameras) are blurry and cheap to scan: a finer scale
# step finds their faces on many more frames (01-2.avi: 55% -> 96% of frames)
LOWRES_SCALE_FACTOR = 1.05


@dataclass
class DetectorOptions:
    min_size: float | None = None  # pixels, or a fraction of the frame's shorter side when <= 1;
    # None: 0.1 of it, and never below the cascade's `min_face` setting (the smallest face it
    # learned; below that it fires at random: 81% of the false boxes on 01-2.avi were smaller)
    max_size: float = 1.0
    scale_factor: float | None = None  # None: the cascade's setting, else 1.1 (1.05 on frames
    # upscaled for detection)
    stride_factor: float = 0.1
    # turns (1/32 = 11.25 deg), or several: windows from every angle are clustered together
    angle: float | tuple[float, ...] = 0.0
    # how windows become detections: "chain" (pico's) or "greedy"; and the overlap that groups
    # them; None: the cascade's `grouping` / `cluster_iou` settings, else chain and 0.3
    grouping: str | None = None
    cluster_iou: float | None = None
    threshold: float | None = None  # on the score pooled over `memory` frames; None: the
    # cascade's recommendation (edge_fer.detect.default_threshold)
    memory: int = 5
    # frames whose shorter side is smaller are upscaled for detection; None: the cascade's
    # `upscale_to` setting, else 240
    upscale_to: int | None = None
    # auto: the cascade's recommendation (its .json settings), else linear (cascades differ:
    # on 01-2.avi facefinder found more on a smooth enlargement, face_default.pico on blocky pixels)
    upscale_interpolation: str = "auto"
    # a face verifier (ONNX) behind the cascade: None: the cascade's `verifier` setting;
    # "none": off; else a path. verifier_min_prob None: the cascade's `verifier_min_prob`, or 0.5
    verifier: str | None = None
    verifier_min_prob: float | None = None


@dataclass
class TrackerOptions:
    iou: float = 0.2
    min_hits: int = 2
    max_misses: int = 15
    hold: int = 45  # missed frames an established face track survives (hands, a turn away)
    # report a track only while the moving average of its scores is at least this; None: the
    # cascade's `track_min_score` setting, else no such gate
    min_score: float | None = None


@dataclass
class RunOptions:
    source: str = ""
    out: str | None = None  # annotated video
    events: str | None = None  # JSON Lines
    summary: str | None = None  # summary JSON
    max_frames: int | None = None
    model: str | None = None  # None: the bundled default model
    precision: str = "auto"  # of the bundled model: auto (INT8 on ONNX Runtime), fp32, int8
    cascade: str | None = None  # None: the bundled default cascade
    backend: str = "onnxruntime"
    trt_precision: str | None = None  # TensorRT engine: fp32, fp16, int8; None: fp16 on Jetson
    calib_cache: str | None = None  # TensorRT INT8 from a calibration cache
    threads: int = 1  # classifier threads
    detect_threads: int | None = None  # numba threads for detection; None: cores - 1 (>= 1)
    show: bool = False
    preview_port: int | None = None
    preview_host: str = "127.0.0.1"
    smoothing: float = 0.3
    reconnect_timeout: float = 30.0
    queue_size: int | None = None
    max_batch_frames: int = 8
    pace: float | None = None  # feed a file at this frame rate, as a camera would (bench)
    stills: bool | None = None  # images are unrelated photos; None: yes for image sources
    source_options: dict = field(default_factory=dict)  # width, height, fps, flip
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    tracker: TrackerOptions = field(default_factory=TrackerOptions)


def resolve_cascade(path: str | os.PathLike | None) -> Path:
    if path is None:
        from edge_fer.detect import default_cascade_path

        p = default_cascade_path()
        if p is None:
            raise UserError(NO_CASCADE)
        return Path(p)
    p = Path(path)
    if not p.is_file():
        raise UserError(f"cascade {p}: no such file")
    return p


def cascade_setting(cascade_path, key: str, valid, default):
    """The cascade's `key` setting (its .json settings file) when `valid(value)`, else default."""
    from edge_fer.detect import cascade_settings

    v = cascade_settings(cascade_path).get(key)
    return v if v is not None and valid(v) else default


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_detector(cascade: str | os.PathLike | None, opts: DetectorOptions,
                  threads: int | None = None):  # fmt: skip
    from edge_fer.detect import Cascade, Detector, default_threshold
    from edge_fer.detect.cluster import GROUPINGS

    path = resolve_cascade(cascade)
    casc = Cascade.load(path)
    min_pixels = 1.0
    if opts.min_size is None:  # 0.1 of the frame, but no window smaller than the faces it learned
        min_pixels = float(cascade_setting(path, "min_face", lambda v: _number(v) and v >= 1, 1.0))
    thr = opts.threshold
    if thr is None:
        thr = default_threshold(path, pooled=opts.memory > 1)
    det = Detector(
        casc, min_size=0.1 if opts.min_size is None else opts.min_size,
        min_pixels=min_pixels, max_size=opts.max_size,
        scale_factor=opts.scale_factor or cascade_setting(
            path, "scale_factor", lambda v: _number(v) and 1.001 <= v <= 10, SCALE_FACTOR),
        stride_factor=opts.stride_factor, angle=opts.angle, threshold=thr,
        memory=opts.memory, threads=threads,
        grouping=opts.grouping or cascade_setting(
            path, "grouping", lambda v: isinstance(v, str) and v in GROUPINGS, "chain"),
        iou=opts.cluster_iou if opts.cluster_iou is not None else cascade_setting(
            path, "cluster_iou", lambda v: _number(v) and 0 <= v < 1, 0.3),
    )  # fmt: skip
    verifier = load_verifier(opts.verifier, opts.verifier_min_prob, path)
    if verifier is not None:
        from edge_fer.detect.verifier import VerifiedDetector

        return VerifiedDetector(det, verifier), path
    return det, path


def cascade_for_frame(cascade: str | os.PathLike | None, short_side: int) -> Path:
    """The cascade to scan frames with: the one given; else face_lowres.pico for frames whose
    shorter side is under LOWRES_MAX_SIDE (160x120 cameras), when installed; else the default."""
    from edge_fer.detect import LOWRES_MAX_SIDE, lowres_cascade_path

    low = lowres_cascade_path()
    if cascade is None and 0 < short_side < LOWRES_MAX_SIDE and low is not None:
        return Path(low)
    return resolve_cascade(cascade)


class DetectorPicker:
    """Detectors for inputs of mixed sizes (`edge-fer detect`, `calibrate --source`): the one
    for a frame's shape, per `cascade_for_frame`, built on first use and kept."""

    def __init__(self, cascade: str | os.PathLike | None, opts: DetectorOptions,
                 threads: int | None = None) -> None:  # fmt: skip
        from edge_fer.detect import LOWRES_MAX_SIDE

        self.cascade, self.opts, self.threads = cascade, opts, threads
        self.small_side = LOWRES_MAX_SIDE
        self._by_size: dict[bool, tuple[object, str]] = {}  # small frame? -> (detector, name)
        self.used: set[str] = set()  # names of the cascades that scanned a frame
        self._get(False)  # a bad option or cascade fails before any input is read

    def _get(self, small: bool) -> tuple[object, str]:
        if small not in self._by_size:
            path = cascade_for_frame(self.cascade, self.small_side - (1 if small else 0))
            same = [d for d in self._by_size.values() if d[1] == str(path)]
            det = same[0][0] if same else load_detector(path, self.opts, self.threads)[0]
            self._by_size[small] = (det, str(path))
        return self._by_size[small]

    def __call__(self, shape: tuple[int, ...]):
        det, path = self._get(0 < min(shape[:2]) < self.small_side)
        self.used.add(Path(path).name)
        return det

    def reset(self) -> None:
        """Forget every detector's temporal memory (between unrelated inputs)."""
        for det, _ in self._by_size.values():
            det.reset()  # type: ignore[attr-defined]


def load_verifier(choice: str | None, min_prob: float | None, cascade_path):
    """The face verifier to run behind `cascade_path`'s detections, or None: `choice` None takes
    the cascade's `verifier` setting (a file next to the cascade), "none" turns it off."""
    from edge_fer.detect.verifier import Verifier, resolve_verifier_path

    if choice is not None and str(choice).lower() == "none":
        return None
    path: Path | None = Path(choice) if choice is not None else None
    if path is None:
        name = cascade_setting(cascade_path, "verifier", lambda v: isinstance(v, str) and v, None)
        if name is None or cascade_path is None:
            return None
        path = resolve_verifier_path(name, cascade_path)
    if min_prob is None:
        min_prob = float(cascade_setting(cascade_path, "verifier_min_prob",
                                         lambda v: _number(v) and 0 <= v <= 1, 0.5))  # fmt: skip
    elif not 0.0 <= min_prob <= 1.0:
        raise UserError(f"--verifier-min-prob must be in [0, 1], got {min_prob}")
    return Verifier.load(path, min_prob=min_prob)


def upscale_to(choice: int | None, cascade_path) -> int:
    """None -> the cascade's `upscale_to` setting (0: never), else 240."""
    if choice is not None:
        return max(0, int(choice))
    return int(cascade_setting(cascade_path, "upscale_to", lambda v: _number(v) and v >= 0, 240))


def track_min_score(choice: float | None, cascade_path, verified: bool = False) -> float | None:
    """None -> the cascade's `track_min_score` setting, else no gate. The setting gates the
    cascade's own detections: behind a verifier (`verified`) there is none unless asked for, as
    the verifier already turned away the steady background boxes the gate was for."""
    if choice is not None:
        return float(choice)
    if verified:
        return None
    v = cascade_setting(cascade_path, "track_min_score", _number, None)
    return None if v is None else float(v)


def upscale_interpolation(choice: str, cascade_path) -> str:
    """'auto' -> the cascade's `upscale_interpolation` setting, else 'linear'."""
    if choice != "auto":
        return choice
    return cascade_setting(cascade_path, "upscale_interpolation",
                           lambda v: v in ("nearest", "linear", "cubic"), "linear")  # fmt: skip


def load_classifier(model: str | os.PathLike | None, backend: str = "onnxruntime",
                    threads: int | None = 1, tta: str = "none",
                    precision: str = "auto", trt_precision: str | None = None,
                    calib_cache: str | None = None):  # fmt: skip
    """The runtime's classifier. No test-time augmentation by default: on video the per-track
    smoothing averages many frames of the same face, at no extra cost. Without a model, the
    bundled one in `precision` (edge_fer.classify.bundled_model_path)."""
    from edge_fer.classify import Classifier, bundled_model_path

    if model is None:
        model = bundled_model_path(backend, precision)

    trt: dict = {}
    if backend in ("tensorrt", "trt"):  # engine precision and INT8 calibration (TensorRT only)
        trt = {"precision": trt_precision, "calib_cache": calib_cache}
    elif trt_precision is not None or calib_cache is not None:
        raise UserError("--trt-precision and --calib-cache need --backend tensorrt")
    return Classifier.load(model, backend=backend, threads=threads, tta=tta, **trt)


def warm_up(detector, classifier, width: int, height: int, upscale_to: int = 0) -> float:
    """Compile / load the kernels and build the scan plan for this frame size before timing."""
    import numpy as np

    t0 = time.perf_counter()
    if width > 0 and height > 0:
        short = min(width, height)
        if short < upscale_to:
            width, height = (round(v * upscale_to / short) for v in (width, height))
        detector.detect(np.zeros((height, width), np.uint8))
        detector.reset()
    if classifier is not None:
        s = classifier.spec.input_size
        classifier.predict([np.zeros((s, s), np.uint8)] * 2)
    return time.perf_counter() - t0


def run_inputs(opts: RunOptions, spec) -> list[tuple[str, str]]:
    """The files a run reads, as (name, path): the source when it is a file (or, for an output
    named like an image, the images of a folder or glob), the model, the cascade and its
    settings file, the verifier. Outputs are checked against these before anything is opened;
    a default that cannot be resolved is left to the loader to report."""
    from edge_fer.runtime.sources import IMAGE_EXTS, list_images

    ins: list[tuple[str, str]] = []
    target = spec.target
    if spec.kind == "file" or (spec.kind == "camera" and isinstance(target, str)):
        ins.append(("SOURCE", str(target)))
    elif spec.kind == "images":
        if os.path.isfile(str(target)):
            ins.append(("SOURCE", str(target)))
        elif any(o and Path(o).suffix.lower() in IMAGE_EXTS
                 for o in (opts.out, opts.events, opts.summary)):  # fmt: skip
            try:
                ins += [("SOURCE", f) for f in list_images(spec)]
            except UserError:
                pass
    if opts.model:
        ins.append(("--model", str(opts.model)))
    else:
        try:
            from edge_fer.classify import bundled_model_path

            ins.append(("the bundled model", str(bundled_model_path(opts.backend, opts.precision))))
        except UserError:
            pass
    if opts.cascade:
        cascades = [("--cascade", Path(opts.cascade))]
    else:
        from edge_fer.detect import default_cascade_path, lowres_cascade_path

        cascades = [("the bundled cascade", Path(p)) for p in
                    (default_cascade_path(), lowres_cascade_path()) if p is not None]  # fmt: skip
    verifier = opts.detector.verifier
    for name, c in cascades:
        ins += [(name, str(c)), (f"{name}'s settings", str(c.with_suffix(".json")))]
        if verifier is None:
            try:
                v = cascade_setting(c, "verifier", lambda v: isinstance(v, str) and v, None)
            except UserError:
                v = None
            if v:
                ins.append((f"{name}'s verifier", str(c.parent / v)))
    if verifier is not None and str(verifier).lower() != "none":
        ins.append(("--verifier", str(verifier)))
    return ins


def run_video(opts: RunOptions, *, detector=None, classifier=None, warn=None,
              handle_signals: bool = True, signals=None):  # fmt: skip
    """Run the whole pipeline on opts.source; returns a RunResult (summary, exit code).

    UserError for anything the user can fix: a source that does not open, an unwritable
    output, an output that is also an input or another output, a missing model or cascade, a
    full disk (raised after every output is closed). A start-up failure leaves existing outputs
    untouched and nothing partial. SIGINT/SIGTERM (when `handle_signals`, in the main thread; or
    under the caller's `signals` guard) stop the run at any moment: during start-up the result
    has `"started": false`, exit code 128 + the signal, and only the summary is written.
    """
    from edge_fer.runtime.pipeline import SignalGuard

    if signals is None and handle_signals:
        with SignalGuard() as guard:
            return run_video(opts, detector=detector, classifier=classifier, warn=warn,
                             handle_signals=True, signals=guard)  # fmt: skip
    return _run_video(opts, detector, classifier, warn, handle_signals, signals)


def _run_video(opts: RunOptions, detector, classifier, warn, handle_signals: bool, signals):
    from edge_fer.runtime.pipeline import Interrupted, Pipeline, Sinks
    from edge_fer.runtime.preview import MJPEGPreview
    from edge_fer.runtime.sinks import (
        EventsSink,
        VideoSink,
        WindowSink,
        check_collisions,
        check_writable,
    )
    from edge_fer.runtime.sources import open_source, parse_source
    from edge_fer.runtime.tracker import IoUTracker

    if opts.max_frames is not None and opts.max_frames < 0:
        raise UserError(f"--max-frames must be >= 0, got {opts.max_frames}")
    t = opts.tracker
    if t.min_hits < 1 or t.max_misses < 0 or t.hold < 0 or not 0.0 <= t.iou < 1.0:
        raise UserError("tracker: --min-hits must be >= 1, --max-misses and --hold >= 0, "
                        f"--iou in [0, 1); got {t.min_hits}, {t.max_misses}, {t.hold}, {t.iou}")  # fmt: skip
    if not 0.0 < opts.smoothing <= 1.0:
        raise UserError(f"--smoothing must be in (0, 1], got {opts.smoothing}")
    if opts.preview_port is not None:
        if not 0 <= int(opts.preview_port) <= 65535:
            raise UserError(f"--preview-port must be in 0..65535, got {opts.preview_port}")
        if not str(opts.preview_host or "").strip():
            raise UserError("--preview-host is empty: give the address to listen on "
                            "(127.0.0.1, the default, for this machine only)")  # fmt: skip
    if opts.backend not in ("tensorrt", "trt") and (opts.trt_precision or opts.calib_cache):
        raise UserError("--trt-precision and --calib-cache need --backend tensorrt")
    # cheap checks first, so a typo fails before anything is loaded or opened
    spec = parse_source(opts.source, **opts.source_options)
    outputs = [("--out", opts.out), ("--events", opts.events), ("--summary", opts.summary)]
    for (_, path), what in zip(outputs, ("video", "events file", "summary")):
        if path:
            check_writable(path, what)
    check_collisions(outputs, run_inputs(opts, spec))
    if opts.show:
        from edge_fer.runtime.sinks import gui_available

        why = gui_available()
        if why:
            raise UserError(f"--show: {why}")
    cascade_path = None
    own_detector = detector is None
    own_classifier = classifier is None
    source = None
    sinks = Sinks(summary_path=opts.summary)
    try:
        if detector is None:
            detector, cascade_path = load_detector(opts.cascade, opts.detector)
        else:  # a detector built by the caller (bench) from opts.cascade: its settings apply
            try:
                cascade_path = resolve_cascade(opts.cascade)
            except UserError:
                cascade_path = None
        if classifier is None:
            classifier = load_classifier(opts.model, opts.backend, opts.threads,
                                         precision=opts.precision,
                                         trt_precision=opts.trt_precision,
                                         calib_cache=opts.calib_cache)  # fmt: skip
        upscale = upscale_to(opts.detector.upscale_to, cascade_path)
        interp = upscale_interpolation(opts.detector.upscale_interpolation, cascade_path)
        source = open_source(spec, warn=warn, reconnect_timeout=opts.reconnect_timeout)
        short = min(source.width or 0, source.height or 0)
        wanted = cascade_for_frame(opts.cascade, short) if own_detector else cascade_path
        if wanted != cascade_path:
            detector, cascade_path = load_detector(wanted, opts.detector)
            upscale = upscale_to(opts.detector.upscale_to, cascade_path)
            interp = upscale_interpolation(opts.detector.upscale_interpolation, cascade_path)
        if opts.detector.scale_factor is None and 0 < short < upscale:
            getattr(detector, "detector", detector).scale_factor = LOWRES_SCALE_FACTOR
        startup = warm_up(detector, classifier, source.width, source.height, upscale)
        if opts.out:  # a temporary file until the run ends (VideoSink)
            sinks.video = VideoSink(opts.out, source.fps or 25.0, (source.width, source.height))
        if opts.events:  # opened when the run starts (EventsSink.start)
            sinks.events = EventsSink(opts.events, warn=warn)
        if opts.preview_port is not None:
            sinks.preview = MJPEGPreview(opts.preview_port, opts.preview_host)
            print(f"edge-fer run: preview at {sinks.preview.url}", file=sys.stderr, flush=True)
        if opts.show:
            sinks.window = WindowSink()
        min_score = track_min_score(opts.tracker.min_score, cascade_path,
                                    verified=getattr(detector, "verifier", None) is not None)  # fmt: skip
        info = {
            "model": _model_info(classifier),
            "backend": getattr(getattr(classifier, "backend", None), "name", opts.backend),
            "cascade": str(cascade_path) if cascade_path else None,
            # as resolved (None = "the cascade's recommendation" becomes the value used)
            "detector": {**asdict(opts.detector), "upscale_to": upscale,
                         "upscale_interpolation": interp,
                         "threshold": getattr(detector, "threshold", opts.detector.threshold),
                         "grouping": getattr(detector, "grouping", opts.detector.grouping),
                         "cluster_iou": getattr(detector, "iou", opts.detector.cluster_iou),
                         "scale_factor": getattr(detector, "scale_factor",
                                                 opts.detector.scale_factor)},
            "tracker": {**asdict(opts.tracker), "min_score": min_score},
            "verifier": _verifier_info(getattr(detector, "verifier", None)),
            "smoothing": opts.smoothing,
            "startup_s": round(startup, 3),
        }  # fmt: skip
        stills = spec.kind == "images" if opts.stills is None else bool(opts.stills)
        info["stills"] = stills
        tracker = IoUTracker(
            iou_threshold=opts.tracker.iou, min_hits=1 if stills else opts.tracker.min_hits,
            max_misses=opts.tracker.max_misses,
            max_misses_established=max(opts.tracker.hold, opts.tracker.max_misses),
            min_score=min_score,
        )  # fmt: skip
        pipe = Pipeline(
            source, detector, classifier, sinks, tracker=tracker, smoothing=opts.smoothing,
            max_frames=opts.max_frames, queue_size=opts.queue_size,
            max_batch_frames=opts.max_batch_frames, handle_signals=handle_signals,
            pace=opts.pace, stills=stills,
            detect_min_side=upscale, info=info,
            detect_upscale=interp, signals=signals, warn=warn,
            detect_threads=opts.detect_threads or max(1, (os.cpu_count() or 2) - 1),
        )  # fmt: skip
    except BaseException as exc:
        # start-up failed or was interrupted: drop what was opened, touch nothing that exists
        hold = signals.hold() if signals is not None else contextlib.nullcontext()
        with hold:
            _abandon(sinks, source, classifier if own_classifier else None)
            if not isinstance(exc, Interrupted):
                raise
            return _interrupted_at_startup(opts, spec, source, exc.signum)
    try:
        return pipe.run()
    finally:
        source.close()
        if own_classifier:
            classifier.close()


def _abandon(sinks, source, classifier) -> None:
    for s in sinks.all():
        try:
            getattr(s, "abort", s.close)()
        except Exception:  # noqa: BLE001, S110 - the error being raised matters more
            pass
    for thing in (source, classifier):
        if thing is not None:
            try:
                thing.close()
            except Exception:  # noqa: BLE001, S110
                pass


def _interrupted_at_startup(opts: RunOptions, spec, source, signum: int):
    """A signal before the first frame: nothing was written; the summary, when asked for."""
    from edge_fer.runtime.pipeline import RunResult, exit_code_for, startup_summary
    from edge_fer.runtime.sinks import write_json_atomic

    if source is not None:
        desc = source.describe()
    else:
        desc = {"uri": spec.uri, "kind": spec.kind, "live": spec.live, "width": 0, "height": 0}
    outputs = {"summary": str(opts.summary)} if opts.summary else {}
    summary = startup_summary(desc, signum, outputs)
    if opts.summary:
        write_json_atomic(opts.summary, summary)
    return RunResult(summary, exit_code_for(signum))


def _verifier_info(verifier) -> dict | None:
    if verifier is None:
        return None
    return {"path": str(verifier.path), "min_prob": verifier.min_prob}


def _model_info(classifier) -> dict:
    try:
        d = classifier.info()
    except Exception:  # noqa: BLE001
        return {"path": str(getattr(classifier, "path", "?"))}
    return {k: d[k] for k in ("path", "arch", "classes", "input") if k in d}


def format_summary(s: dict) -> str:
    """The human-readable end-of-run summary."""
    lines = []
    src = s.get("source", {})
    state = (
        "complete"
        if s.get("complete")
        else ("interrupted" if s.get("interrupted") else "incomplete")
    )
    lines.append(
        f"source   {src.get('uri')}  ({src.get('width')}x{src.get('height')}, "
        f"{src.get('kind')}{', live' if src.get('live') else ''})  [{state}]"
    )
    if s.get("cascade"):  # which detector ran: it differs by frame size
        ver = s.get("verifier")
        lines.append(f"detector {Path(s['cascade']).name}"
                     + (f" + {Path(ver['path']).name} (min prob {ver['min_prob']:g})" if ver
                        else ""))  # fmt: skip
    lines.append(
        f"frames   {s['frames']}  with faces {s['frames_with_faces']}  "
        f"(detections on {s['frames_with_detections']})  faces {s['faces']}  "
        f"tracks {s['track_count']}"
    )
    lat = s["latency_ms"]
    lines.append(
        f"speed    {s['fps']:.1f} frames/s over {s['seconds']:.2f} s   latency p50 "
        f"{_ms(lat['p50'])} p99 {_ms(lat['p99'])} ms"
    )
    stages = "  ".join(
        f"{k} {_ms(v['p50'])}/{_ms(v['p99'])}" for k, v in s["stage_ms"].items() if v["n"]
    )
    lines.append(f"stage ms (p50/p99)  {stages}")
    if s.get("dropped_frames"):
        lines.append(f"dropped  {s['dropped_frames']} stale frames (live source)")
    if s.get("skipped_frames"):
        skipped_files = (s.get("source") or {}).get("skipped_files")
        what = "unusable image files" if skipped_files else "undecodable frames"
        lines.append(f"skipped  {s['skipped_frames']} {what}")
    for g in s.get("gaps", []):
        mark = " (ongoing when the run stopped)" if g.get("ongoing") else (
            " (not recovered)" if g.get("end") else "")
        lines.append(f"gap      at {g['start']:.1f} s for {g['seconds']:.1f} s{mark}")
    for t in s.get("tracks", []):
        share = ", ".join(f"{k} {100 * v:.0f}%" for k, v in
                          sorted(t["share"].items(), key=lambda kv: -kv[1])[:3])  # fmt: skip
        lines.append(
            f"track {t['id']:<3} frames {t['first_frame']}-{t['last_frame']} "
            f"({t['seconds']:.1f} s): {t['dominant']}  [{share}]"
        )
    for k, v in s.get("outputs", {}).items():
        lines.append(f"{k:<8} {v}")
    return "\n".join(lines)


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f}"
