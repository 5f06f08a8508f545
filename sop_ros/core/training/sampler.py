"""Task-aware adaptive online/offline sampler (SOP, sop-paper.md section 2).

Between tasks: each task that has data gets weight 1/M, so a task with more robots, shorter
episodes or more demos cannot crowd out the others. Optionally (`task_weighting="struggle"`)
part of the mass goes to tasks that fail or need interventions more often.

Within task m, a sample comes from the online buffer with probability

    w_on = clip( sigmoid(alpha * l_on - l_off), min_online_share, max_online_share )

where l_on / l_off are exponential moving averages of the task's recent training loss on online
and offline samples. Constants and why:
- alpha = 1.5: the paper only says alpha > 1 (a built-in bias towards fresh data).
- Losses are divided by their mean (l_on + l_off) / 2 before the rule (`normalise_losses`),
  because the rule is not scale-free: with MSE losses of O(0.01) sigmoid(alpha*l_on - l_off)
  would sit at 0.5 whatever happens. Normalised, equal losses give 0.62, online loss twice the
  offline one 0.79, half of it 0.42, four times it reaches the 0.8 clip.
- clip [0.2, 0.8] as in the paper: each source keeps at least 20 % of a task's draws (the
  guard against forgetting the offline prior).
- EMA with span `loss_window` = 200 learner updates (the paper's moving-average window W).
- Cold start: a task with no online data draws offline only (and vice versa); before both
  losses have been seen, w_on = initial_online_share.

Items are (episode key, step) pairs held as per-episode step-index arrays; nothing here holds
images. The trainer fetches observations for the drawn items at batch time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

import numpy as np

from sop_ros.core.algorithms.base import DataSource


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    alpha: float = 1.5
    min_online_share: float = 0.2
    max_online_share: float = 0.8
    loss_window: int = 200
    normalise_losses: bool = True
    initial_online_share: float = 0.5
    task_weighting: str = "uniform"  # "uniform" | "struggle"
    struggle_mix: float = 0.5  # with "struggle": share of task mass given by (1 - success) + intervention rate
    outcome_window: int = 20  # episodes, span of the per-task success / intervention EMAs

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_online_share <= self.max_online_share <= 1.0:
            raise ValueError("need 0 <= min_online_share <= max_online_share <= 1")
        if self.loss_window < 1 or self.outcome_window < 1:
            raise ValueError("loss_window and outcome_window must be >= 1")
        if self.task_weighting not in ("uniform", "struggle"):
            raise ValueError(f"task_weighting must be 'uniform' or 'struggle', got {self.task_weighting!r}")
        if not 0.0 <= self.struggle_mix <= 1.0:
            raise ValueError("struggle_mix must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class SampleRef:
    task_id: str
    source: DataSource
    episode_key: str
    step: int


class _Pool:
    """The trainable (episode, step) items of one (task, source)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.steps: list[np.ndarray] = []
        self._cum: Optional[np.ndarray] = None

    def add(self, key: str, steps: np.ndarray) -> None:
        self.keys.append(key)
        self.steps.append(np.asarray(steps, dtype=np.int64))
        self._cum = None

    @property
    def size(self) -> int:
        return int(self.cum[-1]) if self.keys else 0

    @property
    def cum(self) -> np.ndarray:
        if self._cum is None:
            self._cum = np.cumsum([s.shape[0] for s in self.steps])
        return self._cum

    def item(self, flat: int) -> tuple[str, int]:
        ep = int(np.searchsorted(self.cum, flat, side="right"))
        start = int(self.cum[ep - 1]) if ep else 0
        return self.keys[ep], int(self.steps[ep][flat - start])


def _ema(prev: Optional[float], value: float, span: int) -> float:
    decay = 1.0 - 2.0 / (span + 1.0)
    return value if prev is None else decay * prev + (1.0 - decay) * value


class TaskAwareSampler:
    def __init__(self, config: SamplerConfig = SamplerConfig(), seed: int = 0):
        self.config = config
        self._rng = np.random.default_rng(seed)
        self._pools: dict[tuple[str, DataSource], _Pool] = {}
        self._episode_keys: set[str] = set()
        self._loss: dict[tuple[str, DataSource], float] = {}
        self._success: dict[str, float] = {}
        self._intervention: dict[str, float] = {}

    # ---- index --------------------------------------------------------------------------
    def add_episode(self, key: str, task_id: str, source: DataSource, trainable_steps: np.ndarray) -> int:
        """Index an episode's trainable steps; returns how many were added (0 for a known key)."""
        if key in self._episode_keys:
            return 0
        steps = np.asarray(trainable_steps, dtype=np.int64)
        self._episode_keys.add(key)
        if steps.size:
            self._pools.setdefault((task_id, DataSource(source)), _Pool()).add(key, steps)
        return int(steps.size)

    def __contains__(self, key: str) -> bool:
        return key in self._episode_keys

    def buffer_sizes(self) -> dict[tuple[str, DataSource], int]:
        return {k: p.size for k, p in self._pools.items()}

    def tasks(self) -> list[str]:
        return sorted({t for (t, _), p in self._pools.items() if p.size})

    def _size(self, task: str, source: DataSource) -> int:
        pool = self._pools.get((task, source))
        return pool.size if pool else 0

    # ---- weights ------------------------------------------------------------------------
    def online_share(self, task_id: str) -> float:
        """Probability that a draw for this task comes from its online buffer."""
        if self._size(task_id, DataSource.ONLINE) == 0:
            return 0.0
        if self._size(task_id, DataSource.OFFLINE) == 0:
            return 1.0
        c = self.config
        l_on = self._loss.get((task_id, DataSource.ONLINE))
        l_off = self._loss.get((task_id, DataSource.OFFLINE))
        if l_on is None or l_off is None:
            share = c.initial_online_share
        else:
            if c.normalise_losses:
                mean = 0.5 * (l_on + l_off)
                if mean > 0:
                    l_on, l_off = l_on / mean, l_off / mean
            share = 1.0 / (1.0 + math.exp(-(c.alpha * l_on - l_off)))
        return float(min(max(share, c.min_online_share), c.max_online_share))

    def task_weights(self) -> dict[str, float]:
        tasks = self.tasks()
        if not tasks:
            return {}
        uniform = np.full(len(tasks), 1.0 / len(tasks))
        if self.config.task_weighting == "uniform":
            w = uniform
        else:
            struggle = np.array([(1.0 - self._success.get(t, 0.0)) + self._intervention.get(t, 0.0) for t in tasks])
            struggle_w = struggle / struggle.sum() if struggle.sum() > 0 else uniform
            w = (1.0 - self.config.struggle_mix) * uniform + self.config.struggle_mix * struggle_w
        return dict(zip(tasks, w.tolist()))

    def weights(self) -> dict[str, float]:
        """Flat figures for logging: task_weight/<task>, online_share/<task>, loss_ema/<task>/<source>."""
        out = {f"task_weight/{t}": w for t, w in self.task_weights().items()}
        out.update({f"online_share/{t}": self.online_share(t) for t in self.tasks()})
        out.update({f"loss_ema/{t}/{s.value}": v for (t, s), v in sorted(self._loss.items())})
        return out

    # ---- sampling -----------------------------------------------------------------------
    def sample(self, batch_size: int) -> list[SampleRef]:
        weights = self.task_weights()
        if not weights:
            raise LookupError("the sampler has no trainable items yet")
        tasks = list(weights)
        task_idx = self._rng.choice(len(tasks), size=batch_size, p=np.array(list(weights.values())))
        shares = {t: self.online_share(t) for t in tasks}
        refs = []
        for i in task_idx:
            task = tasks[int(i)]
            source = DataSource.ONLINE if self._rng.random() < shares[task] else DataSource.OFFLINE
            pool = self._pools[(task, source)]
            key, step = pool.item(int(self._rng.integers(pool.size)))
            refs.append(SampleRef(task, source, key, step))
        return refs

    # ---- feedback -----------------------------------------------------------------------
    def record_losses(self, refs: Sequence[SampleRef], per_sample_loss: Iterable[float]) -> None:
        """Update each (task, source) EMA with the mean loss of its samples in this batch."""
        sums: dict[tuple[str, DataSource], list[float]] = {}
        for ref, loss in zip(refs, per_sample_loss, strict=True):
            sums.setdefault((ref.task_id, ref.source), []).append(float(loss))
        for key, values in sums.items():
            self._loss[key] = _ema(self._loss.get(key), float(np.mean(values)), self.config.loss_window)

    def record_outcome(self, task_id: str, success: Optional[bool], intervention_rate: float) -> None:
        """Feed an online episode's outcome (success label, fraction of human steps)."""
        span = self.config.outcome_window
        if success is not None:
            self._success[task_id] = _ema(self._success.get(task_id), float(success), span)
        self._intervention[task_id] = _ema(self._intervention.get(task_id), float(intervention_rate), span)

    # ---- resume -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (EMAs and RNG); the index is rebuilt from the stores on resume."""
        return {
            "loss_ema": [[t, s.value, v] for (t, s), v in sorted(self._loss.items())],
            "success_ema": dict(self._success),
            "intervention_ema": dict(self._intervention),
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            self._loss = {(t, DataSource(s)): float(v) for t, s, v in state["loss_ema"]}
            self._success = {k: float(v) for k, v in state["success_ema"].items()}
            self._intervention = {k: float(v) for k, v in state["intervention_ema"].items()}
            self._rng.bit_generator.state = dict(state["rng"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"sampler state is malformed: {exc}") from exc
