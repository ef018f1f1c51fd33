"""Fit the direct (fast-mode) dynamics to PX4 flights or to the embedded full-fidelity model.

What is fitted: the parameters of :class:`~isr_direct_dynamics.DirectDynamicsConfig` that shape
the velocity response: fast time constants (horizontal, vertical, yaw rate), the transport delay,
the slow parallel pole (fraction and time constant, horizontal and vertical) that captures
PX4's "fast rise to ~80 % then slow creep through the velocity integrator" (README of the real
flight, quirk 3), and the vertical-to-horizontal coupling (horizontal acceleration scaled by
``1 + k a_z / g``, fitted together with the slow pole). Velocity limits are not fitted: in the
direct model they are the action scaling (a task choice), and no flight here saturates them
(commands <= 6 m/s, PX4's ``MPC_XY_VEL_MAX`` is 12 m/s).

How: **open-loop replay, batched.** The commanded velocity / yaw-rate sequence of a
:class:`~isr_px4_eval.px4.logs.FlightLog` is cut into windows (``window_s``, default 15 s); each
window's model state starts at the measured velocity, ``burn_in_s`` before the first sample that
is scored (so the slow pole's and the yaw rate's unmeasured states settle), and the model then
runs open loop on the commands only (never on measured velocities: no one-step prediction). The
score is the velocity (and yaw-rate) mean squared error. Every window is one *world* and every
candidate parameter set one *drone* of a single :class:`~isr_direct_dynamics.DirectDynamics`
with per-drone :class:`~isr_direct_dynamics.DirectParams`, so thousands of candidates x all
windows run as one batched rollout. The transport delay is applied by indexing each candidate's
command history (identical to ``delay_steps``, but the history before a window comes from the
log instead of zeros).

Search: **cross-entropy method (CEM) per delay, separable per axis group.** Delays 0 ..
``max_delay_s`` (every grid step) are searched exhaustively; for each delay a Gaussian population
(log time constants, fractions) is sampled, and because the axis groups barely interact in the
direct model (horizontal params only change vx/vy, vertical only vz, yaw only the yaw rate; the
one link is the vertical coupling, a horizontal parameter driven by the candidate's own vertical
response, which converges first), each group keeps its own elites by its own error and its own
full covariance (the fast time constant,
the slow share and the slow time constant are strongly correlated; a diagonal CEM crawls along
that valley). The distribution's mean is always re-evaluated and the best candidate kept, so the
result never gets worse. The delay with the lowest weighted total error wins. No gradients: the
rollout is the model's own code (what training runs), and the integer delay is searched
exhaustively. On synthetic data from the direct model (known parameters, noise) this recovers
every parameter within ~1 % (``test_tuning.py``).

Split of a single flight (:func:`tune_flight`): by default the first half of the valid time is
held out and the second half fitted. In the probe flights that holds out the scripted steps and
fits the random segment (fit on rich excitation, validate on step responses);
``holdout="last"`` fits the beginning instead.

Outputs: :class:`TuningResult` (parameters, per-axis RMSE on the fit part and on a held-out part
for the untuned default config, a plain first-order fit (slow pole off) and the slow-pole fit) and
a ``dynamics_config.yaml`` loadable with ``from_dict(DirectDynamicsConfig, yaml.safe_load(...))``
(:func:`write_dynamics_config`). ``delay_steps`` in that file counts control steps of the
training's control period (``control_dt_s``, default 0.1 s), so the delay is rounded to it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

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
from isr_direct_dynamics.config import ConfigError, check, to_dict
from isr_direct_dynamics.direct import GRAVITY_M_S2
from isr_direct_dynamics.io_checks import atomic_write_text
from isr_direct_dynamics.math3d import quat_rotate
from isr_px4_eval.px4.frames import euler_yaw_rate_from_body_rates
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
) -> ReplayBatch:
    """Cut the valid segments of ``logs`` into replay windows (see the module docstring).

    Each scored chunk ``[c, c + window)`` is replayed from ``max(segment start, c - burn_in)``;
    the first ``burn_in`` of every segment is never scored (the model has not settled yet).
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
    cfg = DirectDynamicsConfig(limits=_REPLAY_LIMITS, tilt_from_acceleration=False)
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


# ---------------------------------------------------------------------------------- search
_GROUPS: dict[str, tuple[str, ...]] = {
    "horizontal": (
        "tau_horizontal_s",
        "slow_fraction_horizontal",
        "tau_slow_horizontal_s",
        "vertical_coupling",
        "max_horizontal_accel_m_s2",
    ),
    "vertical": ("tau_vertical_s", "slow_fraction_vertical", "tau_slow_vertical_s"),
    "yaw": ("tau_yaw_s",),
}
_LOG_PARAMS = {
    "tau_horizontal_s",
    "tau_slow_horizontal_s",
    "tau_vertical_s",
    "tau_slow_vertical_s",
    "tau_yaw_s",
    "max_horizontal_accel_m_s2",
}


def _bounds(cfg: TuningConfig, name: str, slow_pole: bool) -> tuple[float, float]:
    if name.startswith("slow_fraction"):
        return cfg.slow_fraction_bounds if slow_pole else (0.0, 0.0)
    if name.startswith("tau_slow"):
        return cfg.tau_slow_bounds_s if slow_pole else (3.0, 3.0)
    if name == "vertical_coupling":
        return cfg.vertical_coupling_bounds if slow_pole else (0.0, 0.0)
    if name == "max_horizontal_accel_m_s2":
        # Searched in log space; the top of the range means "practically no limit".
        return cfg.max_horizontal_accel_bounds_m_s2 if slow_pole else (1.0e3, 1.0e3)
    if name == "tau_horizontal_s":
        return cfg.tau_horizontal_bounds_s
    if name == "tau_vertical_s":
        return cfg.tau_vertical_bounds_s
    return cfg.tau_yaw_bounds_s


def _group_loss(mse: Tensor, group: str) -> Tensor:
    """The group's own error from per-candidate MSE ``(P, 4)``."""
    if group == "horizontal":
        return mse[:, 0] + mse[:, 1]
    if group == "vertical":
        return mse[:, 2]
    return mse[:, 3]


@dataclass
class SearchResult:
    """Best parameters per searched delay (and the winner)."""

    best: FitParams
    """Parameters at the delay with the lowest weighted total error."""
    per_delay: dict[int, FitParams]
    """Best parameters for every searched delay (grid steps)."""
    per_delay_mse: dict[int, list[float]]
    """Fit-part MSE (vx, vy, vz, yaw_rate) of :attr:`per_delay`."""
    candidate_evaluations: int
    """Total candidate rollouts (candidates x iterations)."""
    seconds: float
    """Wall time of the search."""


def cem_search(batch: ReplayBatch, cfg: TuningConfig, slow_pole: bool = True) -> SearchResult:
    """Cross-entropy search per delay, separable per axis group (see the module docstring)."""
    cfg.validate()
    t_start = time.perf_counter()
    dev = batch.vel.device
    gen = torch.Generator(device="cpu")
    gen.manual_seed(cfg.seed)
    dt = batch.dt_s
    delays = torch.arange(0, int(round(cfg.max_delay_s / dt)) + 1, dtype=torch.long)
    nd, pop = len(delays), cfg.population
    n_elite = max(5, int(round(cfg.elite_fraction * pop)))

    names = [n for g in _GROUPS.values() for n in g]
    lo = torch.zeros(len(names), dtype=torch.float64)
    hi = torch.zeros(len(names), dtype=torch.float64)
    for i, n in enumerate(names):
        a, b = _bounds(cfg, n, slow_pole)
        lo[i], hi[i] = (math.log(a), math.log(b)) if n in _LOG_PARAMS else (a, b)
    mean = ((lo + hi) / 2).expand(nd, -1).clone()  # (nd, n_params), search space
    for i, n in enumerate(names):  # start the slow pole small, the search widens it if needed
        if n.startswith("slow_fraction") and slow_pole:
            mean[:, i] = min(max(0.2, lo[i].item()), hi[i].item())
    col = {n: i for i, n in enumerate(names)}
    idx_of = {g: [col[n] for n in members] for g, members in _GROUPS.items()}
    # Full covariance per axis group (the horizontal and vertical parameters are correlated:
    # a faster fast pole trades against a larger slow share), diagonal at the start.
    cov = {
        g: torch.diag_embed(((hi[idx] - lo[idx]) / 4) ** 2).expand(nd, -1, -1).clone()
        for g, idx in idx_of.items()
    }
    min_var = {
        g: torch.diag_embed(((hi[idx] - lo[idx]) * 1e-3) ** 2 + 1e-12) for g, idx in idx_of.items()
    }
    best_loss = {g: torch.full((nd,), math.inf, dtype=torch.float64) for g in _GROUPS}
    best_x = mean.clone()
    best_mse = torch.full((nd, 4), math.inf, dtype=torch.float64)
    evaluations = 0
    rows = torch.arange(nd)
    a = cfg.smoothing
    for _ in range(cfg.iterations):
        z = torch.randn(nd, pop, len(names), generator=gen, dtype=torch.float64)
        z[:, 0] = 0.0  # candidate 0 of every population is the current mean
        x = torch.empty(nd, pop, len(names), dtype=torch.float64)
        for g, idx in idx_of.items():
            chol = torch.linalg.cholesky(cov[g] + min_var[g])  # (nd, k, k)
            x[:, :, idx] = mean[:, idx].unsqueeze(1) + z[:, :, idx] @ chol.transpose(-1, -2)
        x = torch.clamp(x, lo, hi)  # (nd, pop, n)
        flat = x.reshape(nd * pop, len(names))
        values = {
            n: (flat[:, i].exp() if n in _LOG_PARAMS else flat[:, i]).to(torch.float32).to(dev)
            for i, n in enumerate(names)
        }
        cand = Candidates(**values, delay_steps=delays.repeat_interleave(pop).to(dev))
        sq, count, _ = replay(batch, cand)
        evaluations += cand.size
        mse = (sq / count.clamp(min=1)).cpu().reshape(nd, pop, 4)
        for g, idx in idx_of.items():
            loss = _group_loss(mse.reshape(nd * pop, 4), g).reshape(nd, pop)
            loss = torch.where(torch.isfinite(loss), loss, torch.full_like(loss, math.inf))
            # Best so far per delay.
            val, arg = loss.min(dim=1)
            better = val < best_loss[g]
            best_loss[g] = torch.where(better, val, best_loss[g])
            best_x[:, idx] = torch.where(better.unsqueeze(1), x[rows, arg][:, idx], best_x[:, idx])
            for axis in _axes_of(g):
                best_mse[:, axis] = torch.where(better, mse[rows, arg][:, axis], best_mse[:, axis])
            # CEM update (mean and covariance) from the group's elites.
            elite = loss.topk(n_elite, dim=1, largest=False).indices  # (nd, n_elite)
            ex = torch.gather(x[:, :, idx], 1, elite.unsqueeze(-1).expand(-1, -1, len(idx)))
            m_e = ex.mean(1)
            dev_e = ex - m_e.unsqueeze(1)
            cov_e = dev_e.transpose(1, 2) @ dev_e / (n_elite - 1)
            mean[:, idx] = a * m_e + (1 - a) * mean[:, idx]
            cov[g] = a * cov_e + (1 - a) * cov[g]
    weights = torch.tensor(
        [cfg.weight_horizontal, cfg.weight_horizontal, cfg.weight_vertical, cfg.weight_yaw],
        dtype=torch.float64,
    )
    total = (best_mse * weights).sum(1)
    per_delay = {}
    per_delay_mse = {}
    for di in range(nd):
        kw = {
            n: float(best_x[di, i].exp() if n in _LOG_PARAMS else best_x[di, i])
            for i, n in enumerate(names)
        }
        per_delay[int(delays[di])] = FitParams(**kw, delay_s=float(delays[di]) * dt)
        per_delay_mse[int(delays[di])] = [float(v) for v in best_mse[di]]
    best_d = int(delays[int(torch.argmin(total))])
    return SearchResult(
        best=per_delay[best_d],
        per_delay=per_delay,
        per_delay_mse=per_delay_mse,
        candidate_evaluations=evaluations,
        seconds=time.perf_counter() - t_start,
    )


def _axes_of(group: str) -> tuple[int, ...]:
    return {"horizontal": (0, 1), "vertical": (2,), "yaw": (3,)}[group]


# ---------------------------------------------------------------------------------- pipeline
@dataclass
class TuningResult:
    """Everything a fit produced: parameters, errors, the written config, plot traces."""

    source: str
    """What was fitted (flight log or embedded model)."""
    untuned: FitParams
    """The base (default) config's parameters."""
    first_order: FitParams
    """Best fit with the slow pole off."""
    slow_pole: FitParams
    """Best fit with the slow pole (the tuned result)."""
    written: FitParams
    """What the written config holds (slow-pole fit at a delay that is a whole number of
    control steps)."""
    config: DirectDynamicsConfig
    """The tuned config (written to ``dynamics_config.yaml``)."""
    rmse_fit: dict[str, dict[str, float]]
    """Per-axis RMSE on the fit part, per variant."""
    rmse_heldout: dict[str, dict[str, float]]
    """Per-axis RMSE on the held-out part, per variant."""
    info: dict[str, Any] = field(default_factory=dict)
    """Sizes, timings, the split, method notes."""
    traces: dict[str, np.ndarray] = field(default_factory=dict)
    """Held-out traces for plotting: ``time_s (n,)``, ``measured (n, 4)`` and one ``(n, 4)`` per
    variant, NaN between windows."""

    def report(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "source": self.source,
            "params": {
                "untuned": self.untuned.rounded(),
                "first_order": self.first_order.rounded(),
                "slow_pole": self.slow_pole.rounded(),
                "written": self.written.rounded(),
            },
            "step_response": {
                "untuned": self.untuned.step_response(),
                "first_order": self.first_order.step_response(),
                "slow_pole": self.slow_pole.step_response(),
            },
            "rmse_fit": self.rmse_fit,
            "rmse_heldout": self.rmse_heldout,
            "config": to_dict(self.config),
            "info": self.info,
        }


TILT_FIT_MAX_DEG = 40.0
"""Samples tilted more than this are left out of the tilt fit (PX4 saturates at 45 deg)."""


def _tilt_samples(logs: list[FlightLog]) -> tuple[np.ndarray, ...] | None:
    """Per valid sample with attitude: thrust direction, acceleration, velocity (ENU), log index."""
    k_all, a_all, v_all, i_all = [], [], [], []
    for i, log in enumerate(logs):
        if log.thrust_dir_enu is None:
            continue
        acc = np.gradient(log.vel_enu_m_s, log.dt_s, axis=0)
        ok = log.valid.copy()
        ok[1:] &= log.valid[:-1]  # both neighbours of the central difference valid
        ok[:-1] &= log.valid[1:]
        b = log.thrust_dir_enu
        ok &= b[:, 2] > math.cos(math.radians(TILT_FIT_MAX_DEG))
        ok &= np.all(np.isfinite(acc), axis=1) & np.all(np.isfinite(b), axis=1)
        k_all.append(b[ok])
        a_all.append(acc[ok])
        v_all.append(log.vel_enu_m_s[ok])
        i_all.append(np.full(int(ok.sum()), i))
    if not k_all or sum(len(k) for k in k_all) < 10:
        return None
    return tuple(np.concatenate(x) for x in (k_all, a_all, v_all, i_all))


def _tilt_terms(b: np.ndarray, acc: np.ndarray, vel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lhs, x)``, both ``(n, 2)``, of the tilt equation ``lhs = c x - c w_xy``."""
    k = b[:, :2] / b[:, 2:3]
    return k * (acc[:, 2:3] + GRAVITY_M_S2) - acc[:, :2], vel[:, :2] - k * vel[:, 2:3]


def _per_log_mean(v: np.ndarray, log: np.ndarray) -> np.ndarray:
    """Each row replaced by the mean of its log's rows."""
    _, inv, counts = np.unique(log, return_inverse=True, return_counts=True)
    sums = np.zeros((len(counts), v.shape[1]))
    np.add.at(sums, inv, v)
    return (sums / counts[:, None])[inv]


def _tilt_rmse_deg(
    b: np.ndarray, acc: np.ndarray, vel: np.ndarray, log: np.ndarray, c: float
) -> float:
    """RMS angle between the measured thrust direction and ``a + g + c (v - w_log)``.

    ``w_log`` is each log's constant horizontal wind estimated with ``c`` fixed (0 when c = 0).
    """
    n = acc.copy()
    if c > 0:
        lhs, x = _tilt_terms(b, acc, vel)
        wind = -_per_log_mean(lhs - c * x, log) / c  # (n, 2)
        n[:, :2] += c * (vel[:, :2] - wind)
        n[:, 2] += c * vel[:, 2]
    n[:, 2] += GRAVITY_M_S2
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    cos = np.clip(np.sum(n * b, axis=1), -1.0, 1.0)
    return float(np.degrees(np.sqrt(np.mean(np.arccos(cos) ** 2))))


def fit_tilt_drag(
    fit_logs: list[FlightLog], heldout_logs: list[FlightLog]
) -> dict[str, Any] | None:
    """Fit the direct model's ``tilt_drag_1_s`` (linear drag / mass) to measured attitude.

    The thrust points along ``n = a + g z + c (v - w)`` (``w`` the wind: the drag acts on the
    air-relative velocity). With the measured thrust direction ``b`` (body up axis),
    ``k = b_xy / b_z`` must equal ``n_xy / n_z``, i.e. ``k (a_z + g) - a_xy = c (v_xy - k v_z)
    - c w_xy`` (vertical wind neglected): linear in ``c`` with one unknown constant wind per log
    (gusts are noise), solved by least squares within each log (fixed effects) on the samples
    tilted less than :data:`TILT_FIT_MAX_DEG`. The direct model has no wind, so only ``c`` is
    kept. Returns None when no log has attitude (``thrust_dir_enu``); else ``c``, the mean wind
    speed found and the held-out tilt-direction RMSE (deg) with ``c = 0`` (tilt from acceleration
    only) and with the fit (each held-out log's constant wind estimated with ``c`` fixed).
    """
    fit = _tilt_samples(fit_logs)
    if fit is None:
        return None
    b, acc, vel, log = fit
    lhs, x = _tilt_terms(b, acc, vel)
    lhs_d, x_d = lhs - _per_log_mean(lhs, log), x - _per_log_mean(x, log)
    c = float(np.clip(np.sum(x_d * lhs_d) / max(float(np.sum(x_d * x_d)), 1e-9), 0.0, 10.0))
    wind = -_per_log_mean(lhs - c * x, log) / max(c, 1e-9)
    held = _tilt_samples(heldout_logs) or fit
    return {
        "tilt_drag_1_s": round(c, 4),
        "wind_speed_fit_m_s": round(float(np.mean(np.linalg.norm(wind, axis=1))), 3),
        "samples_fit": len(b),
        "samples_heldout": len(held[0]),
        "heldout_tilt_rmse_deg": {
            "acceleration_only": round(_tilt_rmse_deg(*held, 0.0), 3),
            "fitted": round(_tilt_rmse_deg(*held, c), 3),
        },
    }


def tune(
    fit_logs: list[FlightLog],
    heldout_logs: list[FlightLog],
    cfg: TuningConfig | None = None,
    base_config: DirectDynamicsConfig | None = None,
    source: str = "",
) -> TuningResult:
    """Fit the direct model on ``fit_logs`` and report errors on ``heldout_logs``.

    Runs two searches (first order; slow pole) with :func:`cem_search`, then evaluates the
    untuned base config, both fits and the written config (delay rounded to
    ``cfg.control_dt_s``) on both parts.
    """
    cfg = cfg or TuningConfig()
    cfg.validate()
    base = (base_config or DirectDynamicsConfig()).resolved()
    base.validate()
    untuned = FitParams.from_config(base, cfg.control_dt_s)
    history_s = max(cfg.max_delay_s, untuned.delay_s)
    fit_batch = make_windows(fit_logs, cfg.window_s, cfg.burn_in_s, history_s, cfg.device)
    held_batch = make_windows(heldout_logs, cfg.window_s, cfg.burn_in_s, history_s, cfg.device)
    dt = fit_batch.dt_s
    first = cem_search(fit_batch, cfg, slow_pole=False)
    slow = cem_search(fit_batch, replace(cfg, seed=cfg.seed + 1), slow_pole=True)
    written_delay = int(round(round(slow.best.delay_s / cfg.control_dt_s) * cfg.control_dt_s / dt))
    written_delay = min(written_delay, max(slow.per_delay))
    written = replace(slow.per_delay[written_delay])
    config = written.to_config(base, cfg.control_dt_s)
    written = FitParams.from_config(config, cfg.control_dt_s)  # the rounded values, as written
    # The drag in the tilt (attitude only): fitted from the attitude where the flight has one.
    tilt = fit_tilt_drag(fit_logs, heldout_logs)
    if cfg.tilt_drag_1_s is not None:
        c_tilt = cfg.tilt_drag_1_s
        if tilt is not None:
            tilt["fixed_by_config"] = c_tilt
    else:
        c_tilt = tilt["tilt_drag_1_s"] if tilt is not None else base.tilt_drag_1_s
    config = replace(config, tilt_drag_1_s=float(c_tilt))

    variants = {
        "untuned": untuned,
        "first_order": first.best,
        "slow_pole": slow.best,
        "written": written,
    }
    cands = Candidates.from_params(list(variants.values()), dt, cfg.device)
    sq_f, n_f, _ = replay(fit_batch, cands)
    sq_h, n_h, traj = replay(held_batch, cands, return_trajectory=True)
    rmse_fit = dict(zip(variants, rmse_table(sq_f, n_f), strict=True))
    rmse_held = dict(zip(variants, rmse_table(sq_h, n_h), strict=True))
    traces = _traces(held_batch, traj, list(variants))
    info = {
        "method": (
            "open-loop batched replay through DirectDynamics (one candidate = one drone, one "
            "window = one world), CEM per delay with per-axis-group elites and covariance"
        ),
        "grid_dt_s": dt,
        "control_dt_s": cfg.control_dt_s,
        "window_s": cfg.window_s,
        "burn_in_s": cfg.burn_in_s,
        "fit_windows": fit_batch.num_windows,
        "fit_scored_s": round(fit_batch.scored_samples * dt, 2),
        "heldout_windows": held_batch.num_windows,
        "heldout_scored_s": round(held_batch.scored_samples * dt, 2),
        "candidates_per_iteration": len(first.per_delay) * cfg.population,
        "iterations": cfg.iterations,
        "search_seconds": {
            "first_order": round(first.seconds, 2),
            "slow_pole": round(slow.seconds, 2),
        },
        "candidate_rollouts": first.candidate_evaluations + slow.candidate_evaluations,
        "tilt": tilt
        or "not fitted: the flight has no attitude (odometry quaternion); tilt_drag_1_s kept",
        "fit_mse_per_delay_s": {
            f"{d * dt:.2f}": [round(v, 5) for v in m] for d, m in slow.per_delay_mse.items()
        },
    }
    return TuningResult(
        source=source,
        untuned=untuned,
        first_order=first.best,
        slow_pole=slow.best,
        written=written,
        config=config,
        rmse_fit=rmse_fit,
        rmse_heldout=rmse_held,
        info=info,
        traces=traces,
    )


def _traces(batch: ReplayBatch, traj: Tensor | None, names: list[str]) -> dict[str, np.ndarray]:
    """Scored held-out samples of the first log, windows in time order, NaN-separated."""
    if traj is None:
        return {}
    score = batch.score[..., 0].cpu().numpy()
    meas = torch.cat((batch.vel, batch.yaw_rate.unsqueeze(-1)), -1).cpu().numpy()
    pred = traj.cpu().numpy()  # (W, P, T, 4)
    first_log = batch.log_index == batch.log_index.min()
    order = [i for i in np.argsort(batch.time_s[:, 0]) if first_log[i]]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("time_s", "measured", *names)}
    for i in order:
        m = score[i]
        parts["time_s"].append(np.append(batch.time_s[i][m], np.nan))
        parts["measured"].append(np.vstack((meas[i][m], np.full((1, 4), np.nan))))
        for j, n in enumerate(names):
            parts[n].append(np.vstack((pred[i, j][m], np.full((1, 4), np.nan))))
    return {k: np.concatenate(v) for k, v in parts.items()}


def tune_flight(
    log: FlightLog,
    cfg: TuningConfig | None = None,
    base_config: DirectDynamicsConfig | None = None,
) -> TuningResult:
    """Fit on the first ``cfg.fit_fraction`` of a flight's valid time; hold out the rest."""
    cfg = cfg or TuningConfig()
    cfg.validate()
    fit_log, held_log = log.split(cfg.fit_fraction, cfg.holdout)  # type: ignore[arg-type]
    result = tune([fit_log], [held_log], cfg, base_config, source=log.source)
    result.info["flight"] = log.summary()
    result.info["split"] = {
        "fit_fraction": cfg.fit_fraction,
        "holdout": cfg.holdout,
        "fit_part_s": fit_log.summary()["segments_s"],
        "heldout_part_s": held_log.summary()["segments_s"],
    }
    return result


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


# ---------------------------------------------------------------------------------- outputs
def config_header(result: TuningResult) -> list[str]:
    """Comment lines for the top of ``dynamics_config.yaml``: the source and the fit report."""
    info = result.info
    lines = [
        "Direct-dynamics parameters fitted by `isr tune-dynamics` (isr_px4_eval.tuning.fit).",
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


__all__ = [
    "AXES",
    "Candidates",
    "EmbeddedConfig",
    "FitParams",
    "ReplayBatch",
    "SearchResult",
    "TuningConfig",
    "TuningResult",
    "cem_search",
    "config_header",
    "fit_from_embedded",
    "fly_embedded",
    "make_windows",
    "plot_fit",
    "random_commands",
    "replay",
    "rmse_table",
    "tune",
    "tune_flight",
    "write_dynamics_config",
]
