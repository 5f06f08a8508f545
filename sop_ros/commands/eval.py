"""`sop eval CHECKPOINT`: closed-loop success per task in simulation, with 95% Wilson intervals.

CHECKPOINT is one of:
  - a checkpoint-store version directory (vNNNNNN/ with model.safetensors + manifest.json; the
    weights' hash is verified against the manifest before use),
  - a policy file written by VLAPolicy.save (*.safetensors),
  - `expert` (the scripted MetaWorld expert: the ceiling) or `random` (uniform actions: the floor).
Every task is evaluated on the same scene seeds (--seed .. --seed+N-1; default from 1,000,000 so
they are disjoint from `sop collect`'s default demo seeds).
"""

from __future__ import annotations

import argparse
import functools
from typing import Optional

from sop_ros.commands.errors import CliError
from sop_ros.commands.options import (
    EVAL_EPISODES_PER_TASK,
    add_actions_per_query_argument,
    add_task_arguments,
    add_workers_argument,
)
from sop_ros.core.evaluation.harness import DEFAULT_EVAL_SEED


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint in simulation: per-task success with 95%% CI",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="checkpoint version dir, policy .safetensors file, or 'expert' / 'random'")
    add_task_arguments(parser)
    parser.add_argument(
        "--episodes-per-task", type=int, default=EVAL_EPISODES_PER_TASK, help="episodes per task (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED, help="first scene seed (default %(default)s)")
    add_workers_argument(parser, "parallel processes")
    add_actions_per_query_argument(parser)
    parser.add_argument("--device", help="torch device for the policy (default: the model's default)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.set_defaults(func=run)


def resolve_policy_factory(checkpoint: str, device: Optional[str]):
    """experiment.policy_sources.resolve_policy_factory with its refusal as a CliError."""
    from sop_ros.experiment.policy_sources import PolicySourceError
    from sop_ros.experiment.policy_sources import resolve_policy_factory as resolve

    try:
        return resolve(checkpoint, device)
    except PolicySourceError as exc:
        raise CliError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from sop_ros.backends.metaworld_sim import make_backend
    from sop_ros.bench.report import write_json
    from sop_ros.commands.collect import select_tasks
    from sop_ros.core.evaluation.harness import evaluate

    if args.episodes_per_task <= 0 or args.workers <= 0:
        raise CliError("--episodes-per-task and --workers must be positive")
    if args.actions_per_query <= 0:
        raise CliError("--actions-per-query must be positive")
    specs = select_tasks(args.tasks, args.tasks_file)
    policy_factory = resolve_policy_factory(args.checkpoint, args.device)
    console = Console()
    total = len(specs) * args.episodes_per_task
    with Progress(
        TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        bar = progress.add_task("episodes", total=total)
        report = evaluate(
            policy_factory,
            functools.partial(make_backend, specs),
            list(specs),
            args.episodes_per_task,
            seeds=range(args.seed, args.seed + args.episodes_per_task),
            workers=args.workers,
            actions_per_query=args.actions_per_query,
            on_episode=lambda _o: progress.advance(bar),
        )
    table = Table(title=f"sop eval {args.checkpoint}: seeds {args.seed}..{args.seed + args.episodes_per_task - 1}")
    for col in ("task", "success", "95% CI", "episodes", "mean steps"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for t in report.tasks:
        table.add_row(
            t.task_id,
            f"{t.success_rate:.2f}",
            f"[{t.ci_low:.2f}, {t.ci_high:.2f}]",
            str(t.episodes),
            f"{t.mean_steps:.1f}",
        )
    table.add_row("all", f"{report.overall_success_rate:.2f}", "", str(total), "")
    console.print(table)
    if args.json:
        payload = report.as_dict()
        payload.update(checkpoint=args.checkpoint, seed=args.seed)
        write_json(args.json, payload)
    return 0
