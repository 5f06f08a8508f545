"""Records the images a camera driver publishes, subscribing best effort like the policy does.

usage: camera_probe.py TOPIC DURATION_S
Prints "ready" once subscribed, then after DURATION_S one JSON object: {"frames": [{"stamp",
"width", "height", "encoding", "frame_id", "mean"}], "publisher_reliability": [...]}.
"""

import json
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image


def main():
    topic, duration = sys.argv[1], float(sys.argv[2])
    rclpy.init()
    node = Node("camera_probe")
    frames = []
    node.create_subscription(
        Image,
        topic,
        lambda m: frames.append(
            {
                "stamp": m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec,
                "width": m.width,
                "height": m.height,
                "encoding": m.encoding,
                "frame_id": m.header.frame_id,
                "mean": float(np.frombuffer(bytes(m.data), np.uint8).mean()),
                "channel_means": np.frombuffer(bytes(m.data), np.uint8)
                .reshape(m.height, m.width, 3)
                .mean(axis=(0, 1))
                .tolist(),
            }
        ),
        qos_profile_sensor_data,
    )
    print("ready", flush=True)
    reliability = []
    end = time.monotonic() + duration
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
        reliability = reliability or [i.qos_profile.reliability.name for i in node.get_publishers_info_by_topic(topic)]
    print(json.dumps({"frames": frames, "publisher_reliability": reliability}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
