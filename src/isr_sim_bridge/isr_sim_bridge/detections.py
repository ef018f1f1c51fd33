"""Batched ground-truth detections: every target projected into every drone's camera.

For each (world, drone, target) triple, all at once and without Python loops over them:

- **Box**: the bounds of the target's oriented 3D box projected into the image, exact also when
  the box crosses the near plane (its 8 corners in front plus the points where its 12 edges
  cross the near plane, as :func:`~isr_sim_bridge.camera.project_clipped`), clipped to the image.
  Coordinates are ``xyxy`` in pixel-edge coordinates (``x in [0, width]``, column ``u`` spans
  ``[u, u + 1)``; see :mod:`isr_sim_bridge.camera`).
- **Visible fraction**: the fraction of ``samples_per_axis**3`` sample points, a regular grid
  inside the target box spanning ``sample_inset`` of its half extents, that are (a) beyond the
  near plane and within the far clip, (b) inside the image, and (c) not occluded: the segment
  from the optical centre to the point crosses no building/obstacle box (a batched exact slab
  test against every box of the world). Other targets do not occlude. This plays the role of
  ``1 - occlusionRatio`` of Isaac Sim's ``bounding_box_2d_tight`` annotator.
- **Visible**: valid target, visible fraction ``>= min_visible_fraction`` and a clipped box at
  least ``min_box_size_px`` wide and high.

Outputs are padded tensors ``(W, D, T, ...)`` over the world's target slots (padding slots are
never visible); :func:`top_k` selects the largest visible boxes per drone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from isr_direct_dynamics.config import check
from isr_direct_dynamics.cpu_kernels import as_numpy, threads_for
from isr_sim_bridge import cpu_kernels
from isr_sim_bridge.camera import (
    CORNER_SIGNS,
    CameraConfig,
    CameraPose,
    camera_intrinsics,
    maybe_compile,
    parse_resolution,
    project_clipped_soa,
)
from isr_sim_bridge.world_batch import WorldBatch

COMPILE_AUTO_MIN_PAIRS: int = 2048
"""``DetectionConfig.compile=None`` compiles from this many (camera, target slot) pairs on."""


@dataclass
class DetectionConfig:
    """Configuration of the ground-truth detector."""

    min_box_size_px: float = 2.0
    """Smallest width and height (pixels, after clipping to the image) of a visible detection."""
    min_visible_fraction: float = 0.25
    """Smallest visible fraction (in frame and unoccluded samples) of a visible detection."""
    samples_per_axis: int = 2
    """Occlusion samples per box axis: ``n**3`` points per target (1 = the centre only)."""
    sample_inset: float = 0.8
    """The sample grid spans ``+-sample_inset`` of the half extents (0 < inset <= 1)."""
    cpu_kernels: bool | None = None
    """On CPU, compute the detections with one numba kernel parallel over cameras
    (:func:`isr_sim_bridge.cpu_kernels.detect_targets`, the same float32 arithmetic as
    :func:`detect_targets`, reading each world's occluders in place instead of gathering them per
    candidate pair). ``None`` = automatic: on CPU whenever numba can be imported; ignored on
    CUDA."""
    compile: bool | None = None
    """Compile the kernel with ``torch.compile`` (faster for many drones; slow first call).
    ``None`` = automatic: compile when ``W * D * T`` (cameras times target slots) is at least
    :data:`COMPILE_AUTO_MIN_PAIRS`."""

    def validate(self) -> None:
        """Check ranges; raises :class:`ConfigError` naming the field."""
        check(self.min_box_size_px >= 0.0, "min_box_size_px", "must be >= 0")
        check(
            0.0 <= self.min_visible_fraction <= 1.0,
            "min_visible_fraction",
            f"must be in [0, 1], got {self.min_visible_fraction}",
        )
        check(1 <= self.samples_per_axis <= 8, "samples_per_axis", "must be in [1, 8]")
        check(0.0 < self.sample_inset <= 1.0, "sample_inset", "must be in (0, 1]")


@dataclass
class Detections:
    """Ground-truth detections of every target slot in every camera, leading dims ``(W, D, T)``."""

    boxes_xyxy: Tensor  # (W, D, T, 4) float32
    """Box ``(x1, y1, x2, y2)`` in pixel-edge coordinates, clipped to the image; zeros when the
    target is entirely behind the near plane."""
    class_id: Tensor  # (W, D, T) int64
    """Class id (index into ``TARGET_CLASSES``); -1 for padding slots."""
    target_id: Tensor  # (W, D, T) int64
    """Index of the target in its world's target list."""
    visible: Tensor  # (W, D, T) bool
    """The detection counts (see the module doc)."""
    visible_fraction: Tensor  # (W, D, T) float32
    """Fraction of the occlusion samples in view and unoccluded, in [0, 1]."""
    depth_m: Tensor  # (W, D, T) float32
    """Depth of the target centre along the optical axis, metres (negative = behind)."""

    @property
    def count(self) -> Tensor:
        """Number of visible detections per drone ``(W, D)``."""
        return self.visible.sum(-1)


def top_k(det: Detections, k: int) -> Detections:
    """The ``k`` visible detections with the largest box area per drone, largest first.

    Slots beyond the number of visible detections are padding (``visible`` False). Returns
    tensors ``(W, D, k, ...)``; ``k`` may exceed ``T`` (extra slots are padding).
    """
    t = det.visible.shape[-1]
    kk = min(k, t)
    wh = (det.boxes_xyxy[..., 2:] - det.boxes_xyxy[..., :2]).clamp(min=0)
    score = torch.where(det.visible, wh[..., 0] * wh[..., 1], torch.full_like(wh[..., 0], -1.0))
    idx = torch.topk(score, kk, dim=-1, sorted=True).indices  # (W, D, kk)

    def take(x: Tensor) -> Tensor:
        if x.dim() == idx.dim():
            return torch.gather(x, -1, idx)
        return torch.gather(x, -2, idx.unsqueeze(-1).expand(*idx.shape, x.shape[-1]))

    out = Detections(
        boxes_xyxy=take(det.boxes_xyxy),
        class_id=take(det.class_id),
        target_id=take(det.target_id),
        visible=take(det.visible),
        visible_fraction=take(det.visible_fraction),
        depth_m=take(det.depth_m),
    )
    if k > t:
        pad = k - t

        def padded(x: Tensor, value: float | bool) -> Tensor:
            shape = (*x.shape[:2], pad, *x.shape[3:])
            return torch.cat((x, torch.full(shape, value, dtype=x.dtype, device=x.device)), dim=2)

        out = Detections(
            boxes_xyxy=padded(out.boxes_xyxy, 0.0),
            class_id=padded(out.class_id, -1),
            target_id=padded(out.target_id, -1),
            visible=padded(out.visible, False),
            visible_fraction=padded(out.visible_fraction, 0.0),
            depth_m=padded(out.depth_m, 0.0),
        )
    return out


def sample_grid(samples_per_axis: int, inset: float) -> Tensor:
    """``(n**3, 3)`` float32 sample offsets in units of the half extents (x fastest)."""
    n = samples_per_axis
    axis = torch.zeros(1) if n == 1 else torch.linspace(-inset, inset, n)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack((x.reshape(-1), y.reshape(-1), z.reshape(-1)), dim=-1)


def detect_targets(
    pose: CameraPose,
    target_pos_enu_m: Tensor,
    target_size_m: Tensor,
    target_yaw_rad: Tensor,
    target_class: Tensor,
    target_valid: Tensor,
    box_min_m: Tensor,
    box_max_m: Tensor,
    box_valid: Tensor,
    camera: CameraConfig,
    config: DetectionConfig,
    samples: tuple[tuple[float, float, float], ...],
    project_fn: Callable[..., tuple[Tensor, ...]] | None = None,
    occlusion_fn: Callable[..., Tensor] | None = None,
) -> Detections:
    """Pure batched ground-truth detection (see the module doc).

    Shapes: ``pose`` ``(W, D, ...)``; targets ``(W, T, ...)``; occluding boxes ``(W, B, ...)``;
    ``samples``: the sample offsets (in half extents) of :func:`sample_grid`, as Python floats.

    Two stages: :func:`project_targets` projects every (camera, target) box (struct-of-arrays,
    one tensor per coordinate, so a compiled kernel vectorizes it) and culls the pairs none of
    whose samples can be in view (box entirely behind the camera, beyond the far clip or outside
    the image, or an invalid slot); then the occlusion samples and their slab tests against every
    occluder run only for the remaining candidate pairs (:func:`occluded_fraction`).
    ``project_fn`` and ``occlusion_fn`` may be compiled versions of the two stages. The culled
    pairs have a visible fraction of
    exactly 0, as when every sample is tested.
    """
    width, height = parse_resolution(camera.resolution)
    fx, fy, cx, cy = camera_intrinsics(camera)
    org, rot = pose.pos_enu_m, pose.rot_world_from_cam  # (W, D, 3), (W, D, 3, 3)
    project = project_fn if project_fn is not None else project_targets
    boxes, in_front, size_ok, cand, depth, cls = project(
        org, rot, target_pos_enu_m, target_size_m, target_yaw_rad, target_class, target_valid,
        (fx, fy, cx, cy), camera.near_clip_m, camera.far_clip_m, width, height,
        float(config.min_box_size_px),
    )  # fmt: skip
    frac = occluded_fraction(
        cand, org, rot, target_pos_enu_m, target_size_m, target_yaw_rad, box_min_m, box_max_m,
        box_valid, (fx, fy, cx, cy), camera.near_clip_m, camera.far_clip_m, width, height,
        samples, occlusion_fn,
    )  # fmt: skip
    valid = cls >= 0
    visible = valid & in_front & size_ok & (frac >= config.min_visible_fraction) & (frac > 0)
    w, d, t = cls.shape
    tid = torch.arange(t, device=org.device).expand(w, d, t)
    return Detections(
        boxes_xyxy=boxes,
        class_id=cls,
        target_id=tid,
        visible=visible,
        visible_fraction=frac,
        depth_m=depth,
    )


def project_targets(
    org: Tensor,
    rot: Tensor,
    target_pos_enu_m: Tensor,
    target_size_m: Tensor,
    target_yaw_rad: Tensor,
    target_class: Tensor,
    target_valid: Tensor,
    intrinsics: tuple[float, float, float, float],
    near: float,
    far: float,
    width: int,
    height: int,
    min_box_size_px: float,
) -> tuple[Tensor, ...]:
    """Stage 1 of :func:`detect_targets`: boxes of every (camera, target) pair, ``(W, D, T)``.

    Returns ``boxes (W, D, T, 4)`` (clipped; zeros when entirely behind the near plane),
    ``in_front``, ``size_ok``, ``candidate`` (valid slot whose projected box, unclipped, reaches
    into the image and whose nearest corner is within the far clip: only these can have a sample
    in view), ``depth`` of the centre and ``class_id`` (-1 for padding slots).
    """
    fx, fy, cx, cy = intrinsics
    w, d = org.shape[0], org.shape[1]
    t = target_pos_enu_m.shape[1]
    # camera axes (columns of rot) and origin, (W, D, 1) each
    ax = [[rot[:, :, i, j].unsqueeze(-1) for i in range(3)] for j in range(3)]  # ax[j][i]
    o = [org[:, :, i].unsqueeze(-1) for i in range(3)]
    # target centre and box axes (world), (W, 1, T) each
    half = 0.5 * target_size_m
    cs, sn = torch.cos(target_yaw_rad).unsqueeze(1), torch.sin(target_yaw_rad).unsqueeze(1)
    c = [target_pos_enu_m[:, :, i].unsqueeze(1) for i in range(3)]
    h = [half[:, :, i].unsqueeze(1) for i in range(3)]
    zero = torch.zeros_like(cs)
    box_axes = ((cs, sn, zero), (-sn, cs, zero), (zero, zero, torch.ones_like(cs)))  # local x, y, z

    def to_cam(p: list[Tensor]) -> list[Tensor]:
        rel = [p[i] - o[i] for i in range(3)]
        return [rel[0] * ax[j][0] + rel[1] * ax[j][1] + rel[2] * ax[j][2] for j in range(3)]

    # box corners -> projected bounds (exact near-plane clipping), (W, D, T)
    xs, ys, zs = [], [], []
    for sg in CORNER_SIGNS:
        p = [c[i] + sum(sg[k] * h[k] * box_axes[k][i] for k in range(3)) for i in range(3)]
        pc = to_cam(p)
        xs.append(pc[0])
        ys.append(pc[1])
        zs.append(pc[2])
    u0, v0, u1, v1, in_front, zmin = project_clipped_soa(xs, ys, zs, (fx, fy, cx, cy), near)
    # Samples lie inside the box, so they project inside its (unclipped) bounds and no nearer
    # than its nearest corner; the margins only absorb rounding.
    valid = target_valid.unsqueeze(1).expand(w, d, t)
    cand = (
        valid
        & in_front
        & (zmin <= far + 1e-3 * (1.0 + far))
        & (u1 >= -1e-3)
        & (u0 <= width + 1e-3)
        & (v1 >= -1e-3)
        & (v0 <= height + 1e-3)
    )
    u0 = u0.clamp(0.0, float(width))
    u1 = u1.clamp(0.0, float(width))
    v0 = v0.clamp(0.0, float(height))
    v1 = v1.clamp(0.0, float(height))
    boxes = torch.stack((u0, v0, u1, v1), dim=-1)
    boxes = torch.where(in_front.unsqueeze(-1), boxes, torch.zeros_like(boxes))
    size_ok = ((u1 - u0) >= min_box_size_px) & ((v1 - v0) >= min_box_size_px)
    depth = to_cam(c)[2]
    cls = torch.where(valid, target_class.unsqueeze(1).expand(w, d, t), -1)
    return boxes, in_front, size_ok, cand, depth, cls


def occluded_fraction(
    cand: Tensor,
    org: Tensor,
    rot: Tensor,
    target_pos_enu_m: Tensor,
    target_size_m: Tensor,
    target_yaw_rad: Tensor,
    box_min_m: Tensor,
    box_max_m: Tensor,
    box_valid: Tensor,
    intrinsics: tuple[float, float, float, float],
    near: float,
    far: float,
    width: int,
    height: int,
    samples: tuple[tuple[float, float, float], ...],
    occlusion_fn: Callable[..., Tensor] | None = None,
) -> Tensor:
    """Stage 2 of :func:`detect_targets`: visible fraction ``(W, D, T)`` of the candidate pairs.

    Only the pairs where ``cand`` is set are evaluated: the ``S`` sample points inside the target
    box, their in-view test, and an exact slab test of the segment camera -> point against every
    occluder of the world, ``(C, S, B)`` for ``C`` candidates (:func:`occlusion_kernel`, or
    ``occlusion_fn``, its compiled version). Other pairs get 0.
    """
    frac = torch.zeros(cand.shape, dtype=org.dtype, device=org.device)
    wi, di, ti = torch.nonzero(cand, as_tuple=True)
    if wi.numel() == 0:
        return frac
    kernel = occlusion_fn if occlusion_fn is not None else occlusion_kernel
    frac[wi, di, ti] = kernel(
        org[wi, di], rot[wi, di], target_pos_enu_m[wi, ti], target_size_m[wi, ti],
        target_yaw_rad[wi, ti], box_min_m[wi], box_max_m[wi], box_valid[wi], intrinsics, near, far,
        width, height, samples,
    )  # fmt: skip
    return frac


def occlusion_kernel(
    org: Tensor,
    rot: Tensor,
    target_pos_enu_m: Tensor,
    target_size_m: Tensor,
    target_yaw_rad: Tensor,
    box_min_m: Tensor,
    box_max_m: Tensor,
    box_valid: Tensor,
    intrinsics: tuple[float, float, float, float],
    near: float,
    far: float,
    width: int,
    height: int,
    samples: tuple[tuple[float, float, float], ...],
) -> Tensor:
    """Visible fraction ``(C,)`` of ``C`` (camera, target) pairs, one row each.

    Shapes: ``org (C, 3)``, ``rot (C, 3, 3)``, targets ``(C, ...)``, the occluders of each pair's
    world ``(C, B, ...)``. Elementwise and reductions only (compiled with dynamic ``C``).
    """
    fx, fy, cx, cy = intrinsics
    ax = [[rot[:, i, j].unsqueeze(-1) for i in range(3)] for j in range(3)]  # ax[j][i], (C, 1)
    o = [org[:, i].unsqueeze(-1) for i in range(3)]
    half = 0.5 * target_size_m
    cs, sn = torch.cos(target_yaw_rad).unsqueeze(-1), torch.sin(target_yaw_rad).unsqueeze(-1)
    zero = torch.zeros_like(cs)
    box_axes = ((cs, sn, zero), (-sn, cs, zero), (zero, zero, torch.ones_like(cs)))
    c = [target_pos_enu_m[:, i].unsqueeze(-1) for i in range(3)]
    h = [half[:, i].unsqueeze(-1) for i in range(3)]
    sm = torch.tensor(samples, dtype=org.dtype, device=org.device)  # (S, 3)
    sk = [sm[:, k].view(1, -1) for k in range(3)]
    p = [c[i] + sum(sk[k] * h[k] * box_axes[k][i] for k in range(3)) for i in range(3)]  # (C, S)
    seg = [p[i] - o[i] for i in range(3)]  # camera -> point, world
    pc = [sum(seg[i] * ax[j][i] for i in range(3)) for j in range(3)]
    z = pc[2]
    zs_ = torch.where(z > 0, z, 1.0)
    u = fx * pc[0] / zs_ + (cx + 0.5)
    v = fy * pc[1] / zs_ + (cy + 0.5)
    in_view = (z >= near) & (z <= far) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    inv = [(1.0 / seg[i]).unsqueeze(-1) for i in range(3)]  # (C, S, 1)
    bmin = [(box_min_m[:, :, i] - o[i]).unsqueeze(1) for i in range(3)]  # (C, 1, B)
    bmax = [(box_max_m[:, :, i] - o[i]).unsqueeze(1) for i in range(3)]
    t_in = t_out = None
    for i in range(3):
        ta, tb = bmin[i] * inv[i], bmax[i] * inv[i]
        lo, hi = torch.minimum(ta, tb), torch.maximum(ta, tb)
        t_in = lo if t_in is None else torch.maximum(t_in, lo)
        t_out = hi if t_out is None else torch.minimum(t_out, hi)
    blocked = (t_in <= t_out) & (t_out > 0.0) & (t_in < 1.0) & box_valid.unsqueeze(1)
    ok = in_view & ~blocked.any(-1)  # (C, S)
    return ok.to(org.dtype).sum(1) * (1.0 / len(samples))


class GroundTruthDetector:
    """Ground-truth detections of a :class:`WorldBatch` seen by a camera model.

    Buildings/obstacles (occluders) and targets are read from ``world`` at every call, so targets
    moved in place are detected where they are. Usable alone (``detect(pose)``) or as the
    ``detector`` of a :class:`~isr_sim_bridge.camera.TiledCamera`.
    """

    def __init__(
        self,
        world: WorldBatch,
        camera: CameraConfig,
        config: DetectionConfig | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.config = config if config is not None else DetectionConfig()
        self.config.validate()
        camera.validate()
        self.camera = camera
        self.device = torch.device(device) if device is not None else world.device
        self.world = world if world.device == self.device else world.to(self.device)
        grid = sample_grid(self.config.samples_per_axis, self.config.sample_inset)
        self._samples = tuple(tuple(float(v) for v in row) for row in grid.tolist())
        want = self.config.cpu_kernels is None or bool(self.config.cpu_kernels)
        self.cpu_kernel = self.device.type == "cpu" and want and cpu_kernels.AVAILABLE
        """Whether detections run as the numba kernel (``DetectionConfig.cpu_kernels``)."""
        # the torch kernels (and torch.compile's import, ~3 s) are not needed with the numba one
        compiled = self.config.compile is not False and not self.cpu_kernel
        self._samples_np = np.asarray(self._samples, dtype=np.float32).reshape(-1, 3)
        self._corner_signs = np.asarray(CORNER_SIGNS, dtype=np.float32)
        self._compiled_fn = maybe_compile(project_targets, True) if compiled else None
        self._compiled_occlusion = (
            maybe_compile(occlusion_kernel, True, dynamic=True) if compiled else None
        )
        if self.cpu_kernel:  # load (or compile) the numba kernel now, not on the first frame
            w = self.world.num_worlds
            self._detect_numba(
                CameraPose(
                    pos_enu_m=torch.zeros(w, 1, 3),
                    rot_world_from_cam=torch.eye(3).expand(w, 1, 3, 3),
                )
            )

    def _kernels(self, pairs: int) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """The two stages, compiled when configured (or automatic and ``pairs`` is large).

        Stage 2 (:func:`occlusion_kernel`) is compiled with a dynamic number of candidates.
        """
        if self.config.compile or (self.config.compile is None and pairs >= COMPILE_AUTO_MIN_PAIRS):
            return self._compiled_fn, self._compiled_occlusion
        return project_targets, occlusion_kernel

    def detect(self, pose: CameraPose) -> Detections:
        """Detections ``(W, D, T, ...)`` for camera poses ``(W, D, ...)``."""
        wb = self.world
        pairs = int(
            pose.pos_enu_m.shape[0] * pose.pos_enu_m.shape[1] * wb.target_pos_enu_m.shape[1]
        )
        pose = CameraPose(
            pos_enu_m=pose.pos_enu_m.to(self.device, torch.float32),
            rot_world_from_cam=pose.rot_world_from_cam.to(self.device, torch.float32),
        )
        if self.cpu_kernel:
            return self._detect_numba(pose)
        return detect_targets(
            pose,
            wb.target_pos_enu_m,
            wb.target_size_m,
            wb.target_yaw_rad,
            wb.target_class,
            wb.target_valid,
            wb.box_min_m,
            wb.box_max_m,
            wb.box_valid,
            self.camera,
            self.config,
            self._samples,
            *self._kernels(pairs),
        )

    def visible_into(
        self,
        pos_enu_m: Tensor,
        quat_wxyz: Tensor,
        mount_rot: Tensor,
        mount_offset_flu_m: Tensor,
        boxes: Tensor,
        visible: Tensor,
    ) -> None:
        """Visible targets of cameras on bodies ``(W, D, 3)`` / ``(W, D, 4)`` (CPU tensors).

        Written into ``visible (W, D, T)`` and ``boxes (W, D, T, 4)`` (zero where not visible).

        The same decisions as :meth:`detect` (:func:`isr_sim_bridge.cpu_kernels.visible_targets`)
        without the outputs a simulation step does not need, and faster (targets outside the view
        are not projected, occlusion samples stop once decided). Needs the numba kernels
        (``cpu_kernel``).
        """
        if not self.cpu_kernel:
            raise RuntimeError(
                "visible_into needs the numba detector (DetectionConfig.cpu_kernels)"
            )
        wb = self.world
        cam = self.camera
        cfg = self.config
        width, height = parse_resolution(cam.resolution)
        fx, fy, cx, cy = camera_intrinsics(cam)
        a = as_numpy
        with threads_for(pos_enu_m.shape[0] * pos_enu_m.shape[1], 96):
            cpu_kernels.visible_targets(
                a(pos_enu_m), a(quat_wxyz), a(mount_rot.float()), a(mount_offset_flu_m.float()),
                a(wb.target_pos_enu_m), a(wb.target_size_m), torch.cos(wb.target_yaw_rad).numpy(),
                torch.sin(wb.target_yaw_rad).numpy(), a(wb.target_valid), a(wb.box_min_m),
                a(wb.box_max_m), a(wb.box_valid), self._samples_np, self._corner_signs,
                fx, fy, cx, cy, cam.near_clip_m, cam.far_clip_m, width, height,
                float(cfg.min_box_size_px), float(cfg.min_visible_fraction), boxes.numpy(),
                visible.numpy(),
            )  # fmt: skip

    def _detect_numba(self, pose: CameraPose) -> Detections:
        """:meth:`detect` with :func:`isr_sim_bridge.cpu_kernels.detect_targets` (CPU)."""
        wb = self.world
        cam = self.camera
        w, d = pose.pos_enu_m.shape[0], pose.pos_enu_m.shape[1]
        t = wb.target_pos_enu_m.shape[1]
        width, height = parse_resolution(cam.resolution)
        fx, fy, cx, cy = camera_intrinsics(cam)
        boxes = torch.empty((w, d, t, 4), dtype=torch.float32)
        in_front = torch.empty((w, d, t), dtype=torch.bool)
        visible = torch.empty((w, d, t), dtype=torch.bool)
        frac = torch.empty((w, d, t), dtype=torch.float32)
        depth = torch.empty((w, d, t), dtype=torch.float32)
        cls = torch.empty((w, d, t), dtype=torch.int64)
        cfg = self.config
        with threads_for(w * d, 96):  # ~1-3 us per camera: serial below
            cpu_kernels.detect_targets(
                pose.pos_enu_m.contiguous().numpy(),
                pose.rot_world_from_cam.contiguous().numpy(),
                wb.target_pos_enu_m.contiguous().numpy(),
                wb.target_size_m.contiguous().numpy(),
                torch.cos(wb.target_yaw_rad).numpy(),
                torch.sin(wb.target_yaw_rad).numpy(),
                wb.target_class.contiguous().numpy(),
                wb.target_valid.contiguous().numpy(),
                wb.box_min_m.contiguous().numpy(),
                wb.box_max_m.contiguous().numpy(),
                wb.box_valid.contiguous().numpy(),
                self._samples_np,
                self._corner_signs,
                fx, fy, cx, cy, cam.near_clip_m, cam.far_clip_m, width, height,
                float(cfg.min_box_size_px), float(cfg.min_visible_fraction),
                boxes.numpy(), in_front.numpy(), visible.numpy(), frac.numpy(), depth.numpy(),
                cls.numpy(),
            )  # fmt: skip
        return Detections(
            boxes_xyxy=boxes,
            class_id=cls,
            target_id=torch.arange(t).expand(w, d, t),
            visible=visible,
            visible_fraction=frac,
            depth_m=depth,
        )
