"""Long runs keep constant memory: streaming timing statistics, bounded track and file lists,
a periodic summary; and the summary's rates are honest for short runs.

The soak test runs the real pipeline (bundled cascade, a tiny real ONNX classifier) on tens of
thousands of small real frames from an in-process source, in a fresh interpreter, and samples
that process's resident memory as it goes. `EDGE_FER_SOAK_FRAMES` sets the number of frames
(default 30000, about 35-45 s on 2 cores; 100000 took too long for a test here).
"""

from __future__ import annotations

import json
import os
import time

import cv2
import numpy as np
import pytest
from processes import run_python
from runtime_helpers import lowres_detector, make_tiny_model, read_jsonl, shared

from edge_fer.runtime import pipeline as pipeline_mod
from edge_fer.runtime.demo import demo_frames, load_face_photo
from edge_fer.runtime.pipeline import Pipeline, Sinks
from edge_fer.runtime.runner import RunOptions, format_summary, run_video
from edge_fer.runtime.sinks import EventsSink
from edge_fer.runtime.sources import KEEP_LATEST, Frame, Source, SourceSpec, open_source
from edge_fer.runtime.stats import ABS_ERROR, REL_ERROR, StreamingStats
from edge_fer.runtime.tracker import IoUTracker

TESTS = os.path.dirname(os.path.abspath(__file__))
SOAK_FRAMES = int(os.environ.get("EDGE_FER_SOAK_FRAMES", "30000"))
SOAK_SCENE = 25  # frames between the soak's scene cuts
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


# ---- streaming statistics ----------------------------------------------------------------------


def _check(st: StreamingStats, values) -> None:
    a = np.asarray(values, np.float64)
    assert st.n == a.size and st.mean == pytest.approx(a.mean()) and st.max == a.max()
    for q in (0, 1, 50, 90, 99, 99.9, 100):
        ref = float(np.percentile(a, q))
        assert abs(st.percentile(q) - ref) <= (REL_ERROR * ref + ABS_ERROR) * (1 + 1e-9), q
    s = st.summary()
    assert set(s) == {"n", "mean", "p50", "p90", "p99", "max"}
    assert s["p50"] <= s["p90"] <= s["p99"] <= s["max"]


def test_streaming_percentiles_match_numpy_on_real_timings():
    """Real timings (ms): gray conversion, thumbnail and resize of the demo clip's frames, which
    jitter as a busy machine does; within the documented bound of numpy's percentiles."""
    from edge_fer.runtime.scenecut import thumbnail

    photo, _ = load_face_photo()
    frames = list(demo_frames(photo, seconds=1.0))
    times = []
    for i in range(3000):
        f = frames[i % len(frames)]
        t0 = time.perf_counter()
        g = cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)
        thumbnail(g)
        if i % 7 == 0:
            cv2.resize(g, None, fx=1.5, fy=1.5)
        times.append((time.perf_counter() - t0) * 1000)
    st = StreamingStats()
    for v in times:
        st.add(v)
    _check(st, times)
    # and across the whole range: sub-microsecond to hours, zeros, heavy tails
    rng = np.random.default_rng(0)
    wide = np.concatenate(
        [rng.lognormal(-9, 3, 2000), np.zeros(50), rng.pareto(1.2, 2000) * 5, [3.6e6, 1e-7]]
    )
    st = StreamingStats()
    for v in wide:
        st.add(v)
    _check(st, wide)
    st.add(float("nan"))  # never from a clock; not counted
    assert st.n == wide.size and StreamingStats().summary()["p50"] is None
    assert st.nbytes() < 16 * 1024


# ---- the soak test -----------------------------------------------------------------------------


class LoopSource(Source):
    """Real frames, in process: 64x48 frames of two scenes (the demo's portraits, and the same
    upside down on another backdrop) alternating every `every` frames, so there is a scene
    cut, and new tracks, every `every` frames; RSS sampled every 500 frames."""

    def __init__(self, n: int, every: int, on_read=None) -> None:
        super().__init__(SourceSpec("soak://", "file", "soak", False, "test"))
        photo, _ = load_face_photo()
        crop = (slice(60, 300), slice(20, 340))  # the left face, large enough at 64x48

        def small(frames):
            return [cv2.resize(f[crop], (64, 48), interpolation=cv2.INTER_AREA) for f in frames]

        self.scenes = [
            small(demo_frames(photo, seed=0)),
            small(demo_frames(np.ascontiguousarray(photo[::-1]), seed=1)),
        ]
        self.n, self.every, self.on_read = n, every, on_read
        self.fps, self.frame_count = 25.0, n
        self.height, self.width = self.scenes[0][0].shape[:2]
        self.i = 0
        self.rss: list[tuple[int, int]] = []

    def read(self) -> Frame | None:
        i = self.i
        if i >= self.n:
            return None
        self.i += 1
        if i % 500 == 0:
            self.rss.append((i, _rss()))
            if self.on_read is not None:
                self.on_read(i)
        seg = i // self.every
        scene = self.scenes[seg % 2]
        return Frame(i, i / self.fps, scene[(seg * 7 + i % self.every) % len(scene)])


def _soak(out: str) -> None:
    """The soak run itself, in a fresh interpreter (see the test): summary, the summary seen
    while running, RSS samples and seconds, as JSON in `out`."""
    from pathlib import Path

    from edge_fer.classify import Classifier

    tmp = Path(out).parent
    n, every = SOAK_FRAMES, SOAK_SCENE
    summary_path = tmp / "summary.json"
    seen_running = []

    def peek(i: int) -> None:  # a periodic summary is there while the run goes on
        if i >= n // 2 and not seen_running and summary_path.exists():
            seen_running.append(json.loads(summary_path.read_text()))

    src = LoopSource(n, every, peek)
    det = lowres_detector(min_size=0.1, min_pixels=12, scale_factor=1.1, threshold=10.0, memory=5)
    clf = Classifier.load(make_tiny_model(tmp / "tiny.onnx"))
    events = EventsSink(tmp / "events.jsonl")
    pipe = Pipeline(
        src,
        det,
        clf,
        Sinks(events=events, summary_path=str(summary_path)),
        tracker=IoUTracker(max_misses=15, max_misses_established=45),
        handle_signals=False,
        detect_threads=1,
        summary_every=1.0,
        keep_tracks=100,
    )
    t0 = time.perf_counter()
    try:
        s = pipe.run().summary
    finally:
        clf.close()
    report = {"summary": s, "seen_running": seen_running, "rss": src.rss}
    report["seconds"] = time.perf_counter() - t0
    Path(out).write_text(json.dumps(report))


def test_soak_memory_stays_flat(tmp_path):
    """Run in a fresh interpreter, as a camera's process would be: RSS in the test process also
    counts whatever earlier tests left running there (it grew 4.9 MiB in a full suite run on a
    busy machine where a lone run grew 0.25)."""
    out = tmp_path / "soak.json"
    code = f"import test_long_runs as t; t._soak({str(out)!r})"
    paths = [TESTS, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    r = run_python("-c", code, env=env, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    s, seen_running, seconds = report["summary"], report["seen_running"], report["seconds"]
    n, every = SOAK_FRAMES, SOAK_SCENE
    assert s["frames"] == n and s["complete"] and not s["running"]
    assert s["scene_cuts"] == n // every - 1 and len(s["scene_cut_frames"]) == 100
    assert s["scene_cut_frames"][-1] == (n // every - 1) * every
    assert s["track_count"] >= n // every  # a new track in every scene, at the least
    listed = len(s["tracks"])  # the 100 latest ended tracks, and the live ones
    assert listed <= 100 + 5 and s["tracks_omitted"] == s["track_count"] - listed
    for k, v in s["stage_ms"].items():
        assert v["n"] == n and v["p50"] <= v["p99"] <= v["max"], k
    assert s["latency_ms"]["n"] == n and s["fps"] > 0
    assert seen_running and seen_running[0]["running"] and not seen_running[0]["complete"]
    assert 0 < seen_running[0]["frames"] < n
    assert json.loads((tmp_path / "summary.json").read_text())["frames"] == n  # the final one
    # resident memory after warm-up (20% of the run) stays flat to the end
    after = [(i, r) for i, r in report["rss"] if i >= n // 5]
    base = after[0][1]
    growth = max(r for _, r in after) - base
    print(
        f"{n} frames in {seconds:.1f} s, RSS {base / 2**20:.1f} MiB at {after[0][0]}, "
        f"growth {growth / 2**20:.2f} MiB after"
    )
    trace = " ".join(f"{i}:{r / 2**20:.1f}" for i, r in after)  # to tell a step from a slope
    assert growth < 3 * 2**20, (
        f"RSS grew {growth / 2**20:.1f} MiB over {n - after[0][0]} frames (frame:MiB {trace})"
    )


# ---- photos: events name their file, the summary lists the files (bounded) ---------------------


@pytest.mark.shared("data/webfaces/images/pic00001.jpg", "data/webfaces/images/pic00002.jpg")
def test_photo_events_carry_their_path_and_summary_lists_files(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(("pic00001.jpg", "pic00002.jpg", "pic00001.jpg")):
        (folder / f"p{i}.jpg").write_bytes(shared(f"data/webfaces/images/{name}").read_bytes())
    (folder / "p3.jpg").write_bytes(b"not an image")
    events = tmp_path / "e.jsonl"
    r = run_video(RunOptions(source=str(folder), events=str(events)), handle_signals=False)
    s = r.summary
    lines = read_jsonl(events)
    paths = [str(folder / f"p{i}.jpg") for i in range(3)]
    assert lines and all(ln["path"] == paths[ln["frame"]] for ln in lines)
    assert [f["path"] for f in s["images"]] == paths and s["images_omitted"] == 0
    by_path = {ln["path"]: ln["faces"] for ln in lines}
    for f in s["images"]:
        faces = by_path.get(f["path"], [])
        assert f["faces"] == len(faces) and f["labels"] == [x["label"] for x in faces]
    assert s["images"][0]["faces"] >= 1 and s["images"][0] == {**s["images"][2], "path": paths[0]}
    assert s["skipped_frames"] == 1 and "p3.jpg" in s["source_errors"][0]
    assert s["scene_cuts"] == 0 and s["fps"] is None  # 3 photos: too few for a rate
    monkeypatch.setattr(pipeline_mod, "MAX_LISTED_FILES", 2)
    s = run_video(RunOptions(source=str(folder)), handle_signals=False).summary
    assert [f["path"] for f in s["images"]] == paths[:2] and s["images_omitted"] == 1


# ---- rates and start-up ------------------------------------------------------------------------


@pytest.mark.shared("data/videos/00-1.avi")
def test_rate_is_measured_after_the_first_frame():
    t_start = time.perf_counter()
    r = run_video(RunOptions(source=str(shared("data/videos/00-1.avi"))), handle_signals=False)
    s = r.summary
    assert s["frames"] == 228 and s["fps"] is not None and s["fps"] > 0
    assert 0 < s["fps_seconds"] < s["seconds"]
    assert s["fps"] == pytest.approx(227 / s["fps_seconds"], rel=0.02)
    elapsed = time.perf_counter() - t_start
    assert 0 < s["time_to_first_frame_s"] < elapsed
    # counted from run_video's start: the warm-up (kernels, plans) and loading are in it
    assert s["time_to_first_frame_s"] > s["startup_s"] > 0
    text = format_summary(s).splitlines()
    assert f"speed    {s['fps']:.1f} frames/s over {s['fps_seconds']:.2f} s" in text[3]
    # the p99 of the frames read a second or more after the first, when there are any
    assert ("(after the first second " in text[3]) == (s["latency_warm_ms"]["n"] > 0)
    assert text[4] == f"start    first frame {s['time_to_first_frame_s']:.2f} s after the start"


def test_short_run_gives_no_rate(tmp_path):
    photo, _ = load_face_photo()
    path = tmp_path / "one.png"
    cv2.imwrite(str(path), next(iter(demo_frames(photo, seconds=0.04))))
    s = run_video(RunOptions(source=str(path)), handle_signals=False).summary
    assert s["frames"] == 1 and s["fps"] is None and s["fps_seconds"] == 0.0
    assert s["time_to_first_frame_s"] > s["startup_s"] > 0
    text = format_summary(s)
    assert "speed    1 frame: too few for a rate" in text and "frames/s" not in text
    assert f"start    first frame {s['time_to_first_frame_s']:.2f} s after the start" in text
    assert [(f["path"], f["faces"], len(f["labels"])) for f in s["images"]] == [
        (str(path), s["faces"], s["faces"])
    ]


def test_summary_every_must_be_positive():
    with pytest.raises(ValueError, match="summary_every"):
        Pipeline(LoopSource(1, 1), None, summary_every=0)


def test_paths_only_for_image_sources(tmp_path):
    """A video's events have no "path", and its summary no "images"."""
    src = LoopSource(30, 30)
    from edge_fer.detect import Cascade, Detector, lowres_cascade_path

    det = Detector(Cascade.load(lowres_cascade_path()), min_pixels=12, threshold=10.0, memory=5)
    events = tmp_path / "e.jsonl"
    s = (
        Pipeline(src, det, None, Sinks(events=EventsSink(events)), handle_signals=False)
        .run()
        .summary
    )
    lines = read_jsonl(events)
    assert "images" not in s and s["frames"] == 30
    assert lines and all("path" not in ln for ln in lines)


class _ShapedSource(LoopSource):
    """LoopSource's frames as another layout (a developer's own Source)."""

    def __init__(self, n: int, shape) -> None:
        super().__init__(n, n)
        self.shape = shape

    def read(self) -> Frame | None:
        f = super().read()
        return None if f is None else Frame(f.index, f.t, self.shape(f.image))


def test_a_custom_sources_gray_and_bgra_frames_run_and_odd_ones_are_named(tmp_path):
    """An HxWx1 frame from a custom Source was an OpenCV error ("Bad number of channels");
    gray HxWx1 and BGRA now run as their BGR equivalent, and a float frame is a UserError."""
    from edge_fer.detect import Cascade, Detector, lowres_cascade_path
    from edge_fer.errors import UserError

    def faces(shape) -> list:
        det = Detector(Cascade.load(lowres_cascade_path()), min_pixels=12, memory=5)
        events = tmp_path / "e.jsonl"
        Pipeline(_ShapedSource(30, shape), det, None, Sinks(events=EventsSink(events)),
                 handle_signals=False).run()  # fmt: skip
        return [(e["frame"], f["box"]) for e in read_jsonl(events) for f in e["faces"]]

    gray = faces(lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2GRAY))
    assert gray and faces(lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2GRAY)[:, :, None]) == gray
    bgr = faces(lambda im: im)
    assert faces(lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2BGRA)) == bgr
    with pytest.raises(UserError, match="source frame 0 is a float32 array"):
        faces(lambda im: im.astype(np.float32))


# ---- a flapping source: what it keeps per event is bounded -------------------------------------


def _flapping_avi(path, n: int = 330):
    """A real MJPG .avi of n 64x48 frames whose every other frame (1, 3, ..., n - 3) has its
    JPEG data zeroed: n / 2 - 1 separate undecodable frames, each its own error message."""
    import struct

    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 20, (64, 48))
    for i in range(n):
        f = np.full((48, 64, 3), (i * 3) % 256, np.uint8)
        cv2.circle(f, (32, 24), 5 + i % 10, (0, 0, 255), -1)
        w.write(f)
    w.release()
    data = bytearray(path.read_bytes())
    i, k = data.index(b"movi") + 4, 0
    while data[i : i + 4] == b"00dc":  # the AVI's frame chunks, in order
        size = struct.unpack("<I", data[i + 4 : i + 8])[0]
        if k % 2 == 1 and k < n - 2:
            data[i + 8 : i + 8 + size] = bytes(size)
        i, k = i + 8 + size + (size & 1), k + 1
    assert k == n, "not the AVI layout this test expects"
    path.write_bytes(bytes(data))
    return path


def test_flapping_source_keeps_the_latest_events_and_counts_all(tmp_path):
    clip = _flapping_avi(tmp_path / "flap.avi")
    lost = list(range(1, 328, 2))  # 164 frames, each a run of its own
    assert len(lost) > KEEP_LATEST
    src = open_source(str(clip), warn=lambda msg: None)
    read = []
    while (f := src.read()) is not None:
        read.append(f.index)
    src.close()
    assert sorted(read + lost) == list(range(330))
    assert src.skipped.total == len(lost) == src.undecodable and src.errors.total == len(lost)
    assert list(src.skipped) == lost[-KEEP_LATEST:] and len(src.errors) == KEEP_LATEST
    assert src.errors.omitted == len(lost) - KEEP_LATEST
    assert f"frame {lost[-1]} could not" in src.errors[-1]
    assert f"frame {lost[-KEEP_LATEST]} could not" in src.errors[0]
    # the summary: the count of them all, the latest listed, the rest counted as omitted
    s = run_video(RunOptions(source=str(clip)), handle_signals=False, warn=lambda m: None).summary
    assert s["frames"] == 330 - len(lost) and s["skipped_frames"] == len(lost)
    assert s["source_errors"] == list(src.errors)
    assert s["source_errors_omitted"] == len(lost) - KEEP_LATEST
    assert s["gaps"] == [] and s["gaps_omitted"] == 0


# ---- the periodic summary through run_video and the CLI ----------------------------------------


@pytest.mark.shared("data/videos/00-1.avi")
def test_summary_every_rewrites_the_summary_while_the_run_goes_on(tmp_path, capsys):
    from edge_fer.cli.main import main
    from edge_fer.errors import UserError

    clip = str(shared("data/videos/00-1.avi"))
    summary = tmp_path / "s.json"
    seen: list[dict] = []

    def watch(stop):
        while not stop.is_set():
            if summary.exists() and not seen:
                d = json.loads(summary.read_text())
                if d["frames"] >= 5:  # frames written into the video
                    seen.append(d)
            time.sleep(0.02)

    import threading

    stop = threading.Event()
    t = threading.Thread(target=watch, args=(stop,), daemon=True)
    t.start()
    # paced as a camera: 60 frames at 40 fps take 1.5 s, the summary is rewritten every 0.2 s
    video = tmp_path / "v.mp4"
    opts = RunOptions(source=clip, summary=str(summary), summary_every=0.2, max_frames=60, pace=40,
                      out=str(video))  # fmt: skip
    try:
        s = run_video(opts, handle_signals=False).summary
    finally:
        stop.set()
        t.join()
    assert seen and seen[0]["running"] and not seen[0]["complete"] and seen[0]["frames"] < 60
    assert s["frames"] == 60 and not s["running"]
    # the video is a hidden temporary file until the end: it was listed as if in place
    assert "video" not in seen[0]["outputs"] and s["outputs"]["video"] == str(video)
    assert json.loads(summary.read_text())["frames"] == 60
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(UserError) as e:
            run_video(RunOptions(source=clip, summary=str(summary), summary_every=bad))
        assert e.value.param == "summary_every"
    # the CLI: the flag, and that it needs --summary, each in one line
    assert main(["run", clip, "--summary-every", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "edge-fer run: error: --summary-every must be > 0 seconds and finite, got 0.0"
    )
    assert main(["run", clip, "--summary-every", "5"]) == 2
    assert capsys.readouterr().err.strip() == (
        "edge-fer run: error: --summary-every needs a summary file to rewrite (--summary)"
    )
    # "-" was named by the path it stands for, which the user never typed
    assert main(["run", clip, "--summary", "-", "--summary-every", "5"]) == 2
    err = capsys.readouterr().err
    assert "--summary is standard output" in err and "/dev/stdout" not in err, err
