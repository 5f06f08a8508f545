"""Thin rclpy nodes: parameters, QoS, topic <-> core objects."""
