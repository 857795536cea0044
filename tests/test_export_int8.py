"""`edge-fer export --int8`: the one-line flow (calibrate, check against FP32, report) on the
bundled model and real FER2013 faces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from paths import FER, FER_MODEL, ROOT

from edge_fer.cli.main import main

needs_fer = pytest.mark.shared("data/fer2013/train")
pytest.importorskip("onnx")


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["export", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


@needs_fer
def test_int8_one_line_flow(tmp_path, capsys) -> None:
    out = tmp_path / "int8"
    # on 200 faces one face is 0.5 points, the default --max-drop: the check's bar here is the
    # 3 points asserted below, so the flow, not a face's luck, decides the exit code
    rc, stdout, err = _run(
        capsys,
        "--int8",
        "--data",
        FER,
        "--samples",
        128,
        "--eval-limit",
        200,
        "--int8-out",
        out,
        "--max-drop",
        3,
    )
    assert rc == 0, err
    for name in (
        "model.int8.qdq.onnx",
        "model.int8.cpu.onnx",
        "calib.cache",
        "calib_ids.txt",
        "calib_report.json",
        "report.md",
        "report.json",
    ):
        assert (out / name).is_file(), name
    rep = json.loads((out / "report.json").read_text())
    names = [r["model"] for r in rep["rows"]]
    assert names[0] == "FP32" and len(names) == 3
    fp32 = rep["rows"][0]
    for row in rep["rows"]:
        assert row["n"] == 200 and 0.4 < row["accuracy"] <= 1.0 and row["ms_b32"] > 0
        assert abs(row["accuracy"] - fp32["accuracy"]) <= 0.03  # INT8 stays close to FP32
    assert (out / "calib.cache").read_bytes().startswith(b"TRT-100300-EntropyCalibration2\n")
    assert "check INT8 PTQ" in stdout and "FAILED" not in stdout


def test_int8_bad_input_is_one_line(tmp_path, capsys) -> None:
    rc, _, err = _run(capsys, "--int8")
    assert rc == 2 and "needs calibration faces" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _run(capsys, "--model", tmp_path / "nope.onnx", "--int8", "--data", tmp_path)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    rc, _, err = _run(capsys, "--out", tmp_path / "x.onnx")
    assert rc == 2 and "--checkpoint" in err
    rc, _, err = _run(capsys, "--model", tmp_path / "m.onnx", "--out", tmp_path / "x.onnx")
    assert rc == 2 and "--int8" in err


def test_int8_refuses_before_any_work(tmp_path, capsys) -> None:
    """Refusals that came after the calibration (or never): an existing report replaced
    without --force, an unknown --eval-split leaving a calibrated folder, --out ignored."""
    from paths import FER_MODEL

    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "pruned"
    out.mkdir()
    (out / "report.md").write_text("# edge-fer prune report")
    base = ["--model", FER_MODEL, "--int8", "--data", data]
    rc, _, err = _run(capsys, *base, "--int8-out", out)
    assert rc == 2 and err.count("\n") == 1, err
    assert "--force is needed to replace the report in" in err
    assert (out / "report.md").read_text() == "# edge-fer prune report"
    rc, _, err = _run(capsys, *base, "--int8-out", tmp_path / "new", "--eval-split", "bogus")
    assert rc == 2 and "--eval-split" in err and "unknown split" in err, err
    rc, _, err = _run(capsys, *base, "--out", tmp_path / "foo.onnx")
    assert rc == 2 and "--int8-out" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "pruned"]


@needs_fer
def test_a_replaced_calibration_takes_the_earlier_report_away(tmp_path, capsys) -> None:
    """`export --int8 --force` stopped after its new calibration (during the check) left the
    earlier report.md/json, whose figures and PASS lines were another calibration's models."""
    from edge_fer.classify import default_model_path
    from edge_fer.export.int8 import export_int8
    from edge_fer.quantize.calib_data import from_dataset

    out = tmp_path / "int8"
    rc, _, err = _run(capsys, "--int8", "--data", FER, "--samples", 128, "--eval-limit", 50,
                      "--int8-out", out, "--max-drop", 100)  # fmt: skip
    assert rc == 0 and (out / "report.json").is_file(), err
    # the same folder again, as a run that stops before its own report: no check data
    faces = from_dataset(FER, "train", 128, 3, size=48)
    export_int8(default_model_path(), out, faces, force=True, show_progress=False)
    assert (out / "model.int8.qdq.onnx").is_file()
    assert not (out / "report.json").exists() and not (out / "report.md").exists()


@pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
def test_int8_report_records_no_absolute_path(tmp_path, capsys) -> None:
    out = tmp_path / "i8r"  # absolute, outside the working folder: by name
    rc, _, err = _run(
        capsys, "--int8", "--data", FER, "--int8-out", out, "--samples", 128,
        "--eval-limit", 50, "--target", "cpu", "--max-drop", 100,
    )  # fmt: skip
    assert rc == 0, err
    text = (out / "report.json").read_text() + (out / "report.md").read_text()
    for local in (str(FER), str(tmp_path), str(ROOT)):
        assert local not in text, local
    rep = json.loads((out / "report.json").read_text())
    assert rep["setup"]["data"] == "fer2013"
    cal = rep["calibration"]
    assert cal["model"].endswith(FER_MODEL.name) and not Path(cal["model"]).is_absolute()
    assert cal["out"] == "i8r"
    assert cal["files"]["cpu"] == "model.int8.cpu.onnx"
