"""Stored sop_ros episodes -> a LeRobot v3.0 dataset directory (`sop dataset export`).

Episodes are read one at a time (memory holds one episode and the rows of the current data file).
Data and video files roll over together at an episode boundary once a file holds `frames_per_file`
frames, so data file n and video file n always cover the same episodes. The dataset is built in a
temp directory next to the target and renamed at the end: a failed export leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sop_ros.core.episodes.episode import Episode
from sop_ros.core.episodes.episode_file import EpisodeFileError, read_episode
from sop_ros.datasets import lerobot_format as fmt
from sop_ros.datasets.atomic_dir import atomic_directory
from sop_ros.datasets.frame_table import EpisodeShape, episode_stats, frame_features, frame_table
from sop_ros.datasets.lerobot_meta import episode_row, write_info, write_json, write_tasks
from sop_ros.datasets.stats import aggregate_stats, stats_to_json
from sop_ros.datasets.video import VideoSettings, VideoWriter

DEFAULT_FRAMES_PER_FILE = 50_000


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    fps: Optional[int] = None  # None: from the first episode's step timestamps
    camera_key: str = fmt.DEFAULT_CAMERA_KEY
    video: VideoSettings = VideoSettings()
    frames_per_file: int = DEFAULT_FRAMES_PER_FILE
    robot_type: str = "sop_ros"


@dataclasses.dataclass(frozen=True)
class ExportSummary:
    out: Path
    episodes: int
    frames: int
    tasks: int
    fps: int
    seconds: float


def estimate_fps(episode: Episode) -> int:
    """The control rate the episode was recorded at: the median step interval of its timestamps."""
    intervals = np.diff(episode.stamps_ns)
    intervals = intervals[intervals > 0]
    if len(intervals) == 0:
        raise ValueError(f"episode {episode.episode_id}: cannot tell its rate from its timestamps; pass --fps")
    return max(1, round(1e9 / float(np.median(intervals))))


class _DatasetWriter:
    """Appends episodes to the data, video and episode tables of one dataset directory."""

    def __init__(self, root: Path, settings: ExportSettings):
        self.root = root
        self.settings = settings
        self.fps: Optional[int] = settings.fps
        self.shape: Optional[EpisodeShape] = None
        self.tasks: dict[str, int] = {}  # instruction -> task_index
        self.episode_rows: list[dict] = []
        self.episode_stats: list[dict] = []
        self.frames = 0
        self._file_number = 0
        self._file_tables: list[pa.Table] = []
        self._file_frames = 0
        self._video: Optional[VideoWriter] = None

    def _locations(self) -> tuple[str, str, int, int]:
        chunk, file = fmt.chunk_and_file(self._file_number)
        return fmt.data_file(chunk, file), fmt.video_file(self.settings.camera_key, chunk, file), chunk, file

    def _check_shape(self, episode: Episode, path: Path) -> None:
        shape = EpisodeShape.of(episode)
        if self.shape is None:
            self.shape = shape
            try:
                self.fps = self.fps or estimate_fps(episode)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
        elif shape != self.shape:
            raise ValueError(f"{path}: episode shape {shape} differs from the dataset's {self.shape} (first episode)")

    def add(self, episode: Episode, path: Path) -> None:
        self._check_shape(episode, path)
        if self._file_frames >= self.settings.frames_per_file:
            self._close_files()
        data_path, video_path, chunk, file = self._locations()
        if self._video is None:
            height, width, _ = self.shape.image
            self._video = VideoWriter(self.root / video_path, height, width, self.fps, self.settings.video)
        task_index = self.tasks.setdefault(episode.instruction, len(self.tasks))
        table = frame_table(episode, len(self.episode_rows), self.frames, task_index, self.fps)
        video_from = self._video.frames_written / self.fps
        self._video.write(episode.images)
        stats = episode_stats(table, episode.images, self.settings.camera_key)
        video = {"key": self.settings.camera_key, "chunk": chunk, "file": file, "from": video_from}
        self.episode_rows.append(
            episode_row(episode, len(self.episode_rows), self.frames, (chunk, file), video, stats, self.fps)
        )
        self.episode_stats.append(stats)
        self._file_tables.append(table)
        self._file_frames += episode.num_steps
        self.frames += episode.num_steps

    def _close_files(self) -> None:
        data_path = self.root / self._locations()[0]
        data_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(self._file_tables), data_path)
        self._video.close()
        self._video, self._file_tables, self._file_frames = None, [], 0
        self._file_number += 1

    def finish(self) -> None:
        if not self.episode_rows:
            raise ValueError("no episodes to export")
        self._close_files()
        episodes_path = self.root / fmt.episodes_file(0, 0)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.episode_rows), episodes_path)
        write_tasks(self.root / fmt.TASKS_PATH, list(self.tasks))
        names = self.episode_stats[0].keys()
        dataset_stats = {n: stats_to_json(aggregate_stats([s[n] for s in self.episode_stats])) for n in names}
        write_json(self.root / fmt.STATS_PATH, dataset_stats)
        height, width, _ = self.shape.image
        video_info = self.settings.video.info(height, width, self.fps)
        features = frame_features(self.shape, self.settings.camera_key, video_info)
        totals = {"episodes": len(self.episode_rows), "frames": self.frames, "tasks": len(self.tasks)}
        write_info(self.root / fmt.INFO_PATH, features, totals, self.fps, self.settings.robot_type)


def export_dataset(episode_paths: list[Path], out: Path, settings: ExportSettings = ExportSettings()) -> ExportSummary:
    """Write the episodes (files in the given order) as a LeRobot v3.0 dataset at `out` (must not exist)."""
    start = time.perf_counter()
    with atomic_directory(out) as root:
        writer = _DatasetWriter(root, settings)
        for path in episode_paths:
            try:
                episode = read_episode(path)
            except EpisodeFileError as exc:
                raise ValueError(f"{path}: not a valid episode file: {exc}") from None
            writer.add(episode, path)
        writer.finish()
    return ExportSummary(
        out, len(writer.episode_rows), writer.frames, len(writer.tasks), writer.fps, time.perf_counter() - start
    )
