"""`sop pretrain`: train the base policy by behaviour cloning on offline demos; publish it as checkpoint v1.

    sop pretrain --demos runs/demos --data-dir runs/learner     # collects default demos first if runs/demos is empty
    sop pretrain --demos runs/demos --data-dir runs/learner --max-minutes 15 --eval-every-updates 1000

The demos (episode files from `sop collect`) are ingested into <data-dir>/offline, an episode store
that is the learner's offline buffer, so the online learner (`sop learner --data-dir` the same
directory) trains on exactly the same data. Training (algorithm `bc`) pauses every
--eval-every-updates updates for a closed-loop evaluation in simulation (parallel worker processes,
validation scenes from seed 2,000,000: disjoint from the demo scenes and from `sop eval`'s); it stops
once the mean success has not risen for --patience evaluations (or at --max-minutes), and publishes
the best weights to <data-dir>/checkpoints as v1 (algorithm bc, no parent, eval success per task in
the manifest metrics). TensorBoard scalars go to <data-dir>/tensorboard/pretrain.

The default demo budget (--demos-per-task, used only when --demos holds no episode files) is
chosen so the base policy is clearly imperfect on the default task set; see docs/RESULTS.md,
section "Base policy".
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import time
from pathlib import Path

from sop_ros.commands.errors import CliError
from sop_ros.commands.options import (
    add_actions_per_query_argument,
    add_task_arguments,
    add_training_arguments,
    add_workers_argument,
)
from sop_ros.commands.plain_progress import add_progress_argument
from sop_ros.core.storage.data_layout import TENSORBOARD_DIR

log = logging.getLogger(__name__)

# Demos per task collected when --demos is empty (measured: docs/RESULTS.md, "Base policy"): with the
# tiny ResNet policy 5 give a clearly imperfect base (mean 0.42: push and pick-place 0.17), 10 already 0.79.
DEFAULT_DEMOS_PER_TASK = 5
DEFAULT_EVAL_EPISODES = 10  # validation episodes per task at each evaluation
TORCH_THREADS = min(2, os.cpu_count() or 1)  # training threads by default: a small machine evaluates too


# Long by design: one declaration per flag, the command's whole interface in one place.
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from sop_ros.core.training.pretrain import PretrainConfig

    stop = PretrainConfig()  # the stopping rule's defaults
    parser = subparsers.add_parser(
        "pretrain",
        help="train the base policy by BC on demos; publish it as checkpoint v1",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--demos", type=Path, required=True, help="directory of demo episode files (from `sop collect`)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        required=True,
        help="learner data dir: <data-dir>/offline (demo store), <data-dir>/checkpoints, <data-dir>/tensorboard",
    )
    # Not --config: `sop learner --config` is a settings file; `sop bench robots --preset` names a preset too.
    parser.add_argument("--preset", default="tiny", help="VLA model preset (default tiny)")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=stop.max_seconds / 60.0,
        help="wall-clock budget for training and evaluations; the final evaluation may run past it "
        "(default %(default)g)",
    )
    parser.add_argument(
        "--max-updates", type=int, default=stop.max_updates, help="stop after this many updates (default: no limit)"
    )
    parser.add_argument(
        "--eval-every-updates",
        type=int,
        default=stop.eval_every_updates,
        help="evaluate every N updates (default %(default)s)",
    )
    parser.add_argument(
        "--eval-episodes",
        type=int,
        default=DEFAULT_EVAL_EPISODES,
        help="evaluation episodes per task (default %(default)s)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=stop.patience,
        help="stop after this many evaluations without a new best mean success (default %(default)s)",
    )
    parser.add_argument(
        "--min-improvement",
        type=float,
        default=stop.min_improvement,
        help="a new best must beat the old mean success by more than this (default %(default)s)",
    )
    add_training_arguments(parser)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=TORCH_THREADS,
        help="torch threads for training (default min(2, cpus) = %(default)s)",
    )
    add_workers_argument(parser, "evaluation processes")
    add_actions_per_query_argument(parser)
    add_task_arguments(parser, "comma-separated task ids to collect demos for when --demos is empty")
    parser.add_argument(
        "--demos-per-task",
        type=int,
        default=DEFAULT_DEMOS_PER_TASK,
        help="demos per task to collect when --demos holds none (default %(default)s)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the run's summary (history, best, manifest) as JSON")
    add_progress_argument(parser)
    parser.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    positive = {
        "--max-minutes": args.max_minutes,
        "--eval-every-updates": args.eval_every_updates,
        "--eval-episodes": args.eval_episodes,
        "--patience": args.patience,
        "--batch-size": args.batch_size,
        "--lr": args.lr,
        "--torch-threads": args.torch_threads,
        "--workers": args.workers,
        "--demos-per-task": args.demos_per_task,
    }
    for flag, value in positive.items():
        if not value > 0:
            raise CliError(f"{flag} must be positive, got {value}")
    for flag, value in (("--max-updates", args.max_updates), ("--actions-per-query", args.actions_per_query)):
        if value is not None and value <= 0:
            raise CliError(f"{flag} must be positive, got {value}")
    if args.min_improvement < 0:
        raise CliError("--min-improvement must be >= 0")


def collect_demos_if_empty(args: argparse.Namespace, specs) -> None:
    from sop_ros.backends.metaworld_sim import make_backend
    from sop_ros.commands.collect import select_tasks
    from sop_ros.core.training.demo_recording import (
        DEMO_ROBOT_ID,
        DemoJob,
        DemoSettings,
        collect_demos,
        recorded_chunk_size,
    )
    from sop_ros.core.training.pretrain import episode_files

    if episode_files(args.demos):
        return
    chosen = select_tasks(args.tasks, args.tasks_file) if args.tasks else specs
    log.info("%s holds no demos: collecting %d per task for %s", args.demos, args.demos_per_task, list(chosen))
    jobs = [DemoJob(t, i) for t in chosen for i in range(args.demos_per_task)]
    settings = DemoSettings(str(args.demos), DEMO_ROBOT_ID, recorded_chunk_size(), 0.0, False)
    t0 = time.perf_counter()
    results = collect_demos(functools.partial(make_backend, chosen), jobs, settings, args.workers)
    log.info(
        "collected %d demos (%d expert failures dropped) in %.1f s",
        sum(r.path is not None for r in results),
        sum(r.path is None for r in results),
        time.perf_counter() - t0,
    )


def evaluate_candidate(policy, path: Path, specs, tasks, episodes: int, workers: int, actions_per_query):
    """Save the weights where the spawned workers can load them, then evaluate on the validation scenes."""
    from sop_ros.backends.metaworld_sim import make_backend
    from sop_ros.core.evaluation.harness import evaluate
    from sop_ros.core.training.pretrain import VALIDATION_SEED
    from sop_ros.experiment.policy_sources import checkpoint_policy_factory

    policy.save(path)
    return evaluate(
        functools.partial(checkpoint_policy_factory, str(path), "cpu"),
        functools.partial(make_backend, {t: specs[t] for t in tasks}),
        list(tasks),
        episodes,
        seeds=range(VALIDATION_SEED, VALIDATION_SEED + episodes),
        workers=workers,
        actions_per_query=actions_per_query,
    )


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console

    from sop_ros.commands.collect import select_tasks
    from sop_ros.commands.pretrain_report import print_result, write_summary
    from sop_ros.core.storage.checkpoint_store import CheckpointStore
    from sop_ros.core.storage.episode_store import EpisodeStore
    from sop_ros.core.training.pretrain import CHECKPOINT_STORE_DIRNAME, OFFLINE_STORE_DIRNAME, episode_files

    _check_args(args)
    specs = select_tasks(None, args.tasks_file)
    model_config = _model_config(args.preset)
    checkpoints = CheckpointStore(args.data_dir / CHECKPOINT_STORE_DIRNAME)
    if checkpoints.versions():
        raise CliError(
            f"{checkpoints.root} already holds checkpoint versions {checkpoints.versions()[:5]}; "
            "the base policy must be v1 (use a fresh --data-dir)"
        )
    collect_demos_if_empty(args, specs)
    files = episode_files(args.demos)
    if not files:
        raise CliError(f"--demos {args.demos}: no episode files (*.mcap)")

    console = Console()
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    with EpisodeStore(args.data_dir / OFFLINE_STORE_DIRNAME, cache_in_background=False) as offline:
        demos = ingest_demos(offline, files, specs)
        console.print(
            f"offline buffer {offline.root}: {len(demos.stored)} demos "
            f"({', '.join(f'{t} {demos.counts[t]}' for t in demos.tasks)}), {demos.steps} steps"
        )
        result = _train(args, offline, checkpoints, model_config, specs, demos, console)
    wall = time.perf_counter() - t_start
    print_result(console, result, checkpoints, wall)
    if args.json:
        write_summary(args.json, result, checkpoints, wall)
    return 0


def _model_config(name: str):
    from sop_ros.core.model import ConfigError, preset

    try:
        return preset(name)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


class _Demos:
    """The ingested demos: store records, demos per task, and the tasks (task-file order) they cover."""

    def __init__(self, stored, counts: dict, tasks: list):
        self.stored, self.counts, self.tasks = stored, counts, tasks
        self.steps = sum(r.num_steps for r in stored)


def ingest_demos(offline, files, specs) -> _Demos:
    from sop_ros.core.training.pretrain import PretrainError, demo_counts, ingest_episode_files

    store_log = logging.getLogger("sop_ros.core.storage.episode_store")
    quiet = not store_log.isEnabledFor(logging.DEBUG)
    if quiet:  # one line per stored demo is noise here; the caller's summary says what was ingested
        store_log.setLevel(logging.WARNING)
    try:
        stored = ingest_episode_files(offline, files)
    except PretrainError as exc:
        raise CliError(str(exc)) from None
    finally:
        if quiet:
            store_log.setLevel(logging.NOTSET)
    counts = demo_counts(stored)
    unknown = sorted(set(counts) - set(specs))
    if unknown:
        raise CliError(f"demos for task(s) {unknown} that the task file does not define (cannot evaluate them)")
    return _Demos(stored, counts, [t for t in specs if t in counts])


def _train(args: argparse.Namespace, offline, checkpoints, model_config, specs, demos: _Demos, console):
    """Behaviour cloning with periodic evaluations until the stopping rule; returns the PretrainResult."""
    from torch.utils.tensorboard import SummaryWriter

    from sop_ros.commands.pretrain_report import PretrainProgress
    from sop_ros.core.model import VLAPolicy
    from sop_ros.core.training.pretrain import PretrainError, make_bc_trainer, pretrain
    from sop_ros.core.training.trainer import TrainerConfig

    config = _stopping_rule(args)
    writer = SummaryWriter(str(args.data_dir / TENSORBOARD_DIR / "pretrain"))
    trainer_config = TrainerConfig(
        batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed, log_every_updates=50
    )
    trainer = make_bc_trainer(offline, VLAPolicy(model_config), trainer_config, writer)
    tmp_weights = args.data_dir / ".pretrain_candidate.safetensors"
    evaluate_policy = functools.partial(
        evaluate_candidate,
        path=tmp_weights,
        specs=specs,
        tasks=demos.tasks,
        episodes=args.eval_episodes,
        workers=args.workers,
        actions_per_query=args.actions_per_query,
    )
    extra = _manifest_extra(args, demos)
    progress = PretrainProgress(console, config.max_seconds, args.progress_interval_s)
    try:
        with progress.bar:
            return pretrain(
                trainer,
                evaluate_policy,
                checkpoints,
                config,
                summary_writer=writer,
                extra=extra,
                on_update=progress.on_update,
                on_eval=progress.on_eval,
            )
    except PretrainError as exc:
        raise CliError(str(exc)) from None
    finally:
        writer.close()
        tmp_weights.unlink(missing_ok=True)


def _stopping_rule(args: argparse.Namespace):
    """The PretrainConfig of the flags (time budget, evaluation period, patience, ...)."""
    from sop_ros.core.training.pretrain import PretrainConfig, PretrainError

    try:
        return PretrainConfig(
            args.max_minutes * 60.0, args.eval_every_updates, args.patience, args.min_improvement, args.max_updates
        )
    except PretrainError as exc:
        raise CliError(str(exc)) from None


def _manifest_extra(args: argparse.Namespace, demos: _Demos) -> dict:
    """What the base policy's manifest records about its demos, model, evaluation and trainer settings."""
    from sop_ros.core.training.pretrain import VALIDATION_SEED

    return {
        "demos": {"dir": str(args.demos.resolve()), "episodes_per_task": demos.counts, "steps": demos.steps},
        "model_preset": args.preset,
        "eval": {
            "episodes_per_task": args.eval_episodes,
            "first_seed": VALIDATION_SEED,
            "actions_per_query": args.actions_per_query,
            "workers": args.workers,
        },
        "trainer": {
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "seed": args.seed,
            "torch_threads": args.torch_threads,
        },
    }
