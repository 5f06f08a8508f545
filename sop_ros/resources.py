"""Where the package's data files (config/*.yaml, urdf/, base_policy/) are, in a checkout and when installed.

A checkout or editable install has them in <repo>/config; a CMake/colcon install (ament)
puts them in <prefix>/share/sop_ros/config, next to <prefix>/lib/pythonX.Y/site-packages/sop_ros.
The shipped base policy is package data inside sop_ros/ (setup.py package_data; CMake installs
the whole sop_ros/ directory), so it sits next to this module in every layout.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The directory holding fleet.yaml, robot.yaml, tasks.yaml, ..."""
    candidates = [_PACKAGE_DIR.parent / "config"]
    if len(_PACKAGE_DIR.parents) > 3:  # <prefix>/lib/pythonX.Y/site-packages/sop_ros
        candidates.append(_PACKAGE_DIR.parents[3] / "share" / "sop_ros" / "config")
    for candidate in candidates:
        if (candidate / "fleet.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"sop_ros config directory not found; looked in {', '.join(map(str, candidates))}")


def shipped_base_policy_dir() -> Path:
    """sop_ros/base_policy: the default base policy (model.safetensors + manifest.json) shipped with the package."""
    return _PACKAGE_DIR / "base_policy"


def default_urdf_path() -> Path:
    """urdf/sop_sim_arm.urdf, the simulated arm; installed next to config/ (share/sop_ros/urdf)."""
    return config_dir().parent / "urdf" / "sop_sim_arm.urdf"


def default_tasks_path() -> Path:
    """config/tasks.yaml: the package's task file (the single source of task defaults)."""
    return config_dir() / "tasks.yaml"


@functools.cache
def _node_sections(file_name: str) -> dict:
    path = config_dir() / file_name
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of node sections")
    return data


def node_defaults(section: str, file_name: str = "robot.yaml") -> dict[str, Any]:
    """One node's parameter defaults from config/<file_name> (the single source of those defaults)."""
    data = _node_sections(file_name)
    if section not in data:
        raise KeyError(f"{config_dir() / file_name}: no section '{section}'")
    return dict(data[section])


def robot_spool_max_bytes() -> int:
    """Spool size above which a robot's writes warn (config/robot.yaml episode_recorder.spool_max_bytes).

    The fleet description's per-robot default, so that a fleet and a node started alone agree.
    """
    return int(node_defaults("episode_recorder")["spool_max_bytes"])


def robot_control_rate_hz() -> float:
    """A robot's control rate (config/robot.yaml sim_robot.control_rate_hz), the fleet description's default."""
    return float(node_defaults("sim_robot")["control_rate_hz"])


def robot_execute_horizon() -> int:
    """Actions a robot's policy node executes from each chunk (config/robot.yaml policy.execute_horizon).

    Evaluations run chunks the same way, so a success rate measured offline is the fleet's.
    """
    return int(node_defaults("policy")["execute_horizon"])
