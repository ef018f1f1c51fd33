"""Stable-Baselines3 PPO and SAC (the design card's library) on :class:`ISRSB3VecEnv`.

:func:`build_sb3_model` builds either from a typed :class:`SB3Config`; observation normalization
is SB3's ``VecNormalize`` (observations only, ``epsilon`` and ``clip`` as
:class:`~isr_training.models.RunningMeanStd`, so the statistics carry over both ways).

Bridges to the rest of the workspace:

- :func:`load_bc_into_sb3_ppo` copies a BC MLP (and its normalizer) into an SB3 PPO policy with the
  same hidden layers (``net_arch=dict(pi=hidden, vf=hidden)``), as the PPO actor is initialized;
- :func:`sb3_to_policy` turns an SB3 PPO or SAC policy and its normalizer into the workspace's
  :class:`~isr_training.models.BCPolicy` layout (exported like every other policy; SAC keeps its
  tanh);
- :func:`sb3_state` / :func:`load_sb3_state` save and restore an SB3 model as tensors only
  (``weights_only=True`` loading; SAC's replay buffer is not kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from isr_direct_dynamics.config import check

from .models import ACTIVATIONS, BCPolicy

NORM_EPSILON = 1e-4
"""``VecNormalize`` epsilon (matches :class:`~isr_training.models.RunningMeanStd`)."""


@dataclass
class SB3Config:
    """Stable-Baselines3 PPO / SAC settings (names as in SB3)."""

    algorithm: Literal["ppo", "sac"] = "ppo"
    """Which SB3 algorithm."""
    learning_rate: float = 3e-4
    """Adam learning rate (the original plan: 3e-4)."""
    gamma: float = 0.99
    """Discount factor."""
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 256, 256])
    """Hidden layers of actor and critic(s)."""
    activation: Literal["elu", "tanh", "relu"] = "elu"
    """Hidden activation."""
    normalize_obs: bool = True
    """Wrap the env in ``VecNormalize`` (observations only)."""
    n_steps: int = 32
    """PPO: rollout steps per drone."""
    batch_size: int = 4096
    """PPO minibatch size / SAC batch size (the original plan: 4096)."""
    n_epochs: int = 5
    """PPO: epochs per rollout."""
    gae_lambda: float = 0.95
    """PPO: GAE lambda."""
    clip_range: float = 0.2
    """PPO: clipping coefficient."""
    ent_coef: float = 0.0
    """PPO: entropy coefficient."""
    log_std_init: float = -0.5
    """PPO: initial log-std."""
    buffer_size: int = 1_000_000
    """SAC: replay buffer size (transitions)."""
    learning_starts: int = 10_000
    """SAC: transitions collected before the first update."""
    train_freq: int = 1
    """SAC: env steps (of all drones at once) between updates."""
    gradient_steps: int = 1
    """SAC: gradient steps per update."""
    tau: float = 0.005
    """SAC: target network soft-update rate."""

    def validate(self) -> None:
        """Check ranges."""
        check(self.learning_rate > 0, "learning_rate", "must be > 0")
        check(0 < self.gamma <= 1, "gamma", "must be in (0, 1]")
        check(len(self.hidden_sizes) >= 1, "hidden_sizes", "needs at least one layer")
        for name in ("n_steps", "batch_size", "n_epochs", "buffer_size", "train_freq"):
            check(getattr(self, name) >= 1, name, "must be >= 1")
        check(self.gradient_steps >= 1, "gradient_steps", "must be >= 1")
        check(self.learning_starts >= 0, "learning_starts", "must be >= 0")
        check(0 < self.tau <= 1, "tau", "must be in (0, 1]")


def build_sb3_model(
    venv: Any,
    cfg: SB3Config,
    seed: int = 0,
    tensorboard_log: str | None = None,
    device: str = "cpu",
) -> tuple[Any, Any]:
    """Build an SB3 PPO or SAC on ``venv`` (an :class:`ISRSB3VecEnv`); returns ``(model, env)``.

    ``env`` is ``venv`` wrapped in ``VecNormalize`` when ``cfg.normalize_obs`` (else ``venv``).
    """
    from gymnasium import spaces
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.vec_env import VecNormalize

    cfg.validate()
    is_dict = isinstance(venv.observation_space, spaces.Dict)
    env = venv
    if cfg.normalize_obs:
        env = VecNormalize(
            venv,
            norm_obs=True,
            norm_reward=False,
            clip_obs=10.0,
            gamma=cfg.gamma,
            epsilon=NORM_EPSILON,
            norm_obs_keys=["state"] if is_dict else None,
        )
    policy = "MultiInputPolicy" if is_dict else "MlpPolicy"
    act = ACTIVATIONS[cfg.activation]
    hidden = list(cfg.hidden_sizes)
    if cfg.algorithm == "ppo":
        n_batch = cfg.n_steps * venv.num_envs
        model = PPO(
            policy,
            env,
            learning_rate=cfg.learning_rate,
            n_steps=cfg.n_steps,
            batch_size=min(cfg.batch_size, n_batch),
            n_epochs=cfg.n_epochs,
            gamma=cfg.gamma,
            gae_lambda=cfg.gae_lambda,
            clip_range=cfg.clip_range,
            ent_coef=cfg.ent_coef,
            policy_kwargs={
                "net_arch": {"pi": hidden, "vf": hidden},
                "activation_fn": act,
                "log_std_init": cfg.log_std_init,
            },
            tensorboard_log=tensorboard_log,
            seed=seed,
            device=device,
            verbose=0,
        )
    else:
        model = SAC(
            policy,
            env,
            learning_rate=cfg.learning_rate,
            buffer_size=cfg.buffer_size,
            learning_starts=cfg.learning_starts,
            batch_size=cfg.batch_size,
            tau=cfg.tau,
            gamma=cfg.gamma,
            train_freq=cfg.train_freq,
            gradient_steps=cfg.gradient_steps,
            policy_kwargs={"net_arch": {"pi": hidden, "qf": hidden}, "activation_fn": act},
            tensorboard_log=tensorboard_log,
            seed=seed,
            device=device,
            verbose=0,
        )
    return model, env


def _linears(seq: nn.Module) -> list[nn.Linear]:
    return [m for m in seq.modules() if isinstance(m, nn.Linear)]


def load_bc_into_sb3_ppo(model: Any, env: Any, bc: BCPolicy) -> None:
    """Copy a BC MLP into an SB3 PPO's actor and its normalizer statistics into ``env``.

    The MLP's linear layers go to ``mlp_extractor.policy_net`` and ``action_net``; the statistics
    to ``env.obs_rms`` when ``env`` is a ``VecNormalize``.
    """
    pol = model.policy
    src = _linears(bc.actor)
    dst = _linears(pol.mlp_extractor.policy_net) + [pol.action_net]
    if [tuple(m.weight.shape) for m in src] != [tuple(m.weight.shape) for m in dst]:
        raise ValueError("BC MLP and SB3 PPO actor have different layer shapes")
    with torch.no_grad():
        for s, d in zip(src, dst, strict=True):
            d.weight.copy_(s.weight)
            d.bias.copy_(s.bias)
    rms = getattr(env, "obs_rms", None)
    if rms is not None:
        target = rms["state"] if isinstance(rms, dict) else rms
        target.mean = bc.obs_norm.mean.double().cpu().numpy()
        target.var = bc.obs_norm.var.double().cpu().numpy()
        target.count = float(bc.obs_norm.count)


def sb3_to_policy(model: Any, env: Any, cfg: SB3Config, obs_dim: int) -> BCPolicy:
    """The deterministic policy of an SB3 PPO or SAC (state observations) as a :class:`BCPolicy`.

    PPO: ``mlp_extractor.policy_net`` + ``action_net``; SAC: ``actor.latent_pi`` + ``actor.mu`` and
    a tanh. The ``VecNormalize`` statistics become the policy's normalizer (identity without it).
    """
    from stable_baselines3 import SAC

    pol = model.policy
    is_sac = isinstance(model, SAC)
    if is_sac:
        src = _linears(pol.actor.latent_pi) + [pol.actor.mu]
    else:
        src = _linears(pol.mlp_extractor.policy_net) + [pol.action_net]
    out = BCPolicy(obs_dim, src[-1].out_features, cfg.hidden_sizes, cfg.activation, squash=is_sac)
    dst = _linears(out.actor)
    with torch.no_grad():
        for s, d in zip(src, dst, strict=True):
            d.weight.copy_(s.weight.cpu())
            d.bias.copy_(s.bias.cpu())
        rms = getattr(env, "obs_rms", None)
        if rms is not None:
            rms = rms["state"] if isinstance(rms, dict) else rms
            out.obs_norm.mean.copy_(torch.as_tensor(np.asarray(rms.mean), dtype=torch.float32))
            out.obs_norm.var.copy_(torch.as_tensor(np.asarray(rms.var), dtype=torch.float32))
            out.obs_norm.count.fill_(float(rms.count))
        else:  # identity: mean 0 and sqrt(var + eps) = 1 (observations are within +-10)
            out.obs_norm.var.fill_(1.0 - NORM_EPSILON)
    return out.eval()


def sb3_state(model: Any, env: Any) -> dict[str, Any]:
    """Tensors-only state of an SB3 model (policy, optimizers, step counter, normalizer)."""
    state: dict[str, Any] = {
        "policy": model.policy.state_dict(),
        "num_timesteps": int(model.num_timesteps),
    }
    opts = {}
    for name in ("optimizer",):
        opt = getattr(model.policy, name, None)
        if opt is not None:
            opts[name] = opt.state_dict()
    for name in ("actor", "critic"):
        sub = getattr(model.policy, name, None)
        opt = getattr(sub, "optimizer", None) if sub is not None else None
        if opt is not None:
            opts[name] = opt.state_dict()
    state["optimizers"] = opts
    rms = getattr(env, "obs_rms", None)
    if rms is not None:
        rms = rms["state"] if isinstance(rms, dict) else rms
        state["obs_rms"] = {
            "mean": torch.as_tensor(np.asarray(rms.mean)),
            "var": torch.as_tensor(np.asarray(rms.var)),
            "count": float(rms.count),
        }
    if getattr(model, "log_ent_coef", None) is not None:
        state["log_ent_coef"] = model.log_ent_coef.detach().cpu()
    return state


def load_sb3_state(model: Any, env: Any, state: dict[str, Any]) -> None:
    """Restore :func:`sb3_state` into a freshly built model (replay buffers start empty)."""
    model.policy.load_state_dict(state["policy"])
    model.num_timesteps = int(state["num_timesteps"])
    opts = state.get("optimizers", {})
    if "optimizer" in opts and getattr(model.policy, "optimizer", None) is not None:
        model.policy.optimizer.load_state_dict(opts["optimizer"])
    for name in ("actor", "critic"):
        sub = getattr(model.policy, name, None)
        if name in opts and sub is not None and getattr(sub, "optimizer", None) is not None:
            sub.optimizer.load_state_dict(opts[name])
    rms = getattr(env, "obs_rms", None)
    if rms is not None and "obs_rms" in state:
        rms = rms["state"] if isinstance(rms, dict) else rms
        rms.mean = state["obs_rms"]["mean"].double().numpy()
        rms.var = state["obs_rms"]["var"].double().numpy()
        rms.count = float(state["obs_rms"]["count"])
    if "log_ent_coef" in state and getattr(model, "log_ent_coef", None) is not None:
        with torch.no_grad():
            model.log_ent_coef.copy_(state["log_ent_coef"])
