"""ROS 2 node ``direct_dynamics``: per-drone TwistStamped commands in, Odometry out.

A thin adapter around :func:`isr_direct_dynamics.make_vehicle_model` (``direct`` by default,
``quadrotor`` for the full-fidelity model): a timer at ``control_dt_s`` takes each drone's newest
``geometry_msgs/TwistStamped`` (world ENU m/s and rad/s in ``map``, as the sim bridge and the
trainer publish them), normalizes it by the model's velocity limits, steps the batched model once
and publishes ``nav_msgs/Odometry`` per drone (ENU pose in ``map``, body-frame twist, REP 105).
A drone without a command newer than ``command_timeout_s`` gets a zero (hover) command.

rclpy and the message packages are imported only when the node is built, so the package imports
without ROS. Written against rclpy's documented API (Humble); not run on the build machine, which
has no ROS 2. The Odometry is filled here with the rclpy classes directly: the shared builders of
``isr_sim_bridge.rosmsg`` live in a package to the right of this one.
"""

from __future__ import annotations

import math
from typing import Any

from .ros_node import run_node

DEFAULT_PARAMETERS: dict[str, Any] = {
    "num_drones": 4,
    "model": "direct",
    "control_dt_s": 0.05,
    "command_timeout_s": 0.5,
    "seed": 0,
    "device": "cpu",
    "cmd_topic": "/drone_{i}/cmd_vel",
    "odom_topic": "/drone_{i}/odom",
    "frame_id": "map",
    "child_frame_id": "drone_{i}/base_link",
    "spawn_spacing_m": 5.0,
    "spawn_altitude_m": 20.0,
}
"""Parameters and their defaults (also in ``config/direct_dynamics.yaml``)."""


def normalized_action(linear_enu: list[float], yaw_rate: float, limits: Any) -> list[float]:
    """ENU velocity (m/s) + yaw rate (rad/s) -> the model's normalized ``[vx, vy, vz, wz]``."""
    return [
        linear_enu[0] / limits.max_velocity_m_s,
        linear_enu[1] / limits.max_velocity_m_s,
        linear_enu[2] / limits.max_vertical_velocity_m_s,
        yaw_rate / math.radians(limits.max_yaw_rate_deg_s),
    ]


def make_node_class() -> type:
    """The rclpy ``Node`` subclass (imports rclpy)."""
    import torch
    from geometry_msgs.msg import TwistStamped
    from nav_msgs.msg import Odometry
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data

    from . import InitialState, make_vehicle_model
    from .math3d import quat_rotate_inverse
    from .ros_node import declare_parameters

    class DirectDynamicsNode(Node):
        """Integrates per-drone velocity commands with a batched vehicle model."""

        def __init__(self) -> None:
            super().__init__("direct_dynamics")
            p = declare_parameters(self, DEFAULT_PARAMETERS)
            self.p = p
            n = int(p["num_drones"])
            self.model = make_vehicle_model(
                p["model"], 1, n, float(p["control_dt_s"]), p["device"], int(p["seed"])
            )
            self.limits = self.model.config.limits
            pos = torch.zeros(1, n, 3)
            pos[0, :, 0] = torch.arange(n) * float(p["spawn_spacing_m"])
            pos[0, :, 2] = float(p["spawn_altitude_m"])
            self.model.reset(initial=InitialState(pos_enu_m=pos))
            self.t_s = 0.0
            self.commands: list[tuple[float, list[float]] | None] = [None] * n
            self.odom_pubs = [
                self.create_publisher(
                    Odometry, p["odom_topic"].format(i=i), qos_profile_sensor_data
                )
                for i in range(n)
            ]
            self.cmd_subs = [
                self.create_subscription(
                    TwistStamped,
                    p["cmd_topic"].format(i=i),
                    lambda msg, i=i: self.on_command(i, msg),
                    qos_profile_sensor_data,
                )
                for i in range(n)
            ]
            self.timer = self.create_timer(float(p["control_dt_s"]), self.on_timer)

        def on_command(self, i: int, msg: Any) -> None:
            """Keep drone ``i``'s newest command (normalized) with its arrival time."""
            lin = msg.twist.linear
            self.commands[i] = (
                self.t_s,
                normalized_action([lin.x, lin.y, lin.z], msg.twist.angular.z, self.limits),
            )

        def on_timer(self) -> None:
            """Step the model once and publish every drone's odometry."""
            timeout = float(self.p["command_timeout_s"])
            rows = [
                c[1] if c is not None and self.t_s - c[0] <= timeout else [0.0, 0.0, 0.0, 0.0]
                for c in self.commands
            ]
            st = self.model.step(torch.tensor([rows], dtype=torch.float32))
            self.t_s += self.model.control_dt_s
            stamp = self.get_clock().now().to_msg()
            v_body = quat_rotate_inverse(st.quat_wxyz, st.vel_enu_m_s)
            pos, q = st.pos_enu_m[0].tolist(), st.quat_wxyz[0].tolist()
            vb, w = v_body[0].tolist(), st.body_rates_flu_rad_s[0].tolist()
            for i, pub in enumerate(self.odom_pubs):
                msg = Odometry()
                msg.header.stamp = stamp
                msg.header.frame_id = self.p["frame_id"]
                msg.child_frame_id = self.p["child_frame_id"].format(i=i)
                pp, o = msg.pose.pose.position, msg.pose.pose.orientation
                pp.x, pp.y, pp.z = pos[i]
                o.w, o.x, o.y, o.z = q[i]
                tl, ta = msg.twist.twist.linear, msg.twist.twist.angular
                tl.x, tl.y, tl.z = vb[i]
                ta.x, ta.y, ta.z = w[i]
                pub.publish(msg)

    return DirectDynamicsNode


def main(args: list[str] | None = None) -> None:
    """Console script ``direct_dynamics_node``."""
    run_node(make_node_class(), args)


__all__ = ["DEFAULT_PARAMETERS", "main", "make_node_class", "normalized_action"]
