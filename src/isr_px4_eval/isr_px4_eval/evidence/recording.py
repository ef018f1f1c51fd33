"""rosbag2 (MCAP) recording of embedded runs (the reader is :mod:`~isr_px4_eval.evidence.bags`).

Embedded runs (evaluation episodes, training snapshots) are written through rosbags with the
topics and types of the live ROS graph, so ``ros2 bag info``, ``ros2 bag play`` and Foxglove read
them (the message definitions are stored in the MCAP schemas):

=====================================  =====================================  ==================
topic                                  type                                   when
=====================================  =====================================  ==================
``/drone_<i>/camera/image_raw``        ``sensor_msgs/msg/Image`` (rgb8)       rendered steps
``/drone_<i>/camera/camera_info``      ``sensor_msgs/msg/CameraInfo``         rendered steps
``/drone_<i>/detections``              ``vision_msgs/msg/Detection2DArray``   rendered steps:
                                                                              what perception
                                                                              gave the policy
``/drone_<i>/detections_gt``           ``vision_msgs/msg/Detection2DArray``   rendered steps:
                                                                              ground truth
``/drone_<i>/odom``                    ``nav_msgs/msg/Odometry``              every step
``/drone_<i>/cmd_vel``                 ``geometry_msgs/msg/TwistStamped``     every step
``/isr/step_metrics``                  ``diagnostic_msgs/msg/DiagnosticArray`` every step
``/isr/rendered``                      ``std_msgs/msg/Bool``                  every step
``/isr/episode_metrics``               ``isr_msgs/msg/EpisodeMetrics``        episode ends
``/isr/metadata``                      ``std_msgs/msg/String`` (JSON)         once, first
=====================================  =====================================  ==================

``/isr/step_metrics`` (see :func:`isr_sim_bridge.rosmsg.step_metrics_msg`) has one status
``sim`` (``step``, ``fps`` = simulation steps x drones per wall second, ``rendered``,
``ram_mb``, ``vram_mb``, ``phase``) and one status ``drone_<i>`` per drone (``reward``,
``return``, ``targets_found``, ``detections``). ``/isr/metadata`` holds the test name, phase,
world seeds, world of each drone, camera, control period, class names.

Times are simulation time (``t = step * control_dt``), in the header stamps and as the bag's
receive timestamps. The rosbag2 metadata is version 8 (QoS profiles as a YAML string, the form
Humble's rosbag2 parses), storage ``mcap``.

Crash safety: after every step the pending MCAP chunk is closed and the file flushed, so a run
killed mid-way leaves an MCAP file without summary and without ``metadata.yaml``.
:class:`BagSource` reads such a bag record by record up to the cut (and sqlite3 bags without
``metadata.yaml``, as ``ros2 bag record`` on Humble leaves them after a crash).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from isr_direct_dynamics.config import json_dumps
from isr_sim_bridge import rosmsg

BAG_VERSION = 8
"""rosbag2 metadata version written (Humble reads it: QoS profiles serialized as a string)."""

TARGET_CLASS_NAMES: tuple[str, ...] = ("vehicle", "person", "structure")

T_IMAGE = "sensor_msgs/msg/Image"
T_INFO = "sensor_msgs/msg/CameraInfo"
T_DET = "vision_msgs/msg/Detection2DArray"
T_ODOM = "nav_msgs/msg/Odometry"
T_TWIST = "geometry_msgs/msg/TwistStamped"
T_DIAG = "diagnostic_msgs/msg/DiagnosticArray"
T_BOOL = "std_msgs/msg/Bool"
T_STRING = "std_msgs/msg/String"
T_EPISODE = "isr_msgs/msg/EpisodeMetrics"

TOPIC_METADATA = "/isr/metadata"
TOPIC_STEP_METRICS = "/isr/step_metrics"
TOPIC_RENDERED = "/isr/rendered"
TOPIC_EPISODE = "/isr/episode_metrics"


def drone_topic(i: int, name: str) -> str:
    """``/drone_<i>/<name>``."""
    return f"/drone_{i}/{name}"


# ---------------------------------------------------------------------------------------------
# Writing


class BagError(ValueError):
    """A bag that cannot be read (a user error: printed as one ``error:`` line)."""


class BagWriter:
    """rosbag2 MCAP writer with lazily added connections and per-step flushing."""

    def __init__(self, path: str | Path, custom_data: dict[str, str] | None = None) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"bag {self.path} exists already; choose another path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.factory = rosmsg.default_factory()
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        for k, v in (custom_data or {}).items():
            self._writer.set_custom_data(k, v)
        self._writer.open()
        self._conns: dict[str, Any] = {}
        self.closed = False

    def write(self, topic: str, msg: Any, t_ns: int) -> None:
        """Serialize and write ``msg`` on ``topic`` (its connection is added on first use)."""
        conn = self._conns.get(topic)
        if conn is None:
            conn = self._writer.add_connection(
                topic, msg.__msgtype__, typestore=self.factory.typestore
            )
            self._conns[topic] = conn
        self._writer.write(conn, int(t_ns), self.factory.serialize(msg))

    def flush(self) -> None:
        """Close the pending MCAP chunk and flush it to disk (what a crash then keeps)."""
        storage = getattr(self._writer, "storage", None)
        if storage is None:
            return
        chunk = getattr(storage, "chunk", None)
        if chunk is not None and chunk.bio.tell() and hasattr(storage, "close_chunk"):
            storage.close_chunk()
        bio = getattr(storage, "bio", None)
        if bio is not None:
            bio.flush()

    def close(self) -> None:
        """Write the summary and ``metadata.yaml``."""
        if not self.closed:
            self._writer.close()
            self.closed = True


@dataclass
class StepRecord:
    """What one control step of N drones puts in a bag (numpy; see :class:`BagRecorder`)."""

    t_s: float
    step: int
    pos_enu_m: np.ndarray  # (N, 3)
    vel_enu_m_s: np.ndarray  # (N, 3)
    quat_wxyz: np.ndarray  # (N, 4)
    action: np.ndarray | None = None  # (N, 4) normalized [vx, vy, vz, yaw_rate]
    body_rates_flu_rad_s: np.ndarray | None = None  # (N, 3)
    reward: np.ndarray | None = None  # (N,)
    episode_return: np.ndarray | None = None  # (N,)
    targets_found: np.ndarray | None = None  # (N,) count
    rendered: bool = True
    images: np.ndarray | None = None  # (N, H, W, 3) uint8, on rendered steps
    gt: list[dict[str, np.ndarray]] | None = None  # per drone: boxes (K,4), class_ids, ids
    det: list[dict[str, np.ndarray]] | None = None  # per drone: boxes, class_ids, scores, ids
    sim: dict[str, Any] = field(default_factory=dict)  # fps, ram_mb, vram_mb, ...
    active: np.ndarray | None = None  # (N,) bool: drones written this step (default all)


class BagRecorder:
    """Writes :class:`StepRecord` s of N drones as the topics of the module docstring.

    ``metadata`` (JSON-able) goes to ``/isr/metadata`` and, flattened to strings, to the bag's
    ``custom_data``. ``image_drones`` limits the camera topics to some drones (all by default).
    ``sink``: anything with :class:`BagWriter`'s ``factory``, ``path``, ``write``, ``flush`` and
    ``close`` in place of a bag at ``path`` (e.g. ``isr_sim_bridge.live.LiveSink``, which publishes
    the same messages on a live ROS graph).
    """

    def __init__(
        self,
        path: str | Path | None,
        num_drones: int,
        metadata: dict[str, Any] | None = None,
        camera: tuple[int, int, float] | None = None,
        image_drones: Sequence[int] | None = None,
        limits: tuple[float, float, float] = (10.0, 5.0, 90.0),
        world_of_drone: Sequence[int] | None = None,
        class_names: Sequence[str] = TARGET_CLASS_NAMES,
        sink: Any | None = None,
    ) -> None:
        self.num_drones = int(num_drones)
        self.meta = dict(metadata or {})
        self.meta.setdefault("num_drones", self.num_drones)
        self.meta.setdefault("class_names", list(class_names))
        if camera is not None:
            self.meta.setdefault(
                "camera", {"width": camera[0], "height": camera[1], "hfov_deg": camera[2]}
            )
        self.world_of_drone = (
            list(world_of_drone) if world_of_drone is not None else [0] * self.num_drones
        )
        self.meta.setdefault("world_of_drone", self.world_of_drone)
        custom = {
            k: (v if isinstance(v, str) else json_dumps(v))
            for k, v in self.meta.items()
            if k != "world_spec"
        }
        if sink is None and path is None:
            raise ValueError("BagRecorder needs a bag path or a sink")
        self.bag = sink or BagWriter(path, custom_data={"isr_" + k: v for k, v in custom.items()})
        self.f = self.bag.factory
        self.camera = camera
        self.image_drones = (
            list(range(self.num_drones)) if image_drones is None else list(image_drones)
        )
        self.limits = limits
        self.class_names = list(class_names)
        multi_world = len(set(self.world_of_drone)) > 1
        self.map_frame = [f"world_{w}/map" if multi_world else "map" for w in self.world_of_drone]
        self.steps = 0
        self.bag.write(
            TOPIC_METADATA, rosmsg.string_msg(self.f, json_dumps(self.meta, default=str)), 0
        )
        self.bag.flush()

    @property
    def path(self) -> Path:
        """The bag directory."""
        return self.bag.path

    def _dets(self, topic: str, i: int, d: dict[str, np.ndarray], t_s: float, t_ns: int) -> None:
        boxes = np.asarray(d["boxes"], dtype=np.float64).reshape(-1, 4)
        cls = np.asarray(d.get("class_ids", np.zeros(len(boxes))), dtype=np.int64).reshape(-1)
        names = [self.class_names[c] if 0 <= c < len(self.class_names) else str(c) for c in cls]
        msg = rosmsg.detection2d_array_msg(
            self.f, boxes, names, t_s, f"drone_{i}/camera_optical", d.get("scores"), d.get("ids")
        )
        self.bag.write(drone_topic(i, topic), msg, t_ns)

    def add_step(self, s: StepRecord) -> None:
        """Write one step (every topic), then flush."""
        f, n, t_ns = self.f, self.num_drones, rosmsg.sim_time_ns(s.t_s)
        rates = s.body_rates_flu_rad_s if s.body_rates_flu_rad_s is not None else np.zeros((n, 3))
        drones: list[dict[str, Any]] = []
        act = np.ones(n, bool) if s.active is None else np.asarray(s.active, bool)
        for i in range(n):
            if not act[i]:
                drones.append({})
                continue
            odom = rosmsg.odometry_msg(
                f, s.pos_enu_m[i], s.quat_wxyz[i], s.vel_enu_m_s[i], rates[i], s.t_s,
                self.map_frame[i], f"drone_{i}/base_link",
            )  # fmt: skip
            self.bag.write(drone_topic(i, "odom"), odom, t_ns)
            if s.action is not None:
                lin, ang = rosmsg.action_to_twist(s.action[i], *self.limits)
                self.bag.write(
                    drone_topic(i, "cmd_vel"),
                    rosmsg.twist_stamped_msg(f, lin, ang, s.t_s, self.map_frame[i]),
                    t_ns,
                )
            d: dict[str, Any] = {}
            if s.reward is not None:
                d["reward"] = float(s.reward[i])
            if s.episode_return is not None:
                d["return"] = float(s.episode_return[i])
            if s.targets_found is not None:
                d["targets_found"] = int(s.targets_found[i])
            src = s.det if s.det is not None else s.gt
            if src is not None:
                d["detections"] = int(np.asarray(src[i]["boxes"]).reshape(-1, 4).shape[0])
            drones.append(d)
        if s.rendered:
            for i in self.image_drones:
                if not act[i]:
                    continue
                frame = f"drone_{i}/camera_optical"
                if s.images is not None:
                    self.bag.write(
                        drone_topic(i, "camera/image_raw"),
                        rosmsg.image_msg(f, s.images[i], s.t_s, frame),
                        t_ns,
                    )
                if self.camera is not None:
                    w, h, fov = self.camera
                    info = rosmsg.camera_info_msg(f, w, h, fov, s.t_s, frame)
                    self.bag.write(drone_topic(i, "camera/camera_info"), info, t_ns)
            for i in range(n):
                if not act[i]:
                    continue
                if s.gt is not None:
                    self._dets("detections_gt", i, s.gt[i], s.t_s, t_ns)
                if s.det is not None:
                    self._dets("detections", i, s.det[i], s.t_s, t_ns)
        sim = {"step": int(s.step), "rendered": bool(s.rendered), **s.sim}
        self.bag.write(TOPIC_STEP_METRICS, rosmsg.step_metrics_msg(f, s.t_s, sim, drones), t_ns)
        self.bag.write(TOPIC_RENDERED, rosmsg.bool_msg(f, s.rendered), t_ns)
        self.steps += 1
        self.bag.flush()

    def add_episode(self, t_s: float, **fields: Any) -> None:
        """One ``isr_msgs/EpisodeMetrics`` (fields as in the message)."""
        msg = rosmsg.episode_metrics_msg(self.f, t_s, **fields)
        self.bag.write(TOPIC_EPISODE, msg, rosmsg.sim_time_ns(t_s))

    def close(self) -> None:
        """Finish the bag (summary, metadata.yaml)."""
        self.bag.close()

    def __enter__(self) -> BagRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def process_memory_mb() -> tuple[float | None, float | None]:
    """(RSS of this process, CUDA memory allocated by torch) in MiB; None where unknown."""
    ram = None
    try:
        with open("/proc/self/statm") as fh:
            import os

            ram = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        pass
    vram = None
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            vram = torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # noqa: BLE001 - memory readout is best effort
        vram = None
    return ram, vram


class EnvRecorder:
    """Records an :class:`isr_training.env.ISREnv` step by step into a bag.

    Call :meth:`record_reset` after ``env.reset()`` and :meth:`record_step` after each
    ``env.step(action)`` with what it returned. Positions, velocities and attitude come from
    ``env.vehicle.state``; detections from the environment (``detections``: what perception gave
    the policy) and ground truth (``detections_gt``: the perception's ground truth when it is a
    detector, else the same boxes); images from ``env.image`` when the camera renders.
    """

    def __init__(
        self,
        env: Any,
        path: str | Path | None,
        test_name: str = "",
        phase: str = "",
        image_drones: Sequence[int] | None = None,
        metadata: dict[str, Any] | None = None,
        sink: Any | None = None,
        min_interval_s: float = 0.0,
    ) -> None:
        self.env = env
        self.min_interval_s = float(min_interval_s)
        """Write a step only when this much wall time passed since the last written one (or when
        an episode ends); 0 = every step. Bookkeeping (returns, time) still counts every step:
        a throttled live view of a fast run builds only the messages it sends."""
        self._last_emit = -1e18
        n, dpw = env.num_envs, env.drones_per_world
        lim = env.limits
        cam = (
            int(env.perception.image_size[0]),
            int(env.perception.image_size[1]),
            float(env.perception.hfov_deg),
        )
        meta = {
            "test_name": test_name,
            "phase": phase,
            "world_seeds": [int(s) for s in env.world_seeds],
            "num_worlds": int(env.num_worlds),
            "drones_per_world": int(dpw),
            "control_dt_s": float(env.task.control_dt_s),
            "vehicle": str(getattr(env.cfg, "vehicle", "")),
            "perception": str(getattr(env.cfg, "perception", "")),
            "camera_images": env.image is not None,
        }
        try:
            import dataclasses

            meta["world_spec"] = dataclasses.asdict(env.cfg.world)
        except (TypeError, AttributeError):
            pass
        meta.update(metadata or {})
        self.rec = BagRecorder(
            path,
            n,
            meta,
            camera=cam,
            image_drones=image_drones,
            limits=(lim.max_velocity_m_s, lim.max_vertical_velocity_m_s, lim.max_yaw_rate_deg_s),
            world_of_drone=[i // dpw for i in range(n)],
            sink=sink,
        )
        self.dt = float(env.task.control_dt_s)
        self.t_s = 0.0
        self.step = 0
        self.ep_return = np.zeros(n)
        self._wall = time.perf_counter()

    @property
    def path(self) -> Path:
        """The bag directory."""
        return self.rec.path

    def _detections(self) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
        env = self.env
        n = env.num_envs
        tcls = _np(env.world.target_class)  # (W, T)
        dpw = env.drones_per_world

        def from_visible(boxes: Any, visible: Any) -> list[dict[str, np.ndarray]]:
            b = _np(boxes).reshape(n, -1, 4)
            v = _np(visible).reshape(n, -1).astype(bool)
            out = []
            for i in range(n):
                idx = np.nonzero(v[i])[0]
                out.append({"boxes": b[i, idx], "class_ids": tcls[i // dpw][idx], "ids": idx})
            return out

        policy = from_visible(env.det_boxes, env.det_visible)
        per = env.perception
        if hasattr(per, "last_gt_boxes") and hasattr(per, "last_detections"):
            gt = from_visible(per.last_gt_boxes, per.last_gt_visible)
            det = []
            for fr in per.last_detections[:n]:
                det.append(
                    {
                        "boxes": _np(fr.boxes_xyxy).reshape(-1, 4),
                        "class_ids": _np(fr.class_ids).reshape(-1),
                        "scores": _np(fr.scores).reshape(-1),
                    }
                )
            if len(det) == n:
                return gt, det
            return gt, policy
        return policy, policy

    def _state(self) -> dict[str, np.ndarray]:
        st = self.env.vehicle.state
        n = self.env.num_envs
        return {
            "pos_enu_m": _np(st.pos_enu_m).reshape(n, 3).astype(np.float64),
            "vel_enu_m_s": _np(st.vel_enu_m_s).reshape(n, 3).astype(np.float64),
            "quat_wxyz": _np(st.quat_wxyz).reshape(n, 4).astype(np.float64),
            "body_rates_flu_rad_s": _np(st.body_rates_flu_rad_s).reshape(n, 3).astype(np.float64),
        }

    def _images(self) -> np.ndarray | None:
        img = getattr(self.env, "image", None)
        if img is None:
            return None
        return _np(img).reshape(self.env.num_envs, *img.shape[2:])

    def _found(self) -> np.ndarray:
        return _np(self.env.found).reshape(self.env.num_envs, -1).sum(-1)

    def record_reset(self) -> None:
        """The state after ``env.reset()`` (step 0; images and detections if any)."""
        gt, det = self._detections()
        ram, vram = process_memory_mb()
        sim = {k: v for k, v in (("ram_mb", ram), ("vram_mb", vram)) if v is not None}
        self.rec.add_step(
            StepRecord(
                t_s=0.0, step=0, **self._state(), rendered=True, images=self._images(),
                gt=gt, det=det, reward=np.zeros(self.env.num_envs),
                episode_return=self.ep_return.copy(), targets_found=self._found(), sim=sim,
            )
        )  # fmt: skip
        self._wall = time.perf_counter()

    def record_step(
        self,
        action: Any,
        reward: Any,
        terminated: Any,
        truncated: Any,
        info: dict[str, Any],
        fps: float | None = None,
    ) -> None:
        """One ``env.step`` (``fps``: simulation throughput; measured here when None)."""
        n = self.env.num_envs
        now = time.perf_counter()
        if fps is None:
            fps = n / max(now - self._wall, 1e-9)
        self._wall = now
        self.step += 1
        self.t_s = self.step * self.dt
        r = _np(reward).reshape(n).astype(np.float64)
        done = _np(info.get("done", np.zeros(n, bool))).reshape(n).astype(bool)
        ep = info.get("episode", {})
        self.ep_return += r
        if self.min_interval_s > 0 and not done.any():
            if now - self._last_emit < self.min_interval_s:
                return
        self._last_emit = now
        rendered = bool(info.get("rendered", True))
        gt, det = self._detections() if rendered else (None, None)
        ram, vram = process_memory_mb()
        sim: dict[str, Any] = {"fps": float(fps)}
        if ram is not None:
            sim["ram_mb"] = ram
        if vram is not None:
            sim["vram_mb"] = vram
        found = self._found()
        if done.any() and "targets_found" in ep:
            # the env reset these drones already: show the count at the end of the episode
            frac = _np(ep["targets_found"]).reshape(n)
            tgt = _np(self.env.num_targets)
            found = np.where(
                done, np.round(frac * tgt[np.arange(n) // self.env.drones_per_world]), found
            )
        self.rec.add_step(
            StepRecord(
                t_s=self.t_s, step=self.step, **self._state(), action=_np(action).reshape(n, 4),
                reward=r, episode_return=self.ep_return.copy(), targets_found=found,
                rendered=rendered, images=self._images() if rendered else None, gt=gt, det=det,
                sim=sim,
            )
        )  # fmt: skip
        term = _np(terminated).reshape(n).astype(bool)
        trunc = _np(truncated).reshape(n).astype(bool)
        for i in np.nonzero(done)[0]:
            e = {k: float(_np(v).reshape(n)[i]) for k, v in ep.items() if not k.startswith("r/")}
            self.rec.add_episode(
                self.t_s,
                world_index=i // self.env.drones_per_world,
                drone_index=i,
                episode_return=e.get("return", self.ep_return[i]),
                episode_length_s=e.get("length", 0.0) * self.dt,
                targets_found_fraction=e.get("targets_found", 0.0),
                coverage_fraction=e.get("coverage", 0.0),
                collisions=int(e.get("collisions", 0)),
                geofence_breaches=int(e.get("geofence_breaches", 0)),
                safety_interventions=int(e.get("safety_interventions", 0)),
                time_to_first_detection_s=e.get("time_to_first_detection_s", float("nan")),
                terminated=bool(term[i]),
                truncated=bool(trunc[i]),
            )
            self.ep_return[i] = 0.0

    def close(self) -> None:
        """Finish the bag."""
        self.rec.close()


def record_policy_run(
    env: Any,
    policy: Any,
    steps: int,
    path: str | Path,
    test_name: str = "",
    phase: str = "",
    image_drones: Sequence[int] | None = None,
    seed: int | None = None,
) -> Path:
    """Reset ``env``, run ``policy(obs) -> action (N, 4)`` for ``steps`` steps, record; the bag."""
    import torch

    rec = EnvRecorder(env, path, test_name=test_name, phase=phase, image_drones=image_drones)
    try:
        obs = env.reset(seed=seed)
        rec.record_reset()
        with torch.no_grad():
            for _ in range(int(steps)):
                action = policy(obs)
                obs, reward, term, trunc, info = env.step(action)
                rec.record_step(action, reward, term, trunc, info)
    finally:
        rec.close()
    return rec.path
