"""Arguments several `sop` commands share: one spelling, one default and one help text each.

The defaults are read from where they live: training from TrainerConfig (as `sop learner` does),
chunk execution from the robots' config/robot.yaml. Spellings follow `sop learner` where it has the
same setting (--batch-size, --lr, --seed, --torch-threads, --tasks-file, --data-dir).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sop_ros.core.evaluation.harness import DEFAULT_EVAL_EPISODES_PER_TASK, DEFAULT_EVAL_WORKERS
from sop_ros.resources import robot_execute_horizon

# The evaluation harness's defaults, shared with `sop bench operator`.
DEFAULT_WORKERS = DEFAULT_EVAL_WORKERS
EVAL_EPISODES_PER_TASK = DEFAULT_EVAL_EPISODES_PER_TASK


def add_task_arguments(parser: argparse.ArgumentParser, tasks_help: str = "comma-separated task ids") -> None:
    """--tasks (a subset) and --tasks-file (the task set; default the package's config/tasks.yaml)."""
    parser.add_argument("--tasks", help=f"{tasks_help} (default: all in the task file)")
    parser.add_argument("--tasks-file", type=Path, help="task file (default: config/tasks.yaml)")


def add_workers_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help=f"{what} (default min(2, cpus) = %(default)s)"
    )


def add_actions_per_query_argument(parser: argparse.ArgumentParser) -> None:
    """Evaluations execute chunks as the robots do, so an offline success rate is the fleet's."""
    parser.add_argument(
        "--actions-per-query",
        type=int,
        default=robot_execute_horizon(),
        help="execute this many actions of each chunk before re-querying the policy (default: as the "
        "robots, config/robot.yaml policy.execute_horizon = %(default)s)",
    )


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """--batch-size, --lr and --seed with TrainerConfig's defaults."""
    from sop_ros.core.training.trainer import TrainerConfig

    defaults = TrainerConfig()
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="training batch size (default %(default)s)"
    )
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, help="learning rate (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="torch / sampler seed (default %(default)s)")
