"""ROS message <-> numpy conversions shared by the robot nodes."""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

from sop_ros.backends.ros2_control_arm import stamp_ns, time_msg

__all__ = ["image_message", "image_array", "stamp_ns", "time_msg"]


def image_message(image: np.ndarray, stamp: int, frame_id: str) -> Image:
    """uint8 [H, W, 3] RGB (upright) -> sensor_msgs/Image rgb8."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected [H, W, 3] uint8, got {image.shape}")
    msg = Image()
    msg.header.stamp = time_msg(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = "rgb8"
    msg.step = msg.width * 3
    msg.data = image.tobytes()
    return msg


def image_array(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8 or bgr8) -> uint8 [H, W, 3] RGB."""
    if msg.encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"image encoding {msg.encoding!r} is not supported (rgb8, bgr8)")
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)
    image = rows[:, : msg.width * 3].reshape(msg.height, msg.width, 3)
    return np.array(image[..., ::-1] if msg.encoding == "bgr8" else image)  # a writable copy
