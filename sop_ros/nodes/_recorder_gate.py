"""The first episode of a robot waits for its episode recorder.

A reliable, volatile stream (proposed chunks, executed steps) loses the messages sent before
discovery matched the recorder to it; on a loaded robot the recorder's process can come up
seconds after the policy and the mux. The recorder publishes `recorder_ready` (latched) once
every per-step stream has a matched publisher; the node that starts episodes (sim_robot,
episode_manager) holds the first one until then, or until `wait_s` passed (then warns once).
"""

from __future__ import annotations

import time

from rclpy.node import Node
from std_msgs.msg import Bool

from sop_ros.nodes import _qos

READY_TOPIC = "recorder_ready"


class RecorderGate:
    def __init__(self, node: Node, wait_s: float):
        self._node = node
        self._wait_s = wait_s
        self._deadline = time.monotonic() + wait_s
        self._open = False
        # A managed node's subscription goes with its cleanup (a new gate comes with the next configure).
        subscribe = getattr(node, "managed_subscription", node.create_subscription)
        subscribe(Bool, READY_TOPIC, self._on_ready, _qos.LATCHED)

    def _on_ready(self, msg: Bool) -> None:
        self._open = self._open or msg.data

    def is_open(self, now: float) -> bool:
        """True once the recorder reported ready, or once the wait ran out (stays open after)."""
        if self._open:
            return True
        if now < self._deadline:
            return False
        self._node.get_logger().warning(
            f"the episode recorder did not report ready within {self._wait_s:g} s; starting the first episode "
            "anyway (its first steps may be recorded without their proposed chunks)"
        )
        self._open = True
        return True
