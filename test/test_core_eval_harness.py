"""Evaluation harness on real MetaWorld envs: the expert scores ~1, random ~0, workers agree with in-process."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from sop_ros.backends.metaworld_sim import expert_policy_factory, make_backend
from sop_ros.core.evaluation.harness import RandomPolicy, evaluate, random_policy_factory, run_episode, wilson_interval
from sop_ros.core.robot.tasks import TaskSpec, load_task_specs
from sop_ros.resources import default_tasks_path

pytestmark = pytest.mark.timeout(180)

TASKS = load_task_specs(default_tasks_path())


def test_wilson_interval_known_values():
    # Reference values (Wilson 1927; e.g. statsmodels proportion_confint(method="wilson")).
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=1e-4)
    low, high = wilson_interval(20, 20)
    assert high == 1.0 and low == pytest.approx(0.8389, abs=1e-4)


def test_expert_scores_one_and_random_scores_zero():
    env_factory = functools.partial(make_backend, TASKS, render=False)
    expert = evaluate(expert_policy_factory, env_factory, list(TASKS), episodes_per_task=2, seeds=[500, 501])
    assert [t.success_rate for t in expert.tasks] == [1.0, 1.0, 1.0]
    assert all(t.mean_steps < TASKS[t.task_id].max_steps for t in expert.tasks)
    assert expert.tasks[0].ci_low > 0.15 and expert.tasks[0].ci_high == 1.0

    short = {t: TaskSpec(t, s.instruction, 60) for t, s in TASKS.items()}
    rand = evaluate(
        random_policy_factory,
        functools.partial(make_backend, short, render=False),
        ["push-v3", "pick-place-v3"],
        episodes_per_task=2,
    )
    assert rand.overall_success_rate == 0.0
    assert all(o.steps == 60 for o in rand.outcomes)


def test_parallel_workers_match_in_process_and_keep_seed_order():
    env_factory = functools.partial(make_backend, TASKS, render=False)
    kwargs = dict(tasks=["button-press-topdown-v3"], episodes_per_task=2, seeds=[7, 3])
    serial = evaluate(expert_policy_factory, env_factory, **kwargs)
    seen = []
    parallel = evaluate(expert_policy_factory, env_factory, workers=2, on_episode=seen.append, **kwargs)
    assert serial.outcomes == parallel.outcomes
    assert [o.seed for o in parallel.outcomes] == [7, 3] and len(seen) == 2
    assert parallel.tasks[0].successes == 2


def test_chunk_execution_and_bad_chunk_shape():
    backend = make_backend(TASKS, render=False)
    try:

        class Counting(RandomPolicy):
            calls = 0

            def act(self, observation, instruction, indicator=None):
                Counting.calls += 1
                assert observation["image"].dtype == np.uint8 and observation["state"].shape == (4,)
                assert instruction == TASKS["push-v3"].instruction
                return super().act(observation, instruction, indicator)

        short = make_backend({"push-v3": TaskSpec("push-v3", TASKS["push-v3"].instruction, 12)}, render=False)
        outcome = run_episode(short, Counting(4, chunk_size=4), "push-v3", 0, actions_per_query=2)
        assert outcome.steps == 12 and Counting.calls == 6
        Counting.calls = 0
        run_episode(short, Counting(4, chunk_size=4), "push-v3", 0, actions_per_query=None)
        assert Counting.calls == 3
        short.close()
        with pytest.raises(ValueError, match="expected \\[K>0, 4\\]"):
            run_episode(backend, RandomPolicy(3), "push-v3", 0)
        with pytest.raises(ValueError, match="seeds"):
            evaluate(random_policy_factory, lambda: backend, ["push-v3"], episodes_per_task=2, seeds=[1])
    finally:
        backend.close()
