"""Node parameter defaults from config/*.yaml (the single source of defaults).

A node declares each parameter with `param(node, defaults, name, description)`; its default is
the value in config/robot.yaml (or config/teleop.yaml) under the node's section, so a default
changes in one place. Parameters the fleet description sets are passed by the launchers.
"""
from __future__ import annotations

from typing import Any

from rclpy.node import Node

from sop_ros.nodes._runtime import declare
from sop_ros.resources import node_defaults


class Params:
    """Declares parameters of one node with defaults from one config section."""

    def __init__(self, node: Node, section: str, file_name: str = "robot.yaml"):
        self._node = node
        self._defaults = node_defaults(section, file_name)
        self._where = f"config/{file_name}:{section}"

    def __call__(self, name: str, description: str) -> Any:
        if name not in self._defaults:
            raise KeyError(f"{self._where} has no default for parameter '{name}'")
        value = declare(self._node, name, self._defaults[name], description)
        return list(value) if isinstance(value, (list, tuple)) else value
