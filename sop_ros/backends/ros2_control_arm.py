"""A ros2_control arm seen from the stack: JointState in, JointTrajectory goals out.

Works with any arm driven by a joint_trajectory_controller (and with the `sim_robot` node,
which takes the same goals). Goals are stamped with the time they are sent (start now) and an
identical goal is never re-sent. The node that owns the publisher/subscription passes the
messages through; this class only converts.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from sop_ros.core.robot.arm_command import ArmCommandCodec, ArmGoal, GoalDeduplicator


def duration_msg(seconds: float) -> Duration:
    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def time_msg(stamp_ns: int) -> Time:
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def stamp_ns(t: Time) -> int:
    return int(t.sec) * 1_000_000_000 + int(t.nanosec)


class Ros2ControlArm:
    """Converts between the arm's ROS messages and core arrays (joint order = codec.joint_names)."""

    def __init__(self, codec: ArmCommandCodec):
        self.codec = codec
        self._dedup = GoalDeduplicator()
        self._index: Optional[list[int]] = None

    def state_from(self, msg: JointState) -> np.ndarray:
        """Joint positions in the codec's order (a driver may publish joints in any order)."""
        names = list(msg.name)
        try:
            index = [names.index(n) for n in self.codec.joint_names]
        except ValueError:
            raise ValueError(f"joint_states: expected joints {list(self.codec.joint_names)}, got {names}") from None
        positions = np.asarray(msg.position, dtype=np.float64)
        return positions[index].astype(np.float32)

    def goal_message(self, state: np.ndarray, action: np.ndarray, now_ns: int) -> Optional[JointTrajectory]:
        """The JointTrajectory for `action` from `state`, or None if it equals the last goal sent."""
        goal = self.codec.encode(state, action)
        if not self._dedup.is_new(goal):
            return None
        return trajectory_from_goal(goal, now_ns)


def trajectory_from_goal(goal: ArmGoal, now_ns: int) -> JointTrajectory:
    msg = JointTrajectory()
    msg.header.stamp = time_msg(now_ns)
    msg.joint_names = list(goal.joint_names)
    msg.points = [
        JointTrajectoryPoint(
            positions=goal.positions.tolist(),
            velocities=goal.velocities.tolist(),
            time_from_start=duration_msg(goal.time_from_start_s),
        )
    ]
    return msg


def joint_state_message(joint_names: tuple[str, ...], positions: np.ndarray, stamp: int) -> JointState:
    msg = JointState()
    msg.header.stamp = time_msg(stamp)
    msg.name = list(joint_names)
    msg.position = np.asarray(positions, dtype=np.float64).tolist()
    return msg
