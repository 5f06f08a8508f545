"""`sop collect`: record scripted-expert demonstrations in simulation into an offline-buffer directory.

Each demo is one episode file (<out>/<episode_id>.mcap, the fleet's episode format). The
MetaWorld expert stands in for the human teleoperator, so every step is marked actor=HUMAN with
policy_version 0, and the success label comes from the simulator (label_source=environment).
Episode i of a task uses seed `--seed + i` (the scene: goal and object placement); the default
seed range starts at 0 and `sop eval` defaults to seeds from 1,000,000, so demos and evaluation
scenes do not overlap.

--action-noise STD adds N(0, STD) to each expert action (then clipped to [-1, 1]) and records the
noisy action that was executed (the episode contract stores executed actions). It widens the
states the demos cover; research/metaworld-spike.md measured expert success 1.00 at STD 0.1 and
0.90-0.95 on push/pick-place at 0.3, so keep it <= 0.1 unless failed demos are wanted. Failed
demos are dropped unless --keep-failures.
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np

from sop_ros.commands.errors import CliError
from sop_ros.commands.options import add_task_arguments, add_workers_argument
from sop_ros.core.training.demo_recording import (
    DEMO_ROBOT_ID,
    DemoJob,
    DemoSettings,
    collect_demos,
    recorded_chunk_size,
)
from sop_ros.resources import node_defaults

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    camera = node_defaults("sim_robot")
    parser = subparsers.add_parser(
        "collect",
        help="record scripted-expert demos in simulation (offline buffer)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="offline-buffer directory (created if missing)")
    add_task_arguments(parser)
    parser.add_argument("--episodes-per-task", type=int, default=50, help="demos per task (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="first scene seed; episode i uses seed+i (default 0)")
    add_workers_argument(parser, "parallel processes")
    parser.add_argument(
        "--action-noise", type=float, default=0.0, help="std of Gaussian noise added to expert actions (default 0)"
    )
    parser.add_argument("--keep-failures", action="store_true", help="also write demos where the expert failed")
    parser.add_argument(
        "--robot-id", default=DEMO_ROBOT_ID, help="robot id recorded in the episodes (default %(default)s)"
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=recorded_chunk_size(),
        help="K of the (empty) proposed-chunk field; as the robots record (config/robot.yaml "
        "episode_recorder.chunk_size = %(default)s)",
    )
    parser.add_argument(
        "--width",
        type=int,
        default=camera["camera_width"],
        help="camera image width (default: as the sim robots, %(default)s)",
    )
    parser.add_argument(
        "--height",
        type=int,
        default=camera["camera_height"],
        help="camera image height (default: as the sim robots, %(default)s)",
    )
    parser.set_defaults(func=run)


def select_tasks(tasks_arg: Optional[str], tasks_file: Optional[Path]):
    """The task specs named by --tasks (default: all) from --tasks-file (default config/tasks.yaml)."""
    from sop_ros.core.robot.tasks import TaskConfigError, load_task_specs
    from sop_ros.core.robot.tasks import select_tasks as select
    from sop_ros.resources import default_tasks_path

    try:
        specs = load_task_specs(tasks_file or default_tasks_path())
    except TaskConfigError as exc:
        raise CliError(str(exc)) from None
    try:
        return select(specs, tasks_arg)
    except TaskConfigError as exc:
        raise CliError(f"--tasks: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sop_ros.backends.metaworld_sim import SimCameraConfig, make_backend
    from sop_ros.bench.report import print_table

    if args.episodes_per_task <= 0:
        raise CliError("--episodes-per-task must be positive")
    if args.workers <= 0 or args.chunk_size <= 0:
        raise CliError("--workers and --chunk-size must be positive")
    if not 0.0 <= args.action_noise <= 1.0:
        raise CliError("--action-noise must be in [0, 1]")
    if args.seed < 0:
        raise CliError("--seed must be >= 0")
    specs = select_tasks(args.tasks, args.tasks_file)
    try:
        # The sim robots' field of view (config/robot.yaml): demos see the scene as the fleet does.
        fovy_deg = node_defaults("sim_robot")["camera_fovy_deg"]
        camera = SimCameraConfig(width=args.width, height=args.height, fovy_deg=fovy_deg)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    env_factory = functools.partial(make_backend, specs, camera)
    settings = DemoSettings(str(args.out), args.robot_id, args.chunk_size, args.action_noise, args.keep_failures)
    jobs = [DemoJob(task_id, args.seed + i) for task_id in specs for i in range(args.episodes_per_task)]
    console = Console()
    start = time.perf_counter()
    with Progress(
        TextColumn("collect"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        bar = progress.add_task("demos", total=len(jobs))
        results = collect_demos(env_factory, jobs, settings, args.workers, on_result=lambda _r: progress.advance(bar))
    elapsed = time.perf_counter() - start
    rows = []
    for task_id in specs:
        mine = [r for r in results if r.task_id == task_id]
        ok = [r for r in mine if r.success]
        rows.append(
            [
                task_id,
                len(mine),
                len(ok),
                sum(r.path is not None for r in mine),
                float(np.mean([r.steps for r in ok])) if ok else 0.0,
            ]
        )
    print_table(
        f"demos in {args.out} ({elapsed:.1f} s, {sum(r.steps for r in results) / elapsed:.0f} steps/s)",
        ["task", "episodes", "expert successes", "files written", "mean steps (success)"],
        rows,
        console,
    )
    return 0
