"""Where stored episodes are: a learner's episode store, an offline buffer (store or `sop collect` directory), a spool.

    episode store (<data-dir>/episodes, <data-dir>/offline): index.sqlite3 + episodes/<id[:2]>/<id>.mcap
    demo directory (`sop collect --out`, `sop pretrain --demos`): <id>.mcap files
    robot spool: <seq>_<created_ns>_<id>.mcap files (upload order = name order)
A store is read through its index, read-only (its owner may be running): files without an index row are
uncommitted and are not episodes.
"""

from __future__ import annotations

from pathlib import Path

from sop_ros.core.episodes.episode_file import EPISODE_SUFFIX
from sop_ros.core.storage.data_layout import EPISODES_DIR as DATA_EPISODES_DIR
from sop_ros.core.storage.data_layout import OFFLINE_DIR
from sop_ros.core.storage.episode_index import read_index
from sop_ros.core.storage.episode_store_layout import EPISODES_DIR, INDEX_FILE, episode_file_path


def episode_files(source: Path) -> list[Path]:
    """The episode files of a store, demo directory or spool, in recording (store: ingest) order."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such directory (expected an episode store, offline buffer or spool)")
    if (source / INDEX_FILE).is_file():
        return [episode_file_path(source / EPISODES_DIR, row.episode_id) for row in read_index(source)]
    files = sorted(p for p in source.iterdir() if p.is_file() and p.name.endswith(EPISODE_SUFFIX))
    stores = [d for d in (DATA_EPISODES_DIR, OFFLINE_DIR) if (source / d / INDEX_FILE).is_file()]
    if not files and stores:  # a learner data directory holds two stores: say which to pick
        raise FileNotFoundError(f"{source}: a learner data directory; export one of its stores: {stores}")
    if not files:
        raise FileNotFoundError(
            f"{source}: holds no episodes (neither an episode store's {INDEX_FILE} nor *{EPISODE_SUFFIX} files)"
        )
    return files
