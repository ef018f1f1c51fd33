"""Coverage: which cells of the area each drone's camera has already seen.

The area is split into ``G x G`` cells (row index = y, column index = x, as the ground texture).
At every perception step the camera's ground footprint is the quadrilateral where the four
corner rays of the image meet the ground (a ray above the horizon is cut at ``max_range_m``); a cell
is seen when its centre lies inside the footprint and within ``max_range_m`` of the drone.
Occlusion by buildings is ignored for coverage (it is not for detections).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from isr_direct_dynamics.math3d import quat_rotate


def camera_corner_rays_body(hfov_deg: float, vfov_deg: float, pitch_down_deg: float) -> Tensor:
    """Unit directions ``(4, 3)`` in body FLU of the image corners, in order around the image.

    The camera looks along body x, pitched down by ``pitch_down_deg``.
    """
    th, tv = math.tan(math.radians(hfov_deg) / 2), math.tan(math.radians(vfov_deg) / 2)
    # FLU: forward x, left y, up z; image corners (left/right = +-y, up/down = +-z).
    corners = torch.tensor(
        [[1.0, th, tv], [1.0, -th, tv], [1.0, -th, -tv], [1.0, th, -tv]], dtype=torch.float32
    )
    p = math.radians(pitch_down_deg)
    rot = torch.tensor(
        [[math.cos(p), 0.0, math.sin(p)], [0.0, 1.0, 0.0], [-math.sin(p), 0.0, math.cos(p)]]
    )
    rays = corners @ rot.T
    return rays / torch.linalg.vector_norm(rays, dim=-1, keepdim=True)


def footprint_corners(
    pos_enu_m: Tensor, quat_wxyz: Tensor, rays_body: Tensor, max_range_m: float
) -> Tensor:
    """Ground points ``(W, D, 4, 2)`` of the corner rays (cut at ``max_range_m`` horizontally)."""
    rays = quat_rotate(quat_wxyz.unsqueeze(-2), rays_body.to(pos_enu_m.device))  # (W, D, 4, 3)
    h = pos_enu_m[..., 2:3].clamp(min=0.0)  # (W, D, 1) height above the ground plane
    down = (-rays[..., 2]).clamp(min=1e-6)  # (W, D, 4)
    horiz = rays[..., :2]
    hnorm = torch.linalg.vector_norm(horiz, dim=-1).clamp(min=1e-6)
    t_ground = h / down  # distance along the ray to the ground
    reach = torch.minimum(t_ground * hnorm, torch.full_like(hnorm, max_range_m))
    return pos_enu_m[..., None, :2] + horiz / hnorm.unsqueeze(-1) * reach.unsqueeze(-1)


def cell_centres(
    x_min_m: float, y_min_m: float, size_x_m: float, size_y_m: float, cells: int, device
) -> Tensor:
    """Centres ``(G*G, 2)`` of the coverage cells, row-major (row = y)."""
    xs = x_min_m + (torch.arange(cells, device=device) + 0.5) * (size_x_m / cells)
    ys = y_min_m + (torch.arange(cells, device=device) + 0.5) * (size_y_m / cells)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx.reshape(-1), gy.reshape(-1)), -1)


DEGENERATE_AREA_M2 = 1e-9
"""Footprints of at most this (doubled, signed) area cover nothing: a camera on the ground."""


def cells_in_footprint(
    corners: Tensor, pos_enu_m: Tensor, centres: Tensor, max_range_m: float
) -> Tensor:
    """Bool ``(W, D, G*G)``: cell centres inside the (convex) footprint quad and in range.

    Each edge ``c_i -> c_i+1`` is a half-plane ``a x + b y + c >= 0`` (left of the edge for a
    counter-clockwise quad; the sign flips for a clockwise one), so all cells are tested against
    all edges of all drones with one batched matmul, as is the range disc. A quad of (twice the)
    area at most :data:`DEGENERATE_AREA_M2` covers no cell.
    """
    nxt = torch.roll(corners, -1, dims=-2)
    ex, ey = (nxt - corners).unbind(-1)  # (W, D, 4)
    cx0, cy0 = corners.unbind(-1)
    prev = corners.roll(1, dims=-2)
    area = (prev[..., 0] * corners[..., 1] - corners[..., 0] * prev[..., 1]).sum(-1)
    sign = torch.where(area >= 0, 1.0, -1.0).unsqueeze(-1)  # (W, D, 1)
    # cross(edge, p - c0) = -ey px + ex py + (ey cx0 - ex cy0)
    plane = torch.stack((-ey, ex, ey * cx0 - ex * cy0), -1) * sign.unsqueeze(-1)  # (W, D, 4, 3)
    px, py = pos_enu_m[..., 0], pos_enu_m[..., 1]
    # |c - p|^2 - r^2 = |c|^2 - 2 c.p + |p|^2 - r^2 <= 0, with |c|^2 as a 4th row
    disc = torch.stack(
        (2 * px, 2 * py, max_range_m * max_range_m - px * px - py * py, -torch.ones_like(px)), -1
    )  # (W, D, 4): >= 0 inside the disc
    homog = torch.cat((centres.T, torch.ones_like(centres[:, :1]).T, (centres**2).sum(-1)[None]))
    # the 4 edges (4th coefficient 0) and the disc in one matmul; inside all = min >= 0
    planes = torch.cat((torch.nn.functional.pad(plane, (0, 1)), disc.unsqueeze(-2)), -2)
    inside = (planes @ homog).amin(dim=-2) >= 0  # (W, D, G*G)
    # a degenerate quad (a camera on the ground: all corners at the drone) covers nothing
    return inside & (area.abs() > DEGENERATE_AREA_M2).unsqueeze(-1)


def pool_coverage(seen: Tensor, cells: int, out_cells: int) -> Tensor:
    """Pool a ``(W, D, G*G)`` coverage map to ``(W, D, g*g)``: the fraction seen per block."""
    w, d, _ = seen.shape
    k, g = cells // out_cells, out_cells
    # Block sums as k + k slice additions of small integers (much faster on CPU than
    # avg_pool2d or a multi-dim sum), then the same division as avg_pool2d.
    counts = seen.view(torch.uint8) if k * k < 256 else seen.to(torch.int32)
    counts = counts.view(w * d, g, k, cells)
    rows = counts[:, :, 0]
    for i in range(1, k):
        rows = rows + counts[:, :, i]
    rows = rows.view(w * d, g, g, k)
    blocks = rows[..., 0]
    for i in range(1, k):
        blocks = blocks + rows[..., i]
    return (blocks.float() / float(k * k)).view(w, d, g * g)
