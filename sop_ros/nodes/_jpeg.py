"""JPEG sensor_msgs/CompressedImage <-> numpy, named as image_transport's compressed plugin names it.

Decoding treats the message as hostile: data that does not decode, or decodes to another size
than the subscriber expects, raises ValueError (the caller logs it and drops the frame).
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage

from sop_ros.nodes._convert import time_msg

# image_transport's compressed plugin: "<source encoding>; jpeg compressed <encoded encoding>".
JPEG_FORMAT = "rgb8; jpeg compressed bgr8"
COMPRESSED_SUFFIX = "/compressed"


def compressed_image_message(image: np.ndarray, stamp: int, frame_id: str, quality: int) -> CompressedImage:
    """uint8 [H, W, 3] RGB -> sensor_msgs/CompressedImage (JPEG at `quality`, 1..100)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected [H, W, 3] uint8, got {image.dtype} {image.shape}")
    ok, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    msg = CompressedImage(format=JPEG_FORMAT, data=encoded.tobytes())
    msg.header.stamp = time_msg(stamp)
    msg.header.frame_id = frame_id
    return msg


def compressed_image_array(msg: CompressedImage, expected_hw: Optional[tuple[int, int]] = None) -> np.ndarray:
    """JPEG CompressedImage -> uint8 [H, W, 3] RGB; ValueError if it does not decode or has another size."""
    if "jpeg" not in msg.format.lower():
        raise ValueError(f"compressed image format {msg.format!r} is not supported (jpeg)")
    decoded = cv2.imdecode(np.frombuffer(bytes(msg.data), dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ValueError(f"compressed image ({len(msg.data)} bytes) does not decode as JPEG")
    if expected_hw is not None and decoded.shape[:2] != tuple(expected_hw):
        raise ValueError(
            f"compressed image decodes to {decoded.shape[1]}x{decoded.shape[0]}, expected "
            f"{expected_hw[1]}x{expected_hw[0]}"
        )
    return np.ascontiguousarray(decoded[..., ::-1])
