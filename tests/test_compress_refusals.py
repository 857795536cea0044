"""`edge-fer prune` / `qat` with `--epochs 0`: the fine-tuning's --batch-size, --train-fraction
and --max-batches were taken without a word though nothing was fine-tuned (now refused in one
line, exit 2, before the data is read or anything is written, where nothing else reads them),
`qat --epochs 0` recorded `"ranges": "learn"` and the fine-tuning's unused settings for a
qat.onnx that is the calibrated model, and `prune --epochs 0` recorded the settings of a
fine-tuning that never ran (report.json, pruned.onnx, pruned.safetensors) and labelled its row
and notes as a fine-tuned model's.

Through the real entry point (edge_fer.cli.main.main) on real files: a narrow untrained vgg
saved as an edge-fer checkpoint, its ONNX export, and a few dozen faces in class folders (real
FER2013 faces copied from ../shared when it exists, synthetic images otherwise). One thread.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from compress_inputs import QUICK, face_folder, own_cache, vgg_checkpoint
from processes import run_main

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory):
    with own_cache(tmp_path_factory.mktemp("cache")):
        yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return face_folder(tmp_path_factory.mktemp("faces") / "data")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return vgg_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.safetensors")


@pytest.fixture(scope="module")
def onnx_model(ckpt, tmp_path_factory) -> Path:
    """`ckpt` exported to FP32 ONNX (rebuilt by prune with folded, identity batch norms)."""
    from edge_fer.export.onnx import export_checkpoint

    p = tmp_path_factory.mktemp("onnx") / "vgg.onnx"
    export_checkpoint(ckpt, p)
    return p


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def _refused(argv, needle: str, data_dir: Path, tmp_path: Path, capsys) -> None:
    """`edge-fer ARGV --data DATA --out OUT` exits 2 with one line holding `needle`, before
    the data is read (the dataset cache stays empty) and with nothing written."""
    out, cache = tmp_path / "out", Path(os.environ["EDGE_FER_CACHE"])
    before, cached = _tree(data_dir), _tree(cache)
    rc, _, err = run_main([*argv, "--data", data_dir, "--out", out, *QUICK], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], err
    assert not out.exists() and _tree(data_dir) == before and _tree(cache) == cached


# ---- 1. --batch-size / --max-batches with --epochs 0 ------------------------------------------


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["prune", "--method", "2:4", "--epochs", "0", "--batch-size", "64"],
         "--batch-size applies to the fine-tuning, and --epochs 0 runs none"),
        # structured, but ranked by weight norms: no gradient batches either
        (["prune", "--importance", "l1", "--epochs", "0", "--batch-size", "64"],
         ("--batch-size applies to the fine-tuning, and --epochs 0 runs none (nor does this run "
          "rank channels by gradients: --importance taylor)")),
        (["qat", "--epochs", "0", "--batch-size", "128"],  # (the default value, given)
         "--batch-size applies to the fine-tuning, and --epochs 0 runs none"),
        (["prune", "--method", "unstructured", "--epochs", "0", "--max-batches", "1"],
         "--max-batches applies to the fine-tuning, and --epochs 0 runs none"),
        (["qat", "--epochs", "0", "--max-batches", "1"],
         "--max-batches applies to the fine-tuning, and --epochs 0 runs none"),
    ],
)  # fmt: skip
def test_batch_flags_with_epochs_0_are_refused(argv, needle, ckpt, data_dir, tmp_path, capsys):
    # before: exit 0, the flag ignored
    _refused([*argv, "--model", ckpt], needle, data_dir, tmp_path, capsys)


def test_batch_size_with_epochs_0_is_taken_for_the_taylor_ranking(ckpt, data_dir, tmp_path,
                                                                   capsys):  # fmt: skip
    pytest.importorskip("torch_pruning")
    # its gradient batches are --batch-size faces: taken, fine-tuning or not
    out = tmp_path / "taylor"
    argv = ["prune", "--model", ckpt, "--data", data_dir, "--out", out, "--importance", "taylor",
            "--taylor-batches", 1, "--steps", 1, "--round-to", 4, "--epochs", 0, *QUICK]  # fmt: skip
    rc, _, err = run_main([*argv, "--batch-size", 8], capsys)
    assert rc == 0, err
    # tiny widths: --round-to 4 does the cutting, and the line says so (was "pruning 0.000")
    assert "pruning 0.000" not in err and "rounding each layer's channels down" in err, err
    args = json.loads((out / "report.json").read_text())["args"]
    assert args["batch_size"] == 8 and args["lr"] is None, args
    # without --importance taylor, the same flag is refused (before: exit 0)
    _refused(["prune", "--model", ckpt, "--steps", 1, "--epochs", 0, "--batch-size", 8],
             "--batch-size applies", data_dir, tmp_path / "l2", capsys)  # fmt: skip


# ---- 2. --train-fraction with --epochs 0: refused where no Training face is read -------------


@pytest.mark.parametrize(
    "source, flags",
    [
        ("ckpt", ["--method", "2:4"]),  # trained batch norms: nothing renormalized
        ("ckpt", ["--method", "unstructured", "--steps", "1"]),
        ("onnx", ["--method", "2:4", "--bn", "frozen"]),  # folded batch norms kept as they are
    ],
)
def test_train_fraction_with_epochs_0_is_refused_where_nothing_reads_training_faces(
    source, flags, ckpt, onnx_model, data_dir, tmp_path, capsys
):
    model = ckpt if source == "ckpt" else onnx_model
    argv = ["prune", "--model", model, *flags, "--epochs", "0", "--train-fraction", "0.5"]
    needle = (
        "--train-fraction applies to the fine-tuning, and --epochs 0 runs none (nor does this "
        "run read Training faces otherwise: no --importance taylor ranking, no batch norms "
        "renormalized)"
    )
    _refused(argv, needle, data_dir, tmp_path, capsys)  # before: exit 0


def test_train_fraction_with_epochs_0_is_taken_where_training_faces_are_read(
    onnx_model, data_dir, tmp_path, capsys
):
    # a model rebuilt from ONNX: its batch norms are renormalized on the Training faces
    out = tmp_path / "renorm"
    rc, _, err = run_main(["prune", "--model", onnx_model, "--data", data_dir, "--out", out,
                           "--method", "2:4", "--epochs", 0, "--train-fraction", 0.5, *QUICK],
                          capsys)  # fmt: skip
    assert rc == 0 and "renormalized on Training faces" in err, err
    args = json.loads((out / "report.json").read_text())["args"]
    assert args["train_fraction"] == 0.5 and args["batch_size"] is None, args
    # the same with --bn frozen: nothing reads them (before: exit 0)
    _refused(["prune", "--model", onnx_model, "--method", "2:4", "--bn", "frozen", "--epochs", 0,
              "--train-fraction", 0.5], "--train-fraction applies to the fine-tuning", data_dir,
             tmp_path / "frozen", capsys)  # fmt: skip


# ---- 3. qat --epochs 0 says the model is the calibrated one ----------------------------------


def test_qat_with_epochs_0_reports_calibration_only(ckpt, data_dir, tmp_path, capsys):
    # before: report.json and qat.onnx recorded "ranges": "learn", method "qat" and the unused
    # lr / batch size of a fine-tuning that never ran; the row read as a trained QAT model.
    # --train-fraction is taken (the calibration is drawn from that part of the Training faces)
    out = tmp_path / "qat0"
    rc, _, err = run_main(["qat", "--model", ckpt, "--data", data_dir, "--out", out, "--epochs",
                           0, "--calib-faces", 16, "--train-fraction", 0.5, *QUICK],
                          capsys)  # fmt: skip
    assert rc == 0, err
    rep = json.loads((out / "report.json").read_text())
    q = rep["result"]["quantization"]
    assert q["ranges"] == "calibrated" and q["finetune"] == {"epochs": 0}, q
    assert q["method"] == "qat, 0 epochs (calibration only, as ptq)", q
    assert q["calibration"]["source"] == "0.5 of the Training split (random sample)", q
    meta = {m.key: m.value for m in onnx.load(str(out / "qat.onnx")).metadata_props}
    assert json.loads(meta["edge_fer.quantization"]) == q
    assert [r["model"] for r in rep["rows"]][2] == "INT8 QAT (tensorrt, 0 epochs: calibration only)"
    md = (out / "report.md").read_text()
    assert "--epochs 0: no quantization-aware training ran; qat.onnx is the calibrated model" in md
    assert rep["args"]["ranges"] is None and rep["args"]["batch_size"] is None, rep["args"]


# ---- 4. prune --epochs 0 says the model was not fine-tuned -----------------------------------

# what every record of a fine-tuning holds (asdict(FinetuneConfig)); with --epochs 0 none of it
FINETUNE_KEYS = {"epochs", "lr", "batch_size", "weight_decay", "momentum", "label_smoothing",
                 "warmup_epochs", "train_fraction", "val_limit", "max_batches", "seed",
                 "augment", "device", "threads", "distill", "distill_temperature",
                 "skip_bad"}  # fmt: skip


def _prune_records(out: Path) -> tuple[dict, dict]:
    """(report.json, its result.compression) of a prune run in `out`, after checking that
    pruned.onnx's edge_fer.compression and pruned.safetensors' state record the same."""
    from edge_fer.train.checkpoint import read_state

    rep = json.loads((out / "report.json").read_text())
    comp = rep["result"]["compression"]
    meta = {m.key: m.value for m in onnx.load(str(out / "pruned.onnx")).metadata_props}
    assert json.loads(meta["edge_fer.compression"]) == comp
    assert read_state(out / "pruned.safetensors")["compression"] == comp
    return rep, comp


@pytest.mark.parametrize("case", ["unstructured", "taylor"])
def test_prune_with_epochs_0_records_no_fine_tuning(case, ckpt, onnx_model, data_dir, tmp_path,
                                                    capsys):  # fmt: skip
    # before: report.json, pruned.onnx and pruned.safetensors recorded the fine-tuning's lr,
    # batch size, weight decay, label smoothing, augmentation ... of a fine-tuning that never
    # ran, each step's accuracy as "val_acc_finetuned", and the row and notes read as a
    # fine-tuned model ("1 prune + fine-tune step(s)")
    if case == "unstructured":  # a checkpoint: its trained batch norms read no Training face
        flags = ["--model", ckpt, "--method", "unstructured", "--steps", 1]
        faces = {"seed": 0, "val_limit": 0}
    else:  # rebuilt from ONNX: batch norms renormalized and channels ranked on Training faces
        pytest.importorskip("torch_pruning")
        flags = ["--model", onnx_model, "--importance", "taylor", "--taylor-batches", 1,
                 "--steps", 1, "--round-to", 4, "--batch-size", 8, "--train-fraction", 0.5]  # fmt: skip
        faces = {"seed": 0, "val_limit": 0, "train_fraction": 0.5}
    out = tmp_path / case
    rc, stdout, err = run_main(["prune", *flags, "--data", data_dir, "--out", out, "--epochs", 0,
                                *QUICK], capsys)  # fmt: skip
    assert rc == 0, err
    rep, comp = _prune_records(out)
    assert comp["finetune"] == {"epochs": 0}, comp
    assert comp["faces"] == faces, comp
    # what is still true stays: the method, its settings, the batch norms
    method = "unstructured" if case == "unstructured" else "structured"
    assert comp["method"] == method and comp["source"] == Path(flags[1]).name, comp
    if case == "unstructured":
        assert comp["sparsity"] == 0.5 and comp["batch_norms"] == "trained", comp
        assert "taylor_batch_size" not in comp, comp
    else:
        assert comp["importance"] == "taylor" and comp["taylor_batches"] == 1, comp
        assert comp["taylor_batch_size"] == 8 and comp["batch_norms"] == "renormalized", comp
    assert not FINETUNE_KEYS & (set(comp) - {"finetune"}), comp  # none moved up either
    res = rep["result"]
    assert [set(r) & {"val_acc_pruned", "val_acc_finetuned"} for r in res["rounds"]] == [
        {"val_acc_pruned"}
    ], res["rounds"]
    assert res["finetune_log"] == [], res["finetune_log"]
    label = f"pruned ({method}, 0 epochs: not fine-tuned)"
    assert [r["model"] for r in rep["rows"]] == ["FP32", label] and label in stdout
    md = (out / "report.md").read_text()
    assert "--epochs 0: no fine-tuning ran; pruned.onnx is the source as pruned" in md, md
    assert "fine-tune step" not in md and "selected the best epoch" not in md, md
    if case == "taylor":
        assert "1 pruning step(s), no fine-tuning" in md, md
        assert "its batch norms renormalized on Training faces" in md, md
    assert rep["args"]["lr"] is None and rep["args"]["weight_decay"] is None, rep["args"]


def test_prune_with_epochs_1_records_its_fine_tuning(ckpt, data_dir, tmp_path, capsys):
    # the control: a fine-tuned run records every fine-tuning setting, as before
    out = tmp_path / "e1"
    rc, _, err = run_main(["prune", "--model", ckpt, "--method", "unstructured", "--steps", 1,
                           "--data", data_dir, "--out", out, "--epochs", 1, "--max-batches", 1,
                           "--batch-size", 16, *QUICK], capsys)  # fmt: skip
    assert rc == 0, err
    rep, comp = _prune_records(out)
    ft = comp["finetune"]
    assert set(ft) == FINETUNE_KEYS, ft
    assert ft["epochs"] == 1 and ft["lr"] == 0.01 and ft["batch_size"] == 16, ft
    assert ft["weight_decay"] == 5e-4 and ft["label_smoothing"] == 0.1, ft
    assert ft["max_batches"] == 1 and ft["augment"] is True, ft
    assert "faces" not in comp and "taylor_batch_size" not in comp, comp
    rounds = rep["result"]["rounds"]
    assert all("val_acc_finetuned" in r for r in rounds), rounds
    assert [r["model"] for r in rep["rows"]] == ["FP32", "pruned (unstructured)"]
    md = (out / "report.md").read_text()
    assert "no fine-tuning ran" not in md and "that selected the best epoch" in md, md


# ---- 5. a seed torch's generators cannot take ---------------------------------------------------


@pytest.mark.parametrize("command", ["prune", "qat"])
def test_a_seed_of_2_to_the_32_or_more_is_refused(command, ckpt, data_dir, tmp_path, capsys):
    # before: a traceback from torch.Generator.manual_seed (overflow) once fine-tuning began
    argv = [command, "--model", ckpt, "--seed", "100000000000000", "--data", data_dir,
            "--out", tmp_path / "out", *QUICK]  # fmt: skip
    if command == "prune":
        argv[1:1] = ["--method", "unstructured"]
    rc, _, err = run_main(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and "Traceback" not in err, err
    assert (
        lines[-1] == f"edge-fer {command}: error: --seed must be below 2**32, got 100000000000000"
    ), err
    assert not (tmp_path / "out").exists()
