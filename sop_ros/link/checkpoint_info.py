"""The wire view of a checkpoint manifest (CheckpointInfo) and its plain-Python twin on the robot."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from sop_ros.link.protos import policy_pb2


@dataclasses.dataclass(frozen=True)
class CheckpointRef:
    """What a robot knows about an announced checkpoint (manifest_json is the learner's full manifest)."""

    version: int
    parent_version: int
    content_hash: str
    algorithm: str
    training_step: int
    metrics: Mapping[str, float]
    size_bytes: int
    fleet: str
    created_ns: int
    manifest_json: str

    @classmethod
    def from_proto(cls, info: policy_pb2.CheckpointInfo) -> CheckpointRef:
        return cls(
            int(info.version),
            int(info.parent_version),
            info.content_hash,
            info.algorithm,
            int(info.training_step),
            dict(info.metrics),
            int(info.size_bytes),
            info.fleet,
            int(info.created_ns),
            info.manifest_json,
        )

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_json) if self.manifest_json else {}


def _manifest_dict(manifest: Any) -> dict[str, Any]:
    if hasattr(manifest, "to_dict"):
        return dict(manifest.to_dict())
    if dataclasses.is_dataclass(manifest):
        return dataclasses.asdict(manifest)
    raise TypeError(f"cannot serialise checkpoint manifest of type {type(manifest).__name__}")


def info_from_manifest(manifest: Any) -> policy_pb2.CheckpointInfo:
    """CheckpointInfo from the store's CheckpointManifest (fields the manifest lacks stay at their defaults)."""
    doc = _manifest_dict(manifest)
    metrics = {
        str(k): float(v)
        for k, v in (doc.get("metrics") or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    return policy_pb2.CheckpointInfo(
        version=int(doc["version"]),
        parent_version=int(doc.get("parent_version") or 0),
        content_hash=str(doc["content_hash"]),
        algorithm=str(doc.get("algorithm", "")),
        training_step=int(doc.get("training_step") or 0),
        metrics=metrics,
        size_bytes=int(doc["size_bytes"]),
        fleet=str(doc.get("fleet") or ""),
        created_ns=int(doc.get("created_ns") or 0),
        manifest_json=json.dumps(doc, sort_keys=True, default=str),
    )
