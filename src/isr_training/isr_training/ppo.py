"""A compact PPO that works directly on the torch environment contract (no numpy round trips).

Read it top to bottom, CleanRL style: :class:`PPOConfig` (one docstring per field), then
:class:`PPO` with ``collect()`` (rollout), ``compute_advantages()`` (GAE), ``update()`` (clipped
surrogate, optional value clipping, entropy bonus, minibatches and epochs) and ``learn()``.

Contract with :class:`~isr_training.env.ISREnv` (rsl_rl's design): every tensor stays on
``env.device``; ``terminated`` and ``truncated`` stay separate, and **time-outs are bootstrapped**:
for a drone whose episode was truncated (time limit) and not terminated, the reward of that step
gets ``+ gamma * V(final_obs)`` where ``final_obs = info["final_obs"]`` is the observation before
the auto-reset. The advantage recursion then treats every episode end as terminal.

Episode statistics (``episode/<key>``, from ``info["episode"]``) count complete episodes only: a
drone's first episode after a staggered reset starts late and would bias them.

Observation normalization: a running mean/std inside the policy (saved with it, baked into the
exported model). It is frozen during an iteration (so that the log-probabilities of the rollout and
of the update agree) and updated with the rollout's observations after the update.

Action sampling: ``mean + exp(log_std) * noise`` from a seeded generator; the mean is not squashed
and the environment clips actions to ``[-1, 1]``. The same seed gives the same run (on one device).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from isr_direct_dynamics.config import check
from isr_direct_dynamics.io_checks import describe_exception

from .distributed import SINGLE, DistContext
from .models import ActorCritic, Obs, atomic_torch_save, checkpoint_error, load_checkpoint


@dataclass
class PPOConfig:
    """Hyper-parameters of :class:`PPO` (CleanRL's continuous PPO, scaled for many envs)."""

    total_timesteps: int = 2_000_000
    """Environment steps (summed over all drones) to train for."""
    num_steps: int = 32
    """Rollout length per drone and iteration (batch = num_steps x number of drones)."""
    learning_rate: float = 3e-4
    """Adam learning rate."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over ``total_timesteps``."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    num_minibatches: int = 4
    """Minibatches per epoch."""
    update_epochs: int = 5
    """Passes over the rollout per iteration."""
    norm_adv: bool = True
    """Normalize advantages per minibatch."""
    clip_coef: float = 0.2
    """Surrogate clipping coefficient."""
    clip_vloss: bool = True
    """Clip the value loss around the rollout's values (PPO2 style)."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Gradient clipping (global norm)."""
    target_kl: float | None = None
    """Stop the epochs of an iteration early when the approximate KL exceeds this (None = off)."""
    hidden_sizes: list[int] = field(default_factory=lambda: [128, 128])
    """Hidden layers of the actor and critic MLPs (the BC MLP uses the same). Chosen by
    measurement: on 2 CPU cores at 4,096 drones the update is ~85% of an iteration and scales
    with the layer widths (``isr bench train``: [256, 256, 256] 8.9 k, [256, 256] 13.7 k,
    [128, 128, 128] 30 k, [128, 128] 39-44 k env-steps/s incl. updates); [128, 128] reached the
    same validation scores as [256, 256, 256] in the quick pipeline."""
    activation: Literal["elu", "tanh", "relu"] = "elu"
    """Hidden activation."""
    init_log_std: float = -0.5
    """Initial log standard deviation of the Gaussian policy."""
    min_log_std: float = -5.0
    """Lower bound of the log-std parameter (kept after every update)."""
    normalize_obs: bool = True
    """Running mean/std normalization of the state observation (inside the policy)."""
    update_obs_norm: bool = True
    """Merge every rollout into the normalizer's statistics. False keeps them as they start (the
    behaviour-cloning statistics when the actor starts from BC; the first rollout's otherwise), so
    the actor's inputs do not shift under it during RL."""
    cnn_features: int = 128
    """Feature size of the CNN encoder (camera observations)."""
    critic_warmup_iterations: int = 0
    """First iterations train only the critic (actor mean and log-std frozen): use it when the actor
    starts from behaviour cloning, so that a random critic does not wreck the cloned actor."""
    anchor_coef: float = 0.0
    """Weight of an anchor to the starting policy (the behaviour-cloning actor, or the
    ``rl.pretrained`` one): adds ``anchor_coef x mean ||mu(s) - mu_0(s)||^2`` over the rollout's
    states to the loss, where ``mu_0`` is a frozen copy of the actor (and its normalizer) as PPO
    starts. 0 (the default) turns it off."""

    def validate(self) -> None:
        """Check ranges; raises ConfigError naming the field."""
        check(self.total_timesteps >= 1, "total_timesteps", "must be >= 1")
        check(self.num_steps >= 1, "num_steps", "must be >= 1")
        check(self.learning_rate > 0, "learning_rate", "must be > 0")
        check(0 < self.gamma <= 1, "gamma", f"must be in (0, 1], got {self.gamma}")
        check(0 <= self.gae_lambda <= 1, "gae_lambda", "must be in [0, 1]")
        check(self.num_minibatches >= 1, "num_minibatches", "must be >= 1")
        check(self.update_epochs >= 1, "update_epochs", "must be >= 1")
        check(self.clip_coef > 0, "clip_coef", "must be > 0")
        check(self.ent_coef >= 0, "ent_coef", "must be >= 0")
        check(self.vf_coef >= 0, "vf_coef", "must be >= 0")
        check(self.max_grad_norm > 0, "max_grad_norm", "must be > 0")
        check(self.target_kl is None or self.target_kl > 0, "target_kl", "must be > 0 or null")
        check(
            len(self.hidden_sizes) >= 1 and all(h >= 1 for h in self.hidden_sizes),
            "hidden_sizes",
            "needs at least one positive layer size",
        )
        check(self.min_log_std < self.init_log_std, "init_log_std", "must be > min_log_std")
        check(self.cnn_features >= 1, "cnn_features", "must be >= 1")
        check(self.critic_warmup_iterations >= 0, "critic_warmup_iterations", "must be >= 0")
        check(self.anchor_coef >= 0, "anchor_coef", f"must be >= 0, got {self.anchor_coef}")


def _obs_index(obs: Obs, idx: Tensor | slice | int) -> Obs:
    if isinstance(obs, dict):
        return {k: v[idx] for k, v in obs.items()}
    return obs[idx]


def _state(obs: Obs) -> Tensor:
    return obs["state"] if isinstance(obs, dict) else obs


class RolloutBuffer:
    """Time-major rollout storage ``(T, N, ...)`` on the environment's device."""

    def __init__(self, env: Any, num_steps: int, device: torch.device) -> None:
        t, n = num_steps, env.num_envs
        z = torch.zeros
        self.state = z(t, n, env.obs_dim, device=device)  # (T, N, obs_dim) raw observations
        self.image = (
            z(t, n, *env.image_shape, dtype=torch.uint8, device=device)
            if getattr(env, "image", None) is not None
            else None
        )  # (T, N, H, W, 3) uint8 or None
        self.actions = z(t, n, env.action_dim, device=device)  # (T, N, 4) sampled (unclipped)
        self.logprobs = z(t, n, device=device)  # (T, N)
        self.rewards = z(t, n, device=device)  # (T, N) incl. time-out bootstrap
        self.dones = z(t, n, device=device)  # (T, N) 1 where the episode ended at this step
        self.values = z(t, n, device=device)  # (T, N)
        self.advantages = z(t, n, device=device)  # (T, N)
        self.returns = z(t, n, device=device)  # (T, N)

    def store_obs(self, t: int, obs: Obs) -> None:
        """Store the observation of step ``t``."""
        if isinstance(obs, dict):
            self.state[t] = obs["state"]
            if self.image is not None:
                self.image[t] = obs["image"]
        else:
            self.state[t] = obs

    def flat_obs(self) -> Obs:
        """All observations, flattened to ``(T * N, ...)``."""
        state = self.state.reshape(-1, self.state.shape[-1])
        if self.image is None:
            return state
        return {"state": state, "image": self.image.reshape(-1, *self.image.shape[2:])}


class EpisodeStats:
    """Sums of ``info["episode"]`` entries over done drones, read out once per iteration."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        """Clear the sums."""
        self.sums: dict[str, Tensor] = {}
        self.count = torch.zeros((), device=self.device)

    def add(self, info: dict[str, Any], mask: Tensor | None = None) -> None:
        """Accumulate the episode stats of the drones that are done this step.

        ``mask`` (N,) bool selects the drones whose episode counts (complete episodes). On an
        accelerator there is no host synchronization; on CPU the rows of the few done drones are
        gathered first (a step without a finished episode costs one check).
        """
        done = info["done"] if mask is None else info["done"] & mask
        if done.device.type == "cpu":
            rows = done.nonzero().squeeze(-1)
            if rows.numel() == 0:
                return
            self.count = self.count + rows.numel()
            for k, v in info["episode"].items():
                v = torch.nan_to_num(v[rows].float(), nan=0.0).sum()
                self.sums[k] = self.sums[k] + v if k in self.sums else v
            return
        done = done.float()
        self.count = self.count + done.sum()
        for k, v in info["episode"].items():
            v = torch.nan_to_num(v.float(), nan=0.0)
            self.sums[k] = self.sums.get(k, torch.zeros((), device=self.device)) + (v * done).sum()

    def means(self) -> dict[str, float]:
        """Mean of every stat over the episodes finished since the last reset ({} if none)."""
        if not self.sums:
            return {}
        keys = list(self.sums)
        values = torch.stack([self.sums[k] for k in keys] + [self.count]).cpu().tolist()
        n = values[-1]
        if n <= 0:
            return {}
        out = {k: v / n for k, v in zip(keys, values[:-1], strict=True)}
        out["episodes"] = n
        return out


class PPO:
    """PPO on an :class:`~isr_training.env.ISREnv` (or anything with the same torch contract).

    Args:
        env: the environment (``num_envs``, ``obs_dim``, ``action_dim``, ``device``, ``reset``,
            ``step``; ``image``/``image_shape`` for camera observations).
        config: hyper-parameters.
        seed: seed of the network init, the action noise and the minibatch shuffling.
        policy: an existing :class:`ActorCritic` (e.g. initialized from behaviour cloning);
            None builds one from ``config``.
        dist: the data-parallel context (:mod:`isr_training.distributed`): ``env`` is this rank's
            shard; rank 0's initial parameters are broadcast, gradients, advantage moments and
            normalizer statistics are all-reduced, ``global_step`` counts every rank's steps.
    """

    def __init__(
        self,
        env: Any,
        config: PPOConfig | None = None,
        seed: int = 0,
        policy: ActorCritic | None = None,
        dist: DistContext = SINGLE,
    ) -> None:
        self.cfg = cfg = config or PPOConfig()
        cfg.validate()
        self.env = env
        self.device = torch.device(env.device)
        self.seed = seed
        self.dist = dist
        self._rank_seed = dist.rank_seed(seed)
        """This rank's seed of the action noise, the minibatch order and the env resets."""
        image_shape = env.image_shape if getattr(env, "image", None) is not None else None
        if policy is None:
            torch.manual_seed(seed)
            policy = ActorCritic(
                env.obs_dim,
                env.action_dim,
                cfg.hidden_sizes,
                cfg.activation,
                cfg.init_log_std,
                image_shape=image_shape,
                cnn_features=cfg.cnn_features,
            )
        self.policy = policy.to(self.device)
        dist.broadcast_module_(self.policy)
        self.anchor: ActorCritic | None = None
        """Frozen copy of the starting policy (``cfg.anchor_coef > 0``)."""
        if cfg.anchor_coef > 0:
            self.anchor = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.learning_rate, eps=1e-5)
        self.gen = torch.Generator(device=self.device).manual_seed(self._rank_seed)
        self.buffer = RolloutBuffer(env, cfg.num_steps, self.device)
        self.batch_size = cfg.num_steps * env.num_envs
        """Steps of one rollout of this rank."""
        self.global_batch_size = self.batch_size * dist.world_size
        """Steps of one iteration over every rank."""
        self.minibatch_size = max(1, self.batch_size // cfg.num_minibatches)
        self.num_iterations = max(1, math.ceil(cfg.total_timesteps / self.global_batch_size))
        self.iteration = 0
        self.global_step = 0
        self.episode_stats = EpisodeStats(self.device)
        self.next_obs: Obs | None = None
        self._complete = torch.ones(env.num_envs, dtype=torch.bool, device=self.device)
        self._reward_sum = torch.zeros((), device=self.device)
        self._start_time = time.perf_counter()
        self._start_step = 0
        self.step_hook: Callable[[Any], None] | None = None
        """Called with the environment after every rollout step (e.g. a throttled live view)."""
        self.timing: dict[str, float] = {}
        """Seconds of the last iteration by part: ``env_s`` (environment steps), ``rollout_s``
        (the whole rollout, inference included), ``gae_s``, ``update_s``."""

    # ------------------------------------------------------------------ rollout
    def _reset_env(self) -> None:
        self.next_obs = self.env.reset(seed=self._rank_seed + 7919 * self.iteration)
        # With staggered resets a drone's first episode starts late and is cut short: its
        # statistics are biased, so episode stats count complete episodes only.
        step_count = getattr(self.env, "step_count", None)
        if isinstance(step_count, Tensor):
            self._complete = step_count.reshape(-1) == 0
        else:
            self._complete = torch.ones(self.env.num_envs, dtype=torch.bool, device=self.device)
        if self.cfg.normalize_obs and float(self.policy.obs_norm.count) == 0:
            self._update_obs_norm(_state(self.next_obs))

    def _update_obs_norm(self, x: Tensor) -> None:
        """Merge ``x`` into the normalizer.

        This rank's batch, or every rank's when distributed (the same statistics on all ranks).
        """
        reduce = self.dist.all_reduce_sum_ if self.dist.enabled else None
        self.policy.obs_norm.update(x, reduce=reduce)

    @torch.no_grad()
    def collect(self) -> None:
        """Fill the rollout buffer with ``num_steps`` steps of every drone.

        Adds the seconds spent in ``env.step`` to ``self.timing["env_s"]`` (on an accelerator that
        is launch time, not kernel time: the loop never synchronizes).
        """
        if self.next_obs is None:
            self._reset_env()
        buf, cfg, policy = self.buffer, self.cfg, self.policy
        obs = self.next_obs
        cpu = self.device.type == "cpu"
        t_env = 0.0
        for t in range(cfg.num_steps):
            buf.store_obs(t, obs)
            action, logp, value = policy.act(obs, self.gen)
            buf.actions[t] = action
            buf.logprobs[t] = logp
            buf.values[t] = value
            t0 = time.perf_counter()
            obs, reward_raw, terminated, truncated, info = self.env.step(action)
            t_env += time.perf_counter() - t0
            # Time-out bootstrap: a truncated (not terminated) episode continues in value terms.
            timeout = truncated & ~terminated
            if cpu:
                # Only the few timed-out rows go through the critic (no pass when there are none).
                rows = timeout.nonzero().squeeze(-1)
                buf.rewards[t] = reward_raw
                if rows.numel():
                    v_final = policy.value(_obs_index(info["final_obs"], rows))
                    buf.rewards[t, rows] += cfg.gamma * v_final
            else:  # always run, to keep the loop free of host synchronizations
                v_final = policy.value(info["final_obs"])
                buf.rewards[t] = reward_raw + cfg.gamma * v_final * timeout.float()
            buf.dones[t] = info["done"]
            self.episode_stats.add(info, self._complete)
            self._complete |= info["done"]
            self._reward_sum += reward_raw.sum()
            if self.step_hook is not None:
                self.step_hook(self.env)
        self.next_obs = obs
        self.global_step += self.global_batch_size
        self.timing["env_s"] = self.timing.get("env_s", 0.0) + t_env

    @torch.no_grad()
    def compute_advantages(self) -> None:
        """GAE(lambda) advantages and returns (every episode end is terminal after bootstrap)."""
        buf, cfg = self.buffer, self.cfg
        next_value = self.policy.value(self.next_obs)
        last = torch.zeros_like(next_value)
        for t in reversed(range(cfg.num_steps)):
            nonterminal = 1.0 - buf.dones[t]
            next_v = next_value if t == cfg.num_steps - 1 else buf.values[t + 1]
            delta = buf.rewards[t] + cfg.gamma * next_v * nonterminal - buf.values[t]
            last = delta + cfg.gamma * cfg.gae_lambda * nonterminal * last
            buf.advantages[t] = last
        buf.returns.copy_(buf.advantages + buf.values)

    # ------------------------------------------------------------------ update
    def _normalize_advantages(self, adv: Tensor) -> Tensor:
        """Zero mean, unit std over the minibatch.

        Distributed: over every rank's minibatch (the union batch's statistics, the same on all
        ranks).
        """
        if not self.dist.enabled:
            return (adv - adv.mean()) / (adv.std() + 1e-8)
        a = adv.double()
        m = torch.stack((a.sum(), (a * a).sum(), a.new_tensor(float(a.numel()))))
        self.dist.all_reduce_sum_(m)
        mean = m[0] / m[2]
        var = ((m[1] - m[2] * mean * mean) / (m[2] - 1.0).clamp(min=1.0)).clamp(min=0.0)
        return (adv - mean.float()) / (var.sqrt().float() + 1e-8)

    def update(self) -> dict[str, float]:
        """PPO epochs over the rollout; returns loss statistics."""
        cfg, buf, policy = self.cfg, self.buffer, self.policy
        warmup = self.iteration < cfg.critic_warmup_iterations
        obs = buf.flat_obs()
        actions = buf.actions.reshape(-1, buf.actions.shape[-1])
        old_logp = buf.logprobs.reshape(-1)
        adv_all = buf.advantages.reshape(-1)
        ret_all = buf.returns.reshape(-1)
        old_v = buf.values.reshape(-1)
        stats: dict[str, Tensor] = {}
        n_mb = 0
        approx_kl = torch.zeros((), device=self.device)
        anchor_mean = None
        if self.anchor is not None and not warmup:
            with torch.no_grad():
                anchor_mean = self.anchor.action_mean(obs)
        for _ in range(cfg.update_epochs):
            perm = torch.randperm(self.batch_size, generator=self.gen, device=self.device)
            for start in range(0, self.batch_size, self.minibatch_size):
                idx = perm[start : start + self.minibatch_size]
                logp, entropy, value, mean = policy.evaluate_with_mean(
                    _obs_index(obs, idx), actions[idx]
                )
                log_ratio = logp - old_logp[idx]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clipfrac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()
                adv = adv_all[idx]
                if cfg.norm_adv:
                    adv = self._normalize_advantages(adv)
                pg_loss = torch.max(
                    -adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
                ).mean()
                ret = ret_all[idx]
                if cfg.clip_vloss:
                    v_clipped = old_v[idx] + (value - old_v[idx]).clamp(
                        -cfg.clip_coef, cfg.clip_coef
                    )
                    v_loss = 0.5 * torch.max((value - ret) ** 2, (v_clipped - ret) ** 2).mean()
                else:
                    v_loss = 0.5 * ((value - ret) ** 2).mean()
                ent = entropy.mean()
                if warmup:
                    loss = cfg.vf_coef * v_loss
                else:
                    loss = pg_loss - cfg.ent_coef * ent + cfg.vf_coef * v_loss
                if anchor_mean is not None:
                    anchor_loss = ((mean - anchor_mean[idx]) ** 2).sum(-1).mean()
                    loss = loss + cfg.anchor_coef * anchor_loss
                    stats["loss/anchor"] = (
                        stats.get("loss/anchor", torch.zeros((), device=self.device))
                        + anchor_loss.detach()
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if warmup:  # only the critic (and a shared image encoder) learns
                    for p in list(policy.actor.parameters()) + [policy.log_std]:
                        p.grad = None
                self.dist.all_reduce_grads_(list(policy.parameters()))
                nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                n_mb += 1
                for k, v in (
                    ("loss/policy", pg_loss.detach()),
                    ("loss/value", v_loss.detach()),
                    ("loss/entropy", ent.detach()),
                    ("loss/approx_kl", approx_kl),
                    ("loss/clipfrac", clipfrac),
                ):
                    stats[k] = stats.get(k, torch.zeros((), device=self.device)) + v
            if cfg.target_kl is not None:
                kl = self.dist.all_reduce_sum_(approx_kl.detach().clone()) / self.dist.world_size
                if float(kl) > cfg.target_kl:  # the same decision on every rank
                    break
        with torch.no_grad():
            policy.log_std.clamp_(min=cfg.min_log_std)
            var_y = ret_all.var()
            explained = 1 - (ret_all - old_v).var() / var_y if float(var_y) > 0 else var_y * 0
        keys = list(stats)
        vals = torch.stack([stats[k] / n_mb for k in keys] + [explained]).cpu().tolist()
        out = dict(zip(keys, vals[:-1], strict=True))
        out["loss/explained_variance"] = vals[-1]
        out["policy/std"] = float(policy.log_std.detach().exp().mean())
        out["critic_warmup"] = float(warmup)
        return out

    # ------------------------------------------------------------------ loop
    def train_iteration(self) -> dict[str, float]:
        """One iteration: rollout, advantages, update, normalizer update; returns metrics."""
        cfg = self.cfg
        if cfg.anneal_lr:
            frac = 1.0 - self.iteration / self.num_iterations
            self.optimizer.param_groups[0]["lr"] = max(frac, 0.0) * cfg.learning_rate
        t0 = time.perf_counter()
        self.timing = {"env_s": 0.0}
        self.episode_stats.reset()
        self._reward_sum = torch.zeros((), device=self.device)
        self.policy.eval()
        self.collect()
        t1 = time.perf_counter()
        self.compute_advantages()
        t2 = time.perf_counter()
        self.policy.train()
        metrics = self.update()
        finite = torch.stack([torch.isfinite(p).all() for p in self.policy.parameters()]).all()
        if not bool(finite):  # one host sync for all the weights
            raise FloatingPointError(
                f"PPO iteration {self.iteration + 1}: the update made the network weights "
                f"non-finite (NaN/inf; learning rate {cfg.learning_rate:g}); resume from the last "
                "checkpoint with a lower rl.ppo.learning_rate"
            )
        if cfg.normalize_obs and cfg.update_obs_norm:
            self._update_obs_norm(self.buffer.state)
        self.iteration += 1
        t3 = time.perf_counter()
        dt = t3 - t0
        t_collect = t1 - t0
        self.timing.update(rollout_s=t_collect, gae_s=t2 - t1, update_s=t3 - t2)
        elapsed = time.perf_counter() - self._start_time
        metrics.update(
            {
                "iteration": self.iteration,
                "global_step": self.global_step,
                "time/sps": self.global_batch_size / dt,
                "time/sps_rank": self.batch_size / dt,
                "time/sps_total": (self.global_step - self._start_step) / max(elapsed, 1e-9),
                "time/collect_sps": self.batch_size / max(t_collect, 1e-9),
                "time/iteration_s": dt,
                **{f"time/{k}": v for k, v in self.timing.items()},
                "lr": self.optimizer.param_groups[0]["lr"],
                "rollout/reward_per_step": float(self._reward_sum) / self.batch_size,
            }
        )
        bad = getattr(self.env, "nonfinite_action_count", None)
        if isinstance(bad, Tensor):  # running count of the environment (NaN/inf actions)
            metrics["rollout/nonfinite_actions"] = float(bad)
        metrics.update({f"episode/{k}": v for k, v in self.episode_stats.means().items()})
        return metrics

    def learn(
        self,
        total_timesteps: int | None = None,
        callback: Callable[[PPO, dict[str, float]], bool | None] | None = None,
    ) -> PPO:
        """Train until ``global_step >= total_timesteps``.

        ``callback(self, metrics)`` runs after every iteration (returning False stops); without
        one, steps-per-second and the episode return are printed every iteration.
        """
        total = self.cfg.total_timesteps if total_timesteps is None else total_timesteps
        self._start_time, self._start_step = time.perf_counter(), self.global_step
        while self.global_step < total:
            metrics = self.train_iteration()
            if callback is None:
                print(
                    f"iter {self.iteration} step {self.global_step} "
                    f"SPS {metrics['time/sps']:.0f} "
                    f"return {metrics.get('episode/return', float('nan')):.3g}"
                )
            elif callback(self, metrics) is False:
                break
        return self

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training (tensors and plain data only)."""
        return {
            "policy": self.policy.state_dict(),
            "policy_meta": self.policy.meta(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.gen.get_state(),
            "iteration": self.iteration,
            "global_step": self.global_step,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the environment is reset at the next rollout."""
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"].cpu())
        self.iteration = int(state["iteration"])
        self.global_step = int(state["global_step"])
        if self.dist.rank:  # the checkpoint holds rank 0's stream; the others get their own
            self.gen.manual_seed(self._rank_seed + 7919 * self.iteration)
        self.next_obs = None

    def save(self, path: str) -> None:
        """Atomic checkpoint (temp file + ``os.replace``)."""
        atomic_torch_save(self.state_dict(), path)

    def load(self, path: str) -> None:
        """Load a checkpoint of :meth:`save` (``weights_only=True``; corrupt: ``ValueError``)."""
        keys = ("policy", "optimizer", "generator", "iteration", "global_step")
        state = load_checkpoint(path, keys, map_location=self.device)
        try:
            self.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                checkpoint_error(Path(path), f"does not fit this model: {describe_exception(exc)}")
            ) from None
