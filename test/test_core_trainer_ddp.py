"""DistributedDataParallel: two gloo ranks on CPU take a few steps and end with identical weights."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.timeout(240)


class _Store:
    def __init__(self, seed: int):
        from sop_ros.core.algorithms import DataSource
        from sop_ros.core.episodes.episode import Actor, EpisodeBuilder, LabelSource
        from sop_ros.core.training import EpisodeRecord

        rng = np.random.default_rng(seed)
        self.data, self.offline = {}, []
        for i, task in enumerate(["push", "reach"]):
            b = EpisodeBuilder("r", task, f"do {task}", (4, 4), episode_id=str(uuid.UUID(int=i + 1)))
            for t in range(12):
                b.add_step(
                    rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                    rng.normal(size=4).astype(np.float32),
                    rng.uniform(-1, 1, 4).astype(np.float32),
                    Actor.HUMAN,
                    0,
                    t,
                )
            ep = b.close(True, LabelSource.ENVIRONMENT, 12)
            self.data[ep.episode_id] = {
                "images": ep.images,
                "states": ep.states,
                "actions": ep.actions,
                "actors": ep.actors,
                "policy_versions": ep.policy_versions,
            }
            self.offline.append(EpisodeRecord(i, ep.episode_id, task, ep.instruction, True, 12, DataSource.OFFLINE))

    def new_episodes(self, after_seq):
        return []

    def arrays(self, episode_id):
        return self.data[episode_id]


class _NoCheckpoints:
    def publish(self, *a, **k):
        raise AssertionError("not expected in this test")

    def latest(self):
        return None


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from sop_ros.core.algorithms import make_algorithm
        from sop_ros.core.model import VLAPolicy, preset
        from sop_ros.core.training import ContinuousTrainer, TrainerConfig
        from sop_ros.core.training.sampler import TaskAwareSampler

        torch.manual_seed(100 + rank)  # different init per rank: DDP must broadcast rank 0's weights
        policy = VLAPolicy(preset("tiny"), device="cpu")
        store = _Store(seed=0)
        trainer = ContinuousTrainer(
            TrainerConfig(batch_size=4, publish_every_updates=1000, poll_interval_s=0.0),
            policy,
            make_algorithm("bc", {"chunk_size": 4}),
            TaskAwareSampler(seed=rank),
            store,
            store,
            _NoCheckpoints(),
            offline_episodes=store.offline,
        )
        initial = torch.cat([p.detach().flatten() for p in policy.parameters()]).numpy().copy()
        losses = [trainer.step()["loss"] for _ in range(2)]
        final = torch.cat([p.detach().flatten() for p in policy.parameters()]).numpy()
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), initial=initial, final=final, losses=np.array(losses))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_keep_identical_parameters(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    np.testing.assert_array_equal(r0["final"], r1["final"])
    assert not np.array_equal(r0["final"], r0["initial"])  # they really trained
    assert not np.array_equal(r0["losses"], r1["losses"])  # on different batches
