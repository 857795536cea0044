"""`edge-fer detect`: find faces in images and videos with a pico cascade."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from edge_fer.cli.common import check_signal, positive_thread_count, quiet_opencv
from edge_fer.cli.options import DetectorArgs
from edge_fer.errors import UserError

# the detector's options, as `run` declares them; detect keeps one frame of memory by default
# and does not upscale small frames
DETECTOR = DetectorArgs(memory=1, upscale=False)
GREEN = (0, 255, 0)


def register(subparsers: argparse._SubParsersAction) -> None:
    # fmt: off
    p = subparsers.add_parser("detect", help="find faces in images or videos (pico cascade)",
                              description="Find faces with a pico cascade. Prints, per image, a line "
                              "with its face count and one line per face; per video, one line of "
                              'frame counts. With --json, JSON Lines {"path", "faces": '
                              '[{"x","y","w","h","score"}]}, one per image and per video frame '
                              '(plus "frame"). An input that cannot be used (unreadable, not an '
                              "image, over the size limits) is skipped with a warning line and the "
                              "others are processed; exit codes: 0 all processed, 1 some input "
                              "skipped or a video truncated, 2 a mistake or no input usable "
                              "(docs/runtime.md, Photos).")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_VIDEO",
                   help="image or video files; a folder stands for the images in it (not in its "
                   "sub-folders: a quoted glob \"DIR/**/*.jpg\" reaches those), a quoted glob "
                   "for the images it matches. A GIF named here is a video when animated, else a "
                   "photo; folders and globs list no GIFs")
    p.add_argument("--threads", type=positive_thread_count, metavar="N", help="CPU threads (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON Lines")
    p.add_argument("--draw", metavar="OUT",
                   help="save images with boxes: a file for one input file, else a directory; "
                   "a video is drawn as a video (NAME.avi in a directory; for one video, OUT's "
                   "container: .avi, .mp4, .m4v, .mov or .mkv)")
    p.add_argument("--force", action="store_true",
                   help="let --draw FILE replace an existing image, or a video that no earlier "
                   "edge-fer run wrote (a directory is reused only when detect or run drew into "
                   "it; an input is never replaced)")
    # fmt: on
    DETECTOR.add_to(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here so `edge-fer --help` stays fast; importing the sources also keeps FFmpeg's
    # own decoder complaints off stderr (ours are the lines that matter)
    quiet_opencv()
    from edge_fer.detect.config import NO_CASCADE, default_cascade_path
    from edge_fer.detect.factory import DetectorPicker

    if args.cascade is None and default_cascade_path() is None:
        raise UserError(NO_CASCADE)
    paths, many = _expand_inputs(args.inputs)
    # as edge-fer run: small frames get the low-resolution cascade, and a cascade's .json
    # settings fill what the options leave unset
    pick = DetectorPicker(args.cascade, DETECTOR.parse(args), threads=args.threads)
    draw_dir = _draw_target(args.draw, len(paths) if not many else 2)
    if args.draw:
        _check_draw_outputs(args, draw_dir, paths)  # before the folder is made
    if draw_dir is not None:
        _make_draw_dir(draw_dir)
    from edge_fer.detect.scan import first_run_notice

    notice = first_run_notice()
    if notice:  # else seconds of silence on the first run after an install
        print(f"edge-fer detect: {notice}", file=sys.stderr, flush=True)
    truncated = False
    skipped = 0
    for path in paths:
        check_signal()  # a Ctrl-C that a library's start-up swallowed still stops the command
        try:
            if _is_video(path):
                truncated |= _run_video(pick, path, args, draw_dir)
            else:
                truncated |= _run_image(pick, path, args, draw_dir)
        except _BadInput as exc:
            from edge_fer.runtime.sources import skip_line

            if len(paths) == 1:  # nothing else to process: the user's mistake, one line
                raise UserError(exc.message) from None
            # as run and classify: one line, the other inputs still run
            warning(skip_line(path, exc.why))
            skipped += 1
        pick.reset()
    return _exit_code(skipped, len(paths), truncated)


def _exit_code(skipped: int, total: int, truncated: bool) -> int:
    """As edge-fer run and classify (docs/runtime.md, Photos): 2 when no input could be used;
    1 when some were skipped or a video ended before the frames its header declares, after
    every other input was processed; else 0."""
    if skipped == total:
        raise UserError(f"none of the {total} inputs could be used (listed above)")
    if skipped:
        from edge_fer.runtime.sources import skipped_error

        print(f"edge-fer detect: error: {skipped_error(skipped, total)}", file=sys.stderr)
        return 1
    return 1 if truncated else 0


def warning(msg: str) -> None:
    print(f"edge-fer detect: warning: {msg}", file=sys.stderr, flush=True)


class _BadInput(UserError):
    """An input that cannot be used (undecodable, over the size limits): reported, skipped."""

    def __init__(self, path: Path, why: str) -> None:
        from edge_fer.imageio import printable

        super().__init__(f"{printable(path)}: {why}")
        self.why = why


# ---- inputs ---------------------------------------------------------------------------------
def _expand_inputs(given: list[str]) -> tuple[list[Path], bool]:
    """Files as given; a folder or a quoted glob stands for its images in natural name order,
    as `edge-fer run` reads them. Also whether one did (then --draw is a folder, however many
    images it held)."""
    from edge_fer.imageio import printable
    from edge_fer.runtime.sources import (
        SourceSpec,
        has_glob,
        list_images,
        named_file_problem,
        named_input,
    )

    paths: list[Path] = []
    many = False
    for name in given:
        name = named_input(name, "detect")  # file:// as run reads it; other URIs refused
        p = Path(name)
        if p.is_dir() or (has_glob(name) and not p.exists()):
            spec = SourceSpec(name, "images", name, False, "images")
            paths.extend(Path(f) for f in list_images(spec, lead=""))
            many = True
        else:  # a file named: a typo or a pipe stops the command before any scan (as run)
            why = named_file_problem(p)
            if why:
                raise UserError(f"{printable(p)}: {why}")
            paths.append(p)
    return paths, many


def _is_video(path: Path) -> bool:
    """By the extension; a GIF is a video when animated, as `edge-fer run` reads it."""
    from edge_fer.runtime.sources import VIDEO_EXTS, still_gif

    ext = path.suffix.lower()
    return ext in VIDEO_EXTS or (ext == ".gif" and not still_gif(path))


def _is_image_file(path: Path) -> bool:
    """An image by its extension or its header (an unreadable file counts: it is reported as
    such rather than tried as a video)."""
    from edge_fer.runtime.sources import IMAGE_EXTS, image_size

    if path.suffix.lower() in IMAGE_EXTS:
        return True
    try:
        return image_size(str(path)) is not None
    except OSError:
        return True


def _open_video(path: Path, warn):
    """A FileSource: every frame that decodes, skipping (and reporting) the ones that don't."""
    from edge_fer.runtime.sources import UNDECODABLE_VIDEO, FileSource, SourceSpec

    try:  # the spec is built here: a file name is never read as a URI, glob or camera
        return FileSource(SourceSpec(str(path), "file", str(path), False, "ffmpeg"), warn)
    except UserError as exc:
        if UNDECODABLE_VIDEO in str(exc):  # tried as an image first unless named as a video
            why = UNDECODABLE_VIDEO if _is_video(path) else "not an image or video OpenCV can read"
            raise _BadInput(path, why) from None
        raise


def _to_gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    if frame.ndim == 2:
        return frame
    code = cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(frame, code)


# ---- output ---------------------------------------------------------------------------------
def _faces_json(faces) -> list[dict]:
    return [
        {
            "x": round(f.x),
            "y": round(f.y),
            "w": round(f.w),
            "h": round(f.h),
            "score": round(f.score, 3),
        }
        for f in faces
    ]


def _draw(img: np.ndarray, faces) -> np.ndarray:
    """The frame with each face's box and score, drawn as `edge-fer run` draws its faces."""
    from edge_fer.runtime.sinks import annotate

    return annotate(img, [{"box": (f.x, f.y, f.w, f.h), "color": GREEN, "text": f"{f.score:.1f}"}
                          for f in faces])  # fmt: skip


def _draw_target(out: str | None, ninputs: int) -> Path | None:
    """A directory to write into, or None (a single-file target is handled per input)."""
    from edge_fer.fileio import names_folder

    if out is None:
        return None
    p = Path(out)
    # a trailing slash names a folder, as for run --out DIR/ (before, a video "DIR" was refused)
    folder = names_folder(out)
    if ninputs > 1 and not (p.is_dir() or folder) and _names_a_file(p):
        # as run --out: before, a folder named x.jpg was made and every drawing put in it
        raise UserError(
            f"--draw {out}: names one file, and there are several inputs; give a folder "
            f"(--draw {os.path.join(str(p.with_suffix('')), '')})"
        )
    return p if ninputs > 1 or p.is_dir() or folder else None


def _names_a_file(p: Path) -> bool:
    """Whether `p`'s extension is an image's or a video container's."""
    from edge_fer.runtime.sinks import VIDEO_CONTAINERS
    from edge_fer.runtime.sources import IMAGE_EXTS

    return p.suffix.lower() in IMAGE_EXTS or p.suffix.lower() in VIDEO_CONTAINERS


def _make_draw_dir(p: Path) -> None:
    from edge_fer.runtime.image_out import claim

    try:
        p.mkdir(parents=True, exist_ok=True)
        claim(p, "")  # ours: a later detect or run may draw here again
    except OSError as exc:
        raise UserError(f"cannot create --draw directory {p}: {exc.strerror or exc}") from None


def _draw_path(args: argparse.Namespace, draw_dir: Path | None, src: Path, video: bool) -> Path:
    from edge_fer.runtime.image_out import annotated_name

    if draw_dir is not None:
        return draw_dir / (src.stem + ".avi" if video else annotated_name(src))
    return Path(args.draw)


def _check_draw_outputs(args: argparse.Namespace, draw_dir: Path | None, paths) -> None:
    """Before any work: no drawing may replace an input or another input's drawing, and a
    single file target must be writable, and new, or replaced with --force, or a video an
    earlier edge-fer run wrote (sinks.check_video_replaceable)."""
    from edge_fer.fileio import check_collisions
    from edge_fer.runtime.sinks import VIDEO_CONTAINERS, check_video_replaceable, check_writable
    from edge_fer.runtime.sources import IMAGE_EXTS

    if draw_dir is None:
        check_writable(args.draw, "--draw")
    drawn: dict[str, Path] = {}
    outputs = []
    for src in paths:
        # an unknown extension is tried as an image, then as a video: either name may be used
        ext = src.suffix.lower()
        kinds = [False] if ext in IMAGE_EXTS else [True] if _is_video(src) else [False, True]
        for video in kinds:
            out = _draw_path(args, draw_dir, src, video)
            key = os.path.realpath(out)
            if key in drawn:
                if drawn[key] == src:
                    continue
                raise UserError(
                    f"--draw {out}: {drawn[key]} and {src} would both be drawn there; "
                    "draw them into separate folders, or rename one"
                )
            drawn[key] = src
            outputs.append(("--draw", out))
            if draw_dir is None and len(kinds) == 2:
                # one file of unknown kind, drawn to one name: the name decides (a video
                # container's extension for a video, else an image the encoder must know)
                if video or out.suffix.lower() in VIDEO_CONTAINERS:
                    continue
            elif video and draw_dir is None and out.suffix.lower() not in VIDEO_CONTAINERS:
                # else found only when its first frame is drawn, after scanning has begun
                raise UserError(
                    f"--draw {out}: {src} is a video, drawn as a video; give OUT one of "
                    f"the extensions {', '.join(VIDEO_CONTAINERS)}"
                )
            if not video:
                from edge_fer.runtime.image_out import check_colour_name

                check_colour_name(out, "--draw")
            if not video and not _has_encoder(out):
                raise UserError(f"--draw {out}: no image encoder for the extension "
                                f"{out.suffix or '(none)'!r}; use .png or .jpg")  # fmt: skip
    check_collisions(outputs, [("input", p) for p in paths])
    # one input drawn to a file: one of the user's is not replaced unasked; a video drawing
    # replaces only a video an earlier run wrote, as run --out VIDEO (until 2026-12-06: any)
    force = getattr(args, "force", False)
    if draw_dir is None:
        src = paths[0]
        as_video = _is_video(src) or (  # a file of unknown kind drawn to a video's name
            src.suffix.lower() not in IMAGE_EXTS
            and Path(args.draw).suffix.lower() in VIDEO_CONTAINERS
        )
        if as_video:
            check_video_replaceable("--draw", args.draw, force)
        elif not force and os.path.lexists(args.draw):
            raise UserError(
                f"--draw {args.draw}: exists; pass --force to replace it, or give another name"
            )
    if draw_dir is not None:  # as run --out DIR/: a folder of the user's own files is refused
        from edge_fer.runtime.image_out import check_folder

        try:
            check_folder(draw_dir)
        except UserError as exc:
            raise UserError(f"--draw {exc.message}") from None


def _has_encoder(path: Path) -> bool:
    import cv2

    return bool(cv2.haveImageWriter("x" + path.suffix))  # the extension only: any name works


def _emit(record: dict) -> None:
    print(json.dumps(record))


def _run_image(pick, path: Path, args: argparse.Namespace, draw_dir: Path | None) -> bool:
    """Detect on one image; True when it turned out to be a truncated video."""
    from edge_fer.imageio import imwrite, printable
    from edge_fer.runtime.image_out import write_listed
    from edge_fer.runtime.sources import load_image  # run's checks: header size, limits, any name
    from edge_fer.runtime.tracker import outermost

    color, why = load_image(str(path))
    if color is None:
        if not _is_image_file(path):  # maybe a video with an unusual extension
            return _run_video(pick, path, args, draw_dir)
        raise _BadInput(path, why)
    gray = _to_gray(color)
    faces = outermost(pick(gray.shape).detect(gray))  # as `run`: no box inside a larger one
    if args.json:
        _emit({"path": str(path), "faces": _faces_json(faces)})
    else:  # one line per file, whatever its name holds
        print(f"{printable(path)}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
        for f in faces:
            print(f"  x={f.x:.0f} y={f.y:.0f} w={f.w:.0f} h={f.h:.0f} score={f.score:.2f}")
    if args.draw:
        out = _draw_path(args, draw_dir, path, video=False)
        try:  # encoded in memory and saved atomically: any file name, no half-written image
            if draw_dir is not None:
                write_listed(draw_dir, out, _draw(color, faces))
            else:
                imwrite(out, _draw(color, faces))
        except ValueError as exc:
            raise UserError(f"--draw {out}: {exc}") from None
        except OSError as exc:
            from edge_fer.fileio import os_error_reason

            raise UserError(f"cannot write {out}: {os_error_reason(exc)}") from None
    return False


def _finish_drawing(sink, draw_dir: Path | None) -> None:
    from edge_fer.runtime.image_out import claim

    sink.close()
    if draw_dir is not None:  # its size and time: a file put there since is not ours
        claim(draw_dir, sink.path.name, written=True)


def _run_video(pick, path: Path, args: argparse.Namespace, draw_dir: Path | None) -> bool:
    """Detect on every frame that decodes; True when the video is truncated.

    Frames the decoder rejects are skipped and counted, and the file is checked against the
    frame count its header declares: each problem is one warning line on stderr.
    """
    from edge_fer.imageio import printable
    from edge_fer.limits import frame_too_large
    from edge_fer.runtime.image_out import claim
    from edge_fer.runtime.sinks import VideoSink
    from edge_fer.runtime.sources import NO_FRAME
    from edge_fer.runtime.tracker import outermost

    warnings: list[str] = []  # printed once the video is done, unless nothing decoded at all
    src = _open_video(path, warnings.append)
    sink = None
    nframes = nwith = 0
    try:
        det = None
        while (fr := src.read()) is not None:
            check_signal()
            frame = fr.image
            too_large = frame_too_large(frame.shape[1], frame.shape[0])
            if too_large:  # as an image over the limits: reported, the other inputs still run
                raise _BadInput(path, f"frames of {too_large}")
            gray = _to_gray(frame)
            det = det or pick(gray.shape)  # one detector per video: its memory spans frames
            faces = outermost(det.detect(gray))
            nframes += 1
            nwith += bool(faces)
            if args.json:
                _emit({"path": str(path), "frame": fr.index, "faces": _faces_json(faces)})
            if args.draw:
                if sink is None:  # written beside its target, put in place when complete
                    h, w = frame.shape[:2]
                    target = _draw_path(args, draw_dir, path, video=True)
                    if draw_dir is not None:
                        claim(draw_dir, target.name)
                    sink = VideoSink(target, src.fps or 25.0, (w, h), flag="--draw")
                sink.write(_draw(frame, faces))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the frames drawn so far are kept, as run's
        if sink is not None:
            try:
                _finish_drawing(sink, draw_dir)
            except Exception:  # noqa: BLE001 - the interrupt is what the user is told about
                sink.abort()
        raise
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    finally:
        src.close()
    if sink is not None:
        _finish_drawing(sink, draw_dir)
    if nframes == 0:
        raise _BadInput(path, NO_FRAME)
    sys.stdout.flush()
    for msg in warnings:
        warning(msg)
    lost = src.undecodable
    if not args.json:
        print(f"{printable(path)}: {nframes} frames, faces in {nwith}"
              + (f", {lost} undecodable" if lost else ""))  # fmt: skip
    sys.stdout.flush()
    return src.incomplete
