"""Export to ONNX, the torch-free Classifier, and `edge-fer eval/classify/export/models`.

A tiny cnn4 is really trained for a few batches on real FER2013 faces from ../shared (one
thread), exported, and run through ONNX Runtime; the CLI runs as a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from paths import FER_MODEL, ROOT, fer_files, needs_modules
from processes import refusal_line, run_cli, run_python

from edge_fer import labels as L
from edge_fer.errors import UserError

pytestmark = pytest.mark.shared("data/fer2013/train")
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


def class_folder_dataset(dst: Path, prefix: str, per_class: int, classes=L.FER2013) -> Path:
    for cls in classes:
        (dst / cls).mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(fer_files(cls, prefix, per_class)):
            shutil.copy(f, dst / cls / f"face_{i:03d}.jpg")
    return dst


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Environment for subprocesses: a private dataset cache, one thread."""
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("EDGE_FER_CACHE")
    os.environ["EDGE_FER_CACHE"] = str(cache)
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    yield e
    if old is None:
        os.environ.pop("EDGE_FER_CACHE", None)
    else:
        os.environ["EDGE_FER_CACHE"] = old


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, env) -> Path:
    """A cnn4 trained for a few batches on 25 real training faces per class."""
    from edge_fer.train.trainer import TrainConfig, train

    base = tmp_path_factory.mktemp("train")
    data = class_folder_dataset(base / "data", "Training", 25)
    out = base / "run"
    torch.set_num_threads(1)
    cfg = TrainConfig(
        arch="cnn4",
        data=str(data),
        out=str(out),
        epochs=2,
        batch_size=32,
        threads=1,
        max_batches=3,
        seed=3,
    )
    train(cfg)
    assert (out / "best.safetensors").is_file()
    return out


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> dict:
    from edge_fer.export.onnx import export_checkpoint

    d = tmp_path_factory.mktemp("onnx")
    plain = export_checkpoint(run_dir / "best.safetensors", d / "cnn4.onnx")
    flip = export_checkpoint(run_dir / "best.safetensors", d / "cnn4_flip.onnx", tta="flip")
    return {"plain": plain, "flip": flip, "dir": d}


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory) -> Path:
    """70 real PrivateTest faces, 10 per class, in class folders."""
    return class_folder_dataset(tmp_path_factory.mktemp("evaldata") / "faces", "PrivateTest", 10)


def cli(env, *argv, check_rc: int | None = None) -> subprocess.CompletedProcess:
    p = run_cli(*argv, env=env)
    if check_rc is not None:
        assert p.returncode == check_rc, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    return p


def eval_cli(env, data, model, *flags, check_rc: int | None = None):
    """`edge-fer eval --data DATA --model MODEL FLAGS...` in a child process."""
    return cli(env, "eval", "--data", data, "--model", model, *flags, check_rc=check_rc)


def assert_one_line_error(p: subprocess.CompletedProcess, *needles: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout[-1000:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# -- export ------------------------------------------------------------------------------------


def test_export_graph_and_parity(exported) -> None:
    for key, tta in (("plain", "none"), ("flip", "flip")):
        rep = exported[key]
        assert rep["tta"] == tta and rep["arch"] == "cnn4"
        assert rep["exporter"] in ("classic", "dynamo")
        assert rep["parity_max_abs_diff"] <= 1e-4
        assert rep["parity_top1_agreement"] == 1.0
        assert "random" not in rep["parity_faces"]  # checked on the real training faces
        m = onnx.load(rep["out"])
        onnx.checker.check_model(m)
        (inp,), (out,) = m.graph.input, m.graph.output
        assert inp.name == "input" and out.name == "probs"
        dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
        assert isinstance(dims[0], str) and dims[1:] == [1, 48, 48]  # dynamic batch
        assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert "Softmax" in {n.op_type for n in m.graph.node}
        assert not list(Path(rep["out"]).parent.glob(".*.tmp"))  # no temp file left behind


def test_metadata_round_trip(run_dir, exported) -> None:
    from edge_fer.classify import Classifier
    from edge_fer.preprocess import PreprocessSpec
    from edge_fer.train.checkpoint import read_state

    state = read_state(run_dir / "best.safetensors")
    want = PreprocessSpec.from_metadata(state["spec"])
    with Classifier.load(exported["plain"]["out"], threads=1) as clf:
        assert clf.spec == want and clf.classes == L.FER2013
        meta = clf.metadata
        assert meta["class_names"] == ",".join(L.FER2013)
        assert meta["edge_fer.arch"] == "cnn4" and clf.arch == "cnn4"
        assert int(meta["edge_fer.params"]) == state["params"]
        assert int(meta["edge_fer.macs"]) == state["macs"]
        from edge_fer import __version__

        assert meta["edge_fer.version"] == __version__
        prov = json.loads(meta["edge_fer.provenance"])
        assert prov["seed"] == 3 and prov["config"]["arch"] == "cnn4"
        assert prov["best_epoch"] == state["best_epoch"] and prov["val_acc"] == state["best_acc"]
        assert len(prov["checkpoint_sha256"]) == 64
        info = clf.info()
        assert info["params"] == state["params"] and info["tta"] == "none"
    with Classifier.load(exported["flip"]["out"], threads=1) as clf:
        # the mirror image is averaged inside the graph; no views are added outside it
        assert clf.graph_tta == "flip" and clf.tta == "none"


def test_classifier_matches_torch(exported) -> None:
    from edge_fer.classify import Classifier
    from edge_fer.export.onnx import load_trained

    model, spec, _ = load_trained(exported["plain"]["checkpoint"])
    faces = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in fer_files("fear", "PrivateTest", 9)]
    x = torch.from_numpy(spec.prepare(faces))
    with torch.no_grad():
        ref = torch.softmax(model(x), 1).numpy()
        ref_flip = 0.5 * (ref + torch.softmax(model(torch.flip(x, dims=[3])), 1).numpy())
    with Classifier.load(exported["plain"]["out"], threads=1) as clf:
        p = clf.predict(faces, batch_size=4)  # batches of 4, 4, 1
        assert p.shape == (9, 7) and p.dtype == np.float32
        np.testing.assert_allclose(p, ref, atol=1e-4)
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(clf.predict_array(x.numpy()), ref, atol=1e-4)
        assert clf.predict([]).shape == (0, 7)
        # BGR crops of another size are prepared like the gray 48x48 ones
        bgr = [
            cv2.cvtColor(cv2.resize(f, (96, 96), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR)
            for f in faces[:2]
        ]
        gray_big = [cv2.cvtColor(b, cv2.COLOR_BGR2GRAY) for b in bgr]
        np.testing.assert_allclose(clf.predict(bgr), clf.predict(gray_big), atol=1e-6)
        # wrong shapes and channel counts are user errors
        with pytest.raises(UserError, match=r"does not fit the model's \(N, 1, 48, 48\)"):
            clf.predict_array(np.zeros((2, 1, 64, 64), np.float32))
        with pytest.raises(UserError, match=r"does not fit the model's \(N, 1, 48, 48\)"):
            clf.predict_array(np.zeros((2, 3, 48, 48), np.float32))
        with pytest.raises(UserError, match="expected a grayscale or BGR image"):
            clf.predict([np.zeros((48, 48, 2), np.uint8)])
    with Classifier.load(exported["flip"]["out"], threads=1) as clf:
        np.testing.assert_allclose(clf.predict(faces), ref_flip, atol=1e-4)


def test_fixed_batch_model_is_fed_in_chunks(exported, tmp_path) -> None:
    from edge_fer.backends import create_backend

    m = onnx.load(exported["plain"]["out"])
    for t in (m.graph.input[0], m.graph.output[0]):
        d = t.type.tensor_type.shape.dim[0]
        d.ClearField("dim_param")
        d.dim_value = 4
    fixed = tmp_path / "fixed4.onnx"
    onnx.save(m, str(fixed))
    x = np.random.default_rng(0).normal(size=(10, 1, 48, 48)).astype(np.float32)
    with (
        create_backend("onnxruntime", exported["plain"]["out"], threads=1) as dyn,
        create_backend("onnxruntime", fixed, threads=1) as fb,
    ):
        assert dyn.fixed_batch is None and fb.fixed_batch == 4 and fb.name == "onnxruntime"
        assert fb.input_shape == (4, 1, 48, 48) and fb.num_outputs == 7
        np.testing.assert_allclose(fb.infer(x), dyn.infer(x), atol=1e-6)
        assert fb.infer(x[:0]).shape == (0, 7)


def test_tensorrt_backend_absent_is_a_user_error(exported) -> None:
    import importlib.util

    from edge_fer.backends import create_backend

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the backend is available")
    with pytest.raises(UserError, match="TensorRT backend not available"):
        create_backend("tensorrt", exported["plain"]["out"])
    with pytest.raises(UserError, match="unknown backend 'openvino'"):
        create_backend("openvino", exported["plain"]["out"])


def test_bad_model_files(exported, run_dir, tmp_path) -> None:
    from edge_fer.classify import Classifier, default_model_path

    good = Path(exported["plain"]["out"])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).bytes(3000))
    image = tmp_path / "face.onnx"
    shutil.copy(fer_files("happy", "PrivateTest", 1)[0], image)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    m = onnx.load(str(good))
    del m.metadata_props[:]
    nometa = tmp_path / "nometa.onnx"
    onnx.save(m, str(nometa))
    m = onnx.load(str(good))
    for p in m.metadata_props:
        if p.key == "edge_fer.preprocess":
            d = json.loads(p.value)
            d["classes"] = ["negative", "neutral", "positive"]
            p.value = json.dumps(d)
    wrong_n = tmp_path / "three_names.onnx"
    onnx.save(m, str(wrong_n))
    keras = tmp_path / "model.hdf5"  # the signature is all the check reads
    keras.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    cases = [
        (tmp_path / "missing.onnx", "no such model file"),
        (tmp_path, "is a folder"),
        (garbage, "not a loadable ONNX model"),
        (image, "is a JPEG image, not an ONNX model"),
        (empty, "empty file"),
        (run_dir / "best.safetensors", "safetensors training checkpoint"),
        (keras, "is an HDF5 file (a Keras model?), not an ONNX model; convert a Keras"),
        (nometa, "has no edge-fer metadata"),
        (wrong_n, "model outputs 7 values but its metadata names 3 classes"),
    ]
    for path, why in cases:
        with pytest.raises(UserError) as ei:
            Classifier.load(path)
        msg = str(ei.value)
        assert why in msg and str(path) in msg and "\n" not in msg, msg
    bundled = FER_MODEL
    if bundled.exists():
        assert default_model_path() == bundled
    else:
        with pytest.raises(UserError, match="no bundled model yet; pass --model"):
            Classifier.load()


def test_export_bad_checkpoint_and_options(exported, tmp_path) -> None:
    from edge_fer.export.onnx import export_checkpoint

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="not an edge-fer checkpoint"):
        export_checkpoint(bad, tmp_path / "x.onnx")
    with pytest.raises(UserError, match="no such checkpoint"):
        export_checkpoint(tmp_path / "nope.safetensors", tmp_path / "x.onnx")
    # before: a run folder was "no such checkpoint file"
    run = Path(exported["plain"]["checkpoint"]).parent
    with pytest.raises(UserError, match=r"is a folder; give one of its .safetensors checkpoints"):
        export_checkpoint(run, tmp_path / "x.onnx")
    with pytest.raises(UserError, match="^tta 'rotate' is unknown; choose flip or none"):
        export_checkpoint(exported["plain"]["checkpoint"], tmp_path / "x.onnx", tta="rotate")
    assert not (tmp_path / "x.onnx").exists()
    # the output may not be the checkpoint (by any spelling) or a folder: said before exporting
    ckpt = tmp_path / "run.safetensors"
    shutil.copy(exported["plain"]["checkpoint"], ckpt)
    before = ckpt.read_bytes()
    for out in (ckpt, tmp_path / "." / "run.safetensors"):
        with pytest.raises(UserError, match="must not overwrite an input"):
            export_checkpoint(ckpt, out)
    with pytest.raises(UserError, match="is a folder") as e:
        export_checkpoint(ckpt, tmp_path)
    assert e.value.param == "out" and ckpt.read_bytes() == before
    # a diverged run's weights: said as such (the parity check used to fail "by nan")
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(ckpt), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(ckpt))
    name = next(n for n, t in tensors.items() if t.is_floating_point() and t.numel() > 1)
    tensors[name].view(-1)[0] = float("nan")
    nan = tmp_path / "nan.safetensors"
    save_file(tensors, str(nan), metadata=meta)
    with pytest.raises(UserError, match="non-finite weights .* diverged"):
        export_checkpoint(nan, tmp_path / "nan.onnx")
    assert not (tmp_path / "nan.onnx").exists()


# -- CLI ---------------------------------------------------------------------------------------


def test_eval_cli_end_to_end(env, exported, eval_data, tmp_path) -> None:
    out = tmp_path / "reports" / "eval.json"
    flags = ["--json", out, "--threads", 1, "--batch-size", 16, "--latency-samples", 20]
    p = eval_cli(env, eval_data, exported["plain"]["out"], *flags, check_rc=0)
    assert "accuracy" in p.stdout and "macro-F1" in p.stdout
    rep = json.loads(out.read_text())
    for k in (
        "accuracy",
        "top2_accuracy",
        "macro_f1",
        "labels",
        "per_class",
        "confusion_matrix",
        "n",
        "model",
        "split",
        "latency",
        "latency_ms_per_face",
    ):
        assert k in rep, k
    assert rep["n"] == 70 and rep["labels"] == list(L.FER2013) and rep["split"] == "all"
    assert rep["layout"] == "class-folders" and rep["skipped"] == 0 and rep["dropped"] == 0
    cm = np.array(rep["confusion_matrix"])
    assert cm.shape == (7, 7) and cm.sum() == 70 and (cm.sum(1) == 10).all()
    assert rep["accuracy"] == pytest.approx(np.trace(cm) / 70)
    assert 0 <= rep["accuracy"] <= rep["top2_accuracy"] <= 1
    assert set(rep["per_class"]) == set(L.FER2013)
    assert all(v["support"] == 10 for v in rep["per_class"].values())
    lat = rep["latency"]
    assert lat["batch_size"] == 16 and lat["ms_per_face"] > 0 and lat["threads"] == 1
    assert lat["batch1_samples"] == 20 and lat["batch1_ms_per_face"] > 0
    png = out.with_suffix(".png")
    assert rep["confusion_png"] == str(png)
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 300
    # the same numbers in-process, and the scores match the classifier's own predictions
    from edge_fer.classify import Classifier
    from edge_fer.data import load_dataset
    from edge_fer.metrics import classification_report

    fs = load_dataset(eval_data, cache=False)
    with Classifier.load(exported["plain"]["out"], threads=1) as clf:
        ref = classification_report(clf.predict(fs.images), fs.labels, fs.classes)
    assert ref["confusion_matrix"] == rep["confusion_matrix"]


def test_eval_cli_label_sets(env, exported, eval_data, tmp_path) -> None:
    model = exported["plain"]["out"]

    def report(data, *flags) -> dict:
        out = tmp_path / "eval.json"
        eval_cli(env, data, model, *flags, "--json", out, "--latency-samples", "0", check_rc=0)
        return json.loads(out.read_text())

    rep = report(eval_data, "--label-set", "grouped3")
    assert rep["labels"] == list(L.GROUPED3) and rep["n"] == 70
    assert [rep["per_class"][c]["support"] for c in L.GROUPED3] == [40, 20, 10]
    # a dataset class the model does not know: an error unless a vocabulary is chosen
    extra = tmp_path / "with_contempt"
    shutil.copytree(eval_data, extra)
    (extra / "contempt").mkdir()
    for i, f in enumerate(fer_files("neutral", "PublicTest", 3)):
        shutil.copy(f, extra / "contempt" / f"c{i}.jpg")
    p = cli(env, "eval", "--data", extra, "--model", model, "--latency-samples", "0")
    assert_one_line_error(p, "dataset classes contempt have no counterpart", "--label-set")
    rep = report(extra, "--label-set", "fer2013")
    assert rep["n"] == 70 and rep["dropped"] == 3 and rep["dropped_by_class"] == {"contempt": 3}
    # an explicit class list: no disgust; its samples dropped, its probability mass removed
    rep = report(eval_data, "--classes", "angry,fear,happy,sad,surprise,neutral")
    assert rep["n"] == 60 and rep["dropped_by_class"] == {"disgust": 10}
    assert rep["model_mapping"]["disgust"] is None


def test_eval_cli_csv_skip_bad(env, exported, tmp_path) -> None:
    lines = ["emotion,pixels,Usage"]
    for cls in ("happy", "sad", "angry"):
        for f in fer_files(cls, "PrivateTest", 2):
            img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            lines.append(f"{L.FER2013.index(cls)},{' '.join(map(str, img.ravel()))},PrivateTest")
    lines.insert(3, "4,1 2 3,PrivateTest")  # line 4: 3 pixels
    csv_path = tmp_path / "fer2013.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    model = exported["plain"]["out"]
    p = cli(env, "eval", "--data", csv_path, "--model", model)
    assert_one_line_error(p, f"{csv_path}:4: malformed row", "3 pixels is not a square image")
    out = tmp_path / "csv.json"
    eval_cli(
        env, csv_path, model, "--skip-bad", "--json", out, "--latency-samples", "5", check_rc=0
    )
    rep = json.loads(out.read_text())
    assert rep["n"] == 6 and rep["skipped"] == 1 and rep["split"] == "private-test"
    assert (
        "skipped 1"
        in eval_cli(
            env, csv_path, model, "--skip-bad", "--split", "private-test", "--latency-samples", "0"
        ).stdout
    )


def test_eval_cli_bad_inputs(env, exported, tmp_path) -> None:
    model = exported["plain"]["out"]
    assert_one_line_error(
        cli(env, "eval", "--data", tmp_path / "nope", "--model", model), "no such file or folder"
    )
    (tmp_path / "empty").mkdir()
    assert_one_line_error(
        cli(env, "eval", "--data", tmp_path / "empty", "--model", model), "no images found"
    )
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(2048))
    assert_one_line_error(
        cli(env, "eval", "--data", tmp_path / "empty", "--model", garbage),
        str(garbage),
        "not a loadable ONNX model",
    )
    pets = tmp_path / "pets"
    for cls, src in (("cat", "happy"), ("dog", "sad")):
        (pets / cls).mkdir(parents=True)
        for i, f in enumerate(fer_files(src, "PrivateTest", 2)):
            shutil.copy(f, pets / cls / f"{i}.jpg")
    assert_one_line_error(
        cli(env, "eval", "--data", pets, "--model", model), "vocabulary mismatch", "cat, dog"
    )
    assert_one_line_error(
        cli(env, "eval", "--data", pets, "--model", model, "--label-set", "emotions"),
        "--label-set 'emotions' is an unknown label set; choose dataset, fer2013",
    )
    # outputs that cannot be written are said before the evaluation runs
    (tmp_path / "adir").mkdir()
    assert_one_line_error(
        cli(env, "eval", "--data", pets, "--model", model, "--json", tmp_path / "adir"),
        "is a folder",
    )
    assert not (tmp_path / "adir.png").exists()
    assert_one_line_error(
        cli(env, "eval", "--data", pets, "--model", model, "--latency-samples", "-1"),
        "--latency-samples must be >= 0",
    )


def test_eval_cli_json_and_png_names(env, tmp_path) -> None:
    """`--json DIR/` wrote a file named DIR (and DIR.png); `--png x.jpg` wrote PNG bytes under
    a JPEG name: both refused in one line before the evaluation (the bundled model)."""
    data = class_folder_dataset(tmp_path / "faces", "PrivateTest", 1, classes=("happy", "sad"))
    flags = ("--latency-samples", "0", "--no-progress", "--threads", "1")
    for extra, needle in (
        (["--json", str(tmp_path / "reports") + "/"], "names a folder"),
        (["--json", tmp_path / "r.json", "--png", str(tmp_path / "pics") + "/"], "names a folder"),
        (["--png", tmp_path / "conf.jpg"], "name it .png"),
        (["--json", tmp_path / "r.json", "--png", tmp_path / "conf"], "name it .png"),
    ):
        assert_one_line_error(eval_cli(env, data, FER_MODEL, *flags, *extra), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"]
    # a .png in any case is fine, and so is a device
    eval_cli(env, data, FER_MODEL, *flags, "--png", tmp_path / "conf.PNG", check_rc=0)
    assert (tmp_path / "conf.PNG").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png = ("--png", os.devnull)
    eval_cli(env, data, FER_MODEL, *flags, "--json", tmp_path / "r.json", *png, check_rc=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf.PNG", "faces", "r.json"]


def test_classify_cli(env, exported, tmp_path) -> None:
    faces = fer_files("surprise", "PrivateTest", 3)
    p = cli(env, "classify", "--json", "--model", exported["flip"]["out"], *faces, check_rc=0)
    recs = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert [r["path"] for r in recs] == [str(f) for f in faces]
    from edge_fer.classify import Classifier

    with Classifier.load(exported["flip"]["out"], threads=1) as clf:
        ref = clf.predict([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in faces])
    for r, pr in zip(recs, ref):
        assert list(r["probs"]) == list(L.FER2013)
        assert sum(r["probs"].values()) == pytest.approx(1.0, abs=1e-4)
        assert r["label"] == L.FER2013[int(pr.argmax())]
        np.testing.assert_allclose(list(r["probs"].values()), pr, atol=2e-6)
    # unreadable and too small images: skipped with a warning line each, the others still
    # printed, exit 1 (as run and detect: docs/runtime.md, Photos)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((4, 4), np.uint8))
    p = cli(
        env,
        "classify",
        "--model",
        exported["plain"]["out"],
        faces[0],
        broken,
        tiny,
        faces[1],
    )
    assert p.returncode == 1 and "Traceback" not in p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 3
    assert f"warning: {broken}: not a readable image (corrupt, or not an image); skipped" in err[0]
    assert "too small for a face crop" in err[1]
    assert "error: 2 of 4 images could not be used" in err[2]
    out = p.stdout.strip().splitlines()
    assert len(out) == 2 and out[0].startswith(f"{faces[0]}: ")
    # a missing file is a mistake in the names: one line before anything, as in detect and run
    p = cli(env, "classify", "--model", exported["plain"]["out"], faces[0], tmp_path / "no.jpg")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        f"edge-fer classify: error: {tmp_path / 'no.jpg'}: no such file"
    ]
    # a folder is expanded to its images
    p = cli(
        env,
        "classify",
        "--json",
        "--model",
        exported["plain"]["out"],
        faces[0].parent,
        "--batch-size",
        "500",
        check_rc=0,
    )
    assert len(p.stdout.splitlines()) == len(list(faces[0].parent.glob("*.jpg")))


def test_export_and_models_cli(env, run_dir, tmp_path) -> None:
    out = tmp_path / "m" / "flip.onnx"
    p = cli(
        env,
        "export",
        "--checkpoint",
        run_dir / "best.safetensors",
        "--out",
        out,
        "--tta",
        "flip",
        "--opset",
        "17",
        check_rc=0,
    )
    rep = json.loads(p.stdout)
    assert rep["tta"] == "flip" and rep["opset"] == 17 and out.is_file()
    assert rep["parity_max_abs_diff"] <= 1e-4
    bad = tmp_path / "bad.safetensors"
    bad.write_text("{}")
    assert_one_line_error(
        cli(env, "export", "--checkpoint", bad, "--out", tmp_path / "b.onnx"), str(bad)
    )
    # the runtime's crop margin is the exporter's to set; the checkpoint's stays otherwise
    from edge_fer.classify import Classifier

    wide = tmp_path / "m" / "wide.onnx"
    cli(env, "export", "--checkpoint", run_dir / "best.safetensors", "--out", wide,
        "--crop-margin", "0.15", "--no-check", check_rc=0)  # fmt: skip
    with Classifier.load(wide, threads=1) as clf, Classifier.load(out, threads=1) as plain:
        assert clf.spec.crop_margin == 0.15 and plain.spec.crop_margin == 0.0
    for flags, needle in (
        (["--checkpoint", run_dir / "best.safetensors", "--out", tmp_path / "c.onnx",
          "--crop-margin", "1.5"], "--crop-margin"),
        (["--int8", "--data", run_dir, "--crop-margin", "0.1"], "--crop-margin"),
    ):  # fmt: skip
        assert_one_line_error(cli(env, "export", *flags), needle)
    assert not (tmp_path / "c.onnx").exists()
    # --checkpoint --int8 onto an INT8 folder holding an earlier calibration: refused before
    # the FP32 model is written (it replaced --out, then refused the INT8 part)
    fresh = tmp_path / "m" / "fresh.onnx"
    (tmp_path / "m" / "fresh_int8").mkdir()
    (tmp_path / "m" / "fresh_int8" / "calib.cache").write_text("an earlier cache")
    p = cli(env, "export", "--checkpoint", run_dir / "best.safetensors", "--out", fresh,
            "--int8", "--data", run_dir, "--no-check")  # fmt: skip
    assert_one_line_error(p, "--force is needed to replace the earlier calibration")
    assert not fresh.exists()
    # INT8 options refused only after the FP32 model was written made the corrected rerun
    # fail on it ("--out already exists")
    for flags, needle in (
        (["--samples", "10"], "at least 100"),
        (["--trt-version", "10"], "like 8.6.1"),
        (["--max-drop", "-1"], "--max-drop"),
        (["--eval-limit", "-1"], "--eval-limit"),
    ):
        p = cli(env, "export", "--checkpoint", run_dir / "best.safetensors", "--out", fresh,
                "--int8", "--data", run_dir, "--int8-out", tmp_path / "q8", *flags)  # fmt: skip
        assert_one_line_error(p, needle)
        assert not fresh.exists() and not (tmp_path / "q8").exists()
    # a failure of the INT8 step writes nothing: the FP32 model is written with the INT8 set
    # (before: it was kept, beside no INT8 set or an earlier model's)
    (tmp_path / "empty").mkdir()
    p = cli(env, "export", "--checkpoint", run_dir / "best.safetensors", "--out", fresh,
            "--int8", "--data", tmp_path / "empty", "--int8-out", tmp_path / "q8")  # fmt: skip
    assert_one_line_error(p, "no images found")
    assert not fresh.exists() and not (tmp_path / "q8").exists()
    p = cli(env, "models", check_rc=0)
    for arch in ("cnn4", "cnn8_tanh", "resnet", "mobilenet", "mini_xception", "vgg"):
        assert arch in p.stdout
    assert "652,535" in p.stdout  # cnn4's parameter count
    assert_one_line_error(cli(env, "models", "--input-size", "0"), "--input-size must be in")
    assert_one_line_error(cli(env, "models", "--num-classes", "1"), "--num-classes must be in")


def test_export_never_replaces_a_file_without_force(env, run_dir, tmp_path) -> None:
    """--out replaced any file (a dataset image, a run's last.safetensors, notes.md), wrote a
    file named DIR for --out DIR/, and --int8-out could lie inside --data."""
    ck = run_dir / "best.safetensors"
    notes = tmp_path / "notes.md"
    notes.write_text("mine")
    data = tmp_path / "faces"
    (data / "angry").mkdir(parents=True)
    face = data / "angry" / "a.png"
    face.write_bytes(b"not really a png")
    for out, needle in (
        (notes, f"--out {notes} already exists; pass --force"),
        (run_dir / "last.safetensors", "already exists"),
        (str(tmp_path / "newdir") + "/", "is a folder"),
        # a folder that cannot be made: before, a traceback (after the export for /proc)
        (notes / "x.onnx", f"{notes} is not a folder"),
        *([("/proc/x.onnx", "cannot write in /proc")] if os.path.isdir("/proc") else []),
        (data / "angry" / "m.onnx", f"--out {data / 'angry' / 'm.onnx'} is inside --check-data"),
    ):
        before = {p: p.read_bytes() for p in (notes, face, run_dir / "last.safetensors")}
        p = cli(env, "export", "--checkpoint", ck, "--out", out, "--check-data", data)
        assert_one_line_error(p, needle)
        assert {q: q.read_bytes() for q in before} == before
    assert not (tmp_path / "newdir").exists() and not (data / "angry" / "m.onnx").exists()
    p = cli(env, "export", "--checkpoint", ck, "--out", tmp_path / "m.onnx", "--int8",
            "--data", data, "--int8-out", data / "q", "--no-check")  # fmt: skip
    assert_one_line_error(p, "--int8-out")
    assert not (data / "q").exists() and not (tmp_path / "m.onnx").exists()
    mine = tmp_path / "mine.onnx"  # (an .onnx name: another suffix is refused)
    mine.write_text("mine")
    cli(env, "export", "--checkpoint", ck, "--out", mine, "--force", "--no-check", check_rc=0)
    assert mine.read_bytes()[:2] != b"mi"  # replaced, as asked


TORCH_BLOCKER = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
sys.meta_path.insert(0, NoTorch())
from edge_fer.cli.main import main
rc = main(sys.argv[1:])
assert "torch" not in sys.modules
sys.exit(rc)
"""


def test_runtime_without_torch(env, exported, eval_data, tmp_path) -> None:
    code = (
        "import sys, edge_fer.classify, edge_fer.evaluate, edge_fer.backends, "
        "edge_fer.cli.eval_cmd; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=60)
    face = fer_files("happy", "PrivateTest", 1)[0]

    def blocked(*argv):
        return run_python("-c", TORCH_BLOCKER, *argv, env=env)

    p = blocked("classify", "--json", "--model", exported["plain"]["out"], face)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["path"] == str(face)
    out = tmp_path / "e.json"
    model = exported["plain"]["out"]
    p = blocked(
        "eval", "--data", eval_data, "--model", model, "--json", out, "--latency-samples", 5
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(out.read_text())["n"] == 70 and out.with_suffix(".png").is_file()
    p = blocked("models")
    assert_one_line_error(p, "needs torch", "pip install '.[train]'")


def test_zoo_table_smoke(env, run_dir, eval_data, tmp_path) -> None:
    args = [run_dir, "--data", eval_data, "--out-dir", tmp_path, "--latency-samples", 10]
    p = run_python("benchmarks/zoo_table.py", *args, env=env)
    assert p.returncode == 0, p.stderr
    assert "| cnn4 | 0.65M |" in p.stdout
    res = json.loads((tmp_path / "zoo.json").read_text())
    (row,) = res["results"]
    assert row["arch"] == "cnn4" and row["n"] == 70 and row["ms_per_face_1thread"] > 0
    assert (tmp_path / "zoo.md").read_text().startswith("faces all (70 faces)")


# -- export --skip-bad, export's and eval's refusals on a tiny finished run --------------------
# (their FER2013-layout dataset holds PublicTest and PrivateTest faces, and the run is saved
# with safetensors: these tests need both)

needs_fer_test = pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
needs_safetensors = needs_modules("safetensors")
BROKEN = b"not an image at all"


@pytest.fixture(scope="module")
def fer_bad(tiny_fer, tmp_path_factory) -> Path:
    """`tiny_fer` with one undecodable file in each split."""
    root = tmp_path_factory.mktemp("bad") / "fer_bad"
    shutil.copytree(tiny_fer, root)
    (root / "train" / "sad" / "Training_broken.jpg").write_bytes(BROKEN)
    (root / "test" / "happy" / "PublicTest_broken.jpg").write_bytes(BROKEN)
    (root / "test" / "sad" / "PrivateTest_broken.jpg").write_bytes(BROKEN)
    return root


# ---- export --skip-bad (the gap: train, eval and calibrate had it, export had not) --------------


@needs_fer_test
@needs_safetensors
def test_export_check_data_skip_bad(tiny_cnn4_run, fer_bad, tiny_fer_env, tmp_path):
    ckpt = tiny_cnn4_run / "best.safetensors"
    out = tmp_path / "m.onnx"
    proc = run_cli("export", "--checkpoint", ckpt, "--out", out, "--check-data", fer_bad,
                   env=tiny_fer_env)  # fmt: skip
    line = refusal_line(proc)  # as train and eval say it: the file, and the flag that skips it
    assert "PublicTest_broken.jpg: cannot decode image (use --skip-bad" in line, line
    assert not out.exists()

    proc = run_cli("export", "--checkpoint", ckpt, "--out", out, "--check-data", fer_bad,
                   "--skip-bad", env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout.splitlines()[0])
    assert rep["parity_skipped"] == 1
    assert rep["parity_skipped_entries"] == [
        f"test{os.sep}happy{os.sep}PublicTest_broken.jpg: cannot decode image"
    ]
    assert "--skip-bad skipped 1 bad entry of the parity check faces" in proc.stderr
    assert out.is_file()


@needs_fer_test
@needs_safetensors
def test_export_int8_skip_bad(tiny_cnn4_onnx, fer_bad, tiny_fer_env, tmp_path):
    out = tmp_path / "int8"
    argv = ("export", "--model", tiny_cnn4_onnx, "--int8", "--data", fer_bad, "--samples", 100,
            "--int8-out", out, "--threads", 1)  # fmt: skip
    line = refusal_line(run_cli(*argv, env=tiny_fer_env))
    # the accuracy check's faces are read first, before the calibration's (a split that is
    # not there was found after the calibration)
    assert "PrivateTest_broken.jpg: cannot decode image (use --skip-bad" in line, line

    proc = run_cli(*argv, "--skip-bad", env=tiny_fer_env)
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


@needs_fer_test
@needs_safetensors
def test_export_skip_bad_that_reads_no_dataset_is_refused(
    tiny_cnn4_run, tiny_cnn4_onnx, tiny_fer_env, tmp_path
):
    # (it would change nothing: said, as calibrate --source --skip-bad is)
    out = tmp_path / "m.onnx"
    line = refusal_line(run_cli("export", "--checkpoint", tiny_cnn4_run / "best.safetensors",
                                "--out", out, "--no-check", "--skip-bad",
                                env=tiny_fer_env))  # fmt: skip
    assert "--skip-bad applies to the datasets export reads" in line, line
    assert not out.exists()


# ---- export: inputs checked before the FP32 model is written -----------------------------------


@needs_fer_test
@needs_safetensors
@pytest.mark.parametrize(
    "argv, words",
    [
        # before: "--eval-data nothere: no such dataset" (a flag not given)
        (("--data", "{tmp}/nothere"), "--data {tmp}/nothere: no such file or folder"),
        # before: said after the FP32 model was exported and written
        (("--source", "{tmp}/nothere.mp4"), "--source {tmp}/nothere.mp4: no such file"),
    ],
)
def test_export_int8_missing_input_before_the_fp32_model(
    tiny_cnn4_run, tiny_fer_env, tmp_path, argv, words
):
    out = tmp_path / "m.onnx"
    argv = [str(a).format(tmp=tmp_path) for a in argv]
    proc = run_cli("export", "--checkpoint", tiny_cnn4_run / "best.safetensors", "--out", out,
                   "--int8", *argv, env=tiny_fer_env)  # fmt: skip
    line = refusal_line(proc)
    assert line == f"edge-fer export: error: {words.format(tmp=tmp_path)}", line
    assert not out.exists() and not (tmp_path / "m_int8").exists()


@needs_fer_test
@needs_safetensors
def test_export_checkpoint_given_an_onnx_model(tiny_cnn4_onnx, tiny_fer_env, tmp_path):
    # before: "not an edge-fer checkpoint (Error while deserializing header: header too large)"
    line = refusal_line(run_cli("export", "--checkpoint", tiny_cnn4_onnx, "--out",
                                tmp_path / "x.onnx", env=tiny_fer_env))  # fmt: skip
    assert f"{tiny_cnn4_onnx}: is an ONNX model, not a training checkpoint" in line, line
    assert "--model" in line and not (tmp_path / "x.onnx").exists()


@needs_safetensors
def test_export_checkpoint_given_a_damaged_onnx_file(tiny_fer_env, tmp_path):
    # before: "bad.onnx: is an ONNX model, ..." said of any file by its name alone
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a model, cut short" * 8)
    line = refusal_line(run_cli("export", "--checkpoint", bad, "--out", tmp_path / "x.onnx",
                                env=tiny_fer_env))  # fmt: skip
    assert line == (f"edge-fer export: error: {bad}: is neither a training checkpoint "
                    "(.safetensors) nor a readable ONNX model (damaged or not a model)"), line  # fmt: skip
    assert not (tmp_path / "x.onnx").exists()


# ---- eval: a vocabulary the model answers with one class, --json over what is no report -------


@pytest.fixture(scope="module")
def contempt_sad(tmp_path_factory) -> Path:
    """Real faces under contempt/ (no FER2013 class) and sad/."""
    root = tmp_path_factory.mktemp("vocab") / "cs"
    for name, cls in (("contempt", "angry"), ("sad", "sad")):
        (root / name).mkdir(parents=True)
        for i, f in enumerate(fer_files(cls, "Training", 4)):
            shutil.copy(f, root / name / f"f{i}.jpg")
    return root


@needs_fer_test
@needs_safetensors
def test_eval_refuses_a_vocabulary_the_model_answers_with_one_class(contempt_sad, tiny_fer_env):
    # before: every face was "predicted" sad (all the probability renormalised onto it) and
    # the report scored that: 0.5 accuracy, top-2 1.0; --label-set dataset already refused it
    proc = run_cli("eval", "--data", contempt_sad, "--classes", "contempt,sad", "--threads", 1,
                   "--latency-samples", 0, env=tiny_fer_env)  # fmt: skip
    line = refusal_line(proc)
    assert "the model answers only one of the evaluation classes (sad;" in line, line
    assert "contempt" in line
    # two classes it answers: evaluated as before
    proc = run_cli("eval", "--data", contempt_sad, "--classes", "contempt,sad,happy",
                   "--threads", 1, "--latency-samples", 0, env=tiny_fer_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


@needs_fer_test
@needs_safetensors
def test_eval_json_does_not_replace_a_file_that_is_not_a_report(
    tiny_fer, tiny_cnn4_onnx, tiny_fer_env, tmp_path
):
    victim = tmp_path / "keep.onnx"
    shutil.copy(tiny_cnn4_onnx, victim)
    before = victim.read_bytes()
    common = ("eval", "--data", tiny_fer, "--split", "public-test", "--threads", 1,
              "--latency-samples", 0, "--no-progress")  # fmt: skip
    line = refusal_line(run_cli(*common, "--json", victim, env=tiny_fer_env))
    assert f"--json {victim} exists and is not an earlier eval report; pass --force" in line, line
    assert victim.read_bytes() == before  # before: replaced by the report
    png = tmp_path / "r.png"
    shutil.copy(tiny_cnn4_onnx, png)
    line = refusal_line(run_cli(*common, "--json", tmp_path / "r.json", env=tiny_fer_env))
    assert f"{png} exists and is not an earlier eval image" in line, line
    assert png.read_bytes() == before and not (tmp_path / "r.json").exists()
    # a JSON file and a PNG of the user's: before, only other kinds of file were kept
    config, photo = tmp_path / "config.json", tmp_path / "config.png"
    config.write_text('{"lr": 0.01}')
    cv2.imwrite(str(photo), np.zeros((8, 8), np.uint8))
    kept = photo.read_bytes()
    line = refusal_line(run_cli(*common, "--json", config, env=tiny_fer_env))
    assert "exists and is not an earlier eval report" in line, line
    line = refusal_line(run_cli(*common, "--json", tmp_path / "a.json", "--png", photo,
                                env=tiny_fer_env))  # fmt: skip
    assert f"--png {photo} exists and is not an earlier eval image" in line, line
    assert config.read_text() == '{"lr": 0.01}' and photo.read_bytes() == kept
    # an earlier report and its image are replaced, as always; anything else with --force
    report = tmp_path / "ok.json"
    for _ in range(2):
        proc = run_cli(*common, "--json", report, env=tiny_fer_env)
        assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["n"] == 14
    proc = run_cli(*common, "--json", config, "--force", env=tiny_fer_env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(config.read_text())["n"] == 14 and photo.read_bytes() != kept
    # an image from before the mark (its report names it) is replaced too: the same command
    # was refused after an upgrade
    old_png = Path(json.loads(report.read_text())["confusion_png"])
    assert old_png.exists()
    cv2.imwrite(str(old_png), np.zeros((8, 8), np.uint8))  # a PNG without the mark
    proc = run_cli(*common, "--json", report, env=tiny_fer_env)
    assert proc.returncode == 0 and old_png.stat().st_size > 1000, proc.stderr
