"""QoS per stream (DESIGN.md conventions), in one place so publishers and subscribers match."""

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

# Camera frames, joint states: newest wins, a lost sample is not retransmitted.
SENSOR = qos_profile_sensor_data
# Commands, proposals, executed steps, intervention changes: every message matters.
CONTROL = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Episode start/end events: reliable, and a node that starts late still sees the latest ones.
EVENTS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# The announced checkpoint: a late joiner gets the current one.
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
