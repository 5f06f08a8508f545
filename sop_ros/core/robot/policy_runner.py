"""Running a VLA checkpoint on a robot: verified loading, chunk execution, swaps at episode boundaries.

- `load_checkpoint(path, sha256)` reads the file once, checks its sha256 on those bytes (so what
  is verified is what is loaded), and rebuilds the policy from the safetensors content (config
  tensor of a published checkpoint, or the config metadata of `VLAPolicy.save`).
- `ChunkExecutor` runs the policy every `execute_horizon` steps and hands out one action per
  step, with the rest of the chunk (padded with its last action to keep K rows) as the proposal.
- `PolicySlot` holds the running policy and at most one loaded-but-waiting policy; the waiting
  one replaces the running one only when `at_episode_boundary()` is called.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np

from sop_ros.core.episodes.hashing import bytes_sha256

log = logging.getLogger(__name__)


class CheckpointRefused(ValueError):
    """A checkpoint cannot be used; str() says why (missing file, hash mismatch, bad content)."""


class Policy(Protocol):
    def act(self, observation: dict, instruction: str, indicator: Any = None) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class LoadedPolicy:
    version: int
    policy: Any  # VLAPolicy (kept Any so tests can pass any object with act())
    content_hash: str
    chunk_size: int
    action_dim: int


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    return header.get("__metadata__") or {}


def load_checkpoint(path: str | Path, expected_sha256: str, version: int, device: str = "cpu") -> LoadedPolicy:
    """Verify and load a VLA checkpoint file; raise CheckpointRefused naming the problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    from sop_ros.core.model import ConfigError
    from sop_ros.core.model.vla import CONFIG_METADATA_KEY, CONFIG_TENSOR_KEY, VLAPolicy

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointRefused(f"checkpoint {path}: cannot read: {exc.strerror}") from None
    actual = bytes_sha256(data)
    if expected_sha256 and actual != expected_sha256.lower():
        raise CheckpointRefused(f"checkpoint {path}: sha256 {actual} does not match the announced {expected_sha256}")
    try:
        tensors = load_tensors(data)
        if CONFIG_TENSOR_KEY in tensors:
            policy = VLAPolicy.from_checkpoint_tensors(tensors, device=device)
        else:
            meta = _safetensors_metadata(data)
            if CONFIG_METADATA_KEY not in meta:
                raise ConfigError("no model config (neither a config tensor nor config metadata)")
            policy = VLAPolicy.from_tensors(json.loads(meta[CONFIG_METADATA_KEY]), tensors, device=device)
    except (SafetensorError, ConfigError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointRefused(f"checkpoint {path}: not a loadable VLA checkpoint: {exc}") from None
    policy.eval()
    return LoadedPolicy(version, policy, actual, policy.config.chunk_size, policy.config.action_dim)


@dataclasses.dataclass(frozen=True)
class StepProposal:
    action: np.ndarray  # float32 [A]: what the policy wants executed now
    chunk: np.ndarray  # float32 [K, A]: the rest of the current chunk, action first
    policy_version: int
    inference_ms: float  # forward time if this step ran the model, else 0


class ChunkExecutor:
    """Open-loop execution of action chunks: a forward pass every `execute_horizon` steps."""

    def __init__(
        self, execute_horizon: int, indicator: Optional[str] = None, clock: Callable[[], float] = time.perf_counter
    ):
        if execute_horizon < 1:
            raise ValueError(f"execute_horizon: must be >= 1, got {execute_horizon}")
        self.execute_horizon = execute_horizon
        self.indicator = indicator or None
        self._clock = clock
        self._chunk: Optional[np.ndarray] = None
        self._index = 0

    def reset(self) -> None:
        """Start of an episode: the next step runs the model."""
        self._chunk, self._index = None, 0

    def step(self, loaded: LoadedPolicy, observation: dict, instruction: str) -> StepProposal:
        inference_ms = 0.0
        horizon = min(self.execute_horizon, loaded.chunk_size)
        if self._chunk is None or self._index >= horizon:
            start = self._clock()
            self._chunk = np.asarray(
                loaded.policy.act(observation, instruction, indicator=self.indicator), dtype=np.float32
            )
            inference_ms = (self._clock() - start) * 1e3
            self._index = 0
        rest = self._chunk[self._index :]
        padded = np.concatenate([rest, np.repeat(rest[-1:], self._chunk.shape[0] - rest.shape[0], axis=0)])
        self._index += 1
        return StepProposal(rest[0].copy(), padded, loaded.version, inference_ms)


class PolicySlot:
    """The running policy plus one that waits for the next episode boundary. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current: Optional[LoadedPolicy] = None
        self._waiting: Optional[LoadedPolicy] = None

    @property
    def waiting_version(self) -> Optional[int]:
        with self._lock:
            return self._waiting.version if self._waiting else None

    def offer(self, loaded: LoadedPolicy, running_episode: bool) -> bool:
        """A newly loaded policy: used now when no episode runs, else at the next boundary. True = swapped now."""
        with self._lock:
            if self.current is not None and loaded.version <= self.current.version:
                log.info("ignoring checkpoint v%d: v%d is already running", loaded.version, self.current.version)
                return False
            if self.current is None or not running_episode:
                self.current, self._waiting = loaded, None
                return True
            if self._waiting is None or loaded.version > self._waiting.version:
                self._waiting = loaded
            return False

    def at_episode_boundary(self) -> Optional[int]:
        """Swap in the waiting policy, if any; returns its version."""
        with self._lock:
            if self._waiting is None:
                return None
            self.current, self._waiting = self._waiting, None
            return self.current.version
