"""What `run` keeps of the files already there: an earlier run's events and summary in an
annotated-images folder (the tidy-up removes that run's images only), a file given as
--events or --summary that is not an earlier run's (refused without --force, as `bench --json`
and `run --out IMAGE` refuse), and a tiny video for MJPG (refused before the writer, which
crashed the process, is opened)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import cv2
import numpy as np
from paths import random_photos, shared
from processes import assert_one_error_line, run_cli, run_main, said
from runtime_helpers import plain_clip

from edge_fer.runtime.image_out import MARKER

PHOTOS = ("pic00001.jpg", "pic00002.jpg", "pic00005.jpg")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _marker_names(folder: Path) -> list[str]:
    return sorted(ln.split("\t")[0] for ln in (folder / MARKER).read_text().splitlines() if ln)


# ---- an annotated folder keeps the earlier run's events and summary ----------------------------


def test_a_rerun_into_an_annotated_folder_keeps_the_earlier_events_and_summary(tmp_path, capsys):
    """QA: `run photos --out ann3/ --events ann3/events.jsonl --summary ann3/summary.json`,
    then `run photos --out ann3/`: the second run's tidy-up deleted the first run's events and
    summary (exit 0, not a word). It removes the earlier run's images only."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copy(shared(f"data/webfaces/images/{name}"), photos / name)
    ann = tmp_path / "ann3"
    events, summary = ann / "events.jsonl", ann / "summary.json"
    first = ["run", photos, "--out", f"{ann}/", "--events", events, "--summary", summary]
    rc, _, err = run_main([*first, "--quiet"], capsys)
    assert rc == 0, err
    assert events.stat().st_size > 0 and json.loads(summary.read_text())["frames"] == 3
    kept = {p: _digest(p) for p in (events, summary)}

    rc, _, err = run_main(["run", photos, "--out", f"{ann}/", "--quiet"], capsys)
    assert rc == 0 and said(err) == [], err
    assert sorted(os.listdir(ann)) == sorted([MARKER, *PHOTOS, "events.jsonl", "summary.json"])
    assert {p: _digest(p) for p in kept} == kept
    # a run of some of the photos: the others' annotated copies go, the events and summary stay
    rc, _, err = run_main(["run", photos / PHOTOS[0], "--out", f"{ann}/", "--quiet"], capsys)
    assert rc == 0 and said(err) == [], err
    assert sorted(os.listdir(ann)) == sorted([MARKER, PHOTOS[0], "events.jsonl", "summary.json"])
    assert {p: _digest(p) for p in kept} == kept
    assert _marker_names(ann) == sorted([PHOTOS[0], "events.jsonl", "summary.json"])
    # still an earlier run's folder, and its events and summary are replaced by a run that
    # writes them again
    rc, _, err = run_main([*first, "--quiet"], capsys)
    assert rc == 0, err
    assert sorted(os.listdir(ann)) == sorted([MARKER, *PHOTOS, "events.jsonl", "summary.json"])
    assert json.loads(summary.read_text())["frames"] == 3


def test_an_older_marker_that_lists_the_events_bare_keeps_them(tmp_path):
    """A marker written before the events and summary were listed as such names them bare, as
    it names an image whose write began: the tidy-up removed them with the stale images."""
    from edge_fer.runtime.image_out import AnnotatedImages, planned_names, written_names

    out = tmp_path / "ann"
    out.mkdir()
    (out / "old.jpg").write_bytes(b"an earlier run's image")
    st = (out / "old.jpg").stat()
    (out / "events.jsonl").write_text('{"frame": 0, "t": 0.0, "faces": []}\n')
    (out / "summary.json").write_text('{"frames": 1}\n')
    (out / "demo.mp4").write_bytes(b"a demo's clip, with its size and time")
    clip = (out / "demo.mp4").stat()
    (out / MARKER).write_text(
        f"old.jpg\t{st.st_size}\t{st.st_mtime_ns}\nevents.jsonl\nsummary.json\n"
        f"begun.jpg\ndemo.mp4\t{clip.st_size}\t{clip.st_mtime_ns}\n"
    )
    (out / "begun.jpg").write_bytes(b"an image whose write began")
    photo = str(tmp_path / "new.jpg")
    sink = AnnotatedImages(folder=out, names=planned_names([photo], out))
    sink.write(np.zeros((16, 16, 3), np.uint8), photo)
    sink.close()
    assert sorted(os.listdir(out)) == sorted(
        [MARKER, "new.jpg", "events.jsonl", "summary.json", "demo.mp4"]
    )
    assert (out / "events.jsonl").read_text() == '{"frame": 0, "t": 0.0, "faces": []}\n'
    assert set(written_names(out) or {}) == {"new.jpg", "events.jsonl", "summary.json", "demo.mp4"}
    # listed, so the folder is still one a run may write again
    sink = AnnotatedImages(folder=out, names=planned_names([photo], out))
    sink.close()


# ---- --events and --summary replace an earlier run's file only ---------------------------------


def test_events_and_summary_replace_an_earlier_runs_file_only(tmp_path, capsys):
    """`run --events MYREADME.md --summary notes.json` replaced both without a word, where
    `bench --json` and `run --out IMAGE` refuse a file of the user's without --force."""
    photo = random_photos(tmp_path / "in", bad=False) / "a.png"
    readme, notes = tmp_path / "MYREADME.md", tmp_path / "notes.json"
    readme.write_text("# my project\n\nnotes I keep\n")
    notes.write_text('{"mine": [1, 2, 3]}\n')
    bench = tmp_path / "bench.json"  # JSON of edge-fer's, but not a run's summary
    bench.write_text('{"machine": {}, "detector": {}, "results": []}\n')
    before = {p: _digest(p) for p in (readme, notes, bench)}
    video = tmp_path / "v.mp4"
    cases = [
        (["--events", readme, "--summary", notes], "--events", readme, "events"),
        (["--summary", notes], "--summary", notes, "summary"),
        (["--out", video, "--summary", bench], "--summary", bench, "summary"),
        (["--events", notes], "--events", notes, "events"),
    ]
    for flags, flag, path, what in cases:
        rc, out, err = run_main(["run", photo, *flags, "--quiet"], capsys)
        assert rc == 2 and out == "", err
        assert_one_error_line(err)
        assert err == (
            f"edge-fer run: error: {flag} {path} exists and is not an earlier run's {what}; "
            "pass --force to replace it, or give another name\n"
        )
    assert {p: _digest(p) for p in before} == before  # checked before anything was opened
    assert sorted(os.listdir(tmp_path)) == sorted(["in", "MYREADME.md", "notes.json", "bench.json"])

    # an earlier run's events and summary are replaced: a run's own, and a line as runs write
    events, summary = tmp_path / "e.jsonl", tmp_path / "s.json"
    rc, _, err = run_main(["run", photo, "--summary", summary, "--quiet"], capsys)
    assert rc == 0, err
    events.write_text('{"frame":3,"t":0.12,"faces":[{"track":1,"box":[1,2,3,4]}]}\n')
    rc, _, err = run_main(["run", photo, "--events", events, "--summary", summary, "--quiet"],
                          capsys)  # fmt: skip
    assert rc == 0, err
    assert "[1,2,3,4]" not in events.read_text()  # this run's lines (none: a photo of noise)
    assert json.loads(summary.read_text())["frames"] == 1
    # with --force, any file
    rc, _, err = run_main(["run", photo, "--events", readme, "--summary", notes, "--force",
                           "--quiet"], capsys)  # fmt: skip
    assert rc == 0, err
    assert "notes I keep" not in readme.read_text() and json.loads(notes.read_text())["frames"] == 1
    # an empty file and a device are written as before
    empty = tmp_path / "empty.json"
    empty.touch()
    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # as /dev/null
    except (PermissionError, AttributeError):
        device = tmp_path / "e2.jsonl"
        device.touch()
    rc, _, err = run_main(["run", photo, "--events", device, "--summary", empty, "--quiet"], capsys)
    assert rc == 0, err
    assert json.loads(empty.read_text())["frames"] == 1


# ---- a video too small for MJPG ------------------------------------------------------------------


def test_a_video_too_small_for_mjpg_is_one_line_not_a_crash(tmp_path):
    """A 4x4 or 5x5 video with `--out x.avi` aborted the process inside OpenCV's MJPG writer
    (`free(): invalid next size (fast)`), leaving `.x.avi.PID.tmp.avi` behind. Run in a child:
    a crash must not take the tests with it. OpenCV's writers round an odd size down (a 5x5
    clip comes out 4x4): 5x5 frames come from photos."""
    clip = plain_clip(tmp_path / "tiny4.mp4", (4, 4), 5, "mp4v")
    photos = tmp_path / "photos5"
    photos.mkdir()
    for i in range(2):
        assert cv2.imwrite(str(photos / f"p{i}.png"), np.full((5, 5, 3), 90 * i, np.uint8))
    out = tmp_path / "o.avi"
    for cmd, size in (
        (["run", clip, "--out", out], "4x4"),
        (["detect", clip, "--draw", out], "4x4"),  # detect draws a video through VideoSink too
        (["run", photos, "--out", out], "5x5"),
    ):
        proc = run_cli(*cmd, timeout=300)
        assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
        line = (
            f"edge-fer {cmd[0]}: error: video {out}: frames of {size} are too small for the MJPG "
            "encoder of .avi (it needs at least 8x8); use .mp4 (mp4v)"
        )
        assert "Traceback" not in proc.stderr and said(proc.stderr) == [line], proc.stderr
        assert sorted(os.listdir(tmp_path)) == ["photos5", "tiny4.mp4"]  # no video, no temp file
    # as it says: .mp4 takes them
    proc = run_cli("run", clip, "--out", tmp_path / "o.mp4", "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cap = cv2.VideoCapture(str(tmp_path / "o.mp4"))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 5
    cap.release()
