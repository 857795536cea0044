"""Committed benchmark results record no local absolute paths: `benchmarks/common.portable`
(used by `save_json`) rewrites them, and every JSON under benchmarks/results passes the check."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import portable, save_json


def test_paths_in_the_checkout_and_the_shared_data_become_relative(tmp_path, capsys):
    doc = {
        "model": str(ROOT / "edge_fer" / "assets" / "fer_default.onnx"),
        "data": [str(ROOT.parent / "shared" / "data" / "fer2013"), 3, None],
        "root": str(ROOT),
        "elsewhere": "/opt/models/x.onnx",  # not ours to rewrite: a user's own file
        "nested": {"t": (str(ROOT / "runs"), "plain text")},
    }
    assert portable(doc) == {
        "model": "edge_fer/assets/fer_default.onnx",
        "data": ["../shared/data/fer2013", 3, None],
        "root": ".",
        "elsewhere": "/opt/models/x.onnx",
        "nested": {"t": ["runs", "plain text"]},
    }
    save_json(tmp_path / "r.json", doc)
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(portable(doc)))
    assert "saved" in capsys.readouterr().out


def test_temporary_and_home_paths_are_written_as_variables():
    tmp = Path(tempfile.gettempdir())
    doc = {"out": str(tmp / "bench_int8.abc" / "model.onnx"), "tmp": str(tmp)}
    doc["home"] = str(Path.home() / "models" / "m.onnx")
    assert portable(doc) == {
        "out": "$TMPDIR/bench_int8.abc/model.onnx",
        "tmp": "$TMPDIR",
        "home": "~/models/m.onnx",
    }


def test_committed_results_hold_no_local_paths():
    here = (str(ROOT), str(ROOT.parent / "shared"))
    for p in sorted((ROOT / "benchmarks" / "results").rglob("*.json")):
        text = p.read_text()
        assert not any(h in text for h in here), p.name
        assert not any(f'"/{d}/' in text for d in ("work", "home", "root", "tmp")), p.name
