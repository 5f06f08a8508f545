"""meta/ of a LeRobot v3.0 dataset: info.json, stats.json, tasks.parquet and the episodes table, written and read.

Readers raise DatasetFormatError naming the file and the field, so a bad dataset says what is wrong where.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sop_ros.core.episodes.episode import Episode
from sop_ros.datasets import lerobot_format as fmt
from sop_ros.datasets.lerobot_format import DatasetFormatError

# pandas reads tasks.parquet with the task strings as its index (as LeRobot writes it); this metadata says so.
_TASKS_PANDAS_METADATA = {
    "index_columns": ["task"],
    "column_indexes": [],
    "columns": [
        {
            "name": "task_index",
            "field_name": "task_index",
            "pandas_type": "int64",
            "numpy_type": "int64",
            "metadata": None,
        },
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
    ],
    "creator": {"library": "pyarrow", "version": pa.__version__},
    "pandas_version": "2.2.3",
}


def write_json(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")


def write_info(path: Path, features: dict, totals: dict[str, int], fps: int, robot_type: str) -> None:
    write_json(
        path,
        {
            "codebase_version": fmt.CODEBASE_VERSION,
            "robot_type": robot_type,
            "total_episodes": totals["episodes"],
            "total_frames": totals["frames"],
            "total_tasks": totals["tasks"],
            "chunks_size": fmt.CHUNKS_SIZE,
            # LeRobot's own size targets, for a LeRobot writer that appends to this dataset (we roll by frames)
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200,
            "fps": fps,
            "splits": {"train": f"0:{totals['episodes']}"},
            "data_path": fmt.DATA_PATH,
            "video_path": fmt.VIDEO_PATH,
            "features": features,
        },
    )


def write_tasks(path: Path, tasks: list[str]) -> None:
    """tasks.parquet: one row per task string, its row number its task_index."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    table = table.replace_schema_metadata({"pandas": json.dumps(_TASKS_PANDAS_METADATA)})
    pq.write_table(table, path)


def episode_row(
    episode: Episode, index: int, first_frame: int, data_file: tuple, video: dict, stats: dict, fps: int
) -> dict:
    """The episode's row of meta/episodes: where its frames are, its stats, and sop_ros's per-episode extras."""
    key = video["key"]
    row = {
        "episode_index": index,
        "tasks": [episode.instruction],
        "length": episode.num_steps,
        "data/chunk_index": data_file[0],
        "data/file_index": data_file[1],
        "dataset_from_index": first_frame,
        "dataset_to_index": first_frame + episode.num_steps,
        f"videos/{key}/chunk_index": video["chunk"],
        f"videos/{key}/file_index": video["file"],
        f"videos/{key}/from_timestamp": video["from"],
        f"videos/{key}/to_timestamp": video["from"] + episode.num_steps / fps,
        "meta/episodes/chunk_index": 0,
        "meta/episodes/file_index": 0,
        "success": episode.success,
        "label_source": episode.label_source.value,
        "episode_uuid": episode.episode_id,
        "robot_id": episode.robot_id,
        "task_id": episode.task_id,
        "start_ns": episode.start_ns,
        "end_ns": episode.end_ns,
        "intervention_reasons": list(episode.intervention_reasons),
    }
    for feature, feature_stats in stats.items():
        for name, value in feature_stats.items():
            row[f"stats/{feature}/{name}"] = np.asarray(value).tolist()
    return row


def read_info(root: Path) -> dict:
    """meta/info.json, checked for the fields an importer relies on."""
    path = root / fmt.INFO_PATH
    if not path.is_file():
        raise DatasetFormatError(path, None, "missing (not a LeRobot dataset directory?)")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(path, None, f"not valid JSON: {exc}") from None
    if not isinstance(info, dict):
        raise DatasetFormatError(path, None, "must be a JSON object")
    version = info.get("codebase_version")
    if version != fmt.CODEBASE_VERSION:
        raise DatasetFormatError(
            path, "codebase_version", f"{version!r} is not supported (only {fmt.CODEBASE_VERSION!r})"
        )
    for field, kind in (("fps", (int, float)), ("features", dict), ("data_path", str), ("total_episodes", int)):
        if not isinstance(info.get(field), kind):
            raise DatasetFormatError(path, field, "missing or of the wrong type")
    if info["fps"] <= 0:
        raise DatasetFormatError(path, "fps", f"must be positive, got {info['fps']}")
    return info


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A parquet file, or DatasetFormatError naming it (missing, truncated, or lacking a column)."""
    if not path.is_file():
        raise DatasetFormatError(path, None, "missing")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetFormatError(path, None, f"not a readable parquet file (truncated or corrupt?): {exc}") from None
    for column in columns or ():
        if column not in table.column_names:
            raise DatasetFormatError(path, column, "column missing")
    return table


def read_tasks(root: Path) -> dict[int, str]:
    """task_index -> task string; the strings are a `task` column or, as pandas writes them, the index column."""
    path = root / fmt.TASKS_PATH
    table = read_parquet(path, ["task_index"])
    text_column = next((c for c in ("task", "__index_level_0__") if c in table.column_names), None)
    if text_column is None:
        raise DatasetFormatError(path, "task", "column missing (neither a 'task' column nor a pandas index)")
    return dict(zip(table.column("task_index").to_pylist(), table.column(text_column).to_pylist()))


def read_episodes(root: Path, required: list[str]) -> list[dict]:
    """Every row of meta/episodes/chunk-*/file-*.parquet, ordered by episode_index."""
    files = sorted((root / fmt.EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetFormatError(root / fmt.EPISODES_DIR, None, "no chunk-XXX/file-XXX.parquet episode files")
    rows = []
    for path in files:
        table = read_parquet(path, ["episode_index", "length", "dataset_from_index", "dataset_to_index", *required])
        rows.extend(dict(row, _file=str(path)) for row in table.to_pylist())
    return sorted(rows, key=lambda row: row["episode_index"])
