"""``isr demo``: the one-minute tour of the building blocks (``make showcase``).

The main job is the full pipeline (``isr pipeline``, ``make demo``). This tour shows the building
blocks in about a minute on 2 CPU cores: it flies the same velocity-step sequence
with both vehicle models (direct dynamics and the full-fidelity quadrotor with its PX4-like
controller), renders 16 drone views of a procedural world with ground-truth boxes, runs the
scripted expert and the random policy on the ISR task, and runs the dynamics benchmark briefly.
Everything is written under ``reports/demo/`` (plots, the view grid, ``summary.json``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from isr_direct_dynamics import MODEL_NAMES, InitialState, make_vehicle_model
from isr_direct_dynamics.config import json_dumps
from isr_direct_dynamics.io_checks import check_output_dir

# (duration s, normalized action [vx, vy, vz, yaw_rate])
STEP_SEQUENCE: tuple[tuple[float, tuple[float, float, float, float]], ...] = (
    (1.0, (0.0, 0.0, 0.0, 0.0)),
    (6.0, (0.5, 0.0, 0.0, 0.0)),
    (5.0, (0.0, 0.0, 0.0, 0.0)),
    (5.0, (0.0, -0.4, 0.2, 0.0)),
    (5.0, (0.0, 0.0, 0.0, 0.5)),
    (3.0, (0.0, 0.0, 0.0, 0.0)),
)


def fly_sequence(name: str, control_dt_s: float = 0.02) -> dict[str, list[float]]:
    """Fly :data:`STEP_SEQUENCE` with model ``name`` from 20 m altitude; return time series."""
    model = make_vehicle_model(name, 1, 1, control_dt_s, "cpu", seed=0)
    model.reset(initial=InitialState(pos_enu_m=torch.tensor([[[0.0, 0.0, 20.0]]])))
    out: dict[str, list[float]] = {k: [] for k in ("t", "vx", "vy", "vz", "yaw_rate", "cmd_vx")}
    lim = model.config.limits
    t = 0.0
    for duration, action in STEP_SEQUENCE:
        a = torch.tensor(action).view(1, 1, 4)
        for _ in range(round(duration / control_dt_s)):
            state = model.step(a)
            t += control_dt_s
            v = state.vel_enu_m_s[0, 0]
            out["t"].append(t)
            out["vx"].append(float(v[0]))
            out["vy"].append(float(v[1]))
            out["vz"].append(float(v[2]))
            out["yaw_rate"].append(float(state.body_rates_flu_rad_s[0, 0, 2]))
            out["cmd_vx"].append(action[0] * lim.max_velocity_m_s)
    return out


def available_models() -> list[str]:
    """Vehicle models that can be built in this checkout."""
    names = []
    for name in MODEL_NAMES:
        try:
            make_vehicle_model(name, 1, 1, 0.02)
        except ImportError:
            continue
        names.append(name)
    return names


def plot_responses(series: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Write a PNG with vx, vy, vz and yaw rate of every model against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(9, 9), sharex=True)
    for ax, key, label in zip(
        axes,
        ("vx", "vy", "vz", "yaw_rate"),
        ("vx east (m/s)", "vy north (m/s)", "vz up (m/s)", "yaw rate (rad/s)"),
        strict=True,
    ):
        for name, s in series.items():
            ax.plot(s["t"], s[key], label=name)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="upper right")
    axes[-1].set_xlabel("time (s)")
    fig.suptitle("Velocity-step responses of the vehicle models")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; print where its outputs are."""
    out_dir = check_output_dir(args.out, "--out")
    models = available_models()
    series = {}
    for name in models:
        t0 = time.perf_counter()
        series[name] = fly_sequence(name)
        print(f"[demo] flew the step sequence with '{name}' in {time.perf_counter() - t0:.2f} s")
    plot_path = out_dir / "step_responses.png"
    plot_responses(series, plot_path)
    summary = {
        name: {
            "vx_at_end_of_5m_s_step": s["vx"][round(7.0 / 0.02) - 1],
            "peak_vx_m_s": max(s["vx"]),
        }
        for name, s in series.items()
    }
    from isr_sim_bridge.camera_cli import main as camera_main

    grid = out_dir / "drone_views.png"
    camera_main(["render", "--world-seed", "3", "--drones", "16", "--out", str(grid)])

    from isr_training.baselines import RandomPolicy, ScriptedExpert, run_policy
    from isr_training.env import EnvConfig, ISREnv

    baselines = {}
    for name in ("random", "expert"):
        env = ISREnv(EnvConfig(num_worlds=4, drones_per_world=1, stagger=False, seed=100))
        policy = RandomPolicy(env.num_envs, seed=0) if name == "random" else ScriptedExpert(env)
        t0 = time.perf_counter()
        baselines[name] = run_policy(env, policy)
        found = baselines[name]["targets_found"]
        wall = time.perf_counter() - t0
        print(f"[demo] {name:>6} policy: {found:.0%} of targets found in 120 s ({wall:.1f} s)")

    from isr_direct_dynamics.cli import run_dynamics_benchmark

    bench = []
    for name, drones in (("direct", 65536), ("quadrotor", 4096)):
        if name in models:
            ns = argparse.Namespace(
                model=name, drones=drones, drones_per_world=1, device="cpu", control_dt=0.1,
                seconds=1.0, threads=None, compile=False, json=True,
            )  # fmt: skip
            bench.append(run_dynamics_benchmark(ns))
    (out_dir / "summary.json").write_text(
        json_dumps({"responses": summary, "baselines": baselines, "bench": bench}, indent=2)
    )
    for b in bench:
        rate = b["drone_steps_per_s"]
        print(f"[demo] {b['model']}: {rate:,.0f} drone-steps/s at {b['drones']} drones")
    print(f"[demo] step responses: {plot_path}")
    print(f"[demo] drone views:    {grid}")
    print(f"[demo] summary:        {out_dir / 'summary.json'}")
    return 0


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    """Add ``isr demo``."""
    p = sub.add_parser("demo", help="the main job on the embedded default (make demo)")
    p.add_argument("--out", default="reports/demo", help="output directory")
    p.set_defaults(func=run_demo)
