"""Model-side commands with a new user's mistakes (train, average, prune/qat, experiment,
train-eyes): each is one line and exit 2 (or a UserError naming the parameter) before the work,
and nothing is written where it was not asked for. Real faces from ../shared, real runs of a
batch or two on one thread."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from paths import FER, WEBFACES, fer_class_folders
from processes import run_cli

pytestmark = pytest.mark.shared("data/fer2013/train")
torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from edge_fer.errors import UserError


def one_error_line(proc) -> str:
    """The one line a user's mistake prints (exit 2, no traceback)."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """4 real Training faces per FER2013 class, in class folders."""
    return fer_class_folders(tmp_path_factory.mktemp("qa") / "faces", 4)


@pytest.fixture(scope="module")
def other_classes(tmp_path_factory) -> Path:
    """Real faces under two class names that are not FER2013's."""
    dst = tmp_path_factory.mktemp("qa") / "ab"
    for name, cls in (("alpha", "happy"), ("beta", "sad")):
        (dst / name).mkdir(parents=True)
        for i, f in enumerate(sorted((FER / "train" / cls).glob("Training_*.jpg"))[:6]):
            shutil.copy(f, dst / name / f"f{i}.jpg")
    return dst


def _config(data: Path, out: Path, **kw):
    from edge_fer.train.trainer import TrainConfig

    kw = {"epochs": 1, "batch_size": 8, "threads": 1, "max_batches": 1, "precise_bn": 0, **kw}
    return TrainConfig(arch="cnn4", data=str(data), out=str(out), **kw)


@pytest.fixture(scope="module")
def run7(faces, tmp_path_factory) -> Path:
    """A finished 7-class cnn4 run folder."""
    from edge_fer.train.trainer import train

    out = tmp_path_factory.mktemp("qa") / "run7"
    train(_config(faces, out))
    return out


# ---- average ----------------------------------------------------------------------------


def test_average_with_a_dataset_of_other_classes_is_one_line(run7, other_classes, tmp_path):
    # before: IndexError traceback from the scoring, after the batch-norm statistics
    out = tmp_path / "avg.safetensors"
    proc = run_cli("average", run7 / "last.safetensors", "--data", other_classes,
                   "--out", out, "--faces", 8, "--threads", 1)  # fmt: skip
    line = one_error_line(proc)
    assert "--data" in line and "alpha, beta" in line and "angry" in line, line
    assert not out.exists()


# ---- train --init -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kw", "said"),
    [
        ("other", {}, "answers 7 classes"),  # a 7-class model on 2 classes
        ("faces", {"channels": 3}, "1-channel faces"),
        ("faces", {"input_size": 64}, "48x48 faces"),  # cnn4's dense head is sized for 48
    ],
)
def test_init_that_does_not_fit_the_run_says_why(
    run7, faces, other_classes, tmp_path, data, kw, said
):
    # before: "weights do not fit (Error(s) in loading state_dict for SmallCNN:)", which names
    # nothing, or "is 'cnn4' , the run trains 'cnn4' {'input_size': 64}"
    from edge_fer.train.trainer import train

    ds = other_classes if data == "other" else faces
    out = tmp_path / "run"
    cfg = _config(ds, out, init=str(run7 / "best.safetensors"), **kw)
    with pytest.raises(UserError) as exc:
        train(cfg)
    assert exc.value.param == "init" and said in str(exc.value), str(exc.value)
    assert "\n" not in str(exc.value)
    assert not out.exists()


# ---- empty names ------------------------------------------------------------------------


def test_train_with_an_empty_out_writes_nothing_in_the_current_folder(faces, tmp_path):
    # a script's unset variable (--out "$RUN"): Path("") is ".", and the run's checkpoints,
    # log and config went into the current folder
    here = tmp_path / "here"
    here.mkdir()
    proc = run_cli("train", "--arch", "cnn4", "--data", faces, "--out", "", "--epochs", 1,
                   "--max-batches", 1, "--precise-bn", 0, "--threads", 1, cwd=here)  # fmt: skip
    assert "--out is empty" in one_error_line(proc)
    assert list(here.iterdir()) == []


def test_empty_names_are_refused_by_the_library(faces, tmp_path, monkeypatch):
    from edge_fer.compress.io import check_out_dir
    from edge_fer.experiment.runs import Options
    from edge_fer.train.trainer import train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as exc:  # (before: the current folder read as the dataset)
        train(_config("", tmp_path / "run"))
    assert exc.value.param == "data" and "empty" in str(exc.value)
    for name in ("out", "work", "data"):  # (before: a study's report into the current folder)
        kw = {"data": str(faces), "out": str(tmp_path / "rep"), name: ""}
        with pytest.raises(UserError) as exc:
            Options(study="grouping", **kw)
        assert exc.value.param == name and "empty" in str(exc.value)
    with pytest.raises(UserError) as exc:  # prune / qat --out ""
        check_out_dir("", False, "prune")
    assert exc.value.param == "out" and "empty" in str(exc.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.shared("data/webfaces")
def test_train_eyes_with_an_empty_out_stops_before_learning(tmp_path):
    # before: the model was learned, then lost in a ValueError traceback ("PosixPath('.') has
    # an empty name")
    proc = run_cli("train-eyes", "--data", WEBFACES, "--out", "", "--stages", 1,
                   "--trees-per-stage", 2, "--depth", 3, "--max-faces", 20, "--starts", 2,
                   "--candidates", 8, "--eval-limit", 5, cwd=tmp_path)  # fmt: skip
    assert "--out is empty" in one_error_line(proc)
    assert list(tmp_path.iterdir()) == []
