"""Robot control loop on this machine: achieved rate and camera-to-action latency for 1, 2, 4 sim robots.

Each robot runs its control loop as real node processes from node_specs() (sim_robot: MetaWorld
camera + arm; policy: the VLA on every frame; action_mux: the executed goal), started by the
pip-only launcher, at the fleet's control rate (10 Hz by default). The recorder, scripted
operator, monitor and bridge are left out: the figures are those of the control loop itself.
Per robot count, over a window after every robot has acted:
- achieved_hz: executed steps per second per robot (mean over robots; target = the control rate;
  the sim pauses briefly between episodes, so slightly below it even when nothing saturates);
- step_latency_p50_ms / p99_ms: camera frame stamp -> the executed action sent to the arm
  (ExecutedStep.executed_at - header.stamp, same host clock), over all robots' steps;
- policy_forward_ms: mean VLA forward pass (ActionChunk.inference_ms of steps that ran the model),
  shown separately because chunk execution (execute_horizon) skips it on the other steps;
- cpu_percent: the machine's CPU use over the window (100 % = all cores busy), the robots'
  processes' share of it (robots_cpu_percent) and the 1-minute load average, so saturation, and
  load from other programs on a shared machine, are visible.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from sop_ros.bench.report import print_table
from sop_ros.resources import robot_control_rate_hz

log = logging.getLogger(__name__)
LOOP_NODES = ("sim_robot", "policy", "action_mux")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robots", type=int, nargs="+", default=[1, 2, 4], help="robot counts to run (default 1 2 4)")
    parser.add_argument(
        "--rate", type=float, default=robot_control_rate_hz(), help="control rate in Hz (default %(default)s)"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per robot count (default 30)")
    parser.add_argument(
        "--warmup-timeout", type=float, default=180.0, help="seconds to wait for every robot's first action"
    )
    parser.add_argument(
        "--preset", default="tiny", help="VLA model preset of the (random-weight) policy (default tiny)"
    )
    parser.add_argument("--quick", action="store_true", help="CI size: 1 and 2 robots, 20 s each")


def _checkpoint(directory: Path, preset_name: str) -> tuple[str, str]:
    import torch

    from sop_ros.core.episodes.hashing import file_sha256
    from sop_ros.core.model import VLAPolicy, preset

    torch.manual_seed(0)
    torch.set_num_threads(1)
    path = VLAPolicy(preset(preset_name), device="cpu").save(directory / "bench_policy.safetensors")
    return str(path), file_sha256(path)


class _Collector:
    """Subscribes to every robot's executed_step and action_chunk in its own rclpy context."""

    def __init__(self, domain_id: int, robot_ids: list[str]):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        from sop_ros.msg import ActionChunk, ExecutedStep
        from sop_ros.nodes import _qos
        from sop_ros.nodes._convert import stamp_ns

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node("bench_robots", context=self.context)
        self.lock = threading.Lock()
        self.steps: dict[str, list[tuple[float, float]]] = {
            r: [] for r in robot_ids
        }  # (received monotonic, latency ms)
        self.forward_ms: list[tuple[float, float]] = []
        for robot in robot_ids:

            def on_step(msg, robot=robot):
                latency_ms = (stamp_ns(msg.executed_at) - stamp_ns(msg.header.stamp)) / 1e6
                with self.lock:
                    self.steps[robot].append((time.monotonic(), latency_ms))

            def on_chunk(msg):
                if msg.inference_ms > 0:
                    with self.lock:
                        self.forward_ms.append((time.monotonic(), float(msg.inference_ms)))

            self.node.create_subscription(ExecutedStep, f"/{robot}/executed_step", on_step, _qos.CONTROL)
            self.node.create_subscription(ActionChunk, f"/{robot}/action_chunk", on_chunk, _qos.CONTROL)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._stop = threading.Event()
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


def _run_fleet(
    n: int, args: argparse.Namespace, checkpoint: tuple[str, str], workdir: Path, domain_id: int
) -> dict[str, Any]:
    from sop_ros.fleet.launcher import FleetLauncher

    robot_ids = [f"robot{i + 1}" for i in range(n)]
    specs = _loop_specs(robot_ids, args.rate, checkpoint, workdir / f"state{n}")
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.setdefault("MUJOCO_GL", "egl")
    collector = _Collector(domain_id, robot_ids)
    launch_log = io.StringIO()
    launcher = FleetLauncher(specs, out=launch_log, env=env)
    thread = threading.Thread(target=launcher.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + args.warmup_timeout
        while not all(len(collector.steps[r]) >= 5 for r in robot_ids):
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(
                    f"{n} robots: not every robot acted within {args.warmup_timeout:g} s\n"
                    f"{launch_log.getvalue()[-3000:]}"
                )
            time.sleep(0.5)
        window = _measure_window(launcher.pids, args.duration)
    finally:
        launcher.request_stop()
        thread.join(timeout=90)
        collector.close()
    return _window_figures(n, args.rate, robot_ids, collector, window, launch_log.getvalue())


def _loop_specs(robot_ids: list[str], rate: float, checkpoint: tuple[str, str], state_dir: Path) -> list:
    """The control-loop nodes (LOOP_NODES) of a sim fleet of `robot_ids`, the policy on the bench checkpoint."""
    from sop_ros.fleet.description import parse_fleet
    from sop_ros.fleet.specs import node_specs, select_nodes

    fleet = parse_fleet(
        {
            "fleet": "bench_robots",
            "state_dir": str(state_dir),
            "learner": {"run_locally": False, "insecure": True},
            "robots": [
                {
                    "id": r,
                    "backend": "sim",
                    "tasks": ["push-v3", "button-press-topdown-v3"],
                    "control_rate_hz": rate,
                }
                for r in robot_ids
            ],
        }
    )
    overrides = {
        "policy": {"checkpoint_path": checkpoint[0], "checkpoint_sha256": checkpoint[1], "checkpoint_version": 1},
        "sim_robot": {"seed": 0},
    }
    return [
        dataclasses.replace(s, parameters={**s.parameters, **overrides.get(s.name, {})})
        for s in select_nodes(node_specs(fleet, with_learner=False), lambda s: s.name in LOOP_NODES)
    ]


@dataclasses.dataclass(frozen=True)
class _Window:
    """The measured window (monotonic start and end) and the CPU figures over it."""

    start: float
    end: float
    machine_cpu: float
    load_1m: float
    robots_cpu: float


def _measure_window(pids: list[int], duration: float) -> _Window:
    """Sleep `duration` seconds while the robots run; the machine's and the robots' processes' CPU use over it."""
    procs = [psutil.Process(pid) for pid in pids]
    for p in procs:
        p.cpu_percent(None)
    psutil.cpu_percent(None)
    start = time.monotonic()
    time.sleep(duration)
    end = time.monotonic()
    machine_cpu = psutil.cpu_percent(None)
    load_1m = os.getloadavg()[0]
    robots_cpu = sum(p.cpu_percent(None) for p in procs if p.is_running()) / psutil.cpu_count()
    return _Window(start, end, machine_cpu, load_1m, robots_cpu)


def _window_figures(
    n: int, rate: float, robot_ids: list[str], collector: _Collector, window: _Window, launch_log: str
) -> dict[str, Any]:
    """Rates and latencies of the steps and forward passes the collector received within the window."""
    start, end = window.start, window.end
    with collector.lock:
        steps = {r: [lat for t, lat in collector.steps[r] if start <= t < end] for r in robot_ids}
        forward = [ms for t, ms in collector.forward_ms if start <= t < end]
    latencies = np.asarray([lat for lats in steps.values() for lat in lats])
    if latencies.size == 0:
        raise RuntimeError(f"{n} robots: no executed steps in the measured window\n{launch_log[-3000:]}")
    seconds = end - start
    per_robot_hz = [len(steps[r]) / seconds for r in robot_ids]
    return {
        "robots": n,
        "target_hz": rate,
        "achieved_hz": float(np.mean(per_robot_hz)),
        "achieved_hz_min": float(np.min(per_robot_hz)),
        "step_latency_p50_ms": float(np.percentile(latencies, 50)),
        "step_latency_p99_ms": float(np.percentile(latencies, 99)),
        "policy_forward_ms": float(np.mean(forward)) if forward else float("nan"),
        "policy_forward_p99_ms": float(np.percentile(forward, 99)) if forward else float("nan"),
        "cpu_percent": float(window.machine_cpu),
        "robots_cpu_percent": float(window.robots_cpu),
        "load_avg_1m": float(window.load_1m),
        "steps": int(latencies.size),
        "seconds": seconds,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    counts = [1, 2] if args.quick else args.robots
    duration = 20.0 if args.quick else args.duration
    args = argparse.Namespace(**{**vars(args), "duration": duration})
    if any(n < 1 for n in counts):
        raise ValueError(f"--robots: counts must be >= 1, got {counts}")
    runs = []
    with tempfile.TemporaryDirectory(prefix="sop_bench_robots_") as tmp:
        checkpoint = _checkpoint(Path(tmp), args.preset)
        for i, n in enumerate(counts):
            log.info("running %d sim robot(s) for %g s", n, duration)
            # A fresh DDS domain per run (101 downwards: the top of Linux's safe range, away from the tests' ids).
            runs.append(_run_fleet(n, args, checkpoint, Path(tmp), 101 - i))
    return {
        "runs": runs,
        "control_rate_hz": args.rate,
        "duration_s": duration,
        "preset": args.preset,
        "loop_nodes": list(LOOP_NODES),
        "cpu_count": psutil.cpu_count(),
    }


def render(figures: dict[str, Any]) -> None:
    rows = [
        [
            r["robots"],
            r["target_hz"],
            r["achieved_hz"],
            r["achieved_hz_min"],
            r["step_latency_p50_ms"],
            r["step_latency_p99_ms"],
            r["policy_forward_ms"],
            r["cpu_percent"],
            r["robots_cpu_percent"],
            r["load_avg_1m"],
        ]
        for r in figures["runs"]
    ]
    print_table(
        f"sim robot control loop ({figures['cpu_count']} CPUs, {figures['duration_s']:g} s per run, "
        f"preset {figures['preset']})",
        [
            "robots",
            "target Hz",
            "achieved Hz",
            "min robot Hz",
            "frame->action p50 ms",
            "p99 ms",
            "policy forward ms",
            "machine CPU %",
            "robots' CPU %",
            "load 1m",
        ],
        rows,
    )
