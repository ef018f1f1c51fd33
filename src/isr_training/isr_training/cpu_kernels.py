"""Numba CPU kernels of the task's per-step work (the torch code runs on CUDA).

A control step of the ISR task is dozens of small tensor operations; with few drones (an
evaluation flies 20) their per-call overhead, not the arithmetic, sets the step time. The kernels
here compute the same results as one loop nest over drones (``numba.prange``):

- :func:`safety_filter`: :func:`isr_training.task.safety.safety_filter` after the action scaling
  (the nearest keep-out rectangles as velocity half-spaces, then the geofence and altitude clamps),
  in float32 like the torch code.

The tests compare them with the torch code on random and constructed situations. Used on CPU
(``EnvConfig.cpu_kernels``); compiled code is cached on disk.
"""

from __future__ import annotations

import numpy as np

from isr_direct_dynamics.cpu_kernels import AVAILABLE, njit, prange  # noqa: F401 (re-export)


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
    inf = f32(np.inf)
    zero, one, half_ = f32(0.0), f32(1.0), f32(0.5)
    tiny_in = f32(1e-6)
    tiny_n = f32(1e-9)
    tol = f32(1e-4)
    m_xy, m_z = f32(geofence_margin_m), f32(altitude_margin_m)
    min_alt = f32(min_altitude_m)
    s_xy, s_z = f32(max_velocity_m_s), f32(max_vertical_velocity_m_s)
    s_yaw = f32(max_yaw_rate_rad_s)
    k_eff = min(nearest_k, nr)
    for flat in prange(nw * nd):
        w = flat // nd
        d = flat % nd
        px, py, pz = pos[w, d, 0], pos[w, d, 1], pos[w, d, 2]
        vx, vy, vz = vel[w, d, 0], vel[w, d, 1], vel[w, d, 2]
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
        out_action[w, d, 3] = yaw_rate[w, d] / s_yaw
        hit_geofence[w, d] = g_out
        hit_altitude[w, d] = a_out
        hit_nfz[w, d] = nfz_hit
        hit_obstacle[w, d] = obs_hit


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def cells_in_view(pos, quat, rays_body, centres, max_range_m, out):
    """Coverage cells inside each drone's ground footprint and in range, into ``out``.

    The loop-nest form of :func:`isr_training.task.coverage.footprint_corners` +
    :func:`~isr_training.task.coverage.cells_in_footprint`: the 4 corner rays rotated into the
    world, cut at the ground or at ``max_range_m`` horizontally, and every cell centre tested
    against the quad's edges (either winding) and the range disc. Shapes: ``pos (W, D, 3)``,
    ``quat (W, D, 4)`` wxyz, ``rays_body (4, 3)``, ``centres (C, 2)``, ``out (W, D, C)`` bool.
    The torch code evaluates the same half-planes through a matrix product, so a cell centre
    within rounding of an edge can come out differently.
    """
    nw, nd = pos.shape[0], pos.shape[1]
    nc = centres.shape[0]
    r = max_range_m
    for flat in prange(nw * nd):
        w = flat // nd
        d = flat % nd
        px, py, pz = float(pos[w, d, 0]), float(pos[w, d, 1]), float(pos[w, d, 2])
        qw, qx, qy, qz = quat[w, d, 0], quat[w, d, 1], quat[w, d, 2], quat[w, d, 3]
        cx = np.empty(4)
        cy = np.empty(4)
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
        a = np.empty(4)
        b = np.empty(4)
        c = np.empty(4)
        for k in range(4):
            j = (k + 1) % 4
            ex, ey = cx[j] - cx[k], cy[j] - cy[k]
            a[k] = -ey * sign
            b[k] = ex * sign
            c[k] = (ey * cx[k] - ex * cy[k]) * sign
        r2 = r * r
        for i in range(nc):
            x, y = centres[i, 0], centres[i, 1]
            ok = (x - px) * (x - px) + (y - py) * (y - py) <= r2
            for k in range(4):
                ok = ok and (a[k] * x + b[k] * y + c[k] >= 0.0)
            out[w, d, i] = ok


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
    nz = nfz_min.shape[1]
    f32 = np.float32
    one = f32(1.0)
    half_max = max(area_half[0], area_half[1])
    alt_s = f32(alt_scale)
    v_s = f32(max_velocity)
    t_max = f32(max_steps)
    inf = f32(np.inf)
    for flat in prange(nw * nd):
        w = flat // nd
        d = flat % nd
        px, py, pz = pos[w, d, 0], pos[w, d, 1], pos[w, d, 2]
        out[w, d, 0] = (px - area_centre[0]) / area_half[0]
        out[w, d, 1] = (py - area_centre[1]) / area_half[1]
        alt = pz / alt_s
        out[w, d, 2] = alt
        for k in range(3):
            out[w, d, 3 + k] = vel[w, d, k] / v_s
        out[w, d, 6] = np.sin(yaw[w, d])
        out[w, d, 7] = np.cos(yaw[w, d])
        out[w, d, 8] = alt
        out[w, d, 9] = one - f32(step_count[w, d]) / t_max
        for k in range(3):
            out[w, d, 10 + k] = (pos[w, d, k] - geofence_min[w, k]) / half_max
            out[w, d, 13 + k] = (geofence_max[w, k] - pos[w, d, k]) / half_max
        best = -1
        best_d = inf
        bx = f32(0.0)
        by = f32(0.0)
        for z in range(nz):
            if not nfz_valid[w, z]:
                continue
            dx = max(min(px, nfz_max[w, z, 0]), nfz_min[w, z, 0]) - px
            dy = max(min(py, nfz_max[w, z, 1]), nfz_min[w, z, 1]) - py
            dist = np.sqrt(dx * dx + dy * dy)
            if best < 0 or dist < best_d:
                best, best_d, bx, by = z, dist, dx, dy
        out[w, d, 16] = bx / half_max if best >= 0 else f32(0.0)
        out[w, d, 17] = by / half_max if best >= 0 else f32(0.0)


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def crashes_and_breaches(
    pos, ground_contact, box_min, box_max, box_valid, geofence_min, geofence_max, radius_m,
    crashed, breached,
):  # fmt: skip
    """Crash and geofence-breach flags ``(W, D)`` (``ISREnv._collisions`` and ``_breach``).

    Crash: at or below the drone radius, ground contact, inside a building/obstacle box grown by
    the radius, or closer than two radii to another drone of its world. Breach: outside the
    fence horizontally or above its ceiling. Comparisons of the same float32 values as the torch
    code, so the flags are identical.
    """
    nw, nd = pos.shape[0], pos.shape[1]
    nb = box_min.shape[1]
    f32 = np.float32
    r = f32(radius_m)
    r2 = f32((2.0 * radius_m) ** 2)
    for flat in prange(nw * nd):
        w = flat // nd
        d = flat % nd
        px, py, pz = pos[w, d, 0], pos[w, d, 1], pos[w, d, 2]
        hit = pz <= r or ground_contact[w, d]
        for b in range(nb):
            if hit:
                break
            if (
                box_valid[w, b]
                and box_min[w, b, 0] - r <= px <= box_max[w, b, 0] + r
                and box_min[w, b, 1] - r <= py <= box_max[w, b, 1] + r
                and box_min[w, b, 2] - r <= pz <= box_max[w, b, 2] + r
            ):
                hit = True
        for o in range(nd):
            if hit:
                break
            if o != d:
                dx = px - pos[w, o, 0]
                dy = py - pos[w, o, 1]
                dz = pz - pos[w, o, 2]
                if dx * dx + dy * dy + dz * dz < r2:
                    hit = True
        crashed[w, d] = hit
        breached[w, d] = (
            px < geofence_min[w, 0]
            or py < geofence_min[w, 1]
            or px > geofence_max[w, 0]
            or py > geofence_max[w, 1]
            or pz > geofence_max[w, 2]
        )
