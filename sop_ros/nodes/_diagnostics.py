"""A core health Check as the DiagnosticStatus rqt_robot_monitor and Foxglove read (robot_status, bridge)."""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from sop_ros.core.robot.health_checks import Check


def check_status(robot_id: str, check: Check) -> DiagnosticStatus:
    """Named sop_ros/<robot>/<check>, the robot id as hardware id."""
    return DiagnosticStatus(
        level=bytes([check.level]),  # the message's level is a ROS byte
        name=f"sop_ros/{robot_id}/{check.name}",
        message=check.message,
        hardware_id=robot_id,
        values=[KeyValue(key=k, value=v) for k, v in check.values.items()],
    )
