"""Imitation learning: expert demonstrations, behaviour cloning (MLP and LSTM), loss curves.

The PiDog pipeline's first two stages, for the ISR task:

1. :func:`collect_demonstrations` flies the privileged :class:`~isr_training.baselines.
   ScriptedExpert` on every drone of an environment at once. The *executed* action is the expert's
   action plus Gaussian noise (DART-style: the noise visits the states a cloned policy drifts to);
   the *label* is the expert's clean action in those states.
2. :func:`train_bc` fits a :class:`~isr_training.models.BCPolicy` (MLP) or
   :class:`~isr_training.models.LSTMBCPolicy` with MSE on a train/validation split by trajectory
   (whole drones are held out, so validation never sees a neighbour of a training sample), with
   early stopping on the validation loss, a per-epoch checkpoint (resumable) and a loss-curve plot.

The BC MLP has the PPO actor's architecture: :func:`~isr_training.models.init_actor_from_bc`
copies it into the PPO policy before RL fine-tuning.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from isr_direct_dynamics.config import check, json_dumps
from isr_direct_dynamics.io_checks import describe_exception

from .baselines import ScriptedExpert
from .distributed import SINGLE, DistContext
from .env import ISREnv
from .models import (
    BCPolicy,
    LSTMBCPolicy,
    atomic_torch_save,
    checkpoint_error,
    load_checkpoint,
    safe_load,
)


@dataclass
class DataConfig:
    """Demonstration collection (the ``data`` stage)."""

    num_worlds: int = 64
    """Worlds flown at once (one expert drone per world; training seeds ``env.seed + i``)."""
    episodes: int = 1
    """Episodes per drone."""
    action_noise: float = 0.2
    """Std of the Gaussian noise added to the executed (not the recorded) expert action."""
    expert_altitude_m: float = 25.0
    """Cruise altitude of the scripted expert."""
    expert_speed_m_s: float | None = None
    """Cruise speed of the scripted expert (None: the vehicle's horizontal speed limit)."""

    def validate(self) -> None:
        """Check ranges."""
        check(self.num_worlds >= 1, "num_worlds", "must be >= 1")
        check(self.episodes >= 1, "episodes", "must be >= 1")
        check(self.action_noise >= 0, "action_noise", "must be >= 0")
        check(
            self.expert_speed_m_s is None or self.expert_speed_m_s > 0,
            "expert_speed_m_s",
            f"must be > 0 (or null: the speed limit), got {self.expert_speed_m_s}",
        )


@dataclass
class BCConfig:
    """Behaviour cloning (the ``imitation`` stage). The MLP's hidden layers are the PPO actor's."""

    model: Literal["mlp", "lstm"] = "mlp"
    """``mlp`` (initializes the PPO actor) or ``lstm`` (sequence model; RL then starts fresh)."""
    epochs: int = 300
    """Maximum epochs (early stopping usually ends sooner)."""
    batch_size: int = 1024
    """Samples per gradient step (LSTM: ``batch_size // sequence_length`` sequences)."""
    learning_rate: float = 1e-3
    """Adam learning rate (cosine-decayed to 10% over ``epochs``)."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    val_fraction: float = 0.1
    """Share of the drones (whole trajectories) held out for validation."""
    patience: int = 10
    """Stop after this many epochs without a better validation loss."""
    min_delta: float = 1e-5
    """Smallest decrease of the validation loss that counts as better."""
    lstm_hidden_size: int = 256
    """Hidden size of the LSTM."""
    lstm_layers: int = 1
    """LSTM layers."""
    sequence_length: int = 64
    """Length of the training sequences of the LSTM (cut from episodes, hidden state from zero)."""
    dagger_rounds: int = 0
    """DAgger rounds after cloning (MLP only): each round the clone flies ``data.num_worlds`` new
    training worlds (with the demonstrations' action noise), the scripted expert labels the states
    it visits, and cloning continues on all data so far for ``dagger_epochs``."""
    dagger_epochs: int = 15
    """Epochs of cloning after each DAgger round (early stopping with ``patience`` applies)."""

    def validate(self) -> None:
        """Check ranges."""
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(
            0 <= self.dagger_rounds <= 20,
            "dagger_rounds",
            f"must be 0-20, got {self.dagger_rounds}",
        )
        check(self.dagger_epochs >= 1, "dagger_epochs", "must be >= 1")
        check(
            self.dagger_rounds == 0 or self.model == "mlp",
            "dagger_rounds",
            "needs bc.model 'mlp' (the LSTM clone keeps a hidden state the collection does not)",
        )
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.learning_rate > 0, "learning_rate", "must be > 0")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(0 < self.val_fraction < 1, "val_fraction", "must be in (0, 1)")
        check(self.patience >= 1, "patience", "must be >= 1")
        check(self.lstm_hidden_size >= 1, "lstm_hidden_size", "must be >= 1")
        check(self.lstm_layers >= 1, "lstm_layers", "must be >= 1")
        check(self.sequence_length >= 2, "sequence_length", "must be >= 2")


@dataclass
class Demonstrations:
    """Time-major expert trajectories of ``N`` drones over ``T`` steps."""

    obs: Tensor  # (T, N, obs_dim) float32
    """State observations the expert acted on."""
    actions: Tensor  # (T, N, 4) float32
    """The expert's clean (noise-free) normalized actions: the labels."""
    dones: Tensor  # (T, N) bool
    """The drone's episode ended after step t (the next row starts a new episode)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Mean episode metrics of the (noisy) expert while collecting."""

    @property
    def num_samples(self) -> int:
        """``T * N``."""
        return int(self.obs.shape[0] * self.obs.shape[1])

    def save(self, path: str | Path) -> None:
        """Write tensors and metrics (atomic; loadable with ``weights_only=True``)."""
        atomic_torch_save(
            {
                "obs": self.obs,
                "actions": self.actions,
                "dones": self.dones,
                "metrics": dict(self.metrics),
            },
            path,
        )

    @classmethod
    def concat(cls, parts: list[Demonstrations]) -> Demonstrations:
        """The drones of ``parts`` side by side (all of the same length ``T``)."""
        lengths = {int(d.obs.shape[0]) for d in parts}
        if len(lengths) != 1:
            raise ValueError(
                f"demonstrations of different lengths {sorted(lengths)} cannot be joined"
            )
        return cls(
            torch.cat([d.obs for d in parts], 1),
            torch.cat([d.actions for d in parts], 1),
            torch.cat([d.dones for d in parts], 1),
            dict(parts[-1].metrics),
        )

    @classmethod
    def load(cls, path: str | Path) -> Demonstrations:
        """Read a file of :meth:`save`."""
        d = safe_load(path, what="demonstrations file")
        if not isinstance(d, dict) or any(k not in d for k in ("obs", "actions", "dones")):
            raise ValueError(
                f"demonstrations file {path} is corrupt (expected obs, actions and dones tensors); "
                "delete it to collect the demonstrations again"
            )
        return cls(d["obs"], d["actions"], d["dones"], dict(d.get("metrics") or {}))


def collect_demonstrations(
    env: ISREnv,
    episodes: int = 1,
    action_noise: float = 0.2,
    seed: int = 0,
    expert_kwargs: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    learner: Callable[[Tensor], Tensor] | None = None,
) -> Demonstrations:
    """Fly the scripted expert on all drones of ``env`` for ``episodes`` episodes each.

    Build ``env`` with ``stagger=False`` (whole episodes). Executed actions carry Gaussian noise of
    std ``action_noise``; the recorded labels are the clean expert actions. ``progress(step,
    total)`` is called every 50 steps. With ``learner`` (``obs -> action``) the learner flies
    instead and the expert only labels the states it visits (DAgger's data collection).
    """
    obs = env.reset(seed=seed)
    if isinstance(obs, dict):
        raise ValueError("demonstrations are state-only: build the environment without camera")
    expert = ScriptedExpert(env, seed=seed, **(expert_kwargs or {}))
    gen = torch.Generator(device=env.device).manual_seed(seed + 1)
    expert.reset_mask(torch.ones(env._shape, dtype=torch.bool, device=env.device))
    total = episodes * env.max_episode_steps
    obs_buf = torch.zeros(total, env.num_envs, env.obs_dim, device=env.device)
    act_buf = torch.zeros(total, env.num_envs, 4, device=env.device)
    done_buf = torch.zeros(total, env.num_envs, dtype=torch.bool, device=env.device)
    sums: dict[str, Tensor] = {}
    count = torch.zeros((), device=env.device)
    for t in range(total):
        label = expert(obs)
        obs_buf[t], act_buf[t] = obs, label
        flown = label if learner is None else learner(obs).to(label)
        noise = action_noise * torch.randn(label.shape, generator=gen, device=env.device)
        obs, _, _, _, info = env.step((flown + noise).clamp(-1.0, 1.0))
        done = info["done"]
        done_buf[t] = done
        count += done.sum()
        for k, v in info["episode"].items():
            v = torch.nan_to_num(v, nan=0.0)
            sums[k] = sums.get(k, torch.zeros((), device=env.device)) + (v * done).sum()
        if progress is not None and (t + 1) % 50 == 0:
            progress(t + 1, total)
    n = max(float(count), 1.0)
    metrics = {k: float(v) / n for k, v in sums.items()}
    metrics["episodes"] = float(count)
    return Demonstrations(obs_buf.cpu(), act_buf.cpu(), done_buf.cpu(), metrics)


def split_drones(num_drones: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices of training and validation drones (at least one of each when ``N >= 2``)."""
    perm = torch.randperm(num_drones, generator=torch.Generator().manual_seed(seed))
    n_val = min(max(1, round(num_drones * val_fraction)), num_drones - 1) if num_drones > 1 else 0
    return perm[n_val:], perm[:n_val]


def _sequences(demos: Demonstrations, drones: Tensor, length: int) -> tuple[Tensor, Tensor, Tensor]:
    """Cut the episodes of ``drones`` into sequences ``(S, L, ...)`` and a validity mask."""
    obs_list, act_list, mask_list = [], [], []
    t_total = demos.obs.shape[0]
    for n in drones.tolist():
        bounds = [0] + [e + 1 for e in torch.nonzero(demos.dones[:, n]).flatten().tolist()]
        if bounds[-1] != t_total:
            bounds.append(t_total)
        for s0, s1 in zip(bounds[:-1], bounds[1:], strict=True):
            for c in range(s0, s1, length):
                c1 = min(c + length, s1)
                pad = length - (c1 - c)
                o = demos.obs[c:c1, n]
                a = demos.actions[c:c1, n]
                m = torch.ones(c1 - c)
                if pad:
                    o = torch.cat((o, o.new_zeros(pad, o.shape[-1])))
                    a = torch.cat((a, a.new_zeros(pad, a.shape[-1])))
                    m = torch.cat((m, m.new_zeros(pad)))
                obs_list.append(o)
                act_list.append(a)
                mask_list.append(m)
    return torch.stack(obs_list), torch.stack(act_list), torch.stack(mask_list)


@dataclass
class BCResult:
    """Outcome of :func:`train_bc`."""

    history: dict[str, list[float]]
    """Per epoch: ``train_loss``, ``val_loss``, ``lr``, ``time_s``."""
    best_epoch: int
    """Epoch (1-based) of the lowest validation loss."""
    best_val_loss: float
    """Lowest validation loss."""
    stopped_early: bool
    """Training ended by early stopping."""


def train_bc(
    model: BCPolicy | LSTMBCPolicy,
    demos: Demonstrations,
    cfg: BCConfig,
    seed: int = 0,
    out_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    dist: DistContext = SINGLE,
) -> BCResult:
    """Behaviour cloning with MSE; ``model`` ends holding the best (lowest validation) weights.

    With ``out_dir``: ``best.pt`` and ``final.pt`` (policy files), ``checkpoint.pt`` after every
    epoch (training resumes from it when present), ``history.json`` and ``training_history.png``.

    ``dist`` (data-parallel, :mod:`isr_training.distributed`): every rank holds the demonstrations
    and draws the same minibatches; each computes the loss of its share of every minibatch and
    the gradients are summed over the ranks weighted by share, which is the gradient of the whole
    minibatch (the 1-rank update). Validation uses rank 0's loss; rank 0 alone writes ``out_dir``.
    """
    from .models import save_policy

    device = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    train_ids, val_ids = split_drones(demos.obs.shape[1], cfg.val_fraction, seed)
    recurrent = isinstance(model, LSTMBCPolicy)
    if recurrent:
        tr_o, tr_a, tr_m = _sequences(demos, train_ids, cfg.sequence_length)
        va_o, va_a, va_m = _sequences(demos, val_ids, cfg.sequence_length)
        model.obs_norm.update(tr_o[tr_m.bool()].to(device))
        batch = max(1, cfg.batch_size // cfg.sequence_length)
    else:
        tr_o = demos.obs[:, train_ids].reshape(-1, demos.obs.shape[-1])
        tr_a = demos.actions[:, train_ids].reshape(-1, 4)
        va_o = demos.obs[:, val_ids].reshape(-1, demos.obs.shape[-1])
        va_a = demos.actions[:, val_ids].reshape(-1, 4)
        tr_m = va_m = None
        model.obs_norm.update(tr_o.to(device))
        batch = cfg.batch_size
    tr_o, tr_a, va_o, va_a = (x.to(device) for x in (tr_o, tr_a, va_o, va_a))
    if recurrent:
        tr_m, va_m = tr_m.to(device), va_m.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    def lr_at(epoch: int) -> float:
        return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs)))

    def loss_fn(o: Tensor, a: Tensor, m: Tensor | None) -> Tensor:
        if m is None:
            return ((model(o) - a) ** 2).mean()
        pred, _ = model(o)
        err = ((pred - a) ** 2).mean(-1)
        return (err * m).sum() / m.sum().clamp(min=1.0)

    @torch.no_grad()
    def val_loss() -> float:
        if va_o.shape[0] == 0:
            return float("nan")
        model.eval()
        total, weight = 0.0, 0.0
        step = 8192 if not recurrent else 256
        for i in range(0, va_o.shape[0], step):
            m = None if va_m is None else va_m[i : i + step]
            w = float(m.sum()) if m is not None else float(min(step, va_o.shape[0] - i))
            total += float(loss_fn(va_o[i : i + step], va_a[i : i + step], m)) * w
            weight += w
        model.train()
        return total / max(weight, 1.0)

    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "lr": [], "time_s": []}
    best_val, best_epoch, best_state = float("inf"), 0, None
    start_epoch, bad_epochs, stopped = 0, 0, False
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "checkpoint.pt" if out is not None else None
    if ckpt_path is not None and ckpt_path.is_file():
        keys = ("model", "optimizer", "generator", "history", "best_val", "best_epoch")
        keys += ("best_state", "epoch", "bad_epochs")
        ck = load_checkpoint(ckpt_path, keys, map_location=device)
        try:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            gen.set_state(ck["generator"].cpu())
            history = {k: list(v) for k, v in ck["history"].items()}
            best_val, best_epoch = float(ck["best_val"]), int(ck["best_epoch"])
            best_state = ck["best_state"]
            start_epoch, bad_epochs = int(ck["epoch"]), int(ck["bad_epochs"])
            stopped = bool(ck.get("stopped", False))
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            why = f"does not fit this model: {describe_exception(exc)}"
            raise ValueError(checkpoint_error(ckpt_path, why)) from None
    extra = {"seed": seed}
    n_train = tr_o.shape[0]
    writes = out is not None and dist.is_main
    dist.broadcast_module_(model)  # (the same already: one seed, one data set)
    t0 = time.perf_counter()
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        if stopped:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(epoch)
        perm = torch.randperm(n_train, generator=gen).to(device)
        total, nb = torch.zeros((), device=device), 0
        for i in range(0, n_train, batch):
            idx = perm[i : i + batch]
            opt.zero_grad(set_to_none=True)
            # this rank's share of the minibatch (all of it on one rank), its gradient weighted
            # by the share (1 on one rank) before the ranks' gradients are averaged
            n_batch = idx.shape[0]
            idx = idx[dist.rank :: dist.world_size]
            if idx.shape[0] == 0:  # nothing left for this rank: a zero gradient
                loss = sum(p.sum() for p in model.parameters()) * 0.0
            else:
                loss = loss_fn(tr_o[idx], tr_a[idx], None if tr_m is None else tr_m[idx])
            (loss * (idx.shape[0] * dist.world_size / n_batch)).backward()
            dist.all_reduce_grads_(list(model.parameters()))
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.detach()
            nb += 1
        v = val_loss()
        if dist.enabled:  # one decision (best, early stop) on every rank
            v = float(dist.broadcast_(torch.tensor([v], dtype=torch.float64))[0])
        history["train_loss"].append(float(total) / max(nb, 1))
        history["val_loss"].append(v)
        history["lr"].append(lr_at(epoch))
        history["time_s"].append(time.perf_counter() - t0)
        score = v if math.isfinite(v) else history["train_loss"][-1]
        if score < best_val - cfg.min_delta:
            best_val, best_epoch, bad_epochs = score, epoch + 1, 0
            best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
            if writes:
                save_policy(out / "best.pt", model, {**extra, "epoch": epoch + 1, "val_loss": v})
        else:
            bad_epochs += 1
            stopped = bad_epochs >= cfg.patience
        if on_epoch is not None:
            on_epoch(epoch + 1, {k: vals[-1] for k, vals in history.items()})
        if ckpt_path is not None and writes:
            atomic_torch_save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "generator": gen.get_state(),
                    "history": history,
                    "best_val": best_val,
                    "best_epoch": best_epoch,
                    "best_state": best_state,
                    "epoch": epoch + 1,
                    "bad_epochs": bad_epochs,
                    "stopped": stopped,
                },
                ckpt_path,
            )
    if writes:
        save_policy(out / "final.pt", model, {**extra, "epoch": len(history["train_loss"])})
    if best_state is not None:
        model.load_state_dict(best_state)
    result = BCResult(history, best_epoch, best_val, stopped)
    if writes:
        (out / "history.json").write_text(
            json_dumps(
                {
                    "best_epoch": best_epoch,
                    "best_val_loss": best_val,
                    "stopped_early": stopped,
                    **history,
                },
                indent=1,
            )
        )
        plot_bc_history(history, best_epoch, out / "training_history.png")
    model.eval()
    return result


def plot_bc_history(history: dict[str, list[float]], best_epoch: int, path: str | Path) -> None:
    """Train/validation loss per epoch (log scale), best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    epochs = list(range(1, len(history["train_loss"]) + 1))
    ax.plot(epochs, history["train_loss"], label="train MSE")
    ax.plot(epochs, history["val_loss"], label="validation MSE")
    if best_epoch:
        ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best (epoch {best_epoch})")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (normalized action)")
    ax.set_title("Behaviour cloning")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class RecurrentPolicyRunner:
    """Runs an :class:`LSTMBCPolicy` step by step on an env (hidden state reset at episode start).

    A drone whose ``env.step_count`` is 0 starts a new episode; its hidden state is zeroed.
    """

    def __init__(self, model: LSTMBCPolicy, env: ISREnv) -> None:
        self.model, self.env = model, env
        self.state: tuple[Tensor, Tensor] | None = None

    @torch.no_grad()
    def __call__(self, obs: Tensor | dict[str, Tensor]) -> Tensor:
        """Clipped actions ``(N, 4)`` (the state part of a camera observation)."""
        if isinstance(obs, dict):
            obs = obs["state"]
        if self.state is not None:
            keep = (self.env.step_count.reshape(-1) != 0).float()[None, :, None]
            self.state = (self.state[0] * keep, self.state[1] * keep)
        y, self.state = self.model(obs[:, None], self.state)
        return y[:, 0].clamp(-1.0, 1.0)


def deterministic_actor(model: nn.Module) -> Callable[[Any], Tensor]:
    """``obs -> clipped action`` of an MLP policy (:class:`BCPolicy` or ``ActorCritic`` mean)."""

    @torch.no_grad()
    def act(obs: Any) -> Tensor:
        if hasattr(model, "action_mean"):
            mean = model.action_mean(obs)
        else:  # state-only model: takes the state part of a camera observation
            mean = model(obs["state"] if isinstance(obs, dict) else obs)
        return mean.clamp(-1.0, 1.0)

    return act
