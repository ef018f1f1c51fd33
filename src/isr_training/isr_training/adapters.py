"""Thin adapters from :class:`~isr_training.env.ISREnv` to Gymnasium and Stable-Baselines3.

- :class:`ISRGymVectorEnv`: ``gymnasium.vector.VectorEnv`` (numpy, same-step autoreset:
  ``infos["final_obs"]`` / ``infos["_final_obs"]`` as Gymnasium's ``SAME_STEP`` mode).
- :class:`ISRSB3VecEnv`: SB3 ``VecEnv`` without subprocesses (``dones = terminated | truncated``,
  ``infos[i]["terminal_observation"]`` and ``infos[i]["TimeLimit.truncated"]``, episode stats in
  ``infos[i]["episode"]`` as SB3's Monitor writes them: ``r``, ``l``, ``t``).
- :class:`ISRSearchEnv`: one drone in one world as a ``gymnasium.Env``, registered as
  ``ISRSearch-v0`` (passes Gymnasium's and SB3's env checkers).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from stable_baselines3.common.vec_env import VecEnv

from .env import EnvConfig, ISREnv

OBS_BOUND = 10.0
"""Bound of the state observation space (the env clips its state vector to it)."""


def _spaces(env: ISREnv) -> tuple[spaces.Space, spaces.Box]:
    state = spaces.Box(-OBS_BOUND, OBS_BOUND, (env.obs_dim,), np.float32)
    action = spaces.Box(-1.0, 1.0, (4,), np.float32)
    if env.image is None:
        return state, action
    image = spaces.Box(0, 255, env.image_shape, np.uint8)
    return spaces.Dict({"state": state, "image": image}), action


def _to_numpy(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: v.detach().cpu().numpy() for k, v in obs.items()}
    return obs.detach().cpu().numpy()


def _row(obs: Any, i: int) -> Any:
    if isinstance(obs, dict):
        return {k: v[i] for k, v in obs.items()}
    return obs[i]


class ISRGymVectorEnv(VectorEnv):
    """Gymnasium vector env over all drones of an :class:`ISREnv` (one sub-env per drone)."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self, config: EnvConfig | None = None, device: str = "cpu", env: ISREnv | None = None
    ):
        self.env = env or ISREnv(config, device)
        self.num_envs = self.env.num_envs
        self.single_observation_space, self.single_action_space = _spaces(self.env)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset every drone."""
        return _to_numpy(self.env.reset(seed=seed)), {}

    def step(self, actions):
        """Step every drone; done drones are reset in the same step."""
        act = torch.as_tensor(np.asarray(actions), dtype=torch.float32, device=self.env.device)
        obs, rew, term, trunc, info = self.env.step(act)
        done = info["done"].cpu().numpy()
        infos: dict[str, Any] = {
            "reward_terms": {k: v.cpu().numpy() for k, v in info["reward_terms"].items()},
            "interventions": {k: v.cpu().numpy() for k, v in info["interventions"].items()},
        }
        if done.any():
            final = _to_numpy(info["final_obs"])
            arr = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                arr[i] = _row(final, i)
            infos["final_obs"], infos["_final_obs"] = arr, done
            infos["episode"] = {k: v.cpu().numpy() for k, v in info["episode"].items()}
            infos["_episode"] = done
        return (
            _to_numpy(obs),
            rew.cpu().numpy(),
            term.cpu().numpy(),
            trunc.cpu().numpy(),
            infos,
        )


class ISRSB3VecEnv(VecEnv):
    """Stable-Baselines3 ``VecEnv`` over all drones of an :class:`ISREnv` (no subprocesses)."""

    def __init__(
        self, config: EnvConfig | None = None, device: str = "cpu", env: ISREnv | None = None
    ):
        self.env = env or ISREnv(config, device)
        obs_space, act_space = _spaces(self.env)
        super().__init__(self.env.num_envs, obs_space, act_space)
        self._actions: torch.Tensor | None = None
        self._t0 = time.time()

    def reset(self):
        """Reset every drone (seeded by ``seed()`` when called before)."""
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        obs = self.env.reset(seed=seed)
        self._reset_seeds()
        return _to_numpy(obs)

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions of the next step."""
        self._actions = torch.as_tensor(actions, dtype=torch.float32, device=self.env.device)

    def step_wait(self):
        """Step every drone; SB3 infos for the drones whose episode ended."""
        obs, rew, term, trunc, info = self.env.step(self._actions)
        done = info["done"].cpu().numpy()
        trunc_np = trunc.cpu().numpy()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done.any():
            final = _to_numpy(info["final_obs"])
            ep = {k: v.cpu().numpy() for k, v in info["episode"].items()}
            elapsed = round(time.time() - self._t0, 6)
            for i in np.flatnonzero(done):
                infos[i]["terminal_observation"] = _row(final, i)
                infos[i]["TimeLimit.truncated"] = bool(trunc_np[i])
                infos[i]["episode"] = {"r": float(ep["return"][i]), "l": int(ep["length"][i]),
                                       "t": elapsed}  # fmt: skip
                infos[i]["isr_metrics"] = {k: float(v[i]) for k, v in ep.items()}
        return _to_numpy(obs), rew.cpu().numpy(), done, infos

    def close(self) -> None:
        """Nothing to release."""

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        """Attribute of the underlying env, once per selected index."""
        return [getattr(self.env, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        """Set an attribute of the underlying env."""
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        """Call a method of the underlying env."""
        result = getattr(self.env, method_name)(*args, **kwargs)
        return [result] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        """No gym wrappers are involved."""
        return [False] * len(self._get_indices(indices))


class ISRSearchEnv(gym.Env):
    """One drone in one world (``ISRSearch-v0``): the single-agent Gymnasium view of the task."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self, config: EnvConfig | None = None, render_mode: str | None = None, **overrides: Any
    ):
        cfg = copy.deepcopy(config) if config is not None else EnvConfig()
        cfg.num_worlds, cfg.drones_per_world, cfg.stagger = 1, 1, False
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise ValueError(f"unknown ISRSearch-v0 option '{k}'")
            setattr(cfg, k, v)
        self.env = ISREnv(cfg, "cpu")
        self.observation_space, self.action_space = _spaces(self.env)
        self.render_mode = render_mode
        self._obs = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset the drone (and the world's moving targets); seeded when ``seed`` is given."""
        super().reset(seed=seed)
        if seed is None and self._obs is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        self._obs = _row(_to_numpy(self.env.reset(seed=seed)), 0)
        return self._obs, {}

    def step(self, action):
        """One control step; at the end of an episode the final observation is returned."""
        act = torch.as_tensor(np.asarray(action, dtype=np.float32).reshape(1, 4))
        obs, rew, term, trunc, info = self.env.step(act)
        done = bool(info["done"][0])
        out = info["final_obs"] if done else obs
        self._obs = _row(_to_numpy(out), 0)
        extra: dict[str, Any] = {
            "reward_terms": {k: float(v[0]) for k, v in info["reward_terms"].items()}
        }
        if done:
            extra["episode"] = {k: float(v[0]) for k, v in info["episode"].items()}
        return self._obs, float(rew[0]), bool(term[0]), bool(trunc[0]), extra

    def render(self):
        """The last camera frame (only when the camera is on)."""
        if self.env.image is None:
            return None
        return self.env.image[0, 0].cpu().numpy()


def register_envs() -> None:
    """Register ``ISRSearch-v0`` with Gymnasium (idempotent)."""
    if "ISRSearch-v0" not in gym.registry:
        gym.register(id="ISRSearch-v0", entry_point="isr_training.adapters:ISRSearchEnv")
