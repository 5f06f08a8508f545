"""Behaviour cloning: every step of the offline demonstrations, nothing from the fleet."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sop_ros.core.algorithms.base import DataSource, EpisodeMeta
from sop_ros.core.algorithms.imitation import ImitationAlgorithm, ImitationConfig

BCConfig = ImitationConfig


class BehaviourCloning(ImitationAlgorithm):
    name = "bc"

    def trusted_steps(self, arrays: Mapping[str, np.ndarray], meta: EpisodeMeta) -> np.ndarray:
        return np.full(meta.num_steps, meta.source == DataSource.OFFLINE, dtype=bool)
