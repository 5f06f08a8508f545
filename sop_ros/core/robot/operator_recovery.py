"""Scripted operator that recovers before it corrects: back off, reopen, then let the expert finish.

Why: at a takeover the policy has often left the arm in a state the scripted expert cannot leave on
its own. MetaWorld's experts are stateless functions of the observation; above the object they
command "down" and never "open", so a gripper the policy closed early is pressed onto the object
until the step limit (fleet run: 26 of 30 failed push/pick-place takeovers ended with the hand
still just above the object). A human first lifts the hand and opens the gripper, then starts
again. So every takeover begins with `recovery_steps` steps of `recovery_action` (a fixed command
in the robot's action space: for MetaWorld's [dx, dy, dz, gripper] "hand up, gripper open", which
is meaningful for every task and needs no task knowledge), and the expert acts after it.

The expert itself can also get stuck (it is stateless: the same state gives the same action, so a
state it cannot change is one it never leaves). When, while it acts, for `expert_stall_steps` steps
neither progress has improved by `min_progress_delta` nor the observed state (the simulator's
privileged state: hand, gripper, objects) has moved by more than `expert_stall_motion` in any value,
the operator recovers again instead of holding control over a frozen state until the step limit.
Progress alone is not the test: on its way some experts first move away from the goal for a while
(button-press-v3 backs off to line up), and some make no measurable progress for 50-70 steps while
the arm moves (bin-picking, peg-insert-side); a world that does not move at all is stuck.

When to take over and hand back stays the rule of sop_ros.core.robot.operator (ScriptedOperator); this
module only decides what the operator commands while it is in control. ROS- and simulator-free.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Optional

import numpy as np

from sop_ros.core.robot.operator import OperatorDecision, OperatorRuleConfig, ScriptedOperator


class OperatorPhase(str, enum.Enum):
    POLICY = "policy"  # the operator does not intervene
    RECOVERY = "recovery"  # the operator backs off (recovery_action)
    EXPERT = "expert"  # the operator corrects (the expert's action)


class RecoveryPhase:
    """Which phase an intervention is in, step by step (pure bookkeeping, no actions).

    `update()` gets, per step, whether the operator intervenes, whether this step is a takeover,
    the current progress and observed state; it returns the phase whose action is executed on this step.
    """

    def __init__(
        self, recovery_steps: int, expert_stall_steps: int, min_progress_delta: float, expert_stall_motion: float
    ):
        if recovery_steps < 0 or expert_stall_steps < 0:
            raise ValueError(
                f"recovery_steps and expert_stall_steps: must be >= 0, got {recovery_steps}, {expert_stall_steps}"
            )
        self.recovery_steps = recovery_steps
        self.expert_stall_steps = expert_stall_steps
        self.min_progress_delta = min_progress_delta
        self.expert_stall_motion = expert_stall_motion
        self.reset()

    def reset(self) -> None:
        self.phase = OperatorPhase.POLICY
        self.recoveries = 0  # recovery phases started this episode
        self._recovery_left = 0
        self._anchor_progress = -math.inf  # where the current stretch without progress or motion began
        self._anchor_state: Optional[np.ndarray] = None
        self._expert_stalled = 0

    def update(self, intervening: bool, takeover: bool, progress: float, state: np.ndarray) -> OperatorPhase:
        if not intervening:
            self.phase = OperatorPhase.POLICY
            return self.phase
        if takeover or self.phase == OperatorPhase.POLICY:
            self._start_recovery()
        elif self.phase == OperatorPhase.EXPERT and self._expert_stalled_on(progress, state):
            self._start_recovery()
        if self.phase == OperatorPhase.RECOVERY:
            if self._recovery_left > 0:
                self._recovery_left -= 1
                return self.phase
            self.phase = OperatorPhase.EXPERT
            self._set_anchor(progress, state)
        return self.phase

    def _start_recovery(self) -> None:
        self.phase = OperatorPhase.RECOVERY
        self._recovery_left = self.recovery_steps
        if self.recovery_steps:
            self.recoveries += 1

    def _set_anchor(self, progress: float, state: np.ndarray) -> None:
        self._anchor_progress, self._anchor_state = progress, state.copy()
        self._expert_stalled = 0

    def _expert_stalled_on(self, progress: float, state: np.ndarray) -> bool:
        assert self._anchor_state is not None
        if state.shape != self._anchor_state.shape:
            raise ValueError(f"state: shape {state.shape} changed from {self._anchor_state.shape} within an episode")
        moved = float(np.max(np.abs(state - self._anchor_state), initial=0.0)) > self.expert_stall_motion
        if moved or progress >= self._anchor_progress + self.min_progress_delta:
            self._set_anchor(progress, state)
            return False
        self._expert_stalled += 1
        return bool(self.expert_stall_steps and self.recovery_steps) and self._expert_stalled >= self.expert_stall_steps


@dataclasses.dataclass(frozen=True)
class OperatorCommand:
    """What the operator does on one step: the takeover rule's decision and the action it sends."""

    decision: OperatorDecision
    phase: OperatorPhase
    action: Optional[np.ndarray]  # None: the policy acts (the operator sends nothing)
    recovery_started: bool  # a recovery phase starts on this step (at a takeover, or the expert stalled)


class RecoveringOperator:
    """ScriptedOperator's takeover/hand-back rule plus the recovery phase; one per robot, `reset()` per episode."""

    def __init__(self, config: OperatorRuleConfig):
        self.config = config
        self.rule = ScriptedOperator(config)
        self.recovery = RecoveryPhase(
            config.recovery_steps, config.expert_stall_steps, config.min_progress_delta, config.expert_stall_motion
        )
        self._recovery_action = np.asarray(config.recovery_action, dtype=np.float32)

    @property
    def intervening(self) -> bool:
        return self.rule.intervening

    def reset(self) -> None:
        self.rule.reset()
        self.recovery.reset()

    def decide(
        self, progress: float, policy_action: Optional[np.ndarray], expert_action: np.ndarray, state: np.ndarray
    ) -> OperatorCommand:
        """As ScriptedOperator.decide, plus the action to send while intervening (recovery or expert).

        `state` is what the operator sees of the world (sim: the privileged state); only whether it moves matters.
        """
        expert = np.asarray(expert_action, dtype=np.float32)
        if self.config.recovery_steps and expert.shape != self._recovery_action.shape:
            raise ValueError(
                f"recovery_action: {self._recovery_action.shape[0]} values, but actions have shape {expert.shape}"
            )
        decision = self.rule.decide(progress, policy_action, expert)
        recoveries = self.recovery.recoveries
        phase = self.recovery.update(
            decision.intervening,
            decision.changed and decision.intervening,
            progress,
            np.asarray(state, dtype=np.float64).ravel(),
        )
        action = {
            OperatorPhase.POLICY: None,
            OperatorPhase.RECOVERY: self._recovery_action,
            OperatorPhase.EXPERT: expert,
        }[phase]
        return OperatorCommand(
            decision, phase, None if action is None else action.copy(), self.recovery.recoveries > recoveries
        )
