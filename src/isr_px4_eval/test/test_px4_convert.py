"""px4_msgs built and read through rosbags typestore classes (CDR round trips); topics; QoS."""

from __future__ import annotations

import math

import numpy as np
import pytest

from isr_px4_eval.px4 import convert as pc
from isr_px4_eval.px4 import frames as fr
from isr_px4_eval.px4.msgs_defs import PX4_EXTRA_MSG_DEFS, PX4_MSG_DEFS
from isr_px4_eval.px4.topics import (
    PX4_OUT_QOS,
    PX4_RELEASES,
    normalize_namespace,
    px4_topic_names,
    rclpy_qos_profile,
)

pytestmark = pytest.mark.unit

TYPES = pc.RosbagsTypes()
RNG = np.random.default_rng(7)


def wire(msg):
    """Serialize to CDR and back, as over DDS."""
    raw = TYPES.serialize(msg)
    assert isinstance(raw, bytes) and len(raw) > 0
    return TYPES.deserialize(raw, msg.__msgtype__)


def random_quat() -> np.ndarray:
    q = RNG.normal(size=4)
    q /= np.linalg.norm(q)
    return q * (1 if q[0] >= 0 else -1)


# ------------------------------------------------------------------------------ constants
def test_constants_match_px4_msgs_release_1_15():
    classes = {name: TYPES.typestore.types[name] for name in {**PX4_MSG_DEFS, **PX4_EXTRA_MSG_DEFS}}
    checked = 0
    for attr, value in vars(pc.Px4).items():
        if attr.startswith("_") or not isinstance(value, int):
            continue
        owners = [c for c in classes.values() if hasattr(c, attr)]
        for c in owners:
            assert getattr(c, attr) == value, (c.__name__, attr)
            checked += 1
    assert checked >= 20
    status = classes["px4_msgs/msg/VehicleStatus"]
    for n, name in pc.NAV_STATE_NAMES.items():
        assert getattr(status, f"NAVIGATION_STATE_{name}") == n


def test_factory_fills_defaults_and_rejects_unknown_fields():
    msg = TYPES.new("px4_msgs/msg/VehicleStatus", nav_state=14)
    assert msg.nav_state == 14 and msg.arming_state == 0 and msg.failsafe is False
    with pytest.raises(TypeError, match="no field"):
        TYPES.new("px4_msgs/msg/TrajectorySetpoint", velocityy=[0, 0, 0])


# ------------------------------------------------------------------------------ client -> PX4
def test_velocity_setpoint_known_values_and_round_trip():
    sp = pc.VelocitySetpointENU(np.array([1.0, 2.0, 3.0]), 0.5)
    msg = wire(pc.velocity_setpoint_msg(TYPES, 123_456, sp))
    assert msg.timestamp == 123_456
    np.testing.assert_array_equal(msg.velocity, np.float32([2.0, 1.0, -3.0]))  # NED
    assert np.isnan(msg.position).all() and np.isnan(msg.acceleration).all()
    assert np.isnan(msg.jerk).all() and math.isnan(msg.yaw)
    assert msg.yawspeed == pytest.approx(-0.5)  # about NED down
    back = pc.read_velocity_setpoint(msg)
    np.testing.assert_allclose(back.vel_enu_m_s, sp.vel_enu_m_s, atol=1e-6)
    assert back.yaw_rate_enu_rad_s == pytest.approx(0.5)


def test_heartbeat_round_trip():
    msg = wire(pc.offboard_control_mode_msg(TYPES, 5, pc.OffboardHeartbeat()))
    assert msg.velocity and not msg.position and msg.timestamp == 5
    hb = pc.read_offboard_control_mode(msg)
    assert hb == pc.OffboardHeartbeat() and hb.any_enabled
    assert not pc.OffboardHeartbeat(velocity=False).any_enabled


@pytest.mark.parametrize(
    ("cmd", "command", "p1", "p2", "p3"),
    [
        (pc.set_offboard_mode_command(), 176, 1.0, 6.0, 0.0),
        (pc.arm_command(True), 400, 1.0, 0.0, 0.0),
        (pc.arm_command(False), 400, 0.0, 0.0, 0.0),
        (pc.land_command(), 21, 0.0, 0.0, 0.0),
        (pc.hold_mode_command(), 176, 1.0, 4.0, 3.0),
    ],
)
def test_vehicle_commands(cmd, command, p1, p2, p3):
    msg = wire(pc.vehicle_command_msg(TYPES, 77, cmd))
    assert (msg.command, msg.param1, msg.param2, msg.param3) == (command, p1, p2, p3)
    assert msg.target_system == 1 and msg.target_component == 1
    assert msg.source_system == 1 and msg.source_component == 1 and msg.from_external
    assert pc.read_vehicle_command(msg) == cmd


# ------------------------------------------------------------------------------ PX4 -> client
@pytest.mark.parametrize("seed", range(5))
def test_odometry_round_trip(seed):
    rng = np.random.default_rng(seed)
    q = random_quat()
    odom = pc.OdometryENU(
        t_us=1_000_000 + seed,
        pos_enu_m=rng.normal(size=3) * 10,
        vel_enu_m_s=rng.normal(size=3),
        quat_wxyz=q,
        body_rates_flu_rad_s=rng.normal(size=3),
        yaw_rad=float(fr.yaw_from_quat_wxyz(q)),
    )
    msg = wire(pc.vehicle_odometry_msg(TYPES, 2_000_000, odom))
    assert msg.timestamp == 2_000_000 and msg.timestamp_sample == odom.t_us
    assert msg.pose_frame == pc.Px4.POSE_FRAME_NED and msg.velocity_frame == 1
    np.testing.assert_allclose(msg.position, fr.enu_to_ned_vector(odom.pos_enu_m), rtol=1e-6)
    back = pc.read_vehicle_odometry(msg)
    assert back.t_us == odom.t_us
    np.testing.assert_allclose(back.pos_enu_m, odom.pos_enu_m, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(back.vel_enu_m_s, odom.vel_enu_m_s, atol=1e-6)
    np.testing.assert_allclose(back.quat_wxyz, q, atol=1e-6)
    np.testing.assert_allclose(back.body_rates_flu_rad_s, odom.body_rates_flu_rad_s, atol=1e-6)
    assert back.yaw_rad == pytest.approx(odom.yaw_rad, abs=1e-5)


def test_odometry_known_pose_and_body_velocity_frame():
    # Facing north (ENU yaw pi/2 = NED heading 0), 3 m up, flying north at 2 m/s.
    q_enu = np.array([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])
    odom = pc.OdometryENU(0, np.array([0.0, 0.0, 3.0]), np.array([0.0, 2.0, 0.0]), q_enu,
                          np.array([0.0, 0.0, 0.1]), math.pi / 2)  # fmt: skip
    msg = pc.vehicle_odometry_msg(TYPES, 10, odom)
    np.testing.assert_allclose(msg.position, [0.0, 0.0, -3.0], atol=1e-7)
    np.testing.assert_allclose(msg.q, [1.0, 0.0, 0.0, 0.0], atol=1e-6)  # heading north, level
    np.testing.assert_allclose(msg.angular_velocity, [0.0, 0.0, -0.1], atol=1e-7)  # FRD
    # The same velocity expressed in body FRD: forward 2 m/s.
    msg.velocity_frame = pc.Px4.VELOCITY_FRAME_BODY_FRD
    msg.velocity = np.float32([2.0, 0.0, 0.0])
    back = pc.read_vehicle_odometry(wire(msg))
    np.testing.assert_allclose(back.vel_enu_m_s, [0.0, 2.0, 0.0], atol=1e-6)
    assert back.yaw_rad == pytest.approx(math.pi / 2, abs=1e-6)
    msg.pose_frame = 2
    with pytest.raises(ValueError, match="pose_frame"):
        pc.read_vehicle_odometry(msg)


def test_status_and_ack_round_trip():
    msg = wire(pc.vehicle_status_msg(TYPES, 99, nav_state=14, arming_state=2, failsafe=True,
                                     system_id=3))  # fmt: skip
    st = pc.read_vehicle_status(msg)
    assert st.offboard and st.armed and st.failsafe and st.t_us == 99
    assert msg.system_id == 3 and msg.vehicle_type == 1 and msg.pre_flight_checks_pass
    ack = pc.read_vehicle_command_ack(wire(pc.vehicle_command_ack_msg(TYPES, 5, 176, 1)))
    assert (ack.command, ack.result, ack.accepted) == (176, 1, False)
    assert ack.result_name == "TEMPORARILY_REJECTED"
    assert pc.nav_state_name(14) == "OFFBOARD" and pc.nav_state_name(99) == "NAV_STATE_99"


# ------------------------------------------------------------------------------ topics, QoS
def test_topic_presets_per_release():
    t15 = px4_topic_names("1.15")
    assert t15.vehicle_status == "/fmu/out/vehicle_status"
    assert t15.trajectory_setpoint == "/fmu/in/trajectory_setpoint"
    assert px4_topic_names("1.16").vehicle_status == "/fmu/out/vehicle_status_v1"
    t17 = px4_topic_names("v1.17")
    assert t17.vehicle_status.endswith("_v1") and t17.vehicle_local_position.endswith("_v1")
    for rel in ("1.18", "main", "release/1.18"):
        t = px4_topic_names(rel)
        assert t.vehicle_status == "/fmu/out/vehicle_status_v4"
        assert t.vehicle_command_ack == "/fmu/out/vehicle_command_ack_v1"
    for rel in PX4_RELEASES:  # never suffixed
        t = px4_topic_names(rel)
        assert t.vehicle_odometry == "/fmu/out/vehicle_odometry"
        assert t.offboard_control_mode == "/fmu/in/offboard_control_mode"
        assert t.vehicle_command == "/fmu/in/vehicle_command"
    with pytest.raises(ValueError, match="unknown PX4 release"):
        px4_topic_names("1.14")


def test_topic_namespace_and_overrides():
    t = px4_topic_names("1.16", namespace="px4_1")
    assert t.vehicle_status == "/px4_1/fmu/out/vehicle_status_v1"
    assert all(name.startswith("/px4_1/fmu/") for name in t.evaluation_topics())
    assert normalize_namespace("/px4_2/") == "/px4_2" and normalize_namespace("") == ""
    with pytest.raises(ValueError, match="invalid namespace"):
        normalize_namespace("px4-1")
    o = px4_topic_names(vehicle_status="/custom/status")
    assert o.vehicle_status == "/custom/status"
    with pytest.raises(ValueError, match="unknown topic key"):
        px4_topic_names(status="/x")


def test_px4_qos_as_data():
    assert PX4_OUT_QOS.reliability == "BEST_EFFORT"
    assert PX4_OUT_QOS.durability == "TRANSIENT_LOCAL"
    assert PX4_OUT_QOS.history == "KEEP_LAST" and PX4_OUT_QOS.depth >= 1


def test_rclpy_qos_profile_when_rclpy_exists():
    rclpy_qos = pytest.importorskip("rclpy.qos", reason="rclpy (ROS 2) is not installed here")
    prof = rclpy_qos_profile()
    assert prof.reliability == rclpy_qos.ReliabilityPolicy.BEST_EFFORT
    assert prof.durability == rclpy_qos.DurabilityPolicy.TRANSIENT_LOCAL


def test_rclpy_px4_msgs_classes_when_installed():
    pytest.importorskip("px4_msgs.msg", reason="px4_msgs (ROS 2) is not installed here")
    types = pc.RclpyTypes()
    msg = pc.velocity_setpoint_msg(types, 1, pc.VelocitySetpointENU(np.ones(3), 0.1))
    assert msg.velocity[2] == pytest.approx(-1.0)
