"""`calibrate()`: calibration faces + FP32 model -> INT8 Q/DQ model, TensorRT cache, report.

    from edge_fer.quantize import calibrate, from_dataset
    faces = from_dataset("../shared/data/fer2013", "train", samples=512, seed=0)
    info = calibrate("model.onnx", faces, method="entropy", out_dir="int8/")

Outputs (in out_dir): model.int8.qdq.onnx (TensorRT layout), model.int8.cpu.onnx (ONNX Runtime
CPU layout), calib.cache (TensorRT calibration cache), calib_report.json, calib_ids.txt, and
with keep_histograms calib_histograms.npz (the kept histograms: `ranges.Collection.load`).

One pass over the faces (`ranges.collect`) keeps every tensor's histogram; the chosen method's
ranges and the report's comparison of all methods are computed from it (`ranges.compute`).
Nothing in out_dir is touched until every output is complete (the Q/DQ models are made in a
temporary folder, removed on every exit path); the outputs are then written with
`edge_fer.fileio` (each atomically), and if that fails or is interrupted, what was there
before is put back: out_dir holds the previous outputs or all the new ones (and no out_dir is
left behind if it did not exist). out_dir is locked while a calibration works on it
(`output_lock`): a second process calibrating into it is refused at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from edge_fer import fileio
from edge_fer.errors import UserError
from edge_fer.fileio import check_collisions
from edge_fer.limits import check_count
from edge_fer.quantize import qdq, ranges, report, trt_cache
from edge_fer.quantize.calib_data import (
    MIN_FACES,
    CalibFaces,
    FaceBatchReader,
    aligned_for,
    check_faces,
)

QDQ_NAME = "model.int8.qdq.onnx"
CPU_NAME = "model.int8.cpu.onnx"
CACHE_NAME = "calib.cache"
REPORT_NAME = "calib_report.json"
IDS_NAME = "calib_ids.txt"
HIST_NAME = "calib_histograms.npz"
OUT_NAMES = (QDQ_NAME, CPU_NAME, CACHE_NAME, REPORT_NAME, IDS_NAME, HIST_NAME)  # all it may write
TARGET_CHOICES = ("tensorrt", "cpu", "both")


def check_earlier_outputs(
    out_dir: str | os.PathLike,
    force: bool,
    names: tuple[str, ...] = OUT_NAMES,
    what: str = "the earlier calibration",
) -> None:
    """UserError (param `force`) when `out_dir` holds files of `names` (by default an earlier
    calibration's: a cache a deployment reads, a model already benchmarked) and `force` is
    off."""
    there = [n for n in names if (Path(out_dir) / n).is_file()]
    if there and not force:
        raise UserError(
            f"is needed to replace {what} in {out_dir} ({', '.join(there)}); "
            "or pick another folder",
            param="force",
        )


# this process's locks on output folders (real path -> [thread id, depth, FolderLock]): the
# command takes its lock before collecting the faces and `calibrate` takes it again
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()
_LOCK_WHAT = "edge-fer calibrate"


@contextlib.contextmanager
def output_lock(out_dir: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the output folder `out_dir` (`fileio.FolderLock`) while the
    block runs: two calibrations into one folder mixed their files, each having found no
    earlier outputs (so no --force was needed) before the other wrote. The second is refused
    at once (UserError). The folder and the missing ones above it are made for the lock, and
    removed again when they are still empty at the end (a failed or interrupted calibration
    leaves no folder behind). Taken again by the same thread, it is held until the outermost
    block ends."""
    out = Path(out_dir)
    made = _make_folders(out)
    key = os.path.realpath(out)
    me = threading.get_ident()
    # refused: the folder is left as it is (made here or not, the other calibration has it)
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is None:
            _HELD[key] = [me, 1, fileio.FolderLock(out, _LOCK_WHAT)]
        elif held[0] == me:
            held[1] += 1
        else:  # another thread of this process: as another process would be told
            raise UserError(
                f"{os.fspath(out)}: another {_LOCK_WHAT} is writing this folder right now; "
                "wait for it to end or give another folder"
            )
    try:
        yield
    finally:
        with _HELD_GUARD:
            held = _HELD[key]
            held[1] -= 1
            if held[1] == 0:
                del _HELD[key]
                _remove_empty(made)  # before the lock goes: no other process is in it yet
                held[2].release()


def _make_folders(out: Path) -> list[Path]:
    """Make `out` and the missing folders above it; those this call made, outermost first."""
    missing = []
    q = out
    while not (q.exists() or q.is_symlink()) and q != q.parent:
        missing.append(q)
        q = q.parent
    made: list[Path] = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:  # another process made it meanwhile: not ours to remove
            continue
        except OSError as exc:
            _remove_empty(made)
            reason = fileio.os_error_reason(exc)
            raise UserError(f"{out}: cannot create the folder ({reason})") from None
        made.append(d)
    return made


def _remove_empty(made: list[Path]) -> None:
    for d in reversed(made):
        try:
            d.rmdir()  # only when empty: a finished calibration's folder stays
        except OSError:
            return


def _targets(target: str) -> list[str]:
    if target not in TARGET_CHOICES:
        raise UserError(f"unknown target {target!r}; choose {', '.join(TARGET_CHOICES)}")
    return ["tensorrt", "cpu"] if target == "both" else [target]


def calibrate(
    model_path: str | os.PathLike | None,
    faces: CalibFaces,
    out_dir: str | os.PathLike,
    method: str = "entropy",
    percentile: float | None = None,
    target: str = "both",
    trt_version: str | int = trt_cache.DEFAULT_TRT_VERSION,
    batch_size: int = 32,
    threads: int = 1,
    min_faces: int = MIN_FACES,
    check_agreement: bool = True,
    progress: Callable[[int], None] | None = None,
    keep_histograms: bool = False,
    force: bool = False,
) -> dict:
    """Calibrate `model_path` (default: the bundled model) on `faces`; write the outputs to
    `out_dir`; an earlier calibration's files there are replaced only with `force`. Returns a
    summary dict (paths, sizes, method, agreement with FP32 on the calibration faces). A model
    with a fixed batch size N is fed batches of N whatever `batch_size` says.
    UserError for bad input; nothing is left behind then. For a model trained on eye-aligned
    faces, faces not aligned yet are aligned first (`aligned_for`). `out_dir` is locked while
    this runs (`output_lock`)."""
    from edge_fer.classify import default_model_path

    t0 = time.perf_counter()
    targets = _targets(target)
    trt_code = trt_cache.version_code(trt_version)
    check_count(batch_size, "batch_size")  # (min_faces: check_faces below, before any work)
    # checked before the pass, not after: the percentile also serves the report's comparison
    percentile_used = ranges.check_method(method, percentile)
    compare_at = ranges.check_method("percentile", percentile)
    mpath = Path(model_path) if model_path is not None else default_model_path()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    names = list(OUT_NAMES)
    for name in names:
        if (out / name).is_dir():
            raise UserError(f"{out}: {name} is a folder; cannot write the output there")
    # the model may lie in the output folder under one of these names (a re-calibration)
    check_collisions([("the output", out / n) for n in names], [("the model", mpath)])
    with output_lock(out):  # from the check of earlier outputs to the last write
        return _calibrate(
            mpath, faces, out, t0=t0, method=method, percentile_used=percentile_used,
            compare_at=compare_at, targets=targets,
            trt_code=trt_code, batch_size=batch_size, threads=threads, min_faces=min_faces,
            check_agreement=check_agreement, progress=progress,
            keep_histograms=keep_histograms, force=force,
        )  # fmt: skip


def _calibrate(mpath: Path, faces: CalibFaces, out: Path, *, t0: float, method: str,
               percentile_used: float | None, compare_at: float | None, targets: list[str],
               trt_code: int, batch_size: int,
               threads: int, min_faces: int, check_agreement: bool,
               progress: Callable[[int], None] | None, keep_histograms: bool,
               force: bool) -> dict:  # fmt: skip
    """`calibrate`'s work, its arguments checked, with `out` locked."""
    import onnx

    from edge_fer.classify import Classifier, sniff_model_file

    check_earlier_outputs(out, force)
    check_faces(faces, min_faces)
    sniff_model_file(mpath)
    try:
        model = onnx.load(os.fspath(mpath))
    except Exception as exc:  # noqa: BLE001 - a protobuf or file error: not a model
        raise UserError(f"{mpath}: not an ONNX model ({type(exc).__name__})") from None
    qdq.check_supported(model)
    # validates model + metadata; one view per face (no test-time augmentation) throughout
    with Classifier.load(mpath, threads=threads, tta="none") as clf:
        spec = clf.spec
        faces = aligned_for(faces, spec)  # a model trained on eye-aligned faces
        input_name = model.graph.input[0].name
        # a graph with a fixed batch (dim 0 a number) takes batches of exactly that size
        fixed = (ranges.input_shape(model, input_name) or [None])[0]
        if fixed is not None:
            batch_size = fixed
        reader = FaceBatchReader(faces.images, spec, input_name, batch_size, full=bool(fixed))
        seen = ranges.collect(model, reader.batches(), threads=threads, progress=progress)
        ref = clf.predict(faces.images) if check_agreement else None
    rs = ranges.compute(seen, method, percentile_used)

    data: dict[str, bytes] = {}  # output name -> its complete content
    qinfo = {
        "method": rs.method,
        "percentile": rs.percentile,
        "calibration_faces": len(faces),
        "calibration_source": faces.source,
    }
    summaries = {}
    agreement = {}
    # the folder's name is decided before it is made, so an interrupt (SIGTERM, Ctrl-C) that
    # lands just after mkdir still finds it in `finally`; TemporaryDirectory has a window there
    work = Path(tempfile.gettempdir()) / f"edge-fer-calibrate-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        work.mkdir(mode=0o700)
        for tg in targets:
            name = QDQ_NAME if tg == "tensorrt" else CPU_NAME
            p = work / name
            one = FaceBatchReader(faces.images, spec, input_name, batch_size=fixed or 8,
                                  limit=fixed or 8, full=bool(fixed))  # fmt: skip
            summaries[tg] = qdq.quantize(mpath, rs, p, one, target=tg, info=qinfo)
            if ref is not None:
                with Classifier.load(p, threads=threads, tta="none") as qclf:
                    got = qclf.predict(faces.images)
                agreement[tg] = float((got.argmax(1) == ref.argmax(1)).mean())
            data[name] = p.read_bytes()
    except OSError as exc:
        reason = fileio.os_error_reason(exc)
        raise UserError(f"cannot write the temporary Q/DQ models ({reason})") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cache = trt_cache.format_cache(rs.amax(), trt_code)
    data[CACHE_NAME] = cache
    files = {tg: str(out / (QDQ_NAME if tg == "tensorrt" else CPU_NAME)) for tg in targets}
    files["trt_cache"] = str(out / CACHE_NAME)
    files["ids"] = str(out / IDS_NAME)
    header = cache.split(b"\n", 1)[0].decode()
    rep = report.build(
        rs,
        faces,
        mpath,
        extra={
            "trt_cache": {
                "file": CACHE_NAME,
                "header": header,
                "tensorrt_version": trt_cache.version_text(trt_code),
            },
            "qdq_models": {tg: {"file": Path(files[tg]).name, **summaries[tg]} for tg in targets},
            "agreement_with_fp32_on_calibration_faces": agreement,
        },
    )
    rep["calibration_set"]["ids_file"] = IDS_NAME
    rep["methods_compared"] = report.compare(seen, compare_at)
    data[REPORT_NAME] = (fileio.dumps(rep, indent=2) + "\n").encode()
    # surrogateescape: a file name that is not UTF-8 was a UnicodeEncodeError after the work
    data[IDS_NAME] = report.ids_text(faces).encode("utf-8", "surrogateescape")
    if keep_histograms:
        data[HIST_NAME] = seen.to_npz()
        files["histograms"] = str(out / HIST_NAME)
    try:
        _publish(out, data)
    except OSError as exc:
        raise UserError(f"{out}: cannot write ({fileio.os_error_reason(exc)})") from None
    return {
        "model": str(mpath),
        "out": str(out),
        "files": files,
        "method": rs.method,
        "percentile": rs.percentile,
        "faces": len(faces),
        "tensors": len(rs.tensors),
        "trt_cache_header": header,
        "quantized_ops": {tg: s["quantized_ops"] for tg, s in summaries.items()},
        "agreement_with_fp32": agreement,
        "notes": list(faces.notes),  # the calibration set's, eye alignment included
        "skipped_entries": list(faces.skipped_entries),  # (skip_bad) the first ones, named
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _publish(out: Path, data: dict[str, bytes]) -> None:
    """Write every output, and remove an earlier calibration's outputs this one does not write
    (another --target, no histograms: they would sit beside the new ones as if of this model),
    as one set (edge_fer.fileio.write_together): a failure or an interrupt leaves the earlier
    set as it was, and a folder this call made is removed again."""
    fileio.write_together(
        [(out / name, content) for name, content in data.items()],
        remove=[out / name for name in OUT_NAMES if name not in data],
        folder=out,
    )
