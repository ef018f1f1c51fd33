"""Numba CPU kernels of the task's per-step work (the torch code runs on CUDA).

A control step of the ISR task is about a hundred small tensor operations; on a CPU their
per-call overhead, not the arithmetic, sets the step time (an evaluation flies 20 drones), and
at thousands of drones each is a pass over memory. On CPU (``EnvConfig.cpu_kernels``)
``ISREnv.step`` is therefore three kernels plus the vehicle's and the detector's, each one loop
over drones (``numba.prange``, in chunks of :data:`CHUNK`):

- :func:`filter_actions`: sanitize (NaN/inf -> zero command), clamp, scale and safety-filter the
  actions (per drone :func:`_safety_one`, also behind :func:`safety_filter`: the nearest keep-out
  rectangles as velocity half-spaces, then the geofence and altitude clamps), float32 like the
  torch code;
- :func:`task_step`: step counter; on perception steps the coverage cells in view
  (:func:`_footprint_cells`: the footprint quad of :func:`footprint_edges`, one x-interval per
  grid row, exact per-cell tests only at the interval ends) and the found targets; crash and
  breach flags; the reward terms and their weighted sum; episode sums and statistics;
  terminated / truncated; the observation (kinematic head, pooled coverage kept up to date cell
  by cell, top-K detection features);
- :func:`task_reset`: the task state and first observation of the drones that finished.

:func:`cells_in_view` and :func:`observe_head` are the batch forms of the same per-drone helpers
that the environment's ``reset`` uses; :func:`crashes_and_breaches` is the batch form of the crash
helper that the tests check against the torch flags. The tests
compare everything with the torch code on random and constructed situations and whole episodes.
Compiled code is cached on disk.
"""

from __future__ import annotations

import numpy as np

from isr_direct_dynamics.cpu_kernels import (  # noqa: F401 (AVAILABLE, njit, prange: re-export)
    AVAILABLE,
    CHUNK,
    njit,
    prange,
)

from .task.coverage import DEGENERATE_AREA_M2


@njit(inline="always", cache=True)
def _safety_one(
    w, d, px, py, pz, vx, vy, vz, yaw_rate, geofence_min, geofence_max, rect_min, rect_max,
    rect_top, rect_nfz, rect_valid, h, m_xy, m_z, min_alt, s_xy, s_z, s_yaw, k_eff, out_action,
    hit_geofence, hit_altitude, hit_nfz, hit_obstacle,
):  # fmt: skip
    """The safety filter of drone ``(w, d)`` at ``p`` commanding velocity ``v``.

    See :func:`safety_filter`; float32 constants prepared by the caller.
    """
    nr = rect_min.shape[1]
    f32 = np.float32
    inf = f32(np.inf)
    zero, one, half_ = f32(0.0), f32(1.0), f32(0.5)
    tiny_in = f32(1e-6)
    tiny_n = f32(1e-9)
    tol = f32(1e-4)
    nfz_hit = False
    obs_hit = False
    prev_d = -inf
    prev_r = -1
    for _ in range(k_eff):
        # the next nearest active rectangle: clearances in increasing order, ties by index
        best = -1
        best_d = inf
        for r in range(nr):
            if not rect_valid[w, r] or not pz < rect_top[w, r]:
                continue
            lo0, lo1 = rect_min[w, r, 0], rect_min[w, r, 1]
            hi0, hi1 = rect_max[w, r, 0], rect_max[w, r, 1]
            dx = max(min(px, hi0), lo0) - px
            dy = max(min(py, hi1), lo1) - py
            dist = np.sqrt(dx * dx + dy * dy)
            if dist <= tiny_in:
                pen = min(min(px - lo0, hi0 - px), min(py - lo1, hi1 - py))
                dist = -pen
            after_prev = dist > prev_d or (dist == prev_d and r > prev_r)
            if after_prev and (dist < best_d or (dist == best_d and best < 0)):
                best_d = dist
                best = r
        if best < 0:
            break
        prev_d, prev_r = best_d, best
        lo0, lo1 = rect_min[w, best, 0], rect_min[w, best, 1]
        hi0, hi1 = rect_max[w, best, 0], rect_max[w, best, 1]
        dx = max(min(px, hi0), lo0) - px
        dy = max(min(py, hi1), lo1) - py
        dist = np.sqrt(dx * dx + dy * dy)
        if dist <= tiny_in:  # inside: push out through the nearest edge
            p0, p1, p2, p3 = px - lo0, hi0 - px, py - lo1, hi1 - py
            e = 0
            m = p0
            if p1 < m:
                e, m = 1, p1
            if p2 < m:
                e, m = 2, p2
            if p3 < m:
                e, m = 3, p3
            nx = one if e == 0 else (-one if e == 1 else zero)
            ny = one if e == 2 else (-one if e == 3 else zero)
        else:
            inv = max(dist, tiny_n)
            nx, ny = dx / inv, dy / inv
        excess = (vx * nx + vy * ny) - best_d / h
        if excess > zero:
            vx = vx - excess * nx
            vy = vy - excess * ny
            if rect_nfz[w, best]:
                nfz_hit = True
            else:
                obs_hit = True
    # geofence walls, ceiling and the minimum altitude (exact clamps on the velocity)
    g_out = False
    a_out = False
    for a in range(3):
        v = vx if a == 0 else (vy if a == 1 else vz)
        p = px if a == 0 else (py if a == 1 else pz)
        m = m_xy if a < 2 else m_z
        lo_wall = geofence_min[w, a]
        if a == 2:
            lo_wall = max(lo_wall, min_alt)
        lo = ((lo_wall + m) - p) / h
        hi = ((geofence_max[w, a] - m) - p) / h
        mid = half_ * (lo + hi)
        lo = min(lo, mid)
        hi = max(hi, mid)
        c = min(max(v, lo), hi)
        if abs(c - v) > tol:
            if a < 2:
                g_out = True
            else:
                a_out = True
        s = s_xy if a < 2 else s_z
        out_action[w, d, a] = min(max(c / s, -one), one)
    out_action[w, d, 3] = yaw_rate / s_yaw
    hit_geofence[w, d] = g_out
    hit_altitude[w, d] = a_out
    hit_nfz[w, d] = nfz_hit
    hit_obstacle[w, d] = obs_hit


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def safety_filter(
    vel,
    yaw_rate,
    pos,
    geofence_min,
    geofence_max,
    rect_min,
    rect_max,
    rect_top,
    rect_nfz,
    rect_valid,
    horizon_s,
    geofence_margin_m,
    altitude_margin_m,
    min_altitude_m,
    max_velocity_m_s,
    max_vertical_velocity_m_s,
    max_yaw_rate_rad_s,
    nearest_k,
    out_action,
    hit_geofence,
    hit_altitude,
    hit_nfz,
    hit_obstacle,
):
    """The safety filter of every drone (see :func:`isr_training.task.safety.safety_filter`).

    Shapes: ``vel (W, D, 3)`` and ``yaw_rate (W, D)`` (the scaled action), ``pos (W, D, 3)``,
    ``geofence_min/max (W, 3)``, keep-out rectangles (margins included) ``rect_min/max (W, R, 2)``,
    ``rect_top, rect_nfz, rect_valid (W, R)``. Outputs ``out_action (W, D, 4)`` (normalized) and
    the ``(W, D)`` bool intervention flags. Of the active rectangles (valid, drone below their
    top) the ``nearest_k`` with the smallest signed clearance are applied in that order.
    """
    nw, nd = pos.shape[0], pos.shape[1]
    nr = rect_min.shape[1]
    f32 = np.float32
    h = f32(horizon_s)
    m_xy, m_z = f32(geofence_margin_m), f32(altitude_margin_m)
    min_alt = f32(min_altitude_m)
    s_xy, s_z = f32(max_velocity_m_s), f32(max_vertical_velocity_m_s)
    s_yaw = f32(max_yaw_rate_rad_s)
    k_eff = min(nearest_k, nr)
    for flat in prange(nw * nd):
        w = flat // nd
        d = flat % nd
        _safety_one(
            w, d, pos[w, d, 0], pos[w, d, 1], pos[w, d, 2], vel[w, d, 0], vel[w, d, 1],
            vel[w, d, 2], yaw_rate[w, d], geofence_min, geofence_max, rect_min, rect_max,
            rect_top, rect_nfz, rect_valid, h, m_xy, m_z, min_alt, s_xy, s_z, s_yaw, k_eff,
            out_action, hit_geofence, hit_altitude, hit_nfz, hit_obstacle,
        )  # fmt: skip


@njit(inline="always", cache=True)
def footprint_edges(px, py, pz, qw, qx, qy, qz, rays_body, r, edge_a, edge_b, edge_c, cx, cy):
    """The ground footprint of a camera at ``p`` (attitude ``q``, wxyz) as a convex quad.

    The 4 corner rays ``rays_body (4, 3)`` rotated into the world and cut at the ground or at
    ``r`` horizontally give the corners ``(cx, cy)``; edge ``k`` is the half-plane
    ``edge_a[k] x + edge_b[k] y + edge_c[k] >= 0`` (inside on the left for either winding); a
    degenerate quad (``task.coverage.DEGENERATE_AREA_M2``) gets an edge nothing satisfies.
    """
    h = max(pz, 0.0)
    for k in range(4):
        vx, vy, vz = rays_body[k, 0], rays_body[k, 1], rays_body[k, 2]
        # v + qw t + qv x t, t = 2 qv x v
        tx = 2.0 * (qy * vz - qz * vy)
        ty = 2.0 * (qz * vx - qx * vz)
        tz = 2.0 * (qx * vy - qy * vx)
        rx = vx + qw * tx + (qy * tz - qz * ty)
        ry = vy + qw * ty + (qz * tx - qx * tz)
        rz = vz + qw * tz + (qx * ty - qy * tx)
        down = max(-rz, 1e-6)
        hn = max(np.sqrt(rx * rx + ry * ry), 1e-6)
        reach = min(h / down * hn, r)
        cx[k] = px + rx / hn * reach
        cy[k] = py + ry / hn * reach
    area = 0.0
    for k in range(4):
        j = (k + 3) % 4
        area += cx[j] * cy[k] - cx[k] * cy[j]
    sign = 1.0 if area >= 0 else -1.0
    for k in range(4):
        j = (k + 1) % 4
        ex, ey = cx[j] - cx[k], cy[j] - cy[k]
        edge_a[k] = -ey * sign
        edge_b[k] = ex * sign
        edge_c[k] = (ey * cx[k] - ex * cy[k]) * sign
    if abs(area) <= DEGENERATE_AREA_M2:  # a camera on the ground covers nothing: 0 x + 0 y - 1
        edge_a[0], edge_b[0], edge_c[0] = 0.0, 0.0, -1.0


@njit(inline="always", cache=True)
def _footprint_cells(
    w, d, pos, quat, rays_body, centres, r, seen, out, pooled, obs_cells, edge_a, edge_b, edge_c,
    cx, cy,
):  # fmt: skip
    """Coverage cells in drone ``(w, d)``'s ground footprint and in range.

    With ``out`` (a ``(W, D, C)`` bool array) every cell's flag is written there; otherwise the
    cells are added to ``seen (W, D, C)`` and the number of newly seen ones is returned; with a
    non-empty ``pooled (W, D, g*g)`` (the observation's pooled coverage, block fractions of
    ``obs_cells x obs_cells`` blocks) the blocks of the new cells are updated too. Only the
    cells of the grid rows and columns that overlap the footprint's bounding box (plus one) are
    tested: the others are outside the quad by at least a cell, far beyond rounding; within those
    rows only the cells near the ends of the row's inside interval are tested (see the loop), so
    the flags are those of testing every cell against :func:`footprint_edges` and the disc.
    ``centres (C, 2)`` is the row-major ``G x G`` grid
    (:func:`isr_training.task.coverage.cell_centres`); the rest are scratch arrays of 4.
    """
    px, py = float(pos[w, d, 0]), float(pos[w, d, 1])
    footprint_edges(
        px, py, float(pos[w, d, 2]), quat[w, d, 0], quat[w, d, 1], quat[w, d, 2], quat[w, d, 3],
        rays_body, r, edge_a, edge_b, edge_c, cx, cy,
    )  # fmt: skip
    g = int(np.sqrt(centres.shape[0]) + 0.5)
    x0, y0 = centres[0, 0], centres[0, 1]
    cw = centres[1, 0] - x0 if g > 1 else 1.0
    ch = centres[g, 1] - y0 if g > 1 else 1.0
    bx0, bx1 = max(min(cx.min(), px + r), px - r), min(max(cx.max(), px - r), px + r)
    by0, by1 = max(min(cy.min(), py + r), py - r), min(max(cy.max(), py - r), py + r)
    c0 = max(int(np.floor((bx0 - x0) / cw)) - 1, 0)
    c1 = min(int(np.ceil((bx1 - x0) / cw)) + 1, g - 1)
    r0 = max(int(np.floor((by0 - y0) / ch)) - 1, 0)
    r1 = min(int(np.ceil((by1 - y0) / ch)) + 1, g - 1)
    r2 = r * r
    new = 0
    if out.shape[0] > 0:
        out[w, d, :] = False
    srow = seen[w, d]
    kb = g // obs_cells
    area = np.float32(kb * kb)
    inv_a = cx  # the corners are no longer needed: reuse the scratch for 1 / a
    for k in range(4):
        inv_a[k] = 1.0 / edge_a[k] if edge_a[k] != 0.0 else 0.0
    inv_cw = 1.0 / cw
    tol = 1e-6
    for row in range(r0, r1 + 1):
        # The row's cells inside the disc and the four half-planes form an interval [xl, xr] of
        # x (float64, its ends within ~1e-12 m): cells more than ``tol`` inside it are in, those
        # within ``tol`` of its ends get the exact per-cell test, the others are out; so the
        # flags are the per-cell test's.
        y = centres[row * g, 1]
        dy = y - py
        rem = r2 - dy * dy
        if rem < 0.0:
            continue
        half = np.sqrt(rem)
        xl, xr = px - half, px + half
        for k in range(4):
            a = edge_a[k]
            rest = edge_b[k] * y + edge_c[k]
            if a > 0.0:
                xl = max(xl, -rest * inv_a[k])
            elif a < 0.0:
                xr = min(xr, -rest * inv_a[k])
            elif rest < 0.0:
                xr = xl - 3.0 * cw - 1.0  # no x satisfies this edge: no cell of the row
        in0 = int(np.ceil((xl + tol - x0) * inv_cw))
        in1 = int(np.floor((xr - tol - x0) * inv_cw))
        b0 = max(int(np.ceil((xl - tol - x0) * inv_cw)), c0)
        b1 = min(int(np.floor((xr + tol - x0) * inv_cw)), c1)
        for col in range(b0, b1 + 1):
            i = row * g + col
            if in0 <= col <= in1:
                ok = True
            else:
                x = centres[i, 0]
                ok = (x - px) * (x - px) + (y - py) * (y - py) <= r2
                for k in range(4):
                    ok = ok and (edge_a[k] * x + edge_b[k] * y + edge_c[k] >= 0.0)
            if out.shape[0] > 0:
                out[w, d, i] = ok
            elif ok and not srow[i]:
                srow[i] = True
                new += 1
                if pooled.shape[0] > 0:  # the block's fraction, recounted exactly
                    blk = (row // kb) * obs_cells + col // kb
                    cnt = np.float32(int(pooled[w, d, blk] * area + 0.5) + 1)
                    pooled[w, d, blk] = cnt / area
    return new


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def cells_in_view(pos, quat, rays_body, centres, max_range_m, out):
    """Coverage cells inside each drone's ground footprint and in range, into ``out``.

    The loop-nest form of :func:`isr_training.task.coverage.footprint_corners` +
    :func:`~isr_training.task.coverage.cells_in_footprint`: the 4 corner rays rotated into the
    world, cut at the ground or at ``max_range_m`` horizontally, and every cell centre near the
    footprint tested against the quad's edges (either winding) and the range disc. Shapes:
    ``pos (W, D, 3)``, ``quat (W, D, 4)`` wxyz, ``rays_body (4, 3)``, ``centres (C, 2)``,
    ``out (W, D, C)`` bool. The torch code evaluates the same half-planes through a matrix
    product, so a cell centre within rounding of an edge can come out differently.
    """
    nw, nd = pos.shape[0], pos.shape[1]
    no_pooled = np.empty((0, 0, 0), dtype=np.float32)
    total = nw * nd
    for chunk in prange((total + CHUNK - 1) // CHUNK):  # scratch arrays once per chunk
        e = np.empty((5, 4))
        for flat in range(chunk * CHUNK, min(total, (chunk + 1) * CHUNK)):
            _footprint_cells(
                flat // nd, flat % nd, pos, quat, rays_body, centres, max_range_m, out, out,
                no_pooled, 1, e[0], e[1], e[2], e[3], e[4],
            )  # fmt: skip


@njit(inline="always", cache=True)
def _observe_head_one(
    w, d, pos, vel, yaw, step_count, t_max, area_centre, area_half, half_max, alt_s, v_s,
    geofence_min, geofence_max, nfz_min, nfz_max, nfz_valid, out,
):  # fmt: skip
    """The kinematic observation of drone ``(w, d)`` into ``out[:18]``.

    See :func:`observe_head`; float32 constants prepared by the caller.
    """
    f32 = np.float32
    one = f32(1.0)
    inf = f32(np.inf)
    px, py, pz = pos[w, d, 0], pos[w, d, 1], pos[w, d, 2]
    out[0] = (px - area_centre[0]) / area_half[0]
    out[1] = (py - area_centre[1]) / area_half[1]
    alt = pz / alt_s
    out[2] = alt
    for k in range(3):
        out[3 + k] = vel[w, d, k] / v_s
    out[6] = np.sin(yaw[w, d])
    out[7] = np.cos(yaw[w, d])
    out[8] = alt
    out[9] = one - f32(step_count[w, d]) / t_max
    for k in range(3):
        out[10 + k] = (pos[w, d, k] - geofence_min[w, k]) / half_max
        out[13 + k] = (geofence_max[w, k] - pos[w, d, k]) / half_max
    best = -1
    best_d = inf
    bx = f32(0.0)
    by = f32(0.0)
    for z in range(nfz_min.shape[1]):
        if not nfz_valid[w, z]:
            continue
        dx = max(min(px, nfz_max[w, z, 0]), nfz_min[w, z, 0]) - px
        dy = max(min(py, nfz_max[w, z, 1]), nfz_min[w, z, 1]) - py
        dist = np.sqrt(dx * dx + dy * dy)
        if best < 0 or dist < best_d:
            best, best_d, bx, by = z, dist, dx, dy
    out[16] = bx / half_max if best >= 0 else f32(0.0)
    out[17] = by / half_max if best >= 0 else f32(0.0)


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def observe_head(
    pos,
    vel,
    yaw,
    step_count,
    max_steps,
    area_centre,
    area_half,
    alt_scale,
    max_velocity,
    geofence_min,
    geofence_max,
    nfz_min,
    nfz_max,
    nfz_valid,
    out,
):
    """The kinematic part of the observation ``out (W, D, 18)`` (``ISREnv._observe_head``).

    Position relative to the area (2), altitude (1), velocity (3), sin/cos of yaw (2), altitude
    again (the height-above-ground slot), time left (1), distances to the 6 fence planes, the
    vector to the nearest point of the nearest no-fly zone (2), scaled as the torch code (float32;
    sin/cos may differ in the last bit).
    """
    nw, nd = pos.shape[0], pos.shape[1]
    f32 = np.float32
    half_max = max(area_half[0], area_half[1])
    for flat in prange(nw * nd):
        w = flat // nd
        d = flat % nd
        _observe_head_one(
            w, d, pos, vel, yaw, step_count, f32(max_steps), area_centre, area_half, half_max,
            f32(alt_scale), f32(max_velocity), geofence_min, geofence_max, nfz_min, nfz_max,
            nfz_valid, out[w, d],
        )  # fmt: skip


@njit(inline="always", cache=True)
def _crash_and_breach_one(
    w, d, pos, ground_contact, box_min, box_max, box_valid, geofence_min, geofence_max, r, r2
):  # fmt: skip
    """``(crashed, breached)`` of drone ``(w, d)`` (see :func:`crashes_and_breaches`)."""
    nd = pos.shape[1]
    px, py, pz = pos[w, d, 0], pos[w, d, 1], pos[w, d, 2]
    hit = pz <= r or ground_contact[w, d]
    # branch-free loops (bitwise & and |), which LLVM vectorizes
    for b in range(box_min.shape[1]):
        hit |= (
            box_valid[w, b]
            & (box_min[w, b, 0] - r <= px) & (px <= box_max[w, b, 0] + r)
            & (box_min[w, b, 1] - r <= py) & (py <= box_max[w, b, 1] + r)
            & (box_min[w, b, 2] - r <= pz) & (pz <= box_max[w, b, 2] + r)
        )  # fmt: skip
    for o in range(nd):
        dx = px - pos[w, o, 0]
        dy = py - pos[w, o, 1]
        dz = pz - pos[w, o, 2]
        hit |= (dx * dx + dy * dy + dz * dz < r2) & (o != d)
    breached = (
        px < geofence_min[w, 0]
        or py < geofence_min[w, 1]
        or px > geofence_max[w, 0]
        or py > geofence_max[w, 1]
        or pz > geofence_max[w, 2]
    )
    return hit, breached


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def crashes_and_breaches(
    pos, ground_contact, box_min, box_max, box_valid, geofence_min, geofence_max, radius_m,
    drone_hit_m, crashed, breached,
):  # fmt: skip
    """Crash and geofence-breach flags ``(W, D)`` (``ISREnv._collisions`` and ``_breach``).

    Crash: at or below the drone radius, ground contact, inside a building/obstacle box grown by
    the radius, or closer than ``drone_hit_m`` to another drone of its world (0 = drones never
    collide with each other). Breach: outside the
    fence horizontally or above its ceiling. Comparisons of the same float32 values as the torch
    code, so the flags are identical.
    """
    nw, nd = pos.shape[0], pos.shape[1]
    f32 = np.float32
    r = f32(radius_m)
    r2 = f32(drone_hit_m**2)
    for flat in prange(nw * nd):
        w = flat // nd
        d = flat % nd
        crashed[w, d], breached[w, d] = _crash_and_breach_one(
            w, d, pos, ground_contact, box_min, box_max, box_valid, geofence_min, geofence_max,
            r, r2,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The fused environment step (ISREnv on CPU): three kernels instead of ~100 tensor operations.

KERNEL_TERMS = (
    "new_target", "coverage", "time", "collision", "geofence", "altitude_band",
    "action_smoothness", "lead_approach",
)  # fmt: skip
"""Order of the reward terms in :func:`task_step` (``task.rewards.REWARD_TERMS`` must match)."""
EPISODE_STATS = (
    "return", "length", "targets_found", "coverage", "collisions", "geofence_breaches",
    "safety_interventions", "time_to_first_detection_s", "targets_detected",
)  # fmt: skip
"""Rows of :func:`task_step`'s episode output before the per-term sums (``r/<term>``)."""


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def filter_actions(
    action,
    pos,
    geofence_min,
    geofence_max,
    rect_min,
    rect_max,
    rect_top,
    rect_nfz,
    rect_valid,
    safety_on,
    horizon_s,
    geofence_margin_m,
    altitude_margin_m,
    min_altitude_m,
    max_velocity_m_s,
    max_vertical_velocity_m_s,
    max_yaw_rate_rad_s,
    clip_horizontal_norm,
    nearest_k,
    out_action,
    flags,
    nonfinite,
):
    """Sanitize, scale and safety-filter the raw actions ``(W, D, 4)`` of every drone.

    A drone whose action has a NaN/inf entry gets the zero command and its ``nonfinite`` flag;
    actions are clamped to [-1, 1], scaled to velocities (``base.scale_action``, the horizontal
    norm clipped when configured) and filtered (:func:`safety_filter`) when ``safety_on``.
    Outputs: ``out_action (W, D, 4)`` normalized, ``flags (4, W, D)`` bool (geofence, altitude,
    no-fly zone, obstacle), ``nonfinite (W, D)`` bool.
    """
    nw, nd = pos.shape[0], pos.shape[1]
    f32 = np.float32
    one, zero = f32(1.0), f32(0.0)
    h = f32(horizon_s)
    m_xy, m_z = f32(geofence_margin_m), f32(altitude_margin_m)
    min_alt = f32(min_altitude_m)
    s_xy, s_z = f32(max_velocity_m_s), f32(max_vertical_velocity_m_s)
    s_yaw = f32(max_yaw_rate_rad_s)
    k_eff = min(nearest_k, rect_min.shape[1])
    for flat in prange(nw * nd):
        w = flat // nd
        d = flat % nd
        bad = False
        for k in range(4):
            if not np.isfinite(action[w, d, k]):
                bad = True
        nonfinite[w, d] = bad
        a0, a1, a2, a3 = zero, zero, zero, zero
        if not bad:
            a0 = min(max(action[w, d, 0], -one), one)
            a1 = min(max(action[w, d, 1], -one), one)
            a2 = min(max(action[w, d, 2], -one), one)
            a3 = min(max(action[w, d, 3], -one), one)
        if not safety_on:
            out_action[w, d, 0], out_action[w, d, 1] = a0, a1
            out_action[w, d, 2], out_action[w, d, 3] = a2, a3
            for k in range(4):
                flags[k, w, d] = False
            continue
        vx, vy, vz = a0 * s_xy, a1 * s_xy, a2 * s_z
        if clip_horizontal_norm:
            factor = min(s_xy / max(np.hypot(vx, vy), f32(1e-9)), one)
            vx, vy = vx * factor, vy * factor
        _safety_one(
            w, d, pos[w, d, 0], pos[w, d, 1], pos[w, d, 2], vx, vy, vz, a3 * s_yaw,
            geofence_min, geofence_max, rect_min, rect_max, rect_top, rect_nfz, rect_valid, h,
            m_xy, m_z, min_alt, s_xy, s_z, s_yaw, k_eff, out_action, flags[0], flags[1],
            flags[2], flags[3],
        )  # fmt: skip


@njit(inline="always", cache=True)
def _insert_ranked(order, score, n, t, key):
    """Insert item ``t`` with ``key`` into the ``n`` ranked items of ``order``/``score``.

    Ascending key, the earlier inserted first on ties; returns the new count.
    """
    j = n
    while j > 0 and score[j - 1] > key:
        score[j] = score[j - 1]
        order[j] = order[j - 1]
        j -= 1
    score[j] = key
    order[j] = t
    return n + 1


@njit(inline="always", cache=True)
def _detection_features_one(
    w, d, found, boxes, visible, target_class, base, top_k, n_classes, img_w, img_h, out, order,
    score,
):  # fmt: skip
    """Top-K detection features of drone ``(w, d)`` into ``out[base:]`` (``detection_features``).

    The visible targets, unfound before found, larger boxes first, ties by index (stable),
    ``6 + n_classes`` features each, empty slots zero. ``order``/``score`` are scratch arrays of
    the target count.
    """
    f32 = np.float32
    nt = found.shape[2]
    bonus = f32(2.0) * f32(img_w) * f32(img_h)
    n = 0
    for t in range(nt):
        if visible[w, d, t]:
            area = (boxes[w, d, t, 2] - boxes[w, d, t, 0]) * (boxes[w, d, t, 3] - boxes[w, d, t, 1])
            s = area + (f32(0.0) if found[w, d, t] else bonus)
            n = _insert_ranked(order, score, n, t, -s)  # descending score
    nf = 6 + n_classes
    sw, sh = f32(img_w), f32(img_h)
    out[base : base + top_k * nf] = f32(0.0)  # empty slots stay zero
    for k in range(min(n, top_k)):
        o = base + k * nf
        t = order[k]
        b0, b1, b2, b3 = boxes[w, d, t, 0], boxes[w, d, t, 1], boxes[w, d, t, 2], boxes[w, d, t, 3]
        out[o] = f32(1.0)
        out[o + 1 + target_class[w, t]] = f32(1.0)
        out[o + 1 + n_classes] = (b0 + b2) / sw - f32(1.0)
        out[o + 2 + n_classes] = (b1 + b3) / sh - f32(1.0)
        out[o + 3 + n_classes] = (b2 - b0) / sw * f32(2.0)
        out[o + 4 + n_classes] = (b3 - b1) / sh * f32(2.0)
        out[o + 5 + n_classes] = f32(1.0) if found[w, d, t] else f32(0.0)


@njit(inline="always", cache=True)
def _lead_features_one(
    w, d, pos, lead_pos, detected, found, target_class, base, top_k, n_classes, scale, out,
    order, score,
):  # fmt: skip
    """Top-K remembered leads of drone ``(w, d)`` into ``out[base:]`` (``lead_features``).

    Targets detected and not found, nearest (horizontal) first, ties by index; ``4 + n_classes``
    features each (valid, forward, left, up / ``scale``, class one-hot), empty slots zero. The
    heading is that of the observation's head, ``out[6]`` (sin yaw) and ``out[7]`` (cos yaw).
    """
    f32 = np.float32
    nt = found.shape[2]
    px, py, pz = pos[w, d, 0], pos[w, d, 1], pos[w, d, 2]
    n = 0
    for t in range(nt):
        if detected[w, d, t] and not found[w, d, t]:
            dx = lead_pos[w, d, t, 0] - px
            dy = lead_pos[w, d, t, 1] - py
            n = _insert_ranked(order, score, n, t, dx * dx + dy * dy)  # ascending distance
    nf = 4 + n_classes
    sn = out[6]
    c = out[7]
    out[base : base + top_k * nf] = f32(0.0)  # empty slots stay zero
    for k in range(min(n, top_k)):
        o = base + k * nf
        t = order[k]
        dx = lead_pos[w, d, t, 0] - px
        dy = lead_pos[w, d, t, 1] - py
        dz = lead_pos[w, d, t, 2] - pz
        out[o] = f32(1.0)
        out[o + 1] = (c * dx + sn * dy) / scale
        out[o + 2] = (c * dy - sn * dx) / scale
        out[o + 3] = dz / scale
        out[o + 4 + target_class[w, t]] = f32(1.0)


@njit(inline="always", cache=True)
def _lead_approach_one(
    w, d, pos, lead_pos, detected, found, target_class, found_range2, near_idx, near_dist
):  # fmt: skip
    """The ``lead_approach`` term of drone ``(w, d)`` (``task.rewards.lead_approach_term``).

    Finds the nearest remembered lead by its 3D distance beyond its class's recognition range
    (0 within it), ties by index; returns the metres gained on it since the previous step when
    it is the same lead as then, else 0; stores it and its distance in ``near_idx`` /
    ``near_dist`` (-1 / 0 when there is none).
    """
    f32 = np.float32
    px, py, pz = pos[w, d, 0], pos[w, d, 1], pos[w, d, 2]
    best = -1
    best_d = f32(np.inf)
    for t in range(found.shape[2]):
        if detected[w, d, t] and not found[w, d, t]:
            dx = lead_pos[w, d, t, 0] - px
            dy = lead_pos[w, d, t, 1] - py
            dz = lead_pos[w, d, t, 2] - pz
            beyond = max(
                np.sqrt(dx * dx + dy * dy + dz * dz) - np.sqrt(found_range2[target_class[w, t]]),
                f32(0.0),
            )
            if beyond < best_d:
                best, best_d = t, beyond
    dist = best_d if best >= 0 else f32(0.0)
    gain = near_dist[w, d] - dist if best >= 0 and best == near_idx[w, d] else f32(0.0)
    near_idx[w, d] = best
    near_dist[w, d] = dist
    return gain


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def task_step(
    rendered,
    pos,
    vel,
    yaw,
    quat,
    ground_contact,
    action,
    prev_action,
    flags,
    boxes,
    visible,
    target_pos,
    target_class,
    num_targets,
    found_range2,
    box_min,
    box_max,
    box_valid,
    geofence_min,
    geofence_max,
    nfz_min,
    nfz_max,
    nfz_valid,
    rays_body,
    centres,
    max_range_m,
    seen,
    found,
    radius_m,
    drone_hit_m,
    band_lo,
    band_hi,
    weights,
    terminate_on_geofence,
    max_steps,
    dt_s,
    step_count,
    ep_return,
    ep_terms,
    ep_collisions,
    ep_breaches,
    ep_interventions,
    ep_first,
    area_centre,
    area_half,
    alt_scale,
    max_velocity,
    cells,
    obs_cells,
    top_k,
    n_classes,
    img_w,
    img_h,
    obs_tail,
    detected,
    lead_pos,
    top_k_leads,
    lead_scale_m,
    lead_near_idx,
    lead_near_dist,
    obs,
    final_obs,
    reward,
    terms,
    done_flags,
    episode,
):
    """Everything of ``ISREnv.step`` after the vehicle and target motion, per drone.

    Step counter; on perception steps (``rendered``) the coverage cells now in view and the
    targets found (detected in ``visible`` and within the class's recognition range
    ``found_range2``); crash and breach flags; the reward terms (:data:`KERNEL_TERMS`) and their
    weighted sum; the episode sums; terminated / truncated / done (``done_flags (3, W, D)``); the
    episode statistics (``episode``: :data:`EPISODE_STATS` then the per-term sums); the
    observation ``obs (W, D, obs_dim)``, written to ``final_obs`` too (:func:`task_reset` then
    rewrites the finished drones' rows of ``obs``). The perception tail ``obs_tail`` keeps the
    pooled coverage up to date cell by cell and gets new detection features on perception steps;
    otherwise it is reused. The remembered leads (``detected``, ``lead_pos``: updated on perception
    steps) follow the observation tail, recomputed every step (:func:`_lead_features_one`). The
    state arrays (``prev_action``, ``seen``, ``found``, ``detected``, ``lead_pos``,
    ``step_count``, ``ep_*``, ``obs_tail``) are updated in place. Float32 arithmetic
    in the torch code's order.
    """
    nw, nd = pos.shape[0], pos.shape[1]
    nt = found.shape[2]
    nterm = len(KERNEL_TERMS)
    f32 = np.float32
    zero, one = f32(0.0), f32(1.0)
    r = f32(radius_m)
    r2 = f32(drone_hit_m**2)
    lo, hi = f32(band_lo), f32(band_hi)
    cap = f32(10.0)
    dt = f32(dt_s)
    half_max = max(area_half[0], area_half[1])
    t_max = f32(max_steps)
    alt_s, v_s = f32(alt_scale), f32(max_velocity)
    n_cells = seen.shape[2]
    block = f32((cells // obs_cells) ** 2)
    none_out = np.empty((0, 0, 0), dtype=np.bool_)
    total = nw * nd
    for chunk in prange((total + CHUNK - 1) // CHUNK):  # scratch arrays once per chunk
        e = np.empty((5, 4))
        tv = np.empty(nterm, dtype=np.float32)
        order = np.empty(nt, dtype=np.int64)
        score = np.empty(nt, dtype=np.float32)
        for flat in range(chunk * CHUNK, min(total, (chunk + 1) * CHUNK)):
            w = flat // nd
            d = flat % nd
            step_count[w, d] += 1
            n_new_cells = 0
            n_found = 0
            if rendered:
                n_new_cells = _footprint_cells(
                    w, d, pos, quat, rays_body, centres, max_range_m, seen, none_out, obs_tail,
                    obs_cells, e[0], e[1], e[2], e[3], e[4],
                )  # fmt: skip
                px, py, pz = pos[w, d, 0], pos[w, d, 1], pos[w, d, 2]
                for t in range(nt):
                    if not visible[w, d, t]:
                        continue
                    detected[w, d, t] = True
                    for k in range(3):
                        lead_pos[w, d, t, k] = target_pos[w, t, k]
                    if found[w, d, t]:
                        continue
                    dx = target_pos[w, t, 0] - px
                    dy = target_pos[w, t, 1] - py
                    dz = target_pos[w, t, 2] - pz
                    if (dx * dx + dy * dy) + dz * dz <= found_range2[target_class[w, t]]:
                        found[w, d, t] = True
                        n_found += 1
            approach = _lead_approach_one(
                w, d, pos, lead_pos, detected, found, target_class, found_range2, lead_near_idx,
                lead_near_dist,
            )  # fmt: skip
            crashed, breached = _crash_and_breach_one(
                w, d, pos, ground_contact, box_min, box_max, box_valid, geofence_min, geofence_max,
                r, r2,
            )  # fmt: skip
            z = pos[w, d, 2]
            smooth = zero
            for k in range(4):
                da = action[w, d, k] - prev_action[w, d, k]
                smooth += da * da
                prev_action[w, d, k] = action[w, d, k]
            tv[0] = f32(n_found)
            tv[1] = f32(n_new_cells)
            tv[2] = one
            tv[3] = one if crashed else zero
            tv[4] = one if breached else zero
            tv[5] = min(max(lo - z, zero) + max(z - hi, zero), cap)
            tv[6] = smooth
            tv[7] = approach
            rew = zero
            for k in range(nterm):
                terms[k, w, d] = tv[k]
                rew = tv[k] * weights[k] if k == 0 else rew + tv[k] * weights[k]
                ep_terms[k, w, d] += tv[k]
            reward[w, d] = rew
            ep_return[w, d] += rew
            ep_collisions[w, d] += tv[3]
            ep_breaches[w, d] += tv[4]
            any_int = flags[0, w, d] or flags[1, w, d] or flags[2, w, d] or flags[3, w, d]
            ep_interventions[w, d] += one if any_int else zero
            if n_found > 0 and np.isnan(ep_first[w, d]):
                ep_first[w, d] = f32(step_count[w, d]) * dt
            terminated = crashed or (breached and terminate_on_geofence)
            truncated = step_count[w, d] >= max_steps and not terminated
            done_flags[0, w, d] = terminated
            done_flags[1, w, d] = truncated
            done_flags[2, w, d] = terminated or truncated
            n_found_all = 0
            n_detected_all = 0
            for t in range(nt):
                n_found_all += found[w, d, t]
                n_detected_all += detected[w, d, t]
            pooled_sum = f32(0.0)  # the pooled block fractions: the count after rounding
            for i in range(obs_cells * obs_cells):
                pooled_sum += obs_tail[w, d, i]
            n_seen = int(pooled_sum * block + 0.5)
            episode[0, w, d] = ep_return[w, d]
            episode[1, w, d] = f32(step_count[w, d])
            episode[2, w, d] = f32(n_found_all) / num_targets[w]
            episode[3, w, d] = f32(n_seen) / f32(n_cells)
            episode[4, w, d] = ep_collisions[w, d]
            episode[5, w, d] = ep_breaches[w, d]
            episode[6, w, d] = ep_interventions[w, d]
            episode[7, w, d] = ep_first[w, d]
            episode[8, w, d] = f32(n_detected_all) / num_targets[w]
            for k in range(nterm):
                episode[9 + k, w, d] = ep_terms[k, w, d]
            row = obs[w, d]
            _observe_head_one(
                w, d, pos, vel, yaw, step_count, t_max, area_centre, area_half, half_max, alt_s,
                v_s, geofence_min, geofence_max, nfz_min, nfz_max, nfz_valid, row,
            )  # fmt: skip
            tail = obs_tail[w, d]
            if rendered:  # (the pooled coverage was updated with the new cells)
                _detection_features_one(
                    w, d, found, boxes, visible, target_class, obs_cells * obs_cells, top_k,
                    n_classes, img_w, img_h, tail, order, score,
                )  # fmt: skip
            for k in range(tail.shape[0]):
                row[18 + k] = tail[k]
            _lead_features_one(
                w, d, pos, lead_pos, detected, found, target_class, 18 + tail.shape[0],
                top_k_leads, n_classes, f32(lead_scale_m), row, order, score,
            )  # fmt: skip
            final_obs[w, d, :] = row


@njit(cache=True, error_model="numpy", boundscheck=False)
def task_reset(
    done,
    pos,
    vel,
    yaw,
    step_count,
    max_steps,
    area_centre,
    area_half,
    alt_scale,
    max_velocity,
    geofence_min,
    geofence_max,
    nfz_min,
    nfz_max,
    nfz_valid,
    found,
    seen,
    prev_action,
    visible,
    detected,
    lead_near_idx,
    ep_return,
    ep_terms,
    ep_collisions,
    ep_breaches,
    ep_interventions,
    ep_first,
    obs_tail,
    obs,
):
    """The task part of ``ISREnv._reset_drones`` for the drones in ``done (W, D)``.

    Their vehicles were already reset. Their rows of ``obs`` (a copy of the last observation,
    written by :func:`task_step`) become their first observation of the new episode (kinematics,
    perception tail zero). Serial: only the few finished drones have work.
    """
    nw, nd = done.shape[0], done.shape[1]
    f32 = np.float32
    half_max = max(area_half[0], area_half[1])
    t_max = f32(max_steps)
    alt_s, v_s = f32(alt_scale), f32(max_velocity)
    zero = f32(0.0)
    for flat in range(nw * nd):
        w = flat // nd
        d = flat % nd
        if not done[w, d]:
            continue
        row = obs[w, d]
        step_count[w, d] = 0
        found[w, d, :] = False
        seen[w, d, :] = False
        visible[w, d, :] = False
        detected[w, d, :] = False
        lead_near_idx[w, d] = -1
        prev_action[w, d, :] = zero
        ep_return[w, d] = zero
        ep_terms[:, w, d] = zero
        ep_collisions[w, d] = zero
        ep_breaches[w, d] = zero
        ep_interventions[w, d] = zero
        ep_first[w, d] = f32(np.nan)
        obs_tail[w, d, :] = zero
        row[18:] = zero
        _observe_head_one(
            w, d, pos, vel, yaw, step_count, t_max, area_centre, area_half, half_max, alt_s, v_s,
            geofence_min, geofence_max, nfz_min, nfz_max, nfz_valid, row,
        )  # fmt: skip
