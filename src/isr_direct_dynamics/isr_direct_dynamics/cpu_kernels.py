"""Numba CPU kernel of the full-fidelity quadrotor's control step (PX4 cascade + 6-DoF physics).

:class:`~isr_direct_dynamics.quadrotor.QuadrotorModel` runs ``control_dt_s / physics_dt_s`` (25 by
default) physics steps per control step, each a controller update, motor lag and rigid-body
integration. In torch that is ~100 small tensor operations per physics step, i.e. ~2,500 kernel
launches per control step whatever the number of drones: on a CPU the per-operation overhead
dominates and a control step of 20 drones takes ~25 ms. :func:`quadrotor_control_step` runs the
same equations as one loop nest per drone (parallel over drones with ``numba.prange``), all
physics steps of the control step in registers.

It is a line-by-line transcription of ``QuadrotorModel._substep`` and of
``PX4MulticopterController.velocity_loop`` / ``attitude_loop`` / ``rate_loop`` / ``allocate``
(see their docstrings for the PX4 references), computed in float64 and stored back in float32:
the tests fly both implementations side by side with gusts, sensor noise, tilt and motor
saturation, takeoff and landing, for both airframe presets, and require the trajectories to
agree to float32 rounding. Used on CPU only (``QuadrotorConfig.cpu_kernels``); on CUDA the torch
code runs. Compiled code is cached on disk (``cache=True``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from . import threads as _threads

CHUNK = 32
"""Drones per parallel work item of the per-drone kernels (their scratch arrays are allocated
once per chunk, not per drone); the task and camera kernel modules use the same."""

try:  # pragma: no branch - numba is in requirements.txt
    import numba
    from numba import njit, prange

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only without numba
    numba = None
    AVAILABLE = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        """Stand-in without numba: kernels stay plain functions, never called.

        Every wrapper checks ``AVAILABLE``; the other packages' kernel modules import
        ``AVAILABLE``, ``njit`` and ``prange`` from here.
        """

        def wrap(fn):
            return fn

        return wrap

    prange = range  # type: ignore[assignment]


def as_numpy(tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor for a kernel argument (a contiguous copy when it is not)."""
    if tensor.requires_grad or not tensor.is_contiguous():
        tensor = tensor.detach().contiguous()
    return tensor.numpy()


@contextmanager
def threads_for(work_items: int, min_parallel: int) -> Iterator[None]:
    """Run the numba kernels in this block on the threads the machine has free for them.

    First brings numba's thread count (per calling thread) to
    :func:`isr_direct_dynamics.threads.current_threads`: fewer threads than cores when other
    processes keep cores busy (see :mod:`isr_direct_dynamics.threads`). Then, since waking
    numba's worker threads costs tens of microseconds per parallel region, runs the block on one
    thread below ``min_parallel`` work items (drones, cameras, ...). Used by every kernel wrapper
    of the workspace.
    """
    if numba is None:
        yield
        return
    count = min(_threads.current_threads(), numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != count:
        numba.set_num_threads(count)
    if work_items >= min_parallel or count == 1:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


# Layout of the packed float64 constants (``consts``) of :func:`quadrotor_control_step`.
(
    C_DT, C_G, C_VEL_DT, C_VELD_ALPHA, C_G_TAN_TILT, C_ARW_GAIN, C_THR_MAX_SQ, C_THR_MIN,
    C_THR_MAX, C_THR_XY_MARG, C_HALF_YAW_W, C_NEG_I_FACTOR_SQ, C_YAW_MAX, C_THR_FAC,
    C_GYRO_B0, C_GYRO_A1, C_GYRO_A2, C_DGYRO_B0, C_DGYRO_A1, C_DGYRO_A2, C_MAX_V, C_MAX_VZ,
    C_MAX_YAW_RATE, C_CLIP_NORM, C_XY_VEL_MAX, C_Z_VEL_UP, C_Z_VEL_DN,
) = range(27)  # fmt: skip
NUM_CONSTS = 27
MIN_PARALLEL_DRONES = 48
"""Below this many drones :func:`quadrotor_control_step` runs on one thread (see
:func:`threads_for`; a drone's control step is ~8 us of work)."""
# Rows of the packed per-axis constants (``axis_consts``, (ROWS, 3)).
(
    A_VEL_P, A_VEL_I_DT, A_VEL_NEG_D, A_ATT_2P, A_RATE_MAX, A_RATE_P, A_RATE_I_DT, A_RATE_NEG_D,
    A_RATE_FF, A_RATE_INT_LIM,
) = range(10)  # fmt: skip
NUM_AXIS_CONSTS = 10
# Bits of ``flags``.
F_HAS_VEL_D, F_HAS_FF, F_QUADRATIC, F_ASYM_MOTOR, F_NOISE, F_GYRO_LP, F_DGYRO_LP = (
    1, 2, 4, 8, 16, 32, 64,
)  # fmt: skip


@njit(inline="always", cache=True)
def _desaturation_gain(u, inv_d, hi):
    """``k_min + k_max`` over the motors outside ``[0, hi]`` (PX4's computeDesaturationGain)."""
    kmin = 0.0
    kmax = 0.0
    for m in range(4):
        k = (min(max(u[m], 0.0), hi) - u[m]) * inv_d[m]
        if m == 0 or k < kmin:
            kmin = k
        if m == 0 or k > kmax:
            kmax = k
    return min(kmin, 0.0) + max(kmax, 0.0)


@njit(inline="always", cache=True)
def _desaturate(u, d, inv_d, hi, reduce_only):
    """ControlAllocationSequentialDesaturation::desaturateActuators along mix column ``d``.

    The gain applied once, then half of the recomputed gain; ``reduce_only`` (thrust) skips both
    when the first gain would raise the thrust.
    """
    gain = _desaturation_gain(u, inv_d, hi)
    keep = 0.0 if reduce_only and not gain <= 0.0 else 1.0
    for m in range(4):
        u[m] += gain * keep * d[m]
    gain2 = _desaturation_gain(u, inv_d, hi) * keep
    for m in range(4):
        u[m] += 0.5 * gain2 * d[m]


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def quadrotor_control_step(
    pos, vel, quat, rates, yaw_out, motor, ang_accel, contact, contact_any, motor_cmd,
    vel_int, vel_prev, vel_dot, rate_int, sat_lo, sat_hi, att_sp, thrust_sp, yaw_rate_state,
    landed, flying, rate_sp_out, torque_sp_out, gyro_d1, gyro_d2, dgyro_d1, dgyro_d2,
    action, wind_mean, gust, drag_over_m, ground, noise, vel_noise_std, gyro_noise_std,
    hover_thrust, alpha_down, alpha_diff, force_scale, neg_drag_over_m, neg_damp_over_i,
    neg_gyro_coef, force_map, mix, inv_d, eff, consts, axis_consts, flags, steps, tick0,
    decimation,
):  # fmt: skip
    """All physics steps of one control step for every drone, updating the state in place.

    Arrays are the model's and controller's tensors (float32 unless said). Vehicle state (views
    of the model's ``VehicleState``, updated in place): ``pos, vel, rates (N, 3)``, ``quat (N, 4)``
    wxyz, ``yaw_out (N,)`` (output, wrapped to ``[-pi, pi)``). Internal state, component-major:
    ``ang_accel (3, N)``, ``motor, motor_cmd (4, N)``, ``contact (N,)`` bool (latest step),
    ``contact_any (N,)`` bool (any step, output). Controller state: ``vel_int, vel_prev, vel_dot,
    rate_int, sat_lo, sat_hi (3, N)``, ``att_sp (3, 2, N)``, ``thrust_sp, yaw_rate_state (N,)``,
    ``landed (N,)`` bool, ``flying (N,)``, ``rate_sp_out, torque_sp_out (3, N)``, biquad delays
    ``gyro_d1 ... dgyro_d2 (3, N)``. Inputs: ``action (N, 4)`` (clean, normalized; scaled with
    the workspace's limits and PX4's ``MPC_*_VEL_MAX`` here, as ``scale_action`` and
    ``limit_velocity_setpoint``), ``wind_mean (N, 3)``, ``gust (3, N)``, ``drag_over_m (N,)``,
    ``ground (N,)``, ``noise (steps, 2, 3, N)`` standard normal draws (velocity, gyro; unused
    without ``F_NOISE``). Per-drone parameters: ``hover_thrust, alpha_down, alpha_diff,
    neg_drag_over_m (N,)``, ``force_scale (4, N)``, ``neg_damp_over_i, neg_gyro_coef (3, N)``.
    Allocation:
    ``force_map (4, 4)``, ``mix (4, 4)`` (motors x axes), ``inv_d (4 axes, 4 motors)``, ``eff (3,
    4)``. ``consts`` / ``axis_consts``: float64 packed as the ``C_*`` / ``A_*`` indices;
    ``flags``: the ``F_*`` bits. The velocity loop runs at physics tick ``tick0 + k`` when that
    is a multiple of ``decimation``.
    """
    n = pos.shape[0]
    dt = consts[C_DT]
    g = consts[C_G]
    half_dt = 0.5 * dt
    has_vel_d = (flags & F_HAS_VEL_D) != 0
    has_ff = (flags & F_HAS_FF) != 0
    quadratic = (flags & F_QUADRATIC) != 0
    asym = (flags & F_ASYM_MOTOR) != 0
    use_noise = (flags & F_NOISE) != 0
    gyro_lp = (flags & F_GYRO_LP) != 0
    dgyro_lp = (flags & F_DGYRO_LP) != 0
    inv_vel_dt = 1.0 / consts[C_VEL_DT]
    inv_g2 = 1.0 / (g * g)
    thr_fac = consts[C_THR_FAC]
    fac_a = (1.0 - thr_fac) / (2.0 * thr_fac) if thr_fac > 0.0 else 0.0
    for i in prange(n):
        p = np.empty(3)
        v = np.empty(3)
        w = np.empty(3)
        aa = np.empty(3)
        q = np.empty(4)
        mot = np.empty(4)
        u = np.empty(4)
        vi = np.empty(3)
        vp = np.empty(3)
        vd = np.empty(3)
        ri = np.empty(3)
        slo = np.empty(3)
        shi = np.empty(3)
        zd = np.empty(3)
        xd = np.empty(3)
        g1 = np.empty(3)
        g2 = np.empty(3)
        h1 = np.empty(3)
        h2 = np.empty(3)
        vsp = np.empty(3)
        aext = np.empty(3)
        rot = np.empty((3, 3))
        err = np.empty(3)
        rsp = np.empty(3)
        tq = np.empty(3)
        acc4 = np.empty(4)
        f = np.empty(4)
        colm = np.empty(4)
        for k in range(3):
            p[k] = pos[i, k]
            v[k] = vel[i, k]
            w[k] = rates[i, k]
            aa[k] = ang_accel[k, i]
            vi[k] = vel_int[k, i]
            vp[k] = vel_prev[k, i]
            vd[k] = vel_dot[k, i]
            ri[k] = rate_int[k, i]
            slo[k] = sat_lo[k, i]
            shi[k] = sat_hi[k, i]
            zd[k] = att_sp[k, 0, i]
            xd[k] = att_sp[k, 1, i]
            g1[k] = gyro_d1[k, i]
            g2[k] = gyro_d2[k, i]
            h1[k] = dgyro_d1[k, i]
            h2[k] = dgyro_d2[k, i]
            aext[k] = -g if k == 2 else 0.0
            aext[k] += (wind_mean[i, k] + gust[k, i]) * drag_over_m[i]
            rsp[k] = rate_sp_out[k, i]
            tq[k] = torque_sp_out[k, i]
        for k in range(4):
            q[k] = quat[i, k]
            mot[k] = motor[k, i]
            u[k] = motor_cmd[k, i]
        # setpoints: the workspace's action scaling, then PX4's velocity limits
        sx = action[i, 0] * consts[C_MAX_V]
        sy = action[i, 1] * consts[C_MAX_V]
        if consts[C_CLIP_NORM] > 0.0:
            fac = min(consts[C_MAX_V] / max(math.hypot(sx, sy), 1e-9), 1.0)
            sx, sy = sx * fac, sy * fac
        fac = min(consts[C_XY_VEL_MAX] / max(math.hypot(sx, sy), 1e-9), 1.0)
        vsp[0], vsp[1] = sx * fac, sy * fac
        vsp[2] = min(max(action[i, 2] * consts[C_MAX_VZ], -consts[C_Z_VEL_DN]), consts[C_Z_VEL_UP])
        yr_cmd = action[i, 3] * consts[C_MAX_YAW_RATE]
        wants_climb = vsp[2] > 0.0
        in_contact = contact[i]
        any_contact = False
        thr_sp = float(thrust_sp[i])
        yr_state = float(yaw_rate_state[i])
        is_landed = landed[i]
        fly = float(flying[i])
        hover = float(hover_thrust[i])
        gnd = float(ground[i])
        a_down = float(alpha_down[i])
        a_diff = float(alpha_diff[i])
        ndrag = float(neg_drag_over_m[i])
        for step in range(steps):
            # ---- rotation matrix (rotmat_from_quat)
            qw, qx, qy, qz = q[0], q[1], q[2], q[3]
            x2, y2, z2 = qx + qx, qy + qy, qz + qz
            sxx, syy, szz = qx * x2, qy * y2, qz * z2
            cxy, cyz, czx = x2 * qy, y2 * qz, z2 * qx
            wz2, wx2, wy2 = z2 * qw, x2 * qw, y2 * qw
            ssum = sxx + syy + szz
            rot[0, 0] = (sxx + 1.0) - ssum
            rot[1, 1] = (syy + 1.0) - ssum
            rot[2, 2] = (szz + 1.0) - ssum
            rot[0, 1] = cxy - wz2
            rot[1, 2] = cyz - wx2
            rot[2, 0] = czx - wy2
            rot[1, 0] = cxy + wz2
            rot[2, 1] = cyz + wx2
            rot[0, 2] = czx + wy2

            # ---- velocity loop (PX4ControllerConfig.velocity_loop_decimation)
            if (tick0 + step) % decimation == 0:
                landed_now = in_contact and not wants_climb
                for k in range(3):
                    vm = v[k] + vel_noise_std * noise[step, 0, k, i] if use_noise else v[k]
                    if has_vel_d:
                        raw = (vm - vp[k]) * inv_vel_dt
                        vd[k] = vd[k] + consts[C_VELD_ALPHA] * (raw - vd[k])
                        vp[k] = vm
                    err[k] = vsp[k] - vm
                ax = vi[0] + err[0] * axis_consts[A_VEL_P, 0]
                ay = vi[1] + err[1] * axis_consts[A_VEL_P, 1]
                az = vi[2] + err[2] * axis_consts[A_VEL_P, 2]
                if has_vel_d:
                    ax += vd[0] * axis_consts[A_VEL_NEG_D, 0]
                    ay += vd[1] * axis_consts[A_VEL_NEG_D, 1]
                    az += vd[2] * axis_consts[A_VEL_NEG_D, 2]
                acc_h = math.hypot(ax, ay)
                k_tilt = min(consts[C_G_TAN_TILT] / max(acc_h, 1e-9), 1.0)
                inv_n = 1.0 / math.sqrt(g * g + acc_h * acc_h * (k_tilt * k_tilt))
                coll = max((az + g) * hover * inv_g2 / inv_n, consts[C_THR_MIN])
                s = coll * inv_n
                ks = k_tilt * s
                thr_xy_n = acc_h * ks
                thr_z = g * s
                err_z = err[2]
                if (thr_z <= consts[C_THR_MIN] and err_z <= 0.0) or (
                    thr_z >= consts[C_THR_MAX] and err_z >= 0.0
                ):
                    err_z = 0.0
                alloc_h = min(thr_xy_n, consts[C_THR_XY_MARG])
                thr_z = min(thr_z, math.sqrt(max(consts[C_THR_MAX_SQ] - alloc_h * alloc_h, 0.0)))
                thr_xy_max = math.sqrt(max(consts[C_THR_MAX_SQ] - thr_z * thr_z, 0.0))
                ks = ks * min(thr_xy_max / max(thr_xy_n, 1e-9), 1.0)
                tx, ty = ax * ks, ay * ks
                acc_prod_scale = ks * (g / hover)
                sat = 1.0 if acc_prod_scale < 1.0 else 0.0
                arw = (1.0 - acc_prod_scale) * sat * consts[C_ARW_GAIN]
                vi[0] += (err[0] - ax * arw) * axis_consts[A_VEL_I_DT, 0]
                vi[1] += (err[1] - ay * arw) * axis_consts[A_VEL_I_DT, 1]
                vi[2] += err_z * axis_consts[A_VEL_I_DT, 2]
                vi[2] = min(max(vi[2], -g), g)
                fly = 0.0 if landed_now else 1.0
                for k in range(3):
                    vi[k] *= fly
                # attitude setpoint: body z along the thrust, heading = current yaw
                t0, t1, t2 = tx * fly, ty * fly, thr_z * fly + 1e-6
                inv_t = 1.0 / math.sqrt(t0 * t0 + t1 * t1 + t2 * t2)
                zd[0], zd[1], zd[2] = t0 * inv_t, t1 * inv_t, t2 * inv_t
                hx, hy = rot[0, 0], rot[1, 0]
                hn = 1.0 / math.sqrt(max(hx * hx + hy * hy, 1e-12))
                hx, hy = hx * hn, hy * hn
                x0, x1, x2_ = hx * zd[2], hy * zd[2], -(hy * zd[1]) - hx * zd[0]
                xn = 1.0 / math.sqrt(x0 * x0 + x1 * x1 + x2_ * x2_)
                xd[0], xd[1], xd[2] = x0 * xn, x1 * xn, x2_ * xn
                thr_sp = 1.0 / inv_t
                yr_state = yr_cmd
                is_landed = landed_now

            # ---- attitude loop: d = R^T z_d, b = R^T x_d in the current body frame
            d0 = rot[0, 0] * zd[0] + rot[1, 0] * zd[1] + rot[2, 0] * zd[2]
            d1 = rot[0, 1] * zd[0] + rot[1, 1] * zd[1] + rot[2, 1] * zd[2]
            d2 = rot[0, 2] * zd[0] + rot[1, 2] * zd[1] + rot[2, 2] * zd[2]
            b0 = rot[0, 0] * xd[0] + rot[1, 0] * xd[1] + rot[2, 0] * xd[2]
            b1 = rot[0, 1] * xd[0] + rot[1, 1] * xd[1] + rot[2, 1] * xd[2]
            b2 = rot[0, 2] * xd[0] + rot[1, 2] * xd[1] + rot[2, 2] * xd[2]
            opz = max(d2 + 1.0, 1e-6)
            c_yaw = b0 - d0 * (b2 / opz)
            s_yaw = b1 - d1 * (b2 / opz)
            half = consts[C_HALF_YAW_W] * math.atan2(s_yaw, c_yaw)
            ch, sh = math.cos(half), math.sin(half)
            inv = 1.0 / math.sqrt(2.0 * opz)
            v0, v1 = d0 * inv, d1 * inv
            eq0 = v0 * sh - v1 * ch
            eq1 = v0 * ch + v1 * sh
            eq2 = opz * inv * sh
            rsp[0] = eq0 * axis_consts[A_ATT_2P, 0] + rot[2, 0] * yr_state
            rsp[1] = eq1 * axis_consts[A_ATT_2P, 1] + rot[2, 1] * yr_state
            rsp[2] = eq2 * axis_consts[A_ATT_2P, 2] + rot[2, 2] * yr_state
            for k in range(3):
                lim = axis_consts[A_RATE_MAX, k]
                rsp[k] = max(min(rsp[k], lim), -lim)

            # ---- rate loop (gyro and gyro-derivative low-passes, PID with saturation feedback)
            for k in range(3):
                wm = w[k] + gyro_noise_std * noise[step, 1, k, i] if use_noise else w[k]
                if gyro_lp:
                    w0 = wm - (g1[k] * consts[C_GYRO_A1] + g2[k] * consts[C_GYRO_A2])
                    wf = ((w0 + g2[k]) + 2.0 * g1[k]) * consts[C_GYRO_B0]
                    g2[k] = g1[k]
                    g1[k] = w0
                else:
                    wf = wm
                if dgyro_lp:
                    w0 = aa[k] - (h1[k] * consts[C_DGYRO_A1] + h2[k] * consts[C_DGYRO_A2])
                    af = ((w0 + h2[k]) + 2.0 * h1[k]) * consts[C_DGYRO_B0]
                    h2[k] = h1[k]
                    h1[k] = w0
                else:
                    af = aa[k]
                e = rsp[k] - wf
                tq[k] = ri[k] + e * axis_consts[A_RATE_P, k] + af * axis_consts[A_RATE_NEG_D, k]
                if has_ff:
                    tq[k] += rsp[k] * axis_consts[A_RATE_FF, k]
                ec = min(max(e, slo[k]), shi[k])
                i_factor = max(ec * ec * consts[C_NEG_I_FACTOR_SQ] + 1.0, 0.0)
                ri[k] += i_factor * ec * fly * axis_consts[A_RATE_I_DT, k]
                lim = axis_consts[A_RATE_INT_LIM, k]
                ri[k] = max(min(ri[k], lim), -lim)

            # ---- allocation (sequential desaturation, airmode off)
            for m in range(4):
                u[m] = thr_sp * mix[m, 3] + tq[0] * mix[m, 0] + tq[1] * mix[m, 1]
            for m in range(4):
                colm[m] = mix[m, 3]
            _desaturate(u, colm, inv_d[3], 1.0, True)
            for m in range(4):
                colm[m] = mix[m, 0]
            _desaturate(u, colm, inv_d[0], 1.0, False)
            for m in range(4):
                colm[m] = mix[m, 1]
            _desaturate(u, colm, inv_d[1], 1.0, False)
            for m in range(4):
                u[m] += tq[2] * mix[m, 2]
                colm[m] = mix[m, 2]
            _desaturate(u, colm, inv_d[2], consts[C_YAW_MAX], False)
            for m in range(4):
                colm[m] = mix[m, 3]
            _desaturate(u, colm, inv_d[3], 1.0, True)
            for m in range(4):
                u[m] = min(max(u[m], 0.0), 1.0)
            un0 = tq[0] - (
                eff[0, 0] * u[0] + eff[0, 1] * u[1] + eff[0, 2] * u[2] + eff[0, 3] * u[3]
            )
            un1 = tq[1] - (
                eff[1, 0] * u[0] + eff[1, 1] * u[1] + eff[1, 2] * u[2] + eff[1, 3] * u[3]
            )
            un2 = tq[2] - (
                eff[2, 0] * u[0] + eff[2, 1] * u[1] + eff[2, 2] * u[2] + eff[2, 3] * u[3]
            )
            missed = un0 * un0 + un1 * un1 + un2 * un2 >= 1e-6
            shi[0] = 0.0 if missed and un0 > 1.2e-7 else np.inf
            shi[1] = 0.0 if missed and un1 > 1.2e-7 else np.inf
            shi[2] = 0.0 if missed and un2 > 1.2e-7 else np.inf
            slo[0] = 0.0 if missed and un0 < -1.2e-7 else -np.inf
            slo[1] = 0.0 if missed and un1 < -1.2e-7 else -np.inf
            slo[2] = 0.0 if missed and un2 < -1.2e-7 else -np.inf
            if thr_fac > 0.0:
                for m in range(4):
                    u[m] = math.sqrt(max(fac_a * fac_a + u[m] / thr_fac, 1e-30)) - fac_a

            # ---- motors: first-order lag (separate up / down time constants), thrust curve
            for m in range(4):
                diff = u[m] - mot[m]
                mot[m] = mot[m] + diff * a_down
                if asym:
                    mot[m] = mot[m] + max(diff, 0.0) * a_diff
                f[m] = mot[m] * mot[m] if quadratic else mot[m]
            for r in range(4):
                acc4[r] = (
                    force_map[r, 0] * f[0]
                    + force_map[r, 1] * f[1]
                    + force_map[r, 2] * f[2]
                    + force_map[r, 3] * f[3]
                ) * force_scale[r, i]

            # ---- translation (semi-implicit Euler): thrust along body z, gravity, drag
            for k in range(3):
                acc = aext[k] + v[k] * ndrag + rot[k, 2] * acc4[0]
                v[k] = v[k] + acc * dt
                p[k] = p[k] + v[k] * dt

            # ---- rotation: Euler's equations, then the quaternion with the new rates
            gy0, gy1, gy2 = w[1] * w[2], w[2] * w[0], w[0] * w[1]
            aa[0] = acc4[1] + w[0] * neg_damp_over_i[0, i] + gy0 * neg_gyro_coef[0, i]
            aa[1] = acc4[2] + w[1] * neg_damp_over_i[1, i] + gy1 * neg_gyro_coef[1, i]
            aa[2] = acc4[3] + w[2] * neg_damp_over_i[2, i] + gy2 * neg_gyro_coef[2, i]
            for k in range(3):
                w[k] = w[k] + aa[k] * dt
            cx = qy * w[2] - qz * w[1]
            cy = qz * w[0] - qx * w[2]
            cz = qx * w[1] - qy * w[0]
            nw = qw - half_dt * (qx * w[0] + qy * w[1] + qz * w[2])
            nx = qx + half_dt * (cx + w[0] * qw)
            ny = qy + half_dt * (cy + w[1] * qw)
            nz = qz + half_dt * (cz + w[2] * qw)
            qn = 1.0 / math.sqrt(nw * nw + nx * nx + ny * ny + nz * nz)
            q[0], q[1], q[2], q[3] = nw * qn, nx * qn, ny * qn, nz * qn

            # ---- ground: clamp the height, stop the drone while it is not rising
            in_contact = p[2] <= gnd and v[2] <= 0.0
            p[2] = max(p[2], gnd)
            if in_contact:
                for k in range(3):
                    v[k] = 0.0
                    w[k] = 0.0
                    aa[k] = 0.0
            any_contact = any_contact or in_contact

        for k in range(3):
            pos[i, k] = p[k]
            vel[i, k] = v[k]
            rates[i, k] = w[k]
            ang_accel[k, i] = aa[k]
            vel_int[k, i] = vi[k]
            vel_prev[k, i] = vp[k]
            vel_dot[k, i] = vd[k]
            rate_int[k, i] = ri[k]
            sat_lo[k, i] = slo[k]
            sat_hi[k, i] = shi[k]
            att_sp[k, 0, i] = zd[k]
            att_sp[k, 1, i] = xd[k]
            gyro_d1[k, i] = g1[k]
            gyro_d2[k, i] = g2[k]
            dgyro_d1[k, i] = h1[k]
            dgyro_d2[k, i] = h2[k]
            rate_sp_out[k, i] = rsp[k]
            torque_sp_out[k, i] = tq[k]
        for k in range(4):
            quat[i, k] = q[k]
            motor[k, i] = mot[k]
            motor_cmd[k, i] = u[k]
        contact[i] = in_contact
        contact_any[i] = any_contact
        yaw = math.atan2(2.0 * (q[0] * q[3] + q[1] * q[2]), 1.0 - 2.0 * (q[2] * q[2] + q[3] * q[3]))
        yaw_out[i] = yaw - 2.0 * math.pi if yaw >= math.pi else yaw
        thrust_sp[i] = thr_sp
        yaw_rate_state[i] = yr_state
        landed[i] = is_landed
        flying[i] = fly


# ---------------------------------------------------------------------------------------------
# The direct (fast-mode) dynamics: ``direct.direct_step`` and the masked reset, one loop per drone.


@njit(inline="always", cache=True)
def remainder(a, b):
    """``torch.remainder`` of floats (ATen's CPU form: fmod, then the divisor's sign)."""
    mod = np.fmod(a, b)
    if mod != 0 and ((b < 0) != (mod < 0)):
        mod += b
    return mod


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def direct_step(
    action,
    ground,
    vel_fast,
    vel_slow,
    yaw_rate,
    pos,
    vel_old,
    yaw,
    a_fast,
    k_fast,
    frac_slow,
    a_slow,
    k_slow,
    a_yaw,
    k_yaw,
    coupling,
    max_dv_h,
    dt_s,
    max_velocity,
    max_vertical_velocity,
    max_yaw_rate,
    clip_norm,
    has_slow,
    has_coupling,
    has_accel_limit,
    tilt,
    tan_max_tilt,
    tilt_drag,
    out_pos,
    out_vel,
    out_quat,
    out_yaw,
    out_yaw_rate,
    out_contact,
    out_vel_fast,
    out_vel_slow,
):
    """:func:`isr_direct_dynamics.direct.direct_step` for every drone, into the ``out_*`` arrays.

    Same arguments (the coefficients of ``DirectCoeffs`` as arrays, the static options as
    scalars) and the same float32 operations in the same order; ``(W, D, ...)`` shapes.
    """
    nw, nd = pos.shape[0], pos.shape[1]
    f32 = np.float32
    zero, one, two, half_ = f32(0.0), f32(1.0), f32(2.0), f32(0.5)
    dt = f32(dt_s)
    inv_dt = f32(1.0 / dt_s)
    tiny = f32(1e-12)
    g = f32(9.80665)
    g_min = f32(0.1 * 9.80665)
    s_xy, s_z, s_yaw = f32(max_velocity), f32(max_vertical_velocity), f32(max_yaw_rate)
    tan_t = f32(tan_max_tilt)
    drag = f32(tilt_drag)
    pi = f32(math.pi)
    two_pi = f32(2 * math.pi)
    total = nw * nd
    for chunk in prange((total + CHUNK - 1) // CHUNK):  # scratch arrays once per chunk
        cmd = np.empty(3, dtype=np.float32)
        new_fast = np.empty(3, dtype=np.float32)
        new_slow = np.empty(3, dtype=np.float32)
        inc = np.empty(3, dtype=np.float32)
        e_slow = np.empty(3, dtype=np.float32)
        for flat in range(chunk * CHUNK, min(total, (chunk + 1) * CHUNK)):
            w = flat // nd
            d = flat % nd
            cmd[0] = action[w, d, 0] * s_xy
            cmd[1] = action[w, d, 1] * s_xy
            cmd[2] = action[w, d, 2] * s_z
            if clip_norm:
                speed2 = cmd[0] * cmd[0] + cmd[1] * cmd[1]
                factor = min(s_xy * (one / np.sqrt(speed2 + tiny)), one)
                cmd[0] *= factor
                cmd[1] *= factor
            cmd_yr = action[w, d, 3] * s_yaw
            for k in range(3):
                vf = vel_fast[w, d, k]
                if has_slow:
                    c_slow = cmd[k] * frac_slow[w, d, k]
                    c_fast = cmd[k] - c_slow
                    e_slow[k] = vel_slow[w, d, k] - c_slow
                    new_slow[k] = c_slow + e_slow[k] * a_slow[w, d, k]
                else:
                    c_fast = cmd[k]
                    new_slow[k] = vel_slow[w, d, k]
                e_fast = vf - c_fast
                new_fast[k] = c_fast + e_fast * a_fast[w, d, k]
                inc[k] = c_fast * dt + e_fast * k_fast[w, d, k]
            if has_coupling:
                vz_new = new_fast[2] + new_slow[2] if has_slow else new_fast[2]
                s = min(max(one + (vz_new - vel_old[w, d, 2]) * coupling[w, d], zero), two)
                for k in range(2):
                    vf = vel_fast[w, d, k]
                    new_fast[k] = vf + (new_fast[k] - vf) * s
                    inc[k] = vf * dt + (inc[k] - vf * dt) * s
                vf = vel_fast[w, d, 2]
                new_fast[2] = vf + (new_fast[2] - vf) * one
                inc[2] = vf * dt + (inc[2] - vf * dt) * one
            if has_accel_limit:
                dv0 = new_fast[0] - vel_fast[w, d, 0]
                dv1 = new_fast[1] - vel_fast[w, d, 1]
                dv2 = new_fast[2] - vel_fast[w, d, 2]
                dv_h = np.sqrt(dv0 * dv0 + dv1 * dv1 + tiny)
                r = min(max_dv_h[w, d] / dv_h, one)
                for k in range(3):
                    vf = vel_fast[w, d, k]
                    dvk = dv0 if k == 0 else (dv1 if k == 1 else dv2)
                    rk = r if k < 2 else one
                    new_fast[k] = vf + dvk * rk
                    inc[k] = vf * dt + (inc[k] - vf * dt) * rk
            for k in range(3):
                if has_slow:
                    c_slow = cmd[k] * frac_slow[w, d, k]
                    out_pos[w, d, k] = ((pos[w, d, k] + inc[k]) + c_slow * dt) + e_slow[k] * k_slow[
                        w, d, k
                    ]
                else:
                    out_pos[w, d, k] = pos[w, d, k] + inc[k]
            e_yaw = yaw_rate[w, d] - cmd_yr
            y = remainder(((yaw[w, d] + cmd_yr * dt) + e_yaw * k_yaw[w, d]) + pi, two_pi) - pi
            out_yaw[w, d] = y
            yr = cmd_yr + e_yaw * a_yaw[w, d]
            out_yaw_rate[w, d] = yr
            # ground: clamp, no downward velocity, contact flag
            z = out_pos[w, d, 2]
            contact = z <= ground[w, d]
            out_pos[w, d, 2] = max(z, ground[w, d])
            if contact:
                new_fast[2] = max(new_fast[2], zero)
                if has_slow:
                    new_slow[2] = max(new_slow[2], zero)
            out_contact[w, d] = contact
            for k in range(3):
                out_vel_fast[w, d, k] = new_fast[k]
                out_vel_slow[w, d, k] = new_slow[k]
                out_vel[w, d, k] = new_fast[k] + new_slow[k] if has_slow else new_fast[k]
            hy = half_ * y
            cos_h, sin_h = np.cos(hy), np.sin(hy)
            if tilt:
                ax = (out_vel[w, d, 0] - vel_old[w, d, 0]) * inv_dt
                ay = (out_vel[w, d, 1] - vel_old[w, d, 1]) * inv_dt
                az = (out_vel[w, d, 2] - vel_old[w, d, 2]) * inv_dt
                if drag != zero:
                    ax = ax + out_vel[w, d, 0] * drag
                    ay = ay + out_vel[w, d, 1] * drag
                    az = az + out_vel[w, d, 2] * drag
                nz = max(az + g, g_min)
                scale = min(tan_t * nz * (one / np.sqrt(ax * ax + ay * ay + tiny)), one)
                nx, ny = ax * scale, ay * scale
                inv = one / np.sqrt(nx * nx + ny * ny + nz * nz)
                nx, ny, nz = nx * inv, ny * inv, nz * inv
                qw = np.sqrt(half_ * (one + nz))
                kq = half_ / qw
                qx, qy = -ny * kq, nx * kq
                out_quat[w, d, 0] = qw * cos_h
                out_quat[w, d, 1] = qx * cos_h + qy * sin_h
                out_quat[w, d, 2] = qy * cos_h - qx * sin_h
                out_quat[w, d, 3] = qw * sin_h
            else:
                out_quat[w, d, 0] = cos_h
                out_quat[w, d, 1] = zero
                out_quat[w, d, 2] = zero
                out_quat[w, d, 3] = sin_h


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def direct_reset(
    mask, pos0, yaw0, vel0, frac_slow, pos, vel, quat, body_rates, yaw, contact, vel_fast,
    vel_slow, yaw_rate,
):  # fmt: skip
    """``DirectDynamics._reset_masked`` in place, for the drones in ``mask (W, D)``.

    They get position ``pos0``, yaw ``yaw0``, velocity ``vel0`` (split over the fast and slow
    poles by ``frac_slow``), a level attitude, zero rates and no contact (float32 as torch).
    """
    nw, nd = mask.shape[0], mask.shape[1]
    f32 = np.float32
    zero, one, half_ = f32(0.0), f32(1.0), f32(0.5)
    for flat in prange(nw * nd):
        w = flat // nd
        d = flat % nd
        if not mask[w, d]:
            continue
        for k in range(3):
            pos[w, d, k] = pos0[w, d, k]
            vel[w, d, k] = vel0[w, d, k]
            vel_fast[w, d, k] = vel0[w, d, k] * (one - frac_slow[w, d, k])
            vel_slow[w, d, k] = vel0[w, d, k] * frac_slow[w, d, k]
            body_rates[w, d, k] = zero
        h = yaw0[w, d] * half_
        quat[w, d, 0] = np.cos(h)
        quat[w, d, 1] = zero
        quat[w, d, 2] = zero
        quat[w, d, 3] = np.sin(h)
        yaw[w, d] = yaw0[w, d]
        contact[w, d] = False
        yaw_rate[w, d] = zero
