"""Standard ROS 2 messages of the ISR graph, built once for two backends.

The builders (:func:`image_msg`, :func:`camera_info_msg`, :func:`detection2d_array_msg`,
:func:`odometry_msg`, :func:`twist_stamped_msg`, :func:`step_metrics_msg`, ...) take numpy
values and a :class:`MessageFactory` that maps a type name such as ``"sensor_msgs/msg/Image"``
to a constructor:

- :class:`TypestoreFactory`: the dataclasses of a rosbags typestore (ROS 2 Humble, plus
  ``vision_msgs`` 4.x of Humble and ``isr_msgs`` registered from their ``.msg`` text, see
  :func:`isr_typestore`), used to write rosbag2 files without ROS;
- :class:`RclpyFactory`: the rclpy message classes (``<pkg>.msg`` imported lazily), used by the
  ROS nodes.

rosbags classes are dataclasses that need every field, so the builders always pass every field;
rclpy classes accept the same keyword arguments. The two differ in array fields only (numpy for
rosbags, ``array.array`` for rclpy sequences), which the factory converts.

Readers (:func:`image_to_numpy`, :func:`detections_to_numpy`, :func:`odometry_to_numpy`, ...)
turn a message of either backend back into numpy, for the video and report code.

Conventions: times are simulation seconds (``stamp_from_sim_time``); poses and twists are ENU in
``frame_id`` (``"map"``) with ``child_frame_id`` the drone's body frame (FLU,
``"drone_<i>/base_link"``); twist of an odometry is in the child frame as REP 105 says, twist of a
``cmd_vel`` TwistStamped is the world ENU velocity setpoint in ``"map"``; images are ``rgb8``.
"""

from __future__ import annotations

import array
import functools
import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# ---------------------------------------------------------------------------------------------
# Message definitions not in the rosbags ROS 2 Humble store

VISION_MSGS_HUMBLE: dict[str, str] = {
    # vision_msgs 4.1.1 (ros-perception/vision_msgs, branch ros2, the Humble release);
    # field lines only.
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": (
        "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n"
    ),
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection2DArray": (
        "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n"
    ),
}
"""``vision_msgs`` types used here, in dependency order."""

ISR_MSGS_NAMES: tuple[str, ...] = ("EpisodeMetrics", "TrainingProgress")


def isr_msgs_dir() -> Path | None:
    """The ``msg`` folder of ``isr_msgs``: source tree, or an installed ament share folder."""
    candidates = [Path(__file__).resolve().parents[2] / "isr_msgs" / "msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "isr_msgs" / "msg")
    for c in candidates:
        if (c / "EpisodeMetrics.msg").is_file():
            return c
    return None


@functools.lru_cache(maxsize=1)
def isr_typestore() -> Any:
    """The rosbags typestore of ROS 2 Humble + vision_msgs (Humble) + isr_msgs (cached)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict[str, Any] = {}
    for name, text in VISION_MSGS_HUMBLE.items():
        types.update(get_types_from_msg(text, name))
    folder = isr_msgs_dir()
    if folder is None:
        raise FileNotFoundError("isr_msgs/msg not found (source tree or AMENT_PREFIX_PATH)")
    for name in ISR_MSGS_NAMES:
        types.update(
            get_types_from_msg((folder / f"{name}.msg").read_text(), f"isr_msgs/msg/{name}")
        )
    store.register(types)
    return store


# ---------------------------------------------------------------------------------------------
# Factories


class MessageFactory(Protocol):
    """Maps a ROS type name to a constructor and converts array fields for that backend."""

    def __call__(self, msgtype: str) -> Callable[..., Any]:
        """The class of ``msgtype`` (``"pkg/msg/Name"``); called with every field by keyword."""

    def uint8_seq(self, data: np.ndarray) -> Any:
        """A ``uint8[]`` field value."""

    def float64_seq(self, data: Sequence[float] | np.ndarray) -> Any:
        """A ``float64[]`` field value."""

    def float64_array(self, data: Sequence[float] | np.ndarray) -> Any:
        """A fixed-size ``float64[N]`` field value."""

    def byte(self, value: int) -> Any:
        """A ``byte`` field value (e.g. ``DiagnosticStatus.level``)."""


class TypestoreFactory:
    """Constructors from a rosbags typestore (default :func:`isr_typestore`)."""

    def __init__(self, typestore: Any | None = None) -> None:
        self.typestore = typestore if typestore is not None else isr_typestore()

    def __call__(self, msgtype: str) -> Callable[..., Any]:
        """The class of ``msgtype``."""
        try:
            return self.typestore.types[msgtype]
        except KeyError:
            raise KeyError(f"message type {msgtype!r} is not in the typestore") from None

    def uint8_seq(self, data: np.ndarray) -> Any:
        """A ``uint8[]`` value."""
        return np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)

    def float64_seq(self, data: Sequence[float] | np.ndarray) -> Any:
        """A ``float64[]`` value."""
        return np.asarray(data, dtype=np.float64).reshape(-1)

    def float64_array(self, data: Sequence[float] | np.ndarray) -> Any:
        """A ``float64[N]`` value."""
        return np.asarray(data, dtype=np.float64).reshape(-1)

    def byte(self, value: int) -> Any:
        """A ``byte`` value (an int for rosbags)."""
        return int(value)

    def serialize(self, msg: Any) -> bytes:
        """CDR bytes of ``msg`` (its type name is read from the instance)."""
        return bytes(self.typestore.serialize_cdr(msg, msg.__msgtype__))

    def deserialize(self, data: bytes, msgtype: str) -> Any:
        """Message of CDR bytes."""
        return self.typestore.deserialize_cdr(data, msgtype)


class RclpyFactory:
    """Constructors from the rclpy message packages, imported on first use."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __call__(self, msgtype: str) -> Callable[..., Any]:
        """The class of ``msgtype``."""
        cls = self._cache.get(msgtype)
        if cls is None:
            pkg, kind, name = msgtype.split("/")
            cls = getattr(importlib.import_module(f"{pkg}.{kind}"), name)
            self._cache[msgtype] = cls
        return cls

    def uint8_seq(self, data: np.ndarray) -> Any:
        """A ``uint8[]`` value."""
        return array.array("B", np.ascontiguousarray(data, dtype=np.uint8).tobytes())

    def float64_seq(self, data: Sequence[float] | np.ndarray) -> Any:
        """A ``float64[]`` value."""
        return array.array("d", np.asarray(data, dtype=np.float64).reshape(-1).tobytes())

    def float64_array(self, data: Sequence[float] | np.ndarray) -> Any:
        """A ``float64[N]`` value."""
        return np.asarray(data, dtype=np.float64).reshape(-1)

    def byte(self, value: int) -> Any:
        """A ``byte`` value (rclpy wants one byte of ``bytes``)."""
        return bytes([int(value) & 0xFF])


@functools.lru_cache(maxsize=1)
def default_factory() -> TypestoreFactory:
    """The rosbags factory on :func:`isr_typestore` (cached)."""
    return TypestoreFactory()


# ---------------------------------------------------------------------------------------------
# Builders


def stamp_from_sim_time(f: MessageFactory, t_s: float) -> Any:
    """``builtin_interfaces/Time`` of ``t_s`` seconds (>= 0)."""
    ns = int(round(max(float(t_s), 0.0) * 1e9))
    return f("builtin_interfaces/msg/Time")(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def sim_time_ns(t_s: float) -> int:
    """Nanoseconds of ``t_s`` seconds, as a bag timestamp."""
    return int(round(max(float(t_s), 0.0) * 1e9))


def header_msg(f: MessageFactory, t_s: float, frame_id: str) -> Any:
    """``std_msgs/Header`` at sim time ``t_s``."""
    return f("std_msgs/msg/Header")(stamp=stamp_from_sim_time(f, t_s), frame_id=frame_id)


def stamp_to_sec(stamp: Any) -> float:
    """Seconds of a ``builtin_interfaces/Time``."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def image_msg(f: MessageFactory, image: np.ndarray, t_s: float, frame_id: str) -> Any:
    """``sensor_msgs/Image`` (``rgb8``) of an ``(H, W, 3) uint8`` array."""
    img = np.ascontiguousarray(image, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {tuple(img.shape)}")
    h, w = img.shape[:2]
    return f("sensor_msgs/msg/Image")(
        header=header_msg(f, t_s, frame_id),
        height=h,
        width=w,
        encoding="rgb8",
        is_bigendian=0,
        step=w * 3,
        data=f.uint8_seq(img),
    )


def pinhole_k(
    width: int, height: int, hfov_deg: float, vfov_deg: float | None = None
) -> np.ndarray:
    """3x3 intrinsics of a pinhole camera from its fields of view (square pixels by default).

    The renderer's convention (:func:`isr_sim_bridge.camera.camera_intrinsics`, OpenCV/ROS): the
    principal point is the image centre in pixel-centre coordinates, ``cx = (width - 1) / 2``,
    ``cy = (height - 1) / 2`` (pixel ``u`` covers ``[u - 0.5, u + 0.5]``).
    """
    fx = 0.5 * width / np.tan(np.radians(hfov_deg) / 2.0)
    fy = fx if vfov_deg is None else 0.5 * height / np.tan(np.radians(vfov_deg) / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def camera_info_msg(
    f: MessageFactory,
    width: int,
    height: int,
    hfov_deg: float,
    t_s: float,
    frame_id: str,
    vfov_deg: float | None = None,
) -> Any:
    """``sensor_msgs/CameraInfo`` of an ideal pinhole camera (``plumb_bob``, zero distortion)."""
    k = pinhole_k(width, height, hfov_deg, vfov_deg)
    p = np.zeros((3, 4))
    p[:, :3] = k
    roi = f("sensor_msgs/msg/RegionOfInterest")(
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return f("sensor_msgs/msg/CameraInfo")(
        header=header_msg(f, t_s, frame_id),
        height=int(height),
        width=int(width),
        distortion_model="plumb_bob",
        d=f.float64_seq(np.zeros(5)),
        k=f.float64_array(k.reshape(-1)),
        r=f.float64_array(np.eye(3).reshape(-1)),
        p=f.float64_array(p.reshape(-1)),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def _point(f: MessageFactory, xyz: Sequence[float]) -> Any:
    return f("geometry_msgs/msg/Point")(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def _vector3(f: MessageFactory, xyz: Sequence[float]) -> Any:
    return f("geometry_msgs/msg/Vector3")(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def _quaternion(f: MessageFactory, wxyz: Sequence[float]) -> Any:
    return f("geometry_msgs/msg/Quaternion")(
        x=float(wxyz[1]), y=float(wxyz[2]), z=float(wxyz[3]), w=float(wxyz[0])
    )


def _pose(f: MessageFactory, pos: Sequence[float], quat_wxyz: Sequence[float]) -> Any:
    return f("geometry_msgs/msg/Pose")(
        position=_point(f, pos), orientation=_quaternion(f, quat_wxyz)
    )


def _twist(f: MessageFactory, lin: Sequence[float], ang: Sequence[float]) -> Any:
    return f("geometry_msgs/msg/Twist")(linear=_vector3(f, lin), angular=_vector3(f, ang))


def detection2d_array_msg(
    f: MessageFactory,
    boxes_xyxy_px: np.ndarray,
    class_names: Sequence[str],
    t_s: float,
    frame_id: str,
    scores: Sequence[float] | np.ndarray | None = None,
    target_ids: Sequence[int] | np.ndarray | None = None,
) -> Any:
    """``vision_msgs/Detection2DArray`` of ``(N, 4)`` pixel boxes ``x0, y0, x1, y1``.

    ``class_id`` of each hypothesis is the class name (``vehicle``, ``person``, ``structure``);
    ``id`` is the target id (ground truth, or the tracker id of the detector) or ``""``.
    """
    boxes = np.asarray(boxes_xyxy_px, dtype=np.float64).reshape(-1, 4)
    n = boxes.shape[0]
    if len(class_names) != n:
        raise ValueError(f"{n} boxes but {len(class_names)} class names")
    sc = np.ones(n) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    header = header_msg(f, t_s, frame_id)
    zero_cov = f.float64_array(np.zeros(36))
    dets = []
    for k in range(n):
        x0, y0, x1, y1 = boxes[k]
        pose2d = f("vision_msgs/msg/Pose2D")(
            position=f("vision_msgs/msg/Point2D")(x=0.5 * (x0 + x1), y=0.5 * (y0 + y1)), theta=0.0
        )
        bbox = f("vision_msgs/msg/BoundingBox2D")(
            center=pose2d, size_x=float(x1 - x0), size_y=float(y1 - y0)
        )
        hyp = f("vision_msgs/msg/ObjectHypothesisWithPose")(
            hypothesis=f("vision_msgs/msg/ObjectHypothesis")(
                class_id=str(class_names[k]), score=float(sc[k])
            ),
            pose=f("geometry_msgs/msg/PoseWithCovariance")(
                pose=_pose(f, (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0)), covariance=zero_cov
            ),
        )
        dets.append(
            f("vision_msgs/msg/Detection2D")(
                header=header,
                results=[hyp],
                bbox=bbox,
                id="" if target_ids is None else str(int(target_ids[k])),
            )
        )
    return f("vision_msgs/msg/Detection2DArray")(header=header, detections=dets)


def odometry_msg(
    f: MessageFactory,
    pos_enu_m: Sequence[float],
    quat_wxyz: Sequence[float],
    vel_enu_m_s: Sequence[float],
    body_rates_flu_rad_s: Sequence[float],
    t_s: float,
    frame_id: str = "map",
    child_frame_id: str = "base_link",
) -> Any:
    """``nav_msgs/Odometry``: ENU pose; twist in the body (child) frame, as REP 105 says."""
    q = np.asarray(quat_wxyz, dtype=np.float64)
    v_body = quat_rotate_inverse(q, np.asarray(vel_enu_m_s, dtype=np.float64))
    zero_cov = f.float64_array(np.zeros(36))
    return f("nav_msgs/msg/Odometry")(
        header=header_msg(f, t_s, frame_id),
        child_frame_id=child_frame_id,
        pose=f("geometry_msgs/msg/PoseWithCovariance")(
            pose=_pose(f, pos_enu_m, q), covariance=zero_cov
        ),
        twist=f("geometry_msgs/msg/TwistWithCovariance")(
            twist=_twist(f, v_body, body_rates_flu_rad_s), covariance=zero_cov
        ),
    )


def twist_stamped_msg(
    f: MessageFactory,
    linear: Sequence[float],
    angular: Sequence[float],
    t_s: float,
    frame_id: str = "map",
) -> Any:
    """``geometry_msgs/TwistStamped`` (a velocity setpoint: ENU m/s and rad/s)."""
    return f("geometry_msgs/msg/TwistStamped")(
        header=header_msg(f, t_s, frame_id), twist=_twist(f, linear, angular)
    )


def action_to_twist(
    action: Sequence[float],
    max_velocity_m_s: float = 10.0,
    max_vertical_velocity_m_s: float = 5.0,
    max_yaw_rate_deg_s: float = 90.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalized action ``[vx, vy, vz, yaw_rate]`` -> (ENU linear m/s, angular rad/s)."""
    a = np.clip(np.nan_to_num(np.asarray(action, dtype=np.float64)), -1.0, 1.0)
    lin = np.array(
        [a[0] * max_velocity_m_s, a[1] * max_velocity_m_s, a[2] * max_vertical_velocity_m_s]
    )
    ang = np.array([0.0, 0.0, np.radians(a[3] * max_yaw_rate_deg_s)])
    return lin, ang


def key_values(f: MessageFactory, values: dict[str, Any]) -> list[Any]:
    """``diagnostic_msgs/KeyValue`` list (floats with 6 significant digits)."""
    kv = f("diagnostic_msgs/msg/KeyValue")
    out = []
    for k, v in values.items():
        if isinstance(v, bool):
            s = "true" if v else "false"
        elif isinstance(v, float | np.floating):
            s = f"{float(v):.6g}"
        else:
            s = str(v)
        out.append(kv(key=str(k), value=s))
    return out


def step_metrics_msg(
    f: MessageFactory,
    t_s: float,
    sim: dict[str, Any],
    drones: Sequence[dict[str, Any]] = (),
    frame_id: str = "map",
) -> Any:
    """Per-step metrics as ``diagnostic_msgs/DiagnosticArray``.

    One status named ``sim`` carries the step-wide values (``step``, ``fps``, ``rendered``,
    ``ram_mb``, ``vram_mb``, ...), then one status ``drone_<i>`` per drone (``reward``,
    ``return``, ``targets_found``, ``detections``, ...). Values are strings (the message's
    type); :func:`step_metrics_to_dict` parses them back.
    """
    st = f("diagnostic_msgs/msg/DiagnosticStatus")
    ok = f.byte(0)  # DiagnosticStatus.OK
    status = [st(level=ok, name="sim", message="", hardware_id="isr", values=key_values(f, sim))]
    for i, d in enumerate(drones):
        status.append(
            st(level=ok, name=f"drone_{i}", message="", hardware_id="isr", values=key_values(f, d))
        )
    return f("diagnostic_msgs/msg/DiagnosticArray")(
        header=header_msg(f, t_s, frame_id), status=status
    )


def string_msg(f: MessageFactory, text: str) -> Any:
    """``std_msgs/String``."""
    return f("std_msgs/msg/String")(data=text)


def bool_msg(f: MessageFactory, value: bool) -> Any:
    """``std_msgs/Bool``."""
    return f("std_msgs/msg/Bool")(data=bool(value))


def episode_metrics_msg(f: MessageFactory, t_s: float, frame_id: str = "map", **fields: Any) -> Any:
    """``isr_msgs/EpisodeMetrics``; missing fields are zero (NaN for the first detection time)."""
    defaults: dict[str, Any] = {
        "world_index": 0,
        "drone_index": 0,
        "episode_return": 0.0,
        "episode_length_s": 0.0,
        "targets_found_fraction": 0.0,
        "coverage_fraction": 0.0,
        "collisions": 0,
        "geofence_breaches": 0,
        "safety_interventions": 0,
        "time_to_first_detection_s": float("nan"),
        "terminated": False,
        "truncated": False,
        "max_tick_interval_s": 0.0,
        "p99_tick_interval_s": 0.0,
    }
    unknown = set(fields) - set(defaults)
    if unknown:
        raise ValueError(f"unknown EpisodeMetrics fields: {sorted(unknown)}")
    defaults.update(fields)
    for k in (
        "world_index",
        "drone_index",
        "collisions",
        "geofence_breaches",
        "safety_interventions",
    ):
        defaults[k] = int(defaults[k])
    for k in ("terminated", "truncated"):
        defaults[k] = bool(defaults[k])
    for k in (
        "episode_return",
        "episode_length_s",
        "targets_found_fraction",
        "coverage_fraction",
        "time_to_first_detection_s",
        "max_tick_interval_s",
        "p99_tick_interval_s",
    ):
        defaults[k] = float(defaults[k])
    return f("isr_msgs/msg/EpisodeMetrics")(header=header_msg(f, t_s, frame_id), **defaults)


# ---------------------------------------------------------------------------------------------
# Readers (either backend)


def quat_rotate_inverse(q_wxyz: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate world vector ``v`` into the body frame of unit quaternion ``q`` (w, x, y, z)."""
    w, x, y, z = (float(c) for c in q_wxyz)
    r = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )
    return r.T @ v


def quat_rotate(q_wxyz: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate body vector ``v`` into the world frame."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    return quat_rotate_inverse(np.array([q[0], -q[1], -q[2], -q[3]]), v)


def image_to_numpy(msg: Any) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB of an Image (``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``)."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    raw = np.frombuffer(
        bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, np.uint8
    )
    enc = str(msg.encoding).lower()
    ch = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8uc3": 3, "8uc1": 1}.get(enc)
    if ch is None:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}")
    rows = raw[: h * step].reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    if ch == 1:
        return np.repeat(rows, 3, axis=2)
    if enc.startswith("bgr"):
        rows = rows[:, :, 2::-1]
    return np.ascontiguousarray(rows[:, :, :3])


def detections_to_numpy(msg: Any) -> dict[str, Any]:
    """Boxes ``(N, 4)`` xyxy px, ``class_names``, ``scores (N,)``, ``ids`` (strings)."""
    boxes, names, scores, ids = [], [], [], []
    for d in msg.detections:
        cx, cy = float(d.bbox.center.position.x), float(d.bbox.center.position.y)
        sx, sy = float(d.bbox.size_x), float(d.bbox.size_y)
        boxes.append([cx - sx / 2, cy - sy / 2, cx + sx / 2, cy + sy / 2])
        if d.results:
            best = max(d.results, key=lambda r: float(r.hypothesis.score))
            names.append(str(best.hypothesis.class_id))
            scores.append(float(best.hypothesis.score))
        else:
            names.append("")
            scores.append(1.0)
        ids.append(str(d.id))
    return {
        "boxes_xyxy_px": np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        "class_names": names,
        "scores": np.asarray(scores, dtype=np.float64),
        "ids": ids,
        "t_s": stamp_to_sec(msg.header.stamp),
    }


def odometry_to_numpy(msg: Any) -> dict[str, np.ndarray | float]:
    """``pos_enu_m``, ``quat_wxyz``, ``vel_enu_m_s`` (rotated back to the world), ``body_rates``."""
    p, o = msg.pose.pose.position, msg.pose.pose.orientation
    q = np.array([o.w, o.x, o.y, o.z], dtype=np.float64)
    lin, ang = msg.twist.twist.linear, msg.twist.twist.angular
    v_body = np.array([lin.x, lin.y, lin.z], dtype=np.float64)
    return {
        "pos_enu_m": np.array([p.x, p.y, p.z], dtype=np.float64),
        "quat_wxyz": q,
        "vel_enu_m_s": quat_rotate(q, v_body) if np.linalg.norm(q) > 0 else v_body,
        "body_rates_flu_rad_s": np.array([ang.x, ang.y, ang.z], dtype=np.float64),
        "t_s": stamp_to_sec(msg.header.stamp),
    }


def twist_to_numpy(msg: Any) -> dict[str, np.ndarray | float]:
    """``linear``, ``angular`` of a TwistStamped (or a Twist: then ``t_s`` is NaN)."""
    tw = msg.twist if hasattr(msg, "twist") else msg
    t = stamp_to_sec(msg.header.stamp) if hasattr(msg, "header") else float("nan")
    return {
        "linear": np.array([tw.linear.x, tw.linear.y, tw.linear.z], dtype=np.float64),
        "angular": np.array([tw.angular.x, tw.angular.y, tw.angular.z], dtype=np.float64),
        "t_s": t,
    }


def parse_value(s: str) -> Any:
    """A KeyValue string back to bool/int/float, else the string."""
    if s in ("true", "false"):
        return s == "true"
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    return s


def step_metrics_to_dict(msg: Any) -> dict[str, dict[str, Any]]:
    """``{status name: {key: value}}`` of a DiagnosticArray from :func:`step_metrics_msg`."""
    return {
        str(s.name): {str(kv.key): parse_value(str(kv.value)) for kv in s.values}
        for s in msg.status
    }


def camera_info_to_numpy(msg: Any) -> dict[str, Any]:
    """``K (3, 3)``, ``width``, ``height``, ``hfov_deg``."""
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    w = int(msg.width)
    hfov = float(np.degrees(2 * np.arctan(0.5 * w / k[0, 0]))) if k[0, 0] > 0 else float("nan")
    return {"K": k, "width": w, "height": int(msg.height), "hfov_deg": hfov}
