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
from pathlib import Path
from typing import Any, Literal

import numpy as np

from isr_direct_dynamics.io_checks import describe_exception
from isr_px4_eval.px4.frames import (
    euler_yaw_rate_from_body_rates,
    ned_to_enu_vector,
    quat_rotate_wxyz,
    wrap_angle_rad,
    yaw_from_quat_wxyz,
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
class _Streams:
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


def _zoh_index(t_samples: np.ndarray, t_query: np.ndarray) -> np.ndarray:
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


def _build(streams: _Streams, cfg: FlightLogConfig) -> FlightLog:
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
    k = _zoh_index(sp_t_eff, grid)
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
        j = _zoh_index(stat_t, grid)
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


# ---------------------------------------------------------------------------------- rosbag2
StateSource = Literal["auto", "odometry", "local_position"]


def read_bag(
    path: str | Path,
    topics: BagTopics | None = None,
    config: FlightLogConfig | None = None,
    state_source: StateSource = "auto",
) -> FlightLog:
    """Read a rosbag2 recording (MCAP or sqlite3; directory or single ``.mcap``) of a PX4 flight.

    Args:
        path: the bag directory (with ``metadata.yaml``) or an ``.mcap`` file.
        topics: topic names (defaults: PX4 v1.15 names, no namespace).
        config: resampling and validity options.
        state_source: ``odometry`` (VehicleOdometry), ``local_position`` (VehicleLocalPosition)
            or ``auto`` (odometry when recorded, else local position).

    Raises:
        FlightLogError: missing file, not a bag, or a needed topic missing (the message lists the
            topics the bag holds).
    """
    from rosbags.highlevel import AnyReader

    from isr_px4_eval.px4.msgs_defs import px4_typestore

    topics = topics or BagTopics()
    config = config or FlightLogConfig()
    config.validate()
    path = Path(path)
    if not path.exists():
        raise FlightLogError(f"bag not found: {path}")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        mcaps = sorted(path.glob("*.mcap"))
        if len(mcaps) != 1:
            held = ", ".join(p.name for p in mcaps) or "no .mcap file"
            raise FlightLogError(
                f"cannot open {path} as a rosbag2 bag: the directory has no metadata.yaml (it "
                f"holds {held}); give the bag's .mcap file instead"
            )
        path = mcaps[0]  # a bag cut short before its metadata: read its storage file
    if path.is_file() and path.stat().st_size == 0:
        raise FlightLogError(f"bag {path} is empty (0 bytes)")
    try:
        reader = AnyReader([path], default_typestore=px4_typestore())
        reader.open()
    except Exception as exc:  # rosbags raises several unrelated types for unreadable input
        why = describe_exception(exc)
        raise FlightLogError(f"cannot open {path} as a rosbag2 bag: {why}") from None
    try:
        by_topic = {c.topic: c for c in reader.connections}
        holds = (
            ", ".join(f"{c.topic} ({c.msgtype}, {c.msgcount} msgs)" for c in reader.connections)
            or "no topics"
        )
        odom_t, lpos_t = topics.resolve("odometry"), topics.resolve("local_position")
        sp_topic, status_topic = (
            topics.resolve("trajectory_setpoint"),
            topics.resolve("vehicle_status"),
        )
        if state_source == "auto":
            state_topic = odom_t if odom_t in by_topic else lpos_t
        elif state_source == "odometry":
            state_topic = odom_t
        elif state_source == "local_position":
            state_topic = lpos_t
        else:
            raise FlightLogError(
                f"state_source must be auto, odometry or local_position, got {state_source!r}"
            )
        missing = [t for t in (state_topic, sp_topic) if t not in by_topic]
        if missing:
            wanted = (
                f"{odom_t} or {lpos_t}" if state_source == "auto" and state_topic in missing else ""
            )
            names = [wanted if (t == state_topic and wanted) else t for t in missing]
            raise FlightLogError(
                f"bag {path} lacks the topic(s) {', '.join(names)} (needed: measured state and "
                f"{sp_topic}); the bag holds: {holds}"
            )
        for t in (state_topic, sp_topic):
            if by_topic[t].msgcount == 0:
                raise FlightLogError(
                    f"bag {path}: topic {t} has no messages; the bag holds: {holds}"
                )
        try:
            streams = _read_bag_streams(
                reader, by_topic, state_topic, odom_t, sp_topic, status_topic
            )
        except FlightLogError:
            raise
        except Exception as exc:  # rosbags/CDR errors of a damaged bag
            raise FlightLogError(
                f"bag {path} is corrupt: cannot read its messages ({describe_exception(exc)})"
            ) from None
    finally:
        reader.close()
    streams.source = f"rosbag2 {path} ({state_topic}, {sp_topic})"
    return _build(streams, config)


def _read_bag_streams(
    reader: Any,
    by_topic: dict[str, Any],
    state_topic: str,
    odom_topic: str,
    sp_topic: str,
    status_topic: str,
) -> _Streams:
    """Deserialize the needed topics; times are receive (log) times in seconds."""
    state_rows: list[tuple[float, ...]] = []
    sp_rows: list[tuple[float, ...]] = []
    status_rows: list[tuple[float, bool, bool, bool]] = []
    is_odom = state_topic == odom_topic
    conns = [by_topic[state_topic], by_topic[sp_topic]]
    has_status = status_topic in by_topic and by_topic[status_topic].msgcount > 0
    if has_status:
        conns.append(by_topic[status_topic])
    bad_frames: set[int] = set()
    # Times relative to the bag start (exact integer nanoseconds first: epoch seconds in float64
    # would only resolve ~0.2 us).
    t0_ns = int(reader.start_time)
    for conn, log_time_ns, raw in reader.messages(connections=conns):
        msg = reader.deserialize(raw, conn.msgtype)
        t = (log_time_ns - t0_ns) * 1e-9
        if conn.topic == state_topic:
            if is_odom:
                frame = int(msg.velocity_frame)
                q = np.asarray(msg.q, dtype=np.float64)
                v = np.asarray(msg.velocity, dtype=np.float64)
                if frame == VELOCITY_FRAME_BODY_FRD:
                    v = quat_rotate_wxyz(q, v)
                elif frame != VELOCITY_FRAME_NED:
                    bad_frames.add(frame)
                    v = np.full(3, np.nan)
                state_rows.append((t, *msg.position, *v, *q, *msg.angular_velocity))
            else:
                ok_xy, ok_z = bool(msg.v_xy_valid), bool(msg.v_z_valid)
                vx = msg.vx if ok_xy else math.nan
                vy = msg.vy if ok_xy else math.nan
                vz = msg.vz if ok_z else math.nan
                state_rows.append((t, msg.x, msg.y, msg.z, vx, vy, vz, msg.heading))
        elif conn.topic == sp_topic:
            sp_rows.append((t, *msg.velocity, msg.yaw, msg.yawspeed))
        else:
            status_rows.append(
                (
                    t,
                    int(msg.nav_state) == NAVIGATION_STATE_OFFBOARD,
                    int(msg.arming_state) == ARMING_STATE_ARMED,
                    int(msg.takeoff_time) != 0,
                )
            )
    st = np.asarray(state_rows, dtype=np.float64)
    sp = np.asarray(sp_rows, dtype=np.float64)
    notes = []
    if bad_frames:
        notes.append(
            f"odometry samples with unsupported velocity_frame {sorted(bad_frames)} dropped"
        )
    thrust_dir = None
    if is_odom:
        q = st[:, 7:11]
        heading = yaw_from_quat_wxyz(q)
        yawspeed = euler_yaw_rate_from_body_rates(q, st[:, 11:14])
        # body FRD -> NED: the thrust points along body -z
        thrust_dir = quat_rotate_wxyz(q, np.array([0.0, 0.0, -1.0]))
    else:
        heading = st[:, 7]
        yawspeed = None
    streams = _Streams(
        state_t_s=st[:, 0],
        pos_ned_m=st[:, 1:4],
        vel_ned_m_s=st[:, 4:7],
        heading_ned_rad=heading,
        yawspeed_ned_rad_s=yawspeed,
        thrust_dir_ned=thrust_dir,
        sp_t_s=sp[:, 0],
        sp_vel_ned_m_s=sp[:, 1:4],
        sp_yaw_ned_rad=sp[:, 4],
        sp_yawspeed_ned_rad_s=sp[:, 5],
        time_base="bag receive time (MCAP log time), s",
        notes=notes,
        t_offset_s=t0_ns * 1e-9,
    )
    if has_status:
        stat = np.asarray(status_rows, dtype=np.float64)
        streams.status_t_s = stat[:, 0]
        streams.offboard = stat[:, 1] > 0.5
        streams.armed = stat[:, 2] > 0.5
        streams.took_off = stat[:, 3] > 0.5
    return streams


# ---------------------------------------------------------------------------------- ULog
ULOG_STATE_TOPICS: tuple[str, ...] = (
    "vehicle_local_position",
    "vehicle_local_position_groundtruth",
)
"""ULog messages accepted as the measured state."""


def read_ulog(
    path: str | Path,
    config: FlightLogConfig | None = None,
    state_topic: str = "vehicle_local_position",
    setpoint_topic: str = "trajectory_setpoint",
) -> FlightLog:
    """Read a PX4 ULog: measured state, offboard trajectory setpoints, flight state.

    Args:
        path: the ``.ulg`` file.
        config: resampling and validity options.
        state_topic: ``vehicle_local_position`` (EKF estimate, as PX4 publishes to ROS 2) or
            ``vehicle_local_position_groundtruth`` (simulator truth, SIH/Gazebo only).
        setpoint_topic: the uORB setpoint message (``trajectory_setpoint``).

    Offboard samples come from ``vehicle_status`` (``nav_state == 14``, armed, ``takeoff_time``
    set); a log without ``vehicle_status`` falls back to ``offboard_control_mode`` being received
    (within ``setpoint_timeout_s``) and ``vehicle_land_detected.landed`` where logged.

    Raises:
        FlightLogError: missing file, not a ULog, or a needed message missing (the message lists
            the messages the log holds).
    """
    from pyulog import ULog

    config = config or FlightLogConfig()
    config.validate()
    path = Path(path)
    if not path.is_file():
        raise FlightLogError(f"ULog not found: {path}")
    wanted = [
        state_topic,
        setpoint_topic,
        "vehicle_status",
        "offboard_control_mode",
        "vehicle_land_detected",
        "vehicle_attitude",
    ]
    try:
        ulog = ULog(str(path), message_name_filter_list=wanted)
    except Exception as exc:  # pyulog raises ULogException, struct.error, ...
        why = describe_exception(exc)
        raise FlightLogError(f"cannot read {path} as a ULog: {why}") from None
    data = {d.name: d.data for d in ulog.data_list if d.multi_id == 0}
    missing = [m for m in (state_topic, setpoint_topic) if m not in data]
    if "vehicle_status" not in data and "offboard_control_mode" not in data:
        missing.append("vehicle_status (or offboard_control_mode)")
    if missing:
        try:
            everything = ULog(str(path))
            logged = ", ".join(
                f"{d.name} ({len(d.data['timestamp'])} msgs)" for d in everything.data_list
            )
            corrupt = everything.file_corruption
        except Exception:  # noqa: BLE001 - the filtered read worked; this one is for the message
            logged, corrupt = "", True
        damaged = " (the file is cut short or corrupt)" if corrupt or not logged else ""
        raise FlightLogError(
            f"ULog {path} lacks the message(s) {', '.join(missing)}; it holds: "
            f"{logged or 'no data messages'}{damaged}"
        )

    lp = data[state_topic]
    t_state = lp["timestamp"] * 1e-6
    vel = np.column_stack([lp["vx"], lp["vy"], lp["vz"]]).astype(np.float64)
    if "v_xy_valid" in lp and "v_z_valid" in lp:
        vel[lp["v_xy_valid"] == 0, :2] = np.nan
        vel[lp["v_z_valid"] == 0, 2] = np.nan
    pos = np.column_stack([lp["x"], lp["y"], lp["z"]]).astype(np.float64)
    heading = np.asarray(lp["heading"], dtype=np.float64)
    thrust_dir = None
    if "vehicle_attitude" in data:  # optional: the thrust direction (body -z) for the tilt fit
        att = data["vehicle_attitude"]
        q = np.column_stack([att[f"q[{i}]"] for i in range(4)]).astype(np.float64)
        up = quat_rotate_wxyz(q, np.array([0.0, 0.0, -1.0]))
        t_att = att["timestamp"] * 1e-6
        thrust_dir = np.column_stack([np.interp(t_state, t_att, up[:, i]) for i in range(3)])

    sp = data[setpoint_topic]
    sp_t = sp["timestamp"] * 1e-6
    sp_vel = np.column_stack([sp[f"velocity[{i}]"] for i in range(3)]).astype(np.float64)
    sp_yaw = np.asarray(sp["yaw"], dtype=np.float64)
    sp_yawspeed = np.asarray(sp["yawspeed"], dtype=np.float64)

    notes: list[str] = []
    status_t = offboard = armed = took_off = None
    if "vehicle_status" in data:
        vs = data["vehicle_status"]
        status_t = vs["timestamp"] * 1e-6
        offboard = vs["nav_state"] == NAVIGATION_STATE_OFFBOARD
        armed = vs["arming_state"] == ARMING_STATE_ARMED
        if "takeoff_time" in vs:
            took_off = vs["takeoff_time"] != 0
        else:
            took_off = _landed_to_took_off(data, status_t, notes)
    else:
        ocm_t = data["offboard_control_mode"]["timestamp"] * 1e-6
        status_t = np.union1d(ocm_t, ocm_t + config.setpoint_timeout_s)
        offboard = _zoh_fresh(ocm_t, status_t, config.setpoint_timeout_s)
        armed = np.ones(len(status_t), dtype=bool)
        took_off = _landed_to_took_off(data, status_t, notes)
        notes.append("no vehicle_status: offboard = offboard_control_mode received, armed assumed")

    # The uORB trajectory_setpoint also holds PX4's own setpoints: keep the OFFBOARD+armed ones.
    j = _zoh_index(status_t, sp_t)
    in_offboard = (j >= 0) & offboard[np.clip(j, 0, None)] & armed[np.clip(j, 0, None)]
    streams = _Streams(
        state_t_s=t_state,
        pos_ned_m=pos,
        vel_ned_m_s=vel,
        heading_ned_rad=heading,
        yawspeed_ned_rad_s=None,
        thrust_dir_ned=thrust_dir,
        sp_t_s=sp_t[in_offboard],
        sp_vel_ned_m_s=sp_vel[in_offboard],
        sp_yaw_ned_rad=sp_yaw[in_offboard],
        sp_yawspeed_ned_rad_s=sp_yawspeed[in_offboard],
        status_t_s=status_t,
        offboard=offboard,
        armed=armed,
        took_off=took_off,
        sp_quantized=True,
        source=f"ULog {path} ({state_topic}, {setpoint_topic})",
        time_base="PX4 boot time (ULog timestamp), s",
        notes=notes,
    )
    ver = ulog.msg_info_dict.get("ver_sw")
    if ver:
        streams.notes.append(f"PX4 ver_sw {ver}")
    return _build(streams, config)


def _zoh_fresh(t_samples: np.ndarray, t_query: np.ndarray, timeout_s: float) -> np.ndarray:
    """True where the last sample at or before each query time is at most ``timeout_s`` old."""
    k = _zoh_index(t_samples, t_query)
    return (k >= 0) & ((t_query - t_samples[np.clip(k, 0, None)]) <= timeout_s)


def _landed_to_took_off(
    data: dict[str, dict[str, np.ndarray]], status_t: np.ndarray, notes: list[str]
) -> np.ndarray:
    """``not landed`` (vehicle_land_detected) sampled at ``status_t``; all True without it."""
    if "vehicle_land_detected" not in data:
        notes.append("no takeoff information: armed offboard samples count as airborne")
        return np.ones(len(status_t), dtype=bool)
    ld = data["vehicle_land_detected"]
    k = _zoh_index(ld["timestamp"] * 1e-6, status_t)
    return (k >= 0) & (ld["landed"][np.clip(k, 0, None)] == 0)


def read_flight_log(
    path: str | Path,
    kind: Literal["bag", "ulog", "auto"] = "auto",
    config: FlightLogConfig | None = None,
    **kwargs: Any,
) -> FlightLog:
    """Read a bag or a ULog; ``auto`` picks by the path (``.ulg`` file = ULog, else bag)."""
    p = Path(path)
    if kind == "auto":
        kind = "ulog" if p.suffix == ".ulg" else "bag"
    if kind == "ulog":
        return read_ulog(p, config=config, **kwargs)
    if kind == "bag":
        return read_bag(p, config=config, **kwargs)
    raise FlightLogError(f"unknown log kind {kind!r} (bag, ulog or auto)")


__all__ = [
    "ARMING_STATE_ARMED",
    "NAVIGATION_STATE_OFFBOARD",
    "BagTopics",
    "FlightLog",
    "FlightLogConfig",
    "FlightLogError",
    "read_bag",
    "read_flight_log",
    "read_ulog",
]
