"""`edge-fer bench`: end-to-end and per-stage throughput and latency, for each backend."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from edge_fer.cli.common import quiet_opencv
from edge_fer.cli.options import (
    DetectorArgs,
    ModelArgs,
    SourceArgs,
    TrackerArgs,
    output_path,
    run_options,
)
from edge_fer.errors import UserError, warn

DEFAULT_JSON = "benchmarks/results/bench_run.json"
# the options `run` shares with `bench`, from the same groups (no outputs: bench writes its own)
SOURCE = SourceArgs()
GROUPS = (SOURCE, ModelArgs(backend="many", trt=False), DetectorArgs(), TrackerArgs())


def register(subparsers) -> None:
    # fmt: off
    p = subparsers.add_parser("bench",
                              help="throughput and latency of `edge-fer run` for each available "
                              "backend",
                              description="Run the whole pipeline on SOURCE (or a synthetic clip) "
                              "once per available backend and report frames/s, per-frame latency "
                              "and per-stage times (p50/p99), as a table and as JSON.")
    p.add_argument("source", nargs="?", metavar="SOURCE", help="video file, folder or URI")
    p.add_argument("--synthetic", metavar="WxH",
                   help="bench on a generated clip of this size (e.g. 640x480) instead")
    # None until given: with SOURCE they would be ignored, so they are refused (run())
    p.add_argument("--faces", type=int, help="--synthetic: faces in the clip (2)")
    p.add_argument("--frames", type=int,
                   help="--synthetic: clip length (300; for SOURCE: --max-frames)")
    p.add_argument("--queue-size", type=int, default=1,
                   help="frames each queue between stages holds (default 1: lowest latency)")
    p.add_argument("--json", dest="json_out", default=DEFAULT_JSON, metavar="OUT", type=output_path,
                   help=f"where to save the results (default {DEFAULT_JSON})")
    p.add_argument("--force", action="store_true",
                   help="let --json replace a file that is not an earlier bench's results "
                   "(those are replaced anyway)")
    # fmt: on
    for g in GROUPS:
        g.add_to(p)
    # None until given: said to be ignored for a source that is not live (run_cmd.ignored_flags)
    p.set_defaults(func=run, reconnect_timeout=None)


MAX_SYNTHETIC_FRAMES = 100_000  # a synthetic clip of 1080p frames this long is gigabytes
MAX_QUEUE_SIZE = 64  # 100,000 held 528 MB more than 1 at 1280x720 (and grew with the clip)


def _is_bench_results(path: str | Path) -> bool:
    """Whether `path` holds what `bench --json` saves (an earlier bench, to be replaced)."""
    from edge_fer.fileio import json_with_keys

    return json_with_keys(path, {"machine", "detector", "results"}) is not None


def run(args) -> int:
    from edge_fer import fileio
    from edge_fer.cli.run_cmd import given_reconnect_timeout, ignored_flags
    from edge_fer.fileio import check_collisions
    from edge_fer.imageio import printable
    from edge_fer.runtime.bench import bench, format_table, synthetic_clip
    from edge_fer.runtime.runner import check_run_options, run_inputs
    from edge_fer.runtime.sinks import check_writable, write_json_atomic
    from edge_fer.runtime.sources import parse_source

    quiet_opencv()
    reconnect = given_reconnect_timeout(args)
    if bool(args.source) == bool(args.synthetic):
        raise UserError("give either SOURCE or --synthetic WxH")
    given = [f for f, v in (("--faces", args.faces), ("--frames", args.frames)) if v is not None]
    if args.source and given:  # they shape the synthetic clip; a file has its own
        raise UserError(f"{given[0]} applies to --synthetic only"
                        + ("; --max-frames N limits the frames of SOURCE"
                           if given[0] == "--frames" else ""))  # fmt: skip
    args.faces = 2 if args.faces is None else args.faces
    args.frames = 300 if args.frames is None else args.frames
    for name, value, low in (("--frames", args.frames, 1), ("--queue-size", args.queue_size, 1)):
        if value < low:
            raise UserError(f"{name} must be >= {low}, got {value}")
    if args.queue_size > MAX_QUEUE_SIZE:  # frames held between stages: 1080p is 6 MB each
        raise UserError(f"--queue-size must be <= {MAX_QUEUE_SIZE}, got {args.queue_size}")
    if args.synthetic and args.frames > MAX_SYNTHETIC_FRAMES:  # the clip is written to disk
        raise UserError(f"--frames must be <= {MAX_SYNTHETIC_FRAMES:,}, got {args.frames}")
    if args.json_out == "-":  # it made a file named "-"
        raise UserError("--json -: the table goes to standard output; give --json a file")
    out = Path(args.json_out)
    default = args.json_out == DEFAULT_JSON  # its folder is made when there is a table to save
    if not default:
        check_writable(args.json_out, "--json")
    opts = run_options(args, args.source or "", GROUPS)
    opts.queue_size = args.queue_size
    check_run_options(opts)  # (--precision with --model) before a synthetic clip is made
    spec = parse_source(opts.source, **opts.source_options) if args.source else None
    check_collisions([("--json", out)], run_inputs(opts, spec))  # never over the source or model
    # after the collisions (an input named as the output is said as such): an earlier
    # bench's results are replaced, any other file only with --force (notes.json and a photo
    # named by mistake were replaced by the table)
    # /dev/stdout redirected into a log: appended to, nothing replaced
    fileio.check_replaceable(f"--json {out}", out, _is_bench_results, "bench's results", args.force)
    with tempfile.TemporaryDirectory(prefix="edge-fer-bench-") as tmp:
        clip = None
        # a --synthetic clip is a video file: the flags a file does not read are said as for
        # SOURCE (before: only for SOURCE; --input-rate 5 with --synthetic did nothing, unsaid)
        read = args.source or str(Path(tmp) / "synthetic.mp4")
        for line in ignored_flags(SOURCE, args, read, reconnect):
            warn(line)
        if args.synthetic:
            m = re.fullmatch(r"(\d+)[xX](\d+)", args.synthetic.strip())
            if not m:
                raise UserError(f"--synthetic expects WxH such as 640x480, got {args.synthetic!r}")
            w, h = int(m.group(1)), int(m.group(2))
            if not (32 <= w <= 7680 and 32 <= h <= 4320):
                raise UserError(f"--synthetic size {w}x{h} is out of range (32..7680 x 32..4320)")
            # no more frames than the run reads: --max-frames 1 made the whole clip first
            # (hours and gigabytes at 8K)
            n = min(args.frames, opts.max_frames) if opts.max_frames else args.frames
            clip = synthetic_clip(Path(tmp) / "synthetic.mp4", w, h, args.faces, n)
            opts.source = clip["path"]
        report = bench(opts, backends=args.backend)
        if clip:
            report["synthetic"] = {k: v for k, v in clip.items() if k != "path"}
            report["source"] = (
                f"synthetic {args.synthetic} ({args.faces} face{'' if args.faces == 1 else 's'})"
            )
    print(format_table(report))
    if default:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--json {out}: cannot create {out.parent} ({exc.strerror})") from None
    write_json_atomic(out, report, "--json")
    print(f"saved {printable(out)}", file=sys.stderr)
    # as edge-fer run: 1 when a run met a problem it went past (a truncated file, photos
    # skipped: run_video's exit_code), after saving, with run's last line saying why
    ran = [r for r in report["results"] if r.get("available")]
    code = max((r.get("exit_code") or 0 for r in ran), default=0)
    why = next((r["exit_reason"] for r in ran if r.get("exit_reason")), None)
    if code == 1 and why:
        print(f"edge-fer bench: error: {why}", file=sys.stderr)
    return code
