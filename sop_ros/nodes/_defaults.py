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

import math
from collections.abc import Callable
from typing import Any, Optional, Union

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterValueException
from rclpy.node import Node

from sop_ros.resources import node_defaults

# (low, high) of a numeric parameter, both inclusive (as ROS checks them); high None = no upper bound.
ValueRange = tuple[Union[int, float], Optional[Union[int, float]]]
_INT64_MAX = 2**63 - 1


def declare(
    node: Node,
    name: str,
    default,
    description: str,
    *,
    value_range: Optional[ValueRange] = None,
    read_only: bool = False,
):
    """Declare a parameter with its descriptor and return its value.

    value_range becomes the descriptor's IntegerRange (int default) or FloatingPointRange (float default), so
    ROS refuses an out-of-range value both as a start-up override and from `ros2 param set`; read_only
    parameters cannot be set after the node started. A bad start-up value raises ValueError naming it.
    """
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if value_range is not None:
        low, high = value_range
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            raise TypeError(f"parameter '{name}': a range needs a numeric default, got {default!r}")
        if isinstance(default, int) and isinstance(low, float):
            # The default's type is the parameter's type: 10 would make a rate an integer parameter.
            raise ValueError(f"parameter '{name}': write its default {default!r} as a float ({default}.0)")
        if isinstance(default, int):
            top = _INT64_MAX if high is None else int(high)
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=top)]
        else:
            top = math.inf if high is None else float(high)
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=top)]
    try:
        return node.declare_parameter(name, default, descriptor).value
    except InvalidParameterValueException as exc:
        raise ValueError(f"parameter '{name}': {exc}") from None


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
