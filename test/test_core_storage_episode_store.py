"""Learner episode store: resumable staging, verified idempotent commit, index queries, crash recovery."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sop_ros.bench.synthetic_episodes import synthetic_episode
from sop_ros.core.episodes.episode_file import file_sha256, write_episode
from sop_ros.core.storage import training_cache as training_cache_module
from sop_ros.core.storage.episode_store import EpisodeRejectedError, EpisodeStore, OffsetMismatchError, RejectionCode

pytestmark = pytest.mark.timeout(90)


def _episode_file(tmp_path: Path, name: str = "ep", **kw) -> tuple:
    ep = synthetic_episode(kw.pop("num_steps", 20), 8, **kw)
    path = write_episode(ep, tmp_path / f"{name}.mcap")
    return ep, path


def _upload(store: EpisodeStore, ep_id: str, data: bytes, chunk: int = 1000) -> None:
    offset = store.staged_offset(ep_id)
    while offset < len(data):
        offset = store.append_staged(ep_id, offset, data[offset : offset + chunk])


def _all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("index.sqlite3")}


def test_staging_resumes_across_reopen_then_commits(tmp_path):
    ep, path = _episode_file(tmp_path, seed=1)
    data = path.read_bytes()
    store = EpisodeStore(tmp_path / "store")
    half = len(data) // 2
    assert store.append_staged(ep.episode_id, 0, data[:half]) == half
    store.close()

    store = EpisodeStore(tmp_path / "store")  # e.g. learner restarted
    assert store.staged_offset(ep.episode_id) == half
    with pytest.raises(OffsetMismatchError) as info:
        store.append_staged(ep.episode_id, 0, data[:10])
    assert info.value.expected_offset == half
    _upload(store, ep.episode_id, data)
    stored = store.commit(ep.episode_id, file_sha256(path), ep.robot_id)

    assert stored.episode_id == ep.episode_id and stored.num_steps == 20 and stored.sha256 == file_sha256(path)
    assert store.episode_path(ep.episode_id).read_bytes() == data  # stored unchanged
    assert store.staged_offset(ep.episode_id) == 0
    arrays = store.arrays(ep.episode_id)
    for name in ("images", "states", "actions", "actors", "policy_versions", "proposed_chunks", "stamps_ns"):
        assert isinstance(arrays[name], np.memmap), name
        np.testing.assert_array_equal(arrays[name], getattr(ep, name), err_msg=name)
    assert (stored.human_steps, stored.intervention_count) == (ep.human_step_count, 1)
    assert store.load_episode(ep.episode_id).instruction == ep.instruction


def test_wrong_hash_is_rejected_and_leaves_nothing(tmp_path):
    ep, path = _episode_file(tmp_path)
    store = EpisodeStore(tmp_path / "store")
    _upload(store, ep.episode_id, path.read_bytes())
    with pytest.raises(EpisodeRejectedError, match="sha256 mismatch") as info:
        store.commit(ep.episode_id, hashlib.sha256(b"other").hexdigest(), ep.robot_id)
    assert info.value.code is RejectionCode.HASH_MISMATCH
    assert _all_files(tmp_path / "store") == set()
    assert not store.contains(ep.episode_id) and store.staged_offset(ep.episode_id) == 0
    # The robot can start over and succeed.
    _upload(store, ep.episode_id, path.read_bytes())
    assert store.commit(ep.episode_id, file_sha256(path), ep.robot_id).episode_id == ep.episode_id


def test_corrupt_upload_with_matching_hash_is_rejected_by_validation(tmp_path):
    ep, path = _episode_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10  # corrupted on the robot's disk before upload
    store = EpisodeStore(tmp_path / "store")
    _upload(store, ep.episode_id, bytes(data))
    with pytest.raises(EpisodeRejectedError, match="invalid episode file") as info:
        store.commit(ep.episode_id, hashlib.sha256(data).hexdigest(), ep.robot_id)
    assert info.value.code is RejectionCode.INVALID_FILE
    assert _all_files(tmp_path / "store") == set()


def test_robot_and_episode_identity_must_match(tmp_path):
    ep, path = _episode_file(tmp_path, robot_id="robot7")
    store = EpisodeStore(tmp_path / "store")
    _upload(store, ep.episode_id, path.read_bytes())
    with pytest.raises(EpisodeRejectedError, match="robot 'robot7', uploader is robot 'robot8'") as info:
        store.commit(ep.episode_id, file_sha256(path), "robot8")
    assert info.value.code is RejectionCode.ROBOT_MISMATCH
    assert _all_files(tmp_path / "store") == set()
    other_id = "0f0e0d0c-0b0a-4908-8706-050403020100"
    _upload(store, other_id, path.read_bytes())
    with pytest.raises(EpisodeRejectedError, match=f"upload was for {other_id}") as info:
        store.commit(other_id, file_sha256(path), "robot7")
    assert info.value.code is RejectionCode.EPISODE_ID_MISMATCH
    assert _all_files(tmp_path / "store") == set()


def test_recommit_is_idempotent_and_conflicts_are_rejected(tmp_path):
    ep, path = _episode_file(tmp_path)
    store = EpisodeStore(tmp_path / "store")
    _upload(store, ep.episode_id, path.read_bytes())
    first = store.commit(ep.episode_id, file_sha256(path), ep.robot_id)
    store.wait_for_caches()
    files_after_first = _all_files(tmp_path / "store")
    # The robot crashed before deleting and re-sends everything.
    _upload(store, ep.episode_id, path.read_bytes())
    assert store.commit(ep.episode_id, file_sha256(path), ep.robot_id) == first
    assert store.count() == 1 and _all_files(tmp_path / "store") == files_after_first
    # Same id, different content.
    other = dataclasses.replace(ep, instruction="something else")
    other_path = write_episode(other, tmp_path / "other.mcap")
    _upload(store, ep.episode_id, other_path.read_bytes())
    with pytest.raises(EpisodeRejectedError, match="conflicting content for existing episode id") as info:
        store.commit(ep.episode_id, file_sha256(other_path), ep.robot_id)
    assert info.value.code is RejectionCode.CONFLICT
    assert store.get(ep.episode_id) == first and _all_files(tmp_path / "store") == files_after_first


def test_commit_without_staged_bytes_and_bad_ids(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    with pytest.raises(EpisodeRejectedError, match="no staged bytes") as info:
        store.commit("0f0e0d0c-0b0a-4908-8706-050403020100", "0" * 64, "r")
    assert info.value.code is RejectionCode.NOTHING_STAGED
    with pytest.raises(ValueError, match="UUID"):
        store.append_staged("../../etc/passwd", 0, b"x")


def test_upload_size_limit(tmp_path):
    store = EpisodeStore(tmp_path / "store", max_episode_bytes=100)
    eid = "0f0e0d0c-0b0a-4908-8706-050403020100"
    store.append_staged(eid, 0, b"x" * 60)
    with pytest.raises(EpisodeRejectedError, match="100-byte episode limit") as info:
        store.append_staged(eid, 60, b"x" * 60)
    assert info.value.code is RejectionCode.TOO_LARGE
    assert store.staged_offset(eid) == 0


def test_query_filters_and_ingest_order(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    specs = [
        dict(robot_id="r1", task_id="reach-v3", success=True, human_steps=(0, 0), policy_version=1),
        dict(robot_id="r2", task_id="push-v3", success=False, human_steps=(2, 5), policy_version=1),
        dict(robot_id="r1", task_id="push-v3", success=True, human_steps=(1, 3), policy_version=2),
        dict(robot_id="r2", task_id="reach-v3", success=None, human_steps=(0, 0), policy_version=3),
    ]
    ids = []
    for i, spec in enumerate(specs):
        ep, path = _episode_file(tmp_path, f"e{i}", seed=10 + i, **spec)
        if i == 2:  # a policy swap inside the episode's version array: steps from v2 and v4
            ep = dataclasses.replace(ep, policy_versions=np.where(np.arange(20) < 10, 2, 4).astype(np.int64))
            path = write_episode(ep, path)
        _upload(store, ep.episode_id, path.read_bytes())
        store.commit(ep.episode_id, file_sha256(path), spec["robot_id"])
        ids.append(ep.episode_id)

    def q(**kw):
        return [ids.index(s.episode_id) for s in store.query(**kw)]

    assert q() == [0, 1, 2, 3]
    assert q(task_id="push-v3") == [1, 2]
    assert q(robot_id="r2") == [1, 3]
    assert q(success=True) == [0, 2] and q(success=False) == [1]
    assert q(min_interventions=1) == [1, 2]
    assert q(policy_version=1) == [0, 1] and q(policy_version=4) == [2] and q(policy_version=3) == [3]
    assert q(robot_id="r1", task_id="push-v3", success=True) == [2]
    seqs = [s.ingest_seq for s in store.query()]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert q(since_seq=seqs[1]) == [2, 3]
    assert store.tasks() == ["push-v3", "reach-v3"] and store.task_counts() == {"push-v3": 2, "reach-v3": 2}
    stored = store.get(ids[2])
    assert (stored.policy_version_min, stored.policy_version_max) == (2, 4)
    assert store.get(ids[3]).success is None and store.count() == 4


def _commit_in_child_and_kill(tmp_path: Path, path: Path, ep, sha: str, kill_before: str) -> None:
    """Run commit() in a subprocess and SIGKILL it just before `kill_before` (a store method)."""
    script = textwrap.dedent(f"""
        import os, signal
        from sop_ros.core.storage import episode_store as es
        original = getattr(es.EpisodeStore, {kill_before!r})
        def die(self, *a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        setattr(es.EpisodeStore, {kill_before!r}, die)
        store = es.EpisodeStore({str(tmp_path / "store")!r})
        store.commit({ep.episode_id!r}, {sha!r}, {ep.robot_id!r})
        store.wait_for_caches()
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    result = subprocess.run([sys.executable, "-c", script], env=env, timeout=60)
    assert result.returncode == -signal.SIGKILL


def test_crash_between_rename_and_index_commit_is_recovered(tmp_path):
    ep, path = _episode_file(tmp_path)
    store = EpisodeStore(tmp_path / "store")
    _upload(store, ep.episode_id, path.read_bytes())
    store.close()
    _commit_in_child_and_kill(tmp_path, path, ep, file_sha256(path), "_insert")
    assert any(p.suffix == ".mcap" for p in (tmp_path / "store" / "episodes").rglob("*")), (
        "the crash left a renamed file"
    )

    store = EpisodeStore(tmp_path / "store")  # recover() runs at open
    assert not store.contains(ep.episode_id)
    assert store.last_recovery.removed_orphan_files == (ep.episode_id,)
    assert _all_files(tmp_path / "store") == set()
    _upload(store, ep.episode_id, path.read_bytes())  # the robot never got an ack, so it re-sends
    assert store.commit(ep.episode_id, file_sha256(path), ep.robot_id).num_steps == ep.num_steps


def test_crash_while_writing_the_cache_after_the_ack_keeps_the_episode(tmp_path):
    """The cache is written after commit() returned: a crash there loses no episode and no cache is half-used."""
    ep, path = _episode_file(tmp_path)
    store = EpisodeStore(tmp_path / "store")
    _upload(store, ep.episode_id, path.read_bytes())
    store.close()
    _commit_in_child_and_kill(tmp_path, path, ep, file_sha256(path), "_build_cache")

    store = EpisodeStore(tmp_path / "store")
    assert store.contains(ep.episode_id) and store.last_recovery.missing_caches == (ep.episode_id,)
    assert not store.cache_path(ep.episode_id).exists()
    assert store.episode_path(ep.episode_id).read_bytes() == path.read_bytes()
    arrays = store.arrays(ep.episode_id)  # built on first use
    for name in ("images", "actions", "stamps_ns"):
        np.testing.assert_array_equal(arrays[name], getattr(ep, name), err_msg=name)


def test_cache_writes_are_atomic_temp_dirs(tmp_path, monkeypatch):
    """A cache build that fails half-way leaves no cache directory; arrays() then builds a complete one."""
    ep, path = _episode_file(tmp_path)
    store = EpisodeStore(tmp_path / "store", cache_in_background=False)
    _upload(store, ep.episode_id, path.read_bytes())
    store.commit(ep.episode_id, file_sha256(path), ep.robot_id)
    assert not store.cache_path(ep.episode_id).exists()  # not on the ack path
    real_save = np.save
    calls = []

    def failing_save(f, arr, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_save(f, arr, **kw)

    monkeypatch.setattr(training_cache_module.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        store.arrays(ep.episode_id)
    assert list((tmp_path / "store" / "cache").iterdir()) == []
    monkeypatch.setattr(training_cache_module.np, "save", real_save)
    np.testing.assert_array_equal(store.arrays(ep.episode_id)["states"], ep.states)


def test_missing_cache_is_listed_at_open_and_rebuilt_on_use(tmp_path):
    ep, path = _episode_file(tmp_path)
    store = EpisodeStore(tmp_path / "store")
    _upload(store, ep.episode_id, path.read_bytes())
    store.commit(ep.episode_id, file_sha256(path), ep.robot_id)
    store.close()  # finishes the background cache write
    assert (tmp_path / "store" / "cache" / ep.episode_id / "images.npy").is_file()
    shutil.rmtree(tmp_path / "store" / "cache" / ep.episode_id)
    store = EpisodeStore(tmp_path / "store")
    assert store.last_recovery.missing_caches == (ep.episode_id,)
    np.testing.assert_array_equal(store.arrays(ep.episode_id)["actions"], ep.actions)


def test_staged_bytes_are_fsynced_per_sync_not_per_chunk(tmp_path, monkeypatch):
    ep, path = _episode_file(tmp_path, num_steps=40)
    data = path.read_bytes()
    store = EpisodeStore(tmp_path / "store", sync_every_bytes=len(data) // 2 + 1)
    fsynced = []  # fsyncs of regular files (directory fsyncs are not counted)
    real_fsync = os.fsync

    def counting_fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            fsynced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    offset = 0
    for chunk in chunks[: len(chunks) // 2]:
        offset = store.append_staged(ep.episode_id, offset, chunk)
    assert len(fsynced) == 0, "no fsync before sync_every_bytes are unsynced"
    assert store.sync_staged(ep.episode_id) == offset
    assert len(fsynced) == 1
    assert store.sync_staged(ep.episode_id) == offset and len(fsynced) == 1  # nothing new: no fsync
    for chunk in chunks[len(chunks) // 2 :]:
        offset = store.append_staged(ep.episode_id, offset, chunk)
    assert len(fsynced) == 2, "one fsync once sync_every_bytes were written since the last one"
    assert store.commit(ep.episode_id, file_sha256(path), ep.robot_id).size_bytes == len(data)


def test_abandoned_uploads_can_be_listed_and_discarded(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    old_id, new_id = "0f0e0d0c-0b0a-4908-8706-050403020100", "1f0e0d0c-0b0a-4908-8706-050403020100"
    store.append_staged(old_id, 0, b"abc")
    store.append_staged(new_id, 0, b"abcdef")
    assert store.staged_uploads() == {old_id: 3, new_id: 6}
    os.utime(store.staging_path(old_id), (1, 1))
    assert store.discard_stale_staging(older_than_s=3600) == [old_id]
    assert store.staged_uploads() == {new_id: 6}


def test_read_index_sees_what_the_owner_committed_without_touching_its_files(tmp_path):
    from sop_ros.core.storage.episode_index import read_index

    assert read_index(tmp_path / "none") == []
    store = EpisodeStore(tmp_path / "store")
    committed = []
    for i in range(2):
        ep, path = _episode_file(tmp_path, f"ep{i}", seed=i)
        _upload(store, ep.episode_id, path.read_bytes())
        committed.append(store.commit(ep.episode_id, file_sha256(path), ep.robot_id))
    store.wait_for_caches()  # the training caches are written in the background after the ack
    before = _all_files(tmp_path / "store")
    rows = read_index(tmp_path / "store")
    assert rows == store.query()
    assert [r.episode_id for r in read_index(tmp_path / "store", since_seq=rows[0].ingest_seq)] == [rows[1].episode_id]
    assert _all_files(tmp_path / "store") == before
    assert all(r.path.is_file() for r in rows)
