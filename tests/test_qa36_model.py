"""Model-side QA (pass 36): `export --skip-bad` (the parity check's and --int8's datasets), and
a new user's mistakes that were accepted, reported late or named wrongly: export inputs checked
before the FP32 model is written, eval on a vocabulary the model answers with one class, eval
--json over a file that is not a report, train options whose option is missing, calibrate's
hint on a small split, aligner arguments, build-engine on a folder, export --checkpoint given an
ONNX model, deploy --calib-cache that would not be used.

Real FER2013 faces from ../shared, real tiny runs (`edge-fer` in child processes)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from paths import CALIB, FER_MODEL, fer_files, fer_split_folders
from processes import refusal_line, run_cli

pytestmark = pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("onnx")

BROKEN = b"not an image at all"


error_line = refusal_line


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """The children's dataset cache: this module's own."""
    return dict(os.environ, EDGE_FER_CACHE=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def fer(tmp_path_factory) -> Path:
    """A FER2013-layout dataset of real faces: 15 Training faces per class (105: enough for
    INT8 calibration), 2 PublicTest and 2 PrivateTest."""
    root = tmp_path_factory.mktemp("fer") / "fer"
    return fer_split_folders(root, {"Training": 15, "PublicTest": 2, "PrivateTest": 2})


@pytest.fixture(scope="module")
def fer_bad(fer, tmp_path_factory) -> Path:
    """`fer` with one undecodable file in each split."""
    root = tmp_path_factory.mktemp("bad") / "fer_bad"
    shutil.copytree(fer, root)
    (root / "train" / "sad" / "Training_broken.jpg").write_bytes(BROKEN)
    (root / "test" / "happy" / "PublicTest_broken.jpg").write_bytes(BROKEN)
    (root / "test" / "sad" / "PrivateTest_broken.jpg").write_bytes(BROKEN)
    return root


@pytest.fixture(scope="module")
def run(fer, env, tmp_path_factory) -> Path:
    """A tiny finished cnn4 run folder."""
    out = tmp_path_factory.mktemp("runs") / "cnn4"
    proc = run_cli("train", "--arch", "cnn4", "--data", fer, "--out", out, "--epochs", 1,
                   "--max-batches", 1, "--batch-size", 8, "--threads", 1, "--precise-bn", 0,
                   env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def model(run, env, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "cnn4.onnx"
    proc = run_cli("export", "--checkpoint", run / "best.safetensors", "--out", out, env=env)
    assert proc.returncode == 0, proc.stderr
    return out


# ---- export --skip-bad (the gap: train, eval and calibrate had it, export had not) --------------


def test_export_check_data_skip_bad(run, fer_bad, env, tmp_path):
    ckpt = run / "best.safetensors"
    out = tmp_path / "m.onnx"
    proc = run_cli("export", "--checkpoint", ckpt, "--out", out, "--check-data", fer_bad, env=env)
    line = error_line(proc)  # as train and eval say it: the file, and the flag that skips it
    assert "PublicTest_broken.jpg: cannot decode image (use --skip-bad" in line, line
    assert not out.exists()

    proc = run_cli("export", "--checkpoint", ckpt, "--out", out, "--check-data", fer_bad,
                   "--skip-bad", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout.splitlines()[0])
    assert rep["parity_skipped"] == 1
    assert rep["parity_skipped_entries"] == [
        f"test{os.sep}happy{os.sep}PublicTest_broken.jpg: cannot decode image"
    ]
    assert "--skip-bad skipped 1 bad entry of the parity check faces" in proc.stderr
    assert out.is_file()


def test_export_int8_skip_bad(model, fer_bad, env, tmp_path):
    out = tmp_path / "int8"
    argv = ("export", "--model", model, "--int8", "--data", fer_bad, "--samples", 100,
            "--int8-out", out, "--threads", 1)  # fmt: skip
    line = error_line(run_cli(*argv, env=env))
    assert "Training_broken.jpg: cannot decode image (use --skip-bad" in line, line

    proc = run_cli(*argv, "--skip-bad", env=env)
    assert proc.returncode == 0, proc.stderr
    for what, name in (("calibration", "Training_broken.jpg"),
                       ("accuracy check", "PrivateTest_broken.jpg")):  # fmt: skip
        assert f"--skip-bad skipped 1 bad entry of the {what} faces: " in proc.stderr
        assert name in proc.stderr
    calib = json.loads((out / "calib_report.json").read_text())
    assert [e.split(": ")[0] for e in calib["calibration_set"]["skipped_entries"]] == [
        f"train{os.sep}sad{os.sep}Training_broken.jpg"
    ]
    report = json.loads((out / "report.json").read_text())
    assert report["setup"]["skipped"] == 1
    assert "PrivateTest_broken.jpg" in report["setup"]["skipped_entries"][0]


def test_export_skip_bad_that_reads_no_dataset_is_refused(run, model, env, tmp_path):
    # (it would change nothing: said, as calibrate --source --skip-bad is)
    out = tmp_path / "m.onnx"
    line = error_line(run_cli("export", "--checkpoint", run / "best.safetensors", "--out", out,
                              "--no-check", "--skip-bad", env=env))  # fmt: skip
    assert "--skip-bad applies to the datasets export reads" in line, line
    assert not out.exists()


# ---- export: inputs checked before the FP32 model is written -----------------------------------


@pytest.mark.parametrize(
    "argv, words",
    [
        # before: "--eval-data nothere: no such dataset" (a flag not given)
        (("--data", "{tmp}/nothere"), "--data {tmp}/nothere: no such file or folder"),
        # before: said after the FP32 model was exported and written
        (("--source", "{tmp}/nothere.mp4"), "--source {tmp}/nothere.mp4: no such file"),
    ],
)
def test_export_int8_missing_input_before_the_fp32_model(run, env, tmp_path, argv, words):
    out = tmp_path / "m.onnx"
    argv = [str(a).format(tmp=tmp_path) for a in argv]
    proc = run_cli("export", "--checkpoint", run / "best.safetensors", "--out", out, "--int8",
                   *argv, env=env)  # fmt: skip
    line = error_line(proc)
    assert line == f"edge-fer export: error: {words.format(tmp=tmp_path)}", line
    assert not out.exists() and not (tmp_path / "m_int8").exists()


def test_export_checkpoint_given_an_onnx_model(model, env, tmp_path):
    # before: "not an edge-fer checkpoint (Error while deserializing header: header too large)"
    line = error_line(run_cli("export", "--checkpoint", model, "--out", tmp_path / "x.onnx",
                              env=env))  # fmt: skip
    assert f"{model}: is an ONNX model, not a training checkpoint" in line, line
    assert "--model" in line and not (tmp_path / "x.onnx").exists()


# ---- eval --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def contempt_sad(tmp_path_factory) -> Path:
    """Real faces under contempt/ (no FER2013 class) and sad/."""
    root = tmp_path_factory.mktemp("vocab") / "cs"
    for name, cls in (("contempt", "angry"), ("sad", "sad")):
        (root / name).mkdir(parents=True)
        for i, f in enumerate(fer_files(cls, "Training", 4)):
            shutil.copy(f, root / name / f"f{i}.jpg")
    return root


def test_eval_refuses_a_vocabulary_the_model_answers_with_one_class(contempt_sad, env):
    # before: every face was "predicted" sad (all the probability renormalised onto it) and
    # the report scored that: 0.5 accuracy, top-2 1.0; --label-set dataset already refused it
    proc = run_cli("eval", "--data", contempt_sad, "--classes", "contempt,sad", "--threads", 1,
                   "--latency-samples", 0, env=env)  # fmt: skip
    line = error_line(proc)
    assert "the model answers only one of the evaluation classes (sad;" in line, line
    assert "contempt" in line
    # two classes it answers: evaluated as before
    proc = run_cli("eval", "--data", contempt_sad, "--classes", "contempt,sad,happy",
                   "--threads", 1, "--latency-samples", 0, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_eval_json_does_not_replace_a_file_that_is_not_a_report(fer, model, env, tmp_path):
    victim = tmp_path / "keep.onnx"
    shutil.copy(model, victim)
    before = victim.read_bytes()
    common = ("eval", "--data", fer, "--split", "public-test", "--threads", 1,
              "--latency-samples", 0, "--no-progress")  # fmt: skip
    line = error_line(run_cli(*common, "--json", victim, env=env))
    assert f"--json {victim} exists and is not a JSON report" in line, line
    assert victim.read_bytes() == before  # before: replaced by the report
    png = tmp_path / "r.png"
    shutil.copy(model, png)
    line = error_line(run_cli(*common, "--json", tmp_path / "r.json", env=env))
    assert f"{png} exists and is not a PNG image" in line, line
    assert png.read_bytes() == before and not (tmp_path / "r.json").exists()
    # an earlier report is replaced, as always
    report = tmp_path / "ok.json"
    for _ in range(2):
        proc = run_cli(*common, "--json", report, env=env)
        assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["n"] == 14


# ---- train: an option of an option not given -----------------------------------------------


@pytest.mark.parametrize(
    "argv, flag",
    [
        (("--extra-repeat", "2"), "--extra-repeat is 2, but no --extra-train faces"),
        (("--teacher-tta", "flip"), "--teacher-tta is 'flip', but no --teacher is given"),
        (("--distill-temperature", "4"), "--distill-temperature is 4.0, but no --teacher"),
    ],
)
def test_train_option_without_its_option_is_refused(fer, env, tmp_path, argv, flag):
    # before: accepted and ignored, the run trained without what was asked
    out = tmp_path / "run"
    proc = run_cli("train", "--arch", "cnn4", "--data", fer, "--out", out, "--epochs", 1,
                   "--max-batches", 1, "--threads", 1, "--precise-bn", 0, *argv, env=env)  # fmt: skip
    line = error_line(proc)
    assert flag in line, line
    assert not out.exists()


# ---- calibrate: the hint on a split smaller than the minimum ------------------------------------


def test_calibrate_hint_when_the_split_itself_is_too_small(model, fer, env, tmp_path):
    # 14 PublicTest faces in all: "a larger --samples" (the old hint) cannot help
    proc = run_cli("calibrate", "--model", model, "--data", fer, "--split", "public-test",
                   "--out", tmp_path / "c", env=env)  # fmt: skip
    line = error_line(proc)
    assert "has 14 faces; at least 100 are needed" in line, line
    assert "every face it holds" in line and "--samples" not in line, line
    assert not (tmp_path / "c").exists()


# ---- aligner arguments ------------------------------------------------------------------------


def test_aligner_frame_and_margin_are_checked():
    from edge_fer.align import Frame, load_aligner
    from edge_fer.errors import UserError

    # before: a str frame was taken and failed at the first face (AttributeError), a str
    # margin was a TypeError
    for kw, param in (({"frame": "x"}, "frame"), ({"frame": (1.0, 2.0)}, "frame"),
                      ({"margin": "0.1"}, "margin"), ({"margin": True}, "margin")):  # fmt: skip
        with pytest.raises(UserError) as e:
            load_aligner(**kw)
        assert e.value.param == param, kw
    al = load_aligner(frame=(1.7, 1.3, 3.2))  # a plain triple is a Frame
    assert al.frame == Frame(1.7, 1.3, 3.2)


# ---- build-engine on a folder ------------------------------------------------------------------


def test_build_engine_names_a_folder(tmp_path, env):
    (tmp_path / "models").mkdir()
    line = error_line(run_cli("build-engine", tmp_path / "models", env=env))
    # before: "no such ONNX model", as if nothing were there
    assert f"{tmp_path / 'models'}: is a folder" in line, line


# ---- deploy --calib-cache that would not be used -----------------------------------------------


@pytest.mark.parametrize(
    "argv, why",
    [
        (("--precision", "fp16"), "the plan's precision is fp16, not int8"),
        (("--platform", "onnxruntime", "--precision", "int8"), "there is no TensorRT plan"),
    ],
)
def test_deploy_triton_unused_calib_cache_is_refused(tmp_path, env, argv, why):
    # before: written without it, not a word (deploy deepstream refused it)
    out = tmp_path / "repo"
    cache = CALIB / "calib.cache"
    proc = run_cli("deploy", "triton", "--model", FER_MODEL, "--out", out, "--calib-cache",
                   cache, *argv, env=env)  # fmt: skip
    line = error_line(proc)
    assert f"--calib-cache {cache} is not used: {why}" in line, line
    assert not out.exists()


def test_deploy_deepstream_names_the_cache_not_the_model(model, fer, env, tmp_path):
    # a Q/DQ model of our own (the INT8 export's TensorRT layout)
    qdq = tmp_path / "int8"
    proc = run_cli("export", "--model", model, "--int8", "--data", fer, "--samples", 100,
                   "--int8-out", qdq, "--threads", 1, "--target", "tensorrt", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cache = qdq / "calib.cache"
    out = tmp_path / "ds"
    proc = run_cli("deploy", "deepstream", "--model", qdq / "model.int8.qdq.onnx", "--precision",
                   "int8", "--calib-cache", cache, "--out", out, env=env)  # fmt: skip
    line = error_line(proc)
    # before: "--calib-cache MODEL is a Q/DQ model ...": the flag led the model's path
    assert f"--calib-cache {cache} is not used: the model " in line, line
    assert not out.exists()


# ---- average: one checkpoint ------------------------------------------------------------------


def test_average_of_one_checkpoint_says_one(run, env, tmp_path):
    out = tmp_path / "avg.safetensors"
    proc = run_cli("average", run / "best.safetensors", "--out", out, "--faces", 16,
                   "--threads", 1, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "averaged 1 checkpoint: " in proc.stderr, proc.stderr


# ---- prune / qat: --out inside --data ----------------------------------------------------------


@pytest.mark.parametrize("command", ["prune", "qat"])
def test_compress_out_inside_the_data_is_refused(model, fer, env, command):
    # before: the run's models and reports were written into the dataset's folders (calibrate,
    # export --int8 and train refused it)
    out = fer / "train" / "runs"
    proc = run_cli(command, "--model", model, "--data", fer, "--out", out, "--epochs", 1,
                   "--threads", 1, env=env)  # fmt: skip
    line = error_line(proc)
    assert f"--out {out} is inside --data {fer}" in line, line
    assert not out.exists()


# ---- train-eyes: --seed -1, and learning options with --evaluate ------------------------------


@pytest.mark.shared("data/webfaces/WebFaces_GroundThruth.txt", "data/webfaces/images")
@pytest.mark.parametrize(
    "argv, words",
    [
        # before: a ValueError traceback from numpy after the faces were read
        (("--seed", "-1", "--out", "{tmp}/e.eyes", "--max-faces", "10"), "--seed must be >= 0"),
        # before: ignored, the bundled model measured as if nothing were asked
        (("--evaluate", "{eyes}", "--stages", "3"), "--stages applies to learning a model"),
        (
            ("--evaluate", "{eyes}", "--out", "{tmp}/e.eyes", "--seed", "2"),
            "--seed, --out apply to learning a model",
        ),
    ],
)
def test_train_eyes_mistakes(tmp_path, env, argv, words):
    from paths import ASSETS, WEBFACES

    argv = [a.format(tmp=tmp_path, eyes=ASSETS / "eyes_default.eyes") for a in argv]
    proc = run_cli("train-eyes", "--data", WEBFACES, "--eval-limit", 2, *argv, env=env)
    line = error_line(proc)
    assert words in line, line
    assert not (tmp_path / "e.eyes").exists()


def test_average_refuses_a_checkpoint_given_twice(run, env, tmp_path):
    # before: averaged, the file weighing twice in the "uniform" average (a doubled glob)
    out = tmp_path / "avg.safetensors"
    best = run / "best.safetensors"
    line = error_line(run_cli("average", best, run / "." / "best.safetensors", run /
                              "last.safetensors", "--out", out, "--faces", 16, env=env))  # fmt: skip
    assert f"{best} is given twice" in line, line
    assert not out.exists()


def test_qat_help_says_what_its_epochs_are(capsys) -> None:
    """`qat --help` described --epochs as "per pruning step for iterative pruning"."""
    from edge_fer.cli.main import main

    for cmd, words in (
        ("qat", "quantization-aware training epochs"),
        ("prune", "per pruning step"),
    ):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        epochs = text.split("--epochs EPOCHS ", 2)[-1][:80]  # its help, past the usage line
        assert words in epochs, epochs
