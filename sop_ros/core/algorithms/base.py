"""The algorithm plug-in seam: stored episodes -> per-step training targets, and the loss.

The sampler, trainer and stores never special-case an algorithm. An algorithm says which steps
are trainable and what their targets are (`targets`), which other steps' observations its loss
needs (`StepTargets.observation_steps`, e.g. RECAP's n-step bootstrap state), and computes the
loss on a batch (`loss`), reporting a per-sample loss the sampler uses to balance online and
offline data.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np
import torch

from sop_ros.core.episodes.episode import Actor

# Key of the detached per-sample loss [B] in the metrics dict returned by Algorithm.loss.
PER_SAMPLE_LOSS = "per_sample_loss"


class DataSource(str, enum.Enum):
    """Which buffer an episode belongs to."""

    OFFLINE = "offline"  # prior demonstrations (static)
    ONLINE = "online"  # episodes streamed from the fleet


@dataclasses.dataclass(frozen=True)
class EpisodeMeta:
    """What an algorithm may know about an episode besides its arrays."""

    episode_id: str
    task_id: str
    instruction: str
    success: Optional[bool]
    num_steps: int
    source: DataSource


@dataclasses.dataclass
class StepTargets:
    """Per-step targets of one episode (every array has first dimension T = num_steps).

    trainable: bool [T], which steps the sampler may draw.
    fields: per-step arrays copied into the batch under the same names.
    observation_steps: name -> int64 [T] index of another step whose observation the loss
      needs (-1 = none); the batch then holds `{name}_images`, `{name}_states`, `{name}_valid`.
    """

    trainable: np.ndarray
    fields: dict[str, np.ndarray]
    observation_steps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.trainable.shape[0]
        if self.trainable.dtype != np.bool_ or self.trainable.ndim != 1:
            raise ValueError("StepTargets.trainable must be a bool [T] array")
        for name, arr in {**self.fields, **self.observation_steps}.items():
            if arr.shape[0] != t:
                raise ValueError(f"StepTargets field '{name}' has length {arr.shape[0]}, expected {t}")

    @property
    def trainable_steps(self) -> np.ndarray:
        return np.flatnonzero(self.trainable)

    @property
    def nbytes(self) -> int:
        return int(
            self.trainable.nbytes
            + sum(a.nbytes for a in self.fields.values())
            + sum(a.nbytes for a in self.observation_steps.values())
        )


@dataclasses.dataclass
class Batch:
    """One training batch, on the model's device except the string lists."""

    images: torch.Tensor  # uint8 [B, H, W, 3]
    states: torch.Tensor  # float32 [B, S]
    instructions: list[str]
    task_ids: list[str]
    sources: list[DataSource]
    targets: dict[str, torch.Tensor]  # fields of StepTargets, stacked, plus observation_steps extras

    def __len__(self) -> int:
        return int(self.states.shape[0])


@runtime_checkable
class Algorithm(Protocol):
    name: str

    def check_model(self, model_config: Any) -> None:
        """Raise ConfigError if the model lacks an input/head this algorithm needs."""

    def targets(self, arrays: Mapping[str, np.ndarray], meta: EpisodeMeta) -> StepTargets:
        """Per-step targets from an episode's arrays (actions, actors, ...; images are not needed)."""

    def loss(self, model: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        """(scalar loss, metrics); metrics[PER_SAMPLE_LOSS] is a detached [B] tensor, other values floats."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable algorithm state (e.g. RECAP thresholds) for resume."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def chunk_labels(actions: np.ndarray, chunk_size: int, trusted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Action-chunk labels for every step: chunks [T, K, A] and mask [T, K].

    mask[t, k] is true when step t+k exists and steps t..t+k are all trusted (a chunk never
    continues across an untrusted step, e.g. past the end of a human correction).
    Masked positions repeat the last valid action so they are finite.
    """
    actions = np.asarray(actions, dtype=np.float32)
    t_len = actions.shape[0]
    trusted = np.asarray(trusted, dtype=bool)
    idx = np.arange(t_len)[:, None] + np.arange(chunk_size)[None, :]
    in_range = idx < t_len
    clipped = np.minimum(idx, t_len - 1)
    mask = np.logical_and.accumulate(in_range & trusted[clipped], axis=1)
    # repeat the last valid entry in masked positions
    last_valid = np.where(mask, idx, -1)
    last_valid = np.maximum.accumulate(last_valid, axis=1)
    fill = np.where(last_valid >= 0, last_valid, clipped)
    return actions[fill], mask


def human_steps(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.asarray(arrays["actors"]) == Actor.HUMAN


def masked_chunk_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, later_weight: float) -> torch.Tensor:
    """Per-sample weighted MSE over valid chunk positions: [B]. Position 0 has weight 1, later ones later_weight."""
    k = pred.shape[1]
    w = torch.full((k,), later_weight, device=pred.device, dtype=pred.dtype)
    w[0] = 1.0
    w = w.unsqueeze(0) * mask.to(pred.dtype)
    err = ((pred - target) ** 2).mean(-1)
    return (err * w).sum(1) / w.sum(1).clamp(min=1e-6)


def require_fields(arrays: Mapping[str, np.ndarray], names: Sequence[str]) -> None:
    for name in names:
        if name not in arrays:
            raise KeyError(f"episode arrays lack field '{name}'")
