"""The operator acting in real MetaWorld episodes (no simulator mocks): recovery completes what the old operator could
not."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
from conftest import operator_rule

from sop_ros.core.robot.operator import OperatorRuleConfig
from sop_ros.core.robot.operator_recovery import RecoveringOperator
from sop_ros.core.robot.tasks import TaskSpec

pytestmark = pytest.mark.timeout(120)

# Takes over on the second step and never hands back: what the operator does with the state it is given.
HOLDING = operator_rule(stall_steps=1, deviation_steps=0, handback_progress_steps=1000, subgoal_gain=100.0)
OLD = dataclasses.replace(HOLDING, recovery_steps=0)  # the operator before recovery: the expert at once
RECOVER_AT_ONCE = dataclasses.replace(HOLDING, recovery_probe_steps=0)  # no probe: recovery at the takeover


@pytest.fixture(scope="module")
def backend():
    from sop_ros.backends.metaworld_sim import MetaWorldSimBackend, MetaWorldSimConfig

    tasks = ("push-v3", "pick-place-v3", "coffee-push-v3", "drawer-close-v3")
    b = MetaWorldSimBackend(MetaWorldSimConfig({t: TaskSpec(t, t, 150) for t in tasks}, render=False))
    yield b
    b.close()


def _close_the_gripper_on_the_way(backend, task: str, seed: int, steps: int = 30) -> None:
    """What the base policy often does: the expert's way to the object, but with the gripper closed early."""
    backend.reset(task, seed)
    for _ in range(steps):
        action = backend.expert_action()
        action[3] = 1.0  # close
        assert not backend.step(action).done


def _operator_finishes(backend, rule: OperatorRuleConfig) -> tuple[bool, RecoveringOperator]:
    operator = RecoveringOperator(rule)
    while True:
        command = operator.decide(backend.progress(), None, backend.expert_action(), backend.observation().state)
        result = backend.step(np.zeros(4, np.float32) if command.action is None else command.action)
        if result.done:
            return result.success, operator


@pytest.mark.parametrize("task", ["push-v3", "pick-place-v3", "coffee-push-v3"])
def test_from_a_gripper_closed_above_the_object_only_the_recovering_operator_completes(backend, task):
    # Measured on seeds 0..9 of this scenario (150 steps): the old operator 0/10 on each task; recovery at
    # once 10/10 on each; with the default probe push 9/10, pick-place 10/10, coffee-push 1/10 (see below).
    for seed in (0, 1):
        _close_the_gripper_on_the_way(backend, task, seed)
        hand_to_object = np.linalg.norm(backend.privileged_state()[0:3] - backend.privileged_state()[4:7])
        assert backend.privileged_state()[3] < 0.5 and hand_to_object < 0.15  # fingers closed, near the object
        success, _ = _operator_finishes(backend, OLD)
        assert not success, f"{task} seed {seed}: the expert alone left the closed gripper"
        assert backend.steps_taken == 150  # it sat there until the step limit

        _close_the_gripper_on_the_way(backend, task, seed)
        success, operator = _operator_finishes(backend, RECOVER_AT_ONCE)
        assert success, f"{task} seed {seed}: the recovering operator did not complete"
        assert operator.recovery.recoveries >= 1


def test_the_default_probe_finds_the_closed_gripper_stuck_and_recovers(backend):
    for seed in (0, 1):
        _close_the_gripper_on_the_way(backend, "pick-place-v3", seed)
        success, operator = _operator_finishes(backend, HOLDING)
        assert success and operator.recovery.recoveries >= 1


def test_the_default_probe_leaves_an_arm_carrying_the_object_to_the_expert(backend):
    # After 40 steps the expert holds the puck (fingers 0.4-0.47 apart: closed on it; empty they close to 0.3); at
    # the takeover it carries it on at once (progress gains more than recovery_probe_gain within the probe), so the
    # operator does not recover (that would drop the puck).
    for seed in (0, 1):
        backend.reset("pick-place-v3", seed)
        for _ in range(40):
            assert not backend.step(backend.expert_action()).done
        assert 0.35 < backend.privileged_state()[3] < 0.6
        success, operator = _operator_finishes(backend, HOLDING)
        assert success and operator.recovery.recoveries == 0


def test_an_expert_moving_without_progress_is_not_mistaken_for_a_stuck_one(backend):
    # drawer-close: the expert pushes the drawer for ~50 steps without measurable progress (the path to the goal
    # hardly shortens) while the arm and the drawer move.
    progress_only = dataclasses.replace(RECOVER_AT_ONCE, stall_motion=1e6)  # no motion counts
    for seed in (0, 1):
        backend.reset("drawer-close-v3", seed)
        success, operator = _operator_finishes(backend, RECOVER_AT_ONCE)
        assert success and operator.recovery.recoveries == 1  # the takeover's recovery only
        steps = backend.steps_taken
        backend.reset("drawer-close-v3", seed)
        _, operator = _operator_finishes(backend, progress_only)
        assert operator.recovery.recoveries > 1  # judged by progress alone it interrupts the expert ...
        assert backend.steps_taken > steps  # ... and costs steps


class _ClosingPolicy:
    """Moves down with the gripper closed: stalls next to nothing, so the operator takes over."""

    def act(self, observation, instruction, indicator=None):
        return np.array([[0.0, 0.0, -1.0, 1.0]] * 4, dtype=np.float32)


def test_takeover_harness_executes_the_operators_commands_and_counts_them():
    from sop_ros.backends.metaworld_sim import make_backend
    from sop_ros.core.evaluation.harness import evaluate
    from sop_ros.core.evaluation.operator_takeover import OperatorTakeover, summarise_takeovers

    specs = {"push-v3": TaskSpec("push-v3", "push", 150)}
    rule = operator_rule()  # as config/robot.yaml configures the robots
    report = evaluate(
        lambda backend: _ClosingPolicy(),
        functools.partial(make_backend, specs, render=False),
        ["push-v3"],
        2,
        seeds=[0, 1],
        actions_per_query=2,
        observer_factory=functools.partial(OperatorTakeover, rule),
    )
    for outcome in report.outcomes:
        record = outcome.observed
        assert record["takeovers"] >= 1 and record["first_takeover_step"] >= min(rule.stall_steps, rule.deviation_steps)
        assert record["recoveries"] >= 1  # the closed gripper pressed down: the expert alone makes no progress
        assert (
            0 < record["recovery_steps"] <= rule.recovery_steps * record["recoveries"]
        )  # the last may be cut by the step limit
        assert record["operator_steps"] > record["recovery_steps"]
    summary = summarise_takeovers("configured", report.outcomes)
    assert summary.episodes == summary.takeover_episodes == 2
    assert summary.takeovers == sum(o.observed["takeovers"] for o in report.outcomes)
    assert summary.takeover_successes == sum(o.success for o in report.outcomes)
    assert summary.step_limit_share == 1 - summary.takeover_success_rate
