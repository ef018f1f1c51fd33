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
import sys

from isr_direct_dynamics.config import run_command

COMMAND_MODULES: tuple[str, ...] = (
    "isr_direct_dynamics.cli",
    "isr_sim_bridge.world_cli",
    "isr_sim_bridge.camera_cli",
    "isr_sim_bridge.yolo_cli",
    "isr_training.cli",
    "isr_training.training_cli",
    "isr_px4_eval.tuning_cli",
    "isr_px4_eval.eval_cli",
    "isr_px4_eval.evidence_cli",
    "isr_px4_eval.pipeline_cli",
    "isr_px4_eval.demo",
)
"""Modules whose ``register(sub, bench_sub)`` adds subcommands, in help order."""


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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``isr`` console script."""
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
