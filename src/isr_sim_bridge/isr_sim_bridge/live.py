"""Live ROS topics of an embedded run: what a bag would hold, published on the ROS graph instead.

:class:`LiveSink` has :class:`~isr_px4_eval.evidence.recording.BagWriter`'s interface (``factory``,
``path``, ``write``, ``flush``, ``close``), so a
:class:`~isr_px4_eval.evidence.recording.BagRecorder` or
:class:`~isr_px4_eval.evidence.recording.EnvRecorder` built with ``sink=LiveSink(node)`` publishes
every message it would write to a bag, on the same topic with the same type (odometry, ``cmd_vel``,
camera image + info, detections, step metrics), through the node's publishers:

- time is simulation time: when a message carries a newer time than the last, a
  ``rosgraph_msgs/Clock`` goes out on ``/clock`` first, so nodes and tools with
  ``use_sim_time:=true`` (RViz, ``ros2 bag record --use-sim-time``) follow a run that is faster
  than real time;
- every ``/drone_<i>/odom`` is also broadcast on ``/tf`` (``map`` -> ``drone_<i>/base_link``);
- ``min_interval_s`` throttles each topic in wall time (a live view of a fast run needs a few
  frames per second, not every step); the clock is never throttled;
- topics in ``skip_topics`` (by default the episode metrics, which the node publishes itself
  with its own QoS) are not published.

rclpy is not imported here: the node (any object with ``create_publisher(cls, topic, qos)``) and
the message factory are passed in, so the sink is tested without ROS with a fake node and the
rosbags message classes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import rosmsg

CLOCK_TOPIC = "/clock"
TF_TOPIC = "/tf"


class LiveSink:
    """Publishes a recorder's messages on a live graph (see the module docstring).

    Args:
        node: the publishing node (``create_publisher(msg_class, topic, qos_depth)``).
        factory: message factory (:class:`~isr_sim_bridge.rosmsg.RclpyFactory` in a node).
        min_interval_s: per-topic minimum wall time between two published messages (0 = all).
        skip_topics: topics never published.
        qos_depth: history depth of the publishers.
    """

    def __init__(
        self,
        node: Any,
        factory: Any,
        min_interval_s: float = 0.0,
        skip_topics: tuple[str, ...] = ("/isr/episode_metrics",),
        qos_depth: int = 10,
        clock: bool = True,
        latched: dict[str, Any] | None = None,
    ) -> None:
        self.node = node
        self.factory = factory
        self.min_interval_s = float(min_interval_s)
        self.skip_topics = set(skip_topics)
        self.qos_depth = int(qos_depth)
        self.clock = bool(clock)
        """Publish ``/clock`` (off where the graph runs on wall time, e.g. a PX4 flight)."""
        self.latched = dict(latched or {})
        """Topic -> QoS profile for topics a late subscriber must still get (e.g. the run's
        ``/isr/metadata`` with a transient-local profile)."""
        self.path = Path("live")
        self.published: dict[str, int] = {}
        """Messages published per topic (the clock and tf included)."""
        self.closed = False
        self._pubs: dict[str, Any] = {}
        self._last_wall: dict[str, float] = {}
        self._clock_ns = -1

    def _publish(self, topic: str, msg: Any) -> None:
        pub = self._pubs.get(topic)
        if pub is None:
            pub = self.node.create_publisher(
                type(msg), topic, self.latched.get(topic, self.qos_depth)
            )
            self._pubs[topic] = pub
        pub.publish(msg)
        self.published[topic] = self.published.get(topic, 0) + 1

    def write(self, topic: str, msg: Any, t_ns: int) -> None:
        """Publish ``msg`` on ``topic`` at simulation time ``t_ns`` (clock first if newer)."""
        if self.closed or topic in self.skip_topics:
            return
        if self.clock and t_ns > self._clock_ns:
            self._clock_ns = int(t_ns)
            f = self.factory
            self._publish(CLOCK_TOPIC, f("rosgraph_msgs/msg/Clock")(
                clock=rosmsg.stamp_from_sim_time(f, t_ns * 1e-9)
            ))  # fmt: skip
        now = time.perf_counter()
        if (
            self.min_interval_s > 0
            and now - self._last_wall.get(topic, -1e18) < self.min_interval_s
        ):
            return
        self._last_wall[topic] = now
        self._publish(topic, msg)
        if topic.endswith("/odom"):
            self._publish(TF_TOPIC, self._tf(msg))

    def _tf(self, odom: Any) -> Any:
        f = self.factory
        p, q = odom.pose.pose.position, odom.pose.pose.orientation
        tf = f("geometry_msgs/msg/TransformStamped")(
            header=odom.header,
            child_frame_id=odom.child_frame_id,
            transform=f("geometry_msgs/msg/Transform")(
                translation=f("geometry_msgs/msg/Vector3")(x=p.x, y=p.y, z=p.z),
                rotation=f("geometry_msgs/msg/Quaternion")(x=q.x, y=q.y, z=q.z, w=q.w),
            ),
        )
        return f("tf2_msgs/msg/TFMessage")(transforms=[tf])

    def flush(self) -> None:
        """Nothing to flush (kept for the BagWriter interface)."""

    def close(self) -> None:
        """Stop publishing (publishers stay with the node)."""
        self.closed = True


class DroneView:
    """A throttled live view of the first drones of a running batched environment.

    Called after environment steps (``view(env)``), it publishes, at most once per
    ``min_interval_s`` of wall time, ``/drone_<i>/odom`` (+ ``/tf`` and ``/clock``) for drones
    ``0..drones-1`` of the first world (at most its drones per world: one world, so that a
    ``sim_bridge_node`` of that world's seed renders their camera views and detections from the
    odometry) through ``sink``; the time stamps are the view's own simulation clock (steps seen x
    ``control_dt_s``, monotonic across resets). Reads the environment's ``vehicle.state``.
    """

    def __init__(self, sink: Any, drones: int = 4, min_interval_s: float = 0.2) -> None:
        self.sink = sink
        self.drones = int(drones)
        self.min_interval_s = float(min_interval_s)
        self.steps = 0
        self.published = 0
        """Snapshots published."""
        self._last = -1e18

    def __call__(self, env: Any) -> None:
        """Count a step; publish a snapshot when the throttle allows."""
        self.steps += 1
        now = time.perf_counter()
        if now - self._last < self.min_interval_s:
            return
        self._last = now
        f = self.sink.factory
        n = min(self.drones, env.drones_per_world)
        t_s = self.steps * float(env.task.control_dt_s)
        t_ns = rosmsg.sim_time_ns(t_s)
        st = env.vehicle.state

        def rows(x: Any) -> Any:
            return x.reshape(env.num_envs, *x.shape[2:])[:n].detach().cpu().numpy()

        pos, quat = rows(st.pos_enu_m), rows(st.quat_wxyz)
        vel, rates = rows(st.vel_enu_m_s), rows(st.body_rates_flu_rad_s)
        for i in range(n):
            self.sink.write(f"/drone_{i}/odom", rosmsg.odometry_msg(
                f, pos[i], quat[i], vel[i], rates[i], t_s, "map", f"drone_{i}/base_link"
            ), t_ns)  # fmt: skip
        self.published += 1


__all__ = ["CLOCK_TOPIC", "TF_TOPIC", "DroneView", "LiveSink"]
