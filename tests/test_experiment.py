"""`edge-fer experiment`: refusals before any training, and tiny real studies (1 epoch of 1
batch on a few real faces) that write their report and resume."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from paths import SHARED, fer_files, needs_modules
from processes import refusal_line, run_cli

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from edge_fer.experiment.report import FIGURE_NAMES

SFEW = SHARED / "data" / "sfew_train"
TINY = ["--epochs", "1", "--max-batches", "1", "--batch-size", "16", "--threads", "1"]


def run(capsys, *argv) -> tuple[int, str, str]:
    from edge_fer.cli.main import main

    rc = main(["experiment", *map(str, argv)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_line_error(rc: int, err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


def gray_folders(root: Path, classes: tuple[str, ...], per_class: int) -> Path:
    """A one-folder-per-class dataset of real FER2013 faces (grayscale), without the FER2013
    file names (so it is not read as FER2013)."""
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i, f in enumerate(fer_files(cls, "Training", per_class)):
            shutil.copy(f, root / cls / f"face_{i}.jpg")
    return root


def test_unknown_study_and_bad_flags(tmp_path, capsys) -> None:
    rc, _, err = run(capsys, "nonsense", "--data", tmp_path, "--out", tmp_path / "o")
    one_line_error(rc, err, "unknown study 'nonsense'", "architectures", "compression")
    rc, _, err = run(capsys, "grouping", "--data", tmp_path, "--out", tmp_path / "o", "--arch", "x")
    one_line_error(rc, err, "--arch 'x' is not in the zoo")
    rc, _, err = run(capsys, "grouping", "--data", tmp_path / "nope", "--out", tmp_path / "o")
    one_line_error(rc, err, "no such file or folder")
    # an option of another study (before: ignored without a word)
    for argv, needle in (
        (["grouping", "--archs", "cnn4"], "--archs is for the architectures study"),
        (["compression", "--no-bundled"], "--no-bundled is for the architectures study"),
        (["architectures", "--variants", "7"], "--variants is for the grouping, preprocessing"),
        (["architectures", "--arch", "vgg"], "--arch is for the other studies"),
        # at its default too (it trained the whole zoo without a word)
        (["architectures", "--arch", "cnn4"], "--arch is for the other studies"),
    ):
        rc, _, err = run(capsys, *argv, "--data", tmp_path, "--out", tmp_path / "o")
        one_line_error(rc, err, needle)
    assert not (tmp_path / "o").exists()


def test_out_work_and_numbers_are_checked_before_any_study(tmp_path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep")
    data = tmp_path / "nodata"  # never reached: every refusal comes first
    cases = [
        (["architectures", "--out", afile], "--out", "exists and is not a folder"),
        (["architectures", "--out", afile / "sub"], "--out", "is not a folder"),
        (["grouping", "--out", tmp_path / "o", "--work", afile], "--work", "not a folder"),
        (["grouping", "--out", tmp_path / "o", "--lr", "inf"], "--lr must be a finite number"),
        (["grouping", "--out", tmp_path / "o", "--lr", "nan"], "--lr must be a finite number"),
        (["grouping", "--out", tmp_path / "o", "--seed", "-1"], "--seed must be an integer >= 0"),
        (["grouping", "--out", tmp_path / "o", "--test-fraction", "nan"], "--test-fraction"),
        # thread counts the trainer and the timing refuse: before, the first only after a
        # run folder was claimed (the corrected command was then refused), the second after
        # every variant trained, naming --threads
        (["grouping", "--out", tmp_path / "o", "--threads", "99999"], "--threads", "0..256"),
        (
            ["grouping", "--out", tmp_path / "o", "--latency-threads", "100000"],
            "--latency-threads",
            "1..256",
        ),
        (["grouping", "--out", tmp_path / "d" / "o", "--data", tmp_path / "d"], "--out", "inside"),
        (["grouping", "--out", tmp_path / "o", "--work", tmp_path / "d"], "--work", "inside"),
    ]
    # another study's report, or a README of the user's (before: replaced with its figures)
    other, mine = tmp_path / "other", tmp_path / "mine"
    for folder, text in ((other, "# Study: label grouping\n"), (mine, "# My notes\n")):
        folder.mkdir()
        (folder / "README.md").write_text(text)
    cases += [
        (["architectures", "--out", other], "--out", "holds the report of the grouping study"),
        (["compression", "--out", mine], "--out", "a README.md that is not this study's"),
    ]
    # a user's figure of the name a study writes, with no report beside it (before: replaced)
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    (pngs / "confusion.png").write_bytes(b"mine")
    (pngs / "notes.txt").write_text("mine")
    cases += [(["grouping", "--out", pngs], "--out", "holds confusion.png but no report")]
    (tmp_path / "d").mkdir()
    for argv, *needles in cases:
        if "--data" not in argv:
            argv = [*argv, "--data", data if "--work" not in argv else tmp_path / "d"]
        rc, _, err = run(capsys, *argv)
        one_line_error(rc, err, *needles)
    assert afile.read_text() == "keep" and not (tmp_path / "o").exists()
    assert [p.name for p in other.iterdir()] == ["README.md"] == [p.name for p in mine.iterdir()]
    assert (mine / "README.md").read_text() == "# My notes\n"
    assert (pngs / "confusion.png").read_bytes() == b"mine" and len(list(pngs.iterdir())) == 2


@pytest.mark.shared("data/fer2013/train")
def test_refusals_before_training(tmp_path, capsys) -> None:
    gray = gray_folders(tmp_path / "gray", ("angry", "happy", "sad", "neutral"), 6)
    out = tmp_path / "out"
    # colour study on grayscale data
    rc, _, err = run(capsys, "channels", "--data", gray, "--out", out, *TINY)
    one_line_error(rc, err, "grayscale only", "colour")
    # a grouping that leaves a class empty: no disgust, fear or surprise faces for 7 classes
    rc, _, err = run(capsys, "grouping", "--data", gray, "--out", out, "--variants", "7", *TINY)
    one_line_error(rc, err, "7 classes: class", "disgust", "no training faces")
    # no happy face: the positive group is empty
    nohappy = gray_folders(tmp_path / "nohappy", ("angry", "sad", "neutral"), 6)
    rc, _, err = run(capsys, "grouping", "--data", nohappy, "--out", out, "--variants", "3", *TINY)
    one_line_error(rc, err, "class positive would have no training faces")
    rc, _, err = run(capsys, "grouping", "--data", gray, "--out", out, "--variants", "5", *TINY)
    one_line_error(rc, err, "unknown grouping 5")
    assert not (out / "work" / "runs").exists()  # nothing trained
    # faces of one class only (an empty folder beside it): before, the trainer refused it after
    # the study had begun, naming the study's link tree as --data, and left files in --out
    one = gray_folders(tmp_path / "one", ("happy",), 8)
    (one / "sad").mkdir()
    for study in ("preprocessing", "channels", "compression", "architectures"):
        rc, _, err = run(capsys, study, "--data", one, "--out", tmp_path / "o1", *TINY)
        one_line_error(rc, err, f"--data {one}: training faces of 1 class (happy)")
    assert not (tmp_path / "o1").exists()


@pytest.mark.shared("data/fer2013/train")
def test_a_named_variant_that_cannot_run_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    """clahe+align asked for by name with no usable eye model: one line saying why (before:
    a note that it was skipped, then 'no preprocessing variant left to run')."""
    from edge_fer.align import aligner

    gray = gray_folders(tmp_path / "gray", ("angry", "happy"), 6)
    damaged = tmp_path / "eyes_default.eyes"  # the bundled model, cut short
    damaged.write_bytes(aligner.BUNDLED.read_bytes()[:100])
    monkeypatch.setattr(aligner, "BUNDLED", damaged)
    out = tmp_path / "out"
    rc, _, err = run(capsys, "preprocessing", "--data", gray, "--out", out,
                     "--variants", "clahe+align", *TINY)  # fmt: skip
    one_line_error(rc, err, "--variants clahe+align: no alignment model")
    assert not out.exists()


@pytest.mark.shared("data/sfew_train")
def test_channels_study_on_colour_faces(tmp_path, capsys) -> None:
    out, work = tmp_path / "report", tmp_path / "work"
    argv = ["channels", "--data", SFEW, "--out", out, "--work", work, "--variants", "gray1,colour3",
            "--max-train-faces", "70", "--max-test-faces", "35", *TINY]  # fmt: skip
    rc, _, err = run(capsys, *argv)
    assert rc == 0, err
    text = (out / "README.md").read_text()
    for needle in ("# Study: input channels", "whole clips", "**budget**: 1 epoch(s)",
                   "at most 70 training faces", "--max-test-faces 35", "| gray1 |",
                   "| colour3 |", "Short budget", "colour check"):  # fmt: skip
        assert needle in text, needle
    for png in ("confusion.png", "curves.png", "accuracy_vs_ms.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000
        assert f"]({png})" in text
    for v in ("gray1", "colour3"):
        run_dir = work / "runs" / v
        assert (run_dir / "best.safetensors").is_file()
        assert len((run_dir / "log.csv").read_text().splitlines()) == 2  # header + 1 epoch
    # the colour model really has a 3-channel stem
    from edge_fer.export.onnx import load_trained

    _, spec, state = load_trained(work / "runs" / "colour3" / "best.safetensors")
    assert spec.channels == 3 and state["colour"] == "bgr"
    # a second start reuses the finished runs; another budget in the same work folder is refused
    rc, _, err = run(capsys, *argv)
    assert rc == 0 and err.count("finished earlier") == 2, err
    rc, _, err = run(capsys, *argv, "--epochs", "2")  # the last --epochs wins
    one_line_error(rc, err, "holds a run made with other settings")


@pytest.mark.shared("data/sfew_train")
def test_grouping_study(tmp_path, capsys) -> None:
    out = tmp_path / "report"
    rc, _, err = run(capsys, "grouping", "--data", SFEW, "--out", out, "--variants", "7,3",
                     "--max-train-faces", "70", "--max-test-faces", "35", *TINY)  # fmt: skip
    assert rc == 0, err
    text = (out / "README.md").read_text()
    assert "| classes7 |" in text and "| classes3 |" in text
    # the command as typed (before: with an --arch cnn4 nobody typed)
    command = next(ln for ln in text.splitlines() if "edge-fer experiment grouping" in ln)
    assert "--arch " not in command and "--variants 7,3" in command, command
    assert "classes7 merged" in text  # the 7-class model scored on the 3 groups
    assert "neg " in text and "pos " in text  # per-class recall of the groups
    assert {p.name for p in out.glob("*.png")} <= set(FIGURE_NAMES)  # what --out guards
    # another budget for classes3 while classes6 is new: refused before classes6 trains
    # (before: classes6 trained to the end, then classes3's folder was refused)
    rc, _, err = run(capsys, "grouping", "--data", SFEW, "--out", out, "--variants", "6,3",
                     "--max-train-faces", "70", "--max-test-faces", "35", *TINY,
                     "--lr", "0.04")  # fmt: skip
    one_line_error(rc, err, "classes3 holds a run made with other settings")
    assert not (out / "work" / "runs" / "classes6").exists()
    # the machine's settings (--threads, --precision) are not what a run is made from: the
    # finished runs are reused (before: "holds a run made with other settings")
    rc, _, err = run(capsys, "grouping", "--data", SFEW, "--out", out, "--variants", "7,3",
                     "--max-train-faces", "70", "--max-test-faces", "35", *TINY,
                     "--threads", "2", "--precision", "bf16")  # fmt: skip
    assert rc == 0 and err.count("finished earlier") == 2, err


@pytest.mark.shared("data/fer2013/train")
def test_a_study_trains_in_bfloat16(tmp_path, capsys) -> None:
    """--precision reaches the trainer: the run records it; a bad value is one line."""
    import json

    data = gray_folders(tmp_path / "faces", ("angry", "happy", "neutral"), 12)
    out = tmp_path / "report"
    argv = ["preprocessing", "--data", data, "--out", out, "--variants", "plain", *TINY]
    rc, _, err = run(capsys, *argv, "--precision", "bf16")
    assert rc == 0, err
    config = json.loads((out / "work" / "runs" / "plain" / "config.json").read_text())
    assert config["precision"] == "bf16"
    with pytest.raises(SystemExit):  # argparse's choices
        run(capsys, *argv, "--precision", "fp16")
    assert "--precision" in capsys.readouterr().err


def tiny_fer(root: Path) -> Path:
    """A FER2013-layout dataset of real faces: 16 Training faces per class (enough for INT8
    calibration), 4 PrivateTest and 2 PublicTest."""
    for cls in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"):
        for split, prefix, k in (
            ("train", "Training", 16),
            ("test", "PrivateTest", 4),
            ("test", "PublicTest", 2),
        ):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for f in fer_files(cls, prefix, k):
                shutil.copy(f, d / f.name)
    return root


@pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
def test_architectures_from_run_folders(tmp_path, capsys) -> None:
    from edge_fer.train.trainer import TrainConfig, train

    fer = tiny_fer(tmp_path / "fer")
    runs = tmp_path / "runs"
    train(TrainConfig(arch="cnn4", data=str(fer), out=str(runs / "cnn4"), epochs=1,
                      batch_size=16, max_batches=2, threads=1))  # fmt: skip
    out = tmp_path / "report"
    rc, _, err = run(capsys, "architectures", "--runs", runs, "--archs", "cnn4,resnet",
                     "--no-bundled", "--data", fer, "--out", out, "--calib-faces", "100",
                     "--max-test-faces", "0")  # fmt: skip
    assert rc == 0, err
    text = (out / "README.md").read_text()
    assert "| cnn4 | 1 of 1 |" in text
    # the command as typed, which runs again (before: an untyped --arch cnn4 that this study
    # refuses)
    command = next(ln for ln in text.splitlines() if "edge-fer experiment architectures" in ln)
    assert "--arch " not in command and "--archs cnn4,resnet" in command, command
    assert "resnet: no resnet/best.safetensors in --runs" in text  # named, not fatal
    assert "test 28 of 28 faces" in text
    assert "cnn4 INT8" in text and (out / "recall.png").is_file()
    assert not list(runs.glob("cnn4/*.onnx"))  # the run folder is only read
    rc, _, err = run(capsys, "grouping", "--runs", runs, "--data", fer, "--out", out)
    one_line_error(rc, err, "--runs is for the architectures study")
    # a run of another net under an architecture's name: refused (before: reported under that
    # name with the other net's figures)
    shutil.copytree(runs / "cnn4", runs / "mobilenet")
    rc, _, err = run(capsys, "architectures", "--runs", runs, "--archs", "mobilenet",
                     "--no-bundled", "--data", fer, "--out", tmp_path / "r2")  # fmt: skip
    one_line_error(rc, err, "--runs", "holds a 'cnn4' run, not 'mobilenet'")
    # data with a class the bundled model or a finished run lacks: refused before anything is
    # trained or exported (before: after the zoo trained, advising eval's --label-set)
    contempt = gray_folders(tmp_path / "contempt", ("angry", "happy", "sad"), 8)
    shutil.copytree(contempt / "sad", contempt / "contempt")
    rc, _, err = run(capsys, "architectures", "--archs", "cnn4", "--data", contempt,
                     "--out", tmp_path / "r3", "--test-fraction", "0.4", *TINY)  # fmt: skip
    one_line_error(rc, err, "the bundled vgg model has no class contempt", "--no-bundled")
    rc, _, err = run(capsys, "architectures", "--runs", runs, "--archs", "cnn4", "--no-bundled",
                     "--data", contempt, "--out", tmp_path / "r3", "--test-fraction", "0.4")  # fmt: skip
    one_line_error(rc, err, "has no class contempt")
    assert not (tmp_path / "r3").exists()
    # a run of another vocabulary beside the bundled 7 classes: refused before measuring
    # (before: a KeyError traceback from the recall figure after everything was measured)
    g3 = gray_folders(tmp_path / "g3", ("angry", "neutral", "happy"), 8)
    (g3 / "angry").rename(g3 / "negative")
    (g3 / "happy").rename(g3 / "positive")
    train(TrainConfig(arch="cnn4", data=str(g3), out=str(tmp_path / "runs3" / "cnn4"), epochs=1,
                      batch_size=16, max_batches=1, threads=1))  # fmt: skip
    capsys.readouterr()  # the training's own lines
    rc, _, err = run(capsys, "architectures", "--runs", tmp_path / "runs3", "--archs", "cnn4",
                     "--data", fer, "--out", tmp_path / "r4")  # fmt: skip
    one_line_error(rc, err, "--runs holds models that answer other classes", "negative")
    assert not (tmp_path / "r4").exists()


@pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
def test_work_files_are_remade_when_what_they_were_made_from_changed(tmp_path) -> None:
    """A study reused its export and INT8 model when they were newer than the checkpoint: a
    run replaced by an older file (copied with its times) kept the other weights' figures,
    and other calibration faces (--calib-faces, --seed) kept the first ones' INT8 model."""
    import cv2

    from edge_fer.experiment.measure import export_run
    from edge_fer.experiment.zoo import int8_of
    from edge_fer.quantize.calib_data import CalibFaces
    from edge_fer.train.trainer import TrainConfig, train

    fer = tiny_fer(tmp_path / "fer")
    for seed in (0, 1):
        train(TrainConfig(arch="cnn4", data=str(fer), out=str(tmp_path / f"r{seed}"), epochs=1,
                          batch_size=16, max_batches=1, threads=1, seed=seed))  # fmt: skip
    run, onnx = tmp_path / "run", tmp_path / "w" / "model.onnx"
    shutil.copytree(tmp_path / "r0", run)
    assert not export_run(run, onnx).get("reused")
    first = onnx.read_bytes()
    assert export_run(run, onnx)["reused"]  # the same checkpoint: kept
    # another run's weights, with times older than the export (cp -p, a restored backup)
    shutil.copy2(tmp_path / "r1" / "best.safetensors", run / "best.safetensors")
    os.utime(run / "best.safetensors", (1, 1))
    assert not export_run(run, onnx).get("reused") and onnx.read_bytes() != first

    files = sorted((fer / "train").rglob("*.jpg"))
    images = np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files])
    faces = [CalibFaces(images=images[i : i + 100], ids=[f.name for f in files[i : i + 100]],
                        source="t") for i in (0, 12)]  # fmt: skip
    q = int8_of(onnx, faces[0], tmp_path / "w" / "int8")
    made = q.stat().st_mtime_ns
    assert int8_of(onnx, faces[0], tmp_path / "w" / "int8") == q and q.stat().st_mtime_ns == made
    time.sleep(0.01)
    assert int8_of(onnx, faces[1], tmp_path / "w" / "int8") == q  # other faces: remade
    assert q.stat().st_mtime_ns != made


def test_a_name_given_twice_is_one() -> None:
    """`--archs cnn4,cnn4` measured cnn4 twice and reported two identical rows."""
    from edge_fer.cli.experiment_cmd import _names

    assert _names("cnn4, cnn4,resnet,,cnn4") == ("cnn4", "resnet")


@pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
def test_compression_study(tmp_path, capsys, monkeypatch) -> None:
    pytest.importorskip("torch_pruning")
    fer = tiny_fer(tmp_path / "fer")
    out = tmp_path / "report"
    rc, _, err = run(capsys, "compression", "--data", fer, "--out", out, "--calib-faces", "100",
                     "--max-train-faces", "0", "--max-test-faces", "0", *TINY)  # fmt: skip
    assert rc == 0, err
    # the same study from another folder, its paths spelled otherwise: resumed (before: "holds
    # a run made with other settings", the base run's path as typed being part of the key)
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, "compression", "--data", "fer", "--out", "report", "--calib-faces",
                     "100", "--max-train-faces", "0", "--max-test-faces", "0", *TINY)  # fmt: skip
    assert rc == 0, err
    monkeypatch.undo()
    text = (out / "README.md").read_text()
    for row in ("| cnn4 FP32 |", "| cnn4 INT8 |", "| cnn4 pruned |", "| cnn4 pruned INT8 |"):
        assert row in text, row
    # the pruned model is smaller than the base (structured: 50% of the MACs asked for)
    rows = {ln.split("|")[1].strip(): ln.split("|") for ln in text.splitlines() if "| cnn4" in ln}
    assert float(rows["cnn4 pruned"][7]) < float(rows["cnn4 FP32"][7])  # MMACs
    # too few faces to calibrate: the FP32 rows and a line saying why (before: a KeyError
    # traceback, and no report)
    few = tmp_path / "few"
    rc, _, err = run(capsys, "compression", "--data", fer, "--out", few,
                     "--max-train-faces", "50", "--max-test-faces", "0", *TINY)  # fmt: skip
    assert rc == 0, err
    text = (few / "README.md").read_text()
    assert "| cnn4 FP32 |" in text and "| cnn4 pruned |" in text and "INT8 |" not in text
    assert "no INT8 model (50 training faces to calibrate on" in text
    assert "--max-train-faces" in text and "--samples" not in text
    # all of a small training part already in the sample: a larger limit would not help
    small = gray_folders(tmp_path / "small", ("angry", "happy", "sad"), 20)
    rc, _, err = run(capsys, "compression", "--data", small, "--out", tmp_path / "small_out",
                     *TINY)  # fmt: skip
    assert rc == 0, err
    text = (tmp_path / "small_out" / "README.md").read_text()
    assert "training part has 48 faces in all" in text and "a larger --max-train-faces" not in text


@pytest.mark.shared("data/fer2013/train")
def test_preprocessing_with_alignment(tmp_path, capsys) -> None:
    from edge_fer.experiment.studies import _align_available

    why = _align_available()
    if why:
        pytest.skip(f"alignment unavailable: {why}")
    gray = gray_folders(tmp_path / "gray", ("angry", "happy", "sad", "neutral"), 10)
    out = tmp_path / "report"
    rc, _, err = run(capsys, "preprocessing", "--data", gray, "--out", out, "--variants",
                     "plain,clahe+align", "--test-fraction", "0.3", *TINY)  # fmt: skip
    assert rc == 0, err
    text = (out / "README.md").read_text()
    assert "| plain |" in text and "| clahe+align |" in text
    assert "the bundled eye model found the eyes of" in text


def test_the_bundled_models_epochs_come_from_its_own_metadata(tmp_path):
    """The architectures report's epochs column for the bundled model reads the export's
    provenance (chosen epoch of the planned schedule), so it follows the weights."""
    import json

    import onnx

    from edge_fer.classify import default_model_path
    from edge_fer.experiment.zoo import _bundled_epochs

    model = onnx.load(str(default_model_path()))
    meta = {p.key: p.value for p in model.metadata_props}
    prov = json.loads(meta["edge_fer.provenance"])
    planned = prov["config"]["epochs"]
    if prov.get("averaged_from"):  # an average of the last epochs (the bundled gen3 weights)
        n = [int(x.split("_")[1].split(".")[0]) for x in prov["averaged_from"]]
        want = f"bundled (epochs {min(n)}-{max(n)} of {planned} averaged)"
    else:
        want = f"bundled (epoch {prov['best_epoch']} of {planned})"
    assert _bundled_epochs(default_model_path()) == want
    (tmp_path / "x.onnx").write_bytes(b"not a model")
    assert _bundled_epochs(tmp_path / "x.onnx") == "bundled (see its card)"


def test_the_latency_line_says_preliminary_only_under_load() -> None:
    """The reports once called every timing preliminary, "measured while other jobs shared the
    2 cores", also on an idle machine: the line now states the load it saw."""

    from edge_fer.experiment.report import latency_line

    cpus = os.cpu_count() or 1
    busy, idle = latency_line(1, cpus + 2.0), latency_line(1, 0.4)
    assert "preliminary" in busy and f"{cpus + 2.0:.1f} on {cpus} logical CPUs" in busy
    assert "preliminary" not in idle and "no more work than cores" in idle
    assert "could not be read" in latency_line(2, None) and "2 thread(s)" in latency_line(2, None)
    assert "load average" in latency_line(1)  # read from the machine itself


def test_the_short_budget_note_reads_the_bundled_models_schedule() -> None:
    """The note said "the bundled vgg trained 36 epochs on all 28,709 FER2013 Training faces"
    whatever the bundled model was (120 epochs, SFEW faces, averaged)."""
    from types import SimpleNamespace

    from edge_fer.experiment.studies import _budget_note

    opts = SimpleNamespace(budget=SimpleNamespace(epochs=2, max_train_faces=0, max_batches=0))
    note = _budget_note(opts, [])
    assert "36 epochs" not in note and "of 120" in note and "model card" in note


# ---- an empty --archs / --variants, "INT8 nan" when too few faces to calibrate ----------------
# (`edge-fer` in child processes on a FER2013-layout dataset of real faces; collected, before,
# under safetensors too)

needs_safetensors = needs_modules("safetensors")


@needs_safetensors
@pytest.mark.shared("data/fer2013/train")
def test_experiment_refuses_an_empty_list(small_fer, tmp_path, tiny_fer_env):
    # before: --archs "" trained the whole zoo (hours), --variants , every variant
    for argv, flag in ((["architectures", "--archs", ""], "--archs"),
                       (["grouping", "--variants", ","], "--variants"),
                       (["architectures", "--archs", " , "], "--archs")):  # fmt: skip
        proc = run_cli(
            "experiment", *argv, "--data", small_fer, "--out", tmp_path / "o", env=tiny_fer_env
        )
        line = refusal_line(proc)
        assert flag in line and "names nothing" in line, line
    assert not (tmp_path / "o").exists()


@needs_safetensors
@pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
def test_int8_skipped_says_why_not_nan(small_fer, small_fer_odd_batch_run, tmp_path, tiny_fer_env):
    runs, _ = small_fer_odd_batch_run
    proc = run_cli("experiment", "architectures", "--runs", runs, "--archs", "cnn4",
                   "--no-bundled", "--data", small_fer, "--out", tmp_path / "rep",
                   "--max-test-faces", 0, "--latency-threads", 1, env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "nan" not in proc.stderr, proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if "accuracy FP32" in ln)
    assert "INT8 skipped: 70 training faces to calibrate on; at least 100" in line, line
