"""The one vehicle-model interface that the rest of the workspace builds on.

A model flies ``num_worlds x drones_per_world`` drones at once. It is chosen at construction
(:func:`isr_direct_dynamics.make_vehicle_model`); callers only use :meth:`VehicleModel.reset` and
:meth:`VehicleModel.step`, both batched, both free of per-drone Python loops.

Action contract (shared by every model): ``(W, D, 4)`` normalized ``[vx, vy, vz, yaw_rate]`` in
``[-1, 1]``, world ENU, scaled by the vehicle limits (:class:`VelocityLimits`). Out-of-range values
are clipped. Non-finite entries (NaN/inf) make that drone's whole command a zero command for the
step; they never reach the state and are counted in :attr:`VehicleModel.nonfinite_action_count`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from .config import check
from .math3d import quat_from_yaw


@dataclass
class VelocityLimits:
    """Scaling of the normalized action into velocity and yaw-rate commands."""

    max_velocity_m_s: float = 10.0
    """Horizontal speed at action +-1 on one axis (the original plan's max_velocity)."""
    max_vertical_velocity_m_s: float = 5.0
    """Vertical speed at action +-1 (the plan's max_vertical_velocity)."""
    max_yaw_rate_deg_s: float = 90.0
    """Yaw rate at action +-1 (the plan's max_yaw_rate)."""
    clip_horizontal_norm: bool = True
    """Limit the commanded horizontal speed to ``max_velocity_m_s`` also on diagonals (as PX4's
    ``MPC_XY_VEL_MAX`` limits the norm); ``False`` scales each axis independently."""

    def validate(self, prefix: str = "") -> None:
        """Check ranges; raises :class:`ConfigError` naming the field (after ``prefix``)."""
        for name in ("max_velocity_m_s", "max_vertical_velocity_m_s", "max_yaw_rate_deg_s"):
            v = getattr(self, name)
            check(math.isfinite(v) and v > 0, f"{prefix}{name}", f"must be > 0, got {v}")


def scale_action(action: Tensor, limits: VelocityLimits) -> tuple[Tensor, Tensor]:
    """Map a clean normalized action ``(..., 4)`` to ``(velocity ENU (..., 3), yaw rate (...))``."""
    scale = action.new_tensor(
        [limits.max_velocity_m_s, limits.max_velocity_m_s, limits.max_vertical_velocity_m_s]
    )
    vel = action[..., :3] * scale
    if limits.clip_horizontal_norm:
        speed = torch.hypot(vel[..., 0:1], vel[..., 1:2])
        factor = torch.clamp(limits.max_velocity_m_s / torch.clamp(speed, min=1e-9), max=1.0)
        vel = torch.cat((vel[..., :2] * factor, vel[..., 2:]), dim=-1)
    yaw_rate = action[..., 3] * math.radians(limits.max_yaw_rate_deg_s)
    return vel, yaw_rate


@dataclass
class VehicleState:
    """State of all drones, struct-of-arrays, leading dims ``(W, D)`` = (worlds, drones per world).

    World frame ENU (x east, y north, z up), body frame FLU (x forward, y left, z up), SI units.
    """

    pos_enu_m: Tensor  # (W, D, 3)
    """Position of the body origin in world ENU, metres."""
    vel_enu_m_s: Tensor  # (W, D, 3)
    """Linear velocity in world ENU, m/s."""
    quat_wxyz: Tensor  # (W, D, 4)
    """Attitude, unit quaternion body FLU -> world ENU, (w, x, y, z)."""
    body_rates_flu_rad_s: Tensor  # (W, D, 3)
    """Angular velocity in body FLU, rad/s."""
    yaw_rad: Tensor  # (W, D)
    """Heading in world ENU, radians in [-pi, pi) (0 = facing east, counter-clockwise positive)."""
    ground_contact: Tensor  # (W, D) bool
    """True while the drone rests on (or was clamped to) the terrain this step."""

    @classmethod
    def zeros(
        cls, num_worlds: int, drones_per_world: int, device: torch.device | str
    ) -> VehicleState:
        """All drones at the origin, level, facing east, at rest."""
        shape = (num_worlds, drones_per_world)
        quat = torch.zeros(*shape, 4, device=device)
        quat[..., 0] = 1.0
        return cls(
            pos_enu_m=torch.zeros(*shape, 3, device=device),
            vel_enu_m_s=torch.zeros(*shape, 3, device=device),
            quat_wxyz=quat,
            body_rates_flu_rad_s=torch.zeros(*shape, 3, device=device),
            yaw_rad=torch.zeros(shape, device=device),
            ground_contact=torch.zeros(shape, dtype=torch.bool, device=device),
        )

    def clone(self) -> VehicleState:
        """Deep copy of every tensor."""
        return VehicleState(**{f.name: getattr(self, f.name).clone() for f in fields(self)})

    def masked_assign(self, mask: Tensor, other: VehicleState) -> None:
        """In place: copy ``other``'s drones where ``mask (W, D)`` is true."""
        for f in fields(self):
            dst, src = getattr(self, f.name), getattr(other, f.name)
            m = mask.view(*mask.shape, *([1] * (dst.dim() - mask.dim())))
            dst.copy_(torch.where(m, src, dst))


@dataclass
class InitialState:
    """What a reset sets: position, yaw and (optionally) velocity, each ``(W, D, ...)``."""

    pos_enu_m: Tensor  # (W, D, 3)
    yaw_rad: Tensor | None = None  # (W, D); None = 0
    vel_enu_m_s: Tensor | None = None  # (W, D, 3); None = at rest

    def to_state(self) -> VehicleState:
        """A full state, level attitude, zero body rates, no contact."""
        pos = self.pos_enu_m
        yaw = self.yaw_rad if self.yaw_rad is not None else torch.zeros_like(pos[..., 0])
        vel = self.vel_enu_m_s if self.vel_enu_m_s is not None else torch.zeros_like(pos)
        return VehicleState(
            pos_enu_m=pos.clone(),
            vel_enu_m_s=vel.clone(),
            quat_wxyz=quat_from_yaw(yaw),
            body_rates_flu_rad_s=torch.zeros_like(pos),
            yaw_rad=yaw.clone(),
            ground_contact=torch.zeros_like(pos[..., 0], dtype=torch.bool),
        )


def flat_ground(pos_enu_m: Tensor) -> Tensor:
    """Terrain height (m) under each position: the flat plane z = 0. Shape ``pos[..., 0]``."""
    return torch.zeros_like(pos_enu_m[..., 0])


class VehicleModel(ABC):
    """Batched vehicle model over ``(num_worlds, drones_per_world)`` drones.

    Subclasses implement :meth:`_reset_masked` and :meth:`_step_clean`; this base class sanitizes
    actions, counts non-finite ones and owns the state object (updated in place, so references
    handed out stay valid).
    """

    #: Registry name (``direct``, ``quadrotor``).
    name: str = ""

    def __init__(
        self,
        num_worlds: int,
        drones_per_world: int,
        control_dt_s: float,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        check(num_worlds >= 1, "num_worlds", f"must be >= 1, got {num_worlds}")
        check(drones_per_world >= 1, "drones_per_world", f"must be >= 1, got {drones_per_world}")
        check(
            math.isfinite(control_dt_s) and control_dt_s > 0,
            "control_dt_s",
            f"must be > 0, got {control_dt_s}",
        )
        self.num_worlds = num_worlds
        self.drones_per_world = drones_per_world
        self.control_dt_s = float(control_dt_s)
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.state = VehicleState.zeros(num_worlds, drones_per_world, self.device)
        self.nonfinite_action_count = torch.zeros((), dtype=torch.long, device=self.device)
        """Number of drone-steps whose command held NaN/inf and was replaced by a zero command."""
        self.action_bounds: tuple[float | Tensor, float | Tensor] = (-1.0, 1.0)
        """``(low, high)`` the sanitized action is clipped to: ``[-1, 1]``, or per channel ``(4,)``
        where a model narrows it (the direct model's PX4 climb/descent clip)."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(num_worlds, drones_per_world)``."""
        return (self.num_worlds, self.drones_per_world)

    @property
    def num_drones(self) -> int:
        """Total number of drones ``W * D``."""
        return self.num_worlds * self.drones_per_world

    def sanitize_action(self, action: Tensor) -> Tensor:
        """Shape check, NaN/inf -> zero command (counted), clip to :attr:`action_bounds`."""
        expected = (self.num_worlds, self.drones_per_world, 4)
        if tuple(action.shape) != expected:
            raise ValueError(f"action has shape {tuple(action.shape)}, expected {expected}")
        action = action.to(device=self.device, dtype=torch.float32)
        bad = ~torch.isfinite(action).all(dim=-1)  # (W, D)
        self.nonfinite_action_count += bad.sum()
        action = torch.where(bad.unsqueeze(-1), torch.zeros_like(action), action)
        return action.clamp(*self.action_bounds)

    def reset(
        self, mask: Tensor | None = None, initial: InitialState | None = None
    ) -> VehicleState:
        """Reset the drones where ``mask (W, D)`` is true (all when None) to ``initial``.

        Drones outside the mask are untouched (state, filters, delay buffers, integrators).
        ``initial=None`` puts them at the origin on the ground-level plane at rest.
        """
        if mask is None:
            mask = torch.ones(self.shape, dtype=torch.bool, device=self.device)
        if tuple(mask.shape) != self.shape:
            raise ValueError(f"reset mask has shape {tuple(mask.shape)}, expected {self.shape}")
        if initial is None:
            initial = InitialState(pos_enu_m=torch.zeros(*self.shape, 3, device=self.device))
        self._reset_masked(mask.to(self.device), initial)
        return self.state

    def step(self, action: Tensor) -> VehicleState:
        """Advance all drones by one control step ``control_dt_s`` under ``action (W, D, 4)``."""
        self._step_clean(self.sanitize_action(action))
        return self.state

    @abstractmethod
    def _reset_masked(self, mask: Tensor, initial: InitialState) -> None:
        """Reset masked drones; called with a validated ``(W, D)`` bool mask."""

    @abstractmethod
    def _step_clean(self, action: Tensor) -> None:
        """One control step under a sanitized action ``(W, D, 4)`` in ``[-1, 1]``."""
