"""Command latency of the full-fidelity quadrotor (``QuadrotorConfig.command_delay_steps``)."""

from __future__ import annotations

import pytest
import torch

from isr_direct_dynamics import InitialState
from isr_direct_dynamics.config import ConfigError
from isr_direct_dynamics.quadrotor import QuadrotorConfig, QuadrotorModel

torch.set_num_threads(1)


def _model(delay: int, worlds: int = 2, drones: int = 2) -> QuadrotorModel:
    cfg = QuadrotorConfig(physics_dt_s=0.01, command_delay_steps=delay)
    m = QuadrotorModel(worlds, drones, 0.1, seed=0, config=cfg)
    pos = torch.zeros(worlds, drones, 3)
    pos[..., 2] = 20.0
    m.reset(initial=InitialState(pos_enu_m=pos))
    return m


def _fly(m: QuadrotorModel, actions: torch.Tensor) -> torch.Tensor:
    out = []
    for a in actions:
        out.append(m.step(a).vel_enu_m_s.clone())
    return torch.stack(out)


def test_delay_shifts_the_response_by_k_steps() -> None:
    """A delayed model flies exactly the undelayed trajectory, k steps later (after hover)."""
    k, steps = 3, 12
    gen = torch.Generator().manual_seed(1)
    actions = torch.rand(steps, 2, 2, 4, generator=gen) * 2 - 1
    ref = _fly(_model(0), actions)
    # The delayed model sees zero commands for k steps: hover at rest, identical to the
    # reference fed k zero actions first.
    padded = torch.cat((torch.zeros(k, 2, 2, 4), actions))
    ref_padded = _fly(_model(0), padded)
    got = _fly(_model(k), actions)
    torch.testing.assert_close(got, ref_padded[:steps], rtol=0, atol=1e-6)
    assert got[:k].abs().max() < 1e-3  # hovering while the first command is in flight
    assert not torch.allclose(got, ref)


def test_reset_clears_only_masked_buffers() -> None:
    k = 2
    m = _model(k, worlds=1, drones=2)
    push = torch.zeros(1, 2, 4)
    push[..., 0] = 1.0  # full speed east, queued
    m.step(push)
    mask = torch.tensor([[True, False]])
    pos = torch.zeros(1, 2, 3)
    pos[..., 2] = 20.0
    m.reset(mask, InitialState(pos_enu_m=pos))
    zero = torch.zeros(1, 2, 4)
    assert m.step(zero).vel_enu_m_s[0, 1, 0].abs() < 1e-3  # still in flight
    v = m.step(zero).vel_enu_m_s  # drone 1's queued command arrives now, drone 0's was dropped
    assert v[0, 1, 0] > 0.02
    assert v[0, 0, 0].abs() < 1e-3


def test_bad_delay_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="command_delay_steps"):
        QuadrotorConfig(command_delay_steps=-1).validate()
