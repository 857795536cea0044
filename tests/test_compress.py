"""Pruning (structured / 2:4 / unstructured), quantization-aware training, the compression report
and the `edge-fer prune` / `edge-fer qat` commands.

A narrow vgg (widths 8-16-16-32) is fine-tuned for a couple of batches on a few dozen faces:
real FER2013 faces copied from ../shared when it exists, synthetic images otherwise. One thread.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from compress_inputs import WIDTHS, face_folder, own_cache, vgg_checkpoint
from paths import FER, FER_MODEL, fer_class_folders, needs_modules
from processes import refusal_line, run_cli, run_main

from edge_fer.errors import UserError


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory):
    with own_cache(tmp_path_factory.mktemp("cache"), threads=1):
        yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return face_folder(tmp_path_factory.mktemp("faces") / "data")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return vgg_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "best.safetensors", varied_batch_norms=True
    )


@pytest.fixture(scope="module")
def setup(ckpt, data_dir):
    from edge_fer.compress.finetune import FinetuneConfig, load_finetune_data
    from edge_fer.compress.io import load_source

    src = load_source(ckpt)
    fcfg = FinetuneConfig(epochs=1, batch_size=16, max_batches=2, threads=1, lr=0.01)
    data = load_finetune_data(str(data_dir), src.spec, fcfg)
    return src, data, fcfg


def test_source_from_bundled_onnx() -> None:
    from edge_fer.compress.io import load_source
    from edge_fer.models import model_info

    src = load_source(None)  # the bundled model, rebuilt from its ONNX (parity checked inside)
    assert src.kind == "onnx" and src.arch == "vgg" and src.bn_folded
    assert model_info(src.model)["macs"] == 117_450_496


def test_pruned_arch_round_trip() -> None:
    from edge_fer.compress.arch import layer_shapes, pruned_kwargs
    from edge_fer.models import create_model

    tp = pytest.importorskip("torch_pruning")
    m = create_model("vgg", widths=WIDTHS).eval()
    pruner = tp.pruner.MetaPruner(
        m,
        torch.zeros(1, 1, 48, 48),
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.4,
        ignored_layers=[m.head[3]],
    )
    pruner.step()
    kw = pruned_kwargs("vgg", {"widths": WIDTHS}, m)
    rebuilt = create_model("pruned", **json.loads(json.dumps(kw))).eval()
    assert layer_shapes(rebuilt) == layer_shapes(m)
    rebuilt.load_state_dict(m.state_dict())
    x = torch.randn(2, 1, 48, 48)
    assert torch.allclose(rebuilt(x), m(x))
    with pytest.raises(UserError):
        create_model("pruned")


def test_structured_pruning_reaches_target_and_exports(setup, tmp_path) -> None:
    pytest.importorskip("torch_pruning")
    from edge_fer.compress.prune import PruneConfig, run_prune
    from edge_fer.compress.report import onnx_stats
    from edge_fer.export.onnx import load_trained
    from edge_fer.export.onnx_import import torch_model_from_onnx

    src, data, fcfg = setup
    pcfg = PruneConfig(
        method="structured",
        target_macs_reduction=0.4,
        steps=2,
        round_to=4,
        importance="taylor",
        taylor_batches=1,
    )
    res = run_prune(src, data, pcfg, fcfg, tmp_path)
    assert res["macs_reduction"] >= 0.4
    assert res["after"]["macs"] <= 0.6 * res["before"]["macs"]
    assert [r["step"] for r in res["rounds"]] == [1, 2]
    assert all(w % 4 == 0 for w in res["conv_widths"]) and res["conv_widths"] != WIDTHS
    assert res["export"]["parity_max_abs_diff"] <= 1e-4
    stats = onnx_stats(res["onnx"])
    assert stats["macs"] == res["after"]["macs"]
    # both files rebuild: the checkpoint (export/eval again) and the ONNX (prune/qat again)
    _model, _, state = load_trained(res["checkpoint"])
    assert state["config"]["arch"] == "pruned"
    _, _, meta = torch_model_from_onnx(res["onnx"])  # checks torch == ONNX inside
    comp = json.loads(meta["edge_fer.compression"])
    assert comp["method"] == "structured" and comp["macs_after"] == res["after"]["macs"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_nm_mask_pattern() -> None:
    from edge_fer.compress.prune import nm_mask

    w = torch.randn(6, 8, 3, 3)
    m = nm_mask(w)
    groups = m.movedim(1, -1).reshape(-1, 4)
    assert ((groups == 0).sum(1) == 2).all()
    kept = (w.abs() * m).movedim(1, -1).reshape(-1, 4)
    dropped = (w.abs() * (1 - m)).movedim(1, -1).reshape(-1, 4)
    assert (kept.max(1).values >= dropped.max(1).values).all()
    with pytest.raises(ValueError):
        nm_mask(torch.randn(4, 3, 3, 3))


def test_2to4_survives_fine_tuning(setup, tmp_path) -> None:
    from edge_fer.compress.prune import PruneConfig, check_nm_onnx, run_prune

    src, data, fcfg = setup
    res = run_prune(src, data, PruneConfig(method="2:4"), fcfg, tmp_path)
    assert res["rounds"][0]["sparsity"] == 0.5
    assert res["dense_layers"] == ["features.0.0"]  # 1 input channel: left dense
    model, _, _ = __import__("edge_fer.export.onnx", fromlist=["x"]).load_trained(res["checkpoint"])
    for name, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and name != "features.0.0":
            g = mod.weight.detach().movedim(1, -1).reshape(-1, 4)
            assert ((g == 0).sum(1) == 2).all(), name  # exactly 2 of 4 after fine-tuning
    chk = check_nm_onnx(res["onnx"])  # and in the exported graph (BN folded into it)
    assert chk["all_2to4"] and chk["layers_checked"] == 8


def test_unstructured_sparsity(setup, tmp_path) -> None:
    from edge_fer.compress.prune import PruneConfig, magnitude_masks, run_prune, weighted_layers
    from edge_fer.compress.report import onnx_stats
    from edge_fer.models import create_model

    m = create_model("vgg", widths=WIDTHS)
    masks = magnitude_masks(m, 0.7)
    assert abs(masks.sparsity() - 0.7) < 1e-3
    masks.remove()
    src, data, fcfg = setup
    res = run_prune(
        src, data, PruneConfig(method="unstructured", sparsity=0.6, steps=2), fcfg, tmp_path
    )
    assert [round(r["sparsity"], 3) for r in res["rounds"]] == [0.3, 0.6]
    model = __import__("edge_fer.export.onnx", fromlist=["x"]).load_trained(res["checkpoint"])[0]
    w = torch.cat([mod.weight.detach().flatten() for _, mod in weighted_layers(model)])
    assert float((w == 0).float().mean()) >= 0.6 - 1e-3
    stats = onnx_stats(res["onnx"])
    assert stats["weight_zeros"] >= 0.55 and stats["gzip_mb"] < 0.8 * stats["mb"]


def test_qat_exports_qdq_close_to_torch(setup, tmp_path) -> None:
    import onnxruntime as ort

    from edge_fer.compress.qat import QatConfig, load_qat_checkpoint, run_qat

    src, data, fcfg = setup
    res = run_qat(src, data, QatConfig(target="cpu", calib_faces=32), fcfg, tmp_path)
    for key in ("ptq_export", "qat_export"):
        exp = res[key]
        assert exp["parity_max_abs_diff"] <= 1e-2 and exp["parity_mean_abs_diff"] <= 2e-4
        assert exp["weight_quantizers_folded"] == 9  # 8 convs + the classifier
    proto = onnx.load(res["qat_onnx"])
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") == 9 and ops.count("DequantizeLinear") == 18
    int8 = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8) == 9  # weights stored as INT8
    meta = {m.key: m.value for m in proto.metadata_props}
    q = json.loads(meta["edge_fer.quantization"])
    assert q["method"] == "qat" and q["target"] == "cpu" and "edge_fer.preprocess" in meta
    # the QAT checkpoint rebuilds the fake-quant model, and ONNX Runtime agrees with it
    qmodel, spec, _ = load_qat_checkpoint(res["checkpoint"])
    x = spec.prepare(data.val_x[:8])
    with torch.no_grad():
        ref = torch.softmax(qmodel(torch.from_numpy(x)), 1).numpy()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(res["qat_onnx"], so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    assert np.abs(got - ref).max() <= 1e-2
    # export, average and the studies take FP32 checkpoints: a QAT one is named as such (it
    # was "weights do not fit this architecture (Error(s) in loading state_dict for VGGFER:)")
    from edge_fer.export.onnx import load_trained

    with pytest.raises(UserError, match=r"quantization-aware \(QAT\) checkpoint.*qat\.onnx"):
        load_trained(res["checkpoint"])


def test_tensorrt_layout_is_symmetric_int8(setup, tmp_path) -> None:
    from edge_fer.compress.qat import QatConfig, build_qat_model, calibrate, export_qdq

    src, data, _ = setup
    qmodel, folded = build_qat_model(src.model, "tensorrt")
    assert folded == 8
    calibrate(qmodel, src.spec.prepare(data.train_x[:32]), QatConfig(target="tensorrt"))
    state = {**src.state, "quantization": {"target": "tensorrt"}}
    exp = export_qdq(qmodel, src.spec, state, src.path, tmp_path / "trt.onnx", data.val_x[:16])
    assert exp["parity_max_abs_diff"] <= 1e-2
    from onnx import numpy_helper

    proto = onnx.load(tmp_path / "trt.onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    consts = {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t)
        for n in proto.graph.node
        if n.op_type == "Constant"
    }
    for n in proto.graph.node:
        if n.op_type == "QuantizeLinear":
            zp = inits.get(n.input[2], consts.get(n.input[2]))
            assert zp.dtype == np.int8 and not zp.any()


def test_report_table(setup, tmp_path, data_dir) -> None:
    from edge_fer.classify import default_model_path
    from edge_fer.compress.report import compare_models, markdown_table, write_report

    comp = compare_models(
        [("FP32", default_model_path())],
        data_dir,
        threads=1,
        rounds=1,
        progress=False,
        extra_tta=("flip",),
    )
    row = comp["rows"][0]
    for k in (
        "accuracy",
        "top2_accuracy",
        "macro_f1",
        "params",
        "macs",
        "mb",
        "ms_b1",
        "ms_b32",
        "accuracy_flip",
    ):
        assert k in row, k
    assert row["macs"] == 117_450_496 and row["n"] == 56
    md, js = write_report(tmp_path, comp, "t")
    assert "| FP32 |" in md.read_text() and json.loads(js.read_text())["rows"][0]["model"] == "FP32"
    assert "accuracy (flip)" in markdown_table(comp["rows"])
    with pytest.raises(UserError, match="no such model"):
        compare_models([("x", tmp_path / "missing.onnx")], data_dir)


# -- the commands ------------------------------------------------------------------------------


def _cli(*argv) -> int:
    from edge_fer.cli.main import main

    return main([str(a) for a in argv])


# one short epoch on one thread, timed once
QUICK = ["--epochs", 1, "--max-batches", 1, "--batch-size", 16, "--threads", 1, "--bench-rounds", 1]


def _quick(cmd: str, ckpt, data, out, *flags) -> int:
    """`edge-fer CMD --model CKPT --data DATA --out OUT`, QUICK, without progress bars."""
    return _cli(cmd, "--model", ckpt, "--data", data, "--out", out, *QUICK, "--no-progress", *flags)


def test_cli_prune_end_to_end(ckpt, data_dir, tmp_path, capsys) -> None:
    pytest.importorskip("torch_pruning")
    out = tmp_path / "run"
    flags = ["--steps", 1, "--round-to", 4, "--target-macs-reduction", 0.45, "--eval-tta", "none"]
    rc = _quick("prune", ckpt, data_dir, out, *flags)
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert [r["model"] for r in rep["rows"]] == ["FP32", "pruned (structured)"]
    # the measurement's setup names the data without a local absolute path (the command's
    # own arguments stay as typed)
    assert rep["setup"]["data"] == "data"
    assert rep["deltas"][0]["macs_reduction"] >= 0.45
    assert {p.name for p in out.iterdir()} >= {
        "pruned.onnx",
        "pruned.safetensors",
        "source_fp32.onnx",
        "report.md",
        "report.json",
    }
    assert "pruned (structured)" in capsys.readouterr().out
    # the finished run is not overwritten by accident
    rc = _cli("prune", "--model", ckpt, "--data", data_dir, "--out", out)
    assert rc == 2


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["prune", "--model", "{tmp}/missing.onnx"], "no such model file"),
        (["prune", "--model", "{qdq}"], "quantized (QDQ)"),
        (["prune", "--target-macs-reduction", "1.5"], "--target-macs-reduction"),
        (["prune", "--target-macs-reduction", "0"], "--target-macs-reduction"),
        (["prune", "--method", "unstructured", "--sparsity", "1"], "--sparsity"),
        (["qat", "--model", "{tmp}/missing.safetensors"], "no such model file"),
        (["qat", "--model", "{data}"], "folder"),
        (["qat", "--percentile", "20"], "--percentile"),
        (["prune", "--data", "{tmp}/nodata"], "no such file or folder"),
        # numbers: checked (finite, in range) before any fine-tuning, not after the files
        (["prune", "--lr", "inf"], "--lr must be a finite number > 0"),
        (["prune", "--weight-decay", "nan"], "--weight-decay must be a finite number"),
        (["prune", "--label-smoothing", "5"], "--label-smoothing must be a finite number in"),
        (["prune", "--distill-temperature", "inf"], "--distill-temperature"),
        (["prune", "--train-fraction", "nan"], "--train-fraction"),
        (["prune", "--seed", "-1"], "--seed must be >= 0"),
        (["qat", "--lr", "nan"], "--lr must be a finite number > 0"),
        (["qat", "--label-smoothing", "-0.1"], "--label-smoothing"),
        (["qat", "--out", "{afile}/sub"], "is not a folder"),
        # a folder that cannot be made (before: a traceback, for prune after its fine-tuning)
        *[
            pytest.param(
                [cmd, "--out", f"/proc/edge-fer-{cmd}"],
                "cannot write in /proc",
                marks=pytest.mark.skipif(not os.path.isdir("/proc"), reason="no /proc"),
            )
            for cmd in ("prune", "qat")
        ],
    ],
)
def test_cli_bad_input(argv, needle, data_dir, tmp_path, capsys) -> None:
    qdq = tmp_path / "q.onnx"
    if "{qdq}" in argv:  # a QDQ model: the bundled model through ONNX Runtime's quantizer
        from onnxruntime.quantization import QuantFormat, quantize_static

        from edge_fer.classify import default_model_path

        class Reader:
            def __init__(self):
                self.it = iter([{"input": np.zeros((1, 1, 48, 48), np.float32)}])

            def get_next(self):
                return next(self.it, None)

        quantize_static(str(default_model_path()), str(qdq), Reader(), quant_format=QuantFormat.QDQ)
        meta = {m.key: m.value for m in onnx.load(default_model_path()).metadata_props}
        from edge_fer.compress.io import add_onnx_metadata

        add_onnx_metadata(qdq, meta)
        capsys.readouterr()  # the quantizer's own log lines
    afile = tmp_path / "afile"
    afile.write_text("keep")
    sub = {
        "{tmp}": str(tmp_path),
        "{qdq}": str(qdq),
        "{data}": str(data_dir),
        "{afile}": str(afile),
    }
    argv = [next((a.replace(k, v) for k, v in sub.items() if k in a), a) for a in argv]
    if "--data" not in argv:
        argv += ["--data", str(data_dir)]
    out = tmp_path / "out"
    if "--out" not in argv:
        argv += ["--out", str(out)]
    rc = _cli(*argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("source:")]
    assert rc == 2, err
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert not out.exists()  # nothing written


@pytest.mark.parametrize(
    "cmd, name",
    [("prune", "pruned.safetensors"), ("prune", "source_fp32.onnx"), ("qat", "qat.safetensors")],
)
def test_cli_out_never_overwrites_the_model(cmd, name, ckpt, data_dir, tmp_path, capsys) -> None:
    """The model to compress inside --out under a name the command writes there: refused
    before any work, --force or not (the report would measure the output as the source)."""
    out = tmp_path / "run"
    out.mkdir()
    model = out / name
    model.write_bytes(ckpt.read_bytes())
    before = model.read_bytes()
    for force in ([], ["--force"]):
        rc = _cli(cmd, "--model", model, "--data", data_dir, "--out", out, *QUICK, *force)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1, err
        assert f"--out {model} is the same file as --model" in lines[0], err
    assert model.read_bytes() == before and [p.name for p in out.iterdir()] == [name]


def test_cli_qat_end_to_end(ckpt, data_dir, tmp_path, capsys) -> None:
    out = tmp_path / "qat"
    rc = _quick("qat", ckpt, data_dir, out, "--calib-faces", 16, "--target", "cpu")
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((out / "report.json").read_text())
    names = [r["model"] for r in rep["rows"]]
    assert names == ["FP32", "INT8 PTQ (cpu, calibration only)", "INT8 QAT (cpu)"]
    assert [r["quantized"] for r in rep["rows"]] == [False, True, True]
    assert rep["rows"][2]["mb"] < 0.5 * rep["rows"][0]["mb"]  # INT8 weights
    capsys.readouterr()
    # a QAT checkpoint is not a model to compress again
    rc = _cli(
        "prune", "--model", out / "qat.safetensors", "--data", data_dir, "--out", tmp_path / "again"
    )
    err = capsys.readouterr().err
    assert rc == 2 and "quantization-aware" in err and not (tmp_path / "again").exists()


def test_renormalized_batch_norms_keep_the_function(setup) -> None:
    from edge_fer.compress.finetune import renormalize_bn
    from edge_fer.compress.io import load_source

    src, data, _ = setup
    bundled = load_source(None)  # identity batch norms (folded into the convs)
    for model, spec in ((bundled.model, bundled.spec), (src.model, src.spec)):
        m = __import__("copy").deepcopy(model)
        x = torch.from_numpy(spec.prepare(data.train_x[:16]))
        assert renormalize_bn(m, data.train_x, spec) == 8
        with torch.no_grad():
            assert torch.allclose(m(x), model(x), atol=1e-4)
        bns = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
        assert all(float(b.running_var.mean()) > 0 for b in bns)
    assert float(bns[0].running_mean.abs().sum()) > 0  # statistics measured, not identity


def test_distillation_uses_the_teacher(setup) -> None:
    """distill=1 trains on the teacher's softened outputs only: a student that starts as an exact
    copy of the teacher has (almost) nothing to learn, while the label loss of the same copy is
    large. Without a teacher the distill weight has no effect."""
    import copy

    from edge_fer.compress.finetune import FinetuneConfig, finetune

    src, data, _ = setup
    base = {
        "epochs": 1,
        "batch_size": 16,
        "max_batches": 3,
        "threads": 1,
        "lr": 1e-4,
        "augment": False,
    }

    def train_loss(cfg, teacher) -> float:
        log: list = []
        finetune(copy.deepcopy(src.model), data, cfg, teacher=teacher, log=log)
        return log[0]["train_loss"]

    teacher = copy.deepcopy(src.model).eval()
    kd = train_loss(FinetuneConfig(**base, distill=1.0, distill_temperature=2.0), teacher)
    labels = train_loss(FinetuneConfig(**base, label_smoothing=0.0), None)
    no_teacher = train_loss(FinetuneConfig(**base, label_smoothing=0.0, distill=1.0), None)
    assert kd < 0.05 * labels, (kd, labels)
    assert no_teacher == pytest.approx(labels, rel=0.1)  # dropout draws differ run to run
    with pytest.raises(UserError):
        FinetuneConfig(distill=1.5).validate()


@pytest.mark.parametrize("cmd, name", [("prune", "pruned.onnx"), ("qat", "report.md")])
def test_cli_out_with_files_of_those_names_needs_force(cmd, name, ckpt, data_dir, tmp_path, capsys):
    """Before: only a finished run's report.json was protected; a model or notes of the user's
    under a name the command writes were replaced silently."""
    out = tmp_path / "misc"
    out.mkdir()
    (out / name).write_text("mine")
    rc = _cli(cmd, "--model", ckpt, "--data", data_dir, "--out", out, *QUICK)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and f"already holds {name}" in lines[0], lines
    assert "--force" in lines[0] and [p.name for p in out.iterdir()] == [name]
    assert (out / name).read_text() == "mine"


# ---- qat / prune --model that is not ONNX or has no metadata ----------------------------------


def test_compress_source_that_is_not_onnx_is_a_bad_checkpoint(tmp_path) -> None:
    from edge_fer.compress.io import load_source

    for name in ("junk.safetensors", "junk.pt"):
        junk = tmp_path / name
        junk.write_bytes(b"junk\n")
        with pytest.raises(UserError, match="not an edge-fer checkpoint") as e:
            load_source(junk)
        assert str(e.value).startswith(f"{junk}: ")
    junk = tmp_path / "junk.onnx"  # named ONNX: still "not an ONNX model"
    junk.write_bytes(b"junk\n")
    with pytest.raises(UserError, match="not an ONNX model"):
        load_source(junk)


def test_compress_source_without_metadata_names_the_file(tmp_path) -> None:
    import onnx

    from edge_fer.compress.io import load_source

    proto = onnx.load(str(FER_MODEL))
    del proto.metadata_props[:]
    nometa = tmp_path / "nometa.onnx"
    onnx.save(proto, str(nometa))
    with pytest.raises(UserError, match="no edge_fer preprocessing metadata") as e:
        load_source(nometa)
    assert str(e.value).startswith(f"{nometa}: ")


@pytest.mark.shared("data/fer2013/train")
def test_qat_cli_junk_safetensors(tmp_path, capsys) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk\n")
    rc, _, err = run_main(["qat", "--data", FER, "--out", tmp_path / "q2", "--model", junk], capsys)
    assert rc == 2 and "not an edge-fer checkpoint" in err and "ONNX" not in err, err


# ---- prune / qat on real faces, `edge-fer` in child processes: --out inside --data, --help,
# --skip-bad (collected, before, under safetensors; the first two under FER2013's splits too)

needs_fer_splits = pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
needs_safetensors = needs_modules("safetensors")


@needs_fer_splits
@needs_safetensors
@pytest.mark.parametrize("command", ["prune", "qat"])
def test_compress_out_inside_the_data_is_refused(tiny_cnn4_onnx, tiny_fer, tiny_fer_env, command):
    # before: the run's models and reports were written into the dataset's folders (calibrate,
    # export --int8 and train refused it)
    out = tiny_fer / "train" / "runs"
    proc = run_cli(command, "--model", tiny_cnn4_onnx, "--data", tiny_fer, "--out", out,
                   "--epochs", 1, "--threads", 1, env=tiny_fer_env)  # fmt: skip
    line = refusal_line(proc)
    assert f"--out {out} is inside --data {tiny_fer}" in line, line
    assert not out.exists()


@needs_fer_splits
@needs_safetensors
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


BAD = "happy/face_999.jpg"
QUICK_NO_TTA = [*QUICK, "--no-progress", "--eval-tta", "none"]


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory) -> Path:
    """3 real Training faces per class in class folders, and a file that is no image."""
    root = fer_class_folders(tmp_path_factory.mktemp("corrupt") / "faces", 3)
    (root / BAD).write_bytes(b"not an image: a scraper's error page")
    return root


@needs_safetensors
@pytest.mark.shared("data/fer2013/train")
def test_prune_and_qat_suggest_and_take_skip_bad(corrupt, tmp_path, tiny_fer_env):
    # before: no --skip-bad, so the error had no hint and a corrupt file was a dead end
    for cmd in ("prune", "qat"):
        proc = run_cli(
            cmd, "--data", corrupt, "--out", tmp_path / cmd, *QUICK_NO_TTA, env=tiny_fer_env
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{BAD}: cannot decode image (use --skip-bad to skip such files)" in proc.stderr
        assert not (tmp_path / cmd).exists()
    out = tmp_path / "pruned"
    proc = run_cli("prune", "--data", corrupt, "--out", out, *QUICK_NO_TTA, "--method",
                   "unstructured", "--steps", 1, "--skip-bad", env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    said = f"--skip-bad skipped 1 bad entry of the fine-tuning faces: {BAD}: cannot decode image"
    assert f"edge-fer prune: {said}" in proc.stderr, proc.stderr
    assert said in (out / "report.md").read_text()
    rep = json.loads((out / "report.json").read_text())
    entry = [f"{BAD}: cannot decode image"]
    assert rep["skipped"]["fine_tuning"] == {"skipped": 1, "skipped_entries": entry}
    # (a class-folder dataset is also the report's: its faces skip the same file)
    assert rep["setup"]["skipped_entries"] == entry
