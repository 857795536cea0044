"""An existing video at `run --out VIDEO` or `detect --draw VIDEO` is replaced only when an
earlier edge-fer run wrote exactly that file (the record of finished videos in the cache
folder, `written_videos.json`, or the marker of its folder), or with --force. Until 2026-12-06
any file there was replaced without a word, a user's own video included.

Real files, real clips, the bundled model and cascade, `edge-fer` in this process (and once
in a child). Each test has its own cache folder ($EDGE_FER_CACHE), the compiled kernels
where they already are (NUMBA_CACHE_DIR)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from processes import assert_one_error_line, refusal_line, run_cli, run_main
from runtime_helpers import count_frames, mjpg_avi

from edge_fer.runtime.image_out import MARKER

REFUSED = "exists and is not an earlier run's video; pass --force to replace it"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """This test's own cache folder, for this process and its children (the kernels stay
    where the session found them: conftest's NUMBA_CACHE_DIR)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("EDGE_FER_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A real 160x120 MJPG clip of 20 frames."""
    return mjpg_avi(tmp_path_factory.mktemp("clip") / "clip.avi", 20)


def users_video(path: Path, frames: int = 7) -> bytes:
    """A video of the user's own (mp4v, made by OpenCV, not by edge-fer); its bytes."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10, (96, 64))
    assert w.isOpened()
    for i in range(frames):
        w.write(np.full((64, 96, 3), 30 * i % 256, np.uint8))
    w.release()
    return path.read_bytes()


def record(cache: Path) -> dict:
    return json.loads((cache / "written_videos.json").read_text())["videos"]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def run(clip: Path, out: Path, *extra) -> list:
    return ["run", clip, "--out", out, "--max-frames", "3", "--quiet", *extra]


def detect(clip: Path, out: Path, *extra) -> list:
    return ["detect", clip, "--draw", out, *extra]


# ---- a user's video -----------------------------------------------------------------------------


def test_run_out_refuses_a_users_video_before_anything_is_loaded(clip, tmp_path, cache):
    """`edge-fer run clip --out mine.mp4` over a video of the user's: one line, exit 2, the
    video's bytes as they were, nothing else written (the events and summary asked for, no
    temporary file), and before the model is loaded or the detector compiled."""
    out = tmp_path / "mine.mp4"
    before = users_video(out)
    events, summary = tmp_path / "e.jsonl", tmp_path / "s.json"
    proc = run_cli(*run(clip, out, "--events", events, "--summary", summary), cwd=tmp_path)
    line = refusal_line(proc)
    assert line == f"edge-fer run: error: --out {out} {REFUSED}, or give another name", line
    assert out.read_bytes() == before
    assert not events.exists() and not summary.exists() and leftovers(tmp_path) == []
    assert "compiling" not in proc.stderr


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_a_users_video_is_refused_by_run_and_by_detect(ext, clip, tmp_path, cache, capsys):
    """The same for `.avi`, and for `detect VIDEO --draw OUT` (a video drawn as a video); a
    link to a user's video too (its target would be replaced)."""
    out = tmp_path / f"mine{ext}"
    before = users_video(out)
    link = tmp_path / f"link{ext}"
    link.symlink_to(out)
    for argv, flag in ((run(clip, out), "--out"), (detect(clip, out), "--draw"),
                       (run(clip, link), "--out"), (detect(clip, link), "--draw")):  # fmt: skip
        rc, stdout, err = run_main(argv, capsys)
        assert rc == 2 and stdout == "", err
        assert_one_error_line(err, f"{flag} {argv[3]} {REFUSED}")
        assert out.read_bytes() == before and link.is_symlink()
    assert leftovers(tmp_path) == []


def test_force_replaces_a_users_video(clip, tmp_path, cache, capsys):
    """Refused without --force; with it, run and detect replace the file (no warning that
    --force does nothing: it applies to a video now)."""
    out = tmp_path / "mine.mp4"
    for argv in (run(clip, out), detect(clip, out)):
        before = users_video(out)
        rc, _, err = run_main(argv, capsys)
        assert rc == 2 and REFUSED in err and out.read_bytes() == before
        rc, _, err = run_main([*argv, "--force"], capsys)
        assert rc == 0 and "warning" not in err, err
        assert out.read_bytes() != before and count_frames(out) == (3 if argv[0] == "run" else 20)


# ---- an earlier run's video -----------------------------------------------------------------


def test_an_earlier_runs_video_is_replaced_and_a_changed_one_is_not(clip, tmp_path, cache, capsys):
    """What run or detect wrote is listed in the record, with its size, time, device and
    inode; a later run or detect replaces it without --force. Once the user has put a file of
    their own there (or changed it), it is theirs: refused."""
    out = tmp_path / "annotated.mp4"
    for argv in (run(clip, out), run(clip, out), detect(clip, out), run(clip, out)):
        rc, _, err = run_main(argv, capsys)
        assert rc == 0 and "warning" not in err, err
        st = out.stat()
        assert record(cache)[str(out.resolve())] == [
            st.st_size,
            st.st_mtime_ns,
            st.st_dev,
            st.st_ino,
        ]
    assert count_frames(out) == 3 and leftovers(tmp_path) == []
    # the user's own file in its place (a new inode, as a copy or an editor's save makes)
    tmp = tmp_path / "theirs.mp4"
    before = users_video(tmp)
    os.replace(tmp, out)
    for argv in (run(clip, out), detect(clip, out)):
        rc, _, err = run_main(argv, capsys)
        assert rc == 2 and REFUSED in err and out.read_bytes() == before, err
    # changed in place (the same inode)
    rc, _, err = run_main(run(clip, out, "--force"), capsys)
    assert rc == 0, err
    with open(out, "ab") as fh:
        fh.write(b"appended by the user")
    rc, _, err = run_main(run(clip, out), capsys)
    assert rc == 2 and REFUSED in err, err


def test_a_corrupt_or_foreign_record_counts_as_empty(clip, tmp_path, cache, capsys):
    """A record that is not JSON, or JSON of another shape, is no crash: nothing is taken
    for ours (a user's video is still refused), a new video is written and the record is
    written anew, listing it, so the next run replaces it."""
    cache.mkdir()
    out, mine = tmp_path / "annotated.avi", tmp_path / "mine.avi"
    before = users_video(mine)
    for bad in (b"\x00\xff not json {", b'{"videos": [1, 2]}', b"[]",
                json.dumps({"format": "edge-fer written videos", "version": 1,
                            "videos": {str(mine.resolve()): "everything"}}).encode()):  # fmt: skip
        (cache / "written_videos.json").write_bytes(bad)
        rc, _, err = run_main(run(clip, mine), capsys)
        assert rc == 2 and REFUSED in err and "Traceback" not in err, err
        assert mine.read_bytes() == before
        out.unlink(missing_ok=True)
        rc, _, err = run_main(run(clip, out), capsys)
        assert rc == 0 and "warning" not in err, err
        assert list(record(cache)) == [str(out.resolve())]
        rc, _, err = run_main(run(clip, out), capsys)
        assert rc == 0, err


def test_the_record_keeps_the_latest_thousand(clip, tmp_path, cache, capsys):
    """Bounded: a full record drops its oldest entry for the new video."""
    from edge_fer.runtime.sinks import VIDEO_RECORD_MAX

    cache.mkdir()
    old = {f"/nowhere/v{i}.mp4": [1, 2, 3, i] for i in range(VIDEO_RECORD_MAX)}
    doc = {"format": "edge-fer written videos", "version": 1, "videos": old}
    (cache / "written_videos.json").write_text(json.dumps(doc))
    out = tmp_path / "a.mp4"
    rc, _, err = run_main(run(clip, out), capsys)
    assert rc == 0, err
    kept = list(record(cache))
    assert len(kept) == VIDEO_RECORD_MAX == 1000
    assert kept[0] == "/nowhere/v1.mp4" and kept[-1] == str(out.resolve())


def test_no_frame_leaves_a_video_untouched_and_listed(clip, tmp_path, cache, capsys):
    """An earlier run's video, then a video sink that gets no frame (a live source that
    never delivers one): the video stays as it was, and the record still lists it as it is,
    so a later run still replaces it without --force."""
    from edge_fer.runtime.sinks import VideoSink

    out = tmp_path / "a.mp4"
    rc, _, err = run_main(run(clip, out), capsys)
    assert rc == 0, err
    before, listed = out.read_bytes(), record(cache)
    VideoSink(out, 25.0, (160, 120)).close()
    assert out.read_bytes() == before and record(cache) == listed and leftovers(tmp_path) == []
    rc, _, err = run_main(run(clip, out), capsys)
    assert rc == 0, err


# ---- the demo ----------------------------------------------------------------------------------


def test_the_demo_runs_again_in_its_folder_with_or_without_the_record(tmp_path, cache, capsys):
    """`edge-fer run --demo` twice in one folder: its clip and annotated video are its own
    (the record lists them, and so does the folder's marker: a record lost, or a cache that
    cannot be written, does not stop the next demo). A user's video named as its --out is
    refused before the clip is made."""
    from edge_fer.errors import UserError
    from edge_fer.runtime.demo import find_face_photo

    try:
        find_face_photo()
    except UserError as exc:
        pytest.skip(exc.message)
    demo = tmp_path / "demo"
    argv = ["run", "--demo", "--demo-dir", demo, "--max-frames", "2", "--quiet"]
    for _ in range(2):
        rc, _, err = run_main(argv, capsys)
        assert rc == 0, err
    assert set(record(cache)) == {str((demo / n).resolve()) for n in
                                  ("demo_input.mp4", "annotated.mp4")}  # fmt: skip
    (cache / "written_videos.json").unlink()  # the record lost: the marker says they are ours
    rc, _, err = run_main(argv, capsys)
    assert rc == 0, err
    (cache / "written_videos.json").write_text("garbage")
    rc, _, err = run_main(argv, capsys)
    assert rc == 0, err
    assert sorted(p.name for p in demo.iterdir()) == sorted(
        [MARKER, "demo_input.mp4", "annotated.mp4", "events.jsonl", "summary.json"]
    )
    mine = tmp_path / "mine.mp4"
    before, made = users_video(mine), (demo / "demo_input.mp4").stat().st_mtime_ns
    rc, _, err = run_main([*argv, "--out", mine], capsys)
    assert rc == 2, err
    assert_one_error_line(err, f"--out {mine} {REFUSED}")
    assert mine.read_bytes() == before and (demo / "demo_input.mp4").stat().st_mtime_ns == made
