"""Ingest + Fleet + health/reflection against a real learner on loopback."""

from __future__ import annotations

import os
import shutil
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from test_link_support import FAST_RETRY, insecure_link, make_episode, running_learner

from sop_ros.core.episodes.episode_file import file_sha256
from sop_ros.core.storage.spool import Spool
from sop_ros.link.fleet_service import CompatibilityPolicy
from sop_ros.link.membership import FleetMember, IncompatibleRobotError, RobotDescription
from sop_ros.link.options import CHUNK_BYTES, PROTOCOL_VERSION
from sop_ros.link.protos import SERVICE_NAMES, fleet_pb2, ingest_pb2
from sop_ros.link.uploader import EpisodeUploader

pytestmark = pytest.mark.timeout(60)


def _spool_with(tmp_path, robot_id: str, count: int, **episode_kw) -> Spool:
    spool = Spool(tmp_path / f"spool-{robot_id}", 1 << 30)
    for i in range(count):
        spool.write(make_episode(robot_id, seed=i, **episode_kw))
    return spool


def _meta(path, robot_id="robot1", sha=None):
    return ingest_pb2.EpisodeMetadata(
        episode_id=path.name.split("_")[-1].removesuffix(".mcap"),
        robot_id=robot_id,
        task_id="reach-v3",
        size_bytes=os.path.getsize(path),
        sha256=sha or file_sha256(path),
    )


def test_upload_commits_each_episode_exactly_once_byte_identical(tmp_path):
    spool = _spool_with(tmp_path, "robot1", 5)
    originals = {e.episode_id: (tmp_path / "copy" / e.path.name) for e in spool.pending()}
    (tmp_path / "copy").mkdir()
    for e in spool.pending():
        shutil.copy(e.path, originals[e.episode_id])
    committed = []
    with running_learner(tmp_path / "learner") as learner:
        learner.service.on_episode_committed.append(lambda stored: committed.append(stored.episode_id))
        uploader = EpisodeUploader(insecure_link(learner.address), spool, "robot1", retry=FAST_RETRY)
        assert uploader.drain(timeout_s=30) == 5
        assert len(spool) == 0
        assert learner.episode_store.count() == 5
        assert sorted(committed) == sorted(originals)
        for eid, original in originals.items():
            stored = learner.episode_store.get(eid)
            assert stored.path.read_bytes() == original.read_bytes()
        # Uploading the same files again stores nothing new and acknowledges "already stored".
        spool2 = Spool(tmp_path / "spool-again", 1 << 30)
        for i in range(5):
            spool2.write(make_episode("robot1", seed=i))
        again = EpisodeUploader(insecure_link(learner.address), spool2, "robot1", retry=FAST_RETRY)
        assert again.drain(timeout_s=30) == 5
        assert again.status().episodes_already_stored == 5 and again.status().episodes_uploaded == 0
        assert learner.episode_store.count() == 5 and len(committed) == 5


@pytest.mark.parametrize("max_in_flight", [1, 2])
def test_next_episode_streams_while_the_learner_commits_the_previous_one(tmp_path, max_in_flight):
    spool = _spool_with(tmp_path, "robot1", 4)
    events = []  # (kind, episode_id, monotonic time)
    with running_learner(tmp_path / "learner") as learner:
        store = learner.episode_store
        commit, append = store.commit, store.append_staged

        def slow_commit(episode_id, *args):
            events.append(("commit_start", episode_id, time.monotonic()))
            time.sleep(0.4)  # a learner busy validating and fsyncing
            try:
                return commit(episode_id, *args)
            finally:
                events.append(("commit_end", episode_id, time.monotonic()))

        def recorded_append(episode_id, *args):
            events.append(("append", episode_id, time.monotonic()))
            return append(episode_id, *args)

        store.commit, store.append_staged = slow_commit, recorded_append
        uploader = EpisodeUploader(
            insecure_link(learner.address), spool, "robot1", retry=FAST_RETRY, max_in_flight=max_in_flight
        )
        assert uploader.drain(timeout_s=30) == 4
        assert len(spool) == 0 and store.count() == 4
    windows = {eid: [t for kind, e, t in events if e == eid and kind.startswith("commit")] for _, eid, _ in events}
    overlapped = [
        e
        for kind, e, t in events
        if kind != "commit_end" and any(other != e and w[0] < t < w[-1] for other, w in windows.items() if len(w) == 2)
    ]
    # One at a time, no other episode moves while the learner commits; with two in flight another one does.
    assert bool(overlapped) == (max_in_flight > 1), events


def test_interrupted_stream_resumes_from_committed_offset(tmp_path):
    spool = _spool_with(tmp_path, "robot1", 1, steps=50, hw=128)  # ~2.5 MB: several chunks
    entry = spool.pending()[0]
    size = os.path.getsize(entry.path)
    assert size > 2 * CHUNK_BYTES
    data = entry.path.read_bytes()
    with running_learner(tmp_path / "learner") as learner:
        link = insecure_link(learner.address)
        begin = link.ingest.BeginEpisode(ingest_pb2.BeginEpisodeRequest(metadata=_meta(entry.path)), timeout=5)
        assert begin.committed_offset == 0 and not begin.already_stored

        def one_chunk_then_die():
            yield ingest_pb2.EpisodeChunk(episode_id=entry.episode_id, offset=0, data=data[:CHUNK_BYTES])
            # The robot dies once the learner has the chunk (not before it was even sent: on a
            # loaded machine the cancel could otherwise overtake the chunk, and nothing would arrive).
            deadline = time.monotonic() + 30
            while learner.episode_store.staged_offset(entry.episode_id) < CHUNK_BYTES and time.monotonic() < deadline:
                time.sleep(0.02)
            raise ConnectionError("robot lost power mid-upload")

        with pytest.raises(grpc.RpcError):
            link.ingest.UploadChunks(one_chunk_then_die(), timeout=60)
        resumed = link.ingest.BeginEpisode(ingest_pb2.BeginEpisodeRequest(metadata=_meta(entry.path)), timeout=5)
        assert resumed.committed_offset == CHUNK_BYTES
        assert learner.episode_store.count() == 0  # nothing visible before commit
        uploader = EpisodeUploader(link, spool, "robot1", retry=FAST_RETRY)
        assert uploader.drain(timeout_s=30) == 1
        assert uploader.status().bytes_sent == size - CHUNK_BYTES  # resumed, not restarted
        assert learner.episode_store.get(entry.episode_id).path.read_bytes() == data


def test_chunk_at_wrong_offset_is_failed_precondition(tmp_path):
    spool = _spool_with(tmp_path, "robot1", 1)
    entry = spool.pending()[0]
    with running_learner(tmp_path / "learner") as learner:
        link = insecure_link(learner.address)
        link.ingest.BeginEpisode(ingest_pb2.BeginEpisodeRequest(metadata=_meta(entry.path)), timeout=5)
        with pytest.raises(grpc.RpcError) as err:
            link.ingest.UploadChunks(
                iter([ingest_pb2.EpisodeChunk(episode_id=entry.episode_id, offset=100, data=b"x" * 10)]), timeout=5
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "offset" in err.value.details()


def test_hash_mismatch_is_data_loss_and_stores_nothing(tmp_path):
    spool = _spool_with(tmp_path, "robot1", 1)
    entry = spool.pending()[0]
    data = entry.path.read_bytes()
    wrong = "0" * 64
    with running_learner(tmp_path / "learner") as learner:
        link = insecure_link(learner.address)
        link.ingest.BeginEpisode(ingest_pb2.BeginEpisodeRequest(metadata=_meta(entry.path, sha=wrong)), timeout=5)
        link.ingest.UploadChunks(
            iter([ingest_pb2.EpisodeChunk(episode_id=entry.episode_id, offset=0, data=data)]), timeout=5
        )
        with pytest.raises(grpc.RpcError) as err:
            link.ingest.CommitEpisode(
                ingest_pb2.CommitEpisodeRequest(episode_id=entry.episode_id, sha256=wrong, robot_id="robot1"), timeout=5
            )
        assert err.value.code() == grpc.StatusCode.DATA_LOSS
        assert "sha256" in err.value.details()
        assert learner.episode_store.count() == 0
        assert learner.episode_store.staged_offset(entry.episode_id) == 0  # the bad bytes are gone too


def test_oversized_episode_is_resource_exhausted(tmp_path):
    spool = _spool_with(tmp_path, "robot1", 1)
    entry = spool.pending()[0]
    with running_learner(tmp_path / "learner", max_episode_bytes=1000) as learner:
        link = insecure_link(learner.address)
        with pytest.raises(grpc.RpcError) as err:
            link.ingest.BeginEpisode(ingest_pb2.BeginEpisodeRequest(metadata=_meta(entry.path)), timeout=5)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "size_bytes" in err.value.details()
        uploader = EpisodeUploader(link, spool, "robot1", retry=FAST_RETRY)
        assert uploader.drain(timeout_s=10) == 0
        assert uploader.status().refused == 1 and len(spool) == 1  # parked, never deleted


def _robot(robot_id="robot1", **overrides) -> RobotDescription:
    fields = dict(
        robot_id=robot_id,
        software_version="0.1.0",
        tasks=("reach-v3",),
        backend="metaworld",
        control_rate_hz=10.0,
        action_dim=4,
        state_dim=7,
    )
    fields.update(overrides)
    return RobotDescription(**fields)


def test_register_heartbeat_and_fleet_status(tmp_path):
    policy = CompatibilityPolicy(software_version="0.1.3", action_dim=4, state_dim=7, tasks=frozenset({"reach-v3"}))
    with running_learner(tmp_path / "learner", compatibility=policy) as learner:
        link = insecure_link(learner.address)
        member = FleetMember(
            link,
            _robot(),
            status_provider=lambda: fleet_pb2.RobotStatus(episodes_spooled=3, policy_version=2, state="running"),
        )
        member.register()
        member.heartbeat()
        status = link.fleet.GetFleetStatus(fleet_pb2.GetFleetStatusRequest(), timeout=5)
        assert [r.robot_id for r in status.robots] == ["robot1"]
        assert status.robots[0].status.episodes_spooled == 3 and status.robots[0].status.state == "running"
        assert status.robots[0].last_heartbeat_ns > 0


@pytest.mark.parametrize(
    "overrides, reason_part",
    [
        ({"protocol_version": PROTOCOL_VERSION + 1}, "protocol version"),
        ({"software_version": "0.2.0"}, "software version"),
        ({"action_dim": 6}, "action_dim"),
        ({"tasks": ("pick-place-v3",)}, "pick-place-v3"),
    ],
)
def test_incompatible_robot_is_refused_with_reason(tmp_path, overrides, reason_part):
    policy = CompatibilityPolicy(software_version="0.1.3", action_dim=4, state_dim=7, tasks=frozenset({"reach-v3"}))
    with running_learner(tmp_path / "learner", compatibility=policy) as learner:
        link = insecure_link(learner.address)
        with pytest.raises(IncompatibleRobotError, match=reason_part):
            FleetMember(link, _robot(**overrides)).register()
        with pytest.raises(grpc.RpcError) as err:  # refused robots are not members
            link.fleet.Heartbeat(fleet_pb2.HeartbeatRequest(robot_id="robot1"), timeout=5)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(IncompatibleRobotError):  # the client re-registers on that and is refused again
            FleetMember(link, _robot(**overrides)).heartbeat()
        assert len(link.fleet.GetFleetStatus(fleet_pb2.GetFleetStatusRequest(), timeout=5).robots) == 0


def test_health_and_reflection_answer(tmp_path):
    with running_learner(tmp_path / "learner") as learner:
        link = insecure_link(learner.address)
        health = health_pb2_grpc.HealthStub(link.channel)
        for name in ("",) + SERVICE_NAMES:
            assert (
                health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
                == health_pb2.HealthCheckResponse.SERVING
            )
        reflection = reflection_pb2_grpc.ServerReflectionStub(link.channel)
        responses = list(
            reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        )
        names = {s.name for s in responses[0].list_services_response.service}
        assert set(SERVICE_NAMES) <= names and "grpc.health.v1.Health" in names


def test_staging_quotas_refuse_one_robots_excess_and_abandoned_uploads_expire(tmp_path):
    import uuid

    def begin(link, robot_id, episode_id, size=10_000):
        meta = ingest_pb2.EpisodeMetadata(
            episode_id=episode_id, robot_id=robot_id, task_id="reach-v3", size_bytes=size, sha256="a" * 64
        )
        return link.ingest.BeginEpisode(ingest_pb2.BeginEpisodeRequest(metadata=meta), timeout=5)

    quotas = dict(max_episode_bytes=10_000, staging_quota_robot_bytes=25_000, staging_quota_total_bytes=40_000)
    with running_learner(tmp_path / "learner", **quotas) as learner:
        link = insecure_link(learner.address)
        ids = [str(uuid.uuid4()) for _ in range(6)]
        begin(link, "robot1", ids[0])
        begin(link, "robot1", ids[1])
        begin(link, "robot1", ids[1])  # a resume re-begins the same upload: not counted twice
        with pytest.raises(grpc.RpcError) as err:
            begin(link, "robot1", ids[2])
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "robot robot1's begun uploads would hold 30000 bytes, above the limit of 25000" in err.value.details()
        begin(link, "robot2", ids[3])  # another robot is unaffected by robot1's excess ...
        begin(link, "robot2", ids[4], size=5_000)
        with pytest.raises(grpc.RpcError) as err:  # ... until all robots together reach the total
            begin(link, "robot3", ids[5])
        assert "all robots' begun uploads would hold 45000 bytes" in err.value.details()
        # Begun, never uploaded: expired (with age 0 everything begun counts as abandoned), the quota is free again.
        assert learner.service.ingest.expire_stale(0.0) == sorted(ids[:2] + ids[3:5])
        begin(link, "robot1", ids[2])


def test_garbage_requests_are_counted_and_logged_once_per_interval(tmp_path, caplog):
    import logging

    from sop_ros.link.log_limits import UNDECODABLE_REQUEST, limit_grpc_logs

    with running_learner(tmp_path / "learner") as learner:
        channel = grpc.insecure_channel(learner.address)
        begin = channel.unary_unary("/sop.v1.Ingest/BeginEpisode")  # raw bytes in and out
        counts = limit_grpc_logs().counts
        before = counts[UNDECODABLE_REQUEST]
        with caplog.at_level(logging.DEBUG, logger="grpc"):
            for _ in range(40):
                with pytest.raises(grpc.RpcError) as err:
                    begin(b"\xff\xff\xff garbage", timeout=5)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert counts[UNDECODABLE_REQUEST] - before == 40
        lines = [r for r in caplog.records if r.name in ("grpc._common", "sop_ros.link.aio_handlers")]
        assert len(lines) <= 1 and all(r.exc_info is None for r in lines)  # no traceback each, nor one per request
        assert "Traceback" not in caplog.text
        channel.close()
        # The learner still answers well-formed requests.
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(insecure_link(learner.address).channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING


def test_rate_limited_records_pass_one_per_kind_per_interval_and_say_how_many_were_held_back():
    import logging

    from sop_ros.link.log_limits import RateLimitedRecords

    now = [0.0]
    limit = RateLimitedRecords(interval_s=60.0, clock=lambda: now[0])

    def record(msg):
        try:
            raise ValueError("bad bytes")
        except ValueError:
            import sys

            return logging.LogRecord("grpc._common", logging.ERROR, __file__, 1, msg, None, sys.exc_info())

    first = record("Exception deserializing message!")
    assert limit.filter(first) and first.exc_info is None and "ValueError: bad bytes" in first.getMessage()
    assert not any(limit.filter(record("Exception deserializing message!")) for _ in range(5))
    assert limit.filter(record("another kind"))  # kinds are limited apart
    now[0] = 61.0
    later = record("Exception deserializing message!")
    assert limit.filter(later) and "[5 more like this in the last 60 s not logged]" in later.getMessage()
    assert limit.counts["Exception deserializing message!"] == 7


def test_fleet_status_pages_within_the_message_limit_and_registrations_are_bounded(tmp_path):
    from sop_ros.link.fleet_service import MAX_TASKS_PER_ROBOT
    from sop_ros.link.options import MAX_MESSAGE_BYTES
    from sop_ros.link.protos import fleet_pb2

    def register(link, robot_id, tasks, version="1.0.0"):
        config = fleet_pb2.RobotConfig(tasks=tasks, action_dim=4, state_dim=4, control_rate_hz=10.0)
        request = fleet_pb2.RegisterRequest(
            robot_id=robot_id, software_version=version, protocol_version=1, config=config
        )
        return link.fleet.Register(request, timeout=5)

    with running_learner(tmp_path / "learner") as learner:
        link = insecure_link(learner.address)
        refused = {
            "too many tasks": ([f"t{i}" for i in range(MAX_TASKS_PER_ROBOT + 1)], "1.0.0"),
            "a task name with a newline": (["push-v3\n"], "1.0.0"),
            "a long version": (["push-v3"], "1" * 100),
        }
        for why, (tasks, version) in refused.items():
            with pytest.raises(grpc.RpcError) as err:
                register(link, "robot1", tasks, version)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, why
        # 300 robots, each with the most it may report: ~2.6 MB of status, more than one message holds.
        long_tasks = [f"{i:02d}" + "x" * 126 for i in range(MAX_TASKS_PER_ROBOT)]
        robots = [f"robot{i:03d}" for i in range(300)]
        for robot_id in robots:
            assert register(link, robot_id, long_tasks).accepted
        seen, token, pages = [], "", 0
        while True:
            page = link.fleet.GetFleetStatus(fleet_pb2.GetFleetStatusRequest(page_token=token), timeout=5)
            assert page.ByteSize() < MAX_MESSAGE_BYTES and page.robots_total == 300
            seen += [r.robot_id for r in page.robots]
            token, pages = page.next_page_token, pages + 1
            if not token:
                break
        assert seen == robots and pages >= 3
        small = link.fleet.GetFleetStatus(fleet_pb2.GetFleetStatusRequest(page_size=10), timeout=5)
        assert [r.robot_id for r in small.robots] == robots[:10] and small.next_page_token == "robot009"


def test_a_lost_learner_is_logged_once_when_it_goes_and_once_when_it_is_back(tmp_path, caplog):
    import logging

    from conftest import free_port, wait_for

    port = free_port()
    config = dict(address=f"127.0.0.1:{port}", heartbeat_interval_ms=50)
    attempts = []  # one per heartbeat attempt (the member asks for the status before each)

    def status():
        attempts.append(1)
        return fleet_pb2.RobotStatus(episodes_spooled=7, spool_bytes=3 << 20)

    learner = running_learner(tmp_path / "learner", **config)
    learner.__enter__()
    member = FleetMember(insecure_link(f"127.0.0.1:{port}"), _robot(), status_provider=status, retry=FAST_RETRY)
    with caplog.at_level(logging.INFO, logger="sop_ros.link.membership"):
        member.start()
        try:
            wait_for(lambda: len(attempts) >= 3, 10, "heartbeats to the first learner")
            learner.__exit__(None, None, None)  # the learner goes away; the robot keeps retrying
            wait_for(lambda: not member.learner_reachable, 20, "the member to notice the outage")
            seen = len(attempts)
            wait_for(lambda: len(attempts) >= seen + 5, 20, "five more failed heartbeats")
            with running_learner(tmp_path / "learner2", **config):
                wait_for(lambda: member.learner_reachable, 30, "the member to reach the new learner")
                member.stop()  # before this learner goes too (that would be a second outage)
        finally:
            member.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "sop_ros.link.membership"]
    down = [line for line in lines if "unreachable" in line]
    back = [line for line in lines if "reachable again" in line]
    assert len(down) == 1 and f"127.0.0.1:{port}" in down[0] and "7 episode(s), 3.0 MiB wait in the spool" in down[0]
    assert len(back) == 1 and "backlog 7 episode(s)" in back[0]
    assert member.last_error == ""
