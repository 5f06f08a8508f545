"""One sop_ros episode as LeRobot v3.0 frame rows (pyarrow), the features that describe them, and their stats."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from sop_ros.core.episodes.episode import Actor, Episode
from sop_ros.datasets import lerobot_format as fmt
from sop_ros.datasets.stats import feature_stats, image_stats


@dataclasses.dataclass(frozen=True)
class EpisodeShape:
    """What every exported episode must share: the dataset has one schema."""

    image: tuple[int, int, int]
    state_dim: int
    action_dim: int

    @classmethod
    def of(cls, episode: Episode) -> EpisodeShape:
        return cls(tuple(episode.images.shape[1:]), episode.states.shape[1], episode.actions.shape[1])


def _vector(name: str, dim: int, dtype: str = "float32") -> dict:
    return {"dtype": dtype, "shape": [dim], "names": [f"{name}_{i}" for i in range(dim)]}


def _scalar(dtype: str) -> dict:
    return {"dtype": dtype, "shape": [1], "names": None}


def frame_features(shape: EpisodeShape, camera_key: str, video_info: dict) -> dict[str, dict]:
    """meta/info.json `features`: the camera, state, action, the v3.0 index columns and sop_ros's extras."""
    height, width, channels = shape.image
    return {
        camera_key: {
            "dtype": "video",
            "shape": [height, width, channels],
            "names": ["height", "width", "channels"],
            "info": video_info,
        },
        fmt.STATE_KEY: _vector("state", shape.state_dim),
        fmt.ACTION_KEY: _vector("action", shape.action_dim),
        "timestamp": _scalar("float32"),
        "frame_index": _scalar("int64"),
        "episode_index": _scalar("int64"),
        "index": _scalar("int64"),
        "task_index": _scalar("int64"),
        fmt.INTERVENTION: _scalar("bool"),
        fmt.ACTOR: {"dtype": "string", "shape": [1], "names": list(fmt.ACTOR_NAMES)},
        fmt.POLICY_VERSION: _scalar("int64"),
        fmt.STAMP_NS: _scalar("int64"),
    }


def _fixed_size_list(values: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def frame_table(episode: Episode, episode_index: int, first_index: int, task_index: int, fps: int) -> pa.Table:
    """The episode's frame rows; timestamp is frame_index / fps (what v3.0 readers check), stamp_ns the real time."""
    steps = episode.num_steps
    frame_index = np.arange(steps, dtype=np.int64)
    actors = episode.actors
    return pa.table(
        {
            fmt.STATE_KEY: _fixed_size_list(episode.states.astype(np.float32)),
            fmt.ACTION_KEY: _fixed_size_list(episode.actions.astype(np.float32)),
            "timestamp": pa.array((frame_index / fps).astype(np.float32)),
            "frame_index": pa.array(frame_index),
            "episode_index": pa.array(np.full(steps, episode_index, dtype=np.int64)),
            "index": pa.array(first_index + frame_index),
            "task_index": pa.array(np.full(steps, task_index, dtype=np.int64)),
            fmt.INTERVENTION: pa.array(actors == Actor.HUMAN),
            fmt.ACTOR: pa.array([fmt.ACTOR_NAMES[a] for a in actors.tolist()], type=pa.string()),
            fmt.POLICY_VERSION: pa.array(episode.policy_versions),
            fmt.STAMP_NS: pa.array(episode.stamps_ns),
        }
    )


def episode_stats(table: pa.Table, images: np.ndarray, camera_key: str) -> dict[str, dict[str, np.ndarray]]:
    """Stats of every numeric feature of one episode's rows (strings have none), plus the camera's."""
    stats = {camera_key: image_stats(images)}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_string(column.type):
            continue
        if pa.types.is_fixed_size_list(column.type):
            values = np.asarray(column.combine_chunks().flatten()).reshape(len(column), column.type.list_size)
        else:
            values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        stats[name] = feature_stats(values)
    return stats
