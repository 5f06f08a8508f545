"""The learner on the virtual clock: ingest, a budget of updates per simulated second, delayed checkpoint delivery.

Built as `sop learner` builds it (LearnerSettings -> training_config -> build_learner_trainer over the
learner data dir's EpisodeStore and CheckpointStore); only the clock differs:
- ingest commits a spooled episode file through the store's verified upload path (staging, sha256,
  validation, index) and wakes the trainer, as the ingest service does;
- `advance(now_ns, until_ns)` first indexes what was committed (trainer.poll), then runs every update
  the budget owes by `until_ns`: update i completes at ceil(i / rate) simulated seconds, the budget is
  the fleet's (robots add data, not compute). Each update is trainer.step() + maybe_publish(), as in
  ContinuousTrainer.run; the trainer's clock is simulated time, so publish_every_s counts simulated
  seconds. While there is nothing to sample the real learner idles: those updates are forfeited.
- a published checkpoint becomes available to the robots `delivery_delay_ns` after its publication
  (announce, download, verify, load); `releases` records both times for every version.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

from sop_ros.core.robot.policy_runner import LoadedPolicy, load_checkpoint
from sop_ros.core.storage.checkpoint_store import CheckpointStore
from sop_ros.core.storage.data_layout import CHECKPOINTS_DIR, EPISODES_DIR
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.core.storage.spool import SpoolEntry
from sop_ros.core.training.learner_training import build_learner_trainer
from sop_ros.core.training.pretrain import ingest_episode_files
from sop_ros.learner.process import training_config
from sop_ros.learner.settings import LearnerSettings

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000


def exact_rate(updates_per_s: float) -> Fraction:
    """The rate as the decimal it was written as: 2.3 is 23/10, not the binary float just below it (whose
    floor(10 s * rate) would be 22)."""
    return Fraction(repr(float(updates_per_s)))


def updates_due(t_ns: int, updates_per_s: Fraction) -> int:
    """Updates a learner at `updates_per_s` has completed after t_ns of simulated time: floor(t * rate), exactly."""
    return (t_ns * updates_per_s.numerator) // (updates_per_s.denominator * NS_PER_S)


def update_done_ns(index: int, updates_per_s: Fraction) -> int:
    """Simulated time at which update `index` (1-based) completes: the first ns where updates_due reaches it."""
    return math.ceil(Fraction(index * NS_PER_S) / updates_per_s)


@dataclasses.dataclass(frozen=True)
class CheckpointRelease:
    version: int
    content_hash: str
    training_step: int
    published_ns: int  # simulated time of publication (0: a checkpoint the run started with)
    available_ns: int  # from here on robots may load it (publication + delivery delay)


class VirtualLearner:
    def __init__(
        self,
        learner_dir: Path,
        settings: LearnerSettings,
        updates_per_s: float,
        delivery_delay_ns: int,
    ):
        if not updates_per_s > 0 or delivery_delay_ns < 0:
            raise ValueError(
                f"updates_per_s must be positive, delivery_delay_ns >= 0; got {updates_per_s}, {delivery_delay_ns}"
            )
        self.rate = exact_rate(updates_per_s)
        self.delivery_delay_ns = int(delivery_delay_ns)
        self.episode_store = EpisodeStore(learner_dir / EPISODES_DIR, cache_in_background=False)
        self.checkpoint_store = CheckpointStore(learner_dir / CHECKPOINTS_DIR)
        self._sim_ns = 0
        self.budget_spent = 0  # updates the budget has paid for: done or, with nothing to sample, idle
        self.idle_updates = 0
        self._pending = False
        self._delivered = -1  # index into releases of the newest delivered
        self.releases: list[CheckpointRelease] = []
        start = self.checkpoint_store.latest()
        if start is None:
            raise ValueError(f"{self.checkpoint_store.root}: no checkpoint to start the robots with")
        self.releases.append(CheckpointRelease(start.version, start.content_hash, start.training_step, 0, 0))
        self.trainer: Any = None
        if settings.train:
            self.trainer = build_learner_trainer(
                training_config(settings),
                learner_dir,
                self.episode_store,
                self.checkpoint_store,
                on_checkpoint=self._on_checkpoint,
                clock=lambda: self._sim_ns / NS_PER_S,
            )

    @property
    def updates(self) -> int:
        return self.budget_spent - self.idle_updates

    def ingest(self, entry: SpoolEntry) -> None:
        """Commit a robot's spooled episode (verified, fsynced, indexed) and wake the trainer."""
        ingest_episode_files(self.episode_store, [entry.path])
        if self.trainer is not None:
            self.trainer.notify_new_episodes()
            self._pending = True

    def advance(self, now_ns: int, until_ns: int) -> None:
        """Index what was committed by now_ns, then run the updates the budget owes by until_ns."""
        if self.trainer is None:
            return
        self._sim_ns = now_ns
        if self._pending:
            self._pending = False
            self.trainer.poll()
        due = updates_due(until_ns, self.rate)
        while self.budget_spent < due:
            self.budget_spent += 1
            self._sim_ns = update_done_ns(self.budget_spent, self.rate)
            if not self.trainer.sampler.tasks():
                self.idle_updates += 1  # nothing to sample yet: the real learner waits
                continue
            self.trainer.step()
            self.trainer.maybe_publish()

    def _on_checkpoint(self, manifest: Any) -> None:
        self.releases.append(
            CheckpointRelease(
                manifest.version,
                manifest.content_hash,
                manifest.training_step,
                self._sim_ns,
                self._sim_ns + self.delivery_delay_ns,
            )
        )

    def delivery(self, now_ns: int) -> Optional[LoadedPolicy]:
        """The newest checkpoint that reached the robots by now_ns and was not delivered yet, verified and loaded.

        Robots only ever take a newer version (PolicySlot), so of several arriving at once only the newest counts.
        """
        newest = self._delivered
        for i in range(self._delivered + 1, len(self.releases)):
            if self.releases[i].available_ns <= now_ns:
                newest = i
        if newest == self._delivered:
            return None
        self._delivered = newest
        release = self.releases[newest]
        path = self.checkpoint_store.weights_path(release.version)
        return load_checkpoint(path, release.content_hash, release.version)

    def close(self) -> None:
        self.episode_store.close()
