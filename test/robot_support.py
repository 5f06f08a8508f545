"""Whole robots against a learner process that a test can kill and restart on the same port and data.

Shared by the /diagnostics test and the signal stress test: the learner is the real `sop learner
--no-train` (it stores uploads and serves checkpoints), seeded with a tiny base checkpoint v1 that
the robots' bridges download and their policies load; robots run from node_specs() as `sop launch`
starts them.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

from conftest import REPO, free_port, wait_for
from test_link_support import LearnerProcess, insecure_link

from sop_ros.fleet.description import FleetDescription, parse_fleet
from sop_ros.fleet.specs import NodeSpec, node_specs


def publish_base_checkpoint(data_dir: Path) -> None:
    """A tiny random policy as checkpoint v1 in the learner's checkpoint store."""
    import torch

    from sop_ros.core.model import VLAPolicy, preset
    from sop_ros.core.storage.checkpoint_store import CheckpointStore

    torch.manual_seed(0)
    weights = VLAPolicy(preset("tiny"), device="cpu").checkpoint_tensors()
    CheckpointStore(data_dir / "checkpoints").publish(
        weights, algorithm="bc", training_step=0, metrics={}, parent_version=None
    )


class RestartableLearner:
    """`sop learner --no-train --insecure` on one fixed port and data directory, across kills and restarts."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.data = tmp / "learner_data"
        self.address = f"127.0.0.1:{free_port()}"
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0
        publish_base_checkpoint(self.data)

    @property
    def log_path(self) -> Path:
        return self.tmp / f"learner-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        command = [sys.executable, "-m", "sop_ros.cli", "learner", "--data-dir", str(self.data), "--no-train",
                   "--address", self.address, "--insecure"]  # fmt: skip
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        link = insecure_link(self.address)
        probe = LearnerProcess(self.data, self.proc, self.address, link)
        try:
            wait_for(lambda: probe.serving() or self.proc.poll() is not None, 90, "the learner to serve", self.log)
        finally:
            link.close()
        assert self.proc.poll() is None, self.log()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def stored_episode_ids(self) -> set[str]:
        from sop_ros.core.storage.episode_index import read_index

        index = self.data / "episodes"
        return {e.episode_id.lower() for e in read_index(index)} if index.exists() else set()


def robot_fleet(tmp: Path, learner: RestartableLearner, robots: list[dict]) -> FleetDescription:
    return parse_fleet(
        {
            "fleet": "robot_support",
            "state_dir": str(tmp / "state"),
            "learner": {"address": learner.address, "run_locally": False, "insecure": True},
            "robots": robots,
        }
    )


def robot_node_specs(fleet: FleetDescription, robot_id: str, overrides: dict[str, dict]) -> list[NodeSpec]:
    """One robot's nodes (the RViz monitor left out, to spare two cores), with parameter overrides per node."""
    return [
        dataclasses.replace(s, parameters={**s.parameters, **overrides.get(s.name, {})})
        for s in node_specs(fleet, robot_ids=[robot_id], with_learner=False)
        if isinstance(s, NodeSpec) and s.name != "monitor"
    ]
