"""Hardware-side nodes with real processes: camera driver (a real video file), joystick publisher
(SDL without a device), and the episode manager running the policy + action mux against a fake
ros2_control arm (JointState out, JointTrajectory goals recorded) and an operator ending an episode."""

import dataclasses
import json
import signal
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
from conftest import REPO, ros_env, start_peer

from sop_ros.core.episodes.hashing import file_sha256
from sop_ros.core.robot.backend import SIM_ARM_JOINT_NAMES
from sop_ros.fleet.description import parse_fleet
from sop_ros.fleet.launcher import FleetLauncher
from sop_ros.fleet.specs import node_specs, select_nodes
from sop_ros.msg import EpisodeStatus
from sop_ros.nodes.joystick import joy_message

pytestmark = pytest.mark.timeout(180)
FRAMES = 15


def start_node(executable, env, *params):
    args = [sys.executable, "-m", "sop_ros.nodes", executable, "--ros-args", "-r", "__ns:=/robot1"]
    for p in params:
        args += ["-p", p]
    return subprocess.Popen(
        args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def stop(proc, timeout=30):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=timeout)[0]


@pytest.fixture
def video_file(tmp_path):
    """A real MJPG video: 160x120, frame i has brightness 10 + 15 i in the red channel, blue 0."""
    path = tmp_path / "scene.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened()
    for i in range(FRAMES):
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[..., 2] = 10 + 15 * i  # BGR: red
        writer.write(frame)
    writer.release()
    return path


def test_camera_driver_publishes_the_video_as_best_effort_rgb_images_in_order(video_file):
    env = ros_env()
    probe = start_peer("camera_probe.py", "/robot1/camera/image_raw", "7", env=env)
    assert probe.stdout.readline().strip() == "ready"
    # loop: the first frames may go out before discovery completes (best effort); later loops are seen whole.
    camera = start_node(
        "camera_driver", env, f"source:={video_file}", "rate_hz:=10.0", "width:=64", "height:=48", "loop:=true"
    )
    try:
        out = probe.communicate(timeout=60)[0]
        alive_at_end = camera.poll() is None
    finally:
        log = stop(camera)
    result = json.loads(out.strip().splitlines()[-1])
    frames = result["frames"]
    assert result["publisher_reliability"] == ["BEST_EFFORT"]
    assert len(frames) >= 30, log
    assert all((f["width"], f["height"], f["encoding"], f["frame_id"]) == (64, 48, "rgb8", "camera") for f in frames)
    assert all(abs(f["channel_means"][2]) < 3 for f in frames)  # converted BGR -> RGB: no blue
    # Frame index from the red level (10 + 15 i, JPEG-rounded): every frame once, in file order, then again.
    index = [round((f["channel_means"][0] - 10) / 15) for f in frames]
    assert all(b == (a + 1) % FRAMES for a, b in zip(index, index[1:])), index
    assert index.count(0) >= 2
    stamps = [f["stamp"] for f in frames]
    gaps = np.diff(stamps) / 1e9
    assert gaps.min() > 0.05 and np.median(gaps) == pytest.approx(0.1, abs=0.03)  # paced at 10 Hz, stamped at capture
    assert alive_at_end and "Traceback" not in log


def test_camera_driver_stops_at_the_end_of_a_video_without_loop(video_file):
    camera = start_node("camera_driver", ros_env(), f"source:={video_file}", "rate_hz:=20.0")
    ended = f"end of video file '{video_file}' after {FRAMES} frames"
    lines = []
    while not lines or (ended not in lines[-1] and lines[-1]):  # '' = the process closed its output
        lines.append(camera.stdout.readline())
    alive = camera.poll() is None  # the driver reports the end and stays up (the node keeps its topics)
    log = "".join(lines) + stop(camera)
    assert alive and ended in log and "Traceback" not in log, log


def test_camera_driver_refuses_a_source_it_cannot_open(tmp_path):
    proc = start_node("camera_driver", ros_env(), f"source:={tmp_path / 'missing.avi'}")
    log = proc.communicate(timeout=60)[0]
    assert proc.returncode == 2 and "cannot open camera source" in log and "Traceback" not in log


def test_joy_message_follows_joy_node_conventions():
    msg = joy_message([0.5, -1.0, 1.2], [True, False, 1], [(1, -1)], 1_500_000_000, "joy")
    assert list(msg.axes) == pytest.approx([-0.5, 1.0, -1.0, -1.0, -1.0])  # negated, clipped, then hat x/y
    assert list(msg.buttons) == [1, 0, 1]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (1, 500_000_000, "joy")


def test_joystick_without_a_device_waits_with_a_clear_message_and_exits_cleanly():
    env = ros_env(SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy")
    proc = start_node("joystick", env, "device_index:=0")
    first = proc.stdout.readline()  # the node's first line: it says what it waits for, and keeps running
    alive = proc.poll() is None
    log = first + stop(proc)
    assert alive, log
    assert "no joystick at device index 0" in first and "waiting for one to be connected" in first, log
    assert proc.returncode == 0 and "Traceback" not in log


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from sop_ros.core.model import VLAPolicy, preset

    torch.manual_seed(1)
    path = VLAPolicy(preset("tiny", chunk_size=4), device="cpu").save(
        tmp_path_factory.mktemp("ckpt") / "v1.safetensors"
    )
    return str(path), file_sha256(path)


def test_episode_manager_drives_a_ros2_control_arm_with_timeouts_and_an_operator_end(tmp_path, video_file, checkpoint):
    fleet = parse_fleet(
        {
            "fleet": "hw_test",
            "state_dir": str(tmp_path / "state"),
            "learner": {"run_locally": False, "insecure": True},
            "robots": [
                {"id": "robot1", "backend": "hardware", "tasks": ["push-v3", "pick-place-v3"], "control_rate_hz": 10.0}
            ],
        }
    )
    overrides = {
        "camera_driver": {"source": str(video_file), "loop": True},
        # No recorder here: the first episode need not wait for one.
        "episode_manager": {"max_duration_s": 2.5, "reset_pause_s": 0.8, "wait_for_recorder_s": 0.0},
        "policy": {"checkpoint_path": checkpoint[0], "checkpoint_sha256": checkpoint[1], "checkpoint_version": 1},
    }
    specs = [
        dataclasses.replace(s, parameters={**s.parameters, **overrides.get(s.name, {})})
        for s in select_nodes(
            node_specs(fleet, with_learner=False),
            lambda s: s.name in ("camera_driver", "episode_manager", "policy", "action_mux", "lifecycle_manager"),
        )
    ]
    assert sorted(s.name for s in specs) == [
        "action_mux",
        "camera_driver",
        "episode_manager",
        "lifecycle_manager",
        "policy",
    ]
    env = ros_env()
    out = tmp_path / "arm.jsonl"
    controller = start_peer("fake_arm_controller.py", "/robot1", str(out), "100", env=env)
    log_path = tmp_path / "launch.log"
    with open(log_path, "w") as log_file:
        launcher = FleetLauncher(specs, out=log_file, env=env)
        thread = threading.Thread(target=launcher.run, daemon=True)
        thread.start()
        try:
            controller.wait(timeout=110)
        finally:
            launcher.request_stop()
            thread.join(timeout=60)
    log = log_path.read_text()
    assert controller.returncode == 0, controller.stdout.read() + log[-3000:]
    assert "Traceback" not in log, log[-5000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    events = [r for r in records if r["topic"] == "event"]
    starts = {r["episode_id"]: r for r in events if r["outcome"] == EpisodeStatus.OUTCOME_RUNNING}
    ends = {r["episode_id"]: r for r in events if r["outcome"] != EpisodeStatus.OUTCOME_RUNNING}
    executed = [r for r in records if r["topic"] == "executed"]
    goals = [r for r in records if r["topic"] == "goal"]
    assert len(starts) >= 3 and set(ends) <= set(starts), log[-3000:]
    # Tasks cycle in order across episodes.
    ordered = sorted(starts.values(), key=lambda r: r["stamp"])
    assert [r["task_id"] for r in ordered[:3]] == ["push-v3", "pick-place-v3", "push-v3"]

    # Time limit: UNLABELED after max_duration_s. Operator: exactly one SUCCESS, its label forwarded to label_episode.
    timed_out = [e for e in ends.values() if e["outcome"] == EpisodeStatus.OUTCOME_UNLABELED]
    assert timed_out and all(abs((e["stamp"] - starts[e["episode_id"]]["stamp"]) / 1e9 - 2.5) < 0.3 for e in timed_out)
    by_operator = [e for e in ends.values() if e["outcome"] == EpisodeStatus.OUTCOME_SUCCESS]
    (response,) = [r for r in records if r["topic"] == "end_response"]
    assert response["accepted"] and len(by_operator) == 1 and by_operator[0]["episode_id"] == response["episode_id"]
    assert (
        by_operator[0]["stamp"] - starts[response["episode_id"]]["stamp"]
    ) / 1e9 < 2.4  # ended before its time limit
    assert [r for r in records if r["topic"] == "label"] == [
        {"topic": "label", "episode_id": response["episode_id"], "success": True}
    ]

    # Executed steps: the loaded policy acts inside episodes only, and each end event counts its steps.
    assert executed and all(r["policy_version"] == 1 and r["actor"] == 0 for r in executed)
    acted = 0
    for episode_id, end in ends.items():
        steps = sorted(r["episode_step"] for r in executed if r["episode_id"] == episode_id)
        assert steps == list(range(len(steps)))
        # end["step"] is what the manager had counted when it ended the episode; ExecutedStep messages still in
        # flight then (one per 10 Hz tick; the 300 ms window below) are executed but not counted: at most 3.
        assert end["step"] <= len(steps) <= end["step"] + 3, (end, len(steps))
        acted += len(steps) >= 5  # the stand-in operator acts on >= 5 executed steps (fake_arm_controller.py)
        for r in executed:
            later = [s["stamp"] for s in starts.values() if s["stamp"] > end["stamp"]]
            # No frame taken between the end (plus what was in flight) and the next start is acted on.
            assert not (end["stamp"] + 300_000_000 < r["stamp"] < min(later, default=2**63)), (r, end)
    assert acted >= 2

    # Goals: for the arm's joints, stamped when sent, never the same goal twice in a row.
    assert len(goals) >= 10 and len(goals) <= len(executed)
    assert all(g["joint_names"] == list(SIM_ARM_JOINT_NAMES) and g["time_from_start"] == 100_000_000 for g in goals)
    stamps = [g["stamp"] for g in goals]
    assert stamps[0] > 0 and all(b > a for a, b in zip(stamps, stamps[1:]))
    assert all(g["stamp"] <= g["received"] for g in goals)
    positions = [g["positions"] for g in goals]
    assert all(not np.allclose(a, b, atol=1e-12, rtol=0) for a, b in zip(positions, positions[1:]))
