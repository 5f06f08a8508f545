"""Camera frames to and from mp4 with PyAV, and the PSNR that says what the codec lost.

Episodes go back to back in one file; frame n of a file has pts n in a 1/fps time base, so a frame's
timestamp is n / fps and an episode's span in the file is [from_timestamp, to_timestamp).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from sop_ros.datasets.lerobot_format import DatasetFormatError


@dataclasses.dataclass(frozen=True)
class VideoSettings:
    codec: str = "h264"  # one of LeRobot's accepted codecs (h264, hevc, libsvtav1)
    pix_fmt: str = "yuv444p"  # full-resolution colour: at 64x64 yuv420p costs 9 dB PSNR (docs/RESULTS.md)
    crf: int = 18
    gop: int = 2  # a keyframe every 2 frames, as LeRobot records: cheap random access for training

    def info(self, height: int, width: int, fps: int) -> dict:
        """The `info` block of a video feature in meta/info.json."""
        return {
            "video.height": height,
            "video.width": width,
            "video.codec": av.codec.Codec(self.codec, "w").canonical_name,  # the stream's codec: av1, not libsvtav1
            "video.pix_fmt": self.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        }


class VideoWriter:
    """Appends uint8 [H, W, 3] RGB frames to one mp4 file at a fixed fps."""

    def __init__(self, path: Path, height: int, width: int, fps: int, settings: VideoSettings):
        if settings.pix_fmt.startswith("yuv420") and (height % 2 or width % 2):
            raise ValueError(f"{settings.pix_fmt} needs even image sizes, got {height}x{width}; use --pix-fmt yuv444p")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.frames_written = 0
        self._container = av.open(str(path), mode="w")
        self._stream = self._container.add_stream(
            settings.codec, rate=fps, options={"crf": str(settings.crf), "g": str(settings.gop)}
        )
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = settings.pix_fmt
        self._frame_time_base = Fraction(1, fps)

    def write(self, frames: np.ndarray) -> None:
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = self.frames_written
            frame.time_base = self._frame_time_base
            self._container.mux(self._stream.encode(frame))
            self.frames_written += 1

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))  # flush the encoder's delayed frames
        self._container.close()


def iter_video_frames(path: Path, fps: int) -> Iterator[tuple[int, np.ndarray]]:
    """(position, uint8 [H, W, 3]) for each frame of an mp4 in decode order; frame n sits at n / fps.

    A file that is missing or does not open or decode raises DatasetFormatError naming it.
    """
    if not path.is_file():
        raise DatasetFormatError(path, None, "video file is missing")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetFormatError(path, None, "has no video stream")
            for count, frame in enumerate(container.decode(video=0)):
                position = round(float(frame.time) * fps) if frame.time is not None else count
                yield position, frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, OSError) as exc:
        raise DatasetFormatError(path, None, f"cannot decode the video (truncated or corrupt?): {exc}") from None


def read_video_frames(path: Path, fps: int) -> np.ndarray:
    """Every frame of an mp4 as uint8 [N, H, W, 3], in timestamp order; gaps raise DatasetFormatError."""
    frames = dict(iter_video_frames(path, fps))
    if not frames:
        raise DatasetFormatError(path, None, "holds no decodable frame (truncated or corrupt?)")
    if sorted(frames) != list(range(len(frames))):
        missing = sorted(set(range(max(frames) + 1)) - set(frames))[:5]
        raise DatasetFormatError(path, None, f"frames missing at positions {missing} (truncated or corrupt?)")
    return np.stack([frames[i] for i in range(len(frames))])


def psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of uint8 images (inf when identical)."""
    if original.shape != decoded.shape:
        raise ValueError(f"shapes differ: {original.shape} vs {decoded.shape}")
    mse = float(np.mean((original.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * float(np.log10(255.0**2 / mse))
