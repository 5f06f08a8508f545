"""`sop pretrain`: BC on real demo episodes publishes the base policy as v1 (and the stopping rule)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from sop_ros.backends.metaworld_sim import make_backend
from sop_ros.bench.synthetic_episodes import synthetic_episode
from sop_ros.cli import main
from sop_ros.core.episodes.episode_file import write_episode
from sop_ros.core.evaluation.harness import EvalReport, TaskResult, wilson_interval
from sop_ros.core.model import VLAPolicy, preset, shared_instruction_encoder
from sop_ros.core.robot.tasks import TaskSpec
from sop_ros.core.storage.checkpoint_store import CheckpointStore
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.core.training.demo_recording import DemoJob, DemoSettings, collect_demos
from sop_ros.core.training.pretrain import (
    PretrainConfig,
    PretrainError,
    episode_files,
    ingest_episode_files,
    make_bc_trainer,
    pretrain,
)
from sop_ros.core.training.trainer import TrainerConfig

pytestmark = pytest.mark.timeout(240)

# Short episodes keep the test CI-sized: real MetaWorld scenes and expert actions, 12 steps each.
TINY_TASKS = {
    "button-press-topdown-v3": TaskSpec("button-press-topdown-v3", "press the button down from above", 12),
    "push-v3": TaskSpec("push-v3", "push the puck to the green goal", 12),
}


@pytest.fixture(scope="module")
def tiny_demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    jobs = [DemoJob(t, seed) for t in TINY_TASKS for seed in range(2)]
    # 12 steps is too short for the expert to succeed, so the (real) demos are kept as failures.
    results = collect_demos(
        lambda: make_backend(TINY_TASKS),
        jobs,
        DemoSettings(str(out), "sim-demo", 4, 0.0, keep_failures=True),
        workers=1,
    )
    assert all(r.path for r in results)
    return out


def test_sop_pretrain_publishes_v1_that_loads_and_acts(tiny_demos, tmp_path):
    tasks_file = tmp_path / "tasks.yaml"
    tasks_file.write_text(
        yaml.safe_dump(
            {"tasks": {t: {"instruction": s.instruction, "max_steps": s.max_steps} for t, s in TINY_TASKS.items()}}
        )
    )
    out = tmp_path / "learner"
    summary = tmp_path / "summary.json"
    argv = [
        "pretrain",
        "--demos",
        str(tiny_demos),
        "--data-dir",
        str(out),
        "--tasks-file",
        str(tasks_file),
        "--max-updates",
        "4",
        "--eval-every-updates",
        "2",
        "--eval-episodes",
        "1",
        "--patience",
        "5",
        "--batch-size",
        "8",
        "--workers",
        "1",
        "--torch-threads",
        "1",
        "--json",
        str(summary),
    ]
    assert main(argv) == 0

    store = CheckpointStore(out / "checkpoints")
    assert store.versions() == [1]
    manifest = store.get(1)
    assert manifest.algorithm == "bc" and manifest.parent_version is None
    assert manifest.training_step in (2, 4)  # the update of the best evaluation
    for task in TINY_TASKS:
        success = manifest.metrics[f"eval/{task}/success"]
        assert (
            0.0 <= manifest.metrics[f"eval/{task}/ci_low"] <= success <= manifest.metrics[f"eval/{task}/ci_high"] <= 1.0
        )
        assert manifest.metrics[f"eval/{task}/episodes"] == 1.0
    assert "eval/mean_success" in manifest.metrics and "train/loss" in manifest.metrics
    history = manifest.extra["pretrain"]["history"]
    assert [h["updates"] for h in history] == [2, 4] and manifest.extra["pretrain"]["stop_reason"] == "max_updates"
    assert manifest.extra["pretrain"]["demos"]["episodes_per_task"] == {t: 2 for t in TINY_TASKS}
    assert store.has_train_state(1)  # the online learner resumes optimizer + sampler from v1

    # The demos are the learner's offline buffer now.
    with EpisodeStore(out / "offline") as offline:
        assert offline.task_counts() == {t: 2 for t in TINY_TASKS}

    # The weights rebuild a policy that acts on a real observation.
    policy = VLAPolicy.from_checkpoint_tensors(
        store.load_tensors(1), device="cpu", instruction_encoder=shared_instruction_encoder()
    )
    backend = make_backend(TINY_TASKS)
    try:
        obs = backend.reset("push-v3", 7).as_policy_input()
    finally:
        backend.close()
    chunk = policy.act(obs, TINY_TASKS["push-v3"].instruction)
    assert chunk.shape == (4, 4) and np.isfinite(chunk).all() and np.abs(chunk).max() <= 1.0

    assert json.loads(summary.read_text())["best"]["updates"] == manifest.training_step
    # A second pretrain into the same data dir would not be v1: refused with a clear error.
    assert main(argv) == 2


def _report(successes: dict[str, int], n: int = 4) -> EvalReport:
    return EvalReport(tuple(TaskResult(t, n, s, *wilson_interval(s, n), 10.0) for t, s in successes.items()), ())


def test_stops_on_plateau_and_publishes_the_best_weights_not_the_last(tmp_path):
    with EpisodeStore(tmp_path / "offline", cache_in_background=False) as offline:
        files = [
            write_episode(
                synthetic_episode(
                    20, 16, seed=i, task_id=t, state_dim=4, chunk_len=4, policy_version=0, human_steps=(0, 20)
                ),
                tmp_path / f"{i}.mcap",
            )
            for i, t in enumerate(["push-v3", "push-v3", "reach-v3"])
        ]
        assert len(ingest_episode_files(offline, files)) == 3
        assert len(ingest_episode_files(offline, files)) == 3 and offline.count() == 3  # idempotent
        torch.manual_seed(0)
        policy = VLAPolicy(preset("tiny"), instruction_encoder=shared_instruction_encoder(), device="cpu")
        trainer = make_bc_trainer(offline, policy, TrainerConfig(batch_size=4, learning_rate=1e-3))
        # Success rises, then falls for `patience` evaluations: training stops, the peak is published.
        scripted = iter(
            [
                {"push-v3": 1, "reach-v3": 0},
                {"push-v3": 3, "reach-v3": 1},
                {"push-v3": 2, "reach-v3": 1},
                {"push-v3": 3, "reach-v3": 1},
            ]
        )
        seen = {}

        def evaluate_policy(p):
            seen[trainer.updates] = {k: v.clone() for k, v in p.tensors().items()}
            return _report(next(scripted))

        ckpts = CheckpointStore(tmp_path / "checkpoints")
        result = pretrain(
            trainer, evaluate_policy, ckpts, PretrainConfig(max_seconds=300, eval_every_updates=2, patience=2)
        )
        assert result.stop_reason == "plateau" and result.updates == 8
        assert [p.updates for p in result.history] == [2, 4, 6, 8] and result.best.updates == 4
        manifest = ckpts.get(1)
        assert manifest.training_step == 4 and manifest.metrics["eval/mean_success"] == pytest.approx(0.5)
        assert manifest.metrics["eval/push-v3/success"] == pytest.approx(0.75)
        published = ckpts.load_tensors(1)
        name = "action_head.head.weight"
        torch.testing.assert_close(published[name], seen[4][name])
        assert not torch.equal(published[name], seen[8][name]), "the last weights were published instead of the best"
        # The base must be the first version of the store.
        with pytest.raises(PretrainError, match="already holds"):
            pretrain(
                make_bc_trainer(offline, policy, TrainerConfig(batch_size=4)),
                evaluate_policy,
                ckpts,
                PretrainConfig(max_updates=1),
            )


def test_bad_inputs_are_refused(tmp_path):
    assert episode_files(tmp_path / "missing") == []
    with pytest.raises(PretrainError, match="eval_every_updates"):
        PretrainConfig(eval_every_updates=0)
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"not an episode")
    with EpisodeStore(tmp_path / "offline") as offline:
        with pytest.raises(PretrainError, match="bad.mcap"):
            ingest_episode_files(offline, [bad])
        with pytest.raises(PretrainError, match="no episodes"):
            make_bc_trainer(
                offline,
                VLAPolicy(preset("tiny"), instruction_encoder=shared_instruction_encoder(), device="cpu"),
                TrainerConfig(),
            )
    assert (
        main(["pretrain", "--demos", str(tmp_path), "--data-dir", str(tmp_path / "o"), "--eval-every-updates", "0"])
        == 2
    )


def test_cli_defaults_are_the_core_defaults():
    from sop_ros.cli import build_parser
    from sop_ros.core.training.trainer import TrainerConfig

    args = build_parser().parse_args(["pretrain", "--demos", "d", "--data-dir", "o"])
    stop, trainer = PretrainConfig(), TrainerConfig()
    assert (
        args.max_minutes * 60.0,
        args.eval_every_updates,
        args.patience,
        args.min_improvement,
        args.max_updates,
    ) == (stop.max_seconds, stop.eval_every_updates, stop.patience, stop.min_improvement, stop.max_updates)
    assert (args.batch_size, args.lr, args.seed) == (trainer.batch_size, trainer.learning_rate, trainer.seed)
