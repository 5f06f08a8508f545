"""`sop pretrain`: train the base policy by behaviour cloning on offline demos; publish it as checkpoint v1.

    sop pretrain --demos runs/demos --out runs/learner                 # collects the default demo budget first if runs/demos is empty
    sop pretrain --demos runs/demos --out runs/learner --max-minutes 15 --eval-every-updates 1000

The demos (episode files from `sop collect`) are ingested into <out>/offline, an episode store that
is the learner's offline buffer, so the online learner trains on exactly the same data. Training
(algorithm `bc`) pauses every --eval-every-updates updates for a closed-loop evaluation in
simulation (parallel worker processes, validation scenes from seed 2,000,000: disjoint from the
demo scenes and from `sop eval`'s); it stops once the mean success has not risen for --patience
evaluations (or at --max-minutes), and publishes the best weights to <out>/checkpoints as v1
(algorithm bc, no parent, eval success per task in the manifest metrics). TensorBoard scalars go
to <out>/tensorboard/pretrain.

The default demo budget (--collect-episodes-per-task, used only when --demos holds no episode
files) is chosen so the base policy is clearly imperfect on the default task set; see
docs/RESULTS.md, section "Base policy".
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import time
from pathlib import Path

from sop_ros.commands.errors import CliError
from sop_ros.resources import robot_execute_horizon

log = logging.getLogger(__name__)

# Demos per task collected when --demos is empty (measured: docs/RESULTS.md, "Base policy"): with the
# tiny ResNet policy 5 give a clearly imperfect base (mean 0.42: push and pick-place 0.17), 10 already 0.79.
DEFAULT_DEMOS_PER_TASK = 5
# PretrainConfig.patience (the core module imports torch, which the CLI does not load to parse arguments).
DEFAULT_PATIENCE = 5


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pretrain", help="train the base policy by BC on demos and publish it as checkpoint v1", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", type=Path, required=True, help="directory of demo episode files (from `sop collect`)")
    parser.add_argument("--out", type=Path, required=True, help="learner data dir: <out>/offline (demo store), <out>/checkpoints, <out>/tensorboard")
    parser.add_argument("--config", default="tiny", help="model preset (default tiny)")
    parser.add_argument("--max-minutes", type=float, default=15.0, help="wall-clock budget for training and evaluations; the final evaluation may run past it (default 15)")
    parser.add_argument("--max-updates", type=int, help="stop after this many updates (default: no limit)")
    parser.add_argument("--eval-every-updates", type=int, default=1000, help="evaluate every N updates (default 1000)")
    parser.add_argument("--eval-episodes", type=int, default=10, help="evaluation episodes per task (default 10)")
    parser.add_argument("--patience", type=int, default=DEFAULT_PATIENCE, help=f"stop after this many evaluations without a new best mean success (default {DEFAULT_PATIENCE})")
    parser.add_argument("--min-improvement", type=float, default=0.0, help="a new best must beat the old mean success by more than this (default 0)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
    parser.add_argument("--lr", type=float, default=3e-4, help="learning rate (default 3e-4)")
    parser.add_argument("--seed", type=int, default=0, help="torch / sampler seed (default 0)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads for training (default min(2, cpus))")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="evaluation processes (default min(2, cpus))")
    parser.add_argument("--actions-per-query", type=int, default=robot_execute_horizon(),
                        help="actions executed per policy query in evaluation (default: as the robots and `sop eval`, %(default)s)")
    parser.add_argument("--tasks-file", type=Path, help="task file (default: config/tasks.yaml)")
    parser.add_argument("--tasks", help="comma-separated task ids to collect when --demos is empty (default: all in the task file)")
    parser.add_argument("--collect-episodes-per-task", type=int, default=DEFAULT_DEMOS_PER_TASK, help=f"demos per task to collect when --demos holds none (default {DEFAULT_DEMOS_PER_TASK})")
    parser.add_argument("--json", metavar="PATH", help="also write the run's summary (history, best, manifest) as JSON")
    parser.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    positive = {
        "--max-minutes": args.max_minutes, "--eval-every-updates": args.eval_every_updates, "--eval-episodes": args.eval_episodes,
        "--patience": args.patience, "--batch-size": args.batch_size, "--lr": args.lr, "--threads": args.threads,
        "--workers": args.workers, "--collect-episodes-per-task": args.collect_episodes_per_task,
    }
    for flag, value in positive.items():
        if not value > 0:
            raise CliError(f"{flag} must be positive, got {value}")
    for flag, value in (("--max-updates", args.max_updates), ("--actions-per-query", args.actions_per_query)):
        if value is not None and value <= 0:
            raise CliError(f"{flag} must be positive, got {value}")
    if args.min_improvement < 0:
        raise CliError("--min-improvement must be >= 0")


def _collect_if_empty(args: argparse.Namespace, specs) -> None:
    from sop_ros.backends.metaworld_sim import make_backend
    from sop_ros.commands.collect import DemoJob, DemoSettings, collect_demos, select_tasks
    from sop_ros.core.training.pretrain import episode_files

    if episode_files(args.demos):
        return
    chosen = select_tasks(args.tasks, args.tasks_file) if args.tasks else specs
    log.info("%s holds no demos: collecting %d per task for %s", args.demos, args.collect_episodes_per_task, list(chosen))
    jobs = [DemoJob(t, i) for t in chosen for i in range(args.collect_episodes_per_task)]
    settings = DemoSettings(str(args.demos), "sim-demo", 4, 0.0, False)
    t0 = time.perf_counter()
    results = collect_demos(functools.partial(make_backend, chosen), jobs, settings, args.workers)
    log.info("collected %d demos (%d expert failures dropped) in %.1f s", sum(r.path is not None for r in results), sum(r.path is None for r in results), time.perf_counter() - t0)


def evaluate_candidate(policy, path: Path, specs, tasks, episodes: int, workers: int, actions_per_query):
    """Save the weights where the spawned workers can load them, then evaluate on the validation scenes."""
    from sop_ros.backends.metaworld_sim import make_backend
    from sop_ros.commands.eval import checkpoint_policy_factory
    from sop_ros.core.evaluation.harness import evaluate
    from sop_ros.core.training.pretrain import VALIDATION_SEED

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
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
    from torch.utils.tensorboard import SummaryWriter

    from sop_ros.bench.report import write_json
    from sop_ros.commands.collect import select_tasks
    from sop_ros.core.storage.checkpoint_store import CheckpointStore
    from sop_ros.core.storage.episode_store import EpisodeStore
    from sop_ros.core.model import ConfigError, VLAPolicy, preset
    from sop_ros.core.training.pretrain import (
        CHECKPOINT_STORE_DIRNAME, OFFLINE_STORE_DIRNAME, VALIDATION_SEED, PretrainConfig, PretrainError, demo_counts, episode_files,
        ingest_episode_files, make_bc_trainer, pretrain,
    )
    from sop_ros.core.training.trainer import TrainerConfig

    _check_args(args)
    specs = select_tasks(None, args.tasks_file)
    try:
        model_config = preset(args.config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    checkpoints = CheckpointStore(args.out / CHECKPOINT_STORE_DIRNAME)
    if checkpoints.versions():
        raise CliError(f"{checkpoints.root} already holds checkpoint versions {checkpoints.versions()[:5]}; the base policy must be v1 (use a fresh --out)")
    _collect_if_empty(args, specs)
    files = episode_files(args.demos)
    if not files:
        raise CliError(f"--demos {args.demos}: no episode files (*.mcap)")

    console = Console()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    with EpisodeStore(args.out / OFFLINE_STORE_DIRNAME, cache_in_background=False) as offline:
        store_log = logging.getLogger("sop_ros.core.storage.episode_store")
        quiet = not store_log.isEnabledFor(logging.DEBUG)
        if quiet:  # one line per stored demo is noise here; the summary below says what was ingested
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
        tasks = [t for t in specs if t in counts]
        console.print(f"offline buffer {offline.root}: {len(stored)} demos ({', '.join(f'{t} {counts[t]}' for t in tasks)}), {sum(r.num_steps for r in stored)} steps")

        writer = SummaryWriter(str(args.out / "tensorboard" / "pretrain"))
        policy = VLAPolicy(model_config)
        trainer = make_bc_trainer(offline, policy, TrainerConfig(batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed, log_every_updates=50), writer)
        tmp_weights = args.out / ".pretrain_candidate.safetensors"
        evaluate_policy = functools.partial(
            evaluate_candidate, path=tmp_weights, specs=specs, tasks=tasks, episodes=args.eval_episodes, workers=args.workers, actions_per_query=args.actions_per_query
        )
        try:
            config = PretrainConfig(args.max_minutes * 60.0, args.eval_every_updates, args.patience, args.min_improvement, args.max_updates)
        except PretrainError as exc:
            raise CliError(str(exc)) from None

        progress = Progress(TextColumn("pretrain"), BarColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console)
        budget = progress.add_task("train", total=config.max_seconds, status="")
        state = {"best": None, "last": None}

        def status(updates: int, loss: float, rate: float) -> str:
            return f"update {updates} | loss {loss:.4f} | {rate:.1f} upd/s | last eval {state['last'] or '-'} | best {state['best'] or '-'}"

        def on_update(updates: int, loss: float, elapsed: float) -> None:
            if updates % 10 == 0:
                progress.update(budget, completed=elapsed, status=status(updates, loss, updates / max(elapsed, 1e-9)))

        def on_eval(point, is_best: bool) -> None:
            state["last"] = f"{point.mean_success:.2f}"
            if is_best:
                state["best"] = f"{point.mean_success:.2f}@{point.updates}"
            progress.console.print(
                f"update {point.updates} ({point.elapsed_s / 60:.1f} min): eval {point.mean_success:.2f} "
                f"[{', '.join(f'{t.task_id} {t.success_rate:.2f}' for t in point.report.tasks)}] in {point.eval_s:.0f} s" + (" (new best)" if is_best else "")
            )

        extra = {
            "demos": {"dir": str(args.demos.resolve()), "episodes_per_task": counts, "steps": sum(r.num_steps for r in stored)},
            "model_preset": args.config,
            "eval": {"episodes_per_task": args.eval_episodes, "first_seed": VALIDATION_SEED, "actions_per_query": args.actions_per_query, "workers": args.workers},
            "trainer": {"batch_size": args.batch_size, "learning_rate": args.lr, "seed": args.seed, "torch_threads": args.threads},
        }
        try:
            with progress:
                result = pretrain(trainer, evaluate_policy, checkpoints, config, summary_writer=writer, extra=extra, on_update=on_update, on_eval=on_eval)
        except PretrainError as exc:
            raise CliError(str(exc)) from None
        finally:
            writer.close()
            tmp_weights.unlink(missing_ok=True)
    wall = time.perf_counter() - t_start

    manifest = result.manifest
    table = Table(title=f"base policy v{manifest.version}: update {result.best.updates} of {result.updates}, stopped on {result.stop_reason}, {wall / 60:.1f} min")
    for col in ("task", "validation success", "95% CI", "episodes"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for t in result.best.report.tasks:
        table.add_row(t.task_id, f"{t.success_rate:.2f}", f"[{t.ci_low:.2f}, {t.ci_high:.2f}]", str(t.episodes))
    table.add_row("mean", f"{result.best.mean_success:.2f}", "", "")
    console.print(table)
    console.print(f"published {checkpoints.version_dir(manifest.version)} (sha256 {manifest.content_hash[:12]}...); evaluate it with: sop eval {checkpoints.version_dir(manifest.version)}")
    if args.json:
        write_json(args.json, {
            "checkpoint": str(checkpoints.version_dir(manifest.version)),
            "manifest": json.loads(manifest.to_json()),
            "stop_reason": result.stop_reason,
            "total_updates": result.updates,
            "best": result.best.as_dict(),
            "history": [p.as_dict() for p in result.history],
            "wall_clock_s": wall,
        })
    return 0
