"""Task-aware adaptive online/offline sampler."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sop_ros.core.algorithms import DataSource
from sop_ros.core.training.sampler import SamplerConfig, SampleRef, TaskAwareSampler

pytestmark = pytest.mark.timeout(60)
ON, OFF = DataSource.ONLINE, DataSource.OFFLINE


def _sampler(config=SamplerConfig(), seed=0, tasks=("a",), steps=50):
    s = TaskAwareSampler(config, seed=seed)
    for t in tasks:
        s.add_episode(f"{t}-off", t, OFF, np.arange(steps))
        s.add_episode(f"{t}-on", t, ON, np.arange(steps))
    return s


def _feed(s, task, l_on, l_off, n=1):
    for _ in range(n):
        s.record_losses([SampleRef(task, ON, f"{task}-on", 0), SampleRef(task, OFF, f"{task}-off", 0)], [l_on, l_off])


def test_online_share_follows_the_paper_rule_on_normalised_losses():
    s = _sampler()
    _feed(s, "a", 0.02, 0.01)  # first record initialises the EMA
    # normalised: l_on = 4/3, l_off = 2/3 -> sigmoid(1.5 * 4/3 - 2/3)
    assert s.online_share("a") == pytest.approx(1 / (1 + math.exp(-(2.0 - 2 / 3))))
    raw = _sampler(SamplerConfig(normalise_losses=False, alpha=2.0))
    _feed(raw, "a", 0.5, 0.4)
    assert raw.online_share("a") == pytest.approx(1 / (1 + math.exp(-(1.0 - 0.4))))


def test_online_share_rises_with_relative_online_loss_and_stays_in_bounds():
    shares = []
    for ratio in [0.01, 0.1, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 100.0]:
        s = _sampler()
        _feed(s, "a", 0.05 * ratio, 0.05)
        shares.append(s.online_share("a"))
    assert all(b >= a for a, b in zip(shares, shares[1:]))
    assert shares[-1] > shares[0]
    assert min(shares) == pytest.approx(0.2) and max(shares) == pytest.approx(0.8)
    assert all(0.2 <= x <= 0.8 for x in shares)


def test_online_share_tracks_a_changing_loss_through_the_ema():
    s = _sampler(SamplerConfig(loss_window=20))
    _feed(s, "a", 0.01, 0.04, n=50)
    low = s.online_share("a")
    _feed(s, "a", 0.08, 0.04, n=5)
    mid = s.online_share("a")
    _feed(s, "a", 0.08, 0.04, n=100)
    high = s.online_share("a")
    assert low < mid < high

    def sig(x):
        return 1 / (1 + math.exp(-x))

    assert low == pytest.approx(sig(1.5 * 0.4 - 1.6))  # normalised 0.01, 0.04 -> 0.4, 1.6
    assert high == pytest.approx(sig(1.5 * 4 / 3 - 2 / 3), abs=1e-3)  # EMA has converged to 0.08, 0.04


def test_empirical_online_fraction_matches_the_share():
    s = _sampler()
    _feed(s, "a", 0.03, 0.01)
    share = s.online_share("a")
    refs = s.sample(20000)
    frac = np.mean([r.source == ON for r in refs])
    assert frac == pytest.approx(share, abs=0.015)
    assert all(r.episode_key == f"a-{r.source.value[:3] if r.source == OFF else 'on'}" for r in refs)


def test_task_balance_holds_when_one_task_has_ten_times_the_data():
    s = TaskAwareSampler(SamplerConfig(), seed=1)
    for i in range(10):
        s.add_episode(f"big-{i}", "big", OFF, np.arange(100))
    s.add_episode("small-0", "small", OFF, np.arange(100))
    refs = s.sample(20000)
    frac_big = np.mean([r.task_id == "big" for r in refs])
    assert frac_big == pytest.approx(0.5, abs=0.015)
    # within a task, items are uniform over steps: each of the 10 big episodes gets ~1/10
    counts = np.bincount([int(r.episode_key.split("-")[1]) for r in refs if r.task_id == "big"], minlength=10)
    assert counts.min() > 0.8 * counts.mean()


def test_cold_start_uses_whichever_buffer_exists():
    s = TaskAwareSampler(seed=0)
    s.add_episode("x-off", "x", OFF, np.arange(5))
    assert s.online_share("x") == 0.0
    assert {r.source for r in s.sample(200)} == {OFF}
    s.add_episode("y-on", "y", ON, np.arange(5))
    assert s.online_share("y") == 1.0
    s.add_episode("x-on", "x", ON, np.arange(5))
    assert s.online_share("x") == 0.5  # both buffers, no losses yet: initial share
    with pytest.raises(LookupError):
        TaskAwareSampler().sample(4)


def test_episode_without_trainable_steps_and_duplicates_add_nothing():
    s = TaskAwareSampler()
    assert s.add_episode("e1", "t", ON, np.array([], np.int64)) == 0
    assert s.tasks() == []
    assert s.add_episode("e2", "t", ON, np.array([3, 4])) == 2
    assert s.add_episode("e2", "t", ON, np.array([3, 4])) == 0
    assert s.buffer_sizes() == {("t", ON): 2}
    assert {r.step for r in s.sample(100)} == {3, 4}


def test_struggle_weighting_favours_failing_tasks():
    s = _sampler(SamplerConfig(task_weighting="struggle", struggle_mix=0.5), tasks=("easy", "hard"))
    for _ in range(10):
        s.record_outcome("easy", True, 0.0)
        s.record_outcome("hard", False, 0.5)
    w = s.task_weights()
    # struggle: easy 0, hard 1.5 -> 0.5 * 0.5 + 0.5 * 1.0
    assert w["hard"] == pytest.approx(0.75) and w["easy"] == pytest.approx(0.25)
    assert "online_share/hard" in s.weights() and "task_weight/easy" in s.weights()


def test_state_round_trip_resumes_identically():
    s = _sampler(tasks=("a", "b"))
    _feed(s, "a", 0.03, 0.01, n=3)
    s.record_outcome("a", True, 0.1)
    s.sample(10)
    state = json.loads(json.dumps(s.state_dict()))  # must be JSON-serialisable
    t = _sampler(tasks=("a", "b"), seed=99)
    t.load_state_dict(state)
    assert t.weights() == s.weights()
    assert t.sample(50) == s.sample(50)
    with pytest.raises(ValueError, match="malformed"):
        t.load_state_dict({"loss_ema": []})
