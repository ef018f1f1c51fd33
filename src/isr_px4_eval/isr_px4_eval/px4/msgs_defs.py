"""px4_msgs message definitions (``.msg`` text) and their registration in a rosbags typestore.

The six messages the workspace exchanges with PX4 over uXRCE-DDS, mirrored from the
``PX4/px4_msgs`` repository, branch ``release/1.15`` (commit
``a1045ec4feb6d709bdecaf3895f1d5b43a5dabb8``, "fix: update message definitions for
release/1.15"), which matches PX4-Autopilot v1.15.x (the real SIH flight in the tests ran
v1.15.4 with px4_msgs from that branch). Comments are stripped and whitespace normalized; every
field, array size and constant is kept, so the types (and their ROS 2 RIHS01 hashes) equal the
ones built from the original files (checked against the definitions embedded in a real flight's
MCAP bag by ``test_px4_logs.py``). Message versions: release/1.15 has no ``MESSAGE_VERSION``
fields and no ``_vN`` topic suffixes (those start with v1.16, see PX4_NOTES.md).

:data:`PX4_EXTRA_MSG_DEFS` adds, from the same commit, the messages the offboard client and the
PX4 emulator exchange that the real flight's bag does not hold (``VehicleCommandAck``).

Use :func:`register_px4_types` on a ``rosbags`` typestore (``Stores.ROS2_HUMBLE``) to
(de)serialize px4_msgs without a ROS installation, or :func:`px4_typestore` for a fresh one. When
reading a bag, prefer the definitions the bag embeds (``rosbags.highlevel.AnyReader`` does).
"""

from __future__ import annotations

from typing import Any

PX4_MSGS_RELEASE = "release/1.15"
"""px4_msgs branch that :data:`PX4_MSG_DEFS` mirrors."""

PX4_MSGS_COMMIT = "a1045ec4feb6d709bdecaf3895f1d5b43a5dabb8"
"""px4_msgs commit on :data:`PX4_MSGS_RELEASE` the definitions were taken from."""

PX4_MSG_DEFS: dict[str, str] = {
    "px4_msgs/msg/TrajectorySetpoint": """\
uint64 timestamp
float32[3] position
float32[3] velocity
float32[3] acceleration
float32[3] jerk
float32 yaw
float32 yawspeed
""",
    "px4_msgs/msg/OffboardControlMode": """\
uint64 timestamp
bool position
bool velocity
bool acceleration
bool attitude
bool body_rate
bool thrust_and_torque
bool direct_actuator
""",
    "px4_msgs/msg/VehicleCommand": """\
uint64 timestamp
uint16 VEHICLE_CMD_CUSTOM_0 = 0
uint16 VEHICLE_CMD_CUSTOM_1 = 1
uint16 VEHICLE_CMD_CUSTOM_2 = 2
uint16 VEHICLE_CMD_NAV_WAYPOINT = 16
uint16 VEHICLE_CMD_NAV_LOITER_UNLIM = 17
uint16 VEHICLE_CMD_NAV_LOITER_TURNS = 18
uint16 VEHICLE_CMD_NAV_LOITER_TIME = 19
uint16 VEHICLE_CMD_NAV_RETURN_TO_LAUNCH = 20
uint16 VEHICLE_CMD_NAV_LAND = 21
uint16 VEHICLE_CMD_NAV_TAKEOFF = 22
uint16 VEHICLE_CMD_NAV_PRECLAND = 23
uint16 VEHICLE_CMD_DO_ORBIT = 34
uint16 VEHICLE_CMD_DO_FIGUREEIGHT = 35
uint16 VEHICLE_CMD_NAV_ROI = 80
uint16 VEHICLE_CMD_NAV_PATHPLANNING = 81
uint16 VEHICLE_CMD_NAV_VTOL_TAKEOFF = 84
uint16 VEHICLE_CMD_NAV_VTOL_LAND = 85
uint16 VEHICLE_CMD_NAV_GUIDED_LIMITS = 90
uint16 VEHICLE_CMD_NAV_GUIDED_MASTER = 91
uint16 VEHICLE_CMD_NAV_DELAY = 93
uint16 VEHICLE_CMD_NAV_LAST = 95
uint16 VEHICLE_CMD_CONDITION_DELAY = 112
uint16 VEHICLE_CMD_CONDITION_CHANGE_ALT = 113
uint16 VEHICLE_CMD_CONDITION_DISTANCE = 114
uint16 VEHICLE_CMD_CONDITION_YAW = 115
uint16 VEHICLE_CMD_CONDITION_LAST = 159
uint16 VEHICLE_CMD_CONDITION_GATE = 4501
uint16 VEHICLE_CMD_DO_SET_MODE = 176
uint16 VEHICLE_CMD_DO_JUMP = 177
uint16 VEHICLE_CMD_DO_CHANGE_SPEED = 178
uint16 VEHICLE_CMD_DO_SET_HOME = 179
uint16 VEHICLE_CMD_DO_SET_PARAMETER = 180
uint16 VEHICLE_CMD_DO_SET_RELAY = 181
uint16 VEHICLE_CMD_DO_REPEAT_RELAY = 182
uint16 VEHICLE_CMD_DO_REPEAT_SERVO = 184
uint16 VEHICLE_CMD_DO_FLIGHTTERMINATION = 185
uint16 VEHICLE_CMD_DO_CHANGE_ALTITUDE = 186
uint16 VEHICLE_CMD_DO_SET_ACTUATOR = 187
uint16 VEHICLE_CMD_DO_LAND_START = 189
uint16 VEHICLE_CMD_DO_GO_AROUND = 191
uint16 VEHICLE_CMD_DO_REPOSITION = 192
uint16 VEHICLE_CMD_DO_PAUSE_CONTINUE = 193
uint16 VEHICLE_CMD_DO_SET_ROI_LOCATION = 195
uint16 VEHICLE_CMD_DO_SET_ROI_WPNEXT_OFFSET = 196
uint16 VEHICLE_CMD_DO_SET_ROI_NONE = 197
uint16 VEHICLE_CMD_DO_CONTROL_VIDEO = 200
uint16 VEHICLE_CMD_DO_SET_ROI = 201
uint16 VEHICLE_CMD_DO_DIGICAM_CONTROL = 203
uint16 VEHICLE_CMD_DO_MOUNT_CONFIGURE = 204
uint16 VEHICLE_CMD_DO_MOUNT_CONTROL = 205
uint16 VEHICLE_CMD_DO_SET_CAM_TRIGG_DIST = 206
uint16 VEHICLE_CMD_DO_FENCE_ENABLE = 207
uint16 VEHICLE_CMD_DO_PARACHUTE = 208
uint16 VEHICLE_CMD_DO_MOTOR_TEST = 209
uint16 VEHICLE_CMD_DO_INVERTED_FLIGHT = 210
uint16 VEHICLE_CMD_DO_GRIPPER = 211
uint16 VEHICLE_CMD_DO_SET_CAM_TRIGG_INTERVAL = 214
uint16 VEHICLE_CMD_DO_MOUNT_CONTROL_QUAT = 220
uint16 VEHICLE_CMD_DO_GUIDED_MASTER = 221
uint16 VEHICLE_CMD_DO_GUIDED_LIMITS = 222
uint16 VEHICLE_CMD_DO_LAST = 240
uint16 VEHICLE_CMD_PREFLIGHT_CALIBRATION = 241
uint16 PREFLIGHT_CALIBRATION_TEMPERATURE_CALIBRATION = 3
uint16 VEHICLE_CMD_PREFLIGHT_SET_SENSOR_OFFSETS = 242
uint16 VEHICLE_CMD_PREFLIGHT_UAVCAN = 243
uint16 VEHICLE_CMD_PREFLIGHT_STORAGE = 245
uint16 VEHICLE_CMD_PREFLIGHT_REBOOT_SHUTDOWN = 246
uint16 VEHICLE_CMD_OBLIQUE_SURVEY = 260
uint16 VEHICLE_CMD_DO_SET_STANDARD_MODE = 262
uint16 VEHICLE_CMD_GIMBAL_DEVICE_INFORMATION = 283
uint16 VEHICLE_CMD_MISSION_START = 300
uint16 VEHICLE_CMD_ACTUATOR_TEST = 310
uint16 VEHICLE_CMD_CONFIGURE_ACTUATOR = 311
uint16 VEHICLE_CMD_COMPONENT_ARM_DISARM = 400
uint16 VEHICLE_CMD_RUN_PREARM_CHECKS = 401
uint16 VEHICLE_CMD_INJECT_FAILURE = 420
uint16 VEHICLE_CMD_START_RX_PAIR = 500
uint16 VEHICLE_CMD_REQUEST_MESSAGE = 512
uint16 VEHICLE_CMD_REQUEST_CAMERA_INFORMATION = 521
uint16 VEHICLE_CMD_SET_CAMERA_MODE = 530
uint16 VEHICLE_CMD_SET_CAMERA_ZOOM = 531
uint16 VEHICLE_CMD_SET_CAMERA_FOCUS = 532
uint16 VEHICLE_CMD_DO_GIMBAL_MANAGER_PITCHYAW = 1000
uint16 VEHICLE_CMD_DO_GIMBAL_MANAGER_CONFIGURE = 1001
uint16 VEHICLE_CMD_IMAGE_START_CAPTURE = 2000
uint16 VEHICLE_CMD_DO_TRIGGER_CONTROL = 2003
uint16 VEHICLE_CMD_VIDEO_START_CAPTURE = 2500
uint16 VEHICLE_CMD_VIDEO_STOP_CAPTURE = 2501
uint16 VEHICLE_CMD_LOGGING_START = 2510
uint16 VEHICLE_CMD_LOGGING_STOP = 2511
uint16 VEHICLE_CMD_CONTROL_HIGH_LATENCY = 2600
uint16 VEHICLE_CMD_DO_VTOL_TRANSITION = 3000
uint16 VEHICLE_CMD_ARM_AUTHORIZATION_REQUEST = 3001
uint16 VEHICLE_CMD_PAYLOAD_PREPARE_DEPLOY = 30001
uint16 VEHICLE_CMD_PAYLOAD_CONTROL_DEPLOY = 30002
uint16 VEHICLE_CMD_FIXED_MAG_CAL_YAW = 42006
uint16 VEHICLE_CMD_DO_WINCH = 42600
uint16 VEHICLE_CMD_EXTERNAL_POSITION_ESTIMATE = 43003
uint32 VEHICLE_CMD_PX4_INTERNAL_START = 65537
uint32 VEHICLE_CMD_SET_GPS_GLOBAL_ORIGIN = 100000
uint32 VEHICLE_CMD_SET_NAV_STATE = 100001
uint8 VEHICLE_MOUNT_MODE_RETRACT = 0
uint8 VEHICLE_MOUNT_MODE_NEUTRAL = 1
uint8 VEHICLE_MOUNT_MODE_MAVLINK_TARGETING = 2
uint8 VEHICLE_MOUNT_MODE_RC_TARGETING = 3
uint8 VEHICLE_MOUNT_MODE_GPS_POINT = 4
uint8 VEHICLE_MOUNT_MODE_ENUM_END = 5
uint8 VEHICLE_ROI_NONE = 0
uint8 VEHICLE_ROI_WPNEXT = 1
uint8 VEHICLE_ROI_WPINDEX = 2
uint8 VEHICLE_ROI_LOCATION = 3
uint8 VEHICLE_ROI_TARGET = 4
uint8 VEHICLE_ROI_ENUM_END = 5
uint8 PARACHUTE_ACTION_DISABLE = 0
uint8 PARACHUTE_ACTION_ENABLE = 1
uint8 PARACHUTE_ACTION_RELEASE = 2
uint8 FAILURE_UNIT_SENSOR_GYRO = 0
uint8 FAILURE_UNIT_SENSOR_ACCEL = 1
uint8 FAILURE_UNIT_SENSOR_MAG = 2
uint8 FAILURE_UNIT_SENSOR_BARO = 3
uint8 FAILURE_UNIT_SENSOR_GPS = 4
uint8 FAILURE_UNIT_SENSOR_OPTICAL_FLOW = 5
uint8 FAILURE_UNIT_SENSOR_VIO = 6
uint8 FAILURE_UNIT_SENSOR_DISTANCE_SENSOR = 7
uint8 FAILURE_UNIT_SENSOR_AIRSPEED = 8
uint8 FAILURE_UNIT_SYSTEM_BATTERY = 100
uint8 FAILURE_UNIT_SYSTEM_MOTOR = 101
uint8 FAILURE_UNIT_SYSTEM_SERVO = 102
uint8 FAILURE_UNIT_SYSTEM_AVOIDANCE = 103
uint8 FAILURE_UNIT_SYSTEM_RC_SIGNAL = 104
uint8 FAILURE_UNIT_SYSTEM_MAVLINK_SIGNAL = 105
uint8 FAILURE_TYPE_OK = 0
uint8 FAILURE_TYPE_OFF = 1
uint8 FAILURE_TYPE_STUCK = 2
uint8 FAILURE_TYPE_GARBAGE = 3
uint8 FAILURE_TYPE_WRONG = 4
uint8 FAILURE_TYPE_SLOW = 5
uint8 FAILURE_TYPE_DELAYED = 6
uint8 FAILURE_TYPE_INTERMITTENT = 7
uint8 SPEED_TYPE_AIRSPEED = 0
uint8 SPEED_TYPE_GROUNDSPEED = 1
uint8 SPEED_TYPE_CLIMB_SPEED = 2
uint8 SPEED_TYPE_DESCEND_SPEED = 3
int8 ARMING_ACTION_DISARM = 0
int8 ARMING_ACTION_ARM = 1
uint8 GRIPPER_ACTION_RELEASE = 0
uint8 GRIPPER_ACTION_GRAB = 1
uint8 ORB_QUEUE_LENGTH = 8
float32 param1
float32 param2
float32 param3
float32 param4
float64 param5
float64 param6
float32 param7
uint32 command
uint8 target_system
uint8 target_component
uint8 source_system
uint16 source_component
uint8 confirmation
bool from_external
uint16 COMPONENT_MODE_EXECUTOR_START = 1000
""",
    "px4_msgs/msg/VehicleOdometry": """\
uint64 timestamp
uint64 timestamp_sample
uint8 POSE_FRAME_UNKNOWN = 0
uint8 POSE_FRAME_NED = 1
uint8 POSE_FRAME_FRD = 2
uint8 pose_frame
float32[3] position
float32[4] q
uint8 VELOCITY_FRAME_UNKNOWN = 0
uint8 VELOCITY_FRAME_NED = 1
uint8 VELOCITY_FRAME_FRD = 2
uint8 VELOCITY_FRAME_BODY_FRD = 3
uint8 velocity_frame
float32[3] velocity
float32[3] angular_velocity
float32[3] position_variance
float32[3] orientation_variance
float32[3] velocity_variance
uint8 reset_counter
int8 quality
""",
    "px4_msgs/msg/VehicleLocalPosition": """\
uint64 timestamp
uint64 timestamp_sample
bool xy_valid
bool z_valid
bool v_xy_valid
bool v_z_valid
float32 x
float32 y
float32 z
float32[2] delta_xy
uint8 xy_reset_counter
float32 delta_z
uint8 z_reset_counter
float32 vx
float32 vy
float32 vz
float32 z_deriv
float32[2] delta_vxy
uint8 vxy_reset_counter
float32 delta_vz
uint8 vz_reset_counter
float32 ax
float32 ay
float32 az
float32 heading
float32 heading_var
float32 unaided_heading
float32 delta_heading
uint8 heading_reset_counter
bool heading_good_for_control
float32 tilt_var
bool xy_global
bool z_global
uint64 ref_timestamp
float64 ref_lat
float64 ref_lon
float32 ref_alt
float32 dist_bottom
bool dist_bottom_valid
uint8 dist_bottom_sensor_bitfield
uint8 DIST_BOTTOM_SENSOR_NONE = 0
uint8 DIST_BOTTOM_SENSOR_RANGE = 1
uint8 DIST_BOTTOM_SENSOR_FLOW = 2
float32 eph
float32 epv
float32 evh
float32 evv
bool dead_reckoning
float32 vxy_max
float32 vz_max
float32 hagl_min
float32 hagl_max
""",
    "px4_msgs/msg/VehicleStatus": """\
uint64 timestamp
uint64 armed_time
uint64 takeoff_time
uint8 arming_state
uint8 ARMING_STATE_DISARMED = 1
uint8 ARMING_STATE_ARMED = 2
uint8 latest_arming_reason
uint8 latest_disarming_reason
uint8 ARM_DISARM_REASON_TRANSITION_TO_STANDBY = 0
uint8 ARM_DISARM_REASON_RC_STICK = 1
uint8 ARM_DISARM_REASON_RC_SWITCH = 2
uint8 ARM_DISARM_REASON_COMMAND_INTERNAL = 3
uint8 ARM_DISARM_REASON_COMMAND_EXTERNAL = 4
uint8 ARM_DISARM_REASON_MISSION_START = 5
uint8 ARM_DISARM_REASON_SAFETY_BUTTON = 6
uint8 ARM_DISARM_REASON_AUTO_DISARM_LAND = 7
uint8 ARM_DISARM_REASON_AUTO_DISARM_PREFLIGHT = 8
uint8 ARM_DISARM_REASON_KILL_SWITCH = 9
uint8 ARM_DISARM_REASON_LOCKDOWN = 10
uint8 ARM_DISARM_REASON_FAILURE_DETECTOR = 11
uint8 ARM_DISARM_REASON_SHUTDOWN = 12
uint8 ARM_DISARM_REASON_UNIT_TEST = 13
uint64 nav_state_timestamp
uint8 nav_state_user_intention
uint8 nav_state
uint8 NAVIGATION_STATE_MANUAL = 0
uint8 NAVIGATION_STATE_ALTCTL = 1
uint8 NAVIGATION_STATE_POSCTL = 2
uint8 NAVIGATION_STATE_AUTO_MISSION = 3
uint8 NAVIGATION_STATE_AUTO_LOITER = 4
uint8 NAVIGATION_STATE_AUTO_RTL = 5
uint8 NAVIGATION_STATE_POSITION_SLOW = 6
uint8 NAVIGATION_STATE_FREE5 = 7
uint8 NAVIGATION_STATE_FREE4 = 8
uint8 NAVIGATION_STATE_FREE3 = 9
uint8 NAVIGATION_STATE_ACRO = 10
uint8 NAVIGATION_STATE_FREE2 = 11
uint8 NAVIGATION_STATE_DESCEND = 12
uint8 NAVIGATION_STATE_TERMINATION = 13
uint8 NAVIGATION_STATE_OFFBOARD = 14
uint8 NAVIGATION_STATE_STAB = 15
uint8 NAVIGATION_STATE_FREE1 = 16
uint8 NAVIGATION_STATE_AUTO_TAKEOFF = 17
uint8 NAVIGATION_STATE_AUTO_LAND = 18
uint8 NAVIGATION_STATE_AUTO_FOLLOW_TARGET = 19
uint8 NAVIGATION_STATE_AUTO_PRECLAND = 20
uint8 NAVIGATION_STATE_ORBIT = 21
uint8 NAVIGATION_STATE_AUTO_VTOL_TAKEOFF = 22
uint8 NAVIGATION_STATE_EXTERNAL1 = 23
uint8 NAVIGATION_STATE_EXTERNAL2 = 24
uint8 NAVIGATION_STATE_EXTERNAL3 = 25
uint8 NAVIGATION_STATE_EXTERNAL4 = 26
uint8 NAVIGATION_STATE_EXTERNAL5 = 27
uint8 NAVIGATION_STATE_EXTERNAL6 = 28
uint8 NAVIGATION_STATE_EXTERNAL7 = 29
uint8 NAVIGATION_STATE_EXTERNAL8 = 30
uint8 NAVIGATION_STATE_MAX = 31
uint8 executor_in_charge
uint32 valid_nav_states_mask
uint32 can_set_nav_states_mask
uint16 failure_detector_status
uint16 FAILURE_NONE = 0
uint16 FAILURE_ROLL = 1
uint16 FAILURE_PITCH = 2
uint16 FAILURE_ALT = 4
uint16 FAILURE_EXT = 8
uint16 FAILURE_ARM_ESC = 16
uint16 FAILURE_BATTERY = 32
uint16 FAILURE_IMBALANCED_PROP = 64
uint16 FAILURE_MOTOR = 128
uint8 hil_state
uint8 HIL_STATE_OFF = 0
uint8 HIL_STATE_ON = 1
uint8 vehicle_type
uint8 VEHICLE_TYPE_UNKNOWN = 0
uint8 VEHICLE_TYPE_ROTARY_WING = 1
uint8 VEHICLE_TYPE_FIXED_WING = 2
uint8 VEHICLE_TYPE_ROVER = 3
uint8 VEHICLE_TYPE_AIRSHIP = 4
uint8 FAILSAFE_DEFER_STATE_DISABLED = 0
uint8 FAILSAFE_DEFER_STATE_ENABLED = 1
uint8 FAILSAFE_DEFER_STATE_WOULD_FAILSAFE = 2
bool failsafe
bool failsafe_and_user_took_over
uint8 failsafe_defer_state
bool gcs_connection_lost
uint8 gcs_connection_lost_counter
bool high_latency_data_link_lost
bool is_vtol
bool is_vtol_tailsitter
bool in_transition_mode
bool in_transition_to_fw
uint8 system_type
uint8 system_id
uint8 component_id
bool safety_button_available
bool safety_off
bool power_input_valid
bool usb_connected
bool open_drone_id_system_present
bool open_drone_id_system_healthy
bool parachute_system_present
bool parachute_system_healthy
bool avoidance_system_required
bool avoidance_system_valid
bool rc_calibration_in_progress
bool calibration_enabled
bool pre_flight_checks_pass
""",
}
"""Message type name -> ``.msg`` definition text (px4_msgs release/1.15, comments stripped)."""

PX4_EXTRA_MSG_DEFS: dict[str, str] = {
    "px4_msgs/msg/VehicleCommandAck": """\
uint64 timestamp
uint8 VEHICLE_CMD_RESULT_ACCEPTED = 0
uint8 VEHICLE_CMD_RESULT_TEMPORARILY_REJECTED = 1
uint8 VEHICLE_CMD_RESULT_DENIED = 2
uint8 VEHICLE_CMD_RESULT_UNSUPPORTED = 3
uint8 VEHICLE_CMD_RESULT_FAILED = 4
uint8 VEHICLE_CMD_RESULT_IN_PROGRESS = 5
uint8 VEHICLE_CMD_RESULT_CANCELLED = 6
uint16 ARM_AUTH_DENIED_REASON_GENERIC = 0
uint16 ARM_AUTH_DENIED_REASON_NONE = 1
uint16 ARM_AUTH_DENIED_REASON_INVALID_WAYPOINT = 2
uint16 ARM_AUTH_DENIED_REASON_TIMEOUT = 3
uint16 ARM_AUTH_DENIED_REASON_AIRSPACE_IN_USE = 4
uint16 ARM_AUTH_DENIED_REASON_BAD_WEATHER = 5
uint8 ORB_QUEUE_LENGTH = 4
uint32 command
uint8 result
uint8 result_param1
int32 result_param2
uint8 target_system
uint16 target_component
bool from_external
""",
}
"""Further px4_msgs release/1.15 messages (same commit, comments stripped) used by the offboard
client and the emulator but absent from the real flight's bag (so kept apart from
:data:`PX4_MSG_DEFS`, which the tests compare with that bag topic for topic)."""

OFFBOARD_CONTROL_MODE = "px4_msgs/msg/OffboardControlMode"
TRAJECTORY_SETPOINT = "px4_msgs/msg/TrajectorySetpoint"
VEHICLE_COMMAND = "px4_msgs/msg/VehicleCommand"
VEHICLE_COMMAND_ACK = "px4_msgs/msg/VehicleCommandAck"
VEHICLE_LOCAL_POSITION = "px4_msgs/msg/VehicleLocalPosition"
VEHICLE_ODOMETRY = "px4_msgs/msg/VehicleOdometry"
VEHICLE_STATUS = "px4_msgs/msg/VehicleStatus"


def register_px4_types(typestore: Any) -> Any:
    """Register every px4_msgs type of :data:`PX4_MSG_DEFS` and :data:`PX4_EXTRA_MSG_DEFS`.

    Args:
        typestore: a ``rosbags.typesys.store.Typestore`` (e.g.
            ``get_typestore(Stores.ROS2_HUMBLE)``); modified in place.

    Returns:
        The same typestore, for chaining.
    """
    from rosbags.typesys import get_types_from_msg

    types: dict[str, Any] = {}
    for name, text in {**PX4_MSG_DEFS, **PX4_EXTRA_MSG_DEFS}.items():
        types.update(get_types_from_msg(text, name))
    typestore.register(types)
    return typestore


def px4_typestore() -> Any:
    """A fresh ROS 2 Humble rosbags typestore with the px4_msgs types registered."""
    from rosbags.typesys import Stores, get_typestore

    return register_px4_types(get_typestore(Stores.ROS2_HUMBLE))


__all__ = [
    "OFFBOARD_CONTROL_MODE",
    "PX4_EXTRA_MSG_DEFS",
    "PX4_MSGS_COMMIT",
    "PX4_MSGS_RELEASE",
    "PX4_MSG_DEFS",
    "TRAJECTORY_SETPOINT",
    "VEHICLE_COMMAND",
    "VEHICLE_COMMAND_ACK",
    "VEHICLE_LOCAL_POSITION",
    "VEHICLE_ODOMETRY",
    "VEHICLE_STATUS",
    "px4_typestore",
    "register_px4_types",
]
