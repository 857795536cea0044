"""Fixes from QA: a relative --source of `deploy deepstream`, the messages of qat/prune for a
model that is not ONNX or has no metadata, and no local absolute path in `export --int8`'s
report."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
from paths import FER, FER_MODEL, ROOT

from edge_fer.cli.main import main
from edge_fer.errors import UserError


def _cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# ---- deploy deepstream --source -------------------------------------------------------------


@pytest.mark.parametrize("source", ["clips/lobby.mp4", "file://clips/lobby.mp4"])
def test_deepstream_refuses_a_relative_source_to_no_file(
    tmp_path, capsys, monkeypatch, source
) -> None:
    """'file://clips/lobby.mp4' names host 'clips': GStreamer and urlparse read no path."""
    monkeypatch.chdir(tmp_path)
    rc, _, err = _cli(capsys, "deploy", "deepstream", "--out", "dsv", "--source", source)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert source in err and "absolute path" in err and "file:///" in err, err
    assert not (tmp_path / "dsv").exists()


def test_deepstream_relative_source_to_a_file_here_is_an_absolute_uri(
    tmp_path, capsys, monkeypatch
) -> None:
    import configparser
    import importlib.util

    monkeypatch.chdir(tmp_path)
    clip = tmp_path / "clips" / "lobby.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"a clip")
    rc, _, err = _cli(capsys, "deploy", "deepstream", "--out", "dsv", "--source", "clips/lobby.mp4")
    assert rc == 0, err
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(tmp_path / "dsv" / "deepstream_app_fer.txt", encoding="utf-8")
    uri = cp["source0"]["uri"]
    assert uri == clip.as_uri() and urlparse(uri).netloc == "" and urlparse(uri).path == str(clip)
    spec = importlib.util.spec_from_file_location(
        "fer_probe_rel", tmp_path / "dsv" / "fer_probe.py"
    )
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    assert probe.SOURCE["uri"] == uri


# ---- qat / prune --model --------------------------------------------------------------------


def test_compress_source_that_is_not_onnx_is_a_bad_checkpoint(tmp_path) -> None:
    from edge_fer.compress.io import load_source

    for name in ("junk.safetensors", "junk.pt"):
        junk = tmp_path / name
        junk.write_bytes(b"junk\n")
        with pytest.raises(UserError, match="not an edge-fer checkpoint") as e:
            load_source(junk)
        assert str(e.value).startswith(f"{junk}: ")
    junk = tmp_path / "junk.onnx"  # named ONNX: still "not an ONNX model"
    junk.write_bytes(b"junk\n")
    with pytest.raises(UserError, match="not an ONNX model"):
        load_source(junk)


def test_compress_source_without_metadata_names_the_file(tmp_path) -> None:
    import onnx

    from edge_fer.compress.io import load_source

    proto = onnx.load(str(FER_MODEL))
    del proto.metadata_props[:]
    nometa = tmp_path / "nometa.onnx"
    onnx.save(proto, str(nometa))
    with pytest.raises(UserError, match="no edge_fer preprocessing metadata") as e:
        load_source(nometa)
    assert str(e.value).startswith(f"{nometa}: ")


@pytest.mark.shared("data/fer2013/train")
def test_qat_cli_junk_safetensors(tmp_path, capsys) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk\n")
    rc, _, err = _cli(capsys, "qat", "--data", FER, "--out", tmp_path / "q2", "--model", junk)
    assert rc == 2 and "not an edge-fer checkpoint" in err and "ONNX" not in err, err


# ---- export --int8 report -------------------------------------------------------------------


@pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
def test_int8_report_records_no_absolute_path(tmp_path, capsys) -> None:
    out = tmp_path / "i8r"  # absolute, outside the working folder: by name
    rc, _, err = _cli(
        capsys, "export", "--int8", "--data", FER, "--int8-out", out, "--samples", 128,
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


def test_run_tensorrt_with_the_bundled_int8_model_names_what_works(capsys) -> None:
    """`run --backend tensorrt --precision int8` pointed at export/README.md; the option that
    gives INT8 on TensorRT is --trt-precision int8."""
    from edge_fer.cli.main import main

    rc = main(["run", "--backend", "tensorrt", "--precision", "int8", "x.avi"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--trt-precision int8" in err[0], err
