"""Plays the arm around a policy node: one episode start, one frame, then the same frame re-sent.

usage: resend_probe.py NAMESPACE
Prints one line per ActionChunk received ("chunk STAMP") and "done" after the re-send window,
so the test can check that a re-sent frame (the arm got no command for it) is answered again.
"""

import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from sop_ros.msg import ActionChunk, EpisodeStatus
from sop_ros.nodes._convert import image_message, time_msg
from sop_ros.nodes._qos import CONTROL, EVENTS, SENSOR  # the nodes' own profiles, so the probe matches them


def spin_for(node, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.02)


def main():
    ns = sys.argv[1]
    rclpy.init()
    node = Node("resend_probe")
    images = node.create_publisher(Image, f"{ns}/camera/image_raw", SENSOR)
    joints = node.create_publisher(JointState, f"{ns}/joint_states", SENSOR)
    events = node.create_publisher(EpisodeStatus, f"{ns}/episode_event", EVENTS)
    received = []

    def on_chunk(m):
        received.append(m)
        print(f"chunk {m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec}", flush=True)

    node.create_subscription(ActionChunk, f"{ns}/action_chunk", on_chunk, CONTROL)
    while node.count_subscribers(f"{ns}/camera/image_raw") == 0 or node.count_publishers(f"{ns}/action_chunk") == 0:
        spin_for(node, 0.1)
    stamp = time.time_ns()
    event = EpisodeStatus(
        episode_id="probe-episode",
        task_id="push-v3",
        instruction="push the puck to the green goal",
        outcome=EpisodeStatus.OUTCOME_RUNNING,
    )
    event.header.stamp = time_msg(stamp)
    events.publish(event)
    js = JointState(name=["x_joint", "y_joint", "z_joint", "gripper_joint"], position=[0.0, 0.6, 0.2, 1.0])
    js.header.stamp = time_msg(stamp)
    frame = image_message(np.zeros((64, 64, 3), np.uint8), stamp, "camera")
    print(f"frame {stamp}", flush=True)
    deadline = time.monotonic() + 90.0
    while not received and time.monotonic() < deadline:  # until the policy has loaded and answered
        joints.publish(js)
        images.publish(frame)
        spin_for(node, 0.5)
    spin_for(node, 1.0)  # answers to frames still in flight
    print("resend", flush=True)
    images.publish(frame)  # what the arm does after resend_after_s without a command
    spin_for(node, 3.0)
    print("done", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
