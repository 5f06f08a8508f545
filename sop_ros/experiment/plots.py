"""PNG plots of an experiment (matplotlib, headless): success over time, scaling, operator share."""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from pathlib import Path

from sop_ros.core.evaluation.fleet_metrics import mean_curve
from sop_ros.experiment.results import RunResult

_STYLE = {
    "sop_hg_dagger": "tab:blue",
    "sop_recap": "tab:orange",
    "non_sop": "tab:green",
    "offline_only": "tab:purple",
    "more_demos": "tab:brown",
    "ceiling": "black",
    "base": "tab:gray",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    return path


def _seed_mean(runs: Sequence[RunResult], get_xy) -> tuple[list[float], list]:
    series = [get_xy(r) for r in runs]
    series = [s for s in series if s[0]]
    if not series:
        return [], []
    xs = series[0][0]
    same = [s[1] for s in series if len(s[0]) == len(xs)]
    return xs, mean_curve(same)


def success_over_time(results: Sequence[RunResult], threshold: float, path: Path) -> Path:
    """Evaluated success vs fleet time (simulated or wall clock) per method (thin: each seed, thick: seed mean);
    baselines without online training are horizontal lines at their final success."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_method: dict[str, list[RunResult]] = collections.defaultdict(list)
    for r in results:
        if "comparison" in r.groups:
            by_method[r.method].append(r)
    for method, runs in by_method.items():
        color = _STYLE.get(method)
        if any(len(r.curve) > 1 for r in runs) and runs[0].learner_updates is not None:
            for r in runs:
                ax.plot([p.t_s / 60 for p in r.curve], [p.success for p in r.curve], color=color, alpha=0.3, lw=1)
            xs, ys = _seed_mean(runs, lambda r: ([p.t_s / 60 for p in r.curve], [p.success for p in r.curve]))
            ax.plot(xs, ys, color=color, lw=2.5, marker="o", label=method)
        else:
            mean = sum(r.final_success for r in runs) / len(runs)
            ax.axhline(mean, color=color, ls="--", lw=1.5, label=f"{method} (final)")
    ax.axhline(threshold, color="black", ls=":", lw=1, label=f"threshold {threshold:g}")
    ax.set(
        xlabel="fleet time (min)",
        ylabel="evaluated success (mean over tasks)",
        ylim=(-0.02, 1.02),
        title="Success over fleet time",
    )
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    out = _save(fig, path)
    plt.close(fig)
    return out


def scaling(results: Sequence[RunResult], scaling_summary: Mapping[str, dict], threshold: float, path: Path) -> Path:
    """Seed-mean success vs fleet time per fleet size, with the time each reaches the threshold."""
    plt = _pyplot()
    fig, (ax, bar) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    colors = plt.get_cmap("viridis")
    sizes = list(scaling_summary)
    for i, robots in enumerate(sizes):
        v = scaling_summary[robots]
        color = colors(i / max(1, len(sizes) - 1) * 0.85)
        for r in results:
            if "scaling" in r.groups and str(r.robots) == robots:
                ax.plot([p.t_s / 60 for p in r.curve], [p.success for p in r.curve], color=color, alpha=0.3, lw=1)
        ax.plot(
            [t / 60 for t in v["times_s"]],
            v["mean_success"],
            color=color,
            lw=2.5,
            marker="o",
            label=f"{robots} robot(s)",
        )
    ax.axhline(threshold, color="black", ls=":", lw=1)
    ax.set(
        xlabel="fleet time (min)", ylabel="evaluated success", ylim=(-0.02, 1.02), title="SOP + HG-DAgger: fleet size"
    )
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    times = [scaling_summary[k]["time_to_threshold_s"] for k in sizes]
    run_min = max((max(v["times_s"], default=0.0) for v in scaling_summary.values()), default=0.0) / 60 or 1.0
    fills = [colors(i / max(1, len(sizes) - 1) * 0.85) for i in range(len(sizes))]
    # Not reached: an empty hatched bar over the whole run, so "never" does not read as "at once".
    bar.bar(
        range(len(sizes)),
        [t / 60 if t is not None else run_min for t in times],
        tick_label=sizes,
        color=[c if t is not None else "none" for c, t in zip(fills, times)],
        edgecolor=fills,
        hatch=[None if t is not None else "//" for t in times],
    )
    for i, t in enumerate(times):
        bar.text(
            i,
            t / 60 if t is not None else run_min,
            "not reached" if t is None else f"{t / 60:.1f}",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    bar.set_ylim(0, run_min * 1.15)
    bar.set(xlabel="robots", ylabel=f"minutes to success {threshold:g}", title="Time to threshold")
    out = _save(fig, path)
    plt.close(fig)
    return out


def intervention_share(results: Sequence[RunResult], path: Path) -> Path:
    """Share of executed steps the operator produced, per time window, per fleet run (seed mean)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[tuple[str, int], list[RunResult]] = collections.defaultdict(list)
    for r in results:
        if r.online_windows:
            groups[(r.method, r.robots)].append(r)
    for (method, robots), runs in sorted(groups.items()):
        xs, ys = _seed_mean(
            runs,
            lambda r: (
                [(w["start_s"] + w["end_s"]) / 120 for w in r.online_windows],
                [w["intervention_share"] for w in r.online_windows],
            ),
        )
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if pts:
            ax.plot(
                *zip(*pts),
                marker="o",
                lw=2 if method.startswith("sop") else 1.2,
                ls="-" if method.startswith("sop") else "--",
                label=f"{method}, {robots} robot(s)",
            )
    ax.set(
        xlabel="fleet time (min)",
        ylabel="operator share of steps",
        ylim=(-0.02, 1.02),
        title="Operator corrections over time",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    out = _save(fig, path)
    plt.close(fig)
    return out
