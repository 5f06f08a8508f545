"""Plays the policy and the arm around an action mux: 10 Hz ticks, records what the mux executes.

usage: mux_driver.py NAMESPACE OUT_FILE DURATION_S
Announces one running episode (the mux executes only inside one), then each tick publishes
joint_states and a one-action ActionChunk [0.01, 0, 0, 0] (policy v5) stamped now; writes JSON
lines for every ExecutedStep, InterventionState and arm goal received.
"""

import json
import sys
import time

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from sop_ros.msg import ActionChunk, EpisodeStatus, ExecutedStep, InterventionState
from sop_ros.nodes._qos import CONTROL, EVENTS, SENSOR


def ns_of(t):
    return t.sec * 1_000_000_000 + t.nanosec


def main():
    ns, out_path, duration = sys.argv[1], sys.argv[2], float(sys.argv[3])
    rclpy.init()
    node = Node("mux_driver")
    out = open(out_path, "w", buffering=1)
    events = node.create_publisher(EpisodeStatus, f"{ns}/episode_event", EVENTS)
    start = EpisodeStatus(
        episode_id="mux-driver-episode",
        robot_id=ns.strip("/"),
        task_id="push-v3",
        outcome=EpisodeStatus.OUTCOME_RUNNING,
    )
    start.header.stamp = node.get_clock().now().to_msg()
    events.publish(start)  # transient-local: a mux that starts later still gets it
    joints = node.create_publisher(JointState, f"{ns}/joint_states", SENSOR)
    chunks = node.create_publisher(ActionChunk, f"{ns}/action_chunk", CONTROL)
    node.create_subscription(
        ExecutedStep,
        f"{ns}/executed_step",
        lambda m: out.write(
            json.dumps(
                {
                    "topic": "executed",
                    "stamp": ns_of(m.header.stamp),
                    "actor": m.actor,
                    "action": list(m.action),
                    "version": m.policy_version,
                }
            )
            + "\n"
        ),
        CONTROL,
    )
    node.create_subscription(
        InterventionState,
        f"{ns}/intervention_state",
        lambda m: out.write(
            json.dumps({"topic": "intervention", "stamp": ns_of(m.header.stamp), "actor": m.actor, "reason": m.reason})
            + "\n"
        ),
        EVENTS,
    )
    node.create_subscription(
        JointTrajectory,
        f"{ns}/arm_controller/joint_trajectory",
        lambda m: out.write(
            json.dumps({"topic": "goal", "stamp": ns_of(m.header.stamp), "positions": list(m.points[0].positions)})
            + "\n"
        ),
        CONTROL,
    )

    def tick():
        now = node.get_clock().now().to_msg()
        js = JointState(name=["x_joint", "y_joint", "z_joint", "gripper_joint"], position=[0.0, 0.6, 0.2, 1.0])
        js.header.stamp = now
        joints.publish(js)
        chunk = ActionChunk(policy_version=5, chunk_length=1, action_dim=4, actions=[0.01, 0.0, 0.0, 0.0])
        chunk.header.stamp = now
        chunks.publish(chunk)

    node.create_timer(0.1, tick)
    end = time.monotonic() + duration
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.02)
    out.close()
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
