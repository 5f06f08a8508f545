"""Idle robots held by one learner, and one robot flooding it, for the transport benchmark.

Every robot registers, keeps a checkpoint watch open (live: it received the current checkpoint) and
heartbeats once per second, each over its own connection, as robots on their own machines do; they are
grpc.aio coroutines in the benchmark process, the learner runs in its own process. After a quiet hold,
one more robot floods the learner (many watches and heartbeats at once) while the others carry on.
Figures: idle_robots, idle_watches_live, idle_errors (target 0), idle_heartbeat_p50/p99_ms,
learner_threads_peak and learner_rss_peak_mb (sampled from /proc), then flood_calls, flood_refused (the
flooder's calls answered RESOURCE_EXHAUSTED), flood_others_errors and flood_health_failures (target 0),
flood_others_heartbeat_p99_ms.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from sop_ros.bench.transport_fanout import _publish_random_checkpoint
from sop_ros.bench.transport_servers import ServerProcess

HEARTBEAT_S = 1.0  # the learner's default heartbeat interval
FLOOD_WATCHES = 50
FLOOD_CALLS = 50  # heartbeats the flooder fires at once, again and again
_CONNECT_S = 300.0  # every robot registered and watching: generous, 1,000 robots share 2 cores with the learner


@dataclasses.dataclass
class _Stats:
    phase: str = "hold"
    live: int = 0
    ended: int = 0  # robots done (live or failed) with start-up
    latencies: dict = dataclasses.field(default_factory=lambda: {"hold": [], "flood": []})
    errors: dict = dataclasses.field(default_factory=lambda: {"hold": [], "flood": []})

    def error(self, robot_id: str, exc: BaseException) -> None:
        detail = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.RpcError) else repr(exc)
        self.errors[self.phase].append(f"{robot_id}: {detail}")


def _channel(address: str) -> grpc.aio.Channel:
    from sop_ros.link.options import channel_options

    # A local subchannel pool: each robot gets its own connection, as robots on their own machines do.
    return grpc.aio.insecure_channel(address, options=channel_options() + [("grpc.use_local_subchannel_pool", 1)])


async def _idle_robot(address: str, robot_id: str, stats: _Stats, stop: asyncio.Event) -> None:
    from sop_ros.link.options import PROTOCOL_VERSION
    from sop_ros.link.protos import fleet_pb2, fleet_pb2_grpc, policy_pb2, policy_pb2_grpc

    async with _channel(address) as channel:
        fleet, policy = fleet_pb2_grpc.FleetStub(channel), policy_pb2_grpc.PolicyStub(channel)
        watch, started = None, False
        try:
            request = fleet_pb2.RegisterRequest(robot_id=robot_id, protocol_version=PROTOCOL_VERSION)
            await fleet.Register(request, timeout=_CONNECT_S)
            watch = policy.WatchCheckpoints(policy_pb2.WatchCheckpointsRequest(robot_id=robot_id))
            await asyncio.wait_for(watch.read(), _CONNECT_S)  # the current checkpoint: the watch is live
            stats.live += 1
            stats.ended += 1
            started = True
            await asyncio.sleep(random.uniform(0, HEARTBEAT_S))  # robots do not beat in step
            while not stop.is_set():
                start = time.perf_counter()
                await fleet.Heartbeat(fleet_pb2.HeartbeatRequest(robot_id=robot_id), timeout=10)
                stats.latencies[stats.phase].append((time.perf_counter() - start) * 1e3)
                try:
                    await asyncio.wait_for(stop.wait(), HEARTBEAT_S)
                except TimeoutError:
                    pass
            if watch.done():
                raise RuntimeError(f"the watch ended early: {await watch.code()}")
        except (TimeoutError, grpc.RpcError, RuntimeError) as exc:
            stats.ended += not started
            stats.error(robot_id, exc)
        finally:
            if watch is not None:
                watch.cancel()


async def _flood(address: str, seconds: float) -> dict[str, int]:
    """One robot opening FLOOD_WATCHES watches and firing FLOOD_CALLS heartbeats at once, for `seconds`."""
    from sop_ros.link.options import PROTOCOL_VERSION
    from sop_ros.link.protos import fleet_pb2, fleet_pb2_grpc, policy_pb2, policy_pb2_grpc

    refused, calls = 0, 0
    async with _channel(address) as channel:
        fleet, policy = fleet_pb2_grpc.FleetStub(channel), policy_pb2_grpc.PolicyStub(channel)
        await fleet.Register(fleet_pb2.RegisterRequest(robot_id="flood", protocol_version=PROTOCOL_VERSION), timeout=30)
        watches = [
            policy.WatchCheckpoints(policy_pb2.WatchCheckpointsRequest(robot_id="flood")) for _ in range(FLOOD_WATCHES)
        ]
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            beats = [
                fleet.Heartbeat(fleet_pb2.HeartbeatRequest(robot_id="flood"), timeout=10) for _ in range(FLOOD_CALLS)
            ]
            for outcome in await asyncio.gather(*beats, return_exceptions=True):
                calls += 1
                refused += isinstance(outcome, grpc.RpcError) and outcome.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for watch in watches:
            calls += 1
            if watch.done():  # the admitted ones are still open
                refused += await watch.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            watch.cancel()
    return {"flood_calls": calls, "flood_refused": refused}


async def _probe_health(address: str, stop: asyncio.Event) -> int:
    """Health checks every 0.1 s until `stop`; returns how many failed."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    failures = 0
    async with _channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            try:
                response = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                failures += response.status != health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                failures += 1
            await asyncio.sleep(0.1)
    return failures


async def _fleet(address: str, robots: int, hold_s: float, flood_s: float, stats: _Stats) -> dict[str, Any]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_idle_robot(address, f"idle{i}", stats, stop)) for i in range(robots)]
    deadline = time.monotonic() + _CONNECT_S
    while stats.ended < robots and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(hold_s)
    stats.phase = "flood"
    probe_stop = asyncio.Event()
    probe = asyncio.create_task(_probe_health(address, probe_stop))
    figures = await _flood(address, flood_s)
    probe_stop.set()
    figures["flood_health_failures"] = await probe
    stop.set()
    await asyncio.gather(*tasks)
    return figures


class _ProcessSampler:
    """Peak thread count and resident memory of a process, sampled from /proc/<pid>/status."""

    def __init__(self, pid: int, interval_s: float = 0.25):
        self._path = Path(f"/proc/{pid}/status")
        self.threads_peak, self.rss_peak_kb = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        fields = dict(line.split(":", 1) for line in self._path.read_text().splitlines() if ":" in line)
        self.threads_peak = max(self.threads_peak, int(fields["Threads"]))
        self.rss_peak_kb = max(self.rss_peak_kb, int(fields["VmHWM"].split()[0]))  # the kernel's own peak

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self._sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def bench_idle(tmp: Path, robots: int, hold_s: float, flood_s: float = 3.0) -> dict[str, Any]:
    """Hold `robots` idle robots on one learner for `hold_s` s, then let one robot flood it for `flood_s` s."""
    _publish_random_checkpoint(tmp / "learner" / "checkpoints", 0.01)  # what every watch receives at once
    stats = _Stats()
    server = ServerProcess("learner", tmp / "learner")
    with server as address:
        sampler = _ProcessSampler(server.pid)
        try:
            figures = asyncio.run(_fleet(address, robots, hold_s, flood_s, stats))
        finally:
            sampler.stop()

    def quantile(values: list, q: float) -> float:
        return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    hold = stats.latencies["hold"]
    return {
        "idle_robots": robots,
        "idle_watches_live": stats.live,
        "idle_errors": len(stats.errors["hold"]),
        "idle_error_examples": stats.errors["hold"][:3],
        "idle_heartbeats": len(hold),
        "idle_heartbeat_p50_ms": statistics.median(hold) if hold else float("nan"),
        "idle_heartbeat_p99_ms": quantile(hold, 0.99),
        "learner_threads_peak": sampler.threads_peak,
        "learner_rss_peak_mb": sampler.rss_peak_kb / 1024,
        **figures,
        "flood_others_errors": len(stats.errors["flood"]),
        "flood_others_heartbeat_p99_ms": quantile(stats.latencies["flood"], 0.99),
    }
