"""Model, verifier and cascade files are input: whatever bytes or metadata they hold, loading
them gives a working object or a one-line UserError, never another exception, NaN results or
gigabytes of memory (issue #13). The fuzz loops are seeded and stop after a few seconds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_fer.detect import Cascade, CascadeError, cascade_settings
from edge_fer.detect.cascade import HEADER_BYTES, MAX_SCORE, tree_bytes
from edge_fer.errors import UserError

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper
from paths import ASSETS, PICO, ROOT, VERIFIER
from paths import FER_MODEL as FER

FUZZ_SECONDS = 3.0


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, text
    return text


# ---- cascades -----------------------------------------------------------------------------
def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = rng.integers(7)
    if kind == 0:  # flip a few random bytes anywhere
        for i in rng.integers(0, len(b), rng.integers(1, 8)):
            b[i] = int(rng.integers(256))
    elif kind == 1:  # the header: depth and tree count
        off = int(rng.integers(8, HEADER_BYTES))
        b[off] = int(rng.integers(256))
    elif kind == 2:  # truncate
        del b[int(rng.integers(0, len(b))) :]
    elif kind == 3:  # trailing garbage
        b += rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
    elif kind == 4:  # a float32 field (leaf or threshold) set to something extreme
        off = HEADER_BYTES + 4 * int(rng.integers(0, (len(b) - HEADER_BYTES) // 4))
        v = rng.choice([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e30, 1e-45, 0.0])
        b[off : off + 4] = np.float32(v).tobytes()
    elif kind == 5:  # cut out a slice
        i = int(rng.integers(0, len(b)))
        del b[i : i + int(rng.integers(1, 64))]
    else:  # random bytes of a plausible length
        b = bytearray(rng.integers(0, 256, int(rng.integers(0, 2000)), dtype=np.uint8).tobytes())
    return bytes(b)


def test_fuzzed_cascade_bytes_load_or_raise_a_user_error(tmp_path) -> None:
    data = PICO.read_bytes()
    rng = np.random.default_rng(13)
    loaded = refused = 0
    end = time.monotonic() + FUZZ_SECONDS
    f = tmp_path / "fuzz.pico"
    while time.monotonic() < end or loaded + refused < 300:  # (a slow machine still checks 300)
        m = _mutate(data, rng)
        try:
            if loaded + refused < 50:  # a few through the file loader too
                f.write_bytes(m)
                c = Cascade.load(f)
            else:
                c = Cascade.from_bytes(m, source="fuzz")
        except CascadeError as exc:
            assert "\n" not in str(exc)
            refused += 1
            continue
        # what loads is usable: finite and bounded, so no score can overflow
        assert np.isfinite(c.leaves).all() and np.isfinite(c.thresholds).all()
        assert np.abs(c.leaves.astype(np.float64)).max(axis=1).sum() <= MAX_SCORE
        loaded += 1
    assert loaded > 20 and refused > 20, (loaded, refused)


def test_cascade_whose_leaves_can_sum_past_float32_is_refused() -> None:
    c = Cascade.load(PICO)
    leaves = c.leaves.copy()
    leaves[:, 0] = 3e36  # each leaf finite, the sum over trees is not a float32
    with pytest.raises(CascadeError, match="sum") as exc:
        Cascade(c.tdepth, c.codes, leaves, c.thresholds, source="big")
    one_line(exc)
    # the same through the byte loader: every tree's first leaf set to 1e30
    b = bytearray(PICO.read_bytes())
    per = tree_bytes(c.tdepth)
    first_leaf = 4 * ((1 << c.tdepth) - 1)
    for t in range(c.ntrees):
        off = HEADER_BYTES + t * per + first_leaf
        b[off : off + 4] = np.float32(1e30).tobytes()
    with pytest.raises(CascadeError, match="sum"):
        Cascade.from_bytes(bytes(b), source="big")
    # the bundled cascades are far inside the bound
    assert np.abs(c.leaves).max(axis=1).sum() < 1e4


def test_cascade_load_odd_paths_are_one_line(tmp_path) -> None:
    for p in (tmp_path / "missing.pico", tmp_path, "bad\0name.pico", tmp_path / ("x" * 5000)):
        with pytest.raises(CascadeError) as exc:
            Cascade.load(p)
        one_line(exc)


# ---- cascade settings (X.pico -> X.json) --------------------------------------------------
@pytest.fixture()
def cascade_dir(tmp_path) -> Path:
    d = tmp_path / "casc"
    d.mkdir()
    (d / "c.pico").write_bytes(PICO.read_bytes())
    (d / "v.onnx").write_bytes(b"stand-in; the settings check does not open it")
    return d


@pytest.mark.parametrize(
    "text, words",
    [
        ("{not json", "not JSON"),
        ("\xff\xfe", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"threshold": "3"}', "'threshold'"),
        ('{"threshold": NaN}', "'threshold'"),
        ('{"memory_threshold": Infinity}', "'memory_threshold'"),
        ('{"scale_factor": 1.0}', "'scale_factor'"),
        ('{"upscale_to": 60000}', "'upscale_to'"),
        ('{"upscale_to": 240.5}', "'upscale_to'"),
        ('{"min_face": true}', "'min_face'"),
        ('{"cluster_iou": 1}', "'cluster_iou'"),
        ('{"grouping": ["chain"]}', "'grouping'"),
        ('{"upscale_interpolation": "lanczos"}', "'upscale_interpolation'"),
        ('{"verifier_min_prob": 2}', "'verifier_min_prob'"),
        ('{"verifier": 5}', "'verifier'"),
        ('{"verifier": "../v.onnx"}', "inside the cascade's folder"),
        ('{"verifier": "sub/../../v.onnx"}', "inside the cascade's folder"),
        ('{"verifier": "/etc/passwd"}', "inside the cascade's folder"),
        ('{"verifier": "~/v.onnx"}', "inside the cascade's folder"),
        ('{"verifier": ""}', "'verifier'"),
        ("[" * 100000, "not JSON"),
    ],
)
def test_bad_cascade_settings_name_the_file_and_key(cascade_dir, text, words) -> None:
    (cascade_dir / "c.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(UserError, match=re.escape(words)) as exc:
        cascade_settings(cascade_dir / "c.pico")
    assert str(cascade_dir / "c.json") in one_line(exc)


def test_good_cascade_settings_and_the_verifier_path(cascade_dir, tmp_path) -> None:
    from edge_fer.detect.verifier import resolve_verifier_path

    casc = cascade_dir / "c.pico"
    assert cascade_settings(casc) == {}  # no settings file
    s = {
        "threshold": 3,
        "upscale_to": 0,
        "verifier": "v.onnx",
        "grouping": "greedy",
        "track_min_score": None,
        "about": "notes",
        "future_key": [1, {"x": 2}],
    }
    (cascade_dir / "c.json").write_text(json.dumps(s))
    got = cascade_settings(casc)
    assert got["threshold"] == 3 and got["verifier"] == "v.onnx" and "track_min_score" not in got
    assert resolve_verifier_path("v.onnx", casc) == cascade_dir / "v.onnx"
    # a symlink inside the folder that leads out of it is refused, one inside it is fine
    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes(b"x")
    (cascade_dir / "out.onnx").symlink_to(outside)
    (cascade_dir / "in.onnx").symlink_to(cascade_dir / "v.onnx")
    assert resolve_verifier_path("in.onnx", casc) == cascade_dir / "in.onnx"
    with pytest.raises(UserError, match="outside the cascade's folder") as exc:
        resolve_verifier_path("out.onnx", casc)
    one_line(exc)
    (cascade_dir / "c.json").write_text(json.dumps({"verifier": "out.onnx"}))
    with pytest.raises(UserError, match="outside"):
        cascade_settings(casc)
    # the bundled settings pass, verifier included
    for name in ("face_default.pico", "face_lowres.pico"):
        assert cascade_settings(ASSETS / name)["verifier"] == "face_verify.onnx"
        assert resolve_verifier_path("face_verify.onnx", ASSETS / name).is_file()


def test_detect_refuses_a_settings_file_pointing_outside(cascade_dir, tmp_path, capsys) -> None:
    import cv2

    from edge_fer.cli.main import main

    img = tmp_path / "gray.png"
    cv2.imwrite(str(img), np.full((120, 160), 128, np.uint8))
    (cascade_dir / "c.json").write_text(json.dumps({"verifier": "../../../etc/passwd"}))
    rc = main(["detect", "--cascade", str(cascade_dir / "c.pico"), str(img)])
    _, err = capsys.readouterr()
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "inside the cascade's folder" in err


HOSTILE_VALUES = [
    None,
    True,
    0,
    -1,
    7,
    2**70,
    10**400,
    1.5,
    -0.0,
    1e308,
    float("nan"),
    float("inf"),
    "",
    "48",
    "x" * 300,
    [],
    [1, 2],
    ["a"],
    {},
    {"a": 1},
    [[[[]]]],
]


def test_fuzzed_cascade_settings_are_a_dict_or_a_user_error(cascade_dir) -> None:
    keys = [
        "threshold",
        "memory_threshold",
        "track_min_score",
        "min_face",
        "scale_factor",
        "memory_scale_factor",
        "cluster_iou",
        "grouping",
        "upscale_to",
        "upscale_interpolation",
        "verifier",
        "verifier_min_prob",
        "about",
        "other",
    ]
    rng = np.random.default_rng(7)
    side = cascade_dir / "c.json"
    ok = bad = 0
    end = time.monotonic() + 1.0
    while time.monotonic() < end or ok + bad < 300:
        d = {}
        for k in rng.choice(keys, int(rng.integers(1, 4)), replace=False):
            d[str(k)] = HOSTILE_VALUES[int(rng.integers(len(HOSTILE_VALUES)))]
        side.write_text(json.dumps(d))
        os.utime(side, ns=(0, time.monotonic_ns()))  # a new mtime: no cached answer
        try:
            cascade_settings(cascade_dir / "c.pico")
            ok += 1
        except UserError as exc:
            assert "\n" not in str(exc)
            bad += 1
    assert ok > 5 and bad > 5, (ok, bad)


# ---- classifier models --------------------------------------------------------------------
@pytest.fixture(scope="module")
def fer_proto():
    return onnx.load(str(FER))


def _with_meta(
    proto, path: Path, spec: dict | str | None = None, dynamic: bool = False, **extra: str
) -> Path:
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    if dynamic:  # the bundled net ends in global pooling, so it runs at any H x W
        dims = m.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "H", "W"
    meta = {p.key: p.value for p in m.metadata_props}
    if spec is not None:
        meta["edge_fer.preprocess"] = spec if isinstance(spec, str) else json.dumps(spec)
    meta.update(extra)
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    path.write_bytes(m.SerializeToString())
    return path


def _spec(**kw) -> dict:
    d = {
        "input_size": 48,
        "channels": 1,
        "clahe": False,
        "mean": 0.5,
        "std": 0.25,
        "crop_margin": 0.1,
        "classes": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
    }
    d.update(kw)
    return d


@pytest.mark.parametrize(
    "key, value",
    [
        ("input_size", "48"),
        ("input_size", [1, 2]),
        ("input_size", 48.0),
        ("input_size", 60000),
        ("input_size", 4),
        ("input_size", True),
        ("std", 0),
        ("std", -0.25),
        ("std", "0.25"),
        ("mean", float("nan")),
        ("mean", None),
        ("channels", 2),
        ("clahe", "yes"),
        ("crop_margin", -1),
        ("classes", "angry,happy"),
        ("classes", ["a", "a", "b", "c", "d", "e", "f"]),
        ("classes", ["", "b", "c", "d", "e", "f", "g"]),
        ("classes", [1, 2, 3, 4, 5, 6, 7]),
        ("classes", ["a", "b"]),
    ],
)
def test_bad_preprocessing_metadata_is_one_line_naming_file_and_key(
    fer_proto, tmp_path, key, value
) -> None:
    from edge_fer.classify import Classifier

    p = _with_meta(fer_proto, tmp_path / "m.onnx", _spec(**{key: value}), dynamic=True)
    with pytest.raises(UserError) as exc:
        Classifier.load(p)
    text = one_line(exc)
    assert str(p) in text
    assert key in text or (key == "classes" and "classes" in text), text


def test_dynamic_model_runs_at_a_valid_size_and_static_shape_must_agree(
    fer_proto, tmp_path
) -> None:
    from edge_fer.classify import Classifier

    p = _with_meta(fer_proto, tmp_path / "dyn.onnx", _spec(input_size=64), dynamic=True)
    with Classifier.load(p) as clf:
        probs = clf.predict([np.full((90, 80), 128, np.uint8)])
    assert probs.shape == (1, 7) and np.isfinite(probs).all()
    p = _with_meta(fer_proto, tmp_path / "static.onnx", _spec(input_size=64))
    with pytest.raises(UserError, match="metadata says") as exc:
        Classifier.load(p)
    one_line(exc)
    for text in ("not json", "[1]", "[" * 100000):
        p = _with_meta(fer_proto, tmp_path / "j.onnx", text)
        with pytest.raises(UserError, match="edge_fer.preprocess") as exc:
            Classifier.load(p)
        one_line(exc)


def test_huge_fixed_batch_is_refused_before_any_inference(fer_proto, tmp_path) -> None:
    from edge_fer.classify import Classifier

    m = onnx.ModelProto()
    m.CopyFrom(fer_proto)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 100000  # 0.9 GB per call
    p = tmp_path / "batch.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(UserError, match="fixed batch size of 100000") as exc:
        Classifier.load(p)
    one_line(exc)


def _random_spec(rng: np.random.Generator) -> dict | str:
    r = rng.random()
    if r < 0.05:
        return "{" * int(rng.integers(1, 5))
    if r < 0.1:
        return json.dumps(HOSTILE_VALUES[int(rng.integers(len(HOSTILE_VALUES)))])
    d = _spec(input_size=int(rng.choice([8, 16, 48, 64])))
    for k in rng.choice(list(d), int(rng.integers(0, 3)), replace=False):
        if rng.random() < 0.2:
            del d[str(k)]
        else:
            d[str(k)] = HOSTILE_VALUES[int(rng.integers(len(HOSTILE_VALUES)))]
    return d


def test_fuzzed_preprocessing_metadata_loads_a_working_model_or_a_user_error(
    fer_proto, tmp_path
) -> None:
    from edge_fer.classify import Classifier

    rng = np.random.default_rng(2026)
    face = np.random.default_rng(0).integers(0, 256, (60, 50), dtype=np.uint8)
    ok = bad = 0
    end = time.monotonic() + FUZZ_SECONDS
    while time.monotonic() < end or ok + bad < 8:
        p = _with_meta(
            fer_proto,
            tmp_path / f"f{(ok + bad) % 2}.onnx",
            _random_spec(rng),
            dynamic=bool(rng.random() < 0.7),
        )
        try:
            clf = Classifier.load(p, threads=1, tta=str(rng.choice(["auto", "none", "flip"])))
        except UserError as exc:
            assert "\n" not in str(exc) and str(p) in str(exc), str(exc)
            bad += 1
            continue
        with clf:
            probs = clf.predict([face])
            assert probs.shape == (1, len(clf.classes)) and np.isfinite(probs).all()
            json.dumps(clf.info(), allow_nan=False)
        ok += 1
    assert ok >= 1 and bad >= 3, (ok, bad)


def _nan_copy(src: Path, dst: Path) -> Path:
    m = onnx.load(str(src))
    init = max(m.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(init).copy()
    arr[...] = np.nan
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    dst.write_bytes(m.SerializeToString())
    return dst


def test_nan_weights_are_refused_at_load(tmp_path, capsys) -> None:
    from edge_fer.classify import Classifier
    from edge_fer.cli.main import main

    bad = _nan_copy(FER, tmp_path / "nan.onnx")
    with pytest.raises(UserError, match="non-finite") as exc:
        Classifier.load(bad)
    assert str(bad) in one_line(exc)
    # the command line: one line, exit 2, no "angry" (the argmax of NaN) anywhere
    import cv2

    img = tmp_path / "face.png"
    cv2.imwrite(str(img), np.full((48, 48), 128, np.uint8))
    rc = main(["classify", "--model", str(bad), str(img), "--json"])
    out, err = capsys.readouterr()
    assert rc == 2 and "angry" not in out and "NaN" not in out
    assert len(err.strip().splitlines()) == 1 and "non-finite" in err


def test_nan_for_some_faces_only_is_a_user_error_at_inference(tmp_path) -> None:
    """A model that is finite on the blank probe face but NaN on others (sqrt of a negative
    input): the first such inference raises instead of returning NaN."""
    from edge_fer.classify import Classifier
    from edge_fer.preprocess import PreprocessSpec

    k = 3
    w = numpy_helper.from_array(np.ones((1, k), np.float32), "w")
    g = helper.make_graph(
        [
            helper.make_node("Sqrt", ["input"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("MatMul", ["f", "w"], ["z"]),
            helper.make_node("Softmax", ["z"], ["probs"], axis=1),
        ],
        "sqrt",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 1, 16, 16])],
        [helper.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, ["N", k])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    spec = PreprocessSpec(input_size=16, classes=("a", "b", "c"))
    for key, v in spec.to_metadata().items():
        m.metadata_props.add(key=key, value=v)
    p = tmp_path / "sqrt.onnx"
    p.write_bytes(m.SerializeToString())
    with Classifier.load(p) as clf:  # the probe face (0 after normalisation) is fine
        assert np.isfinite(clf.predict([np.full((16, 16), 255, np.uint8)])).all()
        with pytest.raises(UserError, match="non-finite") as exc:
            clf.predict([np.zeros((16, 16), np.uint8)])  # -mean/std < 0: sqrt is NaN
        one_line(exc)


def _head_model(tmp_path, name: str, nodes: list, inits: list):
    """A 16x16 gray model of 3 classes, `nodes` from the pooled input "f" (N, 1) to "probs"."""
    from edge_fer.preprocess import PreprocessSpec

    g = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["p"]),
         helper.make_node("Flatten", ["p"], ["f"]), *nodes],
        name,
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 1, 16, 16])],
        [helper.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, None)],
        inits,
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    for key, v in PreprocessSpec(input_size=16, classes=("a", "b", "c")).to_metadata().items():
        m.metadata_props.add(key=key, value=v)
    p = tmp_path / f"{name}.onnx"
    p.write_bytes(m.SerializeToString())
    return p


def test_a_model_of_logits_or_of_a_constant_row_is_refused_at_load(tmp_path) -> None:
    """Logits (no Softmax) were returned and labelled as probabilities; an output that ignores
    the batch passed the one-face probe, then gave (7, 1) for 7 faces or a reshape error."""
    from edge_fer.classify import Classifier

    b = numpy_helper.from_array(np.array([[-2.0, 0.0, 2.0]], np.float32), "b")
    logits = _head_model(tmp_path, "logits", [helper.make_node("Add", ["f", "b"], ["probs"])], [b])
    with pytest.raises(UserError, match="outputs are not probabilities") as exc:
        Classifier.load(logits)
    one_line(exc)
    row = numpy_helper.from_array(np.full((1, 3), 1 / 3, np.float32), "row")
    const = _head_model(tmp_path, "const", [helper.make_node("Identity", ["row"], ["probs"])],
                        [row])  # fmt: skip
    with pytest.raises(UserError, match="gives 1 rows for 2 faces") as exc:
        Classifier.load(const)
    one_line(exc)
    w = numpy_helper.from_array(np.ones((1, 3), np.float32), "w")
    fine = _head_model(tmp_path, "fine", [helper.make_node("MatMul", ["f", "w"], ["z"]),
                                          helper.make_node("Softmax", ["z"], ["probs"], axis=1)],
                       [w])  # fmt: skip
    with Classifier.load(fine) as clf:
        assert clf.predict([np.zeros((16, 16), np.uint8)] * 5).shape == (5, 3)


MEMORY_SCRIPT = r"""
import json, resource, sys
import numpy as np
from edge_fer.classify import Classifier
from edge_fer.errors import UserError

good, hostile = sys.argv[1], sys.argv[2]
Classifier.load(good, threads=1).close()  # onnxruntime's own start-up memory, counted before
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
# a guard, should the check ever go: 2 GB more address space, not the 17 GB it once took
vm = [ln for ln in open("/proc/self/status") if ln.startswith("VmSize:")]
if vm:
    limit = int(vm[0].split()[1]) * 1024 + (2 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
try:
    with Classifier.load(hostile, threads=1) as clf:
        clf.predict([np.full((48, 48), 128, np.uint8)])
    msg = None
except UserError as exc:
    msg = str(exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kb": after - before, "error": msg}))
"""


def test_hostile_input_size_is_refused_without_allocating(fer_proto, tmp_path) -> None:
    """input_size 60000 on a model with dynamic H/W once allocated 17-23 GB for one face; now it
    is refused from the metadata, and peak memory grows by little more than a model load."""
    good = _with_meta(fer_proto, tmp_path / "good.onnx", _spec(input_size=48), dynamic=True)
    hostile = _with_meta(fer_proto, tmp_path / "bad.onnx", _spec(input_size=60000), dynamic=True)
    r = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(good), str(hostile)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["error"] and "input_size" in res["error"] and "\n" not in res["error"]
    assert res["growth_kb"] < 200 * 1024, res  # (one 60000^2 float32 face alone is 14 GB)


# ---- the face verifier --------------------------------------------------------------------
def _verifier_copy(tmp_path: Path, meta: str | None) -> Path:
    m = onnx.load(str(VERIFIER))
    del m.metadata_props[:]
    if meta is not None:
        m.metadata_props.add(key="edge_fer_verifier", value=meta)
    p = tmp_path / "v.onnx"
    p.write_bytes(m.SerializeToString())
    return p


@pytest.mark.parametrize(
    "meta, words",
    [
        ("not json", "not a JSON object"),
        ("[1]", "not a JSON object"),
        ('{"size": "32"}', "'size'"),
        ('{"size": 60000}', "'size'"),
        ('{"size": 32.0}', "'size'"),
        ('{"context": NaN}', "'context'"),
        ('{"context": 0}', "'context'"),
        ('{"size": 16}', "not a face verifier"),
    ],
)
def test_bad_verifier_metadata_is_one_line_naming_the_file(tmp_path, meta, words) -> None:
    from edge_fer.detect.verifier import Verifier

    p = _verifier_copy(tmp_path, meta)
    with pytest.raises(UserError, match=re.escape(words)) as exc:
        Verifier.load(p)
    assert str(p) in one_line(exc)


def test_verifier_without_metadata_and_nan_verifier(tmp_path) -> None:
    from edge_fer.detect.verifier import Verifier

    ver = Verifier.load(_verifier_copy(tmp_path, None))  # defaults: 1.5 x context, 32 px
    assert (ver.size, ver.context) == (32, 1.5)
    bad = _nan_copy(VERIFIER, tmp_path / "nan.onnx")
    with pytest.raises(UserError, match="non-finite") as exc:
        Verifier.load(bad)
    assert str(bad) in one_line(exc)
    with pytest.raises(UserError, match="min_prob"):
        Verifier.load(VERIFIER, min_prob=float("nan"))
    m = onnx.load(str(VERIFIER))  # a fixed batch answers the probe, then fails on 3 crops
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    fixed = tmp_path / "fixed.onnx"
    fixed.write_bytes(m.SerializeToString())
    with pytest.raises(UserError, match="fixed batch") as exc:
        Verifier.load(fixed)
    one_line(exc)


# ---- provenance of the bundled models -----------------------------------------------------
_ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)|(^|[\s(\"'])\.\./")


def _strings(v):
    if isinstance(v, str):
        yield v
        try:
            inner = json.loads(v)
        except ValueError:
            return
        if not isinstance(inner, str):
            yield from _strings(inner)
    elif isinstance(v, dict):
        for x in v.values():
            yield from _strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from _strings(x)


@pytest.mark.parametrize("name", sorted(p.name for p in ASSETS.glob("*.onnx")))
def test_bundled_model_metadata_records_no_local_paths(name) -> None:
    """Provenance says which data, not where it lay on the machine that made the model."""
    m = onnx.load(str(ASSETS / name), load_external_data=False)
    texts = [m.doc_string, m.producer_name, m.graph.doc_string]
    texts += [p.value for p in m.metadata_props]
    found = [s for t in texts for s in _strings(t) if _ABSOLUTE.search(s)]
    assert not found, f"{name} metadata records local paths: {found}"


def test_predict_takes_one_crop_alone_and_refuses_pixels_it_would_clip() -> None:
    """One BGR crop was iterated row by row (a face per row); uint16, bool and NaN pixels were
    clipped into a white, black or arbitrary face; batch_size 0 looped for ever."""
    from edge_fer.classify import Classifier

    face = np.random.default_rng(0).integers(1, 256, (48, 48), dtype=np.uint8)
    with Classifier.load(FER, tta="none") as clf:
        ref = clf.predict([face])
        assert ref.shape == (1, len(clf.classes))
        for one in (face, np.dstack([face] * 3), np.dstack([face] * 4)):
            assert np.allclose(clf.predict(one), ref, atol=1e-5)
        assert np.allclose(clf.predict([face / 255.0]), ref, atol=1e-3)  # floats in 0..1 scale
        bad = (
            (face.astype(np.uint16) * 256, "uint16 pixels span 256..65280, outside 0..255"),
            (face > 128, "expected uint8 pixels, got bool"),
            (np.where(face > 128, np.nan, 0.5).astype(np.float32), "NaN or infinite"),
        )
        for crop, words in bad:
            with pytest.raises(UserError, match=words):
                clf.predict([crop])
        for size in (0, -1, 2.5):
            with pytest.raises(UserError) as e:
                clf.predict([face], batch_size=size)
            assert e.value.param == "batch_size"
        with pytest.raises(UserError, match="expected an image as a numpy array, got str"):
            clf.predict(["face.jpg"])  # an AttributeError before
        with pytest.raises(UserError, match="input has NaN"):  # not "its weights are broken"
            clf.predict_array(np.full((2, 1, 48, 48), np.nan, np.float32))


def test_a_named_pipe_as_a_model_file_is_one_line_not_a_hang(tmp_path, capsys) -> None:
    """Opening a pipe for reading waits for a writer: `run --model fifo` never started."""
    from edge_fer.align.model import EyeModel
    from edge_fer.classify import Classifier
    from edge_fer.cli.main import main
    from edge_fer.detect.verifier import Verifier

    fifo = tmp_path / "m.onnx"
    os.mkfifo(fifo)
    for load in (Classifier.load, EyeModel.load, Verifier.load):
        with pytest.raises(UserError, match="not a regular file"):
            load(fifo)
    assert main(["classify", str(ASSETS / "face_default.json"), "--model", str(fifo)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a regular file" in err[0], err
