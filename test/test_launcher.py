"""`sop launch` runs a real two-robot fleet, supervises it and leaves nothing behind."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml
from conftest import REPO, run_peer

from sop_ros.fleet.description import load_fleet
from sop_ros.fleet.specs import node_specs

pytestmark = pytest.mark.timeout(180)


def fleet_file(tmp_path, respawn=False):
    data = {
        "fleet": "launcher_test",
        "state_dir": str(tmp_path / "state"),
        "learner": {"address": "127.0.0.1:50998", "run_locally": False, "insecure": True},
        "robots": [
            {"id": "robot1", "backend": "sim", "tasks": ["push-v3"], "respawn": respawn, "respawn_delay_s": 0.5},
            {
                "id": "robot2",
                "backend": "sim",
                "tasks": ["pick-place-v3", "push-v3"],
                "control_rate_hz": 5.0,
                "respawn": respawn,
                "respawn_delay_s": 0.5,
            },
        ],
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start_launcher(path, env, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "sop_ros.cli", "launch", str(path), *extra],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def expected_processes(path, robots=None):
    return len(node_specs(load_fleet(path), robot_ids=robots))


def wait_for_nodes(launcher, count, timeout=90.0, lines=None):
    """Read the launcher's output until `count` processes have started; return {label: pid}."""
    pids, lines = {}, ([] if lines is None else lines)
    deadline = time.monotonic() + timeout
    while len(pids) < count and time.monotonic() < deadline:
        line = launcher.stdout.readline()
        lines.append(line)
        if line.startswith("[launch] started"):
            label, pid = line[len("[launch] started ") :].rsplit(" (pid ", 1)
            pids[label] = int(pid.rstrip(")\n"))
    assert len(pids) == count, "".join(lines)
    return pids


def traceback_report(out):
    """The whole output of each process that printed a traceback (pytest would truncate `out`)."""
    labels = {line.split("]", 1)[0] + "]" for line in out.splitlines() if "Traceback" in line}
    return "\n".join(line for line in out.splitlines() if any(line.startswith(label) for label in labels))


def descendants(pid):
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def alive(pids):
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_two_robot_fleet_runs_and_ctrl_c_leaves_no_process(tmp_path, ros_environment):
    path = fleet_file(tmp_path)
    launcher = start_launcher(path, ros_environment)
    try:
        node_pids = list(wait_for_nodes(launcher, expected_processes(path)).values())
        result = run_peer("status_client.py", "/robot1", "/robot2", env=ros_environment, timeout=90)
        status = json.loads(result.stdout.strip().splitlines()[-1])
        assert status["/robot1"] == {
            "robot_id": "robot1",
            "namespace": "/robot1",
            "backend": "sim",
            "task_set": ["push-v3"],
            "control_rate_hz": 10.0,
        }
        assert (
            status["/robot2"]["task_set"] == ["pick-place-v3", "push-v3"]
            and status["/robot2"]["control_rate_hz"] == 5.0
        )
        tree = descendants(launcher.pid) | set(node_pids)
        assert set(node_pids) <= tree
        launcher.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
        out, _ = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 0, out
    assert "all processes stopped" in out
    assert "Traceback" not in out, traceback_report(out)
    assert alive(tree) == set()


def test_a_dying_node_stops_the_fleet_with_a_clear_message(tmp_path, ros_environment):
    path = fleet_file(tmp_path)
    launcher = start_launcher(path, ros_environment)
    try:
        pids = wait_for_nodes(launcher, expected_processes(path))
        time.sleep(1.0)
        os.kill(pids["/robot2/robot_status"], signal.SIGKILL)
        out, _ = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 1
    assert "ERROR: /robot2/robot_status died with exit code -9; shutting the fleet down" in out
    assert alive(pids.values()) == set()


def test_respawn_restarts_a_dead_node_and_sigterm_stops_everything(tmp_path, ros_environment):
    path = fleet_file(tmp_path, respawn=True)
    launcher = start_launcher(path, ros_environment, "--robot", "robot1")
    try:
        seen = []
        pids = wait_for_nodes(launcher, expected_processes(path, ["robot1"]))
        pid = pids["/robot1/robot_status"]
        os.kill(pid, signal.SIGKILL)
        new_pid = wait_for_nodes(launcher, 1, lines=seen)["/robot1/robot_status"]
        assert new_pid != pid
        launcher.send_signal(signal.SIGTERM)
        out, _ = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 0
    assert "/robot1/robot_status exited with code -9; respawning in 0.5 s" in "".join(seen)
    assert alive([*pids.values(), new_pid]) == set()


def test_nodes_stop_when_the_launcher_is_killed_outright(tmp_path, ros_environment):
    """SIGKILL (an OOM kill, a hard timeout) gives the launcher no chance to stop its nodes: they stop themselves."""
    path = fleet_file(tmp_path)
    launcher = start_launcher(path, ros_environment, "--robot", "robot1")
    pids = {}
    try:
        pids = wait_for_nodes(launcher, expected_processes(path, ["robot1"]))
        launcher.kill()
        launcher.wait(timeout=10)
        deadline = time.monotonic() + 60
        while alive(pids.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alive(pids.values()) == set()
    finally:
        for pid in alive(pids.values()):
            os.kill(pid, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.kill()
