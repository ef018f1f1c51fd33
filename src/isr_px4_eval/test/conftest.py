"""Shared fixtures of the isr_px4_eval tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def _export_tiny_policy(out: Path, task_version: str | None = None, nan: bool = False) -> Path:
    from isr_training.env import EnvConfig, ISREnv
    from isr_training.export import export_policy
    from isr_training.models import BCPolicy
    from isr_training.task.config import TASK_VERSION

    obs_dim = ISREnv(EnvConfig(num_worlds=1)).obs_dim
    torch.manual_seed(0)
    policy = BCPolicy(obs_dim, 4, [16], "elu")
    if nan:  # a broken policy: every action NaN
        with torch.no_grad():
            for p in policy.parameters():
                p.fill_(float("nan"))
    meta = {
        "task_version": task_version or TASK_VERSION,
        "obs_dim": obs_dim,
        "action_dim": 4,
        "image_shape": None,
        "source": "test",
    }
    export_policy(policy, out, obs_dim, None, meta)
    return out


@pytest.fixture(scope="session")
def export_tiny_policy():
    """``export(out_dir, task_version=None, nan=False) -> out_dir``: a tiny untrained exported
    policy (with ``nan``: one whose every action is NaN)."""
    return _export_tiny_policy
