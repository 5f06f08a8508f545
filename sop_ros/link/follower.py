"""Robot side of Policy: follow checkpoint announcements, download the newest, verify, hand it over.

Two threads: the watcher reads the announcement stream continuously into a local newest-only
slot (so even a robot busy downloading never accumulates a backlog), and the downloader
fetches whatever is newest when it is free. Downloads resume from the bytes already in
`<cache>/.partial/`, are sha256-verified, and appear atomically as
`<cache>/v<version>/{weights.safetensors,manifest.json}`. `on_checkpoint` callbacks get the
DownloadedCheckpoint; the policy node loads it in the background and swaps at an episode boundary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import grpc

from sop_ros.core.storage.durable_files import fsync_dir
from sop_ros.link.announcer import LatestSlot
from sop_ros.link.channel import LinkClient, RetryPolicy, is_transient
from sop_ros.link.checkpoint_info import CheckpointRef
from sop_ros.link.protos import policy_pb2

_LOGGER = logging.getLogger(__name__)
WEIGHTS_NAME = "weights.safetensors"
MANIFEST_NAME = "manifest.json"
WATCH_STREAM_S = 300.0  # a watch is re-opened (same known version) after this deadline
WRITE_BUFFER_BYTES = 8 << 20  # few, large writes of the weights file
KEEP_VERSIONS = 3  # checkpoints kept in a robot's cache: the running one and the newest before it


class ChecksumError(RuntimeError):
    """A downloaded checkpoint does not match its announced hash (the partial file is discarded)."""


@dataclasses.dataclass(frozen=True)
class DownloadedCheckpoint:
    ref: CheckpointRef
    weights_path: Path
    manifest_path: Path

    @property
    def version(self) -> int:
        return self.ref.version


@dataclasses.dataclass
class FollowerStatus:
    announced_version: int = 0
    downloaded_version: int = 0
    downloads: int = 0
    bytes_received: int = 0
    errors: int = 0
    last_error: str = ""


class CheckpointFollower:
    def __init__(
        self,
        link: LinkClient,
        cache_dir: Path,
        robot_id: str = "",
        fleet: str = "",
        retry: RetryPolicy = RetryPolicy(),
        keep_versions: int = KEEP_VERSIONS,
    ):
        if keep_versions < 1:
            raise ValueError(f"keep_versions: must be >= 1, got {keep_versions!r}")
        self._keep_versions = keep_versions
        self._link = link
        self.cache_dir = Path(cache_dir)
        self._partial_dir = self.cache_dir / ".partial"
        self._partial_dir.mkdir(parents=True, exist_ok=True)
        self.robot_id = robot_id
        self.fleet = fleet
        self._retry = retry
        self._announced: LatestSlot[CheckpointRef] = LatestSlot()
        self._latest: Optional[DownloadedCheckpoint] = self._scan_cache()
        self._status = FollowerStatus(downloaded_version=self._latest.version if self._latest else 0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._call: Optional[grpc.Future] = None
        self._threads: list[threading.Thread] = []
        self.on_checkpoint: list[Callable[[DownloadedCheckpoint], None]] = []

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            raise RuntimeError("CheckpointFollower already started")
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._watch_loop, name="sop-ckpt-watch", daemon=True),
            threading.Thread(target=self._download_loop, name="sop-ckpt-download", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: Optional[float] = 10.0) -> None:
        self._stop.set()
        self._announced.close()
        call = self._call
        if call is not None:
            call.cancel()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def latest(self) -> Optional[DownloadedCheckpoint]:
        return self._latest

    def status(self) -> FollowerStatus:
        with self._lock:
            return dataclasses.replace(self._status)

    def _note(self, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._status, key, value)

    # -- watching ---------------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        delays = self._retry.delays()
        while not self._stop.is_set():
            seen = max(self._announced.latest()[0], self._latest.version if self._latest else 0)
            request = policy_pb2.WatchCheckpointsRequest(robot_id=self.robot_id, fleet=self.fleet, known_version=seen)
            try:
                self._call = self._link.policy.WatchCheckpoints(
                    request, metadata=self._link.metadata, timeout=WATCH_STREAM_S
                )
                for announcement in self._call:
                    ref = CheckpointRef.from_proto(announcement.checkpoint)
                    if self._announced.publish(ref.version, ref):
                        self._note(announced_version=ref.version)
                    delays = self._retry.delays()
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    return
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    self._note(last_error=f"watch: {exc.code().name}: {exc.details()}")
                    if not is_transient(exc):
                        _LOGGER.error("checkpoint watch refused: %s", exc.details())
                    self._stop.wait(next(delays))

    # -- downloading --------------------------------------------------------------------------------
    def _download_loop(self) -> None:
        delays = self._retry.delays()
        while not self._stop.is_set():
            newest = self._announced.wait_newer(self._latest.version if self._latest else 0, 1.0)
            if newest is None:
                continue
            try:
                downloaded = self.download(newest[1])
            except (grpc.RpcError, ChecksumError, OSError) as exc:
                self._note(errors=self.status().errors + 1, last_error=f"download v{newest[0]}: {exc}")
                _LOGGER.warning("checkpoint v%d download failed, will retry: %s", newest[0], exc)
                self._stop.wait(next(delays))
                continue
            delays = self._retry.delays()
            for callback in list(self.on_checkpoint):
                try:
                    callback(downloaded)
                except Exception:  # a consumer bug must not stop the follower
                    _LOGGER.exception("on_checkpoint callback %r failed", callback)

    def download(self, ref: CheckpointRef) -> DownloadedCheckpoint:
        """Fetch (resuming a partial file), verify sha256, publish atomically into the cache."""
        final_dir = self.cache_dir / f"v{ref.version:010d}"
        if (final_dir / MANIFEST_NAME).exists():
            return self._adopt(DownloadedCheckpoint(ref, final_dir / WEIGHTS_NAME, final_dir / MANIFEST_NAME))
        part = self._partial_dir / f"v{ref.version:010d}.part"
        offset = part.stat().st_size if part.exists() else 0
        if offset > ref.size_bytes:
            part.unlink()
            offset = 0
        hasher = hashlib.sha256()
        if offset:
            with open(part, "rb") as f:  # a resumed download: hash the bytes already here once
                hashlib.file_digest(f, lambda: hasher)
        if offset < ref.size_bytes:
            self._fetch(ref, part, offset, hasher)
        if hasher.hexdigest() != ref.content_hash:
            part.unlink()
            raise ChecksumError(
                f"checkpoint v{ref.version}: sha256 differs from the announced {ref.content_hash}; "
                "discarded, will download again"
            )
        staging = self._partial_dir / f"v{ref.version:010d}.dir"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        os.replace(part, staging / WEIGHTS_NAME)
        with open(staging / MANIFEST_NAME, "w") as f:
            f.write(
                json.dumps(
                    {**ref.manifest(), "announced": dataclasses.asdict(ref) | {"metrics": dict(ref.metrics)}},
                    indent=2,
                    sort_keys=True,
                    default=str,
                )
            )
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(staging)
        os.replace(staging, final_dir)
        fsync_dir(self.cache_dir)
        self._note(downloads=self.status().downloads + 1)
        downloaded = self._adopt(DownloadedCheckpoint(ref, final_dir / WEIGHTS_NAME, final_dir / MANIFEST_NAME))
        self._prune_cache()
        return downloaded

    def _prune_cache(self) -> None:
        """Keep the newest `keep_versions` checkpoints and no partial download older than the newest one."""
        versions = sorted((int(p.name[1:]), p) for p in self.cache_dir.glob("v*") if p.name[1:].isdigit())
        for _, directory in versions[: -self._keep_versions]:
            shutil.rmtree(directory, ignore_errors=True)
        newest = versions[-1][0] if versions else 0
        for partial in self._partial_dir.glob("v*"):
            digits = partial.name[1:].split(".")[0]
            if not (digits.isdigit() and int(digits) <= newest):
                continue
            if partial.is_dir():
                shutil.rmtree(partial, ignore_errors=True)
            else:
                partial.unlink(missing_ok=True)

    def _fetch(self, ref: CheckpointRef, part: Path, offset: int, hasher: hashlib._Hash) -> None:
        """Append the rest of the weights to `part`, hashing while they arrive; one fsync at the end.

        Bytes written before an interruption stay in the page cache, so a resume (even after a robot
        process crash) continues from the file's size; a power loss can only shorten or corrupt the
        tail, which the sha256 check catches (the file is then discarded and fetched again).
        """
        request = policy_pb2.DownloadCheckpointRequest(version=ref.version, offset=offset)
        stream = self._link.policy.DownloadCheckpoint(
            request, metadata=self._link.metadata, timeout=self._link.deadlines.for_bytes(ref.size_bytes - offset)
        )
        with open(part, "ab", buffering=WRITE_BUFFER_BYTES) as f:
            for chunk in stream:
                if chunk.offset != offset or chunk.content_hash != ref.content_hash:
                    raise ChecksumError(
                        f"checkpoint v{ref.version}: unexpected chunk "
                        f"(offset {chunk.offset} != {offset} or hash changed)"
                    )
                data = chunk.data
                f.write(data)
                hasher.update(data)
                offset += len(data)
                with self._lock:
                    self._status.bytes_received += len(data)
            f.flush()
            os.fsync(f.fileno())

    def _adopt(self, downloaded: DownloadedCheckpoint) -> DownloadedCheckpoint:
        if self._latest is None or downloaded.version > self._latest.version:
            self._latest = downloaded
            self._note(downloaded_version=downloaded.version)
        return downloaded

    def _scan_cache(self) -> Optional[DownloadedCheckpoint]:
        """The newest complete checkpoint already in the cache (a restart does not re-download it)."""
        for directory in sorted(self.cache_dir.glob("v*"), reverse=True):
            try:
                doc = json.loads((directory / MANIFEST_NAME).read_text())["announced"]
                ref = CheckpointRef(**doc)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            return DownloadedCheckpoint(ref, directory / WEIGHTS_NAME, directory / MANIFEST_NAME)
        return None
