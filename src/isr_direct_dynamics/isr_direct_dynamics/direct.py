"""Direct dynamics (fast mode): the original plan's simplified flight model, batched, dt-free.

The normalized action is scaled to a commanded velocity ``c`` (world ENU) and yaw rate. Each axis
responds to its command through a first-order lag; horizontal and vertical axes can add a second,
slow pole in parallel (the part of PX4's response that creeps in through its velocity
integrator, see PX4_NOTES.md and issue 6)::

    v      = v_fast + v_slow
    v_fast -> (1 - f) c   with time constant tau        (fast pole)
    v_slow ->      f  c   with time constant tau_slow   (slow pole; f = slow_fraction, 0 = off)

Optionally the horizontal fast pole couples to the vertical response: a multicopter accelerates
horizontally by tilting its thrust, so while it climbs harder (vertical acceleration ``a_z``) the
same tilt gives more horizontal acceleration, and less while it sinks. Each step's horizontal
change of ``v_fast`` is scaled by ``1 + k a_z / g`` (``k = vertical_coupling``, 0 = off, the
factor clamped to [0, 2]; ``a_z`` is the model's own vertical acceleration over the step). Fitted
to the embedded full-fidelity quadrotor it lowers the held-out horizontal error markedly (issue 6;
see ``isr tune-dynamics --from embedded``). Likewise the horizontal fast-pole change per step can
be limited to ``max_horizontal_accel_m_s2 x dt`` in norm (the tilt limit of a real multicopter;
0 = off). These two terms are the parts that depend (mildly) on dt.

With ``f = 0`` and ``k = 0`` this is exactly the plan's first-order response. Every step is
integrated in closed form for a command held constant over the step
(``v(t+dt) = c + (v - c) exp(-dt / tau)`` and the
exact integral of it for the position), so trajectories do not depend on the control period dt
(up to how the command itself is sampled). The plan's per-step damping ``0.95`` is accepted and
converted: ``v_{k+1} = d v_k + (1 - d) c`` at reference period ``T`` equals a time constant
``tau = -T / ln(d)``.

Options (chosen once at construction, never branched on inside ``step``): transport delay of ``k``
control steps per drone, process noise on velocity and position (domain randomization), attitude
tilt derived from the acceleration (so that a mounted camera tilts as a real multicopter does).
The ground is the terrain plane (``terrain_height_fn``): a drone never goes below it; touching it
clamps the position, zeroes the downward velocity and sets ``ground_contact``.

Parameters live per drone in :class:`DirectParams` (tensors ``(W, D)``), so randomization can give
every drone its own (:meth:`DirectDynamics.set_params`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple

import torch
from torch import Tensor

from . import cpu_kernels
from .base import InitialState, VehicleModel, VelocityLimits, flat_ground
from .config import check, validate_tree

GRAVITY_M_S2 = 9.80665


@dataclass
class DirectDynamicsConfig:
    """Configuration of the direct (fast-mode) dynamics. Defaults from PX4_NOTES.md estimates."""

    limits: VelocityLimits = field(default_factory=VelocityLimits)
    """Action scaling (max velocity 10 m/s, vertical 5 m/s, yaw rate 90 deg/s)."""
    tau_horizontal_s: float = 0.65
    """Time constant of the fast horizontal pole, seconds."""
    tau_vertical_s: float = 0.3
    """Time constant of the fast vertical pole, seconds."""
    tau_yaw_s: float = 0.2
    """Time constant of the yaw-rate response, seconds."""
    slow_fraction_horizontal: float = 0.0
    """Share of the horizontal command reached through the slow pole (0 = plain first order)."""
    tau_slow_horizontal_s: float = 3.0
    """Time constant of the slow horizontal pole, seconds."""
    slow_fraction_vertical: float = 0.0
    """Share of the vertical command reached through the slow pole (0 = plain first order)."""
    tau_slow_vertical_s: float = 3.0
    """Time constant of the slow vertical pole, seconds."""
    damping_per_step: float | None = None
    """The original plan's per-step velocity damping (e.g. 0.95). When set it replaces
    ``tau_horizontal_s``, ``tau_vertical_s`` and ``tau_yaw_s`` by ``-damping_reference_dt_s /
    ln(damping_per_step)``."""
    damping_reference_dt_s: float = 1.0 / 60.0
    """Step period at which ``damping_per_step`` was defined (the plan ran at 60 frames/s)."""
    vertical_coupling: float = 0.0
    """Scale of the horizontal fast-pole change by ``1 + k a_z / g`` (0 = off; see above)."""
    max_horizontal_accel_m_s2: float = 0.0
    """Limit of the horizontal fast-pole acceleration (norm), m/s^2 (0 = no limit)."""
    delay_steps: int = 0
    """Transport delay of the command, in control steps (0 = none)."""
    vel_noise_m_s_per_sqrt_s: float = 0.0
    """Velocity process noise: random-walk density; the std added per step is this x sqrt(dt)."""
    pos_noise_m_per_sqrt_s: float = 0.0
    """Position process noise density; the std added per step is this x sqrt(dt)."""
    tilt_from_acceleration: bool = True
    """Derive roll/pitch from the acceleration (a multicopter's thrust direction); off = level."""
    max_tilt_deg: float = 45.0
    """Limit of the derived tilt (PX4 ``MPC_TILTMAX_AIR``)."""
    tilt_drag_1_s: float = 0.0
    """Linear drag over mass, 1/s, in the derived tilt: the thrust also balances the drag, so a
    multicopter flying level at speed ``v`` leans ``atan(c v / g)`` (PX4 SIH: ``SIH_KDV /
    SIH_MASS`` = 1/s, i.e. 45 deg at 10 m/s). Changes only the attitude (camera), not the
    velocity response. ``isr tune-dynamics`` fits it where the flight has attitude."""

    max_climb_rate_m_s: float | None = 3.0
    """Limit of the commanded climb rate, m/s: PX4 clips the offboard velocity setpoint to
    ``MPC_Z_VEL_MAX_UP`` (3 m/s in v1.15) before its controllers, so a policy trained without the
    clip climbs faster than on PX4. ``None``: no limit (the action scale only)."""
    max_descent_rate_m_s: float | None = 1.5
    """Limit of the commanded descent rate, m/s (PX4 ``MPC_Z_VEL_MAX_DN``, 1.5 m/s in v1.15; see
    ``max_climb_rate_m_s``). ``None``: no limit."""

    cpu_kernels: bool | None = None
    """On CPU, run the step as one numba loop over drones
    (:func:`isr_direct_dynamics.cpu_kernels.direct_step`, the same float32 operations as
    :func:`direct_step`). ``None`` = automatic: on CPU whenever numba can be imported; ignored on
    CUDA and with ``compile_step``."""

    def validate(self) -> None:
        """Check ranges; raises :class:`ConfigError` naming the field."""
        self.limits.validate("limits.")
        for name in (
            "tau_horizontal_s",
            "tau_vertical_s",
            "tau_yaw_s",
            "tau_slow_horizontal_s",
            "tau_slow_vertical_s",
            "damping_reference_dt_s",
        ):
            v = getattr(self, name)
            check(math.isfinite(v) and v > 0, name, f"must be a positive time, got {v}")
        for name in ("slow_fraction_horizontal", "slow_fraction_vertical"):
            v = getattr(self, name)
            check(0.0 <= v < 1.0, name, f"must be in [0, 1), got {v}")
        if self.damping_per_step is not None:
            d = self.damping_per_step
            check(0.0 < d < 1.0, "damping_per_step", f"must be in (0, 1), got {d}")
        check(
            math.isfinite(self.vertical_coupling) and abs(self.vertical_coupling) <= 10.0,
            "vertical_coupling",
            f"must be in [-10, 10], got {self.vertical_coupling}",
        )
        v = self.max_horizontal_accel_m_s2
        check(math.isfinite(v) and v >= 0, "max_horizontal_accel_m_s2", f"must be >= 0, got {v}")
        check(self.delay_steps >= 0, "delay_steps", f"must be >= 0, got {self.delay_steps}")
        for name in ("vel_noise_m_s_per_sqrt_s", "pos_noise_m_per_sqrt_s"):
            v = getattr(self, name)
            check(math.isfinite(v) and v >= 0, name, f"must be >= 0, got {v}")
        for name in ("max_climb_rate_m_s", "max_descent_rate_m_s"):
            v = getattr(self, name)
            if v is not None:
                check(math.isfinite(v) and v > 0, name, f"must be > 0 or null, got {v}")
        v = self.tilt_drag_1_s
        check(math.isfinite(v) and 0 <= v <= 10, "tilt_drag_1_s", f"must be in [0, 10], got {v}")
        check(
            0 < self.max_tilt_deg < 90,
            "max_tilt_deg",
            f"must be in (0, 90), got {self.max_tilt_deg}",
        )

    def resolved(self) -> DirectDynamicsConfig:
        """Copy with ``damping_per_step`` converted into time constants."""
        if self.damping_per_step is None:
            return self
        tau = -self.damping_reference_dt_s / math.log(self.damping_per_step)
        return replace(
            self, tau_horizontal_s=tau, tau_vertical_s=tau, tau_yaw_s=tau, damping_per_step=None
        )


def vertical_action_bounds(cfg: DirectDynamicsConfig) -> tuple[float, float] | None:
    """The normalized vertical action's ``(low, high)`` after PX4's climb/descent clip.

    ``None`` when neither limit is below the action scale (nothing to clip).
    """
    scale = cfg.limits.max_vertical_velocity_m_s
    lo = -1.0 if cfg.max_descent_rate_m_s is None else max(-1.0, -cfg.max_descent_rate_m_s / scale)
    hi = 1.0 if cfg.max_climb_rate_m_s is None else min(1.0, cfg.max_climb_rate_m_s / scale)
    return None if (lo, hi) == (-1.0, 1.0) else (lo, hi)


@dataclass
class DirectParams:
    """Per-drone parameters, each ``(W, D)`` (float32 unless noted)."""

    tau_horizontal_s: Tensor
    tau_vertical_s: Tensor
    tau_yaw_s: Tensor
    slow_fraction_horizontal: Tensor
    tau_slow_horizontal_s: Tensor
    slow_fraction_vertical: Tensor
    tau_slow_vertical_s: Tensor
    delay_steps: Tensor  # (W, D) int64
    vertical_coupling: Tensor
    max_horizontal_accel_m_s2: Tensor  # 0 = no limit
    vel_noise_m_s_per_sqrt_s: Tensor
    pos_noise_m_per_sqrt_s: Tensor

    @classmethod
    def from_config(
        cls, cfg: DirectDynamicsConfig, shape: tuple[int, int], device: torch.device
    ) -> DirectParams:
        """Every drone gets the config's value."""
        cfg = cfg.resolved()
        kwargs = {}
        for f in fields(cls):
            dtype = torch.long if f.name == "delay_steps" else torch.float32
            kwargs[f.name] = torch.full(shape, getattr(cfg, f.name), dtype=dtype, device=device)
        return cls(**kwargs)

    def validate(self) -> None:
        """Check every drone's values; raises :class:`ConfigError` naming the field."""
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "vertical_coupling":
                ok = bool(torch.isfinite(v).all() & (v.abs() <= 10.0).all())
            elif f.name == "delay_steps" or f.name.startswith(
                ("slow_fraction", "vel_noise", "pos_noise", "max_horizontal_accel")
            ):
                ok = bool((v >= 0).all())
            else:
                ok = bool((v > 0).all() & torch.isfinite(v).all())
            check(ok, f"params.{f.name}", "has out-of-range values")
        for name in ("slow_fraction_horizontal", "slow_fraction_vertical"):
            check(bool((getattr(self, name) < 1).all()), f"params.{name}", "must be < 1")


class DirectCoeffs(NamedTuple):
    """Per-drone step coefficients precomputed from :class:`DirectParams` and dt."""

    a_fast: Tensor  # (W, D, 3) exp(-dt / tau) of the fast poles (x, y, z)
    k_fast: Tensor  # (W, D, 3) tau (1 - a): position integral of the fast error
    frac_slow: Tensor  # (W, D, 3) share of the command through the slow pole
    a_slow: Tensor  # (W, D, 3)
    k_slow: Tensor  # (W, D, 3)
    a_yaw: Tensor  # (W, D)
    k_yaw: Tensor  # (W, D)
    coupling: Tensor  # (W, D) vertical_coupling / (g dt)
    max_dv_h: Tensor  # (W, D) max_horizontal_accel x dt (inf = no limit)


def direct_step(
    action: Tensor,
    ground_m: Tensor,
    vel_fast: Tensor,
    vel_slow: Tensor,
    yaw_rate: Tensor,
    pos: Tensor,
    vel_old: Tensor,
    yaw: Tensor,
    c: DirectCoeffs,
    *,
    dt: float,
    max_velocity: float,
    max_vertical_velocity: float,
    max_yaw_rate: float,
    clip_norm: bool,
    has_slow: bool,
    has_coupling: bool,
    has_accel_limit: bool,
    tilt: bool,
    tan_max_tilt: float,
    tilt_drag: float = 0.0,
) -> tuple[Tensor, ...]:
    """One control step of the direct dynamics for all drones (pure; returns new tensors).

    Args:
        action: sanitized normalized action ``(W, D, 4)`` in ``[-1, 1]``.
        ground_m: terrain height under each drone ``(W, D)``.
        vel_fast, vel_slow: pole states ``(W, D, 3)``; yaw_rate ``(W, D)`` rad/s.
        pos: position ENU ``(W, D, 3)``; vel_old: velocity before the step ``(W, D, 3)``;
            yaw ``(W, D)`` rad.
        c: step coefficients. Keyword arguments: static options fixed at construction.

    Returns:
        ``(pos, vel, quat_wxyz, yaw, yaw_rate, contact, vel_fast, vel_slow)``.
    """
    cmd = action[..., :3] * action.new_tensor([max_velocity, max_velocity, max_vertical_velocity])
    if clip_norm:
        speed2 = cmd[..., 0] * cmd[..., 0] + cmd[..., 1] * cmd[..., 1]
        factor = torch.clamp(max_velocity * torch.rsqrt(speed2 + 1e-12), max=1.0)
        cmd = cmd * torch.stack((factor, factor, torch.ones_like(factor)), -1)
    cmd_yaw_rate = action[..., 3] * max_yaw_rate

    if has_slow:
        c_slow = cmd * c.frac_slow
        c_fast = cmd - c_slow
        e_slow = vel_slow - c_slow
        e_fast = vel_fast - c_fast
        new_slow = c_slow + e_slow * c.a_slow
    else:
        c_fast = cmd
        e_fast = vel_fast - cmd
    new_fast = c_fast + e_fast * c.a_fast
    inc_fast = c_fast * dt + e_fast * c.k_fast  # exact position increment of the fast part
    if has_coupling:
        # Scale the horizontal change of the fast part by 1 + k a_z / g (a_z over this step).
        vz_new = new_fast[..., 2] + new_slow[..., 2] if has_slow else new_fast[..., 2]
        s = torch.clamp(1.0 + (vz_new - vel_old[..., 2]) * c.coupling, 0.0, 2.0).unsqueeze(-1)
        s = torch.cat((s, s, torch.ones_like(s)), -1)
        new_fast = vel_fast + (new_fast - vel_fast) * s
        inc_fast = vel_fast * dt + (inc_fast - vel_fast * dt) * s
    if has_accel_limit:
        # Limit the norm of the horizontal fast-pole change to max_accel dt (tilt limit).
        dv = new_fast - vel_fast
        dv_h = torch.sqrt(dv[..., 0] * dv[..., 0] + dv[..., 1] * dv[..., 1] + 1e-12)
        r = torch.clamp(c.max_dv_h / dv_h, max=1.0).unsqueeze(-1)
        r = torch.cat((r, r, torch.ones_like(r)), -1)
        new_fast = vel_fast + dv * r
        inc_fast = vel_fast * dt + (inc_fast - vel_fast * dt) * r
    if has_slow:
        pos = pos + inc_fast + c_slow * dt + e_slow * c.k_slow
        vel_slow = new_slow
    else:
        pos = pos + inc_fast
    vel_fast = new_fast

    e_yaw = yaw_rate - cmd_yaw_rate
    yaw = (
        torch.remainder(yaw + cmd_yaw_rate * dt + e_yaw * c.k_yaw + math.pi, 2 * math.pi) - math.pi
    )
    yaw_rate = cmd_yaw_rate + e_yaw * c.a_yaw

    # Ground: clamp, no downward velocity, contact flag.
    z = pos[..., 2]
    contact = z <= ground_m
    pos = torch.cat((pos[..., :2], torch.maximum(z, ground_m).unsqueeze(-1)), -1)
    vz_fast = torch.where(contact, vel_fast[..., 2].clamp(min=0.0), vel_fast[..., 2])
    vel_fast = torch.cat((vel_fast[..., :2], vz_fast.unsqueeze(-1)), -1)
    if has_slow:
        vz_slow = torch.where(contact, vel_slow[..., 2].clamp(min=0.0), vel_slow[..., 2])
        vel_slow = torch.cat((vel_slow[..., :2], vz_slow.unsqueeze(-1)), -1)
        vel = vel_fast + vel_slow
    else:
        vel = vel_fast

    half = 0.5 * yaw
    cos_h, sin_h = torch.cos(half), torch.sin(half)
    if tilt:
        # Body z along the thrust direction n = accel + g + (drag / mass) v (tilt-limited): the
        # thrust accelerates the vehicle, holds it up and balances the linear drag. The attitude
        # is q_tilt (x) q_yaw, q_tilt the shortest rotation taking world z onto n:
        # q_tilt = (1 + n_z, -n_y, n_x, 0) / sqrt(2 (1 + n_z)) for a unit n.
        accel = (vel - vel_old) * (1.0 / dt)
        if tilt_drag:
            accel = accel + vel * tilt_drag
        nz = torch.clamp(accel[..., 2] + GRAVITY_M_S2, min=0.1 * GRAVITY_M_S2)
        nx, ny = accel[..., 0], accel[..., 1]
        scale = torch.clamp(tan_max_tilt * nz * torch.rsqrt(nx * nx + ny * ny + 1e-12), max=1.0)
        nx, ny = nx * scale, ny * scale
        inv = torch.rsqrt(nx * nx + ny * ny + nz * nz)
        nx, ny, nz = nx * inv, ny * inv, nz * inv
        w = torch.sqrt(0.5 * (1.0 + nz))
        k = 0.5 / w  # = 1 / sqrt(2 (1 + n_z))
        qx, qy = -ny * k, nx * k
        quat = torch.stack(
            (w * cos_h, qx * cos_h + qy * sin_h, qy * cos_h - qx * sin_h, w * sin_h), -1
        )
    else:
        zero = torch.zeros_like(half)
        quat = torch.stack((cos_h, zero, zero, sin_h), -1)
    return pos, vel, quat, yaw, yaw_rate, contact, vel_fast, vel_slow


class DirectDynamics(VehicleModel):
    """Batched direct dynamics over ``(num_worlds, drones_per_world)`` drones (fast mode).

    Args:
        num_worlds: number of worlds ``W``.
        drones_per_world: drones per world ``D``.
        control_dt_s: control period (one :meth:`step`), seconds.
        device: torch device of every tensor.
        seed: seed of the model's generator (process noise).
        config: :class:`DirectDynamicsConfig` (defaults when None).
        terrain_height_fn: ``pos (W, D, 3) -> ground height (W, D)``; flat z = 0 by default.
        compile_step: run the step kernel through ``torch.compile`` (fused loops; worth it for
            large batches, costs a one-off compilation of tens of seconds).
    """

    name = "direct"

    def __init__(
        self,
        num_worlds: int,
        drones_per_world: int,
        control_dt_s: float,
        device: torch.device | str = "cpu",
        seed: int = 0,
        config: DirectDynamicsConfig | None = None,
        terrain_height_fn: Callable[[Tensor], Tensor] = flat_ground,
        compile_step: bool = False,
    ) -> None:
        super().__init__(num_worlds, drones_per_world, control_dt_s, device, seed)
        self._compile = compile_step
        self.config = (config or DirectDynamicsConfig()).resolved()
        validate_tree(self.config)
        want_numba = self.config.cpu_kernels is None or bool(self.config.cpu_kernels)
        self.numba_step = (
            self.device.type == "cpu" and want_numba and not compile_step and cpu_kernels.AVAILABLE
        )
        """Whether steps run as the numba kernel (``DirectDynamicsConfig.cpu_kernels``)."""
        self.terrain_height_fn = terrain_height_fn
        shape = self.shape
        dev = self.device
        # Filter states: the fast and slow velocity components (v = fast + slow) and yaw rate.
        self._vel_fast = torch.zeros(*shape, 3, device=dev)  # (W, D, 3)
        self._vel_slow = torch.zeros(*shape, 3, device=dev)  # (W, D, 3)
        self._yaw_rate = torch.zeros(shape, device=dev)  # (W, D)
        self._z_axis = torch.tensor([False, False, True], device=dev)  # selects vz
        self._tan_max_tilt = math.tan(math.radians(self.config.max_tilt_deg))
        self._max_delay = 0
        vz = vertical_action_bounds(self.config)
        if vz is not None:  # PX4's climb/descent clip, applied with the action's [-1, 1] clip
            self.action_bounds = (
                torch.tensor([-1.0, -1.0, vz[0], -1.0], device=dev),
                torch.tensor([1.0, 1.0, vz[1], 1.0], device=dev),
            )
        self.set_params(DirectParams.from_config(self.config, shape, dev))

    # ------------------------------------------------------------------ parameters
    def set_params(self, params: DirectParams) -> None:
        """Install per-drone parameters (validated) and precompute the step coefficients."""
        params.validate()
        self.params = params
        dt = self.control_dt_s
        p = params
        tau_fast = torch.stack((p.tau_horizontal_s, p.tau_horizontal_s, p.tau_vertical_s), -1)
        tau_slow = torch.stack(
            (p.tau_slow_horizontal_s, p.tau_slow_horizontal_s, p.tau_slow_vertical_s), -1
        )
        frac = torch.stack(
            (p.slow_fraction_horizontal, p.slow_fraction_horizontal, p.slow_fraction_vertical), -1
        )
        # v(t+dt) = c + (v - c) a,  integral over dt = c dt + (v - c) k,  a = exp(-dt/tau),
        # k = tau (1 - a). The same for the yaw rate.
        a_fast, a_slow, a_yaw = (
            torch.exp(-dt / tau_fast),
            torch.exp(-dt / tau_slow),
            torch.exp(-dt / p.tau_yaw_s),
        )
        self._coeffs = DirectCoeffs(
            a_fast=a_fast,
            k_fast=tau_fast * (1.0 - a_fast),
            frac_slow=frac,
            a_slow=a_slow,
            k_slow=tau_slow * (1.0 - a_slow),
            a_yaw=a_yaw,
            k_yaw=p.tau_yaw_s * (1.0 - a_yaw),
            coupling=p.vertical_coupling / (GRAVITY_M_S2 * dt),
            max_dv_h=torch.where(
                p.max_horizontal_accel_m_s2 > 0, p.max_horizontal_accel_m_s2 * dt, math.inf
            ),
        )
        lim = self.config.limits
        step_fn = functools.partial(
            direct_step,
            dt=dt,
            max_velocity=lim.max_velocity_m_s,
            max_vertical_velocity=lim.max_vertical_velocity_m_s,
            max_yaw_rate=math.radians(lim.max_yaw_rate_deg_s),
            clip_norm=lim.clip_horizontal_norm,
            has_slow=bool((frac > 0).any()),
            has_coupling=bool((p.vertical_coupling != 0).any()),
            has_accel_limit=bool((p.max_horizontal_accel_m_s2 > 0).any()),
            tilt=self.config.tilt_from_acceleration,
            tan_max_tilt=self._tan_max_tilt,
            tilt_drag=float(self.config.tilt_drag_1_s),
        )
        self._step_fn = torch.compile(step_fn, dynamic=False) if self._compile else step_fn
        self._step_options = step_fn.keywords
        self._vel_noise_std = (p.vel_noise_m_s_per_sqrt_s * math.sqrt(dt)).unsqueeze(-1)
        self._pos_noise_std = (p.pos_noise_m_per_sqrt_s * math.sqrt(dt)).unsqueeze(-1)
        self._has_noise = bool((self._vel_noise_std > 0).any() | (self._pos_noise_std > 0).any())
        max_delay = int(p.delay_steps.max())
        if max_delay != self._max_delay or not hasattr(self, "_cmd_buffer"):
            # Ring buffer of the last max_delay+1 sanitized actions (W, D, K+1, 4).
            self._max_delay = max_delay
            self._cmd_buffer = torch.zeros(*self.shape, max_delay + 1, 4, device=self.device)
            self._buffer_pos = 0
        self._delay = p.delay_steps

    # ------------------------------------------------------------------ interface
    def _reset_masked(self, mask: Tensor, initial: InitialState) -> None:
        st = self.state
        owned = [getattr(st, f.name) for f in fields(st)]
        if self.numba_step and all(
            t.is_contiguous() for t in (*owned, self._vel_fast, self._vel_slow, self._yaw_rate)
        ):
            self._reset_numba(mask, initial)
            return
        new = initial.to_state()
        self.state.masked_assign(mask, new)
        m3 = mask.unsqueeze(-1)
        frac = self._coeffs.frac_slow
        self._vel_fast.copy_(torch.where(m3, new.vel_enu_m_s * (1 - frac), self._vel_fast))
        self._vel_slow.copy_(torch.where(m3, new.vel_enu_m_s * frac, self._vel_slow))
        self._yaw_rate.masked_fill_(mask, 0.0)
        self.state.body_rates_flu_rad_s.masked_fill_(m3, 0.0)
        if self._max_delay > 0:
            self._cmd_buffer.masked_fill_(mask[..., None, None], 0.0)

    def _step_numba(self, action: Tensor, ground_m: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        """:func:`direct_step` as the numba kernel (CPU): same arguments, new output tensors."""
        c = self._coeffs
        shape = self.shape
        o = self._step_options
        outs = (
            torch.empty(*shape, 3), torch.empty(*shape, 3), torch.empty(*shape, 4),
            torch.empty(shape), torch.empty(shape), torch.empty(shape, dtype=torch.bool),
            torch.empty(*shape, 3), torch.empty(*shape, 3),
        )  # fmt: skip
        a = cpu_kernels.as_numpy
        with cpu_kernels.threads_for(shape[0] * shape[1], 4096):
            cpu_kernels.direct_step(
                a(action), a(ground_m), *(a(t) for t in state[:6]), *(a(t) for t in c),
                float(o["dt"]), float(o["max_velocity"]), float(o["max_vertical_velocity"]),
                float(o["max_yaw_rate"]), bool(o["clip_norm"]), bool(o["has_slow"]),
                bool(o["has_coupling"]), bool(o["has_accel_limit"]), bool(o["tilt"]),
                float(o["tan_max_tilt"]), float(o["tilt_drag"]), *(t.numpy() for t in outs),
            )  # fmt: skip
        return outs

    def _reset_numba(self, mask: Tensor, initial: InitialState) -> None:
        """:meth:`_reset_masked` as the numba kernel, in place (CPU, contiguous state)."""
        a = cpu_kernels.as_numpy
        st = self.state
        pos0 = initial.pos_enu_m.to(torch.float32).expand(*self.shape, 3)
        yaw0 = torch.zeros(self.shape) if initial.yaw_rad is None else initial.yaw_rad
        vel0 = torch.zeros(*self.shape, 3) if initial.vel_enu_m_s is None else initial.vel_enu_m_s
        with cpu_kernels.threads_for(mask.numel(), 8192):
            cpu_kernels.direct_reset(
                a(mask), a(pos0), a(yaw0.to(torch.float32).expand(self.shape)),
                a(vel0.to(torch.float32).expand(*self.shape, 3)), a(self._coeffs.frac_slow),
                st.pos_enu_m.numpy(), st.vel_enu_m_s.numpy(), st.quat_wxyz.numpy(),
                st.body_rates_flu_rad_s.numpy(), st.yaw_rad.numpy(), st.ground_contact.numpy(),
                self._vel_fast.numpy(), self._vel_slow.numpy(), self._yaw_rate.numpy(),
            )  # fmt: skip
        if self._max_delay > 0:
            self._cmd_buffer.masked_fill_(mask[..., None, None], 0.0)

    def _delayed(self, action: Tensor) -> Tensor:
        """Push ``action`` into the ring buffer and read each drone's delayed command."""
        size = self._max_delay + 1
        self._buffer_pos = (self._buffer_pos + 1) % size
        self._cmd_buffer[:, :, self._buffer_pos] = action
        idx = torch.remainder(self._buffer_pos - self._delay, size)  # (W, D)
        return torch.gather(
            self._cmd_buffer, 2, idx[..., None, None].expand(*self.shape, 1, 4)
        ).squeeze(2)

    def _step_clean(self, action: Tensor) -> None:
        if self._max_delay > 0:
            action = self._delayed(action)
        st = self.state
        step_fn = self._step_numba if self.numba_step else self._step_fn
        out = step_fn(
            action,
            self.terrain_height_fn(st.pos_enu_m),
            self._vel_fast,
            self._vel_slow,
            self._yaw_rate,
            st.pos_enu_m,
            st.vel_enu_m_s,
            st.yaw_rad,
            self._coeffs,
        )
        pos, vel, quat, yaw, yaw_rate, contact, self._vel_fast, self._vel_slow = out
        if self._has_noise:
            g = self.generator
            noise_v = torch.randn(vel.shape, generator=g, device=self.device) * self._vel_noise_std
            noise_p = torch.randn(pos.shape, generator=g, device=self.device) * self._pos_noise_std
            self._vel_fast = self._vel_fast + noise_v
            vel = vel + noise_v
            pos = pos + noise_p
            pos[..., 2] = torch.maximum(pos[..., 2], self.terrain_height_fn(pos))
        self._yaw_rate = yaw_rate
        st.pos_enu_m, st.vel_enu_m_s, st.quat_wxyz, st.yaw_rad = pos, vel, quat, yaw
        st.ground_contact = contact
        st.body_rates_flu_rad_s[..., 2] = yaw_rate
