"""Detector settings: what the bundled cascades, the options and the frame size resolve to.

The table below was recorded with the code before detect/config.py existed (runner's nine
`cascade_setting` calls and its scale-factor patch); it must hold unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from paths import ASSETS

from edge_fer.detect import lowres_cascade_path

VGA, QQVGA, HD = (480, 640), (120, 160), (720, 1280)

# the bundled cascades with default options (both run face_verify.onnx behind them)
DEFAULT = {
    "cascade": "face_default.pico",
    "min_size": 24,  # issue 17: was 0.1 of the shorter side; frames under 240 px keep 0.1
    "min_pixels": 1.0,
    "max_size": 1.0,
    "scale_factor": 1.1,
    "stride_factor": 0.1,
    "angles": (0.0,),
    "grouping": "chain",
    "cluster_iou": 0.3,
    "threshold": 10.0,
    "memory": 5,
    "upscale_to": 240,
    "upscale_interpolation": "linear",
    "verifier": "face_verify.onnx",
    "verifier_min_prob": 0.8,  # issue 17: face_default.json, chosen by bench_yunet.py (was 0.5)
    "track_min_score": None,
    # issue 17 (new): video scans its fine scales in a rotation, ~200k windows a frame (frames
    # over 640x480: the detector's schedule.MIN_PIXELS); one frame of memory: every scale
    "fine_budget": 200000,
    "fine_span": 4.0,
}
LOWRES = {
    **DEFAULT,
    "cascade": "face_lowres.pico",
    "min_size": 0.1,  # its frames are under 240 px: 0.1 of them is under 24 px
    "min_pixels": 20.0,
    "scale_factor": 1.05,
    "grouping": "greedy",
    "cluster_iou": 0.15,
    "upscale_to": 0,
    "verifier_min_prob": 0.5,
}

# (frame shape, --cascade, options (tracker_min_score: the tracker's), changes from the base)
CASES = [
    (VGA, None, {}, {}),
    (QQVGA, None, {}, {}),
    ((0, 0), None, {}, {}),  # a source that does not say its size: the default cascade
    (HD, None, {}, {}),
    (HD, None, {"fine_budget": 0, "fine_span": 3.0}, {"fine_budget": 0, "fine_span": 3.0}),
    # an explicit cascade is kept; face_default upscales 160x120 to 240, scanned at 1.05
    (QQVGA, "face_default.pico", {}, {**DEFAULT, "scale_factor": 1.05}),
    (VGA, "face_lowres.pico", {}, {**LOWRES, "min_size": 24}),
    # every option overrides the cascade's setting
    (VGA, None, {"min_size": 30}, {"min_size": 30}),
    (QQVGA, None, {"min_size": 30}, {"min_size": 30, "min_pixels": 1.0}),
    (QQVGA, None, {"min_size": 0.2}, {"min_size": 0.2, "min_pixels": 1.0}),
    (QQVGA, None, {"max_size": 0.8}, {"max_size": 0.8}),
    (VGA, None, {"scale_factor": 1.2}, {"scale_factor": 1.2}),
    (QQVGA, None, {"scale_factor": 1.2}, {"scale_factor": 1.2}),
    (QQVGA, "face_default.pico", {"scale_factor": 1.2}, {**DEFAULT, "scale_factor": 1.2}),
    (QQVGA, None, {"stride_factor": 0.05}, {"stride_factor": 0.05}),
    (VGA, None, {"angle": (0.0, 1 / 32)}, {"angles": (0.0, 0.03125)}),
    (VGA, None, {"grouping": "greedy"}, {"grouping": "greedy"}),
    (QQVGA, None, {"grouping": "chain"}, {"grouping": "chain"}),
    (VGA, None, {"cluster_iou": 0.25}, {"cluster_iou": 0.25}),
    (QQVGA, None, {"cluster_iou": 0.25}, {"cluster_iou": 0.25}),
    (VGA, None, {"threshold": 7.0}, {"threshold": 7.0}),
    (QQVGA, None, {"threshold": 7.0}, {"threshold": 7.0}),
    # one frame, no pooling: the cascade's single-image threshold
    (VGA, None, {"memory": 1}, {"memory": 1, "threshold": 0.0, "fine_budget": 0}),
    # face_lowres.json: one photo gets its own threshold and scale step (scale_factor), video
    # the pooled ones (memory_threshold, memory_scale_factor)
    (
        QQVGA,
        None,
        {"memory": 1},
        {"memory": 1, "threshold": 2.5, "scale_factor": 1.1, "fine_budget": 0},
    ),
    (VGA, None, {"upscale_to": 200}, {"upscale_to": 200}),
    (VGA, None, {"upscale_to": 0}, {"upscale_to": 0}),
    (QQVGA, None, {"upscale_to": 200}, {"upscale_to": 200}),
    (
        QQVGA,
        "face_default.pico",
        {"upscale_to": 0},
        {**DEFAULT, "upscale_to": 0, "scale_factor": 1.1},
    ),  # not upscaled: its own 1.1
    (VGA, None, {"upscale_interpolation": "cubic"}, {"upscale_interpolation": "cubic"}),
    (QQVGA, None, {"upscale_interpolation": "cubic"}, {"upscale_interpolation": "cubic"}),
    (VGA, None, {"verifier": "none"}, {"verifier": None, "verifier_min_prob": None}),
    # --verifier none: the low-resolution cascade's track score gate comes back
    (
        QQVGA,
        None,
        {"verifier": "none"},
        {"verifier": None, "verifier_min_prob": None, "track_min_score": 50.0},
    ),
    (VGA, None, {"verifier_min_prob": 0.6}, {"verifier_min_prob": 0.6}),
    (QQVGA, None, {"verifier_min_prob": 0.8}, {"verifier_min_prob": 0.8}),
    (VGA, None, {"tracker_min_score": 20.0}, {"track_min_score": 20.0}),
    (QQVGA, None, {"tracker_min_score": 20.0}, {"track_min_score": 20.0}),
    (
        QQVGA,
        None,
        {"verifier": "none", "tracker_min_score": 20.0},
        {"verifier": None, "verifier_min_prob": None, "track_min_score": 20.0},
    ),
    (
        QQVGA,
        None,
        {"verifier": str(ASSETS / "face_verify.onnx"), "verifier_min_prob": 0.7},
        {"verifier_min_prob": 0.7},
    ),
]


def _resolved(shape, cascade, tracker_min_score=None, **options) -> dict:
    """What a run on frames of `shape` scans with: the resolved settings, which must also be
    what its detector was built with."""
    from edge_fer.detect.config import DetectorOptions
    from edge_fer.detect.factory import DetectorPicker

    pick = DetectorPicker(
        cascade, DetectorOptions(**options), upscaling=True, track_min_score=tracker_min_score
    )
    r, det = pick.get(shape)
    inner = getattr(det, "detector", det)
    built = {
        "min_size": inner.min_size,
        "min_pixels": inner.min_pixels,
        "max_size": inner.max_size,
        "scale_factor": inner.scale_factor,
        "stride_factor": inner.stride_factor,
        "grouping": inner.grouping,
        "cluster_iou": inner.iou,
        "threshold": inner.threshold,
        "fine_budget": inner.fine_budget,
        "fine_span": inner.fine_span,
    }
    assert built == {k: getattr(r, k) for k in built}
    assert inner.angles == (r.angle if isinstance(r.angle, tuple) else (r.angle,))
    ver = getattr(det, "verifier", None)
    got = (Path(ver.path), ver.min_prob) if ver else (None, None)
    assert got == (r.verifier, r.verifier_min_prob)
    return {
        "cascade": r.cascade.name,
        "min_size": r.min_size,
        "min_pixels": r.min_pixels,
        "max_size": r.max_size,
        "scale_factor": r.scale_factor,
        "stride_factor": r.stride_factor,
        "angles": tuple(inner.angles),
        "grouping": r.grouping,
        "cluster_iou": r.cluster_iou,
        "threshold": r.threshold,
        "memory": r.memory,
        "upscale_to": r.upscale_to,
        "upscale_interpolation": r.upscale_interpolation,
        "verifier": r.verifier.name if r.verifier else None,
        "verifier_min_prob": r.verifier_min_prob,
        "track_min_score": r.track_min_score,
        "fine_budget": r.fine_budget,
        "fine_span": r.fine_span,
    }


@pytest.mark.parametrize("shape, cascade, options, changes", CASES)
def test_settings_resolve_as_before(shape, cascade, options, changes) -> None:
    if lowres_cascade_path() is None:
        pytest.skip("the bundled low-resolution cascade is not installed")
    small = 0 < min(shape) < 240 and cascade is None
    want = {**(LOWRES if small else DEFAULT), **changes}
    if 0 < min(shape) < 240 and "min_size" not in options:  # 0.1 of it is under 24 px
        want["min_size"] = 0.1
    got = _resolved(shape, str(ASSETS / cascade) if cascade else None, **options)
    assert got == want


def test_every_bundled_setting_is_a_typed_field() -> None:
    import dataclasses
    import json

    from edge_fer.detect import cascade_settings
    from edge_fer.detect.config import CascadeSettings

    fields = {f.name for f in dataclasses.fields(CascadeSettings)} - {"cascade", "raw"}
    for name in ("face_default", "face_lowres"):
        raw = json.loads((ASSETS / f"{name}.json").read_text())
        s = CascadeSettings.for_cascade(ASSETS / f"{name}.pico")
        assert set(raw) <= fields, set(raw) - fields
        assert s is CascadeSettings.for_cascade(ASSETS / f"{name}.pico")  # read once
        assert cascade_settings(ASSETS / f"{name}.pico") == raw
        for k, v in raw.items():
            got = getattr(s, k)
            if k == "verifier":
                assert got == ASSETS / v and got.is_file()
            else:  # numbers typed as the field says (JSON's 20 for min_face is 20.0)
                want = int if k == "upscale_to" else str if isinstance(v, str) else float
                assert got == v and type(got) is want, k


def test_settings_file_read_directly(tmp_path) -> None:
    from edge_fer.detect.config import CascadeSettings, DetectorOptions, resolve
    from edge_fer.errors import UserError

    side = tmp_path / "c.json"
    side.write_text('{"threshold": 3, "upscale_to": 0, "grouping": "greedy", "other": 1}')
    s = CascadeSettings.from_json(side)
    assert (s.threshold, s.upscale_to, s.grouping, s.scale_factor) == (3.0, 0, "greedy", None)
    assert isinstance(s.threshold, float) and s.raw["other"] == 1
    # scale steps for one image and for frames pooled over the memory, as thresholds are
    side.write_text('{"scale_factor": 1.2, "memory_scale_factor": 1.05}')
    s = CascadeSettings.from_json(side)
    assert resolve(DetectorOptions(memory=1), s, VGA).scale_factor == 1.2
    assert resolve(DetectorOptions(), s, VGA).scale_factor == 1.05
    assert resolve(DetectorOptions(), s, VGA, stills=True).scale_factor == 1.2
    assert resolve(DetectorOptions(scale_factor=1.3), s, VGA).scale_factor == 1.3
    side.write_text('{"scale_factor": 1.2}')  # no memory_scale_factor: one step for both
    assert resolve(DetectorOptions(), CascadeSettings.from_json(side), VGA).scale_factor == 1.2
    side.write_text('{"memory_scale_factor": 1.0}')
    with pytest.raises(UserError, match="'memory_scale_factor' must be a number in 1.001..10"):
        CascadeSettings.from_json(side)
    side.write_text('{"threshold": 1e999999}')  # JSON's Infinity spelled as a number
    with pytest.raises(UserError, match="'threshold' must be a finite number"):
        CascadeSettings.from_json(side)
    side.write_text('{"threshold": ' + "9" * 400 + "}")  # an int no float holds
    with pytest.raises(UserError, match="'threshold' must be a finite number"):
        CascadeSettings.from_json(side)


def test_resolve_without_upscaling_and_bad_min_prob() -> None:
    """Callers that scan frames as they are (detect, calibration): nothing is upscaled, so no
    finer scale step; a verifier probability out of range fails only when a verifier runs."""
    from edge_fer.detect.config import CascadeSettings, DetectorOptions, resolve
    from edge_fer.errors import UserError

    s = CascadeSettings.for_cascade(ASSETS / "face_default.pico")
    r = resolve(DetectorOptions(), s, QQVGA)
    assert (r.upscale_to, r.scale_factor) == (0, 1.1)
    r = resolve(DetectorOptions(), s, QQVGA, upscaling=True)
    assert (r.upscale_to, r.scale_factor) == (240, 1.05)
    with pytest.raises(UserError, match=r"verifier_min_prob must be in \[0, 1\], got 1.5"):
        resolve(DetectorOptions(verifier_min_prob=1.5), s, VGA)
    assert resolve(DetectorOptions(verifier="none", verifier_min_prob=1.5), s, VGA).verifier is None
    # before: accepted here, then a KeyError on the first frame that needed upscaling
    with pytest.raises(UserError, match="upscale_interpolation must be auto, nearest") as e:
        resolve(DetectorOptions(upscale_interpolation="bogus"), s, QQVGA, upscaling=True)
    assert e.value.param == "upscale_interpolation"


def test_picker_loads_each_file_once() -> None:
    if lowres_cascade_path() is None:
        pytest.skip("the bundled low-resolution cascade is not installed")
    from edge_fer.detect.config import DetectorOptions
    from edge_fer.detect.factory import DetectorPicker

    pick = DetectorPicker(None, DetectorOptions())
    big, small = pick(VGA), pick(QQVGA)
    assert pick(VGA) is big and pick((0, 0)) is big and pick((100, 100)) is small
    assert big.detector.cascade is not small.detector.cascade
    # face_verify.onnx behind both; their min_prob differs (0.8, 0.5), so one Verifier each
    assert big.verifier.path == small.verifier.path
    assert pick.used == {"face_default.pico", "face_lowres.pico"}


def test_summary_reports_the_values_used(tmp_path) -> None:
    """summary.json's "detector": the resolved values, the verifier that ran included."""
    if lowres_cascade_path() is None:
        pytest.skip("the bundled low-resolution cascade is not installed")
    import cv2
    import numpy as np

    from edge_fer.detect.config import DetectorOptions
    from edge_fer.runtime.runner import RunOptions, run_video

    clip = tmp_path / "gray.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(3):
        w.write(np.full((120, 160, 3), 60 + 40 * i, np.uint8))
    w.release()
    s = run_video(RunOptions(source=str(clip)), handle_signals=False).summary
    want = {k: v for k, v in LOWRES.items() if k not in ("track_min_score", "angles")}
    assert s["detector"] == {**want, "angle": 0.0}
    assert Path(s["verifier"]["path"]).name == "face_verify.onnx"
    assert Path(s["cascade"]).name == "face_lowres.pico" and s["tracker"]["min_score"] is None
    opts = RunOptions(source=str(clip), detector=DetectorOptions(verifier="none"))
    s = run_video(opts, handle_signals=False).summary
    assert s["detector"]["verifier"] is None and s["verifier"] is None
    assert s["tracker"]["min_score"] == 50.0


def test_options_of_the_wrong_type_are_named() -> None:
    """A string for a number was a bare TypeError in resolve() ('0.3' < 0) or taken as the
    number ('5'); 100.5 and 2.5 for integers were truncated; DetectorPicker(None, None) was an
    AttributeError."""
    import numpy as np

    from edge_fer.detect.config import DetectorOptions
    from edge_fer.detect.factory import DetectorPicker
    from edge_fer.errors import UserError

    for kw in (
        {"memory": "5"},
        {"min_size": "24"},
        {"max_size": None},
        {"cluster_iou": "0.3"},
        {"threshold": "5"},
        {"upscale_to": 100.5},
        {"fine_budget": float("nan")},
        {"fine_budget": 2.5},
        {"verifier_min_prob": True},
        {"grouping": 3},
    ):
        with pytest.raises(UserError) as e:
            DetectorOptions(**kw)
        assert e.value.param == next(iter(kw)), kw
    assert DetectorOptions(min_size=np.float32(24), memory=np.int64(3)).memory == 3
    with pytest.raises(UserError) as e:
        DetectorPicker(None, None)  # type: ignore[arg-type]
    assert e.value.param == "opts"
