"""Robot status node: heartbeat and health checks on /diagnostics, and the GetRobotStatus service.

It gathers what the robot's other nodes report (EpisodeStatus, PolicyUpdate, executed steps,
action chunks) so an operator, a monitoring tool (rqt_robot_monitor, Foxglove) or a test can ask
one place how the robot is doing: every heartbeat carries the liveness status and the control
loop, policy and operator checks of sop_ros.core.robot.health_checks.
"""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

import sop_ros
from sop_ros.core.episodes.episode import Actor
from sop_ros.core.robot.health_checks import HealthThresholds, RobotHealth
from sop_ros.msg import ActionChunk, EpisodeStatus, ExecutedStep, PolicyUpdate
from sop_ros.nodes import _qos
from sop_ros.nodes._convert import stamp_ns
from sop_ros.nodes._defaults import PERIOD_S, RATE_HZ, Params
from sop_ros.nodes._diagnostics import check_status
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
        ratio, ms = (0.0, 1.0), (0.0, 60_000.0)
        thresholds = HealthThresholds(
            window_s=p("health_window_s", "rates and means over this many recent seconds", value_range=PERIOD_S),
            rate_warn_ratio=p("rate_warn_ratio", "achieved / target control rate below this: WARN", value_range=ratio),
            rate_error_ratio=p(
                "rate_error_ratio", "achieved / target control rate below this: ERROR", value_range=ratio
            ),
            inference_warn_ms=p("inference_warn_ms", "mean policy inference time above this: WARN", value_range=ms),
            latency_warn_ms=p("latency_warn_ms", "mean frame-to-action latency above this: WARN", value_range=ms),
            operator_share_warn=p(
                "operator_share_warn", "share of recent steps a human produced above this: WARN", value_range=ratio
            ),
        )
        self.health = RobotHealth(thresholds, float(self.control_rate_hz))

        self._started = time.monotonic()
        self._policy_version = 0
        self._episodes_finished = 0
        self._spooled = 0
        self._current_task = self.task_set[0]
        self._last_episode_id = ""

        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.create_subscription(EpisodeStatus, "episode_status", self._on_episode_status, 10)
        self.create_subscription(PolicyUpdate, "policy_update", self._on_policy_update, POLICY_UPDATE_QOS)
        self.create_subscription(EpisodeStatus, "episode_event", self._on_episode_event, _qos.EVENTS)
        self.create_subscription(ExecutedStep, "executed_step", self._on_executed_step, _qos.CONTROL)
        self.create_subscription(ActionChunk, "action_chunk", self._on_action_chunk, _qos.CONTROL)
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

    def _on_episode_event(self, msg: EpisodeStatus) -> None:
        self.health.on_episode(time.monotonic(), msg.outcome == EpisodeStatus.OUTCOME_RUNNING)

    def _on_executed_step(self, msg: ExecutedStep) -> None:
        self.health.on_step(time.monotonic(), msg.actor == Actor.HUMAN)

    def _on_action_chunk(self, msg: ActionChunk) -> None:
        latency_ms = (self.get_clock().now().nanoseconds - stamp_ns(msg.header.stamp)) / 1e6
        self.health.on_chunk(time.monotonic(), msg.policy_version, msg.inference_ms, latency_ms)

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
        checks = [check_status(self.robot_id, check) for check in self.health.checks(time.monotonic())]
        msg = DiagnosticArray(status=[status, *checks])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def main(args=None) -> int:
    return run_nodes([RobotStatusNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
