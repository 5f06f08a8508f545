"""Node parameters: defaults from config/*.yaml (their single source), constraints next to the code.

A node declares each parameter with `p(name, description, value_range=..., on_change=...)`; its
default is the value in config/robot.yaml (or config/teleop.yaml) under the node's section, so a
default changes in one place. Parameters the fleet description sets are passed by the launchers
as start-up overrides.

Where each piece lives, and why:
- the default value: the YAML, which is what a fleet tunes;
- the range: at the declaration in the node, the code that depends on it (a rate must be > 0
  because the node divides by it). ROS checks it for start-up overrides and `ros2 param set` alike;
  the ranges several nodes share are the constants below.
- read-only: a parameter is read-only unless its declaration passes `on_change`, the function that
  applies a new value while the node runs. Ids, paths, topics and sizes are wired into
  subscriptions, stores and files at start-up; a setting a node reads only at start would be
  accepted by `ros2 param set` and silently do nothing. So those refuse changes instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from rclpy.node import Node

from sop_ros.nodes._runtime import ValueRange, declare
from sop_ros.resources import node_defaults

# Shared ranges (inclusive). Rates as the fleet description bounds control_rate_hz (<= 1000 Hz).
RATE_HZ: ValueRange = (0.1, 1000.0)
PERIOD_S: ValueRange = (0.01, 3600.0)  # timer periods and timeouts: > 0, at most an hour
PAUSE_S: ValueRange = (0.0, 3600.0)
AT_LEAST_ONE: ValueRange = (1, None)  # counts, dimensions, queue and window sizes
NON_NEGATIVE: ValueRange = (0, None)  # 0 = "off" / "unlimited" where the description says so
IMAGE_SIDE_PX: ValueRange = (1, 4096)
POSITION_SCALE_M: ValueRange = (1e-6, 1.0)  # metres of end-effector motion per unit action


class Params:
    """Declares parameters of one node with defaults from one config section."""

    def __init__(self, node: Node, section: str, file_name: str = "robot.yaml"):
        self._node = node
        self._defaults = node_defaults(section, file_name)
        self._where = f"config/{file_name}:{section}"
        self._on_change: dict[str, Callable[[Any], None]] = {}

    def __call__(
        self,
        name: str,
        description: str,
        *,
        value_range: Optional[ValueRange] = None,
        on_change: Optional[Callable[[Any], None]] = None,
    ) -> Any:
        if name not in self._defaults:
            raise KeyError(f"{self._where} has no default for parameter '{name}'")
        value = declare(
            self._node, name, self._defaults[name], description, value_range=value_range, read_only=on_change is None
        )
        if on_change is not None:
            if not self._on_change:
                self._node.add_post_set_parameters_callback(self._apply)
            self._on_change[name] = on_change
        return _plain(value)

    def _apply(self, parameters) -> None:
        # ROS calls this after it accepted the values (type and range checked); it also calls it for
        # each later declaration, which is not in _on_change yet.
        for parameter in parameters:
            if parameter.name in self._on_change:
                self._on_change[parameter.name](_plain(parameter.value))
                self._node.get_logger().info(f"parameter {parameter.name} = {parameter.value!r} (applied)")


def assign(obj: Any, attribute: str) -> Callable[[Any], None]:
    """on_change for a parameter the node keeps in an attribute it reads at each use."""
    return lambda value: setattr(obj, attribute, value)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value
