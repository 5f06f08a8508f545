"""An independent LeRobot v3.0 dataset checker, written from the format's description with pyarrow and PyAV only.

It shares no code with sop_ros.datasets: it reads what a v3.0 reader would and checks that meta/info.json,
the episodes table, the frame rows, the mp4 files and stats.json agree with each other.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq

REQUIRED_INFO = (
    "codebase_version",
    "fps",
    "features",
    "total_episodes",
    "total_frames",
    "total_tasks",
    "chunks_size",
    "data_path",
    "video_path",
    "splits",
)
INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def _mp4_frame_count(path: Path) -> tuple[int, tuple[int, int]]:
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return len(frames), (frames[0].height, frames[0].width)


def _check_meta(root: Path) -> tuple[dict, list[dict], dict]:
    info = json.loads((root / "meta/info.json").read_text())
    for key in REQUIRED_INFO:
        assert key in info, f"info.json lacks {key}"
    assert info["codebase_version"] == "v3.0"
    for name, feature in info["features"].items():
        assert {"dtype", "shape", "names"} <= set(feature), name
    for column in INDEX_COLUMNS:
        assert column in info["features"], column
    episodes = []
    for path in sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet")):
        episodes.extend(pq.read_table(path).to_pylist())
    tasks = pq.read_table(root / "meta/tasks.parquet").to_pydict()
    assert info["total_episodes"] == len(episodes)
    assert info["total_tasks"] == len(tasks["task_index"]) == len(set(tasks["task"]))
    assert info["splits"] == {"train": f"0:{len(episodes)}"}
    assert [e["episode_index"] for e in episodes] == list(range(len(episodes)))
    return info, episodes, tasks


def _load_frames(root: Path, info: dict, episodes: list[dict]) -> dict[tuple[int, int], dict]:
    rows_by_file = {}
    for e in episodes:
        key = (e["data/chunk_index"], e["data/file_index"])
        if key not in rows_by_file:
            path = root / info["data_path"].format(chunk_index=key[0], file_index=key[1])
            rows_by_file[key] = pq.read_table(path).to_pydict()
    total_rows = sum(len(t["index"]) for t in rows_by_file.values())
    assert info["total_frames"] == total_rows == sum(e["length"] for e in episodes)
    all_index = sorted(i for t in rows_by_file.values() for i in t["index"])
    assert all_index == list(range(total_rows)), "global index is not 0..N-1"
    return rows_by_file


def _check_episode_rows(info: dict, episode: dict, rows: dict, tasks: dict) -> None:
    mine = [i for i, ep in enumerate(rows["episode_index"]) if ep == episode["episode_index"]]
    assert len(mine) == episode["length"]
    assert [rows["frame_index"][i] for i in mine] == list(range(episode["length"]))
    assert [rows["index"][i] for i in mine] == list(range(episode["dataset_from_index"], episode["dataset_to_index"]))
    for i in mine:
        assert abs(rows["timestamp"][i] - rows["frame_index"][i] / info["fps"]) < 1e-4
        assert rows["task_index"][i] in tasks["task_index"]
    task = tasks["task"][tasks["task_index"].index(rows["task_index"][mine[0]])]
    assert episode["tasks"] == [task]
    for name, feature in info["features"].items():
        if feature["dtype"] in ("video", "image"):
            continue
        assert name in rows, f"data file lacks feature {name}"
        if feature["shape"] != [1]:
            assert all(len(rows[name][i]) == feature["shape"][0] for i in mine), name


def _check_videos(root: Path, info: dict, episodes: list[dict]) -> None:
    fps = info["fps"]
    for key, feature in info["features"].items():
        if feature["dtype"] != "video":
            continue
        per_file = defaultdict(list)
        for e in episodes:
            per_file[(e[f"videos/{key}/chunk_index"], e[f"videos/{key}/file_index"])].append(e)
        for (chunk, file), eps in per_file.items():
            path = root / info["video_path"].format(video_key=key, chunk_index=chunk, file_index=file)
            count, size = _mp4_frame_count(path)
            assert count == sum(e["length"] for e in eps), f"{path}: {count} frames"
            assert list(size) == feature["shape"][:2]
            start = 0.0
            for e in sorted(eps, key=lambda e: e[f"videos/{key}/from_timestamp"]):
                assert abs(e[f"videos/{key}/from_timestamp"] - start) < 1e-6
                assert abs(e[f"videos/{key}/to_timestamp"] - start - e["length"] / fps) < 1e-6
                start += e["length"] / fps


def _check_stats(root: Path, info: dict, rows_by_file: dict) -> None:
    stats = json.loads((root / "meta/stats.json").read_text())
    for name, feature in info["features"].items():
        if feature["dtype"] != "string":
            assert {"min", "max", "mean", "std", "count"} <= set(stats[name]), name
    for name in ("observation.state", "action"):  # dataset stats agree with the frames themselves
        values = np.array([v for t in rows_by_file.values() for v in t[name]], dtype=np.float64)
        np.testing.assert_allclose(stats[name]["mean"], values.mean(axis=0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(stats[name]["std"], values.std(axis=0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(stats[name]["min"], values.min(axis=0), rtol=1e-6)
        np.testing.assert_allclose(stats[name]["max"], values.max(axis=0), rtol=1e-6)
        assert stats[name]["count"] == [len(values)]


def check_dataset(root: Path) -> dict:
    """Assert the dataset is self-consistent; return its info for further checks."""
    info, episodes, tasks = _check_meta(root)
    rows_by_file = _load_frames(root, info, episodes)
    for episode in episodes:
        _check_episode_rows(
            info, episode, rows_by_file[(episode["data/chunk_index"], episode["data/file_index"])], tasks
        )
    _check_videos(root, info, episodes)
    _check_stats(root, info, rows_by_file)
    return info
