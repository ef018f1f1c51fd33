"""Exact, slow and simple reference ray caster (float64, plain Python loops) for the tests.

It defines the image that :class:`~isr_sim_bridge.camera.TiledCamera` must reproduce, written
independently of the fast renderer (only the documented constants and rules are shared: face
shades, sky gradient, mip rule). One ray per pixel centre, intersected exactly with

- the ground plane ``z = 0`` (ray/plane),
- every building/obstacle box (ray/AABB, slab method),
- every target box (ray/oriented box: the ray is rotated into the box frame, then slab method),

keeping the nearest surface with optical depth ``t`` in ``[near, far]``. For a box the surface
depth is ``max(t_enter, near)`` (a camera whose near plane cuts into a box sees that box). A
box hit at the same depth as the ground wins. Colours follow :mod:`isr_sim_bridge.camera`.

Also exact reference ground-truth detections (projection of the 8 corners with near-plane
clipping, and the visible fraction of the sample grid) for :mod:`isr_sim_bridge.detections`.
Everything here is for validation: clarity over speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from isr_sim_bridge.camera import FACE_SHADE, CameraConfig, parse_resolution
from isr_sim_bridge.detections import DetectionConfig
from isr_sim_bridge.world_batch import WorldBatch


@dataclass
class Hit:
    """A ray/box intersection: entry and exit depth along the ray, and the entry face."""

    t_enter: float
    t_exit: float
    face: int
    """0 = +x face, 1 = -x, 2 = +y, 3 = -y, 4 = +z (top), 5 = -z (bottom), box frame."""


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a unit quaternion ``(w, x, y, z)`` (body -> world)."""
    w, x, y, z = (float(v) for v in q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def intrinsics(config: CameraConfig) -> tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)``: square pixels, principal point at the image centre."""
    width, height = parse_resolution(config.resolution)
    fx = (width / 2.0) / math.tan(math.radians(config.horizontal_fov_deg) / 2.0)
    return fx, fx, (width - 1) / 2.0, (height - 1) / 2.0


def camera_in_world(
    config: CameraConfig, pos: np.ndarray, quat: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Optical centre (3,) and rotation optical -> world (3, 3) of one drone.

    In body FLU the optical z axis points forward pitched down by ``mount_pitch_deg``, optical x
    points right (-y body), optical y = z cross x (down for an unpitched camera).
    """
    p = math.radians(config.mount_pitch_deg)
    z_axis = np.array([math.cos(p), 0.0, -math.sin(p)])
    x_axis = np.array([0.0, -1.0, 0.0])
    y_axis = np.cross(z_axis, x_axis)
    body_from_cam = np.stack([x_axis, y_axis, z_axis], axis=1)
    world_from_body = quat_to_matrix(quat)
    origin = np.asarray(pos, dtype=np.float64) + world_from_body @ np.asarray(
        config.mount_offset_flu_m
    )
    return origin, world_from_body @ body_from_cam


def intersect_ground(origin: np.ndarray, direction: np.ndarray) -> float | None:
    """Depth ``t > 0`` where the ray meets the plane ``z = 0`` from above, else None."""
    if direction[2] >= 0.0:
        return None
    t = -origin[2] / direction[2]
    return t if t > 0.0 else None


def intersect_aabb(
    origin: np.ndarray, direction: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> Hit | None:
    """Slab test of a ray against the axis-aligned box ``[lo, hi]``.

    None when the ray's line misses the box (``t_enter > t_exit``); ``t`` may be negative
    (behind the origin).
    """
    t_enter, t_exit, face = -math.inf, math.inf, -1
    for axis in range(3):
        o, d = origin[axis], direction[axis]
        if d == 0.0:
            if o < lo[axis] or o > hi[axis]:
                return None
            continue
        t1 = (lo[axis] - o) / d
        t2 = (hi[axis] - o) / d
        near_t, far_t = min(t1, t2), max(t1, t2)
        if near_t > t_enter:
            t_enter = near_t
            # moving +axis: enters through the -axis face (odd id); moving -axis: the +axis face
            face = 2 * axis + (1 if d > 0 else 0)
        t_exit = min(t_exit, far_t)
    if t_enter > t_exit:
        return None
    return Hit(t_enter, t_exit, face)


def intersect_oriented_box(
    origin: np.ndarray, direction: np.ndarray, center: np.ndarray, half: np.ndarray, yaw: float
) -> Hit | None:
    """Ray against a box rotated by ``yaw`` about z.

    The ray is rotated into the box frame, then :func:`intersect_aabb` (depths are unchanged by
    the rotation).
    """
    c, s = math.cos(yaw), math.sin(yaw)
    to_local = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    return intersect_aabb(to_local @ (origin - center), to_local @ direction, -half, half)


def mip_levels(texture: np.ndarray, levels: int) -> list[np.ndarray]:
    """Mip levels of an ``(Hy, Hx, 3)`` uint8 texture.

    Each level is the rounded mean ``(a + b + c + d + 2) // 4`` of 2x2 texels of the level below
    (last row/column repeated for odd sizes), until ``levels`` levels or a side below 4 texels
    stops it.
    """
    out = [texture.astype(np.int64)]
    while len(out) < levels:
        cur = out[-1]
        if min(cur.shape[0], cur.shape[1]) < 4:
            break
        if cur.shape[0] % 2:
            cur = np.concatenate([cur, cur[-1:]], axis=0)
        if cur.shape[1] % 2:
            cur = np.concatenate([cur, cur[:, -1:]], axis=1)
        block_sum = cur[0::2, 0::2] + cur[1::2, 0::2] + cur[0::2, 1::2] + cur[1::2, 1::2]
        out.append((block_sum + 2) // 4)
    return out


class ReferenceWorld:
    """One world of a batch in plain numpy form."""

    def __init__(self, world: WorldBatch, index: int, config: CameraConfig) -> None:
        def arr(t: Tensor) -> np.ndarray:
            return t[index].detach().cpu().double().numpy()

        self.x_min, self.y_min = world.x_min_m, world.y_min_m
        self.res = world.texture_res_m
        self.levels = mip_levels(world.ground_rgb[index].cpu().numpy(), config.mip_levels)
        self.boxes = []  # (lo, hi, rgb)
        for lo, hi, rgb, ok in zip(
            arr(world.box_min_m),
            arr(world.box_max_m),
            arr(world.box_rgb),
            arr(world.box_valid),
            strict=True,
        ):
            if ok:
                self.boxes.append((lo, hi, rgb))
        self.targets = []  # (center, half, yaw, rgb, class, index)
        for i, (c, size, yaw, rgb, cls, ok) in enumerate(
            zip(
                arr(world.target_pos_enu_m),
                arr(world.target_size_m),
                arr(world.target_yaw_rad),
                arr(world.target_rgb),
                arr(world.target_class),
                arr(world.target_valid),
                strict=True,
            )
        ):
            if ok:
                self.targets.append((c, size / 2.0, float(yaw), rgb, int(cls), i))

    def ground_color(
        self, x: float, y: float, level: int, outside: tuple[int, int, int]
    ) -> np.ndarray:
        """Nearest texel of mip ``level`` under ``(x, y)``, or the outside colour."""
        tex = self.levels[level]
        texel = self.res * 2**level
        ix = math.floor((x - self.x_min) / texel)
        iy = math.floor((y - self.y_min) / texel)
        if 0 <= ix < tex.shape[1] and 0 <= iy < tex.shape[0]:
            return tex[iy, ix].astype(np.float64)
        return np.array(outside, dtype=np.float64)


def shaded(rgb: np.ndarray, face: int) -> np.ndarray:
    """Colour of a box face: ``floor(c * FACE_SHADE[face] + 0.5)``."""
    return np.clip(np.floor(np.asarray(rgb, dtype=np.float64) * FACE_SHADE[face] + 0.5), 0, 255)


def trace(
    scene: ReferenceWorld,
    config: CameraConfig,
    origin: np.ndarray,
    direction: np.ndarray,
    fx: float,
) -> tuple[np.ndarray, float]:
    """Colour (3,) and depth of one ray.

    ``direction`` has optical z component 1, so the ray parameter is the optical depth.
    """
    near, far = config.near_clip_m, config.far_clip_m
    best_t, best_rgb = math.inf, None
    for lo, hi, rgb in scene.boxes:
        hit = intersect_aabb(origin, direction, lo, hi)
        if hit is None:
            continue
        t = max(hit.t_enter, near)
        if hit.t_exit >= t and t <= far and t < best_t:
            best_t, best_rgb = t, shaded(rgb, hit.face)
    for center, half, yaw, rgb, _, _ in scene.targets:
        hit = intersect_oriented_box(origin, direction, center, half, yaw)
        if hit is None:
            continue
        t = max(hit.t_enter, near)
        if hit.t_exit >= t and t <= far and t < best_t:
            best_t, best_rgb = t, shaded(rgb, hit.face)
    t_ground = intersect_ground(origin, direction)
    if t_ground is not None and near <= t_ground <= far and t_ground < best_t:
        lod = math.log2(math.sqrt(2.0) * t_ground / (fx * scene.res)) + config.mip_bias
        level = min(max(math.floor(lod), 0), len(scene.levels) - 1)
        x = origin[0] + t_ground * direction[0]
        y = origin[1] + t_ground * direction[1]
        return scene.ground_color(x, y, level, config.outside_rgb), t_ground
    if best_rgb is not None:
        return best_rgb, best_t
    s = min(max(direction[2] / np.linalg.norm(direction), 0.0), 1.0)
    sky = [
        math.floor(h + (z - h) * s + 0.5)
        for h, z in zip(config.sky_horizon_rgb, config.sky_zenith_rgb, strict=True)
    ]
    return np.array(sky, dtype=np.float64), math.inf


def render_reference(
    world: WorldBatch,
    config: CameraConfig,
    pos_enu_m: Tensor,
    quat_wxyz: Tensor,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference images of every drone, one Python loop iteration per pixel.

    Returns ``rgb (W, D, H, W_px, 3)`` uint8 and ``depth (W, D, H, W_px)`` float64 (``inf`` =
    nothing within the far clip).
    """
    width, height = parse_resolution(config.resolution)
    fx, fy, cx, cy = intrinsics(config)
    pos = pos_enu_m.detach().cpu().double().numpy()
    quat = quat_wxyz.detach().cpu().double().numpy()
    nw, nd = pos.shape[0], pos.shape[1]
    rgb = np.zeros((nw, nd, height, width, 3), dtype=np.uint8)
    depth = np.zeros((nw, nd, height, width), dtype=np.float64)
    for w in range(nw):
        scene = ReferenceWorld(world, w, config)
        for d in range(nd):
            origin, world_from_cam = camera_in_world(config, pos[w, d], quat[w, d])
            for v in range(height):
                for u in range(width):
                    ray_cam = np.array([(u - cx) / fx, (v - cy) / fy, 1.0])
                    color, t = trace(scene, config, origin, world_from_cam @ ray_cam, fx)
                    rgb[w, d, v, u] = color.astype(np.uint8)
                    depth[w, d, v, u] = t
    return rgb, depth


# ------------------------------------------------------------------------------ detections


def project_box_reference(
    corners: np.ndarray,
    origin: np.ndarray,
    world_from_cam: np.ndarray,
    config: CameraConfig,
) -> tuple[float, float, float, float] | None:
    """Unclipped pixel-edge bounds of the part of a box beyond the near plane.

    ``corners`` in the bit order of ``box_corners``; None when no part is beyond the near plane.
    """
    fx, fy, cx, cy = intrinsics(config)
    near = config.near_clip_m
    cam = [(world_from_cam.T @ (c - origin)) for c in corners]
    points = [p for p in cam if p[2] >= near]
    for i in range(8):
        for k in range(3):
            j = i | (1 << k)
            if j == i:
                continue
            a, b = cam[i], cam[j]
            if (a[2] - near) * (b[2] - near) < 0:
                s = (near - a[2]) / (b[2] - a[2])
                points.append(a + s * (b - a))
    if not points:
        return None
    us = [fx * p[0] / p[2] + cx + 0.5 for p in points]
    vs = [fy * p[1] / p[2] + cy + 0.5 for p in points]
    return min(us), min(vs), max(us), max(vs)


def _corners(center: np.ndarray, half: np.ndarray, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    out = []
    for i in range(8):
        sign = np.array([1.0 if (i >> k) & 1 else -1.0 for k in range(3)])
        lx, ly, lz = half * sign
        out.append(center + np.array([c * lx - s * ly, s * lx + c * ly, lz]))
    return np.array(out)


def _segment_blocked(origin: np.ndarray, point: np.ndarray, boxes: list) -> bool:
    seg = point - origin
    for lo, hi, _ in boxes:
        hit = intersect_aabb(origin, seg, lo, hi)
        if hit is not None and hit.t_exit > 0.0 and hit.t_enter < 1.0:
            return True
    return False


def detections_reference(
    world: WorldBatch,
    camera: CameraConfig,
    config: DetectionConfig,
    pos_enu_m: Tensor,
    quat_wxyz: Tensor,
) -> list[list[list[dict]]]:
    """Reference detections ``[w][d] -> list`` over the valid targets of world ``w``.

    Each entry is a dict ``target_id, class_id, box`` (clipped xyxy, ``None`` when entirely behind
    the near plane), ``visible_fraction, visible``.
    """
    width, height = parse_resolution(camera.resolution)
    fx, fy, cx, cy = intrinsics(camera)
    pos = pos_enu_m.detach().cpu().double().numpy()
    quat = quat_wxyz.detach().cpu().double().numpy()
    n = config.samples_per_axis
    axis = [0.0] if n == 1 else list(np.linspace(-config.sample_inset, config.sample_inset, n))
    grid = [np.array([x, y, z]) for z in axis for y in axis for x in axis]
    out = []
    for w in range(pos.shape[0]):
        scene = ReferenceWorld(world, w, camera)
        per_world = []
        for d in range(pos.shape[1]):
            origin, world_from_cam = camera_in_world(camera, pos[w, d], quat[w, d])
            per_drone = []
            for center, half, yaw, _, cls, index in scene.targets:
                bounds = project_box_reference(
                    _corners(center, half, yaw), origin, world_from_cam, camera
                )
                box = None
                if bounds is not None:
                    box = (
                        min(max(bounds[0], 0.0), width),
                        min(max(bounds[1], 0.0), height),
                        min(max(bounds[2], 0.0), width),
                        min(max(bounds[3], 0.0), height),
                    )
                ok = 0
                c, s = math.cos(yaw), math.sin(yaw)
                for g in grid:
                    lx, ly, lz = g * half
                    pt = center + np.array([c * lx - s * ly, s * lx + c * ly, lz])
                    pc = world_from_cam.T @ (pt - origin)
                    if not camera.near_clip_m <= pc[2] <= camera.far_clip_m:
                        continue
                    u = fx * pc[0] / pc[2] + cx + 0.5
                    v = fy * pc[1] / pc[2] + cy + 0.5
                    if not (0 <= u < width and 0 <= v < height):
                        continue
                    if not _segment_blocked(origin, pt, scene.boxes):
                        ok += 1
                frac = ok / len(grid)
                visible = (
                    box is not None
                    and frac > 0
                    and frac >= config.min_visible_fraction
                    and box[2] - box[0] >= config.min_box_size_px
                    and box[3] - box[1] >= config.min_box_size_px
                )
                per_drone.append(
                    {
                        "target_id": index,
                        "class_id": cls,
                        "box": box,
                        "visible_fraction": frac,
                        "visible": visible,
                    }
                )
            per_world.append(per_drone)
        out.append(per_world)
    return out
