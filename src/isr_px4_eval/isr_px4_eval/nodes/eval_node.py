"""ROS 2 node ``px4_eval``: evaluation against PX4 (offboard client) or the embedded model.

``backend`` (parameter):

- ``px4``: the :class:`~isr_px4_eval.px4.offboard.OffboardClient` flies one vehicle over PX4's
  uXRCE-DDS topics (names from ``px4_release`` + ``namespace``, PX4's QoS). The same topics are
  served by ``px4_emulator_node`` for a rehearsal without PX4. Callbacks only queue messages; a
  timer at ``tick_period_s`` decodes them, ticks the client and publishes what it returns. The
  FLY phase flies ``policy``: a trained policy file (run by
  :class:`~isr_px4_eval.px4.pilot.PolicyPilot`: the ISR task on world ``seeds``' first seed, its
  observation built from PX4's odometry, the task's safety filter on every command, the episode
  scored on where PX4 flew) or a scripted pattern (``hover`` | ``box``) to check the link.
  Flight safety: the policy is loaded, its environment built and one dry decision run (kernel
  compilation) on a worker thread (:class:`~isr_px4_eval.px4.pilot.BackgroundPilot`) while the
  client streams; the client requests OFFBOARD and arms only when that is done. In flight the
  tick waits at most ``decision_wait_s`` for a decision and otherwise holds the last setpoint,
  so the heartbeat never stops. The worst and 99th-percentile gap between ticks in FLY go into
  the result JSON and the ``EpisodeMetrics``.
- ``direct``: the design card's topic graph: the same :class:`~isr_px4_eval.px4.pilot.PolicyPilot`
  (built and warmed up the same way) flies a vehicle simulated by ``direct_dynamics_node`` (the
  direct model, or ``model:=quadrotor``, the embedded full-fidelity one): it reads
  ``nav_msgs/Odometry`` on ``odom_topic`` and publishes ``geometry_msgs/TwistStamped`` ENU velocity
  / yaw-rate setpoints on ``cmd_topic`` every ``tick_period_s``; the episode ends as in the task.
  Nothing on the policy side differs from the px4 backend: only the vehicle behind the topics.
- ``embedded``: :func:`isr_px4_eval.evaluation.run.evaluate_policy` flies the trained ``policy``
  file on the embedded full-fidelity model (quadrotor + PX4-like cascade) on ``seeds``, on a
  worker thread, and publishes the run live (``live_topics``): ``/drone_<i>/odom``, ``cmd_vel``,
  detections, step metrics, ``/tf`` and simulated time on ``/clock`` (faster than real time),
  through :class:`~isr_sim_bridge.live.LiveSink`: a snapshot at most every ``live_min_interval_s``
  of wall time (default 0.05 s: the run keeps most of its speed; 0 = every step, about 8x real
  time with one drone on 2 cores) and at every episode end.

Either way one ``isr_msgs/EpisodeMetrics`` per finished episode is published on
``metrics_topic`` (reliable, transient local, so a late ``ros2 bag record`` still gets them) and
the JSON result is written to ``output_dir``; then the node shuts down. With ``px4`` the
vehicle's odometry is also republished as ``nav_msgs/Odometry`` (ENU) on ``odom_topic`` for the
sim bridge's camera.

The node logs what it is doing at least every 10 s. Ctrl-C ends it within a tick (work runs on
daemon threads).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from isr_direct_dynamics.config import json_dumps
from isr_direct_dynamics.io_checks import atomic_write_text
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
    "cmd_topic": "/drone_0/cmd_vel",
    "output_dir": "reports/px4_eval",
    "episode_s": 0.0,
    "decision_wait_s": 0.02,
    "live_topics": True,
    "live_min_interval_s": 0.05,
}
"""Parameters and their defaults (also in ``config/px4_eval.yaml``)."""

BACKENDS = ("px4", "direct", "embedded")


def px4_episode_fields(client: Any) -> dict[str, Any]:
    """EpisodeMetrics fields of one offboard episode (PX4 backend)."""
    from isr_px4_eval.px4.offboard import Phase

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
    from rclpy.qos import (
        DurabilityPolicy,
        QoSProfile,
        ReliabilityPolicy,
        qos_profile_sensor_data,
    )

    from isr_direct_dynamics.ros_node import declare_parameters
    from isr_px4_eval.evaluation.fly import make_fly_policy
    from isr_px4_eval.evaluation.run import parse_seeds
    from isr_px4_eval.evidence.recording import EnvRecorder
    from isr_px4_eval.nodes.emulator_node import MSG_CLASSES
    from isr_px4_eval.px4.convert import RclpyTypes
    from isr_px4_eval.px4.offboard import (
        SCRIPTED_POLICIES,
        OffboardClient,
        OffboardClientConfig,
        decode_inbox,
        encode_outbox,
        gap_stats,
    )
    from isr_px4_eval.px4.pilot import (
        BackgroundPilot,
        odometry_from_ros,
        pilot_episode_fields,
    )
    from isr_px4_eval.px4.topics import PX4_IN_QOS, PX4_OUT_QOS, px4_topic_names, rclpy_qos_profile
    from isr_sim_bridge.live import LiveSink
    from isr_sim_bridge.rosmsg import (
        RclpyFactory,
        episode_metrics_msg,
        odometry_msg,
        twist_stamped_msg,
    )

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
            self.t0 = self.last_log = time.perf_counter()
            if p["backend"] == "px4":
                self._setup_px4()
            elif p["backend"] == "direct":
                self._setup_direct()
            else:
                self.status = "starting"
                self.worker = threading.Thread(target=self.run_embedded, daemon=True)
                self.worker.start()
                self.timer = self.create_timer(1.0, self.log_embedded)

        def _every_10_s(self, text: str) -> None:
            now = time.perf_counter()
            if now - self.last_log >= 10.0:
                self.last_log = now
                self.get_logger().info(f"{text} ({now - self.t0:.0f} s)")

        # ---------------------------------------------------------------- px4 backend
        def _setup_px4(self) -> None:
            p = self.p
            self.types = RclpyTypes()
            self.world_seed = parse_seeds(str(p["seeds"]))[0]
            self.scripted = p["policy"] in SCRIPTED_POLICIES
            self.bg = BackgroundPilot(self._build_pilot, wait_s=float(p["decision_wait_s"]))
            self.client = OffboardClient(
                self.bg,
                OffboardClientConfig(
                    tick_period_s=float(p["tick_period_s"]),
                    takeoff_altitude_m=float(p["takeoff_altitude_m"]),
                    fly_duration_s=float(p["fly_duration_s"]),
                    link_timeout_s=float(p["link_timeout_s"]),
                    on_link_loss=p["on_link_loss"],
                ),
                ready=self.bg.ready,
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
            if self.scripted:  # PX4's odometry for the sim bridge (a trained pilot publishes its
                # world-frame odometry itself, with the other live topics)
                self.odom_pub = self.create_publisher(
                    self.factory("nav_msgs/msg/Odometry"), p["odom_topic"], out_qos
                )
            self.timer = self.create_timer(float(p["tick_period_s"]), self.on_tick)
            self.get_logger().info(f"offboard client on {topics}")

        def _build_pilot(self) -> tuple[Any, Any]:
            """Worker thread: the FLY policy.

            A trained one also publishes its episode live, in the world frame (odometry,
            commands, detections, step metrics, metadata: the graph's topics).
            """
            p = self.p
            fly, pilot = make_fly_policy(
                p["policy"], self.world_seed, 0, p["device"], float(p["episode_s"]) or None
            )
            # (with backend direct, direct_dynamics_node owns /drone_0/odom: nothing more here)
            if pilot is not None and p["live_topics"] and p["backend"] == "px4":
                latched = QoSProfile(
                    depth=1,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.TRANSIENT_LOCAL,
                )
                sink = LiveSink(
                    self, self.factory, clock=False, latched={"/isr/metadata": latched},
                    # the camera's topics belong to sim_bridge (camera:=true), which renders
                    skip_topics=("/isr/episode_metrics", "/drone_0/camera/camera_info"),
                )  # fmt: skip
                pilot.recorder = EnvRecorder(
                    pilot.env, None, f"{p['backend']} flight: {p['policy']}", p["backend"],
                    image_drones=[0], sink=sink,
                )  # fmt: skip
            return fly, pilot

        def on_tick(self) -> None:
            """Decode what arrived, tick the client, publish its messages."""
            now_us = self.get_clock().now().nanoseconds // 1000
            inbox, self.pending = decode_inbox(self.pending), []
            phase_before = self.client.phase
            out = self.client.tick(now_us, inbox)
            if inbox.odometry and self.scripted:  # (a trained pilot publishes world-frame odom)
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
                if phase_before.value == "stream":
                    st = self.bg.stats()
                    self.get_logger().info(
                        f"policy ready: build {st['build_s']:.1f} s, "
                        f"warm-up {st['warm_up_s']:.1f} s"
                    )
            if self.client.phase.value == "stream":
                self._every_10_s(
                    "streaming; waiting for the policy (load, build, warm-up)"
                    if not self.bg.ready()
                    else "streaming; waiting for PX4's pre-flight checks to pass"
                )
            elif self.client.phase.value == "fly":
                self._every_10_s(f"flying: {self.client.fly_time_s:.0f} s")
            if self.client.finished and not self.done:
                self.done = True
                reason = self.client.failure_reason or "ok"
                self.get_logger().info(f"episode {self.client.phase.value}: {reason}")
                fields = px4_episode_fields(self.client)
                pilot = self.bg.pilot
                if pilot is not None:
                    fields.update(pilot_episode_fields(pilot, self.world_seed))
                ticks = self.client.tick_interval_stats()
                fields["max_tick_interval_s"] = ticks["max_s"]
                fields["p99_tick_interval_s"] = ticks["p99_s"]
                self.get_logger().info(
                    f"tick gaps in flight: worst {ticks['max_s']:.3f} s, "
                    f"p99 {ticks['p99_s']:.3f} s over {ticks['n']} ticks"
                )
                self.publish_metrics([fields])
                self.write_result(
                    {
                        "backend": "px4",
                        "phase": self.client.phase.value,
                        "failure_reason": self.client.failure_reason,
                        "world_seed": self.world_seed,
                        "tick_intervals_in_fly": ticks,
                        "policy_timing": self.bg.stats(),
                        "episode": None if pilot is None else pilot.episode,
                        "trajectory": None if pilot is None else pilot.trace,
                        "events": [
                            {"t_us": e.t_us, "phase": e.phase.value, "note": e.note}
                            for e in self.client.events
                        ],
                    }
                )

        # ---------------------------------------------------------------- direct (topics)
        def _setup_direct(self) -> None:
            p = self.p
            self.world_seed = parse_seeds(str(p["seeds"]))[0]
            self.bg = BackgroundPilot(self._build_pilot, wait_s=float(p["decision_wait_s"]))
            self.odom: Any = None
            self.fly_start_s: float | None = None
            self.last_tick_s: float | None = None
            self.tick_gaps: list[float] = []
            self.sub = self.create_subscription(
                self.factory("nav_msgs/msg/Odometry"), p["odom_topic"], self.on_odom,
                qos_profile_sensor_data,  # as direct_dynamics_node publishes it (best effort)
            )  # fmt: skip
            self.cmd_pub = self.create_publisher(
                self.factory("geometry_msgs/msg/TwistStamped"), p["cmd_topic"], 10
            )
            self.timer = self.create_timer(float(p["tick_period_s"]), self.on_direct_tick)
            self.get_logger().info(f"flying over {p['odom_topic']} -> {p['cmd_topic']}")

        def on_odom(self, msg: Any) -> None:
            """Keep the newest odometry."""
            self.odom = msg

        def on_direct_tick(self) -> None:
            """Hover until the policy is ready, then one pilot tick; publish the setpoint."""
            now_s = self.get_clock().now().nanoseconds * 1e-9
            if self.done:
                return
            if self.bg.error:  # the policy could not be built (or a step failed): stop, hovering
                self.get_logger().error(self.bg.error)
                self.cmd_pub.publish(
                    twist_stamped_msg(self.factory, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), now_s, "map")
                )
                self.write_result({"backend": "direct", "error": self.bg.error})
                self.done = True
                return
            if self.odom is None or not self.bg.ready():
                self._every_10_s("waiting for odometry and the policy (load, build, warm-up)")
                sp_vel, sp_rate = (0.0, 0.0, 0.0), 0.0
            else:
                if self.fly_start_s is None:
                    self.fly_start_s = now_s
                    st = self.bg.stats()
                    self.get_logger().info(
                        f"policy ready (build {st['build_s']:.1f} s, warm-up "
                        f"{st['warm_up_s']:.1f} s): flying"
                    )
                if self.last_tick_s is not None:
                    self.tick_gaps.append(now_s - self.last_tick_s)
                self.last_tick_s = now_s
                sp = self.bg(odometry_from_ros(self.odom), now_s - self.fly_start_s)
                if sp is None:
                    self.finish_direct(now_s)
                    sp_vel, sp_rate = (0.0, 0.0, 0.0), 0.0
                else:
                    sp_vel, sp_rate = tuple(sp.vel_enu_m_s), sp.yaw_rate_enu_rad_s
                self._every_10_s(f"flying: {now_s - self.fly_start_s:.0f} s")
            self.cmd_pub.publish(
                twist_stamped_msg(self.factory, sp_vel, (0.0, 0.0, sp_rate), now_s, "map")
            )

        def finish_direct(self, now_s: float) -> None:
            """The episode ended: metrics, result file, stop."""
            pilot = self.bg.pilot
            ticks = gap_stats(self.tick_gaps)
            fields = pilot_episode_fields(pilot, self.world_seed) if pilot is not None else {}
            fields["max_tick_interval_s"], fields["p99_tick_interval_s"] = (
                ticks["max_s"], ticks["p99_s"],
            )  # fmt: skip
            self.publish_metrics([fields])
            self.write_result(
                {
                    "backend": "direct",
                    "world_seed": self.world_seed,
                    "tick_intervals": ticks,
                    "policy_timing": self.bg.stats(),
                    "episode": None if pilot is None else pilot.episode,
                    "trajectory": None if pilot is None else pilot.trace,
                }
            )
            self.get_logger().info(f"episode done: {fields}")
            self.done = True

        # ---------------------------------------------------------------- embedded backend
        def _live(self, env: Any) -> Any:
            """The per-step hook that publishes the evaluation live (or None)."""
            self.status = f"flying {env.num_envs} drone(s)"
            if not self.p["live_topics"]:
                return None
            sink = LiveSink(self, self.factory)
            self.live = EnvRecorder(
                env, None, "eval", "full_fidelity", image_drones=[0], sink=sink,
                min_interval_s=float(self.p["live_min_interval_s"]),
            )  # fmt: skip
            return self.live

        def run_embedded(self) -> None:
            """Worker thread: the whole embedded evaluation, then publish, write and stop."""
            from isr_px4_eval.evaluation.run import evaluate_policy, parse_seeds

            try:
                self.status = "loading the policy and building the environment"
                result = evaluate_policy(
                    self.p["policy"], "embedded", parse_seeds(str(self.p["seeds"])),
                    device=self.p["device"], live=self._live,
                )  # fmt: skip
                self.publish_metrics(
                    [embedded_episode_fields(r) for r in result.get("episodes", [])]
                )
                self.write_result(result)
                m = result.get("metrics", {})
                self.get_logger().info(
                    f"embedded evaluation done: return {m.get('return_mean', float('nan')):.1f}, "
                    f"targets found {m.get('targets_found_mean', float('nan')):.3f}"
                )
            except Exception as exc:  # reported; the node then stops
                self.get_logger().error(f"embedded evaluation failed: {type(exc).__name__}: {exc}")
            finally:
                self.done = True

        def log_embedded(self) -> None:
            """Timer: a progress line every 10 s."""
            live = getattr(self, "live", None)
            sim = f", simulated {live.t_s:.0f} s" if live is not None else ""
            self._every_10_s(f"{self.status}{sim}")

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
            atomic_write_text(path, json_dumps(result, indent=2, default=str))
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
