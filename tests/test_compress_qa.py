"""`edge-fer prune` / `qat` / `average` QA findings: a rerun publishes its whole output set or
nothing, a class-folder dataset is scored on its held-out part, flags that a run would ignore
are refused, reports record no local absolute paths, and `average` names what it measured.

A tiny cnn4 run of real FER2013 faces (conftest), `edge-fer` in child processes, one thread.
"""

from __future__ import annotations

import json
import shlex
import signal
from pathlib import Path

import pytest
from paths import fer_class_folders, fer_split_folders, needs_modules
from processes import interrupt, refusal_line, run_cli, run_main, spawn_cli

pytestmark = [
    pytest.mark.shared("data/fer2013/train", "data/fer2013/test"),
    needs_modules("safetensors"),
]
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

# one short epoch on one thread, timed once, one view per face
QUICK = ["--epochs", 1, "--max-batches", 1, "--batch-size", 16, "--threads", 1,
         "--bench-rounds", 1, "--no-progress", "--eval-tta", "none"]  # fmt: skip
FLAGS = {"prune": ["--method", "unstructured", "--steps", 1], "qat": ["--calib-faces", 16]}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _compress(cmd, model, data, out, *flags, env, **kw):
    return run_cli(cmd, "--model", model, "--data", data, "--out", out, *QUICK, *FLAGS[cmd],
                   *flags, env=env, timeout=300, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """10 real Training faces per class in class folders (70: 7 held out)."""
    return fer_class_folders(tmp_path_factory.mktemp("qa") / "faces", 10)


@pytest.fixture(scope="module")
def no_private(tmp_path_factory) -> Path:
    """A FER2013-layout dataset without PrivateTest faces (the default report split)."""
    root = tmp_path_factory.mktemp("qa") / "fer"
    return fer_split_folders(root, {"Training": 15, "PublicTest": 2})


# ---- 1. the output set: all of a run's files, or the earlier run's -------------------------


@pytest.mark.parametrize(
    "cmd, sig", [("prune", signal.SIGTERM), ("qat", signal.SIGINT)], ids=["prune-TERM", "qat-INT"]
)
def test_interrupted_force_rerun_leaves_the_earlier_run(
    cmd, sig, tiny_cnn4_run, tiny_fer, tiny_fer_env, tmp_path
):
    # before: the new models were in --out when "measuring ..." began, and the interrupt left
    # them beside the earlier run's report.json / report.md
    out, ckpt = tmp_path / "run", tiny_cnn4_run / "best.safetensors"
    proc = _compress(cmd, ckpt, tiny_fer, out, env=tiny_fer_env)
    assert proc.returncode == 0, proc.stderr
    before = _files(out)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    child = spawn_cli(cmd, "--model", ckpt, "--data", tiny_fer, "--out", out, *QUICK,
                      *FLAGS[cmd], "--seed", 1, "--force", TMPDIR=str(tmp),
                      EDGE_FER_CACHE=tiny_fer_env["EDGE_FER_CACHE"])  # fmt: skip
    err = interrupt(child, sig, lambda: "measuring" in child.stderr.readline(), 300)
    assert child.returncode == 128 + sig and "Traceback" not in err, err
    assert _files(out) == before
    assert not [p.name for p in tmp.iterdir() if p.name.startswith("edge-fer-")]  # staging


@pytest.mark.parametrize("cmd", ["prune", "qat"])
def test_failing_force_rerun_leaves_the_earlier_run(cmd, tiny_cnn4_run, no_private, tiny_fer_env,
                                                    tmp_path):  # fmt: skip
    # the rerun fails while measuring (no PrivateTest faces): before, with the earlier report
    out, ckpt = tmp_path / "run", tiny_cnn4_run / "best.safetensors"
    proc = _compress(cmd, ckpt, no_private, out, "--eval-split", "public-test", env=tiny_fer_env)
    assert proc.returncode == 0, proc.stderr
    before = _files(out)
    proc = _compress(cmd, ckpt, no_private, out, "--seed", 1, "--force", env=tiny_fer_env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert _files(out) == before


def test_force_rerun_removes_earlier_outputs_it_does_not_write(
    tiny_cnn4_run, tiny_cnn4_onnx, tiny_fer, tiny_fer_env, tmp_path
):
    out, ckpt = tmp_path / "run", tiny_cnn4_run / "best.safetensors"
    assert _compress("prune", ckpt, tiny_fer, out, env=tiny_fer_env).returncode == 0
    assert (out / "source_fp32.onnx").is_file()
    # from an ONNX model: no source_fp32.onnx; before, the checkpoint's stayed as if of this run
    proc = _compress("prune", tiny_cnn4_onnx, tiny_fer, out, "--force", env=tiny_fer_env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(_files(out)) == ["pruned.onnx", "pruned.safetensors", "report.json", "report.md"]
    # qat into a prune run's folder: its models go (a qat report does not describe them)
    proc = _compress("qat", tiny_cnn4_onnx, tiny_fer, out, "--force", env=tiny_fer_env)
    assert proc.returncode == 0, proc.stderr
    want = ["ptq.onnx", "qat.onnx", "qat.safetensors", "report.json", "report.md"]
    assert sorted(_files(out)) == want
    # without --force, files a run would remove are refused as those it would replace are
    for name in ("pruned.onnx", "calib.cache"):
        other = tmp_path / f"other-{name}"
        other.mkdir()
        (other / name).write_text("mine")
        proc = _compress("qat", tiny_cnn4_onnx, tiny_fer, other, env=tiny_fer_env)
        line = refusal_line(proc)
        assert f"already holds {name}" in line and "--force" in line, line
        assert _files(other) == {name: b"mine"}


# ---- 2. a dataset of class folders: the report scores its held-out part ---------------------


def test_class_folder_report_scores_the_held_out_part(tiny_cnn4_run, faces, tiny_fer_env,
                                                      tmp_path):  # fmt: skip
    # before: fine-tuned on 90% of the faces, scored on all of them (those 90% included)
    out, ckpt = tmp_path / "run", tiny_cnn4_run / "best.safetensors"
    proc = _compress("prune", ckpt, faces, out, env=tiny_fer_env)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["setup"]["split"] == "held-out 10%" and rep["setup"]["n"] == 7
    assert {r["n"] for r in rep["rows"]} == {7}
    md = (out / "report.md").read_text()
    assert "held-out 10% (7 faces)" in md and "never fine-tuned on" in md, md
    # --eval-split has no meaning there (before: ignored without a word)
    proc = _compress("qat", ckpt, faces, tmp_path / "q", "--eval-split", "public-test",
                     env=tiny_fer_env)  # fmt: skip
    line = refusal_line(proc)
    assert "--eval-split names a FER2013 split" in line and "held-out part" in line, line
    assert not (tmp_path / "q").exists()


# ---- 3. flags this run would ignore ---------------------------------------------------------


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["prune", "--method", "2:4", "--target-macs-reduction", "0.3"],
         "--target-macs-reduction applies to --method structured"),
        (["prune", "--method", "unstructured", "--target-macs-reduction", "0.5"],
         "--target-macs-reduction applies to --method structured"),
        (["prune", "--taylor-batches", "8"], "--taylor-batches applies to"),
        (["prune", "--method", "2:4", "--importance", "taylor", "--taylor-batches", "8"],
         "--taylor-batches applies to"),
        (["prune", "--distill-temperature", "2"], "--distill-temperature applies with --distill"),
        (["qat", "--distill", "0", "--distill-temperature", "4"],
         "--distill-temperature applies with --distill"),
        (["qat", "--calib-method", "max", "--percentile", "99.9"],
         "--percentile applies to --calib-method percentile"),
        # the method's, and the fine-tuning's that --epochs 0 does not run
        (["prune", "--method", "2:4", "--importance", "l1"],
         "--importance applies to --method structured"),
        (["prune", "--method", "unstructured", "--round-to", "8"],
         "--round-to applies to --method structured"),
        (["prune", "--sparsity", "0.7"], "--sparsity applies to --method unstructured"),
        (["prune", "--method", "2:4", "--sparsity", "0.5"],
         "--sparsity applies to --method unstructured (--method 2:4 zeroes 2 in every 4"),
        (["prune", "--method", "2:4", "--steps", "2"],
         "--steps applies to --method structured and unstructured"),
        (["prune", "--epochs", "0", "--lr", "0.1"],
         "--lr applies to the fine-tuning, and --epochs 0 runs none"),
        (["prune", "--epochs", "0", "--no-augment"], "--no-augment applies to the fine-tuning"),
        (["qat", "--epochs", "0", "--weight-decay", "0"], "--weight-decay applies to the fine"),
        (["qat", "--epochs", "0", "--label-smoothing", "0.1"], "--label-smoothing applies to"),
        (["qat", "--epochs", "0", "--distill", "0.5"], "--distill applies to the fine-tuning"),
        (["qat", "--epochs", "0", "--ranges", "fixed"],
         "--ranges applies to the fine-tuning, and --epochs 0 runs none"),
    ],
)  # fmt: skip
def test_flags_the_run_would_ignore_are_refused(argv, needle, tmp_path, capsys) -> None:
    out, data = tmp_path / "out", tmp_path / "data"  # (refused before the data is read)
    data.mkdir()
    rc, _, err = run_main([*argv, "--data", data, "--out", out], capsys)
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err and not out.exists()


def test_max_calibration_records_no_percentile(tiny_cnn4_run, tiny_fer, tiny_fer_env, tmp_path):
    out = tmp_path / "run"
    proc = _compress("qat", tiny_cnn4_run / "best.safetensors", tiny_fer, out, "--calib-method",
                     "max", env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for name in ("qat.onnx", "ptq.onnx"):
        meta = {m.key: m.value for m in onnx.load(str(out / name)).metadata_props}
        calib = json.loads(meta["edge_fer.quantization"])["calibration"]
        assert calib["method"] == "max" and "percentile" not in calib, calib
    rep = json.loads((out / "report.json").read_text())
    assert rep["args"]["percentile"] is None and "percentile" not in rep["result"][
        "quantization"]["calibration"]  # fmt: skip


# ---- 4. what the report records -------------------------------------------------------------


def test_report_records_no_local_paths_and_the_run(tiny_cnn4_run, tiny_fer, tiny_fer_env,
                                                   tmp_path):  # fmt: skip
    # absolute paths outside the working folder (the checkout): each recorded by its name
    out, ckpt = tmp_path / "run", tiny_cnn4_run / "best.safetensors"
    proc = run_cli("prune", "--model", ckpt, "--data", tiny_fer, f"--out={out}", *QUICK,
                   *FLAGS["prune"], env=tiny_fer_env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text, md = (out / "report.json").read_text(), (out / "report.md").read_text()
    for local in {str(tmp_path), str(tiny_cnn4_run), str(tiny_fer)}:
        assert local not in text and local not in md, local
    rep = json.loads(text)
    args, res = rep["args"], rep["result"]
    assert "func" not in args and "given_argv" not in args
    assert (args["model"], args["data"], args["out"]) == ("best.safetensors", "fer", "run")
    assert res["checkpoint"] == "pruned.safetensors" and res["onnx"] == "pruned.onnx"
    assert res["export"]["out"] == "pruned.onnx"
    assert res["export"]["checkpoint"] == "pruned.safetensors"
    words = shlex.split(rep["command"])
    assert words[:4] == ["edge-fer", "prune", "--model", "best.safetensors"], words
    assert "--out=run" in words and "--seed" not in words
    # report.md: the command, the seed and the settings too (docs/compress.md)
    assert rep["command"] in md and "- seed: 0" in md, md
    assert "- settings: " in md and "method=unstructured" in md and "func" not in md, md


# ---- 5. average -----------------------------------------------------------------------------


def test_average_out_must_be_a_safetensors_name(tiny_cnn4_run, tiny_fer_env, tmp_path):
    # before: a checkpoint named avg.onnx, which `eval --model avg.onnx` then refused
    out = tmp_path / "avg.onnx"
    proc = run_cli("average", tiny_cnn4_run / "best.safetensors", "--out", out, "--threads", 1,
                   env=tiny_fer_env)  # fmt: skip
    line = refusal_line(proc)
    assert "--out" in line and ".safetensors" in line and "avg.onnx" in line, line
    assert not out.exists()


def test_average_records_the_data_it_measured_on(tiny_cnn4_run, faces, tiny_fer_env, tmp_path):
    from edge_fer.train.checkpoint import read_state

    out = tmp_path / "avg.safetensors"
    proc = run_cli("average", tiny_cnn4_run / "best.safetensors", "--out", out, "--data", faces,
                   "--threads", 1, "--faces", 16, env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    state = read_state(out)
    # before: public-test and the run's FER2013 folder, with a score of the held-out faces
    assert rep["val_split"] == state["val_split"] == "held-out 10%"
    assert state["config"]["data"] == str(faces) and state["val_acc"] == rep["val_acc"]
    assert state["config"]["arch"] == "cnn4"  # the rest of the run's config is kept
