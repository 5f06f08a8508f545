"""Algorithm targets with hand-built episodes and hand-computed expectations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sop_ros.core.algorithms import DataSource, EpisodeMeta, HGDaggerConfig, chunk_labels, make_algorithm
from sop_ros.core.episodes.episode import Actor, EpisodeBuilder, LabelSource

pytestmark = pytest.mark.timeout(60)
P, H = Actor.POLICY, Actor.HUMAN


def _episode(actors, success, task="push-v3"):
    b = EpisodeBuilder("robot1", task, "push the puck", chunk_shape=(3, 2))
    for t, actor in enumerate(actors):
        # action value encodes the step so labels are easy to check by hand
        b.add_step(
            np.zeros((8, 8, 3), np.uint8), np.zeros(4, np.float32), np.array([t, -t], np.float32), actor, 1, 1000 + t
        )
    ep = b.close(success, LabelSource.NONE if success is None else LabelSource.ENVIRONMENT, 2000)
    arrays = {"actions": ep.actions, "actors": ep.actors, "policy_versions": ep.policy_versions}
    return arrays, lambda source: EpisodeMeta(ep.episode_id, task, ep.instruction, success, ep.num_steps, source)


def test_chunk_labels_stop_at_untrusted_steps_and_episode_end():
    actions = np.arange(6, dtype=np.float32)[:, None]
    trusted = np.array([0, 1, 1, 0, 1, 1], bool)
    chunks, mask = chunk_labels(actions, 3, trusted)
    np.testing.assert_array_equal(mask[1], [1, 1, 0])  # step 3 is untrusted
    np.testing.assert_array_equal(mask[4], [1, 1, 0])  # step 6 does not exist
    np.testing.assert_array_equal(mask[5], [1, 0, 0])
    np.testing.assert_array_equal(chunks[1, :, 0], [1, 2, 2])  # masked slot repeats the last valid action
    np.testing.assert_array_equal(chunks[4, :, 0], [4, 5, 5])


def test_hg_dagger_trains_only_on_human_corrections_of_online_episodes():
    arrays, meta = _episode([P, P, H, H, H, P, P, P], success=True)
    algo = make_algorithm("hg_dagger", {"chunk_size": 3})
    tg = algo.targets(arrays, meta(DataSource.ONLINE))
    np.testing.assert_array_equal(tg.trainable_steps, [2, 3, 4])
    np.testing.assert_array_equal(tg.fields["action_chunk"][2][:, 0], [2, 3, 4])
    np.testing.assert_array_equal(tg.fields["chunk_mask"][2], [1, 1, 1])
    np.testing.assert_array_equal(tg.fields["chunk_mask"][3], [1, 1, 0])  # step 5 is the policy's
    np.testing.assert_array_equal(tg.fields["chunk_mask"][4], [1, 0, 0])
    # offline demos: every step
    assert algo.targets(arrays, meta(DataSource.OFFLINE)).trainable.all()


def test_hg_dagger_switch_adds_autonomous_steps_of_successful_episodes_only():
    algo = make_algorithm("hg_dagger", HGDaggerConfig(chunk_size=3, include_successful_autonomous=True))
    ok, meta_ok = _episode([P, P, H, P], success=True)
    np.testing.assert_array_equal(algo.targets(ok, meta_ok(DataSource.ONLINE)).trainable_steps, [0, 1, 2, 3])
    failed, meta_failed = _episode([P, P, H, P], success=False)
    np.testing.assert_array_equal(algo.targets(failed, meta_failed(DataSource.ONLINE)).trainable_steps, [2])
    unlabelled, meta_u = _episode([P, H, P], success=None)
    np.testing.assert_array_equal(algo.targets(unlabelled, meta_u(DataSource.ONLINE)).trainable_steps, [1])


def test_hg_dagger_can_take_corrections_only_from_episodes_that_ended_in_success():
    algo = make_algorithm("hg_dagger", {"chunk_size": 3, "corrections": "successful"})
    ok, meta_ok = _episode([P, H, H, P], success=True)
    np.testing.assert_array_equal(algo.targets(ok, meta_ok(DataSource.ONLINE)).trainable_steps, [1, 2])
    for success in (False, None):  # a failed or unlabelled takeover teaches nothing
        other, meta_other = _episode([P, H, H, P], success=success)
        assert not algo.targets(other, meta_other(DataSource.ONLINE)).trainable.any()
    # offline demos stay labels whatever their recorded outcome
    assert algo.targets(other, meta_other(DataSource.OFFLINE)).trainable.all()
    with pytest.raises(ValueError, match="corrections must be one of"):
        HGDaggerConfig(corrections="some")


def test_bc_uses_all_offline_steps_and_no_online_steps():
    arrays, meta = _episode([H, H, P, H], success=True)
    algo = make_algorithm("bc", {"chunk_size": 3})
    assert algo.targets(arrays, meta(DataSource.OFFLINE)).trainable.all()
    assert not algo.targets(arrays, meta(DataSource.ONLINE)).trainable.any()


def _recap(**kw):
    cfg = dict(chunk_size=3, value_bins=11, max_episode_steps=10, n_step=2)
    cfg.update(kw)
    return make_algorithm("recap", cfg)


def test_recap_returns_bins_and_nstep_targets_of_a_success():
    arrays, meta = _episode([P, P, H, P, P], success=True)
    tg = _recap().targets(arrays, meta(DataSource.ONLINE))
    f = tg.fields
    # r = [-1, -1, -1, -1, 0] / 10
    np.testing.assert_allclose(f["return"], [-0.4, -0.3, -0.2, -0.1, 0.0], atol=1e-6)
    np.testing.assert_array_equal(f["return_bin"], [6, 7, 8, 9, 10])  # 11 bins on [-1, 0], spacing 0.1
    np.testing.assert_allclose(f["nstep_reward"], [-0.2, -0.2, -0.2, -0.1, 0.0], atol=1e-6)
    np.testing.assert_array_equal(tg.observation_steps["bootstrap"], [2, 3, 4, -1, -1])
    np.testing.assert_array_equal(f["forced_positive"], [0, 0, 1, 0, 0])  # the human step
    assert f["value_mask"].all() and f["policy_mask"].all() and tg.trainable.all()


def test_recap_failure_cost_and_clipping():
    arrays, meta = _episode([P, P, P, P, P], success=False)
    tg = _recap(failure_cost_steps=5).targets(arrays, meta(DataSource.ONLINE))
    # r = [-1, -1, -1, -1, -5] / 10
    np.testing.assert_allclose(tg.fields["return"], [-0.9, -0.8, -0.7, -0.6, -0.5], atol=1e-6)
    np.testing.assert_array_equal(tg.fields["return_bin"], [1, 2, 3, 4, 5])
    np.testing.assert_allclose(tg.fields["nstep_reward"], [-0.2, -0.2, -0.2, -0.6, -0.5], atol=1e-6)
    # default C_fail = L: every failed return is clipped to -1
    tg = _recap().targets(arrays, meta(DataSource.ONLINE))
    np.testing.assert_allclose(tg.fields["return"], [-1.0] * 5)
    assert not tg.fields["forced_positive"].any()


def test_recap_unlabelled_episode_trains_only_human_steps_and_no_value():
    arrays, meta = _episode([P, H, H, P], success=None)
    tg = _recap().targets(arrays, meta(DataSource.ONLINE))
    np.testing.assert_array_equal(tg.trainable_steps, [1, 2])
    assert not tg.fields["value_mask"].any()
    np.testing.assert_array_equal(tg.observation_steps["bootstrap"], [-1] * 4)


def test_recap_offline_demos_are_forced_positive_by_default():
    arrays, meta = _episode([P, P, P], success=True)
    assert _recap().targets(arrays, meta(DataSource.OFFLINE)).fields["forced_positive"].all()
    assert (
        not _recap(offline_forced_positive=False)
        .targets(arrays, meta(DataSource.OFFLINE))
        .fields["forced_positive"]
        .any()
    )


def test_recap_indicator_uses_per_task_percentile_and_forces_human_steps():
    algo = _recap(positive_fraction=0.4, threshold_window=100)
    algo.record_advantages("a", np.arange(100) / 100.0)  # eps_a = 60th percentile = 0.594
    algo.record_advantages("b", -np.arange(100) / 100.0)  # eps_b = -0.396
    assert algo.threshold("a") == pytest.approx(0.594)
    assert algo.threshold("b") == pytest.approx(-0.396)
    tasks = ["a", "a", "b", "b", "a"]
    adv = torch.tensor([0.7, 0.5, -0.3, -0.5, 0.1])
    forced = torch.tensor([False, False, False, False, True])
    # policy_mask False: these samples don't enter the windows, so thresholds stay as set
    ind = algo.indicators(tasks, adv, forced, torch.zeros(5, dtype=torch.bool))
    np.testing.assert_array_equal(ind.numpy(), [1, 2, 1, 2, 1])  # 1 = positive, 2 = negative
    # state round trip keeps the thresholds
    other = _recap(positive_fraction=0.4, threshold_window=100)
    other.load_state_dict(algo.state_dict())
    assert other.threshold("a") == pytest.approx(0.594)


def test_make_algorithm_rejects_unknown_names_and_fields():
    with pytest.raises(ValueError, match="did you mean 'recap'"):
        make_algorithm("recapp")
    with pytest.raises(ValueError, match="unknown hg_dagger config field"):
        make_algorithm("hg_dagger", {"only_experts": True})
