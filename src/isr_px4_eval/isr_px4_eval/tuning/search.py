"""Cross-entropy search of the direct model's parameters, per delay and per axis group."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from isr_px4_eval.tuning.replay import Candidates, FitParams, ReplayBatch, TuningConfig, replay

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


__all__ = ["SearchResult", "cem_search"]
