"""Paired comparison of a trained policy with the scripted expert on the same held-out worlds.

    .venv/bin/python scripts/paired_eval.py EXPERIMENT_DIR_OR_POLICY_FILE [--first-seed 100000]
        [--worlds 200] [--quality fast|medium|production] [--set KEY=VALUE ...]

(POLICY_FILE: exported, or a training file such as ``rl_model/best.pt``.)

Both fly every world once (one drone per world, the default direct task of the `quick` preset,
deterministic policy; :func:`isr_training.pipeline.evaluate`); per world the difference of
targets found and of coverage is taken, and the mean difference is printed with its standard error
(paired: the worlds' own difficulty cancels) and the number of worlds where each is better
(:func:`isr_training.baselines.paired_difference`), one JSON object per metric.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from isr_direct_dynamics.config import ConfigError
from isr_training.baselines import ScriptedExpert, paired_difference
from isr_training.export import load_policy_file
from isr_training.imitation import deterministic_actor
from isr_training.models import load_policy
from isr_training.pipeline import evaluate
from isr_training.training_config import resolve_config


def held_out_command_line(doc: str) -> tuple[Any, list[int], str, Callable[[Any], Any]]:
    """The held-out scripts' command line: ``POLICY [--first-seed S] [--worlds N] [--quality Q]``.

    Returns the ``quick`` preset's config, the world seeds, the policy's name and its
    deterministic ``act(obs)``.

    POLICY: an exported policy (experiment directory, ``final_model/...``) or a training policy
    file (``rl_model/best.pt``, ``imitation_model/best.pt``).
    """
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("policy", type=Path)
    ap.add_argument("--first-seed", type=int, default=100000)
    ap.add_argument("--worlds", type=int, default=200)
    ap.add_argument(
        "--quality",
        choices=("fast", "medium", "production"),
        default="fast",
        help="vehicle model: fast = the direct training model; medium/production = the "
        "full-fidelity quadrotor with the PX4-like cascade (dynamics_config.yaml)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override after --quality, e.g. env.camera_resolution=80x80 (repeatable)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = resolve_config(preset="quick", overrides=[f"physics_quality={args.quality}", *args.set])
    seeds = list(range(args.first_seed, args.first_seed + args.worlds))
    try:
        loaded = load_policy_file(args.policy)
        return cfg, seeds, str(loaded.path), lambda obs: loaded.act(obs).clamp(-1.0, 1.0)
    except ConfigError:
        model, _ = load_policy(args.policy)
        return cfg, seeds, str(args.policy), deterministic_actor(model)


def main() -> None:
    """Command line: see the module docstring."""
    cfg, seeds, label, act = held_out_command_line(__doc__)
    policies = {"policy": lambda env: act, "expert": lambda env: ScriptedExpert(env)}
    res = evaluate(cfg, seeds, policies, per_episode=True)
    for k in ("targets_found", "coverage"):
        d = paired_difference(res["policy"]["per_episode"][k], res["expert"]["per_episode"][k])
        print(json.dumps({
            "metric": k, "policy": round(res["policy"][k], 4), "expert": round(res["expert"][k], 4),
            "diff": round(d["mean"], 4), "paired_se": round(d["se"], 4),
            "policy_better_worlds": d["a_better"], "expert_better_worlds": d["b_better"],
            "worlds": d["n"], "policy_file": label,
        }))  # fmt: skip


if __name__ == "__main__":
    main()
