"""Why targets are missed: a trained policy and the scripted expert, per target class.

    .venv/bin/python scripts/miss_analysis.py EXPERIMENT_DIR_OR_POLICY_FILE [--first-seed 100000]
        [--worlds 200]

Both fly every world once (one drone per world, the default direct task of the `quick` preset,
deterministic policy). Every target of every world ends in one class: found (detected within the
class's recognition range), *never detected* (never in view unoccluded at any range: a coverage
problem), *detected, never approached* (seen, but the drone never came within the recognition
range: a lead not followed), or *close but not seen there* (within range only while out of view or
occluded). One JSON object per policy, with the mean altitude flown; overall and per class.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from isr_direct_dynamics.config import ConfigError
from isr_sim_bridge.world_batch import TARGET_CLASSES
from isr_training.baselines import ScriptedExpert
from isr_training.export import load_policy_file
from isr_training.imitation import deterministic_actor
from isr_training.models import load_policy
from isr_training.pipeline import make_env
from isr_training.training_config import resolve_config


def analyse(cfg, seeds: list[int], name: str, make) -> dict:
    """Fly ``make(env)`` on ``seeds`` for one whole episode; the per-target outcome shares."""
    env = make_env(cfg.env, seeds, 1, False, seed=seeds[0], device=cfg.device)
    policy = make(env)
    obs = env.reset()
    if isinstance(policy, ScriptedExpert):
        policy.reset_mask(torch.ones(env._shape, dtype=torch.bool))
    w = env.world
    valid = w.target_valid[:, None].expand_as(env.found)
    ever_seen = torch.zeros_like(env.found)
    ever_close = torch.zeros_like(env.found)
    range2 = env._found_range2[w.target_class][:, None]
    alt_sum = 0.0
    steps = env.max_episode_steps - 1  # the last step resets the drones
    for _ in range(steps):
        obs, _, _, _, _ = env.step(policy(obs))
        pos = env.vehicle.state.pos_enu_m
        d2 = ((w.target_pos_enu_m[:, None] - pos[:, :, None]) ** 2).sum(-1)
        ever_close |= d2 <= range2
        ever_seen |= env.det_visible
        alt_sum += float(pos[..., 2].mean())
    found = env.found & valid
    missed = valid & ~env.found

    def shares(mask: torch.Tensor) -> dict:
        n = int(mask.sum())
        return {
            "targets": n,
            "found": round(int((found & mask).sum()) / max(n, 1), 4),
            "never_detected": round(int((missed & mask & ~ever_seen).sum()) / max(n, 1), 4),
            "detected_never_approached": round(
                int((missed & mask & ever_seen & ~ever_close).sum()) / max(n, 1), 4
            ),
            "close_but_not_seen_there": round(
                int((missed & mask & ever_close).sum()) / max(n, 1), 4
            ),
        }

    out = {"policy": name, "worlds": len(seeds), "mean_altitude_m": round(alt_sum / steps, 2)}
    out["all"] = shares(valid)
    for c, cname in enumerate(TARGET_CLASSES):
        out[cname] = shares(valid & (w.target_class[:, None] == c))
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
    try:  # an exported policy (experiment directory, final_model/...)
        loaded = load_policy_file(args.policy)
        label, act = str(loaded.path), lambda obs: loaded.act(obs).clamp(-1.0, 1.0)
    except ConfigError:  # a training policy file (rl_model/best.pt, imitation_model/best.pt)
        model, _ = load_policy(args.policy)
        label, act = str(args.policy), deterministic_actor(model)
    for name, make in (
        (label, lambda env: act),
        ("scripted_expert", lambda env: ScriptedExpert(env)),
    ):
        print(json.dumps(analyse(cfg, seeds, name, make)), flush=True)


if __name__ == "__main__":
    main()
