"""pytest plugin shared by every package of the workspace (registered as ``isr_testing``).

Provides the ``device`` fixture (CUDA where present, else CPU) and the ``unit`` /
``integration`` markers, so that ``pytest`` and ``colcon test`` see the same setup.
"""

from __future__ import annotations

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    """Register the workspace's markers."""
    config.addinivalue_line("markers", "unit: fast test of one function or class on tiny batches")
    config.addinivalue_line("markers", "integration: runs a real pipeline at tiny scale")
    config.addinivalue_line("markers", "slow: takes more than ~20 s on 2 CPU cores")


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device tests run on: ``cuda`` when available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
