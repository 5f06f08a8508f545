"""Fresh expert demos for the demo-trained baselines (plan.py): `more_demos` and `ceiling`.

Both train offline from the base like offline_only, on the base's demos plus demos recorded here:
- more_demos: demos until their steps reach the human-controlled steps of the budget run (SOP HG-DAgger,
  same seed and fleet size): a team without SOP spends the same operator time on demonstrations
  instead of corrections. Every expert step counts, those of a demo the expert failed included (the
  demo is dropped, as `sop collect` drops it, but the operator spent the time).
- ceiling: CEILING_DEMOS_PER_TASK demos per task: what the model reaches by behaviour cloning on a
  large expert set with the same compute.

Scene seeds: EXTRA_DEMO_SEED_BASE + run seed * SEED_BLOCK + n, apart from the base demos' (from 0), the
evaluation scenes' (from 1,000,000) and the fleet's (from 3,000,000). Tasks take turns, so a step
budget spreads evenly over them.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Optional

from sop_ros.core.robot.tasks import TaskSpec
from sop_ros.core.storage.data_layout import OFFLINE_DIR
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.core.training.demo_recording import (
    DEMO_ROBOT_ID,
    DemoJob,
    DemoSettings,
    record_demo,
    recorded_chunk_size,
)
from sop_ros.core.training.pretrain import ingest_episode_files
from sop_ros.experiment.fleet_run import SEED_BLOCK
from sop_ros.resources import node_defaults

log = logging.getLogger(__name__)

CEILING_DEMOS_PER_TASK = 100
EXTRA_DEMO_SEED_BASE = 2_000_000
_STAGING = "extra_demos"  # under the run dir: the episode files before they are ingested


@dataclasses.dataclass(frozen=True)
class ExtraDemos:
    kept: int  # demos added to the offline store (the expert succeeded)
    attempts: int
    steps: int  # expert (human-controlled) steps of all attempts


def extra_demo_seed(run_seed: int) -> int:
    return EXTRA_DEMO_SEED_BASE + run_seed * SEED_BLOCK


def add_expert_demos(
    tasks: Mapping[str, TaskSpec],
    run_dir: Path,
    learner_dir: Path,
    run_seed: int,
    *,
    per_task: Optional[int] = None,
    step_budget: Optional[int] = None,
    on_demo: Optional[Callable[[int], None]] = None,
) -> ExtraDemos:
    """Record fresh expert demos (`per_task` each, or tasks in turn until `step_budget` steps are spent) and
    ingest them into learner_dir's offline store; `on_demo(steps so far)` after each attempt."""
    if (per_task is None) == (step_budget is None):
        raise ValueError("give exactly one of per_task and step_budget")
    if (per_task is not None and per_task <= 0) or (step_budget is not None and step_budget < 0):
        raise ValueError(f"per_task must be positive and step_budget >= 0, got {per_task}, {step_budget}")
    staging = Path(run_dir) / _STAGING
    shutil.rmtree(staging, ignore_errors=True)  # a run cut short records again from its first seed
    settings = DemoSettings(str(staging), DEMO_ROBOT_ID, recorded_chunk_size(), 0.0, False)
    staging.mkdir(parents=True)
    backend = _backend(tasks)
    kept, attempts, steps, first = [], 0, 0, extra_demo_seed(run_seed)
    try:
        for n in itertools.count():
            if per_task is not None and n >= per_task:
                break
            for task_id in tasks:
                if step_budget is not None and steps >= step_budget:
                    break
                result = record_demo(backend, DemoJob(task_id, first + n), settings)
                attempts, steps = attempts + 1, steps + result.steps
                kept += [Path(result.path)] if result.path else []
                if on_demo is not None:
                    on_demo(steps)
            if step_budget is not None and steps >= step_budget:
                break
    finally:
        backend.close()
    with EpisodeStore(Path(learner_dir) / OFFLINE_DIR, cache_in_background=False) as offline:
        ingest_episode_files(offline, kept)
    shutil.rmtree(staging)
    log.info("added %d expert demos (%d attempts, %d steps) to %s", len(kept), attempts, steps, learner_dir)
    return ExtraDemos(len(kept), attempts, steps)


def _backend(tasks: Mapping[str, TaskSpec]):
    from sop_ros.backends.metaworld_sim import SimCameraConfig, make_backend

    sim = node_defaults("sim_robot")  # the scene as the fleet's robots see it
    camera = SimCameraConfig(
        fovy_deg=float(sim["camera_fovy_deg"]), width=sim["camera_width"], height=sim["camera_height"]
    )
    return make_backend(dict(tasks), camera)
