"""Finished runs -> the experiment's results: CSV, a markdown report, summary.json (plots: plots.py).

Each run leaves <run_dir>/result.json (RunResult). Aggregation only reads those, so results can be
rebuilt from a results folder at any time, and a resumed experiment reuses finished runs.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from sop_ros.core.evaluation.fleet_metrics import mean_curve, spread, time_to_threshold
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
        # the virtual clock existed have no "clock" and ran on the wall clock.
        "clock": sorted({(r.fleet or {}).get("clock", "wall") for r in results if r.fleet}),
        **dict(extra),
    }


# ---------------------------------------------------------------------------- files


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    os.replace(tmp, path)


def write_csvs(out_dir: Path, results: Sequence[RunResult], summary_data: Mapping[str, Any]) -> list[Path]:
    out_dir = Path(out_dir)
    tasks = list(results[0].final_per_task) if results else []
    written = []
    path = out_dir / "curves.csv"  # per run: evaluated success over fleet time
    _write_csv(
        path,
        ["run", "method", "seed", "robots", "t_s", "version", "success", *tasks],
        (
            [r.name, r.method, r.seed, r.robots, p.t_s, p.version, p.success, *[p.per_task.get(t) for t in tasks]]
            for r in results
            for p in r.curve
        ),
    )
    written.append(path)
    path = out_dir / "online.csv"  # per run: what the fleet did, per time window
    cols = ["episodes", "success_rate", "autonomous_success_rate", "intervention_share", "intervention_rate"]
    _write_csv(
        path,
        ["run", "method", "seed", "robots", "start_s", "end_s", *cols],
        (
            [r.name, r.method, r.seed, r.robots, w["start_s"], w["end_s"], *[w[c] for c in cols]]
            for r in results
            for w in r.online_windows
        ),
    )
    written.append(path)
    path = out_dir / "runs.csv"  # per run: final figures
    _write_csv(
        path,
        [
            "run",
            "method",
            "seed",
            "robots",
            "final_version",
            "final_success",
            *tasks,
            "episodes_per_hour",
            "successful_episodes_per_hour",
            "intervention_share",
            "learner_updates",
            "offline_updates",
        ],
        (
            [
                r.name,
                r.method,
                r.seed,
                r.robots,
                r.final_version,
                r.final_success,
                *[r.final_per_task.get(t) for t in tasks],
                r.throughput["episodes_per_hour"] if r.throughput else None,
                r.throughput["successful_episodes_per_hour"] if r.throughput else None,
                r.online_totals["intervention_share"] if r.online_totals else None,
                r.learner_updates,
                r.offline_updates,
            ]
            for r in results
        ),
    )
    written.append(path)
    path = out_dir / "final.csv"  # per method: mean and spread over seeds
    methods = summary_data["methods"]
    _write_csv(
        path,
        [
            "method",
            "runs",
            "final_success_mean",
            "final_success_std",
            "final_success_min",
            "final_success_max",
            *[f"{t}_mean" for t in tasks],
            "episodes_per_hour_mean",
            "successful_episodes_per_hour_mean",
            "intervention_share_mean",
        ],
        (
            [
                m,
                v["runs"],
                v["final_success"]["mean"],
                v["final_success"]["std"],
                v["final_success"]["min"],
                v["final_success"]["max"],
                *[v["final_per_task"].get(t, {}).get("mean") for t in tasks],
                v["episodes_per_hour"]["mean"],
                v["successful_episodes_per_hour"]["mean"],
                v["intervention_share"]["mean"],
            ]
            for m, v in methods.items()
        ),
    )
    written.append(path)
    path = out_dir / "scaling.csv"
    _write_csv(
        path,
        ["robots", "seed", "time_to_threshold_s"],
        [
            [k, seed, t]
            for k, v in summary_data["scaling"].items()
            for seed, t in v["time_to_threshold_per_seed_s"].items()
        ]
        + [[k, "mean_curve", v["time_to_threshold_s"]] for k, v in summary_data["scaling"].items()],
    )
    written.append(path)
    return written


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pm(s: Mapping[str, Any], digits: int = 2) -> str:
    if s.get("mean") is None:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def _clock_text(s: Mapping[str, Any]) -> str:
    clocks = s.get("clock") or []
    if clocks == ["virtual"]:
        return "simulated: virtual clock"
    return "wall clock" if clocks == ["wall"] else "clocks: " + (", ".join(clocks) or "-")


def markdown_report(summary_data: Mapping[str, Any], plots: Sequence[str] = ()) -> str:
    s = summary_data
    lines = ["# sop experiment results", ""]
    lines += [
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
    methods = s["methods"]
    if methods:
        tasks = list(next(iter(methods.values()))["final_per_task"])
        lines += [
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
        lines += [
            "",
            "Throughput counts every episode the fleet finished (success, failure, timeout) per hour of fleet time, "
            "as the paper does; the operator share is the fraction of executed steps the scripted operator produced. "
            "Robot steps/s is the pace reached inside episodes (the control rate unless the machine falls behind); "
            "CPU % is the machine's use while the fleet ran (100 = every core busy).",
            "",
        ]
    if s["scaling"]:
        lines += [
            f"## Fleet scaling (SOP + HG-DAgger): time to mean success {s['threshold']:g}",
            "",
            "| robots | time to threshold (min) | per seed (min) | final success | episodes/h "
            "| robot steps/s | CPU % |",
            "|---:|---:|---|---:|---:|---:|---:|",
        ]
        for k, v in s["scaling"].items():
            per_seed = ", ".join(
                f"s{seed}: {_fmt(t / 60 if t is not None else None, 1)}"
                for seed, t in v["time_to_threshold_per_seed_s"].items()
            )
            t = v["time_to_threshold_s"]
            lines.append(
                f"| {k} | {_fmt(t / 60 if t is not None else None, 1)} | {per_seed} | {_pm(v['final_success'])}"
                f" | {_pm(v['episodes_per_hour'], 0)} | {_pm(v['achieved_step_hz'], 1)} | {_pm(v['cpu_percent'], 0)} |"
            )
        lines += [
            "",
            "Times come from the seed-mean evaluated success curve, linearly interpolated between evaluation points; "
            "'-' = not reached within the run.",
            "",
        ]
    for plot in plots:
        lines += [f"![{Path(plot).stem}]({plot})", ""]
    return "\n".join(lines)
