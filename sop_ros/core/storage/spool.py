"""The robot's on-disk spool of closed episodes waiting for upload.

State is the directory contents only, so it survives restarts:
    <root>/<seq:012d>_<created_ns>_<episode_id>.mcap   a complete episode (written atomically)
    <root>/.<name>.<pid>.<token>.partial               a write in progress (or a crashed one)
Upload order is the sequence number in the name (never mtime, which clocks and copies change).
A crashed writer leaves only a temp file; temps whose writer process is gone are deleted at open and
are never listed as episodes.

Quota policy: the spool never deletes unsent data and never refuses a write. Over `max_bytes` it logs
a WARNING on every write and reports `over_quota`; refusing would lose the newest robot data, and
deleting would lose the oldest. The operator (or the `sop` status view) must act on the warning.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from pathlib import Path

from sop_ros.core.episodes.episode import Episode
from sop_ros.core.episodes.episode_file import EPISODE_SUFFIX, write_episode
from sop_ros.core.storage.durable_files import fsync_dir, is_stale_temp, is_temp_name

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^(?P<seq>\d{12})_(?P<created>\d+)_(?P<id>[0-9a-fA-F-]{36})" + re.escape(EPISODE_SUFFIX) + "$")


@dataclasses.dataclass(frozen=True)
class SpoolEntry:
    episode_id: str
    path: Path
    size_bytes: int
    created_ns: int
    sequence: int


class Spool:
    """Directory of closed episodes, oldest first.

    Every query re-reads the directory, so a recorder and an uploader may each hold their own Spool
    on the same root (threads or processes); only one of them should write.
    """

    def __init__(self, root: str | Path, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"spool max_bytes must be positive, got {max_bytes}")
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._next_seq = 1
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps()

    def _remove_stale_temps(self) -> None:
        removed = 0
        for p in self.root.iterdir():
            if is_temp_name(p.name) and is_stale_temp(p):
                p.unlink(missing_ok=True)
                removed += 1
        if removed:
            fsync_dir(self.root)
            log.warning("spool %s: removed %d temp file(s) left by a crashed writer", self.root, removed)

    def _scan(self) -> dict[str, SpoolEntry]:
        entries: dict[str, SpoolEntry] = {}
        for p in self.root.iterdir():
            m = _NAME_RE.fullmatch(p.name)
            if m is None:
                if not is_temp_name(p.name):
                    log.warning("spool %s: ignoring unexpected file %s", self.root, p.name)
                continue
            try:
                size = p.stat().st_size
            except FileNotFoundError:  # removed by another holder meanwhile
                continue
            entry = SpoolEntry(m.group("id").lower(), p, size, int(m.group("created")), int(m.group("seq")))
            self._next_seq = max(self._next_seq, entry.sequence + 1)
            previous = entries.get(entry.episode_id)
            if previous is None or entry.sequence < previous.sequence:
                entries[entry.episode_id] = entry  # a duplicate copy keeps the older slot
        return entries

    def write(self, episode: Episode) -> SpoolEntry:
        """Persist a closed episode durably (atomic write + fsync) and queue it for upload."""
        with self._lock:
            entries = self._scan()
            existing = entries.get(episode.episode_id.lower())
            if existing is not None:
                log.warning(
                    "spool %s: episode %s is already spooled; keeping the first copy", self.root, episode.episode_id
                )
                return existing
            seq = self._next_seq
            self._next_seq += 1
            created = time.time_ns()
            path = self.root / f"{seq:012d}_{created}_{episode.episode_id.lower()}{EPISODE_SUFFIX}"
            write_episode(episode, path)
            entry = SpoolEntry(episode.episode_id.lower(), path, path.stat().st_size, created, seq)
            entries[entry.episode_id] = entry
        total = sum(e.size_bytes for e in entries.values())
        if total > self.max_bytes:
            log.warning(
                "spool %s is over quota: %d bytes pending > max %d bytes (%d episodes). Nothing is deleted; "
                "check the learner connection or free disk space.",
                self.root,
                total,
                self.max_bytes,
                len(entries),
            )
        return entry

    def pending(self) -> list[SpoolEntry]:
        """Episodes waiting for upload, oldest (lowest sequence) first."""
        with self._lock:
            return sorted(self._scan().values(), key=lambda e: e.sequence)

    def get(self, episode_id: str) -> SpoolEntry | None:
        with self._lock:
            return self._scan().get(episode_id.lower())

    def remove(self, episode_id: str) -> bool:
        """Delete an episode after the learner acknowledged it. Returns False when it was not spooled."""
        with self._lock:
            copies = [
                p
                for p in self.root.iterdir()
                if (m := _NAME_RE.fullmatch(p.name)) and m.group("id").lower() == episode_id.lower()
            ]
            for p in copies:
                p.unlink(missing_ok=True)
            if copies:
                fsync_dir(self.root)
            return bool(copies)

    def total_bytes(self) -> int:
        with self._lock:
            return sum(e.size_bytes for e in self._scan().values())

    @property
    def over_quota(self) -> bool:
        return self.total_bytes() > self.max_bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._scan())
