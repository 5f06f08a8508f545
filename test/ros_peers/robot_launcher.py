"""One robot of a fleet file under the pip-only launcher, as `sop launch FLEET --robot ID` runs it, with
per-node parameter overrides a fleet file cannot set (test-sized episodes, a video file as camera).

usage: robot_launcher.py FLEET_YAML ROBOT_ID OVERRIDES_JSON
The launcher runs in this process's main thread: SIGINT and SIGTERM stop the robot as they stop `sop launch`.
"""

import dataclasses
import json
import sys

from sop_ros.fleet.description import load_fleet
from sop_ros.fleet.launcher import FleetLauncher
from sop_ros.fleet.specs import NodeSpec, node_specs


def main() -> int:
    fleet_path, robot_id, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    specs = [
        dataclasses.replace(s, parameters={**s.parameters, **overrides.get(s.name, {})})
        for s in node_specs(load_fleet(fleet_path), robot_ids=[robot_id], with_learner=False)
        if isinstance(s, NodeSpec) and s.name != "monitor"  # RViz only: spare the two cores
    ]
    return FleetLauncher(specs).run()


if __name__ == "__main__":
    raise SystemExit(main())
