"""A LeRobot v3.0 dataset directory -> sop_ros episode files: an offline buffer (`sop dataset import`).

The output is a directory of <episode_id>.mcap files, the layout `sop collect` writes and
`sop pretrain --demos` and the learner's offline store ingest. Episodes are read in episode_index order,
one at a time: data files are loaded one at a time and each camera file is decoded once, front to back.
Everything is written to a temp directory next to the output and renamed at the end.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sop_ros.core.episodes.episode import Actor, Episode, LabelSource
from sop_ros.core.episodes.episode_file import EPISODE_SUFFIX, write_episode
from sop_ros.datasets import lerobot_format as fmt
from sop_ros.datasets.atomic_dir import atomic_directory
from sop_ros.datasets.import_mapping import ImportMapping
from sop_ros.datasets.lerobot_format import DatasetFormatError
from sop_ros.datasets.lerobot_meta import read_episodes, read_info, read_parquet, read_tasks
from sop_ros.datasets.video import iter_video_frames


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    out: Path
    episodes: int
    frames: int
    seconds: float


def check_features(info: dict, info_path: Path, mapping: ImportMapping) -> None:
    """The mapping's keys must be features of the right kind: a video camera, 1-D float state and action."""
    features = info["features"]
    for role, key, dtypes in (
        ("camera", mapping.camera, ("video",)),
        ("state", mapping.state, ("float32", "float64")),
        ("action", mapping.action, ("float32", "float64")),
    ):
        feature = features.get(key)
        if not isinstance(feature, dict):
            raise DatasetFormatError(
                info_path, f"features.{key}", f"the mapping's {role} is not a feature; features: {sorted(features)}"
            )
        if feature.get("dtype") not in dtypes:
            raise DatasetFormatError(
                info_path, f"features.{key}.dtype", f"{feature.get('dtype')!r}; the {role} must be one of {dtypes}"
            )
        shape = feature.get("shape")
        wanted = 3 if role == "camera" else 1
        if not (isinstance(shape, list) and len(shape) == wanted and (role != "camera" or shape[-1] == 3)):
            raise DatasetFormatError(info_path, f"features.{key}.shape", f"{shape!r} is not a {role} shape")


def _matrix(table: pa.Table, column: str, path: Path) -> np.ndarray:
    """A list column as float32 [rows, dim] (float64 sources are cast; dims must agree)."""
    values = table.column(column).combine_chunks()
    if not (pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type)):
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, 1)
    lengths = set(pc.list_value_length(values).to_pylist())
    if len(lengths) != 1:
        raise DatasetFormatError(path, column, f"rows have different lengths {sorted(lengths)}")
    flat = np.asarray(pc.list_flatten(values).to_numpy(zero_copy_only=False), dtype=np.float32)
    return flat.reshape(len(values), lengths.pop())


class _DataCursor:
    """The frame rows of one episode, from data files loaded one at a time."""

    def __init__(self, root: Path, template: str, mapping: ImportMapping):
        self.root, self.template, self.mapping = root, template, mapping
        self._path: Optional[Path] = None
        self._table: Optional[pa.Table] = None

    def rows(self, row: dict) -> tuple[pa.Table, Path]:
        path = self.root / fmt.data_file(row["data/chunk_index"], row["data/file_index"], self.template)
        if path != self._path:
            needed = [self.mapping.state, self.mapping.action, "episode_index", "frame_index"]
            self._table, self._path = read_parquet(path, needed), path
        rows = self._table.filter(pc.equal(self._table.column("episode_index"), row["episode_index"]))
        rows = rows.sort_by("frame_index")
        if rows.num_rows != row["length"]:
            raise DatasetFormatError(
                path,
                "episode_index",
                f"episode {row['episode_index']} has {rows.num_rows} rows, its length is {row['length']}",
            )
        return rows, path


class _VideoCursor:
    """Frames of one camera, decoded front to back through its files (reopened only to go backwards)."""

    def __init__(self, root: Path, template: str, camera: str, fps: int):
        self.root, self.template, self.camera, self.fps = root, template, camera, fps
        self._path: Optional[Path] = None
        self._frames: Optional[Iterator[tuple[int, np.ndarray]]] = None
        self._next_position = 0

    def frames(self, row: dict) -> np.ndarray:
        prefix = f"videos/{self.camera}/"
        chunk, file = row[prefix + "chunk_index"], row[prefix + "file_index"]
        path = self.root / fmt.video_file(self.camera, chunk, file, self.template)
        start, length = round(row[prefix + "from_timestamp"] * self.fps), row["length"]
        if path != self._path or start < self._next_position:
            self._frames, self._path = iter_video_frames(path, self.fps), path
        frames = []
        for position, frame in self._frames:
            self._next_position = position + 1
            if position >= start:
                frames.append(frame)
            if position >= start + length - 1:
                break
        if len(frames) != length:
            raise DatasetFormatError(
                path,
                None,
                f"episode {row['episode_index']} needs {length} frames from {start / self.fps:.3f} s, "
                f"the video holds {len(frames)} (truncated or corrupt?)",
            )
        return np.stack(frames)


def _actors(rows: pa.Table, path: Path) -> np.ndarray:
    """Who acted: the `actor` column, else `intervention` (human while intervening), else a human (teleop demos)."""
    if fmt.ACTOR in rows.column_names:
        names = rows.column(fmt.ACTOR).to_pylist()
        unknown = sorted(set(names) - set(fmt.ACTOR_NAMES))
        if unknown:
            raise DatasetFormatError(path, fmt.ACTOR, f"unknown values {unknown}; expected {list(fmt.ACTOR_NAMES)}")
        return np.array([fmt.ACTOR_NAMES.index(n) for n in names], dtype=np.uint8)
    if fmt.INTERVENTION in rows.column_names:
        flags = np.asarray(rows.column(fmt.INTERVENTION).to_numpy(zero_copy_only=False), dtype=bool)
        return np.where(flags, Actor.HUMAN, Actor.POLICY).astype(np.uint8)
    return np.full(rows.num_rows, Actor.HUMAN, dtype=np.uint8)


def _int_column(rows: pa.Table, name: str, default: np.ndarray) -> np.ndarray:
    if name not in rows.column_names:
        return default
    return np.asarray(rows.column(name).to_numpy(zero_copy_only=False), dtype=np.int64)


def _label(row: dict, mapping: ImportMapping) -> tuple[Optional[bool], LabelSource]:
    """The dataset's own label (sop_ros exports carry one), else the mapping's `success` for every episode."""
    if row.get("label_source") in {s.value for s in LabelSource}:
        return row.get("success"), LabelSource(row["label_source"])
    if mapping.success is None:
        return None, LabelSource.NONE
    return mapping.success, LabelSource.OPERATOR


def _episode_id(row: dict, dataset_id: str) -> str:
    """The episode's own UUID when the dataset carries one, else one derived from the dataset and index (stable)."""
    carried = row.get("episode_uuid")
    if isinstance(carried, str):
        try:
            return str(uuid.UUID(carried))
        except ValueError:
            raise DatasetFormatError(row["_file"], "episode_uuid", f"not a UUID: {carried!r}") from None
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"lerobot:{dataset_id}:{row['episode_index']}"))


@dataclasses.dataclass(frozen=True)
class _Context:
    mapping: ImportMapping
    tasks: dict[int, str]
    fps: int
    chunk_size: int
    dataset_id: str


def _build_episode(row: dict, rows: pa.Table, data_path: Path, images: np.ndarray, ctx: _Context) -> Episode:
    task_index = rows.column("task_index")[0].as_py() if "task_index" in rows.column_names else None
    task = ctx.tasks.get(task_index) if task_index is not None else (row.get("tasks") or [None])[0]
    target = ctx.mapping.target(task, row.get("task_id")) if task is not None else None
    if target is None:
        raise DatasetFormatError(
            row["_file"], "tasks", f"episode {row['episode_index']}: task {task!r} has no sop_ros task in the mapping"
        )
    actions = _matrix(rows, ctx.mapping.action, data_path)
    steps = rows.num_rows
    start_ns = int(row.get("start_ns") or 0)
    stamps = _int_column(rows, fmt.STAMP_NS, start_ns + np.arange(steps, dtype=np.int64) * (10**9 // ctx.fps))
    success, label_source = _label(row, ctx.mapping)
    return Episode(
        episode_id=_episode_id(row, ctx.dataset_id),
        robot_id=row.get("robot_id") or ctx.mapping.robot_id,
        task_id=target.task_id,
        instruction=target.instruction,
        images=images,
        states=_matrix(rows, ctx.mapping.state, data_path),
        actions=actions,
        actors=_actors(rows, data_path),
        policy_versions=_int_column(rows, fmt.POLICY_VERSION, np.zeros(steps, dtype=np.int64)),
        proposed_chunks=np.full((steps, ctx.chunk_size, actions.shape[1]), np.nan, dtype=np.float32),
        stamps_ns=stamps,
        success=success,
        label_source=label_source,
        start_ns=start_ns or int(stamps[0]),
        end_ns=int(row.get("end_ns") or stamps[-1]),
        intervention_reasons=tuple(row.get("intervention_reasons") or ()),
    )


def import_dataset(root: Path, out: Path, mapping: ImportMapping, chunk_size: int) -> ImportSummary:
    """Write every episode of the dataset at `root` as an episode file in `out` (must not exist or be empty).

    `chunk_size`: K of the (empty) proposed-chunk field, as the fleet's recorders write it.
    """
    start = time.perf_counter()
    root = Path(root)
    info = read_info(root)
    check_features(info, root / fmt.INFO_PATH, mapping)
    fps = int(round(info["fps"]))
    video_columns = [f"videos/{mapping.camera}/{c}" for c in ("chunk_index", "file_index", "from_timestamp")]
    episode_rows = read_episodes(root, ["data/chunk_index", "data/file_index", *video_columns])
    ctx = _Context(mapping, read_tasks(root), fps, chunk_size, str(root.resolve()))
    data = _DataCursor(root, info["data_path"], mapping)
    video = _VideoCursor(root, info.get("video_path") or fmt.VIDEO_PATH, mapping.camera, fps)
    frames = 0
    with atomic_directory(out) as temp:
        for row in episode_rows:
            rows, data_path = data.rows(row)
            episode = _build_episode(row, rows, data_path, video.frames(row), ctx)
            try:
                episode.validate()
            except ValueError as exc:
                raise DatasetFormatError(data_path, None, f"episode {row['episode_index']}: {exc}") from None
            write_episode(episode, temp / f"{episode.episode_id}{EPISODE_SUFFIX}")
            frames += episode.num_steps
    return ImportSummary(out, len(episode_rows), frames, time.perf_counter() - start)
