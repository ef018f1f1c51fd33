"""Every ENU/NED, FLU/FRD, yaw, yaw-rate, quaternion and time conversion at the PX4 boundary."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from isr_direct_dynamics.math3d import quat_from_euler, quat_rotate
from isr_px4_eval.px4 import frames as fr

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(1234)


def random_quats(n: int) -> np.ndarray:
    q = RNG.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def same_rotation(q1, q2, atol=1e-9) -> bool:
    q1, q2 = np.asarray(q1), np.asarray(q2)
    return bool(np.all(np.minimum(np.abs(q1 - q2).max(-1), np.abs(q1 + q2).max(-1)) < atol))


# ------------------------------------------------------------------------------ vectors
@pytest.mark.parametrize(
    ("enu", "ned"),
    [
        ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),  # east
        ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0)),  # north
        ((0.0, 0.0, 1.0), (0.0, 0.0, -1.0)),  # up
        ((2.0, -3.0, 4.0), (-3.0, 2.0, -4.0)),
    ],
)
def test_enu_ned_vector_known_cases(enu, ned):
    np.testing.assert_allclose(fr.enu_to_ned_vector(enu), ned)
    np.testing.assert_allclose(fr.ned_to_enu_vector(ned), enu)


@pytest.mark.parametrize(
    ("flu", "frd"),
    [
        ((1.0, 0.0, 0.0), (1.0, 0.0, 0.0)),  # forward stays forward
        ((0.0, 1.0, 0.0), (0.0, -1.0, 0.0)),  # left = -right
        ((0.0, 0.0, 1.0), (0.0, 0.0, -1.0)),  # up = -down
    ],
)
def test_flu_frd_vector_known_cases(flu, frd):
    np.testing.assert_allclose(fr.flu_to_frd_vector(flu), frd)
    np.testing.assert_allclose(fr.frd_to_flu_vector(frd), flu)


def test_vector_round_trips_numpy_and_torch():
    v = RNG.normal(size=(5, 7, 3))
    np.testing.assert_allclose(fr.ned_to_enu_vector(fr.enu_to_ned_vector(v)), v)
    np.testing.assert_allclose(fr.frd_to_flu_vector(fr.flu_to_frd_vector(v)), v)
    t = torch.tensor(v, dtype=torch.float32, requires_grad=True)
    out = fr.enu_to_ned_vector(t)
    assert isinstance(out, torch.Tensor) and out.shape == t.shape and out.dtype == torch.float32
    out.sum().backward()  # autograd flows through
    assert t.grad is not None
    torch.testing.assert_close(fr.ned_to_enu_vector(out), t)
    torch.testing.assert_close(fr.frd_to_flu_vector(fr.flu_to_frd_vector(t)), t)


def test_vector_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="last dimension of 3"):
        fr.enu_to_ned_vector(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="last dimension of 4"):
        fr.quat_frd_ned_to_flu_enu(np.zeros(3))


# ------------------------------------------------------------------------------ yaw
@pytest.mark.parametrize(
    ("yaw_enu", "yaw_ned"),
    [
        (0.0, math.pi / 2),  # facing east
        (math.pi / 2, 0.0),  # facing north
        (math.pi, -math.pi / 2),  # facing west
        (-math.pi / 2, -math.pi),  # facing south (NED pi, wrapped to -pi)
        (math.pi / 4, math.pi / 4),  # north-east is the fixed point
    ],
)
def test_yaw_known_cases(yaw_enu, yaw_ned):
    assert fr.yaw_enu_to_ned(yaw_enu) == pytest.approx(yaw_ned)
    back = fr.yaw_ned_to_enu(yaw_ned)
    assert math.isclose(math.remainder(back - yaw_enu, 2 * math.pi), 0.0, abs_tol=1e-12)


def test_yaw_round_trip_wraps_numpy_and_torch():
    yaw = RNG.uniform(-10, 10, size=100)
    back = fr.yaw_ned_to_enu(fr.yaw_enu_to_ned(yaw))
    np.testing.assert_allclose(np.remainder(back - yaw + np.pi, 2 * np.pi) - np.pi, 0, atol=1e-9)
    ned = fr.yaw_enu_to_ned(yaw)
    assert np.all(ned >= -np.pi) and np.all(ned < np.pi)
    t = torch.tensor(yaw)
    torch.testing.assert_close(fr.yaw_enu_to_ned(t), torch.tensor(ned))
    assert isinstance(fr.yaw_enu_to_ned(0.3), float)


def test_yaw_rate_sign():
    # Counter-clockwise seen from above (ENU positive) is negative about NED down.
    assert fr.yaw_rate_enu_to_ned(0.5) == -0.5
    assert fr.yaw_rate_ned_to_enu(-0.5) == 0.5
    r = RNG.normal(size=10)
    np.testing.assert_allclose(fr.yaw_rate_ned_to_enu(fr.yaw_rate_enu_to_ned(r)), r)
    t = torch.tensor(r)
    torch.testing.assert_close(fr.yaw_rate_enu_to_ned(t), -t)


def test_wrap_angle():
    assert fr.wrap_angle_rad(math.pi) == pytest.approx(-math.pi)
    assert fr.wrap_angle_rad(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
    np.testing.assert_allclose(fr.wrap_angle_rad(np.array([0.1, -0.1])), [0.1, -0.1])


# ------------------------------------------------------------------------------ quaternions
def test_quat_level_facing_east_is_px4_heading_90_deg():
    q_enu = np.array([1.0, 0.0, 0.0, 0.0])  # level, body x along east
    q_ned = fr.quat_flu_enu_to_frd_ned(q_enu)
    expected = [math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]  # +90 deg about down
    assert same_rotation(q_ned, expected)
    assert fr.yaw_from_quat_wxyz(q_ned) == pytest.approx(math.pi / 2)


def test_quat_level_facing_north_is_px4_identity():
    q_enu = np.array([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])  # yaw 90 deg
    assert same_rotation(fr.quat_flu_enu_to_frd_ned(q_enu), [1.0, 0.0, 0.0, 0.0])
    assert same_rotation(fr.quat_frd_ned_to_flu_enu([1.0, 0.0, 0.0, 0.0]), q_enu)


def test_quat_round_trip_and_canonical():
    q = random_quats(200)
    q_ned = fr.quat_flu_enu_to_frd_ned(q)
    assert np.all(q_ned[:, 0] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q_ned, axis=1), 1.0, atol=1e-12)
    assert same_rotation(fr.quat_frd_ned_to_flu_enu(q_ned), q)


def test_quat_conversion_rotates_vectors_consistently():
    """v_ned = R(q_ned) v_frd must equal enu_to_ned(R(q_enu) v_flu) for every attitude."""
    q_enu = random_quats(100)
    v_flu = RNG.normal(size=(100, 3))
    q_ned = fr.quat_flu_enu_to_frd_ned(q_enu)
    lhs = fr.quat_rotate_wxyz(q_ned, fr.flu_to_frd_vector(v_flu))
    rhs = fr.enu_to_ned_vector(fr.quat_rotate_wxyz(q_enu, v_flu))
    np.testing.assert_allclose(lhs, rhs, atol=1e-12)


def test_quat_rotate_matches_workspace_math3d():
    q = torch.tensor(random_quats(20), dtype=torch.float64)
    v = torch.tensor(RNG.normal(size=(20, 3)))
    torch.testing.assert_close(fr.quat_rotate_wxyz(q, v), quat_rotate(q, v))


def test_quat_torch_round_trip_keeps_dtype_and_device():
    q = torch.tensor(random_quats(8), dtype=torch.float32)
    out = fr.quat_flu_enu_to_frd_ned(q)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert same_rotation(fr.quat_frd_ned_to_flu_enu(out).numpy(), q.numpy(), atol=1e-6)


def test_yaw_from_quat_agrees_with_yaw_conversion():
    roll = torch.tensor(RNG.uniform(-0.6, 0.6, 50))
    pitch = torch.tensor(RNG.uniform(-0.6, 0.6, 50))
    yaw = torch.tensor(RNG.uniform(-math.pi, math.pi, 50))
    q_enu = quat_from_euler(roll, pitch, yaw)
    torch.testing.assert_close(fr.yaw_from_quat_wxyz(q_enu), yaw)
    q_ned = fr.quat_flu_enu_to_frd_ned(q_enu)
    diff = fr.wrap_angle_rad(fr.yaw_from_quat_wxyz(q_ned) - fr.yaw_enu_to_ned(yaw))
    torch.testing.assert_close(diff, torch.zeros_like(diff), atol=1e-9, rtol=0)


def test_euler_yaw_rate_from_body_rates():
    # Level: the yaw rate is the body z rate; NED/FRD gives the negated rate.
    q = np.array([1.0, 0.0, 0.0, 0.0])
    assert fr.euler_yaw_rate_from_body_rates(q, [0.0, 0.0, 0.7]) == pytest.approx(0.7)
    # Tilted: compare with the finite difference of the Euler yaw under the body rates.
    q_enu = quat_from_euler(*torch.tensor([0.4, -0.3, 1.0], dtype=torch.float64))
    w_flu = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    h = 1e-6
    dq = torch.cat((torch.ones(1, dtype=torch.float64), 0.5 * h * w_flu))  # body-frame increment
    q_next = fr.quat_mul_wxyz(q_enu, dq)
    q_next = q_next / torch.linalg.vector_norm(q_next)
    fd = (fr.yaw_from_quat_wxyz(q_next) - fr.yaw_from_quat_wxyz(q_enu)) / h
    rate_enu = fr.euler_yaw_rate_from_body_rates(q_enu, w_flu)
    assert float(rate_enu) == pytest.approx(float(fd), rel=1e-4)
    # The same motion seen by PX4 (FRD body rates, FRD->NED attitude) has the negated rate.
    rate_ned = fr.euler_yaw_rate_from_body_rates(
        fr.quat_flu_enu_to_frd_ned(q_enu), fr.flu_to_frd_vector(w_flu)
    )
    assert float(rate_ned) == pytest.approx(-float(rate_enu), rel=1e-9)
    assert fr.yaw_rate_ned_to_enu(float(rate_ned)) == pytest.approx(float(rate_enu))


# ------------------------------------------------------------------------------ time
def test_microsecond_helpers():
    assert fr.us_to_s(1_500_000) == 1.5
    assert fr.s_to_us(1.5) == 1_500_000 and isinstance(fr.s_to_us(1.5), int)
    assert fr.s_to_us(0.0000015) == 2  # rounds to the nearest microsecond
    np.testing.assert_array_equal(fr.s_to_us(np.array([0.1, 2.0])), [100_000, 2_000_000])
    np.testing.assert_allclose(fr.us_to_s(np.array([100_000, 2_000_000])), [0.1, 2.0])
    t = torch.tensor([1_000_000, 2_500_000])
    torch.testing.assert_close(fr.us_to_s(t), torch.tensor([1.0, 2.5], dtype=torch.float64))
    torch.testing.assert_close(fr.s_to_us(torch.tensor([1.0, 2.5])), t)


def test_nanosecond_and_ros_stamp_helpers_are_exact_for_epoch_times():
    ns = 1795256789297943891  # a real MCAP log time (the SIH flight)
    assert fr.ns_to_us(ns) == 1795256789297943
    assert fr.us_to_ns(fr.ns_to_us(ns)) == 1795256789297943000
    np.testing.assert_array_equal(fr.ns_to_us(np.array([ns, ns + 100])), [ns // 1000] * 2)
    assert int(fr.ns_to_us(torch.tensor([ns]))[0]) == ns // 1000
    sec, nsec = fr.us_to_ros_stamp(1795256789297943)
    assert (sec, nsec) == (1795256789, 297943000)
    assert fr.ros_stamp_to_us(sec, nsec) == 1795256789297943
