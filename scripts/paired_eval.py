"""Paired comparison of a trained policy with the scripted expert on the same held-out worlds.

    .venv/bin/python scripts/paired_eval.py EXPERIMENT_DIR_OR_POLICY_FILE [--first-seed 100000]
        [--worlds 200]

Both fly every world once (one drone per world, the default direct task of the `quick` preset,
deterministic policy; :func:`isr_training.pipeline.evaluate`); per world the difference of
targets found and of coverage is taken, and the mean difference is printed with its standard error
(paired: the worlds' own difficulty cancels) and the number of worlds where each is better
(:func:`isr_training.baselines.paired_difference`), one JSON object per metric.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from isr_training.baselines import ScriptedExpert, paired_difference
from isr_training.export import load_policy_file
from isr_training.pipeline import evaluate
from isr_training.training_config import resolve_config


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
    policies = {
        "policy": lambda env: lambda obs: loaded.act(obs).clamp(-1.0, 1.0),
        "expert": lambda env: ScriptedExpert(env),
    }
    res = evaluate(cfg, seeds, policies, per_episode=True)
    for k in ("targets_found", "coverage"):
        d = paired_difference(res["policy"]["per_episode"][k], res["expert"]["per_episode"][k])
        print(json.dumps({
            "metric": k, "policy": round(res["policy"][k], 4), "expert": round(res["expert"][k], 4),
            "diff": round(d["mean"], 4), "paired_se": round(d["se"], 4),
            "policy_better_worlds": d["a_better"], "expert_better_worlds": d["b_better"],
            "worlds": d["n"], "policy_file": str(loaded.path),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
