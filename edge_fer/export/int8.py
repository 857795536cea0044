"""The one-line INT8 flow behind `edge-fer export --int8`: calibrate, check, report.

    edge-fer export --model fer.onnx --int8 --data ../shared/data/fer2013

1. calibration faces (a dataset's Training split, or faces the detector finds in a video or image
   folder) -> `edge_fer.quantize.calibrate`: Q/DQ models for TensorRT and for ONNX Runtime CPU,
   the TensorRT calibration cache, the ranges report, the ids of the faces used;
2. the accuracy check: FP32 and every INT8 model on a labelled evaluation split (FER2013
   PrivateTest by default), one view per face, with latency at batch 1 and 32
   (`edge_fer.compress.report`);
3. the compression report (report.md + report.json) and a pass/fail line per INT8 model
   against --max-drop accuracy points.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from edge_fer.errors import UserError
from edge_fer.fileio import check_collisions, portable_path

ROW_NAMES = {"tensorrt": "INT8 PTQ, TensorRT Q/DQ", "cpu": "INT8 PTQ, ONNX Runtime CPU Q/DQ"}


def export_int8(
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    faces,
    eval_data: str | os.PathLike | None = None,
    eval_split: str | None = None,
    method: str = "entropy",
    target: str = "both",
    trt_version: str = "10.3.0",
    threads: int = 1,
    max_drop: float = 0.5,
    eval_limit: int = 0,
    progress=None,
    show_progress: bool = True,
    force: bool = False,
    skip_bad: bool = False,
) -> dict:
    """Calibrate `model_path` on `faces` (edge_fer.quantize.CalibFaces) into out_dir, then
    compare FP32 and INT8 on `eval_data`. Returns {"calibration", "report", "checks", "ok"}.
    skip_bad: skip the bad entries of `eval_data` instead of stopping (the report's setup
    counts and names them); the calibration faces were read with their own setting."""
    from edge_fer.quantize import calibrate

    if not 0 <= max_drop < math.inf:
        raise UserError(
            f"must be >= 0 and finite (accuracy points), got {max_drop}", param="max_drop"
        )
    if eval_limit < 0:
        raise UserError(f"must be >= 0 (0: every face), got {eval_limit}", param="eval_limit")
    # the report lands beside the calibration outputs: it may not replace the model either
    check_collisions(
        [("the report", Path(out_dir) / n) for n in REPORT_NAMES],
        [("the model", model_path)],
    )
    check_int8_out(out_dir, force, eval_data, eval_split)
    info = calibrate(
        model_path,
        faces,
        out_dir,
        method=method,
        target=target,
        trt_version=trt_version,
        threads=threads,
        progress=progress,
        force=force,  # an earlier calibration there is replaced only when asked
    )
    # an earlier report (replaced only with force, checked above) describes the models just
    # replaced: gone now, so that a run stopped before its own report leaves no stale one
    for name in REPORT_NAMES:
        try:
            (Path(out_dir) / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise UserError(f"cannot remove the earlier {Path(out_dir) / name}: {exc}") from None
    result: dict = {"calibration": info, "report": None, "checks": [], "ok": True}
    if eval_data is None:
        return result
    try:
        from edge_fer.compress.report import compare_models, write_report
    except ImportError as exc:  # pragma: no cover - part of the package
        raise UserError(f"the compression report is unavailable ({exc})") from None
    rows = [("FP32", str(model_path))]
    rows += [(ROW_NAMES[t], info["files"][t]) for t in ("tensorrt", "cpu") if t in info["files"]]
    comp = compare_models(
        rows,
        eval_data,
        split=eval_split,
        threads=threads,
        eval_limit=eval_limit,
        progress=show_progress,
        skip_bad=bool(skip_bad),
    )
    fp32 = comp["rows"][0]
    checks = []
    for row in comp["rows"][1:]:
        drop = 100.0 * (fp32["accuracy"] - row["accuracy"])
        speed = (fp32.get("ms_b32") or 0) / row["ms_b32"] if row.get("ms_b32") else None
        checks.append(
            {
                "model": row["model"],
                "accuracy_drop_points": round(drop, 3),
                "max_drop_points": max_drop,
                "ok": drop <= max_drop,
                "speedup_b32": round(speed, 3) if speed else None,
            }
        )
    notes = [
        (
            f"calibration: {info['faces']} faces, method {info['method']}; "
            f"TensorRT cache header {info['trt_cache_header']}"
        ),
        (
            "the TensorRT Q/DQ model is laid out for TensorRT's fusions; ONNX Runtime on CPU runs "
            "it slower than FP32 (its integer kernels need the CPU layout)"
        ),
    ]
    notes += [
        f"check {c['model']}: accuracy {-c['accuracy_drop_points']:+.2f} points vs FP32 "
        f"(limit -{max_drop}): {'ok' if c['ok'] else 'FAILED'}"
        for c in checks
    ]
    # the report ships: no local absolute path in it, as calibrate records them
    shipped = dict(info, model=portable_path(info["model"]), out=portable_path(info["out"]))
    shipped["files"] = {k: portable_path(v) for k, v in info["files"].items()}
    setup = dict(comp["setup"], data=portable_path(eval_data))
    md, js = write_report(
        out_dir,
        dict(comp, setup=setup),
        "INT8 export report",
        extra={"calibration": shipped},
        notes=notes,
    )
    result.update(
        report={"markdown": str(md), "json": str(js), **comp},
        checks=checks,
        ok=all(c["ok"] for c in checks),
    )
    return result


REPORT_NAMES = ("report.md", "report.json")  # beside the calibration outputs


def check_int8_out(
    out_dir: str | os.PathLike,
    force: bool,
    eval_data: str | os.PathLike | None = None,
    eval_split: str | None = None,
) -> None:
    """What `export_int8` would refuse after minutes of work, checked first: an earlier
    calibration or report in `out_dir` without `force` (a pruning run's report was replaced),
    an evaluation split or dataset that cannot be read (the calibration was left behind)."""
    from edge_fer.data.faceset import check_split
    from edge_fer.quantize.pipeline import check_earlier_outputs

    check_earlier_outputs(out_dir, force)
    check_earlier_outputs(out_dir, force, REPORT_NAMES, "the report")
    if eval_split is not None:
        check_split(eval_split, "eval_split")
    if eval_data is not None and not Path(eval_data).exists():
        raise UserError(f"{eval_data}: no such dataset", param="eval_data")


def default_out_dir(model_path: str | os.PathLike) -> Path:
    """`x.onnx` -> `x_int8/` next to it (the bundled model: ./fer_default_int8/)."""
    p = Path(model_path)
    from edge_fer.classify import ASSETS

    base = Path.cwd() if p.resolve().parent == ASSETS else p.parent
    return base / f"{p.stem}_int8"
