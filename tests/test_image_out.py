"""`run --out` as annotated images (edge_fer.runtime.image_out): a folder of photos of different
sizes keeps each photo's size (a video letterboxed them to the first one's), one photo gives one
image, and no file of the user's is replaced.

Real photos: the demo portrait (matplotlib's sample) at two sizes, the bundled models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_fer.cli.main import main
from edge_fer.runtime.image_out import MARKER, planned_names


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three photos of the demo portrait: 320x240, 640x480 and a .pgm 400x300."""
    pytest.importorskip("matplotlib", reason="the demo portrait comes from matplotlib")
    from edge_fer.runtime.demo import demo_frames, load_face_photo

    face, _ = load_face_photo()
    d = tmp_path_factory.mktemp("photos")
    for name, size in (("a.jpg", (320, 240)), ("b.png", (640, 480)), ("c.pgm", (400, 300))):
        frame = next(iter(demo_frames(face, size=size, fps=25.0, seconds=0.2)))
        if name.endswith(".pgm"):
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        assert cv2.imwrite(str(d / name), frame)
    return d


def _run(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_a_folder_of_photos_is_annotated_photo_by_photo(photos, tmp_path, capsys):
    out = tmp_path / "annotated"
    summary = tmp_path / "s.json"
    argv = ["run", str(photos), "--out", f"{out}/", "--summary", str(summary), "--quiet"]
    rc, _, err = _run(argv, capsys)
    assert rc == 0, err
    made = sorted(p.name for p in out.iterdir())
    assert made == [MARKER, "a.jpg", "b.png", "c.png"]  # .pgm: a colour copy as .png
    for src, dst in (("a.jpg", "a.jpg"), ("b.png", "b.png"), ("c.pgm", "c.png")):
        shape = cv2.imread(str(photos / src)).shape[:2]
        annotated = cv2.imread(str(out / dst))
        assert annotated.shape[:2] == shape  # its own size: not letterboxed to the first photo
        assert not np.array_equal(annotated, cv2.imread(str(photos / src)))  # boxes drawn
    s = json.loads(summary.read_text())
    assert s["outputs"]["annotated"] == str(out) and s["faces"] >= 3
    # which annotated file is which photo's (names may gain _2 or another extension)
    made_from = {Path(f["path"]).name: Path(f["annotated"]).name for f in s["images"]}
    assert made_from == {"a.jpg": "a.jpg", "b.png": "b.png", "c.pgm": "c.png"}
    assert all(Path(f["annotated"]).parent == out for f in s["images"])
    # an earlier run's folder (its marker) is written again
    rc, _, err = _run(argv, capsys)
    assert rc == 0, err


def test_events_and_summary_may_go_into_the_new_out_folder(photos, tmp_path, capsys):
    """`--out NEW/ --summary NEW/s.json` was refused ("folder NEW does not exist") though run
    makes NEW first; another missing folder still is refused."""
    out = tmp_path / "new"
    argv = ["run", str(photos), "--out", f"{out}/", "--summary", str(out / "s.json"),
            "--events", str(out / "e.jsonl"), "--quiet"]  # fmt: skip
    rc, _, err = _run(argv, capsys)
    assert rc == 0, err
    assert json.loads((out / "s.json").read_text())["faces"] >= 3
    assert len((out / "e.jsonl").read_text().splitlines()) == 3
    # listed in the marker, so a second run may write the folder again
    rc, _, err = _run(argv, capsys)
    assert rc == 0, err
    other = tmp_path / "other"
    argv = ["run", str(photos), "--out", f"{tmp_path / 'new2'}/", "--summary",
            str(other / "s.json"), "--quiet"]  # fmt: skip
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and "does not exist" in err and not other.exists()
    assert not (tmp_path / "new2").exists()


def test_a_reused_folder_holds_this_runs_images_only(photos, tmp_path, capsys):
    """Two photos into the folder of an earlier run of three: the third photo's annotated copy
    stayed beside them, and the marker grew with every run."""
    out = tmp_path / "annotated"
    argv = ["run", str(photos), "--out", f"{out}/", "--summary", str(out / "s.json"), "--quiet"]
    assert _run(argv, capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "a.jpg", "b.png", "c.png", "s.json"]
    two = f"{photos}/[ab].*"
    rc, _, err = _run(["run", two, "--out", f"{out}/", "--summary", str(out / "s.json"),
                       "--quiet"], capsys)  # fmt: skip
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "a.jpg", "b.png", "s.json"]
    assert sorted(ln.split("\t")[0] for ln in (out / MARKER).read_text().splitlines()) == [
        "a.jpg", "b.png", "s.json"
    ]  # fmt: skip
    # and the folder is still one a run may write again
    assert _run(argv, capsys)[0] == 0


def test_one_photo_gives_one_image_and_a_video_needs_a_folder(photos, tmp_path, capsys):
    one = tmp_path / "one.png"
    rc, _, err = _run(["run", str(photos / "b.png"), "--out", str(one), "--quiet"], capsys)
    assert rc == 0, err
    assert cv2.imread(str(one)).shape[:2] == (480, 640)
    clip = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for _ in range(4):
        w.write(cv2.imread(str(photos / "a.jpg")))
    w.release()
    for source, what in ((photos, "photos"), (clip, "frames")):
        rc, _, err = _run(["run", str(source), "--out", str(tmp_path / "x.jpg")], capsys)
        assert rc == 2 and err.count("\n") == 1, err
        assert f"one image holds one photo's faces; for the {what} of" in err
        assert not (tmp_path / "x.jpg").exists()
    frames = tmp_path / "frames"
    rc, _, err = _run(["run", str(clip), "--out", f"{frames}/", "--quiet"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in frames.iterdir()) == [MARKER] + [
        f"frame_{i:06d}.jpg" for i in range(4)
    ]
    # an events or summary file under a frame's name was written over (or wrote over it)
    for flag in ("--events", "--summary"):
        argv = ["run", str(clip), "--out", f"{frames}/", flag, str(frames / "frame_000002.jpg")]
        rc, _, err = _run(argv, capsys)
        assert rc == 2 and err.count("\n") == 1 and "writes the video's frames" in err, err


def test_annotated_images_never_replace_the_users_files(photos, tmp_path, capsys):
    # the photos' own folder, and a folder of other files: refused before any work
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    rc, _, err = _run(["run", str(photos), "--out", str(photos), "--quiet"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "--out" in err, err
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.jpg").write_bytes(b"my own photo")
    rc, _, err = _run(["run", str(photos), "--out", str(mine), "--quiet"], capsys)
    assert rc == 2 and "holds other files; give a new or empty folder" in err, err
    assert (mine / "a.jpg").read_bytes() == b"my own photo"
    assert sorted(p.name for p in mine.iterdir()) == ["a.jpg"]


def test_an_earlier_runs_folder_with_a_file_put_into_it_is_refused(photos, tmp_path, capsys):
    # the marker lists what runs wrote; before, any file in a marked folder was written over
    out = tmp_path / "annotated"
    events, summary = out / "events.jsonl", out / "summary.json"
    argv = ["run", str(photos), "--out", f"{out}/", "--quiet"]
    rc, _, err = _run(argv, capsys)
    assert rc == 0, err
    # the run's own events and summary in the folder are its own too: the folder stays reusable
    more = argv + ["--events", str(events), "--summary", str(summary)]
    for _ in range(2):
        rc, _, err = _run(more, capsys)
        assert rc == 0, err
    assert events.stat().st_size > 0 and summary.stat().st_size > 0
    (out / "b.png").unlink()
    (out / "b.png").write_bytes(b"my own picture")  # the user's, under a name a run writes
    (out / "notes.txt").write_text("mine")
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert "b.png, notes.txt came from elsewhere or changed since" in err, err
    assert (out / "b.png").read_bytes() == b"my own picture"


def test_no_output_named_like_anything_replaces_a_photo_through_a_link(photos, tmp_path, capsys):
    """A summary or events file linked (symbolic or hard) to one of the photos: the photos were
    listed for the collision check only when an output was named like an image."""
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    (tmp_path / "s.json").symlink_to(photos / "a.jpg")
    os.link(photos / "b.png", tmp_path / "e.jsonl")
    for flag, out in (("--summary", "s.json"), ("--events", "e.jsonl")):
        rc, _, err = _run(["run", str(photos), flag, str(tmp_path / out), "--quiet"], capsys)
        assert rc == 2 and err.count("\n") == 1 and flag in err and "SOURCE" in err, err
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before


def test_names_that_repeat_get_a_number():
    names = planned_names(["p/x.jpg", "q/x.jpg", "q/X.JPG", "r/y.ppm"], "out")
    assert [str(v) for v in names.values()] == [
        "out/x.jpg",
        "out/x_2.jpg",
        "out/X_3.JPG",
        "out/y.png",
    ]


def test_annotated_frames_to_standard_output_or_a_device(photos, capsys):
    # before: "unsupported container (none); use ... or -/ for a folder", a folder named "-"
    for out in ("-", "/dev/null"):
        rc, _, err = _run(["run", str(photos), "--out", out, "--quiet"], capsys)
        assert rc == 2 and err.count("\n") == 1, err
        assert "is a device, pipe or standard output" in err and f"{out}/" not in err, err


def test_the_marker_is_never_written_through_a_link_nor_named_as_an_output(
    photos, tmp_path, capsys
):
    # before: a marker linked to a file outside had the run's names appended to that file
    precious = tmp_path / "precious.txt"
    precious.write_text("my notes\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / MARKER).symlink_to(precious)
    rc, _, err = _run(["run", str(photos), "--out", f"{linked}/", "--quiet"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "is a link or not a plain file" in err, err
    assert precious.read_text() == "my notes\n" and sorted(os.listdir(linked)) == [MARKER]
    # before: the summary replaced the marker, and the next run refused the folder
    out = tmp_path / "out"
    out.mkdir()
    for flag in ("--summary", "--events"):
        argv = ["run", str(photos), "--out", f"{out}/", flag, str(out / MARKER), "--quiet"]
        rc, _, err = _run(argv, capsys)
        assert rc == 2 and err.count("\n") == 1 and f"{flag} " in err and "lists what" in err


def test_a_photo_whose_name_is_not_utf8_is_annotated(photos, tmp_path, capsys):
    # before: the whole run stopped ("'utf-8' codec can't encode") when listing it
    src = tmp_path / "odd"
    src.mkdir()
    odd = os.fsdecode(b"bad\xff.jpg")
    (src / odd).write_bytes((photos / "a.jpg").read_bytes())
    (src / "ok.jpg").write_bytes((photos / "a.jpg").read_bytes())
    out = tmp_path / "annotated"
    argv = ["run", str(src), "--out", f"{out}/", "--quiet"]
    for _ in range(2):  # and the folder is reused
        rc, _, err = _run(argv, capsys)
        assert rc == 0, err
    assert sorted(os.listdir(out)) == sorted([MARKER, odd, "ok.jpg"])


def test_a_write_begun_keeps_the_file_ours(tmp_path):
    # a run stopped between writing a file and recording its size and time: the bare name
    # (written before the file) keeps it ours; a recorded write that no longer matches does not
    from edge_fer.errors import UserError
    from edge_fer.runtime.image_out import check_folder, written_names

    (tmp_path / "a.jpg").write_bytes(b"new annotation")
    (tmp_path / MARKER).write_text("a.jpg\t3\t1\na.jpg\n")
    assert written_names(tmp_path) == {"a.jpg": None}
    check_folder(tmp_path)
    (tmp_path / MARKER).write_text("a.jpg\n" + "a.jpg\t3\t1\n")
    with pytest.raises(UserError, match="a.jpg came from elsewhere or changed since"):
        check_folder(tmp_path)


def test_an_image_out_is_named_as_one(photos, tmp_path, capsys):
    # before: "video .../pic.jpg: folder ... does not exist" for an annotated image
    out = tmp_path / "nodir" / "pic.jpg"
    rc, _, err = _run(["run", str(photos / "a.jpg"), "--out", str(out), "--quiet"], capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert f"annotated image {out}: folder" in err and "video" not in err, err


def test_links_to_nothing_and_pipes_named_like_photos_are_reported(photos, tmp_path, capsys):
    # before: left out of the folder's files without a word; a single one was "no such file"
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.jpg").write_bytes((photos / "a.jpg").read_bytes())
    (src / "dead.jpg").symlink_to(tmp_path / "nothing")
    (src / "loop.jpg").symlink_to("loop.jpg")
    os.mkfifo(src / "pipe.jpg")
    summary = tmp_path / "s.json"
    rc, _, err = _run(["run", str(src), "--summary", str(summary), "--quiet"], capsys)
    assert rc == 1, err  # skipped, the others processed
    errors = json.loads(summary.read_text())["source_errors"]
    assert len(errors) == 3 and all(e.endswith("; skipped") for e in errors), errors
    assert any("pipe.jpg: not a regular file" in e for e in errors), errors
    for name, why in (("pipe.jpg", "not a regular file"), ("dead.jpg", "a link to nothing")):
        rc, _, err = _run(["run", str(src / name), "--quiet"], capsys)
        assert rc == 2 and err.count("\n") == 1 and why in err, err


def test_one_image_does_not_replace_an_existing_file_without_force(photos, tmp_path, capsys):
    # before: --out shot.jpg replaced the user's photo of that name without a word (a folder
    # refuses files it did not write; one image had no such check)
    mine = tmp_path / "mine.jpg"
    mine.write_bytes(b"my own photo")
    argv = ["run", str(photos / "a.jpg"), "--out", str(mine), "--quiet"]
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert f"--out {mine}: exists; pass --force to replace it" in err
    assert mine.read_bytes() == b"my own photo"
    rc, _, err = _run([*argv, "--force"], capsys)
    assert rc == 0, err
    assert cv2.imread(str(mine)).shape[:2] == (240, 320)
    # --force does not let an output replace an input
    rc, _, err = _run(["run", str(photos / "a.jpg"), "--out", str(photos / "a.jpg"), "--force"],
                      capsys)  # fmt: skip
    assert rc == 2 and "an output must not overwrite an input" in err, err


def test_a_folder_another_run_writes_is_refused(tmp_path):
    """Two runs into one folder at once: their images mixed, and the first to end removed the
    other's as an earlier run's (the folder is locked while a run writes it)."""
    from edge_fer.errors import UserError
    from edge_fer.runtime.image_out import AnnotatedImages

    first = AnnotatedImages(folder=tmp_path / "out")
    first.write(np.zeros((48, 64, 3), np.uint8), index=0)
    with pytest.raises(UserError, match="another edge-fer run is writing this folder"):
        AnnotatedImages(folder=tmp_path / "out")
    first.close()
    second = AnnotatedImages(folder=tmp_path / "out")  # free again once the first has ended
    second.close()
    assert (tmp_path / "out" / "frame_000000.jpg").is_file()


def test_a_killed_runs_half_written_image_is_its_own(tmp_path):
    """kill -9 within an image's write left `.frame_000203.jpg.PID.THREAD.tmp`, and the folder
    was refused from then on as holding a file from elsewhere."""
    from edge_fer.runtime.image_out import AnnotatedImages, check_folder

    out = tmp_path / "out"
    out.mkdir()
    (out / "frame_000000.jpg").write_bytes(b"x")
    (out / MARKER).write_text("frame_000000.jpg\nframe_000001.jpg\n")  # 1: a write begun
    temp = out / ".frame_000001.jpg.4242.140000.tmp"
    temp.write_bytes(b"half")
    check_folder(out)
    sink = AnnotatedImages(folder=out)
    assert not temp.exists()  # removed: no live run writes a locked folder
    sink.close()
    # a hidden file of the user's of another name is still refused
    (out / ".notes.4242.1.tmp").write_bytes(b"mine")
    from edge_fer.errors import UserError

    with pytest.raises(UserError, match=".notes.4242.1.tmp came from elsewhere"):
        check_folder(out)


def test_photo_names_with_tabs_and_line_breaks_keep_their_folder_reusable(photos, tmp_path, capsys):
    """The marker is one line per name, fields split at tabs: a photo named `a<TAB>b.jpg` or
    with a newline or U+2028 was read back as another name, so the run's own folder was
    refused the next time ("a<TAB>b.jpg came from elsewhere"), in a message that a newline in
    the name broke into two lines."""
    import shutil

    src = tmp_path / "odd"
    src.mkdir()
    names = ["a\tb.jpg", "new\nline.jpg", "ls\u2028sep.jpg", "back\\slash.jpg"]
    for name in names:
        shutil.copy(photos / "a.jpg", src / name)
    out = tmp_path / "annotated"
    argv = ["run", str(src), "--out", f"{out}/", "--quiet"]
    for _ in range(2):
        rc, _, err = _run(argv, capsys)
        assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, *names])
    (out / "new\nline.jpg").write_bytes(b"the user's now")  # changed since: refused, one line
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert "'new\\nline.jpg' came from elsewhere or changed since" in err, err
