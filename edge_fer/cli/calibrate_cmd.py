"""`edge-fer calibrate`: INT8 post-training quantization of an exported model.

Calibration faces come from a labelled dataset split (--data) or from the user's own video,
image folder or glob (--source; faces found by the PICO detector and cropped like `edge-fer
run` does); a model trained with --align gets them aligned on the eyes, as its training faces
were. Writes, into --out: the Q/DQ INT8 ONNX model for TensorRT (model.int8.qdq.onnx),
the one for ONNX Runtime on CPU (model.int8.cpu.onnx), the TensorRT calibration cache
(calib.cache), the JSON report of per-tensor ranges (calib_report.json) and the ids of the
faces used (calib_ids.txt). An earlier calibration's files there are replaced only with
--force. --out is locked while it works: a second calibration into it is refused at once
(one line, exit code 2). Needs the `onnx` package (extra `quantize`).

Ctrl-C and SIGTERM stop it cleanly: SIGTERM is raised as an interrupt like Ctrl-C, so every
temporary file is removed and --out keeps what it held; one line, exit code 130 (Ctrl-C) or
143 (SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading

from edge_fer.cli.common import HelpFormatter, Progress, add_skip_bad, thread_count
from edge_fer.cli.options import FaceFinderArgs, input_path

DETECTOR = FaceFinderArgs()  # `run`'s detector options that finding faces here takes


class _Unset(float):
    """The detector group's --max-size default (1.0, as every command has it) as an object of
    its own: one given, even 1.0, is another object."""


_MAX_SIZE = _Unset(1.0)


def register(sub) -> None:
    # fmt: off
    p = sub.add_parser("calibrate",
                       help="INT8 calibration: Q/DQ ONNX models, TensorRT calibration cache, "
                       "ranges report",
                       description="Calibrate an exported FP32 model on face crops and write an "
                       "INT8 Q/DQ ONNX model for TensorRT (symmetric INT8, per-channel weights, "
                       "Q/DQ on the inputs of Conv/Gemm/MatMul), one for ONNX Runtime on CPU, a "
                       "TensorRT calibration cache for implicit INT8 (TensorRT <= 10, DeepStream's "
                       "int8-calib-file) and a JSON report of the per-tensor ranges.",
                       epilog="Calibrate on faces like the ones the model will see: --source with "
                       "the deployment camera's recordings is the best set, a dataset's training "
                       "split the next best. At least --min-faces faces are needed; a labelled set "
                       "must hold more than one class. The TensorRT cache's header names the "
                       "TensorRT version that reads it (--trt-version): TensorRT ignores a cache "
                       "made for another version.", formatter_class=HelpFormatter)
    p.add_argument("--model", type=input_path, default=None,
                   help="FP32 .onnx model exported by edge-fer (default: the bundled model)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--force", action="store_true",
                   help="replace the outputs of an earlier calibration in --out")
    src = p.add_argument_group("calibration faces (one of --data, --source)")
    one = src.add_mutually_exclusive_group(required=True)
    one.add_argument("--data", type=input_path, metavar="DIR",
                     help="labelled dataset (FER2013 folders or csv, class folders)")
    one.add_argument("--source", metavar="VIDEO_OR_IMAGES",
                     help="video file, image, folder or glob: faces found by the PICO detector")
    # default None, filled in by _given_only_where_used: a flag that does nothing for the faces
    # given is refused even at its default (--split train with --source)
    src.add_argument("--split", default=None,
                     choices=("train", "public-test", "private-test", "test", "all"),
                     help="--data: the split to sample (never the one you report) (default train)")
    src.add_argument("--ids", metavar="FILE",
                     help="--data: use exactly the faces listed in this ids file (a calib_ids.txt "
                     "of an earlier run) instead of sampling")
    src.add_argument("--samples", type=int, default=None,
                     help="faces in the calibration set (default 512; not with --ids)")
    src.add_argument("--seed", type=int, default=None,
                     help="seed of the sample (default 0; not with --ids)")
    src.add_argument("--min-faces", type=int, default=100,
                     help="refuse a calibration set with fewer faces")
    add_skip_bad(src, "--data", "the output and calib_report.json")
    det = DETECTOR.add_to(p)
    det.add_argument("--every", type=int, default=None, metavar="N",
                     help="videos: look at every N-th frame (default 1)")
    det.add_argument("--max-frames", type=int, default=None, metavar="N",
                     help="stop after N frames (cameras and streams stop at --samples faces)")
    q = p.add_argument_group("quantization")
    q.add_argument("--method", default="entropy", choices=("entropy", "percentile", "minmax"),
                   help="how each tensor's range is chosen: KL divergence (TensorRT's "
                   "EntropyCalibration2), a percentile of |x|, or the largest |x|")
    q.add_argument("--percentile", type=float, default=99.99,
                   help="--method percentile: the percentile of |x| kept (and the one the report's "
                   "comparison of the methods uses)")
    q.add_argument("--target", default="both", choices=("tensorrt", "cpu", "both"),
                   help="Q/DQ models to write: tensorrt (model.int8.qdq.onnx: INT8 symmetric, what "
                   "TensorRT fuses), cpu (model.int8.cpu.onnx: UINT8 activations, what ONNX "
                   "Runtime's CPU kernels fuse), or both")
    q.add_argument("--trt-version", default="10.3.0", metavar="X.Y.Z",
                   help="TensorRT version written in the calibration cache's header (JetPack "
                   "6.1/6.2: 10.3.0; 6.0: 8.6.2; 5.1: 8.5.2; 4.6.1-4.6.6: 8.2.1)")
    q.add_argument("--batch-size", type=int, default=32,
                   help="faces per calibration batch (a model exported with a fixed batch size "
                   "takes batches of its own size)")
    q.add_argument("--threads", type=thread_count, default=0,
                   help="ONNX Runtime threads (default 0: its default, one per core)")
    q.add_argument("--keep-histograms", action="store_true",
                   help="also write calib_histograms.npz: every tensor's histogram, from which the "
                   "ranges of any --method can be computed again without another pass "
                   "(edge_fer.quantize.ranges.Collection.load)")
    # fmt: on
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, max_size=_MAX_SIZE)


# flag -> dest, default; each applies to one kind of faces (None: the detector's own default)
_SOURCE_ONLY = {"--cascade": ("cascade", None), "--min-size": ("min_size", None),
                "--max-size": ("max_size", 1.0), "--threshold": ("threshold", None),
                "--every": ("every", 1), "--max-frames": ("max_frames", None)}  # fmt: skip
_SAMPLING = {"--samples": ("samples", 512), "--seed": ("seed", 0)}


def _given_only_where_used(args) -> None:
    """Refuse a flag given for faces it does nothing for, then fill in the defaults (the flags
    default to None, or _MAX_SIZE, so that one given at its default value is seen). Before:
    --every, --max-frames and the detector's flags with --data, --split with --source,
    --samples and --seed with --ids were ignored without a word."""
    from edge_fer.errors import UserError

    if args.max_size is _MAX_SIZE:
        args.max_size = None
    if args.data is not None:
        for flag, (dest, _) in _SOURCE_ONLY.items():
            if getattr(args, dest) is not None:
                raise UserError(
                    f"{flag} applies to --source (faces the detector finds), not to --data"
                )
    elif args.split is not None:
        raise UserError("--split applies to --data (a labelled dataset), not to --source")
    if args.ids and args.data is not None:  # (--ids with --source: refused in _faces)
        for flag, (dest, _) in _SAMPLING.items():
            if getattr(args, dest) is not None:
                raise UserError(
                    f"{flag} is not used with --ids: the ids file lists the faces, none are sampled"
                )
    for dest, default in [*_SOURCE_ONLY.values(), *_SAMPLING.values(), ("split", "train")]:
        if getattr(args, dest) is None:
            setattr(args, dest, default)


def _warn_about(args) -> None:
    """Allowed, but not what the help advises: calibrating on a test split (the accuracy
    reported on it is then measured on the faces the ranges were chosen on), a cache for a
    TensorRT that cannot read it."""
    from edge_fer.errors import warn
    from edge_fer.quantize.trt_cache import implicit_int8_warning

    if args.data is not None and args.split in ("public-test", "private-test", "test"):
        warn(
            f"--split {args.split} is a test split: never report accuracy on the faces you "
            "calibrate on (calibrate on train)"
        )
    line = implicit_int8_warning(args.trt_version)
    if line:
        warn(line)


def _faces(args, spec):
    """The calibration faces: a dataset's (aligned later by `calibrate` for a model trained
    with --align) or the detector's, cut as `edge-fer run` cuts them for this model."""
    from edge_fer.errors import UserError
    from edge_fer.quantize import from_dataset, from_source
    from edge_fer.quantize.report import read_ids

    if args.data is not None:  # (an empty --data is the dataset loader's to refuse)
        ids = None
        if args.ids:
            try:
                ids = read_ids(args.ids)
            except OSError as exc:
                raise UserError(f"--ids {args.ids}: cannot read ({exc.strerror or exc})") from None
            except UnicodeDecodeError:  # e.g. a model given by mistake: was a traceback
                raise UserError(
                    f"--ids {args.ids}: not a text file of ids (one per line, as calib_ids.txt)"
                ) from None
            if not ids:
                raise UserError(f"--ids {args.ids}: no ids in the file")
        kw = {"size": spec.input_size, "ids": ids, "skip_bad": args.skip_bad}
        return from_dataset(args.data, args.split, args.samples, args.seed, **kw)
    if args.ids:
        raise UserError("--ids applies to --data (a labelled dataset), not to --source")
    if args.skip_bad:
        raise UserError("--skip-bad applies to --data; --source skips unreadable images itself")
    opts = DETECTOR.detect_options(args, every=args.every, max_frames=args.max_frames)
    bar = Progress(None, "finding faces", "frame", not args.no_progress)
    try:
        return from_source(
            args.source, args.cascade, margin=spec.crop_margin, size=spec.input_size,
            samples=args.samples, seed=args.seed, detect=opts,
            progress=lambda frames, faces: bar.set(frames, f"{faces} faces"), spec=spec,
        )  # fmt: skip
    finally:
        bar.close()


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, as Ctrl-C is: every finally-block runs (the
    temporary files go) before the process ends."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Turn the first SIGTERM into `_Terminated` (later ones are ignored, so a second signal
    cannot cut the clean-up short). Yields a list that holds the signal once one came.
    Signals can only be handled on the main thread; elsewhere this does nothing."""
    fired: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield fired
        return

    def on_term(signum, frame):
        if not fired:
            fired.append(signum)
            raise _Terminated()

    try:
        old = signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError):  # no signals here (an embedding interpreter)
        yield fired
        return
    try:
        yield fired
    finally:
        # once terminated, later SIGTERMs are ignored until the process has ended (Python
        # puts its own handlers back to the default while it shuts down; SIG_IGN stays)
        signal.signal(signal.SIGTERM, signal.SIG_IGN if fired else old)


def run(args) -> int:
    done: list[bool] = []
    with _sigterm_as_interrupt() as fired:
        try:
            return _run(args, done)
        except BaseException as exc:
            # a C extension interrupted in its import or call may re-raise the interrupt as
            # another error (onnxruntime: ImportError "initialization failed"): the signal wins
            term = bool(fired)
            if not (term or isinstance(exc, KeyboardInterrupt)):
                raise
            what = "terminated (SIGTERM)" if term else "interrupted"
            left = "" if done else f"; {args.out} was left as it was"
            print(f"edge-fer calibrate: {what}{left}", file=sys.stderr, flush=True)
            return 128 + (signal.SIGTERM if term else signal.SIGINT)


def _run(args, done: list) -> int:
    from pathlib import Path

    from edge_fer.errors import UserError

    # flags checked before any work (the library names its parameters, not these flags)
    _given_only_where_used(args)
    if args.every < 1:
        raise UserError("--every must be at least 1")
    if args.max_frames is not None and args.max_frames < 1:  # 0 read no frame at all
        raise UserError(f"--max-frames must be at least 1, got {args.max_frames}")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if not 50.0 < args.percentile <= 100.0:  # also the report's comparison uses it
        raise UserError(f"--percentile must be in (50, 100], got {args.percentile}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: exists and is not a folder")
    from edge_fer.fileio import check_outside
    from edge_fer.quantize.pipeline import output_lock

    why = "its models and report would become part of the data"
    check_outside([("--out", args.out)], args.data, "--data", why)
    if args.source and os.path.isdir(args.source):
        check_outside([("--out", args.out)], args.source, "--source", why)
    # a second calibration into --out is refused before the faces are collected (minutes);
    # before, both wrote it, each having found no earlier outputs there
    with output_lock(args.out):
        return _run_locked(args, done)


def _run_locked(args, done: list) -> int:
    # FFmpeg's own log lines: quiet once --source imports edge_fer.runtime.sources (its policy)
    from edge_fer.classify import Classifier, default_model_path
    from edge_fer.errors import UserError
    from edge_fer.quantize.pipeline import check_earlier_outputs

    check_earlier_outputs(args.out, args.force)  # before the faces are collected (minutes)
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"calibrate needs the onnx package: python3 -m pip install '.[quantize]' in the edge-fer checkout ({exc})"
        ) from None
    from edge_fer.quantize import calibrate

    model = args.model or default_model_path()
    with Classifier.load(model, threads=1, tta="none") as clf:  # fail early on a bad model
        spec = clf.spec
    faces = _faces(args, spec)
    bar = Progress(len(faces), "calibrating", "face", not args.no_progress)
    try:
        info = calibrate(
            model,
            faces,
            args.out,
            method=args.method,
            percentile=args.percentile,
            target=args.target,
            trt_version=args.trt_version,
            batch_size=args.batch_size,
            threads=args.threads or 0,
            min_faces=args.min_faces,
            progress=bar.update,
            keep_histograms=args.keep_histograms,
            force=args.force,
        )
    finally:
        bar.close()
    done.append(True)
    _warn_about(args)  # once it worked: a refusal stays one line
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    agree = ", ".join(f"{k} {v:.3f}" for k, v in info["agreement_with_fp32"].items())
    print(
        f"calibrated {info['model']} on {info['faces']} faces ({faces.source}), "
        f"method {info['method']}, {info['tensors']} tensors, {info['seconds']:.1f} s"
    )
    for k, v in info["files"].items():
        print(f"  {k:<10} {v}")
    print(f"  cache header {info['trt_cache_header']}")
    if agree:
        print(f"  top-1 agreement with FP32 on the calibration faces: {agree}")
    for note in info["notes"]:
        print(f"  note: {note}")
    if info["skipped_entries"]:  # the note counts them; these are the files (the first ones)
        from edge_fer.data.faceset import skipped_text

        print(f"  skipped: {skipped_text(info['skipped_entries'], faces.skipped)}")
    return 0
