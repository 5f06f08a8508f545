"""Where an episode store keeps what: directory and file names, derived from validated episode ids."""

from __future__ import annotations

import uuid
from pathlib import Path

from sop_ros.core.episodes.episode_file import EPISODE_SUFFIX

STAGING_DIR = "staging"
EPISODES_DIR = "episodes"
CACHE_DIR = "cache"
INDEX_FILE = "index.sqlite3"
STAGING_SUFFIX = ".part"


def check_episode_id(episode_id: str) -> str:
    """Episode ids become file names: only canonical lowercase UUID strings are accepted."""
    try:
        canonical = str(uuid.UUID(episode_id))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"episode_id must be a UUID string, got {episode_id!r}") from None
    if canonical != episode_id.lower():
        raise ValueError(f"episode_id must be a UUID string in canonical form, got {episode_id!r}")
    return canonical


def episode_file_path(episodes_dir: Path, episode_id: str) -> Path:
    """episodes/<id[:2]>/<id>.mcap: sharded so no directory holds every episode."""
    return episodes_dir / episode_id[:2] / f"{episode_id}{EPISODE_SUFFIX}"
