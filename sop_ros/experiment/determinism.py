"""`sop experiment --quick`'s check: the same fleet run twice on the virtual clock agrees bit for bit.

A finished fleet run keeps its episodes and its evaluated checkpoints. The check runs the same fleet
phase again from the base into <out>/determinism/<run> and compares every episode (id, content
hash, success label, newest policy version) and every checkpoint both runs still hold (content
hash). Any difference is reported with the first place it appears.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from sop_ros.core.storage.checkpoint_store import CheckpointStore
from sop_ros.core.storage.data_layout import CHECKPOINTS_DIR, EPISODES_DIR
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.experiment.fleet_phase import virtual_fleet
from sop_ros.experiment.fleet_run import LEARNER_DIR, prepare_run_dir
from sop_ros.experiment.plan import RunSpec
from sop_ros.experiment.runner import ExperimentConfig

DETERMINISM_DIR = "determinism"


@dataclasses.dataclass(frozen=True)
class DeterminismReport:
    run: str
    episodes: int
    checkpoints_compared: int
    difference: str  # "" when the two runs agree

    @property
    def identical(self) -> bool:
        return not self.difference


def _episodes(learner_dir: Path) -> list[tuple]:
    with EpisodeStore(learner_dir / EPISODES_DIR, cache_in_background=False) as store:
        return [(r.episode_id, r.content_hash, r.success, r.policy_version_max) for r in store.query()]


def _checkpoints(learner_dir: Path) -> dict[int, str]:
    store = CheckpointStore(learner_dir / CHECKPOINTS_DIR)
    return {v: store.get(v).content_hash for v in store.versions()}


def check_determinism(run: RunSpec, config: ExperimentConfig) -> DeterminismReport:
    """Run `run`'s fleet phase again and compare it with the finished run in config.run_dir(run)."""
    if config.clock != "virtual" or not run.spec.runs_fleet:
        raise ValueError("only fleet runs on the virtual clock are reproducible bit for bit")
    again_dir = Path(config.out_dir) / DETERMINISM_DIR / run.name
    shutil.rmtree(again_dir, ignore_errors=True)
    prepare_run_dir(config.base_dir, again_dir)
    virtual_fleet(run, config, again_dir, lambda *_: None, lambda: False)
    first_dir, second_dir = config.run_dir(run) / LEARNER_DIR, again_dir / LEARNER_DIR
    first, second = _episodes(first_dir), _episodes(second_dir)
    difference = ""
    if first != second:
        index = next((i for i, (a, b) in enumerate(zip(first, second)) if a != b), min(len(first), len(second)))
        difference = f"episodes differ from the {index + 1}th on ({len(first)} vs {len(second)} episodes)"
    kept, again = _checkpoints(first_dir), _checkpoints(second_dir)
    common = sorted(set(kept) & set(again))
    changed = [v for v in common if kept[v] != again[v]]
    if changed and not difference:
        difference = f"checkpoint v{changed[0]} differs"
    if not difference:
        shutil.rmtree(again_dir)
    return DeterminismReport(run.name, len(first), len(common), difference)
