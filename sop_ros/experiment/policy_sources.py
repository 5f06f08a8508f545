"""Where an evaluated policy comes from: a checkpoint version dir, a policy file, or a baseline.

`sop eval`, `sop pretrain`'s validation and `sop bench operator` name the policy the same way:
  - a checkpoint-store version directory (vNNNNNN/ with model.safetensors + manifest.json; the
    weights' hash is verified against the manifest before use),
  - a policy file written by VLAPolicy.save (*.safetensors),
  - `expert` (the scripted MetaWorld expert: the ceiling) or `random` (uniform actions: the floor).
The factory is resolved here, where a bad argument gives a clear error, and called in each
evaluation worker (picklable via functools.partial).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

BASELINES = ("expert", "random")


class PolicySourceError(ValueError):
    """The named policy does not exist or fails verification."""


def checkpoint_policy_factory(checkpoint: str, device: Optional[str], backend):
    """Load a VLA policy in the evaluation worker."""
    from safetensors.torch import load_file

    from sop_ros.core.model.vla import VLAPolicy

    path = Path(checkpoint)
    if path.is_dir():
        return VLAPolicy.from_checkpoint_tensors(load_file(str(path / "model.safetensors")), device=device)
    return VLAPolicy.load(path, device=device)


def resolve_policy_factory(checkpoint: str, device: Optional[str]):
    """Check the policy argument up front and return a factory `(backend) -> policy`."""
    from sop_ros.backends.metaworld_sim import expert_policy_factory
    from sop_ros.core.evaluation.harness import random_policy_factory

    if checkpoint == "expert":
        return expert_policy_factory
    if checkpoint == "random":
        return random_policy_factory
    path = Path(checkpoint)
    if path.is_dir():
        _verify_version_dir(path)
    elif not path.is_file():
        raise PolicySourceError(f"{checkpoint}: no such file or directory (or use one of {BASELINES})")
    return functools.partial(checkpoint_policy_factory, str(path), device)


def _verify_version_dir(path: Path) -> None:
    """A directory with a manifest (a store's vNNNNNN/ or the shipped base) must hold the weights it names."""
    if not (path / "model.safetensors").is_file():
        raise PolicySourceError(f"{path}: no model.safetensors (not a checkpoint version directory)")
    if not (path / "manifest.json").is_file():
        return  # bare weights: nothing to check them against
    from sop_ros.core.storage.checkpoint_files import CheckpointIntegrityError, verify_checkpoint_file
    from sop_ros.core.storage.checkpoint_store import CheckpointManifest

    try:
        manifest = CheckpointManifest.from_json((path / "manifest.json").read_bytes())
        verify_checkpoint_file(path / "model.safetensors", manifest.content_hash)
    except (OSError, ValueError, CheckpointIntegrityError) as exc:  # a refusal, said once with the path
        raise PolicySourceError(f"{path}: checkpoint verification failed: {exc}") from None
