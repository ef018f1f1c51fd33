"""Batched vehicle models of the ISR workspace.

Two models share one interface (:class:`VehicleModel`): the direct dynamics of fast mode
(:class:`DirectDynamics`) and the full-fidelity 6-DoF quadrotor flown by a PX4-like cascade
(``QuadrotorModel``). The rest of the workspace picks one at construction with
:func:`make_vehicle_model`.
"""

from __future__ import annotations

from . import threads as threads  # first: sets libgomp's spin before torch loads it

# isort: split
from typing import Any

import torch

from .base import InitialState, VehicleModel, VehicleState, VelocityLimits, scale_action
from .config import ConfigError, from_dict
from .direct import DirectDynamics, DirectDynamicsConfig, DirectParams

MODEL_NAMES: tuple[str, ...] = ("direct", "quadrotor")
"""Names accepted by :func:`make_vehicle_model`."""


def make_vehicle_model(
    name: str,
    num_worlds: int,
    drones_per_world: int,
    control_dt_s: float,
    device: torch.device | str = "cpu",
    seed: int = 0,
    config: Any = None,
    **kwargs: Any,
) -> VehicleModel:
    """Build the vehicle model ``name`` (``direct`` or ``quadrotor``).

    ``config`` is the model's config dataclass, a plain mapping validated into it, or None for the
    defaults. Extra keyword arguments go to the model's constructor.
    """
    if name == "direct":
        cls, cfg_cls = DirectDynamics, DirectDynamicsConfig
    elif name == "quadrotor":
        from .quadrotor import QuadrotorConfig, QuadrotorModel

        cls, cfg_cls = QuadrotorModel, QuadrotorConfig
    else:
        raise ConfigError(f"unknown vehicle model '{name}' (choose from {', '.join(MODEL_NAMES)})")
    if isinstance(config, dict):
        config = from_dict(cfg_cls, config)
    return cls(num_worlds, drones_per_world, control_dt_s, device, seed, config=config, **kwargs)


__all__ = [
    "MODEL_NAMES",
    "ConfigError",
    "DirectDynamics",
    "DirectDynamicsConfig",
    "DirectParams",
    "InitialState",
    "VehicleModel",
    "VehicleState",
    "VelocityLimits",
    "make_vehicle_model",
    "scale_action",
]
