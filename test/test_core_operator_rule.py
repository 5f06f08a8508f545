"""Scripted-operator intervention rule: hand-built sequences, plus one run against the real sim."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import operator_rule

from sop_ros.core.robot.operator import ScriptedOperator

pytestmark = pytest.mark.timeout(60)

ZERO = np.zeros(4)
EXPERT = np.array([1.0, 0.0, 0.0, -1.0])


def _run(op: ScriptedOperator, progress: list[float], policy: list, expert=EXPERT):
    return [op.decide(p, a, expert) for p, a in zip(progress, policy)]


def test_progressing_policy_is_never_interrupted():
    op = ScriptedOperator(operator_rule(stall_steps=3, deviation_steps=3))
    decisions = _run(op, [0.1 * i for i in range(20)], [EXPERT] * 20)
    assert not any(d.intervening or d.changed for d in decisions)


def test_stall_takes_over_after_exactly_k_steps_without_progress():
    op = ScriptedOperator(operator_rule(stall_steps=4, min_progress_delta=0.05, deviation_steps=0))
    # 0.2 then tiny improvements below the delta: steps 1..4 count as stalled.
    decisions = _run(op, [0.2, 0.21, 0.22, 0.23, 0.24, 0.3], [EXPERT] * 6)
    assert [d.intervening for d in decisions] == [False, False, False, False, True, True]
    assert decisions[4].changed and "no progress for 4 steps" in decisions[4].reason and decisions[4].trigger == "stall"
    assert not decisions[5].changed


def test_stuck_takes_over_when_neither_progress_nor_the_arm_moves():
    rule = operator_rule(stall_steps=10, stuck_steps=3, deviation_steps=0, min_progress_delta=0.05, stall_motion=0.01)
    op = ScriptedOperator(rule)
    still = np.array([0.1, 0.5, 0.2, 0.3])
    # The first step anchors the arm; 3 more without progress or motion (jitter below stall_motion) fire.
    states = [still, still + 0.005, still - 0.005, still]
    decisions = [op.decide(0.2, EXPERT, EXPERT, s) for s in states]
    assert [d.intervening for d in decisions] == [False, False, False, True]
    assert decisions[3].trigger == "stuck" and "arm still for 3 steps" in decisions[3].reason


def test_a_moving_arm_without_progress_gets_the_stall_window_not_the_stuck_one():
    rule = operator_rule(stall_steps=6, stuck_steps=2, deviation_steps=0, min_progress_delta=0.05, stall_motion=0.01)
    op = ScriptedOperator(rule)
    moving = [np.array([0.02 * i, 0.5, 0.2, 0.3]) for i in range(8)]
    decisions = [op.decide(0.2, EXPERT, EXPERT, s) for s in moving]
    first = next(i for i, d in enumerate(decisions) if d.intervening)
    assert first == 6 and decisions[first].trigger == "stall"
    # Without the arm state the stuck rule cannot judge, so only the stall window counts.
    op = ScriptedOperator(rule)
    decisions = [op.decide(0.2, EXPERT, EXPERT, None) for _ in range(8)]
    assert next(i for i, d in enumerate(decisions) if d.intervening) == 6


def test_progress_resets_the_stuck_count():
    op = ScriptedOperator(operator_rule(stall_steps=0, stuck_steps=3, deviation_steps=0, min_progress_delta=0.05))
    still = np.zeros(4)
    progress = [0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2]  # progress on step 3 restarts the count
    decisions = [op.decide(p, EXPERT, EXPERT, still) for p in progress]
    assert [d.intervening for d in decisions] == [False, False, False, False, False, False, True]


def test_deviation_takes_over_only_when_consecutive():
    cfg = operator_rule(stall_steps=0, deviation_threshold=0.5, deviation_steps=3, progress_excuses_deviation=False)
    far = EXPERT + np.array([0.0, 0.0, 0.0, 2.0])  # gripper opposite to the expert's: distance 2
    op = ScriptedOperator(cfg)
    # deviate, deviate, agree (resets), deviate x3 -> takeover on the 6th step.
    decisions = _run(op, [0.01 * i for i in range(6)], [far, far, EXPERT, far, far, far])
    assert [d.intervening for d in decisions] == [False] * 5 + [True]
    assert "2.00 > 0.5 for 3 steps" in decisions[5].reason and decisions[5].trigger == "deviation"


def test_progress_excuses_deviation_only_when_enabled_and_only_on_steps_that_progressed():
    far = EXPERT + np.array([0.0, 0.0, 0.0, 2.0])
    # A policy off the expert's actions but getting there its own way (progress on every step except 4..6).
    progress = [0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.5]
    strict = ScriptedOperator(
        operator_rule(
            stall_steps=0,
            deviation_threshold=0.5,
            deviation_steps=3,
            subgoal_gain=10.0,
            progress_excuses_deviation=False,
        )
    )
    assert [d.intervening for d in _run(strict, progress, [far] * 8)] == [False, False, True] + [True] * 5
    lenient = ScriptedOperator(
        operator_rule(
            stall_steps=0,
            deviation_threshold=0.5,
            deviation_steps=3,
            subgoal_gain=10.0,
            progress_excuses_deviation=True,
        )
    )
    decisions = _run(lenient, progress, [far] * 8)
    # Steps 0..3 made progress (not counted); 4, 5, 6 deviate without progress: takeover on the third.
    assert [d.intervening for d in decisions] == [False] * 6 + [True, True]
    assert "for 3 steps" in decisions[6].reason
    with pytest.raises(ValueError, match="progress_excuses_deviation"):
        operator_rule(progress_excuses_deviation=1)


def test_chunk_first_action_is_compared_and_none_is_not_judged():
    cfg = operator_rule(stall_steps=0, deviation_threshold=0.5, deviation_steps=2, progress_excuses_deviation=False)
    op = ScriptedOperator(cfg)
    chunk_far_first = np.stack([-EXPERT, EXPERT, EXPERT])
    chunk_close_first = np.stack([EXPERT, -EXPERT, -EXPERT])
    assert not any(d.intervening for d in _run(op, [0.1, 0.2, 0.3], [chunk_close_first, None, chunk_far_first]))
    assert op.decide(0.4, chunk_far_first, EXPERT).intervening
    with pytest.raises(ValueError, match="action shape"):
        ScriptedOperator(cfg).decide(0.0, np.zeros(3), EXPERT)


def test_hand_back_after_h_progress_steps_then_policy_counters_restart():
    cfg = operator_rule(
        stall_steps=2, min_progress_delta=0.01, deviation_steps=0, handback_progress_steps=3, subgoal_gain=10.0
    )
    op = ScriptedOperator(cfg)
    progress = [
        0.5,
        0.5,
        0.5,  # stall -> takeover at index 2
        0.5,
        0.52,
        0.52,
        0.54,
        0.56,  # expert: progress on 3 steps -> hand back at index 7
        0.56,
        0.56,
    ]  # policy stalls again: takeover needs 2 fresh stalled steps
    decisions = _run(op, progress, [ZERO] * len(progress))
    assert [d.intervening for d in decisions] == [False, False, True, True, True, True, True, False, False, True]
    assert decisions[7].changed and "expert made progress on 3 steps" in decisions[7].reason
    assert decisions[9].changed and decisions[9].reason.startswith("no progress")


def test_hand_back_at_subgoal():
    cfg = operator_rule(stall_steps=1, deviation_steps=0, handback_progress_steps=100, subgoal_gain=0.2)
    op = ScriptedOperator(cfg)
    decisions = _run(op, [0.3, 0.3, 0.4, 0.49, 0.51], [ZERO] * 5)
    assert [d.intervening for d in decisions] == [False, True, True, True, False]
    assert "sub-goal reached" in decisions[4].reason


def test_is_deterministic_and_reset_clears_state():
    cfg = operator_rule(stall_steps=3, deviation_threshold=0.3, deviation_steps=2, handback_progress_steps=2)
    rng = np.random.default_rng(0)
    progress = np.cumsum(rng.normal(0.0, 0.02, 200)).tolist()
    actions = [rng.uniform(-1, 1, 4) for _ in range(200)]
    op = ScriptedOperator(cfg)
    first = _run(op, progress, actions)
    op.reset()
    assert not op.intervening
    second = _run(op, progress, actions)
    assert first == second
    assert any(d.changed and d.intervening for d in first) and any(d.changed and not d.intervening for d in first)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="stall_steps"):
        operator_rule(stall_steps=-1)
    with pytest.raises(ValueError, match="deviation_threshold"):
        operator_rule(deviation_threshold=float("nan"))
    with pytest.raises(ValueError, match="progress"):
        ScriptedOperator(operator_rule()).decide(float("inf"), None, EXPERT)


def test_with_real_sim_a_frozen_policy_gets_rescued_and_expert_never_interrupted():
    from sop_ros.backends.metaworld_sim import MetaWorldSimBackend, MetaWorldSimConfig
    from sop_ros.core.robot.tasks import load_task_specs
    from sop_ros.resources import default_tasks_path

    tasks = load_task_specs(default_tasks_path())
    backend = MetaWorldSimBackend(MetaWorldSimConfig(tasks, render=False))
    try:
        # As configured, and with the stuck rule at 15 steps: the expert itself must never trigger a takeover
        # (it crosses progress-free stretches on push, but on the move).
        for op in (ScriptedOperator(operator_rule()), ScriptedOperator(operator_rule(stuck_steps=15))):
            for seed in range(3):
                backend.reset("push-v3", seed)
                op.reset()
                while True:
                    expert = backend.expert_action()
                    decision = op.decide(backend.progress(), expert, expert, backend.observation().state)
                    assert not decision.intervening
                    if backend.step(expert).done:
                        break
        # A policy that never moves: the operator (stuck rule at 15) takes over as soon as the arm has stood
        # still for 15 steps, the expert makes progress, hands back.
        backend.reset("push-v3", 0)
        op.reset()
        log = []
        for _ in range(120):
            expert = backend.expert_action()
            decision = op.decide(backend.progress(), ZERO, expert, backend.observation().state)
            log.append(decision)
            result = backend.step(expert if decision.intervening else ZERO.astype(np.float32))
            if result.done:
                break
        takeovers = [d for d in log if d.changed and d.intervening]
        handbacks = [d for d in log if d.changed and not d.intervening]
        assert takeovers and handbacks
        assert takeovers[0].trigger == "stuck" and log.index(takeovers[0]) == 15
    finally:
        backend.close()
