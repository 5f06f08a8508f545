"""HG-DAgger (Kelly et al. 2019) as a streaming SOP plug-in (sop-paper.md section 3).

Trains on the human correction steps of online episodes plus every step of the offline prior.
The original records only expert-controlled samples; SOP does not say whether it also uses
autonomous steps, so `include_successful_autonomous` adds the policy steps of successful
online episodes (filtered-BC style). The metaworld spike saw relabel-everything DAgger hurt
push-v3, which is why failed autonomous steps are never labels.

`corrections` says which human steps are labels: "all" (the original), or "successful": only those of
episodes that ended in success. A scripted (or tired) operator does not complete every takeover; the
steps of one that ran into the step limit show an operator failing, not the task being done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from sop_ros.core.algorithms.base import DataSource, EpisodeMeta, human_steps
from sop_ros.core.algorithms.imitation import ImitationAlgorithm, ImitationConfig

CORRECTIONS = ("all", "successful")


@dataclasses.dataclass(frozen=True)
class HGDaggerConfig(ImitationConfig):
    include_successful_autonomous: bool = False
    corrections: str = "all"  # "all" | "successful": human steps of every episode, or of successful ones only

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.corrections not in CORRECTIONS:
            raise ValueError(f"corrections must be one of {CORRECTIONS}, got {self.corrections!r}")


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
        if self.config.corrections == "successful" and meta.success is not True:
            return np.zeros(meta.num_steps, dtype=bool)
        return human_steps(arrays)
