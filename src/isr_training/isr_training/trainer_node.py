"""ROS 2 node ``trainer``: runs a training job from a config and publishes its progress.

The job is :func:`isr_training.pipeline.run_pipeline` (the same as ``isr train``) on a worker
thread, one stage at a time; a 1 Hz timer publishes ``isr_msgs/TrainingProgress``: while the RL
stage runs, its live step count, env-steps/s (updates included), mean episode return and targets
found (``Experiment.live``, updated every PPO iteration); after a stage, that stage's totals.
Every 10 s the node also logs a progress line. When the job ends the node publishes a last
message and shuts down; a failure is logged with its message. Ctrl-C stops it at once (the job
thread is a daemon; finished stages and checkpoints are on disk, ``isr train --resume`` goes on).

Written against rclpy's documented API (Humble); not run on the build machine (no ROS 2). The
pipeline itself is tested without ROS.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from isr_direct_dynamics.ros_node import run_node

DEFAULT_PARAMETERS: dict[str, Any] = {
    "preset": "quick",
    "config": "",
    "overrides": [""],
    "num_drones": 0,
    "experiments_dir": "experiments",
    "progress_topic": "/isr/training_progress",
    "view_drones": 4,
    "view_min_interval_s": 0.2,
}
"""Parameters and their defaults (also in ``config/trainer.yaml``). ``num_drones > 0`` sets
``env.drones_per_world``; ``overrides`` are ``key=value`` strings as for ``isr train --set``;
``view_drones`` (0 = off) drones of the first training world are published live during RL
(``/drone_<i>/odom``, ``/tf``, ``/clock``) at most every
``view_min_interval_s`` (:class:`isr_sim_bridge.live.DroneView`)."""


def build_overrides(overrides: list[str], num_drones: int) -> list[str]:
    """The ``--set`` overrides of the job (empty strings dropped, ``num_drones`` added)."""
    out = [o for o in overrides if o]
    if num_drones > 0:
        out.append(f"env.drones_per_world={int(num_drones)}")
    out.append("progress=false")
    return out


def progress_fields(
    stage: str, info: dict[str, Any] | None, live: dict[str, Any] | None = None
) -> dict[str, Any]:
    """TrainingProgress fields of ``stage``.

    From the running stage's ``live`` progress when it is ``stage``'s, else from a finished
    stage's info (``exp.stage_info``) or None.
    """
    if live and live.get("stage") == stage:
        return {
            "stage": stage,
            "env_steps": int(live.get("env_steps", 0)),
            "total_env_steps": int(live.get("total_env_steps", 0)),
            "env_steps_per_s": float(live.get("env_steps_per_s", 0.0)),
            "mean_episode_return": float(live.get("mean_episode_return", float("nan"))),
            "targets_found_fraction": float(live.get("targets_found", float("nan"))),
        }
    res = (info or {}).get("result") or {}
    steps = int(res.get("env_steps", res.get("global_step", 0)) or 0)
    wall = float((info or {}).get("wall_s", 0.0) or 0.0)
    return {
        "stage": stage,
        "env_steps": steps,
        "total_env_steps": int(res.get("total_env_steps", steps) or steps),
        "env_steps_per_s": steps / wall if wall > 0 and steps else 0.0,
        "mean_episode_return": float(res.get("mean_episode_return", float("nan"))),
        "targets_found_fraction": float(res.get("targets_found", float("nan"))),
    }


def make_node_class() -> type:
    """The rclpy ``Node`` subclass (imports rclpy)."""
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from isr_direct_dynamics.ros_node import declare_parameters

    from .pipeline import STAGES, Experiment, resolve_config, run_pipeline

    class TrainerNode(Node):
        """Runs one training job; publishes progress."""

        def __init__(self) -> None:
            super().__init__("trainer")
            p = declare_parameters(self, DEFAULT_PARAMETERS)
            from isr_msgs.msg import TrainingProgress

            self.msg_cls = TrainingProgress
            qos = QoSProfile(
                depth=10,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL,
            )
            self.pub = self.create_publisher(TrainingProgress, p["progress_topic"], qos)
            cfg = resolve_config(
                p["preset"] or None,
                build_overrides(list(p["overrides"]), int(p["num_drones"])),
                p["config"] or None,
            )
            self.exp = Experiment.create(cfg, p["experiments_dir"])
            if int(p["view_drones"]) > 0:
                from isr_sim_bridge.live import DroneView, LiveSink
                from isr_sim_bridge.rosmsg import RclpyFactory

                self.view = DroneView(
                    LiveSink(self, RclpyFactory()),
                    int(p["view_drones"]),
                    float(p["view_min_interval_s"]),
                )
                self.exp.step_hook = self.view
            self.stage = "starting"
            self.fields: dict[str, Any] = progress_fields(self.stage, None)
            self.error = ""
            self.done = False
            self.t0 = self.last_log = time.perf_counter()
            self.worker = threading.Thread(target=self.run_job, args=(STAGES,), daemon=True)
            self.worker.start()
            self.timer = self.create_timer(1.0, self.publish_progress)
            self.get_logger().info(f"training into {self.exp.root}")

        def run_job(self, stages: tuple[str, ...]) -> None:
            """Worker thread: the stages in order."""
            try:
                for s in stages:
                    self.stage = s
                    run_pipeline(self.exp, [s])
                    self.fields = progress_fields(s, self.exp.stage_info(s))
                # the last message: the RL totals and the final policy's test-world score
                final = progress_fields("rl", self.exp.stage_info("rl"))
                found = (self.exp.stage_info("finalize").get("result") or {}).get("targets_found")
                if found is not None:
                    final["targets_found_fraction"] = float(found)
                self.fields = final
            except Exception as exc:  # reported, the node then stops
                self.error = f"{type(exc).__name__}: {exc}"
            finally:
                self.done = True

        def publish_progress(self) -> None:
            """One TrainingProgress message (and a log line every 10 s)."""
            if not self.done:
                live = progress_fields(self.stage, None, self.exp.live)
                if live["stage"] == self.stage and self.exp.live.get("stage") == self.stage:
                    self.fields = live
            now = time.perf_counter()
            if now - self.last_log >= 10.0 and not self.done:
                self.last_log = now
                f = self.fields
                self.get_logger().info(
                    f"{self.stage}: {f['env_steps']}/{f['total_env_steps']} env-steps, "
                    f"{f['env_steps_per_s']:.0f}/s, return {f['mean_episode_return']:.1f}, "
                    f"found {f['targets_found_fraction']:.2f} ({now - self.t0:.0f} s)"
                )
            msg = self.msg_cls()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.experiment = self.exp.root.name
            msg.stage = self.stage if not self.done else ("failed" if self.error else "done")
            for k in ("env_steps", "total_env_steps", "env_steps_per_s"):
                setattr(msg, k, self.fields[k])
            msg.mean_episode_return = self.fields["mean_episode_return"]
            msg.targets_found_fraction = self.fields["targets_found_fraction"]
            self.pub.publish(msg)

    return TrainerNode


def _finish(node: Any) -> None:
    node.publish_progress()
    if node.error:
        node.get_logger().error(node.error)


def main(args: list[str] | None = None) -> None:
    """Console script ``trainer_node``."""
    run_node(make_node_class(), args, until_done=True, spin_timeout_s=0.2, finish=_finish)


__all__ = ["DEFAULT_PARAMETERS", "build_overrides", "main", "make_node_class", "progress_fields"]
