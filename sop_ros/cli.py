"""The `sop` command: one subcommand per module in sop_ros.commands.

Each module defines `add_parser(subparsers)` that registers its subcommand and sets
`func` (called with the parsed args; returns the exit code). A subcommand exists only
when its work exists: nothing here is a placeholder.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from sop_ros.commands.errors import CliError

# Commands raise it (sop_ros.commands.errors); main prints it as one line.
from sop_ros.core.process_lifetime import die_with_launcher

# Order is the order in `sop --help`.
COMMAND_MODULES = (
    "sop_ros.commands.launch",
    "sop_ros.commands.fleet",
    "sop_ros.commands.bench",
    "sop_ros.commands.learner",
    "sop_ros.commands.certs",
    "sop_ros.commands.collect",
    "sop_ros.commands.eval",
    "sop_ros.commands.pretrain",
    "sop_ros.commands.dataset",
    "sop_ros.commands.experiment",
    "sop_ros.commands.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sop", description="SOP-ROS: online post-training of VLA policies across a ROS 2 fleet."
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    die_with_launcher()  # `sop learner` started by a fleet launcher stops with it
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"sop {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
