"""The model-side commands on models and inputs an audit found mishandled: ONNX models with a
fixed batch size (prune/qat/train --init rebuilt them through a parity check at batch 4;
calibrate and export --int8 fed them batches of 32), the advice of export --int8 on another
vocabulary, average on checkpoints of other datasets or byte-identical copies, calibrate's
silent acceptance of a test split, a TensorRT 11 cache and --max-frames 0, build-engine and
eval outputs and inputs said late or in the wrong words, an unknown tta_default, an experiment
finding with one variant and export --out with another suffix. Real models (the bundled one,
a tiny cnn4 exported by `edge-fer export`) and real FER2013 faces."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from paths import FER_MODEL, fer_files
from processes import refusal_line, run_cli

pytest.importorskip("onnx")

pytestmark = pytest.mark.shared("data/fer2013/train", "data/fer2013/test")


def fixed_batch(src: Path, dst: Path, n: int) -> Path:
    """`src` with its graph input's and output's batch dimension fixed to `n` (as an export with
    a static batch makes it)."""
    import onnx

    m = onnx.load(str(src))
    for v in list(m.graph.input) + list(m.graph.output):
        d = v.type.tensor_type.shape.dim[0]
        d.ClearField("dim_param")
        d.dim_value = n
    onnx.save(m, str(dst))
    return dst


def with_metadata(src: Path, dst: Path, **meta: str) -> Path:
    import onnx

    m = onnx.load(str(src))
    props = {p.key: p.value for p in m.metadata_props}
    props.update({k.replace("__", "."): v for k, v in meta.items()})
    del m.metadata_props[:]
    for k, v in props.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(dst))
    return dst


# ---- 1, 2: a fixed batch size ------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3])
def test_a_fixed_batch_onnx_model_is_rebuilt_in_torch(tmp_path, n) -> None:
    """Before: ONNX Runtime's INVALID_ARGUMENT traceback from the parity check, which fed a
    batch of 4 (prune --model, qat --model and train --init all rebuild through it)."""
    pytest.importorskip("torch")
    from edge_fer.export.onnx_import import torch_model_from_onnx

    b = fixed_batch(FER_MODEL, tmp_path / f"b{n}.onnx", n)
    _model, spec, meta = torch_model_from_onnx(b)  # the parity check runs (check=True)
    assert meta["edge_fer.arch"] == "vgg" and len(spec.classes) == 7


def test_train_init_from_a_fixed_batch_model(tiny_cnn4_onnx, tiny_fer, tiny_fer_env, tmp_path):
    pytest.importorskip("torch")
    b1 = fixed_batch(tiny_cnn4_onnx, tmp_path / "b1.onnx", 1)
    proc = run_cli("train", "--arch", "cnn4", "--data", tiny_fer, "--out", tmp_path / "run",
                   "--init", b1, "--epochs", 1, "--max-batches", 1, "--batch-size", 8,
                   "--threads", 1, "--precise-bn", 0, env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "run" / "best.safetensors").is_file()


@pytest.mark.parametrize("n", [1, 4])
def test_calibrate_a_fixed_batch_model(tiny_cnn4_onnx, tiny_fer, tiny_fer_env, tmp_path, n):
    """Before: "batches must be float32 model inputs (1, 1, 48, 48); batch 0 has shape (32, 1,
    48, 48)", and with --batch-size 1 the quantizer's INVALID_ARGUMENT (its one batch of 8).
    105 faces: batches of 4 end with a partial one, filled up."""
    import onnx

    model = fixed_batch(tiny_cnn4_onnx, tmp_path / f"b{n}.onnx", n)
    out = tmp_path / "int8"
    proc = run_cli("calibrate", "--model", model, "--data", tiny_fer, "--out", out,
                   "--no-progress", "--threads", 1, env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "calibrated" in proc.stdout and "Traceback" not in proc.stderr
    for name in ("model.int8.qdq.onnx", "model.int8.cpu.onnx"):
        q = onnx.load(str(out / name))
        assert q.graph.input[0].type.tensor_type.shape.dim[0].dim_value == n
    rep = json.loads((out / "calib_report.json").read_text())
    assert rep["calibration_set"]["faces"] == 105  # each face once in the set and its ids
    assert len((out / "calib_ids.txt").read_text().splitlines()) == 1 + 105


def test_export_int8_of_a_fixed_batch_model(tiny_cnn4_onnx, tiny_fer, tiny_fer_env, tmp_path):
    b1 = fixed_batch(tiny_cnn4_onnx, tmp_path / "b1.onnx", 1)
    proc = run_cli("export", "--int8", "--model", b1, "--data", tiny_fer, "--int8-out",
                   tmp_path / "q", "--samples", 100, env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "q" / "model.int8.qdq.onnx").is_file()
    assert "INT8 PTQ, TensorRT Q/DQ" in proc.stdout


# ---- 3: export --int8 on another vocabulary ----------------------------------------------------


def test_export_int8_on_another_vocabulary_names_only_its_own_flags(tiny_fer, tiny_fer_env,
                                                                    tmp_path):  # fmt: skip
    """Before: "pass --label-set dataset ... or --classes", flags export does not have, and
    only after the calibration."""
    other = tmp_path / "other"
    for cls in ("angry", "disgust", "fear", "happy", "sad", "surprise"):
        (other / cls).mkdir(parents=True)
        for f in fer_files(cls, "Training", 3):
            shutil.copy(f, other / cls / f.name)
    (other / "contempt").mkdir()
    for f in fer_files("neutral", "Training", 3):
        shutil.copy(f, other / "contempt" / f.name)
    out = tmp_path / "q"
    line = refusal_line(run_cli("export", "--int8", "--data", tiny_fer, "--eval-data", other,
                                "--int8-out", out, env=tiny_fer_env))  # fmt: skip
    assert "contempt" in line and "--eval-data" in line, line
    helptext = run_cli("export", "--help").stdout
    for flag in re.findall(r"--[a-z][a-z0-9-]*", line):
        assert flag in helptext, (flag, line)
    assert not out.exists()  # refused before the calibration


# ---- 4: average ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_datasets_runs(tiny_fer, tiny_cnn4_run, tiny_fer_env, tmp_path_factory):
    """tiny_cnn4_run, and a cnn4 run of a copy of its dataset under another name."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("avg")
    copy = root / "fer_copy"
    shutil.copytree(tiny_fer, copy)
    proc = run_cli("train", "--arch", "cnn4", "--data", copy, "--out", root / "run2",
                   "--epochs", 1, "--max-batches", 1, "--batch-size", 8, "--threads", 1,
                   "--precise-bn", 0, env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tiny_cnn4_run, root / "run2"


def test_average_refuses_runs_of_other_datasets(two_datasets_runs, tiny_fer_env, tmp_path):
    """Before: averaged without a word, the batch norms and the score measured on whichever
    dataset the last argument recorded."""
    a, b = two_datasets_runs
    out = tmp_path / "avg.safetensors"
    for order in ((a, b), (b, a)):
        line = refusal_line(run_cli("average", order[0] / "best.safetensors",
                                    order[1] / "best.safetensors", "--out", out, "--faces", 16,
                                    env=tiny_fer_env))  # fmt: skip
        assert "average checkpoints of one dataset" in line and "fer_copy" in line, line
    assert not out.exists()


def test_average_takes_a_runs_epochs_copied_elsewhere(tiny_fer, tiny_fer_env, tmp_path):
    """One run's checkpoints record one dataset, spelled alike. The first dataset check
    resolved a relative `data` from each checkpoint's folder: an epoch copied to another
    folder read as another dataset, and the run's own epochs were refused."""
    pytest.importorskip("torch")
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copytree(tiny_fer, proj / "faces")
    proc = run_cli("train", "--arch", "cnn4", "--data", "faces", "--out", "run", "--epochs", 1,
                   "--max-batches", 1, "--batch-size", 8, "--threads", 1, "--precise-bn", 0,
                   cwd=proj, env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(proj / "run" / "last.safetensors", elsewhere / "epoch_1.safetensors")
    out = tmp_path / "avg.safetensors"
    proc = run_cli("average", proj / "run" / "best.safetensors", elsewhere / "epoch_1.safetensors",
                   "--out", out, "--faces", 16, "--threads", 1, "--data", proj / "faces",
                   env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-3000:]


def test_average_refuses_a_byte_identical_copy(two_datasets_runs, tiny_fer_env, tmp_path):
    """Before: naming one file twice was refused, but its copy under another name counted
    twice in the average."""
    a, _ = two_datasets_runs
    copy = tmp_path / "copy.safetensors"
    shutil.copy(a / "best.safetensors", copy)
    out = tmp_path / "avg.safetensors"
    line = refusal_line(run_cli("average", a / "best.safetensors", copy, "--out", out,
                                "--faces", 16, env=tiny_fer_env))  # fmt: skip
    assert f"{copy} is byte-identical to {a / 'best.safetensors'}" in line, line
    assert not out.exists()


def test_average_says_which_dataset_measured_it(two_datasets_runs, tiny_fer, tiny_fer_env,
                                                tmp_path):  # fmt: skip
    a, _ = two_datasets_runs
    out = tmp_path / "avg.safetensors"
    proc = run_cli("average", a / "best.safetensors", a / "last.safetensors", "--out", out,
                   "--faces", 16, "--threads", 1, env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"(batch norms and score on {tiny_fer})" in proc.stderr, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["data"] == str(tiny_fer)


# ---- 5, 6, 7: calibrate's flags ----------------------------------------------------------------


def warnings_of(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("edge-fer: warning:")]


def test_calibrate_on_a_test_split_warns(tiny_fer, tiny_fer_env, tmp_path):
    proc = run_cli("calibrate", "--data", tiny_fer, "--split", "private-test", "--min-faces",
                   10, "--out", tmp_path / "c", "--no-progress", env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = warnings_of(proc.stderr)
    assert len(said) == 1 and "--split private-test is a test split" in said[0], proc.stderr
    # the training split: no warning
    proc = run_cli("calibrate", "--data", tiny_fer, "--out", tmp_path / "d", "--no-progress",
                   env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0 and not warnings_of(proc.stderr), proc.stderr[-3000:]


def test_calibrate_for_tensorrt_11_warns_about_the_cache(tiny_fer, tiny_fer_env, tmp_path):
    proc = run_cli("calibrate", "--data", tiny_fer, "--trt-version", "11.0.0", "--out",
                   tmp_path / "c", "--no-progress", env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = warnings_of(proc.stderr)
    assert len(said) == 1, proc.stderr
    assert "TensorRT 11.0.0 cannot use the calibration cache" in said[0], said
    assert "model.int8.qdq.onnx" in said[0], said


def test_calibrate_refuses_max_frames_below_1(tiny_fer, tmp_path):
    """Before: accepted, no frame read, and then "too few faces"."""
    out = tmp_path / "c"
    for n in (0, -3):
        line = refusal_line(run_cli("calibrate", "--source", tiny_fer / "test" / "happy",
                                    "--max-frames", n, "--out", out))  # fmt: skip
        assert line.endswith(f"--max-frames must be at least 1, got {n}"), line
    assert not out.exists()


# ---- 8: build-engine and eval, said first and in the user's words ------------------------------


def test_build_engine_says_an_empty_model_is_empty(tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.touch()
    line = refusal_line(run_cli("build-engine", empty))
    assert line.endswith(f"{empty}: empty file, not a model"), line


@pytest.mark.parametrize("cache", ["/dev/null", "FOLDER"])
def test_build_engine_refuses_a_timing_cache_that_is_no_file(tmp_path, cache):
    """docs/tensorrt.md: refused before TensorRT parses anything (before: the TensorRT
    availability error here; on a device, /dev/null read as an empty cache)."""
    if cache == "FOLDER":
        cache = str(tmp_path)
    elif not os.path.exists(cache):
        pytest.skip(f"no {cache} here")
    line = refusal_line(run_cli("build-engine", FER_MODEL, "--out", tmp_path / "m.engine",
                                "--timing-cache", cache))  # fmt: skip
    assert f"--timing-cache {cache}: is a" in line and "not a regular file" in line, line


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="no /proc here")
def test_eval_names_the_json_flag_for_a_folder_it_cannot_write(tiny_fer, tiny_fer_env):
    """Before: "/proc/r.png: cannot write", after the evaluation, naming the image made from
    --json and no flag."""
    line = refusal_line(run_cli("eval", "--data", tiny_fer, "--json", "/proc/r.json",
                                "--no-progress", env=tiny_fer_env))  # fmt: skip
    assert "--json /proc/r.json: cannot write in /proc" in line and ".png" not in line, line


# ---- 9: an unknown tta_default -----------------------------------------------------------------


def test_an_unknown_tta_default_is_refused(tiny_fer, tiny_fer_env, tmp_path):
    """Before: taken as "none" without a word by eval and classify."""
    from edge_fer.classify import Classifier
    from edge_fer.errors import UserError

    bad = with_metadata(FER_MODEL, tmp_path / "bad.onnx", edge_fer__tta_default="zoomflip")
    want = "model metadata edge_fer.tta_default is 'zoomflip', not one of none, flip, zoom-flip"
    with pytest.raises(UserError, match=re.escape(want)):
        Classifier.load(bad)
    face = fer_files("happy", "PrivateTest", 1)[0]
    for argv in (("eval", "--model", bad, "--data", tiny_fer, "--no-progress"),
                 ("classify", "--model", bad, face)):  # fmt: skip
        line = refusal_line(run_cli(*argv, env=tiny_fer_env))
        assert want in line, line


# ---- 10: an experiment of one variant, export --out of another suffix --------------------------


def test_an_experiment_of_one_variant_has_no_dangling_comparison(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    data = tmp_path / "faces"
    for cls in ("angry", "happy", "neutral"):
        (data / cls).mkdir(parents=True)
        for i, f in enumerate(fer_files(cls, "Training", 12)):
            shutil.copy(f, data / cls / f"face_{i}.jpg")
    out = tmp_path / "report"
    proc = run_cli("experiment", "preprocessing", "--data", data, "--out", out, "--variants",
                   "plain", "--epochs", 1, "--max-batches", 1, "--batch-size", 16, "--threads",
                   1, env=dict(os.environ, EDGE_FER_CACHE=str(tmp_path / "cache")))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / "README.md").read_text()
    best = [ln for ln in md.splitlines() if ln.startswith("- best test accuracy:")]
    assert len(best) == 1 and re.fullmatch(r"- best test accuracy: .+ \(\d\.\d{4}\)\.", best[0]), (
        best
    )


def test_export_refuses_an_out_that_is_not_onnx(tiny_cnn4_run, tiny_fer_env, tmp_path):
    """Before: the ONNX model was written to e2.txt without a word."""
    out = tmp_path / "e2.txt"
    line = refusal_line(run_cli("export", "--checkpoint", tiny_cnn4_run / "best.safetensors",
                                "--out", out, env=tiny_fer_env))  # fmt: skip
    assert line.endswith(f"--out {out}: give the model an .onnx name (MODEL.onnx)"), line
    assert not out.exists()
