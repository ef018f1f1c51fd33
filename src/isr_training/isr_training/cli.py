"""Command-line entry points of isr_training: ``isr baseline`` and ``isr bench env``."""

from __future__ import annotations

import argparse
import time

import torch

from isr_direct_dynamics.cli import prepare_bench
from isr_direct_dynamics.config import apply_overrides, from_dict, json_dumps, to_dict

from .env import EnvConfig, ISREnv


def env_config_from_args(args: argparse.Namespace) -> EnvConfig:
    """Build an :class:`EnvConfig` from common flags plus ``--set key=value`` overrides."""
    data = to_dict(EnvConfig())
    data["num_worlds"] = args.worlds
    data["drones_per_world"] = args.drones_per_world
    data["vehicle"] = args.vehicle
    data["camera"] = bool(getattr(args, "camera", False))
    if getattr(args, "resolution", None):
        data["camera_resolution"] = args.resolution
    data["seed"] = args.seed
    if getattr(args, "compile", False):
        data["compile"] = True
    data = apply_overrides(data, getattr(args, "set", None) or [])
    return from_dict(EnvConfig, data)


def add_env_arguments(p: argparse.ArgumentParser, worlds: int, drones: int) -> None:
    """Flags that choose the environment."""
    p.add_argument("--worlds", type=int, default=worlds, help="number of worlds W")
    p.add_argument("--drones-per-world", type=int, default=drones, help="drones per world D")
    p.add_argument("--vehicle", choices=("direct", "quadrotor"), default="direct")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override an EnvConfig field (repeatable)",
    )


def _baseline(args: argparse.Namespace) -> int:
    from isr_direct_dynamics.threads import configure_threads

    from .baselines import RandomPolicy, ScriptedExpert, run_policy

    configure_threads(args.threads)
    cfg = env_config_from_args(args)
    cfg.stagger = False
    env = ISREnv(cfg, args.device)
    if args.policy == "random":
        policy = RandomPolicy(env.num_envs, env.device, seed=args.seed)
    else:
        policy = ScriptedExpert(env)
    t0 = time.perf_counter()
    metrics = run_policy(env, policy, episodes_per_drone=args.episodes)
    metrics["wall_s"] = time.perf_counter() - t0
    metrics["policy"] = args.policy
    if args.json:
        print(json_dumps(metrics))
    else:
        for k, v in metrics.items():
            print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
    return 0


def _bench_env(args: argparse.Namespace) -> int:
    from isr_sim_bridge.world import generate_worlds

    device, args.worlds = prepare_bench(args)
    cfg = env_config_from_args(args)
    t_build = time.perf_counter()
    # Generate at most --unique-worlds distinct worlds and tile them over the W worlds (world i
    # is a copy of unique world i % U): 4096 distinct worlds would take minutes to generate and
    # per-step cost does not depend on the worlds being distinct.
    unique = min(args.unique_worlds, cfg.num_worlds) if args.unique_worlds > 0 else cfg.num_worlds
    seeds = cfg.world_seeds or [cfg.seed + i for i in range(cfg.num_worlds)]
    world = generate_worlds(cfg.world, seeds[:unique], device)
    if unique < cfg.num_worlds:
        world = world.select([i % unique for i in range(cfg.num_worlds)])
    cfg.world_seeds = [seeds[i % unique] for i in range(cfg.num_worlds)]
    env = ISREnv(cfg, device, world=world)
    t_build = time.perf_counter() - t_build
    gen = torch.Generator(device=device).manual_seed(0)
    env.reset()
    actions = torch.rand(8, env.num_envs, 4, generator=gen, device=device) * 2 - 1

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for i in range(5):
        env.step(actions[i % 8])
    sync()
    steps, t0 = 0, time.perf_counter()
    resets = 0
    while True:
        for i in range(10):
            _, _, _, _, info = env.step(actions[i % 8])
            resets += int(info["done"].sum())
        steps += 10
        sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= args.seconds:
            break
    result = {
        "benchmark": "env",
        "device": str(device),
        "drones": env.num_envs,
        "worlds": env.num_worlds,
        "unique_worlds": unique,
        "drones_per_world": env.drones_per_world,
        "vehicle": cfg.vehicle,
        "camera": cfg.camera,
        "resolution": cfg.camera_resolution if cfg.camera else None,
        "perception_interval": cfg.task.perception_interval,
        "compile": cfg.compile,
        "cpu_kernels": env.cpu_kernels,
        "steps": steps,
        "seconds": round(elapsed, 4),
        "env_steps_per_s": env.num_envs * steps / elapsed,
        "resets": resets,
        "build_s": round(t_build, 3),
        "threads": torch.get_num_threads(),
    }
    print(json_dumps(result) if args.json else json_dumps(result, indent=2))
    return 0


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    """Add ``isr baseline`` and ``isr bench env``."""
    p = sub.add_parser(
        "baseline", help="run the random policy or the scripted expert; print metrics"
    )
    p.add_argument("--policy", choices=("random", "expert"), default="expert")
    p.add_argument("--episodes", type=int, default=1, help="episodes per drone")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true")
    add_env_arguments(p, worlds=8, drones=1)
    p.set_defaults(func=_baseline)

    b = bench_sub.add_parser("env", help="env-steps/s of the whole task (dynamics to resets)")
    b.add_argument("--drones", type=int, default=4096, help="total drones (W x D)")
    b.add_argument("--camera", action="store_true", help="render the camera into observations")
    b.add_argument("--resolution", default="80x80")
    b.add_argument("--seconds", type=float, default=3.0)
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--json", action="store_true")
    b.add_argument(
        "--compile", action="store_true", help="compile the task kernels (EnvConfig.compile)"
    )
    b.add_argument(
        "--unique-worlds",
        type=int,
        default=16,
        help="distinct worlds generated and tiled over the W worlds (0 = all distinct)",
    )
    add_env_arguments(b, worlds=0, drones=32)
    b.set_defaults(func=_bench_env)
