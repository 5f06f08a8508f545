"""Chaos: robots upload through real client processes while the harness SIGKILLs the learner and uploaders.

Afterwards the learner must hold every episode exactly once, byte-identical to the robot's file,
and every spool must be empty (the delivery contract: nothing lost, nothing duplicated).

Short form (CI): 4 robots, 220 small episodes, 10 kills, well under 2 minutes.
Long form:  SOP_CHAOS_KILLS=50 pytest test/test_link_chaos.py   (more kills; also SOP_CHAOS_EPISODES=N)
This file doubles as the uploader process: `python test/test_link_chaos.py uploader ...`.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("SOP_CHAOS_KILLS", "10"))
EPISODES = int(os.environ.get("SOP_CHAOS_EPISODES", "220"))
ROBOTS = ("robot1", "robot2", "robot3", "robot4")

pytestmark = pytest.mark.timeout(120 + 12 * KILLS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "test"), env.get("PYTHONPATH", "")])
    return env


class Harness:
    def __init__(self, tmp: Path, port: int):
        self.tmp = tmp
        self.address = f"127.0.0.1:{port}"
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.learner: subprocess.Popen | None = None
        self.uploaders: dict[str, subprocess.Popen] = {}
        self.starts = 0

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        self.starts += 1
        log = open(self.logs / f"{name}.{self.starts}.log", "wb")
        return subprocess.Popen([sys.executable, *args], env=_env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    def start_learner(self) -> None:
        # --no-train: this tests the link; the test episodes (state_dim 7) do not fit the learner's default model.
        # Their task is in the learner's task set (it refuses episodes of other tasks).
        tasks_file = self.tmp / "tasks.yaml"
        tasks_file.write_text("tasks:\n  reach-v3:\n    instruction: reach the goal\n    max_steps: 150\n")
        self.learner = self._spawn(
            "learner",
            [
                "-m",
                "sop_ros.commands.learner",
                "--data-dir",
                str(self.tmp / "learner"),
                "--address",
                self.address,
                "--insecure",
                "--robots",
                "4",
                "--grace",
                "2",
                "--no-train",
                "--tasks-file",
                str(tasks_file),
                "--log-level",
                "WARNING",
            ],
        )

    def start_uploader(self, robot: str) -> None:
        self.uploaders[robot] = self._spawn(
            robot,
            [
                __file__,
                "uploader",
                "--spool",
                str(self.tmp / "spools" / robot),
                "--robot",
                robot,
                "--address",
                self.address,
            ],
        )

    def wait_learner_serving(self, timeout_s: float) -> None:
        """The learner answers gRPC health checks (it has installed its SIGTERM handler before serving)."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with grpc.insecure_channel(self.address) as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"the learner did not serve within {timeout_s} s; logs in {self.logs}"
            time.sleep(0.2)

    def unfinished(self) -> list[str]:
        return [r for r, p in self.uploaders.items() if p.poll() != 0]

    def stop_all(self) -> None:
        for proc in [self.learner, *self.uploaders.values()]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def _uploader_main(argv: list[str]) -> int:
    """Drain one robot's spool through a real EpisodeUploader, then exit 0."""
    import logging

    from sop_ros.core.storage.spool import Spool
    from sop_ros.link.channel import LinkClient, LinkClientConfig, RetryPolicy
    from sop_ros.link.uploader import EpisodeUploader

    parser = argparse.ArgumentParser()
    parser.add_argument("--spool", type=Path, required=True)
    parser.add_argument("--robot", required=True)
    parser.add_argument("--address", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    spool = Spool(args.spool, 1 << 30)
    link = LinkClient.connect(LinkClientConfig(address=args.address, insecure=True))
    uploader = EpisodeUploader(link, spool, args.robot, retry=RetryPolicy(initial_s=0.05, max_s=0.5), park_s=0.5)
    while len(spool):
        uploader.drain(timeout_s=5)
    return 0


def test_chaos_kills_lose_and_duplicate_nothing(tmp_path):
    from test_link_support import make_episode

    from sop_ros.core.episodes.episode_file import file_sha256
    from sop_ros.core.storage.episode_store import EpisodeStore
    from sop_ros.core.storage.spool import Spool

    rng = random.Random(int(os.environ.get("SOP_CHAOS_SEED", "0")) or None)
    expected: dict[str, tuple[str, str]] = {}  # episode id -> (robot, sha256 of the robot's file)
    for i in range(EPISODES):
        robot = ROBOTS[i % len(ROBOTS)]
        entry = Spool(tmp_path / "spools" / robot, 1 << 30).write(make_episode(robot, seed=i + 1))
        expected[entry.episode_id] = (robot, file_sha256(entry.path))
    harness = Harness(tmp_path, _free_port())
    kills = {"learner": 0, "uploader": 0}
    try:
        harness.start_learner()
        for robot in ROBOTS:
            harness.start_uploader(robot)
        for _ in range(KILLS):
            if not harness.unfinished():
                break
            time.sleep(rng.uniform(0.2, 1.5))
            victims = ["learner"] + [r for r in harness.unfinished() if harness.uploaders[r].poll() is None]
            victim = rng.choice(victims)
            proc = harness.learner if victim == "learner" else harness.uploaders[victim]
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills["learner" if victim == "learner" else "uploader"] += 1
            time.sleep(rng.uniform(0.0, 0.5))
            harness.start_learner() if victim == "learner" else harness.start_uploader(victim)
        deadline = time.monotonic() + 90
        while harness.unfinished() and time.monotonic() < deadline:
            for robot in harness.unfinished():
                if harness.uploaders[robot].poll() is not None:  # crashed on its own: restart, but report
                    harness.start_uploader(robot)
            time.sleep(0.2)
        assert not harness.unfinished(), f"uploaders did not finish; logs in {harness.logs}"
        # The last restart may still be importing: SIGTERM before its handler is installed is a plain kill.
        harness.wait_learner_serving(60)
        harness.learner.send_signal(signal.SIGTERM)
        assert harness.learner.wait(30) == 0
    finally:
        harness.stop_all()

    logging.getLogger(__name__).info("chaos: %s kills, %d process starts", kills, harness.starts)
    assert sum(kills.values()) >= min(KILLS, 3), f"too few kills landed before the uploads finished: {kills}"
    for robot in ROBOTS:
        assert len(Spool(tmp_path / "spools" / robot, 1 << 30)) == 0, f"{robot}'s spool is not empty"
    with EpisodeStore(tmp_path / "learner" / "episodes") as store:
        assert store.count() == len(expected)
        stored_ids = [s.episode_id for s in store.query()]
        assert len(stored_ids) == len(set(stored_ids)) == len(expected)
        for eid, (robot, sha) in expected.items():
            stored = store.get(eid)
            assert stored is not None and stored.robot_id == robot, eid
            assert file_sha256(stored.path) == sha == stored.sha256, eid


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "uploader":
    sys.exit(_uploader_main(sys.argv[2:]))
