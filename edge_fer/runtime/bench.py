"""End-to-end and per-stage throughput and latency of the runtime, per available backend.

    results = bench(RunOptions(source, cascade=..., max_frames=300, queue_size=1))
    print(format_table(results))

Each backend runs the whole pipeline (decode -> detect -> track -> classify -> smooth -> events)
on the same source; its summary gives frames/s, the per-frame latency (from the frame's read to
its events line) and every stage's time, as p50 / p99.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import signal
import tempfile
from pathlib import Path

import cv2
import numpy as np

from edge_fer.errors import UserError, first_line
from edge_fer.machine import cpu_name


def synthetic_clip(
    path: str | os.PathLike,
    width: int,
    height: int,
    faces: int = 2,
    frames: int = 300,
    fps: float = 30.0,
    seed: int = 0,
) -> dict:
    """A clip of `faces` portraits (the demo photo) drifting over a textured background.

    Each face is 15-25% of the frame height (the photo is scaled so that its face is).
    """
    from edge_fer.runtime.demo import _background, _paste, load_face_photo
    from edge_fer.runtime.sinks import VideoSink

    if not 1 <= faces <= 8:
        raise UserError(f"must be in 1..8, got {faces}", param="faces")
    photo, credit = load_face_photo()
    rng = np.random.default_rng(seed)
    bg = _background(width, height, rng)
    face_frac = 0.38  # the portraits' face height / photo height (both shipped photos)
    ph = [height * rng.uniform(0.15, 0.25) / face_frac for _ in range(faces)]
    pw = [h * photo.shape[1] / photo.shape[0] for h in ph]
    slot = width / faces
    cx0 = [slot * (i + 0.5) for i in range(faces)]
    amp = [max(0.0, (slot - w) / 2) * 0.8 for w in pw]
    phase = rng.uniform(0, 2 * np.pi, faces)
    sink = VideoSink(path, fps, (width, height))
    try:
        for i in range(frames):
            t = i / fps
            f = bg.copy()
            for k in range(faces):
                img = photo if k % 2 == 0 else photo[:, ::-1]
                cx = cx0[k] + amp[k] * np.sin(2 * np.pi * t / 6 + phase[k])
                cy = height / 2 + 0.05 * height * np.sin(2 * np.pi * t / 4 + phase[k])
                _paste(f, img, cx, cy, ph[k])
            sink.write(f)
    except BaseException:  # Ctrl-C included: no partial clip, no temporary file
        sink.abort()
        raise
    sink.close()
    return {
        "path": str(path),
        "size": [width, height],
        "faces": faces,
        "frames": frames,
        "fps": fps,
        "photo": credit,
    }


def available_backends(model=None, threads: int = 1) -> dict[str, str | None]:
    """{backend: None if it loads, else the reason it does not}."""
    from edge_fer.backends import BACKENDS
    from edge_fer.runtime.runner import load_classifier

    out: dict[str, str | None] = {}
    for b in BACKENDS:
        try:
            clf = load_classifier(model, b, threads)
        except UserError as exc:
            out[b] = str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - an engine that is installed but broken
            out[b] = f"{type(exc).__name__}: {first_line(exc)}"  # a table cell
            continue
        clf.close()
        out[b] = None
    return out


def bench(
    opts,
    *,
    backends: list[str] | None = None,
    events: bool = True,
    keep_events: str | None = None,
    latency_frames: int = 150,
    warn=None,
) -> dict:
    """Run the pipeline with `opts` (a RunOptions: source, model, cascade, detector, tracker,
    threads, queue size...) twice per backend; returns a JSON-able report.

    Each run is `opts` with its backend and events file set; the outputs it names (video,
    summary, window, preview) are left out: a bench measures the pipeline and its events.
    Throughput: the file as fast as the pipeline goes (frames/s, stage times; its latency,
    `saturated_latency_ms`, is mostly queueing behind the frames already in flight). Latency:
    the first `latency_frames` frames fed at the source's own frame rate, as a camera would
    (0 to skip), which gives `latency_ms`: the time from a frame's arrival to its outputs.

    keep_events: a folder to keep each backend's events file in (its path goes in the result
    as "events"); by default they are written to a temporary folder and deleted.
    """
    from edge_fer import errors
    from edge_fer.runtime.runner import run_video

    # every backend runs the same file twice: say each of its problems once
    said: set[str] = set()
    say = warn or errors.warn

    def say_once(msg: str) -> None:
        if msg not in said:
            said.add(msg)
            say(msg)

    source, max_frames = opts.source, opts.max_frames
    avail = available_backends(opts.model, opts.threads)
    wanted = list(dict.fromkeys(backends)) if backends else list(avail)  # each once
    unknown = [b for b in wanted if b not in avail]
    if unknown:
        raise UserError(f"unknown backend(s) {', '.join(unknown)}; known: {', '.join(avail)}")
    if all(avail[b] is not None for b in wanted):
        raise UserError(
            "no backend could load the model: " + "; ".join(f"{b}: {avail[b]}" for b in wanted)
        )
    report = {
        "source": str(source),
        "machine": {
            "cpu": cpu_name(),  # the model name: these figures differ 2-3x between CPUs
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "opencv": cv2.__version__,
        },
        "detector": vars(opts.detector).copy(),
        "queue_size": opts.queue_size,
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="edge-fer-bench-") as tmp:
        for b in wanted:
            if avail[b] is not None:
                report["results"].append({"backend": b, "available": False, "reason": avail[b]})
                continue
            ev = Path(keep_events or tmp) / f"{Path(str(source)).stem}_{b}.jsonl"
            run = dataclasses.replace(
                opts,
                backend=b,
                events=str(ev) if events else None,
                out=None,
                summary=None,
                show=False,
                preview_port=None,
                pace=None,
            )
            if b != "tensorrt":  # TensorRT's own options apply to its runs only
                run.trt_precision = run.calib_cache = None
            # run_video builds the detector: the same cascade choice as `edge-fer run` (the
            # low-resolution cascade for small frames)
            res = run_video(run, warn=say_once)
            s = res.summary
            _stop_if_interrupted(s)
            paced = None
            rate = (s.get("source") or {}).get("fps") or 30.0
            if not 0.01 <= rate <= 1000:  # a container's broken rate: feed at a camera's
                rate = 30.0
            if latency_frames > 0:
                run.events, run.pace = None, rate
                run.max_frames = min(latency_frames, max_frames or latency_frames)
                paced = run_video(run, warn=say_once).summary
                _stop_if_interrupted(paced)
            report["cascade"] = s.get("cascade")
            # the values the detector ran with (the options resolved: min_size, the schedule)
            report["detector_used"] = s.get("detector")
            report["model"] = s.get("model")
            report["source_info"] = s.get("source")
            report["results"].append(
                {
                    "backend": b,
                    "available": True,
                    "frames": s["frames"],
                    "fps": s["fps"],
                    "latency_ms": paced["latency_ms"] if paced else None,
                    "latency_warm_ms": paced["latency_warm_ms"] if paced else None,
                    "latency_at_fps": rate if paced else None,
                    "saturated_latency_ms": s["latency_ms"],
                    "busy_ms": s["busy_ms"],
                    "stage_ms": s["stage_ms"],
                    "frames_with_faces": s["frames_with_faces"],
                    "frames_with_detections": s["frames_with_detections"],
                    "track_count": s["track_count"],
                    "exit_code": res.exit_code,
                    # why it is 1, in the line `edge-fer run` ends with (None otherwise)
                    "exit_reason": res.why_exit_1(),
                    **({"events": str(ev)} if events and keep_events else {}),
                }
            )
    return report


def _stop_if_interrupted(summary: dict) -> None:
    """Ctrl-C / SIGTERM stopped a run cleanly: stop the bench too (no half-measured table)."""
    if summary.get("interrupted"):
        from edge_fer.runtime.pipeline import Interrupted

        raise Interrupted(signal.Signals[summary.get("signal") or "SIGINT"])


def format_table(report: dict) -> str:
    from edge_fer.imageio import printable  # a name holding a newline stays on its line

    rows = []
    src = report.get("source_info") or {}
    rows.append(f"source {printable(report['source'])}  {src.get('width')}x{src.get('height')}")
    m = report.get("machine") or {}
    if m.get("cpu"):
        rows.append(f"cpu    {m['cpu']}, {m.get('cores')} cores")
    head = f"{'backend':<12} {'frames':>6} {'fps':>7} {'lat p50':>8} {'lat p99':>8} {'warm p99':>8}"
    stages = ("decode", "detect", "track", "crop", "classify", "sinks")
    head += "".join(f" {s + ' p50/p99':>17}" for s in stages)
    rows.append(head)
    for r in report["results"]:
        if not r.get("available"):
            rows.append(f"{r['backend']:<12} unavailable: {r['reason']}")
            continue
        lat = r["latency_ms"] or {}
        warm = r.get("latency_warm_ms") or {}
        line = (
            f"{r['backend']:<12} {r['frames']:>6} {_f(r['fps']):>7} {_f(lat.get('p50')):>8} "
            f"{_f(lat.get('p99')):>8} {_f(warm.get('p99')):>8}"
        )
        for s in stages:
            v = r["stage_ms"].get(s, {})
            line += f" {_f(v.get('p50')) + '/' + _f(v.get('p99')):>17}"
        rows.append(line)
    rate = next((r.get("latency_at_fps") for r in report["results"] if r.get("available")), None)
    rows.append(
        "(ms; latency: from a frame's arrival to its outputs, frames fed at "
        f"{_f(rate)} frames/s as from a camera; warm: after the first second; fps and stage "
        "times: as fast as it goes)"
    )
    return "\n".join(rows)


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"
