"""What an RViz display would see: waits for topics, checks their types on the graph, keeps the newest message of each.

usage: display_probe.py TIMEOUT_S TOPIC=TYPE [TOPIC=TYPE ...]
TYPE is e.g. visualization_msgs/msg/MarkerArray, sensor_msgs/msg/Image, std_msgs/msg/String.
Subscribes like RViz (reliable; String topics transient local like RobotModel's description
topic). Prints one JSON object: {"graph": {topic: [types]}, "messages": {topic: summary}}; the
summary has MarkerArray frame ids, texts and colours, Image size/encoding/frame, String data.
"""

import importlib
import json
import sys
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy


def summary(msg):
    kind = type(msg).__name__
    if kind == "MarkerArray":
        return {
            "frame_ids": [m.header.frame_id for m in msg.markers],
            "texts": [m.text for m in msg.markers],
            "colours": [[m.color.r, m.color.g, m.color.b] for m in msg.markers],
            "ns": [m.ns for m in msg.markers],
            "positions": [[m.pose.position.x, m.pose.position.y, m.pose.position.z] for m in msg.markers],
        }
    if kind == "Image":
        return {
            "width": msg.width,
            "height": msg.height,
            "encoding": msg.encoding,
            "frame_id": msg.header.frame_id,
            "bytes": len(msg.data),
        }
    if kind == "String":
        return {"data": msg.data}
    if kind == "TFMessage":
        return {"frames": [[t.header.frame_id, t.child_frame_id] for t in msg.transforms]}
    return {"type": kind}


def main():
    timeout = float(sys.argv[1])
    wanted = dict(arg.split("=", 1) for arg in sys.argv[2:])
    rclpy.init()
    node = Node("display_probe")
    messages = {}
    for topic, type_name in wanted.items():
        package, _, name = type_name.split("/")
        msg_type = getattr(importlib.import_module(f"{package}.msg"), name)
        latched = type_name in ("std_msgs/msg/String",) or topic == "/tf_static"
        qos = QoSProfile(
            depth=10,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )
        node.create_subscription(msg_type, topic, lambda m, t=topic: messages.__setitem__(t, summary(m)), qos)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(messages) < len(wanted):
        rclpy.spin_once(node, timeout_sec=0.1)
    settle = time.monotonic() + 0.6  # a display keeps the newest: take what the next updates bring
    while time.monotonic() < settle:
        rclpy.spin_once(node, timeout_sec=0.05)
    graph = {t: types for t, types in node.get_topic_names_and_types() if t in wanted}
    print(json.dumps({"graph": graph, "messages": messages}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
