"""Both vehicle models behind the one interface: same action, same steady state."""

from __future__ import annotations

import math

import pytest
import torch

from isr_direct_dynamics import MODEL_NAMES, InitialState, make_vehicle_model

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_interface_shapes(name, device):
    model = make_vehicle_model(name, 2, 3, 0.1, device, seed=0)
    state = model.reset(initial=InitialState(pos_enu_m=torch.full((2, 3, 3), 10.0, device=device)))
    assert state.pos_enu_m.shape == (2, 3, 3)
    state = model.step(torch.zeros(2, 3, 4, device=device))
    assert state.quat_wxyz.shape == (2, 3, 4) and state.ground_contact.shape == (2, 3)


def test_models_agree_in_steady_state(device):
    """5 m/s east, 1 m/s up, 45 deg/s yaw (inside PX4's default limits): both settle there."""
    action = torch.tensor([0.5, 0.0, 0.2, 0.5], device=device).view(1, 1, 4)
    finals = {}
    for name in MODEL_NAMES:
        model = make_vehicle_model(name, 1, 1, 0.02, device, seed=0)
        model.reset(
            initial=InitialState(pos_enu_m=torch.tensor([[[0.0, 0.0, 30.0]]], device=device))
        )
        for _ in range(round(40.0 / 0.02)):  # PX4-like creep through the velocity integrator
            state = model.step(action)
        finals[name] = (state.vel_enu_m_s[0, 0].clone(), state.body_rates_flu_rad_s[0, 0, 2].item())
    for name, (vel, yaw_rate) in finals.items():
        speed_xy = torch.linalg.vector_norm(vel[:2]).item()
        assert speed_xy == pytest.approx(5.0, abs=0.1), name
        assert vel[2].item() == pytest.approx(1.0, abs=0.05), name
        # PX4 SIH settles a few percent short in yaw rate (angular damping against a limited
        # rate integrator); the real v1.15.4 SIH flight reached 0.58 for 0.6 rad/s commanded.
        assert yaw_rate == pytest.approx(math.radians(45.0), rel=0.08), name
    (v_a, r_a), (v_b, r_b) = finals.values()
    assert torch.linalg.vector_norm(v_a - v_b).item() < 0.15
