"""Write a :class:`~isr_sim_bridge.world.World` as a USD stage (``.usda``) for Isaac Sim.

Written with usd-core's ``pxr`` only (no Isaac Sim needed). The stage (metres, Z up, default prim
``/World``) holds:

- ``/World/Ground``: one quad mesh covering the area at ``z = 0``, textured with the world's ground
  texture (a PNG written next to the ``.usda``, ``<stem>_ground.png``, north up) through a
  ``UsdPreviewSurface`` + ``UsdUVTexture`` + ``UsdPrimvarReader_float2`` material; ``st = (0, 0)``
  is the south-west corner (USD maps it to the lower-left of the image). Label ``ground``.
- ``/World/Buildings/building_NNN`` and ``/World/Obstacles/<tower|tree_cluster>_NNN``: unit
  ``Cube`` prims scaled and translated to their boxes, with ``displayColor`` and a bound
  ``UsdPreviewSurface`` of the same colour (one material per distinct colour; the world's sRGB
  colours converted to linear, as USD colours are). Labels
  ``building`` / ``obstacle``. Ground, buildings and obstacles carry ``UsdPhysics.CollisionAPI``.
- ``/World/Targets/<class>_NNN``: unit cubes translated, rotated about Z by the yaw and scaled to
  (length, width, height); label = the class name (``vehicle``, ``person``, ``structure``).
  Moving targets keep their speed, path and path state in ``customData`` (``isr:*``).
- ``/World/Roads/road_NNN``: linear ``BasisCurves`` of the centre lines (``purpose = guide``).
- ``/World/NoFlyZones/nfz_NNN``, ``/World/Geofence``, ``/World/SpawnArea``: invisible guide cubes
  (``purpose = guide``, ``visibility = invisible``) spanning their rectangle up to the geofence
  ceiling, with their corners in ``customData``.
- ``/World/Lights``: a distant light (sun) and a dome light.
- Layer ``customLayerData``: ``isr:seed``, ``isr:texture_seed``, ``isr:spec_json`` (the
  :class:`~isr_sim_bridge.world.WorldSpec`), ``isr:world_json`` (the whole world) and the area.

Semantic labels are written the way Isaac Sim 5.1's ``isaacsim.core.utils.semantics.add_labels``
writes them: ``prepend apiSchemas = ["SemanticsLabelsAPI:class"]`` and
``token[] semantics:labels:class = [...]``. Not opened in Isaac Sim on the build machines (no RTX
GPU there); checked with ``pxr`` only.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from isr_direct_dynamics.config import json_dumps
from isr_sim_bridge.world import World

SEMANTIC_TYPE = "class"
"""Instance name of the ``SemanticsLabelsAPI`` schema (the label type Isaac Sim filters on)."""


def add_semantic_label(prim: object, label: str, semantic_type: str = SEMANTIC_TYPE) -> None:
    """Apply ``SemanticsLabelsAPI:<type>`` to ``prim`` and set ``semantics:labels:<type>``."""
    from pxr import Sdf

    prim.AddAppliedSchema(f"SemanticsLabelsAPI:{semantic_type}")
    attr = prim.CreateAttribute(f"semantics:labels:{semantic_type}", Sdf.ValueTypeNames.TokenArray)
    attr.Set([label])


def _srgb_to_linear(c: float) -> float:
    """sRGB-encoded channel in [0, 1] to linear (``UsdPreviewSurface`` colours are linear)."""
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def export_usd(world: World, path: str | Path) -> Path:
    """Write ``world`` as ``path`` (``.usda``) plus ``<stem>_ground.png`` beside it.

    Returns the path of the ``.usda``. Overwrites existing files.
    """
    from PIL import Image
    from pxr import Gf, Sdf, Usd, UsdGeom, UsdLux, UsdPhysics, UsdShade, Vt

    path = Path(path)
    if path.suffix not in (".usda", ".usd"):
        raise ValueError(f"USD output must end in .usda or .usd, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tex_path = path.with_name(f"{path.stem}_ground.png")
    rgb, _ = world.ground()
    Image.fromarray(np.ascontiguousarray(np.flipud(rgb))).save(tex_path)  # north-up image

    if path.exists():
        path.unlink()
    stage = Usd.Stage.CreateNew(str(path))
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    root = UsdGeom.Xform.Define(stage, "/World").GetPrim()
    stage.SetDefaultPrim(root)
    x0, y0 = world.x_min_m, world.y_min_m
    x1, y1 = x0 + world.size_x_m, y0 + world.size_y_m
    ceiling = float(world.geofence_max_m[2])
    stage.GetRootLayer().customLayerData = {
        "isr:generator": "isr_sim_bridge.world.generate_world",
        "isr:seed": int(world.seed),
        "isr:texture_seed": int(world.texture_seed),
        "isr:spec_json": json_dumps(world.spec),
        "isr:world_json": world.to_json(),
        "isr:area_min_m": Gf.Vec2d(x0, y0),
        "isr:area_size_m": Gf.Vec2d(world.size_x_m, world.size_y_m),
        "isr:texture_res_m": float(world.texture_res_m),
    }
    UsdGeom.Scope.Define(stage, "/World/Looks")

    def preview_material(name: str, rgb01: tuple[float, float, float]) -> UsdShade.Material:
        mat = UsdShade.Material.Define(stage, f"/World/Looks/{name}")
        shader = UsdShade.Shader.Define(stage, f"/World/Looks/{name}/PreviewSurface")
        shader.CreateIdAttr("UsdPreviewSurface")
        shader.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).Set(Gf.Vec3f(*rgb01))
        shader.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(0.8)
        shader.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(0.0)
        mat.CreateSurfaceOutput().ConnectToSource(shader.ConnectableAPI(), "surface")
        return mat

    # Ground: one textured quad.
    ground = UsdGeom.Mesh.Define(stage, "/World/Ground")
    ground.CreatePointsAttr([(x0, y0, 0.0), (x1, y0, 0.0), (x1, y1, 0.0), (x0, y1, 0.0)])
    ground.CreateFaceVertexCountsAttr([4])
    ground.CreateFaceVertexIndicesAttr([0, 1, 2, 3])
    ground.CreateNormalsAttr([(0.0, 0.0, 1.0)] * 4)
    ground.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
    ground.CreateExtentAttr([(x0, y0, 0.0), (x1, y1, 0.0)])
    ground.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    st = UsdGeom.PrimvarsAPI(ground).CreatePrimvar(
        "st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex
    )
    st.Set([(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)])
    mat = UsdShade.Material.Define(stage, "/World/Looks/GroundMaterial")
    surf = UsdShade.Shader.Define(stage, "/World/Looks/GroundMaterial/PreviewSurface")
    surf.CreateIdAttr("UsdPreviewSurface")
    surf.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(0.9)
    surf.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(0.0)
    reader = UsdShade.Shader.Define(stage, "/World/Looks/GroundMaterial/STReader")
    reader.CreateIdAttr("UsdPrimvarReader_float2")
    reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
    tex = UsdShade.Shader.Define(stage, "/World/Looks/GroundMaterial/GroundTexture")
    tex.CreateIdAttr("UsdUVTexture")
    tex.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(Sdf.AssetPath(f"./{tex_path.name}"))
    tex.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set("sRGB")
    tex.CreateInput("wrapS", Sdf.ValueTypeNames.Token).Set("clamp")
    tex.CreateInput("wrapT", Sdf.ValueTypeNames.Token).Set("clamp")
    tex.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(
        reader.ConnectableAPI(), "result"
    )
    tex.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
    surf.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).ConnectToSource(
        tex.ConnectableAPI(), "rgb"
    )
    mat.CreateSurfaceOutput().ConnectToSource(surf.ConnectableAPI(), "surface")
    UsdShade.MaterialBindingAPI.Apply(ground.GetPrim()).Bind(mat)
    UsdPhysics.CollisionAPI.Apply(ground.GetPrim())
    add_semantic_label(ground.GetPrim(), "ground")

    materials: dict[tuple[int, int, int], UsdShade.Material] = {}

    def colour_material(rgb: tuple[int, int, int]) -> UsdShade.Material:
        key = tuple(int(c) for c in rgb)
        if key not in materials:
            rgb01 = tuple(_srgb_to_linear(c / 255.0) for c in key)
            materials[key] = preview_material(
                f"color_{key[0]:03d}_{key[1]:03d}_{key[2]:03d}", rgb01
            )
        return materials[key]

    def unit_cube(
        prim_path: str,
        center: tuple[float, float, float],
        scale: tuple[float, float, float],
        yaw_rad: float | None = None,
    ) -> UsdGeom.Cube:
        cube = UsdGeom.Cube.Define(stage, prim_path)
        cube.CreateSizeAttr(1.0)
        cube.CreateExtentAttr([(-0.5, -0.5, -0.5), (0.5, 0.5, 0.5)])
        cube.AddTranslateOp().Set(Gf.Vec3d(*center))
        if yaw_rad is not None:
            cube.AddRotateZOp().Set(math.degrees(yaw_rad))
        cube.AddScaleOp().Set(Gf.Vec3f(*scale))
        return cube

    def coloured(cube: UsdGeom.Cube, rgb: tuple[int, int, int]) -> None:
        cube.CreateDisplayColorAttr([Gf.Vec3f(*(_srgb_to_linear(c / 255.0) for c in rgb))])
        UsdShade.MaterialBindingAPI.Apply(cube.GetPrim()).Bind(colour_material(rgb))

    UsdGeom.Scope.Define(stage, "/World/Buildings")
    UsdGeom.Scope.Define(stage, "/World/Obstacles")
    counters: dict[str, int] = {}
    for box in world.boxes:
        lo, hi = np.asarray(box.min_m, dtype=float), np.asarray(box.max_m, dtype=float)
        n = counters.get(box.kind, 0)
        counters[box.kind] = n + 1
        parent = "Buildings" if box.kind == "building" else "Obstacles"
        cube = unit_cube(
            f"/World/{parent}/{box.kind}_{n:03d}", tuple(0.5 * (lo + hi)), tuple(hi - lo)
        )
        coloured(cube, box.rgb)
        prim = cube.GetPrim()
        UsdPhysics.CollisionAPI.Apply(prim)
        add_semantic_label(prim, "building" if box.kind == "building" else "obstacle")
        prim.SetCustomDataByKey("isr:kind", box.kind)

    UsdGeom.Scope.Define(stage, "/World/Targets")
    counters = {}
    for tgt in world.targets:
        n = counters.get(tgt.cls, 0)
        counters[tgt.cls] = n + 1
        cube = unit_cube(
            f"/World/Targets/{tgt.cls}_{n:03d}", tgt.pos_enu_m, tgt.size_m, tgt.yaw_rad
        )
        coloured(cube, tgt.rgb)
        prim = cube.GetPrim()
        add_semantic_label(prim, tgt.cls)
        prim.SetCustomDataByKey("isr:speed_m_s", float(tgt.speed_m_s))
        if tgt.path_xy_m:
            prim.SetCustomDataByKey(
                "isr:path_xy_m", Vt.Vec2dArray([Gf.Vec2d(*p) for p in tgt.path_xy_m])
            )
            prim.SetCustomDataByKey("isr:path_s_m", float(tgt.path_s_m))

    UsdGeom.Scope.Define(stage, "/World/Roads")
    for i, road in enumerate(world.roads):
        curve = UsdGeom.BasisCurves.Define(stage, f"/World/Roads/road_{i:03d}")
        pts = [Gf.Vec3f(x, y, 0.0) for x, y in road.points_xy_m]
        curve.CreateTypeAttr(UsdGeom.Tokens.linear)
        curve.CreatePointsAttr(pts)
        curve.CreateCurveVertexCountsAttr([len(pts)])
        curve.CreateWidthsAttr([float(road.width_m)])
        curve.SetWidthsInterpolation(UsdGeom.Tokens.constant)
        curve.CreatePurposeAttr(UsdGeom.Tokens.guide)
        curve.GetPrim().SetCustomDataByKey("isr:width_m", float(road.width_m))

    def guide_box(
        prim_path: str, lo: tuple[float, float], hi: tuple[float, float], kind: str
    ) -> None:
        lo_a, hi_a = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
        center = (*(0.5 * (lo_a + hi_a)), 0.5 * ceiling)
        cube = unit_cube(prim_path, center, (*(hi_a - lo_a), ceiling))
        cube.CreatePurposeAttr(UsdGeom.Tokens.guide)
        cube.CreateVisibilityAttr(UsdGeom.Tokens.invisible)
        prim = cube.GetPrim()
        prim.SetCustomDataByKey("isr:kind", kind)
        prim.SetCustomDataByKey("isr:min_xy_m", Gf.Vec2d(*lo_a))
        prim.SetCustomDataByKey("isr:max_xy_m", Gf.Vec2d(*hi_a))

    UsdGeom.Scope.Define(stage, "/World/NoFlyZones")
    for i, z in enumerate(world.no_fly_zones):
        guide_box(f"/World/NoFlyZones/nfz_{i:03d}", z.min_xy_m, z.max_xy_m, "no_fly_zone")
    guide_box("/World/Geofence", world.geofence_min_m[:2], world.geofence_max_m[:2], "geofence")
    fence = stage.GetPrimAtPath("/World/Geofence")
    fence.SetCustomDataByKey("isr:min_altitude_m", float(world.geofence_min_m[2]))
    fence.SetCustomDataByKey("isr:max_altitude_m", float(world.geofence_max_m[2]))
    guide_box("/World/SpawnArea", world.spawn.min_xy_m, world.spawn.max_xy_m, "spawn_area")

    UsdGeom.Scope.Define(stage, "/World/Lights")
    sun = UsdLux.DistantLight.Define(stage, "/World/Lights/Sun")
    sun.CreateIntensityAttr(3000.0)
    sun.CreateAngleAttr(0.53)
    UsdGeom.Xformable(sun).AddRotateXYZOp().Set(Gf.Vec3f(35.0, 0.0, 30.0))
    dome = UsdLux.DomeLight.Define(stage, "/World/Lights/Sky")
    dome.CreateIntensityAttr(600.0)
    dome.CreateColorAttr(Gf.Vec3f(0.85, 0.9, 1.0))

    stage.GetRootLayer().Save()
    return path
