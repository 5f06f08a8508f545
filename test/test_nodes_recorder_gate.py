"""The first episode waits for the episode recorder (real rclpy nodes, in-process, one context)."""

import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState

from sop_ros.msg import ActionChunk, EpisodeStatus, ExecutedStep
from sop_ros.nodes import _qos
from sop_ros.nodes._runtime import bring_up
from sop_ros.nodes.episode_manager import EpisodeManagerNode
from sop_ros.nodes.episode_recorder import EpisodeRecorderNode

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def context(rclpy_context):
    return rclpy_context


def spin_until(executor, condition, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return condition()


def test_the_first_episode_starts_only_once_the_recorder_matched_every_per_step_stream(context, tmp_path):
    manager = EpisodeManagerNode(
        context=context,
        parameter_overrides=[Parameter("reset_pause_s", value=0.0), Parameter("wait_for_recorder_s", value=3600.0)],
    )
    recorder = EpisodeRecorderNode(context=context, parameter_overrides=[Parameter("spool_dir", value=str(tmp_path))])
    # Stands for the camera, arm, policy and mux; episode_event comes from the manager itself.
    robot = rclpy.create_node("robot_streams", context=context)
    executor = SingleThreadedExecutor(context=context)
    for node in (manager, recorder, robot):
        executor.add_node(node)
    assert bring_up([recorder, manager])
    try:
        # With no per-step publisher the recorder is not ready, and the manager holds the first episode.
        assert not spin_until(executor, lambda: manager.episodes_started > 0, timeout_s=3.0)
        publishers = [
            robot.create_publisher(Image, "camera/image_raw", _qos.SENSOR),
            robot.create_publisher(JointState, "joint_states", _qos.SENSOR),
            robot.create_publisher(ActionChunk, "action_chunk", _qos.CONTROL),
        ]
        # The executed steps are still missing: not ready yet.
        assert not spin_until(executor, lambda: manager.episodes_started > 0, timeout_s=3.0)
        publishers.append(robot.create_publisher(ExecutedStep, "executed_step", _qos.CONTROL))
        assert spin_until(executor, lambda: manager.episodes_started == 1)
        starts = []
        robot.create_subscription(EpisodeStatus, "episode_event", starts.append, _qos.EVENTS)
        assert spin_until(executor, lambda: starts)
        assert starts[0].outcome == EpisodeStatus.OUTCOME_RUNNING
    finally:
        executor.shutdown()
        for node in (manager, recorder, robot):
            node.destroy_node()


def test_without_a_recorder_the_first_episode_starts_after_the_wait(context):
    manager = EpisodeManagerNode(
        context=context,
        parameter_overrides=[Parameter("reset_pause_s", value=0.0), Parameter("wait_for_recorder_s", value=1.0)],
    )
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(manager)
    started = time.monotonic()
    assert bring_up([manager])
    try:
        assert spin_until(executor, lambda: manager.episodes_started == 1)
        assert time.monotonic() - started >= 1.0
    finally:
        executor.shutdown()
        manager.destroy_node()
