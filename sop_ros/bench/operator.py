"""Scripted-operator rules audited on a checkpoint: false alarms, catches, and takeover success.

Audit: the policy runs alone (`sop eval`'s episodes and seeds); every rule watches the same episodes
(sop_ros.core.evaluation.operator_audit). Baseline in the same run: the rule of config/robot.yaml. A good
stand-in operator fires in few episodes the policy solves by itself (those "corrections" teach
HG-DAgger to undo working behaviour) and early in the ones it fails.

Takeover success (unless --no-takeover): the same scenes again, now the operator of config/robot.yaml
acts where its rule fires (recovery, then the expert, hand-back; sop_ros.core.evaluation.operator_takeover), and
the share of taken-over episodes that end in success. Baseline in the same run: the operator as it was
before recovery existed (recovery_steps 0, no hand-back limit); variants: without the hand-back limit,
without the probe (recovery at every takeover), one that never hands back, and two whose rules fire
sooner (stall and deviation windows at 60 %), handing back once or never. Until the first
takeover the runs replay the same episode, so they take over in (nearly: docs/RESULTS.md) the same episodes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from typing import Any

from sop_ros.bench.report import BenchArgumentError, machine_info, print_table
from sop_ros.core.evaluation.harness import DEFAULT_EVAL_EPISODES_PER_TASK, DEFAULT_EVAL_SEED, DEFAULT_EVAL_WORKERS
from sop_ros.resources import node_defaults, robot_execute_horizon


def configured_rule():
    """The scripted operator's rule as the robots run it (config/robot.yaml scripted_operator)."""
    from sop_ros.core.robot.operator import OperatorRuleConfig

    return OperatorRuleConfig.from_mapping(node_defaults("scripted_operator"))


def candidate_rules() -> dict[str, Any]:
    """The configured rule and its variants, by name (the first one is the baseline)."""
    base = configured_rule()
    flipped = "deviation counted while progressing" if base.progress_excuses_deviation else "progress excuses deviation"
    return {
        "configured": base,
        flipped: dataclasses.replace(base, progress_excuses_deviation=not base.progress_excuses_deviation),
        "stall only": dataclasses.replace(base, deviation_steps=0, stuck_steps=0),
        "deviation only": dataclasses.replace(base, stall_steps=0, stuck_steps=0),
        "stuck 15": dataclasses.replace(base, stuck_steps=15),
    }


def takeover_operators() -> dict[str, Any]:
    """The configured operator, the operator before recovery (the baseline, first) and variants, by name."""
    base = configured_rule()
    return {
        "no recovery (before)": dataclasses.replace(base, recovery_steps=0, max_handbacks=-1),
        "recovery, no hand-back limit": dataclasses.replace(base, max_handbacks=-1),
        "recovery at every takeover (no probe)": dataclasses.replace(base, recovery_probe_steps=0),
        "configured": base,
        "never hands back": dataclasses.replace(base, max_handbacks=0),
        # Most failed takeovers start late (docs/RESULTS.md): the same operator with rules that fire sooner.
        "earlier takeover": _earlier(base),
        "earlier takeover + never hands back": dataclasses.replace(_earlier(base), max_handbacks=0),
        # The stall window cannot shrink (the expert crosses progress-free stretches on the move); a still arm can.
        "stuck 15": dataclasses.replace(base, stuck_steps=15),
        "stuck 15 + never hands back": dataclasses.replace(base, stuck_steps=15, max_handbacks=0),
        # The probe as it was: any new best progress (min_progress_delta) skips the recovery.
        "probe gain 0.01": dataclasses.replace(base, recovery_probe_gain=0.01),
        "probe gain 0.01 + never hands back": dataclasses.replace(base, recovery_probe_gain=0.01, max_handbacks=0),
        # A longer, stricter probe: closer to 0.01 on other tasks' slow experts (docs/RESULTS.md), not yet benched.
        "probe 10 steps gain 0.05 + never hands back": dataclasses.replace(
            base, recovery_probe_steps=10, recovery_probe_gain=0.05, max_handbacks=0
        ),
    }


def selected_operators(names: str | None) -> dict[str, Any]:
    """takeover_operators(), or those of the comma-separated `names` in that order (an unknown name is an error)."""
    operators = takeover_operators()
    if not names:
        return operators
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in operators]
    if unknown or not wanted:
        raise BenchArgumentError(f"--operators: unknown {unknown or names!r}; known: {list(operators)}")
    return {name: operators[name] for name in wanted}


def _earlier(rule):
    """The rule with its stall and deviation windows at 60 % (defaults: 25 -> 15 and 8 -> 5 steps; 0 stays off)."""

    def sooner(steps: int) -> int:
        return max(1, round(steps * 0.6)) if steps > 0 else 0

    return dataclasses.replace(rule, stall_steps=sooner(rule.stall_steps), deviation_steps=sooner(rule.deviation_steps))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint version dir or policy .safetensors file (as for sop eval)")
    parser.add_argument("--tasks", help="comma-separated task ids (default: all in the task file)")
    parser.add_argument(
        "--episodes-per-task",
        type=int,
        default=DEFAULT_EVAL_EPISODES_PER_TASK,
        help="episodes per task (default %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_EVAL_SEED, help=f"first scene seed (default {DEFAULT_EVAL_SEED})"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_EVAL_WORKERS,
        help="parallel processes (default %(default)s: min(2, cpus))",
    )
    parser.add_argument(
        "--actions-per-query",
        type=int,
        default=robot_execute_horizon(),
        help="actions executed per chunk (default: as the robots, %(default)s)",
    )
    parser.add_argument(
        "--no-takeover", action="store_true", help="only the audit: skip the runs in which the operator acts"
    )
    parser.add_argument(
        "--operators",
        help="comma-separated names of the takeover operators to run (default: all; the names are in the report)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sop_ros.core.evaluation.operator_audit import OperatorRuleAudit, summarise
    from sop_ros.core.robot.tasks import load_task_specs, select_tasks
    from sop_ros.resources import default_tasks_path

    if args.episodes_per_task <= 0 or args.workers <= 0 or args.actions_per_query <= 0:
        raise BenchArgumentError("--episodes-per-task, --workers and --actions-per-query must be positive")
    if not args.no_takeover:
        selected_operators(args.operators)  # a misspelt name fails now, not after the audit
    specs = select_tasks(load_task_specs(default_tasks_path()), args.tasks)
    rules = candidate_rules()
    report = _evaluate_on_the_scenes(args, specs, functools.partial(OperatorRuleAudit, rules))
    per_task = {
        t: [s.as_dict() for s in summarise(list(rules), [o for o in report.outcomes if o.task_id == t])] for t in specs
    }
    overall = [s.as_dict() for s in summarise(list(rules), report.outcomes)]
    base_rate = overall[0]["false_alarm_rate"]
    for row in overall:
        row["false_alarm_ratio_vs_configured"] = row["false_alarm_rate"] / base_rate if base_rate else None
    return {
        "benchmark": "operator",
        "checkpoint": args.checkpoint,
        "episodes_per_task": args.episodes_per_task,
        "seed": args.seed,
        "actions_per_query": args.actions_per_query,
        "machine": machine_info(),
        "rules": {name: dataclasses.asdict(rule) for name, rule in rules.items()},
        "policy_success": {t.task_id: t.success_rate for t in report.tasks},
        "overall": overall,
        "per_task": per_task,
        "takeover": None if args.no_takeover else run_takeovers(args, specs),
    }


def _evaluate_on_the_scenes(args: argparse.Namespace, specs, observer_factory):
    """The policy on `sop eval`'s scenes with an observer: every variant sees the same episodes."""
    from sop_ros.backends.metaworld_sim import make_backend
    from sop_ros.core.evaluation.harness import evaluate
    from sop_ros.experiment.policy_sources import resolve_policy_factory

    return evaluate(
        resolve_policy_factory(args.checkpoint, None),
        functools.partial(make_backend, specs),
        list(specs),
        args.episodes_per_task,
        seeds=range(args.seed, args.seed + args.episodes_per_task),
        workers=args.workers,
        actions_per_query=args.actions_per_query,
        observer_factory=observer_factory,
    )


def run_takeovers(args: argparse.Namespace, specs) -> dict[str, Any]:
    """Each operator acts on the same scenes; per task and overall, how the episodes it took over end."""
    from sop_ros.core.evaluation.operator_takeover import OperatorTakeover, summarise_takeovers

    operators = selected_operators(args.operators)
    overall, per_task, episodes = [], {t: [] for t in specs}, []
    for name, rule in operators.items():
        report = _evaluate_on_the_scenes(args, specs, functools.partial(OperatorTakeover, rule))
        overall.append(summarise_takeovers(name, report.outcomes).as_dict())
        for t in specs:
            per_task[t].append(summarise_takeovers(name, [o for o in report.outcomes if o.task_id == t]).as_dict())
        episodes += [{"operator": name, **dataclasses.asdict(o)} for o in report.outcomes if o.observed["takeovers"]]
    return {
        "operators": {name: dataclasses.asdict(rule) for name, rule in operators.items()},
        "overall": overall,
        "per_task": per_task,
        "takeover_episodes": episodes,
    }


def render(figures: dict[str, Any]) -> None:
    success = ", ".join(f"{t} {v:.2f}" for t, v in figures["policy_success"].items())
    rows = []
    for scope, summaries in [("all", figures["overall"]), *figures["per_task"].items()]:
        for s in summaries:
            ratio = s.get("false_alarm_ratio_vs_configured")
            rows.append(
                [
                    scope,
                    s["rule"],
                    f"{s['false_alarms']}/{s['solved_alone']} ({s['false_alarm_rate']:.2f})",
                    f"{s['catches']}/{s['failed_alone']} ({s['catch_rate']:.2f})",
                    "-" if s["mean_catch_step"] is None else f"{s['mean_catch_step']:.0f}",
                    f"{s['by_kind']['stall']}/{s['by_kind']['stuck']}/{s['by_kind']['deviation']}",
                    "-" if ratio is None else f"{ratio:.2f}",
                ]
            )
    print_table(
        f"sop bench operator {figures['checkpoint']} (policy alone: {success})",
        [
            "tasks",
            "rule",
            "false alarms (solved)",
            "catches (failed)",
            "mean catch step",
            "stall/stuck/deviation",
            "false alarms vs configured",
        ],
        rows,
    )
    if figures.get("takeover"):
        render_takeovers(figures)


def _share(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_takeovers(figures: dict[str, Any]) -> None:
    rows = []
    takeover = figures["takeover"]
    for scope, summaries in [("all", takeover["overall"]), *takeover["per_task"].items()]:
        for s in summaries:
            rows.append(
                [
                    scope,
                    s["operator"],
                    f"{s['takeover_successes']}/{s['takeover_episodes']} ({_share(s['takeover_success_rate'])})",
                    f"{s['ci_low']:.2f}-{s['ci_high']:.2f}",
                    s["takeovers"],
                    _share(s["operator_steps_per_takeover"]),
                    _share(s["recoveries_per_takeover"]),
                    _share(s["step_limit_share"]),
                    s["operator_in_control_at_step_limit"],
                    f"{s['success_all']}/{s['episodes']}",
                ]
            )
    print_table(
        f"sop bench operator {figures['checkpoint']}: the operator acts (takeover success)",
        [
            "tasks",
            "operator",
            "success / taken over",
            "95% CI",
            "takeovers",
            "operator steps / takeover",
            "recoveries / takeover",
            "step-limit share",
            "operator in control at limit",
            "success / all",
        ],
        rows,
    )
