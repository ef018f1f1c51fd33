"""PX4 flights from rosbag2 files as :class:`~isr_px4_eval.px4.logs.FlightLog`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

from isr_direct_dynamics.io_checks import describe_exception
from isr_px4_eval.px4.frames import (
    euler_yaw_rate_from_body_rates,
    quat_rotate_wxyz,
    yaw_from_quat_wxyz,
)
from isr_px4_eval.px4.logs import (
    ARMING_STATE_ARMED,
    NAVIGATION_STATE_OFFBOARD,
    VELOCITY_FRAME_BODY_FRD,
    VELOCITY_FRAME_NED,
    BagTopics,
    FlightLog,
    FlightLogConfig,
    FlightLogError,
    RawStreams,
    build_flight_log,
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
    return build_flight_log(streams, config)


def _read_bag_streams(
    reader: Any,
    by_topic: dict[str, Any],
    state_topic: str,
    odom_topic: str,
    sp_topic: str,
    status_topic: str,
) -> RawStreams:
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
    streams = RawStreams(
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


__all__ = ["read_bag"]
