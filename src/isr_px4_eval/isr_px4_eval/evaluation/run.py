"""Evaluation of an exported ISR policy on the embedded full-fidelity backend or the fast model.

:func:`evaluate_policy` flies a policy (TorchScript, ONNX, ``policy.pt`` state dict or an
experiment directory, see :func:`load_policy_file`) on a list of world seeds with one of two
backends, chosen at construction:

- ``embedded``: :class:`~isr_training.env.ISREnv` with ``vehicle="quadrotor"``: the 6-DoF
  quadrotor flown by the batched PX4-like cascade, with the "eval full-fidelity" preset of
  ``config/eval.yaml`` (250 Hz physics, controller sensor noise, mean wind with gusts, one
  control step of offboard command latency);
- ``direct``: the fast direct-dynamics model: a tuned ``dynamics_config.yaml`` written by
  ``isr tune-dynamics`` (``--dynamics-config``), else ``eval.yaml``'s ``direct:`` keys, else the
  direct model the policy trained on, else the packaged training default.

Both use the same task code (observation, reward, safety filter, perception); the environment
is built from the policy's experiment ``config.yaml`` when there is one (task, world spec,
camera), otherwise from the defaults, and the policy's ``task_version`` and ``obs_dim`` must match.
Every drone flies ``episodes`` whole episodes (no staggering) from seeded spawns: the same seed
gives the same spawns on every backend.

Metrics (:func:`aggregate_metrics`, JSON ``metrics``): mean and std of the return, success rate,
fraction of targets found, coverage, collisions, geofence breaches (steps outside the fence),
safety-filter interventions, episode length (steps and seconds, mean and std), time to first
detection (mean over episodes that found something), crash rate, per-term returns, real-time
factor. Success of an episode (:data:`SUCCESS_DEFINITION`): at the episode's end at least
``success_min_targets_found`` (default 70 %) of its world's targets were found, with no collision
(crash) and no geofence breach during the episode. Per-episode rows are in ``episodes``.

Real-time factor: simulated seconds per drone (control steps x control period) over the wall
seconds of the rollout loop (policy inference, perception, physics, bookkeeping; recording
included when on); the aggregate figure multiplies by the number of drones flown at once. The
first control step is timed separately (``first_step_s``): it carries one-time initialization
(loading the compiled numba kernels from their cache, TorchScript's profiling run, BLAS start-up;
0.5-1 s) that does not grow with the evaluation's length, so ``per_drone`` / ``aggregate`` are
the steady-state rates of the other steps and ``per_drone_including_first_step`` is the whole
loop's.

Detection precision/recall (``detection`` in the JSON) are reported when the perception backend
counts them against ground-truth visibility (the YOLO backend's ``counters()``); with ground-truth
perception they are 1 by construction and not reported.

Recording (``record_dir``): one ``<backend>.npz`` per run (``numpy.savez_compressed``), plain
arrays padded to the longest episode, ``E`` episodes x ``T`` steps. Row ``t`` of an episode is
the state the policy saw at sim time ``t * dt`` (before its action), the action it took, and the
reward of that step:

=========================  ===============  ================================================
key                        shape / dtype    meaning
=========================  ===============  ================================================
``length``                 (E,) int64       valid steps of each episode (rows beyond: padding)
``world_seed``             (E,) int64       world of the episode
``drone``                  (E,) int64       drone index in its world
``episode``                (E,) int64       episode number of that drone (0, 1, ...)
``sim_time_s``             (E, T) float32   time since the episode start
``pos_enu_m``              (E, T, 3)        position, world ENU
``vel_enu_m_s``            (E, T, 3)        velocity, world ENU
``yaw_rad``                (E, T)           yaw (ENU, from east)
``quat_wxyz``              (E, T, 4)        attitude, body FLU -> world ENU
``action``                 (E, T, 4)        policy action (normalized, before the safety filter)
``applied_action``         (E, T, 4)        action given to the vehicle (after the safety filter)
``reward``                 (E, T)           weighted reward of the step
``r_<term>``               (E, T)           unweighted reward term (``new_target``, ``coverage``...)
``intervention``           (E, T) bool      the safety filter changed the action
``det_boxes_xyxy_px``      (E, T, K, 4)     this drone's box of every target slot (K = max targets)
``det_visible``            (E, T, K) bool   target slot detected by this drone
``targets_found``          (E, T) int64     targets found so far in the episode
``target_pos_enu_m``       (E, T, K, 3)     target positions (moving targets move)
``target_class``           (E, K) int64     class id of every target slot
``target_valid``           (E, K) bool      slot holds a target (worlds are padded)
``control_dt_s``           () float         control period
``image_size``             (2,) int64       camera width, height (pixels of the boxes)
``camera_fov_pitch_deg``   (3,) float       horizontal FOV, vertical FOV, mount pitch down
``coverage_range_m``       () float         ground farther than this does not count as seen
``area_xywh_m``            (4,) float       x_min, y_min, size_x, size_y of the area (ENU)
``meta_json``              () str           backend, policy, settings (JSON)
=========================  ===============  ================================================
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from isr_direct_dynamics.config import ConfigError, check, from_dict, json_dumps, load_yaml, to_dict
from isr_direct_dynamics.io_checks import atomic_write_text
from isr_training.export import LoadedPolicy, check_policy_fits, load_policy_file

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
"""Package data: ``eval.yaml`` (evaluation preset) and ``parity.yaml`` (parity tolerances)."""

BACKENDS = ("embedded", "direct")
"""Evaluation backends: ``embedded`` (full-fidelity quadrotor) and ``direct`` (fast model)."""

SUCCESS_DEFINITION = (
    "an episode succeeds when, at its end, at least {threshold:.0%} of its world's targets were "
    "found and the drone had no collision (crash) and no geofence breach during the episode"
)
"""Success of an episode (formatted with the threshold)."""


# ----------------------------------------------------------------------------------- settings


@dataclass
class EvalSettings:
    """Evaluation settings (``config/eval.yaml``); see the YAML for the preset values."""

    success_min_targets_found: float = 0.7
    """Fraction of the world's targets an episode must find to succeed (with no crash/breach)."""
    episodes: int = 1
    """Episodes per drone."""
    drones_per_world: int = 1
    """Drones per world (1 to 32)."""
    episode_length_s: float | None = None
    """Episode length override, s (None: the policy's task)."""
    seed: int = 0
    """Seed of spawns, noise and gusts (the same on every backend)."""
    embedded: dict[str, Any] = field(default_factory=dict)
    """QuadrotorConfig keys of the embedded backend (the "eval full-fidelity" preset)."""
    direct: dict[str, Any] = field(default_factory=dict)
    """DirectDynamicsConfig keys of the direct backend."""
    max_nonfinite_action_fraction: float = 0.01
    """An evaluation fails (:class:`NonFiniteActionsError`) when more than this share of the
    policy's actions had a NaN/inf entry (each one is replaced by the zero command and counted)."""

    def validate(self) -> None:
        """Check ranges and both vehicle configs; raises ConfigError naming the field."""
        v = self.success_min_targets_found
        check(0.0 <= v <= 1.0, "success_min_targets_found", f"must be in [0, 1], got {v}")
        check(self.episodes >= 1, "episodes", f"must be >= 1, got {self.episodes}")
        d = self.drones_per_world
        check(1 <= d <= 32, "drones_per_world", f"must be in 1..32, got {d}")
        f = self.max_nonfinite_action_fraction
        check(0.0 <= f <= 1.0, "max_nonfinite_action_fraction", f"must be in [0, 1], got {f}")
        if self.episode_length_s is not None:
            e = self.episode_length_s
            check(math.isfinite(e) and e > 0, "episode_length_s", f"must be > 0, got {e}")
        from isr_direct_dynamics import DirectDynamicsConfig
        from isr_direct_dynamics.quadrotor import QuadrotorConfig

        for name, cls in (("embedded", QuadrotorConfig), ("direct", DirectDynamicsConfig)):
            try:
                from_dict(cls, getattr(self, name))
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}", name, str(exc)) from None


def load_settings(path: str | Path | None = None) -> EvalSettings:
    """``EvalSettings`` from ``path`` (default: the package's ``config/eval.yaml``)."""
    return load_yaml(EvalSettings, path or CONFIG_DIR / "eval.yaml")


MAX_EVAL_WORLDS = 10_000
"""Most world seeds one evaluation takes (each world is an episode of one drone)."""


def parse_seeds(text: str, max_count: int = MAX_EVAL_WORLDS) -> list[int]:
    """World seeds from ``"100000,100001"``, ``"100000-100019"`` or a mix (``"1,5-7"``).

    At most ``max_count`` seeds, each < 2**31 (checked before any list is built).
    """
    import re

    seeds: list[int] = []
    if len(str(text)) > 100_000:
        raise ConfigError(f"world seeds '{str(text)[:40]}...' is longer than 100,000 characters")
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ConfigError(f"world seed range '{part}' is empty (end < start)")
            if hi >= 2**31:
                raise ConfigError(f"world seed {hi} in '{part}' is too large (at most 2**31 - 1)")
            if len(seeds) + hi - lo + 1 > max_count:
                raise ConfigError(
                    f"world seeds '{part}' are {hi - lo + 1:,} worlds; at most {max_count:,} "
                    "per evaluation"
                )
            seeds.extend(range(lo, hi + 1))
        elif re.fullmatch(r"\d+", part):
            if int(part) >= 2**31:
                raise ConfigError(f"world seed {part[:20]} is too large (at most 2**31 - 1)")
            if len(seeds) >= max_count:
                raise ConfigError(f"world seeds '{text:.40}' are more than {max_count:,} worlds")
            seeds.append(int(part))
        else:
            raise ConfigError(
                f"bad world seeds '{text}': expected integers like 100000,100001 or 100000-100019"
            )
    if not seeds:
        raise ConfigError(f"no world seeds in '{text}'")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"world seeds '{text}' repeat a seed")
    return seeds


def load_direct_dynamics_file(path: str | Path) -> dict[str, Any]:
    """Keys of a ``dynamics_config.yaml`` (``isr tune-dynamics`` output), validated.

    Accepts a plain DirectDynamicsConfig mapping (the tuner's format) or a file with a ``direct:``
    section (the training pipeline's ``dynamics_config.yaml``).
    """
    from isr_direct_dynamics import DirectDynamicsConfig
    from isr_direct_dynamics.config import read_yaml

    p = Path(path)
    data = read_yaml(p, "dynamics config")
    if "direct" in data and isinstance(data["direct"], dict):
        data = data["direct"]
    try:
        from_dict(DirectDynamicsConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"dynamics config {p}: {exc}") from None
    return dict(data)


# ----------------------------------------------------------------------------------- metrics


EPISODE_KEYS = (
    "return",
    "targets_found",
    "coverage",
    "collisions",
    "geofence_breaches",
    "safety_interventions",
    "time_to_first_detection_s",
)
"""Per-episode values copied from the environment's ``info["episode"]``."""


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return None, None
    a = np.asarray(v, dtype=np.float64)
    return float(a.mean()), float(a.std())


def episode_success(row: dict[str, Any], threshold: float) -> bool:
    """The success definition (:data:`SUCCESS_DEFINITION`) applied to one episode row."""
    return (
        float(row["targets_found"]) >= threshold - 1e-9
        and float(row["collisions"]) == 0
        and float(row["geofence_breaches"]) == 0
    )


def aggregate_metrics(rows: list[dict[str, Any]], success_min_targets_found: float = 0.7) -> dict:
    """Summary metrics of per-episode rows (see the module docstring).

    Each row needs ``return``, ``targets_found`` (fraction of the world's targets), ``coverage``,
    ``collisions``, ``geofence_breaches``, ``safety_interventions``, ``length_steps``,
    ``length_s`` and ``time_to_first_detection_s`` (None/NaN when nothing was found); optional
    ``targets_found_count`` and ``r/<term>`` entries. ``success`` is (re)computed here.
    """
    if not rows:
        raise ValueError("no finished episode to aggregate")
    thr = success_min_targets_found
    for r in rows:
        r["success"] = episode_success(r, thr)
        r["crashed"] = float(r["collisions"]) > 0
    out: dict[str, Any] = {"episodes": len(rows)}
    keys = [
        "return",
        "targets_found",
        "targets_found_count",
        "coverage",
        "collisions",
        "geofence_breaches",
        "safety_interventions",
        "length_steps",
        "length_s",
    ]
    keys += sorted(k for k in rows[0] if k.startswith("r/"))
    for k in keys:
        if k not in rows[0]:
            continue
        m, s = _mean_std([float(r[k]) for r in rows])
        out[f"{k}_mean"], out[f"{k}_std"] = m, s
    out["success_rate"] = float(np.mean([r["success"] for r in rows]))
    out["crash_rate"] = float(np.mean([r["crashed"] for r in rows]))
    out["breach_rate"] = float(np.mean([float(r["geofence_breaches"]) > 0 for r in rows]))
    ttfd = [r["time_to_first_detection_s"] for r in rows]
    found_any = [t for t in ttfd if t is not None and math.isfinite(float(t))]
    out["time_to_first_detection_s_mean"], out["time_to_first_detection_s_std"] = _mean_std(
        [float(t) for t in found_any]
    )
    out["episodes_with_a_find"] = len(found_any)
    if all("nonfinite_actions" in r for r in rows):
        bad = sum(int(r["nonfinite_actions"]) for r in rows)
        steps = sum(int(r["length_steps"]) for r in rows)
        out["nonfinite_actions"] = bad
        out["nonfinite_action_fraction"] = bad / max(steps, 1)
    out["success_definition"] = SUCCESS_DEFINITION.format(threshold=thr)
    out["success_min_targets_found"] = thr
    return out


def format_table(result: dict[str, Any]) -> str:
    """A short human-readable summary of an evaluation result."""
    m = result["metrics"]

    def f(key: str, fmt: str = "{:.3f}") -> str:
        v = m.get(key)
        return "n/a" if v is None else fmt.format(v)

    rtf = result["real_time_factor"]
    lines = [
        f"ISR evaluation  backend={result['backend']}  perception={result['perception']}  "
        f"policy={result['policy']['path']}",
        f"  worlds {len(result['world_seeds'])} x drones {result['settings']['drones_per_world']}"
        f"  episodes {m['episodes']}",
        f"  {'metric':<28}{'mean':>10}{'std':>10}",
    ]
    for key, label in (
        ("return", "return"),
        ("targets_found", "targets found (fraction)"),
        ("targets_found_count", "targets found (count)"),
        ("coverage", "coverage"),
        ("collisions", "collisions"),
        ("geofence_breaches", "geofence breach steps"),
        ("safety_interventions", "safety interventions"),
        ("length_s", "episode length (s)"),
        ("time_to_first_detection_s", "time to first detection (s)"),
    ):
        lines.append(f"  {label:<28}{f(key + '_mean'):>10}{f(key + '_std'):>10}")
    lines.append(f"  {'success rate':<28}{f('success_rate'):>10}")
    lines.append(f"  {'crash rate':<28}{f('crash_rate'):>10}")
    if m.get("nonfinite_actions"):
        lines.append(
            f"  non-finite actions: {m['nonfinite_actions']} ({m['nonfinite_action_fraction']:.2%} "
            "of steps; replaced by the zero command)"
        )
    det = result.get("detection")
    if det:
        lines.append(
            f"  detection precision {det.get('precision', float('nan')):.3f}  "
            f"recall {det.get('recall', float('nan')):.3f}"
        )
    lines.append(
        f"  real-time factor: {rtf['per_drone']:.1f}x per drone, {rtf['aggregate']:.1f}x "
        f"aggregate ({rtf['sim_seconds_per_drone']:.1f} sim s per drone in "
        f"{rtf['wall_seconds']:.2f} wall s, {rtf['drones']} drones; steady state, the first step's "
        f"{rtf.get('first_step_s', 0.0):.2f} s of one-time initialization excluded: "
        f"{rtf.get('per_drone_including_first_step', rtf['per_drone']):.1f}x with it)"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- env


def _base_env_config(policy: LoadedPolicy):
    from isr_training.env import EnvConfig

    if policy.experiment_dir is not None:
        from isr_training.training_config import load_config_file

        return copy.deepcopy(
            load_config_file(policy.experiment_dir / "config.yaml", check_memory=False).env
        )
    return EnvConfig()


def build_env_config(
    policy: LoadedPolicy,
    backend: str,
    seeds: list[int],
    settings: EvalSettings,
    perception: str = "gt",
    detector: str | None = None,
    dynamics: dict[str, Any] | None = None,
):
    """The :class:`~isr_training.env.EnvConfig` of one evaluation backend."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")
    cfg = _base_env_config(policy)
    cfg.num_worlds = len(seeds)
    cfg.world_seeds = list(seeds)
    cfg.drones_per_world = settings.drones_per_world
    cfg.stagger = False
    cfg.seed = settings.seed
    if settings.episode_length_s is not None:
        cfg.task.episode_length_s = float(settings.episode_length_s)
    if backend == "embedded":
        cfg.vehicle = "quadrotor"
        cfg.dynamics = copy.deepcopy(settings.embedded)
    else:
        # Direct backend: a tuned file (--dynamics-config), else eval.yaml's `direct:` keys, else
        # the direct model the policy trained on (its experiment's env.dynamics), else the
        # packaged training default (dynamics_config.yaml, tuned to the embedded model).
        trained = cfg.dynamics if cfg.vehicle == "direct" else None
        cfg.vehicle = "direct"
        if dynamics is not None:
            cfg.dynamics = copy.deepcopy(dynamics)
        elif settings.direct:
            cfg.dynamics = copy.deepcopy(settings.direct)
        elif trained:
            cfg.dynamics = copy.deepcopy(trained)
        else:
            from isr_training.training_config import load_dynamics_config

            cfg.dynamics = to_dict(load_dynamics_config()["direct"])
    if policy.meta.get("image_shape"):
        cfg.camera = True
    if perception not in ("gt", "yolo"):
        raise ConfigError(f"unknown perception '{perception}' (choose gt or yolo)")
    cfg.perception = perception
    if perception == "yolo":
        names = {f.name for f in fields(cfg)}
        if "detector_weights" not in names:
            raise ConfigError(
                "--perception yolo is not available: this workspace's environment has no YOLO "
                "perception backend (EnvConfig.detector_weights)"
            )
        if not detector:
            raise ConfigError("--perception yolo needs --detector WEIGHTS (a trained best.pt)")
        if not Path(detector).is_file():
            raise ConfigError(f"detector weights not found: {detector}")
        cfg.detector_weights = str(detector)
    return cfg


def make_eval_env(cfg, device: str | torch.device = "cpu"):
    """An :class:`~isr_training.env.ISREnv` for ``cfg`` (worlds cached per process)."""
    from isr_sim_bridge.world import cached_worlds, worlds_to_batch
    from isr_training.env import ISREnv

    worlds = cached_worlds(cfg.world, cfg.world_seeds)
    try:
        return ISREnv(cfg, device, world=worlds_to_batch(worlds, device))
    except NotImplementedError as exc:
        raise ConfigError(f"perception '{cfg.perception}' is not available: {exc}") from None


# ----------------------------------------------------------------------------------- rollout


class _Recorder:
    """Per-step arrays of every drone; cut into episodes at the end (see the module docstring)."""

    def __init__(self, env) -> None:
        self.env = env
        self.steps: dict[str, list[Tensor]] = {}
        self.applied: Tensor | None = None
        vehicle_step = env.vehicle.step

        def hooked(action: Tensor):
            self.applied = action.detach().reshape(env.num_envs, 4).clone()
            return vehicle_step(action)

        env.vehicle.step = hooked  # instance attribute: sees the action after the safety filter

    def _add(self, key: str, value: Tensor) -> None:
        self.steps.setdefault(key, []).append(value.detach().cpu().clone())

    def before(self, action: Tensor) -> None:
        env = self.env
        st = env.vehicle.state
        flat = env._flat
        self._add("pos_enu_m", flat(st.pos_enu_m))
        self._add("vel_enu_m_s", flat(st.vel_enu_m_s))
        self._add("yaw_rad", flat(st.yaw_rad))
        self._add("quat_wxyz", flat(st.quat_wxyz))
        self._add("det_boxes_xyxy_px", flat(env.det_boxes))
        self._add("det_visible", flat(env.det_visible))
        self._add("targets_found", flat(env.found.sum(-1)))
        self._add("step_in_episode", flat(env.step_count))
        tp = env.world.target_pos_enu_m  # (W, T, 3)
        d = env.drones_per_world
        self._add("target_pos_enu_m", tp.repeat_interleave(d, 0))
        self._add("action", action.reshape(env.num_envs, 4))

    def after(self, reward: Tensor, info: dict[str, Any]) -> None:
        self._add("reward", reward)
        for k, v in info["reward_terms"].items():
            self._add(f"r_{k}", v.float())
        any_iv = None
        for v in info["interventions"].values():
            any_iv = v if any_iv is None else any_iv | v
        if any_iv is not None:
            self._add("intervention", any_iv)
        if self.applied is not None:
            self._add("applied_action", self.applied)

    def episodes(self, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        env = self.env
        stacked = {k: torch.stack(v) for k, v in self.steps.items()}  # (S, N, ...)
        t_max = max(int(r["length_steps"]) for r in rows)
        out: dict[str, list[np.ndarray]] = {}
        for r in rows:
            n, s0, length = r["_drone_flat"], r["_start_step"], int(r["length_steps"])
            for k, v in stacked.items():
                if k == "step_in_episode":
                    continue
                seg = v[s0 : s0 + length, n]
                pad = torch.zeros((t_max - length, *seg.shape[1:]), dtype=seg.dtype)
                out.setdefault(k, []).append(torch.cat((seg, pad)).numpy())
        arrays = {k: np.stack(v) for k, v in out.items()}
        lengths = np.array([int(r["length_steps"]) for r in rows], dtype=np.int64)
        dt = env.task.control_dt_s
        t = np.arange(t_max, dtype=np.float32) * dt
        arrays["sim_time_s"] = np.where(
            np.arange(t_max)[None] < lengths[:, None], t[None], 0.0
        ).astype(np.float32)
        arrays["length"] = lengths
        arrays["world_seed"] = np.array([r["world_seed"] for r in rows], dtype=np.int64)
        arrays["drone"] = np.array([r["drone"] for r in rows], dtype=np.int64)
        arrays["episode"] = np.array([r["episode"] for r in rows], dtype=np.int64)
        w_idx = np.array([r["_drone_flat"] // env.drones_per_world for r in rows])
        arrays["target_class"] = env.world.target_class.cpu().numpy()[w_idx].astype(np.int64)
        arrays["target_valid"] = env.world.target_valid.cpu().numpy()[w_idx]
        arrays["control_dt_s"] = np.array(dt)
        arrays["image_size"] = np.array(env.perception.image_size, dtype=np.int64)
        per = env.perception
        arrays["camera_fov_pitch_deg"] = np.array(
            [per.hfov_deg, per.vfov_deg, per.pitch_down_deg], dtype=np.float64
        )
        arrays["coverage_range_m"] = np.array(float(env._max_range_m))
        w = env.world
        arrays["area_xywh_m"] = np.array([w.x_min_m, w.y_min_m, w.size_x_m, w.size_y_m])
        return arrays


def run_episodes(
    env,
    act: Callable[[Any], Tensor],
    episodes: int = 1,
    record: bool = False,
    progress: bool = False,
    seed: int = 0,
    live: Any | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, np.ndarray] | None]:
    """Fly ``episodes`` whole episodes per drone; return rows, timing and (optional) recording.

    The environment must be built with ``stagger=False``. ``reset(seed)`` makes the spawns and the
    vehicle noise streams a function of ``seed`` alone. ``live``: an object with
    :class:`~isr_px4_eval.evidence.recording.EnvRecorder`'s ``record_reset()`` and
    ``record_step(action, reward, terminated, truncated, info)`` (e.g. one publishing the live ROS
    topics), called after the reset and after every step.
    """
    if env.cfg.stagger:
        raise ValueError("evaluation needs an environment built with stagger=False")
    recorder = _Recorder(env) if record else None
    n = env.num_envs
    dt = env.task.control_dt_s
    done_count = torch.zeros(n, dtype=torch.long)
    start_step = torch.zeros(n, dtype=torch.long)
    bad_actions = torch.zeros(n, dtype=torch.long)  # steps with a NaN/inf action, this episode
    rows: list[dict[str, Any]] = []
    limit = env.max_episode_steps * episodes + 1
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=limit, unit="step", file=sys.stderr, dynamic_ncols=True, leave=False)
    obs = env.reset(seed=seed)
    if live is not None:
        live.record_reset()
    t0 = time.perf_counter()
    t_first = t0  # end of the first step (one-time initialization, timed separately)
    steps = 0
    for step in range(limit):
        if step == 1:
            t_first = time.perf_counter()
        action = act(obs)
        if recorder is not None:
            recorder.before(action)
        obs, reward, terminated, truncated, info = env.step(action)
        bad_actions += info["nonfinite_action"].long().cpu()
        steps += 1
        if recorder is not None:
            recorder.after(reward, info)
        if live is not None:
            live.record_step(action, reward, terminated, truncated, info)
        done = info["done"].cpu()
        new = done & (done_count < episodes)
        if bool(new.any()):
            ep = {k: v.detach().cpu() for k, v in info["episode"].items()}
            for i in torch.nonzero(new).flatten().tolist():
                w, d = divmod(i, env.drones_per_world)
                length = int(ep["length"][i])
                row: dict[str, Any] = {
                    "world_seed": int(env.world_seeds[w]),
                    "drone": d,
                    "episode": int(done_count[i]),
                    "length_steps": length,
                    "length_s": length * dt,
                    "targets_found_count": round(
                        float(ep["targets_found"][i]) * float(env.num_targets[w])
                    ),
                    "num_targets": int(env.world.target_valid[w].sum()),
                    "nonfinite_actions": int(bad_actions[i]),
                }
                for k in EPISODE_KEYS:
                    v = float(ep[k][i])
                    row[k] = None if not math.isfinite(v) else v
                for k in ep:
                    if k.startswith("r/"):
                        row[k] = float(ep[k][i])
                row["_drone_flat"] = i
                row["_start_step"] = int(start_step[i])
                rows.append(row)
        start_step = torch.where(done, step + 1, start_step)
        bad_actions.masked_fill_(done, 0)
        done_count += done.long()
        if bar is not None:
            bar.update(1)
        if bool((done_count >= episodes).all()):
            break
    t_end = time.perf_counter()
    wall = t_end - t0
    if bar is not None:
        bar.close()
    rows.sort(key=lambda r: (r["world_seed"], r["drone"], r["episode"]))
    sim_per_drone = steps * dt
    first = (t_first - t0) if steps > 1 else wall
    steady_wall, steady_sim = (
        (t_end - t_first, (steps - 1) * dt) if steps > 1 else (wall, sim_per_drone)
    )

    def rate(sim: float, seconds: float) -> float:
        return sim / seconds if seconds > 0 else float("inf")

    timing = {
        "steps": steps,
        "drones": n,
        "sim_seconds_per_drone": sim_per_drone,
        "wall_seconds": wall,
        "first_step_s": first,
        "per_drone": rate(steady_sim, steady_wall),
        "aggregate": rate(steady_sim * n, steady_wall),
        "per_drone_including_first_step": rate(sim_per_drone, wall),
        "includes_recording": record,
    }
    arrays = recorder.episodes(rows) if recorder is not None and rows else None
    return rows, timing, arrays


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def evaluate_policy(
    policy: LoadedPolicy | str | Path,
    backend: str,
    seeds: list[int],
    settings: EvalSettings | None = None,
    perception: str = "gt",
    detector: str | None = None,
    dynamics_config: str | Path | None = None,
    record_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = False,
    keep_arrays: bool = False,
    live: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``policy`` on ``seeds`` with ``backend``; the JSON-ready result dict.

    ``live(env)`` (optional) builds the per-step hook of :func:`run_episodes` for the evaluation
    environment (the ROS node publishes the live topics through it).

    Keys: ``backend``, ``perception``, ``policy`` (path, kind, metadata), ``world_seeds``,
    ``settings`` (evaluation settings, resolved vehicle config, task timing), ``metrics``
    (:func:`aggregate_metrics`), ``real_time_factor``, ``detection`` (YOLO only), ``episodes``
    (per-episode rows), ``recording`` (npz path, with ``record_dir``). With ``keep_arrays`` the
    recorded arrays are also returned under ``_arrays`` (not JSON; for parity).
    """
    settings = settings or load_settings()
    settings.validate()
    if not isinstance(policy, LoadedPolicy):
        policy = load_policy_file(policy)
    dyn = load_direct_dynamics_file(dynamics_config) if dynamics_config else None
    cfg = build_env_config(policy, backend, seeds, settings, perception, detector, dyn)
    env = make_eval_env(cfg, device)
    check_policy_fits(policy, env)
    if hasattr(env.perception, "reset_counters"):
        env.perception.reset_counters()
    record = record_dir is not None or keep_arrays
    rows, timing, arrays = run_episodes(
        env, policy.act, settings.episodes, record=record, progress=progress, seed=settings.seed,
        live=live(env) if live is not None else None,
    )  # fmt: skip
    metrics = aggregate_metrics(rows, settings.success_min_targets_found)
    result: dict[str, Any] = {
        "backend": backend,
        "perception": perception,
        "policy": {"path": str(policy.path), "kind": policy.kind, "meta": policy.meta},
        "world_seeds": list(seeds),
        "settings": {
            **to_dict(settings),
            "vehicle": cfg.vehicle,
            "vehicle_config": cfg.dynamics,
            "dynamics_config_file": str(dynamics_config) if dynamics_config else None,
            "control_dt_s": cfg.task.control_dt_s,
            "episode_length_s": cfg.task.episode_length_s,
            "camera": cfg.camera,
            "camera_resolution": cfg.camera_resolution,
            "detector": detector,
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "load_avg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "metrics": metrics,
        "real_time_factor": timing,
        "episodes": [_public(r) for r in rows],
    }
    counters = getattr(env.perception, "counters", None)
    if callable(counters):
        result["detection"] = counters()
    if record_dir is not None and arrays is not None:
        path = Path(record_dir) / f"{backend}.npz"
        result["recording"] = str(save_recording(result, arrays, path))
    if keep_arrays:
        result["_arrays"] = arrays
        result["_env_config"] = cfg
    return result


class NonFiniteActionsError(ValueError):
    """A policy produced NaN/inf actions on more than the allowed share of steps."""


def check_finite_actions(result: dict[str, Any], max_fraction: float) -> None:
    """Raise :class:`NonFiniteActionsError` when the policy gave too many NaN/inf actions."""
    m = result.get("metrics", {})
    frac = m.get("nonfinite_action_fraction")
    if frac is not None and frac > max_fraction:
        raise NonFiniteActionsError(
            f"policy '{result.get('policy', {}).get('path')}' gave non-finite (NaN/inf) actions on "
            f"{frac:.1%} of steps ({m.get('nonfinite_actions')} actions, each replaced by the zero "
            f"command; allowed {max_fraction:.1%}): the policy is broken"
        )


def save_recording(result: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> Path:
    """Write the recorded arrays of ``result`` (keys in the module docstring) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: result[k] for k in ("backend", "perception", "policy", "world_seeds")}
    meta["settings"] = result["settings"]
    np.savez_compressed(path, meta_json=np.array(json_dumps(meta, default=str)), **arrays)
    return path


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    """Write the JSON-safe part of a result (keys starting with ``_`` are dropped; NaN -> null).

    Written atomically (a temporary file renamed into place).
    """

    def clean(v: Any) -> Any:  # NaN/inf and numpy scalars: json_dumps
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if not str(k).startswith("_")}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    p = Path(path)
    atomic_write_text(p, json_dumps(clean(result), indent=1, default=str))
    return p
