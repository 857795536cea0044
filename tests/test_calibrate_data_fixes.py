"""`edge-fer calibrate` and `edge-fer eval` on datasets, in real child processes on real files:

- a second `calibrate` into an --out folder that another one is writing is refused at once (one
  line, exit code 2, before it reads the dataset); before, both wrote it, neither needing
  --force since each found no earlier outputs there;
- an image over 100 Mpx in a dataset is a bad entry like an undecodable one (refused naming it,
  or skipped with --skip-bad), never decoded; before, a 12000x12000 PNG of 140 KB was decoded
  (a 30000x30000 one took 1.9 GB) and joined the dataset as a face;
- --skip-bad names the files it skipped (the first ones and how many more), in the summary and
  the JSON report; before, it gave a count only.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from paths import ROOT
from processes import CLI_INTERRUPTIBLE, run_cli

CLASSES = ("angry", "happy", "sad")
HUGE = "12000x12000 pixels is over the 100 Mpx limit for images"


def _faces(root: Path, n: int) -> Path:
    """A class-folders dataset of `n` 48x48 gray faces (seeded noise) in CLASSES folders."""
    rng = np.random.default_rng(3)
    for k in range(n):
        d = root / CLASSES[k % len(CLASSES)]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"f{k:03d}.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    return root


def _png(path: Path, w: int, h: int) -> None:
    """A valid all-black 8-bit gray PNG of w x h, compressed row by row (a few hundred KB for
    144 Mpx, without ever holding the image)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    z = zlib.compressobj(9)
    row = bytes(w + 1)  # filter byte 0, then the pixels
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> bytes:
    p = tmp_path_factory.mktemp("huge") / "huge.png"
    _png(p, 12000, 12000)
    return p.read_bytes()


def _env(tmp_path: Path, name: str = "cache", **extra: str) -> dict:
    return dict(os.environ, EDGE_FER_CACHE=str(tmp_path / name), **extra)


def _one_line(p: subprocess.CompletedProcess, rc: int = 2) -> str:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == rc and len(lines) == 1, (p.returncode, p.stdout, p.stderr)
    return lines[0]


def _calibrate(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "calibrate", "--data", str(data), "--split", "all", "--samples", "60",
        "--min-faces", "20", "--target", "cpu", "--threads", "1", "--no-progress",
        "--out", str(out), *extra,
    ]  # fmt: skip


def _eval(data: Path, *extra: str) -> list[str]:
    return ["eval", "--data", str(data), "--tta", "none", "--latency-samples", "0",
            "--no-progress", *extra]  # fmt: skip


# -- two calibrations into one folder ---------------------------------------------------------


def test_a_second_calibrate_into_a_folder_being_written_is_refused_at_once(tmp_path):
    data = _faces(tmp_path / "data", 40)
    out = tmp_path / "out"
    tmp = tmp_path / "tmp"  # the first one's temporary folder: its Q/DQ model is made there
    tmp.mkdir()
    first = subprocess.Popen(
        [sys.executable, *CLI_INTERRUPTIBLE, *_calibrate(data, out)],
        cwd=ROOT,
        env=_env(tmp_path, TMPDIR=str(tmp)),
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
        second = run_cli(*_calibrate(data, out), env=_env(tmp_path, "cache2"))
        first.send_signal(signal.SIGCONT)
        line = _one_line(second)
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
    third = run_cli(*_calibrate(data, out), env=_env(tmp_path))
    assert "--force is needed to replace the earlier calibration" in _one_line(third)


# -- an image over 100 Mpx in a dataset --------------------------------------------------------


def test_eval_refuses_or_skips_an_image_over_100_mpx_naming_it(tmp_path, huge_png):
    data = _faces(tmp_path / "data", 30)
    (data / "happy" / "huge.png").write_bytes(huge_png)
    line = _one_line(run_cli(*_eval(data), env=_env(tmp_path)))
    assert f"{data / 'happy' / 'huge.png'}: {HUGE}" in line and "--skip-bad" in line, line
    rep_path = tmp_path / "rep.json"
    p = run_cli(*_eval(data, "--skip-bad", "--json", str(rep_path)), env=_env(tmp_path))
    assert p.returncode == 0, p.stderr
    assert f"skipped   happy/huge.png: {HUGE}" in p.stdout.splitlines(), p.stdout
    rep = json.loads(rep_path.read_text())
    assert rep["n"] == 30 and rep["skipped"] == 1
    assert rep["skipped_entries"] == [f"happy/huge.png: {HUGE}"]


def test_calibrate_refuses_or_skips_an_image_over_100_mpx_naming_it(tmp_path, huge_png):
    data = _faces(tmp_path / "data", 40)
    (data / "happy" / "huge.png").write_bytes(huge_png)
    (data / "sad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    out = tmp_path / "new" / "out"
    line = _one_line(run_cli(*_calibrate(data, out), env=_env(tmp_path)))
    assert f"huge.png: {HUGE}" in line and "--skip-bad" in line, line
    assert not (tmp_path / "new").exists()  # the folders made for the lock went again
    p = run_cli(*_calibrate(data, out, "--skip-bad"), env=_env(tmp_path))
    assert p.returncode == 0, p.stderr
    named = f"happy/huge.png: {HUGE}; sad/broken.png: cannot decode image"
    assert f"  skipped: {named}" in p.stdout.splitlines(), p.stdout
    calib = json.loads((out / "calib_report.json").read_text())["calibration_set"]
    assert calib["faces"] == calib["seen"] == 40
    assert calib["skipped_entries"] == named.split("; ")
    assert "huge" not in (out / "calib_ids.txt").read_text()


# -- --skip-bad names what it skipped ----------------------------------------------------------


def test_eval_skip_bad_names_the_first_skipped_files_and_counts_the_rest(tmp_path):
    data = _faces(tmp_path / "data", 30)
    bad = [f"sad/bad{k}.png" for k in range(7)]
    for name in bad:
        (data / name).write_bytes(b"not an image")
    shown = "; ".join(f"{name}: cannot decode image" for name in bad[:5]) + "; and 2 more"
    for _ in range(2):  # decoded, then from the dataset cache: named both times
        rep_path = tmp_path / "rep.json"
        p = run_cli(*_eval(data, "--skip-bad", "--json", str(rep_path)), env=_env(tmp_path))
        assert p.returncode == 0, p.stderr
        assert f"skipped   {shown}" in p.stdout.splitlines(), p.stdout
        rep = json.loads(rep_path.read_text())
        assert rep["skipped"] == 7
        assert rep["skipped_entries"] == [f"{name}: cannot decode image" for name in bad]


def test_load_dataset_keeps_the_skipped_entries_through_its_cache(tmp_path, monkeypatch):
    from edge_fer.data import load_dataset

    monkeypatch.setenv("EDGE_FER_CACHE", str(tmp_path / "cache"))
    data = _faces(tmp_path / "data", 6)
    (data / "stray.png").write_bytes((data / "sad" / "f002.png").read_bytes())
    (data / "happy" / "empty.png").write_bytes(b"")
    want = [
        "happy/empty.png: cannot decode image",
        f"stray.png: not inside a class folder (expected {data}/<class>/<image>)",
    ]
    for _ in range(2):  # built, then read back from the cache
        fs = load_dataset(data, skip_bad=True)
        assert len(fs) == 6 and fs.skipped == 2 and fs.skipped_entries == want
    assert fs.subset(fs.labels == 0).skipped_entries == want
