"""Regenerate the trimmed real-flight fixtures of this folder (not run by the tests).

Source: the PX4 v1.15.4 SIH offboard flight 2 (seed 2207): a rosbag2 MCAP recording and the PX4
ULog of the same flight. Both fixtures keep 70 s of it, from 60 s to 130 s after arming (wall
clock for the bag, PX4 time for the ULog): the vz+1.0 step, the yawspeed step, the diagonal step
and the first 40 s of the random segment. Messages are copied unchanged.

- ``px4_sih_flight2_trim/``: a rosbag2 bag (``metadata.yaml`` + one MCAP file) written with
  rosbags' writer (MCAP storage), topics /fmu/out/vehicle_odometry, /fmu/in/trajectory_setpoint,
  /fmu/in/offboard_control_mode, /fmu/out/vehicle_status, /fmu/out/vehicle_local_position (first
  10 s only) and /fmu/in/vehicle_command (no message falls in the window; the connection keeps
  its definition), each with the message definition and QoS the original bag embeds (plus the
  RIHS01 hash computed from that definition; the source bag stores none); raw CDR bytes and
  receive (log) times unchanged.
- ``px4_sih_flight2_trim.ulg``: pyulog's writer (``ULog.write_ulog``), messages
  vehicle_local_position, trajectory_setpoint, vehicle_status and offboard_control_mode in the
  window (vehicle_status from 1 s before it), all parameters, info fields and format
  definitions, the text log messages in the window.

Usage: ``python make_fixtures.py BAG_DIR ULOG_FILE [OUT_DIR]``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

T_START_S = 60.0
T_STOP_S = 130.0
BAG_TOPICS = (
    "/fmu/out/vehicle_odometry",
    "/fmu/in/trajectory_setpoint",
    "/fmu/in/offboard_control_mode",
    "/fmu/out/vehicle_status",
    "/fmu/out/vehicle_local_position",
    "/fmu/in/vehicle_command",
)
LOCAL_POSITION_S = 10.0
"""vehicle_local_position is kept for the first 10 s of the window only (size)."""
ULOG_MESSAGES = (
    "vehicle_local_position",
    "trajectory_setpoint",
    "vehicle_status",
    "offboard_control_mode",
)


def trim_bag(src: Path, dst: Path) -> None:
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    if dst.exists():
        shutil.rmtree(dst)
    with AnyReader([src]) as reader:
        arm_ns = None
        for conn, t, raw in reader.messages(
            connections=[c for c in reader.connections if c.topic == "/fmu/in/vehicle_command"]
        ):
            msg = reader.deserialize(raw, conn.msgtype)
            if msg.command == 400 and msg.param1 == 1.0:
                arm_ns = t
                break
        assert arm_ns is not None, "no ARM command in the bag"
        lo, hi = arm_ns + int(T_START_S * 1e9), arm_ns + int(T_STOP_S * 1e9)
        conns = [c for c in reader.connections if c.topic in BAG_TOPICS]
        with Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            out = {}
            for c in conns:
                # The source bag stores no type hash: compute it from its own definition.
                store = get_typestore(Stores.ROS2_HUMBLE)
                store.register(get_types_from_msg(c.msgdef.data, c.msgtype))
                out[c.id] = writer.add_connection(
                    c.topic,
                    c.msgtype,
                    msgdef=c.msgdef.data,
                    rihs01=c.digest or store.hash_rihs01(c.msgtype),
                    offered_qos_profiles=c.ext.offered_qos_profiles,
                )
            lpos_hi = lo + int(LOCAL_POSITION_S * 1e9)
            for c, t, raw in reader.messages(connections=conns, start=lo, stop=hi):
                if c.topic == "/fmu/out/vehicle_local_position" and t >= lpos_hi:
                    continue
                writer.write(out[c.id], t, raw)


def trim_ulog(src: Path, dst: Path) -> None:
    from pyulog import ULog

    ulog = ULog(str(src))
    status = ulog.get_dataset("vehicle_status").data
    armed = np.flatnonzero(status["arming_state"] == 2)
    arm_us = int(status["armed_time"][armed[0]])
    lo, hi = arm_us + int(T_START_S * 1e6), arm_us + int(T_STOP_S * 1e6)
    keep = []
    for d in ulog.data_list:
        if d.name not in ULOG_MESSAGES:
            continue
        start = lo - (1_000_000 if d.name == "vehicle_status" else 0)
        m = (d.data["timestamp"] >= start) & (d.data["timestamp"] < hi)
        d.data = {k: v[m] for k, v in d.data.items()}
        keep.append(d)
    ulog._data_list = keep
    ulog._logged_messages = [m for m in ulog._logged_messages if lo <= m.timestamp < hi]
    ulog._changed_parameters = [p for p in ulog._changed_parameters if lo <= p[0] < hi]
    ulog._dropouts = []
    ulog.write_ulog(str(dst))


def main() -> int:
    bag, ulg = Path(sys.argv[1]), Path(sys.argv[2])
    out = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(__file__).parent
    trim_bag(bag, out / "px4_sih_flight2_trim")
    trim_ulog(ulg, out / "px4_sih_flight2_trim.ulg")
    for p in sorted(out.glob("px4_sih_flight2_trim*/**/*")) + [out / "px4_sih_flight2_trim.ulg"]:
        if p.is_file():
            print(f"{p.relative_to(out)}: {p.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
