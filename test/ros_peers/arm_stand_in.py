"""A ros2_control arm that runs until SIGINT/SIGTERM: joint_state_broadcaster + joint_trajectory_controller.

usage: arm_stand_in.py NAMESPACE
Publishes NAMESPACE/joint_states at 50 Hz (sensor QoS, like a real driver) and moves at once to the
last point of each goal on NAMESPACE/arm_controller/joint_trajectory.
"""

import signal
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from sop_ros.core.robot.backend import SIM_ARM_JOINT_NAMES
from sop_ros.nodes._qos import CONTROL, SENSOR


def main():
    ns = sys.argv[1]
    rclpy.init()
    node = Node("arm_stand_in")
    position = [0.0, 0.6, 0.2, 1.0]

    def on_goal(msg: JointTrajectory) -> None:
        position[:] = [float(v) for v in msg.points[-1].positions]

    node.create_subscription(JointTrajectory, f"{ns}/arm_controller/joint_trajectory", on_goal, CONTROL)
    joint_pub = node.create_publisher(JointState, f"{ns}/joint_states", SENSOR)

    def publish_state() -> None:
        msg = JointState(name=list(SIM_ARM_JOINT_NAMES), position=list(position))
        msg.header.stamp = node.get_clock().now().to_msg()
        joint_pub.publish(msg)

    node.create_timer(0.02, publish_state)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print("ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
