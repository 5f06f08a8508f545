"""Peer process for the interface test: echoes every custom message and serves every custom service.

Messages received on `<name>` are republished unchanged on `echo/<name>`; services answer
with values derived from the request, so the caller can check a real round trip.
"""

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from sop_ros.msg import ActionChunk, EpisodeStatus, InterventionState, PolicyUpdate
from sop_ros.srv import GetRobotStatus, LabelEpisode, SetTask

QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
MESSAGES = {
    "action_chunk": ActionChunk,
    "intervention_state": InterventionState,
    "policy_update": PolicyUpdate,
    "episode_status": EpisodeStatus,
}


class Peer(Node):
    def __init__(self):
        super().__init__("interface_peer")
        self._pubs = {}
        for topic, cls in MESSAGES.items():
            self._pubs[topic] = self.create_publisher(cls, f"echo/{topic}", QOS)
            self.create_subscription(cls, topic, lambda msg, t=topic: self._pubs[t].publish(msg), QOS)
        self.create_service(SetTask, "set_task", self._set_task)
        self.create_service(LabelEpisode, "label_episode", self._label)
        self.create_service(GetRobotStatus, "get_robot_status", self._status)

    def _set_task(self, req, resp):
        resp.accepted = req.task_id == "push-v3"
        resp.message = f"next task {req.task_id}: {req.instruction}"
        return resp

    def _label(self, req, resp):
        resp.accepted = True
        resp.episode_id = req.episode_id
        resp.message = "success" if req.success else "failure"
        return resp

    def _status(self, req, resp):
        resp.robot_id = "robot7"
        resp.robot_namespace = self.get_namespace()
        resp.task_set = ["reach-v3", "push-v3"]
        resp.policy_version = 42
        resp.control_rate_hz = 10.0
        return resp


def main():
    rclpy.init(args=sys.argv)
    node = Peer()
    print("PEER READY", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
