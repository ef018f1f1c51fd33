"""Data-parallel PPO (isr_training.distributed): 2 gloo ranks on CPU at a tiny scale.

- the 2-rank update keeps the ranks' parameters identical and equals the 1-rank update on the
  union of their batches (gradients, advantage normalization and normalizer all-reduced);
- ``isr train --nproc 2`` runs the pipeline on 2 ranks (rank 0 writes), and a job killed with
  SIGKILL resumes on another number of ranks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from isr_direct_dynamics.config import ConfigError
from isr_training.distributed import DistContext, shard
from isr_training.ppo import PPO, PPOConfig
from isr_training.testing import TINY_PIPELINE

T, N, OBS = 8, 6, 5  # rollout steps, drones per rank, observation size


def _fake_env(num_envs: int) -> SimpleNamespace:
    return SimpleNamespace(num_envs=num_envs, obs_dim=OBS, action_dim=4, device="cpu", image=None)


def _cfg() -> PPOConfig:
    return PPOConfig(
        num_steps=T, num_minibatches=1, update_epochs=3, hidden_sizes=[16, 16],
        critic_warmup_iterations=0, learning_rate=1e-3, norm_adv=True,
    )  # fmt: skip


def _union_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    n = 2 * N
    return {
        "state": torch.randn(T, n, OBS, generator=g) * 3 + 1,
        "actions": torch.randn(T, n, 4, generator=g) * 0.3,
        "advantages": torch.randn(T, n, generator=g),
        "returns": torch.randn(T, n, generator=g) * 2,
    }


def _fill(ppo: PPO, batch: dict[str, torch.Tensor], cols: slice) -> None:
    buf = ppo.buffer
    buf.state.copy_(batch["state"][:, cols])
    buf.actions.copy_(batch["actions"][:, cols])
    buf.advantages.copy_(batch["advantages"][:, cols])
    buf.returns.copy_(batch["returns"][:, cols])
    with torch.no_grad():
        logp, _, value, _ = ppo.policy.evaluate_with_mean(
            buf.state.reshape(-1, OBS), buf.actions.reshape(-1, 4)
        )
    buf.logprobs.copy_(logp.view(T, -1))
    buf.values.copy_(value.view(T, -1))


def _update_once(ppo: PPO) -> None:
    ppo.policy.train()
    ppo.update()
    ppo._update_obs_norm(ppo.buffer.state)


def _rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ctx = DistContext(rank, world, rank, "gloo")
        # different seeds: rank 0's initial parameters must reach rank 1 by broadcast
        ppo = PPO(_fake_env(N), _cfg(), seed=5 + 100 * rank, dist=ctx)
        _fill(ppo, _union_batch(), slice(rank * N, (rank + 1) * N))
        _update_once(ppo)
        torch.save(ppo.policy.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _demos():
    from isr_training.imitation import Demonstrations

    g = torch.Generator().manual_seed(3)
    obs = torch.randn(20, 6, OBS, generator=g)
    actions = torch.tanh(obs[..., :4] * 0.7 + 0.1 * torch.randn(20, 6, 4, generator=g))
    return Demonstrations(obs, actions, torch.zeros(20, 6, dtype=torch.bool))


def _bc(ctx: DistContext, out_dir: str | None):
    from isr_training.imitation import BCConfig, train_bc
    from isr_training.models import BCPolicy

    torch.manual_seed(0)
    model = BCPolicy(OBS, 4, (16, 16))
    cfg = BCConfig(epochs=4, batch_size=25, learning_rate=3e-3, patience=10)  # 25: uneven shares
    train_bc(model, _demos(), cfg, seed=1, out_dir=out_dir, dist=ctx)
    return model.state_dict()


def _bc_rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ctx = DistContext(rank, world, rank, "gloo")
        state = _bc(ctx, str(Path(out_dir) / "bc"))
        torch.save(state, Path(out_dir) / f"bc_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.integration
def test_two_rank_behaviour_cloning_equals_one_rank(tmp_path):
    """Data-parallel BC: the same weights on both ranks and as one process (share-weighted
    gradients, minibatches of 25 split 13/12); only rank 0 writes the output folder."""
    (tmp_path / "bc").mkdir()
    mp.spawn(_bc_rank_main, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "bc_rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "bc_rank1.pt", weights_only=True)
    ref = _bc(DistContext(), None)
    for k in ref:
        assert torch.equal(r0[k], r1[k]), k
        torch.testing.assert_close(r0[k], ref[k], rtol=1e-4, atol=1e-5, msg=k)
    assert {p.name for p in (tmp_path / "bc").iterdir()} >= {"best.pt", "final.pt", "history.json"}


@pytest.mark.integration
def test_two_rank_update_is_the_one_rank_update_on_the_union_batch(tmp_path):
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{k} differs between the ranks"
    ref = PPO(_fake_env(2 * N), _cfg(), seed=5)  # rank 0's seed: the same initial parameters
    start = {k: v.clone() for k, v in ref.policy.state_dict().items()}
    _fill(ref, _union_batch(), slice(0, 2 * N))
    _update_once(ref)
    moved = 0
    for k, v in ref.policy.state_dict().items():
        torch.testing.assert_close(r0[k], v, rtol=1e-4, atol=1e-5, msg=f"{k}: 2 ranks vs union")
        moved += int(not torch.equal(v, start[k]))
    assert moved >= 4  # the update changed the weights and the normalizer
    assert float(r0["obs_norm.count"]) == T * 2 * N


def test_shard_splits_worlds_equally_and_names_a_bad_count():
    assert [shard(8, DistContext(r, 4)) for r in range(4)] == [(0, 2), (2, 2), (4, 2), (6, 2)]
    assert shard(5, DistContext()) == (0, 5)
    with pytest.raises(ConfigError, match=r"env\.num_worlds.*7 worlds.*3 ranks"):
        shard(7, DistContext(0, 3))
    assert DistContext(0, 2).rank_seed(3) == 3 and DistContext(1, 2).rank_seed(3) != 3


TINY = list(TINY_PIPELINE)


def _processes_mentioning(text: str) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmd:
            out.append(int(pid))
    return out


def _train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "isr_training.train", "--no-progress", *args]


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


@pytest.mark.integration
def test_nproc_2_pipeline_and_sigkill_resume_on_one_rank(tmp_path):
    """``--nproc 2``: one experiment written by rank 0, 2 ranks in its SUMMARY; a 2-rank job
    killed with SIGKILL mid-RL resumes from its checkpoint on 1 rank and finishes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = _sets([*TINY, "rl.ppo.total_timesteps=16000", "rl.eval_every_iterations=0", "threads=1"])
    proc = subprocess.Popen(
        _train_cmd("--preset", "quick", "--nproc", "2", "--output-dir", str(tmp_path), *sets),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 240
    latest = None
    while time.time() < deadline and proc.poll() is None:
        found = list(tmp_path.glob("quick_*/rl_model/checkpoints/iter_*.pt"))
        if len(found) >= 2:  # a few iterations in: the 2 ranks are training
            latest = found[0].parent / "latest.pt"
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    assert latest is not None, "no RL checkpoint within 240 s"
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and torchrun's agent
    proc.wait()
    # the ranks (torchrun puts them in sessions of their own) die with their parent
    for _ in range(50):
        if not _processes_mentioning(str(tmp_path)):
            break
        time.sleep(0.2)
    assert not _processes_mentioning(str(tmp_path)), "ranks outlived the killed launcher"
    exp = latest.parents[2]
    assert not (exp / "stages" / "rl.done").exists()
    resumed = subprocess.run(
        _train_cmd("--resume", str(exp)), capture_output=True, text=True, env=env, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (exp / "logs" / "rl.log").read_text()
    assert "2 ranks, backend gloo" in log and "resumed from" in log
    step = int(log.split("resumed from")[1].split("step ")[1].split()[0])
    assert 0 < step < 16000
    rl = json.loads((exp / "stages" / "rl.done").read_text())["result"]
    assert rl["ranks"] == 1 and rl["global_step"] >= 16000
    assert (exp / "SUMMARY.txt").is_file()

    # a fresh 2-rank run to the end: the SUMMARY records the ranks and their seeds
    out = tmp_path / "two"
    done = subprocess.run(
        _train_cmd("--preset", "quick", "--nproc", "2", "--output-dir", str(out),
                   *_sets([*TINY, "rl.ppo.total_timesteps=256", "rl.eval_every_iterations=2"])),
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (root,) = list(out.iterdir())
    summary = json.loads((root / "SUMMARY.json").read_text())
    assert summary["training"]["rl_ranks"] == 2 and summary["training"]["rl_backend"] == "gloo"
    assert len(set(summary["training"]["rl_rank_seeds"])) == 2
    assert "2 data-parallel ranks (gloo)" in (root / "SUMMARY.txt").read_text()
    assert not list(root.glob("**/*.tmp*"))


@pytest.mark.integration
def test_bench_train_nproc_2_reports_every_rank():
    out = subprocess.run(
        [sys.executable, "-m", "isr_training.bench_train", "--nproc", "2", "--drones", "16",
         "--drones-per-world", "2", "--num-steps", "8", "--seconds", "1", "--json"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["ranks"] == 2 and r["backend"] == "gloo" and r["drones"] == 16
    assert len(r["env_steps_per_s_per_rank"]) == 2 and min(r["env_steps_per_s_per_rank"]) > 0
    assert r["env_steps_per_s_incl_updates"] == pytest.approx(
        sum(r["env_steps_per_s_per_rank"]), rel=0.05
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nproc", "0"], "--nproc must be >= 1, got 0"),
        (["--nproc", "3", "--set", "env.num_worlds=4"], "'env.num_worlds': 4 worlds cannot be"),
        (["--nproc", "2", "--set", "bc.dagger_rounds=1"], "'bc.dagger_rounds': 1 DAgger"),
        (
            ["--nproc", "2", "--set", "rl.algorithm=sb3_ppo", "--set", "rl.init_from_bc=false"],
            "'rl.algorithm': sb3_ppo runs in one",
        ),
    ],
)
def test_nproc_bad_input_is_one_error_line_before_any_rank_starts(tmp_path, capsys, argv, message):
    from isr_training.training_cli import main

    rc = main(["--preset", "quick", "--output-dir", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("error:") == 1
    assert not (tmp_path / "out").exists()


def test_exit_process_is_sys_exit_outside_a_process_group():
    from isr_training import distributed

    with pytest.raises(SystemExit) as e:
        distributed.exit_process(3)
    assert e.value.code == 3
