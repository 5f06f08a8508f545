"""Ingest: resumable, idempotent episode uploads into the EpisodeStore.

The servicer is thin: it checks fields and identity, then leaves durability to the store
(staged bytes appended at an exact offset, commit = verify sha256 + validate + fsync + index). An
episode becomes visible only through a successful commit, so nothing partial is ever stored.
Every offset this service reports (BeginEpisode, the end of an UploadChunks stream) is fsynced
first, once per call rather than once per chunk; a robot resumes from BeginEpisode's offset.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Optional

import grpc

from sop_ros.core.storage.episode_store import EpisodeRejectedError, EpisodeStore, OffsetMismatchError, RejectionCode
from sop_ros.link import validate
from sop_ros.link.auth import Authenticator
from sop_ros.link.options import CHUNK_BYTES
from sop_ros.link.protos import ingest_pb2, ingest_pb2_grpc

_LOGGER = logging.getLogger(__name__)
_LOCK_STRIPES = 64
_MAX_DECLARED = 10_000  # begun-but-uncommitted uploads remembered (oldest forgotten first)

EpisodeCommittedCallback = Callable[[object], None]  # receives the store's StoredEpisode


@dataclasses.dataclass(frozen=True)
class StagingQuota:
    """Bytes of begun, uncommitted uploads (their declared sizes) one robot, and all robots, may hold."""

    per_robot_bytes: int
    total_bytes: int


@dataclasses.dataclass(frozen=True)
class _Declared:
    meta: ingest_pb2.EpisodeMetadata
    at: float  # time.monotonic() of the BeginEpisode


class IngestServicer(ingest_pb2_grpc.IngestServicer):
    def __init__(
        self,
        store: EpisodeStore,
        authenticator: Authenticator,
        max_episode_bytes: int,
        quota: Optional[StagingQuota] = None,
    ):
        self._store = store
        self._auth = authenticator
        self._max_episode_bytes = max_episode_bytes
        self._quota = quota
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._declared: collections.OrderedDict[str, _Declared] = collections.OrderedDict()
        self._declared_lock = threading.Lock()
        self.on_episode_committed: list[EpisodeCommittedCallback] = []

    def _lock_for(self, episode_id: str) -> threading.Lock:
        return self._locks[hash(episode_id) % _LOCK_STRIPES]

    def _remember(self, context: grpc.ServicerContext, meta: ingest_pb2.EpisodeMetadata) -> None:
        """Record a begun upload (its owner and size), within the staging quota."""
        with self._declared_lock:
            if self._quota is not None and meta.episode_id not in self._declared:
                self._check_quota(context, meta)
            self._declared[meta.episode_id] = _Declared(meta, time.monotonic())
            self._declared.move_to_end(meta.episode_id)
            while len(self._declared) > _MAX_DECLARED:
                self._declared.popitem(last=False)

    def _check_quota(self, context: grpc.ServicerContext, meta: ingest_pb2.EpisodeMetadata) -> None:
        held = [d.meta for d in self._declared.values()]
        robot = sum(m.size_bytes for m in held if m.robot_id == meta.robot_id) + meta.size_bytes
        total = sum(m.size_bytes for m in held) + meta.size_bytes
        for scope, value, limit in (
            (f"robot {meta.robot_id}'s", robot, self._quota.per_robot_bytes),
            ("all robots'", total, self._quota.total_bytes),
        ):
            if value > limit:
                validate.fail(
                    context,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"staging quota: {scope} begun uploads would hold {value} bytes, above the limit of {limit}; "
                    "finish the uploads in progress first (abandoned ones expire)",
                )

    def _declared_meta(self, episode_id: str) -> ingest_pb2.EpisodeMetadata | None:
        with self._declared_lock:
            declared = self._declared.get(episode_id)
        return None if declared is None else declared.meta

    def expire_stale(self, older_than_s: float) -> list[str]:
        """Forget uploads begun or last written more than `older_than_s` ago: their staged bytes and quota."""
        removed = set(self._store.discard_stale_staging(older_than_s))
        cutoff = time.monotonic() - older_than_s
        with self._declared_lock:
            for episode_id, declared in list(self._declared.items()):
                if episode_id in removed or (declared.at < cutoff and not self._store.staged_offset(episode_id)):
                    del self._declared[episode_id]
                    removed.add(episode_id)
        if removed:
            _LOGGER.info("expired %d abandoned upload(s) older than %.0f s", len(removed), older_than_s)
        return sorted(removed)

    def BeginEpisode(
        self, request: ingest_pb2.BeginEpisodeRequest, context: grpc.ServicerContext
    ) -> ingest_pb2.BeginEpisodeResponse:
        meta = request.metadata
        validate.episode_id(context, meta.episode_id, "metadata.episode_id")
        validate.name(context, meta.robot_id, "metadata.robot_id")
        validate.name(context, meta.task_id, "metadata.task_id")
        validate.sha256_hex(context, meta.sha256, "metadata.sha256")
        if meta.size_bytes == 0:
            validate.fail(context, grpc.StatusCode.INVALID_ARGUMENT, "metadata.size_bytes: must be > 0")
        if meta.size_bytes > self._max_episode_bytes:
            validate.fail(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"metadata.size_bytes: {meta.size_bytes} exceeds this learner's limit of "
                f"{self._max_episode_bytes} bytes per episode",
                validate.REASON_EPISODE_TOO_LARGE,
            )
        self._auth.require_robot(context, meta.robot_id)
        with self._lock_for(meta.episode_id):
            begun = self._declared_meta(meta.episode_id)
            if begun is not None and begun.robot_id != meta.robot_id:  # its staged bytes are another robot's
                validate.fail(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"episode {meta.episode_id} is being uploaded by another robot",
                )
            if self._store.contains(meta.episode_id):
                stored = self._store.get(meta.episode_id)
                if stored.robot_id != meta.robot_id:
                    validate.fail(
                        context,
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"episode {meta.episode_id} is stored for another robot",
                    )
                return ingest_pb2.BeginEpisodeResponse(
                    committed_offset=meta.size_bytes, already_stored=True, max_chunk_bytes=CHUNK_BYTES
                )
            offset = self._store.sync_staged(meta.episode_id)  # the robot resumes from here: make it durable
        if offset > meta.size_bytes:
            validate.fail(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the learner holds {offset} staged bytes of episode {meta.episode_id}, "
                f"more than its declared size {meta.size_bytes}",
            )
        self._remember(context, meta)
        return ingest_pb2.BeginEpisodeResponse(
            committed_offset=offset, already_stored=False, max_chunk_bytes=CHUNK_BYTES
        )

    def UploadChunks(
        self, request_iterator: Iterator[ingest_pb2.EpisodeChunk], context: grpc.ServicerContext
    ) -> ingest_pb2.UploadChunksResponse:
        identity = self._auth.identify(context)
        episode_id = None
        meta = None
        offset = 0
        for chunk in request_iterator:
            if not context.is_active():
                break  # client went away; staged bytes so far are kept for the resume
            if episode_id is None:
                episode_id = validate.episode_id(context, chunk.episode_id)
                meta = self._declared_meta(episode_id)
                if meta is None:
                    validate.fail(
                        context,
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"episode {episode_id}: call BeginEpisode before UploadChunks",
                    )
                if not identity.may_act_as_robot(meta.robot_id):
                    validate.fail(
                        context,
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"{identity.role.value} {identity.principal!r} may not upload for robot {meta.robot_id!r}",
                    )
            elif chunk.episode_id != episode_id:
                validate.fail(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"episode_id changed within one stream ({episode_id} -> {chunk.episode_id[:80]!r}); "
                    "use one stream per episode",
                )
            self._append(context, meta, chunk)
        if episode_id is None:
            validate.fail(context, grpc.StatusCode.INVALID_ARGUMENT, "empty upload stream: send at least one chunk")
        with self._lock_for(episode_id):
            offset = self._store.sync_staged(episode_id)  # one fsync per stream, not per chunk
        return ingest_pb2.UploadChunksResponse(committed_offset=offset)

    def _append(
        self, context: grpc.ServicerContext, meta: ingest_pb2.EpisodeMetadata, chunk: ingest_pb2.EpisodeChunk
    ) -> int:
        size = len(chunk.data)
        if size == 0:
            validate.fail(context, grpc.StatusCode.INVALID_ARGUMENT, "chunk.data: empty chunk")
        if size > CHUNK_BYTES:
            validate.fail(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"chunk.data: {size} bytes exceeds the {CHUNK_BYTES}-byte chunk limit",
            )
        if chunk.offset + size > meta.size_bytes:
            validate.fail(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"chunk at offset {chunk.offset} (+{size} bytes) runs past the declared episode size {meta.size_bytes}",
                validate.REASON_EPISODE_TOO_LARGE,
            )
        with self._lock_for(meta.episode_id):
            if self._store.contains(meta.episode_id):
                validate.fail(
                    context,
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"episode {meta.episode_id} is already stored; call BeginEpisode",
                )
            try:
                return self._store.append_staged(meta.episode_id, chunk.offset, chunk.data)
            except OffsetMismatchError as exc:
                validate.fail(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"offset mismatch: {exc}; call BeginEpisode and resume from its committed_offset",
                )
            except EpisodeRejectedError as exc:
                validate.fail(
                    context,
                    _REJECTION_STATUS[exc.code],
                    str(exc),
                    validate.REASON_EPISODE_TOO_LARGE if exc.code is RejectionCode.TOO_LARGE else "",
                )

    def CommitEpisode(
        self, request: ingest_pb2.CommitEpisodeRequest, context: grpc.ServicerContext
    ) -> ingest_pb2.CommitEpisodeResponse:
        validate.episode_id(context, request.episode_id)
        validate.sha256_hex(context, request.sha256)
        validate.name(context, request.robot_id, "robot_id")
        self._auth.require_robot(context, request.robot_id)
        meta = self._declared_meta(request.episode_id)
        if meta is not None and meta.robot_id != request.robot_id:
            validate.fail(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"episode {request.episode_id} is being uploaded by another robot",
            )
        if meta is not None and meta.sha256 != request.sha256:
            validate.fail(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "sha256 differs from what BeginEpisode declared for this episode",
            )
        with self._lock_for(request.episode_id):
            if self._store.contains(request.episode_id):
                return self._repeat_ack(context, request)
            staged = self._store.staged_offset(request.episode_id)
            if meta is not None and staged != meta.size_bytes:
                validate.fail(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"episode {request.episode_id} is incomplete: {staged} of {meta.size_bytes} bytes received",
                )
            if staged == 0:
                validate.fail(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"episode {request.episode_id}: nothing uploaded; call BeginEpisode and UploadChunks first",
                )
            try:
                stored = self._store.commit(
                    request.episode_id, request.sha256, request.robot_id, meta.task_id if meta is not None else None
                )
            except EpisodeRejectedError as exc:
                validate.fail(context, _REJECTION_STATUS[exc.code], str(exc))
        with self._declared_lock:
            self._declared.pop(request.episode_id, None)
        _LOGGER.debug(
            "acknowledged episode %s from %s (%d bytes)", request.episode_id, request.robot_id, stored.size_bytes
        )
        for callback in list(self.on_episode_committed):
            try:
                callback(stored)
            except Exception:  # a hook must never undo or fail an acknowledged commit
                _LOGGER.exception("on_episode_committed callback %r failed", callback)
        return ingest_pb2.CommitEpisodeResponse(
            episode_id=request.episode_id, size_bytes=stored.size_bytes, sha256=stored.sha256, already_stored=False
        )

    def _repeat_ack(
        self, context: grpc.ServicerContext, request: ingest_pb2.CommitEpisodeRequest
    ) -> ingest_pb2.CommitEpisodeResponse:
        stored = self._store.get(request.episode_id)
        if stored.sha256 != request.sha256 or stored.robot_id != request.robot_id:
            validate.fail(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                f"episode {request.episode_id} is already stored with different content or robot",
            )
        return ingest_pb2.CommitEpisodeResponse(
            episode_id=request.episode_id, size_bytes=stored.size_bytes, sha256=stored.sha256, already_stored=True
        )


# How each store rejection reads on the wire (the uploader resumes on FAILED_PRECONDITION/DATA_LOSS/
# ALREADY_EXISTS and parks the episode on the others).
_REJECTION_STATUS: dict[RejectionCode, grpc.StatusCode] = {
    RejectionCode.HASH_MISMATCH: grpc.StatusCode.DATA_LOSS,
    RejectionCode.INVALID_FILE: grpc.StatusCode.INVALID_ARGUMENT,
    RejectionCode.EPISODE_ID_MISMATCH: grpc.StatusCode.INVALID_ARGUMENT,
    RejectionCode.ROBOT_MISMATCH: grpc.StatusCode.PERMISSION_DENIED,
    RejectionCode.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RejectionCode.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    RejectionCode.NOTHING_STAGED: grpc.StatusCode.FAILED_PRECONDITION,
}
