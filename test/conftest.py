"""Shared fixtures: isolated ROS 2 environments and process helpers for real multi-process tests."""

from __future__ import annotations

import fcntl
import itertools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PEERS = Path(__file__).resolve().parent / "ros_peers"

# One DDS domain per test (ids 1..100), localhost-only discovery, so parallel runs and other sessions
# on the host never see each other's traffic (packaging spike P11). A domain is claimed with a lock
# file: two test sessions walking the ids from different starts met on one domain (a CI run next to
# another session's tests hung with two robots' nodes spinning in Fast DDS).
DOMAINS = 100
_domain_ids = itertools.count((os.getpid() * 7) % DOMAINS)
_DOMAIN_LOCKS = Path(tempfile.gettempdir()) / "sop_ros_test_domains"
_held_domains: list[int] = []  # lock file descriptors, newest last
_HOLD = 4  # a test uses one or two; older ones belong to tests that have ended


def _claim_domain() -> int:
    _DOMAIN_LOCKS.mkdir(exist_ok=True)
    for _ in range(DOMAINS):
        domain = 1 + next(_domain_ids) % DOMAINS
        fd = os.open(_DOMAIN_LOCKS / f"{domain}.lock", os.O_CREAT | os.O_RDWR)  # not inherited by children
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held_domains.append(fd)
        if len(_held_domains) > _HOLD:
            os.close(_held_domains.pop(0))  # closing releases the lock
        return domain
    raise RuntimeError(f"all {DOMAINS} test ROS domains are held by other processes ({_DOMAIN_LOCKS})")


def ros_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(_claim_domain())
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_LOGGING_BUFFERED_STREAM"] = "0"
    env.setdefault("MUJOCO_GL", "egl")
    env.update(extra)
    return env


@pytest.fixture
def ros_environment() -> dict[str, str]:
    """Environment for subprocesses of one test: its own ROS domain."""
    return ros_env()


@pytest.fixture
def rclpy_context(monkeypatch):
    """An rclpy context of this test process on a domain of its own, localhost-only discovery (in-process nodes)."""
    import rclpy

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(ros_env()["ROS_DOMAIN_ID"]))
    yield ctx
    rclpy.try_shutdown(context=ctx)


def run_peer(script: str, *args: str, env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PEERS / script), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def start_peer(script: str, *args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(PEERS / script), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def sop_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sop_ros.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def free_port() -> int:
    """A free TCP port on loopback (for a learner the test starts as a process)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, log=lambda: ""):
    """Poll predicate() until it returns something truthy; fail naming `what` (and a log tail)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{log()[-4000:]}")


class LaunchedGroup:
    """Some of a fleet's specs, run by FleetLauncher in a thread, logging to a file."""

    def __init__(self, specs, log_path: Path, env: dict):
        import threading

        from sop_ros.fleet.launcher import FleetLauncher

        self.log_path = log_path
        self._log = open(log_path, "w")
        self.launcher = FleetLauncher(specs, out=self._log, env=env)
        self.thread = threading.Thread(target=self.launcher.run, daemon=True)
        self.thread.start()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self, timeout: float = 90.0) -> int:
        self.launcher.request_stop()
        self.thread.join(timeout=timeout)
        self._log.close()
        return self.launcher.exit_code


def operator_rule(**overrides):
    """The scripted operator's rule as config/robot.yaml sets it (its one source), with `overrides`."""
    import dataclasses

    from sop_ros.core.robot.operator import OperatorRuleConfig
    from sop_ros.resources import node_defaults

    return dataclasses.replace(OperatorRuleConfig.from_mapping(node_defaults("scripted_operator")), **overrides)
