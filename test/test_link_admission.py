"""A learner holds more robots than it has worker threads, and one robot's excess is refused to it alone
(issue 12 item 3): idle checkpoint watches hold no thread; per-robot limits on watches and calls answer
RESOURCE_EXHAUSTED to the robot over its limit while every other robot, and the health check, are served."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_link_support import insecure_link, running_learner

from sop_ros.link.admission import Admission, AdmissionLimits, Kind
from sop_ros.link.auth import Role, new_token, write_tokens_file
from sop_ros.link.options import PROTOCOL_VERSION, worker_threads
from sop_ros.link.protos import fleet_pb2, ingest_pb2, policy_pb2

pytestmark = pytest.mark.timeout(120)
LIMITS = AdmissionLimits()


def _register(link, robot_id: str, metadata=()) -> None:
    request = fleet_pb2.RegisterRequest(robot_id=robot_id, protocol_version=PROTOCOL_VERSION)
    assert link.fleet.Register(request, metadata=metadata, timeout=10).accepted


def _heartbeat(link, robot_id: str, metadata=()) -> None:
    link.fleet.Heartbeat(fleet_pb2.HeartbeatRequest(robot_id=robot_id), metadata=metadata, timeout=10)


def _serving(link) -> bool:
    response = health_pb2_grpc.HealthStub(link.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return response.status == health_pb2.HealthCheckResponse.SERVING


def _settle(calls: list, open_count: int, timeout: float = 10.0) -> tuple[list, list]:
    """Wait until all but `open_count` calls have ended; returns (open calls, ended calls)."""
    end = time.monotonic() + timeout
    while sum(not c.done() for c in calls) > open_count and time.monotonic() < end:
        time.sleep(0.02)
    time.sleep(0.2)  # an admitted call must stay open, not merely be late to fail
    return [c for c in calls if not c.done()], [c for c in calls if c.done()]


def _watch(link, robot_id: str, metadata=()):
    return link.policy.WatchCheckpoints(policy_pb2.WatchCheckpointsRequest(robot_id=robot_id), metadata=metadata)


def test_admission_counts_per_robot_and_kind_and_releases():
    admission = Admission(AdmissionLimits(watches_per_robot=2, calls_per_robot=1, total=4))
    first = [admission.admit(Kind.WATCH, "a") for _ in range(3)]
    assert first[2] is None and "2 checkpoint watches" in admission.refusal(Kind.WATCH, "a")
    call = admission.admit(Kind.CALL, "a")
    assert call is not None and admission.admit(Kind.CALL, "a") is None
    assert admission.admit(Kind.WATCH, "b") is not None and admission.total == 4
    assert admission.admit(Kind.CALL, None) is None  # the learner's total is reached, for everyone
    first[0].release()
    first[0].release()  # idempotent
    assert admission.total == 3 and admission.held(Kind.WATCH, "a") == 1
    assert admission.admit(Kind.CALL, None) is not None and admission.held(Kind.CALL, "a") == 1


def test_more_watching_robots_than_worker_threads_are_all_served_and_announced(tmp_path):
    robots = worker_threads(2) + 10  # the issue: 14 workers with --robots 2; each watch used to hold one
    with running_learner(tmp_path / "learner", expected_robots=2) as learner:
        link = insecure_link(learner.address)
        watches = [_watch(link, f"robot{i}") for i in range(robots)]
        for i in range(robots):
            _register(link, f"robot{i}")
            _heartbeat(link, f"robot{i}")
        assert _serving(link)
        manifest = learner.checkpoint_store.publish(
            {"w": torch.zeros(4)}, algorithm="bench", training_step=0, metrics={}, parent_version=None
        )
        learner.service.publish_checkpoint(manifest)  # from this (non-loop) thread, as the trainer does
        got = [next(w).checkpoint.version for w in watches]
        assert got == [manifest.version] * robots
        for watch in watches:
            watch.cancel()
        link.close()


def test_one_robot_flooding_watches_is_refused_alone(tmp_path):
    with running_learner(tmp_path / "learner", expected_robots=2) as learner:
        flooder, other = insecure_link(learner.address), insecure_link(learner.address)
        _register(flooder, "flood")
        flood = [_watch(flooder, "flood") for _ in range(worker_threads(2) + 6)]
        held, refused = _settle(flood, LIMITS.watches_per_robot)
        assert len(held) == LIMITS.watches_per_robot
        assert {c.code() for c in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert "flood" in refused[0].details()
        # Everyone else is unaffected, and so is the flooder's own share of calls.
        _register(other, "other")
        _heartbeat(other, "other")
        _heartbeat(flooder, "flood")
        assert _serving(other) and _serving(flooder)
        others = [_watch(other, "other") for _ in range(LIMITS.watches_per_robot)]
        assert len(_settle(others, LIMITS.watches_per_robot, timeout=0.5)[0]) == LIMITS.watches_per_robot
        for call in held + others:
            call.cancel()
        # A cancelled watch gives its place back.
        deadline = time.monotonic() + 10
        while learner.server.runtime.admission.total and time.monotonic() < deadline:
            time.sleep(0.02)
        again = _watch(flooder, "flood")
        assert _settle([again], 1, timeout=0.5)[0] == [again]
        again.cancel()
        flooder.close()
        other.close()


@pytest.fixture()
def token_learner(tmp_path):
    tokens = {name: new_token(name, Role.ROBOT) for name in ("r1", "r2")}
    tokens_file = tmp_path / "tokens.json"
    write_tokens_file(tokens_file, [record for _, record in tokens.values()])
    with running_learner(tmp_path / "learner", expected_robots=2, tokens_file=tokens_file) as learner:
        yield learner, {name: ((("authorization", f"Bearer {token}"),)) for name, (token, _) in tokens.items()}


def test_an_authenticated_robot_holding_its_calls_is_refused_more_while_others_are_served(token_learner):
    learner, metadata = token_learner
    link = insecure_link(learner.address)
    release = threading.Event()

    def silent_upload():  # an upload stream that sends nothing: its call holds a worker thread meanwhile
        release.wait(30)
        yield from ()

    uploads = [
        link.ingest.UploadChunks.future(silent_upload(), metadata=metadata["r1"])
        for _ in range(LIMITS.calls_per_robot + 3)
    ]
    try:
        held, refused = _settle(uploads, LIMITS.calls_per_robot)
        assert len(held) == LIMITS.calls_per_robot  # fewer than the workers: the rest is left to others
        assert {c.code() for c in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert "r1" in refused[0].details()
        with pytest.raises(grpc.RpcError) as err:  # its further calls too, until one ends
            _register(link, "r1", metadata["r1"])
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        _register(link, "r2", metadata["r2"])
        _heartbeat(link, "r2", metadata["r2"])
        assert _serving(link)
    finally:
        release.set()
        for call in uploads:
            call.cancel()
    deadline = time.monotonic() + 10
    while learner.server.runtime.admission.total and time.monotonic() < deadline:
        time.sleep(0.02)
    _register(link, "r1", metadata["r1"])  # its places came back
    link.close()


def test_an_upload_stream_with_a_malformed_message_is_refused_with_invalid_argument(tmp_path):
    with running_learner(tmp_path / "learner") as learner:
        link = insecure_link(learner.address)
        upload = link.channel.stream_unary("/sop.v1.Ingest/UploadChunks")  # raw bytes in and out
        with pytest.raises(grpc.RpcError) as err:
            upload(iter([b"\xff\xff\xff garbage"]), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert ingest_pb2.EpisodeChunk.DESCRIPTOR.full_name in err.value.details()
        assert _serving(link)
        link.close()
