"""The operator's recovery phase (back off and reopen before correcting; again when the expert is stuck): pure core,
hand-built sequences."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import operator_rule

from sop_ros.core.robot.operator import OperatorRuleConfig
from sop_ros.core.robot.operator_recovery import OperatorPhase, RecoveringOperator, RecoveryPhase
from sop_ros.resources import node_defaults

pytestmark = pytest.mark.timeout(30)

EXPERT = np.array([0.5, 0.0, -1.0, 0.0], dtype=np.float32)
RECOVERY = np.array([0.0, 0.0, 1.0, -1.0], dtype=np.float32)
# Takes over after 2 policy steps without progress; hands back only after 100 expert steps with progress;
# recovers at once at every takeover (no probe; the probe has its own tests).
RULE = operator_rule(
    stall_steps=2,
    deviation_steps=0,
    handback_progress_steps=100,
    subgoal_gain=10.0,
    max_handbacks=-1,
    recovery_steps=3,
    recovery_action=tuple(RECOVERY),
    expert_stall_steps=4,
    stall_motion=0.01,
    recovery_probe_steps=0,
)


def _state(x: float) -> np.ndarray:
    return np.array([x, 0.0, 0.0])


def _run(op: RecoveringOperator, progress: list[float], states: list[np.ndarray]):
    return [op.decide(p, np.zeros(4), EXPERT, s) for p, s in zip(progress, states)]


def _phases(commands) -> str:
    return "".join(c.phase.value[0] for c in commands)  # p(olicy), r(ecovery), e(xpert)


def test_takeover_starts_with_recovery_steps_of_the_recovery_action_then_the_expert():
    op = RecoveringOperator(RULE)
    moving = [_state(0.1 * i) for i in range(9)]
    commands = _run(op, [0.5] * 9, moving)
    assert _phases(commands) == "pp" + "rrr" + "eeee"
    assert commands[2].decision.changed and commands[2].recovery_started and op.recovery.recovery_cause == "takeover"
    assert all(c.action is None for c in commands[:2])
    assert all(np.array_equal(c.action, RECOVERY) for c in commands[2:5])
    assert all(np.array_equal(c.action, EXPERT) for c in commands[5:])
    assert not any(c.recovery_started for c in commands[3:])


def test_without_recovery_steps_the_expert_acts_at_once_as_before():
    op = RecoveringOperator(dataclasses.replace(RULE, recovery_steps=0))
    frozen = [_state(0.0)] * 40
    commands = _run(op, [0.5] * 40, frozen)
    # The old operator: expert from the takeover on, and it sits on a frozen state (no recovery to re-trigger).
    assert _phases(commands) == "pp" + "e" * 38
    assert all(np.array_equal(c.action, EXPERT) for c in commands[2:])
    assert op.recovery.recoveries == 0


def test_a_frozen_state_without_progress_recovers_again_after_expert_stall_steps():
    op = RecoveringOperator(RULE)
    commands = _run(op, [0.5] * 20, [_state(0.0)] * 20)
    # pp | rrr | e (anchor) + 4 stalled e -> the 4th stalled step recovers again: rrr, then e ...
    assert _phases(commands) == "pp" + "rrr" + "eeee" + "rrr" + "eeee" + "rrr" + "e"
    assert [i for i, c in enumerate(commands) if c.recovery_started] == [2, 9, 16]
    assert op.recovery.recoveries == 3 and op.intervening


def test_a_moving_state_or_rising_progress_is_not_a_stall():
    op = RecoveringOperator(RULE)
    n = 30
    # The arm moves 2 cm a step while progress falls (an expert taking a detour): never stuck.
    detour = _run(op, [0.5 - 0.01 * i for i in range(n)], [_state(0.02 * i) for i in range(n)])
    assert _phases(detour) == "pp" + "rrr" + "e" * (n - 5)
    op.reset()
    # Motion below stall_motion (jitter) but progress rising by more than min_progress_delta: not stuck.
    rising = _run(op, [0.5] * 5 + [0.5 + 0.02 * i for i in range(n - 5)], [_state(0.001 * (i % 2)) for i in range(n)])
    assert _phases(rising) == "pp" + "rrr" + "e" * (n - 5)
    op.reset()
    # Jitter below the motion threshold and flat progress: stuck.
    jitter = _run(op, [0.5] * 12, [_state(0.004 * (i % 2)) for i in range(12)])
    assert jitter[9].recovery_started


def test_hand_back_returns_control_and_the_next_takeover_recovers_again():
    rule = dataclasses.replace(RULE, handback_progress_steps=2, expert_stall_steps=0)
    op = RecoveringOperator(rule)
    progress = [
        0.5,
        0.5,
        0.5,  # takeover at index 2
        0.5,
        0.5,  # recovery (3 steps: indices 2..4)
        0.6,
        0.7,  # expert: progress on 2 steps -> hand back at index 6
        0.7,
        0.7,
        0.7,
    ]  # policy stalls: takeover at index 8 (2 stalled steps), recovery again
    commands = _run(op, progress, [_state(0.1 * i) for i in range(len(progress))])
    assert _phases(commands) == "pp" + "rrr" + "e" + "pp" + "rr"
    assert commands[6].decision.changed and commands[6].action is None
    assert [i for i, c in enumerate(commands) if c.recovery_started] == [2, 8]


def test_reset_starts_a_fresh_episode():
    op = RecoveringOperator(RULE)
    _run(op, [0.5] * 4, [_state(0.0)] * 4)
    assert op.intervening and op.recovery.phase == OperatorPhase.RECOVERY
    op.reset()
    assert not op.intervening and op.recovery.phase == OperatorPhase.POLICY and op.recovery.recoveries == 0
    assert _phases(_run(op, [0.5] * 3, [_state(0.0)] * 3)) == "ppr"


def test_probe_the_expert_first_and_recover_only_if_it_makes_no_new_best_progress():
    op = RecoveringOperator(dataclasses.replace(RULE, recovery_probe_steps=3, recovery_probe_gain=0.01))
    moving = [_state(0.1 * i) for i in range(12)]
    # Policy best 0.6 then a stall; the expert gets progress back up but never above 0.6 (+ delta): after
    # 3 probe steps it recovers (a closed gripper led back over the object is still stuck).
    stuck = _run(op, [0.6, 0.5, 0.5, 0.55, 0.59, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6], moving)
    assert _phases(stuck) == "pp" + "eee" + "rrr" + "eeee"
    assert [i for i, c in enumerate(stuck) if c.recovery_started] == [5] and op.recovery.recovery_cause == "probe"
    assert all(np.array_equal(c.action, EXPERT) for c in stuck[2:5])
    op.reset()
    # The expert beats the episode's best within the probe (the arm carries the object on): no recovery, ever.
    carrying = _run(op, [0.6, 0.5, 0.5, 0.55, 0.62, 0.62, 0.62, 0.62, 0.62, 0.62, 0.62, 0.62], moving)
    assert _phases(carrying) == "pp" + "e" * 10 and op.recovery.recoveries == 0
    # ... but if it then stalls (no progress, no motion), it recovers after expert_stall_steps.
    frozen = [op.decide(0.62, None, EXPERT, _state(1.1)) for _ in range(6)]
    assert [c.recovery_started for c in frozen] == [
        False,
        False,
        False,
        True,
        False,
        False,
    ] and op.recovery.recovery_cause == "stall"


def test_the_probe_needs_recovery_probe_gain_above_the_best_not_any_new_best():
    # Closed fingers pushing the object along creep (+0.011 in 8 steps on pick-place), an arm carrying it gains
    # 0.04-0.16 (docs/RESULTS.md): only a gain of recovery_probe_gain within the probe skips the recovery.
    rule = dataclasses.replace(RULE, recovery_probe_steps=3, recovery_probe_gain=0.04)
    moving = [_state(0.1 * i) for i in range(8)]
    op = RecoveringOperator(rule)
    creeping = _run(op, [0.6, 0.5, 0.5, 0.61, 0.62, 0.63, 0.63, 0.63], moving)
    assert _phases(creeping) == "pp" + "eee" + "rrr" and op.recovery.recovery_cause == "probe"
    op.reset()
    carrying = _run(op, [0.6, 0.5, 0.5, 0.62, 0.64, 0.66, 0.68, 0.70], moving)
    assert _phases(carrying) == "pp" + "e" * 6 and op.recovery.recoveries == 0
    # A gain below min_progress_delta is never a pass: the probe needs at least a new best.
    assert RecoveryPhase(1, 1, 0.01, 0.01, probe_steps=3, probe_gain=0.0).probe_gain == 0.01


def test_the_hand_back_limit_keeps_control_after_the_last_hand_back():
    rule = dataclasses.replace(RULE, handback_progress_steps=2, expert_stall_steps=0, recovery_steps=1, max_handbacks=1)
    op = RecoveringOperator(rule)
    progress = [
        0.5,
        0.5,
        0.5,  # takeover at index 2 (1 recovery step)
        0.6,
        0.7,  # hand back at index 4
        0.7,
        0.7,  # takeover at index 6 ...
        0.8,
        0.9,
        1.0,
        1.1,
    ]  # ... the expert progresses, but this time it keeps control
    commands = _run(op, progress, [_state(0.1 * i) for i in range(len(progress))])
    assert _phases(commands) == "pp" + "re" + "pp" + "r" + "eeee"
    assert op.rule.handbacks == 1 and op.intervening
    op.reset()
    assert op.rule.handbacks == 0
    never = RecoveringOperator(dataclasses.replace(rule, max_handbacks=0))
    assert _phases(_run(never, progress, [_state(0.1 * i) for i in range(len(progress))])) == "pp" + "r" + "e" * 8


def test_recovery_phase_bookkeeping_alone():
    phase = RecoveryPhase(recovery_steps=2, expert_stall_steps=3, min_progress_delta=0.01, stall_motion=0.01)
    s = _state(0.0)
    assert phase.update(False, False, 0.0, s) == OperatorPhase.POLICY
    assert [phase.update(True, i == 0, 0.0, s) for i in range(7)] == [
        "recovery",
        "recovery",
        "expert",
        "expert",
        "expert",
        "recovery",
        "recovery",
    ]
    # The arm state becoming known (or changing size) mid-intervention restarts the stall count instead of failing.
    assert [phase.update(True, False, 0.0, x) for x in (s, s, np.zeros(5), np.zeros(5), np.zeros(5), np.zeros(5))] == [
        "expert",
        "expert",
        "expert",
        "expert",
        "expert",
        "recovery",
    ]
    with pytest.raises(ValueError, match="recovery_steps"):
        RecoveryPhase(-1, 0, 0.01, 0.01)
    unknown = RecoveryPhase(recovery_steps=1, expert_stall_steps=2, min_progress_delta=0.01, stall_motion=0.01)
    # No arm state yet (the node before its first joint state): only progress is judged.
    assert [unknown.update(True, i == 0, 0.0, None) for i in range(5)] == [
        "recovery",
        "expert",
        "expert",
        "recovery",
        "expert",
    ]


def test_config_validation_and_action_size():
    with pytest.raises(ValueError, match="recovery_action"):
        operator_rule(recovery_action=())
    with pytest.raises(ValueError, match="recovery_action"):
        operator_rule(recovery_action=(0.0, float("nan")))
    with pytest.raises(ValueError, match="recovery_action"):
        operator_rule(recovery_action=1.0)
    with pytest.raises(ValueError, match="expert_stall_steps"):
        operator_rule(expert_stall_steps=-1)
    with pytest.raises(ValueError, match="stall_motion"):
        operator_rule(stall_motion=0.0)
    with pytest.raises(ValueError, match="recovery_probe_steps"):
        operator_rule(recovery_probe_steps=-1)
    with pytest.raises(ValueError, match="max_handbacks"):
        operator_rule(max_handbacks=-2)
    assert operator_rule(recovery_action=[0, 0, 1, -1]).recovery_action == (0.0, 0.0, 1.0, -1.0)  # a yaml list
    with pytest.raises(ValueError, match="recovery_action: 3 values"):
        RecoveringOperator(dataclasses.replace(RULE, recovery_action=(0.0, 0.0, 1.0))).decide(
            0.0, None, EXPERT, _state(0.0)
        )


def test_robot_yaml_is_the_one_source_of_the_rule():
    # The node declares each parameter from config/robot.yaml (a missing one stops it); the dataclass has no
    # defaults of its own, so the yaml cannot drift from a second copy.
    yaml = node_defaults("scripted_operator")
    for field in dataclasses.fields(OperatorRuleConfig):
        assert field.name in yaml, f"config/robot.yaml scripted_operator lacks {field.name}"
        assert field.default is dataclasses.MISSING, f"OperatorRuleConfig.{field.name} repeats a yaml default"
    assert OperatorRuleConfig.from_mapping(yaml).recovery_action == tuple(float(v) for v in yaml["recovery_action"])
    with pytest.raises(ValueError, match="missing \\['stall_steps'\\]"):
        OperatorRuleConfig.from_mapping({k: v for k, v in yaml.items() if k != "stall_steps"})
