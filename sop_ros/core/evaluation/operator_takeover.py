"""Takeover success: the scripted operator acts in evaluation episodes, and do the episodes it took over end well?

The policy runs as in `sop eval`; an OperatorTakeover (a StepObserver that acts) runs the robots'
operator (sop_ros.core.robot.operator_recovery.RecoveringOperator) beside it and, while the operator
intervenes, executes its command (recovery, then the expert) instead of the policy's action, the
way the action mux does on a robot. Per episode it records how often and how long the operator
acted; `summarise_takeovers` turns that into the share of taken-over episodes that end in success
(the rest hit the step limit: in MetaWorld an episode ends only by success or by the limit).
Needs a backend with privileged state (`progress()`, `expert_action()`: the simulator).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

from sop_ros.core.evaluation.harness import EpisodeOutcome, wilson_interval
from sop_ros.core.robot.operator import OperatorRuleConfig
from sop_ros.core.robot.operator_recovery import OperatorPhase, RecoveringOperator


class OperatorTakeover:
    """A StepObserver that intervenes: one RecoveringOperator per worker, reset at each episode."""

    def __init__(self, rule: OperatorRuleConfig):
        self.operator = RecoveringOperator(rule)
        self._record: dict[str, Any] = {}
        self._step = 0

    def start(self, task_id: str, seed: int) -> None:
        self.operator.reset()
        self._step = 0
        self._record = {
            "takeovers": 0,
            "operator_steps": 0,
            "recovery_steps": 0,
            "recoveries": 0,
            "first_takeover_step": None,
            "triggers": [],
        }

    def before_step(self, backend, action: np.ndarray) -> Optional[np.ndarray]:
        if not (hasattr(backend, "progress") and hasattr(backend, "expert_action")):
            raise TypeError(
                f"{type(backend).__name__}: an operator takeover needs progress() and expert_action() (a simulator "
                "backend)"
            )
        command = self.operator.decide(
            float(backend.progress()),
            action,
            np.asarray(backend.expert_action(), dtype=np.float32),
            backend.observation().state,
        )
        record = self._record
        if command.decision.changed and command.decision.intervening:
            record["takeovers"] += 1
            record["triggers"].append(command.decision.trigger)
            if record["first_takeover_step"] is None:
                record["first_takeover_step"] = self._step
        record["recoveries"] += int(command.recovery_started)
        record["operator_steps"] += int(command.action is not None)
        record["recovery_steps"] += int(command.phase == OperatorPhase.RECOVERY)
        self._step += 1
        return command.action

    def finish(self, success: bool, steps: int) -> Mapping[str, Any]:
        return {**self._record, "operator_in_control_at_end": self.operator.intervening}


@dataclasses.dataclass(frozen=True)
class TakeoverSummary:
    """One operator on one set of episodes (a task, or all)."""

    operator: str
    episodes: int
    success_all: int  # episodes that ended in success, with or without a takeover
    takeover_episodes: int  # episodes in which the operator took over at least once
    takeover_successes: int  # of those, the ones that ended in success
    ci_low: float  # 95 % Wilson interval of takeover_successes / takeover_episodes
    ci_high: float
    takeovers: int  # takeovers in all (an episode can have several: hand back, the policy stalls again)
    operator_steps_per_takeover: Optional[float]  # steps the operator acted (recovery + expert) per takeover
    recoveries_per_takeover: Optional[
        float
    ]  # recovery phases per takeover (> 1: the expert stalled and it recovered again)
    step_limit_share: Optional[float]  # takeover episodes that ran into the step limit
    operator_in_control_at_step_limit: int  # of those, the ones still held by the operator when the limit came
    mean_first_takeover_step: Optional[float]

    @property
    def takeover_success_rate(self) -> Optional[float]:
        return self.takeover_successes / self.takeover_episodes if self.takeover_episodes else None

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "takeover_success_rate": self.takeover_success_rate}


def _mean(values: Sequence[float]) -> Optional[float]:
    return float(np.mean(values)) if values else None


def summarise_takeovers(operator: str, outcomes: Sequence[EpisodeOutcome]) -> TakeoverSummary:
    """Summary of OperatorTakeover outcomes (EpisodeOutcome.observed holds its per-episode record)."""
    taken = [o for o in outcomes if o.observed["takeovers"] > 0]
    wins = sum(o.success for o in taken)
    failed = [o for o in taken if not o.success]
    takeovers = sum(o.observed["takeovers"] for o in taken)
    low, high = wilson_interval(wins, len(taken))
    return TakeoverSummary(
        operator,
        len(outcomes),
        sum(o.success for o in outcomes),
        len(taken),
        wins,
        low,
        high,
        takeovers,
        sum(o.observed["operator_steps"] for o in taken) / takeovers if takeovers else None,
        sum(o.observed["recoveries"] for o in taken) / takeovers if takeovers else None,
        len(failed) / len(taken) if taken else None,
        sum(o.observed["operator_in_control_at_end"] for o in failed),
        _mean([o.observed["first_takeover_step"] for o in taken]),
    )
