"""What BC and HG-DAgger share: chunked action labels on trusted steps and a masked MSE loss."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from sop_ros.core.algorithms.base import (
    PER_SAMPLE_LOSS,
    Batch,
    EpisodeMeta,
    StepTargets,
    chunk_labels,
    masked_chunk_mse,
    require_fields,
)


@dataclasses.dataclass(frozen=True)
class ImitationConfig:
    chunk_size: int = 4  # must equal the model's chunk_size
    later_action_weight: float = 0.5  # weight of chunk positions 1..K-1 (position 0 is executed first)

    def __post_init__(self) -> None:
        if self.chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        if not 0.0 <= self.later_action_weight <= 1.0:
            raise ValueError("later_action_weight must be in [0, 1]")


class ImitationAlgorithm:
    """Base: subclasses decide which steps are trusted labels (`trusted_steps`)."""

    name = "imitation"

    def __init__(self, config: ImitationConfig):
        self.config = config

    def check_model(self, model_config: Any) -> None:
        from sop_ros.core.model.config import ConfigError

        if model_config.chunk_size != self.config.chunk_size:
            raise ConfigError(
                f"{self.name}: chunk_size {self.config.chunk_size} != model chunk_size {model_config.chunk_size}"
            )

    def trusted_steps(self, arrays: Mapping[str, np.ndarray], meta: EpisodeMeta) -> np.ndarray:
        raise NotImplementedError

    def targets(self, arrays: Mapping[str, np.ndarray], meta: EpisodeMeta) -> StepTargets:
        require_fields(arrays, ("actions", "actors"))
        trusted = np.asarray(self.trusted_steps(arrays, meta), dtype=bool)
        chunks, mask = chunk_labels(arrays["actions"], self.config.chunk_size, trusted)
        return StepTargets(trainable=trusted, fields={"action_chunk": chunks, "chunk_mask": mask})

    def loss(self, model: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        pred = model.action_chunks(
            model.pixels(batch.images, augment=model.training), batch.states, model.text(batch.instructions)
        )
        per_sample = masked_chunk_mse(
            pred, batch.targets["action_chunk"], batch.targets["chunk_mask"], self.config.later_action_weight
        )
        loss = per_sample.mean()
        return loss, {"action_loss": float(loss.detach()), PER_SAMPLE_LOSS: per_sample.detach()}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"{self.name} has no state, got keys {sorted(state)}")
