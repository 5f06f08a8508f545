"""A stand-in for a ros2_control arm (joint_state_broadcaster + joint_trajectory_controller) and the
recorder's label service.

usage: fake_arm_controller.py NAMESPACE OUT_FILE MAX_DURATION_S
Publishes NAMESPACE/joint_states at 50 Hz (sensor QoS, its own clock, like a real driver) and
moves to each goal received on NAMESPACE/arm_controller/joint_trajectory. Serves
NAMESPACE/label_episode (accepts every label). Plays the operator once the policy is acting: after an
episode with >= 5 executed steps ended on its own, it asks the episode manager to end the next
running episode as a success once it has >= 5 steps (NAMESPACE/end_episode); it stops after one
more episode ended (or at MAX_DURATION_S). Writes JSON lines:
goal (stamp, joint_names, positions, time_from_start), event (episode_event), executed
(executed_step), label (a label_episode request), end_response.
"""

import json
import sys
import time

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from sop_ros.msg import EpisodeStatus, ExecutedStep
from sop_ros.nodes._qos import CONTROL, EVENTS, SENSOR
from sop_ros.srv import LabelEpisode

JOINTS = ["x_joint", "y_joint", "z_joint", "gripper_joint"]


def ns_of(t):
    return t.sec * 1_000_000_000 + t.nanosec


def main():
    ns, out_path, duration = sys.argv[1], sys.argv[2], float(sys.argv[3])
    rclpy.init()
    node = Node("fake_arm_controller")
    out = open(out_path, "w", buffering=1)
    write = lambda record: out.write(json.dumps(record) + "\n")  # noqa: E731
    position = [0.0, 0.6, 0.2, 1.0]
    running = {}
    steps = {}  # episode id -> executed steps seen
    ended = []  # (episode id, outcome) in order

    def on_goal(msg):
        point = msg.points[-1]
        write(
            {
                "topic": "goal",
                "stamp": ns_of(msg.header.stamp),
                "joint_names": list(msg.joint_names),
                "positions": list(point.positions),
                "time_from_start": ns_of(point.time_from_start),
                "received": time.time_ns(),
            }
        )
        position[:] = list(point.positions)

    def on_event(msg):
        write(
            {
                "topic": "event",
                "stamp": ns_of(msg.header.stamp),
                "episode_id": msg.episode_id,
                "outcome": msg.outcome,
                "step": msg.step,
                "task_id": msg.task_id,
                "received": time.time_ns(),
            }
        )
        running["id"] = msg.episode_id if msg.outcome == EpisodeStatus.OUTCOME_RUNNING else None
        if msg.outcome != EpisodeStatus.OUTCOME_RUNNING:
            ended.append((msg.episode_id, msg.outcome))

    def on_label(request, response):
        write({"topic": "label", "episode_id": request.episode_id, "success": request.success})
        response.accepted, response.episode_id = True, request.episode_id
        return response

    node.create_subscription(JointTrajectory, f"{ns}/arm_controller/joint_trajectory", on_goal, CONTROL)
    node.create_subscription(EpisodeStatus, f"{ns}/episode_event", on_event, EVENTS)

    def on_executed(m):
        steps[m.episode_id] = steps.get(m.episode_id, 0) + 1
        write(
            {
                "topic": "executed",
                "stamp": ns_of(m.header.stamp),
                "executed_at": ns_of(m.executed_at),
                "episode_id": m.episode_id,
                "episode_step": m.episode_step,
                "actor": m.actor,
                "policy_version": m.policy_version,
                "action": list(m.action),
            }
        )

    node.create_subscription(ExecutedStep, f"{ns}/executed_step", on_executed, CONTROL)
    node.create_service(LabelEpisode, f"{ns}/label_episode", on_label)
    joint_pub = node.create_publisher(JointState, f"{ns}/joint_states", SENSOR)

    def publish_state():
        msg = JointState(name=JOINTS, position=[float(v) for v in position])
        msg.header.stamp = node.get_clock().now().to_msg()
        joint_pub.publish(msg)

    node.create_timer(0.02, publish_state)
    end_client = node.create_client(LabelEpisode, f"{ns}/end_episode")
    start = time.monotonic()
    end_future, operator_ended, done_after = None, None, None
    while time.monotonic() - start < duration:
        rclpy.spin_once(node, timeout_sec=0.01)
        policy_acted = any(steps.get(e, 0) >= 5 for e, _ in ended)
        current = running.get("id")
        if operator_ended is None and end_future is None and policy_acted and current and steps.get(current, 0) >= 5:
            end_future = end_client.call_async(LabelEpisode.Request(success=True))
        if end_future is not None and end_future.done() and end_future.result() is not None:
            r = end_future.result()
            write({"topic": "end_response", "accepted": r.accepted, "episode_id": r.episode_id, "message": r.message})
            end_future, operator_ended = None, r.episode_id
        if (
            operator_ended
            and done_after is None
            and ended
            and ended[-1][0] not in (operator_ended,)
            and operator_ended in [e for e, _ in ended]
        ):
            done_after = time.monotonic() + 0.5  # the last messages arrive
        if done_after is not None and time.monotonic() > done_after:
            break
    out.close()
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
