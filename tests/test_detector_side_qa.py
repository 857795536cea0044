"""QA findings on the detector side: `edge_fer.detect.Detector` shared by threads,
`train-cascade --resume` on a damaged run, `eval-detector` outputs that exist, box files with a
BOM or names in another encoding."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from paths import BACKGROUNDS, PICO, WEBFACES, shared
from processes import run_cli

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
