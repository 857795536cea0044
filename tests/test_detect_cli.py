"""`edge-fer detect` end to end, in-process and as a subprocess."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import processes
import pytest
from paths import FACEFINDER, ROOT, SHARED, random_photos
from processes import run_main, said
from runtime_helpers import mjpg_avi

from edge_fer.cli.main import main
from edge_fer.runtime.image_out import MARKER

IMG1 = SHARED / "data/webfaces/images/pic04478.jpg"
IMG2 = SHARED / "data/webfaces/images/pic00001.jpg"
VIDEO = SHARED / "data/videos/00-1.avi"

needs_shared = pytest.mark.shared(
    "reference/pico/facefinder",
    "data/webfaces/images",
    "data/videos/00-1.avi",
    "data/videos/01-2.avi",
)
cv2 = pytest.importorskip("cv2")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["detect", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_bundled_cascade_is_the_default(capsys, tmp_path) -> None:
    from edge_fer.detect import cascade_settings, default_cascade_path, default_threshold

    path = default_cascade_path()
    assert path is not None and path.name == "face_default.pico"
    settings = cascade_settings(path)
    assert default_threshold(path) == settings["threshold"]
    assert default_threshold(path, pooled=True) == settings["memory_threshold"]
    # no --cascade: the bundled one runs; a missing input is still a one-line error
    rc, _, err = run_cli(capsys, tmp_path / "whatever.jpg")
    assert rc == 2 and "no such file" in err and len(err.strip().splitlines()) == 1
    img = tmp_path / "gray.png"
    cv2.imwrite(str(img), np.full((120, 160), 128, np.uint8))
    rc, out, err = run_cli(capsys, img, "--json")
    assert rc == 0, err
    (rec,) = [json.loads(line) for line in out.splitlines()]
    assert rec["faces"] == []  # a flat image has no face


@needs_shared
def test_small_frames_get_the_lowres_cascade(capsys) -> None:
    """Without --cascade a 160x120 video is scanned with face_lowres.pico and its settings,
    as edge-fer run does; a 640x480 photo with face_default.pico."""
    from edge_fer.detect import default_cascade_path, lowres_cascade_path

    small = SHARED / "data/videos/01-2.avi"
    runs = {}
    for name, extra in [
        ("auto", ()),
        ("lowres", ("--cascade", lowres_cascade_path())),
        ("default", ("--cascade", default_cascade_path())),
    ]:
        rc, out, err = run_cli(capsys, small, "--json", *extra)
        assert rc == 0, err
        runs[name] = [json.loads(line)["faces"] for line in out.splitlines()]
    assert runs["auto"] == runs["lowres"] != runs["default"]
    # face_default.pico finds the face on half as many frames (111 and 56 of 329 since its
    # photo threshold of 0 leaves the decision to the verifier; issue 17)
    assert sum(map(bool, runs["lowres"])) > 1.5 * sum(map(bool, runs["default"]))
    rc, out, _ = run_cli(capsys, IMG1, "--json")
    rc2, out2, _ = run_cli(capsys, IMG1, "--json", "--cascade", default_cascade_path())
    assert rc == rc2 == 0 and out == out2


@needs_shared
def test_bundled_cascade_finds_faces(capsys) -> None:
    rc, out, err = run_cli(capsys, IMG1, "--min-size", "0.1", "--json")
    assert rc == 0, err
    (rec,) = [json.loads(line) for line in out.splitlines()]
    assert len(rec["faces"]) >= 1


@needs_shared
def test_json_for_images(capsys) -> None:
    rc, out, err = run_cli(
        capsys, IMG1, IMG2, "--cascade", FACEFINDER, "--min-size", "0.1", "--json"
    )
    assert rc == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [rec["path"] for rec in lines] == [str(IMG1), str(IMG2)]
    faces = lines[0]["faces"]
    assert len(faces) >= 4
    assert set(faces[0]) == {"x", "y", "w", "h", "score"}
    assert faces[0]["score"] == max(f["score"] for f in faces) >= 5.0


@needs_shared
def test_options_reach_the_detector(capsys) -> None:
    from edge_fer.detect import Cascade, Detector

    rc, out, _ = run_cli(
        capsys,
        IMG1,
        "--cascade",
        FACEFINDER,
        "--min-size",
        "48",
        "--threshold",
        "20",
        "--angle",
        "0",
        "--json",
    )
    assert rc == 0
    got = json.loads(out)["faces"]
    gray = cv2.imread(str(IMG1), cv2.IMREAD_GRAYSCALE)
    want = Detector(Cascade.load(FACEFINDER), min_size=48, threshold=20).detect(gray)
    assert [(f["x"], f["y"], f["w"]) for f in got] == [
        (round(f.x), round(f.y), round(f.w)) for f in want
    ]
    assert len(got) == 3 and all(f["score"] >= 20 for f in got)  # 5 at the default 5.0


@needs_shared
def test_human_output(capsys) -> None:
    rc, out, _ = run_cli(capsys, IMG1, "--cascade", FACEFINDER, "--min-size", "10%")
    assert rc == 0
    assert out.startswith(f"{IMG1}: ") and " faces" in out and "score=" in out


@needs_shared
def test_video_lines_per_frame(capsys, tmp_path: Path) -> None:
    drawn = tmp_path / "boxes.avi"
    rc, out, err = run_cli(
        capsys,
        VIDEO,
        "--cascade",
        FACEFINDER,
        "--min-size",
        "0.2",
        "--memory",
        "5",
        "--threshold",
        "10",
        "--json",
        "--draw",
        drawn,
    )
    assert rc == 0, err
    recs = [json.loads(line) for line in out.splitlines()]
    assert [r["frame"] for r in recs] == list(range(228))
    assert sum(bool(r["faces"]) for r in recs) > 180
    cap = cv2.VideoCapture(str(drawn))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 228


@needs_shared
def test_draw_one_file_and_a_directory(capsys, tmp_path: Path) -> None:
    one = tmp_path / "one.png"
    rc, _, err = run_cli(capsys, IMG1, "--cascade", FACEFINDER, "--draw", one)
    assert rc == 0, err
    img = cv2.imread(str(one))
    assert img is not None and img.shape == (480, 640, 3)
    assert (img == (0, 255, 0)).all(axis=2).any()  # boxes are drawn in green
    outdir = tmp_path / "many"
    rc, _, err = run_cli(capsys, IMG1, IMG2, "--cascade", FACEFINDER, "--draw", outdir)
    assert rc == 0, err
    assert sorted(p.name for p in outdir.iterdir()) == [MARKER, IMG2.name, IMG1.name]
    rc, _, err = run_cli(capsys, IMG1, IMG2, "--cascade", FACEFINDER, "--draw", outdir)
    assert rc == 0, err  # its own folder (the marker): drawn again
    (outdir / "mine.jpg").write_bytes(b"my own photo")  # put into it since: refused
    rc, _, err = run_cli(capsys, IMG1, IMG2, "--cascade", FACEFINDER, "--draw", outdir)
    assert rc == 2 and err.count("\n") == 1 and "mine.jpg came from elsewhere or" in err, err
    (outdir / "mine.jpg").unlink()
    # a folder of the user's files: refused, as run --out DIR/ refuses it (it was overwritten)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / IMG1.name).write_bytes(b"my own photo")
    rc, _, err = run_cli(capsys, IMG1, IMG2, "--cascade", FACEFINDER, "--draw", mine)
    assert rc == 2 and err.count("\n") == 1 and "--draw" in err and "holds other files" in err
    assert (mine / IMG1.name).read_bytes() == b"my own photo"
    rc, out, err = run_cli(capsys, IMG1, "--cascade", FACEFINDER, "--draw", tmp_path / "x.nope")
    assert rc == 2 and "no image encoder for the extension '.nope'" in err
    assert out == ""  # refused before any detection


@needs_shared
def test_a_folder_or_quoted_glob_is_its_images(capsys, tmp_path: Path) -> None:
    # before: "not a file" for a folder, "no such file" for a quoted glob
    shots = tmp_path / "shots"
    shots.mkdir()
    for i, src in ((10, IMG1), (9, IMG2)):
        (shots / f"p{i}.jpg").write_bytes(src.read_bytes())
    (shots / "notes.txt").write_text("not an image")
    rc, out, err = run_cli(capsys, shots, "--cascade", FACEFINDER, "--json")
    assert rc == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [Path(d["path"]).name for d in lines] == ["p9.jpg", "p10.jpg"]  # natural order
    assert all(d["faces"] for d in lines)
    rc, out2, err = run_cli(capsys, str(shots / "p*.jpg"), "--cascade", FACEFINDER, "--json")
    assert rc == 0 and out2 == out, err
    # a folder's drawings go into a folder, even for a folder of one image
    (shots / "p10.jpg").unlink()
    drawn = tmp_path / "drawn"
    rc, _, err = run_cli(capsys, shots, "--cascade", FACEFINDER, "--draw", drawn)
    assert rc == 0, err
    assert sorted(p.name for p in drawn.iterdir()) == [MARKER, "p9.jpg"]


@needs_shared
def test_user_errors_are_one_line(capsys, tmp_path: Path) -> None:
    notimg = tmp_path / "notes.txt"
    notimg.write_text("hello")
    bad = tmp_path / "bad.pico"
    bad.write_bytes(FACEFINDER.read_bytes()[:1000])
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(IMG1.read_bytes()[:3000])
    gray_png = tmp_path / "tiny.png"
    cv2.imwrite(str(gray_png), np.zeros((4, 4), np.uint8))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no image here")
    cases = [
        ((tmp_path / "missing.jpg", "--cascade", FACEFINDER), "no such file"),
        (("/dev/null", "--cascade", FACEFINDER), "not a regular file"),
        ((tmp_path / "empty", "--cascade", FACEFINDER), "no images"),
        ((notimg, "--cascade", FACEFINDER), "not an image or video OpenCV can read"),
        ((truncated, "--cascade", FACEFINDER), "not a readable image"),
        ((IMG1, "--cascade", bad), "truncated"),
        ((IMG1, "--cascade", tmp_path / "nope"), "nope: no such file"),
        ((IMG1, "--cascade", tmp_path / "empty"), "empty: is a folder"),  # was "no such file"
        (
            (IMG1, "--cascade", FACEFINDER, "--scale-factor", "1"),
            "--scale-factor must be in",
        ),  # the flag, not the library name
        ((IMG1, "--cascade", FACEFINDER, "--memory", "0"), "memory"),
    ]
    for argv, words in cases:
        rc, _, err = run_cli(capsys, *argv)
        assert rc == 2, argv
        assert words in err and len(err.strip().splitlines()) == 1, err
    # tiny images and sizes larger than the frame are not errors: just no faces
    rc, out, _ = run_cli(capsys, gray_png, "--cascade", FACEFINDER, "--json")
    assert rc == 0 and json.loads(out)["faces"] == []
    rc, out, _ = run_cli(capsys, IMG1, "--cascade", FACEFINDER, "--min-size", "2000", "--json")
    assert rc == 0 and json.loads(out)["faces"] == []


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--threads", "0", "a number of threads in 1..256"),
        ("--min-size", "big", "fraction"),
        ("--angle", "3", "within -1..1 turn"),
        ("--angle", "0,x", "not a number of turns"),
    ],
)
def test_bad_option_values_are_usage_errors(capsys, option: str, value: str, words: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["detect", "x.jpg", option, value])
    assert exc.value.code == 2
    assert words in capsys.readouterr().err


@needs_shared
def test_subprocess_exit_code_on_missing_file(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = processes.run_cli(
        "detect", tmp_path / "missing.jpg", "--cascade", FACEFINDER, "--json", env=env
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"edge-fer detect: error: {tmp_path / 'missing.jpg'}: no such file"  # as run, classify
    ]


@needs_shared
def test_subprocess_bad_video_is_one_line(tmp_path: Path) -> None:
    """FFmpeg's own complaints are silenced: stderr is our one line."""
    fake = tmp_path / "clip.mp4"
    fake.write_bytes(b"not a video at all")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OPENCV_FFMPEG_LOGLEVEL", None)
    proc = processes.run_cli("detect", fake, "--cascade", FACEFINDER, env=env)
    assert proc.returncode == 2
    why = "cannot decode it (not a video, empty or cut short, or a codec this OpenCV/FFmpeg build lacks)"  # as run
    assert proc.stderr.strip().splitlines() == [f"edge-fer detect: error: {fake}: {why}"]


def test_truncated_avi_warns_counts_and_exits_1(capsys, tmp_path: Path) -> None:
    """A video cut in half: the frames that decode are processed, one warning says the file
    ends early, the lost frames are counted, and the exit code is 1 (as edge-fer run)."""
    whole = mjpg_avi(tmp_path / "whole.avi")
    data = whole.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    rc, out, err = run_cli(capsys, whole)
    assert rc == 0 and err == "" and out.strip() == f"{whole}: 40 frames, faces in 0"
    rc, out, err = run_cli(capsys, cut, "--json")
    assert rc == 1
    frames = [json.loads(line)["frame"] for line in out.splitlines()]
    assert 0 < len(frames) < 40 and frames == list(range(len(frames)))
    (warning,) = err.strip().splitlines()
    assert warning.startswith(f"edge-fer detect: warning: {cut}: the file ends after frame ")
    assert "of the 40 its header declares" in warning
    rc, out, err = run_cli(capsys, cut, whole)  # every input is still processed
    assert rc == 1 and len(err.strip().splitlines()) == 1
    lines = out.strip().splitlines()
    n = len(frames)
    assert lines == [
        f"{cut}: {n} frames, faces in 0, {40 - n} undecodable",
        f"{whole}: 40 frames, faces in 0",
    ]


def test_video_with_no_decodable_frame_is_one_line(capsys, tmp_path: Path) -> None:
    data = mjpg_avi(tmp_path / "whole.avi").read_bytes()
    head = tmp_path / "head.avi"
    head.write_bytes(data[: data.index(b"movi") + 200])  # the headers, part of frame 0
    rc, out, err = run_cli(capsys, head)
    assert rc == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line == f"edge-fer detect: error: {head}: no frame could be decoded (empty or corrupt)"


def test_oversized_image_is_refused_from_its_header(capsys, tmp_path: Path) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    big = tmp_path / "big.png"  # a few hundred bytes declaring 20000x20000 pixels
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    big.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 20001))
        + chunk(b"IEND", b"")
    )
    rc, out, err = run_cli(capsys, big)
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == [
        f"edge-fer detect: error: {big}: 20000x20000 pixels is over the 100 Mpx limit for images"
    ]


@pytest.mark.parametrize(
    "flags, words",
    [
        # before: each found nothing, with exit 0 and no word ("1" is one pixel, "1.0" the side)
        (("--max-size", "1"), "--max-size 1 is 1 px, smaller than any face; for the whole"),
        (("--max-size", "1.5"), "--max-size 1.5 is 1.5 px, smaller than any face"),
        (("--min-size", "50", "--max-size", "10"), "--max-size 10 is below the smallest size"),
        (("--min-size", "0.5", "--max-size", "0.2"), "--max-size 0.2 is below the smallest"),
    ],
)
def test_sizes_that_can_find_nothing_are_one_line(capsys, tmp_path: Path, flags, words) -> None:
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((64, 64), np.uint8))
    rc, out, err = run_cli(capsys, img, *flags)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and words in err, err


@needs_shared
def test_draw_gray_formats_as_png_and_a_trailing_slash_is_a_folder(capsys, tmp_path: Path) -> None:
    # before: a .pgm photo stopped the run after it was scanned ("no image encoder"), and
    # --draw d/ for one video was refused as a video without a container
    shots = tmp_path / "shots"
    shots.mkdir()
    cv2.imwrite(str(shots / "a.pgm"), cv2.imread(str(IMG1), cv2.IMREAD_GRAYSCALE))
    (shots / "b.jpg").write_bytes(IMG2.read_bytes())
    drawn = tmp_path / "drawn"
    rc, _, err = run_cli(capsys, shots, "--cascade", FACEFINDER, "--draw", drawn)
    assert rc == 0, err
    assert sorted(p.name for p in drawn.iterdir()) == [MARKER, "a.png", "b.jpg"]
    assert cv2.imread(str(drawn / "a.png")).shape[2] == 3
    rc, _, err = run_cli(capsys, IMG1, "--cascade", FACEFINDER, "--draw", tmp_path / "x.pgm")
    assert rc == 2 and err.count("\n") == 1 and ".pgm holds gray only" in err, err
    clips = tmp_path / "clips"
    rc, _, err = run_cli(capsys, VIDEO, "--cascade", FACEFINDER, "--draw", f"{clips}/")
    assert rc == 0, err
    assert sorted(p.name for p in clips.iterdir()) == [MARKER, VIDEO.stem + ".avi"]
    # the video is listed with its size and time: a file put there under its name since is not
    # taken for ours (before, it was written over)
    (clips / (VIDEO.stem + ".avi")).write_bytes(b"my own video")
    rc, _, err = run_cli(capsys, VIDEO, "--cascade", FACEFINDER, "--draw", f"{clips}/")
    assert rc == 2 and "changed since" in err, err
    assert (clips / (VIDEO.stem + ".avi")).read_bytes() == b"my own video"


def test_a_video_too_wide_to_scan_is_skipped_and_the_other_inputs_still_run(capsys, tmp_path):
    # before: "error: gray is a frame of 16400x32, too large" stopped the command there, and
    # the inputs after it were never scanned
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for p in (a, b):
        cv2.imwrite(str(p), np.full((48, 64), 128, np.uint8))
    wide = tmp_path / "wide.avi"
    w = cv2.VideoWriter(str(wide), cv2.VideoWriter_fourcc(*"MJPG"), 10, (16400, 32))
    for _ in range(2):
        w.write(np.zeros((32, 16400, 3), np.uint8))
    w.release()
    rc, out, err = run_cli(capsys, a, wide, b)
    assert rc == 1  # skipped, the others processed (docs/runtime.md, Photos)
    assert [line.split(":")[0] for line in out.splitlines()] == [str(a), str(b)]
    why = "frames of 16400x32 pixels are over the 16384 px a side that can be scanned"
    last = "1 of 3 inputs could not be used and was skipped (listed above); the others were"
    assert err.strip().splitlines() == [
        f"edge-fer detect: warning: {wide}: {why}; skipped",
        f"edge-fer detect: error: {last} processed",
    ]


def test_a_video_drawn_to_an_image_name_is_refused_before_any_scan(capsys, tmp_path):
    # before: frame 0 was scanned and printed, then "video x.png: unsupported container"
    clip = mjpg_avi(tmp_path / "clip.avi", 5)
    rc, out, err = run_cli(capsys, clip, "--json", "--draw", tmp_path / "x.png")
    assert rc == 2 and out == "" and err.count("\n") == 1, err
    assert f"--draw {tmp_path / 'x.png'}: {clip} is a video, drawn as a video" in err
    assert ".avi" in err and not (tmp_path / "x.png").exists()
    rc, _, err = run_cli(capsys, clip, "--draw", tmp_path / "x.mkv")  # a video name: drawn
    assert rc == 0 and (tmp_path / "x.mkv").stat().st_size > 0, err


def test_a_file_of_unknown_kind_is_drawn_to_the_name_given(capsys, tmp_path):
    # before: a video without an extension could not be drawn to any video name ("no image
    # encoder for the extension '.mp4'"): it was checked as an image first
    clip = mjpg_avi(tmp_path / "clip.avi", 5).rename(tmp_path / "clip")
    rc, _, err = run_cli(capsys, clip, "--draw", tmp_path / "x.mp4")
    assert rc == 0 and (tmp_path / "x.mp4").stat().st_size > 0, err
    img = tmp_path / "shot"
    img.write_bytes(cv2.imencode(".png", np.full((48, 64), 128, np.uint8))[1].tobytes())
    rc, _, err = run_cli(capsys, img, "--draw", tmp_path / "y.png")
    assert rc == 0 and cv2.imread(str(tmp_path / "y.png")).shape == (48, 64, 3), err
    rc, _, err = run_cli(capsys, img, "--draw", tmp_path / "y.xyz")  # neither kind's name
    assert rc == 2 and "no image encoder" in err and err.count("\n") == 1, err


def test_draw_does_not_replace_an_existing_image_without_force(capsys, tmp_path):
    # before: the user's picture was replaced by the drawing without a word
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.full((48, 64), 128, np.uint8))
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"my own picture")
    rc, out, err = run_cli(capsys, img, "--draw", mine)
    assert rc == 2 and out == "" and err.count("\n") == 1, err
    assert f"--draw {mine}: exists; pass --force to replace it" in err
    assert mine.read_bytes() == b"my own picture"
    rc, _, err = run_cli(capsys, img, "--draw", mine, "--force")
    assert rc == 0, err
    assert cv2.imread(str(mine)).shape == (48, 64, 3)


def test_detect_names_a_uri_as_given(tmp_path, capsys, monkeypatch):
    """`detect rtsp://cam/1` said `rtsp:/cam/1: no such file` (the name collapsed as a
    path); a file:// URI, which `run` reads, was not found either."""
    monkeypatch.chdir(tmp_path)
    folder = random_photos(tmp_path / "shots", bad=False)
    for uri in ("rtsp://cam.local/1", "foo://bar"):
        rc, out, err = run_main(["detect", uri], capsys)
        scheme = uri.split(":")[0]
        assert rc == 2 and out == "", err
        line = (
            f"edge-fer detect: error: {uri}: a {scheme}:// URI, not a file; detect reads image "
            "and video files, folders and globs (edge-fer run reads streams and cameras)"
        )
        assert said(err) == [line], err
    rc, out, err = run_main(["detect", f"file://{folder}/a.png", "--json"], capsys)
    assert rc == 0, err
    assert json.loads(out)["path"] == f"{folder}/a.png"
    rc, out, err = run_main(["detect", "file://shots", "--json"], capsys)  # relative, as run
    assert rc == 0 and len(out.splitlines()) == 2, err
    rc, out, err = run_main(["detect", ""], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "empty name" in err, err


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_interrupted_video_drawing_keeps_the_frames_drawn(tmp_path: Path, sig: str) -> None:
    """Ctrl-C or SIGTERM during `detect VIDEO --draw OUT.avi`: the frames drawn so far are a
    finished video at OUT, as `run --out` keeps its video (the drawing was thrown away)."""
    import signal

    import cv2

    clip = tmp_path / "long.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 25, (160, 120))
    for i in range(3000):
        f = np.full((120, 160, 3), i % 200, np.uint8)
        cv2.circle(f, (80, 60), 20 + i % 10, (0, 0, 255), -1)
        w.write(f)
    w.release()
    out = tmp_path / "drawn.avi"

    def drawing() -> bool:  # the temporary file beside OUT has grown past a few frames
        return any(p.name.startswith(".drawn.") and p.stat().st_size > 20_000
                   for p in tmp_path.iterdir())  # fmt: skip

    proc = processes.spawn_cli("detect", clip, "--json", "--draw", out)
    err = processes.interrupt(proc, getattr(signal, sig), drawing)
    assert proc.returncode == (130 if sig == "SIGINT" else 143), err
    cap = cv2.VideoCapture(str(out))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert 0 < n < 3000, (n, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drawn.avi", "long.avi"]
