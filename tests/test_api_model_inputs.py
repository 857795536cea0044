"""The model side's Python API with the values a script passes: numpy numbers and paths where
ints and strings go, a single string where a list goes, NaN, fractions and huge numbers. Each
either works as the plain value would or is a UserError naming the parameter (before: JSON
tracebacks after the run folder was made, letter-by-letter names, a 2-epoch run for 1.5)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from paths import fer_class_folders

from edge_fer.errors import UserError

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    return fer_class_folders(tmp_path_factory.mktemp("fer") / "data", 6)


@pytest.mark.shared("data/fer2013/train")
def test_numpy_numbers_and_paths_in_a_training_config(faces, tmp_path) -> None:
    from edge_fer.train.trainer import TrainConfig, train

    out = tmp_path / "run"
    cfg = TrainConfig(arch="cnn4", data=faces, out=out, epochs=np.int64(1),  # type: ignore[arg-type]
                      batch_size=np.int64(16), seed=np.int64(3), max_batches=1, threads=1,
                      precise_bn=0)  # fmt: skip
    train(cfg)
    saved = json.loads((out / "config.json").read_text())
    assert saved["data"] == str(faces) and saved["seed"] == 3 and saved["batch_size"] == 16
    # the same settings resume (a Path against the file's string is no difference)
    train(cfg, resume=True)


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("epochs", 1.5, "epochs"),  # before: trained 2 epochs
        ("epochs", math.nan, "epochs"),
        ("batch_size", math.nan, "batch_size"),
        ("max_batches", math.nan, "max_batches"),
        ("precise_bn", math.nan, "precise_bn"),
        ("patience", 2.5, "patience"),
        ("seed", 2**70, r"below 2\*\*32"),
        ("teacher", "teacher.onnx", "not the single 'teacher.onnx'"),
    ],
)
def test_training_numbers_and_lists_are_checked(tmp_path, field, value, words) -> None:
    from edge_fer.train.trainer import TrainConfig, train

    cfg = TrainConfig(arch="cnn4", data=str(tmp_path / "none"), out=str(tmp_path / "run"))
    setattr(cfg, field, value)
    with pytest.raises(UserError, match=words) as e:
        train(cfg)
    assert e.value.param == field and not (tmp_path / "run").exists()


def test_a_single_string_where_names_go(tmp_path) -> None:
    from edge_fer.data import load_dataset
    from edge_fer.experiment.runs import Options
    from edge_fer.train.average import average_checkpoints

    with pytest.raises(UserError, match="not the single 'run/best.safetensors'") as e:
        average_checkpoints("run/best.safetensors", tmp_path / "a.safetensors")  # type: ignore[arg-type]
    assert e.value.param == "checkpoints"
    with pytest.raises(UserError) as e:
        average_checkpoints([tmp_path / "x"], tmp_path / "a.safetensors", faces=math.nan)  # type: ignore[arg-type]
    assert e.value.param == "faces"
    with pytest.raises(UserError, match="not the single 'happy'") as e:
        load_dataset(tmp_path, classes="happy")  # type: ignore[arg-type]
    assert e.value.param == "classes"
    with pytest.raises(UserError, match="not the string 'cnn4'") as e:
        Options(study="architectures", data=str(tmp_path), out=tmp_path, archs="cnn4")  # type: ignore[arg-type]
    assert e.value.param == "archs"


def test_study_options_from_a_script(tmp_path) -> None:
    from edge_fer.experiment.runs import Budget, Options
    from edge_fer.experiment.studies import run_study

    opts = Options(study="grouping", data=str(tmp_path), out="st/x")  # type: ignore[arg-type]
    assert opts.workdir == Path("st/x/work")  # before: str / str, a TypeError
    with pytest.raises(UserError) as e:
        Options(study="grouping", data="d", out=tmp_path, budget={"epochs": 1})  # type: ignore[arg-type]
    assert e.value.param == "budget"
    # NaN faces: before, a study of "at most nan training faces" without a word
    nan = Options(study="grouping", data=str(tmp_path), out=tmp_path / "o",
                  budget=Budget(max_train_faces=math.nan))  # type: ignore[arg-type]  # fmt: skip
    with pytest.raises(UserError) as e:
        run_study(nan)
    assert e.value.param == "max_train_faces" and not (tmp_path / "o").exists()


def test_tensorrt_versions_and_build_numbers_from_a_script() -> None:
    from edge_fer.export.engine import BuildConfig
    from edge_fer.quantize.trt_cache import version_code

    with pytest.raises(UserError, match="must be a string such as '10.3.0'"):
        version_code(10.10)  # type: ignore[arg-type]  # before: TensorRT 10.1's header
    assert version_code("10.10.0") == 101000 and version_code(100300) == 100300
    cfg = BuildConfig(max_batch=np.int64(16), dla_core=np.int64(0), precision="fp16")  # type: ignore[arg-type]
    cfg.check()  # before: "max_batch must be an integer >= 1, got np.int64(16)"
    assert type(cfg.max_batch) is int and cfg.max_batch == 16 and type(cfg.dla_core) is int
    with pytest.raises(UserError, match="workspace_mb must be at most"):
        BuildConfig(workspace_mb=10**15).check()


@pytest.mark.shared("data/fer2013/train")
def test_a_run_folder_another_process_trains_into_is_refused(faces, tmp_path) -> None:
    """A second `train` into the folder of one that still trains (a run begun twice, a
    --resume while it runs): both wrote log rows and checkpoints into it."""
    from edge_fer.fileio import FolderLock
    from edge_fer.train.trainer import TrainConfig, train

    out = tmp_path / "run"
    out.mkdir()
    other = FolderLock(out, "edge-fer train")  # as the first process holds it
    cfg = TrainConfig(arch="cnn4", data=str(faces), out=str(out), epochs=1, max_batches=1,
                      threads=1, precise_bn=0)  # fmt: skip
    try:
        with pytest.raises(UserError, match="another edge-fer train is writing this folder"):
            train(cfg)
        assert list(out.iterdir()) == []
    finally:
        other.release()
    train(cfg)  # free once the other has ended
    assert (out / "last.safetensors").is_file()


@pytest.mark.shared("data/fer2013/train")
def test_export_checkpoint_replaces_a_model_only_with_force(faces, tmp_path) -> None:
    """From Python it replaced an existing model without a word; the CLI needs --force."""
    from edge_fer.export.onnx import export_checkpoint
    from edge_fer.train.trainer import TrainConfig, train

    run = tmp_path / "run"
    train(TrainConfig(arch="cnn4", data=str(faces), out=str(run), epochs=1, max_batches=1,
                      threads=1, precise_bn=0))  # fmt: skip
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"a model of mine")
    with pytest.raises(UserError, match="already exists; pass force=True") as e:
        export_checkpoint(run / "best.safetensors", mine, check=False)
    assert e.value.param == "out" and mine.read_bytes() == b"a model of mine"
    export_checkpoint(run / "best.safetensors", mine, check=False, force=True)
    assert mine.read_bytes() != b"a model of mine"
