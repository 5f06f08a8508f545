"""Finished runs -> the experiment's results: a markdown report, summary.json (CSV: results_csv.py, plots: plots.py).

Each run leaves <run_dir>/result.json (RunResult). Aggregation only reads those, so results can be
rebuilt from a results folder at any time, and a resumed experiment reuses finished runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from sop_ros.core.evaluation.fleet_metrics import mean_curve, spread, time_to_threshold
from sop_ros.core.evaluation.harness import wilson_interval
from sop_ros.experiment.plan import METHODS, SCALING_METHOD

RESULT_FILE = "result.json"
RESULT_FORMAT = "sop_experiment_run/1"


@dataclasses.dataclass(frozen=True)
class CurvePoint:
    t_s: float  # seconds since the run started
    version: int  # the checkpoint in use then (the newest created by t_s)
    success: float  # mean over tasks
    per_task: dict[str, float]


@dataclasses.dataclass(frozen=True)
class RunResult:
    name: str
    method: str
    seed: int
    robots: int
    groups: tuple[str, ...]
    duration_s: float  # fleet time: simulated (virtual clock) or wall clock, see fleet["clock"] (0 without a fleet)
    final_version: int
    final_success: float  # mean over tasks, evaluated with the final episodes per task
    final_per_task: dict[str, float]
    eval_episodes_per_task: int
    curve: tuple[CurvePoint, ...] = ()  # evaluated success over fleet time (fleet runs)
    learner_updates: Optional[int] = None  # updates of the online learner (SOP runs)
    offline_updates: Optional[int] = None  # updates of the one offline training (non-SOP baselines)
    offline_train_s: Optional[float] = None
    demos_added: Optional[int] = None  # fresh expert demos in the offline training (more_demos, ceiling)
    demo_steps: Optional[int] = None  # their human-controlled steps (failed attempts included)
    checkpoints: tuple[dict, ...] = ()  # {version, created_s, training_step, algorithm} of the run's new checkpoints
    online_windows: tuple[dict, ...] = ()  # fleet_metrics.WindowStats.as_dict() per window
    online_totals: Optional[dict] = None
    throughput: Optional[dict] = None  # fleet_metrics.Throughput.as_dict()
    start_ns: int = 0
    fleet: Optional[dict] = None  # port, ROS domain, exit code

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["format"] = RESULT_FORMAT
        return json.dumps(d, indent=1, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        d = json.loads(text)
        if d.pop("format", None) != RESULT_FORMAT:
            raise ValueError(f"not a {RESULT_FORMAT} result")
        d["groups"] = tuple(d["groups"])
        d["curve"] = tuple(CurvePoint(**p) for p in d["curve"])
        for key in ("checkpoints", "online_windows"):
            d[key] = tuple(d[key])
        return cls(**d)


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_run_result(run_dir: Path, result: RunResult) -> Path:
    path = Path(run_dir) / RESULT_FILE
    write_text_atomic(path, result.to_json() + "\n")
    return path


def load_run_result(run_dir: Path) -> Optional[RunResult]:
    path = Path(run_dir) / RESULT_FILE
    return RunResult.from_json(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------- aggregation


def _mean_over(results: Iterable[RunResult], get) -> dict:
    return spread(get(r) for r in results).as_dict()


def _human_steps(r: RunResult) -> Optional[float]:
    """Human-controlled steps a run cost: operator steps in the fleet, or the fresh demos' steps."""
    if r.online_totals:
        return r.online_totals["human_steps"]
    return r.demo_steps


def return_on_human_effort(methods: Mapping[str, dict]) -> dict[str, Optional[float]]:
    """Per method, mean success gained over the base per 1,000 human-controlled steps (None without either)."""
    base = methods.get("base", {}).get("final_success", {}).get("mean")
    gains = {}
    for m, row in methods.items():
        steps, final = row["human_steps"]["mean"], row["final_success"]["mean"]
        gains[m] = None if base is None or not steps or final is None else (final - base) * 1000.0 / steps
    return gains


def method_table(results: Sequence[RunResult]) -> dict[str, dict]:
    """Per method (comparison runs): final success and throughput, mean and spread over seeds."""
    table = {}
    for method in METHODS:
        runs = [r for r in results if r.method == method and "comparison" in r.groups]
        if not runs:
            continue
        tasks = list(runs[0].final_per_task)
        table[method] = {
            "runs": len(runs),
            "seeds": sorted({r.seed for r in runs}),
            "final_success": _mean_over(runs, lambda r: r.final_success),
            "final_per_task": {t: _mean_over(runs, lambda r, t=t: r.final_per_task.get(t)) for t in tasks},
            "episodes_per_hour": _mean_over(
                runs, lambda r: r.throughput["episodes_per_hour"] if r.throughput else None
            ),
            "successful_episodes_per_hour": _mean_over(
                runs, lambda r: r.throughput["successful_episodes_per_hour"] if r.throughput else None
            ),
            "intervention_share": _mean_over(
                runs, lambda r: r.online_totals["intervention_share"] if r.online_totals else None
            ),
            "human_steps": _mean_over(runs, _human_steps),
            "online_success_rate": _mean_over(
                runs, lambda r: r.online_totals["success_rate"] if r.online_totals else None
            ),
            "learner_updates": _mean_over(
                runs, lambda r: r.learner_updates if r.learner_updates is not None else r.offline_updates
            ),
            "achieved_step_hz": _mean_over(runs, lambda r: (r.fleet or {}).get("achieved_step_hz")),
            "cpu_percent": _mean_over(runs, lambda r: (r.fleet or {}).get("cpu_percent_mean")),
        }
    return table


def scaling_table(results: Sequence[RunResult], threshold: float) -> dict[str, dict]:
    """Per robot count (SOP HG-DAgger scaling runs): the seed-mean success curve and the time it reaches
    the threshold (linear interpolation between evaluation points), plus each seed's own time."""
    table = {}
    for robots in sorted({r.robots for r in results if "scaling" in r.groups}):
        runs = sorted(
            (r for r in results if "scaling" in r.groups and r.robots == robots and r.method == SCALING_METHOD),
            key=lambda r: r.seed,
        )
        curves = [r.curve for r in runs if r.curve]
        times = [p.t_s for p in curves[0]] if curves else []
        aligned = [c for c in curves if len(c) == len(times)]
        mean = mean_curve([[p.success for p in c] for c in aligned])
        per_seed = {
            str(r.seed): time_to_threshold(
                [p.t_s for p in r.curve], [p.success for p in r.curve], threshold, interpolate=True
            )
            if r.curve
            else None
            for r in runs
        }
        table[str(robots)] = {
            "runs": len(runs),
            "times_s": times,
            "mean_success": mean,
            "time_to_threshold_s": time_to_threshold(times, mean, threshold, interpolate=True) if times else None,
            "time_to_threshold_per_seed_s": per_seed,
            "final_success": _mean_over(runs, lambda r: r.final_success),
            "episodes_per_hour": _mean_over(
                runs, lambda r: r.throughput["episodes_per_hour"] if r.throughput else None
            ),
            "achieved_step_hz": _mean_over(runs, lambda r: (r.fleet or {}).get("achieved_step_hz")),
            "cpu_percent": _mean_over(runs, lambda r: (r.fleet or {}).get("cpu_percent_mean")),
        }
    return table


def final_success_ci95(results: Sequence[RunResult], method: str) -> Optional[tuple[float, float]]:
    """95 % Wilson interval of a method's final success, pooling every evaluated episode of its comparison runs
    (seeds x tasks x episodes per task): an interval on the mean over tasks, as the paper's figures average."""
    runs = [r for r in results if r.method == method and "comparison" in r.groups and r.final_per_task]
    trials = sum(len(r.final_per_task) * r.eval_episodes_per_task for r in runs)
    if not trials:
        return None
    successes = sum(round(s * r.eval_episodes_per_task) for r in runs for s in r.final_per_task.values())
    return wilson_interval(successes, trials)


def summary(
    results: Sequence[RunResult],
    threshold: float,
    robot_hz: float,
    seeds: int,
    duration_s: float,
    extra: Mapping[str, Any],
) -> dict:
    methods = method_table(results)
    scaling = scaling_table(results, threshold)
    return {
        "final_success": {m: (methods[m]["final_success"]["mean"] if m in methods else None) for m in METHODS},
        "final_success_spread": {m: methods[m]["final_success"] for m in methods},
        "throughput_episodes_per_hour": {m: methods[m]["episodes_per_hour"]["mean"] for m in methods},
        "throughput_successful_episodes_per_hour": {
            m: methods[m]["successful_episodes_per_hour"]["mean"] for m in methods
        },
        "final_success_ci95": {m: final_success_ci95(results, m) for m in methods},
        "per_task": {m: {t: v["mean"] for t, v in methods[m]["final_per_task"].items()} for m in methods},
        "human_steps": {m: methods[m]["human_steps"]["mean"] for m in methods},
        "success_gain_per_1000_human_steps": return_on_human_effort(methods),
        "intervention_share": {m: methods[m]["intervention_share"]["mean"] for m in methods},
        "time_to_threshold_s": {k: v["time_to_threshold_s"] for k, v in scaling.items()},
        "time_to_threshold_per_seed_s": {k: v["time_to_threshold_per_seed_s"] for k, v in scaling.items()},
        "threshold": threshold,
        "robot_hz": robot_hz,
        "seeds": seeds,
        "duration_s": duration_s,
        "methods": methods,
        "scaling": scaling,
        "runs": [r.name for r in results],
        # virtual: fleet time is simulated (experiment/virtual_clock.py); wall: real processes. Results from before
        # the virtual clock existed have no "clock" and ran on the wall clock. Runs on both: "virtual,wall".
        "clock": ",".join(sorted({(r.fleet or {}).get("clock", "wall") for r in results if r.fleet})) or None,
        # BC on a large expert set with the same model and compute (the `ceiling` method; None when not run).
        "ceiling_success": methods["ceiling"]["final_success"]["mean"] if "ceiling" in methods else None,
        **dict(extra),
    }


# ---------------------------------------------------------------------------- files


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pm(s: Mapping[str, Any], digits: int = 2) -> str:
    if s.get("mean") is None:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def _clock_text(s: Mapping[str, Any]) -> str:
    clock = s.get("clock")
    clock = ",".join(clock) if isinstance(clock, list) else clock  # summaries written before 2026-12-02: a list
    if clock == "virtual":
        return "simulated: virtual clock"
    return "wall clock" if clock == "wall" else f"clocks: {clock or '-'}"


def _header_lines(s: Mapping[str, Any]) -> list[str]:
    return [
        "# sop experiment results",
        "",
        f"- command: `{s.get('command', '')}`",
        f"- date: {s.get('date', '')}",
        f"- machine: {s.get('machine', {})}",
        f"- wall clock of the whole experiment: {_fmt((s.get('wall_clock_s') or 0) / 60, 1)} min",
        f"- per run: {_fmt(s['duration_s'] / 60, 1)} min of fleet time ({_clock_text(s)}), "
        f"robots at {s['robot_hz']:g} Hz, "
        f"{s['seeds']} seed(s); "
        f"evaluation: {s.get('eval_episodes', '-')} episodes per task on fixed scenes",
        "",
    ]


def _methods_lines(methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    if not methods:
        return []
    tasks = list(next(iter(methods.values()))["final_per_task"])
    lines = [
        "## Final success and throughput (mean ± sample std over seeds)",
        "",
        "| method | final success | "
        + " | ".join(tasks)
        + " | episodes/h | successful episodes/h | operator share of steps | learner updates "
        "| robot steps/s | CPU % |",
        "|---|---:|" + "---:|" * len(tasks) + "---:|---:|---:|---:|---:|---:|",
    ]
    for m, v in methods.items():
        lines.append(
            f"| {m} | {_pm(v['final_success'])} | "
            + " | ".join(_pm(v["final_per_task"][t]) for t in tasks)
            + f" | {_pm(v['episodes_per_hour'], 0)} | {_pm(v['successful_episodes_per_hour'], 0)}"
            f" | {_pm(v['intervention_share'])}"
            f" | {_pm(v['learner_updates'], 0)} | {_pm(v['achieved_step_hz'], 1)} | {_pm(v['cpu_percent'], 0)} |"
        )
    return lines + [
        "",
        "Throughput counts every episode the fleet finished (success, failure, timeout) per hour of fleet time, "
        "as the paper does; the operator share is the fraction of executed steps the scripted operator produced. "
        "Robot steps/s is the pace reached inside episodes (the control rate unless the machine falls behind); "
        "CPU % is the machine's use while the fleet ran (100 = every core busy).",
        "",
    ]


def _human_effort_lines(s: Mapping[str, Any]) -> list[str]:
    gains = s.get("success_gain_per_1000_human_steps") or {}
    rows = [m for m, g in gains.items() if s["human_steps"].get(m)]
    if not rows:
        return []
    lines = [
        "## Human effort",
        "",
        "| method | human-controlled steps | success gained over the base per 1,000 of them |",
        "|---|---:|---:|",
    ]
    lines += [f"| {m} | {s['human_steps'][m]:.0f} | {_fmt(gains[m], 3)} |" for m in rows]
    return lines + [
        "",
        "Human-controlled steps: the operator's steps in the fleet (corrections), or the expert steps of the fresh "
        "demos a demo-trained method recorded (failed attempts included).",
        "",
    ]


def _minutes(t: Optional[float]) -> str:
    return _fmt(t / 60 if t is not None else None, 1)


def _scaling_lines(scaling: Mapping[str, Mapping[str, Any]], threshold: float) -> list[str]:
    lines = [
        f"## Fleet scaling (SOP + HG-DAgger): time to mean success {threshold:g}",
        "",
        "| robots | time to threshold (min) | per seed (min) | final success | episodes/h | robot steps/s | CPU % |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for k, v in scaling.items():
        per_seed = ", ".join(f"s{seed}: {_minutes(t)}" for seed, t in v["time_to_threshold_per_seed_s"].items())
        lines.append(
            f"| {k} | {_minutes(v['time_to_threshold_s'])} | {per_seed} | {_pm(v['final_success'])}"
            f" | {_pm(v['episodes_per_hour'], 0)} | {_pm(v['achieved_step_hz'], 1)} | {_pm(v['cpu_percent'], 0)} |"
        )
    return lines + [
        "",
        "Times come from the seed-mean evaluated success curve, linearly interpolated between evaluation points; "
        "'-' = not reached within the run.",
        "",
    ]


def markdown_report(summary_data: Mapping[str, Any], plots: Sequence[str] = ()) -> str:
    s = summary_data
    lines = _header_lines(s) + _methods_lines(s["methods"]) + _human_effort_lines(s)
    if s["scaling"]:
        lines += _scaling_lines(s["scaling"], s["threshold"])
    for plot in plots:
        lines += [f"![{Path(plot).stem}]({plot})", ""]
    return "\n".join(lines)
