"""Scripted-expert demonstrations recorded from a backend into episode files (the offline buffer's input).

Each demo is one episode file (<out>/<episode_id>.mcap, the fleet's episode format). The expert
(MetaWorld's scripted policy in sim) stands in for the human teleoperator, so every step is marked
actor=HUMAN with policy_version 0, and the success label comes from the backend
(label_source=environment). Used by `sop collect`, `sop pretrain` and the experiment's demo-trained
baselines; the backend comes from a factory, so this module knows no simulator.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from pathlib import Path
from typing import Optional

import numpy as np

from sop_ros.resources import node_defaults

DEMO_POLICY_VERSION = 0
DEMO_ROBOT_ID = "sim-demo"  # the robot id demo episodes are recorded under


def recorded_chunk_size() -> int:
    """K of the proposed chunks the robots record (config/robot.yaml): demos have the same shape."""
    return int(node_defaults("episode_recorder")["chunk_size"])


@dataclasses.dataclass(frozen=True)
class DemoJob:
    task_id: str
    seed: int


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    out: str
    robot_id: str
    chunk_size: int
    action_noise: float
    keep_failures: bool


@dataclasses.dataclass(frozen=True)
class DemoResult:
    task_id: str
    seed: int
    success: bool
    steps: int
    path: Optional[str]  # None when the demo was dropped


def record_demo(backend, job: DemoJob, settings: DemoSettings) -> DemoResult:
    """Run the expert on one scene and write the episode (atomically) unless it failed and failures are dropped."""
    from sop_ros.core.episodes.episode import Actor, EpisodeBuilder, LabelSource
    from sop_ros.core.episodes.episode_file import EPISODE_SUFFIX, write_episode

    spec = backend.tasks[job.task_id]
    rng = np.random.default_rng([job.seed, 0x5EED])
    obs = backend.reset(job.task_id, job.seed)
    builder = EpisodeBuilder(
        settings.robot_id,
        job.task_id,
        spec.instruction,
        (settings.chunk_size, backend.action_dim),
        start_ns=obs.stamp_ns,
    )
    while True:
        action = backend.expert_action()
        if settings.action_noise:
            action = np.clip(action + rng.normal(0.0, settings.action_noise, action.shape), -1.0, 1.0).astype(
                np.float32
            )
        builder.add_step(obs.image, obs.state, action, Actor.HUMAN, DEMO_POLICY_VERSION, obs.stamp_ns)
        result = backend.step(action)
        obs = result.observation
        if result.done:
            break
    if not result.success and not settings.keep_failures:
        return DemoResult(job.task_id, job.seed, False, len(builder), None)
    episode = builder.close(result.success, LabelSource.ENVIRONMENT, end_ns=obs.stamp_ns)
    path = write_episode(episode, Path(settings.out) / f"{episode.episode_id}{EPISODE_SUFFIX}")
    return DemoResult(job.task_id, job.seed, result.success, episode.num_steps, str(path))


_worker: dict = {}


def _init_worker(env_factory, settings: DemoSettings) -> None:
    _worker.update(backend=env_factory(), settings=settings)


def _record_job(job: DemoJob) -> DemoResult:
    return record_demo(_worker["backend"], job, _worker["settings"])


def collect_demos(
    env_factory, jobs: list[DemoJob], settings: DemoSettings, workers: int = 1, on_result=None
) -> list[DemoResult]:
    """Record every job; with workers > 1 in spawned processes (one backend each)."""
    Path(settings.out).mkdir(parents=True, exist_ok=True)
    results = []
    if workers <= 1:
        backend = env_factory()
        try:
            for job in jobs:
                results.append(record_demo(backend, job, settings))
                if on_result:
                    on_result(results[-1])
        finally:
            backend.close()
        return results
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(env_factory, settings)) as pool:
        for result in pool.imap_unordered(_record_job, jobs):
            results.append(result)
            if on_result:
                on_result(result)
        pool.close()  # let the workers exit on their own (finalisers run); `with` alone terminates them
        pool.join()
    return results
