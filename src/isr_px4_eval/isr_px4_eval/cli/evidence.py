"""``isr video`` and ``isr report``: annotated videos of bags, HTML report of an experiment.

``isr video BAG -o OUT.mp4 [--mode single|grid|side-by-side|map] [--drone I] [--bag2 OTHER]``
renders a rosbag2 bag (see :mod:`isr_px4_eval.evidence.video`); ``isr report EXPERIMENT_DIR
[-o report.html]`` writes the self-contained HTML report (see :mod:`isr_px4_eval.evidence.report`).
``isr record-npz REC.npz -o BAG`` converts an ``isr eval --record-dir`` recording to a bag.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from isr_direct_dynamics.io_checks import check_output_dir, check_output_file


def _video(args: argparse.Namespace) -> int:
    from isr_px4_eval.evidence.video import make_video

    check_output_file(args.out, "-o/--out")
    r = make_video(
        args.bag, args.out, mode=args.mode, drone=args.drone, bag2=args.bag2, fps=args.fps,
        max_frames=args.max_frames,
    )  # fmt: skip
    cut = " (bag cut short: video of what was recorded)" if r.truncated else ""
    print(
        f"[video] {r.path}: {r.frames} frames {r.width}x{r.height} ({r.mode}) in {r.seconds:.1f} s "
        f"({r.frames / max(r.seconds, 1e-9):.0f} frames/s){cut}"
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from isr_px4_eval.evidence.report import make_report

    if args.out:
        check_output_file(args.out, "-o/--out")
    else:
        check_output_file(Path(args.experiment) / "report.html", "report")
    path, missing = make_report(args.experiment, args.out, args.embed_video_mb)
    print(f"[report] {path}")
    for m in missing:
        print(f"[report] missing: {m}")
    return 0


def _npz(args: argparse.Namespace) -> int:
    from isr_px4_eval.evidence.npz import npz_to_bag

    check_output_dir(args.out, "-o/--out", new=True)
    print(f"[record] {npz_to_bag(args.npz, args.out, args.test_name, args.phase)}")
    return 0


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    """Add ``isr video``, ``isr report`` and ``isr record-npz``."""
    from isr_px4_eval.evidence.video import MODES

    p = sub.add_parser("video", help="annotated H.264 video of a rosbag2 bag", description=__doc__)
    p.add_argument("bag", help="bag directory, .mcap or .db3")
    p.add_argument("-o", "--out", required=True, help="output .mp4")
    p.add_argument("--mode", default="single", choices=MODES)
    p.add_argument("--drone", type=int, default=0, help="drone index (single, side-by-side, map)")
    p.add_argument("--bag2", help="second bag (side-by-side)")
    p.add_argument(
        "--fps", type=float, default=None, help="video frame rate (default: sim rate, <= 30)"
    )
    p.add_argument("--max-frames", type=int, default=None)
    p.set_defaults(func=_video)

    r = sub.add_parser("report", help="self-contained HTML report of an experiment directory")
    r.add_argument("experiment", help="experiments/<name> directory")
    r.add_argument(
        "-o", "--out", default=None, help="HTML file (default EXPERIMENT_DIR/report.html)"
    )
    r.add_argument(
        "--embed-video-mb",
        type=float,
        default=25.0,
        help="embed videos up to this total, else link",
    )
    r.set_defaults(func=_report)

    n = sub.add_parser("record-npz", help="convert an isr eval --record-dir .npz to a rosbag2 bag")
    n.add_argument("npz")
    n.add_argument("-o", "--out", required=True, help="bag directory to create")
    n.add_argument("--test-name", default="")
    n.add_argument("--phase", default="")
    n.set_defaults(func=_npz)
