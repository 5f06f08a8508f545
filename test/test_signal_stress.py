"""Signal stress: SIGINT and SIGTERM at random moments into a whole sim robot and a hardware-backend robot.

Each robot runs under its own pip-only launcher (test/ros_peers/robot_launcher.py, what `sop launch
--robot` runs) with respawn on, against a real `sop learner` process; the hardware robot reads a
video file as its camera and drives a stand-in ros2_control arm. Signals alternate between the
robots; each goes, after a random pause (so it lands during start-up, episodes, checkpoint loads
or uploads), to one of the robot's node processes (the launcher respawns it) or to the launcher
itself (the whole robot stops; the test starts it again). Claims: no process prints a traceback;
every signalled process exits within its grace period (a node within the launcher's
SHUTDOWN_GRACE_S, with exit code 0; a launcher with every child stopped by its first SIGINT, no
escalation); both robots record episodes again after the last signal; and every episode a
recorder announced as spooled is, once the robots are stopped, in the spool or in the learner's
store.

Short form (CI): 4 signals (3 SIGINT, 1 SIGTERM).
Full: SOP_STRESS_SIGNALS=40 pytest -s test/test_signal_stress.py (30 SIGINT, 10 SIGTERM);
SOP_STRESS_SEED=N replays the random choices of a run (each run prints its seed).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest
import yaml
from conftest import ros_env, start_peer, wait_for
from robot_support import RestartableLearner
from signal_stress_support import RobotUnderLauncher, alive, spooled_announcements, write_video

from sop_ros.core.episodes.episode_file import read_episode_metadata
from sop_ros.core.storage.spool import Spool
from sop_ros.fleet.description import load_fleet
from sop_ros.fleet.launcher import SHUTDOWN_GRACE_S

SIGNALS = int(os.environ.get("SOP_STRESS_SIGNALS", "4"))
SEED = int(os.environ.get("SOP_STRESS_SEED", str(random.SystemRandom().randrange(2**31))))
MAX_PAUSE_S = 6.0  # the random moment: up to this long after the previous signal was handled
LAUNCHER_SHARE = 0.25  # of the signals, to the robot's launcher (the whole robot stops)
LAUNCHER_GRACE_S = 2 * SHUTDOWN_GRACE_S  # the managers' stage, then the nodes' SIGINT stage
ROBOTS = ("robot1", "robot2")

pytestmark = [
    pytest.mark.timeout(600 + 120 * SIGNALS),
    # Open defects this test found (2026-12-04, docs/RESULTS.md "Signal stress"): a sim_robot signalled while
    # still starting died of SIGSEGV (exit -11, no output); a policy stopped by the launcher's SIGINT at the end
    # was still running 10 s later (escalated); a node SIGINTed while Python still imports (before rclpy installs
    # its handlers) prints a KeyboardInterrupt traceback, or "Fatal Python error: init_import_site" at interpreter
    # start. Not strict: it runs in the suite and passes once they are fixed.
    pytest.mark.xfail(
        strict=False,
        reason="open: the policy slow to stop (a checkpoint load is not interruptible); start-up signals fixed",
    ),
]


def fleet_file(tmp, learner) -> str:
    robot = {"tasks": ["push-v3"], "respawn": True, "respawn_delay_s": 0.5, "control_rate_hz": 10.0}
    data = {
        "fleet": "signal_stress",
        "state_dir": str(tmp / "state"),
        "learner": {"address": learner.address, "run_locally": False, "insecure": True},
        "robots": [{"id": "robot1", "backend": "sim", **robot}, {"id": "robot2", "backend": "hardware", **robot}],
    }
    path = tmp / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def overrides(video) -> dict[str, dict]:
    return {
        "sim_robot": {"max_steps": 20, "reset_pause_s": 0.1},
        "camera_driver": {"source": str(video), "loop": True},
        "episode_manager": {"max_duration_s": 2.0, "reset_pause_s": 0.3},
    }


def signal_plan(rng: random.Random) -> list[signal.Signals]:
    sigterms = SIGNALS // 4
    plan = [signal.SIGINT] * (SIGNALS - sigterms) + [signal.SIGTERM] * sigterms
    rng.shuffle(plan)
    return plan


def test_random_sigints_and_sigterms_leave_no_traceback_no_straggler_and_no_lost_episode(tmp_path):
    print(f"signal stress: seed {SEED}, {SIGNALS} signals (SOP_STRESS_SEED={SEED} replays it)")
    rng = random.Random(SEED)
    started = time.monotonic()
    learner = RestartableLearner(tmp_path)
    learner.start()
    fleet_path = fleet_file(tmp_path, learner)
    env = ros_env()
    topics = tmp_path / "topics.jsonl"
    recorder = start_peer("link_topic_recorder.py", str(topics), *(f"/{r}" for r in ROBOTS), env=env)
    arm = start_peer("arm_stand_in.py", "/robot2", env=env)
    assert recorder.stdout.readline().strip() == "ready" and arm.stdout.readline().strip() == "ready"
    node_overrides = json.dumps(overrides(write_video(tmp_path / "scene.avi")))
    robots = {r: RobotUnderLauncher(tmp_path, fleet_path, r, node_overrides, env) for r in ROBOTS}
    logs = lambda: "\n".join(f"--- {r} ---\n{robot.log()[-3000:]}" for r, robot in robots.items())  # noqa: E731
    sent, exit_times = [], []
    try:
        for robot in robots.values():
            robot.start()
        for i, sig in enumerate(signal_plan(rng)):
            robot = robots[ROBOTS[i % 2]]
            time.sleep(rng.uniform(0.0, MAX_PAUSE_S))  # the random moment (not a synchronisation)
            target = "launcher" if rng.random() < LAUNCHER_SHARE else rng.choice(sorted(robot.wait_for_nodes()))
            context = f"seed {SEED}, signal {i + 1}/{SIGNALS}: {sig.name} to {robot.robot_id} {target}"
            exit_s = robot.signal_launcher(sig) if target == "launcher" else robot.signal_node(target, sig)
            sent.append(context)
            exit_times.append(exit_s)
            limit = LAUNCHER_GRACE_S if target == "launcher" else SHUTDOWN_GRACE_S
            assert exit_s <= limit, f"{context}: exited after {exit_s:.1f} s (grace {limit} s)\n{logs()}"
            if target == "launcher":
                robot.start()
        # Both robots work again: each spools an episode after the last signal.
        last_signal_ns = time.time_ns()
        for robot_id in ROBOTS:
            wait_for(
                lambda robot_id=robot_id: spooled_announcements(topics, robot_id, since_ns=last_signal_ns),
                240,
                f"{robot_id} to spool an episode after the last signal (seed {SEED})",
                logs,
            )
        for robot in robots.values():
            exit_times.append(robot.signal_launcher(signal.SIGINT))
    finally:
        for robot in robots.values():
            robot.kill_if_running()
        for peer in (recorder, arm):
            peer.send_signal(signal.SIGINT)
            peer.wait(timeout=30)
        learner.stop()

    print(
        f"signal stress: seed {SEED}; {len(sent)} signals ({sum('SIGINT' in s for s in sent)} SIGINT); "
        f"{sum(r.starts for r in robots.values())} launcher starts; max exit {max(exit_times):.2f} s; "
        f"episodes spooled {sum(len(spooled_announcements(topics, r)) for r in ROBOTS)}; "
        f"wall {time.monotonic() - started:.0f} s"
    )
    for line in sent:
        print("  " + line)
    # No process printed a traceback; every node stopped on its signal with exit code 0.
    for robot in robots.values():
        assert robot.tracebacks() == [], f"seed {SEED}:\n" + "\n".join(robot.tracebacks())
        assert robot.unclean_exits() == [], f"seed {SEED}: {robot.unclean_exits()}"
        assert alive(robot.every_pid()) == set(), f"seed {SEED}: processes left over"
    assert "Traceback" not in learner.log()

    # Every episode a recorder spooled is in the spool (readable) or at the learner.
    fleet = load_fleet(fleet_path)
    stored = learner.stored_episode_ids()
    for robot_id in ROBOTS:
        pending = Spool(fleet.spool_dir(fleet.robot(robot_id)), 1 << 40).pending()
        for entry in pending:
            read_episode_metadata(entry.path)
        kept = stored | {e.episode_id.lower() for e in pending}
        announced = spooled_announcements(topics, robot_id)
        assert announced, f"{robot_id} spooled no episode"
        lost = announced - kept
        assert not lost, f"seed {SEED}: {robot_id} lost {len(lost)} spooled episode(s): {sorted(lost)}"
