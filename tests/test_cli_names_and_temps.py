"""Nested commands named whole in their error lines (`edge-fer keras import: error: ...`),
train-cascade's recorded command free of local absolute paths, and the staging folder a killed
`edge-fer experiment` left removed by the next run into its folder. Real files, the real CLI."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import pytest
from paths import BACKGROUNDS, WEBFACES, fer_files, needs_modules
from processes import run_cli, run_main

# ---- a) nested commands name the whole command ---------------------------------------------


def test_nested_commands_name_themselves_whole_in_error_lines(tmp_path, capsys):
    """Before: a user error in `keras import` said `edge-fer keras: error: ...`, where
    argparse's own mistakes in it said `edge-fer keras import: error: ...`."""
    missing = tmp_path / "missing.h5"
    for argv, line in (
        # user errors: the library's, and one naming its parameter (shown as the flag)
        (["keras", "import", missing, "--out", tmp_path / "o.onnx"],
         f"edge-fer keras import: error: {missing}: no such Keras model file"),
        (["keras", "prune", missing, "--data", tmp_path, "--out", tmp_path / "o.onnx",
          "--scale", "x"],
         "edge-fer keras prune: error: --scale 'x': expected LO,HI such as -1,1 or 0,1"),
        # deploy says the same as before, through main as every command (it had a wrapper of
        # its own); a field of another name than its option's dest is said by that option
        (["deploy", "triton", "--out", tmp_path / "kit", "--name", "a.b"],
         "edge-fer deploy triton: error: --name 'a.b': use letters, digits, '-' and '_' only"),
        (["deploy", "triton", "--out", tmp_path / "kit", "--platform", "tensorrt",
          "--instance-kind", "cpu"],
         "edge-fer deploy triton: error: --instance-kind is the ONNX Runtime model's"),
        # a command with no sub-command keeps its one name
        (["detect", tmp_path / "none.jpg"], "edge-fer detect: error: "),
    ):  # fmt: skip
        rc, _, err = run_main(argv, capsys)
        assert rc == 2 and err.count("\n") == 1 and err.startswith(line), (argv, err)
    # argparse's own mistakes (an exit from the parser: a child process), as before
    proc = run_cli("keras", "qat", "m.h5", "--data", "d", "--out", "o.onnx", "--bogus")
    assert proc.returncode == 2 and proc.stderr == (
        "edge-fer keras qat: error: unrecognized arguments: --bogus (see edge-fer keras qat "
        "--help)\n"
    ), proc.stderr
    assert not (tmp_path / "o.onnx").exists() and not (tmp_path / "kit").exists()


def test_deploy_options_are_said_by_their_flags(tmp_path):
    """Each field of the options a deploy kit is made from, which the library's errors name
    (`kind must be gpu or cpu`), is said by its command's flag through main's one mechanism
    (flag_for, with the dests a parser maps in its `param_dests` default): `kind` and
    `platforms` are --instance-kind and --platform, not left as the field's name."""
    import dataclasses

    from edge_fer.cli.main import build_parser, flag_for
    from edge_fer.deploy.deepstream import DeepStreamOptions
    from edge_fer.deploy.triton import TritonOptions

    parser = build_parser()
    for kind, cls in (("deepstream", DeepStreamOptions), ("triton", TritonOptions)):
        args = parser.parse_args(["deploy", kind, "--out", str(tmp_path / "kit")])
        flags = {f.name: flag_for(parser, args, f.name) for f in dataclasses.fields(cls)}
        assert None not in flags.values(), (kind, flags)
        assert all(f.startswith("--") for f in flags.values()), (kind, flags)
        if kind == "triton":
            assert flags["kind"] == "--instance-kind" and flags["platforms"] == "--platform"
    assert not (tmp_path / "kit").exists()


# ---- b) train-cascade records its command without local absolute paths ----------------------


@pytest.mark.shared("data/webfaces", "data/backgrounds")
def test_train_cascade_records_its_command_without_local_absolute_paths(tmp_path):
    """Before: state.json (and the model card eval-detector makes from it) held the command
    with the absolute paths typed: /home/someone/... in a file that travels."""
    from edge_fer.cascade_train.annotations import read_webfaces

    data, cwd = tmp_path / "data", tmp_path / "work"  # the data outside the working folder
    (data / "images").mkdir(parents=True)
    cwd.mkdir()
    im = read_webfaces(WEBFACES)[0][0]
    (data / "images" / im.path.name).write_bytes(im.path.read_bytes())
    f = im.faces[0]
    boxes = data / "boxes.txt"
    boxes.write_text(
        f"images/{im.path.name} {f.col - f.size / 2:.1f} {f.row - f.size / 2:.1f} "
        f"{f.size:.1f} {f.size:.1f}\n"
    )
    (cwd / "bg").mkdir()
    for p in sorted(BACKGROUNDS.iterdir())[:3]:
        shutil.copy(p, cwd / "bg" / p.name)
    out = cwd / "run"
    argv = ["train-cascade", f"--boxes={boxes}", "--backgrounds", "bg", "--out", str(out),
            "--tests", "32", "--depth", "4", "--stage-trees", "2", "--max-stages", "1",
            "--threads", "1"]  # fmt: skip
    proc = run_cli(*argv, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    command = json.loads((out / "state.json").read_text())["command"]
    assert str(tmp_path) not in command, command
    # outside the working folder: the name; inside it: relative to it; relative: as typed
    want = ["edge-fer", *argv]
    want[2], want[6] = "--boxes=boxes.txt", "run"
    assert shlex.split(command) == want, command


# ---- c) a killed experiment's staging folder is removed by the next run ---------------------


def _dead_pid() -> int:
    """The id of a process that has ended (a finished child, reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@needs_modules("torch", "matplotlib", "safetensors")
@pytest.mark.shared("data/fer2013/train")
def test_an_experiment_removes_what_a_killed_run_left_in_its_folder(tmp_path, capsys):
    """Before: a run killed with SIGKILL (no `finally`) left its `.report.PID.tmp` staging
    folder, or a half-written `.README.md.PID.TID.tmp`, in --out for good. Only our names with
    a process that has ended, untouched for a while, are removed."""
    data = tmp_path / "faces"
    for cls in ("angry", "happy", "sad", "neutral"):
        (data / cls).mkdir(parents=True)
        for i, f in enumerate(fer_files(cls, "Training", 6)):
            shutil.copy(f, data / cls / f"face_{i}.jpg")
    out = tmp_path / "out"
    out.mkdir()
    dead = _dead_pid()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        old = time.time() - 3600  # untouched for an hour: well past STALE_AFTER_S
        stale_stage = out / f".report.{dead}.tmp"
        stale_stage.mkdir()
        (stale_stage / "confusion.png").write_bytes(b"half a figure")
        stale_file = out / f".README.md.{dead}.140123.tmp"
        stale_file.write_bytes(b"half a report")
        running = out / f".report.{alive.pid}.tmp"  # another run, still drawing
        running.mkdir()
        young = out / f".curves.png.{dead}.7.tmp"  # a shared folder's other machine's, maybe
        young.write_bytes(b"")
        mine = out / ".report.notes.tmp"  # not a name of ours
        mine.write_text("keep")
        for p in (stale_stage / "confusion.png", stale_stage, stale_file, running, mine):
            os.utime(p, (old, old))
        rc, _, err = run_main(["experiment", "grouping", "--data", data, "--out", out,
                               "--variants", "3", "--epochs", "1", "--max-batches", "1",
                               "--batch-size", "16", "--threads", "1"], capsys)  # fmt: skip
        assert rc == 0, err
    finally:
        alive.kill()
        alive.wait()
    assert (out / "README.md").is_file()
    assert not stale_stage.exists() and not stale_file.exists()
    assert running.is_dir() and young.exists() and mine.read_text() == "keep"
