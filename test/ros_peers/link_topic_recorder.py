"""Records what robots see of the fleet link, as JSON lines, until SIGINT/SIGTERM.

usage: link_topic_recorder.py OUT_FILE NAMESPACE...
Lines: {"ns", "topic": "policy_update", version, parent_version, content_hash, local_path, manifest_path,
algorithm, training_step, metrics}, {"ns", "topic": "episode_status", episode_id, outcome, step,
upload_state, spooled_episodes}, {"topic": "diagnostics", name, level, message, values} (bridge
statuses on /diagnostics only); every line also has "t", the wall-clock ns it was received.
"""

import json
import signal
import sys
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from sop_ros.msg import EpisodeStatus, PolicyUpdate

EVENTS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def main():
    out_path, namespaces = sys.argv[1], sys.argv[2:]
    rclpy.init()
    node = Node("link_topic_recorder")
    out = open(out_path, "a", buffering=1)

    def write(record):
        out.write(json.dumps({**record, "t": time.time_ns()}) + "\n")

    for ns in namespaces:
        node.create_subscription(
            PolicyUpdate,
            f"{ns}/policy_update",
            lambda m, ns=ns: write(
                {
                    "ns": ns,
                    "topic": "policy_update",
                    "version": m.version,
                    "parent_version": m.parent_version,
                    "content_hash": m.content_hash,
                    "local_path": m.local_path,
                    "manifest_path": m.manifest_path,
                    "algorithm": m.algorithm,
                    "training_step": m.training_step,
                    "metrics": {kv.key: kv.value for kv in m.metrics},
                }
            ),
            LATCHED,
        )
        node.create_subscription(
            EpisodeStatus,
            f"{ns}/episode_status",
            lambda m, ns=ns: write(
                {
                    "ns": ns,
                    "topic": "episode_status",
                    "episode_id": m.episode_id,
                    "robot_id": m.robot_id,
                    "outcome": m.outcome,
                    "step": m.step,
                    "upload_state": m.upload_state,
                    "task_id": m.task_id,
                    "spooled_episodes": m.spooled_episodes,
                }
            ),
            EVENTS,
        )
    node.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda m: [
            write(
                {
                    "topic": "diagnostics",
                    "name": s.name,
                    "level": int.from_bytes(s.level, "little") if isinstance(s.level, bytes) else int(s.level),
                    "message": s.message,
                    "values": {kv.key: kv.value for kv in s.values},
                }
            )
            for s in m.status
            if s.name.endswith("/bridge")
        ],
        10,
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
