"""`edge-fer detect`: find faces in images and videos with a pico cascade."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edge_fer.errors import UserError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}
VIDEO_EXTS = {".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"}
NO_CASCADE = (
    "the bundled face cascade is missing from this installation; pass --cascade FILE "
    "(a pico cascade)"
)


def parse_size(text: str) -> float:
    """'48' -> 48 px, '48.5' -> 48.5 px, '0.1' or '10%' -> a fraction of the shorter side."""
    t = text.strip()
    try:
        if t.endswith("%"):
            v: float = float(t[:-1]) / 100.0
            if not 0 < v <= 1:
                raise ValueError
            return v
        v = int(t) if t.isdigit() else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected pixels (48) or a fraction of the frame (0.1 or 10%), got {text!r}"
        ) from None
    if not 0 < v < float("inf"):  # also rejects nan
        raise argparse.ArgumentTypeError(f"size must be > 0, got {text!r}")
    return v


def parse_angles(text: str) -> tuple[float, ...]:
    """--angle: '0', '0.25' or '0,1/32,-1/32' turns."""
    from edge_fer.detect import parse_angles as parse

    try:
        return parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e} (turns, e.g. 0 or 0,1/32,-1/32)") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "detect",
        help="find faces in images or videos (pico cascade)",
        description="Find faces with a pico cascade. Prints one line per image (per frame for "
        'a video); with --json, JSON Lines {"path", "faces": [{"x","y","w","h",'
        '"score"}]} (plus "frame" for videos).',
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_VIDEO")
    p.add_argument(
        "--cascade",
        metavar="FILE",
        help="pico cascade file (default: the bundled face_default.pico, and "
        "face_lowres.pico for images and videos whose shorter side is under 240 px)",
    )
    p.add_argument(
        "--min-size",
        type=parse_size,
        default=None,
        metavar="PX|FRACTION",
        help="smallest face: pixels (48) or a fraction of the frame's shorter side (0.1, 10%%); "
        "default 0.1, and never below the cascade's min_face setting",
    )
    p.add_argument(
        "--max-size",
        type=parse_size,
        default=1.0,
        metavar="PX|FRACTION",
        help="largest face, same units; default 1.0 (the whole shorter side)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="Q",
        help="minimum clustered score; higher = fewer false positives (default: the cascade's "
        "recommended threshold from its .json settings file, else 5.0, facefinder's usual)",
    )
    p.add_argument(
        "--angle",
        type=parse_angles,
        default=(0.0,),
        metavar="A[,A...]",
        help="in-plane rotation(s) of the cascade in turns, counter-clockwise (1/32 = 11.25 "
        "deg; several, e.g. 0,1/32,-1/32: windows of every angle are clustered together)",
    )
    p.add_argument(
        "--grouping",
        choices=("chain", "greedy"),
        default=None,
        help="how overlapping windows become one face: chain (pico's) or greedy "
        "(around the best window) (default: the cascade's setting, else chain)",
    )
    p.add_argument(
        "--cluster-iou",
        type=float,
        default=None,
        metavar="IOU",
        help="overlap above which windows are grouped (default: the cascade's "
        "cluster_iou setting, else 0.3)",
    )
    p.add_argument(
        "--verifier",
        default=None,
        metavar="ONNX|none",
        help="face verifier behind the cascade, as edge-fer run --verifier (default: "
        "the cascade's verifier setting)",
    )
    p.add_argument(
        "--verifier-min-prob",
        type=float,
        default=None,
        metavar="P",
        help="as edge-fer run --verifier-min-prob (default: the cascade's setting)",
    )
    p.add_argument(
        "--scale-factor",
        type=float,
        default=None,
        help="window growth per scale (default: the cascade's setting, else 1.1)",
    )
    p.add_argument(
        "--stride-factor", type=float, default=0.1, help="window step as a fraction of its size"
    )
    p.add_argument(
        "--memory",
        type=int,
        default=1,
        metavar="N",
        help="videos: pool the detections of the last N frames before clustering "
        "(the threshold then applies to the pooled score)",
    )
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON Lines")
    p.add_argument(
        "--draw",
        metavar="OUT",
        help="save images with boxes: a file for one input, else a directory; "
        "videos are written as annotated .avi/.mp4",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here so `edge-fer --help` stays fast; importing the sources also keeps FFmpeg's
    # own decoder complaints off stderr (ours are the lines that matter)
    from edge_fer.runtime.sources import quiet_opencv

    quiet_opencv()
    from edge_fer.detect import default_cascade_path
    from edge_fer.runtime.runner import DetectorOptions, DetectorPicker

    if args.cascade is None and default_cascade_path() is None:
        raise UserError(NO_CASCADE)
    paths = [Path(p) for p in args.inputs]
    for p in paths:
        if not p.exists():
            raise UserError(f"no such file: {p}")
        if not p.is_file():
            raise UserError(f"not a file: {p}")
    # as edge-fer run: small frames get the low-resolution cascade, and a cascade's .json
    # settings fill what the options leave unset
    pick = DetectorPicker(args.cascade, DetectorOptions(
        min_size=args.min_size, max_size=args.max_size, scale_factor=args.scale_factor,
        stride_factor=args.stride_factor, angle=args.angle, threshold=args.threshold,
        memory=args.memory, grouping=args.grouping, cluster_iou=args.cluster_iou,
        verifier=args.verifier, verifier_min_prob=args.verifier_min_prob,
    ), threads=args.threads)  # fmt: skip
    draw_dir = _draw_target(args.draw, len(paths))
    truncated = False
    for path in paths:
        if _is_video(path):
            truncated |= _run_video(pick, path, args, draw_dir)
        else:
            truncated |= _run_image(pick, path, args, draw_dir)
        pick.reset()
    # as edge-fer run: a video that ends before the frames its header declares is exit 1,
    # after every input has been processed (the warning said which and how many frames)
    return 1 if truncated else 0


# ---- inputs ---------------------------------------------------------------------------------
def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTS


def _read_image(path: Path, flags: int) -> np.ndarray | None:
    import cv2

    from edge_fer.runtime.sources import MAX_IMAGE_PIXELS, image_size

    try:
        # the size from the header first: decoding allocates it all before anything is checked
        size = image_size(str(path))
        buf = np.fromfile(path, dtype=np.uint8)  # imdecode copes with non-ASCII paths
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise UserError(f"{path}: {size[0]}x{size[1]} pixels is over the "
                        f"{MAX_IMAGE_PIXELS // 1_000_000} Mpx limit for images")  # fmt: skip
    if buf.size == 0:
        return None
    try:
        return cv2.imdecode(buf, flags)
    except cv2.error:
        return None


def _open_video(path: Path, warn):
    """A FileSource: every frame that decodes, skipping (and reporting) the ones that don't."""
    from edge_fer.runtime.sources import FileSource, SourceSpec

    try:  # the spec is built here: a file name is never read as a URI, glob or camera
        return FileSource(SourceSpec(str(path), "file", str(path), False, "ffmpeg"), warn)
    except UserError as exc:
        if "cannot decode" in str(exc):
            raise UserError(
                f"cannot decode {path}: not an image or video OpenCV can read"
            ) from None
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
    import cv2

    out = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    thick = max(1, round(min(out.shape[:2]) / 300))
    for f in faces:
        x0, y0 = round(f.x), round(f.y)
        x1, y1 = round(f.x + f.w), round(f.y + f.h)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 255, 0), thick)
        cv2.putText(
            out,
            f"{f.score:.1f}",
            (x0, max(y0 - 3, 10)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thick,
            (0, 255, 0),
            thick,
        )
    return out


def _draw_target(out: str | None, ninputs: int) -> Path | None:
    """A directory to write into, or None (a single-file target is handled per input)."""
    if out is None:
        return None
    p = Path(out)
    if ninputs > 1 or p.is_dir():
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create --draw directory {p}: {exc.strerror or exc}") from None
        return p
    return None


def _draw_path(args: argparse.Namespace, draw_dir: Path | None, src: Path, video: bool) -> Path:
    if draw_dir is not None:
        return draw_dir / (src.stem + (".avi" if video else src.suffix or ".png"))
    return Path(args.draw)


def _emit(record: dict) -> None:
    print(json.dumps(record))


def _run_image(pick, path: Path, args: argparse.Namespace, draw_dir: Path | None) -> bool:
    """Detect on one image; True when it turned out to be a truncated video."""
    import cv2

    gray = _read_image(path, cv2.IMREAD_GRAYSCALE)
    if gray is None:
        # not an image: maybe a video with an unusual extension
        if path.suffix.lower() in IMAGE_EXTS:
            raise UserError(f"cannot decode {path}: not a valid image (truncated or corrupt?)")
        return _run_video(pick, path, args, draw_dir)
    faces = pick(gray.shape).detect(gray)
    if args.json:
        _emit({"path": str(path), "faces": _faces_json(faces)})
    else:
        print(f"{path}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
        for f in faces:
            print(f"  x={f.x:.0f} y={f.y:.0f} w={f.w:.0f} h={f.h:.0f} score={f.score:.2f}")
    if args.draw:
        color = _read_image(path, cv2.IMREAD_COLOR)
        out = _draw_path(args, draw_dir, path, video=False)
        try:
            ok = cv2.imwrite(str(out), _draw(color if color is not None else gray, faces))
        except cv2.error:
            ok = False
        if not ok:
            raise UserError(f"cannot write {out} (unknown image extension or unwritable path)")
    return False


def _run_video(pick, path: Path, args: argparse.Namespace, draw_dir: Path | None) -> bool:
    """Detect on every frame that decodes; True when the video is truncated.

    Frames the decoder rejects are skipped and counted, and the file is checked against the
    frame count its header declares: each problem is one warning line on stderr.
    """
    import cv2

    warnings: list[str] = []  # printed once the video is done, unless nothing decoded at all
    src = _open_video(path, warnings.append)
    writer = None
    nframes = nwith = 0
    try:
        det = None
        while (fr := src.read()) is not None:
            frame = fr.image
            gray = _to_gray(frame)
            det = det or pick(gray.shape)  # one detector per video: its memory spans frames
            faces = det.detect(gray)
            nframes += 1
            nwith += bool(faces)
            if args.json:
                _emit({"path": str(path), "frame": fr.index, "faces": _faces_json(faces)})
            if args.draw:
                if writer is None:
                    out = _draw_path(args, draw_dir, path, video=True)
                    fourcc = "mp4v" if out.suffix.lower() in {".mp4", ".m4v", ".mov"} else "MJPG"
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*fourcc),
                                             src.fps or 25.0, (w, h))  # fmt: skip
                    if not writer.isOpened():
                        raise UserError(f"cannot write video {out}")
                writer.write(_draw(frame, faces))
    finally:
        if writer is not None:
            writer.release()
        src.close()
    if nframes == 0:
        raise UserError(f"cannot decode {path}: no frames could be read")
    sys.stdout.flush()
    for msg in warnings:
        print(f"edge-fer detect: warning: {msg}", file=sys.stderr, flush=True)
    lost = src.undecodable
    if not args.json:
        print(f"{path}: {nframes} frames, faces in {nwith}"
              + (f", {lost} undecodable" if lost else ""))  # fmt: skip
    sys.stdout.flush()
    return src.incomplete
