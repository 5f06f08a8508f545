"""Synthetic episodes for benchmarks and tests: valid, but noise instead of a robot's recording."""

from __future__ import annotations

import uuid

import numpy as np

from sop_ros.core.episodes.episode import Actor, Episode, LabelSource


def synthetic_episode(
    num_steps: int = 300,
    image_hw: int = 64,
    *,
    seed: int = 0,
    episode_id: str | None = None,
    robot_id: str = "robot0",
    task_id: str = "reach-v3",
    instruction: str = "reach the goal",
    state_dim: int = 39,
    action_dim: int = 4,
    chunk_len: int = 10,
    policy_version: int = 3,
    human_steps: tuple[int, int] | None = None,
    success: bool | None = True,
) -> Episode:
    """A valid episode of noisy (incompressible) frames, for benchmarks and tests.

    human_steps=(a, b) makes steps [a, b) human interventions (proposed chunks NaN there); default is the
    middle sixth of the episode.
    """
    rng = np.random.default_rng(seed)
    actors = np.zeros(num_steps, np.uint8)
    a, b = human_steps if human_steps is not None else (num_steps // 3, num_steps // 2)
    actors[a:b] = Actor.HUMAN
    chunks = rng.standard_normal((num_steps, chunk_len, action_dim)).astype(np.float32)
    chunks[actors == Actor.HUMAN] = np.nan
    stamps = 1_700_000_000_000_000_000 + np.arange(num_steps, dtype=np.int64) * 100_000_000 + seed
    n_segments = 1 if b > a else 0
    return Episode(
        episode_id=episode_id or str(uuid.UUID(bytes=rng.bytes(16), version=4)),
        robot_id=robot_id,
        task_id=task_id,
        instruction=instruction,
        images=rng.integers(0, 256, (num_steps, image_hw, image_hw, 3), dtype=np.uint8),
        states=rng.standard_normal((num_steps, state_dim)).astype(np.float32),
        actions=rng.standard_normal((num_steps, action_dim)).astype(np.float32),
        actors=actors,
        policy_versions=np.full(num_steps, policy_version, np.int64),
        proposed_chunks=chunks,
        stamps_ns=stamps,
        success=success,
        label_source=LabelSource.NONE if success is None else LabelSource.ENVIRONMENT,
        start_ns=int(stamps[0]),
        end_ns=int(stamps[-1]) + 100_000_000,
        intervention_reasons=("operator took over",) * n_segments,
    )
