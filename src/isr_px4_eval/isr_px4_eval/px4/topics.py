"""PX4 uXRCE-DDS topic names (per PX4 release, with a vehicle namespace) and PX4's QoS.

Topic names are configuration, not constants in callbacks: from PX4 v1.16 a topic whose message
has ``MESSAGE_VERSION > 0`` gets a ``_vN`` suffix, and multi-vehicle setups put every topic under
a namespace (``/px4_1/fmu/...``, PX4's ``UXRCE_DDS_NS_IDX`` / ``-n`` option of the client).

Suffixes of the topics the workspace uses, read from the ``MESSAGE_VERSION`` constants of
``PX4/px4_msgs`` on each release branch (``msg/*.msg`` and ``msg/versioned/*.msg``):

============================  ======  ======  ======  ============
topic                         1.15    1.16    1.17    1.18 / main
============================  ======  ======  ======  ============
fmu/out/vehicle_status        -       _v1     _v1     _v4
fmu/out/vehicle_local_pos.    -       -       _v1     _v1
fmu/out/vehicle_command_ack   -       -       -       _v1
vehicle_odometry, trajectory_setpoint, offboard_control_mode, vehicle_command: no suffix
============================  ======  ======  ======  ============

The QoS of PX4's ``/fmu/out`` publishers is described as plain data (:data:`PX4_OUT_QOS`) so that
the non-ROS core and the tests can read it; :func:`rclpy_qos_profile` builds the
``rclpy.qos.QoSProfile`` (imported lazily, only where rclpy is installed).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

PX4_RELEASES: tuple[str, ...] = ("1.15", "1.16", "1.17", "1.18", "main")
"""Release presets accepted by :func:`px4_topic_names` (px4_msgs branch ``release/<x>``)."""

DEFAULT_PX4_RELEASE = "1.15"
"""The release the workspace's px4_msgs definitions mirror (:mod:`isr_px4_eval.px4.msgs_defs`)."""

# Suffix per topic key and release; keys missing from a release's dict have no suffix.
_SUFFIXES: dict[str, dict[str, str]] = {
    "1.15": {},
    "1.16": {"vehicle_status": "_v1"},
    "1.17": {"vehicle_status": "_v1", "vehicle_local_position": "_v1"},
    "1.18": {
        "vehicle_status": "_v4",
        "vehicle_local_position": "_v1",
        "vehicle_command_ack": "_v1",
    },
    "main": {
        "vehicle_status": "_v4",
        "vehicle_local_position": "_v1",
        "vehicle_command_ack": "_v1",
    },
}


@dataclass(frozen=True)
class Px4Topics:
    """Fully qualified names of the PX4 topics the offboard client and the emulator use."""

    offboard_control_mode: str
    """``/fmu/in/offboard_control_mode`` (``px4_msgs/msg/OffboardControlMode``, the heartbeat)."""
    trajectory_setpoint: str
    """``/fmu/in/trajectory_setpoint`` (``px4_msgs/msg/TrajectorySetpoint``, NED)."""
    vehicle_command: str
    """``/fmu/in/vehicle_command`` (``px4_msgs/msg/VehicleCommand``)."""
    vehicle_odometry: str
    """``/fmu/out/vehicle_odometry`` (``px4_msgs/msg/VehicleOdometry``, NED/FRD)."""
    vehicle_local_position: str
    """``/fmu/out/vehicle_local_position[_vN]`` (``px4_msgs/msg/VehicleLocalPosition``)."""
    vehicle_status: str
    """``/fmu/out/vehicle_status[_vN]`` (``px4_msgs/msg/VehicleStatus``)."""
    vehicle_command_ack: str
    """``/fmu/out/vehicle_command_ack[_vN]`` (``px4_msgs/msg/VehicleCommandAck``)."""

    def as_dict(self) -> dict[str, str]:
        """Topic key -> name (the keys are the field names)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def evaluation_topics(self) -> list[str]:
        """The PX4 topics worth recording in an evaluation bag (every topic here)."""
        return list(self.as_dict().values())


def normalize_namespace(namespace: str) -> str:
    """``""``, ``"px4_1"``, ``"/px4_1/"`` -> ``""``, ``"/px4_1"``, ``"/px4_1"``.

    Raises ``ValueError`` for characters ROS names do not allow.
    """
    ns = namespace.strip().strip("/")
    if not ns:
        return ""
    for part in ns.split("/"):
        ok = part and (part[0].isalpha() or part[0] == "_")
        ok = ok and all(c.isalnum() or c == "_" for c in part)
        if not ok:
            raise ValueError(f"invalid namespace '{namespace}': use letters, digits, '_' and '/'")
    return "/" + ns


def px4_topic_names(
    release: str = DEFAULT_PX4_RELEASE, namespace: str = "", **overrides: str
) -> Px4Topics:
    """The topic names of PX4 ``release`` under ``namespace``.

    Args:
        release: one of :data:`PX4_RELEASES` (``"1.18"`` and ``"main"`` are the same preset); a
            leading ``v`` or ``release/`` is accepted.
        namespace: vehicle namespace (``"px4_1"`` gives ``/px4_1/fmu/...``); empty for none.
        overrides: full topic names replacing the preset's for the given keys (e.g.
            ``vehicle_status="/custom/status"``); unknown keys raise ``ValueError``.
    """
    rel = release.strip().removeprefix("release/").removeprefix("v")
    if rel not in _SUFFIXES:
        raise ValueError(f"unknown PX4 release '{release}' (choose from {', '.join(PX4_RELEASES)})")
    ns = normalize_namespace(namespace)
    suffix = _SUFFIXES[rel]

    def name(direction: str, key: str) -> str:
        return f"{ns}/fmu/{direction}/{key}{suffix.get(key, '')}"

    topics = Px4Topics(
        offboard_control_mode=name("in", "offboard_control_mode"),
        trajectory_setpoint=name("in", "trajectory_setpoint"),
        vehicle_command=name("in", "vehicle_command"),
        vehicle_odometry=name("out", "vehicle_odometry"),
        vehicle_local_position=name("out", "vehicle_local_position"),
        vehicle_status=name("out", "vehicle_status"),
        vehicle_command_ack=name("out", "vehicle_command_ack"),
    )
    known = {f.name for f in fields(Px4Topics)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown topic key(s) {unknown} (known: {sorted(known)})")
    return replace(topics, **{k: v for k, v in overrides.items() if v})


# ---------------------------------------------------------------------------------- QoS
@dataclass(frozen=True)
class QosSpec:
    """A QoS profile as plain data (names of the ``rclpy.qos`` policy enum members)."""

    reliability: str
    """``BEST_EFFORT`` or ``RELIABLE`` (``rclpy.qos.ReliabilityPolicy``)."""
    durability: str
    """``TRANSIENT_LOCAL`` or ``VOLATILE`` (``rclpy.qos.DurabilityPolicy``)."""
    history: str
    """``KEEP_LAST`` or ``KEEP_ALL`` (``rclpy.qos.HistoryPolicy``)."""
    depth: int
    """History depth (KEEP_LAST)."""


PX4_OUT_QOS = QosSpec(
    reliability="BEST_EFFORT", durability="TRANSIENT_LOCAL", history="KEEP_LAST", depth=1
)
"""QoS to subscribe PX4's ``/fmu/out`` topics with: PX4's uXRCE-DDS client publishes best effort,
transient local, keep last; a best-effort reader matches it (a reliable one would not). Depth 1
as in px4_ros_com's offboard examples: only the newest sample matters."""

PX4_IN_QOS = PX4_OUT_QOS
"""QoS of the publishers to ``/fmu/in`` (the same profile as px4_ros_com's examples use)."""

EMULATOR_OUT_QOS = PX4_OUT_QOS
"""The emulator publishes its ``/fmu/out`` topics with PX4's profile, so clients are unchanged."""


def rclpy_qos_profile(spec: QosSpec = PX4_OUT_QOS) -> Any:
    """``rclpy.qos.QoSProfile`` for ``spec`` (imports rclpy; only call it where ROS 2 runs)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        reliability=getattr(ReliabilityPolicy, spec.reliability),
        durability=getattr(DurabilityPolicy, spec.durability),
        history=getattr(HistoryPolicy, spec.history),
        depth=spec.depth,
    )


__all__ = [
    "DEFAULT_PX4_RELEASE",
    "EMULATOR_OUT_QOS",
    "PX4_IN_QOS",
    "PX4_OUT_QOS",
    "PX4_RELEASES",
    "Px4Topics",
    "QosSpec",
    "normalize_namespace",
    "px4_topic_names",
    "rclpy_qos_profile",
]
