"""The robot's health checks on /diagnostics: control loop, policy, operator (ROS-free core, fake clock)."""

from __future__ import annotations

import pytest

from sop_ros.core.robot.health_checks import ERROR, OK, WARN, HealthThresholds, RobotHealth, link_check, spool_check
from sop_ros.resources import node_defaults

THRESHOLDS = HealthThresholds(
    window_s=5.0,
    rate_warn_ratio=0.8,
    rate_error_ratio=0.5,
    inference_warn_ms=80.0,
    latency_warn_ms=150.0,
    operator_share_warn=0.5,
)


def _by_name(checks):
    return {c.name: c for c in checks}


def _steps(health: RobotHealth, start: float, seconds: float, hz: float, human_every: int = 0) -> float:
    n = int(seconds * hz)
    for i in range(n):
        health.on_step(start + i / hz, bool(human_every) and i % human_every == 0)
    return start + n / hz


def test_the_control_loop_is_ok_at_rate_warns_when_slow_and_errors_when_far_behind():
    health = RobotHealth(THRESHOLDS, control_rate_hz=10.0)
    assert _by_name(health.checks(0.0))["control_loop"].level == OK  # between episodes
    health.on_episode(0.0, running=True)
    now = _steps(health, 0.0, 10.0, 10.0)
    assert _by_name(health.checks(now))["control_loop"].level == OK
    now = _steps(health, now, 10.0, 7.0)  # 0.7 of the target
    check = _by_name(health.checks(now))["control_loop"]
    assert check.level == WARN and "falling behind" in check.message and check.values["achieved_hz"] == "7.00"
    now = _steps(health, now, 10.0, 3.0)
    assert _by_name(health.checks(now))["control_loop"].level == ERROR
    assert _by_name(health.checks(now + 6.0))["control_loop"].level == ERROR  # nothing executed at all
    health.on_episode(now + 6.0, running=False)
    assert _by_name(health.checks(now + 6.0))["control_loop"].level == OK


def test_a_fresh_episode_is_judged_on_its_own_time_not_the_whole_window():
    health = RobotHealth(THRESHOLDS, control_rate_hz=10.0)
    health.on_episode(100.0, running=True)
    now = _steps(health, 100.0, 1.0, 10.0)  # 1 s into the episode at full rate
    assert _by_name(health.checks(now))["control_loop"].level == OK


def test_policy_and_operator_checks():
    health = RobotHealth(THRESHOLDS, control_rate_hz=10.0)
    for t in range(10):
        health.on_chunk(float(t), policy_version=7, inference_ms=30.0, latency_ms=40.0)
    policy = _by_name(health.checks(9.0))["policy"]
    assert policy.level == OK and policy.values["policy_version"] == "7" and policy.values["inference_ms"] == "30.0"
    for t in range(10, 20):
        health.on_chunk(float(t), policy_version=8, inference_ms=120.0, latency_ms=-5.0)  # stamps of another clock
    policy = _by_name(health.checks(19.0))["policy"]
    assert policy.level == WARN and "inference 120 ms" in policy.message and policy.values["frame_to_action_ms"] == "-"
    health.on_episode(0.0, running=True)
    _steps(health, 20.0, 4.0, 10.0, human_every=1)  # every step the operator's
    operator = _by_name(health.checks(24.0))["operator"]
    assert operator.level == WARN and operator.values["operator_share"] == "1.00"


def test_thresholds_come_from_the_robot_yaml_and_are_checked():
    assert HealthThresholds.from_mapping(node_defaults("robot_status")) == THRESHOLDS
    with pytest.raises(ValueError):
        HealthThresholds(5.0, 0.4, 0.5, 80.0, 150.0, 0.5)  # error ratio above the warn ratio


def test_link_is_an_error_while_the_learner_is_unreachable_and_warns_when_it_stops_answering():

    down = link_check(unreachable_s=12.4, last_reply_age_s=13.0, reply_warn_s=10.0)
    assert (down.name, down.level, down.message) == ("link", ERROR, "learner unreachable for 12 s")
    assert down.values["connected"] == "False" and down.values["unreachable_s"] == "12.4"
    assert link_check(None, None, 10.0).level == WARN  # not answered yet
    assert link_check(None, 10.5, 10.0).level == WARN  # answering nothing for another reason
    up = link_check(None, 0.4, 10.0)
    assert (up.level, up.values["connected"], up.values["last_reply_age_s"]) == (OK, "True", "0.4")


def test_spool_warns_on_a_backlog_or_parked_episodes_and_is_an_error_above_its_size_limit():

    assert spool_check(3, 3 << 20, 0, warn_episodes=20, error_bytes=100 << 20).level == OK
    backlog = spool_check(21, 21 << 20, 0, warn_episodes=20, error_bytes=100 << 20)
    assert (backlog.level, backlog.values["episodes"], backlog.values["bytes"]) == (WARN, "21", str(21 << 20))
    assert spool_check(1, 1, 1, warn_episodes=20, error_bytes=100).level == WARN
    full = spool_check(5, 101, 0, warn_episodes=20, error_bytes=100)
    assert full.level == ERROR and "above the spool limit" in full.message
