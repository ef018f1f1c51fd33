"""What every rclpy node of the workspace shares: parameters from a defaults dict, the main loop.

Imported only by the nodes (rclpy is imported inside the functions, so this module loads without
ROS 2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def declare_parameters(node: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """Declare every parameter of ``defaults`` on ``node``; return their values (name -> value)."""
    for name, value in defaults.items():
        node.declare_parameter(name, value)
    return {name: node.get_parameter(name).value for name in defaults}


def run_node(
    make_node: Callable[[], Any],
    args: list[str] | None = None,
    until_done: bool = False,
    spin_timeout_s: float = 0.1,
    finish: Callable[[Any], None] | None = None,
) -> None:
    """``rclpy.init``, build the node, spin, clean up (Ctrl-C ends quietly).

    ``until_done``: spin until ``node.done`` is true (a job node), then call ``finish(node)``;
    otherwise spin until shutdown.
    """
    import rclpy

    rclpy.init(args=args)
    node = make_node()
    try:
        if until_done:
            while rclpy.ok() and not node.done:
                rclpy.spin_once(node, timeout_sec=spin_timeout_s)
            if finish is not None:
                finish(node)
        else:
            rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


__all__ = ["declare_parameters", "run_node"]
