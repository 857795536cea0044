"""Calibration in two steps (`ranges.collect` keeps histograms, `ranges.compute` picks ranges):
the same ranges as the fused code gave, kept histograms that save and load exactly, a report
that compares every method from one pass, and `edge-fer calibrate` stopped by SIGTERM/SIGINT
(a real child process) leaving no temporary file and --out as it was; a second calibrate into
the folder one is writing, an image over 100 Mpx in the dataset, the hint on a split too small.

The OLD_* figures (tests/data/calibration_before_split.json) were computed once with the code
before the split (`collect(model, batches, method, percentile)`, which built the histograms and
chose the ranges in one call) on the bundled model and `fer_like_faces()`, batches of 16, one
ONNX Runtime thread.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from processes import CLI_INTERRUPTIBLE, cache_env, refusal_line, run_cli, single_line

from edge_fer.errors import UserError

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from paths import CALIB, FER, ROOT, needs_modules, noise_faces

from edge_fer.quantize import CalibFaces, calibrate
from edge_fer.quantize import ranges as R
from edge_fer.quantize.calib_data import FaceBatchReader

CLASSES = ("angry", "happy", "sad")


def fer_like_faces(n: int = 48, size: int = 48, seed: int = 7) -> np.ndarray:
    """Seeded FER2013-like 48x48 gray faces: a lit oval head, eyes, brows and a mouth whose
    curve changes with the expression, on a gradient background, with sensor noise."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = np.tile(np.linspace(40, 90 + 40 * rng.random(), size, dtype=np.float32), (size, 1))
        c = (size // 2 + int(rng.integers(-2, 3)), size // 2 + int(rng.integers(-1, 3)))
        axes = (int(rng.integers(15, 19)), int(rng.integers(19, 23)))
        cv2.ellipse(img, c, axes, 0, 0, 360, float(rng.integers(150, 210)), -1)
        for dx in (-8, 8):  # eyes and brows
            eye = (c[0] + dx, c[1] - 5)
            cv2.circle(img, eye, 2, float(rng.integers(20, 60)), -1)
            tilt = int(rng.integers(-3, 4))
            brow = ((eye[0] - 4, eye[1] - 5 + tilt), (eye[0] + 4, eye[1] - 5 - tilt))
            cv2.line(img, brow[0], brow[1], 70.0, 1)
        smile = int(rng.integers(-6, 7))  # mouth: frown .. smile
        start, end = (0, 180) if smile >= 0 else (180, 360)
        cv2.ellipse(img, (c[0], c[1] + 9), (8, abs(smile) + 1), 0, start, end, 40.0, 2)
        img += rng.normal(0, 6, img.shape).astype(np.float32)
        img = cv2.GaussianBlur(img, (3, 3), 0.8)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


# the calibration by the code before the split: tensor names, per method [(amax, clipped)] per
# tensor, and (min, max, absmax) per tensor
_BEFORE = json.loads((Path(__file__).parent / "data" / "calibration_before_split.json").read_text())
OLD_NAMES = _BEFORE["names"]
OLD_RANGES = {method: [tuple(r) for r in rows] for method, rows in _BEFORE["ranges"].items()}
OLD_STATS = [tuple(r) for r in _BEFORE["stats"]]
METHODS = [  # key in OLD_RANGES, method, percentile
    ("entropy", "entropy", None),
    ("percentile", "percentile", None),
    ("percentile99.9", "percentile", 99.9),
    ("minmax", "minmax", None),
]


def _bundled():
    from edge_fer.classify import Classifier, default_model_path

    model = default_model_path()
    with Classifier.load(model, threads=1, tta="none") as clf:
        return model, clf.spec


@pytest.fixture(scope="module")
def collection():
    model, spec = _bundled()
    batches = FaceBatchReader(fer_like_faces(), spec, "input", batch_size=16).batches()
    return R.collect(model, batches, threads=1)


def _numbers(rs) -> dict:
    return {n: (t.amax, t.clipped, t.min, t.max, t.absmax) for n, t in rs.tensors.items()}


# -- collect once, compute any method --------------------------------------------------------


def test_split_gives_the_ranges_of_the_fused_code(collection, tmp_path):
    assert collection.n_faces == 48 and collection.input_name == "input"
    assert list(collection.tensors) == OLD_NAMES and collection.skipped == []
    saved = []
    for name in ("hist.npz", "hist.json"):
        collection.save(tmp_path / name)
        saved.append(R.Collection.load(tmp_path / name))
    for key, method, p in METHODS:
        rs = R.compute(collection, method, p)
        assert rs.method == method and rs.n_faces == 48
        assert rs.percentile == (None if method != "percentile" else p or R.DEFAULT_PERCENTILE)
        assert list(rs.tensors) == OLD_NAMES
        for name, (amax, clipped), stats in zip(OLD_NAMES, OLD_RANGES[key], OLD_STATS):
            t = rs.tensors[name]
            assert t.amax == pytest.approx(amax, rel=1e-6, abs=1e-9), (key, name)
            assert t.clipped == pytest.approx(clipped, rel=1e-6, abs=1e-9), (key, name)
            assert (t.min, t.max, t.absmax) == pytest.approx(stats, rel=1e-6, abs=1e-9), name
        for again in saved:  # a saved collection gives exactly the same ranges
            assert _numbers(R.compute(again, method, p)) == _numbers(rs)


def test_collection_files_that_are_not_one_are_refused(collection, tmp_path):
    np.savez(tmp_path / "other.npz", header=np.array("{}"), counts_0=np.zeros(3))
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    (tmp_path / "cut.npz").write_bytes(collection.to_npz()[:200])
    doc = collection.to_json()
    doc["tensors"][1]["width"] = float("nan")  # json.dumps writes NaN; load must refuse it
    (tmp_path / "nan.json").write_text(json.dumps(doc))
    doc = collection.to_json()
    doc["tensors"][0]["counts"] = [1] * (doc["tensors"][0]["bins"] + 1)
    (tmp_path / "long.json").write_text(json.dumps(doc))
    for name in ("other.npz", "other.json", "cut.npz", "nan.json", "long.json"):
        with pytest.raises(UserError, match="not a calibration histogram file") as e:
            R.Collection.load(tmp_path / name)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="cannot read"):
        R.Collection.load(tmp_path / "none.npz")


def test_report_compares_every_method_from_the_one_pass(tmp_path):
    from edge_fer.quantize import report

    model, _ = _bundled()
    faces = _faces(40)
    seen: list[int] = []
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"percentile must be in \(50, 100\], got 40"):
        calibrate(model, faces, out, method="entropy", percentile=40, progress=seen.append)
    assert seen == [] and not out.exists()  # refused before the pass (it serves the comparison)
    info = calibrate(
        model,
        faces,
        out,
        method="percentile",
        percentile=99.9,
        target="cpu",
        threads=1,
        min_faces=20,
        batch_size=16,
        check_agreement=False,
        progress=seen.append,
        keep_histograms=True,
    )
    assert seen == [16, 16, 8]  # one pass over the faces, for every method
    assert info["files"]["histograms"] == str(out / "calib_histograms.npz")
    rep = json.loads((out / "calib_report.json").read_text())
    kept = R.Collection.load(out / "calib_histograms.npz")
    compared = rep["methods_compared"]
    assert list(compared) == list(R.METHODS) and compared["percentile"]["percentile"] == 99.9
    assert compared == report.compare(kept, 99.9)  # the same numbers from the kept histograms
    for method in R.METHODS:
        rs = R.compute(kept, method, 99.9 if method == "percentile" else None)
        got = compared[method]["tensors"]
        assert list(got) == list(rep["tensors"])
        for name, t in rs.tensors.items():
            assert got[name]["amax"] == pytest.approx(t.amax, rel=1e-6)
            assert got[name]["clipped"] == pytest.approx(t.clipped, rel=1e-6, abs=1e-12)
    for name, t in rep["tensors"].items():  # the chosen method is the one the outputs hold
        assert compared["percentile"]["tensors"][name]["amax"] == t["amax"]
    assert compared["minmax"]["tensors"]["input"]["amax"] == rep["tensors"]["input"]["absmax"]


# -- writing the outputs ---------------------------------------------------------------------


def _faces(n: int) -> CalibFaces:
    labels = np.arange(n) % len(CLASSES)
    ids = [f"f{k:03d}" for k in range(n)]
    return CalibFaces(fer_like_faces(n, seed=3), ids, "fer-like", labels, CLASSES, n)


def test_a_failed_write_puts_the_previous_outputs_back(tmp_path):
    model, _ = _bundled()
    out = tmp_path / "out"
    out.mkdir()
    (out / "calib.cache").write_bytes(b"TRT-8601-EntropyCalibration2\ninput: 3c010204\n")
    (out / "notes.txt").write_text("mine")
    # the ids file links into a folder that does not exist: written after the model, the
    # cache and the report, it fails
    (out / "calib_ids.txt").symlink_to(tmp_path / "gone" / "ids.txt")
    with pytest.raises(UserError, match=r"cannot write \(No such file or directory\)"):
        calibrate(
            model,
            _faces(30),
            out,
            target="cpu",
            threads=1,
            min_faces=20,
            check_agreement=False,
            force=True,
        )
    assert sorted(p.name for p in out.iterdir()) == ["calib.cache", "calib_ids.txt", "notes.txt"]
    assert (out / "calib.cache").read_bytes().startswith(b"TRT-8601-")
    assert (out / "calib_ids.txt").is_symlink() and not (tmp_path / "gone").exists()


# -- SIGTERM / SIGINT from a real child process ----------------------------------------------


def _png_dataset(root: Path, n: int) -> Path:
    import cv2

    for k, img in enumerate(fer_like_faces(n, seed=5)):
        d = root / CLASSES[k % len(CLASSES)]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"f{k:03d}.png"), img)
    return root


def _calibrate_argv(data: Path, min_faces: int, out: Path, *extra: str) -> list[str]:
    """`edge-fer calibrate` on all 40 faces of a _png_dataset folder."""
    return [
        "calibrate",
        "--data",
        str(data),
        "--split",
        "all",
        "--samples",
        "40",
        "--min-faces",
        str(min_faces),
        "--out",
        str(out),
        *extra,
    ]


def _start(tmp_path: Path, out: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    tmp = tmp_path / "tmp"  # the child's temporary folder: must be empty at the end
    tmp.mkdir(exist_ok=True)
    data = _png_dataset(tmp_path / "data", 40)
    env = dict(os.environ, TMPDIR=str(tmp), EDGE_FER_CACHE=str(tmp_path / "cache"))
    cmd = [
        sys.executable,
        *CLI_INTERRUPTIBLE,
        *_calibrate_argv(data, 20, out, "--threads", "1", "--no-progress", *extra),
    ]
    child = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return child, tmp


def _wait_for(child: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + 120
    while not ready():
        if child.poll() is not None:
            pytest.fail(
                f"calibrate ended (rc {child.returncode}) before {what}: {child.stderr.read()}"
            )
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.001)


def _ours(tmp: Path) -> list[str]:
    """What is in the child's temporary folder, but ONNX Runtime's `.ses` (a session id file
    its import writes there and keeps)."""
    return [p.name for p in tmp.iterdir() if p.name != ".ses"]


def _leftovers(*folders: Path) -> list[str]:
    return [str(p) for f in folders if f.exists() for p in f.rglob("*") if "tmp" in p.name]


def test_sigterm_while_quantizing_removes_every_temporary_file(tmp_path):
    out = tmp_path / "out"
    child, tmp = _start(tmp_path, out)
    # the Q/DQ models are being made in a temporary folder: stop it there. Wait for that
    # folder by name: any file would also match the probe Python writes in TMPDIR when `main`
    # starts, and a SIGTERM then is start-up's generic "interrupted" (1 run in 6 on CI)
    _wait_for(
        child,
        lambda: any(n.startswith("edge-fer-calibrate-") for n in _ours(tmp)),
        "the temporary folder appeared",
    )
    child.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    child.send_signal(signal.SIGTERM)  # a second one (impatient supervisor): ignored
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143, err
    assert err.strip().splitlines() == [
        f"edge-fer calibrate: terminated (SIGTERM); {out} was left as it was"
    ]
    assert not out.exists() and _ours(tmp) == []


def test_the_cli_chooses_the_temporary_folder_while_signals_are_only_recorded(
    tmp_path, monkeypatch
):
    """Python chooses its temporary folder on first use by writing a probe file there and
    removing it. In calibrate that first use came with its first temporary folder, and a
    SIGTERM landing between the two left the probe in TMPDIR (the test above failed 2 times in
    8 on loaded cores). `main` now has the folder chosen at start-up, while signals are only
    recorded."""
    import tempfile

    from edge_fer.cli.main import main

    monkeypatch.setattr(tempfile, "tempdir", None)  # chosen afresh, as in a new process
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert main(["models"]) == 0
    assert tempfile.tempdir == str(tmp_path)
    assert list(tmp_path.iterdir()) == []  # the probe was removed


def test_no_usable_temporary_folder_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    """When TMPDIR, /tmp, /var/tmp and the working folder all refuse a file, tempfile raises
    its own FileNotFoundError; a command that needs a temporary folder (bench --synthetic
    writes its clip there) printed a traceback. It is one line naming the folders tried, exit
    2. The folders are made unusable by giving tempfile one candidate that is a file (a
    read-only folder would not stop root)."""
    import tempfile

    from edge_fer.cli.main import main

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setattr(tempfile, "_candidate_tempdir_list", lambda: [str(not_a_folder)])
    assert main(["models"]) == 0  # a command that needs none is unaffected
    capsys.readouterr()
    code = main(
        ["bench", "--synthetic", "64x64", "--frames", "2", "--json", str(tmp_path / "b.json")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("edge-fer bench: error: No usable temporary directory found in")
    assert str(not_a_folder) in err[0] and err[0].endswith("; set TMPDIR")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_pipe_nobody_reads_among_the_outputs_puts_the_previous_ones_back(tmp_path):
    """The ids file is a named pipe no process reads. Its open used to wait for a reader (this
    test interrupted it there with SIGINT); now it fails at once, after the models, the cache
    and the report are written, and those get their previous content back."""
    out = tmp_path / "out"
    out.mkdir()
    old_cache = b"TRT-8601-EntropyCalibration2\ninput: 3c010204\n"
    (out / "calib.cache").write_bytes(old_cache)
    (out / "notes.txt").write_text("mine")
    os.mkfifo(out / "calib_ids.txt")
    child, tmp = _start(tmp_path, out, "--target", "cpu", "--force")
    _, err = child.communicate(timeout=300)
    assert child.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "cannot write (no process reads the pipe)" in lines[0], err
    assert sorted(p.name for p in out.iterdir()) == ["calib.cache", "calib_ids.txt", "notes.txt"]
    assert (out / "calib.cache").read_bytes() == old_cache
    assert stat.S_ISFIFO(os.stat(out / "calib_ids.txt").st_mode)
    assert _ours(tmp) == [] and _leftovers(out) == []


# -- --skip-bad ----------------------------------------------------------------------------------


def test_skip_bad_skips_unreadable_images(tmp_path, monkeypatch, capsys):
    from edge_fer.cli.main import main
    from edge_fer.quantize import from_dataset

    monkeypatch.setenv("EDGE_FER_CACHE", str(tmp_path / "cache"))
    data = _png_dataset(tmp_path / "data", 40)
    (data / "sad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    faces = from_dataset(data, "all", samples=40, skip_bad=True)
    assert len(faces) == 40 and faces.notes == ["1 unreadable entry skipped"]
    args = _calibrate_argv(data, 41, tmp_path / "out")
    assert main(args) == 2  # the loader's advice names a flag calibrate takes
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.png" in err[0] and "--skip-bad" in err[0], err
    assert main([*args, "--skip-bad"]) == 2  # taken: the 40 readable faces are too few
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 40 faces; at least 41" in err[0], err
    assert main(["calibrate", "--source", str(data), "--skip-bad", "--out", "x"]) == 2
    assert "--skip-bad applies to --data" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- the committed calibration --------------------------------------------------------------------


@pytest.mark.shared("data/fer2013/train")
@pytest.mark.skipif(not (CALIB / "calib.cache").is_file(), reason="no committed calibration")
def test_committed_calibration_is_reproduced_byte_for_byte(tmp_path, monkeypatch, capsys):
    """The command in calibration/README.md, with the committed ids, on the split code."""
    from edge_fer.cli.main import main

    monkeypatch.chdir(ROOT)  # the report records the model path as given
    out = tmp_path / "fer_default"
    args = [
        "calibrate",
        "--model",
        "edge_fer/assets/fer_default.onnx",
        "--data",
        os.path.relpath(FER, ROOT),
        "--split",
        "train",
        "--ids",
        str(CALIB / "calib_ids.txt"),
        "--method",
        "entropy",
        "--target",
        "both",
        "--trt-version",
        "10.3.0",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0, capsys.readouterr().err
    assert (out / "calib.cache").read_bytes() == (CALIB / "calib.cache").read_bytes()
    assert (out / "calib_ids.txt").read_bytes() == (CALIB / "calib_ids.txt").read_bytes()
    new = json.loads((out / "calib_report.json").read_text())
    old = json.loads((CALIB / "calib_report.json").read_text())
    if "methods_compared" not in old:  # committed before the report compared the methods
        new.pop("methods_compared")
    for rep in (new, old):
        rep.pop("edge_fer_version")
    assert new == old


# -- two calibrations into one folder, an image over 100 Mpx in the dataset -------------------
# (a second `calibrate` into an --out folder that another one is writing is refused at once,
# one line, exit code 2, before it reads the dataset; before, both wrote it, neither needing
# --force since each found no earlier outputs there. An image over 100 Mpx in a dataset is a
# bad entry like an undecodable one, refused naming it or skipped with --skip-bad, never
# decoded; before, a 12000x12000 PNG of 140 KB was decoded and joined the dataset as a face.)

HUGE = "12000x12000 pixels is over the 100 Mpx limit for images"


def _cpu_calibrate_argv(data: Path, out: Path, *extra: str) -> list[str]:
    """`edge-fer calibrate` of 60 faces (at least 20) of all of DATA for the CPU, one thread."""
    return [
        "calibrate", "--data", str(data), "--split", "all", "--samples", "60",
        "--min-faces", "20", "--target", "cpu", "--threads", "1", "--no-progress",
        "--out", str(out), *extra,
    ]  # fmt: skip


def test_a_second_calibrate_into_a_folder_being_written_is_refused_at_once(tmp_path):
    data = noise_faces(tmp_path / "data", 40)
    out = tmp_path / "out"
    tmp = tmp_path / "tmp"  # the first one's temporary folder: its Q/DQ model is made there
    tmp.mkdir()
    first = subprocess.Popen(
        [sys.executable, *CLI_INTERRUPTIBLE, *_cpu_calibrate_argv(data, out)],
        cwd=ROOT,
        env=cache_env(tmp_path, TMPDIR=str(tmp)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # it is quantizing (well inside the calibration): stop it there while the second runs
        deadline = time.monotonic() + 120
        while not any(p.name.startswith("edge-fer-calibrate-") for p in tmp.iterdir()):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first calibration never quantized"
            time.sleep(0.001)
        first.send_signal(signal.SIGSTOP)
        second = run_cli(*_cpu_calibrate_argv(data, out), env=cache_env(tmp_path, "cache2"))
        first.send_signal(signal.SIGCONT)
        line = single_line(second)
        assert line == (
            f"edge-fer calibrate: error: {out}: another edge-fer calibrate is writing this "
            "folder right now; wait for it to end or give another folder"
        )
        assert not (tmp_path / "cache2").exists()  # refused before it read the dataset
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
            first.communicate()
    assert first.returncode == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "calib.cache", "calib_ids.txt", "calib_report.json", "model.int8.cpu.onnx",
    ]  # fmt: skip
    # the lock went with the first one: a third run is refused by the earlier outputs only
    third = run_cli(*_cpu_calibrate_argv(data, out), env=cache_env(tmp_path))
    assert "--force is needed to replace the earlier calibration" in single_line(third)


def test_calibrate_refuses_or_skips_an_image_over_100_mpx_naming_it(tmp_path, huge_png):
    data = noise_faces(tmp_path / "data", 40)
    (data / "happy" / "huge.png").write_bytes(huge_png)
    (data / "sad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    out = tmp_path / "new" / "out"
    line = single_line(run_cli(*_cpu_calibrate_argv(data, out), env=cache_env(tmp_path)))
    assert f"huge.png: {HUGE}" in line and "--skip-bad" in line, line
    assert not (tmp_path / "new").exists()  # the folders made for the lock went again
    p = run_cli(*_cpu_calibrate_argv(data, out, "--skip-bad"), env=cache_env(tmp_path))
    assert p.returncode == 0, p.stderr
    named = f"happy/huge.png: {HUGE}; sad/broken.png: cannot decode image"
    assert f"  skipped: {named}" in p.stdout.splitlines(), p.stdout
    calib = json.loads((out / "calib_report.json").read_text())["calibration_set"]
    assert calib["faces"] == calib["seen"] == 40
    assert calib["skipped_entries"] == named.split("; ")
    assert "huge" not in (out / "calib_ids.txt").read_text()


# -- calibrate: the hint on a split smaller than the minimum ------------------------------------
# (on a tiny cnn4 run of real FER2013 faces, trained and exported by `edge-fer`)

needs_training = needs_modules("torch", "safetensors")


@pytest.mark.shared("data/fer2013/train", "data/fer2013/test")
@needs_training
def test_calibrate_hint_when_the_split_itself_is_too_small(
    tiny_cnn4_onnx, tiny_fer, tiny_fer_env, tmp_path
):
    # 14 PublicTest faces in all: "a larger --samples" (the old hint) cannot help
    proc = run_cli("calibrate", "--model", tiny_cnn4_onnx, "--data", tiny_fer, "--split",
                   "public-test", "--out", tmp_path / "c", env=tiny_fer_env)  # fmt: skip
    line = refusal_line(proc)
    assert "has 14 faces; at least 100 are needed" in line, line
    assert "every face it holds" in line and "--samples" not in line, line
    assert not (tmp_path / "c").exists()


def test_an_ids_file_with_a_byte_order_mark_or_an_id_twice(tmp_path, monkeypatch):
    """Notepad's byte order mark became part of the first id ("1 of the 10 calibration ids
    are not in the dataset"); an id named twice was calibrated on twice ("13 faces" of 10)."""
    from edge_fer.quantize import from_dataset
    from edge_fer.quantize.report import read_ids

    monkeypatch.setenv("EDGE_FER_CACHE", str(tmp_path / "cache"))
    data = _png_dataset(tmp_path / "data", 20)
    first = from_dataset(data, "all", samples=10)
    bom = tmp_path / "ids.txt"
    bom.write_bytes(("\ufeff" + "\r\n".join(first.ids) + "\r\n").encode("utf-8"))
    assert read_ids(bom) == first.ids
    again = from_dataset(data, "all", samples=10, ids=read_ids(bom))
    assert again.ids == first.ids
    with pytest.raises(UserError, match="2 calibration ids are named more than once") as e:
        from_dataset(data, "all", samples=10, ids=[*first.ids, *first.ids[:2]])
    assert e.value.param == "ids"
    # a layout without splits records the faces it read: all of them, not a split it lacks
    assert first.source == "data (all)"
    assert from_dataset(data, "private-test", samples=10).source == "data (all)"
