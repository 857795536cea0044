"""`edge-fer train-eyes` and its inputs (QA findings): the annotation rows it leaves out are
said, a Ctrl-C leaves the model and the report of one run together, and wrong flag values are
one line, exit 2."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
from paths import WEBFACES
from processes import interrupt, refusal_line, run_cli, spawn_cli

from edge_fer.align.learn import read_faces

TINY = ("--stages", 1, "--trees-per-stage", 1, "--candidates", 4, "--starts", 1)


def _webfaces(root: Path, extra: list[str] = (), n: int = 10) -> Path:
    """A WebFaces folder of `n` 120x100 noise images (pic00..), one good row each, then
    `extra` rows."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        cv2.imwrite(
            str(root / "images" / f"pic{i:02d}.png"), rng.integers(0, 256, (100, 120), np.uint8)
        )
        rows.append(f"pic{i:02d}.png 45 40 75 40 60 55 60 70")
    (root / "WebFaces_GroundThruth.txt").write_text("\n".join(rows + list(extra)) + "\n")
    return root


BAD_ROWS = [
    "pic00.png 45 40 75",  # malformed: too few fields
    "pic00.png 45 40 75 40 60 55 60 x",  # malformed: not a number
    "nosuch.png 45 40 75 40 60 55 60 70",  # missing image
    "pic01.png nan 40 75 40 60 55 60 70",  # degenerate landmarks
    "pic02.png 45 40 500 40 60 55 60 70",  # an eye outside the 120 px wide image
    "broken.png 45 40 75 40 60 55 60 70",  # an image that does not decode
]


def test_bad_annotation_rows_are_counted(tmp_path):
    """Before: malformed lines, missing images and eyes outside the image were dropped without
    a word (and an undecodable image stopped the command)."""
    data = _webfaces(
        tmp_path / "wf", BAD_ROWS + ["# a comment", "", "pic03.png 120.4 40 90 40 105 55 105 70"]
    )
    (data / "images" / "broken.png").write_bytes(b"not an image")
    f = read_faces(data, "all")
    # 10 good rows and one with an eye 0.4 px past the edge (kept: clicked on the edge pixel)
    assert len(f.paths) == 11 and f.skipped.rows == 17
    assert f.skipped.counts == {
        "malformed": 2,
        "missing_file": 1,
        "bad_landmarks": 1,
        "eyes_outside": 1,
        "undecodable": 1,
    }
    line = f.skipped.line()
    assert line.startswith("skipped 6 of 17 annotation rows: 2 x malformed line (e.g. "), line
    assert "GroundThruth.txt:11, WebFaces_GroundThruth.txt:12)" in line, line
    # the same count whichever split is read
    assert read_faces(data, "train").skipped.counts == read_faces(data, "val").skipped.counts


def test_train_eyes_says_what_it_skipped(tmp_path):
    data = _webfaces(tmp_path / "wf", BAD_ROWS)
    (data / "images" / "broken.png").write_bytes(b"")
    out, rep = tmp_path / "e.eyes", tmp_path / "r.json"
    proc = run_cli("train-eyes", "--data", data, "--out", out, "--report", rep, *TINY)
    assert proc.returncode == 0, proc.stderr
    said = [ln for ln in proc.stderr.splitlines() if "skipped" in ln]
    assert len(said) == 1 and said[0].startswith("skipped 6 of 16 annotation rows: "), said
    for res in (json.loads(proc.stdout), json.loads(rep.read_text())):
        assert res["annotation_rows"] == 16 and sum(res["skipped_rows"].values()) == 6, res
        assert res["skipped_rows"]["eyes_outside"] == 1
    # all rows bad: one line, nothing written
    (data / "WebFaces_GroundThruth.txt").write_text("\n".join(BAD_ROWS) + "\n")
    proc = run_cli("train-eyes", "--data", data, "--out", tmp_path / "x.eyes", *TINY)
    line = refusal_line(proc)
    assert "none of the 6 annotation rows" in line and "1 x image file missing" in line, line
    assert not (tmp_path / "x.eyes").exists()


@pytest.mark.shared("data/webfaces/WebFaces_GroundThruth.txt", "data/webfaces/images")
def test_ctrl_c_while_measuring_leaves_the_model_and_report_of_one_run(tmp_path):
    """Before: the model was written when learned, the report after the measuring: a Ctrl-C
    meanwhile left the new model beside an earlier run's report. Now the learned model is kept
    with its own report, marked not measured."""
    out, rep = tmp_path / "e.eyes", tmp_path / "r.json"
    out.write_bytes(b"the earlier model")
    rep.write_text('{"earlier": true}\n')
    # the whole validation split measured: a few seconds to land in
    proc = spawn_cli("train-eyes", "--data", WEBFACES, "--out", out, "--report", rep, "--force",
                     "--max-faces", 20, *TINY, cwd=tmp_path)  # fmt: skip
    err = interrupt(proc, signal.SIGINT, lambda: "measuring on" in proc.stderr.readline(), 300)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines() == ["edge-fer train-eyes: interrupted (Ctrl-C)"], err
    from edge_fer.align.model import EyeModel

    assert EyeModel.load(out).to_bytes() == out.read_bytes()  # the new model, kept
    report = json.loads(rep.read_text())
    assert report["model"] == str(out) and report["measured"] is False and report["val"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.eyes", "r.json"]  # no leftovers


def test_an_interrupt_between_the_two_writes_puts_the_first_back(tmp_path, monkeypatch):
    from edge_fer.cli import eyes_cmd
    from edge_fer.fileio import write_bytes

    model, report = tmp_path / "e.eyes", tmp_path / "r.json"
    model.write_bytes(b"old model")
    calls = []

    def write(path, data):
        calls.append(path)
        if len(calls) == 2:  # the report: Ctrl-C
            raise KeyboardInterrupt
        write_bytes(path, data)

    monkeypatch.setattr("edge_fer.fileio.write_bytes", write)
    with pytest.raises(KeyboardInterrupt):
        eyes_cmd._write_together([("--out", str(model), b"new"), ("--report", str(report), b"{}")])
    assert model.read_bytes() == b"old model" and not report.exists()
    # a new model is removed again
    model.unlink()
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        eyes_cmd._write_together([("--out", str(model), b"new"), ("--report", str(report), b"{}")])
    assert list(tmp_path.iterdir()) == []


# ---- wrong flag values: one line, exit 2, nothing learned or written ----------------------------


@pytest.mark.parametrize(
    "flags, words",
    [
        (("--stages", -1), "--stages must be in 1..64"),
        (("--depth", 0), "--depth must be in 1..12"),
        (("--trees-per-stage", 0), "--trees-per-stage must be in"),
        (("--candidates", -5), "--candidates must be in"),
        (("--starts", 0), "--starts must be in"),
        (("--max-faces", -1), "--max-faces must be >= 0"),
        (("--eval-limit", -2), "--eval-limit must be >= 0"),
        (("--seed", -1), "--seed must be >= 0"),
        (("--val-fraction", 1.5), "--val-fraction must be in (0, 1)"),
        (("--val-fraction", 0), "--val-fraction must be in (0, 1)"),
        (("--val-fraction", "nan"), "--val-fraction must be in (0, 1)"),
        (("--out", "{old}"), "already exists; pass --force"),
        (("--report", "{old}"), "already exists; pass --force"),
        (("--out", "{data}/WebFaces_GroundThruth.txt", "--force"), "inside --data"),
        (("--out", "{data}"), "is a folder"),
        # --data naming the landmark file (before: the model was written over it, and over an
        # image with --force)
        (("--data", "{truth}", "--out", "{truth}", "--force"), "same file as --data"),
        (("--data", "{truth}", "--report", "{truth}", "--force"), "same file as --data"),
        (("--data", "{truth}", "--out", "{data}/images/pic00.png", "--force"), "images of --data"),
    ],
)
def test_wrong_flag_values_are_one_line(tmp_path, flags, words):
    data = tmp_path / "wf"
    (data / "images").mkdir(parents=True)
    (data / "images" / "pic00.png").write_bytes(b"an image")
    truth = data / "WebFaces_GroundThruth.txt"
    truth.write_text("pic00.png 45 40 75 40 60 55 60 70\n")
    old = tmp_path / "old"
    old.write_bytes(b"mine")
    argv = [str(a).format(data=data, old=old, truth=truth) for a in flags]
    if "--data" not in argv:
        argv = ["--data", str(data), *argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "e.eyes")]
    line = refusal_line(run_cli("train-eyes", *TINY, *argv))  # (the flags tested last: they win)
    assert words in line, line
    assert truth.read_text() == "pic00.png 45 40 75 40 60 55 60 70\n"
    assert (data / "images" / "pic00.png").read_bytes() == b"an image"
    assert old.read_bytes() == b"mine" and not (tmp_path / "e.eyes").exists()
