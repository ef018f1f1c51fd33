"""Parity of the fast model with the full-fidelity backend: same policy, same worlds, same spawns.

:func:`run_parity_check` evaluates one policy on a *reference* backend (default ``direct``) and a
*candidate* backend (default ``embedded``, the "eval full-fidelity" preset) with
:func:`~isr_px4_eval.evaluation.run.evaluate_policy`, on the same world seeds and spawn seed, and
reports:

- closed loop: the return ratio (:func:`relative_return`: ``candidate / reference`` when the
  reference's mean return is positive; in general ``1 + (c - r) / |r|``, which equals the ratio for
  ``r > 0`` and still grows with the candidate's return when ``r <= 0``), and the delta
  (candidate - reference) of every mean metric, the success rate and the crash rate;
- open loop (:func:`replay_open_loop`): the reference run's *applied* action sequences (after the
  safety filter, as recorded) are replayed, without the policy, through both vehicle models (the
  reference's and the candidate's configs, the same seed) from each episode's recorded initial
  state, over the first ``replay_seconds``; position and velocity RMSE per axis (x east, y north,
  z up) and in total (the RMS of the 3-D error vector's norm);
- the candidate's own randomness (wind gusts, sensor noise): the candidate model replays the same
  actions a second time with another noise seed; with ``r`` the reference's trajectory and
  ``c1, c2`` the candidate's, ``E|r - c1|^2 = |r - E c|^2 + Var c`` and ``E|c2 - c1|^2 = 2 Var c``,
  so the **model error** ``sqrt(max(RMSE(r, c1)^2 - RMSE(c1, c2)^2 / 2, 0))`` is what the direct
  model could have predicted; the noise floor ``RMSE(c1, c2) / sqrt(2)`` is what no deterministic
  model can (the reference is assumed deterministic; its own noise would count as model error).
  Both the raw RMSE and the split are reported; the open-loop checks apply to the model error
  (a deterministic candidate has a zero floor, so then they are the raw RMSE);
- closed-loop trajectory statistics (information, not checked): RMSE between the two runs'
  positions and velocities over the steps both episodes lasted (the trajectories diverge once the
  policy reacts differently, so this measures the closed-loop spread).

Checks (tolerances from ``config/parity.yaml``, :class:`ParityTolerances`): ``return_ratio >=
min_return_ratio``, ``success rate drop <= max_success_rate_drop``, ``targets found drop <=
max_targets_found_drop``, ``open-loop velocity model error (total) <=
max_velocity_rmse_m_s``, ``open-loop position model error (total) <= max_position_rmse_m``.
``passed`` is true when every check passes; ``isr parity`` exits with 0 then, 1 otherwise (2 for
user errors).

With ``record_dir``: ``reference_<backend>.npz`` and ``candidate_<backend>.npz`` (the recordings of
:mod:`isr_px4_eval.evaluation.run`, same keys) and ``replay.npz`` (open loop: ``length (E,)``,
``reference_pos_enu_m``, ``candidate_pos_enu_m``, ``reference_vel_enu_m_s``,
``candidate_vel_enu_m_s``, ``candidate_repeat_pos_enu_m``, ``candidate_repeat_vel_enu_m_s``
``(E, H, 3)``, ``action (E, H, 4)``, ``sim_time_s (H,)``, the state
after each replayed step) for a side-by-side video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isr_direct_dynamics.config import ConfigError, check, load_yaml
from isr_px4_eval.evaluation.run import CONFIG_DIR, EvalSettings, evaluate_policy, save_recording
from isr_training.export import LoadedPolicy, load_policy_file

AXES = ("x", "y", "z")


@dataclass
class ParityTolerances:
    """Pass/fail thresholds of :func:`run_parity_check` (``config/parity.yaml``)."""

    min_return_ratio: float = 0.9
    """Closed loop: relative return of the candidate (see :func:`relative_return`) at least."""
    max_success_rate_drop: float = 0.2
    """Closed loop: reference success rate minus candidate success rate at most."""
    max_targets_found_drop: float = 0.15
    """Closed loop: drop of the mean fraction of targets found at most."""
    replay_seconds: float = 20.0
    """Open loop: replay horizon from each episode's start, s."""
    max_velocity_rmse_m_s: float = 1.5
    """Open loop: total velocity RMSE at most, m/s."""
    max_position_rmse_m: float = 6.0
    """Open loop: total position RMSE at most, m."""

    def validate(self) -> None:
        """Check ranges; raises ConfigError naming the field."""
        for name in (
            "max_success_rate_drop",
            "max_targets_found_drop",
            "max_velocity_rmse_m_s",
            "max_position_rmse_m",
        ):
            v = getattr(self, name)
            check(math.isfinite(v) and v >= 0, name, f"must be >= 0, got {v}")
        v = self.replay_seconds
        check(math.isfinite(v) and v > 0, "replay_seconds", f"must be > 0, got {v}")
        check(math.isfinite(self.min_return_ratio), "min_return_ratio", "must be finite")


def load_tolerances(path: str | Path | None = None) -> ParityTolerances:
    """Tolerances from ``path`` (default: the package's ``config/parity.yaml``)."""
    return load_yaml(ParityTolerances, path or CONFIG_DIR / "parity.yaml")


def relative_return(reference: float, candidate: float) -> float:
    """Relative return ``1 + (candidate - reference) / |reference|``.

    Equals ``candidate / reference`` for a positive reference; 1 when both are 0, +-inf when only
    the reference is 0.
    """
    if reference == 0:
        if candidate == 0:
            return 1.0
        return math.inf if candidate > 0 else -math.inf
    return 1.0 + (candidate - reference) / abs(reference)


def trajectory_rmse(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """RMSE of ``a - b`` (``(E, T, 3)``) over the ``valid (E, T)`` samples: per axis and total.

    ``total`` is the RMS of the 3-D error vector's norm (``sqrt(x^2 + y^2 + z^2)`` of the per-axis
    RMSEs); 0 when there is no valid sample.
    """
    err = (np.asarray(a, np.float64) - np.asarray(b, np.float64))[valid]  # (S, 3)
    if err.size == 0:
        return {**{k: 0.0 for k in AXES}, "total": 0.0, "samples": 0}
    per_axis = np.sqrt((err**2).mean(0))
    out = {k: float(v) for k, v in zip(AXES, per_axis, strict=True)}
    out["total"] = float(np.sqrt((err**2).sum(1).mean()))
    out["samples"] = int(err.shape[0])
    return out


def replay_open_loop(
    arrays: dict[str, np.ndarray],
    reference_cfg: Any,
    candidate_cfg: Any,
    seconds: float,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """Replay the recorded applied actions through the reference and candidate vehicle models.

    ``arrays``: a recording (:mod:`isr_px4_eval.evaluation.run`); ``*_cfg``: the runs'
    :class:`~isr_training.env.EnvConfig` (vehicle and dynamics are used). Every episode is one
    drone of a ``(E, 1)`` batch, reset to its recorded first state (position, yaw, velocity).
    Returns the replay arrays (see the module docstring) plus ``valid (E, H)``.
    """
    from isr_direct_dynamics import InitialState, make_vehicle_model

    dt = float(arrays["control_dt_s"])
    lengths = np.asarray(arrays["length"], np.int64)
    horizon = int(min(lengths.max(), max(1, round(seconds / dt))))
    e = len(lengths)
    actions = torch.as_tensor(arrays["applied_action"][:, :horizon], dtype=torch.float32)
    init = InitialState(
        pos_enu_m=torch.as_tensor(arrays["pos_enu_m"][:, :1], dtype=torch.float32),
        yaw_rad=torch.as_tensor(arrays["yaw_rad"][:, :1], dtype=torch.float32),
        vel_enu_m_s=torch.as_tensor(arrays["vel_enu_m_s"][:, :1], dtype=torch.float32),
    )
    out: dict[str, np.ndarray] = {}
    runs = (
        ("reference", reference_cfg, seed + 1),
        ("candidate", candidate_cfg, seed + 1),
        ("candidate_repeat", candidate_cfg, seed + 1_000_003),  # another noise realization
    )
    for name, cfg, model_seed in runs:
        model = make_vehicle_model(
            cfg.vehicle, e, 1, dt, device, seed=model_seed, config=cfg.dynamics or None
        )
        model.reset(initial=init)
        pos, vel = [], []
        for t in range(horizon):
            st = model.step(actions[:, t : t + 1].to(model.device))
            pos.append(st.pos_enu_m[:, 0].detach().cpu().clone())
            vel.append(st.vel_enu_m_s[:, 0].detach().cpu().clone())
        out[f"{name}_pos_enu_m"] = torch.stack(pos, 1).numpy()
        out[f"{name}_vel_enu_m_s"] = torch.stack(vel, 1).numpy()
    out["action"] = actions.numpy()
    out["sim_time_s"] = (np.arange(1, horizon + 1) * dt).astype(np.float32)
    out["length"] = np.minimum(lengths, horizon)
    out["valid"] = np.arange(horizon)[None] < out["length"][:, None]
    return out


def split_noise(raw: dict[str, float], floor2: dict[str, float]) -> dict[str, dict[str, float]]:
    """Split a reference-vs-candidate RMSE into model error and the candidate's noise floor.

    ``raw``: RMSE(reference, candidate); ``floor2``: RMSE(candidate, candidate repeat). Returns
    ``{"model": ..., "noise": ...}`` per axis and total (see the module docstring).
    """
    model, noise = {}, {}
    for k in (*AXES, "total"):
        n2 = floor2[k] ** 2 / 2.0
        model[k] = float(math.sqrt(max(raw[k] ** 2 - n2, 0.0)))
        noise[k] = float(math.sqrt(n2))
    return {"model": model, "noise": noise}


def _check(name: str, value: float | None, op: str, limit: float) -> dict[str, Any]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        ok = False
    else:
        ok = value >= limit if op == ">=" else value <= limit
    return {"name": name, "value": value, "op": op, "limit": limit, "passed": bool(ok)}


def compare_results(
    ref: dict[str, Any], cand: dict[str, Any], replay: dict[str, np.ndarray], tol: ParityTolerances
) -> dict[str, Any]:
    """Ratios, deltas, RMSEs and checks of two evaluation results and their open-loop replay."""
    mr, mc = ref["metrics"], cand["metrics"]
    ratio = relative_return(float(mr["return_mean"]), float(mc["return_mean"]))
    deltas = {}
    for k, v in mr.items():
        if (k.endswith("_mean") or k.endswith("_rate")) and isinstance(v, (int, float)):
            w = mc.get(k)
            if isinstance(w, (int, float)):
                deltas[k] = float(w) - float(v)
    valid = replay["valid"]
    open_loop: dict[str, Any] = {
        "horizon_s": float(replay["sim_time_s"][-1]) if len(replay["sim_time_s"]) else 0.0
    }
    for q, key in (("position_rmse_m", "pos_enu_m"), ("velocity_rmse_m_s", "vel_enu_m_s")):
        raw = trajectory_rmse(replay[f"reference_{key}"], replay[f"candidate_{key}"], valid)
        open_loop[q] = raw
        if f"candidate_repeat_{key}" in replay:
            rep_ = trajectory_rmse(
                replay[f"candidate_{key}"], replay[f"candidate_repeat_{key}"], valid
            )
            open_loop[q.replace("_rmse", "_split")] = split_noise(raw, rep_)
        else:
            open_loop[q.replace("_rmse", "_split")] = {"model": raw, "noise": None}
    a, b = ref.get("_arrays"), cand.get("_arrays")
    closed_loop = None
    if a is not None and b is not None and len(a["length"]) == len(b["length"]):
        t = min(a["pos_enu_m"].shape[1], b["pos_enu_m"].shape[1])
        both = np.minimum(a["length"], b["length"])
        ok = np.arange(t)[None] < both[:, None]
        closed_loop = {
            "position_rmse_m": trajectory_rmse(a["pos_enu_m"][:, :t], b["pos_enu_m"][:, :t], ok),
            "velocity_rmse_m_s": trajectory_rmse(
                a["vel_enu_m_s"][:, :t], b["vel_enu_m_s"][:, :t], ok
            ),
        }
    checks = [
        _check("return_ratio", ratio, ">=", tol.min_return_ratio),
        _check(
            "success_rate_drop",
            float(mr["success_rate"]) - float(mc["success_rate"]),
            "<=",
            tol.max_success_rate_drop,
        ),
        _check(
            "targets_found_drop",
            float(mr["targets_found_mean"]) - float(mc["targets_found_mean"]),
            "<=",
            tol.max_targets_found_drop,
        ),
        _check(
            "open_loop_velocity_model_error_m_s",
            open_loop["velocity_split_m_s"]["model"]["total"],
            "<=",
            tol.max_velocity_rmse_m_s,
        ),
        _check(
            "open_loop_position_model_error_m",
            open_loop["position_split_m"]["model"]["total"],
            "<=",
            tol.max_position_rmse_m,
        ),
    ]
    return {
        "return_ratio": ratio,
        "return_ratio_definition": "1 + (candidate - reference) / |reference| mean return "
        "(= candidate / reference for a positive reference)",
        "metric_deltas": deltas,
        "open_loop": open_loop,
        "closed_loop": closed_loop,
        "checks": checks,
        "passed": all(c["passed"] for c in checks),
    }


def run_parity_check(
    policy: LoadedPolicy | str | Path,
    seeds: list[int],
    settings: EvalSettings,
    tolerances: ParityTolerances | None = None,
    reference: str = "direct",
    candidate: str = "embedded",
    perception: str = "gt",
    detector: str | None = None,
    dynamics_config: str | Path | None = None,
    record_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate on both backends, replay open loop, compare (see the module docstring).

    ``dynamics_config`` (a tuned DirectDynamicsConfig) applies to whichever side is ``direct``.
    Returns the JSON-ready report with ``passed``.
    """
    tol = tolerances or load_tolerances()
    tol.validate()
    if not isinstance(policy, LoadedPolicy):
        policy = load_policy_file(policy)
    runs = {}
    for role, backend in (("reference", reference), ("candidate", candidate)):
        runs[role] = evaluate_policy(
            policy,
            backend,
            seeds,
            settings,
            perception=perception,
            detector=detector,
            dynamics_config=dynamics_config,
            device=device,
            progress=progress,
            keep_arrays=True,
        )
    ref, cand = runs["reference"], runs["candidate"]
    replay = replay_open_loop(
        ref["_arrays"],
        ref["_env_config"],
        cand["_env_config"],
        tol.replay_seconds,
        seed=settings.seed,
        device=device,
    )
    report = {
        "reference": reference,
        "candidate": candidate,
        "policy": ref["policy"],
        "world_seeds": list(seeds),
        "tolerances": {k: getattr(tol, k) for k in tol.__dataclass_fields__},
        **compare_results(ref, cand, replay, tol),
        "reference_result": ref,
        "candidate_result": cand,
    }
    if record_dir is not None:
        out = Path(record_dir)
        files = []
        for role, res in runs.items():
            if res.get("_arrays") is not None:
                path = out / f"{role}_{res['backend']}.npz"
                files.append(str(save_recording(res, res["_arrays"], path)))
        np.savez_compressed(out / "replay.npz", **replay)
        files.append(str(out / "replay.npz"))
        report["recordings"] = files
    return report


def format_parity(report: dict[str, Any]) -> str:
    """Short human summary of a parity report."""
    ref, cand = report["reference"], report["candidate"]
    mr = report["reference_result"]["metrics"]
    mc = report["candidate_result"]["metrics"]
    lines = [
        f"ISR parity  reference={ref}  candidate={cand}  worlds={len(report['world_seeds'])}",
        f"  {'metric':<26}{ref:>12}{cand:>12}",
    ]
    for k in ("return_mean", "success_rate", "targets_found_mean", "coverage_mean", "crash_rate"):
        a, b = mr.get(k), mc.get(k)
        fa = "n/a" if a is None else f"{a:.3f}"
        fb = "n/a" if b is None else f"{b:.3f}"
        lines.append(f"  {k:<26}{fa:>12}{fb:>12}")
    ol = report["open_loop"]
    p, v = ol["position_rmse_m"], ol["velocity_rmse_m_s"]
    lines.append(
        f"  open loop ({ol['horizon_s']:.1f} s): position RMSE x {p['x']:.3f} y {p['y']:.3f} "
        f"z {p['z']:.3f} total {p['total']:.3f} m; velocity RMSE x {v['x']:.3f} y {v['y']:.3f} "
        f"z {v['z']:.3f} total {v['total']:.3f} m/s"
    )
    ps, vs = ol.get("position_split_m"), ol.get("velocity_split_m_s")
    if ps and vs and ps.get("noise") is not None:
        lines.append(
            f"  of which the candidate's own noise (gusts, sensors; a second replay): position "
            f"{ps['noise']['total']:.3f} m, velocity {vs['noise']['total']:.3f} m/s; model error: "
            f"position {ps['model']['total']:.3f} m, velocity {vs['model']['total']:.3f} m/s"
        )
    for c in report["checks"]:
        val = c["value"]
        fv = "n/a" if val is None else f"{val:.4g}"
        lines.append(
            f"  [{'PASS' if c['passed'] else 'FAIL'}] {c['name']} = {fv} {c['op']} {c['limit']:g}"
        )
    lines.append(f"  overall: {'PASS' if report['passed'] else 'FAIL'}")
    return "\n".join(lines)


__all__ = [
    "ConfigError",
    "ParityTolerances",
    "compare_results",
    "format_parity",
    "load_tolerances",
    "relative_return",
    "replay_open_loop",
    "run_parity_check",
    "split_noise",
    "trajectory_rmse",
]
