"""A robot under its own launcher process, for the signal stress test: start it, signal it, read its output."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from conftest import PEERS, REPO, wait_for

from sop_ros.fleet.description import load_fleet
from sop_ros.fleet.specs import NodeSpec, node_specs
from sop_ros.msg import EpisodeStatus

_STARTED = re.compile(r"^\[launch\] started (\S+) \(pid (\d+)\)$", re.MULTILINE)
_EXITED = re.compile(r"^\[launch\] (\S+) exited with code (-?\d+); respawning", re.MULTILINE)
_MEASURE_S = 60.0  # how long a signalled process is watched (its grace period is asserted by the caller)


def alive(pids) -> set[int]:
    """Of `pids`, those still running (a zombie has exited: only its parent has not reaped it yet)."""
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def write_video(path: Path) -> Path:
    """A real MJPG video the hardware robot's camera driver plays in a loop (15 frames, 64x64)."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 64))
    for i in range(15):
        writer.write(np.full((64, 64, 3), 10 + 15 * i, np.uint8))
    writer.release()
    return path


def spooled_announcements(topics: Path, robot_id: str, since_ns: int = 0) -> set[str]:
    """Ids of the finished episodes the robot's recorder announced as spooled (link_topic_recorder.py lines)."""
    if not topics.exists():
        return set()
    records = (json.loads(line) for line in topics.read_text().splitlines() if line.strip())
    return {
        r["episode_id"].lower()
        for r in records
        if r["topic"] == "episode_status"
        and r["ns"] == f"/{robot_id}"
        and r["upload_state"] == EpisodeStatus.UPLOAD_SPOOLED
        and r["outcome"] != EpisodeStatus.OUTCOME_RUNNING
        and r["t"] >= since_ns
    }


class RobotUnderLauncher:
    def __init__(self, tmp: Path, fleet_path: str, robot_id: str, overrides_json: str, env: dict):
        self.tmp, self.fleet_path, self.robot_id = tmp, fleet_path, robot_id
        self.overrides_json, self.env = overrides_json, env
        specs = node_specs(load_fleet(fleet_path), robot_ids=[robot_id], with_learner=False)
        self.labels = {s.fully_qualified_name for s in specs if isinstance(s, NodeSpec) and s.name != "monitor"}
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._launchers: list[subprocess.Popen] = []

    def _log_path(self, start: int) -> Path:
        return self.tmp / f"{self.robot_id}-launch-{start}.log"

    def start(self) -> None:
        self.starts += 1
        command = [
            sys.executable,
            str(PEERS / "robot_launcher.py"),
            self.fleet_path,
            self.robot_id,
            self.overrides_json,
        ]
        with open(self._log_path(self.starts), "w") as log:
            self.proc = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._launchers.append(self.proc)

    def log(self, start: int | None = None) -> str:
        path = self._log_path(self.starts if start is None else start)
        return path.read_text() if path.exists() else ""

    def _logs(self) -> list[str]:
        return [self.log(n) for n in range(1, self.starts + 1)]

    def node_pids(self) -> dict[str, int]:
        """Each node's newest process in the current launcher's output."""
        return {label: int(pid) for label, pid in _STARTED.findall(self.log())}

    def wait_for_nodes(self) -> dict[str, int]:
        """Every node of the robot running (a node signalled before is respawned first)."""

        def running():
            pids = self.node_pids()
            live = {label: pid for label, pid in pids.items() if alive([pid])}
            return live if set(live) == self.labels else None

        return wait_for(running, 120, f"{self.robot_id}'s nodes to run", self.log)

    def _watch_exit(self, pids: list[int]) -> float:
        """Seconds until every one of `pids` exited (at most _MEASURE_S)."""
        t0 = time.monotonic()
        while alive(pids) and time.monotonic() - t0 < _MEASURE_S:
            time.sleep(0.02)
        return time.monotonic() - t0

    def signal_node(self, label: str, sig: signal.Signals) -> float:
        pid = self.node_pids()[label]
        os.kill(pid, sig)
        return self._watch_exit([pid])

    def signal_launcher(self, sig: signal.Signals) -> float:
        """The whole robot: seconds until the launcher and every node it started exited."""
        tree = [self.proc.pid, *self.node_pids().values()]
        self.proc.send_signal(sig)
        return self._watch_exit(tree)

    def every_pid(self) -> set[int]:
        return {p.pid for p in self._launchers} | {int(pid) for log in self._logs() for _, pid in _STARTED.findall(log)}

    def kill_if_running(self) -> None:
        for pid in alive(self.every_pid()):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def tracebacks(self) -> list[str]:
        """Each process output line of a process that printed a traceback or a fatal error."""
        bad = []
        for log in self._logs():
            lines = log.splitlines()
            labels = {line.split("]", 1)[0] + "]" for line in lines if "Traceback" in line or "Fatal Python" in line}
            bad += [line for line in lines if any(line.startswith(label) for label in labels)]
        return bad

    def unclean_exits(self) -> list[str]:
        """Nodes that exited non-zero, died, or had to be escalated to; launchers that exited non-zero."""
        found = []
        for log in self._logs():
            found += [f"{label} exited with {code}" for label, code in _EXITED.findall(log) if code != "0"]
            found += [line for line in log.splitlines() if "escalating" in line or "died with exit code" in line]
        codes = [p.returncode for p in self._launchers if p.poll() is not None]
        return found + [f"launcher exited with {c}" for c in codes if c != 0]
