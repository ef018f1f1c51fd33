"""Tensor form of many ISR worlds at once (what the camera, detections and the task consume).

Conventions (shared by the generator, the cameras, the detections and the USD export):

- World frame ENU, metres. The area of every world in a batch has the same size; its centre is
  the origin, so ``x in [x_min_m, x_min_m + size_x_m)``, ``y in [y_min_m, y_min_m + size_y_m)``.
- The terrain is the flat plane ``z = 0``.
- Ground texture texel ``[w, iy, ix]`` covers ``x in [x_min + ix*res, x_min + (ix+1)*res)`` and
  ``y in [y_min + iy*res, y_min + (iy+1)*res)`` (row index = y, column index = x; no image flip).
- Buildings and other obstacles are axis-aligned boxes standing on the ground
  (``box_min_m[..., 2] == 0``).
- Targets are oriented boxes: centre at ``target_pos_enu_m`` (z = half height for objects on the
  ground), extents ``target_size_m`` = (length along heading, width, height), heading
  ``target_yaw_rad``.
- Padded entities (fewer buildings/targets/zones in some worlds) have ``*_valid == False``; their
  other fields are zero and must be ignored by every consumer.

Class ids of targets: :data:`TARGET_CLASSES`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

TARGET_CLASSES: tuple[str, ...] = ("vehicle", "person", "structure")
"""Target class names; the class id is the index."""

GROUND_CLASSES: tuple[str, ...] = ("field", "road", "forest", "water")
"""Ground cover classes of the texture; the id is the index."""


@dataclass
class WorldBatch:
    """``W`` worlds as stacked tensors (struct-of-arrays, leading dim ``W``)."""

    x_min_m: float
    """West edge of the area (same for every world of the batch)."""
    y_min_m: float
    """South edge of the area."""
    size_x_m: float
    """Extent of the area along x (east), metres."""
    size_y_m: float
    """Extent of the area along y (north), metres."""
    texture_res_m: float
    """Edge length of one ground texel, metres (about 0.25)."""

    ground_rgb: Tensor  # (W, Hy, Hx, 3) uint8
    """Ground colour texture, indexed [world, iy, ix] (see module doc)."""
    ground_class: Tensor  # (W, Hy, Hx) uint8
    """Ground cover class per texel, index into :data:`GROUND_CLASSES`."""

    box_min_m: Tensor  # (W, B, 3) float32
    """Lower corner (x, y, z=0) of each building/obstacle box."""
    box_max_m: Tensor  # (W, B, 3) float32
    """Upper corner (x, y, height) of each box."""
    box_rgb: Tensor  # (W, B, 3) uint8
    """Roof/wall colour of each box."""
    box_kind: Tensor  # (W, B) int64
    """0 = building, 1 = other obstacle (tower, tree cluster...)."""
    box_valid: Tensor  # (W, B) bool
    """False for padding."""

    target_pos_enu_m: Tensor  # (W, T, 3) float32
    """Centre of each target's box."""
    target_size_m: Tensor  # (W, T, 3) float32
    """(length, width, height) of each target's box."""
    target_yaw_rad: Tensor  # (W, T) float32
    """Heading of the target's length axis, ENU radians."""
    target_class: Tensor  # (W, T) int64
    """Class id, index into :data:`TARGET_CLASSES`."""
    target_rgb: Tensor  # (W, T, 3) uint8
    """Colour of the target."""
    target_valid: Tensor  # (W, T) bool
    """False for padding."""
    target_speed_m_s: Tensor  # (W, T) float32
    """Speed along its path; 0 for static targets."""
    target_path_xy_m: Tensor  # (W, T, P, 2) float32
    """Waypoints of a moving target's path (a road polyline), driven back and forth."""
    target_path_len: Tensor  # (W, T) int64
    """Number of valid waypoints in ``target_path_xy_m`` (0 or 1 for static targets)."""
    target_path_s_m: Tensor  # (W, T) float32
    """Arc length travelled along the back-and-forth path (state of moving targets)."""

    nfz_min_m: Tensor  # (W, Z, 2) float32
    """South-west corner of each no-fly zone (rectangles, unlimited altitude)."""
    nfz_max_m: Tensor  # (W, Z, 2) float32
    """North-east corner of each no-fly zone."""
    nfz_valid: Tensor  # (W, Z) bool
    """False for padding."""

    geofence_min_m: Tensor  # (W, 3) float32
    """Lower corner of the geofence box (x, y, minimum altitude)."""
    geofence_max_m: Tensor  # (W, 3) float32
    """Upper corner of the geofence box (x, y, ceiling)."""
    spawn_min_m: Tensor  # (W, 2) float32
    """South-west corner of the spawn rectangle."""
    spawn_max_m: Tensor  # (W, 2) float32
    """North-east corner of the spawn rectangle."""

    @property
    def num_worlds(self) -> int:
        """Number of worlds ``W``."""
        return int(self.ground_rgb.shape[0])

    @property
    def device(self) -> torch.device:
        """Device of the tensors."""
        return self.ground_rgb.device

    def to(self, device: torch.device | str) -> WorldBatch:
        """Copy of the batch on ``device``."""
        kwargs = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kwargs[f.name] = v.to(device) if isinstance(v, Tensor) else v
        return WorldBatch(**kwargs)

    def select(self, index: Tensor | list[int]) -> WorldBatch:
        """Sub-batch of the worlds at ``index`` (tensors indexed along dim 0)."""
        kwargs = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kwargs[f.name] = v[index] if isinstance(v, Tensor) else v
        return WorldBatch(**kwargs)
