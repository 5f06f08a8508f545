"""The training cache of an episode store: cache/<episode_id>/<field>.npy, decoded arrays for np.load(mmap_mode="r").

Not on the ack path: a background thread writes it from the episode commit already decoded, and the store
builds it on demand when it is missing (a crash before the background write, or a full queue). A cache
directory is written under a temp name and renamed complete, so a half-written one is never read.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np

from sop_ros.core.episodes.episode import Episode
from sop_ros.core.episodes.hashing import EPISODE_ARRAY_FIELDS
from sop_ros.core.storage.durable_files import fsync_dir, is_stale_temp, is_temp_name, temp_path_for

log = logging.getLogger(__name__)

CACHE_QUEUE_BYTES = 256 << 20  # decoded episodes held in memory for the cache writer; beyond, built on demand


def decoded_bytes(episode: Episode) -> int:
    return sum(getattr(episode, name).nbytes for name in EPISODE_ARRAY_FIELDS)


def write_cache_dir(final: Path, episode: Episode) -> None:
    """Write every array as .npy into a temp dir, fsync all, rename to `final` atomically (parent fsynced)."""
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
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_cache_arrays(cache: Path) -> dict[str, np.ndarray]:
    """The arrays of a complete cache directory, memory-mapped read-only."""
    return {name: np.load(cache / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in EPISODE_ARRAY_FIELDS}


def remove_orphan_caches(cache_dir: Path, indexed: set[str]) -> tuple[list[str], int]:
    """Delete caches of episodes that are not indexed and crashed writers' temp dirs.

    Returns (the orphans' episode ids, the number of temp dirs removed). No cache may be written meanwhile.
    """
    orphans, temps = [], 0
    for path in cache_dir.iterdir():
        if is_temp_name(path.name):
            if is_stale_temp(path):
                shutil.rmtree(path, ignore_errors=True)
                temps += 1
        elif path.name not in indexed:
            shutil.rmtree(path, ignore_errors=True)
            orphans.append(path.name)
    return orphans, temps


class BackgroundCacheWriter:
    """A daemon thread that hands just-committed episodes to `write`, holding at most CACHE_QUEUE_BYTES of them.

    Started on the first episode; a failed write is only logged (the store builds that cache on first use).
    """

    def __init__(self, write: Callable[[Episode], object]):
        self._write = write
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()  # the queued byte count and the thread handle
        self._queued_bytes = 0
        self._thread: Optional[threading.Thread] = None

    def schedule(self, episode: Episode) -> None:
        """Queue the episode's cache write; when the writer is behind, drop it (the cache is built on first use)."""
        nbytes = decoded_bytes(episode)
        with self._lock:
            if self._queued_bytes + nbytes > CACHE_QUEUE_BYTES:
                log.debug("cache writer is behind; episode %s is cached on first use", episode.episode_id)
                return
            self._queued_bytes += nbytes
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sop-episode-cache", daemon=True)
                self._thread.start()
        self._queue.put(episode)

    def _run(self) -> None:
        while True:
            episode = self._queue.get()
            try:
                if episode is None:
                    return
                self._write(episode)
            except Exception:  # a failed cache write is retried by arrays(); the episode itself is safe
                log.exception("writing the training cache of episode %s failed", episode.episode_id)
            finally:
                if episode is not None:
                    with self._lock:
                        self._queued_bytes -= decoded_bytes(episode)
                self._queue.task_done()

    def wait(self) -> None:
        """Block until every queued write is done."""
        self._queue.join()

    def close(self) -> None:
        """Finish the queued writes and stop the thread."""
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join()
            self._thread = None
