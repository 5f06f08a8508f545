"""Shared fixtures: isolated ROS 2 environments and process helpers for real multi-process tests."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PEERS = Path(__file__).resolve().parent / "ros_peers"

# One DDS domain per test (ids 1..100 spread by pid), localhost-only discovery, so parallel
# runs and other sessions on the host never see each other's traffic (packaging spike P11).
_domain_ids = itertools.count(1 + (os.getpid() * 7) % 90)


def ros_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(next(_domain_ids) % 101)
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


def run_peer(script: str, *args: str, env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PEERS / script), *args], env=env, capture_output=True, text=True, timeout=timeout)


def start_peer(script: str, *args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(PEERS / script), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def sop_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sop_ros.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
