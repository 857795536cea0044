"""Assemble a run from options: detector (edge_fer.detect.factory), classifier, source,
sinks -> Pipeline.

`run_video(...)` is what `edge-fer run` calls; tests and `edge-fer bench` call it too.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_fer import fileio
from edge_fer.detect.config import DetectorOptions
from edge_fer.detect.factory import DetectorPicker
from edge_fer.errors import UserError, check_choice
from edge_fer.limits import check_count, check_threads
from edge_fer.runtime.scenecut import SCENE_CUT_THRESHOLD
from edge_fer.runtime.tracker import TrackerOptions

TRT_BACKENDS = ("tensorrt", "trt")


def default_detect_threads(cores: int | None = None) -> int:
    """Detector threads when not given: cores - 1, leaving one for decoding, classifying and
    the sinks, but both of two. On 2 quiet cores, 2 threads were faster than 1 on every clip of
    bench_small_faces.py (1080p p99 34 against 50 ms: docs/runtime.md)."""
    cores = cores or os.cpu_count() or 1
    return cores if cores <= 2 else cores - 1


PREVIEW_HOST = "127.0.0.1"  # this machine only; --preview-host 0.0.0.0 serves every address


@dataclass
class RunOptions:
    source: str = ""
    out: str | None = None  # annotated video
    force: bool = False  # replace an existing --out image, a video, events or summary not ours
    events: str | None = None  # JSON Lines
    summary: str | None = None  # summary JSON
    summary_every: float | None = None  # seconds between rewrites of it; None: at the end only
    max_frames: int | None = None
    model: str | None = None  # None: the bundled default model
    precision: str = "auto"  # of the bundled model: auto (INT8 on ONNX Runtime), fp32, int8
    cascade: str | None = None  # None: the bundled default cascade
    backend: str = "onnxruntime"
    trt_precision: str | None = None  # TensorRT engine: fp32, fp16, int8; None: fp16 on Jetson
    calib_cache: str | None = None  # TensorRT INT8 from a calibration cache
    threads: int = 1  # classifier threads
    align: bool = False  # eye-aligned crops even when the model's metadata does not ask
    detect_threads: int | None = None  # numba threads for detection; None: default_detect_threads()
    show: bool = False
    preview_port: int | None = None
    preview_host: str | None = None  # None: PREVIEW_HOST (set: only with preview_port)
    smoothing: float = 0.3
    classify_every: int = 1  # classify each face on one frame in N (label carried between)
    reconnect_timeout: float = 30.0
    queue_size: int | None = None
    max_batch_frames: int = 8
    pace: float | None = None  # feed a file at this frame rate, as a camera would (bench)
    stills: bool | None = None  # images are unrelated photos; None: yes for image sources
    scene_cut: float = SCENE_CUT_THRESHOLD  # a hard cut ends every track (scenecut.py); 0: off
    source_options: dict = field(default_factory=dict)  # width, height, fps, flip
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    tracker: TrackerOptions = field(default_factory=TrackerOptions)


def load_classifier(
    model: str | os.PathLike | None,
    backend: str = "onnxruntime",
    threads: int | None = 1,
    tta: str = "none",
    precision: str = "auto",
    trt_precision: str | None = None,
    calib_cache: str | None = None,
):
    """The runtime's classifier. No test-time augmentation by default: on video the per-track
    smoothing averages many frames of the same face, at no extra cost. Without a model, the
    bundled one in `precision` (edge_fer.classify.bundled_model_path)."""
    from edge_fer.classify import Classifier, bundled_model_path

    if model is None:
        model = bundled_model_path(backend, precision)

    _check_trt_options(backend, trt_precision, calib_cache)
    trt: dict = {}
    if backend in TRT_BACKENDS:  # engine precision and INT8 calibration (TensorRT only)
        trt = {"precision": trt_precision, "calib_cache": calib_cache}
    return Classifier.load(model, backend=backend, threads=threads, tta=tta, **trt)


def _check_trt_options(backend: str, trt_precision, calib_cache) -> None:
    """UserError when a TensorRT-only option is given for another backend, or an engine
    precision TensorRT does not know (named here: the backend's own check says `precision`,
    which is the bundled model's choice among a run's options)."""
    if backend not in TRT_BACKENDS and (trt_precision is not None or calib_cache is not None):
        raise UserError(
            "needs the TensorRT backend",
            param="trt_precision" if trt_precision is not None else "calib_cache",
        )
    if trt_precision is not None:
        from edge_fer.backends.tensorrt_backend import TRT_PRECISIONS

        check_choice(trt_precision, TRT_PRECISIONS, "trt_precision")


def classifier_for(opts: RunOptions):
    """The classifier a run's options ask for (model, backend, threads, precisions)."""
    trt: dict[str, Any] = {"trt_precision": opts.trt_precision, "calib_cache": opts.calib_cache}
    clf = load_classifier(opts.model, opts.backend, opts.threads, precision=opts.precision, **trt)
    if opts.align:  # the pipeline crops as the spec says (runtime/crops.face_cropper)
        clf.spec = replace(clf.spec, align=True)
    return clf


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


def _annotated_output(opts: RunOptions, spec, new: Sequence[Path] = ()) -> tuple[str | None, dict]:
    """What --out is (image_out.out_kind) and, for a folder of annotated photos, where each
    goes; UserError for an image name given to more than one frame. `new`: folders the caller
    makes before the run, absolute (an --out folder that is one, or in one, is checked once it
    is there)."""
    from edge_fer.runtime import image_out
    from edge_fer.runtime.sources import list_images

    if opts.out is None:  # (out_kind: None, as for an empty name)
        return None, {}
    kind = image_out.out_kind(opts.out)
    if kind == "image" and fileio.is_stream(opts.out):  # cv2.imwrite on a pipe waited for ever
        raise UserError(f"--out {opts.out}: is a device or pipe; an annotated image needs a file")
    if kind == "folder":
        out = Path(opts.out).absolute()
        if out not in new and out.parent not in new:
            image_out.check_folder(opts.out)
        photos = list_images(spec) if spec.kind == "images" else []
        return kind, image_out.planned_names(photos, opts.out)
    if kind == "image":
        image_out.check_colour_name(opts.out, "--out")
    if kind == "image" and (spec.kind != "images" or len(list_images(spec)) != 1):
        what = "photos" if spec.kind == "images" else "frames"
        folder = os.path.join(str(Path(opts.out).with_suffix("")), "")  # photos/p0.jpg: photos/p0/
        raise UserError(
            f"--out {opts.out}: one image holds one photo's faces; for the {what} of "
            f"{opts.source} give a folder (--out {folder}) or a video (.mp4)"
        )
    return kind, {}


def run_inputs(opts: RunOptions, spec) -> list[tuple[str, str]]:
    """The files a run reads, as (name, path): the source when it is a file (or the images of a
    folder or glob), the model, the cascade and its settings file, the verifier. Outputs are
    checked against these before anything is opened; a default that cannot be resolved is left
    to the loader to report. `spec` None: no source yet (a clip the caller makes)."""
    from edge_fer.detect.config import CascadeSettings
    from edge_fer.runtime.sources import list_images

    ins: list[tuple[str, str]] = []
    target = spec.target if spec is not None else None
    if spec is None:
        pass
    elif spec.kind == "file" or (spec.kind == "camera" and isinstance(target, str)):
        ins.append(("SOURCE", str(target)))
    elif spec.kind == "images":
        if os.path.isfile(str(target)):
            ins.append(("SOURCE", str(target)))
        else:  # every photo: an output of any name may be a link to one of them
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

        cascades = [
            ("the bundled cascade", Path(p))
            for p in (default_cascade_path(), lowres_cascade_path())
            if p is not None
        ]
    verifier = opts.detector.verifier
    for name, c in cascades:
        ins += [(name, str(c)), (f"{name}'s settings", str(c.with_suffix(".json")))]
        if verifier is None:
            try:
                v = CascadeSettings.for_cascade(c).verifier
            except UserError:
                v = None
            if v is not None:
                ins.append((f"{name}'s verifier", str(v)))
    if verifier is not None and str(verifier).lower() != "none":
        ins.append(("--verifier", str(verifier)))
    return ins


def check_run_options(opts: RunOptions) -> None:
    """UserError (naming the parameter) for a value no run can use; nothing is opened. Called
    by `run_video`, and by `run --demo` before it makes its clip."""
    from edge_fer.detect.config import DetectorOptions
    from edge_fer.runtime.tracker import TrackerOptions

    for name, kind in (("detector", DetectorOptions), ("tracker", TrackerOptions)):
        if not isinstance(getattr(opts, name), kind):  # None was an AttributeError further in
            got = type(getattr(opts, name)).__name__
            raise UserError(f"must be a {kind.__name__}, got {got}", param=name)
    for name in ("pace", "scene_cut", "summary_every", "reconnect_timeout"):
        v = getattr(opts, name)  # a string was a bare TypeError in the range checks below
        if (v is not None or name == "reconnect_timeout") and (
            isinstance(v, bool) or not isinstance(v, numbers.Real)
        ):
            raise UserError(f"must be a number, got {v!r}", param=name)
    if opts.max_frames is not None:
        check_count(opts.max_frames, "max_frames", lowest=0)
    if opts.model is not None and opts.precision != RunOptions.precision:
        # it picks among the bundled models: a model given runs as it is (before: silently)
        raise UserError(
            f"{opts.precision} chooses which bundled model runs; --model {opts.model} runs as it "
            "is: give one of them",
            param="precision",
        )
    if opts.pace is not None and not 0.01 <= opts.pace <= 1000:  # NaN too; 1e-9 waited for ever
        raise UserError(f"must be in [0.01, 1000] frames a second, got {opts.pace}", param="pace")
    # bounded queues are what keeps a run's memory flat: -1 (or NaN) made them unbounded
    if opts.queue_size is not None:
        check_count(opts.queue_size, "queue_size")
    check_count(opts.max_batch_frames, "max_batch_frames")
    t = opts.tracker
    check_count(t.min_hits, "min_hits")  # integers: 1.5 hits was accepted
    check_count(t.max_misses, "max_misses", lowest=0)
    check_count(t.hold, "hold", lowest=0)
    for name, v in (("iou", t.iou), ("smoothing", opts.smoothing), ("min_score", t.min_score)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
            raise UserError(f"must be a number, got {v!r}", param=name)  # (was a TypeError)
    for name, ok, rule in (
        ("min_hits", t.min_hits >= 1, ">= 1"),
        ("max_misses", t.max_misses >= 0, ">= 0"),
        ("hold", t.hold >= 0, ">= 0"),
        ("iou", 0.0 <= t.iou < 1.0, "in [0, 1)"),
        # NaN would report nothing, and the summary (strict JSON) could not record it
        ("min_score", t.min_score is None or math.isfinite(t.min_score), "a finite number"),
    ):
        if not ok:
            raise UserError(f"must be {rule}, got {getattr(t, name)}", param=name)
    if not 0.0 < opts.smoothing <= 1.0:
        raise UserError(f"must be in (0, 1], got {opts.smoothing}", param="smoothing")
    check_count(opts.classify_every, "classify_every")
    if opts.scene_cut is not None and not 0 <= opts.scene_cut < math.inf:
        raise UserError(
            f"must be >= 0 and finite (0: off), got {opts.scene_cut}", param="scene_cut"
        )
    if not 0 <= opts.reconnect_timeout < math.inf:  # NaN too: it reconnected forever
        raise UserError(
            f"must be >= 0 seconds and finite (0: give up at once), got {opts.reconnect_timeout}",
            param="reconnect_timeout",
        )
    check_threads(opts.threads, zero="one per physical core")
    if opts.detect_threads is not None:
        check_threads(opts.detect_threads, "detect_threads", zero=None)
    if opts.summary_every is not None:
        if not 0 < opts.summary_every < math.inf:
            raise UserError(
                f"must be > 0 seconds and finite, got {opts.summary_every}", param="summary_every"
            )
        if not opts.summary:
            raise UserError("needs a summary file to rewrite (--summary)", param="summary_every")
        if fileio.is_stream(opts.summary):  # a reader would get one summary after another
            what = (  # "-" was given as /dev/stdout (cli.options.stdout_path)
                "--summary is standard output"
                if opts.summary in fileio.STDOUT_NAMES
                else f"--summary {opts.summary} is a device or a pipe"
            )
            raise UserError(
                f"needs a file to rewrite; {what} (the summary is written there once, at the end)",
                param="summary_every",
            )
    if opts.preview_port is not None:
        if not 0 <= check_count(opts.preview_port, "preview_port", lowest=0) <= 65535:
            raise UserError(f"must be in 0..65535, got {opts.preview_port}", param="preview_port")
        if opts.preview_host is not None and not str(opts.preview_host).strip():
            raise UserError(
                "is empty: give the address to listen on (127.0.0.1, the default, "
                "for this machine only)",
                param="preview_host",
            )
    elif opts.preview_host is not None:  # before: ignored without a word (any but the default)
        raise UserError(
            "needs --preview-port: without it no preview is served", param="preview_host"
        )
    _check_trt_options(opts.backend, opts.trt_precision, opts.calib_cache)


def check_outputs(
    opts: RunOptions,
    spec,
    inputs: list[tuple[str, str]] | None = None,
    made: str | os.PathLike | None = None,
) -> tuple[str | None, dict]:
    """UserError (one line) where the run of `opts` on `spec` (sources.parse_source) would
    refuse to write its outputs: --out that the source cannot fill (_annotated_output), an
    output that cannot be written, the --out folder's own files named as another output, an
    output that is an input (`inputs`; default: run_inputs) or another output, an existing --out
    IMAGE, an existing --out VIDEO that no earlier run wrote (sinks.check_video_replaceable),
    or --events / --summary a file that is not an earlier run's, without --force.
    Nothing is opened or written. `made`: a folder the caller makes before the run (run --demo's
    --demo-dir), which may hold outputs. Returns what --out is and, for a folder of photos,
    where each goes (_annotated_output).

    The one place these are decided: `run_video` calls it before anything is loaded, and
    `edge-fer run` before it makes its demo clip, and where a signal stops its start-up before
    `run_video` did, so that the summary of that start-up is never written over a file the run
    would refuse (edge_fer.cli.run_cmd.check_outputs)."""
    from edge_fer.fileio import check_collisions
    from edge_fer.runtime.sinks import check_replaceable, check_video_replaceable, check_writable

    # folders not there yet that are made before the outputs are written into them: the
    # caller's, and a new --out folder, which may hold the others
    new = [Path(made).absolute()] if made is not None and not os.path.exists(made) else []
    out_kind, out_names = _annotated_output(opts, spec, new)
    if out_kind == "folder":
        assert opts.out is not None  # (out_kind: None without --out)
        new.append(Path(opts.out).absolute())
    outputs = [("--out", opts.out), ("--events", opts.events), ("--summary", opts.summary)]
    out_what = "annotated image" if out_kind == "image" else "video"  # (was "video" for both)
    for (_, path), what in zip(outputs, (out_what, "events file", "summary")):
        if path and not (what == "video" and out_kind == "folder"):
            parent = Path(path).parent.absolute()
            check_writable(path, what, next((d for d in new if d == parent), None))
    if out_kind == "folder":  # each annotated photo against every input
        from edge_fer.runtime.image_out import is_frame_name, is_marker

        assert opts.out is not None  # (out_kind: None without --out)

        outputs = outputs[1:] + [("--out", p) for p in out_names.values()]
        for flag, path in outputs[:2]:
            # the folder itself, not yet made: `--out rdir/ --summary rdir` ran every frame,
            # then could not write the summary
            if path and os.path.abspath(path) == os.path.abspath(opts.out):
                raise UserError(
                    f"--out {opts.out} and {flag} {path} are the same path: give each output "
                    "its own"
                )
            if path and is_marker(path, opts.out):
                raise UserError(
                    f"{flag} {path}: is the file in which --out {opts.out} lists what runs "
                    "wrote there; give it another name"
                )
            if path and spec.kind != "images" and is_frame_name(path, opts.out):
                # a video's frames: names known only as they come
                raise UserError(
                    f"{flag} {path}: --out {opts.out} writes the video's frames under "
                    "such names; give it another name"
                )
    check_collisions(outputs, run_inputs(opts, spec) if inputs is None else inputs)
    if out_kind == "image" and not opts.force and os.path.lexists(str(opts.out)):
        # one annotated photo does not replace a picture of the user's unasked
        raise UserError(
            f"--out {opts.out}: exists; pass --force to replace it, or give another name"
        )
    if out_kind == "video":
        # nor a video of theirs: only one an earlier run wrote (until 2026-12-06: any file)
        check_video_replaceable("--out", opts.out, opts.force)
    # after the collisions (an input named as an output is said as such): an earlier run's
    # events or summary is replaced, any other file only with --force (a README given as
    # --events, a user's notes.json as --summary, were replaced without a word)
    check_replaceable("--events", opts.events, opts.force)
    check_replaceable("--summary", opts.summary, opts.force)
    return out_kind, out_names


def run_video(
    opts: RunOptions,
    *,
    detector=None,
    classifier=None,
    warn=None,
    handle_signals: bool = True,
    signals=None,
):
    """Run the whole pipeline on opts.source; returns a RunResult (summary, exit code).

    UserError for anything the user can fix: a source that does not open, an unwritable
    output, an output that is also an input or another output, a missing model or cascade, a
    video file of which no frame decodes, a full disk (raised after every output is closed,
    with the run's summary, which marks that output not written: pipeline.summary_of). A
    start-up failure leaves existing outputs untouched and nothing partial. SIGINT/SIGTERM
    (when `handle_signals`, in the main thread; or under the caller's `signals` guard) stop the
    run at any moment: during start-up the result has `"started": false`, exit code 128 + the
    signal, and only the summary is written.
    """
    from edge_fer.runtime.pipeline import SignalGuard

    # time_to_first_frame_s counts from here: loading the models and compiling the kernels too
    t_start = time.perf_counter()
    if signals is None and handle_signals:
        with SignalGuard() as guard:
            return _run_video(opts, detector, classifier, warn, True, guard, t_start)
    return _run_video(opts, detector, classifier, warn, handle_signals, signals, t_start)


def _run_video(
    opts: RunOptions, detector, classifier, warn, handle_signals: bool, signals, t_start: float
):
    from edge_fer.runtime.image_out import AnnotatedImages
    from edge_fer.runtime.pipeline import (
        Interrupted,
        Pipeline,
        Sinks,
        detect_threads_used,
        interrupt_signal,
    )
    from edge_fer.runtime.preview import MJPEGPreview
    from edge_fer.runtime.sinks import EventsSink, VideoSink, WindowSink
    from edge_fer.runtime.sources import open_source, parse_source
    from edge_fer.runtime.tracker import IoUTracker

    check_run_options(opts)
    # cheap checks first, so a typo fails before anything is loaded or opened
    spec = parse_source(opts.source, **opts.source_options)
    out_kind, out_names = check_outputs(opts, spec)
    if opts.show:
        from edge_fer.runtime.sinks import gui_available

        why = gui_available()
        if why:
            raise UserError(f"--show: {why}")
    own_classifier = classifier is None
    source = None
    sinks = Sinks(summary_path=opts.summary)
    # photos: each on its own, at the cascade's single-image threshold (config.resolve)
    stills = spec.kind == "images" if opts.stills is None else bool(opts.stills)
    # a signal whose exception an import or a callback lost stops the start-up at the next step
    check = signals.check if signals is not None else lambda: None
    try:
        check()
        # the options, cascades and verifier are checked before the source is opened; the
        # detector for its frames is picked once their size is known
        picker = DetectorPicker(
            opts.cascade,
            opts.detector,
            upscaling=True,
            track_min_score=opts.tracker.min_score,
            stills=stills,
        )
        check()
        if classifier is None:
            classifier = classifier_for(opts)
        check()
        source = open_source(spec, warn=warn, reconnect_timeout=opts.reconnect_timeout)
        check()
        first = first_frame(source) if spec.kind == "file" else None
        check()
        _check_frame_size(spec, source, first)
        shape = (source.height or 0, source.width or 0)
        settings, picked = picker.get(shape)
        if detector is None:  # else one the caller built for these options, used as it is
            detector = picked
        upscale = settings.upscale_to
        _warn_if_no_face_fits(opts, spec, shape, settings, warn)
        from edge_fer.detect.scan import first_run_notice

        notice = first_run_notice()
        if notice:  # else 6-10 s of silence on the first run after an install
            print(f"edge-fer run: {notice}", file=sys.stderr, flush=True)
        startup = warm_up(detector, classifier, source.width, source.height, upscale)
        check()
        if out_kind == "video":  # a temporary file until the run ends (VideoSink)
            sinks.video = VideoSink(opts.out, source.fps or 25.0, (source.width, source.height))
        elif out_kind == "folder":
            also = (opts.events, opts.summary)
            sinks.video = AnnotatedImages(folder=opts.out, names=out_names, also=also)
        elif out_kind == "image":
            sinks.video = AnnotatedImages(single=opts.out)
        if opts.events:  # opened when the run starts (EventsSink.start)
            sinks.events = EventsSink(opts.events, warn=warn)
        if opts.preview_port is not None:
            sinks.preview = MJPEGPreview(opts.preview_port, opts.preview_host or PREVIEW_HOST)
            print(f"edge-fer run: preview at {sinks.preview.url}", file=sys.stderr, flush=True)
        if opts.show:
            sinks.window = WindowSink()
        min_score = settings.track_min_score
        # the summary says what ran: numba runs no more threads than its pool holds
        asked = opts.detect_threads or default_detect_threads()
        detect_threads = detect_threads_used(asked)
        info = {
            "model": _model_info(classifier),
            "backend": getattr(getattr(classifier, "backend", None), "name", opts.backend),
            "cascade": str(settings.cascade) if settings.cascade else None,
            "detector": settings.summary(),  # the values used, options and cascade resolved
            "tracker": {**asdict(opts.tracker), "min_score": min_score},
            "verifier": _verifier_info(settings),
            "smoothing": opts.smoothing,
            "classify_every": opts.classify_every,
            # the threshold used; null: off (photos are each a scene of their own)
            "scene_cut": None if stills or not opts.scene_cut else opts.scene_cut,
            "startup_s": round(startup, 3),
            "detect_threads": detect_threads,
            "stills": stills,
        }
        if detect_threads != asked:
            info["detect_threads_requested"] = asked
            if opts.detect_threads:  # given: say so (the default is only a wish)
                from edge_fer.errors import warn as default_warn

                (warn or default_warn)(
                    f"--detect-threads {asked}: numba runs at most {detect_threads} threads "
                    f"here (NUMBA_NUM_THREADS); the detector uses {detect_threads}"
                )
        detector_for = None
        if stills and detector is picked:  # each photo gets the cascade of its own size
            # those that scanned a photo, and the values each used ("detector" and "verifier"
            # above are the first photo's: a small photo gets face_lowres.pico at 0.5)
            cascades: list[str] = []
            detectors: list[dict[str, Any]] = []

            def detector_for(shape):
                r, det = picker.get(shape)
                name = str(r.cascade) if r.cascade else None
                if name and name not in cascades:
                    cascades.append(name)
                    detectors.append(
                        {"cascade": name, "detector": r.summary(), "verifier": _verifier_info(r)}
                    )
                return r, det

            info["cascades"] = cascades  # (the lists detector_for fills)
            info["detectors"] = detectors
        tracker = IoUTracker(
            iou_threshold=opts.tracker.iou,
            min_hits=1 if stills else opts.tracker.min_hits,
            # a scene's first frame is judged as a photo is: faces there are reported at once
            min_hits_first=1,
            max_misses=opts.tracker.max_misses,
            max_misses_established=max(opts.tracker.hold, opts.tracker.max_misses),
            min_score=min_score,
            **opts.tracker.follow_kwargs(),
        )
        pipe = Pipeline(
            source,
            detector,
            classifier,
            sinks,
            tracker=tracker,
            smoothing=opts.smoothing,
            classify_every=opts.classify_every,
            max_frames=opts.max_frames,
            queue_size=opts.queue_size,
            max_batch_frames=opts.max_batch_frames,
            handle_signals=handle_signals,
            pace=opts.pace,
            stills=stills,
            detect_min_side=upscale,
            info=info,
            detect_upscale=settings.upscale_interpolation,
            signals=signals,
            warn=warn,
            detect_threads=detect_threads,
            scene_cut=opts.scene_cut,
            summary_every=opts.summary_every,
            t_start=t_start,
            detector_for=detector_for,
            first_frame=first,
        )
        check()  # the last moment: from here the pipeline takes the signals over
    except BaseException as exc:
        # start-up failed or was interrupted: drop what was opened, touch nothing that exists
        hold = signals.hold() if signals is not None else contextlib.nullcontext()
        with hold:
            _abandon(sinks, source, classifier if own_classifier else None)
            # an extension may have turned the signal's exception into its own (ImportError)
            signum = interrupt_signal(exc, signals) if signals is not None else None
            if signum is None:
                raise
            return _interrupted_at_startup(opts, spec, source, signum)
    try:
        return pipe.run()
    except Interrupted as exc:
        # only raised in the few steps before pipe.run() set the guard's on_signal: the
        # pipeline never started, so this is still start-up (its sinks were not started)
        hold = signals.hold() if signals is not None else contextlib.nullcontext()
        with hold:
            _abandon(sinks, None, None)
            return _interrupted_at_startup(opts, spec, source, exc.signum)
    finally:
        source.close()
        if own_classifier:
            classifier.close()


def _check_frame_size(spec, source, first) -> None:
    """Frames beyond the detector's limits (a 16400x16 video) are a bad input, one line naming
    the source at start-up, as `detect` says it; before, the detector's own check named its
    parameter (`gray is a frame of 16400x16, too large`). Photos are skipped one by one."""
    from edge_fer.imageio import printable
    from edge_fer.limits import frame_too_large

    if spec.kind == "images":
        return
    h, w = first.image.shape[:2] if first is not None else (source.height, source.width)
    why = frame_too_large(int(w or 0), int(h or 0))
    if why:
        raise UserError(f"source {printable(spec.uri)}: frames of {why}")


def _warn_if_no_face_fits(opts: RunOptions, spec, shape, settings, warn) -> None:
    """One warning line when the --min-size / --max-size given leave no face size that fits
    the frames, now that their size is known (`run clip.avi --min-size 100000` on 160x120
    found 0 faces and exited 0 without a word, while --max-size 5 is refused). Sizes in
    pixels apply to the copy a small frame is upscaled to for detection, as the detector
    takes them. Photos: the first one (each is scanned at its own size). The run goes on."""
    from edge_fer.detect.detector import resolve_size
    from edge_fer.limits import MAX_FRAME_PIXELS, MAX_FRAME_SIDE

    o = opts.detector
    given = [f"--min-size {o.min_size:g}"] if o.min_size is not None else []
    if o.max_size != DetectorOptions.max_size:
        given.append(f"--max-size {o.max_size:g}")
    h, w = (int(v or 0) for v in shape)
    if not given or h <= 0 or w <= 0:  # a live source's size may be known only later
        return
    sh, sw = h, w
    if min(h, w) < settings.upscale_to:  # as Pipeline._detect upscales it
        up = min(settings.upscale_to / min(h, w), (MAX_FRAME_SIDE - 1) / max(h, w))
        up = min(up, math.sqrt(MAX_FRAME_PIXELS / (h * w)))
        if up > 1.0:
            sh, sw = round(h * up), round(w * up)
    lo = max(resolve_size(settings.min_size, sh, sw), settings.min_pixels)
    hi = resolve_size(settings.max_size, sh, sw)
    side = min(sh, sw)  # no window larger than the frame's shorter side is scanned
    if lo <= min(hi, side):
        return
    if hi < min(lo, side):  # --max-size below the smallest size
        why = f"a face cannot be at least {lo:g} px and at most {hi:g} px"
    else:
        copy = f" (the {sw}x{sh} copy detection scans)" if (sh, sw) != (h, w) else ""
        why = f"a face of at least {lo:g} px does not fit in a shorter side of {side} px{copy}"
    what = f"the first photo ({w}x{h})" if spec.kind == "images" else f"frames of {w}x{h}"
    from edge_fer.errors import warn as default_warn

    (warn or default_warn)(
        f"{' and '.join(given)}: no face can be found in {what}: {why}; the run goes on"
    )


def first_frame(source):
    """A video file's first frame, read at start-up: a file of which no frame decodes (an
    empty or corrupt video) is a bad input, one line and exit 2 before any output is opened, as
    a folder of no usable image is (`edge-fer detect` says the same of it). The source's
    warnings until then are held: with no frame, this error replaces them."""
    held: list[str] = []
    warn, source.warn = source.warn, held.append
    try:
        frame = source.read()
    finally:
        source.warn = warn
    if frame is None:
        n = source.frame_count
        why = f"its header declares {n} frames; truncated or corrupt" if n else "empty or corrupt"
        raise UserError(f"source {source.spec.target}: no frame could be decoded ({why})")
    for msg in held:  # frames skipped before the first that decoded
        warn(msg)
    return frame


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
    summary = startup_summary(desc, signum, outputs, {"max_frames": opts.max_frames or None})
    if opts.summary:
        write_json_atomic(opts.summary, summary)
    return RunResult(summary, exit_code_for(signum))


def _verifier_info(settings) -> dict | None:
    if settings.verifier is None:
        return None
    return {"path": str(settings.verifier), "min_prob": settings.verifier_min_prob}


def _model_info(classifier) -> dict:
    try:
        d = classifier.info()
    except Exception:  # noqa: BLE001
        return {"path": str(getattr(classifier, "path", "?"))}
    return {k: d[k] for k in ("path", "arch", "classes", "input") if k in d}


def _run_state(s: dict) -> str:
    """The summary header's word for how the run ended. An output that failed is told apart
    from a source that ended early: "incomplete" after a failed summary or video at the end
    read as if frames were missing, when every one had been processed. A run that --max-frames
    stopped with frames of the source left says so (it said "complete")."""
    if s.get("complete"):
        return "complete"
    if s.get("interrupted"):
        return "interrupted"
    failed = bool(s.get("outputs_failed"))
    if s.get("stopped_at_max_frames"):  # as source_complete, frames of the source left unread
        limit = f"stopped at --max-frames {s.get('max_frames')}"
        if failed or s.get("error"):
            return f"{limit}; {'an output' if failed else 'the run'} failed"
        return limit
    if s.get("source_complete"):
        return "source complete; an output failed" if failed else "source complete; the run failed"
    if failed:
        n = s.get("frames", 0)
        return f"stopped after {n} frame{'' if n == 1 else 's'}: an output failed"
    return "incomplete"


def format_summary(s: dict) -> str:
    """The human-readable end-of-run summary."""
    from edge_fer.imageio import printable  # names one line each, whatever they hold

    lines = []
    src = s.get("source", {})
    state = _run_state(s)
    lines.append(
        f"source   {printable(str(src.get('uri')))}  ({src.get('width')}x{src.get('height')}, "
        f"{src.get('kind')}{', live' if src.get('live') else ''})  [{state}]"
    )
    if s.get("cascade"):  # which detector ran: it differs by frame size (photos: each its own)
        used = s.get("detectors") or [s]

        def named(d: dict) -> str:
            ver = d.get("verifier")
            return f"{Path(d['cascade']).name}" + (
                f" + {Path(ver['path']).name} (min prob {ver['min_prob']:g})" if ver else ""
            )

        lines.append("detector " + "; ".join(named(d) for d in used))
    lines.append(
        f"frames   {s['frames']}  with faces {s['frames_with_faces']}  "
        f"(detections on {s['frames_with_detections']})  faces {s['faces']}  "
        f"tracks {s['track_count']}"
    )
    if (s.get("classify_every") or 1) > 1:
        lines.append(
            f"classify each face on one frame in {s['classify_every']}: "
            f"{s.get('classified_faces', 0)} of {s['faces']} faces classified"
        )
    lat = s["latency_ms"]
    rate = (
        f"{s['fps']:.1f} frames/s over {s.get('fps_seconds', s['seconds']):.2f} s"
        if s.get("fps") is not None
        else f"{s['frames']} frame{'' if s['frames'] == 1 else 's'}: too few for a rate"
    )
    warm = s.get("latency_warm_ms") or {}
    after = f" (after the first second {_ms(warm['p99'])})" if warm.get("n") else ""
    lines.append(f"speed    {rate}   latency p50 {_ms(lat['p50'])} p99 {_ms(lat['p99'])}{after} ms")
    if s.get("time_to_first_frame_s") is not None:
        lines.append(f"start    first frame {s['time_to_first_frame_s']:.2f} s after the start")
    if s.get("scene_cuts"):
        n = s["scene_cuts"]
        lines.append(f"cuts     {n} scene cut{'s' if n > 1 else ''}: every track ended at each")
    stages = "  ".join(
        f"{k} {_ms(v['p50'])}/{_ms(v['p99'])}" for k, v in s["stage_ms"].items() if v["n"]
    )
    if stages:  # none timed when the run stopped on its first frame (an output failed)
        lines.append(f"stage ms (p50/p99)  {stages}")
    if s.get("dropped_frames"):
        lines.append(f"dropped  {s['dropped_frames']} stale frames (live source)")
        hint = _classify_hint(s)
        if hint:
            lines.append(f"         {hint}")
    if s.get("skipped_frames"):
        skipped_files = (s.get("source") or {}).get("skipped_files")
        what = "unusable image files" if skipped_files else "undecodable frames"
        lines.append(f"skipped  {s['skipped_frames']} {what}")
    for g in s.get("gaps", []):
        mark = (
            " (ongoing when the run stopped)"
            if g.get("ongoing")
            else (" (not recovered)" if g.get("end") else "")
        )
        lines.append(f"gap      at {g['start']:.1f} s for {g['seconds']:.1f} s{mark}")
    for t in s.get("tracks", []):
        share = ", ".join(
            f"{k} {100 * v:.0f}%" for k, v in sorted(t["share"].items(), key=lambda kv: -kv[1])[:3]
        )
        lines.append(
            f"track {t['id']:<3} frames {t['first_frame']}-{t['last_frame']} "
            f"({t['seconds']:.1f} s): {t['dominant']}  [{share}]"
        )
    for k, v in s.get("outputs", {}).items():
        lines.append(f"{k:<8} {printable(str(v))}")
    for k, v in (s.get("outputs_failed") or {}).items():  # its error follows the summary
        lines.append(f"{k:<8} {printable(str(v['path']))}  [{v['state'].upper()}]")
    return "\n".join(lines)


def _classify_hint(s: dict) -> str | None:
    """When a live source dropped frames and the classifier was the slowest stage: the option
    that takes most of its work away."""
    st = s.get("stage_ms") or {}
    cls = (st.get("classify") or {}).get("p50")
    det = (st.get("detect") or {}).get("p50")
    if cls is None or det is None or cls <= det or (s.get("classify_every") or 1) > 1:
        return None
    return (
        f"the classifier was the slowest stage ({cls:.1f} ms a frame, p50): --classify-every 2 "
        "or 3 classifies each face on one frame in 2 or 3"
    )


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f}"
