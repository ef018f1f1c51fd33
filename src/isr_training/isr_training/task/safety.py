"""Safety filter (the original plan's ontology / behaviour layer), identical in training and eval.

A velocity barrier on the commanded velocity: towards every boundary the commanded speed is limited
to ``(distance - margin) / horizon``, so a drone slows as it nears a boundary and can never be
commanded through it; a drone already inside a keep-out region is commanded back out. With a
first-order velocity response of time constant tau, a horizon of about 4 tau makes the approach
critically damped (no overshoot), hence the default of 2.6 s for tau = 0.65 s.

Boundaries: the geofence walls and ceiling, the minimum altitude (axis-aligned, exact clamps), and
the nearest no-fly zones and obstacle footprints (rectangles, projected as half-spaces; obstacles
only while the drone is below roof + margin). The filter reports every intervention by kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from isr_direct_dynamics import VelocityLimits, scale_action

from .config import SafetyConfig

INTERVENTION_KINDS: tuple[str, ...] = ("geofence", "altitude", "no_fly_zone", "obstacle")
"""Kinds of interventions reported by :func:`safety_filter`."""


@dataclass
class KeepOutRects:
    """Keep-out rectangles of every world, expanded by their margins, ``(W, R, ...)``."""

    min_xy: Tensor  # (W, R, 2) lower corner (margin included)
    max_xy: Tensor  # (W, R, 2) upper corner (margin included)
    top_z: Tensor  # (W, R) the rectangle applies while the drone is below this altitude
    is_nfz: Tensor  # (W, R) bool: no-fly zone (else obstacle)
    valid: Tensor  # (W, R) bool


def build_keep_out(world, cfg: SafetyConfig) -> KeepOutRects:
    """Keep-out rectangles from a :class:`~isr_sim_bridge.world_batch.WorldBatch`."""
    nfz_m = cfg.nfz_margin_m
    obs_m = cfg.obstacle_margin_m
    w, z = world.nfz_valid.shape
    inf = torch.full((w, z), float("inf"), device=world.device)
    return KeepOutRects(
        min_xy=torch.cat((world.nfz_min_m - nfz_m, world.box_min_m[..., :2] - obs_m), 1),
        max_xy=torch.cat((world.nfz_max_m + nfz_m, world.box_max_m[..., :2] + obs_m), 1),
        top_z=torch.cat((inf, world.box_max_m[..., 2] + obs_m), 1),
        is_nfz=torch.cat((torch.ones_like(world.nfz_valid), torch.zeros_like(world.box_valid)), 1),
        valid=torch.cat((world.nfz_valid, world.box_valid), 1),
    )


def _nearest_rect_constraint(
    pos: Tensor, keep: KeepOutRects, k: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Half-space constraints ``v . n <= d`` of the ``k`` nearest active rectangles.

    Returns ``(n (W,D,k,2), d (W,D,k), active (W,D,k) bool, is_nfz (W,D,k) bool)``; ``d`` is the
    signed clearance (negative inside the rectangle).
    """
    p = pos[..., None, :2]  # (W, D, 1, 2)
    lo, hi = keep.min_xy[:, None], keep.max_xy[:, None]  # (W, 1, R, 2)
    q = torch.maximum(torch.minimum(p, hi), lo)  # nearest point of each rectangle
    delta = q - p  # (W, D, R, 2)
    dist_out = torch.linalg.vector_norm(delta, dim=-1)  # 0 inside
    # Inside: penetration to the nearest edge (negative clearance), normal towards that edge's
    # outside, i.e. constraint direction pointing into the rectangle.
    px, py = p[..., 0], p[..., 1]
    pen_min = torch.minimum(
        torch.minimum(px - lo[..., 0], hi[..., 0] - px),
        torch.minimum(py - lo[..., 1], hi[..., 1] - py),
    )  # (W, D, R)
    inside = dist_out <= 1e-6
    d = torch.where(inside, -pen_min, dist_out)
    active = keep.valid[:, None] & (pos[..., None, 2] < keep.top_z[:, None])
    d_sel = torch.where(active, d, torch.full_like(d, float("inf")))
    k = min(k, d.shape[-1])
    d_k, idx = torch.topk(d_sel, k, dim=-1, largest=False)  # (W, D, k)
    # normals of the k selected rectangles only
    idx2 = idx.unsqueeze(-1).expand(*idx.shape, 2)
    lo_k = torch.gather(lo.expand(*d.shape, 2), 2, idx2)  # (W, D, k, 2)
    hi_k = torch.gather(hi.expand(*d.shape, 2), 2, idx2)
    pk = pos[..., None, :2]
    pen = torch.stack((pk[..., 0] - lo_k[..., 0], hi_k[..., 0] - pk[..., 0],
                       pk[..., 1] - lo_k[..., 1], hi_k[..., 1] - pk[..., 1]), -1)  # fmt: skip
    edge = pen.min(dim=-1).indices  # (W, D, k)
    inside_dirs = pos.new_tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    n_inside = inside_dirs[edge]  # direction into the rectangle from its nearest edge
    delta_k = torch.gather(delta, 2, idx2)
    dist_k = torch.gather(dist_out, 2, idx)
    inside_k = torch.gather(inside, 2, idx)
    n_k = torch.where(
        inside_k.unsqueeze(-1), n_inside, delta_k / dist_k.clamp(min=1e-9).unsqueeze(-1)
    )
    is_nfz = torch.gather(keep.is_nfz[:, None].expand_as(d), 2, idx)
    return n_k, d_k, torch.isfinite(d_k), is_nfz


def safety_filter(
    action: Tensor,
    pos_enu_m: Tensor,
    geofence_min_m: Tensor,
    geofence_max_m: Tensor,
    keep_out: KeepOutRects,
    cfg: SafetyConfig,
    limits: VelocityLimits,
    min_altitude_m: float,
    nearest_k: int = 2,
    cpu_kernel: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Filter normalized actions ``(W, D, 4)`` of drones at ``pos_enu_m (W, D, 3)``.

    ``geofence_min_m``/``geofence_max_m`` are ``(W, 3)``. Returns the filtered normalized action
    and ``{kind: (W, D) bool}`` telling which drones the filter corrected this step.
    ``cpu_kernel`` (CPU tensors): the same as one numba loop nest
    (:func:`isr_training.cpu_kernels.safety_filter`).
    """
    vel, yaw_rate = scale_action(action, limits)
    if cpu_kernel:
        return _safety_filter_numba(
            vel, yaw_rate, pos_enu_m, geofence_min_m, geofence_max_m, keep_out, cfg,
            limits, min_altitude_m, nearest_k,
        )  # fmt: skip
    h = cfg.horizon_s
    out = {}
    if keep_out.valid.shape[1] > 0:
        n, d, active, is_nfz = _nearest_rect_constraint(pos_enu_m, keep_out, nearest_k)
        hit_nfz = torch.zeros_like(active[..., 0])
        hit_obs = torch.zeros_like(hit_nfz)
        vxy = vel[..., :2]
        for j in range(n.shape[2]):  # the k nearest rectangles only (k is small and fixed)
            excess = (vxy * n[..., j, :]).sum(-1) - d[..., j] / h
            fix = active[..., j] & (excess > 0)
            vxy = vxy - torch.where(fix, excess, 0.0).unsqueeze(-1) * n[..., j, :]
            hit_nfz |= fix & is_nfz[..., j]
            hit_obs |= fix & ~is_nfz[..., j]
        vel = torch.cat((vxy, vel[..., 2:]), -1)
        out["no_fly_zone"], out["obstacle"] = hit_nfz, hit_obs
    else:
        out["no_fly_zone"] = out["obstacle"] = torch.zeros_like(pos_enu_m[..., 0], dtype=torch.bool)

    margin = pos_enu_m.new_tensor(
        [cfg.geofence_margin_m, cfg.geofence_margin_m, cfg.altitude_margin_m]
    )
    lo_wall = geofence_min_m.clone()
    lo_wall[:, 2] = torch.clamp(lo_wall[:, 2], min=min_altitude_m)
    lo = (lo_wall[:, None] + margin - pos_enu_m) / h
    hi = (geofence_max_m[:, None] - margin - pos_enu_m) / h
    mid = 0.5 * (lo + hi)
    lo, hi = torch.minimum(lo, mid), torch.maximum(hi, mid)  # degenerate fence: stay centred
    clamped = torch.minimum(torch.maximum(vel, lo), hi)
    changed = (clamped - vel).abs() > 1e-4
    out["geofence"] = changed[..., 0] | changed[..., 1]
    out["altitude"] = changed[..., 2]

    scale = action.new_tensor(
        [limits.max_velocity_m_s, limits.max_velocity_m_s, limits.max_vertical_velocity_m_s]
    )
    yaw_norm = yaw_rate / (limits.max_yaw_rate_deg_s * torch.pi / 180.0)
    filtered = torch.cat(((clamped / scale).clamp(-1.0, 1.0), yaw_norm.unsqueeze(-1)), -1)
    return filtered, out


def _safety_filter_numba(
    vel: Tensor,
    yaw_rate: Tensor,
    pos_enu_m: Tensor,
    geofence_min_m: Tensor,
    geofence_max_m: Tensor,
    keep_out: KeepOutRects,
    cfg: SafetyConfig,
    limits: VelocityLimits,
    min_altitude_m: float,
    nearest_k: int,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The numba path of :func:`safety_filter`, after its action scaling."""
    from isr_direct_dynamics.cpu_kernels import as_numpy as a
    from isr_direct_dynamics.cpu_kernels import threads_for
    from isr_training import cpu_kernels

    shape = pos_enu_m.shape[:2]
    out = torch.empty(*shape, 4)
    flags = [torch.empty(shape, dtype=torch.bool) for _ in range(4)]

    with threads_for(shape.numel(), 2048):  # ~0.2 us per drone: serial below
        cpu_kernels.safety_filter(
            a(vel), a(yaw_rate), a(pos_enu_m), a(geofence_min_m), a(geofence_max_m),
            a(keep_out.min_xy), a(keep_out.max_xy), a(keep_out.top_z), a(keep_out.is_nfz),
            a(keep_out.valid), float(cfg.horizon_s), float(cfg.geofence_margin_m),
            float(cfg.altitude_margin_m), float(min_altitude_m), float(limits.max_velocity_m_s),
            float(limits.max_vertical_velocity_m_s), limits.max_yaw_rate_deg_s * torch.pi / 180.0,
            int(nearest_k), out.numpy(), *(f.numpy() for f in flags),
        )  # fmt: skip
    geofence, altitude, nfz, obstacle = flags
    return out, {
        "no_fly_zone": nfz,
        "obstacle": obstacle,
        "geofence": geofence,
        "altitude": altitude,
    }
