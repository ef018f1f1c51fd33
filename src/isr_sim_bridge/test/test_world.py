"""Procedural worlds: determinism, JSON/USD, batch layout, constraints, motion, randomization."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from isr_direct_dynamics.config import ConfigError
from isr_sim_bridge import randomization as rnd
from isr_sim_bridge import world_cli
from isr_sim_bridge.world import (
    FIELD,
    ROAD,
    WATER,
    World,
    WorldSpec,
    advance_targets,
    generate_world,
    generate_worlds,
    worlds_to_batch,
)
from isr_sim_bridge.world_batch import TARGET_CLASSES, WorldBatch

pytestmark = pytest.mark.unit

SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def spec() -> WorldSpec:
    return WorldSpec()


@pytest.fixture(scope="module")
def worlds(spec: WorldSpec) -> list[World]:
    return [generate_world(spec, s) for s in SEEDS]


@pytest.fixture()
def batch(worlds: list[World], device: torch.device) -> WorldBatch:
    return worlds_to_batch(worlds, device)


def _class_at(world: World, xy) -> int:
    _, cls = world.ground()
    ix = int((xy[0] - world.x_min_m) / world.texture_res_m)
    iy = int((xy[1] - world.y_min_m) / world.texture_res_m)
    return int(cls[iy, ix])


def _dist_to_polyline(pts: np.ndarray, q: np.ndarray) -> np.ndarray:
    best = np.full(q.shape[:-1], np.inf)
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        ab = b - a
        t = np.clip(((q - a) @ ab) / (ab @ ab), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(q - (a + t[..., None] * ab), axis=-1))
    return best


# ----------------------------------------------------------------------------- generator


def test_same_seed_same_world_different_seeds_differ(spec, worlds):
    again = generate_world(spec, SEEDS[0])
    assert again == worlds[0]
    assert again.to_json() == worlds[0].to_json()
    rgb_a, cls_a = again.ground()
    rgb_b, cls_b = worlds[0].ground()
    assert np.array_equal(rgb_a, rgb_b) and np.array_equal(cls_a, cls_b)
    assert worlds[0] != worlds[1]
    assert not np.array_equal(worlds[0].ground()[0], worlds[1].ground()[0])


def test_json_round_trip_is_exact(worlds, tmp_path):
    w = worlds[1]
    back = World.from_json(w.to_json())
    assert back == w
    assert back.to_json() == w.to_json()
    path = w.save_json(tmp_path / "sub" / "w.json")
    loaded = World.load_json(path)
    assert loaded == w
    # The texture is re-derived from the stored features and seed: identical.
    assert np.array_equal(loaded.ground()[0], w.ground()[0])
    assert isinstance(loaded.targets[0].pos_enu_m, tuple)
    with pytest.raises(FileNotFoundError):
        World.load_json(tmp_path / "missing.json")


def test_world_content_counts(spec, worlds):
    for w in worlds:
        n_build = sum(b.kind == "building" for b in w.boxes)
        assert spec.num_buildings[0] <= n_build <= spec.num_buildings[1]
        assert spec.num_roads[0] <= len(w.roads) <= spec.num_roads[1]
        assert {t.cls for t in w.targets} <= set(TARGET_CLASSES)
        assert len(w.targets) <= spec.max_targets and len(w.boxes) <= spec.max_boxes
    # Over a few worlds every class shows up and some targets move.
    classes = {t.cls for w in worlds for t in w.targets}
    assert classes == set(TARGET_CLASSES)
    assert any(t.speed_m_s > 0 for w in worlds for t in w.targets)
    rgb, cls = worlds[0].ground()
    assert rgb.shape == (800, 800, 3) and rgb.dtype == np.uint8 and cls.shape == (800, 800)
    assert (cls == FIELD).mean() > 0.3 and (cls == ROAD).any()


def test_constraints(spec, worlds):
    for w in worlds:
        _, cls = w.ground()
        res = w.texture_res_m
        fence_lo, fence_hi = np.array(w.geofence_min_m[:2]), np.array(w.geofence_max_m[:2])
        for b in w.boxes:
            assert b.min_m[2] == 0.0 and b.max_m[2] > 0.0
            ix0, ix1 = int((b.min_m[0] - w.x_min_m) / res), int((b.max_m[0] - w.x_min_m) / res)
            iy0, iy1 = int((b.min_m[1] - w.y_min_m) / res), int((b.max_m[1] - w.y_min_m) / res)
            under = cls[iy0:iy1, ix0:ix1]
            assert not (under == ROAD).any() and not (under == WATER).any()
            if b.kind == "building":
                assert (under == FIELD).all()
            # Spawn area clear of boxes.
            s = w.spawn
            assert (
                b.max_m[0] <= s.min_xy_m[0] or b.min_m[0] >= s.max_xy_m[0]
                or b.max_m[1] <= s.min_xy_m[1] or b.min_m[1] >= s.max_xy_m[1]
            )  # fmt: skip
        for i, a in enumerate(w.boxes):  # boxes do not overlap each other
            for b in w.boxes[i + 1 :]:
                assert (
                    a.max_m[0] <= b.min_m[0] or b.max_m[0] <= a.min_m[0]
                    or a.max_m[1] <= b.min_m[1] or b.max_m[1] <= a.min_m[1]
                )  # fmt: skip
        for z in w.no_fly_zones:  # spawn area clear of no-fly zones
            s = w.spawn
            assert (
                z.max_xy_m[0] <= s.min_xy_m[0] or z.min_xy_m[0] >= s.max_xy_m[0]
                or z.max_xy_m[1] <= s.min_xy_m[1] or z.min_xy_m[1] >= s.max_xy_m[1]
            )  # fmt: skip
        assert np.all(np.array(w.spawn.min_xy_m) >= fence_lo)
        assert np.all(np.array(w.spawn.max_xy_m) <= fence_hi)
        for t in w.targets:
            xy = np.array(t.pos_enu_m[:2])
            assert np.all(xy >= fence_lo) and np.all(xy <= fence_hi)
            assert t.pos_enu_m[2] == pytest.approx(0.5 * t.size_m[2])
            r = 0.5 * math.hypot(t.size_m[0], t.size_m[1])
            for b in w.boxes:  # no target inside or touching a box
                inside = (
                    b.min_m[0] - r < xy[0] < b.max_m[0] + r
                    and b.min_m[1] - r < xy[1] < b.max_m[1] + r
                )
                if inside:  # bounds-circle touches: check the oriented footprint's bounds
                    c, s_ = abs(math.cos(t.yaw_rad)), abs(math.sin(t.yaw_rad))
                    hx = 0.5 * (t.size_m[0] * c + t.size_m[1] * s_)
                    hy = 0.5 * (t.size_m[0] * s_ + t.size_m[1] * c)
                    assert (
                        xy[0] + hx <= b.min_m[0] or xy[0] - hx >= b.max_m[0]
                        or xy[1] + hy <= b.min_m[1] or xy[1] - hy >= b.max_m[1]
                    )  # fmt: skip
            klass = _class_at(w, xy)
            if t.cls == "vehicle":
                assert klass == ROAD
            elif t.cls == "person":
                assert klass != WATER
            else:
                assert klass == FIELD and t.speed_m_s == 0.0


def test_moving_targets_follow_road_paths(spec, worlds):
    for w in worlds:
        for t in w.targets:
            if t.speed_m_s == 0:
                assert t.path_xy_m == []
                continue
            cs = getattr(spec, t.cls)
            assert cs.speed_m_s[0] <= t.speed_m_s <= cs.speed_m_s[1]
            pts = np.array(t.path_xy_m)
            assert 2 <= len(pts) <= spec.max_path_points
            assert _dist_to_polyline(pts, np.array(t.pos_enu_m[:2])) < 1e-6
            # The path runs along a road: vehicles on the asphalt, persons beside it.
            road_d = min(_dist_to_polyline(np.array(r.points_xy_m), pts).max() for r in w.roads)
            width = max(r.width_m for r in w.roads)
            assert road_d < 0.5 * width + 1.5


# --------------------------------------------------------------------------------- batch


def test_world_batch_layout(spec, worlds, batch, device):
    n_w = len(worlds)
    b_, t_, z_, p_ = spec.max_boxes, spec.max_targets, spec.max_no_fly_zones, spec.max_path_points
    expect = {
        "ground_rgb": ((n_w, 800, 800, 3), torch.uint8),
        "ground_class": ((n_w, 800, 800), torch.uint8),
        "box_min_m": ((n_w, b_, 3), torch.float32),
        "box_max_m": ((n_w, b_, 3), torch.float32),
        "box_rgb": ((n_w, b_, 3), torch.uint8),
        "box_kind": ((n_w, b_), torch.int64),
        "box_valid": ((n_w, b_), torch.bool),
        "target_pos_enu_m": ((n_w, t_, 3), torch.float32),
        "target_size_m": ((n_w, t_, 3), torch.float32),
        "target_yaw_rad": ((n_w, t_), torch.float32),
        "target_class": ((n_w, t_), torch.int64),
        "target_rgb": ((n_w, t_, 3), torch.uint8),
        "target_valid": ((n_w, t_), torch.bool),
        "target_speed_m_s": ((n_w, t_), torch.float32),
        "target_path_xy_m": ((n_w, t_, p_, 2), torch.float32),
        "target_path_len": ((n_w, t_), torch.int64),
        "target_path_s_m": ((n_w, t_), torch.float32),
        "nfz_min_m": ((n_w, z_, 2), torch.float32),
        "nfz_max_m": ((n_w, z_, 2), torch.float32),
        "nfz_valid": ((n_w, z_), torch.bool),
        "geofence_min_m": ((n_w, 3), torch.float32),
        "geofence_max_m": ((n_w, 3), torch.float32),
        "spawn_min_m": ((n_w, 2), torch.float32),
        "spawn_max_m": ((n_w, 2), torch.float32),
    }
    for name, (shape, dtype) in expect.items():
        v = getattr(batch, name)
        assert tuple(v.shape) == shape, name
        assert v.dtype == dtype, name
        assert v.device.type == device.type, name
    assert (batch.x_min_m, batch.y_min_m) == (-100.0, -100.0)
    assert (batch.size_x_m, batch.size_y_m, batch.texture_res_m) == (200.0, 200.0, 0.25)
    for i, w in enumerate(worlds):
        nb, nt, nz = len(w.boxes), len(w.targets), len(w.no_fly_zones)
        assert batch.box_valid[i].sum() == nb and batch.box_valid[i, :nb].all()
        assert batch.target_valid[i].sum() == nt and batch.nfz_valid[i].sum() == nz
        # Padding is zero.
        assert (batch.box_max_m[i, nb:] == 0).all() and (batch.target_size_m[i, nt:] == 0).all()
        assert (batch.target_path_len[i, nt:] == 0).all()
        assert np.array_equal(batch.ground_rgb[i].cpu().numpy(), w.ground()[0])
        for j, t in enumerate(w.targets):
            assert TARGET_CLASSES[int(batch.target_class[i, j])] == t.cls
            assert int(batch.target_path_len[i, j]) == len(t.path_xy_m)
    assert (batch.box_min_m[..., 2] == 0).all()
    kinds = [b.kind for b in worlds[0].boxes]
    assert batch.box_kind[0, : len(kinds)].tolist() == [0 if k == "building" else 1 for k in kinds]
    # generate_worlds gives the same worlds.
    again = generate_worlds(spec, list(SEEDS[:2]), device)
    assert torch.equal(again.target_pos_enu_m, batch.target_pos_enu_m[:2])
    assert torch.equal(again.ground_rgb, batch.ground_rgb[:2])


def test_advance_targets_moves_at_class_speed_along_path(batch):
    pos0 = batch.target_pos_enu_m.clone()
    yaw0 = batch.target_yaw_rad.clone()
    advance_targets(batch, 0.0)  # the generator's poses equal the batched formula's
    assert torch.allclose(batch.target_pos_enu_m, pos0, atol=1e-3)
    ang = torch.remainder(batch.target_yaw_rad - yaw0 + math.pi, 2 * math.pi) - math.pi
    assert ang.abs().max() < 1e-3

    moving = batch.target_valid & (batch.target_speed_m_s > 0)
    assert moving.any()
    dt = 0.05
    step_ok = torch.zeros_like(moving, dtype=torch.int64)
    for _ in range(40):
        before = batch.target_pos_enu_m.clone()
        yaw_before = batch.target_yaw_rad.clone()
        advance_targets(batch, dt)
        step = torch.linalg.vector_norm(batch.target_pos_enu_m[..., :2] - before[..., :2], dim=-1)
        expected = batch.target_speed_m_s * dt
        # Never faster than the class speed; exactly the speed except at a bend or turnaround.
        assert (step[moving] <= expected[moving] + 1e-3).all()
        step_ok += (moving & ((step - expected).abs() < 1e-3)).long()
        # Heading follows the motion (on steps that stay on one segment).
        d = batch.target_pos_enu_m[..., :2] - before[..., :2]
        heading = torch.atan2(d[..., 1], d[..., 0])
        diff = torch.remainder(heading - batch.target_yaw_rad + math.pi, 2 * math.pi) - math.pi
        straight = moving & ((step - expected).abs() < 1e-3) & (batch.target_yaw_rad == yaw_before)
        assert (diff[straight].abs() < 1e-2).all()
    assert (step_ok[moving] >= 35).all()
    # Static targets never move; z never changes.
    assert torch.equal(batch.target_pos_enu_m[~moving], pos0[~moving])
    assert torch.equal(batch.target_pos_enu_m[..., 2], pos0[..., 2])
    # Long run: still on the path, state kept in [0, 2 * length).
    for _ in range(50):
        advance_targets(batch, 7.3)
    for w, t in torch.nonzero(moving).tolist():
        n = int(batch.target_path_len[w, t])
        pts = batch.target_path_xy_m[w, t, :n].double().cpu().numpy()
        xy = batch.target_pos_enu_m[w, t, :2].double().cpu().numpy()
        assert _dist_to_polyline(pts, xy) < 1e-2
        length = np.linalg.norm(np.diff(pts, axis=0), axis=1).sum()
        assert 0.0 <= float(batch.target_path_s_m[w, t]) < 2 * length + 1e-3


def test_advance_targets_turns_around_at_path_end(device):
    spec = WorldSpec()
    batch = worlds_to_batch([generate_world(spec, 5)], device)
    batch.target_valid[:] = False
    batch.target_valid[0, 0] = True
    batch.target_speed_m_s[0, 0] = 2.0
    batch.target_path_xy_m[0, 0, :2] = torch.tensor([[0.0, 0.0], [10.0, 0.0]], device=device)
    batch.target_path_len[0, 0] = 2
    batch.target_path_s_m[0, 0] = 9.0
    advance_targets(batch, 1.0)  # s = 11: 1 m back from the end, heading west
    assert batch.target_pos_enu_m[0, 0, :2].tolist() == pytest.approx([9.0, 0.0], abs=1e-5)
    assert abs(float(batch.target_yaw_rad[0, 0])) == pytest.approx(math.pi, abs=1e-5)
    advance_targets(batch, 5.0)  # s = 21 -> 1 m forward again, heading east
    assert batch.target_pos_enu_m[0, 0, :2].tolist() == pytest.approx([1.0, 0.0], abs=1e-4)
    assert float(batch.target_yaw_rad[0, 0]) == pytest.approx(0.0, abs=1e-5)


# --------------------------------------------------------------------------------- USD


def test_usd_export(worlds, tmp_path):
    pxr = pytest.importorskip("pxr")
    from pxr import Usd, UsdGeom, UsdShade

    from isr_sim_bridge.usd_export import export_usd

    w = worlds[0]
    path = export_usd(w, tmp_path / "world.usda")
    assert (tmp_path / "world_ground.png").is_file()
    stage = Usd.Stage.Open(str(path))
    assert stage is not None and pxr is not None
    assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.z
    assert stage.GetDefaultPrim().GetPath() == "/World"

    def labels(prim):
        assert "SemanticsLabelsAPI:class" in prim.GetAppliedSchemas()
        return list(prim.GetAttribute("semantics:labels:class").Get())

    ground = stage.GetPrimAtPath("/World/Ground")
    assert ground.IsValid() and labels(ground) == ["ground"]
    extent = UsdGeom.Mesh(ground).GetExtentAttr().Get()
    assert tuple(extent[0])[:2] == (-100.0, -100.0) and tuple(extent[1])[:2] == (100.0, 100.0)
    mat, _ = UsdShade.MaterialBindingAPI(ground).ComputeBoundMaterial()
    tex = mat.GetPrim().GetChild("GroundTexture")
    assert UsdShade.Shader(tex).GetIdAttr().Get() == "UsdUVTexture"
    assert UsdShade.Shader(tex).GetInput("file").Get().path == "./world_ground.png"

    buildings = stage.GetPrimAtPath("/World/Buildings").GetChildren()
    n_build = sum(b.kind == "building" for b in w.boxes)
    assert len(buildings) == n_build
    assert all(labels(p) == ["building"] for p in buildings)
    b0 = next(b for b in w.boxes if b.kind == "building")
    cube = stage.GetPrimAtPath("/World/Buildings/building_000")
    bound = (
        UsdGeom.Imageable(cube)
        .ComputeWorldBound(Usd.TimeCode.Default(), "default")
        .ComputeAlignedRange()
    )
    assert tuple(bound.GetMin()) == pytest.approx(b0.min_m, abs=1e-4)
    assert tuple(bound.GetMax()) == pytest.approx(b0.max_m, abs=1e-4)

    targets = stage.GetPrimAtPath("/World/Targets").GetChildren()
    assert len(targets) == len(w.targets)
    for prim in targets:
        cls = prim.GetName().rsplit("_", 1)[0]
        assert cls in TARGET_CLASSES and labels(prim) == [cls]
    text = path.read_text()
    assert 'prepend apiSchemas = ["MaterialBindingAPI", "SemanticsLabelsAPI:class"]' in text
    assert 'token[] semantics:labels:class = ["vehicle"]' in text

    nfz = stage.GetPrimAtPath("/World/NoFlyZones").GetChildren()
    assert len(nfz) == len(w.no_fly_zones)
    for prim in nfz:
        assert UsdGeom.Imageable(prim).GetPurposeAttr().Get() == UsdGeom.Tokens.guide
        assert prim.GetCustomDataByKey("isr:kind") == "no_fly_zone"
    data = stage.GetRootLayer().customLayerData
    assert data["isr:seed"] == w.seed
    assert World.from_json(data["isr:world_json"]) == w


# -------------------------------------------------------------------------- randomization


def test_randomize_images_seeded_and_bounded():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(40, 200, (4, 16, 16, 3), dtype=torch.uint8, generator=g)
    a = rnd.randomize_images(images, torch.Generator().manual_seed(7))
    b = rnd.randomize_images(images, torch.Generator().manual_seed(7))
    c = rnd.randomize_images(images, torch.Generator().manual_seed(8))
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Brightness only: every pixel scaled by one gain in [0.7, 1.3] per image.
    out = rnd.randomize_images(images, torch.Generator().manual_seed(1), 0.3, 0.0, 0.0, 0.0)
    ratio = out.float().sum(dim=(1, 2, 3)) / images.float().sum(dim=(1, 2, 3))
    assert ((ratio > 0.69) & (ratio < 1.31)).all() and (ratio - 1).abs().max() > 0.01
    # Noise only: the mean is kept, pixels differ.
    noisy = rnd.randomize_images(images, torch.Generator().manual_seed(1), 0.0, 0.0, 0.0, 0.05)
    assert (noisy.float().mean() - images.float().mean()).abs() < 1.0
    # Parameters can be sampled and applied separately.
    p = rnd.sample_image_params(4, torch.Generator().manual_seed(3), brightness=0.1)
    assert ((p.brightness_gain >= 0.9) & (p.brightness_gain <= 1.1)).all()
    assert rnd.apply_image_params(images, p).shape == images.shape


def test_randomize_ground_texture(batch):
    base = batch.ground_rgb.clone()
    cls = batch.ground_class.clone()
    rnd.randomize_ground_texture(batch, torch.Generator().manual_seed(0), world_ids=[1, 2])
    assert torch.equal(batch.ground_class, cls)
    assert torch.equal(batch.ground_rgb[0], base[0]) and torch.equal(batch.ground_rgb[3], base[3])
    assert not torch.equal(batch.ground_rgb[1], base[1])
    # Bounded: gains (1 +- 0.1)(1 +- 0.08) and noise +- 0.03 of full scale.
    lo = base[1:3].float() * 0.9 * 0.92 - 0.03 * 255 - 1
    hi = base[1:3].float() * 1.1 * 1.08 + 0.03 * 255 + 1
    new = batch.ground_rgb[1:3].float()
    assert ((new >= lo.clamp(max=255)) & (new <= hi.clamp(min=0))).all()
    first = batch.ground_rgb.clone()
    # Deterministic and drawn around a stored base.
    batch.ground_rgb.copy_(base)
    rnd.randomize_ground_texture(batch, torch.Generator().manual_seed(0), world_ids=[1, 2])
    assert torch.equal(batch.ground_rgb, first)
    rnd.randomize_ground_texture(
        batch, torch.Generator().manual_seed(0), world_ids=[1, 2], base_rgb=base
    )
    assert torch.equal(batch.ground_rgb, first)


def test_randomize_targets(batch, worlds):
    import dataclasses

    base = dataclasses.replace(batch, **{f: getattr(batch, f).clone() for f in rnd._TARGET_FIELDS})

    def run(seed: int) -> WorldBatch:
        b = dataclasses.replace(batch, **{f: getattr(base, f).clone() for f in rnd._TARGET_FIELDS})
        rnd.randomize_targets(
            b, torch.Generator().manual_seed(seed), color_jitter=0.2, keep_prob=0.5, min_keep=2,
            position_jitter_m=3.0, yaw_jitter_rad=0.5, world_ids=[0, 1, 2], base=base,
        )  # fmt: skip
        return b

    a, b2, c = run(0), run(0), run(1)
    for f in rnd._TARGET_FIELDS:
        assert torch.equal(getattr(a, f), getattr(b2, f)), f
    assert not torch.equal(a.target_pos_enu_m, c.target_pos_enu_m)
    # World 3 untouched.
    for f in rnd._TARGET_FIELDS:
        assert torch.equal(getattr(a, f)[3], getattr(base, f)[3]), f
    # Valid flags: a subset of the base, at least min_keep per world, some dropped.
    assert not (a.target_valid & ~base.target_valid).any()
    assert (a.target_valid[:3].sum(1) >= torch.clamp(base.target_valid[:3].sum(1), max=2)).all()
    assert a.target_valid[:3].sum() < base.target_valid[:3].sum()
    # Classes, sizes, speeds, paths unchanged.
    for f in ("target_class", "target_size_m", "target_speed_m_s", "target_path_xy_m"):
        assert torch.equal(getattr(a, f), getattr(base, f)), f
    # Colours within the gain bounds.
    lo = (base.target_rgb.float() * 0.8).floor() - 1
    hi = (base.target_rgb.float() * 1.2).ceil() + 1
    assert ((a.target_rgb.float() >= lo) & (a.target_rgb.float() <= hi.clamp(max=255))).all()
    # Static targets moved at most the jitter radius and keep the constraints.
    static = base.target_valid & (base.target_speed_m_s == 0)
    shift = torch.linalg.vector_norm(
        a.target_pos_enu_m[..., :2] - base.target_pos_enu_m[..., :2], dim=-1
    )
    assert (shift[static] <= 3.0 + 1e-4).all() and (shift[static] > 0).any()
    veh = static & (base.target_class == 0)
    assert torch.equal(a.target_yaw_rad[veh], base.target_yaw_rad[veh])
    for wi in range(3):
        w = worlds[wi]
        for j in torch.nonzero(static[wi]).flatten().tolist():
            xy = a.target_pos_enu_m[wi, j, :2].cpu().numpy()
            klass = _class_at(w, xy)
            name = TARGET_CLASSES[int(base.target_class[wi, j])]
            assert klass == ROAD if name == "vehicle" else klass != WATER
            for bx in w.boxes:
                assert not (bx.min_m[0] < xy[0] < bx.max_m[0] and bx.min_m[1] < xy[1] < bx.max_m[1])
    # Moving targets got a new phase and stay on their path.
    moving = base.target_valid & (base.target_speed_m_s > 0)
    moving[3] = False
    assert not torch.allclose(a.target_path_s_m[moving], base.target_path_s_m[moving])
    for wi, j in torch.nonzero(moving).tolist():
        n = int(base.target_path_len[wi, j])
        pts = base.target_path_xy_m[wi, j, :n].double().cpu().numpy()
        assert _dist_to_polyline(pts, a.target_pos_enu_m[wi, j, :2].double().cpu().numpy()) < 1e-2


def test_sample_camera_intrinsics():
    a = rnd.sample_camera_intrinsics(60.0, 32, torch.Generator().manual_seed(0), 5.0, 2.0, 64, 48)
    b = rnd.sample_camera_intrinsics(60.0, 32, torch.Generator().manual_seed(0), 5.0, 2.0, 64, 48)
    assert torch.equal(a.fov_deg, b.fov_deg) and torch.equal(a.cx_px, b.cx_px)
    assert a.fov_deg.shape == (32,) and a.principal_offset_px.shape == (32, 2)
    assert ((a.fov_deg >= 55.0) & (a.fov_deg <= 65.0)).all() and a.fov_deg.std() > 0.5
    assert ((a.cx_px - 32.0).abs() <= 2.0).all() and ((a.cy_px - 24.0).abs() <= 2.0).all()
    fx = 32.0 / torch.tan(torch.deg2rad(a.fov_deg) / 2)
    assert torch.allclose(a.fx_px, fx) and torch.allclose(a.fy_px, fx)
    k = a.matrix()
    assert k.shape == (32, 3, 3) and torch.equal(k[:, 2, 2], torch.ones(32))
    nominal = rnd.sample_camera_intrinsics(90.0, 2, torch.Generator().manual_seed(0))
    assert torch.allclose(nominal.fx_px, torch.full((2,), 32.0))
    with pytest.raises(ValueError):
        rnd.sample_camera_intrinsics(170.0, 2, torch.Generator(), fov_noise_deg=20.0)


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"size_x_m": -1.0}, "size_x_m"),
        ({"texture_res_m": 0.3}, "texture_res_m"),
        ({"num_buildings": [5, 2]}, "num_buildings"),
        ({"max_targets": 3}, "max_targets"),
        ({"max_boxes": 3}, "max_boxes"),
        ({"max_path_points": 2}, "max_path_points"),
        ({"geofence_altitude_m": [10.0, 5.0]}, "geofence_altitude_m"),
        ({"spawn_size_m": [500.0, 10.0]}, "spawn_size_m"),
        ({"vehicle": {"speed_m_s": [5.0, 1.0]}}, "vehicle.speed_m_s"),
        ({"person": {"moving_fraction": 2.0}}, "person.moving_fraction"),
        ({"num_roads": [0, 0]}, "num_roads"),
        ({"no_such_field": 1}, "no_such_field"),
        ({"building_height_m": "tall"}, "building_height_m"),
    ],
)
def test_spec_validation_names_field(data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        WorldSpec.from_dict(data)


def test_small_custom_spec_worlds_stack(device):
    spec = WorldSpec.from_dict(
        {"size_x_m": 60.0, "size_y_m": 40.0, "texture_res_m": 0.5, "spawn_size_m": [10.0, 10.0],
         "num_buildings": [1, 2], "num_no_fly_zones": [0, 1], "no_fly_zone_size_m": [5.0, 15.0]}
    )  # fmt: skip
    batch = generate_worlds(spec, [3, 4], device)
    assert batch.ground_rgb.shape == (2, 80, 120, 3)
    assert (batch.x_min_m, batch.y_min_m) == (-30.0, -20.0)


# ----------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="isr")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench")
    world_cli.register(sub, bench.add_subparsers(dest="bench_target", required=True))
    return parser


def test_cli_export_writes_json_and_usd(tmp_path, worlds):
    pytest.importorskip("pxr")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("world:\n  num_buildings: [2, 3]\n")
    args = _parser().parse_args(
        ["world", "export", "--seed", "2", "--spec", str(spec_file), "--json",
         str(tmp_path / "w.json"), "--usd", str(tmp_path / "w.usda")]
    )  # fmt: skip
    assert args.func(args) == 0
    w = World.load_json(tmp_path / "w.json")
    assert w.seed == 2 and w.spec["num_buildings"] == [2, 3]
    assert 2 <= sum(b.kind == "building" for b in w.boxes) <= 3
    assert (tmp_path / "w.usda").is_file() and (tmp_path / "w_ground.png").is_file()
    args = _parser().parse_args(["world", "export", "--seed", "2"])
    with pytest.raises(ValueError, match="at least one output"):
        args.func(args)
    args = _parser().parse_args(
        ["world", "export", "--seed", "2", "--set", "max_boxes=1", "--json", "x.json"]
    )
    with pytest.raises(ConfigError, match="max_boxes"):
        args.func(args)


def test_cli_show_writes_png(tmp_path, worlds):
    json_path = worlds[0].save_json(tmp_path / "w.json")
    args = _parser().parse_args(
        ["world", "show", "--world", str(json_path), "--out", str(tmp_path / "m.png")]
    )
    assert args.func(args) == 0
    data = (tmp_path / "m.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    args = _parser().parse_args(["world", "show", "--out", str(tmp_path / "m2.png")])
    with pytest.raises(ValueError):
        args.func(args)


def test_advance_targets_numba_matches_torch(batch):
    """The CPU kernel moves the targets as the torch code does (long run, turnarounds, bends)."""
    from isr_sim_bridge import cpu_kernels

    if not cpu_kernels.AVAILABLE:
        pytest.fail("numba is a dependency (requirements.txt) but cannot be imported")
    src = batch.to("cpu")
    a, b = (
        type(src)(**{f: (v.clone() if torch.is_tensor(v) else v) for f, v in vars(src).items()})
        for _ in range(2)
    )
    start = src.target_pos_enu_m.clone()
    moving = a.target_valid & (a.target_speed_m_s > 0)
    assert bool(moving.any())
    for k in range(300):
        dt = 0.1 if k < 200 else 3.7  # many control steps, then big jumps through turnarounds
        advance_targets(a, dt)
        advance_targets(b, dt, cpu_kernel=True)
        torch.testing.assert_close(b.target_path_s_m, a.target_path_s_m, rtol=1e-6, atol=1e-4)
        torch.testing.assert_close(b.target_pos_enu_m, a.target_pos_enu_m, rtol=0, atol=1e-3)
        dyaw = torch.remainder(b.target_yaw_rad - a.target_yaw_rad + math.pi, 2 * math.pi) - math.pi
        assert float(dyaw.abs().max()) < 1e-4
    assert bool(((a.target_pos_enu_m - start).abs().sum(-1) > 1.0)[moving].all())  # all moved


def test_voronoi_kernel_gives_the_numpy_ground_bit_for_bit(worlds, monkeypatch):
    """World generation's numba parcel kernel: the same texture and class map as the numpy loop."""
    from isr_sim_bridge import cpu_kernels
    from isr_sim_bridge.world import render_ground

    if not cpu_kernels.AVAILABLE:
        pytest.fail("numba is a dependency (requirements.txt) but cannot be imported")
    fast = [render_ground(w) for w in worlds]
    monkeypatch.setattr(cpu_kernels, "AVAILABLE", False)
    for w, (rgb, cls) in zip(worlds, fast, strict=True):
        rgb_ref, cls_ref = render_ground(w)
        assert np.array_equal(rgb, rgb_ref) and np.array_equal(cls, cls_ref)
