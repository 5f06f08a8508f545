"""The virtual clock against the real system (issue 15 item 2): do both give the same fleet?

A short wall-clock run (real processes: ROS nodes, the gRPC learner) and a virtual-clock run with the same
config and the learner rate measured in the wall-clock run must agree on episodes per robot-hour, the
operator's share of steps and learner updates per episode (within a tolerance, 15 % by default). Both are
`sop experiment` units; this reads their result.json files:

    sop experiment --clock wall --out W --duration-min 8 --robots 2 --seeds 1 --skip-scaling --methods sop_hg_dagger
    python -m sop_ros.experiment.cross_check rate W/runs/sop_hg_dagger-r2-s0/result.json        # -> updates/s
    sop experiment --clock virtual --out V ... --learner-updates-per-s <rate>                     # the same flags
    python -m sop_ros.experiment.cross_check compare W/runs/.../result.json V/runs/.../result.json

`compare` prints a markdown table (the figure, wall, virtual, virtual / wall) and exits 1 when a figure is
outside the tolerance.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

DEFAULT_TOLERANCE = 0.15  # the "within 15 %"


@dataclasses.dataclass(frozen=True)
class FleetFigures:
    """What a fleet run did, per unit of fleet time: the figures both clocks must agree on."""

    clock: str
    robots: int
    duration_s: float
    episodes: int
    learner_updates: int
    intervention_share: float
    achieved_step_hz: Optional[float]

    @property
    def episodes_per_robot_hour(self) -> float:
        return self.episodes / (self.robots * self.duration_s / 3600.0)

    @property
    def updates_per_episode(self) -> float:
        return self.learner_updates / self.episodes if self.episodes else float("nan")

    @property
    def learner_updates_per_s(self) -> float:
        return self.learner_updates / self.duration_s


def read_figures(result_path: Path) -> FleetFigures:
    """The figures of one `sop experiment` fleet run (its result.json); a clear error for any other file."""
    try:
        result = json.loads(Path(result_path).read_text())
        fleet, totals = result["fleet"], result["online_totals"]
        figures = FleetFigures(
            clock=str(fleet["clock"]),
            robots=int(result["robots"]),
            duration_s=float(result["duration_s"]),
            episodes=int(totals["episodes"]),
            learner_updates=int(result["learner_updates"]),
            intervention_share=float(totals["intervention_share"]),
            achieved_step_hz=fleet.get("achieved_step_hz"),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{result_path}: not a fleet run's result.json ({exc!r})") from exc
    if figures.robots < 1 or figures.duration_s <= 0:
        raise ValueError(f"{result_path}: a fleet run needs robots >= 1 and a positive duration")
    return figures


@dataclasses.dataclass(frozen=True)
class Comparison:
    figure: str
    wall: float
    virtual: float

    @property
    def ratio(self) -> float:
        return self.virtual / self.wall if self.wall else float("inf")

    def agrees(self, tolerance: float) -> bool:
        return abs(self.ratio - 1.0) <= tolerance


def compare(wall: FleetFigures, virtual: FleetFigures) -> list[Comparison]:
    if (wall.clock, virtual.clock) != ("wall", "virtual"):
        raise ValueError(f"compare a wall-clock run with a virtual-clock run, got {wall.clock} and {virtual.clock}")
    return [
        Comparison("episodes per robot-hour", wall.episodes_per_robot_hour, virtual.episodes_per_robot_hour),
        Comparison("operator share of steps", wall.intervention_share, virtual.intervention_share),
        Comparison("learner updates per episode", wall.updates_per_episode, virtual.updates_per_episode),
    ]


def markdown(wall: FleetFigures, virtual: FleetFigures, rows: Sequence[Comparison], tolerance: float) -> str:
    lines = [
        "| figure | wall clock | virtual clock | virtual / wall | within " + f"{tolerance:.0%} |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        verdict = "yes" if row.agrees(tolerance) else "**no**"
        lines.append(f"| {row.figure} | {row.wall:.3f} | {row.virtual:.3f} | {row.ratio:.3f} | {verdict} |")
    context = [
        f"| episodes | {wall.episodes} | {virtual.episodes} | | |",
        f"| learner updates (per s) | {wall.learner_updates} ({wall.learner_updates_per_s:.2f}) "
        f"| {virtual.learner_updates} ({virtual.learner_updates_per_s:.2f}) | | |",
        f"| robot steps per s (target: robot_hz) | {_hz(wall)} | {_hz(virtual)} | | |",
    ]
    return "\n".join(lines + context)


def _hz(figures: FleetFigures) -> str:
    return "-" if figures.achieved_step_hz is None else f"{figures.achieved_step_hz:.2f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sop_ros.experiment.cross_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    rate = commands.add_parser("rate", help="the learner updates per second a (wall-clock) run made")
    rate.add_argument("result", type=Path)
    both = commands.add_parser("compare", help="a wall-clock run against a virtual-clock run of the same config")
    both.add_argument("wall", type=Path)
    both.add_argument("virtual", type=Path)
    both.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="relative (default 0.15)")
    args = parser.parse_args(argv)
    try:
        if args.command == "rate":
            print(f"{read_figures(args.result).learner_updates_per_s:.4f}")
            return 0
        wall, virtual = read_figures(args.wall), read_figures(args.virtual)
        rows = compare(wall, virtual)
    except ValueError as exc:
        print(f"cross_check: {exc}", file=sys.stderr)
        return 2
    print(markdown(wall, virtual, rows, args.tolerance))
    return 0 if all(row.agrees(args.tolerance) for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
