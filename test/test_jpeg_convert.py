"""JPEG CompressedImage helpers: round trip within JPEG loss, hostile data rejected with ValueError."""

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage

from sop_ros.nodes._jpeg import JPEG_FORMAT, compressed_image_array, compressed_image_message


def _textured(h=48, w=64):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 4) % 256, (y * 5) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)


def test_round_trip_keeps_size_and_colour_within_jpeg_loss():
    image = _textured()
    msg = compressed_image_message(image, 1_000_000_123, "cam", quality=95)
    assert msg.format == JPEG_FORMAT and msg.header.frame_id == "cam"
    decoded = compressed_image_array(msg, expected_hw=(48, 64))
    assert decoded.shape == image.shape
    assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 8  # RGB order kept (not BGR)


def test_garbage_and_wrong_size_are_rejected():
    with pytest.raises(ValueError, match="does not decode"):
        compressed_image_array(CompressedImage(format="jpeg", data=b"\xff\xd8 not a jpeg"))
    msg = compressed_image_message(_textured(), 0, "cam", quality=80)
    with pytest.raises(ValueError, match="expected 32x32"):
        compressed_image_array(msg, expected_hw=(32, 32))
    with pytest.raises(ValueError, match="not supported"):
        compressed_image_array(CompressedImage(format="png", data=msg.data))
