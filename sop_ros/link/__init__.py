"""gRPC learner service and robot client (never imports rclpy)."""
