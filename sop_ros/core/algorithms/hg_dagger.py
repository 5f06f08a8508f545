"""HG-DAgger (Kelly et al. 2019) as a streaming SOP plug-in (sop-paper.md section 3).

Trains on the human correction steps of online episodes plus every step of the offline prior.
The original records only expert-controlled samples; SOP does not say whether it also uses
autonomous steps, so `include_successful_autonomous` adds the policy steps of successful
online episodes (filtered-BC style). The metaworld spike saw relabel-everything DAgger hurt
push-v3, which is why failed autonomous steps are never labels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from sop_ros.core.algorithms.base import DataSource, EpisodeMeta, human_steps
from sop_ros.core.algorithms.imitation import ImitationAlgorithm, ImitationConfig


@dataclasses.dataclass(frozen=True)
class HGDaggerConfig(ImitationConfig):
    include_successful_autonomous: bool = False


class HGDagger(ImitationAlgorithm):
    name = "hg_dagger"

    def __init__(self, config: HGDaggerConfig):
        super().__init__(config)
        self.config: HGDaggerConfig = config

    def trusted_steps(self, arrays: Mapping[str, np.ndarray], meta: EpisodeMeta) -> np.ndarray:
        if meta.source == DataSource.OFFLINE:
            return np.ones(meta.num_steps, dtype=bool)
        if self.config.include_successful_autonomous and meta.success is True:
            return np.ones(meta.num_steps, dtype=bool)
        return human_steps(arrays)
