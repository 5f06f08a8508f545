"""Monitor: the ROS-free display state and overlay, and the real node driven by a real peer process."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, ros_env, run_peer

from sop_ros.core.episodes.episode import Actor
from sop_ros.core.robot.monitor_state import (
    HUMAN_COLOUR,
    IDLE_COLOUR,
    POLICY_COLOUR,
    MonitorConfig,
    RobotMonitorState,
    annotate_image,
)

pytestmark = pytest.mark.timeout(90)


def test_state_counts_each_labelled_episode_once_over_a_sliding_window():
    state = RobotMonitorState(MonitorConfig("robot7", success_window=3))
    assert state.success_rate is None and "n/a" in state.lines()[3]
    for episode_id, success in [("a", True), ("a", True), ("b", False), ("c", True), ("d", True)]:
        state.on_labelled(episode_id, success)
    assert state.labelled_episodes == 3 and state.success_rate == pytest.approx(2 / 3)  # b, c, d
    assert state.lines()[3] == "success 67% of last 3"


def test_state_follows_who_acts_and_ignores_replays_of_earlier_episodes():
    state = RobotMonitorState(MonitorConfig("robot7"))
    assert state.colour == IDLE_COLOUR
    state.on_episode_start("e1", "push-v3")
    state.on_step("e1", 0, Actor.POLICY, 4)
    assert state.colour == POLICY_COLOUR and state.lines()[:3] == [
        "robot7: push-v3",
        "policy acting",
        "policy v4  step 1  human 0",
    ]
    state.on_actor("e1", Actor.HUMAN, "deadman pressed")
    state.on_step("e1", 1, Actor.HUMAN, 4)
    assert (
        state.colour == HUMAN_COLOUR and state.lines()[1] == "HUMAN acting (deadman pressed)" and state.human_steps == 1
    )
    state.on_episode_end("e1")
    state.on_episode_start("e2", "pick-place-v3")
    state.on_actor("e1", Actor.HUMAN, "replayed")  # transient-local replay of e1's change
    assert state.actor == Actor.POLICY and state.colour == POLICY_COLOUR and state.episode_step == 0
    state.on_episode_start("e2", "pick-place-v3")  # replayed start: nothing resets
    state.on_step("e2", 0, Actor.POLICY, 5)
    state.on_episode_start("e2", "pick-place-v3")
    assert state.episode_step == 1 and state.policy_version == 5


def test_annotate_image_scales_writes_text_and_frames_it_in_the_actor_colour():
    image = np.full((64, 48, 3), 200, np.uint8)
    out = annotate_image(image, ["robot1: push-v3", "HUMAN acting"], HUMAN_COLOUR, scale=4)
    assert out.shape == (256, 192, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [255, 140, 0]  # the border in the human colour
    band = out[5:40, 5:180]
    assert band.mean() < 150 and (band > 200).any()  # a darkened band with bright text on it
    np.testing.assert_array_equal(out[200, 100], [200, 200, 200])  # the image itself is untouched below
    with pytest.raises(ValueError, match="RGB image"):
        annotate_image(np.zeros((8, 8), np.uint8), [], HUMAN_COLOUR)


def test_monitor_node_shows_task_actor_policy_version_and_success_rate(tmp_path):
    env = ros_env()
    monitor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sop_ros.nodes",
            "monitor",
            "--ros-args",
            "-r",
            "__ns:=/robot1",
            "-p",
            "display_rate_hz:=10.0",
            "-p",
            "annotate_scale:=2",
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        feeder = run_peer("monitor_feeder.py", "/robot1", "20", env=env, timeout=80)
    finally:
        monitor.send_signal(signal.SIGINT)
        log = monitor.communicate(timeout=30)[0]
    assert feeder.returncode == 0, feeder.stdout + feeder.stderr + log
    phases = {d["phase"]: d for d in map(json.loads, feeder.stdout.splitlines())}
    policy, human, idle = phases["policy"], phases["human"], phases["idle"]
    # 3 distinct labelled episodes (a success, b failure, c success; a replayed, d unlabelled): 67 %.
    assert policy["text"].splitlines() == [
        "robot1: push-v3",
        "policy acting",
        "policy v3  step 3  human 0",
        "success 67% of last 3",
    ]
    assert policy["colour"] == pytest.approx(list(POLICY_COLOUR[:3]))
    assert human["text"].splitlines()[1:3] == ["HUMAN acting (no progress)", "policy v3  step 4  human 1"]
    assert human["colour"] == pytest.approx(list(HUMAN_COLOUR[:3]))
    assert idle["text"].splitlines()[1] == "idle (between episodes)" and idle["colour"] == pytest.approx(
        list(IDLE_COLOUR[:3])
    )
    for phase, colour in ((policy, POLICY_COLOUR), (human, HUMAN_COLOUR)):
        image = phase["image"]
        assert (image["width"], image["height"]) == (128, 128)
        assert image["corner_rgb"] == [int(255 * c) for c in colour[:3]]
        assert image["bottom_rgb"] == [40, 40, 40]  # the camera frame itself below the text
    assert "Traceback" not in log
