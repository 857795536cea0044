"""`edge-fer eval` writing its report to a device, and vocabularies given empty."""

from __future__ import annotations

import os
import stat

import pytest
from paths import fer_class_folders
from processes import run_cli

pytestmark = pytest.mark.shared("data/fer2013/train")


def test_a_report_to_a_device_makes_no_png_beside_it(tmp_path):
    """Before: --json /dev/stdout also wrote a regular file /dev/stdout.png."""
    dev = tmp_path / "null"
    try:  # a private /dev/null: the real one must never be at stake in a test
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root")
    data = fer_class_folders(tmp_path / "faces", per_class=2)
    r = run_cli("eval", "--data", data, "--tta", "none", "--latency-samples", "0", "--json", dev)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces", "null"]
    assert stat.S_ISCHR(dev.stat().st_mode) and "confusion matrix" not in r.stdout


@pytest.mark.parametrize("flag", ["--classes", "--label-set"])
def test_an_empty_vocabulary_is_a_mistake(tmp_path, flag):
    """Before: "" was taken as not given and the model's own classes were evaluated."""
    data = fer_class_folders(tmp_path / "faces", per_class=1)
    r = run_cli("eval", "--data", data, "--latency-samples", "0", flag, "")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and flag in lines[0], r.stderr
