"""Base-policy pretraining: behaviour cloning on the offline demos until evaluated success stops rising.

The loop drives a ContinuousTrainer (algorithm `bc`, offline buffer only) by single updates; every
`eval_every_updates` updates it pauses, evaluates the current weights in closed loop (the caller's
`evaluate_policy`, e.g. parallel simulation workers) and keeps an in-memory snapshot of the best one
(weights + the trainer's own resume state). It stops after `patience` evaluations without a new best
mean success, at `max_seconds` or at `max_updates`, and publishes the best snapshot as the store's
first checkpoint (algorithm "bc", no parent, eval success per task in the metrics), so the online
learner resumes from it with the same optimizer and sampler state.

Model selection uses its own scene seeds (`VALIDATION_SEED`), disjoint from the demo scenes and from
`sop eval`'s default seeds, so the success `sop eval` reports for v1 is not inflated by the selection.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sop_ros.core.algorithms.registry import make_algorithm
from sop_ros.core.episodes.episode_file import EPISODE_SUFFIX, EpisodeFileError, read_episode_metadata
from sop_ros.core.episodes.hashing import file_sha256
from sop_ros.core.evaluation.harness import EvalReport
from sop_ros.core.model.vla import VLAPolicy
from sop_ros.core.storage.checkpoint_store import CheckpointManifest, CheckpointStore
from sop_ros.core.storage.data_layout import CHECKPOINTS_DIR, OFFLINE_DIR
from sop_ros.core.storage.episode_index import StoredEpisode
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.core.training.pretrain_snapshot import Snapshot, SnapshotSink
from sop_ros.core.training.sampler import TaskAwareSampler
from sop_ros.core.training.store_adapters import NoOnlineEpisodes, offline_records
from sop_ros.core.training.trainer import ContinuousTrainer, TrainerConfig

_LOG = logging.getLogger(__name__)

# A learner data dir holds episodes/ (fleet uploads) and checkpoints/ (sop_ros.link.server.open_stores);
# the offline buffer (demos) lives next to them.
OFFLINE_STORE_DIRNAME = OFFLINE_DIR  # the learner reads its offline buffer here (core.data_layout)
CHECKPOINT_STORE_DIRNAME = CHECKPOINTS_DIR
# Scene seeds for model selection: demos use 0.., `sop eval` 1,000,000.., so these overlap neither.
VALIDATION_SEED = 2_000_000
ALGORITHM = "bc"


class PretrainError(ValueError):
    """Pretraining cannot start (no demos, a non-empty checkpoint store, a bad setting)."""


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    max_seconds: float = 900.0  # wall-clock budget of training + evaluations
    eval_every_updates: int = 1000  # `sop pretrain`'s default before it read this field (the recorded bases)
    # Evaluations in a row without a new best mean success before stopping. 5, not 3: with 10 validation
    # episodes per task the mean moves by +-0.15 between evaluations of similar weights, and patience 3
    # stopped a 20-demo run after 6,000 updates with its best at 1,500 (docs/RESULTS.md, "Base policy").
    patience: int = 5
    min_improvement: float = 0.0  # a new best must beat the old one by more than this
    max_updates: Optional[int] = None

    def __post_init__(self) -> None:
        if self.max_seconds <= 0:
            raise PretrainError(f"max_seconds must be positive, got {self.max_seconds}")
        if self.eval_every_updates <= 0:
            raise PretrainError(f"eval_every_updates must be positive, got {self.eval_every_updates}")
        if self.patience <= 0:
            raise PretrainError(f"patience must be positive, got {self.patience}")
        if self.min_improvement < 0:
            raise PretrainError(f"min_improvement must be >= 0, got {self.min_improvement}")
        if self.max_updates is not None and self.max_updates <= 0:
            raise PretrainError(f"max_updates must be positive or None, got {self.max_updates}")


@dataclasses.dataclass(frozen=True)
class EvalPoint:
    """One evaluation during pretraining."""

    updates: int
    elapsed_s: float  # since the start of training
    eval_s: float  # how long the evaluation took
    report: EvalReport
    train_loss: Optional[float]

    @property
    def mean_success(self) -> float:
        return self.report.overall_success_rate

    def as_dict(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "elapsed_s": round(self.elapsed_s, 3),
            "eval_s": round(self.eval_s, 3),
            "mean_success": self.mean_success,
            "train_loss": self.train_loss,
            "success": {t.task_id: t.success_rate for t in self.report.tasks},
        }


@dataclasses.dataclass(frozen=True)
class PretrainResult:
    manifest: CheckpointManifest
    best: EvalPoint
    history: tuple[EvalPoint, ...]
    stop_reason: str  # "plateau" | "time" | "max_updates"
    updates: int  # total updates done (the published snapshot may be older: best.updates)
    elapsed_s: float


# ---- offline buffer -----------------------------------------------------------------------------
def episode_files(directory: Path) -> list[Path]:
    """The episode files (sop collect's output) directly inside `directory`, sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(EPISODE_SUFFIX))


def ingest_episode_files(store: EpisodeStore, paths: Iterable[Path]) -> list[StoredEpisode]:
    """Commit episode files into `store` through its verified upload path; idempotent for stored ones."""
    stored = []
    for path in paths:
        path = Path(path)
        try:
            meta = read_episode_metadata(path)
        except EpisodeFileError as exc:
            raise PretrainError(f"demo file {path}: {exc}") from None
        episode_id = meta["episode_id"]
        existing = store.get(episode_id)
        if existing is None:
            store.discard_staged(episode_id)  # a leftover partial copy from an interrupted ingest
            store.append_staged(episode_id, 0, path.read_bytes())
            existing = store.commit(episode_id, file_sha256(path), meta["robot_id"])
        stored.append(existing)
    return stored


def make_bc_trainer(
    offline_store: EpisodeStore,
    policy: VLAPolicy,
    trainer_config: TrainerConfig,
    summary_writer: Any = None,
) -> ContinuousTrainer:
    """A ContinuousTrainer running `bc` on every episode of the offline store (no online source)."""
    records = offline_records(offline_store)
    if not records:
        raise PretrainError(f"offline store {offline_store.root} holds no episodes")
    algorithm = make_algorithm(ALGORITHM, {"chunk_size": policy.config.chunk_size})
    return ContinuousTrainer(
        trainer_config,
        policy,
        algorithm,
        TaskAwareSampler(seed=trainer_config.seed),
        NoOnlineEpisodes(),
        offline_store,
        SnapshotSink(),
        offline_episodes=records,
        summary_writer=summary_writer,
    )


# ---- the loop ---------------------------------------------------------------------------------
def eval_metrics(report: EvalReport) -> dict[str, float]:
    """Checkpoint-manifest metrics of an evaluation: success and 95% CI per task, and the mean."""
    metrics = {"eval/mean_success": report.overall_success_rate}
    for t in report.tasks:
        metrics[f"eval/{t.task_id}/success"] = t.success_rate
        metrics[f"eval/{t.task_id}/ci_low"] = t.ci_low
        metrics[f"eval/{t.task_id}/ci_high"] = t.ci_high
        metrics[f"eval/{t.task_id}/episodes"] = float(t.episodes)
    return metrics


def pretrain(
    trainer: ContinuousTrainer,
    evaluate_policy: Callable[[VLAPolicy], EvalReport],
    checkpoints: CheckpointStore,
    config: PretrainConfig,
    *,
    summary_writer: Any = None,
    extra: Optional[Mapping[str, Any]] = None,
    on_update: Optional[Callable[[int, float, float], None]] = None,
    on_eval: Optional[Callable[[EvalPoint, bool], None]] = None,
    clock: Callable[[], float] = time.monotonic,
) -> PretrainResult:
    """Train by BC until the evaluated mean success stops rising; publish the best as the first checkpoint.

    on_update(updates, loss, elapsed_s) after every update; on_eval(point, is_new_best) after every evaluation.
    """
    sink = _snapshot_sink_of(trainer, checkpoints)
    run = _PretrainRun(trainer, evaluate_policy, config, sink, summary_writer, on_eval, clock)
    stop_reason = run.train(on_update)
    return _publish_best(run, checkpoints, config, stop_reason, extra)


def _snapshot_sink_of(trainer: ContinuousTrainer, checkpoints: CheckpointStore) -> SnapshotSink:
    """The trainer's in-memory sink, after checking the trainer and the store can start a pretraining."""
    if not isinstance(trainer._checkpoints, SnapshotSink):  # noqa: SLF001 - we built it in make_bc_trainer
        raise PretrainError("pretrain() needs a trainer from make_bc_trainer()")
    if trainer.algorithm.name != ALGORITHM:
        raise PretrainError(f"pretrain trains '{ALGORITHM}', the trainer runs '{trainer.algorithm.name}'")
    existing = checkpoints.versions()
    if existing:
        raise PretrainError(
            f"checkpoint store {checkpoints.root} already holds versions {existing[:5]}; "
            "the base policy must be the first (use a fresh data dir)"
        )
    return trainer._checkpoints  # noqa: SLF001


class _PretrainRun:
    """One pretraining loop: BC updates, periodic evaluations, and the best snapshot so far."""

    def __init__(
        self,
        trainer: ContinuousTrainer,
        evaluate_policy: Callable[[VLAPolicy], EvalReport],
        config: PretrainConfig,
        sink: SnapshotSink,
        summary_writer: Any,
        on_eval: Optional[Callable[[EvalPoint, bool], None]],
        clock: Callable[[], float],
    ):
        self.trainer = trainer
        self.evaluate_policy = evaluate_policy
        self.config = config
        self.sink = sink
        self.summary_writer = summary_writer
        self.on_eval = on_eval
        self.clock = clock
        self.start = clock()
        self.history: list[EvalPoint] = []
        self.best: Optional[EvalPoint] = None
        self.best_snapshot: Optional[Snapshot] = None
        self.since_best = 0
        self.losses: list[float] = []  # training losses since the last evaluation
        self.start_updates = trainer.updates

    def train(self, on_update: Optional[Callable[[int, float, float], None]]) -> str:
        """Update until a stop condition; returns the stop reason ("plateau" | "time" | "max_updates")."""
        trainer, config = self.trainer, self.config
        stop_reason = ""
        while True:
            if config.max_updates is not None and trainer.updates - self.start_updates >= config.max_updates:
                stop_reason = "max_updates"
            elif self.clock() - self.start >= config.max_seconds:
                stop_reason = "time"
            if stop_reason:
                if not self.history or self.history[-1].updates != trainer.updates:
                    self.evaluate_now()  # the last weights get their chance too
                return stop_reason
            metrics = trainer.step()
            self.losses.append(float(metrics["loss"]))
            if on_update is not None:
                on_update(trainer.updates, float(metrics["loss"]), self.clock() - self.start)
            if (trainer.updates - self.start_updates) % config.eval_every_updates == 0:
                self.evaluate_now()
                if self.since_best >= config.patience:
                    return "plateau"

    def evaluate_now(self) -> None:
        """Evaluate the current weights; snapshot them when they are the new best."""
        trainer = self.trainer
        t0 = self.clock()
        trainer.policy.eval()
        report = self.evaluate_policy(trainer.policy)
        trainer.policy.train()
        train_loss = float(np.mean(self.losses)) if self.losses else None
        point = EvalPoint(trainer.updates, self.clock() - self.start, self.clock() - t0, report, train_loss)
        self.losses.clear()
        self.history.append(point)
        is_best = self.best is None or point.mean_success > self.best.mean_success + self.config.min_improvement
        if is_best:
            self._snapshot()
            self.best, self.best_snapshot, self.since_best = point, self.sink.last, 0
        else:
            self.since_best += 1
        self._report(point, is_best)

    def _snapshot(self) -> None:
        """Publish into the in-memory snapshot sink (weights + optimizer + sampler state at this update).

        The trainer's "published checkpoint" log line would be misleading here, so it is muted.
        """
        trainer_log = logging.getLogger(ContinuousTrainer.__module__)
        level = trainer_log.level
        trainer_log.setLevel(logging.WARNING)
        try:
            self.trainer.publish()
        finally:
            trainer_log.setLevel(level)

    def _report(self, point: EvalPoint, is_best: bool) -> None:
        """An evaluation to TensorBoard, the log and the caller's on_eval."""
        updates, report = self.trainer.updates, point.report
        if self.summary_writer is not None:
            for key, value in eval_metrics(report).items():
                self.summary_writer.add_scalar(key, value, updates)
            self.summary_writer.add_scalar("eval/best_mean_success", self.best.mean_success, updates)
            self.summary_writer.flush()
        _LOG.info(
            "update %d: eval mean success %.3f (%s)%s",
            updates,
            point.mean_success,
            ", ".join(f"{t.task_id} {t.success_rate:.2f}" for t in report.tasks),
            " new best" if is_best else f", {self.since_best} without improvement",
        )
        if self.on_eval is not None:
            self.on_eval(point, is_best)


def _publish_best(
    run: _PretrainRun,
    checkpoints: CheckpointStore,
    config: PretrainConfig,
    stop_reason: str,
    extra: Optional[Mapping[str, Any]],
) -> PretrainResult:
    """Publish the run's best snapshot as the store's first checkpoint, its evaluations in the manifest."""
    best, best_snapshot, trainer = run.best, run.best_snapshot, run.trainer
    assert best is not None and best_snapshot is not None
    elapsed = run.clock() - run.start
    metrics = {**{f"train/{k}": v for k, v in best_snapshot.metrics.items()}, **eval_metrics(best.report)}
    metrics["pretrain/elapsed_s"] = elapsed
    info = {
        "pretrain": {
            "stop_reason": stop_reason,
            "total_updates": trainer.updates,
            "best_updates": best.updates,
            "config": dataclasses.asdict(config),
            "history": [p.as_dict() for p in run.history],
            **dict(extra or {}),
        }
    }
    manifest = checkpoints.publish(
        best_snapshot.tensors,
        algorithm=ALGORITHM,
        training_step=best_snapshot.training_step,
        metrics=metrics,
        parent_version=None,
        extra=info,
        train_state=best_snapshot.train_state,
        train_state_meta=best_snapshot.train_state_meta,
    )
    _LOG.info(
        "published base policy v%d (update %d, mean success %.3f; stopped: %s)",
        manifest.version,
        best.updates,
        best.mean_success,
        stop_reason,
    )
    return PretrainResult(manifest, best, tuple(run.history), stop_reason, trainer.updates, elapsed)


def demo_counts(records: Sequence[StoredEpisode]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.task_id] = counts.get(r.task_id, 0) + 1
    return counts
