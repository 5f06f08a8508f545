"""Robot side of Ingest: drain the spool oldest-first, resumably, deleting only after the learner's ack.

Per episode (up to MAX_IN_FLIGHT at once, started oldest-first): BeginEpisode tells how many
bytes the learner already holds; chunks are sent from there; CommitEpisode returns only after
the learner verified, fsynced and indexed the episode; then (and only then) the spooled file is
removed. Any interruption (learner restart,
uploader crash, network) resumes from the learner's committed offset on the next Begin.
Transient failures are retried with exponential backoff + jitter, keeping oldest-first order;
an episode the learner refuses for good (invalid, too big, forbidden) is parked for
`park_s` and the queue moves on, so one bad file cannot block the robot.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Optional

import grpc

from sop_ros.core.episodes.episode_file import EpisodeFileError, file_sha256, read_episode_metadata
from sop_ros.core.storage.spool import Spool, SpoolEntry
from sop_ros.link.channel import LinkClient, RetryPolicy, is_transient
from sop_ros.link.options import CHUNK_BYTES
from sop_ros.link.protos import ingest_pb2

_LOGGER = logging.getLogger(__name__)
_RESUME_CODES = frozenset(
    {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.DATA_LOSS}
)
MAX_RESUMES_PER_EPISODE = 5  # offset/hash disagreements in a row before the episode is parked
MAX_IN_FLIGHT = 2  # episodes uploading at once: one streams while the learner commits the other


class UploadRefusedError(RuntimeError):
    """The learner refused an episode for a reason retrying will not fix."""


@dataclasses.dataclass
class UploaderStatus:
    state: str = "idle"  # idle | uploading | backoff | stopped
    episodes_uploaded: int = 0
    episodes_already_stored: int = 0
    bytes_sent: int = 0
    transient_errors: int = 0
    refused: int = 0
    pending: int = 0
    parked: int = 0
    last_error: str = ""


class EpisodeUploader:
    def __init__(
        self,
        link: LinkClient,
        spool: Spool,
        robot_id: str,
        retry: RetryPolicy = RetryPolicy(),
        park_s: float = 60.0,
        idle_poll_s: float = 1.0,
        max_in_flight: int = MAX_IN_FLIGHT,
    ):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight: must be >= 1, got {max_in_flight!r}")
        self._max_in_flight = max_in_flight
        self._link = link
        self._spool = spool
        self.robot_id = robot_id
        self._retry = retry
        self._park_s = park_s
        self._idle_poll_s = idle_poll_s
        self._parked: dict[str, float] = {}  # episode id -> monotonic time it may be retried
        self._status = UploaderStatus()
        self._status_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.on_uploaded: list[Callable[[str], None]] = []  # called with the episode id after each ack

    # -- lifecycle for a node: start(), notify() when a new episode is spooled, stop() -------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("EpisodeUploader already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"sop-uploader-{self.robot_id}", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: Optional[float] = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._set(state="stopped")

    def status(self) -> UploaderStatus:
        with self._status_lock:
            status = dataclasses.replace(self._status)
        status.pending = len(self._spool)
        status.parked = len(self._parked)
        return status

    def _run(self) -> None:
        while not self._stop.is_set():
            self.drain(self._stop)
            self._wake.wait(self._idle_poll_s)
            self._wake.clear()

    def _set(self, **changes) -> None:
        with self._status_lock:
            for key, value in changes.items():
                setattr(self._status, key, value)

    def _count(self, key: str, amount: int = 1) -> None:
        with self._status_lock:
            setattr(self._status, key, getattr(self._status, key) + amount)

    # -- the work -------------------------------------------------------------------------------
    def drain(self, stop: Optional[threading.Event] = None, timeout_s: Optional[float] = None) -> int:
        """Upload everything pending (oldest first) until the spool is empty, stop is set or timeout_s passes.

        Up to `max_in_flight` episodes are on their way at once, started oldest first: while the
        learner verifies, fsyncs and indexes one episode before acknowledging it, the next one's
        bytes are already streaming. Returns the number of episodes acknowledged in this call.
        """
        stop = stop or threading.Event()
        end = None if timeout_s is None else time.monotonic() + timeout_s
        done = 0
        in_flight: dict[futures.Future, str] = {}
        with futures.ThreadPoolExecutor(self._max_in_flight, thread_name_prefix=f"sop-upload-{self.robot_id}") as pool:
            while not stop.is_set() and (end is None or time.monotonic() < end):
                if len(in_flight) < self._max_in_flight:
                    now, busy = time.monotonic(), set(in_flight.values())
                    entries = [
                        e
                        for e in self._spool.pending()
                        if e.episode_id not in busy and self._parked.get(e.episode_id, 0.0) <= now
                    ]
                    for entry in entries[: self._max_in_flight - len(in_flight)]:
                        in_flight[pool.submit(self._upload_with_retries, entry, stop, end)] = entry.episode_id
                if not in_flight:
                    break
                finished, _ = futures.wait(in_flight, return_when=futures.FIRST_COMPLETED)
                for future in finished:
                    del in_flight[future]
                    done += future.result()
            for future in futures.as_completed(in_flight):  # stopping: they see stop/end and return
                done += future.result()
        self._set(state="idle")
        return done

    def _upload_with_retries(self, entry: SpoolEntry, stop: threading.Event, end: Optional[float]) -> int:
        """One episode: retried with backoff on transient errors, parked when refused. 1 once acknowledged."""
        delays = self._retry.delays()
        while not stop.is_set() and (end is None or time.monotonic() < end):
            try:
                self._set(state="uploading")
                return self._upload_entry(entry)
            except grpc.RpcError as exc:
                if not is_transient(exc):
                    self._park(entry, f"{exc.code().name}: {exc.details()}")
                    return 0
                self._count("transient_errors")
                self._set(state="backoff", last_error=f"{exc.code().name}: {exc.details()}")
                stop.wait(next(delays))
            except (UploadRefusedError, EpisodeFileError) as exc:
                self._park(entry, str(exc))
                return 0
            except FileNotFoundError:
                return 0  # removed meanwhile (e.g. by another uploader of the same spool)
        return 0

    def _park(self, entry: SpoolEntry, reason: str) -> None:
        self._count("refused")
        self._set(last_error=reason)
        self._parked[entry.episode_id] = time.monotonic() + self._park_s
        _LOGGER.error(
            "episode %s refused, kept in the spool and retried in %.0f s: %s", entry.episode_id, self._park_s, reason
        )

    def _upload_entry(self, entry: SpoolEntry) -> int:
        """Upload one spooled episode; returns 1 once acknowledged (and removed from the spool)."""
        meta = read_episode_metadata(entry.path)
        if meta["robot_id"] != self.robot_id:
            raise UploadRefusedError(
                f"spooled episode {entry.episode_id} belongs to robot {meta['robot_id']!r}, "
                f"this uploader is {self.robot_id!r}"
            )
        size = os.path.getsize(entry.path)
        sha = file_sha256(entry.path)
        begin = ingest_pb2.BeginEpisodeRequest(
            metadata=ingest_pb2.EpisodeMetadata(
                episode_id=entry.episode_id,
                robot_id=self.robot_id,
                task_id=meta["task_id"],
                size_bytes=size,
                sha256=sha,
            )
        )
        link = self._link
        for _ in range(MAX_RESUMES_PER_EPISODE):
            try:
                started = link.ingest.BeginEpisode(begin, metadata=link.metadata, timeout=link.deadlines.unary_s)
                if not started.already_stored:
                    offset = started.committed_offset
                    if offset < size:
                        offset = self._send(entry, offset, size, started.max_chunk_bytes or CHUNK_BYTES)
                    if offset != size:
                        continue
                commit = ingest_pb2.CommitEpisodeRequest(
                    episode_id=entry.episode_id, sha256=sha, robot_id=self.robot_id
                )
                ack = (
                    started
                    if started.already_stored
                    else link.ingest.CommitEpisode(commit, metadata=link.metadata, timeout=link.deadlines.unary_s)
                )
            except grpc.RpcError as exc:
                if exc.code() in _RESUME_CODES:
                    _LOGGER.info("episode %s: %s, resuming from the learner's offset", entry.episode_id, exc.details())
                    continue
                raise
            self._spool.remove(entry.episode_id)
            self._parked.pop(entry.episode_id, None)
            self._count("episodes_already_stored" if getattr(ack, "already_stored", False) else "episodes_uploaded")
            for callback in list(self.on_uploaded):
                callback(entry.episode_id)
            return 1
        raise UploadRefusedError(
            f"episode {entry.episode_id}: learner and robot disagreed {MAX_RESUMES_PER_EPISODE} times in a row "
            "(offset or hash)"
        )

    def _send(self, entry: SpoolEntry, offset: int, size: int, chunk_bytes: int) -> int:
        def chunks() -> Iterator[ingest_pb2.EpisodeChunk]:
            with open(entry.path, "rb") as f:
                f.seek(offset)
                position = offset
                while position < size:
                    data = f.read(min(chunk_bytes, size - position))
                    if not data:
                        raise EpisodeFileError(f"{entry.path} shrank while uploading")
                    yield ingest_pb2.EpisodeChunk(episode_id=entry.episode_id, offset=position, data=data)
                    position += len(data)
                    self._count("bytes_sent", len(data))

        deadline = self._link.deadlines.for_bytes(size - offset)
        response = self._link.ingest.UploadChunks(chunks(), metadata=self._link.metadata, timeout=deadline)
        return int(response.committed_offset)
