"""Full-fidelity model: a 6-DoF quadrotor flown by a batched mirror of PX4's cascade.

Evaluation mode's vehicle where PX4 itself is not installed. The normalized action is scaled with
:func:`~isr_direct_dynamics.base.scale_action` into an offboard velocity setpoint (world ENU) and a
yaw-rate setpoint, exactly what the PX4 bridge sends as a ``TrajectorySetpoint``; the setpoint is
held for one control step (offboard setpoints are not smoothed) and
:class:`~isr_direct_dynamics.px4_controller.PX4MulticopterController` flies it. Each control step
runs ``physics_steps_per_control = control_dt_s / physics_dt_s`` physics steps (250 Hz default,
the rate the real PX4 SIH flight ran at).

Physics per physics step (all drones at once over the flat index ``N = W * D``, internally
component-major ``(3, N)`` / ``(4, N)`` like the controller; world ENU / body FLU):

- motors: first-order lag of each normalized motor state towards its command
  (``1 - exp(-dt / tau)``; separate up/down time constants), thrust per rotor ``T_max * m`` (SIH:
  thrust linear in the command) or ``T_max * m^2`` (x500: rotor speed ``m * omega_max``, thrust
  ``k omega^2``), rotor drag torque proportional to the rotor thrust;
- quad-X geometry (PX4 motor order: front-right CCW, rear-left CCW, front-left CW, rear-right CW);
- forces: collective thrust along body z, gravity, linear drag on the air-relative velocity
  (wind = mean + Ornstein-Uhlenbeck gusts); torques: rotor moments, linear angular damping,
  gyroscopic ``w x (I w)``; diagonal inertia;
- semi-implicit Euler (velocity, then position with the new velocity; body rates, then the
  quaternion with the new rates, renormalized), stable at 250-400 Hz;
- ground (terrain height, flat z = 0 by default, evaluated once per control step): a drone never
  goes below it. Touching it with a non-rising velocity clamps the height and stops the drone
  (velocity and body rates zero, as PX4 SIH's ground does), and sets ``ground_contact``. On the
  ground and not asked to climb, the controller idles (zero thrust, integrators reset: PX4's
  landed / not-taken-off behaviour), so a landed drone stays landed.

Parameters are per drone (:class:`QuadrotorParams`, flat ``(N,)`` tensors) so domain
randomization can give every drone its own mass, inertia, thrust, drag and motor time constants;
controller gains are shared. Everything random (gusts, sensor noise) draws from
``self.generator``.

Differences from a real PX4 SITL flight, on purpose: no state estimator (the controller sees the
true state, optional Gaussian noise), no takeoff ramp, no land detector delay, the hover thrust
is the true one (PX4's hover thrust estimator converged) unless configured, the velocity loop runs
at a fixed decimation of the physics rate.

Agreement with the direct (fast-mode) model: PX4 clips the velocity setpoint to
``MPC_XY_VEL_MAX`` = 12 m/s, ``MPC_Z_VEL_MAX_UP`` = 3 m/s and ``MPC_Z_VEL_MAX_DN`` = 1.5 m/s (v1.15
defaults, kept here and configurable in ``controller``). The workspace's action scaling reaches
5 m/s vertically, so steady states agree with the direct model only within PX4's limits. With the
SIH airframe (1 N/(m/s) drag on 1 kg) the horizontal response has a fast part (63 % in about 1 s)
and a slow tail driven by the velocity integrator (``MPC_XY_VEL_I_ACC`` = 0.4), as PX4 SIH does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from . import cpu_kernels
from .base import InitialState, VehicleModel, VelocityLimits, flat_ground, scale_action
from .config import check
from .math3d import wrap_angle
from .px4_controller import (
    GRAVITY_M_S2,
    PX4ControllerConfig,
    PX4MulticopterController,
    quad_x_rotors,
    rotmat_from_quat,
)

ThrustModel = Literal["linear", "quadratic"]


@dataclass(frozen=True)
class VehicleParams:
    """Physical parameters of one airframe (a preset, or a preset with overrides)."""

    mass_kg: float
    """Total mass, kg."""
    inertia_kg_m2: tuple[float, float, float]
    """Principal moments of inertia (Ixx, Iyy, Izz) about body FLU axes, kg m^2."""
    max_thrust_per_rotor_n: float
    """Thrust of one rotor at full command, N."""
    max_rotor_torque_nm: float
    """Drag torque of one rotor at full command, N m (rotor torque is proportional to thrust)."""
    arm_m: float
    """Rotor offset along body x and along body y (quad-X: rotors at (+-arm, +-arm)), m."""
    motor_tau_up_s: float
    """Motor time constant while speeding up, s (0 = no lag)."""
    motor_tau_down_s: float
    """Motor time constant while slowing down, s (0 = no lag)."""
    thrust_model: ThrustModel
    """``linear``: thrust = max * command (SIH); ``quadratic``: thrust = max * command^2."""
    linear_drag_n_per_m_s: float
    """Linear drag on the air-relative velocity, N / (m/s)."""
    angular_damping_nm_per_rad_s: float
    """Linear angular damping, N m / (rad/s)."""


_X500_MOTOR_CONSTANT = 8.54858e-6  # N / (rad/s)^2, PX4-gazebo-models x500 model.sdf
_X500_MAX_ROT_VELOCITY = 1000.0  # rad/s
_X500_MOMENT_CONSTANT = 0.016  # m (rotor torque / thrust)
_X500_ROTOR_DRAG = 8.06428e-5  # N / (m/s) / (rad/s), rotorDragCoefficient
_X500_T_MAX = _X500_MOTOR_CONSTANT * _X500_MAX_ROT_VELOCITY**2
_X500_HOVER_OMEGA = math.sqrt(2.0 * GRAVITY_M_S2 / (4.0 * _X500_MOTOR_CONSTANT))

VEHICLE_PRESETS: dict[str, VehicleParams] = {
    # PX4 SIH quadrotor defaults (src/modules/simulation/simulator_sih/sih_params.yaml:
    # SIH_MASS, SIH_IXX/IYY/IZZ, SIH_T_MAX, SIH_Q_MAX, SIH_L_ROLL/PITCH, SIH_T_TAU, SIH_KDV,
    # SIH_KDW) and sih.cpp generate_force_and_torques (thrust linear in the motor command).
    "sih_quadx": VehicleParams(
        mass_kg=1.0,
        inertia_kg_m2=(0.025, 0.025, 0.03),
        max_thrust_per_rotor_n=5.0,
        max_rotor_torque_nm=0.1,
        arm_m=0.2,
        motor_tau_up_s=0.05,
        motor_tau_down_s=0.05,
        thrust_model="linear",
        linear_drag_n_per_m_s=1.0,
        angular_damping_nm_per_rad_s=0.025,
    ),
    # PX4 gz x500 (Tools/simulation/gz/models/x500_base, model.sdf): motorConstant 8.54858e-6,
    # maxRotVelocity 1000 rad/s (rotor speed linear in the command), momentConstant 0.016,
    # timeConstantUp/Down 0.0125/0.025 s. Gazebo's rotor drag (rotorDragCoefficient x rotor
    # speed, per rotor) is approximated by an isotropic linear drag at hover rotor speed
    # (4 x 8.06428e-5 x 757 rad/s = 0.24 N/(m/s)); no angular damping.
    "x500": VehicleParams(
        mass_kg=2.0,
        inertia_kg_m2=(0.0216666, 0.0216666, 0.04),
        max_thrust_per_rotor_n=_X500_T_MAX,
        max_rotor_torque_nm=_X500_MOMENT_CONSTANT * _X500_T_MAX,
        arm_m=0.174,
        motor_tau_up_s=0.0125,
        motor_tau_down_s=0.025,
        thrust_model="quadratic",
        linear_drag_n_per_m_s=4.0 * _X500_ROTOR_DRAG * _X500_HOVER_OMEGA,
        angular_damping_nm_per_rad_s=0.0,
    ),
}
"""Airframe presets by name (``QuadrotorConfig.vehicle``)."""


@dataclass
class WindConfig:
    """Wind: a constant mean plus Ornstein-Uhlenbeck gusts per drone (seeded)."""

    mean_enu_m_s: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Mean wind (air velocity) in world ENU, m/s."""
    gust_std_m_s: float = 0.0
    """Stationary standard deviation of the horizontal gust components, m/s (0 = no gusts)."""
    gust_vertical_std_m_s: float = 0.0
    """Stationary standard deviation of the vertical gust component, m/s."""
    gust_time_constant_s: float = 2.0
    """Correlation time of the gust process, s (updated once per control step)."""
    start_compensated: bool = True
    """Airborne drones start as after hovering in the mean wind: the controller's velocity
    integrator already cancels the mean wind's drag, as PX4's does when an offboard episode
    begins. False starts it at zero (the vehicle first drifts downwind while it winds up)."""

    def validate(self, prefix: str = "") -> None:
        """Check ranges; raises :class:`ConfigError` naming the field (after ``prefix``)."""
        for i, v in enumerate(self.mean_enu_m_s):
            check(math.isfinite(v), f"{prefix}mean_enu_m_s[{i}]", f"must be finite, got {v}")
        for name in ("gust_std_m_s", "gust_vertical_std_m_s"):
            v = getattr(self, name)
            check(math.isfinite(v) and v >= 0, f"{prefix}{name}", f"must be >= 0, got {v}")
        v = self.gust_time_constant_s
        check(math.isfinite(v) and v > 0, f"{prefix}gust_time_constant_s", f"must be > 0, got {v}")

    @property
    def has_gusts(self) -> bool:
        """True when any gust standard deviation is positive."""
        return self.gust_std_m_s > 0 or self.gust_vertical_std_m_s > 0


@dataclass
class SensorNoiseConfig:
    """Gaussian noise on what the controller measures (off by default; the truth is unchanged)."""

    enabled: bool = False
    """Add noise to the velocity and body rates seen by the controller."""
    velocity_std_m_s: float = 0.05
    """Standard deviation of the velocity measurement noise (per axis, per velocity-loop tick)."""
    gyro_std_rad_s: float = 0.01
    """Standard deviation of the gyro noise (per axis, per physics step)."""

    def validate(self, prefix: str = "") -> None:
        """Check ranges; raises :class:`ConfigError` naming the field (after ``prefix``)."""
        for name in ("velocity_std_m_s", "gyro_std_rad_s"):
            v = getattr(self, name)
            check(math.isfinite(v) and v >= 0, f"{prefix}{name}", f"must be >= 0, got {v}")


@dataclass
class QuadrotorConfig:
    """Configuration of the full-fidelity quadrotor (physics, airframe, PX4 controller, wind).

    The airframe comes from the ``vehicle`` preset; every physical field left at None takes the
    preset's value, a number overrides it.
    """

    physics_dt_s: float = 0.004
    """Physics (and inner-loop) period, s. 0.004 = 250 Hz, as the real PX4 SIH flight ran."""
    vehicle: str = "sih_quadx"
    """Airframe preset: ``sih_quadx`` (PX4 SIH defaults) or ``x500`` (PX4 gz x500)."""
    mass_kg: float | None = None
    """Override of the preset's mass, kg."""
    inertia_kg_m2: tuple[float, float, float] | None = None
    """Override of the principal moments of inertia (Ixx, Iyy, Izz), kg m^2."""
    max_thrust_per_rotor_n: float | None = None
    """Override of one rotor's full-command thrust, N."""
    max_rotor_torque_nm: float | None = None
    """Override of one rotor's full-command drag torque, N m."""
    arm_m: float | None = None
    """Override of the rotor offset along body x and y, m."""
    motor_tau_up_s: float | None = None
    """Override of the motor time constant while speeding up, s."""
    motor_tau_down_s: float | None = None
    """Override of the motor time constant while slowing down, s."""
    thrust_model: ThrustModel | None = None
    """Override of the thrust curve: ``linear`` or ``quadratic`` in the motor command."""
    linear_drag_n_per_m_s: float | None = None
    """Override of the linear drag on the air-relative velocity, N / (m/s)."""
    angular_damping_nm_per_rad_s: float | None = None
    """Override of the linear angular damping, N m / (rad/s)."""
    gravity_m_s2: float = GRAVITY_M_S2
    """Gravity, m/s^2."""
    limits: VelocityLimits = field(default_factory=VelocityLimits)
    """Action scaling into velocity / yaw-rate setpoints (the workspace's shared limits)."""
    controller: PX4ControllerConfig = field(default_factory=PX4ControllerConfig)
    """The PX4 cascade's gains and limits (PX4 v1.15 defaults)."""
    wind: WindConfig = field(default_factory=WindConfig)
    """Mean wind and gusts."""
    sensor_noise: SensorNoiseConfig = field(default_factory=SensorNoiseConfig)
    """Measurement noise seen by the controller (off by default)."""
    command_delay_steps: int = 0
    """Transport delay of the offboard setpoint, in control steps (0 = none): the setpoint the
    controller flies at step ``k`` is the action of step ``k - command_delay_steps`` (a zero
    command, i.e. hold/hover, for the first steps after a reset). Models the companion-computer
    -> uXRCE-DDS -> PX4 latency; the same ring buffer as the direct model's ``delay_steps``."""
    cpu_kernels: bool | None = None
    """On CPU, run each control step's physics steps (controller, motors, rigid body, ground) as
    one numba kernel parallel over drones (:mod:`isr_direct_dynamics.cpu_kernels`, the same
    equations in float64, stored in float32; agrees with the torch code to float32 rounding).
    ``None`` = automatic: on CPU whenever numba can be imported; ignored on CUDA. Measured on 2
    CPU cores, 20 drones: ~25 ms -> ~0.4 ms per control step (250 Hz physics, 10 Hz control)."""
    compile_physics: bool = False
    """Run the physics step (controller, motors, rigid body, ground) through ``torch.compile``
    (fused kernels). Measured on 2 busy CPU cores, 16 drones, 250 Hz: 22-25 ms -> 5-6 ms per
    control step after a one-time compilation of 25-60 s; the same model up to float32 rounding
    (closed-loop trajectories drift apart by ~1e-6 m per second, more through saturation
    switches). Worth it for long evaluations, not for short runs or tests. Applies to the torch
    physics only (CUDA, or ``cpu_kernels=False``): the numba kernel is faster on CPU."""

    def vehicle_params(self) -> VehicleParams:
        """The preset with this config's overrides applied."""
        check(
            self.vehicle in VEHICLE_PRESETS,
            "vehicle",
            f"unknown preset '{self.vehicle}' (choose from {', '.join(sorted(VEHICLE_PRESETS))})",
        )
        base = VEHICLE_PRESETS[self.vehicle]
        values = {}
        for f in fields(VehicleParams):
            override = getattr(self, f.name)
            values[f.name] = getattr(base, f.name) if override is None else override
        values["inertia_kg_m2"] = tuple(float(v) for v in values["inertia_kg_m2"])
        return VehicleParams(**values)

    def validate(self) -> None:
        """Check ranges; raises :class:`ConfigError` naming the field."""
        dt = self.physics_dt_s
        check(
            math.isfinite(dt) and 0 < dt <= 0.02, "physics_dt_s", f"must be in (0, 0.02], got {dt}"
        )
        g = self.gravity_m_s2
        check(math.isfinite(g) and g > 0, "gravity_m_s2", f"must be > 0, got {g}")
        vp = self.vehicle_params()
        for name in ("mass_kg", "max_thrust_per_rotor_n", "arm_m"):
            v = getattr(vp, name)
            check(math.isfinite(v) and v > 0, name, f"must be > 0, got {v}")
        check(len(vp.inertia_kg_m2) == 3, "inertia_kg_m2", "must have 3 values")
        for i, v in enumerate(vp.inertia_kg_m2):
            check(math.isfinite(v) and v > 0, f"inertia_kg_m2[{i}]", f"must be > 0, got {v}")
        for name in (
            "max_rotor_torque_nm",
            "motor_tau_up_s",
            "motor_tau_down_s",
            "linear_drag_n_per_m_s",
            "angular_damping_nm_per_rad_s",
        ):
            v = getattr(vp, name)
            check(math.isfinite(v) and v >= 0, name, f"must be >= 0, got {v}")
        check(
            vp.thrust_model in ("linear", "quadratic"),
            "thrust_model",
            f"must be 'linear' or 'quadratic', got {vp.thrust_model!r}",
        )
        check(
            4.0 * vp.max_thrust_per_rotor_n > vp.mass_kg * g,
            "max_thrust_per_rotor_n",
            f"4 x {vp.max_thrust_per_rotor_n} N cannot lift {vp.mass_kg} kg",
        )
        self.limits.validate("limits.")
        self.controller.validate("controller.")
        self.wind.validate("wind.")
        self.sensor_noise.validate("sensor_noise.")
        k = self.command_delay_steps
        check(
            isinstance(k, int) and 0 <= k <= 1000,
            "command_delay_steps",
            f"must be an integer in 0..1000, got {k!r}",
        )


@dataclass
class QuadrotorParams:
    """Per-drone physical parameters, flat over the ``N = W * D`` drones (float32)."""

    mass_kg: Tensor  # (N,)
    """Mass, kg."""
    inertia_kg_m2: Tensor  # (N, 3)
    """Principal moments of inertia (Ixx, Iyy, Izz), kg m^2."""
    max_thrust_per_rotor_n: Tensor  # (N,)
    """Full-command thrust of one rotor, N."""
    max_rotor_torque_nm: Tensor  # (N,)
    """Full-command drag torque of one rotor, N m."""
    arm_m: Tensor  # (N,)
    """Rotor offset along body x and y, m."""
    motor_tau_up_s: Tensor  # (N,)
    """Motor time constant while speeding up, s."""
    motor_tau_down_s: Tensor  # (N,)
    """Motor time constant while slowing down, s."""
    linear_drag_n_per_m_s: Tensor  # (N,)
    """Linear drag on the air-relative velocity, N / (m/s)."""
    angular_damping_nm_per_rad_s: Tensor  # (N,)
    """Linear angular damping, N m / (rad/s)."""
    wind_mean_enu_m_s: Tensor  # (N, 3)
    """Mean wind in world ENU, m/s."""

    @classmethod
    def from_vehicle(
        cls, vp: VehicleParams, wind: WindConfig, n: int, device: torch.device
    ) -> QuadrotorParams:
        """Every drone gets the airframe's values."""

        def full(v: float) -> Tensor:
            return torch.full((n,), float(v), device=device)

        return cls(
            mass_kg=full(vp.mass_kg),
            inertia_kg_m2=torch.tensor(vp.inertia_kg_m2, device=device).repeat(n, 1),
            max_thrust_per_rotor_n=full(vp.max_thrust_per_rotor_n),
            max_rotor_torque_nm=full(vp.max_rotor_torque_nm),
            arm_m=full(vp.arm_m),
            motor_tau_up_s=full(vp.motor_tau_up_s),
            motor_tau_down_s=full(vp.motor_tau_down_s),
            linear_drag_n_per_m_s=full(vp.linear_drag_n_per_m_s),
            angular_damping_nm_per_rad_s=full(vp.angular_damping_nm_per_rad_s),
            wind_mean_enu_m_s=torch.tensor(wind.mean_enu_m_s, device=device).repeat(n, 1),
        )

    def validate(self, n: int) -> None:
        """Check shapes and every drone's values; raises :class:`ConfigError` naming the field."""
        for f in fields(self):
            v = getattr(self, f.name)
            expected = (n, 3) if f.name in ("inertia_kg_m2", "wind_mean_enu_m_s") else (n,)
            check(tuple(v.shape) == expected, f"params.{f.name}", f"must have shape {expected}")
            check(bool(torch.isfinite(v).all()), f"params.{f.name}", "has non-finite values")
            if f.name in ("mass_kg", "inertia_kg_m2", "max_thrust_per_rotor_n", "arm_m"):
                check(bool((v > 0).all()), f"params.{f.name}", "must be > 0")
            elif f.name != "wind_mean_enu_m_s":
                check(bool((v >= 0).all()), f"params.{f.name}", "must be >= 0")


class QuadrotorModel(VehicleModel):
    """Batched 6-DoF quadrotors flown by a PX4-like cascade (evaluation's full-fidelity model).

    Args:
        num_worlds: number of worlds ``W``.
        drones_per_world: drones per world ``D``.
        control_dt_s: control period (one :meth:`step`), seconds; an integer multiple of
            ``config.physics_dt_s`` (within 1e-6 s).
        device: torch device of every tensor.
        seed: seed of the model's generator (gusts, sensor noise).
        config: :class:`QuadrotorConfig` (defaults when None).
        terrain_height_fn: ``pos (W, D, 3) -> ground height (W, D)``; flat z = 0 by default.
    """

    name = "quadrotor"

    def __init__(
        self,
        num_worlds: int,
        drones_per_world: int,
        control_dt_s: float,
        device: torch.device | str = "cpu",
        seed: int = 0,
        config: QuadrotorConfig | None = None,
        terrain_height_fn: Callable[[Tensor], Tensor] = flat_ground,
    ) -> None:
        super().__init__(num_worlds, drones_per_world, control_dt_s, device, seed)
        self.config = cfg = config or QuadrotorConfig()
        cfg.validate()
        steps = round(self.control_dt_s / cfg.physics_dt_s)
        check(
            steps >= 1 and abs(steps * cfg.physics_dt_s - self.control_dt_s) <= 1e-6,
            "control_dt_s",
            f"{self.control_dt_s} s is not an integer multiple of physics_dt_s "
            f"{cfg.physics_dt_s} s",
        )
        self.physics_steps_per_control: int = steps
        """Physics steps per control step (the decimation)."""
        self.terrain_height_fn = terrain_height_fn
        self.vehicle = vp = cfg.vehicle_params()
        """The resolved airframe (preset plus overrides)."""
        n, dev = self.num_drones, self.device
        self._dt = cfg.physics_dt_s
        self._g = cfg.gravity_m_s2
        self._quadratic = vp.thrust_model == "quadratic"
        rotors = quad_x_rotors(vp.arm_m, vp.max_rotor_torque_nm / vp.max_thrust_per_rotor_n)
        self.controller = PX4MulticopterController(
            n, cfg.controller, cfg.physics_dt_s, dev, cfg.gravity_m_s2, *rotors
        )
        """The PX4 cascade (gains shared, state per drone)."""
        self._decimation = cfg.controller.velocity_loop_decimation
        want_numba = cfg.cpu_kernels is None or bool(cfg.cpu_kernels)
        self.numba_physics = self.device.type == "cpu" and want_numba and cpu_kernels.AVAILABLE
        """Whether the physics steps run as the numba kernel (``QuadrotorConfig.cpu_kernels``)."""
        self._substep_fn = (
            torch.compile(self._substep, dynamic=False)
            if cfg.compile_physics and not self.numba_physics
            else self._substep
        )
        self._tick = 0
        # Normalized rotor thrusts f (4, N) -> (collective, roll, pitch, yaw) before the
        # per-drone scaling: out = sum_i col_i * f_i. Quad-X, FLU: roll ~ +y, pitch ~ -x,
        # yaw ~ rotor turning direction (rotors 0, 1 CCW -> negative yaw torque on the body).
        force_map = torch.tensor(
            [[1.0, 1.0, 1.0, 1.0], [-1.0, 1.0, 1.0, -1.0], [-1.0, 1.0, -1.0, 1.0],
             [-1.0, -1.0, 1.0, 1.0]],
            device=dev,
        )  # fmt: skip
        self._force_cols = [force_map[:, i : i + 1].clone() for i in range(4)]  # (4, 1) each
        self._roll1 = torch.tensor([1, 2, 0], dtype=torch.long, device=dev)
        self._roll2 = torch.tensor([2, 0, 1], dtype=torch.long, device=dev)
        self._gravity = torch.tensor([0.0, 0.0, -self._g], device=dev).unsqueeze(1)  # (3, 1)
        # Internal state (component-major: (3, N) vectors, (4, N) motors).
        self.motor_state = torch.zeros(4, n, device=dev)
        """Normalized motor states ``(4, N)`` (command after the motor lag; x500: rotor speed
        over its maximum)."""
        self.motor_command = torch.zeros(4, n, device=dev)
        """Last motor commands of the allocation ``(4, N)``."""
        self._ang_accel = torch.zeros(3, n, device=dev)  # (3, N) last angular acceleration
        self._contact = torch.zeros(n, dtype=torch.bool, device=dev)  # (N,) latest substep
        self._gust = torch.zeros(3, n, device=dev)  # (3, N) gust velocity ENU
        wind = cfg.wind
        self._has_gusts = wind.has_gusts
        phi = math.exp(-self.control_dt_s / wind.gust_time_constant_s)
        self._gust_phi = phi
        std = torch.tensor(
            [wind.gust_std_m_s, wind.gust_std_m_s, wind.gust_vertical_std_m_s], device=dev
        ).unsqueeze(1)
        self._gust_std = std  # (3, 1)
        self._gust_innov_std = std * math.sqrt(1.0 - phi * phi)
        noise = cfg.sensor_noise
        self._noise = noise.enabled and (noise.velocity_std_m_s > 0 or noise.gyro_std_rad_s > 0)
        self._vel_noise_std = noise.velocity_std_m_s
        self._gyro_noise_std = noise.gyro_std_rad_s
        self._max_delay = int(cfg.command_delay_steps)
        # Ring buffer of the last delay+1 sanitized actions (K+1, W, D, 4); slot _buffer_pos holds
        # the newest one.
        self._cmd_buffer = torch.zeros(self._max_delay + 1, *self.shape, 4, device=dev)
        self._buffer_pos = 0
        self._numba_consts: tuple[np.ndarray, ...] | None = None
        self._views: dict[tuple[int, str], tuple[Tensor, np.ndarray]] = {}
        self._no_noise = torch.zeros(1, 2, 3, 1)
        self.set_params(QuadrotorParams.from_vehicle(vp, wind, n, dev))
        self.reset()

    # ------------------------------------------------------------------------------ parameters
    def set_params(self, params: QuadrotorParams) -> None:
        """Install per-drone parameters (validated) and precompute the step coefficients.

        For domain randomization: edit ``model.params`` (or build a new one) and call this again;
        it takes effect from the next step (reset the drones to start them at hover).
        """
        n = self.num_drones
        params.validate(n)
        self.params = p = params
        dt, g = self._dt, self._g
        inv_m = 1.0 / p.mass_kg
        t_max = p.max_thrust_per_rotor_n
        ixx, iyy, izz = p.inertia_kg_m2.t()
        # (f @ force_map) * scale = (T / m, tau_x / Ixx, tau_y / Iyy, tau_z / Izz)
        self._force_scale = torch.stack(
            (
                t_max * inv_m,
                p.arm_m * t_max / ixx,
                p.arm_m * t_max / iyy,
                p.max_rotor_torque_nm / izz,
            ),
            0,
        )  # (4, N)
        inv_i = 1.0 / p.inertia_kg_m2.t()  # (3, N)
        self._neg_damp_over_i = -p.angular_damping_nm_per_rad_s * inv_i  # (3, N)
        # (w x I w) / I for a diagonal inertia: (wy wz (Iz - Iy) / Ix, wz wx (Ix - Iz) / Iy, ...)
        self._neg_gyro_coef = -torch.stack(
            ((izz - iyy) / ixx, (ixx - izz) / iyy, (iyy - ixx) / izz), 0
        )
        self._neg_drag_over_m = -(p.linear_drag_n_per_m_s * inv_m)  # (N,)
        self._drag_over_m = p.linear_drag_n_per_m_s * inv_m  # (N,)
        alpha_up = self._lag_alpha(p.motor_tau_up_s, dt)
        self._alpha_down = self._lag_alpha(p.motor_tau_down_s, dt)  # (N,)
        self._alpha_diff = alpha_up - self._alpha_down  # (N,)
        self._asym_motor = bool((self._alpha_diff != 0).any())
        # Hover: motor command with 4 T_max f(m) = m g; the controller's hover thrust is the
        # collective command before the THR_MDL_FAC output curve.
        ratio = p.mass_kg * g / (4.0 * t_max)
        check(bool((ratio < 1.0).all()), "params.max_thrust_per_rotor_n", "cannot lift the mass")
        self._hover_motor = ratio.sqrt() if self._quadratic else ratio
        fac = self.config.controller.thr_mdl_fac
        physical = fac * self._hover_motor.square() + (1.0 - fac) * self._hover_motor
        fixed = self.config.controller.hover_thrust
        self._hover_thrust = physical if fixed is None else torch.full_like(physical, fixed)

    @staticmethod
    def _lag_alpha(tau_s: Tensor, dt: float) -> Tensor:
        """Exact first-order-lag blend ``1 - exp(-dt / tau)`` (1 where tau = 0)."""
        return torch.where(tau_s > 0, -torch.expm1(-dt / tau_s.clamp_min(1e-9)), 1.0)

    @property
    def hover_thrust(self) -> Tensor:
        """Normalized collective thrust the controller uses for hover, ``(W, D)``."""
        return self._hover_thrust.view(self.shape)

    @property
    def hover_motor_command(self) -> Tensor:
        """Motor command that exactly balances gravity, ``(W, D)``."""
        return self._hover_motor.view(self.shape)

    # ------------------------------------------------------------------------------ interface
    def _reset_masked(self, mask: Tensor, initial: InitialState) -> None:
        n = self.num_drones
        new = initial.to_state()
        ground = self.terrain_height_fn(new.pos_enu_m)  # (W, D)
        new.pos_enu_m[..., 2] = torch.maximum(new.pos_enu_m[..., 2], ground)
        contact = (new.pos_enu_m[..., 2] <= ground + 1e-6) & (new.vel_enu_m_s[..., 2] <= 0)
        new.vel_enu_m_s = new.vel_enu_m_s.masked_fill(contact.unsqueeze(-1), 0.0)
        new.ground_contact = contact
        self.state.masked_assign(mask, new)
        m = mask.reshape(n)
        c = contact.reshape(n)
        # Airborne drones start with the motors at hover, landed ones with the motors stopped.
        motor = torch.where(c, 0.0, self._hover_motor).expand(4, n)
        self.motor_state = torch.where(m, motor, self.motor_state)
        self.motor_command = torch.where(m, motor, self.motor_command)
        self._ang_accel = self._ang_accel.masked_fill(m, 0.0)
        self._contact = torch.where(m, c, self._contact)
        if self._has_gusts:  # start from the stationary gust distribution
            z = torch.randn(3, n, generator=self.generator, device=self.device)
            self._gust = torch.where(m, z * self._gust_std, self._gust)
        else:
            self._gust = self._gust.masked_fill(m, 0.0)
        thrust = torch.where(c, 0.0, self._hover_thrust)
        rot = rotmat_from_quat(new.quat_wxyz.reshape(n, 4).t())
        self.controller.reset_masked(m, new.vel_enu_m_s.reshape(n, 3).t(), rot, thrust)
        if self.config.wind.start_compensated:
            # steady hover in the mean wind: integrator = -(drag / m) * wind (an acceleration)
            ctrl = self.controller
            comp = -(self.params.wind_mean_enu_m_s.t() * self._drag_over_m)
            comp[2].clamp_(-self._g, self._g)
            ctrl.vel_int = torch.where(m & ~c, comp, ctrl.vel_int)
        if self._max_delay > 0:
            self._cmd_buffer.masked_fill_(mask[None, ..., None], 0.0)

    def _delayed(self, action: Tensor) -> Tensor:
        """Push ``action`` into the ring buffer and return the one of ``K`` steps ago."""
        size = self._max_delay + 1
        self._buffer_pos = (self._buffer_pos + 1) % size
        self._cmd_buffer[self._buffer_pos] = action
        return self._cmd_buffer[(self._buffer_pos - self._max_delay) % size].clone()

    def _substep(
        self,
        x: tuple[Tensor, ...],
        vel_sp: Tensor,
        yaw_rate_sp: Tensor,
        climb: Tensor,
        acc_ext: Tensor,
        ground: Tensor,
        run_velocity_loop: bool,
        vel_noise: Tensor | None,
        gyro_noise: Tensor | None,
    ) -> tuple[tuple[Tensor, ...], Tensor]:
        """One physics step of every drone: controller, motors, rigid body, ground.

        ``x = (pos (3, N), vel (3, N), quat (4, N), rates (3, N), motor (4, N),
        ang_accel (3, N), contact (N,))``; returns the new ``x`` and the motor commands.
        """
        pos, vel, quat, rates, motor, ang_accel, contact = x
        dt, ctrl = self._dt, self.controller
        rot = rotmat_from_quat(quat)
        if run_velocity_loop:
            vel_meas = vel if vel_noise is None else vel + vel_noise
            landed = contact & ~climb
            ctrl.velocity_loop(vel_meas, vel_sp, yaw_rate_sp, rot, landed, self._hover_thrust)
        rates_meas = rates if gyro_noise is None else rates + gyro_noise
        u = ctrl.inner_loops(rot, rates_meas, ang_accel)

        # Motors: first-order lag (separate up / down time constants), thrust curve.
        diff = u - motor
        motor = torch.addcmul(motor, diff, self._alpha_down)
        if self._asym_motor:
            motor = torch.addcmul(motor, diff.clamp_min(0.0), self._alpha_diff)
        f = motor * motor if self._quadratic else motor
        fc = self._force_cols
        acc4 = fc[0] * f[0]
        for i in range(1, 4):
            acc4 = torch.addcmul(acc4, fc[i], f[i])
        acc4 = acc4 * self._force_scale  # (T / m, tau / I)

        # Translation (semi-implicit Euler): thrust along body z, gravity, drag.
        acc = torch.addcmul(acc_ext, vel, self._neg_drag_over_m)
        acc = torch.addcmul(acc, rot[:, 2], acc4[0])
        vel = torch.add(vel, acc, alpha=dt)
        pos = torch.add(pos, vel, alpha=dt)

        # Rotation: Euler's equations (diagonal inertia), then the quaternion with the new
        # rates, q_dot = 0.5 q x (0, w) = 0.5 (-qv . w, qw w + qv x w), renormalized.
        gyro = torch.index_select(rates, 0, self._roll1) * torch.index_select(rates, 0, self._roll2)
        ang_accel = torch.addcmul(acc4[1:], rates, self._neg_damp_over_i)
        ang_accel = torch.addcmul(ang_accel, gyro, self._neg_gyro_coef)
        rates = torch.add(rates, ang_accel, alpha=dt)
        qw, qv = quat[0], quat[1:]
        r1, r2 = self._roll1, self._roll2  # cyclic index shifts: a x b = a1 b2 - a2 b1
        qv_x_w = torch.index_select(qv, 0, r1) * torch.index_select(rates, 0, r2)
        qv_x_w = torch.addcmul(
            qv_x_w, torch.index_select(qv, 0, r2), torch.index_select(rates, 0, r1), value=-1.0
        )
        vec_dot = torch.addcmul(qv_x_w, rates, qw)  # vector part of q x (0, w)
        quat = torch.cat(
            (
                (qw - 0.5 * dt * (qv * rates).sum(0)).unsqueeze(0),
                torch.add(qv, vec_dot, alpha=0.5 * dt),
            ),
            0,
        )
        quat = quat * torch.rsqrt(quat.square().sum(0))

        # Ground: clamp the height, stop the drone while it is not rising.
        contact = (pos[2] <= ground) & (vel[2] <= 0.0)
        pos = torch.cat((pos[:2], torch.maximum(pos[2], ground).unsqueeze(0)), 0)
        keep = (~contact).float()
        vel = vel * keep
        rates = rates * keep
        ang_accel = ang_accel * keep
        return (pos, vel, quat, rates, motor, ang_accel, contact), u

    def _numba_constants(self) -> tuple[np.ndarray, ...]:
        """Packed controller constants of the numba kernel (built once: gains are fixed).

        See :func:`isr_direct_dynamics.cpu_kernels.quadrotor_control_step`.
        """
        ctrl, ck = self.controller, cpu_kernels
        c = ctrl.config
        consts = np.zeros(ck.NUM_CONSTS)
        consts[ck.C_DT] = self._dt
        consts[ck.C_G] = ctrl.g
        consts[ck.C_VEL_DT] = ctrl.velocity_dt_s
        consts[ck.C_VELD_ALPHA] = ctrl._veld_alpha
        consts[ck.C_G_TAN_TILT] = ctrl._g_tan_tilt
        consts[ck.C_ARW_GAIN] = ctrl._arw_gain
        consts[ck.C_THR_MAX_SQ] = ctrl._thr_max_sq
        consts[ck.C_THR_MIN] = c.thr_min
        consts[ck.C_THR_MAX] = c.thr_max
        consts[ck.C_THR_XY_MARG] = c.thr_xy_marg
        consts[ck.C_HALF_YAW_W] = ctrl._half_yaw_w
        consts[ck.C_NEG_I_FACTOR_SQ] = ctrl._neg_i_factor_sq
        consts[ck.C_YAW_MAX] = ctrl._yaw_max
        consts[ck.C_THR_FAC] = ctrl._thr_fac
        gl, dl = ctrl._gyro_lp, ctrl._dgyro_lp
        consts[[ck.C_GYRO_B0, ck.C_GYRO_A1, ck.C_GYRO_A2]] = (gl.b0, gl.a1, gl.a2)
        consts[[ck.C_DGYRO_B0, ck.C_DGYRO_A1, ck.C_DGYRO_A2]] = (dl.b0, dl.a1, dl.a2)
        lim = self.config.limits
        consts[ck.C_MAX_V] = lim.max_velocity_m_s
        consts[ck.C_MAX_VZ] = lim.max_vertical_velocity_m_s
        consts[ck.C_MAX_YAW_RATE] = math.radians(lim.max_yaw_rate_deg_s)
        consts[ck.C_CLIP_NORM] = float(lim.clip_horizontal_norm)
        consts[ck.C_XY_VEL_MAX] = c.xy_vel_max_m_s
        consts[ck.C_Z_VEL_UP] = c.z_vel_max_up_m_s
        consts[ck.C_Z_VEL_DN] = c.z_vel_max_dn_m_s
        axis = np.zeros((ck.NUM_AXIS_CONSTS, 3))
        for row, t in (
            (ck.A_VEL_P, ctrl._vel_p), (ck.A_VEL_I_DT, ctrl._vel_i_dt),
            (ck.A_VEL_NEG_D, ctrl._vel_neg_d), (ck.A_ATT_2P, ctrl._att_2p),
            (ck.A_RATE_MAX, ctrl._rate_max), (ck.A_RATE_P, ctrl._rate_p),
            (ck.A_RATE_I_DT, ctrl._rate_i_dt), (ck.A_RATE_NEG_D, ctrl._rate_neg_d),
            (ck.A_RATE_FF, ctrl._rate_ff), (ck.A_RATE_INT_LIM, ctrl._rate_int_lim),
        ):  # fmt: skip
            axis[row] = t.detach().cpu().double().view(3).numpy()
        flags = (
            ck.F_HAS_VEL_D * ctrl._has_vel_d
            | ck.F_HAS_FF * ctrl._has_ff
            | ck.F_GYRO_LP * gl.enabled
            | ck.F_DGYRO_LP * dl.enabled
        )
        force_map = torch.cat(self._force_cols, dim=1).double().cpu().numpy()  # (4, 4)
        mix = ctrl.mix.double().cpu().numpy()  # (motors, axes)
        inv_d = np.stack([ctrl._desat[a][1].double().cpu().view(4).numpy() for a in range(4)])
        eff = ctrl.effectiveness[:3].double().cpu().numpy()
        return consts, axis, flags, force_map, mix, inv_d, eff

    def _numpy_view(self, obj: object, name: str) -> np.ndarray:
        """NumPy view of the tensor ``obj.<name>`` that the kernel updates in place.

        Made contiguous (and stored back) if needed; cached while the attribute holds the same
        tensor (resets and ``set_params`` replace tensors, which refreshes the view).
        """
        t = getattr(obj, name)
        key = (id(obj), name)
        hit = self._views.get(key)
        if hit is not None and hit[0] is t:
            return hit[1]
        if not t.is_contiguous():
            t = t.contiguous()
            setattr(obj, name, t)
        view = t.detach().numpy()
        self._views[key] = (t, view)
        return view

    def _update_gusts(self) -> None:
        """Advance the Ornstein-Uhlenbeck gusts by one control step (one draw per drone)."""
        if self._has_gusts:
            z = torch.randn(3, self.num_drones, generator=self.generator, device=self.device)
            self._gust = torch.addcmul(self._gust * self._gust_phi, z, self._gust_innov_std)

    def _draw_noise(self) -> Tensor | None:
        """Standard normal draws of every physics step ``(steps, velocity / gyro, 3, N)``."""
        if not self._noise:
            return None
        shape = (self.physics_steps_per_control, 2, 3, self.num_drones)
        return torch.randn(shape, generator=self.generator, device=self.device)

    def _physics_numba(self, action: Tensor) -> None:
        """One control step with the numba kernel, in place.

        Action scaling, PX4's setpoint limits, wind and all physics steps. The kernel reads and
        writes the ``VehicleState`` tensors (position, velocity, attitude, rates, yaw, ground
        contact), the model's motor / contact state and the controller's state directly. Random
        draws happen here in the torch code's order (gusts, then noise).
        """
        n = self.num_drones
        self._update_gusts()
        ground = self.terrain_height_fn(self.state.pos_enu_m).reshape(n)
        noise = self._draw_noise()
        if self._numba_consts is None:
            self._numba_consts = self._numba_constants()
        consts, axis, flags, force_map, mix, inv_d, eff = self._numba_consts
        ctrl, ck, st = self.controller, cpu_kernels, self.state
        flags |= ck.F_QUADRATIC * self._quadratic | ck.F_ASYM_MOTOR * self._asym_motor
        flags |= ck.F_NOISE * (noise is not None)
        v = self._numpy_view
        with ck.threads_for(n, ck.MIN_PARALLEL_DRONES):
            ck.quadrotor_control_step(
                v(st, "pos_enu_m").reshape(n, 3), v(st, "vel_enu_m_s").reshape(n, 3),
                v(st, "quat_wxyz").reshape(n, 4), v(st, "body_rates_flu_rad_s").reshape(n, 3),
                v(st, "yaw_rad").reshape(n), v(self, "motor_state"), v(self, "_ang_accel"),
                v(self, "_contact"), v(st, "ground_contact").reshape(n), v(self, "motor_command"),
                v(ctrl, "vel_int"), v(ctrl, "vel_prev"), v(ctrl, "vel_dot"), v(ctrl, "rate_int"),
                v(ctrl, "sat_lo"), v(ctrl, "sat_hi"), v(ctrl, "att_sp_zx"), v(ctrl, "thrust_sp"),
                v(ctrl, "yaw_rate_sp"), v(ctrl, "landed"), v(ctrl, "_flying"), v(ctrl, "rate_sp"),
                v(ctrl, "torque_sp"), v(ctrl._gyro_lp, "d1"), v(ctrl._gyro_lp, "d2"),
                v(ctrl._dgyro_lp, "d1"), v(ctrl._dgyro_lp, "d2"),
                action.detach().reshape(n, 4).contiguous().numpy(),
                v(self.params, "wind_mean_enu_m_s"), v(self, "_gust"), v(self, "_drag_over_m"),
                ground.contiguous().numpy(), (self._no_noise if noise is None else noise).numpy(),
                float(self._vel_noise_std), float(self._gyro_noise_std),
                v(self, "_hover_thrust"), v(self, "_alpha_down"), v(self, "_alpha_diff"),
                v(self, "_force_scale"), v(self, "_neg_drag_over_m"), v(self, "_neg_damp_over_i"),
                v(self, "_neg_gyro_coef"), force_map, mix, inv_d, eff, consts, axis, int(flags),
                self.physics_steps_per_control, self._tick, self._decimation,
            )  # fmt: skip
        self._tick += self.physics_steps_per_control

    @torch.no_grad()
    def _step_clean(self, action: Tensor) -> None:
        n = self.num_drones
        shape = self.shape
        st = self.state
        ctrl = self.controller
        if self._max_delay > 0:
            action = self._delayed(action)
        if self.numba_physics:  # scales the action and updates the VehicleState in place
            self._physics_numba(action)
            return
        vel_sp, yaw_rate_sp = scale_action(action, self.config.limits)
        vel_sp = ctrl.limit_velocity_setpoint(vel_sp.reshape(n, 3).t())
        yaw_rate_sp = yaw_rate_sp.reshape(n)
        climb = vel_sp[2] > 0.0  # offboard takeoff request (vz setpoint up)

        self._update_gusts()
        wind = self.params.wind_mean_enu_m_s.t() + self._gust  # (3, N)
        # Constant part of the acceleration over the step: gravity + drag of the wind.
        acc_ext = torch.addcmul(self._gravity, wind, self._drag_over_m)
        ground = self.terrain_height_fn(st.pos_enu_m).reshape(n)
        steps = self.physics_steps_per_control
        noise = self._draw_noise()

        pos = st.pos_enu_m.reshape(n, 3).t().contiguous()  # (3, N)
        vel = st.vel_enu_m_s.reshape(n, 3).t().contiguous()  # (3, N)
        quat = st.quat_wxyz.reshape(n, 4).t().contiguous()  # (4, N)
        rates = st.body_rates_flu_rad_s.reshape(n, 3).t().contiguous()  # (3, N)
        x = (pos, vel, quat, rates, self.motor_state, self._ang_accel, self._contact)
        u = self.motor_command
        contact_any = torch.zeros_like(self._contact)
        vel_noise = gyro_noise = None
        for k in range(steps):
            run_velocity_loop = self._tick % self._decimation == 0
            if noise is not None:
                vel_noise = self._vel_noise_std * noise[k, 0]
                gyro_noise = self._gyro_noise_std * noise[k, 1]
            x, u = self._substep_fn(
                x, vel_sp, yaw_rate_sp, climb, acc_ext, ground, run_velocity_loop,
                vel_noise, gyro_noise,
            )  # fmt: skip
            contact_any |= x[6]
            self._tick += 1
        pos, vel, quat, rates, motor, ang_accel, contact = x
        self.motor_state, self.motor_command = motor, u
        self._ang_accel, self._contact = ang_accel, contact
        st.pos_enu_m.copy_(pos.t().reshape(*shape, 3))
        st.vel_enu_m_s.copy_(vel.t().reshape(*shape, 3))
        st.quat_wxyz.copy_(quat.t().reshape(*shape, 4))
        st.body_rates_flu_rad_s.copy_(rates.t().reshape(*shape, 3))
        w, x, y, z = quat
        yaw = wrap_angle(torch.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))
        st.yaw_rad.copy_(yaw.view(shape))
        st.ground_contact.copy_(contact_any.view(shape))
