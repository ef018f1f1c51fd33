"""Tests of the tiled camera, the reference ray caster and the ground-truth detections."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from isr_direct_dynamics.config import ConfigError, from_dict
from isr_direct_dynamics.math3d import quat_from_euler
from isr_sim_bridge.camera import FACE_SHADE, CameraConfig, TiledCamera, parse_resolution
from isr_sim_bridge.detections import DetectionConfig, GroundTruthDetector, top_k
from isr_sim_bridge.raycast_reference import (
    camera_in_world,
    detections_reference,
    intersect_aabb,
    intersect_oriented_box,
    render_reference,
)
from isr_sim_bridge.world_batch import WorldBatch

pytestmark = pytest.mark.unit

MAGENTA = (255, 0, 255)


def make_world(
    boxes: list[tuple[tuple[float, float, float], tuple[float, float, float], tuple[int, int, int]]]
    | None = None,
    targets: list[
        tuple[
            tuple[float, float, float], tuple[float, float, float], float, int, tuple[int, int, int]
        ]
    ]
    | None = None,
    num_worlds: int = 1,
    size_m: float = 100.0,
    res_m: float = 0.5,
    seed: int = 0,
) -> WorldBatch:
    """A small hand-built world: a noisy checker ground, boxes ``(min, max, rgb)`` and targets
    ``(centre, size, yaw, class, rgb)``, identical in every world."""
    if boxes is None:
        boxes = [
            ((5.0, 10.0, 0.0), (15.0, 18.0, 12.0), (180, 90, 70)),
            ((-20.0, 15.0, 0.0), (-10.0, 30.0, 20.0), (150, 150, 160)),
            ((-5.0, -25.0, 0.0), (-1.0, -21.0, 6.0), (60, 110, 60)),
        ]
    if targets is None:
        targets = [
            ((0.0, 12.0, 1.0), (5.0, 2.0, 2.0), 0.5, 0, (220, 30, 30)),
            ((8.0, 25.0, 0.9), (0.5, 0.5, 1.8), 0.0, 1, (250, 250, 0)),
            ((-8.0, -10.0, 1.5), (4.0, 3.0, 3.0), 1.2, 2, (40, 40, 220)),
        ]
    gen = torch.Generator().manual_seed(seed)
    n = int(round(size_m / res_m))
    iy, ix = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    chk = ((ix // 6 + iy // 6) % 2).float()
    base = torch.stack((60 + 70 * chk, 110 + 40 * chk, 50 + 30 * chk), dim=-1)
    noise = torch.randint(0, 40, (num_worlds, n, n, 3), generator=gen).float()
    w, b, t = num_worlds, len(boxes), len(targets)

    def rep(values, dtype):
        x = torch.tensor(values, dtype=dtype)
        return x.expand(w, *x.shape).clone()

    return WorldBatch(
        x_min_m=-size_m / 2,
        y_min_m=-size_m / 2,
        size_x_m=size_m,
        size_y_m=size_m,
        texture_res_m=res_m,
        ground_rgb=(base + noise).clamp(0, 255).to(torch.uint8),
        ground_class=torch.zeros(w, n, n, dtype=torch.uint8),
        box_min_m=rep([bx[0] for bx in boxes], torch.float32).view(w, b, 3),
        box_max_m=rep([bx[1] for bx in boxes], torch.float32).view(w, b, 3),
        box_rgb=rep([bx[2] for bx in boxes], torch.uint8).view(w, b, 3),
        box_kind=torch.zeros(w, b, dtype=torch.int64),
        box_valid=torch.ones(w, b, dtype=torch.bool),
        target_pos_enu_m=rep([tg[0] for tg in targets], torch.float32).view(w, t, 3),
        target_size_m=rep([tg[1] for tg in targets], torch.float32).view(w, t, 3),
        target_yaw_rad=rep([tg[2] for tg in targets], torch.float32).view(w, t),
        target_class=rep([tg[3] for tg in targets], torch.int64).view(w, t),
        target_rgb=rep([tg[4] for tg in targets], torch.uint8).view(w, t, 3),
        target_valid=torch.ones(w, t, dtype=torch.bool),
        target_speed_m_s=torch.zeros(w, t),
        target_path_xy_m=torch.zeros(w, t, 2, 2),
        target_path_len=torch.zeros(w, t, dtype=torch.int64),
        target_path_s_m=torch.zeros(w, t),
        nfz_min_m=torch.zeros(w, 0, 2),
        nfz_max_m=torch.zeros(w, 0, 2),
        nfz_valid=torch.zeros(w, 0, dtype=torch.bool),
        geofence_min_m=rep([-45.0, -45.0, 0.0], torch.float32),
        geofence_max_m=rep([45.0, 45.0, 60.0], torch.float32),
        spawn_min_m=rep([-10.0, -10.0], torch.float32),
        spawn_max_m=rep([10.0, 10.0], torch.float32),
    )


def poses(rows: list[tuple[float, float, float, float, float, float]], num_worlds: int = 1):
    """``(x, y, z, roll, pitch, yaw)`` rows -> ``(pos (W, D, 3), quat (W, D, 4))``."""
    a = torch.tensor(rows, dtype=torch.float32)
    pos = a[:, :3].expand(num_worlds, -1, -1).contiguous()
    quat = quat_from_euler(a[:, 3], a[:, 4], a[:, 5]).expand(num_worlds, -1, -1).contiguous()
    return pos, quat


def agreement(fast_rgb: torch.Tensor, ref_rgb: np.ndarray, tol: int = 2) -> float:
    diff = np.abs(fast_rgb.cpu().numpy().astype(np.int64) - ref_rgb.astype(np.int64)).max(-1)
    return float((diff <= tol).mean())


def shaded(rgb, face: int) -> tuple[int, ...]:
    return tuple(int(math.floor(c * FACE_SHADE[face] + 0.5)) for c in rgb)


# ------------------------------------------------------------------------------ configuration


def test_presets_and_custom_sizes():
    assert CameraConfig.from_preset("training").width_px == 128
    assert (
        CameraConfig.from_preset("evaluation").width_px,
        CameraConfig.from_preset("evaluation").height_px,
    ) == (
        320,
        240,
    )
    assert parse_resolution("full") == (640, 480)
    assert parse_resolution("80x80") == (80, 80)
    assert parse_resolution(" 100X60 ") == (100, 60)
    with pytest.raises(ConfigError, match="unknown resolution 'huge'.*evaluation.*full.*training"):
        CameraConfig.from_preset("huge")
    with pytest.raises(ConfigError, match="render_interval"):
        CameraConfig(render_interval=0).validate()
    cfg = from_dict(CameraConfig, {"resolution": "80x80", "render_interval": 4})
    assert (cfg.width_px, cfg.height_px, cfg.render_interval) == (80, 80, 4)
    with pytest.raises(ConfigError, match="unknown config key 'fov'"):
        from_dict(CameraConfig, {"fov": 90})


@pytest.mark.parametrize("resolution", ["32x32", "30x22", "17x9"])
def test_output_shapes_and_layout(resolution, device):
    world = make_world(num_worlds=2).to(device)
    cfg = CameraConfig(resolution=resolution, depth=True)
    cam = TiledCamera(world, 3, cfg, device)
    pos, quat = poses([(0, 0, 30, 0, 0, 0), (5, 5, 20, 0, 0, 1), (-5, 0, 40, 0, 0, 2)], 2)
    out = cam.render(pos.to(device), quat.to(device))
    w, h = parse_resolution(resolution)
    assert out.rgb.shape == (2, 3, h, w, 3) and out.rgb.dtype == torch.uint8
    assert out.rgba.shape == (2, 3, h, w, 4) and out.rgba.is_contiguous()
    assert torch.equal(out.rgb, out.rgba[..., :3]) and bool((out.rgba[..., 3] == 255).all())
    assert out.depth_m.shape == (2, 3, h, w) and out.depth_m.dtype == torch.float32
    assert out.pose.rot_world_from_cam.shape == (2, 3, 3, 3)
    assert out.rendered and out.detections is None


def test_camera_matrix_and_nadir_projection(device):
    """A downward camera (pitch 90) at height h over the origin: analytic pixel positions."""
    cfg = CameraConfig(
        resolution="64x48", mount_pitch_deg=90.0, mount_offset_flu_m=(0.0, 0.0, 0.0), depth=True
    )
    world = make_world(boxes=[], targets=[((6.0, -4.0, 0.5), (1.0, 1.0, 1.0), 0.0, 0, MAGENTA)]).to(
        device
    )
    cam = TiledCamera(world, 1, cfg, device)
    fx, fy, cx, cy = cam.camera_matrix()
    assert fx == pytest.approx(32.0 / math.tan(math.radians(45.0)))
    assert (fy, cx, cy) == (pytest.approx(fx), 31.5, 23.5)
    h = 30.0
    pos, quat = poses([(0, 0, h, 0, 0, 0)])
    out = cam.render(pos.to(device), quat.to(device))
    # image up = body forward (+x east), image right = body right (-y); top face at z = 1
    u = cx + fx * 4.0 / (h - 1.0)
    v = cy - fy * 6.0 / (h - 1.0)
    px = out.rgb[0, 0, round(v), round(u)].tolist()
    assert px == list(shaded(MAGENTA, 4))  # the top face
    assert out.depth_m[0, 0, round(v), round(u)].item() == pytest.approx(h - 1.0, abs=1e-3)
    det = GroundTruthDetector(world, cfg, DetectionConfig(min_box_size_px=0.5)).detect(out.pose)
    box = det.boxes_xyxy[0, 0, 0]
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    assert abs(centre[0].item() - (u + 0.5)) < 1.0 and abs(centre[1].item() - (v + 0.5)) < 1.0
    assert bool(det.visible[0, 0, 0])


def test_target_lands_on_computed_pixel(device):
    """A target put on the ray of a chosen pixel (reference camera model) is drawn there."""
    cfg = CameraConfig(resolution="48x40")
    pos, quat = poses([(3.0, -2.0, 25.0, 0.1, -0.05, 0.7)])
    origin, rot = camera_in_world(cfg, pos[0, 0].double().numpy(), quat[0, 0].double().numpy())
    fx = (48 / 2) / math.tan(math.radians(45.0))
    u, v = 30, 12
    ray = rot @ np.array([(u - 23.5) / fx, (v - 19.5) / fx, 1.0])
    centre = origin + 20.0 * ray
    world = make_world(
        boxes=[], targets=[(tuple(centre.tolist()), (0.6, 0.6, 0.6), 0.3, 1, MAGENTA)]
    ).to(device)
    cam = TiledCamera(
        world,
        1,
        cfg,
        device,
        detector=GroundTruthDetector(world, cfg, DetectionConfig(min_box_size_px=0.5)),
    )
    out = cam.render(pos.to(device), quat.to(device))
    img = out.rgb[0, 0].cpu()
    hit = (img.int() - torch.tensor(shaded(MAGENTA, 4)).int()).abs().sum(-1) < 200  # any face
    hit |= (img[..., 0] > 100) & (img[..., 1] < 30) & (img[..., 2] > 100)
    ys, xs = torch.nonzero(hit, as_tuple=True)
    assert len(xs) > 0
    assert abs(xs.float().mean().item() - u) <= 1.0 and abs(ys.float().mean().item() - v) <= 1.0
    box = out.detections.boxes_xyxy[0, 0, 0]
    assert abs((box[0] + box[2]).item() / 2 - (u + 0.5)) <= 1.0
    assert abs((box[1] + box[3]).item() / 2 - (v + 0.5)) <= 1.0


# ------------------------------------------------------------------------------ occlusion


def test_target_behind_building_is_hidden_and_not_detected(device):
    target = ((0.0, 30.0, 1.0), (4.0, 2.0, 2.0), 0.0, 0, MAGENTA)
    wall = ((-10.0, 15.0, 0.0), (10.0, 20.0, 25.0), (120, 120, 120))
    cfg = CameraConfig(resolution="64x48", depth=True)
    pos, quat = poses([(0.0, 0.0, 12.0, 0.0, -0.3, math.pi / 2)])  # looking north at the wall
    results = {}
    for name, boxes in (("open", []), ("occluded", [wall])):
        world = make_world(boxes=boxes, targets=[target]).to(device)
        det = GroundTruthDetector(world, cfg, DetectionConfig())
        out = TiledCamera(world, 1, cfg, device, detector=det).render(
            pos.to(device), quat.to(device)
        )
        img = out.rgb[0, 0].cpu()
        magenta = (img[..., 0] > 100) & (img[..., 1] < 20) & (img[..., 2] > 100)
        results[name] = (int(magenta.sum()), out.detections, out.depth_m[0, 0].cpu())
    n_open, det_open, _ = results["open"]
    n_occ, det_occ, depth_occ = results["occluded"]
    assert n_open > 5 and bool(det_open.visible[0, 0, 0])
    assert det_open.visible_fraction[0, 0, 0].item() == pytest.approx(1.0)
    assert n_occ == 0, "the target is drawn through the building"
    assert not bool(det_occ.visible[0, 0, 0]) and det_occ.visible_fraction[0, 0, 0].item() == 0.0
    # the box of the hidden target still is its projection; the depth there is the wall's
    box = det_occ.boxes_xyxy[0, 0, 0]
    cu, cv = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
    assert depth_occ[cv, cu].item() < det_occ.depth_m[0, 0, 0].item() - 5.0


def test_partial_occlusion_fraction(device):
    """A target half behind a wall edge: visible fraction 0.5 with 2x2x2 samples."""
    target = ((0.0, 30.0, 1.0), (4.0, 2.0, 2.0), 0.0, 0, MAGENTA)
    wall = ((0.0, 15.0, 0.0), (10.0, 20.0, 25.0), (120, 120, 120))  # hides the east half
    cfg = CameraConfig(resolution="64x48")
    pos, quat = poses([(0.0, 0.0, 12.0, 0.0, -0.3, math.pi / 2)])
    world = make_world(boxes=[wall], targets=[target]).to(device)
    det = GroundTruthDetector(world, cfg, DetectionConfig(min_visible_fraction=0.25)).detect(
        TiledCamera(world, 1, cfg, device).camera_pose(pos.to(device), quat.to(device))
    )
    assert det.visible_fraction[0, 0, 0].item() == pytest.approx(0.5)
    assert bool(det.visible[0, 0, 0])


# ------------------------------------------------------------------------------ semantics


def test_determinism(device):
    world = make_world(num_worlds=2).to(device)
    cfg = CameraConfig(resolution="40x32", depth=True)
    pos, quat = poses([(0, 0, 30, 0.1, 0.0, 0.3), (-10, 5, 15, 0.0, 0.2, 2.0)], 2)
    a = TiledCamera(world, 2, cfg, device).render(pos.to(device), quat.to(device))
    cam = TiledCamera(world, 2, cfg, device)
    b = cam.render(pos.to(device), quat.to(device))
    c = cam.render(pos.to(device), quat.to(device))
    assert torch.equal(a.rgba, b.rgba) and torch.equal(b.rgba, c.rgba)
    assert torch.equal(a.depth_m, c.depth_m)


def test_render_interval_skipping(device):
    world = make_world().to(device)
    cam = TiledCamera(world, 2, CameraConfig(resolution="16x16", render_interval=3), device)
    pos, quat = poses([(0, 0, 30, 0, 0, 0), (5, 5, 25, 0, 0, 1)])
    pos, quat = pos.to(device), quat.to(device)
    outs = [cam.step(pos + k, quat) for k in range(7)]
    assert [o.rendered for o in outs] == [True, False, False, True, False, False, True]
    assert [o.frame_step for o in outs] == [0, 0, 0, 3, 3, 3, 6]
    assert outs[1].rgba is outs[0].rgba and outs[2].rgb.data_ptr() == outs[0].rgb.data_ptr()
    assert not torch.equal(outs[3].rgba, outs[0].rgba)  # the drones moved
    forced = cam.step(pos, quat, force_render=True)  # step 7
    assert forced.rendered and forced.frame_step == 7
    assert not cam.step(pos, quat).rendered  # step 8
    cam.reset()
    again = cam.step(pos, quat)
    assert again.rendered and again.frame_step == 0
    assert torch.equal(again.rgba, cam.render(pos, quat).rgba)


def test_render_rejects_wrong_shapes(device):
    cam = TiledCamera(make_world().to(device), 2, CameraConfig(resolution="16x16"), device)
    with pytest.raises(ValueError, match="do not match"):
        cam.render(torch.zeros(1, 3, 3, device=device), torch.zeros(1, 3, 4, device=device))


def test_moving_targets_are_read_at_every_render(device):
    world = make_world(boxes=[], targets=[((0.0, 10.0, 1.0), (4.0, 2.0, 2.0), 0.0, 0, MAGENTA)]).to(
        device
    )
    cam = TiledCamera(world, 1, CameraConfig(resolution="48x48", mount_pitch_deg=90.0), device)
    pos, quat = poses([(0.0, 10.0, 30.0, 0, 0, 0)])
    pos, quat = pos.to(device), quat.to(device)

    def magenta_centre():
        img = cam.render(pos, quat).rgb[0, 0].cpu()
        ys, xs = torch.nonzero(
            (img[..., 0] > 100) & (img[..., 1] < 20) & (img[..., 2] > 100), as_tuple=True
        )
        return xs.float().mean().item(), ys.float().mean().item()

    before = magenta_centre()
    world.target_pos_enu_m[0, 0, 0] += 3.0  # 3 m east: up in the nadir image
    after = magenta_centre()
    assert after[1] < before[1] - 2


# ------------------------------------------------------------------------------ reference


def test_reference_intersections():
    o = np.array([0.0, 0.0, 10.0])
    hit = intersect_aabb(
        o, np.array([0.0, 0.0, -1.0]), np.array([-1.0, -1.0, 0.0]), np.array([1.0, 1.0, 4.0])
    )
    assert hit.t_enter == pytest.approx(6.0) and hit.t_exit == pytest.approx(10.0) and hit.face == 4
    assert (
        intersect_aabb(
            o, np.array([1.0, 0.0, 0.0]), np.array([-1.0, -1.0, 0.0]), np.array([1.0, 1.0, 4.0])
        )
        is None
    )
    side = intersect_aabb(
        np.array([-5.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]), -np.ones(3), np.ones(3)
    )
    assert side.t_enter == pytest.approx(4.0) and side.face == 1  # moving +x enters the -x face
    rot = intersect_oriented_box(
        np.array([-5.0, 0.0, 0.0]),
        np.array([1.0, 0.0, 0.0]),
        np.zeros(3),
        np.array([2.0, 0.5, 1.0]),
        math.pi / 2,
    )
    assert rot.t_enter == pytest.approx(4.5)  # rotated 90 deg: the 0.5 half width faces the ray


SCENES = {
    # name: (world kwargs, poses, config overrides)
    "oblique_buildings": (
        {},
        [
            (0, 0, 8, 0.05, -0.1, 1.2),
            (-25, 0, 18, 0.0, 0.15, 0.4),
            (10, 0, 25, -0.2, 0.0, 1.9),
            (-3, -5, 4, 0, 0, 2.6),
        ],
        {},
    ),
    "high_nadir_mip": (
        {},
        [(0, 0, 55, 0, 0, 0.3), (20, -20, 40, 0.05, 0.05, -2.0)],
        {"mount_pitch_deg": 80.0},
    ),
    "near_clip_inside_boxes": (
        {},
        [(10, 9.5, 5, 0, 0, 1.57), (-14, 22, 10, 0, 0.3, 0.0), (0.0, 11.0, 2.5, 0, 0, 0.3)],
        {"near_clip_m": 0.5, "resolution": "30x22"},
    ),
    "mip_bias_coarse": (
        {},
        [(0, 0, 30, 0, 0, 0.3), (-10, 0, 12, 0.1, 0.0, 1.0)],
        {"mip_bias": 1.0},
    ),
    "looking_up_at_tower": (
        {},
        [(-30, 22, 3, 0, -0.5, 0.0), (-15, 5, 6, 0.3, -0.2, 1.4)],
        {"mount_pitch_deg": 0.0},
    ),
}


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_fast_renderer_matches_reference(scene, device):
    kwargs, rows, overrides = SCENES[scene]
    world = make_world(**kwargs)
    cfg = CameraConfig(**{"resolution": "32x32", "depth": True, **overrides})
    pos, quat = poses(rows)
    out = TiledCamera(world.to(device), len(rows), cfg, device).render(
        pos.to(device), quat.to(device)
    )
    ref_rgb, ref_depth = render_reference(world, cfg, pos, quat)
    assert agreement(out.rgb, ref_rgb) >= 0.95
    depth = out.depth_m.cpu().numpy().astype(np.float64)
    both = np.isfinite(depth) & np.isfinite(ref_depth)
    same_inf = np.isfinite(depth) == np.isfinite(ref_depth)
    close = np.zeros_like(same_inf)
    close[both] = np.abs(depth[both] - ref_depth[both]) <= 1e-3 * ref_depth[both] + 1e-3
    close |= same_inf & ~np.isfinite(ref_depth)
    assert close.mean() >= 0.95
    # the scene shows what it should: more than the ground
    if scene == "oblique_buildings":
        wall_colors = {shaded((150, 150, 160), f) for f in range(4)} | {
            shaded((180, 90, 70), f) for f in range(4)
        }
        pixels = {tuple(p) for p in ref_rgb.reshape(-1, 3).tolist()}
        assert len(wall_colors & pixels) >= 2, "no building walls in view"


def test_fast_renderer_matches_reference_on_generated_world(device):
    world_mod = pytest.importorskip("isr_sim_bridge.world")
    world = world_mod.generate_worlds(world_mod.WorldSpec(), [5], "cpu")
    cfg = CameraConfig(resolution="24x24", depth=True)
    lo, hi = world.spawn_min_m[0], world.spawn_max_m[0]
    mid = ((lo + hi) / 2).tolist()
    rows = [(mid[0], mid[1], 25.0, 0.0, 0.05, 0.5), (mid[0] + 5, mid[1] - 5, 45.0, 0.1, 0.0, 3.5)]
    pos, quat = poses(rows)
    out = TiledCamera(world.to(device), 2, cfg, device).render(pos.to(device), quat.to(device))
    ref_rgb, _ = render_reference(world, cfg, pos, quat)
    assert agreement(out.rgb, ref_rgb) >= 0.95


# ------------------------------------------------------------------------------ detections


def test_detections_match_reference(device):
    world = make_world()
    cfg = CameraConfig(resolution="64x48")
    dcfg = DetectionConfig(min_box_size_px=1.0)
    rows = [
        (0, 0, 30, 0.1, 0.0, 1.6),
        (0, 0, 10, 0.0, 0.1, 1.57),
        (-20, 10, 40, -0.2, 0.0, 0.3),
        (0, 8, 2.0, 0.05, -0.1, 1.57),  # right next to the first target: near-plane clipping
        (6, 35, 20, 0.0, 0.0, -1.57),
    ]
    pos, quat = poses(rows)
    det = GroundTruthDetector(world.to(device), cfg, dcfg)
    cam = TiledCamera(world.to(device), len(rows), cfg, device, detector=det)
    out = cam.render(pos.to(device), quat.to(device)).detections
    ref = detections_reference(world, cfg, dcfg, pos, quat)
    checked = 0
    for d in range(len(rows)):
        for r in ref[0][d]:
            t = r["target_id"]
            assert bool(out.visible[0, d, t]) == r["visible"], (d, t)
            assert out.visible_fraction[0, d, t].item() == pytest.approx(r["visible_fraction"])
            assert int(out.class_id[0, d, t]) == r["class_id"]
            if r["box"] is not None:
                np.testing.assert_allclose(
                    out.boxes_xyxy[0, d, t].cpu().numpy(), r["box"], atol=2e-3
                )
            checked += 1
    assert checked == 15
    assert int(out.count.sum()) == sum(r["visible"] for rr in ref[0] for r in rr)


def test_top_k_orders_by_area_and_pads(device):
    world = make_world()
    cfg = CameraConfig(resolution="64x48")
    pos, quat = poses([(0, 0, 30, 0.1, 0.0, 1.6), (-20, 10, 40, -0.2, 0.0, 0.3)])
    det = GroundTruthDetector(world.to(device), cfg, DetectionConfig(min_box_size_px=1.0))
    full = det.detect(
        TiledCamera(world.to(device), 2, cfg, device).camera_pose(pos.to(device), quat.to(device))
    )
    best = top_k(full, 5)
    assert best.boxes_xyxy.shape == (1, 2, 5, 4)
    for d in range(2):
        n = int(full.count[0, d])
        assert bool(best.visible[0, d, :n].all()) and not bool(best.visible[0, d, n:].any())
        wh = (best.boxes_xyxy[0, d, :n, 2:] - best.boxes_xyxy[0, d, :n, :2]).prod(-1)
        assert bool((wh[:-1] >= wh[1:]).all())
        assert set(best.target_id[0, d, :n].tolist()) == set(
            torch.nonzero(full.visible[0, d]).flatten().tolist()
        )


@pytest.mark.parametrize("scene", ["hand_built", "generated"])
def test_numba_cpu_kernels_match_torch_kernels_exactly(scene):
    """The CPU kernels (numba) compute exactly what the torch kernels (CUDA's path) compute."""
    from isr_sim_bridge import cpu_kernels

    if not cpu_kernels.AVAILABLE:
        pytest.fail("numba is a dependency (requirements.txt) but cannot be imported")
    if scene == "hand_built":
        world = make_world(num_worlds=2)
        rows = [
            (0, 0, 8, 0.05, -0.1, 1.2),
            (-25, 0, 18, 0.0, 0.15, 0.4),
            (0, 8, 2.0, 0.05, -0.1, 1.57),  # next to a target: boxes cross the near plane
            (-15, 5, 6, 0.3, -0.2, 1.4),
            (10, 0, 25, -0.2, 0.0, 1.9),
        ]
        pos, quat = poses(rows, 2)
        overrides = {"mount_pitch_deg": 20.0, "sky_zenith_rgb": (200, 222, 240)}  # uniform sky
    else:
        world_mod = pytest.importorskip("isr_sim_bridge.world")
        world = world_mod.generate_worlds(world_mod.WorldSpec(), [3, 4], "cpu")
        g = torch.Generator().manual_seed(0)
        lo, hi = world.spawn_min_m, world.spawn_max_m
        xy = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.rand(2, 6, 2, generator=g)
        z = torch.tensor([1.5, 4.0, 12.0, 25.0, 40.0, 60.0]).expand(2, 6).unsqueeze(-1)
        pos = torch.cat((xy, z), dim=-1)
        quat = quat_from_euler(
            0.1 * torch.randn(2, 6, generator=g),
            0.1 * torch.randn(2, 6, generator=g),
            6.3 * torch.rand(2, 6, generator=g),
        )
        overrides = {}
    outs, items = [], []
    start = world.target_pos_enu_m.clone()
    for numba_on in (False, True):
        cfg = CameraConfig(
            resolution="40x28", depth=True, compile=False, cpu_kernels=numba_on, **overrides
        )
        det = GroundTruthDetector(
            world, cfg, DetectionConfig(compile=False, cpu_kernels=numba_on, min_box_size_px=1.0)
        )
        cam = TiledCamera(world, pos.shape[1], cfg, "cpu", detector=det)
        assert cam.numba_kernels == numba_on and det.cpu_kernel == numba_on
        frames = []
        for k in range(3):  # targets move between renders
            world.target_pos_enu_m.copy_(start)
            world.target_pos_enu_m[..., 0] += 0.7 * k
            frames.append(cam.render(pos + 0.4 * k, quat))
            items.append(cam.last_work_items)
        outs.append(frames)
    assert items[:3] == items[3:] and min(items) > 0
    visible = 0
    for a, b in zip(*outs, strict=True):
        assert torch.equal(a.rgba, b.rgba)
        assert torch.equal(a.depth_m, b.depth_m)
        da, db = a.detections, b.detections
        for field in ("boxes_xyxy", "class_id", "target_id", "visible", "visible_fraction"):
            assert torch.equal(getattr(da, field), getattr(db, field)), field
        torch.testing.assert_close(da.depth_m, db.depth_m, rtol=0, atol=0)
        visible += int(da.visible.sum())
        assert bool((da.visible_fraction > 0).any() & (da.visible_fraction < 1).any())
    assert visible > 0


@pytest.mark.parametrize("scene", ["hand_built", "generated"])
def test_visible_targets_decides_as_detect(scene):
    """The environment's fused detector (GroundTruthDetector.visible_into: culling, occluder
    selection, early-stopping occlusion samples, the camera pose in the kernel) marks exactly the
    targets detect() marks visible, with the same boxes, zero boxes elsewhere."""
    from isr_sim_bridge.camera import camera_pose, mount_rotation

    if scene == "hand_built":
        world = make_world(num_worlds=2)
        rows = [
            (0, 0, 8, 0.05, -0.1, 1.2),
            (0, 8, 2.0, 0.05, -0.1, 1.57),
            (10, 0, 25, -0.2, 0, 1.9),
        ]
        pos, quat = poses(rows, 2)
        det_cfg = DetectionConfig(min_box_size_px=1.0)
    else:
        world_mod = pytest.importorskip("isr_sim_bridge.world")
        world = world_mod.generate_worlds(world_mod.WorldSpec(), [5, 6, 7], "cpu")
        g = torch.Generator().manual_seed(2)
        n = 96
        lo, hi = world.geofence_min_m, world.geofence_max_m
        pos = lo[:, None] + (hi - lo)[:, None] * torch.rand(3, n, 3, generator=g)
        pos[..., 2] = 0.5 + 60 * torch.rand(3, n, generator=g) ** 2  # many low, near targets
        quat = quat_from_euler(
            0.3 * torch.randn(3, n, generator=g),
            0.3 * torch.randn(3, n, generator=g),
            6.3 * torch.rand(3, n, generator=g),
        )
        det_cfg = DetectionConfig(min_box_size_px=1.5, min_visible_fraction=0.3)
    cfg = CameraConfig(resolution="80x60", mount_pitch_deg=50.0)
    det = GroundTruthDetector(world, cfg, det_cfg)
    assert det.cpu_kernel
    mount_rot = mount_rotation(cfg).float()
    mount_off = torch.tensor(cfg.mount_offset_flu_m, dtype=torch.float32)
    full = det.detect(camera_pose(pos, quat, mount_rot, mount_off))
    boxes = torch.full((*pos.shape[:2], world.target_pos_enu_m.shape[1], 4), 7.0)
    visible = torch.ones(boxes.shape[:3], dtype=torch.bool)
    det.visible_into(pos, quat, mount_rot, mount_off, boxes, visible)
    assert torch.equal(visible, full.visible)
    assert torch.equal(boxes[visible], full.boxes_xyxy[visible])
    assert bool((boxes[~visible] == 0).all())
    assert int(full.visible.sum()) > 0
    if scene == "generated":  # also targets in view but occluded or too small (not visible)
        assert bool(((full.visible_fraction > 0) & ~full.visible).any())


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("ISR_SLOW_TESTS"), reason="set ISR_SLOW_TESTS=1 (compiles for ~1 min)"
)
def test_compiled_kernels_match_eager():
    pytest.importorskip("torch._inductor", reason="torch.compile backend not available")
    world = make_world(num_worlds=2)
    pos, quat = poses(
        [(0, 0, 8, 0.05, -0.1, 1.2), (-25, 0, 18, 0.0, 0.15, 0.4), (10, 0, 25, -0.2, 0.0, 1.9)], 2
    )
    outs = []
    for compiled in (False, True):
        cfg = CameraConfig(resolution="48x32", depth=True, compile=compiled)
        det = GroundTruthDetector(world, cfg, DetectionConfig(compile=compiled))
        cam = TiledCamera(world, 3, cfg, "cpu", detector=det)
        outs.append([cam.render(pos + 0.3 * k, quat) for k in range(3)])
    for a, b in zip(*outs, strict=True):
        assert (a.rgba != b.rgba).any(-1).float().mean().item() < 0.002
        torch.testing.assert_close(a.depth_m, b.depth_m, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(
            a.detections.boxes_xyxy, b.detections.boxes_xyxy, rtol=1e-4, atol=1e-3
        )
        assert torch.equal(a.detections.visible, b.detections.visible)


# ------------------------------------------------------------------------------ command line


def test_cli_render_and_bench(tmp_path, capsys):
    pytest.importorskip("isr_sim_bridge.world")
    import json

    from PIL import Image

    from isr_sim_bridge.camera_cli import main

    out = tmp_path / "grid.png"
    assert (
        main(
            [
                "render",
                "--world-seed",
                "2",
                "--drones",
                "4",
                "--out",
                str(out),
                "--resolution",
                "40x32",
            ]
        )
        == 0
    )
    img = Image.open(out)
    assert img.size[0] > 2 * 40 and img.size[1] > 2 * 32
    capsys.readouterr()
    args = ["bench", "camera", "--drones", "4", "--drones-per-world", "2", "--resolution", "32x16"]
    args += [
        "--no-compile",
        "--duration-s",
        "0.1",
        "--min-steps",
        "2",
        "--unique-worlds",
        "1",
        "--json",
    ]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["drones"] == 4 and result["resolution"] == "32x16" and result["frames_per_s"] > 0
    # numba CPU kernels: one kernel does setup and box pass
    assert set(result["stage_ms_median"]) == {"setup_box_pass", "shade", "detections"}
