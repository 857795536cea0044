"""The video pipeline: decode -> detect + track -> classify -> sinks, in threads with bounded queues.

    pipe = Pipeline(source, detector, classifier, sinks=Sinks(video=..., events=...))
    result = pipe.run()          # RunResult(summary: dict, exit_code: int)

Threads: `decode` reads frames and converts them to gray; `detect` runs PICO (with its temporal
memory) and the IoU tracker; `classify` crops every confirmed face, classifies all the faces of
the frames waiting for it in one batch, and smooths the probabilities per track; the calling
(main) thread feeds the sinks. Each stage's time per frame goes into bounded streaming statistics
(`runtime/stats.py`): a run of any length keeps constant memory. The queues between them
hold a few frames (one for a live source, so latency stays low: the live reader drops stale
frames instead); a file is processed losslessly.

Scene cuts (`runtime/scenecut.py`, tested in the decode thread on a thumbnail of the gray frame):
at a cut the detect thread clears the detector's memory and ends every track, so faces after the
cut get new ids and no smoothed label carries over. Photos (`stills`) are each a scene of their
own already.

Stopping: the end of the source, `max_frames`, Ctrl-C / SIGTERM (run from the main thread), a
closed --show window, or an error in any stage. Every path joins the threads and closes every
sink, so the video is finalised and the events file ends on a complete line. `SignalGuard`
covers the whole of a run, start-up included: before the first frame a signal raises
`Interrupted` (the caller drops what it opened, see runner.run_video); while the pipeline runs
it stops the threads; the exit code is 128 + the signal's number (130 SIGINT, 143 SIGTERM).
"""

from __future__ import annotations

import collections
import contextlib
import math
import numbers
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edge_fer import errors
from edge_fer.limits import MAX_FRAME_PIXELS, MAX_FRAME_SIDE, check_count
from edge_fer.runtime.crops import face_cropper
from edge_fer.runtime.scenecut import SCENE_CUT_THRESHOLD, SceneCutDetector
from edge_fer.runtime.smoothing import KEEP_ENDED, TrackSmoother
from edge_fer.runtime.sources import Source
from edge_fer.runtime.stats import StreamingStats
from edge_fer.runtime.tracker import NESTED_OVERLAP, IoUTracker, suppress_nested

if TYPE_CHECKING:  # the sinks' modules are imported when a run has outputs
    from edge_fer.runtime.image_out import AnnotatedImages
    from edge_fer.runtime.preview import MJPEGPreview
    from edge_fer.runtime.sinks import EventsSink, VideoSink, WindowSink

STAGES = ("decode", "detect", "track", "crop", "classify", "sinks")
# a rate needs this many frames (from the first frame's output to the last): with fewer, the
# classify thread's batches (up to 8 frames at once) and the start make it a guess
MIN_RATE_FRAMES = 20
MAX_LISTED_FILES = 10000  # per-file results of an image source kept in the summary
MAX_LISTED = 100  # scene cut frames, source errors and gaps kept in the summary (the latest)
WARM_UP_S = 1.0  # latency_warm_ms leaves out the frames that arrive within this of the first


@dataclass
class _Item:
    index: int
    t: float
    image: np.ndarray
    gray: np.ndarray | None = None
    t_in: float = 0.0  # perf_counter when the frame entered the pipeline (read done)
    ms: dict = field(default_factory=dict)
    detections: int = 0
    tracks: list = field(default_factory=list)  # confirmed tracks matched in this frame
    dead: list = field(default_factory=list)  # ids of tracks that died at this frame
    probs: dict = field(default_factory=dict)  # track index -> the classifier's output
    faces: list = field(default_factory=list)  # output records (made when it is emitted)
    cut: bool = False  # the first frame of a new scene
    path: str | None = None  # the file it came from (image sources)


_END = object()


class _Stop(Exception):
    pass


# ---- signals ---------------------------------------------------------------------------------

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code_for(signum: int | None) -> int:
    """The shell's convention: 128 + the signal's number (130 SIGINT, 143 SIGTERM)."""
    return 128 + int(signum) if signum else 130


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM before the pipeline started (raised by SignalGuard in the main thread).

    A KeyboardInterrupt, so `except Exception` in library code (model loading, compiling) does
    not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


class SignalGuard:
    """SIGINT and SIGTERM for one run, start-up included (a context manager; main thread only,
    elsewhere it does nothing).

    Until `on_signal` is set, the first signal raises `Interrupted` wherever the main thread
    is, so start-up (a model loading, a kernel compiling) stops at once; inside `hold()` it
    waits for the block's end instead (cleanup, a rename). While a pipeline runs, `on_signal`
    is called instead (it stops the threads). Later signals never raise: they are recorded.
    `signum` is the first signal received.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.on_signal: Callable[[int], None] | None = None
        self._held = 0
        self._pending = False
        self._old: dict = {}

    def __enter__(self) -> SignalGuard:  # noqa: PYI034 - no typing.Self on Python 3.8
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                # an ignored signal stays ignored: a shell starts a script's background jobs
                # with SIGINT ignored, and a Ctrl-C meant for the foreground stopped them
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue
                try:
                    self._old[sig] = signal.signal(sig, self._handler)
                except (ValueError, OSError):
                    pass
                # a handler that recorded a signal without acting on it (edge_fer.cli.main's,
                # while the command line was parsed) hands it over: `check()` raises it
                taken = getattr(self._old.get(sig), "signum", None)
                if self.signum is None and isinstance(taken, int):
                    self.signum = taken
        return self

    def __exit__(self, *exc) -> None:
        old, self._old = self._old, {}
        for sig, h in old.items():
            try:
                signal.signal(sig, h)
            except (ValueError, OSError, TypeError):
                pass

    @staticmethod
    def record_only(signum: int) -> None:
        """An `on_signal` for after the run: outputs are complete, nothing more to stop."""

    def _handler(self, signum, frame) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if self.on_signal is not None:
            self.on_signal(signum)
        elif first:
            if self._held:
                self._pending = True
            else:
                raise Interrupted(signum)

    def check(self) -> None:
        """Raise `Interrupted` for a signal received during start-up whose exception was lost:
        raised inside a C extension's init or a callback (an import of numba or onnxruntime),
        it can be swallowed there. Called after each start-up step and before a pipeline
        takes the signals over; nothing while one runs (`on_signal`) or inside `hold()`."""
        if self.signum is not None and self.on_signal is None and not self._held:
            raise Interrupted(self.signum)

    @contextlib.contextmanager
    def hold(self):
        """A block a signal must not cut short; one that arrived in it is raised at its end."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if not self._held and self._pending:
                self._pending = False
                if self.on_signal is None:
                    raise Interrupted(self.signum or signal.SIGINT)


def interrupt_signal(exc: BaseException, guard: SignalGuard | None = None) -> int | None:
    """The signal `exc` stands for, or None when it is a failure of its own: a KeyboardInterrupt
    anywhere in its chain (an extension's init turns ours into an ImportError: onnxruntime's
    "initialization failed" is caused by it), or any exception while `guard` holds a signal of
    its start-up (numba's init prints ours and raises a new ImportError with no cause)."""
    found = errors.signal_in_chain(exc)
    if found is not None:
        return found
    if guard is not None and guard.on_signal is None and guard.signum is not None:
        return int(guard.signum)
    return None


def detect_threads_used(requested: int) -> int:
    """The detector's threads for `requested`: numba runs at most NUMBA_NUM_THREADS (its pool,
    fixed when it starts: the cores, or the variable of that name)."""
    import numba

    # (numba.config sets it through globals(): not in what mypy reads)
    threads = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    return max(1, min(int(requested), int(threads)))


@dataclass
class Sinks:
    """The outputs of a run; every one is optional. Each has write(...) and close()."""

    video: VideoSink | AnnotatedImages | None = None
    events: EventsSink | None = None
    window: WindowSink | None = None
    preview: MJPEGPreview | None = None
    summary_path: str | None = None

    def all(self) -> list:
        return [s for _, s in self.named()]

    def named(
        self,
    ) -> list[tuple[str, VideoSink | AnnotatedImages | EventsSink | WindowSink | MJPEGPreview]]:
        """(name, sink) of each sink there is: the name a failure is recorded under."""
        pairs = (
            ("video", self.video),
            ("events", self.events),
            ("window", self.window),
            ("preview", self.preview),
        )
        return [(k, s) for k, s in pairs if s is not None]

    @property
    def needs_annotation(self) -> bool:
        return any(s is not None for s in (self.video, self.window, self.preview))


@dataclass
class RunResult:
    """exit_code: 0 done; 1 the source ended early (`ended_early`: a truncated file, a stream
    lost) or photos of a folder or glob were skipped and the others processed (the summary's
    `source.skipped_files`); 128 + N a signal. `edge-fer run` and `bench` exit with it."""

    summary: dict
    exit_code: int
    ended_early: bool = False

    def why_exit_1(self) -> str | None:
        """The last line of a command that exits 1 with this result, None for any other exit
        code: the source ended early, or photos were skipped and the others processed, in the
        words detect and classify use (docs/runtime.md, Photos). `edge-fer run` and `bench`
        both print it, so a script reads the same line from either."""
        if self.exit_code != 1:
            return None
        from edge_fer.runtime.sources import skipped_error

        s = self.summary
        skipped = skipped_files(s)
        if self.ended_early or not skipped:
            return "the source ended early: " + "; ".join(s.get("source_errors", [])[-2:])
        files = (s.get("source") or {}).get("files") or skipped
        return skipped_error(skipped, files, "image files")


def skipped_files(summary: dict) -> int:
    """The photos of a folder or glob that a run skipped (unusable), from its summary."""
    return int((summary.get("source") or {}).get("skipped_files") or 0)


def summary_of(exc: BaseException) -> dict | None:
    """The summary of the run that `exc` ended after it started (a sink that failed, a stage
    that raised; outputs closed, the summary file written if it could be), else None: what the
    run measured, for the caller to show before the error (Pipeline.run raises it)."""
    return getattr(exc, "run_summary", None)


def startup_summary(source: dict, signum: int, outputs: dict, info: dict | None = None) -> dict:
    """The summary of a run a signal stopped before its first frame (`"started": false`): the
    same keys as `Pipeline.summary`, nothing processed, no output but this summary written."""
    empty = StreamingStats().summary()
    d = {
        "source": source,
        "frames": 0,
        "frames_with_detections": 0,
        "frames_with_faces": 0,
        "faces": 0,
        "held_faces": 0,
        "detections": 0,
        "track_count": 0,
        "tracks": [],
        "classes": [],
        "seconds": 0.0,
        "fps": None,
        "fps_seconds": 0.0,
        "time_to_first_frame_s": None,
        "scene_cuts": 0,
        "scene_cut_frames": [],
        "tracks_omitted": 0,
        "stage_ms": {k: dict(empty) for k in STAGES},
        "busy_ms": dict(empty),
        "latency_ms": dict(empty),
        "latency_warm_ms": dict(empty),
        "classify_batches": 0,
        "classified_faces": 0,
        "dropped_frames": 0,
        "skipped_frames": 0,
        "gaps": [],
        "gaps_omitted": 0,
        "source_errors": [],
        "source_errors_omitted": 0,
        "complete": False,
        "source_complete": False,
        "max_frames": None,
        "stopped_at_max_frames": False,
        "interrupted": True,
        "signal": signal_name(signum),
        "started": False,
        "nonfinite_dropped": 0,
        "events_dropped": 0,
        "outputs": dict(outputs),
        "outputs_failed": {},
        "running": False,
    }
    if source.get("kind") == "images":  # as Pipeline.summary: per file, none read yet
        d["images"] = []
        d["images_omitted"] = 0
    d.update(info or {})
    return d


UPSCALE_INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
}


class Pipeline:
    def __init__(
        self,
        source: Source,
        detector,
        classifier=None,
        sinks: Sinks | None = None,
        *,
        tracker: IoUTracker | None = None,
        smoothing: float = 0.3,
        max_frames: int | None = None,
        queue_size: int | None = None,
        max_batch_frames: int = 8,
        handle_signals: bool = True,
        detect_min_side: int = 0,
        detect_threads: int | None = None,
        detect_upscale: str = "linear",
        nested_overlap: float = NESTED_OVERLAP,
        pace: float | None = None,
        stills: bool = False,
        signals: SignalGuard | None = None,
        warn=None,
        info: dict | None = None,
        scene_cut: float | None = SCENE_CUT_THRESHOLD,
        summary_every: float | None = None,
        t_start: float | None = None,
        keep_tracks: int = KEEP_ENDED,
        classify_every: int = 1,
        detector_for=None,
        first_frame=None,
    ) -> None:
        """`detector_for`: with `stills`, (settings, detector) for a frame's shape, so each
        photo of a folder gets the cascade, settings and upscaling of its own size (as
        `edge-fer detect` gives it), not the first photo's; `detector` is the first one's.
        `scene_cut`: the threshold of the scene cut test (runtime/scenecut.py); None or 0
        turns it off. `summary_every`: seconds between rewrites of the summary file while the
        run goes on (a live source's summary is then never older than that); None: only at
        the end. `t_start`: `time.perf_counter()` when the run began (before the models were
        loaded), for `time_to_first_frame_s`; None: when `run()` is called. `keep_tracks`: the
        summary lists the statistics of that many ended tracks (the latest) and every live one.
        `classify_every`: classify each face on one frame in that many (a track's first frame
        always; tracks staggered by id, so the work spreads over the frames); in between its
        smoothed label carries over. `smoothing` stays the weight of one frame: an observation
        every N frames weighs 1 - (1 - smoothing)**N, so labels settle in the same time.
        `first_frame`: a Frame the caller already read from `source` (runner.first_frame reads
        a video file's first at start-up), the run's first."""
        self.source = source
        self._primed = first_frame
        self.detector = detector
        self.detector_for = detector_for if stills else None
        self.classifier = classifier
        self.sinks = sinks or Sinks()
        self.tracker = tracker or IoUTracker()
        classes = classifier.classes if classifier is not None else ()
        if int(classify_every) != classify_every or classify_every < 1:
            raise ValueError(f"classify_every must be an integer >= 1, got {classify_every}")
        self.classify_every = int(classify_every)
        # checked as an object: whatever a caller passes (typeshed's float is no numbers.Real,
        # so mypy took the rest of __init__ for unreachable and left it unchecked)
        given: object = smoothing
        if (
            isinstance(given, bool)
            or not isinstance(given, numbers.Real)
            or not (0.0 < smoothing <= 1.0)
        ):  # (NaN too) the smoother's own check named its alpha
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing!r}")
        if queue_size is not None:  # a bounded queue keeps memory flat: -1 made it unbounded
            check_count(queue_size, "queue_size")
        check_count(max_batch_frames, "max_batch_frames")  # -3 became 1 silently
        alpha = 1.0 - (1.0 - smoothing) ** self.classify_every
        self.smoother = TrackSmoother(classes, alpha=alpha, keep_ended=keep_tracks)
        self._due: dict[int, int] = {}  # track id -> the frame from which it is classified again
        if max_frames is not None:  # -5 ran without a bound, 2.5 read 3 frames
            check_count(max_frames, "max_frames", lowest=0)
        self.max_frames: int | None = max_frames or None  # 0: no bound, as run's --max-frames 0
        qs = queue_size or (1 if source.live else 4)
        self.q_det: queue.Queue = queue.Queue(qs)
        self.q_cls: queue.Queue = queue.Queue(qs)
        self.q_out: queue.Queue = queue.Queue(qs)
        self.max_batch_frames = int(max_batch_frames)
        self.detect_min_side = max(0, int(detect_min_side or 0))
        if detect_upscale not in UPSCALE_INTERPOLATION:
            raise ValueError(f"detect_upscale must be one of {sorted(UPSCALE_INTERPOLATION)}")
        self.detect_upscale = UPSCALE_INTERPOLATION[detect_upscale]
        self.detect_threads = detect_threads
        self.nested_overlap = float(nested_overlap)
        self.pace = float(pace) if pace else None  # feed frames at this rate (live emulation)
        # stills: unrelated photos; no temporal memory, no tracking across them, no smoothing
        self.stills = bool(stills)
        if scene_cut is not None and scene_cut < 0:
            raise ValueError("scene_cut must be >= 0 (0 or None: off)")
        # photos are each a scene of their own already
        self.cuts = SceneCutDetector(scene_cut) if scene_cut and not self.stills else None
        if summary_every is not None and not summary_every > 0:
            raise ValueError("summary_every must be > 0 seconds")
        self.summary_every = float(summary_every) if summary_every else None
        self._t_start = t_start
        self._t_first: float | None = None  # perf_counter when the first frame was output
        self._next_summary = 0.0
        self._summary_failed = False
        self.handle_signals = handle_signals
        self.signals = signals  # the caller's guard (start-up was under it); None: our own
        self.signum: int | None = None
        self._warn = warn or errors.warn
        self.nonfinite = 0  # detections / probability vectors with NaN or Infinity, left out
        self.info = dict(info or {})
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        # outputs that failed (a write or their closing; "summary": its file), by the name
        # Sinks.named gives them: the first error of each
        self.failed: dict[str, BaseException] = {}
        self.interrupted = False
        self._force = False
        self.stopped_by_user = False
        # bounded, whatever the length of the run (runtime/stats.py)
        self.times: dict[str, StreamingStats] = {s: StreamingStats() for s in STAGES}
        self.latency = StreamingStats()
        # the same after the first WARM_UP_S of input: the first frame scans every scale (faces
        # already in view are reported from it) and the frames behind it queue; a camera that
        # runs for hours sees this figure
        self.latency_warm = StreamingStats()
        self._t_in0: float | None = None
        self.busy = StreamingStats()  # per frame: the sum of its stages' times
        self.scene_cuts = 0
        self.cut_frames: collections.deque = collections.deque(maxlen=MAX_LISTED)
        # image sources: per file, {"path", "faces", "labels"} for the first MAX_LISTED_FILES
        self.images = getattr(getattr(source, "spec", None), "kind", None) == "images"
        self.files: list[dict] = []
        self.files_omitted = 0
        self.track_count = 0  # tracks reported (the tracker's may include frames not emitted)
        self._live_ids: set[int] = set()  # the reported tracks not yet ended
        self.frames = 0
        self.frames_with_detections = 0
        self.frames_with_faces = 0
        self.faces = 0
        self.held_faces = 0  # faces reported held (followed by the tracker, not detected)
        self.detections = 0
        self.batches = 0
        self.classified = 0  # faces the classifier ran on (classify_every: fewer than faces)
        self.read_count = 0
        # the source read to its end (or --max-frames) and every frame through to the outputs:
        # a run that fails at the end (the video finalised, the summary written) says so
        self._read_all = False
        # max_frames stopped the read with frames of the source left: not source_complete
        self._limit_hit: bool = False
        self._drained = False
        self._wall0 = 0.0
        self._wall1 = 0.0
        # plain or eye-aligned crops, as the model's spec asks (runtime/crops.py)
        self._crop = face_cropper(classifier.spec if classifier is not None else None)

    # ---- queue helpers --------------------------------------------------------------------
    def _put(self, q: queue.Queue, item) -> None:
        while True:
            if self.stop.is_set() and item is not _END:
                raise _Stop
            try:
                q.put(item, timeout=0.05)
                return
            except queue.Full:
                if self.stop.is_set():
                    if item is _END:
                        return
                    raise _Stop from None

    def _get(self, q: queue.Queue):
        while True:
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                if self.stop.is_set():
                    raise _Stop from None

    def _stage(self, name: str, fn, q_out: queue.Queue) -> None:
        try:
            fn()
        except _Stop:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self.errors.append(exc)
            self.stop.set()
        finally:
            try:
                q_out.put_nowait(_END)
            except queue.Full:
                if not self.stop.is_set():
                    self._put(q_out, _END)

    # ---- stages -----------------------------------------------------------------------------
    def _decode(self) -> None:
        n = 0
        start = time.perf_counter()
        while not self.stop.is_set():
            if self.max_frames is not None and n >= self.max_frames:
                self._read_all = True
                # (a source of exactly max_frames frames was read to its end)
                self._limit_hit = not _exhausted(self.source)
                break
            if self.pace:  # emulate a camera: the next frame exists only at its time
                wait = start + n / self.pace - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            t0 = time.perf_counter()
            if self._primed is not None:
                f, self._primed = self._primed, None
            else:
                f = self.source.read()
            if f is None:
                self._read_all = True
                break
            t1 = time.perf_counter()
            img = _bgr_frame(f.image, f.index)
            gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            cut = self.cuts.update(gray) if self.cuts is not None else False
            t2 = time.perf_counter()
            # a live source's read() waits for the camera; that is not decoding work
            dec = (t2 - t1) if self.source.live else (t2 - t0)
            item = _Item(
                f.index,
                f.t,
                img,
                gray,
                t_in=t1 if self.source.live else t0,
                cut=cut,
                path=self._path_of(f) if self.images else None,
            )
            item.ms["decode"] = dec * 1000
            n += 1
            self.read_count = n
            self._put(self.q_det, item)

    def _path_of(self, frame) -> str | None:
        """The image file a frame of an image source came from."""
        path = getattr(frame, "path", None)
        if path is None:
            files = getattr(self.source, "files", None)
            if files is not None and 0 <= frame.index < len(files):
                path = files[frame.index]
        return None if path is None else str(path)

    def _detect(self) -> None:
        if self.detect_threads:  # numba's thread count is per calling thread
            import numba

            numba.set_num_threads(detect_threads_used(self.detect_threads))
        while True:
            item = self._get(self.q_det)
            if item is _END:
                return
            ended: list[int] = []
            if self.detector_for is not None:
                settings, self.detector = self.detector_for(item.gray.shape)
                self.detect_min_side = settings.upscale_to or 0
                self.detect_upscale = UPSCALE_INTERPOLATION[settings.upscale_interpolation]
            if self.stills or item.cut:  # a new scene: nothing carries over from the last one
                self.detector.reset()
                ended = [t.id for t in self.tracker.finish()]
            t0 = time.perf_counter()
            gray, scale = item.gray, 1.0
            short = min(gray.shape)
            if short < self.detect_min_side:  # small frames: detect on an upscaled copy
                # ... within the frame limits: a 50x5000 photo would become 240x24000
                up = min(self.detect_min_side / short, (MAX_FRAME_SIDE - 1) / max(gray.shape))
                up = min(up, math.sqrt(MAX_FRAME_PIXELS / gray.size))
                if up > 1.0:
                    scale = up
                    gray = cv2.resize(
                        gray, None, fx=scale, fy=scale, interpolation=self.detect_upscale
                    )
            focus = getattr(self.detector, "focus", None)
            if focus is not None:  # a scheduled scan looks at the live faces at their sizes
                b = np.array([t.box[:4] for t in self.tracker.tracks], np.float64).reshape(-1, 4)
                b *= scale
                focus(np.column_stack([b[:, 1] + b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 2]]))
            dets = np.array([d[:4] for d in self.detector.detect(gray)], np.float64).reshape(-1, 4)
            finite = np.isfinite(dets).all(axis=1)
            if not finite.all():  # JSON has no NaN/Infinity, the tracker no use for them
                self._nonfinite(int((~finite).sum()), "detections")
                dets = dets[finite]
            t1 = time.perf_counter()
            half = dets[:, 2] / 2  # rows, cols, sizes -> x, y, w, h boxes
            boxes = np.column_stack(
                [dets[:, 1] - half, dets[:, 0] - half, dets[:, 2], dets[:, 2], dets[:, 3]]
            )
            boxes[:, :4] /= scale
            if self.nested_overlap > 0:
                boxes = suppress_nested(boxes, self.nested_overlap)
            item.detections = len(boxes)
            item.tracks = [  # (id, box, score, match of a held track or None)
                (t.id, t.box.copy(), t.score, t.match if t.held else None)
                for t in self.tracker.update(boxes, frame=item.index, gray=item.gray, t=item.t)
            ]
            item.dead = ended + [t.id for t in self.tracker.dead]
            t2 = time.perf_counter()
            item.ms["detect"] = (t1 - t0) * 1000
            item.ms["track"] = (t2 - t1) * 1000
            self._put(self.q_cls, item)

    def _classify(self) -> None:
        done = False
        while not done:
            first = self._get(self.q_cls)
            if first is _END:
                return
            batch = [first]
            while len(batch) < self.max_batch_frames:  # whatever is already waiting
                try:
                    nxt = self.q_cls.get_nowait()
                except queue.Empty:
                    break
                if nxt is _END:
                    done = True
                    break
                batch.append(nxt)
            t0 = time.perf_counter()
            crops, owners = [], []
            if self.classifier is not None:
                for k, item in enumerate(batch):
                    for j, tr in enumerate(item.tracks):
                        # a held face keeps its label; others on their frames (classify_every)
                        if _held(tr) is None and self._classify_now(int(tr[0]), item.index):
                            crops.append(self._crop(item.gray, tr[1]))
                            owners.append((k, j))
                    for tid in item.dead:
                        self._due.pop(tid, None)
            t1 = time.perf_counter()
            probs = self.classifier.predict(crops) if crops else []  # (read only with crops)
            t2 = time.perf_counter()
            if crops:
                self.batches += 1
                self.classified += len(crops)
            per_crop = (t1 - t0) * 1000 / len(batch)
            per_cls = (t2 - t1) * 1000 / len(batch)
            p_of = {own: probs[i] for i, own in enumerate(owners)} if crops else {}
            for k, item in enumerate(batch):
                item.ms["crop"] = per_crop
                item.ms["classify"] = per_cls
                item.probs = {j: p for (kk, j), p in p_of.items() if kk == k}
                self._put(self.q_out, item)

    def _classify_now(self, tid: int, frame: int) -> bool:
        """Whether track `tid` is classified on `frame` (and, if so, when it is next)."""
        n = self.classify_every
        due = self._due.get(tid)
        if due is not None and frame < due:
            return False
        # the first time: next after n - (tid % n) frames, so faces born together take turns
        self._due[tid] = frame + (n if due is not None else n - tid % n)
        return True

    # ---- sinks (main thread) ----------------------------------------------------------------
    def _faces(self, item: _Item) -> None:
        """The item's output records, its tracks' labels smoothed over the frames. Done as it
        is emitted, so that the summary's tracks count only frames that were output (a run
        stopped by a signal drops the frames still in flight)."""
        for j, tr in enumerate(item.tracks):
            tid, box, score = tr[:3]
            if int(tid) not in self._live_ids:
                self._live_ids.add(int(tid))
                self.track_count += 1
            match = _held(tr)
            face = {
                "track": int(tid),
                "box": [round(float(v), 1) for v in box],
                "score": round(float(score), 2),
            }
            if match is not None:  # followed, not detected: the label is held
                face["held"] = True
                face["match"] = round(float(match), 3)
            p = item.probs.get(j)
            sm = None
            if p is not None and not np.isfinite(p).all():
                self._nonfinite(1, "classifier outputs")
                # the face is reported, unclassified on this frame
            elif p is not None:
                sm = self.smoother.update(tid, p, item.index, item.t)
            elif self.classifier is not None:  # held, or not this face's frame
                sm = self.smoother.carry(tid, item.index, item.t, held=match is not None)
            if sm is not None:
                top = int(np.argmax(sm))
                face["label"] = self.smoother._name(top)
                face["conf"] = round(float(sm[top]), 4)
                face["probs"] = {
                    self.smoother._name(c): round(float(v), 4) for c, v in enumerate(sm)
                }
            item.faces.append(face)
        for tid in item.dead:
            self.smoother.drop(tid)
            self._live_ids.discard(int(tid))

    def _emit(self, item: _Item) -> None:
        t0 = time.perf_counter()
        self._faces(item)
        # counted before its outputs are written: a write that fails (a full disk) leaves the
        # summary agreeing with the tracks, which have seen this frame, and with what was written
        self.frames += 1
        self.detections += item.detections
        if item.detections:
            self.frames_with_detections += 1
        if item.faces:
            self.frames_with_faces += 1
            self.faces += len(item.faces)
            self.held_faces += sum(bool(f.get("held")) for f in item.faces)
        if item.cut:
            self.scene_cuts += 1
            self.cut_frames.append(item.index)
        s = self.sinks
        if item.faces and s.events is not None:
            rec: dict = {"frame": item.index, "t": round(item.t, 4)}
            if item.path is not None:
                rec["path"] = item.path
            rec["faces"] = item.faces
            with self._writing("events"):
                s.events.write(rec)
        annotated = None  # the annotated copy's file, for a photo written as an image
        if s.needs_annotation:
            from edge_fer.runtime.sinks import annotate

            frame = annotate(item.image, item.faces)
            if s.video is not None:
                with self._writing("video"):
                    annotated = s.video.write(frame, item.path, item.index)
            if s.preview is not None:
                with self._writing("preview"):
                    s.preview.write(frame)
            if s.window is not None:
                with self._writing("window"):
                    s.window.write(frame)
                if s.window.closed_by_user:
                    self.stopped_by_user = True
                    self.stop.set()
        t1 = time.perf_counter()
        item.ms["sinks"] = (t1 - t0) * 1000
        if self.images:
            if len(self.files) < MAX_LISTED_FILES:
                self.files.append(
                    {
                        "path": item.path,
                        "faces": len(item.faces),
                        "labels": [f.get("label") for f in item.faces],
                        **({"annotated": str(annotated)} if annotated is not None else {}),
                    }
                )
            else:
                self.files_omitted += 1
        for k in STAGES:
            if k in item.ms:
                self.times[k].add(item.ms[k])
        self.busy.add(sum(item.ms.values()))
        self.latency.add((t1 - item.t_in) * 1000)
        if self._t_in0 is None:
            self._t_in0 = item.t_in
        if item.t_in - self._t_in0 >= WARM_UP_S:
            self.latency_warm.add((t1 - item.t_in) * 1000)
        self._wall1 = time.perf_counter()
        if self._t_first is None:
            self._t_first = self._wall1

    @contextlib.contextmanager
    def _writing(self, name: str):
        """Record a failure of sink `name` (then raised on): the summary marks its output."""
        try:
            yield
        except Exception as exc:
            self.failed.setdefault(name, exc)
            raise

    def _nonfinite(self, n: int, what: str) -> None:
        first = self.nonfinite == 0
        self.nonfinite += n
        if first:
            msg = (
                f"{what} with NaN or Infinity were left out (a broken model or cascade?); "
                "counted in the summary as nonfinite_dropped"
            )
            self._warn(msg)

    # ---- run --------------------------------------------------------------------------------
    def _on_signal(self, signum, frame=None) -> None:
        if self.signum is None:
            self.signum = signum
        if self.interrupted:  # a second Ctrl-C: stop waiting for the threads (sinks still close)
            self._force = True
            return
        self.interrupted = True
        self.stop.set()
        self.source_interrupt()

    def source_interrupt(self) -> None:
        fn = getattr(self.source, "interrupt", None)
        if fn is not None:
            fn()

    def run(self) -> RunResult:
        if self._t_start is None:
            self._t_start = time.perf_counter()
        guard, own = self.signals, None
        if guard is None and self.handle_signals:
            guard = own = SignalGuard().__enter__()
        if guard is not None:
            guard.on_signal = self._on_signal
        try:
            self._start_sinks()
        except BaseException:
            if guard is not None:
                guard.on_signal = SignalGuard.record_only
            if own is not None:
                own.__exit__(None, None, None)
            raise
        threads = [
            threading.Thread(
                target=self._stage,
                args=("decode", self._decode, self.q_det),
                name="edge-fer-decode",
                daemon=True,
            ),
            threading.Thread(
                target=self._stage,
                args=("detect", self._detect, self.q_cls),
                name="edge-fer-detect",
                daemon=True,
            ),
            threading.Thread(
                target=self._stage,
                args=("classify", self._classify, self.q_out),
                name="edge-fer-classify",
                daemon=True,
            ),
        ]
        sink_error: BaseException | None = None
        self._wall0 = self._wall1 = time.perf_counter()
        if self.summary_every:
            self._next_summary = self._wall0 + self.summary_every
        try:
            for t in threads:
                t.start()
            while True:
                if self.summary_every and time.perf_counter() >= self._next_summary:
                    self._periodic_summary()
                try:
                    item = self.q_out.get(timeout=0.05)
                except queue.Empty:
                    if self.stop.is_set():
                        break
                    continue
                if item is _END:
                    self._drained = True
                    break
                if self.stop.is_set() and self.interrupted:
                    break
                try:
                    self._emit(item)
                except BaseException as exc:  # noqa: BLE001 - a sink failed: stop the run
                    sink_error = exc
                    self.stop.set()
                    break
        except KeyboardInterrupt as exc:
            self.interrupted = True
            if self.signum is None:
                self.signum = getattr(exc, "signum", signal.SIGINT)
            self.stop.set()
        finally:
            self.stop.set()
            self.source_interrupt()
            deadline = time.monotonic() + 10.0
            for t in threads:
                while t.is_alive() and not self._force and time.monotonic() < deadline:
                    t.join(timeout=0.1)
            self.tracker.finish()
            close_errors = self._close_sinks()
            error = sink_error or (self.errors[0] if self.errors else None)
            if error is None and close_errors:
                error = close_errors[0]
            try:
                summary, error = self._write_summary(error)
            finally:  # the outputs are complete: a signal from here on is only recorded
                if guard is not None:
                    guard.on_signal = SignalGuard.record_only
                if own is not None:
                    own.__exit__(None, None, None)
        if error is not None:
            for other in self.failed.values():  # the one raised is the caller's to report
                if other is not error:
                    self._warn(errors.first_line(other))
            # what the run measured is not lost with it: the caller prints it (summary_of)
            # (an attribute of ours on any exception: typed BaseException has none)
            setattr(error, "run_summary", summary)  # noqa: B010 - read by getattr in summary_of
            raise error
        if self.interrupted:
            code = exit_code_for(self.signum)
        elif self.source.incomplete or skipped_files(summary):
            code = 1  # the results cover part of the input (docs/runtime.md, Photos)
        else:
            code = 0
        return RunResult(summary, code, ended_early=self.source.incomplete)

    def _periodic_summary(self) -> None:
        """Rewrite the summary file (atomically) with the run so far: `"running": true`. A
        failure (a full disk) is warned about once and the run goes on; the final summary
        reports it."""
        self._next_summary = time.perf_counter() + float(self.summary_every or 0)
        if not self.sinks.summary_path:
            return
        from edge_fer.runtime.sinks import write_json_atomic

        try:
            write_json_atomic(self.sinks.summary_path, self.summary(running=True))
        except Exception as exc:  # noqa: BLE001 - the frames matter more than this copy
            if not self._summary_failed:
                self._summary_failed = True
                msg = f"{exc}; the summary is written again at the next interval"
                self._warn(msg)
            return
        self._summary_failed = False

    def _start_sinks(self) -> None:
        """The run begins: sinks that wait for it (the events file) open now. If one cannot,
        the others are dropped as at a start-up failure: nothing existing is touched."""
        try:
            for s in self.sinks.all():
                start = getattr(s, "start", None)
                if start is not None:
                    start()
        except BaseException:
            for s in self.sinks.all():
                try:
                    getattr(s, "abort", s.close)()
                except Exception:  # noqa: BLE001, S110 - the error being raised matters more
                    pass
            raise

    def _close_sinks(self) -> list[BaseException]:
        errs = []
        for name, s in self.sinks.named():
            try:
                s.close()
            except BaseException as exc:  # noqa: BLE001 - close every sink regardless
                errs.append(exc)
                if isinstance(exc, Exception):
                    self.failed.setdefault(name, exc)
        return errs

    def _write_summary(self, error: BaseException | None) -> tuple[dict, BaseException | None]:
        """The final summary, written to its file when asked for; (summary, the run's error).
        A file that cannot be written (a full disk, its folder gone) is the run's error when it
        has none, and the summary returned says it was not written."""
        summary = self.summary(error)
        if not self.sinks.summary_path:
            return summary, error
        from edge_fer.runtime.sinks import write_json_atomic

        try:
            write_json_atomic(self.sinks.summary_path, summary)
        except Exception as exc:  # noqa: BLE001 - the summary is still printed
            self.failed["summary"] = exc
            error = error or exc
            summary = self.summary(error)
        return summary, error

    def summary(self, error: BaseException | None = None, running: bool = False) -> dict:
        """The run's summary: at the end, or (`running`) so far, for a periodic rewrite."""
        last = time.perf_counter() if running else self._wall1
        wall = max(last - self._wall0, 1e-9)
        # the rate from the first frame's output to the last's: the start (threads, queues
        # filling, the first batch) is not throughput; too few frames give no rate at all
        first = self._t_first
        span = (self._wall1 - first) if first is not None else 0.0
        fps = None
        if self.frames >= MIN_RATE_FRAMES and span > 0:
            fps = round((self.frames - 1) / span, 2)
        ttff = None
        if first is not None and self._t_start is not None:
            ttff = round(first - self._t_start, 3)
        fps_src = self.source.fps or 0.0
        interval = 1.0 / fps_src if fps_src else 0.0
        out_paths = {}
        s = self.sinks
        # a video, or annotated images (image_out); not a video or image no frame went into
        # (none is written: VideoSink.close), but a folder, made at the start
        video = s.video
        # while running, a video is still a hidden temporary file: listed once in place
        pending = running and getattr(video, "placed", True) is False
        # (bool(): mypy took `and`'s left operand for the type of getattr's default)
        if video is not None and bool(
            getattr(video, "frames", 1) or getattr(video, "folder", False)
        ):
            from edge_fer.runtime.image_out import AnnotatedImages

            key = "annotated" if isinstance(video, AnnotatedImages) else "video"
            if not pending:
                out_paths[key] = str(getattr(video, "path", ""))
        if s.events is not None:
            out_paths["events"] = str(s.events.path)
        if s.summary_path:
            out_paths["summary"] = str(s.summary_path)
        if s.preview is not None:
            out_paths["preview"] = s.preview.url
        failed = self._failed_outputs(out_paths)
        if (
            error is not None
            and video is not None
            and not getattr(video, "frames", 1)
            and not getattr(video, "folder", False)
            and "video" not in failed
        ):  # another output failed before the video's first frame: it was asked for, so said
            failed["video"] = {
                "path": str(getattr(video, "path", "")),
                "state": "not written",
                "error": "the run stopped before its first frame was written",
            }
        tracks = self.smoother.summary(interval)
        if self.classifier is None:
            tracks = []
        d = {
            "source": self.source.describe(),
            "frames": self.frames,
            "frames_with_detections": self.frames_with_detections,
            "frames_with_faces": self.frames_with_faces,
            "faces": self.faces,
            "held_faces": self.held_faces,
            "detections": self.detections,
            "track_count": self.track_count,
            "tracks": tracks,
            "classes": list(self.smoother.classes),
            "tracks_omitted": self.smoother.omitted,
            "seconds": round(wall, 3),
            "fps": fps,
            "fps_seconds": round(span, 3),
            "time_to_first_frame_s": ttff,
            "stage_ms": {k: v.summary() for k, v in self.times.items()},
            "busy_ms": self.busy.summary(),
            "latency_ms": self.latency.summary(),
            "latency_warm_ms": self.latency_warm.summary(),
            "classify_batches": self.batches,
            "classified_faces": self.classified,
            "scene_cuts": self.scene_cuts,
            "scene_cut_frames": list(self.cut_frames),
            "dropped_frames": self.source.dropped,
            "skipped_frames": _total(self.source.skipped),
            **_latest("gaps", self.source.gaps),
            **_latest("source_errors", self.source.errors),
            "complete": not (
                running
                or self.interrupted
                or self.stopped_by_user
                or self._limit_hit
                or error is not None
                or self.source.incomplete
            ),
            # every frame of the source was processed, whatever became of the outputs
            "source_complete": self._source_complete(),
            # the frames the run was limited to (None: no limit), and whether the limit, not
            # the source's end, stopped it
            "max_frames": self.max_frames,
            "stopped_at_max_frames": self._limit_hit and self._processed_all(),
            "running": running,
            "interrupted": self.interrupted,
            "signal": signal_name(self.signum) if self.interrupted and self.signum else None,
            "started": True,
            "nonfinite_dropped": self.nonfinite,
            "events_dropped": getattr(s.events, "dropped", 0),
            "outputs": out_paths,
            "outputs_failed": failed,
        }
        if self.images:  # per file, in the order read; skipped files are in source_errors
            d["images"] = list(self.files)
            d["images_omitted"] = self.files_omitted
        if error is not None:
            d["error"] = str(error) or type(error).__name__
        d.update(self.info)
        return d

    def _source_complete(self) -> bool:
        """The source was read to its end and every frame went through the stages to the
        outputs: no stage failed, no signal, no window closed, nothing cut short, and no frame
        left unread by max_frames (a source of exactly that many frames was read to its end)."""
        return self._processed_all() and not self._limit_hit

    def _processed_all(self) -> bool:
        """The source was read to its end or to max_frames, and every frame read went through
        the stages to the outputs: no stage failed, no signal, no window closed, nothing cut
        short."""
        return (
            self._read_all
            and self._drained
            and not self.errors
            and not self.interrupted
            and not self.stopped_by_user
            and not self.source.incomplete
        )

    def _failed_outputs(self, outputs: dict) -> dict:
        """{output: {"path", "state", "error"}} for each output that failed, taken out of
        `outputs`, which lists the ones written."""
        from edge_fer.runtime.image_out import AnnotatedImages

        failed = {}
        for name, exc in self.failed.items():
            sink = getattr(self.sinks, name, None)  # None: the summary file
            key = "annotated" if isinstance(sink, AnnotatedImages) else name
            if sink is None:
                path, state = str(self.sinks.summary_path), "not written"
            else:
                path = getattr(sink, "path", None) or getattr(sink, "url", None) or name
                state = _output_state(sink)
            outputs.pop(key, None)
            failed[key] = {"path": str(path), "state": state, "error": errors.first_line(exc)}
        return failed


def _output_state(sink) -> str:
    """What a failed output left: "incomplete" (a video finalised, or the events lines and
    images written before the failure) or "not written" (nothing of this run in place)."""
    placed = getattr(sink, "placed", None)  # a video is in place only once finalised
    if placed is None:
        placed = bool(getattr(sink, "lines", 0) or getattr(sink, "frames", 0))
    return "incomplete" if placed else "not written"


def _exhausted(source) -> bool:
    """Whether `source` is known to hold no frame after those read, without reading one (a
    source that cannot tell: False)."""
    fn = getattr(source, "exhausted", None)
    return bool(fn()) if callable(fn) else False


def _held(track: tuple) -> float | None:
    """The match score of a track the tracker followed without a detection, else None."""
    return track[3] if len(track) > 3 else None


def _latest(key: str, items) -> dict:
    """{key: the MAX_LISTED latest items, key_omitted: how many earlier ones are left out}; a
    source's `Latest` (runtime/sources.py) has already dropped the oldest and counted them."""
    kept, total = items.snapshot() if hasattr(items, "snapshot") else (list(items), len(items))
    shown = kept[-MAX_LISTED:]
    return {key: shown, f"{key}_omitted": max(0, total - len(shown))}


def _total(items) -> int:
    """How many events a source counted (a `Latest` keeps only the latest)."""
    return int(getattr(items, "total", len(items)))


def _bgr_frame(img, index: int):
    """A source's frame as BGR uint8: gray HxW or HxWx1 and BGRA are converted (a custom
    Source's HxWx1 frame was an OpenCV error); anything else is a UserError naming it."""
    from edge_fer.errors import UserError

    ok = isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.size > 0
    if ok and img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if ok and img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if ok and img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if ok and img.ndim == 3 and img.shape[2] == 3:
        return img
    what = (
        f"{img.dtype} array of shape {img.shape}"
        if isinstance(img, np.ndarray)
        else (type(img).__name__)
    )
    raise UserError(
        f"source frame {index} is a {what}; frames must be uint8 gray (HxW) or BGR (HxWx3)",
        param="source",
    )
