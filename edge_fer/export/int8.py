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

import json
import math
import os
from pathlib import Path

from edge_fer.errors import UserError
from edge_fer.fileio import check_collisions, portable_path

ROW_NAMES = {"tensorrt": "INT8 PTQ, TensorRT Q/DQ", "cpu": "INT8 PTQ, ONNX Runtime CPU Q/DQ"}
# export has no --label-set/--classes: the advice names what it accepts
VOCAB_ADVICE = (
    "give --eval-data a dataset whose classes the model knows, or score the INT8 models with "
    "edge-fer eval, which maps other vocabularies"
)


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
    model_out: str | os.PathLike | None = None,
) -> dict:
    """Calibrate `model_path` on `faces` (edge_fer.quantize.CalibFaces) into out_dir, then
    compare FP32 and INT8 on `eval_data`. Returns {"calibration", "report", "checks", "ok"}.
    skip_bad: skip the bad entries of `eval_data` instead of stopping (the report's setup
    counts and names them); the calibration faces were read with their own setting.

    Nothing in out_dir changes until every output, the report included, is ready: they are
    made in a private folder and then published together (as `calibrate` publishes), so a
    failure or an interrupt leaves an earlier set as it was, and no new out_dir.
    model_out: where the FP32 model `model_path` (a staged copy: `export --checkpoint --int8`)
    is written, with the set, all or none; the reports name it in place of model_path."""
    import shutil
    import tempfile

    from edge_fer.quantize.pipeline import check_earlier_outputs, output_lock

    if not 0 <= max_drop < math.inf:
        raise UserError(
            f"must be >= 0 and finite (accuracy points), got {max_drop}", param="max_drop"
        )
    if eval_limit < 0:
        raise UserError(f"must be >= 0 (0: every face), got {eval_limit}", param="eval_limit")
    shown = Path(model_out if model_out is not None else model_path)
    # before: a missing eval split was found after the new calibration had replaced the old
    check_int8_out(out_dir, force, eval_data, eval_split, model=shown, skip_bad=skip_bad,
                   classes=model_classes(model_path))  # fmt: skip
    out = Path(out_dir)
    with output_lock(out):  # a new out_dir is removed again when nothing is published
        check_earlier_outputs(out, force)  # (again: another run may have written meanwhile)
        # named before it is made: an interrupt just after the mkdir still finds it
        stage = Path(tempfile.gettempdir()) / f"edge-fer-int8-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            result, data = _int8_set(
                model_path, stage, shown, out, faces, eval_data=eval_data,
                eval_split=eval_split, method=method, target=target, trt_version=trt_version,
                threads=threads, max_drop=max_drop, eval_limit=eval_limit, progress=progress,
                show_progress=show_progress, skip_bad=skip_bad,
            )  # fmt: skip
            model = Path(model_path).read_bytes() if model_out is not None else None
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        _publish_set(out, data, model_out, model)
    return result


def _int8_set(model_path, stage: Path, shown: Path, out: Path, faces, *, eval_data, eval_split,
              method, target, trt_version, threads, max_drop, eval_limit, progress,
              show_progress, skip_bad) -> tuple[dict, dict[str, bytes]]:  # fmt: skip
    """`export_int8`'s work in the folder `stage`: (its result, with the paths it will have in
    `out`, model_path named `shown`; {output name: content})."""
    from edge_fer.fileio import dumps
    from edge_fer.quantize import calibrate
    from edge_fer.quantize.pipeline import REPORT_NAME

    info = calibrate(
        model_path,
        faces,
        stage,
        method=method,
        target=target,
        trt_version=trt_version,
        threads=threads,
        progress=progress,
    )
    staged = dict(info["files"])
    # the paths the outputs will have, and the model they are of
    info = dict(info, model=str(shown), out=str(out))
    info["files"] = {k: str(out / Path(v).name) for k, v in staged.items()}
    result: dict = {"calibration": info, "report": None, "checks": [], "ok": True}
    if eval_data is not None:
        _report(model_path, stage, shown, out, info, staged, result, eval_data=eval_data,
                eval_split=eval_split, threads=threads, max_drop=max_drop,
                eval_limit=eval_limit, show_progress=show_progress, skip_bad=skip_bad)  # fmt: skip
    data = {p.name: p.read_bytes() for p in sorted(stage.iterdir()) if p.is_file()}
    if Path(model_path) != shown:  # the calibration report names the model published
        rep = json.loads(data[REPORT_NAME])
        rep["model"]["path"] = portable_path(shown)
        data[REPORT_NAME] = (dumps(rep, indent=2) + "\n").encode()
    return result, data


def _report(model_path, stage: Path, shown: Path, out: Path, info: dict, staged: dict,
            result: dict, *, eval_data, eval_split, threads, max_drop, eval_limit,
            show_progress, skip_bad) -> None:  # fmt: skip
    """The accuracy check of FP32 and the INT8 models in `stage`, and its report there."""
    try:
        from edge_fer.compress.report import compare_models, write_report
    except ImportError as exc:  # pragma: no cover - part of the package
        raise UserError(f"the compression report is unavailable ({exc})") from None
    rows = [("FP32", str(model_path))]
    rows += [(ROW_NAMES[t], staged[t]) for t in ("tensorrt", "cpu") if t in staged]
    comp = compare_models(
        rows,
        eval_data,
        split=eval_split,
        threads=threads,
        eval_limit=eval_limit,
        progress=show_progress,
        skip_bad=bool(skip_bad),
        mismatch_advice=VOCAB_ADVICE,
    )
    # each row's path as it will be (measured on the staged copies)
    for row, path in zip(comp["rows"], [shown] + [info["files"][t] for t in ("tensorrt", "cpu")
                                                  if t in staged]):  # fmt: skip
        row["path"] = portable_path(path)
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
    write_report(
        stage,
        dict(comp, setup=setup),
        "INT8 export report",
        extra={"calibration": shipped},
        notes=notes,
    )
    result.update(
        report={"markdown": str(out / "report.md"), "json": str(out / "report.json"), **comp},
        checks=checks,
        ok=all(c["ok"] for c in checks),
    )


def _publish_set(out: Path, data: dict[str, bytes], model_out, model: bytes | None) -> None:
    """Write the INT8 set `data` into `out` as `calibrate` publishes its outputs (each file
    atomically; on a failure or an interrupt the files already written get their earlier
    content back), the FP32 model `model_out` first (put back too when the set fails), then
    remove an earlier report the set has none of: it described the models just replaced."""
    from edge_fer.fileio import is_stream, os_error_reason, write_bytes
    from edge_fer.quantize.pipeline import _publish

    earlier = None  # (the model's file, what it held or None when new): put back on a failure
    try:
        if model_out is not None:
            if not is_stream(model_out):  # a device or pipe: nothing to put back
                target = Path(os.path.realpath(model_out))  # a symlink's target changes
                earlier = (target, target.read_bytes() if target.is_file() else None)
            try:
                Path(model_out).parent.mkdir(parents=True, exist_ok=True)
                write_bytes(model_out, model)
            except OSError as exc:
                raise UserError(f"{model_out}: cannot write ({os_error_reason(exc)})") from None
        try:
            _publish(out, data)
        except OSError as exc:
            raise UserError(f"{out}: cannot write ({os_error_reason(exc)})") from None
    except BaseException:
        if earlier is not None:
            target, content = earlier
            try:
                if content is None:
                    target.unlink(missing_ok=True)
                else:
                    write_bytes(target, content)
            except OSError:
                pass
        raise
    for name in REPORT_NAMES:
        if name not in data:
            try:
                (out / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise UserError(f"cannot remove the earlier {out / name}: {exc}") from None


REPORT_NAMES = ("report.md", "report.json")  # beside the calibration outputs


def check_int8_out(
    out_dir: str | os.PathLike,
    force: bool,
    eval_data: str | os.PathLike | None = None,
    eval_split: str | None = None,
    model: str | os.PathLike | None = None,
    skip_bad: bool = False,
    classes: tuple[str, ...] | None = None,
) -> None:
    """What `export_int8` would refuse after minutes of work, checked first: an `out_dir` that
    is a file or has a folder where an output goes, an output over `model` (the FP32 model),
    an earlier calibration or report in `out_dir` without `force` (a pruning run's report was
    replaced), an evaluation dataset or split that cannot be read or has no faces (found after
    the calibration, it left the calibration behind), a FER2013 `eval_split` of a dataset
    without FER2013's splits (it was ignored: all its images were scored). The evaluation faces
    are loaded for that (read with `skip_bad`), which fills the dataset cache the check then
    reads. With the model's `classes`, an evaluation dataset whose classes do not map onto
    them is refused too (it failed after the calibration)."""
    from edge_fer.data.faceset import check_split
    from edge_fer.quantize.pipeline import OUT_NAMES, check_earlier_outputs

    out = Path(out_dir)
    names = OUT_NAMES + REPORT_NAMES
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    for name in names:
        if (out / name).is_dir():
            raise UserError(f"{out}: {name} is a folder; cannot write the output there")
    if model is not None:  # the model may lie in the output folder under one of these names
        check_collisions([("the output", out / n) for n in names], [("the model", model)])
    check_earlier_outputs(out, force)
    check_earlier_outputs(out, force, REPORT_NAMES, "the report")
    if eval_split is not None:
        check_split(eval_split, "eval_split")
    if eval_data is not None:
        if not Path(eval_data).exists():
            raise UserError(f"{eval_data}: no such dataset", param="eval_data")
        from edge_fer.compress.report import load_eval_faces

        # (a FER2013 split asked of another layout is refused there, named eval_split)
        faces, _ = load_eval_faces(
            eval_data, eval_split, skip_bad=bool(skip_bad), split_param="eval_split"
        )
        if classes:
            from edge_fer.evaluate import plan_vocabulary

            plan_vocabulary(faces.classes, classes, None, faces.counts(), VOCAB_ADVICE)


def model_classes(model_path: str | os.PathLike) -> tuple[str, ...] | None:
    """The classes in an ONNX model's metadata, or None when they cannot be read (loading the
    model says why, later)."""
    try:
        import onnx

        from edge_fer.preprocess import PreprocessSpec

        meta = {p.key: p.value for p in onnx.load(os.fspath(model_path)).metadata_props}
        return PreprocessSpec.from_metadata(meta).classes
    except Exception:  # noqa: BLE001 - Classifier.load reports a bad model in its own words
        return None


def default_out_dir(model_path: str | os.PathLike) -> Path:
    """`x.onnx` -> `x_int8/` next to it (the bundled model: ./fer_default_int8/)."""
    p = Path(model_path)
    from edge_fer.classify import ASSETS

    base = Path.cwd() if p.resolve().parent == ASSETS else p.parent
    return base / f"{p.stem}_int8"
