"""One fleet run of an experiment, in its own directory: copy the base, write fleet.yaml, launch, stop.

    <run_dir>/fleet.yaml     the generated fleet description (the run's exact configuration)
    <run_dir>/learner/       the learner data dir: a copy of the base's checkpoints/ and offline/,
                             then the run's episodes/, checkpoints and tensorboard/
    <run_dir>/state/         robot spools and checkpoint caches
    <run_dir>/fleet.log      every process's output, prefixed with its name (the launcher's format)

Runs never share state: each starts from its own copy of the base data dir, its own learner port
and its own ROS domain. While the fleet runs, progress is read from the learner's episode index
with a read-only SQLite connection (the learner process owns the store; opening an EpisodeStore
here would run its crash recovery on files the learner is still writing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import re
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import psutil
import yaml

from sop_ros.core.storage.data_layout import CHECKPOINTS_DIR, EPISODES_DIR, OFFLINE_DIR
from sop_ros.core.training.trainer import TrainerConfig
from sop_ros.fleet.description import FleetDescription, parse_fleet
from sop_ros.fleet.launcher import FleetLauncher
from sop_ros.fleet.specs import NodeSpec, ProcessSpec, node_specs

log = logging.getLogger(__name__)

FLEET_FILE = "fleet.yaml"
LEARNER_DIR = "learner"
STATE_DIR = "state"
LOG_FILE = "fleet.log"
# Online scenes start here: disjoint from demo scenes (0..), evaluation (1,000,000..) and the
# pretraining validation scenes (2,000,000..). Each (seed, robot) gets its own block of scenes.
ONLINE_SEED_BASE = 3_000_000
SEED_BLOCK = 100_000
ROBOT_SEED_BLOCK = 10_000
_VERSION_DIR = re.compile(r"^v(\d{6,})$")


class FleetRunError(RuntimeError):
    """A run could not be prepared or its fleet failed."""


@dataclasses.dataclass(frozen=True)
class FleetRunConfig:
    robots: int
    tasks: tuple[str, ...]
    robot_hz: float
    algorithm: str  # the learner's algorithm (hg_dagger | recap)
    learner_trains: bool  # False: the learner only serves (robots keep the base policy)
    duration_s: float
    seed: int = 0
    publish_every_updates: int = TrainerConfig().publish_every_updates
    learner_threads: int = 1
    ema_decay: float = TrainerConfig().ema_decay

    def __post_init__(self) -> None:
        if self.robots <= 0:
            raise ValueError(f"robots: must be positive, got {self.robots}")
        if not self.tasks:
            raise ValueError("tasks: at least one task is required")
        if not self.robot_hz > 0:
            raise ValueError(f"robot_hz: must be positive, got {self.robot_hz}")
        if not self.duration_s > 0:
            raise ValueError(f"duration_s: must be positive, got {self.duration_s}")
        if self.publish_every_updates <= 0 or self.learner_threads <= 0:
            raise ValueError("publish_every_updates and learner_threads must be positive")


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the learner binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_run_dir(base_dir: Path, run_dir: Path) -> Path:
    """Make `run_dir` fresh and copy the base learner data (checkpoints/, offline/) into it; returns the learner dir.

    The copy is made under a temp name and renamed, so a learner dir exists only complete.
    """
    base_dir = Path(base_dir)
    checkpoints = base_dir / CHECKPOINTS_DIR
    if not checkpoints.is_dir() or not any(_VERSION_DIR.fullmatch(p.name) for p in checkpoints.iterdir()):
        raise FleetRunError(
            f"base {base_dir}: no checkpoint in {checkpoints} (expected the base policy v1 from `sop pretrain`)"
        )
    if not (base_dir / OFFLINE_DIR).is_dir():
        raise FleetRunError(f"base {base_dir}: no offline demo store {base_dir / OFFLINE_DIR} (from `sop pretrain`)")
    run_dir = Path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    learner = run_dir / LEARNER_DIR
    tmp = run_dir / f".{LEARNER_DIR}.copying"
    tmp.mkdir()
    ignore = shutil.ignore_patterns(".*.tmp*", "*.lock")
    shutil.copytree(checkpoints, tmp / CHECKPOINTS_DIR, ignore=ignore)
    shutil.copytree(base_dir / OFFLINE_DIR, tmp / OFFLINE_DIR, ignore=ignore)
    os.rename(tmp, learner)
    return learner


def prune_run_dir(run_dir: Path, keep_versions: set[int]) -> int:
    """Free the disk a finished run no longer needs; returns the bytes removed.

    The learner publishes every few seconds (a full checkpoint with its optimiser state each time) and
    every robot caches each one, so an hour-long run holds gigabytes. After the evaluation only the
    evaluated versions matter (the others' manifests are summarised in the run's result.json).
    """
    freed = 0

    def remove(path: Path) -> None:
        nonlocal freed
        freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        shutil.rmtree(path)

    checkpoints = Path(run_dir) / LEARNER_DIR / CHECKPOINTS_DIR
    for version in checkpoint_versions(checkpoints):
        if version not in keep_versions:
            remove(checkpoints / f"v{version:06d}")
    state = Path(run_dir) / STATE_DIR
    if state.is_dir():
        for cache in state.glob("*/checkpoints"):
            remove(cache)
    return freed


def fleet_description(config: FleetRunConfig, run_dir: Path, port: int) -> dict:
    """The fleet.yaml mapping of a run: sim robots robot1..N, a local plaintext learner on loopback."""
    run_dir = Path(run_dir).resolve()
    return {
        "fleet": "experiment",
        "state_dir": str(run_dir / STATE_DIR),
        "learner": {
            "address": f"127.0.0.1:{port}",
            "run_locally": True,
            "data_dir": str(run_dir / LEARNER_DIR),
            "algorithm": config.algorithm,
            "insecure": True,  # loopback only, inside one experiment
        },
        "robots": [
            {
                "id": f"robot{i + 1}",
                "backend": "sim",
                "tasks": list(config.tasks),
                "control_rate_hz": float(config.robot_hz),
            }
            for i in range(config.robots)
        ],
    }


def write_fleet_yaml(config: FleetRunConfig, run_dir: Path, port: int) -> tuple[Path, FleetDescription]:
    """Write <run_dir>/fleet.yaml and return it with its validated description."""
    data = fleet_description(config, run_dir, port)
    path = Path(run_dir) / FLEET_FILE
    header = (
        f"# Generated by `sop experiment` for one run: {config.robots} robot(s) at {config.robot_hz:g} Hz, "
        f"learner {config.algorithm}{'' if config.learner_trains else ' (--no-train)'}, seed {config.seed}.\n"
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(header + yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)
    return path, parse_fleet(data, source=str(path), base_dir=path.parent)


def online_seed(seed: int, robot_index: int) -> int:
    """First scene seed of a robot in a run (later episodes use seed + n, as sim_robot does)."""
    return ONLINE_SEED_BASE + seed * SEED_BLOCK + robot_index * ROBOT_SEED_BLOCK


def run_specs(fleet: FleetDescription, config: FleetRunConfig) -> list[NodeSpec | ProcessSpec]:
    """node_specs() of the fleet with the experiment's settings that fleet.yaml has no key for:
    learner training on/off, publish cadence and threads; each sim robot's scene seeds."""
    robot_index = {robot.id: i for i, robot in enumerate(fleet.robots)}
    specs = []
    for spec in node_specs(fleet):
        if isinstance(spec, ProcessSpec) and spec.name == "learner":
            # Every checkpoint is kept while the run lasts: the evaluation picks them by wall-clock time afterwards.
            extra = [
                "--publish-every-updates",
                str(config.publish_every_updates),
                "--torch-threads",
                str(config.learner_threads),
                "--seed",
                str(config.seed),
                "--keep-checkpoints",
                "0",
                "--ema-decay",
                str(config.ema_decay),
            ]
            if not config.learner_trains:
                extra.append("--no-train")
            spec = dataclasses.replace(spec, args=(*spec.args, *extra))
        elif isinstance(spec, NodeSpec) and spec.executable == "sim_robot":
            spec = dataclasses.replace(
                spec, parameters={**spec.parameters, "seed": online_seed(config.seed, robot_index[spec.robot_id])}
            )
        specs.append(spec)
    if not any(isinstance(s, ProcessSpec) and s.name == "learner" for s in specs):
        raise FleetRunError("the fleet has no learner process (sop_ros.commands.learner is missing)")
    return specs


def fleet_environment(domain_id: Optional[int] = None) -> dict[str, str]:
    """The run's process environment: its own ROS domain, discovery on this host only, one BLAS thread each."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else random.SystemRandom().randint(1, 100))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["OMP_NUM_THREADS"] = "1"
    env.setdefault("MUJOCO_GL", "egl")
    return env


@dataclasses.dataclass(frozen=True)
class LiveCounts:
    """What the learner has received so far (read while the fleet runs)."""

    episodes: int = 0
    successes: int = 0
    steps: int = 0
    human_steps: int = 0
    recent_success_rate: Optional[float] = None  # over the last `recent` episodes
    recent_intervention_share: Optional[float] = None
    latest_version: Optional[int] = None


def checkpoint_versions(checkpoints_dir: Path) -> list[int]:
    """Published versions (a version dir with its manifest), without opening a CheckpointStore."""
    if not checkpoints_dir.is_dir():
        return []
    return sorted(
        int(m.group(1))
        for p in checkpoints_dir.iterdir()
        if (m := _VERSION_DIR.fullmatch(p.name)) and (p / "manifest.json").is_file()
    )


def read_live_counts(learner_dir: Path, recent: int = 20) -> LiveCounts:
    """Counts from the learner's episode index (read-only; zeros before the first upload)."""
    versions = checkpoint_versions(Path(learner_dir) / CHECKPOINTS_DIR)
    latest = versions[-1] if versions else None
    index = Path(learner_dir) / EPISODES_DIR / "index.sqlite3"
    if not index.is_file():
        return LiveCounts(latest_version=latest)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=1.0)) as db:
            total = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(success), 0), COALESCE(SUM(num_steps), 0), "
                "COALESCE(SUM(human_steps), 0) FROM episodes"
            ).fetchone()
            last = db.execute(
                "SELECT success, num_steps, human_steps FROM episodes ORDER BY ingest_seq DESC LIMIT ?", (recent,)
            ).fetchall()
    except sqlite3.Error as exc:  # the learner may be creating the file right now
        log.debug("live counts unavailable: %s", exc)
        return LiveCounts(latest_version=latest)
    labelled = [r for r in last if r[0] is not None]
    steps = sum(r[1] for r in last)
    return LiveCounts(
        episodes=int(total[0]),
        successes=int(total[1]),
        steps=int(total[2]),
        human_steps=int(total[3]),
        recent_success_rate=sum(r[0] for r in labelled) / len(labelled) if labelled else None,
        recent_intervention_share=sum(r[2] for r in last) / steps if steps else None,
        latest_version=latest,
    )


@dataclasses.dataclass(frozen=True)
class FleetRunRecord:
    start_ns: int  # wall clock when the processes were started (time 0 of the run)
    stop_ns: int  # wall clock when the stop was requested
    duration_s: float  # stop - start
    exit_code: int  # the launcher's: 0 unless a process died
    stopped_early: bool  # the fleet stopped before the duration was up (a process died)
    port: int
    domain_id: int
    cpu_percent_mean: Optional[float] = None  # machine-wide CPU use while the fleet ran (100 = all cores busy)


def _watch_fleet(
    config: FleetRunConfig,
    thread: threading.Thread,
    learner_dir: Path,
    start: float,
    cpu_samples: list[float],
    on_tick: Optional[Callable[[float, LiveCounts], None]],
    tick_s: float,
    should_stop: Callable[[], bool],
) -> bool:
    """Wait until the duration is up or should_stop(), sampling CPU use and calling on_tick.

    Returns whether the fleet stopped by itself before that (stopped early).
    """
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= config.duration_s or should_stop():
            return False
        if not thread.is_alive():
            return True
        if elapsed > 1.0:
            cpu_samples.append(psutil.cpu_percent(interval=None))
        if on_tick is not None:
            on_tick(elapsed, read_live_counts(learner_dir))
        time.sleep(min(tick_s, max(0.05, config.duration_s - elapsed)))


def _fleet_record(
    run_dir: Path,
    launcher: FleetLauncher,
    start_ns: int,
    stop_ns: int,
    stopped_early: bool,
    port: int,
    env: dict[str, str],
    cpu_samples: list[float],
) -> FleetRunRecord:
    """The stopped run's record; FleetRunError when the fleet stopped before its time."""
    if stopped_early:
        raise FleetRunError(
            f"run {run_dir.name}: the fleet stopped after {(stop_ns - start_ns) / 1e9:.0f} s "
            f"(exit code {launcher.exit_code}); see {run_dir / LOG_FILE}"
        )
    cpu = sum(cpu_samples) / len(cpu_samples) if cpu_samples else None
    return FleetRunRecord(
        start_ns,
        stop_ns,
        (stop_ns - start_ns) / 1e9,
        launcher.exit_code,
        stopped_early,
        port,
        int(env["ROS_DOMAIN_ID"]),
        cpu,
    )


def run_fleet(
    config: FleetRunConfig,
    run_dir: Path,
    on_tick: Optional[Callable[[float, LiveCounts], None]] = None,
    tick_s: float = 2.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> FleetRunRecord:
    """Start the run's fleet (run_dir must be prepared), let it run for config.duration_s, stop it.

    on_tick(elapsed_s, counts) is called every tick_s seconds. KeyboardInterrupt or should_stop()
    stop the fleet early; every process is stopped before this returns or raises.
    """
    run_dir = Path(run_dir)
    port = free_loopback_port()
    _, fleet = write_fleet_yaml(config, run_dir, port)
    specs = run_specs(fleet, config)
    env = fleet_environment()
    learner_dir = fleet.learner_data_dir()
    with open(run_dir / LOG_FILE, "a") as log_file:
        launcher = FleetLauncher(specs, out=log_file, env=env)
        thread = threading.Thread(target=launcher.run, name="sop-experiment-fleet", daemon=True)
        start_ns = time.time_ns()
        start = time.monotonic()
        thread.start()
        log.info(
            "run %s: %d processes, learner on 127.0.0.1:%d, ROS domain %s",
            run_dir.name,
            len(specs),
            port,
            env["ROS_DOMAIN_ID"],
        )
        cpu_samples: list[float] = []
        psutil.cpu_percent(interval=None)  # starts the measurement interval
        try:
            stopped_early = _watch_fleet(config, thread, learner_dir, start, cpu_samples, on_tick, tick_s, should_stop)
        finally:
            stop_ns = time.time_ns()
            launcher.request_stop()
            thread.join()
    return _fleet_record(run_dir, launcher, start_ns, stop_ns, stopped_early, port, env, cpu_samples)
