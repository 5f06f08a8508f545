"""`sop dataset export|import`: real episodes -> a LeRobot v3.0 dataset an independent checker accepts, and back."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from dataset_checker import check_dataset
from dataset_episodes import fleet_episode_from, record_metaworld_demos, write_all

from sop_ros.cli import main
from sop_ros.core.episodes.episode import Actor, LabelSource
from sop_ros.core.episodes.episode_file import read_episode
from sop_ros.core.episodes.hashing import file_sha256
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.core.storage.spool import Spool
from sop_ros.datasets.episode_sources import episode_files
from sop_ros.datasets.lerobot_format import EPISODE_EXTRA_COLUMNS

pytestmark = pytest.mark.timeout(300)

# Measured on these MetaWorld demos (64x64, 10 fps, h264 yuv444p crf 18): 38.1 dB; 30 dB leaves slack for other
# codec builds and still fails swapped colour channels (13-15 dB) or frames off by one (24.7 dB).
MIN_PSNR_DB = 30.0


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Two real MetaWorld demos and two fleet-like episodes on their frames (interventions, versions, labels)."""
    out = tmp_path_factory.mktemp("source")
    demos = [read_episode(p) for p in record_metaworld_demos(out, [("button-press-topdown-v3", 5), ("push-v3", 7)])]
    write_all(
        [
            fleet_episode_from(demos[0], "robot1", False, LabelSource.OPERATOR),
            fleet_episode_from(demos[1], "robot2", None, LabelSource.NONE),
        ],
        out,
    )
    return out


def _export(source, out, *extra):
    assert main(["dataset", "export", str(source), str(out), *extra]) == 0


def test_export_passes_the_independent_v3_check(source, tmp_path):
    out = tmp_path / "dataset"
    _export(source, out, "--frames-per-file", "100")  # forces several data and video files
    info = check_dataset(out)
    originals = {read_episode(p).episode_id: read_episode(p) for p in episode_files(source)}
    assert info["total_episodes"] == 4 and info["fps"] == 10
    assert len(list((out / "data").glob("chunk-000/file-*.parquet"))) >= 2
    assert info["features"]["intervention"]["dtype"] == "bool"
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    for row in episodes:
        original = originals[row["episode_uuid"]]
        assert row["success"] == original.success and row["label_source"] == original.label_source.value
        assert row["task_id"] == original.task_id and row["robot_id"] == original.robot_id
        data = pq.read_table(
            out / f"data/chunk-{row['data/chunk_index']:03d}/file-{row['data/file_index']:03d}.parquet"
        ).to_pydict()
        mine = [i for i, e in enumerate(data["episode_index"]) if e == row["episode_index"]]
        np.testing.assert_array_equal([data["intervention"][i] for i in mine], original.actors == Actor.HUMAN)
        np.testing.assert_array_equal([data["policy_version"][i] for i in mine], original.policy_versions)
        assert {data["actor"][i] for i in mine} <= {"policy", "human"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temp directory was left behind"


def test_round_trip_keeps_every_field_exactly_and_images_within_codec_loss(source, tmp_path, capsys):
    _export(source, tmp_path / "dataset")
    imported = tmp_path / "imported"
    args = ["dataset", "import", str(tmp_path / "dataset"), str(imported), "--reference", str(source)]
    assert main(args) == 0
    report = capsys.readouterr().out
    assert "4 episodes matched (0 unmatched)" in report and "DIFFER" not in report
    worst = float(re.search(r"worst episode ([\d.]+) dB", report).group(1))
    assert worst > MIN_PSNR_DB, report
    for path in episode_files(imported):
        episode = read_episode(path)
        original = read_episode(source / path.name)
        for field in ("states", "actions", "actors", "policy_versions", "stamps_ns"):
            np.testing.assert_array_equal(getattr(episode, field), getattr(original, field), err_msg=field)
        assert (episode.success, episode.label_source) == (original.success, original.label_source)
        assert (episode.task_id, episode.instruction, episode.robot_id) == (
            original.task_id,
            original.instruction,
            original.robot_id,
        )
        assert episode.intervention_segments == original.intervention_segments


def test_export_reads_an_episode_store_and_a_spool_in_their_order(source, tmp_path):
    files = episode_files(source)
    with EpisodeStore(tmp_path / "store", cache_in_background=False) as store:
        for path in reversed(files):  # ingest order differs from name order
            episode = read_episode(path)
            store.append_staged(episode.episode_id, 0, path.read_bytes())
            store.commit(episode.episode_id, file_sha256(path), episode.robot_id)
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30)
    for path in files:
        spool.write(read_episode(path))
    for name, expected in (("store", list(reversed(files))), ("spool", files)):
        _export(tmp_path / name, tmp_path / f"dataset-{name}")
        check_dataset(tmp_path / f"dataset-{name}")
        rows = pq.read_table(tmp_path / f"dataset-{name}/meta/episodes/chunk-000/file-000.parquet").to_pylist()
        assert [r["episode_uuid"] for r in rows] == [p.stem for p in expected], name


def _strip_to_plain_lerobot(dataset):
    """A dataset as LeRobot itself records it: no sop_ros extras, another camera name."""
    info = json.loads((dataset / "meta/info.json").read_text())
    for extra in ("actor", "policy_version", "stamp_ns", "intervention"):
        del info["features"][extra]
    info["features"]["observation.images.front"] = info["features"].pop("observation.images.camera")
    (dataset / "meta/info.json").write_text(json.dumps(info))
    (dataset / "videos/observation.images.camera").rename(dataset / "videos/observation.images.front")
    for path in dataset.glob("data/*/*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["actor", "policy_version", "stamp_ns", "intervention"]), path)
    path = dataset / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    keep = [c for c in table.column_names if c not in EPISODE_EXTRA_COLUMNS]
    table = table.select(keep)
    pq.write_table(
        table.rename_columns(
            [c.replace("observation.images.camera", "observation.images.front") for c in table.column_names]
        ),
        path,
    )


def test_import_of_a_plain_lerobot_dataset_with_a_mapping_feeds_the_offline_store(source, tmp_path, capsys):
    dataset = tmp_path / "dataset"
    _export(source, dataset)
    _strip_to_plain_lerobot(dataset)
    tasks = {e.instruction: e.task_id for e in map(read_episode, episode_files(source))}
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump({"camera": "observation.images.front", "success": True, "tasks": tasks}))
    out = tmp_path / "demos"
    data_dir = tmp_path / "learner"
    assert (
        main(["dataset", "import", str(dataset), str(out), "--mapping", str(mapping), "--data-dir", str(data_dir)]) == 0
    )
    assert "4 episodes committed" in capsys.readouterr().out
    imported = [read_episode(p) for p in episode_files(out)]
    assert len(imported) == 4
    for episode in imported:
        assert (episode.actors == Actor.HUMAN).all() and (episode.policy_versions == 0).all()
        assert episode.success is True and episode.label_source == LabelSource.OPERATOR
        assert episode.task_id == tasks[episode.instruction] and episode.robot_id == "lerobot-import"
    with EpisodeStore(data_dir / "offline", cache_in_background=False) as store:
        assert store.count() == 4 and sorted(store.tasks()) == sorted(set(tasks.values()))


def test_the_checker_itself_rejects_an_inconsistent_dataset(source, tmp_path):
    """The independent check is not vacuous: a wrong total or a shifted episode range fails it."""
    dataset = tmp_path / "dataset"
    _export(source, dataset)
    info_path = dataset / "meta/info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps(dict(info, total_frames=info["total_frames"] + 1)))
    with pytest.raises(AssertionError):
        check_dataset(dataset)
    info_path.write_text(json.dumps(info))
    episodes_path = dataset / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(episodes_path)
    shifted = [v + 1 for v in table.column("dataset_from_index").to_pylist()]
    column = table.schema.get_field_index("dataset_from_index")
    pq.write_table(table.set_column(column, "dataset_from_index", pa.array(shifted, pa.int64())), episodes_path)
    with pytest.raises(AssertionError):
        check_dataset(dataset)


def test_av1_videos_as_lerobot_records_them_import_too(source, tmp_path, capsys):
    """LeRobot's own default (SVT-AV1, yuv420p, crf 30) decodes on import; measured 27.8 dB worst at 64x64."""
    dataset = tmp_path / "dataset"
    _export(source, dataset, "--codec", "libsvtav1", "--pix-fmt", "yuv420p", "--crf", "30")
    assert (
        json.loads((dataset / "meta/info.json").read_text())["features"]["observation.images.camera"]["info"][
            "video.codec"
        ]
        == "av1"
    )
    args = ["dataset", "import", str(dataset), str(tmp_path / "imported"), "--reference", str(source)]
    assert main(args) == 0
    report = capsys.readouterr().out
    assert "4 episodes matched" in report and "DIFFER" not in report
    assert float(re.search(r"worst episode ([\d.]+) dB", report).group(1)) > 24.0, report
