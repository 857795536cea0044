"""`calibrate()`: calibration faces + FP32 model -> INT8 Q/DQ model, TensorRT cache, report.

    from edge_fer.quantize import calibrate, from_dataset
    faces = from_dataset("../shared/data/fer2013", "train", samples=512, seed=0)
    info = calibrate("model.onnx", faces, method="entropy", out_dir="int8/")

Outputs (in out_dir): model.int8.qdq.onnx (TensorRT layout), model.int8.cpu.onnx (ONNX Runtime
CPU layout), calib.cache (TensorRT calibration cache), calib_report.json, calib_ids.txt. Every
file is written under a temporary name and renamed only once all of them are complete, so an
error leaves nothing half-written behind (and no out_dir, if it did not exist before).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from edge_fer.errors import UserError
from edge_fer.quantize import qdq, ranges, report, trt_cache
from edge_fer.quantize.calib_data import MIN_FACES, CalibFaces, FaceBatchReader, check_faces

QDQ_NAME = "model.int8.qdq.onnx"
CPU_NAME = "model.int8.cpu.onnx"
CACHE_NAME = "calib.cache"
REPORT_NAME = "calib_report.json"
IDS_NAME = "calib_ids.txt"
TARGET_CHOICES = ("tensorrt", "cpu", "both")


def _targets(target: str) -> list[str]:
    if target not in TARGET_CHOICES:
        raise UserError(f"unknown --target {target!r}; choose {', '.join(TARGET_CHOICES)}")
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
) -> dict:
    """Calibrate `model_path` (default: the bundled model) on `faces`; write the outputs to
    `out_dir`. Returns a summary dict (paths, sizes, method, agreement with FP32 on the
    calibration faces). UserError for bad input; nothing is left behind then."""
    import onnx

    from edge_fer.classify import Classifier, default_model_path, sniff_model_file

    t0 = time.perf_counter()
    targets = _targets(target)
    trt_code = trt_cache.version_code(trt_version)
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    mpath = Path(model_path) if model_path is not None else default_model_path()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    for name in (QDQ_NAME, CPU_NAME, CACHE_NAME, REPORT_NAME, IDS_NAME):
        if (out / name).is_dir():
            raise UserError(f"--out {out}: {name} is a folder; cannot write the output there")
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
        input_name = model.graph.input[0].name
        reader = FaceBatchReader(faces.images, spec, input_name, batch_size)
        rs = ranges.collect(
            model, reader.batches(), method=method, percentile=percentile, threads=threads,
            progress=progress,
        )  # fmt: skip
        ref = clf.predict(faces.images) if check_agreement else None

    created = not out.exists()
    tmp: dict[str, Path] = {}
    final: dict[str, Path] = {}
    done = False

    def stage(name: str) -> Path:
        p = out / f".{name}.{os.getpid()}.tmp"
        tmp[name] = p
        final[name] = out / name
        return p

    try:
        out.mkdir(parents=True, exist_ok=True)
        qinfo = {
            "method": rs.method,
            "percentile": rs.percentile,
            "calibration_faces": len(faces),
            "calibration_source": faces.source,
        }
        summaries = {}
        agreement = {}
        for tg in targets:
            name = QDQ_NAME if tg == "tensorrt" else CPU_NAME
            p = stage(name)
            one = FaceBatchReader(faces.images, spec, input_name, batch_size=8, limit=8)
            summaries[tg] = qdq.quantize(mpath, rs, p, one, target=tg, info=qinfo)
            if ref is not None:
                with Classifier.load(p, threads=threads, tta="none") as qclf:
                    got = qclf.predict(faces.images)
                agreement[tg] = float((got.argmax(1) == ref.argmax(1)).mean())
        cache = trt_cache.format_cache(rs.amax(), trt_code)
        stage(CACHE_NAME).write_bytes(cache)
        files = {tg: str(final[QDQ_NAME if tg == "tensorrt" else CPU_NAME]) for tg in targets}
        files["trt_cache"] = str(final[CACHE_NAME])
        files["ids"] = str(out / IDS_NAME)
        rep = report.build(
            rs, faces, mpath,
            extra={
                "trt_cache": {"file": CACHE_NAME, "header": cache.split(b"\n", 1)[0].decode(),
                              "tensorrt_version": trt_cache.version_text(trt_code)},
                "qdq_models": {tg: {"file": Path(files[tg]).name, **summaries[tg]}
                               for tg in targets},
                "agreement_with_fp32_on_calibration_faces": agreement,
            },
        )  # fmt: skip
        rep["calibration_set"]["ids_file"] = IDS_NAME
        stage(REPORT_NAME).write_text(json.dumps(rep, indent=2) + "\n")
        stage(IDS_NAME).write_text(report.ids_text(faces))
        for name, p in tmp.items():  # everything is complete: publish
            os.replace(p, final[name])
        done = True
    except OSError as exc:
        raise UserError(f"{out}: cannot write ({exc.strerror or exc})") from None
    finally:
        if not done:
            for p in tmp.values():
                try:
                    p.unlink()
                except OSError:
                    pass
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
    return {
        "model": str(mpath),
        "out": str(out),
        "files": files,
        "method": rs.method,
        "percentile": rs.percentile,
        "faces": len(faces),
        "tensors": len(rs.tensors),
        "trt_cache_header": rep["trt_cache"]["header"],
        "quantized_ops": {tg: s["quantized_ops"] for tg, s in summaries.items()},
        "agreement_with_fp32": agreement,
        "seconds": round(time.perf_counter() - t0, 2),
    }
