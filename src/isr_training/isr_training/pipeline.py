"""The staged training pipeline (the PiDog pipeline for ISR): data -> imitation -> rl -> finalize.

One experiment is one directory ``experiments/<name>_<YYYYmmdd_HHMMSS>/``::

    config.yaml          the fully resolved TrainingConfig (the experiment's only input)
    data/                demonstrations.pt (expert trajectories), demonstrations.json
    imitation_model/     best.pt, final.pt, checkpoint.pt, history.json, training_history.png
    rl_model/            checkpoints/ (latest.pt, iter_*.pt), tensorboard/, best.pt, final.pt,
                         history.json, learning_curve.png
    logs/                data.log, imitation.log, rl.log, finalize.log
    stages/              <stage>.done markers (JSON: when, how long), written at a stage's end
    final_model/         policy.pt, policy_torchscript.pt, policy.onnx, README.md
    SUMMARY.json, SUMMARY.txt

Every stage runs alone (:func:`run_pipeline` with ``stages=[...]``) or as part of the chain, skips
itself when its marker exists, and resumes from its last checkpoint when it was interrupted (even
by ``kill -9``: checkpoints are written to a temporary file and renamed into place). Policy files
hold tensors and plain data only and are read with ``torch.load(weights_only=True)``.

Configuration: :class:`~isr_training.training_config.TrainingConfig`, resolved in layers by
:func:`~isr_training.training_config.resolve_config` (defaults, ``training_config.yaml``, physics
quality preset, ``--set`` overrides); an experiment's ``config.yaml`` is its only input.

Data-parallel (``isr train --nproc N``, torchrun; :mod:`isr_training.distributed`): the
imitation and rl stages run on every rank (BC: each rank its share of every minibatch; PPO: each
rank its shard of ``env.num_worlds``), gradients all-reduced; rank 0 alone runs data and finalize
and writes every file.

World seeds: training worlds are ``env.seed + i`` (RL: ``env.num_worlds``; demonstrations:
``data.num_worlds``), RL validation worlds ``rl.val_world_seed + i`` (best-checkpoint selection),
test worlds ``eval.world_seed + i`` (the SUMMARY figures). The three sets must not overlap.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from isr_direct_dynamics.config import ConfigError, json_dumps
from isr_direct_dynamics.io_checks import (
    atomic_write_bytes,
    atomic_write_text,
    check_output_dir,
    describe_exception,
    read_json_file,
    remove_stale_temp_files,
)
from isr_sim_bridge.world import cached_worlds, generate_worlds, worlds_to_batch

from .baselines import (
    SE_METRICS,
    RandomPolicy,
    ScriptedExpert,
    paired_difference,
    run_policy,
)
from .distributed import SINGLE, DistContext, shard
from .env import EnvConfig, ISREnv
from .export import export_policy, write_model_readme
from .imitation import (
    Demonstrations,
    RecurrentPolicyRunner,
    collect_demonstrations,
    deterministic_actor,
    train_bc,
)
from .models import (
    ActorCritic,
    BCPolicy,
    LSTMBCPolicy,
    atomic_torch_save,
    checkpoint_error,
    init_actor_from_bc,
    load_checkpoint,
    load_policy,
    save_policy,
)
from .ppo import PPO
from .task.config import TASK_VERSION
from .training_config import (
    TrainingConfig,
    config_to_yaml,
    load_config_file,
    resolve_config,
)

__all__ = [
    "STAGES",
    "Experiment",
    "TrainingConfig",
    "evaluate",
    "export_policy",
    "make_env",
    "resolve_config",
    "run_pipeline",
]

STAGES: tuple[str, ...] = ("data", "imitation", "rl", "finalize")
"""Pipeline stages in order."""

DATA_PARALLEL_STAGES: tuple[str, ...] = ("imitation", "rl")
"""Stages every rank of a data-parallel job runs (:mod:`isr_training.distributed`); rank 0 runs
the others alone while the rest wait."""

# ------------------------------------------------------------------------------- experiment


class _TqdmHandler(logging.Handler):
    """Log records to the console without breaking progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


class Experiment:
    """An experiment directory (see the module docstring for its layout)."""

    def __init__(self, root: str | Path, cfg: TrainingConfig) -> None:
        self.root = Path(root)
        self.cfg = cfg
        self.data_dir = self.root / "data"
        self.imitation_dir = self.root / "imitation_model"
        self.rl_dir = self.root / "rl_model"
        self.checkpoint_dir = self.rl_dir / "checkpoints"
        self.tensorboard_dir = self.rl_dir / "tensorboard"
        self.logs_dir = self.root / "logs"
        self.stages_dir = self.root / "stages"
        self.final_dir = self.root / "final_model"
        self.step_hook: Callable[[Any], None] | None = None
        """Called with the RL environment after every rollout step (the trainer node's live
        view of a few drones); None = nothing."""
        self.dist: DistContext = SINGLE
        """The data-parallel context (:mod:`isr_training.distributed`): rank 0 writes the
        directory; every rank runs the rl stage on its shard of the worlds."""
        self.live: dict[str, Any] = {}
        """Progress of the running stage, updated while it runs (read by the trainer node from
        another thread; replaced as a whole, never mutated): ``stage``, ``env_steps``,
        ``total_env_steps``, ``env_steps_per_s``, ``mean_episode_return``, ``targets_found``."""

    @classmethod
    def create(cls, cfg: TrainingConfig, base_dir: str | Path = "experiments") -> Experiment:
        """Make ``<base_dir>/<name>_<YYYYmmdd_HHMMSS>/`` and write ``config.yaml``.

        ``base_dir`` (``--output-dir``) is checked first: a file there, or a folder that cannot
        be written, is a ``ConfigError`` before anything is created.
        """
        check_output_dir(base_dir, "--output-dir")
        stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
        root = Path(base_dir) / f"{cfg.name}_{stamp}"
        k = 1
        while root.exists():
            root = Path(base_dir) / f"{cfg.name}_{stamp}_{k}"
            k += 1
        exp = cls(root, cfg)
        exp.make_dirs()
        atomic_write_text(exp.root / "config.yaml", config_to_yaml(cfg))
        return exp

    def make_dirs(self) -> None:
        """Create every folder of the experiment layout (idempotent)."""
        for d in (
            self.data_dir,
            self.imitation_dir,
            self.checkpoint_dir,
            self.tensorboard_dir,
            self.logs_dir,
            self.stages_dir,
            self.final_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)

    @classmethod
    def open(cls, root: str | Path) -> Experiment:
        """Open an existing experiment (its ``config.yaml`` is the configuration).

        Deletes the stale temporary files that a killed writer left in it (see
        :func:`isr_direct_dynamics.io_checks.remove_stale_temp_files`) and checks the stage
        markers, so that a corrupt file is named before any work starts.
        """
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"experiment directory not found: {root}")
        exp = cls(root, load_config_file(root / "config.yaml"))
        check_output_dir(root, "experiment directory")
        remove_stale_temp_files(root, recursive=True)
        exp.make_dirs()
        for stage in STAGES:
            exp.stage_info(stage)
        exp.check_checkpoints()
        return exp

    def check_checkpoints(self) -> None:
        """Refuse a corrupt resume checkpoint now, before any stage starts.

        The tensors are only memory-mapped (cheap). Raises ``ValueError`` naming the checkpoint
        and what to resume from.
        """
        checks = []
        if not self.is_done("imitation"):
            checks.append((self.imitation_dir / "checkpoint.pt", ("model", "optimizer"), None))
        if not self.is_done("rl"):
            key = "sb3" if self.cfg.rl.algorithm.startswith("sb3_") else "ppo"
            latest = self.checkpoint_dir / "latest.pt"
            checks.append((latest, (key, "stage"), _previous_checkpoint(self)))
        for path, keys, previous in checks:
            if path.exists():
                load_checkpoint(path, keys, previous=previous, mmap=True)

    def marker(self, stage: str) -> Path:
        """Marker file of a finished stage."""
        return self.stages_dir / f"{stage}.done"

    def is_done(self, stage: str) -> bool:
        """Whether ``stage`` finished."""
        return self.marker(stage).is_file()

    def stage_info(self, stage: str) -> dict[str, Any]:
        """Contents of a stage's marker ({} when not done)."""
        path = self.marker(stage)
        if not path.exists():
            return {}
        try:
            return read_json_file(path, "stage marker")
        except ConfigError as exc:
            raise ConfigError(
                f"{exc}; delete it to run the '{stage}' stage again (its checkpoints are kept)"
            ) from None

    def mark_done(self, stage: str, info: dict[str, Any]) -> None:
        """Write the marker of ``stage`` (atomically)."""
        atomic_write_text(self.marker(stage), json_dumps(info, indent=1))

    def logger(self, stage: str) -> logging.Logger:
        """A logger writing ``logs/<stage>.log`` and the console."""
        log = logging.getLogger(f"isr_training.pipeline.{self.root.name}.{stage}")
        log.setLevel(logging.INFO)
        log.propagate = False
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()
        if not self.dist.is_main:  # only rank 0 writes the logs (and the console)
            log.addHandler(logging.NullHandler())
            return log
        fh = logging.FileHandler(self.logs_dir / f"{stage}.log")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(fh)
        ch = _TqdmHandler()
        ch.setFormatter(logging.Formatter(f"[{stage}] %(message)s"))
        log.addHandler(ch)
        return log

    def close_logs(self) -> None:
        """Close the log files of every stage (loggers are re-opened on demand)."""
        for stage in STAGES:
            log = logging.getLogger(f"isr_training.pipeline.{self.root.name}.{stage}")
            for h in list(log.handlers):
                log.removeHandler(h)
                h.close()


def _previous_checkpoint(exp: Experiment) -> Path | None:
    """The newest ``iter_*.pt`` that is not empty (what to resume from when latest.pt is bad)."""
    files = [f for f in sorted(exp.checkpoint_dir.glob("iter_*.pt")) if f.stat().st_size > 0]
    return files[-1] if files else None


def _resume_checkpoint(exp: Experiment, latest: Path, key: str, restore: Callable) -> dict:
    """Load ``latest`` (entries ``key`` and ``stage``) and ``restore(ck)``; one clear error."""
    prev = _previous_checkpoint(exp)
    ck = load_checkpoint(latest, (key, "stage"), previous=prev)
    try:
        restore(ck)
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        why = f"does not fit this experiment: {describe_exception(exc)}"
        raise ValueError(checkpoint_error(latest, why, prev)) from None
    return ck


# ----------------------------------------------------------------------------------- worlds


def training_world_seeds(cfg: TrainingConfig, ctx: DistContext = SINGLE) -> list[int]:
    """The training worlds of this rank.

    ``cfg.env``'s (its ``world_seeds``, else ``num_worlds`` seeds from ``env.seed``), split in
    equal shards over the ranks (rank r the r-th).
    """
    env_cfg = cfg.env
    seeds = (
        list(env_cfg.world_seeds)
        if env_cfg.world_seeds is not None
        else [env_cfg.seed + i for i in range(env_cfg.num_worlds)]
    )
    first, count = shard(len(seeds), ctx)
    return seeds[first : first + count]


def make_training_env(cfg: TrainingConfig, ctx: DistContext = SINGLE) -> ISREnv:
    """The RL stages' environment (PPO and SB3 alike).

    This rank's shard of the training worlds (:func:`training_world_seeds`), drones per world and
    staggering; the spawn seed is the rank's (:meth:`DistContext.rank_seed`).
    """
    env_cfg = cfg.env
    return make_env(
        env_cfg, training_world_seeds(cfg, ctx), env_cfg.drones_per_world, env_cfg.stagger,
        seed=ctx.rank_seed(env_cfg.seed), device=cfg.device,
    )  # fmt: skip


def make_env(
    base: EnvConfig,
    seeds: list[int],
    drones_per_world: int,
    stagger: bool,
    seed: int,
    device: str | torch.device,
    camera: bool | None = None,
    cache: bool = True,
) -> ISREnv:
    """An :class:`ISREnv` on the worlds ``seeds``.

    Generated worlds are cached per process (``cache``); worlds flown once (the DAgger rounds')
    are not, so that their memory is freed with the environment.
    """
    cfg = copy.deepcopy(base)
    cfg.num_worlds = len(seeds)
    cfg.world_seeds = list(seeds)
    cfg.drones_per_world = drones_per_world
    cfg.stagger = stagger
    cfg.seed = seed
    if camera is not None:
        cfg.camera = camera
    if not cache:
        return ISREnv(cfg, device, world=generate_worlds(cfg.world, seeds, device))
    return ISREnv(cfg, device, world=worlds_to_batch(cached_worlds(cfg.world, seeds), device))


def evaluate(
    cfg: TrainingConfig,
    seeds: list[int],
    policies: dict[str, Callable[[ISREnv], Callable[[Any], torch.Tensor]]],
    episodes: int = 1,
    log: logging.Logger | None = None,
    per_episode: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run every policy on the same worlds and spawns (one drone per world, whole episodes).

    ``policies`` maps a name to ``make(env) -> act(obs)``; a fresh environment with the same seed
    is built for each, so all policies start from the same poses. ``per_episode``: each result
    also holds every world's first-episode values (see :func:`run_policy`).
    """
    out = {}
    for name, make in policies.items():
        env = make_env(cfg.env, seeds, 1, False, seed=seeds[0], device=cfg.device)
        t0 = time.perf_counter()
        metrics = run_policy(env, make(env), episodes_per_drone=episodes, per_episode=per_episode)
        metrics["wall_s"] = time.perf_counter() - t0
        out[name] = metrics
        if log is not None:
            log.info(
                "eval %-16s targets_found %.3f coverage %.3f return %.1f crash_rate %.3f (%.0f s)",
                name,
                metrics["targets_found"],
                metrics["coverage"],
                metrics["return"],
                metrics["crash_rate"],
                metrics["wall_s"],
            )
    return out


def _policy_factory(model: torch.nn.Module) -> Callable[[ISREnv], Callable[[Any], torch.Tensor]]:
    if isinstance(model, LSTMBCPolicy):
        return lambda env: RecurrentPolicyRunner(model, env)
    return lambda env: deterministic_actor(model)


# ----------------------------------------------------------------------------------- stages


def _setup_torch(cfg: TrainingConfig) -> None:
    from isr_direct_dynamics.threads import configure_threads

    configure_threads(cfg.threads)
    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"invalid config field 'device': {cfg.device} but CUDA is not available")


def _progress(cfg: TrainingConfig, **kwargs: Any):
    from tqdm import tqdm

    return tqdm(disable=not cfg.progress, dynamic_ncols=True, file=sys.stderr, **kwargs)


def pretrained_policy_file(path: str | Path) -> Path:
    """The PPO policy file of ``rl.pretrained``.

    A file, or an experiment's ``rl_model/best.pt`` (else ``final.pt``); a clear error when there
    is none, or when the file is not a loadable policy (empty, cut short, pickled objects).
    """
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "final.pt"):
            if (p / "rl_model" / name).is_file():
                p = p / "rl_model" / name
                break
        else:
            raise FileNotFoundError(
                f"rl.pretrained: {p} has no rl_model/best.pt or rl_model/final.pt (not a finished "
                "PPO experiment)"
            )
    if not p.is_file():
        raise FileNotFoundError(f"rl.pretrained: {p} does not exist")
    try:
        load_policy(p)
    except ValueError as exc:
        raise ValueError(f"rl.pretrained: {exc}") from None
    return p


def _skipped_for_pretrained(exp: Experiment, stage: str) -> dict[str, Any] | None:
    if exp.cfg.rl.pretrained is None:
        return None
    exp.logger(stage).info("skipped: rl.pretrained continues %s", exp.cfg.rl.pretrained)
    return {"skipped": "rl.pretrained", "pretrained": str(exp.cfg.rl.pretrained)}


def _collect(
    exp: Experiment, seeds: list[int], desc: str, learner: Callable[[Any], Any] | None = None
) -> tuple[Demonstrations, float]:
    """Fly ``seeds`` (one drone per world, whole episodes) labelled by the scripted expert.

    The expert flies unless a ``learner`` does (DAgger). Returns the data and the flight time.
    """
    cfg, log = exp.cfg, exp.logger("data")
    t0 = time.perf_counter()
    env = make_env(
        cfg.env, seeds, 1, False, seed=cfg.seed, device=cfg.device, camera=False,
        cache=learner is None,
    )  # fmt: skip
    log.info("built %d worlds in %.1f s", len(seeds), time.perf_counter() - t0)
    total = cfg.data.episodes * env.max_episode_steps
    bar = _progress(cfg, total=total * env.num_envs, desc=desc, unit="step", unit_scale=True)
    last = [0]

    def progress(step: int, _total: int) -> None:
        bar.update((step - last[0]) * env.num_envs)
        last[0] = step

    t1 = time.perf_counter()
    demos = collect_demonstrations(
        env,
        episodes=cfg.data.episodes,
        action_noise=cfg.data.action_noise,
        seed=cfg.seed + seeds[0],
        expert_kwargs={
            "altitude_m": cfg.data.expert_altitude_m,
            "speed_m_s": cfg.data.expert_speed_m_s,
        },
        progress=progress,
        learner=learner,
    )
    bar.close()
    return demos, time.perf_counter() - t1


def stage_data(exp: Experiment) -> dict[str, Any]:
    """Collect expert demonstrations into ``data/demonstrations.pt``."""
    skipped = _skipped_for_pretrained(exp, "data")
    if skipped is not None:
        return skipped
    cfg, log = exp.cfg, exp.logger("data")
    seeds = cfg.demonstration_seeds()
    demos, dt = _collect(exp, seeds, "data")
    demos.save(exp.data_dir / "demonstrations.pt")
    info = {
        "samples": demos.num_samples,
        "drones": int(demos.obs.shape[1]),
        "steps": int(demos.obs.shape[0]),
        "obs_dim": int(demos.obs.shape[2]),
        "world_seeds": [seeds[0], seeds[-1]],
        "action_noise": cfg.data.action_noise,
        "expert_metrics": demos.metrics,
        "collect_s": dt,
        "env_steps_per_s": demos.num_samples / dt,
    }
    atomic_write_text(exp.data_dir / "demonstrations.json", json_dumps(info, indent=1))
    log.info(
        "%d samples from %d drones in %.1f s (%.0f env-steps/s); noisy expert found %.1f%% of "
        "targets",
        demos.num_samples,
        demos.obs.shape[1],
        dt,
        demos.num_samples / dt,
        100 * demos.metrics.get("targets_found", float("nan")),
    )
    return info


def _bc_model(cfg: TrainingConfig, obs_dim: int) -> BCPolicy | LSTMBCPolicy:
    torch.manual_seed(cfg.seed)
    if cfg.bc.model == "lstm":
        return LSTMBCPolicy(
            obs_dim, 4, cfg.bc.lstm_hidden_size, cfg.bc.lstm_layers, cfg.rl.ppo.activation
        )
    return BCPolicy(obs_dim, 4, cfg.rl.ppo.hidden_sizes, cfg.rl.ppo.activation)


def stage_imitation(exp: Experiment) -> dict[str, Any]:
    """Behaviour cloning on the demonstrations (``imitation_model/``)."""
    skipped = _skipped_for_pretrained(exp, "imitation")
    if skipped is not None:
        return skipped
    cfg, log = exp.cfg, exp.logger("imitation")
    demos = Demonstrations.load(exp.data_dir / "demonstrations.pt")
    model = _bc_model(cfg, demos.obs.shape[-1])
    resumed = (exp.imitation_dir / "checkpoint.pt").is_file()
    if resumed:
        log.info("resuming from imitation_model/checkpoint.pt")
    log.info("BC %s on %d samples, up to %d epochs", cfg.bc.model, demos.num_samples, cfg.bc.epochs)
    result = _train_bc(exp, model, demos, cfg.bc, cfg.seed, exp.imitation_dir, "imitation")
    h = result.history
    info = {
        "model": cfg.bc.model,
        "epochs": len(h["train_loss"]),
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "first_val_loss": h["val_loss"][0],
        "final_train_loss": h["train_loss"][-1],
        "stopped_early": result.stopped_early,
        "train_s": h["time_s"][-1] if h["time_s"] else 0.0,
    }
    log.info(
        "val MSE %.4g -> %.4g (best epoch %d of %d%s)",
        info["first_val_loss"],
        result.best_val_loss,
        result.best_epoch,
        info["epochs"],
        ", early stop" if result.stopped_early else "",
    )
    if cfg.bc.dagger_rounds:
        info["dagger"] = _dagger(exp, model, demos)
    return info


def _train_bc(
    exp: Experiment,
    model: torch.nn.Module,
    demos: Demonstrations,
    bc: Any,
    seed: int,
    out_dir: Path,
    desc: str,
) -> Any:
    """:func:`train_bc` with a progress bar of its epochs (train and validation loss)."""
    log = exp.logger("imitation")
    bar = _progress(exp.cfg, total=bc.epochs, desc=desc, unit="epoch")

    def on_epoch(epoch: int, h: dict[str, float]) -> None:
        bar.n = epoch
        bar.set_postfix(train=f"{h['train_loss']:.4g}", val=f"{h['val_loss']:.4g}")
        bar.refresh()
        log.debug("epoch %d %s", epoch, h)

    result = train_bc(
        model, demos, bc, seed=seed, out_dir=out_dir, device=exp.cfg.device, on_epoch=on_epoch,
        dist=exp.dist,
    )  # fmt: skip
    bar.close()
    return result


def _dagger(exp: Experiment, model: torch.nn.Module, demos: Demonstrations) -> list[dict]:
    """DAgger rounds (``bc.dagger_rounds``).

    Each round the clone flies new worlds, the expert labels the states, cloning continues on all
    data. Each round's data (``data/dagger_<r>.pt``) and cloning (``imitation_model/dagger_<r>/``)
    are kept, so an interrupted stage resumes where it stopped; the last round's best model
    becomes ``imitation_model/best.pt``.
    """
    cfg, log = exp.cfg, exp.logger("imitation")
    rounds, data = [], demos
    n = cfg.data.num_worlds
    for r in range(1, cfg.bc.dagger_rounds + 1):
        path = exp.data_dir / f"dagger_{r}.pt"
        if path.is_file():
            new, dt = Demonstrations.load(path), 0.0
        else:
            new, dt = _collect(
                exp, cfg.demonstration_seeds(r), f"dagger {r}", learner=deterministic_actor(model)
            )
            new.save(path)
        data = Demonstrations.concat([data, new])
        bc = dataclasses.replace(cfg.bc, epochs=cfg.bc.dagger_epochs)
        out = exp.imitation_dir / f"dagger_{r}"
        res = _train_bc(exp, model, data, bc, cfg.seed + r, out, f"dagger {r} BC")
        rec = {
            "round": r,
            "learner_targets_found": new.metrics.get("targets_found", float("nan")),
            "learner_coverage": new.metrics.get("coverage", float("nan")),
            "samples": data.num_samples,
            "best_val_loss": res.best_val_loss,
            "collect_s": dt,
        }
        rounds.append(rec)
        log.info(
            "DAgger round %d: the clone (with action noise) found %.1f%% of the targets on %d new "
            "worlds; BC on %d samples, val MSE %.4g",
            r,
            100 * rec["learner_targets_found"],
            n,
            rec["samples"],
            res.best_val_loss,
        )
    atomic_write_bytes(exp.imitation_dir / "best.pt", (out / "best.pt").read_bytes())
    return rounds


class _RLState:
    """Book-keeping of the rl stage saved inside every checkpoint."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self.evals: list[dict[str, float]] = []
        self.best_score = -math.inf
        self.best_step = -1
        self.val_baselines: dict[str, dict[str, float]] = {}
        """Scripted expert and random policy on the validation worlds (the curves' levels)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "evals": self.evals,
            "best_score": self.best_score,
            "best_step": self.best_step,
            "val_baselines": self.val_baselines,
        }

    def load(self, d: dict[str, Any]) -> None:
        self.history = [dict(x) for x in d["history"]]
        self.evals = [dict(x) for x in d["evals"]]
        self.best_score, self.best_step = float(d["best_score"]), int(d["best_step"])
        self.val_baselines = {k: dict(v) for k, v in d.get("val_baselines", {}).items()}


def _score(metrics: dict[str, float]) -> float:
    """Validation score: fraction of targets found (coverage breaks ties)."""
    return metrics["targets_found"] + 1e-3 * metrics["coverage"]


def stage_rl(exp: Experiment) -> dict[str, Any]:
    """RL fine-tuning (``rl_model/``)."""
    cfg = exp.cfg
    if cfg.rl.algorithm == "none":
        exp.logger("rl").info("rl.algorithm is 'none': the imitation policy is final")
        return {"algorithm": "none"}
    if cfg.rl.algorithm.startswith("sb3_"):
        return _stage_rl_sb3(exp)
    return _stage_rl_ppo(exp)


def _write_tb(writer: Any, metrics: dict[str, float], step: int) -> None:
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and math.isfinite(v) and k not in ("iteration",):
            writer.add_scalar(k, v, step)


def _rotate_checkpoints(exp: Experiment, keep: int) -> None:
    files = sorted(exp.checkpoint_dir.glob("iter_*.pt"))
    for f in files[: max(0, len(files) - keep)]:
        f.unlink(missing_ok=True)


def _stage_rl_ppo(exp: Experiment) -> dict[str, Any]:
    from torch.utils.tensorboard import SummaryWriter

    cfg, log = exp.cfg, exp.logger("rl")
    rl = cfg.rl
    ctx = exp.dist
    main = ctx.is_main
    t0 = time.perf_counter()
    env = make_training_env(cfg, ctx)
    log.info(
        "built %d worlds x %d drones in %.1f s%s",
        env.num_worlds,
        env.drones_per_world,
        time.perf_counter() - t0,
        f" (per rank; {ctx.world_size} ranks, backend {ctx.backend})" if ctx.enabled else "",
    )
    torch.manual_seed(cfg.seed)
    policy = ActorCritic(
        env.obs_dim,
        env.action_dim,
        rl.ppo.hidden_sizes,
        rl.ppo.activation,
        rl.ppo.init_log_std,
        image_shape=env.image_shape if env.image is not None else None,
        cnn_features=rl.ppo.cnn_features,
    )
    if rl.pretrained is not None:
        src = pretrained_policy_file(rl.pretrained)
        policy, meta = load_policy(src)
        if not isinstance(policy, ActorCritic) or policy.obs_dim != env.obs_dim:
            raise ValueError(
                f"rl.pretrained: {src} is a {meta.get('class')} with obs_dim "
                f"{meta.get('obs_dim')}; PPO needs an ActorCritic for obs_dim {env.obs_dim}"
            )
        policy.train()
        log.info("actor, critic and normalizer continue %s", src)
    elif rl.init_from_bc:
        bc, _ = load_policy(exp.imitation_dir / "best.pt")
        init_actor_from_bc(policy, bc)
        log.info("actor mean and normalizer initialized from imitation_model/best.pt")
    ppo = PPO(env, rl.ppo, seed=cfg.seed, policy=policy, dist=ctx)
    ppo.step_hook = exp.step_hook
    state = _RLState()
    latest = exp.checkpoint_dir / "latest.pt"
    if latest.is_file():

        def restore(ck: dict) -> None:
            ppo.load_state_dict(ck["ppo"])
            state.load(ck["stage"])

        _resume_checkpoint(exp, latest, "ppo", restore)
        log.info("resumed from %s at iteration %d, step %d", latest, ppo.iteration, ppo.global_step)
    if not main:  # the other ranks only contribute their rollouts and gradients
        ppo.learn(rl.ppo.total_timesteps, callback=lambda p, m: True)
        return {"algorithm": "ppo", "rank": ctx.rank, "global_step": ppo.global_step}
    writer = SummaryWriter(str(exp.tensorboard_dir), purge_step=ppo.global_step or None)
    val_seeds = cfg.validation_seeds()

    def validate(step: int) -> None:
        act = deterministic_actor(ppo.policy)
        m = evaluate(cfg, val_seeds, {"val": lambda env, a=act: a})["val"]
        score = _score(m)
        rec = {
            "global_step": step,
            "targets_found": m["targets_found"],
            "coverage": m["coverage"],
            "return": m["return"],
            "score": score,
        }
        state.evals.append(rec)
        writer.add_scalar("eval/targets_found", m["targets_found"], step)
        writer.add_scalar("eval/coverage", m["coverage"], step)
        writer.add_scalar("eval/return", m["return"], step)
        better = score > state.best_score
        if better:
            state.best_score, state.best_step = score, step
            save_policy(
                exp.rl_dir / "best.pt",
                ppo.policy,
                {"global_step": step, "task_version": TASK_VERSION, "val": rec},
            )
        log.info(
            "validation at step %d: targets_found %.3f coverage %.3f return %.1f%s",
            step,
            m["targets_found"],
            m["coverage"],
            m["return"],
            " (best)" if better else "",
        )

    def checkpoint() -> None:
        data = {"ppo": ppo.state_dict(), "stage": state.to_dict()}
        atomic_torch_save(data, latest)
        if rl.keep_checkpoints:
            atomic_torch_save(data, exp.checkpoint_dir / f"iter_{ppo.iteration:06d}.pt")
            _rotate_checkpoints(exp, rl.keep_checkpoints)

    if not state.val_baselines:  # the levels the validation curve is read against
        base = evaluate(
            cfg, val_seeds, {
                "scripted_expert": lambda env: ScriptedExpert(env),
                "random": lambda env: RandomPolicy(env.num_envs, env.device, seed=cfg.seed),
            },
        )  # fmt: skip
        state.val_baselines = {
            k: {"targets_found": m["targets_found"], "return": m["return"]} for k, m in base.items()
        }
        log.info(
            "validation worlds: scripted expert finds %.3f, random %.3f of the targets",
            state.val_baselines["scripted_expert"]["targets_found"],
            state.val_baselines["random"]["targets_found"],
        )
    if not state.evals:
        validate(ppo.global_step)
        checkpoint()
    total = rl.ppo.total_timesteps
    bar = _progress(
        cfg,
        total=total,
        initial=min(ppo.global_step, total),
        desc="rl",
        unit="step",
        unit_scale=True,
    )
    t_start, step_start = time.perf_counter(), ppo.global_step

    def on_iteration(p: PPO, m: dict[str, float]) -> bool:
        m = dict(m)
        m["time/sps_stage"] = (p.global_step - step_start) / (time.perf_counter() - t_start)
        state.history.append(m)
        _write_tb(writer, m, p.global_step)
        bar.update(min(p.global_step, total) - bar.n)
        post = {"sps": f"{m['time/sps']:.0f}"}
        if "episode/return" in m:
            post["ret"] = f"{m['episode/return']:.1f}"
            post["found"] = f"{m['episode/targets_found']:.2f}"
        bar.set_postfix(post)
        exp.live = {
            "stage": "rl",
            "env_steps": p.global_step,
            "total_env_steps": total,
            "env_steps_per_s": m["time/sps_stage"],
            "mean_episode_return": m.get("episode/return", math.nan),
            "targets_found": m.get("episode/targets_found", math.nan),
        }
        log.info(
            "iter %d step %d sps %.0f return %s found %s v_loss %.3g kl %.3g std %.3f",
            p.iteration,
            p.global_step,
            m["time/sps"],
            _fmt(m.get("episode/return")),
            _fmt(m.get("episode/targets_found")),
            m["loss/value"],
            m["loss/approx_kl"],
            m["policy/std"],
        )
        done = p.global_step >= total
        if rl.eval_every_iterations and p.iteration % rl.eval_every_iterations == 0 and not done:
            validate(p.global_step)
        if p.iteration % rl.checkpoint_every_iterations == 0 or done:
            checkpoint()
        return True

    ppo.learn(total, callback=on_iteration)
    bar.close()
    if not state.evals or state.evals[-1]["global_step"] != ppo.global_step:
        validate(ppo.global_step)
        checkpoint()
    writer.flush()
    writer.close()
    save_policy(
        exp.rl_dir / "final.pt",
        ppo.policy,
        {"global_step": ppo.global_step, "task_version": TASK_VERSION},
    )
    atomic_write_text(exp.rl_dir / "history.json", json_dumps(state.to_dict(), indent=1))
    plot_learning_curve(
        state.history, state.evals, exp.rl_dir / "learning_curve.png", state.val_baselines
    )
    sps = [h["time/sps"] for h in state.history]
    info = {
        "algorithm": "ppo",
        "global_step": ppo.global_step,
        "iterations": ppo.iteration,
        "drones": env.num_envs * ctx.world_size,
        "ranks": ctx.world_size,
        "backend": ctx.backend,
        "rank_world_seeds": [
            [training_world_seeds(cfg, DistContext(r, ctx.world_size))[i] for i in (0, -1)]
            for r in range(ctx.world_size)
        ],
        "rank_seeds": [
            DistContext(r, ctx.world_size).rank_seed(cfg.seed) for r in range(ctx.world_size)
        ],
        "env_steps_per_s_mean": sum(sps) / len(sps) if sps else float("nan"),
        "best_step": state.best_step,
        "best_val_score": state.best_score,
        "val_evals": state.evals,
    }
    log.info(
        "done: %d steps, %.0f env-steps/s (incl. updates), best validation at step %d",
        ppo.global_step,
        info["env_steps_per_s_mean"],
        state.best_step,
    )
    return info


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _stage_rl_sb3(exp: Experiment) -> dict[str, Any]:
    """RL with Stable-Baselines3 PPO/SAC on :class:`ISRSB3VecEnv` (tensor-only checkpoints)."""
    from .adapters import ISRSB3VecEnv
    from .sb3_learners import (
        build_sb3_model,
        load_bc_into_sb3_ppo,
        load_sb3_state,
        sb3_state,
        sb3_to_policy,
    )

    cfg, log = exp.cfg, exp.logger("rl")
    rl = cfg.rl
    sb3cfg = copy.deepcopy(rl.sb3)
    sb3cfg.algorithm = "sac" if rl.algorithm == "sb3_sac" else "ppo"
    env = make_training_env(cfg)
    venv = ISRSB3VecEnv(env=env)
    model, wrapped = build_sb3_model(
        venv, sb3cfg, seed=cfg.seed, tensorboard_log=str(exp.tensorboard_dir), device=cfg.device
    )
    latest = exp.checkpoint_dir / "latest.pt"
    state = _RLState()
    if latest.is_file():

        def restore(ck: dict) -> None:
            load_sb3_state(model, wrapped, ck["sb3"])
            state.load(ck["stage"])

        _resume_checkpoint(exp, latest, "sb3", restore)
        log.info("resumed SB3 %s from step %d", sb3cfg.algorithm, model.num_timesteps)
    elif rl.init_from_bc and sb3cfg.algorithm == "ppo":
        bc, _ = load_policy(exp.imitation_dir / "best.pt")
        load_bc_into_sb3_ppo(model, wrapped, bc)
        log.info("SB3 PPO actor initialized from imitation_model/best.pt")
    chunk = max(sb3cfg.n_steps * venv.num_envs * rl.checkpoint_every_iterations, venv.num_envs)
    total = rl.sb3_total_timesteps
    bar = _progress(
        cfg,
        total=total,
        initial=min(model.num_timesteps, total),
        desc="rl-sb3",
        unit="step",
        unit_scale=True,
    )
    while model.num_timesteps < total:
        t0, s0 = time.perf_counter(), model.num_timesteps
        model.learn(
            total_timesteps=min(chunk, total - model.num_timesteps),
            reset_num_timesteps=False,
            tb_log_name=sb3cfg.algorithm,
        )
        sps = (model.num_timesteps - s0) / (time.perf_counter() - t0)
        state.history.append({"global_step": model.num_timesteps, "time/sps": sps})
        atomic_torch_save({"sb3": sb3_state(model, wrapped), "stage": state.to_dict()}, latest)
        bar.update(min(model.num_timesteps, total) - bar.n)
        bar.set_postfix(sps=f"{sps:.0f}")
        log.info("step %d sps %.0f", model.num_timesteps, sps)
    bar.close()
    atomic_torch_save(
        {"sb3": sb3_state(model, wrapped), "stage": state.to_dict()}, exp.rl_dir / "final_sb3.pt"
    )
    policy = sb3_to_policy(model, wrapped, sb3cfg, env.obs_dim)
    save_policy(
        exp.rl_dir / "final.pt",
        policy,
        {
            "global_step": int(model.num_timesteps),
            "task_version": TASK_VERSION,
            "sb3_algorithm": sb3cfg.algorithm,
        },
    )
    sps = [h["time/sps"] for h in state.history]
    return {
        "algorithm": rl.algorithm,
        "global_step": int(model.num_timesteps),
        "env_steps_per_s_mean": sum(sps) / len(sps) if sps else float("nan"),
    }


def plot_learning_curve(
    history: list[dict[str, float]],
    evals: list[dict[str, float]],
    path: str | Path,
    baselines: dict[str, dict[str, float]] | None = None,
) -> None:
    """The RL stage's learning curves vs env steps.

    Reward per step; training and validation targets found against the scripted expert's and
    random's level on the validation worlds (``baselines``); env-steps/s and where an
    iteration's time went.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100)
    axes[0].plot(
        [h["global_step"] for h in history], [h.get("rollout/reward_per_step") for h in history]
    )
    axes[0].set_title("reward per step (rollouts)")
    done = [h for h in history if "episode/targets_found" in h]
    if done:
        axes[1].plot(
            [h["global_step"] for h in done],
            [h["episode/targets_found"] for h in done],
            label="training episodes (stochastic)",
        )
    if evals:
        axes[1].plot(
            [e["global_step"] for e in evals],
            [e["targets_found"] for e in evals],
            "o-",
            label="validation worlds (deterministic)",
        )
    for (name, m), style in zip(sorted((baselines or {}).items()), ("--", ":"), strict=False):
        axes[1].axhline(m["targets_found"], ls=style, color="gray", label=f"{name} (validation)")
    axes[1].set_title("targets found (fraction)")
    axes[1].legend(fontsize=7)
    steps = [h["global_step"] for h in history]
    axes[2].plot(steps, [h["time/sps"] for h in history], label="env-steps/s (incl. updates)")
    axes[2].set_title("env-steps/s (incl. updates)")
    if history and "time/update_s" in history[-1]:
        ax2 = axes[2].twinx()
        for key, label in (("time/env_s", "env"), ("time/update_s", "update")):
            frac = [h.get(key, 0.0) / max(h["time/iteration_s"], 1e-9) for h in history]
            ax2.plot(steps, frac, lw=0.8, label=f"{label} share of iteration")
        ax2.set_ylim(0, 1)
        ax2.legend(fontsize=7, loc="lower right")
    for ax in axes:
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------- finalize


def _final_policy(exp: Experiment) -> tuple[torch.nn.Module, str]:
    """The policy to deploy and where it came from."""
    cfg = exp.cfg
    if cfg.rl.algorithm == "none":
        model, _ = load_policy(exp.imitation_dir / "best.pt")
        return model, "imitation_model/best.pt"
    if cfg.rl.algorithm.startswith("sb3_"):
        model, _ = load_policy(exp.rl_dir / "final.pt")
        return model, f"rl_model/final.pt ({cfg.rl.algorithm})"
    name = "best.pt" if cfg.rl.keep_best and (exp.rl_dir / "best.pt").is_file() else "final.pt"
    model, _ = load_policy(exp.rl_dir / name)
    return model, f"rl_model/{name}"


def _machine_info(cfg: TrainingConfig) -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": cfg.device,
        "load_avg_1_5_15": [round(x, 2) for x in load],
        "platform": platform.platform(),
    }


def stage_finalize(exp: Experiment) -> dict[str, Any]:
    """Export the final policy, evaluate it on held-out worlds, write README and SUMMARY."""
    cfg, log = exp.cfg, exp.logger("finalize")
    policy, source = _final_policy(exp)
    probe = make_env(cfg.env, cfg.test_seeds()[:1], 1, False, seed=0, device="cpu")
    image_shape = list(probe.image_shape) if probe.image is not None else None
    meta = {
        "task_version": TASK_VERSION,
        "obs_dim": probe.obs_dim,
        "action_dim": 4,
        "image_shape": image_shape,
        "source": source,
        "experiment": exp.root.name,
        "physics_quality": cfg.physics_quality,
        "control_dt_s": cfg.env.task.control_dt_s,
    }
    diffs = export_policy(policy, exp.final_dir, probe.obs_dim, image_shape, meta)
    log.info(
        "exported %s: TorchScript max diff %.2e, ONNX max diff %.2e",
        source,
        diffs["torchscript_max_abs_diff"],
        diffs["onnx_max_abs_diff"],
    )
    write_model_readme(exp.final_dir, exp.root.name, cfg, probe, meta, diffs)

    policies: dict[str, Callable[[ISREnv], Callable[[Any], torch.Tensor]]] = {
        "final": _policy_factory(policy.to(cfg.device)),
    }
    if cfg.rl.pretrained is not None:
        start, _ = load_policy(pretrained_policy_file(cfg.rl.pretrained), cfg.device)
        policies["pretrained"] = _policy_factory(start)
    if cfg.eval.baselines:
        if cfg.rl.algorithm != "none" and (exp.imitation_dir / "best.pt").is_file():
            bc, _ = load_policy(exp.imitation_dir / "best.pt", cfg.device)
            policies["imitation_only"] = _policy_factory(bc)
        policies["scripted_expert"] = lambda env: ScriptedExpert(env)
        seed = cfg.eval.world_seed  # the same random baseline for every experiment
        policies["random"] = lambda env: RandomPolicy(env.num_envs, env.device, seed=seed)
    seeds = cfg.test_seeds()
    results = evaluate(cfg, seeds, policies, cfg.eval.episodes, log, per_episode=True)
    per_ep = {name: r.pop("per_episode") for name, r in results.items()}
    summary = build_summary(exp, results, diffs, source)
    if "scripted_expert" in per_ep:  # the same worlds: world-by-world differences
        summary["paired_vs_expert"] = {
            k: paired_difference(per_ep["final"][k], per_ep["scripted_expert"][k])
            for k in SE_METRICS
        }
    if cfg.rl.pretrained is not None:
        summary["transfer"] = _transfer(cfg, seeds, policies, results, log)
    atomic_write_text(exp.root / "SUMMARY.json", json_dumps(summary, indent=1))
    atomic_write_text(exp.root / "SUMMARY.txt", summary_text(summary))
    log.info("\n%s", summary_text(summary))
    return {"targets_found": results["final"]["targets_found"], **diffs}


def _transfer(
    cfg: TrainingConfig,
    seeds: list[int],
    policies: dict[str, Callable[[ISREnv], Callable[[Any], torch.Tensor]]],
    results: dict[str, dict[str, float]],
    log: logging.Logger,
) -> dict[str, Any]:
    """Transfer ratio of the starting policy and of the final one, on the test worlds.

    Return on this run's vehicle / return on the pretrained run's direct model.
    """
    src = pretrained_policy_file(cfg.rl.pretrained)
    root = src.parent.parent
    direct_cfg = copy.deepcopy(cfg)
    if (root / "config.yaml").is_file():
        direct_cfg.env = copy.deepcopy(
            load_config_file(root / "config.yaml", check_memory=False).env
        )
    direct_cfg.env.vehicle = "direct"
    if direct_cfg.env.dynamics.get("tau_horizontal_s") is None:  # not a direct-model config
        direct_cfg.env.dynamics = {}
    chosen = {k: policies[k] for k in ("pretrained", "final")}
    direct = evaluate(direct_cfg, seeds, chosen, cfg.eval.episodes, log)
    out: dict[str, Any] = {"vehicle": cfg.env.vehicle, "reference": "direct model of " + root.name}
    for when, name in (("before", "pretrained"), ("after", "final")):
        full, ref = results[name]["return"], direct[name]["return"]
        out[when] = {
            "return": full,
            "return_direct": ref,
            "ratio": full / ref if ref else float("nan"),
            "targets_found": results[name]["targets_found"],
            "targets_found_direct": direct[name]["targets_found"],
        }
    log.info(
        "transfer (return %s / direct): before %.3f, after %.3f",
        cfg.env.vehicle, out["before"]["ratio"], out["after"]["ratio"],
    )  # fmt: skip
    return out


def _dagger_text(rounds: list[dict[str, Any]]) -> str:
    """`` + N DAgger rounds (...)`` for the SUMMARY's training line ('' without rounds)."""
    if not rounds:
        return ""
    found = ", ".join(f"{100 * r['learner_targets_found']:.1f}%" for r in rounds)
    return (
        f" + {len(rounds)} DAgger round(s) of as many worlds flown by the clone (targets found "
        f"with action noise: {found})"
    )


def build_summary(
    exp: Experiment, results: dict[str, dict[str, float]], diffs: dict[str, float], source: str
) -> dict[str, Any]:
    """SUMMARY.json content: test metrics vs baselines, task settings, timings, throughput."""
    cfg = exp.cfg
    t = cfg.env.task
    w = cfg.env.world
    stages = {s: exp.stage_info(s) for s in STAGES}
    rl_info = stages.get("rl", {}).get("result", {})
    seeds = cfg.test_seeds()
    return {
        "experiment": exp.root.name,
        "task_version": TASK_VERSION,
        "final_policy": source,
        "evaluation": {
            "world_seeds": [seeds[0], seeds[-1]],
            "num_worlds": len(seeds),
            "episodes_per_world": cfg.eval.episodes,
            "held_out": "test worlds never used for training or validation",
            "deterministic_policy": True,
        },
        "task": {
            "episode_length_s": t.episode_length_s,
            "control_dt_s": t.control_dt_s,
            "world_size_m": [w.size_x_m, w.size_y_m],
            "physics_quality": cfg.physics_quality,
            "vehicle": cfg.env.vehicle,
            "camera": cfg.env.camera,
            "camera_resolution": cfg.env.camera_resolution,
            "drones_per_world_eval": 1,
        },
        "training": {
            "pretrained": cfg.rl.pretrained,
            "demonstration_worlds": cfg.data.num_worlds if cfg.rl.pretrained is None else 0,
            "dagger": stages.get("imitation", {}).get("result", {}).get("dagger", []),
            "rl_worlds": cfg.env.num_worlds,
            "rl_drones_per_world": cfg.env.drones_per_world,
            "rl_algorithm": cfg.rl.algorithm,
            "rl_env_steps": rl_info.get("global_step"),
            "rl_env_steps_per_s_incl_updates": rl_info.get("env_steps_per_s_mean"),
            "rl_ranks": rl_info.get("ranks", 1),
            "rl_backend": rl_info.get("backend"),
            "rl_rank_seeds": rl_info.get("rank_seeds"),
        },
        "results": results,
        "export": diffs,
        "stage_wall_s": {s: stages[s].get("wall_s") for s in STAGES},
        "total_wall_s": sum(stages[s].get("wall_s") or 0.0 for s in STAGES),
        "machine": _machine_info(cfg),
    }


def summary_text(s: dict[str, Any]) -> str:
    """Human-readable SUMMARY.txt."""
    ev, task, tr = s["evaluation"], s["task"], s["training"]
    lines = [
        f"ISR training experiment {s['experiment']}  (task {s['task_version']})",
        f"final policy: {s['final_policy']}",
        "",
        f"Task: {task['episode_length_s']:g} s episodes, control {task['control_dt_s']:g} s, "
        f"{task['world_size_m'][0]:g} x {task['world_size_m'][1]:g} m worlds, physics "
        f"'{task['physics_quality']}' ({task['vehicle']}), camera "
        f"{'on ' + task['camera_resolution'] if task['camera'] else 'off'}",
        f"Evaluation: {ev['num_worlds']} held-out worlds (seeds {ev['world_seeds'][0]}.."
        f"{ev['world_seeds'][1]}), {ev['episodes_per_world']} episode(s) each, one drone per "
        "world, deterministic policy",
        "",
        f"{'policy':<18}{'targets_found':>14}{'(+- s.e.)':>10}{'detected':>10}{'coverage':>10}"
        f"{'return':>9}{'crash_rate':>11}{'interventions':>14}",
    ]
    for name, m in s["results"].items():
        se = m.get("targets_found_se")
        se_text = f"+-{100 * se:.1f}" if isinstance(se, (int, float)) and math.isfinite(se) else "-"
        det = m.get("targets_detected")
        det_text = f"{100 * det:.1f}%" if isinstance(det, (int, float)) else "-"
        lines.append(
            f"{name:<18}{100 * m['targets_found']:>13.1f}%{se_text:>10}{det_text:>10}"
            f"{100 * m['coverage']:>9.1f}%{m['return']:>9.1f}{m['crash_rate']:>11.3f}"
            f"{m['safety_interventions']:>14.1f}"
        )
    lines.append(
        "(+- s.e.: standard error of the mean over the held-out episodes; differences smaller than "
        "about twice it are not resolved by these worlds. detected: targets detected at any range; "
        "found: detected within the class's recognition range)"
    )
    for k, d in (s.get("paired_vs_expert") or {}).items():
        scale = 100.0 if k == "targets_found" else 1.0
        unit = " points" if k == "targets_found" else ""
        lines.append(
            f"final - scripted_expert, paired on the same worlds: {k} {scale * d['mean']:+.1f}"
            f"{unit} +- {scale * d['se']:.1f} (final better on {d['a_better']}, the expert on "
            f"{d['b_better']} of {d['n']} worlds)"
        )
    walls = s["stage_wall_s"]
    sps = tr["rl_env_steps_per_s_incl_updates"] or float("nan")
    lines += [
        "",
        (
            f"Training: continued from {tr['pretrained']}; RL "
            if tr.get("pretrained")
            else f"Training: demonstrations from {tr['demonstration_worlds']} worlds"
            + _dagger_text(tr.get("dagger") or [])
            + "; RL "
        )
        + (
            "none: the exported policy is the imitation policy"
            if tr["rl_algorithm"] == "none"
            else f"({tr['rl_algorithm']}) on {tr['rl_worlds']} worlds x "
            f"{tr['rl_drones_per_world']} drones, {tr['rl_env_steps'] or 0} env steps at "
            f"{sps:.0f} env-steps/s (incl. updates)"
            + (
                f", {tr['rl_ranks']} data-parallel ranks ({tr.get('rl_backend')})"
                if (tr.get("rl_ranks") or 1) > 1
                else ""
            )
        ),
        "Wall time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items() if v is not None)
        + f" (total {s['total_wall_s']:.0f} s, sum of the stages)",
        f"Export check: TorchScript max diff {s['export']['torchscript_max_abs_diff']:.1e}, "
        f"ONNX max diff {s['export']['onnx_max_abs_diff']:.1e}",
        *(
            [
                f"Transfer to {s['transfer']['vehicle']} (return / return on the direct model): "
                f"before fine-tuning {s['transfer']['before']['ratio']:.3f}, after "
                f"{s['transfer']['after']['ratio']:.3f}"
            ]
            if "transfer" in s
            else []
        ),
        f"Machine: {s['machine']['cpu_count']} CPUs, torch {s['machine']['torch']}, "
        f"{s['machine']['torch_threads']} thread(s), device {s['machine']['device']}, load average "
        f"{s['machine']['load_avg_1_5_15']}",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- driver

STAGE_FUNCTIONS: dict[str, Callable[[Experiment], dict[str, Any]]] = {
    "data": stage_data,
    "imitation": stage_imitation,
    "rl": stage_rl,
    "finalize": stage_finalize,
}

_NEEDS: dict[str, tuple[str, ...]] = {
    "data": (),
    "imitation": ("data",),
    "rl": ("imitation",),
    "finalize": ("rl",),
}


def run_pipeline(exp: Experiment, stages: list[str] | None = None) -> dict[str, Any]:
    """Run ``stages`` (default: all) in order; finished stages are skipped, interrupted ones resume.

    Raises ``ValueError`` when a requested stage needs an earlier stage that has not finished.
    """
    todo = list(stages or STAGES)
    for s in todo:
        if s not in STAGES:
            raise ValueError(f"unknown stage '{s}' (choose from {', '.join(STAGES)})")
    _setup_torch(exp.cfg)
    try:
        return _run_stages(exp, todo)
    finally:
        exp.close_logs()


def _run_stages(exp: Experiment, todo: list[str]) -> dict[str, Any]:
    results = {}
    ctx = exp.dist
    for s in STAGES:
        if s not in todo:
            continue
        if ctx.enabled:  # every rank sees the markers rank 0 wrote before going on
            ctx.barrier()
        if not ctx.is_main:  # rank 0 alone runs the other stages and writes the markers
            if s in DATA_PARALLEL_STAGES and not exp.is_done(s):
                results[s] = {"result": STAGE_FUNCTIONS[s](exp)}
            continue
        if exp.is_done(s):
            exp.logger(s).info("already done (marker %s): skipped", exp.marker(s))
            results[s] = exp.stage_info(s)
            continue
        for need in _NEEDS[s]:
            if not exp.is_done(need):
                raise ValueError(
                    f"stage '{s}' needs stage '{need}' to be finished first "
                    f"(missing {exp.marker(need)}); run it with --stage {need}"
                )
        t0 = time.perf_counter()
        started = _dt.datetime.now().isoformat(timespec="seconds")
        result = STAGE_FUNCTIONS[s](exp)
        info = {
            "stage": s,
            "started": started,
            "finished": _dt.datetime.now().isoformat(timespec="seconds"),
            "wall_s": time.perf_counter() - t0,
            "result": result,
        }
        if s == "finalize":  # the summary counts this stage's time too
            _patch_summary_wall(exp, info["wall_s"])
        exp.mark_done(s, info)
        results[s] = info
    if ctx.enabled:
        ctx.barrier()
    return results


def _patch_summary_wall(exp: Experiment, wall_s: float) -> None:
    path = exp.root / "SUMMARY.json"
    if not path.is_file():
        return
    s = read_json_file(path, "experiment summary")
    if not isinstance(s.get("stage_wall_s"), dict):
        raise ConfigError(f"experiment summary {path} has no stage_wall_s object; delete it, rerun")
    s["stage_wall_s"]["finalize"] = wall_s
    s["total_wall_s"] = sum(v or 0.0 for v in s["stage_wall_s"].values())
    atomic_write_text(path, json_dumps(s, indent=1))
    atomic_write_text(exp.root / "SUMMARY.txt", summary_text(s))
