"""Announces one checkpoint on NAMESPACE/policy_update (reliable, transient-local), as the bridge does.

usage: policy_update_publisher.py NAMESPACE VERSION LOCAL_PATH SHA256 [AT_STEP]
Waits until the policy node's own subscription is matched (monitor and robot_status subscribe to the
topic too: publishing once any reader matched, then exiting when those acknowledged, lost the message
for a policy node that discovery had not matched yet) and, with AT_STEP, for the robot to execute step
AT_STEP of an episode, so the announcement lands mid-episode), publishes, waits until the subscriber acknowledged
it, exits 0 (1 if no subscriber appeared within 60 s, 2 if it was not acknowledged within 60 s).
"""

import sys
import time

import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from sop_ros.msg import ExecutedStep, PolicyUpdate

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def main():
    ns, version, path, sha = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    rclpy.init()
    node = Node("policy_update_publisher")
    pub = node.create_publisher(PolicyUpdate, f"{ns}/policy_update", LATCHED)
    at_step = int(sys.argv[5]) if len(sys.argv) > 5 else None
    reached = []
    if at_step is not None:
        node.create_subscription(
            ExecutedStep,
            f"{ns}/executed_step",
            lambda m: reached.append(m) if m.episode_step == at_step else None,
            QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
        )
    topic = f"{ns}/policy_update"

    def policy_matched() -> bool:
        readers = node.get_subscriptions_info_by_topic(topic)
        has_policy = any(r.node_name == "policy" and r.node_namespace == ns for r in readers)
        # Matched count >= readers in the graph: every reader discovered, the policy's included, is matched.
        return has_policy and pub.get_subscription_count() >= len(readers)

    def ready() -> bool:
        return policy_matched() and (at_step is None or bool(reached))

    deadline = time.monotonic() + 60.0
    while not ready() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    if not ready():
        return 1
    msg = PolicyUpdate(version=version, parent_version=version - 1, content_hash=sha, local_path=path, algorithm="bc")
    msg.header.stamp = node.get_clock().now().to_msg()
    pub.publish(msg)
    episode = reached[0].episode_id if reached else ""
    print(f"published v{version} in episode {episode or '-'} at {time.time_ns()}", flush=True)
    # Reliable delivery completes only once the subscriber acknowledged; exiting before that (a loaded
    # machine: more than the 2 s this used to wait) loses the message.
    acked = pub.wait_for_all_acked(Duration(seconds=60))
    node.destroy_node()
    rclpy.try_shutdown()
    return 0 if acked else 2


if __name__ == "__main__":
    sys.exit(main())
