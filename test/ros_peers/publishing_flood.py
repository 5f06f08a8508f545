"""A node (run by sop_ros.nodes._runtime.run_nodes, like every sop node) whose timers publish as fast as
they can, so a SIGINT almost surely lands while a callback is inside publish().

usage: publishing_flood.py   (prints "spinning" once the node is up)
"""

from rclpy.node import Node
from std_msgs.msg import String

from sop_ros.nodes._runtime import run_nodes


class PublishingFlood(Node):
    def __init__(self):
        super().__init__("publishing_flood")
        self.pubs = [self.create_publisher(String, f"flood{i}", 10) for i in range(4)]
        for _ in range(4):
            self.create_timer(0.0005, self.tick)
        self.create_timer(0.2, lambda: print("spinning", flush=True))

    def tick(self):
        for publisher in self.pubs:
            publisher.publish(String(data="x" * 1000))


if __name__ == "__main__":
    raise SystemExit(run_nodes([PublishingFlood]))
