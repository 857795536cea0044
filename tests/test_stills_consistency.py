"""run, detect and classify judge the same photos alike (docs/runtime.md, Photos): a folder with
unreadable and oversized photos gets the same skip line per file from each command and exit 1
(the others processed), a name holding a newline prints on one line, a GIF is read alike, a
missing file is the same one-line mistake, and each --help says how deep a folder is read.
Real files in temporary folders, real child processes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from paths import random_photos
from processes import run_cli, run_main, said

COMMANDS = ("run", "detect", "classify")
WARNING = re.compile(r"^edge-fer(?: \w+)?: warning: ")
GOOD = ("a.png", "b\nc.jpg")  # a name with a newline in it, as POSIX allows
UNREADABLE = "not a readable image (corrupt, or not an image)"


def _shown(path: Path) -> str:
    """A name with a newline as the commands print it: quoted and escaped, as repr()."""
    return repr(str(path))


def _save(path: Path, img: np.ndarray) -> Path:
    ok, buf = cv2.imencode(path.suffix, img)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _gif(path: Path, frames: int) -> Path:
    image = pytest.importorskip("PIL.Image", reason="writing a GIF needs Pillow")
    shots = [image.fromarray(np.full((60, 80, 3), 40 * i, np.uint8)) for i in range(frames)]
    shots[0].save(path, save_all=frames > 1, append_images=shots[1:], duration=100, loop=0)
    return path


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """A folder (its name holds a newline too) of 2 good photos and 4 bad ones."""
    folder = tmp_path_factory.mktemp("stills") / "day\n1"
    folder.mkdir()
    for name in GOOD:
        _save(folder / name, np.full((60, 80), 128, np.uint8))
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "bad\nname.jpg").write_bytes(b"not an image")
    # 100.02 Mpx of zeros: over MAX_IMAGE_PIXELS, yet a 100 kB file
    _save(folder / "huge.png", np.zeros((10001, 10001), np.uint8))
    return folder


@pytest.fixture(scope="module")
def outputs(shots, tmp_path_factory) -> dict:
    """Each command once on the folder: {command: (completed process, run's summary)}."""
    summary = tmp_path_factory.mktemp("summary") / "s.json"
    argv = {
        "run": ["run", shots, "--summary", summary],
        "detect": ["detect", shots],
        "classify": ["classify", shots],
    }
    done = {c: run_cli(*argv[c], timeout=300) for c in COMMANDS}
    done["summary"] = json.loads(summary.read_text()) if summary.exists() else None
    return done


def test_each_command_skips_the_bad_photos_processes_the_others_and_exits_1(outputs) -> None:
    # before: run exited 0, detect and classify 2, for the same folder
    for cmd in COMMANDS:
        p = outputs[cmd]
        assert p.returncode == 1 and "Traceback" not in p.stderr, (cmd, p.stderr)
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith(f"edge-fer {cmd}: error: 4 of 6 "), (cmd, last)
        assert last.endswith("skipped (listed above); the others were processed"), last
    s = outputs["summary"]
    assert s["frames"] == 2 and s["source"]["skipped_files"] == 4
    for cmd in ("detect", "classify"):
        assert len(outputs[cmd].stdout.splitlines()) == len(GOOD), outputs[cmd].stdout


def test_the_same_bad_photo_gets_the_same_line_from_every_command(outputs, shots) -> None:
    # before: classify said "cannot read image" where run and detect said "not a readable
    # image", and the 100 Mpx limit "for images" in two of them; detect's was an error line
    lines = {}
    for cmd in COMMANDS:
        err = outputs[cmd].stderr.splitlines()
        lines[cmd] = sorted(WARNING.sub("", ln) for ln in err if WARNING.match(ln))
    assert lines["run"] == lines["detect"] == lines["classify"], lines
    why = {"bad\nname.jpg": UNREADABLE, "corrupt.jpg": UNREADABLE, "empty.png": UNREADABLE}
    why["huge.png"] = "10001x10001 pixels is over the 100 Mpx limit for images"
    assert lines["run"] == sorted(f"{_shown(shots / n)}: {w}; skipped" for n, w in why.items())


def test_names_with_a_newline_print_on_one_line(outputs, shots) -> None:
    # before: printed raw, so one file took two lines of the one-line-per-file output
    for cmd in ("detect", "classify"):
        out = outputs[cmd].stdout.splitlines()
        assert [ln.split("': ")[0] + "'" for ln in out] == [_shown(shots / n) for n in GOOD]
    for cmd in COMMANDS:  # 4 skip lines and the last line, nothing broken in two
        assert len(outputs[cmd].stderr.strip().splitlines()) == 5, outputs[cmd].stderr
    first = outputs["run"].stdout.splitlines()[0]
    assert first.startswith(f"source   {_shown(shots)}  ("), first


def test_a_gif_is_a_video_when_animated_and_a_photo_otherwise(tmp_path) -> None:
    # before: run read every GIF as a video and detect as one image
    anim, still = _gif(tmp_path / "anim.gif", 3), _gif(tmp_path / "still.gif", 1)
    kinds = {}
    for gif in (anim, still):
        summary = tmp_path / f"{gif.stem}.json"
        p = run_cli("run", gif, "--summary", summary, "--quiet", timeout=300)
        assert p.returncode == 0, p.stderr
        s = json.loads(summary.read_text())
        kinds[gif.stem] = (s["source"]["kind"], s["frames"])
    assert kinds == {"anim": ("file", 3), "still": ("images", 1)}
    p = run_cli("detect", anim, still, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [f"{anim}: 3 frames, faces in 0", f"{still}: 0 faces"]


def test_a_missing_file_is_the_same_one_line_mistake(tmp_path, shots) -> None:
    # before: classify classified the others (exit 2 after them), detect said "no such file: X"
    missing = tmp_path / "missing.jpg"
    for cmd in ("detect", "classify"):
        p = run_cli(cmd, missing, shots / "a.png", timeout=300)
        assert p.returncode == 2 and p.stdout == "", (cmd, p.stdout)
        assert p.stderr.splitlines() == [f"edge-fer {cmd}: error: {missing}: no such file"]


def test_classify_names_a_uri_as_given(tmp_path, capsys, monkeypatch):
    """`classify rtsp://cam/1` said `rtsp:/cam/1: no such file`, and a file:// URI was not
    found: classify takes names as detect does."""
    monkeypatch.chdir(tmp_path)
    folder = random_photos(tmp_path / "shots", bad=False)
    rc, out, err = run_main(["classify", "rtsp://cam.local/1"], capsys)
    assert rc == 2 and out == "", err
    line = (
        "edge-fer classify: error: rtsp://cam.local/1: a rtsp:// URI, not a file; classify "
        "reads image files, folders and globs (edge-fer run reads streams and cameras)"
    )
    assert said(err) == [line], err
    rc, out, err = run_main(["classify", f"file://{folder}/a.png", "--json"], capsys)
    assert rc == 0 and "a.png" in out, err


def test_each_help_says_how_deep_a_folder_is_read() -> None:
    # before: classify read sub-folders, run and detect did not, and no --help said so
    said = {}
    for cmd in COMMANDS:
        p = run_cli(cmd, "--help")
        assert p.returncode == 0, p.stderr
        said[cmd] = " ".join(p.stdout.split())
    for cmd in ("run", "detect"):
        assert "not in its sub-folders" in said[cmd] and '"DIR/**/*.jpg"' in said[cmd], cmd
    assert "at any depth" in said["classify"]
