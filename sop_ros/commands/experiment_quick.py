"""`sop experiment --quick`: a few-minute run (CI) whose fleet is then run again; both must agree bit for bit."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

# --quick's settings; everything else keeps its flag's value.
_QUICK = dict(
    duration_min=0.5,
    seeds=1,
    robots=2,
    skip_scaling=True,
    methods="base,sop_hg_dagger",
    eval_episodes=3,
    curve_points=1,
    curve_eval_episodes=3,
    clock="virtual",
)


def apply_quick(args: argparse.Namespace) -> None:
    for key, value in _QUICK.items():
        setattr(args, key, value)
    if args.out is None:
        args.out = Path("runs") / f"experiment-quick-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def check_determinism_after(args: argparse.Namespace, runs, config, console) -> int:
    from sop_ros.experiment.determinism import check_determinism

    (run,) = [r for r in runs if r.spec.runs_fleet]
    console.print(f"--quick: running {run.name}'s fleet again to check that the virtual clock is deterministic ...")
    report = check_determinism(run, config)
    if not report.identical:
        console.print(f"[red]NOT deterministic: {report.run}: {report.difference}[/red]")
        return 1
    console.print(
        f"deterministic: {report.episodes} episodes and {report.checkpoints_compared} checkpoints identical bit for bit"
    )
    return 0
