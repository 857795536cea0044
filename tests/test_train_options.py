"""`edge-fer train`: every option is checked before anything is loaded or written (one line,
exit 2, no run folder); a run folder never takes the place of a file or of one of its inputs.
Tiny synthetic faces, in-process, no training unless a run is meant to happen (and real faces
for a few `edge-fer train` child processes)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from paths import banded_faces, fer_class_folders, needs_modules
from processes import refusal_line, run_cli

pytest.importorskip("torch")
pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """4 synthetic 48x48 faces per class, in class folders."""
    return banded_faces(tmp_path_factory.mktemp("train_opts") / "faces", 4)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDGE_FER_CACHE", str(tmp_path / "cache"))


def _train(capsys, faces: Path, out: Path, *flags) -> tuple[int, list[str]]:
    from edge_fer.cli.main import main

    argv = ["train", "--arch", "cnn4", "--data", str(faces), "--out", str(out)]
    argv += ["--max-batches", "1", "--batch-size", "8", "--threads", "1", "--precise-bn", "0"]
    try:
        rc = main([*argv, *map(str, flags)])
    except SystemExit as exc:  # argparse's own checks (--threads)
        rc = exc.code
    err = capsys.readouterr().err
    return rc, [ln for ln in err.splitlines() if ln.strip()]


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
        (["--weight-decay", "-1"], "--weight-decay"),
        (["--label-smoothing", "5"], "--label-smoothing must be a finite number in [0, 1)"),
        (["--cutmix", "nan"], "--cutmix must be a finite number >= 0"),
        (["--mixup", "inf"], "--mixup"),
        (["--distill-temperature", "inf"], "--distill-temperature"),
        (["--patience", "-1"], "--patience must be an integer >= 0"),
        (["--seed", "-1"], "--seed must be an integer >= 0"),
        (["--threads", "-1"], "--threads: expected a number of threads in 0..256"),
        (["--threads", "10000"], "--threads: expected a number of threads in 0..256"),
        (["--input-size", "0"], "--input-size must be in 16..512 px"),
        (["--input-size", "4"], "--input-size must be in 16..512 px"),
        # before: a 1G-parameter net, ended by the out-of-memory killer after 23 GB
        (["--input-size", "2000"], "--input-size must be in 16..512 px"),
        (["--arch-kwargs", '{"nope": 1}'], "--arch-kwargs {'nope': 1} do not fit cnn4"),
        (["--arch-kwargs", "[1]"], "--arch-kwargs takes a JSON object"),
        (["--arch-kwargs", "{"], "--arch-kwargs is not JSON"),
        (["--arch", "vgg", "--arch-kwargs", '{"depths": [2, 2, 3]}'], "depths must be 4 whole"),
        (["--arch", "vgg", "--arch-kwargs", '{"depths": [2, 2, 0, 3]}'], "depths must be 4 whole"),
        (["--arch", "vgg", "--arch-kwargs", '{"depths": [2, 2, 2.5, 3]}'], "depths must be 4"),
        (["--arch", "vgg", "--arch-kwargs", '{"depths": "2233"}'], "depths must be 4 whole"),
        # tracebacks: torch's negative dimension, a 360 GB allocation, an IndexError
        (["--arch", "vgg", "--arch-kwargs", '{"widths": [-8, 8, 8, 8]}'], "do not fit vgg"),
        (["--arch", "mobilenet", "--arch-kwargs", '{"alpha": 1e9}'], "do not fit mobilenet"),
        (["--arch", "mobilenet", "--arch-kwargs", '{"alpha": 1e309}'], "do not fit mobilenet"),
        (["--arch", "mobilenet", "--arch-kwargs", '{"alpha": NaN}'], "do not fit mobilenet"),
        (["--arch", "cnn8_tanh", "--arch-kwargs", '{"width": 0}'], "do not fit cnn8_tanh"),
        (["--device", "bogus"], "--device must be auto, cpu, cuda or cuda:N"),  # a traceback
        (["--device", "mps"], "--device is mps, which this torch cannot use"),  # a traceback
        (["--device", "meta"], "--device is meta, which holds no data"),
        # recorded and ignored before (the teachers ran for a loss term of weight 0)
        (["--teacher", "TEACHER", "--distill", "0"], "--teacher is not used with --distill 0"),
        (["--no-augment", "--crop-aug=-0.05,0.05"], "--crop-aug is not applied with --no-a"),
        (["--no-augment", "--exposure-aug", "0.5,1"], "--exposure-aug is not applied with"),
    ],
)
def test_bad_options_are_one_line_before_anything(capsys, faces, tmp_path, flags, needle):
    out = tmp_path / "run"
    rc, lines = _train(capsys, faces, out, "--epochs", 1, *flags)
    assert rc == 2 and len(lines) == 1 and needle in lines[0], lines
    assert not out.exists()  # nothing made


def test_paths_that_exist_but_are_no_input_and_an_out_among_extra_faces(capsys, faces, tmp_path):
    """/dev/null was "no such file or folder" (--data) and "no such model file" (--teacher);
    --out inside --extra-train wrote the run among the extra faces (inside --data: refused)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # exists, is neither a folder nor a file (as /dev/null)
    from edge_fer.cli.main import main

    base = ["train", "--arch", "cnn4", "--epochs", "1", "--threads", "1"]
    for argv, needle in (
        (["--data", str(fifo), "--out", str(tmp_path / "r")], "pipe: not a dataset"),
        (["--data", str(faces), "--out", str(tmp_path / "r"), "--teacher", str(fifo)],
         "--teacher " + str(fifo) + ": not a regular file"),
        (["--data", str(faces), "--extra-train", str(tmp_path / "extra"), "--out",
          str(tmp_path / "extra" / "run")], "--extra-train"),
    ):  # fmt: skip
        (tmp_path / "extra" / "happy").mkdir(parents=True, exist_ok=True)
        assert main([*base, *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
        assert not (tmp_path / "r").exists() and not (tmp_path / "extra" / "run").exists()


def test_a_class_whose_only_face_was_held_out_says_so(capsys, faces, tmp_path):
    """Two classes of one face each: the held-out 10% takes one, and the message told the user
    to pass the folder of class folders, which they had."""
    import shutil

    two = tmp_path / "two"
    for cls in sorted(p.name for p in faces.iterdir())[:2]:
        (two / cls).mkdir(parents=True)
        shutil.copy(min((faces / cls).iterdir()), two / cls)
    rc, lines = _train(capsys, two, tmp_path / "run", "--epochs", 1)
    assert rc == 2 and len(lines) == 1, lines
    assert "hold the only faces of" in lines[0] and "pass the folder" not in lines[0], lines


def test_resume_reads_the_runs_arch_and_a_new_run_needs_one(capsys, faces, tmp_path) -> None:
    """--resume refused to start without --arch (argparse: "the following arguments are
    required"), though the run records it; the resume command the docs gave failed so."""
    from edge_fer.cli.main import main

    out = tmp_path / "run"
    rc, lines = _train(capsys, faces, out, "--epochs", 1)
    assert rc == 0, lines
    argv = ["train", "--data", str(faces), "--out", str(out), "--max-batches", "1"]
    argv += ["--batch-size", "8", "--threads", "1", "--precise-bn", "0", "--resume"]
    assert main([*argv, "--epochs", "2"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert any(re.match(r"epoch +2/2  loss", ln) for ln in lines), lines
    # without a run to resume, or without --resume, --arch is one line, nothing made
    for resume in (["--resume"], []):
        fresh = tmp_path / f"fresh{len(resume)}"
        assert main([*argv[:-1], "--out", str(fresh), *resume]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--arch is required" in err[0], err
        assert not fresh.exists()


def test_a_diverging_run_stops_with_one_line(capsys, faces, tmp_path) -> None:
    """--lr 1e30: the loss became NaN, the run went on and saved NaN weights as its best."""
    out = tmp_path / "run"
    rc, lines = _train(capsys, faces, out, "--epochs", 2, "--lr", "1e30")
    err = [ln for ln in lines if "error" in ln]
    assert rc == 2 and len(err) == 1 and "the training diverged in epoch 1" in err[0], lines
    assert not (out / "best.safetensors").exists()


def test_epochs_zero_is_refused_also_on_resume(capsys, faces, tmp_path) -> None:
    out = tmp_path / "run"
    rc, lines = _train(capsys, faces, out, "--epochs", 1)
    assert rc == 0, lines
    rc, lines = _train(capsys, faces, out, "--resume", "--epochs", 0)
    assert rc == 2 and len(lines) == 1 and "--epochs must be >= 1" in lines[0], lines
    argv = ["train", "--arch", "vgg", "--data", str(faces), "--out", str(out), "--resume"]
    from edge_fer.cli.main import main

    assert main(argv) == 2  # before: "resuming" the cnn4 run, the --arch given ignored
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--arch is 'vgg', but the run in" in lines[0], lines
    rc, lines = _train(capsys, faces, out, "--resume", "--epochs", 2)
    ends = [ln for ln in lines if re.match(r"epoch +\d+/\d+  loss", ln)]  # an epoch's result
    assert rc == 0 and len(ends) == 1, lines
    # settings the resume does not apply are named (before: silently ignored), and a run with
    # nothing left to train says so
    rc, lines = _train(capsys, faces, out, "--resume", "--lr", "0.01", "--seed", "7")
    notes = [ln for ln in lines if "keeps the run's own settings" in ln]
    assert rc == 0 and len(notes) == 1, lines
    assert "--lr 0.01 (the run's: 0.05)" in notes[0] and "--seed 7 (the run's: 0)" in notes[0]
    assert any("has done 2 epochs, its --epochs is 2: nothing to train" in ln for ln in lines)


def test_a_run_is_never_shortened_below_what_it_has_done(capsys, faces, tmp_path) -> None:
    """`--resume --epochs N` under the epochs done said "nothing to train", then averaged other
    snapshots over the run's averaged.safetensors and rewrote its config.json; `--epochs 0`
    printed an averaging notice before its error."""
    out = tmp_path / "run"
    rc, lines = _train(capsys, faces, out, "--epochs", 2, "--average-last", 2)
    assert rc == 0, lines
    before = {n: (out / n).read_bytes() for n in ("averaged.safetensors", "config.json")}
    for n, needle in ((1, "--epochs is 1, but the run in"), (0, "--epochs must be >= 1")):
        rc, lines = _train(capsys, faces, out, "--resume", "--epochs", n)
        assert rc == 2 and len(lines) == 1 and needle in lines[0], lines
    assert {n: (out / n).read_bytes() for n in before} == before
    # a new run into a folder that holds a trained run, even without last.safetensors
    (out / "last.safetensors").unlink()
    rc, lines = _train(capsys, faces, out, "--epochs", 1)
    assert rc == 2 and len(lines) == 1 and "already holds a run (best.safetensors" in lines[0]
    assert "cannot be resumed (no last.safetensors)" in lines[0], lines
    assert {n: (out / n).read_bytes() for n in before} == before
    # nor with --resume (before: "nothing to resume", and the run started over, replacing its
    # best and averaged weights, log and results)
    rc, lines = _train(capsys, faces, out, "--epochs", 3, "--resume")
    assert rc == 2 and len(lines) == 1 and "cannot be resumed" in lines[0], lines
    assert {n: (out / n).read_bytes() for n in before} == before


def test_out_must_be_a_folder_and_never_an_input(capsys, faces, tmp_path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep")
    for out, needle in ((afile, "exists and is not a folder"), (afile / "run", "is not a folder")):
        rc, lines = _train(capsys, faces, out, "--epochs", 1)
        assert rc == 2 and len(lines) == 1 and f"--out {out}: " in lines[0], lines
        assert needle in lines[0], lines
    assert afile.read_text() == "keep"
    # --init the run folder's best.safetensors (a run without last.safetensors): the first
    # epoch would write over it
    done = tmp_path / "done"
    assert _train(capsys, faces, done, "--epochs", 1)[0] == 0
    again = tmp_path / "again"
    again.mkdir()
    init = again / "best.safetensors"
    init.write_bytes((done / "best.safetensors").read_bytes())
    before = init.read_bytes()
    rc, lines = _train(capsys, faces, again, "--epochs", 1, "--init", init)
    assert rc == 2 and len(lines) == 1, lines
    assert "already holds a run (best.safetensors)" in lines[0], lines
    assert init.read_bytes() == before and not (again / "log.csv").exists()


def test_one_class_folder_is_refused(faces, tmp_path, capsys):
    """A dataset of one class folder used to train and report accuracy 1.0."""
    import shutil

    one = tmp_path / "one"
    shutil.copytree(faces / "happy", one / "happy")
    rc, err = _train(capsys, one, tmp_path / "run")
    assert rc == 2 and len(err) == 1, err
    assert "--data" in err[0] and "at least two" in err[0], err[0]
    assert not (tmp_path / "run").exists()


def test_resume_needs_a_run_folder_and_out_stays_outside_the_data(capsys, faces, tmp_path):
    # before: --resume on a folder of data started a fresh run there, and --out inside --data
    # wrote the run's files among the faces
    data_like = tmp_path / "shots"
    (data_like / "happy").mkdir(parents=True)
    rc, lines = _train(capsys, faces, data_like, "--epochs", 1, "--resume")
    assert rc == 2 and len(lines) == 1 and "is not a run folder" in lines[0], lines
    assert "--out" in lines[0] and sorted(p.name for p in data_like.iterdir()) == ["happy"]
    for out in (faces, faces / "happy", faces / "new_run"):
        rc, lines = _train(capsys, faces, out, "--epochs", 1)
        assert rc == 2 and len(lines) == 1 and "is inside --data" in lines[0], lines
    assert not (faces / "new_run").exists() and not (faces / "config.json").exists()
    # a symlink in the dataset that points elsewhere is still inside it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (faces / "link").symlink_to(elsewhere)
    try:
        rc, lines = _train(capsys, faces, faces / "link", "--epochs", 1)
        assert rc == 2 and "is inside --data" in lines[0], lines
    finally:
        (faces / "link").unlink()
    # nothing saved yet (a log beside it is fine): --resume starts the run and says so
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "train.log").write_text("")
    rc, lines = _train(capsys, faces, fresh, "--epochs", 1, "--resume")
    assert rc == 0 and any("nothing to resume" in ln for ln in lines), lines
    assert (fresh / "last.safetensors").exists()


def test_extra_faces_from_inside_the_dataset_are_refused(capsys, faces, tmp_path) -> None:
    # before: --data D --extra-train D/<part> trained on D's own held-out faces without a word
    sub = next(p for p in Path(faces).iterdir() if p.is_dir())
    for extra in (faces, sub):
        out = tmp_path / "run"
        rc, lines = _train(capsys, faces, out, "--epochs", 1, "--extra-train", extra)
        assert rc == 2 and len(lines) == 1 and "--extra-train" in lines[0], lines
        assert "overlap" in lines[0] and not out.exists(), lines


def test_resume_takes_this_machines_settings_and_finds_its_data(capsys, faces, tmp_path,
                                                                monkeypatch) -> None:  # fmt: skip
    """--resume kept the run's --device and --threads (a CPU run could never go on on a GPU),
    and from another folder it could not find a relative --data, refusing the right one given."""
    import json
    import shutil

    shutil.copytree(faces, tmp_path / "faces")
    monkeypatch.chdir(tmp_path)
    rc, lines = _train(capsys, Path("faces"), Path("runs/r"), "--epochs", 1, "--device", "cpu")
    assert rc == 0, lines
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    rc, lines = _train(capsys, Path("../faces"), Path("../runs/r"), "--resume", "--epochs", 2,
                       "--threads", 2, "--device", "auto")  # fmt: skip
    assert rc == 0 and not any("not applied" in ln for ln in lines), lines
    saved = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    assert saved["threads"] == 2 and saved["device"] == "auto" and saved["epochs"] == 2


def test_average_last_averages_the_last_epochs_of_a_run_that_stopped_early(capsys, faces,
                                                                          tmp_path) -> None:  # fmt: skip
    """Snapshots began only at epoch --epochs - K, so a run that early stopping ended before
    then averaged nothing, without a word. A learning rate too small to change the held-out
    accuracy makes --patience 1 stop it after epoch 2 of 8."""
    import json

    out = tmp_path / "run"
    rc, lines = _train(capsys, faces, out, "--epochs", 8, "--patience", 1, "--average-last", 3,
                       "--lr", "1e-12")  # fmt: skip
    assert rc == 0 and any("early stop" in ln for ln in lines), lines
    res = json.loads((out / "result.json").read_text())
    assert res["averaged"]["checkpoints"] == ["epoch_001.safetensors", "epoch_002.safetensors"]
    assert (out / "averaged.safetensors").is_file()


def test_flag_names_in_messages_and_no_folder_left_by_a_bad_teacher(capsys, faces,
                                                                    tmp_path) -> None:  # fmt: skip
    """ "unknown architecture 'nope'", "unknown test-time augmentation", "nope: no such file or
    folder" named no flag; a teacher that is no model left an empty --out folder behind."""
    garbage = tmp_path / "garb.onnx"
    garbage.write_text("garbage")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    for flags, words in (
        (["--arch", "nope"], "--arch is 'nope'; choose one of"),
        (["--teacher", garbage, "--distill", 0.3, "--teacher-tta", "bogus"], "--teacher-tta is"),
        (["--teacher", garbage, "--distill", 0.3], f"--teacher {garbage}: not a loadable ONNX"),
        (["--init", garbage], f"--init {garbage}: not an ONNX model"),
        (["--extra-train", empty], f"--extra-train {empty}: no images found"),
    ):
        rc, lines = _train(capsys, faces, out, "--epochs", 1, *flags)
        assert rc == 2 and len(lines) == 1 and words in lines[0], (flags, lines)
        assert not out.exists()
    rc, lines = _train(capsys, tmp_path / "nope", out, "--epochs", 1)
    assert rc == 2 and lines[0].endswith(f"--data {tmp_path / 'nope'}: no such file or folder")


def test_align_frame_needs_align(capsys, faces, tmp_path) -> None:
    """--align-frame without --align was accepted and written into the model's metadata."""
    out = tmp_path / "run"
    rc, lines = _train(capsys, faces, out, "--epochs", 1, "--align-frame", "1.7,1.3,3.2")
    assert rc == 2 and len(lines) == 1 and "--align-frame needs --align" in lines[0], lines
    assert not out.exists()


def test_a_new_run_keeps_off_files_that_are_not_a_runs(capsys, faces, tmp_path) -> None:
    """A user's config.json was replaced by the run's, and a user's log.csv got epoch rows
    appended under its own first line (no header: not a run log)."""
    for name, text in (("config.json", '{"my": "settings"}'), ("log.csv", "my notes\n"),
                       ("log.csv", "my notes\nmore notes\n")):  # fmt: skip
        out = tmp_path / f"user_{name}_{len(text)}"
        out.mkdir()
        (out / name).write_text(text)
        for resume in ((), ("--resume",)):
            rc, lines = _train(capsys, faces, out, "--epochs", 1, *resume)
            assert rc == 2 and len(lines) == 1, (name, resume, lines)
            assert f"{name}" in lines[0] and "not a run's" in lines[0], lines
            assert sorted(p.name for p in out.iterdir()) == [name]
            assert (out / name).read_text() == text
    # what a run writes before its first epoch ends (its config, the log's header) is its own
    first = tmp_path / "first"
    assert _train(capsys, faces, first, "--epochs", 1)[0] == 0
    again = tmp_path / "again"
    again.mkdir()
    (again / "config.json").write_bytes((first / "config.json").read_bytes())
    header = (first / "log.csv").read_text().splitlines()[0]
    (again / "log.csv").write_text(header + "\n")
    rc, lines = _train(capsys, faces, again, "--epochs", 1)
    assert rc == 0, lines
    assert [r.split(",")[0] for r in (again / "log.csv").read_text().splitlines()] == [
        "epoch",
        "1",
    ]


def test_no_training_batch_of_one_face(capsys, faces, tmp_path) -> None:
    """26 training faces in batches of 25 left a last batch of one: mini_xception's batch norm
    at 1x1 (--input-size 16) stopped the run mid-epoch with a traceback. It joins the batch
    before it; --batch-size 1, where every batch is one face, is refused up front."""
    small = ["--arch", "mini_xception", "--input-size", 16, "--max-batches", 0]
    out = tmp_path / "run"
    rc, lines = _train(capsys, faces, out, "--epochs", 1, *small, "--batch-size", 25)
    assert rc == 0, lines
    assert any(ln.endswith("epochs 1-1 of 1 batches") for ln in lines), lines
    out1 = tmp_path / "run1"
    rc, lines = _train(capsys, faces, out1, "--epochs", 1, *small, "--batch-size", 1)
    assert rc == 2 and len(lines) == 1 and "error: --batch-size is 1, but" in lines[0], lines
    assert "mini_xception" in lines[0] and not out1.exists(), lines


def test_odd_batches_train(faces, tmp_path) -> None:
    """mini_xception in batches of 3 (channels-last on the CPU, as the trainer runs it) killed
    the process in torch 2.13's oneDNN backward (SIGSEGV or "double free") with 2 threads; a child process,
    so that a crash fails this test rather than the test run."""
    from processes import run_cli

    out = tmp_path / "run"
    p = run_cli("train", "--arch", "mini_xception", "--data", str(faces), "--out", str(out),
                "--epochs", "1", "--batch-size", "3", "--max-batches", "3", "--threads", "2")  # fmt: skip
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
    assert (out / "best.safetensors").is_file()


def test_an_early_stopped_run_stays_stopped_on_resume(capsys, faces, tmp_path) -> None:
    """Each --resume of a run that early stopping ended trained one more epoch and rewrote
    its checkpoints and result; a run that ended at --epochs says there is nothing to train."""
    import json

    out = tmp_path / "run"
    flags = ("--epochs", 8, "--patience", 1, "--average-last", 2, "--lr", "1e-12")
    rc, lines = _train(capsys, faces, out, *flags)
    assert rc == 0 and any("early stop" in ln for ln in lines), lines
    done = len((out / "log.csv").read_text().splitlines()) - 1
    kept = {n: (out / n).read_bytes() for n in ("last.safetensors", "best.safetensors")}
    for _ in range(2):
        rc, lines = _train(capsys, faces, out, *flags, "--resume")
        assert rc == 0, lines
        assert any(f"stopped early at epoch {done}" in ln and "nothing to train" in ln
                   for ln in lines), lines  # fmt: skip
        assert not any(re.match(r"epoch +\d+/\d+  loss", ln) for ln in lines), lines
    assert len((out / "log.csv").read_text().splitlines()) - 1 == done
    assert {n: (out / n).read_bytes() for n in kept} == kept
    res = json.loads((out / "result.json").read_text())  # the ended run's steps are still done
    assert len(res["averaged"]["checkpoints"]) == 2


def test_resume_finds_the_runs_moved_inputs(capsys, faces, tmp_path, monkeypatch) -> None:
    """--resume needed --init, --teacher and --extra-train where they were first given: a
    moved one given by its new path was "not applied", then "no such model file" (exit 2),
    so the run could not go on. A resume never reads --init (its weights are last's), and the
    others are found as --data is: from the folders above the run, or as given now."""
    import json
    import shutil

    from paths import FER_MODEL

    monkeypatch.chdir(tmp_path)
    assert _train(capsys, faces, Path("pre"), "--epochs", 1)[0] == 0
    shutil.copy("pre/best.safetensors", "init.safetensors")
    shutil.copy(FER_MODEL, "t.onnx")
    (tmp_path / "ex" / "happy").mkdir(parents=True)
    shutil.copy(next((faces / "happy").iterdir()), tmp_path / "ex" / "happy" / "x.png")
    run = Path("runs/r")
    given = ("--init", "init.safetensors", "--teacher", "t.onnx", "--distill", 0.3,
             "--extra-train", "ex")  # fmt: skip
    rc, lines = _train(capsys, faces, run, "--epochs", 1, *given)
    assert rc == 0, lines
    for a, b in (("init.safetensors", "init2.safetensors"), ("t.onnx", "t2.onnx"), ("ex", "ex2")):
        Path(a).rename(b)
    moved = ("--init", "init2.safetensors", "--teacher", "t2.onnx", "--distill", 0.3,
             "--extra-train", "ex2")  # fmt: skip
    rc, lines = _train(capsys, faces, run, "--epochs", 2, "--resume", *moved)
    assert rc == 0 and not any("not applied" in ln for ln in lines), lines
    note = next(ln for ln in lines if "moved" in ln)
    for now in ("init2.safetensors", "t2.onnx", "ex2"):
        assert now in note, note
    saved = json.loads((run / "config.json").read_text())
    assert (saved["teacher"], saved["extra_train"]) == (["t2.onnx"], "ex2"), saved
    # from another folder, nothing given: found above the run (--init not needed at all)
    Path("init2.safetensors").unlink()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    rc, lines = _train(capsys, faces, Path("../runs/r"), "--epochs", 3, "--resume")
    assert rc == 0 and not any("not applied" in ln for ln in lines), lines
    assert len((tmp_path / "runs/r/log.csv").read_text().splitlines()) == 4
    # a teacher neither where recorded, nor above the run, nor given: one line, nothing done
    (tmp_path / "t2.onnx").rename(tmp_path / "t3.onnx")
    rc, lines = _train(capsys, faces, Path("../runs/r"), "--epochs", 4, "--resume")
    assert rc == 2 and len(lines) == 1 and "--teacher " in lines[0], lines
    assert "t2.onnx: no such model file" in lines[0], lines
    assert len((tmp_path / "runs/r/log.csv").read_text().splitlines()) == 4


# ---- an option of an option not given, an empty --out: real faces, `edge-fer` in a child -------

needs_onnx = needs_modules("onnx")


@pytest.fixture(scope="module")
def real_faces(tmp_path_factory) -> Path:
    """4 real Training faces per FER2013 class, in class folders."""
    return fer_class_folders(tmp_path_factory.mktemp("qa") / "faces", 4)


@pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
@needs_onnx
@pytest.mark.parametrize(
    "argv, flag",
    [
        (("--extra-repeat", "2"), "--extra-repeat is 2, but no --extra-train faces"),
        (("--teacher-tta", "flip"), "--teacher-tta is 'flip', but no --teacher is given"),
        (("--distill-temperature", "4"), "--distill-temperature is 4.0, but no --teacher"),
    ],
)
def test_train_option_without_its_option_is_refused(tiny_fer, tiny_fer_env, tmp_path, argv, flag):
    # before: accepted and ignored, the run trained without what was asked
    out = tmp_path / "run"
    proc = run_cli("train", "--arch", "cnn4", "--data", tiny_fer, "--out", out, "--epochs", 1,
                   "--max-batches", 1, "--threads", 1, "--precise-bn", 0, *argv,
                   env=tiny_fer_env)  # fmt: skip
    line = refusal_line(proc)
    assert flag in line, line
    assert not out.exists()


@pytest.mark.shared("data/fer2013/train")
def test_train_with_an_empty_out_writes_nothing_in_the_current_folder(real_faces, tmp_path):
    # a script's unset variable (--out "$RUN"): Path("") is ".", and the run's checkpoints,
    # log and config went into the current folder
    here = tmp_path / "here"
    here.mkdir()
    proc = run_cli("train", "--arch", "cnn4", "--data", real_faces, "--out", "", "--epochs", 1,
                   "--max-batches", 1, "--precise-bn", 0, "--threads", 1, cwd=here)  # fmt: skip
    assert "--out is empty" in refusal_line(proc)
    assert list(here.iterdir()) == []
