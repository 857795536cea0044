"""Inputs a user can have that the happy path never meets: file names that are not UTF-8,
outputs named like inputs, photos too long to scan, a bad file among good ones, non-finite
option values. Each is handled in one line or processed; none may crash or overwrite a file.

The file-name cases run in child processes: before the fix OpenCV killed the process."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import processes
import pytest
from processes import run_main, said
from runtime_helpers import demo_faces_clip, make_tiny_model, plain_clip

from edge_fer.cli.main import main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def _photo(path: Path, seed: int = 0, size=(64, 80)) -> Path:
    img = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(Path(os.fsdecode(path)).suffix, img)
    assert ok
    with open(path, "wb") as fh:  # by bytes: the name may not be UTF-8
        fh.write(buf.tobytes())
    return path


def _clip(path: Path, frames: int = 6) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 72))
    assert w.isOpened()
    for i in range(frames):
        w.write(np.full((72, 96, 3), 40 + 10 * i, np.uint8))
    w.release()
    return path


def _latin1(folder: Path, name: bytes) -> Path:
    """A path in `folder` whose last part is `name` (bytes that are not UTF-8), as Python
    names it (surrogate escapes); skips where the file system refuses such names."""
    p = Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))
    try:
        with open(p, "wb"):
            pass
        os.unlink(p)
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take names that are not UTF-8")
    return p


# ---- file names that are not UTF-8 -----------------------------------------------------------


def test_images_with_non_utf8_names_are_read(tmp_path, tiny_model):
    folder = tmp_path / "shots"
    folder.mkdir()
    odd = _photo(_latin1(folder, b"caf\xe9.jpg"), 1)
    _photo(folder / "plain.jpg", 2)
    summary = tmp_path / "s.json"
    proc = processes.run_cli("run", folder, "--model", tiny_model, "--summary", summary)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(summary.read_text())
    assert s["frames"] == 2 and s["skipped_frames"] == 0
    proc = processes.run_cli("detect", odd, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["faces"] == []
    drawn = _latin1(tmp_path, b"boxes\xff.png")
    proc = processes.run_cli("detect", folder / "plain.jpg", "--draw", drawn)
    assert proc.returncode == 0, proc.stderr
    assert cv2.imdecode(np.fromfile(drawn, np.uint8), cv2.IMREAD_COLOR).shape == (64, 80, 3)


def test_video_with_non_utf8_name_is_one_line(tmp_path, tiny_model):
    clip = _latin1(tmp_path, b"clip\xff.avi")
    os.replace(_clip(tmp_path / "c.avi"), clip)
    for cmd in (("run", clip, "--model", tiny_model), ("detect", clip)):
        proc = processes.run_cli(*cmd)
        assert proc.returncode == 2, (cmd, proc.returncode, proc.stderr)
        (line,) = proc.stderr.strip().splitlines()
        assert "clip\\xff.avi: the file name is not valid UTF-8" in line


def test_error_lines_show_a_names_bytes_as_escapes(tmp_path):
    # before: Python's stderr wrote the surrogate escape, "bad\\udcffname.jpg"
    bad = _latin1(tmp_path, b"bad\xffname.jpg")
    bad.write_bytes(b"not an image")
    proc = processes.run_cli("detect", bad)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "bad\\xffname.jpg: not a readable image" in line, line


def test_annotated_video_may_have_a_non_utf8_name(tmp_path, tiny_model):
    clip = _clip(tmp_path / "c.avi")
    out = _latin1(tmp_path, b"out\xe9.avi")
    proc = processes.run_cli("run", clip, "--model", tiny_model, "--out", out)
    assert proc.returncode == 0, proc.stderr
    os.replace(out, tmp_path / "check.avi")  # OpenCV reads it back under a UTF-8 name
    cap = cv2.VideoCapture(str(tmp_path / "check.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.avi", "check.avi"]  # no leftovers


# ---- outputs that would replace inputs -------------------------------------------------------


def test_detect_never_draws_over_an_input(tmp_path, capsys):
    a = _photo(tmp_path / "a.jpg", 1)
    before = a.read_bytes()
    assert main(["detect", str(a), "--draw", str(a)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must not overwrite an input" in err[0]
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    b1, b2 = _photo(tmp_path / "x" / "p.jpg", 2), _photo(tmp_path / "y" / "p.jpg", 3)
    out = tmp_path / "drawn"
    assert main(["detect", str(b1), str(b2), "--draw", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would both be drawn there" in err[0]
    assert main(["detect", str(a), str(b1), "--draw", str(tmp_path)]) == 2  # a.jpg itself
    assert "must not overwrite an input" in capsys.readouterr().err
    assert a.read_bytes() == before and not out.exists()  # not even made
    assert main(["detect", str(a), "--draw", str(tmp_path / "none" / "d.png")]) == 2
    assert "does not exist" in capsys.readouterr().err  # before any detection


def test_bench_never_saves_over_its_inputs(tmp_path, tiny_model, capsys):
    clip = _clip(tmp_path / "c.avi")
    before = clip.read_bytes()
    for target, words in ((clip, "SOURCE"), (tiny_model, "--model")):
        rc = main(["bench", str(clip), "--model", str(tiny_model), "--json", str(target)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and words in err[0], err
    assert clip.read_bytes() == before
    for flag in ("--frames", "--queue-size"):
        rc = main(["bench", "--synthetic", "160x120", flag, "0", "--json", str(tmp_path / "b")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and err == [f"edge-fer bench: error: {flag} must be >= 1, got 0"]


# ---- one bad input among good ones -----------------------------------------------------------


def test_detect_reports_a_bad_image_and_goes_on(tmp_path, capsys):
    good1, good2 = _photo(tmp_path / "g1.png", 1), _photo(tmp_path / "g2.png", 2)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    rc = main(["detect", str(good1), str(bad), str(good2), "--json"])
    out, err = capsys.readouterr()
    assert rc == 1  # skipped, the others processed (docs/runtime.md, Photos)
    assert [json.loads(x)["path"] for x in out.splitlines()] == [str(good1), str(good2)]
    line, last = err.strip().splitlines()
    assert line.startswith(f"edge-fer detect: warning: {bad}: ") and line.endswith("; skipped")
    assert last.startswith("edge-fer detect: error: 1 of 3 inputs could not be used")


def test_photos_too_long_to_scan(tmp_path, tiny_model, capsys):
    """A 17000 px panorama is skipped and reported; a 50x5000 strip is scanned (its upscale for
    detection is held within the frame limits, which once stopped the whole folder)."""
    folder = tmp_path / "shots"
    folder.mkdir()
    _photo(folder / "a_normal.png", 1)
    cv2.imwrite(str(folder / "b_panorama.png"), np.zeros((40, 17000), np.uint8))
    cv2.imwrite(str(folder / "c_strip.png"), np.zeros((5000, 50), np.uint8))
    _photo(folder / "d_normal.png", 2)
    summary = tmp_path / "s.json"
    rc = main(["run", str(folder), "--model", str(tiny_model), "--summary", str(summary)])
    err = capsys.readouterr().err
    assert rc == 1, err  # the panorama skipped, the others processed
    s = json.loads(summary.read_text())
    assert s["frames"] == 3 and s["source"]["skipped_files"] == 1
    (skip,) = s["source_errors"]
    assert "b_panorama.png" in json.dumps(skip) and "17000x40" in json.dumps(skip)
    rc = main(["detect", str(folder / "b_panorama.png"), str(folder / "c_strip.png"), "--json"])
    out, err = capsys.readouterr()
    assert rc == 1 and len(out.splitlines()) == 1 and "16384 px a side" in err


def test_video_frames_over_the_scan_limit_are_one_line_naming_the_source(tmp_path, capsys):
    """A 16400x16 clip: `run` and `bench` failed with the detector's own words naming its
    parameter (`gray is a frame of 16400x16, too large ...`); now one line naming the source,
    as `detect` says it, at start-up: existing outputs untouched."""
    wide = plain_clip(tmp_path / "wide.avi", (16400, 16), 3, fps=10)
    events = tmp_path / "e.jsonl"
    events.write_text('{"old": 1}\n')  # not an earlier run's events: --force lets it be replaced
    why = "frames of 16400x16 pixels are over the 16384 px a side that can be scanned"
    rc, _, err = run_main(["run", wide, "--events", events, "--force"], capsys)
    assert rc == 2 and err.splitlines() == [f"edge-fer run: error: source {wide}: {why}"], err
    assert events.read_text() == '{"old": 1}\n'
    rc, _, err = run_main(["bench", wide, "--json", tmp_path / "b.json"], capsys)
    assert rc == 2 and err.splitlines() == [f"edge-fer bench: error: source {wide}: {why}"], err
    assert not (tmp_path / "b.json").exists()
    rc, _, err = run_main(["detect", wide], capsys)
    assert rc == 2 and said(err) == [f"edge-fer detect: error: {wide}: {why}"], err


# ---- option values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--min-track-score", "nan"),
        ("--min-track-score", "inf"),
        ("--follow-seconds", "inf"),
        ("--scene-cut", "inf"),
        ("--summary-every", "inf"),
        ("--reconnect-timeout", "nan"),  # before: reconnected forever
        ("--reconnect-timeout", "-1"),
        ("--upscale-to", "-1"),  # before: taken as 0
    ],
)
def test_non_finite_and_negative_options_are_one_line(tmp_path, tiny_model, capsys, flag, value):
    clip = _clip(tmp_path / "c.avi")
    summary = tmp_path / "s.json"
    argv = ["run", str(clip), "--model", str(tiny_model), "--summary", str(summary), flag, value]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"edge-fer run: error: {flag} must be"), line
    assert not summary.exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["run", "x.mp4", "--hold", "zz"], "argument --hold: invalid int value: 'zz'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["detect"], "the following arguments are required"),
        (["classify", "x.png", "--top", "0"], "--top must be >= 1, got 0"),
        (["run", "x.mp4", "--detect-threads", "-1"], "--detect-threads: expected a number of"),
        # before: 10000 threads were started (an eval drove the load average to 5000)
        (["eval", "--threads", "10000"], "--threads: expected a number of threads in 0..256"),
        (["run", "x.mp4", "--threads", "x"], "--threads: expected a number of threads"),
        # before: "edge-fer: error: unrecognized arguments: b.jpg c.jpg"
        (["run", "a.jpg", "b.jpg", "c.jpg"], "takes one SOURCE, and 2 more were given (b.jpg"),
        (["run", "a.jpg", "--bogus"], "unrecognized arguments: --bogus"),
        # before: "source 'x.mp4': fps must be in (0, 1000], got 0.0" (not the flag's name)
        (["run", "x.mp4", "--input-rate", "0"], "argument --input-rate: must be in (0, 1000]"),
        (["bench", "x.mp4", "--input-width", "0"], "argument --input-width: must be in 1..16384"),
        (["run", "x.mp4", "--input-flip", "up"], "argument --input-flip: must be one of none,"),
        # before: an empty output name wrote nothing, silently; classify "" read the whole cwd;
        # bench --json - made a file named "-", --frames had no bound (a clip filling the disk)
        (["run", "x.mp4", "--events", ""], "argument --events: is empty"),
        (["run", "x.mp4", "--out", " "], "argument --out: is empty"),
        (["classify", ""], "an empty IMAGE name"),
        (["bench", "--synthetic", "64x48", "--json", "-"], "--json -: the table goes to"),
        (["bench", "--synthetic", "64x48", "--frames", "99999999"], "--frames must be <= 100,000"),
        # before: an IsADirectoryError traceback, and an opset refused only after the training
        (["eval", "--data", "/", "--layout", "fer2013-csv"], "/: a folder; the fer2013-csv"),
        # before: "iou (the overlap that groups windows) must be ...", not the flag
        (["run", "/dev/null", "--cluster-iou", "nan"], "--cluster-iou must be in [0, 1), got nan"),
        (["eval-detector", "--boxes", "b.txt", "--fppi", "-1"], "--fppi rates must be > 0"),
        (["eval-detector", "--boxes", "b.txt", "--limit", "-1"], "--limit must be >= 0"),
        (["eval-detector", "--data", "d", "--val-fraction", "2"], "--val-fraction must be in"),
        (["qat", "--data", "/", "--out", "/nonexistent/q", "--opset", "999"], "--opset must be in"),
    ],
)
def test_usage_mistakes_are_one_line(capsys, argv, words):
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own checks
        rc = exc.code
    assert rc == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert words in line


def test_input_flags_a_video_file_does_not_read_are_said_to_be_ignored(tmp_path, tiny_model,
                                                                       capsys):  # fmt: skip
    # before: --input-rate / --input-width on a video file were dropped without a word
    clip = _clip(tmp_path / "c.avi")
    argv = ["run", str(clip), "--model", str(tiny_model), "--quiet", "--max-frames", "2"]
    assert main([*argv, "--input-rate", "10", "--input-width", "640"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"edge-fer: warning: {f} does not apply to a video file (it plays at its own size and "
        "rate); ignored"
        for f in ("--input-width", "--input-rate")
    ]
    assert main([*argv]) == 0 and capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return demo_faces_clip(tmp_path_factory.mktemp("clip") / "faces.avi", 24)


def test_flags_that_would_be_ignored_are_refused_or_warned(clip, tmp_path, capsys):
    """`bench SOURCE --frames 50` ran the whole file (--frames shapes --synthetic clips only),
    `run --json --quiet` printed the JSON, `run SOURCE --demo-dir D` ignored D, `run clip
    --sequence` ignored --sequence: all silently."""
    saved = tmp_path / "b.json"  # (not the default, in the working folder, on old code)
    rc, _, err = run_main(["bench", clip, "--frames", "5", "--json", saved], capsys)
    line = (
        "edge-fer bench: error: --frames applies to --synthetic only; --max-frames N limits the "
        "frames of SOURCE"
    )
    assert rc == 2 and err.splitlines() == [line], err
    rc, _, err = run_main(["bench", clip, "--faces", "3", "--json", saved], capsys)
    assert rc == 2 and err.splitlines() == [
        "edge-fer bench: error: --faces applies to --synthetic only"
    ], err
    assert not saved.exists()
    rc, out, err = run_main(["run", clip, "--json", "--quiet"], capsys)
    assert (
        rc == 2
        and out == ""
        and err.splitlines()
        == [
            "edge-fer run: error: --json prints the summary and --quiet prints none: give one of them"
        ]
    ), err
    rc, _, err = run_main(["run", clip, "--demo-dir", tmp_path / "d"], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "--demo-dir applies to --demo" in err, err
    assert not (tmp_path / "d").exists()
    rc, _, err = run_main(["run", clip, "--sequence", "--quiet", "--max-frames", "3"], capsys)
    assert rc == 0
    line = (
        "edge-fer: warning: --sequence applies to images (a folder, glob or photo), not to a "
        "video file; ignored"
    )
    assert said(err) == [line], err


def test_library_thread_counts_are_bounded(tiny_model):
    from edge_fer.backends.onnxruntime_backend import OnnxRuntimeBackend
    from edge_fer.errors import UserError

    for bad in (10_000, -1, 2.5):
        with pytest.raises(UserError, match="threads must be an integer in 0..256"):
            OnnxRuntimeBackend(tiny_model, threads=bad)
    OnnxRuntimeBackend(tiny_model, threads=np.int64(1)).close()


def test_classify_refuses_an_oversized_image_from_its_header(tmp_path, capsys):
    # before: decoded whatever its size (a 30000x30000 PNG took 1.9 GB), and a header alone
    # gave libpng's own "Not enough image data"
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    assert main(["classify", str(huge)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "20000x20000 pixels is over the 100 Mpx limit" in line, line


def test_run_options_no_run_can_use_are_named():
    """pace=1e-9 waited ~31 years between frames; max_frames=2.5 or NaN ran unbounded."""
    from edge_fer.errors import UserError
    from edge_fer.runtime.runner import RunOptions, check_run_options

    for name, bad in (("pace", 1e-9), ("pace", -5.0), ("pace", float("nan")), ("pace", 1e6)):
        with pytest.raises(UserError, match=r"must be in \[0.01, 1000\]") as e:
            check_run_options(RunOptions(source="x.mp4", **{name: bad}))
        assert e.value.param == "pace"
    for bad in (2.5, float("nan"), True, -1):
        with pytest.raises(UserError, match="must be an integer >= 0") as e:
            check_run_options(RunOptions(source="x.mp4", max_frames=bad))
        assert e.value.param == "max_frames"
    check_run_options(RunOptions(source="x.mp4", pace=30.0, max_frames=0))
    # strings and None where numbers and option objects go: bare TypeError / AttributeError
    for name, bad in (("scene_cut", "0.5"), ("pace", "10"), ("summary_every", "1"),
                      ("reconnect_timeout", None), ("detector", None), ("tracker", {})):  # fmt: skip
        with pytest.raises(UserError) as e:
            check_run_options(RunOptions(source="x.mp4", **{name: bad}))
        assert e.value.param == name, name
    # rewritten into standard output, the summary became several JSON documents in a row
    with pytest.raises(UserError, match="needs a file to rewrite") as e:
        check_run_options(RunOptions(source="x.mp4", summary="/dev/stdout", summary_every=1.0))
    assert e.value.param == "summary_every"


def test_file_outputs_named_as_folders_and_a_zero_scale_step_are_refused(tmp_path, capsys,
                                                                         monkeypatch):  # fmt: skip
    """--events DIR/, --summary DIR/ and bench --json DIR/ wrote a file named DIR; --scale-factor
    0 ran (with another step than unset) while 1 was refused; a failed bench made
    benchmarks/results/ in the current folder."""
    import cv2

    monkeypatch.chdir(tmp_path)
    cv2.imwrite("a.png", np.full((64, 64), 128, np.uint8))
    for argv, words in (
        (["run", "a.png", "--events", "newdir/"], "events file newdir/: names a folder"),
        (["run", "a.png", "--summary", "newdir/"], "names a folder"),
        (["bench", "a.png", "--json", "newdir/"], "--json newdir/: names a folder"),
        (["run", "a.png", "--scale-factor", "0"], "--scale-factor must be in [1.001, 10], got 0"),
        (["detect", "a.png", "--scale-factor", "0"], "--scale-factor must be in [1.001, 10]"),
        (["bench", "nosuch.avi"], "nosuch.avi"),
    ):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
        assert rc == 2, argv
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert words in line, (argv, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_dataset_under_a_folder_whose_name_is_not_utf8_loads(tmp_path) -> None:
    """The dataset cache's fingerprint encoded folder names as UTF-8: a folder named in other
    bytes anywhere under --data was a UnicodeEncodeError traceback."""
    import cv2

    from edge_fer.data import load_dataset

    root = tmp_path / "faces"
    for cls in ("happy", "sad"):
        (root / cls).mkdir(parents=True)
        cv2.imwrite(str(root / cls / "a.png"), np.full((48, 48), 100, np.uint8))
    odd = os.fsdecode(os.fsencode(str(root / "happy")) + b"/x\xff")
    os.mkdir(odd)
    faces = load_dataset(str(root), "all", size=48, cache=True)
    assert len(faces) == 2


@pytest.mark.shared("data/fer2013/test/happy")
def test_a_fifo_named_like_an_image_is_reported_not_waited_on(tmp_path) -> None:
    """classify, eval and calibrate --data opened a FIFO named b.jpg and waited for ever; run
    and detect already said "not a regular file". Child processes with a timeout, so that the
    old behaviour fails this test instead of hanging the run."""
    import subprocess

    from paths import fer_files
    from processes import run_cli

    data = tmp_path / "data"
    for cls in ("happy", "sad"):
        (data / cls).mkdir(parents=True)
        for i, f in enumerate(fer_files(cls, "PrivateTest", 2)):
            shutil.copy(f, data / cls / f"PrivateTest_{i}.jpg")
    os.mkfifo(data / "happy" / "PrivateTest_b.jpg")
    try:
        p = run_cli("classify", data / "happy", timeout=60)
        assert p.returncode == 1 and "not a regular file" in p.stderr, p.stderr  # skipped
        assert p.stdout.count("happy") >= 2  # the other faces were classified
        p = run_cli("eval", "--data", data, "--split", "private-test", timeout=60)
        assert p.returncode == 2 and "PrivateTest_b.jpg" in p.stderr, p.stderr
        p = run_cli("eval", "--data", data, "--split", "private-test", "--skip-bad",
                    "--tta", "none", "--json", "-", timeout=60)  # fmt: skip
        assert p.returncode == 0, p.stderr
    except subprocess.TimeoutExpired:
        pytest.fail("a command waited on the FIFO")


def test_events_to_a_redirected_stdout_keep_what_else_went_there(tmp_path) -> None:
    """`{ echo HEADER; edge-fer run ... --events -; echo TRAILER; } > out.txt`: "-" was
    reopened as /dev/stdout, a second offset into out.txt, so the trailer overwrote the
    events and the events the header's neighbours. Now the descriptor itself is written."""
    import json
    import subprocess
    import sys

    from processes import CLI

    pytest.importorskip("matplotlib", reason="the demo portrait comes from matplotlib")
    from edge_fer.runtime.demo import demo_frames, load_face_photo

    face, _ = load_face_photo()
    photo = tmp_path / "p.jpg"
    cv2.imwrite(str(photo), next(iter(demo_frames(face, size=(320, 240), fps=25.0, seconds=0.2))))
    out = tmp_path / "out.txt"
    with open(out, "w") as fh:
        fh.write("HEADER\n")
        fh.flush()
        # 2>&1 as well: the text summary and notices share the file with the events
        p = subprocess.run([sys.executable, *CLI, "run", str(photo), "--events", "-"],
                           stdout=fh, stderr=fh, timeout=120, check=False)  # fmt: skip
        assert p.returncode == 0, out.read_text()
        fh.write("TRAILER\n")
    lines = out.read_text().splitlines()
    assert lines[0] == "HEADER" and lines[-1] == "TRAILER", lines
    events = [json.loads(ln) for ln in lines if ln.startswith("{")]
    assert len(events) == 1 and events[0]["frame"] == 0 and events[0]["faces"], lines
    assert any(ln.startswith("frames") for ln in lines), lines  # the text summary, whole


@pytest.mark.shared("data/fer2013/test/happy")
def test_hidden_files_in_a_dataset_are_left_out(tmp_path) -> None:
    """eval and calibrate --data read hidden files, which classify, detect and run skip: a
    .thumbs/ folder was refused as an unknown class, and macOS's ._NAME.jpg stubs as
    undecodable images (calibrate took a thumbnail as a face)."""
    from paths import fer_files

    from edge_fer.data import load_dataset

    data = tmp_path / "data"
    for cls in ("happy", "sad"):
        (data / cls).mkdir(parents=True)
        for i, f in enumerate(fer_files(cls, "PrivateTest", 3)):
            shutil.copy(f, data / cls / f"img{i}.jpg")
    (data / ".thumbs").mkdir()
    shutil.copy(data / "happy" / "img0.jpg", data / ".thumbs" / "x.jpg")
    (data / "happy" / "._img0.jpg").write_bytes(b"\0\5\26\7 AppleDouble")
    fs = load_dataset(data, "all")
    assert len(fs.ids) == 6 and not any("/." in f"/{i}" for i in fs.ids), fs.ids


@pytest.mark.shared("data/fer2013/test/happy")
def test_a_folder_named_like_an_image_is_a_folder(tmp_path, capsys) -> None:
    """classify DIR printed "DIR/a.jpg: no images in this folder" (exit 2) for a sub-folder
    named a.jpg right after classifying the faces inside it."""
    from paths import fer_files

    from edge_fer.cli.main import main

    inner = tmp_path / "faces" / "a.jpg"
    inner.mkdir(parents=True)
    for i, f in enumerate(fer_files("happy", "PrivateTest", 2)):
        shutil.copy(f, inner / f"f{i}.jpg")
    assert main(["classify", str(tmp_path / "faces")]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.count("\n") == 2, (out, err)


def test_pipeline_max_frames_events_numbers_and_source_sizes(tmp_path) -> None:
    """Pipeline(max_frames=-5) ran without a bound and 2.5 read 3 frames; an events record
    with a numpy score was a TypeError; open_source(width=inf) an OverflowError."""
    from edge_fer.errors import UserError
    from edge_fer.runtime.pipeline import Pipeline
    from edge_fer.runtime.sinks import EventsSink
    from edge_fer.runtime.sources import check_option

    for bad in (-5, 2.5, True):
        with pytest.raises(UserError) as e:
            Pipeline(object(), None, max_frames=bad)  # type: ignore[arg-type]
        assert e.value.param == "max_frames", bad
    sink = EventsSink(tmp_path / "e.jsonl")
    sink.write({"frame": np.int64(3), "score": np.float32(1.5)})
    sink.close()
    assert (tmp_path / "e.jsonl").read_text() == '{"frame":3,"score":1.5}\n'
    with pytest.raises(UserError) as e:
        check_option("width", float("inf"))
    assert e.value.param == "width"
