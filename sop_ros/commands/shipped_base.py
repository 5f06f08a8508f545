"""The base policy shipped with the package (sop_ros/base_policy/), installed as v1 of a learner data dir.

`sop demo` and `sop experiment` start from it instead of training one (`sop pretrain`: 10-16 min on
2 CPU cores). The online learner still needs the offline buffer (HG-DAgger mixes the demos into every
batch), so `sop pretrain`'s default demos are collected (about 10 s) and ingested into <data-dir>/offline
exactly as `sop pretrain` does; then the shipped weights, after their sha256 is checked against the
shipped manifest, are published as checkpoint v1 through the checkpoint store.

The shipped weights are retrained whenever the default model config changes: installing refuses a base
whose config differs from `sop pretrain`'s default preset (test/test_shipped_base_policy.py fails too).
How it was made and how to replace it: sop_ros/base_policy/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from sop_ros.commands import pretrain
from sop_ros.commands.errors import CliError
from sop_ros.core.storage.checkpoint_files import CheckpointIntegrityError, load_verified
from sop_ros.core.storage.checkpoint_store import MANIFEST_FILE, WEIGHTS_FILE, CheckpointManifest, CheckpointStore
from sop_ros.core.storage.data_layout import CHECKPOINTS_DIR, OFFLINE_DIR
from sop_ros.resources import shipped_base_policy_dir

EVALUATION_FILE = "evaluation.json"  # `sop eval --json` of the shipped weights on the test scenes
RETRAIN_HINT = "retrain and replace it as sop_ros/base_policy/README.md says, or train one with `sop demo --train-base`"


def pretrain_args(demos_dir: Path, data_dir: Path, *options: str) -> argparse.Namespace:
    """`sop pretrain`'s arguments with its defaults (the one source of the demo budget and model preset)."""
    parser = argparse.ArgumentParser(prog="sop")
    pretrain.add_parser(parser.add_subparsers())
    return parser.parse_args(["pretrain", "--demos", str(demos_dir), "--data-dir", str(data_dir), *options])


def shipped_manifest(shipped_dir: Path | None = None) -> CheckpointManifest:
    path = (shipped_dir or shipped_base_policy_dir()) / MANIFEST_FILE
    try:
        return CheckpointManifest.from_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CliError(f"shipped base policy: unreadable manifest {path}: {exc}") from None


def verified_shipped_tensors(shipped_dir: Path | None = None) -> tuple[CheckpointManifest, dict]:
    """The shipped manifest and weights, after checking the weights' sha256 and model config."""
    from sop_ros.core.model.vla import CONFIG_TENSOR_KEY, config_from_tensor

    shipped_dir = shipped_dir or shipped_base_policy_dir()
    manifest = shipped_manifest(shipped_dir)
    try:  # one read: the bytes whose hash was checked are the bytes loaded
        tensors = dict(load_verified(shipped_dir / WEIGHTS_FILE, manifest.content_hash))
    except CheckpointIntegrityError as exc:
        raise CliError(f"refusing the shipped base policy: {exc}; reinstall the package or {RETRAIN_HINT}") from None
    preset_name, config = default_model_config()
    if config_from_tensor(tensors[CONFIG_TENSOR_KEY]) != config:
        raise CliError(
            f"the shipped base policy ({shipped_dir}) was trained with another model config than the default "
            f"preset '{preset_name}'; {RETRAIN_HINT}"
        )
    return manifest, tensors


def default_model_config():
    """(name, VLAConfig) of the preset `sop pretrain` trains by default: the one the shipped base must have."""
    from sop_ros.core.model import preset

    name = pretrain_args(Path("demos"), Path("data")).preset
    return name, preset(name)


def success_summary(shipped_dir: Path | None = None) -> str:
    """Per-task success of the shipped weights on `sop eval`'s test scenes, from evaluation.json."""
    path = (shipped_dir or shipped_base_policy_dir()) / EVALUATION_FILE
    try:
        tasks = json.loads(path.read_text())["tasks"].values()
        per_task = ", ".join(f"{t['task_id']} {t['success_rate']:.2f}" for t in tasks)
        return f"success {per_task} on {min(t['episodes'] for t in tasks)} test scenes per task"
    except (OSError, ValueError, KeyError, TypeError):
        return f"no evaluation in {path}"


def _collect_demos_atomically(args: argparse.Namespace, specs) -> None:
    """`sop pretrain`'s demo collection into a temp dir renamed when complete: an interrupted run leaves no half set."""
    from sop_ros.core.training.pretrain import episode_files

    demos_dir = Path(args.demos)
    if episode_files(demos_dir):
        return
    if demos_dir.exists():  # made by the user, maybe with other files: collect in place, as `sop pretrain` does
        pretrain.collect_demos_if_empty(args, specs)
        return
    partial = demos_dir.with_name(demos_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pretrain.collect_demos_if_empty(argparse.Namespace(**{**vars(args), "demos": partial}), specs)
    demos_dir.parent.mkdir(parents=True, exist_ok=True)
    os.rename(partial, demos_dir)


def install_shipped_base(
    data_dir: Path, demos_dir: Path, demos_per_task: int | None = None, shipped_dir: Path | None = None
) -> CheckpointManifest:
    """Fill an empty learner data dir: default demos into <data_dir>/offline, the shipped weights as v1."""
    from sop_ros.commands.collect import select_tasks
    from sop_ros.core.storage.episode_store import EpisodeStore
    from sop_ros.core.training.pretrain import episode_files

    checkpoints = CheckpointStore(data_dir / CHECKPOINTS_DIR)
    if checkpoints.versions():
        raise CliError(f"{checkpoints.root} already holds checkpoints; the shipped base can only be v1")
    manifest, tensors = verified_shipped_tensors(shipped_dir)  # before collecting: a bad file fails at once
    options = ["--demos-per-task", str(demos_per_task)] if demos_per_task else []
    args = pretrain_args(demos_dir, data_dir, *options)
    specs = select_tasks(None, args.tasks_file)
    _collect_demos_atomically(args, specs)
    files = episode_files(demos_dir)
    if not files:
        raise CliError(f"{demos_dir}: no demo episode files after collecting; the learner needs its offline buffer")
    with EpisodeStore(data_dir / OFFLINE_DIR, cache_in_background=False) as offline:
        demos = pretrain.ingest_demos(offline, files, specs)
    shipped_from = {"dir": str(shipped_dir or shipped_base_policy_dir()), "created_ns": manifest.created_ns}
    return checkpoints.publish(
        tensors,
        algorithm=manifest.algorithm,
        training_step=manifest.training_step,
        metrics=manifest.metrics,
        parent_version=None,
        fleet=manifest.fleet,
        extra={**manifest.extra, "shipped_base": shipped_from, "offline_demos": demos.counts},
    )
