"""RECAP (pi*0.6, arXiv 2511.14759) as a SOP plug-in; sop-paper.md section 4.

Targets (model-free, per episode of T steps, per-task max length L):
  reward   r_t = -1 for t < T-1; r_{T-1} = 0 on success, -failure_cost on failure  (pi*0.6 Eq. 5)
  return   R_t = sum_{t' >= t} r_t' / L, clipped to [value_min, value_max] = [-1, 0]
  value    bin index of R_t on `value_bins` uniform bins (cross-entropy target)
  n-step   G_t = sum_{k < n} r_{t+k} / L and the bootstrap step t+n; when t+n >= T the
           bootstrap is dropped and G_t = R_t (Monte Carlo to the end).
Loss (needs the value network, so it lives at batch time):
  A_t = G_t + V(s_{t+n}) - V(s_t); indicator I_t = A_t > eps_task, where eps_task is the
  (1 - positive_fraction) quantile of the task's recent advantages (paper: ~40 % positive in
  post-training); human-correction steps (and, by default, offline demos) are forced positive;
  the indicator is dropped to NONE with probability indicator_dropout (paper: 30 %) so the same
  network learns the unconditional policy for classifier-free guidance at inference.
  total = chunk MSE(policy | I) + value_loss_weight * CE(value bins)   (value term off when frozen)
Unlabelled episodes give no value targets and only their human steps train the policy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from sop_ros.core.algorithms.base import (
    PER_SAMPLE_LOSS,
    Batch,
    DataSource,
    EpisodeMeta,
    StepTargets,
    chunk_labels,
    human_steps,
    masked_chunk_mse,
    require_fields,
)
from sop_ros.core.algorithms.imitation import ImitationConfig

BOOTSTRAP = "bootstrap"  # observation_steps key of the n-step bootstrap state


@dataclasses.dataclass(frozen=True)
class RecapConfig(ImitationConfig):
    value_bins: int = 51  # must equal the model's value_bins (paper: 201)
    value_min: float = -1.0
    value_max: float = 0.0
    max_episode_steps: int = 300  # L for normalisation when the task is not in task_max_steps
    task_max_steps: Mapping[str, int] = dataclasses.field(default_factory=dict)
    failure_cost_steps: Optional[float] = None  # C_fail in steps; None = L (a failure ends at return -1)
    n_step: int = 10  # paper uses 50 at 30 Hz on minutes-long tasks; MetaWorld episodes are 60-300 steps
    positive_fraction: float = 0.4
    threshold_window: int = 4096  # recent advantages kept per task for the quantile
    indicator_dropout: float = 0.3
    value_loss_weight: float = 1.0
    train_value: bool = True  # False: value network frozen (pre-trained offline, as SOP does)
    offline_forced_positive: bool = True  # demos are good data: I = positive, as in pi*0.6's SFT stage

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.value_bins < 2:
            raise ValueError("value_bins must be >= 2")
        if self.n_step < 1:
            raise ValueError("n_step must be >= 1")
        if not 0.0 < self.positive_fraction < 1.0:
            raise ValueError("positive_fraction must be in (0, 1)")
        if not 0.0 <= self.indicator_dropout < 1.0:
            raise ValueError("indicator_dropout must be in [0, 1)")
        if self.max_episode_steps <= 0 or any(v <= 0 for v in self.task_max_steps.values()):
            raise ValueError("max episode steps must be positive")

    def max_steps(self, task_id: str) -> int:
        return int(self.task_max_steps.get(task_id, self.max_episode_steps))


def normalised_rewards(num_steps: int, success: bool, max_steps: int, failure_cost_steps: float) -> np.ndarray:
    r = np.full(num_steps, -1.0, dtype=np.float64)
    r[-1] = 0.0 if success else -float(failure_cost_steps)
    return r / max_steps


def value_bin(returns: np.ndarray, bins: int, lo: float, hi: float) -> np.ndarray:
    return np.rint((np.clip(returns, lo, hi) - lo) / (hi - lo) * (bins - 1)).astype(np.int64)


class Recap:
    name = "recap"

    def __init__(self, config: RecapConfig, seed: int = 0):
        self.config = config
        self._advantages: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        self._gen = torch.Generator().manual_seed(seed)

    def check_model(self, model_config: Any) -> None:
        from sop_ros.core.model.config import ConfigError

        c = self.config
        if model_config.chunk_size != c.chunk_size:
            raise ConfigError(f"recap: chunk_size {c.chunk_size} != model chunk_size {model_config.chunk_size}")
        if not model_config.use_indicator:
            raise ConfigError("recap needs a model with use_indicator=True")
        if (model_config.value_bins, model_config.value_min, model_config.value_max) != (
            c.value_bins,
            c.value_min,
            c.value_max,
        ):
            raise ConfigError(
                f"recap value bins {c.value_bins} on [{c.value_min}, {c.value_max}] differ from the model's"
            )

    # ---- targets ------------------------------------------------------------------------
    def targets(self, arrays: Mapping[str, np.ndarray], meta: EpisodeMeta) -> StepTargets:
        require_fields(arrays, ("actions", "actors"))
        c = self.config
        t_len = meta.num_steps
        human = human_steps(arrays)
        labelled = meta.success is not None
        chunks, mask = chunk_labels(arrays["actions"], c.chunk_size, np.ones(t_len, dtype=bool))
        forced = human | (meta.source == DataSource.OFFLINE and c.offline_forced_positive)
        policy_mask = np.ones(t_len, dtype=bool) if labelled else human.copy()
        returns = np.zeros(t_len, dtype=np.float32)
        nstep = np.zeros(t_len, dtype=np.float32)
        bootstrap = np.full(t_len, -1, dtype=np.int64)
        if labelled:
            max_steps = c.max_steps(meta.task_id)
            fail_cost = c.failure_cost_steps if c.failure_cost_steps is not None else max_steps
            r = normalised_rewards(t_len, bool(meta.success), max_steps, fail_cost)
            ret = np.clip(np.cumsum(r[::-1])[::-1], c.value_min, c.value_max)
            csum = np.concatenate([[0.0], np.cumsum(r)])
            idx = np.arange(t_len)
            ends = idx + c.n_step
            has_boot = ends < t_len
            nstep_sum = csum[np.minimum(ends, t_len)] - csum[idx]
            returns = ret.astype(np.float32)
            nstep = np.where(has_boot, nstep_sum, ret).astype(np.float32)
            bootstrap = np.where(has_boot, ends, -1).astype(np.int64)
        return StepTargets(
            trainable=policy_mask | labelled,
            fields={
                "action_chunk": chunks,
                "chunk_mask": mask,
                "policy_mask": policy_mask,
                "forced_positive": forced,
                "value_mask": np.full(t_len, labelled, dtype=bool),
                "return": returns,
                "return_bin": value_bin(returns, c.value_bins, c.value_min, c.value_max),
                "nstep_reward": nstep,
            },
            observation_steps={BOOTSTRAP: bootstrap},
        )

    # ---- thresholds ---------------------------------------------------------------------
    def record_advantages(self, task_id: str, advantages: np.ndarray) -> None:
        buf = self._advantages.setdefault(task_id, np.zeros(self.config.threshold_window, dtype=np.float32))
        n = self._counts.get(task_id, 0)
        for a in np.asarray(advantages, dtype=np.float32).ravel():
            buf[n % buf.shape[0]] = a
            n += 1
        self._counts[task_id] = n

    def threshold(self, task_id: str) -> Optional[float]:
        """eps_task: the (1 - positive_fraction) quantile of the task's recent advantages."""
        n = min(self._counts.get(task_id, 0), self.config.threshold_window)
        if n == 0:
            return None
        return float(np.quantile(self._advantages[task_id][:n], 1.0 - self.config.positive_fraction))

    def indicators(
        self, task_ids: list[str], advantages: torch.Tensor, forced_positive: torch.Tensor, policy_mask: torch.Tensor
    ) -> torch.Tensor:
        """Indicator per sample (1 positive / 2 negative) before dropout; updates the per-task windows."""
        adv = advantages.detach().cpu().numpy()
        usable = policy_mask.cpu().numpy().astype(bool)
        for task in sorted(set(task_ids)):
            sel = np.array([t == task for t in task_ids]) & usable
            if sel.any():
                self.record_advantages(task, adv[sel])
        eps = np.array(
            [self.threshold(t) if self.threshold(t) is not None else 0.0 for t in task_ids], dtype=np.float32
        )
        positive = (adv > eps) | forced_positive.cpu().numpy().astype(bool)
        return torch.from_numpy(np.where(positive, 1, 2).astype(np.int64))

    # ---- loss ---------------------------------------------------------------------------
    def loss(self, model: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        c = self.config
        tg = batch.targets
        pixels = model.pixels(batch.images, augment=model.training)
        text = model.text(batch.instructions)
        with torch.set_grad_enabled(c.train_value and torch.is_grad_enabled()):
            logits = model.value_logits(pixels, batch.states, text)
        with torch.no_grad():
            v_t = model.expected_value(logits)
            boot_valid = tg[f"{BOOTSTRAP}_valid"]
            v_boot = torch.zeros_like(v_t)
            if bool(boot_valid.any()):
                sel = boot_valid.nonzero().squeeze(1)
                boot_pix = model.pixels(tg[f"{BOOTSTRAP}_images"][sel])
                v_boot[sel] = model.expected_value(
                    model.value_logits(boot_pix, tg[f"{BOOTSTRAP}_states"][sel], text[sel])
                )
            advantages = tg["nstep_reward"] + v_boot - v_t
            ind = self.indicators(batch.task_ids, advantages, tg["forced_positive"], tg["policy_mask"]).to(
                pixels.device
            )
            dropped = torch.rand(len(batch), generator=self._gen) < c.indicator_dropout
            ind_in = torch.where(dropped.to(pixels.device), torch.zeros_like(ind), ind)
        pred = model.action_chunks(pixels, batch.states, text, ind_in)
        pmask = tg["policy_mask"].float()
        vmask = tg["value_mask"].float()
        policy_ps = masked_chunk_mse(pred, tg["action_chunk"], tg["chunk_mask"], c.later_action_weight) * pmask
        value_ps = F.cross_entropy(logits.float(), tg["return_bin"], reduction="none") * vmask
        policy_loss = policy_ps.sum() / pmask.sum().clamp(min=1.0)
        value_loss = value_ps.sum() / vmask.sum().clamp(min=1.0)
        total = policy_loss + (c.value_loss_weight * value_loss if c.train_value else 0.0)
        per_sample = policy_ps + (c.value_loss_weight * value_ps if c.train_value else 0.0)
        pos = (ind == 1).float()[tg["policy_mask"]]
        metrics: dict[str, Any] = {
            "action_loss": float(policy_loss.detach()),
            "value_loss": float(value_loss.detach()),
            "advantage_mean": float(advantages[tg["policy_mask"]].mean()) if bool(tg["policy_mask"].any()) else 0.0,
            "positive_rate": float(pos.mean()) if pos.numel() else 0.0,
            PER_SAMPLE_LOSS: per_sample.detach(),
        }
        for task in sorted(set(batch.task_ids)):
            eps = self.threshold(task)
            if eps is not None:
                metrics[f"threshold/{task}"] = eps
        return total, metrics

    # ---- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "advantages": {
                t: self._advantages[t][: min(n, self.config.threshold_window)].tolist() for t, n in self._counts.items()
            },
            "counts": dict(self._counts),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._advantages, self._counts = {}, {}
        for task, values in dict(state.get("advantages", {})).items():
            buf = np.zeros(self.config.threshold_window, dtype=np.float32)
            vals = np.asarray(values, dtype=np.float32)[: self.config.threshold_window]
            buf[: vals.shape[0]] = vals
            self._advantages[task] = buf
            self._counts[task] = int(state["counts"][task])
