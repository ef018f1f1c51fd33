"""Typed configuration of the training pipeline and its layered resolution.

:class:`TrainingConfig` holds every section an experiment depends on (``env``, ``data``, ``bc``,
``rl`` with ``ppo``/``sb3``, ``eval``); each section validates its own fields and the whole tree is
checked on load (unknown key or bad value -> :class:`~isr_direct_dynamics.config.ConfigError`
naming its dotted path).

:func:`resolve_config` builds it in layers: dataclass defaults <- ``training_config.yaml``
``defaults`` <- the physics quality preset of ``dynamics_config.yaml`` (``fast`` / ``medium`` /
``production``: vehicle model, physics dt, decimation, camera resolution) <- ``presets.<name>``
(``quick``, ``standard``) <- ``--set key=value`` overrides. ``env.dynamics`` ends up as the fully
resolved vehicle-model config (the ``direct`` or ``quadrotor`` section of ``dynamics_config.yaml``
plus overrides, validated by the model's own typed config). Both YAML files are package data of
``isr_training.config``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from isr_direct_dynamics.config import (
    ConfigError,
    check,
    check_device,
    check_memory,
    check_name,
    from_dict,
    memory_checks,
    parse_override,
    parse_yaml,
    read_yaml,
    to_dict,
)

from .env import MAX_WORLDS, EnvConfig, observation_size
from .imitation import BCConfig, DataConfig
from .ppo import PPOConfig
from .sb3_learners import SB3Config
from .task.config import MAX_EPISODE_STEPS

CONFIG_PACKAGE = "isr_training.config"
"""Package holding ``training_config.yaml`` and ``dynamics_config.yaml``."""


@dataclass
class PhysicsQuality:
    """A physics quality preset (PiDog's production / medium / fast)."""

    vehicle: Literal["direct", "quadrotor"] = "direct"
    """Vehicle model: direct dynamics (fast mode) or the full-fidelity quadrotor."""
    physics_dt_s: float = 0.1
    """Physics step, s (direct dynamics integrate in closed form: one step per control period)."""
    decimation: int = 1
    """Physics steps per control step (control period = physics_dt_s x decimation)."""
    camera_resolution: str = "80x80"
    """Camera (and ground-truth detection) resolution."""
    description: str = ""
    """What the preset trades."""

    def validate(self) -> None:
        """Check ranges."""
        check(self.physics_dt_s > 0, "physics_dt_s", "must be > 0")
        check(self.decimation >= 1, "decimation", "must be >= 1")

    @property
    def control_dt_s(self) -> float:
        """Control period, s."""
        return self.physics_dt_s * self.decimation


@dataclass
class RLConfig:
    """RL fine-tuning (the ``rl`` stage)."""

    algorithm: Literal["ppo", "sb3_ppo", "sb3_sac", "none"] = "ppo"
    """``ppo`` (this package's GPU-resident PPO), SB3 ``sb3_ppo`` / ``sb3_sac``, or ``none``
    (the imitation policy is the final policy)."""
    pretrained: str | None = None
    """An experiment directory (its ``rl_model/best.pt``, else ``final.pt``) or a PPO policy file
    (``ActorCritic``) to continue: the data and imitation stages are skipped, PPO starts from
    its actor, critic and normalizer, and the final evaluation also reports the starting policy
    and the transfer ratio (return on this run's vehicle model / return on the direct model)
    before and after. With ``physics_quality: medium`` this fine-tunes a fast-mode policy on the
    embedded full-fidelity quadrotor (the original plan's "fine-tune with PX4 in the loop")."""
    init_from_bc: bool = True
    """Initialize the actor mean (and normalizer) from the BC MLP (``ppo`` and ``sb3_ppo``)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """This package's PPO (its ``hidden_sizes``/``activation`` also shape the BC MLP)."""
    sb3: SB3Config = field(default_factory=SB3Config)
    """Stable-Baselines3 settings (``sb3_*`` algorithms)."""
    sb3_total_timesteps: int = 1_000_000
    """Budget of the SB3 algorithms (env steps of all drones)."""
    checkpoint_every_iterations: int = 5
    """PPO iterations (SB3: ``n_steps x drones`` steps) between checkpoints."""
    keep_checkpoints: int = 3
    """Numbered checkpoints kept besides ``latest.pt``."""
    eval_every_iterations: int = 10
    """Iterations between validation evaluations (0 = only before and after training)."""
    val_num_worlds: int = 8
    """Validation worlds (best-checkpoint selection; never the test worlds)."""
    val_world_seed: int = 90_000
    """First validation world seed."""
    keep_best: bool = True
    """The final policy is the best on the validation worlds (the BC start included)."""

    def validate(self) -> None:
        """Check ranges."""
        check(self.sb3_total_timesteps >= 1, "sb3_total_timesteps", "must be >= 1")
        check(self.checkpoint_every_iterations >= 1, "checkpoint_every_iterations", "must be >= 1")
        check(self.keep_checkpoints >= 0, "keep_checkpoints", "must be >= 0")
        check(self.eval_every_iterations >= 0, "eval_every_iterations", "must be >= 0")
        check(self.val_num_worlds >= 1, "val_num_worlds", "must be >= 1")


@dataclass
class EvalConfig:
    """Final evaluation on held-out test worlds (the ``finalize`` stage)."""

    num_worlds: int = 20
    """Test worlds (one drone each, whole episodes, deterministic policy)."""
    world_seed: int = 100_000
    """First test world seed."""
    episodes: int = 1
    """Episodes per test world."""
    baselines: bool = True
    """Also evaluate the random policy, the scripted expert and the imitation-only policy."""

    def validate(self) -> None:
        """Check ranges."""
        check(self.num_worlds >= 1, "num_worlds", "must be >= 1")
        check(self.episodes >= 1, "episodes", "must be >= 1")


@dataclass
class TrainingConfig:
    """Everything an experiment depends on (written to ``config.yaml`` fully resolved)."""

    name: str = "isr"
    """Experiment name (the directory is ``<name>_<YYYYmmdd_HHMMSS>``)."""
    seed: int = 0
    """Seed of the learners (network init, sampling, shuffling)."""
    device: str = "cpu"
    """Torch device of environments and learners (``cpu``, ``cuda``, ``cuda:1``)."""
    threads: int = 1
    """``torch.set_num_threads`` (0 = leave torch's default). 1 measured best on 2 busy cores."""
    physics_quality: Literal["fast", "medium", "production"] = "fast"
    """Physics quality preset (dynamics_config.yaml): model, physics dt, decimation, camera."""
    progress: bool = True
    """Show progress bars."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The RL training environment (``num_worlds`` x ``drones_per_world`` drones; world seeds
    ``env.seed + i``). Demonstration, validation and test environments derive from it."""
    data: DataConfig = field(default_factory=DataConfig)
    """Demonstration collection."""
    bc: BCConfig = field(default_factory=BCConfig)
    """Behaviour cloning."""
    rl: RLConfig = field(default_factory=RLConfig)
    """RL fine-tuning."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Final evaluation."""

    def training_seeds(self) -> list[int]:
        """World seeds used for training (RL and demonstrations)."""
        if self.env.world_seeds is not None:
            rl = list(self.env.world_seeds)
        else:
            rl = [self.env.seed + i for i in range(self.env.num_worlds)]
        demo = [s for r in range(1 + self.bc.dagger_rounds) for s in self.demonstration_seeds(r)]
        return sorted(set(rl) | set(demo))

    def demonstration_seeds(self, round_index: int = 0) -> list[int]:
        """World seeds of the demonstrations (round 0) or of DAgger round ``round_index``."""
        n = self.data.num_worlds
        return [self.env.seed + round_index * n + i for i in range(n)]

    def validation_seeds(self) -> list[int]:
        """RL validation world seeds."""
        return [self.rl.val_world_seed + i for i in range(self.rl.val_num_worlds)]

    def test_seeds(self) -> list[int]:
        """Held-out test world seeds."""
        return [self.eval.world_seed + i for i in range(self.eval.num_worlds)]

    def validate(self) -> None:
        """Cross-section checks (each section validates its own fields)."""
        check_name(self.name)
        check_device(self.device)
        check(0 <= self.threads <= 1024, "threads", f"must be in 0..1024, got {self.threads}")
        for fld, n in (
            ("env.num_worlds", self.env.num_worlds),
            ("data.num_worlds", self.data.num_worlds),
            ("rl.val_num_worlds", self.rl.val_num_worlds),
            ("eval.num_worlds", self.eval.num_worlds),
        ):  # before the seed lists below are built
            check(1 <= n <= MAX_WORLDS, fld, f"must be in 1..{MAX_WORLDS}, got {n}")
        steps = self.data.episodes * self.env.task.max_episode_steps
        check(
            steps <= MAX_EPISODE_STEPS,
            "data.episodes",
            f"{self.data.episodes} episodes of {self.env.task.max_episode_steps} steps are "
            f"{steps:,} steps per drone; at most {MAX_EPISODE_STEPS:,}",
        )
        row = (observation_size(self.env.task) + 4) * 4 + 1  # obs + action (float32) + done
        sets = 1 + self.bc.dagger_rounds
        check_memory(
            steps * self.data.num_worlds * sets * row,
            f"the demonstrations ({self.data.num_worlds} drones x {steps:,} steps"
            + (f" x {sets} with the DAgger rounds)" if sets > 1 else ")"),
            "data.num_worlds",
        )
        train, val, test = (
            set(self.training_seeds()),
            set(self.validation_seeds()),
            set(self.test_seeds()),
        )
        check(not train & test, "eval.world_seed", "test worlds overlap the training worlds")
        check(not val & test, "eval.world_seed", "test worlds overlap the validation worlds")
        check(not train & val, "rl.val_world_seed", "validation worlds overlap training worlds")
        check(
            self.rl.pretrained is None or self.rl.algorithm == "ppo",
            "rl.pretrained",
            f"continues a PPO policy: needs rl.algorithm 'ppo', got '{self.rl.algorithm}'",
        )
        bc_init = (
            self.rl.init_from_bc
            and self.rl.algorithm in ("ppo", "sb3_ppo")
            and self.rl.pretrained is None
        )
        check(
            not (bc_init and self.bc.model != "mlp"),
            "rl.init_from_bc",
            "needs bc.model 'mlp' (an LSTM cannot initialize the MLP actor); set it false",
        )
        check(
            not (
                bc_init
                and self.rl.algorithm == "sb3_ppo"
                and (self.rl.sb3.hidden_sizes, self.rl.sb3.activation)
                != (self.rl.ppo.hidden_sizes, self.rl.ppo.activation)
            ),
            "rl.sb3.hidden_sizes",
            "must equal rl.ppo.hidden_sizes (and activation) to start from the BC MLP, which is "
            "shaped like the PPO actor",
        )
        check(
            not (bc_init and self.env.camera),
            "rl.init_from_bc",
            "needs state observations (the BC MLP has no image encoder); set env.camera false",
        )
        check(
            not (self.rl.algorithm == "none" and self.bc.model != "mlp"),
            "rl.algorithm",
            "'none' exports the imitation policy, which must then be an MLP (bc.model: mlp)",
        )


def _config_text(name: str) -> str:
    return resources.files(CONFIG_PACKAGE).joinpath(name).read_text()


def _deep_merge(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in (layer or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_dynamics_config(path: str | Path | None = None) -> dict[str, Any]:
    """Read ``dynamics_config.yaml``: typed ``direct``/``quadrotor`` sections and quality presets.

    Returns ``{"direct": DirectDynamicsConfig, "quadrotor": QuadrotorConfig,
    "quality_presets": {name: PhysicsQuality}}``.
    """
    from isr_direct_dynamics.direct import DirectDynamicsConfig
    from isr_direct_dynamics.quadrotor import QuadrotorConfig

    source, raw = _read_config(path, "dynamics_config.yaml", "dynamics config file")
    _check_sections(raw, ("direct", "quadrotor", "quality_presets"), source)
    out: dict[str, Any] = {}
    for name, cls in (("direct", DirectDynamicsConfig), ("quadrotor", QuadrotorConfig)):
        out[name] = _prefixed(lambda c=cls, n=name: from_dict(c, raw.get(n) or {}), f"{name}.")
    presets = {}
    for qname, qdata in (raw.get("quality_presets") or {}).items():
        presets[qname] = _prefixed(
            lambda d=qdata: from_dict(PhysicsQuality, d), f"quality_presets.{qname}."
        )
    for need in ("fast", "medium", "production"):
        if need not in presets:
            raise ConfigError(f"{source}: quality preset '{need}' is missing")
    out["quality_presets"] = presets
    return out


def _prefixed(fn: Callable[[], Any], prefix: str) -> Any:
    """Run ``fn``; re-raise a ConfigError with ``prefix`` in front of the field it names."""
    try:
        return fn()
    except ConfigError as exc:
        msg = (
            str(exc)
            .replace("field '", f"field '{prefix}", 1)
            .replace("config key '", f"config key '{prefix}", 1)
        )
        raise ConfigError(msg, prefix + (exc.field or ""), exc.reason) from None


def resolve_config(
    preset: str | None = None,
    overrides: list[str] | None = None,
    config_path: str | Path | None = None,
    dynamics_path: str | Path | None = None,
) -> TrainingConfig:
    """Resolve and validate a :class:`TrainingConfig` (see the module docstring for the layers).

    Raises :class:`ConfigError` naming the offending key for an unknown key, a wrong type, a bad
    value or an unknown preset.
    """
    from isr_direct_dynamics.direct import DirectDynamicsConfig
    from isr_direct_dynamics.quadrotor import QuadrotorConfig

    source, raw = _read_config(config_path, "training_config.yaml", "config file")
    _check_sections(raw, ("defaults", "presets"), source)
    presets = raw.get("presets") or {}
    for pname, layer in presets.items():
        if layer is not None and not isinstance(layer, dict):
            raise ConfigError(f"{source}: preset '{pname}' must be a mapping")
    if preset is not None and preset not in presets:
        raise ConfigError(f"unknown preset '{preset}' (choose from {', '.join(sorted(presets))})")
    base = _deep_merge(to_dict(TrainingConfig()), raw.get("defaults") or {})
    preset_layer = presets.get(preset, {}) if preset else {}
    set_layer = _override_layer(list(overrides or []))
    probe = _deep_merge(_deep_merge(base, preset_layer), set_layer)
    dyn = load_dynamics_config(dynamics_path)
    qname = probe.get("physics_quality", "fast")
    if not isinstance(qname, str) or qname not in dyn["quality_presets"]:
        raise ConfigError(
            f"invalid config field 'physics_quality': {qname!r} is not one of "
            f"{sorted(dyn['quality_presets'])}"
        )
    q: PhysicsQuality = dyn["quality_presets"][qname]
    quality_layer = {
        "env": {
            "vehicle": q.vehicle,
            "camera_resolution": q.camera_resolution,
            "task": {"control_dt_s": q.control_dt_s},
        }
    }
    data = _deep_merge(_deep_merge(_deep_merge(base, quality_layer), preset_layer), set_layer)
    env = data.get("env")
    if isinstance(env, dict):
        vehicle = env.get("vehicle", "direct")
        if vehicle in ("direct", "quadrotor"):
            cls = DirectDynamicsConfig if vehicle == "direct" else QuadrotorConfig
            dyn_data = to_dict(dyn[vehicle])
            if vehicle == "quadrotor" and q.vehicle == "quadrotor":
                dyn_data["physics_dt_s"] = q.physics_dt_s
            user = env.get("dynamics") or {}
            if not isinstance(user, dict):
                raise ConfigError("invalid config field 'env.dynamics': expected a mapping")
            merged = _deep_merge(dyn_data, user)
            typed = _prefixed(lambda: from_dict(cls, merged), "env.dynamics.")
            env["dynamics"] = to_dict(typed)
    try:
        return from_dict(TrainingConfig, data)
    except ConfigError as exc:
        # Name the user's file when the bad value came from it (not from --set).
        from_file = _dotted_paths(_deep_merge(raw.get("defaults") or {}, preset_layer or {}))
        field = (exc.field or "").split("[")[0]
        if config_path and field in from_file and field not in _dotted_paths(set_layer):
            raise ConfigError(f"{config_path}: {exc}", exc.field, exc.reason) from None
        raise


def _read_config(path: str | Path | None, packaged: str, what: str) -> tuple[str, dict]:
    """``(source name, mapping)`` of a user's YAML file, else of the packaged ``packaged``."""
    if path:
        return str(path), read_yaml(path, what)
    return packaged, parse_yaml(_config_text(packaged), packaged)


def _check_sections(raw: dict[str, Any], sections: tuple[str, ...], source: str) -> None:
    """Only ``sections`` at the top level of a config file, each a mapping (or empty)."""
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        names = " and ".join(f"'{n}'" for n in sections)
        raise ConfigError(f"{source}: unknown section '{unknown[0]}' (the file holds {names})")
    for name in sections:
        if raw.get(name) is not None and not isinstance(raw[name], dict):
            raise ConfigError(f"{source}: section '{name}' must be a mapping")


def _override_layer(overrides: list[str]) -> dict[str, Any]:
    """Nested mapping of ``key=value`` overrides (values read as YAML).

    Unlike plain YAML 1.1, ``3e-4`` (no dot) is read as the number it looks like.
    """
    layer: dict[str, Any] = {}
    known = _dotted_paths(to_dict(TrainingConfig()))
    for text in overrides:
        keys, value = parse_override(text)
        dotted = ".".join(keys)
        if dotted not in known and not any(k.startswith(dotted + ".") for k in known):
            near = sorted(k for k in known if k.endswith("." + dotted))
            hint = f"; did you mean '{near[0]}'?" if near else ""
            if near or keys[0] not in known:
                raise ConfigError(f"--set {text[:80]}: unknown config key '{dotted}'{hint}")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        layer = _deep_merge(layer, _nest(keys, value))
    return layer


def _dotted_paths(data: dict[str, Any], prefix: str = "") -> set[str]:
    """Every dotted key path of a nested mapping (sections and leaves)."""
    out: set[str] = set()
    for k, v in data.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= _dotted_paths(v, f"{prefix}{k}.")
    return out


def _nest(keys: list[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for k in reversed(keys):
        out = {k: out}
    return out


def config_to_yaml(cfg: TrainingConfig) -> str:
    """YAML text of a resolved config."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=100)


def load_config_file(path: str | Path, check_memory: bool = True) -> TrainingConfig:
    """Read an experiment's ``config.yaml`` (validated like any other config).

    ``check_memory=False`` skips the memory estimates of its worlds and demonstrations: for a
    caller that reads the experiment's task (evaluation, transfer), not one that trains it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config.yaml in {path.parent}")
    try:
        with memory_checks(check_memory):
            return from_dict(TrainingConfig, read_yaml(path, "experiment config"))
    except ConfigError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ConfigError(f"{path}: {exc}", exc.field, exc.reason) from None
