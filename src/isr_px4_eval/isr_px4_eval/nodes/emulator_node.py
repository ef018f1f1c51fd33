"""ROS 2 node ``px4_emulator``: PX4's uXRCE-DDS topics served by :class:`Px4Emulator`.

Subscribes ``/fmu/in/{offboard_control_mode, trajectory_setpoint, vehicle_command}`` and
publishes ``/fmu/out/{vehicle_odometry, vehicle_status, vehicle_command_ack}`` (names of the
``px4_release`` preset, one namespace per vehicle) with PX4's QoS, so the offboard client (and
any px4_ros_com-style program) runs unchanged against it. Callbacks only queue messages; a timer
ticks the emulator core at ``tick_period_s`` with the node clock in microseconds.

Written against rclpy's documented API (Humble) and the px4_msgs Python classes; not run on the
build machine (no ROS 2 there). The core it wraps is tested in ``test/test_offboard.py``.
"""

from __future__ import annotations

from typing import Any

from isr_direct_dynamics.ros_node import run_node

DEFAULT_PARAMETERS: dict[str, Any] = {
    "px4_release": "1.15",
    "namespaces": [""],
    "tick_period_s": 0.01,
    "control_dt_s": 0.02,
    "com_of_loss_t_s": 1.0,
    "com_obl_rc_act": 0,
    "com_disarm_land_s": 2.0,
    "land_speed_m_s": 0.7,
    "vehicle": "sih_quadx",
    "seed": 0,
}
"""Parameters and their defaults (also in ``config/px4_emulator.yaml``). ``namespaces``: one
entry per vehicle (``["px4_1", "px4_2"]`` for ``/px4_1/fmu/...``; ``[""]`` = ``/fmu/...``);
vehicle ``i`` answers MAVLink system id ``1 + i``."""

IN_KEYS = ("offboard_control_mode", "trajectory_setpoint", "vehicle_command")
OUT_KEYS = ("vehicle_odometry", "vehicle_status", "vehicle_command_ack")
MSG_CLASSES = {
    "offboard_control_mode": "px4_msgs/msg/OffboardControlMode",
    "trajectory_setpoint": "px4_msgs/msg/TrajectorySetpoint",
    "vehicle_command": "px4_msgs/msg/VehicleCommand",
    "vehicle_odometry": "px4_msgs/msg/VehicleOdometry",
    "vehicle_status": "px4_msgs/msg/VehicleStatus",
    "vehicle_command_ack": "px4_msgs/msg/VehicleCommandAck",
}
"""Topic key -> px4_msgs type."""


def make_node_class() -> type:
    """The rclpy ``Node`` subclass (imports rclpy)."""
    from rclpy.node import Node

    from isr_direct_dynamics.ros_node import declare_parameters
    from isr_px4_eval.px4.convert import RclpyTypes
    from isr_px4_eval.px4.emulator import Px4Emulator, Px4EmulatorConfig
    from isr_px4_eval.px4.topics import (
        EMULATOR_OUT_QOS,
        PX4_IN_QOS,
        px4_topic_names,
        rclpy_qos_profile,
    )

    class Px4EmulatorNode(Node):
        """Serves the PX4 offboard topics from the embedded quadrotor."""

        def __init__(self) -> None:
            super().__init__("px4_emulator")
            p = declare_parameters(self, DEFAULT_PARAMETERS)
            namespaces = list(p["namespaces"]) or [""]
            self.types = RclpyTypes()
            self.core = Px4Emulator(
                self.types,
                Px4EmulatorConfig(
                    num_vehicles=len(namespaces),
                    control_dt_s=float(p["control_dt_s"]),
                    com_of_loss_t_s=float(p["com_of_loss_t_s"]),
                    com_obl_rc_act=int(p["com_obl_rc_act"]),
                    com_disarm_land_s=float(p["com_disarm_land_s"]),
                    land_speed_m_s=float(p["land_speed_m_s"]),
                    seed=int(p["seed"]),
                    model={"vehicle": p["vehicle"]},
                ),
            )
            in_qos, out_qos = rclpy_qos_profile(PX4_IN_QOS), rclpy_qos_profile(EMULATOR_OUT_QOS)
            self.pending: list[tuple[int, str, Any]] = []
            self.pubs: list[dict[str, Any]] = []
            self.subs = []
            for i, ns in enumerate(namespaces):
                topics = px4_topic_names(p["px4_release"], ns).as_dict()
                self.pubs.append(
                    {
                        k: self.create_publisher(self.types.cls(MSG_CLASSES[k]), topics[k], out_qos)
                        for k in OUT_KEYS
                    }
                )
                for k in IN_KEYS:
                    self.subs.append(
                        self.create_subscription(
                            self.types.cls(MSG_CLASSES[k]),
                            topics[k],
                            lambda msg, i=i, k=k: self.pending.append((i, k, msg)),
                            in_qos,
                        )
                    )
            self.timer = self.create_timer(float(p["tick_period_s"]), self.on_timer)

        def on_timer(self) -> None:
            """Tick the emulator with what arrived; publish what it returns."""
            now_us = self.get_clock().now().nanoseconds // 1000
            inbox, self.pending = self.pending, []
            for i, key, msg in self.core.tick(now_us, inbox):
                self.pubs[i][key].publish(msg)

    return Px4EmulatorNode


def main(args: list[str] | None = None) -> None:
    """Console script ``px4_emulator_node``."""
    run_node(make_node_class(), args)


__all__ = ["DEFAULT_PARAMETERS", "IN_KEYS", "MSG_CLASSES", "OUT_KEYS", "main", "make_node_class"]
