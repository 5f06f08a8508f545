"""Thin adapters from the learner's stores (EpisodeStore) to the trainer's narrow protocols.

The CheckpointStore already has the CheckpointSink shape and is passed as is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from sop_ros.core.algorithms.base import DataSource
from sop_ros.core.training.protocols import EpisodeRecord


class _EpisodeIndex(Protocol):
    def query(self, *, since_seq: int | None = None) -> Sequence[Any]: ...

    def contains(self, episode_id: str) -> bool: ...

    def arrays(self, episode_id: str) -> Mapping[str, np.ndarray]: ...


def record_from_stored(row: Any, source: DataSource) -> EpisodeRecord:
    """An EpisodeStore StoredEpisode row as the trainer's EpisodeRecord."""
    return EpisodeRecord(
        int(row.ingest_seq), row.episode_id, row.task_id, row.instruction, row.success, int(row.num_steps), source
    )


class StoreEpisodeSource:
    """Everything committed to `store` after a sequence number, as records of one source."""

    def __init__(self, store: _EpisodeIndex, source: DataSource = DataSource.ONLINE):
        self._store = store
        self._source = DataSource(source)

    def new_episodes(self, after_seq: int) -> list[EpisodeRecord]:
        return [record_from_stored(row, self._source) for row in self._store.query(since_seq=after_seq)]


def offline_records(store: _EpisodeIndex) -> list[EpisodeRecord]:
    """Every episode of a demonstrations store, as the static offline buffer."""
    return StoreEpisodeSource(store, DataSource.OFFLINE).new_episodes(-1)


class MultiStoreArrays:
    """Arrays from whichever store holds the episode (e.g. the fleet store and a demos store)."""

    def __init__(self, *stores: _EpisodeIndex):
        if not stores:
            raise ValueError("MultiStoreArrays needs at least one store")
        self._stores = stores

    def arrays(self, episode_id: str) -> Mapping[str, np.ndarray]:
        for store in self._stores:
            if store.contains(episode_id):
                return store.arrays(episode_id)
        raise KeyError(f"episode {episode_id} is in none of the stores")


class NoOnlineEpisodes:
    """An online source that never has episodes: for training on offline data only (pretraining,
    value-function evaluation), where there is no fleet."""

    def new_episodes(self, after_seq: int) -> list[EpisodeRecord]:
        return []
