"""The fleet part of an experiment's run, on either clock: what the evaluation needs from it (FleetPhase).

- wall: real processes (ROS nodes, gRPC learner) for the run's duration on the wall clock (fleet_run);
  times are epoch ns, checkpoints carry their manifest creation time.
- virtual: the same fleet in one process on simulated time (virtual_clock); time 0 is the run's start
  and each checkpoint carries its simulated publication (the base: 0), so checkpoint_eval.checkpoints_at
  picks "the checkpoint in use at simulated time t" unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from sop_ros.core.storage.checkpoint_store import CheckpointManifest, CheckpointStore
from sop_ros.core.storage.data_layout import CHECKPOINTS_DIR, EPISODES_DIR
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.experiment.fleet_run import LEARNER_DIR, FleetRunConfig, LiveCounts, checkpoint_versions, run_fleet
from sop_ros.experiment.plan import RunSpec
from sop_ros.experiment.virtual_clock import VirtualFleetConfig, run_virtual_fleet

if TYPE_CHECKING:
    from sop_ros.experiment.runner import ExperimentConfig

FleetTick = Callable[[float, LiveCounts], None]


@dataclasses.dataclass(frozen=True)
class FleetPhase:
    """What the evaluation needs from a fleet run, on either clock (times in that clock's ns)."""

    start_ns: int  # time 0 of the run (wall: epoch ns; virtual: 0)
    duration_s: float
    manifests: list[CheckpointManifest]  # created_ns on the run's clock (virtual: the simulated publication)
    learner_updates: Optional[int]
    fleet: dict


def _fleet_config(run: RunSpec, config: ExperimentConfig) -> FleetRunConfig:
    return FleetRunConfig(
        robots=run.robots,
        tasks=tuple(config.tasks),
        robot_hz=config.robot_hz,
        algorithm=run.spec.algorithm,
        learner_trains=run.spec.learner_trains,
        duration_s=config.duration_s,
        seed=run.seed,
        publish_every_updates=config.publish_every_updates,
        learner_threads=config.learner_threads,
        ema_decay=config.ema_decay,
    )


def wall_fleet(
    run: RunSpec, config: ExperimentConfig, run_dir: Path, on_tick: FleetTick, should_stop: Callable[[], bool]
) -> FleetPhase:
    """Real processes (ROS nodes, gRPC learner) on the wall clock: the system check."""
    learner_dir = run_dir / LEARNER_DIR
    base_versions = set(checkpoint_versions(learner_dir / CHECKPOINTS_DIR))
    record = run_fleet(_fleet_config(run, config), run_dir, on_tick=on_tick, should_stop=should_stop)
    if should_stop():
        raise KeyboardInterrupt
    store = CheckpointStore(learner_dir / CHECKPOINTS_DIR)
    manifests = [store.get(v) for v in store.versions()]
    new = [m for m in manifests if m.version not in base_versions]
    rows = _rows(learner_dir)
    fleet = {
        "clock": "wall",
        "port": record.port,
        "ros_domain_id": record.domain_id,
        "exit_code": record.exit_code,
        "cpu_percent_mean": record.cpu_percent_mean,
        "robot_hz": config.robot_hz,
        "achieved_step_hz": achieved_step_hz(rows),
    }
    updates = max((m.training_step for m in new), default=0) if run.spec.learner_trains else None
    return FleetPhase(record.start_ns, record.duration_s, manifests, updates, fleet)


def virtual_fleet(
    run: RunSpec, config: ExperimentConfig, run_dir: Path, on_tick: FleetTick, should_stop: Callable[[], bool]
) -> FleetPhase:
    """The same fleet in one process on simulated time (virtual_clock): deterministic, independent of machine load."""
    virtual = VirtualFleetConfig(
        robots=run.robots,
        tasks=tuple(config.tasks.values()),
        duration_s=config.duration_s,
        algorithm=run.spec.algorithm,
        learner_trains=run.spec.learner_trains,
        seed=run.seed,
        learner_updates_per_s=config.learner_updates_per_s,
        publish_every_updates=config.publish_every_updates,
        control_rate_hz=config.robot_hz,
        torch_threads=config.learner_threads,
        ema_decay=config.ema_decay,
    )
    record = run_virtual_fleet(virtual, run_dir, on_tick=on_tick, should_stop=should_stop)
    if should_stop():
        raise KeyboardInterrupt
    store = CheckpointStore(run_dir / LEARNER_DIR / CHECKPOINTS_DIR)
    published = {c.version: c.published_ns for c in record.checkpoints}
    # Checkpoints the run started with count as published at time 0; the others at their simulated publication.
    manifests = [
        dataclasses.replace(m, created_ns=published.get(m.version, 0)) for m in map(store.get, store.versions())
    ]
    fleet = {
        "clock": "virtual",
        "learner_updates_per_s": config.learner_updates_per_s,
        "checkpoint_delay_s": virtual.checkpoint_delay_s,
        "wall_s": record.wall_s,
        "simulated_s_per_wall_s": record.duration_s / record.wall_s if record.wall_s > 0 else None,
        "robot_hz": config.robot_hz,
        # Below robot_hz only by the ticks the arm waits while the mux waits out human_timeout_s at a hand-back.
        "achieved_step_hz": achieved_step_hz(_rows(run_dir / LEARNER_DIR)),
    }
    updates = record.learner_updates if run.spec.learner_trains else None
    return FleetPhase(0, record.duration_s, manifests, updates, fleet)


def _rows(learner_dir: Path) -> list:
    with EpisodeStore(learner_dir / EPISODES_DIR, cache_in_background=False) as episodes:
        return episodes.query()


def achieved_step_hz(rows) -> Optional[float]:
    """Mean steps per second within episodes: equals the control rate unless the machine cannot keep the pace."""
    rates = [r.num_steps / ((r.end_ns - r.start_ns) / 1e9) for r in rows if r.end_ns > r.start_ns and r.num_steps > 1]
    return sum(rates) / len(rates) if rates else None
