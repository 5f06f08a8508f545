"""Node parameter defaults from config/*.yaml (the single source of defaults).

A node declares each parameter with `param(node, defaults, name, description)`; its default is
the value in config/robot.yaml (or config/teleop.yaml) under the node's section, so a default
changes in one place. Parameters the fleet description sets are passed by the launchers.
"""
from __future__ import annotations

import functools
from typing import Any

import yaml
from rclpy.node import Node

from sop_ros.nodes._runtime import declare
from sop_ros.resources import config_dir

CONFIG_DIR = config_dir()


@functools.lru_cache(maxsize=None)
def _load(file_name: str) -> dict:
    path = CONFIG_DIR / file_name
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of node sections")
    return data


def node_defaults(section: str, file_name: str = "robot.yaml") -> dict[str, Any]:
    data = _load(file_name)
    if section not in data:
        raise KeyError(f"{CONFIG_DIR / file_name}: no section '{section}'")
    return dict(data[section])


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
