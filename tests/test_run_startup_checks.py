"""`edge-fer run`: what its start-up checks before it does anything slow (QA, 2026-12-06).

- a SIGINT / SIGTERM during start-up, before the run's own output checks, wrote --summary over
  any file (a user's notes.json, the source photo with --force): now only what a run would
  write over is written, else one warning line says why it is not;
- `run --demo --events FOREIGN` made its demo clip (seconds) before it refused the file;
- tracker and --scene-cut flags did nothing on photos, unsaid.

Real photos and clips written with OpenCV, a tiny real ONNX classifier, real `edge-fer` runs
(in this process, or a child process that sends itself a real signal at a given import)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
from paths import ROOT
from processes import assert_one_error_line, run_main, run_python, said
from runtime_helpers import make_tiny_model, mjpg_avi

FOREIGN = '{"mine": "notes a user keeps"}\n'

# `edge-fer ARGS` that sends itself SIG when TARGET is first imported: a signal at that moment
# of the start-up, every time (as a Ctrl-C lands at random in 0.4-0.75 s of imports)
_CHILD = """
import importlib.abc, runpy, signal, sys

TARGET, SIG = sys.argv[1], getattr(signal, sys.argv[2])
signal.signal(signal.SIGINT, signal.default_int_handler)  # as a terminal's job (processes.py)


class Hook(importlib.abc.MetaPathFinder):
    fired = False

    def find_spec(self, name, path=None, target=None):
        if name == TARGET and not Hook.fired:
            Hook.fired = True
            signal.raise_signal(SIG)  # the real handlers run, in this frame
        return None


sys.meta_path.insert(0, Hook())
sys.argv = ["edge-fer", *sys.argv[3:]]
runpy.run_module("edge_fer.cli.main", run_name="__main__")
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def _photo(path: Path, seed: int = 0) -> Path:
    img = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def _interrupted_run(tmp_path: Path, target: str, sig, *argv):
    """`edge-fer run ARGV` (cwd tmp_path) stopped by `sig` as `target` is imported."""
    child = tmp_path / "child.py"
    child.write_text(_CHILD)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return run_python(child, target, sig.name, "run", *argv, cwd=tmp_path, env=env)


def _stopped(proc, sig) -> list[str]:
    """The lines of a run `sig` stopped during start-up (the last says so), no traceback."""
    lines = said(proc.stderr)
    assert proc.returncode == 128 + sig and "Traceback" not in proc.stderr, proc.stderr
    assert lines and lines[-1].startswith(
        f"edge-fer run: interrupted ({sig.name}) during start-up; existing outputs are untouched"
    ), proc.stderr
    return lines


# ---- a) a signal before the output checks ---------------------------------------------------

# where: while the command line is parsed, and at run's own first import (before any check)
BEFORE_CHECKS = [
    ("edge_fer.cli.run_cmd", signal.SIGINT),
    ("edge_fer.runtime.runner", signal.SIGTERM),
]


@pytest.mark.parametrize(("target", "sig"), BEFORE_CHECKS)
def test_a_signal_before_the_checks_leaves_a_foreign_summary(target, sig, tmp_path):
    """notes.json given as --summary was replaced by the interrupted start-up's summary, which
    a run refuses without --force. Now it is kept, one warning line says why; with --force (a
    run replaces it then) the summary is written."""
    photo, notes = _photo(tmp_path / "a.png"), tmp_path / "notes.json"
    notes.write_text(FOREIGN)
    proc = _interrupted_run(tmp_path, target, sig, photo, "--summary", notes, "--quiet")
    lines = _stopped(proc, sig)
    assert notes.read_text() == FOREIGN, "the user's file was replaced"
    refused = (
        f"edge-fer: warning: --summary {notes} exists and is not an earlier run's summary; pass "
        "--force to replace it, or give another name (the summary of this interrupted start-up "
        "is not written)"
    )
    assert lines[:-1] == [refused], proc.stderr
    proc = _interrupted_run(tmp_path, target, sig, photo, "--summary", notes, "--quiet", "--force")
    stopped = f"interrupted ({sig.name}) during start-up; existing outputs are untouched"
    assert _stopped(proc, sig) == [f"edge-fer run: {stopped}, summary in {notes}"], proc.stderr
    s = json.loads(notes.read_text())
    assert s["interrupted"] and not s["started"] and s["signal"] == sig.name
    # an earlier run's summary is replaced, as a run replaces it
    proc = _interrupted_run(tmp_path, target, sig, photo, "--summary", notes, "--quiet")
    assert len(_stopped(proc, sig)) == 1 and json.loads(notes.read_text())["signal"] == sig.name


def test_a_signal_before_the_checks_never_writes_over_an_input_even_with_force(tmp_path):
    """--force lets --summary replace a foreign file, never an input: a run refuses
    `--summary PHOTO`, the interrupted start-up wrote the summary over the photo."""
    shots = tmp_path / "shots"
    shots.mkdir()
    photos = [_photo(shots / f"p{i}.png", i) for i in range(2)]
    before = [p.read_bytes() for p in photos]
    sig = signal.SIGINT
    for source, summary in ((photos[0], photos[0]), (shots, photos[1])):
        argv = [source, "--summary", summary, "--quiet", "--force"]
        lines = _stopped(_interrupted_run(tmp_path, "edge_fer.runtime.runner", sig, *argv), sig)
        assert [p.read_bytes() for p in photos] == before, f"{summary} was replaced"
        (warning,) = lines[:-1]
        assert warning.startswith(f"edge-fer: warning: --summary {summary} is the same file as "
                                  "SOURCE: an output must not overwrite an input"), warning  # fmt: skip


def test_a_signal_before_the_demo_checks_leaves_a_foreign_summary(tmp_path):
    """`run --demo --summary notes.json`, stopped before the demo's checks: notes.json was
    replaced. Now kept, and nothing of the demo's is made."""
    notes, demo = tmp_path / "notes.json", tmp_path / "demo"
    notes.write_text(FOREIGN)
    sig = signal.SIGINT
    argv = ["--demo", "--demo-dir", demo, "--summary", notes, "--quiet"]
    proc = _interrupted_run(tmp_path, "edge_fer.runtime.runner", sig, *argv)
    lines = _stopped(proc, sig)
    assert notes.read_text() == FOREIGN, "the user's file was replaced"
    (warning,) = lines[:-1]
    assert warning.startswith(f"edge-fer: warning: --summary {notes} exists and is not an ")
    assert not demo.exists()


# ---- b) the demo refuses a foreign output before it makes its clip ---------------------------


@pytest.mark.parametrize("flag", ["--events", "--summary"])
def test_demo_refuses_a_foreign_output_before_making_its_clip(flag, tiny_model, tmp_path, capsys):
    """`run --demo --events notes.txt` made the demo clip (seconds), then refused the file."""
    notes, demo = tmp_path / "notes.txt", tmp_path / "demo"
    notes.write_text("my notes\n")
    rc, out, err = run_main(["run", "--demo", "--demo-dir", demo, flag, notes, "--model",
                             tiny_model], capsys)  # fmt: skip
    assert rc == 2 and out == "", err
    assert_one_error_line(err, f"edge-fer run: error: {flag} {notes} exists and is not an "
                               "earlier run's", "pass --force")  # fmt: skip
    assert notes.read_text() == "my notes\n" and not demo.exists()  # nothing made


# ---- c) tracker and scene-cut flags on photos ------------------------------------------------

TRACKING = (
    "edge-fer: warning: {} applies to tracking across frames (a video, a live source, or images "
    "with --sequence), not to photos, each a scene of its own; ignored"
)
GIVEN = ["--iou", "0.5", "--min-hits", "3", "--max-misses", "4", "--hold", "9", "--follow", "0",
         "--follow-seconds", "1", "--follow-match", "0.8", "--smoothing", "0.5",
         "--classify-every", "2", "--scene-cut", "0"]  # fmt: skip


def _warnings(err: str) -> list[str]:
    return [ln for ln in said(err) if ln.startswith("edge-fer: warning: ")]


def test_tracker_and_scene_cut_flags_on_photos_are_said_to_be_ignored(tiny_model, tmp_path,
                                                                      capsys):  # fmt: skip
    """Photos are each a scene of their own: no track outlives one, there is no cut to find,
    and the flags for those did nothing, unsaid. Now one line each, for a folder, a glob and a
    photo; not at their defaults, not with --sequence, not on a video, and not for
    --min-track-score (a face on a photo must still clear that gate)."""
    shots = tmp_path / "shots"
    shots.mkdir()
    photo = _photo(shots / "p0.png")
    _photo(shots / "p1.png", 1)
    base = ["--model", tiny_model, "--quiet"]
    flags = [GIVEN[i] for i in range(0, len(GIVEN), 2)]
    for source in (shots, f"{shots}/*.png", photo):
        rc, _, err = run_main(["run", source, *base, *GIVEN], capsys)
        assert rc == 0 and _warnings(err) == [TRACKING.format(f) for f in flags], err
    defaults = ["--iou", "0.2", "--min-hits", "2", "--smoothing", "0.3", "--min-track-score", "0",
                "--scene-cut", "0.45"]  # fmt: skip
    clip = mjpg_avi(tmp_path / "clip.avi", 5)
    for argv in ([shots, *defaults], [shots, "--sequence", *GIVEN], [clip, *GIVEN]):
        rc, _, err = run_main(["run", *argv, *base], capsys)
        assert rc == 0 and _warnings(err) == [], err


# ---- d) the interrupted start-up refuses what the run refuses --------------------------------

EARLIER = json.dumps({"source": {}, "frames": 0, "tracks": [], "complete": True, "outputs": {}})


def _refused_outputs(case: str, tmp_path: Path) -> tuple[list, str]:
    """(argv, what the run says) of a run that refuses its outputs while its --summary,
    summary.json, is an earlier run's, which a run that took them would replace."""
    photo = _photo(tmp_path / "a.png")
    argv: list = [photo, "--summary", tmp_path / "summary.json", "--quiet"]
    if case == "the --out folder's own list as --summary":
        rdir = tmp_path / "rdir"
        rdir.mkdir()
        marker = rdir / ".edge-fer-annotated"  # image_out.MARKER: what runs wrote in rdir
        marker.write_text("")
        argv = [photo, "--out", f"{rdir}/", "--summary", marker, "--quiet", "--force"]
        return argv, (f"--summary {marker}: is the file in which --out {rdir}/ lists what runs "
                      "wrote there; give it another name")  # fmt: skip
    if case == "a foreign --events":
        notes = tmp_path / "notes.txt"
        notes.write_text("my notes\n")
        return [*argv, "--events", notes], (f"--events {notes} exists and is not an earlier "
                                            "run's events; pass --force to replace it, or give "
                                            "another name")  # fmt: skip
    if case == "an existing --out image":
        shot = _photo(tmp_path / "shot.png", 1)
        return [*argv, "--out", shot], (f"--out {shot}: exists; pass --force to replace it, or "
                                        "give another name")  # fmt: skip
    assert case == "an --out folder in no folder", case
    rdir = tmp_path / "none" / "rdir"
    return [*argv, "--out", f"{rdir}/"], f"--out {rdir}: folder {rdir.parent} does not exist"


@pytest.mark.parametrize(
    "case",
    ["the --out folder's own list as --summary", "a foreign --events", "an existing --out image",
     "an --out folder in no folder"],
)  # fmt: skip
def test_an_interrupted_start_up_refuses_what_the_run_refuses(case, tmp_path, capsys):
    """The interrupted start-up decides with the run's own output checks (run_cmd.check_outputs,
    runner.check_outputs): an existing --summary is written over only where the run would
    write it, and the warning says what the run says. Before, it restated some of them: over
    the --out folder's list (with --force), or with a foreign --events or an existing --out
    image that the run refuses, it wrote the summary."""
    argv, refused = _refused_outputs(case, tmp_path)
    summary = Path(argv[argv.index("--summary") + 1])
    if not summary.exists():
        summary.write_text(EARLIER)
    before = summary.read_bytes()
    rc, out, err = run_main(["run", *argv], capsys)
    assert rc == 2 and out == "" and said(err) == [f"edge-fer run: error: {refused}"], err
    sig = signal.SIGTERM
    lines = _stopped(_interrupted_run(tmp_path, "edge_fer.runtime.runner", sig, *argv), sig)
    warned = (
        f"edge-fer: warning: {refused} (the summary of this interrupted start-up is not written)"
    )
    assert lines[:-1] == [warned], lines
    assert summary.read_bytes() == before, "the summary was written where the run refuses"
