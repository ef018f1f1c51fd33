"""The embedded full-fidelity quadrotor as a tuning source: random step commands, flights, fit."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from isr_direct_dynamics import (
    DirectDynamicsConfig,
    InitialState,
)
from isr_direct_dynamics.config import ConfigError, check
from isr_direct_dynamics.math3d import quat_rotate
from isr_px4_eval.px4.frames import euler_yaw_rate_from_body_rates
from isr_px4_eval.px4.logs import FlightLog
from isr_px4_eval.tuning.fit import TuningResult, tune
from isr_px4_eval.tuning.replay import TuningConfig


# ---------------------------------------------------------------------------------- embedded
@dataclass
class EmbeddedConfig:
    """Random piecewise-constant flights of the embedded full-fidelity model."""

    num_sequences: int = 48
    """Flights (drones, flown as one batch)."""
    num_fit_sequences: int = 32
    """Flights used for fitting; the rest are held out."""
    duration_s: float = 40.0
    """Length of each flight, s."""
    control_dt_s: float = 0.02
    """Control period of the generated logs (= the fit's grid), s."""
    hold_s: tuple[float, float] = (0.5, 2.5)
    """Range of each command's hold time, s (as the real flight's random segment)."""
    max_horizontal_speed_m_s: float = 6.0
    """Horizontal speed drawn uniformly from 0 to this, direction uniform."""
    max_vertical_speed_m_s: float = 1.5
    """Vertical speed drawn uniformly in +-this, m/s."""
    max_yaw_rate_rad_s: float = 1.0
    """Yaw rate drawn uniformly in +-this, rad/s."""
    start_altitude_m: float = 100.0
    """Start altitude (far from the ground), m."""
    seed: int = 0
    """Seed of the command draws (and of the model)."""

    def validate(self) -> None:
        """Check ranges; raises :class:`ConfigError` naming the field."""
        check(self.num_sequences >= 2, "num_sequences", "must be >= 2")
        check(
            1 <= self.num_fit_sequences < self.num_sequences,
            "num_fit_sequences",
            f"must be in [1, {self.num_sequences}) (fewer than the sequences), got "
            f"{self.num_fit_sequences}",
        )
        check(self.duration_s > 0, "duration_s", "must be > 0")
        check(self.control_dt_s > 0, "control_dt_s", "must be > 0")
        check(0 < self.hold_s[0] <= self.hold_s[1], "hold_s", "must satisfy 0 < low <= high")
        for name in ("max_horizontal_speed_m_s", "max_vertical_speed_m_s", "max_yaw_rate_rad_s"):
            v = getattr(self, name)
            check(v >= 0, name, f"must be >= 0, got {v}")


def random_commands(cfg: EmbeddedConfig, num_steps: int) -> np.ndarray:
    """Piecewise-constant commands ``(S, num_steps, 4)`` [vx, vy, vz, yaw_rate] ENU, seeded."""
    rng = np.random.default_rng(cfg.seed)
    out = np.zeros((cfg.num_sequences, num_steps, 4))
    for s in range(cfg.num_sequences):
        k = 0
        while k < num_steps:
            n = max(1, int(round(rng.uniform(*cfg.hold_s) / cfg.control_dt_s)))
            speed = rng.uniform(0.0, cfg.max_horizontal_speed_m_s)
            heading = rng.uniform(-math.pi, math.pi)
            vz = rng.uniform(-cfg.max_vertical_speed_m_s, cfg.max_vertical_speed_m_s)
            yr = rng.uniform(-cfg.max_yaw_rate_rad_s, cfg.max_yaw_rate_rad_s)
            out[s, k : k + n] = (speed * math.cos(heading), speed * math.sin(heading), vz, yr)
            k += n
    return out


def fly_embedded(
    cfg: EmbeddedConfig,
    model_config: Any = None,
    device: torch.device | str = "cpu",
) -> list[FlightLog]:
    """Fly the full-fidelity quadrotor under random piecewise-constant commands.

    All ``num_sequences`` flights are one batch of drones; returns one :class:`FlightLog` per
    drone (simulation time, every sample valid).
    """
    from isr_direct_dynamics import make_vehicle_model

    cfg.validate()
    n, dt = cfg.num_sequences, cfg.control_dt_s
    steps = int(round(cfg.duration_s / dt))
    model = make_vehicle_model("quadrotor", 1, n, dt, device, seed=cfg.seed, config=model_config)
    lim = model.config.limits
    cmds = random_commands(cfg, steps)
    scale = np.array(
        [
            lim.max_velocity_m_s,
            lim.max_velocity_m_s,
            lim.max_vertical_velocity_m_s,
            math.radians(lim.max_yaw_rate_deg_s),
        ]
    )
    if np.any(np.abs(cmds) > scale + 1e-9):
        raise ConfigError("embedded commands exceed the quadrotor's velocity limits")
    actions = torch.as_tensor(cmds / scale, dtype=torch.float32, device=model.device)
    pos = torch.zeros(1, n, 3, device=model.device)
    pos[..., 2] = cfg.start_altitude_m
    state = model.reset(initial=InitialState(pos_enu_m=pos))
    vel = np.zeros((n, steps + 1, 3))
    yaw = np.zeros((n, steps + 1))
    yaw_rate = np.zeros((n, steps + 1))
    thrust = np.zeros((n, steps + 1, 3))
    up = torch.tensor([0.0, 0.0, 1.0], device=model.device)

    def record(k: int) -> None:
        vel[:, k] = state.vel_enu_m_s[0].cpu().numpy()
        thrust[:, k] = quat_rotate(state.quat_wxyz[0], up).cpu().numpy()
        yaw[:, k] = state.yaw_rad[0].cpu().numpy()
        yaw_rate[:, k] = (
            euler_yaw_rate_from_body_rates(state.quat_wxyz[0], state.body_rates_flu_rad_s[0])
            .cpu()
            .numpy()
        )

    record(0)
    with torch.no_grad():
        for k in range(steps):
            state = model.step(actions[:, k].unsqueeze(0))
            record(k + 1)
    if bool(state.ground_contact.any()):
        raise ConfigError("an embedded flight touched the ground; raise start_altitude_m")
    logs = []
    time_s = np.arange(steps + 1) * dt
    cmd_full = np.concatenate((cmds, cmds[:, -1:]), axis=1)  # (n, steps + 1, 4)
    for i in range(n):
        logs.append(
            FlightLog(
                time_s=time_s,
                vel_enu_m_s=vel[i],
                pos_enu_m=np.zeros((steps + 1, 3)),
                yaw_enu_rad=yaw[i],
                yaw_rate_enu_rad_s=yaw_rate[i],
                cmd_vel_enu_m_s=cmd_full[i, :, :3],
                cmd_yaw_rate_enu_rad_s=cmd_full[i, :, 3],
                valid=np.ones(steps + 1, dtype=bool),
                dt_s=dt,
                source=f"embedded quadrotor, sequence {i} (seed {cfg.seed})",
                time_base="simulation time, s",
                time_reference="start of the sequence",
                thrust_dir_enu=thrust[i],
            )
        )
    return logs


def fit_from_embedded(
    embedded: EmbeddedConfig | None = None,
    cfg: TuningConfig | None = None,
    model_config: Any = None,
    base_config: DirectDynamicsConfig | None = None,
) -> TuningResult:
    """Fly the embedded quadrotor under random commands, fit on some flights, hold out the rest."""
    embedded = embedded or EmbeddedConfig()
    cfg = cfg or TuningConfig()
    t0 = time.perf_counter()
    logs = fly_embedded(embedded, model_config, cfg.device)
    fly_s = time.perf_counter() - t0
    k = embedded.num_fit_sequences
    result = tune(
        logs[:k],
        logs[k:],
        cfg,
        base_config,
        source=(
            f"embedded quadrotor: {embedded.num_sequences} random flights of "
            f"{embedded.duration_s:g} s (seed {embedded.seed}), fit on {k}"
        ),
    )
    result.info["embedded"] = asdict(embedded)
    result.info["embedded_flight_seconds"] = round(fly_s, 2)
    return result


__all__ = ["EmbeddedConfig", "fit_from_embedded", "fly_embedded", "random_commands"]
