"""Audit of scripted-operator rules against what the policy does on its own.

The policy runs without interventions (an ordinary evaluation); at every step each candidate rule
is asked, observe-only, whether it would take over now, and its first takeover is recorded. A
rule that fires in an episode the policy went on to solve alone is a *false alarm*: in the fleet
it would have turned good policy steps into "corrections" for HG-DAgger. One that fires in a
failed episode is a *catch*, better the earlier it comes. Needs a backend with privileged state
(`progress()`, `expert_action()`: the simulator).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

from sop_ros.core.evaluation.harness import EpisodeOutcome
from sop_ros.core.robot.operator import OperatorRuleConfig
from sop_ros.core.robot.operator_recovery import RecoveringOperator


class OperatorRuleAudit:
    """A StepObserver: runs one operator (as the robots do) per named rule beside the policy, acting on none."""

    def __init__(self, rules: Mapping[str, OperatorRuleConfig]):
        if not rules:
            raise ValueError("rules: at least one rule to audit is required")
        self.rules = dict(rules)
        self._operators: dict[str, RecoveringOperator] = {}
        self._fired: dict[str, Optional[dict]] = {}
        self._step = 0

    def start(self, task_id: str, seed: int) -> None:
        self._operators = {name: RecoveringOperator(rule) for name, rule in self.rules.items()}
        self._fired = {name: None for name in self.rules}
        self._step = 0

    def before_step(self, backend, action: np.ndarray) -> None:
        if not (hasattr(backend, "progress") and hasattr(backend, "expert_action")):
            raise TypeError(
                f"{type(backend).__name__}: an operator audit needs progress() and expert_action() (a simulator "
                "backend)"
            )
        waiting = [name for name, fired in self._fired.items() if fired is None]
        if waiting:
            progress, expert = float(backend.progress()), np.asarray(backend.expert_action(), dtype=np.float32)
            for name in waiting:
                decision = self._operators[name].decide(progress, action, expert, backend.observation().state).decision
                if decision.intervening:
                    self._fired[name] = {"step": self._step, "kind": decision.trigger, "reason": decision.reason}
        self._step += 1

    def finish(self, success: bool, steps: int) -> Mapping[str, Any]:
        return {"takeovers": dict(self._fired)}


@dataclasses.dataclass(frozen=True)
class RuleAuditSummary:
    rule: str
    solved_alone: int  # episodes the policy solved without help
    failed_alone: int
    false_alarms: int  # the rule fired in a solved episode
    catches: int  # the rule fired in a failed episode
    by_kind: Mapping[str, int]  # takeovers per kind (stall / stuck / deviation), all episodes
    mean_catch_step: Optional[float]  # when it fired in failed episodes

    @property
    def false_alarm_rate(self) -> float:
        return self.false_alarms / self.solved_alone if self.solved_alone else 0.0

    @property
    def catch_rate(self) -> float:
        return self.catches / self.failed_alone if self.failed_alone else 0.0

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "false_alarm_rate": self.false_alarm_rate, "catch_rate": self.catch_rate}


def summarise(rule_names: Sequence[str], outcomes: Sequence[EpisodeOutcome]) -> list[RuleAuditSummary]:
    """Per rule: false alarms among solved episodes, catches among failed ones (OperatorRuleAudit outcomes)."""
    summaries = []
    for name in rule_names:
        fired = [(o, o.observed["takeovers"][name]) for o in outcomes]
        solved = [f for o, f in fired if o.success]
        failed = [f for o, f in fired if not o.success]
        kinds: dict[str, int] = {"stall": 0, "stuck": 0, "deviation": 0}
        for _, f in fired:
            if f is not None:
                kinds[f["kind"]] += 1
        catch_steps = [f["step"] for f in failed if f is not None]
        summaries.append(
            RuleAuditSummary(
                name,
                len(solved),
                len(failed),
                sum(f is not None for f in solved),
                len(catch_steps),
                kinds,
                float(np.mean(catch_steps)) if catch_steps else None,
            )
        )
    return summaries
