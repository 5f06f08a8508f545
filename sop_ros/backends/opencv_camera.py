"""OpenCV camera: a device index, a video file or a stream URL -> RGB uint8 frames of a fixed size.

The hardware camera driver node wraps this; frames are resized (INTER_AREA: the right filter for
shrinking) to the configured policy resolution and converted from OpenCV's BGR to RGB.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Union

import cv2
import numpy as np

log = logging.getLogger(__name__)


class CameraError(RuntimeError):
    """The camera source cannot be opened or stopped delivering frames."""


@dataclasses.dataclass(frozen=True)
class OpenCVCameraConfig:
    source: Union[int, str]  # device index (0), file path, or URL (rtsp://, http://)
    width: int = 64
    height: int = 64
    loop: bool = False  # for files: start again at the end instead of raising

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"OpenCVCameraConfig width/height must be positive, got {self.width}x{self.height}")
        if isinstance(self.source, str) and not self.source:
            raise ValueError("OpenCVCameraConfig.source: empty string")


def parse_source(text: str) -> Union[int, str]:
    """'0' -> device 0; anything else is a path or URL."""
    return int(text) if text.strip().isdigit() else text


class OpenCVCamera:
    """Reads frames on demand (`read()`); not thread-safe."""

    def __init__(self, config: OpenCVCameraConfig, clock: Callable[[], int] = time.time_ns):
        self.config = config
        self._clock = clock
        self._capture = cv2.VideoCapture(config.source)
        if not self._capture.isOpened():
            self._capture.release()
            raise CameraError(
                f"cannot open camera source {config.source!r} (no such device, file or stream, or no codec for it)"
            )

    @property
    def native_size(self) -> tuple[int, int]:
        """(width, height) the source delivers before resizing."""
        return int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def read(self) -> tuple[np.ndarray, int]:
        """Next frame as RGB uint8 [height, width, 3] and its capture time (ns)."""
        ok, frame = self._capture.read()
        if not ok and self.config.loop and isinstance(self.config.source, str):
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._capture.read()
        stamp = int(self._clock())
        if not ok or frame is None:
            raise CameraError(f"camera source {self.config.source!r} delivered no frame (end of file or device lost)")
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if frame.shape[:2] != (self.config.height, self.config.width):
            frame = cv2.resize(frame, (self.config.width, self.config.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)), stamp

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> OpenCVCamera:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_camera(source: Union[int, str], width: int = 64, height: int = 64, loop: bool = False) -> OpenCVCamera:
    return OpenCVCamera(OpenCVCameraConfig(source, width, height, loop))
