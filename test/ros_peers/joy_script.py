"""Plays a joystick: publishes sensor_msgs/Joy on NAMESPACE/joy at 20 Hz following a fixed script.

usage: joy_script.py NAMESPACE
Phases (seconds): idle 2.0 (deadman up), hold 1.5 (deadman down), release 1.5, hold 1.0, then
silence (the process stays alive but stops publishing for 1.5 s). Prints one JSON line per phase
start: {"phase", "t_ns"}. Axes: [0.5, 0.8, 0, 0, -0.6] -> with the default mapping the action
is [0.8, 0.5, -0.6, -1.0].
"""

import json
import sys
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Joy

PHASES = [
    ("idle", 2.0, False),
    ("hold", 1.5, True),
    ("release", 1.5, False),
    ("hold2", 1.0, True),
    ("silent", 1.5, None),
]


def main():
    rclpy.init()
    node = Node("joy_script")
    pub = node.create_publisher(Joy, f"{sys.argv[1]}/joy", qos_profile_sensor_data)
    time.sleep(1.0)  # discovery
    for name, duration, deadman in PHASES:
        print(json.dumps({"phase": name, "t_ns": time.time_ns()}), flush=True)
        end = time.monotonic() + duration
        while time.monotonic() < end:
            if deadman is not None:
                buttons = [0] * 11
                buttons[4] = 1 if deadman else 0
                msg = Joy(axes=[0.5, 0.8, 0.0, 0.0, -0.6, 0.0], buttons=buttons)
                msg.header.stamp = node.get_clock().now().to_msg()
                pub.publish(msg)
            time.sleep(0.05)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
