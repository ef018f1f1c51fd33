"""The ``isr`` command line: one subcommand per capability of the workspace.

Each package contributes a ``register(sub, bench_sub)`` function in a ``*cli`` module that adds
its subcommands to ``sub`` (``isr <command>``) and its benchmarks to ``bench_sub``
(``isr bench <target>``); every subcommand sets ``func(args) -> int``. This module only collects
them, so that the packages keep their one-way dependencies.

Errors a user can cause (bad config, missing file, bad value) print one line ``error: ...`` and
exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys

from isr_direct_dynamics.config import ConfigError, check_device, run_command

COMMAND_MODULES: tuple[str, ...] = (
    "isr_direct_dynamics.cli",
    "isr_sim_bridge.world_cli",
    "isr_sim_bridge.camera_cli",
    "isr_sim_bridge.yolo_cli",
    "isr_training.cli",
    "isr_training.training_cli",
    "isr_px4_eval.cli.tuning",
    "isr_px4_eval.cli.eval",
    "isr_px4_eval.cli.evidence",
    "isr_px4_eval.cli.pipeline",
    "isr_px4_eval.pipeline.demo",
)
"""Modules whose ``register(sub, bench_sub)`` adds subcommands, in help order."""


_COUNT = (1, 10_000_000)
_DURATIONS = (
    "control_dt duration duration_s episode_seconds fps grid_dt grid_seconds max_seconds "
    "seconds record_seconds window max_speed takeoff_altitude"
).split()
"""Durations and rates: floats that must be > 0 (the lower bound of their range is exclusive)."""

ARG_RANGES: dict[str, tuple[float, float]] = {
    # counts (>= 1)
    **dict.fromkeys(
        (
            "candidates episodes epochs fit_sequences grid_drones iterations max_frames min_steps "
            "minibatches num_steps population scale sequences steps video_max_frames windows"
        ).split(),
        _COUNT,
    ),
    "drones": (1, 2**20),
    "drones_per_world": (1, 32),
    "unique_worlds": (1, 100_000),
    "worlds": (1, 100_000),
    "threads": (0, 1024),
    # indices and seeds (>= 0)
    **dict.fromkeys("drone seed first_seed world_seed".split(), (0, 2**31 - 1)),
    # durations and rates (> 0; the lower bound is exclusive for floats)
    **dict.fromkeys(_DURATIONS, (0.0, 1e6)),
    "episode_seconds": (0.0, 1e5),  # 1,000,000 control steps at 0.1 s (the task's maximum)
    # non-negative quantities
    **dict.fromkeys("burn_in max_delay min_box_px tilt_drag embed_video_mb".split(), (0.0, 1e6)),
    **dict.fromkeys("conf fit_fraction target_bias".split(), (0.0, 1.0)),
    "pitch_deg": (-90.0, 90.0),
}
"""Allowed range of every numeric option, by its ``dest`` (the one validation layer of the
command line): integer options are ``lo <= v <= hi``; float options must be finite and
``lo < v <= hi`` for durations/rates, ``lo <= v <= hi`` for the others."""
_EXCLUSIVE_LOW = frozenset(_DURATIONS)


def _number_type(base: type, dest: str, option: str):  # noqa: ANN202 - an argparse type
    lo, hi = ARG_RANGES.get(dest, (-1e15, 1e15))

    def parse(text: str) -> int | float:
        try:
            value = base(text)
        except (ValueError, OverflowError):
            kind = "an integer" if base is int else "a number"
            raise argparse.ArgumentTypeError(f"expects {kind}, got {text!r}") from None
        if base is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        low_ok = value > lo if (base is float and dest in _EXCLUSIVE_LOW) else value >= lo
        if not (low_ok and value <= hi):
            op = ">" if (base is float and dest in _EXCLUSIVE_LOW) else ">="
            raise argparse.ArgumentTypeError(f"must be {op} {lo:g} and <= {hi:g}, got {text}")
        return value

    parse.__name__ = base.__name__  # argparse names the type in its messages
    return parse


def _device_type(option: str):  # noqa: ANN202 - an argparse type
    def parse(text: str) -> str:
        try:
            check_device(text, option)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc.reason)) from None
        return text

    return parse


def _validate_options(parser: argparse.ArgumentParser) -> None:
    """Give every numeric and device option of ``parser`` (and its subcommands) its checked type."""
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walker
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                _validate_options(sub)
            continue
        option = action.option_strings[-1] if action.option_strings else action.dest
        if action.type in (int, float):
            action.type = _number_type(action.type, action.dest, option)
        elif action.dest == "device" and action.type is None:
            action.type = _device_type(option)


def build_parser() -> argparse.ArgumentParser:
    """The full ``isr`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="isr",
        description="ISR drone workspace: fast training, full-fidelity evaluation, evidence.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = sub.add_parser("bench", help="benchmarks that print one JSON object")
    bench_sub = bench.add_subparsers(dest="bench_target", required=True, metavar="TARGET")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, bench_sub)
    _validate_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``isr`` console script."""
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
