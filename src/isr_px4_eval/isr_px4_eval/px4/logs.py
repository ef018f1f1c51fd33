"""Read PX4 flights (rosbag2 recordings or ULogs) into one :class:`FlightLog` for model fitting.

Two sources, one result:

- **rosbag2** (MCAP or sqlite3, a bag directory or a single ``.mcap`` file) recorded from the
  uXRCE-DDS bridge: the measured state from ``/fmu/out/vehicle_odometry`` (default) or
  ``/fmu/out/vehicle_local_position``, the commands from ``/fmu/in/trajectory_setpoint`` and,
  when recorded, the flight state from ``/fmu/out/vehicle_status``. Topic names are configurable
  (:class:`BagTopics`, with an optional namespace prefix for multi-vehicle setups). **Time base:
  the bag's receive (log) time**. The ``timestamp`` / ``timestamp_sample`` fields of ``/fmu/out``
  messages are converted by the uXRCE-DDS time synchronisation and can jump by hundreds of
  milliseconds (see the real flight's README, quirk 1), so they are never used.
- **ULog** (PX4's own log, read with pyulog): ``vehicle_local_position`` (EKF, default) or
  ``vehicle_local_position_groundtruth`` (SIH truth), ``trajectory_setpoint`` and
  ``vehicle_status``. **Time base: PX4 boot time** (``timestamp``, microseconds), which is
  consistent inside one log. The uORB ``trajectory_setpoint`` also carries PX4's own setpoints
  outside OFFBOARD: only samples inside OFFBOARD (``nav_state == 14``) while armed are kept. The
  logger rate-limits it (200 ms by default), which quantizes when a setpoint changed: each change
  is placed midway between the last logged sample with the old value and the first with the new
  one (unbiased; the error is uniform within about +-100 ms).

Everything is converted to the workspace frames (world ENU, yaw 0 = east, counter-clockwise
positive; :mod:`isr_px4_eval.px4.frames`) and resampled on a uniform grid (``dt_s``, default 0.02
s): measurements by linear interpolation, setpoints by zero-order hold (what the vehicle holds
between setpoints). A grid sample is *valid* when the vehicle is in OFFBOARD, armed and airborne
(PX4's ``vehicle_status.takeoff_time`` is set, plus ``settle_after_takeoff_s`` to skip PX4's takeoff
ramp), a setpoint arrived within ``setpoint_timeout_s`` and measurements bracket it closer than
``max_gap_s``. Contiguous valid runs of at least ``min_segment_s`` are the log's
:attr:`FlightLog.segments`.

Bad input raises :class:`FlightLogError` (a ``ValueError``) saying what is missing: the file, a
topic (listing the topics the bag holds) or a ULog message (listing the messages it holds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from isr_px4_eval.px4.frames import (
    ned_to_enu_vector,
    wrap_angle_rad,
    yaw_ned_to_enu,
    yaw_rate_ned_to_enu,
)

NAVIGATION_STATE_OFFBOARD = 14
"""``VehicleStatus.NAVIGATION_STATE_OFFBOARD`` (px4_msgs release/1.15)."""
ARMING_STATE_ARMED = 2
"""``VehicleStatus.ARMING_STATE_ARMED`` (px4_msgs release/1.15)."""
VELOCITY_FRAME_NED = 1
"""``VehicleOdometry.VELOCITY_FRAME_NED``."""
VELOCITY_FRAME_BODY_FRD = 3
"""``VehicleOdometry.VELOCITY_FRAME_BODY_FRD``."""


class FlightLogError(ValueError):
    """A flight log cannot be used: missing file, topic or message; the message says which."""


# ---------------------------------------------------------------------------------- config
@dataclass
class BagTopics:
    """Topic names read from a rosbag2 recording (PX4 v1.15 names, no version suffix)."""

    odometry: str = "/fmu/out/vehicle_odometry"
    """``px4_msgs/msg/VehicleOdometry`` (NED position/velocity, FRD->NED attitude, FRD rates)."""
    local_position: str = "/fmu/out/vehicle_local_position"
    """``px4_msgs/msg/VehicleLocalPosition`` (NED position/velocity, heading)."""
    trajectory_setpoint: str = "/fmu/in/trajectory_setpoint"
    """``px4_msgs/msg/TrajectorySetpoint`` sent to PX4 (NED velocity, yawspeed)."""
    vehicle_status: str = "/fmu/out/vehicle_status"
    """``px4_msgs/msg/VehicleStatus`` (nav_state, arming_state, takeoff_time); optional."""
    namespace: str = ""
    """Prefix for every topic (e.g. ``/px4_1`` for a second vehicle); empty = none."""

    def resolve(self, name: str) -> str:
        """The full topic name of field ``name`` with the namespace applied."""
        topic = getattr(self, name)
        ns = self.namespace.strip("/")
        return f"/{ns}{topic}" if ns else topic


@dataclass
class FlightLogConfig:
    """How a flight is resampled and which samples count as usable."""

    dt_s: float = 0.02
    """Period of the uniform output grid, seconds (50 Hz)."""
    setpoint_timeout_s: float = 0.5
    """A grid sample needs a setpoint newer than this (the stream runs at 20 Hz in the bag and is
    logged at 5 Hz in a ULog)."""
    max_gap_s: float = 0.1
    """Measurements more than this apart are not interpolated across (the sample is invalid)."""
    settle_after_takeoff_s: float = 2.0
    """Samples this long after PX4 detected the takeoff are dropped (PX4 ramps the vertical
    velocity setpoint at takeoff, so the vehicle does not follow the offboard command yet)."""
    min_segment_s: float = 2.0
    """Valid runs shorter than this are dropped."""
    yaw_rate_smoothing_samples: int = 2
    """Half-width (in measurement samples) of the central difference used where the yaw rate
    comes from differentiating the heading (local position messages)."""

    def validate(self) -> None:
        """Check ranges; raises :class:`FlightLogError` naming the field."""
        for name in ("dt_s", "setpoint_timeout_s", "max_gap_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise FlightLogError(f"FlightLogConfig.{name} must be > 0, got {v}")
        for name in ("settle_after_takeoff_s", "min_segment_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise FlightLogError(f"FlightLogConfig.{name} must be >= 0, got {v}")
        if self.yaw_rate_smoothing_samples < 1:
            raise FlightLogError("FlightLogConfig.yaw_rate_smoothing_samples must be >= 1")


# ---------------------------------------------------------------------------------- result
@dataclass
class FlightLog:
    """One flight on a uniform time grid, workspace frames (world ENU), SI units.

    All arrays share the leading dimension ``N`` (grid samples). Invalid samples (not offboard,
    on the ground, stale data) keep their values but are excluded by :attr:`valid`.
    """

    time_s: np.ndarray  # (N,)
    """Grid times, seconds since :attr:`time_reference` (uniform, step :attr:`dt_s`)."""
    vel_enu_m_s: np.ndarray  # (N, 3)
    """Measured velocity, world ENU, m/s."""
    pos_enu_m: np.ndarray  # (N, 3)
    """Measured position, world ENU (PX4's local origin), m."""
    yaw_enu_rad: np.ndarray  # (N,)
    """Measured yaw, ENU (0 = east, counter-clockwise), wrapped to [-pi, pi)."""
    yaw_rate_enu_rad_s: np.ndarray  # (N,)
    """Measured rate of the Euler yaw, about ENU up, rad/s."""
    cmd_vel_enu_m_s: np.ndarray  # (N, 3)
    """Commanded velocity (zero-order hold of the setpoint stream), world ENU, m/s."""
    cmd_yaw_rate_enu_rad_s: np.ndarray  # (N,)
    """Commanded yaw rate (zero-order hold), about ENU up, rad/s; NaN where not commanded."""
    valid: np.ndarray  # (N,) bool
    """Offboard, armed, airborne, fresh setpoint and measurement."""
    dt_s: float = 0.02
    """Grid period, seconds."""
    source: str = ""
    """Where the data came from (file and topics / messages)."""
    time_base: str = ""
    """Clock of :attr:`time_s` (bag receive time, PX4 boot time, simulation time)."""
    time_reference: str = ""
    """What ``time_s = 0`` is (arming, or the first grid sample)."""
    t_ref_abs_s: float = 0.0
    """Absolute time of ``time_s = 0`` in :attr:`time_base`, seconds."""
    notes: list[str] = field(default_factory=list)
    """Assumptions made while reading (e.g. no vehicle_status recorded)."""
    min_segment_s: float = 0.0
    """Shortest valid run kept in :attr:`segments`, seconds."""
    thrust_dir_enu: np.ndarray | None = None  # (N, 3)
    """Unit thrust direction (body up axis) in world ENU where the source has the attitude
    (odometry quaternion, the embedded model); None otherwise."""

    def __post_init__(self) -> None:
        n = len(self.time_s)
        if self.thrust_dir_enu is not None and self.thrust_dir_enu.shape != (n, 3):
            raise FlightLogError(f"FlightLog.thrust_dir_enu must have shape ({n}, 3)")
        for name in ("vel_enu_m_s", "pos_enu_m", "cmd_vel_enu_m_s"):
            if getattr(self, name).shape != (n, 3):
                raise FlightLogError(f"FlightLog.{name} must have shape ({n}, 3)")
        for name in ("yaw_enu_rad", "yaw_rate_enu_rad_s", "cmd_yaw_rate_enu_rad_s", "valid"):
            if getattr(self, name).shape != (n,):
                raise FlightLogError(f"FlightLog.{name} must have shape ({n},)")
        self.valid = (
            np.asarray(self.valid, dtype=bool)
            & np.all(np.isfinite(self.vel_enu_m_s), axis=1)
            & np.all(np.isfinite(self.cmd_vel_enu_m_s), axis=1)
        )
        self._drop_short_runs()

    # --------------------------------------------------------------- derived
    def _drop_short_runs(self) -> None:
        min_len = max(1, int(math.ceil(self.min_segment_s / self.dt_s - 1e-9)))
        for start, stop in _runs(self.valid):
            if stop - start < min_len:
                self.valid[start:stop] = False

    @property
    def segments(self) -> list[tuple[int, int]]:
        """Valid runs as ``[start, stop)`` index ranges."""
        return _runs(self.valid)

    @property
    def num_samples(self) -> int:
        """Number of grid samples ``N``."""
        return len(self.time_s)

    @property
    def valid_duration_s(self) -> float:
        """Total duration of the valid samples, seconds."""
        return float(self.valid.sum()) * self.dt_s

    def with_valid(self, mask: np.ndarray) -> FlightLog:
        """A copy whose valid samples are restricted to ``mask (N,)`` (short runs dropped)."""
        return replace(
            self, valid=self.valid & np.asarray(mask, dtype=bool), notes=list(self.notes)
        )

    def split(
        self, fit_fraction: float, holdout: Literal["first", "last"] = "last"
    ) -> tuple[FlightLog, FlightLog]:
        """Split by time into ``(fit part, held-out part)``.

        The fit part holds ``fit_fraction`` of the valid duration; ``holdout`` says which end of
        the flight is held out (``last``: fit on the beginning; ``first``: fit on the end).
        """
        if not 0.0 < fit_fraction < 1.0:
            raise FlightLogError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
        if holdout not in ("first", "last"):
            raise FlightLogError(f"holdout must be 'first' or 'last', got {holdout!r}")
        if not self.valid.any():
            raise FlightLogError(f"{self.source}: no valid (offboard, airborne) samples")
        cum = np.cumsum(self.valid)
        share = fit_fraction if holdout == "last" else 1.0 - fit_fraction
        cut = int(np.searchsorted(cum, share * cum[-1]))
        early = np.zeros(self.num_samples, dtype=bool)
        early[: cut + 1] = True
        if holdout == "last":
            return self.with_valid(early), self.with_valid(~early)
        return self.with_valid(~early), self.with_valid(early)

    def summary(self) -> dict[str, Any]:
        """Plain-data description (for reports)."""
        return {
            "source": self.source,
            "time_base": self.time_base,
            "time_reference": self.time_reference,
            "dt_s": self.dt_s,
            "num_samples": self.num_samples,
            "valid_duration_s": round(self.valid_duration_s, 3),
            "segments_s": [
                [round(float(self.time_s[a]), 3), round(float(self.time_s[b - 1]) + self.dt_s, 3)]
                for a, b in self.segments
            ],
            "notes": list(self.notes),
        }


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of the true runs of a 1-D bool array."""
    m = np.concatenate(([False], np.asarray(mask, dtype=bool), [False]))
    edges = np.flatnonzero(np.diff(m.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


# ---------------------------------------------------------------------------------- raw streams
@dataclass
class RawStreams:
    """Source-specific extraction result, PX4 frames (NED), seconds in the source time base."""

    state_t_s: np.ndarray  # (M,)
    pos_ned_m: np.ndarray  # (M, 3)
    vel_ned_m_s: np.ndarray  # (M, 3)
    heading_ned_rad: np.ndarray  # (M,)
    yawspeed_ned_rad_s: np.ndarray | None  # (M,) Euler yaw rate when the source has body rates
    thrust_dir_ned: np.ndarray | None = field(default=None, kw_only=True)  # (M, 3) body -z, NED
    sp_t_s: np.ndarray  # (K,)
    sp_vel_ned_m_s: np.ndarray  # (K, 3)
    sp_yawspeed_ned_rad_s: np.ndarray  # (K,)
    sp_yaw_ned_rad: np.ndarray  # (K,)
    status_t_s: np.ndarray | None = None  # (S,)
    offboard: np.ndarray | None = None  # (S,) bool
    armed: np.ndarray | None = None  # (S,) bool
    took_off: np.ndarray | None = None  # (S,) bool
    sp_quantized: bool = False
    t_offset_s: float = 0.0  # absolute time (source time base) of t = 0 in the arrays above
    source: str = ""
    time_base: str = ""
    notes: list[str] = field(default_factory=list)


def zoh_index(t_samples: np.ndarray, t_query: np.ndarray) -> np.ndarray:
    """Index of the last sample at or before each query time (-1 before the first)."""
    return np.searchsorted(t_samples, t_query, side="right") - 1


def _midpoint_change_times(t_s: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sample times with each change of value moved midway back to the previous sample."""
    t_eff = t_s.copy()
    if len(t_s) > 1:
        v = np.where(np.isnan(values), np.inf, values)
        changed = np.any(v[1:] != v[:-1], axis=1)
        idx = np.flatnonzero(changed) + 1
        t_eff[idx] = 0.5 * (t_s[idx - 1] + t_s[idx])
    return t_eff


def _heading_rate(t_s: np.ndarray, heading: np.ndarray, half_width: int) -> np.ndarray:
    """Central-difference rate of an (unwrapped) angle over +-``half_width`` samples."""
    unwrapped = np.unwrap(heading)
    n = len(t_s)
    if n < 2:
        return np.zeros(n)
    k = min(half_width, max(1, (n - 1) // 2))
    hi = np.minimum(np.arange(n) + k, n - 1)
    lo = np.maximum(np.arange(n) - k, 0)
    dt = t_s[hi] - t_s[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = (unwrapped[hi] - unwrapped[lo]) / dt
    return np.where(dt > 0, rate, 0.0)


def build_flight_log(streams: RawStreams, cfg: FlightLogConfig) -> FlightLog:
    """Resample ``streams`` on the uniform grid and compute the valid mask."""
    s = streams
    order = np.argsort(s.state_t_s, kind="stable")
    st_t = s.state_t_s[order]
    finite = np.all(np.isfinite(s.vel_ned_m_s[order]), axis=1)
    st_t = st_t[finite]
    if len(st_t) < 2:
        raise FlightLogError(f"{s.source}: fewer than 2 usable state samples")
    pos = s.pos_ned_m[order][finite]
    vel = s.vel_ned_m_s[order][finite]
    heading = s.heading_ned_rad[order][finite]
    sp_order = np.argsort(s.sp_t_s, kind="stable")
    sp_t = s.sp_t_s[sp_order]
    if len(sp_t) == 0:
        raise FlightLogError(f"{s.source}: no setpoints inside OFFBOARD")
    sp_vel = s.sp_vel_ned_m_s[sp_order]
    sp_yawspeed = s.sp_yawspeed_ned_rad_s[sp_order]
    sp_yaw = s.sp_yaw_ned_rad[sp_order]
    sp_t_eff = (
        _midpoint_change_times(sp_t, np.column_stack((sp_vel, sp_yawspeed)))
        if s.sp_quantized
        else sp_t
    )

    t_start = max(st_t[0], sp_t_eff[0])
    t_end = min(st_t[-1], sp_t[-1] + cfg.setpoint_timeout_s)
    if t_end <= t_start:
        raise FlightLogError(f"{s.source}: the setpoints and the measurements do not overlap")
    n = int(math.floor((t_end - t_start) / cfg.dt_s)) + 1
    grid = t_start + np.arange(n) * cfg.dt_s

    # Measurements: linear interpolation; invalid where the bracketing samples are far apart.
    vel_ned = np.column_stack([np.interp(grid, st_t, vel[:, i]) for i in range(3)])
    pos_ned = np.column_stack([np.interp(grid, st_t, pos[:, i]) for i in range(3)])
    heading_unwrapped = np.unwrap(np.where(np.isfinite(heading), heading, 0.0))
    heading_grid = np.interp(grid, st_t, heading_unwrapped)
    if s.yawspeed_ned_rad_s is not None:
        ys = s.yawspeed_ned_rad_s[order][finite]
        yawspeed_grid = np.interp(grid, st_t, np.where(np.isfinite(ys), ys, 0.0))
    else:
        yawspeed_grid = np.interp(
            grid, st_t, _heading_rate(st_t, heading, cfg.yaw_rate_smoothing_samples)
        )
    thrust_enu = None
    if s.thrust_dir_ned is not None:
        td = s.thrust_dir_ned[order][finite]
        td = np.column_stack([np.interp(grid, st_t, td[:, i]) for i in range(3)])
        td /= np.linalg.norm(td, axis=1, keepdims=True).clip(min=1e-9)
        thrust_enu = ned_to_enu_vector(td)
    hi = np.clip(np.searchsorted(st_t, grid, side="left"), 1, len(st_t) - 1)
    fresh_state = (st_t[hi] - st_t[hi - 1]) <= cfg.max_gap_s

    # Setpoints: zero-order hold; stale after the timeout.
    k = zoh_index(sp_t_eff, grid)
    have_sp = k >= 0
    kc = np.clip(k, 0, None)
    fresh_sp = have_sp & ((grid - sp_t[kc]) <= cfg.setpoint_timeout_s)
    cmd_vel_ned = np.where(have_sp[:, None], sp_vel[kc], np.nan)
    yawspeed_cmd = np.where(have_sp, sp_yawspeed[kc], np.nan)
    # Both yaw and yawspeed NaN: PX4 holds the heading (yaw rate 0). Yaw set: not rate-commanded.
    both_nan = np.isnan(yawspeed_cmd) & np.isnan(np.where(have_sp, sp_yaw[kc], 0.0))
    yawspeed_cmd = np.where(both_nan & have_sp, 0.0, yawspeed_cmd)

    notes = list(s.notes)
    # Flight state: offboard, armed, took off (zero-order hold of the status stream).
    if s.status_t_s is not None and len(s.status_t_s) > 0:
        so = np.argsort(s.status_t_s, kind="stable")
        stat_t = s.status_t_s[so]
        j = zoh_index(stat_t, grid)
        jc = np.clip(j, 0, None)
        known = j >= 0
        offboard = known & s.offboard[so][jc]
        armed = known & s.armed[so][jc]
        took = s.took_off[so] if s.took_off is not None else np.ones(len(so), dtype=bool)
        airborne = known & took[jc]
        # Skip PX4's takeoff ramp: settle after each transition to "took off" seen in the log.
        rises = np.flatnonzero(took[1:] & ~took[:-1]) + 1
        for r in rises:
            t_rise = stat_t[r]
            airborne &= ~((grid >= t_rise) & (grid < t_rise + cfg.settle_after_takeoff_s))
        arm_rises = np.flatnonzero(s.armed[so][1:] & ~s.armed[so][:-1]) + 1
        t_arm = float(stat_t[arm_rises[0]]) if len(arm_rises) else None
    else:
        offboard = armed = airborne = np.ones(n, dtype=bool)
        t_arm = None
        notes.append(
            "no vehicle status: every sample with a fresh setpoint counts as offboard and airborne"
        )

    valid = fresh_state & fresh_sp & offboard & armed & airborne
    t_ref = t_arm if t_arm is not None else float(grid[0])
    return FlightLog(
        time_s=grid - t_ref,
        vel_enu_m_s=ned_to_enu_vector(vel_ned),
        pos_enu_m=ned_to_enu_vector(pos_ned),
        yaw_enu_rad=yaw_ned_to_enu(wrap_angle_rad(heading_grid)),
        yaw_rate_enu_rad_s=yaw_rate_ned_to_enu(yawspeed_grid),
        cmd_vel_enu_m_s=ned_to_enu_vector(cmd_vel_ned),
        cmd_yaw_rate_enu_rad_s=yaw_rate_ned_to_enu(yawspeed_cmd),
        valid=valid,
        dt_s=cfg.dt_s,
        source=s.source,
        time_base=s.time_base,
        time_reference="arming" if t_arm is not None else "first grid sample",
        t_ref_abs_s=s.t_offset_s + t_ref,
        notes=notes,
        min_segment_s=cfg.min_segment_s,
        thrust_dir_enu=thrust_enu,
    )


__all__ = [
    "ARMING_STATE_ARMED",
    "NAVIGATION_STATE_OFFBOARD",
    "BagTopics",
    "FlightLog",
    "FlightLogConfig",
    "FlightLogError",
]
