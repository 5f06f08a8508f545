"""Offline check of RECAP's value function: does it rank unseen steps by how well they will end?

The stored, success-labelled episodes are split by episode (stratified by task and outcome, so
no frame of a held-out episode is trained on and both splits hold successes and failures). The
value network is trained on the training split with RECAP's own loss through the
ContinuousTrainer; by default the policy weights are frozen meanwhile, which is SOP's setting
(the value function is pre-trained on its own and then frozen, RecapConfig.train_value). Then
E[V] is predicted for every step of the held-out episodes and compared with the true normalised
return RECAP assigns to that step (its `return` target):

- spearman: rank correlation between predicted value and true return over all held-out steps;
- success_over_failure: the probability that a random step of a successful held-out episode
  gets a higher value than a random step of a failed one (ties count 1/2; the AUC of V as a
  success detector), None when the held-out split lacks one of the two outcomes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import torch
from scipy.stats import mannwhitneyu, spearmanr

from sop_ros.core.algorithms.recap import Recap
from sop_ros.core.model.vla import VLAPolicy
from sop_ros.core.training.protocols import EpisodeArrays, EpisodeRecord
from sop_ros.core.training.sampler import TaskAwareSampler
from sop_ros.core.training.store_adapters import NoOnlineEpisodes
from sop_ros.core.training.trainer import ContinuousTrainer, TrainerConfig

_LOG = logging.getLogger(__name__)

VALUE_NET_PREFIX = "value_net."  # VLAPolicy parameter names of the value network


class ValueEvalError(ValueError):
    """The episodes or settings cannot give a value-ranking measurement."""


@dataclasses.dataclass(frozen=True)
class ValueEvalConfig:
    updates: int = 300
    batch_size: int = 32
    learning_rate: float = 1e-3  # the value network starts from scratch; higher than fine-tuning's 3e-4
    heldout_fraction: float = 0.3  # of each (task, outcome) group, rounded up
    freeze_policy: bool = True  # train only the value network (SOP pre-trains it on its own)
    predict_batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.updates <= 0 or self.batch_size <= 0 or self.predict_batch_size <= 0:
            raise ValueEvalError("updates, batch_size and predict_batch_size must be positive")
        if self.learning_rate <= 0:
            raise ValueEvalError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueEvalError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")


@dataclasses.dataclass(frozen=True)
class ValueTraining:
    updates: int
    seconds: float
    first_value_loss: float  # mean over the first tenth of the updates
    last_value_loss: float  # mean over the last tenth


@dataclasses.dataclass(frozen=True)
class ValueRanking:
    spearman: float
    success_over_failure: Optional[float]
    heldout_steps: int
    heldout_episodes: int
    heldout_successes: int
    train_episodes: int
    training: ValueTraining
    per_task_spearman: Mapping[str, float]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def split_episodes(
    records: Sequence[EpisodeRecord], heldout_fraction: float, seed: int = 0
) -> tuple[list[EpisodeRecord], list[EpisodeRecord]]:
    """(train, held-out) by episode; each (task, success) group gives ceil(fraction * n) to held-out,
    keeping at least one episode of every group with two or more in training.

    Deterministic for a given input order and seed (episode ids are random UUIDs, so order the
    records by something reproducible, e.g. recording time, when the split must repeat)."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueEvalError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    unlabelled = [r.episode_id for r in records if r.success is None]
    if unlabelled:
        raise ValueEvalError(f"episodes without a success label give no value targets: {unlabelled[:3]}")
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, bool], list[EpisodeRecord]] = {}
    for record in records:
        groups.setdefault((record.task_id, bool(record.success)), []).append(record)
    train, heldout = [], []
    for key in sorted(groups):
        group = groups[key]
        order = rng.permutation(len(group))
        n_out = min(math.ceil(heldout_fraction * len(group)), len(group) - 1) if len(group) > 1 else 0
        heldout += [group[i] for i in order[:n_out]]
        train += [group[i] for i in order[n_out:]]
    return train, heldout


class _NoCheckpoints:
    """This measurement publishes nothing; a publish would be a bug."""

    def publish(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("value evaluation does not publish checkpoints")

    def latest(self) -> None:
        return None

    def load_tensors(self, version: int) -> Any:
        raise KeyError(version)

    def load_train_state(self, version: int) -> Any:
        raise KeyError(version)


def _check_recap(policy: VLAPolicy, algorithm: Any) -> Recap:
    if not isinstance(algorithm, Recap):
        raise ValueEvalError(
            f"value evaluation needs the recap algorithm, got {getattr(algorithm, 'name', type(algorithm).__name__)!r}"
        )
    if not algorithm.config.train_value:
        raise ValueEvalError("recap config has train_value=False: the value network would not be trained")
    algorithm.check_model(policy.config)
    return algorithm


def train_value_function(
    policy: VLAPolicy,
    algorithm: Recap,
    records: Sequence[EpisodeRecord],
    arrays: EpisodeArrays,
    config: ValueEvalConfig = ValueEvalConfig(),
) -> ValueTraining:
    """`config.updates` ContinuousTrainer updates of RECAP's loss on `records` (value net only when freeze_policy)."""
    _check_recap(policy, algorithm)
    if not records:
        raise ValueEvalError("no training episodes")
    flags = {name: p.requires_grad for name, p in policy.named_parameters()}
    if config.freeze_policy:
        for name, p in policy.named_parameters():
            p.requires_grad_(name.startswith(VALUE_NET_PREFIX))
    try:
        trainer = ContinuousTrainer(
            TrainerConfig(batch_size=config.batch_size, learning_rate=config.learning_rate, seed=config.seed),
            policy,
            algorithm,
            TaskAwareSampler(seed=config.seed),
            NoOnlineEpisodes(),
            arrays,
            _NoCheckpoints(),
            offline_episodes=records,
        )
        losses = []
        start = time.perf_counter()
        for _ in range(config.updates):
            losses.append(float(trainer.step()["value_loss"]))
        seconds = time.perf_counter() - start
    finally:
        for name, p in policy.named_parameters():
            p.requires_grad_(flags[name])
    tenth = max(1, len(losses) // 10)
    result = ValueTraining(len(losses), seconds, float(np.mean(losses[:tenth])), float(np.mean(losses[-tenth:])))
    _LOG.info(
        "value training: %d updates in %.1f s, value loss %.3f -> %.3f",
        result.updates,
        seconds,
        result.first_value_loss,
        result.last_value_loss,
    )
    return result


@torch.no_grad()
def predict_values(
    policy: VLAPolicy, episode_arrays: Mapping[str, np.ndarray], instruction: str, batch_size: int = 128
) -> np.ndarray:
    """E[V] for every step of one episode, float64 [T] (eval mode, no augmentation)."""
    if policy.value_net is None:
        raise ValueEvalError("the policy has no value network (value_bins=0)")
    images, states = episode_arrays["images"], episode_arrays["states"]
    was_training = policy.training
    policy.eval()
    try:
        out = []
        for lo in range(0, int(images.shape[0]), batch_size):
            img = torch.from_numpy(
                np.array(images[lo : lo + batch_size])
            )  # a copy: the store's arrays are read-only memmaps
            st = torch.from_numpy(np.array(states[lo : lo + batch_size], dtype=np.float32)).to(policy.device)
            text = policy.text([instruction]).expand(st.shape[0], -1)
            out.append(policy.expected_value(policy.value_logits(policy.pixels(img), st, text)).cpu().numpy())
    finally:
        policy.train(was_training)
    return np.concatenate(out).astype(np.float64)


def rank_values(predicted: np.ndarray, returns: np.ndarray, successful: np.ndarray) -> tuple[float, Optional[float]]:
    """(Spearman of predicted vs true return, P(V(success step) > V(failure step)) or None)."""
    predicted, returns, successful = (
        np.asarray(predicted, float),
        np.asarray(returns, float),
        np.asarray(successful, bool),
    )
    if not predicted.shape == returns.shape == successful.shape or predicted.ndim != 1:
        raise ValueEvalError("predicted, returns and successful must be 1-d arrays of one length")
    if np.ptp(returns) == 0:
        raise ValueEvalError("every held-out step has the same true return; the ranking is undefined")
    # a constant prediction ranks nothing (spearmanr would warn and give NaN)
    rho = 0.0 if np.ptp(predicted) == 0 else float(spearmanr(predicted, returns).statistic)
    auc = None
    if successful.any() and not successful.all():
        u = mannwhitneyu(predicted[successful], predicted[~successful]).statistic
        auc = float(u / (successful.sum() * (~successful).sum()))
    return rho, auc


def evaluate_value_ranking(
    policy: VLAPolicy,
    algorithm: Recap,
    records: Sequence[EpisodeRecord],
    arrays: EpisodeArrays,
    config: ValueEvalConfig = ValueEvalConfig(),
) -> ValueRanking:
    """Split `records` by episode, train the value function on one part, rank the other's steps."""
    _check_recap(policy, algorithm)
    train, heldout = split_episodes(records, config.heldout_fraction, config.seed)
    if not train or not heldout:
        raise ValueEvalError(f"need episodes in both splits, got {len(train)} train / {len(heldout)} held-out")
    training = train_value_function(policy, algorithm, train, arrays, config)
    predicted, returns, successful, tasks = [], [], [], []
    for record in heldout:
        arrs = arrays.arrays(record.episode_id)
        predicted.append(predict_values(policy, arrs, record.instruction, config.predict_batch_size))
        returns.append(algorithm.targets(arrs, record.meta()).fields["return"].astype(np.float64))
        successful.append(np.full(record.num_steps, bool(record.success)))
        tasks.append(np.full(record.num_steps, record.task_id, dtype=object))
    pred, ret, succ, task = (np.concatenate(x) for x in (predicted, returns, successful, tasks))
    rho, auc = rank_values(pred, ret, succ)
    per_task = {}
    for t in sorted(set(task)):
        sel = task == t
        if np.ptp(ret[sel]) > 0:
            per_task[t] = rank_values(pred[sel], ret[sel], succ[sel])[0]
    report = ValueRanking(
        rho,
        auc,
        int(pred.shape[0]),
        len(heldout),
        sum(bool(r.success) for r in heldout),
        len(train),
        training,
        per_task,
    )
    _LOG.info(
        "value ranking on %d held-out steps: spearman %.3f, success-over-failure %s",
        report.heldout_steps,
        rho,
        "n/a" if auc is None else f"{auc:.3f}",
    )
    return report
