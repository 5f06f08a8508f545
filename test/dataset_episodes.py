"""Episodes for the LeRobot dataset tests: real MetaWorld demos and fleet-like episodes with interventions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sop_ros.core.episodes.episode import Actor, Episode, EpisodeBuilder, LabelSource
from sop_ros.core.episodes.episode_file import write_episode


def record_metaworld_demos(out: Path, jobs: list[tuple[str, int]]) -> list[Path]:
    """Real scripted-expert demos (the package's own recorder), one episode file each."""
    from sop_ros.backends.metaworld_sim import make_backend
    from sop_ros.core.robot.tasks import load_task_specs
    from sop_ros.core.training.demo_recording import DemoJob, DemoSettings, record_demo
    from sop_ros.resources import default_tasks_path

    specs = load_task_specs(default_tasks_path())
    backend = make_backend({task: specs[task] for task, _ in jobs})
    try:
        settings = DemoSettings(str(out), "sim-demo", 4, 0.0, True)
        return [Path(record_demo(backend, DemoJob(task, seed), settings).path) for task, seed in jobs]
    finally:
        backend.close()


def fleet_episode_from(demo: Episode, robot_id: str, success, label_source: LabelSource) -> Episode:
    """A fleet-like episode on the demo's frames: the policy acts, a human intervenes twice, two policy versions."""
    builder = EpisodeBuilder(robot_id, demo.task_id, demo.instruction, (4, demo.actions.shape[1]), start_ns=5)
    for t in range(demo.num_steps):
        actor = Actor.HUMAN if 10 <= t < 20 or t >= demo.num_steps - 5 else Actor.POLICY
        builder.add_step(demo.images[t], demo.states[t], demo.actions[t], actor, 3 if t < 30 else 4, 10**9 + t * 10**8)
    builder.intervention_reasons = ["drifted", "end"]
    return builder.close(success, label_source, end_ns=10**9 + demo.num_steps * 10**8)


def synthetic_episode(task_id: str, instruction: str, steps: int, seed: int) -> Episode:
    """A small episode with smooth moving images (no simulator: for the error tests)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    builder = EpisodeBuilder("robot1", task_id, instruction, (4, 4), start_ns=1)
    for t in range(steps):
        image = np.stack([(xx * 4 + t * 5) % 256, yy * 6, np.full_like(xx, 30 * seed)], -1).astype(np.uint8)
        actor = Actor.HUMAN if t % 7 == 3 else Actor.POLICY
        state, action = rng.normal(size=6).astype(np.float32), rng.uniform(-1, 1, 4).astype(np.float32)
        builder.add_step(image, state, action, actor, 2, 10**9 + t * 10**8)
    return builder.close(True, LabelSource.ENVIRONMENT, end_ns=10**9 + steps * 10**8)


def write_all(episodes: list[Episode], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [write_episode(episode, out / f"{episode.episode_id}.mcap") for episode in episodes]
