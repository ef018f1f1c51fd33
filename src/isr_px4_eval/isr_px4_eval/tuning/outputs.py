"""Outputs of a tuning run: ``dynamics_config.yaml`` with its report header, and the fit plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from isr_direct_dynamics.config import ConfigError, to_dict
from isr_direct_dynamics.io_checks import atomic_write_text
from isr_px4_eval.tuning.fit import TuningResult
from isr_px4_eval.tuning.replay import AXES


# ---------------------------------------------------------------------------------- outputs
def config_header(result: TuningResult) -> list[str]:
    """Comment lines for the top of ``dynamics_config.yaml``: the source and the fit report."""
    info = result.info
    lines = [
        "Direct-dynamics parameters fitted by `isr tune-dynamics` (isr_px4_eval.tuning).",
        f"Source: {result.source}",
        f"Method: {info.get('method', '')}",
        f"delay_steps counts control steps of {info.get('control_dt_s')} s "
        f"(fitted delay {result.slow_pole.delay_s:.3f} s on a {info.get('grid_dt_s')} s grid).",
        f"Held-out RMSE ({info.get('heldout_scored_s')} s scored), per axis:",
        "  variant        vx      vy      vz      yaw_rate  (m/s, m/s, m/s, rad/s)",
    ]
    for name, r in result.rmse_heldout.items():
        lines.append(
            f"  {name:<12} {r['vx']:7.4f} {r['vy']:7.4f} {r['vz']:7.4f} {r['yaw_rate']:9.4f}"
        )
    for label, p in (
        ("first-order fit", result.first_order),
        ("slow-pole fit", result.slow_pole),
        ("written (slow pole, delay in whole control steps)", result.written),
    ):
        lines.append(
            f"{label}: tau_h {p.tau_horizontal_s:.3f} s, tau_v {p.tau_vertical_s:.3f} s, "
            f"tau_yaw {p.tau_yaw_s:.3f} s, slow_h {p.slow_fraction_horizontal:.3f} x "
            f"{p.tau_slow_horizontal_s:.2f} s, slow_v {p.slow_fraction_vertical:.3f} x "
            f"{p.tau_slow_vertical_s:.2f} s, coupling {p.vertical_coupling:.3f}, "
            f"a_max {p.max_horizontal_accel_m_s2:.1f} m/s^2, delay {p.delay_s:.3f} s"
        )
    split = info.get("split")
    if split:
        ref = info.get("flight", {}).get("time_reference", "log start")
        lines.append(
            f"Fit part: {split['fit_part_s']} s, held-out part: {split['heldout_part_s']} s "
            f"(times since {ref})"
        )
    return lines


def write_dynamics_config(result: TuningResult, path: str | Path) -> Path:
    """Write the tuned config as YAML (keys of DirectDynamicsConfig) with a comment header."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# {line}\n" for line in config_header(result))
    body = yaml.safe_dump(to_dict(result.config), sort_keys=False)
    atomic_write_text(path, header + body)
    return path


def plot_fit(result: TuningResult, path: str | Path, max_seconds: float | None = 60.0) -> Path:
    """PNG: measured vs untuned vs first-order vs tuned, per axis, on the held-out part."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = result.traces
    if not tr:
        raise ConfigError("the result has no held-out traces to plot")
    t = tr["time_s"]
    keep = np.ones(len(t), dtype=bool)
    if max_seconds is not None:
        t0 = np.nanmin(t)
        keep = ~(t > t0 + max_seconds)
    labels = ("vx east (m/s)", "vy north (m/s)", "vz up (m/s)", "yaw rate (rad/s)")
    fig, axes = plt.subplots(4, 1, figsize=(14, 11), sharex=True)
    styles = {
        "measured": {"color": "black", "lw": 1.6, "label": "measured"},
        "untuned": {"color": "tab:red", "lw": 1.0, "ls": ":", "label": "untuned"},
        "first_order": {"color": "tab:orange", "lw": 1.0, "ls": "--", "label": "first-order fit"},
        "written": {"color": "tab:blue", "lw": 1.2, "label": "tuned (slow pole, as written)"},
    }
    for j, ax in enumerate(axes):
        for key, style in styles.items():
            if key in tr:
                y = tr[key][:, j]
                ax.plot(t[keep], y[keep], **style)
        r = result.rmse_heldout
        ax.set_title(
            f"{labels[j]}  RMSE untuned {r['untuned'][AXES[j]]:.3f}, first-order "
            f"{r['first_order'][AXES[j]]:.3f}, tuned {r['written'][AXES[j]]:.3f}",
            fontsize=9,
        )
        ax.set_ylabel(labels[j])
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="upper right", fontsize=8, ncol=4)
    axes[-1].set_xlabel(f"time (s, {result.info.get('flight', {}).get('time_reference', 'log')})")
    fig.suptitle(f"Held-out replay: {result.source}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


__all__ = ["config_header", "plot_fit", "write_dynamics_config"]
