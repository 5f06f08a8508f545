"""Bad LeRobot datasets: one clear error naming the file and the field, and no half-written output."""

from __future__ import annotations

import json

import pytest
from dataset_episodes import synthetic_episode, write_all

from sop_ros.cli import main
from sop_ros.datasets.import_mapping import ImportMapping
from sop_ros.datasets.lerobot_format import DatasetFormatError
from sop_ros.datasets.lerobot_import import import_dataset

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def dataset(tmp_path):
    episodes = [synthetic_episode("push-v3", "push it", 30, 1), synthetic_episode("reach-v3", "reach it", 25, 2)]
    write_all(episodes, tmp_path / "source")
    out = tmp_path / "dataset"
    assert main(["dataset", "export", str(tmp_path / "source"), str(out)]) == 0
    return out


def _import_fails(dataset, mapping=ImportMapping()) -> DatasetFormatError:
    out = dataset.parent / "imported"
    with pytest.raises(DatasetFormatError) as caught:
        import_dataset(dataset, out, mapping, chunk_size=4)
    assert not out.exists(), "half-written output left behind"
    assert not [p for p in dataset.parent.iterdir() if p.name.startswith(".")], "temp directory left behind"
    return caught.value


def _edit_info(dataset, edit):
    info = json.loads((dataset / "meta/info.json").read_text())
    edit(info)
    (dataset / "meta/info.json").write_text(json.dumps(info))


@pytest.mark.parametrize("meta_file", ["meta/info.json", "meta/tasks.parquet"])
def test_missing_meta_file(dataset, meta_file):
    (dataset / meta_file).unlink()
    error = _import_fails(dataset)
    assert error.path.endswith(meta_file) and "missing" in str(error)


def test_missing_episodes_table(dataset):
    (dataset / "meta/episodes/chunk-000/file-000.parquet").unlink()
    assert _import_fails(dataset).path.endswith("meta/episodes")


def test_unknown_codebase_version(dataset):
    _edit_info(dataset, lambda info: info.update(codebase_version="v2.1"))
    error = _import_fails(dataset)
    assert error.path.endswith("meta/info.json") and error.field == "codebase_version" and "'v2.1'" in str(error)


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        (ImportMapping(camera="observation.images.wrist"), "features.observation.images.wrist"),
        (ImportMapping(state="observation.images.camera"), "features.observation.images.camera.dtype"),
        (ImportMapping(action="frame_index"), "features.frame_index.dtype"),
    ],
)
def test_features_that_do_not_match_the_mapping(dataset, mapping, field):
    error = _import_fails(dataset, mapping)
    assert error.path.endswith("meta/info.json") and error.field == field


def test_a_state_feature_whose_shape_is_not_a_vector(dataset):
    _edit_info(dataset, lambda info: info["features"]["observation.state"].update(shape=[2, 3]))
    assert _import_fails(dataset).field == "features.observation.state.shape"


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_data_parquet(dataset):
    path = dataset / "data/chunk-000/file-000.parquet"
    _truncate(path)
    error = _import_fails(dataset)
    assert error.path == str(path) and "parquet" in str(error)


def test_truncated_episodes_parquet(dataset):
    path = dataset / "meta/episodes/chunk-000/file-000.parquet"
    _truncate(path)
    assert _import_fails(dataset).path == str(path)


def test_truncated_mp4(dataset):
    path = dataset / "videos/observation.images.camera/chunk-000/file-000.mp4"
    _truncate(path, 0.6)
    error = _import_fails(dataset)
    assert error.path == str(path) and "truncated" in str(error)


def test_missing_mp4(dataset):
    path = dataset / "videos/observation.images.camera/chunk-000/file-000.mp4"
    path.unlink()
    assert _import_fails(dataset).path == str(path)


def test_data_column_missing(dataset):
    import pyarrow.parquet as pq

    path = dataset / "data/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["action"]), path)
    error = _import_fails(dataset)
    assert error.path == str(path) and error.field == "action"


def test_a_task_without_a_sop_task_is_named(dataset):
    import pyarrow.parquet as pq

    path = dataset / "meta/episodes/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["task_id"]), path)
    error = _import_fails(dataset)
    assert error.field == "tasks" and ("'push it'" in str(error) or "'reach it'" in str(error))


def test_the_cli_prints_one_line_and_exits_2(dataset, tmp_path, capsys):
    _edit_info(dataset, lambda info: info.update(codebase_version="v9"))
    assert main(["dataset", "import", str(dataset), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "meta/info.json: field 'codebase_version'" in err


def test_export_refuses_a_non_empty_target_and_leaves_no_temp(dataset, tmp_path, capsys):
    assert main(["dataset", "export", str(tmp_path / "source"), str(dataset)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_of_episodes_with_different_shapes_leaves_nothing(tmp_path, capsys):
    import numpy as np

    from sop_ros.core.episodes.episode import EpisodeBuilder, LabelSource

    first = synthetic_episode("push-v3", "push it", 10, 1)
    builder = EpisodeBuilder("robot1", "push-v3", "push it", (4, 4), start_ns=1)
    builder.add_step(np.zeros((16, 16, 3), np.uint8), np.zeros(6, np.float32), np.zeros(4, np.float32), 0, 1, 5)
    write_all([first, builder.close(True, LabelSource.ENVIRONMENT, 6)], tmp_path / "source")
    assert main(["dataset", "export", str(tmp_path / "source"), str(tmp_path / "out"), "--fps", "10"]) == 2
    assert "differs from the dataset's" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("camera: x\nfps: 3\n", "unknown field(s) ['fps']"),
        ("tasks:\n  push it: 7\n", "field 'tasks.push it'"),
        ("success: maybe\n", "field 'success'"),
        ("- a list\n", "must be a YAML mapping"),
    ],
)
def test_a_bad_mapping_file_is_named_with_its_field(dataset, tmp_path, capsys, content, named):
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(content)
    assert main(["dataset", "import", str(dataset), str(tmp_path / "out"), "--mapping", str(mapping)]) == 2
    err = capsys.readouterr().err
    assert str(mapping) in err and named in err
    assert not (tmp_path / "out").exists()


def test_task_flags_map_dataset_tasks_to_sop_tasks(dataset, tmp_path):
    import pyarrow.parquet as pq

    from sop_ros.core.episodes.episode_file import read_episode

    path = dataset / "meta/episodes/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["task_id"]), path)
    out = tmp_path / "out"
    args = ["dataset", "import", str(dataset), str(out), "--task", "push it=push-v3", "--task", "reach it=reach-v3"]
    assert main(args) == 0
    assert sorted((e.instruction, e.task_id) for e in map(read_episode, out.glob("*.mcap"))) == [
        ("push it", "push-v3"),
        ("reach it", "reach-v3"),
    ]
    assert main(["dataset", "import", str(dataset), str(tmp_path / "o2"), "--task", "no-equals-sign"]) == 2


def test_export_of_a_learner_data_dir_names_its_stores(tmp_path, capsys):
    from sop_ros.core.storage.episode_store import EpisodeStore

    with EpisodeStore(tmp_path / "learner/episodes"), EpisodeStore(tmp_path / "learner/offline"):
        pass
    assert main(["dataset", "export", str(tmp_path / "learner"), str(tmp_path / "out")]) == 2
    assert "export one of its stores: ['episodes', 'offline']" in capsys.readouterr().err
