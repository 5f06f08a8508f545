"""Post-training algorithms as plug-ins: stored episodes -> targets, and the loss."""

from sop_ros.core.algorithms.base import (
    PER_SAMPLE_LOSS,
    Algorithm,
    Batch,
    DataSource,
    EpisodeMeta,
    StepTargets,
    chunk_labels,
)
from sop_ros.core.algorithms.bc import BCConfig, BehaviourCloning
from sop_ros.core.algorithms.hg_dagger import HGDagger, HGDaggerConfig
from sop_ros.core.algorithms.recap import Recap, RecapConfig
from sop_ros.core.algorithms.registry import ALGORITHMS, algorithm_config_dict, make_algorithm

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "BCConfig",
    "Batch",
    "BehaviourCloning",
    "DataSource",
    "EpisodeMeta",
    "HGDagger",
    "HGDaggerConfig",
    "PER_SAMPLE_LOSS",
    "Recap",
    "RecapConfig",
    "StepTargets",
    "algorithm_config_dict",
    "chunk_labels",
    "make_algorithm",
]
