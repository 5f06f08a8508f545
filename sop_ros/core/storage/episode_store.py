"""The learner's durable episode store: resumable upload staging, verified commit, SQLite index, training cache.

Layout under `root`:
    staging/<episode_id>.part             bytes received so far (fsynced at sync_staged(), commit, and every
                                          `sync_every_bytes`; never once per chunk)
    episodes/<id[:2]>/<episode_id>.mcap   the uploaded file, unchanged (source of truth)
    cache/<episode_id>/<field>.npy        decoded arrays for training (np.load(mmap_mode="r"))
    index.sqlite3                         one row per committed episode (WAL, synchronous=FULL)

Commit order (the ack path): sha256 (kept incrementally while bytes arrive; the file is re-hashed when
the learner restarted mid-upload) -> full read_episode validation -> fsync the file -> rename into
episodes/ (+ dir fsyncs) -> insert the index row (one transaction). The index row is the commit point:
recover() (run at open) deletes files and caches without a row, so after a crash an episode is either
fully indexed or absent (and a re-upload works). Only after commit() returns may the ingest service
acknowledge, and only then the robot deletes its copy.

The training cache is not on the ack path: a background thread writes it from the episode commit already
decoded (temp dir, fsync, rename), and arrays() builds it on demand when it is missing (a crash before the
background write, or a full queue). A cache directory exists only complete, so a half-written one is never read.

One process owns a store (the learner); its methods are safe to call from several threads. Work on one
episode is serialised by a per-episode (striped) lock, so robots uploading different episodes do not wait
for each other's commits. The parts live in their own modules: upload_staging (staging/), episode_index
(index.sqlite3, read_index), training_cache (cache/), episode_store_layout (names), episode_store_recovery
(recover()'s orphan and missing-file checks, RecoveryReport).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sop_ros.core.episodes.episode import Episode
from sop_ros.core.episodes.episode_file import EpisodeFileError, read_episode, read_episode_metadata
from sop_ros.core.episodes.episode_limits import DEFAULT_EPISODE_LIMITS, EpisodeLimits
from sop_ros.core.storage.durable_files import fsync_dir
from sop_ros.core.storage.episode_index import EpisodeIndex, StoredEpisode, read_index
from sop_ros.core.storage.episode_store_errors import (
    EpisodeRejectedError,
    EpisodeStoreError,
    OffsetMismatchError,
    RejectionCode,
)
from sop_ros.core.storage.episode_store_layout import (
    CACHE_DIR,
    EPISODES_DIR,
    INDEX_FILE,
    STAGING_DIR,
    check_episode_id,
    episode_file_path,
)
from sop_ros.core.storage.episode_store_recovery import (
    RecoveryReport,
    indexed_without_files,
    remove_orphan_episode_files,
)
from sop_ros.core.storage.training_cache import (
    BackgroundCacheWriter,
    load_cache_arrays,
    remove_orphan_caches,
    write_cache_dir,
)
from sop_ros.core.storage.upload_staging import DEFAULT_SYNC_EVERY_BYTES, UploadStaging

# The store's whole API from one import (the errors, StoredEpisode, read_index and RecoveryReport live in the
# part modules).
__all__ = [
    "EpisodeStore",
    "StoredEpisode",
    "EpisodeStoreError",
    "OffsetMismatchError",
    "RejectionCode",
    "EpisodeRejectedError",
    "RecoveryReport",
    "read_index",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_EPISODE_BYTES = 4 << 30
_LOCK_STRIPES = 64
# Uploads validated at once: each decodes a whole episode, so this (times the limits' max_decoded_bytes)
# bounds the memory commits take, however many robots commit together.
_VALIDATION_SLOTS = 2


class EpisodeStore:
    def __init__(
        self,
        root: str | Path,
        *,
        max_episode_bytes: int = DEFAULT_MAX_EPISODE_BYTES,
        sync_every_bytes: int = DEFAULT_SYNC_EVERY_BYTES,
        cache_in_background: bool = True,
        limits: EpisodeLimits = DEFAULT_EPISODE_LIMITS,
        task_ids: Optional[frozenset[str]] = None,
    ):
        """`limits`: what an upload may declare (a learner's: its model's shapes); `task_ids`: the fleet's tasks."""
        self.root = Path(root)
        self.max_episode_bytes = int(max_episode_bytes)
        self.limits = limits
        self.task_ids = None if task_ids is None else frozenset(task_ids)
        self._validation_slots = threading.BoundedSemaphore(_VALIDATION_SLOTS)
        if sync_every_bytes < 1:
            raise ValueError(f"sync_every_bytes must be >= 1, got {sync_every_bytes}")
        self.sync_every_bytes = int(sync_every_bytes)
        self.staging_dir = self.root / STAGING_DIR
        self.episodes_dir = self.root / EPISODES_DIR
        self.cache_dir = self.root / CACHE_DIR
        for d in (self.root, self.staging_dir, self.episodes_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._episode_locks = [threading.RLock() for _ in range(_LOCK_STRIPES)]
        self._cache_locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._staging = UploadStaging(self.staging_dir, self.sync_every_bytes)
        self._index = EpisodeIndex(self.root / INDEX_FILE, self.episode_path)
        self._cache_writer: Optional[BackgroundCacheWriter] = (
            BackgroundCacheWriter(lambda episode: self.ensure_cache(episode.episode_id, episode))
            if cache_in_background
            else None
        )
        self.last_recovery = self.recover()

    # ------------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Finish the queued cache writes, then close the index."""
        if self._cache_writer is not None:
            self._cache_writer.close()
        self._index.close()

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _episode_lock(self, episode_id: str) -> threading.RLock:
        return self._episode_locks[hash(episode_id) % _LOCK_STRIPES]

    @staticmethod
    @contextlib.contextmanager
    def _all_locks(locks: list) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for lock in locks:  # always in index order: no lock-order inversion
                stack.enter_context(lock)
            yield

    # --------------------------------------------------------------------------------- paths

    def staging_path(self, episode_id: str) -> Path:
        return self._staging.path(episode_id)

    def episode_path(self, episode_id: str) -> Path:
        return episode_file_path(self.episodes_dir, check_episode_id(episode_id))

    def cache_path(self, episode_id: str) -> Path:
        return self.cache_dir / check_episode_id(episode_id)

    # ------------------------------------------------------------------------------- staging

    def staged_offset(self, episode_id: str) -> int:
        """Bytes received for an upload in progress (0 when none); sync_staged() makes them durable."""
        return self._staging.offset(episode_id)

    def append_staged(self, episode_id: str, offset: int, data: bytes) -> int:
        """Append an upload chunk at `offset` (must equal the staged size); return the new offset.

        The bytes reach the page cache now and the disk at the next sync_staged() or commit() (or once
        `sync_every_bytes` are unsynced). A learner crash before that only shortens the staged file:
        the robot resumes from whatever offset BeginEpisode reports after the restart.
        """
        self.staging_path(episode_id)  # a bad episode id fails before any lock
        with self._episode_lock(episode_id):
            current = self.staged_offset(episode_id)
            if offset != current:
                raise OffsetMismatchError(episode_id, offset, current)
            if current + len(data) > self.max_episode_bytes:
                self.discard_staged(episode_id)
                raise EpisodeRejectedError(
                    episode_id,
                    RejectionCode.TOO_LARGE,
                    f"upload exceeds the {self.max_episode_bytes}-byte episode limit",
                )
            return self._staging.append(episode_id, current, data)

    def sync_staged(self, episode_id: str) -> int:
        """fsync the staged bytes of an upload (and its directory entry); return the durable offset (0 when none)."""
        self.staging_path(episode_id)  # a bad episode id fails before any lock
        with self._episode_lock(episode_id):
            return self._staging.sync(episode_id)

    def discard_staged(self, episode_id: str) -> None:
        with self._episode_lock(episode_id):
            self._staging.discard(episode_id)

    def staged_uploads(self) -> dict[str, int]:
        """Uploads in progress: episode id -> staged bytes."""
        return self._staging.uploads()

    def discard_stale_staging(self, older_than_s: float) -> list[str]:
        """Drop uploads nobody appended to for `older_than_s` (a robot that vanished); returns their ids."""
        cutoff = time.time() - older_than_s
        dropped = []
        for eid in self.staged_uploads():
            with self._episode_lock(eid):
                if self._staging.remove_if_untouched_since(eid, cutoff):
                    dropped.append(eid)
        if dropped:
            fsync_dir(self.staging_dir)
            log.warning("discarded %d abandoned upload(s): %s", len(dropped), dropped)
        return dropped

    # -------------------------------------------------------------------------------- commit

    def commit(self, episode_id: str, sha256_hex: str, robot_id: str, task_id: Optional[str] = None) -> StoredEpisode:
        """Verify and store the staged upload; idempotent for an already stored identical episode.

        `task_id`: the task the uploader declared (the file must say the same).

        Returns once the file is validated, fsynced, renamed and indexed (the caller may acknowledge);
        the training cache follows in the background.
        """
        episode_id = check_episode_id(episode_id)
        sha256_hex = sha256_hex.lower()
        with self._episode_lock(episode_id):
            existing = self.get(episode_id)
            if existing is not None:
                self.discard_staged(episode_id)
                if existing.sha256 != sha256_hex:
                    raise EpisodeRejectedError(
                        episode_id, RejectionCode.CONFLICT, "conflicting content for existing episode id"
                    )
                return existing
            size = self.staged_offset(episode_id)
            if size == 0:
                raise EpisodeRejectedError(episode_id, RejectionCode.NOTHING_STAGED, "no staged bytes to commit")
            episode, content_hash = self._verify_staged(episode_id, sha256_hex, robot_id, size, task_id)
            self._staging.move_to(episode_id, self.episode_path(episode_id))
            self._insert(episode, sha256_hex, content_hash, size)
            stored = self.get(episode_id)
            assert stored is not None
            self._schedule_cache(episode)
            log.info(
                "stored episode %s (robot %s, task %s, %d steps, seq %d)",
                episode_id,
                robot_id,
                episode.task_id,
                episode.num_steps,
                stored.ingest_seq,
            )
            return stored

    def _verify_staged(
        self, episode_id: str, sha256_hex: str, robot_id: str, size: int, task_id: Optional[str]
    ) -> tuple[Episode, str]:
        """The staged episode and its content hash, after the checks an upload must pass (else it is discarded)."""

        def reject(code: RejectionCode, reason: str) -> EpisodeRejectedError:
            self.discard_staged(episode_id)
            log.warning("episode %s from robot %s rejected: %s", episode_id, robot_id, reason)
            return EpisodeRejectedError(episode_id, code, reason)

        staging = self.staging_path(episode_id)
        actual = self._staging.sha256(episode_id, size)
        if actual != sha256_hex:
            raise reject(
                RejectionCode.HASH_MISMATCH, f"sha256 mismatch: announced {sha256_hex}, received bytes hash to {actual}"
            )
        try:
            with self._validation_slots:
                episode = read_episode(staging, self.limits)
            content_hash = read_episode_metadata(staging)["content_hash"]  # read_episode checked it against the payload
        except EpisodeFileError as e:
            raise reject(RejectionCode.INVALID_FILE, f"invalid episode file: {e}") from None
        except MemoryError:  # within the limits, yet more than this machine has free now
            raise reject(RejectionCode.TOO_LARGE, "the episode does not fit in the learner's memory") from None
        if episode.episode_id != episode_id:
            raise reject(
                RejectionCode.EPISODE_ID_MISMATCH,
                f"file contains episode id {episode.episode_id}, upload was for {episode_id}",
            )
        if episode.robot_id != robot_id:
            raise reject(
                RejectionCode.ROBOT_MISMATCH, f"file says robot {episode.robot_id!r}, uploader is robot {robot_id!r}"
            )
        if task_id is not None and episode.task_id != task_id:
            raise reject(
                RejectionCode.INVALID_FILE, f"file says task {episode.task_id[:80]!r}, the upload declared {task_id!r}"
            )
        if self.task_ids is not None and episode.task_id not in self.task_ids:
            raise reject(
                RejectionCode.INVALID_FILE,
                f"task {episode.task_id[:80]!r} is not one of this fleet's tasks {sorted(self.task_ids)}",
            )
        return episode, content_hash

    def _insert(self, episode: Episode, sha256_hex: str, content_hash: str, size: int) -> None:
        """The commit point: the episode's index row (a crash test stops the store right before it)."""
        self._index.insert(episode, sha256_hex, content_hash, size)

    # ---------------------------------------------------------------------------- training cache

    def _schedule_cache(self, episode: Episode) -> None:
        """Hand the decoded episode to the cache writer; when it is busy, arrays() builds the cache later."""
        if self._cache_writer is not None:
            self._cache_writer.schedule(episode)

    def wait_for_caches(self) -> None:
        """Block until every queued cache write is done (tests, benchmarks, orderly shutdown)."""
        if self._cache_writer is not None:
            self._cache_writer.wait()

    def ensure_cache(self, episode_id: str, episode: Optional[Episode] = None) -> Path:
        """The complete cache directory of a committed episode, written now if it is missing.

        `episode` is the already decoded episode (saves a read_episode); it must be the stored one.
        """
        cache = self.cache_path(episode_id)
        if cache.is_dir():
            return cache
        with self._cache_locks[hash(episode_id) % _LOCK_STRIPES]:
            if not cache.is_dir():
                if episode is None:
                    episode = read_episode(self.episode_path(episode_id))
                self._build_cache(episode_id, episode)
        return cache

    def _build_cache(self, episode_id: str, episode: Episode) -> None:
        """Write the cache directory (a method of its own: a crash test stops the store right here)."""
        write_cache_dir(self.cache_path(episode_id), episode)

    # --------------------------------------------------------------------------------- reads

    def get(self, episode_id: str) -> StoredEpisode | None:
        return self._index.get(check_episode_id(episode_id))

    def contains(self, episode_id: str) -> bool:
        return self.get(episode_id) is not None

    def count(self) -> int:
        return self._index.count()

    def query(
        self,
        task_id: str | None = None,
        robot_id: str | None = None,
        policy_version: int | None = None,
        success: bool | None = None,
        min_interventions: int | None = None,
        since_seq: int | None = None,
    ) -> list[StoredEpisode]:
        """Committed episodes matching every given filter, in ingest order.

        policy_version matches episodes with at least one step from that version; since_seq is exclusive.
        """
        return self._index.query(task_id, robot_id, policy_version, success, min_interventions, since_seq)

    def tasks(self) -> list[str]:
        return self._index.tasks()

    def task_counts(self) -> dict[str, int]:
        return self._index.task_counts()

    def load_episode(self, episode_id: str) -> Episode:
        """Read and fully validate the stored file (slow path; training uses arrays())."""
        if not self.contains(episode_id):
            raise KeyError(f"episode {episode_id} is not in the store")
        return read_episode(self.episode_path(episode_id))

    def arrays(self, episode_id: str) -> dict[str, np.ndarray]:
        """The training cache, memory-mapped read-only (built from the file first if it is not there yet)."""
        if not self.contains(episode_id):
            raise KeyError(f"episode {episode_id} is not in the store")
        return load_cache_arrays(self.ensure_cache(episode_id))

    # ------------------------------------------------------------------------------ recovery

    def recover(self) -> RecoveryReport:
        """Make files agree with the index after a crash (run at open; safe to run any time)."""
        with self._all_locks(self._episode_locks):
            indexed = self._index.episode_ids()
            temps = self._staging.recover(indexed)
            orphan_files, file_temps = remove_orphan_episode_files(self.episodes_dir, indexed)
            with self._all_locks(self._cache_locks):  # no cache is being written while we look
                orphan_caches, cache_temps = remove_orphan_caches(self.cache_dir, indexed)
            temps += file_temps + cache_temps
            missing, missing_caches = indexed_without_files(indexed, self.episode_path, self.cache_path)
            report = RecoveryReport(
                tuple(orphan_files), tuple(orphan_caches), tuple(missing_caches), tuple(missing), temps
            )
            if orphan_files or orphan_caches or temps:
                log.warning("episode store %s recovered after a crash: %s", self.root, report)
            return report
