"""An exponential moving average of the policy's weights: what the learner publishes when ema_decay > 0.

The optimiser keeps training the raw weights; the fleet runs their average over roughly the last
1 / (1 - decay) updates. An online learner publishes every few seconds at a constant learning rate,
so its raw checkpoints jitter around the loss minimum from one to the next; the average does not
(openpi, Diffusion Policy and LeRobot train policies with a weight EMA for the same reason). The
update is torch's own (torch.optim.swa_utils.get_ema_multi_avg_fn); the copy is made here rather
than by AveragedModel because AveragedModel deep-copies the whole module, the shared frozen
sentence encoder included.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn

from sop_ros.core.model.vla import VLAPolicy

RAW_WEIGHTS_PREFIX = "raw/"  # train-state keys of the raw weights when the published ones are the average


class WeightAverage:
    """EMA of a VLAPolicy's state (parameters and buffers); starts from the weights of its first update."""

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self._ema = get_ema_multi_avg_fn(decay)
        self.policy: VLAPolicy | None = None  # None until the first update (or start_from)

    def start_from(self, like: VLAPolicy, tensors: Mapping[str, torch.Tensor]) -> None:
        """The average is `tensors` (a published average, on resume), in a model shaped like `like`."""
        copy = VLAPolicy(like.config, instruction_encoder=like.instruction_encoder, device=like.device)
        copy.load_tensors(tensors)
        copy.eval()
        copy.requires_grad_(False)
        self.policy = copy

    @torch.no_grad()
    def update(self, policy: VLAPolicy) -> None:
        if self.policy is None:
            self.start_from(policy, policy.tensors())
            return
        averaged, current = self.policy.state_dict(), policy.state_dict()
        floats = [k for k, v in averaged.items() if v.is_floating_point()]
        self._ema([averaged[k] for k in floats], [current[k].detach() for k in floats], None)
        for key in averaged.keys() - set(floats):  # integer buffers (counters) are copied
            averaged[key].copy_(current[key])

    def published(self, policy: VLAPolicy) -> VLAPolicy:
        """The model whose weights are published: the average once it exists, else the raw policy."""
        return self.policy if self.policy is not None else policy


def raw_weights_state(policy: VLAPolicy) -> dict[str, torch.Tensor]:
    """The raw weights as train-state tensors (the checkpoint's weights are the average)."""
    return {f"{RAW_WEIGHTS_PREFIX}{k}": v for k, v in policy.tensors().items()}


def raw_weights_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The raw weights saved by raw_weights_state; empty when the checkpoint's weights are the raw ones."""
    n = len(RAW_WEIGHTS_PREFIX)
    return {k[n:]: v for k, v in state.items() if k.startswith(RAW_WEIGHTS_PREFIX)}
