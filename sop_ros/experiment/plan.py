"""Which runs an experiment consists of, and what each method means.

Methods (research/sop-paper.md section 5.3, with the budgets made explicit):
- base:          the pretrained policy v1, no post-training (evaluated once; no fleet).
- sop_hg_dagger: the fleet runs the current policy, the learner trains HG-DAgger online and
                 publishes checkpoints that robots swap in between episodes.
- sop_recap:     the same with RECAP.
- non_sop:       the same fleet time with the fixed base policy (learner --no-train: robots keep
                 v1 and the operator corrects it as usual); afterwards HG-DAgger trains once, offline,
                 on that data plus the offline demos, for as many updates as the SOP HG-DAgger run
                 of the same seed and fleet size made (same interaction, same learner compute).
- offline_only:  the same number of updates spent on the offline demos alone (no fleet).
- more_demos:    the human-controlled steps of the SOP HG-DAgger run of the same seed and fleet size
                 spent on fresh expert demos instead of corrections, then the same offline training
                 (base demos + new ones, same updates): the choice a team without SOP would make.
- ceiling:       the same offline training on a large expert set (demo_baselines.CEILING_DEMOS_PER_TASK
                 fresh demos per task on top of the base's): how close to the best this model gets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Optional

METHODS = ("base", "sop_hg_dagger", "sop_recap", "non_sop", "offline_only", "more_demos", "ceiling")
# The run whose learner updates set the compute budget of the offline baselines.
BUDGET_METHOD = "sop_hg_dagger"
SCALING_METHOD = "sop_hg_dagger"


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    name: str
    runs_fleet: bool  # robots act for the run's duration
    learner_trains: bool  # the learner post-trains online while the fleet runs
    algorithm: str  # the learner's (online) or the offline training's algorithm
    trains_offline: bool  # one offline training after the fleet stopped (or without fleet)
    # Fresh expert demos added before the offline training: "" none, "budget_human_steps" as many steps as the
    # budget run's operator controlled, "ceiling" a large set (demo_baselines).
    extra_demos: str = ""

    @property
    def evaluated_only(self) -> bool:
        return not self.runs_fleet and not self.trains_offline


METHOD_SPECS = {
    "base": MethodSpec("base", runs_fleet=False, learner_trains=False, algorithm="bc", trains_offline=False),
    "sop_hg_dagger": MethodSpec(
        "sop_hg_dagger", runs_fleet=True, learner_trains=True, algorithm="hg_dagger", trains_offline=False
    ),
    "sop_recap": MethodSpec("sop_recap", runs_fleet=True, learner_trains=True, algorithm="recap", trains_offline=False),
    "non_sop": MethodSpec("non_sop", runs_fleet=True, learner_trains=False, algorithm="hg_dagger", trains_offline=True),
    "offline_only": MethodSpec(
        "offline_only", runs_fleet=False, learner_trains=False, algorithm="hg_dagger", trains_offline=True
    ),
    "more_demos": MethodSpec(
        "more_demos",
        runs_fleet=False,
        learner_trains=False,
        algorithm="hg_dagger",
        trains_offline=True,
        extra_demos="budget_human_steps",
    ),
    "ceiling": MethodSpec(
        "ceiling",
        runs_fleet=False,
        learner_trains=False,
        algorithm="hg_dagger",
        trains_offline=True,
        extra_demos="ceiling",
    ),
}


class PlanError(ValueError):
    """The requested experiment is inconsistent; the message names the option."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    method: str
    seed: int
    robots: int  # 0 for runs without a fleet
    groups: tuple[str, ...]  # "comparison" and/or "scaling"
    budget_robots: int = 0  # offline_only (no fleet): the fleet size of its budget run

    @property
    def spec(self) -> MethodSpec:
        return METHOD_SPECS[self.method]

    @property
    def name(self) -> str:
        return f"{self.method}-r{self.robots}-s{self.seed}"

    def budget_run(self) -> Optional[RunSpec]:
        """The run whose update count the offline training of this run must match."""
        if not self.spec.trains_offline:
            return None
        return RunSpec(BUDGET_METHOD, self.seed, self.budget_robots or self.robots, ("comparison",))


def parse_methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHOD_SPECS]
    if unknown or not names:
        raise PlanError(f"--methods: unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def parse_robot_counts(text: str) -> list[int]:
    try:
        counts = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise PlanError(f"--robots-scaling: expected comma-separated robot counts like 1,2,4, got {text!r}") from None
    if not counts or any(c <= 0 for c in counts):
        raise PlanError(f"--robots-scaling: robot counts must be positive, got {text!r}")
    return sorted(set(counts))


def plan_runs(
    methods: Sequence[str],
    seeds: int,
    robots: int,
    scaling: Sequence[int],
    skip_scaling: bool = False,
    offline_updates: Optional[int] = None,
) -> list[RunSpec]:
    """The runs in execution order: per seed the comparison (budget run first), then the scaling runs.

    The comparison's SOP HG-DAgger run with `robots` robots doubles as the scaling point of that size.
    The base policy is evaluated once, so it appears once (seed 0).
    """
    if seeds <= 0:
        raise PlanError(f"--seeds: must be positive, got {seeds}")
    if robots <= 0:
        raise PlanError(f"--robots: must be positive, got {robots}")
    methods = list(methods)
    for name in methods:
        if name not in METHOD_SPECS:
            raise PlanError(f"--methods: unknown method {name!r}; known: {', '.join(METHODS)}")
    needs_budget = [m for m in methods if METHOD_SPECS[m].trains_offline]
    if needs_budget and BUDGET_METHOD not in methods and offline_updates is None:
        raise PlanError(
            f"--methods: {', '.join(needs_budget)} train for as many updates as {BUDGET_METHOD} made; "
            f"include {BUDGET_METHOD} or give --offline-updates"
        )
    needs_human_steps = [m for m in methods if METHOD_SPECS[m].extra_demos == "budget_human_steps"]
    if needs_human_steps and BUDGET_METHOD not in methods:
        raise PlanError(
            f"--methods: {', '.join(needs_human_steps)} spend{'s' if len(needs_human_steps) == 1 else ''} the "
            f"human-controlled steps of {BUDGET_METHOD} on demos; include {BUDGET_METHOD}"
        )
    scaling_counts = [] if skip_scaling else sorted(set(scaling))
    order = sorted(methods, key=lambda m: (m != BUDGET_METHOD, METHODS.index(m)))
    runs: list[RunSpec] = []
    if "base" in methods:
        runs.append(RunSpec("base", 0, 0, ("comparison",)))
    for seed in range(seeds):
        for name in order:
            spec = METHOD_SPECS[name]
            if spec.evaluated_only:
                continue
            if spec.runs_fleet:
                groups = (
                    ("comparison", "scaling")
                    if name == SCALING_METHOD and robots in scaling_counts
                    else ("comparison",)
                )
                runs.append(RunSpec(name, seed, robots, groups))
            else:
                runs.append(RunSpec(name, seed, 0, ("comparison",), budget_robots=robots))
        for count in scaling_counts:
            if count == robots and SCALING_METHOD in methods:
                continue
            runs.append(RunSpec(SCALING_METHOD, seed, count, ("scaling",)))
    return runs
