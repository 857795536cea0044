"""Stopping `edge-fer train-cascade` (SIGTERM, Ctrl-C), and how the command line names a
mistake (QA findings).

A stage's negative mining was one numba call (up to --max-draws windows): a signal waited for
its end, and a SIGTERM followed by a Ctrl-C during it was reported as the Ctrl-C (CPython runs
the handlers of signals that came during one call into C in signal-number order). Mining now
runs in short calls with the lane generators carried exactly, so a signal takes effect at
once and the windows are the same.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from paths import BACKGROUNDS, WEBFACES, shared
from processes import assert_one_error_line, interrupt, run_cli, spawn_cli

from edge_fer.cascade_train import bootstrap
from edge_fer.cascade_train.samples import ImageStore
from edge_fer.cli.main import CommandSignals, Interrupt, main
from edge_fer.detect import Cascade

# ---- SIGTERM during mining ------------------------------------------------------------------


def _faces_and_backgrounds(tmp: Path, nfaces: int = 20, nbg: int = 3) -> tuple[Path, Path]:
    """A box file with the faces of the first `nfaces` WebFaces images (copied, relative paths)
    and a folder of `nbg` real backgrounds."""
    from edge_fer.cascade_train.annotations import read_webfaces

    images, _ = read_webfaces(WEBFACES)
    (tmp / "images").mkdir()
    lines = []
    for im in images[:nfaces]:
        (tmp / "images" / im.path.name).write_bytes(im.path.read_bytes())
        for f in im.faces:
            x, y = f.col - f.size / 2, f.row - f.size / 2
            lines.append(f"images/{im.path.name} {x:.1f} {y:.1f} {f.size:.1f} {f.size:.1f}\n")
    boxes = tmp / "boxes.txt"
    boxes.write_text("".join(lines))
    bg = tmp / "bg"
    bg.mkdir()
    for p in sorted(BACKGROUNDS.iterdir())[:nbg]:
        (bg / p.name).write_bytes(p.read_bytes())
    return boxes, bg


def _long_mining_argv(boxes: Path, bg: Path, out: Path) -> list[str]:
    # harsh stages on 20 faces: the cascade accepts ~1e-4 of the windows after stage 4, so
    # stage 5 draws ~2e8 windows (tens of seconds in one numba call before the fix)
    return ["train-cascade", "--boxes", boxes, "--backgrounds", bg, "--out", out, "--tests", "32",
            "--depth", "4", "--stage-trees", "10", "--min-tpr", "0.9", "--max-fpr", "0.05",
            "--jitter", "20", "--neg-ratio", "5", "--max-stages", "5", "--target-fpr", "1e-9",
            "--max-draws", "1e12", "--threads", "1"]  # fmt: skip


@pytest.mark.shared("data/webfaces", "data/backgrounds")
def test_sigterm_during_mining_stops_at_once_as_a_sigterm_and_leaves_a_resumable_run(tmp_path):
    """Before: the SIGTERM waited for the end of stage 5's mining (~45 s here), and a Ctrl-C
    sent meanwhile made it "interrupted (Ctrl-C)", exit 130, the SIGTERM lost."""
    boxes, bg = _faces_and_backgrounds(tmp_path)
    out = tmp_path / "run"
    argv = _long_mining_argv(boxes, bg, out)
    proc = spawn_cli(*argv, NUMBA_NUM_THREADS="1")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not any(s.startswith("stage 4:") for s in lines):
            assert proc.poll() is None and time.monotonic() < deadline, lines
            time.sleep(0.05)
        time.sleep(1.0)  # into stage 5's mining
        assert proc.poll() is None, lines
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=4)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # the QA's impatient Ctrl-C
            proc.wait(timeout=120)
        took = time.monotonic() - sent
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert err.splitlines()[-1:] == ["edge-fer train-cascade: interrupted (SIGTERM)"], err
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert took < 4, f"stopped {took:.1f} s after the SIGTERM"
    # the run as stage 4 left it: state, cascade, nothing half-written
    assert sorted(p.name for p in out.iterdir()) == ["cascade.pico", "state.json"]
    state = json.loads((out / "state.json").read_text())
    assert state["stage"] == 4 and not state["done"]
    casc = (out / "cascade.pico").read_bytes()
    assert Cascade.load(out / "cascade.pico").ntrees == state["ntrees"]
    # --resume takes it (the time budget, spent, starts no stage: the same cascade back)
    r = run_cli(*argv, "--resume", "--time-budget", "1e-9", env=dict(os.environ,
                NUMBA_NUM_THREADS="1"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["stage"] == 4
    assert (out / "cascade.pico").read_bytes() == casc


def test_mining_draws_the_same_windows_in_calls_of_any_size():
    """The kernel stops at batch boundaries and carries each lane's generator, counts and
    burst image: one call, a batch per call, or calls timed by mine_negatives are the same."""
    rng = np.random.default_rng(4)
    store = ImageStore()
    for _ in range(4):
        store.add(rng.integers(0, 256, (100, 120), dtype=np.uint8))
    src = bootstrap.NegativeSource.build([0, 1], [2, 3], [[(50, 60, 30)], []], 0.5)
    c = Cascade(
        tdepth=3,
        codes=rng.integers(-128, 128, (6, 7, 4)),
        leaves=rng.uniform(-1, 1, (6, 8)),
        thresholds=np.full(6, 0.9),
    )
    arrs = (c.tdepth, c.codes, c.leaves, c.thresholds, c.ntrees)
    res = []
    for chunk in (1 << 40, bootstrap.RUNS_PER_BATCH, 17, 0):
        lanes = bootstrap.seed_lanes(np.random.default_rng(5))
        # few windows pass: some lanes fill their quota, others run out of draws
        win, sc, draws = bootstrap.mine_negatives(
            store.arrays(), src, arrs, lanes, 18000, 16, 1 << 20, 300_000, burst=3, chunk=chunk
        )
        res.append((win.r, win.c, win.s, win.img, win.sgn, sc, np.array([draws]), lanes))
    assert 0 < len(res[0][0]) < 18000 and res[0][6][0] >= 300_000
    for other in res[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(res[0], other))


def test_a_sigterm_then_a_ctrl_c_during_one_long_call_into_c_is_the_sigterm():
    """Both arrive while the main thread is in C (one numpy call here, a numba kernel or an
    engine build in a command): CPython then runs SIGINT's handler first. The order they came
    in is kept (the wakeup fd), so the SIGTERM is the command's signal (exit 143). They come
    0.3 s apart, both within the call (about 1 s here): two signals pending at once are
    delivered by the kernel in ascending order (SIGINT first), which no handler can undo; sent
    back to back after a 0.1 s call, the test failed so 1 run in ~20 on loaded cores."""
    signals = CommandSignals()
    signals.defer = False  # a command running
    old = {s: signal.signal(s, signals) for s in (signal.SIGINT, signal.SIGTERM)}
    signals.listen()
    a = np.ones(70_000)
    pid = os.getpid()
    sender = subprocess.Popen(
        ["sh", "-c", f"sleep 0.3; kill -TERM {pid}; sleep 0.3; kill -INT {pid}"]
    )
    try:
        with pytest.raises(Interrupt) as caught:
            np.convolve(a, a)  # in C, signals handled when it returns
            time.sleep(2)  # (a faster CPU: the call ended first, the signals come here)
    finally:
        while sender.poll() is None:  # (a SIGINT still to come must not end the session)
            try:
                sender.wait()
            except Interrupt:
                pass
        signals.close()
        for s, h in old.items():
            signal.signal(s, h)
    assert caught.value.signum == signal.SIGTERM
    assert signals.signum == signal.SIGTERM


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
    assert_one_error_line(r.stderr, "nothing to resume", "without --resume")


# ---- unknown arguments name their command --------------------------------------------------


@pytest.mark.parametrize(
    "argv, prog",
    [
        # before: "edge-fer: error: unrecognized arguments: --sidecar-only"
        (["build-engine", "model.onnx", "--sidecar-only"], "edge-fer build-engine"),
        (["train-cascade", "--out", "x", "--stages", "3"], "edge-fer train-cascade"),
        (["deploy", "triton", "--out", "x", "--zz"], "edge-fer deploy triton"),
        (["--bogus"], "edge-fer"),  # no command: the top level's
    ],
)
def test_unknown_arguments_name_the_command(capsys, argv, prog):
    with pytest.raises(SystemExit) as ended:
        main(argv)
    assert ended.value.code == 2
    extra = argv[-1] if argv[-1] != "3" else "--stages 3"
    assert capsys.readouterr().err.splitlines() == [
        f"{prog}: error: unrecognized arguments: {extra} (see {prog} --help)"
    ]
