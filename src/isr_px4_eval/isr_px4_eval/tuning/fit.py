"""Tuning of flights: the search per delay, the tilt drag, held-out scores (:func:`tune_flight`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from isr_direct_dynamics import DirectDynamicsConfig
from isr_direct_dynamics.config import to_dict
from isr_direct_dynamics.direct import GRAVITY_M_S2
from isr_px4_eval.px4.logs import FlightLog
from isr_px4_eval.tuning.replay import (
    Candidates,
    FitParams,
    ReplayBatch,
    TuningConfig,
    make_windows,
    replay,
    rmse_table,
)
from isr_px4_eval.tuning.search import cem_search


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
    clip = (base.max_climb_rate_m_s, base.max_descent_rate_m_s)
    fit_batch = make_windows(fit_logs, cfg.window_s, cfg.burn_in_s, history_s, cfg.device, clip)
    held_batch = make_windows(
        heldout_logs, cfg.window_s, cfg.burn_in_s, history_s, cfg.device, clip
    )
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


__all__ = ["TuningResult", "tune", "tune_flight"]
