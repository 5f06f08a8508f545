"""`sop launch [FLEET.yaml]`: start a fleet (or one robot of it) without ros2 launch."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from sop_ros.commands.errors import CliError
from sop_ros.fleet.description import FleetConfigError, default_fleet_path, load_fleet
from sop_ros.fleet.launcher import FleetLauncher, command_for
from sop_ros.fleet.specs import node_specs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "launch",
        help="start the fleet's nodes as supervised processes (pip-only ros2 launch)",
        description="Start every process the fleet description names, supervise them (prefixed logs, "
        "respawn per robot setting) and stop all of them on Ctrl-C or SIGTERM. The same node list as "
        "launch/fleet.launch.py.",
    )
    parser.add_argument(
        "fleet",
        nargs="?",
        default=str(default_fleet_path()),
        help="fleet description (default: the embedded config/fleet.yaml)",
    )
    parser.add_argument(
        "--robot",
        action="append",
        dest="robots",
        metavar="ROBOT_ID",
        help="start only this robot's nodes (repeatable), e.g. on the robot's own computer",
    )
    learner = parser.add_mutually_exclusive_group()
    learner.add_argument(
        "--learner", dest="with_learner", action="store_true", default=None, help="also start the learner here"
    )
    learner.add_argument(
        "--no-learner", dest="with_learner", action="store_false", help="do not start the learner (it runs elsewhere)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the processes that would start and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        fleet = load_fleet(args.fleet)
        specs = node_specs(fleet, robot_ids=args.robots, with_learner=args.with_learner)
    except FleetConfigError as err:
        raise CliError(str(err)) from None
    if args.dry_run:
        with tempfile.TemporaryDirectory() as tmp:
            for spec in specs:
                print(" ".join(command_for(spec, Path(tmp))))
        return 0
    return FleetLauncher(specs).run()
