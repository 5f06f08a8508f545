"""The virtual-clock fleet loop (sop_ros.experiment.virtual_clock) on real parts: MetaWorld robots with the
policy runner, scripted operator, action mux and episode assembly, the learner's stores and ContinuousTrainer.

A tiny run (2 robots, 1 task, 10-step episodes, 4.1 simulated seconds) is made three times: twice with the same
seed (the second on an artificially slowed machine) and once with one robot."""

import dataclasses
import time
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from sop_ros.core.episodes.episode import Actor
from sop_ros.core.model import VLAPolicy, preset
from sop_ros.core.robot.tasks import TaskSpec
from sop_ros.core.storage.checkpoint_store import CheckpointStore
from sop_ros.core.storage.data_layout import CHECKPOINTS_DIR, EPISODES_DIR
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.core.training.trainer import ContinuousTrainer
from sop_ros.experiment.fleet_run import LEARNER_DIR, prepare_run_dir
from sop_ros.experiment.virtual_clock import VirtualFleetConfig, load_virtual_record, run_virtual_fleet
from sop_ros.experiment.virtual_learner import exact_rate, update_done_ns, updates_due

pytestmark = pytest.mark.timeout(240)

TASK = TaskSpec("reach-v3", "reach the goal", 10)
# 2.5 updates per simulated second for 4.1 s: floor(10.25) = 10 updates. Publishing only by simulated
# time (publish_every_updates out of reach): every >= 1.0 simulated s, i.e. after updates 3, 6 and 9.
CONFIG = VirtualFleetConfig(
    robots=2,
    tasks=(TASK,),
    duration_s=4.1,
    seed=3,
    learner_updates_per_s=2.5,
    publish_every_updates=1000,
    publish_every_s=1.0,
    batch_size=8,
    checkpoint_delay_s=0.5,
)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A learner data dir as `sop pretrain` leaves it: a tiny VLA base v1 (bc) and an offline demo store."""
    from test_experiment_orchestration import ingest, make_episode

    root = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    policy = VLAPolicy(preset("tiny"), device="cpu")
    CheckpointStore(root / CHECKPOINTS_DIR).publish(
        policy.checkpoint_tensors(), algorithm="bc", training_step=100, metrics={}, parent_version=None
    )
    with EpisodeStore(root / "offline", cache_in_background=False) as offline:
        for i in range(2):
            ingest(offline, make_episode(TASK.task_id, 12, [Actor.HUMAN], True, seed=i), root)
    for f in root.glob("*.mcap"):
        f.unlink()
    return root


@dataclasses.dataclass(frozen=True)
class Outcome:
    run_dir: Path
    record: object
    episodes: tuple  # (episode_id, content_hash, policy_version_max, success) in ingest order
    checkpoints: tuple  # (version, content_hash, training_step)


def _run(base_dir: Path, run_dir: Path, config: VirtualFleetConfig) -> Outcome:
    prepare_run_dir(base_dir, run_dir)
    record = run_virtual_fleet(config, run_dir)
    learner = run_dir / LEARNER_DIR
    with EpisodeStore(learner / EPISODES_DIR, cache_in_background=False) as store:
        rows = store.query()
    episodes = tuple((r.episode_id, r.content_hash, r.policy_version_max, r.success) for r in rows)
    store = CheckpointStore(learner / CHECKPOINTS_DIR)
    checkpoints = tuple((m.version, m.content_hash, m.training_step) for m in map(store.get, store.versions()))
    return Outcome(run_dir, record, episodes, checkpoints)


@pytest.fixture(scope="module")
def first(base_dir, tmp_path_factory):
    return _run(base_dir, tmp_path_factory.mktemp("first") / "run", CONFIG)


def test_updates_due_is_floor_of_time_times_rate_exactly():
    rate = Fraction(2.5)
    assert updates_due(4_100_000_000, rate) == 10
    assert updates_due(399_999_999, rate) == 0 and updates_due(400_000_000, rate) == 1
    assert [update_done_ns(i, rate) for i in (1, 3, 10)] == [400_000_000, 1_200_000_000, 4_000_000_000]
    assert updates_due(10_000_000_000, exact_rate(2.3)) == 23  # the decimal rate, not the float below it


def test_a_run_collects_episodes_trains_and_delivers_checkpoints_on_simulated_time(first: Outcome):
    record = first.record
    assert record.learner_updates == 10 and record.idle_updates == 0
    # Publishing follows simulated time only: every 1.0 simulated s -> after updates 3, 6 and 9, each
    # published the moment its update completed and available to the robots 0.5 s later.
    new = record.checkpoints[1:]
    assert [c.training_step for c in new] == [3, 6, 9]
    assert [c.published_ns for c in new] == [update_done_ns(s, Fraction(2.5)) for s in (3, 6, 9)]
    assert all(c.available_ns == c.published_ns + 500_000_000 for c in new)
    assert [c[1] for c in first.checkpoints] == [c.content_hash for c in record.checkpoints]
    # Both robots finished 10-step episodes; a checkpoint published during the run drove some of them.
    assert [r.robot_id for r in record.robots] == ["robot1", "robot2"]
    assert all(r.episodes >= 2 and r.steps == 10 * r.episodes for r in record.robots)
    assert record.episodes == len(first.episodes) and record.successes == sum(bool(e[3]) for e in first.episodes)
    assert max(e[2] for e in first.episodes) >= 2
    assert load_virtual_record(first.run_dir) == record


def test_the_same_seed_gives_the_same_run_bit_for_bit_even_on_a_slower_machine(
    first: Outcome, base_dir, tmp_path_factory, monkeypatch
):
    # Every update takes 30 ms longer on the wall clock: a loaded machine. Nothing simulated may change.
    step, slowed = ContinuousTrainer.step, []

    def slow_step(self):
        time.sleep(0.03)
        slowed.append(self.updates)
        return step(self)

    monkeypatch.setattr(ContinuousTrainer, "step", slow_step)
    second = _run(base_dir, tmp_path_factory.mktemp("second") / "run", CONFIG)
    assert second.episodes == first.episodes  # ids, content hashes, policy versions, success labels
    assert second.checkpoints == first.checkpoints
    assert second.record.robots == first.record.robots  # episodes, successes, human and total steps per robot
    assert second.record.checkpoints == first.record.checkpoints  # versions, hashes, simulated publish times
    assert len(slowed) == 10  # every update ran slowed


def test_the_fleet_shares_one_update_budget(first: Outcome, base_dir, tmp_path_factory):
    alone = _run(base_dir, tmp_path_factory.mktemp("alone") / "run", dataclasses.replace(CONFIG, robots=1))
    assert alone.record.learner_updates == first.record.learner_updates == 10  # floor(4.1 s * 2.5 / s)
    assert alone.record.episodes < first.record.episodes  # two robots: twice the data, not twice the compute
    # Robot 1's first episode (before any new checkpoint) is the same either way: its scene seed and id
    # derive from (run seed, robot index, episode index), not from the fleet around it.
    assert alone.episodes[0][:2] == first.episodes[0][:2]


def _experiment_config(base_dir, tmp_path, task, **overrides):
    """The tiny experiment of this module: one task, 4.1 simulated s at 2.5 updates per simulated s, 1 episode evals."""
    from sop_ros.experiment.runner import ExperimentConfig

    values = dict(duration_s=4.1, robot_hz=10.0, eval_episodes=1, curve_eval_episodes=1, learner_updates_per_s=2.5)
    return ExperimentConfig(
        out_dir=tmp_path / "out", base_dir=base_dir, tasks={task.task_id: task}, **values | overrides
    )


def test_sop_experiment_builds_its_run_result_on_the_virtual_clock(base_dir, tmp_path):
    from sop_ros.experiment.checkpoint_eval import CheckpointEvaluator
    from sop_ros.experiment.plan import RunSpec
    from sop_ros.experiment.runner import execute_run

    config = _experiment_config(base_dir, tmp_path, TASK, curve_points=2, publish_every_updates=3)
    assert config.clock == "virtual"  # the default
    evaluator = CheckpointEvaluator(config.tasks, tmp_path / "eval_cache.json")
    result = execute_run(RunSpec("sop_hg_dagger", 0, 1, ("comparison",)), config, evaluator, {})
    assert result.start_ns == 0 and result.duration_s == 4.1 and result.fleet["clock"] == "virtual"
    assert result.learner_updates == 10
    # Published after updates 3, 6, 9: at 1.2, 2.4 and 3.6 simulated seconds.
    assert [(c["version"], c["training_step"]) for c in result.checkpoints] == [(2, 3), (3, 6), (4, 9)]
    assert [c["created_s"] for c in result.checkpoints] == pytest.approx([1.2, 2.4, 3.6])
    # The curve evaluates the checkpoint published by each simulated time point.
    assert [(p.t_s, p.version) for p in result.curve] == [(0.0, 1), (2.05, 2), (4.1, 4)]
    assert result.final_version == 4
    assert result.online_totals["episodes"] == 3
    # The report says which clock its fleet time is on.
    from sop_ros.experiment.results import markdown_report, summary

    report = markdown_report(summary([result], 0.9, 10.0, 1, 4.1, {}))
    assert "min of fleet time (simulated: virtual clock)" in report
    # `sop experiment --quick`'s check: the same fleet again agrees bit for bit; a different one is caught.
    from sop_ros.experiment.determinism import check_determinism

    same = check_determinism(RunSpec("sop_hg_dagger", 0, 1, ("comparison",)), config)
    assert same.identical and same.episodes == 3 and same.checkpoints_compared >= 2
    shorter = check_determinism(
        RunSpec("sop_hg_dagger", 0, 1, ("comparison",)), dataclasses.replace(config, duration_s=2.0)
    )
    assert not shorter.identical and "episodes differ" in shorter.difference


def test_sop_experiment_takes_the_clock_and_the_learner_rate(capsys):
    from sop_ros.cli import main as sop_main

    assert sop_main(["experiment", "--dry-run", "--seeds", "1", "--robots", "2", "--skip-scaling"]) == 0
    assert "simulated min each, the learner at 8 updates/s" in capsys.readouterr().out  # virtual by default
    dry_wall = ["experiment", "--dry-run", "--seeds", "1", "--skip-scaling", "--clock", "wall", "--duration-min", "6"]
    assert sop_main(dry_wall) == 0
    assert "6 min each: at least" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse's choices
        sop_main(["experiment", "--dry-run", "--clock", "lunar"])
    assert sop_main(["experiment", "--dry-run", "--learner-updates-per-s", "0"]) == 2
    assert sop_main(["experiment", "--dry-run", "--ema-decay", "1"]) == 2


def test_the_virtual_learner_averages_weights_as_sop_learner_does(tmp_path):
    from sop_ros.core.robot.tasks import load_task_specs
    from sop_ros.experiment.virtual_clock import VirtualFleetConfig
    from sop_ros.resources import default_tasks_path

    tasks = tuple(load_task_specs(default_tasks_path()).values())[:1]
    config = VirtualFleetConfig(robots=1, tasks=tasks, duration_s=1.0, ema_decay=0.99)
    assert config.learner_settings(tmp_path).trainer_config().ema_decay == 0.99


def test_a_virtual_robot_hands_control_back_as_the_mux_does(base_dir, tmp_path):
    """The operator takes over on a stall and hands back after one step of progress; the mux then waits out
    human_timeout_s before the policy acts again, and the arm waits with it (no step on those ticks)."""
    from conftest import operator_rule

    from sop_ros.core.episodes.episode_file import read_episode
    from sop_ros.core.robot.policy_runner import load_checkpoint
    from sop_ros.experiment.virtual_robot import VirtualRobot

    task = dataclasses.replace(TASK, max_steps=30)
    rule = operator_rule(stall_steps=3, deviation_steps=0, recovery_steps=0, handback_progress_steps=1)
    config = dataclasses.replace(
        dataclasses.replace(CONFIG, tasks=(task,)).robot_config(0), operator=rule, reset_pause_ns=0
    )
    store = CheckpointStore(base_dir / CHECKPOINTS_DIR)
    base = store.get(1)
    robot = VirtualRobot(config, tmp_path / "spool", (4, 4))
    try:
        robot.offer(load_checkpoint(store.weights_path(1), base.content_hash, 1))
        entries = [robot.tick(k * config.period_ns) for k in range(60)]
    finally:
        robot.close()
    episode = read_episode(next(e for e in entries if e is not None).path)
    assert episode.num_steps == 30 and episode.success is False
    actors = episode.actors.tolist()
    segments = episode.intervention_segments
    assert segments and all(s.reason.startswith("no progress") for s in segments)
    gaps = [int(b - a) // config.period_ns for a, b in zip(episode.stamps_ns, episode.stamps_ns[1:])]
    for t in range(1, 29):
        handed_back = actors[t - 1] == Actor.HUMAN and actors[t] == Actor.POLICY
        # A step's observation comes one period after the previous one; the first policy step after a hand-back
        # is executed only once human_timeout_s (0.25 s) has passed since the last human command: two ticks later.
        assert gaps[t] == (3 if handed_back else 1), (t, actors, gaps)
    assert gaps[0] == 1 and 3 in gaps  # at least one hand-back happened
    assert any(a == Actor.HUMAN for a in actors) and actors[0] == Actor.POLICY
    human = episode.actors == Actor.HUMAN
    assert torch.isnan(torch.from_numpy(episode.proposed_chunks[human])).all()
    assert not torch.isnan(torch.from_numpy(episode.proposed_chunks[~human])).any()


def test_more_demos_spends_the_budget_runs_human_steps_on_fresh_expert_demos(base_dir, tmp_path):
    from sop_ros.experiment.checkpoint_eval import CheckpointEvaluator
    from sop_ros.experiment.demo_baselines import add_expert_demos
    from sop_ros.experiment.plan import RunSpec
    from sop_ros.experiment.results import RunResult
    from sop_ros.experiment.runner import RunError, execute_run

    task = TaskSpec(TASK.task_id, TASK.instruction, 100)  # room for the expert to succeed
    config = _experiment_config(base_dir, tmp_path, task)
    evaluator = CheckpointEvaluator(config.tasks, tmp_path / "eval_cache.json")
    run = RunSpec("more_demos", 0, 0, ("comparison",), budget_robots=1)
    with pytest.raises(RunError, match="human-controlled steps of sop_hg_dagger-r1-s0"):
        execute_run(run, config, evaluator, {})
    assert not config.run_dir(run).exists()  # refused before recording anything
    budget = RunResult(
        name="sop_hg_dagger-r1-s0",
        method="sop_hg_dagger",
        seed=0,
        robots=1,
        groups=("comparison",),
        duration_s=4.1,
        final_version=2,
        final_success=0.0,
        final_per_task={task.task_id: 0.0},
        eval_episodes_per_task=1,
        learner_updates=3,
        online_totals={"human_steps": 25},
    )
    result = execute_run(run, config, evaluator, {budget.name: budget})
    # Demos until their steps reach the budget run's 25 human steps: then no further demo starts.
    assert 25 <= result.demo_steps < 25 + task.max_steps and result.demos_added >= 1
    assert result.offline_updates == 3 and result.final_version == 2
    with EpisodeStore(config.run_dir(run) / LEARNER_DIR / "offline", cache_in_background=False) as offline:
        rows = offline.query()
    assert len(rows) == 2 + result.demos_added and all(r.success for r in rows)
    assert not (config.run_dir(run) / "extra_demos").exists()  # staged files are gone once ingested

    # The ceiling's per-task count; the same scene seeds give the same demos.
    a, b = prepare_run_dir(base_dir, tmp_path / "a"), prepare_run_dir(base_dir, tmp_path / "b")
    demos = [add_expert_demos(config.tasks, d.parent, d, run_seed=1, per_task=2) for d in (a, b)]
    assert demos[0] == demos[1] and demos[0].attempts == 2 and demos[0].kept == 2
    frames = []  # episode ids are fresh UUIDs; the recorded states and actions are the scene's
    for d in (a, b):
        with EpisodeStore(d / "offline", cache_in_background=False) as offline:
            arrays = [offline.arrays(r.episode_id) for r in offline.query()]
        frames.append(sorted(x["states"].tobytes() + x["actions"].tobytes() for x in arrays))
    assert frames[0] == frames[1] and len(frames[0]) == 4
