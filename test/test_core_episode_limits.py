"""Episode files that declare more than the limits are refused before the reader allocates for them."""

from __future__ import annotations

import dataclasses
import json
import os
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sop_ros.bench.synthetic_episodes import synthetic_episode
from sop_ros.core.episodes import episode_file as ef
from sop_ros.core.episodes.episode_file import EpisodeFileError, read_episode, write_episode
from sop_ros.core.episodes.episode_limits import EpisodeLimitError, EpisodeLimits
from sop_ros.core.storage.episode_store import EpisodeRejectedError, EpisodeStore, RejectionCode

pytestmark = pytest.mark.timeout(60)


def _write_lying(path, episode, num_steps=None, **shapes):
    """A file whose metadata declares `shapes` (and `num_steps`), a hostile robot's, over real messages."""
    from unittest import mock

    real = ef._episode_metadata

    def lying(ep):
        meta = real(ep)
        meta["shapes"] = json.dumps({**json.loads(meta["shapes"]), **shapes})
        if num_steps is not None:
            meta["num_steps"] = json.dumps(num_steps)
        return meta

    with mock.patch.object(ef, "_episode_metadata", lying):
        write_episode(episode, path)
    return path


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    "shapes, message",
    [
        ({"state_dim": 10_000_000}, "'state_dim' = 10000000 exceeds the limit of 4096"),
        ({"image_hw": [1 << 20, 1 << 20]}, "'image_hw[0]' = 1048576 exceeds the limit of 4096"),
        # Each size within its bound, together 100 steps x 4 x 4096 x 1024 floats: 1.6 GiB, above the 1 GiB limit.
        ({"chunk_len": 1024, "action_dim": 4096}, "decode to 1679396500 bytes, above the limit of 1073741824"),
    ],
)
def test_a_small_file_declaring_huge_arrays_is_refused_without_allocating(tmp_path, shapes, message):
    path = _write_lying(tmp_path / "ep.mcap", synthetic_episode(100, 8, seed=1), **shapes)
    assert path.stat().st_size < 64 << 10
    errors = []

    def read():
        with pytest.raises(EpisodeFileError) as err:
            read_episode(path)
        errors.append(str(err.value))

    assert _peak_bytes(read) < 16 << 20  # the unbounded reader allocated ~8 bytes per declared element
    assert message in errors[0] and str(path) in errors[0]


def test_a_decompression_bomb_is_refused_before_inflating(tmp_path):
    # 1 step of a 2048 x 2048 black image: 12 MiB that zstd packs into a few KiB. Declared as 1 x 1 pixels, the
    # messages could need a few hundred bytes, so the chunk's declared 12 MiB give it away.
    bomb = synthetic_episode(1, 2048, seed=2)
    bomb = dataclasses.replace(bomb, images=np.zeros_like(bomb.images))
    path = _write_lying(tmp_path / "bomb.mcap", bomb, image_hw=[1, 1])
    assert path.stat().st_size < 256 << 10
    errors = []

    def read():
        with pytest.raises(EpisodeFileError) as err:
            read_episode(path)
        errors.append(str(err.value))

    assert _peak_bytes(read) < 8 << 20
    assert "uncompressed bytes, more than" in errors[0]


def test_exact_shapes_and_instruction_length_are_enforced_when_asked(tmp_path):
    ep = synthetic_episode(10, 8, seed=3)
    path = write_episode(ep, tmp_path / "ep.mcap")
    state_dim, action_dim = ep.states.shape[1], ep.actions.shape[1]
    assert read_episode(path, EpisodeLimits(state_dim=state_dim, action_dim=action_dim)).num_steps == 10
    with pytest.raises(EpisodeFileError, match=f"'state_dim' = {state_dim}, this learner's model takes 99"):
        read_episode(path, EpisodeLimits(state_dim=99))
    with pytest.raises(EpisodeFileError, match="instruction has .* characters, above the limit of 3"):
        read_episode(path, EpisodeLimits(max_instruction_chars=3))
    with pytest.raises(ValueError, match="max_steps"):
        EpisodeLimits(max_steps=0)
    with pytest.raises(EpisodeLimitError, match="num_steps"):
        EpisodeLimits(max_steps=5).check_shapes(6, 8, 8, 4, 4, 4)


def _staged(store: EpisodeStore, path) -> str:
    from sop_ros.core.episodes.episode_file import read_episode_metadata

    episode_id = read_episode_metadata(path)["episode_id"]
    store.append_staged(episode_id, 0, path.read_bytes())
    return episode_id


def test_the_store_refuses_other_shapes_and_tasks_and_removes_the_staged_bytes(tmp_path):
    ep = synthetic_episode(10, 8, seed=4)
    other_shape = write_episode(ep, tmp_path / "a.mcap")
    limits = EpisodeLimits(state_dim=ep.states.shape[1] + 1)
    with EpisodeStore(tmp_path / "store", limits=limits, task_ids=frozenset({ep.task_id})) as store:
        episode_id = _staged(store, other_shape)
        with pytest.raises(EpisodeRejectedError) as err:
            store.commit(episode_id, ef.file_sha256(other_shape), ep.robot_id)
        assert err.value.code is RejectionCode.INVALID_FILE and "state_dim" in str(err.value)
        assert store.staged_offset(episode_id) == 0 and store.count() == 0
    with EpisodeStore(tmp_path / "store2", task_ids=frozenset({"push-v3"})) as store:
        episode_id = _staged(store, other_shape)
        with pytest.raises(EpisodeRejectedError, match="not one of this fleet's tasks"):
            store.commit(episode_id, ef.file_sha256(other_shape), ep.robot_id)
        assert store.staged_offset(episode_id) == 0
        episode_id = _staged(store, other_shape)
        with pytest.raises(EpisodeRejectedError, match="the upload declared 'push-v3'"):
            store.commit(episode_id, ef.file_sha256(other_shape), ep.robot_id, task_id="push-v3")
        assert store.staged_offset(episode_id) == 0 and store.count() == 0


_SIZES = st.one_of(
    st.integers(min_value=-3, max_value=70),
    st.integers(min_value=1 << 10, max_value=1 << 40),
    st.sampled_from([None, "12", 3.5, True, [4], {}]),
)


# SOP_FUZZ_EXAMPLES=3000 for the long run (docs: the closing note of 2026-12-03); the suite runs 300.
@settings(
    max_examples=int(os.environ.get("SOP_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    shapes=st.fixed_dictionaries(
        {},
        optional={
            "state_dim": _SIZES,
            "action_dim": _SIZES,
            "chunk_len": _SIZES,
            "image_hw": st.one_of(st.lists(_SIZES, max_size=3), _SIZES),
        },
    ),
    num_steps=st.one_of(st.none(), _SIZES),
)
def test_fuzzed_metadata_is_refused_cleanly_within_bounded_memory(tmp_path, shapes, num_steps):
    episode = synthetic_episode(5, 4, seed=5)
    path = _write_lying(tmp_path / "fuzz.mcap", episode, num_steps, **shapes)
    outcome = []

    def read():
        try:
            outcome.append(read_episode(path))
        except EpisodeFileError as exc:  # the only failure a hostile file may cause
            outcome.append(exc)

    assert _peak_bytes(read) < 32 << 20
    if not isinstance(outcome[0], EpisodeFileError):  # accepted: then it declared exactly the truth
        assert outcome[0].num_steps == 5 and outcome[0].states.shape == episode.states.shape
