"""``isr tune-dynamics`` and ``isr bench tuning-replay``: fit the direct dynamics from the shell.

``isr tune-dynamics --from {embedded,bag,ulog} [--path P] [--out dynamics_config.yaml]
[--json report.json] [--plot fit.png]`` reads a PX4 flight (rosbag2 or ULog, see
:mod:`isr_px4_eval.px4.logs`) or flies the embedded full-fidelity quadrotor, fits the direct
model (:mod:`isr_px4_eval.tuning.fit`), prints the per-axis RMSE table and writes the config (YAML
with a comment header), the JSON report and the plot of the held-out replay.

``isr bench tuning-replay`` measures the batched replay (candidate-steps per second).

Until ``isr_px4_eval.cli.main.COMMAND_MODULES`` lists this module, the same commands run as
``python -m isr_px4_eval.cli.tuning tune-dynamics ...`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from isr_direct_dynamics import DirectDynamicsConfig
from isr_direct_dynamics.config import ConfigError, json_dumps, load_yaml, run_command
from isr_direct_dynamics.io_checks import atomic_write_text, check_output_file
from isr_px4_eval.px4.logs import BagTopics, FlightLog, FlightLogConfig
from isr_px4_eval.px4.logs_bag import read_bag
from isr_px4_eval.px4.logs_ulog import read_ulog
from isr_px4_eval.tuning.embedded import EmbeddedConfig, fit_from_embedded
from isr_px4_eval.tuning.fit import TuningResult, tune_flight
from isr_px4_eval.tuning.outputs import plot_fit, write_dynamics_config
from isr_px4_eval.tuning.replay import TuningConfig

BAG_STATES = ("auto", "odometry", "local_position")
ULOG_STATES = {
    "auto": "vehicle_local_position",
    "local_position": "vehicle_local_position",
    "groundtruth": "vehicle_local_position_groundtruth",
}


def _tuning_config(args: argparse.Namespace) -> TuningConfig:
    window = args.window
    if window is None:
        # Embedded flights start at rest, so one window per flight starts from the exact state
        # (a window starting mid-flight cannot know how the velocity splits into fast and slow
        # pole, and a slow pole of ~10 s does not settle in the burn-in).
        window = args.duration - args.burn_in if args.source == "embedded" else 15.0
    cfg = TuningConfig(
        window_s=window,
        burn_in_s=args.burn_in,
        fit_fraction=args.fit_fraction,
        holdout=args.holdout,
        max_delay_s=args.max_delay,
        population=args.population,
        iterations=args.iterations,
        control_dt_s=args.control_dt,
        seed=args.seed,
        device=args.device,
        tilt_drag_1_s=args.tilt_drag,
    )
    cfg.validate()
    return cfg


def _read_log(args: argparse.Namespace) -> FlightLog:
    if not args.path:
        raise ConfigError(f"--path is required with --from {args.source} (a bag or a .ulg file)")
    path = Path(args.path)
    log_cfg = FlightLogConfig(dt_s=args.grid_dt)
    if args.source == "bag":
        if args.state not in BAG_STATES:
            raise ConfigError(
                f"--state {args.state} is not available for bags (choose {', '.join(BAG_STATES)})"
            )
        return read_bag(path, BagTopics(namespace=args.namespace), log_cfg, state_source=args.state)
    if args.state not in ULOG_STATES:
        raise ConfigError(
            f"--state {args.state} is not available for ULogs (choose {', '.join(ULOG_STATES)})"
        )
    return read_ulog(path, log_cfg, state_topic=ULOG_STATES[args.state])


def print_result(result: TuningResult) -> None:
    """Print the fitted parameters and the per-axis RMSE table."""
    print(f"[tune] source: {result.source}")
    print("[tune] held-out RMSE     vx      vy      vz   yaw_rate  horizontal")
    for name, r in result.rmse_heldout.items():
        print(
            f"[tune]   {name:<13} {r['vx']:7.4f} {r['vy']:7.4f} {r['vz']:7.4f} "
            f"{r['yaw_rate']:8.4f} {r['horizontal']:9.4f}"
        )
    for name, p in (("first-order", result.first_order), ("slow-pole", result.slow_pole)):
        print(
            f"[tune] {name}: tau_h {p.tau_horizontal_s:.3f} s, tau_v {p.tau_vertical_s:.3f} s, "
            f"tau_yaw {p.tau_yaw_s:.3f} s, slow_h {p.slow_fraction_horizontal:.3f} x "
            f"{p.tau_slow_horizontal_s:.2f} s, slow_v {p.slow_fraction_vertical:.3f} x "
            f"{p.tau_slow_vertical_s:.2f} s, coupling {p.vertical_coupling:.3f}, "
            f"a_max {p.max_horizontal_accel_m_s2:.1f} m/s^2, delay {p.delay_s:.3f} s"
        )


def run_tune_dynamics(args: argparse.Namespace) -> int:
    """Fit, print, write the outputs."""
    check_output_file(args.out, "--out")
    if args.json:
        check_output_file(args.json, "--json")
    if args.plot:
        check_output_file(args.plot, "--plot")
    from isr_direct_dynamics.threads import configure_threads

    configure_threads(args.threads)
    cfg = _tuning_config(args)
    base = (
        load_yaml(DirectDynamicsConfig, args.base_config)
        if args.base_config
        else DirectDynamicsConfig()
    )
    t0 = time.perf_counter()
    if args.source == "embedded":
        if args.path:
            raise ConfigError("--path is not used with --from embedded")
        quad_cfg: Any = None
        if args.quadrotor_config:
            from isr_direct_dynamics.quadrotor import QuadrotorConfig

            quad_cfg = load_yaml(QuadrotorConfig, args.quadrotor_config)
        embedded = EmbeddedConfig(
            num_sequences=args.sequences,
            num_fit_sequences=args.fit_sequences,
            duration_s=args.duration,
            control_dt_s=args.grid_dt,
            max_horizontal_speed_m_s=args.max_speed,
            max_vertical_speed_m_s=args.max_vertical_speed,
            max_yaw_rate_rad_s=args.max_yaw_rate,
            hold_s=tuple(args.hold),
            seed=args.seed,
        )
        result = fit_from_embedded(embedded, cfg, quad_cfg, base)
    else:
        log = _read_log(args)
        print(
            f"[tune] read {log.source}: {log.valid_duration_s:.1f} s valid in "
            f"{len(log.segments)} segment(s)"
        )
        result = tune_flight(log, cfg, base)
    elapsed = time.perf_counter() - t0
    print_result(result)
    out = write_dynamics_config(result, args.out)
    print(f"[tune] config: {out}")
    if args.json:
        report = result.report()
        report["elapsed_s"] = round(elapsed, 2)
        path = atomic_write_text(Path(args.json), json_dumps(report, indent=2, default=str))
        print(f"[tune] report: {path}")
    if args.plot:
        print(f"[tune] plot:   {plot_fit(result, args.plot)}")
    print(f"[tune] done in {elapsed:.1f} s")
    return 0


def run_replay_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Time one batched replay of ``--candidates`` parameter sets over synthetic windows."""
    import numpy as np

    from isr_direct_dynamics.threads import configure_threads
    from isr_px4_eval.tuning.replay import Candidates, FitParams, make_windows

    configure_threads(args.threads)
    dt, n = 0.02, int(round(args.seconds / 0.02))
    rng = np.random.default_rng(0)
    logs = []
    for _ in range(args.windows):
        cmd = np.repeat(rng.uniform(-3, 3, size=(n // 50 + 1, 4)), 50, axis=0)[:n]
        logs.append(
            FlightLog(
                time_s=np.arange(n) * dt,
                vel_enu_m_s=np.zeros((n, 3)),
                pos_enu_m=np.zeros((n, 3)),
                yaw_enu_rad=np.zeros(n),
                yaw_rate_enu_rad_s=np.zeros(n),
                cmd_vel_enu_m_s=cmd[:, :3],
                cmd_yaw_rate_enu_rad_s=cmd[:, 3],
                valid=np.ones(n, dtype=bool),
                dt_s=dt,
            )
        )
    batch = make_windows(logs, args.seconds, 0.0, 0.3, args.device)
    cands = Candidates.from_params(
        [FitParams(delay_s=0.02 * (i % 16)) for i in range(args.candidates)], dt, args.device
    )
    from isr_px4_eval.tuning.replay import replay

    t0 = time.perf_counter()
    replay(batch, cands)
    if batch.vel.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    steps = batch.num_windows * cands.size * (batch.length - 1)
    result = {
        "benchmark": "tuning-replay",
        "device": str(batch.vel.device),
        "candidates": cands.size,
        "windows": batch.num_windows,
        "steps_per_window": batch.length - 1,
        "seconds": round(elapsed, 4),
        "candidate_steps_per_s": steps / elapsed,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(json_dumps(result))
    return result


def _bench(args: argparse.Namespace) -> int:
    run_replay_benchmark(args)
    return 0


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    """Add ``isr tune-dynamics`` and ``isr bench tuning-replay``."""
    p = sub.add_parser(
        "tune-dynamics",
        help="fit the direct dynamics to a PX4 flight (bag/ULog) or to the embedded quadrotor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--from", dest="source", required=True, choices=("embedded", "bag", "ulog"))
    p.add_argument("--path", help="rosbag2 directory or .mcap file (bag), .ulg file (ulog)")
    p.add_argument("--out", default="dynamics_config.yaml", help="tuned DirectDynamicsConfig")
    p.add_argument("--json", help="write the full report (JSON) here")
    p.add_argument("--plot", help="write the held-out replay plot (PNG) here")
    p.add_argument(
        "--state",
        default="auto",
        choices=("auto", "odometry", "local_position", "groundtruth"),
        help="measured state: bag odometry/local_position, ULog local_position/groundtruth",
    )
    p.add_argument("--namespace", default="", help="topic prefix of the bag's /fmu topics")
    p.add_argument("--grid-dt", type=float, default=0.02, help="resampling grid period, s")
    p.add_argument(
        "--control-dt", type=float, default=0.1, help="control period delay_steps counts, s"
    )
    p.add_argument("--fit-fraction", type=float, default=0.5, help="share of the flight fitted")
    p.add_argument("--holdout", default="first", choices=("first", "last"))
    p.add_argument(
        "--window",
        type=float,
        default=None,
        help="scored window length, s (default 15; embedded: the whole flight)",
    )
    p.add_argument("--burn-in", type=float, default=5.0, help="unscored replay before it, s")
    p.add_argument("--max-delay", type=float, default=0.3, help="largest delay searched, s")
    p.add_argument("--population", type=int, default=64, help="CEM candidates per delay")
    p.add_argument("--iterations", type=int, default=10, help="CEM iterations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base-config", help="YAML DirectDynamicsConfig to start from (limits etc.)")
    p.add_argument("--sequences", type=int, default=16, help="embedded: random flights")
    p.add_argument("--fit-sequences", type=int, default=10, help="embedded: flights fitted")
    p.add_argument("--duration", type=float, default=40.0, help="embedded: flight length, s")
    p.add_argument("--quadrotor-config", help="embedded: YAML QuadrotorConfig")
    p.add_argument(
        "--tilt-drag",
        type=float,
        default=None,
        help="fix tilt_drag_1_s (drag/mass, 1/s) instead of fitting it from the attitude",
    )
    p.add_argument(
        "--max-speed",
        type=float,
        default=6.0,
        help="embedded: largest random horizontal speed command, m/s (10 = the action limit)",
    )
    p.add_argument(
        "--max-vertical-speed",
        type=float,
        default=1.5,
        help="embedded: random vertical speed commands in +-this, m/s (5 = the action limit)",
    )
    p.add_argument(
        "--max-yaw-rate",
        type=float,
        default=1.0,
        help="embedded: random yaw-rate commands in +-this, rad/s (1.571 = the action limit)",
    )
    p.add_argument(
        "--hold",
        type=float,
        nargs=2,
        default=(0.5, 2.5),
        metavar=("LOW", "HIGH"),
        help="embedded: each random command is held for LOW..HIGH s",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="at most N CPU threads (default: the free cores, re-measured every second)",
    )
    p.set_defaults(
        func=run_tune_dynamics,
        field_options={
            "window_s": "--window",
            "burn_in_s": "--burn-in",
            "fit_fraction": "--fit-fraction",
            "max_delay_s": "--max-delay",
            "population": "--population",
            "iterations": "--iterations",
            "control_dt_s": "--control-dt (or --grid-dt with --from embedded)",
            "tilt_drag_1_s": "--tilt-drag",
            "num_sequences": "--sequences",
            "num_fit_sequences": "--fit-sequences",
            "duration_s": "--duration",
            "max_horizontal_speed_m_s": "--max-speed",
            "max_vertical_speed_m_s": "--max-vertical-speed",
            "max_yaw_rate_rad_s": "--max-yaw-rate",
            "hold_s": "--hold",
        },
    )

    b = bench_sub.add_parser("tuning-replay", help="batched open-loop replay of the tuner")
    b.add_argument("--candidates", type=int, default=1024)
    b.add_argument("--windows", type=int, default=8)
    b.add_argument("--seconds", type=float, default=15.0, help="window length, s")
    b.add_argument("--device", default="cpu")
    b.add_argument("--threads", type=int, default=None)
    b.set_defaults(func=_bench)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m isr_px4_eval.cli.tuning``), errors as in ``isr``."""
    parser = argparse.ArgumentParser(prog="isr", description="dynamics tuning")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = sub.add_parser("bench", help="benchmarks that print one JSON object")
    register(sub, bench.add_subparsers(dest="bench_target", required=True, metavar="TARGET"))
    args = parser.parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
