"""Scripted operator: decides when a (simulated) human takes over from the policy and hands back.

It watches, step by step, a scalar task-progress measure (in sim: the shaped MetaWorld reward,
computed from privileged state the policy never sees), the policy's proposed action and the
expert's action, and applies a fixed rule, so interventions are deterministic and each comes with
a reason string (for InterventionState and the episode's intervention segments):

- take over when the best progress so far has not improved by `min_progress_delta` for
  `stall_steps` consecutive policy steps ("stalled"); sooner, after `stuck_steps`, when in that time
  the arm has not moved either (no arm-state value changed by more than `stall_motion`: "stuck", a
  gripper pressing on the object or a frozen policy; a moving arm without progress gets the longer
  window, because the expert itself crosses progress-free stretches on the move); or when the
  policy's action differs from the expert's by more than `deviation_threshold` (L2) for
  `deviation_steps` consecutive steps (with `progress_excuses_deviation`, a deviating step that
  also made progress does not count: an operator does not grab a robot getting there its own way);
- hand back when, since the takeover, the expert has improved the best progress on
  `handback_progress_steps` steps, or has raised it by `subgoal_gain` (a sub-goal reached); but at
  most `max_handbacks` times per episode (-1: no limit): a policy that failed again after that many
  hand-backs does not get the arm back, and the operator finishes the episode.

What the operator commands while in control (a recovery phase of `recovery_action` first, then the
expert; recovery again when the expert stalls) is sop_ros.core.robot.operator_recovery's.

Nothing here knows about ROS or the simulator; the caller supplies the numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class OperatorRuleConfig:
    """No defaults here: config/robot.yaml's scripted_operator section is their one source (the node declares
    each parameter from it; other users build this with from_mapping(sop_ros.resources.node_defaults(...)))."""

    stall_steps: int  # k: policy steps without progress before a takeover (0 disables)
    # Policy steps without progress or arm motion (stall_motion) before a takeover (0 disables); needs the arm state.
    stuck_steps: int
    min_progress_delta: float  # an improvement smaller than this is not progress
    deviation_threshold: float  # L2 distance between policy and expert action
    deviation_steps: int  # m: consecutive deviating policy steps before a takeover (0 disables)
    handback_progress_steps: int  # h: expert steps with progress before handing back
    subgoal_gain: float  # progress gained since the takeover that also hands back
    progress_excuses_deviation: bool  # a deviating step that made progress resets the deviation count
    # Hand-backs per episode; at the takeover after the last one the operator finishes (-1: no limit).
    max_handbacks: int
    # Recovery (sop_ros.core.robot.operator_recovery): steps of recovery_action in a recovery, before the expert
    # acts again (0: never recover, the operator before recovery existed).
    recovery_steps: int
    # In the robot's action space; MetaWorld [dx, dy, dz, gripper]: hand up, gripper open (-1).
    recovery_action: tuple[float, ...]
    expert_stall_steps: int  # expert steps without progress or motion before recovering again (0 disables)
    stall_motion: float  # an arm-state value changing more than this is motion (MetaWorld: metres)
    # At a takeover the expert acts first; the operator recovers only if it has not raised progress above
    # the episode's best by recovery_probe_gain within this many steps (0: recover at every takeover).
    recovery_probe_steps: int
    # Progress gain above the episode's best that passes the probe: an arm carrying the object gains fast, closed
    # fingers pushing it along creep (docs/RESULTS.md).
    recovery_probe_gain: float

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> OperatorRuleConfig:
        """The rule from a parameter mapping (the node's YAML section); keys that are not fields are ignored."""
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in values]
        if missing:
            raise ValueError(f"OperatorRuleConfig: missing {missing}")
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})

    def __post_init__(self) -> None:
        try:
            action = tuple(float(v) for v in self.recovery_action)  # the yaml gives a list
        except (TypeError, ValueError):
            action = ()
        if not action or not all(math.isfinite(v) for v in action):
            raise ValueError(
                "OperatorRuleConfig.recovery_action: must be a non-empty sequence of finite numbers, got "
                f"{self.recovery_action!r}"
            )
        object.__setattr__(self, "recovery_action", action)
        for name in (
            "stall_steps",
            "stuck_steps",
            "deviation_steps",
            "handback_progress_steps",
            "recovery_steps",
            "expert_stall_steps",
            "recovery_probe_steps",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"OperatorRuleConfig.{name}: must be a non-negative integer, got {value!r}")
        if not isinstance(self.progress_excuses_deviation, bool):
            raise ValueError(
                "OperatorRuleConfig.progress_excuses_deviation: must be a bool, got "
                f"{self.progress_excuses_deviation!r}"
            )
        if not isinstance(self.max_handbacks, int) or self.max_handbacks < -1:
            raise ValueError(f"OperatorRuleConfig.max_handbacks: must be an integer >= -1, got {self.max_handbacks!r}")
        if self.handback_progress_steps == 0:
            raise ValueError("OperatorRuleConfig.handback_progress_steps: must be >= 1")
        for name in (
            "min_progress_delta",
            "deviation_threshold",
            "subgoal_gain",
            "stall_motion",
            "recovery_probe_gain",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"OperatorRuleConfig.{name}: must be a positive number, got {value!r}")


@dataclasses.dataclass(frozen=True)
class OperatorDecision:
    """What the operator does on this step."""

    intervening: bool  # True: the expert (standing in for the human) acts this step
    changed: bool  # this step is a takeover or a hand-back
    reason: str  # why the state changed (empty when unchanged)
    trigger: str = ""  # on a takeover, the rule that fired: "stall", "stuck" or "deviation"


def arm_moved(anchor: Optional[np.ndarray], state: np.ndarray, stall_motion: float) -> bool:
    """Whether the arm moved since `anchor` (any value by more than stall_motion); no comparable anchor counts
    as moved, so the caller starts counting afresh from `state`."""
    if anchor is None or anchor.shape != state.shape:
        return True
    return float(np.max(np.abs(state - anchor), initial=0.0)) > stall_motion


class ScriptedOperator:
    """Stateful per episode; call `reset()` at every episode start, then `decide()` once per step."""

    def __init__(self, config: OperatorRuleConfig):
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.intervening = False
        self._best = -math.inf
        self._stalled = 0
        self._still = 0  # policy steps without progress or arm motion since _still_anchor
        self._still_anchor: Optional[np.ndarray] = None
        self._deviating = 0
        self._takeover_best = -math.inf
        self._expert_progress_steps = 0
        self.handbacks = 0  # this episode

    def decide(
        self,
        progress: float,
        policy_action: Optional[np.ndarray],
        expert_action: np.ndarray,
        arm_state: Optional[np.ndarray] = None,
    ) -> OperatorDecision:
        """Decide who acts on this step, given the current progress and both proposed actions.

        `policy_action` may be one action [A] or a chunk [K, A] (its first action is compared);
        None when the policy has not proposed anything (it then cannot be judged for deviation).
        `arm_state` (joint positions; None while unknown: the stuck rule then waits) feeds the stuck rule.
        """
        if not math.isfinite(progress):
            raise ValueError(f"progress: must be finite, got {progress!r}")
        improved = progress >= self._best + self.config.min_progress_delta
        if improved:
            self._best = progress
        if self.intervening:
            return self._while_intervening(improved)
        self._count_still(improved, arm_state)
        return self._while_policy_acts(improved, policy_action, expert_action)

    def _count_still(self, improved: bool, arm_state: Optional[np.ndarray]) -> None:
        if arm_state is None:
            self._still, self._still_anchor = 0, None
            return
        state = np.asarray(arm_state, dtype=np.float64).ravel()
        if arm_moved(self._still_anchor, state, self.config.stall_motion) or improved:
            self._still, self._still_anchor = 0, state.copy()
        else:
            self._still += 1

    def _while_policy_acts(
        self, improved: bool, policy_action: Optional[np.ndarray], expert_action: np.ndarray
    ) -> OperatorDecision:
        cfg = self.config
        self._stalled = 0 if improved else self._stalled + 1
        if policy_action is not None:
            first = np.asarray(policy_action, dtype=np.float64)
            first = first[0] if first.ndim == 2 else first
            expert = np.asarray(expert_action, dtype=np.float64)
            if first.shape != expert.shape:
                raise ValueError(f"policy_action: action shape {first.shape} differs from expert_action {expert.shape}")
            distance = float(np.linalg.norm(first - expert))
            deviating = distance > cfg.deviation_threshold and not (cfg.progress_excuses_deviation and improved)
            self._deviating = self._deviating + 1 if deviating else 0
        else:
            distance = float("nan")
            self._deviating = 0
        if cfg.stall_steps and self._stalled >= cfg.stall_steps:
            return self._take_over("stall", f"no progress for {self._stalled} steps (best {self._best:.3f})")
        if cfg.stuck_steps and self._still >= cfg.stuck_steps:
            return self._take_over("stuck", f"no progress and the arm still for {self._still} steps")
        if cfg.deviation_steps and self._deviating >= cfg.deviation_steps:
            return self._take_over(
                "deviation",
                f"policy action off the expert's by {distance:.2f} > {cfg.deviation_threshold:g} for "
                f"{self._deviating} steps",
            )
        return OperatorDecision(False, False, "")

    def _while_intervening(self, improved: bool) -> OperatorDecision:
        cfg = self.config
        if improved:
            self._expert_progress_steps += 1
        if cfg.max_handbacks >= 0 and self.handbacks >= cfg.max_handbacks:
            return OperatorDecision(True, False, "")  # the policy had its chances this episode
        gain = self._best - self._takeover_best
        if gain >= cfg.subgoal_gain:
            return self._hand_back(f"sub-goal reached: progress +{gain:.3f} since takeover")
        if self._expert_progress_steps >= cfg.handback_progress_steps:
            return self._hand_back(f"expert made progress on {self._expert_progress_steps} steps")
        return OperatorDecision(True, False, "")

    def _take_over(self, trigger: str, reason: str) -> OperatorDecision:
        self.intervening = True
        self._takeover_best = self._best
        self._expert_progress_steps = 0
        return OperatorDecision(True, True, reason, trigger)

    def _hand_back(self, reason: str) -> OperatorDecision:
        # The policy acts again from this step; its counters start afresh.
        self.intervening = False
        self.handbacks += 1
        self._stalled = 0
        self._still, self._still_anchor = 0, None
        self._deviating = 0
        return OperatorDecision(False, True, reason)
