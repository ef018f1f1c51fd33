"""Perception backends of the environment (chosen once at construction).

:class:`GroundTruthPerception` projects every target into every drone's camera (with occlusion,
frustum and minimum-size tests) and, when the camera is on, renders the images with the batched
tiled camera in the same call. :class:`YoloPerception` renders every drone's image, runs a
trained YOLO detector on them (batched) and matches its detections to the targets, so the
environment's per-target bookkeeping (seen / found) works unchanged; it also counts true and
false positives and misses against ground-truth visibility. Both implement
:class:`Perception`; :func:`isr_training.env.make_perception` builds the one a config asks for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from isr_sim_bridge.camera import (
    CameraConfig,
    TiledCamera,
    camera_pose,
    fields_of_view_deg,
    mount_rotation,
    parse_resolution,
)
from isr_sim_bridge.detections import DetectionConfig, GroundTruthDetector
from isr_sim_bridge.world_batch import WorldBatch


class PerceptionOutput(NamedTuple):
    """What a perception backend returns for all drones on a perception step."""

    boxes_xyxy_px: Tensor  # (W, D, T, 4) float: box of target t in drone d's image
    visible: Tensor  # (W, D, T) bool: target t detected by drone d (visible, big enough)
    image: Tensor | None  # (W, D, H, W, 3) uint8 when the camera renders, else None


class Perception(Protocol):
    """A perception backend (ground truth, or a detector) chosen at construction."""

    image_size: tuple[int, int]
    """(width, height) of the camera image in pixels."""
    hfov_deg: float
    vfov_deg: float
    pitch_down_deg: float

    def __call__(self, world: WorldBatch, pos_enu_m: Tensor, quat_wxyz: Tensor) -> PerceptionOutput:
        """Detections (and the image) of every drone."""


class GroundTruthPerception:
    """Ground-truth detections (and optional images) for all drones in one batched call.

    Args:
        world: the worlds (shared with the environment; moving targets are read where they are).
        drones_per_world: ``D``.
        camera: camera model (resolution, FOV, mount pitch).
        render_images: render RGB images too (the camera observation).
        device: torch device.
        detection: ground-truth detection options (minimum box size, visibility).
    """

    def __init__(
        self,
        world: WorldBatch,
        drones_per_world: int,
        camera: CameraConfig,
        render_images: bool,
        device: torch.device | str,
        detection: DetectionConfig | None = None,
    ) -> None:
        self.camera_config = camera
        self.detector = GroundTruthDetector(world, camera, detection, device)
        self.camera = (
            TiledCamera(world, drones_per_world, camera, device) if render_images else None
        )
        self.image_size = parse_resolution(camera.resolution)
        self.hfov_deg, self.vfov_deg = fields_of_view_deg(camera)
        self.pitch_down_deg = camera.mount_pitch_deg
        dev = torch.device(device)
        self._mount_rot = mount_rotation(camera).to(dev, torch.float32)
        self._mount_off = torch.tensor(camera.mount_offset_flu_m, dtype=torch.float32, device=dev)

    def __call__(self, world: WorldBatch, pos_enu_m: Tensor, quat_wxyz: Tensor):
        """Detections of every target by every drone (and the images when rendering)."""
        if self.camera is not None:
            out = self.camera.render(pos_enu_m, quat_wxyz)
            pose, image = out.pose, out.rgb
        else:
            pose = camera_pose(pos_enu_m, quat_wxyz, self._mount_rot, self._mount_off)
            image = None
        det = self.detector.detect(pose)
        return PerceptionOutput(det.boxes_xyxy, det.visible, image)

    def detect_into(
        self, pos_enu_m: Tensor, quat_wxyz: Tensor, boxes: Tensor, visible: Tensor
    ) -> None:
        """Which targets every drone detects: the environment's CPU step.

        Written into ``visible (W, D, T)`` and their boxes into ``boxes (W, D, T, 4)`` (zero
        where not visible).

        The numba detector's :meth:`~isr_sim_bridge.detections.GroundTruthDetector.
        visible_into` with this camera mount; no image (``render_images`` off).
        """
        self.detector.visible_into(pos_enu_m, quat_wxyz, self._mount_rot, self._mount_off,
                                   boxes, visible)  # fmt: skip


def match_detections(
    det_boxes: Tensor,
    det_scores: Tensor,
    det_class: Tensor,
    det_valid: Tensor,
    gt_boxes: Tensor,
    gt_class: Tensor,
    gt_visible: Tensor,
    iou_threshold: float = 0.5,
) -> Tensor:
    """Greedy one-to-one matching of detections to ground-truth targets, batched over images.

    Detections are taken by descending score (as in mAP evaluation); each takes the unmatched,
    visible target of the same class with the highest IoU, if that IoU is at least
    ``iou_threshold``. Shapes: detections ``(N, K, ...)``, targets ``(N, T, ...)``.

    Returns:
        ``(N, K)`` long: the matched target slot of each detection, ``-1`` when unmatched
        (a false positive, or padding).
    """
    n, k = det_scores.shape
    t = gt_boxes.shape[1]
    matched = torch.full((n, k), -1, dtype=torch.long, device=det_boxes.device)
    if k == 0 or t == 0:
        return matched
    order = torch.argsort(torch.where(det_valid, det_scores, -1.0), dim=1, descending=True,
                          stable=True)  # fmt: skip
    taken = torch.zeros(n, t, dtype=torch.bool, device=det_boxes.device)
    gt_area = (gt_boxes[..., 2:] - gt_boxes[..., :2]).clamp(min=0).prod(-1)  # (N, T)
    rows = torch.arange(n, device=det_boxes.device)
    for j in range(k):
        idx = order[:, j]
        b = det_boxes[rows, idx]  # (N, 4)
        lt = torch.maximum(b[:, None, :2], gt_boxes[..., :2])
        rb = torch.minimum(b[:, None, 2:], gt_boxes[..., 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)  # (N, T)
        area = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)[:, None]
        iou = inter / (area + gt_area - inter).clamp(min=1e-9)
        cand = (
            gt_visible
            & ~taken
            & (gt_class == det_class[rows, idx][:, None])
            & (iou >= iou_threshold)
            & det_valid[rows, idx][:, None]
        )
        best = torch.where(cand, iou, -1.0).argmax(1)  # (N,)
        ok = cand.any(1)
        taken[rows, best] |= ok
        matched[rows, idx] = torch.where(ok, best, -1)
    return matched


class YoloPerception:
    """Detections of a trained YOLO model on every drone's rendered image, matched to targets.

    Each perception step renders all drones with the tiled camera, runs the detector on the
    ``W * D`` images (in batches of ``batch_size``) and computes the ground-truth detections of
    the same frame. A detection is assigned to a target by :func:`match_detections` (same class,
    IoU with the target's projected ground-truth box >= ``match_iou``, greedy by score, one
    detection per target). The output then has the environment's per-target layout: target ``t``
    is ``visible`` to drone ``d`` when a detection was matched to it, and its box is the
    detector's box (zeros for unmatched targets). Detections that match no target (false
    positives) are counted but cannot enter the per-target observation.

    Counters, long tensors ``(W, D)`` (ground truth = the ground-truth detector's ``visible`` with
    the same :class:`DetectionConfig` as the ground-truth backend):

    - ``last_tp``, ``last_fp``, ``last_fn``, ``last_gt``: of the last perception step (matched
      detections, unmatched detections, visible targets without a detection, visible targets);
    - ``total_tp``, ``total_fp``, ``total_fn``, ``total_gt``: summed since construction or
      :meth:`reset_counters`. ``precision()`` / ``recall()`` give the totals' ratios.

    ``last_gt_visible`` ``(W, D, T)`` and ``last_gt_boxes`` ``(W, D, T, 4)`` hold the ground truth
    of the last step. Always ``total_tp + total_fn == total_gt``.

    Args:
        world: the worlds (shared with the environment).
        drones_per_world: ``D``.
        camera: camera model (resolution, FOV, mount pitch); the detector sees these images.
        weights: trained ultralytics weights (``best.pt`` of
            :func:`isr_sim_bridge.yolo.train_yolo`).
        device: torch device of rendering and inference.
        detection: ground-truth detection options (for matching and the counters).
        conf: detector confidence threshold.
        match_iou: IoU a detection needs with a target's ground-truth box to count for it.
        nms_iou: the detector's NMS IoU threshold.
        batch_size: images per detector forward pass.
        render_images: also return the image (always rendered; the environment keeps it only
            when its camera observation is on).
    """

    def __init__(
        self,
        world: WorldBatch,
        drones_per_world: int,
        camera: CameraConfig,
        weights: str | Path,
        device: torch.device | str = "cpu",
        detection: DetectionConfig | None = None,
        conf: float = 0.25,
        match_iou: float = 0.5,
        nms_iou: float = 0.7,
        batch_size: int = 64,
        render_images: bool = True,
    ) -> None:
        from isr_sim_bridge.yolo import YoloDetector

        if not 0.0 < match_iou <= 1.0:
            raise ValueError(f"match_iou must be in (0, 1], got {match_iou}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        dev = torch.device(device)
        self.device = dev
        self.camera_config = camera
        self.gt_detector = GroundTruthDetector(world, camera, detection, dev)
        self.camera = TiledCamera(world, drones_per_world, camera, dev, detector=self.gt_detector)
        self.detector = YoloDetector(weights, conf=conf, iou=nms_iou, device=str(dev))
        self.weights = Path(weights)
        self.match_iou = float(match_iou)
        self.batch_size = int(batch_size)
        self.render_images = bool(render_images)
        self.image_size = parse_resolution(camera.resolution)
        self.hfov_deg, self.vfov_deg = fields_of_view_deg(camera)
        self.pitch_down_deg = camera.mount_pitch_deg
        shape = (world.num_worlds, drones_per_world)
        t = world.target_valid.shape[1]
        self.last_gt_visible = torch.zeros(*shape, t, dtype=torch.bool, device=dev)
        self.last_gt_boxes = torch.zeros(*shape, t, 4, device=dev)
        self.last_detections: list[Any] = []
        for k in ("tp", "fp", "fn", "gt"):
            setattr(self, f"last_{k}", torch.zeros(shape, dtype=torch.long, device=dev))
            setattr(self, f"total_{k}", torch.zeros(shape, dtype=torch.long, device=dev))

    def reset_counters(self) -> None:
        """Zero the running totals (``total_*``)."""
        for k in ("tp", "fp", "fn", "gt"):
            getattr(self, f"total_{k}").zero_()

    def precision(self) -> float:
        """Total true positives over all detections (nan when nothing was detected)."""
        tp, fp = int(self.total_tp.sum()), int(self.total_fp.sum())
        return tp / (tp + fp) if tp + fp else float("nan")

    def recall(self) -> float:
        """Total true positives over ground-truth visible targets (nan when none was visible)."""
        tp, gt = int(self.total_tp.sum()), int(self.total_gt.sum())
        return tp / gt if gt else float("nan")

    def counters(self) -> dict[str, float]:
        """The totals and their ratios as plain numbers (for reports)."""
        return {
            "true_positives": int(self.total_tp.sum()),
            "false_positives": int(self.total_fp.sum()),
            "false_negatives": int(self.total_fn.sum()),
            "gt_visible": int(self.total_gt.sum()),
            "precision": self.precision(),
            "recall": self.recall(),
        }

    def __call__(self, world: WorldBatch, pos_enu_m: Tensor, quat_wxyz: Tensor):
        """Render, detect, match; see the class doc."""
        from isr_sim_bridge.yolo import pad_detections

        out = self.camera.render(pos_enu_m, quat_wxyz)
        gt = out.detections
        wn, dn = pos_enu_m.shape[:2]
        n = wn * dn
        rgb = out.rgb.reshape(n, *out.rgb.shape[2:])
        frames = []
        for s in range(0, n, self.batch_size):
            frames += self.detector.predict(rgb[s : s + self.batch_size])
        self.last_detections = frames
        kmax = max([len(f) for f in frames] + [1])
        batch = pad_detections(frames, kmax)
        t = gt.visible.shape[-1]
        gt_vis = gt.visible.reshape(n, t)
        gt_boxes = gt.boxes_xyxy.reshape(n, t, 4)
        matched = match_detections(
            batch.boxes_xyxy.to(self.device), batch.scores.to(self.device),
            batch.class_ids.to(self.device), batch.valid.to(self.device),
            gt_boxes, gt.class_id.reshape(n, t), gt_vis, self.match_iou,
        )  # fmt: skip
        hit = matched >= 0  # (N, K)
        visible = torch.zeros(n, t, dtype=torch.bool, device=self.device)
        boxes = torch.zeros(n, t, 4, device=self.device)
        if t > 0:  # one detection per target at most, so scatter-adds place single boxes
            slot = matched.clamp(min=0)
            visible = _scatter_or(n, t, slot, hit, self.device)
            src = batch.boxes_xyxy.to(self.device) * hit.unsqueeze(-1)
            boxes.scatter_add_(1, slot.unsqueeze(-1).expand(n, slot.shape[1], 4), src)
        tp = hit.sum(1)
        fp = (batch.valid.to(self.device) & ~hit).sum(1)
        ngt = gt_vis.sum(1)
        fn = ngt - tp
        shape = (wn, dn)
        self.last_tp, self.last_fp = tp.view(shape), fp.view(shape)
        self.last_fn, self.last_gt = fn.view(shape), ngt.view(shape)
        for k in ("tp", "fp", "fn", "gt"):
            getattr(self, f"total_{k}").add_(getattr(self, f"last_{k}"))
        self.last_gt_visible = gt.visible
        self.last_gt_boxes = gt.boxes_xyxy
        image = out.rgb if self.render_images else None
        return PerceptionOutput(boxes.view(wn, dn, t, 4), visible.view(wn, dn, t), image)


def _scatter_or(n: int, t: int, slot: Tensor, hit: Tensor, device: torch.device) -> Tensor:
    """``(N, T)`` bool: True at ``slot[i, j]`` wherever ``hit[i, j]``."""
    acc = torch.zeros(n, t, dtype=torch.long, device=device)
    acc.scatter_add_(1, slot, hit.long())
    return acc > 0
