"""Photos are stills: a folder, glob or single image is detected one frame at a time, at the
cascade's single-image threshold, as `edge-fer detect` does (issue 17, item 5); explicit
--memory / --threshold still win, and --sequence keeps the video settings."""

from __future__ import annotations

import json

import cv2
import pytest
from paths import ASSETS, PICO, WEBFACES

from edge_fer.cli.main import main
from edge_fer.detect.config import MEMORY, CascadeSettings, DetectorOptions, resolve

# pic00060..pic00099 that exist: photos of both cascades' sizes
GLOB = "pic000[6-9]*.jpg"


def test_resolve_gives_stills_one_frame_and_the_single_image_threshold() -> None:
    s = CascadeSettings.for_cascade(PICO)
    assert s.threshold is not None and s.memory_threshold is not None
    assert s.threshold != s.memory_threshold
    video = resolve(DetectorOptions(), s, (480, 640), upscaling=True)
    stills = resolve(DetectorOptions(), s, (480, 640), upscaling=True, stills=True)
    assert (video.memory, video.threshold) == (MEMORY, s.memory_threshold)
    assert (stills.memory, stills.threshold) == (1, s.threshold)
    # what the user sets wins: a memory (its threshold follows it), a threshold
    pooled = resolve(DetectorOptions(memory=5), s, (480, 640), stills=True)
    assert (pooled.memory, pooled.threshold) == (5, s.memory_threshold)
    fixed = resolve(DetectorOptions(threshold=7.0), s, (480, 640), stills=True)
    assert (fixed.memory, fixed.threshold) == (1, 7.0)
    one = resolve(DetectorOptions(memory=1), s, (480, 640))
    assert (one.memory, one.threshold) == (1, s.threshold)


def _run(tmp_path, name: str, *flags: str) -> tuple[dict, dict]:
    """`edge-fer run GLOB FLAGS`: (summary, {file name: faces})."""
    summary = tmp_path / f"{name}.json"
    argv = ["run", str(WEBFACES / "images" / GLOB), "--summary", str(summary), "--quiet"]
    assert main([*argv, *flags]) == 0
    s = json.loads(summary.read_text())
    return s, {f["path"].rsplit("/", 1)[-1]: f["faces"] for f in s["images"]}


@pytest.mark.shared("data/webfaces/images/pic00066.jpg", "data/webfaces/images/pic00099.jpg")
def test_photos_are_found_as_edge_fer_detect_finds_them(tmp_path, capsys) -> None:
    files = sorted((WEBFACES / "images").glob(GLOB))
    s, run = _run(tmp_path, "stills")
    settings = CascadeSettings.for_cascade(PICO)
    assert s["stills"] and s["detector"]["memory"] == 1
    assert s["detector"]["threshold"] == settings.threshold
    assert len(run) == len(files) and s["faces"] == sum(run.values())

    assert main(["detect", "--json", *map(str, files)]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    detect = {ln["path"].rsplit("/", 1)[-1]: len(ln["faces"]) for ln in lines}
    # each photo is scanned with the cascade of its own size, as detect scans it: before,
    # run kept the cascade it picked for the first photo (face_default.pico) for the small
    # ones too, on an upscaled copy, and found other faces there
    small = [f.name for f in files if min(cv2.imread(str(f)).shape[:2]) < 240]
    assert 5 <= len(small) <= len(files) - 10
    assert run == detect
    assert [c.rsplit("/", 1)[-1] for c in s["cascades"]] == [
        "face_default.pico",
        "face_lowres.pico",
    ]
    # with the values each used: the summary gave face_default.pico's for all of them
    used = {d["cascade"].rsplit("/", 1)[-1]: d for d in s["detectors"]}
    for name in ("face_default.pico", "face_lowres.pico"):
        want = CascadeSettings.for_cascade(ASSETS / name)
        assert used[name]["verifier"]["min_prob"] == want.verifier_min_prob
        assert used[name]["detector"]["threshold"] == want.threshold

    # the 5-frame pooled threshold, as run used for photos before (memory cleared per photo):
    # an explicit --memory wins, and it misses faces the single-image threshold finds
    old, old_run = _run(tmp_path, "pooled", "--memory", "5")
    assert old["detector"]["memory"] == 5
    assert old["detector"]["threshold"] == settings.memory_threshold
    # (on the photos of 240 px and up, face_default.pico's pooled threshold finds no face the
    # single-image one misses; face_lowres.pico's pooled threshold is its own)
    big = [n for n in run if n not in small]
    assert all(old_run[n] <= run[n] for n in big)
    # an explicit --threshold wins too
    high, _ = _run(tmp_path, "high", "--threshold", str(settings.memory_threshold))
    # (issue 17: a memory cleared per photo holds each photo, its first frame, to
    # threshold x 1/5, so --memory 5 finds at least what one frame at the full threshold does)
    assert high["detector"]["memory"] == 1 and high["faces"] <= old["faces"]
    # --sequence: frames of one scene, the video settings
    seq, _ = _run(tmp_path, "sequence", "--sequence", "--scene-cut", "0")
    assert not seq["stills"] and seq["detector"]["memory"] == MEMORY
    assert seq["detector"]["threshold"] == settings.memory_threshold


@pytest.mark.shared("data/webfaces/images/pic11288.jpg")
def test_detect_drops_a_box_inside_a_larger_one_as_run_does(tmp_path, capsys) -> None:
    # before: run dropped a box lying mostly inside a larger one (a chin or mouth; its rule
    # against duplicates) and detect kept it, so the two disagreed on this photo (1 vs 2: a
    # 23 px box inside a 58 px face)
    photo = WEBFACES / "images" / "pic11288.jpg"
    summary = tmp_path / "s.json"
    assert main(["run", str(photo), "--summary", str(summary), "--quiet"]) == 0
    run = json.loads(summary.read_text())["faces"]
    assert main(["detect", "--json", str(photo)]) == 0
    faces = json.loads(capsys.readouterr().out)["faces"]
    assert len(faces) == run == 1
    assert main(["detect", "--json", str(photo), "--draw", str(tmp_path / "d.jpg")]) == 0
    assert len(json.loads(capsys.readouterr().out)["faces"]) == 1
