"""Pretraining's in-memory checkpoint sink and the snapshots it holds (weights + the trainer's resume state).

core/training/pretrain.py keeps the best snapshot of a run and publishes only that one to the checkpoint store.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch


@dataclasses.dataclass
class Snapshot:
    """What ContinuousTrainer.publish hands its sink, cloned (the trainer's tensors alias live parameters)."""

    tensors: dict[str, torch.Tensor]
    training_step: int
    metrics: dict[str, float]
    train_state: dict[str, torch.Tensor]
    train_state_meta: dict[str, Any]


class SnapshotSink:
    """An in-memory CheckpointSink: the trainer 'publishes' its complete state here at each evaluation."""

    def __init__(self) -> None:
        self.last: Optional[Snapshot] = None
        self._count = 0

    def publish(self, tensors, *, algorithm, training_step, metrics, parent_version, train_state, train_state_meta):
        self._count += 1
        self.last = Snapshot(
            {k: v.detach().clone() for k, v in tensors.items()},
            int(training_step),
            {k: float(v) for k, v in metrics.items()},
            {k: v.detach().clone() for k, v in train_state.items()},
            dict(train_state_meta),
        )
        return {"version": self._count}

    def latest(self) -> None:
        return None

    def load_tensors(self, version: int):
        raise KeyError(version)

    def load_train_state(self, version: int):
        raise KeyError(version)
