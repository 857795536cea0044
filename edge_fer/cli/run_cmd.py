"""`edge-fer run`: faces and expressions in a video, a camera, a stream or images, in real time."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from pathlib import Path

from edge_fer import fileio
from edge_fer.cli import options
from edge_fer.cli.common import quiet_opencv
from edge_fer.errors import UserError, warn

# `run` takes SIGINT / SIGTERM over itself (SignalGuard): until it does, edge_fer.cli.main only
# records one, so an import cut short cannot turn it into an ImportError or lose it
HANDLES_SIGNALS = True

# the options of `run`, each group declared once in edge_fer.cli.options
SOURCE = options.SourceArgs()
GROUPS = (options.OutputArgs(), SOURCE, options.ModelArgs(), options.DetectorArgs(),
          options.TrackerArgs())  # fmt: skip


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="detect, track and classify faces in a video, camera, stream or images",
        description="Run the whole pipeline (PICO detection -> tracking -> classification -> "
        "smoothing) on SOURCE: a video file, a folder or glob of images, a camera (0, "
        "v4l2:///dev/video0), a stream (rtsp://, http://), a Jetson CSI camera (csi://0) or a "
        "GStreamer pipeline. A folder stands for the images in it, not in its sub-folders (a "
        'quoted glob "DIR/**/*.jpg" reaches those); a GIF is a video when animated, else a '
        "photo (folders and globs list no GIFs). A photo that cannot be used (unreadable, not "
        "an image, over the size limits) is skipped with a warning line and the others are "
        "processed. `edge-fer run --demo` makes a clip and runs on it. Exit codes: 0 "
        "done, 1 the source ended early (truncated file, stream lost) or photos were skipped, "
        "2 a usage or input problem (no photo usable), 130 / 143 interrupted by SIGINT / "
        "SIGTERM (outputs are still complete and valid); docs/runtime.md, Photos.",
    )
    p.add_argument("source", nargs="?", metavar="SOURCE", help="file, folder, glob, or URI")
    # fmt: off
    p.add_argument("--demo", action="store_true",
                   help="make a short clip with faces and run on it (outputs in --demo-dir)")
    p.add_argument("--demo-dir", metavar="DIR",
                   help="--demo: output folder (default ./edge-fer-demo)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="print no summary")
    p.add_argument("--force", action="store_true",
                   help="let --out IMAGE replace an existing file, and --out VIDEO, --events "
                        "and --summary one that is not an earlier run's video, events or "
                        "summary (never an input)")
    for g in GROUPS:
        g.add_to(p)
    # None until given: a source that is not live does not read it, which is then said
    # (_run sets the default, RunOptions.reconnect_timeout, once that is known)
    p.set_defaults(func=run, reconnect_timeout=None)
    # fmt: on


def given_reconnect_timeout(args) -> bool:
    """Whether --reconnect-timeout was given (its parser default is None, see register); the
    default is put in its place."""
    from edge_fer.runtime.runner import RunOptions

    if getattr(args, "reconnect_timeout", None) is None:
        args.reconnect_timeout = RunOptions.reconnect_timeout
        return False
    return True


# what --reconnect-timeout does not apply to, by source kind (the others are live)
_NOT_LIVE = {"file": "a video file", "images": "images (a folder, glob or photo)"}
# of the tracker group, what photos read: each is a scene of its own (no track outlives it,
# no cut to find), but a face must still clear the score gate to be reported
_PHOTOS_READ = {"min_score"}


@functools.lru_cache(maxsize=1)
def _tracking_flags() -> tuple[tuple[str, str, object], ...]:
    """(dest, flag, default) of each tracker-group flag photos do not read, from the group
    itself: a flag added there is said too. A flag whose parser default is None (unset) takes
    its default from RunOptions, where it is decided (--scene-cut 0.45 given is the default)."""
    import dataclasses

    from edge_fer.runtime.runner import RunOptions

    run_defaults = {f.name: f.default for f in dataclasses.fields(RunOptions)}
    parser = argparse.ArgumentParser(add_help=False)
    options.TrackerArgs().add_to(parser)
    return tuple((a.dest, a.option_strings[0],
                  run_defaults.get(a.dest) if a.default is None else a.default)
                 for a in parser._actions
                 if a.option_strings and a.dest not in _PHOTOS_READ)  # fmt: skip


def ignored_flags(source_args: options.SourceArgs, args, source: str, reconnect: bool) -> list[str]:
    """One line for each source flag given that SOURCE does not read (`SourceArgs.ignored`:
    the --input-* flags, --sequence; and --reconnect-timeout, `reconnect`: given, on a source
    that is not live), and each tracker or --scene-cut flag off its default on photos (images
    without --sequence), said rather than dropped (docs/runtime.md, Sources)."""
    from edge_fer.runtime.sources import parse_source

    lines = source_args.ignored(args, source)
    try:
        kind = parse_source(source).kind
    except UserError:
        return lines  # the run says what is wrong with it
    if reconnect and kind in _NOT_LIVE:
        lines.append(f"--reconnect-timeout applies to live sources (cameras, streams, "
                     f"pipelines), not to {_NOT_LIVE[kind]}; ignored")  # fmt: skip
    if kind == "images" and not getattr(args, "sequence", False):
        lines += [f"{flag} applies to tracking across frames (a video, a live source, or images "
                  "with --sequence), not to photos, each a scene of its own; ignored"
                  for dest, flag, default in _tracking_flags()
                  if getattr(args, dest, None) not in (None, default)]  # fmt: skip
    return lines


def run(args) -> int:
    from edge_fer.runtime.pipeline import SignalGuard, interrupt_signal

    quiet_opencv()
    # SIGINT / SIGTERM from here on: during start-up (the demo clip, loading, compiling) they
    # stop it and drop what was opened; while running they stop the pipeline (exit 128 + N)
    with SignalGuard() as guard:
        try:
            guard.check()  # one that came while the command line was parsed
            return _run(args, guard)
        except BaseException as exc:  # before run_video took over: imports, the demo clip
            # (an import cut short by the signal may raise ImportError instead)
            signum = interrupt_signal(exc, guard)
            if signum is None:
                raise
            return _interrupted(args, signum)
        finally:
            guard.on_signal = SignalGuard.record_only


def _run(args, guard) -> int:
    from edge_fer.runtime.pipeline import summary_of
    from edge_fer.runtime.runner import check_run_options, run_video

    guard.check()  # the signal of an import above, if the import lost its exception
    reconnect = given_reconnect_timeout(args)
    _check_source_given(args)
    if args.json and args.quiet:  # --json won without a word
        raise UserError("--json prints the summary and --quiet prints none: give one of them")
    if args.demo_dir is not None and not args.demo:  # else ignored without a word
        raise UserError("--demo-dir applies to --demo only; the outputs of a run on SOURCE "
                        "are named by --out, --events and --summary")  # fmt: skip
    if args.demo:
        from edge_fer.detect.config import resolve_cascade

        resolve_cascade(args.cascade)  # fail before making the clip
        out_dir, clip_path = _demo_paths(args)
        check_run_options(_run_opts(args, str(clip_path)))
        # as run_video will, but before the clip is made (seconds) and the folder with it
        check_outputs(args)
        from edge_fer.runtime import image_out

        ours = [clip_path] + [Path(p) for p in (args.out, args.events, args.summary)]
        in_dir = [p for p in ours if image_out.in_folder(p, out_dir)]
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            for p in in_dir:  # by name while the demo writes them (a stop mid-way keeps
                image_out.claim(out_dir, p.name)  # them ours), with size and time after
        except OSError as exc:
            raise UserError(f"--demo-dir {out_dir}: cannot create it ({exc.strerror})") from None
        from edge_fer.runtime.demo import write_demo_clip

        clip = write_demo_clip(clip_path)
        print(f"edge-fer run: demo clip {clip['path']} ({clip['frames']} frames, "
              f"{clip['size'][0]}x{clip['size'][1]}; photo: {clip['photo']})",
              file=sys.stderr, flush=True)  # fmt: skip
        source = clip["path"]
        demo_files = in_dir
    else:
        source = args.source
        demo_files, out_dir = [], None
    opts = _run_opts(args, source)
    check_run_options(opts)  # a bad value is refused in one line, before any warning
    for line in ignored_flags(SOURCE, args, source, reconnect):
        warn(line)
    if opts.force:
        _check_force(opts)
    # standard output carries the events or the summary JSON: the text summary goes to stderr
    taken = [f for f, p in (("--events", opts.events), ("--summary", opts.summary))
             if fileio.is_stdout(p)]  # fmt: skip
    if args.json and taken:
        raise UserError(f"--json and {taken[0]} - both write to standard output; give "
                        f"{taken[0]} a file, or leave --json out")  # fmt: skip
    if len(taken) == 2:  # a pipe may be shared: the lines and the summary came out mixed
        raise UserError("--events - and --summary - both write to standard output; give one "
                        "of them a file")  # fmt: skip
    if args.json or not (args.quiet or taken):
        _check_stdout_is_no_input(opts)
    try:
        result = run_video(opts, signals=guard)
    except Exception as exc:
        # an output failed after the run started (a full disk): what the run measured and the
        # outputs that were written are still shown; the error's line follows (edge_fer.cli.main)
        s = summary_of(exc)
        if s is None:
            raise
        guard.on_signal = guard.record_only
        with contextlib.suppress(OSError):  # (the demo's marker on a full disk) exc says more
            _report(args, s, taken, demo_files, out_dir)
        raise
    guard.on_signal = guard.record_only  # the run is over: a signal now changes nothing
    s = result.summary
    _report(args, s, taken, demo_files, out_dir)
    if s.get("interrupted") and not s.get("started", True):
        print(f"edge-fer run: interrupted ({s.get('signal')}) during start-up; existing "
              "outputs are untouched" + (f", summary in {args.summary}" if args.summary else ""),
              file=sys.stderr)  # fmt: skip
    elif s.get("interrupted"):
        print(f"edge-fer run: interrupted ({s.get('signal') or 'SIGINT'}); outputs are closed "
              "and valid", file=sys.stderr)  # fmt: skip
    elif result.exit_code == 1:
        print(f"edge-fer run: error: {result.why_exit_1()}", file=sys.stderr)
    return result.exit_code


def _check_source_given(args) -> None:
    """UserError unless the run has one source: SOURCE or --demo (the clip it makes)."""
    if args.demo and args.source:
        raise UserError("give either SOURCE or --demo, not both")
    if not args.demo and not args.source:
        raise UserError("no SOURCE: give a file, folder, glob, camera or URI (or --demo)")


def _run_opts(args, source: str):
    """The `RunOptions` of `args` on `source` (SOURCE, or the demo's clip): what run_video is
    given."""
    opts = options.run_options(args, source, GROUPS)
    opts.force = bool(getattr(args, "force", False))
    return opts


def _demo_paths(args) -> tuple[Path, Path]:
    """--demo: its folder and the clip it makes there; the outputs not given are put in `args`,
    in that folder."""
    out_dir = Path(args.demo_dir or "edge-fer-demo")
    args.out = args.out or str(out_dir / "annotated.mp4")
    args.events = args.events or str(out_dir / "events.jsonl")
    args.summary = args.summary or str(out_dir / "summary.json")
    return out_dir, out_dir / "demo_input.mp4"


def check_outputs(args) -> None:
    """UserError (one line) where `edge-fer run` with `args` would refuse to write its outputs:
    runner.check_outputs, on the options run_video is given (_run_opts). With --demo, on its
    clip, which is named as such and not yet made, and its folder, which it makes: new, empty
    or an earlier demo's (its marker lists what the demos wrote there), so no file of the
    user's is replaced by one of the demo's.

    The one check of them outside run_video: before the demo makes its clip, and where a signal
    stops the start-up before run_video made it (_interrupted), so neither can let through what
    the run would refuse."""
    from edge_fer.runtime import runner
    from edge_fer.runtime.sources import parse_source

    _check_source_given(args)  # what the run reads: its outputs are checked against it
    if not args.demo:
        opts = _run_opts(args, args.source)
        runner.check_outputs(opts, parse_source(opts.source, **opts.source_options))
        return
    from edge_fer.runtime import image_out

    args = argparse.Namespace(**vars(args))  # the demo's outputs where not given, on a copy
    out_dir, clip_path = _demo_paths(args)
    try:
        if out_dir.exists():  # else made with its parents before the clip
            image_out.check_folder(out_dir, "the demo's clip and outputs")
    except UserError as exc:
        raise UserError(f"--demo-dir {exc.message}") from None
    opts = _run_opts(args, str(clip_path))
    ins = [("the demo clip", str(clip_path)), *runner.run_inputs(opts, None)]
    spec = parse_source(opts.source, **opts.source_options)
    runner.check_outputs(opts, spec, ins, made=out_dir)


def _report(args, s: dict, taken: list, demo_files: list, out_dir) -> None:
    """The end of a run, failed or not: the summary printed, the demo's files claimed."""
    from edge_fer.runtime import image_out
    from edge_fer.runtime.runner import format_summary

    if args.json:
        print(fileio.dumps(s))
    elif not args.quiet:
        print(format_summary(s), file=sys.stderr if taken else sys.stdout)
    for f in demo_files:  # with their size and time: a file put there since is not ours
        if f.is_file():
            image_out.claim(out_dir, f.name, written=True)


def _check_force(opts) -> None:
    """--force with no output it can let replace a file (before: nothing said, as --demo-dir
    without --demo was): one warning line. It applies to --out IMAGE or VIDEO, --events and
    --summary; a folder only ever holds a run's images."""
    from edge_fer.runtime import image_out

    kind = image_out.out_kind(opts.out)
    if kind in ("image", "video") or opts.events or opts.summary:
        return
    if kind == "folder":
        why = f"--out {opts.out}, a folder, only ever replaces an earlier run's images"
    else:
        why = "none is given"
    warn(f"--force applies to an existing --out IMAGE or VIDEO, --events or --summary file; "
         f"{why}; ignored")  # fmt: skip


def _check_stdout_is_no_input(opts) -> None:
    """Standard output redirected onto an input (`run clip.avi --json 1<> clip.avi`) wrote the
    summary over it, and onto an output (`--events e.jsonl > e.jsonl`) into it; --events -
    and --summary - are checked by the run itself."""
    from edge_fer.runtime.runner import run_inputs
    from edge_fer.runtime.sources import parse_source

    outs = [("standard output", "/dev/stdout"), ("--events", opts.events),
            ("--summary", opts.summary)]  # fmt: skip
    if opts.out and not fileio.names_folder(opts.out):
        outs.append(("--out", opts.out))
    try:
        spec = parse_source(opts.source)
    except UserError:
        fileio.check_collisions(outs)  # the run reports the source
        return
    fileio.check_collisions(outs, run_inputs(opts, spec))


def _interrupted(args, signum: int) -> int:
    """A signal before the pipeline's start-up began (the demo clip): the summary, one line.
    The signal may come before the run's output checks: the summary is written over an
    existing file only where the run would write over it (check_outputs); else a warning line
    says why it is not."""
    from edge_fer.runtime.pipeline import exit_code_for, signal_name, startup_summary
    from edge_fer.runtime.sinks import write_json_atomic

    where = ""
    args.summary = options.stdout_path(args.summary)
    if args.summary:
        desc = {"uri": args.source or "demo", "kind": "file", "live": False, "width": 0,
                "height": 0}  # fmt: skip
        limit = {"max_frames": getattr(args, "max_frames", None) or None}
        try:
            _check_summary_writable(args)
            write_json_atomic(args.summary, startup_summary(desc, signum,
                                                            {"summary": str(args.summary)},
                                                            limit))  # fmt: skip
            where = f", summary in {args.summary}"
        except UserError as exc:  # the interruption stays the exit status
            said = exc.render(_flags().get(exc.param or ""))  # as edge_fer.cli.main says it
            warn(f"{said} (the summary of this interrupted start-up is not written)")
    print(f"edge-fer run: interrupted ({signal_name(signum)}) during start-up; existing outputs "
          f"are untouched{where}", file=sys.stderr)  # fmt: skip
    return exit_code_for(signum)


def _check_summary_writable(args) -> None:
    """UserError where the interrupted start-up must not write --summary: an existing file the
    run would refuse to write over, or could not tell (an import the signal cut short). A new
    one replaces nothing, nor does a device or pipe (written through)."""
    path = args.summary
    if fileio.is_stream(path) or not os.path.lexists(path):
        return
    try:
        check_outputs(args)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - kept, as a refusal would keep it
        from edge_fer.errors import first_line

        raise UserError(f"--summary {path}: exists, and whether the run would replace it "
                        f"could not be told ({first_line(exc)})") from None  # fmt: skip


@functools.lru_cache(maxsize=1)
def _flags() -> dict[str, str]:
    """The flag of each of run's options by its dest, as edge_fer.cli.main.flag_for finds it:
    a UserError naming its parameter is said with the flag outside main's error path too."""
    sub = argparse.ArgumentParser(add_help=False).add_subparsers()
    register(sub)
    return {a.dest: max(a.option_strings, key=len)
            for a in sub.choices["run"]._actions if a.option_strings}  # fmt: skip
