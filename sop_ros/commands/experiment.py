"""`sop experiment`: the paper's comparisons on a simulated fleet; CSV, PNG plots, a markdown table, summary.json.

    sop experiment                                   # defaults: 60 min runs, 2 seeds, 4 robots, scaling 1,2,4
    sop experiment --duration-min 3 --seeds 1 --robots 2 --robots-scaling 1,2 --eval-episodes 5   # a short check

What runs (research/sop-paper.md section 5; sop_ros/experiment/plan.py defines the methods):
  a. base vs SOP + HG-DAgger vs SOP + RECAP vs non_sop (the same fleet time with the fixed base
     policy, then HG-DAgger trained once offline for as many updates as the SOP HG-DAgger run made)
     vs offline_only (the same number of updates on the offline demos alone) vs more_demos (the SOP run's
     human-controlled steps spent on fresh expert demos instead) vs ceiling (a large expert set): final success,
     success over (simulated or wall-clock) time, throughput (episodes and successful episodes per hour);
  b. fleet scaling (SOP + HG-DAgger with each --robots-scaling count): time to --threshold;
  c. the share of steps the operator corrected, over time.
Fleets run on a virtual clock by default (--clock virtual: robots, operator and learner advance together
in simulated time in one process, with --learner-updates-per-s updates per simulated second shared by
the fleet; results do not depend on machine load); --clock wall runs real processes on the wall clock.
Each configuration runs --seeds times. Every run works in its own copy of the base learner data
dir (--base: checkpoints/ with the base v1 and offline/ demos; default: the base policy shipped with
the package and `sop pretrain`'s default demos, installed once in ~/.sop/base_policy). Checkpoints
are evaluated after each fleet stopped, on the same fixed scenes for all methods. Finished runs are
kept (<out>/runs/<run>/result.json): rerunning the same command with the same --out resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

from sop_ros.commands.errors import CliError
from sop_ros.commands.experiment_progress import ExperimentProgress
from sop_ros.commands.experiment_quick import apply_quick, check_determinism_after
from sop_ros.commands.experiment_settings import check_resume, settings_of
from sop_ros.commands.options import EVAL_EPISODES_PER_TASK, add_workers_argument
from sop_ros.commands.plain_progress import add_progress_argument
from sop_ros.resources import node_defaults

log = logging.getLogger(__name__)

DEFAULT_BASE_DIR = Path.home() / ".sop" / "base_policy"


# Long by design: one declaration per flag, the command's whole interface in one place.
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from sop_ros.experiment.plan import METHODS
    from sop_ros.experiment.runner import CLOCKS, ExperimentConfig

    defaults = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}  # the experiment's knobs' one home
    parser = subparsers.add_parser(
        "experiment",
        help="run the paper's comparisons on a simulated fleet (CSV, plots, summary.json)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, help="results folder (default runs/experiment-<date>)")
    parser.add_argument(
        "--duration-min",
        type=float,
        default=60.0,
        help="minutes per fleet run: simulated with --clock virtual, wall clock with --clock wall (default 60)",
    )
    parser.add_argument(
        "--clock",
        choices=CLOCKS,
        default=defaults["clock"],
        help="virtual: the fleet runs in one process on simulated time, deterministic and independent of machine "
        "load; wall: real processes (ROS nodes, gRPC learner) on the wall clock, the system check "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--learner-updates-per-s",
        type=float,
        default=defaults["learner_updates_per_s"],
        help="--clock virtual: learner updates per simulated second, shared by the fleet (default %(default)s, "
        "what the wall-clock learner made on the 2-core machine)",
    )
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=defaults["ema_decay"],
        help="the learner publishes a moving average of its weights with this decay per update, online and "
        "offline baselines alike (0: the raw weights; default %(default)s, as `sop learner`)",
    )
    parser.add_argument("--seeds", type=int, default=2, help="runs per configuration (default 2)")
    parser.add_argument("--robots", type=int, default=4, help="robots in the method comparison (default 4)")
    parser.add_argument("--robots-scaling", default="1,2,4", help="fleet sizes of the scaling study (default 1,2,4)")
    parser.add_argument("--skip-scaling", action="store_true", help="only the method comparison")
    parser.add_argument(
        "--robot-hz",
        type=float,
        default=node_defaults("sim_robot")["control_rate_hz"],
        help="control rate of the sim robots, wall clock (default: config/robot.yaml's, %(default)s)",
    )
    parser.add_argument(
        "--threshold", type=float, default=0.9, help="success threshold for time-to-threshold (default 0.9)"
    )
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)} (default all)"
    )
    parser.add_argument(
        "--eval-episodes",
        type=int,
        default=EVAL_EPISODES_PER_TASK,
        help="final evaluation episodes per task (default %(default)s, as sop eval)",
    )
    parser.add_argument(
        "--curve-points",
        type=int,
        default=defaults["curve_points"],
        help="evaluated wall-clock points per run after t=0 (default %(default)s)",
    )
    parser.add_argument(
        "--curve-eval-episodes", type=int, help="episodes per task at the intermediate points (default --eval-episodes)"
    )
    parser.add_argument("--tasks", help="comma-separated task ids (default: all of config/tasks.yaml)")
    parser.add_argument(
        "--base",
        type=Path,
        help=f"learner data dir with the base v1 and offline demos (default {DEFAULT_BASE_DIR}, "
        "installed on first use from the shipped base policy; a base of your own: `sop pretrain --data-dir D`)",
    )
    parser.add_argument(
        "--publish-every-updates",
        type=int,
        default=defaults["publish_every_updates"],
        help="learner publishes a checkpoint every N updates (default %(default)s)",
    )
    parser.add_argument(
        "--learner-threads",
        type=int,
        default=defaults["learner_threads"],
        help="torch threads of the online learner (default %(default)s)",
    )
    parser.add_argument(
        "--offline-threads",
        type=int,
        default=defaults["offline_threads"],
        help="torch threads of the offline baselines' training (default %(default)s, as the online "
        "learner: on a busy machine more threads can be many times slower)",
    )
    parser.add_argument(
        "--offline-updates",
        type=int,
        help="updates of the offline baselines (default: as many as the SOP HG-DAgger run of the same seed)",
    )
    add_workers_argument(parser, "evaluation processes")
    # Not --keep-checkpoints: `sop learner --keep-checkpoints N` is a count.
    parser.add_argument(
        "--keep-all-checkpoints",
        action="store_true",
        help="keep every checkpoint a run published (default: only the evaluated ones; an hour-long "
        "run publishes gigabytes)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the planned runs and exit")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few-minute check (CI): base and SOP HG-DAgger, 2 robots, 0.5 simulated min, 3 evaluation "
        "episodes per task; then the same fleet run again, which must agree bit for bit (exit 1 if not)",
    )
    add_progress_argument(parser)
    parser.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    for flag, value in (
        ("--duration-min", args.duration_min),
        ("--learner-updates-per-s", args.learner_updates_per_s),
        ("--robot-hz", args.robot_hz),
        ("--eval-episodes", args.eval_episodes),
        ("--curve-points", args.curve_points),
        ("--publish-every-updates", args.publish_every_updates),
        ("--learner-threads", args.learner_threads),
        ("--offline-threads", args.offline_threads),
        ("--workers", args.workers),
    ):
        if not value > 0:
            raise CliError(f"{flag} must be positive, got {value}")
    if args.curve_eval_episodes is not None and args.curve_eval_episodes <= 0:
        raise CliError(f"--curve-eval-episodes must be positive, got {args.curve_eval_episodes}")
    if not 0.0 <= args.ema_decay < 1.0:
        raise CliError(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    if not 0.0 < args.threshold <= 1.0:
        raise CliError(f"--threshold must be in (0, 1], got {args.threshold}")
    if args.offline_updates is not None and args.offline_updates < 0:
        raise CliError(f"--offline-updates must be >= 0, got {args.offline_updates}")


def ensure_base(base: Path | None, console) -> Path:
    """The base learner data dir; without --base, install the shipped base policy once and cache it."""
    from sop_ros.experiment.fleet_run import checkpoint_versions

    if base is not None:
        if not checkpoint_versions(base / "checkpoints") or not (base / "offline").is_dir():
            raise CliError(
                f"--base {base}: expected a learner data dir with checkpoints/ (the base v1) and offline/ "
                "(from `sop pretrain --data-dir`)"
            )
        return base
    if checkpoint_versions(DEFAULT_BASE_DIR / "checkpoints"):
        return DEFAULT_BASE_DIR
    from sop_ros.commands.shipped_base import install_shipped_base, success_summary

    console.print(
        f"[bold]No cached base policy in {DEFAULT_BASE_DIR}:[/bold] using the shipped base ({success_summary()})"
    )
    tmp = DEFAULT_BASE_DIR.with_name(DEFAULT_BASE_DIR.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    install_shipped_base(tmp, DEFAULT_BASE_DIR.with_name(DEFAULT_BASE_DIR.name + "_demos"))
    os.rename(tmp, DEFAULT_BASE_DIR)
    return DEFAULT_BASE_DIR


def write_outputs(out: Path, results, args: argparse.Namespace, extra: dict) -> dict:
    """CSV, plots, results.md and summary.json from the finished runs."""
    from sop_ros.experiment import plots
    from sop_ros.experiment.results import markdown_report, summary, write_text_atomic
    from sop_ros.experiment.results_csv import write_csvs

    data = summary(results, args.threshold, args.robot_hz, args.seeds, args.duration_min * 60.0, extra)
    write_csvs(out, results, data)
    made = []
    if any("comparison" in r.groups for r in results):
        made.append(plots.success_over_time(results, args.threshold, out / "success_over_time.png").name)
    if data["scaling"]:
        made.append(plots.scaling(results, data["scaling"], args.threshold, out / "scaling.png").name)
    if any(r.online_windows for r in results):
        made.append(plots.intervention_share(results, out / "intervention_share.png").name)
    data["plots"] = made
    write_text_atomic(out / "summary.json", json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")
    write_text_atomic(out / "results.md", markdown_report(data, made) + "\n")
    return data


def _raise_keyboard_interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sop_ros.commands.collect import select_tasks
    from sop_ros.experiment.plan import PlanError, parse_methods, parse_robot_counts, plan_runs

    if args.quick:
        apply_quick(args)
    _check_args(args)
    # Evaluation workers load the sentence encoder once per checkpoint: no download-style bars for that.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        methods = parse_methods(args.methods)
        runs = plan_runs(
            methods,
            args.seeds,
            args.robots,
            parse_robot_counts(args.robots_scaling),
            args.skip_scaling,
            args.offline_updates,
        )
    except PlanError as exc:
        raise CliError(str(exc)) from None
    specs = select_tasks(args.tasks, None)
    console = Console()
    fleet_runs = sum(r.spec.runs_fleet for r in runs)
    if args.clock == "wall":
        cost = f"{args.duration_min:g} min each: at least {fleet_runs * args.duration_min / 60:.1f} h of fleet time"
    else:
        cost = f"{args.duration_min:g} simulated min each, the learner at {args.learner_updates_per_s:g} updates/s"
    console.print(f"{len(runs)} runs ({fleet_runs} with a fleet, {cost}; plus training and evaluation)")
    for r in runs:
        console.print(f"  {r.name:<28} {', '.join(r.groups)}")
    if args.dry_run:
        return 0
    # SIGTERM stops the experiment like Ctrl-C: the fleet's processes run in their own sessions and
    # would outlive us otherwise.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return _run_planned(args, runs, methods, specs, console)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_planned(args: argparse.Namespace, runs, methods, specs, console) -> int:
    from sop_ros.experiment.results import load_run_result, save_run_result

    out = args.out or Path("runs") / f"experiment-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    base = ensure_base(args.base, console)
    check_resume(out, settings_of(args, list(specs), base))
    config = _experiment_config(args, out, base, specs)
    evaluator = _evaluator(args, out, specs)
    extra = _run_info(args, specs, base, methods)
    started = time.monotonic()
    finished: dict = {}
    progress = ExperimentProgress(console, len(runs), config.duration_s, args.progress_interval_s)
    with progress.bar:
        for run_spec in runs:
            run_dir = config.run_dir(run_spec)
            previous = load_run_result(run_dir)
            if previous is not None:
                progress.bar.console.print(
                    f"{run_spec.name}: finished earlier (final success {previous.final_success:.2f}); reusing"
                )
                finished[run_spec.name] = previous
                progress.run_done()
                continue
            result = _execute(run_spec, config, evaluator, finished, progress.hooks(run_spec.name))
            save_run_result(run_dir, result)
            finished[run_spec.name] = result
            rate = f", {result.throughput['episodes_per_hour']:.0f} episodes/h" if result.throughput else ""
            progress.bar.console.print(
                f"{run_spec.name}: final success {result.final_success:.2f} (v{result.final_version}){rate}"
            )
            progress.run_done()
            extra["wall_clock_s"] = time.monotonic() - started
            write_outputs(out, list(finished.values()), args, extra)
    data = write_outputs(out, list(finished.values()), args, extra)
    console.print((out / "results.md").read_text(), markup=False, highlight=False)
    console.print(f"results in {out}: summary.json, results.md, *.csv, {', '.join(data['plots'])}")
    return check_determinism_after(args, runs, config, console) if args.quick else 0


def _experiment_config(args: argparse.Namespace, out: Path, base: Path, specs):
    from sop_ros.experiment.runner import ExperimentConfig

    return ExperimentConfig(
        out_dir=out,
        base_dir=base,
        tasks=specs,
        duration_s=args.duration_min * 60.0,
        robot_hz=args.robot_hz,
        eval_episodes=args.eval_episodes,
        curve_eval_episodes=args.curve_eval_episodes or args.eval_episodes,
        curve_points=args.curve_points,
        publish_every_updates=args.publish_every_updates,
        learner_threads=args.learner_threads,
        offline_threads=args.offline_threads,
        offline_updates=args.offline_updates,
        keep_checkpoints=args.keep_all_checkpoints,
        clock=args.clock,
        learner_updates_per_s=args.learner_updates_per_s,
        ema_decay=args.ema_decay,
    )


def _evaluator(args: argparse.Namespace, out: Path, specs):
    from sop_ros.experiment.checkpoint_eval import CheckpointEvaluator

    return CheckpointEvaluator(specs, out / "eval_cache.json", workers=args.workers)


def _run_info(args: argparse.Namespace, specs, base: Path, methods) -> dict:
    """What summary.json records about how the experiment was run."""
    from sop_ros.bench.report import machine_info

    invoked_as_sop = Path(sys.argv[0]).name in ("sop", "cli.py")
    return {
        "command": shlex.join(["sop", *sys.argv[1:]]) if invoked_as_sop else shlex.join(sys.argv),
        "machine": machine_info(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "eval_episodes": args.eval_episodes,
        "eval_episodes_per_task": args.eval_episodes,
        "curve_points": args.curve_points,
        # The learner's compute on simulated time (the virtual clock's); a wall-clock learner makes what it can.
        "learner_updates_per_s": args.learner_updates_per_s if args.clock == "virtual" else None,
        "ema_decay": args.ema_decay,
        "tasks": list(specs),
        "base": str(base.resolve()),
        "methods_run": methods,
    }


def _execute(run_spec, config, evaluator, finished: dict, hooks):
    from sop_ros.experiment.fleet_run import FleetRunError
    from sop_ros.experiment.runner import RunError, execute_run

    try:
        return execute_run(run_spec, config, evaluator, finished, hooks)
    except (RunError, FleetRunError) as exc:
        raise CliError(str(exc)) from None
