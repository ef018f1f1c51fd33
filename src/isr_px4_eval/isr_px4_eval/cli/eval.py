"""``isr eval`` and ``isr parity`` (also the ``px4_eval`` console script): evaluate a policy.

``isr eval --policy PATH --backend {embedded,direct} [--episodes N] [--world-seeds 100000-100019]
[--perception {gt,yolo} [--detector WEIGHTS]] [--json OUT] [--dynamics-config tuned.yaml]
[--record-dir DIR] [--drones-per-world D] [--episode-seconds S] [--config eval.yaml]
[--device cpu]`` flies the policy (TorchScript, ONNX, ``policy.pt`` or an experiment directory)
on the world seeds (a list ``100000,100001`` or a range ``100000-100019``), prints a short table,
and writes the metrics JSON (:mod:`isr_px4_eval.evaluation.run`) and, with ``--record-dir``, one
``<backend>.npz`` of per-step arrays.

``isr parity --policy PATH [--world-seeds ...] [--reference direct] [--candidate embedded]
[--tolerances parity.yaml] [--json OUT] [--record-dir DIR]`` runs both backends on the same
worlds and spawns, replays the reference's actions open loop in both vehicle models and checks
the tolerances (:mod:`isr_px4_eval.evaluation.parity`). Exit status 0 when every check
passes, 1 when one fails.

User errors (missing or corrupt policy, task version mismatch, bad seeds, bad config) print one
``error: ...`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from isr_direct_dynamics.config import ConfigError, run_command
from isr_direct_dynamics.io_checks import check_output_dir, check_output_file
from isr_px4_eval.evaluation.run import (
    BACKENDS,
    check_finite_actions,
    evaluate_policy,
    format_table,
    load_settings,
    parse_seeds,
    write_json,
)

DEFAULT_SEEDS = "100000-100019"
"""The training pipeline's test worlds (``eval.world_seed`` 100000, 20 worlds)."""


def _settings(args: argparse.Namespace):
    s = load_settings(args.config)
    if args.episodes is not None:
        s.episodes = args.episodes
    if args.drones_per_world is not None:
        s.drones_per_world = args.drones_per_world
    if args.episode_seconds is not None:
        s.episode_length_s = args.episode_seconds
    if args.seed is not None:
        s.seed = args.seed
    if args.compile_physics:
        s.embedded = {**s.embedded, "compile_physics": True}
    s.validate()
    return s


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse unusable output paths before any work (see :mod:`isr_direct_dynamics.io_checks`)."""
    if getattr(args, "json", None):
        check_output_file(args.json, "--json")
    if getattr(args, "record_dir", None):
        check_output_dir(args.record_dir, "--record-dir")
        for backend in {getattr(args, k, None) for k in ("backend", "reference", "candidate")}:
            if backend:
                check_output_file(Path(args.record_dir) / f"{backend}.npz", "--record-dir")
    if getattr(args, "bag", None):
        check_output_dir(args.bag, "--bag", new=True)


def _setup(args: argparse.Namespace) -> None:
    _check_outputs(args)
    from isr_direct_dynamics.threads import configure_threads

    configure_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device} but CUDA is not available")


def _run_options(args: argparse.Namespace) -> dict:
    """Keyword arguments ``isr eval`` and ``isr parity`` pass alike."""
    return {
        "perception": args.perception,
        "detector": args.detector,
        "dynamics_config": args.dynamics_config,
        "record_dir": args.record_dir,
        "device": args.device,
        "progress": not args.no_progress,
    }


def run_eval(args: argparse.Namespace) -> int:
    """``isr eval``: evaluate, print the table, write the JSON."""
    _setup(args)
    seeds = parse_seeds(args.world_seeds)
    settings = _settings(args)
    result = evaluate_policy(args.policy, args.backend, seeds, settings, **_run_options(args))
    print(format_table(result))
    if args.json:
        print(f"wrote {write_json(result, args.json)}")
    if result.get("recording"):
        print(f"wrote {result['recording']}")
    check_finite_actions(result, settings.max_nonfinite_action_fraction)
    return 0


def run_parity(args: argparse.Namespace) -> int:
    """``isr parity``: both backends, open-loop replay, tolerance checks; 0 pass, 1 fail."""
    from isr_px4_eval.evaluation.parity import format_parity, load_tolerances, run_parity_check

    _setup(args)
    seeds = parse_seeds(args.world_seeds)
    report = run_parity_check(
        args.policy,
        seeds,
        _settings(args),
        load_tolerances(args.tolerances),
        reference=args.reference,
        candidate=args.candidate,
        **_run_options(args),
    )
    print(format_parity(report))
    if args.json:
        print(f"wrote {write_json(report, args.json)}")
    return 0 if report["passed"] else 1


def run_rehearse(args: argparse.Namespace) -> int:
    """``isr px4-rehearse``: the px4 backend's whole path against the PX4 emulator, no ROS."""
    from isr_px4_eval.evaluation.fly import make_fly_policy
    from isr_px4_eval.px4.convert import RosbagsTypes
    from isr_px4_eval.px4.emulator import Px4Emulator, Px4EmulatorConfig
    from isr_px4_eval.px4.loopback import run_loopback
    from isr_px4_eval.px4.offboard import OffboardClient, OffboardClientConfig, Phase
    from isr_px4_eval.px4.pilot import pilot_episode_fields

    _setup(args)
    fly, pilot = make_fly_policy(
        args.policy, args.world_seed, args.seed, args.device, args.episode_seconds
    )
    if args.bag:
        if pilot is None:
            raise ValueError(
                "--bag needs a policy file (a scripted pattern runs no task to record)"
            )
        from isr_px4_eval.evidence.recording import EnvRecorder

        pilot.recorder = EnvRecorder(
            pilot.env, args.bag, test_name=f"PX4 rehearsal: {args.policy}", phase="px4 rehearsal"
        )
    cfg = OffboardClientConfig(takeoff_altitude_m=args.takeoff_altitude)
    types = RosbagsTypes()  # every message goes through px4_msgs CDR, as over uXRCE-DDS
    t0 = time.perf_counter()
    r = run_loopback(
        OffboardClient(fly, cfg), Px4Emulator(types, Px4EmulatorConfig()), types,
        max_s=args.max_seconds, step_s=0.02,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    c = r.client
    print("phases: " + " -> ".join(f"{e.phase.value}@{e.t_us * 1e-6:.1f}s" for e in c.events))
    result: dict = {
        "policy": args.policy,
        "world_seed": args.world_seed,
        "phase": c.phase.value,
        "failure_reason": c.failure_reason,
        "wall_s": round(wall, 2),
        "messages": dict(r.sent_counts),
        "bytes_on_wire": r.bytes_on_wire,
    }
    if pilot is not None:
        ep = pilot_episode_fields(pilot, args.world_seed)
        result["episode"] = ep
        result["trajectory"] = pilot.trace
        for k, v in ep.items():
            print(f"  {k:28s} {v}")
        if not ep:
            print("  the episode did not finish within --max-seconds")
    print(f"{c.phase.value} in {wall:.1f} s wall")
    if pilot is not None and pilot.recorder is not None:
        pilot.recorder.close()  # no-op when the episode closed it
        print(f"bag: {pilot.recorder.path}")
    if args.json:
        print(f"wrote {write_json(result, args.json)}")
    return 0 if c.phase == Phase.DONE and (pilot is None or pilot.episode is not None) else 1


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="policy file or experiment directory")
    p.add_argument(
        "--world-seeds", default=DEFAULT_SEEDS, help="a,b,c or a range a-b (default %(default)s)"
    )
    p.add_argument("--episodes", type=int, default=None, help="episodes per drone")
    p.add_argument("--drones-per-world", type=int, default=None)
    p.add_argument(
        "--episode-seconds", type=float, default=None, help="shorter episodes (default: task's)"
    )
    p.add_argument("--seed", type=int, default=None, help="spawn / noise seed")
    p.add_argument("--perception", default="gt", choices=("gt", "yolo"))
    p.add_argument("--detector", help="YOLO weights (best.pt of isr yolo train) for yolo")
    p.add_argument("--dynamics-config", help="tuned DirectDynamicsConfig YAML for the direct model")
    p.add_argument("--config", help="EvalSettings YAML (default: the package's eval.yaml)")
    p.add_argument("--json", help="write the result JSON here")
    p.add_argument("--record-dir", help="write <backend>.npz per-step recordings here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="at most N CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--compile-physics",
        action="store_true",
        help=(
            "embedded on CUDA (on CPU the numba physics kernel runs instead): torch.compile the "
            "quadrotor physics (long runs; compiles 25-60 s first)"
        ),
    )


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    """Add ``isr eval`` and ``isr parity``."""
    p = sub.add_parser(
        "eval",
        help="evaluate a policy on the embedded full-fidelity or the direct backend",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    p.add_argument("--backend", default="embedded", choices=BACKENDS)
    p.set_defaults(func=run_eval)

    q = sub.add_parser(
        "parity",
        help="same policy and worlds on two backends: return ratio, trajectory RMSE, pass/fail",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(q)
    q.add_argument("--reference", default="direct", choices=BACKENDS)
    q.add_argument("--candidate", default="embedded", choices=BACKENDS)
    q.add_argument("--tolerances", help="ParityTolerances YAML (default: package parity.yaml)")
    q.set_defaults(func=run_parity)

    r = sub.add_parser(
        "px4-rehearse",
        help="fly a policy through the PX4 offboard client against the PX4 emulator (no ROS)",
        description=(
            "The px4 backend's path without ROS or PX4: the offboard state machine (heartbeat, "
            "OFFBOARD, arm, takeoff, FLY, land) talks px4_msgs (CDR-serialized) to the PX4 "
            "emulator flying the embedded quadrotor; during FLY the policy runs the ISR task on "
            "the emulator's odometry (PolicyPilot). Exit 0 when it landed after a full episode."
        ),
    )
    r.add_argument("--policy", required=True, help="policy file, experiment dir, hover or box")
    r.add_argument("--world-seed", type=int, default=100000)
    r.add_argument("--seed", type=int, default=0, help="spawn seed")
    r.add_argument("--episode-seconds", type=float, default=None, help="default: task's")
    r.add_argument("--takeoff-altitude", type=float, default=20.0, help="m (default 20)")
    r.add_argument("--max-seconds", type=float, default=240.0, help="simulated time cap")
    r.add_argument("--json", help="write episode metrics, trajectory and message counts here")
    r.add_argument("--bag", help="record the episode as a rosbag2 MCAP here (isr video reads it)")
    r.add_argument("--device", default="cpu")
    r.add_argument("--threads", type=int, default=1)
    r.set_defaults(func=run_rehearse)


def main(argv: list[str] | None = None) -> int:
    """``px4_eval`` console script: ``px4_eval [eval] ...`` or ``px4_eval parity ...``.

    Without a subcommand, the arguments are those of ``isr eval``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("eval", "parity", "-h", "--help"):
        argv = ["eval", *argv]
    parser = argparse.ArgumentParser(
        prog="px4_eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = sub.add_parser("bench", help=argparse.SUPPRESS)
    register(sub, bench.add_subparsers(dest="bench_target", metavar="TARGET"))
    args = parser.parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "register", "run_eval", "run_parity"]
