"""The shared node helpers load without ROS 2 and declare parameters from a defaults dict."""

from __future__ import annotations

from types import SimpleNamespace

from isr_direct_dynamics.ros_node import declare_parameters


class FakeNode:
    """Just the two rclpy Node methods declare_parameters uses (values may be overridden)."""

    def __init__(self, overrides: dict) -> None:
        self.declared: dict = {}
        self.overrides = overrides

    def declare_parameter(self, name, value):
        self.declared[name] = value

    def get_parameter(self, name):
        return SimpleNamespace(value=self.overrides.get(name, self.declared[name]))


def test_declare_parameters_declares_every_default_and_reads_back():
    node = FakeNode({"num_drones": 8})
    p = declare_parameters(node, {"num_drones": 4, "device": "cpu"})
    assert node.declared == {"num_drones": 4, "device": "cpu"}
    assert p == {"num_drones": 8, "device": "cpu"}
