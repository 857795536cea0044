"""The video pipeline: decode -> detect + track -> classify -> sinks, in threads with bounded queues.

    pipe = Pipeline(source, detector, classifier, sinks=Sinks(video=..., events=...))
    result = pipe.run()          # RunResult(summary: dict, exit_code: int)

Threads: `decode` reads frames and converts them to gray; `detect` runs PICO (with its temporal
memory) and the IoU tracker; `classify` crops every confirmed face, classifies all the faces of
the frames waiting for it in one batch, and smooths the probabilities per track; the calling
(main) thread feeds the sinks. Each stage's time per frame is recorded. The queues between them
hold a few frames (one for a live source, so latency stays low: the live reader drops stale
frames instead); a file is processed losslessly.

Stopping: the end of the source, `max_frames`, Ctrl-C / SIGTERM (run from the main thread), a
closed --show window, or an error in any stage. Every path joins the threads and closes every
sink, so the video is finalised and the events file ends on a complete line.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_fer.runtime.crops import crop_face
from edge_fer.runtime.smoothing import TrackSmoother
from edge_fer.runtime.sources import Source
from edge_fer.runtime.tracker import IoUTracker, suppress_nested

STAGES = ("decode", "detect", "track", "crop", "classify", "sinks")


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
    faces: list = field(default_factory=list)  # output records


_END = object()


class _Stop(Exception):
    pass


@dataclass
class Sinks:
    """The outputs of a run; every one is optional. Each has write(...) and close()."""

    video: object | None = None  # VideoSink
    events: object | None = None  # EventsSink
    window: object | None = None  # WindowSink
    preview: object | None = None  # MJPEGPreview
    summary_path: str | None = None

    def all(self) -> list:
        return [s for s in (self.video, self.events, self.window, self.preview) if s is not None]

    @property
    def needs_annotation(self) -> bool:
        return any(s is not None for s in (self.video, self.window, self.preview))


@dataclass
class RunResult:
    summary: dict
    exit_code: int


def percentiles(values) -> dict:
    if not len(values):
        return {"n": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    a = np.asarray(values, np.float64)
    return {
        "n": int(a.size),
        "mean": round(float(a.mean()), 3),
        "p50": round(float(np.percentile(a, 50)), 3),
        "p90": round(float(np.percentile(a, 90)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "max": round(float(a.max()), 3),
    }


UPSCALE_INTERPOLATION = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR,
                         "cubic": cv2.INTER_CUBIC}  # fmt: skip


class Pipeline:
    def __init__(self, source: Source, detector, classifier=None, sinks: Sinks | None = None, *,
                 tracker: IoUTracker | None = None, smoothing: float = 0.3,
                 max_frames: int | None = None, queue_size: int | None = None,
                 max_batch_frames: int = 8, handle_signals: bool = True,
                 detect_min_side: int = 0, detect_threads: int | None = None,
                 detect_upscale: str = "linear",
                 nested_overlap: float = 0.5, pace: float | None = None,
                 stills: bool = False,
                 info: dict | None = None) -> None:  # fmt: skip
        self.source = source
        self.detector = detector
        self.classifier = classifier
        self.sinks = sinks or Sinks()
        self.tracker = tracker or IoUTracker()
        classes = classifier.classes if classifier is not None else ()
        self.smoother = TrackSmoother(classes, alpha=smoothing)
        self.max_frames = max_frames if max_frames and max_frames > 0 else None
        qs = queue_size or (1 if source.live else 4)
        self.q_det: queue.Queue = queue.Queue(qs)
        self.q_cls: queue.Queue = queue.Queue(qs)
        self.q_out: queue.Queue = queue.Queue(qs)
        self.max_batch_frames = max(1, int(max_batch_frames))
        self.detect_min_side = max(0, int(detect_min_side or 0))
        if detect_upscale not in UPSCALE_INTERPOLATION:
            raise ValueError(f"detect_upscale must be one of {sorted(UPSCALE_INTERPOLATION)}")
        self.detect_upscale = UPSCALE_INTERPOLATION[detect_upscale]
        self.detect_threads = detect_threads
        self.nested_overlap = float(nested_overlap)
        self.pace = float(pace) if pace else None  # feed frames at this rate (live emulation)
        # stills: unrelated photos; no temporal memory, no tracking across them, no smoothing
        self.stills = bool(stills)
        self.handle_signals = handle_signals
        self.info = dict(info or {})
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.interrupted = False
        self._force = False
        self.stopped_by_user = False
        self.times: dict[str, list[float]] = {s: [] for s in STAGES}
        self.latency: list[float] = []
        self.busy: list[float] = []  # per frame: the sum of its stages' times
        self.frames = 0
        self.frames_with_detections = 0
        self.frames_with_faces = 0
        self.faces = 0
        self.detections = 0
        self.batches = 0
        self.read_count = 0
        self._wall0 = 0.0
        self._wall1 = 0.0
        self._margin = classifier.spec.crop_margin if classifier is not None else 0.1
        self._size = classifier.spec.input_size if classifier is not None else None

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
                break
            if self.pace:  # emulate a camera: the next frame exists only at its time
                wait = start + n / self.pace - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            t0 = time.perf_counter()
            f = self.source.read()
            if f is None:
                break
            t1 = time.perf_counter()
            img = f.image
            if img.ndim == 2:
                gray = img
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            else:
                gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            t2 = time.perf_counter()
            # a live source's read() waits for the camera; that is not decoding work
            dec = (t2 - t1) if self.source.live else (t2 - t0)
            item = _Item(f.index, f.t, img, gray, t_in=t1 if self.source.live else t0)
            item.ms["decode"] = dec * 1000
            n += 1
            self.read_count = n
            self._put(self.q_det, item)

    def _detect(self) -> None:
        if self.detect_threads:  # numba's thread count is per calling thread
            import numba

            numba.set_num_threads(
                max(1, min(int(self.detect_threads), numba.config.NUMBA_NUM_THREADS))
            )
        while True:
            item = self._get(self.q_det)
            if item is _END:
                return
            if self.stills:
                self.detector.reset()
                self.tracker.reset()
            t0 = time.perf_counter()
            gray, scale = item.gray, 1.0
            short = min(gray.shape)
            if short < self.detect_min_side:  # small frames: detect on an upscaled copy
                scale = self.detect_min_side / short
                gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=self.detect_upscale)
            dets = np.array([d[:4] for d in self.detector.detect(gray)], np.float64).reshape(-1, 4)
            t1 = time.perf_counter()
            half = dets[:, 2] / 2  # rows, cols, sizes -> x, y, w, h boxes
            boxes = np.column_stack(
                [dets[:, 1] - half, dets[:, 0] - half, dets[:, 2], dets[:, 2], dets[:, 3]]
            )
            boxes[:, :4] /= scale
            if self.nested_overlap > 0:
                boxes = suppress_nested(boxes, self.nested_overlap)
            item.detections = len(boxes)
            item.tracks = [
                (t.id, t.box.copy(), t.score) for t in self.tracker.update(boxes, frame=item.index)
            ]
            item.dead = [t.id for t in self.tracker.dead]
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
                    for j, (_tid, box, _s) in enumerate(item.tracks):
                        crops.append(crop_face(item.gray, box, self._margin, self._size))
                        owners.append((k, j))
            t1 = time.perf_counter()
            probs = self.classifier.predict(crops) if crops else None
            t2 = time.perf_counter()
            if crops:
                self.batches += 1
            per_crop = (t1 - t0) * 1000 / len(batch)
            per_cls = (t2 - t1) * 1000 / len(batch)
            p_of = {own: probs[i] for i, own in enumerate(owners)} if crops else {}
            for k, item in enumerate(batch):
                item.ms["crop"] = per_crop
                item.ms["classify"] = per_cls
                for j, (tid, box, score) in enumerate(item.tracks):
                    face = {
                        "track": int(tid),
                        "box": [round(float(v), 1) for v in box],
                        "score": round(float(score), 2),
                    }
                    p = p_of.get((k, j))
                    if p is not None:
                        s = self.smoother.update(tid, p, item.index, item.t)
                        top = int(np.argmax(s))
                        face["label"] = self.smoother._name(top)
                        face["conf"] = round(float(s[top]), 4)
                        face["probs"] = {
                            self.smoother._name(c): round(float(v), 4) for c, v in enumerate(s)
                        }
                    item.faces.append(face)
                for tid in item.dead:
                    self.smoother.drop(tid)
                self._put(self.q_out, item)

    # ---- sinks (main thread) ----------------------------------------------------------------
    def _emit(self, item: _Item) -> None:
        t0 = time.perf_counter()
        s = self.sinks
        if item.faces and s.events is not None:
            s.events.write({"frame": item.index, "t": round(item.t, 4), "faces": item.faces})
        if s.needs_annotation:
            from edge_fer.runtime.sinks import annotate

            frame = annotate(item.image, item.faces)
            if s.video is not None:
                s.video.write(frame)
            if s.preview is not None:
                s.preview.write(frame)
            if s.window is not None:
                s.window.write(frame)
                if s.window.closed_by_user:
                    self.stopped_by_user = True
                    self.stop.set()
        t1 = time.perf_counter()
        item.ms["sinks"] = (t1 - t0) * 1000
        self.frames += 1
        self.detections += item.detections
        if item.detections:
            self.frames_with_detections += 1
        if item.faces:
            self.frames_with_faces += 1
            self.faces += len(item.faces)
        for k in STAGES:
            if k in item.ms:
                self.times[k].append(item.ms[k])
        self.busy.append(sum(item.ms.values()))
        self.latency.append((t1 - item.t_in) * 1000)
        self._wall1 = time.perf_counter()

    # ---- run --------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
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
        old = {}
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    old[sig] = signal.signal(sig, self._on_signal)
                except (ValueError, OSError):
                    pass
        threads = [
            threading.Thread(target=self._stage, args=("decode", self._decode, self.q_det),
                             name="edge-fer-decode", daemon=True),
            threading.Thread(target=self._stage, args=("detect", self._detect, self.q_cls),
                             name="edge-fer-detect", daemon=True),
            threading.Thread(target=self._stage, args=("classify", self._classify, self.q_out),
                             name="edge-fer-classify", daemon=True),
        ]  # fmt: skip
        sink_error: BaseException | None = None
        self._wall0 = self._wall1 = time.perf_counter()
        try:
            for t in threads:
                t.start()
            while True:
                try:
                    item = self.q_out.get(timeout=0.05)
                except queue.Empty:
                    if self.stop.is_set():
                        break
                    continue
                if item is _END:
                    break
                if self.stop.is_set() and self.interrupted:
                    break
                try:
                    self._emit(item)
                except BaseException as exc:  # noqa: BLE001 - a sink failed: stop the run
                    sink_error = exc
                    self.stop.set()
                    break
        except KeyboardInterrupt:
            self.interrupted = True
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
            for sig, h in old.items():
                try:
                    signal.signal(sig, h)
                except (ValueError, OSError):
                    pass
        error = sink_error or (self.errors[0] if self.errors else None)
        if error is None and close_errors:
            error = close_errors[0]
        summary = self.summary(error)
        if self.sinks.summary_path:
            from edge_fer.runtime.sinks import write_json_atomic

            write_json_atomic(self.sinks.summary_path, summary)
        if error is not None:
            raise error
        if self.interrupted:
            code = 130
        elif self.source.incomplete:
            code = 1
        else:
            code = 0
        return RunResult(summary, code)

    def _close_sinks(self) -> list[BaseException]:
        errs = []
        for s in self.sinks.all():
            try:
                s.close()
            except BaseException as exc:  # noqa: BLE001 - close every sink regardless
                errs.append(exc)
        return errs

    def summary(self, error: BaseException | None = None) -> dict:
        wall = max(self._wall1 - self._wall0, 1e-9)
        fps_src = self.source.fps or 0.0
        interval = 1.0 / fps_src if fps_src else 0.0
        out_paths = {}
        s = self.sinks
        if s.video is not None:
            out_paths["video"] = str(s.video.path)
        if s.events is not None:
            out_paths["events"] = str(s.events.path)
        if s.summary_path:
            out_paths["summary"] = str(s.summary_path)
        if s.preview is not None:
            out_paths["preview"] = s.preview.url
        tracks = self.smoother.summary(interval)
        if self.classifier is None:
            tracks = []
        d = {
            "source": self.source.describe(),
            "frames": self.frames,
            "frames_with_detections": self.frames_with_detections,
            "frames_with_faces": self.frames_with_faces,
            "faces": self.faces,
            "detections": self.detections,
            "track_count": self.tracker.births,
            "tracks": tracks,
            "classes": list(self.smoother.classes),
            "seconds": round(wall, 3),
            "fps": round(self.frames / wall, 2) if self.frames else 0.0,
            "stage_ms": {k: percentiles(v) for k, v in self.times.items()},
            "busy_ms": percentiles(self.busy),
            "latency_ms": percentiles(self.latency),
            "classify_batches": self.batches,
            "dropped_frames": self.source.dropped,
            "skipped_frames": len(self.source.skipped),
            "gaps": list(self.source.gaps),
            "source_errors": list(self.source.errors),
            "complete": not (
                self.interrupted
                or self.stopped_by_user
                or error is not None
                or self.source.incomplete
            ),
            "interrupted": self.interrupted,
            "outputs": out_paths,
        }
        if error is not None:
            d["error"] = str(error) or type(error).__name__
        d.update(self.info)
        return d
