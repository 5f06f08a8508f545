"""Robot status node: heartbeat on /diagnostics and the GetRobotStatus service.

It gathers what the robot's other nodes report (EpisodeStatus, PolicyUpdate) so an
operator, a monitoring tool or a test can ask one place how the robot is doing.
"""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

import sop_ros
from sop_ros.msg import EpisodeStatus, PolicyUpdate
from sop_ros.nodes._defaults import PERIOD_S, RATE_HZ, Params
from sop_ros.nodes._runtime import run_nodes
from sop_ros.srv import GetRobotStatus

# Same QoS as the bridge's publisher: a late joiner still gets the current checkpoint.
POLICY_UPDATE_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


class RobotStatusNode(Node):
    def __init__(self, **kwargs):
        super().__init__("robot_status", **kwargs)
        p = Params(self, "robot_status")
        self.robot_id = p("robot_id", "robot id from the fleet description")
        self.backend = p("backend", "sim or hardware")
        self.task_set = p("task_set", "task ids this robot may run")
        self.control_rate_hz = p("control_rate_hz", "control rate in Hz", value_range=RATE_HZ)
        software_version = p("software_version", "sop_ros version on the robot (empty = the installed one)")
        self.software_version = software_version or sop_ros.__version__
        period = p("heartbeat_period_s", "seconds between heartbeats on /diagnostics", value_range=PERIOD_S)

        self._started = time.monotonic()
        self._policy_version = 0
        self._episodes_finished = 0
        self._spooled = 0
        self._current_task = self.task_set[0]
        self._last_episode_id = ""

        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.create_subscription(EpisodeStatus, "episode_status", self._on_episode_status, 10)
        self.create_subscription(PolicyUpdate, "policy_update", self._on_policy_update, POLICY_UPDATE_QOS)
        self.create_service(GetRobotStatus, "get_robot_status", self._on_get_status)
        self.create_timer(period, self._publish_heartbeat)

    def _on_episode_status(self, msg: EpisodeStatus) -> None:
        self._current_task = msg.task_id or self._current_task
        self._spooled = msg.spooled_episodes
        # Count an episode once, when the recorder spools it (the bridge's later ACKED status,
        # possibly after the next episode was spooled, must not count it again).
        finished = msg.upload_state == EpisodeStatus.UPLOAD_SPOOLED and msg.outcome != EpisodeStatus.OUTCOME_RUNNING
        if finished and msg.episode_id != self._last_episode_id:
            self._last_episode_id = msg.episode_id
            self._episodes_finished += 1

    def _on_policy_update(self, msg: PolicyUpdate) -> None:
        self._policy_version = max(self._policy_version, msg.version)

    def _on_get_status(
        self, request: GetRobotStatus.Request, response: GetRobotStatus.Response
    ) -> GetRobotStatus.Response:
        response.robot_id = self.robot_id
        response.robot_namespace = self.get_namespace()
        response.backend = self.backend
        response.task_set = self.task_set
        response.current_task = self._current_task
        response.control_rate_hz = float(self.control_rate_hz)
        response.policy_version = self._policy_version
        response.episodes_finished = self._episodes_finished
        response.spooled_episodes = self._spooled
        response.uptime_s = time.monotonic() - self._started
        response.software_version = self.software_version
        return response

    def _publish_heartbeat(self) -> None:
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK,
            name=f"sop_ros/{self.robot_id}",
            message="alive",
            hardware_id=self.robot_id,
            values=[
                KeyValue(key="namespace", value=self.get_namespace()),
                KeyValue(key="backend", value=self.backend),
                KeyValue(key="policy_version", value=str(self._policy_version)),
                KeyValue(key="episodes_finished", value=str(self._episodes_finished)),
                KeyValue(key="uptime_s", value=f"{time.monotonic() - self._started:.1f}"),
            ],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def main(args=None) -> int:
    return run_nodes([RobotStatusNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
