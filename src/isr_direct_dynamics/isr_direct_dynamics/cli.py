"""Command-line entry points of isr_direct_dynamics: ``isr bench dynamics``."""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from isr_direct_dynamics.config import json_dumps

from . import MODEL_NAMES, make_vehicle_model


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the dynamics benchmark (shared by ``isr bench dynamics`` and the script)."""
    parser.add_argument("--model", choices=MODEL_NAMES, default="direct")
    parser.add_argument("--drones", type=_positive_int, default=4096, help="total drones")
    parser.add_argument("--drones-per-world", type=_positive_int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--control-dt", type=float, default=0.1, help="control period, s")
    parser.add_argument("--seconds", type=float, default=3.0, help="time to measure, s")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="at most N CPU threads (default: the free cores, re-measured every second)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the direct step kernel"
    )
    parser.add_argument(
        "--torch-kernels",
        action="store_true",
        help="on CPU, run the torch step instead of the numba kernel (cpu_kernels=false)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON object")


def prepare_bench(args: argparse.Namespace) -> tuple[torch.device, int]:
    """Apply ``--threads``, check ``--device`` and the drone split; return (device, worlds)."""
    from .threads import configure_threads

    configure_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
    if args.drones % args.drones_per_world:
        raise ValueError(
            f"--drones {args.drones} is not a multiple of "
            f"--drones-per-world {args.drones_per_world}"
        )
    return device, args.drones // args.drones_per_world


def run_dynamics_benchmark(args: argparse.Namespace) -> dict:
    """Step the chosen model with random actions for ``args.seconds``; return the figures."""
    device, worlds = prepare_bench(args)
    kwargs = {"compile_step": True} if args.compile and args.model == "direct" else {}
    config = {"cpu_kernels": False} if getattr(args, "torch_kernels", False) else None
    model = make_vehicle_model(
        args.model, worlds, args.drones_per_world, args.control_dt, device, seed=0,
        config=config, **kwargs,
    )  # fmt: skip
    gen = torch.Generator(device=device).manual_seed(0)
    start = torch.zeros(worlds, args.drones_per_world, 3, device=device)
    start[..., 2] = 20.0
    from .base import InitialState

    model.reset(initial=InitialState(pos_enu_m=start))
    actions = torch.rand(8, worlds, args.drones_per_world, 4, generator=gen, device=device) * 2 - 1

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for i in range(5):  # warm-up (and compilation)
        model.step(actions[i % 8])
    sync()
    steps, t0 = 0, time.perf_counter()
    while True:
        for i in range(10):
            model.step(actions[i % 8])
        steps += 10
        sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= args.seconds:
            break
    result = {
        "benchmark": "dynamics",
        "model": args.model,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "drones": args.drones,
        "drones_per_world": args.drones_per_world,
        "control_dt_s": args.control_dt,
        "steps": steps,
        "seconds": round(elapsed, 4),
        "drone_steps_per_s": args.drones * steps / elapsed,
        "threads": torch.get_num_threads(),
        "compiled": bool(kwargs),
        "cpu_kernels": bool(
            getattr(model, "numba_physics", False) or getattr(model, "numba_step", False)
        ),
        "torch": torch.__version__,
    }
    physics = getattr(model, "physics_steps_per_control", None)
    if physics is not None:
        result["physics_steps_per_control"] = physics
        result["physics_steps_per_s"] = args.drones * steps * physics / elapsed
        result["realtime_factor_per_drone"] = steps * args.control_dt / elapsed
    result["nonfinite_actions"] = int(model.nonfinite_action_count)
    return result


def _bench(args: argparse.Namespace) -> int:
    result = run_dynamics_benchmark(args)
    if args.json:
        print(json_dumps(result))
    else:
        print(json_dumps(result, indent=2))
    return 0


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    """Add ``isr bench dynamics``."""
    p = bench_sub.add_parser(
        "dynamics",
        help="drone-steps/s of a vehicle model",
        description="Step a vehicle model with random actions and print drone-steps/s as JSON.",
    )
    add_bench_arguments(p)
    p.set_defaults(func=_bench)


def bench_main(argv: list[str] | None = None) -> int:
    """Console script ``bench_dynamics`` (``ros2 run isr_direct_dynamics bench_dynamics``)."""
    parser = argparse.ArgumentParser(prog="bench_dynamics", description=__doc__)
    add_bench_arguments(parser)
    try:
        return _bench(parser.parse_args(argv))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
