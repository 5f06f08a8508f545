"""LearnerProcess: the learner's parts wired in one place, with a start/stop lifecycle.

    process = LearnerProcess(settings)
    process.start()       # serve Ingest/Policy/Fleet over the stores; train and announce checkpoints
    process.wait()        # until request_stop() (a signal handler calls it)
    process.stop()        # stop training, refuse new calls, drain in-flight uploads, close the stores

Every committed upload wakes the trainer (ingest's on_episode_committed -> notify_new_episodes),
so a new episode reaches the sampler before the next update; each published checkpoint is
announced to the watching robots and old ones are pruned.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Optional

from sop_ros.core.episodes.episode_limits import DEFAULT_EPISODE_LIMITS, EpisodeLimits
from sop_ros.core.robot.tasks import load_task_specs
from sop_ros.core.storage.data_layout import CHECKPOINTS_DIR, TENSORBOARD_DIR
from sop_ros.core.training.learner_training import LearnerTrainingConfig, build_learner_trainer, nothing_to_train
from sop_ros.learner.settings import LearnerSettings
from sop_ros.link import options
from sop_ros.link.server import LearnerService, create_server, open_stores
from sop_ros.resources import default_tasks_path

_LOGGER = logging.getLogger(__name__)
_TRAINER_JOIN_S = 60.0  # one update plus a checkpoint write; a stuck trainer must not block the drain


def training_config(settings: LearnerSettings) -> LearnerTrainingConfig:
    algorithm_config = {}
    if settings.algorithm == "recap":  # RECAP normalises returns by each task's step budget
        specs = load_task_specs(settings.tasks_file or default_tasks_path())
        algorithm_config["task_max_steps"] = {task_id: spec.max_steps for task_id, spec in specs.items()}
    return LearnerTrainingConfig(
        algorithm=settings.algorithm,
        algorithm_config=algorithm_config,
        trainer=settings.trainer_config(),
        seed=settings.seed,
    )


def episode_admission(settings: LearnerSettings) -> tuple[EpisodeLimits, frozenset[str]]:
    """What this learner accepts from robots: episodes of its fleet's tasks (the task file) that its model can
    train on (the state and action sizes of its latest checkpoint, or of the preset it would train from scratch;
    a learner that neither trains nor has a checkpoint only stores, within the size bounds)."""
    from sop_ros.core.storage.checkpoint_store import CheckpointStore
    from sop_ros.core.training.learner_training import model_config_of

    specs = load_task_specs(settings.tasks_file or default_tasks_path())
    checkpoints = CheckpointStore(settings.data_dir / CHECKPOINTS_DIR)
    limits = DEFAULT_EPISODE_LIMITS
    if settings.train or checkpoints.latest() is not None:
        model = model_config_of(checkpoints)
        limits = dataclasses.replace(limits, state_dim=model.state_dim, action_dim=model.action_dim)
    return limits, frozenset(specs)


class NothingToTrainError(RuntimeError):
    """Training was asked for but the algorithm can never draw a sample from this data dir."""


class LearnerProcess:
    def __init__(self, settings: LearnerSettings):
        self.settings = settings
        self.service: Optional[LearnerService] = None
        self.trainer = None  # a ContinuousTrainer while training
        self.port: Optional[int] = None
        self._server = None
        self._writer = None
        self._trainer_thread: Optional[threading.Thread] = None
        self._housekeeping_thread: Optional[threading.Thread] = None
        self._stop_requested = threading.Event()
        self._training_failed = threading.Event()
        self._stopped = False

    @property
    def training_failed(self) -> bool:
        """True once training ended with an error (the link kept serving uploads)."""
        return self._training_failed.is_set()

    def start(self) -> None:
        """Serve, then train; raises NothingToTrainError (before touching data_dir) or OSError (cannot listen)."""
        settings = self.settings
        if settings.train:
            # Refuse at start rather than serve as a learner that silently never trains: the operator
            # sees the reason and exit status at once (systemd, `sop launch`) instead of discovering
            # hours later that no checkpoint came. Nothing is lost meanwhile: robots keep episodes in
            # their spools until a learner takes them. Serving without training is --no-train.
            reason = nothing_to_train(settings.algorithm, settings.data_dir)
            if reason is not None:
                raise NothingToTrainError(reason)
        limits, task_ids = episode_admission(settings)
        stores = open_stores(settings.data_dir, settings.server.max_episode_bytes, limits, task_ids)
        self.service = LearnerService(settings.server, *stores)
        try:
            self._server, self.port = create_server(self.service)
            self._server.start()
            _LOGGER.info(
                "learner serving on %s (port %d), data in %s, %d worker threads",
                settings.server.address,
                self.port,
                settings.data_dir,
                options.worker_threads(settings.server.expected_robots),
            )
            self._housekeeping_thread = threading.Thread(
                target=self._housekeeping, name="sop-housekeeping", daemon=True
            )
            self._housekeeping_thread.start()
            if settings.train:
                self._start_training()
        except BaseException:
            self.stop()
            raise

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until request_stop() (or timeout); True when a stop was requested."""
        return self._stop_requested.wait(timeout)

    def request_stop(self) -> None:
        """Ask the process to stop (safe from a signal handler); stop() does the work."""
        self._stop_requested.set()
        if self.trainer is not None:
            self.trainer.notify_new_episodes()  # ends an idle wait so the loop sees should_stop at once

    def stop(self) -> None:
        """Stop training, then refuse new calls and drain in-flight ones for the server's grace period."""
        self.request_stop()
        if self._stopped:
            return
        self._stopped = True
        if self._trainer_thread is not None:
            self._trainer_thread.join(timeout=_TRAINER_JOIN_S)
            if self._trainer_thread.is_alive():
                _LOGGER.warning("the trainer did not stop within %.0f s; stopping the link anyway", _TRAINER_JOIN_S)
            self._trainer_thread = None
        if self._housekeeping_thread is not None:
            self._housekeeping_thread.join(timeout=_TRAINER_JOIN_S)
            self._housekeeping_thread = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._server is not None:
            _LOGGER.info("stopping: draining in-flight calls for up to %.1f s", self.settings.server.shutdown_grace_s)
            self.service.stop(self._server)
            self._server = None
        if self.service is not None:
            self.service.episode_store.close()

    def __enter__(self) -> LearnerProcess:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- training -----------------------------------------------------------------------
    def _start_training(self) -> None:
        import torch
        from torch.utils.tensorboard import SummaryWriter

        settings = self.settings
        torch.set_num_threads(settings.torch_threads)
        self._writer = SummaryWriter(log_dir=str(settings.data_dir / TENSORBOARD_DIR))
        self.trainer = build_learner_trainer(
            training_config(settings),
            settings.data_dir,
            self.service.episode_store,
            self.service.checkpoint_store,
            on_checkpoint=self._announce,
            summary_writer=self._writer,
        )
        self.service.on_episode_committed.append(self._on_episode_committed)
        latest = self.service.checkpoint_store.latest()
        if latest is not None:
            self.service.publish_checkpoint(latest)  # robots joining now get the current policy
        self._trainer_thread = threading.Thread(target=self._train, name="sop-trainer", daemon=True)
        self._trainer_thread.start()
        _LOGGER.info(
            "training %s continuously; TensorBoard logs in %s", settings.algorithm, settings.data_dir / TENSORBOARD_DIR
        )

    def _housekeeping(self) -> None:
        """Remove abandoned uploads at start-up and then a few times per their expiry age."""
        age = self.settings.server.stale_staging_s
        while True:
            try:
                self.service.ingest.expire_stale(age)
            except Exception:  # housekeeping must never take the link down
                _LOGGER.exception("removing abandoned uploads failed; trying again later")
            if self._stop_requested.wait(min(age / 4, 3600.0)):
                return

    def _on_episode_committed(self, _stored_episode: Any) -> None:
        self.trainer.notify_new_episodes()

    def _announce(self, manifest: Any) -> None:
        self.service.publish_checkpoint(manifest)
        if self.settings.keep_checkpoints > 0:
            self.service.checkpoint_store.prune(self.settings.keep_checkpoints)

    def _train(self) -> None:
        try:
            self.trainer.run(should_stop=self._stop_requested.is_set)
        except Exception:  # keep serving: robots' uploads stay safe even if training breaks
            _LOGGER.exception("training stopped with an error; the learner keeps serving uploads")
            self._training_failed.set()
