"""A recorded run read back from a bag by topic type: per-drone time series (:func:`load_run`).

Used by the videos (:mod:`~isr_px4_eval.evidence.video`) and the report.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from isr_px4_eval.evidence.bags import BagSource, natural_key
from isr_px4_eval.evidence.recording import (
    T_BOOL,
    T_DET,
    T_DIAG,
    T_IMAGE,
    T_ODOM,
    TOPIC_RENDERED,
    TOPIC_STEP_METRICS,
    BagError,
)
from isr_sim_bridge import rosmsg

# ---------------------------------------------------------------------------------------------
# Loading a bag into per-drone time series


@dataclass
class DroneSeries:
    """Time series of one drone namespace (times in ns, sorted)."""

    name: str
    image_t: list[int] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    gt_t: list[int] = field(default_factory=list)
    gt: list[dict[str, Any]] = field(default_factory=list)
    det_t: list[int] = field(default_factory=list)
    det: list[dict[str, Any]] = field(default_factory=list)
    odom_t: list[int] = field(default_factory=list)
    pos: list[np.ndarray] = field(default_factory=list)

    def latest(self, kind: str, t: int) -> Any:
        """Last value of ``kind`` (images, gt, det, pos) at or before ``t``; None before any."""
        times = getattr(
            self, {"images": "image_t", "gt": "gt_t", "det": "det_t", "pos": "odom_t"}[kind]
        )
        k = bisect.bisect_right(times, t) - 1
        return getattr(self, kind)[k] if k >= 0 else None

    def positions(self) -> np.ndarray:
        """``(K, 3)`` ENU positions."""
        return np.asarray(self.pos, dtype=np.float64).reshape(-1, 3)


@dataclass
class Run:
    """A bag loaded for video: drones, the frame timeline, per-step metrics."""

    path: Path
    meta: dict[str, Any]
    drones: dict[str, DroneSeries]
    frame_t: list[int]
    metrics_t: list[int]
    metrics: list[dict[str, dict[str, Any]]]
    rendered_t: list[int]
    rendered: list[bool]
    truncated: bool
    topics: dict[str, str]

    def drone_names(self) -> list[str]:
        """Drone namespaces, naturally sorted."""
        return sorted(self.drones, key=natural_key)

    def metrics_at(self, t: int) -> dict[str, dict[str, Any]]:
        """Step metrics at or before ``t`` (empty before any)."""
        k = bisect.bisect_right(self.metrics_t, t) - 1
        return self.metrics[k] if k >= 0 else {}

    def rendered_at(self, t: int) -> bool | None:
        """Whether the step at ``t`` rendered (None when the bag does not say)."""
        if not self.rendered_t:
            m = self.metrics_at(t).get("sim", {})
            return m.get("rendered")
        k = bisect.bisect_right(self.rendered_t, t) - 1
        return self.rendered[k] if k >= 0 else None

    def drone_metrics(self, name: str, t: int) -> dict[str, Any]:
        """The ``drone_<i>`` status of the step metrics at ``t``."""
        return self.metrics_at(t).get(name, {})


NS_RE = re.compile(r"^/?([^/]+)/")


def namespace(topic: str) -> str:
    """The drone namespace of a topic: its first path component (``/drone_3/odom`` -> drone_3)."""
    m = NS_RE.match(topic)
    return m.group(1) if m else topic.strip("/")


def load_run(path: str | Path, need: str = "any") -> Run:
    """Read a bag. ``need``: ``image`` (camera topics), ``odom`` (odometry), ``any`` (either).

    Raises :class:`BagError` listing the bag's topics when it lacks what the mode needs.
    """
    src = BagSource(path)
    topics = src.topics
    image_topics = src.topics_of_type(T_IMAGE)
    det_topics = src.topics_of_type(T_DET)
    odom_topics = src.topics_of_type(T_ODOM)
    lacking = {
        "image": not image_topics,
        "odom": not odom_topics,
        "any": not image_topics and not odom_topics,
    }[need]
    if lacking:
        what = {
            "image": "a camera topic (sensor_msgs/msg/Image)",
            "odom": "an odometry topic (nav_msgs/msg/Odometry)",
            "any": "camera (sensor_msgs/msg/Image) or odometry (nav_msgs/msg/Odometry) topic",
        }[need]
        raise BagError(f"bag {src.path} has no {what}; it holds: {src.describe()}")
    drones: dict[str, DroneSeries] = {}

    def series(topic: str) -> DroneSeries:
        ns = namespace(topic)
        if ns not in drones:
            drones[ns] = DroneSeries(ns)
        return drones[ns]

    for t in image_topics + odom_topics:
        series(t)
    metrics_t: list[int] = []
    metrics: list[dict[str, dict[str, Any]]] = []
    rendered_t: list[int] = []
    rendered: list[bool] = []
    want = set(image_topics + det_topics + odom_topics)
    if topics.get(TOPIC_STEP_METRICS) == T_DIAG:
        want.add(TOPIC_STEP_METRICS)
    if topics.get(TOPIC_RENDERED) == T_BOOL:
        want.add(TOPIC_RENDERED)
    gt_topics = {t for t in det_topics if re.search(r"gt|ground_truth", t.split("/")[-1])}
    for topic, t, msg in src.messages(want):
        try:
            if topic == TOPIC_STEP_METRICS:
                metrics_t.append(t)
                metrics.append(rosmsg.step_metrics_to_dict(msg))
            elif topic == TOPIC_RENDERED:
                rendered_t.append(t)
                rendered.append(bool(msg.data))
            elif topic in image_topics:
                s = series(topic)
                s.image_t.append(t)
                s.images.append(rosmsg.image_to_numpy(msg))
            elif topic in det_topics:
                s = series(topic)
                d = rosmsg.detections_to_numpy(msg)
                if topic in gt_topics:
                    s.gt_t.append(t)
                    s.gt.append(d)
                else:
                    s.det_t.append(t)
                    s.det.append(d)
            elif topic in odom_topics:
                s = series(topic)
                s.odom_t.append(t)
                s.pos.append(rosmsg.odometry_to_numpy(msg)["pos_enu_m"])
        except (ValueError, AttributeError):
            continue
    meta = src.metadata()
    if metrics_t:
        frame_t = list(metrics_t)
    else:
        first = sorted(drones.values(), key=lambda s: natural_key(s.name))
        frame_t = []
        for s in first:
            if s.image_t:
                frame_t = list(s.image_t)
                break
        if not frame_t:
            frame_t = sorted({t for s in first for t in s.odom_t})
    if not frame_t:
        raise BagError(f"bag {src.path} holds no messages on {', '.join(sorted(want))}")
    return Run(
        Path(path),
        meta,
        drones,
        frame_t,
        metrics_t,
        metrics,
        rendered_t,
        rendered,
        src.truncated,
        topics,
    )
