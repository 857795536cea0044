"""`edge-fer export`: what a QA pass found. --out written through devices, pipes and links; a
failed or interrupted `--int8 --force` (and `--checkpoint --int8`) leaves the earlier model and
INT8 set as they were; flags that would be ignored are refused; two messages said the wrong
thing.

The real runs use conftest's tiny FER2013 set, cnn4 run and its ONNX model (read-only), in
this process; the refusals need no data at all. Devices are private ones made in tmp_path.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import threading
from pathlib import Path

import pytest
from paths import fer_files, fer_split_folders, needs_modules
from processes import run_main, said

from edge_fer import labels as L

pytest.importorskip("onnx")
needs_fer_test = pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
needs_safetensors = needs_modules("safetensors", "torch")
INT8_FILES = ["calib.cache", "calib_ids.txt", "calib_report.json", "model.int8.cpu.onnx",
              "model.int8.qdq.onnx", "report.json", "report.md"]  # fmt: skip


def _export(capsys, *argv) -> tuple[int, str, str]:
    return run_main(["export", *argv], capsys)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def cache(tiny_fer_env, monkeypatch):
    """The session's dataset cache, for the in-process runs as for the children."""
    monkeypatch.setenv("EDGE_FER_CACHE", tiny_fer_env["EDGE_FER_CACHE"])


@pytest.fixture(scope="module")
def train_only(tmp_path_factory) -> Path:
    """A FER2013-layout dataset with Training faces only (15 per class): no PublicTest or
    PrivateTest split."""
    return fer_split_folders(tmp_path_factory.mktemp("trainonly") / "fer", {"Training": 15})


# ---- 1. --force over a device, a pipe or a symlink -----------------------------------------


@needs_fer_test
@needs_safetensors
@pytest.mark.parametrize("kind", ["device", "fifo", "symlink"])
def test_export_force_writes_through_devices_pipes_and_links(tiny_cnn4_run, tmp_path, capsys, kind):
    # before: the model was written beside --out and renamed over it: the device, the pipe or
    # the link itself became a regular file
    out = tmp_path / "out.onnx"
    got: list[bytes] = []
    if kind == "device":
        try:
            os.mknod(out, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a private null device
        except PermissionError:
            pytest.skip("making a device node needs root")
    elif kind == "fifo":
        os.mkfifo(out)
        os.link(out, tmp_path / "keep")  # to release the reader if --out is renamed over
        reader = threading.Thread(target=lambda: got.append(out.read_bytes()), daemon=True)
        reader.start()
    else:
        target = tmp_path / "models" / "real.onnx"
        target.parent.mkdir()
        target.write_bytes(b"old")
        out.symlink_to(target)
    try:
        rc, _, err = _export(capsys, "--checkpoint", tiny_cnn4_run / "best.safetensors",
                             "--out", out, "--force", "--no-check")  # fmt: skip
    finally:
        if kind == "fifo":
            if reader.is_alive():  # nothing was written to the pipe: end its reader
                os.close(os.open(tmp_path / "keep", os.O_WRONLY | os.O_NONBLOCK))
            reader.join(30)
            (tmp_path / "keep").unlink()
    assert rc == 0, err
    mode = os.lstat(out).st_mode
    if kind == "device":
        assert stat.S_ISCHR(mode)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]
    elif kind == "fifo":
        assert stat.S_ISFIFO(mode) and got and got[0].startswith(b"\x08"), got[:1]  # ONNX
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]
    else:  # the link stays; what it points to is the new model
        assert stat.S_ISLNK(mode) and os.readlink(out) == str(target)
        data = target.read_bytes()
        assert len(data) > 10_000 and data.startswith(b"\x08")
        assert sorted(p.name for p in target.parent.iterdir()) == ["real.onnx"]


# ---- 2. --int8 --force stopped: the earlier set stays --------------------------------------


@pytest.fixture(scope="module")
def earlier_int8(tiny_cnn4_onnx, tiny_fer, tiny_fer_env, tmp_path_factory) -> Path:
    """A complete INT8 set (calibration and report) of `tiny_cnn4_onnx`, to copy and rerun."""
    from processes import run_cli

    out = tmp_path_factory.mktemp("earlier") / "int8"
    proc = run_cli("export", "--model", tiny_cnn4_onnx, "--int8", "--data", tiny_fer,
                   "--samples", 100, "--int8-out", out, "--max-drop", 100,
                   env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == INT8_FILES
    return out


@needs_fer_test
@needs_safetensors
def test_int8_missing_eval_split_is_found_before_calibrating(
    tiny_cnn4_onnx, earlier_int8, train_only, cache, tmp_path, capsys
):
    # before: found after the new calibration replaced the earlier one and its report was
    # removed; a first run left a folder of calibration files
    out = tmp_path / "int8"
    shutil.copytree(earlier_int8, out)
    before = _files(out)
    argv = ["--model", tiny_cnn4_onnx, "--int8", "--data", train_only, "--samples", 100]
    rc, _, err = _export(capsys, *argv, "--int8-out", out, "--force")
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "no faces in split 'private-test'" in err, err
    assert _files(out) == before
    rc, _, err = _export(capsys, *argv, "--int8-out", tmp_path / "new")
    assert rc == 2 and "no faces in split 'private-test'" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]


def _stop_the_check(monkeypatch, stop: str) -> int:
    """Make the accuracy check fail (`error`) or be interrupted (SIGINT, SIGTERM, as main's
    handler raises them); the exit code that follows."""
    from edge_fer.cli.main import Interrupt
    from edge_fer.errors import UserError

    def boom(*a, **k):
        if stop == "error":
            raise UserError("the check failed")
        raise Interrupt(getattr(signal, stop))

    monkeypatch.setattr("edge_fer.compress.report.compare_models", boom)
    return 2 if stop == "error" else 128 + getattr(signal, stop)


@needs_fer_test
@needs_safetensors
@pytest.mark.parametrize("stop", ["error", "SIGINT", "SIGTERM"])
def test_int8_stopped_during_the_check_keeps_the_earlier_set(
    tiny_cnn4_onnx, tiny_fer, earlier_int8, cache, tmp_path, capsys, monkeypatch, stop
):
    # before: the new calibration had replaced the earlier one and the report was gone
    out = tmp_path / "int8"
    shutil.copytree(earlier_int8, out)
    before = _files(out)
    code = _stop_the_check(monkeypatch, stop)
    argv = ["--model", tiny_cnn4_onnx, "--int8", "--data", tiny_fer, "--samples", 100,
            "--seed", 7]  # fmt: skip
    rc, _, err = _export(capsys, *argv, "--int8-out", out, "--force")
    assert rc == code, err
    assert _files(out) == before
    rc, _, err = _export(capsys, *argv, "--int8-out", tmp_path / "new")
    assert rc == code, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]


# ---- 3. --checkpoint --int8: the FP32 model is written with the INT8 set, or not at all ----


@needs_fer_test
@needs_safetensors
@pytest.mark.parametrize("how", ["source", "eval-split", "SIGTERM"])
def test_checkpoint_int8_failure_keeps_the_earlier_model_and_set(
    tiny_cnn4_run, tiny_fer, train_only, cache, tmp_path, capsys, monkeypatch, how
):
    # before: the new FP32 model replaced --out, then the INT8 step failed, leaving it beside
    # the INT8 set of the earlier one
    ckpt = tiny_cnn4_run / "best.safetensors"
    model = tmp_path / "m.onnx"
    rc, _, err = _export(capsys, "--checkpoint", ckpt, "--out", model, "--eval-tta", "flip",
                         "--int8", "--data", tiny_fer, "--samples", 100, "--max-drop", 100)  # fmt: skip
    assert rc == 0, err
    before = {"m.onnx": model.read_bytes(), **_files(tmp_path / "m_int8")}
    if how == "source":
        face = tmp_path / "one.jpg"
        shutil.copy(fer_files("happy", "Training", 1)[0], face)
        calib, words = ["--source", face], "has 1 face"
    elif how == "eval-split":
        calib, words = ["--data", train_only], "no faces in split 'private-test'"
    else:
        calib, words = ["--data", tiny_fer], "interrupted (SIGTERM)"
        _stop_the_check(monkeypatch, how)
    argv = ["--checkpoint", ckpt, "--int8", *calib, "--samples", 100, "--force"]
    rc, _, err = _export(capsys, *argv, "--out", model)
    assert rc in (2, 143) and words in err and len(said(err)) == 1, err
    assert {"m.onnx": model.read_bytes(), **_files(tmp_path / "m_int8")} == before
    # a first run: nothing at all
    rc, _, err = _export(capsys, *argv, "--out", tmp_path / "new" / "n.onnx")
    assert rc in (2, 143) and words in err, err
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["m.onnx", "m_int8"] + (["one.jpg"] if how == "source" else [])


@needs_fer_test
@needs_safetensors
def test_checkpoint_int8_writes_the_model_and_the_set(tiny_cnn4_run, tiny_fer, cache, tmp_path,
                                                      capsys):  # fmt: skip
    import json

    model = tmp_path / "m.onnx"
    rc, out, err = _export(capsys, "--checkpoint", tiny_cnn4_run / "best.safetensors", "--out",
                           model, "--int8", "--data", tiny_fer, "--samples", 100, "--max-drop",
                           100, "--target", "cpu")  # fmt: skip
    assert rc == 0, err
    assert json.loads(out.splitlines()[0])["out"] == str(model)
    assert f"-> {model}" in err
    assert sorted(p.name for p in (tmp_path / "m_int8").iterdir()) == [
        "calib.cache", "calib_ids.txt", "calib_report.json", "model.int8.cpu.onnx",
        "report.json", "report.md"]  # fmt: skip
    # the reports name the model written, not a temporary copy
    rep = json.loads((tmp_path / "m_int8" / "report.json").read_text())
    assert rep["rows"][0]["path"] == rep["calibration"]["model"] == "m.onnx"
    assert rep["rows"][1]["path"] == "model.int8.cpu.onnx"
    cal = json.loads((tmp_path / "m_int8" / "calib_report.json").read_text())
    assert cal["model"]["path"] == "m.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m_int8"]


# ---- 4. flags that would be ignored are refused ---------------------------------------------


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    """Files and folders that exist (never read: the refusal comes first)."""
    ck = tmp_path / "c.safetensors"
    ck.write_bytes(b"x")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    data = tmp_path / "data"
    data.mkdir()
    return {"ckpt": ck, "model": model, "data": data, "src": model}


PLAIN = ["--checkpoint", "{ckpt}", "--out", "{tmp}/x.onnx"]
FROM_MODEL = ["--model", "{model}", "--int8", "--data", "{data}"]


INT8_ONLY = [("--method", "entropy"), ("--method", "minmax"), ("--samples", "200"),
             ("--seed", "0"), ("--target", "cpu"), ("--trt-version", "10.3.0"),
             ("--eval-data", "{data}"), ("--eval-split", "all"), ("--eval-limit", "5"),
             ("--max-drop", "1"), ("--threads", "2"), ("--int8-out", "{tmp}/i8"),
             ("--cascade", "{model}"), ("--min-size", "30"), ("--max-size", "0.5"),
             ("--threshold", "3")]  # fmt: skip
FP32_ONLY = [("--opset", ["17"]), ("--tta", ["none"]), ("--eval-tta", ["flip"]),
             ("--exporter", ["auto"]), ("--no-check", []), ("--check-data", ["{data}"]),
             ("--crop-margin", ["0.1"])]  # fmt: skip
NO_CHECK = ["--model", "{model}", "--int8", "--source", "{src}"]  # no labelled faces
IGNORED = [
    # INT8-only flags without --int8 (the default value given counts too)
    *[(PLAIN + [f, v], f, "--int8") for f, v in INT8_ONLY],
    # FP32-export flags where no FP32 export happens
    *[(FROM_MODEL + [f, *v], f, "--checkpoint") for f, v in FP32_ONLY],
    (["--int8", "--data", "{data}", "--opset", "16"], "--opset", "--checkpoint"),
    (PLAIN + ["--no-check", "--check-data", "{data}"], "--check-data", "--no-check"),
    # the detector finds faces only in --source
    (FROM_MODEL + ["--min-size", "30"], "--min-size", "--source"),
    (FROM_MODEL + ["--cascade", "{model}"], "--cascade", "--source"),
    # no accuracy check without labelled faces: its settings would do nothing
    *[(NO_CHECK + [f, v], f, "--eval-data")
      for f, v in [("--max-drop", "1"), ("--eval-split", "all"), ("--eval-limit", "9")]],
]  # fmt: skip


@pytest.mark.parametrize("argv, flag, words", IGNORED)
def test_flags_that_would_be_ignored_are_refused(tmp_path, capsys, inputs, argv, flag, words):
    # before: exit 0, the flag silently ignored
    names = {k: str(v) for k, v in inputs.items()}
    argv = [a.format(tmp=tmp_path, **names) for a in argv]
    had = sorted(os.listdir(tmp_path))
    rc, _, err = _export(capsys, *argv)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"edge-fer export: error: {flag} ") and words in err, err
    assert sorted(os.listdir(tmp_path)) == had


def test_help_still_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        run_main(["export", "--help"], capsys)
    text = " ".join(capsys.readouterr().out.split())
    for words in ("ONNX opset (default: 17)", "calibration faces (default: 512)",
                  "(default: entropy)", "(default: 0.5)", "Q/DQ layouts to write (default: both)"):  # fmt: skip
        assert words in text, words


# ---- 5. two messages ------------------------------------------------------------------------


@needs_safetensors
def test_an_empty_checkpoint_is_said_to_be_empty(tmp_path, capsys):
    # before: "empty.onnx: is an ONNX model, not a training checkpoint"
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    rc, _, err = _export(capsys, "--checkpoint", empty, "--out", tmp_path / "x.onnx")
    assert rc == 2 and err.count("\n") == 1, err
    assert f"{empty}: empty file, not a training checkpoint" in err and "ONNX model" not in err
    assert sorted(os.listdir(tmp_path)) == ["empty.onnx"]


@pytest.mark.shared("data/fer2013/train")
def test_parity_on_random_images_says_why(train_only):
    # before: "random images (the training data was not found)", of data that is there
    from edge_fer.export.onnx import parity_faces
    from edge_fer.preprocess import PreprocessSpec

    spec = PreprocessSpec(classes=tuple(L.FER2013))
    faces, source = parity_faces({"config": {"data": str(train_only)}}, spec, n=8)
    assert len(faces) == 8 and source.startswith("random images (")
    assert "not found" not in source and "no faces in split 'public-test'" in source, source
    _, source = parity_faces({"config": {"data": str(train_only / "gone")}}, spec, n=8)
    assert source == "random images (the training data was not found)"
