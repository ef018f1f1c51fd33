"""Perception backends of the environment (chosen once at construction).

:class:`GroundTruthPerception` projects every target into every drone's camera (with occlusion,
frustum and minimum-size tests) and, when the camera is on, renders the images with the batched
tiled camera in the same call. A detector-based backend (YOLO) plugs in through the same
:class:`~isr_training.env.Perception` interface.
"""

from __future__ import annotations

import torch
from torch import Tensor

from isr_sim_bridge.camera import (
    CameraConfig,
    TiledCamera,
    camera_pose,
    mount_rotation,
    parse_resolution,
)
from isr_sim_bridge.detections import DetectionConfig, GroundTruthDetector
from isr_sim_bridge.world_batch import WorldBatch


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
        w, h = self.image_size
        self.hfov_deg = camera.horizontal_fov_deg
        fx = (w / 2.0) / torch.tan(torch.deg2rad(torch.tensor(self.hfov_deg / 2.0))).item()
        self.vfov_deg = float(torch.rad2deg(2 * torch.atan(torch.tensor(h / 2.0 / fx))))
        self.pitch_down_deg = camera.mount_pitch_deg
        dev = torch.device(device)
        self._mount_rot = mount_rotation(camera).to(dev, torch.float32)
        self._mount_off = torch.tensor(camera.mount_offset_flu_m, dtype=torch.float32, device=dev)

    def __call__(self, world: WorldBatch, pos_enu_m: Tensor, quat_wxyz: Tensor):
        """Detections of every target by every drone (and the images when rendering)."""
        from .env import PerceptionOutput

        if self.camera is not None:
            out = self.camera.render(pos_enu_m, quat_wxyz)
            pose, image = out.pose, out.rgb
        else:
            pose = camera_pose(pos_enu_m, quat_wxyz, self._mount_rot, self._mount_off)
            image = None
        det = self.detector.detect(pose)
        return PerceptionOutput(det.boxes_xyxy, det.visible, image)


def make_perception(cfg, world: WorldBatch, device: torch.device | str) -> GroundTruthPerception:
    """The perception backend an :class:`~isr_training.env.EnvConfig` asks for."""
    camera = CameraConfig(
        resolution=cfg.camera_resolution,
        horizontal_fov_deg=cfg.camera_fov_deg,
        mount_pitch_deg=cfg.camera_pitch_deg,
    )
    detection = DetectionConfig(min_box_size_px=cfg.detection_min_box_px)
    if cfg.perception == "gt":
        return GroundTruthPerception(
            world, cfg.drones_per_world, camera, cfg.camera, device, detection
        )
    raise ValueError(
        f"perception '{cfg.perception}' needs a trained detector: build the environment with "
        "perception=YoloPerception(...) (isr_px4_eval) instead"
    )
