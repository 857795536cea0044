"""`edge-fer run`: faces and expressions in a video, a camera, a stream or images, in real time."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_fer import fileio

# one parser for --min-size and --angle everywhere
from edge_fer.cli.detect_cmd import parse_angles, parse_size
from edge_fer.errors import UserError


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Options shared by `run` and `bench`: model, cascade, detector, tracker."""
    p.add_argument("--model", metavar="M", help="classifier .onnx (default: the bundled model)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "int8"),
                   help="which bundled model, when --model is not given: auto = INT8 on ONNX "
                   "Runtime (same accuracy, ~3x faster on CPU), FP32 on TensorRT (default: auto)")
    p.add_argument(
        "--cascade", metavar="C", help="pico face cascade (default: the bundled face_default.pico, "
        "or face_lowres.pico for sources whose shorter side is under 240 px)"
    )
    g = p.add_argument_group("detector")
    g.add_argument(
        "--min-size",
        type=parse_size,
        default=None,
        metavar="PX|FRACTION",
        help="smallest face: pixels or a fraction of the frame's shorter side (default 0.1, and "
        "never below the smallest face the cascade learned, from its .json settings)",
    )
    g.add_argument(
        "--max-size",
        type=parse_size,
        default=1.0,
        metavar="PX|FRACTION",
        help="largest face (default 1.0)",
    )
    g.add_argument("--scale-factor", type=float, default=None,
                   help="window growth per scale (default: the cascade's scale_factor setting, "
                   "else 1.1; 1.05 on frames upscaled for detection, see --upscale-to)")
    g.add_argument(
        "--stride-factor", type=float, default=0.1, help="window step as a fraction of its size"
    )
    g.add_argument("--angle", type=parse_angles, default=(0.0,), metavar="A[,A...]",
                   help="scan angle(s) in turns, counter-clockwise (1/32 = 11.25 deg, e.g. "
                   "0,1/32,-1/32 for heads rolled either way; each angle costs a scan, a rotated "
                   "one ~2.5x an upright one; see docs/runtime.md) (default: upright)")
    g.add_argument("--grouping", choices=("chain", "greedy"), default=None,
                   help="how overlapping windows become one face: chain (pico's connected "
                   "components) or greedy (around the best window) (default: the cascade's "
                   "grouping setting, else chain)")
    g.add_argument("--cluster-iou", type=float, default=None, metavar="IOU",
                   help="overlap above which windows are grouped (default: the cascade's "
                   "cluster_iou setting, else 0.3)")
    g.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="minimum score, pooled over --memory frames (default: the cascade's recommended "
        "pooled threshold from its .json settings file, else 5.0)",
    )
    g.add_argument(
        "--memory",
        type=int,
        default=5,
        metavar="N",
        help="pool the detections of the last N frames (default 5)",
    )
    g.add_argument(
        "--upscale-to",
        type=int,
        default=None,
        metavar="PX",
        help="detect on an upscaled copy of frames whose shorter side is below PX (0: never; "
        "default: the cascade's recommendation from its .json settings, else 240)",
    )
    g.add_argument(
        "--upscale-interpolation",
        choices=("auto", "nearest", "linear", "cubic"),
        default="auto",
        help="how --upscale-to enlarges a frame (default auto: the cascade's recommendation "
        "from its .json settings, else linear)",
    )
    g.add_argument("--verifier", default=None, metavar="ONNX|none",
                   help="face verifier behind the cascade: a small CNN that drops detections that "
                   "are not faces and moves boxes onto the face; none: off (default: the "
                   "cascade's verifier setting: face_verify.onnx for both bundled cascades)")
    g.add_argument("--verifier-min-prob", type=float, default=None, metavar="P",
                   help="drop detections the verifier gives a face probability under P "
                   "(default: the cascade's verifier_min_prob setting, else 0.5)")
    g = p.add_argument_group("tracker and smoothing")
    g.add_argument("--iou", type=float, default=0.2, help="IoU to continue a track (0.2)")
    g.add_argument(
        "--min-hits", type=int, default=2, help="consecutive detections before a track is born (2)"
    )
    g.add_argument(
        "--max-misses",
        type=int,
        default=15,
        help="frames without a detection before a track dies (15)",
    )
    g.add_argument(
        "--min-track-score",
        type=float,
        default=None,
        metavar="S",
        help="report a track only while the moving average of its detection scores is at least "
        "S (default: the cascade's track_min_score setting when no --verifier runs, else no "
        "such gate)",
    )
    g.add_argument(
        "--hold",
        type=int,
        default=45,
        metavar="N",
        help="frames without a detection before an established track (seen on 10 or more "
        "frames: a face) dies (45)",
    )
    g.add_argument(
        "--smoothing",
        type=float,
        default=0.3,
        metavar="ALPHA",
        help="weight of the newest frame in the per-track moving average (1 = none; default 0.3)",
    )
    p.add_argument("--threads", type=int, default=1, help="classifier threads (default 1)")
    p.add_argument(
        "--detect-threads",
        type=int,
        metavar="N",
        help="detector threads (default: CPU cores - 1, at least 1; the other core "
        "decodes and classifies)",
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="detect, track and classify faces in a video, camera, stream or images",
        description="Run the whole pipeline (PICO detection -> tracking -> classification -> "
        "smoothing) on SOURCE: a video file, a folder or glob of images, a camera (0, "
        "v4l2:///dev/video0), a stream (rtsp://, http://), a Jetson CSI camera (csi://0) or a "
        "GStreamer pipeline. `edge-fer run --demo` makes a clip and runs on it. Exit codes: 0 "
        "done, 1 the source ended early (truncated file, stream lost), 2 a usage or input "
        "problem, 130 / 143 interrupted by SIGINT / SIGTERM (outputs are still complete and "
        "valid).",
    )
    p.add_argument("source", nargs="?", metavar="SOURCE", help="file, folder, glob, or URI")
    p.add_argument(
        "--demo",
        action="store_true",
        help="make a short clip with faces and run on it (outputs in --demo-dir)",
    )
    p.add_argument(
        "--demo-dir",
        default="edge-fer-demo",
        metavar="DIR",
        help="--demo: output folder (default ./edge-fer-demo)",
    )
    p.add_argument("--out", metavar="VIDEO", help="annotated video (.mp4 or .avi)")
    p.add_argument(
        "--events", metavar="FILE.jsonl", help="JSON Lines, one line per frame with faces"
    )
    p.add_argument("--summary", metavar="FILE.json", help="write the summary as JSON")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"))
    p.add_argument("--show", action="store_true", help="show the annotated video in a window")
    p.add_argument(
        "--preview-port",
        type=int,
        metavar="P",
        help="serve an MJPEG preview at http://HOST:P/ (0: any free port)",
    )
    p.add_argument(
        "--preview-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the preview binds to (default 127.0.0.1; 0.0.0.0 for all)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="print no summary")
    g = p.add_argument_group("source")
    g.add_argument("--input-width", type=int, metavar="W", help="camera / CSI capture width")
    g.add_argument("--input-height", type=int, metavar="H", help="camera / CSI capture height")
    g.add_argument(
        "--input-rate",
        type=float,
        metavar="FPS",
        help="camera / CSI frame rate; the nominal rate of an image sequence",
    )
    g.add_argument("--input-flip", metavar="FLIP", help="CSI flip method (e.g. rotate-180)")
    g.add_argument(
        "--sequence",
        action="store_true",
        help="images are consecutive frames of one scene (track faces across them); by "
        "default each image is a separate photo",
    )
    g.add_argument(
        "--reconnect-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="live sources: keep reconnecting a lost stream for S seconds (30)",
    )
    add_model_args(p)
    from edge_fer.backends.tensorrt_backend import add_trt_args

    add_trt_args(p)
    p.set_defaults(func=run)


def options_from_args(args, source: str):
    from edge_fer.runtime.runner import DetectorOptions, RunOptions, TrackerOptions

    so = {
        k: v for k, v in (("width", getattr(args, "input_width", None)),
                          ("height", getattr(args, "input_height", None)),
                          ("fps", getattr(args, "input_rate", None)),
                          ("flip", getattr(args, "input_flip", None))) if v is not None
    }  # fmt: skip
    return RunOptions(
        source=source,
        out=getattr(args, "out", None),
        events=getattr(args, "events", None),
        summary=getattr(args, "summary", None),
        max_frames=getattr(args, "max_frames", None),
        model=args.model,
        precision=getattr(args, "precision", "auto"),
        cascade=args.cascade,
        backend=getattr(args, "backend", "onnxruntime"),
        trt_precision=getattr(args, "trt_precision", None),
        calib_cache=getattr(args, "calib_cache", None),
        threads=args.threads,
        detect_threads=getattr(args, "detect_threads", None),
        show=getattr(args, "show", False),
        preview_port=getattr(args, "preview_port", None),
        preview_host=getattr(args, "preview_host", "127.0.0.1"),
        smoothing=args.smoothing,
        reconnect_timeout=getattr(args, "reconnect_timeout", 30.0),
        source_options=so,
        stills=False if getattr(args, "sequence", False) else None,
        detector=DetectorOptions(
            min_size=args.min_size,
            max_size=args.max_size,
            scale_factor=args.scale_factor,
            stride_factor=args.stride_factor,
            angle=args.angle,
            grouping=args.grouping,
            cluster_iou=args.cluster_iou,
            threshold=args.threshold,
            memory=args.memory,
            upscale_to=args.upscale_to,
            upscale_interpolation=args.upscale_interpolation,
            verifier=args.verifier,
            verifier_min_prob=args.verifier_min_prob,
        ),
        tracker=TrackerOptions(iou=args.iou, min_hits=args.min_hits, max_misses=args.max_misses,
                               hold=args.hold, min_score=args.min_track_score),
    )


def quiet_opencv() -> None:
    """OpenCV's and FFmpeg's own lines (a camera index that does not open...) would repeat our
    errors; one policy for every command, in edge_fer.runtime.sources."""
    from edge_fer.runtime.sources import quiet_opencv as quiet

    quiet()


def run(args) -> int:
    from edge_fer.runtime.pipeline import Interrupted, SignalGuard

    quiet_opencv()
    # SIGINT / SIGTERM from here on: during start-up (the demo clip, loading, compiling) they
    # stop it and drop what was opened; while running they stop the pipeline (exit 128 + N)
    with SignalGuard() as guard:
        try:
            return _run(args, guard)
        except Interrupted as exc:  # before run_video took over: the demo clip being made
            return _interrupted(args, exc.signum)
        finally:
            guard.on_signal = SignalGuard.record_only


def _run(args, guard) -> int:
    from edge_fer.runtime.runner import format_summary, run_video

    if args.demo and args.source:
        raise UserError("give either SOURCE or --demo, not both")
    if not args.demo and not args.source:
        raise UserError("no SOURCE: give a file, folder, glob, camera or URI (or --demo)")
    if args.demo:
        from edge_fer.runtime.runner import resolve_cascade
        from edge_fer.runtime.sinks import check_collisions

        resolve_cascade(args.cascade)  # fail before making the clip
        out_dir = Path(args.demo_dir)
        clip_path = out_dir / "demo_input.mp4"
        args.out = args.out or str(out_dir / "annotated.mp4")
        args.events = args.events or str(out_dir / "events.jsonl")
        args.summary = args.summary or str(out_dir / "summary.json")
        check_collisions([("--out", args.out), ("--events", args.events),
                          ("--summary", args.summary)], [("the demo clip", clip_path)])  # fmt: skip
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--demo-dir {out_dir}: cannot create it ({exc.strerror})") from None
        from edge_fer.runtime.demo import write_demo_clip

        clip = write_demo_clip(clip_path)
        print(f"edge-fer run: demo clip {clip['path']} ({clip['frames']} frames, "
              f"{clip['size'][0]}x{clip['size'][1]}; photo: {clip['photo']})",
              file=sys.stderr, flush=True)  # fmt: skip
        source = clip["path"]
    else:
        source = args.source
    opts = options_from_args(args, source)
    result = run_video(opts, signals=guard)
    s = result.summary
    if args.json:
        print(fileio.dumps(s))
    elif not args.quiet:
        print(format_summary(s))
    if s.get("interrupted") and not s.get("started", True):
        print(f"edge-fer run: interrupted ({s.get('signal')}) during start-up; existing "
              "outputs are untouched" + (f", summary in {args.summary}" if args.summary else ""),
              file=sys.stderr)  # fmt: skip
    elif s.get("interrupted"):
        print(f"edge-fer run: interrupted ({s.get('signal') or 'SIGINT'}); outputs are closed "
              "and valid", file=sys.stderr)  # fmt: skip
    elif result.exit_code == 1:
        print("edge-fer run: error: the source ended early: "
              + "; ".join(s.get("source_errors", [])[-2:]), file=sys.stderr)  # fmt: skip
    return result.exit_code


def _interrupted(args, signum: int) -> int:
    """A signal before the pipeline's start-up began (the demo clip): the summary, one line."""
    from edge_fer.runtime.pipeline import exit_code_for, signal_name, startup_summary
    from edge_fer.runtime.sinks import write_json_atomic

    where = ""
    if args.summary:
        desc = {"uri": args.source or "demo", "kind": "file", "live": False, "width": 0,
                "height": 0}  # fmt: skip
        write_json_atomic(args.summary, startup_summary(desc, signum,
                                                        {"summary": str(args.summary)}))  # fmt: skip
        where = f", summary in {args.summary}"
    print(f"edge-fer run: interrupted ({signal_name(signum)}) during start-up; existing outputs "
          f"are untouched{where}", file=sys.stderr)  # fmt: skip
    return exit_code_for(signum)
