"""robot_status publishes the robot's health checks on /diagnostics (real rclpy nodes, in-process, one context)."""

import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from sop_ros.core.episodes.episode import Actor
from sop_ros.msg import ActionChunk, EpisodeStatus, ExecutedStep
from sop_ros.nodes import _qos
from sop_ros.nodes.robot_status import RobotStatusNode

pytestmark = pytest.mark.timeout(60)


def spin_until(executor, condition, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return condition()


def test_diagnostics_carry_control_loop_policy_and_operator_checks(rclpy_context):
    context = rclpy_context
    status = RobotStatusNode(context=context, parameter_overrides=[Parameter("heartbeat_period_s", value=0.2)])
    robot = rclpy.create_node("robot_streams", context=context)  # stands for the manager, policy and mux
    executor = SingleThreadedExecutor(context=context)
    for node in (status, robot):
        executor.add_node(node)
    arrays = []
    robot.create_subscription(DiagnosticArray, "diagnostics", arrays.append, 10)
    events = robot.create_publisher(EpisodeStatus, "episode_event", _qos.EVENTS)
    steps = robot.create_publisher(ExecutedStep, "executed_step", _qos.CONTROL)
    chunks = robot.create_publisher(ActionChunk, "action_chunk", _qos.CONTROL)
    try:
        assert spin_until(executor, lambda: steps.get_subscription_count() and chunks.get_subscription_count())
        events.publish(EpisodeStatus(episode_id="e1", outcome=EpisodeStatus.OUTCOME_RUNNING))
        for i in range(20):  # every step the operator's: far above the 0.5 share that warns
            steps.publish(ExecutedStep(episode_id="e1", episode_step=i, actor=int(Actor.HUMAN), policy_version=3))
        chunk = ActionChunk(policy_version=3, chunk_length=1, action_dim=4, actions=[0.0] * 4, inference_ms=12.5)
        chunk.header.stamp = robot.get_clock().now().to_msg()
        chunks.publish(chunk)

        def health():
            named = {s.name: s for array in arrays for s in array.status}
            operator = named.get("sop_ros/robot1/operator")
            return named if operator is not None and operator.level == DiagnosticStatus.WARN else None

        assert spin_until(executor, health)
        named = health()
        assert {"sop_ros/robot1", "sop_ros/robot1/control_loop", "sop_ros/robot1/policy"} <= set(named)
        policy = {kv.key: kv.value for kv in named["sop_ros/robot1/policy"].values}
        assert policy["policy_version"] == "3" and policy["inference_ms"] == "12.5"
        assert named["sop_ros/robot1/control_loop"].hardware_id == "robot1"
    finally:
        executor.shutdown()
        for node in (status, robot):
            node.destroy_node()
