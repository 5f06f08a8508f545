"""Resumable upload staging: staging/<episode_id>.part holds the bytes of an upload received so far.

Bytes reach the page cache at each append and the disk at sync() (and every `sync_every_bytes`), never
once per chunk. A learner crash before a sync only shortens the staged file: the robot resumes from the
offset BeginEpisode reports after the restart. The sha256 of the bytes is kept while they arrive; after a
restart it is recomputed from the file.

Not thread-safe on its own: the episode store holds an episode's lock around every call for that episode.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from pathlib import Path
from typing import Optional

from sop_ros.core.episodes.hashing import file_sha256
from sop_ros.core.storage.durable_files import fsync_dir, is_stale_temp, is_temp_name
from sop_ros.core.storage.episode_store_layout import STAGING_SUFFIX, check_episode_id

DEFAULT_SYNC_EVERY_BYTES = 64 << 20  # bounds the unsynced tail of a long upload stream (and dirty page cache)


@dataclasses.dataclass
class _StagingState:
    """What this process knows about an upload in progress (lost on restart; rebuilt from the file)."""

    size: int  # bytes in the staging file
    synced: int  # bytes known to be fsynced
    hasher: Optional[hashlib._Hash]  # sha256 of bytes [0, size) when every byte went through this process
    name_synced: bool  # the staging directory entry is fsynced


class UploadStaging:
    def __init__(self, directory: Path, sync_every_bytes: int = DEFAULT_SYNC_EVERY_BYTES):
        self.dir = directory
        self.sync_every_bytes = sync_every_bytes
        self._lock = threading.Lock()  # the state dict (entries of different episodes change concurrently)
        self._states: dict[str, _StagingState] = {}

    def path(self, episode_id: str) -> Path:
        return self.dir / f"{check_episode_id(episode_id)}{STAGING_SUFFIX}"

    def offset(self, episode_id: str) -> int:
        """Bytes received for an upload in progress (0 when none)."""
        try:
            return self.path(episode_id).stat().st_size
        except FileNotFoundError:
            return 0

    def _state(self, episode_id: str, size: int) -> _StagingState:
        """The in-memory state of a staged upload, reset when it disagrees with the file (restart, discard)."""
        with self._lock:
            state = self._states.get(episode_id)
            if state is None or state.size != size:
                # Bytes from before a restart: durable only once fsynced again, hash recomputed at commit.
                state = _StagingState(size, 0, hashlib.sha256() if size == 0 else None, False)
                self._states[episode_id] = state
            return state

    def forget(self, episode_id: str) -> None:
        with self._lock:
            self._states.pop(episode_id, None)

    def append(self, episode_id: str, current: int, data: bytes) -> int:
        """Append `data` to an upload that holds `current` bytes (checked by the caller); return the new size."""
        state = self._state(episode_id, current)
        fd = os.open(self.path(episode_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            state.size = current + len(data)
            if state.hasher is not None:
                state.hasher.update(data)
            if state.size - state.synced >= self.sync_every_bytes:
                os.fsync(fd)
                state.synced = state.size
        finally:
            os.close(fd)
        if not state.name_synced and state.synced:
            fsync_dir(self.dir)
            state.name_synced = True
        return state.size

    def sync(self, episode_id: str) -> int:
        """fsync the staged bytes (and the file's directory entry); return the durable offset (0 when none)."""
        path = self.path(episode_id)
        size = self.offset(episode_id)
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
            fsync_dir(self.dir)  # the new file's name must survive a crash too
            state.name_synced = True
        return size

    def sha256(self, episode_id: str, size: int) -> str:
        """The sha256 of the `size` staged bytes: kept while they arrived, or read from the file after a restart."""
        state = self._state(episode_id, size)
        return state.hasher.hexdigest() if state.hasher is not None else file_sha256(self.path(episode_id))

    def discard(self, episode_id: str) -> None:
        self.forget(episode_id)
        path = self.path(episode_id)
        if path.exists():
            path.unlink()
            fsync_dir(self.dir)

    def move_to(self, episode_id: str, final: Path) -> None:
        """Make the staged bytes durable, then rename them to `final` (both directories fsynced)."""
        self.sync(episode_id)  # the bytes are durable before their name is
        final.parent.mkdir(exist_ok=True)
        os.replace(self.path(episode_id), final)
        self.forget(episode_id)
        fsync_dir(final.parent)
        fsync_dir(self.dir)

    def uploads(self) -> dict[str, int]:
        """Uploads in progress: episode id -> staged bytes."""
        uploads = {}
        for p in self.dir.iterdir():
            if p.name.endswith(STAGING_SUFFIX) and not is_temp_name(p.name):
                try:
                    uploads[p.name[: -len(STAGING_SUFFIX)]] = p.stat().st_size
                except FileNotFoundError:
                    continue  # committed or discarded meanwhile
        return uploads

    def remove_if_untouched_since(self, episode_id: str, cutoff: float) -> bool:
        """Delete an upload last appended to before `cutoff` (time.time()); the caller fsyncs the directory."""
        path = self.path(episode_id)
        try:
            stale = path.stat().st_mtime < cutoff
        except FileNotFoundError:
            return False
        if stale:
            path.unlink()
            self.forget(episode_id)
        return stale

    def recover(self, indexed: set[str]) -> int:
        """Remove crashed writers' temp files and re-sends of stored episodes; returns the temp files removed."""
        temps = 0
        for path in self.dir.iterdir():
            if is_temp_name(path.name):
                if is_stale_temp(path):
                    path.unlink()
                    temps += 1
            elif path.name.endswith(STAGING_SUFFIX) and path.name[: -len(STAGING_SUFFIX)] in indexed:
                path.unlink()  # a re-send of a stored episode: nothing to resume
                self.forget(path.name[: -len(STAGING_SUFFIX)])
        return temps
