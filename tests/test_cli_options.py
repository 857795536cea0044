"""The CLI's argument groups (edge_fer.cli.options): each option declared once, the same help and
defaults in every command, read back into the library's options objects; library errors that
name a parameter are shown with the command's flag."""

from __future__ import annotations

import argparse
import shlex

import pytest

from edge_fer.cli.main import build_parser, flag_for, main
from edge_fer.cli.options import (
    DETECTOR_DESTS,
    DetectorArgs,
    ModelArgs,
    OutputArgs,
    SourceArgs,
    TrackerArgs,
    run_options,
)
from edge_fer.detect.config import DetectorOptions
from edge_fer.errors import UserError
from edge_fer.runtime.runner import RunOptions
from edge_fer.runtime.tracker import TrackerOptions

# every command that takes detector options, with its --memory default (None: no --memory;
# "5; 1 for photos": none given, resolve() decides)
DETECTOR_COMMANDS = {"run": "5; 1 for photos", "bench": "5; 1 for photos", "detect": 1, "calibrate": None,
                     "export": None}  # fmt: skip


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.option_strings[-1]: a for a in p._actions if a.option_strings}


def test_detector_options_read_the_same_in_every_command() -> None:
    cmds = _commands()
    flags = {f"--{d.replace('_', '-')}" for d in DETECTOR_DESTS}
    seen: dict[str, tuple[str, argparse.Action]] = {}
    for name, memory in DETECTOR_COMMANDS.items():
        opts = _options(cmds[name])
        assert {"--cascade", "--min-size", "--max-size", "--threshold"} <= set(opts), name
        if memory is None:
            assert "--memory" not in opts
        else:  # the command's own default, and the help says which
            assert opts["--memory"].default == (memory if isinstance(memory, int) else None)
            assert f"(default {memory}" in opts["--memory"].help
        for flag in flags & set(opts):
            a = opts[flag]
            if flag in seen:
                first, b = seen[flag]
                assert (a.type, a.choices, a.metavar) == (b.type, b.choices, b.metavar), flag
                if flag != "--memory":  # its default is the command's, checked above
                    assert a.default == b.default, (flag, name, first)
                if flag not in ("--memory", "--scale-factor"):
                    assert a.help == b.help, (flag, name, first)
            else:
                seen[flag] = (name, a)
    # run and bench take every detector option; detect all but the upscaling ones
    assert {f for f in flags if f in _options(cmds["run"])} == flags
    assert {f for f in flags if f in _options(cmds["bench"])} == flags
    assert flags - set(_options(cmds["detect"])) == {"--upscale-to", "--upscale-interpolation"}
    # the scale factor's help names the upscaled frames' 1.05 only where frames are upscaled
    assert "--upscale-to" in _options(cmds["run"])["--scale-factor"].help
    assert "--upscale-to" not in _options(cmds["detect"])["--scale-factor"].help


def test_run_and_bench_share_model_source_and_tracker_options() -> None:
    cmds = _commands()
    run, bench = _options(cmds["run"]), _options(cmds["bench"])
    shared = (
        "--model",
        "--precision",
        "--threads",
        "--detect-threads",
        "--iou",
        "--min-hits",
        "--max-misses",
        "--hold",
        "--min-track-score",
        "--smoothing",
        "--input-width",
        "--sequence",
        "--reconnect-timeout",
        "--max-frames",
    )
    for flag in shared:
        assert run[flag].help == bench[flag].help and run[flag].default == bench[flag].default
    assert run["--backend"].default == "onnxruntime" and bench["--backend"].default is None
    assert "--trt-precision" in run and "--trt-precision" not in bench


def _parse(groups, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    for g in groups:
        g.add_to(p)
    return p.parse_args(argv)


def test_defaults_are_the_library_defaults() -> None:
    """No flag given: the options objects are the library's own defaults (no second set of
    defaults in the CLI)."""
    groups = [OutputArgs(), SourceArgs(), ModelArgs(), DetectorArgs(), TrackerArgs()]
    args = _parse(groups, [])
    assert run_options(args, "clip.mp4", groups) == RunOptions(source="clip.mp4")
    assert DetectorArgs(memory=1).parse(_parse([DetectorArgs(memory=1)], [])).memory == 1


def test_groups_round_trip_into_options() -> None:
    groups = [OutputArgs(), SourceArgs(), ModelArgs(), DetectorArgs(), TrackerArgs()]
    argv = shlex.split(
        "--out a.mp4 --events e.jsonl --summary s.json --show --preview-port 0 "
        "--preview-host 0.0.0.0 --input-width 640 --input-height 480 --input-rate 15 "
        "--input-flip rotate-180 --sequence --reconnect-timeout 5 --max-frames 9 "
        "--model m.onnx --precision fp32 --backend tensorrt --threads 3 --detect-threads 2 "
        "--trt-precision fp16 --calib-cache c.cache --cascade c.pico --min-size 10% "
        "--max-size 300 --scale-factor 1.2 --stride-factor 0.05 --angle 0,1/32 "
        "--grouping greedy --cluster-iou 0.4 --threshold 7 --memory 3 --upscale-to 0 "
        "--upscale-interpolation cubic --verifier none --verifier-min-prob 0.7 --iou 0.3 "
        "--min-hits 1 --max-misses 4 --min-track-score 50 --hold 9 --smoothing 1"
    )
    opts = run_options(_parse(groups, argv), "cam", groups)
    assert opts == RunOptions(
        source="cam",
        out="a.mp4",
        events="e.jsonl",
        summary="s.json",
        show=True,
        preview_port=0,
        preview_host="0.0.0.0",
        max_frames=9,
        reconnect_timeout=5.0,
        source_options={"width": 640, "height": 480, "fps": 15.0, "flip": "rotate-180"},
        stills=False,
        model="m.onnx",
        precision="fp32",
        backend="tensorrt",
        threads=3,
        detect_threads=2,
        trt_precision="fp16",
        calib_cache="c.cache",
        cascade="c.pico",
        smoothing=1.0,
        detector=DetectorOptions(
            min_size=0.1,
            max_size=300,
            scale_factor=1.2,
            stride_factor=0.05,
            angle=(0.0, 1 / 32),
            grouping="greedy",
            cluster_iou=0.4,
            threshold=7.0,
            memory=3,
            upscale_to=0,
            upscale_interpolation="cubic",
            verifier="none",
            verifier_min_prob=0.7,
        ),
        tracker=TrackerOptions(iou=0.3, min_hits=1, max_misses=4, hold=9, min_score=50.0),
    )


def test_a_group_limited_to_some_options() -> None:
    g = DetectorArgs(only=("cascade", "min_size", "threshold"))
    args = _parse([g], ["--min-size", "48", "--threshold", "3"])
    assert g.parse(args) == DetectorOptions(min_size=48, threshold=3.0)
    with pytest.raises(SystemExit):
        _parse([g], ["--memory", "3"])
    with pytest.raises(ValueError, match="unknown detector options"):
        DetectorArgs(only=("nope",))


def test_user_error_names_its_parameter() -> None:
    exc = UserError("must be >= 1, got 0", param="batch_size")
    assert str(exc) == "batch_size must be >= 1, got 0"
    assert exc.render("--batch-size") == "--batch-size must be >= 1, got 0"
    assert str(UserError("no such file: x")) == "no such file: x"


def test_the_cli_shows_the_flag_of_the_parameter() -> None:
    parser = build_parser()
    args = parser.parse_args(["eval", "--data", "d"])
    assert flag_for(parser, args, "batch_size") == "--batch-size"
    assert flag_for(parser, args, "json_out") == "--json"  # dest and flag differ
    assert flag_for(parser, args, "no_such_parameter") is None


def test_a_library_error_reaches_the_user_with_the_flag(capsys, tmp_path) -> None:
    # synthetic_clip (edge_fer.runtime.bench) refuses faces=9 naming its parameter `faces`
    rc = main(["bench", "--synthetic", "64x64", "--faces", "9", "--json", str(tmp_path / "b.json")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == "edge-fer bench: error: --faces must be in 1..8, got 9"


def test_default_detector_threads_leave_a_core_above_two() -> None:
    """cores - 1 (one core decodes and classifies), but both cores of a 2-core machine, where
    two threads measured faster (docs/runtime.md); never 0."""
    from edge_fer.runtime.runner import default_detect_threads

    assert [default_detect_threads(c) for c in (1, 2, 3, 4, 8)] == [1, 2, 2, 3, 7]


def test_outputs_given_as_uris_or_as_a_second_positional(capsys, tmp_path, monkeypatch) -> None:
    """jetson-utils' habits: `--out display://0` was "folder display: does not exist", a
    file:// output "folder file:/... does not exist", and `run IN OUT.mp4` got the hint for an
    unquoted glob."""
    from edge_fer.cli.options import output_path

    assert output_path("file:///tmp/a%20b/x.mp4") == "/tmp/a b/x.mp4"
    assert output_path("file://localhost/tmp/out/") == "/tmp/out/"
    monkeypatch.chdir(tmp_path)
    clip = tmp_path / "in.avi"
    clip.write_bytes(b"")  # never opened: every refusal comes first
    for argv, needle in (
        (["--out", "display://0"], "not display:// URIs; --show opens a window"),
        (["--out", "rtp://127.0.0.1:5000"], "not rtp:// URIs"),
        (["--events", "file://rel/e.jsonl"], "file:///ABSOLUTE/PATH"),
        (["out.mp4"], "out.mp4 was given after it: for an output, say which (--out out.mp4"),
    ):
        try:
            rc = main(["run", str(clip), *argv])
        except SystemExit as exc:  # argparse's own refusal of a flag's value
            rc = exc.code
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1 and needle in lines[0], (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.avi"]


@pytest.mark.parametrize(
    "argv",
    [
        "eval --data ''",
        "eval --data ' ' --model m.onnx",
        "eval --data d --model ''",
        "train --data ''",
        "train --data d --teacher ''",
        "calibrate --data ''",
        "experiment architectures --data '' --out r",
        "export --checkpoint '' --out m.onnx",
        "detect x.jpg --cascade ''",
        "run x.jpg --model ''",
        "eval-detector --cascade ''",
    ],
)
def test_an_empty_input_path_is_one_line(capsys, tmp_path, monkeypatch, argv) -> None:
    """An empty path became Path(""), the working folder: `eval --data ''` scored whatever
    images lay in it, `detect --cascade ''` said "cascade .: is a folder"."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(shlex.split(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "is empty: give a path" in err[0], err


def test_run_as_the_program_signals_are_ignored_once_the_command_is_done() -> None:
    """After its outputs were complete, `edge-fer run` spent 5-7 s in interpreter shutdown on
    a loaded machine, and a SIGTERM then killed it with 143 while its summary said complete.
    As the program (argv None) the signals stay ignored to the exit; called with an argv (from
    Python) the caller's handlers come back."""
    import subprocess
    import sys

    code = (
        "import signal, sys\n"
        "from edge_fer.cli.main import main\n"
        "sys.argv = ['edge-fer', 'models']\n"
        "before = signal.getsignal(signal.SIGTERM)\n"
        "main(['models'])\n"
        "print('RESTORED', signal.getsignal(signal.SIGTERM) is before)\n"
        "main()\n"
        "print('IGNORED', signal.getsignal(signal.SIGTERM) is signal.SIG_IGN,"
        " signal.getsignal(signal.SIGINT) is signal.SIG_IGN)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    said_ = [ln for ln in p.stdout.splitlines() if ln.startswith(("RESTORED", "IGNORED"))]
    assert said_ == ["RESTORED True", "IGNORED True True"], (p.stdout[-300:], p.stderr)
