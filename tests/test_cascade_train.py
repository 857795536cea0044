"""Cascade learning (edge_fer.cascade_train) and `edge-fer train-cascade` / `eval-detector`.

The real-data tests read ../shared (WebFaces, backgrounds, facefinder) and skip without it.
Run numba single-threaded on a busy machine: NUMBA_NUM_THREADS=1 pytest tests/test_cascade_train.py
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from paths import BACKGROUNDS, FACEFINDER, FER, PICO, WEBFACES, shared
from processes import assert_one_error_line, run_cli, run_python

from edge_fer.cascade_train import bootstrap, learner
from edge_fer.cascade_train.annotations import (
    Face,
    InputReport,
    read_box_file,
    read_webfaces,
    split_images,
    webfaces_box,
)
from edge_fer.cascade_train.evaluate import curve, grid_windows, match_image
from edge_fer.cascade_train.samples import ImageStore, Windows, jittered_positives, load_annotated
from edge_fer.cascade_train.trainer import TrainConfig, parse_list, train
from edge_fer.cli.main import main
from edge_fer.detect import Cascade, Detector
from edge_fer.errors import UserError

needs_shared = pytest.mark.shared("data/webfaces", "data/backgrounds", "reference/pico/facefinder")


def _random_cascade(rng, depth=3, ntrees=5):
    return Cascade(
        tdepth=depth,
        codes=rng.integers(-128, 128, (ntrees, (1 << depth) - 1, 4)),
        leaves=rng.uniform(-1, 1, (ntrees, 1 << depth)),
        thresholds=np.full(ntrees, -1337.0),
    )


def _eval(store, win, c: Cascade):
    return learner.score_windows(store, win, c.tdepth, c.codes, c.leaves, c.thresholds, c.ntrees)


# ---- annotations ---------------------------------------------------------------------------


def _write_img(path: Path, h=120, w=160, seed=0):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)


def test_box_file_bad_lines_counted(tmp_path):
    _write_img(tmp_path / "a.png")
    _write_img(tmp_path / "b c.png", seed=1)  # a path with a space
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "boxes.txt").write_text(
        "# comment\n"
        "a.png 10 20 40 40\n"
        "b c.png 50 30 44 36\n"
        "a.png 10 20 0 40\n"  # zero size
        "missing.png 1 2 30 30\n"  # missing file
        "a.png ten 20 40 40\n"  # malformed
        "a.png 10 20\n"  # malformed
        "a.png 500 500 30 30\n"  # centre outside the 160x120 image
        "broken.jpg 5 5 30 30\n"  # does not decode
        "\n"
    )
    images, report = read_box_file(tmp_path / "boxes.txt")
    assert report.counts == {"empty_box": 1, "missing_file": 1, "malformed": 2}
    assert [im.path.name for im in images] == ["a.png", "b c.png", "broken.jpg"]
    a = images[0]
    assert a.faces[0] == Face(row=40.0, col=30.0, size=40.0)
    assert images[1].faces[0].size == pytest.approx(40.0)  # (44 + 36) / 2
    store = ImageStore()
    faces, kept, _ = load_annotated(images, store, report, min_face=20)
    assert report.counts["outside_image"] == 1
    assert report.counts["undecodable"] == 1
    assert len(faces) == 2 and len(kept) == 2
    assert any("does not decode" in line for line in report.lines())


def test_webfaces_parsing_and_split(tmp_path):
    (tmp_path / "images").mkdir()
    for i in range(10):
        _write_img(tmp_path / "images" / f"pic{i:05d}.jpg", seed=i)
    lines = [f"pic{i:05d}.jpg 50 40 70 40 60 50 60 62" for i in range(10)]
    lines += [
        "pic00001.jpg 50 40 70 40 60 50",  # too few fields
        "pic99999.jpg 50 40 70 40 60 50 60 62",  # missing image
        "pic00002.jpg 50 40 50 40 60 50 50 40",  # degenerate landmarks
    ]
    (tmp_path / "WebFaces_GroundThruth.txt").write_text("\n".join(lines) + "\n")
    images, report = read_webfaces(tmp_path)
    assert report.counts == {"malformed": 1, "missing_file": 1, "empty_box": 1}
    assert len(images) == 10
    f = images[0].faces[0]
    # eye midpoint (60, 40), mouth (60, 62): centre 0.2 of the way down, size from both distances
    assert f.col == pytest.approx(60.0) and f.row == pytest.approx(40 + 0.2 * 22)
    assert f.size == pytest.approx(2.75 * (20 + 22) / 2)
    tr, va = split_images(images, "train"), split_images(images, "val")
    assert [i.name for i in va] == ["pic00009.jpg"] and len(tr) == 9
    assert webfaces_box(1, 1, 1, 1, 1, 1, 1, 1) is None


def test_parse_list():
    assert parse_list("1x3,2,20x2", int) == [1, 1, 1, 2, 20, 20]
    with pytest.raises(UserError):
        parse_list("1,a", int)


# ---- kernels -------------------------------------------------------------------------------


def test_mirror_is_the_flipped_image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 110), dtype=np.uint8)
    store = ImageStore()
    store.add(img)
    store.add(np.ascontiguousarray(img[:, ::-1]))
    c = _random_cascade(rng, 4, 6)
    n = 500
    r = rng.integers(15, 75, n).astype(np.int32)
    col = rng.integers(15, 95, n).astype(np.int32)
    s = rng.integers(16, 30, n).astype(np.int32)
    a = Windows(r, col, s, np.zeros(n, np.int32), np.full(n, -1, np.int32))
    b = Windows(r, (109 - col).astype(np.int32), s, np.ones(n, np.int32), np.ones(n, np.int32))
    assert np.array_equal(_eval(store, a, c)[1], _eval(store, b, c)[1])


def test_grown_tree_matches_cascade_evaluation():
    rng = np.random.default_rng(1)
    store = ImageStore()
    ramp = np.linspace(0, 200, 80)[:, None] + rng.integers(0, 40, (80, 100))
    store.add(ramp.astype(np.uint8))  # brighter downwards: positives
    store.add(ramp[::-1].astype(np.uint8))  # brighter upwards: negatives
    store.add(rng.integers(0, 256, (80, 100), dtype=np.uint8))  # noise: negatives
    pix, off, H, W = store.arrays()
    n = 3000
    win = Windows(
        rng.integers(10, 70, n).astype(np.int32),
        rng.integers(10, 90, n).astype(np.int32),
        rng.integers(16, 40, n).astype(np.int32),
        rng.integers(0, 3, n).astype(np.int32),
        np.where(rng.random(n) < 0.5, 1, -1).astype(np.int32),
    )
    pos = win.img == 0
    wt = learner.boost_weights(pos, np.zeros(n, np.float32))
    assert wt.sum() == pytest.approx(1.0)
    codes, leaves, node = learner.grow_tree(pix, off, H, W, win, pos, wt, 4, 64, rng)
    c = Cascade(tdepth=4, codes=codes[None], leaves=leaves[None], thresholds=np.array([-1337.0]))
    ok, sc = _eval(store, win, c)
    assert ok.all() and np.array_equal(sc, leaves[node])
    # the tree learned something: the mean output separates the classes
    assert sc[pos].mean() > sc[~pos].mean() + 0.5
    thr = learner.stage_threshold(sc[pos], 0.9)
    assert (sc[pos] > thr).mean() >= 0.9


def test_mining_is_independent_of_threads():
    import numba

    rng = np.random.default_rng(2)
    store = ImageStore()
    for i in range(4):
        store.add(rng.integers(0, 256, (100, 120), dtype=np.uint8))
    src = bootstrap.NegativeSource.build([0, 1], [2, 3], [[(50, 60, 30)], []], 0.5)
    c = _random_cascade(rng, 3, 3)
    c.thresholds[:] = -0.5
    arrs = (c.tdepth, c.codes, c.leaves, c.thresholds, c.ntrees)
    res = []
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        numba.set_num_threads(threads)
        lanes = bootstrap.seed_lanes(np.random.default_rng(5))
        win, sc, draws = bootstrap.mine_negatives(
            store.arrays(), src, arrs, lanes, 400, 16, 1 << 20, 10**6
        )
        res.append((win.r.copy(), win.s.copy(), sc.copy(), draws))
        # the windows pass the cascade and stay clear of the face in image 2
        ok, sc2 = _eval(store, win, c)
        assert ok.all() and np.array_equal(sc2, sc)
        on2 = win.img == 2
        assert not np.any(
            on2
            & (np.abs(win.r - 50) < (win.s / 2 + 1.25 * 15))
            & (np.abs(win.c - 60) < (win.s / 2 + 1.25 * 15))
        )
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert all(np.array_equal(a, b) for a, b in zip(res[0][:3], res[-1][:3]))
    assert len(res[0][0]) == 400 and res[0][3] >= 400


def test_jitter_and_mirror():
    from edge_fer.cascade_train.samples import FaceTable

    faces = FaceTable(
        np.array([0, 1], np.int32),
        np.array([50.0, 60.0]),
        np.array([40.0, 70.0]),
        np.array([40.0, 100.0]),
    )
    w = jittered_positives(faces, np.random.default_rng(0), 4, 0.05, 0.1, 20)
    assert len(w) == 8
    assert sorted(w.sgn[:4]) == [-1, -1, 1, 1]
    assert np.all(np.abs(w.r[:4] - 50) <= 2.5) and np.all(np.abs(w.s[4:] - 100) <= 11)


def test_matching_and_curve():
    faces = [Face(50, 50, 40), Face(150, 150, 10)]  # the second is below min_face
    dets = np.array(
        [
            [52, 50, 42, 9.0],  # true positive
            [50, 52, 40, 8.0],  # duplicate: false positive
            [150, 150, 11, 7.0],  # on the small face: ignored
            [300, 300, 40, 6.0],  # false positive
        ],
        np.float32,
    )
    assert list(match_image(dets, faces, 20, 0.4)) == [1, 0, -1, 0]
    cv = curve([dets, np.zeros((0, 4), np.float32)], [faces, [Face(10, 10, 30)]], 20, 0.4)
    assert cv.nfaces == 2 and cv.nimages == 2
    assert cv.at_threshold(8.5) == (0.5, 0.0)
    assert cv.at_threshold(0.0) == (0.5, 1.0)
    assert cv.at_fppi(0.5) == (0.5, 8.0)


# ---- real data -----------------------------------------------------------------------------


@needs_shared
def test_kernel_agrees_with_runtime_on_facefinder():
    from edge_fer.cascade_train.samples import read_gray

    c = Cascade.load(FACEFINDER)
    g = read_gray(WEBFACES / "images" / "pic00001.jpg")
    det = Detector(c, min_size=40, max_size=120, threshold=-1e9)
    raw = det.raw(g)
    r, cc, s = grid_windows(det.grid(*g.shape))
    n = len(r)
    win = Windows(r, cc, s, np.zeros(n, np.int32), np.ones(n, np.int32))
    store = ImageStore()
    store.add(g)
    ok, sc = _eval(store, win, c)
    assert ok.sum() == len(raw) > 0
    assert np.array_equal(np.sort(sc[ok] - c.thresholds[-1]), np.sort(raw[:, 3]))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    shared("data/webfaces"), shared("data/backgrounds")
    out = tmp_path_factory.mktemp("cascade")
    cfg = TrainConfig(
        out=str(out),
        webfaces=[str(WEBFACES)],
        backgrounds=[str(BACKGROUNDS)],
        max_images=300,
        depth=5,
        tests=128,
        stage_trees=[2, 4],
        min_tpr=[0.98, 0.99],
        max_stages=2,
        jitter=2,
        seed=3,
    )
    logs: list[str] = []
    state = train(cfg, log=logs.append)
    return out, state, logs


@needs_shared
def test_tiny_cascade_learns_and_saves_in_pico_format(tiny_run):
    out, state, logs = tiny_run
    assert state["stage"] == 2 and state["stop_reason"] == "max_stages"
    assert sum(1 for line in logs if line.startswith("stage ")) == 2
    assert "TPR" in logs[-2] and "FPR" in logs[-2] and "samples" in logs[-2]
    c = Cascade.load(out / "cascade.pico")
    assert c.tdepth == 5 and c.ntrees == state["ntrees"] <= 6
    # one stage threshold on the last tree of each stage, the others never reject
    ends = np.cumsum([s["trees"] for s in state["stages"]]) - 1
    assert np.all(c.thresholds[ends] > -100)
    assert np.all(np.delete(c.thresholds, ends) == learner.SKIP_THRESHOLD)

    # held-out faces (the validation split) pass far more often than background windows
    images, _ = read_webfaces(WEBFACES)
    val = split_images(images, "val")[:150]
    store = ImageStore()
    report = InputReport()
    faces, _, _ = load_annotated(val, store, report, min_face=24)
    fw = Windows(
        np.rint(faces.row).astype(np.int32),
        np.rint(faces.col).astype(np.int32),
        np.rint(faces.size).astype(np.int32),
        faces.img,
        np.ones(len(faces), np.int32),
    )
    tpr = _eval(store, fw, c)[0].mean()
    bg = [p for p in sorted(BACKGROUNDS.iterdir())][-30:]  # held-out backgrounds
    k0 = len(store)
    idx = [k for k in store.add_paths(bg, report) if k >= 0]
    src = bootstrap.NegativeSource.build(idx, [], [], 0.0)
    arrs = (c.tdepth, c.codes, c.leaves, c.thresholds, 0)  # ntrees 0: accept all, count draws
    neg, _, _ = bootstrap.mine_negatives(
        store.arrays(),
        src,
        arrs,
        bootstrap.seed_lanes(np.random.default_rng(0)),
        4000,
        24,
        1 << 20,
        10**6,
    )
    assert neg.img.min() >= k0
    fpr = _eval(store, neg, c)[0].mean()
    assert tpr >= 0.8 and fpr <= 0.5 * tpr, (tpr, fpr)

    # the file runs in the runtime detector
    det = Detector(c, min_size=24, threshold=0.0)
    det.detect(store.image(0))


@needs_shared
def test_resume_gives_the_same_cascade(tmp_path):
    kw = {
        "webfaces": [str(WEBFACES)],
        "backgrounds": [str(BACKGROUNDS)],
        "max_images": 120,
        "depth": 4,
        "tests": 32,
        "stage_trees": [1, 2, 2],
        "jitter": 1,
        "seed": 7,
    }

    def quiet(msg: str) -> None:
        pass

    a = tmp_path / "a"
    train(TrainConfig(out=str(a), max_stages=3, **kw), log=quiet)
    b = tmp_path / "b"
    train(TrainConfig(out=str(b), max_stages=1, **kw), log=quiet)
    with pytest.raises(UserError, match="--resume"):
        train(TrainConfig(out=str(b), max_stages=3, **kw), log=quiet)
    with pytest.raises(UserError, match="different options"):
        train(TrainConfig(out=str(b), max_stages=3, **{**kw, "tests": 64}), resume=True, log=quiet)
    st = train(TrainConfig(out=str(b), max_stages=3, **kw), resume=True, log=quiet)
    assert st["stage"] == 3
    assert (a / "cascade.pico").read_bytes() == (b / "cascade.pico").read_bytes()
    sa = json.loads((a / "state.json").read_text())
    assert [s["negatives"] for s in sa["stages"]] == [s["negatives"] for s in st["stages"]]


def test_no_positives_is_a_user_error(tmp_path, capsys):
    _write_img(tmp_path / "a.png")
    (tmp_path / "boxes.txt").write_text("a.png 10 10 0 0\nnope.png 1 1 30 30\n")
    bg = tmp_path / "bg"
    bg.mkdir()
    _write_img(bg / "x.png")
    rc = main(
        [
            "train-cascade",
            "--boxes",
            str(tmp_path / "boxes.txt"),
            "--backgrounds",
            str(bg),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("edge-fer train-cascade: error: no positives") and err.count("\n") == 1
    assert "box of size zero" in err and "image file missing" in err
    assert not (tmp_path / "run").exists()  # no run was started (an empty folder was left)


@needs_shared
def test_eval_detector_cli(tiny_run, tmp_path, capsys):
    out, _, _ = tiny_run
    res_path = tmp_path / "eval.json"
    rc = main(
        [
            "eval-detector",
            "--cascade",
            str(out / "cascade.pico"),
            "--data",
            str(WEBFACES),
            "--limit",
            "12",
            "--backgrounds",
            "none",
            "--reference",
            str(FACEFINDER),
            "--speed-images",
            "2",
            "--json",
            "--out",
            str(res_path),
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res == json.loads(res_path.read_text())
    assert res["split"] == "val" and res["images"] == 12
    ref = res["reference"]
    assert ref["ntrees"] == 468 and ref["speed"]["trees_per_window"] > 1
    op = next(o for o in ref["at_fppi"] if o["fppi"] == 0.5)
    assert op["recall"] >= 0.7  # facefinder finds the calibrated WebFaces boxes
    assert set(res["comparison"]) >= {"recall_ratio", "time_ratio", "bg_fp_per_mp"}
    assert all(math.isfinite(r["recall"]) for r in res["cascade"]["table"])


def test_eval_detector_never_writes_over_its_inputs(tmp_path, capsys):
    """--out replaced the cascade, the box file or the ground truth with its JSON (rc 0)."""
    from paths import ASSETS

    casc = tmp_path / "c.pico"
    casc.write_bytes((ASSETS / "face_default.pico").read_bytes())
    boxes = tmp_path / "boxes.txt"
    boxes.write_text("a.jpg 10 10 40 40\n")
    data = tmp_path / "webfaces"
    data.mkdir()
    base = ["eval-detector", "--cascade", str(casc), "--reference", "none", "--backgrounds", "none"]
    for extra, words in (
        (["--boxes", str(boxes), "--out", str(casc)], "--out"),
        (["--boxes", str(boxes), "--out", str(boxes)], "--boxes"),
        (["--data", str(data), "--out", str(data / "WebFaces_GroundThruth.txt")], "inside --data"),
        (["--boxes", str(boxes), "--card", str(casc)], "--card"),
    ):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert casc.read_bytes() == (ASSETS / "face_default.pico").read_bytes()
    assert boxes.read_text() == "a.jpg 10 10 40 40\n" and not any(data.iterdir())
    # --card over the training run's state.json (what train-cascade --resume needs)
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text("{}")
    assert (
        main(base + ["--boxes", str(boxes), "--run", str(run), "--card", str(run / "state.json")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "state.json" in err and (run / "state.json").read_text() == "{}"


def test_train_cascade_takes_a_new_or_empty_folder_outside_its_data(tmp_path, capsys):
    """--out wrote cascade.pico and state.json over a user's files, and into the WebFaces and
    backgrounds folders."""
    wf = tmp_path / "wf"
    (wf / "images").mkdir(parents=True)
    (wf / "WebFaces_GroundThruth.txt").write_text("")
    bg = tmp_path / "bg"
    bg.mkdir()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "cascade.pico").write_bytes(b"my cascade")
    base = ["train-cascade", "--webfaces", str(wf), "--backgrounds", str(bg), "--max-stages", "1"]
    for out, words in (
        (mine, "holds other files"),
        (wf, "--webfaces"),
        (bg / "run", "--backgrounds"),
    ):
        assert main(base + ["--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert (mine / "cascade.pico").read_bytes() == b"my cascade" and list(bg.iterdir()) == []
    assert sorted(p.name for p in wf.iterdir()) == ["WebFaces_GroundThruth.txt", "images"]


def test_truncate_stages():
    from edge_fer.cascade_train.evaluate import stage_ends, truncate_stages

    rng = np.random.default_rng(4)
    c = _random_cascade(rng, 2, 6)
    c.thresholds[[0, 3, 5]] = [-0.5, -1.0, -0.2]
    assert list(stage_ends(c)) == [0, 3, 5]
    t = truncate_stages(c, 2)
    assert t.ntrees == 4 and t.thresholds[-1] == np.float32(-1.0)
    with pytest.raises(UserError):
        truncate_stages(c, 4)
    if FACEFINDER.is_file():
        assert len(stage_ends(Cascade.load(FACEFINDER))) == 24


def test_fer_faces_box_file(tmp_path):
    """Only Training_* images, the fixed FER box, absolute paths the box-file reader accepts."""
    from edge_fer.cascade_train.annotations import read_box_file
    from edge_fer.cascade_train.fer_faces import FER_BOX, write_fer_boxes

    fer = tmp_path / "fer"
    rng = np.random.default_rng(0)
    for split, cls, name in (
        ("train", "happy", "Training_1.jpg"),
        ("train", "sad", "Training_2.jpg"),
        ("train", "sad", "PublicTest_3.jpg"),
        ("test", "sad", "PrivateTest_4.jpg"),
    ):
        (fer / split / cls).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(fer / split / cls / name), rng.integers(0, 255, (48, 48), np.uint8))
    assert write_fer_boxes(fer, tmp_path / "out", count=10, seed=0) == 2
    images, _report = read_box_file(tmp_path / "out" / "boxes.txt")
    assert sorted(im.path.name for im in images) == ["Training_1.jpg", "Training_2.jpg"]
    assert all(im.path.is_absolute() for im in images)
    face = images[0].faces[0]
    assert face.size == pytest.approx(FER_BOX[2]) and face.col == pytest.approx(FER_BOX[0] + 22.5)
    assert write_fer_boxes(fer, tmp_path / "one", count=1, seed=0) == 1
    with pytest.raises(UserError):
        write_fer_boxes(tmp_path / "out", tmp_path / "x")


# ---- few faces, option checks, resume spellings, eval-detector outputs (QA findings) --------


def _one_face_data(tmp_path: Path, nbg: int = 3) -> tuple[Path, Path]:
    """A box file with one real WebFaces face (its box from the landmarks, relative paths) and
    a folder of `nbg` real backgrounds."""
    shared("data/webfaces"), shared("data/backgrounds")
    images, _ = read_webfaces(WEBFACES)
    im = images[0]
    (tmp_path / "images").mkdir()
    img = tmp_path / "images" / im.path.name
    img.write_bytes(im.path.read_bytes())
    f = im.faces[0]
    x, y = f.col - f.size / 2, f.row - f.size / 2
    boxes = tmp_path / "boxes.txt"
    boxes.write_text(f"images/{img.name} {x:.1f} {y:.1f} {f.size:.1f} {f.size:.1f}\n")
    bg = tmp_path / "bg"
    bg.mkdir()
    for p in sorted(BACKGROUNDS.iterdir())[:nbg]:
        (bg / p.name).write_bytes(p.read_bytes())
    return boxes, bg


def _tiny_cascade_argv(boxes: Path, bg, out: Path, *extra: str) -> list[str]:
    return ["train-cascade", "--boxes", str(boxes), "--backgrounds", str(bg), "--out", str(out),
            "--tests", "32", "--depth", "4", "--stage-trees", "2", "--max-stages", "2",
            "--threads", "1", *extra]  # fmt: skip


def test_train_cascade_learns_from_one_face(tmp_path, capsys):
    """With fewer than 4 faces a stage wants fewer than 10 negatives: finding them all was
    taken for "negatives exhausted", the run ended with 0 trees, no cascade.pico, exit 0."""
    boxes, bg = _one_face_data(tmp_path)
    out = tmp_path / "run"
    assert main(_tiny_cascade_argv(boxes, bg, out)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["stop_reason"] == "max_stages" and summary["ntrees"] >= 2
    assert Cascade.load(summary["cascade"]).ntrees == summary["ntrees"]
    # the command recorded (the card's) is this one, quoted for a shell (before: sys.argv,
    # here pytest's, joined with spaces), with no local absolute path: these, outside the
    # working folder, by their names
    state = json.loads((out / "state.json").read_text())
    named = _tiny_cascade_argv(Path(boxes.name), Path(str(bg)).name, Path(out.name))
    assert shlex.split(state["command"]) == ["edge-fer", *named]


def test_train_cascade_that_learns_no_tree_is_a_user_error(tmp_path, capsys):
    """A run that ends before its first tree named a cascade.pico that did not exist (exit 0)
    and left a 'complete' run behind: now one line, exit 2, and no run in --out."""
    boxes, bg = _one_face_data(tmp_path)
    out = tmp_path / "run"
    assert main(_tiny_cascade_argv(boxes, bg, out, "--time-budget", "1e-12")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "learned no tree" in err and "--time-budget" in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--seed", "-1"], "--seed must be an integer >= 0"),
        (["--neg-ratio", "nan"], "--neg-ratio must be a finite number"),
        (["--max-draws", "nan"], "--max-draws must be an integer"),
        (["--max-draws", "inf"], "--max-draws must be an integer"),
        (["--bg-val-fraction", "nan"], "--bg-val-fraction must be a finite number in [0, 1)"),
        (["--bg-val-fraction", "2"], "--bg-val-fraction must be a finite number in [0, 1)"),
        (["--neg-annotated-min-fpr", "nan"], "--neg-annotated-min-fpr must be a finite number"),
        (["--jitter", "1001"], "--jitter must be an integer in 1..1000"),
        (["--max-images", "-30"], "--max-images must be an integer >= 0"),
        (["--max-faces", "-40"], "--max-faces must be an integer >= 0"),
        (["--time-budget", "-1"], "--time-budget must be a finite number >= 0"),
    ],
)
def test_train_cascade_checks_its_options_before_making_out(tmp_path, capsys, flags, words):
    """NaN passed `x <= 0` tests (tracebacks later, a folder neither resumable nor reusable),
    a negative --max-images sliced data off without a word, --time-budget -1 learned nothing."""
    boxes, bg = _one_face_data(tmp_path, nbg=1)
    out = tmp_path / "run"
    assert main(_tiny_cascade_argv(boxes, bg, out, *flags)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert not out.exists()


def test_train_cascade_resumes_with_the_data_spelled_another_way(tmp_path, monkeypatch, capsys):
    """`--backgrounds bg` then `bg/` (or the absolute path) was refused as other options."""
    boxes, bg = _one_face_data(tmp_path, nbg=2)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(_tiny_cascade_argv(Path("boxes.txt"), "bg", out, "--max-stages", "1")) == 0
    again = _tiny_cascade_argv(boxes, "bg/", out, "--max-stages", "2", "--resume")
    assert main(again) == 0, capsys.readouterr().err
    again = _tiny_cascade_argv(boxes, f"{bg}/", out, "--max-stages", "3", "--resume")
    assert main(again) == 0, capsys.readouterr().err
    state = json.loads((out / "state.json").read_text())
    assert state["stage"] == 3
    # the run keeps the spelling it was started with
    assert state["options"]["backgrounds"] == ["bg"]
    assert state["options"]["boxes"] == ["boxes.txt"]
    capsys.readouterr()
    # other data is still refused
    other = tmp_path / "bg2"
    other.mkdir()
    argv = _tiny_cascade_argv(boxes, other, out, "--max-stages", "4", "--resume")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different options" in err and "backgrounds" in err


def _state_of(cascade: Path) -> dict:
    """The least of a train-cascade state.json that records `cascade` as the run's own."""
    c = Cascade.load(cascade)
    return {"options": {"depth": c.tdepth}, "ntrees": c.ntrees, "stages": []}


def _eval_detector_argv(boxes: Path, *extra) -> list[str]:
    return ["eval-detector", "--boxes", str(boxes), "--reference", "none", "--backgrounds",
            "none", "--speed-images", "0", *map(str, extra)]  # fmt: skip


def test_eval_detector_outputs_are_checked_before_the_scan(tmp_path, capsys):
    """--out/--card into a missing folder, onto a folder, a malformed --run state.json: a
    traceback after the whole evaluation; --thresholds nan: NaN in the JSON."""
    boxes, _ = _one_face_data(tmp_path, nbg=0)
    # missing folders are made
    res = tmp_path / "new" / "deeper" / "res.json"
    run = tmp_path / "run"
    run.mkdir()
    state = {**_state_of(PICO), "command": "edge-fer train-cascade ..."}  # the bundled one's
    (run / "state.json").write_text(json.dumps(state))
    card = tmp_path / "cards" / "card.md"
    assert main(_eval_detector_argv(boxes, "--out", res, "--card", card, "--run", run)) == 0
    assert json.loads(res.read_text())["images"] == 1
    assert "edge-fer train-cascade ..." in card.read_text()
    capsys.readouterr()
    (tmp_path / "odir").mkdir()
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "listrun").mkdir()
    (tmp_path / "listrun" / "state.json").write_text("[1, 2]")
    for extra, words in (
        (["--out", tmp_path / "odir"], "is a folder"),
        (["--out", str(tmp_path / "newdir") + "/"], "is a folder"),
        (["--out", tmp_path / "afile" / "x.json"], "afile is not a folder"),
        (["--card", tmp_path / "odir"], "is a folder"),
        (["--card", tmp_path / "c.md", "--run", tmp_path / "listrun"], "not a JSON object"),
        (["--card", tmp_path / "c.md"], "--card needs --run"),
        (["--thresholds", "nan,1", "--out", tmp_path / "thr.json"], "--thresholds must be finite"),
        (["--thresholds", "inf", "--json"], "--thresholds must be finite"),
    ):
        assert main(_eval_detector_argv(boxes, *extra)) == 2, extra
        cap = capsys.readouterr()
        assert cap.err.count("\n") == 1 and words in cap.err, (extra, cap.err)
        assert cap.out == ""  # nothing was evaluated
    assert not (tmp_path / "thr.json").exists() and not (tmp_path / "newdir").exists()
    assert not (tmp_path / "c.md").exists() and (tmp_path / "afile").read_text() == "mine"


def test_eval_detector_checks_a_hand_edited_state_before_reading_data(tmp_path, capsys):
    """A --run state.json that is an object but not a train-cascade state (a stage row without
    its fields, options that are not an object) was found only when the card was written,
    after the whole scan; it is now refused first: here, before the (empty) box file."""
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for i, state in enumerate(({"stages": [{"stage": 1}]}, {"options": [1]}, {"stages": 3})):
        run = tmp_path / f"run{i}"
        run.mkdir()
        (run / "state.json").write_text(json.dumps(state))
        argv = _eval_detector_argv(empty, "--card", tmp_path / "c.md", "--run", run)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is not a train-cascade state" in err, (state, err)
    assert not (tmp_path / "c.md").exists()


def test_eval_detector_skips_a_box_outside_its_image(tmp_path, capsys):
    """train-cascade skips (and reports) a box whose centre lies outside the image; the
    evaluation counted it as a face no scan could find."""
    boxes, _ = _one_face_data(tmp_path, nbg=0)
    line = boxes.read_text()
    boxes.write_text(line + line.split()[0] + " 5000 5000 60 60\n")
    assert main(_eval_detector_argv(boxes, "--json")) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bad_annotations"] == {"outside_image": 1}
    assert res["cascade"]["faces"] == 1


# ---- train-cascade --resume on a damaged run ---------------------------------------------


@pytest.fixture(scope="module")
def two_image_data(tmp_path_factory) -> tuple[Path, Path]:
    """A box file with the faces of two real WebFaces images, and 3 real backgrounds."""
    shared("data/webfaces"), shared("data/backgrounds")
    root = tmp_path_factory.mktemp("data")
    images, _ = read_webfaces(WEBFACES)
    lines = []
    for im in images[:2]:
        shutil.copy(im.path, root / im.path.name)
        for f in im.faces:
            x, y = f.col - f.size / 2, f.row - f.size / 2
            lines.append(f"{im.path.name} {x:.1f} {y:.1f} {f.size:.1f} {f.size:.1f}")
    boxes = root / "boxes.txt"
    boxes.write_text("\n".join(lines) + "\n")
    bg = root / "bg"
    bg.mkdir()
    for p in sorted(BACKGROUNDS.iterdir())[:3]:
        shutil.copy(p, bg / p.name)
    return boxes, bg


def _train_argv(boxes: Path, bg: Path, out: Path, *extra: str) -> list[str]:
    return ["train-cascade", "--boxes", str(boxes), "--backgrounds", str(bg), "--out", str(out),
            "--tests", "32", "--depth", "4", "--stage-trees", "2", "--threads", "1",
            *extra]  # fmt: skip


@pytest.fixture(scope="module")
def two_image_run(two_image_data, tmp_path_factory) -> Path:
    boxes, bg = two_image_data
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(_train_argv(boxes, bg, out, "--max-stages", "1")) == 0
    return out


def _damage(state: dict, run: Path, how: str) -> None:
    if how == "no rng":
        del state["rng"]
    elif how == "options null":
        state["options"] = None
    elif how == "lanes":
        state["lanes"] = ["x"]
    elif how == "another depth":  # a cascade of depth 6 where the run learns depth 4
        shared("reference/pico/facefinder")
        from paths import FACEFINDER

        shutil.copy(FACEFINDER, run / "cascade.pico")
    (run / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize(
    "how, words",
    [
        ("no rng", ["is not a train-cascade state", "'rng'"]),
        ("options null", ["is not a train-cascade state", "'options'"]),
        ("lanes", ["is not a train-cascade state", "generator states"]),
        ("another depth", ["depth 6", "depth 4"]),
    ],
)
def test_resume_of_a_damaged_run_is_one_line_before_the_data(
    two_image_data, two_image_run, tmp_path, capsys, how, words
):
    """A state.json without a key the resume reads, or a cascade.pico of another depth, was a
    KeyError / AttributeError / numpy ValueError traceback, most of them after every image had
    been loaded (minutes on the full data). Now one line, exit 2, before any image is read."""
    boxes, bg = two_image_data
    run = tmp_path / "run"
    shutil.copytree(two_image_run, run)
    state = json.loads((run / "state.json").read_text())
    _damage(state, run, how)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(_train_argv(boxes, bg, run, "--max-stages", "2", "--resume")) == 2
    assert_one_error_line(capsys.readouterr().err, *words)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_of_an_intact_run_still_continues(two_image_data, two_image_run, tmp_path, capsys):
    boxes, bg = two_image_data
    run = tmp_path / "run"
    shutil.copytree(two_image_run, run)
    assert main(_train_argv(boxes, bg, run, "--max-stages", "2", "--resume")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["stage"] == 2 and Cascade.load(run / "cascade.pico").ntrees >= 2


# ---- eval-detector outputs that exist ------------------------------------------------------


def _eval_argv(boxes: Path, *extra, cascade: Path = PICO) -> list[str]:
    return ["eval-detector", "--cascade", str(cascade), "--boxes", str(boxes), "--reference",
            "none", "--backgrounds", "none", "--speed-images", "0",
            *map(str, extra)]  # fmt: skip


def test_eval_detector_replaces_an_existing_output_only_with_force(
    two_image_data, two_image_run, tmp_path
):
    """--out and --card replaced any file without a word, e.g. another training run's
    state.json (which `train-cascade --resume` then refused as another version's)."""
    boxes, _ = two_image_data
    run = tmp_path / "run"
    shutil.copytree(two_image_run, run)
    state = (run / "state.json").read_bytes()
    mine = tmp_path / "notes.md"
    mine.write_text("my notes\n")
    for extra, flag in (
        (["--out", run / "state.json"], "--out"),
        (["--card", mine, "--run", run], "--card"),
    ):
        r = run_cli(*_eval_argv(boxes, *extra))
        assert r.returncode == 2 and r.stdout == "", r.stderr
        assert_one_error_line(r.stderr, flag, "exists; pass --force")
    assert (run / "state.json").read_bytes() == state and mine.read_text() == "my notes\n"
    own = {"cascade": run / "cascade.pico"}  # the card's --run must have made the cascade
    r = run_cli(
        *_eval_argv(boxes, "--out", tmp_path / "e.json", "--card", mine, "--run", run, **own)
    )
    assert r.returncode == 2 and not (tmp_path / "e.json").exists()  # checked before the scan
    r = run_cli(
        *_eval_argv(
            boxes, "--out", tmp_path / "e.json", "--card", mine, "--run", run, "--force", **own
        )
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "e.json").read_text())["images"] == 2
    assert mine.read_text().startswith("# ")  # the card replaced the notes, as asked


# ---- box files ---------------------------------------------------------------------------


def test_a_box_file_that_is_not_a_regular_file_is_said_so(tmp_path):
    """--boxes /dev/null said "annotation file not found" though the path exists."""
    with pytest.raises(UserError, match="/dev/null: not a regular file"):
        read_box_file("/dev/null")
    with pytest.raises(UserError, match="not a regular file"):
        read_box_file(tmp_path)
    with pytest.raises(UserError, match="none.txt: not found"):
        read_box_file(tmp_path / "none.txt")


def test_a_box_file_with_a_bom_or_latin1_names_keeps_every_face(two_image_data, tmp_path):
    """A box file saved by a Windows editor starts with a UTF-8 BOM, which became part of the
    first file name (its faces counted as a missing file); a name written in Latin-1 was
    decoded with U+FFFD replacements and never found either."""
    boxes, _ = two_image_data
    lines = boxes.read_text().splitlines()
    src = boxes.parent / lines[0].split()[0]
    bom = boxes.parent / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode())
    ims, report = read_box_file(bom)
    assert report.to_json() == {} and sum(len(i.faces) for i in ims) == len(lines)

    latin = tmp_path / "latin.txt"
    (tmp_path / "caf\udce9.jpg").write_bytes(src.read_bytes())  # b"caf\xe9.jpg" on disk
    latin.write_bytes(b"caf\xe9.jpg " + lines[0].split(None, 1)[1].encode() + b"\n")
    ims, report = read_box_file(latin)
    assert report.to_json() == {} and len(ims) == 1 and ims[0].path.is_file()


# ---- the cascade_train helper scripts ---------------------------------------------------------


def _two_image_sources(tmp_path: Path) -> tuple[Path, Path]:
    """A WebFaces folder of 2 real images and a FER2013 folder of 2 real faces, the inputs of
    the lowres and fer_faces scripts."""
    shared("data/webfaces"), shared("data/fer2013")
    wf = tmp_path / "wf"
    (wf / "images").mkdir(parents=True)
    truth = (WEBFACES / "WebFaces_GroundThruth.txt").read_text().splitlines()[:2]
    for line in truth:
        name = line.split()[0]
        shutil.copy(WEBFACES / "images" / name, wf / "images" / name)
    (wf / "WebFaces_GroundThruth.txt").write_text("\n".join(truth) + "\n")
    fer = tmp_path / "fer"
    (fer / "train" / "happy").mkdir(parents=True)
    for i, src in enumerate(sorted((FER / "train" / "happy").glob("Training_*.jpg"))[:2]):
        shutil.copy(src, fer / "train" / "happy" / f"Training_{i}.jpg")
    return wf, fer


def test_lowres_and_fer_faces_refuse_bad_arguments_in_one_line(tmp_path):
    """A negative --seed or --count, or an `out` that is a file, was a numpy ValueError or a
    FileExistsError traceback, exit 1 (lowres after making `out`)."""
    wf, fer = _two_image_sources(tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("mine\n")
    out = tmp_path / "out"
    for tool, argv, words in [
        ("lowres", [wf, out, "--seed", "-1"], ["--seed", ">= 0", "-1"]),
        ("lowres", [wf, a_file], [str(a_file), "not a folder"]),
        ("fer_faces", [fer, out, "--count", "-5"], ["--count", ">= 1", "-5"]),
        ("fer_faces", [fer, out, "--seed", "-1"], ["--seed", ">= 0"]),
        ("fer_faces", [fer, a_file], [str(a_file), "not a folder"]),
    ]:
        r = run_python("-m", f"edge_fer.cascade_train.{tool}", *argv)
        assert r.returncode == 2, (tool, argv, r.stderr)
        assert_one_error_line(r.stderr, f"{tool}: error:", *words)
        assert not out.exists() and a_file.read_text() == "mine\n"
    r = run_python("-m", "edge_fer.cascade_train.fer_faces", fer, out, "--count", "2")
    assert r.returncode == 0 and len((out / "boxes.txt").read_text().splitlines()) == 2, r.stderr


def test_lowres_and_fer_faces_refuse_an_out_with_their_outputs_unless_force(tmp_path):
    """A second run into the same `out` wrote over the first one's copies and boxes.txt without
    a word. Now: one line, exit 2, before any work (and before the data is read); --force
    writes over them. Other files in `out` are no reason to refuse."""
    wf, fer = _two_image_sources(tmp_path)

    def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
        return {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in folder.iterdir()}

    for tool, data in (("lowres", wf), ("fer_faces", fer)):
        out = tmp_path / f"out_{tool}"
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")  # not an output: no reason to refuse
        r = run_python("-m", f"edge_fer.cascade_train.{tool}", data, out)
        assert r.returncode == 0 and (out / "boxes.txt").exists(), (tool, r.stderr)
        before = snapshot(out)
        for argv in ([data, out], [tmp_path / "no_such_data", out]):  # refused first
            r = run_python("-m", f"edge_fer.cascade_train.{tool}", *argv)
            assert r.returncode == 2, (tool, argv, r.stderr)
            assert_one_error_line(r.stderr, f"{tool}: error:", str(out), "boxes.txt", "--force")
            assert r.stdout == "" and snapshot(out) == before
        if tool == "lowres":  # the copies alone are outputs too
            (out / "boxes.txt").unlink()
            r = run_python("-m", f"edge_fer.cascade_train.{tool}", data, out)
            assert_one_error_line(r.stderr, f"{tool}: error:", "lr_", "--force")
            assert r.returncode == 2 and not (out / "boxes.txt").exists()
        r = run_python("-m", f"edge_fer.cascade_train.{tool}", data, out, "--force")
        assert r.returncode == 0 and (out / "boxes.txt").exists(), (tool, r.stderr)
        assert (out / "notes.txt").read_text() == "mine\n"


# ---- eval-detector and train-cascade inputs (QA findings) ----------------------------------


def _noise_boxes(tmp_path: Path, *lines: str) -> Path:
    """A box file over a.png, a 120x160 noise image (no face, which matters not here)."""
    _write_img(tmp_path / "a.png")
    boxes = tmp_path / "boxes.txt"
    boxes.write_text("".join(f"{line}\n" for line in lines))
    return boxes


def test_eval_detector_card_of_names_that_are_not_utf8(two_image_data, two_image_run, tmp_path):
    """A cascade or run folder whose name is not UTF-8 (surrogate escapes) was a
    UnicodeEncodeError traceback when the card was written, after the whole scan."""
    boxes, _ = two_image_data
    run = tmp_path / "run\udce9"  # b"run\xe9" on disk
    shutil.copytree(two_image_run, run)
    state = json.loads((run / "state.json").read_text())
    state["command"] = f"edge-fer train-cascade --out {run}"  # as the run in it recorded it
    (run / "state.json").write_text(json.dumps(state))
    casc = tmp_path / "caf\udce9.pico"
    shutil.copy(run / "cascade.pico", casc)
    card = tmp_path / "card.md"
    r = run_cli(*_eval_argv(boxes, "--card", card, "--run", run, cascade=casc))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    text = card.read_bytes().decode("utf-8")  # valid UTF-8, the names' bytes shown as \xNN
    assert "`caf\\xe9.pico`" in text and "run\\xe9" in text


def test_eval_detector_card_needs_the_run_that_made_the_cascade(
    two_image_data, two_image_run, tmp_path, capsys
):
    """--card --run RUN put RUN's training beside the scores of any cascade: the run's
    state.json records the cascade it wrote (depth, trees, stage thresholds)."""
    boxes, _ = two_image_data
    other = tmp_path / "other.pico"  # the run's trees with another stage threshold
    c = Cascade.load(two_image_run / "cascade.pico")
    c.thresholds[-1] += 0.5
    other.write_bytes(c.to_bytes())
    card = tmp_path / "card.md"
    for casc, words in ((PICO, "trees of depth"), (other, "stage thresholds")):
        argv = _eval_argv(boxes, "--card", card, "--run", two_image_run, cascade=casc)
        assert main(argv) == 2
        cap = capsys.readouterr()
        assert_one_error_line(cap.err, "did not make --cascade", words)
        assert cap.out == ""  # refused before the scan
    assert not card.exists()
    # the run's own cascade, also a copy of it and its first stage only, is its run's
    own = tmp_path / "copy.pico"
    shutil.copy(two_image_run / "cascade.pico", own)
    argv = _eval_argv(boxes, "--card", card, "--run", two_image_run, "--stages", "1", cascade=own)
    assert main(argv) == 0, capsys.readouterr().err
    assert card.read_text().startswith("# ")


def test_duplicate_boxes_count_once(tmp_path, capsys):
    """The same box listed twice for one image counted as two faces (in eval-detector one of
    them could never be found; in train-cascade it was a positive twice)."""
    boxes = _noise_boxes(tmp_path, "a.png 20 20 60 60", "a.png 20 20 60 60", "a.png 90 20 40 40")
    ims, report = read_box_file(boxes)
    assert [len(im.faces) for im in ims] == [2] and report.to_json() == {"duplicate": 1}
    wf = tmp_path / "wf"
    (wf / "images").mkdir(parents=True)
    _write_img(wf / "images" / "a.png")
    line = "a.png 60 50 90 50 75 65 75 85\n"
    (wf / "WebFaces_GroundThruth.txt").write_text(line * 2)
    ims, report = read_webfaces(wf)
    assert [len(im.faces) for im in ims] == [1] and report.to_json() == {"duplicate": 1}
    assert main(_eval_detector_argv(boxes, "--json")) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bad_annotations"] == {"duplicate": 1} and res["cascade"]["faces"] == 2


def test_eval_detector_table_says_what_was_skipped(tmp_path, capsys):
    """The table left out the annotations skipped (only the JSON had them)."""
    boxes = _noise_boxes(
        tmp_path, "a.png 20 20 60 60", "a.png 20 20 60 60", "a.png 5000 5000 60 60", "a.png 1 2"
    )
    (tmp_path / "b.png").write_bytes(b"not an image")
    with boxes.open("a") as f:
        f.write("b.png 10 10 40 40\n")
    assert main(_eval_detector_argv(boxes)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1 images, 1 faces"), out
    assert out[1] == (
        "skipped: 1 x malformed line; 1 x the same box listed again for the same image; "
        "1 x box centre outside the image; 1 x image does not decode"
    ), out


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--data", "DATA"], "give --data WEBFACES_DIR or --boxes FILE, not both"),
        (["--boxes", "BOXES"], "--boxes takes one file, got 2"),
        (["--split", "train"], "--split splits --data"),
        (["--split", "val"], "--split splits --data"),
        (["--val-fraction", "0.2"], "--val-fraction splits --data"),
        (["--run", "RUN"], "--run is read only for --card"),
    ],
)
def test_eval_detector_refuses_options_it_would_ignore(tmp_path, capsys, extra, words):
    """--boxes with --data (--data was scored), --boxes twice (the last one was), --split or
    --val-fraction with --boxes (the file was scored whole), --run without --card (read for
    nothing): each was ignored without a word."""
    boxes = _noise_boxes(tmp_path, "a.png 20 20 60 60")
    (tmp_path / "data").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "state.json").write_text(json.dumps(_state_of(PICO)))
    names = {"DATA": tmp_path / "data", "BOXES": boxes, "RUN": tmp_path / "run"}
    extra = [names.get(x, x) for x in extra]
    assert main(_eval_detector_argv(boxes, *extra)) == 2
    cap = capsys.readouterr()
    assert_one_error_line(cap.err, "edge-fer eval-detector: error: " + words)
    assert cap.out == ""


def _noise_webfaces(tmp_path: Path, n: int) -> Path:
    """A WebFaces folder of `n` noise images with one annotated face each."""
    wf = tmp_path / "wf"
    (wf / "images").mkdir(parents=True)
    for i in range(n):
        _write_img(wf / "images" / f"pic{i}.png", seed=i)
    lines = [f"pic{i}.png 60 50 90 50 75 65 75 85\n" for i in range(n)]
    (wf / "WebFaces_GroundThruth.txt").write_text("".join(lines))
    return wf


def test_train_cascade_val_fraction_that_holds_out_every_face(tmp_path, capsys):
    """--val-fraction 0.99 held out every WebFaces image: "no positives ... (the annotations
    list no faces)", which they do."""
    wf = _noise_webfaces(tmp_path, 3)
    bg = tmp_path / "bg"
    bg.mkdir()
    _write_img(bg / "x.png")
    out = tmp_path / "run"
    argv = ["train-cascade", "--webfaces", wf, "--backgrounds", bg, "--out", out]
    assert main([str(a) for a in argv + ["--val-fraction", "0.99"]]) == 2
    assert_one_error_line(
        capsys.readouterr().err,
        "error: --val-fraction 0.99 holds out 3 of the 3 WebFaces images (3 of 3 faces)",
        "which leaves no face for training (no positive of at least 20 px): lower it",
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("nbg", "extra", "words"),
    [(0, [], "(none in it)"), (1, ["--bg-val-fraction", "0.9"], "(all 1 held out by")],
)
def test_train_cascade_refuses_backgrounds_with_no_image(tmp_path, capsys, nbg, extra, words):
    """An empty --backgrounds folder trained on negatives from the annotated images alone,
    without a word."""
    boxes = _noise_boxes(tmp_path, "a.png 20 20 60 60")
    bg = tmp_path / "bg"
    bg.mkdir()
    for i in range(nbg):
        _write_img(bg / f"x{i}.png")
    out = tmp_path / "run"
    argv = ["train-cascade", "--boxes", boxes, "--backgrounds", bg, "--out", out, *extra]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, f"error: --backgrounds {bg} holds no image to train on {words}")
    assert not out.exists()


def test_train_cascade_out_empty_names_no_folder(tmp_path, capsys):
    """--out "" was taken for the working folder: "--out . is, lies in or holds --boxes"."""
    boxes = _noise_boxes(tmp_path, "a.png 20 20 60 60")
    assert main(["train-cascade", "--boxes", str(boxes), "--out", ""]) == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, "error: --out is empty, which names no folder")
    assert "--out ." not in err
