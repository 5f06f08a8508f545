"""ContinuousTrainer: the learner loop of SOP (pull episodes, sample, update, publish).

It never waits for the fleet and the fleet never waits for it: whoever commits episodes calls
`notify_new_episodes()` and the trainer indexes them into the online buffer before its next update
(a poll every `poll_interval_s` is only the safety net); updates run back to back; a checkpoint is
published every `publish_every_updates` updates or `publish_every_s` seconds, whichever comes
first, and `on_checkpoint(manifest)` announces it. Restart resumes from the latest checkpoint:
weights, optimizer, sampler EMAs and RNG, algorithm state and the update counter; the buffer
index is rebuilt by re-reading the episode source from the start.

Under torchrun (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel; every rank
indexes the same store, draws its own batches, and only rank 0 publishes and logs.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from sop_ros.core.algorithms.base import PER_SAMPLE_LOSS, Algorithm, Batch, DataSource, StepTargets
from sop_ros.core.episodes.episode import Actor
from sop_ros.core.model.config import ConfigError
from sop_ros.core.model.vla import CONFIG_TENSOR_KEY, VLAPolicy, config_from_tensor
from sop_ros.core.training.batching import BatchAssembler
from sop_ros.core.training.protocols import (
    CheckpointSink,
    EpisodeArrays,
    EpisodeRecord,
    EpisodeSource,
    manifest_version,
)
from sop_ros.core.training.sampler import TaskAwareSampler
from sop_ros.core.training.train_state import optimizer_from_tensors, optimizer_to_tensors
from sop_ros.core.training.weight_average import WeightAverage, raw_weights_from_state, raw_weights_state

_LOG = logging.getLogger(__name__)
_IDLE_CHECK_S = 0.5  # longest idle wait between checks of should_stop() and the run's limits
_MIN_IDLE_WAIT_S = 0.01  # never spin: poll_interval_s may be 0


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    batch_size: int = 32
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    grad_clip_norm: float = 1.0
    publish_every_updates: int = 25  # the paper publishes every 25 learner steps
    publish_every_s: float = 60.0
    poll_interval_s: float = 1.0  # safety net: the episode source is read at least this often
    log_every_updates: int = 10
    outcome_window: int = 20  # incoming episodes per task for success / intervention rates
    seed: int = 0
    # > 0: publish an exponential moving average of the weights (core/training/weight_average.py); 0: the raw weights.
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.batch_size <= 0 or self.publish_every_updates <= 0:
            raise ValueError("batch_size and publish_every_updates must be positive")
        if self.learning_rate <= 0 or self.publish_every_s <= 0 or self.poll_interval_s < 0:
            raise ValueError("learning_rate and publish_every_s must be positive, poll_interval_s >= 0")


class _LossModule(nn.Module):
    """Routes the algorithm's loss through one module call so DDP sees a forward pass."""

    def __init__(self, policy: VLAPolicy, algorithm: Algorithm):
        super().__init__()
        self.policy = policy
        self._algorithm = algorithm

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        return self._algorithm.loss(self.policy, batch)


class ContinuousTrainer:
    def __init__(
        self,
        config: TrainerConfig,
        policy: VLAPolicy,
        algorithm: Algorithm,
        sampler: TaskAwareSampler,
        episodes: EpisodeSource,
        arrays: EpisodeArrays,
        checkpoints: CheckpointSink,
        offline_episodes: Sequence[EpisodeRecord] = (),
        on_checkpoint: Optional[Callable[[Any], None]] = None,
        summary_writer: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        algorithm.check_model(policy.config)
        self.config = config
        self.policy = policy
        self.algorithm = algorithm
        self.sampler = sampler
        self._episodes = episodes
        self._checkpoints = checkpoints
        self._on_checkpoint = on_checkpoint
        self._writer = summary_writer
        self._clock = clock
        self._assembler = BatchAssembler(arrays, policy.device)
        self._targets: dict[str, StepTargets] = {}
        self._instructions: dict[str, str] = {}
        self._last_seq = -1
        self._last_poll: Optional[float] = None
        self._episodes_pending = threading.Event()  # set by notify_new_episodes(), from any thread
        self.source_reads = 0  # how often the episode source was read (each notification or safety-net poll)
        self._outcomes: dict[str, collections.deque] = collections.defaultdict(
            lambda: collections.deque(maxlen=config.outcome_window)
        )
        self._staleness: collections.deque = collections.deque(maxlen=100)
        self.rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self._module: nn.Module = _LossModule(policy, algorithm)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device_ids = [policy.device.index] if policy.device.type == "cuda" else None
            self._module = nn.parallel.DistributedDataParallel(
                self._module, device_ids=device_ids, find_unused_parameters=True
            )
        self.optimizer = torch.optim.AdamW(
            [p for p in policy.parameters() if p.requires_grad],
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
        )
        self.weight_average = WeightAverage(config.ema_decay) if config.ema_decay > 0 else None
        self.updates = 0
        self.version: Optional[int] = None
        self._since_publish = 0
        self._last_publish_t = clock()
        self._window: dict[str, list[float]] = collections.defaultdict(list)
        self._window_t = clock()
        self._window_updates = 0
        torch.manual_seed(config.seed + self.rank)
        for record in offline_episodes:
            self._index(record)

    # ---- data ---------------------------------------------------------------------------
    @property
    def buffered_episodes(self) -> int:
        return len(self._targets)

    def _index(self, record: EpisodeRecord) -> int:
        if record.episode_id in self.sampler:
            return 0
        arrays = self._assembler.episode_arrays(record.episode_id)
        targets = self.algorithm.targets(arrays, record.meta())
        self._targets[record.episode_id] = targets
        self._instructions[record.episode_id] = record.instruction
        if record.source == DataSource.ONLINE:
            actors = np.asarray(arrays["actors"])
            rate = float(np.mean(actors == Actor.HUMAN))
            self.sampler.record_outcome(record.task_id, record.success, rate)
            self._outcomes[record.task_id].append((record.success, rate))
            if self.version is not None:
                self._staleness.append(self.version - int(np.max(arrays["policy_versions"])))
        return self.sampler.add_episode(record.episode_id, record.task_id, record.source, targets.trainable_steps)

    def notify_new_episodes(self) -> None:
        """New episodes may be in the source: index them before the next update and end an idle wait.

        Thread-safe and cheap (the ingest path calls it after every commit); the loop's own
        thread reads the source, so the caller never waits for the trainer.
        """
        self._episodes_pending.set()

    def poll(self) -> int:
        """Index episodes ingested since the last poll; returns how many were new."""
        self._episodes_pending.clear()  # before reading: a commit during the read sets it again
        records = list(self._episodes.new_episodes(self._last_seq))
        self.source_reads += 1
        added = 0
        for record in records:
            self._last_seq = max(self._last_seq, record.seq)
            if record.episode_id not in self.sampler:
                self._index(record)
                added += 1
        self._last_poll = self._clock()
        if added:
            _LOG.info("indexed %d new episode(s); buffer holds %d", added, len(self._targets))
        return added

    # ---- training -----------------------------------------------------------------------
    def step(self) -> dict[str, Any]:
        """One optimizer update on a freshly sampled batch; returns its metrics."""
        refs = self.sampler.sample(self.config.batch_size)
        batch = self._assembler.build(refs, self._targets, self._instructions)
        self._module.train()
        loss, metrics = self._module(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.grad_clip_norm)
        self.optimizer.step()
        if self.weight_average is not None:
            self.weight_average.update(self.policy)
        per_sample = metrics.pop(PER_SAMPLE_LOSS).float().cpu().numpy()
        self.sampler.record_losses(refs, per_sample)
        self.updates += 1
        self._since_publish += 1
        self._accumulate(refs, float(loss.detach()), per_sample, metrics)
        return {"loss": float(loss.detach()), **metrics}

    def maybe_publish(self) -> Optional[Any]:
        due = self._since_publish >= self.config.publish_every_updates or (
            self._since_publish > 0 and self._clock() - self._last_publish_t >= self.config.publish_every_s
        )
        return self.publish() if due else None

    def run(
        self,
        max_updates: Optional[int] = None,
        max_seconds: Optional[float] = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> int:
        """Train until a limit or should_stop(); returns the number of updates done in this call."""
        start_updates, start_t = self.updates, self._clock()
        while not should_stop():
            if max_updates is not None and self.updates - start_updates >= max_updates:
                break
            if max_seconds is not None and self._clock() - start_t >= max_seconds:
                break
            if self._episodes_pending.is_set() or self._poll_due():
                self.poll()
            if not self.sampler.tasks():
                deadline = None if max_seconds is None else start_t + max_seconds
                self._idle_wait(deadline)
                continue
            self.step()
            self.maybe_publish()
        return self.updates - start_updates

    def _poll_due(self) -> bool:
        return self._last_poll is None or self._clock() - self._last_poll >= self.config.poll_interval_s

    def _idle_wait(self, deadline: Optional[float]) -> None:
        """Nothing to sample yet: wait for notify_new_episodes(), the safety-net poll or the deadline.

        Capped at _IDLE_CHECK_S so that a should_stop() nobody signals is still seen soon.
        """
        now = self._clock()
        timeout = min(self._last_poll + self.config.poll_interval_s - now, _IDLE_CHECK_S)
        if deadline is not None:
            timeout = min(timeout, deadline - now)
        self._episodes_pending.wait(max(timeout, _MIN_IDLE_WAIT_S))

    # ---- checkpoints --------------------------------------------------------------------
    def publish(self) -> Optional[Any]:
        """Publish weights + train state (rank 0 only); calls on_checkpoint(manifest)."""
        self._since_publish = 0
        self._last_publish_t = self._clock()
        if self.rank != 0:
            return None
        opt_tensors, opt_meta = optimizer_to_tensors(self.optimizer)
        train_state = {**opt_tensors, "rng/torch": torch.get_rng_state()}
        published = self.policy
        if self.weight_average is not None:
            published = self.weight_average.published(self.policy)
            train_state.update(raw_weights_state(self.policy))  # training resumes from these, not the average
        meta = {
            "updates": self.updates,
            "optimizer": opt_meta,
            "sampler": self.sampler.state_dict(),
            "algorithm": self.algorithm.state_dict(),
        }
        metrics = {k: v for k, v in self._recent_metrics().items()}
        manifest = self._checkpoints.publish(
            published.checkpoint_tensors(),
            algorithm=self.algorithm.name,
            training_step=self.updates,
            metrics=metrics,
            parent_version=self.version,
            train_state=train_state,
            train_state_meta=meta,
        )
        self.version = manifest_version(manifest)
        _LOG.info("published checkpoint version %d at update %d", self.version, self.updates)
        if self._on_checkpoint is not None:
            self._on_checkpoint(manifest)
        return manifest

    def resume(self) -> bool:
        """Load the latest checkpoint's weights and train state; False when there is none."""
        manifest = self._checkpoints.latest()
        if manifest is None:
            return False
        version = manifest_version(manifest)
        tensors = dict(self._checkpoints.load_tensors(version))
        saved_config = config_from_tensor(tensors.pop(CONFIG_TENSOR_KEY))
        if saved_config != self.policy.config:
            raise ConfigError(f"checkpoint {version} was trained with a different model config; refusing to resume")
        self.policy.load_tensors(tensors)
        saved = self._checkpoints.load_train_state(version)
        if saved is None:
            self.version = version
            _LOG.warning(
                "checkpoint version %d has no train state; resuming its weights with a fresh optimizer", version
            )
            return True
        state, meta = saved
        raw = raw_weights_from_state(state)
        if raw:  # the checkpoint's weights are the average
            self.policy.load_tensors(raw)
            if self.weight_average is not None:
                self.weight_average.start_from(self.policy, tensors)
        optimizer_from_tensors(self.optimizer, state, meta["optimizer"])
        if "rng/torch" in state:
            torch.set_rng_state(state["rng/torch"].to(torch.uint8))
        self.sampler.load_state_dict(meta["sampler"])
        self.algorithm.load_state_dict(meta["algorithm"])
        self.updates = int(meta["updates"])
        self.version = version
        _LOG.info("resumed from checkpoint version %d (update %d)", version, self.updates)
        return True

    # ---- logging ------------------------------------------------------------------------
    def _accumulate(self, refs: Sequence, loss: float, per_sample: np.ndarray, metrics: Mapping[str, Any]) -> None:
        self._window["loss"].append(loss)
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self._window[key].append(float(value))
        for ref, value in zip(refs, per_sample):
            self._window[f"loss/{ref.task_id}/{ref.source.value}"].append(float(value))
        self._window_updates += 1
        if self._writer is not None and self.rank == 0 and self.updates % self.config.log_every_updates == 0:
            self._log_scalars()

    def _recent_metrics(self) -> dict[str, float]:
        return {k: float(np.mean(v)) for k, v in self._window.items() if v}

    def _log_scalars(self) -> None:
        now = self._clock()
        step = self.updates
        w = self._writer
        for key, value in self._recent_metrics().items():
            w.add_scalar(key if "/" in key else f"train/{key}", value, step)
        w.add_scalar("train/updates_per_s", self._window_updates / max(now - self._window_t, 1e-9), step)
        for key, value in self.sampler.weights().items():
            w.add_scalar(f"sampler/{key}", value, step)
        for (task, source), size in self.sampler.buffer_sizes().items():
            w.add_scalar(f"buffer/{task}/{source.value}_steps", size, step)
        w.add_scalar("buffer/episodes", len(self._targets), step)
        if self._staleness:
            w.add_scalar("fleet/staleness_versions", float(np.mean(self._staleness)), step)
        for task, outcomes in self._outcomes.items():
            labelled = [s for s, _ in outcomes if s is not None]
            if labelled:
                w.add_scalar(f"fleet/{task}/success_rate", float(np.mean(labelled)), step)
            w.add_scalar(f"fleet/{task}/intervention_rate", float(np.mean([r for _, r in outcomes])), step)
        self._window.clear()
        self._window_t, self._window_updates = now, 0
