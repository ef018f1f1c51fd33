"""``isr pipeline``: train -> evaluate -> parity -> record -> videos -> report in one command.

Examples::

    isr pipeline demo --preset quick                       # minutes on 2 CPU cores
    isr pipeline demo --preset quick --steps 200000 --episodes 2
    isr pipeline demo --world-seeds 100000-100007 --set bc.epochs=20
    isr pipeline --resume experiments/demo_20260101_120000 # finish (or redo failed stages)
    isr pipeline --resume experiments/verify_20260101_1200 # evaluate an `isr train` experiment

Everything lands in ``experiments/<NAME>_<YYYYmmdd_HHMMSS>/`` (see
:mod:`isr_px4_eval.pipeline.full` for the stages and the layout). ``--set KEY=VALUE`` changes the
training config (as ``isr train --set``), ``--steps`` the RL budget (``rl.ppo.total_timesteps``,
or ``rl.sb3_total_timesteps`` for SB3 learners), ``--episodes`` the evaluation episodes per world.
With ``--resume`` the experiment's ``config.yaml`` and ``pipeline.json`` are the configuration;
options that would change them are refused.

Exit status: 0 when every stage finished, 1 when one failed (the others still ran; see
``pipeline.json`` and ``stages/<stage>.failed``), 2 for a user error (bad option, bad config
key, missing or partial experiment directory for ``--resume``).
"""

from __future__ import annotations

import argparse
import sys
import time

from isr_direct_dynamics.config import ConfigError

PIPELINE_OPTION_FLAGS = {
    "world_seeds": "--world-seeds",
    "episodes": "--episodes",
    "seed": "--seed",
    "record_seconds": "--record-seconds",
    "grid_seconds": "--grid-seconds",
    "grid_drones": "--grid-drones",
    "video_max_frames": "--video-max-frames",
    "device": "--device",
}
"""PipelineOptions field -> flag."""


def _options_from_args(args: argparse.Namespace, base):
    """``base`` (PipelineOptions) with the flags that were given; the names of those flags."""
    from isr_px4_eval.evaluation.run import parse_seeds

    given = []
    for name in PIPELINE_OPTION_FLAGS:
        v = getattr(args, name, None)
        if v is None:
            continue
        if name == "world_seeds":
            v = parse_seeds(v)
        setattr(base, name, v)
        given.append(name)
    return base, given


def run_pipeline_cli(args: argparse.Namespace) -> int:
    """``isr pipeline``."""
    from isr_px4_eval.pipeline.full import (
        PIPELINE_STAGES,
        PipelineOptions,
        final_text,
        load_options,
        open_experiment,
        run_full_pipeline,
    )
    from isr_training.pipeline import Experiment, resolve_config

    stages = None if args.stage in (None, "all") else [args.stage]
    if args.stage not in (None, "all") and args.stage not in PIPELINE_STAGES:
        raise ConfigError(f"unknown stage '{args.stage}'")
    if args.resume:
        bad = [
            flag
            for flag, v in (
                ("--preset", args.preset),
                ("--set", args.set),
                ("--steps", args.steps),
                ("--config", args.config),
                ("--quality", args.quality),
            )
            if v
        ]
        if bad:
            raise ConfigError(
                f"--resume continues an experiment with its own config.yaml; {', '.join(bad)} "
                "cannot change it (start a new run to change the training configuration)"
            )
        exp = open_experiment(args.resume)
        if args.name and not exp.root.name.startswith(args.name):
            raise ConfigError(
                f"NAME '{args.name}' does not match the experiment {exp.root.name} of --resume "
                "(leave NAME out with --resume)"
            )
        stored = load_options(exp.root)
        if stored is None:  # e.g. an experiment made by `isr train`: options from the flags
            options, _ = _options_from_args(args, PipelineOptions())
        else:
            options, given = _options_from_args(args, PipelineOptions(**vars(stored)))
            changed = [
                PIPELINE_OPTION_FLAGS[n] for n in given if getattr(options, n) != getattr(stored, n)
            ]
            if changed:
                raise ConfigError(
                    f"--resume: {', '.join(changed)} differ from the options this experiment was "
                    f"started with (pipeline.json: "
                    + ", ".join(f"{PIPELINE_OPTION_FLAGS[n]} {getattr(stored, n)}" for n in given)
                    + "); start a new run to change them"
                )
    else:
        if not args.name:
            raise ConfigError("NAME is required (or --resume EXP_DIR)")
        overrides = [f"name={args.name}", *(args.set or [])]
        if args.quality:
            overrides.append(f"physics_quality={args.quality}")
        if args.no_progress:
            overrides.append("progress=false")
        if args.device:
            overrides.append(f"device={args.device}")
        preset = args.preset or "quick"
        cfg = resolve_config(preset, overrides, args.config)
        if args.steps is not None:
            key = (
                "rl.sb3_total_timesteps"
                if cfg.rl.algorithm.startswith("sb3_")
                else ("rl.ppo.total_timesteps")
            )
            cfg = resolve_config(preset, [*overrides, f"{key}={args.steps}"], args.config)
        options, _ = _options_from_args(args, PipelineOptions())
        options.validate()
        from isr_px4_eval.pipeline.full import check_seeds

        check_seeds(cfg, options.world_seeds)
        exp = Experiment.create(cfg, args.output_dir)
    print(f"experiment: {exp.root}", file=sys.stderr)
    t0 = time.perf_counter()
    run = run_full_pipeline(exp, options, stages, progress=not args.no_progress)
    print(final_text(run, time.perf_counter() - t0))
    bad = [s for s, st in run.status.items() if st["status"] != "done"]
    if bad:
        print(
            f"stages not finished: {', '.join(bad)} (see {exp.root / 'pipeline.json'}; fix and "
            f"run `isr pipeline --resume {exp.root}`)",
            file=sys.stderr,
        )
        return 1
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``isr pipeline``."""
    from isr_px4_eval.pipeline.full import PIPELINE_STAGES

    p.add_argument("name", nargs="?", help="experiment name (directory <NAME>_<YYYYmmdd_HHMMSS>)")
    p.add_argument("--preset", help="training preset of training_config.yaml (default: quick)")
    p.add_argument("--steps", type=int, help="RL env-steps (rl.ppo.total_timesteps)")
    p.add_argument("--episodes", type=int, help="evaluation episodes per world (default 1)")
    p.add_argument(
        "--world-seeds",
        help="held-out evaluation worlds, a,b,c or a-b (default: the config's test worlds)",
    )
    p.add_argument("--resume", metavar="EXP_DIR", help="continue the pipeline in EXP_DIR")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a training config field by dotted path (repeatable)",
    )
    p.add_argument("--config", help="a training_config.yaml to use instead of the packaged one")
    p.add_argument("--quality", choices=("fast", "medium", "production"))
    p.add_argument("--output-dir", default="experiments", help="parent of experiment directories")
    p.add_argument(
        "--stage", choices=(*PIPELINE_STAGES, "all"), default="all", help="run only this stage"
    )
    p.add_argument("--seed", type=int, help="evaluation/recording spawn and noise seed (0)")
    p.add_argument(
        "--record-seconds", type=float, help="single-drone recording length (one episode)"
    )
    p.add_argument("--grid-seconds", type=float, help="multi-drone recording length (30 s)")
    p.add_argument("--grid-drones", type=int, help="drones of the grid recording (16)")
    p.add_argument("--video-max-frames", type=int, help="cap on every video's frames")
    p.add_argument("--device", help="torch device of evaluation and recording (cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    """Add ``isr pipeline``."""
    p = sub.add_parser(
        "pipeline",
        help="one command: train -> evaluate -> parity -> record -> videos -> report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run_pipeline_cli)


__all__ = ["add_arguments", "register", "run_pipeline_cli"]
