"""Batched mirror of PX4's multicopter control cascade (PX4 v1.15 parameter defaults).

One :class:`PX4MulticopterController` flies ``N`` drones at once, from an offboard velocity +
yaw-rate setpoint down to four normalized motor commands::

    velocity setpoint (offboard, not smoothed, limited to MPC_XY_VEL_MAX / MPC_Z_VEL_MAX_UP/DN)
      -> velocity PID, output acceleration      mc_pos_control  PositionControl::_velocityControl
         (D on the measured velocity derivative, low-passed at MPC_VELD_LP; horizontal tracking
         anti-windup, vertical conditional anti-windup, |integral_z| <= g)
      -> thrust vector with tilt limit           PositionControl::_accelerationControl,
         (MPC_TILTMAX_AIR) and vertical priority ControlMath::limitTilt, thrust limiting with
         (MPC_THR_XY_MARG, MPC_THR_MIN/MAX)      MPC_THR_XY_MARG in _velocityControl
      -> attitude setpoint (body z along thrust, ControlMath::bodyzToAttitude; in offboard
         heading = current yaw)                  velocity mode the yaw setpoint is the current yaw
      -> attitude P, yaw weight, rate limits,    mc_att_control  AttitudeControl::update
         yaw-rate feed-forward
      -> body-rate PID with saturation-aware     src/lib/rate_control/rate_control.cpp
         integrator (I factor, integrator limit) (gyro / D-term filters as vehicle_angular_velocity)
      -> control allocation, quad-X              control_allocator: ControlAllocationPseudoInverse
         (normalized pseudo-inverse, sequential  (normalization), ControlAllocationSequential-
         desaturation with airmode off)          Desaturation (mixAirmodeDisabled, mixYaw)

This is an independent batched re-implementation written from reading those PX4 files (BSD-3);
no PX4 code is copied. The unit tests compare it with literal one-drone transcriptions of
``_velocityControl`` / ``_accelerationControl``, ``AttitudeControl::update`` and the sequential
desaturation on random inputs.

Frames: PX4 works in NED / FRD; this module works in world ENU / body FLU throughout (the
workspace's frames). The cascade is written frame-independently (a vector law stays the same law
under the proper rotation NED->ENU), except for a few sign conventions that are converted here:
PX4's ``min(collective, -thr_min)`` (NED, upward thrust negative) becomes ``max(collective,
thr_min)`` with thrust positive up, and its anti-windup tests flip accordingly; the yaw
feed-forward axis is the world up axis expressed in body FLU; the allocation matrices are built
in FLU (pitch and yaw rows change sign against FRD; PX4's normalization is sign-agnostic, so the
normalized mix is the same physical mix).

Layout: tensors are component-major, a batch of 3-vectors is ``(3, N)``, motor commands
``(4, N)``, rotation matrices ``(3, 3, N)``, scalars ``(N,)``. On CPU, element-wise operations that
broadcast a per-axis constant along the long drone dimension are several times faster than on
``(N, 3)``; the quadrotor model converts from / to the ``(W, D, 3)`` state once per control step.

Deliberate differences from PX4 (documented where they occur): no estimator (the controller sees
the state it is given), the hover thrust is given per drone (PX4's hover-thrust estimator
converged) unless fixed in the config, no takeoff ramp or land detector (the caller passes a
``landed`` flag), the D term uses the angular acceleration passed in instead of differentiating
the gyro, and the attitude law is evaluated in a closed form equal to PX4's quaternion steps.

Loop rates: the rate loop, attitude loop and allocation run every physics step (PX4 runs the rate
loop at the gyro rate, 250-400 Hz in SITL); the velocity loop runs every
``velocity_loop_decimation`` physics steps (PX4's position loop runs at the local-position rate,
about 100 Hz).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import check

GRAVITY_M_S2 = 9.80665
"""Standard gravity (PX4 ``CONSTANTS_ONE_G``)."""

# Control axes of the allocation (FLU): roll, pitch, yaw torque (normalized), collective thrust.
AXIS_ROLL, AXIS_PITCH, AXIS_YAW, AXIS_THRUST = 0, 1, 2, 3


@dataclass
class PX4ControllerConfig:
    """Gains and limits of the PX4 multicopter cascade; defaults are PX4 v1.15 parameter defaults.

    Field names follow the PX4 parameter (given in each docstring) in lower case with units.
    """

    # ------------------------------------------------------------ velocity loop (mc_pos_control)
    xy_vel_p_acc: float = 1.8
    """``MPC_XY_VEL_P_ACC``: horizontal velocity P gain, (m/s^2) / (m/s)."""
    xy_vel_i_acc: float = 0.4
    """``MPC_XY_VEL_I_ACC``: horizontal velocity I gain, (m/s^2) / m."""
    xy_vel_d_acc: float = 0.2
    """``MPC_XY_VEL_D_ACC``: horizontal velocity D gain, (m/s^2) / (m/s^2)."""
    z_vel_p_acc: float = 4.0
    """``MPC_Z_VEL_P_ACC``: vertical velocity P gain."""
    z_vel_i_acc: float = 2.0
    """``MPC_Z_VEL_I_ACC``: vertical velocity I gain."""
    z_vel_d_acc: float = 0.0
    """``MPC_Z_VEL_D_ACC``: vertical velocity D gain."""
    vel_deriv_lp_hz: float = 5.0
    """``MPC_VELD_LP``: cutoff of the first-order low-pass on the velocity derivative (D term)."""
    xy_vel_max_m_s: float = 12.0
    """``MPC_XY_VEL_MAX``: limit of the horizontal velocity setpoint norm, m/s."""
    z_vel_max_up_m_s: float = 3.0
    """``MPC_Z_VEL_MAX_UP``: limit of the climb-rate setpoint, m/s. Note: the workspace's action
    scaling reaches 5 m/s vertically; above this limit PX4 (and this model) clip the setpoint, as
    does the direct model (``DirectDynamicsConfig.max_climb_rate_m_s``, same defaults)."""
    z_vel_max_dn_m_s: float = 1.5
    """``MPC_Z_VEL_MAX_DN``: limit of the descent-rate setpoint, m/s (see ``z_vel_max_up_m_s``)."""
    tilt_max_air_deg: float = 45.0
    """``MPC_TILTMAX_AIR``: maximum tilt of the thrust setpoint, degrees."""
    thr_min: float = 0.12
    """``MPC_THR_MIN``: minimum collective thrust in flight (normalized)."""
    thr_max: float = 1.0
    """``MPC_THR_MAX``: maximum collective thrust (normalized)."""
    thr_xy_marg: float = 0.3
    """``MPC_THR_XY_MARG``: horizontal thrust kept when vertical thrust has priority."""
    hover_thrust: float | None = None
    """``MPC_THR_HOVER``: normalized hover thrust used to scale acceleration into thrust. None =
    each drone's true hover thrust (what PX4's hover-thrust estimator, ``MPC_USE_HTE`` = 1 by
    default, converges to); a number = that fixed value for every drone."""
    velocity_loop_decimation: int = 2
    """Run the velocity loop every this many physics steps (2 at 250 Hz physics = 125 Hz, close to
    PX4's ~100 Hz position loop)."""

    # ------------------------------------------------------------ attitude loop (mc_att_control)
    roll_p: float = 6.5
    """``MC_ROLL_P``: roll attitude P gain, (rad/s) / rad (6.5 up to v1.15, 4.0 on newer main)."""
    pitch_p: float = 6.5
    """``MC_PITCH_P``: pitch attitude P gain, (rad/s) / rad."""
    yaw_p: float = 2.8
    """``MC_YAW_P``: yaw attitude P gain, (rad/s) / rad."""
    yaw_weight: float = 0.4
    """``MC_YAW_WEIGHT``: weight of yaw against roll/pitch in the attitude error (0..1)."""
    rollrate_max_deg_s: float = 220.0
    """``MC_ROLLRATE_MAX``: roll-rate setpoint limit, deg/s."""
    pitchrate_max_deg_s: float = 220.0
    """``MC_PITCHRATE_MAX``: pitch-rate setpoint limit, deg/s."""
    yawrate_max_deg_s: float = 200.0
    """``MC_YAWRATE_MAX``: yaw-rate setpoint limit, deg/s."""

    # ---------------------------------------------------------------- rate loop (mc_rate_control)
    rollrate_p: float = 0.15
    """``MC_ROLLRATE_P``: roll-rate P gain, normalized torque / (rad/s)."""
    rollrate_i: float = 0.2
    """``MC_ROLLRATE_I``: roll-rate I gain."""
    rollrate_d: float = 0.003
    """``MC_ROLLRATE_D``: roll-rate D gain (on the filtered angular acceleration)."""
    rollrate_ff: float = 0.0
    """``MC_ROLLRATE_FF``: roll-rate feed-forward."""
    rollrate_k: float = 1.0
    """``MC_ROLLRATE_K``: roll-rate controller gain (multiplies P, I and D)."""
    pitchrate_p: float = 0.15
    """``MC_PITCHRATE_P``."""
    pitchrate_i: float = 0.2
    """``MC_PITCHRATE_I``."""
    pitchrate_d: float = 0.003
    """``MC_PITCHRATE_D``."""
    pitchrate_ff: float = 0.0
    """``MC_PITCHRATE_FF``."""
    pitchrate_k: float = 1.0
    """``MC_PITCHRATE_K``."""
    yawrate_p: float = 0.2
    """``MC_YAWRATE_P``."""
    yawrate_i: float = 0.1
    """``MC_YAWRATE_I``."""
    yawrate_d: float = 0.0
    """``MC_YAWRATE_D``."""
    yawrate_ff: float = 0.0
    """``MC_YAWRATE_FF``."""
    yawrate_k: float = 1.0
    """``MC_YAWRATE_K``."""
    rr_int_lim: float = 0.3
    """``MC_RR_INT_LIM``: roll-rate integrator limit (normalized torque)."""
    pr_int_lim: float = 0.3
    """``MC_PR_INT_LIM``: pitch-rate integrator limit."""
    yr_int_lim: float = 0.3
    """``MC_YR_INT_LIM``: yaw-rate integrator limit."""
    gyro_cutoff_hz: float = 40.0
    """``IMU_GYRO_CUTOFF``: 2nd-order Butterworth low-pass on the rates fed to P and I (40 Hz in
    recent releases' imu_gyro_parameters, 30 Hz in older ones); 0 (or >= half the physics rate)
    disables it."""
    dgyro_cutoff_hz: float = 20.0
    """``IMU_DGYRO_CUTOFF``: 2nd-order Butterworth low-pass on the angular acceleration used by the
    D term; 0 (or >= half the physics rate) disables it."""

    # ---------------------------------------------------------------- outputs
    thr_mdl_fac: float = 0.0
    """``THR_MDL_FAC``: thrust model factor of the motor outputs (0 = command linear in thrust
    as PX4 assumes; PX4 default 0)."""

    def validate(self, prefix: str = "") -> None:
        """Check ranges; raises :class:`ConfigError` naming the field (after ``prefix``)."""
        nonneg = (
            "xy_vel_p_acc", "xy_vel_i_acc", "xy_vel_d_acc", "z_vel_p_acc", "z_vel_i_acc",
            "z_vel_d_acc", "roll_p", "pitch_p", "yaw_p", "rollrate_p", "rollrate_i", "rollrate_d",
            "rollrate_ff", "rollrate_k", "pitchrate_p", "pitchrate_i", "pitchrate_d",
            "pitchrate_ff", "pitchrate_k", "yawrate_p", "yawrate_i", "yawrate_d", "yawrate_ff",
            "yawrate_k", "rr_int_lim", "pr_int_lim", "yr_int_lim", "gyro_cutoff_hz",
            "dgyro_cutoff_hz", "thr_xy_marg",
        )  # fmt: skip
        for name in nonneg:
            v = getattr(self, name)
            check(math.isfinite(v) and v >= 0, f"{prefix}{name}", f"must be >= 0, got {v}")
        positive = (
            "xy_vel_max_m_s", "z_vel_max_up_m_s", "z_vel_max_dn_m_s", "vel_deriv_lp_hz",
            "rollrate_max_deg_s", "pitchrate_max_deg_s", "yawrate_max_deg_s",
        )  # fmt: skip
        for name in positive:
            v = getattr(self, name)
            check(math.isfinite(v) and v > 0, f"{prefix}{name}", f"must be > 0, got {v}")
        check(self.xy_vel_p_acc > 0, f"{prefix}xy_vel_p_acc", "must be > 0 (anti-windup gain 2/P)")
        check(
            0 < self.tilt_max_air_deg <= 89,
            f"{prefix}tilt_max_air_deg",
            f"must be in (0, 89] (PX4 MAX_SAFE_TILT_DEG), got {self.tilt_max_air_deg}",
        )
        check(0 < self.thr_max <= 1, f"{prefix}thr_max", f"must be in (0, 1], got {self.thr_max}")
        check(
            0 <= self.thr_min < self.thr_max,
            f"{prefix}thr_min",
            f"must be in [0, thr_max), got {self.thr_min}",
        )
        if self.hover_thrust is not None:
            check(
                self.thr_min < self.hover_thrust < self.thr_max,
                f"{prefix}hover_thrust",
                f"must be in (thr_min, thr_max) or None, got {self.hover_thrust}",
            )
        check(
            self.velocity_loop_decimation >= 1,
            f"{prefix}velocity_loop_decimation",
            f"must be >= 1, got {self.velocity_loop_decimation}",
        )
        check(
            0 <= self.yaw_weight <= 1,
            f"{prefix}yaw_weight",
            f"must be in [0, 1], got {self.yaw_weight}",
        )
        check(
            0 <= self.thr_mdl_fac <= 1,
            f"{prefix}thr_mdl_fac",
            f"must be in [0, 1], got {self.thr_mdl_fac}",
        )


# ------------------------------------------------------------------------------------ allocation
def quad_x_rotors(
    arm_m: float = 1.0, yaw_moment_per_thrust_m: float = 0.05
) -> tuple[Tensor, Tensor]:
    """PX4's quad-X rotor layout in body FLU (motor index 0..3 = PX4 motors 1..4).

    Motor 1 front-right (CCW), 2 rear-left (CCW), 3 front-left (CW), 4 rear-right (CW), as in
    PX4's quad-X airframes, SIH (``sih.cpp`` ``generate_force_and_torques``) and the x500 model.

    Returns:
        ``(rotor_xy_flu_m (4, 2), yaw_moment_per_thrust_m (4,))``; the yaw entry is the FLU yaw
        torque per newton of that rotor's thrust (a CCW rotor turns the body CW: negative).
    """
    a = float(arm_m)
    xy = torch.tensor([[a, -a], [-a, a], [a, a], [-a, -a]], dtype=torch.float64)
    k = float(yaw_moment_per_thrust_m)
    yaw = torch.tensor([-k, -k, k, k], dtype=torch.float64)
    return xy, yaw


def rotor_effectiveness(rotor_xy_flu_m: Tensor, yaw_moment_per_thrust_m: Tensor) -> Tensor:
    """Physical effectiveness ``(4 axes, n rotors)`` per newton of rotor thrust, in FLU.

    Rows: roll, pitch, yaw torque (N m) and collective thrust (N); rotors thrust along body +z.
    """
    x, y = rotor_xy_flu_m[:, 0], rotor_xy_flu_m[:, 1]
    return torch.stack((y, -x, yaw_moment_per_thrust_m, torch.ones_like(x)), 0)


def normalized_allocation(
    rotor_xy_flu_m: Tensor, yaw_moment_per_thrust_m: Tensor
) -> tuple[Tensor, Tensor]:
    """PX4's normalized mixing matrix and its matching effectiveness, in FLU.

    Pseudo-inverse of the rotor effectiveness, then the column scaling of
    ``ControlAllocationPseudoInverse::updateControlAllocationMatrixScale`` (roll and pitch share
    ``sqrt(|col|^2 / (n_nonzero / 2))``, yaw by the column maximum, thrust by the mean absolute
    entry) and small entries (< 1e-3) set to zero. For a symmetric quad-X the result is the
    familiar ``+-0.707`` roll/pitch, ``+-1`` yaw and ``1`` thrust per motor.

    Returns:
        ``(mix (n rotors, 4 axes), effectiveness (4 axes, n rotors))`` with
        ``effectiveness @ mix = I``: motor commands ``u = mix @ c`` for a normalized control
        ``c = (roll, pitch, yaw, thrust)``, and ``effectiveness @ u`` gives back the control.
    """
    eff = rotor_effectiveness(rotor_xy_flu_m.double(), yaw_moment_per_thrust_m.double())
    mix = torch.linalg.pinv(eff)  # (n, 4)
    scale = torch.ones(4, dtype=torch.float64)
    n_roll = int((mix[:, AXIS_ROLL].abs() > 1e-3).sum())
    n_pitch = int((mix[:, AXIS_PITCH].abs() > 1e-3).sum())
    roll_s = math.sqrt(float(mix[:, 0].square().sum()) / (n_roll / 2.0)) if n_roll else 1.0
    pitch_s = math.sqrt(float(mix[:, 1].square().sum()) / (n_pitch / 2.0)) if n_pitch else 1.0
    scale[AXIS_ROLL] = scale[AXIS_PITCH] = max(roll_s, pitch_s)
    scale[AXIS_YAW] = float(mix[:, AXIS_YAW].max())
    thrust_abs = mix[:, AXIS_THRUST].abs()
    n_thrust = int((thrust_abs > 1.2e-7).sum())
    scale[AXIS_THRUST] = float(thrust_abs.sum()) / n_thrust if n_thrust else 1.0
    mix = mix / scale
    mix = torch.where(mix.abs() < 1e-3, torch.zeros_like(mix), mix)
    return mix, eff * scale.unsqueeze(1)


# --------------------------------------------------------------------------------------- filters
def butterworth2_coeffs(cutoff_hz: float, sample_hz: float) -> tuple[float, float, float] | None:
    """``(b0, a1, a2)`` of PX4's ``LowPassFilter2p`` (b1 = 2 b0, b2 = b0); None = disabled.

    Disabled, as in PX4, when the cutoff is <= 0 or not below half the sample rate.
    """
    if cutoff_hz <= 0 or cutoff_hz >= sample_hz / 2:
        return None
    ohm = math.tan(math.pi * cutoff_hz / sample_hz)
    c = 1.0 + 2.0 * math.cos(math.pi / 4.0) * ohm + ohm * ohm
    b0 = ohm * ohm / c
    a1 = 2.0 * (ohm * ohm - 1.0) / c
    a2 = (1.0 - 2.0 * math.cos(math.pi / 4.0) * ohm + ohm * ohm) / c
    return b0, a1, a2


class _Biquad:
    """Batched direct-form-II biquad (PX4 ``LowPassFilter2p``) over ``(3, N)`` signals."""

    def __init__(self, coeffs: tuple[float, float, float] | None, n: int, device: torch.device):
        self.enabled = coeffs is not None
        self.b0, self.a1, self.a2 = coeffs if coeffs is not None else (1.0, 0.0, 0.0)
        self.d1 = torch.zeros(3, n, device=device)  # (3, N) delay element 1
        self.d2 = torch.zeros(3, n, device=device)  # (3, N) delay element 2

    def apply(self, x: Tensor) -> Tensor:
        """Filter one sample ``x (3, N)``; returns the output (identity when disabled)."""
        if not self.enabled:
            return x
        w0 = x - torch.add(self.d1 * self.a1, self.d2, alpha=self.a2)
        y = torch.add(w0 + self.d2, self.d1, alpha=2.0) * self.b0
        self.d2 = self.d1
        self.d1 = w0
        return y

    def reset_masked(self, mask: Tensor, value: Tensor) -> None:
        """Reset the drones where ``mask (N,)`` is true to the steady state of ``value (3, N)``."""
        dval = value / (4.0 * self.b0) if self.enabled else value
        self.d1 = torch.where(mask, dval, self.d1)
        self.d2 = torch.where(mask, dval, self.d2)


def rotmat_from_quat(quat_wxyz: Tensor) -> Tensor:
    """Rotation matrices ``R (3, 3, N)`` (``R[i, j]``, body FLU -> world ENU) of ``(4, N)`` quats.

    Component-major helper of the hot loop: about a dozen tensor operations for all drones,
    each on at most ``3 N`` elements (below ATen's parallel grain for N up to ~10k, so a busy
    second core cannot stall it).
    """
    w, v = quat_wxyz[0], quat_wxyz[1:]
    dev = quat_wxyz.device
    v2 = v + v
    sq2 = v * v2  # (2xx, 2yy, 2zz)
    c = v2 * torch.index_select(v, 0, _idx(dev, (1, 2, 0)))  # (2xy, 2yz, 2zx)
    wv = torch.index_select(v2 * w, 0, _idx(dev, (2, 0, 1)))  # (2wz, 2wx, 2wy)
    diag = (sq2 + 1.0) - sq2.sum(0)  # (R00, R11, R22)
    up, lo = c - wv, c + wv  # (R01, R12, R20), (R10, R21, R02)
    rot = torch.empty(3, 3, quat_wxyz.shape[1], device=dev, dtype=quat_wxyz.dtype)
    torch.stack((diag[0], up[0], lo[2]), 0, out=rot[0])
    torch.stack((lo[0], diag[1], up[1]), 0, out=rot[1])
    torch.stack((up[2], lo[1], diag[2]), 0, out=rot[2])
    return rot


def _sqrt(x: Tensor) -> Tensor:
    """``sqrt`` of a non-negative tensor as ``x * rsqrt(x)`` (0 stays ~0).

    ATen runs its float "VML" unary kernels (sqrt, cos, sin, exp, log, ...) with a parallel grain
    of 2048 elements, so with more than one thread every such call on a few thousand drones is an
    OpenMP parallel region; on a machine whose other cores are busy each one then waits
    milliseconds for a worker. ``rsqrt``, ``atan2``, ``hypot``, ``polar`` and the arithmetic
    operations use the default grain (32768) and stay serial at these sizes.
    """
    x = x.clamp_min(1e-30)
    return x * torch.rsqrt(x)


_IDX_CACHE: dict[tuple[str, tuple[int, ...]], Tensor] = {}


def _idx(device: torch.device, values: tuple[int, ...]) -> Tensor:
    """Cached int64 index tensor on ``device``."""
    key = (str(device), values)
    t = _IDX_CACHE.get(key)
    if t is None:
        t = _IDX_CACHE[key] = torch.tensor(values, dtype=torch.long, device=device)
    return t


# ------------------------------------------------------------------------------------ controller
class PX4MulticopterController:
    """PX4's multicopter cascade for ``num_drones`` drones, world ENU / body FLU.

    Tensors are component-major: a batch of 3-vectors is ``(3, N)``, motor commands ``(4, N)``,
    rotation matrices ``(3, 3, N)``, scalars ``(N,)``. (On CPU, element-wise operations that
    broadcast a per-axis constant along the long, contiguous drone dimension are several times
    faster than on ``(N, 3)``.)

    Stateful (integrators, filters, the last attitude setpoint, allocator saturation flags);
    every update is batched and free of per-drone Python loops and host synchronisations.

    Typical use per physics step (see :class:`~isr_direct_dynamics.quadrotor.QuadrotorModel`)::

        if tick % cfg.velocity_loop_decimation == 0:
            ctrl.velocity_loop(vel, vel_sp, yaw_rate_sp, rotmat, landed, hover_thrust)
        motor_cmd = ctrl.inner_loops(rotmat, body_rates, angular_accel)

    Args:
        num_drones: ``N``.
        config: gains and limits.
        physics_dt_s: period of the inner loops (rate, attitude, allocation), seconds.
        device: torch device.
        gravity_m_s2: gravity used to scale thrust (PX4 ``CONSTANTS_ONE_G``).
        rotor_xy_flu_m, yaw_moment_per_thrust_m: geometry for the allocation matrices (nominal
            airframe, as PX4's ``CA_ROTOR*`` parameters); quad-X when None.
    """

    def __init__(
        self,
        num_drones: int,
        config: PX4ControllerConfig,
        physics_dt_s: float,
        device: torch.device | str = "cpu",
        gravity_m_s2: float = GRAVITY_M_S2,
        rotor_xy_flu_m: Tensor | None = None,
        yaw_moment_per_thrust_m: Tensor | None = None,
    ) -> None:
        config.validate()
        self.config = c = config
        self.num_drones = n = num_drones
        self.device = dev = torch.device(device)
        self.physics_dt_s = float(physics_dt_s)
        self.velocity_dt_s = self.physics_dt_s * c.velocity_loop_decimation
        self.g = g = float(gravity_m_s2)

        def col(*values: float) -> Tensor:
            return torch.tensor(values, dtype=torch.float32, device=dev).unsqueeze(1)

        # Velocity loop constants ((3, 1) per axis).
        self._vel_p = col(c.xy_vel_p_acc, c.xy_vel_p_acc, c.z_vel_p_acc)
        self._vel_i_dt = col(c.xy_vel_i_acc, c.xy_vel_i_acc, c.z_vel_i_acc) * self.velocity_dt_s
        self._vel_neg_d = -col(c.xy_vel_d_acc, c.xy_vel_d_acc, c.z_vel_d_acc)
        self._has_vel_d = c.xy_vel_d_acc != 0.0 or c.z_vel_d_acc != 0.0
        b = 2.0 * math.pi * c.vel_deriv_lp_hz * self.velocity_dt_s
        self._veld_alpha = b / (1.0 + b)  # BlockLowPass: y += a (x - y)
        self._g_tan_tilt = g * math.tan(math.radians(c.tilt_max_air_deg))
        self._arw_gain = 2.0 / c.xy_vel_p_acc
        self._thr_max_sq = c.thr_max * c.thr_max

        # Attitude loop constants (AttitudeControl::setProportionalGain divides yaw P by the
        # yaw weight to compensate the weight's rescaling of the yaw error).
        yaw_p = c.yaw_p / c.yaw_weight if c.yaw_weight > 1e-4 else c.yaw_p
        self._att_2p = 2.0 * col(c.roll_p, c.pitch_p, yaw_p)
        self._half_yaw_w = 0.5 * c.yaw_weight
        self._rate_max = col(
            math.radians(c.rollrate_max_deg_s),
            math.radians(c.pitchrate_max_deg_s),
            math.radians(c.yawrate_max_deg_s),
        )

        # Rate loop constants (MulticopterRateControl: P, I, D multiplied by K).
        ks = (c.rollrate_k, c.pitchrate_k, c.yawrate_k)
        self._rate_p = col(c.rollrate_p * ks[0], c.pitchrate_p * ks[1], c.yawrate_p * ks[2])
        self._rate_i_dt = (
            col(c.rollrate_i * ks[0], c.pitchrate_i * ks[1], c.yawrate_i * ks[2])
            * self.physics_dt_s
        )
        self._rate_neg_d = -col(c.rollrate_d * ks[0], c.pitchrate_d * ks[1], c.yawrate_d * ks[2])
        self._rate_ff = col(c.rollrate_ff, c.pitchrate_ff, c.yawrate_ff)
        self._has_ff = any(v != 0.0 for v in (c.rollrate_ff, c.pitchrate_ff, c.yawrate_ff))
        self._rate_int_lim = col(c.rr_int_lim, c.pr_int_lim, c.yr_int_lim)
        self._neg_i_factor_sq = -((1.0 / math.radians(400.0)) ** 2)
        fs = 1.0 / self.physics_dt_s
        self._gyro_lp = _Biquad(butterworth2_coeffs(c.gyro_cutoff_hz, fs), n, dev)
        self._dgyro_lp = _Biquad(butterworth2_coeffs(c.dgyro_cutoff_hz, fs), n, dev)

        # Allocation (normalized quad-X mix) and per-axis desaturation vectors (4, 1).
        if rotor_xy_flu_m is None or yaw_moment_per_thrust_m is None:
            rotor_xy_flu_m, yaw_moment_per_thrust_m = quad_x_rotors()
        mix, eff = normalized_allocation(rotor_xy_flu_m, yaw_moment_per_thrust_m)
        self.mix = mix.float().to(dev)  # (4 motors, 4 axes)
        """Normalized mixing matrix ``(motors, axes)``, axes = roll, pitch, yaw, thrust (FLU)."""
        self.effectiveness = eff.float().to(dev)  # (4 axes, 4 motors)
        """Normalized effectiveness ``(axes, motors)``; ``effectiveness @ mix = I``."""
        self._eff_cols = [self.effectiveness[:3, i : i + 1].clone() for i in range(4)]  # (3, 1)
        # 1/d with PX4's rule of skipping actuators of weak effectiveness (|d| < 0.2).
        self._desat: list[tuple[Tensor, Tensor]] = []
        for axis in range(4):
            d = self.mix[:, axis : axis + 1].clone()  # (4, 1)
            inv_d = torch.where(d.abs() < 0.2, torch.zeros_like(d), 1.0 / d)
            self._desat.append((d, inv_d))
        self._yaw_max = 1.0 + 0.15  # mixYaw: actuator_max + (max - min) * MINIMUM_YAW_MARGIN
        self._thr_fac = c.thr_mdl_fac

        # ---------------------------------------------------------------- per-drone state
        self.vel_int = torch.zeros(3, n, device=dev)
        """Velocity integral ``(3, N)``, m/s^2 (ENU)."""
        self.vel_prev = torch.zeros(3, n, device=dev)
        """Velocity at the last velocity-loop tick ``(3, N)`` (for the derivative)."""
        self.vel_dot = torch.zeros(3, n, device=dev)
        """Low-passed velocity derivative ``(3, N)``, m/s^2."""
        self.rate_int = torch.zeros(3, n, device=dev)
        """Rate integral ``(3, N)`` (normalized torque, FLU)."""
        self.sat_lo = torch.full((3, n), -math.inf, device=dev)
        """Floor of the rate error entering the integrator ``(3, N)`` (0 = negative saturation)."""
        self.sat_hi = torch.full((3, n), math.inf, device=dev)
        """Ceiling of the rate error entering the integrator ``(3, N)`` (0 = positive sat.)."""
        self.att_sp_zx = torch.zeros(3, 2, n, device=dev)
        """Attitude setpoint: desired body z (``[:, 0]``) and body x (``[:, 1]``) in world ENU."""
        self.att_sp_zx[2, 0] = 1.0
        self.att_sp_zx[0, 1] = 1.0
        self.thrust_sp = torch.zeros(n, device=dev)
        """Normalized collective thrust setpoint ``(N,)``."""
        self.yaw_rate_sp = torch.zeros(n, device=dev)
        """Yaw-rate feed-forward ``(N,)``, rad/s about world up."""
        self.landed = torch.zeros(n, dtype=torch.bool, device=dev)
        """``(N,)`` bool: idling on the ground (thrust zero, integrators frozen)."""
        self._flying = torch.ones(n, device=dev)  # (N,) float 1 - landed
        self.rate_sp = torch.zeros(3, n, device=dev)
        """Last body-rate setpoint ``(3, N)`` rad/s (FLU)."""
        self.torque_sp = torch.zeros(3, n, device=dev)
        """Last normalized torque setpoint ``(3, N)`` (FLU)."""

    # ------------------------------------------------------------------------------ setpoints
    def limit_velocity_setpoint(self, vel_sp_enu_m_s: Tensor) -> Tensor:
        """Apply ``MPC_XY_VEL_MAX`` (norm) and ``MPC_Z_VEL_MAX_UP/DN`` to ``(3, N)`` setpoints.

        PositionControl::_positionControl with a NaN position setpoint (offboard velocity).
        """
        c = self.config
        xy = vel_sp_enu_m_s[:2]
        speed = torch.hypot(xy[0], xy[1])
        xy = xy * torch.clamp(c.xy_vel_max_m_s / speed.clamp_min(1e-9), max=1.0)
        z = vel_sp_enu_m_s[2:].clamp(-c.z_vel_max_dn_m_s, c.z_vel_max_up_m_s)
        return torch.cat((xy, z), 0)

    # ------------------------------------------------------------------------------- velocity
    def velocity_loop(
        self,
        vel_enu_m_s: Tensor,
        vel_sp_enu_m_s: Tensor,
        yaw_rate_sp_rad_s: Tensor,
        rotmat: Tensor,
        landed: Tensor,
        hover_thrust: Tensor,
    ) -> None:
        """Velocity PID -> thrust vector -> attitude setpoint (stored for the inner loops).

        Args:
            vel_enu_m_s: measured velocity ``(3, N)``.
            vel_sp_enu_m_s: velocity setpoint ``(3, N)``, already limited.
            yaw_rate_sp_rad_s: yaw-rate setpoint ``(N,)`` (about world up, ENU sign).
            rotmat: attitude ``(3, 3, N)`` body FLU -> world ENU.
            landed: ``(N,)`` bool: on the ground and not asked to climb. PX4 then keeps the
                thrust at zero and resets the integrators (MulticopterPositionControl: not taken
                off / ground contact; the takeoff ramp itself is not modelled).
            hover_thrust: normalized hover thrust per drone ``(N,)``.
        """
        g = self.g
        c = self.config
        # BlockDerivative + BlockLowPass (MPC_VELD_LP) on the measured velocity.
        if self._has_vel_d:
            raw = (vel_enu_m_s - self.vel_prev) * (1.0 / self.velocity_dt_s)
            self.vel_dot = torch.lerp(self.vel_dot, raw, self._veld_alpha)
            self.vel_prev = vel_enu_m_s
        err = vel_sp_enu_m_s - vel_enu_m_s
        acc = torch.addcmul(self.vel_int, err, self._vel_p)
        if self._has_vel_d:
            acc = torch.addcmul(acc, self.vel_dot, self._vel_neg_d)  # acceleration setpoint

        # _accelerationControl: body z along (a_xy, g), tilt-limited (limitTilt); collective
        # thrust scaled by the hover thrust and projected on the planned body z; >= thr_min.
        acc_xy = acc[:2]
        acc_h = torch.hypot(acc_xy[0], acc_xy[1])
        acc_h2 = acc_h.square()
        k_tilt = torch.clamp(self._g_tan_tilt / acc_h.clamp_min(1e-9), max=1.0)
        inv_n = torch.rsqrt(torch.addcmul(torch.full_like(acc_h, g * g), acc_h2, k_tilt.square()))
        coll = ((acc[2] + g) * hover_thrust * (1.0 / (g * g)) / inv_n).clamp_min(c.thr_min)
        s = coll * inv_n
        ks = k_tilt * s
        thr_xy_n = acc_h * ks  # |horizontal thrust|
        thr_z = g * s

        # Vertical anti-windup (thrust at its minimum and wanting to go down, or at its maximum
        # and wanting to go up).
        err_z = err[2]
        stop_z = ((thr_z <= c.thr_min) & (err_z <= 0)) | ((thr_z >= c.thr_max) & (err_z >= 0))
        err_z = err_z.masked_fill(stop_z, 0.0)

        # Vertical priority with a horizontal margin, then saturate the horizontal thrust.
        alloc_h = thr_xy_n.clamp_max(c.thr_xy_marg)
        thr_z = torch.minimum(thr_z, _sqrt((self._thr_max_sq - alloc_h.square()).clamp_min(0.0)))
        thr_xy_max = _sqrt((self._thr_max_sq - thr_z.square()).clamp_min(0.0))
        ks = ks * torch.clamp(thr_xy_max / thr_xy_n.clamp_min(1e-9), max=1.0)
        thr_xy = acc_xy * ks

        # Tracking anti-windup on the horizontal integrator (Rundqwist), active when the
        # produced horizontal acceleration is smaller than the demanded one.
        acc_prod_scale = ks * (g / hover_thrust)  # acc_prod = acc_xy * acc_prod_scale
        sat = (acc_prod_scale < 1.0).float()  # |acc_xy| > |acc_prod|
        err_xy = err[:2] - acc_xy * ((1.0 - acc_prod_scale) * sat * self._arw_gain)

        vel_int = torch.addcmul(
            self.vel_int, torch.cat((err_xy, err_z.unsqueeze(0)), 0), self._vel_i_dt
        )
        vel_int[2].clamp_(-g, g)
        flying = (~landed).float()
        self.vel_int = vel_int * flying

        # Attitude setpoint: body z along the thrust, heading = current yaw (offboard velocity
        # control has yaw = NaN and PositionControl then uses the current yaw), yaw-rate
        # feed-forward. A tiny upward bias makes the zero thrust of a landed drone point up.
        thr = torch.cat((thr_xy * flying, (thr_z * flying + 1e-6).unsqueeze(0)), 0)
        inv_t = torch.rsqrt(thr.square().sum(0))
        z_d = thr * inv_t
        # Heading (cos, sin) of the current yaw from the body x axis: yaw = atan2(R10, R00).
        head = rotmat[:2, 0]
        head = head * torch.rsqrt(head.square().sum(0).clamp_min(1e-12))
        # x_d = normalize(y_C x z_d), y_C = (-sin, cos, 0) (ControlMath::bodyzToAttitude).
        x_d = torch.cat((head * z_d[2], (-(head[1] * z_d[1]) - head[0] * z_d[0]).unsqueeze(0)), 0)
        x_d = x_d * torch.rsqrt(x_d.square().sum(0))
        self.att_sp_zx = torch.stack((z_d, x_d), 1)
        self.thrust_sp = inv_t.reciprocal()
        self.yaw_rate_sp = yaw_rate_sp_rad_s
        self.landed = landed
        self._flying = flying

    # ---------------------------------------------------------------------------- inner loops
    def attitude_loop(self, rotmat: Tensor) -> Tensor:
        """Quaternion attitude P controller (AttitudeControl::update) -> body-rate setpoint.

        PX4's law evaluated in the current body frame: with ``d`` the desired body z and ``x_d``
        the desired body x, both expressed in the current body frame, the reduced attitude error
        is the shortest arc ``q_arc`` taking body z onto ``d``; the remaining yaw error ``alpha``
        about ``d`` (between the arc-rotated body x and ``x_d``; closed form ``cos = x_d.x -
        x_d.z d.x / (1 + d.z)``, ``sin = x_d.y - x_d.z d.y / (1 + d.z)``) is scaled by the yaw
        weight; the error quaternion is ``q_arc * q_z(yaw_weight * alpha)``, the rate setpoint
        ``2 imag(q_e) * P`` plus the yaw-rate feed-forward about world up, clamped to the rate
        limits. Equal to PX4's world-frame ``qd_red`` / ``q_mix`` construction conjugated by the
        current attitude.

        Args:
            rotmat: ``(3, 3, N)`` body FLU -> world ENU.

        Returns:
            Body-rate setpoint ``(3, N)`` rad/s (FLU).
        """
        zx = self.att_sp_zx
        # R^T [z_d, x_d]: b[j, k] = sum_i R[i, j] zx[i, k]  -> (3, 2, N)
        b = rotmat[0].unsqueeze(1) * zx[0]
        b = torch.addcmul(b, rotmat[1].unsqueeze(1), zx[1])
        b = torch.addcmul(b, rotmat[2].unsqueeze(1), zx[2])
        d, xd = b[:, 0], b[:, 1]
        opz = (d[2] + 1.0).clamp_min(1e-6)  # 1 + cos(tilt error)
        cs = xd[:2] - d[:2] * (xd[2] / opz)  # (cos, sin) * |.| of the yaw error
        half = self._half_yaw_w * torch.atan2(cs[1], cs[0])
        # (cos, sin) of half in one serial kernel (torch.cos / torch.sin are split across
        # threads from 2048 elements on, see _sqrt)
        ch_sh = torch.view_as_real(torch.polar(torch.ones_like(half), half))
        ch, sh = ch_sh[:, 0], ch_sh[:, 1]
        inv = torch.rsqrt(2.0 * opz)
        v = d[:2] * inv  # q_arc = (opz inv, -v1, v0, 0)
        shv, chv = v * sh, v * ch
        # imag(q_arc * q_z(half)) (real part >= 0, so already canonical).
        eq = torch.stack((shv[0] - chv[1], chv[0] + shv[1], opz * inv * sh), 0)
        rate_sp = torch.addcmul(eq * self._att_2p, rotmat[2], self.yaw_rate_sp)
        return torch.maximum(torch.minimum(rate_sp, self._rate_max), -self._rate_max)

    def rate_loop(self, rate_sp: Tensor, body_rates: Tensor, angular_accel: Tensor) -> Tensor:
        """Body-rate PID (RateControl::update / updateIntegral) -> normalized torque ``(3, N)``.

        Args:
            rate_sp: body-rate setpoint ``(3, N)`` rad/s (FLU).
            body_rates: measured body rates ``(3, N)`` rad/s (FLU), low-passed here with
                ``IMU_GYRO_CUTOFF``.
            angular_accel: angular acceleration ``(3, N)`` rad/s^2, low-passed here with
                ``IMU_DGYRO_CUTOFF`` (PX4 differentiates the gyro; the model passes the
                derivative of its rates).
        """
        rates = self._gyro_lp.apply(body_rates)
        accel = self._dgyro_lp.apply(angular_accel)
        err = rate_sp - rates
        torque = torch.addcmul(self.rate_int, err, self._rate_p)
        torque = torch.addcmul(torque, accel, self._rate_neg_d)
        if self._has_ff:
            torque = torch.addcmul(torque, rate_sp, self._rate_ff)
        # Integrator: no growth into allocator saturation, I factor 1 - (e / 400 deg/s)^2, limit,
        # frozen while landed.
        e = torch.clamp(err, self.sat_lo, self.sat_hi)
        i_factor = torch.add(e.square().mul_(self._neg_i_factor_sq), 1.0).clamp_min_(0.0)
        rate_int = torch.addcmul(self.rate_int, i_factor * e * self._flying, self._rate_i_dt)
        self.rate_int = torch.maximum(
            torch.minimum(rate_int, self._rate_int_lim), -self._rate_int_lim
        )
        return torque

    def _desaturate(
        self, u: Tensor, axis: int, hi: float = 1.0, reduce_only: bool = False
    ) -> Tensor:
        """ControlAllocationSequentialDesaturation::desaturateActuators along one mix column.

        The gain ``k_min + k_max`` over the saturated motors, applied once and then half of the
        recomputed gain. ``reduce_only`` (thrust): skip when the first gain would raise thrust.
        """
        d, inv_d = self._desat[axis]
        k = (u.clamp(0.0, hi) - u) * inv_d
        gain = k.amin(0).clamp_max(0.0) + k.amax(0).clamp_min(0.0)
        if reduce_only:
            keep = (gain <= 0.0).float()
            gain = gain * keep
        u = torch.addcmul(u, gain, d)
        k = (u.clamp(0.0, hi) - u) * inv_d
        gain2 = k.amin(0).clamp_max(0.0) + k.amax(0).clamp_min(0.0)
        if reduce_only:
            gain2 = gain2 * keep
        return torch.addcmul(u, gain2, d, value=0.5)

    def allocate(self, torque: Tensor, thrust: Tensor) -> Tensor:
        """Sequential-desaturation allocation, airmode off (mixAirmodeDisabled + mixYaw).

        Args:
            torque: normalized torque setpoint ``(3, N)`` (FLU).
            thrust: normalized collective thrust ``(N,)``.

        Returns:
            Motor commands ``(4, N)`` in ``[0, 1]``. Also updates the saturation flags that PX4's
            ``control_allocator_status`` feeds back to the rate integrator (used next step).
        """
        dr, dp, dy, dt = (self._desat[a][0] for a in range(4))
        u = torch.addcmul(torch.addcmul(thrust * dt, torque[0], dr), torque[1], dp)
        u = self._desaturate(u, AXIS_THRUST, reduce_only=True)
        u = self._desaturate(u, AXIS_ROLL)
        u = self._desaturate(u, AXIS_PITCH)
        u = torch.addcmul(u, torque[2], dy)
        u = self._desaturate(u, AXIS_YAW, hi=self._yaw_max)
        u = self._desaturate(u, AXIS_THRUST, reduce_only=True)
        u = u.clamp(0.0, 1.0)
        # Unallocated torque -> saturation flags (torque_setpoint_achieved: |unallocated|^2 < 1e-6).
        e = self._eff_cols
        unalloc = torque - e[0] * u[0]
        for i in range(1, 4):
            unalloc = torch.addcmul(unalloc, e[i], u[i], value=-1.0)
        missed = unalloc.square().sum(0) >= 1e-6
        self.sat_hi = torch.where(missed & (unalloc > 1.2e-7), 0.0, math.inf)
        self.sat_lo = torch.where(missed & (unalloc < -1.2e-7), 0.0, -math.inf)
        if self._thr_fac > 0.0:
            f = self._thr_fac
            a = (1.0 - f) / (2.0 * f)
            u = _sqrt(a * a + u / f) - a
        return u

    def inner_loops(self, rotmat: Tensor, body_rates: Tensor, angular_accel: Tensor) -> Tensor:
        """Attitude + rate loop + allocation for one physics step -> motor commands ``(4, N)``."""
        self.rate_sp = self.attitude_loop(rotmat)
        self.torque_sp = self.rate_loop(self.rate_sp, body_rates, angular_accel)
        return self.allocate(self.torque_sp, self.thrust_sp)

    # ---------------------------------------------------------------------------------- reset
    def reset_masked(
        self, mask: Tensor, vel_enu_m_s: Tensor, rotmat: Tensor, thrust: Tensor
    ) -> None:
        """Reset integrators, filters and setpoints of the drones where ``mask (N,)`` is true.

        The stored attitude setpoint becomes "level, current heading, ``thrust (N,)``" and the
        velocity derivative starts from ``vel_enu_m_s (3, N)`` (no derivative kick).
        """
        self.vel_int = self.vel_int.masked_fill(mask, 0.0)
        self.vel_prev = torch.where(mask, vel_enu_m_s, self.vel_prev)
        self.vel_dot = self.vel_dot.masked_fill(mask, 0.0)
        self.rate_int = self.rate_int.masked_fill(mask, 0.0)
        self.sat_lo = self.sat_lo.masked_fill(mask, -math.inf)
        self.sat_hi = self.sat_hi.masked_fill(mask, math.inf)
        zeros = torch.zeros_like(vel_enu_m_s)
        self._gyro_lp.reset_masked(mask, zeros)
        self._dgyro_lp.reset_masked(mask, zeros)
        head = rotmat[:2, 0]
        head = head * torch.rsqrt(head.square().sum(0).clamp_min(1e-12))
        x_d = torch.cat((head, torch.zeros_like(head[:1])), 0)
        z_d = torch.zeros_like(x_d)
        z_d[2] = 1.0
        self.att_sp_zx = torch.where(mask, torch.stack((z_d, x_d), 1), self.att_sp_zx)
        self.thrust_sp = torch.where(mask, thrust, self.thrust_sp)
        self.yaw_rate_sp = self.yaw_rate_sp.masked_fill(mask, 0.0)
        self.landed = self.landed & ~mask
        self._flying = (~self.landed).float()
        self.rate_sp = self.rate_sp.masked_fill(mask, 0.0)
        self.torque_sp = self.torque_sp.masked_fill(mask, 0.0)
