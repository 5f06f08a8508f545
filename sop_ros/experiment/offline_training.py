"""The non-SOP baselines' one offline training: N learner updates over a run's learner data dir.

The same trainer the online learner uses (build_learner_trainer: warm start from the base v1,
fresh optimiser, the task-aware online/offline sampler), run in this process after the fleet
stopped, for exactly `updates` updates, then published once. With fleet episodes in
<data_dir>/episodes (non_sop) it trains on them plus the offline demos; without (offline_only)
on the demos alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional

from sop_ros.core.storage.checkpoint_store import CheckpointManifest, CheckpointStore
from sop_ros.core.storage.data_layout import CHECKPOINTS_DIR, EPISODES_DIR
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.core.training.learner_training import LearnerTrainingConfig, build_learner_trainer
from sop_ros.core.training.trainer import TrainerConfig

log = logging.getLogger(__name__)
_TRAINER_DEFAULTS = TrainerConfig()


def train_offline(
    data_dir: Path,
    updates: int,
    algorithm: str = "hg_dagger",
    threads: int = 1,
    seed: int = _TRAINER_DEFAULTS.seed,
    batch_size: int = _TRAINER_DEFAULTS.batch_size,
    learning_rate: float = _TRAINER_DEFAULTS.learning_rate,
    ema_decay: float = _TRAINER_DEFAULTS.ema_decay,
    on_update: Optional[Callable[[int], None]] = None,
    algorithm_config: Optional[Mapping[str, Any]] = None,
) -> CheckpointManifest:
    """Train `updates` updates from the latest checkpoint of data_dir and publish the result (the latest
    checkpoint itself when updates is 0). Returns the published manifest."""
    import torch

    if updates < 0:
        raise ValueError(f"updates: must be >= 0, got {updates}")
    data_dir = Path(data_dir)
    checkpoints = CheckpointStore(data_dir / CHECKPOINTS_DIR)
    base = checkpoints.latest()
    if base is None:
        raise ValueError(f"{checkpoints.root}: no checkpoint to start the offline training from")
    if updates == 0:
        return base
    torch.set_num_threads(max(1, threads))
    config = LearnerTrainingConfig(
        algorithm=algorithm,
        algorithm_config=dict(algorithm_config or {}),
        trainer=TrainerConfig(
            batch_size=batch_size,
            learning_rate=learning_rate,
            ema_decay=ema_decay,
            seed=seed,
            publish_every_updates=updates,
            publish_every_s=1e12,
        ),
        seed=seed,
    )
    with EpisodeStore(data_dir / EPISODES_DIR, cache_in_background=False) as episodes:
        trainer = build_learner_trainer(config, data_dir, episodes, checkpoints)
        trainer.poll()  # everything the fleet delivered, once: the data is fixed
        if not trainer.sampler.tasks():
            raise ValueError(f"{data_dir}: no training data (neither fleet episodes nor offline demos)")
        start, t0 = trainer.updates, time.monotonic()
        while trainer.updates - start < updates:
            trainer.step()
            if on_update is not None:
                on_update(trainer.updates - start)
        manifest = trainer.publish()
    log.info(
        "offline %s: %d updates on %d episodes in %.0f s -> v%d",
        algorithm,
        updates,
        trainer.buffered_episodes,
        time.monotonic() - t0,
        manifest.version,
    )
    return manifest
