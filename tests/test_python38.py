"""The device side runs on Python 3.8 (JetPack 5's system Python, issue #15).

Two checks: `vermin` over every module that `run`, `detect`, `classify`, `bench`,
`build-engine` and `deploy` import (static: what each line needs), and, where a Python 3.8
interpreter exists on this machine, a real install of edge-fer into a fresh 3.8 venv with the
oldest versions JetPack 5 can have (numpy 1.24, numba 0.58, onnxruntime 1.16) that then runs
those commands on real files.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from paths import ROOT, VIDEOS, shared
from processes import repo_copy, run

SHARED_CLIP = VIDEOS / "01-2.avi"

# what the device side imports (cli/main imports every command module to build its parser)
DEVICE_SIDE = [
    "edge_fer/__init__.py",
    "edge_fer/errors.py",
    "edge_fer/fileio.py",
    "edge_fer/cache.py",
    "edge_fer/classify.py",
    "edge_fer/preprocess.py",
    "edge_fer/labels.py",
    "edge_fer/tta.py",
    "edge_fer/cli",
    "edge_fer/detect",
    "edge_fer/runtime",
    "edge_fer/backends",
    "edge_fer/deploy",
    "edge_fer/export/engine.py",
    "edge_fer/export/targets.py",
    "edge_fer/quantize/__init__.py",  # build-engine --precision int8 reads calibration caches
    "edge_fer/quantize/trt_cache.py",
]


def test_device_side_needs_no_newer_python_than_3_8():
    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    if not Path(vermin).exists():
        pytest.skip("vermin is not installed (it is in the test extra)")
    paths = [str(ROOT / p) for p in DEVICE_SIDE]
    r = run([vermin, "-t=3.8-", "--no-tips", "--violations", "-q", *paths], timeout=300)
    assert r.returncode == 0, f"needs a newer Python than 3.8:\n{r.stdout}{r.stderr}"


def _python38() -> str | None:
    """A working Python 3.8 (a pyenv shim may exist for a version that is not selected)."""
    pyenv = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python")))
    is_38 = "import sys; assert sys.version_info[:2] == (3, 8)"
    for exe in [*pyenv, shutil.which("python3.8")]:
        if exe and run([exe, "-c", is_38]).returncode == 0:
            return exe
    return None


def test_device_commands_run_on_python_3_8(tmp_path):
    py38 = _python38()
    if py38 is None:
        pytest.skip("no Python 3.8 interpreter on this machine (python3.8 or pyenv 3.8.x)")
    venv = tmp_path / "venv38"
    subprocess.run([py38, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # JetPack 5's oldest: what `jetson/setup.sh` installs next to the system cv2
    deps = [
        "numpy==1.24.*",
        "numba==0.58.*",
        "onnxruntime==1.16.*",
        "opencv-python-headless>=4.7,<4.11",
    ]
    r = run(pip + deps, timeout=900)
    if r.returncode != 0:
        if "No matching distribution" in r.stderr or "Could not" in r.stderr:
            pytest.skip(f"cannot install the Python 3.8 dependencies here: {r.stderr[-300:]}")
        raise AssertionError(r.stderr[-2000:])
    src = repo_copy(tmp_path / "src")
    r = run(pip + ["--no-deps", src], timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    exe = str(venv / "bin" / "edge-fer")
    env = {**os.environ, "EDGE_FER_CACHE": str(tmp_path / "cache")}
    env.pop("NUMBA_CACHE_DIR", None)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return run([exe, *args], env=env, cwd=tmp_path, timeout=600)

    r = cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("edge-fer"), r.stderr
    # a real face-sized image through the bundled INT8 model
    import cv2
    import numpy as np

    face = (np.indices((48, 48)).sum(0) * 2 % 256).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "face.png"), face)
    r = cli("classify", str(tmp_path / "face.png"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])
    r = cli("deploy", "triton", "--out", str(tmp_path / "triton"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "triton").is_dir()
    shared("data/videos/01-2.avi")  # the video part needs ../shared
    r = cli("detect", str(SHARED_CLIP))
    assert r.returncode == 0, r.stderr
    assert "faces in" in r.stdout
    r = cli(
        "run", str(SHARED_CLIP), "--max-frames", "60", "--summary", "s.json", "--events", "e.jsonl"
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 60 and summary["frames_with_faces"] >= 50
