"""Camera driver (hardware): an OpenCV source (device index, video file or stream URL) -> camera/image_raw.

A managed node (sop_ros/nodes/_lifecycle.py): configure opens the source, activate starts the
capture thread, deactivate stops and joins it, cleanup closes the source. Publishes
sensor_msgs/Image (rgb8, resized to the policy resolution, stamped with the capture time) and
camera/camera_info at `rate_hz` with sensor-data QoS (best effort: the newest frame
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

from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from sop_ros.backends.opencv_camera import CameraError, OpenCVCamera, OpenCVCameraConfig, parse_source
from sop_ros.nodes import _qos
from sop_ros.nodes._convert import image_message, time_msg
from sop_ros.nodes._defaults import IMAGE_SIDE_PX, RATE_HZ, Params
from sop_ros.nodes._lifecycle import ManagedNode
from sop_ros.nodes._runtime import run_nodes

_RETRY_S = 1.0


class CameraDriverNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("camera_driver", **kwargs)
        p = Params(self, "camera_driver")
        self.source = str(p("source", 'device index ("0"), video file path or stream URL'))
        width = p("width", "published image width in pixels", value_range=IMAGE_SIDE_PX)
        height = p("height", "published image height in pixels", value_range=IMAGE_SIDE_PX)
        self.config = OpenCVCameraConfig(
            parse_source(self.source),
            width=width,
            height=height,
            loop=p("loop", "video files: start again at the end"),
        )
        self.rate_hz = p("rate_hz", "frames published per second", value_range=RATE_HZ)
        self.frame_id = p("frame_id", "frame_id of the published images")
        self.period_s = 1.0 / self.rate_hz
        self._is_file = isinstance(self.config.source, str) and Path(self.config.source).is_file()
        self.camera: Optional[OpenCVCamera] = None
        self.frames_published = 0

    def configure(self) -> None:
        try:
            self.camera = OpenCVCamera(self.config)
        except CameraError as exc:
            raise OSError(str(exc)) from None  # a refusal: one line, no traceback
        self.image_pub = self.managed_publisher(Image, "camera/image_raw", _qos.SENSOR)
        self.info_pub = self.managed_publisher(CameraInfo, "camera/camera_info", _qos.SENSOR)
        self.capture = self.managed_worker("camera_capture", self._capture_loop)
        self.get_logger().info(
            f"camera {self.source!r} ({self.camera.native_size[0]}x{self.camera.native_size[1]}) -> "
            f"{self.config.width}x{self.config.height} at {self.rate_hz:g} Hz"
        )

    def cleanup(self) -> None:
        if self.camera is not None:
            self.camera.close()
            self.camera = None

    def _capture_loop(self, stop: threading.Event) -> None:
        next_at = time.monotonic()
        while not stop.is_set():
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
                stop.wait(_RETRY_S)
                next_at = time.monotonic()
                continue
            self._publish(image, stamp)
            # Pace to the rate; a device that delivers slower than the rate sets its own pace.
            next_at = max(next_at + self.period_s, time.monotonic() - self.period_s)
            stop.wait(max(0.0, next_at - time.monotonic()))

    def _publish(self, image, stamp: int) -> None:
        self.image_pub.publish(image_message(image, stamp, self.frame_id))
        h, w = image.shape[:2]
        # Intrinsics are unknown for an uncalibrated source: CameraInfo carries the size (k all zero,
        # as camera drivers publish before calibration).
        self.info_pub.publish(
            CameraInfo(header=Header(stamp=time_msg(stamp), frame_id=self.frame_id), width=w, height=h)
        )
        self.frames_published += 1


def main(args=None) -> int:
    return run_nodes([CameraDriverNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
