"""`edge-fer run` end to end: real video, real cascade (../shared), a tiny real ONNX model."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from processes import interrupt, spawn_cli
from runtime_helpers import ROOT, count_frames, make_tiny_model, mjpg_avi, read_jsonl, shared

from edge_fer.cli.main import main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="module")
def cascade() -> Path:
    return shared("reference/pico/facefinder")


def _run(argv, capsys=None) -> tuple[int, str, str]:
    """`edge-fer ARGV` (paths or strings) in this process: (exit code, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    if capsys is None:
        return rc, "", ""
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _run_on(source, cascade, model, *flags, capsys=None) -> tuple[int, str, str]:
    """`edge-fer run SOURCE --cascade CASCADE --model MODEL FLAGS...` (paths or strings)."""
    argv = ["run", source, "--cascade", cascade, "--model", model, *flags]
    return _run(argv, capsys)


def test_run_end_to_end_on_shared_video(tmp_path, tiny_model, cascade, capsys):
    video = shared("data/videos/00-1.avi")
    out, events, summary = tmp_path / "a.mp4", tmp_path / "e.jsonl", tmp_path / "s.json"
    outputs = ["--out", out, "--events", events, "--summary", summary]
    rc, stdout, _ = _run_on(video, cascade, tiny_model, *outputs, capsys=capsys)
    assert rc == 0
    assert "frames   228" in stdout and "track 1" in stdout
    lines = read_jsonl(events)
    assert 150 <= len(lines) <= 228
    frames = [ln["frame"] for ln in lines]
    assert frames == sorted(set(frames)) and 0 <= frames[0] and frames[-1] <= 227
    face = lines[len(lines) // 2]["faces"][0]
    assert set(face) >= {"track", "box", "score", "label", "conf", "probs"}
    assert len(face["box"]) == 4 and face["label"] in face["probs"]
    assert sum(face["probs"].values()) == pytest.approx(1.0, abs=1e-3)
    assert lines[10]["t"] == pytest.approx(lines[10]["frame"] / 20.0, abs=1e-3)
    assert count_frames(out) == 228
    s = json.loads(summary.read_text())
    assert s["frames"] == 228 and s["complete"] and not s["interrupted"]
    from edge_fer.runtime.runner import default_detect_threads

    assert s["detect_threads"] == default_detect_threads()  # the threads used, recorded
    assert s["source"]["fps"] == 20.0 and s["frames_with_faces"] == len(lines)
    assert s["faces"] == sum(len(ln["faces"]) for ln in lines)
    assert s["track_count"] >= 1 and s["tracks"][0]["dominant"] in s["classes"]
    assert s["tracks"][0]["frames"] > 150  # the one steady face keeps its track
    for stage in ("decode", "detect", "track", "crop", "classify", "sinks"):
        assert s["stage_ms"][stage]["n"] == 228 and s["stage_ms"][stage]["p99"] is not None
    assert s["fps"] > 0 and s["latency_ms"]["p50"] > 0
    assert s["outputs"] == {"video": str(out), "events": str(events), "summary": str(summary)}


REFERENCE = ROOT / "benchmarks" / "data" / "nrc_iit_faces.json"


def _score_clip(name: str, tmp_path: Path, **kw) -> dict:
    """Run a clip; score its events against the reference face boxes (found rate, id switches)."""
    from edge_fer.runtime.runner import RunOptions, run_video
    from edge_fer.runtime.track_eval import load_reference, score_single_face

    events = tmp_path / f"{name}.jsonl"
    opts = RunOptions(source=str(shared(f"data/videos/{name}")), events=str(events), **kw)
    run_video(opts, handle_signals=False)
    return score_single_face(read_jsonl(events), load_reference(REFERENCE)[name])


def test_reference_boxes_cover_every_frame():
    from edge_fer.runtime.track_eval import load_reference

    ref = load_reference(REFERENCE)
    for name in ("00-1.avi", "01-2.avi"):
        assert len(ref[name]) == count_frames(shared(f"data/videos/{name}"))
        assert (ref[name][:, 2] >= 30).all() and (ref[name][:, 2] <= 80).all()


def test_facefinder_finds_and_holds_the_face_in_shared_clips(tmp_path, tiny_model, cascade):
    """facefinder (linear upscaling for it, its 'auto'): the person's face (IoU >= 0.3 with the
    reference) on most frames, under one track id."""
    for name, floor in (("00-1.avi", 0.90), ("01-2.avi", 0.80)):
        r = _score_clip(name, tmp_path, model=str(tiny_model), cascade=str(cascade))
        print(name, r)  # measured: 00-1 0.952 found, 01-2 0.872; one id each
        assert r["found_rate"] >= floor and r["id_switches"] == 0, (name, r)


# measured with the defaults (benchmarks/bench_tracking.py; the face verifier behind
# face_lowres.pico): 00-1 0.991 found, 1 id, 0.00 other boxes per frame; 01-2 0.957, 1 id, 0.02.
# The floors are issue #5's target (0.90 of the frames, no id switch).
BUNDLED_FLOORS = (("00-1.avi", 0.90, 1), ("01-2.avi", 0.90, 1))


def test_bundled_defaults_on_low_resolution_clips(tmp_path):
    """Bundled model and cascades, default options: the 160x120 clips get face_lowres.pico,
    scanned at their own resolution; the face is found and keeps (nearly) one id."""
    for name, floor, max_ids in BUNDLED_FLOORS:
        r = _score_clip(name, tmp_path)
        print(name, r)
        assert r["found_rate"] >= floor and len(r["face_track_ids"]) <= max_ids, (name, r)
        assert r["id_switches"] == 0 and r["other_per_frame"] <= 0.2, (name, r)


def test_low_resolution_sources_get_the_lowres_cascade(tmp_path, tiny_model):
    from edge_fer.detect import cascade_settings, lowres_cascade_path
    from edge_fer.runtime.runner import RunOptions, run_video

    low = lowres_cascade_path()
    assert low is not None and cascade_settings(low)["upscale_to"] == 0
    s = run_video(
        RunOptions(source=str(shared("data/videos/00-1.avi")), model=str(tiny_model), max_frames=5),
        handle_signals=False,
    ).summary
    assert Path(s["cascade"]).name == "face_lowres.pico"
    assert s["detector"]["upscale_to"] == 0 and s["detector"]["threshold"] == 10.0
    assert s["detector"]["scale_factor"] == 1.05 and s["tracker"]["min_score"] is None
    assert Path(s["verifier"]["path"]).name == "face_verify.onnx"  # in place of the score gate
    assert s["detector"]["grouping"] == "greedy" and s["detector"]["cluster_iou"] == 0.15
    # options override the cascade's grouping settings
    opts = RunOptions(
        source=str(shared("data/videos/00-1.avi")), model=str(tiny_model), max_frames=5
    )
    opts.detector.grouping, opts.detector.cluster_iou = "chain", 0.3
    s = run_video(opts, handle_signals=False).summary
    assert s["detector"]["grouping"] == "chain" and s["detector"]["cluster_iou"] == 0.3
    # an explicit cascade is always kept
    ff = shared("reference/pico/facefinder")
    s = run_video(
        RunOptions(
            source=str(shared("data/videos/00-1.avi")),
            model=str(tiny_model),
            cascade=str(ff),
            max_frames=5,
        ),
        handle_signals=False,
    ).summary
    assert Path(s["cascade"]) == ff and s["detector"]["upscale_to"] == 240
    assert s["detector"]["grouping"] == "chain" and s["detector"]["cluster_iou"] == 0.3


def test_unwritable_output_is_one_line_exit_2(tmp_path, tiny_model, cascade, capsys):
    video = shared("data/videos/00-1.avi")
    (tmp_path / "afile").write_text("x")
    for flag, path in (
        ("--out", tmp_path / "no" / "such" / "dir" / "a.mp4"),
        ("--events", tmp_path / "afile" / "e.jsonl"),
        ("--out", tmp_path / "a.xyz"),
    ):
        rc, _out, err = _run_on(video, cascade, tiny_model, flag, path, capsys=capsys)
        assert rc == 2, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("edge-fer run: error:")
        assert "Traceback" not in err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_is_a_clear_error(tiny_model, cascade, capsys):
    video = shared("data/videos/00-1.avi")
    rc, _, err = _run_on(video, cascade, tiny_model, "--events", "/dev/full", capsys=capsys)
    assert rc == 2 and "the disk is full" in err and len(err.strip().splitlines()) == 1


def test_missing_source_and_cascade_messages(tmp_path, tiny_model, capsys):
    rc, _, err = _run_on(tmp_path / "nope.mp4", tmp_path / "c", tiny_model, capsys=capsys)
    assert rc == 2 and "cascade" in err
    from edge_fer.detect import default_cascade_path

    if default_cascade_path() is None:
        rc, _, err = _run(["run", "--demo", "--demo-dir", str(tmp_path / "d")], capsys)
        assert rc == 2 and "pass --cascade" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _run_on(
        tmp_path / "nope.mp4", shared("reference/pico/facefinder"), tiny_model, capsys=capsys
    )
    assert rc == 2 and "no such file" in err


def test_truncated_video_processes_what_decodes_and_exits_1(tmp_path, tiny_model, cascade, capsys):
    data = shared("data/videos/00-1.avi").read_bytes()
    bad = tmp_path / "cut.avi"
    bad.write_bytes(data[: len(data) // 2])
    events = tmp_path / "e.jsonl"
    rc, _, err = _run_on(bad, cascade, tiny_model, "--events", events, "--quiet", capsys=capsys)
    assert rc == 1 and "truncated" in err
    lines = read_jsonl(events)
    assert lines and lines[-1]["frame"] < 228


def test_demo_writes_every_output(tmp_path, tiny_model, cascade, capsys):
    pytest.importorskip("matplotlib", reason="the demo photo comes from matplotlib")
    d = tmp_path / "demo"
    argv = ["run", "--demo", "--demo-dir", d, "--cascade", cascade, "--model", tiny_model]
    rc, _out, err = _run(argv, capsys)
    assert rc == 0, err
    assert count_frames(d / "demo_input.mp4") == 100 == count_frames(d / "annotated.mp4")
    s = json.loads((d / "summary.json").read_text())
    assert s["frames"] == 100 and s["frames_with_faces"] >= 90
    steady = [t for t in s["tracks"] if t["frames"] >= 90]
    assert len(steady) == 2  # two faces, one id each all along
    assert len(read_jsonl(d / "events.jsonl")) == s["frames_with_faces"]


def test_demo_on_bundled_defaults(tmp_path, capsys):
    """The README's main command: no cascade, no model given; the bundled ones run."""
    pytest.importorskip("matplotlib", reason="the demo photo comes from matplotlib")
    d = tmp_path / "demo"
    rc, _out, err = _run(["run", "--demo", "--demo-dir", str(d), "--quiet"], capsys)
    assert rc == 0, err
    s = json.loads((d / "summary.json").read_text())
    assert s["frames"] == 100 and s["frames_with_faces"] >= 90
    steady = [t for t in s["tracks"] if t["frames"] >= 90]
    assert len(steady) == 2
    assert all(t["dominant"] in s["classes"] for t in steady)


def test_mjpeg_preview_serves_frames_on_localhost():
    from edge_fer.runtime.preview import MJPEGPreview

    p = MJPEGPreview(0)
    try:
        assert p.host == "127.0.0.1"
        p.write(np.full((40, 60, 3), 128, np.uint8))
        base = f"http://127.0.0.1:{p.port}"
        assert b"/stream" in urllib.request.urlopen(base + "/", timeout=5).read()
        jpg = urllib.request.urlopen(base + "/frame.jpg", timeout=5).read()
        img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (40, 60, 3)
    finally:
        p.close()


def test_sigint_leaves_valid_closed_outputs(tmp_path, tiny_model, cascade):
    """Ctrl-C to a real `edge-fer run` process: exit 130, outputs complete and decodable."""
    src = shared("data/videos/00-1.avi")
    long_clip = tmp_path / "long.avi"  # 00-1 four times over: long enough to interrupt
    cap = cv2.VideoCapture(str(src))
    frames = []
    while (r := cap.read())[0]:
        frames.append(r[1])
    w = cv2.VideoWriter(str(long_clip), cv2.VideoWriter_fourcc(*"MJPG"), 20, (160, 120))
    for _ in range(6):
        for f in frames:
            w.write(f)
    w.release()
    out, events, summary = tmp_path / "a.avi", tmp_path / "e.jsonl", tmp_path / "s.json"
    argv = ["run", long_clip, "--cascade", cascade, "--model", tiny_model, "--scale-factor", "1.05"]
    argv += ["--out", out, "--events", events, "--summary", summary]
    proc = spawn_cli(*argv, NUMBA_NUM_THREADS="1")
    err = interrupt(proc, signal.SIGINT, lambda: events.exists() and events.stat().st_size > 2000)
    assert proc.returncode == 130, err
    s = json.loads(summary.read_text())
    assert s["interrupted"] and not s["complete"] and 0 < s["frames"] < 6 * 228
    lines = read_jsonl(events)  # every line complete JSON
    assert len(lines) == s["frames_with_faces"]
    assert count_frames(out) == s["frames"]  # the video was finalised, every frame in it


def test_bench_synthetic_table_and_json(tmp_path, tiny_model, cascade, capsys):
    pytest.importorskip("matplotlib", reason="the synthetic clip's faces come from matplotlib")
    out = tmp_path / "bench.json"
    argv = ["bench", "--synthetic", "320x240", "--frames", "45", "--faces", "1"]
    argv += ["--cascade", cascade, "--model", tiny_model, "--json", out]
    rc, stdout, _ = _run(argv, capsys)
    assert rc == 0 and "onnxruntime" in stdout and "lat p99" in stdout and "warm p99" in stdout
    r = json.loads(out.read_text())
    ort = next(x for x in r["results"] if x["backend"] == "onnxruntime")
    assert ort["available"] and ort["frames"] == 45 and ort["fps"] > 0
    assert ort["latency_ms"]["p99"] is not None and ort["latency_at_fps"] == 30.0
    # fed at 30 frames/s: the frames from the 31st on arrive a second or more after the first;
    # on a loaded machine reads run late and more of them do, but never the first
    warm = ort["latency_warm_ms"]
    assert 14 <= warm["n"] <= 44 and warm["max"] <= ort["latency_ms"]["max"], warm
    assert set(ort["stage_ms"]) == {"decode", "detect", "track", "crop", "classify", "sinks"}
    assert {x["backend"] for x in r["results"]} == {"onnxruntime", "tensorrt"}
    from edge_fer.machine import cpu_name

    # the CPU the figures belong to, by its model name (not just "x86_64")
    assert r["machine"]["cpu"] == cpu_name() and f"cpu    {cpu_name()}, " in stdout
    # no more frames made than read (before: --max-frames 1 made every frame first: hours at
    # 8K with --frames 100000)
    argv = ["bench", "--synthetic", "320x240", "--frames", "100000", "--max-frames", "3",
            "--cascade", cascade, "--model", tiny_model, "--json", out]  # fmt: skip
    rc, _, err = _run(argv, capsys)
    r = json.loads(out.read_text())
    assert rc == 0 and r["synthetic"]["frames"] == 3, err


def test_single_photo_and_folder_are_stills(tmp_path, tiny_model, cascade, capsys):
    """A photo gives its faces at once (no memory, no track birth delay); ids are per photo."""
    photo = shared("data/webfaces/images/pic00001.jpg")
    events = tmp_path / "one.jsonl"
    rc, _, err = _run_on(photo, cascade, tiny_model, "--events", events, "--quiet", capsys=capsys)
    assert rc == 0, err
    lines = read_jsonl(events)
    assert len(lines) == 1 and lines[0]["frame"] == 0 and len(lines[0]["faces"]) >= 1
    folder = tmp_path / "photos"
    folder.mkdir()
    img = cv2.imread(str(photo))
    for i in range(3):
        cv2.imwrite(str(folder / f"p{i}.png"), img)
    events = tmp_path / "three.jsonl"
    rc, _, _ = _run_on(folder, cascade, tiny_model, "--events", events, "--quiet", capsys=capsys)
    lines = read_jsonl(events)
    assert rc == 0 and [ln["frame"] for ln in lines] == [0, 1, 2]
    ids = [f["track"] for ln in lines for f in ln["faces"]]
    assert len(ids) == len(set(ids))  # a new id in every photo


@pytest.mark.parametrize(
    "flag,value", [("--max-misses", "-1"), ("--min-hits", "0"), ("--iou", "1.5"), ("--hold", "-3")]
)
def test_bad_tracker_options_are_one_line_errors(flag, value, tiny_model, cascade, capsys):
    rc, _, err = _run_on(
        shared("data/videos/00-1.avi"), cascade, tiny_model, flag, value, capsys=capsys
    )
    assert rc == 2 and err.startswith(f"edge-fer run: error: {flag} must be "), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("field", ["trt_precision", "calib_cache"])
def test_tensorrt_only_options_need_the_tensorrt_backend(field, tmp_path):
    from edge_fer.errors import UserError
    from edge_fer.runtime.runner import RunOptions, load_classifier, run_video

    value = "fp16" if field == "trt_precision" else str(tmp_path / "c.cache")
    # checked before the source is looked at (it does not exist) or a model is loaded
    opts = RunOptions(source=str(tmp_path / "missing.avi"), **{field: value})
    with pytest.raises(UserError, match=f"^{field} needs the TensorRT backend$"):
        run_video(opts, handle_signals=False)
    with pytest.raises(UserError, match=f"^{field} needs the TensorRT backend$"):
        load_classifier(None, "onnxruntime", **{field: value})


def test_the_summary_records_the_detector_threads_used(tmp_path, tiny_model, capsys):
    # before: "detect_threads" was the number asked for, while numba ran at most its pool's
    import numba

    pool = int(numba.config.NUMBA_NUM_THREADS)
    summary = tmp_path / "s.json"
    argv = ["run", mjpg_avi(tmp_path / "c.avi", 3), "--model", tiny_model, "--quiet",
            "--detect-threads", pool + 1, "--summary", summary]  # fmt: skip
    rc, _, err = _run(argv, capsys)
    assert rc == 0, err
    s = json.loads(summary.read_text())
    assert s["detect_threads"] == pool and s["detect_threads_requested"] == pool + 1
    assert f"--detect-threads {pool + 1}: numba runs at most {pool} threads" in err


def test_a_signal_whose_exception_was_lost_in_start_up_stops_the_run(tmp_path, tiny_model):
    """Raised inside a library's callback (numba's, importlib's), the guard's Interrupted was
    swallowed there ("Exception ignored in ..."): the run then went on to the end, exit 0,
    "interrupted": false. The guard recorded the signal; the run must not start."""
    from edge_fer.runtime.pipeline import Interrupted, SignalGuard
    from edge_fer.runtime.runner import RunOptions, run_video

    out, summary = tmp_path / "a.avi", tmp_path / "s.json"
    out.write_bytes(b"old video")  # not an earlier run's: force, or the run refuses it
    opts = RunOptions(source=str(mjpg_avi(tmp_path / "c.avi", 3)), model=str(tiny_model),
                      out=str(out), summary=str(summary), force=True)  # fmt: skip
    with SignalGuard() as guard:
        try:
            signal.raise_signal(signal.SIGTERM)  # a real signal, through the guard's handler
        except Interrupted:
            pass  # lost, as a callback's exception is
        result = run_video(opts, signals=guard)
    assert result.exit_code == 143
    s = json.loads(summary.read_text())
    assert s["interrupted"] and not s["started"] and s["signal"] == "SIGTERM"
    assert s["frames"] == 0
    assert out.read_bytes() == b"old video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.avi", "c.avi", "s.json"]
