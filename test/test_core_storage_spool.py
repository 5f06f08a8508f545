"""Robot spool: durable order, restart, crash leftovers, quota warnings without data loss."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from sop_ros.bench.synthetic_episodes import synthetic_episode
from sop_ros.core.episodes.episode_file import read_episode
from sop_ros.core.storage.durable_files import temp_path_for
from sop_ros.core.storage.spool import Spool

pytestmark = pytest.mark.timeout(60)


def _episodes(n, **kw):
    return [synthetic_episode(6, 8, seed=100 + i, **kw) for i in range(n)]


def test_pending_is_oldest_first_by_sequence_not_mtime(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 30)
    eps = _episodes(4)
    entries = [spool.write(ep) for ep in eps]
    # Make mtimes lie (newest file looks oldest): order must still follow the sequence.
    for i, e in enumerate(entries):
        os.utime(e.path, ns=(10**18 - i * 10**12, 10**18 - i * 10**12))
    assert [e.episode_id for e in spool.pending()] == [ep.episode_id for ep in eps]
    assert [e.sequence for e in spool.pending()] == [1, 2, 3, 4]
    first = spool.pending()[0]
    assert read_episode(first.path).episode_id == eps[0].episode_id
    assert first.size_bytes == first.path.stat().st_size and first.created_ns > 0


def test_state_survives_restart_and_sequence_keeps_growing(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 30)
    eps = _episodes(3)
    for ep in eps[:2]:
        spool.write(ep)
    spool.remove(eps[0].episode_id)
    reopened = Spool(tmp_path, max_bytes=1 << 30)
    assert [e.episode_id for e in reopened.pending()] == [eps[1].episode_id]
    third = reopened.write(eps[2])
    assert third.sequence == 3
    assert [e.episode_id for e in reopened.pending()] == [eps[1].episode_id, eps[2].episode_id]
    assert reopened.total_bytes() == sum(e.size_bytes for e in reopened.pending())


def test_second_holder_sees_writes_of_the_first(tmp_path):
    recorder = Spool(tmp_path, max_bytes=1 << 30)
    uploader = Spool(tmp_path, max_bytes=1 << 30)
    ep = _episodes(1)[0]
    recorder.write(ep)
    assert [e.episode_id for e in uploader.pending()] == [ep.episode_id]
    assert uploader.remove(ep.episode_id) is True
    assert recorder.pending() == [] and uploader.remove(ep.episode_id) is False


def test_crashed_temp_files_are_cleaned_and_never_listed(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 30)
    kept = spool.write(_episodes(1)[0])
    # A temp left by a dead writer (pid of an exited process) and one of a live writer (our pid).
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".000000000009_1_{'a' * 8}-aaaa-4aaa-8aaa-{'a' * 12}.mcap.{dead_pid}.deadbeef.partial"
    stale.write_bytes(b"\x89MCAP0\r\npartial")
    live = temp_path_for(tmp_path / "000000000010_1_x.mcap")
    live.write_bytes(b"in progress")
    reopened = Spool(tmp_path, max_bytes=1 << 30)
    assert not stale.exists(), "temp of a dead writer must be removed at open"
    assert live.exists(), "temp of a live writer must be left alone"
    assert [e.episode_id for e in reopened.pending()] == [kept.episode_id]


def test_over_quota_warns_every_write_and_deletes_nothing(tmp_path, caplog):
    eps = _episodes(4)
    probe = Spool(tmp_path / "probe", max_bytes=1 << 30).write(eps[0]).size_bytes
    spool = Spool(tmp_path / "spool", max_bytes=int(probe * 1.5))
    caplog.set_level(logging.WARNING, logger="sop_ros.core.storage.spool")
    spool.write(eps[0])
    assert not spool.over_quota and not caplog.records
    for ep in eps[1:]:
        caplog.clear()
        spool.write(ep)
        assert any("over quota" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert spool.over_quota
    assert [e.episode_id for e in spool.pending()] == [ep.episode_id for ep in eps]
    for e in spool.pending():
        read_episode(e.path)


def test_rewriting_a_spooled_episode_keeps_one_copy(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 30)
    ep = _episodes(1)[0]
    first = spool.write(ep)
    assert spool.write(ep) == first
    assert len(spool) == 1


def test_invalid_quota_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(tmp_path, max_bytes=0)
