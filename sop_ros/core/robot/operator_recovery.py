"""Scripted operator that recovers before it corrects: back off, reopen, then let the expert finish.

Why: at a takeover the policy has often left the arm in a state the scripted expert cannot leave on
its own. MetaWorld's experts are stateless functions of the observation; above the object they
command "down" and never "open", so a gripper the policy closed early is pressed onto the object
until the step limit (fleet run: 26 of 30 failed push/pick-place takeovers ended with the hand
still just above the object). A human first lifts the hand and opens the gripper, then starts
again. So every takeover begins with `recovery_steps` steps of `recovery_action` (a fixed command
in the robot's action space: for MetaWorld's [dx, dy, dz, gripper] "hand up, gripper open", which
is meaningful for every task and needs no task knowledge), and the expert acts after it.

Recovery costs steps and drops whatever the gripper holds, so it is not done blindly: at a takeover
the expert acts first, and the operator recovers only if the expert has not raised progress above
the episode's best by `recovery_probe_gain` within `recovery_probe_steps` steps (an arm carrying the
object gets straight on: on pick-place +0.04-0.16 in 8 steps; fingers closed on top of the object
only push it along, +0.01-0.03, and then the expert presses on them for 50-80 steps).

The expert itself can also get stuck later (it is stateless: the same state gives the same action,
so a state it cannot change is one it never leaves). When, while it acts, for `expert_stall_steps`
steps neither progress has improved by `min_progress_delta` nor the arm's own state (the robot's
joint state: in MetaWorld hand xyz + gripper opening) has moved by more than `stall_motion`
in any value, the operator recovers again instead of holding control until the step limit.
Progress alone is not the test: on its way some experts first move away from the goal for a while
(button-press-v3 backs off to line up), and some make no measurable progress for 50-70 steps while
the arm moves (bin-picking, peg-insert-side); an arm that does not move is stuck. The arm's state,
not the whole scene: a puck pressed by closed fingers keeps wobbling (its orientation flips sign).

When to take over and hand back stays the rule of sop_ros.core.robot.operator (ScriptedOperator); this
module only decides what the operator commands while it is in control. ROS- and simulator-free.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Optional

import numpy as np

from sop_ros.core.robot.operator import OperatorDecision, OperatorRuleConfig, ScriptedOperator, arm_moved


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
        self,
        recovery_steps: int,
        expert_stall_steps: int,
        min_progress_delta: float,
        stall_motion: float,
        probe_steps: int = 0,
        probe_gain: float = 0.0,  # 0: min_progress_delta (any new best passes the probe)
    ):
        if min(recovery_steps, expert_stall_steps, probe_steps) < 0:
            raise ValueError(
                f"recovery_steps, expert_stall_steps, probe_steps: must be >= 0, got {recovery_steps}, "
                f"{expert_stall_steps}, {probe_steps}"
            )
        self.recovery_steps = recovery_steps
        self.probe_steps = probe_steps
        self.probe_gain = max(probe_gain, min_progress_delta)
        self.expert_stall_steps = expert_stall_steps
        self.min_progress_delta = min_progress_delta
        self.stall_motion = stall_motion
        self.reset()

    def reset(self) -> None:
        self.phase = OperatorPhase.POLICY
        self.recoveries = 0  # recovery phases started this episode
        self.recovery_cause = ""  # why the last one started: "takeover", "probe" or "stall"
        self._recovery_left = 0
        self._probe_left = 0  # > 0: the expert is on probation since the takeover
        self._probe_progress = -math.inf  # the best progress before the takeover
        self._best = -math.inf  # the best progress this episode
        self._anchor_progress = -math.inf  # where the current stretch without progress or motion began
        self._anchor_state: Optional[np.ndarray] = None
        self._expert_stalled = 0

    def update(self, intervening: bool, takeover: bool, progress: float, state: Optional[np.ndarray]) -> OperatorPhase:
        state = np.zeros(0) if state is None else state  # unknown: only progress counts
        best_before, self._best = self._best, max(self._best, progress)
        if not intervening:
            self.phase = OperatorPhase.POLICY
            return self.phase
        if takeover or self.phase == OperatorPhase.POLICY:
            self._start_probe(best_before, progress, state)
        elif self.phase == OperatorPhase.EXPERT and self._probe_left:
            self._probe(progress, state)
        elif self.phase == OperatorPhase.EXPERT and self._expert_stalled_on(progress, state):
            self._start_recovery("stall")
        if self.phase == OperatorPhase.RECOVERY:
            if self._recovery_left > 0:
                self._recovery_left -= 1
                return self.phase
            self.phase = OperatorPhase.EXPERT
            self._set_anchor(progress, state)
        return self.phase

    def _start_probe(self, best_before: float, progress: float, state: np.ndarray) -> None:
        if not self.probe_steps:
            self._start_recovery("takeover")
            return
        self.phase = OperatorPhase.EXPERT
        self._probe_left, self._probe_progress = self.probe_steps, max(best_before, progress)
        self._set_anchor(progress, state)

    def _probe(self, progress: float, state: np.ndarray) -> None:
        if progress >= self._probe_progress + self.probe_gain:
            self._probe_left = 0  # the expert gets on from here: no recovery (it would drop an object the arm holds)
            self._set_anchor(progress, state)
            return
        self._probe_left -= 1
        if not self._probe_left:
            self._start_recovery("probe")

    def _start_recovery(self, cause: str) -> None:
        self.phase = OperatorPhase.RECOVERY
        self._recovery_left = self.recovery_steps
        if self.recovery_steps:
            self.recoveries += 1
            self.recovery_cause = cause

    def _set_anchor(self, progress: float, state: np.ndarray) -> None:
        self._anchor_progress, self._anchor_state = progress, state.copy()
        self._expert_stalled = 0

    def _expert_stalled_on(self, progress: float, state: np.ndarray) -> bool:
        # A first arm state (the node) has no comparable anchor: arm_moved says so, and counting starts afresh.
        if arm_moved(self._anchor_state, state, self.stall_motion) or (
            progress >= self._anchor_progress + self.min_progress_delta
        ):
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
            config.recovery_steps,
            config.expert_stall_steps,
            config.min_progress_delta,
            config.stall_motion,
            config.recovery_probe_steps,
            config.recovery_probe_gain,
        )
        self._recovery_action = np.asarray(config.recovery_action, dtype=np.float32)

    @property
    def intervening(self) -> bool:
        return self.rule.intervening

    def reset(self) -> None:
        self.rule.reset()
        self.recovery.reset()

    def decide(
        self,
        progress: float,
        policy_action: Optional[np.ndarray],
        expert_action: np.ndarray,
        arm_state: Optional[np.ndarray],
    ) -> OperatorCommand:
        """As ScriptedOperator.decide, plus the action to send while intervening (recovery or expert).

        `arm_state` is the arm's own state (joint positions; None while unknown); only whether it moves matters.
        """
        expert = np.asarray(expert_action, dtype=np.float32)
        if self.config.recovery_steps and expert.shape != self._recovery_action.shape:
            raise ValueError(
                f"recovery_action: {self._recovery_action.shape[0]} values, but actions have shape {expert.shape}"
            )
        state = None if arm_state is None else np.asarray(arm_state, dtype=np.float64).ravel()
        decision = self.rule.decide(progress, policy_action, expert, state)
        recoveries = self.recovery.recoveries
        phase = self.recovery.update(decision.intervening, decision.changed and decision.intervening, progress, state)
        action = {
            OperatorPhase.POLICY: None,
            OperatorPhase.RECOVERY: self._recovery_action,
            OperatorPhase.EXPERT: expert,
        }[phase]
        return OperatorCommand(
            decision, phase, None if action is None else action.copy(), self.recovery.recoveries > recoveries
        )
