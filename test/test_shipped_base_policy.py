"""The base policy shipped in sop_ros/base_policy/: it loads, matches its manifest and the default model config,
and `sop demo`'s first use installs it as v1 with the offline demos (and refuses a tampered file)."""

from __future__ import annotations

import argparse
import io
import json
import shutil

import pytest
from rich.console import Console

from sop_ros.commands.collect import select_tasks
from sop_ros.commands.demo import ensure_base_policy
from sop_ros.commands.errors import CliError
from sop_ros.commands.shipped_base import (
    EVALUATION_FILE,
    default_model_config,
    install_shipped_base,
    shipped_manifest,
    success_summary,
)
from sop_ros.core.episodes.hashing import file_sha256
from sop_ros.core.model import preset
from sop_ros.core.storage.checkpoint_store import WEIGHTS_FILE, CheckpointStore
from sop_ros.core.storage.data_layout import CHECKPOINTS_DIR, OFFLINE_DIR
from sop_ros.core.storage.episode_store import read_index
from sop_ros.experiment.policy_sources import checkpoint_policy_factory
from sop_ros.resources import shipped_base_policy_dir

pytestmark = pytest.mark.timeout(120)

SHIPPED = shipped_base_policy_dir()
DEFAULT_TASKS = set(select_tasks(None, None))  # config/tasks.yaml: the tasks the shipped base must cover
RETRAIN = (
    "retrain the shipped base and replace it: sop pretrain --demos /tmp/demos --data-dir /tmp/base "
    "--torch-threads 1 --workers 1, then copy /tmp/base/checkpoints/v000001/{model.safetensors,manifest.json} "
    "into sop_ros/base_policy/ (manifest train_state_* set to null), rerun `sop eval sop_ros/base_policy "
    "--episodes-per-task 30 --workers 1 --json sop_ros/base_policy/evaluation.json` and update its README.md "
    "and docs/RESULTS.md ('Shipped base policy')"
)


def test_shipped_weights_match_their_manifest():
    manifest = shipped_manifest()
    assert file_sha256(SHIPPED / WEIGHTS_FILE) == manifest.content_hash
    assert (SHIPPED / WEIGHTS_FILE).stat().st_size == manifest.size_bytes
    assert manifest.version == 1 and manifest.parent_version is None and manifest.algorithm == "bc"
    assert manifest.train_state_sha256 is None, "the trainer state is not shipped; the manifest must not promise it"


def test_shipped_weights_load_with_the_default_model_config():
    policy = checkpoint_policy_factory(str(SHIPPED), "cpu", None)  # as `sop eval sop_ros/base_policy` loads it
    name, default = default_model_config()
    assert policy.config == default, f"the default model config (preset {name!r}) changed: {RETRAIN}"
    assert shipped_manifest().extra["pretrain"]["model_preset"] == name, RETRAIN
    assert set(shipped_manifest().extra["pretrain"]["demos"]["episodes_per_task"]) == DEFAULT_TASKS, RETRAIN


def test_shipped_evaluation_is_recorded():
    report = json.loads((SHIPPED / EVALUATION_FILE).read_text())
    assert report["checkpoint"] == "sop_ros/base_policy" and report["seed"] == 1_000_000
    assert set(report["tasks"]) == DEFAULT_TASKS, f"the default task set changed: {RETRAIN}"
    assert all(t["episodes"] == 30 for t in report["tasks"].values())
    assert success_summary().endswith("on 30 test scenes per task")  # what `sop demo` says on first use


def _demo_args(**overrides) -> argparse.Namespace:
    return argparse.Namespace(**{"train_base": False, "pretrain_minutes": None, "demos_per_task": 1, **overrides})


def test_demo_first_use_installs_the_shipped_base_as_v1(tmp_path):
    data_dir, console = tmp_path / "learner", Console(file=io.StringIO(), width=400)
    ensure_base_policy(data_dir, _demo_args(), console)
    store = CheckpointStore(data_dir / CHECKPOINTS_DIR)
    assert store.versions() == [1]
    installed, shipped = store.get(1), shipped_manifest()
    assert installed.content_hash == shipped.content_hash  # the same bytes, re-published through the store API
    assert installed.parent_version is None and installed.training_step == shipped.training_step
    assert installed.extra["offline_demos"] == dict.fromkeys(DEFAULT_TASKS, 1)
    store.load_tensors(1)  # hash-checked read, as the learner resumes
    assert len(read_index(data_dir / OFFLINE_DIR)) == 3  # one demo per task in the learner's offline buffer
    assert "using the shipped base policy (success " in console.file.getvalue()
    ensure_base_policy(data_dir, _demo_args(), console)  # a no-op now
    assert store.versions() == [1]


def test_a_tampered_shipped_file_is_refused_before_anything_is_collected(tmp_path):
    shipped = tmp_path / "shipped"
    shutil.copytree(SHIPPED, shipped)
    data = bytearray((shipped / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (shipped / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CliError, match="refusing the shipped base policy: .*sha256"):
        install_shipped_base(tmp_path / "learner", tmp_path / "demos", shipped_dir=shipped)
    assert not (tmp_path / "demos").exists() and not CheckpointStore(tmp_path / "learner" / CHECKPOINTS_DIR).versions()


def test_a_base_of_another_model_config_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "sop_ros.commands.shipped_base.default_model_config", lambda: ("tiny", preset("tiny", chunk_size=8))
    )
    with pytest.raises(CliError, match="another model config"):
        install_shipped_base(tmp_path / "learner", tmp_path / "demos")


def test_pretrain_minutes_needs_train_base(tmp_path):
    with pytest.raises(CliError, match="--train-base"):
        ensure_base_policy(tmp_path, _demo_args(pretrain_minutes=1.0), Console(file=io.StringIO()))


def test_train_base_runs_sop_pretrain_instead(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("sop_ros.commands.pretrain.run", lambda args: calls.append(args) or 1)
    with pytest.raises(CliError, match="training the base policy failed"):
        ensure_base_policy(
            tmp_path / "learner", _demo_args(train_base=True, pretrain_minutes=2.0), Console(file=io.StringIO())
        )
    assert [(a.max_minutes, a.demos_per_task, a.data_dir) for a in calls] == [(2.0, 1, tmp_path / "learner")]
    assert not CheckpointStore(tmp_path / "learner" / CHECKPOINTS_DIR).versions()  # nothing shipped was installed


def test_sop_eval_verifies_a_checkpoint_directory_whatever_its_name(tmp_path):
    from sop_ros.experiment.policy_sources import PolicySourceError, resolve_policy_factory

    copy = tmp_path / "my_base"
    shutil.copytree(shipped_base_policy_dir(), copy)
    assert resolve_policy_factory(str(copy), "cpu") is not None
    data = bytearray((copy / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (copy / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(PolicySourceError, match="my_base: checkpoint verification failed"):
        resolve_policy_factory(str(copy), "cpu")
