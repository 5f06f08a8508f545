"""Records every status on /diagnostics as JSON lines until SIGINT/SIGTERM (what rqt_robot_monitor reads).

usage: diagnostics_recorder.py OUT_FILE
Lines: {name, level, message, hardware_id, values, t}; t is the wall-clock ns it was received.
"""

import json
import signal
import sys
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def level(value) -> int:
    return int.from_bytes(value, "little") if isinstance(value, bytes) else int(value)


def main():
    rclpy.init()
    node = Node("diagnostics_recorder")
    out = open(sys.argv[1], "a", buffering=1)

    def record(array: DiagnosticArray) -> None:
        for s in array.status:
            values = {kv.key: kv.value for kv in s.values}
            line = {"name": s.name, "level": level(s.level), "message": s.message, "hardware_id": s.hardware_id}
            out.write(json.dumps({**line, "values": values, "t": time.time_ns()}) + "\n")

    node.create_subscription(DiagnosticArray, "/diagnostics", record, 100)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print("ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        out.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
