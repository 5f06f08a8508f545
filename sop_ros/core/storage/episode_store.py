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
for each other's commits.
"""
from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import logging
import os
import queue
import shutil
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from sop_ros.core.storage.durable_files import fsync_dir, is_stale_temp, is_temp_name, temp_path_for
from sop_ros.core.episodes.episode import Episode, LabelSource
from sop_ros.core.episodes.episode_file import EPISODE_SUFFIX, EpisodeFileError, read_episode, read_episode_metadata
from sop_ros.core.episodes.hashing import EPISODE_ARRAY_FIELDS, file_sha256

log = logging.getLogger(__name__)

STAGING_SUFFIX = ".part"
DEFAULT_MAX_EPISODE_BYTES = 4 << 30
DEFAULT_SYNC_EVERY_BYTES = 64 << 20  # bounds the unsynced tail of a long upload stream (and dirty page cache)
_LOCK_STRIPES = 64
_CACHE_QUEUE_BYTES = 256 << 20  # decoded episodes held in memory for the cache writer; beyond, built on demand

_SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    ingest_seq INTEGER PRIMARY KEY AUTOINCREMENT,
    episode_id TEXT NOT NULL UNIQUE,
    robot_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    instruction TEXT NOT NULL,
    policy_version_min INTEGER NOT NULL,
    policy_version_max INTEGER NOT NULL,
    success INTEGER,
    label_source TEXT NOT NULL,
    num_steps INTEGER NOT NULL,
    human_steps INTEGER NOT NULL,
    intervention_count INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    received_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS episode_policy_versions (
    episode_id TEXT NOT NULL REFERENCES episodes(episode_id),
    policy_version INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    PRIMARY KEY (episode_id, policy_version)
);
CREATE INDEX IF NOT EXISTS episodes_task ON episodes(task_id);
CREATE INDEX IF NOT EXISTS episodes_robot ON episodes(robot_id);
CREATE INDEX IF NOT EXISTS policy_versions_version ON episode_policy_versions(policy_version);
"""
_COLUMNS = (
    "ingest_seq", "episode_id", "robot_id", "task_id", "instruction", "policy_version_min", "policy_version_max",
    "success", "label_source", "num_steps", "human_steps", "intervention_count", "sha256", "content_hash",
    "size_bytes", "start_ns", "end_ns", "received_ns",
)


class EpisodeStoreError(Exception):
    """Base class of store errors that an ingest service reports to the uploading robot."""


class OffsetMismatchError(EpisodeStoreError):
    """An upload chunk does not start where the staged bytes end; resume from `expected_offset`."""

    def __init__(self, episode_id: str, offset: int, expected_offset: int):
        super().__init__(f"episode {episode_id}: chunk at offset {offset}, but {expected_offset} bytes are staged")
        self.episode_id = episode_id
        self.offset = offset
        self.expected_offset = expected_offset


class RejectionCode(enum.Enum):
    """Why an upload was refused: callers (the ingest service) map these to protocol status codes."""

    HASH_MISMATCH = "hash_mismatch"  # the bytes received do not hash to the announced sha256
    INVALID_FILE = "invalid_file"  # the bytes are not a valid episode file (read_episode refused them)
    EPISODE_ID_MISMATCH = "episode_id_mismatch"  # the file holds another episode than the upload names
    ROBOT_MISMATCH = "robot_mismatch"  # the file was recorded by another robot than the uploader
    TOO_LARGE = "too_large"  # the upload exceeds max_episode_bytes
    CONFLICT = "conflict"  # the episode id is stored already, with different content
    NOTHING_STAGED = "nothing_staged"  # commit without any uploaded bytes


class EpisodeRejectedError(EpisodeStoreError):
    """The uploaded episode cannot be stored (bad hash, invalid file, identity mismatch, conflict)."""

    def __init__(self, episode_id: str, code: RejectionCode, reason: str):
        super().__init__(f"episode {episode_id} rejected: {reason}")
        self.episode_id = episode_id
        self.code = RejectionCode(code)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class StoredEpisode:
    """One committed episode, as indexed."""

    ingest_seq: int
    episode_id: str
    robot_id: str
    task_id: str
    instruction: str
    policy_version_min: int
    policy_version_max: int
    success: Optional[bool]
    label_source: LabelSource
    num_steps: int
    human_steps: int
    intervention_count: int
    sha256: str
    content_hash: str
    size_bytes: int
    start_ns: int
    end_ns: int
    received_ns: int
    path: Path


@dataclasses.dataclass(frozen=True)
class RecoveryReport:
    removed_orphan_files: tuple[str, ...] = ()
    removed_orphan_caches: tuple[str, ...] = ()
    missing_caches: tuple[str, ...] = ()  # indexed episodes without a training cache yet: built on first arrays()
    missing_files: tuple[str, ...] = ()  # indexed episodes whose file is gone (disk loss): logged as errors
    removed_temp_files: int = 0


def _decoded_bytes(episode: Episode) -> int:
    return sum(getattr(episode, name).nbytes for name in EPISODE_ARRAY_FIELDS)


def _check_episode_id(episode_id: str) -> str:
    """Episode ids become file names: only canonical lowercase UUID strings are accepted."""
    try:
        canonical = str(uuid.UUID(episode_id))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"episode_id must be a UUID string, got {episode_id!r}") from None
    if canonical != episode_id.lower():
        raise ValueError(f"episode_id must be a UUID string in canonical form, got {episode_id!r}")
    return canonical


@dataclasses.dataclass
class _StagingState:
    """What this process knows about an upload in progress (lost on restart; rebuilt from the file)."""

    size: int  # bytes in the staging file
    synced: int  # bytes known to be fsynced
    hasher: Optional["hashlib._Hash"]  # sha256 of bytes [0, size) when every byte went through this process
    name_synced: bool  # the staging directory entry is fsynced


class EpisodeStore:
    def __init__(
        self,
        root: str | Path,
        *,
        max_episode_bytes: int = DEFAULT_MAX_EPISODE_BYTES,
        sync_every_bytes: int = DEFAULT_SYNC_EVERY_BYTES,
        cache_in_background: bool = True,
    ):
        self.root = Path(root)
        self.max_episode_bytes = int(max_episode_bytes)
        if sync_every_bytes < 1:
            raise ValueError(f"sync_every_bytes must be >= 1, got {sync_every_bytes}")
        self.sync_every_bytes = int(sync_every_bytes)
        self.staging_dir = self.root / "staging"
        self.episodes_dir = self.root / "episodes"
        self.cache_dir = self.root / "cache"
        for d in (self.root, self.staging_dir, self.episodes_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # the SQLite connection and the staging-state dict
        self._episode_locks = [threading.RLock() for _ in range(_LOCK_STRIPES)]
        self._cache_locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._staging: dict[str, _StagingState] = {}
        self._db = sqlite3.connect(self.root / "index.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # WAL+NORMAL may lose the last commit on power loss
        self._db.executescript(_SCHEMA)
        self._cache_queue: Optional[queue.Queue] = queue.Queue() if cache_in_background else None
        self._cache_queued_bytes = 0  # guarded by self._lock
        self._cache_thread: Optional[threading.Thread] = None
        self.last_recovery = self.recover()

    # ------------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Finish the queued cache writes, then close the index."""
        thread = self._cache_thread
        if thread is not None:
            self._cache_queue.put(None)
            thread.join()
            self._cache_thread = None
        with self._lock:
            self._db.close()

    def __enter__(self) -> "EpisodeStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _episode_lock(self, episode_id: str) -> threading.RLock:
        return self._episode_locks[hash(episode_id) % _LOCK_STRIPES]

    @contextlib.contextmanager
    def _all_episode_locks(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for lock in self._episode_locks:  # always in index order: no lock-order inversion
                stack.enter_context(lock)
            yield

    # --------------------------------------------------------------------------------- paths

    def staging_path(self, episode_id: str) -> Path:
        return self.staging_dir / f"{_check_episode_id(episode_id)}{STAGING_SUFFIX}"

    def episode_path(self, episode_id: str) -> Path:
        eid = _check_episode_id(episode_id)
        return self.episodes_dir / eid[:2] / f"{eid}{EPISODE_SUFFIX}"

    def cache_path(self, episode_id: str) -> Path:
        return self.cache_dir / _check_episode_id(episode_id)

    # ------------------------------------------------------------------------------- staging

    def staged_offset(self, episode_id: str) -> int:
        """Bytes received for an upload in progress (0 when none); sync_staged() makes them durable."""
        try:
            return self.staging_path(episode_id).stat().st_size
        except FileNotFoundError:
            return 0

    def _state(self, episode_id: str, size: int) -> _StagingState:
        """The in-memory state of a staged upload, reset when it disagrees with the file (restart, discard)."""
        with self._lock:
            state = self._staging.get(episode_id)
            if state is None or state.size != size:
                # Bytes from before a restart: durable only once fsynced again, hash recomputed at commit.
                state = _StagingState(size, 0, hashlib.sha256() if size == 0 else None, False)
                self._staging[episode_id] = state
            return state

    def _forget(self, episode_id: str) -> None:
        with self._lock:
            self._staging.pop(episode_id, None)

    def append_staged(self, episode_id: str, offset: int, data: bytes) -> int:
        """Append an upload chunk at `offset` (must equal the staged size); return the new offset.

        The bytes reach the page cache now and the disk at the next sync_staged() or commit() (or once
        `sync_every_bytes` are unsynced). A learner crash before that only shortens the staged file:
        the robot resumes from whatever offset BeginEpisode reports after the restart.
        """
        path = self.staging_path(episode_id)
        with self._episode_lock(episode_id):
            current = self.staged_offset(episode_id)
            if offset != current:
                raise OffsetMismatchError(episode_id, offset, current)
            if current + len(data) > self.max_episode_bytes:
                self.discard_staged(episode_id)
                raise EpisodeRejectedError(episode_id, RejectionCode.TOO_LARGE, f"upload exceeds the {self.max_episode_bytes}-byte episode limit")
            state = self._state(episode_id, current)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                state.size = current + len(data)
                if state.hasher is not None:
                    state.hasher.update(data)
                if state.size - state.synced >= self.sync_every_bytes:
                    os.fsync(fd)
                    state.synced = state.size
            finally:
                os.close(fd)
            if not state.name_synced and state.synced:
                fsync_dir(self.staging_dir)
                state.name_synced = True
            return state.size

    def sync_staged(self, episode_id: str) -> int:
        """fsync the staged bytes of an upload (and its directory entry); return the durable offset (0 when none)."""
        path = self.staging_path(episode_id)
        with self._episode_lock(episode_id):
            size = self.staged_offset(episode_id)
            if size == 0:
                return 0
            state = self._state(episode_id, size)
            if state.synced < size:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                state.synced = size
            if not state.name_synced:
                fsync_dir(self.staging_dir)  # the new file's name must survive a crash too
                state.name_synced = True
            return size

    def discard_staged(self, episode_id: str) -> None:
        with self._episode_lock(episode_id):
            self._forget(episode_id)
            path = self.staging_path(episode_id)
            if path.exists():
                path.unlink()
                fsync_dir(self.staging_dir)

    def staged_uploads(self) -> dict[str, int]:
        """Uploads in progress: episode id -> staged bytes."""
        uploads = {}
        for p in self.staging_dir.iterdir():
            if p.name.endswith(STAGING_SUFFIX) and not is_temp_name(p.name):
                try:
                    uploads[p.name[: -len(STAGING_SUFFIX)]] = p.stat().st_size
                except FileNotFoundError:
                    continue  # committed or discarded meanwhile
        return uploads

    def discard_stale_staging(self, older_than_s: float) -> list[str]:
        """Drop uploads nobody appended to for `older_than_s` (a robot that vanished); returns their ids."""
        cutoff = time.time() - older_than_s
        dropped = []
        for eid in self.staged_uploads():
            with self._episode_lock(eid):
                path = self.staging_path(eid)
                try:
                    stale = path.stat().st_mtime < cutoff
                except FileNotFoundError:
                    continue
                if stale:
                    path.unlink()
                    self._forget(eid)
                    dropped.append(eid)
        if dropped:
            fsync_dir(self.staging_dir)
            log.warning("discarded %d abandoned upload(s): %s", len(dropped), dropped)
        return dropped

    # -------------------------------------------------------------------------------- commit

    def commit(self, episode_id: str, sha256_hex: str, robot_id: str) -> StoredEpisode:
        """Verify and store the staged upload; idempotent for an already stored identical episode.

        Returns once the file is validated, fsynced, renamed and indexed (the caller may acknowledge);
        the training cache follows in the background.
        """
        episode_id = _check_episode_id(episode_id)
        sha256_hex = sha256_hex.lower()
        with self._episode_lock(episode_id):
            existing = self.get(episode_id)
            if existing is not None:
                self.discard_staged(episode_id)
                if existing.sha256 != sha256_hex:
                    raise EpisodeRejectedError(episode_id, RejectionCode.CONFLICT, "conflicting content for existing episode id")
                return existing
            staging = self.staging_path(episode_id)
            size = self.staged_offset(episode_id)
            if size == 0:
                raise EpisodeRejectedError(episode_id, RejectionCode.NOTHING_STAGED, "no staged bytes to commit")

            def reject(code: RejectionCode, reason: str) -> EpisodeRejectedError:
                self.discard_staged(episode_id)
                log.warning("episode %s from robot %s rejected: %s", episode_id, robot_id, reason)
                return EpisodeRejectedError(episode_id, code, reason)

            state = self._state(episode_id, size)
            actual = state.hasher.hexdigest() if state.hasher is not None else file_sha256(staging)
            if actual != sha256_hex:
                raise reject(RejectionCode.HASH_MISMATCH, f"sha256 mismatch: announced {sha256_hex}, received bytes hash to {actual}")
            try:
                episode = read_episode(staging)
                content_hash = read_episode_metadata(staging)["content_hash"]  # read_episode checked it against the payload
            except EpisodeFileError as e:
                raise reject(RejectionCode.INVALID_FILE, f"invalid episode file: {e}") from None
            if episode.episode_id != episode_id:
                raise reject(RejectionCode.EPISODE_ID_MISMATCH, f"file contains episode id {episode.episode_id}, upload was for {episode_id}")
            if episode.robot_id != robot_id:
                raise reject(RejectionCode.ROBOT_MISMATCH, f"file says robot {episode.robot_id!r}, uploader is robot {robot_id!r}")

            self.sync_staged(episode_id)  # the bytes are durable before their name is
            final = self.episode_path(episode_id)
            final.parent.mkdir(exist_ok=True)
            os.replace(staging, final)
            self._forget(episode_id)
            fsync_dir(final.parent)
            fsync_dir(self.staging_dir)
            self._insert(episode, sha256_hex, content_hash, size)
            stored = self.get(episode_id)
            assert stored is not None
            self._schedule_cache(episode)
            log.info("stored episode %s (robot %s, task %s, %d steps, seq %d)", episode_id, robot_id, episode.task_id, episode.num_steps, stored.ingest_seq)
            return stored

    # ---------------------------------------------------------------------------- training cache

    def _schedule_cache(self, episode: Episode) -> None:
        """Hand the decoded episode to the cache writer; when it is busy, arrays() builds the cache later."""
        if self._cache_queue is None:
            return
        nbytes = _decoded_bytes(episode)
        with self._lock:
            if self._cache_queued_bytes + nbytes > _CACHE_QUEUE_BYTES:
                log.debug("cache writer is behind; episode %s is cached on first use", episode.episode_id)
                return
            self._cache_queued_bytes += nbytes
            if self._cache_thread is None:
                self._cache_thread = threading.Thread(target=self._cache_writer, name="sop-episode-cache", daemon=True)
                self._cache_thread.start()
        self._cache_queue.put(episode)

    def _cache_writer(self) -> None:
        while True:
            episode = self._cache_queue.get()
            try:
                if episode is None:
                    return
                self.ensure_cache(episode.episode_id, episode)
            except Exception:  # a failed cache write is retried by arrays(); the episode itself is safe
                log.exception("writing the training cache of episode %s failed", episode.episode_id)
            finally:
                if episode is not None:
                    with self._lock:
                        self._cache_queued_bytes -= _decoded_bytes(episode)
                self._cache_queue.task_done()

    def wait_for_caches(self) -> None:
        """Block until every queued cache write is done (tests, benchmarks, orderly shutdown)."""
        if self._cache_queue is not None:
            self._cache_queue.join()

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
        """Write every array as .npy into a temp dir, fsync all, rename into cache/<id> atomically."""
        final = self.cache_path(episode_id)
        tmp = temp_path_for(final)
        tmp.mkdir()
        try:
            for name in EPISODE_ARRAY_FIELDS:
                path = tmp / f"{name}.npy"
                with open(path, "wb") as f:
                    np.save(f, np.ascontiguousarray(getattr(episode, name)), allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
            fsync_dir(tmp)
            if final.exists():  # an orphan from a crash; it is not indexed, so nobody reads it
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync_dir(self.cache_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _insert(self, ep: Episode, sha256_hex: str, content_hash: str, size: int) -> None:
        versions, counts = np.unique(ep.policy_versions, return_counts=True)
        row = (
            ep.episode_id, ep.robot_id, ep.task_id, ep.instruction, int(versions.min()), int(versions.max()),
            None if ep.success is None else int(ep.success), ep.label_source.value, ep.num_steps, ep.human_step_count,
            len(ep.intervention_segments), sha256_hex, content_hash, size, int(ep.start_ns), int(ep.end_ns),
            time.time_ns(),
        )
        with self._lock:
            self._insert_row(ep, row, versions, counts)

    def _insert_row(self, ep: Episode, row: tuple, versions: np.ndarray, counts: np.ndarray) -> None:
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute(f"INSERT INTO episodes ({', '.join(_COLUMNS[1:])}) VALUES ({', '.join('?' * len(row))})", row)
            cur.executemany(
                "INSERT INTO episode_policy_versions (episode_id, policy_version, steps) VALUES (?, ?, ?)",
                [(ep.episode_id, int(v), int(c)) for v, c in zip(versions, counts)],
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    # --------------------------------------------------------------------------------- reads

    def _row_to_stored(self, row: tuple) -> StoredEpisode:
        return _stored_from_row(row, self.episode_path)

    def get(self, episode_id: str) -> StoredEpisode | None:
        eid = _check_episode_id(episode_id)
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM episodes WHERE episode_id = ?", (eid,)).fetchone()
        return None if row is None else self._row_to_stored(row)

    def contains(self, episode_id: str) -> bool:
        return self.get(episode_id) is not None

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM episodes").fetchone()[0])

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
        where, args = [], []
        for column, value in (("task_id", task_id), ("robot_id", robot_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if policy_version is not None:
            where.append("episode_id IN (SELECT episode_id FROM episode_policy_versions WHERE policy_version = ?)")
            args.append(int(policy_version))
        if success is not None:
            where.append("success = ?")
            args.append(int(success))
        if min_interventions is not None:
            where.append("intervention_count >= ?")
            args.append(int(min_interventions))
        if since_seq is not None:
            where.append("ingest_seq > ?")
            args.append(int(since_seq))
        sql = f"SELECT {', '.join(_COLUMNS)} FROM episodes"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY ingest_seq", args).fetchall()
        return [self._row_to_stored(r) for r in rows]

    def tasks(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT task_id FROM episodes ORDER BY task_id")]

    def task_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT task_id, COUNT(*) FROM episodes GROUP BY task_id ORDER BY task_id").fetchall())

    def load_episode(self, episode_id: str) -> Episode:
        """Read and fully validate the stored file (slow path; training uses arrays())."""
        if not self.contains(episode_id):
            raise KeyError(f"episode {episode_id} is not in the store")
        return read_episode(self.episode_path(episode_id))

    def arrays(self, episode_id: str) -> dict[str, np.ndarray]:
        """The training cache, memory-mapped read-only (built from the file first if it is not there yet)."""
        if not self.contains(episode_id):
            raise KeyError(f"episode {episode_id} is not in the store")
        cache = self.ensure_cache(episode_id)
        return {name: np.load(cache / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in EPISODE_ARRAY_FIELDS}

    # ------------------------------------------------------------------------------ recovery

    def recover(self) -> RecoveryReport:
        """Make files agree with the index after a crash (run at open; safe to run any time)."""
        with self._all_episode_locks(), self._lock:
            indexed = {r[0] for r in self._db.execute("SELECT episode_id FROM episodes")}
            temps = 0
            for path in self.staging_dir.iterdir():
                if is_temp_name(path.name):
                    if is_stale_temp(path):
                        path.unlink()
                        temps += 1
                elif path.name.endswith(STAGING_SUFFIX) and path.name[: -len(STAGING_SUFFIX)] in indexed:
                    path.unlink()  # a re-send of a stored episode: nothing to resume
                    self._forget(path.name[: -len(STAGING_SUFFIX)])
            orphan_files = []
            for shard in self.episodes_dir.iterdir():
                if not shard.is_dir():
                    continue
                for path in shard.iterdir():
                    if is_temp_name(path.name):
                        if is_stale_temp(path):
                            path.unlink()
                            temps += 1
                        continue
                    if path.name.removesuffix(EPISODE_SUFFIX) not in indexed:
                        path.unlink()
                        orphan_files.append(path.name.removesuffix(EPISODE_SUFFIX))
                if orphan_files:
                    fsync_dir(shard)
            orphan_caches, missing_caches, missing = [], [], []
            with contextlib.ExitStack() as stack:
                for lock in self._cache_locks:  # no cache is being written while we look
                    stack.enter_context(lock)
                for path in self.cache_dir.iterdir():
                    if is_temp_name(path.name):
                        if is_stale_temp(path):
                            shutil.rmtree(path, ignore_errors=True)
                            temps += 1
                    elif path.name not in indexed:
                        shutil.rmtree(path, ignore_errors=True)
                        orphan_caches.append(path.name)
            for eid in sorted(indexed):
                if not self.episode_path(eid).exists():
                    missing.append(eid)
                    log.error("episode %s is indexed but its file %s is missing", eid, self.episode_path(eid))
                elif not self.cache_path(eid).is_dir():
                    missing_caches.append(eid)  # e.g. a crash right after the ack; built on first arrays()
            report = RecoveryReport(tuple(orphan_files), tuple(orphan_caches), tuple(missing_caches), tuple(missing), temps)
            if orphan_files or orphan_caches or temps:
                log.warning("episode store %s recovered after a crash: %s", self.root, report)
            return report


def _stored_from_row(row: tuple, episode_path) -> StoredEpisode:
    d = dict(zip(_COLUMNS, row))
    d["success"] = None if d["success"] is None else bool(d["success"])
    d["label_source"] = LabelSource(d["label_source"])
    return StoredEpisode(**d, path=episode_path(d["episode_id"]))


def read_index(root: str | Path, since_seq: int | None = None) -> list[StoredEpisode]:
    """The committed episodes of a store that another process owns, read-only, in ingest order.

    For observers (live progress, analysis): opening an EpisodeStore would run recovery on
    the owner's files; this only reads the SQLite index (WAL allows a concurrent reader).
    Returns [] when the store has no index yet.
    """
    root = Path(root)
    index = root / "index.sqlite3"
    if not index.exists():
        return []
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    try:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM episodes"
        rows = db.execute(sql + (" WHERE ingest_seq > ?" if since_seq is not None else "") + " ORDER BY ingest_seq",
                          (since_seq,) if since_seq is not None else ()).fetchall()
    finally:
        db.close()
    episodes_dir = root / "episodes"

    def episode_path(eid: str) -> Path:
        return episodes_dir / eid[:2] / f"{eid}{EPISODE_SUFFIX}"

    return [_stored_from_row(r, episode_path) for r in rows]
