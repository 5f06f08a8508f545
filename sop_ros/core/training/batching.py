"""Assemble a Batch from sampled (episode, step) refs, loading observations lazily.

Only the drawn frames are read (from memory-mapped per-episode arrays), so memory does not grow
with the image bytes of the buffer; per-episode targets are small and kept in memory.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from sop_ros.core.algorithms.base import Batch, StepTargets
from sop_ros.core.training.protocols import EpisodeArrays
from sop_ros.core.training.sampler import SampleRef


class BatchAssembler:
    def __init__(self, arrays: EpisodeArrays, device: torch.device, open_episodes: int = 256):
        self._arrays = arrays
        self._device = device
        self._open: collections.OrderedDict[str, Mapping[str, np.ndarray]] = collections.OrderedDict()
        self._open_limit = open_episodes

    def episode_arrays(self, key: str) -> Mapping[str, np.ndarray]:
        """LRU of opened episodes (memory-mapped handles, not copies)."""
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        arrs = self._arrays.arrays(key)
        self._open[key] = arrs
        if len(self._open) > self._open_limit:
            self._open.popitem(last=False)
        return arrs

    def build(
        self, refs: Sequence[SampleRef], targets: Mapping[str, StepTargets], instructions: Mapping[str, str]
    ) -> Batch:
        images, states = [], []
        fields: dict[str, list[np.ndarray]] = collections.defaultdict(list)
        extra: dict[str, list[tuple[np.ndarray, np.ndarray, bool]]] = collections.defaultdict(list)
        for ref in refs:
            arrs = self.episode_arrays(ref.episode_key)
            images.append(np.asarray(arrs["images"][ref.step]))
            states.append(np.asarray(arrs["states"][ref.step], dtype=np.float32))
            tg = targets[ref.episode_key]
            for name, arr in tg.fields.items():
                fields[name].append(arr[ref.step])
            for name, idx in tg.observation_steps.items():
                other = int(idx[ref.step])
                valid = other >= 0
                j = other if valid else ref.step
                extra[name].append(
                    (np.asarray(arrs["images"][j]), np.asarray(arrs["states"][j], dtype=np.float32), valid)
                )
        dev = self._device
        out = {name: torch.from_numpy(np.stack(vals)).to(dev) for name, vals in fields.items()}
        for name, rows in extra.items():
            out[f"{name}_images"] = torch.from_numpy(np.stack([r[0] for r in rows])).to(dev)
            out[f"{name}_states"] = torch.from_numpy(np.stack([r[1] for r in rows])).to(dev)
            out[f"{name}_valid"] = torch.tensor([r[2] for r in rows], dtype=torch.bool, device=dev)
        return Batch(
            images=torch.from_numpy(np.stack(images)).to(dev),
            states=torch.from_numpy(np.stack(states)).to(dev),
            instructions=[instructions[r.episode_key] for r in refs],
            task_ids=[r.task_id for r in refs],
            sources=[r.source for r in refs],
            targets=out,
        )
