"""Fleet link throughput on loopback: uploads and checkpoint fan-out vs raw gRPC, and 100 robots at once.

Figures (all measured in the same run, same channel options). Every server (the learner, the raw
baseline) runs in its own process, as the learner runs on its own machine; the checkpoint fan-out
robots are one process each; the upload and fleet robots are clients in the benchmark process.
- upload_ratio_vs_raw: episode upload throughput (Begin/Upload/Commit with hashing, fsync and
  indexing on the learner) / raw client-streaming of the same bytes to a server that drops them.
  Target >= 0.7. The ack waits for a full read_episode validation of the file (MCAP CRCs, decode,
  content hash); validate_ms_per_episode and upload_ratio_bound_by_validation show the ceiling that
  alone puts on the ratio (raw transfer time / (raw transfer time + validation time)), and
  upload_ratio_one_in_flight the ratio without the uploader's pipelining (one episode at a time).
- checkpoint_fanout_ratio: wall time for 8 robots to download + verify one checkpoint concurrently
  / one raw server-streaming download of the same bytes. Target <= 2. The 8 robots move and sha256-verify
  8x the bytes; here they share the learner's CPUs (cpu_cores), so on a machine with fewer cores than robots the
  ratio cannot fall below ~robots/cores; fanout_ratio_per_byte (= ratio / robots) is the figure that
  compares transport cost per byte delivered.
- robots, heartbeat_p50_ms, heartbeat_p99_ms, errors: N simulated robots (threads, one channel
  each) registering, heartbeating and uploading against one learner. Target errors == 0.
- idle_robots, idle_errors, learner_threads_peak, learner_rss_peak_mb: idle robots (each a checkpoint
  watch and a heartbeat a second) held by one learner, target 1,000 with 0 errors; then one robot
  floods it: flood_refused of its calls are refused, flood_others_errors and flood_health_failures
  (target 0) say the others did not notice (transport_idle.py).
The checkpoint fan-out lives in transport_fanout.py, the servers and random episodes in transport_servers.py.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from sop_ros.bench.report import print_table
from sop_ros.bench.transport_fanout import bench_fanout
from sop_ros.bench.transport_idle import bench_idle
from sop_ros.bench.transport_servers import RAW_SERVICE, ServerProcess, random_episode, raw_channel

_LOGGER = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="CI-sized run (smaller episodes, checkpoint, fleet)")
    parser.add_argument("--robots", type=int, help="simulated robots for the fleet test (default 100, quick 20)")
    parser.add_argument("--checkpoint-mb", type=float, help="checkpoint size in MB (default 100, quick 16)")
    parser.add_argument("--episodes", type=int, help="episodes uploaded for the throughput test (default 24, quick 6)")
    parser.add_argument("--fleet-seconds", type=float, help="duration of the fleet test (default 10, quick 3)")
    parser.add_argument("--idle-robots", type=int, help="idle robots held by one learner (default 1000, quick 100)")
    parser.add_argument("--idle-seconds", type=float, help="how long they are held (default 10, quick 3)")


def _bench_upload(tmp: Path, episodes: int, steps: int, hw: int) -> dict[str, float]:
    from sop_ros.core.storage.spool import Spool
    from sop_ros.link.channel import LinkClient, LinkClientConfig
    from sop_ros.link.options import CHUNK_BYTES
    from sop_ros.link.uploader import MAX_IN_FLIGHT, EpisodeUploader

    rng = np.random.default_rng(0)
    spools = {}
    for in_flight in (1, MAX_IN_FLIGHT):  # the same number and size of episodes (different ids) for each setting
        spools[in_flight] = Spool(tmp / f"spool-{in_flight}", 1 << 40)
        for _ in range(episodes):
            spools[in_flight].write(random_episode("robot1", steps, hw, rng))
    blobs = [e.path.read_bytes() for e in spools[MAX_IN_FLIGHT].pending()]
    total = sum(len(b) for b in blobs)
    sop_s = {}
    with ServerProcess("learner", tmp / "learner", robots=4) as address, ServerProcess("raw") as raw:
        channel = raw_channel(raw)
        upload = channel.stream_unary(f"/{RAW_SERVICE}/Upload")
        start = time.perf_counter()
        for blob in blobs:
            upload(iter([blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)]), timeout=60)
        raw_s = time.perf_counter() - start
        channel.close()
        for in_flight, spool in spools.items():
            link = LinkClient.connect(LinkClientConfig(address=address, insecure=True))
            uploader = EpisodeUploader(link, spool, "robot1", max_in_flight=in_flight)
            start = time.perf_counter()
            done = uploader.drain(timeout_s=600)
            sop_s[in_flight] = time.perf_counter() - start
            link.close()
            if done != episodes:
                raise RuntimeError(f"upload benchmark stored {done} of {episodes} episodes: {uploader.status()}")
    store_s = _store_only_seconds(tmp / "store-only", blobs)
    validate_s = _validate_seconds(blobs[0], tmp / "validate.mcap")
    mb = total / 1e6
    raw_per_episode_s = raw_s / episodes
    return {
        "upload_mb": mb,
        "episode_mb": mb / episodes,
        "upload_mb_s": mb / sop_s[MAX_IN_FLIGHT],
        "raw_upload_mb_s": mb / raw_s,
        "upload_in_flight": MAX_IN_FLIGHT,
        "upload_ratio_vs_raw": raw_s / sop_s[MAX_IN_FLIGHT],
        "upload_ratio_one_in_flight": raw_s / sop_s[1],
        "store_only_mb_s": mb / store_s,
        "upload_ratio_vs_store_only": store_s / sop_s[MAX_IN_FLIGHT],
        "validate_ms_per_episode": validate_s * 1e3,
        "upload_ratio_bound_by_validation": raw_per_episode_s / (raw_per_episode_s + validate_s),
    }


def _validate_seconds(blob: bytes, path: Path, repeats: int = 3) -> float:
    """Best-of time of the full read_episode validation the learner runs before it acknowledges."""
    from sop_ros.core.episodes.episode_file import read_episode

    path.write_bytes(blob)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        read_episode(path)
        best = min(best, time.perf_counter() - start)
    return best


def _store_only_seconds(root: Path, blobs: list[bytes]) -> float:
    """The EpisodeStore's own cost (append, one fsync per stream, verify/validate/index commit), no network."""
    from sop_ros.core.episodes.episode_file import read_episode_metadata
    from sop_ros.core.episodes.hashing import bytes_sha256
    from sop_ros.core.storage.episode_store import EpisodeStore
    from sop_ros.link.options import CHUNK_BYTES

    root.mkdir(parents=True)
    with EpisodeStore(root / "episodes") as store:
        start = time.perf_counter()
        for i, blob in enumerate(blobs):
            probe = root / f"{i}.mcap"
            probe.write_bytes(blob)
            meta = read_episode_metadata(probe)
            offset = 0
            for at in range(0, len(blob), CHUNK_BYTES):
                offset = store.append_staged(meta["episode_id"], offset, blob[at : at + CHUNK_BYTES])
            store.sync_staged(meta["episode_id"])  # what the ingest service does at the end of a stream
            store.commit(meta["episode_id"], bytes_sha256(blob), meta["robot_id"])
        return time.perf_counter() - start


def _bench_fleet(tmp: Path, robots: int, seconds: float) -> dict[str, Any]:
    spools = _fleet_spools(tmp / "spools", robots)
    with ServerProcess("learner", tmp / "learner", robots=robots) as address:
        fleet = _SimulatedFleet(address, spools, seconds)
        fleet.run()
    for message in fleet.errors[:5]:
        _LOGGER.error("%s", message)
    lat = sorted(fleet.latencies)
    return {
        "robots": robots,
        "heartbeats": len(lat),
        "heartbeat_p50_ms": statistics.median(lat) if lat else float("nan"),
        "heartbeat_p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
        "errors": len(fleet.errors),
        "episodes_uploaded": sum(2 for s in spools if len(s) == 0),
    }


def _fleet_spools(root: Path, robots: int) -> list:
    """One spool per robot under `root`, each holding two small episodes to upload."""
    from sop_ros.core.storage.spool import Spool

    rng = np.random.default_rng(1)
    spools = []
    for i in range(robots):
        spool = Spool(root / f"robot{i}", 1 << 30)
        for _ in range(2):
            spool.write(random_episode(f"robot{i}", 20, 16, rng))
        spools.append(spool)
    return spools


class _SimulatedFleet:
    """One thread per spool, each a robot with its own channel: register, then heartbeat while uploading."""

    def __init__(self, address: str, spools: list, seconds: float):
        self.address, self.spools, self.seconds = address, spools, seconds
        self.latencies: list[float] = []  # heartbeat round trips, ms
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(len(spools))

    def run(self) -> None:
        threads = [threading.Thread(target=self._robot, args=(i,)) for i in range(len(self.spools))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _robot(self, i: int) -> None:
        from sop_ros.link.channel import LinkClient, LinkClientConfig
        from sop_ros.link.membership import FleetMember, RobotDescription
        from sop_ros.link.uploader import EpisodeUploader

        link = LinkClient.connect(LinkClientConfig(address=self.address, insecure=True))
        try:
            member = FleetMember(link, RobotDescription(f"robot{i}", "0.1.0", ("reach-v3",), "sim", 10.0, 4, 7))
            member.register()
            self._barrier.wait(30)
            uploader = EpisodeUploader(link, self.spools[i], f"robot{i}")
            uploader.start()
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                start = time.perf_counter()
                member.heartbeat()
                with self._lock:
                    self.latencies.append((time.perf_counter() - start) * 1e3)
                time.sleep(0.2)
            uploader.drain(timeout_s=30)
            uploader.stop()
            status = uploader.status()
            if status.pending or status.refused or status.transient_errors:
                raise RuntimeError(f"robot{i} uploader: {status}")
        except Exception as exc:  # every failure counts as an error figure
            with self._lock:
                self.errors.append(f"robot{i}: {type(exc).__name__}: {exc}")
        finally:
            link.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    robots = args.robots or (20 if quick else 100)
    checkpoint_mb = args.checkpoint_mb or (16.0 if quick else 100.0)
    episodes = args.episodes or (6 if quick else 24)
    seconds = args.fleet_seconds or (3.0 if quick else 10.0)
    logging.getLogger("sop_ros").setLevel(logging.ERROR)  # the insecure-mode warnings are expected here
    figures: dict[str, Any] = {"quick": bool(quick)}
    with tempfile.TemporaryDirectory(prefix="sop-bench-transport-") as tmp:
        tmp_path = Path(tmp)
        figures.update(_bench_upload(tmp_path / "upload", episodes, steps=100, hw=128))
        figures.update(bench_fanout(tmp_path / "fanout", checkpoint_mb))
        figures.update(_bench_fleet(tmp_path / "fleet", robots, seconds))
        idle_robots = args.idle_robots or (100 if quick else 1000)
        idle_s = args.idle_seconds or (3.0 if quick else 10.0)
        figures.update(bench_idle(tmp_path / "idle", idle_robots, idle_s, flood_s=2.0 if quick else 3.0))
    for message in figures["idle_error_examples"]:
        _LOGGER.error("idle robots: %s", message)
    return figures


def render(figures: dict[str, Any]) -> None:
    rows = [
        (
            "episode upload vs raw gRPC",
            figures["upload_ratio_vs_raw"],
            ">= 0.7",
            f"{figures['upload_mb_s']:.0f} vs {figures['raw_upload_mb_s']:.0f} MB/s, "
            f"{figures['episode_mb']:.1f} MB episodes",
        ),
        (
            "episode upload, one episode in flight",
            figures["upload_ratio_one_in_flight"],
            "",
            f"vs {figures['upload_in_flight']} in flight above",
        ),
        (
            "episode upload vs EpisodeStore alone",
            figures["upload_ratio_vs_store_only"],
            "",
            f"store alone {figures['store_only_mb_s']:.0f} MB/s (hash, fsync, validate, index)",
        ),
        (
            "upload ceiling set by validation",
            figures["upload_ratio_bound_by_validation"],
            "",
            f"read_episode {figures['validate_ms_per_episode']:.0f} ms per episode before each ack",
        ),
        (
            f"checkpoint to {figures['fanout_robots']} robots vs 1 raw download",
            figures["checkpoint_fanout_ratio"],
            "<= 2",
            f"{figures['fanout_s']:.2f} s vs {figures['raw_download_s']:.2f} s, "
            f"{figures['checkpoint_mb']:.0f} MB, {figures['cpu_cores']} cores",
        ),
        (
            "checkpoint fan-out per byte moved",
            figures["fanout_ratio_per_byte"],
            "",
            f"{figures['fanout_robots']}x the bytes of the raw download on the same cores",
        ),
        (
            f"{figures['robots']} robots: heartbeat p50 / p99 ms",
            f"{figures['heartbeat_p50_ms']:.1f} / {figures['heartbeat_p99_ms']:.1f}",
            "",
            f"{figures['heartbeats']} heartbeats",
        ),
        (
            f"{figures['robots']} robots: errors",
            figures["errors"],
            "0",
            f"{figures['episodes_uploaded']} episodes uploaded",
        ),
    ]
    rows += [
        (
            f"{figures['idle_robots']} idle robots held: errors",
            figures["idle_errors"],
            "0 (1,000 robots)",
            f"{figures['idle_watches_live']} watches live, heartbeat p50 / p99 "
            f"{figures['idle_heartbeat_p50_ms']:.1f} / {figures['idle_heartbeat_p99_ms']:.1f} ms; learner peak "
            f"{figures['learner_threads_peak']} threads, {figures['learner_rss_peak_mb']:.0f} MB RSS",
        ),
        (
            "one robot flooding: others' errors",
            figures["flood_others_errors"],
            "0",
            f"{figures['flood_refused']} of its {figures['flood_calls']} calls refused; health failures "
            f"{figures['flood_health_failures']}; others' heartbeat p99 "
            f"{figures['flood_others_heartbeat_p99_ms']:.0f} ms",
        ),
    ]
    print_table("sop bench transport (loopback)", ["measure", "value", "target", "detail"], rows)
