"""Closed-loop evaluation of a policy on robot backends: per-task success with a 95% Wilson interval.

Episodes run with fixed seeds (task_id, seed) so two checkpoints see the same scenes. With
workers > 1 they run in parallel processes (multiprocessing spawn: no inherited GL/torch state),
one backend and one policy per process, one torch thread each. The factories are called inside
the worker, so they must be picklable (top-level functions or functools.partial of them).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional, Protocol

import numpy as np

from sop_ros.core.robot.backend import RobotBackend

log = logging.getLogger(__name__)

WILSON_Z_95 = 1.959963984540054
# Evaluation scenes start here so they never coincide with demo scenes (`sop collect` seeds from 0).
DEFAULT_EVAL_SEED = 1_000_000
DEFAULT_EVAL_EPISODES_PER_TASK = 20  # a final evaluation (sop eval, sop experiment, sop bench operator)
# Parallel simulation processes: the machine also runs the fleet or the learner, so at most 2.
DEFAULT_EVAL_WORKERS = min(2, os.cpu_count() or 1)


class Policy(Protocol):
    """What evaluation (and the policy node) needs from a policy."""

    def act(
        self, observation: Mapping[str, np.ndarray], instruction: str, indicator: Optional[int] = None
    ) -> np.ndarray:
        """observation = {image: uint8 [H, W, 3], state: float32 [S]} -> action chunk float32 [K, A]."""
        ...


class StepObserver(Protocol):
    """Watches an evaluation episode step by step (e.g. an operator-rule audit); may take over (the scripted
    operator)."""

    def start(self, task_id: str, seed: int) -> None: ...

    def before_step(self, backend: RobotBackend, action: np.ndarray) -> Optional[np.ndarray]:
        """Called with the policy's action about to be executed, while the backend still shows the state it acts on.
        Returns None to let it run, or the action to execute instead."""
        ...

    def finish(self, success: bool, steps: int) -> Mapping[str, Any]:
        """What the observer recorded for this episode (JSON-serialisable); kept in EpisodeOutcome.observed."""
        ...


EnvFactory = Callable[[], RobotBackend]
# Gets the worker's backend so that privileged policies (the sim expert) can reach it; others ignore it.
PolicyFactory = Callable[[RobotBackend], Policy]
ObserverFactory = Callable[[], StepObserver]


class RandomPolicy:
    """Uniform random actions in [-1, 1]: the floor any trained policy must beat."""

    def __init__(self, action_dim: int, chunk_size: int = 1, seed: int = 0):
        self.action_dim, self.chunk_size = action_dim, chunk_size
        self._rng = np.random.default_rng(seed)

    def act(
        self, observation: Mapping[str, np.ndarray], instruction: str, indicator: Optional[int] = None
    ) -> np.ndarray:
        return self._rng.uniform(-1.0, 1.0, (self.chunk_size, self.action_dim)).astype(np.float32)


def random_policy_factory(backend: RobotBackend) -> Policy:
    return RandomPolicy(backend.action_dim)


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved at 0/n and n/n, unlike the normal one)."""
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclasses.dataclass(frozen=True)
class EpisodeOutcome:
    task_id: str
    seed: int
    success: bool
    steps: int
    observed: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # from a StepObserver, if any


@dataclasses.dataclass(frozen=True)
class TaskResult:
    task_id: str
    episodes: int
    successes: int
    ci_low: float
    ci_high: float
    mean_steps: float  # over all episodes (failures count their full length)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["success_rate"] = self.success_rate
        return d


@dataclasses.dataclass(frozen=True)
class EvalReport:
    tasks: tuple[TaskResult, ...]
    outcomes: tuple[EpisodeOutcome, ...]  # sorted by (task order, seed)

    @property
    def overall_success_rate(self) -> float:
        n = sum(t.episodes for t in self.tasks)
        return sum(t.successes for t in self.tasks) / n if n else 0.0

    def as_dict(self) -> dict:
        return {
            "tasks": {t.task_id: t.as_dict() for t in self.tasks},
            "overall_success_rate": self.overall_success_rate,
            "episodes": [dataclasses.asdict(o) for o in self.outcomes],
        }


def run_episode(
    backend: RobotBackend,
    policy: Policy,
    task_id: str,
    seed: int,
    actions_per_query: Optional[int] = None,
    observer: Optional[StepObserver] = None,
) -> EpisodeOutcome:
    """One closed-loop episode: query a chunk, execute its first `actions_per_query` actions (None: all)."""
    instruction = backend.tasks[task_id].instruction
    obs = backend.reset(task_id, seed)
    if observer is not None:
        observer.start(task_id, seed)
    steps = 0
    while True:
        chunk = np.asarray(policy.act(obs.as_policy_input(), instruction), dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[0] == 0 or chunk.shape[1] != backend.action_dim:
            raise ValueError(f"policy.act returned shape {chunk.shape}, expected [K>0, {backend.action_dim}]")
        for action in chunk[: actions_per_query or len(chunk)]:
            replacement = observer.before_step(backend, action) if observer is not None else None
            result = backend.step(action if replacement is None else replacement)
            steps += 1
            if result.done:
                observed = dict(observer.finish(result.success, steps)) if observer is not None else {}
                return EpisodeOutcome(task_id, seed, result.success, steps, observed)
        obs = result.observation


# --- worker process state (one backend + policy per process) -------------------------------
_worker: dict = {}


def _init_worker(
    env_factory: EnvFactory,
    policy_factory: PolicyFactory,
    actions_per_query: Optional[int],
    observer_factory: Optional[ObserverFactory],
) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported by the policy factory
    backend = env_factory()
    policy = policy_factory(backend)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    observer = observer_factory() if observer_factory is not None else None
    _worker.update(backend=backend, policy=policy, actions_per_query=actions_per_query, observer=observer)


def _run_job(job: tuple[str, int]) -> EpisodeOutcome:
    return run_episode(
        _worker["backend"], _worker["policy"], job[0], job[1], _worker["actions_per_query"], _worker["observer"]
    )


def evaluate(
    policy_factory: PolicyFactory,
    env_factory: EnvFactory,
    tasks: Sequence[str],
    episodes_per_task: int,
    seeds: Optional[Sequence[int]] = None,
    workers: int = 1,
    actions_per_query: Optional[int] = None,
    on_episode: Optional[Callable[[EpisodeOutcome], None]] = None,
    observer_factory: Optional[ObserverFactory] = None,
) -> EvalReport:
    """Evaluate on every task with the same seeds (default DEFAULT_EVAL_SEED + 0..episodes_per_task-1).

    `observer_factory` (picklable, called once per worker) builds a StepObserver whose per-episode
    record lands in EpisodeOutcome.observed; an action it returns is executed instead of the policy's."""
    if not tasks:
        raise ValueError("tasks: at least one task is required")
    if episodes_per_task <= 0:
        raise ValueError(f"episodes_per_task: must be positive, got {episodes_per_task}")
    if workers <= 0:
        raise ValueError(f"workers: must be positive, got {workers}")
    if actions_per_query is not None and actions_per_query <= 0:
        raise ValueError(f"actions_per_query: must be positive or None, got {actions_per_query}")
    seeds = (
        list(range(DEFAULT_EVAL_SEED, DEFAULT_EVAL_SEED + episodes_per_task))
        if seeds is None
        else [int(s) for s in seeds]
    )
    if len(seeds) != episodes_per_task:
        raise ValueError(f"seeds: {len(seeds)} given for episodes_per_task={episodes_per_task}")
    jobs = [(task_id, seed) for task_id in tasks for seed in seeds]
    outcomes: list[EpisodeOutcome] = []
    for outcome in _run_jobs(jobs, policy_factory, env_factory, workers, actions_per_query, observer_factory):
        outcomes.append(outcome)
        if on_episode is not None:
            on_episode(outcome)
    order = {job: i for i, job in enumerate(jobs)}
    outcomes.sort(key=lambda o: order[(o.task_id, o.seed)])
    results = []
    for task_id in tasks:
        mine = [o for o in outcomes if o.task_id == task_id]
        wins = sum(o.success for o in mine)
        low, high = wilson_interval(wins, len(mine))
        results.append(TaskResult(task_id, len(mine), wins, low, high, float(np.mean([o.steps for o in mine]))))
    return EvalReport(tuple(results), tuple(outcomes))


def _run_jobs(
    jobs, policy_factory, env_factory, workers, actions_per_query, observer_factory
) -> Iterable[EpisodeOutcome]:
    if workers == 1:
        backend = env_factory()
        try:
            policy = policy_factory(backend)
            observer = observer_factory() if observer_factory is not None else None
            for task_id, seed in jobs:
                yield run_episode(backend, policy, task_id, seed, actions_per_query, observer)
        finally:
            backend.close()
        return
    ctx = multiprocessing.get_context("spawn")
    initargs = (env_factory, policy_factory, actions_per_query, observer_factory)
    with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=initargs) as pool:
        yield from pool.imap_unordered(_run_job, jobs)
        # Workers exit on their own, so their finalisers run: `with` alone terminates them (SIGTERM), and a
        # semaphore a worker made (tqdm's lock) then showed up as "leaked semaphore objects" at exit.
        pool.close()
        pool.join()
