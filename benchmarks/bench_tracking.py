"""Face finding and track stability on the two real NRC-IIT clips (`../shared/data/videos`).

Runs `edge-fer run` (bundled model and cascade, default options unless given) on each clip and
scores its events against the reference face boxes in `benchmarks/data/nrc_iit_faces.json`
(made and checked by eye with `benchmarks/annotate_videos.py`; every frame shows the face):

- found: frames on which a reported box overlaps the face (IoU >= 0.3);
- face ids: the track ids the face carried; id switches: changes of that id between found frames;
- other boxes / frame: reported boxes that are not the face (false positives).

    python benchmarks/bench_tracking.py [--cascade C] [--threshold T] [--label NAME]

Results: benchmarks/results/tracking.json (one entry per label) and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common import read_events, save_json

from edge_fer.cli.options import DetectorArgs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
REFERENCE = ROOT / "benchmarks" / "data" / "nrc_iit_faces.json"
RESULTS = ROOT / "benchmarks" / "results" / "tracking.json"
# `edge-fer run`'s own detector flags (the same names, meaning and help), --memory 5 as there
DETECTOR = DetectorArgs(memory=5, only=("cascade", "threshold", "upscale_to", "memory", "grouping",
                                        "cluster_iou", "verifier", "verifier_min_prob"))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    DETECTOR.add_to(ap)
    ap.add_argument(
        "--min-track-score",
        type=float,
        default=None,
        help="as edge-fer run --min-track-score (default: the cascade's setting)",
    )
    ap.add_argument(
        "--angle",
        dest="angles",
        default=None,
        help="scan angle(s) in turns, as edge-fer run --angle (default: upright)",
    )
    ap.add_argument("--label", default="defaults", help="name of this configuration in the JSON")
    ap.add_argument("--no-save", action="store_true", help="print only")
    args = ap.parse_args(argv)
    if not (SHARED / "data" / "videos").is_dir():
        print(f"bench_tracking: {SHARED}/data/videos not found", file=sys.stderr)
        return 2
    from edge_fer.detect import parse_angles
    from edge_fer.runtime.runner import RunOptions, run_video
    from edge_fer.runtime.track_eval import load_reference, score_single_face

    ref = load_reference(REFERENCE)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for clip, boxes in ref.items():
            events = Path(tmp) / f"{clip}.jsonl"
            opts = RunOptions(
                source=str(SHARED / "data" / "videos" / clip),
                events=str(events),
                **DETECTOR.run_fields(args),  # cascade and detector options
            )
            opts.tracker.min_score = args.min_track_score
            if args.angles:
                opts.detector.angle = parse_angles(args.angles)
            s = run_video(opts, handle_signals=False).summary
            lines = read_events(events)
            r = score_single_face(lines, boxes)
            r["tracks"] = s["track_count"]
            rows[clip] = r
    print(
        f"{args.label}: cascade {args.cascade or 'bundled'}, threshold "
        f"{args.threshold or 'default'}, upscale-to {args.upscale_to}, memory {args.memory}, "
        f"min track score {args.min_track_score}, verifier {args.verifier or 'default'} "
        f"{args.verifier_min_prob or ''}"
    )
    print("| clip | frames | found | face ids | id switches | other boxes / frame | tracks |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for clip, r in rows.items():
        print(
            f"| {clip} | {r['frames']} | {r['found_rate']:.3f} | {len(r['face_track_ids'])} | "
            f"{r['id_switches']} | {r['other_per_frame']:.2f} | {r['tracks']} |"
        )
    if not args.no_save:
        old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        old[args.label] = {
            "cascade": args.cascade,
            "threshold": args.threshold,
            "upscale_to": args.upscale_to,
            "memory": args.memory,
            "min_track_score": args.min_track_score,
            "angle": args.angles,
            "grouping": args.grouping,
            "cluster_iou": args.cluster_iou,
            "verifier": args.verifier,
            "verifier_min_prob": args.verifier_min_prob,
            "clips": rows,
        }
        save_json(RESULTS, old)
    return 0


if __name__ == "__main__":
    sys.exit(main())
