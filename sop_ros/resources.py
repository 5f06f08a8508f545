"""Where the package's data files (config/*.yaml) are, in a checkout and when installed.

A checkout or editable install has them in <repo>/config; a CMake/colcon install (ament)
puts them in <prefix>/share/sop_ros/config, next to <prefix>/lib/pythonX.Y/site-packages/sop_ros.
"""
from __future__ import annotations

from pathlib import Path

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
