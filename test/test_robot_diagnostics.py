"""A running sim robot's /diagnostics as an operator reads it, through a learner outage.

The whole robot (node_specs(), as `sop launch` starts it) runs against a real `sop learner` process
on loopback. /diagnostics must carry the heartbeat and every check an operator acts on (control
loop, policy, spool backlog, link to the learner, operator share); when the learner is killed
the link turns ERROR (and the bridge says so in one log line), and once the learner is back on the
same port the link is OK again (one log line, with the backlog).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from conftest import LaunchedGroup, ros_env, start_peer, wait_for
from robot_support import RestartableLearner, robot_fleet, robot_node_specs

pytestmark = pytest.mark.timeout(420)

CHECKS = ("control_loop", "policy", "spool", "link", "operator", "bridge")
OVERRIDES = {
    "sim_robot": {"max_steps": 20, "reset_pause_s": 0.1},
    "bridge": {"status_period_s": 0.5},
    "robot_status": {"heartbeat_period_s": 0.5},
}


def statuses(path, since_ns: int = 0) -> list[dict]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [s for s in lines if s["t"] >= since_ns]


def latest(path, name: str, since_ns: int = 0):
    found = [s for s in statuses(path, since_ns) if s["name"] == name]
    return found[-1] if found else None


def test_diagnostics_cover_the_robot_and_follow_the_link_through_a_learner_outage(tmp_path):
    learner = RestartableLearner(tmp_path)
    learner.start()
    fleet = robot_fleet(tmp_path, learner, [{"id": "robot1", "backend": "sim", "tasks": ["push-v3"]}])
    env = ros_env()
    diagnostics = tmp_path / "diagnostics.jsonl"
    recorder = start_peer("diagnostics_recorder.py", str(diagnostics), env=env)
    assert recorder.stdout.readline().strip() == "ready"
    robot = LaunchedGroup(robot_node_specs(fleet, "robot1", OVERRIDES), tmp_path / "robot.log", env)
    logs = lambda: f"--- robot ---\n{robot.log()[-5000:]}\n--- learner ---\n{learner.log()[-2000:]}"  # noqa: E731
    link = "sop_ros/robot1/link"
    try:
        # Up: every check present, the policy running the learner's v1, steps executed, the link OK.
        def robot_up():
            policy = latest(diagnostics, "sop_ros/robot1/policy")
            loop = latest(diagnostics, "sop_ros/robot1/control_loop")
            running = policy and policy["values"]["policy_version"] == "1" and loop["values"].get("achieved_hz")
            return running and (latest(diagnostics, link) or {}).get("level") == 0

        wait_for(robot_up, 240, "the robot running v1 with the link OK", logs)
        names = {s["name"] for s in statuses(diagnostics)}
        assert {"sop_ros/robot1", *(f"sop_ros/robot1/{c}" for c in CHECKS)} <= names, names
        spool = latest(diagnostics, "sop_ros/robot1/spool")
        assert {"episodes", "bytes"} <= set(spool["values"]) and spool["hardware_id"] == "robot1"
        assert "operator_share" in latest(diagnostics, "sop_ros/robot1/operator")["values"]

        # The learner dies: the link turns ERROR, saying so; episodes wait in the spool.
        learner.kill()
        killed_ns = time.time_ns()
        down = wait_for(
            lambda: (s := latest(diagnostics, link, killed_ns)) and s["level"] == 2 and s, 60, "link ERROR", logs
        )
        assert down["message"].startswith("learner unreachable for") and down["values"]["connected"] == "False"

        # Back on the same port and data: the link is OK again.
        learner.start()
        back_ns = time.time_ns()
        up = wait_for(lambda: (s := latest(diagnostics, link, back_ns)) and s["level"] == 0 and s, 90, "link OK", logs)
        assert up["values"]["connected"] == "True" and float(up["values"]["last_reply_age_s"]) < 5.0
    finally:
        code = robot.stop()
        recorder.send_signal(signal.SIGINT)
        try:
            recorder.wait(timeout=20)
        except subprocess.TimeoutExpired:
            recorder.kill()
        learner.stop()
    log = robot.log()
    assert code == 0 and "Traceback" not in log, log[-5000:]
    # One line when the learner went away and one when it came back, with the backlog.
    assert log.count("unreachable (UNAVAILABLE") == 1, log[-5000:]
    (back,) = [line for line in log.splitlines() if "reachable again after" in line]
    assert "backlog" in back and "episode(s)" in back
