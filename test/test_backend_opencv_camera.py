"""OpenCV camera backend against a real video file written with cv2.VideoWriter."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sop_ros.backends.opencv_camera import CameraError, OpenCVCamera, OpenCVCameraConfig, parse_source

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def video(tmp_path):
    """3 frames of 160x120: left half pure red, right half pure blue (BGR on disk), brightness grows per frame."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened()
    for k in range(3):
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[:, :80] = (0, 0, 120 + 60 * k)  # BGR red
        frame[:, 80:] = (120 + 60 * k, 0, 0)  # BGR blue
        writer.write(frame)
    writer.release()
    return path


def test_frames_are_rgb_resized_and_in_order(video):
    stamps = iter(range(100, 200))
    with OpenCVCamera(OpenCVCameraConfig(str(video), width=32, height=24), clock=lambda: next(stamps)) as cam:
        assert cam.native_size == (160, 120)
        frames = []
        for _ in range(3):
            img, stamp = cam.read()
            frames.append(img)
            assert img.dtype == np.uint8 and img.shape == (24, 32, 3)
        assert stamp == 102
        first = frames[0].astype(int)
        # RGB order: the left half is red (channel 0), the right half blue (channel 2); JPEG is lossy.
        assert first[:, :12, 0].mean() > 100 and first[:, :12, 2].mean() < 20
        assert first[:, 20:, 2].mean() > 100 and first[:, 20:, 0].mean() < 20
        assert frames[0][:, :12, 0].mean() < frames[1][:, :12, 0].mean() < frames[2][:, :12, 0].mean()
        with pytest.raises(CameraError, match="no frame"):
            cam.read()


def test_loop_restarts_a_file(video):
    with OpenCVCamera(OpenCVCameraConfig(str(video), width=16, height=16, loop=True)) as cam:
        reds = [cam.read()[0][:, :4, 0].mean() for _ in range(4)]
    assert reds[3] == pytest.approx(reds[0], abs=3)


def test_clear_errors(tmp_path):
    with pytest.raises(CameraError, match="cannot open camera source"):
        OpenCVCamera(OpenCVCameraConfig(str(tmp_path / "missing.avi")))
    with pytest.raises(ValueError, match="width/height"):
        OpenCVCameraConfig("x", width=0)
    assert parse_source("2") == 2 and parse_source("rtsp://cam/1") == "rtsp://cam/1"
