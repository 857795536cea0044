"""Folders and globs of images: bad files are skipped and counted the same way at any folder
size, image sizes are read from headers before decoding, and the exit codes of `edge-fer run`."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_helpers import make_tiny_model

from edge_fer.cli.main import main
from edge_fer.errors import UserError
from edge_fer.limits import MAX_IMAGE_PIXELS
from edge_fer.runtime.sources import ImageSource, image_size, open_source


def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A small PNG file whose header declares w x h (its data is far too short)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 3001)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def _photo(path: Path, seed: int, size=(48, 64)) -> Path:
    img = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def _bad_files(folder: Path, n: int) -> list[Path]:
    """n unusable files of every kind: not an image, empty, garbage JPEG, oversized PNGs."""
    makers = [
        lambda p: p.with_suffix(".jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg"),
        lambda p: _png_header_only(p.with_suffix(".png"), 12000, 9000),  # 108 Mpx: over ours
        lambda p: p.with_suffix(".png").write_bytes(b""),
        lambda p: _png_header_only(p.with_suffix(".png"), 40000, 40000),  # over OpenCV's own
        lambda p: p.with_suffix(".bmp").write_text("hello"),
    ]
    out = []
    for i in range(n):
        p = folder / f"bad{i:02d}"
        makers[i % len(makers)](p)
        out.append(next(folder.glob(f"bad{i:02d}.*")))
    return out


# ---- image headers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ext, params",
    [
        (".png", []),
        (".jpg", []),
        (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        (".bmp", []),
        (".tif", []),
        (".webp", []),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
        (".ppm", []),
        (".pgm", []),
    ],
)
def test_image_size_reads_headers(tmp_path, ext, params):
    img = np.random.default_rng(1).integers(0, 256, (23, 37, 3), dtype=np.uint8)
    if ext == ".pgm":
        img = img[:, :, 0]
    path = tmp_path / f"x{ext}"
    assert cv2.imwrite(str(path), img, params)
    assert image_size(str(path)) == (37, 23)


def test_image_size_unknown_and_hostile(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff" + b"\xe1\xff\xff")  # segment past the end
    (tmp_path / "b.png").write_text("plain text")
    (tmp_path / "c.tif").write_bytes(b"II*\x00\xff\xff\xff\x7f" + b"\0" * 8)  # IFD past the end
    big_offset = struct.pack("<Q", 2**63 + 5)  # past what a file offset can hold
    (tmp_path / "d.tif").write_bytes(b"II+\x00\x08\x00\x00\x00" + big_offset + b"\0" * 16)
    (tmp_path / "e.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0")  # cut short
    for name in ("a.jpg", "b.png", "c.tif", "d.tif", "e.png"):
        assert image_size(str(tmp_path / name)) is None
    assert image_size(str(_png_header_only(tmp_path / "big.png", 40000, 30000))) == (40000, 30000)


# ---- the source -----------------------------------------------------------------------------------


@pytest.mark.parametrize("nbad", [2, 11])  # under and over the 8 files the old code looked at
def test_bad_files_are_skipped_and_counted_at_any_folder_size(tmp_path, nbad):
    bad = _bad_files(tmp_path, nbad)
    good = [_photo(tmp_path / "good1.png", 1), _photo(tmp_path / "zgood2.jpg", 2)]
    warnings: list[str] = []
    src = open_source(str(tmp_path), warn=warnings.append)
    assert isinstance(src, ImageSource) and (src.width, src.height) == (64, 48)
    got = []
    while (f := src.read()) is not None:
        got.append(Path(src.files[f.index]).name)
    src.close()
    assert got == [p.name for p in good]
    assert src.processed == 2 and len(src.skipped) == nbad == len(src.skipped_files)
    assert sorted(Path(s["path"]).name for s in src.skipped_files) == sorted(p.name for p in bad)
    assert len(warnings) == nbad and all("skipped" in w for w in warnings)
    assert not src.incomplete
    d = src.describe()
    assert d["files"] == nbad + 2 and d["skipped_files"] == nbad
    reasons = {Path(s["path"]).name: s["reason"] for s in src.skipped_files}
    # the 108 Mpx PNG is refused from its header, before any decoding
    assert any(f"over the {MAX_IMAGE_PIXELS // 1_000_000} Mpx limit" in r for r in reasons.values())


@pytest.mark.parametrize("nbad", [1, 3, 12])
def test_no_usable_image_is_one_line_at_any_folder_size(tmp_path, nbad):
    _bad_files(tmp_path, nbad)
    with pytest.raises(UserError) as exc:
        open_source(str(tmp_path))
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1
    if nbad == 1:
        assert "bad00.jpg" in msg
    else:
        assert f"none of its {nbad} image files can be used" in msg


def test_single_oversized_photo_is_one_line(tmp_path):
    big = _png_header_only(tmp_path / "huge.png", 20000, 20000)
    with pytest.raises(UserError, match="20000x20000 pixels is over the 100 Mpx limit"):
        open_source(str(big))


def test_each_file_is_decoded_once(tmp_path):
    """Looking for the first usable image does not decode the files again in read()."""
    _bad_files(tmp_path, 3)
    _photo(tmp_path / "good.png", 1)
    src = open_source(str(tmp_path))
    tried = dict(src._tried)
    assert len(tried) == 4 and tried[3][0] is not None  # bad00..02, then good
    first = src.read()
    assert first is not None and first.image is tried[3][0]


def _jpeg_with_stray_byte(path: Path, w: int, h: int) -> Path:
    """A small JPEG whose frame header says w x h, with one extraneous byte before the frame
    header: libjpeg skips such bytes with a warning and decodes the file at w x h."""
    ok, buf = cv2.imencode(".jpg", np.full((16, 16), 128, np.uint8))
    assert ok
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", h, w)
    path.write_bytes(bytes(data[:sof]) + b"\x00" + bytes(data[sof:]))
    return path


def test_a_jpeg_with_stray_bytes_is_sized_by_its_header(tmp_path):
    """The header reader gave up at the first byte that was not a marker, so a 630-byte JPEG
    saying 12000x12000 was decoded (1 GB) and then stopped the whole folder's run in the
    detector (exit 2, the photos after it never read)."""
    assert image_size(str(_jpeg_with_stray_byte(tmp_path / "one.jpg", 300, 200))) == (300, 200)
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "a_ok.png", 1)
    _jpeg_with_stray_byte(folder / "b_big.jpg", 12000, 12000)
    _photo(folder / "c_ok.png", 2)
    warnings: list[str] = []
    src = open_source(str(folder), warn=warnings.append)
    got = []
    while (f := src.read()) is not None:
        got.append(Path(f.path).name)
    assert got == ["a_ok.png", "c_ok.png"]
    assert len(warnings) == 1 and "12000x12000 pixels is over the 100 Mpx limit" in warnings[0]


def test_names_with_digits_int_refuses_are_sorted(tmp_path):
    """ "²" and "①" are digits to str.isdigit but not to int(): sorting a folder holding such a
    name was a traceback in run and detect."""
    for name in ("1\u00b21.png", "b10.png", "b9.png", "\u2460.png"):
        _photo(tmp_path / name, 1, size=(32, 32))
    src = open_source(str(tmp_path))
    assert [Path(f).name for f in src.files] == ["1\u00b21.png", "b9.png", "b10.png", "\u2460.png"]


def test_a_recursive_glob_enters_each_folder_once(tmp_path):
    """glob follows links to folders: a link to the parent listed every photo once per level
    (41 times) and two such links never finished listing (2^depth paths)."""
    root = tmp_path / "ld"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for p in (root / "a.jpg", root / "sub" / "b.jpg", root / "sub" / "deep" / "c.png"):
        _photo(p, 1, size=(32, 32))
    _photo(root / ".hidden" / "h.jpg", 1, size=(32, 32))  # glob skips hidden folders: so do we
    os.symlink("..", root / "sub" / "up1")
    os.symlink("../..", root / "sub" / "deep" / "up2")
    os.symlink(str(root / "sub"), tmp_path / "elsewhere")  # a link into the tree, named at top
    src = open_source(f"{root}/**/*.*")
    assert sorted(os.path.relpath(f, root) for f in src.files) == [
        "a.jpg",
        os.path.join("sub", "b.jpg"),
        os.path.join("sub", "deep", "c.png"),
    ]
    # ld/sub is reached again as "elsewhere": its photo is listed once, under the first name
    both = open_source(f"{tmp_path}/*/**/b.jpg")
    assert [os.path.relpath(f, tmp_path) for f in both.files] == [
        os.path.join("elsewhere", "b.jpg")
    ]


def test_a_recursive_glob_lists_what_glob_lists_on_a_tree_without_loops(tmp_path, monkeypatch):
    """`photos/*/**` listed photos/top.jpg too (a file taken as a folder for `**`), and a
    trailing separator (folders only, to glob) was dropped."""
    import glob

    from edge_fer.runtime.sources import expand_glob

    for rel in ("top.jpg", "sub/inner.jpg", "sub/deeper/x.png", "other/y.jpg", ".h/z.jpg"):
        (tmp_path / "photos" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / rel).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    patterns = ["photos/*/**", "photos/**/", "photos/**", "photos/**/*.jpg", "**/*.png",
                "photos/*/**/", f"{tmp_path}/photos/**/x.*"]  # fmt: skip
    for pat in patterns:
        assert sorted(expand_glob(pat)) == sorted(glob.glob(pat, recursive=True)), pat


def test_a_tree_deeper_than_pythons_recursion_limit_is_listed(tmp_path, capsys):
    """Both walkers recursed: a photo 1,100 folders down was a RecursionError traceback in
    `detect 'deep/**/*.jpg'` and in `classify deep`."""
    import sys

    from edge_fer.imageio import image_files
    from edge_fer.runtime.sources import expand_glob

    # Python's default limit: a library imported by an earlier test may have raised it (one run
    # here made the tree too deep for the OS, "File name too long", past PATH_MAX's 4096 bytes)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    deep = tmp_path
    try:
        deep = deep / "deep"
        deep.mkdir()
        for _ in range(1000 + 100):  # one level at a time: mkdir(parents=True) recurses too
            deep = deep / "d"
            deep.mkdir()
        _photo(deep / "x.jpg", 1, size=(32, 32))
        assert expand_glob(f"{tmp_path}/deep/**/*.jpg") == [str(deep / "x.jpg")]
        assert image_files(tmp_path / "deep") == [deep / "x.jpg"]
    finally:  # one level at a time, also after a failure: pytest's clean-up (shutil.rmtree)
        # recurses, and a tree left here failed it at exit with a RecursionError
        sys.setrecursionlimit(limit)
        with contextlib.suppress(OSError):  # absent, or never made: the tree failed first
            (deep / "x.jpg").unlink()
        if not os.path.isdir(deep):  # the level whose mkdir failed
            deep = deep.parent
        while deep != tmp_path:
            deep.rmdir()
            deep = deep.parent


# ---- exit codes of `edge-fer run` ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.mark.parametrize("nbad", [2, 11])
def test_run_exits_1_when_images_were_skipped_and_others_processed(
    tmp_path, tiny_model, capsys, nbad
):
    # exit 0 before 2026-12: now 1, as detect and classify (docs/runtime.md, Photos)
    folder = tmp_path / "shots"
    folder.mkdir()
    _bad_files(folder, nbad)
    _photo(folder / "good.png", 3)
    summary = tmp_path / "s.json"
    rc = main(["run", str(folder), "--model", str(tiny_model), "--summary", str(summary)])
    err = capsys.readouterr().err
    assert rc == 1, err
    s = json.loads(summary.read_text())
    assert s["frames"] == 1 and s["skipped_frames"] == nbad and s["complete"]
    assert s["source"]["files"] == nbad + 1 and s["source"]["skipped_files"] == nbad
    assert len(s["source_errors"]) == nbad
    assert sum(line.endswith("; skipped") for line in err.splitlines()) == nbad
    assert err.splitlines()[-1] == (
        f"edge-fer run: error: {nbad} of {nbad + 1} image files could not be used and were "
        "skipped (listed above); the others were processed"
    )


@pytest.mark.parametrize("nbad", [3, 11])
def test_run_exits_2_in_one_line_when_no_image_is_usable(tmp_path, tiny_model, capsys, nbad):
    folder = tmp_path / "shots"
    folder.mkdir()
    _bad_files(folder, nbad)
    summary = tmp_path / "s.json"
    rc = main(["run", str(folder), "--model", str(tiny_model), "--summary", str(summary)])
    err = capsys.readouterr().err
    assert rc == 2
    expected = (
        f"edge-fer run: error: source {folder}: none of its {nbad} image files can be used "
        f"(the first, {folder / 'bad00.jpg'}: not a readable image (corrupt, or not an image))"
    )
    assert err.strip().splitlines() == [expected]
    assert not summary.exists()


def test_decoder_errors_are_reasons_not_crashes(tmp_path, monkeypatch):
    """Past our header check (raised here), OpenCV's own size assertion is a skip reason too."""
    from edge_fer import limits
    from edge_fer.runtime import sources

    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 10**13)
    monkeypatch.setattr(sources, "MAX_FRAME_SIDE", 10**6)
    img, why = sources.load_image(str(_png_header_only(tmp_path / "x.png", 40000, 40000)))
    assert img is None and why.startswith("cannot decode it (") and len(why.splitlines()) == 1


def test_hidden_files_are_skipped_and_classify_takes_a_quoted_glob(tmp_path, capsys):
    # before: macOS's ._NAME.jpg metadata files were tried as photos (run warned, detect and
    # classify exited 2), and classify took "shots/*.jpg" for a file name
    shots = tmp_path / "shots"
    shots.mkdir()
    for i in range(2):
        _photo(shots / f"p{i}.jpg", i, size=(64, 64))
    (shots / "._p0.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    summary = tmp_path / "s.json"
    assert main(["run", str(shots), "--summary", str(summary), "--quiet"]) == 0
    s = json.loads(summary.read_text())
    assert s["frames"] == 2 and s["skipped_frames"] == 0
    assert main(["detect", str(shots)]) == 0
    for given in (str(shots), str(shots / "p*.jpg")):
        capsys.readouterr()
        assert main(["classify", given]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert [ln.split(":")[0].rsplit("/", 1)[-1] for ln in out.splitlines()] == [
            "p0.jpg",
            "p1.jpg",
        ]


def test_every_command_reads_the_same_image_files(tmp_path, capsys):
    # before: classify FOLDER skipped .ppm and .pnm ("no images in this folder") that run and
    # classify FILE read: datasets and sources had two lists of image extensions
    import cv2

    shots = tmp_path / "shots"
    shots.mkdir()
    _photo(shots / "p0.jpg", 0, size=(64, 64))
    img = cv2.imread(str(shots / "p0.jpg"))
    for ext in ("ppm", "pnm"):
        assert cv2.imwrite(str(shots / f"q.{ext}"), img)
    (shots / "p0.jpg").unlink()
    summary = tmp_path / "s.json"
    assert main(["run", str(shots), "--summary", str(summary), "--quiet"]) == 0
    assert json.loads(summary.read_text())["frames"] == 2
    capsys.readouterr()
    assert main(["classify", str(shots)]) == 0, capsys.readouterr().err
    names = [ln.split(":")[0].rsplit("/", 1)[-1] for ln in capsys.readouterr().out.splitlines()]
    assert names == ["q.pnm", "q.ppm"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_a_glob_reports_broken_links_and_pipes_as_a_folder_does(tmp_path, tiny_model, capsys):
    # before: the glob dropped them silently (2 files, nothing skipped) where the folder
    # counted and reported them; detect scanned the glob with exit 0
    folder = tmp_path / "g"
    folder.mkdir()
    _photo(folder / "a.jpg", 1)
    _photo(folder / "b.png", 2)
    (folder / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(folder / "pipe.png")
    for source in (str(folder), str(folder / "*")):
        summary = tmp_path / "s.json"
        rc = main(["run", source, "--model", str(tiny_model), "--summary", str(summary), "--quiet"])
        err = capsys.readouterr().err
        assert rc == 1, err  # skipped, the others processed
        s = json.loads(summary.read_text())
        assert s["frames"] == 2 and s["skipped_frames"] == 2, source
        assert s["source"]["files"] == 4 and s["source"]["skipped_files"] == 2, source
        assert sum(line.endswith("; skipped") for line in err.splitlines()) == 2, err
    rc = main(["detect", str(folder / "*.jpg"), str(folder / "*.png")])
    out, err = capsys.readouterr()
    assert rc == 1
    assert sorted(Path(line.split(":")[0]).name for line in out.splitlines() if ":" in line) == [
        "a.jpg",
        "b.png",
    ]
    bad = [line for line in err.splitlines() if line.endswith("; skipped")]
    assert len(bad) == 2 and "broken.jpg" in bad[0] and "pipe.png" in bad[1], err


def test_a_floating_point_tiff_is_skipped_for_what_it_is(tmp_path):
    """OpenCV decodes a 32-bit float TIFF only unchanged; it was skipped as "corrupt, or not an
    image", which sends the user looking for damage that is not there."""
    assert cv2.imwrite(
        str(tmp_path / "f.tif"), np.random.default_rng(0).random((20, 30), np.float32)
    )
    _photo(tmp_path / "ok.png", 1)
    warnings: list[str] = []
    src = open_source(str(tmp_path), warn=warnings.append)
    assert src.read() is not None and src.read() is None
    assert warnings == [
        f"{tmp_path / 'f.tif'}: 32-bit floating-point samples; save it with 8 or 16 bits; skipped"
    ]


def test_a_summary_of_photos_has_the_same_keys_when_a_signal_stops_the_start_up(
    tmp_path, tiny_model, capsys
):
    """A SIGTERM during start-up wrote a summary of a photo source without `images` (the
    per-file results), a key every other summary of photos has: a script reading it failed."""
    import signal

    from edge_fer.runtime.pipeline import startup_summary

    _photo(tmp_path / "a.png", 1)
    summary = tmp_path / "s.json"
    assert main(["run", str(tmp_path), "--model", str(tiny_model), "--summary", str(summary),
                 "--quiet"]) == 0  # fmt: skip
    ran = json.loads(summary.read_text())
    stopped = startup_summary(ran["source"], signal.SIGTERM, {})
    assert stopped["images"] == [] and stopped["images_omitted"] == 0
    assert {"images", "images_omitted"} <= set(ran)  # the keys a complete run has
