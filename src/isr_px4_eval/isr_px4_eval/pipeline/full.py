"""The one-command workflow ``isr pipeline NAME``: train -> evaluate -> record -> videos -> report.

Everything stays inside one experiment directory.

Stages (:data:`PIPELINE_STAGES`), in order, each with the stages it needs (:data:`NEEDS`):

=========  ==========  ==================================================================
stage      needs       what it writes (under ``experiments/<name>_<YYYYmmdd_HHMMSS>/``)
=========  ==========  ==================================================================
train      -           the training pipeline (:mod:`isr_training.pipeline`: data ->
                       imitation -> rl -> finalize): ``final_model/``, ``SUMMARY.json``...
eval       train       the trained policy, the scripted expert and the random policy on the
                       held-out world seeds, each on the ``embedded`` backend (full
                       fidelity: 6-DoF quadrotor + PX4-like cascade, wind, noise, latency)
                       and on the ``direct`` backend (fast model):
                       ``eval/<policy>_<backend>.json`` (``isr eval --json`` format),
                       ``eval/trained/<backend>.npz`` (per-step recordings of the trained
                       policy), ``eval/summary.json``
parity     eval        direct (reference) vs embedded (candidate) for the trained policy from
                       the two recorded evaluations, as ``isr parity`` does (return ratio,
                       metric deltas, open-loop replay RMSE, checks): ``parity/parity.json``,
                       ``parity/replay.npz``, bags ``bags/parity_direct``,
                       ``bags/parity_embedded`` (the first 4 episodes of each run)
record     train       rosbag2 (MCAP) recordings with camera images, detections, odometry,
                       actions and metrics (:mod:`isr_px4_eval.evidence.recording`): one evaluation
                       episode of the trained policy on the embedded backend
                       (``bags/eval_single``) and ``grid_drones`` (16) drones of the trained
                       policy in one world (``bags/grid_16``)
videos     record      ``videos/single.mp4`` (one drone, camera, boxes, metrics),
                       ``videos/grid.mp4`` (4x4 drone views), ``videos/map.mp4`` (top-down
                       trajectories), ``videos/side_by_side.mp4`` (parity: direct vs
                       embedded with the position error; needs the parity bags)
report     -           ``report.html`` (:mod:`isr_px4_eval.evidence.report`): whatever exists
=========  ==========  ==================================================================

Resuming: a finished stage leaves ``stages/<stage>.done`` (the marker mechanism of
:class:`isr_training.pipeline.Experiment`; ``train`` is done when the four training stages are)
and is skipped; an interrupted one starts again (training resumes from its checkpoints, the eval
stage keeps the runs whose JSON exists, the videos stage keeps the videos that exist). The
pipeline's own options (world seeds, episodes, recording lengths) are stored in
``pipeline.json`` and reused by ``--resume``.

Failures: a stage that raises is recorded (``stages/<stage>.failed`` with the error and the
traceback, ``pipeline.json`` status ``failed``); stages that need it are ``skipped`` and the
others still run, so a failing video never loses the evaluation. The report always renders what
exists and lists what is missing. :func:`run_full_pipeline` returns the status of every stage;
``isr pipeline`` exits with 1 when a stage failed or was skipped.

Progress: an outer bar shows the stage (``pipeline 3/6: parity``) and inner bars the progress
inside it (training's bars, one bar per evaluation run, recording steps, videos).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from isr_direct_dynamics.config import ConfigError, json_dumps
from isr_direct_dynamics.io_checks import atomic_write_text, read_json_file

PIPELINE_STAGES: tuple[str, ...] = ("train", "eval", "parity", "record", "videos", "report")
"""Stages of the full pipeline, in order."""

NEEDS: dict[str, tuple[str, ...]] = {
    "train": (),
    "eval": ("train",),
    "parity": ("eval",),
    "record": ("train",),
    "videos": ("record",),
    "report": (),
}
"""Stages each stage needs finished (``report`` renders whatever exists)."""

EVAL_POLICIES: tuple[str, ...] = ("trained", "scripted_expert", "random")
"""Policies of the eval stage: the trained policy and the two baselines."""

EVAL_BACKENDS: tuple[str, ...] = ("embedded", "direct")
"""Backends of the eval stage: full fidelity first, then the fast model."""

VIDEOS: tuple[tuple[str, str, str, str | None], ...] = (
    ("single", "single", "eval_single", None),
    ("grid", "grid", "grid_16", None),
    ("map", "map", "grid_16", None),
    ("side_by_side", "side-by-side", "parity_direct", "parity_embedded"),
)
"""Videos: (file stem, ``isr video`` mode, bag, second bag) under ``bags/`` and ``videos/``."""

PARITY_BAG_EPISODES = 4
"""Episodes of each parity run converted to a bag (the npz recordings keep all of them)."""

KEY_METRICS: tuple[str, ...] = (
    "return_mean",
    "targets_found_mean",
    "targets_found_std",
    "coverage_mean",
    "success_rate",
    "crash_rate",
    "episodes",
)
"""Metrics copied to ``eval/summary.json`` and printed (the std and episode count give the
standard error of targets found)."""


@dataclass
class PipelineOptions:
    """Options of the stages after training (stored in ``pipeline.json``)."""

    world_seeds: list[int] | None = None
    """Held-out world seeds of evaluation and recording (None: the config's test seeds)."""
    episodes: int = 1
    """Evaluation episodes per drone."""
    seed: int = 0
    """Spawn / noise / wind seed of evaluation and recording (the same on every backend)."""
    record_seconds: float | None = None
    """Length of the single-drone recording, s (None: one whole episode)."""
    grid_seconds: float = 30.0
    """Length of the multi-drone recording, s."""
    grid_drones: int = 16
    """Drones of the multi-drone recording (one world; 16 = the 4x4 grid video)."""
    video_max_frames: int | None = None
    """Cap on the frames of every video (None: every recorded step)."""
    device: str = "cpu"
    """Torch device of evaluation and recording."""

    def validate(self) -> None:
        """Check ranges; raises ConfigError naming the option."""
        if self.episodes < 1:
            raise ConfigError(f"--episodes must be >= 1, got {self.episodes}")
        if not 1 <= self.grid_drones <= 32:
            raise ConfigError(f"--grid-drones must be in 1..32, got {self.grid_drones}")
        for name in ("record_seconds", "grid_seconds"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {v}")
        if self.video_max_frames is not None and self.video_max_frames < 1:
            raise ConfigError(f"--video-max-frames must be >= 1, got {self.video_max_frames}")
        if self.world_seeds is not None and not self.world_seeds:
            raise ConfigError("--world-seeds is empty")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineOptions:
        """Options from ``pipeline.json`` (unknown keys are an error naming them)."""
        names = {f.name for f in fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise ConfigError(f"pipeline.json: unknown option(s) {', '.join(bad)}")
        return cls(**d)


# ------------------------------------------------------------------------------------ context


class PipelineRun:
    """One run of the full pipeline over an experiment directory (see the module docstring)."""

    def __init__(self, exp: Any, options: PipelineOptions, progress: bool = True) -> None:
        self.exp = exp
        self.options = options
        self.progress = progress
        self.root = Path(exp.root)
        self.eval_dir = self.root / "eval"
        self.parity_dir = self.root / "parity"
        self.bags_dir = self.root / "bags"
        self.videos_dir = self.root / "videos"
        self.status: dict[str, dict[str, Any]] = {}
        self._policy = None
        self._log = None

    # -- helpers --------------------------------------------------------------------------------

    @property
    def seeds(self) -> list[int]:
        """Evaluation world seeds."""
        return list(self.options.world_seeds or self.exp.cfg.test_seeds())

    def settings(self, drones_per_world: int = 1):
        """The evaluation settings (``config/eval.yaml`` with this run's options)."""
        from isr_px4_eval.evaluation.run import load_settings

        s = load_settings()
        s.episodes = self.options.episodes
        s.seed = self.options.seed
        s.drones_per_world = drones_per_world
        s.validate()
        return s

    def policy(self):
        """The trained policy (``final_model/`` of the experiment), loaded once."""
        from isr_training.export import load_policy_file

        if self._policy is None:
            self._policy = load_policy_file(self.root)
        return self._policy

    def bar(self, **kwargs: Any):
        """A progress bar (inner: it disappears when done)."""
        from tqdm import tqdm

        kwargs.setdefault("leave", False)
        return tqdm(disable=not self.progress, dynamic_ncols=True, file=sys.stderr, **kwargs)

    @property
    def log(self):
        """Logger of the running stage (``logs/pipeline_<stage>.log`` and the console)."""
        return self._log

    def is_done(self, stage: str) -> bool:
        """Whether ``stage`` finished (train: the four training stages)."""
        if stage == "train":
            from isr_training.pipeline import STAGES

            return all(self.exp.is_done(s) for s in STAGES)
        return self.exp.is_done(stage)

    def failed_marker(self, stage: str) -> Path:
        """``stages/<stage>.failed``."""
        return self.exp.stages_dir / f"{stage}.failed"

    def write_status(self) -> None:
        """``pipeline.json``: options, stage status, paths."""
        data = {
            "options": asdict(self.options),
            "stages": self.status,
            "paths": self.paths(),
            "updated": _dt.datetime.now().isoformat(timespec="seconds"),
        }
        _atomic_write(self.root / "pipeline.json", json_dumps(data, indent=1, default=str))

    def paths(self) -> dict[str, Any]:
        """Where the model, evaluation, parity, bags, videos and report are (existing only)."""
        r = self.root
        out: dict[str, Any] = {"experiment": str(r)}
        model = r / "final_model" / "policy_torchscript.pt"
        if model.is_file():
            out["model"] = str(model)
        for key, p in (
            ("eval", self.eval_dir / "summary.json"),
            ("parity", self.parity_dir / "parity.json"),
            ("report", r / "report.html"),
        ):
            if p.is_file():
                out[key] = str(p)
        bags = sorted(p for p in self.bags_dir.glob("*") if p.is_dir())
        out["bags"] = [str(p) for p in bags]
        vids = sorted(self.videos_dir.glob("*.mp4")) if self.videos_dir.is_dir() else []
        out["videos"] = [str(p) for p in vids if ".partial" not in p.name]
        return out

    # -- driver ---------------------------------------------------------------------------------

    def run(self, stages: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Run ``stages`` (default: all) in order; returns the status of every stage."""
        from tqdm import tqdm

        todo = list(stages or PIPELINE_STAGES)
        for s in todo:
            if s not in PIPELINE_STAGES:
                raise ConfigError(
                    f"unknown pipeline stage '{s}' (choose from {', '.join(PIPELINE_STAGES)})"
                )
        ran_something = False
        outer = tqdm(
            total=len(todo),
            desc="pipeline",
            unit="stage",
            disable=not self.progress,
            dynamic_ncols=True,
            file=sys.stderr,
            position=0,
        )
        try:
            for i, stage in enumerate(todo):
                outer.set_description(f"pipeline {i + 1}/{len(todo)}: {stage}")
                outer.refresh()
                status = self._run_stage(stage, force=stage == "report" and ran_something)
                ran_something |= status["status"] in ("done", "failed") and not status.get(
                    "skipped_done"
                )
                self.status[stage] = status
                self.write_status()
                outer.update(1)
        finally:
            outer.close()
            self._close_logs()
        self.write_status()
        return self.status

    def _run_stage(self, stage: str, force: bool = False) -> dict[str, Any]:
        self._log = self.exp.logger(f"pipeline_{stage}")
        if self.is_done(stage) and not force:
            self._log.info("already done: skipped")
            info = self.exp.stage_info(stage) if stage != "train" else {}
            return {"status": "done", "skipped_done": True, "wall_s": info.get("wall_s")}
        missing = [n for n in NEEDS[stage] if not self.is_done(n)]
        if missing:
            why = ", ".join(
                f"'{n}' ({self.status.get(n, {}).get('status', 'not finished')})" for n in missing
            )
            self._log.warning("skipped: needs stage %s", why)
            return {"status": "skipped", "reason": f"needs stage {why}"}
        t0 = time.perf_counter()
        started = _dt.datetime.now().isoformat(timespec="seconds")
        try:
            result = STAGE_FUNCTIONS[stage](self) or {}
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed stage is recorded, the rest runs
            wall = time.perf_counter() - t0
            err = f"{exc.__class__.__name__}: {exc}"
            self._log.error("FAILED after %.1f s: %s", wall, err)
            info = {
                "stage": stage,
                "started": started,
                "wall_s": wall,
                "error": err,
                "traceback": traceback.format_exc(),
            }
            _atomic_write(self.failed_marker(stage), json_dumps(info, indent=1, default=str))
            return {"status": "failed", "wall_s": wall, "error": err}
        wall = time.perf_counter() - t0
        info = {
            "stage": stage,
            "started": started,
            "finished": _dt.datetime.now().isoformat(timespec="seconds"),
            "wall_s": wall,
            "result": result,
        }
        if stage != "train":
            self.exp.mark_done(stage, json.loads(json_dumps(info, default=str)))
        self.failed_marker(stage).unlink(missing_ok=True)
        self._log.info("done in %.1f s", wall)
        return {"status": "done", "wall_s": wall}

    def _close_logs(self) -> None:
        import logging

        for stage in PIPELINE_STAGES:
            log = logging.getLogger(f"isr_training.pipeline.{self.root.name}.pipeline_{stage}")
            for h in list(log.handlers):
                log.removeHandler(h)
                h.close()
        self.exp.close_logs()


def _atomic_write(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _read_result(path: Path, what: str) -> dict[str, Any]:
    """A JSON result this pipeline wrote; damaged: a ConfigError naming it and the fix."""
    try:
        return read_json_file(path, what)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; delete it and resume to write it again") from None


# ------------------------------------------------------------------------------------- stages


def stage_train(run: PipelineRun) -> dict[str, Any]:
    """The training pipeline (skips its finished stages, resumes interrupted ones)."""
    from isr_training.pipeline import run_pipeline

    run.exp.cfg.progress = run.progress and run.exp.cfg.progress
    results = run_pipeline(run.exp)
    return {s: {"wall_s": r.get("wall_s")} for s, r in results.items()}


def evaluate_baseline(
    name: str,
    reference,
    backend: str,
    seeds: list[int],
    settings,
    device: str = "cpu",
    progress: bool = False,
    random_seed: int = 0,
) -> dict[str, Any]:
    """Evaluate the ``scripted_expert`` or ``random`` baseline like ``isr eval`` evaluates a policy.

    ``reference`` (a :class:`~isr_training.export.LoadedPolicy`) defines the environment
    (its experiment's task, world spec and camera), so the baseline flies the same worlds, spawns
    and vehicle as the policy it is compared with. Returns the result dict of
    :func:`~isr_px4_eval.evaluation.run.evaluate_policy` (no recording).
    """
    import os

    import torch

    from isr_px4_eval.evaluation.run import (
        aggregate_metrics,
        build_env_config,
        make_eval_env,
        run_episodes,
    )
    from isr_training.baselines import RandomPolicy, ScriptedExpert

    cfg = build_env_config(reference, backend, seeds, settings)
    env = make_eval_env(cfg, device)
    if name == "scripted_expert":
        act: Callable[[Any], Any] = ScriptedExpert(env)
    elif name == "random":
        act = RandomPolicy(env.num_envs, env.device, seed=random_seed)
    else:
        raise ConfigError(f"unknown baseline '{name}' (choose scripted_expert or random)")
    with torch.no_grad():
        rows, timing, _ = run_episodes(
            env, act, settings.episodes, progress=progress, seed=settings.seed
        )
    from isr_direct_dynamics.config import to_dict

    return {
        "backend": backend,
        "perception": cfg.perception,
        "policy": {"path": f"baseline:{name}", "kind": "baseline", "meta": {"baseline": name}},
        "world_seeds": list(seeds),
        "settings": {
            **to_dict(settings),
            "vehicle": cfg.vehicle,
            "vehicle_config": cfg.dynamics,
            "control_dt_s": cfg.task.control_dt_s,
            "episode_length_s": cfg.task.episode_length_s,
            "camera": cfg.camera,
            "camera_resolution": cfg.camera_resolution,
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "load_avg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "metrics": aggregate_metrics(rows, settings.success_min_targets_found),
        "real_time_factor": timing,
        "episodes": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
    }


def stage_eval(run: PipelineRun) -> dict[str, Any]:
    """Trained policy, scripted expert and random policy on both backends (held-out worlds)."""
    from isr_px4_eval.evaluation.run import check_finite_actions, evaluate_policy, write_json

    policy = run.policy()
    settings = run.settings()
    seeds = run.seeds
    run.eval_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(p, b) for p in EVAL_POLICIES for b in EVAL_BACKENDS]
    summary: dict[str, dict[str, Any]] = {}
    bar = run.bar(total=len(jobs), desc="eval", unit="run")
    for name, backend in jobs:
        out = run.eval_dir / f"{name}_{backend}.json"
        bar.set_postfix_str(f"{name} on {backend}, {len(seeds)} worlds")
        if out.is_file():
            result = _read_result(out, "evaluation result")
            run.log.info("%s on %s: kept %s", name, backend, out.name)
        else:
            t0 = time.perf_counter()
            if name == "trained":
                result = evaluate_policy(
                    policy,
                    backend,
                    seeds,
                    settings,
                    record_dir=run.eval_dir / "trained",
                    device=run.options.device,
                    progress=run.progress,
                )
            else:
                result = evaluate_baseline(
                    name,
                    policy,
                    backend,
                    seeds,
                    settings,
                    device=run.options.device,
                    progress=run.progress,
                    random_seed=run.exp.cfg.eval.world_seed,
                )
            write_json(result, out)
            check_finite_actions(result, settings.max_nonfinite_action_fraction)
            m = result["metrics"]
            run.log.info(
                "%-16s %-8s return %7.1f  targets found %.3f  coverage %.3f  success %.2f  "
                "crash %.2f  (%.0f s)",
                name,
                backend,
                m["return_mean"],
                m["targets_found_mean"],
                m["coverage_mean"],
                m["success_rate"],
                m["crash_rate"],
                time.perf_counter() - t0,
            )
        summary.setdefault(name, {})[backend] = {
            **{k: result["metrics"].get(k) for k in KEY_METRICS},
            "real_time_factor_aggregate": (result.get("real_time_factor") or {}).get("aggregate"),
            "json": out.name,
        }
        bar.update(1)
    bar.close()
    data = {
        "world_seeds": seeds,
        "episodes_per_world": settings.episodes,
        "seed": settings.seed,
        "held_out": _held_out_note(run.exp.cfg, seeds),
        "results": summary,
    }
    _atomic_write(run.eval_dir / "summary.json", json_dumps(data, indent=1, default=_json_num))
    run.log.info("\n%s", format_eval_summary(data))
    return {"worlds": len(seeds), "runs": len(jobs)}


def _json_num(v: Any) -> Any:
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return str(v)


def _held_out_note(cfg: Any, seeds: list[int]) -> str:
    s = set(seeds)
    if s & set(cfg.training_seeds()):
        return "WARNING: overlaps the training worlds"
    if s & set(cfg.validation_seeds()):
        return "WARNING: overlaps the validation worlds"
    return "never used for training or validation"


def format_eval_summary(data: dict[str, Any]) -> str:
    """Table of ``eval/summary.json``: every policy on every backend."""
    lines = [
        f"{'policy':<17}{'backend':<10}{'return':>9}{'found':>8}{'+-s.e.':>8}{'coverage':>10}"
        f"{'success':>9}{'crash':>7}"
    ]

    def f(v: Any, fmt: str) -> str:
        return format("-", f">{fmt.split('.')[0]}") if v is None else format(v, fmt)

    def se(m: dict[str, Any]) -> float | None:
        """Standard error of the mean targets found over the episodes."""
        std, n = m.get("targets_found_std"), m.get("episodes")
        if std is None or not n or n < 2:
            return None
        return std * math.sqrt(n / (n - 1)) / math.sqrt(n)

    for name, by in data["results"].items():
        for backend, m in by.items():
            lines.append(
                f"{name:<17}{backend:<10}{f(m.get('return_mean'), '9.1f')}"
                f"{f(m.get('targets_found_mean'), '8.3f')}{f(se(m), '8.3f')}"
                f"{f(m.get('coverage_mean'), '10.3f')}"
                f"{f(m.get('success_rate'), '9.2f')}{f(m.get('crash_rate'), '7.2f')}"
            )
    return "\n".join(lines)


def stage_parity(run: PipelineRun) -> dict[str, Any]:
    """Direct vs embedded for the trained policy, from the eval stage's two recorded runs."""
    from isr_px4_eval.evaluation.parity import (
        compare_results,
        format_parity,
        load_tolerances,
        replay_open_loop,
    )
    from isr_px4_eval.evaluation.run import build_env_config, write_json
    from isr_px4_eval.evidence.npz import npz_to_bag

    tol = load_tolerances()
    tol.validate()
    policy = run.policy()
    settings = run.settings()
    runs = {}
    for role, backend in (("reference", "direct"), ("candidate", "embedded")):
        res_path = run.eval_dir / f"trained_{backend}.json"
        npz = run.eval_dir / "trained" / f"{backend}.npz"
        for p in (res_path, npz):
            if not p.is_file():
                raise FileNotFoundError(f"parity needs {p} (written by the eval stage)")
        res = _read_result(res_path, "evaluation result")
        with np.load(npz, allow_pickle=False) as z:
            res["_arrays"] = {k: z[k] for k in z.files if k != "meta_json"}
        res["_env_config"] = build_env_config(policy, backend, res["world_seeds"], settings)
        res["_npz"] = npz
        runs[role] = res
    ref, cand = runs["reference"], runs["candidate"]
    replay = replay_open_loop(
        ref["_arrays"],
        ref["_env_config"],
        cand["_env_config"],
        tol.replay_seconds,
        seed=settings.seed,
        device=run.options.device,
    )
    run.parity_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(run.parity_dir / "replay.npz", **replay)
    bags = {}
    for role, res in runs.items():
        bag = run.bags_dir / f"parity_{res['backend']}"
        if bag.exists():
            shutil.rmtree(bag)
        first = run.parity_dir / f"{role}_{res['backend']}_first{PARITY_BAG_EPISODES}.npz"
        _first_episodes(res["_npz"], first, PARITY_BAG_EPISODES)
        npz_to_bag(
            first,
            bag,
            test_name=f"parity {role}: {res['backend']} ({run.root.name})",
            phase="2",
        )
        bags[role] = str(bag)
    report = {
        "reference": "direct",
        "candidate": "embedded",
        "policy": ref["policy"],
        "world_seeds": ref["world_seeds"],
        "tolerances": {k: getattr(tol, k) for k in tol.__dataclass_fields__},
        **compare_results(ref, cand, replay, tol),
        "reference_result": ref,
        "candidate_result": cand,
        "recordings": [str(ref["_npz"]), str(cand["_npz"]), str(run.parity_dir / "replay.npz")],
        "bags": bags,
    }
    write_json(report, run.parity_dir / "parity.json")
    run.log.info("\n%s", format_parity(report))
    return {"passed": report["passed"], "return_ratio": report["return_ratio"]}


def _first_episodes(src: Path, dst: Path, count: int) -> Path:
    """Copy of an evaluation recording (``.npz``) with its first ``count`` episodes only."""
    with np.load(src, allow_pickle=False) as z:
        e = len(z["length"])
        per_episode = {k for k in z.files if k not in ("control_dt_s", "image_size", "meta_json")}
        arrays = {
            k: z[k][:count] if k in per_episode and z[k].ndim and z[k].shape[0] == e else z[k]
            for k in z.files
        }
    np.savez_compressed(dst, **arrays)
    return dst


def _record(run: PipelineRun, env: Any, steps: int, path: Path, test_name: str, phase: str) -> Path:
    """Reset ``env``, fly the trained policy ``steps`` steps, record the bag (with a bar)."""
    import torch

    from isr_px4_eval.evidence.recording import EnvRecorder

    if path.exists():  # a bag cut short by an earlier interruption
        shutil.rmtree(path)
    act = run.policy().act
    rec = EnvRecorder(env, path, test_name=test_name, phase=phase)
    bar = run.bar(total=steps, desc=f"record {path.name}", unit="step")
    try:
        obs = env.reset(seed=run.options.seed)
        rec.record_reset()
        with torch.no_grad():
            for _ in range(steps):
                action = act(obs)
                obs, reward, term, trunc, info = env.step(action)
                rec.record_step(action, reward, term, trunc, info)
                bar.update(1)
    finally:
        bar.close()
        rec.close()
    return rec.path


def stage_record(run: PipelineRun) -> dict[str, Any]:
    """Bags: one evaluation episode (one drone) and ``grid_drones`` drones in one world."""
    from isr_px4_eval.evaluation.run import build_env_config, make_eval_env

    policy = run.policy()
    seed0 = run.seeds[:1]
    out = {}
    for key, drones, seconds, phase, label in (
        ("eval_single", 1, run.options.record_seconds, "4", "trained policy, full fidelity"),
        (
            f"grid_{run.options.grid_drones}",
            run.options.grid_drones,
            run.options.grid_seconds,
            "3",
            f"{run.options.grid_drones} drones, trained policy, full fidelity",
        ),
    ):
        cfg = build_env_config(policy, "embedded", seed0, run.settings(drones))
        cfg.camera = True  # images for the videos; the state observation is unchanged
        env = make_eval_env(cfg, run.options.device)
        dt = env.task.control_dt_s
        steps = env.max_episode_steps if seconds is None else max(1, round(seconds / dt))
        t0 = time.perf_counter()
        path = _record(run, env, steps, run.bags_dir / key, f"{run.root.name}: {label}", phase)
        wall = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        run.log.info(
            "%s: %d drones x %d steps (%s camera) in %.1f s, %.1f MB",
            path.name,
            env.num_envs,
            steps,
            cfg.camera_resolution,
            wall,
            size / 1e6,
        )
        out[key] = {"drones": env.num_envs, "steps": steps, "wall_s": wall, "bytes": size}
    return out


def stage_videos(run: PipelineRun) -> dict[str, Any]:
    """The four videos; existing ones are kept; every video is tried, then failures raise."""
    from isr_px4_eval.evidence.video import make_video

    run.videos_dir.mkdir(parents=True, exist_ok=True)
    for stale in run.videos_dir.glob("*.partial.mp4"):
        stale.unlink()
    grid_bag = f"grid_{run.options.grid_drones}"
    made, errors = {}, {}
    bar = run.bar(total=len(VIDEOS), desc="videos", unit="video")
    for stem, mode, bag, bag2 in VIDEOS:
        bag = grid_bag if bag == "grid_16" else bag
        out = run.videos_dir / f"{stem}.mp4"
        bar.set_postfix_str(stem)
        if out.is_file():
            made[stem] = {"path": str(out), "kept": True}
            bar.update(1)
            continue
        b1 = run.bags_dir / bag
        b2 = run.bags_dir / bag2 if bag2 else None
        try:
            for b in (b1, b2):
                if b is not None and not b.exists():
                    need = "parity" if b.name.startswith("parity_") else "record"
                    raise FileNotFoundError(f"bag {b} not found (made by the {need} stage)")
            tmp = run.videos_dir / f"{stem}.partial.mp4"
            r = make_video(b1, tmp, mode=mode, bag2=b2, max_frames=run.options.video_max_frames)
            tmp.replace(out)
            made[stem] = {"path": str(out), "frames": r.frames, "size": [r.width, r.height],
                          "seconds": r.seconds}  # fmt: skip
            run.log.info(
                "%s: %d frames %dx%d (%s) in %.1f s", out.name, r.frames, r.width, r.height,
                mode, r.seconds,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - try the other videos first
            errors[stem] = f"{exc.__class__.__name__}: {exc}"
            run.log.error("%s: %s", stem, errors[stem])
        bar.update(1)
    bar.close()
    if errors:
        raise RuntimeError(
            f"{len(errors)} of {len(VIDEOS)} videos failed ("
            + "; ".join(f"{k}: {v}" for k, v in errors.items())
            + f"); made: {', '.join(made) or 'none'}"
        )
    return made


def stage_report(run: PipelineRun) -> dict[str, Any]:
    """``report.html`` of everything in the experiment directory."""
    from isr_px4_eval.evidence.report import make_report

    run.write_status()  # the report reads pipeline.json
    path, missing = make_report(run.root)
    for m in missing:
        run.log.info("report: missing %s", m)
    return {"path": str(path), "missing": missing}


STAGE_FUNCTIONS: dict[str, Callable[[PipelineRun], dict[str, Any]]] = {
    "train": stage_train,
    "eval": stage_eval,
    "parity": stage_parity,
    "record": stage_record,
    "videos": stage_videos,
    "report": stage_report,
}


# ------------------------------------------------------------------------------------ driver


def load_options(root: Path) -> PipelineOptions | None:
    """Options stored in ``<root>/pipeline.json`` (None when absent)."""
    p = Path(root) / "pipeline.json"
    if not p.is_file():
        return None
    try:
        data = read_json_file(p, "pipeline status")
    except ConfigError as exc:
        raise ConfigError(f"{exc}; delete it to start its stages anew") from None
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(
            f"pipeline status {p}: 'options' is not an object; delete it to start its stages anew"
        )
    return PipelineOptions.from_dict(dict(options))


def open_experiment(root: str | Path):
    """Open an experiment directory for ``--resume``; clear errors for a missing/partial one."""
    from isr_training.pipeline import Experiment

    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"--resume: experiment directory not found: {root}")
    if not root.is_dir():
        raise ConfigError(f"--resume: {root} is not a directory")
    if not (root / "config.yaml").is_file():
        listing = ", ".join(sorted(p.name for p in root.iterdir())[:10]) or "nothing"
        raise ConfigError(
            f"--resume: {root} is not an experiment directory: it has no config.yaml (it holds: "
            f"{listing}); start a new run with `isr pipeline NAME`"
        )
    return Experiment.open(root)


def check_seeds(cfg: Any, seeds: list[int] | None) -> None:
    """Evaluation seeds must be held out: not training, not validation worlds."""
    if seeds is None:
        return
    s = set(seeds)
    for what, other in (
        ("training", cfg.training_seeds()),
        ("validation", cfg.validation_seeds()),
    ):
        both = sorted(s & set(other))
        if both:
            raise ConfigError(
                f"--world-seeds must be held-out worlds: {both[:5]} are {what} worlds of this "
                "experiment"
            )


def run_full_pipeline(
    exp: Any,
    options: PipelineOptions,
    stages: list[str] | None = None,
    progress: bool = True,
) -> PipelineRun:
    """Run the pipeline over ``exp`` (an :class:`isr_training.pipeline.Experiment`)."""
    options.validate()
    check_seeds(exp.cfg, options.world_seeds)
    from isr_direct_dynamics.threads import configure_threads

    configure_threads(exp.cfg.threads)
    run = PipelineRun(exp, options, progress=progress)
    run.run(stages)
    return run


def final_text(run: PipelineRun, wall_s: float) -> str:
    """What the pipeline prints at the end: status, metrics, parity, where everything is."""
    lines = [f"pipeline {run.root.name}: {wall_s:.0f} s"]
    for stage in PIPELINE_STAGES:
        st = run.status.get(stage)
        if st is None:
            continue
        extra = ""
        if st.get("skipped_done"):
            extra = " (already done)"
        elif st.get("wall_s") is not None:
            extra = f" ({st['wall_s']:.0f} s)"
        why = st.get("error") or st.get("reason")
        lines.append(f"  {stage:<8}{st['status']}{extra}{': ' + why if why else ''}")
    summary = run.eval_dir / "summary.json"
    if summary.is_file():
        data = _read_result(summary, "evaluation summary")
        lines += ["", f"evaluation on {len(data['world_seeds'])} held-out worlds:"]
        lines += ["  " + x for x in format_eval_summary(data).splitlines()]
    parity = run.parity_dir / "parity.json"
    if parity.is_file():
        p = _read_result(parity, "parity report")
        failed = [c["name"] for c in p["checks"] if not c["passed"]]
        lines.append(
            f"parity (embedded vs direct): return ratio {p['return_ratio']:.3f}, "
            f"{'PASS' if p['passed'] else 'FAIL (' + ', '.join(failed) + ')'}"
        )
    paths = run.paths()
    lines += ["", f"experiment: {paths['experiment']}"]
    if "model" in paths:
        lines.append(f"model:      {paths['model']} (also policy.onnx, policy.pt)")
    for key in ("eval", "parity"):
        if key in paths:
            lines.append(f"{key + ':':<12}{paths[key]}")
    if paths["bags"]:
        names = ", ".join(Path(b).name for b in paths["bags"])
        lines.append(f"bags:       {run.bags_dir} ({names})")
    for k, v in enumerate(paths["videos"]):
        lines.append(f"{'videos:' if k == 0 else '':<12}{v}")
    if "report" in paths:
        lines.append(f"report:     {paths['report']}")
    return "\n".join(lines)


__all__ = [
    "EVAL_BACKENDS",
    "EVAL_POLICIES",
    "NEEDS",
    "PIPELINE_STAGES",
    "PipelineOptions",
    "PipelineRun",
    "check_seeds",
    "evaluate_baseline",
    "final_text",
    "load_options",
    "open_experiment",
    "run_full_pipeline",
]
