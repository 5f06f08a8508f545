"""A hostile robot against a real learner process on loopback (issue 12): each attack class is refused with the
right code, the learner's peak memory stays bounded, nothing is stored or left in staging, health stays SERVING.

Here, against one learner process: memory from metadata (1), decompression bombs (2), another robot's upload (4),
staging quotas (6), names (7), garbage requests (8), oversized registrations for the fleet status (9). Elsewhere,
with their own real learners: one robot flooding streams and calls (3: test_link_admission.py), certificate
revocation and its open streams (5: test_link_security.py); fuzzing over every RPC (test_link_fuzz.py) and over
episode-file metadata (test_core_episode_limits.py), SOP_FUZZ_EXAMPLES for the long runs.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys

import grpc
import numpy as np
import pytest
from conftest import REPO, free_port, wait_for
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_core_episode_limits import _write_lying
from test_link_support import insecure_link, make_episode

from sop_ros.core.episodes import episode_file as ef
from sop_ros.core.episodes.episode_file import file_sha256, write_episode
from sop_ros.link.protos import ingest_pb2

pytestmark = pytest.mark.timeout(240)

TASK = "push-v3"  # one of the learner's tasks (the package's task file)
MEMORY_GROWTH_BYTES = 96 << 20  # the unbounded learner took >= 128 MB for the bomb and GBs for the metadata


def _peak_rss(pid: int) -> int:
    """The kernel's high-water mark of the process's resident memory (VmHWM)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def learner(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    config = tmp / "learner.yaml"
    config.write_text(json.dumps({"staging_quota_robot_bytes": 8 << 20, "max_episode_bytes": 4 << 20}))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sop_ros.cli", "learner", "--data-dir", str(tmp / "data"), "--insecure",
         "--address", f"127.0.0.1:{port}", "--no-train", "--config", str(config)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    link = insecure_link(f"127.0.0.1:{port}")
    health = health_pb2_grpc.HealthStub(link.channel)

    def serving():
        try:
            return health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1
        except grpc.RpcError:
            return False

    wait_for(serving, 60, "the learner to serve")
    yield dataclasses.make_dataclass("L", ["proc", "link", "data", "serving"])(proc, link, tmp / "data", serving)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


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


def _staging(data):
    return sorted(p.name for p in (data / "episodes" / "staging").iterdir())


def test_hostile_files_and_names_are_refused_with_bounded_memory(learner, tmp_path):
    before = _peak_rss(learner.proc.pid)

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
    growth = _peak_rss(learner.proc.pid) - before
    assert growth < MEMORY_GROWTH_BYTES, f"peak RSS grew by {growth / 2**20:.0f} MiB"
    assert _staging(learner.data) == [] and learner.serving()
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
    from sop_ros.link.protos import fleet_pb2

    before = _peak_rss(learner.proc.pid)
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
    assert _peak_rss(learner.proc.pid) - before < MEMORY_GROWTH_BYTES and learner.serving()
