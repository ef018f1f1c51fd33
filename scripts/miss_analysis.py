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

import json

import torch
from paired_eval import held_out_command_line  # (scripts/ is on sys.path when run as a script)

from isr_sim_bridge.world_batch import TARGET_CLASSES
from isr_training.baselines import ScriptedExpert
from isr_training.pipeline import make_env


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
    cfg, seeds, label, act = held_out_command_line(__doc__)
    for name, make in (
        (label, lambda env: act),
        ("scripted_expert", lambda env: ScriptedExpert(env)),
    ):
        print(json.dumps(analyse(cfg, seeds, name, make)), flush=True)


if __name__ == "__main__":
    main()
