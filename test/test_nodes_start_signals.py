"""A node signalled while it is still starting (importing torch, MuJoCo, rclpy) leaves quietly: exit 0, no
traceback. The signal stress test found tracebacks and a SIGSEGV there: a SystemExit raised inside a C
extension's import became "ImportError: initialization failed" (mujoco, rclpy) with a traceback and exit 1."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for signum (the SigCgt mask of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_node_signalled_while_it_imports_exits_quietly(signum):
    outcomes = []
    # Delays after the node's first handler exists: into the imports of rclpy, torch and MuJoCo (about 0.2-3 s
    # on the 2-core machine). The delay is the stimulus, not a synchronisation: every moment must end quietly.
    for delay_s in (0.0, 0.3, 0.8, 1.5):
        node = subprocess.Popen(
            [sys.executable, "-m", "sop_ros.nodes", "sim_robot"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not _catches(node.pid, signal.SIGTERM) and node.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(delay_s)
        node.send_signal(signum)
        output, _ = node.communicate(timeout=60)
        outcomes.append((delay_s, node.returncode, output))
    for delay_s, code, output in outcomes:
        assert code == 0 and "Traceback" not in output and "Fatal" not in output, f"{delay_s} s: {code}\n{output}"
