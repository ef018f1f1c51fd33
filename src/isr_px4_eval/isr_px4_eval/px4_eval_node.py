"""ROS 2 node ``px4_eval``: evaluation against PX4 (offboard client) or the embedded model.

``backend`` (parameter):

- ``px4``: the :class:`~isr_px4_eval.offboard.OffboardClient` flies one vehicle over PX4's
  uXRCE-DDS topics (names from ``px4_release`` + ``namespace``, PX4's QoS). The same topics are
  served by ``px4_emulator_node`` for a rehearsal without PX4. Callbacks only queue messages; a
  timer at ``tick_period_s`` decodes them, ticks the client and publishes what it returns. The
  FLY phase flies ``policy``: a trained policy file (run by
  :class:`~isr_px4_eval.px4_pilot.PolicyPilot`: the ISR task on world ``seeds``' first seed, its
  observation built from PX4's odometry, the task's safety filter on every command, the episode
  scored on where PX4 flew) or a scripted pattern (``hover`` | ``box``) to check the link.
- ``embedded``: :func:`isr_px4_eval.evaluation.evaluate_policy` flies the trained ``policy``
  file on the embedded full-fidelity model (quadrotor + PX4-like cascade) on ``seeds``.

Either way one ``isr_msgs/EpisodeMetrics`` per finished episode is published on
``metrics_topic`` (reliable, transient local, so a late ``ros2 bag record`` still gets them) and
the JSON result is written to ``output_dir``; then the node shuts down. With ``px4`` the
vehicle's odometry is also republished as ``nav_msgs/Odometry`` (ENU) on ``odom_topic`` for the
sim bridge's camera.

Written against rclpy's documented API (Humble); not run on the build machine (no ROS 2). The
cores it wraps (client, emulator, conversions, evaluation) are tested without ROS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from isr_direct_dynamics.ros_node import run_node

DEFAULT_PARAMETERS: dict[str, Any] = {
    "backend": "px4",
    "policy": "box",
    "px4_release": "1.15",
    "namespace": "",
    "tick_period_s": 0.05,
    "takeoff_altitude_m": 10.0,
    "fly_duration_s": 150.0,
    "link_timeout_s": 0.5,
    "on_link_loss": "land",
    "seeds": "0",
    "device": "cpu",
    "metrics_topic": "/isr/episode_metrics",
    "odom_topic": "/drone_0/odom",
    "output_dir": "reports/px4_eval",
}
"""Parameters and their defaults (also in ``config/px4_eval.yaml``)."""

BACKENDS = ("px4", "embedded")


def px4_episode_fields(client: Any) -> dict[str, Any]:
    """EpisodeMetrics fields of one offboard episode (PX4 backend)."""
    from .offboard import Phase

    return {
        "episode_length_s": float(client.fly_time_s),
        "terminated": client.phase == Phase.FAILED,
        "truncated": False,
    }


def embedded_episode_fields(row: dict[str, Any]) -> dict[str, Any]:
    """EpisodeMetrics fields of one row of ``evaluate_policy``'s ``episodes``."""
    keys = {
        "world_index": ("world_seed", int),  # the world's seed identifies it across runs
        "drone_index": ("drone", int),
        "episode_return": ("return", float),
        "episode_length_s": ("length_s", float),
        "targets_found_fraction": ("targets_found", float),
        "coverage_fraction": ("coverage", float),
        "collisions": ("collisions", int),
        "geofence_breaches": ("geofence_breaches", int),
        "safety_interventions": ("safety_interventions", int),
        "time_to_first_detection_s": ("time_to_first_detection_s", float),
    }
    out: dict[str, Any] = {}
    for field_name, (key, cast) in keys.items():
        if key in row and row[key] is not None:
            out[field_name] = cast(row[key])
    return out


def make_node_class() -> type:
    """The rclpy ``Node`` subclass (imports rclpy)."""
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from isr_direct_dynamics.ros_node import declare_parameters
    from isr_sim_bridge.rosmsg import RclpyFactory, episode_metrics_msg, odometry_msg

    from .evaluation import parse_seeds
    from .offboard import (
        OffboardClient,
        OffboardClientConfig,
        decode_inbox,
        encode_outbox,
    )
    from .px4_convert import RclpyTypes
    from .px4_emulator_node import MSG_CLASSES
    from .px4_pilot import make_fly_policy, pilot_episode_fields
    from .px4_topics import PX4_IN_QOS, PX4_OUT_QOS, px4_topic_names, rclpy_qos_profile

    class Px4EvalNode(Node):
        """Runs one evaluation and publishes its episode metrics."""

        def __init__(self) -> None:
            super().__init__("px4_eval")
            self.p = p = declare_parameters(self, DEFAULT_PARAMETERS)
            if p["backend"] not in BACKENDS:
                raise ValueError(f"backend must be one of {BACKENDS}, got '{p['backend']}'")
            self.factory = RclpyFactory()
            metrics_qos = QoSProfile(
                depth=100,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL,
            )
            self.metrics_pub = self.create_publisher(
                self.factory("isr_msgs/msg/EpisodeMetrics"), p["metrics_topic"], metrics_qos
            )
            self.done = False
            if p["backend"] == "px4":
                self._setup_px4()
            else:
                self.timer = self.create_timer(0.1, self.run_embedded_once)

        # ---------------------------------------------------------------- px4 backend
        def _setup_px4(self) -> None:
            p = self.p
            self.types = RclpyTypes()
            self.world_seed = parse_seeds(str(p["seeds"]))[0]
            fly, self.pilot = make_fly_policy(p["policy"], self.world_seed, 0, p["device"])
            self.client = OffboardClient(
                fly,
                OffboardClientConfig(
                    tick_period_s=float(p["tick_period_s"]),
                    takeoff_altitude_m=float(p["takeoff_altitude_m"]),
                    fly_duration_s=float(p["fly_duration_s"]),
                    link_timeout_s=float(p["link_timeout_s"]),
                    on_link_loss=p["on_link_loss"],
                ),
            )
            topics = px4_topic_names(p["px4_release"], p["namespace"]).as_dict()
            in_qos, out_qos = rclpy_qos_profile(PX4_IN_QOS), rclpy_qos_profile(PX4_OUT_QOS)
            self.pubs = {
                k: self.create_publisher(self.types.cls(MSG_CLASSES[k]), topics[k], in_qos)
                for k in ("offboard_control_mode", "trajectory_setpoint", "vehicle_command")
            }
            self.pending: list[tuple[str, Any]] = []
            self.subs = [
                self.create_subscription(
                    self.types.cls(MSG_CLASSES[k]),
                    topics[k],
                    lambda msg, k=k: self.pending.append((k, msg)),
                    out_qos,
                )
                for k in ("vehicle_odometry", "vehicle_status", "vehicle_command_ack")
            ]
            self.odom_pub = self.create_publisher(
                self.factory("nav_msgs/msg/Odometry"), p["odom_topic"], out_qos
            )
            self.timer = self.create_timer(float(p["tick_period_s"]), self.on_tick)
            self.get_logger().info(f"offboard client on {topics}")

        def on_tick(self) -> None:
            """Decode what arrived, tick the client, publish its messages."""
            now_us = self.get_clock().now().nanoseconds // 1000
            inbox, self.pending = decode_inbox(self.pending), []
            phase_before = self.client.phase
            out = self.client.tick(now_us, inbox)
            if inbox.odometry:  # PX4's state for the sim bridge, in workspace frames
                o = inbox.odometry[-1]
                self.odom_pub.publish(
                    odometry_msg(
                        self.factory, o.pos_enu_m, o.quat_wxyz, o.vel_enu_m_s,
                        o.body_rates_flu_rad_s, now_us * 1e-6, "map", "drone_0/base_link",
                    )
                )  # fmt: skip
            for key, msg in encode_outbox(self.types, out, now_us):
                self.pubs[key].publish(msg)
            if self.client.phase != phase_before:
                self.get_logger().info(f"phase {self.client.phase.value}")
            if self.client.finished and not self.done:
                self.done = True
                reason = self.client.failure_reason or "ok"
                self.get_logger().info(f"episode {self.client.phase.value}: {reason}")
                fields = px4_episode_fields(self.client)
                if self.pilot is not None:
                    fields.update(pilot_episode_fields(self.pilot, self.world_seed))
                self.publish_metrics([fields])
                self.write_result(
                    {
                        "backend": "px4",
                        "phase": self.client.phase.value,
                        "failure_reason": self.client.failure_reason,
                        "episode": None if self.pilot is None else self.pilot.episode,
                        "trajectory": None if self.pilot is None else self.pilot.trace,
                        "events": [
                            {"t_us": e.t_us, "phase": e.phase.value, "note": e.note}
                            for e in self.client.events
                        ],
                    }
                )

        # ---------------------------------------------------------------- embedded backend
        def run_embedded_once(self) -> None:
            """Run the whole embedded evaluation (blocking), publish, write, stop."""
            self.timer.cancel()
            from .evaluation import evaluate_policy, parse_seeds

            result = evaluate_policy(
                self.p["policy"], "embedded", parse_seeds(str(self.p["seeds"])),
                device=self.p["device"],
            )  # fmt: skip
            self.publish_metrics([embedded_episode_fields(r) for r in result.get("episodes", [])])
            self.write_result(result)
            self.done = True

        # ---------------------------------------------------------------- output
        def publish_metrics(self, rows: list[dict[str, Any]]) -> None:
            """One EpisodeMetrics per row."""
            t_s = self.get_clock().now().nanoseconds * 1e-9
            for row in rows:
                self.metrics_pub.publish(episode_metrics_msg(self.factory, t_s, **row))

        def write_result(self, result: dict[str, Any]) -> None:
            """``<output_dir>/<backend>_result.json``."""
            out = Path(self.p["output_dir"])
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"{self.p['backend']}_result.json"
            path.write_text(json.dumps(result, indent=2, default=str))
            self.get_logger().info(f"wrote {path}")

    return Px4EvalNode


def _flush(node: Any) -> None:
    """2 s more after the episode: the link-loss land commands and the metrics go out."""
    import rclpy

    for _ in range(40):
        rclpy.spin_once(node, timeout_sec=0.05)


def main(args: list[str] | None = None) -> None:
    """Console script ``px4_eval_node``: spins until the evaluation is done."""
    run_node(make_node_class(), args, until_done=True, finish=_flush)


__all__ = [
    "BACKENDS",
    "DEFAULT_PARAMETERS",
    "embedded_episode_fields",
    "main",
    "make_node_class",
    "px4_episode_fields",
]
