"""LearnerSettings: everything the learner process runs with, and the one home of its defaults.

The server part (how it listens, whom it trusts) is a LearnerServerConfig; the training defaults
are read from TrainerConfig, so `sop learner`, `sop pretrain` and the experiments agree.
`sop learner` builds its flags' defaults from the fields below (see `default`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from sop_ros.core.algorithms.registry import ALGORITHMS
from sop_ros.core.training.trainer import TrainerConfig
from sop_ros.link.fleet_service import CompatibilityPolicy
from sop_ros.link.server import LearnerServerConfig

_TRAINER_DEFAULTS = TrainerConfig()


@dataclasses.dataclass(frozen=True)
class LearnerSettings:
    data_dir: Path  # episode, offline, checkpoint and TensorBoard stores (sop_ros.core.storage.data_layout)
    server: LearnerServerConfig  # no default: a learner is secure unless told to be plaintext
    train: bool = True  # False: only serve the link (robots keep the checkpoints they have)
    algorithm: str = "hg_dagger"
    batch_size: int = _TRAINER_DEFAULTS.batch_size
    learning_rate: float = _TRAINER_DEFAULTS.learning_rate
    ema_decay: float = _TRAINER_DEFAULTS.ema_decay  # > 0: the fleet gets the weights' moving average
    publish_every_updates: int = _TRAINER_DEFAULTS.publish_every_updates
    publish_every_s: float = _TRAINER_DEFAULTS.publish_every_s
    # A checkpoint every few seconds is gigabytes an hour: after each publish keep the newest N
    # (the base policy and each fleet's latest stay); 0 keeps every one.
    keep_checkpoints: int = 20
    seed: int = _TRAINER_DEFAULTS.seed  # sampler and torch
    torch_threads: int = 1  # robots share the machine in a local fleet
    # The fleet's task set (uploads of other tasks are refused; RECAP's step budgets); None: the package's.
    tasks_file: Optional[Path] = None
    # Commits wake the trainer at once; this slow re-read of the episode index is only a safety net.
    episode_poll_s: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm: unknown {self.algorithm!r}; known: {sorted(ALGORITHMS)}")
        if self.keep_checkpoints < 0:
            raise ValueError(f"keep_checkpoints: must be >= 0 (0 keeps every checkpoint), got {self.keep_checkpoints}")
        if self.torch_threads < 1:
            raise ValueError(f"torch_threads: must be >= 1, got {self.torch_threads}")
        self.trainer_config()  # batch size, learning rate, cadence: TrainerConfig checks them

    def trainer_config(self) -> TrainerConfig:
        return TrainerConfig(
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            ema_decay=self.ema_decay,
            seed=self.seed,
            publish_every_updates=self.publish_every_updates,
            publish_every_s=self.publish_every_s,
            poll_interval_s=self.episode_poll_s,
        )


def default(name: str) -> Any:
    """The default of a LearnerSettings field (argparse reads its defaults here)."""
    field = {f.name: f for f in dataclasses.fields(LearnerSettings)}[name]
    if field.default is dataclasses.MISSING:
        raise KeyError(f"LearnerSettings.{name} has no default")
    return field.default


def server_default(name: str) -> Any:
    """The default of a LearnerServerConfig field (for help texts: the server flags default to the --config YAML)."""
    return {f.name: f.default for f in dataclasses.fields(LearnerServerConfig)}[name]


def server_config(values: Mapping[str, Any]) -> LearnerServerConfig:
    """A LearnerServerConfig from plain values (a --config YAML mapping plus flags); ValueError names the problem."""
    known = {f.name for f in dataclasses.fields(LearnerServerConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown LearnerServerConfig keys {unknown} (known: {sorted(known)})")
    values = dict(values)
    if "compatibility" in values:
        compat = dict(values["compatibility"] or {})
        if compat.get("tasks") is not None:
            compat["tasks"] = frozenset(compat["tasks"])
        values["compatibility"] = CompatibilityPolicy(**compat)
    for key in ("tls_cert", "tls_key", "client_ca", "tokens_file"):
        if values.get(key) is not None:
            values[key] = Path(values[key])
            if not values[key].is_file():
                raise ValueError(f"{key}: no such file {values[key]}")
    try:
        return LearnerServerConfig(**values)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
