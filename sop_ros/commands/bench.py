"""`sop bench NAME`: benchmarks that print a table and, with --json PATH, the same figures as JSON.

Each benchmark is a module in sop_ros.bench exposing `add_arguments(parser)` and
`run(args) -> dict` (the figures); `render(figures)` prints its table.
"""

from __future__ import annotations

import argparse
import importlib

from sop_ros.bench.report import BenchArgumentError, write_json
from sop_ros.commands.errors import CliError

# name -> module; add a line when a benchmark lands.
BENCHMARKS: dict[str, str] = {
    "model": "sop_ros.bench.model",
    "transport": "sop_ros.bench.transport",
    "robots": "sop_ros.bench.robots",
    "operator": "sop_ros.bench.operator",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    if not BENCHMARKS:
        return  # no benchmark yet: no `sop bench` (absent, not a stub)
    parser = subparsers.add_parser("bench", help="run a benchmark; prints a table, --json PATH writes the figures")
    benches = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        sub = benches.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        sub.add_argument("--json", metavar="PATH", help="also write the figures as one JSON object to PATH")
        module.add_arguments(sub)
        sub.set_defaults(func=lambda args, module=module: _run(module, args))


def _run(module, args: argparse.Namespace) -> int:
    from sop_ros.core.robot.tasks import TaskConfigError
    from sop_ros.experiment.policy_sources import PolicySourceError

    try:
        figures = module.run(args)
    except (BenchArgumentError, PolicySourceError, TaskConfigError) as exc:
        raise CliError(str(exc)) from None
    module.render(figures)
    if args.json:
        write_json(args.json, figures)
    return 0
