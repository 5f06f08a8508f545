"""Teleop through the real teleop and action-mux nodes with a real Joy publisher process."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, ros_env, run_peer, start_peer

pytestmark = pytest.mark.timeout(120)
TICK_NS = 100_000_000


def start_node(module, env, *params):
    args = [sys.executable, "-m", f"sop_ros.nodes.{module}", "--ros-args", "-r", "__ns:=/robot1"]
    for p in params:
        args += ["-p", p]
    return subprocess.Popen(
        args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def test_deadman_gives_the_human_control_from_the_next_tick_and_release_or_silence_hands_it_back(tmp_path):
    env = ros_env()
    nodes = [start_node("teleop", env, "joy_timeout_s:=0.3"), start_node("action_mux", env, "human_timeout_s:=0.25")]
    out = tmp_path / "mux.jsonl"
    driver = start_peer("mux_driver.py", "/robot1", str(out), "14", env=env)
    try:
        joy = run_peer("joy_script.py", "/robot1", env=env, timeout=60)
        driver.wait(timeout=60)
    finally:
        for p in nodes + [driver]:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        logs = [p.communicate(timeout=30)[0] for p in nodes]
    assert joy.returncode == 0, joy.stderr
    phases = {d["phase"]: d["t_ns"] for d in map(json.loads, joy.stdout.splitlines())}
    records = [json.loads(line) for line in out.read_text().splitlines()]
    executed = [r for r in records if r["topic"] == "executed"]
    human_action = [0.8, 0.5, -0.6, -1.0]

    def actors_between(start, end):
        return [r["actor"] for r in executed if start <= r["stamp"] < end]

    idle = actors_between(phases["idle"], phases["hold"])
    assert idle and set(idle) == {0}
    # Pressing: teleop sends the press at once, so the human acts from the next mux tick (one tick of slack
    # for message latency on a loaded machine), until release.
    hold = [r for r in executed if phases["hold"] <= r["stamp"] < phases["release"]]
    first_human = next(r for r in hold if r["actor"] == 1)
    assert first_human["stamp"] - phases["hold"] <= 2 * TICK_NS, hold[:4]
    assert all(r["actor"] == 1 for r in hold if r["stamp"] > first_human["stamp"])
    for r in hold:
        if r["actor"] == 1:
            np.testing.assert_allclose(r["action"], human_action, atol=1e-6)
    # Released: the policy is back within the timeouts, and no human command is executed afterwards.
    release = [r for r in executed if phases["release"] + 6 * TICK_NS <= r["stamp"] < phases["hold2"]]
    assert release and all(r["actor"] == 0 for r in release)
    hold2 = actors_between(phases["hold2"] + 2 * TICK_NS, phases["silent"])
    assert hold2 and set(hold2) == {1}
    silent = actors_between(phases["silent"] + 8 * TICK_NS, phases["silent"] + 15 * 10**8)
    assert silent and set(silent) == {0}
    # Every human command was executed at most once: human steps <= teleop ticks while held.
    changes = [r for r in records if r["topic"] == "intervention"]
    assert [c["actor"] for c in changes] == [1, 0, 1, 0]
    assert changes[0]["reason"] == "deadman pressed" and changes[1]["reason"] == "human silent"
    assert "Traceback" not in "".join(logs)
