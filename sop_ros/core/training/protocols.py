"""The narrow views of the stores the trainer needs (the real EpisodeStore / CheckpointStore fit
them through a thin adapter; tests use in-memory ones)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Protocol

import numpy as np
import torch

from sop_ros.core.algorithms.base import DataSource, EpisodeMeta


@dataclasses.dataclass(frozen=True)
class EpisodeRecord:
    """One stored episode as the trainer sees it."""

    seq: int  # ingest sequence number (monotonic per store)
    episode_id: str
    task_id: str
    instruction: str
    success: Optional[bool]
    num_steps: int
    source: DataSource = DataSource.ONLINE

    def meta(self) -> EpisodeMeta:
        return EpisodeMeta(self.episode_id, self.task_id, self.instruction, self.success, self.num_steps, self.source)


class EpisodeSource(Protocol):
    def new_episodes(self, after_seq: int) -> Sequence[EpisodeRecord]:
        """Episodes ingested with seq > after_seq, in seq order."""


class EpisodeArrays(Protocol):
    def arrays(self, episode_id: str) -> Mapping[str, np.ndarray]:
        """Per-field arrays (images, states, actions, actors, policy_versions, ...), ideally memory-mapped."""


class CheckpointSink(Protocol):
    def publish(
        self,
        tensors: Mapping[str, torch.Tensor],
        *,
        algorithm: str,
        training_step: int,
        metrics: Mapping[str, float],
        parent_version: Optional[int],
        train_state: Mapping[str, torch.Tensor],
        train_state_meta: Mapping[str, Any],
    ) -> Any:
        """Store an immutable checkpoint; returns its manifest (with a `version`)."""

    def latest(self) -> Any:
        """Manifest of the newest checkpoint, or None."""

    def load_tensors(self, version: int) -> Mapping[str, torch.Tensor]: ...

    def load_train_state(self, version: int) -> tuple[Mapping[str, torch.Tensor], Mapping[str, Any]]: ...


def manifest_version(manifest: Any) -> int:
    """Version number of a manifest given as an object with `.version` or a mapping."""
    if isinstance(manifest, Mapping):
        return int(manifest["version"])
    return int(manifest.version)
