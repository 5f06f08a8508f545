"""Immutable, versioned policy checkpoints: safetensors weights + a JSON manifest per version.

Layout under `root`:
    v000001/model.safetensors        weights (manifest.content_hash = sha256 of these exact bytes)
    v000001/manifest.json            CheckpointManifest
    v000001/train_state.safetensors  optional trainer resume state (optimizer, sampler, RNG tensors)
    v000001/train_state.json         optional JSON metadata for it (its sha256 is in the manifest)

A version directory appears only complete: it is written under a temp name, every file and the dir
fsynced, then renamed (and the root fsynced). Versions are monotonic across the whole store (all fleets);
publishing takes an exclusive file lock on the root so two processes cannot claim the same number.
The files' bytes (serialising, fsynced writes, hash checks) are checkpoint_files.py's; torch is imported
lazily there and here, so robots can use verify_checkpoint_file without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sop_ros.core.episodes.hashing import bytes_sha256
from sop_ros.core.storage.checkpoint_files import (
    CheckpointFiles,
    CheckpointIntegrityError,
    load_verified,
    verify_checkpoint_file,
    write_synced,
)
from sop_ros.core.storage.durable_files import fsync_dir, is_stale_temp, is_temp_name, temp_path_for

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "sop_checkpoint/1"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
TRAIN_STATE_FILE = "train_state.safetensors"
TRAIN_STATE_META_FILE = "train_state.json"
_VERSION_DIR_RE = re.compile(r"^v(\d{6,})$")


@dataclasses.dataclass(frozen=True)
class CheckpointManifest:
    version: int
    parent_version: Optional[int]
    content_hash: str  # sha256 hex of model.safetensors
    algorithm: str
    training_step: int
    metrics: dict[str, float]
    created_ns: int
    fleet: str
    size_bytes: int
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    train_state_sha256: Optional[str] = None  # sha256 of train_state.safetensors when present
    train_state_meta_sha256: Optional[str] = None  # sha256 of train_state.json when present
    format: str = MANIFEST_FORMAT

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> CheckpointManifest:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"checkpoint manifest is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError("checkpoint manifest must be a JSON object")
        if d.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"checkpoint manifest format {d.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = required - set(d)
        if unknown or missing:
            raise ValueError(f"checkpoint manifest: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}")
        for name in ("version", "training_step", "created_ns", "size_bytes"):
            if not isinstance(d[name], int) or isinstance(d[name], bool) or d[name] < 0:
                raise ValueError(f"checkpoint manifest field '{name}' must be a non-negative integer, got {d[name]!r}")
        if d["parent_version"] is not None and not isinstance(d["parent_version"], int):
            raise ValueError(
                f"checkpoint manifest field 'parent_version' must be an integer or null, got {d['parent_version']!r}"
            )
        if not isinstance(d["content_hash"], str) or not re.fullmatch(r"[0-9a-f]{64}", d["content_hash"]):
            raise ValueError(
                f"checkpoint manifest field 'content_hash' must be a sha256 hex string, got {d['content_hash']!r}"
            )
        if not isinstance(d["metrics"], dict):
            raise ValueError("checkpoint manifest field 'metrics' must be an object")
        return cls(**d)


def _checked_publish_metrics(
    algorithm: str, fleet: str, training_step: int, metrics: Mapping[str, float]
) -> dict[str, float]:
    """Validate a publish's identity fields; return its metrics as finite floats keyed by str."""
    if not algorithm:
        raise ValueError("checkpoint 'algorithm' must be a non-empty string")
    if not fleet:
        raise ValueError("checkpoint 'fleet' must be a non-empty string")
    if int(training_step) < 0:
        raise ValueError(f"checkpoint 'training_step' must be >= 0, got {training_step}")
    clean_metrics = {}
    for name, value in metrics.items():
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"checkpoint metric {name!r} is {value}; only finite metrics can be published")
        clean_metrics[str(name)] = value
    return clean_metrics


class CheckpointStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._manifests: dict[int, CheckpointManifest] = {}  # immutable once published, so cacheable
        for p in self.root.iterdir():
            if is_temp_name(p.name) and is_stale_temp(p):
                shutil.rmtree(p, ignore_errors=True)
                log.warning("checkpoint store %s: removed an unfinished publish %s", self.root, p.name)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock, open(self.root / ".publish.lock", "a") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def version_dir(self, version: int) -> Path:
        return self.root / f"v{int(version):06d}"

    def weights_path(self, version: int) -> Path:
        return self.version_dir(version) / WEIGHTS_FILE

    def versions(self) -> list[int]:
        found = []
        for p in self.root.iterdir():
            m = _VERSION_DIR_RE.fullmatch(p.name)
            if m and (p / MANIFEST_FILE).is_file():
                found.append(int(m.group(1)))
        return sorted(found)

    def get(self, version: int) -> CheckpointManifest | None:
        version = int(version)
        manifest = self._manifests.get(version)
        if manifest is None:
            path = self.version_dir(version) / MANIFEST_FILE
            if not path.is_file():
                return None
            try:
                manifest = CheckpointManifest.from_json(path.read_text())
            except ValueError as e:
                raise CheckpointIntegrityError(f"{path}: {e}") from None
            if manifest.version != version:
                raise CheckpointIntegrityError(
                    f"{path}: manifest says version {manifest.version}, directory is v{version:06d}"
                )
            self._manifests[version] = manifest
        return manifest

    def latest(self, fleet: str = "default") -> CheckpointManifest | None:
        for version in reversed(self.versions()):
            manifest = self.get(version)
            if manifest is not None and manifest.fleet == fleet:
                return manifest
        return None

    def publish(
        self,
        tensors: Mapping[str, Any],
        *,
        algorithm: str,
        training_step: int,
        metrics: Mapping[str, float],
        parent_version: int | None,
        fleet: str = "default",
        extra: Mapping[str, Any] | None = None,
        train_state: Mapping[str, Any] | None = None,
        train_state_meta: Mapping[str, Any] | None = None,
    ) -> CheckpointManifest:
        """Publish a new immutable version (number = highest existing + 1) and return its manifest."""
        clean_metrics = _checked_publish_metrics(algorithm, fleet, training_step, metrics)
        extra_json = json.loads(json.dumps(dict(extra or {}), allow_nan=False))  # fails early if not JSON-able
        files = CheckpointFiles.serialize(tensors, train_state, train_state_meta)
        with self._exclusive():
            existing = self.versions()
            if parent_version is not None and parent_version not in existing:
                raise ValueError(f"checkpoint parent_version {parent_version} does not exist in {self.root}")
            version = (existing[-1] if existing else 0) + 1
            manifest = CheckpointManifest(
                version=version,
                parent_version=parent_version,
                content_hash=bytes_sha256(files.weights),
                algorithm=algorithm,
                training_step=int(training_step),
                metrics=clean_metrics,
                created_ns=time.time_ns(),
                fleet=fleet,
                size_bytes=len(files.weights),
                extra=extra_json,
                train_state_sha256=bytes_sha256(files.state) if files.state is not None else None,
                train_state_meta_sha256=bytes_sha256(files.state_meta) if files.state_meta is not None else None,
            )
            self._write_version_dir(version, files, manifest)
        self._manifests[version] = manifest
        log.info(
            "published checkpoint v%d (fleet %s, %s step %d, %d bytes)",
            version,
            fleet,
            algorithm,
            training_step,
            len(files.weights),
        )
        return manifest

    def _write_version_dir(self, version: int, files: CheckpointFiles, manifest: CheckpointManifest) -> None:
        """Write and fsync every file under a temp name, then rename: a version directory appears only complete."""
        final = self.version_dir(version)
        tmp = temp_path_for(final)
        tmp.mkdir()
        try:
            write_synced(tmp / WEIGHTS_FILE, files.weights)
            if files.state is not None:
                write_synced(tmp / TRAIN_STATE_FILE, files.state)
                write_synced(tmp / TRAIN_STATE_META_FILE, files.state_meta)
            write_synced(tmp / MANIFEST_FILE, manifest.to_json().encode())
            fsync_dir(tmp)
            os.rename(tmp, final)  # final cannot exist: the caller holds the lock and version is new
            fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def prune(self, keep_latest: int, keep: Iterable[int] = ()) -> list[int]:
        """Delete old versions; returns the versions removed (oldest first).

        Kept: the newest `keep_latest` versions, the latest of every fleet, every root version (no
        parent: a base policy a run started from) and `keep`. A run publishing every few seconds
        otherwise grows the store by gigabytes an hour. A version is first renamed to a temp name
        (the root fsynced) and then deleted, so a crash leaves either the whole version or a stale
        temp dir the next open removes; version numbers stay monotonic (the newest is never removed).
        """
        if keep_latest < 1:
            raise ValueError(f"keep_latest: must be >= 1, got {keep_latest!r}")
        removed = []
        with self._exclusive():
            versions = self.versions()
            protected = set(versions[-keep_latest:]) | {int(v) for v in keep}
            latest_per_fleet: dict[str, int] = {}
            for version in versions:
                manifest = self.get(version)
                if manifest.parent_version is None:
                    protected.add(version)
                latest_per_fleet[manifest.fleet] = version
            protected |= set(latest_per_fleet.values())
            for version in versions:
                if version in protected:
                    continue
                doomed = temp_path_for(self.version_dir(version))
                os.rename(self.version_dir(version), doomed)
                fsync_dir(self.root)
                shutil.rmtree(doomed, ignore_errors=True)
                self._manifests.pop(version, None)
                removed.append(version)
        if removed:
            log.info(
                "checkpoint store %s: pruned %d old versions (v%d..v%d)",
                self.root,
                len(removed),
                removed[0],
                removed[-1],
            )
        return removed

    def _require(self, version: int) -> CheckpointManifest:
        manifest = self.get(version)
        if manifest is None:
            raise KeyError(f"checkpoint version {version} does not exist in {self.root}")
        return manifest

    def load_tensors(self, version: int) -> dict[str, torch.Tensor]:
        """The weights of `version`, after checking their sha256 against the manifest."""
        manifest = self._require(version)
        return load_verified(self.weights_path(version), manifest.content_hash)

    def verify(self, version: int) -> None:
        manifest = self._require(version)
        verify_checkpoint_file(self.weights_path(version), manifest.content_hash)

    def has_train_state(self, version: int) -> bool:
        return self._require(version).train_state_sha256 is not None

    def load_train_state(self, version: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """(tensors, meta) saved with `version` for trainer resume, hash-checked; None if it has none."""
        manifest = self._require(version)
        if manifest.train_state_sha256 is None:
            return None
        tensors = load_verified(self.version_dir(version) / TRAIN_STATE_FILE, manifest.train_state_sha256)
        meta_path = self.version_dir(version) / TRAIN_STATE_META_FILE
        if manifest.train_state_meta_sha256 is not None:
            verify_checkpoint_file(meta_path, manifest.train_state_meta_sha256)
        try:
            meta = json.loads(meta_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError) as e:
            raise CheckpointIntegrityError(f"{meta_path}: unreadable train state metadata: {e}") from None
        return tensors, meta
