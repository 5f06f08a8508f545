"""Camera driver (hardware): an OpenCV source (device index, video file or stream URL) -> camera/image_raw.

Publishes sensor_msgs/Image (rgb8, resized to the policy resolution, stamped with the capture
time) and camera/camera_info at `rate_hz` with sensor-data QoS (best effort: the newest frame
wins). Frames are read on a thread of their own, so a slow device never blocks the executor
that other nodes in the same process share. A source that cannot be opened is a startup error;
a device or stream that stops delivering frames is reported and reopened once a second; a video
file without `loop` stops publishing at its end.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from sop_ros.backends.opencv_camera import CameraError, OpenCVCamera, OpenCVCameraConfig, parse_source
from sop_ros.nodes import _qos
from sop_ros.nodes._convert import image_message, time_msg
from sop_ros.nodes._defaults import IMAGE_SIDE_PX, RATE_HZ, Params
from sop_ros.nodes._runtime import run_nodes

_RETRY_S = 1.0


class CameraDriverNode(Node):
    def __init__(self, **kwargs):
        super().__init__("camera_driver", **kwargs)
        p = Params(self, "camera_driver")
        source = str(p("source", 'device index ("0"), video file path or stream URL'))
        width = p("width", "published image width in pixels", value_range=IMAGE_SIDE_PX)
        height = p("height", "published image height in pixels", value_range=IMAGE_SIDE_PX)
        self.config = OpenCVCameraConfig(
            parse_source(source), width=width, height=height, loop=p("loop", "video files: start again at the end")
        )
        rate = p("rate_hz", "frames published per second", value_range=RATE_HZ)
        self.frame_id = p("frame_id", "frame_id of the published images")
        self.period_s = 1.0 / rate
        self._is_file = isinstance(self.config.source, str) and Path(self.config.source).is_file()
        try:
            self.camera: Optional[OpenCVCamera] = OpenCVCamera(self.config)
        except CameraError as exc:
            raise OSError(str(exc)) from None  # a start-up error: one line from the runtime, no traceback
        self.image_pub = self.create_publisher(Image, "camera/image_raw", _qos.SENSOR)
        self.info_pub = self.create_publisher(CameraInfo, "camera/camera_info", _qos.SENSOR)
        self.frames_published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._capture_loop, name="camera_capture", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"camera {source!r} ({self.camera.native_size[0]}x{self.camera.native_size[1]}) -> "
            f"{self.config.width}x{self.config.height} at {rate:g} Hz"
        )

    def _capture_loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                if self.camera is None:
                    self.camera = OpenCVCamera(self.config)
                    self.get_logger().info(f"camera {self.config.source!r} reopened")
                image, stamp = self.camera.read()
            except CameraError as exc:
                if self._is_file and self.camera is not None:
                    self.get_logger().warning(
                        f"end of video file {self.config.source!r} after {self.frames_published} frames "
                        "(set loop:=true to replay it); no more frames"
                    )
                    return
                self.get_logger().error(f"{exc}; retrying in {_RETRY_S:g} s", throttle_duration_sec=10.0)
                if self.camera is not None:
                    self.camera.close()
                    self.camera = None
                self._stop.wait(_RETRY_S)
                next_at = time.monotonic()
                continue
            self._publish(image, stamp)
            # Pace to the rate; a device that delivers slower than the rate sets its own pace.
            next_at = max(next_at + self.period_s, time.monotonic() - self.period_s)
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _publish(self, image, stamp: int) -> None:
        self.image_pub.publish(image_message(image, stamp, self.frame_id))
        h, w = image.shape[:2]
        # Intrinsics are unknown for an uncalibrated source: CameraInfo carries the size (k all zero,
        # as camera drivers publish before calibration).
        self.info_pub.publish(
            CameraInfo(header=Header(stamp=time_msg(stamp), frame_id=self.frame_id), width=w, height=h)
        )
        self.frames_published += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        if self.camera is not None:
            self.camera.close()


def main(args=None) -> int:
    return run_nodes([CameraDriverNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
