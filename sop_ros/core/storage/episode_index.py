"""The SQLite index of an episode store: one row per committed episode (its commit point), and queries.

WAL with synchronous=FULL: WAL+NORMAL may lose the last commit on power loss, and the row is what an
acknowledged upload relies on. read_index reads the index of a store another process owns.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np

from sop_ros.core.episodes.episode import Episode, LabelSource
from sop_ros.core.storage.episode_store_layout import EPISODES_DIR, INDEX_FILE, episode_file_path

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
    "ingest_seq",
    "episode_id",
    "robot_id",
    "task_id",
    "instruction",
    "policy_version_min",
    "policy_version_max",
    "success",
    "label_source",
    "num_steps",
    "human_steps",
    "intervention_count",
    "sha256",
    "content_hash",
    "size_bytes",
    "start_ns",
    "end_ns",
    "received_ns",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM episodes"


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


def _stored_from_row(row: tuple, episode_path: Callable[[str], Path]) -> StoredEpisode:
    d = dict(zip(_COLUMNS, row, strict=True))
    d["success"] = None if d["success"] is None else bool(d["success"])
    d["label_source"] = LabelSource(d["label_source"])
    return StoredEpisode(**d, path=episode_path(d["episode_id"]))


class EpisodeIndex:
    """The index of the store that owns it; safe to call from several threads (one connection, one lock)."""

    def __init__(self, path: Path, episode_path: Callable[[str], Path]):
        self._episode_path = episode_path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # WAL+NORMAL may lose the last commit on power loss
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def insert(self, ep: Episode, sha256_hex: str, content_hash: str, size: int) -> None:
        """Add the row of a committed episode and its per-version step counts in one transaction."""
        versions, counts = np.unique(ep.policy_versions, return_counts=True)
        row = (
            ep.episode_id,
            ep.robot_id,
            ep.task_id,
            ep.instruction,
            int(versions.min()),
            int(versions.max()),
            None if ep.success is None else int(ep.success),
            ep.label_source.value,
            ep.num_steps,
            ep.human_step_count,
            len(ep.intervention_segments),
            sha256_hex,
            content_hash,
            size,
            int(ep.start_ns),
            int(ep.end_ns),
            time.time_ns(),
        )
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute(
                    f"INSERT INTO episodes ({', '.join(_COLUMNS[1:])}) VALUES ({', '.join('?' * len(row))})", row
                )
                cur.executemany(
                    "INSERT INTO episode_policy_versions (episode_id, policy_version, steps) VALUES (?, ?, ?)",
                    [(ep.episode_id, int(v), int(c)) for v, c in zip(versions, counts, strict=True)],
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def get(self, episode_id: str) -> StoredEpisode | None:
        with self._lock:
            row = self._db.execute(f"{_SELECT} WHERE episode_id = ?", (episode_id,)).fetchone()
        return None if row is None else _stored_from_row(row, self._episode_path)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM episodes").fetchone()[0])

    def episode_ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT episode_id FROM episodes")}

    def query(
        self,
        task_id: str | None = None,
        robot_id: str | None = None,
        policy_version: int | None = None,
        success: bool | None = None,
        min_interventions: int | None = None,
        since_seq: int | None = None,
    ) -> list[StoredEpisode]:
        """Episodes matching every given filter, in ingest order (EpisodeStore.query says what each means)."""
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
        sql = _SELECT
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY ingest_seq", args).fetchall()
        return [_stored_from_row(r, self._episode_path) for r in rows]

    def tasks(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT task_id FROM episodes ORDER BY task_id")]

    def task_counts(self) -> dict[str, int]:
        with self._lock:
            sql = "SELECT task_id, COUNT(*) FROM episodes GROUP BY task_id ORDER BY task_id"
            return dict(self._db.execute(sql).fetchall())


def read_index(root: str | Path, since_seq: int | None = None) -> list[StoredEpisode]:
    """The committed episodes of a store that another process owns, read-only, in ingest order.

    For observers (live progress, analysis): opening an EpisodeStore would run recovery on
    the owner's files; this only reads the SQLite index (WAL allows a concurrent reader).
    Returns [] when the store has no index yet.
    """
    root = Path(root)
    index = root / INDEX_FILE
    if not index.exists():
        return []
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    try:
        rows = db.execute(
            _SELECT + (" WHERE ingest_seq > ?" if since_seq is not None else "") + " ORDER BY ingest_seq",
            (since_seq,) if since_seq is not None else (),
        ).fetchall()
    finally:
        db.close()
    episodes_dir = root / EPISODES_DIR
    return [_stored_from_row(r, lambda eid: episode_file_path(episodes_dir, eid)) for r in rows]
