"""px4_msgs messages built and read once, for rosbags typestore classes and rclpy classes alike.

Every function takes a *message-type factory* (:class:`MessageTypes`): ``types.new(msgtype,
**fields)`` returns a message of type ``msgtype`` (``"px4_msgs/msg/TrajectorySetpoint"``) with
every field not given set to zero / False / NaN-free defaults. Two factories exist:

- :class:`RosbagsTypes` wraps a rosbags typestore (``isr_px4_eval.px4.msgs_defs.px4_typestore()``,
  px4_msgs release/1.15 definitions): used by the tests and when writing bags.
- :class:`RclpyTypes` imports the generated ``px4_msgs.msg`` classes of a ROS 2 installation
  (lazily; only the nodes use it).

Both kinds of classes have the same field names, so a live topic and a recorded bag carry the
same content. Values are passed as Python ``int`` / ``float`` / ``bool`` and ``float32`` numpy
arrays of the exact size, which both accept (rclpy's generated setters reject float64 arrays and
numpy scalars).

The workspace side is plain dataclasses in world ENU / body FLU, seconds and radians; every
ENU <-> NED and FLU <-> FRD conversion goes through :mod:`isr_px4_eval.px4.frames`. PX4 timestamps
are microseconds (``uint64``).

Constants (command ids, navigation and arming states, ack results) are the values of px4_msgs
release/1.15 (:class:`Px4`); a test checks them against the registered message classes.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from isr_px4_eval.px4 import frames as fr
from isr_px4_eval.px4.msgs_defs import (
    OFFBOARD_CONTROL_MODE,
    TRAJECTORY_SETPOINT,
    VEHICLE_COMMAND,
    VEHICLE_COMMAND_ACK,
    VEHICLE_ODOMETRY,
    VEHICLE_STATUS,
)


class Px4:
    """px4_msgs constants used at the boundary (values of px4_msgs release/1.15)."""

    # VehicleCommand.command
    VEHICLE_CMD_NAV_LAND = 21
    VEHICLE_CMD_DO_SET_MODE = 176
    VEHICLE_CMD_COMPONENT_ARM_DISARM = 400
    # DO_SET_MODE parameters: param1 = base mode (1 = custom mode enabled), param2 = PX4 main mode
    MODE_FLAG_CUSTOM_MODE_ENABLED = 1
    PX4_CUSTOM_MAIN_MODE_POSCTL = 3
    PX4_CUSTOM_MAIN_MODE_AUTO = 4
    PX4_CUSTOM_MAIN_MODE_OFFBOARD = 6
    PX4_CUSTOM_SUB_MODE_AUTO_LOITER = 3
    PX4_CUSTOM_SUB_MODE_AUTO_LAND = 6
    # VehicleStatus.arming_state
    ARMING_STATE_DISARMED = 1
    ARMING_STATE_ARMED = 2
    # VehicleStatus.nav_state
    NAVIGATION_STATE_MANUAL = 0
    NAVIGATION_STATE_ALTCTL = 1
    NAVIGATION_STATE_POSCTL = 2
    NAVIGATION_STATE_AUTO_MISSION = 3
    NAVIGATION_STATE_AUTO_LOITER = 4
    NAVIGATION_STATE_AUTO_RTL = 5
    NAVIGATION_STATE_DESCEND = 12
    NAVIGATION_STATE_TERMINATION = 13
    NAVIGATION_STATE_OFFBOARD = 14
    NAVIGATION_STATE_AUTO_LAND = 18
    # VehicleStatus.latest_(dis)arming_reason
    ARM_DISARM_REASON_COMMAND_EXTERNAL = 4
    ARM_DISARM_REASON_AUTO_DISARM_LAND = 7
    ARM_DISARM_REASON_AUTO_DISARM_PREFLIGHT = 8
    # VehicleStatus.vehicle_type
    VEHICLE_TYPE_ROTARY_WING = 1
    # VehicleCommandAck.result
    VEHICLE_CMD_RESULT_ACCEPTED = 0
    VEHICLE_CMD_RESULT_TEMPORARILY_REJECTED = 1
    VEHICLE_CMD_RESULT_DENIED = 2
    VEHICLE_CMD_RESULT_UNSUPPORTED = 3
    VEHICLE_CMD_RESULT_FAILED = 4
    # VehicleOdometry frames
    POSE_FRAME_NED = 1
    VELOCITY_FRAME_NED = 1
    VELOCITY_FRAME_BODY_FRD = 3


#: ``VehicleCommandAck.result`` -> name, for messages.
ACK_RESULT_NAMES: dict[int, str] = {
    0: "ACCEPTED",
    1: "TEMPORARILY_REJECTED",
    2: "DENIED",
    3: "UNSUPPORTED",
    4: "FAILED",
    5: "IN_PROGRESS",
    6: "CANCELLED",
}

#: ``VehicleStatus.nav_state`` -> name (px4_msgs release/1.15), for messages and reports.
NAV_STATE_NAMES: dict[int, str] = {
    0: "MANUAL", 1: "ALTCTL", 2: "POSCTL", 3: "AUTO_MISSION", 4: "AUTO_LOITER", 5: "AUTO_RTL",
    6: "POSITION_SLOW", 10: "ACRO", 12: "DESCEND", 13: "TERMINATION", 14: "OFFBOARD", 15: "STAB",
    17: "AUTO_TAKEOFF", 18: "AUTO_LAND", 19: "AUTO_FOLLOW_TARGET", 20: "AUTO_PRECLAND",
    21: "ORBIT", 22: "AUTO_VTOL_TAKEOFF",
}  # fmt: skip


def nav_state_name(nav_state: int) -> str:
    """``14`` -> ``"OFFBOARD"``; unknown numbers -> ``"NAV_STATE_<n>"``."""
    return NAV_STATE_NAMES.get(int(nav_state), f"NAV_STATE_{int(nav_state)}")


# ---------------------------------------------------------------------------------- factories
class MessageTypes(Protocol):
    """Builds messages by type name (``"px4_msgs/msg/VehicleCommand"``)."""

    def new(self, msgtype: str, **fields: Any) -> Any:
        """A message of ``msgtype``; fields not given take their zero defaults."""
        ...


_NP_DTYPES = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32,
    "int64": np.int64, "uint64": np.uint64, "float32": np.float32, "float64": np.float64,
}  # fmt: skip


class RosbagsTypes:
    """:class:`MessageTypes` over a rosbags typestore (tests, bag writing).

    rosbags' generated dataclasses need every field at construction; this fills the missing ones
    with zeros (``False`` for bools, zero arrays of the declared dtype, empty strings).
    """

    def __init__(self, typestore: Any | None = None) -> None:
        if typestore is None:
            from isr_px4_eval.px4.msgs_defs import px4_typestore

            typestore = px4_typestore()
        self.typestore = typestore

    def new(self, msgtype: str, **fields: Any) -> Any:
        """A ``msgtype`` message with ``fields`` and zero defaults for the rest."""
        cls = self.typestore.types[msgtype]
        _, fielddefs = self.typestore.fielddefs[msgtype]
        kwargs: dict[str, Any] = {}
        for name, (nodetype, spec) in fielddefs:
            kind = int(nodetype)
            if kind == 3:  # fixed-size array of a base type
                dtype = _NP_DTYPES[spec[0][1][0]]
                value = fields.pop(name, None)
                kwargs[name] = (
                    np.zeros(spec[1], dtype=dtype)
                    if value is None
                    else np.asarray(value, dtype=dtype).reshape(spec[1])
                )
            elif name in fields:
                kwargs[name] = fields.pop(name)
            elif kind == 1:
                base = spec[0]
                kwargs[name] = (
                    False if base == "bool" else "" if base == "string" else
                    0.0 if base.startswith("float") else 0
                )  # fmt: skip
            elif kind == 2:  # nested message
                kwargs[name] = self.new(spec)
            else:
                raise TypeError(f"{msgtype}.{name}: sequence fields need an explicit value")
        if fields:
            raise TypeError(f"{msgtype} has no field(s) {sorted(fields)}")
        return cls(**kwargs)

    def serialize(self, msg: Any) -> bytes:
        """CDR bytes of ``msg`` (its type is read from the message)."""
        return bytes(self.typestore.serialize_cdr(msg, msg.__msgtype__))

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        """The message of type ``msgtype`` encoded in ``raw``."""
        return self.typestore.deserialize_cdr(raw, msgtype)


class RclpyTypes:
    """:class:`MessageTypes` over the generated ROS 2 Python classes (``px4_msgs.msg`` etc.).

    Imports the message package on first use; only valid where ROS 2 and px4_msgs are installed.
    """

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def cls(self, msgtype: str) -> type:
        """The class of ``"pkg/msg/Name"`` (imported once)."""
        if msgtype not in self._classes:
            pkg, _, name = msgtype.split("/")
            self._classes[msgtype] = getattr(importlib.import_module(f"{pkg}.msg"), name)
        return self._classes[msgtype]

    def new(self, msgtype: str, **fields: Any) -> Any:
        """A ``msgtype`` message with ``fields`` (the generated defaults for the rest)."""
        return self.cls(msgtype)(**fields)


def _f32(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


_NAN3 = (math.nan, math.nan, math.nan)


# ---------------------------------------------------------------------------------- plain data
@dataclass
class OdometryENU:
    """One vehicle odometry sample in workspace frames."""

    t_us: int
    """PX4 ``timestamp_sample`` (falls back to ``timestamp``), microseconds."""
    pos_enu_m: np.ndarray  # (3,)
    """Position in world ENU (PX4's local frame origin), metres."""
    vel_enu_m_s: np.ndarray  # (3,)
    """Velocity in world ENU, m/s."""
    quat_wxyz: np.ndarray  # (4,)
    """Attitude body FLU -> world ENU, (w, x, y, z), ``w >= 0``."""
    body_rates_flu_rad_s: np.ndarray  # (3,)
    """Angular velocity in body FLU, rad/s."""
    yaw_rad: float
    """ENU yaw (0 = east, counter-clockwise positive), [-pi, pi)."""


@dataclass
class VehicleStatusInfo:
    """The parts of ``VehicleStatus`` the offboard client acts on."""

    t_us: int
    nav_state: int
    """``VehicleStatus.nav_state`` (14 = OFFBOARD, 18 = AUTO_LAND, ...)."""
    arming_state: int
    """1 = disarmed, 2 = armed."""
    failsafe: bool
    pre_flight_checks_pass: bool

    @property
    def armed(self) -> bool:
        """Arming state is ARMED."""
        return self.arming_state == Px4.ARMING_STATE_ARMED

    @property
    def offboard(self) -> bool:
        """Navigation state is OFFBOARD."""
        return self.nav_state == Px4.NAVIGATION_STATE_OFFBOARD


@dataclass
class CommandAck:
    """A ``VehicleCommandAck``."""

    t_us: int
    command: int
    result: int

    @property
    def accepted(self) -> bool:
        """Result is ACCEPTED."""
        return self.result == Px4.VEHICLE_CMD_RESULT_ACCEPTED

    @property
    def result_name(self) -> str:
        """``"TEMPORARILY_REJECTED"`` etc."""
        return ACK_RESULT_NAMES.get(self.result, str(self.result))


@dataclass
class OffboardHeartbeat:
    """``OffboardControlMode``: which setpoint kind PX4 should control (velocity by default)."""

    position: bool = False
    velocity: bool = True
    acceleration: bool = False
    attitude: bool = False
    body_rate: bool = False
    thrust_and_torque: bool = False
    direct_actuator: bool = False

    @property
    def any_enabled(self) -> bool:
        """At least one control flag set (PX4 ignores a heartbeat without any)."""
        return any(
            (self.position, self.velocity, self.acceleration, self.attitude, self.body_rate,
             self.thrust_and_torque, self.direct_actuator)
        )  # fmt: skip


@dataclass
class VelocitySetpointENU:
    """A velocity + yaw-rate setpoint in workspace frames (NaN = not controlled)."""

    vel_enu_m_s: np.ndarray  # (3,)
    """Velocity setpoint, world ENU, m/s."""
    yaw_rate_enu_rad_s: float
    """Yaw rate about ENU up (counter-clockwise positive), rad/s."""


@dataclass
class CommandRequest:
    """A ``VehicleCommand`` (MAVLink COMMAND_LONG fields)."""

    command: int
    param1: float = 0.0
    param2: float = 0.0
    param3: float = 0.0
    param4: float = 0.0
    param5: float = 0.0
    param6: float = 0.0
    param7: float = 0.0
    target_system: int = 1
    target_component: int = 1
    source_system: int = 1
    source_component: int = 1
    from_external: bool = True


def set_offboard_mode_command() -> CommandRequest:
    """``VEHICLE_CMD_DO_SET_MODE`` (176), param1 = 1 (custom), param2 = 6 (OFFBOARD)."""
    return CommandRequest(
        Px4.VEHICLE_CMD_DO_SET_MODE,
        float(Px4.MODE_FLAG_CUSTOM_MODE_ENABLED),
        float(Px4.PX4_CUSTOM_MAIN_MODE_OFFBOARD),
    )


def hold_mode_command() -> CommandRequest:
    """``DO_SET_MODE`` to AUTO / LOITER (PX4's Hold): param1 1, param2 4, param3 3."""
    return CommandRequest(
        Px4.VEHICLE_CMD_DO_SET_MODE,
        float(Px4.MODE_FLAG_CUSTOM_MODE_ENABLED),
        float(Px4.PX4_CUSTOM_MAIN_MODE_AUTO),
        float(Px4.PX4_CUSTOM_SUB_MODE_AUTO_LOITER),
    )


def arm_command(arm: bool = True) -> CommandRequest:
    """``VEHICLE_CMD_COMPONENT_ARM_DISARM`` (400), param1 1 = arm, 0 = disarm."""
    return CommandRequest(Px4.VEHICLE_CMD_COMPONENT_ARM_DISARM, 1.0 if arm else 0.0)


def land_command() -> CommandRequest:
    """``VEHICLE_CMD_NAV_LAND`` (21): land where the vehicle is."""
    return CommandRequest(Px4.VEHICLE_CMD_NAV_LAND)


# ---------------------------------------------------------------------------------- builders
def offboard_control_mode_msg(
    types: MessageTypes, t_us: int, heartbeat: OffboardHeartbeat | None = None
) -> Any:
    """``OffboardControlMode`` (the offboard heartbeat) at ``t_us``."""
    hb = heartbeat or OffboardHeartbeat()
    return types.new(
        OFFBOARD_CONTROL_MODE,
        timestamp=int(t_us),
        position=bool(hb.position),
        velocity=bool(hb.velocity),
        acceleration=bool(hb.acceleration),
        attitude=bool(hb.attitude),
        body_rate=bool(hb.body_rate),
        thrust_and_torque=bool(hb.thrust_and_torque),
        direct_actuator=bool(hb.direct_actuator),
    )


def velocity_setpoint_msg(types: MessageTypes, t_us: int, sp: VelocitySetpointENU) -> Any:
    """``TrajectorySetpoint`` for velocity + yaw-rate control (NED, position/yaw NaN)."""
    vel_ned = fr.enu_to_ned_vector(np.asarray(sp.vel_enu_m_s, dtype=np.float64))
    return types.new(
        TRAJECTORY_SETPOINT,
        timestamp=int(t_us),
        position=_f32(_NAN3),
        velocity=_f32(vel_ned),
        acceleration=_f32(_NAN3),
        jerk=_f32(_NAN3),
        yaw=math.nan,
        yawspeed=float(fr.yaw_rate_enu_to_ned(float(sp.yaw_rate_enu_rad_s))),
    )


def vehicle_command_msg(types: MessageTypes, t_us: int, cmd: CommandRequest) -> Any:
    """``VehicleCommand`` of ``cmd`` at ``t_us``."""
    return types.new(
        VEHICLE_COMMAND,
        timestamp=int(t_us),
        param1=float(cmd.param1),
        param2=float(cmd.param2),
        param3=float(cmd.param3),
        param4=float(cmd.param4),
        param5=float(cmd.param5),
        param6=float(cmd.param6),
        param7=float(cmd.param7),
        command=int(cmd.command),
        target_system=int(cmd.target_system),
        target_component=int(cmd.target_component),
        source_system=int(cmd.source_system),
        source_component=int(cmd.source_component),
        from_external=bool(cmd.from_external),
    )


def vehicle_odometry_msg(types: MessageTypes, t_us: int, odom: OdometryENU) -> Any:
    """``VehicleOdometry`` (NED position and velocity, FRD -> NED attitude, FRD rates)."""
    q_ned = fr.quat_flu_enu_to_frd_ned(np.asarray(odom.quat_wxyz, dtype=np.float64))
    return types.new(
        VEHICLE_ODOMETRY,
        timestamp=int(t_us),
        timestamp_sample=int(odom.t_us),
        pose_frame=Px4.POSE_FRAME_NED,
        position=_f32(fr.enu_to_ned_vector(np.asarray(odom.pos_enu_m, dtype=np.float64))),
        q=_f32(q_ned),
        velocity_frame=Px4.VELOCITY_FRAME_NED,
        velocity=_f32(fr.enu_to_ned_vector(np.asarray(odom.vel_enu_m_s, dtype=np.float64))),
        angular_velocity=_f32(
            fr.flu_to_frd_vector(np.asarray(odom.body_rates_flu_rad_s, dtype=np.float64))
        ),
        position_variance=_f32((1e-4, 1e-4, 1e-4)),
        orientation_variance=_f32((1e-6, 1e-6, 1e-6)),
        velocity_variance=_f32((1e-4, 1e-4, 1e-4)),
    )


def vehicle_status_msg(
    types: MessageTypes,
    t_us: int,
    nav_state: int,
    arming_state: int,
    failsafe: bool = False,
    nav_state_user_intention: int | None = None,
    armed_time_us: int = 0,
    takeoff_time_us: int = 0,
    latest_arming_reason: int = 0,
    latest_disarming_reason: int = 0,
    nav_state_timestamp_us: int = 0,
    system_id: int = 1,
    component_id: int = 1,
    pre_flight_checks_pass: bool = True,
) -> Any:
    """``VehicleStatus`` with the fields a multicopter in SITL fills (others zero)."""
    return types.new(
        VEHICLE_STATUS,
        timestamp=int(t_us),
        armed_time=int(armed_time_us),
        takeoff_time=int(takeoff_time_us),
        arming_state=int(arming_state),
        latest_arming_reason=int(latest_arming_reason),
        latest_disarming_reason=int(latest_disarming_reason),
        nav_state_timestamp=int(nav_state_timestamp_us),
        nav_state_user_intention=int(
            nav_state if nav_state_user_intention is None else nav_state_user_intention
        ),
        nav_state=int(nav_state),
        failsafe=bool(failsafe),
        vehicle_type=Px4.VEHICLE_TYPE_ROTARY_WING,
        system_type=2,  # MAV_TYPE_QUADROTOR
        system_id=int(system_id),
        component_id=int(component_id),
        power_input_valid=True,
        pre_flight_checks_pass=bool(pre_flight_checks_pass),
    )


def vehicle_command_ack_msg(
    types: MessageTypes,
    t_us: int,
    command: int,
    result: int,
    target_system: int = 1,
    target_component: int = 1,
) -> Any:
    """``VehicleCommandAck`` of ``command`` with ``result``."""
    return types.new(
        VEHICLE_COMMAND_ACK,
        timestamp=int(t_us),
        command=int(command),
        result=int(result),
        target_system=int(target_system),
        target_component=int(target_component),
        from_external=False,
    )


# ---------------------------------------------------------------------------------- readers
def _vec(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(3)


def read_vehicle_odometry(msg: Any) -> OdometryENU:
    """``VehicleOdometry`` -> :class:`OdometryENU`.

    Accepts ``pose_frame`` NED and ``velocity_frame`` NED or BODY_FRD (rotated into the world
    with the attitude); other frames raise ``ValueError``.
    """
    if int(msg.pose_frame) != Px4.POSE_FRAME_NED:
        raise ValueError(f"VehicleOdometry.pose_frame {msg.pose_frame} is not NED (1)")
    q_ned = np.asarray(msg.q, dtype=np.float64).reshape(4)
    q_enu = fr.quat_frd_ned_to_flu_enu(q_ned)
    vel = _vec(msg.velocity)
    if int(msg.velocity_frame) == Px4.VELOCITY_FRAME_NED:
        vel_ned = vel
    elif int(msg.velocity_frame) == Px4.VELOCITY_FRAME_BODY_FRD:
        vel_ned = fr.quat_rotate_wxyz(q_ned, vel)
    else:
        raise ValueError(f"VehicleOdometry.velocity_frame {msg.velocity_frame} is not supported")
    t_sample = int(msg.timestamp_sample) or int(msg.timestamp)
    return OdometryENU(
        t_us=t_sample,
        pos_enu_m=fr.ned_to_enu_vector(_vec(msg.position)),
        vel_enu_m_s=fr.ned_to_enu_vector(vel_ned),
        quat_wxyz=q_enu,
        body_rates_flu_rad_s=fr.frd_to_flu_vector(_vec(msg.angular_velocity)),
        yaw_rad=float(fr.wrap_angle_rad(float(fr.yaw_from_quat_wxyz(q_enu)))),
    )


def read_vehicle_status(msg: Any) -> VehicleStatusInfo:
    """``VehicleStatus`` -> :class:`VehicleStatusInfo`."""
    return VehicleStatusInfo(
        t_us=int(msg.timestamp),
        nav_state=int(msg.nav_state),
        arming_state=int(msg.arming_state),
        failsafe=bool(msg.failsafe),
        pre_flight_checks_pass=bool(msg.pre_flight_checks_pass),
    )


def read_vehicle_command_ack(msg: Any) -> CommandAck:
    """``VehicleCommandAck`` -> :class:`CommandAck`."""
    return CommandAck(t_us=int(msg.timestamp), command=int(msg.command), result=int(msg.result))


def read_offboard_control_mode(msg: Any) -> OffboardHeartbeat:
    """``OffboardControlMode`` -> :class:`OffboardHeartbeat`."""
    return OffboardHeartbeat(
        position=bool(msg.position),
        velocity=bool(msg.velocity),
        acceleration=bool(msg.acceleration),
        attitude=bool(msg.attitude),
        body_rate=bool(msg.body_rate),
        thrust_and_torque=bool(msg.thrust_and_torque),
        direct_actuator=bool(msg.direct_actuator),
    )


def read_velocity_setpoint(msg: Any) -> VelocitySetpointENU:
    """``TrajectorySetpoint`` -> :class:`VelocitySetpointENU` (NaN components stay NaN)."""
    return VelocitySetpointENU(
        vel_enu_m_s=fr.ned_to_enu_vector(_vec(msg.velocity)),
        yaw_rate_enu_rad_s=float(fr.yaw_rate_ned_to_enu(float(msg.yawspeed))),
    )


def read_vehicle_command(msg: Any) -> CommandRequest:
    """``VehicleCommand`` -> :class:`CommandRequest`."""
    return CommandRequest(
        command=int(msg.command),
        param1=float(msg.param1),
        param2=float(msg.param2),
        param3=float(msg.param3),
        param4=float(msg.param4),
        param5=float(msg.param5),
        param6=float(msg.param6),
        param7=float(msg.param7),
        target_system=int(msg.target_system),
        target_component=int(msg.target_component),
        source_system=int(msg.source_system),
        source_component=int(msg.source_component),
        from_external=bool(msg.from_external),
    )


__all__ = [
    "ACK_RESULT_NAMES",
    "NAV_STATE_NAMES",
    "CommandAck",
    "CommandRequest",
    "MessageTypes",
    "OdometryENU",
    "OffboardHeartbeat",
    "Px4",
    "RclpyTypes",
    "RosbagsTypes",
    "VehicleStatusInfo",
    "VelocitySetpointENU",
    "arm_command",
    "hold_mode_command",
    "land_command",
    "nav_state_name",
    "offboard_control_mode_msg",
    "read_offboard_control_mode",
    "read_vehicle_command",
    "read_vehicle_command_ack",
    "read_vehicle_odometry",
    "read_vehicle_status",
    "read_velocity_setpoint",
    "set_offboard_mode_command",
    "vehicle_command_ack_msg",
    "vehicle_command_msg",
    "vehicle_odometry_msg",
    "vehicle_status_msg",
    "velocity_setpoint_msg",
]
