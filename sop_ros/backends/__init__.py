"""Robot backends: MetaWorld simulation, OpenCV camera, ros2_control arm."""
