"""The continuous learner: episode source -> sampler -> algorithm -> checkpoints."""

from sop_ros.core.training.batching import BatchAssembler
from sop_ros.core.training.protocols import (
    CheckpointSink,
    EpisodeArrays,
    EpisodeRecord,
    EpisodeSource,
    manifest_version,
)
from sop_ros.core.training.store_adapters import MultiStoreArrays, StoreEpisodeSource, offline_records
from sop_ros.core.training.trainer import ContinuousTrainer, TrainerConfig

__all__ = [
    "BatchAssembler",
    "CheckpointSink",
    "ContinuousTrainer",
    "EpisodeArrays",
    "EpisodeRecord",
    "EpisodeSource",
    "MultiStoreArrays",
    "StoreEpisodeSource",
    "offline_records",
    "TrainerConfig",
    "manifest_version",
]
