"""Paired comparison of a trained policy with the scripted expert on the same held-out worlds.

    .venv/bin/python scripts/paired_eval.py EXPERIMENT_DIR_OR_POLICY_FILE [--first-seed 100000]
        [--worlds 200]

Both fly every world once (one drone per world, the default direct task of the `quick` preset,
deterministic policy); per world the difference of targets found and of coverage is taken, and
the mean difference is printed with its standard error (paired: the worlds' own difficulty
cancels) and the number of worlds where each is better, one JSON object per metric.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from isr_training.baselines import ScriptedExpert
from isr_training.export import load_policy_file
from isr_training.pipeline import make_env
from isr_training.training_config import resolve_config

METRICS = ("targets_found", "coverage")


def per_world(cfg, seeds: list[int], make) -> dict[str, torch.Tensor]:
    """First-episode metrics of every world for the policy ``make(env)``."""
    env = make_env(cfg.env, seeds, 1, False, seed=seeds[0], device="cpu")
    act = make(env)
    obs = env.reset()
    if isinstance(act, ScriptedExpert):
        act.reset_mask(torch.ones(env._shape, dtype=torch.bool))
    out = {k: torch.full((env.num_envs,), float("nan")) for k in METRICS}
    for _ in range(env.max_episode_steps + 1):
        obs, _, _, _, info = env.step(act(obs))
        new = info["done"] & torch.isnan(out[METRICS[0]])
        for k in METRICS:
            out[k][new] = info["episode"][k][new]
        if not torch.isnan(out[METRICS[0]]).any():
            break
    return out


def main() -> None:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("policy", type=Path)
    ap.add_argument("--first-seed", type=int, default=100000)
    ap.add_argument("--worlds", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = resolve_config(preset="quick")
    seeds = list(range(args.first_seed, args.first_seed + args.worlds))
    loaded = load_policy_file(args.policy)
    a = per_world(cfg, seeds, lambda env: lambda obs: loaded.act(obs).clamp(-1.0, 1.0))
    b = per_world(cfg, seeds, lambda env: ScriptedExpert(env))
    for k in METRICS:
        d = (a[k] - b[k]).double()
        print(json.dumps({
            "metric": k, "policy": round(float(a[k].mean()), 4),
            "expert": round(float(b[k].mean()), 4), "diff": round(float(d.mean()), 4),
            "paired_se": round(float(d.std() / math.sqrt(len(d))), 4),
            "policy_better_worlds": int((d > 0).sum()), "expert_better_worlds": int((d < 0).sum()),
            "worlds": len(d), "policy_file": str(loaded.path),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
