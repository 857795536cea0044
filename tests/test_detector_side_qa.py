"""QA findings on the detector side: `edge_fer.detect.Detector` shared by threads,
`train-cascade --resume` on a damaged run, `eval-detector` outputs that exist, box files with a
BOM or names in another encoding."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from paths import BACKGROUNDS, FER, PICO, WEBFACES, shared
from processes import interrupt, run_cli, run_python, spawn_cli

from edge_fer.cascade_train.annotations import read_box_file, read_webfaces
from edge_fer.cli.main import main
from edge_fer.detect import Cascade, Detector


def _one_line_error(err: str, *words: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err


def test_a_detector_shared_by_threads_gives_each_frame_its_own_faces():
    """Threads sharing one Detector mixed their frames' state: a frame of another size reset
    the memory while a thread was between its scan and its threshold, so the threshold became
    0 and every window group was reported as a face."""
    # a cascade that accepts every window, and a threshold no group reaches: any face is wrong
    casc = Cascade(
        tdepth=1, codes=np.zeros((1, 1, 4)), leaves=np.full((1, 2), 0.5), thresholds=[-1.0]
    )
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (s, s), dtype=np.uint8) for s in (40, 41)]
    det = Detector(casc, min_size=16, threshold=1e9, threads=1)
    assert det.detect(frames[0]) == [] and det.detect(frames[1]) == []
    wrong: list[int] = []

    def work(k: int) -> None:
        end = time.monotonic() + 2.0
        i = k
        while time.monotonic() < end and not wrong:
            faces = det.detect(frames[i % 2])
            if faces:
                wrong.append(len(faces))
            i += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: the race shows within a few frames
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert wrong == [], f"faces reported above a threshold of 1e9: {wrong}"


# ---- train-cascade --resume on a damaged run ---------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> tuple[Path, Path]:
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
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    boxes, bg = tiny_data
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
    tiny_data, tiny_run, tmp_path, capsys, how, words
):
    """A state.json without a key the resume reads, or a cascade.pico of another depth, was a
    KeyError / AttributeError / numpy ValueError traceback, most of them after every image had
    been loaded (minutes on the full data). Now one line, exit 2, before any image is read."""
    boxes, bg = tiny_data
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = json.loads((run / "state.json").read_text())
    _damage(state, run, how)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(_train_argv(boxes, bg, run, "--max-stages", "2", "--resume")) == 2
    _one_line_error(capsys.readouterr().err, *words)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_of_an_intact_run_still_continues(tiny_data, tiny_run, tmp_path, capsys):
    boxes, bg = tiny_data
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(_train_argv(boxes, bg, run, "--max-stages", "2", "--resume")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["stage"] == 2 and Cascade.load(run / "cascade.pico").ntrees >= 2


# ---- eval-detector outputs that exist ------------------------------------------------------


def _eval_argv(boxes: Path, *extra) -> list[str]:
    return ["eval-detector", "--cascade", str(PICO), "--boxes", str(boxes), "--reference",
            "none", "--backgrounds", "none", "--speed-images", "0",
            *map(str, extra)]  # fmt: skip


def test_eval_detector_replaces_an_existing_output_only_with_force(tiny_data, tiny_run, tmp_path):
    """--out and --card replaced any file without a word, e.g. another training run's
    state.json (which `train-cascade --resume` then refused as another version's)."""
    boxes, _ = tiny_data
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = (run / "state.json").read_bytes()
    mine = tmp_path / "notes.md"
    mine.write_text("my notes\n")
    for extra, flag in (
        (["--out", run / "state.json"], "--out"),
        (["--card", mine, "--run", run], "--card"),
    ):
        r = run_cli(*_eval_argv(boxes, *extra))
        assert r.returncode == 2 and r.stdout == "", r.stderr
        _one_line_error(r.stderr, flag, "exists; pass --force")
    assert (run / "state.json").read_bytes() == state and mine.read_text() == "my notes\n"
    r = run_cli(*_eval_argv(boxes, "--out", tmp_path / "e.json", "--card", mine, "--run", run))
    assert r.returncode == 2 and not (tmp_path / "e.json").exists()  # checked before the scan
    r = run_cli(
        *_eval_argv(boxes, "--out", tmp_path / "e.json", "--card", mine, "--run", run, "--force")
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "e.json").read_text())["images"] == 2
    assert mine.read_text().startswith("# ")  # the card replaced the notes, as asked


# ---- box files ---------------------------------------------------------------------------


def test_a_box_file_with_a_bom_or_latin1_names_keeps_every_face(tiny_data, tmp_path):
    """A box file saved by a Windows editor starts with a UTF-8 BOM, which became part of the
    first file name (its faces counted as a missing file); a name written in Latin-1 was
    decoded with U+FFFD replacements and never found either."""
    boxes, _ = tiny_data
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


# ---- train-cascade interrupted before its first stage ended --------------------------------


def _slow_stage_argv(tmp_path: Path, out: Path) -> list:
    """A run whose stage 1 takes seconds after its negatives' debug mosaic is written: boxes on
    arbitrary patches of a real photo, 65536 tests per node."""
    shared("data/webfaces"), shared("data/backgrounds")
    src = min((WEBFACES / "images").glob("*.jpg"))
    shutil.copy(src, tmp_path / "photo.jpg")
    rng = np.random.default_rng(0)
    boxes = tmp_path / "patches.txt"
    boxes.write_text("".join(f"photo.jpg {x:.0f} {y:.0f} 40 40\n"
                             for x, y in rng.uniform(0, 150, (60, 2))))  # fmt: skip
    bg = tmp_path / "bg"
    bg.mkdir()
    shutil.copy(min(BACKGROUNDS.iterdir()), bg / "b.jpg")
    return ["train-cascade", "--boxes", boxes, "--backgrounds", bg, "--out", out, "--tests",
            "65536", "--depth", "6", "--stage-trees", "40", "--max-fpr", "1e-9", "--min-tpr",
            "1", "--jitter", "20", "--neg-ratio", "1", "--threads", "1", "--max-stages", "1",
            "--verbose"]  # fmt: skip


def test_ctrl_c_before_stage_1_ended_leaves_no_folder_that_resume_and_rerun_refuse(tmp_path):
    """Ctrl-C in stage 1 of a new run left OUT with debug/ and no state.json: "add --resume"
    then failed ("nothing to resume") and the same command without it refused OUT ("holds
    other files"). Now the run removes what it wrote (the folder too, as it made it)."""
    out = tmp_path / "run"
    argv = _slow_stage_argv(tmp_path, out)
    proc = spawn_cli(*argv, NUMBA_NUM_THREADS="1")
    err = interrupt(proc, signal.SIGINT, (out / "debug" / "negatives_01.png").exists)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "interrupted (Ctrl-C)" in err and "Traceback" not in err, err
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    # --resume on it says how to start instead, in one line
    r = run_cli(*argv, "--resume")
    assert r.returncode == 2, r.stderr
    _one_line_error(r.stderr, "nothing to resume", "without --resume")


# ---- API arguments of the wrong type or range ------------------------------------------------


def _tiny_cascade(**kw) -> Cascade:
    args = {"tdepth": 1, "codes": np.zeros((1, 1, 4)), "leaves": [[0.5, -0.5]],
            "thresholds": [-1.0], **kw}  # fmt: skip
    return Cascade(**args)


@pytest.mark.parametrize(
    "call, param",
    [
        (lambda: _tiny_cascade().save(None), "path"),  # TypeError
        (lambda: _tiny_cascade().save(""), "path"),  # ValueError "has an empty name"
        (lambda: Cascade.from_bytes("pico" * 8), "data"),  # TypeError in len()
        (lambda: Detector(_tiny_cascade(), grouping=["chain"]), "grouping"),  # unhashable
        (lambda: _resolve(None), "options"),  # AttributeError
        (lambda: _picker(3), "cascade"),  # TypeError in Path()
        (lambda: _tiny_cascade(codes=np.full((1, 1, 4), 200)), "codes"),  # wrapped to -56
        (lambda: _tiny_cascade(codes=np.full((1, 1, 4), -129)), "codes"),  # wrapped to 127
        (lambda: _tiny_cascade(codes=np.full((1, 1, 4), 1.5)), "codes"),  # truncated to 1
        (lambda: _tiny_cascade(codes=np.full((1, 1, 4), np.nan)), "codes"),  # became 0
        (lambda: _tiny_cascade(leaves=[["a", "b"]]), "leaves"),  # ValueError
        (lambda: _tiny_cascade(header="8 chars!"), "header"),  # TypeError in to_bytes()
        (lambda: _tiny_cascade(tdepth=True), "tdepth"),  # taken as depth 1
    ],
)
def test_api_arguments_of_the_wrong_type_or_range_are_a_user_error_naming_them(call, param):
    """Each was a plain TypeError / ValueError / AttributeError, or (codes outside -128..127,
    not whole) silently a different cascade."""
    from edge_fer.errors import UserError

    with pytest.raises(UserError) as exc:
        call()
    assert exc.value.param == param, exc.value


def _resolve(options):
    from edge_fer.detect.config import CascadeSettings, resolve

    return resolve(options, CascadeSettings.for_cascade(None), (100, 100))


def _picker(cascade):
    from edge_fer.detect.config import DetectorOptions
    from edge_fer.detect.factory import DetectorPicker

    return DetectorPicker(cascade, DetectorOptions())


def test_cascade_codes_at_the_int8_limits_and_byte_buffers_still_load(tmp_path):
    codes = np.array([[[-128, 127, 0, -1]]])
    casc = _tiny_cascade(codes=codes)
    assert (casc.codes == codes).all()
    data = casc.to_bytes()
    for buf in (data, bytearray(data), memoryview(data)):
        assert (Cascade.from_bytes(buf).codes == codes).all()
    casc.save(tmp_path / "c.pico")
    assert Cascade.load(tmp_path / "c.pico").to_bytes() == data


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
        _one_line_error(r.stderr, f"{tool}: error:", *words)
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
            _one_line_error(r.stderr, f"{tool}: error:", str(out), "boxes.txt", "--force")
            assert r.stdout == "" and snapshot(out) == before
        if tool == "lowres":  # the copies alone are outputs too
            (out / "boxes.txt").unlink()
            r = run_python("-m", f"edge_fer.cascade_train.{tool}", data, out)
            _one_line_error(r.stderr, f"{tool}: error:", "lr_", "--force")
            assert r.returncode == 2 and not (out / "boxes.txt").exists()
        r = run_python("-m", f"edge_fer.cascade_train.{tool}", data, out, "--force")
        assert r.returncode == 0 and (out / "boxes.txt").exists(), (tool, r.stderr)
        assert (out / "notes.txt").read_text() == "mine\n"
