"""Fleet metrics of an online post-training run, from episode-store rows (ROS-free, numpy only).

The paper's metrics (research/sop-paper.md section 5.2):
- success rate: the fraction of successful episodes;
- throughput: episodes *terminated* per hour (success, failure and timeout all count), and, as
  pi*0.6 counts it, successful episodes per hour;
- time to target: the wall-clock time at which a success series first reaches a threshold.
Added here: the share of steps the operator corrected (human steps / all steps), and the
"autonomous" success rate (successful episodes without any human step), which, unlike the raw
online success rate, the operator cannot inflate by finishing the task for the policy.

Rows are anything with the StoredEpisode fields used below (EpisodeStore.query() returns them).
An episode belongs to the time window in which it *ended* (end_ns), relative to the run start.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Optional, Protocol

import numpy as np

NS_PER_S = 1_000_000_000
_EPS = 1e-9  # a mean of success rates that equals the threshold must count despite float rounding
S_PER_HOUR = 3600.0


class EpisodeRow(Protocol):
    robot_id: str
    task_id: str
    success: Optional[bool]  # None: not labelled
    num_steps: int
    human_steps: int
    end_ns: int


def _ratio(num: float, den: float) -> Optional[float]:
    return num / den if den > 0 else None


@dataclasses.dataclass(frozen=True)
class WindowStats:
    """The episodes that ended in [start_s, end_s) of a run."""

    start_s: float
    end_s: float
    episodes: int
    labelled: int  # episodes with a success label (the success-rate denominator)
    successes: int
    autonomous_successes: int  # successful and without a single human step
    steps: int
    human_steps: int
    episodes_with_intervention: int

    @property
    def success_rate(self) -> Optional[float]:
        return _ratio(self.successes, self.labelled)

    @property
    def autonomous_success_rate(self) -> Optional[float]:
        return _ratio(self.autonomous_successes, self.labelled)

    @property
    def intervention_share(self) -> Optional[float]:
        """Share of steps the operator acted in (None without steps)."""
        return _ratio(self.human_steps, self.steps)

    @property
    def intervention_rate(self) -> Optional[float]:
        """Share of episodes with at least one human step."""
        return _ratio(self.episodes_with_intervention, self.episodes)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(
            success_rate=self.success_rate,
            autonomous_success_rate=self.autonomous_success_rate,
            intervention_share=self.intervention_share,
            intervention_rate=self.intervention_rate,
        )
        return d


def _stats(rows: Sequence[EpisodeRow], start_s: float, end_s: float) -> WindowStats:
    labelled = [r for r in rows if r.success is not None]
    return WindowStats(
        start_s=start_s,
        end_s=end_s,
        episodes=len(rows),
        labelled=len(labelled),
        successes=sum(bool(r.success) for r in labelled),
        autonomous_successes=sum(bool(r.success) and r.human_steps == 0 for r in labelled),
        steps=sum(int(r.num_steps) for r in rows),
        human_steps=sum(int(r.human_steps) for r in rows),
        episodes_with_intervention=sum(r.human_steps > 0 for r in rows),
    )


def _check_span(duration_s: float, window_s: Optional[float] = None) -> None:
    if not (duration_s > 0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s: must be a positive finite number of seconds, got {duration_s!r}")
    if window_s is not None and not (window_s > 0 and math.isfinite(window_s)):
        raise ValueError(f"window_s: must be a positive finite number of seconds, got {window_s!r}")


def in_run(
    rows: Iterable[EpisodeRow], start_ns: int, duration_s: float, task_id: Optional[str] = None
) -> list[EpisodeRow]:
    """The rows that ended within [start, start + duration) (of `task_id` when given)."""
    _check_span(duration_s)
    end_ns = start_ns + int(duration_s * NS_PER_S)
    return [r for r in rows if start_ns <= r.end_ns < end_ns and (task_id is None or r.task_id == task_id)]


def window_stats(
    rows: Iterable[EpisodeRow], start_ns: int, duration_s: float, window_s: float, task_id: Optional[str] = None
) -> list[WindowStats]:
    """Consecutive windows of `window_s` covering [0, duration_s) of the run (the last one may be shorter)."""
    _check_span(duration_s, window_s)
    count = max(1, math.ceil(duration_s / window_s - 1e-9))
    buckets: list[list[EpisodeRow]] = [[] for _ in range(count)]
    for row in in_run(rows, start_ns, duration_s, task_id):
        t = (row.end_ns - start_ns) / NS_PER_S
        buckets[min(int(t // window_s), count - 1)].append(row)
    return [_stats(b, k * window_s, min((k + 1) * window_s, duration_s)) for k, b in enumerate(buckets)]


def totals(rows: Iterable[EpisodeRow], start_ns: int, duration_s: float, task_id: Optional[str] = None) -> WindowStats:
    """One window over the whole run."""
    return _stats(in_run(rows, start_ns, duration_s, task_id), 0.0, float(duration_s))


@dataclasses.dataclass(frozen=True)
class Throughput:
    episodes: int
    successful_episodes: int
    hours: float
    robots: int

    @property
    def episodes_per_hour(self) -> float:
        """Terminated episodes per hour, fleet-wide (the paper's definition)."""
        return self.episodes / self.hours

    @property
    def successful_episodes_per_hour(self) -> float:
        return self.successful_episodes / self.hours

    @property
    def episodes_per_robot_hour(self) -> float:
        return self.episodes_per_hour / self.robots

    @property
    def successful_episodes_per_robot_hour(self) -> float:
        return self.successful_episodes_per_hour / self.robots

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(
            episodes_per_hour=self.episodes_per_hour,
            successful_episodes_per_hour=self.successful_episodes_per_hour,
            episodes_per_robot_hour=self.episodes_per_robot_hour,
            successful_episodes_per_robot_hour=self.successful_episodes_per_robot_hour,
        )
        return d


def throughput(rows: Iterable[EpisodeRow], start_ns: int, duration_s: float, robots: int) -> Throughput:
    """Episodes that ended during the run, per hour of wall clock (human reset time is inside the episode gaps)."""
    if robots <= 0:
        raise ValueError(f"robots: must be positive, got {robots}")
    window = totals(rows, start_ns, duration_s)
    return Throughput(window.episodes, window.successes, duration_s / S_PER_HOUR, robots)


def time_to_threshold(
    times_s: Sequence[float], values: Sequence[Optional[float]], threshold: float, interpolate: bool = False
) -> Optional[float]:
    """The first time the series reaches `threshold`, or None if it never does.

    times_s must be increasing; None values (no measurement) are skipped. With interpolate, the
    crossing between the last point below and the first point at/above the threshold is placed
    linearly between them (a sparse evaluation grid otherwise rounds every time up to a grid point).
    """
    if len(times_s) != len(values):
        raise ValueError(f"times_s and values differ in length ({len(times_s)} vs {len(values)})")
    if any(b <= a for a, b in zip(times_s, times_s[1:])):
        raise ValueError("times_s: must be strictly increasing")
    previous: Optional[tuple[float, float]] = None
    for t, v in zip(times_s, values):
        if v is None:
            continue
        if v >= threshold - _EPS:
            if interpolate and previous is not None:
                t0, v0 = previous
                return float(t0 + (threshold - v0) / (v - v0) * (t - t0))
            return float(t)
        previous = (float(t), float(v))
    return None


@dataclasses.dataclass(frozen=True)
class Spread:
    """Mean and spread of one figure over seeds (std is the sample std, 0 for a single seed)."""

    mean: Optional[float]
    std: Optional[float]
    min: Optional[float]
    max: Optional[float]
    n: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def spread(values: Iterable[Optional[float]]) -> Spread:
    """Mean, sample std, min and max over the non-None values."""
    present = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    if present.size == 0:
        return Spread(None, None, None, None, 0)
    std = float(np.std(present, ddof=1)) if present.size > 1 else 0.0
    return Spread(float(np.mean(present)), std, float(np.min(present)), float(np.max(present)), int(present.size))


def mean_curve(curves: Sequence[Sequence[Optional[float]]]) -> list[Optional[float]]:
    """Point-wise mean of equally long series (e.g. one per seed, sampled at the same times), skipping None."""
    if not curves:
        return []
    length = len(curves[0])
    if any(len(c) != length for c in curves):
        raise ValueError(f"curves: all must have the same length, got {[len(c) for c in curves]}")
    return [spread(c[i] for c in curves).mean for i in range(length)]
