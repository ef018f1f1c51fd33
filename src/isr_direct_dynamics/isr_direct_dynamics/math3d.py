"""Batched rotation helpers (quaternions are ``wxyz``, Hamilton convention, body-to-world).

All functions work on arbitrary leading dimensions ``(..., 4)`` / ``(..., 3)`` and are pure.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def quat_mul(q: Tensor, r: Tensor) -> Tensor:
    """Hamilton product ``q * r``; shapes ``(..., 4)``."""
    w1, x1, y1, z1 = q.unbind(-1)
    w2, x2, y2, z2 = r.unbind(-1)
    return torch.stack(
        (
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ),
        dim=-1,
    )


def quat_conj(q: Tensor) -> Tensor:
    """Conjugate (the inverse of a unit quaternion)."""
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quat_to_rotmat(q: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` from unit quaternions ``(..., 4)``."""
    w, x, y, z = q.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    row0 = torch.stack((1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy)), -1)
    row1 = torch.stack((2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx)), -1)
    row2 = torch.stack((2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy)), -1)
    return torch.stack((row0, row1, row2), -2)


def quat_rotate(q: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors ``v (..., 3)`` by quaternions ``q (..., 4)`` (body -> world)."""
    shape = torch.broadcast_shapes(q.shape[:-1], v.shape[:-1]) + (3,)
    qv = q[..., 1:].expand(shape)
    v = v.expand(shape)
    t = 2.0 * torch.cross(qv, v, dim=-1)
    return v + q[..., :1] * t + torch.cross(qv, t, dim=-1)


def quat_rotate_inverse(q: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors by the inverse of ``q`` (world -> body)."""
    return quat_rotate(quat_conj(q), v)


def quat_from_euler(roll: Tensor, pitch: Tensor, yaw: Tensor) -> Tensor:
    """Quaternion from intrinsic Z-Y-X (yaw, pitch, roll) angles in radians."""
    cr, sr = torch.cos(roll * 0.5), torch.sin(roll * 0.5)
    cp, sp = torch.cos(pitch * 0.5), torch.sin(pitch * 0.5)
    cy, sy = torch.cos(yaw * 0.5), torch.sin(yaw * 0.5)
    return torch.stack(
        (
            cr * cp * cy + sr * sp * sy,
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
        ),
        dim=-1,
    )


def quat_from_yaw(yaw: Tensor) -> Tensor:
    """Quaternion of a pure rotation about world z by ``yaw`` (radians)."""
    half = yaw * 0.5
    zeros = torch.zeros_like(yaw)
    return torch.stack((torch.cos(half), zeros, zeros, torch.sin(half)), dim=-1)


def quat_to_euler(q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(roll, pitch, yaw) in radians, Z-Y-X convention."""
    w, x, y, z = q.unbind(-1)
    roll = torch.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = torch.asin(torch.clamp(2 * (w * y - z * x), -1.0, 1.0))
    yaw = torch.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return roll, pitch, yaw


def quat_yaw(q: Tensor) -> Tensor:
    """Heading (yaw, radians) of body-to-world quaternions."""
    w, x, y, z = q.unbind(-1)
    return torch.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def tilt_angle(q: Tensor) -> Tensor:
    """Angle (radians) between body z and world z."""
    w, x, y, _ = q.unbind(-1)
    cos_tilt = 1 - 2 * (x * x + y * y)
    return torch.acos(torch.clamp(cos_tilt, -1.0, 1.0))


def wrap_angle(a: Tensor) -> Tensor:
    """Wrap angles to ``[-pi, pi)``."""
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


def normalize(v: Tensor, eps: float = 1e-9) -> Tensor:
    """Unit vectors along the last dimension (zero vectors stay finite)."""
    return v / torch.clamp(torch.linalg.vector_norm(v, dim=-1, keepdim=True), min=eps)
