"""Procedural ISR worlds: a typed spec, a seeded generator, JSON I/O and batched target motion.

One world is a flat ``size_x_m x size_y_m`` area centred on the origin (ENU, metres; see the
conventions in :mod:`isr_sim_bridge.world_batch`) holding:

- a ground texture (~0.25 m per texel) of field parcels (patchy greens and browns with crop rows),
  forest patches (dark green, noisy crowns), water bodies (blue) and a few straight or bent roads
  (grey asphalt, dashed centre line), and the ground-cover class of every texel;
- buildings (axis-aligned boxes, off roads, forest and water), towers and tree clusters (boxes);
- targets of the classes in :data:`~isr_sim_bridge.world_batch.TARGET_CLASSES`: vehicles on roads
  (parked on one side, moving on the other side's lane), persons anywhere outside buildings,
  obstacles and water (some walking along a road's verge), structures on fields; all targets lie
  inside the geofence and never overlap a box or another static target;
- no-fly zones (rectangles), a geofence (the area minus a margin, an altitude band) and a spawn
  rectangle clear of buildings, obstacles and no-fly zones.

:func:`generate_world` builds one :class:`World` (plain Python data, exact JSON round trip) from a
:class:`WorldSpec` and a seed; the ground texture is derived from the stored features and
``texture_seed`` (so the JSON stays small) by :meth:`World.ground`. :func:`generate_worlds` stacks
many worlds into a padded :class:`~isr_sim_bridge.world_batch.WorldBatch`, and
:func:`advance_targets` moves the moving targets along their paths, batched, in place.

Moving targets drive their path (a road polyline, offset to a lane or the verge) back and forth.
Targets do not interact: two moving vehicles on the same lane, or traffic at a crossing, pass
through each other (there is no traffic model).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from isr_direct_dynamics.config import check, from_dict, json_dumps, to_dict
from isr_direct_dynamics.io_checks import atomic_write_text
from isr_sim_bridge import cpu_kernels
from isr_sim_bridge.world_batch import GROUND_CLASSES, TARGET_CLASSES, WorldBatch

FIELD, ROAD, FOREST, WATER = (GROUND_CLASSES.index(n) for n in ("field", "road", "forest", "water"))
BOX_KIND_IDS: dict[str, int] = {"building": 0, "tower": 1, "tree_cluster": 1}
"""``box_kind`` id of each box kind name (0 = building, 1 = other obstacle)."""

RGB = tuple[int, int, int]


# --------------------------------------------------------------------------------------- spec


def _check_lengths(obj: Any, prefix: str) -> None:
    """Every tuple-valued field holds as many values as its default (e.g. a ``(min, max)``)."""
    for f in dataclasses.fields(obj):
        if isinstance(f.default, tuple):
            n = len(f.default)
            value = getattr(obj, f.name)
            check(len(value) == n, prefix + f.name, f"needs {n} values, got {list(value)}")


@dataclass
class TargetClassSpec:
    """How many targets of one class a world holds, and what they look like."""

    count: tuple[int, ...] = (2, 6)
    """Inclusive range of the number of targets of this class per world."""
    size_min_m: tuple[float, ...] = (4.0, 1.8, 1.5)
    """Smallest (length, width, height) box; a target's size interpolates min..max (one factor)."""
    size_max_m: tuple[float, ...] = (6.5, 2.5, 3.0)
    """Largest (length, width, height) box."""
    colors_rgb: list[tuple[int, ...]] = field(default_factory=lambda: [(200, 200, 200)])
    """Palette the target colours are drawn from (0..255), jittered slightly per target."""
    moving_fraction: float = 0.0
    """Probability that a target of this class moves along a road (0 for static classes)."""
    speed_m_s: tuple[float, ...] = (0.0, 0.0)
    """Range of the constant speed of a moving target of this class, m/s."""

    def validate_as(self, name: str) -> None:
        """Raise :class:`ConfigError` naming ``<name>.<field>`` when a value is out of range.

        Called by :meth:`WorldSpec.validate` with the field name of this class spec.
        """
        _check_lengths(self, f"{name}.")
        for c in self.colors_rgb:
            check(len(c) == 3, f"{name}.colors_rgb", f"{c} is not an (r, g, b) triple")
        check(0 <= self.count[0] <= self.count[1], f"{name}.count", "need 0 <= min <= max")
        for i in range(3):
            check(
                0.0 < self.size_min_m[i] <= self.size_max_m[i],
                f"{name}.size_min_m",
                "need 0 < size_min_m <= size_max_m in every dimension",
            )
        check(len(self.colors_rgb) > 0, f"{name}.colors_rgb", "needs at least one colour")
        for c in self.colors_rgb:
            check(all(0 <= v <= 255 for v in c), f"{name}.colors_rgb", f"{c} not in 0..255")
        check(0.0 <= self.moving_fraction <= 1.0, f"{name}.moving_fraction", "must be in [0, 1]")
        check(
            0.0 <= self.speed_m_s[0] <= self.speed_m_s[1],
            f"{name}.speed_m_s",
            "need 0 <= min <= max",
        )
        check(
            self.moving_fraction == 0.0 or self.speed_m_s[1] > 0.0,
            f"{name}.speed_m_s",
            "moving targets need a positive speed",
        )


def _vehicle_spec() -> TargetClassSpec:
    return TargetClassSpec(
        count=(2, 6),
        size_min_m=(3.9, 1.7, 1.4),
        size_max_m=(6.5, 2.3, 2.6),
        colors_rgb=[
            (225, 225, 222),
            (28, 28, 32),
            (150, 152, 156),
            (165, 28, 30),
            (32, 58, 128),
            (52, 72, 48),
            (200, 170, 40),
        ],
        moving_fraction=0.5,
        speed_m_s=(5.0, 12.0),
    )


def _person_spec() -> TargetClassSpec:
    return TargetClassSpec(
        count=(2, 6),
        size_min_m=(0.3, 0.45, 1.6),
        size_max_m=(0.4, 0.6, 1.9),
        colors_rgb=[
            (205, 60, 40),
            (40, 62, 150),
            (60, 60, 62),
            (215, 190, 60),
            (88, 108, 58),
            (235, 235, 235),
            (150, 70, 140),
        ],
        moving_fraction=0.4,
        speed_m_s=(1.0, 1.5),
    )


def _structure_spec() -> TargetClassSpec:
    return TargetClassSpec(
        count=(1, 3),
        size_min_m=(3.0, 2.4, 2.2),
        size_max_m=(7.0, 3.5, 3.5),
        colors_rgb=[(122, 112, 80), (88, 98, 66), (185, 185, 178), (150, 92, 60), (70, 90, 110)],
        moving_fraction=0.0,
        speed_m_s=(0.0, 0.0),
    )


MAX_WORLD_SIZE_M = 5000.0
"""Largest world side, metres."""
MAX_TEXTURE_PIXELS = 64_000_000
"""Largest ground texture of one world (8000 x 8000 px)."""
WORLD_BYTES_PER_PIXEL = 8
"""Memory of a generated world per texture pixel (RGB texture and the per-pixel rasters; measured
about 6 MB per default 800 x 800 px world)."""


@dataclass
class WorldSpec:
    """Everything :func:`generate_world` draws from; ranges are inclusive ``(min, max)``."""

    size_x_m: float = 200.0
    """Extent of the area along x (east), metres; the area is centred on the origin."""
    size_y_m: float = 200.0
    """Extent of the area along y (north), metres."""
    texture_res_m: float = 0.25
    """Edge of one ground texel, metres; must divide both sizes."""

    num_roads: tuple[int, ...] = (1, 3)
    """Number of roads; each crosses the area edge to edge (W-E or S-N) as a polyline."""
    road_width_m: tuple[float, ...] = (5.0, 8.0)
    """Range of road widths, metres."""
    road_max_bends: int = 2
    """Maximum number of interior vertices (bends) of a road polyline."""
    road_max_turn_deg: float = 35.0
    """Largest change of direction at a bend, degrees (keeps lane and verge offsets tidy)."""

    num_forest_patches: tuple[int, ...] = (1, 4)
    """Number of forest patches (noisy blobs; roads may cut through them)."""
    forest_radius_m: tuple[float, ...] = (10.0, 28.0)
    """Range of the nominal radius of a forest patch, metres."""
    num_water_bodies: tuple[int, ...] = (0, 2)
    """Number of ponds/lakes (noisy blobs, kept clear of roads)."""
    water_radius_m: tuple[float, ...] = (6.0, 15.0)
    """Range of the nominal radius of a water body, metres."""

    num_buildings: tuple[int, ...] = (4, 12)
    """Number of buildings (axis-aligned boxes on fields)."""
    building_footprint_m: tuple[float, ...] = (6.0, 18.0)
    """Range of each side of a building's footprint, metres."""
    building_height_m: tuple[float, ...] = (3.0, 15.0)
    """Range of building heights, metres."""
    building_road_clearance_m: float = 3.0
    """Minimum gap between a building and a road edge, forest or water, metres."""
    building_spacing_m: float = 3.0
    """Minimum gap between two boxes (buildings and obstacles), metres."""
    building_near_road_fraction: float = 0.7
    """Fraction of buildings placed along a road (the rest anywhere on fields)."""

    num_towers: tuple[int, ...] = (0, 2)
    """Number of towers/masts (thin tall boxes)."""
    tower_footprint_m: tuple[float, ...] = (1.5, 3.0)
    """Range of each side of a tower's footprint, metres."""
    tower_height_m: tuple[float, ...] = (20.0, 40.0)
    """Range of tower heights, metres."""
    num_tree_clusters: tuple[int, ...] = (1, 4)
    """Number of tall tree clusters (boxes, mostly inside forest patches)."""
    tree_cluster_footprint_m: tuple[float, ...] = (4.0, 10.0)
    """Range of each side of a tree cluster's footprint, metres."""
    tree_cluster_height_m: tuple[float, ...] = (8.0, 16.0)
    """Range of tree cluster heights, metres."""
    obstacle_road_clearance_m: float = 2.0
    """Minimum gap between a tower/tree cluster and a road edge, metres."""

    vehicle: TargetClassSpec = field(default_factory=_vehicle_spec)
    """Vehicles: on roads; moving ones drive a lane at 5-12 m/s."""
    person: TargetClassSpec = field(default_factory=_person_spec)
    """Persons: outside buildings, obstacles and water; moving ones walk a road's verge."""
    structure: TargetClassSpec = field(default_factory=_structure_spec)
    """Structures (sheds, containers, shelters): static, on fields."""
    target_road_clearance_m: float = 1.5
    """Minimum gap between a static person/structure and a road edge (keeps verges free)."""

    num_no_fly_zones: tuple[int, ...] = (0, 2)
    """Number of no-fly zones (rectangles of unlimited altitude)."""
    no_fly_zone_size_m: tuple[float, ...] = (20.0, 45.0)
    """Range of each side of a no-fly zone, metres."""

    geofence_margin_m: float = 5.0
    """The geofence is the area shrunk by this margin on every side, metres."""
    geofence_altitude_m: tuple[float, ...] = (0.0, 60.0)
    """(floor, ceiling) of the geofence, metres above ground."""

    spawn_size_m: tuple[float, ...] = (30.0, 30.0)
    """(x, y) size of the spawn rectangle (inside the geofence, clear of boxes and no-fly zones)."""
    spawn_clearance_m: float = 5.0
    """Minimum gap between the spawn rectangle and boxes or no-fly zones, metres."""

    max_boxes: int = 20
    """Padded number of boxes (buildings + towers + tree clusters) in a :class:`WorldBatch`."""
    max_targets: int = 16
    """Padded number of targets in a :class:`WorldBatch`."""
    max_no_fly_zones: int = 3
    """Padded number of no-fly zones in a :class:`WorldBatch`."""
    max_path_points: int = 8
    """Padded number of waypoints of a moving target's path (>= road_max_bends + 2)."""

    @property
    def texture_pixels(self) -> int:
        """Pixels of one world's ground texture (and of each of its rasters)."""
        return round(self.size_x_m / self.texture_res_m) * round(self.size_y_m / self.texture_res_m)

    def memory_bytes(self) -> float:
        """Estimated memory of one generated world (rasters, boxes, targets), bytes."""
        return self.texture_pixels * WORLD_BYTES_PER_PIXEL + 2**20

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first field whose value is out of range."""
        _check_lengths(self, "")
        for name in ("size_x_m", "size_y_m"):
            v = getattr(self, name)
            check(
                math.isfinite(v) and 10.0 <= v <= MAX_WORLD_SIZE_M,
                name,
                f"must be in [10, {MAX_WORLD_SIZE_M:.0f}] m, got {v}",
            )
        check(
            math.isfinite(self.texture_res_m) and self.texture_res_m >= 0.01,
            "texture_res_m",
            f"must be >= 0.01 m, got {self.texture_res_m}",
        )
        px = self.texture_pixels
        check(
            px <= MAX_TEXTURE_PIXELS,
            "texture_res_m",
            f"{self.texture_res_m} m over {self.size_x_m:g} x {self.size_y_m:g} m is a "
            f"{px / 1e6:.0f} Mpx texture per world ({px * WORLD_BYTES_PER_PIXEL / 2**30:.1f} GiB; "
            f"at most {MAX_TEXTURE_PIXELS / 1e6:.0f} Mpx): use a coarser resolution",
        )
        for name in ("size_x_m", "size_y_m"):
            n = getattr(self, name) / self.texture_res_m
            check(abs(n - round(n)) < 1e-6, "texture_res_m", f"must divide {name}")
        for name in (
            "num_roads",
            "num_forest_patches",
            "num_water_bodies",
            "num_buildings",
            "num_towers",
            "num_tree_clusters",
            "num_no_fly_zones",
        ):
            lo, hi = getattr(self, name)
            check(0 <= lo <= hi, name, "need 0 <= min <= max")
        for name in (
            "road_width_m",
            "forest_radius_m",
            "water_radius_m",
            "building_footprint_m",
            "building_height_m",
            "tower_footprint_m",
            "tower_height_m",
            "tree_cluster_footprint_m",
            "tree_cluster_height_m",
            "no_fly_zone_size_m",
        ):
            lo, hi = getattr(self, name)
            check(0.0 < lo <= hi, name, "need 0 < min <= max")
        check(self.road_max_bends >= 0, "road_max_bends", "must be >= 0")
        check(0.0 <= self.road_max_turn_deg < 90.0, "road_max_turn_deg", "must be in [0, 90)")
        for name in (
            "building_road_clearance_m",
            "building_spacing_m",
            "obstacle_road_clearance_m",
            "target_road_clearance_m",
            "spawn_clearance_m",
        ):
            check(getattr(self, name) >= 0.0, name, "must be >= 0")
        check(
            0.0 <= self.building_near_road_fraction <= 1.0,
            "building_near_road_fraction",
            "must be in [0, 1]",
        )
        for name in TARGET_CLASSES:
            getattr(self, name).validate_as(name)
        check(
            self.vehicle.count[1] == 0 or self.num_roads[0] >= 1,
            "num_roads",
            "vehicles live on roads: need at least one road when vehicles are requested",
        )
        check(
            self.no_fly_zone_size_m[1] <= min(self.size_x_m, self.size_y_m),
            "no_fly_zone_size_m",
            "must fit inside the area",
        )
        half = 0.5 * min(self.size_x_m, self.size_y_m)
        check(0.0 <= self.geofence_margin_m < half, "geofence_margin_m", "must be in [0, size/2)")
        lo, hi = self.geofence_altitude_m
        check(0.0 <= lo < hi, "geofence_altitude_m", "need 0 <= floor < ceiling")
        check(
            self.spawn_size_m[0] > 0.0 and self.spawn_size_m[1] > 0.0,
            "spawn_size_m",
            "must be positive",
        )
        check(
            self.spawn_size_m[0] <= self.size_x_m - 2 * self.geofence_margin_m
            and self.spawn_size_m[1] <= self.size_y_m - 2 * self.geofence_margin_m,
            "spawn_size_m",
            "must fit inside the geofence",
        )
        n_boxes = self.num_buildings[1] + self.num_towers[1] + self.num_tree_clusters[1]
        check(self.max_boxes >= n_boxes, "max_boxes", f"must be >= {n_boxes} (the maximum count)")
        n_targets = sum(getattr(self, c).count[1] for c in TARGET_CLASSES)
        check(
            self.max_targets >= n_targets,
            "max_targets",
            f"must be >= {n_targets} (the sum of the class maxima)",
        )
        check(
            self.max_no_fly_zones >= self.num_no_fly_zones[1],
            "max_no_fly_zones",
            f"must be >= {self.num_no_fly_zones[1]}",
        )
        check(
            self.max_path_points >= self.road_max_bends + 2,
            "max_path_points",
            f"must be >= road_max_bends + 2 = {self.road_max_bends + 2}",
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> WorldSpec:
        """Strictly validated spec from a plain mapping (unknown keys raise ConfigError)."""
        return from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data (JSON/YAML-safe) form."""
        return to_dict(self)


# -------------------------------------------------------------------------------------- world


@dataclass
class Road:
    """A road: a polyline crossing the area, drawn ``width_m`` wide."""

    points_xy_m: list[tuple[float, float]]
    """Vertices of the centre line (first and last on the area edge)."""
    width_m: float
    """Asphalt width, metres."""
    traffic_side: int
    """+1: moving vehicles use the lane left of the centre line (walking along the polyline's
    vertex order) and parked vehicles the right edge; -1: the other way round."""


@dataclass
class Blob:
    """A forest patch or a water body: a noisy disc (its outline comes from the texture seed)."""

    center_xy_m: tuple[float, float]
    """Centre, metres."""
    radius_m: float
    """Nominal radius, metres."""


@dataclass
class Box:
    """A building or obstacle: an axis-aligned box standing on the ground."""

    kind: str
    """``building``, ``tower`` or ``tree_cluster``."""
    min_m: tuple[float, float, float]
    """Lower corner (x, y, 0)."""
    max_m: tuple[float, float, float]
    """Upper corner (x, y, height)."""
    rgb: tuple[int, int, int]
    """Colour."""


@dataclass
class Target:
    """A target: an oriented box (see :mod:`isr_sim_bridge.world_batch`)."""

    cls: str
    """Class name, one of :data:`TARGET_CLASSES`."""
    pos_enu_m: tuple[float, float, float]
    """Box centre (z = half height)."""
    size_m: tuple[float, float, float]
    """(length, width, height)."""
    yaw_rad: float
    """Heading of the length axis, ENU radians."""
    rgb: tuple[int, int, int]
    """Colour."""
    speed_m_s: float = 0.0
    """Speed along the path; 0 for static targets."""
    path_xy_m: list[tuple[float, float]] = field(default_factory=list)
    """Waypoints driven back and forth (empty for static targets)."""
    path_s_m: float = 0.0
    """Arc length travelled along the back-and-forth path, in [0, 2 * path length)."""


@dataclass
class Rect:
    """An axis-aligned rectangle on the ground."""

    min_xy_m: tuple[float, float]
    """South-west corner."""
    max_xy_m: tuple[float, float]
    """North-east corner."""


@dataclass
class World:
    """One generated world as plain Python data (exact JSON round trip)."""

    seed: int
    """Seed it was generated from."""
    spec: dict[str, Any]
    """The :class:`WorldSpec` it was generated from, as plain data."""
    x_min_m: float
    """West edge of the area."""
    y_min_m: float
    """South edge of the area."""
    size_x_m: float
    """Extent along x, metres."""
    size_y_m: float
    """Extent along y, metres."""
    texture_res_m: float
    """Ground texel edge, metres."""
    texture_seed: int
    """Seed of the ground texture's noise (field parcels, blob outlines, grain)."""
    roads: list[Road]
    """Roads."""
    forests: list[Blob]
    """Forest patches."""
    waters: list[Blob]
    """Water bodies."""
    boxes: list[Box]
    """Buildings first, then towers and tree clusters."""
    targets: list[Target]
    """Vehicles, then persons, then structures."""
    no_fly_zones: list[Rect]
    """No-fly zones."""
    geofence_min_m: tuple[float, float, float]
    """Lower corner of the geofence box (x, y, floor)."""
    geofence_max_m: tuple[float, float, float]
    """Upper corner of the geofence box (x, y, ceiling)."""
    spawn: Rect
    """Spawn rectangle."""
    _ground_cache: tuple[np.ndarray, np.ndarray] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def world_spec(self) -> WorldSpec:
        """The typed :class:`WorldSpec` this world was generated from."""
        return WorldSpec.from_dict(self.spec)

    def ground(self) -> tuple[np.ndarray, np.ndarray]:
        """Ground texture ``(Hy, Hx, 3) uint8`` and class map ``(Hy, Hx) uint8`` (cached).

        Row index = y (south first), column index = x, as in :class:`WorldBatch`.
        """
        if self._ground_cache is None:
            self._ground_cache = render_ground(self)
        return self._ground_cache

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name.startswith("_"):
                continue
            out[f.name] = _plain(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> World:
        """Inverse of :meth:`to_dict`."""

        def t(v: Any) -> tuple:
            return tuple(v)

        return cls(
            seed=int(data["seed"]),
            spec=dict(data["spec"]),
            x_min_m=float(data["x_min_m"]),
            y_min_m=float(data["y_min_m"]),
            size_x_m=float(data["size_x_m"]),
            size_y_m=float(data["size_y_m"]),
            texture_res_m=float(data["texture_res_m"]),
            texture_seed=int(data["texture_seed"]),
            roads=[
                Road([t(p) for p in r["points_xy_m"]], float(r["width_m"]), int(r["traffic_side"]))
                for r in data["roads"]
            ],
            forests=[Blob(t(b["center_xy_m"]), float(b["radius_m"])) for b in data["forests"]],
            waters=[Blob(t(b["center_xy_m"]), float(b["radius_m"])) for b in data["waters"]],
            boxes=[
                Box(b["kind"], t(b["min_m"]), t(b["max_m"]), t(b["rgb"])) for b in data["boxes"]
            ],
            targets=[
                Target(
                    cls=g["cls"],
                    pos_enu_m=t(g["pos_enu_m"]),
                    size_m=t(g["size_m"]),
                    yaw_rad=float(g["yaw_rad"]),
                    rgb=t(g["rgb"]),
                    speed_m_s=float(g["speed_m_s"]),
                    path_xy_m=[t(p) for p in g["path_xy_m"]],
                    path_s_m=float(g["path_s_m"]),
                )
                for g in data["targets"]
            ],
            no_fly_zones=[Rect(t(z["min_xy_m"]), t(z["max_xy_m"])) for z in data["no_fly_zones"]],
            geofence_min_m=t(data["geofence_min_m"]),
            geofence_max_m=t(data["geofence_max_m"]),
            spawn=Rect(t(data["spawn"]["min_xy_m"]), t(data["spawn"]["max_xy_m"])),
        )

    def to_json(self, indent: int | None = None) -> str:
        """JSON text; :meth:`from_json` restores an equal world (floats round-trip exactly)."""
        return json_dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> World:
        """Parse :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))

    def save_json(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path`` (parents created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, self.to_json(indent=1))
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> World:
        """Read a world written by :meth:`save_json`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"world file not found: {path}")
        return cls.from_json(path.read_text())


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return v


# ---------------------------------------------------------------------------- polyline helpers


def _cumlen(pts: np.ndarray) -> np.ndarray:
    """Arc length at every vertex of a polyline ``(P, 2)``."""
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])


def _point_at(pts: np.ndarray, cum: np.ndarray, s: np.ndarray | float) -> np.ndarray:
    """Point(s) at arc length ``s`` along the polyline."""
    return np.stack([np.interp(s, cum, pts[:, 0]), np.interp(s, cum, pts[:, 1])], axis=-1)


def _tangent_at(pts: np.ndarray, cum: np.ndarray, s: float) -> np.ndarray:
    """Unit tangent of the segment holding arc length ``s``."""
    k = int(np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(pts) - 2))
    d = pts[k + 1] - pts[k]
    return d / max(float(np.linalg.norm(d)), 1e-9)


def _offset_polyline(pts: np.ndarray, offset_m: float) -> np.ndarray:
    """Polyline shifted ``offset_m`` to the left of its direction (mitred joints)."""
    d = np.diff(pts, axis=0)
    t = d / np.linalg.norm(d, axis=1, keepdims=True)
    n = np.stack([-t[:, 1], t[:, 0]], axis=1)
    vn = np.empty_like(pts)
    vn[0], vn[-1] = n[0], n[-1]
    if len(pts) > 2:
        a, b = n[:-1], n[1:]
        vn[1:-1] = (a + b) / (1.0 + np.sum(a * b, axis=1, keepdims=True))
    return pts + offset_m * vn


def _clip_polyline(pts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    """Longest piece of the polyline inside the rectangle ``[lo, hi]`` (sampled every 0.25 m)."""
    cum = _cumlen(pts)
    s = np.linspace(0.0, cum[-1], max(int(cum[-1] / 0.25), 2) + 1)
    p = _point_at(pts, cum, s)
    inside = np.all((p >= lo) & (p <= hi), axis=1).astype(np.int8)
    if not inside.any():
        return None
    edges = np.diff(np.concatenate([[0], inside, [0]]))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0] - 1
    j = int(np.argmax(ends - starts))
    s0, s1 = s[starts[j]], s[ends[j]]
    if s1 - s0 < 1.0:
        return None
    mid = pts[(cum > s0) & (cum < s1)]
    return np.concatenate([_point_at(pts, cum, s0)[None], mid, _point_at(pts, cum, s1)[None]])


def _dist_to_polyline(pts: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Distance from points ``q (..., 2)`` to the polyline ``pts (P, 2)``."""
    best = np.full(q.shape[:-1], np.inf)
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        ab = b - a
        t = np.clip(((q - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(q - (a + t[..., None] * ab), axis=-1))
    return best


def _pose_on_path(pts: np.ndarray, s_m: float) -> tuple[float, float, float]:
    """(x, y, yaw) at back-and-forth arc length ``s_m`` (the formula of :func:`advance_targets`)."""
    cum = _cumlen(pts)
    total = cum[-1]
    u = s_m % (2.0 * total)
    forward = u < total
    d = u if forward else 2.0 * total - u
    k = int(np.clip(np.sum(cum[1:] <= d), 0, len(pts) - 2))
    seg = pts[k + 1] - pts[k]
    frac = np.clip((d - cum[k]) / max(float(np.linalg.norm(seg)), 1e-9), 0.0, 1.0)
    xy = pts[k] + frac * seg
    yaw = math.atan2(seg[1], seg[0]) + (0.0 if forward else math.pi)
    return float(xy[0]), float(xy[1]), _wrap(yaw)


def _wrap(a: float) -> float:
    return float((a + math.pi) % (2.0 * math.pi) - math.pi)


# ------------------------------------------------------------------------------ ground texture

_FIELD_PALETTE = np.array(
    [
        (96, 128, 58),
        (118, 142, 66),
        (136, 150, 78),
        (84, 112, 50),
        (104, 122, 60),
        (150, 138, 90),
        (128, 108, 72),
        (166, 150, 100),
        (142, 124, 80),
        (112, 134, 70),
    ],
    dtype=np.float32,
)
_FOREST_RGB = np.array((40, 64, 34), dtype=np.float32)
_WATER_DEEP_RGB = np.array((30, 60, 92), dtype=np.float32)
_WATER_SHALLOW_RGB = np.array((62, 98, 118), dtype=np.float32)
_SHORE_RGB = np.array((112, 104, 78), dtype=np.float32)
_ROAD_RGB = np.array((108, 108, 106), dtype=np.float32)
_MARKING_RGB = np.array((210, 210, 200), dtype=np.float32)


def _value_noise(rng: np.random.Generator, ny: int, nx: int, cell: float) -> np.ndarray:
    """Smooth value noise in [-1, 1] of feature size ``cell`` texels, shape ``(ny, nx)``."""
    gy, gx = int(ny / cell) + 2, int(nx / cell) + 2
    grid = rng.random((gy, gx), dtype=np.float32) * 2.0 - 1.0

    def lerp_index(n: int) -> tuple[np.ndarray, np.ndarray]:
        t = np.arange(n, dtype=np.float32) / np.float32(cell)
        i = t.astype(np.int64)
        f = t - i
        return i, f * f * (3.0 - 2.0 * f)  # smoothstep

    ix, fx = lerp_index(nx)
    iy, fy = lerp_index(ny)
    rows = grid[:, ix] * (1.0 - fx) + grid[:, ix + 1] * fx  # (gy, nx), separable interpolation
    return rows[iy] * (1.0 - fy)[:, None] + rows[iy + 1] * fy[:, None]


def _fractal_noise(
    rng: np.random.Generator, ny: int, nx: int, cell: float, octaves: int
) -> np.ndarray:
    out = np.zeros((ny, nx), dtype=np.float32)
    amp, norm = 1.0, 0.0
    for _ in range(octaves):
        out += amp * _value_noise(rng, ny, nx, cell)
        norm += amp
        amp *= 0.5
        cell = max(cell / 2.0, 1.0)
    return out / norm


def _grid_shape(world: World) -> tuple[int, int]:
    return (
        round(world.size_y_m / world.texture_res_m),
        round(world.size_x_m / world.texture_res_m),
    )


def render_ground(world: World) -> tuple[np.ndarray, np.ndarray]:
    """Ground texture ``(Hy, Hx, 3) uint8`` and class map ``(Hy, Hx) uint8`` of ``world``.

    Deterministic in the world's features and ``texture_seed``; vectorized numpy (no per-texel
    loop). Layers, bottom to top: field parcels (Voronoi cells with crop rows), forest, water,
    roads (with a dirt shoulder and a dashed centre line).
    """
    rng = np.random.default_rng(world.texture_seed)
    res = world.texture_res_m
    ny, nx = _grid_shape(world)
    xs = (world.x_min_m + (np.arange(nx, dtype=np.float32) + 0.5) * res)[None, :]
    ys = (world.y_min_m + (np.arange(ny, dtype=np.float32) + 0.5) * res)[:, None]
    shape_noise = _fractal_noise(rng, ny, nx, 12.0 / res, 3)  # blob outlines (~12 m)
    large = _fractal_noise(rng, ny, nx, 30.0 / res, 2)  # slow brightness variation
    grain = _value_noise(rng, ny, nx, 1.0 / res)  # ~1 m grain
    fine = rng.random((ny, nx), dtype=np.float32) - 0.5  # per texel

    # Field parcels: Voronoi cells of jittered seeds, each with a colour and crop rows.
    parcel_m = 35.0
    kx = max(int(world.size_x_m / parcel_m), 1)
    ky = max(int(world.size_y_m / parcel_m), 1)
    cx = world.x_min_m + (np.arange(kx)[None, :] + rng.uniform(0.1, 0.9, (ky, kx))) * (
        world.size_x_m / kx
    )
    cy = world.y_min_m + (np.arange(ky)[:, None] + rng.uniform(0.1, 0.9, (ky, kx))) * (
        world.size_y_m / ky
    )
    cx, cy = cx.ravel().astype(np.float32), cy.ravel().astype(np.float32)
    best = np.full((ny, nx), np.inf, dtype=np.float32)
    second = np.full((ny, nx), np.inf, dtype=np.float32)
    owner = np.zeros((ny, nx), dtype=np.int32)
    if cpu_kernels.AVAILABLE:  # one loop nest, same results (half of a world's generation time)
        cpu_kernels.voronoi_parcels(xs[0], ys[:, 0], cx, cy, best, second, owner)
    else:
        for k in range(len(cx)):
            d = (xs - cx[k]) ** 2 + (ys - cy[k]) ** 2
            closer = d < best
            second = np.where(closer, best, np.minimum(second, d))
            owner = np.where(closer, k, owner)
            best = np.where(closer, d, best)
    # sqrt(d2) - sqrt(d1) is 0 on a cell border and grows at most twice as fast as the distance
    # to it: a cheap border measure for the tracks/hedges between parcels.
    border_m = np.sqrt(second) - np.sqrt(best)
    n_par = len(cx)
    pal = _FIELD_PALETTE[rng.integers(0, len(_FIELD_PALETTE), n_par)]
    pal = pal * rng.uniform(0.92, 1.08, (n_par, 1)).astype(np.float32)
    theta = rng.uniform(0.0, math.pi, n_par).astype(np.float32)
    period = rng.uniform(1.0, 3.0, n_par).astype(np.float32)
    row_amp = rng.choice(np.array([0.0, 0.04, 0.07, 0.1], dtype=np.float32), n_par)
    phase = (xs * np.cos(theta)[owner] + ys * np.sin(theta)[owner]) / period[owner]
    rows = row_amp[owner] * np.sin(2.0 * math.pi * phase)
    shade = 1.0 + rows + 0.06 * large + 0.05 * grain + 0.04 * fine
    shade = np.where(border_m < 0.6, shade * 0.82, shade)  # tracks/hedges between parcels
    rgb = pal[owner] * shade[..., None]
    cls = np.full((ny, nx), FIELD, dtype=np.uint8)

    def blob_mask(b: Blob, wobble: float) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
        r_max = b.radius_m * (1.0 + wobble) + res
        c = np.asarray(b.center_xy_m)
        sl = _texel_slice(world, c - r_max, c + r_max, ny, nx)
        dist = np.sqrt((xs[:, sl[1]] - c[0]) ** 2 + (ys[sl[0]] - c[1]) ** 2)
        rel = dist / (b.radius_m * (1.0 + wobble * shape_noise[sl]))
        return sl, rel < 1.0, rel

    crowns = _value_noise(rng, ny, nx, 2.0 / res)  # ~2 m tree crowns
    for b in world.forests:
        sl, m, _ = blob_mask(b, 0.45)
        if not m.any():
            continue
        tone = 1.0 + 0.22 * crowns[sl] + 0.08 * grain[sl] + 0.05 * large[sl] + 0.1 * fine[sl]
        tone = np.where(crowns[sl] < -0.45, tone * 0.6, tone)  # gaps/shadows between crowns
        rgb[sl] = np.where(m[..., None], _FOREST_RGB * tone[..., None], rgb[sl])
        cls[sl] = np.where(m, FOREST, cls[sl])

    for b in world.waters:
        sl, m, rel = blob_mask(b, 0.3)
        shore = (rel < 1.12) & ~m
        depth = np.clip(rel, 0.0, 1.0)[..., None]
        water = _WATER_DEEP_RGB * (1.0 - depth) + _WATER_SHALLOW_RGB * depth
        water = water * (1.0 + 0.03 * grain[sl] + 0.02 * fine[sl])[..., None]
        rgb[sl] = np.where(
            shore[..., None], _SHORE_RGB * (1.0 + 0.06 * grain[sl])[..., None], rgb[sl]
        )
        rgb[sl] = np.where(m[..., None], water, rgb[sl])
        cls[sl] = np.where(m, WATER, cls[sl])

    # Roads: per road the distance to its centre line (nearest segment) and the arc length there;
    # every shoulder first, then every asphalt strip, then the markings outside other roads.
    dists, alongs = [], []
    for road in world.roads:
        pts = np.asarray(road.points_xy_m, dtype=np.float32)
        cum = _cumlen(pts)
        reach = 0.5 * road.width_m + 1.5
        dist = np.full((ny, nx), np.inf, dtype=np.float32)
        along = np.zeros((ny, nx), dtype=np.float32)
        for k in range(len(pts) - 1):
            a, b = pts[k], pts[k + 1]
            sl = _texel_slice(world, np.minimum(a, b) - reach, np.maximum(a, b) + reach, ny, nx)
            ab = b - a
            seg_len = float(np.linalg.norm(ab))
            qx, qy = xs[:, sl[1]] - a[0], ys[sl[0]] - a[1]
            t = np.clip((qx * ab[0] + qy * ab[1]) / (seg_len**2), 0.0, 1.0)
            d = np.sqrt((qx - t * ab[0]) ** 2 + (qy - t * ab[1]) ** 2)
            closer = d < dist[sl]
            dist[sl] = np.where(closer, d, dist[sl])
            along[sl] = np.where(closer, cum[k] + t * seg_len, along[sl])
        dists.append(dist)
        alongs.append(along)
    if world.roads:
        halves = [0.5 * r.width_m for r in world.roads]
        asphalt = np.logical_or.reduce([d < h for d, h in zip(dists, halves, strict=True)])
        shoulder = np.logical_or.reduce([d < h + 0.75 for d, h in zip(dists, halves, strict=True)])
        shoulder &= ~asphalt & (cls != WATER)
        tone = 1.0 + 0.05 * grain + 0.06 * fine + 0.03 * large
        rgb = np.where(shoulder[..., None], _SHORE_RGB * (1.05 + 0.08 * grain)[..., None], rgb)
        rgb = np.where(asphalt[..., None], _ROAD_RGB * tone[..., None], rgb)
        for i, road in enumerate(world.roads):
            if road.width_m < 5.0:
                continue
            others = [d < h for j, (d, h) in enumerate(zip(dists, halves, strict=True)) if j != i]
            mark = (dists[i] < 0.5 * res + 0.01) & (np.mod(alongs[i], 6.0) < 3.0)
            if others:
                mark &= ~np.logical_or.reduce(others)
            rgb[mark] = _MARKING_RGB
        cls[asphalt] = ROAD
    return np.clip(rgb, 0.0, 255.0).astype(np.uint8), cls


def _texel_slice(
    world: World, lo: np.ndarray, hi: np.ndarray, ny: int, nx: int
) -> tuple[slice, slice]:
    """Texel index slices ``(rows, cols)`` covering the rectangle ``[lo, hi]`` (clipped)."""
    r = world.texture_res_m
    ix0 = min(max(int(math.floor((lo[0] - world.x_min_m) / r)), 0), nx)
    ix1 = min(max(int(math.ceil((hi[0] - world.x_min_m) / r)), ix0), nx)
    iy0 = min(max(int(math.floor((lo[1] - world.y_min_m) / r)), 0), ny)
    iy1 = min(max(int(math.ceil((hi[1] - world.y_min_m) / r)), iy0), ny)
    return slice(iy0, iy1), slice(ix0, ix1)


# ---------------------------------------------------------------------------------- generator


class _Placer:
    """Rectangle tests against the class map and occupancy grids (slices, no per-texel loop)."""

    def __init__(self, world: World, cls: np.ndarray) -> None:
        self.w = world
        self.cls = cls
        self.ny, self.nx = cls.shape
        self.boxes = np.zeros_like(cls, dtype=bool)  # buildings and obstacles
        self.targets = np.zeros_like(cls, dtype=bool)  # static targets

    def sl(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice]:
        return _texel_slice(self.w, lo, hi, self.ny, self.nx)

    def inside(self, lo: np.ndarray, hi: np.ndarray, margin: float) -> bool:
        x0, y0 = self.w.x_min_m + margin, self.w.y_min_m + margin
        x1, y1 = (
            self.w.x_min_m + self.w.size_x_m - margin,
            self.w.y_min_m + self.w.size_y_m - margin,
        )
        return bool(lo[0] >= x0 and lo[1] >= y0 and hi[0] <= x1 and hi[1] <= y1)

    def classes_in(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return self.cls[self.sl(lo, hi)]

    def class_at(self, xy: np.ndarray) -> int:
        r = self.w.texture_res_m
        ix = int(np.clip((xy[0] - self.w.x_min_m) / r, 0, self.nx - 1))
        iy = int(np.clip((xy[1] - self.w.y_min_m) / r, 0, self.ny - 1))
        return int(self.cls[iy, ix])


def _rects_overlap(lo: np.ndarray, hi: np.ndarray, r: Rect, gap: float) -> bool:
    return bool(
        lo[0] < r.max_xy_m[0] + gap
        and hi[0] > r.min_xy_m[0] - gap
        and lo[1] < r.max_xy_m[1] + gap
        and hi[1] > r.min_xy_m[1] - gap
    )


def _footprint_half(size_m: tuple[float, float, float], yaw: float) -> np.ndarray:
    """Half extents of the axis-aligned bounds of an oriented footprint."""
    c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
    return 0.5 * np.array([size_m[0] * c + size_m[1] * s, size_m[0] * s + size_m[1] * c])


def _rgb(rng: np.random.Generator, palette: Any, jitter: float = 0.08) -> RGB:
    """A palette colour with its brightness jittered by ``jitter`` and its hue by a third of it."""
    base = np.asarray(palette[int(rng.integers(len(palette)))], dtype=np.float64)
    gain = rng.uniform(1.0 - jitter, 1.0 + jitter) * rng.uniform(
        1.0 - jitter / 3, 1.0 + jitter / 3, 3
    )
    c = np.clip(np.rint(base * gain), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def _irange(rng: np.random.Generator, r: tuple[int, int]) -> int:
    return int(rng.integers(r[0], r[1] + 1))


def _gen_roads(spec: WorldSpec, rng: np.random.Generator, x0: float, y0: float) -> list[Road]:
    roads: list[Road] = []
    axes: list[int] = []
    sx, sy = spec.size_x_m, spec.size_y_m
    n = _irange(rng, spec.num_roads)
    axis0 = int(rng.integers(2))
    for i in range(n):
        axis = (axis0 + i) % 2  # alternate W-E and S-N so that roads cross
        length, across = (sx, sy) if axis == 0 else (sy, sx)
        for _ in range(30):
            nb = int(rng.integers(0, spec.road_max_bends + 1))
            along = np.concatenate([[0.0], np.sort(rng.uniform(0.2, 0.8, nb)), [1.0]]) * length
            base = rng.uniform(0.15, 0.85) * across
            drift = rng.uniform(-0.25, 0.25) * across
            off = base + drift * along / length + rng.normal(0.0, 0.06 * across, nb + 2)
            off = np.clip(off, 0.1 * across, 0.9 * across)
            pts = np.stack([along, off], 1) if axis == 0 else np.stack([off, along], 1)
            pts = pts + np.array([x0, y0])
            seg = np.diff(pts, axis=0)
            heading = np.arctan2(seg[:, 1], seg[:, 0])
            turn = np.abs((np.diff(heading) + np.pi) % (2 * np.pi) - np.pi)
            if np.any(turn > math.radians(spec.road_max_turn_deg)):
                continue
            if np.min(np.linalg.norm(seg, axis=1)) < 10.0:
                continue
            if any(
                np.min(_dist_to_polyline(np.asarray(r.points_xy_m), pts)) < 30.0
                for r, a in zip(roads, axes, strict=True)
                if a == axis
            ):
                continue  # too close to a parallel road
            width = float(rng.uniform(*spec.road_width_m))
            roads.append(
                Road([(float(x), float(y)) for x, y in pts], width, int(rng.choice([-1, 1])))
            )
            axes.append(axis)
            break
    return roads


def _gen_blobs(
    rng: np.random.Generator,
    count: tuple[int, int],
    radius: tuple[float, float],
    roads: list[Road],
    lo: np.ndarray,
    hi: np.ndarray,
    road_gap_factor: float | None,
) -> list[Blob]:
    blobs: list[Blob] = []
    for _ in range(_irange(rng, count)):
        for _ in range(30):
            r = float(rng.uniform(*radius))
            c = rng.uniform(lo, hi)
            if road_gap_factor is not None and any(
                _dist_to_polyline(np.asarray(rd.points_xy_m), c)
                < road_gap_factor * r + 0.5 * rd.width_m + 3.0
                for rd in roads
            ):
                continue
            if road_gap_factor is not None and any(
                np.hypot(*(c - np.asarray(b.center_xy_m))) < 1.4 * (r + b.radius_m) for b in blobs
            ):
                continue
            blobs.append(Blob((float(c[0]), float(c[1])), r))
            break
    return blobs


_BUILDING_PALETTE = [
    (150, 70, 55),
    (120, 120, 122),
    (90, 90, 95),
    (170, 160, 140),
    (140, 100, 80),
    (200, 198, 190),
]
_TOWER_PALETTE = [(170, 170, 175), (180, 62, 50), (130, 130, 135)]
_TREE_PALETTE = [(34, 70, 32), (46, 82, 38), (30, 58, 30)]


def generate_world(spec: WorldSpec, seed: int) -> World:
    """Generate one world from ``spec`` and ``seed`` (same seed, same world).

    Raises :class:`ConfigError` when ``spec`` is invalid. Entities that do not fit after a bounded
    number of tries are left out (a world may hold fewer than the sampled count).
    """
    spec.validate()
    rng = np.random.default_rng(int(seed))
    x0, y0 = -0.5 * spec.size_x_m, -0.5 * spec.size_y_m
    area_lo = np.array([x0, y0])
    area_hi = area_lo + np.array([spec.size_x_m, spec.size_y_m])
    gm = spec.geofence_margin_m

    roads = _gen_roads(spec, rng, x0, y0)
    forests = _gen_blobs(
        rng, spec.num_forest_patches, spec.forest_radius_m, roads, area_lo, area_hi, None
    )
    margin = np.minimum(10.0, 0.25 * (area_hi - area_lo))  # keep ponds off the area edge
    waters = _gen_blobs(
        rng,
        spec.num_water_bodies,
        spec.water_radius_m,
        roads,
        area_lo + margin,
        area_hi - margin,
        1.5,
    )

    world = World(
        seed=int(seed),
        spec=spec.to_dict(),
        x_min_m=float(x0),
        y_min_m=float(y0),
        size_x_m=float(spec.size_x_m),
        size_y_m=float(spec.size_y_m),
        texture_res_m=float(spec.texture_res_m),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
        roads=roads,
        forests=forests,
        waters=waters,
        boxes=[],
        targets=[],
        no_fly_zones=[],
        geofence_min_m=(float(x0 + gm), float(y0 + gm), float(spec.geofence_altitude_m[0])),
        geofence_max_m=(
            float(x0 + spec.size_x_m - gm),
            float(y0 + spec.size_y_m - gm),
            float(spec.geofence_altitude_m[1]),
        ),
        spawn=Rect((0.0, 0.0), (0.0, 0.0)),
    )
    _, cls = world.ground()
    place = _Placer(world, cls)

    # Spawn rectangle inside the geofence; no-fly zones clear of it.
    ss = np.array(spec.spawn_size_m)
    g_lo, g_hi = np.array(world.geofence_min_m[:2]), np.array(world.geofence_max_m[:2])
    s_lo = rng.uniform(g_lo, g_hi - ss)
    world.spawn = Rect(
        (float(s_lo[0]), float(s_lo[1])), (float(s_lo[0] + ss[0]), float(s_lo[1] + ss[1]))
    )
    for _ in range(_irange(rng, spec.num_no_fly_zones)):
        for _ in range(30):
            sz = rng.uniform(*spec.no_fly_zone_size_m, 2)
            lo = rng.uniform(area_lo, area_hi - sz)
            if _rects_overlap(lo, lo + sz, world.spawn, spec.spawn_clearance_m):
                continue
            if any(_rects_overlap(lo, lo + sz, z, 5.0) for z in world.no_fly_zones):
                continue
            world.no_fly_zones.append(
                Rect((float(lo[0]), float(lo[1])), (float(lo[0] + sz[0]), float(lo[1] + sz[1])))
            )
            break

    def try_box(
        kind: str,
        lo: np.ndarray,
        size: np.ndarray,
        height: float,
        allowed: tuple[int, ...],
        clearance: float,
    ) -> bool:
        hi = lo + size
        if not place.inside(lo, hi, 1.0):
            return False
        if _rects_overlap(lo, hi, world.spawn, spec.spawn_clearance_m):
            return False
        if not np.isin(place.classes_in(lo - clearance, hi + clearance), allowed).all():
            return False
        gap = spec.building_spacing_m
        if place.boxes[place.sl(lo - gap, hi + gap)].any():
            return False
        place.boxes[place.sl(lo, hi)] = True
        palette = {"building": _BUILDING_PALETTE, "tower": _TOWER_PALETTE}.get(kind, _TREE_PALETTE)
        world.boxes.append(
            Box(
                kind,
                (float(lo[0]), float(lo[1]), 0.0),
                (float(hi[0]), float(hi[1]), float(height)),
                _rgb(rng, palette, 0.06),
            )
        )
        return True

    for _ in range(_irange(rng, spec.num_buildings)):
        for _ in range(40):
            size = rng.uniform(*spec.building_footprint_m, 2)
            if roads and rng.random() < spec.building_near_road_fraction:
                road = roads[int(rng.integers(len(roads)))]
                pts = np.asarray(road.points_xy_m)
                cum = _cumlen(pts)
                s = rng.uniform(0.0, cum[-1])
                p, t = _point_at(pts, cum, s), _tangent_at(pts, cum, s)
                n = np.array([-t[1], t[0]]) * rng.choice([-1.0, 1.0])
                reach = 0.5 * road.width_m + spec.building_road_clearance_m + 0.5 * np.abs(n) @ size
                c = p + n * (reach + rng.uniform(0.0, 10.0))
            else:
                c = rng.uniform(area_lo, area_hi)
            if try_box(
                "building",
                c - 0.5 * size,
                size,
                float(rng.uniform(*spec.building_height_m)),
                (FIELD,),
                spec.building_road_clearance_m,
            ):
                break
    for _ in range(_irange(rng, spec.num_towers)):
        for _ in range(40):
            size = rng.uniform(*spec.tower_footprint_m, 2)
            c = rng.uniform(area_lo, area_hi)
            if try_box(
                "tower",
                c - 0.5 * size,
                size,
                float(rng.uniform(*spec.tower_height_m)),
                (FIELD, FOREST),
                spec.obstacle_road_clearance_m,
            ):
                break
    for _ in range(_irange(rng, spec.num_tree_clusters)):
        for _ in range(40):
            size = rng.uniform(*spec.tree_cluster_footprint_m, 2)
            if forests and rng.random() < 0.6:
                b = forests[int(rng.integers(len(forests)))]
                c = np.asarray(b.center_xy_m) + rng.uniform(-0.7, 0.7, 2) * b.radius_m
            else:
                c = rng.uniform(area_lo, area_hi)
            if try_box(
                "tree_cluster",
                c - 0.5 * size,
                size,
                float(rng.uniform(*spec.tree_cluster_height_m)),
                (FIELD, FOREST),
                spec.obstacle_road_clearance_m,
            ):
                break

    _place_targets(spec, rng, world, place)
    return world


def _place_targets(spec: WorldSpec, rng: np.random.Generator, world: World, place: _Placer) -> None:
    inner_lo = np.array(world.geofence_min_m[:2]) + 2.0
    inner_hi = np.array(world.geofence_max_m[:2]) - 2.0
    fence_lo = np.array(world.geofence_min_m[:2])  # static targets stay inside the geofence
    fence_hi = np.array(world.geofence_max_m[:2])
    roads = world.roads
    clear = spec.target_road_clearance_m

    def size_of(cs: TargetClassSpec) -> tuple[float, float, float]:
        u = rng.random()
        s = np.asarray(cs.size_min_m) + u * (np.asarray(cs.size_max_m) - np.asarray(cs.size_min_m))
        return (float(s[0]), float(s[1]), float(s[2]))

    def free(xy: np.ndarray, size: tuple[float, float, float], yaw: float, gap: float) -> bool:
        h = _footprint_half(size, yaw) + gap
        return not (
            place.boxes[place.sl(xy - h, xy + h)].any()
            or place.targets[place.sl(xy - h, xy + h)].any()
        )

    def mark(xy: np.ndarray, size: tuple[float, float, float], yaw: float) -> None:
        h = _footprint_half(size, yaw)
        place.targets[place.sl(xy - h, xy + h)] = True

    def moving_path(road: Road, offset_m: float) -> np.ndarray | None:
        pts = _offset_polyline(np.asarray(road.points_xy_m), offset_m)
        return _clip_polyline(pts, inner_lo, inner_hi)

    for cname in TARGET_CLASSES:
        cs: TargetClassSpec = getattr(spec, cname)
        for _ in range(_irange(rng, cs.count)):
            size = size_of(cs)
            rgb = _rgb(rng, cs.colors_rgb)
            moving = bool(rng.random() < cs.moving_fraction) and bool(roads)
            if moving:
                road = roads[int(rng.integers(len(roads)))]
                if cname == "vehicle":
                    offset = road.traffic_side * 0.25 * road.width_m
                else:  # walk the verge, on a random side
                    offset = float(rng.choice([-1.0, 1.0])) * (0.5 * road.width_m + 0.8)
                path = moving_path(road, offset)
                if path is not None:
                    speed = float(rng.uniform(*cs.speed_m_s))
                    s0 = float(rng.uniform(0.0, 2.0 * _cumlen(path)[-1]))
                    x, y, yaw = _pose_on_path(path, s0)
                    world.targets.append(
                        Target(
                            cname,
                            (x, y, 0.5 * size[2]),
                            size,
                            yaw,
                            rgb,
                            speed,
                            [(float(px), float(py)) for px, py in path],
                            s0,
                        )
                    )
                    continue
            for _ in range(60):
                if cname == "vehicle":
                    if not roads:
                        break
                    road = roads[int(rng.integers(len(roads)))]
                    pts = np.asarray(road.points_xy_m)
                    cum = _cumlen(pts)
                    s = rng.uniform(0.0, cum[-1])
                    t = _tangent_at(pts, cum, s)
                    side = -road.traffic_side  # the parking side
                    off = max(0.5 * road.width_m - 0.5 * size[1] - 0.25, 0.0)
                    xy = _point_at(pts, cum, s) + side * off * np.array([-t[1], t[0]])
                    yaw = _wrap(math.atan2(t[1], t[0]) + (math.pi if rng.random() < 0.5 else 0.0))
                    ok = place.class_at(xy) == ROAD and all(  # not parked in a crossing
                        _dist_to_polyline(np.asarray(o.points_xy_m), xy)
                        > 0.5 * o.width_m + 0.5 * size[0] + 1.0
                        for o in roads
                        if o is not road
                    )
                else:
                    xy = rng.uniform(fence_lo, fence_hi)
                    yaw = float(rng.uniform(-math.pi, math.pi))
                    h = _footprint_half(size, yaw)
                    near = place.classes_in(xy - h - clear, xy + h + clear)
                    under = place.classes_in(xy - h, xy + h)
                    if cname == "person":
                        ok = not (near == ROAD).any() and not (under == WATER).any()
                    else:  # structure: on fields
                        ok = not (near == ROAD).any() and bool((under == FIELD).all())
                h = _footprint_half(size, yaw)
                ok = (
                    ok
                    and bool(np.all(xy - h >= fence_lo) and np.all(xy + h <= fence_hi))
                    and free(xy, size, yaw, 0.5)
                )
                if ok:
                    mark(xy, size, yaw)
                    world.targets.append(
                        Target(
                            cname,
                            (float(xy[0]), float(xy[1]), 0.5 * size[2]),
                            size,
                            float(yaw),
                            rgb,
                        )
                    )
                    break


# ------------------------------------------------------------------------------------ batches


def worlds_to_batch(worlds: list[World], device: torch.device | str = "cpu") -> WorldBatch:
    """Stack worlds (same area and texture resolution) into a padded :class:`WorldBatch`.

    Padding sizes are the largest ``max_*`` of the worlds' specs (at least the largest count).
    """
    if not worlds:
        raise ValueError("worlds_to_batch needs at least one world")
    w0 = worlds[0]
    for w in worlds:
        if (w.x_min_m, w.y_min_m, w.size_x_m, w.size_y_m, w.texture_res_m) != (
            w0.x_min_m,
            w0.y_min_m,
            w0.size_x_m,
            w0.size_y_m,
            w0.texture_res_m,
        ):
            raise ValueError("worlds of one batch need the same area and texture resolution")
    n_w = len(worlds)
    n_b = max(max(w.spec.get("max_boxes", 0), len(w.boxes)) for w in worlds)
    n_t = max(max(w.spec.get("max_targets", 0), len(w.targets)) for w in worlds)
    n_z = max(max(w.spec.get("max_no_fly_zones", 0), len(w.no_fly_zones)) for w in worlds)
    n_p = max(
        max([w.spec.get("max_path_points", 2)] + [len(t.path_xy_m) for t in w.targets])
        for w in worlds
    )
    ny, nx = _grid_shape(w0)
    ground_rgb = np.empty((n_w, ny, nx, 3), dtype=np.uint8)
    ground_cls = np.empty((n_w, ny, nx), dtype=np.uint8)
    box_min = np.zeros((n_w, n_b, 3), np.float32)
    box_max = np.zeros((n_w, n_b, 3), np.float32)
    box_rgb = np.zeros((n_w, n_b, 3), np.uint8)
    box_kind = np.zeros((n_w, n_b), np.int64)
    box_valid = np.zeros((n_w, n_b), bool)
    t_pos = np.zeros((n_w, n_t, 3), np.float32)
    t_size = np.zeros((n_w, n_t, 3), np.float32)
    t_yaw = np.zeros((n_w, n_t), np.float32)
    t_cls = np.zeros((n_w, n_t), np.int64)
    t_rgb = np.zeros((n_w, n_t, 3), np.uint8)
    t_valid = np.zeros((n_w, n_t), bool)
    t_speed = np.zeros((n_w, n_t), np.float32)
    t_path = np.zeros((n_w, n_t, n_p, 2), np.float32)
    t_plen = np.zeros((n_w, n_t), np.int64)
    t_s = np.zeros((n_w, n_t), np.float32)
    z_min = np.zeros((n_w, n_z, 2), np.float32)
    z_max = np.zeros((n_w, n_z, 2), np.float32)
    z_valid = np.zeros((n_w, n_z), bool)
    g_min = np.zeros((n_w, 3), np.float32)
    g_max = np.zeros((n_w, 3), np.float32)
    s_min = np.zeros((n_w, 2), np.float32)
    s_max = np.zeros((n_w, 2), np.float32)
    for i, w in enumerate(worlds):
        ground_rgb[i], ground_cls[i] = w.ground()
        for j, b in enumerate(w.boxes):
            box_min[i, j], box_max[i, j], box_rgb[i, j] = b.min_m, b.max_m, b.rgb
            box_kind[i, j], box_valid[i, j] = BOX_KIND_IDS[b.kind], True
        for j, t in enumerate(w.targets):
            t_pos[i, j], t_size[i, j], t_yaw[i, j] = t.pos_enu_m, t.size_m, t.yaw_rad
            t_cls[i, j], t_rgb[i, j], t_valid[i, j] = TARGET_CLASSES.index(t.cls), t.rgb, True
            t_speed[i, j], t_s[i, j] = t.speed_m_s, t.path_s_m
            if t.path_xy_m:
                t_path[i, j, : len(t.path_xy_m)] = t.path_xy_m
                t_plen[i, j] = len(t.path_xy_m)
        for j, z in enumerate(w.no_fly_zones):
            z_min[i, j], z_max[i, j], z_valid[i, j] = z.min_xy_m, z.max_xy_m, True
        g_min[i], g_max[i] = w.geofence_min_m, w.geofence_max_m
        s_min[i], s_max[i] = w.spawn.min_xy_m, w.spawn.max_xy_m

    def tt(a: np.ndarray) -> Tensor:
        return torch.from_numpy(a).to(device)

    return WorldBatch(
        x_min_m=w0.x_min_m,
        y_min_m=w0.y_min_m,
        size_x_m=w0.size_x_m,
        size_y_m=w0.size_y_m,
        texture_res_m=w0.texture_res_m,
        ground_rgb=tt(ground_rgb),
        ground_class=tt(ground_cls),
        box_min_m=tt(box_min),
        box_max_m=tt(box_max),
        box_rgb=tt(box_rgb),
        box_kind=tt(box_kind),
        box_valid=tt(box_valid),
        target_pos_enu_m=tt(t_pos),
        target_size_m=tt(t_size),
        target_yaw_rad=tt(t_yaw),
        target_class=tt(t_cls),
        target_rgb=tt(t_rgb),
        target_valid=tt(t_valid),
        target_speed_m_s=tt(t_speed),
        target_path_xy_m=tt(t_path),
        target_path_len=tt(t_plen),
        target_path_s_m=tt(t_s),
        nfz_min_m=tt(z_min),
        nfz_max_m=tt(z_max),
        nfz_valid=tt(z_valid),
        geofence_min_m=tt(g_min),
        geofence_max_m=tt(g_max),
        spawn_min_m=tt(s_min),
        spawn_max_m=tt(s_max),
    )


def generate_worlds(
    spec: WorldSpec, seeds: list[int] | range | Tensor, device: torch.device | str = "cpu"
) -> WorldBatch:
    """Generate one world per seed and stack them into a padded :class:`WorldBatch` on ``device``.

    World ``i`` equals ``generate_world(spec, seeds[i])``.
    """
    if isinstance(seeds, Tensor):
        seeds = seeds.tolist()
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("generate_worlds needs at least one seed")
    return worlds_to_batch([generate_world(spec, s) for s in seeds], device)


_WORLD_CACHE: dict[tuple[str, int], World] = {}


def cached_worlds(spec: WorldSpec, seeds: list[int] | range) -> list[World]:
    """``generate_world(spec, s)`` for each seed, each generated once per process and kept.

    Training, validation and evaluation environments of one process share the worlds of equal
    spec and seed (worlds are immutable once generated; the batch built from them is not shared).
    """
    spec_key = json_dumps(to_dict(spec), sort_keys=True)
    worlds = []
    for s in seeds:
        key = (spec_key, int(s))
        if key not in _WORLD_CACHE:
            _WORLD_CACHE[key] = generate_world(spec, int(s))
        worlds.append(_WORLD_CACHE[key])
    return worlds


# -------------------------------------------------------------------------------- target motion


def advance_targets(batch: WorldBatch, dt_s: float, cpu_kernel: bool = False) -> None:
    """Move the moving targets ``dt_s`` seconds along their back-and-forth paths, in place.

    A target moves when it is valid, has a speed > 0 and a path of at least two waypoints. Its
    arc-length state ``target_path_s_m`` advances by ``speed * dt_s`` and is kept in
    ``[0, 2 * path length)``; the first half of that period drives the path forward, the second
    half backward. Position (x, y) and ``target_yaw_rad`` (heading of travel) are updated; z and
    static targets are left alone. ``dt_s = 0`` re-derives the poses from the state. Batched over
    worlds and targets, no Python loop and no host synchronisation. ``cpu_kernel`` (CPU tensors):
    the same as one numba loop (:func:`isr_sim_bridge.cpu_kernels.advance_targets`).
    """
    if cpu_kernel:
        from isr_sim_bridge import cpu_kernels

        cpu_kernels.advance_targets(
            batch.target_path_xy_m.numpy(), batch.target_path_len.numpy(),
            batch.target_speed_m_s.numpy(), batch.target_valid.numpy(),
            batch.target_path_s_m.numpy(), batch.target_pos_enu_m.numpy(),
            batch.target_yaw_rad.numpy(), float(dt_s),
        )  # fmt: skip
        return
    path = batch.target_path_xy_m  # (W, T, P, 2)
    n_pts = batch.target_path_len  # (W, T)
    n_seg = path.shape[2] - 1
    if n_seg < 1:
        return
    seg = path[:, :, 1:] - path[:, :, :-1]  # (W, T, P-1, 2)
    seg_ok = torch.arange(n_seg, device=path.device) < (n_pts - 1).unsqueeze(-1)  # (W, T, P-1)
    seg_len = torch.where(
        seg_ok, torch.linalg.vector_norm(seg, dim=-1), torch.zeros((), device=path.device)
    )
    cum_end = torch.cumsum(seg_len, dim=-1)  # (W, T, P-1) arc length at each segment's end
    total = cum_end[..., -1]  # (W, T)
    moving = batch.target_valid & (batch.target_speed_m_s > 0) & (n_pts >= 2) & (total > 0)
    period = (2.0 * total).clamp_min(1e-6)
    s = torch.remainder(batch.target_path_s_m + batch.target_speed_m_s * dt_s, period)
    s = torch.where(moving, s, batch.target_path_s_m)
    forward = s < total
    d = torch.where(forward, s, period - s)
    k = ((cum_end <= d.unsqueeze(-1)) & seg_ok).sum(-1)
    k = torch.minimum(k, (n_pts - 2).clamp_min(0))  # (W, T)
    idx = k.unsqueeze(-1)
    ln = seg_len.gather(-1, idx).squeeze(-1)
    start = cum_end.gather(-1, idx).squeeze(-1) - ln
    p0 = path.gather(2, k[..., None, None].expand(-1, -1, 1, 2)).squeeze(2)  # (W, T, 2)
    v = seg.gather(2, k[..., None, None].expand(-1, -1, 1, 2)).squeeze(2)
    frac = ((d - start) / ln.clamp_min(1e-9)).clamp(0.0, 1.0)
    xy = p0 + frac.unsqueeze(-1) * v
    yaw = torch.atan2(v[..., 1], v[..., 0]) + torch.where(forward, 0.0, math.pi)
    yaw = torch.remainder(yaw + math.pi, 2.0 * math.pi) - math.pi
    batch.target_path_s_m.copy_(s)
    batch.target_pos_enu_m[..., :2] = torch.where(
        moving.unsqueeze(-1), xy, batch.target_pos_enu_m[..., :2]
    )
    batch.target_yaw_rad.copy_(
        torch.where(moving, yaw.to(batch.target_yaw_rad.dtype), batch.target_yaw_rad)
    )
