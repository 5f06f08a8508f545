"""`sop learner` trains on what the fleet uploads and survives being killed.

A real learner process (gRPC on loopback, stores on disk) starts from a BC base
checkpoint, receives episodes from a real uploader, publishes HG-DAgger checkpoints
that descend from the base, and after SIGKILL + restart continues the same run:
versions and training steps keep increasing (no retraining from scratch).
"""

import signal
import subprocess
import sys

import pytest
import torch
from conftest import REPO, free_port, wait_for

from sop_ros.bench.synthetic_episodes import synthetic_episode
from sop_ros.core.model.config import preset
from sop_ros.core.model.vla import VLAPolicy
from sop_ros.core.storage.checkpoint_store import CheckpointStore
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.core.storage.spool import Spool
from sop_ros.link.channel import LinkClient, LinkClientConfig
from sop_ros.link.uploader import EpisodeUploader

pytestmark = pytest.mark.timeout(400)


def episode(seed, robot_id, source_human, success=True):
    return synthetic_episode(
        num_steps=24,
        image_hw=32,
        seed=seed,
        robot_id=robot_id,
        task_id="push-v3",
        instruction="push the puck",
        state_dim=4,
        chunk_len=4,
        policy_version=1,
        human_steps=source_human,
        success=success,
    )


def start_learner(data_dir, port, *extra):
    cmd = [
        sys.executable,
        "-m",
        "sop_ros.cli",
        "learner",
        "--data-dir",
        str(data_dir),
        "--insecure",
        "--address",
        f"127.0.0.1:{port}",
        "--publish-every-updates",
        "3",
        "--publish-every-s",
        "600",
        "--batch-size",
        "4",
        *extra,
    ]
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def prepare_learner_dir(tmp_path):
    """A learner data dir with two offline demos and a BC base checkpoint v1."""
    data = tmp_path / "learner"
    offline = EpisodeStore(data / "offline")
    for seed in range(2):  # offline prior: a demo per seed, all human (expert) steps
        ep = episode(100 + seed, "demo", (0, 24))
        path = tmp_path / f"demo{seed}.mcap"
        from sop_ros.core.episodes.episode_file import file_sha256, write_episode

        write_episode(ep, path)
        offline.append_staged(ep.episode_id, 0, path.read_bytes())
        offline.commit(ep.episode_id, file_sha256(path), "demo")
    offline.close()
    checkpoints = CheckpointStore(data / "checkpoints")
    base = checkpoints.publish(
        VLAPolicy(preset("tiny"), device="cpu").checkpoint_tensors(),
        algorithm="bc",
        training_step=0,
        metrics={},
        parent_version=None,
    )
    assert base.version == 1
    return data, checkpoints


def test_learner_trains_on_uploads_publishes_and_resumes_after_sigkill(tmp_path):
    torch.set_num_threads(1)
    data, checkpoints = prepare_learner_dir(tmp_path)
    port = free_port()
    # Keep every checkpoint: the learner trains on the offline demos from its start and publishes every 3
    # updates, so by the time the spool has drained (a loaded machine: tens of seconds) the default
    # retention (20) can have pruned v2 and v3, whose parent chain this test reads.
    keep_all = ("--keep-checkpoints", "0")
    learner = start_learner(data, port, *keep_all)
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30)
    for seed in range(3):
        spool.write(episode(seed, "robot1", (5, 12), success=seed != 1))
    link = LinkClient.connect(LinkClientConfig(address=f"127.0.0.1:{port}", insecure=True))
    uploader = EpisodeUploader(link, spool, "robot1")
    try:
        uploader.start()
        wait_for(lambda: len(spool.pending()) == 0, 120, "the spool to drain")
        wait_for(lambda: max(checkpoints.versions()) >= 3, 180, "two HG-DAgger checkpoints")
        learner.send_signal(signal.SIGKILL)
        learner.wait(timeout=30)
        before = {v: checkpoints.get(v) for v in checkpoints.versions()}
        assert all(before[v].algorithm == "hg_dagger" for v in before if v > 1)
        assert before[2].parent_version == 1 and before[3].parent_version == 2
        last_step = max(m.training_step for m in before.values())

        learner = start_learner(data, port, *keep_all)
        wait_for(lambda: max(checkpoints.versions()) > max(before), 180, "a checkpoint after the restart")
        after = checkpoints.get(max(before) + 1)  # the first one the restarted learner published
        assert after.parent_version == max(before)
        assert after.training_step > last_step  # continued from the saved optimiser step count
        assert EpisodeStore(data / "episodes").count() == 3
    finally:
        uploader.stop()
        link.close()
        if learner.poll() is None:
            learner.send_signal(signal.SIGTERM)
            out, _ = learner.communicate(timeout=60)
            assert learner.returncode == 0, out[-3000:]


def test_learner_keeps_only_the_newest_checkpoints_and_the_base(tmp_path):
    data, checkpoints = prepare_learner_dir(tmp_path)
    learner = start_learner(data, free_port(), "--keep-checkpoints", "2")
    try:
        # With no robot data it trains on the offline demos and publishes every 3 updates.
        wait_for(lambda: max(checkpoints.versions()) >= 6, 180, "five checkpoints after the base")
        learner.send_signal(signal.SIGTERM)
        out, _ = learner.communicate(timeout=60)
    finally:
        if learner.poll() is None:
            learner.kill()
    assert learner.returncode == 0, out[-3000:]
    versions = checkpoints.versions()
    newest = max(versions)
    assert versions == [1, newest - 1, newest], versions
    assert sorted(p.name for p in checkpoints.root.iterdir() if p.name.startswith("v")) == [
        f"v{v:06d}" for v in versions
    ]
    assert "pruned" in out


def test_learner_refuses_a_negative_checkpoint_count(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sop_ros.cli",
            "learner",
            "--data-dir",
            str(tmp_path),
            "--insecure",
            "--keep-checkpoints",
            "-1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "keep_checkpoints: must be >= 0" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "checkpoints").exists()


def in_process_settings(data_dir, **training):
    from sop_ros.learner import LearnerSettings
    from sop_ros.link.server import LearnerServerConfig

    server = LearnerServerConfig(address="127.0.0.1:0", insecure=True, expected_robots=1, shutdown_grace_s=1.0)
    return LearnerSettings(data_dir=data_dir, server=server, batch_size=4, torch_threads=1, **training)


def test_a_committed_upload_wakes_the_trainer_without_waiting_for_the_poll(tmp_path):
    """The episode index is re-read only every 1e6 s: the upload's commit alone must bring the episode
    to the trainer, which then trains on it and announces a checkpoint to a watching robot."""
    from sop_ros.learner import LearnerProcess
    from sop_ros.link.protos import policy_pb2

    torch.set_num_threads(1)
    settings = in_process_settings(tmp_path / "learner", publish_every_updates=1, episode_poll_s=1e6)
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30)
    spool.write(episode(0, "robot1", (5, 12)))
    with LearnerProcess(settings) as process:
        wait_for(lambda: process.trainer.source_reads >= 1, 60, "the trainer's first read of the episode index")
        with LinkClient.connect(LinkClientConfig(address=f"127.0.0.1:{process.port}", insecure=True)) as link:
            watch = link.policy.WatchCheckpoints(policy_pb2.WatchCheckpointsRequest(robot_id="robot1"), timeout=120)
            assert EpisodeUploader(link, spool, "robot1").drain(timeout_s=60) == 1
            announcement = next(watch)  # blocks until the trainer publishes (no checkpoint existed before)
            watch.cancel()
        assert process.trainer.buffered_episodes == 1
    assert announcement.checkpoint.version == 1 and not process.training_failed


@pytest.mark.parametrize("offline", ["missing", "not a store", "empty store"])
def test_bc_without_offline_episodes_refuses_to_start_and_says_why(tmp_path, offline):
    from sop_ros.learner import LearnerProcess, NothingToTrainError

    data = tmp_path / "learner"
    if offline == "not a store":
        (data / "offline").mkdir(parents=True)
    elif offline == "empty store":
        EpisodeStore(data / "offline").close()
    process = LearnerProcess(in_process_settings(data, algorithm="bc"))
    with pytest.raises(NothingToTrainError, match="bc trains only on offline data") as raised:
        process.start()
    assert str(data / "offline") in str(raised.value)
    # refused before touching the data dir
    assert not (data / "episodes").exists() and not (data / "checkpoints").exists()


def test_sop_learner_bc_without_demonstrations_exits_with_one_clear_error(tmp_path):
    command = [
        sys.executable,
        "-m",
        "sop_ros.commands.learner",
        "--data-dir",
        str(tmp_path),
        "--insecure",
        "--algorithm",
        "bc",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("nothing to train on") == 1, result.stderr[-2000:]
    assert f"{tmp_path / 'offline'} holds no episode store; bc trains only on offline data" in result.stderr
    assert "--no-train" in result.stderr  # what to do instead


def test_sop_learner_flags_become_settings_with_the_dataclass_defaults(tmp_path, capsys):
    import argparse

    from sop_ros.commands import learner as learner_command
    from sop_ros.commands.errors import CliError
    from sop_ros.learner import LearnerSettings
    from sop_ros.link.server import LearnerServerConfig

    parser = argparse.ArgumentParser()
    learner_command.add_arguments(parser)

    def settings(*flags):
        return learner_command.settings_from_args(parser.parse_args(["--data-dir", str(tmp_path), *flags]))

    assert settings("--insecure") == LearnerSettings(data_dir=tmp_path, server=LearnerServerConfig(insecure=True))
    tuned = settings(
        "--insecure",
        "--lr",
        "1e-3",
        "--batch-size",
        "8",
        "--address",
        "127.0.0.1:6000",
        "--no-train",
        "--ema-decay",
        "0.9",
    )
    assert (tuned.learning_rate, tuned.batch_size, tuned.train) == (1e-3, 8, False)
    assert tuned.trainer_config().ema_decay == 0.9
    assert tuned.server.address == "127.0.0.1:6000"
    with pytest.raises(SystemExit):  # one spelling: --lr, as `sop pretrain`
        parser.parse_args(["--data-dir", str(tmp_path), "--learning-rate", "1e-3"])
    assert "unrecognized arguments: --learning-rate" in capsys.readouterr().err

    config = tmp_path / "learner.yaml"
    config.write_text("insecure: true\nexpected_robots: 3\nshutdown_grace_s: 4\ncompatibility: {tasks: [push-v3]}\n")
    from_yaml = settings("--config", str(config), "--robots", "5")  # flags on top of the file
    assert (from_yaml.server.expected_robots, from_yaml.server.shutdown_grace_s) == (5, 4)
    assert from_yaml.server.compatibility.tasks == frozenset({"push-v3"})
    config.write_text("insecure: true\nlearning_rate: 0.1\n")
    with pytest.raises(CliError, match="unknown LearnerServerConfig keys \\['learning_rate'\\]"):
        settings("--config", str(config))


def test_the_learner_admits_only_episodes_its_model_and_fleet_take(tmp_path):
    import dataclasses

    from sop_ros.core.robot.tasks import load_task_specs
    from sop_ros.learner.process import episode_admission
    from sop_ros.learner.settings import LearnerSettings
    from sop_ros.link.server import LearnerServerConfig
    from sop_ros.resources import default_tasks_path

    settings = LearnerSettings(data_dir=tmp_path / "learner", server=LearnerServerConfig(insecure=True))
    default_tasks = frozenset(load_task_specs(default_tasks_path()))
    # Training from scratch: the preset's shapes.
    limits, tasks = episode_admission(settings)
    assert (limits.state_dim, limits.action_dim) == (preset("tiny").state_dim, preset("tiny").action_dim)
    assert tasks == default_tasks
    # Serving only, without a checkpoint: any shape within the bounds.
    limits, _ = episode_admission(dataclasses.replace(settings, train=False))
    assert limits.state_dim is None and limits.action_dim is None
    # With a checkpoint: its model's shapes, trained or not.
    model = dataclasses.replace(preset("tiny"), state_dim=7)
    policy = VLAPolicy(model, device="cpu")
    CheckpointStore(settings.data_dir / "checkpoints").publish(
        policy.checkpoint_tensors(), algorithm="bc", training_step=1, metrics={}, parent_version=None
    )
    for train in (True, False):
        limits, _ = episode_admission(dataclasses.replace(settings, train=train))
        assert limits.state_dim == 7
    tasks_file = tmp_path / "tasks.yaml"
    tasks_file.write_text("tasks:\n  reach-v3:\n    instruction: reach the goal\n    max_steps: 50\n")
    assert episode_admission(dataclasses.replace(settings, tasks_file=tasks_file))[1] == {"reach-v3"}


def test_the_learner_removes_abandoned_uploads_at_start_up(tmp_path):
    import os
    import time
    import uuid

    from sop_ros.learner.process import LearnerProcess
    from sop_ros.learner.settings import LearnerSettings
    from sop_ros.link.server import LearnerServerConfig

    data_dir = tmp_path / "learner"
    with EpisodeStore(data_dir / "episodes") as store:
        old, fresh = str(uuid.uuid4()), str(uuid.uuid4())
        for episode_id in (old, fresh):
            store.append_staged(episode_id, 0, b"partial upload")
            store.sync_staged(episode_id)
        two_hours_ago = time.time() - 7200
        os.utime(store.staging_path(old), (two_hours_ago, two_hours_ago))
    server = LearnerServerConfig(address="127.0.0.1:0", insecure=True, stale_staging_s=3600.0)
    with LearnerProcess(LearnerSettings(data_dir=data_dir, server=server, train=False)) as learner:
        store = learner.service.episode_store
        wait_for(lambda: store.staged_offset(old) == 0, 20, "the abandoned upload to be removed")
        assert store.staged_offset(fresh) == len(b"partial upload")
