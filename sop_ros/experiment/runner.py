"""Execute one planned run end to end and return its RunResult (the CLI adds progress and files).

Fleet runs: copy the base, run the fleet for the duration, stop it, then (fleet stopped, no CPU
contention) read the episodes, train the non-SOP baseline offline if the method says so, and
evaluate checkpoints: `curve_points` evenly spaced points in the run's time (the checkpoint in use at
each, by its publication) and the final checkpoint. The fleet runs on the virtual clock by default
(virtual_clock: one process, simulated time, a fixed learner budget per simulated second; publication
times are simulated) or, with clock "wall", as real processes on the wall clock (manifest creation times).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Optional

from sop_ros.core.evaluation.fleet_metrics import throughput, totals, window_stats
from sop_ros.core.robot.tasks import TaskSpec
from sop_ros.core.storage.checkpoint_store import CheckpointManifest, CheckpointStore
from sop_ros.core.storage.data_layout import CHECKPOINTS_DIR, EPISODES_DIR
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.core.training.trainer import TrainerConfig
from sop_ros.experiment.checkpoint_eval import CheckpointEvaluator, checkpoints_at
from sop_ros.experiment.demo_baselines import CEILING_DEMOS_PER_TASK, ExtraDemos, add_expert_demos
from sop_ros.experiment.fleet_phase import FleetPhase, virtual_fleet, wall_fleet
from sop_ros.experiment.fleet_run import FleetRunConfig, LiveCounts, checkpoint_versions, prepare_run_dir, prune_run_dir
from sop_ros.experiment.offline_training import train_offline
from sop_ros.experiment.plan import RunSpec
from sop_ros.experiment.results import CurvePoint, RunResult
from sop_ros.experiment.virtual_clock import DEFAULT_LEARNER_UPDATES_PER_S

log = logging.getLogger(__name__)
CLOCKS = ("virtual", "wall")
_FLEET_RUN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(FleetRunConfig)}


class RunError(RuntimeError):
    """A run cannot be done (missing budget run, no base, a fleet that died)."""


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    out_dir: Path
    base_dir: Path
    tasks: Mapping[str, TaskSpec]
    duration_s: float
    robot_hz: float
    eval_episodes: int  # final evaluation, per task
    curve_eval_episodes: int  # evaluation of the intermediate time points, per task
    curve_points: int = 5  # evaluated time points after t=0
    online_window_s: Optional[float] = None  # fleet metrics window (default duration / 6)
    publish_every_updates: int = _FLEET_RUN_DEFAULTS["publish_every_updates"]  # TrainerConfig's
    learner_threads: int = _FLEET_RUN_DEFAULTS["learner_threads"]
    offline_threads: int = _FLEET_RUN_DEFAULTS["learner_threads"]  # as the online learner: a fair comparison
    offline_updates: Optional[int] = None  # fixed budget for the offline baselines (default: the budget run's updates)
    keep_checkpoints: bool = False  # False: after its evaluation a run keeps only the checkpoints it evaluated
    # virtual: the fleet runs in one process on simulated time (virtual_clock), duration_s is simulated and the
    # learner makes learner_updates_per_s updates per simulated second; wall: real processes on the wall clock.
    clock: str = "virtual"
    learner_updates_per_s: float = DEFAULT_LEARNER_UPDATES_PER_S
    ema_decay: float = TrainerConfig().ema_decay  # the learner's, online and offline alike

    def __post_init__(self) -> None:
        for name in (
            "duration_s",
            "robot_hz",
            "eval_episodes",
            "curve_eval_episodes",
            "curve_points",
            "publish_every_updates",
            "learner_threads",
            "offline_threads",
            "learner_updates_per_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock: must be one of {CLOCKS}, got {self.clock!r}")
        if self.offline_updates is not None and self.offline_updates < 0:
            raise ValueError(f"offline_updates: must be >= 0, got {self.offline_updates}")

    @property
    def window_s(self) -> float:
        return self.online_window_s or self.duration_s / 6

    def run_dir(self, run: RunSpec) -> Path:
        return Path(self.out_dir) / "runs" / run.name


@dataclasses.dataclass
class RunHooks:
    """Progress callbacks (all optional)."""

    phase: Callable[..., None] = lambda text, total=None: None  # total: units of work in the phase, if known
    fleet_tick: Callable[[float, LiveCounts], None] = lambda elapsed, counts: None
    eval_episode: Callable[[], None] = lambda: None
    offline_update: Callable[[int, int], None] = lambda done, total: None
    should_stop: Callable[[], bool] = lambda: False


def _evaluate(
    evaluator: CheckpointEvaluator, store_root: Path, manifest: CheckpointManifest, episodes: int, hooks: RunHooks
):
    return evaluator.evaluate(store_root, manifest.version, episodes, on_episode=lambda _o: hooks.eval_episode())


def _base_manifest(base_dir: Path) -> CheckpointManifest:
    store = CheckpointStore(Path(base_dir) / CHECKPOINTS_DIR)
    versions = store.versions()
    if not versions:
        raise RunError(f"base {base_dir}: no checkpoint in {store.root}")
    return store.get(versions[-1])


def run_base(run: RunSpec, config: ExperimentConfig, evaluator: CheckpointEvaluator, hooks: RunHooks) -> RunResult:
    manifest = _base_manifest(config.base_dir)
    hooks.phase(f"evaluating the base policy v{manifest.version}", config.eval_episodes * len(config.tasks))
    final = _evaluate(evaluator, Path(config.base_dir) / CHECKPOINTS_DIR, manifest, config.eval_episodes, hooks)
    return RunResult(
        name=run.name,
        method=run.method,
        seed=run.seed,
        robots=0,
        groups=run.groups,
        duration_s=0.0,
        final_version=manifest.version,
        final_success=final.mean_success,
        final_per_task=final.per_task,
        eval_episodes_per_task=config.eval_episodes,
        curve=(CurvePoint(0.0, manifest.version, final.mean_success, final.per_task),),
    )


def budget_updates(run: RunSpec, config: ExperimentConfig, finished: Mapping[str, RunResult]) -> int:
    """The offline baselines' number of updates: --offline-updates, else the budget run's learner updates."""
    if config.offline_updates is not None:
        return config.offline_updates
    budget = run.budget_run()
    done = finished.get(budget.name) if budget else None
    if done is None or done.learner_updates is None:
        raise RunError(
            f"run {run.name}: needs the learner updates of {budget.name if budget else '?'}, which has not run"
        )
    return done.learner_updates


def _offline_phase(
    run: RunSpec, config: ExperimentConfig, learner_dir: Path, finished, hooks: RunHooks
) -> tuple[CheckpointManifest, int, float]:
    updates = budget_updates(run, config, finished)
    hooks.phase(f"offline {run.spec.algorithm}: {updates} updates", updates)
    t0 = time.monotonic()
    manifest = train_offline(
        learner_dir,
        updates,
        algorithm=run.spec.algorithm,
        threads=config.offline_threads,
        seed=run.seed,
        ema_decay=config.ema_decay,
        on_update=lambda done: hooks.offline_update(done, updates),
    )
    return manifest, updates, time.monotonic() - t0


def _budget_human_steps(run: RunSpec, finished: Mapping[str, RunResult]) -> int:
    budget = run.budget_run()
    done = finished.get(budget.name) if budget else None
    if done is None or not done.online_totals:
        raise RunError(f"run {run.name}: needs the human-controlled steps of {budget.name if budget else '?'}")
    return int(done.online_totals["human_steps"])


def _extra_demos(
    run: RunSpec, config: ExperimentConfig, learner_dir: Path, finished: Mapping[str, RunResult], hooks: RunHooks
) -> Optional[ExtraDemos]:
    """Fresh expert demos into the run's offline store, as its method says (none for most methods)."""
    kind = run.spec.extra_demos
    if not kind:
        return None
    if kind == "ceiling":
        per_task, budget = CEILING_DEMOS_PER_TASK, None
        hooks.phase(f"recording {per_task} expert demos per task", per_task * len(config.tasks))
        on_demo = None
    else:
        per_task, budget = None, _budget_human_steps(run, finished)
        hooks.phase(f"recording expert demos: {budget} human steps", budget)
        on_demo = lambda steps: hooks.offline_update(min(steps, budget), budget)  # noqa: E731
    demos = add_expert_demos(
        config.tasks, config.run_dir(run), learner_dir, run.seed, per_task=per_task, step_budget=budget, on_demo=on_demo
    )
    return demos


def run_offline_only(
    run: RunSpec,
    config: ExperimentConfig,
    evaluator: CheckpointEvaluator,
    finished: Mapping[str, RunResult],
    hooks: RunHooks,
) -> RunResult:
    """A method without a fleet: the offline training from the base (offline_only, more_demos, ceiling)."""
    if run.spec.extra_demos == "budget_human_steps":
        _budget_human_steps(run, finished)  # fail before recording, not after
    learner_dir = prepare_run_dir(config.base_dir, config.run_dir(run))
    demos = _extra_demos(run, config, learner_dir, finished, hooks)
    manifest, updates, train_s = _offline_phase(run, config, learner_dir, finished, hooks)
    hooks.phase(f"evaluating v{manifest.version}", config.eval_episodes * len(config.tasks))
    final = _evaluate(evaluator, learner_dir / CHECKPOINTS_DIR, manifest, config.eval_episodes, hooks)
    return RunResult(
        name=run.name,
        method=run.method,
        seed=run.seed,
        robots=0,
        groups=run.groups,
        duration_s=0.0,
        final_version=manifest.version,
        final_success=final.mean_success,
        final_per_task=final.per_task,
        eval_episodes_per_task=config.eval_episodes,
        offline_updates=updates,
        offline_train_s=train_s,
        demos_added=None if demos is None else demos.kept,
        demo_steps=None if demos is None else demos.steps,
    )


def run_with_fleet(
    run: RunSpec,
    config: ExperimentConfig,
    evaluator: CheckpointEvaluator,
    finished: Mapping[str, RunResult],
    hooks: RunHooks,
) -> RunResult:
    spec = run.spec
    if spec.trains_offline and config.offline_updates is None:
        budget_updates(run, config, finished)  # fail before spending the fleet time, not after
    run_dir = config.run_dir(run)
    learner_dir = prepare_run_dir(config.base_dir, run_dir)
    base_versions = set(checkpoint_versions(learner_dir / CHECKPOINTS_DIR))
    hooks.phase(
        f"fleet ({config.clock} clock): {run.robots} robot(s), learner {spec.algorithm}"
        f"{'' if spec.learner_trains else ' (no training)'}",
        round(config.duration_s),
    )
    run_phase = virtual_fleet if config.clock == "virtual" else wall_fleet
    phase = run_phase(run, config, run_dir, hooks.fleet_tick, hooks.should_stop)
    start_ns, duration_s, manifests = phase.start_ns, phase.duration_s, phase.manifests
    store = CheckpointStore(learner_dir / CHECKPOINTS_DIR)

    offline_updates = offline_s = None
    final_manifest = manifests[-1]
    if spec.trains_offline:
        final_manifest, offline_updates, offline_s = _offline_phase(run, config, learner_dir, finished, hooks)

    times = [duration_s * k / config.curve_points for k in range(config.curve_points + 1)]
    chosen = checkpoints_at(manifests, start_ns, times)
    curve = _evaluate_curve(evaluator, store.root, times, chosen, config, spec.trains_offline, hooks)
    hooks.phase(f"evaluating the final v{final_manifest.version}", config.eval_episodes * len(config.tasks))
    final = _evaluate(evaluator, store.root, final_manifest, config.eval_episodes, hooks)
    if not config.keep_checkpoints:
        freed = prune_run_dir(run_dir, {m.version for m in chosen} | {final_manifest.version} | base_versions)
        log.info("run %s: removed %.0f MB of checkpoints that were not evaluated", run.name, freed / 2**20)
    return RunResult(
        name=run.name,
        method=run.method,
        seed=run.seed,
        robots=run.robots,
        groups=run.groups,
        final_version=final_manifest.version,
        final_success=final.mean_success,
        final_per_task=final.per_task,
        eval_episodes_per_task=config.eval_episodes,
        curve=tuple(curve),
        offline_updates=offline_updates,
        offline_train_s=offline_s,
        **_online_fields(phase, config, learner_dir, run.robots, base_versions),
    )


def _online_fields(
    phase: FleetPhase, config: ExperimentConfig, learner_dir: Path, robots: int, base_versions: set[int]
) -> dict:
    """RunResult's fields about the fleet run: its time span, learner, checkpoints and online metrics."""
    start_ns, duration_s = phase.start_ns, phase.duration_s
    with EpisodeStore(learner_dir / EPISODES_DIR, cache_in_background=False) as store:
        rows = store.query()
    windows_per_run = max(1, round(config.duration_s / config.window_s))
    windows = window_stats(rows, start_ns, duration_s, duration_s / windows_per_run)
    checkpoints = tuple(
        {
            "version": m.version,
            "created_s": (m.created_ns - start_ns) / 1e9,
            "training_step": m.training_step,
            "algorithm": m.algorithm,
        }
        for m in phase.manifests
        if m.version not in base_versions
    )
    return dict(
        duration_s=duration_s,
        learner_updates=phase.learner_updates,
        checkpoints=checkpoints,
        online_windows=tuple(w.as_dict() for w in windows),
        online_totals=totals(rows, start_ns, duration_s).as_dict(),
        throughput=throughput(rows, start_ns, duration_s, robots).as_dict(),
        start_ns=start_ns,
        fleet=phase.fleet,
    )


def _evaluate_curve(
    evaluator: CheckpointEvaluator,
    store_root: Path,
    times: list[float],
    chosen: list[CheckpointManifest],
    config: ExperimentConfig,
    trains_offline: bool,
    hooks: RunHooks,
) -> list[CurvePoint]:
    """Success of the checkpoint in use at each time point (the last with the final episode count)."""
    curve = []
    for k, (t, manifest) in enumerate(zip(times, chosen)):
        last = k == len(times) - 1
        episodes = config.eval_episodes if last and not trains_offline else config.curve_eval_episodes
        hooks.phase(f"evaluating v{manifest.version} (t = {t / 60:.1f} min)", episodes * len(config.tasks))
        result = _evaluate(evaluator, store_root, manifest, episodes, hooks)
        curve.append(CurvePoint(t, manifest.version, result.mean_success, result.per_task))
    return curve


def execute_run(
    run: RunSpec,
    config: ExperimentConfig,
    evaluator: CheckpointEvaluator,
    finished: Mapping[str, RunResult],
    hooks: Optional[RunHooks] = None,
) -> RunResult:
    hooks = hooks or RunHooks()
    if run.spec.evaluated_only:
        return run_base(run, config, evaluator, hooks)
    if not run.spec.runs_fleet:
        return run_offline_only(run, config, evaluator, finished, hooks)
    return run_with_fleet(run, config, evaluator, finished, hooks)
