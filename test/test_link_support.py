"""Shared helpers for the test_link_* modules (no tests here): episodes, a loopback learner, clients."""

from __future__ import annotations

import contextlib
import json
import resource
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import grpc
import numpy as np

from sop_ros.core.episodes.episode import Actor, Episode, EpisodeBuilder, LabelSource
from sop_ros.core.storage.checkpoint_store import CheckpointStore
from sop_ros.core.storage.episode_index import StoredEpisode, read_index
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.link.channel import LinkClient, LinkClientConfig, RetryPolicy
from sop_ros.link.server import LearnerServerConfig, LearnerService, create_server

FAST_RETRY = RetryPolicy(initial_s=0.02, max_s=0.3)


def make_episode(robot_id: str, steps: int = 20, hw: int = 16, seed: int = 0, task_id: str = "reach-v3") -> Episode:
    rng = np.random.default_rng(seed)
    builder = EpisodeBuilder(
        robot_id,
        task_id,
        "reach the goal",
        chunk_shape=(4, 4),
        episode_id=str(uuid.UUID(int=int(rng.integers(1 << 62)) << 64 | int(rng.integers(1 << 62)), version=4)),
        start_ns=1,
    )
    for t in range(steps):
        actor = Actor.HUMAN if 5 <= t < 8 else Actor.POLICY
        builder.add_step(
            rng.integers(0, 255, (hw, hw, 3), dtype=np.uint8),
            rng.standard_normal(7).astype(np.float32),
            rng.standard_normal(4).astype(np.float32),
            actor,
            1,
            1 + t * 1000,
        )
    return builder.close(success=True, label_source=LabelSource.ENVIRONMENT, end_ns=steps * 1000 + 10)


class Learner:
    """A real learner (stores on disk, gRPC server on an ephemeral loopback port)."""

    def __init__(self, data_dir: Path, config: LearnerServerConfig):
        self.episode_store = EpisodeStore(data_dir / "episodes", max_episode_bytes=config.max_episode_bytes)
        self.checkpoint_store = CheckpointStore(data_dir / "checkpoints")
        self.service = LearnerService(config, self.episode_store, self.checkpoint_store)
        self.server, self.port = create_server(self.service)
        self.server.start()
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.service.stop(self.server, grace_s=0.5)
        self.episode_store.close()


@contextlib.contextmanager
def running_learner(data_dir: Path, **config) -> Iterator[Learner]:
    config.setdefault("address", "127.0.0.1:0")
    config.setdefault("insecure", True)
    learner = Learner(Path(data_dir), LearnerServerConfig(**config))
    try:
        yield learner
    finally:
        learner.stop()


def insecure_link(address: str, token: Optional[str] = None) -> LinkClient:
    return LinkClient.connect(LinkClientConfig(address=address, insecure=True, token=token))


class LearnerProcess:
    """A real `sop learner` process on loopback (the product's composition root, not an in-process server).

    `memory_cap` puts an address-space limit (RLIMIT_AS) on the learner: an allocation past it raises
    MemoryError inside the learner instead of taking the machine's memory."""

    def __init__(self, data: Path, proc, address: str, link: LinkClient):
        self.data, self.proc, self.address, self.link = data, proc, address, link

    def serving(self) -> bool:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            response = health_pb2_grpc.HealthStub(self.link.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError:
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING

    def memory(self, field: str = "VmHWM") -> int:
        """VmHWM: the kernel's high-water mark of resident memory; VmRSS: resident now (bytes)."""
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field}")

    def stored(self) -> list[StoredEpisode]:
        """The committed episodes, read-only from the learner's index (the learner owns the store)."""
        return read_index(self.data / "episodes")

    def staging(self) -> list[str]:
        staging = self.data / "episodes" / "staging"
        return sorted(p.name for p in staging.iterdir()) if staging.exists() else []


@contextlib.contextmanager
def learner_process(
    tmp: Path, *args: str, config: Optional[dict] = None, memory_cap: Optional[int] = None, link=None
) -> Iterator[LearnerProcess]:
    """Start `sop learner --no-train` with `args` (default --insecure) and `config` (LearnerServerConfig fields);
    `link(address)` makes the client (default: an insecure link). Stops it with SIGINT at the end."""
    from conftest import REPO, free_port, wait_for

    config_file = tmp / "learner.yaml"
    config_file.write_text(json.dumps(config or {}))  # JSON is YAML
    address = f"127.0.0.1:{free_port()}"

    def cap_memory() -> None:
        if memory_cap:
            resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))

    command = [sys.executable, "-m", "sop_ros.cli", "learner", "--data-dir", str(tmp / "data"), "--no-train",
               "--address", address, "--config", str(config_file), *(args or ("--insecure",))]  # fmt: skip
    log = open(tmp / "learner.log", "w")
    proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=cap_memory)  # fmt: skip
    learner = LearnerProcess(tmp / "data", proc, address, (link or insecure_link)(address))
    try:
        wait_for(lambda: learner.serving() or proc.poll() is not None, 60, "the learner to serve")
        assert proc.poll() is None, (tmp / "learner.log").read_text()[-2000:]
        yield learner
    finally:
        learner.link.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        finally:
            log.close()
