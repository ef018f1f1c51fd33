"""Unit tests of the direct (fast-mode) dynamics on tiny batches."""

from __future__ import annotations

import math

import pytest
import torch

from isr_direct_dynamics import (
    ConfigError,
    DirectDynamics,
    DirectDynamicsConfig,
    InitialState,
    from_dict,
    make_vehicle_model,
)
from isr_direct_dynamics.math3d import quat_rotate, quat_yaw, tilt_angle

pytestmark = pytest.mark.unit


def airborne(model: DirectDynamics, altitude: float = 50.0) -> None:
    pos = torch.zeros(*model.shape, 3, device=model.device)
    pos[..., 2] = altitude
    model.reset(initial=InitialState(pos_enu_m=pos))


def const_action(model: DirectDynamics, values: list[float]) -> torch.Tensor:
    return torch.tensor(values, device=model.device).expand(*model.shape, 4).clone()


def test_shapes_and_dtypes(device):
    model = DirectDynamics(3, 2, 0.05, device)
    state = model.step(torch.zeros(3, 2, 4, device=device))
    assert state.pos_enu_m.shape == (3, 2, 3)
    assert state.vel_enu_m_s.shape == (3, 2, 3)
    assert state.quat_wxyz.shape == (3, 2, 4)
    assert state.body_rates_flu_rad_s.shape == (3, 2, 3)
    assert state.yaw_rad.shape == (3, 2)
    assert state.ground_contact.shape == (3, 2) and state.ground_contact.dtype == torch.bool
    for t in (state.pos_enu_m, state.vel_enu_m_s, state.quat_wxyz, state.yaw_rad):
        assert t.dtype == torch.float32 and t.device.type == device.type


@pytest.mark.parametrize("dt", [0.01, 0.02, 0.05, 0.1, 0.25])
def test_step_reaches_63_percent_at_time_constant(device, dt):
    tau = 0.5
    cfg = DirectDynamicsConfig(
        tau_horizontal_s=tau, tau_vertical_s=tau, tilt_from_acceleration=False
    )
    model = DirectDynamics(1, 1, dt, device, config=cfg)
    airborne(model)
    action = const_action(model, [0.5, 0.0, 0.4, 0.0])  # 5 m/s east, 2 m/s up
    for _ in range(round(tau / dt)):
        model.step(action)
    v = model.state.vel_enu_m_s[0, 0]
    assert v[0].item() / 5.0 == pytest.approx(1 - math.exp(-1), rel=0.05)
    assert v[2].item() / 2.0 == pytest.approx(1 - math.exp(-1), rel=0.05)


def test_trajectory_independent_of_dt(device):
    """A piecewise-constant command gives the same trajectory at any integration step."""
    rng = torch.Generator().manual_seed(3)
    commands = (torch.rand(20, 1, 1, 4, generator=rng) * 2 - 1).to(device)
    final = []
    for substeps in (1, 4, 10):
        cfg = DirectDynamicsConfig(slow_fraction_horizontal=0.2, tilt_from_acceleration=False)
        model = DirectDynamics(1, 1, 0.2 / substeps, device, config=cfg)
        airborne(model, 500.0)
        for cmd in commands:
            for _ in range(substeps):
                model.step(cmd)
        final.append(model.state.clone())
    for other in final[1:]:
        torch.testing.assert_close(other.pos_enu_m, final[0].pos_enu_m, atol=1e-3, rtol=1e-5)
        torch.testing.assert_close(other.vel_enu_m_s, final[0].vel_enu_m_s, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(other.yaw_rad, final[0].yaw_rad, atol=1e-4, rtol=1e-5)


def test_position_is_exact_integral_of_velocity(device):
    """With tau -> the analytic solution: x(t) = c (t - tau (1 - exp(-t/tau)))."""
    tau, dt, n = 0.65, 0.1, 17
    cfg = DirectDynamicsConfig(tau_horizontal_s=tau, tilt_from_acceleration=False)
    model = DirectDynamics(1, 1, dt, device, config=cfg)
    airborne(model)
    for _ in range(n):
        model.step(const_action(model, [0.3, 0.0, 0.0, 0.0]))
    t = n * dt
    expected = 3.0 * (t - tau * (1 - math.exp(-t / tau)))
    assert model.state.pos_enu_m[0, 0, 0].item() == pytest.approx(expected, rel=1e-4)


def test_saturation_and_diagonal_norm(device):
    no_clip = DirectDynamicsConfig(max_climb_rate_m_s=None, max_descent_rate_m_s=None)
    model = DirectDynamics(1, 3, 0.1, device, config=no_clip)
    airborne(model)
    action = torch.tensor(
        [[[5.0, 0.0, -7.0, 3.0], [1.0, 1.0, 0.0, 0.0], [-1.0, 0.0, 1.0, -1.0]]], device=device
    )
    for _ in range(200):
        model.step(action)
    v = model.state.vel_enu_m_s[0]
    assert v[0, 0].item() == pytest.approx(10.0, abs=1e-3)  # clipped to +1
    assert v[0, 2].item() == pytest.approx(0.0, abs=1e-3)  # -7 -> -1: landed, then clamp
    assert torch.linalg.vector_norm(v[1, :2]).item() == pytest.approx(10.0, abs=1e-3)
    assert v[2, 0].item() == pytest.approx(-10.0, abs=1e-3)
    assert v[2, 2].item() == pytest.approx(5.0, abs=1e-3)
    rate = model.state.body_rates_flu_rad_s[0, :, 2]
    assert rate[0].item() == pytest.approx(math.pi / 2, abs=1e-4)
    assert rate[2].item() == pytest.approx(-math.pi / 2, abs=1e-4)


@pytest.mark.parametrize("cpu_kernels", [False, True])
def test_vertical_command_is_clipped_as_px4_does(device, cpu_kernels):
    """PX4 clips the climb/descent setpoint (MPC_Z_VEL_MAX_UP 3 / _DN 1.5 m/s) before control."""
    cfg = DirectDynamicsConfig(cpu_kernels=cpu_kernels)
    assert (cfg.max_climb_rate_m_s, cfg.max_descent_rate_m_s) == (3.0, 1.5)
    model = DirectDynamics(1, 4, 0.1, device, config=cfg)
    airborne(model, altitude=500.0)
    # full climb, full descent, half descent (2.5 m/s -> 1.5), a small climb inside the limits
    action = torch.tensor(
        [[[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 0.0, -0.5, 0.0], [0, 0, 0.2, 0]]],
        device=device,
    )
    for _ in range(300):
        model.step(action)
    vz = model.state.vel_enu_m_s[0, :, 2].tolist()
    assert vz == pytest.approx([3.0, -1.5, -1.5, 1.0], abs=1e-3)
    lim = DirectDynamicsConfig(max_climb_rate_m_s=4.0, max_descent_rate_m_s=None)
    model = DirectDynamics(1, 2, 0.1, device, config=lim)
    airborne(model, altitude=500.0)
    for _ in range(300):
        model.step(action[:, :2])
    assert model.state.vel_enu_m_s[0, :, 2].tolist() == pytest.approx([4.0, -5.0], abs=1e-3)


def test_vertical_action_bounds():
    from isr_direct_dynamics.direct import vertical_action_bounds

    assert vertical_action_bounds(DirectDynamicsConfig()) == pytest.approx((-0.3, 0.6))
    off = DirectDynamicsConfig(max_climb_rate_m_s=None, max_descent_rate_m_s=None)
    assert vertical_action_bounds(off) is None
    wide = DirectDynamicsConfig(max_climb_rate_m_s=7.0, max_descent_rate_m_s=6.0)
    assert vertical_action_bounds(wide) is None


def test_unclipped_diagonal_scales_each_axis(device):
    cfg = from_dict(DirectDynamicsConfig, {"limits": {"clip_horizontal_norm": False}})
    model = DirectDynamics(1, 1, 0.1, device, config=cfg)
    airborne(model)
    for _ in range(200):
        model.step(const_action(model, [1.0, 1.0, 0.0, 0.0]))
    assert model.state.vel_enu_m_s[0, 0, 1].item() == pytest.approx(10.0, abs=1e-3)


def test_yaw_rate_integrates_heading(device):
    cfg = DirectDynamicsConfig(tau_yaw_s=0.2)
    model = DirectDynamics(1, 1, 0.01, device, config=cfg)
    airborne(model)
    for _ in range(100):  # 1 s at 45 deg/s commanded
        model.step(const_action(model, [0.0, 0.0, 0.0, 0.5]))
    expected = math.radians(45.0) * (1.0 - 0.2 * (1 - math.exp(-1.0 / 0.2)))
    assert model.state.yaw_rad[0, 0].item() == pytest.approx(expected, rel=1e-3)
    assert quat_yaw(model.state.quat_wxyz)[0, 0].item() == pytest.approx(expected, abs=1e-3)


def test_transport_delay(device):
    cfg = DirectDynamicsConfig(delay_steps=3)
    model = DirectDynamics(1, 2, 0.1, device, config=cfg)
    params = model.params
    params.delay_steps[0, 1] = 0  # per-drone delay: the second drone has none
    model.set_params(params)
    airborne(model)
    action = const_action(model, [1.0, 0.0, 0.0, 0.0])
    speeds = []
    for _ in range(5):
        model.step(action)
        speeds.append(model.state.vel_enu_m_s[0, :, 0].tolist())
    assert [s[0] for s in speeds[:3]] == [0.0, 0.0, 0.0]
    assert speeds[3][0] > 0.0
    assert speeds[0][1] > 0.0
    assert speeds[3][0] == pytest.approx(speeds[0][1], rel=1e-6)


def test_ground_clamp(device):
    model = DirectDynamics(1, 1, 0.1, device)
    airborne(model, 1.0)
    for _ in range(30):
        state = model.step(const_action(model, [0.0, 0.0, -1.0, 0.0]))
        assert state.pos_enu_m[0, 0, 2].item() >= 0.0
    assert bool(state.ground_contact[0, 0])
    assert state.vel_enu_m_s[0, 0, 2].item() == 0.0
    state = model.step(const_action(model, [0.0, 0.0, 1.0, 0.0]))  # take off again
    assert not bool(state.ground_contact[0, 0]) and state.pos_enu_m[0, 0, 2].item() > 0.0


def test_custom_terrain(device):
    model = DirectDynamics(
        1, 1, 0.1, device, terrain_height_fn=lambda p: torch.full_like(p[..., 0], 12.0)
    )
    airborne(model, 15.0)
    for _ in range(30):
        model.step(const_action(model, [0.0, 0.0, -1.0, 0.0]))
    assert model.state.pos_enu_m[0, 0, 2].item() == pytest.approx(12.0)


def test_nonfinite_actions_are_zero_commands_and_counted(device):
    model = DirectDynamics(2, 1, 0.1, device)
    airborne(model)
    action = torch.tensor([[[float("nan"), 1.0, 0.0, 0.0]], [[1.0, 0.0, 0.0, 0.0]]], device=device)
    for _ in range(3):
        model.step(action)
    action[1, 0, 3] = float("inf")
    state = model.step(action)
    assert int(model.nonfinite_action_count) == 3 + 2
    assert torch.isfinite(state.pos_enu_m).all() and torch.isfinite(state.quat_wxyz).all()
    assert state.vel_enu_m_s[0, 0, 1].item() == 0.0  # the whole NaN command became zero


def test_wrong_action_shape_is_an_error(device):
    model = DirectDynamics(2, 3, 0.1, device)
    with pytest.raises(ValueError, match=r"action has shape \(2, 3\), expected \(2, 3, 4\)"):
        model.step(torch.zeros(2, 3, device=device))


def test_determinism_with_noise(device):
    cfg = DirectDynamicsConfig(vel_noise_m_s_per_sqrt_s=0.3, pos_noise_m_per_sqrt_s=0.05)
    runs = []
    for _ in range(2):
        model = DirectDynamics(2, 3, 0.05, device, seed=7, config=cfg)
        airborne(model)
        gen = torch.Generator(device=device).manual_seed(1)
        for _ in range(30):
            model.step(torch.rand(2, 3, 4, generator=gen, device=device) * 2 - 1)
        runs.append(model.state.clone())
    assert torch.equal(runs[0].pos_enu_m, runs[1].pos_enu_m)
    assert torch.equal(runs[0].quat_wxyz, runs[1].quat_wxyz)
    other = DirectDynamics(2, 3, 0.05, device, seed=8, config=cfg)
    airborne(other)
    for _ in range(3):
        other.step(torch.zeros(2, 3, 4, device=device))
    assert not torch.equal(other.state.pos_enu_m, runs[0].pos_enu_m)


def test_masked_reset_touches_only_masked(device):
    cfg = DirectDynamicsConfig(delay_steps=2, slow_fraction_horizontal=0.3)
    model = DirectDynamics(2, 2, 0.1, device, config=cfg)
    airborne(model)
    gen = torch.Generator(device=device).manual_seed(0)
    for _ in range(10):
        model.step(torch.rand(2, 2, 4, generator=gen, device=device) * 2 - 1)
    before = model.state.clone()
    mask = torch.tensor([[True, False], [False, False]], device=device)
    init = InitialState(
        pos_enu_m=torch.full((2, 2, 3), 7.0, device=device),
        yaw_rad=torch.full((2, 2), 0.5, device=device),
    )
    model.reset(mask, init)
    s = model.state
    assert torch.equal(s.pos_enu_m[0, 0], torch.full((3,), 7.0, device=device))
    assert s.vel_enu_m_s[0, 0].abs().max().item() == 0.0
    assert s.yaw_rad[0, 0].item() == pytest.approx(0.5)
    keep = ~mask
    assert torch.equal(s.pos_enu_m[keep], before.pos_enu_m[keep])
    assert torch.equal(s.vel_enu_m_s[keep], before.vel_enu_m_s[keep])
    # The reset drone starts clean (no stale delayed command), the others keep their history.
    zero = torch.zeros(2, 2, 4, device=device)
    model.step(zero)
    assert model.state.vel_enu_m_s[0, 0].abs().max().item() == 0.0


def test_damping_per_step_is_converted(device):
    cfg = DirectDynamicsConfig(damping_per_step=0.95, tilt_from_acceleration=False)
    model = DirectDynamics(1, 1, 1.0 / 60.0, device, config=cfg)
    airborne(model)
    model.step(const_action(model, [1.0, 0.0, 0.0, 0.0]))
    # The plan's update v <- 0.95 v + 0.05 c, at its reference period.
    assert model.state.vel_enu_m_s[0, 0, 0].item() == pytest.approx(0.5, rel=1e-5)
    assert model.config.tau_horizontal_s == pytest.approx(-(1 / 60) / math.log(0.95))


def test_slow_pole_reaches_command(device):
    cfg = DirectDynamicsConfig(slow_fraction_horizontal=0.25, tau_slow_horizontal_s=2.0)
    model = DirectDynamics(1, 1, 0.05, device, config=cfg)
    airborne(model)
    action = const_action(model, [0.4, 0.0, 0.0, 0.0])
    for _ in range(60):  # 3 s: fast pole done, slow pole not yet
        model.step(action)
    v3 = model.state.vel_enu_m_s[0, 0, 0].item()
    assert 3.0 < v3 < 0.95 * 4.0
    for _ in range(600):
        model.step(action)
    assert model.state.vel_enu_m_s[0, 0, 0].item() == pytest.approx(4.0, rel=1e-3)


def test_tilt_follows_acceleration(device):
    model = DirectDynamics(1, 1, 0.05, device)
    airborne(model)
    state = model.step(const_action(model, [1.0, 0.0, 0.0, 0.0]))
    body_z = quat_rotate(state.quat_wxyz, torch.tensor([0.0, 0.0, 1.0], device=device))
    assert body_z[0, 0, 0].item() > 0.1  # thrust tilted towards +x (east) to accelerate east
    assert tilt_angle(state.quat_wxyz).max().item() <= math.radians(45.0) + 1e-4
    norm = torch.linalg.vector_norm(state.quat_wxyz, dim=-1)
    torch.testing.assert_close(norm, torch.ones_like(norm))
    for _ in range(200):
        state = model.step(const_action(model, [1.0, 0.0, 0.0, 0.0]))
    assert tilt_angle(state.quat_wxyz).max().item() < 1e-3  # steady speed: level again


def test_tilt_balances_drag_at_steady_speed(device):
    """With drag/mass c, steady level flight at v leans atan(c v / g), nose into the motion."""
    cfg = DirectDynamicsConfig(tilt_drag_1_s=0.5)
    model = DirectDynamics(1, 1, 0.05, device, config=cfg)
    airborne(model)
    for _ in range(400):
        state = model.step(const_action(model, [0.4, 0.0, 0.0, 0.0]))  # 4 m/s east
    v = state.vel_enu_m_s[0, 0, 0].item()
    assert v == pytest.approx(4.0, rel=1e-3)
    expected = math.atan(0.5 * v / 9.80665)
    assert tilt_angle(state.quat_wxyz).item() == pytest.approx(expected, abs=1e-3)
    body_z = quat_rotate(state.quat_wxyz, torch.tensor([0.0, 0.0, 1.0], device=device))
    assert body_z[0, 0, 0].item() > 0.1  # leaning east: thrust pushes against the drag
    with pytest.raises(ConfigError, match="tilt_drag_1_s"):
        DirectDynamicsConfig(tilt_drag_1_s=-1.0).validate()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"tau_horizontal_s": -0.1}, "tau_horizontal_s"),
        ({"delay_steps": -1}, "delay_steps"),
        ({"damping_per_step": 1.5}, "damping_per_step"),
        ({"limits": {"max_velocity_m_s": 0.0}}, "limits.max_velocity_m_s"),
        ({"tau_vertical": 0.3}, "tau_vertical"),
        ({"limits": {"max_speed": 3.0}}, "limits.max_speed"),
        ({"tau_yaw_s": "fast"}, "tau_yaw_s"),
        ({"max_climb_rate_m_s": 0.0}, "max_climb_rate_m_s"),
        ({"max_descent_rate_m_s": -1.5}, "max_descent_rate_m_s"),
    ],
)
def test_bad_config_names_the_field(data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        from_dict(DirectDynamicsConfig, data)


def test_factory_rejects_unknown_model():
    with pytest.raises(ConfigError, match="unknown vehicle model 'helicopter'"):
        make_vehicle_model("helicopter", 1, 1, 0.1)


def test_compiled_kernel_matches_eager():
    pytest.importorskip("torch._inductor", reason="torch.compile backend not available")
    runs = []
    for compiled in (False, True):
        model = DirectDynamics(4, 2, 0.1, "cpu", compile_step=compiled)
        airborne(model)
        gen = torch.Generator().manual_seed(0)
        for _ in range(10):
            model.step(torch.rand(4, 2, 4, generator=gen) * 2 - 1)
        runs.append(model.state.clone())
    torch.testing.assert_close(runs[0].pos_enu_m, runs[1].pos_enu_m, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(runs[0].quat_wxyz, runs[1].quat_wxyz, atol=1e-5, rtol=1e-5)


def test_vertical_coupling_scales_horizontal_acceleration(device):
    """Climbing while accelerating sideways gives more horizontal acceleration, sinking less."""
    first_dv = {}
    for k in (0.0, 1.0):
        cfg = DirectDynamicsConfig(tau_vertical_s=0.2, vertical_coupling=k)
        model = DirectDynamics(1, 3, 0.05, device, config=cfg)
        airborne(model)
        # Drone 0: sideways only; drone 1: sideways + climb; drone 2: sideways + sink.
        act = torch.tensor([[[0.5, 0, 0, 0], [0.5, 0, 1.0, 0], [0.5, 0, -1.0, 0]]], device=device)
        state = model.step(act)
        first_dv[k] = state.vel_enu_m_s[0, :, 0].clone()
        az = state.vel_enu_m_s[0, :, 2] / 0.05
        if k == 0.0:
            torch.testing.assert_close(first_dv[k], first_dv[k][:1].expand(3))
        else:
            expected = first_dv[0.0] * (1 + az / 9.80665).clamp(0, 2)
            torch.testing.assert_close(first_dv[k], expected, rtol=1e-5, atol=1e-6)
    assert first_dv[1.0][1] > first_dv[0.0][1] and first_dv[1.0][2] < first_dv[0.0][2]


def test_horizontal_acceleration_limit_and_position_consistency(device):
    dt, a_max = 0.05, 4.0
    cfg = DirectDynamicsConfig(tau_horizontal_s=0.3, max_horizontal_accel_m_s2=a_max)
    model = DirectDynamics(1, 2, dt, device, config=cfg)
    airborne(model)
    act = torch.tensor([[[1.0, 0.0, 0, 0], [0.6, -0.8, 0, 0]]], device=device)
    vel_prev = model.state.vel_enu_m_s.clone()
    pos_prev = model.state.pos_enu_m.clone()
    for _ in range(100):
        state = model.step(act)
        dv = (state.vel_enu_m_s - vel_prev)[..., :2].norm(dim=-1)
        assert bool((dv <= a_max * dt * (1 + 1e-4)).all())
        # The position moves between the old and the new velocity (no jumps).
        step = (state.pos_enu_m - pos_prev)[..., :2] / dt
        lo = torch.minimum(vel_prev, state.vel_enu_m_s)[..., :2] - 1e-4
        hi = torch.maximum(vel_prev, state.vel_enu_m_s)[..., :2] + 1e-4
        assert bool(((step >= lo) & (step <= hi)).all())
        vel_prev, pos_prev = state.vel_enu_m_s.clone(), state.pos_enu_m.clone()
    # The limit only slows the response: the command is still reached.
    torch.testing.assert_close(
        state.vel_enu_m_s[0, :, :2], torch.tensor([[10.0, 0.0], [6.0, -8.0]], device=device),
        atol=0.05, rtol=0,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="max_horizontal_accel_m_s2"):
        DirectDynamicsConfig(max_horizontal_accel_m_s2=-1.0).validate()
    with pytest.raises(ConfigError, match="vertical_coupling"):
        DirectDynamicsConfig(vertical_coupling=float("nan")).validate()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"tilt_from_acceleration": False, "limits": {"clip_horizontal_norm": False}},
        {
            "slow_fraction_horizontal": 0.3,
            "slow_fraction_vertical": 0.2,
            "vertical_coupling": 1.5,
            "max_horizontal_accel_m_s2": 4.0,
            "tilt_drag_1_s": 0.5,
            "delay_steps": 2,
            "vel_noise_m_s_per_sqrt_s": 0.2,
            "pos_noise_m_per_sqrt_s": 0.05,
        },
    ],
)
def test_numba_step_matches_torch(options):
    """DirectDynamicsConfig.cpu_kernels: the numba step flies the torch step's trajectories
    (every option on, per-drone parameters, landing on the ground, resets, noise)."""
    from isr_direct_dynamics import cpu_kernels

    if not cpu_kernels.AVAILABLE:
        pytest.fail("numba is a dependency (requirements.txt) but cannot be imported")
    runs = []
    for numba_on in (False, True):
        cfg = from_dict(DirectDynamicsConfig, {**options, "cpu_kernels": numba_on})
        model = DirectDynamics(3, 4, 0.1, "cpu", seed=3, config=cfg)
        assert model.numba_step == numba_on
        p = model.params
        p.tau_horizontal_s = p.tau_horizontal_s * torch.linspace(0.5, 1.5, 12).view(3, 4)
        model.set_params(p)
        airborne(model, 5.0)
        gen = torch.Generator().manual_seed(1)
        states = []
        for k in range(80):
            action = torch.rand(3, 4, 4, generator=gen) * 2 - 1
            if k < 45:
                action[0, :, 2] = -1.0  # world 0 descends onto the ground (at 1.5 m/s)
            if k == 50:
                model.reset(
                    torch.rand(3, 4, generator=gen) < 0.5,
                    InitialState(
                        pos_enu_m=torch.full((3, 4, 3), 12.0), yaw_rad=torch.full((3, 4), 1.0)
                    ),
                )
            states.append(model.step(action).clone())
        runs.append(states)
    landed = 0
    for s0, s1 in zip(*runs, strict=True):
        for name in ("pos_enu_m", "vel_enu_m_s", "quat_wxyz", "yaw_rad", "body_rates_flu_rad_s"):
            torch.testing.assert_close(getattr(s1, name), getattr(s0, name), atol=2e-5, rtol=1e-5)
        assert torch.equal(s0.ground_contact, s1.ground_contact)
        landed += int(s0.ground_contact.sum())
    assert landed > 0
