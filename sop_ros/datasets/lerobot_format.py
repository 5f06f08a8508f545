"""The LeRobot v3.0 dataset layout: names, path templates and the error a malformed dataset raises.

A v3.0 dataset packs many episodes per file:
    meta/info.json                                   schema (features), fps, totals, path templates
    meta/stats.json                                  per-feature min/max/mean/std/count over all frames
    meta/tasks.parquet                               task string -> task_index
    meta/episodes/chunk-XXX/file-XXX.parquet         one row per episode: length, tasks, file offsets, stats
    data/chunk-XXX/file-XXX.parquet                  one row per frame
    videos/<video_key>/chunk-XXX/file-XXX.mp4        the frames of each camera, episodes back to back
Written from the format's description (huggingface/lerobot, CODEBASE_VERSION "v3.0"), not its code.
"""

from __future__ import annotations

from pathlib import Path

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
CHUNKS_SIZE = 1000  # files per chunk directory (LeRobot's default)

# The columns every v3.0 frame row has besides the dataset's own features.
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")

# sop_ros's extra per-frame features (LeRobot has no column for them); `intervention` is the name LeRobot's
# own human-in-the-loop rollouts use.
INTERVENTION = "intervention"
ACTOR = "actor"
POLICY_VERSION = "policy_version"
STAMP_NS = "stamp_ns"
ACTOR_NAMES = ("policy", "human")  # the `actor` string column's values, by sop_ros Actor value

# sop_ros's extra per-episode columns of meta/episodes (success and where the label came from, identity).
EPISODE_EXTRA_COLUMNS = (
    "success",
    "label_source",
    "episode_uuid",
    "robot_id",
    "task_id",
    "start_ns",
    "end_ns",
    "intervention_reasons",
)

DEFAULT_CAMERA_KEY = "observation.images.camera"
STATE_KEY = "observation.state"
ACTION_KEY = "action"


class DatasetFormatError(ValueError):
    """A dataset file is missing or malformed; the message names the file and the field."""

    def __init__(self, path: str | Path, field: str | None, problem: str):
        self.path = str(path)
        self.field = field
        self.problem = problem
        where = f"{self.path}: field '{field}'" if field else self.path
        super().__init__(f"{where}: {problem}")


def chunk_and_file(file_number: int, chunks_size: int = CHUNKS_SIZE) -> tuple[int, int]:
    """The (chunk_index, file_index) of the n-th file of a kind: chunks_size files per chunk directory."""
    return file_number // chunks_size, file_number % chunks_size


def data_file(chunk_index: int, file_index: int, template: str = DATA_PATH) -> str:
    return template.format(chunk_index=chunk_index, file_index=file_index)


def video_file(video_key: str, chunk_index: int, file_index: int, template: str = VIDEO_PATH) -> str:
    return template.format(video_key=video_key, chunk_index=chunk_index, file_index=file_index)


def episodes_file(chunk_index: int, file_index: int) -> str:
    return EPISODES_PATH.format(chunk_index=chunk_index, file_index=file_index)
