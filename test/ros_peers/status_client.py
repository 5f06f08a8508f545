"""Calls GetRobotStatus in each namespace given on the command line; prints one JSON line."""

import json
import sys

import rclpy
from rclpy.node import Node

from sop_ros.srv import GetRobotStatus


def main():
    rclpy.init()
    node = Node("status_client")
    out = {}
    for ns in sys.argv[1:]:
        client = node.create_client(GetRobotStatus, f"{ns}/get_robot_status")
        if not client.wait_for_service(timeout_sec=60.0):
            out[ns] = None
            continue
        future = client.call_async(GetRobotStatus.Request())
        rclpy.spin_until_future_complete(node, future, timeout_sec=10.0)
        r = future.result()
        out[ns] = (
            {
                "robot_id": r.robot_id,
                "namespace": r.robot_namespace,
                "backend": r.backend,
                "task_set": list(r.task_set),
                "control_rate_hz": r.control_rate_hz,
            }
            if r
            else None
        )
    print(json.dumps(out), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
