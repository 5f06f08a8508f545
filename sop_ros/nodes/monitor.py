"""Monitor node: what RViz shows about one robot (rviz/sop_fleet.rviz).

Publishes, at `display_rate_hz`:
- `monitor/markers` (visualization_msgs/MarkerArray): a text panel (task, who is acting, policy
  version, success rate of recent episodes) and a status light, coloured by who acts;
- `monitor/image` (sensor_msgs/Image): the latest camera frame scaled up with the same text drawn
  on it (OpenCV) and a border in that colour.
It also plays robot_state_publisher for the arm model: `robot_description` (std_msgs/String,
transient local, the URDF) and, where tf2_msgs is installed, TF for the joints from `joint_states`
(frames prefixed `<robot_id>/`, `<robot_id>/base_link` placed at `display_offset` in `frame_id`).
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Optional

from geometry_msgs.msg import Point, TransformStamped, Vector3
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import ColorRGBA, String
from visualization_msgs.msg import Marker, MarkerArray

from sop_ros.core.episodes.episode import Actor
from sop_ros.core.robot.arm_model import ArmModel, Transform
from sop_ros.core.robot.monitor_state import MonitorConfig, RobotMonitorState, annotate_image
from sop_ros.msg import EpisodeStatus, ExecutedStep, InterventionState, PolicyUpdate
from sop_ros.nodes import _qos
from sop_ros.nodes._convert import image_array, image_message, time_msg
from sop_ros.nodes._defaults import AT_LEAST_ONE, RATE_HZ, Params, assign
from sop_ros.nodes._runtime import run_nodes
from sop_ros.resources import default_urdf_path

# What RViz subscribes with by default (reliable, volatile); keep only the newest.
DISPLAY = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
# robot_description and /tf_static: a display that starts later still gets them.
LATCHED_DISPLAY = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LABELLED = {EpisodeStatus.OUTCOME_SUCCESS: True, EpisodeStatus.OUTCOME_FAILURE: False}


def tf_message_type():
    """tf2_msgs/TFMessage, or None where tf2_msgs is not installed (pip-only installs)."""
    try:
        return importlib.import_module("tf2_msgs.msg").TFMessage
    except ImportError:
        return None


def transform_message(t: Transform, stamp_ns: int) -> TransformStamped:
    msg = TransformStamped()
    msg.header.stamp = time_msg(stamp_ns)
    msg.header.frame_id, msg.child_frame_id = t.parent, t.child
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = t.translation
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = t.rotation
    return msg


class MonitorNode(Node):
    def __init__(self, **kwargs):
        super().__init__("monitor", **kwargs)
        window, rate, urdf_path = self._declare_parameters()
        self.state = RobotMonitorState(MonitorConfig(self.robot_id, window))
        self.arm = ArmModel.from_file(urdf_path)
        self.prefix = f"{self.robot_id}/"
        self._image: Optional[Image] = None
        self._image_shown = True
        self._last_tf_ns = 0
        self._tf_period_ns = int(1e9 / max(rate, 10.0))

        self.marker_pub = self.create_publisher(MarkerArray, "monitor/markers", DISPLAY)
        self.image_pub = self.create_publisher(Image, "monitor/image", DISPLAY)
        description_pub = self.create_publisher(String, "robot_description", LATCHED_DISPLAY)
        description_pub.publish(String(data=Path(urdf_path).read_text()))
        self._create_tf_publishers()
        self._subscribe_to_robot()
        self.create_timer(1.0 / rate, self._publish_display)

    def _declare_parameters(self) -> tuple[int, float, str]:
        """Declare the parameters; keep the node's own, return (success window, display rate, URDF path)."""
        p = Params(self, "monitor")
        self.robot_id = p("robot_id", "robot id from the fleet description")
        window = p("success_window", "success rate over this many recent labelled episodes", value_range=AT_LEAST_ONE)
        self.frame_id = p("frame_id", "fixed frame of the markers (RViz's Fixed Frame)")
        self.scale = p(
            "annotate_scale",
            "the annotated image is the camera image scaled up this much",
            value_range=(1, 16),
            on_change=assign(self, "scale"),
        )  # read at each annotated image
        rate = p("display_rate_hz", "markers and annotated images per second", value_range=RATE_HZ)
        self.offset = tuple(
            float(v) for v in p("display_offset", "x y z of this robot's base_link in frame_id (robots side by side)")
        )
        urdf_path = p("urdf_path", "the arm's URDF (empty = the package's urdf/sop_sim_arm.urdf)") or str(
            default_urdf_path()
        )
        if len(self.offset) != 3:
            raise ValueError(f"parameter 'display_offset': expected 3 numbers, got {list(self.offset)}")
        return window, rate, urdf_path

    def _create_tf_publishers(self) -> None:
        """/tf for the joints and /tf_static for the fixed frames, where tf2_msgs is installed."""
        TFMessage = tf_message_type()
        self.tf_msg_type = TFMessage
        if TFMessage is None:
            self.tf_pub = None
            self.get_logger().warning(
                "tf2_msgs is not installed: no TF for the arm model (RViz shows markers and images; "
                "install ROS 2's tf2_msgs for the RobotModel)"
            )
            return
        self.tf_pub = self.create_publisher(TFMessage, "/tf", TF_QOS)
        static_pub = self.create_publisher(TFMessage, "/tf_static", LATCHED_DISPLAY)
        base = Transform(self.frame_id, self.prefix + self.arm.root, self.offset, (0.0, 0.0, 0.0, 1.0))
        now = time.time_ns()
        static_pub.publish(
            TFMessage(
                transforms=[
                    transform_message(t, now)
                    for t in [base, *self.arm.joint_transforms({}, movable=False, prefix=self.prefix)]
                ]
            )
        )
        self._static_pub = static_pub  # keep it alive: transient local serves late joiners

    def _subscribe_to_robot(self) -> None:
        self.create_subscription(EpisodeStatus, "episode_event", self._on_episode_event, _qos.EVENTS)
        self.create_subscription(EpisodeStatus, "episode_status", self._on_episode_status, _qos.EVENTS)
        self.create_subscription(InterventionState, "intervention_state", self._on_intervention, _qos.EVENTS)
        self.create_subscription(ExecutedStep, "executed_step", self._on_executed, _qos.CONTROL)
        self.create_subscription(
            PolicyUpdate, "policy_update", lambda m: self.state.on_policy_version(m.version), _qos.LATCHED
        )
        self.create_subscription(Image, "camera/image_raw", self._on_image, _qos.SENSOR)
        self.create_subscription(JointState, "joint_states", self._on_joint_state, _qos.SENSOR)

    # --- robot events -----------------------------------------------------------------------
    def _on_episode_event(self, msg: EpisodeStatus) -> None:
        if msg.outcome == EpisodeStatus.OUTCOME_RUNNING:
            self.state.on_episode_start(msg.episode_id, msg.task_id)
        else:
            self.state.on_episode_end(msg.episode_id)

    def _on_episode_status(self, msg: EpisodeStatus) -> None:
        # A label counts once the recorder spooled the episode with it (sim: environment, hardware: operator).
        if msg.upload_state >= EpisodeStatus.UPLOAD_SPOOLED and msg.outcome in LABELLED:
            self.state.on_labelled(msg.episode_id, LABELLED[msg.outcome])

    def _on_intervention(self, msg: InterventionState) -> None:
        self.state.on_actor(msg.episode_id, Actor(msg.actor), msg.reason)

    def _on_executed(self, msg: ExecutedStep) -> None:
        self.state.on_step(msg.episode_id, msg.episode_step, Actor(msg.actor), msg.policy_version)

    def _on_image(self, msg: Image) -> None:
        self._image, self._image_shown = msg, False

    def _on_joint_state(self, msg: JointState) -> None:
        if self.tf_pub is None:
            return
        now = time.time_ns()
        if now - self._last_tf_ns < self._tf_period_ns:
            return
        positions = dict(zip(msg.name, msg.position))
        try:
            transforms = self.arm.joint_transforms(positions, fixed=False, prefix=self.prefix)
        except KeyError as exc:
            self.get_logger().warning(f"joint_states: {exc}", throttle_duration_sec=10.0)
            return
        self._last_tf_ns = now
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.tf_pub.publish(self.tf_msg_type(transforms=[transform_message(t, stamp) for t in transforms]))

    # --- display ----------------------------------------------------------------------------
    def _publish_display(self) -> None:
        lines, colour = self.state.lines(), self.state.colour
        self.marker_pub.publish(self.markers(lines, colour))
        if self._image is not None and not self._image_shown:
            self._image_shown = True
            try:
                annotated = annotate_image(image_array(self._image), lines, colour, self.scale)
            except ValueError as exc:
                self.get_logger().warning(f"cannot annotate the camera image: {exc}", throttle_duration_sec=10.0)
                return
            self.image_pub.publish(image_message(annotated, time.time_ns(), self._image.header.frame_id))

    def markers(self, lines: list[str], colour: tuple[float, float, float, float]) -> MarkerArray:
        stamp = self.get_clock().now().to_msg()
        x, y, z = self.offset
        rgba = ColorRGBA(r=colour[0], g=colour[1], b=colour[2], a=colour[3])
        text = Marker(
            ns=self.robot_id,
            id=0,
            type=Marker.TEXT_VIEW_FACING,
            action=Marker.ADD,
            text="\n".join(lines),
            scale=Vector3(z=0.06),
            color=rgba,
        )
        text.pose.position = Point(x=x, y=y + 0.2, z=z + 1.2)
        light = Marker(
            ns=self.robot_id,
            id=1,
            type=Marker.SPHERE,
            action=Marker.ADD,
            scale=Vector3(x=0.08, y=0.08, z=0.08),
            color=rgba,
        )
        light.pose.position = Point(x=x, y=y + 0.2, z=z + 1.0)
        for m in (text, light):
            m.header.frame_id, m.header.stamp = self.frame_id, stamp
            m.pose.orientation.w = 1.0
        return MarkerArray(markers=[text, light])


def main(args=None) -> int:
    return run_nodes([MonitorNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
