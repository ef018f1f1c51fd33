"""Open-loop replay of flights through batched direct-dynamics candidates.

The fitted parameters (:class:`FitParams`), the tuning settings (:class:`TuningConfig`), the
scored windows of a flight (:func:`make_windows`) and the batched replay of many candidate
parameter sets (:func:`replay`); the method is described in :mod:`isr_px4_eval.tuning`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

from isr_direct_dynamics import (
    DirectDynamics,
    DirectDynamicsConfig,
    DirectParams,
    InitialState,
    VelocityLimits,
)
from isr_direct_dynamics.config import ConfigError, check
from isr_px4_eval.px4.logs import FlightLog, FlightLogError

AXES: tuple[str, ...] = ("vx", "vy", "vz", "yaw_rate")
"""Fitted output channels: ENU velocity components (m/s) and the ENU yaw rate (rad/s)."""

# Replay model: limits far beyond any command (so nothing is clipped), no tilt (unused), no ground.
_REPLAY_LIMITS = VelocityLimits(
    max_velocity_m_s=100.0,
    max_vertical_velocity_m_s=100.0,
    max_yaw_rate_deg_s=5000.0,
    clip_horizontal_norm=False,
)


def _no_ground(pos_enu_m: Tensor) -> Tensor:
    """Terrain far below every replayed drone (velocity replay must never touch the ground)."""
    return torch.full_like(pos_enu_m[..., 0], -1.0e9)


# ---------------------------------------------------------------------------------- parameters
@dataclass
class FitParams:
    """One parameter set of the direct model, with the delay in seconds."""

    tau_horizontal_s: float = 0.65
    """Fast horizontal time constant, s."""
    tau_vertical_s: float = 0.3
    """Fast vertical time constant, s."""
    tau_yaw_s: float = 0.2
    """Yaw-rate time constant, s."""
    slow_fraction_horizontal: float = 0.0
    """Share of the horizontal command through the slow pole (0 = first order)."""
    tau_slow_horizontal_s: float = 3.0
    """Slow horizontal time constant, s."""
    slow_fraction_vertical: float = 0.0
    """Share of the vertical command through the slow pole (0 = first order)."""
    tau_slow_vertical_s: float = 3.0
    """Slow vertical time constant, s."""
    vertical_coupling: float = 0.0
    """Horizontal fast-pole change scaled by ``1 + k a_z / g`` (0 = off)."""
    max_horizontal_accel_m_s2: float = 0.0
    """Horizontal fast-pole acceleration limit, m/s^2 (0 = none)."""
    delay_s: float = 0.0
    """Transport delay of the command, s."""

    @classmethod
    def from_config(cls, cfg: DirectDynamicsConfig, control_dt_s: float) -> FitParams:
        """The parameters of a config whose ``delay_steps`` count ``control_dt_s`` steps."""
        cfg = cfg.resolved()
        values = {name: getattr(cfg, name) for name in FIT_PARAM_NAMES}
        return cls(**values, delay_s=cfg.delay_steps * control_dt_s)

    def to_config(
        self, base: DirectDynamicsConfig | None, control_dt_s: float
    ) -> DirectDynamicsConfig:
        """``base`` (defaults when None) with these parameters; delay rounded to control steps."""
        base = (base or DirectDynamicsConfig()).resolved()
        values = {name: round(getattr(self, name), 4) for name in FIT_PARAM_NAMES}
        cfg = replace(base, **values, delay_steps=int(round(self.delay_s / control_dt_s)))
        cfg.validate()
        return cfg

    def step_response(self, horizon_s: float = 5.0) -> dict[str, dict[str, float]]:
        """Unit-step response figures per axis group.

        ``t63_s``: time to 63 % of the command (delay included); ``t63_of_<horizon>s_value_s``:
        time to 63 % of the value reached at ``horizon_s`` (how the real flight's README quotes
        its steps); ``at_<horizon>s``: that value as a fraction of the command.
        """

        def response(t: np.ndarray, tau: float, frac: float, tau_slow: float) -> np.ndarray:
            s = np.clip(t - self.delay_s, 0.0, None)
            r = 1.0 - (1.0 - frac) * np.exp(-s / tau) - frac * np.exp(-s / tau_slow)
            return np.where(t >= self.delay_s, r, 0.0)

        t = np.arange(0.0, 60.0, 0.001)
        out = {}
        for name, args in (
            (
                "horizontal",
                (self.tau_horizontal_s, self.slow_fraction_horizontal, self.tau_slow_horizontal_s),
            ),
            (
                "vertical",
                (self.tau_vertical_s, self.slow_fraction_vertical, self.tau_slow_vertical_s),
            ),
            ("yaw_rate", (self.tau_yaw_s, 0.0, 1.0)),
        ):
            r = response(t, *args)
            final = float(response(np.array([horizon_s]), *args)[0])
            i63 = int(np.argmax(r >= 1.0 - math.exp(-1.0)))
            i63_final = int(np.argmax(r >= (1.0 - math.exp(-1.0)) * final))
            out[name] = {
                "t63_s": round(float(t[i63]), 3),
                f"t63_of_{horizon_s:g}s_value_s": round(float(t[i63_final]), 3),
                f"at_{horizon_s:g}s": round(final, 4),
            }
        return out

    def rounded(self) -> dict[str, float]:
        """Plain dict, values rounded for reports."""
        return {k: round(v, 4) for k, v in asdict(self).items()}


FIT_PARAM_NAMES: tuple[str, ...] = tuple(f.name for f in fields(FitParams) if f.name != "delay_s")
"""The fitted parameters other than the delay; each is also a DirectDynamicsConfig field."""


# ---------------------------------------------------------------------------------- config
@dataclass
class TuningConfig:
    """Options of the fit (windows, split, search space, CEM)."""

    window_s: float = 15.0
    """Length of the scored part of each replay window, s."""
    tilt_drag_1_s: float | None = None
    """Fix the direct model's ``tilt_drag_1_s`` to this instead of fitting it from the attitude
    (e.g. a calm-air fit when gusty flights bias it); None = fit where the flight has attitude."""
    burn_in_s: float = 5.0
    """Replay before the scored part of each window (not scored), s: the model's unmeasured
    states (the slow pole's share, the yaw rate) settle towards the flight's."""
    fit_fraction: float = 0.5
    """Share of a single flight's valid time used for fitting (the rest is held out)."""
    holdout: str = "first"
    """Which end of a single flight is held out: ``first`` (fit on the end of the flight; in the
    probe flights that is the random segment, and the held-out part the scripted steps: fit on
    rich excitation, validate on step responses) or ``last`` (fit on the beginning)."""
    max_delay_s: float = 0.3
    """Largest transport delay searched, s (every grid step from 0)."""
    population: int = 64
    """Candidates per delay per CEM iteration."""
    iterations: int = 10
    """CEM iterations."""
    elite_fraction: float = 0.15
    """Share of each population that updates the search distribution."""
    smoothing: float = 0.8
    """Weight of the elites in the distribution update (1 = replace)."""
    tau_horizontal_bounds_s: tuple[float, float] = (0.05, 3.0)
    """Search range of the fast horizontal time constant, s."""
    tau_vertical_bounds_s: tuple[float, float] = (0.03, 2.0)
    """Search range of the fast vertical time constant, s."""
    tau_yaw_bounds_s: tuple[float, float] = (0.02, 2.0)
    """Search range of the yaw-rate time constant, s."""
    slow_fraction_bounds: tuple[float, float] = (0.0, 0.7)
    """Search range of both slow-pole fractions."""
    vertical_coupling_bounds: tuple[float, float] = (-1.0, 4.0)
    """Search range of the vertical-to-horizontal coupling (fitted with the slow pole)."""
    max_horizontal_accel_bounds_m_s2: tuple[float, float] = (2.0, 40.0)
    """Search range of the horizontal acceleration limit, m/s^2 (fitted with the slow pole)."""
    tau_slow_bounds_s: tuple[float, float] = (0.5, 30.0)
    """Search range of both slow time constants, s."""
    weight_horizontal: float = 1.0
    """Weight of the vx and vy mean squared errors in the delay choice."""
    weight_vertical: float = 1.0
    """Weight of the vz mean squared error in the delay choice."""
    weight_yaw: float = 1.0
    """Weight of the yaw-rate mean squared error in the delay choice."""
    control_dt_s: float = 0.1
    """Control period of the consumer of the written config (``delay_steps`` counts these)."""
    seed: int = 0
    """Seed of the search's torch generator."""
    device: str = "cpu"
    """Torch device of the replay."""

    def validate(self) -> None:
        """Check ranges; raises :class:`ConfigError` naming the field."""
        c = self.tilt_drag_1_s
        check(
            c is None or (math.isfinite(c) and 0 <= c <= 10),
            "tilt_drag_1_s",
            f"must be in [0, 10] or null, got {c}",
        )
        for name in ("window_s", "max_delay_s", "control_dt_s", "smoothing"):
            v = getattr(self, name)
            check(math.isfinite(v) and v > 0, name, f"must be > 0, got {v}")
        check(self.burn_in_s >= 0, "burn_in_s", f"must be >= 0, got {self.burn_in_s}")
        check(
            0 < self.fit_fraction < 1, "fit_fraction", f"must be in (0, 1), got {self.fit_fraction}"
        )
        check(
            self.population >= 8,
            "population",
            f"must be >= 8 (the search keeps at least 5 elites), got {self.population}",
        )
        check(self.iterations >= 1, "iterations", f"must be >= 1, got {self.iterations}")
        check(0 < self.elite_fraction < 1, "elite_fraction", "must be in (0, 1)")
        check(self.smoothing <= 1, "smoothing", "must be <= 1")
        check(
            self.holdout in ("first", "last"),
            "holdout",
            f"must be first or last, got {self.holdout!r}",
        )
        for name in (
            "tau_horizontal_bounds_s",
            "tau_vertical_bounds_s",
            "tau_yaw_bounds_s",
            "tau_slow_bounds_s",
        ):
            lo, hi = getattr(self, name)
            check(0 < lo <= hi, name, f"must satisfy 0 < low <= high, got {(lo, hi)}")
        lo, hi = self.slow_fraction_bounds
        check(0 <= lo <= hi < 1, "slow_fraction_bounds", f"must be within [0, 1), got {(lo, hi)}")
        lo, hi = self.vertical_coupling_bounds
        check(
            -10 <= lo <= hi <= 10,
            "vertical_coupling_bounds",
            f"must satisfy -10 <= low <= high <= 10, got {(lo, hi)}",
        )
        lo, hi = self.max_horizontal_accel_bounds_m_s2
        check(
            0 < lo <= hi,
            "max_horizontal_accel_bounds_m_s2",
            f"must satisfy 0 < low <= high, got {(lo, hi)}",
        )


# ---------------------------------------------------------------------------------- windows
@dataclass
class ReplayBatch:
    """Replay windows of one or more flight logs, padded to a common length ``T``.

    ``H`` = number of command-history steps before each window (the largest searched delay).
    """

    cmd: Tensor  # (W, H + T, 4)
    """Commanded [vx, vy, vz, yaw_rate] (ENU, m/s and rad/s) from H steps before the window."""
    vel: Tensor  # (W, T, 3)
    """Measured velocity ENU, m/s."""
    yaw_rate: Tensor  # (W, T)
    """Measured yaw rate ENU, rad/s."""
    yaw0: Tensor  # (W,)
    """Measured yaw at each window's first sample, rad."""
    score: Tensor  # (W, T, 4) bool
    """Which samples (and channels) count in the error."""
    history: int
    """``H``: command-history steps available before each window."""
    dt_s: float
    """Grid period, s."""
    time_s: np.ndarray  # (W, T)
    """Log times of the samples (NaN in the padding), s."""
    log_index: np.ndarray  # (W,)
    """Index of the source log (in the list given to :func:`make_windows`) of each window."""

    @property
    def num_windows(self) -> int:
        """``W``."""
        return int(self.vel.shape[0])

    @property
    def length(self) -> int:
        """``T``."""
        return int(self.vel.shape[1])

    @property
    def scored_samples(self) -> int:
        """Number of scored velocity samples (all windows)."""
        return int(self.score[..., 0].sum())


def make_windows(
    logs: list[FlightLog],
    window_s: float,
    burn_in_s: float,
    history_s: float,
    device: torch.device | str = "cpu",
    climb_descent_m_s: tuple[float | None, float | None] = (None, None),
) -> ReplayBatch:
    """Cut the valid segments of ``logs`` into replay windows (see the module docstring).

    Each scored chunk ``[c, c + window)`` is replayed from ``max(segment start, c - burn_in)``;
    the first ``burn_in`` of every segment is never scored (the model has not settled yet).
    ``climb_descent_m_s``: PX4's setpoint limits (``MPC_Z_VEL_MAX_UP``, ``MPC_Z_VEL_MAX_DN``;
    ``None`` = none) applied to the logged vertical commands, as PX4 applies them before its
    controllers (:attr:`DirectDynamicsConfig.max_climb_rate_m_s`).
    """
    if not logs:
        raise FlightLogError("no flight logs to cut into windows")
    dt = logs[0].dt_s
    for log in logs:
        if abs(log.dt_s - dt) > 1e-9:
            raise FlightLogError(f"all logs must share one grid period, got {log.dt_s} and {dt}")
    length = max(1, int(round(window_s / dt)))
    burn = int(round(burn_in_s / dt))
    hist = int(math.ceil(history_s / dt - 1e-9))
    spans: list[tuple[int, int, int, int]] = []  # (log, start, first scored, stop)
    for li, log in enumerate(logs):
        for a, b in log.segments:
            c = a + burn
            while c < b - 1:
                e = min(c + length, b)
                if e - c >= 2:
                    spans.append((li, max(a, c - burn), c, e))
                c = e
    if not spans:
        raise FlightLogError(
            "no replay window: the valid segments are shorter than the burn-in "
            f"({burn_in_s} s) plus two samples"
        )
    t_max = max(e - s for _, s, _, e in spans)
    w = len(spans)
    cmd = np.zeros((w, hist + t_max, 4))
    vel = np.zeros((w, t_max, 3))
    yaw_rate = np.zeros((w, t_max))
    yaw0 = np.zeros(w)
    score = np.zeros((w, t_max, 4), dtype=bool)
    times = np.full((w, t_max), np.nan)
    log_index = np.zeros(w, dtype=np.int64)
    for i, (li, s, c, e) in enumerate(spans):
        log = logs[li]
        n = log.num_samples
        idx = np.clip(np.arange(s - hist, s + t_max), 0, n - 1)
        idx = np.minimum(idx, e - 1)  # hold the last command in the padding
        c_all = np.column_stack((log.cmd_vel_enu_m_s[idx], log.cmd_yaw_rate_enu_rad_s[idx]))
        cmd[i] = np.where(np.isfinite(c_all), c_all, 0.0)
        t_len = e - s
        vel[i, :t_len] = log.vel_enu_m_s[s:e]
        yr = log.yaw_rate_enu_rad_s[s:e]
        yaw_rate[i, :t_len] = np.where(np.isfinite(yr), yr, 0.0)
        yaw0[i] = log.yaw_enu_rad[s] if np.isfinite(log.yaw_enu_rad[s]) else 0.0
        first = max(c, s + 1) - s
        score[i, first:t_len, :3] = True
        yaw_ok = np.isfinite(log.cmd_yaw_rate_enu_rad_s[s:e]) & np.isfinite(yr)
        score[i, first:t_len, 3] = yaw_ok[first:]
        times[i, :t_len] = log.time_s[s:e]
        log_index[i] = li
    climb, descent = climb_descent_m_s
    lo, hi = -np.inf if descent is None else -descent, np.inf if climb is None else climb
    cmd[..., 2] = np.clip(cmd[..., 2], lo, hi)
    dev = torch.device(device)

    def tt(x: np.ndarray) -> Tensor:
        return torch.as_tensor(x, dtype=torch.float32, device=dev)

    return ReplayBatch(
        cmd=tt(cmd),
        vel=tt(vel),
        yaw_rate=tt(yaw_rate),
        yaw0=tt(yaw0),
        score=torch.as_tensor(score, device=dev),
        history=hist,
        dt_s=dt,
        time_s=times,
        log_index=log_index,
    )


# ---------------------------------------------------------------------------------- replay
@dataclass
class Candidates:
    """``P`` parameter sets, each field ``(P,)`` (delay in grid steps, int64)."""

    tau_horizontal_s: Tensor
    tau_vertical_s: Tensor
    tau_yaw_s: Tensor
    slow_fraction_horizontal: Tensor
    tau_slow_horizontal_s: Tensor
    slow_fraction_vertical: Tensor
    tau_slow_vertical_s: Tensor
    vertical_coupling: Tensor
    max_horizontal_accel_m_s2: Tensor
    delay_steps: Tensor

    @property
    def size(self) -> int:
        """``P``."""
        return int(self.delay_steps.shape[0])

    @classmethod
    def from_params(
        cls, params: list[FitParams], dt_s: float, device: torch.device | str = "cpu"
    ) -> Candidates:
        """Candidates from :class:`FitParams` (delay rounded to grid steps ``dt_s``)."""
        kw: dict[str, Tensor] = {}
        for name in FIT_PARAM_NAMES:
            kw[name] = torch.tensor([getattr(p, name) for p in params], device=device)
        kw["delay_steps"] = torch.tensor(
            [int(round(p.delay_s / dt_s)) for p in params], dtype=torch.long, device=device
        )
        return cls(**kw)

    def params(self, i: int, dt_s: float) -> FitParams:
        """Candidate ``i`` as :class:`FitParams`."""
        kw = {name: float(getattr(self, name)[i]) for name in FIT_PARAM_NAMES}
        return FitParams(**kw, delay_s=int(self.delay_steps[i]) * dt_s)

    def direct_params(self, num_windows: int) -> DirectParams:
        """Per-drone :class:`DirectParams` ``(W, P)``; the delay is applied by the replay."""

        def grid(x: Tensor) -> Tensor:
            return x.to(torch.float32).unsqueeze(0).expand(num_windows, -1).contiguous()

        zeros = torch.zeros_like(grid(self.tau_yaw_s))
        return DirectParams(
            tau_horizontal_s=grid(self.tau_horizontal_s),
            tau_vertical_s=grid(self.tau_vertical_s),
            tau_yaw_s=grid(self.tau_yaw_s),
            slow_fraction_horizontal=grid(self.slow_fraction_horizontal),
            tau_slow_horizontal_s=grid(self.tau_slow_horizontal_s),
            slow_fraction_vertical=grid(self.slow_fraction_vertical),
            tau_slow_vertical_s=grid(self.tau_slow_vertical_s),
            vertical_coupling=grid(self.vertical_coupling),
            max_horizontal_accel_m_s2=grid(self.max_horizontal_accel_m_s2),
            delay_steps=torch.zeros_like(zeros, dtype=torch.long),
            vel_noise_m_s_per_sqrt_s=zeros,
            pos_noise_m_per_sqrt_s=zeros,
        )


def replay(
    batch: ReplayBatch, cand: Candidates, return_trajectory: bool = False
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Open-loop replay of every window for every candidate, in one batched rollout.

    Returns:
        ``(sq_err_sum (P, 4), count (4,), trajectory)``: summed squared errors of vx, vy, vz and
        the yaw rate over the scored samples, the number of scored samples per channel, and, when
        asked, the predicted ``(W, P, T, 4)`` [vx, vy, vz, yaw_rate] (sample 0 = the initial state).
    """
    w, t_len, p = batch.num_windows, batch.length, cand.size
    dev = batch.vel.device
    if int(cand.delay_steps.max()) > batch.history:
        raise ConfigError(
            f"a candidate's delay ({int(cand.delay_steps.max())} steps) exceeds the windows' "
            f"command history ({batch.history} steps)"
        )
    cfg = DirectDynamicsConfig(  # the setpoint clip is in batch.cmd (make_windows)
        limits=_REPLAY_LIMITS,
        tilt_from_acceleration=False,
        max_climb_rate_m_s=None,
        max_descent_rate_m_s=None,
    )
    model = DirectDynamics(w, p, batch.dt_s, dev, config=cfg, terrain_height_fn=_no_ground)
    model.set_params(cand.direct_params(w))
    vel0 = batch.vel[:, 0].unsqueeze(1).expand(w, p, 3).contiguous()
    model.reset(
        initial=InitialState(
            pos_enu_m=torch.zeros(w, p, 3, device=dev),
            yaw_rad=batch.yaw0.unsqueeze(1).expand(w, p).contiguous(),
            vel_enu_m_s=vel0,
        )
    )
    lim = _REPLAY_LIMITS
    inv_scale = torch.tensor(
        [
            1.0 / lim.max_velocity_m_s,
            1.0 / lim.max_velocity_m_s,
            1.0 / lim.max_vertical_velocity_m_s,
            1.0 / math.radians(lim.max_yaw_rate_deg_s),
        ],
        device=dev,
    )
    base_idx = batch.history - cand.delay_steps.to(dev)  # (P,)
    sq = torch.zeros(p, 4, dtype=torch.float64, device=dev)
    score = batch.score.to(torch.float32)
    traj = torch.zeros(w, p, t_len, 4, device=dev) if return_trajectory else None
    if traj is not None:
        traj[:, :, 0, :3] = vel0
    for k in range(t_len - 1):
        action = batch.cmd[:, base_idx + k, :] * inv_scale  # (W, P, 4)
        state = model.step(action)
        pred = torch.cat((state.vel_enu_m_s, state.body_rates_flu_rad_s[..., 2:3]), -1)
        target = torch.cat((batch.vel[:, k + 1], batch.yaw_rate[:, k + 1, None]), -1)  # (W, 4)
        err = (pred - target.unsqueeze(1)) * score[:, k + 1].unsqueeze(1)
        sq += (err * err).sum(0).to(torch.float64)
        if traj is not None:
            traj[:, :, k + 1] = pred
    count = batch.score.sum(dim=(0, 1)).to(torch.float64)
    return sq, count, traj


def rmse_table(sq: Tensor, count: Tensor) -> list[dict[str, float]]:
    """Per-candidate RMSE dicts (vx, vy, vz, yaw_rate, horizontal = RMS over vx and vy)."""
    mse = (sq / count.clamp(min=1)).cpu().numpy()
    out = []
    for row in mse:
        d = {axis: float(np.sqrt(v)) for axis, v in zip(AXES, row, strict=True)}
        d["horizontal"] = float(np.sqrt(0.5 * (row[0] + row[1])))
        out.append({k: round(v, 4) for k, v in d.items()})
    return out


__all__ = [
    "AXES",
    "Candidates",
    "FitParams",
    "ReplayBatch",
    "TuningConfig",
    "make_windows",
    "replay",
    "rmse_table",
]
