"""Command line of the training pipeline: ``isr train`` and ``isr bench train``.

``isr train`` (also ``ros2 run isr_training train``) runs the staged pipeline; ``isr bench train``
measures the learners' throughput (env-steps/s including updates).

Examples::

    isr train --preset quick --name demo
    isr train --preset quick --name demo --set rl.ppo.total_timesteps=100000 --quality fast
    isr train --preset quick --name demo --stage data        # one stage of a new experiment
    isr train --resume experiments/demo_20260101_120000      # finish (or continue) an experiment
    isr train --resume experiments/demo_20260101_120000 --stage finalize
    isr train --preset quick --print-config                  # the resolved config.yaml
    isr train --preset quick --nproc 2                       # data-parallel PPO on 2 ranks
    torchrun --nproc_per_node 2 -m isr_training.train --preset quick   # the same, explicitly
    isr bench train --algo ppo --drones 256 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from isr_direct_dynamics.config import ConfigError, json_dumps, run_command

from .pipeline import STAGES


def _train(args: argparse.Namespace) -> int:
    from .pipeline import (
        Experiment,
        config_to_yaml,
        load_config_file,
        resolve_config,
        run_pipeline,
    )

    overrides = list(args.set or [])
    if args.quality:
        overrides.append(f"physics_quality={args.quality}")
    if args.device:
        overrides.append(f"device={args.device}")
    if args.name:
        overrides.append(f"name={args.name}")
    if args.no_progress:
        overrides.append("progress=false")
    if args.dynamics_config:
        overrides.extend(dynamics_overrides(args.dynamics_config))
    if args.pretrained:
        from .pipeline import pretrained_policy_file

        pretrained_policy_file(args.pretrained)  # refuse a missing policy before any work
        overrides.append(f"rl.pretrained={Path(args.pretrained).resolve()}")
    stages = None if args.stage in (None, "all") else [args.stage]
    nproc = getattr(args, "nproc", 1)
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1 and "WORLD_SIZE" not in os.environ and not args.print_config:
        _check_data_parallel(
            load_config_file(Path(args.resume) / "config.yaml")
            if args.resume
            else resolve_config(args.preset, overrides, args.config),
            nproc,
        )  # one error line here rather than one traceback per rank
        from .distributed import launch

        return launch("isr_training.train", nproc, _forwarded_argv(args))
    if "WORLD_SIZE" in os.environ and not args.print_config:
        return _train_rank(args, overrides, stages)
    if args.resume:
        if args.preset or args.config or [o for o in overrides if not o.startswith("progress=")]:
            raise ConfigError(
                "--resume continues an experiment with its own config.yaml; --preset, --config, "
                "--set, --quality, --device and --name are not allowed with it (start a new "
                "experiment to change the configuration)"
            )
        exp = Experiment.open(args.resume)
        if args.print_config:  # the experiment's own config; nothing is run
            sys.stdout.write(config_to_yaml(exp.cfg))
            return 0
        if args.no_progress:
            exp.cfg.progress = False
    else:
        cfg = resolve_config(args.preset, overrides, args.config)
        if args.print_config:
            sys.stdout.write(config_to_yaml(cfg))
            return 0
        exp = Experiment.create(cfg, args.output_dir)
    print(f"experiment: {exp.root}", file=sys.stderr)
    t0 = time.perf_counter()
    run_pipeline(exp, stages)
    print(f"done in {time.perf_counter() - t0:.0f} s: {exp.root}", file=sys.stderr)
    summary = exp.root / "SUMMARY.txt"
    if summary.is_file() and (stages is None or "finalize" in stages):
        sys.stdout.write(summary.read_text())
    return 0


def _forwarded_argv(args: argparse.Namespace) -> list[str]:
    """The ``isr train`` flags of ``args`` (without ``--nproc``), for the ranks' command line."""
    out: list[str] = []
    for flag, value in (
        ("--preset", args.preset), ("--name", args.name), ("--quality", args.quality),
        ("--device", args.device), ("--resume", args.resume), ("--config", args.config),
        ("--dynamics-config", args.dynamics_config), ("--pretrained", args.pretrained),
    ):  # fmt: skip
        if value is not None:
            out += [flag, str(value)]
    for item in args.set or []:
        out += ["--set", item]
    if args.stage not in (None, "all"):
        out += ["--stage", args.stage]
    out += ["--output-dir", str(args.output_dir)]
    if args.no_progress:
        out.append("--no-progress")
    return out


def _check_data_parallel(cfg: Any, nproc: int) -> None:
    """Refuse a config that cannot train on ``nproc`` ranks (``ConfigError`` naming the field)."""
    from .distributed import DistContext, shard

    if cfg.rl.algorithm.startswith("sb3_"):
        raise ConfigError(
            f"invalid config field 'rl.algorithm': {cfg.rl.algorithm} runs in one process; "
            "data-parallel training (--nproc, torchrun) is for rl.algorithm=ppo"
        )
    if cfg.bc.dagger_rounds:
        raise ConfigError(
            f"invalid config field 'bc.dagger_rounds': {cfg.bc.dagger_rounds} DAgger rounds run "
            "in one process; data-parallel training (--nproc, torchrun) needs bc.dagger_rounds=0"
        )
    shard(cfg.env.num_worlds, DistContext(0, nproc))


def _train_rank(args: argparse.Namespace, overrides: list[str], stages: list[str] | None) -> int:
    """One rank of a data-parallel ``isr train`` (started by torchrun).

    Rank 0 creates or opens the experiment, the others join it (:mod:`isr_training.distributed`).
    """
    from . import distributed
    from .pipeline import Experiment, load_config_file, resolve_config, run_pipeline

    if args.resume:
        cfg = load_config_file(Path(args.resume) / "config.yaml")
    else:
        cfg = resolve_config(args.preset, overrides, args.config)
    _check_data_parallel(cfg, int(os.environ["WORLD_SIZE"]))
    ctx, device = distributed.init(cfg.device)
    try:
        if ctx.is_main:
            exp = (
                Experiment.open(args.resume)
                if args.resume
                else Experiment.create(cfg, args.output_dir)
            )
            print(f"experiment: {exp.root} ({ctx.world_size} ranks)", file=sys.stderr)
        root = ctx.broadcast_object(str(exp.root) if ctx.is_main else None)
        if not ctx.is_main:
            exp = Experiment(root, load_config_file(Path(root) / "config.yaml"))
            exp.cfg.progress = False
        if args.no_progress:
            exp.cfg.progress = False
        exp.cfg.device = device
        exp.dist = ctx
        t0 = time.perf_counter()
        run_pipeline(exp, stages)
        if ctx.is_main:
            print(f"done in {time.perf_counter() - t0:.0f} s: {exp.root}", file=sys.stderr)
            summary = exp.root / "SUMMARY.txt"
            if summary.is_file() and (stages is None or "finalize" in stages):
                sys.stdout.write(summary.read_text())
    finally:
        distributed.shutdown()
    return 0


def _bench_train(args: argparse.Namespace) -> int:
    """Env-steps/s of a learner on the ISR env, updates included (after one warm-up chunk)."""
    import torch

    from isr_direct_dynamics.threads import configure_threads

    from . import distributed
    from .env import EnvConfig, ISREnv

    nproc = getattr(args, "nproc", 1) or 1
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        if args.algo != "ppo":
            raise ConfigError(f"--nproc {nproc}: data-parallel benchmarks are for --algo ppo")
        flags = [
            "--algo", args.algo, "--drones", args.drones, "--drones-per-world",
            args.drones_per_world, "--num-steps", args.num_steps, "--minibatches",
            args.minibatches, "--epochs", args.epochs, "--seconds", args.seconds, "--threads",
            args.threads, "--device", args.device, "--seed", args.seed,
        ]  # fmt: skip
        flags += ["--hidden", args.hidden] if args.hidden else []
        flags += ["--json"] if args.json else []
        return distributed.launch("isr_training.bench_train", nproc, [str(f) for f in flags])
    configure_threads(args.threads)
    if args.drones % args.drones_per_world:
        raise ValueError(f"--drones {args.drones} is not a multiple of --drones-per-world")
    ctx, device = (
        distributed.init(args.device) if args.algo == "ppo" else (distributed.SINGLE, args.device)
    )
    args.device = device
    num_worlds = args.drones // args.drones_per_world
    first, count = distributed.shard(num_worlds, ctx)
    cfg = EnvConfig(
        num_worlds=count,
        drones_per_world=args.drones_per_world,
        seed=ctx.rank_seed(args.seed),
        world_seeds=[args.seed + first + i for i in range(count)],
    )
    split: dict[str, float] = {}
    extra: dict = {}
    t_build = time.perf_counter()
    env = ISREnv(cfg, args.device)
    t_build = time.perf_counter() - t_build
    if args.algo == "ppo":
        from .ppo import PPO, PPOConfig

        ppo_kw: dict = {"num_steps": args.num_steps, "num_minibatches": args.minibatches}
        if args.hidden:
            ppo_kw["hidden_sizes"] = [int(h) for h in args.hidden.split(",")]
        if args.epochs:
            ppo_kw["update_epochs"] = args.epochs
        cfg = PPOConfig(**ppo_kw)
        ppo = PPO(env, cfg, seed=args.seed, dist=ctx)
        ppo.train_iteration()  # warm-up
        s0, t0 = ppo.global_step, time.perf_counter()
        # ranks agree on the iteration count (rank 0's clock decides), as collectives need
        go = torch.ones(1)
        while True:
            go.fill_(float(time.perf_counter() - t0 < args.seconds))
            if ctx.enabled:
                torch.distributed.broadcast(go, src=0)
            if not go.item():
                break
            ppo.train_iteration()
            for k, v in ppo.timing.items():
                split[k] = split.get(k, 0.0) + v
        steps, dt = ppo.global_step - s0, time.perf_counter() - t0
        split["inference_and_buffers_s"] = split["rollout_s"] - split["env_s"]
        extra = {"hidden_sizes": cfg.hidden_sizes, "update_epochs": cfg.update_epochs}
    else:
        from .adapters import ISRSB3VecEnv
        from .sb3_learners import SB3Config, build_sb3_model

        sb = SB3Config(
            algorithm="sac" if args.algo == "sb3_sac" else "ppo",
            n_steps=args.num_steps,
            learning_starts=0,
            batch_size=(
                args.num_steps * env.num_envs // args.minibatches if args.algo == "sb3_ppo" else 256
            ),
        )
        model, _ = build_sb3_model(ISRSB3VecEnv(env=env), sb, seed=args.seed, device=args.device)
        chunk = args.num_steps * env.num_envs
        model.learn(chunk, reset_num_timesteps=False)  # warm-up
        s0, t0 = model.num_timesteps, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            model.learn(chunk, reset_num_timesteps=False)
        steps, dt = model.num_timesteps - s0, time.perf_counter() - t0
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    rank_sps = steps / ctx.world_size / dt
    per_rank = [rank_sps]
    if ctx.enabled:
        per_rank = [None] * ctx.world_size
        torch.distributed.all_gather_object(per_rank, rank_sps)
        distributed.shutdown()
        if not ctx.is_main:
            return 0
    result = {
        "benchmark": "train",
        "algo": args.algo,
        "device": args.device,
        "ranks": ctx.world_size,
        "backend": ctx.backend,
        "env_steps_per_s_per_rank": [round(x, 1) for x in per_rank],
        "drones": env.num_envs * ctx.world_size,
        "worlds": env.num_worlds * ctx.world_size,
        "drones_per_world": env.drones_per_world,
        "num_steps": args.num_steps,
        "minibatches": args.minibatches if args.algo != "sb3_sac" else None,
        "env_steps": steps,
        "seconds": round(dt, 3),
        "env_steps_per_s_incl_updates": steps / dt,
        **extra,
        "time_split_s": {k: round(v, 3) for k, v in split.items()} or None,
        "time_split_fraction": (
            {
                k: round(split[k] / dt, 3)
                for k in ("env_s", "inference_and_buffers_s", "gae_s", "update_s")
            }
            if split
            else None
        ),
        "threads": torch.get_num_threads(),
        "build_s": round(t_build, 2),
        "load_avg": load,
    }
    print(json_dumps(result) if args.json else json_dumps(result, indent=2))
    return 0


def dynamics_overrides(path: str) -> list[str]:
    """``--set env.dynamics.KEY=VALUE`` overrides from a tuned ``dynamics_config.yaml``.

    The file is what ``isr tune-dynamics`` writes: keys of ``DirectDynamicsConfig`` (nested
    ``limits`` allowed). Training then flies the tuned direct model (``vehicle: direct``).
    """
    from isr_direct_dynamics.config import from_dict, read_yaml
    from isr_direct_dynamics.direct import DirectDynamicsConfig

    raw = read_yaml(path, "--dynamics-config file")
    try:  # unknown keys / bad values: an error naming them and the file
        from_dict(DirectDynamicsConfig, raw)
    except ConfigError as exc:
        raise ConfigError(f"--dynamics-config {path}: {exc}", exc.field, exc.reason) from None
    out = ["env.vehicle=direct"]

    def walk(prefix: str, d: dict) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            else:
                out.append(f"env.dynamics.{prefix}{k}={'null' if v is None else v}")

    walk("", raw)
    return out


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``isr train``."""
    p.add_argument("--preset", help="preset of training_config.yaml: quick, standard")
    p.add_argument("--name", help="experiment name (directory <name>_<YYYYmmdd_HHMMSS>)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field by dotted path, e.g. rl.ppo.learning_rate=1e-4 (repeatable)",
    )
    p.add_argument(
        "--quality",
        choices=("fast", "medium", "production"),
        help="physics quality preset (dynamics_config.yaml); same as --set physics_quality=...",
    )
    p.add_argument("--device", help="torch device (cpu, cuda); same as --set device=...")
    p.add_argument(
        "--stage",
        choices=(*STAGES, "all"),
        default="all",
        help="run only this stage (earlier stages must be finished)",
    )
    p.add_argument("--resume", metavar="EXP_DIR", help="continue the experiment in EXP_DIR")
    p.add_argument("--output-dir", default="experiments", help="parent of experiment directories")
    p.add_argument("--config", help="a training_config.yaml to use instead of the packaged one")
    p.add_argument(
        "--dynamics-config",
        metavar="YAML",
        help="train on a tuned direct model (the file `isr tune-dynamics --out` writes)",
    )
    p.add_argument(
        "--pretrained",
        metavar="EXP_DIR",
        help=(
            "continue the PPO policy of a finished experiment (or a policy .pt): no data or "
            "imitation stage; with --quality medium it fine-tunes on the full-fidelity quadrotor "
            "and SUMMARY reports the transfer ratio before and after"
        ),
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help=(
            "data-parallel PPO on N ranks of this node (torchrun --standalone; gloo on CPU, one "
            "GPU per rank with nccl); env.num_worlds is shared equally (docs/distributed.md)"
        ),
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--print-config", action="store_true", help="print the resolved config, exit")


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    """Add ``isr train`` and ``isr bench train``."""
    p = sub.add_parser(
        "train",
        help="staged training pipeline: data -> imitation -> rl -> finalize",
        description=(
            "Staged training pipeline (data -> imitation -> rl -> finalize) in "
            "experiments/<name>_<YYYYmmdd_HHMMSS>/; finished stages are skipped, interrupted ones "
            "resume from their last checkpoint."
        ),
    )
    add_train_arguments(p)
    p.set_defaults(func=_train)

    b = bench_sub.add_parser("train", help="training env-steps/s (updates included)")
    add_bench_train_arguments(b)
    b.set_defaults(func=_bench_train)


def add_bench_train_arguments(b: argparse.ArgumentParser) -> None:
    """Flags of ``isr bench train``."""
    b.add_argument("--algo", choices=("ppo", "sb3_ppo", "sb3_sac"), default="ppo")
    b.add_argument("--drones", type=int, default=256)
    b.add_argument("--drones-per-world", type=int, default=4)
    b.add_argument("--num-steps", type=int, default=32, help="rollout steps per drone")
    b.add_argument("--minibatches", type=int, default=4, help="PPO minibatches per epoch")
    b.add_argument("--hidden", default="", help="PPO hidden sizes, e.g. 128,128 (default: config)")
    b.add_argument("--epochs", type=int, default=0, help="PPO update epochs (default: PPOConfig)")
    b.add_argument("--seconds", type=float, default=20.0)
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--device", default="cpu")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true")
    b.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="data-parallel PPO on N ranks (torchrun --standalone); --drones is shared equally",
    )


def main(argv: list[str] | None = None) -> int:
    """Console script ``train`` (``ros2 run isr_training train ...``): ``isr train`` alone."""
    parser = argparse.ArgumentParser(
        prog="train", description="ISR staged training pipeline (see `isr train --help`)."
    )
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(_train, args, interrupted="interrupted (resume with --resume EXP_DIR)")


if __name__ == "__main__":
    sys.exit(main())
