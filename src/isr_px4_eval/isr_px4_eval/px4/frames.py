"""The one module for every frame and unit conversion at the PX4 boundary.

The workspace speaks world ENU (x east, y north, z up), body FLU (x forward, y left, z up,
REP-103), seconds and radians. PX4 speaks world NED (x north, y east, z down), body FRD (x forward,
y right, z down) and microsecond timestamps. Every conversion between the two lives here:

============================  ==========================================================
quantity                      conversion
============================  ==========================================================
position, velocity, accel.    ENU <-> NED: swap x and y, negate z (the map is its own inverse)
body vectors (rates, forces)  FLU <-> FRD: negate y and z (a pi rotation about x)
yaw / heading                 ``yaw_ned = pi/2 - yaw_enu`` (and back), wrapped to [-pi, pi)
yaw rate                      ``yawspeed_ned = -yaw_rate_enu``
attitude quaternion           body FLU -> world ENU  <->  body FRD -> world NED
timestamps                    microseconds (PX4 ``uint64``) <-> seconds; ROS nanoseconds
============================  ==========================================================

Quaternions are ``(w, x, y, z)``, Hamilton convention, rotating body vectors into the world frame
(PX4's ``VehicleOdometry.q`` / ``VehicleAttitude.q`` use the same convention for FRD -> NED).

Every function accepts numpy arrays, torch tensors (any leading dimensions, any device, autograd
preserved), Python sequences (treated as numpy) and, for the scalar functions, Python floats. The
result has the input's kind: a tensor in, a tensor out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

_SQRT_HALF = math.sqrt(0.5)

#: Quaternion (w, x, y, z) of the rotation that maps ENU vectors onto NED vectors: a rotation by pi
#: about the axis (1, 1, 0) / sqrt(2) (so x <-> y swap and z flips).
Q_NED_FROM_ENU: tuple[float, float, float, float] = (0.0, _SQRT_HALF, _SQRT_HALF, 0.0)
#: Quaternion (w, x, y, z) of the rotation that maps FRD body vectors onto FLU body vectors (and
#: back: a pi rotation about x is its own inverse up to sign).
Q_FLU_FROM_FRD: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 0.0)

US_PER_S = 1_000_000
NS_PER_US = 1_000


def _as_array(x: Any) -> Any:
    """Tensors and numpy arrays pass through; sequences become float64 numpy arrays."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return x
    return np.asarray(x, dtype=np.float64)


def _stack(parts: Sequence[Any], like: Any) -> Any:
    """Stack along a new last axis with the library of ``like``."""
    if isinstance(like, torch.Tensor):
        return torch.stack(tuple(parts), dim=-1)
    return np.stack(parts, axis=-1)


def _check_last_dim(x: Any, size: int, what: str) -> None:
    if x.shape[-1:] != (size,):
        raise ValueError(f"{what} must have a last dimension of {size}, got shape {tuple(x.shape)}")


# ---------------------------------------------------------------------------------- vectors
def enu_to_ned_vector(vec_enu: ArrayT | Sequence[float]) -> ArrayT:
    """World ENU vector(s) ``(..., 3)`` -> world NED: ``(y, x, -z)``.

    Use it for positions, velocities and accelerations alike (for positions both frames share the
    origin, as PX4's local frame and the workspace's world frame do at the boundary).
    """
    v = _as_array(vec_enu)
    _check_last_dim(v, 3, "vector")
    return _stack((v[..., 1], v[..., 0], -v[..., 2]), v)


def ned_to_enu_vector(vec_ned: ArrayT | Sequence[float]) -> ArrayT:
    """World NED vector(s) ``(..., 3)`` -> world ENU: ``(y, x, -z)`` (the same involution)."""
    v = _as_array(vec_ned)
    _check_last_dim(v, 3, "vector")
    return _stack((v[..., 1], v[..., 0], -v[..., 2]), v)


def flu_to_frd_vector(vec_flu: ArrayT | Sequence[float]) -> ArrayT:
    """Body FLU vector(s) ``(..., 3)`` (e.g. body rates) -> body FRD: ``(x, -y, -z)``."""
    v = _as_array(vec_flu)
    _check_last_dim(v, 3, "vector")
    return _stack((v[..., 0], -v[..., 1], -v[..., 2]), v)


def frd_to_flu_vector(vec_frd: ArrayT | Sequence[float]) -> ArrayT:
    """Body FRD vector(s) ``(..., 3)`` -> body FLU: ``(x, -y, -z)`` (the same involution)."""
    v = _as_array(vec_frd)
    _check_last_dim(v, 3, "vector")
    return _stack((v[..., 0], -v[..., 1], -v[..., 2]), v)


# ---------------------------------------------------------------------------------- yaw
def wrap_angle_rad(angle_rad: Any) -> Any:
    """Wrap angle(s) to ``[-pi, pi)``; floats, numpy arrays and tensors."""
    return (angle_rad + math.pi) % (2.0 * math.pi) - math.pi


def yaw_enu_to_ned(yaw_enu_rad: Any) -> Any:
    """ENU yaw (0 = east, counter-clockwise positive) -> NED heading (0 = north, clockwise).

    ``yaw_ned = pi/2 - yaw_enu``, wrapped to ``[-pi, pi)``.
    """
    return wrap_angle_rad(math.pi / 2 - _scalar_or_array(yaw_enu_rad))


def yaw_ned_to_enu(yaw_ned_rad: Any) -> Any:
    """NED heading -> ENU yaw: ``yaw_enu = pi/2 - yaw_ned``, wrapped to ``[-pi, pi)``."""
    return wrap_angle_rad(math.pi / 2 - _scalar_or_array(yaw_ned_rad))


def yaw_rate_enu_to_ned(yaw_rate_enu_rad_s: Any) -> Any:
    """Yaw rate about ENU up -> PX4 ``yawspeed`` about NED down: ``-yaw_rate_enu``."""
    return -_scalar_or_array(yaw_rate_enu_rad_s)


def yaw_rate_ned_to_enu(yawspeed_ned_rad_s: Any) -> Any:
    """PX4 ``yawspeed`` about NED down -> yaw rate about ENU up: ``-yawspeed_ned``."""
    return -_scalar_or_array(yawspeed_ned_rad_s)


def _scalar_or_array(x: Any) -> Any:
    if isinstance(x, (int, float, torch.Tensor, np.ndarray, np.generic)):
        return x
    return np.asarray(x, dtype=np.float64)


# ---------------------------------------------------------------------------------- quaternions
def quat_mul_wxyz(q: ArrayT, r: ArrayT) -> ArrayT:
    """Hamilton product ``q * r`` of ``(..., 4)`` quaternions (w, x, y, z); numpy or torch."""
    q, r = _as_array(q), _as_array(r)
    if isinstance(q, torch.Tensor) and not isinstance(r, torch.Tensor):
        r = torch.as_tensor(r, dtype=q.dtype, device=q.device)
    elif isinstance(r, torch.Tensor) and not isinstance(q, torch.Tensor):
        q = torch.as_tensor(q, dtype=r.dtype, device=r.device)
    _check_last_dim(q, 4, "quaternion")
    _check_last_dim(r, 4, "quaternion")
    w1, x1, y1, z1 = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    w2, x2, y2, z2 = r[..., 0], r[..., 1], r[..., 2], r[..., 3]
    return _stack(
        (
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ),
        q,
    )


def _const_quat(values: tuple[float, ...], like: Any) -> Any:
    if isinstance(like, torch.Tensor):
        return torch.tensor(values, dtype=like.dtype, device=like.device)
    return np.asarray(values, dtype=like.dtype if like.dtype.kind == "f" else np.float64)


def canonical_quat_wxyz(q: ArrayT) -> ArrayT:
    """The same rotation with ``w >= 0`` (q and -q are one rotation)."""
    q = _as_array(q)
    sign = (q[..., :1] >= 0) * 2.0 - 1.0
    return q * sign


def quat_flu_enu_to_frd_ned(q_enu_flu_wxyz: ArrayT | Sequence[float]) -> ArrayT:
    """Attitude body FLU -> world ENU  ->  body FRD -> world NED (PX4 ``q``), ``(..., 4)`` wxyz.

    ``q_ned_frd = q_ned_enu * q_enu_flu * q_flu_frd``; the result is canonical (``w >= 0``).
    """
    q = _as_array(q_enu_flu_wxyz)
    _check_last_dim(q, 4, "quaternion")
    out = quat_mul_wxyz(
        quat_mul_wxyz(_const_quat(Q_NED_FROM_ENU, q), q), _const_quat(Q_FLU_FROM_FRD, q)
    )
    return canonical_quat_wxyz(out)


def quat_frd_ned_to_flu_enu(q_ned_frd_wxyz: ArrayT | Sequence[float]) -> ArrayT:
    """Attitude body FRD -> world NED (PX4 ``q``)  ->  body FLU -> world ENU, ``(..., 4)`` wxyz.

    ``q_enu_flu = q_enu_ned * q_ned_frd * q_frd_flu`` (both fixed rotations are pi rotations,
    their own inverses); the result is canonical (``w >= 0``).
    """
    q = _as_array(q_ned_frd_wxyz)
    _check_last_dim(q, 4, "quaternion")
    out = quat_mul_wxyz(
        quat_mul_wxyz(_const_quat(Q_NED_FROM_ENU, q), q), _const_quat(Q_FLU_FROM_FRD, q)
    )
    return canonical_quat_wxyz(out)


def quat_rotate_wxyz(q_wxyz: ArrayT | Sequence[float], vec: ArrayT | Sequence[float]) -> ArrayT:
    """Rotate vectors ``(..., 3)`` by quaternions ``(..., 4)`` (body -> world); numpy or torch."""
    q = _as_array(q_wxyz)
    v = _as_array(vec)
    _check_last_dim(q, 4, "quaternion")
    _check_last_dim(v, 3, "vector")
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    vx, vy, vz = v[..., 0], v[..., 1], v[..., 2]
    # t = 2 q_v x v;  v' = v + w t + q_v x t
    tx = 2.0 * (y * vz - z * vy)
    ty = 2.0 * (z * vx - x * vz)
    tz = 2.0 * (x * vy - y * vx)
    return _stack(
        (
            vx + w * tx + (y * tz - z * ty),
            vy + w * ty + (z * tx - x * tz),
            vz + w * tz + (x * ty - y * tx),
        ),
        q if isinstance(q, torch.Tensor) else v,
    )


def yaw_from_quat_wxyz(q_wxyz: ArrayT | Sequence[float]) -> ArrayT:
    """Z-Y-X Euler yaw of body -> world quaternions ``(..., 4)``, in ``(-pi, pi]``.

    Frame-agnostic: for a FLU -> ENU quaternion it is the ENU yaw, for a PX4 FRD -> NED quaternion
    the NED heading.
    """
    q = _as_array(q_wxyz)
    _check_last_dim(q, 4, "quaternion")
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    num = 2.0 * (w * z + x * y)
    den = 1.0 - 2.0 * (y * y + z * z)
    if isinstance(q, torch.Tensor):
        return torch.atan2(num, den)
    return np.arctan2(num, den)


def euler_yaw_rate_from_body_rates(
    q_wxyz: ArrayT | Sequence[float], body_rates: ArrayT | Sequence[float]
) -> ArrayT:
    """Rate of the Z-Y-X Euler yaw from body rates ``(..., 3)`` and attitude ``(..., 4)``.

    ``yaw_dot = (q sin(roll) + r cos(roll)) / cos(pitch)``; frame-agnostic like
    :func:`yaw_from_quat_wxyz` (FLU/ENU in, ENU yaw rate out; FRD/NED in, NED yawspeed out).
    """
    q = _as_array(q_wxyz)
    w_b = _as_array(body_rates)
    _check_last_dim(q, 4, "quaternion")
    _check_last_dim(w_b, 3, "body rates")
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    lib = torch if isinstance(q, torch.Tensor) else np
    roll = lib.arctan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    sin_pitch = lib.clip(2.0 * (w * y - z * x), -1.0, 1.0)
    cos_pitch = lib.sqrt(lib.clip(1.0 - sin_pitch * sin_pitch, 1e-12, None))
    return (w_b[..., 1] * lib.sin(roll) + w_b[..., 2] * lib.cos(roll)) / cos_pitch


# ---------------------------------------------------------------------------------- time
def us_to_s(t_us: Any) -> Any:
    """PX4 microseconds -> seconds (float64 for numpy; ints become floats)."""
    if isinstance(t_us, torch.Tensor):
        return t_us.to(torch.float64) / US_PER_S
    if isinstance(t_us, (int, float, np.integer, np.floating)):
        return float(t_us) / US_PER_S
    return np.asarray(t_us, dtype=np.float64) / US_PER_S


def s_to_us(t_s: Any) -> Any:
    """Seconds -> PX4 microseconds, rounded to the nearest integer (``int`` / int64)."""
    if isinstance(t_s, torch.Tensor):
        return torch.round(t_s.to(torch.float64) * US_PER_S).to(torch.int64)
    if isinstance(t_s, (int, float, np.integer, np.floating)):
        return int(round(float(t_s) * US_PER_S))
    return np.round(np.asarray(t_s, dtype=np.float64) * US_PER_S).astype(np.int64)


def ns_to_us(t_ns: Any) -> Any:
    """ROS / MCAP nanoseconds -> microseconds, floored (exact integer arithmetic)."""
    if isinstance(t_ns, torch.Tensor):
        return torch.div(t_ns.to(torch.int64), NS_PER_US, rounding_mode="floor")
    if isinstance(t_ns, (int, np.integer)):
        return int(t_ns) // NS_PER_US
    return np.asarray(t_ns, dtype=np.int64) // NS_PER_US


def us_to_ns(t_us: Any) -> Any:
    """Microseconds -> nanoseconds (exact integer arithmetic)."""
    if isinstance(t_us, torch.Tensor):
        return t_us.to(torch.int64) * NS_PER_US
    if isinstance(t_us, (int, np.integer)):
        return int(t_us) * NS_PER_US
    return np.asarray(t_us, dtype=np.int64) * NS_PER_US


def ros_stamp_to_us(sec: int, nanosec: int) -> int:
    """A ``builtin_interfaces/Time`` (sec, nanosec) -> microseconds (floored)."""
    return (int(sec) * 1_000_000_000 + int(nanosec)) // NS_PER_US


def us_to_ros_stamp(t_us: int) -> tuple[int, int]:
    """Microseconds -> ``builtin_interfaces/Time`` fields ``(sec, nanosec)``."""
    sec, rem_us = divmod(int(t_us), US_PER_S)
    return sec, rem_us * NS_PER_US


__all__ = [
    "Q_FLU_FROM_FRD",
    "Q_NED_FROM_ENU",
    "canonical_quat_wxyz",
    "enu_to_ned_vector",
    "euler_yaw_rate_from_body_rates",
    "flu_to_frd_vector",
    "frd_to_flu_vector",
    "ned_to_enu_vector",
    "ns_to_us",
    "quat_flu_enu_to_frd_ned",
    "quat_frd_ned_to_flu_enu",
    "quat_mul_wxyz",
    "quat_rotate_wxyz",
    "ros_stamp_to_us",
    "s_to_us",
    "us_to_ns",
    "us_to_ros_stamp",
    "us_to_s",
    "wrap_angle_rad",
    "yaw_enu_to_ned",
    "yaw_from_quat_wxyz",
    "yaw_ned_to_enu",
    "yaw_rate_enu_to_ned",
    "yaw_rate_ned_to_enu",
]
