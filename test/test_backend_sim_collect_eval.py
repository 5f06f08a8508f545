"""`sop collect` writes valid expert-demo episode files; `sop eval` reports per-task success with CIs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sop_ros.backends.metaworld_sim import make_backend
from sop_ros.cli import main
from sop_ros.core.episodes.episode import Actor, LabelSource
from sop_ros.core.episodes.episode_file import read_episode
from sop_ros.core.robot.tasks import TaskSpec, load_task_specs
from sop_ros.core.training.demo_recording import DemoJob, DemoSettings, record_demo
from sop_ros.resources import default_tasks_path

pytestmark = pytest.mark.timeout(180)

TASKS = load_task_specs(default_tasks_path())


def test_collect_writes_valid_demo_episodes(tmp_path):
    out = tmp_path / "offline"
    rc = main(
        [
            "collect",
            "--out",
            str(out),
            "--tasks",
            "push-v3",
            "--episodes-per-task",
            "1",
            "--workers",
            "1",
            "--seed",
            "40",
        ]
    )
    assert rc == 0
    files = sorted(out.glob("*.mcap"))
    assert len(files) == 1
    episodes = {ep.task_id: ep for ep in map(read_episode, files)}
    assert set(episodes) == {"push-v3"}
    for task_id, ep in episodes.items():
        assert ep.success is True and ep.label_source == LabelSource.ENVIRONMENT
        assert ep.instruction == TASKS[task_id].instruction and ep.robot_id == "sim-demo"
        assert (ep.actors == Actor.HUMAN).all() and (ep.policy_versions == 0).all()
        assert ep.images.shape[1:] == (64, 64, 3) and ep.images.std() > 10
        assert ep.states.shape[1] == 4 and ep.actions.shape[1] == 4
        assert np.isnan(ep.proposed_chunks).all() and ep.proposed_chunks.shape[1:] == (4, 4)
        assert 20 < ep.num_steps < TASKS[task_id].max_steps
        assert np.abs(ep.actions).max() <= 1.0
    # Same seed -> same scene: the recorded first state and image are reproducible.
    backend = make_backend(TASKS)
    try:
        obs = backend.reset("push-v3", 40)
        np.testing.assert_array_equal(obs.image, episodes["push-v3"].images[0])
        np.testing.assert_allclose(obs.state, episodes["push-v3"].states[0])
    finally:
        backend.close()


def test_failed_demos_are_dropped_unless_kept(tmp_path):
    backend = make_backend({"push-v3": TaskSpec("push-v3", "push", 10)}, render=False)
    try:
        dropped = record_demo(
            backend, DemoJob("push-v3", 1), DemoSettings(str(tmp_path), "r", 4, 0.0, keep_failures=False)
        )
        assert dropped.path is None and not dropped.success and dropped.steps == 10
        assert not list(tmp_path.iterdir())
        kept = record_demo(backend, DemoJob("push-v3", 1), DemoSettings(str(tmp_path), "r", 4, 0.1, keep_failures=True))
        ep = read_episode(kept.path)
        assert ep.success is False and ep.num_steps == 10
        clean = record_demo(
            backend, DemoJob("push-v3", 1), DemoSettings(str(tmp_path), "r", 4, 0.0, keep_failures=True)
        )
        assert not np.allclose(read_episode(clean.path).actions, ep.actions), "action noise had no effect"
    finally:
        backend.close()


def test_eval_command_json_and_errors(tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = main(
        ["eval", "random", "--tasks", "push-v3", "--episodes-per-task", "1", "--workers", "1", "--json", str(out)]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    push = report["tasks"]["push-v3"]
    assert push["success_rate"] == 0.0 and push["episodes"] == 1 and push["ci_high"] > 0.5
    assert report["episodes"][0]["seed"] == 1_000_000 and report["episodes"][0]["steps"] == TASKS["push-v3"].max_steps
    assert "push-v3" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "missing.safetensors")]) == 2
    (tmp_path / "v000001").mkdir()
    assert main(["eval", str(tmp_path / "v000001")]) == 2
    assert main(["eval", "expert", "--tasks", "nope-v3"]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_a_cli_run_shows_no_metaworld_warnings(tmp_path):
    from conftest import sop_cli

    # The scripted expert's "Constant(s) may be too high" came once per clipped step, in every worker.
    result = sop_cli(
        "collect",
        "--out",
        str(tmp_path / "demos"),
        "--tasks",
        "push-v3",
        "--episodes-per-task",
        "2",
        "--workers",
        "1",
        timeout=170,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Constant(s) may be too high" not in result.stderr + result.stdout
    assert "Warning" not in result.stderr
