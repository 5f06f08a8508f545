"""`sop fleet check|nodes [FLEET.yaml]`: validate a fleet description, list what it starts."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from sop_ros.commands.errors import CliError
from sop_ros.fleet.description import FleetConfigError, default_fleet_path, load_fleet
from sop_ros.fleet.specs import NodeSpec, node_specs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fleet", help="validate a fleet description and list its nodes")
    actions = parser.add_subparsers(dest="fleet_action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate the fleet description; one line per problem, exit 2 if invalid")
    nodes = actions.add_parser("nodes", help="list the nodes and processes the launchers start")
    for sub in (check, nodes):
        sub.add_argument(
            "fleet",
            nargs="?",
            default=str(default_fleet_path()),
            help="fleet description (default: the embedded config/fleet.yaml)",
        )
    nodes.add_argument(
        "--robot", action="append", dest="robots", metavar="ROBOT_ID", help="only this robot (repeatable)"
    )
    check.set_defaults(func=_check)
    nodes.set_defaults(func=_nodes)


def _load(path: str):
    try:
        return load_fleet(path)
    except FleetConfigError as err:
        raise CliError(str(err)) from None


def _check(args: argparse.Namespace) -> int:
    fleet = _load(args.fleet)
    print(f"{args.fleet}: ok ({len(fleet.robots)} robots, learner {fleet.learner.address})")
    return 0


def _nodes(args: argparse.Namespace) -> int:
    fleet = _load(args.fleet)
    try:
        specs = node_specs(fleet, robot_ids=args.robots)
    except FleetConfigError as err:
        raise CliError(str(err)) from None
    table = Table(title=f"{fleet.fleet}: {len(specs)} processes")
    for col in ("name", "executable", "parameters", "remappings"):
        table.add_column(col)
    for spec in specs:
        if isinstance(spec, NodeSpec):
            table.add_row(
                spec.fully_qualified_name,
                spec.executable,
                ", ".join(f"{k}={v}" for k, v in spec.parameters.items()),
                ", ".join(f"{a}->{b}" for a, b in spec.remappings),
            )
        else:
            table.add_row(spec.name, f"python -m {spec.module}", " ".join(spec.args), "")
    Console().print(table)
    return 0
