"""Fleet metrics (sop_ros/core/evaluation/fleet_metrics.py) on hand-built episode rows with known answers."""

import dataclasses
from typing import Optional

import pytest

from sop_ros.core.evaluation.fleet_metrics import (
    NS_PER_S,
    in_run,
    mean_curve,
    spread,
    throughput,
    time_to_threshold,
    totals,
    window_stats,
)

pytestmark = pytest.mark.timeout(30)

T0 = 1_700_000_000 * NS_PER_S


@dataclasses.dataclass(frozen=True)
class Row:
    end_s: float
    success: Optional[bool]
    num_steps: int = 100
    human_steps: int = 0
    task_id: str = "push-v3"
    robot_id: str = "robot1"

    @property
    def end_ns(self) -> int:
        return T0 + int(self.end_s * NS_PER_S)


ROWS = [
    # window [0, 60): 3 episodes, 2 successes (one with help), 50 + 0 + 25 human steps of 300
    Row(10, True, human_steps=50),
    Row(20, False, human_steps=25),
    Row(59.9, True),
    # window [60, 120): 2 episodes, both autonomous successes
    Row(60, True),
    Row(100, True, task_id="pick-place-v3"),
    # window [120, 150): one unlabelled episode with full human control
    Row(130, None, num_steps=40, human_steps=40),
    # outside the run: before the start and at/after its end
    Row(-1, True),
    Row(150, False),
]


def test_windows_count_episodes_by_end_time():
    windows = window_stats(ROWS, T0, duration_s=150, window_s=60)
    assert [(w.start_s, w.end_s) for w in windows] == [(0, 60), (60, 120), (120, 150)]
    first, second, third = windows
    assert (first.episodes, first.successes, first.autonomous_successes) == (3, 2, 1)
    assert first.success_rate == pytest.approx(2 / 3)
    assert first.autonomous_success_rate == pytest.approx(1 / 3)
    assert first.intervention_share == pytest.approx(75 / 300)
    assert first.intervention_rate == pytest.approx(2 / 3)
    assert (second.success_rate, second.intervention_share, second.intervention_rate) == (1.0, 0.0, 0.0)
    # An unlabelled episode counts for throughput and interventions, not for success.
    assert (third.episodes, third.labelled, third.success_rate, third.intervention_share) == (1, 0, None, 1.0)


def test_windows_of_one_task_and_empty_windows():
    windows = window_stats(ROWS, T0, duration_s=150, window_s=60, task_id="pick-place-v3")
    assert [w.episodes for w in windows] == [0, 1, 0]
    assert windows[0].success_rate is None and windows[0].intervention_share is None
    assert windows[1].success_rate == 1.0


def test_totals_and_in_run_exclude_episodes_outside_the_run():
    assert len(in_run(ROWS, T0, 150)) == 6
    total = totals(ROWS, T0, 150)
    assert (total.episodes, total.labelled, total.successes, total.human_steps, total.steps) == (6, 5, 4, 115, 540)
    assert total.as_dict()["success_rate"] == pytest.approx(0.8)


def test_throughput_counts_every_terminated_episode_per_hour():
    tp = throughput(ROWS, T0, duration_s=150, robots=2)
    hours = 150 / 3600
    assert tp.episodes_per_hour == pytest.approx(6 / hours)
    assert tp.successful_episodes_per_hour == pytest.approx(4 / hours)
    assert tp.episodes_per_robot_hour == pytest.approx(3 / hours)
    assert tp.as_dict()["successful_episodes_per_robot_hour"] == pytest.approx(2 / hours)
    with pytest.raises(ValueError, match="robots"):
        throughput(ROWS, T0, 150, robots=0)


def test_time_to_threshold_first_crossing_and_never():
    times = [0, 600, 1200, 1800]
    assert time_to_threshold(times, [0.5, 0.7, 0.9, 0.95], 0.9) == 1200
    assert time_to_threshold(times, [0.5, 0.7, 0.9, 0.95], 0.8, interpolate=True) == pytest.approx(900)
    assert time_to_threshold(times, [0.5, 0.7, 0.85, 0.6], 0.9) is None
    # Missing measurements are skipped; interpolation uses the last measured point below.
    assert time_to_threshold(times, [0.5, None, 0.9, 1.0], 0.7, interpolate=True) == pytest.approx(600)
    # Already at the threshold at the first point: no earlier point to interpolate from.
    assert time_to_threshold(times, [0.95, 0.9, 0.9, 1.0], 0.9, interpolate=True) == 0
    with pytest.raises(ValueError, match="increasing"):
        time_to_threshold([0, 0], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="length"):
        time_to_threshold([0, 1], [0.1], 0.5)


def test_spread_over_seeds():
    s = spread([0.8, 0.9, None, 1.0])
    assert (s.mean, s.min, s.max, s.n) == (pytest.approx(0.9), 0.8, 1.0, 3)
    assert s.std == pytest.approx(0.1)
    assert spread([0.7]).std == 0.0
    assert spread([None]).as_dict() == {"mean": None, "std": None, "min": None, "max": None, "n": 0}


def test_mean_curve_pointwise_and_length_check():
    assert mean_curve([[0.5, 0.7, None], [0.7, None, None]]) == [pytest.approx(0.6), 0.7, None]
    with pytest.raises(ValueError, match="same length"):
        mean_curve([[0.1], [0.1, 0.2]])


def test_bad_spans_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="duration_s"):
        window_stats(ROWS, T0, 0, 60)
    with pytest.raises(ValueError, match="window_s"):
        window_stats(ROWS, T0, 60, 0)


def test_time_to_threshold_counts_a_float_rounded_mean_that_equals_the_threshold():
    mean = (0.95 + 0.85) / 2  # 0.8999999999999999
    assert time_to_threshold([0, 60], [0.4, mean], 0.9) == 60
