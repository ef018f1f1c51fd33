"""PX4 flights from ULog files (pyulog) as :class:`~isr_px4_eval.px4.logs.FlightLog`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from isr_direct_dynamics.io_checks import describe_exception
from isr_px4_eval.px4.frames import quat_rotate_wxyz
from isr_px4_eval.px4.logs import (
    ARMING_STATE_ARMED,
    NAVIGATION_STATE_OFFBOARD,
    FlightLog,
    FlightLogConfig,
    FlightLogError,
    RawStreams,
    build_flight_log,
    zoh_index,
)
from isr_px4_eval.px4.logs_bag import read_bag

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
    j = zoh_index(status_t, sp_t)
    in_offboard = (j >= 0) & offboard[np.clip(j, 0, None)] & armed[np.clip(j, 0, None)]
    streams = RawStreams(
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
    return build_flight_log(streams, config)


def _zoh_fresh(t_samples: np.ndarray, t_query: np.ndarray, timeout_s: float) -> np.ndarray:
    """True where the last sample at or before each query time is at most ``timeout_s`` old."""
    k = zoh_index(t_samples, t_query)
    return (k >= 0) & ((t_query - t_samples[np.clip(k, 0, None)]) <= timeout_s)


def _landed_to_took_off(
    data: dict[str, dict[str, np.ndarray]], status_t: np.ndarray, notes: list[str]
) -> np.ndarray:
    """``not landed`` (vehicle_land_detected) sampled at ``status_t``; all True without it."""
    if "vehicle_land_detected" not in data:
        notes.append("no takeoff information: armed offboard samples count as airborne")
        return np.ones(len(status_t), dtype=bool)
    ld = data["vehicle_land_detected"]
    k = zoh_index(ld["timestamp"] * 1e-6, status_t)
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


__all__ = ["read_flight_log", "read_ulog"]
