"""Reading PX4 flights: px4_msgs definitions, rosbag2 (MCAP, sqlite3) and ULog inputs.

Small bags are written here with rosbags' writer and the workspace's px4_msgs types; small ULogs
are written with pyulog's writer from the committed fixture (modified). The committed fixtures are
70 s of a real PX4 v1.15.4 SIH flight (see ``data/make_fixtures.py``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from isr_px4_eval.px4.logs import BagTopics, FlightLog, FlightLogConfig, FlightLogError
from isr_px4_eval.px4.logs_bag import read_bag
from isr_px4_eval.px4.logs_ulog import read_flight_log, read_ulog
from isr_px4_eval.px4.msgs_defs import PX4_MSG_DEFS, px4_typestore

DATA = Path(__file__).parent / "data"
BAG_FIXTURE = DATA / "px4_sih_flight2_trim"
ULOG_FIXTURE = DATA / "px4_sih_flight2_trim.ulg"

ODOM = "px4_msgs/msg/VehicleOdometry"
LPOS = "px4_msgs/msg/VehicleLocalPosition"
SETPOINT = "px4_msgs/msg/TrajectorySetpoint"
STATUS = "px4_msgs/msg/VehicleStatus"

_DTYPES = {
    "bool": np.bool_,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
    "float32": np.float32,
    "float64": np.float64,
}


def make_msg(store, msgtype: str, **values):
    """A px4_msgs message with every field zero/False except ``values``."""
    cls = store.types[msgtype]
    _, fielddefs = store.fielddefs[msgtype]
    kwargs = {}
    for name, (nodetype, spec) in fielddefs:
        if name in values:
            v = values[name]
            if int(nodetype) == 3:  # fixed-size array
                v = np.asarray(v, dtype=_DTYPES[spec[0][1][0]])
            kwargs[name] = v
        elif int(nodetype) == 3:
            kwargs[name] = np.zeros(spec[1], dtype=_DTYPES[spec[0][1][0]])
        else:
            base = spec[0]
            kwargs[name] = False if base == "bool" else (0.0 if "float" in base else 0)
    return cls(**kwargs)


HEADING0_NED = 0.2
YAWSPEED_NED = 0.1
VEL_NED = (0.5, 1.5, -0.25)
CMD_NED = (1.0, -2.0, -0.5)
CMD_YAWSPEED_NED = 0.3


def write_px4_bag(
    path: Path,
    storage: str = "mcap",
    namespace: str = "",
    state: str = "odometry",
    with_status: bool = True,
    with_setpoints: bool = True,
    duration_s: float = 12.0,
) -> None:
    """A synthetic PX4 flight: armed+offboard at 1 s, took off at 2 s, constant velocity."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = px4_typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    t0 = 1_795_256_789_000_000_000
    with Writer(path, version=9, storage_plugin=plugin) as w:
        ns = f"/{namespace}" if namespace else ""
        if state == "odometry":
            c_state = w.add_connection(f"{ns}/fmu/out/vehicle_odometry", ODOM, typestore=store)
        else:
            c_state = w.add_connection(
                f"{ns}/fmu/out/vehicle_local_position", LPOS, typestore=store
            )
        c_sp = (
            w.add_connection(f"{ns}/fmu/in/trajectory_setpoint", SETPOINT, typestore=store)
            if with_setpoints
            else None
        )
        c_st = (
            w.add_connection(f"{ns}/fmu/out/vehicle_status", STATUS, typestore=store)
            if with_status
            else None
        )
        for k in range(int(duration_s * 100)):  # 100 Hz state
            t_s = k * 0.01
            heading = HEADING0_NED + YAWSPEED_NED * t_s
            if state == "odometry":
                q = [math.cos(heading / 2), 0.0, 0.0, math.sin(heading / 2)]
                msg = make_msg(
                    store,
                    ODOM,
                    timestamp=123,  # PX4 stamps are not used (quirk 1 of the real flight)
                    pose_frame=1,
                    velocity_frame=1,
                    position=[0.0, 0.0, -10.0],
                    q=q,
                    velocity=VEL_NED,
                    angular_velocity=[0.0, 0.0, YAWSPEED_NED],
                )
            else:
                msg = make_msg(
                    store,
                    LPOS,
                    v_xy_valid=True,
                    v_z_valid=True,
                    z=-10.0,
                    vx=VEL_NED[0],
                    vy=VEL_NED[1],
                    vz=VEL_NED[2],
                    heading=math.remainder(heading, 2 * math.pi),
                )
            w.write(c_state, t0 + int(t_s * 1e9), store.serialize_cdr(msg, msg.__msgtype__))
            if c_sp is not None and k % 5 == 0 and t_s >= 0.5:  # 20 Hz from 0.5 s
                sp = make_msg(
                    store,
                    SETPOINT,
                    position=[math.nan] * 3,
                    velocity=CMD_NED,
                    acceleration=[math.nan] * 3,
                    jerk=[math.nan] * 3,
                    yaw=math.nan,
                    yawspeed=CMD_YAWSPEED_NED,
                )
                w.write(c_sp, t0 + int(t_s * 1e9), store.serialize_cdr(sp, SETPOINT))
            if c_st is not None and k % 50 == 0:  # 2 Hz
                st = make_msg(
                    store,
                    STATUS,
                    nav_state=14 if t_s >= 1.0 else 4,
                    arming_state=2 if t_s >= 1.0 else 1,
                    takeoff_time=999 if t_s >= 2.0 else 0,
                )
                w.write(c_st, t0 + int(t_s * 1e9), store.serialize_cdr(st, STATUS))


def check_synthetic(log: FlightLog, yaw_rate_atol: float = 1e-3) -> None:
    v = log.valid
    assert v.any()
    # Armed at 1 s (time 0), took off at 2 s, settle 2 s: valid from 3 s after arming.
    first = log.time_s[np.argmax(v)]
    assert first == pytest.approx(3.0, abs=0.03)
    assert log.time_reference == "arming"
    np.testing.assert_allclose(
        log.vel_enu_m_s[v], np.tile([1.5, 0.5, 0.25], (v.sum(), 1)), atol=1e-5
    )
    np.testing.assert_allclose(log.cmd_vel_enu_m_s[v], np.tile([-2.0, 1.0, 0.5], (v.sum(), 1)))
    np.testing.assert_allclose(log.cmd_yaw_rate_enu_rad_s[v], -CMD_YAWSPEED_NED, rtol=1e-6)
    np.testing.assert_allclose(log.yaw_rate_enu_rad_s[v], -YAWSPEED_NED, atol=yaw_rate_atol)
    t_abs = log.time_s + 1.0  # seconds since the bag start
    yaw_expected = (
        np.remainder(math.pi / 2 - (HEADING0_NED + YAWSPEED_NED * t_abs) + math.pi, 2 * math.pi)
        - math.pi
    )
    err = np.remainder(log.yaw_enu_rad[v] - yaw_expected[v] + math.pi, 2 * math.pi) - math.pi
    assert np.abs(err).max() < 1e-4
    assert log.dt_s == 0.02 and np.allclose(np.diff(log.time_s), 0.02)


# ------------------------------------------------------------------------------ definitions
@pytest.mark.unit
def test_px4_definitions_register_and_round_trip():
    store = px4_typestore()
    assert set(PX4_MSG_DEFS) <= set(store.types)
    sp = make_msg(store, SETPOINT, velocity=[1.0, 2.0, 3.0], yaw=math.nan, yawspeed=0.5)
    back = store.deserialize_cdr(store.serialize_cdr(sp, SETPOINT), SETPOINT)
    np.testing.assert_array_equal(back.velocity, [1.0, 2.0, 3.0])
    assert math.isnan(back.yaw) and back.yawspeed == 0.5
    assert store.types[STATUS].NAVIGATION_STATE_OFFBOARD == 14
    assert store.types["px4_msgs/msg/VehicleCommand"].VEHICLE_CMD_DO_SET_MODE == 176


@pytest.mark.unit
def test_px4_definitions_match_the_real_bag():
    """The registered types equal the ones the real flight's MCAP embeds (all six topics)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    ours = px4_typestore()
    with AnyReader([BAG_FIXTURE]) as reader:
        assert {c.msgtype for c in reader.connections} == set(PX4_MSG_DEFS)
        for conn in reader.connections:
            theirs = get_typestore(Stores.ROS2_HUMBLE)
            theirs.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
            assert ours.fielddefs[conn.msgtype] == theirs.fielddefs[conn.msgtype], conn.msgtype
            assert ours.hash_rihs01(conn.msgtype) == theirs.hash_rihs01(conn.msgtype)
            assert conn.digest == ours.hash_rihs01(conn.msgtype)
            for _, _, raw in reader.messages(connections=[conn]):
                a = ours.deserialize_cdr(raw, conn.msgtype)
                b = reader.deserialize(raw, conn.msgtype)
                for f in dataclasses.fields(a):
                    np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name))
                break


# ------------------------------------------------------------------------------ rosbag2
@pytest.mark.unit
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_synthetic_bag_odometry(tmp_path, storage):
    write_px4_bag(tmp_path / "bag", storage)
    check_synthetic(read_bag(tmp_path / "bag"))


@pytest.mark.unit
def test_synthetic_bag_local_position_and_namespace(tmp_path):
    write_px4_bag(tmp_path / "bag", namespace="px4_1", state="local_position")
    log = read_bag(tmp_path / "bag", BagTopics(namespace="/px4_1"))  # auto: no odometry
    check_synthetic(log, yaw_rate_atol=1e-3)
    assert "/px4_1/fmu/out/vehicle_local_position" in log.source
    with pytest.raises(FlightLogError, match="/fmu/in/trajectory_setpoint"):
        read_bag(tmp_path / "bag")  # without the namespace nothing matches


@pytest.mark.unit
def test_bag_without_status_counts_setpoint_stream_as_offboard(tmp_path):
    write_px4_bag(tmp_path / "bag", with_status=False)
    log = read_bag(tmp_path / "bag")
    assert log.time_reference == "first grid sample"
    assert any("no vehicle status" in n for n in log.notes)
    assert log.valid.mean() > 0.95


@pytest.mark.unit
def test_bag_errors_name_what_is_missing(tmp_path):
    with pytest.raises(FlightLogError, match="bag not found"):
        read_bag(tmp_path / "nope")
    (tmp_path / "notabag").mkdir()
    (tmp_path / "notabag" / "x.txt").write_text("hello")
    with pytest.raises(FlightLogError, match="cannot open"):
        read_bag(tmp_path / "notabag")
    write_px4_bag(tmp_path / "bag", with_setpoints=False, duration_s=1.0)
    with pytest.raises(FlightLogError) as err:
        read_bag(tmp_path / "bag")
    msg = str(err.value)
    assert "lacks the topic(s) /fmu/in/trajectory_setpoint" in msg
    assert "/fmu/out/vehicle_odometry (px4_msgs/msg/VehicleOdometry, 100 msgs)" in msg
    with pytest.raises(FlightLogError, match="/fmu/out/vehicle_local_position"):
        read_bag(tmp_path / "bag", state_source="local_position")


# ------------------------------------------------------------------------------ ULog
def fixture_ulog():
    from pyulog import ULog

    return ULog(str(ULOG_FIXTURE))


def dataset(ulog, name):
    return next(d for d in ulog.data_list if d.name == name)


@pytest.mark.unit
def test_ulog_known_values_and_setpoint_change_midpoint(tmp_path):
    ulog = fixture_ulog()
    lp = dataset(ulog, "vehicle_local_position").data
    for key, value in (("vx", 1.0), ("vy", 2.0), ("vz", -0.5), ("heading", 0.3)):
        lp[key][:] = value
    sp = dataset(ulog, "trajectory_setpoint").data
    n = len(sp["timestamp"])
    change = n // 2
    for i, value in enumerate((0.5, -1.0, 0.2)):
        sp[f"velocity[{i}]"][:] = value
    sp["velocity[0]"][change:] = 1.5  # one change, logged at 5 Hz
    sp["yawspeed"][:] = 0.4
    ulog.write_ulog(str(tmp_path / "known.ulg"))
    log = read_ulog(tmp_path / "known.ulg")
    v = log.valid
    assert log.valid_duration_s > 60
    np.testing.assert_allclose(
        log.vel_enu_m_s[v], np.tile([2.0, 1.0, 0.5], (v.sum(), 1)), atol=1e-6
    )
    np.testing.assert_allclose(log.yaw_enu_rad[v], math.pi / 2 - 0.3, atol=1e-6)
    np.testing.assert_allclose(log.yaw_rate_enu_rad_s[v], 0.0, atol=1e-6)
    np.testing.assert_allclose(log.cmd_yaw_rate_enu_rad_s[v], -0.4, rtol=1e-6)
    np.testing.assert_allclose(
        log.cmd_vel_enu_m_s[v][:, [0, 2]], np.tile([-1.0, -0.2], (v.sum(), 1)), rtol=1e-6
    )
    assert set(np.round(log.cmd_vel_enu_m_s[v][:, 1], 6)) == {0.5, 1.5}  # NED x = ENU y
    # The change is placed midway between the last old and the first new logged sample.
    t_change = 0.5 * (sp["timestamp"][change - 1] + sp["timestamp"][change]) * 1e-6
    t_abs = log.time_s + log.t_ref_abs_s
    new = np.isclose(log.cmd_vel_enu_m_s[:, 1], 1.5)
    first_new = t_abs[np.argmax(new)]
    assert t_change <= first_new < t_change + log.dt_s + 1e-9


@pytest.mark.unit
def test_ulog_keeps_only_offboard_setpoints(tmp_path):
    """PX4 publishes trajectory_setpoint itself outside OFFBOARD: those must be dropped."""
    ulog = fixture_ulog()
    st = dataset(ulog, "vehicle_status").data
    t_mid = st["timestamp"][len(st["timestamp"]) // 2]
    st["nav_state"][st["timestamp"] < t_mid] = 2  # POSCTL
    sp = dataset(ulog, "trajectory_setpoint").data
    sp["velocity[2]"][sp["timestamp"] < t_mid] = 9.0  # PX4's own setpoints, recognisable
    ulog.write_ulog(str(tmp_path / "mixed.ulg"))
    log = read_ulog(tmp_path / "mixed.ulg")
    t_abs = log.time_s + log.t_ref_abs_s
    assert not log.valid[t_abs < t_mid * 1e-6].any()
    assert log.valid[t_abs > t_mid * 1e-6 + 1.0].all()
    assert not np.any(np.isclose(log.cmd_vel_enu_m_s[:, 2], -9.0))


@pytest.mark.unit
def test_ulog_without_status_falls_back_to_offboard_control_mode(tmp_path):
    ulog = fixture_ulog()
    ulog._data_list = [d for d in ulog.data_list if d.name != "vehicle_status"]
    ulog.write_ulog(str(tmp_path / "nostatus.ulg"))
    log = read_ulog(tmp_path / "nostatus.ulg")
    assert any("offboard_control_mode" in n for n in log.notes)
    assert log.valid_duration_s > 65.0
    ulog._data_list = [d for d in ulog.data_list if d.name != "offboard_control_mode"]
    ulog.write_ulog(str(tmp_path / "neither.ulg"))
    with pytest.raises(FlightLogError, match="vehicle_status \\(or offboard_control_mode\\)"):
        read_ulog(tmp_path / "neither.ulg")


@pytest.mark.unit
def test_ulog_errors_name_what_is_missing(tmp_path):
    with pytest.raises(FlightLogError, match="ULog not found"):
        read_ulog(tmp_path / "nope.ulg")
    (tmp_path / "text.ulg").write_text("not a ulog")
    with pytest.raises(FlightLogError, match="cannot read .* as a ULog"):
        read_ulog(tmp_path / "text.ulg")
    ulog = fixture_ulog()
    ulog._data_list = [d for d in ulog.data_list if d.name != "trajectory_setpoint"]
    ulog.write_ulog(str(tmp_path / "nosp.ulg"))
    with pytest.raises(FlightLogError) as err:
        read_ulog(tmp_path / "nosp.ulg")
    assert "lacks the message(s) trajectory_setpoint" in str(err.value)
    assert "vehicle_local_position (" in str(err.value)
    with pytest.raises(FlightLogError, match="vehicle_local_position_groundtruth"):
        read_ulog(ULOG_FIXTURE, state_topic="vehicle_local_position_groundtruth")


# ------------------------------------------------------------------------------ real fixtures
@pytest.mark.integration
def test_real_fixtures_parse_and_agree():
    bag = read_bag(BAG_FIXTURE)
    bag_file = read_flight_log(BAG_FIXTURE / "px4_sih_flight2_trim.mcap")  # a single .mcap
    ulg = read_flight_log(ULOG_FIXTURE)
    assert "ULog" in ulg.source and "rosbag2" in bag.source
    np.testing.assert_array_equal(bag.vel_enu_m_s, bag_file.vel_enu_m_s)
    for log in (bag, ulg):
        assert log.valid_duration_s > 65.0
        assert len(log.segments) == 1
        speed = np.linalg.norm(log.vel_enu_m_s[log.valid], axis=1)
        assert 2.0 < speed.max() < 8.0
        assert np.all(np.isfinite(log.cmd_vel_enu_m_s[log.valid]))
        # The window holds the vz+1.0 (down) step and the yawspeed+0.6 step (NED values).
        assert np.isclose(log.cmd_vel_enu_m_s[:, 2], -1.0, atol=1e-4).any()
        assert np.isclose(log.cmd_yaw_rate_enu_rad_s, -0.6, atol=1e-4).any()
    # The bag's and the ULog's command sequences hold the same setpoint values.
    rb = {tuple(np.round(r, 3)) for r in bag.cmd_vel_enu_m_s[bag.valid]}
    ru = {tuple(np.round(r, 3)) for r in ulg.cmd_vel_enu_m_s[ulg.valid]}
    assert len(rb & ru) >= 0.8 * len(ru)


@pytest.mark.integration
def test_real_fixture_local_position_agrees_with_odometry():
    cfg = FlightLogConfig(min_segment_s=1.0)
    odo = read_bag(BAG_FIXTURE, config=cfg, state_source="odometry")
    lpos = read_bag(BAG_FIXTURE, config=cfg, state_source="local_position")
    # Both grids start at the first setpoint; local position is kept for the first 10 s only.
    assert lpos.t_ref_abs_s == pytest.approx(odo.t_ref_abs_s, abs=1e-6)
    n = lpos.num_samples
    m = lpos.valid & odo.valid[:n]
    assert m.sum() * lpos.dt_s > 8.0
    np.testing.assert_allclose(lpos.vel_enu_m_s[m], odo.vel_enu_m_s[:n][m], atol=0.02)
    err = np.remainder(lpos.yaw_enu_rad[m] - odo.yaw_enu_rad[:n][m] + np.pi, 2 * np.pi) - np.pi
    assert np.abs(err).max() < 0.01


# ------------------------------------------------------------------------------ FlightLog
def synthetic_log(n: int = 1000, valid=None) -> FlightLog:
    z = np.zeros((n, 3))
    return FlightLog(
        time_s=np.arange(n) * 0.02,
        vel_enu_m_s=z,
        pos_enu_m=z,
        yaw_enu_rad=np.zeros(n),
        yaw_rate_enu_rad_s=np.zeros(n),
        cmd_vel_enu_m_s=z,
        cmd_yaw_rate_enu_rad_s=np.zeros(n),
        valid=np.ones(n, dtype=bool) if valid is None else valid,
        min_segment_s=0.1,
    )


@pytest.mark.unit
def test_flight_log_split_and_segments():
    valid = np.ones(1000, dtype=bool)
    valid[100:110] = False
    valid[500:502] = False  # a 1-sample run is too short to keep? no: runs, not gaps
    log = synthetic_log(valid=valid)
    assert log.segments == [(0, 100), (110, 500), (502, 1000)]
    fit, held = log.split(0.6, "last")
    assert not (fit.valid & held.valid).any()
    assert fit.valid.sum() + held.valid.sum() == log.valid.sum()
    assert fit.valid.sum() == pytest.approx(0.6 * log.valid.sum(), abs=2)
    assert np.argmax(held.valid) > np.flatnonzero(fit.valid).max()
    fit2, held2 = log.split(0.6, "first")
    assert held2.valid.sum() == pytest.approx(0.4 * log.valid.sum(), abs=2)
    assert np.flatnonzero(held2.valid).max() < np.argmax(fit2.valid)
    with pytest.raises(FlightLogError, match="fit_fraction"):
        log.split(1.5)
    with pytest.raises(FlightLogError, match="holdout"):
        log.split(0.5, "middle")  # type: ignore[arg-type]
    short = synthetic_log(valid=np.r_[np.ones(3, dtype=bool), np.zeros(997, dtype=bool)])
    assert short.segments == []  # 3 samples = 0.06 s < min_segment_s
    with pytest.raises(FlightLogError, match="shape"):
        FlightLog(
            time_s=np.zeros(3),
            vel_enu_m_s=np.zeros((2, 3)),
            pos_enu_m=np.zeros((3, 3)),
            yaw_enu_rad=np.zeros(3),
            yaw_rate_enu_rad_s=np.zeros(3),
            cmd_vel_enu_m_s=np.zeros((3, 3)),
            cmd_yaw_rate_enu_rad_s=np.zeros(3),
            valid=np.ones(3, dtype=bool),
        )
