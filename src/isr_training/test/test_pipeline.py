"""The staged training pipeline end to end at a tiny scale; resume after SIGKILL; the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from isr_training.models import safe_load
from isr_training.pipeline import Experiment, resolve_config, run_pipeline
from isr_training.testing import TINY_PIPELINE
from isr_training.training_cli import main as train_main

# TorchScript is deprecated in torch 2.x but is one of the required export formats.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.jit")

TINY = list(TINY_PIPELINE)


@pytest.mark.integration
def test_tiny_end_to_end_run_produces_the_experiment_layout(tmp_path):
    overrides = [*TINY, "rl.ppo.total_timesteps=256", "rl.eval_every_iterations=2"]
    cfg = resolve_config("quick", overrides)
    exp = Experiment.create(cfg, tmp_path)
    assert exp.root.name.startswith("quick_") and len(exp.root.name) == len("quick_") + 15
    run_pipeline(exp)
    root = exp.root
    for rel in (
        "config.yaml",
        "data/demonstrations.pt",
        "imitation_model/best.pt",
        "imitation_model/final.pt",
        "imitation_model/training_history.png",
        "rl_model/final.pt",
        "rl_model/best.pt",
        "rl_model/checkpoints/latest.pt",
        "rl_model/learning_curve.png",
        "logs/data.log",
        "logs/imitation.log",
        "logs/rl.log",
        "logs/finalize.log",
        "final_model/policy_torchscript.pt",
        "final_model/policy.onnx",
        "final_model/policy.pt",
        "final_model/README.md",
        "SUMMARY.json",
        "SUMMARY.txt",
    ):
        assert (root / rel).is_file(), rel
    assert any((root / "rl_model/tensorboard").iterdir())
    assert len(list((root / "rl_model/checkpoints").glob("iter_*.pt"))) == 2
    for stage in ("data", "imitation", "rl", "finalize"):
        assert exp.is_done(stage)
    summary = json.loads((root / "SUMMARY.json").read_text())
    assert set(summary["results"]) == {"final", "imitation_only", "scripted_expert", "random"}
    assert summary["export"]["torchscript_max_abs_diff"] < 1e-5
    assert summary["export"]["onnx_max_abs_diff"] < 1e-5
    assert summary["evaluation"]["world_seeds"] == [100000, 100001]
    assert summary["stage_wall_s"]["finalize"] is not None
    assert "random" in (root / "SUMMARY.txt").read_text()
    readme = (root / "final_model/README.md").read_text()
    assert "isr-search-v2" in readme and "remembered leads" in readme and "torch.jit.load" in readme
    # the resolved config reloads to the same config; finished stages are skipped
    again = Experiment.open(root)
    assert again.cfg == cfg
    t0 = time.perf_counter()
    run_pipeline(again)
    assert time.perf_counter() - t0 < 5.0
    # the deployed TorchScript policy flies the real env
    ts = torch.jit.load(str(root / "final_model/policy_torchscript.pt"))
    from isr_training.pipeline import make_env

    env = make_env(cfg.env, [100000], 1, False, 0, "cpu")
    action = ts(env.reset())
    assert action.shape == (1, 4) and action.abs().max() <= 1
    # continued on the full-fidelity quadrotor (rl.pretrained): no data or imitation stage, PPO
    # starts from the trained actor/critic/normalizer, SUMMARY gives the transfer before/after
    ft_cfg = resolve_config(
        "quick",
        [*TINY, "rl.ppo.total_timesteps=128", "rl.eval_every_iterations=0",
         "physics_quality=medium", "eval.baselines=false", f"rl.pretrained={root}"],
    )  # fmt: skip
    ft = Experiment.create(ft_cfg, tmp_path / "finetune")
    run_pipeline(ft)
    assert ft.stage_info("data")["result"]["skipped"] == "rl.pretrained"
    assert not (ft.root / "data/demonstrations.pt").exists()
    s = json.loads((ft.root / "SUMMARY.json").read_text())
    assert set(s["results"]) == {"final", "pretrained"} and s["task"]["vehicle"] == "quadrotor"
    for when in ("before", "after"):
        t = s["transfer"][when]
        assert t["ratio"] == pytest.approx(t["return"] / t["return_direct"])
    assert s["transfer"]["before"]["return"] == pytest.approx(s["results"]["pretrained"]["return"])
    assert "Transfer to quadrotor" in (ft.root / "SUMMARY.txt").read_text()
    # the validation before any update is the pretrained policy's, on the quadrotor
    from isr_training.models import load_policy
    from isr_training.pipeline import _policy_factory, evaluate

    first_val = json.loads((ft.root / "rl_model/history.json").read_text())["evals"][0]
    start, _ = load_policy(root / "rl_model/best.pt")
    again = evaluate(ft_cfg, ft_cfg.validation_seeds(), {"p": _policy_factory(start)})["p"]
    assert first_val["global_step"] == 0
    assert first_val["return"] == pytest.approx(again["return"], rel=1e-5, abs=1e-4)
    with pytest.raises(FileNotFoundError, match="no rl_model/best.pt"):
        run_pipeline(
            Experiment.create(
                resolve_config("quick", [*TINY, f"rl.pretrained={tmp_path}"]), tmp_path / "x"
            )
        )


@pytest.mark.integration
def test_a_stage_needs_the_stages_before_it(tmp_path):
    exp = Experiment.create(resolve_config("quick", TINY), tmp_path)
    with pytest.raises(ValueError, match="needs stage 'data'"):
        run_pipeline(exp, ["imitation"])


@pytest.mark.integration
def test_rl_resumes_after_sigkill(tmp_path):
    per_iter = 16 * 4
    cfg = resolve_config(
        "quick", [*TINY, f"rl.ppo.total_timesteps={per_iter * 60}", "rl.eval_every_iterations=0"]
    )
    exp = Experiment.create(cfg, tmp_path)
    run_pipeline(exp, ["data", "imitation"])
    latest = exp.checkpoint_dir / "latest.pt"
    cmd = [sys.executable, "-m", "isr_training.training_cli", "--resume", str(exp.root)]
    proc = subprocess.Popen(
        [*cmd, "--stage", "rl", "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    killed_at = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if latest.is_file():
                it = int(safe_load(latest)["ppo"]["iteration"])
                if it >= 3:
                    proc.send_signal(signal.SIGKILL)
                    killed_at = it
                    break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert killed_at is not None, "training finished or stalled before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    assert not exp.is_done("rl")
    ck = safe_load(latest)  # the checkpoint is whole after kill -9
    resumed_from = int(ck["ppo"]["iteration"])
    assert resumed_from >= killed_at
    # a kill during a checkpoint write may leave its temporary file; reopening deletes it (and
    # any other stale one, e.g. of a writer that died long ago), never a live writer's
    dead = exp.checkpoint_dir / ".iter_000099.pt.999999999-0badc0de.tmp"
    dead.write_bytes(b"torn")
    exp = Experiment.open(exp.root)
    assert not [p for p in exp.checkpoint_dir.iterdir() if p.name.endswith(".tmp")]
    run_pipeline(exp, ["rl"])
    assert exp.is_done("rl")
    log = (exp.logs_dir / "rl.log").read_text()
    assert f"resumed from {latest} at iteration {resumed_from}" in log
    history = json.loads((exp.rl_dir / "history.json").read_text())["history"]
    assert [h["iteration"] for h in history] == list(range(1, 61))
    assert history[-1]["global_step"] == per_iter * 60


@pytest.mark.unit
def test_cli_reports_config_errors_and_prints_the_config(tmp_path, capsys):
    rc = train_main(["--preset", "quick", "--set", "rl.ppo.lerning_rate=1",
                     "--output-dir", str(tmp_path)])  # fmt: skip
    assert rc == 2
    assert "rl.ppo.lerning_rate" in capsys.readouterr().err
    assert not list(Path(tmp_path).iterdir())
    assert train_main(["--preset", "quick", "--set", "rl.ppo.learning_rate=3e-4",
                       "--print-config"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "learning_rate: 0.0003" in out and "physics_quality: fast" in out
    rc = train_main(["--resume", str(tmp_path), "--set", "seed=1"])
    assert rc == 2 and "--resume" in capsys.readouterr().err


@pytest.mark.integration
def test_sb3_ppo_pipeline_exports_like_the_own_ppo(tmp_path):
    overrides = [
        *TINY,
        "rl.algorithm=sb3_ppo",
        "rl.sb3_total_timesteps=128",
        "rl.sb3.n_steps=16",
        "rl.sb3.batch_size=32",
        "rl.sb3.hidden_sizes=[32,32]",
        "eval.baselines=false",
    ]
    exp = Experiment.create(resolve_config("quick", overrides), tmp_path)
    run_pipeline(exp)
    summary = json.loads((exp.root / "SUMMARY.json").read_text())
    assert set(summary["results"]) == {"final"}
    assert summary["final_policy"] == "rl_model/final.pt (sb3_ppo)"
    assert summary["export"]["onnx_max_abs_diff"] < 1e-5
    assert (exp.root / "rl_model/checkpoints/latest.pt").is_file()


def test_summary_text_of_a_run_without_rl_says_so():
    """``rl.algorithm: none`` exports the imitation policy: no 'nan env-steps/s' in SUMMARY.txt."""
    from isr_training.pipeline import summary_text

    m = {"targets_found": 0.5, "coverage": 0.6, "return": 10.0, "crash_rate": 0.0,
         "safety_interventions": 3.0}  # fmt: skip
    s = {
        "experiment": "x", "task_version": "v", "final_policy": "imitation_model/best.pt",
        "evaluation": {"world_seeds": [100000, 100001], "num_worlds": 2, "episodes_per_world": 1},
        "task": {"episode_length_s": 120.0, "control_dt_s": 0.1, "world_size_m": [200, 200],
                 "physics_quality": "fast", "vehicle": "direct", "camera": False,
                 "camera_resolution": "80x80"},
        "training": {"pretrained": None, "demonstration_worlds": 8, "rl_worlds": 4,
                     "rl_drones_per_world": 2, "rl_algorithm": "none", "rl_env_steps": None,
                     "rl_env_steps_per_s_incl_updates": None},
        "results": {"final": m}, "export": {"torchscript_max_abs_diff": 0.0,
                                            "onnx_max_abs_diff": 0.0},
        "stage_wall_s": {"data": 1.0, "imitation": 2.0, "rl": 0.0, "finalize": 1.0},
        "total_wall_s": 4.0,
        "machine": {"cpu_count": 2, "torch": "2", "torch_threads": 1, "device": "cpu",
                    "load_avg_1_5_15": [0.1, 0.1, 0.1]},
    }  # fmt: skip
    line = next(ln for ln in summary_text(s).splitlines() if ln.startswith("Training:"))
    assert "RL none: the exported policy is the imitation policy" in line
    assert "nan" not in summary_text(s)
    m["targets_found_se"] = 0.05
    row = next(ln for ln in summary_text(s).splitlines() if ln.startswith("final  "))
    assert "+-5.0" in row


@pytest.mark.integration
def test_dagger_rounds_add_learner_flown_data_labelled_by_the_expert(tmp_path):
    from isr_training.imitation import Demonstrations

    cfg = resolve_config(
        "quick", [*TINY, "bc.dagger_rounds=2", "bc.dagger_epochs=2", "rl.algorithm=none"]
    )
    # The rounds' worlds are training worlds: seeds env.seed + [0, 3 x data.num_worlds).
    assert cfg.training_seeds() == list(range(6))
    exp = Experiment.create(cfg, tmp_path)
    run_pipeline(exp)
    first = Demonstrations.load(exp.data_dir / "demonstrations.pt")
    info = json.loads(exp.marker("imitation").read_text())
    rounds = info["result"]["dagger"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert [r["samples"] for r in rounds] == [2 * first.num_samples, 3 * first.num_samples]
    for r in (1, 2):
        new = Demonstrations.load(exp.data_dir / f"dagger_{r}.pt")
        assert new.obs.shape == first.obs.shape
        # The labels are the expert's clean actions in [-1, 1], not the learner's.
        assert new.actions.abs().max() <= 1.0 and not torch.equal(new.obs, first.obs)
        assert 0.0 <= rounds[r - 1]["learner_targets_found"] <= 1.0
        assert (exp.imitation_dir / f"dagger_{r}" / "best.pt").is_file()
    last = (exp.imitation_dir / "dagger_2" / "best.pt").read_bytes()
    assert (exp.imitation_dir / "best.pt").read_bytes() == last
    summary = (exp.root / "SUMMARY.txt").read_text()
    assert "+ 2 DAgger round(s)" in summary, summary
    paired = json.loads((exp.root / "SUMMARY.json").read_text())["paired_vs_expert"]
    assert paired["targets_found"]["n"] == cfg.eval.num_worlds
    assert "final - scripted_expert, paired on the same worlds: targets_found" in summary
    assert json.loads((exp.root / "SUMMARY.json").read_text())["training"]["dagger"] == rounds
    with pytest.raises(ValueError, match="different lengths"):
        Demonstrations.concat(
            [first, Demonstrations(first.obs[:3], first.actions[:3], first.dones[:3])]
        )


def test_dagger_needs_the_mlp_clone():
    from isr_direct_dynamics.config import ConfigError

    with pytest.raises(ConfigError, match="dagger_rounds"):
        resolve_config("quick", [*TINY, "bc.dagger_rounds=1", "bc.model=lstm"])


def test_memory_estimate_refuses_a_run_but_not_reading_a_finished_experiment(tmp_path, monkeypatch):
    import isr_direct_dynamics.config as dc
    from isr_direct_dynamics.config import ConfigError
    from isr_training.training_config import config_to_yaml, load_config_file

    cfg = resolve_config("quick", ["env.num_worlds=1024"])
    path = tmp_path / "config.yaml"
    path.write_text(config_to_yaml(cfg))
    monkeypatch.setattr(dc, "available_memory_bytes", lambda: 2**30)  # a 1 GiB machine
    with pytest.raises(
        ConfigError, match=r"1024 worlds .* needs about .* more than 80% of the 1.0"
    ):
        resolve_config("quick", ["env.num_worlds=1024"])
    with pytest.raises(ConfigError, match="needs about"):
        load_config_file(path)  # --resume trains it: checked
    assert load_config_file(path, check_memory=False).env.num_worlds == 1024  # eval reads its task
    with pytest.raises(ConfigError, match="needs about"):  # the switch does not leak
        load_config_file(path)
