"""Shared helpers for the test_link_* modules (no tests here): episodes, a loopback learner, clients."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import numpy as np

from sop_ros.core.episodes.episode import Actor, Episode, EpisodeBuilder, LabelSource
from sop_ros.core.storage.checkpoint_store import CheckpointStore
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.link.channel import LinkClient, LinkClientConfig, RetryPolicy
from sop_ros.link.server import LearnerServerConfig, LearnerService, create_server

FAST_RETRY = RetryPolicy(initial_s=0.02, max_s=0.3)


def make_episode(robot_id: str, steps: int = 20, hw: int = 16, seed: int = 0, task_id: str = "reach-v3") -> Episode:
    rng = np.random.default_rng(seed)
    builder = EpisodeBuilder(
        robot_id,
        task_id,
        "reach the goal",
        chunk_shape=(4, 4),
        episode_id=str(uuid.UUID(int=int(rng.integers(1 << 62)) << 64 | int(rng.integers(1 << 62)), version=4)),
        start_ns=1,
    )
    for t in range(steps):
        actor = Actor.HUMAN if 5 <= t < 8 else Actor.POLICY
        builder.add_step(
            rng.integers(0, 255, (hw, hw, 3), dtype=np.uint8),
            rng.standard_normal(7).astype(np.float32),
            rng.standard_normal(4).astype(np.float32),
            actor,
            1,
            1 + t * 1000,
        )
    return builder.close(success=True, label_source=LabelSource.ENVIRONMENT, end_ns=steps * 1000 + 10)


class Learner:
    """A real learner (stores on disk, gRPC server on an ephemeral loopback port)."""

    def __init__(self, data_dir: Path, config: LearnerServerConfig):
        self.episode_store = EpisodeStore(data_dir / "episodes", max_episode_bytes=config.max_episode_bytes)
        self.checkpoint_store = CheckpointStore(data_dir / "checkpoints")
        self.service = LearnerService(config, self.episode_store, self.checkpoint_store)
        self.server, self.port = create_server(self.service)
        self.server.start()
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.service.stop(self.server, grace_s=0.5)
        self.episode_store.close()


@contextlib.contextmanager
def running_learner(data_dir: Path, **config) -> Iterator[Learner]:
    config.setdefault("address", "127.0.0.1:0")
    config.setdefault("insecure", True)
    learner = Learner(Path(data_dir), LearnerServerConfig(**config))
    try:
        yield learner
    finally:
        learner.stop()


def insecure_link(address: str, token: Optional[str] = None) -> LinkClient:
    return LinkClient.connect(LinkClientConfig(address=address, insecure=True, token=token))
