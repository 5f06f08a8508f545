"""Evaluate a run's checkpoints in simulation (after its fleet stopped), with a result cache.

Every checkpoint is evaluated on the same fixed scenes (sop_ros.core.evaluation.harness: seeds from
DEFAULT_EVAL_SEED), so methods and time points differ only by their weights. Results are cached
by the weights' sha256, episodes per task, first seed and task list in a JSON file: the base v1 is
evaluated once for all runs, and a resumed experiment does not evaluate anything twice.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Optional

from sop_ros.core.evaluation.harness import DEFAULT_EVAL_SEED, EpisodeOutcome, evaluate
from sop_ros.core.robot.tasks import TaskSpec
from sop_ros.core.storage.checkpoint_store import CheckpointManifest, CheckpointStore
from sop_ros.resources import robot_execute_horizon


@dataclasses.dataclass(frozen=True)
class CheckpointEval:
    content_hash: str
    episodes_per_task: int
    per_task: dict[str, float]  # task id -> success rate

    @property
    def mean_success(self) -> float:
        """Mean over tasks (every task has the same number of episodes)."""
        return sum(self.per_task.values()) / len(self.per_task)

    def as_dict(self) -> dict:
        return {
            "content_hash": self.content_hash,
            "episodes_per_task": self.episodes_per_task,
            "per_task": dict(self.per_task),
            "mean_success": self.mean_success,
        }


def checkpoint_policy(weights_path: str, backend):
    """Policy factory for evaluation workers (picklable through functools.partial)."""
    from safetensors.torch import load_file

    from sop_ros.core.model.vla import VLAPolicy

    return VLAPolicy.from_checkpoint_tensors(load_file(weights_path), device="cpu")


def checkpoints_at(
    manifests: Sequence[CheckpointManifest], start_ns: int, times_s: Sequence[float]
) -> list[CheckpointManifest]:
    """For each time point, the newest checkpoint created by then (the oldest one, i.e. the base, before any)."""
    if not manifests:
        raise ValueError("manifests: a run has at least its base checkpoint")
    ordered = sorted(manifests, key=lambda m: m.version)
    chosen = []
    for t in times_s:
        limit = start_ns + int(t * 1e9)
        available = [m for m in ordered if m.created_ns <= limit]
        chosen.append(available[-1] if available else ordered[0])
    return chosen


class CheckpointEvaluator:
    def __init__(
        self,
        tasks: Mapping[str, TaskSpec],
        cache_file: Path,
        workers: int = 1,
        first_seed: int = DEFAULT_EVAL_SEED,
        evaluate_fn: Callable = evaluate,
        actions_per_query: Optional[int] = None,
    ):
        if not tasks:
            raise ValueError("tasks: at least one task is required")
        self.tasks = dict(tasks)
        self.cache_file = Path(cache_file)
        self.workers = workers
        self.first_seed = first_seed
        # Chunks run as on the robots unless told otherwise, so offline success is the fleet's.
        self.actions_per_query = robot_execute_horizon() if actions_per_query is None else actions_per_query
        self._evaluate = evaluate_fn
        self._lock = threading.Lock()
        self._cache: dict[str, dict] = json.loads(self.cache_file.read_text()) if self.cache_file.is_file() else {}

    def _key(self, content_hash: str, episodes: int) -> str:
        return f"{content_hash}:{episodes}:{self.first_seed}:{','.join(self.tasks)}:h{self.actions_per_query}"

    def cached(self, content_hash: str, episodes: int) -> Optional[CheckpointEval]:
        entry = self._cache.get(self._key(content_hash, episodes))
        return (
            None
            if entry is None
            else CheckpointEval(entry["content_hash"], entry["episodes_per_task"], dict(entry["per_task"]))
        )

    def evaluate(
        self,
        store_root: Path,
        version: int,
        episodes: int,
        on_episode: Optional[Callable[[EpisodeOutcome], None]] = None,
    ) -> CheckpointEval:
        """Success per task of checkpoint `version` of the store at store_root (hash verified first)."""
        from sop_ros.backends.metaworld_sim import make_backend

        store = CheckpointStore(store_root)
        manifest = store.get(version)
        if manifest is None:
            raise KeyError(f"checkpoint version {version} does not exist in {store_root}")
        hit = self.cached(manifest.content_hash, episodes)
        if hit is not None:
            return hit
        store.verify(version)
        report = self._evaluate(
            functools.partial(checkpoint_policy, str(store.weights_path(version))),
            functools.partial(make_backend, self.tasks),
            list(self.tasks),
            episodes,
            seeds=range(self.first_seed, self.first_seed + episodes),
            workers=self.workers,
            actions_per_query=self.actions_per_query,
            on_episode=on_episode,
        )
        result = CheckpointEval(manifest.content_hash, episodes, {t.task_id: t.success_rate for t in report.tasks})
        with self._lock:
            self._cache[self._key(manifest.content_hash, episodes)] = result.as_dict()
            tmp = self.cache_file.with_name(f".{self.cache_file.name}.tmp")
            tmp.write_text(json.dumps(self._cache, indent=1, sort_keys=True))
            os.replace(tmp, self.cache_file)
        return result
