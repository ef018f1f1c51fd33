"""Numba CPU kernels for the parts of the camera that torch cannot batch cheaply on a CPU.

The camera's box pass (:meth:`isr_sim_bridge.camera.TiledCamera._box_pass`) is a scatter of
(drone, tile, box) work items into a z-buffer. In torch it needs a sort, a rank computation and a
Python loop over layers (so no two items of a layer write the same tile); on a 2-core CPU that
bookkeeping costs more than the ray/box tests themselves. The ground-truth detections gather
every candidate pair's occluders before testing them. Here both are single loop nests, parallel
over cameras (``numba.prange``: each camera's outputs belong to one thread, so no atomics and the
result does not depend on the thread count):

- :func:`render_boxes`: the camera's setup kernel (box constants, projected bounds, covered
  tiles) and box pass, per drone;
- :func:`shade`: the per-pixel shading pass (ground intersection, mip-mapped texture, box colour,
  sky), written row-major directly; its innermost loop is one 16-pixel tile row without branches,
  which LLVM vectorizes;
- :func:`detect_targets`: projection, candidate culling and occlusion samples of
  :mod:`isr_sim_bridge.detections` (each target tested only against the occluders that overlap
  the bounding box of camera and target, which changes no result);
- :func:`visible_targets`: only what a simulation step needs (which targets are visible, their
  boxes) for body poses, with the camera pose computed in the kernel, targets whose bounding
  sphere is outside the view not projected, and occlusion samples stopped once decided: the same
  decisions as :func:`detect_targets`, ~3x faster (the environment's CPU step).

They compute exactly what the torch kernels compute (same float32 operations in the same order,
boxes in index order per pixel with a strict ``<`` depth test so ties keep the earlier box, NaN
propagation of ``torch.minimum``/``maximum``): the tests compare both paths bit for bit. Measured
on the 2-core build machine (``isr bench camera --drones 256 --resolution 80x80``, compiled torch
kernels -> numba): setup + box pass 2.9 -> 1.6 ms, shading 4.7 -> 3.6-4.4 ms, detections
3.6 -> 0.8 ms per render of 256 views; 17.8k -> 37-44k frames/s.

These kernels are used on CPU only (``CameraConfig.cpu_kernels``, ``DetectionConfig.cpu_kernels``);
on CUDA the torch kernels run.
``numba`` is a dependency of the workspace; where it cannot be imported, :data:`AVAILABLE` is
False and the camera falls back to torch. Compiled code is cached on disk (``cache=True``: the
package's ``__pycache__`` or numba's user cache directory), so only the first run of a new
install pays the ~2-5 s compilation.
"""

from __future__ import annotations

import numpy as np

from isr_direct_dynamics.cpu_kernels import (  # noqa: F401 (AVAILABLE, njit, prange: re-export)
    AVAILABLE,
    CHUNK,
    njit,
    prange,
    remainder,
)

TILE_W = 16
"""Screen tile width in pixels (``camera.TILE_WIDTH_PX``; compile-time constant in kernels)."""
TILE_H = 4
"""Screen tile height in pixels (``camera.TILE_HEIGHT_PX``)."""


@njit(inline="always", cache=True)
def _fmin(a, b):
    """``torch.minimum`` for float32 scalars (NaN if either is NaN), branch-free."""
    m = a if a < b else b
    return m if a == a else a


@njit(inline="always", cache=True)
def _fmax(a, b):
    """``torch.maximum`` for float32 scalars (NaN if either is NaN), branch-free."""
    m = a if a > b else b
    return m if a == a else a


@njit(inline="always", cache=True)
def _project_clipped(x, y, z, fx, fy, u_off, v_off, near, out):
    """``camera.project_clipped_soa`` for one box: corners ``x, y, z`` (8,) in the optical frame.

    Writes ``u0, v0, u1, v1, in_front (0/1), min_depth`` into ``out`` (6,).
    """
    inf = np.float32(np.inf)
    u0, v0, u1, v1 = inf, inf, -inf, -inf
    front = False
    zmin = z[0]
    for i in range(8):
        if z[i] < zmin:
            zmin = z[i]
        if z[i] >= near:
            front = True
            u = fx * x[i] / z[i] + u_off
            v = fy * y[i] / z[i] + v_off
            u0 = min(u0, u)
            u1 = max(u1, u)
            v0 = min(v0, v)
            v1 = max(v1, v)
    for i in range(8):  # the 12 edges: corners i and i | bit k
        for k in range(3):
            j = i | (1 << k)
            if j == i:
                continue
            if (z[i] - near) * (z[j] - near) < 0:
                t = (near - z[i]) / (z[j] - z[i])
                u = fx * (x[i] + t * (x[j] - x[i])) / near + u_off
                v = fy * (y[i] + t * (y[j] - y[i])) / near + v_off
                u0 = min(u0, u)
                u1 = max(u1, u)
                v0 = min(v0, v)
                v1 = max(v1, v)
    out[0] = u0
    out[1] = v0
    out[2] = u1
    out[3] = v1
    out[4] = 1.0 if front else 0.0
    out[5] = zmin


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def render_boxes(
    rot,
    org,
    center,
    half,
    cos_yaw,
    sin_yaw,
    valid,
    colors,
    corner_signs,
    tile_ray_x,
    tile_ray_y,
    zbuf,
    cbuf,
    drones_per_world,
    tiles_x,
    tiles_y,
    fx,
    fy,
    cx,
    cy,
    near_clip_m,
    far_clip_m,
    width,
    height,
):
    """Setup and box pass of the camera for every drone: nearest box hit per pixel, in place.

    The loop-nest form of ``camera._setup_kernel`` (per (drone, box): camera -> box frame, slab
    constants, exact projected bounds and the screen tiles they cover) followed by the exact
    ray/box slab test of ``camera._layer_kernel`` at every pixel of those tiles, with the same
    float32 arithmetic and NaN propagation. Boxes are visited in index order and the depth test
    is strict, so ties keep the earlier box as in torch. Parallel over drones; each drone's
    buffer rows belong to one thread (no atomics, result independent of the thread count).

    Args (NumPy arrays sharing memory with the camera's tensors):
        rot, org: ``(N, 3, 3)`` world-from-camera rotations and ``(N, 3)`` optical centres.
        center, half: ``(W, P, 3)`` box centres and half extents (buildings, then targets);
            cos_yaw, sin_yaw, valid: ``(W, P)``.
        colors: ``(W * P, 8)`` int32 packed RGBA face colours.
        corner_signs: ``(8, 3)`` float32 :data:`~isr_sim_bridge.camera.CORNER_SIGNS`.
        tile_ray_x, tile_ray_y: ``(T, S)`` float32 camera-frame rays of every tile's pixels.
        zbuf, cbuf: ``(N * T, S)`` float32 / int32 nearest depth and its colour (overwritten).

    Returns the number of (drone, tile, box) work items.
    """
    n = rot.shape[0]
    num_boxes = center.shape[1]
    num_tiles = tiles_x * tiles_y
    s_count = tile_ray_x.shape[1]
    f32 = np.float32
    near = f32(near_clip_m)
    far = f32(far_clip_m)
    fx_, fy_ = f32(fx), f32(fy)
    u_off, v_off = f32(cx + 0.5), f32(cy + 0.5)
    wf, hf = f32(width), f32(height)
    inv_tw, inv_th = f32(1.0 / TILE_W), f32(1.0 / TILE_H)
    one, zero = f32(1.0), f32(0.0)
    inf = f32(np.inf)
    items = np.zeros(n, dtype=np.int64)
    for i in prange(n):
        for r in range(i * num_tiles, (i + 1) * num_tiles):
            for s in range(s_count):
                zbuf[r, s] = inf
        world = i // drones_per_world
        xs = np.empty(8, dtype=np.float32)
        ys = np.empty(8, dtype=np.float32)
        zs = np.empty(8, dtype=np.float32)
        proj = np.empty(6, dtype=np.float32)
        done = 0
        for b in range(num_boxes):
            if not valid[world, b]:
                continue
            cs = cos_yaw[world, b]
            sn = sin_yaw[world, b]
            # rows of camera -> box: box axis k in camera coordinates
            m00 = cs * rot[i, 0, 0] + sn * rot[i, 1, 0]
            m01 = cs * rot[i, 0, 1] + sn * rot[i, 1, 1]
            m02 = cs * rot[i, 0, 2] + sn * rot[i, 1, 2]
            m10 = cs * rot[i, 1, 0] - sn * rot[i, 0, 0]
            m11 = cs * rot[i, 1, 1] - sn * rot[i, 0, 1]
            m12 = cs * rot[i, 1, 2] - sn * rot[i, 0, 2]
            m20 = rot[i, 2, 0]
            m21 = rot[i, 2, 1]
            m22 = rot[i, 2, 2]
            r0 = org[i, 0] - center[world, b, 0]
            r1 = org[i, 1] - center[world, b, 1]
            r2 = org[i, 2] - center[world, b, 2]
            ob0 = cs * r0 + sn * r1  # camera in the box frame
            ob1 = cs * r1 - sn * r0
            ob2 = r2
            h0, h1, h2 = half[world, b, 0], half[world, b, 1], half[world, b, 2]
            # corners in camera coordinates
            cc0 = -(m00 * ob0 + m10 * ob1 + m20 * ob2)
            cc1 = -(m01 * ob0 + m11 * ob1 + m21 * ob2)
            cc2 = -(m02 * ob0 + m12 * ob1 + m22 * ob2)
            for c in range(8):
                s0, s1, s2 = corner_signs[c, 0], corner_signs[c, 1], corner_signs[c, 2]
                xs[c] = cc0 + s0 * (h0 * m00) + s1 * (h1 * m10) + s2 * (h2 * m20)
                ys[c] = cc1 + s0 * (h0 * m01) + s1 * (h1 * m11) + s2 * (h2 * m21)
                zs[c] = cc2 + s0 * (h0 * m02) + s1 * (h1 * m12) + s2 * (h2 * m22)
            _project_clipped(xs, ys, zs, fx_, fy_, u_off, v_off, near, proj)
            u0, v0, u1, v1 = proj[0], proj[1], proj[2], proj[3]
            if not (proj[4] > 0 and proj[5] <= far and u1 > 0 and u0 < wf and v1 > 0 and v0 < hf):
                continue
            tx0 = int(np.floor(min(max(u0, zero), wf - one) * inv_tw))
            tx1 = int(np.floor(min(max(u1, zero), wf - one) * inv_tw))
            ty0 = int(np.floor(min(max(v0, zero), hf - one) * inv_th))
            ty1 = int(np.floor(min(max(v1, zero), hf - one) * inv_th))
            span = tx1 - tx0 + 1
            cnt = span * (ty1 - ty0 + 1)
            done += cnt
            lo_x, lo_y, lo_z = -h0 - ob0, -h1 - ob1, -h2 - ob2
            hi_x, hi_y, hi_z = h0 - ob0, h1 - ob1, h2 - ob2
            crow = world * num_boxes + b
            col_px, col_nx = colors[crow, 0], colors[crow, 1]
            col_py, col_ny = colors[crow, 2], colors[crow, 3]
            col_pz, col_nz = colors[crow, 4], colors[crow, 5]
            for k in range(cnt):
                tile = (ty0 + k // span) * tiles_x + tx0 + k % span
                row = i * num_tiles + tile
                # branch-free body (selects only) so that LLVM vectorizes the pixel loop
                for s in range(s_count):
                    rx = tile_ray_x[tile, s]
                    ry = tile_ray_y[tile, s]
                    dx = m00 * rx + m01 * ry + m02
                    dy = m10 * rx + m11 * ry + m12
                    dz = m20 * rx + m21 * ry + m22
                    ix = one / dx
                    iy = one / dy
                    iz = one / dz
                    ax = lo_x * ix
                    bx = hi_x * ix
                    ay = lo_y * iy
                    by = hi_y * iy
                    az = lo_z * iz
                    bz = hi_z * iz
                    nx = _fmin(ax, bx)
                    ny = _fmin(ay, by)
                    nz = _fmin(az, bz)
                    t_yz = _fmax(ny, nz)
                    t_in = _fmax(nx, t_yz)
                    t_out = _fmin(_fmin(_fmax(ax, bx), _fmax(ay, by)), _fmax(az, bz))
                    # torch.clamp(t_in, min=near): NaN stays NaN
                    t_hit = near if t_in < near else t_in
                    old = zbuf[row, s]
                    upd = (t_out >= t_hit) & (t_hit <= far) & (t_hit < old)
                    cx_ = col_nx if dx > 0 else col_px
                    cy_ = col_ny if dy > 0 else col_py
                    cz_ = col_nz if dz > 0 else col_pz
                    color = cx_ if nx >= t_yz else (cy_ if ny >= nz else cz_)
                    zbuf[row, s] = t_hit if upd else old
                    cbuf[row, s] = color if upd else cbuf[row, s]
        items[i] = done
    return items.sum()


@njit(inline="always", cache=True)
def _box_point_in_camera(a0, a1, a2, cs, sn, c0, c1, c2, o0, o1, o2, rot):
    """The point at box-frame offset ``a`` of a yawed box, relative to the camera.

    Returns ``(r0, r1, r2, x, y, z)``: world-frame offset from the camera ``o`` and optical-frame
    coordinates. Box axes in the world: x = (cs, sn, 0), y = (-sn, cs, 0), z = (0, 0, 1); centre
    ``c``; ``rot (3, 3)`` world from camera. The torch code's float32 operation order.
    """
    zero, one = np.float32(0.0), np.float32(1.0)
    r0 = c0 + ((a0 * cs + a1 * -sn) + a2 * zero) - o0
    r1 = c1 + ((a0 * sn + a1 * cs) + a2 * zero) - o1
    r2 = c2 + ((a0 * zero + a1 * zero) + a2 * one) - o2
    x = r0 * rot[0, 0] + r1 * rot[1, 0] + r2 * rot[2, 0]
    y = r0 * rot[0, 1] + r1 * rot[1, 1] + r2 * rot[2, 1]
    z = r0 * rot[0, 2] + r1 * rot[1, 2] + r2 * rot[2, 2]
    return r0, r1, r2, x, y, z


@njit(inline="always", cache=True)
def _min_visible_count(ns, min_visible_fraction):
    """Fewest unoccluded samples (of ``ns``) that make a target visible (``ns + 1``: never).

    Visible needs ``f32(count) / ns >= min_visible_fraction`` and a positive fraction, both
    monotone in ``count``; the float32 arithmetic of the kernels.
    """
    inv_s = np.float32(1.0 / ns)
    min_vis = np.float32(min_visible_fraction)
    for c in range(1, ns + 1):
        if np.float32(c) * inv_s >= min_vis:
            return c
    return ns + 1


@njit(inline="always", cache=True)
def _candidate_occluders(
    w, c0, c1, c2, e0, e1, e2, o0, o1, o2, box_min, box_max, box_valid, ids
):  # fmt: skip
    """Indices (into ``ids``, returns their count) of the boxes that can block a target.

    A box can only cut a segment from the camera ``o`` to a point of the target (centre ``c``,
    world-axis half extents ``e`` of its yawed box) if it overlaps the bounding box of the
    camera and the target; the others are skipped. The margin (5 cm + 1e-4 of the span) is far
    beyond float32 rounding of the slab test, so skipping them changes no result.
    """
    n = 0
    for b in range(box_min.shape[1]):
        if not box_valid[w, b]:
            continue
        keep = True
        for a in range(3):
            o = o0 if a == 0 else (o1 if a == 1 else o2)
            c = c0 if a == 0 else (c1 if a == 1 else c2)
            e = e0 if a == 0 else (e1 if a == 1 else e2)
            lo = min(o, c - e)
            hi = max(o, c + e)
            m = 0.05 + 1e-4 * (hi - lo)
            if box_max[w, b, a] < lo - m or box_min[w, b, a] > hi + m:
                keep = False
        if keep:
            ids[n] = b
            n += 1
    return n


@njit(inline="always", cache=True)
def _unoccluded_samples(
    w, samples, h0, h1, h2, cs, sn, c0, c1, c2, o0, o1, o2, rot, box_min, box_max, ids, n_ids,
    fx_, fy_, u_off, v_off, near_, far_, wf, hf, stop_at,
):  # fmt: skip
    """Occlusion samples of one target in one camera: how many are in view and unoccluded.

    Each sample point inside the target box must be within the near/far clips and the image,
    and the segment from the optical centre to it must cross none of the boxes ``ids[:n_ids]``
    (exact slab test, float32 as the torch code). With ``stop_at`` in ``1..ns`` the count stops
    as soon as it is decided whether it reaches ``stop_at`` (for callers that need only that);
    ``stop_at > ns`` counts every sample.
    """
    one, zero = np.float32(1.0), np.float32(0.0)
    ns = samples.shape[0]
    count = 0
    for s in range(ns):
        if stop_at <= ns and (count >= stop_at or count + (ns - s) < stop_at):
            break
        a0 = samples[s, 0] * h0
        a1 = samples[s, 1] * h1
        a2 = samples[s, 2] * h2
        # s: segment camera -> point, world frame (for the occluder slab tests)
        s0, s1, s2, x, y, z = _box_point_in_camera(a0, a1, a2, cs, sn, c0, c1, c2, o0, o1, o2, rot)
        zs_ = z if z > zero else one
        u = fx_ * x / zs_ + u_off
        v = fy_ * y / zs_ + v_off
        if not (z >= near_ and z <= far_ and u >= zero and u < wf and v >= zero and v < hf):
            continue
        i0, i1, i2 = one / s0, one / s1, one / s2
        blocked = False
        for k in range(n_ids):
            b = ids[k]
            ta = (box_min[w, b, 0] - o0) * i0
            tb = (box_max[w, b, 0] - o0) * i0
            t_in = _fmin(ta, tb)
            t_out = _fmax(ta, tb)
            ta = (box_min[w, b, 1] - o1) * i1
            tb = (box_max[w, b, 1] - o1) * i1
            t_in = _fmax(t_in, _fmin(ta, tb))
            t_out = _fmin(t_out, _fmax(ta, tb))
            ta = (box_min[w, b, 2] - o2) * i2
            tb = (box_max[w, b, 2] - o2) * i2
            t_in = _fmax(t_in, _fmin(ta, tb))
            t_out = _fmin(t_out, _fmax(ta, tb))
            if t_in <= t_out and t_out > zero and t_in < one:
                blocked = True
                break
        if not blocked:
            count += 1
    return count


@njit(inline="always", cache=True)
def _project_target(
    h0, h1, h2, cs, sn, c0, c1, c2, o0, o1, o2, rot, corner_signs, fx_, fy_, u_off, v_off, near_,
    xs, ys, zs, proj,
):  # fmt: skip
    """Exact image bounds of one target box in one camera into ``proj`` (see _project_clipped)."""
    for c in range(8):
        _, _, _, xs[c], ys[c], zs[c] = _box_point_in_camera(
            corner_signs[c, 0] * h0, corner_signs[c, 1] * h1, corner_signs[c, 2] * h2,
            cs, sn, c0, c1, c2, o0, o1, o2, rot,
        )  # fmt: skip
    _project_clipped(xs, ys, zs, fx_, fy_, u_off, v_off, near_, proj)


@njit(inline="always", cache=True)
def _count_unoccluded(
    w, samples, h0, h1, h2, cs, sn, c0, c1, c2, o0, o1, o2, rot, box_min, box_max, box_valid, ids,
    fx_, fy_, u_off, v_off, near_, far_, wf, hf, stop_at,
):  # fmt: skip
    """How many occlusion samples of one target one camera sees unoccluded.

    :func:`_unoccluded_samples` against the occluders that :func:`_candidate_occluders` selects
    for this camera and target (``ids``: scratch of the box count).
    """
    e0 = abs(cs) * h0 + abs(sn) * h1  # world-axis half extents of the yawed box
    e1 = abs(sn) * h0 + abs(cs) * h1
    n_ids = _candidate_occluders(
        w, c0, c1, c2, e0, e1, h2, o0, o1, o2, box_min, box_max, box_valid, ids
    )
    return _unoccluded_samples(
        w, samples, h0, h1, h2, cs, sn, c0, c1, c2, o0, o1, o2, rot, box_min, box_max, ids, n_ids,
        fx_, fy_, u_off, v_off, near_, far_, wf, hf, stop_at,
    )  # fmt: skip


@njit(inline="always", cache=True)
def _in_view(proj, far_margin, eps, w_hi, h_hi):
    """Whether projected bounds ``proj`` (:func:`_project_clipped`) can be in the image.

    In front of the near plane, not beyond the far clip, overlapping the image (with margins).
    """
    return (
        proj[4] > 0
        and proj[5] <= far_margin
        and proj[2] >= -eps
        and proj[0] <= w_hi
        and proj[3] >= -eps
        and proj[1] <= h_hi
    )


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def detect_targets(
    org,
    rot,
    target_pos,
    target_size,
    cos_yaw,
    sin_yaw,
    target_class,
    target_valid,
    box_min,
    box_max,
    box_valid,
    samples,
    corner_signs,
    fx,
    fy,
    cx,
    cy,
    near,
    far,
    width,
    height,
    min_box_size_px,
    min_visible_fraction,
    boxes,
    in_front,
    visible,
    frac,
    depth,
    cls,
):
    """Ground-truth detections of every (camera, target) pair, written into the outputs.

    The loop-nest form of :func:`isr_sim_bridge.detections.project_targets` and
    :func:`~isr_sim_bridge.detections.occlusion_kernel` (same float32 arithmetic), parallel over
    cameras, reading each world's occluders in place (only those that can lie between the camera
    and the target). Shapes: ``org (W, D, 3)``,
    ``rot (W, D, 3, 3)`` (world from camera), targets ``(W, T, 3)`` / ``(W, T)`` (``cos_yaw``,
    ``sin_yaw`` precomputed), occluders ``(W, B, 3)`` / ``(W, B)``, ``samples (S, 3)``;
    outputs ``boxes (W, D, T, 4)``, ``in_front``/``visible`` bool, ``frac``/``depth`` float32,
    ``cls`` int64, all ``(W, D, T)``.
    """
    nw, nd = org.shape[0], org.shape[1]
    nt = target_pos.shape[1]
    ns = samples.shape[0]
    f32 = np.float32
    fx_, fy_ = f32(fx), f32(fy)
    u_off, v_off = f32(cx + 0.5), f32(cy + 0.5)
    near_, far_ = f32(near), f32(far)
    far_margin = f32(far + 1e-3 * (1.0 + far))
    eps = f32(1e-3)
    wf, hf = f32(width), f32(height)
    w_hi, h_hi = f32(width + 1e-3), f32(height + 1e-3)
    min_box = f32(min_box_size_px)
    min_vis = f32(min_visible_fraction)
    zero, half_ = f32(0.0), f32(0.5)
    inv_s = f32(1.0 / ns)
    total = nw * nd
    for chunk in prange((total + CHUNK - 1) // CHUNK):  # scratch arrays once per chunk
        xs = np.empty(8, dtype=np.float32)
        ys = np.empty(8, dtype=np.float32)
        zs = np.empty(8, dtype=np.float32)
        proj = np.empty(6, dtype=np.float32)
        ids = np.empty(box_min.shape[1], dtype=np.int64)
        for flat in range(chunk * CHUNK, min(total, (chunk + 1) * CHUNK)):
            w = flat // nd
            d = flat % nd
            o0, o1, o2 = org[w, d, 0], org[w, d, 1], org[w, d, 2]
            for t in range(nt):
                cs = cos_yaw[w, t]
                sn = sin_yaw[w, t]
                h0 = half_ * target_size[w, t, 0]
                h1 = half_ * target_size[w, t, 1]
                h2 = half_ * target_size[w, t, 2]
                c0, c1, c2 = target_pos[w, t, 0], target_pos[w, t, 1], target_pos[w, t, 2]
                _project_target(
                    h0, h1, h2, cs, sn, c0, c1, c2, o0, o1, o2, rot[w, d], corner_signs, fx_, fy_,
                    u_off, v_off, near_, xs, ys, zs, proj,
                )  # fmt: skip
                u0, v0, u1, v1 = proj[0], proj[1], proj[2], proj[3]
                front = proj[4] > 0
                valid = target_valid[w, t]
                cand = valid and _in_view(proj, far_margin, eps, w_hi, h_hi)
                u0 = min(max(u0, zero), wf)
                u1 = min(max(u1, zero), wf)
                v0 = min(max(v0, zero), hf)
                v1 = min(max(v1, zero), hf)
                if front:
                    boxes[w, d, t, 0] = u0
                    boxes[w, d, t, 1] = v0
                    boxes[w, d, t, 2] = u1
                    boxes[w, d, t, 3] = v1
                else:
                    boxes[w, d, t, 0] = zero
                    boxes[w, d, t, 1] = zero
                    boxes[w, d, t, 2] = zero
                    boxes[w, d, t, 3] = zero
                size_ok = (u1 - u0) >= min_box and (v1 - v0) >= min_box
                depth[w, d, t] = ((c0 - o0) * rot[w, d, 0, 2] + (c1 - o1) * rot[w, d, 1, 2]) + (
                    c2 - o2
                ) * rot[w, d, 2, 2]
                in_front[w, d, t] = front
                cls[w, d, t] = target_class[w, t] if valid else -1
                count = 0
                if cand:
                    count = _count_unoccluded(
                        w, samples, h0, h1, h2, cs, sn, c0, c1, c2, o0, o1, o2, rot[w, d], box_min,
                        box_max, box_valid, ids, fx_, fy_, u_off, v_off, near_, far_, wf, hf,
                        ns + 1,
                    )  # fmt: skip
                fr = f32(count) * inv_s
                frac[w, d, t] = fr
                visible[w, d, t] = valid and front and size_ok and fr >= min_vis and fr > zero


@njit(inline="always", cache=True)
def camera_pose_one(qw, qx, qy, qz, p0, p1, p2, mount_rot, mount_off, rot):
    """Camera pose of one drone: ``rot (3, 3)`` world from optical, returns the optical centre.

    ``camera.camera_pose`` for one body pose (quaternion wxyz FLU -> ENU, position ENU) in
    float32: ``rot = R(q) @ mount_rot``, centre ``p + R(q) @ mount_off``.
    """
    f32 = np.float32
    one, two = f32(1.0), f32(2.0)
    xx, yy, zz = qx * qx, qy * qy, qz * qz
    xy, xz, yz = qx * qy, qx * qz, qy * qz
    wx, wy, wz = qw * qx, qw * qy, qw * qz
    r00, r01, r02 = one - two * (yy + zz), two * (xy - wz), two * (xz + wy)
    r10, r11, r12 = two * (xy + wz), one - two * (xx + zz), two * (yz - wx)
    r20, r21, r22 = two * (xz - wy), two * (yz + wx), one - two * (xx + yy)
    for k in range(3):
        m0, m1, m2 = mount_rot[0, k], mount_rot[1, k], mount_rot[2, k]
        rot[0, k] = r00 * m0 + r01 * m1 + r02 * m2
        rot[1, k] = r10 * m0 + r11 * m1 + r12 * m2
        rot[2, k] = r20 * m0 + r21 * m1 + r22 * m2
    f0, f1, f2 = mount_off[0], mount_off[1], mount_off[2]
    return (
        p0 + (r00 * f0 + r01 * f1 + r02 * f2),
        p1 + (r10 * f0 + r11 * f1 + r12 * f2),
        p2 + (r20 * f0 + r21 * f1 + r22 * f2),
    )


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def visible_targets(
    pos,
    quat,
    mount_rot,
    mount_off,
    target_pos,
    target_size,
    cos_yaw,
    sin_yaw,
    target_valid,
    box_min,
    box_max,
    box_valid,
    samples,
    corner_signs,
    fx,
    fy,
    cx,
    cy,
    near,
    far,
    width,
    height,
    min_box_size_px,
    min_visible_fraction,
    boxes,
    visible,
):
    """Which targets each drone detects, and their boxes: what an environment step needs.

    The same decisions as :func:`detect_targets` for body poses ``pos (W, D, 3)``,
    ``quat (W, D, 4)`` and the camera mount (``camera_pose_one``), computing only ``visible``
    ``(W, D, T)`` and the ``boxes (W, D, T, 4)`` of visible targets (zero elsewhere), which
    allows three shortcuts: a target whose bounding sphere lies wholly behind the near plane,
    beyond the far clip or outside one side of the view (with a margin far beyond rounding) is
    not projected; occluders are pre-selected per target (as in :func:`detect_targets`); the
    occlusion samples stop once the answer is decided.
    """
    nw, nd = pos.shape[0], pos.shape[1]
    nt = target_pos.shape[1]
    ns = samples.shape[0]
    f32 = np.float32
    fx_, fy_ = f32(fx), f32(fy)
    u_off, v_off = f32(cx + 0.5), f32(cy + 0.5)
    near_, far_ = f32(near), f32(far)
    far_margin = f32(far + 1e-3 * (1.0 + far))
    eps = f32(1e-3)
    wf, hf = f32(width), f32(height)
    w_hi, h_hi = f32(width + 1e-3), f32(height + 1e-3)
    min_box = f32(min_box_size_px)
    zero, half_ = f32(0.0), f32(0.5)
    stop_at = _min_visible_count(ns, min_visible_fraction)
    # side planes of the view through the optical centre (unit normals, outward), as
    # (n_x, n_y, n_z): outside when n . p > 0 (right, left, bottom, top edges with the margins)
    # (normal (n_a, 0, n_z) for the left/right edges, (0, n_a, n_z) for the top/bottom ones)
    nr_z, nl_z = -(width + 1e-3 - (cx + 0.5)), -((cx + 0.5) + 1e-3)
    nb_z, nt_z = -(height + 1e-3 - (cy + 0.5)), -((cy + 0.5) + 1e-3)
    inv = 1.0 / np.sqrt(fx * fx + nr_z * nr_z)
    nr_x, nr_z = fx * inv, nr_z * inv
    inv = 1.0 / np.sqrt(fx * fx + nl_z * nl_z)
    nl_x, nl_z = -fx * inv, nl_z * inv
    inv = 1.0 / np.sqrt(fy * fy + nb_z * nb_z)
    nb_y, nb_z = fy * inv, nb_z * inv
    inv = 1.0 / np.sqrt(fy * fy + nt_z * nt_z)
    nt_y, nt_z = -fy * inv, nt_z * inv
    # bounding-sphere radius of every target box (generous margin)
    radius = np.empty((nw, nt))
    for w in range(nw):
        for t in range(nt):
            h0, h1, h2 = target_size[w, t, 0], target_size[w, t, 1], target_size[w, t, 2]
            radius[w, t] = 1.001 * 0.5 * np.sqrt(float(h0 * h0 + h1 * h1 + h2 * h2)) + 1e-3
    total = nw * nd
    for chunk in prange((total + CHUNK - 1) // CHUNK):  # scratch arrays once per chunk
        xs = np.empty(8, dtype=np.float32)
        ys = np.empty(8, dtype=np.float32)
        zs = np.empty(8, dtype=np.float32)
        proj = np.empty(6, dtype=np.float32)
        ids = np.empty(box_min.shape[1], dtype=np.int64)
        rot = np.empty((3, 3), dtype=np.float32)
        for flat in range(chunk * CHUNK, min(total, (chunk + 1) * CHUNK)):
            w = flat // nd
            d = flat % nd
            o0, o1, o2 = camera_pose_one(
                quat[w, d, 0], quat[w, d, 1], quat[w, d, 2], quat[w, d, 3],
                pos[w, d, 0], pos[w, d, 1], pos[w, d, 2], mount_rot, mount_off, rot,
            )  # fmt: skip
            r00, r01, r02 = float(rot[0, 0]), float(rot[0, 1]), float(rot[0, 2])
            r10, r11, r12 = float(rot[1, 0]), float(rot[1, 1]), float(rot[1, 2])
            r20, r21, r22 = float(rot[2, 0]), float(rot[2, 1]), float(rot[2, 2])
            for t in range(nt):
                for k in range(4):
                    boxes[w, d, t, k] = zero
                visible[w, d, t] = False
                if not target_valid[w, t]:
                    continue
                c0, c1, c2 = target_pos[w, t, 0], target_pos[w, t, 1], target_pos[w, t, 2]
                # bounding sphere in the optical frame (float64)
                e0, e1, e2 = float(c0 - o0), float(c1 - o1), float(c2 - o2)
                z = e0 * r02 + e1 * r12 + e2 * r22
                rad = radius[w, t]
                if z + rad < near or z - rad > far_margin:
                    continue
                x = e0 * r00 + e1 * r10 + e2 * r20
                if nr_x * x + nr_z * z > rad or nl_x * x + nl_z * z > rad:
                    continue
                y = e0 * r01 + e1 * r11 + e2 * r21
                if nb_y * y + nb_z * z > rad or nt_y * y + nt_z * z > rad:
                    continue
                h0 = half_ * target_size[w, t, 0]
                h1 = half_ * target_size[w, t, 1]
                h2 = half_ * target_size[w, t, 2]
                cs = cos_yaw[w, t]
                sn = sin_yaw[w, t]
                _project_target(
                    h0, h1, h2, cs, sn, c0, c1, c2, o0, o1, o2, rot, corner_signs, fx_, fy_,
                    u_off, v_off, near_, xs, ys, zs, proj,
                )  # fmt: skip
                if not _in_view(proj, far_margin, eps, w_hi, h_hi):
                    continue
                u0, v0, u1, v1 = proj[0], proj[1], proj[2], proj[3]
                u0 = min(max(u0, zero), wf)
                u1 = min(max(u1, zero), wf)
                v0 = min(max(v0, zero), hf)
                v1 = min(max(v1, zero), hf)
                if not ((u1 - u0) >= min_box and (v1 - v0) >= min_box):
                    continue
                count = _count_unoccluded(
                    w, samples, h0, h1, h2, cs, sn, c0, c1, c2, o0, o1, o2, rot, box_min, box_max,
                    box_valid, ids, fx_, fy_, u_off, v_off, near_, far_, wf, hf, stop_at,
                )  # fmt: skip
                if count >= stop_at:
                    visible[w, d, t] = True
                    boxes[w, d, t, 0] = u0
                    boxes[w, d, t, 1] = v0
                    boxes[w, d, t, 2] = u1
                    boxes[w, d, t, 3] = v1


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def shade(
    zbuf,
    cbuf,
    rot,
    org,
    ray_x,
    ray_y,
    tile_ray_inv_norm,
    tex,
    drones_per_world,
    tiles_x,
    near_clip_m,
    far_clip_m,
    lod_scale,
    num_mip_levels,
    tex_hx,
    tex_hy,
    tex_level_sizes,
    x_min_m,
    y_min_m,
    texture_res_m,
    sky_horizon_rgb,
    sky_zenith_rgb,
    rgba,
    depth,
    with_depth,
):
    """Per-pixel ground, texture, box colour and sky, written row-major into ``rgba``/``depth``.

    The loop-nest form of ``camera._shade_kernel`` (same float32 arithmetic and bit tricks),
    reading the tile-major box buffers ``zbuf``/``cbuf``
    ``(N * T, S)`` and writing the padded image row-major (no permute pass).
    ``ray_x (Wp,)``/``ray_y (Hp,)`` are the per-column / per-row camera-frame ray components,
    ``tile_ray_inv_norm (T, S)`` the inverse ray norms; ``rot (N, 9)``, ``org (N, 3)``;
    ``tex`` the packed texture pyramid; outputs ``rgba (N, Hp, Wp)`` int32 and, when
    ``with_depth``, ``depth (N, Hp, Wp)`` float32 (whole tiles: the caller crops).
    """
    n, height, width = rgba.shape  # the padded image (whole tiles)
    num_tiles = zbuf.shape[0] // n
    f32 = np.float32
    near, far = f32(near_clip_m), f32(far_clip_m)
    lod = f32(lod_scale)
    top_level = np.int32(num_mip_levels - 1)
    inv_res = f32(1.0 / texture_res_m)
    x0, y0 = f32(x_min_m), f32(y_min_m)
    one, zero, half_ = f32(1.0), f32(0.0), f32(0.5)
    big = f32(1 << 24)
    inf = f32(np.inf)
    alpha = np.int32(-(1 << 24))
    i32 = np.int32
    s0, s1, s2 = i32(tex_level_sizes[0]), i32(tex_level_sizes[1]), i32(tex_level_sizes[2])
    hx1, hy1 = i32(tex_hx - 1), i32(tex_hy - 1)
    uniform_sky = (
        sky_horizon_rgb[0] == sky_zenith_rgb[0]
        and sky_horizon_rgb[1] == sky_zenith_rgb[1]
        and sky_horizon_rgb[2] == sky_zenith_rgb[2]
    )
    h0, h1, h2 = f32(sky_horizon_rgb[0]), f32(sky_horizon_rgb[1]), f32(sky_horizon_rgb[2])
    d0 = f32(sky_zenith_rgb[0] - sky_horizon_rgb[0])
    d1 = f32(sky_zenith_rgb[1] - sky_horizon_rgb[1])
    d2 = f32(sky_zenith_rgb[2] - sky_horizon_rgb[2])
    flat_sky = (
        np.int32(np.floor(h0 + zero + half_))
        | (np.int32(np.floor(h1 + zero + half_)) << 8)
        | (np.int32(np.floor(h2 + zero + half_)) << 16)
        | alpha
    )
    for i in prange(n):
        world = i32(i // drones_per_world)
        r0, r1, r2 = rot[i, 0], rot[i, 1], rot[i, 2]
        r3, r4, r5 = rot[i, 3], rot[i, 4], rot[i, 5]
        r6, r7, r8 = rot[i, 6], rot[i, 7], rot[i, 8]
        o0, o1, o2 = org[i, 0], org[i, 1], org[i, 2]
        neg_o2 = -o2
        for v in range(height):
            ry = ray_y[v]
            trow = i * num_tiles + (v // TILE_H) * tiles_x
            srow = (v % TILE_H) * TILE_W
            for tx in range(tiles_x):
                row = trow + tx
                # one tile row: TILE_W contiguous lanes, a fixed-length loop LLVM vectorizes
                for lane in range(TILE_W):
                    u = tx * TILE_W + lane
                    rx = ray_x[u]
                    s = srow + lane
                    dx = r0 * rx + r1 * ry + r2
                    dy = r3 * rx + r4 * ry + r5
                    dz = r6 * rx + r7 * ry + r8
                    t_g = neg_o2 / dz
                    zb = zbuf[row, s]
                    # branch-free (selects only), so that LLVM vectorizes the pixel loop
                    ground = (dz < zero) & (t_g >= near) & (t_g <= far) & (t_g < zb)
                    box_hit = zb <= far
                    tg = t_g if ground else one
                    gx = o0 + tg * dx
                    gy = o1 + tg * dy
                    # mip level = floor(log2(x)) from the float's exponent bits (as in torch)
                    fp = tg * lod
                    bits = np.float32(fp).view(np.int32)
                    lvl = min(max((bits >> i32(23)) - i32(127), i32(0)), top_level)
                    sc = i32((127 - lvl) << 23).view(np.float32) * inv_res  # 2**-lvl / res
                    wl = (hx1 >> lvl) + i32(1)
                    hl = (hy1 >> lvl) + i32(1)
                    ix = np.int32(min(max((gx - x0) * sc + one, zero), big))
                    iy = np.int32(min(max((gy - y0) * sc + one, zero), big))
                    ix = min(ix, wl + 1)
                    iy = min(iy, hl + 1)
                    off = np.int32(lvl > 0) * (s0 - s2) + np.int32(lvl > 1) * (s1 - s2) + lvl * s2
                    bx = (wl + 5) >> 2
                    by = (hl + 5) >> 2
                    blk = (world * by + (iy >> 2)) * bx + (ix >> 2)
                    c_ground = tex[off + (blk << 4) + ((iy & 3) << 2) + (ix & 3)]
                    e = min(max(dz * tile_ray_inv_norm[row - i * num_tiles, s], zero), one)
                    c_sky = (
                        np.int32(np.floor(h0 + d0 * e + half_))
                        | (np.int32(np.floor(h1 + d1 * e + half_)) << 8)
                        | (np.int32(np.floor(h2 + d2 * e + half_)) << 16)
                        | alpha
                    )
                    c_sky = flat_sky if uniform_sky else c_sky
                    rgba[i, v, u] = (
                        c_ground if ground else (cbuf[row, s] | alpha if box_hit else c_sky)
                    )
                    if with_depth:
                        depth[i, v, u] = t_g if ground else (zb if box_hit else inf)


@njit(cache=True, error_model="numpy", boundscheck=False)
def advance_targets(path, path_len, speed, valid, path_s, pos, yaw, dt_s):
    """:func:`isr_sim_bridge.world.advance_targets` as a loop over (world, target), in place.

    Shapes: ``path (W, T, P, 2)``, ``path_len (W, T)`` int, ``speed (W, T)``, ``valid (W, T)``
    bool; updated: ``path_s (W, T)`` (arc-length state), ``pos (W, T, 3)`` (x, y), ``yaw
    (W, T)``. The torch code's float32 arithmetic (its cumulative sum accumulates in float64, as
    ATen's does); ``atan2`` may differ in the last bit.
    """
    nw, nt, npts = path.shape[0], path.shape[1], path.shape[2]
    f32 = np.float32
    pi = f32(np.pi)
    two_pi = f32(2.0 * np.pi)
    dt = f32(dt_s)
    zero, one = f32(0.0), f32(1.0)
    for w in range(nw):
        for t in range(nt):
            n_pts = path_len[w, t]
            n_seg = min(n_pts - 1, npts - 1)
            acc = 0.0
            for k in range(max(n_seg, 0)):
                dx = path[w, t, k + 1, 0] - path[w, t, k, 0]
                dy = path[w, t, k + 1, 1] - path[w, t, k, 1]
                acc += np.sqrt(dx * dx + dy * dy)
            total = f32(acc)
            if not (valid[w, t] and speed[w, t] > 0 and n_pts >= 2 and total > 0):
                continue
            period = max(f32(2.0) * total, f32(1e-6))
            s = remainder(path_s[w, t] + speed[w, t] * dt, period)
            forward = s < total
            d = s if forward else period - s
            # segment k: the number of segments ending at or before d, clamped to the last one
            acc = 0.0
            k = 0
            end = zero
            seg = zero
            for j in range(n_seg):
                dx = path[w, t, j + 1, 0] - path[w, t, j, 0]
                dy = path[w, t, j + 1, 1] - path[w, t, j, 1]
                seg = np.sqrt(dx * dx + dy * dy)
                acc += seg
                end = f32(acc)
                k = j
                if not end <= d:
                    break
            start = end - seg
            vx = path[w, t, k + 1, 0] - path[w, t, k, 0]
            vy = path[w, t, k + 1, 1] - path[w, t, k, 1]
            frac = min(max((d - start) / max(seg, f32(1e-9)), zero), one)
            path_s[w, t] = s
            pos[w, t, 0] = path[w, t, k, 0] + frac * vx
            pos[w, t, 1] = path[w, t, k, 1] + frac * vy
            a = np.arctan2(vy, vx) + (zero if forward else pi)
            yaw[w, t] = remainder(a + pi, two_pi) - pi


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def voronoi_parcels(xs, ys, cx, cy, best, second, owner):
    """Nearest and second-nearest squared distance and owner of every texel (world generation).

    ``xs (nx,)``, ``ys (ny,)`` texel centres and ``cx, cy (K,)`` parcel seeds, float32; writes
    ``best``, ``second`` (float32) and ``owner`` (int32), ``(ny, nx)``. The same float32 operations
    and tie rule as the numpy loop of :func:`isr_sim_bridge.world.render_ground` (seeds in order,
    strict ``<``), so the ground texture is bit-identical; parallel over rows.
    """
    ny, nx = best.shape
    inf = np.float32(np.inf)
    for i in prange(ny):
        y = ys[i]
        for j in range(nx):
            x = xs[j]
            b, s, o = inf, inf, 0
            for k in range(cx.shape[0]):
                dx = x - cx[k]
                dy = y - cy[k]
                d = dx * dx + dy * dy
                if d < b:
                    s, o, b = b, k, d
                elif d < s:
                    s = d
            best[i, j], second[i, j], owner[i, j] = b, s, o
