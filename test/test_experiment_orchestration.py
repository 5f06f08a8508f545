"""`sop experiment`'s orchestration without robots: the plan, fleet.yaml generation, run-dir isolation,
live counts, offline baseline training, cached checkpoint evaluation and result writing, all on real
stores (EpisodeStore, CheckpointStore), real models and a real MetaWorld evaluation."""

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from sop_ros.cli import main as sop_main
from sop_ros.core.episodes.episode import Actor, EpisodeBuilder, LabelSource
from sop_ros.core.episodes.episode_file import write_episode
from sop_ros.core.episodes.hashing import file_sha256
from sop_ros.core.evaluation.fleet_metrics import NS_PER_S, throughput, totals, window_stats
from sop_ros.core.evaluation.harness import evaluate, wilson_interval
from sop_ros.core.robot.tasks import TaskSpec
from sop_ros.core.storage.checkpoint_store import CheckpointIntegrityError, CheckpointStore
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.experiment.checkpoint_eval import CheckpointEvaluator, checkpoints_at
from sop_ros.experiment.fleet_run import (
    FleetRunConfig,
    FleetRunError,
    checkpoint_versions,
    online_seed,
    prepare_run_dir,
    prune_run_dir,
    read_live_counts,
    run_specs,
    write_fleet_yaml,
)
from sop_ros.experiment.offline_training import train_offline
from sop_ros.experiment.plan import PlanError, parse_methods, parse_robot_counts, plan_runs
from sop_ros.experiment.results import CurvePoint, RunResult, load_run_result, save_run_result
from sop_ros.fleet.description import load_fleet
from sop_ros.fleet.specs import NodeSpec, ProcessSpec
from sop_ros.resources import node_defaults

pytestmark = pytest.mark.timeout(180)

TASK = "button-press-topdown-v3"


# ------------------------------------------------------------------------------ helpers


def make_episode(
    task: str, steps: int, actors, success, seed: int, end_ns: int = 0, robot: str = "robot1", version: int = 1
):
    rng = np.random.default_rng(seed)
    b = EpisodeBuilder(robot, task, f"do {task}", chunk_shape=(4, 4))
    for t in range(steps):
        state = rng.uniform(-1, 1, 4).astype(np.float32)
        b.add_step(
            rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            state,
            np.tanh(state),
            actors[t % len(actors)],
            version,
            t + 1,
        )
    return b.close(success, LabelSource.ENVIRONMENT, end_ns or steps + 1)


def ingest(store: EpisodeStore, ep, tmp: Path) -> None:
    path = write_episode(ep, tmp / f"{ep.episode_id}.mcap")
    store.append_staged(ep.episode_id, 0, path.read_bytes())
    store.commit(ep.episode_id, file_sha256(path), ep.robot_id)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A learner data dir as `sop pretrain` leaves it: a tiny VLA base v1 (bc) and an offline demo store."""
    import torch

    from sop_ros.core.model import VLAPolicy, preset

    root = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    policy = VLAPolicy(preset("tiny"), device="cpu")
    CheckpointStore(root / "checkpoints").publish(
        policy.checkpoint_tensors(), algorithm="bc", training_step=100, metrics={}, parent_version=None
    )
    with EpisodeStore(root / "offline", cache_in_background=False) as offline:
        for i in range(2):
            ingest(offline, make_episode(TASK, 12, [Actor.HUMAN], True, seed=i), root)
    for f in root.glob("*.mcap"):
        f.unlink()
    return root


# ------------------------------------------------------------------------------ plan


def test_plan_orders_the_budget_run_first_and_shares_the_comparison_run_with_scaling():
    runs = plan_runs(
        parse_methods("base,sop_hg_dagger,sop_recap,non_sop,offline_only,more_demos,ceiling"),
        seeds=2,
        robots=4,
        scaling=parse_robot_counts("4,1,2"),
    )
    names = [r.name for r in runs]
    assert names == [
        "base-r0-s0",
        "sop_hg_dagger-r4-s0",
        "sop_recap-r4-s0",
        "non_sop-r4-s0",
        "offline_only-r0-s0",
        "more_demos-r0-s0",
        "ceiling-r0-s0",
        "sop_hg_dagger-r1-s0",
        "sop_hg_dagger-r2-s0",
        "sop_hg_dagger-r4-s1",
        "sop_recap-r4-s1",
        "non_sop-r4-s1",
        "offline_only-r0-s1",
        "more_demos-r0-s1",
        "ceiling-r0-s1",
        "sop_hg_dagger-r1-s1",
        "sop_hg_dagger-r2-s1",
    ]
    by_name = {r.name: r for r in runs}
    assert by_name["sop_hg_dagger-r4-s1"].groups == ("comparison", "scaling")
    assert by_name["sop_hg_dagger-r2-s0"].groups == ("scaling",)
    assert by_name["non_sop-r4-s1"].budget_run().name == "sop_hg_dagger-r4-s1"
    assert by_name["offline_only-r0-s0"].budget_run().name == "sop_hg_dagger-r4-s0"
    assert by_name["more_demos-r0-s1"].budget_run().name == "sop_hg_dagger-r4-s1"
    assert by_name["ceiling-r0-s1"].budget_run().name == "sop_hg_dagger-r4-s1"  # the same compute
    assert by_name["sop_recap-r4-s0"].budget_run() is None
    assert all(r.groups == ("comparison",) for r in plan_runs(["sop_hg_dagger"], 1, 2, [1, 2], skip_scaling=True))


def test_plan_refuses_inconsistent_requests():
    with pytest.raises(PlanError, match="include sop_hg_dagger or give --offline-updates"):
        plan_runs(["non_sop"], 1, 2, [])
    assert [r.name for r in plan_runs(["non_sop"], 1, 2, [], offline_updates=50)] == ["non_sop-r2-s0"]
    # more_demos spends the SOP run's human steps: a fixed update budget does not replace that run.
    with pytest.raises(PlanError, match="more_demos spends the human-controlled steps of sop_hg_dagger"):
        plan_runs(["more_demos"], 1, 2, [], offline_updates=50)
    assert [r.name for r in plan_runs(["ceiling"], 1, 2, [], offline_updates=50)] == ["ceiling-r0-s0"]
    with pytest.raises(PlanError, match="--methods"):
        parse_methods("base,dagger")
    with pytest.raises(PlanError, match="--robots-scaling"):
        parse_robot_counts("1,two")
    with pytest.raises(PlanError, match="--seeds"):
        plan_runs(["base"], 0, 2, [])


# ------------------------------------------------------------------------------ fleet.yaml and specs


def test_generated_fleet_yaml_loads_and_specs_carry_the_run_settings(tmp_path):
    config = FleetRunConfig(
        robots=2,
        tasks=(TASK, "push-v3"),
        robot_hz=5.0,
        algorithm="hg_dagger",
        learner_trains=False,
        duration_s=60,
        seed=1,
        publish_every_updates=7,
    )
    path, fleet = write_fleet_yaml(config, tmp_path, port=45678)
    assert load_fleet(path) == fleet  # the file on disk is the run's exact, valid configuration
    assert fleet.learner.address == "127.0.0.1:45678" and fleet.learner.insecure and fleet.learner.run_locally
    assert fleet.learner_data_dir() == tmp_path.resolve() / "learner"
    assert [r.id for r in fleet.robots] == ["robot1", "robot2"]
    assert all(r.tasks == [TASK, "push-v3"] and r.control_rate_hz == 5.0 for r in fleet.robots)
    assert all(tmp_path.resolve() in fleet.spool_dir(r).parents for r in fleet.robots)

    specs = run_specs(fleet, config)
    learner = next(s for s in specs if isinstance(s, ProcessSpec))
    args = list(learner.args)
    assert args[args.index("--data-dir") + 1] == str(tmp_path.resolve() / "learner")
    assert args[args.index("--publish-every-updates") + 1] == "7" and "--no-train" in args and "--insecure" in args
    sims = [s for s in specs if isinstance(s, NodeSpec) and s.executable == "sim_robot"]
    assert [(s.namespace, s.parameters["seed"]) for s in sims] == [
        ("/robot1", online_seed(1, 0)),
        ("/robot2", online_seed(1, 1)),
    ]
    assert len({online_seed(s, r) for s in range(3) for r in range(4)}) == 12

    training = dataclasses.replace(config, learner_trains=True, algorithm="recap", ema_decay=0.95)
    _, fleet = write_fleet_yaml(training, tmp_path, port=45679)
    args = list(next(s for s in run_specs(fleet, training) if isinstance(s, ProcessSpec)).args)
    assert "--no-train" not in args and args[args.index("--algorithm") + 1] == "recap"
    assert args[args.index("--ema-decay") + 1] == "0.95"  # the wall-clock learner averages as the virtual one


def test_fleet_run_config_refuses_bad_values():
    with pytest.raises(ValueError, match="robots"):
        FleetRunConfig(robots=0, tasks=(TASK,), robot_hz=10, algorithm="hg_dagger", learner_trains=True, duration_s=1)
    with pytest.raises(ValueError, match="robot_hz"):
        FleetRunConfig(robots=1, tasks=(TASK,), robot_hz=0, algorithm="hg_dagger", learner_trains=True, duration_s=1)


# ------------------------------------------------------------------------------ run dirs


def test_each_run_gets_its_own_copy_of_the_base(base_dir, tmp_path):
    import torch

    a = prepare_run_dir(base_dir, tmp_path / "a")
    b = prepare_run_dir(base_dir, tmp_path / "b")
    CheckpointStore(a / "checkpoints").publish(
        {"w": torch.zeros(2)}, algorithm="hg_dagger", training_step=1, metrics={}, parent_version=1
    )
    with EpisodeStore(a / "offline", cache_in_background=False) as offline:
        ingest(offline, make_episode(TASK, 5, [Actor.HUMAN], True, seed=9), tmp_path)
    assert checkpoint_versions(a / "checkpoints") == [1, 2]
    assert checkpoint_versions(b / "checkpoints") == checkpoint_versions(base_dir / "checkpoints") == [1]
    with EpisodeStore(b / "offline") as offline:
        assert offline.count() == 2 and all(
            offline.arrays(r.episode_id)["images"].shape[1:] == (64, 64, 3) for r in offline.query()
        )
    CheckpointStore(b / "checkpoints").verify(1)
    # Preparing a run dir again starts it over: nothing of the earlier attempt survives.
    (tmp_path / "a" / "fleet.log").write_text("old")
    again = prepare_run_dir(base_dir, tmp_path / "a")
    assert checkpoint_versions(again / "checkpoints") == [1] and not (tmp_path / "a" / "fleet.log").exists()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["learner"]
    with pytest.raises(FleetRunError, match="no checkpoint"):
        prepare_run_dir(tmp_path / "empty", tmp_path / "c")


def test_pruning_keeps_only_the_evaluated_checkpoints(base_dir, tmp_path):
    import torch

    learner = prepare_run_dir(base_dir, tmp_path / "run")
    store = CheckpointStore(learner / "checkpoints")
    for step in (1, 2, 3):
        store.publish(
            {"w": torch.full((256,), float(step))},
            algorithm="hg_dagger",
            training_step=step,
            metrics={},
            parent_version=1,
        )
    cache = tmp_path / "run" / "state" / "robot1" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "v000003.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "run" / "state" / "robot1" / "spool").mkdir()
    freed = prune_run_dir(tmp_path / "run", keep_versions={1, 3})
    assert checkpoint_versions(learner / "checkpoints") == [1, 3] and freed > 1024
    assert not cache.exists() and (tmp_path / "run" / "state" / "robot1" / "spool").is_dir()
    assert (
        CheckpointStore(learner / "checkpoints").load_tensors(3)["w"][0] == 2.0
    )  # v3 = the second published (v2..v4 = steps 1..3)


def test_live_counts_read_the_index_the_learner_is_writing(tmp_path):
    learner = tmp_path / "learner"
    assert read_live_counts(learner).episodes == 0
    with EpisodeStore(learner / "episodes", cache_in_background=False) as store:  # the "learner" keeps it open
        ingest(store, make_episode(TASK, 10, [Actor.POLICY], True, seed=1), tmp_path)
        ingest(store, make_episode(TASK, 10, [Actor.POLICY, Actor.HUMAN], False, seed=2), tmp_path)
        counts = read_live_counts(learner)
    assert (counts.episodes, counts.successes, counts.steps, counts.human_steps) == (2, 1, 20, 5)
    assert (
        counts.recent_success_rate == 0.5 and counts.recent_intervention_share == 0.25 and counts.latest_version is None
    )


# ------------------------------------------------------------------------------ offline baselines


def test_offline_training_makes_exactly_the_budgeted_updates(base_dir, tmp_path):
    with_fleet = prepare_run_dir(base_dir, tmp_path / "non_sop")
    with EpisodeStore(with_fleet / "episodes", cache_in_background=False) as fleet:
        ingest(fleet, make_episode(TASK, 16, [Actor.POLICY, Actor.HUMAN], False, seed=5), tmp_path)
    manifest = train_offline(with_fleet, updates=3, threads=1)
    assert (manifest.version, manifest.parent_version, manifest.algorithm, manifest.training_step) == (
        2,
        1,
        "hg_dagger",
        3,
    )
    assert checkpoint_versions(with_fleet / "checkpoints") == [1, 2]
    store = CheckpointStore(with_fleet / "checkpoints")
    assert not all(
        np.array_equal(store.load_tensors(2)[k], v) for k, v in store.load_tensors(1).items() if v.is_floating_point()
    )

    demos_only = prepare_run_dir(base_dir, tmp_path / "offline_only")
    assert train_offline(demos_only, updates=0).version == 1  # nothing to spend: the base
    assert train_offline(demos_only, updates=2).training_step == 2
    with pytest.raises(ValueError, match="updates"):
        train_offline(demos_only, updates=-1)


# ------------------------------------------------------------------------------ evaluation


def test_checkpoints_at_picks_the_newest_created_by_each_time(base_dir):
    real = CheckpointStore(base_dir / "checkpoints").get(1)
    t0 = 1_000 * NS_PER_S
    manifests = [
        dataclasses.replace(real, version=v, created_ns=t0 + s * NS_PER_S)
        for v, s in ((1, -500), (2, 30), (3, 90), (4, 100))
    ]
    chosen = checkpoints_at(manifests, t0, [0, 29, 30, 95, 1000])
    assert [m.version for m in chosen] == [1, 1, 2, 3, 4]
    assert [m.version for m in checkpoints_at(manifests[1:], t0, [0])] == [2]  # before any: the oldest


def test_evaluator_runs_the_real_harness_once_per_weights(base_dir, tmp_path):
    calls = []

    def counting_evaluate(*args, **kwargs):
        calls.append(args[3])
        # chunks run as the robots run them (config/robot.yaml policy.execute_horizon)
        assert kwargs["actions_per_query"] == node_defaults("policy")["execute_horizon"]
        return evaluate(*args, **kwargs)

    tasks = {TASK: TaskSpec(TASK, "press the button down from above", max_steps=8)}
    root = prepare_run_dir(base_dir, tmp_path / "run") / "checkpoints"
    evaluator = CheckpointEvaluator(tasks, tmp_path / "cache.json", evaluate_fn=counting_evaluate)
    episodes = []
    first = evaluator.evaluate(root, 1, episodes=2, on_episode=episodes.append)
    assert len(episodes) == 2 and all(o.task_id == TASK and 1 <= o.steps <= 8 for o in episodes)
    assert list(first.per_task) == [TASK] and 0.0 <= first.mean_success <= 1.0
    assert evaluator.evaluate(root, 1, episodes=2) == first
    assert (
        CheckpointEvaluator(tasks, tmp_path / "cache.json", evaluate_fn=counting_evaluate).evaluate(
            base_dir / "checkpoints", 1, 2
        )
        == first
    )
    assert calls == [2]  # same weights (hash), same scenes: evaluated once, across evaluators and run dirs
    weights = root / "v000001" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(CheckpointIntegrityError):
        evaluator.evaluate(root, 1, episodes=1)


# ------------------------------------------------------------------------------ results


def _run_result(
    method,
    seed,
    robots,
    groups,
    final,
    curve=(),
    rows=(),
    start_ns=0,
    duration_s=0.0,
    updates=None,
    offline=None,
    demo_steps=None,
):
    kw = {}
    if rows:
        kw = dict(
            online_windows=tuple(w.as_dict() for w in window_stats(rows, start_ns, duration_s, duration_s / 3)),
            online_totals=totals(rows, start_ns, duration_s).as_dict(),
            throughput=throughput(rows, start_ns, duration_s, robots).as_dict(),
        )
    return RunResult(
        name=f"{method}-r{robots}-s{seed}",
        method=method,
        seed=seed,
        robots=robots,
        groups=groups,
        duration_s=duration_s,
        final_version=2,
        final_success=final,
        final_per_task={TASK: final, "push-v3": final},
        eval_episodes_per_task=5,
        curve=tuple(CurvePoint(t, 1 + i, v, {TASK: v, "push-v3": v}) for i, (t, v) in enumerate(curve)),
        learner_updates=updates,
        offline_updates=offline,
        start_ns=start_ns,
        demo_steps=demo_steps,
        demos_added=None if demo_steps is None else demo_steps // 10,
        **kw,
    )


def test_results_are_written_as_csv_markdown_plots_and_summary(base_dir, tmp_path):
    from sop_ros.commands.experiment import write_outputs

    t0 = 1_700_000_000 * NS_PER_S
    with EpisodeStore(tmp_path / "fleet", cache_in_background=False) as store:
        for i, (t, actors, success) in enumerate(
            [(10, [Actor.HUMAN], True), (50, [Actor.POLICY, Actor.HUMAN], False), (100, [Actor.POLICY], True)]
        ):
            ingest(store, make_episode(TASK, 8, actors, success, seed=i, end_ns=t0 + t * NS_PER_S), tmp_path)
        rows = store.query()
    curve = [(0, 0.4), (60, 0.7), (120, 0.95)]
    results = [
        _run_result("base", 0, 0, ("comparison",), 0.4, curve=[(0, 0.4)]),
        _run_result("sop_hg_dagger", 0, 2, ("comparison", "scaling"), 0.95, curve, rows, t0, 120.0, updates=300),
        _run_result(
            "sop_hg_dagger",
            1,
            2,
            ("comparison", "scaling"),
            0.85,
            [(0, 0.4), (60, 0.9), (120, 0.85)],
            rows,
            t0,
            120.0,
            updates=280,
        ),
        _run_result(
            "sop_hg_dagger", 0, 1, ("scaling",), 0.6, [(0, 0.4), (60, 0.5), (120, 0.6)], rows, t0, 120.0, updates=250
        ),
        _run_result(
            "non_sop", 0, 2, ("comparison",), 0.6, [(0, 0.4), (60, 0.4), (120, 0.4)], rows, t0, 120.0, offline=300
        ),
        _run_result("offline_only", 0, 0, ("comparison",), 0.5, offline=300),
        _run_result("more_demos", 0, 0, ("comparison",), 0.7, offline=300, demo_steps=12),
        _run_result("ceiling", 0, 0, ("comparison",), 0.97, offline=300, demo_steps=3000),
    ]
    save_run_result(tmp_path / "runs" / "x", results[1])
    assert load_run_result(tmp_path / "runs" / "x") == results[1]

    args = argparse.Namespace(threshold=0.9, robot_hz=10.0, seeds=2, duration_min=2.0)
    data = write_outputs(
        tmp_path, results, args, {"command": "sop experiment --duration-min 2", "machine": {"cpu_count": 2}}
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["final_success"] == {
        "base": 0.4,
        "sop_hg_dagger": pytest.approx(0.9),
        "sop_recap": None,
        "non_sop": 0.6,
        "offline_only": 0.5,
        "more_demos": 0.7,
        "ceiling": 0.97,
    }
    assert summary["final_success_spread"]["sop_hg_dagger"]["std"] == pytest.approx(np.std([0.95, 0.85], ddof=1))
    # 2 robots: the seed-mean curve (0.4, 0.8, 0.9) crosses 0.9 at 120 s; seed 0 alone at 60 + 60 * 0.2 / 0.25 = 108 s.
    assert summary["time_to_threshold_s"] == {"1": None, "2": pytest.approx(120.0)}
    assert summary["time_to_threshold_per_seed_s"]["2"] == {"0": pytest.approx(108.0), "1": pytest.approx(60.0)}
    assert (summary["threshold"], summary["robot_hz"], summary["seeds"], summary["duration_s"]) == (0.9, 10.0, 2, 120.0)
    assert summary["throughput_episodes_per_hour"]["sop_hg_dagger"] == pytest.approx(3 / (120 / 3600))
    assert summary["intervention_share"]["non_sop"] == pytest.approx((8 + 4) / 24)
    assert summary["human_steps"]["non_sop"] == pytest.approx(8 + 4) and summary["human_steps"]["base"] is None
    assert summary["per_task"]["base"] == {TASK: 0.4, "push-v3": 0.4}
    # Every evaluated episode of the comparison runs pooled: 2 seeds x 2 tasks x 5 episodes, 5 + 5 + 4 + 4 successes.
    assert summary["final_success_ci95"]["sop_hg_dagger"] == pytest.approx(list(wilson_interval(18, 20)))
    assert summary["final_success_ci95"]["base"] == pytest.approx(list(wilson_interval(4, 10)))
    assert summary["command"].startswith("sop experiment") and summary["machine"] == {"cpu_count": 2}
    assert summary["ceiling_success"] == 0.97  # the ceiling method's, never a made-up number
    # Return on human effort: (final - base) per 1,000 human-controlled steps (corrections or demo steps).
    assert summary["human_steps"]["more_demos"] == 12
    gains = summary["success_gain_per_1000_human_steps"]
    assert gains["more_demos"] == pytest.approx(0.3 * 1000 / 12) and gains["non_sop"] == pytest.approx(0.2 * 1000 / 12)
    assert gains["base"] is None and gains["offline_only"] is None
    for name in ("curves.csv", "online.csv", "runs.csv", "final.csv", "scaling.csv", "results.md"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert sorted(data["plots"]) == ["intervention_share.png", "scaling.png", "success_over_time.png"]
    for plot in data["plots"]:
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    final_csv = (tmp_path / "final.csv").read_text().splitlines()
    assert final_csv[0].startswith("method,runs,final_success_mean") and len(final_csv) == 7
    assert len((tmp_path / "curves.csv").read_text().splitlines()) == 1 + 1 + 3 * 4
    md = (tmp_path / "results.md").read_text()
    assert "| sop_hg_dagger | 0.90 ± 0.07 |" in md and "| 2 | 2.0 |" in md and "![scaling](scaling.png)" in md
    assert "| more_demos | 12 | 25.000 |" in md


# ------------------------------------------------------------------------------ CLI


def test_cli_plans_and_refuses_bad_options(capsys, tmp_path):
    assert sop_main(["experiment", "--dry-run", "--seeds", "1", "--robots", "2", "--robots-scaling", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "sop_hg_dagger-r2-s0" in out and "sop_hg_dagger-r1-s0" in out and "offline_only-r0-s0" in out
    assert sop_main(["experiment", "--methods", "base,magic", "--dry-run"]) == 2
    assert "--methods: unknown method(s) ['magic']" in capsys.readouterr().err
    assert sop_main(["experiment", "--threshold", "1.5", "--dry-run"]) == 2
    assert sop_main(["experiment", "--base", str(tmp_path), "--out", str(tmp_path / "out"), "--methods", "base"]) == 2
    assert "expected a learner data dir" in capsys.readouterr().err


def test_label_ablation_trains_each_variant_on_the_same_fleet_data_and_resumes(base_dir, tmp_path):
    from sop_ros.experiment import label_ablation

    fleet = prepare_run_dir(base_dir, tmp_path / "non_sop")
    with EpisodeStore(fleet / "episodes", cache_in_background=False) as store:
        ingest(store, make_episode(TASK, 16, [Actor.POLICY, Actor.HUMAN], True, seed=5), tmp_path)
        ingest(store, make_episode(TASK, 10, [Actor.HUMAN], False, seed=6), tmp_path)
    counts = label_ablation.fleet_label_counts(fleet / "episodes")
    assert counts == {
        "episodes": 2,
        "successful_episodes": 1,
        "takeover_episodes": 2,
        "successful_takeover_episodes": 1,
        "steps": 26,
        "human_steps": 18,
        "human_steps_in_successful": 8,
        "policy_steps_in_successful": 8,
    }
    out = tmp_path / "ablation"
    argv = ["--fleet-data", str(fleet), "--out", str(out), "--updates", "5", "--eval-episodes", "1"]
    argv += ["--variant", "all={}", "--variant", 'successful={"corrections": "successful"}']
    assert label_ablation.main(argv) == 0
    results = {v: json.loads((out / f"{v}-s0" / "result.json").read_text()) for v in ("all", "successful")}
    assert results["successful"]["config"]["algorithm_config"] == {"corrections": "successful"}
    # Same base, seed and data, different labels: different weights.
    assert results["all"]["content_hash"] != results["successful"]["content_hash"]
    table = (out / "results.md").read_text()
    assert "| base (no training) |" in table and "| successful | 0 |" in table
    # Each variant's trained checkpoint is v2 of its own copy; the fleet data dir is untouched.
    assert checkpoint_versions(fleet / "checkpoints") == [1]
    stamps = {v: (out / f"{v}-s0" / "result.json").stat().st_mtime_ns for v in results}
    assert label_ablation.main(argv) == 0  # resumed: nothing is trained again
    assert {v: (out / f"{v}-s0" / "result.json").stat().st_mtime_ns for v in results} == stamps
    with pytest.raises(SystemExit):
        label_ablation.main([*argv, "--variant", "all={}"])  # names must be unique


def test_summary_records_the_learner_rate_only_for_the_virtual_clock(tmp_path):
    from sop_ros.commands.experiment import _run_info, add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    # Parsed by the real CLI, so every field _run_info reads exists as it does for `sop experiment`.
    args = parser.parse_args(
        ["experiment", "--learner-updates-per-s", "2.5", "--clock", "virtual", "--ema-decay", "0.5"]
    )
    info = _run_info(args, {TASK: None}, tmp_path, ["base"])
    assert info["learner_updates_per_s"] == 2.5
    assert info["ema_decay"] == 0.5
    args.clock = "wall"  # a real learner makes the updates it can: no configured rate to report
    assert _run_info(args, {TASK: None}, tmp_path, ["base"])["learner_updates_per_s"] is None


def test_units_from_several_experiment_folders_aggregate_into_one_results_folder(tmp_path):
    from sop_ros.commands.experiment_aggregate import main as aggregate

    units = []
    for folder, result in (
        ("a", _run_result("base", 0, 0, ("comparison",), 0.4, curve=[(0, 0.4)])),
        ("b", _run_result("offline_only", 0, 0, ("comparison",), 0.5, offline=300)),
        ("c", _run_result("ceiling", 0, 0, ("comparison",), 0.9, offline=300, demo_steps=600)),
    ):
        units.append(tmp_path / folder / "runs" / result.name)
        save_run_result(units[-1], result)
    assert aggregate([str(tmp_path / "all"), *map(str, units), "--duration-min", "2"]) == 0
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert summary["final_success"]["offline_only"] == 0.5 and summary["ceiling_success"] == 0.9
    assert summary["command"].startswith("python -m sop_ros.commands.experiment_aggregate")
    assert len(summary["aggregated_from"]) == 3 and (tmp_path / "all" / "ceiling-r0-s0.result.json").is_file()
    with pytest.raises(SystemExit):
        aggregate([str(tmp_path / "none"), str(tmp_path / "missing")])
