"""Policy networks: observation normalizer, MLP and CNN actor-critics, BC models, deployable policy.

- :class:`RunningMeanStd`: running mean/variance of the state observation (a module: its
  statistics are buffers, saved with the policy and baked into exported models).
- :class:`ActorCritic`: Gaussian policy with a state-independent log-std parameter and a value
  head. State observations go through an MLP; camera observations (``{"state", "image"}`` with a
  ``(N, H, W, 3)`` uint8 image) add a small CNN encoder whose features are concatenated to the
  normalized state. The action mean is not squashed (no tanh): the environment clips actions.
- :class:`BCPolicy` (MLP) and :class:`LSTMBCPolicy`: behaviour-cloning models. ``BCPolicy`` has the
  same sub-module names and shapes as the actor part of :class:`ActorCritic`, so the PPO actor mean
  is initialized from it by copying state dicts (:func:`init_actor_from_bc`).
- :class:`DeployPolicy`: normalizer + (encoder) + actor mean + clamp to ``[-1, 1]``; what is
  exported to TorchScript and ONNX.

Policy files (``.pt``) hold only tensors and plain data (``{"model": state_dict, "meta": {...}}``)
and are loaded with ``torch.load(weights_only=True)``: loading never unpickles code.
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from isr_direct_dynamics.io_checks import atomic_output, describe_exception

Obs = Tensor | dict[str, Tensor]
"""An observation batch: a state tensor ``(N, obs_dim)`` or ``{"state", "image"}``."""

ACTIVATIONS: dict[str, type[nn.Module]] = {"elu": nn.ELU, "tanh": nn.Tanh, "relu": nn.ReLU}
"""Hidden-layer activations by config name."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` it into place.

    A crash (even ``kill -9``) leaves either the old file or the new one, never a torn file. The
    temporary file (``.<name>.<pid>-<hex>.tmp``) is removed on any exception, and stale ones left
    by a killed writer are deleted before writing (see :mod:`isr_direct_dynamics.io_checks`).
    """
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())


class TorchFileError(ValueError):
    """A ``.pt`` file that cannot be loaded; ``reason`` says why in a few words."""

    def __init__(self, message: str, path: Path, reason: str) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


def _torch_load_problem(exc: BaseException) -> str:
    """A short reason for a failed ``torch.load(weights_only=True)``."""
    import re

    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
        m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        what = f" ({m.group(1)})" if m else ""
        return (
            f"it holds pickled Python objects{what}, not only tensors and plain data; "
            "refused by the weights-only loader"
        )
    if "central directory" in text or "failed reading zip archive" in text:
        return "cut short: not a complete zip archive"
    if isinstance(exc, EOFError):
        return "cut short: the data ends early"
    if isinstance(exc, pickle.UnpicklingError) or "invalid load key" in text:
        return "not a PyTorch file"
    return describe_exception(exc)


def safe_load(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    what: str = "file",
    mmap: bool = False,
) -> Any:
    """Load a file written by :func:`atomic_torch_save` without unpickling code.

    A missing file raises ``FileNotFoundError``; an empty, cut-short, foreign or pickled-object
    file raises :class:`TorchFileError` (a ``ValueError``) ``<what> <path> is corrupt (<why>)``.
    ``mmap``: map the tensors instead of reading them (a cheap check of the whole structure).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    if p.stat().st_size == 0:
        raise TorchFileError(f"{what} {p} is corrupt (empty file)", p, "empty file")
    try:
        with open(p, "rb") as f:
            head = f.read(4)
        why = None
        if head.startswith(b"PK") and not zipfile.is_zipfile(p):
            why = "cut short: not a complete zip archive"
        elif not head.startswith(b"PK") and head[:1] != b"\x80":  # neither zip nor legacy pickle
            why = "not a PyTorch file"
        if why is not None:
            raise TorchFileError(f"{what} {p} is corrupt ({why})", p, why)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "looks like a TorchScript archive"
            return torch.load(
                p, map_location=map_location, weights_only=True, mmap=mmap and head == b"PK\x03\x04"
            )
    except TorchFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        if isinstance(exc, OSError):
            raise TorchFileError(
                f"cannot read {what} {p}: {exc.strerror or exc}", p, str(exc.strerror or exc)
            ) from None
        why = _torch_load_problem(exc)
        raise TorchFileError(f"{what} {p} is corrupt ({why})", p, why) from None


def load_checkpoint(
    path: str | Path,
    keys: Sequence[str] = (),
    previous: str | Path | None = None,
    map_location: str | torch.device = "cpu",
    mmap: bool = False,
) -> dict[str, Any]:
    """Load a training checkpoint (a dict with ``keys``) for resuming.

    Any problem (empty, cut short, pickled objects, not a dict, a missing key) raises a
    ``ValueError`` ``checkpoint <path> is corrupt (<why>); resume from <previous> or delete it``
    (``previous``: an earlier checkpoint; without one the message says deleting restarts).
    ``mmap``: only map the tensors (a cheap check before resuming; see :func:`safe_load`).
    """
    p = Path(path)
    try:
        data = safe_load(p, map_location=map_location, what="checkpoint", mmap=mmap)
    except TorchFileError as exc:
        raise ValueError(checkpoint_error(p, exc.reason, previous)) from None
    if not isinstance(data, dict):
        raise ValueError(
            checkpoint_error(p, f"holds a {type(data).__name__}, not a checkpoint dict", previous)
        )
    missing = [k for k in keys if k not in data]
    if missing:
        names = ", ".join(repr(k) for k in missing)
        why = f"no {names} entry: not a checkpoint of this stage"
        raise ValueError(checkpoint_error(p, why, previous))
    return data


def checkpoint_error(path: Path, why: str, previous: str | Path | None = None) -> str:
    """The one-line message of a checkpoint that cannot be resumed from."""
    if previous is not None:
        prev = Path(previous)
        return (
            f"checkpoint {path} is corrupt ({why}); resume from {prev} or delete it "
            f"(copy {prev.name} over {path.name} to resume from it)"
        )
    return (
        f"checkpoint {path} is corrupt ({why}); there is no earlier checkpoint to resume from: "
        "delete it (the stage then starts over)"
    )


class RunningMeanStd(nn.Module):
    """Running mean and variance of a feature vector; ``forward`` normalizes and clips.

    ``y = clip((x - mean) / sqrt(var + epsilon), -clip, clip)`` (the Stable-Baselines3
    ``VecNormalize`` formula). Statistics are merged with the parallel algorithm (Chan et al.).

    Args:
        shape: feature shape.
        epsilon: added to the variance (a floor of ``sqrt(epsilon)`` on the std).
        clip: bound of the normalized values.
    """

    def __init__(self, shape: int | Sequence[int], epsilon: float = 1e-4, clip: float = 10.0):
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.epsilon = float(epsilon)
        self.clip = float(clip)
        self.register_buffer("mean", torch.zeros(shape))  # (obs_dim,)
        self.register_buffer("var", torch.ones(shape))  # (obs_dim,)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))  # () samples seen

    @torch.no_grad()
    def update(self, x: Tensor, reduce: Callable[[Tensor], Tensor] | None = None) -> None:
        """Merge the statistics of the batch ``x`` ``(B, *shape)`` (any leading dims).

        ``reduce``: sums a float64 tensor over the ranks of a data-parallel job in place
        (:meth:`isr_training.distributed.DistContext.all_reduce_sum_`); the batch is then the
        union of every rank's ``x`` and every rank merges the same statistics.
        """
        x = x.reshape(-1, *self.mean.shape).to(torch.float64)
        if reduce is None:
            n = x.shape[0]
            if n == 0:
                return
            b_mean = x.mean(0)
            b_var = x.var(0, unbiased=False)
        else:
            flat = x.reshape(x.shape[0], -1)
            d = flat.shape[1]
            m = torch.cat((flat.sum(0), (flat * flat).sum(0), flat.new_tensor([flat.shape[0]])))
            reduce(m)
            n = float(m[-1])
            if n == 0:
                return
            b_mean = (m[:d] / n).view(self.mean.shape)
            b_var = (m[d : 2 * d] / n).view(self.mean.shape) - b_mean * b_mean
            b_var = b_var.clamp(min=0.0)
        count = self.count + n
        delta = b_mean - self.mean.double()
        mean = self.mean.double() + delta * (n / count)
        m2 = self.var.double() * self.count + b_var * n + delta**2 * (self.count * n / count)
        self.mean.copy_(mean.float())
        self.var.copy_((m2 / count).float())
        self.count.copy_(count)

    def forward(self, x: Tensor) -> Tensor:
        """Normalized, clipped ``x``."""
        y = (x - self.mean) / torch.sqrt(self.var + self.epsilon)
        return y.clamp(-self.clip, self.clip)


def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    activation: str = "elu",
    out_gain: float = 1.0,
) -> nn.Sequential:
    """An MLP ``in -> hidden... -> out`` with orthogonal init (hidden gain sqrt(2))."""
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        lin = nn.Linear(d, h)
        nn.init.orthogonal_(lin.weight, math.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers += [lin, act()]
        d = h
    out = nn.Linear(d, out_dim)
    nn.init.orthogonal_(out.weight, out_gain)
    nn.init.zeros_(out.bias)
    layers.append(out)
    return nn.Sequential(*layers)


class CNNEncoder(nn.Module):
    """Small CNN for ``(N, H, W, 3)`` uint8 camera images -> ``(N, features_dim)``.

    Three strided convolutions (5x5/2, 3x3/2, 3x3/2) and a linear layer; works for any resolution
    of at least 24x24 (the flattened size is measured at construction).
    """

    def __init__(
        self, image_shape: Sequence[int], features_dim: int = 128, activation: str = "elu"
    ):
        super().__init__()
        h, w, c = (int(v) for v in image_shape)
        act = ACTIVATIONS[activation]
        self.conv = nn.Sequential(
            nn.Conv2d(c, 16, 5, stride=2),
            act(),
            nn.Conv2d(16, 32, 3, stride=2),
            act(),
            nn.Conv2d(32, 32, 3, stride=2),
            act(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.conv(torch.zeros(1, c, h, w)).shape[1]
        self.fc = nn.Sequential(nn.Linear(n_flat, features_dim), act())
        self.features_dim = features_dim

    def forward(self, image: Tensor) -> Tensor:
        """Features of ``image`` ``(N, H, W, 3)`` uint8."""
        x = image.permute(0, 3, 1, 2).float() / 255.0
        return self.fc(self.conv(x))


class ActorCritic(nn.Module):
    """Gaussian actor (mean MLP + log-std parameter) and value critic, with obs normalization.

    Args:
        obs_dim: length of the state observation.
        act_dim: action dimension (4).
        hidden_sizes: hidden layers of the actor and the critic MLPs.
        activation: hidden activation (``elu``, ``tanh``, ``relu``).
        init_log_std: initial log standard deviation of every action dimension.
        image_shape: ``(H, W, 3)`` of camera observations; None = state observations only.
        cnn_features: feature size of the CNN encoder.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int = 4,
        hidden_sizes: Sequence[int] = (256, 256, 256),
        activation: str = "elu",
        init_log_std: float = -0.5,
        image_shape: Sequence[int] | None = None,
        cnn_features: int = 128,
    ) -> None:
        super().__init__()
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        self.hidden_sizes = [int(h) for h in hidden_sizes]
        self.activation = activation
        self.image_shape = None if image_shape is None else [int(v) for v in image_shape]
        self.cnn_features = int(cnn_features)
        self.obs_norm = RunningMeanStd(obs_dim)
        self.encoder = (
            CNNEncoder(image_shape, cnn_features, activation) if image_shape is not None else None
        )
        in_dim = obs_dim + (cnn_features if image_shape is not None else 0)
        self.actor = mlp(in_dim, self.hidden_sizes, act_dim, activation, out_gain=0.01)
        self.critic = mlp(in_dim, self.hidden_sizes, 1, activation, out_gain=1.0)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def meta(self) -> dict[str, Any]:
        """Constructor arguments (plain data, stored in policy files)."""
        return {
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "hidden_sizes": list(self.hidden_sizes),
            "activation": self.activation,
            "image_shape": self.image_shape,
            "cnn_features": self.cnn_features,
        }

    def features(self, obs: Obs) -> Tensor:
        """Input of the actor and critic MLPs: normalized state (+ image features)."""
        if isinstance(obs, dict):
            x = self.obs_norm(obs["state"])
            if self.encoder is not None:
                x = torch.cat((x, self.encoder(obs["image"])), -1)
            return x
        return self.obs_norm(obs)

    def action_mean(self, obs: Obs) -> Tensor:
        """Mean of the action distribution ``(N, act_dim)`` (the deterministic action)."""
        return self.actor(self.features(obs))

    def value(self, obs: Obs) -> Tensor:
        """Value estimate ``(N,)``."""
        return self.critic(self.features(obs)).squeeze(-1)

    def act(
        self, obs: Obs, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Sample actions; return ``(action (N, A), log_prob (N,), value (N,))``."""
        x = self.features(obs)
        mean = self.actor(x)
        std = self.log_std.exp()
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        action = mean + std * noise
        logp = _gaussian_log_prob(action, mean, self.log_std)
        return action, logp, self.critic(x).squeeze(-1)

    def evaluate(self, obs: Obs, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(log_prob (N,), entropy (N,), value (N,))`` of ``action`` under the current policy."""
        return self.evaluate_with_mean(obs, action)[:3]

    def evaluate_with_mean(self, obs: Obs, action: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`evaluate` plus the action mean ``(N, act_dim)`` it computed on the way."""
        x = self.features(obs)
        mean = self.actor(x)
        logp = _gaussian_log_prob(action, mean, self.log_std)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).sum().expand(mean.shape[0])
        return logp, entropy, self.critic(x).squeeze(-1), mean


def _gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Log density of a diagonal Gaussian, summed over the last dim."""
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class BCPolicy(nn.Module):
    """Deterministic MLP policy: ``obs_norm`` + ``actor`` exactly as in :class:`ActorCritic`.

    The behaviour-cloning model; also the container of policies converted from SB3 (``squash``
    appends a tanh to the actor, as SB3's SAC squashes its mean; it has no parameters, so the
    state-dict layout is unchanged).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int = 4,
        hidden_sizes: Sequence[int] = (256, 256, 256),
        activation: str = "elu",
        squash: bool = False,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.hidden_sizes = [int(h) for h in hidden_sizes]
        self.activation = activation
        self.squash = bool(squash)
        self.obs_norm = RunningMeanStd(obs_dim)
        self.actor = mlp(obs_dim, self.hidden_sizes, act_dim, activation, out_gain=0.01)
        if self.squash:
            self.actor.append(nn.Tanh())

    def meta(self) -> dict[str, Any]:
        """Constructor arguments (plain data)."""
        return {
            "kind": "mlp",
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "hidden_sizes": list(self.hidden_sizes),
            "activation": self.activation,
            "squash": self.squash,
        }

    def forward(self, obs: Tensor) -> Tensor:
        """Predicted action ``(N, act_dim)`` (unclipped)."""
        return self.actor(self.obs_norm(obs))


class LSTMBCPolicy(nn.Module):
    """Behaviour-cloning LSTM (the PiDog pipeline's imitation model): normalizer, LSTM, MLP head.

    ``forward(obs (B, T, obs_dim), state) -> (actions (B, T, A), state)``; ``state`` is the LSTM's
    ``(h, c)`` pair, each ``(layers, B, hidden)``, or None for zeros.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int = 4,
        hidden_size: int = 256,
        num_layers: int = 1,
        activation: str = "elu",
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.hidden_size, self.num_layers = int(hidden_size), int(num_layers)
        self.activation = activation
        self.obs_norm = RunningMeanStd(obs_dim)
        self.lstm = nn.LSTM(obs_dim, hidden_size, num_layers, batch_first=True)
        self.head = mlp(hidden_size, (hidden_size,), act_dim, activation, out_gain=0.01)

    def meta(self) -> dict[str, Any]:
        """Constructor arguments (plain data)."""
        return {
            "kind": "lstm",
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "activation": self.activation,
        }

    def forward(
        self, obs: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Actions for a batch of sequences and the final LSTM state."""
        y, state = self.lstm(self.obs_norm(obs), state)
        return self.head(y), state


def init_actor_from_bc(policy: ActorCritic, bc: BCPolicy) -> None:
    """Copy the BC MLP (normalizer and actor mean) into ``policy`` (same architecture)."""
    if policy.encoder is not None:
        raise ValueError("the actor of a camera policy cannot be initialized from a state BC MLP")
    if bc.squash or (bc.obs_dim, bc.act_dim, bc.hidden_sizes, bc.activation) != (
        policy.obs_dim,
        policy.act_dim,
        policy.hidden_sizes,
        policy.activation,
    ):
        raise ValueError(
            "BC model and PPO actor differ: "
            f"BC {bc.obs_dim}->{bc.hidden_sizes}->{bc.act_dim} ({bc.activation}), PPO "
            f"{policy.obs_dim}->{policy.hidden_sizes}->{policy.act_dim} ({policy.activation})"
        )
    policy.obs_norm.load_state_dict(bc.obs_norm.state_dict())
    policy.actor.load_state_dict(bc.actor.state_dict())


class DeployPolicy(nn.Module):
    """The deterministic policy for deployment: normalize, (encode), actor mean, clamp to [-1, 1].

    ``forward(state)`` for state policies, ``forward(state, image)`` for camera policies.
    """

    def __init__(self, policy: ActorCritic | BCPolicy) -> None:
        super().__init__()
        import copy

        self.obs_norm = copy.deepcopy(policy.obs_norm)
        self.actor = copy.deepcopy(policy.actor)
        enc = getattr(policy, "encoder", None)
        self.encoder = copy.deepcopy(enc) if enc is not None else None
        self.eval()

    @classmethod
    def from_state_dict(cls, sd: dict[str, Tensor], activation: str = "elu") -> DeployPolicy:
        """A state policy rebuilt from its exported ``policy.pt`` state dict.

        The actor's layer sizes are read from the weights; ``activation`` comes from the file's
        metadata. Camera policies (``encoder.*`` weights) are refused: their TorchScript export
        carries the encoder. Raises ``KeyError``/``ValueError``/``RuntimeError`` for a malformed
        state dict.
        """
        if any(str(k).startswith("encoder.") for k in sd):
            raise ValueError("a camera policy's state dict (use its TorchScript export)")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        layers = sorted(
            {int(k.split(".")[1]) for k in sd if k.startswith("actor.") and k.endswith(".weight")}
        )
        if not layers:
            raise ValueError("no actor.* weights")
        dims = [sd[f"actor.{i}.weight"].shape for i in layers]
        policy = cls.__new__(cls)
        nn.Module.__init__(policy)
        policy.obs_norm = RunningMeanStd(int(sd["obs_norm.mean"].shape[0]))
        policy.actor = mlp(
            int(dims[0][1]), [int(d[0]) for d in dims[:-1]], int(dims[-1][0]), activation
        )
        policy.encoder = None
        policy.load_state_dict(sd)
        policy.eval()
        return policy

    def forward(self, state: Tensor, image: Tensor | None = None) -> Tensor:
        """Action ``(N, 4)`` in ``[-1, 1]``."""
        x = self.obs_norm(state)
        if self.encoder is not None and image is not None:
            x = torch.cat((x, self.encoder(image)), -1)
        return self.actor(x).clamp(-1.0, 1.0)


def save_policy(path: str | Path, policy: nn.Module, extra: dict[str, Any] | None = None) -> None:
    """Write ``{"model": state_dict, "meta": policy.meta() + extra}`` atomically."""
    meta = dict(policy.meta())
    meta["class"] = type(policy).__name__
    meta.update(extra or {})
    atomic_torch_save({"model": policy.state_dict(), "meta": meta}, path)


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load a policy file of :func:`save_policy` (``ActorCritic``, ``BCPolicy``, ``LSTMBCPolicy``).

    Uses ``weights_only=True``; returns ``(module in eval mode, meta)``.
    """
    data = safe_load(path, map_location=device, what="policy file")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("meta"), dict)
        or not isinstance(data.get("model"), dict)
    ):
        raise ValueError(
            f"policy file {path} is not a policy of this workspace (expected a dict with 'model' "
            "and 'meta')"
        )
    meta = dict(data["meta"])
    cls = meta.get("class")
    need = {
        "ActorCritic": ("obs_dim", "act_dim", "hidden_sizes", "activation"),
        "BCPolicy": ("obs_dim", "act_dim", "hidden_sizes", "activation"),
        "LSTMBCPolicy": ("obs_dim", "act_dim", "hidden_size", "num_layers", "activation"),
    }.get(cls, ())
    lacking = [k for k in need if k not in meta]
    if lacking:
        raise ValueError(f"policy file {path}: its {cls} metadata lacks {', '.join(lacking)}")
    if cls == "ActorCritic":
        model: nn.Module = ActorCritic(
            meta["obs_dim"],
            meta["act_dim"],
            meta["hidden_sizes"],
            meta["activation"],
            image_shape=meta.get("image_shape"),
            cnn_features=meta.get("cnn_features", 128),
        )
    elif cls == "BCPolicy":
        model = BCPolicy(
            meta["obs_dim"],
            meta["act_dim"],
            meta["hidden_sizes"],
            meta["activation"],
            squash=meta.get("squash", False),
        )
    elif cls == "LSTMBCPolicy":
        model = LSTMBCPolicy(
            meta["obs_dim"],
            meta["act_dim"],
            meta["hidden_size"],
            meta["num_layers"],
            meta["activation"],
        )
    else:
        raise ValueError(f"policy file {path}: unknown policy class {cls!r}")
    try:
        model.load_state_dict(data["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise ValueError(
            f"policy file {path} is corrupt: its weights do not fit its {cls} metadata "
            f"({describe_exception(exc)})"
        ) from None
    return model.to(device).eval(), meta
