"""What an episode store's recover() finds and removes after a crash: files without an index row, and the report.

The index row is the commit point, so an episode file without one (renamed into episodes/, then a crash
before the row) is deleted, as are stale temp files; indexed episodes whose file or cache is missing are
reported. episode_store.EpisodeStore.recover() runs these under the store's locks.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from sop_ros.core.episodes.episode_file import EPISODE_SUFFIX
from sop_ros.core.storage.durable_files import fsync_dir, is_stale_temp, is_temp_name

# Logged under the store's name: callers quiet or filter the store's messages by that logger.
log = logging.getLogger("sop_ros.core.storage.episode_store")


@dataclasses.dataclass(frozen=True)
class RecoveryReport:
    removed_orphan_files: tuple[str, ...] = ()
    removed_orphan_caches: tuple[str, ...] = ()
    missing_caches: tuple[str, ...] = ()  # indexed episodes without a training cache yet: built on first arrays()
    missing_files: tuple[str, ...] = ()  # indexed episodes whose file is gone (disk loss): logged as errors
    removed_temp_files: int = 0


def remove_orphan_episode_files(episodes_dir: Path, indexed: set[str]) -> tuple[list[str], int]:
    """Delete episode files without an index row (renamed, then a crash before the row) and stale temp files.

    Returns (the orphans' episode ids, the number of temp files removed).
    """
    orphan_files, temps = [], 0
    for shard in episodes_dir.iterdir():
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
    return orphan_files, temps


def indexed_without_files(
    indexed: set[str], episode_path: Callable[[str], Path], cache_path: Callable[[str], Path]
) -> tuple[list[str], list[str]]:
    """(indexed episodes whose file is gone, indexed episodes without a training cache yet), sorted by id.

    A missing file (disk loss) is logged as an error; a missing cache (e.g. a crash right after the ack)
    is built on the first arrays().
    """
    missing, missing_caches = [], []
    for eid in sorted(indexed):
        if not episode_path(eid).exists():
            missing.append(eid)
            log.error("episode %s is indexed but its file %s is missing", eid, episode_path(eid))
        elif not cache_path(eid).is_dir():
            missing_caches.append(eid)  # e.g. a crash right after the ack; built on first arrays()
    return missing, missing_caches
