"""Checkpoint announcements (newest only) and resumable, hash-verified downloads on a real learner."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from test_link_support import FAST_RETRY, insecure_link, running_learner

from sop_ros.link.checkpoint_info import CheckpointRef, info_from_manifest
from sop_ros.link.follower import CheckpointFollower, ChecksumError
from sop_ros.link.protos import policy_pb2

pytestmark = pytest.mark.timeout(60)


def _publish(learner, count: int, numel: int = 1000, parent=None) -> list:
    manifests = []
    for i in range(count):
        m = learner.checkpoint_store.publish(
            {"w": torch.full((numel,), float(i))},
            algorithm="hg_dagger",
            training_step=i,
            metrics={"loss": 1.0 / (i + 1)},
            parent_version=parent,
        )
        manifests.append(m)
        parent = m.version
    return manifests


def _wait_for(predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_raw_watch_stream_skips_to_newest_for_a_reader_that_does_not_keep_up(tmp_path):
    with running_learner(tmp_path / "learner") as learner:
        manifests = _publish(learner, 1, numel=10)
        learner.service.publish_checkpoint(manifests[0])
        link = insecure_link(learner.address)
        stream = link.policy.WatchCheckpoints(
            policy_pb2.WatchCheckpointsRequest(robot_id="robot1", fleet="default"), timeout=20
        )
        assert next(stream).checkpoint.version == manifests[0].version
        manifests += _publish(learner, 29, numel=10, parent=manifests[0].version)
        for m in manifests[1:]:  # announced while the robot is not reading
            learner.service.publish_checkpoint(m)
        time.sleep(0.5)
        received = []
        while not received or received[-1] != manifests[-1].version:
            received.append(next(stream).checkpoint.version)
        stream.cancel()
        assert received == sorted(received)
        assert len(received) < len(manifests) - 1, f"slow reader got a backlog: {received}"


def test_follower_with_slow_consumer_downloads_only_the_newest(tmp_path):
    with running_learner(tmp_path / "learner") as learner:
        manifests = _publish(learner, 1)
        learner.service.publish_checkpoint(manifests[0])
        follower = CheckpointFollower(
            insecure_link(learner.address), tmp_path / "cache", robot_id="robot1", fleet="default", retry=FAST_RETRY
        )
        seen, first_done = [], threading.Event()

        def slow_consumer(downloaded):
            seen.append(downloaded.version)
            first_done.set()
            time.sleep(0.5)  # e.g. loading the weights on a busy robot

        follower.on_checkpoint.append(slow_consumer)
        follower.start()
        try:
            assert first_done.wait(10)
            manifests += _publish(learner, 11, parent=manifests[0].version)
            for m in manifests[1:]:
                learner.service.publish_checkpoint(m)
                time.sleep(0.01)
            _wait_for(lambda: seen and seen[-1] == manifests[-1].version)
        finally:
            follower.stop()
        assert seen[0] == manifests[0].version and seen == sorted(seen)
        assert len(seen) <= 3, f"downloaded a backlog: {seen}"
        latest = follower.latest()
        assert latest.version == manifests[-1].version
        assert latest.weights_path.read_bytes() == learner.checkpoint_store.weights_path(latest.version).read_bytes()
        assert (
            CheckpointRef(**__import__("json").loads(latest.manifest_path.read_text())["announced"]).content_hash
            == manifests[-1].content_hash
        )


def test_download_resumes_and_verifies_hash(tmp_path):
    with running_learner(tmp_path / "learner") as learner:
        (manifest,) = _publish(learner, 1, numel=700_000)  # ~2.8 MB: several chunks
        ref = CheckpointRef.from_proto(info_from_manifest(manifest))
        weights = learner.checkpoint_store.weights_path(manifest.version).read_bytes()
        follower = CheckpointFollower(insecure_link(learner.address), tmp_path / "cache")
        part = tmp_path / "cache" / ".partial" / f"v{ref.version:010d}.part"
        part.write_bytes(weights[:1_500_000])  # a download interrupted earlier
        downloaded = follower.download(ref)
        assert follower.status().bytes_received == len(weights) - 1_500_000
        assert downloaded.weights_path.read_bytes() == weights and not part.exists()

        # A corrupt partial file is caught by the hash, discarded, and the next attempt succeeds.
        follower2 = CheckpointFollower(insecure_link(learner.address), tmp_path / "cache2")
        part2 = tmp_path / "cache2" / ".partial" / f"v{ref.version:010d}.part"
        part2.write_bytes(b"\0" * 1000)
        with pytest.raises(ChecksumError):
            follower2.download(ref)
        assert not part2.exists() and follower2.latest() is None
        assert follower2.download(ref).weights_path.read_bytes() == weights

        # A restarted robot finds the verified checkpoint in its cache without downloading.
        again = CheckpointFollower(insecure_link(learner.address), tmp_path / "cache")
        assert again.latest().version == ref.version and again.status().bytes_received == 0


def test_download_of_unknown_version_is_not_found(tmp_path):
    import grpc

    with running_learner(tmp_path / "learner") as learner:
        link = insecure_link(learner.address)
        with pytest.raises(grpc.RpcError) as err:
            list(link.policy.DownloadCheckpoint(policy_pb2.DownloadCheckpointRequest(version=7), timeout=5))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_robot_cache_keeps_the_newest_versions_and_drops_stale_partials(tmp_path):
    with running_learner(tmp_path / "learner") as learner:
        manifests = _publish(learner, 5)
        cache = tmp_path / "cache"
        follower = CheckpointFollower(insecure_link(learner.address), cache, keep_versions=2)
        stale = cache / ".partial" / f"v{manifests[2].version:010d}.part"
        for m in manifests[:2]:
            follower.download(CheckpointRef.from_proto(info_from_manifest(m)))
        stale.write_bytes(b"\0" * 10)  # v3 was interrupted; the robot moved on to newer ones
        for m in manifests[3:]:
            follower.download(CheckpointRef.from_proto(info_from_manifest(m)))
        assert sorted(p.name for p in cache.glob("v*")) == [f"v{m.version:010d}" for m in manifests[3:]]
        assert not stale.exists() and follower.latest().version == manifests[-1].version
        # A restarted robot still finds its newest checkpoint.
        assert CheckpointFollower(insecure_link(learner.address), cache).latest().version == manifests[-1].version
        with pytest.raises(ValueError, match="keep_versions"):
            CheckpointFollower(insecure_link(learner.address), tmp_path / "other", keep_versions=0)
