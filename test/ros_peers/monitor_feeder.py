"""Plays a robot around a monitor node and reports what the monitor shows after each phase.

usage: monitor_feeder.py NAMESPACE TIMEOUT_S
Phase "policy": episode e1 (push-v3) starts, the policy (v3) executes steps, three earlier episodes
were spooled (success, failure, success; the success one replayed twice). Phase "human": a human
takes over ("no progress"). Phase "idle": e1 ends. After each phase it waits for a MarkerArray
whose text reflects it and an annotated Image published after it, then prints one JSON line:
{"phase", "text", "colour", "image": {"width", "height", "corner_rgb", "bottom_rgb"}}.
"""

import json
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from visualization_msgs.msg import MarkerArray

from sop_ros.msg import EpisodeStatus, ExecutedStep, InterventionState
from sop_ros.nodes._qos import CONTROL, EVENTS, SENSOR
from sop_ros.nodes.monitor import DISPLAY


def main():
    ns, timeout = sys.argv[1], float(sys.argv[2])
    rclpy.init()
    node = Node("monitor_feeder")
    pub = lambda t, topic, qos: node.create_publisher(t, f"{ns}/{topic}", qos)  # noqa: E731
    events, statuses = pub(EpisodeStatus, "episode_event", EVENTS), pub(EpisodeStatus, "episode_status", EVENTS)
    steps, changes = pub(ExecutedStep, "executed_step", CONTROL), pub(InterventionState, "intervention_state", EVENTS)
    images, joints = pub(Image, "camera/image_raw", SENSOR), pub(JointState, "joint_states", SENSOR)
    latest = {}
    node.create_subscription(
        MarkerArray, f"{ns}/monitor/markers", lambda m: latest.__setitem__("markers", (time.monotonic(), m)), DISPLAY
    )
    node.create_subscription(
        Image, f"{ns}/monitor/image", lambda m: latest.__setitem__("image", (time.monotonic(), m)), DISPLAY
    )

    def spin(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.02)

    def camera_frame():
        img = Image(height=64, width=64, encoding="rgb8", step=192, data=np.full((64, 64, 3), 40, np.uint8).tobytes())
        img.header.stamp = node.get_clock().now().to_msg()
        img.header.frame_id = "camera"
        images.publish(img)
        js = JointState(name=["x_joint", "y_joint", "z_joint", "gripper_joint"], position=[0.0, 0.6, 0.2, 1.0])
        js.header.stamp = img.header.stamp
        joints.publish(js)

    def report(phase, expect):
        since = time.monotonic()
        deadline = since + timeout
        while time.monotonic() < deadline:
            camera_frame()
            spin(0.1)
            m, i = latest.get("markers"), latest.get("image")
            if m and i and m[0] > since and i[0] > since and expect in m[1].markers[0].text:
                marker, image = m[1].markers[0], i[1]
                pixels = np.frombuffer(bytes(image.data), np.uint8).reshape(image.height, image.width, 3)
                print(
                    json.dumps(
                        {
                            "phase": phase,
                            "text": marker.text,
                            "colour": [marker.color.r, marker.color.g, marker.color.b],
                            "image": {
                                "width": image.width,
                                "height": image.height,
                                "corner_rgb": pixels[0, 0].tolist(),
                                "bottom_rgb": pixels[image.height - 8, image.width // 2].tolist(),
                            },
                        }
                    ),
                    flush=True,
                )
                return
        print(
            json.dumps(
                {
                    "phase": phase,
                    "timeout": True,
                    "text": latest["markers"][1].markers[0].text if "markers" in latest else None,
                }
            ),
            flush=True,
        )
        sys.exit(1)

    # Publish only once the monitor subscribes to every stream: it may still be importing on a
    # loaded machine, and volatile messages sent before it matched would be lost.
    deadline = time.monotonic() + timeout
    while (
        time.monotonic() < deadline
        and min(p.get_subscription_count() for p in (events, statuses, steps, changes, images, joints)) == 0
    ):
        spin(0.1)
    spin(0.5)
    for episode_id, outcome in (("a", 1), ("b", 2), ("a", 1), ("c", 1), ("d", 3)):
        statuses.publish(
            EpisodeStatus(episode_id=episode_id, outcome=outcome, upload_state=EpisodeStatus.UPLOAD_SPOOLED)
        )
    start = EpisodeStatus(
        episode_id="e1", task_id="push-v3", instruction="push the puck", outcome=EpisodeStatus.OUTCOME_RUNNING
    )
    events.publish(start)
    spin(0.2)
    for i in range(3):
        steps.publish(ExecutedStep(episode_id="e1", episode_step=i, actor=0, policy_version=3, action=[0.0] * 4))
    report("policy", "policy v3  step 3")
    changes.publish(InterventionState(actor=1, episode_id="e1", episode_step=3, reason="no progress"))
    steps.publish(ExecutedStep(episode_id="e1", episode_step=3, actor=1, policy_version=3, action=[0.0] * 4))
    report("human", "step 4  human 1")
    events.publish(EpisodeStatus(episode_id="e1", task_id="push-v3", step=4, outcome=EpisodeStatus.OUTCOME_FAILURE))
    report("idle", "idle")
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
