"""A policy flown through PX4's offboard interface: the offboard client's FLY callback.

Used by ``isr px4-rehearse`` (against the PX4 emulator) and the ``px4_eval`` node (real PX4 or
the emulator): a scripted pattern name, or a trained policy flown by a
:class:`~isr_px4_eval.px4.pilot.PolicyPilot` on the evaluation task of its experiment.
"""

from __future__ import annotations

from collections.abc import Callable

from isr_px4_eval.evaluation.run import build_env_config, load_settings, make_eval_env
from isr_px4_eval.px4.convert import OdometryENU, VelocitySetpointENU
from isr_px4_eval.px4.offboard import SCRIPTED_POLICIES, scripted_policy
from isr_px4_eval.px4.pilot import PolicyPilot
from isr_training.export import check_policy_fits, load_policy_file


def make_fly_policy(
    policy: str,
    world_seed: int = 0,
    seed: int = 0,
    device: str = "cpu",
    episode_s: float | None = None,
) -> tuple[Callable[[OdometryENU, float], VelocitySetpointENU | None], PolicyPilot | None]:
    """The offboard client's FLY policy for ``policy``: a scripted pattern name or a policy file.

    A policy file (TorchScript, ONNX, ``policy.pt`` or an experiment directory, as ``isr eval``
    takes) is flown by a :class:`PolicyPilot` on world ``world_seed`` with the task of the
    policy's experiment (else the default task; ``episode_s`` shortens its episode).
    Returns ``(fly policy, pilot or None)``.
    """
    if policy in SCRIPTED_POLICIES:
        return scripted_policy(policy), None
    loaded = load_policy_file(policy)
    settings = load_settings()
    settings.drones_per_world = 1
    settings.seed = seed
    if episode_s is not None:
        settings.episode_length_s = float(episode_s)
    cfg = build_env_config(loaded, "direct", [int(world_seed)], settings)
    env = make_eval_env(cfg, device)
    check_policy_fits(loaded, env)
    pilot = PolicyPilot(env, loaded.act, seed=seed)
    return pilot, pilot


__all__ = ["make_fly_policy"]
