"""Checkpoint store: monotonic immutable versions, hash verification, tamper detection, train state."""

from __future__ import annotations

import hashlib
import json
import multiprocessing

import numpy as np
import pytest
import torch

from sop_ros.core.storage.checkpoint_store import (
    CheckpointIntegrityError,
    CheckpointManifest,
    CheckpointStore,
    verify_checkpoint_file,
)

pytestmark = pytest.mark.timeout(60)


def _weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "head.weight": torch.randn(8, 4, generator=g),
        "head.bias": torch.randn(8, generator=g),
        "step": torch.tensor([seed]),
    }


def _publish(store: CheckpointStore, seed: int, parent=None, fleet="default", **kw):
    return store.publish(
        _weights(seed),
        algorithm="hg_dagger",
        training_step=seed * 10,
        metrics={"loss": 1.0 / (seed + 1)},
        parent_version=parent,
        fleet=fleet,
        **kw,
    )


def test_versions_are_monotonic_and_round_trip(tmp_path):
    store = CheckpointStore(tmp_path)
    m1 = _publish(store, 1)
    m2 = _publish(store, 2, parent=1, extra={"note": "after 5 episodes"})
    assert (m1.version, m2.version, m2.parent_version) == (1, 2, 1)
    assert store.versions() == [1, 2]
    assert store.weights_path(2) == tmp_path / "v000002" / "model.safetensors"
    assert m2.content_hash == hashlib.sha256(store.weights_path(2).read_bytes()).hexdigest()
    assert m2.size_bytes == store.weights_path(2).stat().st_size
    loaded = store.load_tensors(2)
    for k, v in _weights(2).items():
        assert torch.equal(loaded[k], v), k
    reopened = CheckpointStore(tmp_path)
    assert reopened.get(2) == m2 and reopened.latest() == m2
    assert _publish(reopened, 3, parent=2).version == 3
    assert CheckpointManifest.from_json(m2.to_json()) == m2
    assert json.loads((tmp_path / "v000002" / "manifest.json").read_text())["extra"] == {"note": "after 5 episodes"}


def test_latest_is_per_fleet_with_store_wide_numbers(tmp_path):
    store = CheckpointStore(tmp_path)
    a1 = _publish(store, 1, fleet="arms")
    b1 = _publish(store, 2, fleet="grippers")
    a2 = _publish(store, 3, parent=a1.version, fleet="arms")
    assert (a1.version, b1.version, a2.version) == (1, 2, 3)
    assert store.latest("arms") == a2 and store.latest("grippers") == b1 and store.latest() is None


def test_numpy_tensors_and_tied_weights_are_accepted(tmp_path):
    store = CheckpointStore(tmp_path)
    shared = torch.randn(3, 3)
    m = store.publish(
        {"a": np.arange(4, dtype=np.float32), "emb": shared, "tied": shared},
        algorithm="recap",
        training_step=0,
        metrics={},
        parent_version=None,
    )
    t = store.load_tensors(m.version)
    assert torch.equal(t["a"], torch.arange(4, dtype=torch.float32)) and torch.equal(t["tied"], shared)


def test_tampered_weights_are_detected(tmp_path):
    store = CheckpointStore(tmp_path)
    m = _publish(store, 1)
    path = store.weights_path(m.version)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointIntegrityError, match="does not match"):
        store.load_tensors(m.version)
    with pytest.raises(CheckpointIntegrityError):
        verify_checkpoint_file(path, m.content_hash)


def test_verify_checkpoint_file_for_robot_downloads(tmp_path):
    f = tmp_path / "dl.safetensors"
    f.write_bytes(b"weights")
    verify_checkpoint_file(f, hashlib.sha256(b"weights").hexdigest().upper())
    with pytest.raises(CheckpointIntegrityError, match="missing"):
        verify_checkpoint_file(tmp_path / "absent", "0" * 64)
    with pytest.raises(CheckpointIntegrityError, match="does not match"):
        verify_checkpoint_file(f, "0" * 64)


def test_train_state_round_trip_and_absence(tmp_path):
    store = CheckpointStore(tmp_path)
    plain = _publish(store, 1)
    assert store.load_train_state(plain.version) is None and not store.has_train_state(plain.version)
    state = {
        "optimizer.exp_avg.head.weight": torch.randn(8, 4),
        "sampler.rng": torch.tensor([1, 2, 3], dtype=torch.int64),
    }
    m = _publish(
        store,
        2,
        parent=1,
        train_state=state,
        train_state_meta={"optimizer": "adamw", "lr": 3e-4, "param_names": ["head.weight"]},
    )
    tensors, meta = store.load_train_state(m.version)
    assert meta == {"optimizer": "adamw", "lr": 3e-4, "param_names": ["head.weight"]}
    for k, v in state.items():
        assert torch.equal(tensors[k], v)
    meta_path = tmp_path / "v000002" / "train_state.json"
    meta_path.write_text(json.dumps({"optimizer": "sgd"}))
    with pytest.raises(CheckpointIntegrityError):
        store.load_train_state(m.version)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(metrics={"loss": float("nan")}), "metric 'loss'"),
        (dict(parent_version=42), "parent_version 42 does not exist"),
        (dict(algorithm=""), "algorithm"),
        (dict(extra={"bad": object()}), "not JSON serializable"),
    ],
)
def test_bad_publish_arguments_are_named_and_publish_nothing(tmp_path, kwargs, message):
    store = CheckpointStore(tmp_path)
    args = dict(algorithm="hg_dagger", training_step=1, metrics={}, parent_version=None)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        store.publish(_weights(0), **args)
    assert store.versions() == [] and [p.name for p in tmp_path.iterdir()] in ([], [".publish.lock"])


def test_unfinished_publish_is_invisible_and_cleaned(tmp_path):
    store = CheckpointStore(tmp_path)
    _publish(store, 1)
    crashed = tmp_path / ".v000002.999999999.deadbeef.partial"  # pid that cannot exist
    crashed.mkdir()
    (crashed / "model.safetensors").write_bytes(b"half")
    assert store.versions() == [1] and store.latest().version == 1
    CheckpointStore(tmp_path)
    assert not crashed.exists()
    assert _publish(store, 2, parent=1).version == 2


def _publish_in_process(root: str, seed: int, out) -> None:
    out.put(_publish(CheckpointStore(root), seed).version)


def test_concurrent_publishers_get_distinct_versions(tmp_path):
    ctx = multiprocessing.get_context("fork")  # spawn would re-import torch per child (seconds on CI)
    out = ctx.Queue()
    procs = [ctx.Process(target=_publish_in_process, args=(str(tmp_path), i, out)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert sorted(out.get(timeout=5) for _ in procs) == [1, 2, 3]
    assert CheckpointStore(tmp_path).versions() == [1, 2, 3]


def test_manifest_from_json_names_bad_fields():
    good = json.loads(CheckpointManifest(1, None, "a" * 64, "x", 0, {}, 0, "default", 1).to_json())
    with pytest.raises(ValueError, match="content_hash"):
        CheckpointManifest.from_json(json.dumps(dict(good, content_hash="zz")))
    with pytest.raises(ValueError, match="missing fields \\['version'\\]"):
        CheckpointManifest.from_json(json.dumps({k: v for k, v in good.items() if k != "version"}))
    with pytest.raises(ValueError, match="format"):
        CheckpointManifest.from_json(json.dumps(dict(good, format="other")))


def test_prune_keeps_newest_roots_fleet_latest_and_requested_and_numbering_goes_on(tmp_path):
    store = CheckpointStore(tmp_path)
    _publish(store, 1)  # v1: the base (a root)
    for v in range(2, 9):
        _publish(store, v, parent=v - 1)  # v2..v8 of the default fleet
    _publish(store, 9, parent=1, fleet="lab2")  # v9: the only one of fleet lab2
    for v in range(10, 13):
        _publish(store, v, parent=v - 1 if v > 10 else 8)  # v10..v12
    removed = store.prune(keep_latest=2, keep=[5])
    assert removed == [2, 3, 4, 6, 7, 8, 10]
    assert store.versions() == [1, 5, 9, 11, 12]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "v000001",
        "v000005",
        "v000009",
        "v000011",
        "v000012",
    ]
    assert store.get(3) is None and store.latest("lab2").version == 9
    store.verify(12)
    assert _publish(store, 13, parent=12).version == 13  # monotonic after pruning
    assert store.prune(keep_latest=100) == []
    with pytest.raises(ValueError, match="keep_latest"):
        store.prune(keep_latest=0)


def test_a_prune_interrupted_after_the_rename_leaves_a_temp_dir_the_next_open_removes(tmp_path):
    store = CheckpointStore(tmp_path)
    _publish(store, 1)
    _publish(store, 2, parent=1)
    _publish(store, 3, parent=2)
    child = multiprocessing.get_context("fork").Process(target=_rename_then_die, args=(str(tmp_path),))
    child.start()
    child.join(30)
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".v000002")]
    assert len(leftovers) == 1 and CheckpointStore(tmp_path).versions() == [1, 3]
    assert not leftovers[0].exists()


def _rename_then_die(root: str) -> None:
    import os
    import shutil

    shutil.rmtree = lambda *a, **k: os._exit(0)  # the process dies between the rename and the delete
    CheckpointStore(root).prune(keep_latest=1)
