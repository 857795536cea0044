"""Weight averaging over a run's last epochs (`edge-fer train --average-last`, `edge-fer
average`): real faces from ../shared, real training for a few batches on one thread."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from paths import fer_class_folders, needs_modules
from processes import refusal_line, run_cli

pytestmark = pytest.mark.shared("data/fer2013/train")
torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """5 real Training faces per class, in class folders."""
    return fer_class_folders(tmp_path_factory.mktemp("avg") / "faces", 5)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> tuple[Path, dict]:
    from edge_fer.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("avg") / "run"
    cfg = TrainConfig(
        arch="vgg", data=str(data), out=str(out), epochs=3, batch_size=8, threads=1,
        max_batches=2, lr=0.01, average_last=2, precise_bn=16,
    )  # fmt: skip
    return out, train(cfg)


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return {k[6:]: v for k, v in load_file(str(path)).items() if k.startswith("model.")}


STATS = ("running_mean", "running_var", "num_batches_tracked")


def test_the_last_epochs_are_averaged_and_measured(run) -> None:
    from edge_fer.export.onnx import load_trained
    from edge_fer.train.precise_bn import batch_norms, precise_bn
    from edge_fer.train.trainer import TrainConfig, load_splits

    out, result = run
    snaps = sorted((out / "snapshots").glob("*.safetensors"))
    assert [p.name for p in snaps] == ["epoch_002.safetensors", "epoch_003.safetensors"]
    avg = result["averaged"]
    assert avg["checkpoints"] == [p.name for p in snaps] and 0 <= avg["val_acc"] <= 1
    got = _weights(out / "averaged.safetensors")
    a, b = _weights(snaps[0]), _weights(snaps[1])
    moved = 0
    for k, v in got.items():
        if not k.endswith(STATS):
            want = (a[k].double() + b[k].double()) / 2
            assert torch.allclose(v.double(), want, atol=1e-6), k
            moved += int(not torch.equal(a[k], b[k]))
    assert moved > 0  # the two epochs' weights differ, so the average is a third model
    # its batch norms were measured on the run's training faces (16, as --precise-bn asked)
    model, spec, state = load_trained(out / "averaged.safetensors")
    assert state["averaged_from"] == avg["checkpoints"]
    saved = [b.running_mean.clone() for b in batch_norms(model)]
    cfg = TrainConfig(**state["config"])
    precise_bn(model, load_splits(cfg)[0].images, spec, "cpu", 16, cfg.seed)
    for s, bn in zip(saved, batch_norms(model)):
        assert torch.allclose(s, bn.running_mean, atol=1e-5)
    # and it exports like any checkpoint
    from edge_fer.classify import Classifier
    from edge_fer.export.onnx import export_checkpoint

    onnx_path = export_checkpoint(out / "averaged.safetensors", out / "avg.onnx")["out"]
    clf = Classifier.load(onnx_path, tta="none", threads=1)
    assert clf.infer(np.zeros((1, 1, 48, 48), np.float32)).shape == (1, 7)
    # its provenance is the average's, not the run's best epoch (another checkpoint)
    prov = json.loads(clf.metadata["edge_fer.provenance"])
    clf.close()
    assert prov["averaged_from"] == avg["checkpoints"] and prov["best_epoch"] is None
    assert prov["val_acc"] == avg["val_acc"] and "best_acc" not in state

    from edge_fer.experiment.zoo import _bundled_epochs

    assert _bundled_epochs(onnx_path) == "bundled (epochs 2-3 of 3 averaged)"


def test_average_command_matches_the_run(run, tmp_path) -> None:
    out, _ = run
    snaps = sorted((out / "snapshots").glob("*.safetensors"))
    p = run_cli("average", *map(str, snaps), "--out", str(tmp_path / "a.safetensors"),
                "--faces", "16", "--threads", "1")  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    assert rep["checkpoints"] == [s.name for s in snaps]
    mine, run_avg = _weights(tmp_path / "a.safetensors"), _weights(out / "averaged.safetensors")
    assert all(torch.allclose(mine[k], run_avg[k], atol=1e-6) for k in mine)


def test_bad_input_is_one_line(run, data, tmp_path) -> None:
    from edge_fer.train.trainer import TrainConfig, train

    out, _ = run
    other = tmp_path / "cnn4"
    train(TrainConfig(arch="cnn4", data=str(data), out=str(other), epochs=1, batch_size=8,
                      threads=1, max_batches=1, precise_bn=0))  # fmt: skip
    snap = out / "snapshots" / "epoch_003.safetensors"
    # the same net on as many classes of other names (before: averaged without a word)
    renamed = tmp_path / "renamed"
    shutil.copytree(data, renamed)
    for i, d in enumerate(sorted(renamed.iterdir())):
        d.rename(renamed / f"class{i}")
    train(TrainConfig(arch="vgg", data=str(renamed), out=str(tmp_path / "vgg_other"), epochs=1,
                      batch_size=8, threads=1, max_batches=1, precise_bn=0))  # fmt: skip
    cases = [
        (["average", str(snap), str(tmp_path / "vgg_other" / "best.safetensors"), "--out",
          str(tmp_path / "x")], "other classes (angry,disgust,"),
        # the other file named in full (before: a bare "best.safetensors", often itself)
        (["average", str(snap), str(other / "best.safetensors"), "--out", str(tmp_path / "x")],
         f"another architecture or preprocessing than {other / 'best.safetensors'}"),
        (["average", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "x")],
         "no such checkpoint"),
        (["average", str(snap), "--out", str(tmp_path / "x"), "--faces", "1"], "--faces"),
        # before: --out DIR/ wrote a file named DIR
        (["average", str(snap), "--out", str(tmp_path / "newdir") + "/"], "names a folder"),
        (["average", str(snap), "--out", str(tmp_path / "x"), "--extra-train", str(data)],
         "--extra-train the run was trained without extra training faces"),
        (["train", "--arch", "vgg", "--data", str(data), "--out", str(tmp_path / "r"),
          "--epochs", "2", "--average-last", "3", "--max-batches", "1"], "--average-last"),
    ]  # fmt: skip
    for argv, needle in cases:
        p = run_cli(*argv)
        assert p.returncode == 2, (argv, p.returncode, p.stderr[-2000:])
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "x").exists()


def test_out_never_overwrites_a_checkpoint_nor_lands_on_a_folder(run, tmp_path) -> None:
    out, _ = run
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes((out / "snapshots" / "epoch_002.safetensors").read_bytes())
    b.write_bytes((out / "snapshots" / "epoch_003.safetensors").read_bytes())
    (tmp_path / "link.safetensors").symlink_to(a)
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("keep")
    before = a.read_bytes()
    cases = [
        ("a.safetensors", "--out a.safetensors is the same file as a checkpoint"),
        ("link.safetensors", "is the same file as a checkpoint (a.safetensors)"),
        ("folder", "--out folder: is a folder"),
        ("afile/x.safetensors", "--out afile/x.safetensors: afile is not a folder"),
        # before: replaced silently (a run's best.safetensors)
        ("afile", "--out afile: exists; pass --force to replace it"),
    ]
    for name, needle in cases:
        p = run_cli("average", "a.safetensors", "b.safetensors", "--out", name, "--faces", "16",
                    "--threads", "1", cwd=tmp_path)  # fmt: skip
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], (name, p.stderr)
    p = run_cli("average", str(a), "--out", str(tmp_path / "y.safetensors"), "--threads", "-1")
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert (
        p.returncode == 2
        and len(lines) == 1
        and "--threads: expected a number of threads in 0..256" in lines[0]
    ), lines
    assert a.read_bytes() == before
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "a.safetensors",
        "afile",
        "b.safetensors",
        "folder",
        "link.safetensors",
    ]  # no temporary file left anywhere
    assert not any((tmp_path / "folder").iterdir())


def test_a_runs_relative_folders_are_found_from_elsewhere(data, tmp_path, monkeypatch) -> None:
    """A run trained from its project folder with relative --data and --extra-train: `average`
    run from another folder finds them above the checkpoints; --extra-train gives a moved one."""
    import shutil

    from edge_fer.train.trainer import TrainConfig, train

    proj = tmp_path / "proj"
    shutil.copytree(data, proj / "data" / "faces")
    for cls in ("happy", "sad"):
        (proj / "data" / "extra" / cls).mkdir(parents=True)
        for f in sorted((data / cls).iterdir())[:2]:
            shutil.copy(f, proj / "data" / "extra" / cls / f.name)
    monkeypatch.chdir(proj)
    train(TrainConfig(arch="cnn4", data="data/faces", extra_train="data/extra", out="runs/r",
                      epochs=2, batch_size=8, threads=1, max_batches=1, average_last=2,
                      precise_bn=16))  # fmt: skip
    snaps = [f"proj/runs/r/snapshots/epoch_00{e}.safetensors" for e in (1, 2)]
    avg = ["average", *snaps, "--faces", "16", "--threads", "1", "--out"]
    p = run_cli(*avg, "avg.safetensors", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["batch_norms_measured"] > 0
    (proj / "data" / "extra").rename(tmp_path / "moved")
    p = run_cli(*avg, "avg2.safetensors", cwd=tmp_path)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith("edge-fer average: error: --extra-train data/extra: "), lines
    p = run_cli(*avg, "avg2.safetensors", "--extra-train", "moved", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]


def test_average_names_same_named_checkpoints_apart(run, tmp_path) -> None:
    """Checkpoints of one name from two folders (two runs' averaged.safetensors) were reported
    as the same name twice; they are now told apart by their folders, and no local absolute
    path is recorded."""
    out, _ = run
    snaps = sorted((out / "snapshots").glob("*.safetensors"))
    for sub, snap in zip(("runA", "runB"), snaps):
        (tmp_path / sub).mkdir()
        shutil.copy(snap, tmp_path / sub / "averaged.safetensors")
    srcs = [str(tmp_path / s / "averaged.safetensors") for s in ("runA", "runB")]
    p = run_cli("average", *srcs, "--out", str(tmp_path / "a.safetensors"),
                "--faces", "16", "--threads", "1")  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    assert rep["checkpoints"] == ["runA/averaged.safetensors", "runB/averaged.safetensors"]
    from edge_fer.export.onnx import load_trained

    assert load_trained(tmp_path / "a.safetensors")[2]["averaged_from"] == rep["checkpoints"]


# ---- one checkpoint, one given twice, a dataset of other classes -------------------------------
# (the first two on a tiny cnn4 run of a FER2013-layout dataset, trained by `edge-fer` in a
# child process; collected, before, under FER2013's test split and onnx too)

needs_fer_test = pytest.mark.shared("data/fer2013/test")
needs_onnx = needs_modules("onnx")


@needs_fer_test
@needs_onnx
def test_average_of_one_checkpoint_says_one(tiny_cnn4_run, tiny_fer_env, tmp_path):
    out = tmp_path / "avg.safetensors"
    proc = run_cli("average", tiny_cnn4_run / "best.safetensors", "--out", out, "--faces", 16,
                   "--threads", 1, env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "averaged 1 checkpoint: " in proc.stderr, proc.stderr


@needs_fer_test
@needs_onnx
def test_average_refuses_a_checkpoint_given_twice(tiny_cnn4_run, tiny_fer_env, tmp_path):
    # before: averaged, the file weighing twice in the "uniform" average (a doubled glob)
    out = tmp_path / "avg.safetensors"
    best = tiny_cnn4_run / "best.safetensors"
    line = refusal_line(run_cli("average", best, tiny_cnn4_run / "." / "best.safetensors",
                                tiny_cnn4_run / "last.safetensors", "--out", out, "--faces", 16,
                                env=tiny_fer_env))  # fmt: skip
    assert f"{best} is given twice" in line, line
    assert not out.exists()


def test_average_with_a_dataset_of_other_classes_is_one_line(
    cnn4_run7, other_class_faces, tmp_path
):
    # before: IndexError traceback from the scoring, after the batch-norm statistics
    out = tmp_path / "avg.safetensors"
    proc = run_cli("average", cnn4_run7 / "last.safetensors", "--data", other_class_faces,
                   "--out", out, "--faces", 8, "--threads", 1)  # fmt: skip
    line = refusal_line(proc)
    assert "--data" in line and "alpha, beta" in line and "angry" in line, line
    assert not out.exists()
