"""ContinuousTrainer: notified and polled episodes, publishing every N updates, resume, TensorBoard,
RECAP end to end."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from typing import Optional

import numpy as np
import pytest
import torch

from sop_ros.core.algorithms import DataSource, make_algorithm
from sop_ros.core.episodes.episode import Actor, EpisodeBuilder, LabelSource
from sop_ros.core.model import VLAPolicy, preset, shared_instruction_encoder
from sop_ros.core.training import ContinuousTrainer, EpisodeRecord, TrainerConfig
from sop_ros.core.training.sampler import SamplerConfig, TaskAwareSampler

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core runner more threads only fight each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class MemoryEpisodes:
    """Episode source + arrays provider over in-memory episodes (the store's narrow views)."""

    def __init__(self) -> None:
        self.records: list[EpisodeRecord] = []
        self.data: dict[str, dict[str, np.ndarray]] = {}
        self._seq = itertools.count()

    def add(self, ep, source=DataSource.ONLINE) -> EpisodeRecord:
        rec = EpisodeRecord(
            next(self._seq), ep.episode_id, ep.task_id, ep.instruction, ep.success, ep.num_steps, source
        )
        self.data[ep.episode_id] = {
            f.name: getattr(ep, f.name) for f in dataclasses.fields(ep) if isinstance(getattr(ep, f.name), np.ndarray)
        }
        if source == DataSource.ONLINE:
            self.records.append(rec)
        return rec

    def new_episodes(self, after_seq: int):
        return [r for r in self.records if r.seq > after_seq]

    def arrays(self, episode_id: str):
        return self.data[episode_id]


@dataclasses.dataclass
class Manifest:
    version: int
    parent_version: Optional[int]
    training_step: int
    algorithm: str
    metrics: dict


class MemoryCheckpoints:
    def __init__(self) -> None:
        self.items: dict[int, tuple[Manifest, dict, dict, dict]] = {}

    def publish(self, tensors, *, algorithm, training_step, metrics, parent_version, train_state, train_state_meta):
        m = Manifest(len(self.items) + 1, parent_version, training_step, algorithm, dict(metrics))

        def clone(d):
            return {k: v.clone() for k, v in d.items()}

        self.items[m.version] = (m, clone(tensors), clone(train_state), dict(train_state_meta))
        return m

    def latest(self):
        return self.items[max(self.items)][0] if self.items else None

    def load_tensors(self, version):
        return self.items[version][1]

    def load_train_state(self, version):
        return self.items[version][2], self.items[version][3]


def make_episode(task: str, steps: int, actors, success: Optional[bool], seed: int, version: int = 0):
    rng = np.random.default_rng(seed)
    b = EpisodeBuilder("robot1", task, f"do {task}", chunk_shape=(4, 4))
    for t in range(steps):
        state = rng.uniform(-1, 1, 4).astype(np.float32)
        action = np.tanh(np.array([state[0], -state[1], state[2] * 0.5, 0.3], np.float32))  # learnable from the state
        b.add_step(
            rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), state, action, actors[t % len(actors)], version, t
        )
    return b.close(success, LabelSource.NONE if success is None else LabelSource.ENVIRONMENT, steps)


def make_trainer(store, ckpts, algo="hg_dagger", offline=(), model_overrides=None, algo_config=None, **cfg):
    torch.manual_seed(0)
    policy = VLAPolicy(
        preset("tiny", **(model_overrides or {})), instruction_encoder=shared_instruction_encoder(), device="cpu"
    )
    config = TrainerConfig(
        **{"batch_size": 8, "publish_every_updates": 3, "publish_every_s": 1e6, "poll_interval_s": 0.0, **cfg}
    )
    announced = []
    trainer = ContinuousTrainer(
        config,
        policy,
        make_algorithm(algo, algo_config or {"chunk_size": 4}),
        TaskAwareSampler(SamplerConfig(), seed=0),
        store,
        store,
        ckpts,
        offline_episodes=offline,
        on_checkpoint=announced.append,
    )
    return trainer, announced


@pytest.fixture()
def store():
    s = MemoryEpisodes()
    s.offline = [
        s.add(make_episode(task, 20, [Actor.HUMAN], True, seed=i), DataSource.OFFLINE)
        for i, task in enumerate(["push", "reach"])
    ]
    return s


def test_publishes_every_n_updates_and_resumes_with_optimizer_state(store):
    ckpts = MemoryCheckpoints()
    trainer, announced = make_trainer(store, ckpts, offline=store.offline)
    assert trainer.run(max_updates=7) == 7
    assert [m.version for m in announced] == [1, 2]
    assert [m.training_step for m in announced] == [3, 6]
    assert [m.parent_version for m in announced] == [None, 1]
    assert announced[0].algorithm == "hg_dagger" and "loss" in announced[0].metrics
    saved_state, saved_meta = ckpts.load_train_state(2)
    assert saved_meta["updates"] == 6 and any(k.endswith("exp_avg") for k in saved_state)

    # a fresh process: same stores, new trainer
    again, announced2 = make_trainer(store, ckpts, offline=store.offline)
    assert again.resume() and again.updates == 6 and again.version == 2
    for key, value in ckpts.load_tensors(2).items():
        if not key.startswith("__"):
            torch.testing.assert_close(again.policy.state_dict()[key], value)
    state = again.optimizer.state_dict()["state"]
    exp_avg = {k: v for k, v in saved_state.items() if k.endswith("exp_avg")}
    for key, value in exp_avg.items():
        torch.testing.assert_close(state[int(key.split("/")[1])]["exp_avg"], value)
    assert again.sampler.state_dict() == saved_meta["sampler"]
    again.run(max_updates=3)
    assert [(m.version, m.parent_version, m.training_step) for m in announced2] == [(3, 2, 9)]


def test_new_online_episodes_enter_the_buffer_on_the_next_poll(store):
    trainer, _ = make_trainer(store, MemoryCheckpoints(), offline=store.offline)
    trainer.run(max_updates=1)
    assert trainer.sampler.online_share("push") == 0.0
    store.add(make_episode("push", 12, [Actor.POLICY, Actor.HUMAN], False, seed=7))
    trainer.run(max_updates=2)
    assert trainer.buffered_episodes == 3
    assert trainer.sampler.buffer_sizes()[("push", DataSource.ONLINE)] == 6  # the human steps only
    assert 0.2 <= trainer.sampler.online_share("push") <= 0.8


class ReadRecordingEpisodes(MemoryEpisodes):
    """MemoryEpisodes that signals every read of the online source."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = threading.Semaphore(0)

    def new_episodes(self, after_seq: int):
        records = super().new_episodes(after_seq)
        self.reads.release()
        return records


class SignallingCheckpoints(MemoryCheckpoints):
    def __init__(self, published: threading.Event) -> None:
        super().__init__()
        self._published = published

    def publish(self, tensors, **kwargs):
        manifest = super().publish(tensors, **kwargs)
        self._published.set()
        return manifest


def test_a_notified_episode_is_trained_on_without_waiting_for_the_poll():
    """Poll interval huge: only notify_new_episodes() can bring the committed episode to the sampler."""
    source = ReadRecordingEpisodes()
    published = threading.Event()
    trainer, announced = make_trainer(
        source, SignallingCheckpoints(published), publish_every_updates=1, poll_interval_s=1e6
    )
    stop = threading.Event()
    thread = threading.Thread(target=trainer.run, kwargs={"should_stop": stop.is_set}, daemon=True)
    thread.start()
    try:
        assert source.reads.acquire(timeout=60), "the trainer never read its source at start"
        source.add(make_episode("push", 12, [Actor.POLICY, Actor.HUMAN], False, seed=7))
        trainer.notify_new_episodes()
        assert published.wait(timeout=60), "the committed episode never reached the sampler"
    finally:
        stop.set()
        trainer.notify_new_episodes()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert trainer.sampler.buffer_sizes()[("push", DataSource.ONLINE)] == 6
    assert trainer.source_reads >= 2 and announced[0].training_step == 1


@pytest.mark.parametrize(
    "algorithm, config",
    [
        ("bc", {"chunk_size": 4}),
        ("hg_dagger", {"chunk_size": 4}),
        ("recap", {"chunk_size": 4, "value_bins": 11, "max_episode_steps": 20, "n_step": 3}),
    ],
)
def test_only_offline_only_algorithms_find_nothing_to_learn_in_a_fleet_episode(algorithm, config):
    """OFFLINE_ONLY_ALGORITHMS (the learner's "nothing to train on" check) matches what the algorithms do."""
    from sop_ros.core.algorithms.base import EpisodeMeta
    from sop_ros.core.training.learner_training import OFFLINE_ONLY_ALGORITHMS

    ep = make_episode("push", 12, [Actor.POLICY, Actor.HUMAN], True, seed=3)
    arrays = {name: value for name, value in vars(ep).items() if isinstance(value, np.ndarray)}
    meta = EpisodeMeta(ep.episode_id, ep.task_id, ep.instruction, ep.success, ep.num_steps, DataSource.ONLINE)
    trainable = make_algorithm(algorithm, config).targets(arrays, meta).trainable_steps.size
    assert (trainable == 0) == (algorithm in OFFLINE_ONLY_ALGORITHMS)


def test_training_reduces_the_action_loss(store):
    trainer, _ = make_trainer(
        store, MemoryCheckpoints(), offline=store.offline, algo="bc", batch_size=16, learning_rate=1e-3
    )
    losses = [trainer.step()["loss"] for _ in range(40)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_tensorboard_scalars_are_written(store, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    store.add(make_episode("push", 10, [Actor.HUMAN, Actor.POLICY], True, seed=3, version=0))
    writer = SummaryWriter(str(tmp_path))
    trainer, _ = make_trainer(store, MemoryCheckpoints(), offline=store.offline, log_every_updates=2)
    trainer._writer = writer
    trainer.run(max_updates=4)
    store.add(make_episode("push", 10, [Actor.HUMAN], True, seed=4, version=0))
    trainer.run(max_updates=2)
    writer.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in [
        "train/loss",
        "train/updates_per_s",
        "sampler/online_share/push",
        "sampler/task_weight/reach",
        "buffer/push/online_steps",
        "loss/push/offline",
        "fleet/push/success_rate",
        "fleet/push/intervention_rate",
        "fleet/staleness_versions",
    ]:
        assert tag in tags, tag
    assert acc.Scalars("fleet/staleness_versions")[-1].value == 1.0  # version 1 was live, the episode ran version 0


def test_recap_trains_policy_and_value_end_to_end(store):
    store.add(make_episode("push", 15, [Actor.POLICY, Actor.POLICY, Actor.HUMAN], True, seed=5))
    store.add(make_episode("push", 15, [Actor.POLICY], False, seed=6))
    cfg = {"chunk_size": 4, "value_bins": 11, "max_episode_steps": 20, "n_step": 3}
    trainer, announced = make_trainer(
        store,
        MemoryCheckpoints(),
        algo="recap",
        offline=store.offline,
        model_overrides={"value_bins": 11},
        algo_config=cfg,
    )
    value_before = {k: v.clone() for k, v in trainer.policy.value_net.state_dict().items()}
    metrics = [trainer.step() for _ in range(4)]
    assert all(np.isfinite(m["value_loss"]) and 0.0 <= m["positive_rate"] <= 1.0 for m in metrics)
    assert any(not torch.equal(value_before[k], v) for k, v in trainer.policy.value_net.state_dict().items())
    assert trainer.algorithm.threshold("push") is not None
    manifest = trainer.publish()
    assert manifest.algorithm == "recap"


def test_recap_needs_a_value_head():
    from sop_ros.core.model import ConfigError

    with pytest.raises(ConfigError, match="value bins"):
        make_trainer(
            MemoryEpisodes(), MemoryCheckpoints(), algo="recap", algo_config={"chunk_size": 4, "value_bins": 11}
        )


def _ingest(store, ep, tmp_path):
    from sop_ros.core.episodes.episode_file import write_episode
    from sop_ros.core.episodes.hashing import file_sha256

    path = write_episode(ep, tmp_path / f"{ep.episode_id}.mcap")
    store.append_staged(ep.episode_id, 0, path.read_bytes())
    store.commit(ep.episode_id, file_sha256(path), ep.robot_id)


def test_real_episode_and_checkpoint_stores(tmp_path):
    from sop_ros.core.storage.checkpoint_store import CheckpointStore
    from sop_ros.core.storage.episode_store import EpisodeStore
    from sop_ros.core.training import MultiStoreArrays, StoreEpisodeSource, offline_records

    with (
        EpisodeStore(tmp_path / "demos", cache_in_background=False) as demos,
        EpisodeStore(tmp_path / "fleet", cache_in_background=False) as fleet,
    ):
        _ingest(demos, make_episode("push", 12, [Actor.HUMAN], True, seed=1), tmp_path)
        ckpts = CheckpointStore(tmp_path / "ckpt")
        torch.manual_seed(0)
        policy = VLAPolicy(preset("tiny"), instruction_encoder=shared_instruction_encoder(), device="cpu")
        trainer = ContinuousTrainer(
            TrainerConfig(batch_size=4, publish_every_updates=2, poll_interval_s=0.0),
            policy,
            make_algorithm("hg_dagger", {"chunk_size": 4}),
            TaskAwareSampler(),
            StoreEpisodeSource(fleet),
            MultiStoreArrays(fleet, demos),
            ckpts,
            offline_episodes=offline_records(demos),
        )
        trainer.run(max_updates=2)
        _ingest(fleet, make_episode("push", 10, [Actor.POLICY, Actor.HUMAN], False, seed=2), tmp_path)
        trainer.run(max_updates=2)
        assert trainer.sampler.buffer_sizes()[("push", DataSource.ONLINE)] == 5
        assert [ckpts.get(v).training_step for v in ckpts.versions()] == [2, 4]
        robot_side = VLAPolicy.from_checkpoint_tensors(
            ckpts.load_tensors(2), device="cpu", instruction_encoder=shared_instruction_encoder()
        )
        obs = {"image": np.zeros((32, 32, 3), np.uint8), "state": np.zeros(4, np.float32)}
        np.testing.assert_allclose(robot_side.eval().act(obs, "do push"), policy.eval().act(obs, "do push"), atol=1e-6)
        resumed = ContinuousTrainer(
            TrainerConfig(batch_size=4),
            VLAPolicy(preset("tiny"), instruction_encoder=shared_instruction_encoder(), device="cpu"),
            make_algorithm("hg_dagger", {"chunk_size": 4}),
            TaskAwareSampler(),
            StoreEpisodeSource(fleet),
            MultiStoreArrays(fleet, demos),
            ckpts,
        )
        assert resumed.resume() and resumed.updates == 4 and resumed.version == 2


def test_recap_with_frozen_value_network_leaves_it_unchanged(store):
    store.add(make_episode("push", 15, [Actor.POLICY], True, seed=8))
    cfg = {"chunk_size": 4, "value_bins": 11, "max_episode_steps": 20, "n_step": 3, "train_value": False}
    trainer, _ = make_trainer(
        store,
        MemoryCheckpoints(),
        algo="recap",
        offline=store.offline,
        model_overrides={"value_bins": 11},
        algo_config=cfg,
    )
    value_before = {k: v.clone() for k, v in trainer.policy.value_net.state_dict().items()}
    policy_before = trainer.policy.action_head.head.weight.clone()
    trainer.run(max_updates=3)
    for k, v in trainer.policy.value_net.state_dict().items():
        torch.testing.assert_close(v, value_before[k])
    assert not torch.equal(policy_before, trainer.policy.action_head.head.weight)


def test_recap_from_a_bc_base_adds_a_value_network_on_the_presets_value_tower():
    from sop_ros.core.model.config import VisionConfig, VLAConfig
    from sop_ros.core.training.learner_training import _model_config_for

    older_base = VLAConfig(vision=VisionConfig(architecture="resnet"))  # no value_vision field yet
    recap = _model_config_for("recap", older_base, "tiny")
    assert (
        recap.value_bins == 51 and recap.value_tower == preset("tiny").value_tower and recap.vision == older_base.vision
    )
    assert _model_config_for("recap", recap, "tiny") == recap  # a RECAP checkpoint is resumed as it is
    assert _model_config_for("hg_dagger", older_base, "tiny") == older_base


def test_with_ema_decay_the_published_weights_are_the_average_and_training_resumes_from_the_raw_ones(store):
    decay = 0.9
    ckpts = MemoryCheckpoints()
    trainer, _ = make_trainer(store, ckpts, offline=store.offline, ema_decay=decay, publish_every_updates=1000)
    trainer.poll()
    expected = None
    for _ in range(4):
        trainer.step()
        raw = {k: v.clone() for k, v in trainer.policy.tensors().items()}  # tensors() shares the live storage on CPU
        expected = raw if expected is None else {k: decay * expected[k] + (1 - decay) * raw[k] for k in raw}
    manifest = trainer.publish()
    published = ckpts.load_tensors(manifest.version)
    floats = [k for k, v in raw.items() if v.is_floating_point()]
    for key in floats:
        torch.testing.assert_close(published[key], expected[key])
    assert any(not torch.equal(published[k], raw[k]) for k in floats), "published the raw weights"

    # A fresh process resumes the raw weights for training and the average for publishing; it then goes on
    # exactly as the trainer that never stopped.
    again, _ = make_trainer(store, ckpts, offline=store.offline, ema_decay=decay, publish_every_updates=1000)
    assert again.resume() and again.updates == 4
    for key, value in raw.items():
        torch.testing.assert_close(again.policy.tensors()[key], value)
    for trained in (trainer, again):  # one process: each run starts from the saved global torch RNG
        torch.set_rng_state(ckpts.load_train_state(manifest.version)[0]["rng/torch"].to(torch.uint8))
        trained.run(max_updates=3)
    first, second = trainer.publish(), again.publish()
    for key in floats:
        torch.testing.assert_close(ckpts.load_tensors(second.version)[key], ckpts.load_tensors(first.version)[key])


def test_ema_decay_out_of_range_is_refused():
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="ema_decay"):
            TrainerConfig(ema_decay=bad)
