"""Checkpoint fan-out for the transport benchmark: robots, each its own process, download one checkpoint at once.

checkpoint_fanout_ratio compares their wall time with one raw server-streaming download of the same bytes
(see transport.py for the figures and their targets).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from pathlib import Path

from sop_ros.bench.transport_servers import RAW_SERVICE, ServerProcess, raw_channel


def _download_robot(address: str, info: bytes, cache_dir: str, ready, go, results) -> None:
    """Child process: one robot downloading (and verifying) the announced checkpoint when `go` is set."""
    from sop_ros.link.channel import LinkClient, LinkClientConfig
    from sop_ros.link.checkpoint_info import CheckpointRef
    from sop_ros.link.follower import CheckpointFollower
    from sop_ros.link.protos import policy_pb2

    logging.getLogger("sop_ros").setLevel(logging.ERROR)
    link = LinkClient.connect(LinkClientConfig(address=address, insecure=True))
    try:
        follower = CheckpointFollower(link, Path(cache_dir))
        ref = CheckpointRef.from_proto(policy_pb2.CheckpointInfo.FromString(info))
        ready.send(True)
        go.wait()
        try:
            results.put(("ok", str(follower.download(ref).weights_path)))
        except Exception as exc:  # reported, not raised: the parent counts it
            results.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        link.close()


def bench_fanout(tmp: Path, checkpoint_mb: float, robots: int = 8) -> dict[str, float]:
    """Wall time for `robots` robot processes to download + verify one checkpoint at once vs one raw download."""
    from sop_ros.link.checkpoint_info import info_from_manifest

    store, manifest = _publish_random_checkpoint(tmp / "learner" / "checkpoints", checkpoint_mb)
    weights, size = store.weights_path(manifest.version), manifest.size_bytes  # the raw server reads the file itself
    raw_s = _raw_download_seconds(weights, size)
    info = info_from_manifest(manifest).SerializeToString()
    with ServerProcess("learner", tmp / "learner", robots=robots) as address:
        fanout_s, outcomes = _concurrent_download_seconds(address, info, tmp, robots)
    failed = [detail for kind, detail in outcomes if kind != "ok"]
    if failed:
        raise RuntimeError(f"fan-out downloads failed: {failed[:3]}")
    assert all(Path(path).stat().st_size == size for _, path in outcomes)
    # fanout_ratio_per_byte normalises by the 8x more bytes moved: on a machine with fewer cores than
    # robots the fan-out is CPU-bound, so checkpoint_fanout_ratio cannot go below ~robots there.
    return {
        "checkpoint_mb": size / 1e6,
        "fanout_robots": robots,
        "fanout_s": fanout_s,
        "raw_download_s": raw_s,
        "checkpoint_fanout_ratio": fanout_s / raw_s,
        "fanout_ratio_per_byte": fanout_s / (robots * raw_s),
        "cpu_cores": os.cpu_count(),
    }


def _publish_random_checkpoint(root: Path, checkpoint_mb: float):
    """A checkpoint store at `root` holding one version of random weights of about `checkpoint_mb` MB."""
    import torch

    from sop_ros.core.storage.checkpoint_store import CheckpointStore

    torch.manual_seed(0)
    store = CheckpointStore(root)
    manifest = store.publish(
        {"w": torch.randn(int(checkpoint_mb * 1e6 / 4))},
        algorithm="bench",
        training_step=0,
        metrics={},
        parent_version=None,
    )
    return store, manifest


def _raw_download_seconds(weights: Path, size: int) -> float:
    """One raw server-streaming download of the weights file's bytes (the baseline)."""
    with ServerProcess("raw", weights) as raw:
        channel = raw_channel(raw)
        start = time.perf_counter()
        received = sum(len(c) for c in channel.unary_stream(f"/{RAW_SERVICE}/Download")(b"", timeout=120))
        raw_s = time.perf_counter() - start
        channel.close()
    assert received == size
    return raw_s


def _concurrent_download_seconds(address: str, info: bytes, tmp: Path, robots: int) -> tuple[float, list]:
    """(seconds until every robot process downloaded and verified the checkpoint, their outcomes)."""
    context = multiprocessing.get_context("spawn")
    # Each robot is its own process (own GIL, own channel), started and connected before the clock runs.
    go = context.Event()
    results = context.Queue()
    pipes = [context.Pipe(duplex=False) for _ in range(robots)]
    downloaders = [
        context.Process(
            target=_download_robot, args=(address, info, str(tmp / f"cache{i}"), send, go, results), daemon=True
        )
        for i, (_, send) in enumerate(pipes)
    ]
    for process in downloaders:
        process.start()
    try:
        for receive, _ in pipes:
            if not receive.poll(120):
                raise RuntimeError("a benchmark robot did not connect")
            receive.recv()
        start = time.perf_counter()
        go.set()
        outcomes = [results.get(timeout=600) for _ in downloaders]
        fanout_s = time.perf_counter() - start
    finally:
        for process in downloaders:
            process.join(30)
            if process.is_alive():
                process.kill()
    return fanout_s, outcomes
