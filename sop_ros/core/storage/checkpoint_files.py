"""A checkpoint version's files as bytes: serialised for a publish, hash-checked when read back.

checkpoint_store.py decides where the files go and when; this module turns tensors into safetensors bytes
(CheckpointFiles), writes a file with its fsync (write_synced) and refuses bytes whose sha256 is not the
expected one (verify_checkpoint_file, load_verified). torch is imported lazily so robots can use
verify_checkpoint_file without it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from sop_ros.core.episodes.hashing import bytes_sha256, file_sha256

if TYPE_CHECKING:
    import torch


class CheckpointIntegrityError(ValueError):
    """A checkpoint file does not match the hash its manifest (or announcement) promises."""


def tensor_dict_for_save(tensors: Mapping[str, Any], what: str) -> dict[str, torch.Tensor]:
    """CPU, contiguous torch tensors; tensors sharing storage (tied weights) are cloned, as safetensors requires."""
    import torch

    if not tensors:
        raise ValueError(f"{what}: no tensors to save")
    out: dict[str, torch.Tensor] = {}
    seen_storage: set[int] = set()
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what}: tensor names must be non-empty strings, got {name!r}")
        if isinstance(value, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(value))
        elif isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
        else:
            raise TypeError(
                f"{what}: tensor {name!r} is a {type(value).__name__}, expected torch.Tensor or numpy.ndarray"
            )
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen_storage and t.numel() > 0:
            t = t.clone()
        seen_storage.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def verify_checkpoint_file(path: str | Path, expected_sha256: str) -> None:
    """Raise CheckpointIntegrityError unless the file's sha256 equals expected_sha256 (robots use it on downloads)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointIntegrityError(f"{path}: checkpoint file is missing")
    actual = file_sha256(path)
    if actual != expected_sha256.lower():
        raise CheckpointIntegrityError(f"{path}: sha256 {actual} does not match the expected {expected_sha256}")


def load_verified(path: Path, expected_sha256: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    if not path.is_file():
        raise CheckpointIntegrityError(f"{path}: checkpoint file is missing")
    data = path.read_bytes()
    actual = bytes_sha256(data)
    if actual != expected_sha256:
        raise CheckpointIntegrityError(f"{path}: sha256 {actual} does not match the manifest's {expected_sha256}")
    return load(data)


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
    """The serialized bytes of one version, made before the publish lock is taken."""

    weights: bytes
    state: Optional[bytes]  # train_state.safetensors, when a train state is published
    state_meta: Optional[bytes]  # train_state.json, present exactly when `state` is

    @classmethod
    def serialize(
        cls,
        tensors: Mapping[str, Any],
        train_state: Mapping[str, Any] | None,
        train_state_meta: Mapping[str, Any] | None,
    ) -> CheckpointFiles:
        from safetensors.torch import save

        weights = save(tensor_dict_for_save(tensors, "checkpoint weights"))
        if train_state is None:
            return cls(weights, None, None)
        state = save(tensor_dict_for_save(train_state, "train_state"))
        return cls(weights, state, json.dumps(dict(train_state_meta or {}), sort_keys=True, allow_nan=False).encode())
