"""Unit tests of the task's pure functions: safety filter, coverage, rewards, detection features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from isr_direct_dynamics import DirectDynamics, InitialState, VelocityLimits
from isr_direct_dynamics.config import ConfigError, from_dict
from isr_direct_dynamics.math3d import quat_from_euler
from isr_training.env import (
    DET_FEATURES,
    LEAD_FEATURES,
    LEAD_SCALE_M,
    detection_features,
    lead_features,
)
from isr_training.task.config import SafetyConfig, TaskConfig
from isr_training.task.coverage import (
    camera_corner_rays_body,
    cell_centres,
    cells_in_footprint,
    footprint_corners,
    pool_coverage,
)
from isr_training.task.rewards import (
    REWARD_TERMS,
    action_smoothness_term,
    altitude_band_term,
    coverage_term,
    new_target_term,
    weighted_sum,
)
from isr_training.task.safety import KeepOutRects, safety_filter

pytestmark = pytest.mark.unit
LIMITS = VelocityLimits()


def no_rects(w: int, device) -> KeepOutRects:
    z = torch.zeros(w, 0, 2, device=device)
    return KeepOutRects(z, z, torch.zeros(w, 0, device=device),
                        torch.zeros(w, 0, dtype=torch.bool, device=device),
                        torch.zeros(w, 0, dtype=torch.bool, device=device))  # fmt: skip


def one_rect(lo, hi, top, nfz, device) -> KeepOutRects:
    return KeepOutRects(
        torch.tensor([[lo]], device=device, dtype=torch.float32),
        torch.tensor([[hi]], device=device, dtype=torch.float32),
        torch.tensor([[top]], device=device, dtype=torch.float32),
        torch.tensor([[nfz]], device=device),
        torch.tensor([[True]], device=device),
    )


def fence(device):
    return (torch.tensor([[-50.0, -50.0, 0.0]], device=device),
            torch.tensor([[50.0, 50.0, 60.0]], device=device))  # fmt: skip


def test_safety_filter_leaves_free_flight_alone(device):
    gmin, gmax = fence(device)
    action = torch.tensor([[[0.5, -0.3, 0.1, 0.2]]], device=device)
    pos = torch.tensor([[[0.0, 0.0, 30.0]]], device=device)
    out, hits = safety_filter(
        action, pos, gmin, gmax, no_rects(1, device), SafetyConfig(), LIMITS, 5.0
    )
    torch.testing.assert_close(out, action)
    assert not any(bool(v.any()) for v in hits.values())


def test_safety_filter_brakes_at_the_wall_and_pushes_back(device):
    gmin, gmax = fence(device)
    cfg = SafetyConfig(horizon_s=2.0, geofence_margin_m=4.0)
    pos = torch.tensor([[[40.0, 0.0, 30.0], [49.0, 0.0, 30.0]]], device=device)
    action = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]], device=device)
    out, hits = safety_filter(action, pos, gmin, gmax, no_rects(1, device), cfg, LIMITS, 5.0)
    # 6 m of clearance to the margin at 2 s horizon: 3 m/s allowed = 0.3 normalized.
    assert out[0, 0, 0].item() == pytest.approx(0.3, abs=1e-5)
    assert out[0, 1, 0].item() < 0  # inside the margin: commanded back in
    assert hits["geofence"].all()


def test_safety_filter_altitude_floor(device):
    gmin, gmax = fence(device)
    pos = torch.tensor([[[0.0, 0.0, 6.0]]], device=device)
    action = torch.tensor([[[0.0, 0.0, -1.0, 0.0]]], device=device)
    out, hits = safety_filter(
        action, pos, gmin, gmax, no_rects(1, device), SafetyConfig(), LIMITS, 5.0
    )
    assert out[0, 0, 2].item() > 0  # below floor + margin (7 m): climb
    assert hits["altitude"].all()


def test_safety_filter_no_fly_zone_and_obstacle_height(device):
    gmin, gmax = fence(device)
    cfg = SafetyConfig(horizon_s=2.0)
    # Rectangle x in [10, 20] (margins already in it), drone approaching from the west at 8 m/s.
    pos = torch.tensor([[[6.0, 0.0, 30.0]]], device=device)
    action = torch.tensor([[[0.8, 0.0, 0.0, 0.0]]], device=device)
    nfz = one_rect([10.0, -5.0], [20.0, 5.0], float("inf"), True, device)
    out, hits = safety_filter(action, pos, gmin, gmax, nfz, cfg, LIMITS, 5.0)
    assert out[0, 0, 0].item() == pytest.approx(0.2, abs=1e-5)  # 4 m / 2 s = 2 m/s
    assert hits["no_fly_zone"].all() and not hits["obstacle"].any()
    # A building only 20 m tall does not constrain a drone flying at 30 m.
    bld = one_rect([10.0, -5.0], [20.0, 5.0], 20.0, False, device)
    out, hits = safety_filter(action, pos, gmin, gmax, bld, cfg, LIMITS, 5.0)
    torch.testing.assert_close(out, action)
    # Inside the rectangle: pushed out through the nearest edge (west).
    pos_in = torch.tensor([[[11.0, 0.0, 30.0]]], device=device)
    out, hits = safety_filter(action, pos_in, gmin, gmax, nfz, cfg, LIMITS, 5.0)
    assert out[0, 0, 0].item() < 0 and hits["no_fly_zone"].all()


def test_safety_filter_never_lets_a_drone_leave_the_geofence(device):
    """Random actions for 60 s with the direct dynamics: no drone crosses the fence."""
    n = 64
    gmin, gmax = fence(device)
    model = DirectDynamics(1, n, 0.1, device, seed=0)
    gen = torch.Generator(device=device).manual_seed(0)
    start = (torch.rand(1, n, 3, generator=gen, device=device) * 2 - 1) * 40
    start[..., 2] = 30.0
    model.reset(initial=InitialState(pos_enu_m=start))
    cfg = SafetyConfig()
    worst = -1e9
    for step in range(600):
        if step % 20 == 0:  # persistent random commands, many of them straight at a wall
            action = torch.sign(torch.rand(1, n, 4, generator=gen, device=device) * 2 - 1)
        safe, _ = safety_filter(
            action, model.state.pos_enu_m, gmin, gmax, no_rects(1, device), cfg, LIMITS, 5.0
        )
        pos = model.step(safe).pos_enu_m
        worst = max(
            worst, float((pos[..., :2].abs() - 50.0).max()), float(pos[..., 2].max() - 60.0)
        )
    assert worst < 0.0, f"a drone got {worst:.2f} m past the geofence"


def test_safety_filter_cpu_kernel_matches_torch():
    """The numba safety filter (CPU) gives the torch code's (CUDA's) actions and flags."""
    from isr_sim_bridge.world import WorldSpec, generate_worlds
    from isr_training import cpu_kernels
    from isr_training.task.safety import build_keep_out

    if not cpu_kernels.AVAILABLE:
        pytest.fail("numba is a dependency (requirements.txt) but cannot be imported")
    world = generate_worlds(WorldSpec(), [1, 2], "cpu")
    cfg = SafetyConfig()
    keep = build_keep_out(world, cfg)
    gen = torch.Generator().manual_seed(0)
    n = 512
    # positions: anywhere in the fence (and a bit beyond), low and high, and in every rectangle
    lo, hi = world.geofence_min_m[:, None], world.geofence_max_m[:, None]
    pos = lo - 5.0 + (hi - lo + 10.0) * torch.rand(2, n, 3, generator=gen)
    rect_c = 0.5 * (keep.min_xy + keep.max_xy)  # (W, R, 2)
    m = min(rect_c.shape[1], n // 4)
    pos[:, :m, :2] = rect_c[:, :m] + torch.randn(2, m, 2, generator=gen)
    pos[:, :m, 2] = 2.0 + 10.0 * torch.rand(2, m, generator=gen)
    counts = {}
    for trial in range(3):
        action = torch.rand(2, n, 4, generator=gen) * 2 - 1
        if trial == 2:
            action = torch.sign(action)  # full speed, straight at walls and zones
        a, ha = safety_filter(action, pos, world.geofence_min_m, world.geofence_max_m, keep, cfg,
                              LIMITS, 5.0)  # fmt: skip
        b, hb = safety_filter(action, pos, world.geofence_min_m, world.geofence_max_m, keep, cfg,
                              LIMITS, 5.0, cpu_kernel=True)  # fmt: skip
        torch.testing.assert_close(b, a, rtol=0, atol=2e-6)
        assert set(ha) == set(hb)
        for kind in ha:
            assert torch.equal(ha[kind], hb[kind]), kind
            counts[kind] = counts.get(kind, 0) + int(ha[kind].sum())
    assert all(c > 10 for c in counts.values()), counts  # every kind of intervention happened


def test_cells_in_view_cpu_kernel_matches_torch():
    """The numba footprint/coverage kernel (CPU) marks the torch code's (CUDA's) cells."""
    from isr_training import cpu_kernels
    from isr_training.env import _cells_in_view

    if not cpu_kernels.AVAILABLE:
        pytest.fail("numba is a dependency (requirements.txt) but cannot be imported")
    gen = torch.Generator().manual_seed(0)
    w, d = 4, 32
    pos = (torch.rand(w, d, 3, generator=gen) * 2 - 1) * 100
    pos[..., 2] = torch.rand(w, d, generator=gen) * 80  # 0-80 m, some on the ground
    quat = quat_from_euler(
        0.4 * torch.randn(w, d, generator=gen),
        0.4 * torch.randn(w, d, generator=gen),
        torch.rand(w, d, generator=gen) * 6.3,
    )
    rays = camera_corner_rays_body(90.0, 90.0, 45.0)
    centres = cell_centres(-100.0, -100.0, 200.0, 200.0, 40, "cpu")
    a = _cells_in_view(pos, quat, rays, centres, 60.0)
    b = _cells_in_view(pos, quat, rays, centres, 60.0, cpu_kernel=True)
    assert a.shape == b.shape == (w, d, 1600)
    assert int(a.sum()) > 1000 and bool((a.sum(-1) == 0).any())  # footprints of all sizes
    # the torch code evaluates the half-planes through a matrix product: only cells within
    # rounding of an edge may differ
    assert float((a != b).float().mean()) < 1e-3, int((a != b).sum())


def test_corner_rays_point_forward_and_down():
    rays = camera_corner_rays_body(90.0, 90.0, 45.0)
    assert rays.shape == (4, 3)
    centre = rays.mean(0)
    assert centre[0] > 0 and centre[2] < 0  # forward and down
    torch.testing.assert_close(torch.linalg.vector_norm(rays, dim=-1), torch.ones(4))


def test_coverage_footprint_straight_down(device):
    rays = camera_corner_rays_body(90.0, 90.0, 90.0)  # nadir camera, 90 deg FOV
    pos = torch.tensor([[[0.0, 0.0, 10.0]]], device=device)
    quat = quat_from_euler(*(torch.zeros(1, 1, device=device),) * 3)
    corners = footprint_corners(pos, quat, rays, 100.0)
    # At 10 m a 90 deg nadir view covers x, y in [-10, 10].
    torch.testing.assert_close(corners.abs(), torch.full_like(corners, 10.0), atol=1e-4, rtol=0)
    centres = cell_centres(-50, -50, 100, 100, 10, device)
    inside = cells_in_footprint(corners, pos, centres, 100.0)
    # Cells of 10 m: the four centred at +-5 m are inside.
    assert int(inside.sum()) == 4
    # Yawed by 45 deg: the view is a diamond, still containing the 4 central cells.
    quat = quat_from_euler(torch.zeros(1, 1, device=device), torch.zeros(1, 1, device=device),
                           torch.full((1, 1), math.pi / 4, device=device))  # fmt: skip
    inside = cells_in_footprint(footprint_corners(pos, quat, rays, 100.0), pos, centres, 100.0)
    assert int(inside.sum()) == 4
    pooled = pool_coverage(inside, 10, 5)
    assert pooled.shape == (1, 1, 25) and pooled.sum().item() == pytest.approx(1.0)


def test_reward_terms():
    found_new = torch.tensor([[[True, False, True]]])
    assert new_target_term(found_new).item() == 2.0
    assert coverage_term(torch.tensor([[[True, True, False, True]]])).item() == 3.0
    alt = torch.tensor([[5.0, 30.0, 55.0, 200.0]])
    torch.testing.assert_close(
        altitude_band_term(alt, (20.0, 50.0)), torch.tensor([[10.0, 0.0, 5.0, 10.0]])
    )
    a, b = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]]), torch.tensor([[[0.0, 0.0, 0.0, 1.0]]])
    assert action_smoothness_term(a, b).item() == 2.0
    terms = {name: torch.ones(1, 1) for name in REWARD_TERMS}
    w = TaskConfig().reward
    expected = sum(getattr(w, name) for name in REWARD_TERMS)
    assert weighted_sum(terms, w).item() == pytest.approx(expected)


def test_detection_features_rank_unfound_first():
    boxes = torch.tensor([[[[0, 0, 40, 40], [10, 10, 20, 20], [0, 0, 5, 5]]]], dtype=torch.float32)
    visible = torch.tensor([[[True, True, False]]])
    found = torch.tensor([[[True, False, False]]])
    cls = torch.tensor([[2, 1, 0]])
    f = detection_features(boxes, visible, found, cls, 3, (80, 80)).view(3, DET_FEATURES)
    assert f[0, 0] == 1 and f[0, 2] == 1  # first: the unfound person (class 1)
    assert f[0, -1] == 0
    assert f[1, 0] == 1 and f[1, 3] == 1 and f[1, -1] == 1  # then the found structure
    assert f[2].abs().sum() == 0  # invisible target: empty slot
    cx = (10 + 20) / 80 - 1
    assert f[0, 1 + 3].item() == pytest.approx(cx)


def test_lead_features_nearest_first_in_the_heading_frame():
    """Leads: detected-not-found targets, nearest first, offsets forward/left/up in the heading
    frame; a found or never-detected target is no lead; empty slots are zero."""
    pos = torch.tensor([[[10.0, 20.0, 30.0]]])
    yaw = torch.tensor([[math.pi / 2]])  # heading north (+y ENU)
    lead_pos = torch.tensor(
        [[[[10.0, 120.0, 0.0], [0.0, 20.0, 1.0], [10.0, 21.0, 0.0], [11.0, 20.0, 0.0]]]]
    )
    active = torch.tensor([[[True, True, False, True]]])  # slot 2: found or never detected
    cls = torch.tensor([[0, 1, 2, 2]])
    f = lead_features(pos, torch.sin(yaw), torch.cos(yaw), lead_pos, active, cls, 4)
    f = f.view(4, LEAD_FEATURES)
    s = LEAD_SCALE_M
    # nearest: slot 3, 1 m east = 1 m to the right of a north-facing drone
    torch.testing.assert_close(f[0], torch.tensor([1.0, 0.0, -1 / s, -30 / s, 0, 0, 1.0]))
    # then slot 1, 10 m west = 10 m to the left, 29 m below
    torch.testing.assert_close(f[1], torch.tensor([1.0, 0.0, 10 / s, -29 / s, 0, 1.0, 0]))
    # then slot 0, 100 m north = straight ahead
    torch.testing.assert_close(f[2], torch.tensor([1.0, 100 / s, 0.0, -30 / s, 1.0, 0, 0]))
    assert f[3].abs().sum() == 0
    # more slots than targets: zero padding
    assert lead_features(pos, torch.sin(yaw), torch.cos(yaw), lead_pos, active, cls, 6).shape == (
        1,
        1,
        6 * LEAD_FEATURES,
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"control_dt_s": 0.0}, "control_dt_s"),
        ({"observation": {"top_k_leads": -1}}, "observation.top_k_leads"),
        ({"reward": {"collision": 5.0}}, "reward.collision"),
        ({"safety": {"horizon_s": -1.0}}, "safety.horizon_s"),
        ({"observation": {"obs_coverage_cells": 5}}, "observation.obs_coverage_cells"),
        ({"rewards": {}}, "rewards"),
        ({"spawn_altitude_m": [40.0, 10.0]}, "spawn_altitude_m"),
    ],
)
def test_task_config_errors_name_the_field(data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        from_dict(TaskConfig, data)


def test_footprint_cells_match_brute_force():
    gen = torch.Generator().manual_seed(0)
    rays = camera_corner_rays_body(70.0, 70.0, 60.0)
    pos = torch.rand(3, 5, 3, generator=gen) * 100 - 50
    pos[..., 2] = 10 + 40 * torch.rand(3, 5, generator=gen)
    angles = (torch.rand(3, 3, 5, generator=gen) - 0.5) * torch.tensor([0.6, 0.6, 6.0]).view(
        3, 1, 1
    )
    quat = quat_from_euler(angles[0], angles[1], angles[2])
    corners = footprint_corners(pos, quat, rays, 80.0)
    centres = cell_centres(-100, -100, 200, 200, 16, "cpu")
    fast = cells_in_footprint(corners, pos, centres, 80.0)
    for w in range(3):
        for d in range(5):
            c = corners[w, d]
            for k, p in enumerate(centres):
                crosses = []
                for i in range(4):
                    a, b = c[i], c[(i + 1) % 4]
                    crosses.append(
                        float((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]))
                    )
                inside = all(x >= 0 for x in crosses) or all(x <= 0 for x in crosses)
                in_range = float(((p - pos[w, d, :2]) ** 2).sum()) <= 80.0**2
                assert bool(fast[w, d, k]) == (inside and in_range), (w, d, k)


def test_cells_in_view_scanline_is_the_per_cell_test():
    """The kernel's row-interval shortcut (exact tests only near each row's ends) marks exactly
    the cells that testing every cell against the same footprint edges and range disc marks,
    also for level drones with yaw 0 / 90 deg (edges parallel to the grid) and on the ground."""
    from isr_training import cpu_kernels
    from isr_training.env import _cells_in_view

    if not cpu_kernels.AVAILABLE:
        pytest.fail("numba is a dependency (requirements.txt) but cannot be imported")

    @cpu_kernels.njit
    def every_cell(pos, quat, rays, centres, r, out):
        e = np.empty((5, 4))
        for w in range(pos.shape[0]):
            for d in range(pos.shape[1]):
                px, py = float(pos[w, d, 0]), float(pos[w, d, 1])
                cpu_kernels.footprint_edges(
                    px, py, float(pos[w, d, 2]), quat[w, d, 0], quat[w, d, 1], quat[w, d, 2],
                    quat[w, d, 3], rays, r, e[0], e[1], e[2], e[3], e[4],
                )  # fmt: skip
                for i in range(centres.shape[0]):
                    x, y = centres[i, 0], centres[i, 1]
                    ok = (x - px) * (x - px) + (y - py) * (y - py) <= r * r
                    for k in range(4):
                        ok = ok and (e[0, k] * x + e[1, k] * y + e[2, k] >= 0.0)
                    out[w, d, i] = ok

    gen = torch.Generator().manual_seed(3)
    w, d = 3, 64
    pos = (torch.rand(w, d, 3, generator=gen) * 2 - 1) * 110
    pos[..., 2] = torch.rand(w, d, generator=gen) * 90
    pos[0, :8, 2] = 0.0  # on the ground: a degenerate footprint
    roll = 0.4 * torch.randn(w, d, generator=gen)
    pitch = 0.4 * torch.randn(w, d, generator=gen)
    yaw = torch.rand(w, d, generator=gen) * 6.3
    roll[1], pitch[1] = 0.0, 0.0  # level, yaw on the grid axes
    yaw[1] = torch.arange(d) % 4 * (math.pi / 2)
    quat = quat_from_euler(roll, pitch, yaw)
    for fov, pitch_deg, cells, r in ((90.0, 45.0, 40, 60.0), (70.0, 60.0, 16, 80.0)):
        rays = camera_corner_rays_body(fov, fov, pitch_deg)
        centres = cell_centres(-100.0, -100.0, 200.0, 200.0, cells, "cpu")
        fast = _cells_in_view(pos, quat, rays, centres, r, cpu_kernel=True)
        ref = torch.empty_like(fast)
        every_cell(pos.numpy(), quat.numpy(), rays.numpy(), centres.numpy(), r, ref.numpy())
        assert torch.equal(fast, ref), int((fast != ref).sum())
        assert int(ref.sum()) > 500
