"""Records a robot's control topics as JSON lines until SIGINT/SIGTERM.

usage: robot_topic_recorder.py OUT_FILE NAMESPACE...
Each line: {"ns", "topic", ...fields}. Topics: intervention_state, executed_step, episode_event,
episode_status (the streams the robot tests compare with the recorded episodes).
"""

import json
import signal
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from sop_ros.msg import EpisodeStatus, ExecutedStep, InterventionState

EVENTS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
CONTROL = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def ns_of(stamp):
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def main():
    out_path, namespaces = sys.argv[1], sys.argv[2:]
    rclpy.init()
    node = Node("robot_topic_recorder")
    out = open(out_path, "a", buffering=1)

    def writer(ns, topic, convert):
        return lambda msg: out.write(json.dumps({"ns": ns, "topic": topic, **convert(msg)}) + "\n")

    for ns in namespaces:
        node.create_subscription(
            InterventionState,
            f"{ns}/intervention_state",
            writer(
                ns,
                "intervention_state",
                lambda m: {
                    "stamp": ns_of(m.header.stamp),
                    "actor": m.actor,
                    "episode_id": m.episode_id,
                    "episode_step": m.episode_step,
                    "segment_index": m.segment_index,
                    "reason": m.reason,
                },
            ),
            EVENTS,
        )
        node.create_subscription(
            ExecutedStep,
            f"{ns}/executed_step",
            writer(
                ns,
                "executed_step",
                lambda m: {
                    "stamp": ns_of(m.header.stamp),
                    "executed_at": ns_of(m.executed_at),
                    "actor": m.actor,
                    "episode_id": m.episode_id,
                    "episode_step": m.episode_step,
                    "policy_version": m.policy_version,
                },
            ),
            CONTROL,
        )
        for topic in ("episode_event", "episode_status"):
            node.create_subscription(
                EpisodeStatus,
                f"{ns}/{topic}",
                writer(
                    ns,
                    topic,
                    lambda m: {
                        "stamp": ns_of(m.header.stamp),
                        "episode_id": m.episode_id,
                        "outcome": m.outcome,
                        "step": m.step,
                        "upload_state": m.upload_state,
                        "task_id": m.task_id,
                    },
                ),
                EVENTS,
            )
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print("ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        out.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
