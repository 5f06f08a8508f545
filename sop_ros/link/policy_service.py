"""Policy: newest-only checkpoint announcements and resumable chunked downloads of the weights file.

Downloads are served from one read-only memory map per checkpoint version, shared by every robot
fetching it (a fan-out to the whole fleet reads the file once, from the page cache); checkpoint
files are immutable, so a map never sees its file change.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import mmap
import threading
from collections.abc import AsyncIterator, Iterator

import grpc

from sop_ros.core.storage.checkpoint_store import CheckpointStore
from sop_ros.link import validate
from sop_ros.link.aio_handlers import LoopContext, Refusal
from sop_ros.link.announcer import LatestSlot
from sop_ros.link.auth import Authenticator
from sop_ros.link.checkpoint_info import info_from_manifest
from sop_ros.link.options import CHUNK_BYTES
from sop_ros.link.protos import policy_pb2, policy_pb2_grpc

_LOGGER = logging.getLogger(__name__)
WATCH_POLL_S = 1.0  # how often a watch stream re-checks its caller's credentials (revocation)
_MAPPED_VERSIONS = 4  # checkpoint files kept mapped (streams still reading an evicted one keep it alive)


class PolicyServicer(policy_pb2_grpc.PolicyServicer):
    def __init__(self, store: CheckpointStore, authenticator: Authenticator):
        self._store = store
        self._auth = authenticator
        self._slots: dict[str, LatestSlot[policy_pb2.CheckpointInfo]] = {}
        self._slots_lock = threading.Lock()
        self._closed = False
        self._maps: collections.OrderedDict[int, mmap.mmap] = collections.OrderedDict()
        self._maps_lock = threading.Lock()

    def _weights_map(self, version: int) -> mmap.mmap:
        """The shared read-only map of a checkpoint's weights file (opened on the first download)."""
        with self._maps_lock:
            mapped = self._maps.get(version)
            if mapped is None:
                with open(self._store.weights_path(version), "rb") as f:
                    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                mapped.madvise(mmap.MADV_SEQUENTIAL)
                self._maps[version] = mapped
                while len(self._maps) > _MAPPED_VERSIONS:
                    self._maps.popitem(last=False)  # unmapped once no stream holds it
            self._maps.move_to_end(version)
            return mapped

    def _slot(self, fleet: str) -> LatestSlot[policy_pb2.CheckpointInfo]:
        with self._slots_lock:
            slot = self._slots.get(fleet)
            if slot is None:
                slot = self._slots[fleet] = LatestSlot()
                if self._closed:
                    slot.close()
                latest = latest_checkpoint(self._store, fleet)
                if latest is not None:
                    slot.publish(int(latest.version), info_from_manifest(latest))
            return slot

    def publish(self, manifest) -> bool:
        """Announce a checkpoint to every watcher of its fleet (and of all fleets); True if it was newer."""
        info = info_from_manifest(manifest)
        targets = {info.fleet, ""}
        return any([self._slot(fleet).publish(info.version, info) for fleet in targets])

    def close(self) -> None:
        with self._slots_lock:
            self._closed = True
            for slot in self._slots.values():
                slot.close()
        with self._maps_lock:
            self._maps.clear()

    async def WatchCheckpoints(
        self, request: policy_pb2.WatchCheckpointsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[policy_pb2.CheckpointAnnouncement]:
        """Served on the event loop: an idle watch holds no thread, only a listener on its fleet's slot."""
        checks = LoopContext(context)
        try:
            self._check_watch(request, checks)
        except Refusal as refusal:
            await refusal.send(context)
        slot = self._slots.get(request.fleet) or await asyncio.to_thread(self._slot, request.fleet)  # may read disk
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def on_publish() -> None:  # runs on the publishing (trainer) thread: only schedule the wake-up
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone
                loop.call_soon_threadsafe(wake.set)

        slot.add_listener(on_publish)
        try:
            seen = request.known_version
            while not slot.closed:
                wake.clear()
                newest = slot.newer(seen)
                if newest is not None:
                    seen, info = newest
                    yield policy_pb2.CheckpointAnnouncement(checkpoint=info)
                    continue
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), WATCH_POLL_S)
                try:
                    self._auth.identify(checks)  # a robot revoked meanwhile loses its stream within WATCH_POLL_S
                except Refusal as refusal:
                    await refusal.send(context)
        finally:
            slot.remove_listener(on_publish)

    def _check_watch(self, request: policy_pb2.WatchCheckpointsRequest, context: LoopContext) -> None:
        if request.robot_id:
            self._auth.require_robot(context, validate.name(context, request.robot_id, "robot_id"))
        else:
            self._auth.identify(context)
        if request.fleet:
            validate.name(context, request.fleet, "fleet")

    def DownloadCheckpoint(
        self, request: policy_pb2.DownloadCheckpointRequest, context: grpc.ServicerContext
    ) -> Iterator[policy_pb2.CheckpointChunk]:
        self._auth.identify(context)
        manifest = self._store.get(request.version) if request.version > 0 else None
        if manifest is None:
            validate.fail(context, grpc.StatusCode.NOT_FOUND, f"no checkpoint version {request.version}")
        total = int(manifest.size_bytes)
        if request.offset > total:
            validate.fail(
                context,
                grpc.StatusCode.OUT_OF_RANGE,
                f"offset {request.offset} is past the end of checkpoint {request.version} ({total} bytes)",
            )
        try:
            weights = self._weights_map(request.version)
        except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
            validate.fail(
                context, grpc.StatusCode.DATA_LOSS, f"checkpoint {request.version} weights are unreadable: {exc}"
            )
        if len(weights) != total:
            validate.fail(
                context,
                grpc.StatusCode.DATA_LOSS,
                f"checkpoint {request.version} file has {len(weights)} bytes, its manifest says {total}",
            )
        offset = request.offset
        while offset < total and context.is_active():
            end = min(offset + CHUNK_BYTES, total)
            yield policy_pb2.CheckpointChunk(
                version=request.version,
                offset=offset,
                data=weights[offset:end],
                total_bytes=total,
                content_hash=manifest.content_hash,
            )
            offset = end


def latest_checkpoint(store: CheckpointStore, fleet: str = ""):
    """The newest manifest of `fleet`, or of any fleet when fleet is empty (None when there is none)."""
    if fleet:
        return store.latest(fleet)
    versions = store.versions()
    return store.get(versions[-1]) if versions else None
