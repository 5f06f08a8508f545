"""Content hashes: sha256 of files (transport/integrity) and of an episode's decoded content.

The file hash identifies exact bytes (what the upload protocol and checkpoint manifests check).
The episode content hash identifies what an episode *says* (arrays + metadata, canonical order),
so it survives re-encoding and detects any corruption that changes a decoded value.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sop_ros.core.episodes.episode import Episode

# Array fields of an Episode, in the canonical hashing (and storage) order.
EPISODE_ARRAY_FIELDS: tuple[str, ...] = (
    "images",
    "states",
    "actions",
    "actors",
    "policy_versions",
    "proposed_chunks",
    "stamps_ns",
)

_CANONICAL_NAN32 = np.float32(np.nan)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the exact bytes of a file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def bytes_sha256(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def episode_metadata_for_hash(ep: Episode) -> dict:
    """The non-array fields that define an episode (everything else is derived)."""
    return {
        "episode_id": ep.episode_id,
        "robot_id": ep.robot_id,
        "task_id": ep.task_id,
        "instruction": ep.instruction,
        "success": ep.success,
        "label_source": ep.label_source.value,
        "start_ns": int(ep.start_ns),
        "end_ns": int(ep.end_ns),
        "intervention_reasons": list(ep.intervention_reasons),
    }


def _canonical_array_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if arr.dtype.kind == "f":
        # NaN payload bits are not preserved by every encoder; all NaNs hash the same.
        arr = np.where(np.isnan(arr), arr.dtype.type(np.nan), arr)
    return arr.tobytes()


def episode_content_hash(ep: Episode) -> str:
    """sha256 over the episode's arrays (name, dtype, shape, bytes) then its metadata as canonical JSON."""
    h = hashlib.sha256(b"sop-episode-content-v1\0")
    for name in EPISODE_ARRAY_FIELDS:
        arr = getattr(ep, name)
        header = json.dumps([name, np.dtype(arr.dtype).newbyteorder("<").str, list(arr.shape)]).encode()
        payload = _canonical_array_bytes(arr)
        h.update(len(header).to_bytes(8, "little") + header)
        h.update(len(payload).to_bytes(8, "little"))
        h.update(payload)
    meta = json.dumps(episode_metadata_for_hash(ep), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    h.update(len(meta).to_bytes(8, "little") + meta)
    return h.hexdigest()
