"""The experiment's CSV files, one writer per file, from the finished runs and their summary (results.py).

curves.csv   per run: evaluated success over fleet time
online.csv   per run: what the fleet did, per time window
runs.csv     per run: final figures
final.csv    per method: mean and spread over seeds
scaling.csv  per robot count: time to the threshold, per seed and from the seed-mean curve
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sop_ros.experiment.results import RunResult

ONLINE_COLUMNS = ("episodes", "success_rate", "autonomous_success_rate", "intervention_share", "intervention_rate")


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    os.replace(tmp, path)


def _write_curves(path: Path, results: Sequence[RunResult], tasks: list[str]) -> None:
    _write_csv(
        path,
        ["run", "method", "seed", "robots", "t_s", "version", "success", *tasks],
        (
            [r.name, r.method, r.seed, r.robots, p.t_s, p.version, p.success, *[p.per_task.get(t) for t in tasks]]
            for r in results
            for p in r.curve
        ),
    )


def _write_online(path: Path, results: Sequence[RunResult]) -> None:
    _write_csv(
        path,
        ["run", "method", "seed", "robots", "start_s", "end_s", *ONLINE_COLUMNS],
        (
            [r.name, r.method, r.seed, r.robots, w["start_s"], w["end_s"], *[w[c] for c in ONLINE_COLUMNS]]
            for r in results
            for w in r.online_windows
        ),
    )


def _run_row(r: RunResult, tasks: list[str]) -> list:
    return [
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


def _write_runs(path: Path, results: Sequence[RunResult], tasks: list[str]) -> None:
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
        (_run_row(r, tasks) for r in results),
    )


def _method_row(m: str, v: Mapping[str, Any], tasks: list[str]) -> list:
    return [
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


def _write_final(path: Path, methods: Mapping[str, Mapping[str, Any]], tasks: list[str]) -> None:
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
        (_method_row(m, v, tasks) for m, v in methods.items()),
    )


def _write_scaling(path: Path, scaling: Mapping[str, Mapping[str, Any]]) -> None:
    _write_csv(
        path,
        ["robots", "seed", "time_to_threshold_s"],
        [[k, seed, t] for k, v in scaling.items() for seed, t in v["time_to_threshold_per_seed_s"].items()]
        + [[k, "mean_curve", v["time_to_threshold_s"]] for k, v in scaling.items()],
    )


def write_csvs(out_dir: Path, results: Sequence[RunResult], summary_data: Mapping[str, Any]) -> list[Path]:
    """Writes the five CSV files into out_dir; returns their paths in the order above."""
    out_dir = Path(out_dir)
    tasks = list(results[0].final_per_task) if results else []
    written = [out_dir / name for name in ("curves.csv", "online.csv", "runs.csv", "final.csv", "scaling.csv")]
    curves, online, runs, final, scaling = written
    _write_curves(curves, results, tasks)
    _write_online(online, results)
    _write_runs(runs, results, tasks)
    _write_final(final, summary_data["methods"], tasks)
    _write_scaling(scaling, summary_data["scaling"])
    return written
