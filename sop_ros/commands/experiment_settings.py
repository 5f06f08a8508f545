"""What makes the runs of one `sop experiment` folder comparable; a resumed experiment must use the same."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sop_ros.commands.errors import CliError
from sop_ros.resources import node_defaults

SETTINGS_FILE = "experiment.json"


def settings_of(args: argparse.Namespace, tasks: list[str], base: Path) -> dict:
    """What makes runs comparable: a resumed experiment must use the same."""
    from sop_ros.experiment.demo_baselines import CEILING_DEMOS_PER_TASK

    return {
        "duration_min": args.duration_min,
        "clock": args.clock,
        "learner_updates_per_s": args.learner_updates_per_s if args.clock == "virtual" else None,
        "robot_hz": args.robot_hz,
        "tasks": tasks,
        "base": str(base.resolve()),
        "eval_episodes": args.eval_episodes,
        "eval_episodes_per_task": args.eval_episodes,
        "curve_points": args.curve_points,
        "curve_eval_episodes": args.curve_eval_episodes,
        "publish_every_updates": args.publish_every_updates,
        "ema_decay": args.ema_decay,
        "offline_updates": args.offline_updates,
        # The robots' node parameters (operator rule, mux, policy horizon, camera): runs made under others differ.
        "robot_defaults": {s: node_defaults(s) for s in ("scripted_operator", "action_mux", "policy", "sim_robot")},
        "ceiling_demos_per_task": CEILING_DEMOS_PER_TASK,
    }


def check_resume(out: Path, settings: dict) -> None:
    from sop_ros.experiment.results import write_text_atomic

    path = out / SETTINGS_FILE
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise CliError(
                f"--out {out} holds an experiment with other settings ({', '.join(changed)}); use a fresh --out"
            )
    else:
        write_text_atomic(path, json.dumps(settings, indent=1, sort_keys=True) + "\n")
