"""`make_algorithm(name, config)`: the one place that maps algorithm names to plug-ins."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from typing import Any, Optional, Union

from sop_ros.core.algorithms.base import Algorithm
from sop_ros.core.algorithms.bc import BCConfig, BehaviourCloning
from sop_ros.core.algorithms.hg_dagger import HGDagger, HGDaggerConfig
from sop_ros.core.algorithms.recap import Recap, RecapConfig

ALGORITHMS: dict[str, tuple[type, Callable[..., Algorithm]]] = {
    "bc": (BCConfig, BehaviourCloning),
    "hg_dagger": (HGDaggerConfig, HGDagger),
    "recap": (RecapConfig, Recap),
}


def make_algorithm(name: str, config: Union[None, Mapping[str, Any], object] = None) -> Algorithm:
    """Build an algorithm from its name and a config dataclass or a mapping of its fields."""
    if name not in ALGORITHMS:
        hint = difflib.get_close_matches(name, ALGORITHMS, n=1)
        raise ValueError(
            f"unknown algorithm {name!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else f"; known: {sorted(ALGORITHMS)}")
        )
    config_cls, factory = ALGORITHMS[name]
    if config is None:
        config = config_cls()
    elif isinstance(config, Mapping):
        known = {f.name for f in dataclasses.fields(config_cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown {name} config field(s): {sorted(unknown)}; known: {sorted(known)}")
        config = config_cls(**config)
    elif not isinstance(config, config_cls):
        raise TypeError(f"{name} expects a {config_cls.__name__}, got {type(config).__name__}")
    return factory(config)


def algorithm_config_dict(algorithm: Algorithm) -> dict[str, Any]:
    cfg: Optional[Any] = getattr(algorithm, "config", None)
    return dataclasses.asdict(cfg) if cfg is not None else {}
