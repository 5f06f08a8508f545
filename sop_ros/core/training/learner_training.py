"""The learner's training side, composed from its stores (ROS-free, gRPC-free).

The data directory layout is in sop_ros.core.storage.data_layout.

The policy starts from the latest checkpoint. When that checkpoint was made by another
algorithm (the BC base policy v1 for an HG-DAgger or RECAP run), its weights are the
starting point and the optimiser, sampler and algorithm state start fresh; weights the
new algorithm adds (RECAP's value head) start from their initialisation.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional

import torch

from sop_ros.core.algorithms.registry import make_algorithm
from sop_ros.core.model.config import preset
from sop_ros.core.model.vla import CONFIG_TENSOR_KEY, VLAPolicy, config_from_tensor
from sop_ros.core.storage.checkpoint_store import CheckpointStore
from sop_ros.core.storage.data_layout import OFFLINE_DIR
from sop_ros.core.storage.episode_store import EpisodeStore, read_index
from sop_ros.core.storage.episode_store_layout import INDEX_FILE
from sop_ros.core.training.sampler import SamplerConfig, TaskAwareSampler
from sop_ros.core.training.store_adapters import MultiStoreArrays, StoreEpisodeSource, offline_records
from sop_ros.core.training.trainer import ContinuousTrainer, TrainerConfig

_LOG = logging.getLogger(__name__)

# Algorithms whose targets trust offline steps only (BehaviourCloning.trusted_steps): no fleet
# episode ever adds a sample, so without offline episodes they have nothing to train on.
OFFLINE_ONLY_ALGORITHMS = frozenset({"bc"})


@dataclasses.dataclass(frozen=True)
class LearnerTrainingConfig:
    algorithm: str = "hg_dagger"
    algorithm_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    model_preset: str = "tiny"  # used only when there is no checkpoint to start from
    trainer: TrainerConfig = TrainerConfig()
    sampler: SamplerConfig = SamplerConfig()
    seed: int = 0


def nothing_to_train(algorithm: str, data_dir: Path) -> Optional[str]:
    """Why `algorithm` over `data_dir` can never draw a sample, or None when it can (now or once robots upload).

    Reads the offline index read-only, so asking creates nothing in data_dir.
    """
    if algorithm not in OFFLINE_ONLY_ALGORITHMS:
        return None
    offline_path = Path(data_dir) / OFFLINE_DIR
    if not (offline_path / INDEX_FILE).is_file():  # no index: not an episode store
        return f"nothing to train on: {offline_path} holds no episode store; {algorithm} trains only on offline data"
    if not any(row.num_steps > 0 for row in read_index(offline_path)):
        return (
            f"nothing to train on: the episode store {offline_path} is empty; {algorithm} trains only on offline data"
        )
    return None


def _model_config_for(algorithm_name: str, base_config, model_preset: str):
    """RECAP needs the value head; the other algorithms train the same model as the base.

    A base without a value network (a BC base) that does not name a value tower gets the learner
    preset's, when it reads the same image size: bases made before `value_vision` existed would
    otherwise get a value network on the policy's ResNet tower, which ranks returns worse.
    """
    if algorithm_name == "recap" and not base_config.value_bins:
        value_vision = base_config.value_vision
        if value_vision is None:
            candidate = preset(model_preset).value_tower
            value_vision = candidate if candidate.image_size == base_config.vision.image_size else None
        return base_config.replace(value_bins=51, value_vision=value_vision)
    return base_config


def _warm_start(policy: VLAPolicy, tensors: Mapping[str, torch.Tensor]) -> int:
    """Copy every weight whose name and shape match; returns how many were copied."""
    own = policy.state_dict()
    matching = {k: v for k, v in tensors.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    policy.load_state_dict(matching, strict=False)
    return len(matching)


def _base_checkpoint(config: LearnerTrainingConfig, checkpoint_store: CheckpointStore):
    """The latest checkpoint (None without one), its weights without the config tensor, and its model config.

    Without a checkpoint: no weights, and the config of `config.model_preset`.
    """
    latest = checkpoint_store.latest()
    base_tensors: dict[str, torch.Tensor] = {}
    if latest is not None:
        base_tensors = dict(checkpoint_store.load_tensors(latest.version))
        base_config = config_from_tensor(base_tensors.pop(CONFIG_TENSOR_KEY))
    else:
        base_config = preset(config.model_preset)
    return latest, base_tensors, base_config


def model_config_of(checkpoint_store: CheckpointStore, model_preset: str = LearnerTrainingConfig.model_preset):
    """The model config the learner trains: its latest checkpoint's, else the preset's."""
    return _base_checkpoint(LearnerTrainingConfig(model_preset=model_preset), checkpoint_store)[2]


def _algorithm_for(config: LearnerTrainingConfig, model_config):
    """The algorithm with the model's chunk size (and RECAP's value bins) unless its options name them."""
    algo_options = dict(config.algorithm_config)
    algo_options.setdefault("chunk_size", model_config.chunk_size)
    if config.algorithm == "recap":
        algo_options.setdefault("value_bins", model_config.value_bins)
    return make_algorithm(config.algorithm, algo_options)


def _start_from(
    trainer: ContinuousTrainer,
    policy: VLAPolicy,
    config: LearnerTrainingConfig,
    checkpoint_store: CheckpointStore,
    latest,
    base_tensors: Mapping[str, torch.Tensor],
    base_config,
    model_config,
) -> None:
    """Resume the same run, warm-start from another algorithm's checkpoint, or (no checkpoint) say so."""
    if latest is None:
        _LOG.warning(
            "no checkpoint in %s: training %s from a freshly initialised %s model",
            checkpoint_store.root,
            config.algorithm,
            config.model_preset,
        )
    elif latest.algorithm == config.algorithm and model_config == base_config:
        trainer.resume()  # same run restarted: weights, optimiser, sampler and counters
    else:
        copied = _warm_start(policy, base_tensors)
        trainer.version = int(latest.version)
        _LOG.info(
            "starting %s from checkpoint v%d (%s): %d weight tensors copied, fresh optimiser and sampler",
            config.algorithm,
            latest.version,
            latest.algorithm,
            copied,
        )


def build_learner_trainer(
    config: LearnerTrainingConfig,
    data_dir: Path,
    episode_store: EpisodeStore,
    checkpoint_store: CheckpointStore,
    on_checkpoint: Optional[Callable[[Any], None]] = None,
    summary_writer: Any = None,
    device: Optional[str] = None,
    clock: Callable[[], float] = time.monotonic,
) -> ContinuousTrainer:
    """A ContinuousTrainer over the learner's stores, resumed or warm-started from the latest checkpoint.

    `clock` (seconds) times the publish cadence (publish_every_s) and the logged rates: the learner's
    monotonic clock, or an experiment's simulated time so that publishing never depends on machine load.
    """
    data_dir = Path(data_dir)
    offline_path = data_dir / OFFLINE_DIR
    offline_store = EpisodeStore(offline_path) if offline_path.is_dir() else None
    latest, base_tensors, base_config = _base_checkpoint(config, checkpoint_store)
    model_config = _model_config_for(config.algorithm, base_config, config.model_preset)
    algorithm = _algorithm_for(config, model_config)
    policy = VLAPolicy(model_config, device=device)
    sampler = TaskAwareSampler(config.sampler, seed=config.seed)
    arrays = MultiStoreArrays(*([episode_store, offline_store] if offline_store else [episode_store]))
    trainer = ContinuousTrainer(
        config.trainer,
        policy,
        algorithm,
        sampler,
        episodes=StoreEpisodeSource(episode_store),
        arrays=arrays,
        checkpoints=checkpoint_store,
        offline_episodes=offline_records(offline_store) if offline_store else (),
        on_checkpoint=on_checkpoint,
        summary_writer=summary_writer,
        clock=clock,
    )
    _start_from(trainer, policy, config, checkpoint_store, latest, base_tensors, base_config, model_config)
    if offline_store is None:
        _LOG.warning("no offline prior data in %s; training on fleet episodes only", offline_path)
    return trainer
