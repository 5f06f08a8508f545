"""A hostile robot against a real learner process on loopback (issue 12): each attack class is refused with the
right code, the learner's peak memory stays bounded, nothing is stored or left in staging, health stays SERVING.

Every class of the issue, against `sop learner` processes: memory from metadata (1), decompression bombs (2), one
robot flooding streams (3), another robot's upload (4), revocation of a certificate-only robot and its open stream
(5), staging quotas (6), names (7), garbage requests (8), oversized registrations for the fleet status (9). More
detail per class, on in-process learners: test_link_admission.py (3), test_link_security.py (5); fuzzing over
every RPC (test_link_fuzz.py, a learner process under a memory cap) and over episode-file metadata
(test_core_episode_limits.py), SOP_FUZZ_EXAMPLES for the long runs.
"""

from __future__ import annotations

import dataclasses
import time

import grpc
import numpy as np
import pytest
from conftest import wait_for
from test_core_episode_limits import _write_lying
from test_link_support import learner_process, make_episode

from sop_ros.cli import main as sop_main
from sop_ros.core.episodes import episode_file as ef
from sop_ros.core.episodes.episode_file import file_sha256, write_episode
from sop_ros.link.admission import AdmissionLimits
from sop_ros.link.certs import init_credentials
from sop_ros.link.channel import LinkClient, LinkClientConfig
from sop_ros.link.protos import fleet_pb2, ingest_pb2, policy_pb2

pytestmark = pytest.mark.timeout(240)

TASK = "push-v3"  # one of the learner's tasks (the package's task file)
MEMORY_GROWTH_BYTES = 96 << 20  # the unbounded learner took >= 128 MB for the bomb and GBs for the metadata


@pytest.fixture(scope="module")
def learner(tmp_path_factory):
    config = {"staging_quota_robot_bytes": 8 << 20, "max_episode_bytes": 4 << 20}
    with learner_process(tmp_path_factory.mktemp("hostile"), config=config) as learner:
        yield learner


def _upload(link, path, robot_id="robot1", task_id=TASK):
    """Begin, upload and commit a file as `robot_id`; returns the status code of the commit (OK when stored)."""
    episode_id = ef.read_episode_metadata(path)["episode_id"]
    data = path.read_bytes()
    meta = ingest_pb2.EpisodeMetadata(
        episode_id=episode_id, robot_id=robot_id, task_id=task_id, size_bytes=len(data), sha256=file_sha256(path)
    )
    try:
        link.ingest.BeginEpisode(ingest_pb2.BeginEpisodeRequest(metadata=meta), timeout=10)
        chunks = [ingest_pb2.EpisodeChunk(episode_id=episode_id, offset=o, data=data[o : o + (1 << 20)])
                  for o in range(0, len(data), 1 << 20)]  # fmt: skip
        link.ingest.UploadChunks(iter(chunks), timeout=30)
        link.ingest.CommitEpisode(
            ingest_pb2.CommitEpisodeRequest(episode_id=episode_id, sha256=meta.sha256, robot_id=robot_id), timeout=30
        )
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def test_hostile_files_and_names_are_refused_with_bounded_memory(learner, tmp_path):
    before = learner.memory()

    def honest(name, seed, task_id):
        return write_episode(make_episode("robot1", seed=seed, task_id=task_id), tmp_path / name)

    def lying(name, seed, **shapes):
        return _write_lying(tmp_path / name, make_episode("robot1", seed=seed, task_id=TASK), **shapes)

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    attacks = {
        # 1. a ~2 KB file declaring a huge state, or image: refused before the learner allocates for it
        "declared state_dim": (lying("a.mcap", 0, state_dim=10**9), TASK, invalid, "exceeds the limit"),
        "declared image size": (lying("b.mcap", 1, image_hw=[1 << 20, 1 << 20]), TASK, invalid, "exceeds the limit"),
        # 7. the file's task differs from the declared one; a task outside the fleet's set; a name with a newline
        "task mismatch": (honest("c.mcap", 2, "pick-place-v3"), TASK, invalid, "the upload declared 'push-v3'"),
        "task not in the fleet": (honest("d.mcap", 3, "reach-v3"), "reach-v3", invalid, "not one of this fleet's"),
        "name with a newline": (honest("e.mcap", 4, TASK), "push-v3\n", invalid, "task_id"),
    }
    # 2. a decompression bomb: 3 black 4096 x 4096 frames (144 MiB) in a few hundred KiB, declared as 1 x 1 pixels
    bomb = make_episode("robot1", steps=3, hw=8, seed=5, task_id=TASK)
    bomb = dataclasses.replace(bomb, images=np.zeros((3, 4096, 4096, 3), np.uint8))
    bomb_path = _write_lying(tmp_path / "bomb.mcap", bomb, image_hw=[1, 1])
    assert bomb_path.stat().st_size < 4 << 20
    attacks["decompression bomb"] = (bomb_path, TASK, grpc.StatusCode.INVALID_ARGUMENT, "uncompressed bytes")
    for name, (path, task_id, code, message) in attacks.items():
        got, details = _upload(learner.link, path, task_id=task_id)
        assert got == code and message in details, (name, got, details)
    growth = learner.memory() - before
    assert growth < MEMORY_GROWTH_BYTES, f"peak RSS grew by {growth / 2**20:.0f} MiB"
    assert learner.staging() == [] and learner.stored() == [] and learner.serving()
    # A well-formed episode still goes through.
    good = write_episode(make_episode("robot1", seed=6, task_id=TASK), tmp_path / "good.mcap")
    assert _upload(learner.link, good) == (grpc.StatusCode.OK, "")


def test_staging_quota_refuses_the_flooding_robot_alone(learner):
    def begin(robot_id, n, size=3 << 20):
        meta = ingest_pb2.EpisodeMetadata(
            episode_id=f"00000000-0000-4000-8000-{n:012d}", robot_id=robot_id, task_id=TASK, size_bytes=size,
            sha256="a" * 64,
        )  # fmt: skip
        return learner.link.ingest.BeginEpisode(ingest_pb2.BeginEpisodeRequest(metadata=meta), timeout=10)

    # 6. begun uploads declaring far more than the robot's quota (8 MiB here): the third is refused
    begin("robot7", 1)
    begin("robot7", 2)
    with pytest.raises(grpc.RpcError) as err:
        begin("robot7", 3)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "robot robot7's" in err.value.details()
    begin("robot8", 4)  # another robot is not affected
    assert learner.serving()


def test_another_robots_upload_garbage_and_oversized_registrations(learner, tmp_path):
    before = learner.memory()
    # 4. robot2 names robot1's upload in progress: refused, and robot1's staged bytes stay
    path = write_episode(make_episode("robot1", seed=20, task_id=TASK), tmp_path / "mine.mcap")
    episode_id, data = ef.read_episode_metadata(path)["episode_id"], path.read_bytes()
    meta = ingest_pb2.EpisodeMetadata(
        episode_id=episode_id, robot_id="robot1", task_id=TASK, size_bytes=len(data), sha256=file_sha256(path)
    )
    learner.link.ingest.BeginEpisode(ingest_pb2.BeginEpisodeRequest(metadata=meta), timeout=10)
    chunk = ingest_pb2.EpisodeChunk(episode_id=episode_id, offset=0, data=data[: len(data) // 2])
    learner.link.ingest.UploadChunks(iter([chunk]), timeout=10)
    theirs = ingest_pb2.EpisodeMetadata()
    theirs.CopyFrom(meta)
    theirs.robot_id = "robot2"
    with pytest.raises(grpc.RpcError) as err:
        learner.link.ingest.BeginEpisode(ingest_pb2.BeginEpisodeRequest(metadata=theirs), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert learner.link.ingest.BeginEpisode(ingest_pb2.BeginEpisodeRequest(metadata=meta), timeout=10).committed_offset
    # 8. undecodable requests: a clear INVALID_ARGUMENT each, no traceback in the learner's log
    raw = learner.link.channel.unary_unary("/sop.v1.Ingest/BeginEpisode")
    for _ in range(50):
        with pytest.raises(grpc.RpcError) as err:
            raw(b"\xff\xff garbage", timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # 9. a robot registering ~1 MB of task names is refused; the operator's view stays readable
    config = fleet_pb2.RobotConfig(tasks=[f"t{i:05d}" + "x" * 120 for i in range(8000)], action_dim=4, state_dim=4)
    register = fleet_pb2.RegisterRequest(robot_id="robot9", software_version="1.0", protocol_version=1, config=config)
    with pytest.raises(grpc.RpcError) as err:
        learner.link.fleet.Register(register, timeout=10)
    assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    learner.link.fleet.GetFleetStatus(fleet_pb2.GetFleetStatusRequest(), timeout=10)
    assert learner.memory() - before < MEMORY_GROWTH_BYTES and learner.serving()


def test_one_robot_flooding_watches_is_refused_alone(learner):
    # 3. one robot opens far more checkpoint watches than its share (the synchronous server's whole worker pool)
    before, limit = learner.memory(), AdmissionLimits().watches_per_robot
    watch = policy_pb2.WatchCheckpointsRequest(robot_id="flood")
    flood = [learner.link.policy.WatchCheckpoints(watch, timeout=60) for _ in range(40)]
    wait_for(lambda: sum(call.done() for call in flood) >= len(flood) - limit, 30, "the excess watches to be refused")
    held, refused = [c for c in flood if not c.done()], [c for c in flood if c.done()]
    assert len(held) == limit  # its admitted watches stay open
    assert {c.code() for c in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED} and "flood" in refused[0].details()
    # Every other robot, and the health check, are served meanwhile.
    register = fleet_pb2.RegisterRequest(robot_id="calm", protocol_version=1)
    assert learner.link.fleet.Register(register, timeout=10).accepted and learner.serving()
    calm = learner.link.policy.WatchCheckpoints(policy_pb2.WatchCheckpointsRequest(robot_id="calm"), timeout=60)
    assert not calm.done()
    for call in held + [calm]:
        call.cancel()
    assert learner.memory() - before < MEMORY_GROWTH_BYTES


def test_revoked_certificate_only_robot_is_refused_and_its_stream_ends(tmp_path):
    # 5. mutual TLS and no tokens file: the certificate is the robot's only credential
    creds = init_credentials(tmp_path / "creds", ["robot1", "robot2"])

    def link_of(robot):
        def connect(address):
            cert_dir = creds.robot_dir(robot)
            return LinkClient.connect(LinkClientConfig(
                address=address.replace("127.0.0.1", "localhost"), ca_cert=creds.ca_cert,
                client_cert=cert_dir / "client.crt", client_key=cert_dir / "client.key"))  # fmt: skip

        return connect

    tls = (
        "--tls-cert",
        str(creds.learner_cert),
        "--tls-key",
        str(creds.learner_key),
        "--client-ca",
        str(creds.ca_cert),
    )
    with learner_process(tmp_path, *tls, link=link_of("robot1")) as learner:
        register = fleet_pb2.RegisterRequest(robot_id="robot1", protocol_version=1)
        assert learner.link.fleet.Register(register, timeout=10).accepted
        watch = learner.link.policy.WatchCheckpoints(policy_pb2.WatchCheckpointsRequest(robot_id="robot1"), timeout=60)
        assert sop_main(["certs", "revoke", "robot1", "--dir", str(creds.root)]) == 0
        revoked_at = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:  # the next call
            learner.link.fleet.Register(register, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            next(watch)  # no checkpoint to announce: the stream ends only because the robot was revoked
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and time.monotonic() - revoked_at < 10
        other = link_of("robot2")(learner.address)
        assert other.fleet.Register(
            fleet_pb2.RegisterRequest(robot_id="robot2", protocol_version=1), timeout=10
        ).accepted
        other.close()
        assert learner.serving() and learner.stored() == [] and learner.staging() == []
